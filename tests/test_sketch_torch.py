"""ccomp.sketch with torch tensors: the custom ops ccomp::sketch_matmul / sketch_grad_input /
sketch_grad_tables against the NumPy kernels (every table and input dtype, bfloat16 included),
their registration (torch.library.opcheck: schema, fake impl, autograd), gradcheck, the torch
fallback of other devices, torch.compile(fullgraph=True) through SketchedLinear, and the public
functions taking and giving torch tensors."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ccomp import _ops_sketch, sketch  # noqa: E402

RNG = np.random.default_rng(20261207)
TDTYPES = ["float32", "float16", "bfloat16", "float64"]
XDTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def make(out=12, cols=48, groups=3, bits=4, dtype="float32", method="kmeans"):
    W = RNG.normal(size=(out, cols)).astype(np.float32)
    s = sketch.fit(W, bits=bits, groups=groups, method=method, dtype=dtype)
    layer = sketch.SketchedLinear(s)
    return s, layer.tables.detach(), layer.codes


@pytest.mark.parametrize("tdtype", TDTYPES)
@pytest.mark.parametrize("xdtype", XDTYPES)
def test_ops_match_numpy_kernels(tdtype, xdtype):
    s, tables, codes = make(dtype=tdtype, bits=3)
    x = torch.randn(5, 48).to(xdtype)
    gy = torch.randn(5, 12).to(xdtype)
    res = torch.promote_types(xdtype, tables.dtype)
    y = torch.ops.ccomp.sketch_matmul(x, tables, codes, 48)
    assert y.dtype == res and y.shape == (5, 12)
    xn = x.double().numpy() if torch.float64 in (xdtype, tables.dtype) else x.float().numpy()
    gn = gy.double().numpy() if torch.float64 in (xdtype, tables.dtype) else gy.float().numpy()
    assert torch.equal(y, torch.from_numpy(sketch.matmul(xn, s)).to(res))
    gx = torch.ops.ccomp.sketch_grad_input(gy, tables, codes, 48)
    assert gx.dtype == res and torch.equal(gx, torch.from_numpy(sketch.grad_input(gn, s)).to(res))
    gt = torch.ops.ccomp.sketch_grad_tables(x, gy, tables, codes, 48)
    assert gt.dtype == tables.dtype and gt.shape == tables.shape
    assert torch.equal(gt, torch.from_numpy(sketch.grad_tables(xn, gn, s)).to(tables.dtype))


@pytest.mark.parametrize("tdtype,xdtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                           ("float16", torch.float32)])
def test_opcheck(tdtype, xdtype):
    _, tables, codes = make(dtype=tdtype, bits=4)
    x = torch.randn(4, 48).to(xdtype).requires_grad_()
    t = tables.clone().requires_grad_()
    torch.library.opcheck(torch.ops.ccomp.sketch_matmul.default, (x, t, codes, 48, 1))
    gy = torch.randn(4, 12).to(xdtype)
    torch.library.opcheck(torch.ops.ccomp.sketch_grad_input.default, (gy, tables, codes, 48, 1))
    torch.library.opcheck(torch.ops.ccomp.sketch_grad_tables.default,
                          (x.detach(), torch.randn(4, 12).to(xdtype), t.detach(), codes, 48, 1))


def test_gradcheck_float64_and_no_grad_to_codes():
    _, tables, codes = make(out=5, cols=24, groups=2, bits=2, dtype="float64")
    t = tables.clone().requires_grad_()
    x = torch.randn(3, 24, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: torch.ops.ccomp.sketch_matmul(x, t, codes, 24, 1), (x, t))
    # only x: the tables' gradient is not computed
    y = torch.ops.ccomp.sketch_matmul(x, tables, codes, 24)
    y.sum().backward()
    assert x.grad is not None and tables.grad is None and codes.grad is None


def test_fallback_of_other_devices_matches(monkeypatch):
    """The torch path of non-CPU tensors (gather + dense matmul, scatter-add for the tables), run on the CPU."""
    s, tables, codes = make(dtype="bfloat16", bits=4)
    x, gy = torch.randn(6, 48), torch.randn(6, 12)
    ops = torch.ops.ccomp

    def run():
        return [ops.sketch_matmul(x, tables, codes, 48), ops.sketch_grad_input(gy, tables, codes, 48),
                ops.sketch_grad_tables(x, gy, tables, codes, 48)]

    want = run()
    monkeypatch.setattr(_ops_sketch, "_on_cpu", lambda *ts: False)
    got = run()
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g.float(), w.float(), rtol=1e-2, atol=1e-4)  # bf16 table gradients round


def test_op_bad_input():
    _, tables, codes = make()
    x = torch.randn(2, 48)
    with pytest.raises(TypeError, match="tables must be float32"):
        torch.ops.ccomp.sketch_matmul(x, tables.to(torch.int32), codes, 48)
    with pytest.raises(TypeError, match="codes must be a uint8"):
        torch.ops.ccomp.sketch_matmul(x, tables, codes.to(torch.int16), 48)
    with pytest.raises(ValueError, match=r"codes must have shape \(12, 3, 8\)"):
        torch.ops.ccomp.sketch_matmul(x, tables, codes[:, :, :4], 48)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 48\)"):
        torch.ops.ccomp.sketch_matmul(torch.randn(2, 47), tables, codes, 48)
    with pytest.raises(TypeError, match="x must be float32"):
        torch.ops.ccomp.sketch_matmul(x.to(torch.int64), tables, codes, 48)
    with pytest.raises(ValueError, match="divisible"):
        torch.ops.ccomp.sketch_matmul(torch.randn(2, 47), tables, codes, 47)
    with pytest.raises(ValueError, match="same number of rows"):
        torch.ops.ccomp.sketch_grad_tables(x, torch.randn(3, 12), tables, codes, 48)


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    torch.manual_seed(0)
    s, _, _ = make(out=16, cols=32, groups=2, bits=4, dtype="bfloat16")
    net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), sketch.SketchedLinear(s, bias=torch.randn(16)))
    x = torch.randn(3, 5, 32)

    def step(run):
        net.zero_grad()
        y = run(x)
        y.float().square().sum().backward()
        return y.detach(), net[2].tables.grad.clone(), net[0].weight.grad.clone()

    want = step(net)
    got = step(torch.compile(net, fullgraph=True, backend="aot_eager"))
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    torch._dynamo.reset()


def test_public_functions_take_and_give_tensors():
    s, _, _ = make(dtype="float16")
    x = torch.randn(4, 48, dtype=torch.bfloat16)
    gy = torch.randn(4, 12, dtype=torch.bfloat16)
    xn, gn = x.float().numpy(), gy.float().numpy()
    y = sketch.matmul(x, s)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16 and y.shape == (4, 12)
    assert torch.equal(y, torch.from_numpy(sketch.matmul(xn, s)).to(torch.bfloat16))
    gt = sketch.grad_tables(x, gy, s)
    assert isinstance(gt, torch.Tensor) and torch.equal(gt, torch.from_numpy(sketch.grad_tables(xn, gn, s)).bfloat16())
    gx = sketch.grad_input(gy, s)
    assert isinstance(gx, torch.Tensor) and torch.equal(gx, torch.from_numpy(sketch.grad_input(gn, s)).bfloat16())
    # numpy in, numpy out, as before
    assert isinstance(sketch.matmul(xn, s), np.ndarray)
    # fit and output_error take tensors (bfloat16 included): the same sketch as from the float32 values
    W = torch.randn(8, 32, dtype=torch.bfloat16)
    X = torch.randn(64, 32, dtype=torch.bfloat16)
    a = sketch.fit(W, bits=4, groups=2, calibration=X)
    b = sketch.fit(W.float().numpy(), bits=4, groups=2, calibration=X.float().numpy())
    assert a == b and a.info["method"] == "leanquant"
    assert sketch.output_error(W, a, X) == sketch.output_error(W.float().numpy(), a, X.float().numpy())

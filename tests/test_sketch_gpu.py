"""ccomp.sketch on the GPU (kernels/sketch.cu via ccomp._sketch_gpu).

Without a GPU: every GPU entry point (CUDA inputs to ccomp.sketch, Sketch.to_device, the
_sketch_gpu functions) raises a clear RuntimeError, and the raw bindings reject bad arguments with
ValueError / TypeError before any device work (never a crash).
With a GPU: matmul (LUT GEMV and tiled GEMM, fast and generic layouts), grad_tables and grad_input
agree with the CPU's float64 results within float32 rounding (an elementwise bound from the sums of
absolute values), give the same bits on every run, and dequantize is exact.  Those tests are skipped
when ccomp.cuda.is_available() is False.
"""
import numpy as np
import pytest

from ccomp import _sketch_gpu, cuda, sketch
from ccomp._ac_gpu import DeviceArray, to_device

from gpu_suite import gpu, no_gpu, pick



class FakeCudaTensor:
    """Looks like a CUDA tensor (DLPack device kDLCUDA) but must never be touched without a GPU."""

    def __init__(self, shape):
        self.shape = shape

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):  # pragma: no cover - reaching it would be the bug
        raise AssertionError("the tensor was exported although no GPU is usable")


def random_sketch(rng, out, cols, groups, bits, dtype="float32"):
    """Random tables (rounded to dtype) and uniformly random codes."""
    tables = rng.normal(size=(out, groups, 1 << bits))
    codes = rng.integers(0, 1 << bits, size=(out, cols), dtype=np.uint8)
    s = sketch.Sketch.from_codes(tables.astype(np.float32), codes)
    return s.astype(dtype)


def abs_sketch(s):
    """The sketch with |tables| (for error bounds)."""
    if s.dtype == "bfloat16":  # clear the sign bit of the uint16 patterns
        return sketch.Sketch(s.tables & np.uint16(0x7FFF), s.codes, s.in_features, dtype="bfloat16")
    return s.with_tables(np.abs(s.tables))


# ------------------------------------------------------------------ without a GPU


@no_gpu
@pytest.mark.parametrize("call", [
    lambda s: sketch.matmul(FakeCudaTensor((3, 64)), s),
    lambda s: sketch.grad_tables(FakeCudaTensor((3, 64)), np.ones((3, 8), np.float32), s),
    lambda s: sketch.grad_input(FakeCudaTensor((3, 8)), s),
    lambda s: s.matmul(FakeCudaTensor((64,))),
    lambda s: s.to_device(),
    lambda s: _sketch_gpu.matmul(np.ones((2, 64), np.float32), s),
    lambda s: _sketch_gpu.grad_tables(np.ones((2, 64), np.float32), np.ones((2, 8), np.float32), s),
    lambda s: _sketch_gpu.grad_input(np.ones((2, 8), np.float32), s),
    lambda s: _sketch_gpu.dequantize(s),
    lambda s: _sketch_gpu.DeviceSketch(s.tables, s.codes, s.in_features),
    lambda s: _sketch_gpu.to_device(s),
], ids=["matmul", "grad_tables", "grad_input", "method", "to_device", "gpu-matmul", "gpu-grad_tables",
        "gpu-grad_input", "gpu-dequantize", "DeviceSketch", "gpu-to_device"])
def test_gpu_calls_raise_runtime_error_without_gpu(call):
    s = random_sketch(np.random.default_rng(0), 8, 64, 2, 4)
    with pytest.raises(RuntimeError, match="needs a GPU"):
        call(s)


def test_host_inputs_stay_on_the_cpu():
    rng = np.random.default_rng(1)
    s = random_sketch(rng, 8, 64, 2, 4)
    x = rng.normal(size=(3, 64)).astype(np.float32)
    y = sketch.matmul(x, s)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, x @ s.dequantize().T, rtol=1e-5, atol=1e-5)


def test_host_torch_inputs_stay_on_the_cpu():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    s = random_sketch(rng, 8, 64, 2, 4)
    x = torch.from_numpy(rng.normal(size=(3, 64)).astype(np.float32))
    y = sketch.matmul(x, s)
    assert isinstance(y, torch.Tensor) and y.device.type == "cpu" and y.dtype == torch.float32
    assert np.array_equal(y.numpy(), sketch.matmul(x.numpy(), s))


SK = (1 << 20, 1, 1 << 21, 64, 128, 2, 4)  # (tables, dtype, codes, rows, cols, groups, bits) at fake addresses


@no_gpu
def test_raw_sketch_bindings_fail_cleanly_without_gpu():
    if not cuda.built():
        pytest.skip("ccomp was built without CUDA")
    ext = cuda._cuda
    ws = ext.sketch_grad_tables_workspace(64, 128, 2, 4)
    for call in (lambda: ext.sketch_matmul(SK, 1 << 22, 0, 3, 1 << 23, 0),
                 lambda: ext.sketch_matmul(SK, 1 << 22, 1, 20, 1 << 23, 0),
                 lambda: ext.sketch_grad_input(SK, 1 << 22, 0, 3, 1 << 23, 0),
                 lambda: ext.sketch_grad_tables(SK, 1 << 22, 0, 1 << 23, 1, 3, 1 << 24, 1 << 25, ws, 0),
                 lambda: ext.sketch_dequantize(SK, 1 << 22, 1, 0)):
        with pytest.raises(RuntimeError, match="CUDA"):
            call()


def test_raw_sketch_bindings_reject_bad_arguments_before_the_gpu():
    if not cuda.built():
        pytest.skip("ccomp was built without CUDA")
    ext = cuda._cuda

    def sk(**kw):
        names = ("tables", "dtype", "codes", "rows", "cols", "groups", "bits")
        d = dict(zip(names, SK), **kw)
        return tuple(d[n] for n in names)

    cases = [(sk(bits=5), "bits must be 2, 3 or 4"), (sk(bits=1), "bits"), (sk(dtype=3), "tables"),
             (sk(groups=3), "multiple of the groups"), (sk(rows=0), "shape"), (sk(groups=0), "shape"),
             (sk(codes=0), "codes are required"), (sk(tables=0), "tables and codes"),
             (sk(cols=1 << 32), "2\\^31")]
    for s, match in cases:
        with pytest.raises(ValueError, match=match):
            ext.sketch_matmul(s, 1 << 22, 0, 3, 1 << 23, 0)
    with pytest.raises(ValueError, match="x must be float32 or float16"):
        ext.sketch_matmul(SK, 1 << 22, 2, 3, 1 << 23, 0)
    with pytest.raises(ValueError, match="x is required"):
        ext.sketch_matmul(SK, 0, 0, 3, 1 << 23, 0)
    with pytest.raises(ValueError, match="output is required"):
        ext.sketch_matmul(SK, 1 << 22, 0, 3, 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        ext.sketch_matmul(SK, 1 << 22, 0, -1, 1 << 23, 0)
    with pytest.raises(ValueError, match="grad_y must be float32 or float16"):
        ext.sketch_grad_input(SK, 1 << 22, 7, 3, 1 << 23, 0)
    with pytest.raises(ValueError, match="grad_y"):
        ext.sketch_grad_tables(SK, 1 << 22, 0, 1 << 23, 9, 3, 1 << 24, 0, 0, 0)
    with pytest.raises(ValueError, match="workspace holds 16 bytes"):
        ext.sketch_grad_tables(sk(groups=1), 1 << 22, 0, 1 << 23, 0, 3, 1 << 24, 1 << 25, 16, 0)  # 2 segments
    with pytest.raises(ValueError, match="output must be float32, float16 or bfloat16"):
        ext.sketch_dequantize(SK, 1 << 22, 5, 0)
    with pytest.raises(TypeError, match="tuple"):
        ext.sketch_matmul([1, 2], 1 << 22, 0, 3, 1 << 23, 0)
    with pytest.raises(TypeError):
        ext.sketch_matmul(SK[:6], 1 << 22, 0, 3, 1 << 23, 0)


def test_grad_tables_workspace_depends_on_the_shape_only():
    if not cuda.built():
        pytest.skip("ccomp was built without CUDA")
    ws = cuda._cuda.sketch_grad_tables_workspace
    # 64 row tiles x 1 group: 8 segments of 512 columns; 32 groups already give 2048 blocks
    assert ws(4096, 4096, 1, 4) == 4096 * 1 * 8 * 16 * 4
    assert ws(4096, 4096, 32, 4) == 0
    assert ws(11008, 4096, 1, 2) == 11008 * 3 * 4 * 4
    assert ws(64, 32, 1, 4) == 0  # one sub-tile: nothing to split
    assert ws(0, 32, 1, 4) == 0 and ws(8, 30, 4, 4) == 0 and ws(8, 32, 1, 5) == 0


# ------------------------------------------------------------------ with a GPU


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def dev(a):
    """A device copy of a NumPy array: a torch CUDA tensor when torch sees the GPU, else a DeviceArray."""
    torch = _torch_cuda()
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a).cuda() if torch is not None else to_device(a)


def host(a):
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, DeviceArray):
        return a.get()
    if hasattr(a, "get") and not hasattr(a, "cpu"):
        return a.get()
    t = a.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        t = t.view(__import__("torch").int16)
    return t.numpy()


def assert_within_rounding(got, ref, bound, what, tol=1e-4):
    """|got - ref| <= tol * bound elementwise, bound the same sum over absolute values (float32 rounding
    of a sum of n terms stays below n * 2^-24 of it); never NaN."""
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert np.all(np.isfinite(got)), what
    err = np.abs(got - ref)
    bad = err > tol * bound + 1e-30
    if bad.any():
        i = np.argwhere(bad)[0]
        raise AssertionError(f"{what}: {int(bad.sum())} entries off, first at {tuple(i)}: got {got[tuple(i)]} "
                             f"want {ref[tuple(i)]} (bound {bound[tuple(i)]})")


LAYOUTS = [(512, 1), (512, 4), (96, 3), (264, 2), (120, 5)]  # gn 512, 128, 32 (fast GEMV); 132, 24 (generic)
# input rows: GEMV with 1, up to 4 and up to 8 rows; the GEMM with 16-row (n <= 32) and 64-row tiles
MATMUL_BATCHES = pick((1, 3, 8, 9, 40, 70), (1, 3, 8, 9, 40))
# grad_input's GEMM tiles (16 and 64 rows), grad_tables' input-row steps of 32 (one partial, several)
GRAD_BATCHES = pick((1, 5, 33, 100), (1, 5, 33))


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_matmul_matches_cpu(dtype, bits):
    rng = np.random.default_rng(10 * bits + len(dtype))
    for cols, groups in LAYOUTS:
        s = random_sketch(rng, pick(72, 40), cols, groups, bits, dtype)  # a partial block of GEMV and GEMM rows
        d = s.to_device(like=dev(np.zeros(1, np.float32)) if _torch_cuda() else None)
        sa = abs_sketch(s)
        for batch in MATMUL_BATCHES:
            for xdt in (np.float32, np.float16):
                x = rng.normal(size=(batch, cols)).astype(xdt)
                x64 = x.astype(np.float64)
                ref = sketch.matmul(x64, s)
                bound = sketch.matmul(np.abs(x64), sa)
                what = f"matmul {dtype} b{bits} cols={cols} G={groups} batch={batch} {np.dtype(xdt).name}"
                y1 = host(sketch.matmul(dev(x), d))
                assert y1.dtype == np.float32, what
                assert_within_rounding(y1, ref, bound, what)
                y2 = host(sketch.matmul(dev(x), d))
                assert np.array_equal(y1.view(np.uint32), y2.view(np.uint32)), f"{what}: not deterministic"
                y3 = host(sketch.matmul(dev(x), s))  # a host sketch is copied to the device
                assert np.array_equal(y1.view(np.uint32), y3.view(np.uint32)), f"{what}: host sketch differs"


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_grads_match_cpu(dtype, bits):
    rng = np.random.default_rng(100 + 10 * bits + len(dtype))
    for cols, groups in LAYOUTS + [(pick(4096, 2048), 1)]:  # one group split into many column segments
        out = pick(130, 70) if cols < 2048 else 64  # two 64-row tiles of grad_tables, the second partial
        s = random_sketch(rng, out, cols, groups, bits, dtype)
        d = s.to_device()
        sa = abs_sketch(s)
        for batch in GRAD_BATCHES:
            x = rng.normal(size=(batch, cols)).astype(np.float32)
            gy = rng.normal(size=(batch, out)).astype(np.float32)
            x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
            what = f"{dtype} b{bits} cols={cols} G={groups} batch={batch}"
            gt = host(sketch.grad_tables(dev(x), dev(gy), d))
            assert gt.shape == s.tables.shape and gt.dtype == np.float32
            assert_within_rounding(gt, sketch.grad_tables(x64, gy64, s),
                                   sketch.grad_tables(np.abs(x64), np.abs(gy64), s), "grad_tables " + what)
            gt2 = host(sketch.grad_tables(dev(x), dev(gy), d))
            assert np.array_equal(gt.view(np.uint32), gt2.view(np.uint32)), f"grad_tables {what}: not deterministic"
            gx = host(sketch.grad_input(dev(gy), d))
            assert_within_rounding(gx, sketch.grad_input(gy64, s), sketch.grad_input(np.abs(gy64), sa),
                                   "grad_input " + what)
            gx2 = host(sketch.grad_input(dev(gy), d))
            assert np.array_equal(gx.view(np.uint32), gx2.view(np.uint32)), f"grad_input {what}: not deterministic"
            # float16 inputs: converted exactly, the same sums
            gt16 = host(sketch.grad_tables(dev(x.astype(np.float16)), dev(gy.astype(np.float16)), d))
            x16, g16 = x.astype(np.float16).astype(np.float64), gy.astype(np.float16).astype(np.float64)
            assert_within_rounding(gt16, sketch.grad_tables(x16, g16, s),
                                   sketch.grad_tables(np.abs(x16), np.abs(g16), s), "grad_tables fp16 " + what)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dequantize_exact(dtype, bits):
    rng = np.random.default_rng(200 + bits)
    for cols, groups in LAYOUTS:
        s = random_sketch(rng, 40, cols, groups, bits, dtype)
        want = s.dequantize()
        d = s.to_device()
        got = host(_sketch_gpu.dequantize(d))
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{dtype} b{bits} cols={cols}"
        got16 = host(d.dequantize("float16"))
        assert np.array_equal(got16.view(np.uint16), want.astype(np.float16).view(np.uint16))
        bf = host(d.dequantize("bfloat16")).view(np.uint16)
        u = want.view(np.uint32).astype(np.uint64)  # float32 -> bfloat16, round to nearest even
        rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        assert np.array_equal(bf, rounded)


@gpu
def test_device_sketch_round_trip_and_kinds():
    rng = np.random.default_rng(3)
    for dtype in ("float32", "float16", "bfloat16"):
        s = random_sketch(rng, 16, 128, 2, 4, dtype)
        d = s.to_device()
        assert (d.out_features, d.in_features, d.groups, d.bits, d.dtype) == (16, 128, 2, 4, dtype)
        assert d.to_host() == s
        torch = _torch_cuda()
        if torch is not None:
            dt = s.to_device(like=torch.zeros(1, device="cuda"))
            assert isinstance(dt.tables, torch.Tensor) and dt.to_host() == s
            x = torch.randn(2, 3, 128, device="cuda")
            y = sketch.matmul(x, dt)
            assert isinstance(y, torch.Tensor) and tuple(y.shape) == (2, 3, 16) and y.dtype == torch.float32
            np.testing.assert_allclose(y.cpu().numpy(), sketch.matmul(x.cpu().numpy(), s), rtol=1e-4, atol=1e-4)


@gpu
def test_empty_batches():
    rng = np.random.default_rng(4)
    s = random_sketch(rng, 16, 128, 2, 3)
    d = s.to_device()
    assert host(sketch.matmul(dev(np.zeros((0, 128), np.float32)), d)).shape == (0, 16)
    assert host(sketch.grad_input(dev(np.zeros((0, 16), np.float32)), d)).shape == (0, 128)
    gt = host(sketch.grad_tables(dev(np.zeros((0, 128), np.float32)), dev(np.zeros((0, 16), np.float32)), d))
    assert gt.shape == (16, 2, 8) and not gt.any()


@gpu
def test_unaligned_input_runs_the_generic_gemv():
    torch = _torch_cuda()
    if torch is None:
        pytest.skip("needs torch with CUDA for an offset view")
    rng = np.random.default_rng(5)
    s = random_sketch(rng, 64, 256, 2, 4, "float16")
    d = s.to_device(like=torch.zeros(1, device="cuda"))
    x = rng.normal(size=(2, 256)).astype(np.float32)
    big = torch.zeros(2 * 256 + 1, device="cuda")
    big[1:] = torch.from_numpy(x.reshape(-1)).cuda()
    xv = big[1:].view(2, 256)  # 4 bytes past a 16-byte boundary
    ref = sketch.matmul(x.astype(np.float64), s)
    bound = sketch.matmul(np.abs(x).astype(np.float64), abs_sketch(s))
    assert_within_rounding(sketch.matmul(xv, d).cpu().numpy(), ref, bound, "unaligned x")


@gpu
def test_gpu_argument_errors():
    rng = np.random.default_rng(6)
    s = random_sketch(rng, 16, 128, 2, 4)
    d = s.to_device()
    with pytest.raises(TypeError, match="float32 or float16"):
        sketch.matmul(dev(np.ones((2, 128), np.float64)), d)
    with pytest.raises(ValueError, match=r"\(\.\.\., 128\)"):
        sketch.matmul(dev(np.ones((2, 64), np.float32)), d)
    with pytest.raises(ValueError, match="same leading shape"):
        sketch.grad_tables(dev(np.ones((2, 128), np.float32)), dev(np.ones((3, 16), np.float32)), d)
    with pytest.raises(TypeError, match="got float64"):
        s.astype("float64").to_device()
    torch = _torch_cuda()
    if torch is not None:
        x = torch.ones(128, 2, device="cuda").t()
        with pytest.raises(ValueError, match="C-contiguous"):
            sketch.matmul(x, d)


@gpu
def test_real_shaped_layer_gemv():
    rng = np.random.default_rng(7)
    s = random_sketch(rng, pick(4096, 64), 4096, 32, 4, "float16")
    d = s.to_device()
    x = rng.normal(size=(1, 4096)).astype(np.float16)
    x64 = x.astype(np.float64)
    assert_within_rounding(host(sketch.matmul(dev(x), d)), sketch.matmul(x64, s),
                           sketch.matmul(np.abs(x64), abs_sketch(s)), "4096x4096 G=32 4-bit GEMV")

"""ccomp.tokens on torch tensors: torch out on the input's device and dtype, the custom ops (ccomp::) equal to the
NumPy functions bit for bit, their gradients (gradcheck), and torch.compile(fullgraph=True) over them."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ccomp import tokens  # noqa: E402

torch.set_num_threads(2)


def rand(B=2, N=33, D=8, seed=0):
    return np.random.default_rng(seed).standard_normal((B, N, D)).astype(np.float32)


def attention(B=2, N=33, seed=1):
    return np.random.default_rng(seed).gamma(0.3, size=(B, N)) + 0.05


def test_importing_ccomp_tokens_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, ccomp.tokens; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("cls_token", [False, True])
def test_tome_merge_tensor_equals_numpy(cls_token):
    x = rand()
    s = np.random.default_rng(2).integers(1, 5, size=x.shape[:2]).astype(np.float32)
    want = tokens.tome_merge(x, 10, sizes=s, cls_token=cls_token)
    got = tokens.tome_merge(torch.tensor(x), 10, sizes=torch.tensor(s), cls_token=cls_token)
    assert all(isinstance(g, torch.Tensor) for g in got)
    assert got[0].dtype == torch.float32 and got[2].dtype == torch.int64
    np.testing.assert_array_equal(got[0].numpy(), want[0])
    np.testing.assert_array_equal(got[1].numpy(), want[1].astype(np.float32))
    np.testing.assert_array_equal(got[2].numpy(), want[2])


def test_tome_merge_r0_and_2d():
    x = rand(1, 12, 4)[0]
    got = tokens.tome_merge(torch.tensor(x), 0)
    assert torch.equal(got[0], torch.tensor(x)) and torch.equal(got[2], torch.arange(12))
    got = tokens.tome_merge(torch.tensor(x), 3)
    want = tokens.tome_merge(x, 3)
    np.testing.assert_array_equal(got[0].numpy(), want[0])


@pytest.mark.parametrize("ratio", [0.25, None])
def test_prumerge_tensor_equals_numpy(ratio):
    x, a = rand(), attention()
    want = tokens.prumerge(x, a, ratio=ratio, neighbors=4)
    got = tokens.prumerge(torch.tensor(x), torch.tensor(a), ratio=ratio, neighbors=4)
    for b in range(2):
        np.testing.assert_array_equal(got[0][b].numpy(), want[0][b])
        np.testing.assert_array_equal(got[1][b].numpy(), want[1][b])


def test_visionzip_and_fastv_tensor_equal_numpy():
    x, a = rand(), attention()
    for g, w in zip(tokens.visionzip(torch.tensor(x), torch.tensor(a), dominant=5, contextual=4),
                    tokens.visionzip(x, a, dominant=5, contextual=4)):
        np.testing.assert_array_equal(g.numpy(), w)
    for g, w in zip(tokens.fastv_select(torch.tensor(x), torch.tensor(a), keep=7), tokens.fastv_select(x, a, keep=7)):
        np.testing.assert_array_equal(g.numpy(), w)


def test_bfloat16_and_float16_in_input_dtype_out():
    x = rand()
    for dt in (torch.bfloat16, torch.float16):
        t = torch.tensor(x).to(dt)
        m, s, src = tokens.tome_merge(t, 6, cls_token=True)
        assert m.dtype == dt and s.dtype == torch.float32
        want = tokens.tome_merge(t.float().numpy(), 6, cls_token=True)
        np.testing.assert_array_equal(m.float().numpy(), torch.tensor(want[0]).to(dt).float().numpy())
        idx, sim = tokens.most_similar(t)
        assert idx.dtype == torch.int64 and sim.dtype == dt
    c = tokens.correlation_compress(torch.tensor(x), threshold=0.5)
    assert isinstance(c.density, torch.Tensor) and isinstance(c.tokens[0], torch.Tensor)
    w = tokens.cls_weights(torch.ones(2, 8), torch.tensor(x))
    assert isinstance(w, torch.Tensor) and w.shape == (2, 33)


def test_gradients_match_gradcheck():
    x = torch.tensor(rand(2, 17, 4).astype(np.float64), requires_grad=True)
    s = torch.tensor(np.random.default_rng(3).integers(1, 4, (2, 17)).astype(np.float64), requires_grad=True)
    a = torch.tensor(attention(2, 17), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, s: tokens.tome_merge(t, 5, sizes=s, cls_token=True)[0], (x, s))
    assert torch.autograd.gradcheck(lambda t, s: tokens.tome_merge(t, 5, sizes=s)[1], (x, s))
    assert torch.autograd.gradcheck(lambda t, a: torch.cat(tokens.prumerge(t, a, ratio=0.25, neighbors=3)[0]), (x, a))
    assert torch.autograd.gradcheck(lambda t: tokens.visionzip(t, a.detach(), dominant=3, contextual=2)[0], (x,))


def test_merge_gradient_is_the_transpose():
    x = torch.tensor(rand(1, 9, 3), requires_grad=True)
    out, size, src = tokens.tome_merge(x, 4)
    g = torch.randn_like(out)
    out.backward(g)
    # each token's gradient is its output row's gradient times its share of that row
    share = 1.0 / size[0, src[0]]
    torch.testing.assert_close(x.grad[0], g[0, src[0]] * share[:, None])


def test_bad_input_raises():
    x = torch.tensor(rand())
    with pytest.raises(ValueError, match="sizes must be > 0"):
        tokens.tome_merge(x, 4, sizes=torch.zeros(2, 33))
    bad = x.clone()
    bad[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tokens.tome_merge(bad, 4)
    with pytest.raises(ValueError, match="must be >= 0"):
        tokens.prumerge(x, -torch.ones(2, 33), ratio=0.5)
    with pytest.raises(ValueError, match="shape"):
        tokens.fastv_select(x, torch.ones(3, 33), keep=3)
    with pytest.raises(TypeError, match="r must be an int"):
        tokens.tome_merge(x, 1.5)


def test_compile_fullgraph_no_break():
    torch._dynamo.reset()

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            y, size, _ = tokens.tome_merge(self.lin(x), 6, cls_token=True)
            z, _ = tokens.fastv_select(y, size, keep=5)
            v, _, _ = tokens.visionzip(y, size, dominant=3, contextual=2)
            p, _ = tokens.prumerge(y, size, ratio=0.5, neighbors=2)
            return z.sum() + v.sum() + torch.stack(p).sum()

    m = M()
    x = torch.tensor(rand())
    got = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    want = m(x)
    assert torch.equal(got, want)
    got.backward()
    assert m.lin.weight.grad is not None and m.lin.weight.grad.abs().sum() > 0
    torch._dynamo.reset()

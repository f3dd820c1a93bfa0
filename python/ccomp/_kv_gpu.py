"""GPU path of ccomp.kv (kernels/kv_*.cu): quantize, dequantize and decode attention on CUDA arrays.

Contract (what ccomp.kv can rely on)
------------------------------------
Inputs are CUDA arrays: torch tensors, CuPy arrays, anything with ``__cuda_array_interface__``
(such as :class:`ccomp._ac_gpu.DeviceArray`) or a CUDA ``__dlpack__``.  NumPy (and other host)
arrays are copied to the current GPU first.  Outputs are new arrays of the main input's kind, on its
device: torch in -> torch out, CuPy in -> CuPy out, otherwise :class:`DeviceArray`.  Integer arrays
keep the CPU's dtypes (uint8, uint16, uint32, uint64; with a torch older than 2.3, which lacks the
unsigned types, the signed type of the same size holds the same bits).  Inputs may be any integer or
fp16 dtype of the right item size (an fp16 ``scale`` tensor is read as its bits).

Layouts are those of :class:`ccomp.kv.QuantizedTensor`: a method's arrays are 2-D ``[S, n]`` with
``S = prod(shape[:-2])`` slices (batch x heads), one row per slice, rows at any stride (a longer,
preallocated row is fine: the first ``n`` elements are read), elements contiguous.  ``x`` is
``(..., tokens, head_dim)`` float32 or float16 whose leading axes can be viewed as one axis of
slices (any token stride, contiguous channels: a view of a preallocated cache works).

Work is queued on a CUDA stream: ``stream=None`` takes the framework's current stream for the data's
device (``torch.cuda.current_stream``, ``cupy.cuda.get_current_stream``), the legacy default stream
otherwise; an int (a ``cudaStream_t``) or an object with ``cuda_stream`` or ``ptr`` selects one.
:func:`attention` and :func:`dequantize` return without waiting for the GPU, except that
``check=True`` (the default) waits to report bad data: every :func:`quantize` (NaN, infinite or
beyond-fp16 values, as the CPU rejects them) and the index checks of bitmap_sparse and gear
:func:`dequantize`.  ``check=False`` never waits; bad data then gives unspecified codes.

Results equal the CPU's (``ccomp.kv``):
  - quantize: every array bit for bit (codes, fp16 scales and zeros, ggml blocks, turbo codes,
    norms and QJL signs, sparse bitmaps, offsets and values);
  - dequantize: the float32 values bit for bit (``dtype="float16"`` rounds them to nearest even);
  - attention: float32 results within float32 rounding of the CPU's (another summation order).

Errors: ``RuntimeError`` when no GPU is usable (checked before any input is touched; never a crash),
``TypeError`` for a wrong dtype or array kind, ``ValueError`` for a bad shape, parameter or device,
and for data the CPU rejects, with the CPU's own message.

Functions:
  ``quantize(x, method, *, bits, group, axis, sparsity, seed, qjl, check, stream) -> {name: array}``
      groupwise, q8_0, q4_0, turbo (QJL included) and bitmap_sparse; gear fits a low-rank factor and
      stays on the CPU.
  ``dequantize(arrays, method, shape, *, dtype, check, stream, **params) -> array of shape``
      every method (gear included); ``dequantize(t)`` takes an object with ``method``, ``shape``,
      ``params`` and ``arrays`` (a :class:`Quantized` or a QuantizedTensor).
  ``attention(q, k_cache, v_cache, scale=None, *, stream) -> float32 ([batch,] heads, n_query, Dv)``
      q ``([batch,] heads, n_query, D)``; each cache is a quantized tensor (groupwise, q8_0, q4_0),
      a dense float16/float32 array ``([batch,] kv_heads, tokens, D)``, or a list of these
      concatenated along the tokens (KIVI: quantized blocks then the recent tokens); query head h
      reads K/V head ``h // (heads // kv_heads)``.  D and Dv: multiples of 32 up to 256.
  ``Quantized(method, shape, params, arrays)``: a quantized tensor on the GPU.
"""
import math
import re

import numpy as np

from . import _core
from . import _kv_params
from ._device import _c_strides, _dtype_name, _empty, _ext, _from_host, _on_stream, _ptr, _same_device, _stream, _view

__all__ = ["quantize", "dequantize", "attention", "Quantized", "QUANTIZE_METHODS", "METHODS", "ATTENTION_METHODS"]

# the core's quantization methods; the GPU dequantizes them all, quantizes all but gear (its low-rank fit runs on
# the CPU) and attends over groupwise and ggml caches
METHODS = _kv_params.QUANTIZERS
QUANTIZE_METHODS = tuple(m for m in METHODS if m != "gear")
ATTENTION_METHODS = ("groupwise", "q8_0", "q4_0")

# the core's method ids (CCOMP_KV_M_*), which the CUDA kernels share
_CODE = _kv_params.CODE
_AXES = {"channel": 0, "token": 1}
_F32, _F16 = 0, 1

# (item size, accepted dtype kinds) of every array name; uint16 arrays may be fp16 tensors (same bits)
_ARRAY_TYPES = {"codes": (1, "ui"), "blocks": (1, "ui"), "signs": (1, "ui"), "scale": (2, "uif"),
                "zero": (2, "uif"), "values": (2, "uif"), "out_idx": (2, "ui"), "out_vals": (2, "uif"),
                "U": (2, "uif"), "W": (2, "uif"), "norms": (4, "f"), "res_norms": (4, "f"),
                "bitmaps": (8, "ui"), "offsets": (4, "ui")}


class Quantized:
    """A quantized tensor on the GPU: ``method``, ``shape``, ``params`` and ``arrays`` (device
    arrays ``[S, n]``), the attributes of :class:`ccomp.kv.QuantizedTensor`; ``nbytes`` and
    ``bits_per_element`` mean what they mean there, and ``to_host()`` gives that host tensor."""

    def __init__(self, method, shape, params, arrays):
        self.method = method
        self.shape = tuple(int(s) for s in shape)
        self.params = dict(params)
        self.arrays = dict(arrays)

    def dequantize(self, dtype="float32", stream=None):
        return dequantize(self, dtype=dtype, stream=stream)

    @property
    def nbytes(self):
        """Bytes of every array (codes and all metadata), plus the 8-byte seed a turbo tensor needs to decode."""
        return _kv_params.nbytes(self.method, self.shape, self.params)

    @property
    def bits_per_element(self):
        n = int(np.prod(self.shape, dtype=np.int64))
        return 8.0 * self.nbytes / n if n else 0.0

    def to_host(self):
        """A :class:`ccomp.kv.QuantizedTensor` with the same method, shape, params and bytes (waits for the GPU)."""
        return _kv_params.host_tensor().from_device(self)

    def __repr__(self):
        p = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"Quantized({self.method}, shape={self.shape}, {p})"


# ------------------------------------------------------------------ parameters


def _params(method, bits=None, group=32, axis="token", sparsity=0.5, outliers=0.02, rank=4, iters=2, seed=0,
            qjl=False, **unused):
    """The checked parameters of a method (the keys of QuantizedTensor.params), as ccomp.kv checks them."""
    return _kv_params.method_params(method, bits, group, axis, sparsity, outliers, rank, iters, seed, qjl)


def _layout(method, T, D, p):
    """[(name, dtype, count per slice)] of a method's arrays: the core's layout (its checks and messages),
    plus the GPU kernels' own limits."""
    if method == "bitmap_sparse" and D not in (64, 128, 192, 256, 384, 512, 768, 1024):
        raise ValueError(f"bitmap_sparse on the GPU needs a head dim of 64, 128, 192, 256, 384, 512, 768 or "
                         f"1024, got {D}")
    return [(name, np.dtype(dt).type, n) for name, dt, n in _kv_params.layout(method, T, D, p)]


# ------------------------------------------------------------------ device arrays


def _float_view(v, what):
    if not isinstance(v.dtype, np.dtype) or v.dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise TypeError(f"{what} must be float32 or float16, got {_dtype_name(v.dtype)}")
    return _F32 if v.dtype == np.float32 else _F16


def _slices(v, what):
    """(S, T, D, slice stride, token stride) of a (..., T, D) view whose channels are contiguous."""
    if len(v.shape) < 2:
        raise ValueError(f"{what} must have shape (..., tokens, head_dim), got shape {v.shape}")
    T, D = int(v.shape[-2]), int(v.shape[-1])
    lead, lead_strides = v.shape[:-2], v.strides[:-2]
    S = int(np.prod(lead, dtype=np.int64)) if lead else 1
    if any(s < 0 for s in v.strides):
        raise ValueError(f"{what} has negative strides; make it contiguous first")
    if D > 1 and v.strides[-1] != 1:
        raise ValueError(f"the channels (last axis) of {what} must be contiguous (stride 1), got stride "
                         f"{v.strides[-1]}; make it contiguous first")
    ld = int(v.strides[-2]) if T > 1 else D
    if T > 1 and ld < D:
        raise ValueError(f"the tokens of {what} overlap (token stride {ld} below head dim {D})")
    ss, expect = None, None
    for n, st in reversed(list(zip(lead, lead_strides))):
        if n == 1:
            continue
        if ss is None:
            ss = int(st)
        elif st != expect:
            raise ValueError(f"the leading axes of {what} (shape {v.shape}, strides {v.strides}) cannot be viewed "
                             f"as one axis of slices; make it contiguous first")
        expect = int(st) * int(n)
    if ss is None:
        ss = max(T, 1) * ld
    elif S > 1 and T > 0 and ss < (T - 1) * ld + D:
        raise ValueError(f"the slices of {what} overlap (slice stride {ss} for {T} tokens of stride {ld})")
    return S, T, D, ss, ld


def _array_desc(arrays, name, S, count, ext, what, keep):
    """(pointer, slice stride, count) of arrays[name], a 2-D [S, >= count] device array."""
    if name not in arrays:
        raise ValueError(f"{what}: array '{name}' is missing (have {sorted(arrays)})")
    v = _view(arrays[name], f"{what} array '{name}'", ext)
    keep.append(v)
    size, kinds = _ARRAY_TYPES[name]
    if not isinstance(v.dtype, np.dtype) or v.dtype.itemsize != size or v.dtype.kind not in kinds:
        raise TypeError(f"{what}: array '{name}' must hold {size}-byte {'/'.join(kinds)} elements, got "
                        f"{_dtype_name(v.dtype)}")
    if len(v.shape) != 2 or v.shape[0] != S or v.shape[1] < count:
        raise ValueError(f"{what}: array '{name}' must have shape ({S}, >= {count}), got {v.shape}")
    if count > 1 and v.strides[1] != 1:
        raise ValueError(f"{what}: array '{name}' must have contiguous rows (stride 1), got stride {v.strides[1]}")
    stride = int(v.strides[0]) if S > 1 else int(v.shape[1])
    if S > 1 and stride < count:
        raise ValueError(f"{what}: the rows of array '{name}' overlap (row stride {stride} below {count})")
    return (v.ptr, stride, int(v.shape[1]))


def _desc(method, S, T, D, p):
    """The kernels' descriptor of a tensor: the core's method id, the shape, and the parameters by key (with the
    core's counts derived from them)."""
    d = {"method": _CODE[method], "S": S, "T": T, "D": D}
    d.update({k: p[k] for k in ("bits", "group", "rank", "seed") if k in p})
    if "axis" in p:
        d["axis"] = _AXES[p["axis"]]
    if "qjl" in p:
        d["qjl"] = int(p["qjl"])
    if "outliers" in p:
        d["per_row"] = _core.kv_outliers_per_row(D, p["outliers"])
    if "sparsity" in p:
        d["kept"] = _core.kv_sparse_kept(D, p["sparsity"])
    if method == "turbo":
        cent, thr = _core.kv_turbo_codebook(p["bits"])
        d.update(centroids=[float(c) for c in cent], thresholds=[float(t) for t in thr])
    return d


_QJL_CACHE = {}


def _qjl_matrix_t(seed, D, like, ext):
    """The transposed QJL matrix of (seed, D) on like's device (a few are cached)."""
    key = (seed, D, like.kind, like.device)
    m = _QJL_CACHE.get(key)
    if m is None:
        host = np.ascontiguousarray(np.asarray(_core.kv_turbo_qjl_matrix(seed, D), dtype=np.float32).T)
        m = _from_host(like, host, ext)
        if len(_QJL_CACHE) >= 8:
            _QJL_CACHE.pop(next(iter(_QJL_CACHE)))
        _QJL_CACHE[key] = m
    return m


def _host_slice(v, s, T, D, ss, ld, ext):
    """Slice s of x as a NumPy (T, D) array."""
    item = v.dtype.itemsize
    n = ((T - 1) * ld + D) if T else 0
    raw = np.frombuffer(ext.to_host(v.ptr + s * ss * item, n * item), dtype=v.dtype) if n else np.zeros(0, v.dtype)
    return np.lib.stride_tricks.as_strided(raw, (T, D), (ld * item, item)).copy()


def _raise_cpu_error(v, s, T, D, ss, ld, method, p, ext):
    """The CPU's ValueError for slice s (which the GPU rejected), naming slice s."""
    host = np.ascontiguousarray(_host_slice(v, s, T, D, ss, ld, ext)[None], dtype=np.float32)
    try:
        _core.kv_quantize(_CODE[method], host, p, 1)
    except ValueError as exc:
        raise ValueError(re.sub(r"\bslice 0\b", f"slice {s}", str(exc), count=1)) from None
    raise RuntimeError(f"ccomp.kv GPU quantize: slice {s} was rejected on the GPU but the CPU accepts it; "
                       f"this is a bug in ccomp, please report it")


# ------------------------------------------------------------------ API


def quantize(x, method="groupwise", *, bits=None, group=32, axis="token", sparsity=0.5, seed=0, qjl=False,
             check=True, stream=None):
    """Quantize ``x`` ``(..., tokens, head_dim)`` (float32/float16, on the GPU) with ``method``.

    Parameters as :func:`ccomp.kv.quantize` (groupwise, q8_0, q4_0, turbo, bitmap_sparse).  Returns
    ``{name: array [S, n]}`` named as ``QuantizedTensor.arrays``, bit-identical to the CPU's.
    ``check`` waits for the GPU and raises the CPU's ValueError for NaN, infinite or (groupwise,
    bitmap_sparse) fp16-overflowing data.
    """
    if method == "gear":
        raise ValueError("gear quantization (a low-rank fit per slice) runs on the CPU: use ccomp.kv.quantize; "
                         "its result dequantizes on the GPU")
    if method not in QUANTIZE_METHODS:
        raise ValueError(f"method must be one of {QUANTIZE_METHODS}, got {method!r}")
    p = _params(method, bits=bits, group=group, axis=axis, sparsity=sparsity, seed=seed, qjl=qjl)
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) >= 2:
        _layout(method, int(shape[-2]), int(shape[-1]), p)  # parameter and shape errors before the GPU is needed
    ext = _ext("ccomp.kv GPU quantize")
    v = _view(x, "x", ext)
    dtype = _float_view(v, "x")
    S, T, D, ss, ld = _slices(v, "x")
    layout = _layout(method, T, D, p)
    handle = _stream(v, stream)
    with _on_stream(v, handle):
        outs = {name: _empty(v, (S, n), dt, ext) for name, dt, n in layout}
        flag = _empty(v, (1,), np.uint32, ext)
    d = _desc(method, S, T, D, p)
    d.update(x=v.ptr, x_dtype=dtype, x_ss=ss, x_ld=ld, flag=_ptr(flag, ext))
    for name, _dt, n in layout:
        d[name] = (_ptr(outs[name], ext), n, n)
    keep = None
    if method == "turbo" and p["qjl"]:
        keep = _qjl_matrix_t(p["seed"], D, v, ext)
        d["qjl_matrix_t"] = _ptr(keep, ext)
    first_bad = ext.kv_quantize(d, handle, bool(check))
    if first_bad >= 0:
        _raise_cpu_error(v, first_bad, T, D, ss, ld, method, p, ext)
    return outs


def dequantize(arrays, method=None, shape=None, *, dtype="float32", check=True, stream=None, **params):
    """The reconstruction of a quantized tensor, ``shape`` float32 (or float16) on the GPU.

    ``arrays``: ``{name: array [S, n]}`` of ``method`` (any of METHODS) and ``shape``; ``params``
    as ``QuantizedTensor.params``.  Or one object with ``method``, ``shape``, ``params`` and
    ``arrays``.  Bit-identical to ``QuantizedTensor.dequantize()`` (float32).
    """
    if hasattr(arrays, "arrays") and hasattr(arrays, "method"):
        t = arrays
        arrays, method, shape = t.arrays, t.method, t.shape
        params = dict(t.params, **params)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of device arrays, got {type(arrays).__name__}")
    if shape is None or len(tuple(shape)) < 2:
        raise ValueError(f"shape must be (..., tokens, head_dim), got {shape}")
    if dtype not in ("float32", "float16", np.float32, np.float16):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    out_dt = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not be negative, got {shape}")
    p = _params(method, **params)
    T, D = shape[-2], shape[-1]
    S = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    layout = _layout(method, T, D, p)
    ext = _ext("ccomp.kv GPU dequantize")
    what = f"dequantize ({method})"
    keep = []
    d = _desc(method, S, T, D, p)
    for name, _dt, n in layout:
        d[name] = _array_desc(arrays, name, S, n, ext, what, keep)
    _same_device(keep, what)
    like = keep[0]
    handle = _stream(like, stream)
    with _on_stream(like, handle):
        out = _empty(like, shape, out_dt, ext)
        flag = _empty(like, (1,), np.uint32, ext) if method in ("bitmap_sparse", "gear") else None
    d.update(x=_ptr(out, ext), x_dtype=_F32 if out_dt == np.float32 else _F16, x_ss=T * D, x_ld=D)
    if flag is not None:
        d["flag"] = _ptr(flag, ext)
    first_bad = ext.kv_dequantize(d, handle, bool(check))
    if first_bad >= 0:
        kind = "bitmap/offset" if method == "bitmap_sparse" else "outlier channel"
        raise ValueError(f"dequantize: slice {first_bad}: the {kind} index arrays are inconsistent (damaged data?)")
    return out


def _cache_segments(cache, name, ext, keep):
    """[(lead shape, T, D, descriptor)] of a cache: a quantized tensor, a dense array or a list of them."""
    items = list(cache) if isinstance(cache, (list, tuple)) else [cache]
    if not items:
        raise ValueError(f"{name} is empty")
    segs = []
    for i, it in enumerate(items):
        what = f"{name}" if len(items) == 1 else f"{name}[{i}]"
        if hasattr(it, "method") and hasattr(it, "arrays") and hasattr(it, "shape"):
            if it.method not in ATTENTION_METHODS:
                raise ValueError(f"{what}: the GPU attention reads groupwise, q8_0, q4_0 or dense caches, got "
                                 f"{it.method!r} (dequantize it first)")
            shape = tuple(int(s) for s in it.shape)
            if len(shape) < 3:
                raise ValueError(f"{what} must have shape ([batch,] kv_heads, tokens, head_dim), got {shape}")
            p = _params(it.method, **dict(it.params))
            T, D = shape[-2:]
            S = int(np.prod(shape[:-2], dtype=np.int64))
            d = _desc(it.method, S, T, D, p)
            for aname, _dt, n in _layout(it.method, T, D, p):
                d[aname] = _array_desc(it.arrays, aname, S, n, ext, what, keep)
            segs.append((shape[:-2], T, D, d))
        else:
            v = _view(it, what, ext)
            keep.append(v)
            dtype = _float_view(v, what)
            if len(v.shape) < 3:
                raise ValueError(f"{what} must have shape ([batch,] kv_heads, tokens, head_dim), got {v.shape}")
            S, T, D, ss, ld = _slices(v, what)
            segs.append((tuple(v.shape[:-2]), T, D, {"method": 0, "S": S, "T": T, "D": D, "x": v.ptr,
                                                     "x_dtype": dtype, "x_ss": ss, "x_ld": ld}))
    lead, D = segs[0][0], segs[0][2]
    for i, (l2, _T, d2, _d) in enumerate(segs):
        if l2 != lead or d2 != D:
            raise ValueError(f"{name}: segment {i} has leading shape {l2} and head dim {d2}, segment 0 has "
                             f"{lead} and {D}")
    return segs


def attention(q, k_cache, v_cache, scale=None, *, stream=None):
    """Decode attention ``softmax(q K^T * scale) V`` on the GPU, from the compressed cache.

    ``q``: ``([batch,] heads, n_query, D)`` float32/float16, C-contiguous; caches as described in
    the module docstring; ``scale`` defaults to ``1 / sqrt(D)``.  Returns float32
    ``([batch,] heads, n_query, Dv)``.  Does not wait for the GPU.
    """
    ext = _ext("ccomp.kv GPU attention")
    qv = _view(q, "q", ext)
    q_dtype = _float_view(qv, "q")
    if len(qv.shape) not in (3, 4):
        raise ValueError(f"q must have shape ([batch,] heads, n_query, head_dim), got {qv.shape}")
    if any(n > 1 and st != cs for n, st, cs in zip(qv.shape, qv.strides, _c_strides(qv.shape))):
        raise ValueError(f"q must be C-contiguous (strides {qv.strides} for shape {qv.shape}); make it contiguous")
    keep = []
    ks = _cache_segments(k_cache, "k_cache", ext, keep)
    vs = _cache_segments(v_cache, "v_cache", ext, keep)
    _same_device([qv] + keep, "attention")
    batched = len(qv.shape) == 4
    B = qv.shape[0] if batched else 1
    H, nq, D = qv.shape[-3:]
    lead = ks[0][0]
    if len(lead) != len(qv.shape) - 2 or vs[0][0] != lead:
        raise ValueError(f"q has shape {qv.shape} but the caches have leading shapes {lead} and {vs[0][0]} "
                         f"(expected ([batch,] kv_heads) matching q)")
    if batched and lead[0] != B:
        raise ValueError(f"q has batch {B} but the caches have batch {lead[0]}")
    G = lead[-1]
    if G == 0 or H % G:
        raise ValueError(f"query heads ({H}) must be a multiple of the K/V heads ({G})")
    if ks[0][2] != D:
        raise ValueError(f"q has head dim {D} but the keys have {ks[0][2]}")
    Tk, Tv = sum(s[1] for s in ks), sum(s[1] for s in vs)
    if Tk != Tv:
        raise ValueError(f"K and V hold different token counts ({Tk} and {Tv})")
    if Tk == 0:
        raise ValueError("the cache holds no tokens")
    Dv = vs[0][2]
    for dim, name in ((D, "key"), (Dv, "value")):
        if dim % 32 or not 32 <= dim <= 256:
            raise ValueError(f"the GPU attention needs a {name} head dim that is a multiple of 32 up to 256, got {dim}")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    S, R = B * G, (H // G) * nq
    kd, vd = tuple(s[3] for s in ks), tuple(s[3] for s in vs)
    ws_bytes = ext.kv_attention_workspace(S, R, Dv, vd)
    handle = _stream(qv, stream)
    with _on_stream(qv, handle):
        out = _empty(qv, tuple(qv.shape[:-1]) + (Dv,), np.float32, ext)
        if B * H * nq == 0:
            return out
        ws = _empty(qv, (max(ws_bytes, 16),), np.uint8, ext)
    ext.kv_attention(qv.ptr, q_dtype, S, R, D, scale, kd, vd, _ptr(out, ext), _ptr(ws, ext), ws_bytes, handle)
    return out

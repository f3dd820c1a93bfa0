"""KV-cache quantization and attention over the compressed cache.

Every method quantizes a tensor of shape ``(..., tokens, head_dim)`` (float32
or float16; the leading axes are batch and heads) into a
:class:`QuantizedTensor`, which dequantizes, counts its bytes (every scale,
zero and index included) and serialises with a magic, version and CRC-32:

>>> import numpy as np, ccomp.kv as kv
>>> x = np.random.default_rng(0).normal(size=(2, 4, 64, 128)).astype(np.float32)
>>> k = kv.quantize(x, "groupwise", bits=4, group=32, axis="channel")   # keys: per channel (KIVI)
>>> k.shape, round(k.bits_per_element, 3)
((2, 4, 64, 128), 5.0)
>>> err = np.mean((k.dequantize() - x) ** 2) / np.mean(x ** 2)
>>> bool(err < 0.02)
True
>>> kv.QuantizedTensor.from_bytes(k.to_bytes()).bits_per_element == k.bits_per_element
True

:func:`attention` computes ``softmax(q K^T * scale) V`` for decode steps
directly from the compressed K and V (no dense copy is made).

Methods (see :func:`quantize`): ``"groupwise"`` (asymmetric min-max,
2/3/4/8 bits, groups of 32/64/128 along tokens per channel or along channels
per token), ``"gear"`` (groupwise + per-token fp16 outliers + low rank),
``"bitmap_sparse"`` (magnitude pruning in 64-channel bitmap tiles),
``"turbo"`` (random Hadamard rotation + Lloyd-Max, optional QJL residual),
``"q8_0"`` and ``"q4_0"`` (blocks byte-identical to ggml's, so caches can be
exchanged with llama.cpp tools), and the streaming :class:`KIVICache`.
"""
import json
import struct
import zlib

import numpy as np

from . import _core
from ._args import first_nonfinite
from ._args import threads as _threads
from ._core import CorruptStreamError
from .cuda import on_device

__all__ = ["QuantizedTensor", "KIVICache", "quantize", "attention", "lloyd_max", "METHODS"]

METHODS = ("groupwise", "kivi", "gear", "bitmap_sparse", "turbo", "q8_0", "q4_0")
# the core's method numbers (CCOMP_KV_M_*)
_CODE = {"dense": 0, "groupwise": 1, "q8_0": 2, "q4_0": 2, "turbo": 3, "bitmap_sparse": 4, "gear": 5}
_AXES = {"channel": 0, "token": 1}
_GGML = {"q8_0": 0, "q4_0": 1}
_MAGIC = b"CCKV"
_VERSION = 1


def _as_slices(x, name="x"):
    """(..., T, D) float32/float16 -> (float32 array [S, T, D], original shape)."""
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        x = np.from_dlpack(x.detach() if hasattr(x, "detach") else x)
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float16):
        raise TypeError(f"{name} must be float32 or float16, got {a.dtype}")
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape (..., tokens, head_dim), got shape {a.shape}")
    shape = a.shape
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1, shape[-2], shape[-1])
    return a, shape


def _ctuple(method, p):
    """The core's parameter tuple (bits, group, axis, type, qjl, rank, iters, frac, seed)."""
    frac = p.get("sparsity", p.get("outliers", 0.0))
    return (int(p.get("bits", 0)), int(p.get("group", 0)), _AXES.get(p.get("axis"), 0), _GGML.get(method, 0),
            int(bool(p.get("qjl", False))), int(p.get("rank", 0)), int(p.get("iters", 1)), float(frac),
            int(p.get("seed", 0)))


def _layout(method, T, D, params):
    """[(name, dtype, count per slice)] of a method's arrays, from the core."""
    return _core.kv_layout(_CODE[method], T, D, _ctuple(method, params))


class QuantizedTensor:
    """A quantized tensor: ``method``, ``params``, ``shape`` and its arrays.

    ``arrays`` maps names to 2-D NumPy arrays ``[slices, n]`` (one row per
    batch x head slice): groupwise ``codes`` (uint8, bit-packed), ``scale``,
    ``zero`` (fp16 as uint16); q8_0/q4_0 ``blocks``; turbo ``codes``,
    ``norms`` (float32) and with QJL ``signs``, ``res_norms``; bitmap_sparse
    ``bitmaps`` (uint64), ``offsets`` (uint32), ``values`` (fp16); gear the
    groupwise arrays plus ``out_idx``, ``out_vals`` (fp16), ``U``, ``W``
    (fp16 low-rank factors).  ``dequantize()`` gives float32 of ``shape``;
    ``nbytes`` counts every array (codes and all metadata);
    ``bits_per_element = 8 * nbytes / elements``.
    """

    def __init__(self, method, shape, params, arrays):
        self.method = method
        self.shape = tuple(int(s) for s in shape)
        self.params = dict(params)
        self.arrays = dict(arrays)

    def __repr__(self):
        p = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"QuantizedTensor({self.method}, shape={self.shape}, {p}, {self.bits_per_element:.3f} bits/element)"

    @property
    def tokens(self):
        return self.shape[-2]

    @property
    def head_dim(self):
        return self.shape[-1]

    @property
    def slices(self):
        return int(np.prod(self.shape[:-2], dtype=np.int64))

    @property
    def nbytes(self):
        """Bytes of every array, plus the 8-byte seed a turbo tensor needs to decode."""
        return int(sum(a.nbytes for a in self.arrays.values())) + (8 if self.method == "turbo" else 0)

    @property
    def bits_per_element(self):
        n = int(np.prod(self.shape, dtype=np.int64))
        return 8.0 * self.nbytes / n if n else 0.0

    def to_device(self, like=None):
        """The same tensor with its arrays on the GPU (a ``ccomp._kv_gpu.Quantized``: ``dequantize()``
        and :func:`attention` with CUDA queries run there); ``like`` picks torch or CuPy arrays and
        the device (default: ccomp's own device arrays on the current device)."""
        from . import _kv_gpu
        from ._ac_gpu import to_device as upload

        def put(a):
            if like is None:
                return upload(a)
            if type(like).__module__.split(".")[0] == "torch":
                import torch

                # unsigned types as the signed ones of the same size (older torch has no uint16/32/64)
                signed = a.view(a.dtype.str.replace("u", "i")) if a.dtype.kind == "u" and a.itemsize > 1 else a
                return torch.as_tensor(signed, device=like.device)
            import cupy

            with cupy.cuda.Device(like.device.id):
                return cupy.asarray(a)

        return _kv_gpu.Quantized(self.method, self.shape, self.params, {n: put(a) for n, a in self.arrays.items()})

    @classmethod
    def from_device(cls, q):
        """A host copy of a quantized tensor on the GPU (the result of :func:`quantize` on a CUDA tensor):
        the same method, shape, params and bytes; serialise it with :meth:`to_bytes`."""
        want = {name: np.dtype(dt) for name, dt, _ in _layout(q.method, q.shape[-2], q.shape[-1], q.params)}
        arrays = {}
        for name, a in q.arrays.items():
            if hasattr(a, "get") and not hasattr(a, "cpu"):
                host = a.get()  # CuPy, ccomp DeviceArray
            else:
                host = a.detach().cpu().numpy()  # torch
            arrays[name] = np.ascontiguousarray(host).view(want[name])
        t = cls(q.method, q.shape, q.params, arrays)
        t._validate()
        return t

    def _ordered(self):
        return tuple(self.arrays[name] for name, _, _ in _layout(self.method, self.tokens, self.head_dim, self.params))

    def dequantize(self, threads=None, out=None):
        """float32 array of ``shape``: the reconstruction the attention kernels use (written into
        ``out``, a C-contiguous float32 array of that shape, when given)."""
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != self.shape):
            raise ValueError(f"out must be a float32 NumPy array of shape {self.shape}, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        res = _core.kv_dequantize(_CODE[self.method], self.tokens, self.head_dim, _ctuple(self.method, self.params),
                                  self._ordered(), _threads(threads), out)
        return out if out is not None else res.reshape(self.shape)

    def _segment(self, first, count):
        """Slices [first, first + count) as a cache segment for the core's attention."""
        sl = slice(first, first + count)
        return (_CODE[self.method], self.tokens, self.head_dim, _ctuple(self.method, self.params),
                tuple(a[sl] for a in self._ordered()))

    # ------------------------------------------------------------ format
    def to_bytes(self):
        """Serialise: ``CCKV``, version byte, header length (uint32 LE), a JSON
        header (method, shape, params, the arrays' names, dtypes and shapes),
        the arrays' bytes (little-endian, in header order), then the CRC-32 of
        everything before it (uint32 LE)."""
        names = sorted(self.arrays)
        header = json.dumps({"method": self.method, "shape": list(self.shape), "params": self.params,
                             "arrays": [[n, self.arrays[n].dtype.newbyteorder("<").str, list(self.arrays[n].shape)]
                                        for n in names]}, sort_keys=True).encode()
        parts = [_MAGIC, struct.pack("<BI", _VERSION, len(header)), header]
        parts += [np.ascontiguousarray(self.arrays[n]).astype(self.arrays[n].dtype.newbyteorder("<")).tobytes()
                  for n in names]
        body = b"".join(parts)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data):
        """Inverse of :meth:`to_bytes`; raises :class:`ccomp.CorruptStreamError`
        on damaged, truncated or inconsistent data."""
        data = bytes(data)
        if len(data) < 13 or data[:4] != _MAGIC:
            raise CorruptStreamError("not a ccomp.kv tensor (bad magic or too short)")
        if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
            raise CorruptStreamError("CRC-32 mismatch: the tensor is damaged or truncated")
        version, hlen = struct.unpack("<BI", data[4:9])
        if version != _VERSION:
            raise CorruptStreamError(f"unsupported version {version} (this build reads {_VERSION})")
        try:
            h = json.loads(data[9:9 + hlen])
            pos = 9 + hlen
            arrays = {}
            for name, dt, shape in h["arrays"]:
                dt = np.dtype(dt)
                if dt.kind not in "uf" or any(int(d) < 0 for d in shape):
                    raise CorruptStreamError(f"array {name!r} has an invalid dtype or shape")
                n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
                if pos + n > len(data) - 4:
                    raise CorruptStreamError("array data runs past the end")
                arrays[name] = np.frombuffer(data, dtype=dt, count=n // dt.itemsize, offset=pos).reshape(shape)
                arrays[name] = arrays[name].astype(dt.newbyteorder("="))
                pos += n
            if pos != len(data) - 4:
                raise CorruptStreamError("trailing bytes after the arrays")
            q = cls(h["method"], h["shape"], h["params"], arrays)
            q._validate()
        except CorruptStreamError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CorruptStreamError(f"invalid ccomp.kv tensor: {e}") from None
        return q

    def _validate(self):
        """Raises ValueError when the arrays do not fit the method, shape and params."""
        if self.method not in _CODE or self.method == "dense":
            raise ValueError(f"unknown method {self.method!r}")
        if len(self.shape) < 2:
            raise ValueError(f"shape must be (..., tokens, head_dim), got {self.shape}")
        S = self.slices
        want = {name: (np.dtype(dt), (S, n)) for name, dt, n in _layout(self.method, self.tokens, self.head_dim,
                                                                         self.params)}
        got = {k: (v.dtype, tuple(v.shape)) for k, v in self.arrays.items()}
        if got != want:
            raise ValueError(f"arrays {got} do not match {self.method} of shape {self.shape} (expected {want})")
        if self.method in ("bitmap_sparse", "gear"):
            self.dequantize()  # the core checks the index arrays (offsets, outlier channels) before any use


def _check_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    return int(v)


def _check_frac(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {v}")
    return v


def _method_params(method, bits, group, axis, sparsity, outliers, rank, iters, seed, qjl):
    """The params dict a method keeps (validated types; ranges are checked by the core)."""
    if method in ("groupwise", "gear"):
        if axis not in _AXES:
            raise ValueError(f"axis must be 'channel' or 'token', got {axis!r}")
        p = {"bits": _check_int("bits", 4 if bits is None else bits), "group": _check_int("group", group),
             "axis": axis}
        if method == "gear":
            p.update(outliers=_check_frac("outliers", outliers), rank=_check_int("rank", rank),
                     iters=_check_int("iters", iters), seed=_check_int("seed", seed) & (2 ** 64 - 1))
        return p
    if method == "turbo":
        return {"bits": _check_int("bits", 3 if bits is None else bits), "qjl": bool(qjl),
                "seed": _check_int("seed", seed) & (2 ** 64 - 1)}
    if method == "bitmap_sparse":
        return {"sparsity": _check_frac("sparsity", sparsity)}
    if method in _GGML:
        return {}
    raise ValueError(f"method must be one of {tuple(m for m in METHODS if m != 'kivi')} "
                     f"(KIVI is the streaming KIVICache), got {method!r}")


def quantize(x, method="groupwise", *, bits=None, group=32, axis="token", sparsity=0.5, outliers=0.02, rank=4,
             iters=2, seed=0, qjl=False, threads=None):
    """Quantize ``x`` of shape ``(..., tokens, head_dim)`` (float32/float16) with ``method``.

    - ``"groupwise"``: asymmetric min-max, ``bits`` in {2, 3, 4, 8} (2^b - 1
      levels), ``group`` in {32, 64, 128} along ``axis="channel"`` (groups
      of tokens within a channel: keys, as KIVI) or ``axis="token"`` (groups of
      channels within a token: values); fp16 scale and zero per group;
      ``code = clamp(floor((x - zero) / scale + 0.5))``.
    - ``"gear"``: GEAR: the ``outliers`` fraction of entries of largest
      magnitude of every token kept in fp16 (the same count per token at any
      length), groupwise quantization (``bits``, ``group``, ``axis``) of the
      rest, and a rank-``rank`` approximation of the remaining residual by
      ``iters`` rounds of power iteration with QR (a basis per slice; fp16
      factors).  ``rank=0`` leaves the low-rank part out.
    - ``"bitmap_sparse"``: per-token magnitude pruning to ``sparsity`` (the
      fraction of zeros), tiles of 64 channels with a 64-bit occupancy bitmap,
      fp16 nonzeros and tile offsets.
    - ``"turbo"``: random-sign Hadamard rotation (``seed``), Lloyd-Max scalar
      quantization of each coordinate with ``bits`` in 1..4, float32 norms;
      ``qjl=True`` adds a 1-bit QJL sketch of the residual whose inner-product
      estimate keeps attention scores unbiased.  head_dim a power of two.
    - ``"q8_0"``, ``"q4_0"``: ggml's blocks of 32 values (byte-identical to
      llama.cpp's reference quantizers).

    NaN or infinite values and bad parameters raise ValueError saying what was
    expected and what was received.

    A CUDA tensor (torch, CuPy) is quantized on its GPU (every method but
    gear, whose low-rank fit runs here): the result holds device arrays with
    the same bytes as the CPU's, ``.to_host()`` gives a :class:`QuantizedTensor`,
    and :func:`attention` with CUDA queries runs on the GPU.
    """
    if method == "kivi":
        raise ValueError("KIVI is a streaming cache: use ccomp.kv.KIVICache(bits=..., group=..., residual=...)"
                         ".append(k, v)")
    p = _method_params(method, bits, group, axis, sparsity, outliers, rank, iters, seed, qjl)
    if on_device(x):
        return _gpu_quantize(x, method, p)
    a, shape = _as_slices(x)
    arrays = _core.kv_quantize(_CODE[method], a, _ctuple(method, p), _threads(threads))
    names = [name for name, _, _ in _layout(method, shape[-2], shape[-1], p)]
    return QuantizedTensor(method, shape, p, dict(zip(names, arrays)))


def _gpu_quantize(x, method, p):
    """quantize() of a CUDA tensor: the arrays stay on its device."""
    from . import _kv_gpu

    if method == "gear":
        raise ValueError("gear quantization fits its low-rank factor on the CPU: pass a host array "
                         "(the result's arrays can then be moved to the GPU with .to_device())")
    arrays = _kv_gpu.quantize(x, method, **p)
    return _kv_gpu.Quantized(method, tuple(x.shape), p, arrays)


def lloyd_max(bits):
    """The Lloyd-Max quantizer of a standard normal with ``bits`` in 1..4:
    ``(centroids, thresholds, mse)`` computed by Lloyd's algorithm on the
    exact Gaussian (mse: E[(X - Q(X))^2], e.g. 0.0345 for 3 bits)."""
    return _core.kv_lloyd_max(_check_int("bits", bits))


class _Growing:
    """A [S, n] array that grows along n with doubling capacity; ``full``
    is the whole buffer (the core reads the prefix it needs)."""

    def __init__(self, S, dtype):
        self.full = np.zeros((S, 0), dtype=dtype)
        self.used = 0

    def append(self, a):
        n = a.shape[1]
        if self.used + n > self.full.shape[1]:
            cap = max(self.used + n, 2 * self.full.shape[1], 64)
            grown = np.zeros((self.full.shape[0], cap), dtype=self.full.dtype)
            grown[:, :self.used] = self.full[:, :self.used]
            self.full = grown
        self.full[:, self.used:self.used + n] = a
        self.used += n

    @property
    def data(self):
        return self.full[:, :self.used]


class _KIVIPart:
    """One side (keys or values) of a :class:`KIVICache`: quantized tokens
    followed by full-precision ones; usable as ``k_cache``/``v_cache`` of
    :func:`attention`."""

    def __init__(self, lead, D, params):
        S = int(np.prod(lead, dtype=np.int64))
        self.lead, self.D, self.params = tuple(lead), D, params
        self.quantized_tokens = 0
        self.bufs = [_Growing(S, np.dtype(dt)) for _, dt, _ in _layout("groupwise", params["group"], D, params)]
        self.fp = np.zeros((S, 0, D), dtype=np.float32)

    @property
    def shape(self):
        return self.lead + (self.quantized_tokens + self.fp.shape[1], self.D)

    def add_quantized(self, block, threads):
        arrays = _core.kv_quantize(1, block, _ctuple("groupwise", self.params), threads)
        for b, a in zip(self.bufs, arrays):
            b.append(a)
        self.quantized_tokens += block.shape[1]

    @property
    def nbytes(self):
        return int(sum(b.data.nbytes for b in self.bufs)) + self.fp.nbytes

    def _segments(self, b):
        G = int(np.prod(self.lead[-1:], dtype=np.int64)) if self.lead else 1
        rows = slice(b * G, (b + 1) * G)
        segs = []
        if self.quantized_tokens:
            segs.append((1, self.quantized_tokens, self.D, _ctuple("groupwise", self.params),
                         tuple(buf.full[rows] for buf in self.bufs)))
        if self.fp.shape[1] or not segs:
            segs.append((0, self.fp.shape[1], self.D, _ctuple("dense", {}),
                         (np.ascontiguousarray(self.fp[rows]).reshape(G, -1),)))
        return segs

    def dequantize(self, threads=None):
        """float32 ``shape``: the dequantized tokens followed by the full-precision ones."""
        S = self.fp.shape[0]
        parts = []
        if self.quantized_tokens:
            parts.append(_core.kv_dequantize(1, self.quantized_tokens, self.D, _ctuple("groupwise", self.params),
                                             tuple(b.full for b in self.bufs), _threads(threads)))
        parts.append(self.fp)
        return np.concatenate(parts, axis=1).reshape(self.shape) if S else np.zeros(self.shape, np.float32)


class KIVICache:
    """A streaming KV cache with KIVI's semantics (Liu et al. 2024).

    - Keys are kept in full precision until a block of ``residual`` tokens
      fills; the block is then quantized per channel (groups of ``group``
      tokens of one channel, ``bits`` bits, fp16 scale and zero).
    - Values are quantized per token (groups of ``group`` channels); the
      ``residual`` most recent tokens stay in full precision (a sliding window).

    ``append(k, v)`` takes ``(..., new_tokens, head_dim)`` (prefill or one
    decoding step); the leading axes (batch, heads) are fixed by the first
    call.  ``k_cache`` and ``v_cache`` go to :func:`attention`:

    >>> import numpy as np, ccomp.kv as kv
    >>> rng = np.random.default_rng(0)
    >>> c = kv.KIVICache(bits=2, group=32, residual=64)
    >>> c.append(rng.normal(size=(4, 100, 64)).astype(np.float32), rng.normal(size=(4, 100, 64)).astype(np.float32))
    >>> c.tokens, c.k_cache.quantized_tokens, c.v_cache.quantized_tokens
    (100, 64, 36)
    >>> kv.attention(rng.normal(size=(8, 1, 64)).astype(np.float32), c.k_cache, c.v_cache).shape
    (8, 1, 64)
    """

    def __init__(self, bits=2, group=32, residual=128, threads=None):
        bits, group, residual = _check_int("bits", bits), _check_int("group", group), _check_int("residual", residual)
        if bits not in (2, 3, 4, 8) or group not in (32, 64, 128):
            raise ValueError(f"KIVI needs bits in (2, 3, 4, 8) and group in (32, 64, 128), got {bits} and {group}")
        if residual < group or residual % group:
            raise ValueError(f"residual must be a positive multiple of group ({group}), got {residual}")
        self.bits, self.group, self.residual = bits, group, residual
        self.threads = _threads(threads)
        self.k_cache = self.v_cache = None

    @property
    def tokens(self):
        return 0 if self.k_cache is None else self.k_cache.shape[-2]

    @property
    def nbytes(self):
        return 0 if self.k_cache is None else self.k_cache.nbytes + self.v_cache.nbytes

    @property
    def bits_per_element(self):
        n = 0 if self.k_cache is None else 2 * int(np.prod(self.k_cache.shape, dtype=np.int64))
        return 8.0 * self.nbytes / n if n else 0.0

    def append(self, k, v):
        ka, kshape = _as_slices(k, "k")
        va, vshape = _as_slices(v, "v")
        if kshape != vshape:
            raise ValueError(f"k and v must have the same shape, got {kshape} and {vshape}")
        if first_nonfinite(ka) is not None or first_nonfinite(va) is not None:
            raise ValueError("k or v contains NaN or infinite values")
        lead, D = kshape[:-2], kshape[-1]
        if self.k_cache is None:
            p = {"bits": self.bits, "group": self.group}
            self.k_cache = _KIVIPart(lead, D, dict(p, axis="channel"))
            self.v_cache = _KIVIPart(lead, D, dict(p, axis="token"))
        elif (lead, D) != (self.k_cache.lead, self.k_cache.D):
            raise ValueError(f"the cache holds (..., tokens, head_dim) = {self.k_cache.lead + ('T', self.k_cache.D)}, "
                             f"got {kshape}")
        R, kc, vc = self.residual, self.k_cache, self.v_cache
        kc.fp = np.concatenate([kc.fp, ka], axis=1)
        full = kc.fp.shape[1] // R * R
        if full:
            kc.add_quantized(np.ascontiguousarray(kc.fp[:, :full]), self.threads)
            kc.fp = np.ascontiguousarray(kc.fp[:, full:])
        vc.fp = np.concatenate([vc.fp, va], axis=1)
        old = vc.fp.shape[1] - R
        if old > 0:
            vc.add_quantized(np.ascontiguousarray(vc.fp[:, :old]), self.threads)
            vc.fp = np.ascontiguousarray(vc.fp[:, old:])


def _cache_segments(c, b, G, name):
    """The segments of batch element b of a cache (QuantizedTensor or array)."""
    if isinstance(c, QuantizedTensor):
        if len(c.shape) == 3:
            if b:
                raise ValueError(f"{name} has no batch axis")
            return [c._segment(0, c.shape[0])]
        return [c._segment(b * G, G)]
    if hasattr(c, "_segments"):
        return c._segments(b)
    a = np.asarray(c)
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    a = a if a.ndim == 3 else a[b]
    return [(0, a.shape[1], a.shape[2], _ctuple("dense", {}), (np.ascontiguousarray(a).reshape(a.shape[0], -1),))]


def _cache_shape(c):
    if isinstance(c, QuantizedTensor) or hasattr(c, "shape"):
        return tuple(c.shape)
    return np.shape(c)


def _gpu_cache(c):
    """A cache for the GPU attention: a KIVI side becomes its list of segments."""
    if isinstance(c, _KIVIPart):
        raise TypeError("a KIVICache lives in host memory: pass host queries, or quantize the cache on the GPU")
    return c


def attention(q, k_cache, v_cache, scale=None, threads=None):
    """Decode attention ``softmax(q K^T * scale) V`` over compressed K and V.

    ``q``: ``(heads, n_query, head_dim)`` or ``(batch, heads, n_query, head_dim)``;
    ``k_cache``/``v_cache``: :class:`QuantizedTensor` (any method) or float
    arrays of shape ``([batch,] kv_heads, tokens, head_dim)``; query head
    ``h`` uses K/V head ``h // (heads // kv_heads)`` (grouped-query
    attention).  Every query token sees every cached token (no causal mask
    inside the cache).  ``scale`` defaults to ``1 / sqrt(head_dim)``.
    Returns float32 ``(..., heads, n_query, v_head_dim)``.
    """
    if on_device(q):
        from . import _kv_gpu

        return _kv_gpu.attention(q, _gpu_cache(k_cache), _gpu_cache(v_cache), scale)
    qa = np.asarray(q)
    if qa.dtype not in (np.float32, np.float16):
        raise TypeError(f"q must be float32 or float16, got {qa.dtype}")
    if qa.ndim not in (3, 4):
        raise ValueError(f"q must have shape ([batch,] heads, n_query, head_dim), got {qa.shape}")
    kshape, vshape = _cache_shape(k_cache), _cache_shape(v_cache)
    if len(kshape) != qa.ndim or len(vshape) != qa.ndim:
        raise ValueError(f"q has shape {qa.shape} but the caches have shapes {kshape} and {vshape} "
                         "(both need the same batch axis as q)")
    if kshape[-1] != qa.shape[-1]:
        raise ValueError(f"q has head dim {qa.shape[-1]} but the keys have {kshape[-1]}")
    if kshape[:-1] != vshape[:-1]:
        raise ValueError(f"K and V caches disagree: {kshape} vs {vshape}")
    batched = qa.ndim == 4
    B = qa.shape[0] if batched else 1
    if batched and kshape[0] != B:
        raise ValueError(f"q has batch {B} but the caches have batch {kshape[0]}")
    H, G = qa.shape[-3], kshape[-3]
    if H % G:
        raise ValueError(f"query heads ({H}) must be a multiple of the K/V heads ({G})")
    if first_nonfinite(qa) is not None:
        raise ValueError("q contains NaN or infinite values")
    sc = float(scale) if scale is not None else 1.0 / float(np.sqrt(qa.shape[-1]))
    th = _threads(threads)
    outs = []
    for b in range(B):
        qb = np.ascontiguousarray(qa[b] if batched else qa, dtype=np.float32)
        outs.append(_core.kv_attention(qb, _cache_segments(k_cache, b, G, "k_cache"),
                                       _cache_segments(v_cache, b, G, "v_cache"), G, sc, th))
    return np.stack(outs) if batched else outs[0]

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
import contextlib
import json
import math
import struct
import threading

import numpy as np

from . import _args
from . import _container
from . import _core
from . import _kv_params
from . import _torchio
from ._args import first_nonfinite
from ._args import threads as _threads
from ._core import CorruptStreamError
from .cuda import on_device

__all__ = ["QuantizedTensor", "KIVICache", "quantize", "attention", "lloyd_max", "METHODS"]

# the core's quantization methods (its method table), and the streaming KIVI cache
METHODS = _kv_params.QUANTIZERS + ("kivi",)
# the core's method numbers (CCOMP_KV_M_*)
_CODE = _kv_params.CODE
_MAGIC = b"CCKV"
_VERSION = 1
# bounds on a tensor's shape (the core's: tokens x head dim of a slice at most 2^40; all elements at most 2^48)
_MAX_SLICE = 2 ** 40
_MAX_ELEMENTS = 2 ** 48
_MAX_RANK = 32
# arrays holding float16 (as uint16) or float32 values that must be finite
_F16_ARRAYS = ("scale", "zero", "values", "out_vals", "U", "W")
_F32_ARRAYS = ("norms", "res_norms")
_TURBO_MAX_NORM = 8.507059173023462e37  # CCOMP_KV_TURBO_MAX_NORM: larger norms would reconstruct to inf


_check_method = _kv_params.check_method
_check_params = _kv_params.check_params
_method_params = _kv_params.method_params
_layout = _kv_params.layout


def _check_shape(shape, name="shape"):
    """A tensor shape (..., tokens, head_dim): ints >= 0, head_dim >= 1, bounded sizes."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise TypeError(f"{name} must be a sequence of ints, got {type(shape).__name__}")
    if not 2 <= len(shape) <= _MAX_RANK:
        raise ValueError(f"{name} must be (..., tokens, head_dim) with 2 to {_MAX_RANK} axes, got {tuple(shape)!r}")
    dims = tuple(_args.integer(f"{name}[{i}]", d, 0, _MAX_SLICE) for i, d in enumerate(shape))
    if dims[-1] < 1:
        raise ValueError(f"{name} must have a head dim (last axis) of at least 1, got {dims}")
    total = 1
    for d in dims:
        total *= d
    if dims[-2] * dims[-1] > _MAX_SLICE or total > _MAX_ELEMENTS or math.prod(dims[:-2]) > _MAX_SLICE:
        raise ValueError(f"{name} {dims} is too large (tokens x head_dim at most 2^40, elements at most 2^48)")
    return dims


def _as_slices(x, name="x"):
    """(..., T, D) float32/float16 -> (float32 array [S, T, D], original shape)."""
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        x = _args.from_dlpack(name, x)
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float32)
    a = _args.array(name, x, (np.float32, np.float16))
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape (..., tokens, head_dim), got shape {a.shape}")
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have a head dim (last axis) of at least 1, got shape {a.shape}")
    shape = _check_shape(a.shape, f"{name}.shape")
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(math.prod(shape[:-2]), shape[-2], shape[-1])
    return a, shape


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
        self.method = _check_method(method)
        if method == "dense":
            raise ValueError("method must be a quantization method, got 'dense'")
        self.shape = _check_shape(shape)
        self.params = _check_params(method, params)
        if not isinstance(arrays, dict):
            raise TypeError(f"arrays must be a dict of NumPy arrays, got {type(arrays).__name__}")
        self.arrays = self._checked_arrays(arrays)

    @classmethod
    def _trusted(cls, method, shape, params, arrays):
        """A tensor from the core's own quantizer (its arrays are right by construction)."""
        t = cls.__new__(cls)
        t.method, t.shape, t.params, t.arrays = method, tuple(shape), dict(params), dict(arrays)
        return t

    def _checked_arrays(self, arrays):
        """The arrays of the method, shape and params: names, dtypes, shapes [slices, n], index ranges (in the
        core) and finite float16/float32 values; ValueError or TypeError naming the array otherwise."""
        layout = _layout(self.method, self.tokens, self.head_dim, self.params)
        names = [name for name, _, _ in layout]
        if sorted(map(str, arrays)) != sorted(names) or len(arrays) != len(names):
            raise ValueError(f"arrays of {self.method} must be exactly {names}, got {sorted(map(str, arrays))}")
        S, out = self.slices, {}
        for name, dt, n in layout:
            a = arrays[name]
            if isinstance(a, np.ndarray) and a.dtype.kind == "i" and a.dtype.itemsize == np.dtype(dt).itemsize:
                a = a.view(a.dtype.str.replace("i", "u"))  # torch's signed stand-ins for uint16/32/64
            a = _args.array(f"arrays[{name!r}]", a, (np.dtype(dt),), ndim=2)
            if a.shape != (S, n):
                raise ValueError(f"arrays[{name!r}] must have shape {(S, n)} for {self.method} of shape {self.shape}, "
                                 f"got {a.shape}")
            out[name] = a
        _core.kv_validate(_CODE[self.method], self.tokens, self.head_dim, self.params,
                          tuple(out[name] for name in names))
        for name, a in out.items():
            vals = a.view(np.float16) if name in _F16_ARRAYS else a if name in _F32_ARRAYS else None
            if name == "blocks":  # each ggml block starts with its fp16 scale
                nblocks = self.tokens * (self.head_dim // 32)  # blocks of 32 values; the core sized the array
                size = a.shape[1] // nblocks if nblocks else 2
                vals = np.ascontiguousarray(a.reshape(S, a.shape[1] // size, size)[:, :, :2]).view(np.float16)
            if vals is None:
                continue
            at = first_nonfinite(vals)
            if at is not None:
                raise ValueError(f"arrays[{name!r}] holds a non-finite value {vals[at]} at {at} (damaged data?)")
            top = _TURBO_MAX_NORM if name == "norms" else np.inf  # the residual's norm only scales QJL scores
            if name in _F32_ARRAYS and vals.size and not 0 <= vals.min() <= vals.max() <= top:
                raise ValueError(f"arrays[{name!r}] holds a norm outside [0, {top:g}]: "
                                 f"{vals.min() if vals.min() < 0 else vals.max()} (damaged data?)")
        return out

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
        if not all(hasattr(q, a) for a in ("method", "shape", "params", "arrays")):
            raise TypeError(f"q must be a quantized tensor on the GPU (ccomp._kv_gpu.Quantized), "
                            f"got {type(q).__name__}")
        want = {name: np.dtype(dt) for name, dt, _ in _layout(q.method, q.shape[-2], q.shape[-1], q.params)}
        arrays = {}
        for name, a in q.arrays.items():
            if hasattr(a, "get") and not hasattr(a, "cpu"):
                host = a.get()  # CuPy, ccomp DeviceArray
            else:
                host = a.detach().cpu().numpy()  # torch
            arrays[name] = np.ascontiguousarray(host).view(want[name])
        return cls(q.method, q.shape, q.params, arrays)

    def _ordered(self):
        return tuple(self.arrays[name] for name, _, _ in _layout(self.method, self.tokens, self.head_dim, self.params))

    def dequantize(self, threads=None, out=None):
        """float32 array of ``shape``: the reconstruction the attention kernels use (written into
        ``out``, a C-contiguous float32 array of that shape, when given).  A tensor quantized from a
        torch tensor dequantizes to a torch tensor of that tensor's dtype and device."""
        if out is not None and not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a float32 NumPy array of shape {self.shape}, got {type(out).__name__}")
        if out is not None and out.shape != self.shape:
            raise ValueError(f"out must be a float32 NumPy array of shape {self.shape}, got {out.shape}")
        res = _core.kv_dequantize(_CODE[self.method], self.tokens, self.head_dim, self.params,
                                  self._ordered(), _threads(threads), out)
        if out is not None:
            return out
        return _as_source(res.reshape(self.shape), getattr(self, "_source", None))

    def _segment(self, first, count):
        """Slices [first, first + count) as a cache segment for the core's attention."""
        sl = slice(first, first + count)
        return (_CODE[self.method], self.tokens, self.head_dim, self.params,
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
        parts = [struct.pack("<I", len(header)), header]
        parts += [np.ascontiguousarray(self.arrays[n]).astype(self.arrays[n].dtype.newbyteorder("<")).tobytes()
                  for n in names]
        return _container.frame(_MAGIC, _VERSION, parts)

    @classmethod
    def from_bytes(cls, data):
        """Inverse of :meth:`to_bytes`; raises :class:`ccomp.CorruptStreamError`
        on damaged, truncated or inconsistent data (every header field is checked: keys, types,
        ranges, the arrays' names, dtypes and shapes against the method's layout, the index arrays
        and the finiteness of the stored scales and norms) and TypeError when ``data`` is not
        bytes-like."""
        if isinstance(data, (str, int, float)) or data is None:
            raise TypeError(f"data must be a bytes-like object, got {type(data).__name__}")
        try:
            data = bytes(memoryview(data))
        except TypeError:
            raise TypeError(f"data must be a bytes-like object, got {type(data).__name__}") from None
        _container.unframe(data, _MAGIC, _VERSION, "ccomp.kv tensor", head=4)  # then the header length
        (hlen,) = struct.unpack("<I", data[5:9])
        if 9 + hlen > len(data) - 4:
            raise CorruptStreamError(f"header length {hlen} runs past the end ({len(data)} bytes)")
        try:
            h = json.loads(data[9:9 + hlen].decode("utf-8"))
        except RecursionError:
            raise CorruptStreamError("invalid ccomp.kv header: JSON nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise CorruptStreamError(f"invalid ccomp.kv header: not JSON ({e})") from None
        try:
            method, shape, params, specs = cls._header(h)
            pos, arrays = 9 + hlen, {}
            for name, dt, ashape in specs:
                n = ashape[0] * ashape[1] * dt.itemsize
                if pos + n > len(data) - 4:
                    raise CorruptStreamError(f"array {name!r} runs past the end of the data")
                arrays[name] = np.frombuffer(data, dtype=dt, count=n // dt.itemsize, offset=pos).reshape(ashape)
                arrays[name] = arrays[name].astype(dt.newbyteorder("="))
                pos += n
            if pos != len(data) - 4:
                raise CorruptStreamError(f"{len(data) - 4 - pos} trailing bytes after the arrays")
            return cls(method, shape, params, arrays)
        except CorruptStreamError:
            raise
        except (TypeError, ValueError) as e:
            raise CorruptStreamError(f"invalid ccomp.kv tensor: {e}") from None

    @staticmethod
    def _header(h):
        """(method, shape, params, [(name, dtype, (rows, cols))]) of a decoded header; TypeError or ValueError
        naming the field that is wrong."""
        if not isinstance(h, dict):
            raise ValueError(f"header must be a JSON object, got {type(h).__name__}")
        keys = ("arrays", "method", "params", "shape")
        if tuple(sorted(h)) != keys:
            raise ValueError(f"header must have exactly the keys {list(keys)}, got {sorted(h)}")
        method = _check_method(h["method"])
        if method == "dense":
            raise ValueError("header method must be a quantization method, got 'dense'")
        if not isinstance(h["shape"], list):
            raise TypeError(f"header shape must be a list, got {type(h['shape']).__name__}")
        shape = _check_shape(h["shape"], "header shape")
        params = _check_params(method, h["params"])
        layout = _layout(method, shape[-2], shape[-1], params)
        S = math.prod(shape[:-2])
        want = {name: (np.dtype(dt).newbyteorder("<"), (S, n)) for name, dt, n in layout}
        specs = h["arrays"]
        if not isinstance(specs, list) or len(specs) != len(want):
            raise ValueError(f"header arrays must list the {len(want)} arrays {sorted(want)}")
        out = []
        for spec in specs:
            if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str) and isinstance(spec[1], str)
                    and isinstance(spec[2], list)):
                raise ValueError(f"header arrays entry must be [name, dtype, shape], got {spec!r:.80}")
            name, dt, ashape = spec
            if name not in want or any(o[0] == name for o in out):
                raise ValueError(f"header arrays: unexpected or repeated array {name!r:.40} (expected {sorted(want)})")
            if dt != want[name][0].str:
                raise ValueError(f"header arrays: {name!r} must have dtype {want[name][0].str!r}, got {dt!r:.40}")
            dims = tuple(_args.integer(f"header arrays {name!r} shape", d, 0, _MAX_ELEMENTS) for d in ashape)
            if dims != want[name][1]:
                raise ValueError(f"header arrays: {name!r} must have shape {list(want[name][1])}, got {list(dims)}")
            out.append((name, want[name][0], dims))
        return method, shape, params, out


_kv_params.register_host_tensor(QuantizedTensor)


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

    A torch tensor (any float dtype, bfloat16 included) is accepted; the result's
    ``dequantize()`` then gives a torch tensor of its dtype and device.

    A CUDA tensor (torch, CuPy) is quantized on its GPU (every method but
    gear, whose low-rank fit runs here): the result holds device arrays with
    the same bytes as the CPU's, ``.to_host()`` gives a :class:`QuantizedTensor`,
    and :func:`attention` with CUDA queries runs on the GPU.
    """
    src = _torchio.first_tensor(x)
    if src is not None:  # torch: quantized as NumPy (CPU) or in place (CUDA); dequantizes back to torch
        q = quantize(_torchio.to_numpy(src), method, bits=bits, group=group, axis=axis, sparsity=sparsity,
                     outliers=outliers, rank=rank, iters=iters, seed=seed, qjl=qjl, threads=threads)
        return _remember_source(q, src)
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, one of {METHODS}, got {type(method).__name__}")
    if method == "kivi":
        raise ValueError("KIVI is a streaming cache: use ccomp.kv.KIVICache(bits=..., group=..., residual=...)"
                         ".append(k, v)")
    p = _method_params(method, bits, group, axis, sparsity, outliers, rank, iters, seed, qjl)
    if on_device(x):
        return _gpu_quantize(x, method, p)
    a, shape = _as_slices(x)
    arrays = _core.kv_quantize(_CODE[method], a, p, _threads(threads))
    names = [name for name, _, _ in _layout(method, shape[-2], shape[-1], p)]
    return QuantizedTensor._trusted(method, shape, p, dict(zip(names, arrays)))


def _remember_source(q, src):
    """``q`` (quantized from the torch tensor ``src``) set to dequantize to ``src``'s dtype and device."""
    q._source = (src.dtype, src.device)
    if not isinstance(q, QuantizedTensor):  # a GPU tensor: its dequantize gives float32 on the device
        gpu_dequantize = q.dequantize

        def dequantize(dtype="float32", stream=None):
            return _as_source(gpu_dequantize(dtype=dtype, stream=stream), q._source)

        q.dequantize = dequantize
    return q


def _as_source(a, source):
    """``a`` (a float32 NumPy or device array) as a torch tensor of ``source = (dtype, device)``; ``a`` itself
    when ``source`` is None."""
    if source is None:
        return a
    torch = _torchio.torch_module()
    t = torch.from_numpy(a) if isinstance(a, np.ndarray) else torch.from_dlpack(a) if not torch.is_tensor(a) else a
    return t.to(device=source[1], dtype=source[0])


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
    return _core.kv_lloyd_max(_args.integer("bits", bits, 1, 4))


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

    def __init__(self, lead, D, params, lock=None):
        S = int(np.prod(lead, dtype=np.int64))
        self.lead, self.D, self.params = tuple(lead), D, params
        self._lock = lock if lock is not None else threading.RLock()  # the cache's: held by appends and readers
        self.quantized_tokens = 0
        self.bufs = [_Growing(S, np.dtype(dt)) for _, dt, _ in _layout("groupwise", params["group"], D, params)]
        self.fp = np.zeros((S, 0, D), dtype=np.float16)  # the recent tokens, not yet quantized
        self._source = None  # (dtype, device) of the torch tensors appended, if any

    @property
    def shape(self):
        return self.lead + (self.quantized_tokens + self.fp.shape[1], self.D)

    def add_quantized(self, block, threads):
        arrays = _core.kv_quantize(_CODE["groupwise"], block, self.params, threads)
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
            segs.append((_CODE["groupwise"], self.quantized_tokens, self.D, self.params,
                         tuple(buf.full[rows] for buf in self.bufs)))
        if self.fp.shape[1] or not segs:  # the core reads dense float32: the fp16 window widened (exact)
            segs.append((_CODE["dense"], self.fp.shape[1], self.D, {},
                         (self.fp[rows].astype(np.float32).reshape(G, -1),)))
        return segs

    def dequantize(self, threads=None):
        """float32 ``shape``: the dequantized tokens followed by the float16 ones widened (a torch tensor of
        the appended tensors' dtype and device when they were torch tensors)."""
        with self._lock:  # not in the middle of an append from another thread
            return _as_source(self._dequantize(threads), self._source)

    def _dequantize(self, threads):
        S = self.fp.shape[0]
        parts = []
        if self.quantized_tokens:
            parts.append(_core.kv_dequantize(_CODE["groupwise"], self.quantized_tokens, self.D, self.params,
                                             tuple(b.full for b in self.bufs), _threads(threads)))
        parts.append(self.fp.astype(np.float32))
        return np.concatenate(parts, axis=1).reshape(self.shape) if S else np.zeros(self.shape, np.float32)


class KIVICache:
    """A streaming KV cache with KIVI's semantics (Liu et al. 2024).

    - Tokens are stored as float16 (as an fp16 cache would hold them); values
      outside float16's range raise ValueError.
    - Keys stay in float16 until a block of ``residual`` tokens fills; the
      block is then quantized per channel (groups of ``group`` tokens of one
      channel, ``bits`` bits, fp16 scale and zero).
    - Values are quantized per token (groups of ``group`` channels); the
      ``residual`` most recent tokens stay in float16 (a sliding window).

    ``nbytes`` counts the quantized arrays and the float16 window.

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
        bits, group = _args.integer("bits", bits, 0, 64), _args.integer("group", group, 1, 2 ** 31 - 1)
        residual = _args.integer("residual", residual, 1, 2 ** 40)
        if bits not in (2, 3, 4, 8) or group not in (32, 64, 128):
            raise ValueError(f"KIVI needs bits in (2, 3, 4, 8) and group in (32, 64, 128), got {bits} and {group}")
        if residual < group or residual % group:
            raise ValueError(f"residual must be a positive multiple of group ({group}), got {residual}")
        self.bits, self.group, self.residual = bits, group, residual
        self.threads = _threads(threads)
        self.k_cache = self.v_cache = None
        # appends from several threads are applied one at a time; attention and dequantize of the cache's K and V
        # sides hold it too, so they never see an append half done (K grown, V not yet)
        self._lock = threading.RLock()

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
        """Appends ``k`` and ``v`` of shape ``(..., new_tokens, head_dim)`` (NumPy or torch, any float dtype);
        thread-safe (one append at a time)."""
        src = _torchio.first_tensor(k, v)
        if src is not None:
            k = _torchio.to_numpy(k) if _torchio.is_tensor(k) else k
            v = _torchio.to_numpy(v) if _torchio.is_tensor(v) else v
            if on_device(k) or on_device(v):
                raise TypeError("a KIVICache lives in host memory: append CPU tensors")
        ka, kshape = _as_slices(k, "k")
        va, vshape = _as_slices(v, "v")
        if kshape != vshape:
            raise ValueError(f"k and v must have the same shape, got {kshape} and {vshape}")
        for name, a in (("k", ka), ("v", va)):
            at = first_nonfinite(a)
            if at is not None:
                where = tuple(int(i) for i in np.unravel_index(np.ravel_multi_index(at, a.shape), kshape))
                raise ValueError(f"{name} contains NaN or infinite values: {a[at]} at index {where}")
        with np.errstate(over="ignore"):
            kh, vh = ka.astype(np.float16), va.astype(np.float16)
        for name, a, a32 in (("k", kh, ka), ("v", vh, va)):
            at = first_nonfinite(a)
            if at is not None:
                where = tuple(int(i) for i in np.unravel_index(np.ravel_multi_index(at, a.shape), kshape))
                raise ValueError(f"{name} holds {a32[at]} at index {where}, beyond float16's range (+-65504) "
                                 "in which the cache stores its tokens")
        with self._lock:
            self._append(kh, vh, kshape)
            if src is not None:
                self.k_cache._source = self.v_cache._source = (src.dtype, src.device)

    def _append(self, ka, va, kshape):
        lead, D = kshape[:-2], kshape[-1]
        if self.k_cache is None:
            p = {"bits": self.bits, "group": self.group}
            # both layouts checked before any state changes: a head dim the values' groups cannot split is refused now
            _layout("groupwise", 0, D, dict(p, axis="channel"))
            _layout("groupwise", 0, D, dict(p, axis="token"))
            self.k_cache = _KIVIPart(lead, D, dict(p, axis="channel"), self._lock)
            self.v_cache = _KIVIPart(lead, D, dict(p, axis="token"), self._lock)
        elif (lead, D) != (self.k_cache.lead, self.k_cache.D):
            raise ValueError(f"the cache holds (..., tokens, head_dim) = {self.k_cache.lead + ('T', self.k_cache.D)}, "
                             f"got {kshape}")
        R, kc, vc = self.residual, self.k_cache, self.v_cache
        kc.fp = np.concatenate([kc.fp, ka], axis=1)
        full = kc.fp.shape[1] // R * R
        if full:
            kc.add_quantized(kc.fp[:, :full].astype(np.float32), self.threads)
            kc.fp = np.ascontiguousarray(kc.fp[:, full:])
        vc.fp = np.concatenate([vc.fp, va], axis=1)
        old = vc.fp.shape[1] - R
        if old > 0:
            vc.add_quantized(vc.fp[:, :old].astype(np.float32), self.threads)
            vc.fp = np.ascontiguousarray(vc.fp[:, old:])


def _cache_segments(c, b, G, name):
    """The segments of batch element b of a cache (QuantizedTensor, KIVI side or float32 array [S, T, D])."""
    if isinstance(c, QuantizedTensor):
        if len(c.shape) == 3:
            if b:
                raise ValueError(f"{name} has no batch axis")
            return [c._segment(0, c.shape[0])]
        return [c._segment(b * G, G)]
    if hasattr(c, "_segments"):
        return c._segments(b)
    a = c if c.ndim == 3 else c[b]
    return [(_CODE["dense"], a.shape[1], a.shape[2], {}, (np.ascontiguousarray(a).reshape(a.shape[0], -1),))]


def _dense_cache(c, name, ndim):
    """A float cache given as an array: float32, native, C-contiguous, finite, of q's rank."""
    if isinstance(c, QuantizedTensor) or hasattr(c, "_segments"):
        return c
    a = _args.array(name, c, (np.float32, np.float16), ndim=ndim)
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have a head dim (last axis) of at least 1, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    _args.finite(name, a)
    return a


def _cache_shape(c):
    if isinstance(c, QuantizedTensor) or hasattr(c, "shape"):
        return tuple(c.shape)
    return np.shape(c)


def _gpu_cache(c):
    """A cache for the GPU attention: a KIVI side becomes its list of segments."""
    if isinstance(c, _KIVIPart):
        raise TypeError("a KIVICache lives in host memory: pass host queries, or quantize the cache on the GPU")
    return c


@_torchio.torch_io(like="q")
def attention(q, k_cache, v_cache, scale=None, threads=None):
    """Decode attention ``softmax(q K^T * scale) V`` over compressed K and V.

    ``q``: ``(heads, n_query, head_dim)`` or ``(batch, heads, n_query, head_dim)``;
    ``k_cache``/``v_cache``: :class:`QuantizedTensor` (any method) or float
    arrays of shape ``([batch,] kv_heads, tokens, head_dim)``; query head
    ``h`` uses K/V head ``h // (heads // kv_heads)`` (grouped-query
    attention).  Every query token sees every cached token (no causal mask
    inside the cache).  ``scale`` defaults to ``1 / sqrt(head_dim)``.
    Returns float32 ``(..., heads, n_query, v_head_dim)``; a torch ``q`` (any float dtype) gives a
    torch tensor of its dtype and device (computed in float32).
    """
    sc = None if scale is None else _args.real("scale", scale)
    th = _threads(threads)
    if on_device(q):
        from . import _kv_gpu

        return _kv_gpu.attention(q, _gpu_cache(k_cache), _gpu_cache(v_cache), sc)
    qa = _args.array("q", q, (np.float32, np.float16))
    if qa.ndim not in (3, 4):
        raise ValueError(f"q must have shape ([batch,] heads, n_query, head_dim), got {qa.shape}")
    if qa.shape[-1] == 0:
        raise ValueError(f"q must have a head dim (last axis) of at least 1, got shape {qa.shape}")
    k_cache, v_cache = _dense_cache(k_cache, "k_cache", qa.ndim), _dense_cache(v_cache, "v_cache", qa.ndim)
    locks = sorted({id(c._lock): c._lock for c in (k_cache, v_cache) if isinstance(c, _KIVIPart)}.items())
    with contextlib.ExitStack() as held:  # KIVI caches: no append from another thread while they are read
        for _, lock in locks:
            held.enter_context(lock)
        return _attention_host(qa, k_cache, v_cache, sc, th)


def _attention_host(qa, k_cache, v_cache, sc, th):
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
    if G < 1:
        raise ValueError(f"the caches must hold at least one K/V head, got shape {kshape}")
    if H % G:
        raise ValueError(f"query heads ({H}) must be a multiple of the K/V heads ({G})")
    at = first_nonfinite(qa)
    if at is not None:
        raise ValueError(f"q contains NaN or infinite values: {qa[at]} at index {at}")
    sc = sc if sc is not None else 1.0 / float(np.sqrt(qa.shape[-1]))
    if batched and B == 0:
        return np.zeros(qa.shape[:-1] + (vshape[-1],), np.float32)
    outs = []
    for b in range(B):
        qb = np.ascontiguousarray(qa[b] if batched else qa, dtype=np.float32)
        outs.append(_core.kv_attention(qb, _cache_segments(k_cache, b, G, "k_cache"),
                                       _cache_segments(v_cache, b, G, "v_cache"), G, sc, th))
    out = np.stack(outs) if batched else outs[0]
    if first_nonfinite(out) is not None:
        raise ValueError(f"attention output is not finite: scale * q K^T overflows float32 (|q| up to "
                         f"{float(np.abs(qa).max()):g}, scale {sc:g}) or a cache holds non-finite values")
    return out

"""GPU path of ccomp.ac's CDF quantization (kernels/ac.cu).

The results are bit-identical to the CPU reference (``ccomp._core.ac_lookup`` /
``ac_find``, csrc/ac/quantize.c): the kernels do the same float operations in
the same order (sequential sums, no fused multiply-adds, ccomp's own exp).

Rows live on the GPU as torch or CuPy tensors (anything with ``__dlpack__`` or
``__cuda_array_interface__``), float32 or float64, shape ``[T, V]``, the last
dimension contiguous and any row stride.  NumPy arrays are accepted too and are
copied to the GPU first.  Only two integers per token come back to the host:
the T x V CDF never leaves the device.

Work runs on the CUDA legacy default stream; torch/CuPy tensors are exported
with ``__dlpack__(stream=1)``, which makes their producer's current stream
finish writing them first.  Every call has finished when it returns.

Without a usable GPU every function raises ``RuntimeError``.
"""
import re

import numpy as np

from ._device import DeviceArray, _default_stream_view, _ext, on_device, to_device

__all__ = ["lookup", "scan", "find", "ScanHandle", "DeviceArray", "to_device"]

RULES = {"constriction": 0, "nacrith": 1}
MIN_PRECISION, MAX_PRECISION = 12, 28


def _rule_code(rule):
    if isinstance(rule, str) and rule.lower() in RULES:
        return RULES[rule.lower()]
    if isinstance(rule, (int, np.integer)) and not isinstance(rule, bool) and int(rule) in RULES.values():
        return int(rule)
    raise ValueError(f"rule must be 'constriction' or 'nacrith', got {rule!r}")


def _rule_name(code):
    return "constriction" if code == 0 else "nacrith"


def _check_params(precision, logits, temperature):
    if not isinstance(precision, (int, np.integer)) or isinstance(precision, bool):
        raise TypeError(f"precision must be an integer, got {type(precision).__name__}")
    precision = int(precision)
    if not MIN_PRECISION <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be between {MIN_PRECISION} and {MAX_PRECISION} bits, got {precision}")
    temperature = float(temperature)
    if not (temperature > 0.0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature:g}")
    if not logits and temperature != 1.0:
        raise ValueError("temperature applies to logits; pass logits=True (or scale the probabilities yourself)")
    return precision, bool(logits), temperature


def _check_vocab(V, precision):
    if V < 2:
        raise ValueError(f"quantize: the vocabulary needs at least 2 symbols, got {V}")
    if V >= (1 << precision) - 1:
        raise ValueError(f"quantize: a vocabulary of {V} symbols needs a precision above {precision} bits "
                         f"(every symbol keeps a frequency of at least 1 out of 2^precision)")


def _rows_view(rows, ext, ndim_ok):
    v = _default_stream_view(rows, "rows", ext)
    if not isinstance(v.dtype, np.dtype) or v.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        name = v.dtype.name if isinstance(v.dtype, np.dtype) else v.dtype
        raise TypeError(f"rows must be float32 or float64, got {name}")
    if len(v.shape) not in ndim_ok:
        want = "[T, V]" if ndim_ok == (2,) else "[V] (or [1, V])"
        raise ValueError(f"rows must have shape {want}, got shape {tuple(v.shape)}")
    if len(v.shape) == 1:
        v.shape, v.strides = (1, v.shape[0]), (v.shape[0], v.strides[0])
    T, V = v.shape
    if V > 1 and v.strides[1] != 1:
        raise ValueError(f"the last dimension of rows must be contiguous (stride 1), got stride {v.strides[1]}; "
                         f"make it contiguous first")
    if T <= 1:
        v.strides = (V, 1)
    elif v.strides[0] < V:
        raise ValueError(f"rows must not overlap: row stride {v.strides[0]} is below V = {V}")
    return v


def _host_ints(obj, what, ext):
    """A host int64 copy of an integer vector (on the GPU or the host)."""
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        obj = obj.detach()
    if not isinstance(obj, np.ndarray) and on_device(obj):
        v = _default_stream_view(obj, what, ext)
        if not isinstance(v.dtype, np.dtype) or v.dtype.kind not in "iu":
            raise TypeError(f"{what} must be integers, got {getattr(v.dtype, 'name', v.dtype)}")
        if len(v.shape) != 1:
            raise ValueError(f"{what} must be 1-D, got shape {tuple(v.shape)}")
        n, step = int(v.shape[0]), int(v.strides[0])
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if step < 0:
            raise ValueError(f"{what} has a negative stride")
        span = ((n - 1) * step + 1) * v.dtype.itemsize
        raw = np.frombuffer(ext.to_host(v.ptr, span), dtype=v.dtype)
        return raw[::step].astype(np.int64)
    arr = np.asarray(obj)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got {arr.dtype.name}")
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{what} holds values beyond int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


# ------------------------------------------------------------------ errors


def _cpu_message(row, precision, rule, logits, temperature):
    """The CPU reference's error for one row [V] (as its row 0), or None when it accepts the row."""
    from . import _core

    fn = getattr(_core, "ac_cdf", None)
    if fn is None:  # pragma: no cover - a core without ccomp.ac
        return ("cannot be quantized (a NaN, negative or infinite value, all zeros, or rounding that leaves a "
                "symbol no frequency)")
    try:
        fn(np.ascontiguousarray(row), precision, rule, logits, temperature)
    except ValueError as exc:
        return str(exc)
    return None


def _raise_row_error(v, t, precision, rule, logits, temperature, ext):
    V = v.shape[1]
    item = v.dtype.itemsize
    row = np.frombuffer(ext.to_host(v.ptr + t * v.strides[0] * item, V * item), dtype=v.dtype)
    msg = _cpu_message(row, precision, rule, logits, temperature)
    if msg is None:
        raise RuntimeError(f"ccomp.ac GPU: row {t} was rejected on the GPU but the CPU reference accepts it; "
                           f"this is a bug in ccomp, please report it")
    if msg.startswith("cannot be quantized"):
        raise ValueError(f"{'logits' if logits else 'probs'}[{t}] {msg}")
    # the CPU saw the row as row 0: name the real row
    raise ValueError(re.sub(r"\[0(?=[,\]:])", f"[{t}", msg, count=1))


# ------------------------------------------------------------------ API


def lookup(rows, symbols, precision=24, rule="constriction", logits=False, temperature=1.0):
    """(cum, freq) of ``symbols[t]`` under row ``t`` for every row, computed on the GPU.

    rows: [T, V] float32/float64 probabilities (or logits with ``logits=True``) on
    the GPU; symbols: T integers (GPU or host).  Returns two NumPy uint32 arrays
    of length T, bit-identical to ``ccomp._core.ac_lookup``.  A row that cannot
    be quantized raises ValueError naming it; a symbol outside [0, V) too.
    """
    rule = _rule_code(rule)
    precision, logits, temperature = _check_params(precision, logits, temperature)
    ext = _ext("ccomp.ac GPU lookup")
    v = _rows_view(rows, ext, (2,))
    T, V = v.shape
    _check_vocab(V, precision)
    sym = _host_ints(symbols, "symbols", ext)
    if sym.shape[0] != T:
        raise ValueError(f"symbols must have one entry per row ({T}), got {sym.shape[0]}")
    bad = np.flatnonzero((sym < 0) | (sym >= V))
    if bad.size:
        t = int(bad[0])
        raise ValueError(f"quantize: symbols[{t}] = {int(sym[t])} is outside [0, {V})")
    if T == 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint32)
    cum, freq, first_bad = ext.ac_lookup(v.ptr, 0 if v.dtype == np.float32 else 1, T, V, v.strides[0], rule,
                                         precision, logits, temperature, sym)
    if first_bad >= 0:
        _raise_row_error(v, first_bad, precision, rule, logits, temperature, ext)
    return np.frombuffer(cum, dtype=np.uint32).copy(), np.frombuffer(freq, dtype=np.uint32).copy()


class ScanHandle:
    """Per-row summaries of T rows (normalisation, checkpoints every 256
    symbols) kept on the GPU, from :func:`scan`.

    ``find(t, target)`` gives the symbol of row t whose interval
    ``[cum, cum + freq)`` contains ``target``.  The rows must stay unchanged
    while the handle is used (the handle keeps a reference to them).
    """

    def __init__(self, capsule, view, precision, rule, logits, temperature):
        self._capsule = capsule
        self._view = view
        self.T, self.V = view.shape
        self.precision = precision
        self.rule = _rule_name(rule)
        self.logits = logits
        self.temperature = temperature

    def _alive(self):
        if self._capsule is None:
            raise ValueError("this ScanHandle has been closed")
        return _ext("ScanHandle.find")

    def find_many(self, ts, targets):
        """(symbol, cum, freq) uint32 arrays for the queries (ts[i], targets[i])."""
        ext = self._alive()
        ts = np.ascontiguousarray(np.asarray(ts, dtype=np.int64).reshape(-1))
        tg = np.asarray(targets).reshape(-1)
        if tg.dtype.kind not in "iu":
            raise TypeError(f"targets must be integers, got {tg.dtype.name}")
        if ts.shape != tg.shape:
            raise ValueError(f"row indices and targets differ in length: {ts.shape[0]} vs {tg.shape[0]}")
        bad = np.flatnonzero((ts < 0) | (ts >= self.T))
        if bad.size:
            raise ValueError(f"row {int(ts[bad[0]])} is outside [0, {self.T})")
        tg64 = tg.astype(np.int64) if tg.dtype != np.uint64 else tg
        bad = np.flatnonzero((tg64 < 0) | (tg64 >= (1 << self.precision)))
        if bad.size:
            raise ValueError(f"target {int(tg[bad[0]])} is not below 2^{self.precision}")
        sym, cum, freq = ext.ac_find(self._capsule, ts, np.ascontiguousarray(tg64, dtype=np.uint32))
        return (np.frombuffer(sym, dtype=np.uint32).copy(), np.frombuffer(cum, dtype=np.uint32).copy(),
                np.frombuffer(freq, dtype=np.uint32).copy())

    def find(self, t, target):
        """(symbol, cum, freq) of row t for a decoder target in [0, 2^precision)."""
        s, c, f = self.find_many([int(t)], [int(target)])
        return int(s[0]), int(c[0]), int(f[0])

    def close(self):
        """Free the device memory now (the handle is unusable afterwards)."""
        self._capsule = None
        self._view = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._capsule is None else f"T={self.T}, V={self.V}"
        return f"ScanHandle({state}, precision={self.precision}, rule={self.rule!r}, logits={self.logits})"


def scan(rows, precision=24, rule="constriction", logits=False, temperature=1.0):
    """Scan every row of ``rows`` [T, V] on the GPU once (one kernel) for decoding.

    Returns a :class:`ScanHandle`; a row that cannot be quantized raises
    ValueError naming it (the first such row), like the CPU reference.
    """
    rule = _rule_code(rule)
    precision, logits, temperature = _check_params(precision, logits, temperature)
    ext = _ext("ccomp.ac GPU scan")
    v = _rows_view(rows, ext, (2,))
    T, V = v.shape
    _check_vocab(V, precision)
    if T == 0:
        raise ValueError("rows must hold at least one row")
    capsule, first_bad = ext.ac_scan(v.ptr, 0 if v.dtype == np.float32 else 1, T, V, v.strides[0], rule,
                                     precision, logits, temperature)
    if first_bad >= 0:
        del capsule
        _raise_row_error(v, first_bad, precision, rule, logits, temperature, ext)
    return ScanHandle(capsule, v, precision, rule, logits, temperature)


def find(row, target, precision=24, rule="constriction", logits=False, temperature=1.0):
    """(symbol, cum, freq) of one row [V] on the GPU whose interval contains
    ``target`` (< 2^precision): one step of autoregressive decoding.  Same
    result as ``ccomp._core.ac_find``."""
    rule = _rule_code(rule)
    precision, logits, temperature = _check_params(precision, logits, temperature)
    target = int(target)
    if not 0 <= target < (1 << precision):
        raise ValueError(f"target {target} is not below 2^{precision}")
    ext = _ext("ccomp.ac GPU find")
    v = _rows_view(row, ext, (1, 2))
    if v.shape[0] != 1:
        raise ValueError(f"find takes one row [V] (or [1, V]), got shape {tuple(v.shape)}; use scan() for many")
    _check_vocab(v.shape[1], precision)
    capsule, first_bad = ext.ac_scan(v.ptr, 0 if v.dtype == np.float32 else 1, 1, v.shape[1], v.strides[0], rule,
                                     precision, logits, temperature)
    if first_bad >= 0:
        del capsule
        _raise_row_error(v, 0, precision, rule, logits, temperature, ext)
    handle = ScanHandle(capsule, v, precision, rule, logits, temperature)
    try:
        return handle.find(0, target)
    finally:
        handle.close()

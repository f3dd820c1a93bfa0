"""Arithmetic (range) coding for neural lossless compression.

A language model gives a probability distribution over its vocabulary at
every position; ``ccomp.ac`` turns the actual tokens into bits and back,
exactly, with huge vocabularies, and safely on damaged input.  The coder and
the model are separate, in the style of ``constriction``:

>>> import numpy as np, ccomp.ac as ac
>>> probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], dtype=np.float32)
>>> data = ac.encode([0, 2, 1], probs)              # a self-describing container
>>> ac.decode(data, probs).tolist()                  # all distributions known
[0, 2, 1]
>>> d = ac.Decoder(data)                             # autoregressive: one row at a time
>>> [d.decode(row) for row in probs]
[0, 2, 1]

**Quantization rules** (``rule=``) turn probabilities into integer
frequencies summing to ``2**precision``, every symbol keeping at least 1:

- ``"constriction"`` (default): bit-compatible with constriction's
  ``Categorical(perfect=False)``: with ``S`` the left-to-right sum of the row
  in its own float type and ``scale = (2**P - V) / S``,
  ``cdf[i] = int(c[i] * scale) + i`` where ``c[i]`` is the running sum before
  ``i``.  At precision 24 a ccomp stream is bit-identical to constriction's
  ``RangeEncoder`` output and each decodes the other's.
- ``"nacrith"``: ``f[i] = floor(p[i] * (2**P - V) / S) + 1`` in float64, the
  remainder to the most likely symbol.

Probabilities need not sum to one (they are normalised by their sum).  With
``logits=True`` rows are logits: ``exp((x - max x) / temperature)`` is
computed with ccomp's own exp, whose bits are the same on every CPU and GPU.

**Stream format.** The range coder has 64-bit state and 32-bit words, written
first to last, each little-endian.  ``encode`` wraps the streams in a
container: magic ``CCAC``, version, precision, rule, what the model was
(logits, temperature, float type), token count, chunk size and count,
vocabulary size, a chunk table (with a CRC-32 of each chunk's symbols), the
chunks' streams and a CRC-32; chunks are independent streams, so long
sequences use every core.  A decoder given other probabilities than the
encoder's raises :class:`ccomp.CorruptStreamError` instead of returning other
tokens.

Torch and CuPy tensors are accepted through DLPack; on a CUDA device the
quantization runs on the GPU and only two integers per token come back (a torch
CUDA tensor where ccomp's CUDA kernels cannot run is read on the host instead:
the same bits).

**Torch tensors** of any float dtype (bfloat16 and float16 are widened to
float32, which is exact, so a bfloat16 row gives the CDF of the same values in
float32) and on any device go wherever arrays go: symbols as integer tensors,
containers as bytes (or uint8 tensors).  Arrays come back as tensors on the
device of ``probs``: CDFs and ``(cum, freq)`` pairs as int32 (their values are
below ``2**28``; torch has almost no arithmetic on uint32), symbols as int64.
Nothing is differentiable here: the tensors are read detached.
"""
import threading

import numpy as np

from . import _args, _core
from ._args import threads as _threads
from ._cm import compress, decompress
from ._lm import LMCompressor
from ._lm import info as lm_info
from ._torchio import first_tensor as _first_tensor
from ._torchio import is_tensor as _is_tensor
from ._torchio import to_numpy as _to_numpy
from ._torchio import to_torch as _to_torch
from ._torchio import torch_io

__all__ = [
    "RULES", "quantize", "lookup", "encode", "decode", "info", "Decoder",
    "RangeEncoder", "RangeDecoder", "equal_info_windows", "decode_equal_info_windows",
    "ideal_bits", "compress", "decompress", "LMCompressor", "lm_info",
]

RULES = {"constriction": 0, "nacrith": 1}
_RULE_NAMES = {v: k for k, v in RULES.items()}
DEFAULT_PRECISION = 24
DEFAULT_CHUNK = 16384


# ------------------------------------------------------------------ inputs

def _signed(value):
    """uint32 arrays (CDFs, cum, freq: all below 2**28) as int32, for results that become torch tensors."""
    if isinstance(value, np.ndarray) and value.dtype == np.uint32:
        return value.view(np.int32)
    if isinstance(value, tuple):
        return tuple(_signed(v) for v in value)
    return value


def _tensor_io(like=None):
    """ccomp.ac's torch rule: float16/bfloat16 widened to float32, uint32 results as int32 tensors."""
    return torch_io(like=like, widen=True, post=_signed)


def _host(x):
    """A torch tensor (any device) as a host NumPy array, float16/bfloat16 widened to float32."""
    return _to_numpy(x, widen=True, host=True)


def _rule(rule):
    return RULES[_args.choice("rule", rule, tuple(RULES))]


def _precision(precision):
    return _args.integer("precision", precision, 12, 28)


def _on_cuda(x):
    """True for a tensor that lives on a CUDA device (torch, CuPy, DLPack)."""
    from .cuda import on_device

    return on_device(x)


def _gpu_path(x):
    """True when ``x`` is read on its GPU: a CUDA array, unless it is a torch tensor and ccomp's CUDA
    kernels cannot run here (then it is copied to the host: the results are the same bits)."""
    if not _on_cuda(x):
        return False
    if _is_tensor(x):
        from .cuda import is_available

        return is_available()
    return True


def _rows(x, ndim, name="probs"):
    """A float32/float64 NumPy view of x (no copy for native NumPy arrays and CPU tensors; a
    big-endian or misaligned array is copied once into native form)."""
    if _is_tensor(x):
        x = _host(x)
    elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        x = _args.from_dlpack(name, x)
    a = _args.as_ndarray(name, x, "a float32 or float64 array")
    native = a.dtype.newbyteorder("=") if a.dtype.byteorder not in ("=", "|") else a.dtype
    if native not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {native} (convert with .astype(np.float32))")
    if a.ndim != ndim:
        want = "(V,)" if ndim == 1 else "(T, V)"
        raise ValueError(f"{name} must have shape {want}, got shape {a.shape}")
    if a.shape[-1] < 2:
        raise ValueError(f"{name} needs a vocabulary of at least 2 symbols, got {a.shape[-1]}")
    if not a.dtype.isnative or not a.flags.aligned:
        a = np.ascontiguousarray(a, dtype=native)
    if a.ndim == 2 and a.shape[0] > 1 and a.strides[1] != a.itemsize:
        raise ValueError(f"{name} must have a contiguous last axis (use np.ascontiguousarray)")
    if a.ndim == 2 and a.shape[0] > 1 and (a.strides[0] <= 0 or a.strides[0] % a.itemsize):
        raise ValueError(f"{name} rows must be laid out one after the other (use np.ascontiguousarray)")
    if a.ndim == 1 and a.strides[0] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


def _symbols(symbols, T=None):
    if _is_tensor(symbols):
        symbols = _host(symbols)
    if hasattr(symbols, "__dlpack__") and not isinstance(symbols, np.ndarray):
        if _on_cuda(symbols):
            raise TypeError("symbols on a GPU go with probabilities on the same GPU")
        symbols = _args.from_dlpack("symbols", symbols)
    s = _args.as_ndarray("symbols", symbols, "a 1-D array of integers")
    if s.ndim != 1:
        raise ValueError(f"symbols must be 1-D, got shape {s.shape}")
    if s.dtype == np.bool_ or not np.issubdtype(s.dtype, np.integer):
        if s.size == 0:
            s = s.astype(np.int64)
        else:
            raise TypeError(f"symbols must be integers, got {s.dtype}")
    if s.dtype.kind == "u" and s.size and int(s.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"symbols must be below 2**63, got {int(s.max())}")
    if T is not None and s.shape[0] != T:
        raise ValueError(f"symbols has {s.shape[0]} entries but probs has {T} rows")
    return np.ascontiguousarray(s, dtype=np.int64)


def _model_args(precision, rule, logits, temperature):
    precision = _precision(precision)
    r = _rule(rule)
    logits = _args.flag("logits", logits)
    t = _args.real("temperature", temperature, 0, lo_open=True)
    if not logits and t != 1.0:
        raise ValueError("temperature applies to logits; pass logits=True (or scale the probabilities yourself)")
    return precision, r, logits, t


def _recorded(meta, logits, temperature):
    """logits / temperature for decoding: the container's, or the caller's when they agree with it."""
    if meta["logits"] is None:  # a version 1 container records neither
        return (False if logits is None else logits), (1.0 if temperature is None else temperature)
    if logits is None:
        logits = meta["logits"]
    elif _args.flag("logits", logits) != meta["logits"]:
        raise ValueError(f"logits={logits} conflicts with the container, which was encoded with "
                         f"logits={meta['logits']}; leave it out to use the recorded value")
    if temperature is None:
        temperature = meta["temperature"]
    elif _args.real("temperature", temperature, 0, lo_open=True) != meta["temperature"]:
        raise ValueError(f"temperature={temperature!r} conflicts with the container, which was encoded with "
                         f"temperature={meta['temperature']!r}; leave it out to use the recorded value")
    return logits, temperature


def _is_f64(x):
    return str(getattr(x, "dtype", "")).endswith("float64")


# ------------------------------------------------------------ quantization

@_tensor_io()
def quantize(probs, precision=DEFAULT_PRECISION, rule="constriction", logits=False, temperature=1.0):
    """The quantized CDF of one row (shape ``(V,)`` -> ``(V + 1,)``) or of every
    row (``(T, V)`` -> ``(T, V + 1)``), as uint32: ``cdf[0] = 0``,
    ``cdf[V] = 2**precision``, symbol ``i`` has frequency ``cdf[i+1] - cdf[i]``.

    >>> quantize(np.array([0.5, 0.25, 0.25]), precision=12).tolist()
    [0, 2047, 3071, 4096]
    """
    P, r, lg, t = _model_args(precision, rule, logits, temperature)
    a = _rows(probs, 1 if np.ndim(probs) == 1 else 2)
    if a.ndim == 1:
        return _core.ac_cdf(a, P, r, lg, t)
    out = np.empty((a.shape[0], a.shape[1] + 1), dtype=np.uint32)
    for i in range(a.shape[0]):
        try:
            out[i] = _core.ac_cdf(a[i], P, r, lg, t)
        except ValueError as e:
            raise type(e)(str(e).replace("probs[0]", f"probs[{i}]")) from None
    return out


@_tensor_io(like="probs")
def lookup(symbols, probs, precision=DEFAULT_PRECISION, rule="constriction", logits=False, temperature=1.0,
           threads=None):
    """The ``(cum, freq)`` pair (two uint32 arrays) of ``symbols[t]`` under row
    ``t`` of ``probs``: what the coder needs, without building any CDF.  On a
    CUDA tensor this runs on the GPU and brings back only these integers."""
    P, r, lg, t = _model_args(precision, rule, logits, temperature)
    if _gpu_path(probs):
        from . import _ac_gpu

        return _ac_gpu.lookup(probs, symbols, P, r, lg, t)
    a = _rows(probs, 2)
    s = _symbols(symbols, a.shape[0])
    return _core.ac_lookup(a, s, P, r, lg, t, _threads(threads))


@_tensor_io(like="probs")
def ideal_bits(cum_freq_or_symbols, probs=None, precision=DEFAULT_PRECISION, **kw):
    """Sum of -log2(freq / 2**precision): the size an ideal coder would reach
    with the quantized probabilities.  Pass ``(cum, freq)`` or
    ``symbols, probs`` (with the same keywords as :func:`lookup`)."""
    precision = _precision(precision)
    if probs is None:
        try:
            _cum, freq = cum_freq_or_symbols
        except (TypeError, ValueError):
            raise TypeError("cum_freq_or_symbols must be a (cum, freq) pair when probs is not given") from None
    else:
        _cum, freq = lookup(cum_freq_or_symbols, probs, precision=precision, **kw)
    freq = _args.array("freq", freq)
    if freq.size and (freq.dtype.kind not in "iu" or int(freq.min()) < 1 or int(freq.max()) > 2**precision):
        raise ValueError(f"freq must be integers in [1, 2^{precision}]")
    return float(np.sum(precision - np.log2(freq.astype(np.float64))))


# -------------------------------------------------------------- containers

@_tensor_io(like="probs")
def encode(symbols, probs, precision=DEFAULT_PRECISION, rule="constriction", logits=False, temperature=1.0,
           chunk_size=None, threads=None):
    """Encode ``symbols[t]`` under ``probs[t]`` (shape ``(T, V)``) into a container (bytes).

    ``chunk_size`` tokens per independent chunk (default 16384; the chunks of a
    long sequence are coded in parallel, each costs at most 12 bytes).
    """
    P, r, lg, t = _model_args(precision, rule, logits, temperature)
    chunk = DEFAULT_CHUNK if chunk_size is None else _args.integer("chunk_size", chunk_size, 1, 2**63 - 1)
    th = _threads(threads)
    if _gpu_path(probs):
        from . import _ac_gpu

        cum, freq = _ac_gpu.lookup(probs, symbols, P, r, lg, t)
        host = _ac_gpu._host_ints(symbols, "symbols", _ac_gpu._ext("ccomp.ac GPU encode"))
        vocab = int(probs.shape[-1])
        return _core.ac_pack(np.ascontiguousarray(host, np.int64), np.ascontiguousarray(cum, np.uint32),
                             np.ascontiguousarray(freq, np.uint32), P, r, lg, t, _is_f64(probs), vocab, chunk, th)
    a = _rows(probs, 2)
    s = _symbols(symbols, a.shape[0])
    return _core.ac_encode(a, s, P, r, lg, t, chunk, th)


def info(data):
    """The parameters of a container: ``version``, ``precision``, ``rule``,
    ``tokens``, ``chunk_tokens``, ``vocab``, ``chunks`` (their number) and what
    the encoder's model was: ``logits``, ``temperature``, ``dtype`` (None for a
    version 1 container, which does not record them).

    Raises :class:`ccomp.CorruptStreamError` for anything that is not an
    intact container (the CRC covers every byte)."""
    d = _core.ac_info(_as_bytes(data))
    d["rule"] = _RULE_NAMES[d["rule"]]
    return d


def _as_bytes(data, name="data"):
    if isinstance(data, bytes):
        return data
    if _is_tensor(data):
        data = _host(data)
    if isinstance(data, str):
        raise TypeError(f"{name} must be bytes-like (a container), got str")
    try:
        return memoryview(data).tobytes()  # any layout (a strided or Fortran-order view too), in C order
    except TypeError:
        raise TypeError(f"{name} must be bytes-like (a container), got {type(data).__name__}") from None


@_tensor_io(like="probs")
def decode(data, probs, logits=None, temperature=None, threads=None):
    """Decode every token of a container when all distributions are known
    (``probs`` of shape ``(T, V)``); returns int64 symbols.  Chunks (and the
    scan of the rows) run in parallel.  Precision, rule, logits and temperature
    come from the container; passing ``logits``/``temperature`` that differ
    from the recorded ones raises ValueError.  Rows that quantize differently
    from the encoder's (another model, evaluation order, float type...) raise
    :class:`ccomp.CorruptStreamError`: the container checks the decoded symbols
    of every chunk."""
    data = _as_bytes(data)
    th = _threads(threads)
    meta = info(data)
    lg, t = _recorded(meta, logits, temperature)
    _P, _r, lg, t = _model_args(meta["precision"], meta["rule"], lg, t)
    if _gpu_path(probs):
        d = Decoder(data, logits=lg, temperature=t)
        return d.decode_batch(probs)
    a = _rows(probs, 2)
    return _core.ac_decode(data, a, lg, t, th)


class Decoder:
    """Decode a container token by token (autoregressive: the model needs each
    decoded token before it gives the next distribution).

    ``decode(probs_t)`` takes one row ``(V,)`` and returns the symbol;
    ``decode_batch(probs)`` takes ``(n, V)`` rows and returns ``n`` symbols.
    Logits and temperature come from the container (see :func:`decode`).

    The check of the decoded symbols runs at the end of each chunk
    (``chunk_size`` tokens): symbols returned before the end of their chunk are
    provisional, and the call that decodes a chunk's last token raises
    :class:`ccomp.CorruptStreamError` if the model's probabilities differed
    from the encoder's anywhere in the chunk.  After an error the decoder
    refuses to go on.
    """

    def __init__(self, data, logits=None, temperature=None):
        self._data = _as_bytes(data)
        self._dec = _core.ac_dec_open(self._data)
        meta, _pos = _core.ac_dec_info(self._dec)
        self.precision = meta["precision"]
        self.rule = _RULE_NAMES[meta["rule"]]
        self.tokens = meta["tokens"]
        self.vocab = meta["vocab"]
        self.chunk_tokens = meta["chunk_tokens"]
        self._dtype = meta["dtype"]
        lg, t = _recorded(meta, logits, temperature)
        _P, self._r, self._logits, self._t = _model_args(self.precision, self.rule, lg, t)

    @property
    def remaining(self):
        """Tokens not decoded yet."""
        return self.tokens - _core.ac_dec_info(self._dec)[1]

    def _check_vocab(self, V):
        if V != self.vocab:
            raise ValueError(f"probs has {V} symbols but the container was coded over {self.vocab}")

    def _check_gpu_rows(self, x):
        """The checks the C reader makes of CPU rows, for a GPU tensor: vocabulary and float type."""
        self._check_vocab(int(x.shape[-1]))
        got = "float64" if _is_f64(x) else "float32"
        if self.rule == "constriction" and self._dtype is not None and got != self._dtype:
            raise ValueError(f"the container was encoded from {self._dtype} rows but the decoder was given {got} "
                             f"rows: the constriction rule's CDFs depend on the float type")

    @_tensor_io()
    def decode(self, probs_t):
        """Decode the next token given its distribution (shape ``(V,)``)."""
        if _gpu_path(probs_t):
            from . import _ac_gpu

            self._check_gpu_rows(probs_t)
            target = _core.ac_dec_target(self._dec)
            sym, cum, freq = _ac_gpu.find(probs_t, target, self.precision, self._r, self._logits, self._t)
            _core.ac_dec_advance(self._dec, int(sym), int(cum), int(freq))
            return int(sym)
        a = _rows(probs_t, 1)
        self._check_vocab(a.shape[0])
        return int(_core.ac_dec_rows(self._dec, a, self._logits, self._t, 1)[0])

    @_tensor_io()
    def decode_batch(self, probs):
        """Decode the next ``n`` tokens given their distributions (shape ``(n, V)``)."""
        if _gpu_path(probs):
            from . import _ac_gpu

            n = int(probs.shape[0])
            self._check_gpu_rows(probs)
            if n > self.remaining:
                raise ValueError(f"{n} rows given but only {self.remaining} tokens remain")
            handle = _ac_gpu.scan(probs, self.precision, self._r, self._logits, self._t)
            out = np.empty(n, dtype=np.int64)
            for i in range(n):
                target = _core.ac_dec_target(self._dec)
                sym, cum, freq = handle.find(i, target)
                _core.ac_dec_advance(self._dec, int(sym), int(cum), int(freq))
                out[i] = sym
            return out
        a = _rows(probs, 2)
        self._check_vocab(a.shape[1])
        if a.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        return _core.ac_dec_rows(self._dec, a, self._logits, self._t, 2)  # checks the tokens that remain


# ------------------------------------------------------- low-level coder

class RangeEncoder:
    """The bare range coder over ``(cum, freq)`` pairs (no container).

    >>> e = RangeEncoder(precision=12)
    >>> e.encode([0, 2048], [2048, 1024])
    >>> d = RangeDecoder(e.get_compressed(), precision=12)
    >>> d.decode(np.array([0, 2048, 3072, 4096], dtype=np.uint32)), d.decode(np.array([0, 2048, 3072, 4096], dtype=np.uint32))
    (0, 1)
    """

    def __init__(self, precision=DEFAULT_PRECISION):
        self.precision = _precision(precision)
        self._cum = []
        self._freq = []
        self._lock = threading.Lock()  # encode and get_compressed from several threads see whole symbols

    def encode(self, cum, freq):
        """Append one symbol (ints) or many (equal-length 1-D arrays or integer tensors)."""
        cum, freq = (_host(v) if _is_tensor(v) else v for v in (cum, freq))
        c = np.atleast_1d(_args.array("cum", cum))
        f = np.atleast_1d(_args.array("freq", freq))
        if c.shape != f.shape or c.ndim != 1:
            raise ValueError(f"cum and freq must have the same 1-D shape, got {c.shape} and {f.shape}")
        for name, v in (("cum", c), ("freq", f)):
            if v.size and (v.dtype == np.bool_ or not np.issubdtype(v.dtype, np.integer)):
                raise TypeError(f"{name} must be integers, got {v.dtype}")
            if v.size and (int(v.min()) < 0 or int(v.max()) > 2**32 - 1):
                raise ValueError(f"{name} must be integers in [0, 2^32)")
        total = 1 << self.precision
        bad = np.flatnonzero((f == 0) | (c.astype(np.int64) + f.astype(np.int64) > total))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"symbol {len(self) + i}: (cum, freq) = ({int(c[i])}, {int(f[i])}) is not a "
                             f"nonempty interval of [0, 2^{self.precision})")
        with self._lock:
            self._cum.append(c.astype(np.uint32))
            self._freq.append(f.astype(np.uint32))

    def __len__(self):
        with self._lock:
            return int(sum(len(c) for c in self._cum))

    def get_compressed(self):
        """The stream so far (bytes: 32-bit words, little-endian).  More symbols may follow."""
        with self._lock:
            if not self._cum:
                return b""
            cum, freq = np.concatenate(self._cum), np.concatenate(self._freq)
        return _core.rc_encode(cum, freq, self.precision)

    def num_bits(self):
        """Size of the stream in bits (a multiple of 32)."""
        return 8 * len(self.get_compressed())


def _cdf_from_tensor(t):
    """An integer torch CDF as the uint32 NumPy array the coder reads (its values checked to fit)."""
    if t.is_floating_point() or t.is_complex() or str(t.dtype) == "torch.bool":
        raise TypeError(f"cdf must be an integer tensor, got {t.dtype}")
    c = _host(t)
    if c.size and (int(c.min()) < 0 or int(c.max()) > 2**32 - 1):
        raise ValueError("cdf values must be in [0, 2^32)")
    return c.astype(np.uint32)


class RangeDecoder:
    """Decodes a bare range-coder stream (``RangeEncoder.get_compressed()`` or
    constriction's ``RangeEncoder.get_compressed().tobytes()``)."""

    def __init__(self, data, precision=DEFAULT_PRECISION):
        self.precision = _precision(precision)
        self._data = _as_bytes(data)
        self._dec = _core.rc_dec_open(self._data, 0, len(self._data))

    def target(self):
        """The value in [0, 2**precision) whose interval holds the next symbol."""
        return _core.rc_dec_target(self._dec, self.precision)

    def advance(self, cum, freq):
        """Consume the symbol with interval [cum, cum + freq) (it must contain target())."""
        cum = _args.integer("cum", cum, 0, 2**32 - 1)
        freq = _args.integer("freq", freq, 1, 2**32 - 1)
        _core.rc_dec_advance(self._dec, cum, freq, self.precision)

    def decode(self, cdf):
        """Decode one symbol with a CDF of shape ``(V + 1,)`` (uint32, 0 .. 2**precision),
        or one symbol per row of ``(n, V + 1)``.  A torch CDF (any integer dtype, e.g. the int32 of
        :func:`quantize`) gives its symbols as a tensor on its device."""
        if _is_tensor(cdf):
            out = self.decode(_cdf_from_tensor(cdf))
            return out if isinstance(out, int) else _to_torch(out, cdf)
        c = _args.array("cdf", cdf, [np.uint32], (1, 2))
        if c.ndim == 1:
            return int(_core.rc_dec_cdfs(self._dec, np.ascontiguousarray(c[None, :]), self.precision)[0])
        if c.ndim != 2:
            raise ValueError(f"cdf must be 1-D or 2-D, got shape {c.shape}")
        return _core.rc_dec_cdfs(self._dec, np.ascontiguousarray(c), self.precision)

    @_tensor_io()
    def decode_probs(self, probs, rule="constriction", logits=False, temperature=1.0):
        """Decode one symbol per row of ``probs`` (``(V,)`` -> int, ``(n, V)`` -> array),
        quantized with ``rule`` at this decoder's precision; e.g. a stream made by
        constriction's ``RangeEncoder`` with ``Categorical(perfect=False)``."""
        P, r, lg, t = _model_args(self.precision, rule, logits, temperature)
        a = _rows(probs, 1 if np.ndim(probs) == 1 else 2)
        if a.ndim == 2 and a.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        out = _core.rc_dec_rows(self._dec, a, P, r, lg, t, a.ndim)
        return int(out[0]) if a.ndim == 1 else out

    def maybe_exhausted(self):
        """True when the whole stream has been consumed."""
        return bool(_core.rc_dec_exhausted(self._dec))


# ---------------------------------------------------- equal-info windows

def _window_model(model, like):
    """``model`` called with the window's tokens as an int64 tensor on ``like``'s device when the caller
    gave tensors (else as NumPy), its rows read back whatever they are."""
    if like is None:
        return model

    def call(window):
        return model(_to_torch(window, like, cast=False))

    return call


def _pair_for(p, symbol, P, r, lg, t):
    a = _rows(p, 1, "model(window_tokens)")
    if not 0 <= symbol < a.shape[0]:
        raise ValueError(f"symbol {symbol} is outside [0, {a.shape[0]})")
    cum, freq = _core.ac_lookup(a[None, :], np.array([symbol], dtype=np.int64), P, r, lg, t, 1)
    return int(cum[0]), int(freq[0])


def equal_info_windows(symbols, model, bits=16, precision=DEFAULT_PRECISION, rule="constriction", logits=False,
                       temperature=1.0):
    """Equal-Info Windows (Lester et al. 2024): code ``symbols`` into windows of
    exactly ``bits`` bits (16..128; up to 256 allowed).  Each window holds as
    many symbols as fit with its arithmetic code terminated, is padded with
    zero bits, and restarts the coder and the model.

    ``model`` is either an array ``(T, V)`` of distributions that do not depend
    on the window (e.g. a context-free model), or a callable
    ``model(window_tokens) -> probs (V,)`` that is given the tokens already in
    the current window (empty at a window start) -- the model reset the paper
    requires.  Returns ``(windows, counts)``: a list of ``bits``-bit windows
    (bytes of ``ceil(bits / 8)``) and the number of symbols in each.  A symbol
    that alone needs more than ``bits`` bits raises ValueError.

    With torch tensors (``symbols``, or ``model`` as rows) a callable model is given the window's
    tokens as an int64 tensor on their device and may return a tensor of any float dtype; ``counts``
    comes back as a tensor there.

    >>> probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], dtype=np.float32)
    >>> windows, counts = equal_info_windows([0, 2, 1], probs, bits=16)
    >>> decode_equal_info_windows(windows, counts, probs, bits=16).tolist()
    [0, 2, 1]
    """
    ref = _first_tensor(symbols, None if callable(model) else model)
    if ref is not None:
        if not callable(model):
            model = _host(model)
        windows, counts = equal_info_windows(_host(symbols) if _is_tensor(symbols) else symbols,
                                             _window_model(model, ref) if callable(model) else model, bits,
                                             precision, rule, logits, temperature)
        return windows, _to_torch(counts, ref)
    P, r, lg, t = _model_args(precision, rule, logits, temperature)
    bits = _args.integer("bits", bits, 1, 256)
    nbytes = (bits + 7) // 8
    if not callable(model):
        a = _rows(model, 2, "model")
        s = _symbols(symbols, a.shape[0])
        cum, freq = _core.ac_lookup(a, s, P, r, lg, t, _threads(None))
        blob, counts = _core.eiw_encode(cum, freq, P, bits)
        return [blob[i * nbytes:(i + 1) * nbytes] for i in range(len(counts))], counts
    s = _symbols(symbols)
    enc = _core.eiw_enc_new(bits)
    windows, counts, window = [], [], []
    for i, sym in enumerate(s.tolist()):
        cum, freq = _pair_for(model(np.array(window, dtype=np.int64)), sym, P, r, lg, t)
        if _core.eiw_enc_try(enc, cum, freq, P):
            window.append(sym)
            continue
        if not window:
            raise ValueError(f"symbol {i} alone needs more than {bits} bits; use larger windows")
        windows.append(_core.eiw_enc_finish(enc))
        counts.append(len(window))
        window = []
        cum, freq = _pair_for(model(np.array(window, dtype=np.int64)), sym, P, r, lg, t)
        if not _core.eiw_enc_try(enc, cum, freq, P):
            raise ValueError(f"symbol {i} alone needs more than {bits} bits; use larger windows")
        window.append(sym)
    if window:
        windows.append(_core.eiw_enc_finish(enc))
        counts.append(len(window))
    return windows, np.array(counts, dtype=np.int64)


def decode_equal_info_windows(windows, counts, model, bits=16, precision=DEFAULT_PRECISION, rule="constriction",
                              logits=False, temperature=1.0):
    """Inverse of :func:`equal_info_windows` (same ``model`` form and keywords).  With torch tensors
    (``counts`` or ``model`` as rows) the symbols come back as an int64 tensor on their device, and a
    callable model is given its window tokens as a tensor there (see :func:`equal_info_windows`)."""
    ref = _first_tensor(counts, None if callable(model) else model)
    if ref is not None:
        out = decode_equal_info_windows(windows, _host(counts) if _is_tensor(counts) else counts,
                                        _window_model(model, ref) if callable(model) else _host(model), bits,
                                        precision, rule, logits, temperature)
        return _to_torch(out, ref)
    P, r, lg, t = _model_args(precision, rule, logits, temperature)
    bits = _args.integer("bits", bits, 1, 256)
    counts = _args.array("counts", counts, ndim=1)
    if counts.size and (counts.dtype == np.bool_ or counts.dtype.kind not in "iu"):
        raise TypeError(f"counts must be integers, got {counts.dtype}")
    counts = counts.astype(np.int64)
    if isinstance(windows, (str, bytes, bytearray)) or not hasattr(windows, "__len__"):
        raise TypeError(f"windows must be a list of {(bits + 7) // 8}-byte windows, got {type(windows).__name__}")
    if len(windows) != len(counts):
        raise ValueError(f"{len(windows)} windows but {len(counts)} counts")
    if counts.size and counts.min() < 1:
        raise ValueError("every window holds at least one symbol")
    rows = None if callable(model) else _rows(model, 2, "model")
    if rows is not None and int(counts.sum()) != rows.shape[0]:
        raise ValueError(f"the windows hold {int(counts.sum())} symbols but model has {rows.shape[0]} rows")
    out, pos = [], 0
    for w, n in zip(windows, counts.tolist()):
        dec = _core.eiw_dec_open(_as_bytes(w, "windows"), bits)
        window = []
        for _ in range(n):
            p = rows[pos] if rows is not None else model(np.array(window, dtype=np.int64))
            a = _rows(p, 1, "model" if rows is not None else "model(window_tokens)")
            target = _core.eiw_dec_step(dec, P, -1, 0)
            sym, cum, freq = _core.ac_find(a, target, P, r, lg, t)
            _core.eiw_dec_step(dec, P, cum, freq)
            window.append(sym)
            pos += 1
        out.extend(window)
    return np.array(out, dtype=np.int64)

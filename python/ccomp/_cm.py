"""The built-in context-mixing byte compressor (no LLM): ``ccomp.ac.compress`` / ``ccomp.ac.decompress``.

Adaptive byte models in C -- order-0 and order-1 counters, hashed bit-history
models of orders 2-4 and of the current word (alone and with the word before
it), and a match model -- predict each bit; their predictions are combined by
online logistic mixing, refined by an order-1 SSE stage, and coded by ccomp's
range coder.  On English text it compresses better than xz -9 and PPMd
order 6 (see ``bench/results/ac.md``).

The output is a self-describing stream ("CCCM": version, level, original
length, CRC-32 of the data, the coded bits, a CRC-32 of the whole stream), so
:func:`decompress` needs no parameters.  Damaged or truncated input raises
:class:`ccomp.CorruptStreamError`.

>>> from ccomp.ac import compress, decompress
>>> text = b"the quick brown fox jumps over the lazy dog; " * 100
>>> blob = compress(text)
>>> len(blob) < len(text) // 20
True
>>> decompress(blob) == text
True
"""
import sys

from . import _args, _core

__all__ = ["compress", "decompress", "info", "DEFAULT_LEVEL", "MIN_LEVEL", "MAX_LEVEL"]

DEFAULT_LEVEL = 6
MIN_LEVEL = 1
MAX_LEVEL = 9


def _level(level):
    return _args.integer("level", level, MIN_LEVEL, MAX_LEVEL)


def _check_data(data, what):
    if isinstance(data, str):
        raise TypeError(f"{what} must be a bytes-like object, not str (encode it first, e.g. text.encode('utf-8'))")
    try:
        memoryview(data).release()
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object (bytes, bytearray, memoryview, a NumPy array...), "
                        f"got {type(data).__name__}") from None


class _Bar:
    """A tqdm bar on stderr fed by the core's (done, total) callbacks; a no-op when disabled."""

    def __init__(self, enabled, total, desc):
        self.bar = None
        self.last = 0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, leave=False)

    def __call__(self, done, total):
        if self.bar is not None:
            self.bar.update(done - self.last)
            self.last = done

    def callback(self):
        return self if self.bar is not None else None

    def close(self):
        if self.bar is not None:
            self.bar.close()


def compress(data, level=DEFAULT_LEVEL, progress=False):
    """Compress bytes with the built-in context-mixing model.

    Parameters
    ----------
    data : bytes-like
        ``bytes``, ``bytearray``, ``memoryview`` or any C-contiguous buffer (a
        NumPy array is taken as its raw bytes).  ``str`` is rejected: encode it.
    level : int, 1..9
        Model memory: a hash table of up to ``2**(18 + level)`` bytes and a
        match table of up to ``2**(16 + level)`` bytes, plus about 5 MiB (about
        25 MiB in all at the default 6, 165 MiB at 9); small inputs use less.
        Higher levels help large inputs (level 1 costs about 5% on a 150 KB
        text, level 8 gains under 0.1% on 0.5 MB); the speed is about the same.
        Decompressing needs the same memory.  The level is stored in the stream.
    progress : bool
        Show a tqdm progress bar on stderr (updated every MiB).

    Returns
    -------
    bytes
        The compressed stream: 24 bytes of header and CRC plus the coded bits
        (random input grows by about 0.3%).

    The whole input is held in memory, and copied once: the model, the coder
    and the CRC all read the copy, so a buffer that another thread changes
    during the call still gives a stream that decompresses (to the bytes
    copied).  The GIL is released while compressing
    (roughly 1-1.5 MB/s per thread on text), so several threads can compress
    at once; Ctrl-C stops the call with ``KeyboardInterrupt``.
    """
    _check_data(data, "data")
    level = _level(level)
    bar = _Bar(_args.flag("progress", progress), _nbytes(data), "compress")
    try:
        return _core.cm_compress(data, level, bar.callback())
    finally:
        bar.close()


def decompress(data, progress=False):
    """Decompress a stream made by :func:`compress`.

    Raises :class:`ccomp.CorruptStreamError` (a ``ValueError``) when the stream
    is damaged, truncated or not a ccomp stream: the whole stream and the
    decoded data are checked with CRC-32s, and the decoder never reads or
    writes out of bounds.  ``progress=True`` shows a tqdm bar on stderr.
    """
    _check_data(data, "data")
    progress = _args.flag("progress", progress)
    total = info(data)["length"] if progress else 0
    bar = _Bar(progress, total, "decompress")
    try:
        return _core.cm_decompress(data, bar.callback())
    finally:
        bar.close()


def info(data):
    """The header of a compressed stream, checked (CRC, version, sizes).

    Returns a dict with ``version``, ``level``, ``length`` (of the original
    data), ``stream_bytes`` (of the coded bits) and ``memory`` (bytes of model
    memory that decompressing it needs).

    >>> from ccomp._cm import compress, info
    >>> info(compress(b"abc", level=3))["length"]
    3
    """
    _check_data(data, "data")
    return _core.cm_info(data)


def _nbytes(data):
    try:
        return memoryview(data).nbytes
    except TypeError:
        return None

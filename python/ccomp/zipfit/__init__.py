"""ZIP-FIT data selection by compression distance (Obbad et al. 2024).

Each candidate ("source") text x is scored against a target set {y_j}::

    NCD(x, y) = (C(x+y) - min(C(x), C(y))) / max(C(x), C(y))
    score(x)  = mean_j (1 - NCD(x, y_j))

C is the compressed length of the UTF-8 bytes and x+y is plain concatenation,
source first, no separator.  C is exactly what the compressor's Python library
gives, so scores equal those of the reference ``zip-fit`` package:

=========  ===============================================================  ===========  =======
compressor C(b) equals                                                      levels       default
=========  ===============================================================  ===========  =======
gzip       ``len(gzip.compress(b, compresslevel=L))``                       0-9          9
lz4        ``len(lz4.frame.compress(b, compression_level=L))``              0-12         0
zstd       ``len(zstandard.ZstdCompressor(level=L).compress(b))``           -131072-22   3
=========  ===============================================================  ===========  =======

For gzip levels 1-9 and lz4 levels 0-2 ccomp computes C with exact size-only
models of zlib's deflate and of lz4's fast compressor where the linked library
is one they reproduce (see ``ccomp.build_info()["gzip_engine"]`` and
``["lz4_engine"]``); otherwise, and for inputs over one lz4 block, it runs the
library itself.  Both give the same numbers; ``engine="library"`` forces the
library, ``engine="model"`` the model (a ValueError where it does not apply,
lz4 inputs over 64 KiB included: it never silently runs the library).  Texts
may be ``str`` (encoded as UTF-8) or bytes-like; empty texts are valid.  Every
call answers Ctrl-C within about a second, also inside one long compression.

Example::

    >>> import ccomp
    >>> targets = ["def add(a, b):\\n    return a + b\\n"]
    >>> idx, scores = ccomp.zipfit.select_top_k(
    ...     ["def mul(a, b):\\n    return a * b\\n", "The cat sat on the mat."], targets, k=1, level=1)
    >>> int(idx[0])
    0
"""
import itertools
import sys

import numpy as np

from .. import _args, _core
from .._torchio import torch_io
from ..io import iter_jsonl_texts

__all__ = [
    "COMPRESSORS",
    "compressed_size",
    "compressed_sizes",
    "ncd",
    "alignment_scores",
    "select_top_k",
    "score_jsonl",
    "top_k_indices",
    "engine",
]

# name -> (core id, default level: the Python library's own default)
COMPRESSORS = {"gzip": (_core.GZIP, 9), "lz4": (_core.LZ4, 0), "zstd": (_core.ZSTD, 3)}
_ENGINES = {"auto": _core.ENGINE_AUTO, "library": _core.ENGINE_LIBRARY, "zlib": _core.ENGINE_LIBRARY,
            "model": _core.ENGINE_MODEL}
DEFAULT_CHUNK = 2048


def _resolve(compressor, level, engine_name="auto"):
    if not isinstance(compressor, str):
        raise TypeError(f"compressor must be a str, one of {', '.join(map(repr, COMPRESSORS))}; "
                        f"got {type(compressor).__name__}")
    key = compressor.lower()
    if key not in COMPRESSORS:
        raise ValueError(f"unknown compressor {compressor!r}; expected one of {', '.join(COMPRESSORS)}")
    cid, default = COMPRESSORS[key]
    if level is None:
        level = default
    lo, hi = _core.level_range(cid)
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)):
        raise TypeError(f"level must be an int, got {type(level).__name__} {level!r}")
    if not lo <= level <= hi:
        raise ValueError(f"{key} level must be in [{lo}, {hi}], got {level}")
    level = _args.integer("level", level, lo, hi)
    _args.choice("engine", engine_name, tuple(_ENGINES))
    if engine_name == "zlib" and key != "gzip":
        raise ValueError(f"engine='zlib' applies to gzip only, not {key}; use engine='library'")
    # Checks that the engine applies to this compressor and level with the library's own limits.
    _core.engine_name(cid, level, _ENGINES[engine_name])
    return cid, level, _ENGINES[engine_name]


def _text(name, value):
    """A text argument: str or a bytes-like object (TypeError naming the argument otherwise)."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{name} cannot be encoded as UTF-8: {exc}") from None
        return value
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError(f"{name} must be a str or a bytes-like object, got {type(value).__name__}") from None
    if view.ndim == 0 or view.itemsize != 1:
        what = "a 0-dimensional" if view.ndim == 0 else f"{view.itemsize}-byte items of a"
        raise TypeError(f"{name} must be a str or a bytes-like object of bytes, got {what} {type(value).__name__}")
    return value


def engine(compressor="gzip", level=None):
    """Name of the engine that computes sizes: "deflate-model", "zlib", "lz4-model", "lz4" or "zstd"."""
    cid, level, eng = _resolve(compressor, level)
    return _core.engine_name(cid, level, eng)


def compressed_size(text, compressor="gzip", level=None, engine="auto"):
    """Compressed length in bytes of one text, exactly as the compressor's Python library gives it.

    ``engine``: "auto" (a size model where one reproduces the library, else the
    library), "library" (the compressor library itself; "zlib" is the same for
    gzip), or "model" (insist on the model: ValueError for levels it does not
    cover and for lz4 inputs over 65,536 bytes, one lz4 block; RuntimeError where
    it does not reproduce the linked library).
    """
    cid, level, eng = _resolve(compressor, level, engine)
    return _core.pair_size(cid, level, eng, _text("text", text), None)


def compressed_sizes(texts, compressor="gzip", level=None, threads=None, engine="auto"):
    """Compressed lengths of many texts as an int64 array, computed on ``threads`` threads.

    Mutable buffers (``bytearray``, NumPy arrays) are copied before the work
    starts, so another thread rewriting them cannot mix two contents."""
    cid, level, eng = _resolve(compressor, level, engine)
    threads = _args.threads(threads)
    _check_iterable(texts, "texts")
    return _core.compressed_sizes(texts if isinstance(texts, (list, tuple)) else list(texts), cid, level, eng,
                                  threads=threads)


def ncd(x, y, compressor="gzip", level=None, engine="auto"):
    """Normalised compression distance (C(x+y) - min(C(x), C(y))) / max(C(x), C(y))."""
    cid, level, eng = _resolve(compressor, level, engine)
    x = _text("x", x)
    y = _text("y", y)
    cx = _core.pair_size(cid, level, eng, x, None)
    cy = _core.pair_size(cid, level, eng, y, None)
    cxy = _core.pair_size(cid, level, eng, x, y)
    return (cxy - min(cx, cy)) / max(cx, cy)


def _check_iterable(obj, what):
    if isinstance(obj, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be an iterable of texts, not a single {type(obj).__name__}")
    if isinstance(obj, (set, frozenset, dict)):  # no order (or keys vs values): indices would mean nothing
        raise TypeError(f"{what} must be an ordered iterable of texts (list, tuple, iterator), "
                        f"got {type(obj).__name__}")
    try:
        iter(obj)
    except TypeError:
        raise TypeError(f"{what} must be an iterable of texts, got {type(obj).__name__}") from None


def _chunks(iterable, size):
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _progress_bar(progress, total, desc):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, dynamic_ncols=True)


class _Scorer:
    """Targets prepared once (materialised, sizes computed) for scoring many source chunks."""

    def __init__(self, targets, compressor, level, threads, engine_name="auto"):
        self.cid, self.level, self.engine = _resolve(compressor, level, engine_name)
        threads = _args.threads(threads)
        _check_iterable(targets, "targets")
        self.targets = tuple(targets)
        if not self.targets:
            raise ValueError("the target set is empty: ZIP-FIT needs at least one target text")
        self.threads = threads
        self.target_sizes = _core.compressed_sizes(self.targets, self.cid, self.level, self.engine,
                                                   threads=threads, what="targets")

    def score(self, chunk, offset):
        scores, _sizes = _core.alignment_scores(chunk, self.targets, self.target_sizes, self.cid, self.level,
                                                self.engine, threads=self.threads, index_offset=offset)
        return scores


def _stream_args(chunk_size, progress):
    return _args.integer("chunk_size", chunk_size, 1, sys.maxsize), _args.flag("progress", progress)


def _score_stream(scorer, sources, chunk_size, progress, total, desc="ZIP-FIT"):
    bar = _progress_bar(progress, total, desc)
    parts = []
    offset = 0
    try:
        for chunk in _chunks(sources, int(chunk_size)):
            parts.append(scorer.score(chunk, offset))
            offset += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def alignment_scores(sources, targets, compressor="gzip", level=None, threads=None, progress=False,
                     chunk_size=DEFAULT_CHUNK, engine="auto"):
    """ZIP-FIT alignment score of every source against the target set.

    Parameters
    ----------
    sources : iterable of str or bytes-like
        A list, any iterator or generator; consumed in chunks of ``chunk_size``
        so that memory stays bounded (the source x target pair list is never built).
    targets : iterable of str or bytes-like
        The target set (materialised once; must not be empty).
    compressor, level : see the module table; ``level=None`` is the library's default
        (gzip: 9).  The reference ``zip-fit`` package defaults to ``compress_level=0``:
        ``level=0`` reproduces its default scores, and ``level=L`` its run with
        ``compress_level=L``.  For gzip, level 0 writes stored (uncompressed) blocks: below
        64 KB, C(b) = len(b) + 23 and NCD(x, y) = 1 - 23 / max(C(x), C(y)) whatever the texts
        share (about 1, even for a text with itself), so the score ranks by length alone.
        Use 1-9 to measure shared content (1 is the fastest; see docs/zipfit.md).
    threads : int or None
        Worker threads (default: all cores).  Scores are identical for any count.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    numpy.ndarray of float64, one score per source, in input order:
    ``mean_j (1 - NCD(x, y_j))`` summed over targets in order.
    """
    _check_iterable(sources, "sources")
    chunk_size, progress = _stream_args(chunk_size, progress)
    scorer = _Scorer(targets, compressor, level, threads, engine)
    total = len(sources) if hasattr(sources, "__len__") else None
    return _score_stream(scorer, sources, chunk_size, progress, total)


@torch_io(host=True)
def top_k_indices(scores, k):
    """Indices of the k highest scores, highest first, ties broken by the lower index.

    ``scores``: a 1-D array of real numbers, all finite (a NaN has no rank); a torch tensor (any
    float dtype, any device) gives an int64 tensor on its device.

    >>> top_k_indices(np.array([0.2, 0.9, 0.5, 0.9]), 3).tolist()
    [1, 3, 2]
    """
    arr = _args.array("scores", scores, ndim=1)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"scores must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    _args.finite("scores", arr)
    k = _args.integer("k", k, 0)
    order = np.argsort(-arr, kind="stable")
    return order[:k].astype(np.int64)


def select_top_k(sources, targets, k, compressor="gzip", level=None, threads=None, progress=False,
                 chunk_size=DEFAULT_CHUNK, engine="auto"):
    """The k sources best aligned with the targets.

    Returns ``(indices, scores)``: int64 indices into ``sources`` ordered by
    descending score (ties broken by the lower index), and their float64 scores.
    ``k`` larger than the number of sources returns them all.
    """
    k = _args.integer("k", k, 0)
    scores = alignment_scores(sources, targets, compressor=compressor, level=level, threads=threads,
                              progress=progress, chunk_size=chunk_size, engine=engine)
    idx = top_k_indices(scores, k)
    return idx, scores[idx]


def score_jsonl(path, targets, key="text", compressor="gzip", level=None, threads=None, progress=False,
                chunk_size=DEFAULT_CHUNK, engine="auto"):
    """Alignment scores of the texts under ``key`` in a JSONL file, read in bounded-memory chunks.

    A path ending in ``.gz`` or ``.zst`` is decompressed as it is read (zstd needs the ``zstandard`` package).

    A line that is not valid JSON (nested too deeply included), not an object,
    lacks ``key`` or holds a text that is not valid Unicode raises ValueError
    naming the file and line; a field that is not a string, TypeError.
    """
    chunk_size, progress = _stream_args(chunk_size, progress)
    scorer = _Scorer(targets, compressor, level, threads, engine)
    texts = iter_jsonl_texts(path, key)  # checks path and key before the first read
    return _score_stream(scorer, texts, chunk_size, progress, None, desc=str(path))

"""Hostile arguments of ccomp.zipfit (tests/test_api_args.py walks this table)."""
import numpy as np

from ccomp import zipfit as z
from tests.api import Case

MODULES = ["zipfit"]

_JSONL = __file__  # any existing path: the argument checks come before the file is read


def _common(func, call):
    """Cases of the parameters every scoring function shares; call(**overrides) runs func."""
    return [
        Case(func, "compressor", lambda: call(compressor=3), TypeError, "compressor", "int"),
        Case(func, "compressor", lambda: call(compressor="brotli"), ValueError, "compressor", "unknown"),
        Case(func, "level", lambda: call(level=1.5), TypeError, "level", "float"),
        Case(func, "level", lambda: call(level=True), TypeError, "level", "bool"),
        Case(func, "level", lambda: call(level=2**70), ValueError, "level", "2**70"),
        Case(func, "level", lambda: call(level=-1), ValueError, "level", "negative"),
        Case(func, "level", lambda: call(level=np.float64("nan")), TypeError, "level", "NaN"),
        Case(func, "engine", lambda: call(engine="fast"), ValueError, "engine", "unknown"),
        Case(func, "engine", lambda: call(engine=None), TypeError, "engine", "None"),
        Case(func, "engine", lambda: call(compressor="zstd", engine="model"), ValueError, "model", "no model"),
    ]


def _threads(func, call):
    return [
        Case(func, "threads", lambda: call(threads=2.5), TypeError, "threads", "float"),
        Case(func, "threads", lambda: call(threads=0), ValueError, "threads", "zero"),
        Case(func, "threads", lambda: call(threads=2**70), ValueError, "threads", "2**70"),
        Case(func, "threads", lambda: call(threads="2"), TypeError, "threads", "str"),
    ]


def _stream(func, call):
    return [
        Case(func, "chunk_size", lambda: call(chunk_size=1.9), TypeError, "chunk_size", "fraction"),
        Case(func, "chunk_size", lambda: call(chunk_size=0), ValueError, "chunk_size", "zero"),
        Case(func, "chunk_size", lambda: call(chunk_size=2**70), ValueError, "chunk_size", "2**70"),
        Case(func, "chunk_size", lambda: call(chunk_size=None), TypeError, "chunk_size", "None"),
        Case(func, "progress", lambda: call(progress=1), TypeError, "progress", "int"),
        Case(func, "progress", lambda: call(progress="yes"), TypeError, "progress", "str"),
    ]


def _targets(func, call):
    return [
        Case(func, "targets", lambda: call(targets=[]), ValueError, "target set is empty", "empty"),
        Case(func, "targets", lambda: call(targets="abc"), TypeError, "targets", "str"),
        Case(func, "targets", lambda: call(targets=5), TypeError, "targets", "int"),
        Case(func, "targets", lambda: call(targets=["a", 3]), TypeError, "targets item 1", "non-str item"),
        Case(func, "targets", lambda: call(targets=["\ud800"]), ValueError, "targets item 0", "surrogate"),
        Case(func, "targets", lambda: call(targets=[np.zeros((3, 3))[:, 0]]), TypeError, "targets item 0",
             "strided"),
    ]


def _compressed_size(**kw):
    return z.compressed_size(**{"text": "abc", **kw})


def _compressed_sizes(**kw):
    return z.compressed_sizes(**{"texts": ["abc"], **kw})


def _ncd(**kw):
    return z.ncd(**{"x": "abc", "y": "abd", **kw})


def _scores(**kw):
    return z.alignment_scores(**{"sources": ["abc"], "targets": ["abd"], **kw})


def _select(**kw):
    return z.select_top_k(**{"sources": ["abc"], "targets": ["abd"], "k": 1, **kw})


def _jsonl(**kw):
    return z.score_jsonl(**{"path": _JSONL, "targets": ["abd"], **kw})


def _engine(**kw):
    kw.pop("engine", None)
    return z.engine(**{"compressor": "gzip", **kw})


CASES = [
    Case("zipfit.compressed_size", "text", lambda: _compressed_size(text=5), TypeError, "text", "int"),
    Case("zipfit.compressed_size", "text", lambda: _compressed_size(text=None), TypeError, "text", "None"),
    Case("zipfit.compressed_size", "text", lambda: _compressed_size(text="\udcff"), ValueError, "text", "surrogate"),
    Case("zipfit.compressed_size", "text", lambda: _compressed_size(text=["a"]), TypeError, "text", "list"),
    Case("zipfit.compressed_size", "text", lambda: _compressed_size(text=np.float32(1)), TypeError, "text",
         "NumPy scalar"),
    Case("zipfit.compressed_size", "engine",
         lambda: _compressed_size(text=b"x" * 70000, compressor="lz4", engine="model"), ValueError, "64 KiB",
         "lz4 model over one block"),
    *_common("zipfit.compressed_size", _compressed_size),

    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts="abc"), TypeError, "texts", "str"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=b"abc"), TypeError, "texts", "bytes"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=None), TypeError, "texts", "None"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=np.array(3)), TypeError, "texts", "0-d"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=["a", 1.5]), TypeError, "texts item 1",
         "non-str item"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=[float("nan")]), TypeError,
         "texts item 0", "NaN item"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=iter(["a", None])), TypeError,
         "texts item 1", "iterator with None"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=[np.float64("nan")]), TypeError,
         "texts item 0", "NumPy NaN item"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts=[np.array(b"abc")]), TypeError,
         "texts item 0", "0-d array item"),
    Case("zipfit.compressed_sizes", "texts", lambda: _compressed_sizes(texts={"a", "b"}), TypeError, "texts", "set"),
    *_common("zipfit.compressed_sizes", _compressed_sizes),
    *_threads("zipfit.compressed_sizes", _compressed_sizes),

    Case("zipfit.ncd", "x", lambda: _ncd(x=1), TypeError, "x", "int"),
    Case("zipfit.ncd", "x", lambda: _ncd(x="\ud800"), ValueError, "x", "surrogate"),
    Case("zipfit.ncd", "y", lambda: _ncd(y=None), TypeError, "y", "None"),
    Case("zipfit.ncd", "y", lambda: _ncd(y={"a": 1}), TypeError, "y", "dict"),
    *_common("zipfit.ncd", _ncd),

    Case("zipfit.alignment_scores", "sources", lambda: _scores(sources="abc"), TypeError, "sources", "str"),
    Case("zipfit.alignment_scores", "sources", lambda: _scores(sources=7), TypeError, "sources", "int"),
    Case("zipfit.alignment_scores", "sources", lambda: _scores(sources=["a", b"b", None]), TypeError,
         "sources item 2", "None item"),
    Case("zipfit.alignment_scores", "sources", lambda: _scores(sources=iter(["a"] * 5 + [3]), chunk_size=2),
         TypeError, "sources item 5", "late bad item"),
    *_targets("zipfit.alignment_scores", _scores),
    *_common("zipfit.alignment_scores", _scores),
    *_threads("zipfit.alignment_scores", _scores),
    *_stream("zipfit.alignment_scores", _scores),

    Case("zipfit.select_top_k", "sources", lambda: _select(sources=b"abc"), TypeError, "sources", "bytes"),
    Case("zipfit.select_top_k", "sources", lambda: _select(sources=[{}]), TypeError, "sources item 0", "dict item"),
    Case("zipfit.select_top_k", "k", lambda: _select(k=2.0), TypeError, "k", "float"),
    Case("zipfit.select_top_k", "k", lambda: _select(k=-1), ValueError, "k", "negative"),
    Case("zipfit.select_top_k", "k", lambda: _select(k=None), TypeError, "k", "None"),
    Case("zipfit.select_top_k", "k", lambda: _select(k=float("nan")), TypeError, "k", "NaN"),
    *_targets("zipfit.select_top_k", _select),
    *_common("zipfit.select_top_k", _select),
    *_threads("zipfit.select_top_k", _select),
    *_stream("zipfit.select_top_k", _select),

    Case("zipfit.score_jsonl", "path", lambda: _jsonl(path=5), TypeError, "path", "int"),
    Case("zipfit.score_jsonl", "path", lambda: _jsonl(path=None), TypeError, "path", "None"),
    Case("zipfit.score_jsonl", "key", lambda: _jsonl(key=1), TypeError, "key", "int"),
    Case("zipfit.score_jsonl", "key", lambda: _jsonl(key=None), TypeError, "key", "None"),
    *_targets("zipfit.score_jsonl", _jsonl),
    *_common("zipfit.score_jsonl", _jsonl),
    *_threads("zipfit.score_jsonl", _jsonl),
    *_stream("zipfit.score_jsonl", _jsonl),

    Case("zipfit.top_k_indices", "scores", lambda: z.top_k_indices([1.0, float("nan")], 1), ValueError, "scores",
         "NaN"),
    Case("zipfit.top_k_indices", "scores", lambda: z.top_k_indices(np.float64(1.0), 1), ValueError, "scores", "0-d"),
    Case("zipfit.top_k_indices", "scores", lambda: z.top_k_indices([[1.0]], 1), ValueError, "scores", "2-d"),
    Case("zipfit.top_k_indices", "scores", lambda: z.top_k_indices(["a"], 1), TypeError, "scores", "str items"),
    Case("zipfit.top_k_indices", "scores", lambda: z.top_k_indices(None, 1), TypeError, "scores", "None"),
    Case("zipfit.top_k_indices", "scores", lambda: z.top_k_indices([float("inf")], 1), ValueError, "scores", "inf"),
    Case("zipfit.top_k_indices", "k", lambda: z.top_k_indices([1.0], 1.0), TypeError, "k", "float"),
    Case("zipfit.top_k_indices", "k", lambda: z.top_k_indices([1.0], -2**70), ValueError, "k", "-2**70"),

    *[c for c in _common("zipfit.engine", _engine) if c.param != "engine"],
]

EXEMPT = {}

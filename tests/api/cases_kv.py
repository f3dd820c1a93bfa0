"""Hostile arguments of ccomp.kv (quantize, attention, QuantizedTensor, KIVICache, lloyd_max)."""
import numpy as np

import ccomp
import ccomp.kv as kv
from tests.api import Case
from tests.api.cases_args import _BadDLPack

MODULES = ["kv"]

_X = np.random.default_rng(0).standard_normal((2, 32, 64)).astype(np.float32)
_Q = kv.quantize(_X, "groupwise")
_QS = kv.quantize(_X.repeat(2, axis=2), "bitmap_sparse")
_QV = np.zeros((2, 1, 64), np.float32)


def _nan(shape=(2, 32, 64)):
    a = np.zeros(shape, np.float32)
    a.flat[5] = np.nan
    return a


def _qt(**over):
    kw = dict(method="groupwise", shape=_Q.shape, params=_Q.params, arrays=_Q.arrays)
    kw.update(over)
    return lambda: kv.QuantizedTensor(**kw)


def _kivi(**over):
    return lambda: kv.KIVICache(**over)


CASES = [
    # quantize
    Case("kv.quantize", "x", lambda: kv.quantize("x"), TypeError, "x", "str"),
    Case("kv.quantize", "x", lambda: kv.quantize(_BadDLPack()), TypeError, "x", "bogus DLPack export"),
    Case("kv.quantize", "x", lambda: kv.quantize(np.zeros((2, 32, 64), np.int32)), TypeError, "x", "int dtype"),
    Case("kv.quantize", "x", lambda: kv.quantize(_nan()), ValueError, "NaN", "NaN"),
    Case("kv.quantize", "x", lambda: kv.quantize(np.zeros(64, np.float32)), ValueError, "x", "1-D"),
    Case("kv.quantize", "x", lambda: kv.quantize(np.zeros((2, 4, 0), np.float32)), ValueError, "x", "head dim 0"),
    Case("kv.quantize", "method", lambda: kv.quantize(_X, "diagonal"), ValueError, "method", "unknown"),
    Case("kv.quantize", "method", lambda: kv.quantize(_X, 3), TypeError, "method", "int"),
    Case("kv.quantize", "bits", lambda: kv.quantize(_X, bits=2.0), TypeError, "bits", "float"),
    Case("kv.quantize", "bits", lambda: kv.quantize(_X, bits=2 ** 70), ValueError, "bits", "2**70"),
    Case("kv.quantize", "bits", lambda: kv.quantize(_X, bits=5), ValueError, "bits", "5"),
    Case("kv.quantize", "group", lambda: kv.quantize(_X, group=1.5), TypeError, "group", "fraction"),
    Case("kv.quantize", "group", lambda: kv.quantize(_X, group=2 ** 70), ValueError, "group", "2**70"),
    Case("kv.quantize", "group", lambda: kv.quantize(_X, group=48), ValueError, "group", "48"),
    Case("kv.quantize", "axis", lambda: kv.quantize(_X, axis="diagonal"), ValueError, "axis", "unknown"),
    Case("kv.quantize", "axis", lambda: kv.quantize(_X, axis=0), TypeError, "axis", "int"),
    Case("kv.quantize", "sparsity", lambda: kv.quantize(_X.repeat(2, 2), "bitmap_sparse", sparsity=float("nan")),
         ValueError, "sparsity", "NaN"),
    Case("kv.quantize", "sparsity", lambda: kv.quantize(_X.repeat(2, 2), "bitmap_sparse", sparsity=1.0), ValueError,
         "sparsity", "1"),
    Case("kv.quantize", "sparsity", lambda: kv.quantize(_X.repeat(2, 2), "bitmap_sparse", sparsity="0.5"), TypeError,
         "sparsity", "str"),
    Case("kv.quantize", "outliers", lambda: kv.quantize(_X, "gear", outliers=-0.1), ValueError, "outliers", "negative"),
    Case("kv.quantize", "outliers", lambda: kv.quantize(_X, "gear", outliers=float("inf")), ValueError, "outliers",
         "inf"),
    Case("kv.quantize", "rank", lambda: kv.quantize(_X, "gear", rank=2.5), TypeError, "rank", "fraction"),
    Case("kv.quantize", "rank", lambda: kv.quantize(_X, "gear", rank=2 ** 70), ValueError, "rank", "2**70"),
    Case("kv.quantize", "rank", lambda: kv.quantize(_X, "gear", rank=100), ValueError, "rank", "too large"),
    Case("kv.quantize", "iters", lambda: kv.quantize(_X, "gear", iters=0), ValueError, "iters", "zero"),
    Case("kv.quantize", "iters", lambda: kv.quantize(_X, "gear", iters=1.0), TypeError, "iters", "float"),
    Case("kv.quantize", "seed", lambda: kv.quantize(_X, "turbo", seed=2 ** 70), ValueError, "seed", "2**70"),
    Case("kv.quantize", "seed", lambda: kv.quantize(_X, "turbo", seed=0.5), TypeError, "seed", "float"),
    Case("kv.quantize", "qjl", lambda: kv.quantize(_X, "turbo", qjl=1), TypeError, "qjl", "int"),
    Case("kv.quantize", "threads", lambda: kv.quantize(_X, threads=0), ValueError, "threads", "zero"),
    Case("kv.quantize", "threads", lambda: kv.quantize(_X, threads=2.0), TypeError, "threads", "float"),
    # attention
    Case("kv.attention", "q", lambda: kv.attention("q", _Q, _Q), TypeError, "q", "str"),
    Case("kv.attention", "q", lambda: kv.attention(_nan((2, 1, 64)), _Q, _Q), ValueError, "q", "NaN"),
    Case("kv.attention", "q", lambda: kv.attention(np.zeros((2, 64), np.float32), _Q, _Q), ValueError, "q", "2-D"),
    Case("kv.attention", "q", lambda: kv.attention(np.zeros((2, 1, 32), np.float32), _Q, _Q), ValueError, "q",
         "head dim"),
    Case("kv.attention", "q", lambda: kv.attention(np.zeros((2, 1, 0), np.float32), _Q, _Q), ValueError, "q",
         "head dim 0"),
    Case("kv.attention", "k_cache", lambda: kv.attention(_QV, "k", _Q), TypeError, "k_cache", "str"),
    Case("kv.attention", "k_cache", lambda: kv.attention(_QV, _nan(), _Q), ValueError, "k_cache", "NaN"),
    Case("kv.attention", "k_cache", lambda: kv.attention(_QV, np.zeros((2, 32, 64), np.int8), _Q), TypeError,
         "k_cache", "int8"),
    Case("kv.attention", "v_cache", lambda: kv.attention(_QV, _Q, None), TypeError, "v_cache", "None"),
    Case("kv.attention", "v_cache", lambda: kv.attention(_QV, _Q, _nan()), ValueError, "v_cache", "NaN"),
    Case("kv.attention", "v_cache", lambda: kv.attention(_QV, _Q, np.zeros((2, 32, 64, 1), np.float32)), ValueError,
         "v_cache", "rank"),
    Case("kv.attention", "scale", lambda: kv.attention(_QV, _Q, _Q, scale=float("nan")), ValueError, "scale", "NaN"),
    Case("kv.attention", "scale", lambda: kv.attention(_QV, _Q, _Q, scale="1"), TypeError, "scale", "str"),
    Case("kv.attention", "scale", lambda: kv.attention(_QV, _Q, _Q, scale=10 ** 400), ValueError, "scale", "huge"),
    Case("kv.attention", "threads", lambda: kv.attention(_QV, _Q, _Q, threads=2 ** 70), ValueError, "threads", "2**70"),
    # lloyd_max
    Case("kv.lloyd_max", "bits", lambda: kv.lloyd_max(2.0), TypeError, "bits", "float"),
    Case("kv.lloyd_max", "bits", lambda: kv.lloyd_max(0), ValueError, "bits", "zero"),
    Case("kv.lloyd_max", "bits", lambda: kv.lloyd_max(2 ** 70), ValueError, "bits", "2**70"),
    # QuantizedTensor(...)
    Case("kv.QuantizedTensor", "method", _qt(method="diagonal"), ValueError, "method", "unknown"),
    Case("kv.QuantizedTensor", "method", _qt(method=None), TypeError, "method", "None"),
    Case("kv.QuantizedTensor", "method", _qt(method="dense"), ValueError, "method", "dense"),
    Case("kv.QuantizedTensor", "shape", _qt(shape=5), TypeError, "shape", "int"),
    Case("kv.QuantizedTensor", "shape", _qt(shape=(2, 32.5, 64)), TypeError, "shape", "fraction"),
    Case("kv.QuantizedTensor", "shape", _qt(shape=(2, 2 ** 70, 64)), ValueError, "shape", "2**70"),
    Case("kv.QuantizedTensor", "shape", _qt(shape=(2, 64, 64)), ValueError, "arrays", "mismatch"),
    Case("kv.QuantizedTensor", "params", _qt(params={"bits": 2.5, "group": 32, "axis": "token"}), TypeError, "params",
         "fraction"),
    Case("kv.QuantizedTensor", "params", _qt(params={"bits": 4, "group": 32, "axis": "diagonal"}), ValueError,
         "params", "axis"),
    Case("kv.QuantizedTensor", "params", _qt(params=dict(_Q.params, extra=1)), ValueError, "params", "unknown key"),
    Case("kv.QuantizedTensor", "params", _qt(params=None), TypeError, "params", "None"),
    Case("kv.QuantizedTensor", "arrays", _qt(arrays=None), TypeError, "arrays", "None"),
    Case("kv.QuantizedTensor", "arrays", _qt(arrays={}), ValueError, "arrays", "empty"),
    Case("kv.QuantizedTensor", "arrays", _qt(arrays=dict(_Q.arrays, scale=_Q.arrays["scale"].astype(np.float32))),
         TypeError, "arrays", "dtype"),
    Case("kv.QuantizedTensor", "arrays", _qt(arrays=dict(_Q.arrays, codes=_Q.arrays["codes"][:, 1:])), ValueError,
         "arrays", "shape"),
    Case("kv.QuantizedTensor", "arrays",
         lambda: kv.QuantizedTensor("bitmap_sparse", _QS.shape, _QS.params,
                                    dict(_QS.arrays, offsets=_QS.arrays["offsets"] + 1)),
         ccomp.CorruptStreamError, "offset", "bad offsets"),
    Case("kv.QuantizedTensor.dequantize", "threads", lambda: _Q.dequantize(threads=1.5), TypeError, "threads", "float"),
    Case("kv.QuantizedTensor.dequantize", "out", lambda: _Q.dequantize(out=[0.0]), TypeError, "out", "list"),
    Case("kv.QuantizedTensor.dequantize", "out", lambda: _Q.dequantize(out=np.zeros((2, 32, 64))), ValueError, "out",
         "float64"),
    Case("kv.QuantizedTensor.dequantize", "out", lambda: _Q.dequantize(out=np.zeros((2, 32), np.float32)), ValueError,
         "out", "shape"),
    Case("kv.QuantizedTensor.from_bytes", "data", lambda: kv.QuantizedTensor.from_bytes(5), TypeError, "data", "int"),
    Case("kv.QuantizedTensor.from_bytes", "data", lambda: kv.QuantizedTensor.from_bytes(b""), ccomp.CorruptStreamError,
         "too short", "empty"),
    Case("kv.QuantizedTensor.from_bytes", "data", lambda: kv.QuantizedTensor.from_bytes(_Q.to_bytes()[:-1]),
         ccomp.CorruptStreamError, "CRC", "truncated"),
    Case("kv.QuantizedTensor.from_device", "q", lambda: kv.QuantizedTensor.from_device(5), TypeError, "q", "int"),
    # KIVICache
    Case("kv.KIVICache", "bits", _kivi(bits=2.0), TypeError, "bits", "float"),
    Case("kv.KIVICache", "bits", _kivi(bits=5), ValueError, "bits", "5"),
    Case("kv.KIVICache", "bits", _kivi(bits=2 ** 70), ValueError, "bits", "2**70"),
    Case("kv.KIVICache", "group", _kivi(group=1.5), TypeError, "group", "fraction"),
    Case("kv.KIVICache", "group", _kivi(group=48), ValueError, "group", "48"),
    Case("kv.KIVICache", "residual", _kivi(residual=48), ValueError, "residual", "not a multiple"),
    Case("kv.KIVICache", "residual", _kivi(residual=2 ** 70), ValueError, "residual", "2**70"),
    Case("kv.KIVICache", "residual", _kivi(residual=None), TypeError, "residual", "None"),
    Case("kv.KIVICache", "threads", _kivi(threads=0), ValueError, "threads", "zero"),
    Case("kv.KIVICache.append", "k", lambda: kv.KIVICache().append(_nan(), _X), ValueError, "k", "NaN"),
    Case("kv.KIVICache.append", "k", lambda: kv.KIVICache().append("k", _X), TypeError, "k", "str"),
    Case("kv.KIVICache.append", "k", lambda: kv.KIVICache().append(np.zeros((2, 4, 0), np.float32), _X), ValueError,
         "k", "head dim 0"),
    Case("kv.KIVICache.append", "v", lambda: kv.KIVICache().append(_X, _nan()), ValueError, "v", "NaN"),
    Case("kv.KIVICache.append", "v", lambda: kv.KIVICache().append(_X, _X[:, :3]), ValueError, "v", "shape"),
    Case("kv.KIVICache.append", "v", lambda: kv.KIVICache().append(_X, _X.astype(np.float64)), TypeError, "v",
         "float64"),
]

EXEMPT = {
    "kv.QuantizedTensor.to_device": {"like": "only read for its array type and device, on a machine with a GPU "
                                             "(tests/test_kv_gpu.py)"},
}

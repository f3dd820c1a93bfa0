"""Hostile arguments of ccomp.sketch."""
import numpy as np

from ccomp import CorruptStreamError, sketch
from tests.api import Case

MODULES = ["sketch"]

_W = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
_S = sketch.fit(_W, bits=4, groups=2, method="rtn")
_X = np.ones((2, 16), np.float32)
_GY = np.ones((2, 4), np.float32)
_T = _S.tables
_C = _S.codes
_U = np.zeros((4, 16), np.int64)


def _save(tmp_name, obj):
    import os
    import tempfile
    return sketch.save(os.path.join(tempfile.mkdtemp(), tmp_name), obj)


def _load_dup():
    import os
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "d.ccsk")
    sketch.save(path, {"a": _S, "b": _S})
    data = bytearray(open(path, "rb").read())
    at = data.index(b"\x01\x00b")  # the second name, "b" -> "a"
    data[at + 2] = ord("a")
    import struct
    import zlib
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    open(path, "wb").write(bytes(data))
    return sketch.load(path)


CASES = [
    Case("sketch.Sketch", "tables", lambda: sketch.Sketch(np.zeros((4, 2, 16), np.int32), _C), TypeError, "tables", "int32"),
    Case("sketch.Sketch", "tables", lambda: sketch.Sketch(np.zeros((4, 2, 5), np.float32), _C), ValueError, "tables", "K=5"),
    Case("sketch.Sketch", "tables", lambda: sketch.Sketch(np.zeros((), np.float32), _C), ValueError, "tables", "0-d"),
    Case("sketch.Sketch", "codes", lambda: sketch.Sketch(_T, _C.astype(np.int16)), TypeError, "codes", "int16"),
    Case("sketch.Sketch", "codes", lambda: sketch.Sketch(_T, _C[:, :, :1], 16), ValueError, "codes", "too short"),
    Case("sketch.Sketch", "in_features", lambda: sketch.Sketch(_T, _C, 8.9), TypeError, "in_features", "fraction"),
    Case("sketch.Sketch", "in_features", lambda: sketch.Sketch(_T, _C, 2**70), ValueError, "in_features", "2**70"),
    Case("sketch.Sketch", "in_features", lambda: sketch.Sketch(_T, _C, -16), ValueError, "in_features", "negative"),
    Case("sketch.Sketch", "dtype", lambda: sketch.Sketch(_T, _C, dtype="float16"), TypeError, "float16", "mismatch"),
    Case("sketch.Sketch.dequantize", "dtype", lambda: _S.dequantize(np.int8), TypeError, "dtype", "int8"),
    Case("sketch.Sketch.dequantize", "dtype", lambda: _S.dequantize("nonsense"), TypeError, "dtype", "str"),
    Case("sketch.Sketch.dequantize", "threads", lambda: _S.dequantize(threads=1.5), TypeError, "threads", "float"),
    Case("sketch.Sketch.matmul", "x", lambda: _S.matmul(np.ones((2, 15), np.float32)), ValueError, "x", "width"),
    Case("sketch.Sketch.matmul", "x", lambda: _S.matmul(np.ones((2, 16), np.int32)), TypeError, "x", "int32"),
    Case("sketch.Sketch.matmul", "threads", lambda: _S.matmul(_X, threads=2**70), ValueError, "threads", "2**70"),
    Case("sketch.Sketch.astype", "dtype", lambda: _S.astype("int8"), ValueError, "dtype", "int8"),
    Case("sketch.Sketch.astype", "dtype", lambda: _S.astype(3), TypeError, "dtype", "int"),
    Case("sketch.Sketch.with_tables", "tables", lambda: _S.with_tables(_T[:2]), ValueError, "tables", "shape"),
    Case("sketch.Sketch.with_tables", "tables", lambda: _S.with_tables(_T.astype(np.int64)), TypeError, "tables", "int64"),
    Case("sketch.Sketch.from_codes", "tables", lambda: sketch.Sketch.from_codes(_T[:1], _U), ValueError, "tables", "rows"),
    Case("sketch.Sketch.from_codes", "codes", lambda: sketch.Sketch.from_codes(_T, _U + 16), ValueError, "code", "16"),
    Case("sketch.Sketch.from_codes", "codes", lambda: sketch.Sketch.from_codes(_T, _U.astype(np.float32)), ValueError,
         "codes", "float"),
    Case("sketch.Sketch.from_codes", "dtype", lambda: sketch.Sketch.from_codes(_T, _U, dtype="float64"), TypeError,
         "float64", "mismatch"),
    Case("sketch.Sketch.from_sketchtune", "quant_grid",
         lambda: sketch.Sketch.from_sketchtune(np.zeros((4, 8), np.float16), np.zeros((4, 8), np.uint8)), ValueError,
         "quant_grid", "8 entries"),
    Case("sketch.Sketch.from_sketchtune", "codes",
         lambda: sketch.Sketch.from_sketchtune(np.zeros((4, 16), np.float16), np.zeros((3, 8), np.uint8)), ValueError,
         "codes", "rows"),
    Case("sketch.Sketch.to_sketchtune", "as_torch",
         lambda: sketch.fit(_W, bits=2, method="rtn").to_sketchtune(), ValueError, "4-bit", "2 bits"),
    Case("sketch.Sketch.from_bytes", "data", lambda: sketch.Sketch.from_bytes(5), TypeError, "data", "int"),
    Case("sketch.Sketch.from_bytes", "data", lambda: sketch.Sketch.from_bytes("CCSK"), TypeError, "data", "str"),
    Case("sketch.Sketch.from_bytes", "data", lambda: sketch.Sketch.from_bytes(b""), CorruptStreamError, "sketch",
         "empty"),
    Case("sketch.fit", "W", lambda: sketch.fit(np.zeros((4, 16), np.int32)), TypeError, "W", "int32"),
    Case("sketch.fit", "W", lambda: sketch.fit(np.full((4, 16), np.nan, np.float32)), ValueError, "weights", "NaN"),
    Case("sketch.fit", "W", lambda: sketch.fit(np.zeros((0, 16), np.float32)), ValueError, "at least one row", "empty"),
    Case("sketch.fit", "W", lambda: sketch.fit(np.zeros(16, np.float32)), ValueError, "W", "1-D"),
    Case("sketch.fit", "bits", lambda: sketch.fit(_W, bits=4.0), TypeError, "bits", "float"),
    Case("sketch.fit", "bits", lambda: sketch.fit(_W, bits=5), ValueError, "bits", "5"),
    Case("sketch.fit", "groups", lambda: sketch.fit(_W, groups=1.5), TypeError, "groups", "fraction"),
    Case("sketch.fit", "groups", lambda: sketch.fit(_W, groups=2**70), ValueError, "groups", "2**70"),
    Case("sketch.fit", "groups", lambda: sketch.fit(_W, groups=3), ValueError, "groups", "not a divisor"),
    Case("sketch.fit", "method", lambda: sketch.fit(_W, method="gptq"), ValueError, "method", "unknown"),
    Case("sketch.fit", "calibration", lambda: sketch.fit(_W, calibration=np.ones((3, 15), np.float32)), ValueError,
         "calibration", "width"),
    Case("sketch.fit", "calibration", lambda: sketch.fit(_W, calibration=np.full((3, 16), np.inf)), ValueError,
         "calibration", "inf"),
    Case("sketch.fit", "hessian", lambda: sketch.fit(_W, hessian=np.eye(15)), ValueError, "hessian", "shape"),
    Case("sketch.fit", "hessian", lambda: sketch.fit(_W, hessian=np.full((16, 16), np.nan)), ValueError, "hessian",
         "NaN"),
    Case("sketch.fit", "damping", lambda: sketch.fit(_W, hessian=np.eye(16), damping=float("nan")), ValueError,
         "damping", "NaN"),
    Case("sketch.fit", "damping", lambda: sketch.fit(_W, hessian=np.eye(16), damping="0.1"), TypeError, "damping", "str"),
    Case("sketch.fit", "exponent", lambda: sketch.fit(_W, hessian=np.eye(16), exponent=float("inf")), ValueError,
         "exponent", "inf"),
    Case("sketch.fit", "block_size", lambda: sketch.fit(_W, hessian=np.eye(16), block_size=0), ValueError, "block_size",
         "zero"),
    Case("sketch.fit", "block_size", lambda: sketch.fit(_W, hessian=np.eye(16), block_size=2.5), TypeError,
         "block_size", "fraction"),
    Case("sketch.fit", "iters", lambda: sketch.fit(_W, iters=-1), ValueError, "iters", "negative"),
    Case("sketch.fit", "iters", lambda: sketch.fit(_W, iters=2**70), ValueError, "iters", "2**70"),
    Case("sketch.fit", "dtype", lambda: sketch.fit(_W, dtype="int4"), ValueError, "dtype", "int4"),
    Case("sketch.fit", "threads", lambda: sketch.fit(_W, threads=0), ValueError, "threads", "zero"),
    Case("sketch.fit_model", "layers", lambda: sketch.fit_model({"a": np.zeros((2, 2), np.int8)}, progress=False),
         TypeError, "W", "int8"),
    Case("sketch.fit_model", "bits", lambda: sketch.fit_model([_W], bits=7, progress=False), ValueError, "bits"),
    Case("sketch.fit_model", "groups", lambda: sketch.fit_model([_W], groups=0, progress=False), ValueError, "groups"),
    Case("sketch.fit_model", "method", lambda: sketch.fit_model([_W], method="x", progress=False), ValueError, "method"),
    Case("sketch.fit_model", "calibration", lambda: sketch.fit_model({"a": _W}, calibration={}, progress=False),
         ValueError, "calibration"),
    Case("sketch.fit_model", "hessians", lambda: sketch.fit_model({"a": _W}, hessians={}, progress=False), ValueError,
         "hessians"),
    Case("sketch.matmul", "x", lambda: sketch.matmul(np.ones((2, 17), np.float32), _S), ValueError, "x", "width"),
    Case("sketch.matmul", "x", lambda: sketch.matmul(np.float32(1.0), _S), ValueError, "x", "0-d"),
    Case("sketch.matmul", "sketch", lambda: sketch.matmul(_X, "sketch"), TypeError, "sketch", "str"),
    Case("sketch.matmul", "threads", lambda: sketch.matmul(_X, _S, threads=-1), ValueError, "threads", "negative"),
    Case("sketch.grad_tables", "x", lambda: sketch.grad_tables(_X[:1], _GY, _S), ValueError, "leading shape", "rows"),
    Case("sketch.grad_tables", "grad_y", lambda: sketch.grad_tables(_X, np.ones((2, 3), np.float32), _S), ValueError,
         "grad_y", "width"),
    Case("sketch.grad_tables", "sketch", lambda: sketch.grad_tables(_X, _GY, None), TypeError, "sketch", "None"),
    Case("sketch.grad_tables", "threads", lambda: sketch.grad_tables(_X, _GY, _S, threads="2"), TypeError, "threads"),
    Case("sketch.grad_input", "grad_y", lambda: sketch.grad_input(np.ones((2, 5), np.float32), _S), ValueError,
         "grad_y", "width"),
    Case("sketch.grad_input", "sketch", lambda: sketch.grad_input(_GY, 3), TypeError, "sketch", "int"),
    Case("sketch.grad_input", "threads", lambda: sketch.grad_input(_GY, _S, threads=True), TypeError, "threads", "bool"),
    Case("sketch.output_error", "W", lambda: sketch.output_error(np.ones((4, 15)), _S, _X), ValueError, "W", "width"),
    Case("sketch.output_error", "sketch", lambda: sketch.output_error(_W, "s", _X), TypeError, "sketch", "str"),
    Case("sketch.output_error", "X", lambda: sketch.output_error(_W, _S, np.ones((2, 15))), ValueError, "X", "width"),
    Case("sketch.save", "sketches", lambda: _save("a.ccsk", {1: _S, "1": _S}), ValueError, "'1'", "duplicate"),
    Case("sketch.save", "sketches", lambda: _save("a.ccsk", {"": _S}), ValueError, "sketches", "empty name"),
    Case("sketch.save", "sketches", lambda: _save("a.ccsk", {"a\x00b": _S}), ValueError, "NUL", "NUL"),
    Case("sketch.save", "sketches", lambda: _save("a.ccsk", {"x" * 70000: _S}), ValueError, "65535", "huge name"),
    Case("sketch.save", "sketches", lambda: _save("a.ccsk", {(1, 2): _S}), TypeError, "sketches", "tuple key"),
    Case("sketch.save", "sketches", lambda: _save("a.ccsk", [_S]), TypeError, "sketches", "list"),
    Case("sketch.save", "sketches", lambda: _save("a.ccsk", {"a": _W}), TypeError, "Sketch", "array"),
    Case("sketch.save", "path", lambda: sketch.save(None, _S), TypeError, "path", "None"),
    # an int is a file descriptor to open(): save wrote the container into it, load read it, both closed it
    Case("sketch.save", "path", lambda: sketch.save(2, _S), TypeError, "path", "int (a file descriptor)"),
    Case("sketch.save", "path", lambda: sketch.save("a\0b", _S), ValueError, "path", "NUL"),
    Case("sketch.load", "path", lambda: sketch.load(None), TypeError, "path", "None"),
    Case("sketch.load", "path", lambda: sketch.load(0), TypeError, "path", "int (a file descriptor)"),
    Case("sketch.load", "path", lambda: sketch.load(True), TypeError, "path", "bool"),
    Case("sketch.load", "path", _load_dup, CorruptStreamError, "duplicate", "duplicate names"),
]

EXEMPT = {
    "sketch.Sketch": {"info": "free-form metadata dict kept as given"},
    "sketch.Sketch.to_device": {"like": "needs a GPU (tests/test_sketch_gpu.py)"},
}

CASES += [
    Case("sketch.fit_model", "progress", lambda: sketch.fit_model([_W], progress="yes"), TypeError, "progress", "str"),
    Case("sketch.fit_model", "layers", lambda: sketch.fit_model(_W, progress=False), TypeError, "layers", "array"),
]

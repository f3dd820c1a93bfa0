"""The shared argument helpers of ccomp._args (every area's functions go through them)."""
import numpy as np

from ccomp import _args
from tests.api import Case

MODULES = ["_args"]

class _BadDLPack:
    """An object whose DLPack export is not a DLPack capsule."""

    def __dlpack__(self, *args, **kwargs):
        return 5

    def __dlpack_device__(self):
        return (1, 0)


CASES = [
    Case("_args.threads", "value", lambda: _args.threads(2.0), TypeError, "threads", "float"),
    Case("_args.threads", "value", lambda: _args.threads(0), ValueError, "threads", "zero"),
    Case("_args.integer", "value", lambda: _args.integer("chunk_size", 1.9), TypeError, "chunk_size", "fraction"),
    Case("_args.integer", "value", lambda: _args.integer("chunk_size", 2**70, 1, 2**62), ValueError, "chunk_size", "2**70"),
    Case("_args.integer", "value", lambda: _args.integer("k", True), TypeError, "k", "bool"),
    Case("_args.real", "value", lambda: _args.real("temperature", float("nan")), ValueError, "temperature", "NaN"),
    Case("_args.real", "value", lambda: _args.real("temperature", 0.0, 0, lo_open=True), ValueError, "temperature", "zero"),
    Case("_args.real", "value", lambda: _args.real("temperature", 10**400), ValueError, "temperature", "huge"),
    Case("_args.real", "value", lambda: _args.real("temperature", "1"), TypeError, "temperature", "str"),
    Case("_args.flag", "value", lambda: _args.flag("logits", 1), TypeError, "logits", "int"),
    Case("_args.choice", "value", lambda: _args.choice("axis", "diagonal", ("token", "channel")), ValueError, "axis"),
    Case("_args.choice", "value", lambda: _args.choice("axis", 0, ("token", "channel")), TypeError, "axis", "int"),
    Case("_args.array", "a", lambda: _args.array("x", np.zeros(3, object)), TypeError, "x", "object"),
    Case("_args.array", "a", lambda: _args.array("x", "abc"), TypeError, "x", "str"),
    Case("_args.as_ndarray", "a", lambda: _args.as_ndarray("probs", [[1.0], [1.0, 2.0]]), TypeError, "probs", "ragged"),
    Case("_args.as_ndarray", "a", lambda: _args.as_ndarray("probs", None), TypeError, "probs", "None"),
    Case("_args.array", "a", lambda: _args.array("x", np.zeros(3, np.int32), [np.float32]), TypeError, "x", "dtype"),
    Case("_args.array", "a", lambda: _args.array("x", np.zeros(3, np.float32), ndim=2), ValueError, "x", "rank"),
    Case("_args.path", "value", lambda: _args.path("path", 3), TypeError, "path", "int (a file descriptor)"),
    Case("_args.path", "value", lambda: _args.path("path", "a\0b"), ValueError, "path", "NUL"),
    Case("_args.array", "a", lambda: _args.array("x", np.broadcast_to(np.ones(1, np.float32), (2**22, 2**22, 64))),
         MemoryError, "x: this float32 array of shape", "huge broadcast view"),
    Case("_args.from_dlpack", "x", lambda: _args.from_dlpack("probs", _BadDLPack()), TypeError, "probs",
         "bogus DLPack export"),
    Case("_args.finite", "a", lambda: _args.finite("x", np.array([1.0, np.nan])), ValueError, "x", "NaN"),
]

# the helpers take the argument's name and its value: `name` has no bad value of its own
EXEMPT = {f"_args.{f}": {"name": "the caller's argument name", "lo": "a bound", "hi": "a bound",
                         "lo_open": "a bound", "hi_open": "a bound", "options": "the caller's choices",
                         "dtypes": "the caller's dtypes", "ndim": "the caller's ranks", "value": "above",
                         "a": "above"} for f in ("threads", "optional_integer", "integer", "real", "flag", "choice",
                                                 "array", "finite", "first_nonfinite", "path")}
EXEMPT["_args.too_big"] = {"name": "the caller's argument name", "a": "the caller's array, already checked"}
EXEMPT["_args.from_dlpack"] = {"name": "the caller's argument name"}
EXEMPT["_args.interruptible"] = {"fn": "the caller's own computation", "args": "passed to fn as they are"}
EXEMPT["_args.as_ndarray"] = {"name": "the caller's argument name", "what": "the caller's description of it"}

"""The argument convention of every public function, in one place.

- A wrong type raises ``TypeError`` and a bad value ``ValueError``; each message names the argument,
  says what was expected and what was received.
- Nothing is truncated silently: an int argument refuses floats (``1.9`` and ``2.0`` alike) and
  bools; a value outside its range (``2**70`` included) is a ``ValueError``, not an ``OverflowError``.
- Arrays: the dtype is checked by kind and size, whatever the byte order.  The core reads native
  byte order, aligned, C-contiguous memory; an array that is not (a big-endian float32 file, a
  misaligned view of a byte buffer, a strided slice) is copied once into that form by
  :func:`array`, so every function accepts it and the core never sees anything else.
"""
import math
import numbers
import os
import operator
import threading

import numpy as np


def threads(value):
    """``threads=`` of every heavy call: None -> all cores, else an int in [1, 4096]."""
    if value is None:
        return max(1, os.cpu_count() or 1)
    return integer("threads", value, 1, 4096)


def integer(name, value, lo=None, hi=None):
    """An int argument (Python or NumPy integer; bool and float refused) in [lo, hi]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = operator.index(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name} must be an int in [{lo_s}, {hi_s}], got {v}")
    return int(v)


def optional_integer(name, value, lo=None, hi=None):
    """None, or :func:`integer`."""
    return None if value is None else integer(name, value, lo, hi)


def real(name, value, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """A finite real argument (int or float; bool refused) in the interval [lo, hi] (ends open where
    asked)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large to be a float, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and (v >= hi if hi_open else v > hi):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name} must be in {left}{lo_s}, {hi_s}{right}, got {v}")
    return v


def flag(name, value):
    """A bool argument (Python or NumPy bool; 0 and 1 are not bools)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def choice(name, value, options):
    """One of `options` (strings compared as given)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {', '.join(map(repr, options))}; got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def path(name, value):
    """A file path argument: str, bytes or os.PathLike (an int is not a path: ``open(3)`` would read or write, then
    close, whatever file descriptor 3 is), without a NUL character."""
    if isinstance(value, (bool, numbers.Integral)) or not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    value = os.fspath(value)
    if ("\0" if isinstance(value, str) else b"\0") in value:
        raise ValueError(f"{name} must not contain a null character, got {value!r}")
    return value


def interruptible(fn, *args):
    """fn(*args) run on a helper thread while the caller waits in short joins, so that Ctrl-C raises
    KeyboardInterrupt in the caller within about 50 ms even while fn is inside one long NumPy or LAPACK call
    (a Cholesky factorisation, a large einsum) that never returns to the interpreter to check for signals.
    After an interrupt fn runs on to its end in the background and its result is dropped."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name="ccomp-interruptible", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.05)
    if "error" in box:
        raise box["error"]
    return box["value"]


def from_dlpack(name, x):
    """The NumPy view of a host tensor that exports DLPack (torch's detached); TypeError naming `name` when the
    export fails (NumPy's own message, e.g. 'PyCapsule_GetPointer called with invalid PyCapsule object', named
    nothing)."""
    try:
        return np.from_dlpack(x.detach() if hasattr(x, "detach") else x)
    except (TypeError, ValueError, BufferError, AttributeError) as e:
        raise TypeError(f"{name}: {type(x).__name__} exports DLPack but cannot be read as a host array ({e})") \
            from None


def _dtype_name(dt):
    return dt.newbyteorder("=").name if dt.byteorder not in ("=", "|") else dt.name


def as_ndarray(name, a, what="an array"):
    """np.asarray(a), with a TypeError saying `name must be <what>` for strings, bytes, mappings, sets, None
    and objects NumPy cannot turn into an array (ragged lists)."""
    if isinstance(a, (str, bytes, dict, set)) or a is None:
        raise TypeError(f"{name} must be {what}, got {type(a).__name__}")
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} must be {what}, got {type(a).__name__} ({e})") from None


def array(name, a, dtypes=None, ndim=None):
    """`a` as a NumPy array the core can read: native byte order, aligned and C-contiguous (copied once
    when it is not).  dtypes: allowed dtypes (compared by kind and size, so a big-endian float32 is a
    float32); ndim: an int or a tuple of allowed ranks.  Object arrays and non-array-likes are a
    TypeError naming `name`."""
    arr = as_ndarray(name, a)
    if arr.dtype.kind in "OUSVMm":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if dtypes is not None:
        allowed = [np.dtype(d) for d in dtypes]
        native = arr.dtype.newbyteorder("=")
        if native not in allowed:
            raise TypeError(f"{name} must have dtype {' or '.join(d.name for d in allowed)}, "
                            f"got {_dtype_name(arr.dtype)}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(f"{name} must have {want} dimension{'s' if ranks != (1,) else ''}, "
                             f"got shape {arr.shape}")
    if not arr.dtype.isnative or not arr.flags.aligned or not arr.flags.c_contiguous:
        try:
            arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)
        except MemoryError:
            raise too_big(name, arr) from None
    return arr


def too_big(name, a):
    """The MemoryError of a copy of `a` (a view of little memory, e.g. np.broadcast_to, can stand for a huge
    array), naming the argument."""
    return MemoryError(f"{name}: this {_dtype_name(a.dtype)} array of shape {a.shape} ({a.size * a.dtype.itemsize:,} "
                       f"bytes once contiguous) needs more memory than can be allocated")


def finite(name, a):
    """ValueError naming `name` and the first NaN or infinity of the float array `a`."""
    at = first_nonfinite(a, name)
    if at is not None:
        raise ValueError(f"{name} must be finite, found {np.asarray(a)[at]} at index {at}")


def first_nonfinite(a, name="the array"):
    """The index (a tuple) of the first NaN or infinity of the float array a, or None when all are finite:
    one pass over the bits in the C core on all threads for C-contiguous float16/32/64 arrays (NumPy's
    ``isfinite(a).all()`` builds an a-sized temporary on one thread)."""
    a = np.asarray(a)
    if a.size == 0:
        return None
    if a.dtype in (np.float16, np.float32, np.float64) and a.dtype.isnative and a.flags.c_contiguous:
        from . import _core
        at = _core.first_nonfinite(a, threads(None))
        return None if at < 0 else tuple(int(i) for i in np.unravel_index(at, a.shape))
    try:
        bad = np.argwhere(~np.isfinite(a))
    except MemoryError:
        raise too_big(name, a) from None
    return tuple(int(i) for i in bad[0]) if len(bad) else None

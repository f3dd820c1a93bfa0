"""Argument checks shared by the areas' Python modules."""
import os

import numpy as np


def threads(value):
    """``threads=`` of every heavy call: None -> all cores, else an int in [1, 4096] (ValueError otherwise)."""
    if value is None:
        return max(1, os.cpu_count() or 1)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 4096:
        raise ValueError(f"threads must be None or an int in [1, 4096], got {value!r}")
    return int(value)


def first_nonfinite(a):
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
    bad = np.argwhere(~np.isfinite(a))
    return tuple(int(i) for i in bad[0]) if len(bad) else None

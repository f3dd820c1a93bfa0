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

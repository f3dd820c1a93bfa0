"""What the GPU tests share: the `gpu` mark and the shapes they run at.

`gpu` marks a test that needs a usable CUDA device: `pytest -m gpu` selects these tests, and they are
skipped where ccomp.cuda.is_available() is False.  The device is a real GPU or ccomp's SIMT emulator
(`make simt-py`: every kernel compiled for the host, one fiber per CUDA thread), which is thousands
of times slower: there, and wherever CCOMP_GPU_SMALL=1 is set (compute-sanitizer runs on a real GPU),
`pick(real, small)` gives the small shapes, chosen to reach every kernel, template instance and code
path the real shapes reach (both dtypes, each method and bit width, the GEMV and the tiled paths).

CCOMP_REQUIRE_GPU=1 (set by `make simt-py`, `make simt-race` and kernels/gpu_check.py) turns a
missing device into an error at collection instead of skipped tests, so a build whose _cuda module
does not load can never pass as "everything skipped".
"""
import os

import pytest

from ccomp import cuda

AVAILABLE = cuda.is_available()
if os.environ.get("CCOMP_REQUIRE_GPU") == "1" and not AVAILABLE:
    info = cuda.info()
    raise RuntimeError(f"CCOMP_REQUIRE_GPU=1 but no CUDA device is usable: {info['cuda_reason']}")
EMULATED = AVAILABLE and cuda.emulated()
SMALL = EMULATED or os.environ.get("CCOMP_GPU_SMALL") == "1"

no_gpu = pytest.mark.skipif(AVAILABLE, reason="a GPU is usable here")


def gpu(test):
    """Marks `test` as a GPU test (`pytest -m gpu`), skipped without a usable device."""
    return pytest.mark.gpu(pytest.mark.skipif(not AVAILABLE, reason="no usable CUDA device")(test))


def pick(real, small):
    """`real` on a GPU, `small` under the emulator (or with CCOMP_GPU_SMALL=1)."""
    return small if SMALL else real

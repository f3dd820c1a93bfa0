"""The CUDA build path: ccomp._cuda is compiled wherever nvcc is, and GPU use fails clearly without a GPU."""
import shutil

import numpy as np
import pytest

import ccomp
from ccomp import cuda


def nvcc_present():
    import os

    return shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


def test_cuda_extension_built_where_nvcc_exists():
    if not nvcc_present():
        pytest.skip("no nvcc on this machine")
    assert cuda.built(), "nvcc is present but ccomp._cuda was not built"
    info = ccomp.build_info()
    assert info["cuda"] is True and info["cuda_runtime"]


def test_gpu_functions_fail_clearly_without_a_gpu():
    if cuda.is_available():
        out = np.frombuffer(cuda._cuda.iota(1000, 3), dtype=np.int32)
        assert np.array_equal(out, np.arange(1000, dtype=np.int32) * 3)
        return
    with pytest.raises(RuntimeError, match="needs a GPU"):
        cuda.require("the test")
    assert cuda.device_count() == 0
    assert ccomp.build_info()["cuda_reason"]

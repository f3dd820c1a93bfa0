"""The CUDA build path: ccomp._cuda is compiled wherever nvcc is, and GPU use fails clearly without a GPU."""
import os
import shutil

import numpy as np
import pytest

import ccomp
from ccomp import cuda
from gpu_suite import EMULATED, gpu, no_gpu


def nvcc_present():
    return shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


def test_cuda_extension_built_where_nvcc_exists():
    if not nvcc_present():
        pytest.skip("no nvcc on this machine")
    assert cuda.built(), "nvcc is present but ccomp._cuda was not built"
    info = ccomp.build_info()
    assert info["cuda"] is True and info["cuda_runtime"]


@no_gpu
def test_gpu_functions_fail_clearly_without_a_gpu():
    with pytest.raises(RuntimeError, match="needs a GPU"):
        cuda.require("the test")
    assert cuda.device_count() == 0
    assert not cuda.emulated()
    info = ccomp.build_info()
    assert info["cuda_reason"] and info["cuda_emulated"] is False


@gpu
def test_iota_runs_on_the_device():
    cuda.require("the test")
    for n in (1, 255, 256, 1000):  # one partial block, one full block, several blocks
        out = np.frombuffer(cuda._cuda.iota(n, 3), dtype=np.int32)
        assert np.array_equal(out, np.arange(n, dtype=np.int32) * 3)
    with pytest.raises(ValueError, match="iota"):
        cuda._cuda.iota(0, 1)


@gpu
def test_alloc_gives_device_memory_and_refuses_bad_sizes():
    cuda.require("the test")
    capsule, ptr = cuda._cuda.alloc(768)
    assert ptr != 0 and ptr % 256 == 0
    assert len(cuda._cuda.to_host(ptr, 768)) == 768  # the whole buffer is device memory that can be read back
    empty, empty_ptr = cuda._cuda.alloc(0)  # a distinct pointer even for no bytes
    assert empty_ptr not in (0, ptr)
    with pytest.raises(ValueError, match="^alloc: the size must be non-negative, got -1"):
        cuda._cuda.alloc(-1)
    del capsule, empty


@gpu
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer reports the refused host allocation behind the emulator's cudaMalloc")
def test_alloc_beyond_device_memory_is_a_memory_error():
    cuda.require("the test")
    with pytest.raises(MemoryError, match="^allocating GPU memory failed: CUDA error in cudaMalloc: "):
        cuda._cuda.alloc(1 << 60)


@gpu
def test_info_names_the_device_and_says_whether_it_is_emulated():
    info = ccomp.build_info()
    assert info["cuda"] is True and info["cuda_reason"] == ""
    assert len(info["cuda_devices"]) == cuda.device_count() >= 1
    assert info["cuda_emulated"] is EMULATED is cuda.emulated()
    assert info["cuda_devices"][0].startswith(cuda.EMULATOR_NAME) is EMULATED


def test_no_usable_device_is_explained_as_no_driver_no_device_or_old_driver():
    """ccomp info's cuda_reason, from what the driver itself reports (libcuda probed apart from the runtime)."""
    no_driver = cuda._diagnose("CUDA driver version is insufficient for CUDA runtime version", 13000, None)
    assert no_driver.startswith("no NVIDIA driver")
    no_device = cuda._diagnose("no CUDA-capable device is detected", 13000, (13000, 100, 0))
    assert no_device.startswith("no CUDA device") and "13.0" in no_device
    assert cuda._diagnose("no CUDA-capable device is detected", 12040, (12080, 0, 0)).startswith("no CUDA device")
    too_old = cuda._diagnose("CUDA driver version is insufficient for CUDA runtime version", 13000, (12040, 0, 1))
    assert too_old.startswith("the NVIDIA driver is too old") and "12.4" in too_old and "13.0" in too_old
    other = cuda._diagnose("unknown error", 12040, (12080, 999, 0))
    assert other.startswith("unknown error") and "999" in other


def test_driver_probe_without_libcuda():
    def load(name):
        raise OSError(f"{name}: cannot open shared object file")

    assert cuda._driver_probe(load) is None


_BROKEN_LOAD = """
import importlib.abc, importlib.machinery, sys
class Loader(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError('libcudart.so.13: cannot open shared object file')
    def exec_module(self, module):
        pass
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ccomp._cuda":
            if {broken}:
                return importlib.machinery.ModuleSpec(name, Loader())
            raise ModuleNotFoundError("No module named 'ccomp._cuda'", name=name)
sys.meta_path.insert(0, Finder())
import ccomp.cuda as c
print(c.built(), c.info()["cuda_reason"])
try:
    c.require("the test")
except RuntimeError as e:
    print(e)
"""


@pytest.mark.parametrize("broken, expect", [
    (True, "CUDA extension is installed but cannot be loaded: libcudart.so.13: cannot open shared object file"),
    (False, "built without CUDA"),
])
def test_a_cuda_extension_that_cannot_load_is_not_called_unbuilt(broken, expect):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _BROKEN_LOAD.format(broken=broken)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith("False ") and expect in out[0], out
    assert out[1].startswith("the test needs a GPU, but") and expect in out[1], out

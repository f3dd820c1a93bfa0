"""CUDA availability.

``ccomp._cuda`` is built when nvcc is present at install time
(``CCOMP_CUDA=auto|0|1``).  Functions that need a GPU call :func:`require`,
which raises a clear ``RuntimeError`` when none is usable.

The same module can be built against ccomp's SIMT emulator (``make simt-py``, docs/gpu.md): its
one device runs the kernels on the host and reports the name :data:`EMULATOR_NAME`;
:func:`emulated` says so and ``info()["cuda_emulated"]`` is True.
"""
import ctypes

try:
    from . import _cuda
except ImportError as exc:
    _cuda = None
    # not built (no nvcc, CCOMP_CUDA=0), or built but not loadable (a missing libcudart, a broken build)
    import importlib.util
    try:
        _present = importlib.util.find_spec(f"{__package__}._cuda") is not None
    except (ImportError, ValueError):
        _present = False
    _import_error = str(exc) if _present else ""
else:
    _import_error = ""

__all__ = ["built", "is_available", "device_count", "emulated", "info", "require"]

#: the device name of ccomp's SIMT emulator (kernels/simt), which runs the CUDA kernels on the host
EMULATOR_NAME = "ccomp SIMT emulator"


def built():
    """True when this ccomp was compiled with its CUDA extension."""
    return _cuda is not None


def device_count():
    """Number of usable CUDA devices (0 without the extension, a driver or a GPU)."""
    if _cuda is None:
        return 0
    count, _reason = _cuda.device_count()
    return count


def is_available():
    """True when ccomp's CUDA kernels can run here."""
    return device_count() > 0


def emulated():
    """True when the CUDA device is ccomp's SIMT emulator, not a GPU (a test build; see docs/gpu.md)."""
    if device_count() == 0:
        return False
    name, _major, _minor = _cuda.device_name(0)
    return name.startswith(EMULATOR_NAME)


def _version(v):
    return f"{v // 1000}.{(v % 1000) // 10}" if v else None


# CUresult codes of the driver API (cuda.h)
_CUDA_ERROR_NO_DEVICE = 100


def _driver_probe(load=ctypes.CDLL):
    """Ask the NVIDIA driver itself (libcuda), apart from the runtime ccomp links: None when no driver
    can be loaded, else (driver CUDA version, cuInit's status, device count)."""
    try:
        lib = load("libcuda.so.1")
    except OSError:
        return None
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    status = lib.cuInit(0)
    if status == 0:
        lib.cuDeviceGetCount(ctypes.byref(count))
    return version.value, status, count.value


def _diagnose(reason, runtime, probe):
    """Why the runtime found no usable device, in the user's terms: no driver, no device, or a driver too old."""
    if probe is None:
        return ("no NVIDIA driver: libcuda.so.1 cannot be loaded (install the NVIDIA driver; in a container, "
                "start it with the GPU exposed, e.g. docker run --gpus all)")
    driver, status, count = probe
    if status == _CUDA_ERROR_NO_DEVICE or (status == 0 and count == 0):
        return (f"no CUDA device: the NVIDIA driver (CUDA {_version(driver)}) is installed but sees no GPU "
                f"(check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    if runtime and driver and driver < runtime:
        return (f"the NVIDIA driver is too old: it supports CUDA {_version(driver)}, ccomp's kernels were built "
                f"with CUDA {_version(runtime)} (update the driver, or rebuild ccomp with a CUDA toolkit no newer "
                f"than {_version(driver)})")
    return f"{reason} (driver CUDA {_version(driver)}, runtime CUDA {_version(runtime)}, cuInit status {status})"


def _status():
    """(device count, driver version, reason): the reason is empty when a device is usable."""
    count, reason = _cuda.device_count()
    runtime, driver = _cuda.versions()
    if count:
        return count, driver, ""
    probe = _driver_probe()
    if probe is not None and not driver:
        driver = probe[0]
    return 0, driver, _diagnose(reason, runtime, probe)


def _unbuilt_reason():
    """Why there is no CUDA extension: not built, or built but not loadable."""
    if _import_error:
        return f"ccomp's CUDA extension is installed but cannot be loaded: {_import_error}"
    return "ccomp was built without CUDA (nvcc not found or CCOMP_CUDA=0)"


def info():
    """CUDA part of :func:`ccomp.build_info`."""
    if _cuda is None:
        return {"cuda": False, "cuda_runtime": None, "cuda_driver": None, "cuda_devices": [],
                "cuda_emulated": False, "cuda_reason": _unbuilt_reason()}
    count, driver, reason = _status()
    runtime, _driver = _cuda.versions()
    devices = []
    for i in range(count):
        name, major, minor = _cuda.device_name(i)
        devices.append(f"{name} (sm_{major}{minor})")
    return {"cuda": True, "cuda_runtime": _version(runtime), "cuda_driver": _version(driver),
            "cuda_devices": devices, "cuda_emulated": emulated(), "cuda_reason": reason}


def require(what="this function"):
    """Raise RuntimeError unless a CUDA device is usable."""
    if _cuda is None:
        if _import_error:
            raise RuntimeError(f"{what} needs a GPU, but {_unbuilt_reason()}")
        raise RuntimeError(f"{what} needs a GPU, but ccomp was built without CUDA "
                           f"(install with nvcc on PATH, or CCOMP_CUDA=1 to insist)")
    count, _driver, reason = _status()
    if count == 0:
        raise RuntimeError(f"{what} needs a GPU, but no CUDA device is usable: {reason}")


def on_device(x):
    """True for an array that lives on a CUDA device (torch, CuPy, DLPack, ``__cuda_array_interface__``)."""
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            return int(dev()[0]) in (2, 13)  # kDLCUDA, kDLCUDAManaged
        except Exception:
            return False
    return hasattr(x, "__cuda_array_interface__")

"""CUDA availability.

``ccomp._cuda`` is built when nvcc is present at install time
(``CCOMP_CUDA=auto|0|1``).  Functions that need a GPU call :func:`require`,
which raises a clear ``RuntimeError`` when none is usable.
"""
try:
    from . import _cuda
except ImportError as exc:  # built without nvcc
    _cuda = None
    _import_error = str(exc)
else:
    _import_error = ""

__all__ = ["built", "is_available", "device_count", "info", "require"]


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


def _version(v):
    return f"{v // 1000}.{(v % 1000) // 10}" if v else None


def info():
    """CUDA part of :func:`ccomp.build_info`."""
    if _cuda is None:
        return {"cuda": False, "cuda_runtime": None, "cuda_driver": None, "cuda_devices": [],
                "cuda_reason": "ccomp was built without CUDA (nvcc not found or CCOMP_CUDA=0)"}
    count, reason = _cuda.device_count()
    runtime, driver = _cuda.versions()
    devices = []
    for i in range(count):
        name, major, minor = _cuda.device_name(i)
        devices.append(f"{name} (sm_{major}{minor})")
    return {"cuda": True, "cuda_runtime": _version(runtime), "cuda_driver": _version(driver),
            "cuda_devices": devices, "cuda_reason": "" if count else reason}


def require(what="this function"):
    """Raise RuntimeError unless a CUDA device is usable."""
    if _cuda is None:
        raise RuntimeError(f"{what} needs a GPU, but ccomp was built without CUDA "
                           f"(install with nvcc on PATH, or CCOMP_CUDA=1 to insist)")
    count, reason = _cuda.device_count()
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

"""Arrays in GPU memory, for ccomp's GPU modules (``_ac_gpu``, ``_kv_gpu``, ``_sketch_gpu``, ``_tokens_gpu``).

One home for what every GPU path needs: the CUDA extension behind :func:`_ext`; ccomp's own device
arrays (:class:`DeviceArray`, :func:`to_device`); a :class:`DeviceView` (pointer, shape, strides in
elements, dtype, array kind and device) of a torch tensor, a CuPy array, anything with
``__cuda_array_interface__`` or a CUDA ``__dlpack__``; new arrays of an input's kind on its device;
and the CUDA stream a call runs on.

Two ways to view an input, for the two stream models of the GPU modules:

- :func:`_view`: the work runs on the framework's current stream (:func:`_stream`), so torch and CuPy
  arrays are read in place; outputs take the input's kind (kv, sketch, tokens).
- :func:`_default_stream_view`: the work runs on the CUDA legacy default stream, so torch and CuPy
  arrays are exported with ``__dlpack__(stream=1)``, which makes their producer's stream finish
  writing them first (ac).

Host arrays are copied to the current GPU in both.  This module sits below the GPU modules and above
:mod:`ccomp.cuda` only: it imports no area module.
"""
import contextlib
import sys

import numpy as np

from . import cuda as _cudamod
from .cuda import on_device

__all__ = ["DeviceArray", "DeviceView", "to_device", "cai_layout", "on_device"]

# DLPack device types and dtype codes
_KDL_CPU, _KDL_CUDA, _KDL_CUDA_HOST, _KDL_CUDA_MANAGED = 1, 2, 3, 13
_DL_CODES = {0: "int", 1: "uint", 2: "float", 4: "bfloat", 5: "complex", 6: "bool"}


def _ext(what):
    """The CUDA extension; RuntimeError naming `what` when no GPU is usable."""
    _cudamod.require(what)
    return _cudamod._cuda


# ------------------------------------------------------------------ ccomp's own device arrays


class DeviceArray:
    """A C-contiguous array in GPU memory owned by ccomp (see :func:`to_device`).

    It exposes ``__cuda_array_interface__``, so ccomp's GPU functions (and CuPy,
    Numba, torch.as_tensor) accept it; ``get()`` copies it back to a NumPy array.
    """

    def __init__(self, capsule, ptr, shape, dtype):
        self._capsule = capsule  # frees the memory when the array goes away
        self.ptr = int(ptr)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}

    def get(self):
        """A NumPy copy of the array."""
        ext = _ext("DeviceArray.get")
        raw = ext.to_host(self.ptr, self.nbytes) if self.nbytes else b""
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape).copy()

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype})"


def to_device(array):
    """Copy a NumPy array (made C-contiguous) to the current GPU as a :class:`DeviceArray`."""
    ext = _ext("ccomp._ac_gpu.to_device")
    arr = np.ascontiguousarray(array)
    capsule, ptr = ext.upload(arr.reshape(-1).view(np.uint8) if arr.size else b"")
    return DeviceArray(capsule, ptr, arr.shape, arr.dtype)


def _alloc(shape, dtype, ext):
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    capsule, ptr = ext.alloc(n)
    return DeviceArray(capsule, ptr, shape, dtype)


# ------------------------------------------------------------------ layouts and dtypes


def _c_strides(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


def _contiguous(v):
    """True when a view's strides are C-contiguous (axes of length 1 may have any stride)."""
    expect = 1
    for n, st in zip(reversed(v.shape), reversed(v.strides)):
        if n != 1 and st != expect:
            return False
        expect *= max(int(n), 1)
    return True


def cai_layout(obj, what):
    """(pointer, shape, strides in elements, dtype, stream) of an object's ``__cuda_array_interface__``."""
    cai = obj.__cuda_array_interface__
    dtype = np.dtype(cai["typestr"])
    shape = tuple(int(s) for s in cai["shape"])
    if cai.get("strides") is None:
        strides = _c_strides(shape)
    else:
        if any(s % dtype.itemsize for s in cai["strides"]):
            raise ValueError(f"{what} has strides that are not a multiple of its item size: {cai['strides']}")
        strides = tuple(int(s) // dtype.itemsize for s in cai["strides"])
    return int(cai["data"][0]), shape, strides, dtype, cai.get("stream")


def _dl_dtype(code, bits, lanes):
    """The NumPy dtype of a DLPack (code, bits, lanes), or its name when NumPy has none (bfloat16, vectors)."""
    if lanes != 1:
        return f"{_DL_CODES.get(code, 'code' + str(code))}{bits}x{lanes}"
    if code in (0, 1, 2) and bits in (8, 16, 32, 64):
        return np.dtype(f"{'iuf'[code]}{bits // 8}")
    if code == 6:
        return np.dtype(bool)
    return f"{_DL_CODES.get(code, 'code' + str(code))}{bits}"


def _dtype_name(dt):
    return dt.name if isinstance(dt, np.dtype) else str(dt)


def _is_torch(obj):
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "data_ptr")


_TORCH_NAMES = {"float32": "f4", "float16": "f2", "float64": "f8", "uint8": "u1", "int8": "i1", "int16": "i2",
                "int32": "i4", "int64": "i8", "uint16": "u2", "uint32": "u4", "uint64": "u8"}


def _torch_np_dtype(tdt):
    name = str(tdt).replace("torch.", "")
    return np.dtype(_TORCH_NAMES[name]) if name in _TORCH_NAMES else name


def _torch_dtype(torch, dt):
    """The torch dtype holding dt's bits: the unsigned types a torch older than 2.3 lacks become signed."""
    dt = np.dtype(dt)
    names = {"f4": "float32", "f2": "float16", "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64"}
    signed = {"u2": "int16", "u4": "int32", "u8": "int64"}
    key = dt.str[1:]
    name = names[key]
    if not hasattr(torch, name):
        name = signed[key]
    return getattr(torch, name)


# ------------------------------------------------------------------ views


class DeviceView:
    """Pointer, shape, strides (elements), dtype, kind ("torch", "cupy", "ccomp") and device (None when
    unknown) of an array in GPU memory; ``obj`` keeps the memory alive."""

    __slots__ = ("ptr", "shape", "strides", "dtype", "kind", "device", "obj")

    def __init__(self, ptr, shape, strides, dtype, kind, device, obj):
        self.ptr, self.shape, self.strides, self.dtype = int(ptr), tuple(shape), tuple(strides), dtype
        self.kind, self.device, self.obj = kind, device, obj


def _host_view(obj, what):
    """A view of a host array copied to the current GPU (a DeviceArray)."""
    arr = np.asarray(obj)
    if arr.dtype == object:
        raise TypeError(f"{what} must be an array, got {type(obj).__name__}")
    dev = to_device(arr)
    return DeviceView(dev.ptr, dev.shape, _c_strides(dev.shape), dev.dtype, "ccomp", None, dev)


def _dlpack_view(obj, what, ext, dev_type, dev_id, stream):
    """A view of a CUDA ``__dlpack__`` export (None for a host one); `stream` as ``__dlpack__`` takes it."""
    if dev_type in (_KDL_CUDA, _KDL_CUDA_MANAGED):
        if stream is None:
            capsule = obj.__dlpack__()
        else:
            try:
                capsule = obj.__dlpack__(stream=stream)
            except TypeError:
                capsule = obj.__dlpack__()
        ptr, _dt, _di, shape, strides, code, bits, lanes = ext.dlpack_info(capsule)
        return DeviceView(ptr, tuple(shape), tuple(strides) if strides is not None else _c_strides(shape),
                          _dl_dtype(code, bits, lanes), "ccomp", dev_id, (obj, capsule))
    if dev_type not in (_KDL_CPU, _KDL_CUDA_HOST):
        raise TypeError(f"{what} is on a device ccomp cannot use (DLPack device type {dev_type}); "
                        f"expected a CUDA array or a NumPy array")
    return None


def _view(obj, what, ext):
    """A DeviceView of obj for work on the framework's current stream; host arrays are copied to the
    current GPU."""
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        obj = obj.detach()  # torch refuses to export tensors that require grad
    if _is_torch(obj):
        if obj.device.type == "cuda":
            return DeviceView(obj.data_ptr(), tuple(obj.shape), tuple(obj.stride()), _torch_np_dtype(obj.dtype),
                              "torch", obj.device.index or 0, obj)
        if obj.device.type != "cpu":
            raise TypeError(f"{what} is on a {obj.device.type} device; expected a CUDA tensor")
        obj = obj.numpy() if _torch_np_dtype(obj.dtype) != "bfloat16" else obj.float().numpy()
    if isinstance(obj, DeviceArray):
        return DeviceView(obj.ptr, obj.shape, _c_strides(obj.shape), obj.dtype, "ccomp", None, obj)
    if not isinstance(obj, np.ndarray) and hasattr(obj, "__cuda_array_interface__"):
        ptr, shape, strides, dtype, cai_stream = cai_layout(obj, what)
        is_cupy = type(obj).__module__.split(".")[0] == "cupy"
        if not is_cupy and cai_stream is not None:
            ext.synchronize()  # an unknown producer's stream may still be writing the data
        return DeviceView(ptr, shape, strides, dtype, "cupy" if is_cupy else "ccomp",
                          obj.device.id if is_cupy else None, obj)
    if not isinstance(obj, np.ndarray) and hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        dev_type, dev_id = obj.__dlpack_device__()
        v = _dlpack_view(obj, what, ext, int(dev_type), int(dev_id), None)
        if v is not None:
            return v
        obj = np.from_dlpack(obj)
    return _host_view(obj, what)


def _default_stream_view(obj, what, ext):
    """A DeviceView of obj for work on the legacy default stream: DLPack producers (torch, CuPy) are
    asked to finish writing first, other CUDA arrays announcing a stream are waited for; host arrays
    are copied to the current GPU."""
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        obj = obj.detach()  # torch refuses to export tensors that require grad
    if isinstance(obj, DeviceArray):
        return DeviceView(obj.ptr, obj.shape, _c_strides(obj.shape), obj.dtype, "ccomp", None, obj)
    if not isinstance(obj, np.ndarray) and hasattr(obj, "__dlpack_device__") and hasattr(obj, "__dlpack__"):
        dev_type, _dev_id = obj.__dlpack_device__()
        v = _dlpack_view(obj, what, ext, int(dev_type), None, 1)  # 1: the legacy default stream
        if v is not None:
            return v
        obj = np.from_dlpack(obj) if hasattr(np, "from_dlpack") else np.asarray(obj)
    elif not isinstance(obj, np.ndarray) and hasattr(obj, "__cuda_array_interface__"):
        ptr, shape, strides, dtype, stream = cai_layout(obj, what)
        if stream is not None:
            ext.synchronize()  # the producer's stream may still be writing the data
        return DeviceView(ptr, shape, strides, dtype, "ccomp", None, obj)
    return _host_view(obj, what)


# ------------------------------------------------------------------ new arrays of an input's kind


def _empty(like, shape, dtype, ext):
    """A new C-contiguous array of like's kind on like's device."""
    shape = tuple(int(s) for s in shape)
    if like.kind == "torch":
        torch = sys.modules["torch"]
        return torch.empty(shape, dtype=_torch_dtype(torch, dtype), device=like.obj.device)
    if like.kind == "cupy":
        cp = sys.modules["cupy"]
        with cp.cuda.Device(like.device):
            return cp.empty(shape, dtype=dtype)
    return _alloc(shape, dtype, ext)


def _from_host(like, host, ext):
    """A copy of the NumPy array `host` of like's kind on like's device."""
    if like.kind == "torch":
        return sys.modules["torch"].from_numpy(host).to(like.obj.device)
    if like.kind == "cupy":
        cp = sys.modules["cupy"]
        with cp.cuda.Device(like.device):
            return cp.asarray(host)
    return to_device(host)


def _ptr(arr, ext):
    return _view(arr, "output", ext).ptr


def _same_device(views, what):
    """ValueError unless every array whose device is known is on one GPU."""
    devs = sorted({v.device for v in views if v.device is not None})
    if len(devs) > 1:
        raise ValueError(f"{what}: the arrays are on different GPUs ({', '.join(f'cuda:{d}' for d in devs)}); "
                         f"expected one device")


# ------------------------------------------------------------------ streams


def _stream(like, stream):
    """The cudaStream_t a call runs on: `stream` (an int handle or a torch/CuPy stream), else the current
    stream of like's framework on its device, else the legacy default stream (0)."""
    if stream is not None:
        if isinstance(stream, (int, np.integer)) and not isinstance(stream, bool):
            if stream < 0:
                raise ValueError(f"stream must be a cudaStream_t handle (>= 0), got {stream}")
            return int(stream)
        for attr in ("cuda_stream", "ptr"):
            if hasattr(stream, attr):
                return int(getattr(stream, attr))
        raise TypeError(f"stream must be None, an int handle or a torch/CuPy stream, got {type(stream).__name__}")
    if like.kind == "torch":
        return int(sys.modules["torch"].cuda.current_stream(like.obj.device).cuda_stream)
    if like.kind == "cupy":
        cp = sys.modules["cupy"]
        with cp.cuda.Device(like.device):
            return int(cp.cuda.get_current_stream().ptr)
    return 0


def _on_stream(like, handle):
    """Allocations of like's framework ordered on stream `handle` (its caching allocator then reuses
    the memory only after the work queued there)."""
    if like.kind == "torch":
        torch = sys.modules["torch"]
        if handle != torch.cuda.current_stream(like.obj.device).cuda_stream:
            return torch.cuda.stream(torch.cuda.ExternalStream(handle, device=like.obj.device))
    elif like.kind == "cupy":
        cp = sys.modules["cupy"]
        with cp.cuda.Device(like.device):
            if handle != cp.cuda.get_current_stream().ptr:
                return cp.cuda.ExternalStream(handle)
    return contextlib.nullcontext()

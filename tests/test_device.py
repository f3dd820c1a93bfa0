"""ccomp._device without a GPU: views of CUDA-array-interface objects (pointer, shape, strides in
elements, dtype, kind), stream handles, the same-device check and the contiguity rule.  Nothing
here dereferences a pointer, so the objects below only describe memory."""
import numpy as np
import pytest

from ccomp import _device, cuda


class CudaArrayLike:
    """Describes a CUDA array through ``__cuda_array_interface__`` (never read)."""

    def __init__(self, shape, typestr, strides=None, ptr=0x7F0000001000, stream=None):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False), "version": 3,
                                         "strides": strides, "stream": stream}


class NoExt:
    """Stands for the extension where a view must not call it."""

    def __getattr__(self, name):
        raise AssertionError(f"the view called ext.{name}")


@pytest.mark.parametrize("view", [_device._view, _device._default_stream_view])
def test_view_of_cuda_array_interface(view):
    v = view(CudaArrayLike((3, 5), "<f4"), "x", NoExt())
    assert (v.ptr, v.shape, v.strides, v.dtype, v.kind, v.device) == \
        (0x7F0000001000, (3, 5), (5, 1), np.dtype(np.float32), "ccomp", None)
    w = view(CudaArrayLike((4, 2, 3), "<f2", strides=(96, 12, 2)), "x", NoExt())
    assert (w.shape, w.strides, w.dtype) == ((4, 2, 3), (48, 6, 1), np.dtype(np.float16))


def test_view_rejects_strides_that_split_items():
    with pytest.raises(ValueError, match=r"keys has strides that are not a multiple of its item size"):
        _device._view(CudaArrayLike((2, 3), "<f4", strides=(14, 4)), "keys", NoExt())


def test_view_waits_for_an_announced_stream():
    calls = []

    class Ext:
        def synchronize(self):
            calls.append("synchronize")

    for view in (_device._view, _device._default_stream_view):
        view(CudaArrayLike((2,), "<u1", stream=7), "x", Ext())
    assert calls == ["synchronize", "synchronize"]


def test_dlpack_dtypes():
    assert _device._dl_dtype(2, 32, 1) == np.dtype(np.float32)
    assert _device._dl_dtype(1, 8, 1) == np.dtype(np.uint8)
    assert _device._dl_dtype(0, 64, 1) == np.dtype(np.int64)
    assert _device._dl_dtype(6, 8, 1) == np.dtype(bool)
    assert _device._dl_dtype(4, 16, 1) == "bfloat16"
    assert _device._dl_dtype(2, 16, 2) == "float16x2"
    assert _device._dtype_name(_device._dl_dtype(4, 16, 1)) == "bfloat16"
    assert _device._dtype_name(np.dtype(np.float16)) == "float16"


def test_strides_and_contiguity():
    assert _device._c_strides((2, 3, 4)) == (12, 4, 1)
    assert _device._c_strides((2, 0, 4)) == (4, 4, 1)
    v = _device.DeviceView(0, (2, 1, 4), (4, 99, 1), np.dtype(np.float32), "ccomp", None, None)
    assert _device._contiguous(v)  # an axis of length 1 may have any stride
    v.strides = (8, 4, 1)
    assert not _device._contiguous(v)


def test_stream_handles():
    like = _device.DeviceView(0, (1,), (1,), np.dtype(np.uint8), "ccomp", None, None)
    assert _device._stream(like, None) == 0  # ccomp's own arrays: the legacy default stream
    assert _device._stream(like, np.int64(5)) == 5

    class TorchStream:
        cuda_stream = 11

    class CupyStream:
        ptr = 12

    assert _device._stream(like, TorchStream()) == 11 and _device._stream(like, CupyStream()) == 12
    with pytest.raises(ValueError, match="stream must be a cudaStream_t handle"):
        _device._stream(like, -1)
    with pytest.raises(TypeError, match="stream must be None, an int handle or a torch/CuPy stream, got bool"):
        _device._stream(like, True)


def test_same_device():
    def on(dev):
        return _device.DeviceView(0, (1,), (1,), np.dtype(np.uint8), "torch", dev, None)

    _device._same_device([on(0), on(None), on(0)], "matmul")
    with pytest.raises(ValueError, match=r"matmul: the arrays are on different GPUs \(cuda:0, cuda:1\)"):
        _device._same_device([on(1), on(0)], "matmul")


def test_on_device_is_cudas():
    assert _device.on_device is cuda.on_device
    assert _device.on_device(CudaArrayLike((1,), "<f4"))
    assert not _device.on_device(np.zeros(1))


@pytest.mark.skipif(cuda.is_available(), reason="a GPU is usable here")
def test_without_gpu_views_of_host_arrays_raise_runtime_error():
    with pytest.raises(RuntimeError, match="needs a GPU"):
        _device.to_device(np.zeros(3))
    with pytest.raises(RuntimeError, match="needs a GPU"):
        _device._ext("this test")

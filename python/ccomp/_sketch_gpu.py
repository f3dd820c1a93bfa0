"""GPU path of ccomp.sketch (kernels/sketch.cu): matmul, grad_tables, grad_input and dequantize on CUDA arrays.

Contract (what ccomp.sketch can rely on)
----------------------------------------
Inputs are CUDA arrays: torch tensors, CuPy arrays, anything with ``__cuda_array_interface__`` (such as
:class:`ccomp._device.DeviceArray`) or a CUDA ``__dlpack__``.  ``x`` and ``grad_y`` are float32 or
float16, shape ``(..., features)``, C-contiguous (a non-contiguous array is rejected, never copied).
A NumPy input is copied to the GPU first.  Outputs are new float32 arrays of the input's kind on its
device (torch in -> torch out, CuPy in -> CuPy out, otherwise :class:`DeviceArray`); with a host
input and a :class:`DeviceSketch`, of the sketch's kind.

The sketch is a :class:`DeviceSketch` (``Sketch.to_device()``: tables and codes stay on the GPU) or a
host :class:`ccomp.sketch.Sketch`, which is then copied to the input's device on every call.  Tables:
float32, float16 or bfloat16 (float64 tables run on the CPU).

Work is queued on a CUDA stream: ``stream=None`` takes the framework's current stream for the data's
device, the legacy default stream otherwise; an int (a ``cudaStream_t``) or an object with
``cuda_stream`` or ``ptr`` selects one.  Nothing waits for the GPU.

Results: float32 arithmetic in a fixed summation order (kernels/sketch.cu), so the same inputs give the
same bits on every run; they agree with the CPU kernels (float64 sums of the reference) within float32
rounding.  ``dequantize`` is exact (float16 / bfloat16 output: rounded to nearest even).

Errors: ``RuntimeError`` when no GPU is usable (checked before any input is touched; never a crash),
``TypeError`` for a wrong dtype or array kind, ``ValueError`` for a bad shape, layout or device.
"""
import sys

import numpy as np

from ._device import _contiguous, _dtype_name, _empty, _ext, _on_stream, _ptr, _same_device, _stream, _view, on_device
from ._device import to_device as _upload
from ._sketch_shape import TABLE_CODES, SketchShape
from ._sketch_shape import bits_of as _bits_of

__all__ = ["DeviceSketch", "matmul", "grad_tables", "grad_input", "dequantize", "to_device"]

_TD = {name: code for name, code in TABLE_CODES.items() if name != "float64"}  # the GPU's table types
_IN = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


class DeviceSketch(SketchShape):
    """A sketch whose ``tables`` ``[out, G, 2**bits]`` and packed ``codes`` ``[out, G, gb]`` (uint8)
    live on a GPU (torch, CuPy or ccomp device arrays, C-contiguous, on one device).

    ``dtype`` names the table type: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (a torch bfloat16
    tensor, or uint16 bit patterns with ``dtype="bfloat16"``).  Build one with ``Sketch.to_device()``;
    :meth:`to_host` gives the :class:`ccomp.sketch.Sketch` back.
    """

    _device_sketch = True  # ccomp.sketch sends calls with a DeviceSketch here

    def __init__(self, tables, codes, in_features, *, dtype=None, info=None):
        ext = _ext("ccomp.sketch.DeviceSketch")
        tv = _view(tables, "tables", ext)
        cv = _view(codes, "codes", ext)
        tag = _dtype_name(tv.dtype)
        if tag == "uint16" and dtype == "bfloat16":
            tag = "bfloat16"
        if tag not in _TD:
            hint = " (float64 tables run on the CPU: sketch.astype('float32'))" if tag == "float64" else ""
            raise TypeError(f"tables on the GPU must be float32, float16 or bfloat16, got {tag}{hint}")
        if dtype is not None and dtype != tag:
            raise TypeError(f"tables are {tag}, not {dtype}")
        if _dtype_name(cv.dtype) != "uint8":
            raise TypeError(f"codes must be uint8 (packed), got {_dtype_name(cv.dtype)}")
        if len(tv.shape) != 3 or len(cv.shape) != 3 or tv.shape[:2] != cv.shape[:2]:
            raise ValueError(f"tables must have shape (out_features, groups, 2**bits) and codes (out_features, groups, "
                             f"bytes), got {tv.shape} and {cv.shape}")
        bits = _bits_of(int(tv.shape[2]))
        out, groups = int(tv.shape[0]), int(tv.shape[1])
        in_features = int(in_features)
        if out < 1 or groups < 1 or in_features < 1 or in_features % groups:
            raise ValueError(f"in_features ({in_features}) must be a positive multiple of groups ({groups}), with at "
                             f"least one row (got {out})")
        gb = ((in_features // groups) * bits + 7) // 8
        if int(cv.shape[2]) != gb:
            raise ValueError(f"codes must have shape ({out}, {groups}, {gb}) for {in_features} inputs in {groups} "
                             f"groups of {bits}-bit codes, got {cv.shape}")
        for v, name in ((tv, "tables"), (cv, "codes")):
            if not _contiguous(v):
                raise ValueError(f"{name} must be C-contiguous on the GPU (strides {v.strides} for shape {v.shape})")
        _same_device([tv, cv], "DeviceSketch")
        self.tables, self.codes = tables, codes
        self.dtype, self.bits, self.in_features = tag, bits, in_features
        self.info = dict(info or {})
        self._views = (tv, cv)

    @property
    def _tables_shape(self):
        return self._views[0].shape

    def __repr__(self):
        return (f"DeviceSketch(out_features={self.out_features}, in_features={self.in_features}, "
                f"groups={self.groups}, bits={self.bits}, dtype={self.dtype!r})")

    def _tuple(self):
        tv, cv = self._views
        return (tv.ptr, _TD[self.dtype], cv.ptr, self.out_features, self.in_features, self.groups, self.bits)

    def to_host(self):
        """The sketch as a host :class:`ccomp.sketch.Sketch` (a copy)."""
        tables = _host(self.tables)
        if self.dtype == "bfloat16":
            tables = tables.view(np.uint16)
        return SketchShape.host_class()(tables, _host(self.codes), self.in_features, dtype=self.dtype, info=self.info)

    def matmul(self, x, stream=None):
        """``x @ W_hat.T`` on the GPU (see :func:`matmul`)."""
        return matmul(x, self, stream=stream)

    def dequantize(self, dtype="float32", stream=None):
        """``W_hat`` ``[out, in]`` as a dense float32 / float16 / bfloat16 device array."""
        return dequantize(self, dtype=dtype, stream=stream)

    def with_tables(self, tables):
        """The same codes with new device tables (e.g. after a training step)."""
        return DeviceSketch(tables, self.codes, self.in_features, info=self.info,
                            dtype="bfloat16" if self.dtype == "bfloat16" else None)


def _host(a):
    """A NumPy copy of a device array (torch, CuPy or DeviceArray); bfloat16 as uint16 bits."""
    if type(a).__module__.split(".")[0] == "torch":
        torch = sys.modules["torch"]
        t = a.detach()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return t.cpu().numpy().copy()
    if hasattr(a, "get"):
        return np.asarray(a.get())
    return np.asarray(a)


def to_device(sketch, like=None):
    """A :class:`DeviceSketch` with the tables and codes of a host sketch, on the device of ``like``
    (a torch tensor or CuPy array: arrays of its kind; None: ccomp's own arrays on the current device)."""
    _ext("ccomp.sketch.Sketch.to_device")
    if sketch.dtype not in _TD:
        raise TypeError(f"tables on the GPU must be float32, float16 or bfloat16, got {sketch.dtype} "
                        f"(sketch.astype('float32') first)")
    tables, codes = sketch.tables, sketch.codes
    kind = None if like is None else type(like).__module__.split(".")[0]
    if kind in ("torch", "cupy") and not on_device(like):
        raise TypeError("like must be an array on the GPU (its kind and device are used)")
    if kind == "torch":
        torch = sys.modules["torch"]
        t = torch.from_numpy(np.ascontiguousarray(tables))
        if sketch.dtype == "bfloat16":
            t = torch.from_numpy(np.ascontiguousarray(tables).view(np.int16)).view(torch.bfloat16)
        dt, dc = t.to(like.device), torch.from_numpy(np.ascontiguousarray(codes)).to(like.device)
    elif kind == "cupy":
        cp = sys.modules["cupy"]
        with cp.cuda.Device(like.device.id):
            dt, dc = cp.asarray(tables), cp.asarray(codes)
    elif like is None or hasattr(like, "__cuda_array_interface__"):
        dt, dc = _upload(tables), _upload(codes)
    else:
        raise TypeError(f"like must be a torch tensor or CuPy array on the GPU, got {type(like).__name__}")
    return DeviceSketch(dt, dc, sketch.in_features, dtype=sketch.dtype, info=sketch.info)


def _sketch_on(sketch, x):
    """(DeviceSketch, sketch tuple): a host Sketch is copied to the device of x."""
    if getattr(sketch, "_device_sketch", False):
        return sketch, sketch._tuple()
    if not isinstance(sketch, SketchShape.host_class()):
        raise TypeError(f"expected a ccomp.sketch.Sketch or DeviceSketch, got {type(sketch).__name__}")
    like = x if type(x).__module__.split(".")[0] in ("torch", "cupy") and on_device(x) else None
    d = to_device(sketch, like)
    return d, d._tuple()


def _input(x, width, name, ext):
    """(view, rows n, leading shape) of a float32/float16 C-contiguous (..., width) device array."""
    v = _view(x, name, ext)
    if not isinstance(v.dtype, np.dtype) or v.dtype not in _IN:
        raise TypeError(f"{name} must be float32 or float16 on the GPU, got {_dtype_name(v.dtype)}")
    if len(v.shape) < 1 or v.shape[-1] != width:
        raise ValueError(f"{name} must have shape (..., {width}), got {v.shape}")
    if not _contiguous(v):
        raise ValueError(f"{name} must be C-contiguous (strides {v.strides} for shape {v.shape}); make it contiguous")
    lead = tuple(int(s) for s in v.shape[:-1])
    return v, int(np.prod(lead, dtype=np.int64)) if lead else 1, lead


def _like(v, d, x):
    """The view whose kind the outputs take: the input's, or the sketch's for a host input."""
    return v if on_device(x) else d._views[0]


def _product(what, a, sketch, stream, forward):
    """``a @ W_hat.T`` (forward) or ``a @ W_hat``: the input ``a`` ``(..., in or out)``, a float32 output of the
    input's kind (the sketch's for a host input)."""
    ext = _ext(f"ccomp.sketch GPU {'matmul' if forward else 'grad_input'}")
    d, sk = _sketch_on(sketch, a)
    n_in, n_out = (d.in_features, d.out_features) if forward else (d.out_features, d.in_features)
    v, n, lead = _input(a, n_in, what, ext)
    _same_device([v, *d._views], "matmul" if forward else "grad_input")
    like = _like(v, d, a)
    handle = _stream(like, stream)
    with _on_stream(like, handle):
        out = _empty(like, lead + (n_out,), np.float32, ext)
    if n:
        (ext.sketch_matmul if forward else ext.sketch_grad_input)(sk, v.ptr, _IN[v.dtype], n, _ptr(out, ext), handle)
    return out


def matmul(x, sketch, *, stream=None):
    """``y = x @ W_hat.T`` on the GPU for ``x`` ``(..., in_features)``: float32 ``(..., out_features)``.

    Up to 8 input rows run the lookup-table GEMV (one warp per W row, the tables in shared memory,
    16-byte code loads), more rows a tiled GEMM that decodes W a tile at a time."""
    return _product("x", x, sketch, stream, True)


def grad_input(grad_y, sketch, *, stream=None):
    """``grad_y @ W_hat`` on the GPU for ``grad_y`` ``(..., out_features)``: float32 ``(..., in_features)``."""
    return _product("grad_y", grad_y, sketch, stream, False)


def grad_tables(x, grad_y, sketch, *, stream=None):
    """The gradient with respect to the tables, float32 ``[out, G, 2**bits]``, from the layer input ``x``
    ``(..., in_features)`` and ``grad_y`` ``(..., out_features)`` (same leading shape), without the dense
    ``[out, in]`` gradient: per (row tile, column segment of a group) a block forms ``grad_y^T x`` a
    64 x 64 tile at a time in registers and adds each entry into the bin of its code."""
    ext = _ext("ccomp.sketch GPU grad_tables")
    d, sk = _sketch_on(sketch, x)
    xv, n, lead = _input(x, d.in_features, "x", ext)
    gv, _, glead = _input(grad_y, d.out_features, "grad_y", ext)
    if lead != glead:
        raise ValueError(f"x and grad_y must have the same leading shape, got {lead} and {glead}")
    _same_device([xv, gv, *d._views], "grad_tables")
    like = _like(xv, d, x)
    handle = _stream(like, stream)
    ws_bytes = ext.sketch_grad_tables_workspace(d.out_features, d.in_features, d.groups, d.bits)
    with _on_stream(like, handle):
        gt = _empty(like, (d.out_features, d.groups, 1 << d.bits), np.float32, ext)
        ws = _empty(like, (ws_bytes,), np.uint8, ext) if ws_bytes else None
    ext.sketch_grad_tables(sk, xv.ptr, _IN[xv.dtype], gv.ptr, _IN[gv.dtype], n, _ptr(gt, ext),
                           _ptr(ws, ext) if ws is not None else 0, ws_bytes, handle)
    return gt


def dequantize(sketch, dtype="float32", *, stream=None):
    """``W_hat`` as a dense ``[out, in]`` device array of ``dtype`` (float32, float16 or bfloat16), for the
    reference path (dense matmul) and tests.  A DeviceSketch gives arrays of its kind; bfloat16 output
    of a CuPy or ccomp sketch is held as uint16 bits."""
    ext = _ext("ccomp.sketch GPU dequantize")
    if dtype not in ("float32", "float16", "bfloat16", np.float32, np.float16):
        raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}")
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if not getattr(sketch, "_device_sketch", False):
        sketch = to_device(sketch)
    like = sketch._views[0]
    handle = _stream(like, stream)
    shape = sketch.shape
    with _on_stream(like, handle):
        if name == "bfloat16" and like.kind == "torch":
            torch = sys.modules["torch"]
            out = torch.empty(shape, dtype=torch.bfloat16, device=like.obj.device)
        else:
            out = _empty(like, shape, np.uint16 if name == "bfloat16" else np.dtype(name), ext)
    ptr = out.data_ptr() if name == "bfloat16" and like.kind == "torch" else _ptr(out, ext)
    ext.sketch_dequantize(sketch._tuple(), ptr, _TD[name], handle)
    return out

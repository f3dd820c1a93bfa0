"""The implementation of :mod:`ccomp.sketch` (sketches on the host): :class:`Sketch`, fitting,
the CPU kernels, the container.

ccomp.sketch is the public face: it documents the area, re-exports the public names of this module
and loads the torch layer (ccomp._sketch_torch) on first use.  The torch layer builds on this module,
not on ccomp.sketch, and this module imports neither of them, so the three form no import cycle.  The
GPU module (ccomp._sketch_gpu) sits below this one too: it is imported inside the functions that hand
it work and never imports this module (it reaches Sketch through ``SketchShape.host_class()``).
"""
import struct
import warnings

import numpy as np

from . import _args, _container, _core
from ._args import choice as _choice
from ._args import first_nonfinite
from ._args import flag as _flag
from ._args import integer as _integer
from ._args import real as _real
from ._args import threads as _threads
from ._core import CorruptStreamError
from ._device import on_device
from ._sketch_shape import TABLE_CODES as _TD
from ._sketch_shape import SketchShape
from ._sketch_shape import bits_of as _bits_of
from ._torchio import torch_io

__all__ = ["Sketch", "fit", "fit_model", "matmul", "grad_tables", "grad_input", "output_error", "save", "load",
           "METHODS", "DTYPES", "kernel_name"]

METHODS = ("rtn", "kmeans", "leanquant")
DTYPES = ("float32", "float16", "bfloat16", "float64")
_NP = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16, "float64": np.float64}
_MAGIC = b"CCSK"
_VERSION = 1
_DAMPING_LIMIT = 1.0  # the largest damping tried, relative to mean(diag(H))


def kernel_name():
    """The float32 kernels this CPU runs: ``"avx512+avx2"`` (the AVX-512 GEMV for
    2- and 4-bit codes, AVX2 for the rest), ``"avx2"`` or ``"scalar"``.

    >>> kernel_name() in ("avx512+avx2", "avx2", "scalar")
    True
    """
    return _core.sketch_kernel_name()


def _is_torch(a):
    return type(a).__module__.startswith("torch") and hasattr(a, "detach")


def _numpy(a, name):
    """A NumPy view of a NumPy array or CPU torch tensor (bfloat16 -> (uint16 bits, 'bfloat16'))."""
    if _is_torch(a):
        t = a.detach()
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}; ccomp.sketch's kernels take CPU tensors (use .cpu())")
        if str(t.dtype) == "torch.bfloat16":
            import torch
            return t.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
        return t.numpy(), None
    a = np.asarray(a)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype.name == "bfloat16":  # ml_dtypes
        return a.view(np.uint16), "bfloat16"
    return a, None


def _on_host(a):
    """A torch tensor on any device as a CPU tensor (fitting and output_error run on the host)."""
    return a.detach().cpu() if _is_torch(a) else a


def _tables(tables, dtype=None):
    """(contiguous table array as the core reads it, dtype name)."""
    a, tag = _numpy(tables, "tables")
    if tag is None:
        if dtype == "bfloat16" and a.dtype == np.uint16:
            tag = "bfloat16"
        elif a.dtype.name in ("float32", "float16", "float64"):
            tag = a.dtype.name
        else:
            raise TypeError(f"tables must be float32, float16, bfloat16 or float64, got {a.dtype}")
    if dtype is not None and dtype != tag:
        raise TypeError(f"tables are {tag}, not {dtype}")
    return np.ascontiguousarray(a), tag


class Sketch(SketchShape, host=True):
    """A sketched weight matrix: ``tables`` ``[out, G, 2**bits]`` and packed ``codes``.

    ``Sketch(tables, codes, in_features=None)``: ``tables`` a float32 /
    float16 / float64 array (or a torch tensor, bfloat16 included; a uint16
    array with ``dtype="bfloat16"``), ``codes`` the packed uint8
    ``[out, G, ceil(n * bits / 8)]``; ``bits`` follows from the table size and
    ``in_features`` defaults to the largest ``G * n`` that fits the code bytes.
    Build one with :func:`fit`, :meth:`from_codes` (one code per weight) or
    :meth:`from_sketchtune`.  Arrays already in the right layout are kept
    without a copy (NumPy's ``asarray`` rule).  ``info`` holds what fitting
    reports (method, damping used, ...).

    >>> import numpy as np
    >>> t = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 16)
    >>> s = Sketch.from_codes(t, np.array([[0, 15, 7, 8]], dtype=np.uint8))
    >>> s.codes                                   # even column in the high nibble
    array([[[ 15, 120]]], dtype=uint8)
    >>> s.dequantize().round(3)
    array([[-1.   ,  1.   , -0.067,  0.067]], dtype=float32)
    """

    def __init__(self, tables, codes, in_features=None, *, dtype=None, info=None):
        t, self.dtype = _tables(tables, dtype)
        c, _ = _numpy(codes, "codes")
        if c.dtype != np.uint8:
            raise TypeError(f"codes must be uint8 (packed), got {c.dtype}")
        if t.ndim != 3 or c.ndim != 3:
            raise ValueError(f"tables must have shape (out_features, groups, 2**bits) and codes (out_features, groups, "
                             f"bytes), got {t.shape} and {c.shape}")
        self.bits = _bits_of(t.shape[2])
        if in_features is None:
            in_features = t.shape[1] * (c.shape[2] * 8 // self.bits)
        self.in_features = _integer("in_features", in_features, 1, 1 << 40)
        self.tables = t
        self.codes = np.ascontiguousarray(c)
        self.info = dict(info or {})
        _core.sketch_check(self.tables, _TD[self.dtype], self.codes, self.in_features, self.bits)

    # ---------------------------------------------------------------- shape (its properties: SketchShape)
    @property
    def _tables_shape(self):
        return self.tables.shape

    @property
    def nbytes(self):
        """Bytes of tables and codes."""
        return int(self.tables.nbytes + self.codes.nbytes)

    @property
    def bits_per_weight(self):
        return 8.0 * self.nbytes / (self.out_features * self.in_features)

    def __repr__(self):
        m = f", {self.info['method']}" if "method" in self.info else ""
        return (f"Sketch(out_features={self.out_features}, in_features={self.in_features}, groups={self.groups}, "
                f"bits={self.bits}, dtype={self.dtype!r}{m})")

    def __eq__(self, other):
        return (isinstance(other, Sketch) and self.shape == other.shape and self.bits == other.bits
                and self.dtype == other.dtype and np.array_equal(self.tables, other.tables)
                and np.array_equal(self.codes, other.codes))

    __hash__ = None

    def _args(self):
        return self.tables, _TD[self.dtype], self.codes, self.in_features, self.bits

    # ---------------------------------------------------------------- values
    def table_values(self):
        """The tables as floats (float64 tables stay float64, the others become float32)."""
        if self.dtype == "bfloat16":
            return (self.tables.astype(np.uint32) << 16).view(np.float32)
        return self.tables.astype(np.float64 if self.dtype == "float64" else np.float32)

    def unpacked_codes(self):
        """One code per weight: uint8 ``[out_features, in_features]``."""
        return _core.sketch_unpack(self.codes, self.in_features, self.bits)

    def dequantize(self, dtype=np.float32, threads=None):
        """``W_hat`` as a dense ``[out_features, in_features]`` array (float32 or float64)."""
        try:
            f64 = np.dtype(dtype) == np.float64
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if not f64 and np.dtype(dtype) != np.float32:
            raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        return _core.sketch_dequantize(*self._args(), f64, _threads(threads))

    def matmul(self, x, threads=None):
        """``x @ W_hat.T`` (see :func:`matmul`)."""
        return matmul(x, self, threads)

    def to_device(self, like=None):
        """The sketch with its tables and codes on a GPU (a ``ccomp._sketch_gpu.DeviceSketch``, which
        :func:`matmul`, :func:`grad_tables` and :func:`grad_input` take); ``like`` (a CUDA torch
        tensor or CuPy array) picks the array kind and device, default ccomp's own device arrays on
        the current device.  Float32, float16 or bfloat16 tables; RuntimeError without a GPU."""
        from . import _sketch_gpu

        return _sketch_gpu.to_device(self, like)

    def astype(self, dtype):
        """The same codes with the tables rounded to ``dtype`` (round to nearest even)."""
        _choice("dtype", dtype, DTYPES)
        v = self.table_values().astype(np.float64)
        return Sketch(_round_tables(v, dtype), self.codes, self.in_features, dtype=dtype, info=self.info)

    def with_tables(self, tables):
        """A sketch with new tables (e.g. after fine-tuning) and the same codes."""
        t, tag = _tables(tables)
        if t.shape != self.tables.shape:
            raise ValueError(f"tables must have shape {self.tables.shape}, got {t.shape}")
        return Sketch(t, self.codes, self.in_features, dtype=tag, info=self.info)

    # ---------------------------------------------------------------- builders
    @classmethod
    def from_codes(cls, tables, codes, *, dtype=None):
        """From tables ``[out, G, 2**b]`` and one code per weight ``[out, in]`` (uint8 or any
        integer type); ValueError names a code outside ``[0, 2**b)``."""
        t, tag = _tables(tables, dtype)
        c, _ = _numpy(codes, "codes")
        if c.ndim != 2 or c.dtype.kind not in "iu":
            raise ValueError(f"codes must be a 2-D integer array (out_features, in_features), got {c.dtype} of "
                             f"shape {c.shape}")
        if t.ndim != 3 or t.shape[0] != c.shape[0]:
            raise ValueError(f"tables must have shape ({c.shape[0]}, groups, 2**bits) for codes of shape {c.shape}, "
                             f"got {t.shape}")
        bits = _bits_of(t.shape[2])
        if c.size and (c.min() < 0 or c.max() >= 1 << bits):
            bad = np.argwhere((c < 0) | (c >= 1 << bits))[0]
            raise ValueError(f"code {c[tuple(bad)]} at {tuple(int(i) for i in bad)} is out of range: {bits}-bit "
                             f"codes are 0 .. {(1 << bits) - 1}")
        packed = _core.sketch_pack(np.ascontiguousarray(c, dtype=np.uint8), t.shape[1], bits)
        return cls(t, packed, c.shape[1], dtype=tag)

    @classmethod
    def from_sketchtune(cls, quant_grid, codes):
        """From SketchTune's released tensors: ``quant_grid`` ``[out, 16]`` or
        ``[out, G, 16]`` and ``codes`` uint8 ``[out, in/2]`` or ``[out, G, in/G/2]``
        (even column in the high nibble).  NumPy arrays or torch tensors.

        >>> import numpy as np
        >>> grid = np.arange(16, dtype=np.float16)[None, :]       # one row, one group
        >>> s = Sketch.from_sketchtune(grid, np.array([[0x1f, 0x80]], dtype=np.uint8))
        >>> s.dequantize()
        array([[ 1., 15.,  8.,  0.]], dtype=float32)
        """
        g, tag = _numpy(quant_grid, "quant_grid")
        c, _ = _numpy(codes, "codes")
        if g.ndim == 2:
            g = g[:, None, :]
        if c.ndim == 2:
            c = c[:, None, :]
        if g.ndim != 3 or g.shape[-1] != 16:
            raise ValueError(f"quant_grid must have shape (out, 16) or (out, G, 16) (4-bit SketchTune), got "
                             f"{np.shape(quant_grid)}")
        if c.ndim != 3 or c.dtype != np.uint8 or c.shape[:2] != g.shape[:2]:
            raise ValueError(f"codes must be uint8 of shape ({g.shape[0]}, {g.shape[1]}, in/G/2) to match quant_grid "
                             f"{tuple(np.shape(quant_grid))}, got {c.dtype} of shape {np.shape(codes)}")
        return cls(g, c, g.shape[1] * c.shape[2] * 2, dtype=tag)

    def to_sketchtune(self, as_torch=False):
        """``(quant_grid [out, G, 16], codes uint8 [out, G, in/G/2])`` in SketchTune's
        layout (4 bits only).  NumPy by default (bfloat16 tables as uint16 bits);
        ``as_torch=True`` gives torch tensors (bfloat16 as torch.bfloat16)."""
        if self.bits != 4 or self.group_size % 2:
            raise ValueError(f"SketchTune's layout holds 4-bit codes of an even group size, this sketch has "
                             f"{self.bits}-bit codes in groups of {self.group_size}")
        grid, codes = self.tables.copy(), self.codes.copy()
        if not as_torch:
            return grid, codes
        import torch
        g = torch.from_numpy(grid)
        if self.dtype == "bfloat16":
            g = torch.from_numpy(grid.view(np.int16)).view(torch.bfloat16)
        return g, torch.from_numpy(codes)

    # ---------------------------------------------------------------- format
    def to_bytes(self):
        """ccomp's container with this one sketch (see :func:`save`)."""
        return _encode([("", self)], kind=0)

    @classmethod
    def from_bytes(cls, data):
        """Inverse of :meth:`to_bytes`; :class:`ccomp.CorruptStreamError` on damaged data."""
        kind, entries = _decode(_buffer(data, "data"))
        if kind != 0:
            raise CorruptStreamError("this container holds a named set of sketches: use ccomp.sketch.load")
        return entries[0][1]


# -------------------------------------------------------------------- kernels


def _input(x, width, name):
    """A C-contiguous float32/float64 2-D view of x [..., width] and the leading shape."""
    a, tag = _numpy(x, name)
    if tag == "bfloat16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64 (float16/bfloat16 are converted), got {a.dtype}")
    if a.ndim < 1 or a.shape[-1] != width:
        raise ValueError(f"{name} must have shape (..., {width}), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got strides {a.strides}); pass np.ascontiguousarray({name})")
    return a.reshape(-1, width), a.shape[:-1]


def _on_gpu(sketch, *arrays):
    """True when the call goes to the GPU: a CUDA input or a sketch on the device."""
    if not isinstance(sketch, Sketch) and not getattr(sketch, "_device_sketch", False):
        raise TypeError(f"sketch must be a ccomp.sketch.Sketch, got {type(sketch).__name__}")
    return getattr(sketch, "_device_sketch", False) or any(on_device(a) for a in arrays)


def _precision(sketch, *arrays):
    """float64 when an input or the tables are float64, else float32; inputs converted to it."""
    f64 = sketch.dtype == "float64" or any(a.dtype == np.float64 for a in arrays)
    dt = np.float64 if f64 else np.float32
    return [a if a.dtype == dt else a.astype(dt) for a in arrays]


@torch_io
def matmul(x, sketch, threads=None):
    """``y = x @ W_hat.T`` for ``x`` of shape ``(..., in_features)``, without building ``W_hat``.

    float32 inputs (and float16/bfloat16 ones, converted) give float32; a
    float64 input or float64 tables give float64.  A few input rows (up to 15
    with AVX-512 and 2- or 4-bit codes, else up to 7) run the lookup-table
    GEMV: per W row and group the table sits in a register and the weights are
    looked up from the codes with vpermps (16 per instruction with AVX-512, 8
    with AVX2) and multiplied with x, never stored.  More rows run a tiled GEMM
    over small decoded tiles of W.

    >>> import numpy as np
    >>> s = fit(np.eye(8, 16, dtype=np.float32), bits=2, method="rtn")
    >>> matmul(np.arange(16, dtype=np.float32), s)
    array([0., 1., 2., 3., 4., 5., 6., 7.], dtype=float32)

    A CUDA ``x`` (float32/float16) or a sketch from :meth:`Sketch.to_device` runs on the GPU
    (``ccomp._sketch_gpu.matmul``; ``threads`` is ignored) and gives a float32 array of the
    input's kind.
    """
    if _on_gpu(sketch, x):
        from . import _sketch_gpu

        return _sketch_gpu.matmul(x, sketch)
    a, lead = _input(x, sketch.in_features, "x")
    (a,) = _precision(sketch, a)
    y = _core.sketch_matmul(a, *sketch._args(), _threads(threads))
    return y.reshape(lead + (sketch.out_features,))


@torch_io
def grad_tables(x, grad_y, sketch, threads=None):
    """The gradient of a loss with respect to the tables, given the layer input ``x``
    ``(..., in_features)`` and ``grad_y`` ``(..., out_features)``: ``[out, G, 2**bits]``,
    entry ``[r, g, k]`` the sum over the columns ``c`` of group ``g`` with code
    ``k`` in row ``r`` of ``(grad_y^T x)[r, c]`` (the dense gradient is never formed).

    >>> import numpy as np
    >>> s = fit(np.eye(2, 4, dtype=np.float32), bits=2, method="rtn")
    >>> grad_tables(np.ones((1, 4), np.float32), np.array([[1.0, 2.0]], np.float32), s)[:, 0]
    array([[3., 0., 0., 1.],
           [6., 0., 0., 2.]], dtype=float32)

    CUDA inputs or a device sketch run on the GPU (``ccomp._sketch_gpu.grad_tables``).
    """
    if _on_gpu(sketch, x, grad_y):
        from . import _sketch_gpu

        return _sketch_gpu.grad_tables(x, grad_y, sketch)
    a, lead = _input(x, sketch.in_features, "x")
    g, glead = _input(grad_y, sketch.out_features, "grad_y")
    if lead != glead:
        raise ValueError(f"x and grad_y must have the same leading shape, got {lead} and {glead}")
    a, g = _precision(sketch, a, g)
    return _core.sketch_grad_tables(a, g, *sketch._args(), _threads(threads))


@torch_io
def grad_input(grad_y, sketch, threads=None):
    """``grad_y @ W_hat`` for ``grad_y`` of shape ``(..., out_features)``: the gradient with
    respect to the layer input.

    >>> import numpy as np
    >>> s = fit(np.eye(2, 4, dtype=np.float32), bits=2, method="rtn")
    >>> grad_input(np.array([1.0, 2.0], np.float32), s)
    array([1., 2., 0., 0.], dtype=float32)

    A CUDA ``grad_y`` or a device sketch runs on the GPU (``ccomp._sketch_gpu.grad_input``).
    """
    if _on_gpu(sketch, grad_y):
        from . import _sketch_gpu

        return _sketch_gpu.grad_input(grad_y, sketch)
    g, lead = _input(grad_y, sketch.out_features, "grad_y")
    (g,) = _precision(sketch, g)
    gx = _core.sketch_grad_input(g, *sketch._args(), _threads(threads))
    return gx.reshape(lead + (sketch.in_features,))


def output_error(W, sketch, X):
    """``||X W^T - X W_hat^T|| / ||X W^T||`` (Frobenius, float64): how well the sketch
    reproduces the layer's outputs on inputs ``X`` ``(..., in_features)``.

    >>> import numpy as np
    >>> W = np.random.default_rng(3).normal(size=(8, 32)).astype(np.float32)
    >>> output_error(W, fit(W, bits=4, method="rtn"), np.eye(32)) < 0.2
    True
    """
    if not isinstance(sketch, Sketch):
        raise TypeError(f"sketch must be a ccomp.sketch.Sketch, got {type(sketch).__name__}")
    W = _weights(_on_host(W)).astype(np.float64)
    if W.shape != sketch.shape:
        raise ValueError(f"W must have the sketch's shape {sketch.shape}, got {W.shape}")
    x, tag = _numpy(_on_host(X), "X")
    if tag == "bfloat16":
        x = (x.astype(np.uint32) << 16).view(np.float32)
    if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
        raise TypeError(f"X must be a float array, got {x.dtype}")
    X = np.asarray(x, dtype=np.float64)
    if X.ndim < 1 or X.shape[-1] != W.shape[1]:
        raise ValueError(f"X must have shape (..., {W.shape[1]}), got {X.shape}")
    X = X.reshape(-1, W.shape[1])
    if X.shape[0] == 0:
        raise ValueError(f"X must hold at least one input row, got shape {np.shape(x)}")
    for name, a in (("W", W), ("X", X)):
        at = first_nonfinite(a)
        if at is not None:
            raise ValueError(f"{name} must be finite, got {a[at]} at {name}{list(at)}")
    # the ratio does not depend on the scale of X: a power of two brings it near 1 exactly (no overflow of
    # the squares for huge inputs, no underflow for tiny ones; the same bits otherwise)
    top = float(np.abs(X).max())
    if top > 0:
        X = np.ldexp(X, -np.frexp(top)[1])
    ref = X @ W.T
    den = np.linalg.norm(ref)
    if den == 0:
        raise ValueError("X @ W.T is zero (X or W is zero): the relative output error is undefined")
    return float(np.linalg.norm(ref - matmul(X, sketch)) / den)


# -------------------------------------------------------------------- fitting


def _round_tables(v, dtype):
    """float64 values -> an array of the table type, rounded to nearest even without double rounding."""
    if dtype == "float64":
        return np.ascontiguousarray(v, dtype=np.float64)
    if dtype in ("float32", "float16"):
        return np.ascontiguousarray(v.astype(_NP[dtype]))
    m, e = np.frexp(v)
    f = np.ldexp(np.rint(m * 256.0) / 256.0, e).astype(np.float32)  # exact: 8 significant bits
    return np.ascontiguousarray((f.view(np.uint32) >> 16).astype(np.uint16))


def _weights(W):
    a, tag = _numpy(W, "W")
    if tag == "bfloat16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    if a.dtype.kind != "f":
        raise TypeError(f"W must be a float array, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"W must be 2-D (out_features, in_features), got shape {a.shape}")
    if a.dtype.itemsize > 4 and a.size:
        big = np.isfinite(a) & (np.abs(a) > np.finfo(np.float32).max)
        if big.any():
            at = tuple(int(i) for i in np.argwhere(big)[0])
            raise ValueError(f"W must fit float32 (sketches are fitted in float32), got {a[at]} at W{list(at)}")
    try:
        return np.array(a, dtype=np.float32, order="C")
    except MemoryError:
        raise _args.too_big("W", a) from None


def _hessian(calibration, hessian, cols):
    if calibration is not None and hessian is not None:
        raise ValueError("give calibration= (layer inputs) or hessian=, not both")
    if hessian is not None:
        H, tag = _numpy(hessian, "hessian")
        if tag == "bfloat16":
            H = (H.astype(np.uint32) << 16).view(np.float32)
        H = np.array(H, dtype=np.float64)
        if H.shape != (cols, cols):
            raise ValueError(f"hessian must have shape ({cols}, {cols}), got {H.shape}")
        if first_nonfinite(H) is not None:
            raise ValueError("hessian has non-finite entries")
        if not np.allclose(H, H.T, rtol=1e-5, atol=1e-8 * max(1.0, float(np.abs(H).max()))):
            raise ValueError("hessian must be symmetric")
        return H
    X, tag = _numpy(calibration, "calibration")
    if tag == "bfloat16":
        X = (X.astype(np.uint32) << 16).view(np.float32)
    X = np.asarray(X)
    if X.dtype.kind != "f":
        raise TypeError(f"calibration must be a float array, got {X.dtype}")
    if X.ndim < 1 or X.shape[-1] != cols:
        raise ValueError(f"calibration inputs must have shape (..., {cols}), got {X.shape}")
    X = X.reshape(-1, cols).astype(np.float64)
    if X.shape[0] == 0:
        raise ValueError("calibration has no rows")
    if first_nonfinite(X) is not None:
        raise ValueError("calibration inputs have non-finite entries")
    return _args.interruptible(lambda: 2.0 * (X.T @ X) / X.shape[0])


def _upper_inverse_cholesky(Hd):
    """U upper triangular with U^T U = Hd^-1, from one Cholesky factorisation:
    with J the reversal, J Hd J = L L^T gives Hd^-1 = (J L^-1 J)^T (J L^-1 J),
    and J L^-1 J is upper triangular with a positive diagonal."""
    L = np.linalg.cholesky(np.ascontiguousarray(Hd[::-1, ::-1]))
    try:
        from scipy.linalg import lapack
        Linv, info = lapack.dtrtri(L, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"dtrtri failed ({info})")
    except ImportError:  # pragma: no cover
        Linv = np.linalg.inv(L)
    return np.ascontiguousarray(np.tril(Linv)[::-1, ::-1])


def _inverse_cholesky(H, damping):
    """(U upper with U^T U = (H + d I)^-1, relative damping used, absolute damping).

    d = damping * mean(diag(H)); when the damped H is not positive definite the
    damping grows tenfold (from at least 1e-6) up to 100% of mean(diag(H))."""
    mean_diag = float(np.mean(np.diag(H)))
    if not mean_diag > 0:
        raise ValueError(f"hessian must have a positive mean diagonal, got {mean_diag}")
    rel, tried = float(damping), []
    while True:
        try:
            U = _args.interruptible(_upper_inverse_cholesky, H + rel * mean_diag * np.eye(H.shape[0]))
            if np.all(np.isfinite(U)) and np.all(np.diag(U) > 0):
                return U, rel, rel * mean_diag
        except np.linalg.LinAlgError:
            pass
        tried.append(rel)
        rel = max(rel * 10.0, 1e-6)
        if rel > _DAMPING_LIMIT * (1 + 1e-9):
            raise ValueError("hessian is not positive definite even with damping "
                             + ", ".join(f"{t:g}" for t in tried)
                             + " x mean(diag(H)); a Hessian 2 X^T X / n of real inputs is positive semi-definite: "
                               "check the hessian (or pass calibration inputs)")


def fit(W, bits=4, groups=1, method=None, *, calibration=None, hessian=None, damping=0.1, exponent=4.0,
        block_size=128, iters=100, dtype="float32", threads=None):
    """Fit a sketch of ``W`` ``(out_features, in_features)`` (NumPy or torch, any float type).

    ``method``:

    - ``"rtn"``: a uniform grid ``min + k (max - min) / (2**bits - 1)`` per
      (row, group), nearest codes.
    - ``"kmeans"``: 1-D k-means of each (row, group)'s weights, Lloyd's
      algorithm from two deterministic starts (the quantiles ``(k + 1/2) / K``
      and the uniform grid; the lower squared error wins), ``iters`` rounds at
      most.
    - ``"leanquant"`` (the default when ``calibration`` or ``hessian`` is
      given, else ``"kmeans"``): LeanQuant (Zhang & Shrivastava, ICLR 2025).
      ``H = 2 X^T X / n`` from the layer inputs ``calibration`` ``(..., in)``
      (or ``hessian``), columns with a zero diagonal are dropped (weights
      zeroed), ``H + d I`` with ``d = damping * mean(diag H)`` (0.1, the value
      of LeanQuant's examples; it grows tenfold while H is not positive
      definite, up to 1; ValueError beyond),
      ``U`` the upper Cholesky factor of its inverse; per-group k-means
      weighted by ``diag(U)**-exponent`` (the loss-error-aware grid;
      LeanQuant recommends exponent 3 or 4), then codes column by column with
      GPTQ error feedback ``err = (w - q) / U[i, i]``,
      ``W[:, i:] -= err U[i, i:]``, in blocks of ``block_size`` columns.
      ``info`` reports the damping used and the dead columns.

    Tables are rounded to ``dtype`` (``"float32"``, ``"float16"``,
    ``"bfloat16"``, ``"float64"``) before the codes are chosen, so the codes fit
    the stored tables.  NaN or infinite weights, ``in_features`` not divisible
    by ``groups`` and a Hessian that damping cannot make positive definite
    raise ValueError.

    >>> import numpy as np
    >>> W = np.random.default_rng(1).normal(size=(16, 64)).astype(np.float32)
    >>> s = fit(W, bits=3, groups=4, method="kmeans", dtype="float16")
    >>> s.tables.shape, s.tables.dtype, s.codes.shape
    ((16, 4, 8), dtype('float16'), (16, 4, 6))
    """
    bits = _integer("bits", bits)
    if bits not in (2, 3, 4):
        raise ValueError(f"bits must be 2, 3 or 4, got {bits!r}")
    groups = _integer("groups", groups, 1, 1 << 40)
    _choice("dtype", dtype, DTYPES)
    if method is None:
        method = "leanquant" if calibration is not None or hessian is not None else "kmeans"
    _choice("method", method, METHODS)
    iters = _integer("iters", iters, 0, (1 << 31) - 1)
    W = _weights(_on_host(W))
    out, cols = W.shape
    if cols % groups:
        raise ValueError(f"in_features ({cols}) must be divisible by groups ({groups})")
    bad = first_nonfinite(W)
    if bad is not None:
        r, c = bad
        raise ValueError(f"weights must be finite, got {W[r, c]} at W[{r}, {c}]")
    nt = _threads(threads)
    td = _TD[dtype]
    info = {"method": method, "bits": bits, "groups": int(groups)}
    if method == "rtn":
        tables, codes = _core.sketch_fit(0, W, int(groups), bits, td, None, 0, nt)
    elif method == "kmeans":
        tables, codes = _core.sketch_fit(1, W, int(groups), bits, td, None, int(iters), nt)
    else:
        if calibration is None and hessian is None:
            raise ValueError("method='leanquant' needs calibration= (the layer inputs, shape (..., "
                             f"{cols})) or hessian= (shape ({cols}, {cols}))")
        damping = _real("damping", damping, 0)
        exponent = _real("exponent", exponent, -1e3, 1e3)
        block_size = _integer("block_size", block_size, 1, 1 << 62)
        H = _hessian(_on_host(calibration), _on_host(hessian), cols)
        dead = np.diag(H) == 0
        H[dead, dead] = 1.0
        W[:, dead] = 0.0
        U, rel, absolute = _inverse_cholesky(H, damping)
        if rel != damping:
            warnings.warn(f"the Hessian needed damping {rel:g} x mean(diag(H)) (asked for {damping:g}) to be "
                          "positive definite", RuntimeWarning, stacklevel=2)
        lw = -float(exponent) * np.log(np.diag(U))
        col_weight = np.maximum(np.exp(lw - lw.max()), 1e-300)
        tables, _ = _core.sketch_fit(1, W, int(groups), bits, td, col_weight, int(iters), nt)
        codes = _core.sketch_gptq(W, np.ascontiguousarray(U, dtype=np.float32), tables, td, int(groups), bits,
                                  min(int(block_size), cols), nt)
        info.update(damping=rel, damping_abs=absolute, exponent=float(exponent), block_size=int(block_size),
                    dead_columns=int(dead.sum()))
    s = Sketch(tables, codes, cols, dtype=dtype, info=info)
    if not np.isfinite(s.table_values()).all():  # e.g. weights beyond float16's 65504
        big = float(np.abs(W).max())
        raise ValueError(f"weights up to {big:g} do not fit tables of dtype {dtype!r} (an entry rounds to "
                         "infinity); use a wider dtype")
    return s


def fit_model(layers, bits=4, groups=1, method=None, *, calibration=None, hessians=None, progress=True, **kw):
    """Fit every weight of ``layers`` (a dict ``name -> W`` or a list of ``W``).

    ``calibration`` / ``hessians``: a dict (same keys) or list (same order) of
    each layer's inputs or Hessian, or None.  ``groups`` may be an int or a
    callable ``groups(name, W) -> int``.  Other keywords go to :func:`fit`.
    ``progress=True`` shows a tqdm bar on stderr.  Returns a dict (or list) of
    :class:`Sketch`.

    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> layers = {"q": rng.normal(size=(8, 32)).astype(np.float32), "k": rng.normal(size=(8, 32)).astype(np.float32)}
    >>> out = fit_model(layers, bits=4, method="rtn", progress=False)
    >>> sorted(out), out["q"].shape
    (['k', 'q'], (8, 32))
    """
    progress = _flag("progress", progress)
    is_dict = isinstance(layers, dict)
    if not is_dict and not isinstance(layers, (list, tuple)):
        raise TypeError(f"layers must be a dict or a list of weight matrices, got {type(layers).__name__}")
    names = list(layers) if is_dict else list(range(len(layers)))

    def pick(src, name, what):
        if src is None:
            return None
        try:
            return src[name]
        except (KeyError, IndexError):
            raise ValueError(f"{what} has no entry for layer {name!r}") from None

    it = names
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(names, desc="fitting sketches", unit="layer")
    out = {}
    for name in it:
        W = layers[name]
        g = groups(name, W) if callable(groups) else groups
        try:
            out[name] = fit(W, bits, g, method, calibration=pick(calibration, name, "calibration"),
                            hessian=pick(hessians, name, "hessians"), **kw)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
    return out if is_dict else [out[n] for n in names]


# -------------------------------------------------------------------- container


def _buffer(data, name):
    """bytes of a bytes-like object; TypeError for anything else (an int would make bytes(n) zeros)."""
    if isinstance(data, (str, int)) or data is None:
        raise TypeError(f"{name} must be bytes-like, got {type(data).__name__}")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, got {type(data).__name__}") from None


def _name_problem(name):
    """Why a layer name cannot be stored in a named container, or None."""
    if name == "":
        return "an empty name"
    if "\x00" in name:
        return f"a NUL character in {name[:40]!r}"
    try:
        nb = name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{name[:40]!r} is not valid Unicode (a lone surrogate)"
    if len(nb) > 0xFFFF:
        return f"{len(nb)} bytes of UTF-8 (at most 65535)"
    return None


def _layer_names(sketches):
    """[(name, Sketch)] of a dict: str keys, and int keys as their decimal form (layer indices); other key
    types are a TypeError, two keys with the same name (1 and "1") or an unstorable name a ValueError."""
    out, seen = [], {}
    for k, v in sketches.items():
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (str, int, np.integer)):
            raise TypeError(f"sketches: layer names must be str (or int), got {type(k).__name__} {k!r}")
        name = k if isinstance(k, str) else str(int(k))
        why = _name_problem(name)
        if why is not None:
            raise ValueError(f"sketches: layer name {k!r} cannot be stored: {why}")
        if name in seen:
            raise ValueError(f"sketches: duplicate layer name {name!r} (keys {seen[name]!r} and {k!r})")
        seen[name] = k
        out.append((name, v))
    return out


def _encode(entries, kind):
    parts = [struct.pack("<BI", kind, len(entries))]
    for name, s in entries:
        if not isinstance(s, Sketch):
            raise TypeError(f"sketches: expected a Sketch for {name!r}, got {type(s).__name__}")
        nb = name.encode("utf-8")
        parts.append(struct.pack("<H", len(nb)) + nb)
        parts.append(struct.pack("<QQQBBH", s.out_features, s.in_features, s.groups, s.bits, _TD[s.dtype], 0))
        parts.append(s.tables.astype(s.tables.dtype.newbyteorder("<")).tobytes())
        parts.append(s.codes.tobytes())
    return _container.frame(_MAGIC, _VERSION, parts)


def _decode(data):
    """(kind, [(name, Sketch)]) of a container; the layout is checked by the C reader (every field before
    it is used, linear in the input), the arrays are views of the checked ranges."""
    kind, layout = _core.sketch_container_parse(data)
    names = {v: k for k, v in _TD.items()}
    entries = []
    for raw, out, cols, groups, bits, td, t_off, c_off in layout:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorruptStreamError(f"invalid sketch container: entry {len(entries)}: the name is not UTF-8 ({e})") \
                from None
        dt = np.dtype(_NP[names[td]]).newbyteorder("<")
        K = 1 << bits
        gb = ((cols // groups) * bits + 7) // 8
        tables = np.frombuffer(data, dt, out * groups * K, t_off).astype(dt.newbyteorder("=")).reshape(out, groups, K)
        codes = np.frombuffer(data, np.uint8, out * groups * gb, c_off).reshape(out, groups, gb).copy()
        entries.append((name, Sketch(tables, codes, cols, dtype=names[td])))
    return kind, entries


def save(path, sketches):
    """Write a :class:`Sketch` or a dict ``name -> Sketch`` to ``path``.

    Container: ``CCSK``, version (u8), kind (u8: 0 one sketch, 1 named), count
    (u32); per entry: name (u16 length + UTF-8), out, in, groups (u64), bits,
    table type (u8: 0 float32, 1 float16, 2 bfloat16, 3 float64), 2 reserved
    bytes, the tables (little-endian) and the packed codes; then the CRC-32 of
    everything before it (u32).  All integers little-endian.

    Layer names are str; int keys (layer indices) are written as their decimal form.  Other key types
    raise TypeError; two keys that give the same name (``1`` and ``"1"``), an empty name, a NUL
    character or more than 65535 bytes of UTF-8 raise ValueError.  :func:`load` refuses a container
    with such names (``CorruptStreamError``).

    >>> import numpy as np, os, tempfile
    >>> s = fit(np.ones((4, 8), np.float32), bits=2, method="rtn")
    >>> path = os.path.join(tempfile.mkdtemp(), "w.ccsk")
    >>> save(path, {"layer0": s})
    >>> load(path)["layer0"] == s
    True
    """
    if isinstance(sketches, Sketch):
        data = _encode([("", sketches)], kind=0)
    elif isinstance(sketches, dict):
        data = _encode(_layer_names(sketches), kind=1)
    else:
        raise TypeError(f"sketches: save takes a Sketch or a dict of them, got {type(sketches).__name__}")
    with open(_args.path("path", path), "wb") as f:
        f.write(data)


def load(path):
    """Read what :func:`save` wrote: a :class:`Sketch` or a dict ``name -> Sketch``;
    :class:`ccomp.CorruptStreamError` on damaged or truncated files."""
    with open(_args.path("path", path), "rb") as f:
        kind, entries = _decode(f.read())
    return entries[0][1] if kind == 0 else dict(entries)

"""torch integration of :mod:`ccomp.sketch` (imported on first use of
``ccomp.sketch.SketchedLinear``, ``ccomp.sketch.SketchMatmul`` or ``ccomp.sketch.sketch_model``).

:class:`SketchedLinear` runs the custom op ``torch.ops.ccomp.sketch_matmul``
(``ccomp._ops_sketch``): on CPU tensors the forward and backward passes are
ccomp's C kernels (float32, or float64 when the input or the tables are
float64, which makes ``torch.autograd.gradcheck`` exact), and
``torch.compile(fullgraph=True)`` traces through it.  On other devices the
layer falls back to a torch gather of the tables and a dense matmul.
"""
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import _core
from . import _ops_sketch
from . import _sketch_host as _host

__all__ = ["SketchMatmul", "SketchedLinear"]


class SketchMatmul:
    """``y = x @ W_hat.T`` with ``W_hat[r, c] = tables[r, c // (in / G), code[r, c]]``: the
    custom op ``torch.ops.ccomp.sketch_matmul`` under the name of the former
    ``autograd.Function``.

    ``SketchMatmul.apply(x, tables, codes, in_features, threads)``: ``x``
    ``[n, in]`` and ``tables`` ``[out, G, 2**bits]`` tensors, ``codes`` the
    packed uint8 tensor of :class:`ccomp.sketch.Sketch`; gradients flow to ``x``
    (:func:`ccomp.sketch.grad_input`) and ``tables``
    (:func:`ccomp.sketch.grad_tables`), never to the codes.

    >>> import torch, numpy as np
    >>> from ccomp import sketch
    >>> W = np.random.default_rng(0).normal(size=(6, 16))
    >>> s = sketch.fit(W, bits=4, groups=2, method="kmeans", dtype="float64")
    >>> tables = torch.tensor(s.tables, requires_grad=True)
    >>> x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    >>> torch.autograd.gradcheck(lambda x, t: SketchMatmul.apply(x, t, torch.from_numpy(s.codes), 16, 1), (x, tables))
    True
    """

    @staticmethod
    def apply(x, tables, codes, in_features, threads=None):
        return _ops_sketch.sketch_matmul(x, tables, codes, int(in_features), threads)


class SketchedLinear(nn.Module):
    """A linear layer ``y = x W_hat^T (+ bias)`` stored as a sketch; ``tables`` is its
    only trainable parameter (the codes and the bias are buffers).

    Build it from a :class:`ccomp.sketch.Sketch` or, with :meth:`from_linear`, by
    fitting an ``nn.Linear``.  :meth:`to_sketch` gives back the (fine-tuned) sketch.

    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> lin = nn.Linear(32, 8)
    >>> x = torch.randn(64, 32)
    >>> layer = SketchedLinear.from_linear(lin, bits=4, groups=2, calibration=x)
    >>> [name for name, p in layer.named_parameters()]
    ['tables']
    >>> with torch.no_grad():
    ...     float((layer(x) - lin(x)).norm() / lin(x).norm()) < 0.1
    True
    >>> layer(x).sum().backward()
    >>> layer.tables.grad.shape
    torch.Size([8, 2, 16])
    """

    def __init__(self, sketch, bias=None, threads=None):
        super().__init__()
        if not isinstance(sketch, _host.Sketch):
            raise TypeError(f"expected a ccomp.sketch.Sketch, got {type(sketch).__name__}")
        t = sketch.tables.copy()
        tables = torch.from_numpy(t.view(np.int16)).view(torch.bfloat16) if sketch.dtype == "bfloat16" \
            else torch.from_numpy(t)
        self.tables = nn.Parameter(tables)
        self.register_buffer("codes", torch.from_numpy(sketch.codes.copy()))
        if bias is not None:
            b = bias.detach().clone() if isinstance(bias, torch.Tensor) else torch.as_tensor(np.asarray(bias))
            if b.shape != (sketch.out_features,):
                raise ValueError(f"bias must have shape ({sketch.out_features},), got {tuple(b.shape)}")
            self.register_buffer("bias", b)
        else:
            self.bias = None
        self.in_features, self.out_features = sketch.in_features, sketch.out_features
        self.groups, self.bits = sketch.groups, sketch.bits
        self.threads = threads
        self.info = dict(sketch.info)
        self._index = None

    @classmethod
    def from_linear(cls, linear, bits=4, groups=1, method=None, *, calibration=None, threads=None, **kw):
        """Fit ``linear.weight`` (see :func:`ccomp.sketch.fit`; ``calibration`` the layer's
        inputs for LeanQuant) and keep ``linear.bias`` as a frozen buffer."""
        if calibration is not None and isinstance(calibration, torch.Tensor):
            calibration = calibration.detach().cpu().float().numpy()
        s = _host.fit(linear.weight.detach().cpu().float().numpy(), bits, groups, method, calibration=calibration,
                      threads=threads, **kw)
        bias = None if linear.bias is None else linear.bias.detach().cpu()
        return cls(s, bias, threads)

    @classmethod
    def _blank(cls, out_features, in_features, groups, bits, dtype="float32", bias_dtype=None, threads=None):
        """A layer of the given layout with zero tables and codes (to load a state dict into)."""
        t = np.zeros((out_features, groups, 1 << bits), _host._NP[dtype])
        gb = ((in_features // groups) * bits + 7) // 8
        s = _host.Sketch(t, np.zeros((out_features, groups, gb), np.uint8), in_features, dtype=dtype)
        bias = None if bias_dtype is None else torch.zeros(out_features, dtype=bias_dtype)
        return cls(s, bias, threads)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, "
                f"bits={self.bits}, bias={self.bias is not None}")

    def dense_weight(self):
        """``W_hat`` as a dense tensor (differentiable with respect to the tables)."""
        if self._index is None or self._index.device != self.tables.device:
            codes = _core.sketch_unpack(self.codes.cpu().numpy(), self.in_features, self.bits).astype(np.int64)
            self._index = torch.from_numpy(codes.reshape(self.out_features, self.groups, -1)).to(self.tables.device)
        return self.tables.gather(2, self._index).reshape(self.out_features, self.in_features)

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input must have shape (..., {self.in_features}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x.device.type == "cpu" and self.tables.device.type == "cpu":
            y = _ops_sketch.sketch_matmul(x2.contiguous(), self.tables, self.codes, self.in_features, self.threads)
        else:
            y = F.linear(x2, self.dense_weight().to(x.dtype))
        y = y.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def to_sketch(self):
        """The current (e.g. fine-tuned) tables with the codes, as a :class:`ccomp.sketch.Sketch`."""
        t = self.tables.detach().cpu()
        if t.dtype == torch.bfloat16:
            return _host.Sketch(t.view(torch.int16).numpy().view(np.uint16).copy(), self.codes.cpu().numpy(),
                                self.in_features, dtype="bfloat16")
        return _host.Sketch(t.numpy().copy(), self.codes.cpu().numpy(), self.in_features)

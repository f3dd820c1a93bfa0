"""torch custom ops of :mod:`ccomp.sketch` (namespace ``ccomp::``), loaded with the torch layer.

- ``torch.ops.ccomp.sketch_matmul(x, tables, codes, in_features, threads=None)``: ``x @ W_hat.T``
  for ``x`` ``[n, in]``; differentiable with respect to ``x`` and ``tables`` (never the codes).
- ``torch.ops.ccomp.sketch_grad_input(grad_y, tables, codes, in_features, threads=None)``:
  ``grad_y @ W_hat``.
- ``torch.ops.ccomp.sketch_grad_tables(x, grad_y, tables, codes, in_features, threads=None)``: the
  gradient with respect to the tables, in the tables' dtype.

``x``, ``grad_y`` and ``tables`` may be float32, float16, bfloat16 or float64 (``tables``
``[out, G, 2**bits]``, ``codes`` the packed uint8 ``[out, G, bytes]`` of :class:`ccomp.sketch.Sketch`).
The arithmetic is float64 when an operand is float64, else float32; ``sketch_matmul`` and
``sketch_grad_input`` return ``torch.promote_types`` of their operands' dtypes.  CPU tensors run the C
kernels; tensors on other devices a torch gather of the tables and a dense matmul.  Each op has a
fake implementation (shapes and dtypes only), so ``torch.compile(fullgraph=True)`` traces through
them, backward included.

>>> import torch, numpy as np
>>> from ccomp import sketch
>>> s = sketch.fit(np.random.default_rng(0).normal(size=(6, 16)), bits=4, groups=2, method="rtn")
>>> t, c = torch.from_numpy(s.tables), torch.from_numpy(s.codes)
>>> x = torch.randn(3, 16, dtype=torch.bfloat16)
>>> y = torch.ops.ccomp.sketch_matmul(x, t, c, 16)
>>> y.dtype, tuple(y.shape)
(torch.float32, (3, 6))
"""
from typing import Optional

import numpy as np
import torch

from . import _core
from ._args import threads as _threads
from ._sketch_shape import bits_of

__all__ = ["sketch_matmul", "sketch_grad_input", "sketch_grad_tables"]

_TD = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_FLOATS = "float32, float16, bfloat16 or float64"


def _check(name, t, width=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _TD:
        raise TypeError(f"{name} must be {_FLOATS}, got {t.dtype}")
    if width is not None and (t.dim() != 2 or t.shape[1] != width):
        raise ValueError(f"{name} must have shape (n, {width}), got {tuple(t.shape)}")


def _layout(tables, codes, in_features):
    """(out, groups, bits) after checking that tables, codes and in_features agree (shape only)."""
    _check("tables", tables)
    if tables.dim() != 3:
        raise ValueError(f"tables must have shape (out_features, groups, 2**bits), got {tuple(tables.shape)}")
    bits = bits_of(int(tables.shape[2]))
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        raise TypeError(f"codes must be a uint8 torch.Tensor, got {getattr(codes, 'dtype', type(codes).__name__)}")
    out, groups = int(tables.shape[0]), int(tables.shape[1])
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"in_features must be a positive int, got {in_features!r}")
    if in_features % groups:
        raise ValueError(f"in_features ({in_features}) must be divisible by the tables' groups ({groups})")
    gb = ((in_features // groups) * bits + 7) // 8
    if tuple(codes.shape) != (out, groups, gb):
        raise ValueError(f"codes must have shape ({out}, {groups}, {gb}) for tables {tuple(tables.shape)} and "
                         f"in_features={in_features}, got {tuple(codes.shape)}")
    return out, groups, bits


def _on_cpu(*ts):
    """True when the C kernels run (every tensor on the CPU); else the torch fallback."""
    return all(t.device.type == "cpu" for t in ts)


def _precision(*ts):
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _host(t, dt):
    """A C-contiguous NumPy array of t in dtype dt (a copy only where needed)."""
    return t.detach().to(dt).contiguous().numpy()


def _host_tables(tables):
    t = tables.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _dense(tables, codes, in_features, bits, dt):
    """W_hat [out, in] in dtype dt on the tables' device (the path of non-CPU tensors)."""
    out, groups = tables.shape[0], tables.shape[1]
    idx = _core.sketch_unpack(codes.detach().cpu().contiguous().numpy(), in_features, bits).astype(np.int64)
    idx = torch.from_numpy(idx.reshape(out, groups, -1)).to(tables.device)
    return tables.detach().to(dt).gather(2, idx).reshape(out, in_features)


@torch.library.custom_op("ccomp::sketch_matmul", mutates_args=())
def sketch_matmul(x: torch.Tensor, tables: torch.Tensor, codes: torch.Tensor, in_features: int,
                  threads: Optional[int] = None) -> torch.Tensor:
    """``x @ W_hat.T`` (see the module's docstring)."""
    _check("x", x, in_features)
    out, _, bits = _layout(tables, codes, in_features)
    dt = _precision(x, tables)
    res = torch.promote_types(x.dtype, tables.dtype)
    if not _on_cpu(x, tables):
        return (x.detach().to(dt) @ _dense(tables, codes, in_features, bits, dt).T).to(res)
    y = _core.sketch_matmul(_host(x, dt), _host_tables(tables), _TD[tables.dtype], codes.contiguous().numpy(),
                            in_features, bits, _threads(threads))
    return torch.from_numpy(y).to(res)


@sketch_matmul.register_fake
def _(x, tables, codes, in_features, threads=None):
    return x.new_empty((x.shape[0], tables.shape[0]), dtype=torch.promote_types(x.dtype, tables.dtype))


@torch.library.custom_op("ccomp::sketch_grad_input", mutates_args=())
def sketch_grad_input(grad_y: torch.Tensor, tables: torch.Tensor, codes: torch.Tensor, in_features: int,
                      threads: Optional[int] = None) -> torch.Tensor:
    """``grad_y @ W_hat`` (see the module's docstring)."""
    out, _, bits = _layout(tables, codes, in_features)
    _check("grad_y", grad_y, out)
    dt = _precision(grad_y, tables)
    res = torch.promote_types(grad_y.dtype, tables.dtype)
    if not _on_cpu(grad_y, tables):
        return (grad_y.detach().to(dt) @ _dense(tables, codes, in_features, bits, dt)).to(res)
    gx = _core.sketch_grad_input(_host(grad_y, dt), _host_tables(tables), _TD[tables.dtype],
                                 codes.contiguous().numpy(), in_features, bits, _threads(threads))
    return torch.from_numpy(gx).to(res)


@sketch_grad_input.register_fake
def _(grad_y, tables, codes, in_features, threads=None):
    return grad_y.new_empty((grad_y.shape[0], in_features), dtype=torch.promote_types(grad_y.dtype, tables.dtype))


@torch.library.custom_op("ccomp::sketch_grad_tables", mutates_args=())
def sketch_grad_tables(x: torch.Tensor, grad_y: torch.Tensor, tables: torch.Tensor, codes: torch.Tensor,
                       in_features: int, threads: Optional[int] = None) -> torch.Tensor:
    """The gradient with respect to ``tables`` (see the module's docstring)."""
    out, groups, bits = _layout(tables, codes, in_features)
    _check("x", x, in_features)
    _check("grad_y", grad_y, out)
    if x.shape[0] != grad_y.shape[0]:
        raise ValueError(f"x and grad_y must have the same number of rows, got {x.shape[0]} and {grad_y.shape[0]}")
    dt = _precision(x, grad_y, tables)
    if not _on_cpu(x, grad_y, tables):
        dense = grad_y.detach().to(dt).T @ x.detach().to(dt)  # [out, in]
        idx = _core.sketch_unpack(codes.detach().cpu().contiguous().numpy(), in_features, bits).astype(np.int64)
        idx = torch.from_numpy(idx.reshape(out, groups, -1)).to(tables.device)
        gt = torch.zeros(tables.shape, dtype=dt, device=tables.device)
        return gt.scatter_add_(2, idx, dense.reshape(out, groups, -1)).to(tables.dtype)
    gt = _core.sketch_grad_tables(_host(x, dt), _host(grad_y, dt), _host_tables(tables), _TD[tables.dtype],
                                  codes.contiguous().numpy(), in_features, bits, _threads(threads))
    return torch.from_numpy(gt).to(tables.dtype)


@sketch_grad_tables.register_fake
def _(x, grad_y, tables, codes, in_features, threads=None):
    return torch.empty_like(tables)


def _setup_context(ctx, inputs, output):
    x, tables, codes, in_features, threads = inputs
    ctx.save_for_backward(x, tables, codes)
    ctx.in_features, ctx.threads = in_features, threads


def _backward(ctx, grad_y):
    x, tables, codes = ctx.saved_tensors
    gx = gt = None
    if ctx.needs_input_grad[0]:
        gx = sketch_grad_input(grad_y, tables, codes, ctx.in_features, ctx.threads).to(x.dtype)
    if ctx.needs_input_grad[1]:
        gt = sketch_grad_tables(x, grad_y, tables, codes, ctx.in_features, ctx.threads)
    return gx, gt, None, None, None


sketch_matmul.register_autograd(_backward, setup_context=_setup_context)

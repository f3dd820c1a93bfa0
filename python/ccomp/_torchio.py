"""Torch tensors in, torch tensors out: the conversions every area module shares.

ccomp's kernels take NumPy arrays on the CPU and torch/CuPy arrays on a GPU.  A
public function decorated with :func:`torch_io` also takes torch tensors of any
float dtype (bfloat16 included) on any device and gives torch tensors back on
the device of its first tensor argument, float results in that tensor's dtype:

- a CPU tensor is detached and handed over as NumPy (bfloat16 widened to
  float32, which is exact; float16 and float32 kept as they are);
- a CUDA tensor stays on its GPU (the GPU paths read it in place); only
  bfloat16 is widened to float32 there, since the kernels read float32/float16;
- NumPy arrays in the result (also inside tuples, lists, dicts and dataclasses)
  become tensors on the input's device; floating ones take the input's dtype
  when it is floating (``cast=False`` keeps the result's own dtype).

Torch is never imported here: a tensor can only be passed in once its user has
imported torch, so ``sys.modules`` is consulted instead.  Autograd is not
tracked through these conversions (the inputs are detached): differentiable
operations are the torch custom ops of ``ccomp.ops``.
"""
import dataclasses
import functools
import inspect
import sys

import numpy as np

__all__ = ["torch_module", "is_tensor", "first_tensor", "to_numpy", "to_torch", "convert_args", "torch_io"]


def torch_module():
    """The torch module when it has been imported, else None (never imports it)."""
    return sys.modules.get("torch")


def is_tensor(x):
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def first_tensor(*values):
    """The first torch tensor among ``values`` (one level into lists and tuples), else None."""
    for v in values:
        if is_tensor(v):
            return v
        if isinstance(v, (list, tuple)):
            for w in v:
                if is_tensor(w):
                    return w
    return None


def to_numpy(t, widen=False, host=False):
    """A torch tensor as what ccomp's kernels take: CPU tensors as NumPy (detached; bfloat16 widened
    to float32), CUDA tensors as they are (bfloat16 widened to float32 on the device).  ``widen=True``
    widens float16 to float32 too, for kernels that read float32/float64 only (exact either way);
    ``host=True`` copies CUDA tensors to NumPy as well, for functions without a GPU path.

    >>> import torch                                               # doctest: +SKIP
    >>> to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype        # doctest: +SKIP
    dtype('float32')
    """
    torch = torch_module()
    t = t.detach()
    if t.dtype == torch.bfloat16 or (widen and t.dtype == torch.float16):
        t = t.float()
    if host and t.device.type != "cpu":
        t = t.cpu()
    if t.device.type == "cpu":
        if t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()
        return t.numpy()
    return t


def to_torch(value, like, cast=True):
    """``value`` with every NumPy array (also inside tuples, lists, dicts, dataclasses) turned into a
    tensor on ``like``'s device; floating results take ``like``'s dtype when it is floating and
    ``cast`` is true.  Tensors already in ``value`` (GPU paths) get the same dtype rule."""
    torch = torch_module()

    def conv(v):
        if isinstance(v, np.ndarray):
            if v.dtype == np.uint16 or not v.dtype.isnative or not v.flags.writeable:
                v = np.array(v, dtype=v.dtype.newbyteorder("=") if not v.dtype.isnative else v.dtype)
            t = torch.from_numpy(np.ascontiguousarray(v) if v.ndim else np.array(v))
            if t.device != like.device:
                t = t.to(like.device)
            return _cast(t)
        if is_tensor(v):
            return _cast(v)
        if isinstance(v, tuple) and not hasattr(v, "_fields"):
            return tuple(conv(w) for w in v)
        if isinstance(v, tuple):  # named tuple
            return type(v)(*(conv(w) for w in v))
        if isinstance(v, list):
            return [conv(w) for w in v]
        if isinstance(v, dict):
            return {k: conv(w) for k, w in v.items()}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.replace(v, **{f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)
                                             if f.init})
        return v

    def _cast(t):
        if cast and t.is_floating_point() and like.is_floating_point() and t.dtype != like.dtype:
            return t.to(like.dtype)
        return t

    return conv(value)


def convert_args(args, kwargs, widen=False, host=False):
    """``(args, kwargs)`` with every torch tensor (also inside lists and tuples) passed through :func:`to_numpy`."""
    def conv(v):
        if is_tensor(v):
            return to_numpy(v, widen, host)
        if isinstance(v, (list, tuple)) and any(is_tensor(w) for w in v):
            return type(v)(conv(w) for w in v) if not hasattr(v, "_fields") else type(v)(*(conv(w) for w in v))
        return v

    return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}


def torch_io(func=None, *, like=None, cast=True, widen=False, host=False, post=None):
    """Decorator: torch tensors in, torch tensors out (see the module's docstring).

    ``like`` names the argument whose device and dtype the results follow (default: the first
    tensor argument); ``cast=False`` keeps the results' own float dtype (e.g. float32 attention
    outputs of float16 caches would otherwise be cast); ``widen=True`` hands float16 tensors over
    as float32 as well and ``host=True`` hands CUDA tensors over as NumPy (see :func:`to_numpy`),
    the results still going back to the device; ``post``, when given, maps the function's result
    before it is turned into tensors (only when tensors came in).

    >>> @torch_io
    ... def double(x):
    ...     return x * 2
    >>> double(np.arange(3)).tolist()          # NumPy in, NumPy out, torch never imported
    [0, 2, 4]
    """
    if func is None:
        return functools.partial(torch_io, like=like, cast=cast, widen=widen, host=host, post=post)
    sig = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if torch_module() is None:
            return func(*args, **kwargs)
        ref = None
        if like is not None:
            bound = sig.bind_partial(*args, **kwargs)
            ref = first_tensor(bound.arguments.get(like))
        if ref is None:
            ref = first_tensor(*args, *kwargs.values())
        if ref is None:
            return func(*args, **kwargs)
        a, kw = convert_args(args, kwargs, widen, host)
        out = func(*a, **kw)
        return to_torch(out if post is None else post(out), ref, cast)

    wrapper.__wrapped_torch_io__ = True
    return wrapper

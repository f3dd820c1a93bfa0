"""Correlation-guided compression of visual and document tokens, and the methods it is compared with.

A page cut into B sub-images of N patch tokens each: ``tokens`` of shape ``[B, N, D]`` (or ``[N, D]``).

>>> import numpy as np
>>> from ccomp import tokens
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((2, 64, 32)).astype(np.float32)
>>> x[1, 8:] = x[1, 7]                       # sub-image 1: 57 copies of one token
>>> c = tokens.correlation_compress(x, cls_attention=np.ones((2, 64)), threshold=0.9, seed=1)
>>> c.density.round(3).tolist(), c.keep.tolist()
([1.0, 0.109], [64, 7])
>>> merged, sizes, source = tokens.tome_merge(x, r=16)
>>> merged.shape, float(sizes.sum(axis=1)[0])
((2, 48, 32), 64.0)

Every method takes its decisions (maxima, arg-maxima, top-k, thresholds) on one
similarity: the cosine of the keys computed in float64 and rounded to float32,
ties to the lower token index. The C core screens all N x N pairs with float32
tiles on all cores without storing the matrix, and recomputes in float64 every
candidate near a decision. docs/tokens.md gives every formula and choice.

CUDA inputs (torch, CuPy, ``__cuda_array_interface__``) run the similarity top-k on the GPU with the
same results bit for bit (ccomp._tokens_gpu says what runs where); without a usable GPU they raise
RuntimeError.

torch tensors (any float dtype, bfloat16 included) give torch tensors back on their device; ToMe,
PruMerge, VisionZip and FastV on tensors are differentiable ``ccomp::`` custom ops
(ccomp._ops_tokens). With torch installed, ``patch_timm``, ``patch_vit``, ``fastv``,
``visionzip_layer`` and ``unpatch`` put ToMe / FastV / VisionZip inside timm and transformers vision
models (ccomp._tokens_torch; loaded on first use, so importing this module never imports torch).
"""
import functools

from . import _tokens_host as _host
from ._tokens_host import (MODES, Compressed, cls_weights, correlation_compress, iqr_bound, kernel_name,  # noqa: F401
                           most_similar, uniforms)
from ._tokens_host import _topk  # noqa: F401  (the tests compare the GPU top-k with it)
from ._torchio import first_tensor as _first_tensor

__all__ = ["correlation_compress", "Compressed", "tome_merge", "prumerge", "visionzip", "fastv_select",
           "most_similar", "cls_weights", "iqr_bound", "uniforms", "kernel_name"]


def _dispatch(host_fn, tensor_args):
    """host_fn, or its torch form (ccomp._ops_tokens, differentiable custom ops) when a tensor argument is a torch
    tensor."""
    import inspect

    sig = inspect.signature(host_fn)

    @functools.wraps(host_fn)
    def fn(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        if _first_tensor(*(bound.arguments.get(a) for a in tensor_args)) is not None:
            from . import _ops_tokens
            return getattr(_ops_tokens, host_fn.__name__)(*args, **kwargs)
        return host_fn(*args, **kwargs)

    return fn


tome_merge = _dispatch(_host.tome_merge, ("tokens", "metric", "sizes"))
prumerge = _dispatch(_host.prumerge, ("tokens", "cls_attention", "keys"))
visionzip = _dispatch(_host.visionzip, ("tokens", "cls_attention", "keys"))
fastv_select = _dispatch(_host.fastv_select, ("tokens", "attention"))

# The model patchers (torch) load on first use, so that importing ccomp.tokens never imports torch.
_TORCH = ("patch_timm", "patch_vit", "fastv", "visionzip_layer", "unpatch", "TokenPatch", "DecoderFastV", "ToMeMerge",
          "FastVSelect", "VisionZipSelect")


def __getattr__(name):
    if name in _TORCH:
        try:
            from . import _tokens_torch
        except ImportError as e:  # pragma: no cover
            raise ImportError(f"ccomp.tokens.{name} needs torch ({e})") from None
        return getattr(_tokens_torch, name)
    raise AttributeError(f"module 'ccomp.tokens' has no attribute {name!r}")

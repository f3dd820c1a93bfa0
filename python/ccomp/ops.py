"""ccomp's torch custom ops, registered with ``torch.library`` under the namespace ``ccomp``.

Importing this module (it imports torch) registers every op; the area modules register theirs on
first use with torch tensors, so importing ccomp alone never imports torch.  Each op has a fake
(meta) implementation, so ``torch.compile(fullgraph=True)`` traces models that call them without a
graph break; the differentiable ones have autograd formulas.

- ``ccomp::kv_quantize``, ``kv_dequantize``, ``kv_attention`` (:mod:`ccomp._ops_kv`): a KV method's
  packed arrays as tensors, and decode attention over packed segments plus a dense tail (not
  differentiable: quantization has no useful gradient).
- ``ccomp::sketch_matmul`` (autograd to the input and the tables), ``sketch_grad_input``,
  ``sketch_grad_tables`` (:mod:`ccomp._ops_sketch`): the lookup-table matmul of SketchTune sketches.
- ``ccomp::tome_match``, ``prumerge_match``, ``visionzip_match``, ``fastv_topk`` (the decisions, no
  gradient) and ``ccomp::token_merge`` (the weighted sums, autograd to the tokens, sizes and
  weights) (:mod:`ccomp._ops_tokens`).

>>> import torch, ccomp.ops
>>> sorted(n for n in ccomp.ops.OPS)[:3]
['fastv_topk', 'kv_attention', 'kv_dequantize']
>>> all(hasattr(torch.ops.ccomp, n) for n in ccomp.ops.OPS)
True
"""
from . import _ops_kv, _ops_sketch, _ops_tokens  # noqa: F401  (registers the ops)

__all__ = ["OPS"]

# every op this package registers, by name under torch.ops.ccomp
OPS = ("kv_quantize", "kv_dequantize", "kv_attention", "sketch_matmul", "sketch_grad_input", "sketch_grad_tables",
       "token_merge", "tome_match", "prumerge_match", "visionzip_match", "fastv_topk")

"""SketchTune sketches: weight matrices as fine-tunable lookup tables.

A sketch of a weight matrix ``W`` of shape ``(out_features, in_features)``
splits every row into ``groups`` contiguous column groups; each group has a
table of ``2**bits`` values and every weight becomes a ``bits``-bit code into
its group's table (SketchTune, Zhang et al., ICML 2025).  Fine-tuning trains
only the tables; the codes stay fixed.

>>> import numpy as np
>>> from ccomp import sketch
>>> rng = np.random.default_rng(0)
>>> W = rng.normal(size=(64, 256)).astype(np.float32)
>>> X = rng.normal(size=(512, 256)).astype(np.float32)      # calibration inputs
>>> s = sketch.fit(W, bits=4, groups=2, calibration=X)       # LeanQuant
>>> s
Sketch(out_features=64, in_features=256, groups=2, bits=4, dtype='float32', leanquant)
>>> s.tables.shape, s.codes.shape                            # [out, G, 16], [out, G, in/G/2]
((64, 2, 16), (64, 2, 64))
>>> y = sketch.matmul(X[:3], s)                              # X W_hat^T, W_hat never built
>>> bool(np.allclose(y, X[:3] @ s.dequantize().T, atol=1e-4))
True
>>> err = {m: sketch.output_error(W, sketch.fit(W, bits=4, groups=2, method=m, calibration=X), X)
...        for m in ("rtn", "kmeans", "leanquant")}
>>> err["leanquant"] < err["kmeans"] < err["rtn"]
True

Formats.  ``tables`` are float32, float16, bfloat16 or float64 (bfloat16 is
held as its uint16 bit patterns; :meth:`Sketch.table_values` gives floats).
``codes`` are packed per (row, group) as an MSB-first bit stream padded to
whole bytes, ``ceil(n * bits / 8)`` bytes for ``n = in_features / groups``
codes: for 4 bits the even column is the HIGH nibble and the odd column the
low one, byte for byte SketchTune's released layout (uint8
``[out, G, in / G / 2]``, see :meth:`Sketch.from_sketchtune`); for 2 bits a
byte holds columns ``4p .. 4p+3`` in bits 7-6, 5-4, 3-2, 1-0; for 3 bits
three bytes hold 8 codes, the first in bits 7-5.  :func:`save` / :func:`load`
write ccomp's own container (magic ``CCSK``, version, CRC-32).

Kernels (C, AVX2 with run-time dispatch, threads over output rows, the same
bits for any thread count): :func:`matmul` (a lookup-table GEMV for a few
input rows, a tiled GEMM for more), :func:`grad_tables` and
:func:`grad_input` (the backward pass, without the dense ``[out, in]``
gradient).  With torch installed, :class:`SketchedLinear` is an ``nn.Module``
whose only trainable parameter is the tables, running the torch custom op
``torch.ops.ccomp.sketch_matmul`` (``torch.compile(fullgraph=True)`` traces
through it); torch tensors given to :func:`matmul`, :func:`grad_tables` and
:func:`grad_input` come back as torch tensors.  :func:`sketch_model` replaces a
whole model's ``nn.Linear`` layers (transformers, timm) by sketches fitted on
real calibration activations, and :func:`save_sketched` / :func:`load_sketched`
write and read the result (safetensors and a JSON config).

On the GPU (CUDA builds): :meth:`Sketch.to_device` keeps the tables and codes on
a GPU, and :func:`matmul`, :func:`grad_tables` and :func:`grad_input` run
kernels/sketch.cu when an input is a CUDA array (torch, CuPy) or the sketch is
on the device (float32 results; see ``ccomp._sketch_gpu``).  Without a usable
GPU they raise RuntimeError.
"""
# The implementation lives in ccomp._sketch_host, below this module and below the torch layer that this
# module loads lazily: ccomp._sketch_torch imports ccomp._sketch_host, never ccomp.sketch (no import cycle).
from ._sketch_host import (DTYPES, METHODS, Sketch, fit, fit_model, grad_input, grad_tables, kernel_name, load, matmul,
                           output_error, save)

# The torch layer (SketchedLinear, SketchMatmul, model-level sketching) is loaded on first use, so that importing
# ccomp never needs torch.
__all__ = ["Sketch", "fit", "fit_model", "matmul", "grad_tables", "grad_input", "output_error", "save", "load",
           "METHODS", "DTYPES", "kernel_name"]

_TORCH = {"SketchedLinear": "_sketch_torch", "SketchMatmul": "_sketch_torch", "sketch_model": "_sketch_model",
          "save_sketched": "_sketch_model", "load_sketched": "_sketch_model", "sketched_layers": "_sketch_model"}


def __getattr__(name):
    if name in _TORCH:
        import importlib
        try:
            module = importlib.import_module(f"ccomp.{_TORCH[name]}")
        except ImportError as e:  # pragma: no cover
            raise ImportError(f"ccomp.sketch.{name} needs torch ({e})") from None
        return getattr(module, name)
    raise AttributeError(f"module 'ccomp.sketch' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_TORCH))

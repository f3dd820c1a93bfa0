"""ccomp: a compression toolkit for machine-learning research.

A C (and CUDA) core under a thin Python module.  Areas:

- :mod:`ccomp.zipfit` -- ZIP-FIT data selection by normalised compression distance.
- :mod:`ccomp.ac` -- arithmetic coding for neural (LLM-based) lossless compression.
- :mod:`ccomp.kv` -- KV-cache quantization and attention over the compressed cache.
- :mod:`ccomp.sketch` -- SketchTune sketches: fine-tunable lookup tables + packed codes, LUT matmul, LeanQuant fitting.
- :mod:`ccomp.tokens` -- correlation-guided compression of visual/document tokens; ToMe, PruMerge, VisionZip, FastV.
- :mod:`ccomp.datasets` -- the real sample data bundled with the package (corpus texts, HumanEval, PDFs).

Every heavy call releases the GIL, takes ``threads=`` (default: all cores) and
gives bit-identical results whatever the thread count.
"""
from ._core import CorruptStreamError
from ._core import __version__
from . import ac
from . import cuda
from . import datasets
from . import kv
from . import sketch
from . import tokens
from . import zipfit

__all__ = ["CorruptStreamError", "ac", "build_info", "cuda", "datasets", "kv", "sketch", "tokens", "zipfit", "__version__"]


def build_info():
    """Describe this build of ccomp.

    Returns a dict with ``version``; the zlib, lz4 and zstd versions linked at
    run time (``zlib``, ``lz4``, ``zstd``) and compiled against (``*_compiled``);
    ``gzip_engine`` (whether gzip sizes come from the exact deflate model or from
    zlib itself); ``cpu_features`` detected at run time and ``cpu_count``;
    ``cuda`` (True when the CUDA extension was built) with ``cuda_runtime``
    (e.g. "13.0"), ``cuda_devices``, ``cuda_emulated`` (True when the device is
    ccomp's SIMT emulator, a test build) and ``cuda_reason`` (why no device is usable).
    """
    from . import _core

    info = dict(_core.build_info())
    info.update(cuda.info())
    return info

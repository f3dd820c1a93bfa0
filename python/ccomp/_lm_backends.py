"""The model backends of :class:`ccomp.ac.LMCompressor`: transformers and llama-cpp-python.

A backend tokenizes, detokenizes, says who it is (:meth:`Backend.identity`:
what the container records) and opens *sessions*: a session holds the KV
cache of one group of chunks and evaluates one token per chunk per step,
``step(tokens (B,) int64) -> logits (B, V) float32``.  The shared loop in
``_lm.py`` calls sessions from worker threads, one session per thread.

What a backend must guarantee: the logits of a step depend only on the tokens
fed to the session since its ``reset`` and on the batch shape, never on the
thread count or on what other sessions do.  Both backends reach this by running
each step's kernels on the calling thread only (torch with one intra-op
thread; llama.cpp with one thread per context unless its kernels are known to
split work without changing results).
"""
import contextlib
import hashlib
import importlib.util
import json
import os
import weakref

import numpy as np

from . import _args
from ._lm_base import Backend

__all__ = ["Backend", "TransformersBackend", "open_backend", "BACKENDS"]

BACKENDS = ("auto", "transformers", "llama.cpp")
_WEIGHT_HASHES = weakref.WeakKeyDictionary()  # model -> (what its tensors were, SHA-256)


# ------------------------------------------------------------ transformers

def _preallocated_cache(model, steps):
    """A transformers cache whose layers hold buffers for ``steps`` tokens and return views of the filled part
    (the default DynamicCache concatenates the whole past at every step: quadratic copying); None where the
    model's cache is not all plain attention layers (sliding windows, linear attention): it then makes its own."""
    try:
        from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 (another transformers, another cache API: the model's own cache)
        return None
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None

    class Preallocated(DynamicLayer):
        def lazy_initialization(self, key_states, value_states):
            B, H, _, D = key_states.shape
            self.device = key_states.device
            self.kbuf = key_states.new_empty((B, H, steps, D))
            self.vbuf = value_states.new_empty((B, H, steps, value_states.shape[3]))
            self.n = 0
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            t = key_states.shape[2]
            if self.n + t > steps or key_states.shape[0] != self.kbuf.shape[0]:
                raise RuntimeError("the cache was sized for another group")
            self.kbuf[:, :, self.n:self.n + t] = key_states
            self.vbuf[:, :, self.n:self.n + t] = value_states
            self.n += t
            self.keys, self.values = self.kbuf[:, :, :self.n], self.vbuf[:, :, :self.n]
            return self.keys, self.values

    return Cache(layers=[Preallocated() for _ in layers])


class _TorchSession:
    def __init__(self, backend):
        self.b = backend
        self.cache = None

    def reset(self, batch, steps):
        self.cache = _preallocated_cache(self.b.model, steps)

    def step(self, tokens):
        torch = self.b.torch
        x = torch.from_numpy(tokens).view(-1, 1).to(self.b.device)
        kw = {} if self.cache is None else {self.b.cache_kw: self.cache}
        with torch.inference_mode():
            out = self.b.model(input_ids=x, use_cache=True, **kw)
        self.cache = out.cache if self.b.cache_kw == "cache" else out.past_key_values
        return np.ascontiguousarray(out.logits[:, -1, :].float().cpu().numpy())

    def close(self):
        self.cache = None


class TransformersBackend(Backend):
    """Any transformers causal LM with its tokenizer (fast or slow)."""

    name = "transformers"
    thread_invariant = False

    def __init__(self, model, tokenizer, model_name=None):
        import inspect

        import torch
        import transformers

        if tokenizer is None:
            raise TypeError("a transformers model needs its tokenizer: LMCompressor(model, tokenizer)")
        if not callable(getattr(tokenizer, "decode", None)):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        self.torch = torch
        self.model = model
        self.tok = tokenizer
        self.version = f"transformers {transformers.__version__}, torch {torch.__version__}"
        cfg = model.config
        self.model_name = (model_name or os.path.basename(os.path.normpath(getattr(cfg, "_name_or_path", "") or ""))
                           or type(model).__name__)
        out = model.get_output_embeddings()
        self.vocab = int(out.weight.shape[0]) if out is not None else int(cfg.vocab_size)
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.device = next(model.parameters()).device
        self.dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        self.max_context = int(getattr(cfg, "max_position_embeddings", 0) or 1 << 20)
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.start_token = int(start) if start is not None else 0
        self._fast = getattr(tokenizer, "backend_tokenizer", None)

    def model_sha256(self):
        """SHA-256 of the state dict (names, dtypes, shapes and bytes); kept per model object and recomputed
        when a tensor was replaced or changed in place (torch counts in-place writes)."""
        sd = self.model.state_dict()
        key = tuple((k, v.data_ptr(), v._version, tuple(v.shape), str(v.dtype)) for k, v in sd.items())
        seen = _WEIGHT_HASHES.get(self.model)
        if seen is None or seen[0] != key:
            h = hashlib.sha256()
            for k in sorted(sd):
                v = sd[k].detach()
                h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
                h.update(v.cpu().contiguous().reshape(-1).view(self.torch.uint8).numpy().tobytes())
            seen = (key, h.hexdigest())
            _WEIGHT_HASHES[self.model] = seen
        return seen[1]

    def tokenizer_sha256(self):
        if self._fast is not None:
            spec = self._fast.to_str()
        else:
            spec = json.dumps([type(self.tok).__name__, sorted(self.tok.get_vocab().items())])
        return hashlib.sha256(spec.encode("utf-8")).hexdigest()

    def tokenize(self, data):
        text = data.decode("utf-8")
        if self._fast is not None:
            return self._fast.encode(text, add_special_tokens=False).ids
        return self.tok.encode(text, add_special_tokens=False)

    def detokenize(self, ids):
        if self._fast is not None:
            text = self._fast.decode(ids, skip_special_tokens=False)
        else:
            text = self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text.encode("utf-8", errors="surrogatepass")

    def session(self, threads):
        return _TorchSession(self)

    @contextlib.contextmanager
    def running(self):
        """One intra-op thread (results independent of the core count) and eval mode, restored after."""
        torch = self.torch
        threads, training = torch.get_num_threads(), self.model.training
        torch.set_num_threads(1)
        self.model.eval()
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            self.model.train(training)


# -------------------------------------------------------------- resolution

def _is_gguf(path):
    return str(path).lower().endswith(".gguf")


def _llama_available():
    return importlib.util.find_spec("llama_cpp") is not None


def _transformers_from_path(path, name):
    from .models import _require, smollm2

    if name == "smollm2":
        model, tok = smollm2()
        return TransformersBackend(model, tok, model_name="SmolLM2-135M-Instruct.Q4_1.gguf")
    _require("transformers", "torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _is_gguf(path):
        folder, file = os.path.split(os.path.abspath(path))
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        return TransformersBackend(model, tok, model_name=file)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return TransformersBackend(model, tok, model_name=os.path.basename(os.path.normpath(path)))


def open_backend(model, tokenizer=None, backend="auto"):
    """The backend for ``model`` (see :class:`ccomp.ac.LMCompressor`)."""
    backend = _args.choice("backend", backend, BACKENDS)
    if isinstance(model, Backend):
        return model
    if not isinstance(model, (str, os.PathLike)):
        if not (hasattr(model, "config") and callable(model)):
            raise TypeError("model must be 'smollm2', a GGUF file, a transformers model folder or a transformers "
                            f"causal-LM object, got {type(model).__name__}")
        if backend == "llama.cpp":
            raise ValueError("backend='llama.cpp' reads a GGUF file: pass its path as model")
        return TransformersBackend(model, tokenizer)
    path = os.fspath(model)
    if tokenizer is not None:
        raise ValueError("tokenizer is only given with a transformers model object; a file or folder brings its own")
    name = None
    if path == "smollm2":
        from .models import smollm2_gguf

        folder, file = smollm2_gguf()
        path, name = os.path.join(folder, file), "smollm2"
    elif _is_gguf(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no GGUF file at {path!r}")
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"model must be 'smollm2', a GGUF file or a transformers model folder; "
                                f"{path!r} is none of them")
    if backend == "auto":
        backend = "llama.cpp" if _is_gguf(path) and _llama_available() else "transformers"
    if backend == "llama.cpp":
        if not _is_gguf(path):
            raise ValueError(f"backend='llama.cpp' reads a GGUF file, got {path!r}")
        from ._lm_llama import LlamaCppBackend

        return LlamaCppBackend(path)
    return _transformers_from_path(path, name)

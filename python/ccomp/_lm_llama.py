"""The llama.cpp backend of :class:`ccomp.ac.LMCompressor` (PyPI ``llama-cpp-python``, its low-level API).

A GGUF file is evaluated by llama.cpp as it is (SmolLM2's Q4_1 weights stay
quantized).  A session is one llama.cpp context holding ``batch`` sequences,
each with its own KV cache (``kv_unified=False``); a step is one
``llama_decode`` of ``batch`` tokens, one per sequence, all with logits.

Determinism: llama.cpp's CPU kernels split a matrix product by output rows and
columns, never along the reduction, so a step's logits do not depend on the
thread count (``tests/test_lm.py`` checks it); they do depend on the batch
shape and on the context's settings, which are therefore functions of the
group alone: context size ``batch * steps`` (rounded up to 256 per sequence),
``n_batch = n_ubatch = batch``, no flash attention, F32 K/V cache, no
repacked "extra" weight buffers (their AMX path crashes in the llama.cpp that
llama-cpp-python 0.3.36 bundles, and they make results depend on the CPU
model).
"""
import ctypes
import hashlib
import threading

import numpy as np

from ._lm_base import Backend, _sha256_file

__all__ = ["LlamaCppBackend"]

_INIT = threading.Lock()
_STATE = {}
_CTX_PAD = 256


def _lib():
    """llama_cpp's ctypes module, initialised once, with llama.cpp's log silenced."""
    with _INIT:
        if "lc" not in _STATE:
            try:
                import llama_cpp as lc
            except ImportError as e:
                raise ModuleNotFoundError("the llama.cpp backend needs llama-cpp-python: pip install "
                                          f"llama-cpp-python (it builds llama.cpp, about 5 minutes) [{e}]") from None
            lc.llama_backend_init()
            quiet = lc.llama_log_callback(lambda level, text, user: None)
            lc.llama_log_set(quiet, ctypes.c_void_p())
            _STATE["quiet"] = quiet  # the callback must outlive every call into llama.cpp
            _STATE["lc"] = lc
        return _STATE["lc"]


class _LlamaSession:
    def __init__(self, backend, threads):
        self.b = backend
        self.threads = threads
        self.ctx = None
        self.batch = None
        self.shape = None

    def _free(self):
        lc = self.b.lc
        if self.batch is not None:
            lc.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            lc.llama_free(self.ctx)
            self.ctx = None
        self.shape = None

    def reset(self, batch, steps):
        lc = self.b.lc
        self._free()
        per_seq = -(-max(steps, 1) // _CTX_PAD) * _CTX_PAD
        p = lc.llama_context_default_params()
        p.n_ctx = batch * per_seq
        p.n_batch = p.n_ubatch = batch
        p.n_seq_max = batch
        p.kv_unified = False
        p.n_threads = p.n_threads_batch = self.threads
        # Flash attention over an F16 cache is llama.cpp's default; on a CPU, one query against thousands of
        # cached tokens runs 2-3x faster without it, over an F32 cache (measured at position 3072)
        p.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.type_k = p.type_v = 0  # GGML_TYPE_F32
        p.no_perf = True
        p.embeddings = False
        ctx = lc.llama_init_from_model(self.b.model, p)
        if not ctx:
            raise MemoryError(f"llama.cpp could not create a context for {batch} sequences of {per_seq} tokens")
        self.ctx = ctx
        self.batch = lc.llama_batch_init(batch, 0, 1)
        self.shape = (batch, per_seq)
        self.pos = 0
        b = self.batch
        for i in range(batch):
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = i
            b.logits[i] = 1

    def step(self, tokens):
        lc = self.b.lc
        n = len(tokens)
        if self.shape is None or n != self.shape[0] or self.pos >= self.shape[1]:
            raise RuntimeError("llama.cpp session used beyond the shape it was reset to")
        b = self.batch
        b.n_tokens = n
        for i, t in enumerate(tokens.tolist()):
            b.token[i] = t
            b.pos[i] = self.pos
        rc = lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (status {rc})")
        self.pos += 1
        return np.ctypeslib.as_array(lc.llama_get_logits(self.ctx), shape=(n, self.b.vocab)).copy()

    def close(self):
        self._free()


class LlamaCppBackend(Backend):
    """A GGUF model evaluated by llama.cpp through llama-cpp-python (CPU)."""

    name = "llama.cpp"
    thread_invariant = True

    def __init__(self, path):
        import os

        lc = self.lc = _lib()
        self.path = os.path.abspath(path)
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_extra_bufts = False
        model = lc.llama_model_load_from_file(self.path.encode(), mp)
        if not model:
            raise ValueError(f"llama.cpp could not load {path!r} (not a GGUF model it supports)")
        self.model = model
        self._vocab = lc.llama_model_get_vocab(model)
        self.vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self.version = f"llama-cpp-python {lc.__version__}"
        self.model_name = os.path.basename(self.path)
        self.max_context = int(lc.llama_model_n_ctx_train(model)) or 1 << 20
        start = lc.llama_vocab_bos(self._vocab)
        if start < 0:
            start = lc.llama_vocab_eos(self._vocab)
        self.start_token = int(start) if start >= 0 else 0
        self.dtype = lc.llama_ftype_name(lc.llama_model_ftype(model)).decode("utf-8", "replace")
        self._file_hash = None
        self._tok_hash = None

    def __del__(self):
        model = getattr(self, "model", None)
        if model:
            self.lc.llama_model_free(model)
            self.model = None

    def model_sha256(self):
        if self._file_hash is None:
            self._file_hash = _sha256_file(self.path)
        return self._file_hash

    def tokenizer_sha256(self):
        """SHA-256 of every token's text and type, and the start token."""
        if self._tok_hash is None:
            lc = self.lc
            h = hashlib.sha256(f"{lc.llama_vocab_type(self._vocab)}|{self.start_token}|".encode())
            for i in range(self.vocab):
                h.update(lc.llama_vocab_get_text(self._vocab, i) or b"")
                h.update(f"|{lc.llama_vocab_get_attr(self._vocab, i)}\n".encode())
            self._tok_hash = h.hexdigest()
        return self._tok_hash

    def tokenize(self, data):
        lc = self.lc
        cap = len(data) + 16
        while True:
            buf = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, False, False)
            if n >= 0:
                return list(buf[:n])
            if -n <= cap:
                raise RuntimeError(f"llama_tokenize failed (status {n})")
            cap = -n

    def detokenize(self, ids):
        lc = self.lc
        if not ids:
            return b""
        arr = (lc.llama_token * len(ids))(*ids)
        cap = 16 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = lc.llama_detokenize(self._vocab, arr, len(ids), buf, cap, False, True)
            if n >= 0:
                return buf.raw[:n]
            if -n <= cap:
                raise RuntimeError(f"llama_detokenize failed (status {n})")
            cap = -n

    def session(self, threads):
        return _LlamaSession(self, threads)

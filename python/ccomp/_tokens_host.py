"""The NumPy implementation of :mod:`ccomp.tokens` (below the torch layers, which import it; see ccomp.tokens)."""
import math
from dataclasses import dataclass

import numpy as np

from . import _core
from ._args import choice as _choice
from ._args import first_nonfinite as _first_nonfinite
from ._args import flag as _flag
from ._args import integer as _integer
from ._args import interruptible as _interruptible
from ._args import real as _real
from ._args import threads as _threads
from ._device import on_device as _on_device
from ._torchio import torch_io as _torch_io

__all__ = ["correlation_compress", "Compressed", "tome_merge", "prumerge", "visionzip", "fastv_select",
           "most_similar", "cls_weights", "iqr_bound", "uniforms", "kernel_name"]

MODES = ("sample", "topk", "outliers")
_M64 = (1 << 64) - 1


def kernel_name():
    """The float32 screening kernel this CPU runs: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    return _core.tokens_kernel_name()


# ------------------------------------------------------------------ argument checks

def _on_gpu(a):
    return a is not None and not isinstance(a, np.ndarray) and _on_device(a)


def _float_array(a, name):
    if _on_gpu(a):
        from . import _tokens_gpu
        a = _tokens_gpu.to_host(a, name)
    a = np.asarray(a)
    if a.dtype.kind != "f" or a.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"{name} must be float16, float32 or float64, got {a.dtype}")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _finite(a, name):
    """A clear error at the first NaN or infinity of a."""
    bad = _first_nonfinite(a, name)
    if bad is not None:
        raise ValueError(f"{name} has a NaN or infinite value at index {bad}")


def _tokens3(tokens, name="tokens"):
    """(tokens as [B, N, D], whether the input was 2-D)."""
    x = _float_array(tokens, name)
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape [B, N, D] or [N, D], got {x.shape}")
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    if x.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 tokens per sub-image, got N = {x.shape[1]}")
    if x.shape[2] < 1:
        raise ValueError(f"{name} needs at least one channel, got D = 0")
    _finite(x, name)
    return x, squeeze


def _keys3(keys, x, name="keys", src=None):
    """The similarity keys as the core reads them (float32, float64 or float16, C order), [B, N, Dk]; for CUDA keys (or
    CUDA tokens ``src`` when no keys are given) a validated _tokens_gpu.DeviceKeys that _topk runs on the GPU."""
    if keys is None and _on_gpu(src):
        from . import _tokens_gpu
        return _tokens_gpu.DeviceKeys(src, "tokens")
    if keys is None:
        k = x
    elif _on_gpu(keys):
        from . import _tokens_gpu
        k = _tokens_gpu.DeviceKeys(keys, name)
        if k.shape[:2] != tuple(x.shape[:2]):
            raise ValueError(f"{name} must have {x.shape[0]} x {x.shape[1]} rows like the tokens, got shape "
                             f"{k.shape if not k.squeeze else k.shape[1:]}")
        return k
    else:
        k, sq = _tokens3(keys, name)
        if k.shape[:2] != x.shape[:2]:
            raise ValueError(f"{name} must have {x.shape[0]} x {x.shape[1]} rows like the tokens, got shape "
                             f"{k.shape if not sq else k.shape[1:]}")
    return np.ascontiguousarray(k)


def _rows(a, x, name, nonneg=True):
    """A [B, N] float64 array of per-token scores (attention), checked."""
    w = _float_array(a, name).astype(np.float64)
    if w.ndim == 1 and x.shape[0] == 1:
        w = w[None]
    if w.shape != x.shape[:2]:
        raise ValueError(f"{name} must have shape {list(x.shape[:2])} (one value per token), got {list(w.shape)}")
    _finite(w, name)
    if nonneg and (w < 0).any():
        bad = np.argwhere(w < 0)[0]
        raise ValueError(f"{name} must be >= 0, got {w[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return w


def _count(v, name, lo, hi):
    """An int in [lo, hi]: TypeError for another type (1.5, True), ValueError outside the range."""
    if hi < lo:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], which is empty for these tokens; got {v!r}")
    return _integer(name, v, lo, hi)


def _stack(parts, tail, dtype):
    """np.stack of per-sub-image arrays, an empty [0, *tail] array when there is no sub-image (B = 0)."""
    return np.stack(parts).astype(dtype, copy=False) if len(parts) else np.zeros((0,) + tuple(tail), dtype)


def _out_dtype(x):
    return np.float64 if x.dtype == np.float64 else np.float32


def _host_keys(kk):
    """The keys of a _tokens_gpu.DeviceKeys as the CPU core reads them: [B, N, D] float32/float64, C order."""
    from . import _tokens_gpu
    k = _tokens_gpu.to_host(kk.obj, kk.name).reshape(kk.shape)
    _finite(k, kk.name)
    return np.ascontiguousarray(k.astype(np.float32) if k.dtype == np.float16 else k)


def _gather_rows(x, sel, threads):
    """[x[b][sel[b]] for every b]: copied by the C core into one buffer, on all threads; each entry is a view
    of it."""
    b = np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(sel)]) if sel else \
        np.zeros(0, dtype=np.int64)
    r = np.concatenate(sel).astype(np.int64) if sel else np.zeros(0, dtype=np.int64)
    buf = _core.tokens_take(np.ascontiguousarray(x), b, r, _threads(threads))
    offs = np.concatenate([[0], np.cumsum([len(s) for s in sel])])
    return [buf[offs[i]:offs[i + 1]] for i in range(len(sel))]


class _Sums:
    """Weighted sums of token rows, collected per sub-image and run in one call of the C core: row o is
    ``sum(w * x[b, rows] for dst == o) / div[o]`` in float64 (each row summing in the order added), returned
    in the merged tokens' dtype (float32, or float64 for float64 tokens)."""

    def __init__(self):
        self.parts = []

    def add(self, b, rows, dst, w=None):
        rows = np.asarray(rows, dtype=np.int64)
        w = np.ones(len(rows)) if w is None else np.asarray(w, dtype=np.float64)
        self.parts.append((np.full(len(rows), b, dtype=np.int64), rows, np.asarray(dst, dtype=np.int64), w))

    def run(self, x, n_out, threads, div=None):
        if self.parts:
            b, r, d, w = (np.concatenate(p) for p in zip(*self.parts))
        else:
            b = r = d = np.zeros(0, dtype=np.int64)
            w = np.zeros(0)
        div = None if div is None else np.ascontiguousarray(div, dtype=np.float64)
        out = _core.tokens_gather_sum(np.ascontiguousarray(x), b, r, d, w, int(n_out), _threads(threads), div,
                                      _out_dtype(x) == np.float32)
        bad = _first_nonfinite(out)
        if bad is not None:  # finite tokens and weights whose merged value is beyond the output's range
            raise ValueError(f"tokens: a merged token overflows {out.dtype} ({out[bad]} at output row {bad[0]}): "
                             f"the weighted sum of these finite tokens leaves its range; scale the tokens (or the "
                             f"attention weights) down")
        return out


def _scatter_add(acc, idx, vals):
    """acc[idx[i]] += vals[i] for every i (rows of a 2-D acc too), vectorised: np.add.at is slow on rows."""
    if len(idx) == 0:
        return
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    start = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
    acc[sidx[start]] += np.add.reduceat(vals[order], start, axis=0)


# ------------------------------------------------------------------ the similarity core

# the core's screen: 0 auto, 1 float32, 2 int8 (tests set it to check that every screen gives the same answer)
_SCREEN = 0


def _topk(keys, rows, cols, exclude_self, k, threads):
    """Per sub-image b: for each token in rows[b], its k most similar tokens among cols[b]."""
    if not isinstance(keys, np.ndarray):  # _tokens_gpu.DeviceKeys
        from . import _tokens_gpu
        if k <= _tokens_gpu.MAX_K:
            return _tokens_gpu.topk(keys, rows, cols, exclude_self, k)
        keys = _host_keys(keys)  # the GPU's candidate lists hold up to MAX_K: a larger k runs here
    ro = np.zeros(len(rows) + 1, dtype=np.uint64)
    co = np.zeros(len(cols) + 1, dtype=np.uint64)
    ro[1:] = np.cumsum([len(r) for r in rows])
    co[1:] = np.cumsum([len(c) for c in cols])
    r = np.concatenate(rows).astype(np.int64) if len(rows) else np.zeros(0, np.int64)
    c = np.concatenate(cols).astype(np.int64) if len(cols) else np.zeros(0, np.int64)
    idx, val = _core.tokens_topk(keys, r, ro, c, co, bool(exclude_self), int(k), _threads(threads), _SCREEN)
    out_i, out_v = [], []
    for b in range(len(rows)):
        out_i.append(idx[ro[b]:ro[b + 1]])
        out_v.append(val[ro[b]:ro[b + 1]])
    return out_i, out_v


@_torch_io
def most_similar(keys, k=1, threads=None):
    """For every token, its ``k`` most similar other tokens of the same sub-image.

    Returns ``(index int64 [B, N, k], similarity float32 [B, N, k])``, best first; ties go to the
    lower index. The N x N matrix is never stored. CUDA keys run on the GPU and give device arrays of
    their kind (the same values).
    """
    if _on_gpu(keys):
        from . import _tokens_gpu
        dk = _tokens_gpu.DeviceKeys(keys, "keys")
        k = _count(k, "k", 1, dk.shape[1] - 1)
        if k <= _tokens_gpu.MAX_K:
            return _tokens_gpu.most_similar(dk, k)
        idx, val = most_similar(_host_keys(dk), k, threads)  # a larger k runs here, on a host copy
        if dk.squeeze:
            idx, val = idx[0], val[0]
        return _tokens_gpu.from_host_like(dk, idx), _tokens_gpu.from_host_like(dk, val)
    x, squeeze = _tokens3(keys, "keys")
    B, N = x.shape[:2]
    k = _count(k, "k", 1, N - 1)
    kk = _keys3(None, x)
    allr = [np.arange(N)] * B
    idx, val = _topk(kk, allr, allr, True, k, threads)
    idx, val = _stack(idx, (N, k), np.int64), _stack(val, (N, k), np.float32)
    return (idx[0], val[0]) if squeeze else (idx, val)


# ------------------------------------------------------------------ shared pieces

@_torch_io
def cls_weights(cls, keys):
    """[CLS]-to-patch attention from a [CLS] vector: ``softmax_i(<cls, k_i> / sqrt(Dk))`` in float64.

    cls: ``[B, Dk]`` (or ``[Dk]``), keys: ``[B, N, Dk]`` (or ``[N, Dk]``). Returns ``[B, N]`` float64.
    """
    k, _ = _tokens3(keys, "keys")
    c = _float_array(cls, "cls").astype(np.float64)
    if c.ndim == 1:
        c = c[None]
    if c.shape != (k.shape[0], k.shape[2]):
        raise ValueError(f"cls must have shape [{k.shape[0]}, {k.shape[2]}] (one vector per sub-image, as wide as "
                         f"the keys), got {list(c.shape)}")
    _finite(c, "cls")
    def scores():
        with np.errstate(over="ignore", invalid="ignore"):
            return np.einsum("bnd,bd->bn", k.astype(np.float64), c) / math.sqrt(k.shape[2])

    logits = _interruptible(scores)  # one long NumPy call: Ctrl-C is answered while it runs
    if not np.isfinite(logits).all():  # softmax is not scale-invariant: no meaningful weights to give
        raise ValueError("cls: <cls, k_i> / sqrt(Dk) overflows float64 for these keys; scale cls or the keys down")
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


@_torch_io
def iqr_bound(w):
    """The IQR outlier bound ``Q3 + 1.5 (Q3 - Q1)`` of a 1-D array (NumPy's linear percentiles)."""
    a = _float_array(w, "w") if np.asarray(w).dtype.kind == "f" else np.asarray(w)
    if a.dtype.kind not in "fiu" or a.ndim != 1 or a.size == 0:
        raise (TypeError if a.dtype.kind not in "fiu" else ValueError)(
            f"w must be a non-empty 1-D numeric array, got {a.dtype} of shape {a.shape}")
    a = a.astype(np.float64)
    _finite(a, "w")
    top = float(np.abs(a).max())
    if top > 2.0 ** 1000:  # the differences of the interpolation and Q3 - Q1 would overflow: exact power-of-two scaling
        e = int(np.frexp(top)[1])
        q1, q3 = np.percentile(np.ldexp(a, -e), [25, 75])
        with np.errstate(over="ignore"):
            return np.ldexp(q3 + 1.5 * (q3 - q1), e)  # inf when the bound itself is beyond the float range
    q1, q3 = np.percentile(a, [25, 75])
    return q3 + 1.5 * (q3 - q1)


def _splitmix64(z):
    """splitmix64 of a uint64 array (arithmetic modulo 2^64)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed, b, n):
    """The counter-based uniforms of sub-image b: ``u_i = ((r >> 11) + 0.5) 2^-53`` with
    ``r = splitmix64(splitmix64(seed) ^ (b << 32 | i))``, i < n. Returns float64 [n] in (0, 1)."""
    seed = _integer("seed", seed, -(1 << 63), (1 << 64) - 1)
    b = _integer("b", b, 0, (1 << 32) - 1)
    n = _integer("n", n, 0, 1 << 32)
    with np.errstate(over="ignore"):
        s = _splitmix64(np.array([int(seed) & _M64], dtype=np.uint64))
        r = _splitmix64(s ^ ((np.uint64(b) << np.uint64(32)) | np.arange(n, dtype=np.uint64)))
    return ((r >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def _top_by_weight(w, k):
    """The k largest weights, ties to the lower index, in that (descending) order."""
    return np.lexsort((np.arange(len(w)), -w))[:k]


def _sample(w, k, seed, b):
    """k indices sampled without replacement with probability proportional to w (exponential race)."""
    key = _core.tokens_race_keys(uniforms(seed, b, len(w)), w)  # -log(u) / w with the C library's log
    return np.lexsort((np.arange(len(w)), key))[:k]


# ------------------------------------------------------------------ correlation_compress

@dataclass
class Compressed:
    """The result of :func:`correlation_compress` for B sub-images."""

    indices: list          # B int64 arrays: the kept tokens, ascending
    tokens: list           # B [k_b, D] arrays: the kept (or merged) tokens
    density: np.ndarray    # [B] float64: 1 - redundant / N
    max_similarity: np.ndarray  # [B, N] float32: each token's largest similarity to another token
    redundant: np.ndarray  # [B, N] bool: max_similarity > threshold
    keep: np.ndarray       # [B] int64: tokens kept per sub-image

    @property
    def kept_fraction(self):
        """Kept tokens / N per sub-image."""
        return self.keep / self.max_similarity.shape[1]


@_torch_io
def correlation_compress(tokens, cls_attention=None, cls=None, keys=None, threshold=0.9, mode="sample", k_min=1,
                         seed=0, merge=False, threads=None):
    """Token-level correlation-guided compression (Zhang et al., 2024) of B sub-images.

    1. Cosine similarity between the patch keys (``keys``, default the tokens), diagonal excluded.
    2. A token is redundant when its most similar other token exceeds ``threshold``;
       ``density = 1 - redundant / N``.
    3. Keep ``k = max(k_min, N - redundant)`` tokens (= round(density N)), chosen by the [CLS]
       correlation ``w`` (``cls_attention [B, N]``, or ``softmax(<cls, k_i> / sqrt(Dk))`` from a
       ``cls [B, Dk]`` vector; uniform when neither is given): ``mode="sample"`` samples without replacement in proportion to w
       (seeded, reproducible), ``"topk"`` takes the largest, ``"outliers"`` (the global-view branch)
       keeps the IQR outliers of w (at least k_min) regardless of density.
    4. ``merge=True``: every dropped token is merged into its most similar kept token, weighted by w.

    Returns a :class:`Compressed` (kept indices ascending, tokens, density, max_similarity, redundant,
    keep). Kept tokens are copies in the input dtype; merged ones are float32 (float64 for float64). See docs/tokens.md for every detail.

    CUDA tokens or keys: the similarity runs on the GPU; the kept (or merged) tokens are on the tokens'
    device, the other fields are NumPy (ccomp._tokens_gpu says what runs where).
    """
    xd = None
    if _on_gpu(tokens):
        from . import _tokens_gpu
        xd = _tokens_gpu.DeviceKeys(tokens, "tokens")
        x, squeeze = xd, xd.squeeze
    else:
        x, squeeze = _tokens3(tokens)
    B, N, D = x.shape
    threshold = _real("threshold", threshold, -1.0, 1.0)
    _choice("mode", mode, MODES)
    k_min = _count(k_min, "k_min", 1, N)
    seed = _integer("seed", seed, -(1 << 63), (1 << 64) - 1)
    merge = _flag("merge", merge)
    kk = _keys3(keys, x if xd is None else np.empty((B, N, 0)), src=tokens)
    if xd is not None and keys is not None:
        if not _tokens_gpu.all_finite(xd):  # the GPU top-k reads the keys only
            _finite(_tokens_gpu.to_host(xd.obj, xd.name).reshape(xd.shape), xd.name)
    if cls_attention is not None and cls is not None:
        raise ValueError("give cls_attention [B, N] or cls [B, Dk], not both")
    if cls is not None:
        w = cls_weights(cls, kk if isinstance(kk, np.ndarray) else _host_keys(kk))
    elif cls_attention is not None:
        w = _rows(cls_attention, x, "cls_attention")
    else:
        w = np.ones((B, N))
    allr = [np.arange(N)] * B
    idx, val = _topk(kk, allr, allr, True, 1, threads)
    msim = _stack([v[:, 0] for v in val], (N,), np.float32)
    redundant = msim.astype(np.float64) > float(threshold)  # the float32 value against the exact threshold
    density = 1.0 - redundant.sum(axis=1) / N
    kept = []
    for b in range(B):
        if mode == "outliers":
            k = max(k_min, int((w[b] > iqr_bound(w[b])).sum()))
        else:
            k = min(N, max(k_min, N - int(redundant[b].sum())))
        sel = _sample(w[b], k, seed, b) if mode == "sample" else _top_by_weight(w[b], k)
        kept.append(np.sort(sel).astype(np.int64))
    if xd is not None and not merge:
        out = [_tokens_gpu.gather(xd, b, s) for b, s in enumerate(kept)]
        return Compressed(kept, out, density, msim, redundant, np.array([len(s) for s in kept], dtype=np.int64))
    if xd is not None:
        x = _tokens_gpu.to_host(tokens, "tokens").reshape(xd.shape)
    if merge:
        drop = [np.setdiff1d(np.arange(N), s) for s in kept]
        nn, _ = _topk(kk, drop, kept, False, 1, threads)
        # per kept token c: (w_c x_c + sum w_j x_j) / (w_c + sum w_j) over the tokens j merged into it,
        # the plain mean where that weight is 0
        sums = _Sums()
        offs = np.concatenate([[0], np.cumsum([len(k) for k in kept])]).astype(np.int64)
        div = []
        for b in range(B):
            kb, db = kept[b], drop[b]
            local = np.searchsorted(kb, nn[b][:, 0])
            den = w[b][kb] + np.bincount(local, weights=w[b][db], minlength=len(kb))
            weighted = den > 0
            sums.add(b, kb, offs[b] + np.arange(len(kb)), np.where(weighted, w[b][kb], 1.0))
            sums.add(b, db, offs[b] + local, np.where(weighted[local], w[b][db], 1.0))
            div.append(np.where(weighted, den, 1.0 + np.bincount(local, minlength=len(kb))))
        res = sums.run(x, offs[-1], threads, np.concatenate(div) if div else None)
        out = []
        for b in range(B):
            rb = res[offs[b]:offs[b + 1]]
            out.append(rb if xd is None else _tokens_gpu.from_host_like(xd, rb))
    else:
        out = _gather_rows(x, kept, threads)
    return Compressed(kept, out, density, msim, redundant, np.array([len(s) for s in kept], dtype=np.int64))


# ------------------------------------------------------------------ ToMe

def tome_merge(tokens, r, metric=None, sizes=None, cls_token=False, threads=None):
    """One step of ToMe's bipartite soft matching (Bolya et al., 2023): merge r tokens.

    A = even positions, B = odd positions; each A token's best match in B by cosine of ``metric``
    (default the tokens); the r A tokens with the best matches are merged into them by size-weighted
    mean. With ``cls_token`` token 0 is never merged and stays first. Returns
    ``(tokens [B, N - r, D], sizes [B, N - r], source [B, N])``: the output holds the unmerged A tokens
    (by best-match score, or by index with ``cls_token``) then all of B; ``source[b, i]`` is the output
    row token i went to. ``r = 0`` (or nothing left to merge) returns the tokens unchanged, as ToMe does.
    """
    x, squeeze = _tokens3(tokens)
    B, N, D = x.shape
    r = _count(r, "r", 0, N)
    cls_token = _flag("cls_token", cls_token)
    r = min(r, (N - int(cls_token)) // 2)
    kk = _keys3(metric, x, "metric", src=tokens)
    if sizes is None:
        s = np.ones((B, N))
    else:
        s = _rows(sizes, x, "sizes")
        if (s <= 0).any():
            raise ValueError("sizes must be > 0")
    od = _out_dtype(x)
    if r == 0:  # as ToMe: nothing to merge, nothing changes
        out, out_s, source = np.array(x, dtype=od), s.copy(), np.tile(np.arange(N, dtype=np.int64), (B, 1))
        return (out[0], out_s[0], source[0]) if squeeze else (out, out_s, source)
    rows, dst, nu = _tome_plan(kk, B, N, r, cls_token, threads)
    n_out = N - r
    nb = N // 2
    out_s = np.empty((B, n_out))
    source = np.empty((B, N), dtype=np.int64)
    sums = _Sums()
    for b in range(B):
        sb = s[b]
        base = b * n_out
        # the unmerged A tokens as they are; each B token: size-weighted sum with the A tokens merged into it
        sums.add(b, rows[b, :nu], base + dst[b, :nu])
        sums.add(b, rows[b, nu:], base + dst[b, nu:], sb[rows[b, nu:]])
        size = sb[rows[b, nu:nu + nb]].copy()
        _scatter_add(size, dst[b, nu + nb:] - nu, sb[rows[b, nu + nb:]])
        out_s[b, :nu] = sb[rows[b, :nu]]
        out_s[b, nu:] = size
        source[b, rows[b]] = dst[b]
    div = np.ones((B, n_out))
    div[:, nu:] = out_s[:, nu:]
    out = sums.run(x, B * n_out, threads, div.reshape(-1)).reshape(B, n_out, D)
    if squeeze:
        return out[0], out_s[0], source[0]
    return out, out_s, source


def _tome_plan(kk, B, N, r, cls_token, threads):
    """ToMe's matching as contributions: ``(rows [B, N], dst [B, N], nu)``, each token once.

    Output row ``dst[b, m]`` receives token ``rows[b, m]``, in this order: the ``nu`` unmerged A tokens
    (rows 0..nu-1, as they are), then every B token (rows nu.., weighted by its size), then the merged A
    tokens in best-match order (weighted by size into their B token's row). 0 < r <= (N - cls_token) // 2.
    """
    a_pos = np.arange(0, N, 2)
    b_pos = np.arange(1, N, 2)
    qa = a_pos[1:] if cls_token else a_pos
    nn, val = _topk(kk, [qa] * B, [b_pos] * B, False, 1, threads)
    off = 1 if cls_token else 0
    nu = len(a_pos) - r
    rows = np.empty((B, N), dtype=np.int64)
    dst = np.empty((B, N), dtype=np.int64)
    for b in range(B):
        node_max = np.full(len(a_pos), -np.inf)
        node_idx = np.zeros(len(a_pos), dtype=np.int64)
        node_max[off:] = val[b][:, 0].astype(np.float64)
        node_idx[off:] = (nn[b][:, 0] - 1) // 2  # position within B
        order = np.lexsort((np.arange(len(a_pos)), -node_max))
        src, unm = order[:r], order[r:]
        if cls_token:
            unm = np.sort(unm)
        rows[b] = np.concatenate([a_pos[unm], b_pos, a_pos[src]])
        dst[b] = np.concatenate([np.arange(nu), nu + np.arange(len(b_pos)), nu + node_idx[src]])
    return rows, dst, nu


# ------------------------------------------------------------------ PruMerge

def prumerge(tokens, cls_attention, keys=None, ratio=None, neighbors=32, extra_token=True, threads=None):
    """LLaVA-PruMerge (Shang et al., 2024), as released.

    Keeps ``int(N * ratio)`` tokens (at least 1) with the largest ``cls_attention``; ``ratio=None`` is
    adaptive: the fraction of IQR outliers of the attention. Each kept token adds its ``neighbors``
    most similar other tokens (cosine of ``keys``) weighted by their attention:
    ``x_i + sum_j a_j x_j``. ``extra_token`` appends ``sum`` of ``a_j x_j`` over the dropped tokens.
    Returns ``(tokens, indices)``, lists of B arrays; indices in descending attention order.
    """
    x, squeeze = _tokens3(tokens)
    B, N, D = x.shape
    a = _rows(cls_attention, x, "cls_attention")
    if ratio is not None:
        ratio = _real("ratio", ratio, 0.0, 1.0, lo_open=True)
    neighbors = _count(neighbors, "neighbors", 1, 1 << 20)
    extra_token = _flag("extra_token", extra_token)
    kk = _keys3(keys, x, src=tokens)
    plan = _prumerge_plan(kk, a, N, _prumerge_counts(a, N, ratio), neighbors, extra_token, threads)
    # each kept token plus its neighbours weighted by attention; the extra token: the dropped ones, weighted
    sums = _Sums()
    offs, n_out = [], 0
    for b, (kb, rows, dst) in enumerate(plan):
        offs.append(n_out)
        k = len(kb)
        sums.add(b, rows[:k], n_out + dst[:k])
        sums.add(b, rows[k:], n_out + dst[k:], a[b][rows[k:]])
        n_out += k + int(extra_token)
    offs.append(n_out)
    res = sums.run(x, n_out, threads)
    out = [res[offs[b]:offs[b + 1]] for b in range(B)]
    return out, [p[0] for p in plan]


def _prumerge_counts(a, N, ratio):
    """How many tokens PruMerge keeps in each sub-image: ``int(N * ratio)`` (at least 1), or with
    ``ratio=None`` the fraction of IQR outliers of the attention ``a [B, N]``."""
    out = []
    for b in range(a.shape[0]):
        rb = (int((a[b] > iqr_bound(a[b])).sum()) / N) if ratio is None else float(ratio)
        out.append(min(N, max(1, int(N * rb))))
    return out


def _prumerge_plan(kk, a, N, counts, neighbors, extra_token, threads):
    """PruMerge's choices per sub-image: ``(kept, rows, dst)``, keeping ``counts[b]`` tokens. Output row
    ``dst[m]`` receives token ``rows[m]``: first each kept token once (weight 1), then its neighbours and,
    with ``extra_token``, every dropped token into row ``len(kept)`` (weighted by attention)."""
    B = a.shape[0]
    kept = [_top_by_weight(a[b], counts[b]).astype(np.int64) for b in range(B)]
    k = min(neighbors, N - 1)
    nn, _ = _topk(kk, kept, [np.arange(N)] * B, True, k, threads)
    plan = []
    for b in range(B):
        kb, nb = kept[b], nn[b]
        rows = [kb, nb.reshape(-1)]
        dst = [np.arange(len(kb)), np.repeat(np.arange(len(kb)), nb.shape[1])]
        if extra_token:
            drop = np.setdiff1d(np.arange(N), kb)
            rows.append(drop)
            dst.append(np.full(len(drop), len(kb)))
        plan.append((kb, np.concatenate(rows).astype(np.int64), np.concatenate(dst).astype(np.int64)))
    return plan


# ------------------------------------------------------------------ VisionZip

def visionzip(tokens, cls_attention, keys=None, dominant=54, contextual=10, threads=None):
    """VisionZip (Yang et al., 2024): dominant tokens by attention plus merged contextual tokens.

    Dominant: the ``dominant`` tokens with the largest ``cls_attention``, ascending. Of the rest (in
    index order), every ``step = max(1, n_rest // contextual)``-th is a target (the first
    ``contextual``); each other remaining token joins its most similar target (cosine of ``keys``),
    and a contextual token is ``x_target + mean(joined)``. Returns
    ``(tokens [B, dominant + targets, D], dominant_indices [B, dominant], target_indices [B, targets])``.
    """
    x, squeeze = _tokens3(tokens)
    B, N, D = x.shape
    a = _rows(cls_attention, x, "cls_attention")
    dominant = _count(dominant, "dominant", 0, N)
    contextual = _count(contextual, "contextual", 0, N - dominant)
    kk = _keys3(keys, x, src=tokens)
    dom, targets, rows, dst, w, div = _visionzip_plan(kk, a, N, dominant, contextual, threads)
    n_row = div.shape[1]
    sums = _Sums()
    for b in range(B):
        sums.add(b, rows[b], b * n_row + dst[b], w[b])
    out = sums.run(x, B * n_row, threads, div.reshape(-1)).reshape(B, n_row, D)
    if squeeze:
        return out[0], dom[0], targets[0]
    return out, dom, targets


def _visionzip_plan(kk, a, N, dominant, contextual, threads):
    """VisionZip's choices: ``(dominant [B, d], targets [B, t], rows [B, N], dst [B, N], w [B, N],
    div [B, d + t])``: output row ``dst[b, m]`` receives ``w[b, m] * x[rows[b, m]]``, and is divided by
    ``div``: the dominant tokens as they are, then each target plus the mean of the c tokens that joined
    it, ``(c x_target + sum) / c``."""
    B = a.shape[0]
    dom, rest = [], []
    for b in range(B):
        d = np.sort(_top_by_weight(a[b], dominant)).astype(np.int64)
        dom.append(d)
        rest.append(np.setdiff1d(np.arange(N), d).astype(np.int64))
    n_rest = N - dominant
    if contextual > 0 and n_rest > 0:
        step = max(1, n_rest // contextual)
        tpos = np.arange(0, n_rest, step)[:contextual]
    else:
        tpos = np.zeros(0, dtype=np.int64)
    mpos = np.setdiff1d(np.arange(n_rest), tpos)
    targets = [r[tpos] for r in rest]
    movers = [r[mpos] for r in rest]
    nt = len(tpos)
    if nt and len(mpos):
        nn, _ = _topk(kk, movers, targets, False, 1, threads)
    n_row = dominant + nt
    n_in = dominant + nt + (len(mpos) if nt else 0)
    rows = np.zeros((B, n_in), dtype=np.int64)
    dst = np.zeros((B, n_in), dtype=np.int64)
    w = np.ones((B, n_in))
    div = np.ones((B, n_row))
    for b in range(B):
        rows[b, :dominant] = dom[b]
        dst[b, :dominant] = np.arange(dominant)
        if nt:
            c = np.ones(nt)
            if len(mpos):
                j = np.searchsorted(targets[b], nn[b][:, 0])
                c = np.maximum(np.bincount(j, minlength=nt), 1).astype(np.float64)
                rows[b, dominant + nt:] = movers[b]
                dst[b, dominant + nt:] = dominant + j
            rows[b, dominant:dominant + nt] = targets[b]
            dst[b, dominant:dominant + nt] = dominant + np.arange(nt)
            w[b, dominant:dominant + nt] = c
            div[b, dominant:] = c
    d_idx = np.stack(dom) if B else np.zeros((0, dominant), np.int64)
    t_idx = np.stack(targets) if B else np.zeros((0, nt), np.int64)
    return d_idx, t_idx, rows, dst, w, div


# ------------------------------------------------------------------ FastV

def fastv_select(tokens, attention, keep=None, ratio=0.5):
    """FastV (Chen et al., 2024): keep the tokens with the largest ``attention`` (e.g. the attention the
    last query pays each image token at layer K, averaged over heads), in sequence order.

    ``keep`` defaults to ``N - int(N * ratio)``. Returns ``(tokens [B, keep, D], indices [B, keep])``,
    the tokens in the input dtype.
    """
    x, squeeze = _tokens3(tokens)
    B, N, D = x.shape
    a = _rows(attention, x, "attention", nonneg=False)
    if keep is None:
        ratio = _real("ratio", ratio, 0.0, 1.0, hi_open=True)
        keep = N - int(N * ratio)
    keep = _count(keep, "keep", 1, N)
    idx = _stack([np.sort(_top_by_weight(a[b], keep)) for b in range(B)], (keep,), np.int64)
    out = np.take_along_axis(x, idx[:, :, None], axis=1)
    if squeeze:
        return out[0], idx[0]
    return out, idx


"""Plain-NumPy specification of ccomp.tokens, written from docs/tokens.md and
the methods' published descriptions: ToMe's bipartite soft matching (Bolya et
al., ICLR 2023), LLaVA-PruMerge (Shang et al., 2024), VisionZip (Yang et al.,
2024), FastV (Chen et al., 2024) and the token-level correlation-guided
compression of Zhang et al. (2024).

Written for clarity, not speed: one sub-image at a time, the full N x N
similarity in float64 rounded to float32, and every tie rule spelled out
(:func:`order_desc`, :func:`order_asc`, :func:`first_argmax`) rather than left
to whichever index a sort happens to return.  Every decision is taken on the
float32 similarity values of :func:`similarity`.

Conventions fixed here where docs/tokens.md leaves a choice (see each function):
- ``tokens`` is [B, N, D] or [N, D]; [N, D] is treated as B = 1.  Functions that
  return fixed-shape arrays (tome_merge, visionzip, fastv_select) drop the batch
  axis again for [N, D] input; those that return lists of B arrays
  (correlation_compress, prumerge) return lists of length 1.
- Arithmetic outputs (merges, PruMerge, VisionZip) are float32, or float64 for
  float64 input; pure selections (correlation_compress without merge,
  fastv_select) return the selected rows unchanged, in the input dtype.
- A threshold is compared exactly with the float32 similarity (the float32 value
  promoted to float64), not rounded to float32 first.
"""
import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-12
MODES = ("sample", "topk", "outliers")

# ----------------------------------------------------------------- ties


def order_desc(values):
    """Indices that sort ``values`` (1-D) largest first; equal values keep the
    lower index first (a stable sort on the negated values)."""
    v = np.asarray(values)
    return np.lexsort((np.arange(v.shape[0]), -v))


def order_asc(values):
    """Indices that sort ``values`` (1-D) smallest first; ties: lower index first."""
    v = np.asarray(values)
    return np.lexsort((np.arange(v.shape[0]), v))


def first_argmax(values):
    """The lowest index holding the maximum of ``values`` (1-D)."""
    v = np.asarray(values)
    return int(np.flatnonzero(v == v.max())[0])


def top_indices(values, k):
    """The k largest ``values`` (ties: lower index), in descending order."""
    return order_desc(values)[:k]


# ----------------------------------------------------------- similarity


KEY_EXP = 20


def rescale(keys):
    """Each key whose largest |x| is outside [2^-20, 2^20) times the power of two that brings that
    largest |x| into [1, 2): exact, and the cosine does not change; it keeps the squares of 1e154 or
    1e-160 (and the float32 screen of keys near 3e38 or 1e-40) in range.  Float32 keys are rescaled in
    float32, as the core does."""
    k = np.array(keys, dtype=np.float64 if np.asarray(keys).dtype == np.float64 else np.float32)
    m = np.max(np.abs(k), axis=-1, keepdims=True) if k.shape[-1] else np.zeros(k.shape[:-1] + (1,), k.dtype)
    out = (m > 0) & ((m < 2.0 ** -KEY_EXP) | (m >= 2.0 ** KEY_EXP))
    e = np.frexp(m.astype(np.float64))[1] - 1
    return np.where(out, np.ldexp(k, np.where(out, -e, 0).astype(np.int32)).astype(k.dtype), k)


def normalize(keys):
    """``k / max(|k|, 1e-12)`` row by row, in float64, after :func:`rescale`."""
    k = rescale(keys).astype(np.float64)
    norm = np.sqrt(np.sum(k * k, axis=-1, keepdims=True))
    return k / np.maximum(norm, EPS)


def similarity_ab(ka, kb):
    """The spec's cosine between the rows of ka [Na, Dk] and kb [Nb, Dk]:
    computed in float64, then rounded to float32.  A zero key gives 0."""
    return (normalize(ka) @ normalize(kb).T).astype(np.float32)


def similarity(keys):
    """S [N, N] float32 for one [N, Dk] array of keys (diagonal included)."""
    return similarity_ab(keys, keys)


# ------------------------------------------------------------ sampling

_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def splitmix64(x):
    """One splitmix64 step from state ``x``: z = x + 0x9E3779B97F4A7C15, then
    the mix (the C ``splitmix64(&state)`` of csrc/kv, first output).  ``x`` is
    an int or a uint64 array; arithmetic wraps modulo 2^64."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, np.ndarray):
        z = (int(x) + _GOLDEN) & _MASK
        z = ((z ^ (z >> 30)) * _M1) & _MASK
        z = ((z ^ (z >> 27)) * _M2) & _MASK
        return z ^ (z >> 31)
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def uniforms(seed, b, n):
    """u_i for i < n of sub-image b: r = splitmix64(splitmix64(seed) ^ (b << 32 | i)),
    u_i = ((r >> 11) + 0.5) * 2^-53 in double (float64 [n]).  Values lie in
    (0, 1]: above 2^52 the + 0.5 rounds to even, so u can be exactly 1."""
    s = np.uint64(splitmix64(int(seed) & _MASK))
    counters = (np.uint64((int(b) << 32) & _MASK)) | np.arange(n, dtype=np.uint64)
    r = splitmix64(s ^ counters)
    return ((r >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def race_keys(u, w):
    """Efraimidis-Spirakis keys -log(u_i) / w_i (+inf where w_i = 0), with the C
    library's log (math.log) so that C and NumPy agree bit for bit."""
    w = np.asarray(w, dtype=np.float64)
    keys = np.full(w.shape, np.inf)
    for i in range(w.shape[0]):
        if w[i] > 0:
            keys[i] = -math.log(float(u[i])) / w[i]
    return keys


# ------------------------------------------------------------ outliers


def percentile_linear(w, q):
    """NumPy's default ("linear") percentile, written out for a port to C:
    sort; h = (n - 1) * (q / 100); j = floor(h); g = h - j; a = x[j], b = x[j + 1]
    (b = a at the end); d = b - a; result = b - d * (1 - g) when g >= 0.5,
    else a + d * g (all in float64, as numpy.lib's _lerp)."""
    x = np.sort(np.asarray(w, dtype=np.float64))
    h = (x.shape[0] - 1) * (q / 100)
    j = int(math.floor(h))
    g = h - j
    a = x[j]
    b = x[min(j + 1, x.shape[0] - 1)]
    d = b - a
    return float(b - d * (1 - g)) if g >= 0.5 else float(a + d * g)


def iqr_bound(w):
    """Q3 + 1.5 (Q3 - Q1) of the float64 weights, Q1 and Q3 by np.percentile's
    default linear interpolation (equal to :func:`percentile_linear`)."""
    w = np.asarray(w, dtype=np.float64)
    q1 = float(np.percentile(w, 25))
    q3 = float(np.percentile(w, 75))
    return q3 + 1.5 * (q3 - q1)


def outlier_count(w):
    """How many weights exceed :func:`iqr_bound`."""
    w = np.asarray(w, dtype=np.float64)
    return int(np.sum(w > iqr_bound(w)))


# ----------------------------------------------------------- validation


def _batch(tokens, name="tokens"):
    """(float64 [B, N, D], input dtype, whether the input was [N, D])."""
    a = np.asarray(tokens)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be [B, N, D] or [N, D], got shape {a.shape}")
    if a.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{name} must be float16, float32 or float64, got {a.dtype}")
    single = a.ndim == 2
    x = a[None] if single else a
    if x.shape[1] < 2:
        raise ValueError(f"{name} must have N >= 2 tokens, got N = {x.shape[1]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has NaN or infinite values")
    return x.astype(np.float64), a.dtype, single


def _out_dtype(dtype):
    return np.float64 if dtype == np.float64 else np.float32


def _keys(keys, x, name="keys"):
    """keys [B, N, Dk] (or [N, Dk]) matching tokens' B and N; default the tokens."""
    if keys is None:
        return x
    k = np.asarray(keys, dtype=np.float64)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3 or k.shape[:2] != x.shape[:2]:
        raise ValueError(f"{name} must be [B, N, Dk] with B, N = {x.shape[:2]}, got shape {np.shape(keys)}")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"{name} has NaN or infinite values")
    return k


def _attention(att, x, name):
    """float64 [B, N] attention (finite, >= 0) matching tokens' B and N."""
    a = np.asarray(att, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.shape != x.shape[:2]:
        raise ValueError(f"{name} must be [B, N] with B, N = {x.shape[:2]}, got shape {np.shape(att)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has NaN or infinite values")
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0")
    return a


# -------------------------------------------------- correlation_compress


@dataclass
class Compressed:
    """What correlation_compress returns (the spec's ``Compressed`` record)."""
    indices: list         # B int64 arrays, ascending
    tokens: list          # B [k_b, D] arrays
    density: np.ndarray   # [B] float64
    max_similarity: np.ndarray  # [B, N] float32
    redundant: np.ndarray  # [B, N] bool
    keep: np.ndarray      # [B] int64


def max_similarity(keys):
    """max_{j != i} S[i, j] for one [N, Dk] array: float32 [N]."""
    s = similarity(keys)
    np.fill_diagonal(s, -np.inf)
    return s.max(axis=1)


def cls_weights(cls, keys):
    """softmax_i(<cls, k_i> / sqrt(Dk)) in float64 for one [N, Dk] array of keys."""
    k = np.asarray(keys, dtype=np.float64)
    logits = (k @ np.asarray(cls, dtype=np.float64)) / math.sqrt(k.shape[1])
    e = np.exp(logits - logits.max())
    return e / e.sum()


def merge_into_kept(x, w, s, kept):
    """PruMerge-style merge of one sub-image (float64): every token not in
    ``kept`` (ascending) goes to its most similar kept token (arg-max of S over
    the kept columns; ties: lower index) and x'_c = (w_c x_c + sum w_j x_j) /
    (w_c + sum w_j), the plain mean when that denominator is 0."""
    n = x.shape[0]
    kept_set = set(int(c) for c in kept)
    groups = {int(c): [int(c)] for c in kept}
    for j in range(n):
        if j in kept_set:
            continue
        c = int(kept[first_argmax(s[j, kept])])
        groups[c].append(j)
    out = np.empty((len(kept), x.shape[1]))
    for row, c in enumerate(kept):
        members = groups[int(c)]
        den = sum(w[m] for m in members)
        if den > 0:
            out[row] = sum(w[m] * x[m] for m in members) / den
        else:
            out[row] = x[members].mean(axis=0)
    return out


def correlation_compress(tokens, cls_attention=None, cls=None, keys=None, threshold=0.9, mode="sample", k_min=1,
                         seed=0, merge=False):
    """Information density and [CLS]-guided selection, sub-image by sub-image.

    The weights are ``cls_attention[b]``, or the softmax of ``cls[b]``
    against the keys; with neither, all weights are 1 (uniform sampling, and
    "topk" keeps the first tokens).  Giving both is an error.  ``k_min`` must
    be >= 0; the kept count is min(N, max(k_min, N - R)).
    """
    x, dtype, _ = _batch(tokens)
    B, N, _ = x.shape
    k = _keys(keys, x)
    if cls_attention is not None and cls is not None:
        raise ValueError("give cls_attention or cls, not both")
    att = _attention(cls_attention, x, "cls_attention") if cls_attention is not None else None
    if cls is not None:
        c = np.asarray(cls, dtype=np.float64)
        if c.ndim == 1:
            c = c[None]
        if c.shape != (B, k.shape[2]):
            raise ValueError(f"cls must be [B, Dk] = {(B, k.shape[2])}, got shape {np.shape(cls)}")
        if not np.all(np.isfinite(c)):
            raise ValueError("cls has NaN or infinite values")
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(k_min) < 0:
        raise ValueError(f"k_min must be >= 0, got {k_min}")

    indices, kept_tokens = [], []
    density = np.empty(B)
    maxsim = np.empty((B, N), dtype=np.float32)
    redundant = np.empty((B, N), dtype=bool)
    keep = np.empty(B, dtype=np.int64)
    for b in range(B):
        s = similarity(k[b])
        off = s.copy()
        np.fill_diagonal(off, -np.inf)
        maxsim[b] = off.max(axis=1)
        redundant[b] = maxsim[b].astype(np.float64) > float(threshold)
        r = int(redundant[b].sum())
        density[b] = 1.0 - r / N
        kb = min(N, max(int(k_min), N - r))

        if att is not None:
            w = att[b]
        elif cls is not None:
            w = cls_weights(c[b], k[b])
        else:
            w = np.ones(N)

        if mode == "topk":
            chosen = top_indices(w, kb)
        elif mode == "sample":
            chosen = order_asc(race_keys(uniforms(seed, b, N), w))[:kb]
        else:
            kb = min(N, max(int(k_min), outlier_count(w)))
            chosen = top_indices(w, kb)
        chosen = np.sort(chosen).astype(np.int64)
        keep[b] = kb
        indices.append(chosen)
        if merge:
            kept_tokens.append(merge_into_kept(x[b], w, s, chosen).astype(_out_dtype(dtype)))
        else:
            kept_tokens.append(x[b][chosen].astype(dtype))
    return Compressed(indices, kept_tokens, density, maxsim, redundant, keep)


# ---------------------------------------------------------------- ToMe


def tome_merge(tokens, r, metric=None, sizes=None, cls_token=False):
    """One step of ToMe's bipartite soft matching with size-weighted averaging.

    Returns (tokens [B, N - r, D], sizes [B, N - r], source [B, N] int64);
    sizes come back in the output float dtype and must be > 0 on input.
    """
    x, dtype, single = _batch(tokens)
    B, N, D = x.shape
    m = _keys(metric, x, "metric")
    if sizes is None:
        s = np.ones((B, N))
    else:
        s = np.asarray(sizes, dtype=np.float64)
        if s.ndim == 1 and single:
            s = s[None]
        if s.shape != (B, N):
            raise ValueError(f"sizes must be [B, N] with B, N = {(B, N)}, got shape {np.shape(sizes)}")
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("sizes must be finite and > 0")
    if int(r) < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    cls = 1 if cls_token else 0
    r = min(int(r), (N - cls) // 2)
    out_dtype = _out_dtype(dtype)
    if r <= 0:  # ToMe does nothing when there is nothing to merge
        out, out_sizes, source = x.astype(out_dtype), s.astype(out_dtype), np.tile(np.arange(N), (B, 1))
        return (out[0], out_sizes[0], source[0]) if single else (out, out_sizes, source)
    a_pos = np.arange(0, N, 2)
    b_pos = np.arange(1, N, 2)
    out = np.empty((B, N - r, D), dtype=out_dtype)
    out_sizes = np.empty((B, N - r), dtype=out_dtype)
    source = np.empty((B, N), dtype=np.int64)
    for bi in range(B):
        scores = similarity_ab(m[bi][a_pos], m[bi][b_pos])
        if cls:
            scores[0, :] = -np.inf
        node_max = scores.max(axis=1)
        node_idx = np.array([first_argmax(row) for row in scores], dtype=np.int64)
        edge = order_desc(node_max)
        src, unm = edge[:r], edge[r:]
        if cls:
            unm = np.sort(unm)
        n_unm = len(unm)
        num = s[bi][b_pos, None] * x[bi][b_pos]      # s_b x_b, then + s_a x_a
        den = s[bi][b_pos].copy()
        for a in src:
            num[node_idx[a]] += s[bi][a_pos[a]] * x[bi][a_pos[a]]
            den[node_idx[a]] += s[bi][a_pos[a]]
        out[bi, :n_unm] = x[bi][a_pos[unm]]
        out[bi, n_unm:] = num / den[:, None]
        out_sizes[bi, :n_unm] = s[bi][a_pos[unm]]
        out_sizes[bi, n_unm:] = den
        source[bi, a_pos[unm]] = np.arange(n_unm)
        source[bi, b_pos] = n_unm + np.arange(len(b_pos))
        source[bi, a_pos[src]] = n_unm + node_idx[src]
    if single:
        return out[0], out_sizes[0], source[0]
    return out, out_sizes, source


# ------------------------------------------------------------ PruMerge


def prumerge_keep_count(attention, ratio=None):
    """int(N * ratio), at least 1; the default ratio is the IQR outlier
    fraction n_out / N as a float64 division (so int(N * (n_out / N)) can be
    n_out - 1, as in the released code)."""
    a = np.asarray(attention, dtype=np.float64)
    n = a.shape[0]
    if ratio is None:
        ratio = outlier_count(a) / n
    return max(1, int(n * ratio))


def prumerge(tokens, cls_attention, keys=None, ratio=None, neighbors=32, extra_token=True):
    """LLaVA-PruMerge: keep the top int(N * ratio) tokens by attention (in
    descending order), add to each its ``neighbors`` most similar other tokens
    weighted by attention, plus (extra_token) the attention-weighted sum of the
    tokens not kept.  ``neighbors`` is capped at N - 1; ``ratio`` must be in
    (0, 1].  Returns (tokens, indices) as lists of B arrays."""
    x, dtype, _ = _batch(tokens)
    B, N, D = x.shape
    k = _keys(keys, x)
    att = _attention(cls_attention, x, "cls_attention")
    if ratio is not None and not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if int(neighbors) < 0:
        raise ValueError(f"neighbors must be >= 0, got {neighbors}")
    nn_count = min(int(neighbors), N - 1)
    out_tokens, out_indices = [], []
    for b in range(B):
        a = att[b]
        n_keep = prumerge_keep_count(a, ratio)
        kept = top_indices(a, n_keep).astype(np.int64)
        s = similarity(k[b])
        rows = []
        for i in kept:
            row = s[i].copy()
            row[i] = -np.inf  # other tokens only
            nn = top_indices(row, nn_count)
            rows.append(x[b][i] + sum((a[j] * x[b][j] for j in nn), np.zeros(D)))
        if extra_token:
            rest = np.setdiff1d(np.arange(N), kept)
            rows.append(sum((a[j] * x[b][j] for j in rest), np.zeros(D)))
        out_tokens.append(np.array(rows).astype(_out_dtype(dtype)))
        out_indices.append(kept)
    return out_tokens, out_indices


# ----------------------------------------------------------- VisionZip


def visionzip_targets(n_rest, contextual):
    """Positions (within the remaining tokens) of the contextual targets:
    0, step, 2 step, ... (the first ``contextual``), step = max(1, n_rest // contextual)."""
    if contextual == 0:
        return np.zeros(0, dtype=np.int64)
    step = max(1, n_rest // contextual)
    return np.arange(0, n_rest, step, dtype=np.int64)[:contextual]


def visionzip(tokens, cls_attention, keys=None, dominant=54, contextual=10):
    """VisionZip: dominant tokens by attention plus contextual tokens merged
    from the rest.  Requires dominant >= 0, contextual >= 0, 1 <= dominant +
    contextual <= N.  Returns (tokens [B, dominant + contextual, D],
    dominant_indices [B, dominant] ascending, target_indices [B, contextual]
    as token indices)."""
    x, dtype, single = _batch(tokens)
    B, N, D = x.shape
    k = _keys(keys, x)
    att = _attention(cls_attention, x, "cls_attention")
    dominant, contextual = int(dominant), int(contextual)
    if dominant < 0 or dominant > N:
        raise ValueError(f"dominant must be in [0, {N}], got {dominant}")
    if contextual < 0 or dominant + contextual > N or dominant + contextual == 0:
        raise ValueError(f"contextual must be in [{1 if dominant == 0 else 0}, {N - dominant}] "
                         f"(dominant + contextual in [1, N = {N}]), got {contextual}")
    out = np.empty((B, dominant + contextual, D), dtype=_out_dtype(dtype))
    dom_idx = np.empty((B, dominant), dtype=np.int64)
    tgt_idx = np.empty((B, contextual), dtype=np.int64)
    for b in range(B):
        dom = np.sort(top_indices(att[b], dominant))
        rest = np.setdiff1d(np.arange(N), dom)  # index order
        tpos = visionzip_targets(len(rest), contextual)
        targets = rest[tpos]
        others = np.delete(rest, tpos)
        ctx = x[b][targets].copy()
        if contextual and len(others):
            s = similarity_ab(k[b][others], k[b][targets])
            assign = np.array([first_argmax(row) for row in s])
            for t in range(contextual):
                members = others[assign == t]
                if len(members):
                    ctx[t] += x[b][members].mean(axis=0)
        out[b, :dominant] = x[b][dom]
        out[b, dominant:] = ctx
        dom_idx[b] = dom
        tgt_idx[b] = targets
    if single:
        return out[0], dom_idx[0], tgt_idx[0]
    return out, dom_idx, tgt_idx


# --------------------------------------------------------------- FastV


def fastv_select(tokens, attention, keep=None, ratio=0.5):
    """FastV: the ``keep`` tokens (default N - int(N * ratio)) of largest
    attention, ties to the lower index, returned in ascending index order.
    Returns (tokens [B, keep, D] in the input dtype, indices [B, keep])."""
    x0 = np.asarray(tokens)
    x, dtype, single = _batch(tokens)
    B, N, _ = x.shape
    att = _attention(attention, x, "attention")
    if keep is None:
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        keep = N - int(N * float(ratio))
    keep = int(keep)
    if not 1 <= keep <= N:
        raise ValueError(f"keep must be in [1, {N}], got {keep}")
    xb = x0[None] if single else x0
    idx = np.stack([np.sort(top_indices(att[b], keep)) for b in range(B)]).astype(np.int64)
    out = np.stack([xb[b][idx[b]] for b in range(B)]).astype(dtype)
    if single:
        return out[0], idx[0]
    return out, idx

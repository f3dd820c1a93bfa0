"""Plain-NumPy specification of ccomp.sketch, written from the SketchTune paper
("Sketch to Adapt", Zhang et al., ICML 2025), LeanQuant ("Accurate and
Scalable LLM Quantization with Loss-error-aware Grid", Zhang & Shrivastava,
ICLR 2025) and the C header csrc/include/ccomp/sketch.h.

A sketch of W [out, in] with G groups and b bits: tables T [out, G, 2^b] and
codes C [out, in] in [0, 2^b); W_hat[r, c] = T[r, c // (in / G), C[r, c]].
Everything here is vectorised NumPy in float64 unless stated: slow, readable,
obviously right.  Integer outputs (packed codes, k-means codes) are compared
with ccomp exactly; float outputs within stated bounds.
"""
import numpy as np

# ------------------------------------------------------------------ codes


def group_bytes(n, bits):
    """Bytes of one (row, group) run of n b-bit codes: ceil(n b / 8)."""
    return (n * bits + 7) // 8


def pack_codes(codes, groups, bits):
    """codes uint8 [out, in] -> [out, G, ceil(n b / 8)]: every run of n = in / G
    codes is an MSB-first bit stream padded with zero bits (b = 4: the even
    column in the HIGH nibble, SketchTune's layout)."""
    codes = np.asarray(codes, dtype=np.uint8)
    out, cols = codes.shape
    n = cols // groups
    runs = codes.reshape(out, groups, n)
    planes = (runs[..., None] >> np.arange(bits - 1, -1, -1, dtype=np.uint8)) & 1  # MSB first
    stream = planes.reshape(out, groups, n * bits)
    pad = group_bytes(n, bits) * 8 - n * bits
    stream = np.concatenate([stream, np.zeros((out, groups, pad), np.uint8)], axis=-1)
    return np.packbits(stream, axis=-1, bitorder="big")


def unpack_codes(packed, in_features, bits):
    """Inverse of pack_codes: [out, G, gb] -> uint8 [out, in]."""
    packed = np.asarray(packed, dtype=np.uint8)
    out, groups, _ = packed.shape
    n = in_features // groups
    stream = np.unpackbits(packed, axis=-1, bitorder="big")[..., :n * bits].reshape(out, groups, n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    return (stream * weights).sum(-1).astype(np.uint8).reshape(out, groups * n)


def sketchtune_codes(codes):
    """SketchTune's 4-bit layout from codes [out, G, n]: byte = (even << 4) | odd."""
    codes = np.asarray(codes, dtype=np.uint8)
    return ((codes[..., 0::2] << 4) | codes[..., 1::2]).astype(np.uint8)


# ------------------------------------------------------------- kernels


def dequantize(tables, codes):
    """W_hat [out, in] (float64) from tables [out, G, K] and codes [out, in]."""
    tables = np.asarray(tables, dtype=np.float64)
    out, groups, _ = tables.shape
    n = codes.shape[1] // groups
    g = np.repeat(np.arange(groups), n)
    return tables[np.arange(out)[:, None], g[None, :], codes]


def matmul(x, tables, codes):
    """y = x W_hat^T."""
    return np.asarray(x, dtype=np.float64) @ dequantize(tables, codes).T


def grad_tables(x, grad_y, tables, codes):
    """dL/dT[r, g, k] = sum over the columns c of group g with C[r, c] = k of (grad_y^T x)[r, c]."""
    out, groups, K = np.shape(tables)
    n = codes.shape[1] // groups
    D = np.asarray(grad_y, dtype=np.float64).T @ np.asarray(x, dtype=np.float64)  # [out, in]
    g = np.repeat(np.arange(groups), n)
    flat = (np.arange(out)[:, None] * groups + g[None, :]) * K + codes
    return np.bincount(flat.ravel(), weights=D.ravel(), minlength=out * groups * K).reshape(out, groups, K)


def grad_input(grad_y, tables, codes):
    """dL/dx = grad_y W_hat."""
    return np.asarray(grad_y, dtype=np.float64) @ dequantize(tables, codes)


# ------------------------------------------------------------- rounding


def round_to(v, dtype):
    """Round float64 values to a table type with round-to-nearest-even, directly
    (no double rounding): float16 and float32 by NumPy's casts, bfloat16 as 8
    significant bits (normal numbers)."""
    v = np.asarray(v, dtype=np.float64)
    if dtype == "float64":
        return v.copy()
    if dtype == "float32":
        return v.astype(np.float32).astype(np.float64)
    if dtype == "float16":
        return v.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        m, e = np.frexp(v)  # v = m 2^e, 0.5 <= |m| < 1
        return np.ldexp(np.rint(m * 256.0) / 256.0, e)
    raise ValueError(dtype)


def nearest(v, t):
    """argmin_k |v - t[k]| (the lowest k on ties) for values v [..., n] and tables t [..., K]."""
    return np.argmin(np.abs(np.asarray(v, np.float64)[..., :, None] - t[..., None, :]), axis=-1).astype(np.uint8)


# ------------------------------------------------------------- fitting


def fit_rtn(W, groups, bits, dtype="float32"):
    """Uniform grid min + k (max - min) / (K - 1) per (row, group), rounded to dtype; nearest codes."""
    W = np.asarray(W, dtype=np.float32)
    out, cols = W.shape
    K = 1 << bits
    Wg = W.reshape(out, groups, cols // groups).astype(np.float64)
    mn, mx = Wg.min(-1, keepdims=True), Wg.max(-1, keepdims=True)
    t = round_to(mn + np.arange(K) * ((mx - mn) / (K - 1)), dtype)
    return t, nearest(Wg, t).reshape(out, cols)


def _lloyd(xs, ws, c, iters):
    """Weighted Lloyd iterations on sorted values xs from sorted centres c; returns (centres, weighted SSE)."""
    n, K = len(xs), len(c)
    pw = np.concatenate([[0.0], np.cumsum(ws)])
    ps = np.concatenate([[0.0], np.cumsum(ws * xs)])
    prev = None
    it = 0
    while True:
        # each sorted value goes to its nearest centre; a value on a midpoint to the lower one
        split = np.concatenate([[0], np.searchsorted(xs, 0.5 * (c[:-1] + c[1:]), side="right"), [n]])
        split = np.maximum.accumulate(split)
        if it == iters or (prev is not None and np.array_equal(split, prev)):
            break
        prev = split
        for k in range(K):
            a, b = split[k], split[k + 1]
            wsum = pw[b] - pw[a]
            if b > a and wsum > 0:
                c[k] = min(max((ps[b] - ps[a]) / wsum, xs[a]), xs[b - 1])
        c = np.sort(c)
        it += 1
    sse = sum(float(np.sum(ws[split[k]:split[k + 1]] * (xs[split[k]:split[k + 1]] - c[k]) ** 2)) for k in range(K))
    return c, sse


def kmeans_1d(values, weights, K, iters):
    """Weighted 1-D k-means: Lloyd from the weighted quantiles (k + 1/2) / K and
    from the uniform grid between min and max; the lower weighted SSE wins
    (the quantile start on ties)."""
    order = np.lexsort((np.arange(len(values)), values))
    xs, ws = np.asarray(values, np.float64)[order], np.asarray(weights, np.float64)[order]
    pw = np.cumsum(ws)
    idx = np.minimum(np.searchsorted(pw, (np.arange(K) + 0.5) / K * pw[-1], side="left"), len(xs) - 1)
    cq, sq = _lloyd(xs, ws, xs[idx].copy(), iters)
    cu, su = _lloyd(xs, ws, xs[0] + np.arange(K) * ((xs[-1] - xs[0]) / (K - 1)), iters)
    return cu if su < sq else cq


def fit_kmeans(W, groups, bits, dtype="float32", col_weight=None, iters=100):
    """Per (row, group) weighted k-means of the weights (column weights col_weight, default 1)."""
    W = np.asarray(W, dtype=np.float32)
    out, cols = W.shape
    n, K = cols // groups, 1 << bits
    cw = np.ones(cols) if col_weight is None else np.asarray(col_weight, np.float64)
    t = np.empty((out, groups, K))
    for r in range(out):
        for g in range(groups):
            t[r, g] = kmeans_1d(W[r, g * n:(g + 1) * n], cw[g * n:(g + 1) * n], K, iters)
    t = round_to(t, dtype)
    return t, nearest(W.reshape(out, groups, n), t).reshape(out, cols)


def hessian(X):
    """H = 2 X^T X / n for calibration inputs X [n, in]."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, np.shape(X)[-1])
    return 2.0 * (X.T @ X) / X.shape[0]


def inverse_cholesky(H, damping=0.1):
    """U, the upper Cholesky factor of (H + damping mean(diag H) I)^-1, after
    the dead columns (zero diagonal) get a 1 on the diagonal."""
    H = np.array(H, dtype=np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    H[np.diag_indices_from(H)] += damping * np.mean(np.diag(H))
    Hinv = np.linalg.inv(H)
    return np.linalg.cholesky(Hinv).T, dead


def gptq_codes(W, U, tables, block=128):
    """GPTQ / OBQ error feedback in float32: column i gets the nearest entry q of
    its group's table to the running w, err = (w - q) / U[i, i], and
    W[:, i:] -= err U[i, i:]; within a block at once, beyond it after the block."""
    W = np.array(W, dtype=np.float32)
    U = np.asarray(U, dtype=np.float32)
    out, cols = W.shape
    groups = tables.shape[1]
    n = cols // groups
    codes = np.zeros((out, cols), np.uint8)
    rows = np.arange(out)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        Err = np.zeros((out, i2 - i1), np.float32)
        for i in range(i1, i2):
            t = tables[:, i // n, :]
            w = W[:, i]
            k = nearest(w[:, None], t)[:, 0]
            codes[:, i] = k
            e = (w - t[rows, k].astype(np.float32)) / U[i, i]
            Err[:, i - i1] = e
            W[:, i + 1:i2] -= e[:, None] * U[i, i + 1:i2][None, :]
        W[:, i2:] -= Err @ U[i1:i2, i2:]
    return codes


def fit_leanquant(W, X, groups, bits, dtype="float32", damping=0.1, exponent=4.0, block=128, iters=100):
    """LeanQuant: H = 2 X^T X / n, U = chol(H^-1) upper, per-group k-means with
    column weights diag(U)^-p, then GPTQ error feedback over the columns."""
    W = np.array(W, dtype=np.float32)
    U, dead = inverse_cholesky(hessian(X), damping)
    W[:, dead] = 0
    lw = -exponent * np.log(np.diag(U))
    cw = np.maximum(np.exp(lw - lw.max()), 1e-300)
    t, _ = fit_kmeans(W, groups, bits, dtype, cw, iters)
    return t, gptq_codes(W, U, t, block)


def output_error(W, W_hat, X):
    """||X W^T - X W_hat^T|| / ||X W^T|| (Frobenius)."""
    X = np.asarray(X, np.float64)
    ref = X @ np.asarray(W, np.float64).T
    return float(np.linalg.norm(ref - X @ np.asarray(W_hat, np.float64).T) / np.linalg.norm(ref))

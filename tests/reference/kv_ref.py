"""Plain-NumPy specification of ccomp.kv, written from the C headers
(csrc/include/ccomp/kv.h, kv_turbo.h, kv_sparse.h, half.h).

Every quantizer takes ``x`` of shape ``(..., tokens, head_dim)`` and returns
the same dict of arrays as ``ccomp.kv.quantize(...).arrays``: one row per
slice (the leading axes flattened), ``[S, n]``.  Where the output is integer
or fp16 bits (codes, scales, zeros, ggml blocks, bitmaps, offsets, outlier
indices) the reference is exact and ccomp must match it byte for byte; float
reconstructions are compared within a stated tolerance.

Slow, vectorised and obviously right; ``python tests/reference/kv_ref.py``
compares it with ccomp on random data and prints a report.
"""
import math

import numpy as np

# ----------------------------------------------------------------- fp16


def f16_bits(x):
    """IEEE fp16 bits (uint16) of float32 ``x``, round to nearest even
    (NumPy's float32 -> float16 cast is RNE, as ccomp_f32_to_f16)."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).view(np.uint16)


def f16_value(h):
    """float32 value of fp16 bits ``h`` (exact)."""
    return np.asarray(h, dtype=np.uint16).view(np.float16).astype(np.float32)


# --------------------------------------------------------- bit packing


def pack_codes(codes, bits):
    """Pack b-bit codes along the last axis: a little-endian bit stream,
    code j at bits [j b, j b + b) (n * bits / 8 bytes per row)."""
    codes = np.asarray(codes, dtype=np.uint8)
    planes = (codes[..., None] >> np.arange(bits, dtype=np.uint8)) & 1  # [..., n, bits], LSB first
    flat = planes.reshape(*codes.shape[:-1], codes.shape[-1] * bits)
    return np.packbits(flat, axis=-1, bitorder="little")


def unpack_codes(packed, n, bits):
    """Inverse of :func:`pack_codes`: [..., n] uint8 codes."""
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, bitorder="little")
    planes = flat[..., :n * bits].reshape(*flat.shape[:-1], n, bits)
    return (planes << np.arange(bits, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)


def _slices(x):
    """(..., T, D) -> float32 [S, T, D]."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim < 2:
        raise ValueError(f"expected (..., tokens, head_dim), got shape {a.shape}")
    return a.reshape(-1, a.shape[-2], a.shape[-1])


def _finite(a, what):
    if not np.all(np.isfinite(a)):
        s, t, d = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{what}: element (slice {s}, token {t}, channel {d}) is not finite")


# ------------------------------------------------------------ groupwise


def _groups(a, group, axis):
    """[S, T, D] seen as groups: [S, T, D/G, G] for axis "token" (a group on axis -1)
    or [S, T/G, G, D] for axis "channel" (a group on axis -2); returns (view, group axis)."""
    S, T, D = a.shape
    if axis == "token":
        return a.reshape(S, T, D // group, group), -1
    return a.reshape(S, T // group, group, D), -2


def groupwise_quantize(x, bits, group, axis):
    """Asymmetric min-max quantization (ccomp/kv.h, ccomp_kv_gw_quantize).

    Groups of ``group`` channels of a token (``axis="token"``) or of ``group``
    tokens of a channel (``axis="channel"``).  Per group, in float32:
    zero = fp16(min), scale = fp16((max - min) / (2^b - 1)); with z, s their
    fp16 values, code = clamp(floor((x - z) / s + 0.5), 0, 2^b - 1) (0 when
    s is 0).  Returns {"codes" [S, T*D*b/8], "scale" [S, ng], "zero" [S, ng]};
    ng = (T/G)*D (channel, layout [T/G][D]) or T*(D/G) (token, [T][D/G]).
    """
    a = _slices(x)
    _finite(a, "groupwise")
    S, T, D = a.shape
    levels = np.float32(2 ** bits - 1)
    g, ax = _groups(a, group, axis)
    # a zero extreme is +0 whatever the signs of the zeros (x + 0 turns -0 into +0)
    mn = g.min(axis=ax, keepdims=True) + np.float32(0)
    mx = g.max(axis=ax, keepdims=True) + np.float32(0)
    zero16 = f16_bits(mn)
    scale16 = f16_bits((mx - mn) / levels)
    z, s = f16_value(zero16), f16_value(scale16)
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(s))):
        raise ValueError("a group's range does not fit in float16")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (g - z) / s + np.float32(0.5)
    codes = np.where(s == 0, 0, np.floor(np.clip(t, 0, levels))).astype(np.uint8)
    codes = codes.reshape(S, T, D)
    return {"codes": pack_codes(codes, bits).reshape(S, -1),
            "scale": np.squeeze(scale16, ax).reshape(S, -1),
            "zero": np.squeeze(zero16, ax).reshape(S, -1)}


def groupwise_dequantize(arrays, T, D, bits, group, axis):
    """x' = s * code + z (float32), as [S, T, D]."""
    S = arrays["codes"].shape[0]
    codes = unpack_codes(arrays["codes"].reshape(S, T, D * bits // 8), D, bits).astype(np.float32)
    g, ax = _groups(codes, group, axis)
    shape = (S, T, D // group, 1) if axis == "token" else (S, T // group, 1, D)
    s = f16_value(arrays["scale"]).reshape(shape)
    z = f16_value(arrays["zero"]).reshape(shape)
    return (s * g + z).reshape(S, T, D)


# ---------------------------------------------------------- ggml blocks

_Q8_0 = np.dtype([("d", "<u2"), ("qs", "i1", 32)])  # 34 bytes, ggml block_q8_0
_Q4_0 = np.dtype([("d", "<u2"), ("qs", "u1", 16)])  # 18 bytes, ggml block_q4_0


def _roundf(v):
    """C roundf: half away from zero, exact (no v + 0.5 rounding)."""
    r = np.trunc(v)
    return r + np.where(np.abs(v - r) >= 0.5, np.sign(v), 0).astype(v.dtype)


def q8_0_quantize(x):
    """ggml's quantize_row_q8_0_ref on every row (blocks of 32 along head_dim):
    d = amax / 127, id = d ? 1/d : 0 (float32), qs = roundf(x * id), d stored
    fp16.  Returns {"blocks": uint8 [S, T*(D/32)*34]}."""
    a = _slices(x)
    S, T, D = a.shape
    b = a.reshape(S, T, D // 32, 32)
    d = np.abs(b).max(axis=-1) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    out = np.empty((S, T, D // 32), dtype=_Q8_0)
    out["d"] = f16_bits(d)
    out["qs"] = _roundf(b * inv[..., None]).astype(np.int8)
    return {"blocks": out.view(np.uint8).reshape(S, -1)}


def q4_0_quantize(x):
    """ggml's quantize_row_q4_0_ref: m = the value of largest |x| in the block
    (first one on ties), d = m / -8, id = d ? 1/d : 0, nibble =
    min(15, (int8)(x * id + 8.5)); byte j holds x[j] (low) and x[j+16] (high)."""
    a = _slices(x)
    S, T, D = a.shape
    b = a.reshape(S, T, D // 32, 32)
    first = np.argmax(np.abs(b), axis=-1)[..., None]  # argmax returns the first maximum
    d = np.take_along_axis(b, first, axis=-1)[..., 0] / np.float32(-8)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    nib = np.minimum(15, np.trunc(b * inv[..., None] + np.float32(8.5))).astype(np.uint8)
    out = np.empty((S, T, D // 32), dtype=_Q4_0)
    out["d"] = f16_bits(d)
    out["qs"] = nib[..., :16] | (nib[..., 16:] << 4)
    return {"blocks": out.view(np.uint8).reshape(S, -1)}


def ggml_dequantize(blocks, T, D, kind):
    """q8_0: d * qs; q4_0: d * (nibble - 8); float32 [S, T, D]."""
    S = blocks.shape[0]
    blk = np.ascontiguousarray(blocks).view(_Q8_0 if kind == "q8_0" else _Q4_0).reshape(S, T, D // 32)
    d = f16_value(blk["d"])[..., None]
    if kind == "q8_0":
        q = blk["qs"].astype(np.float32)
    else:
        qs = blk["qs"]
        q = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.float32) - 8
    return (d * q).reshape(S, T, D)


# -------------------------------------------------------------- splitmix64

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def splitmix64(seed, n):
    """The first n outputs of splitmix64 started at state ``seed`` (uint64;
    output i mixes state seed + (i + 1) * golden, modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed & (2 ** 64 - 1)) + _GOLDEN * np.arange(1, n + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


# ------------------------------------------------------------------ turbo


def _phi(t):
    return math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi) if math.isfinite(t) else 0.0


def _upper(t):
    """P(X > t) for X ~ N(0, 1), accurate in both tails."""
    if t == math.inf:
        return 0.0
    if t == -math.inf:
        return 1.0
    return 0.5 * math.erfc(t / math.sqrt(2))


def _cell_mass(a, b):
    """P(a < X < b), without cancellation in the tails."""
    if a >= 0:
        return _upper(a) - _upper(b)
    if b <= 0:
        return _upper(-b) - _upper(-a)
    return 1.0 - _upper(-a) - _upper(b)


def lloyd_max(bits, tol=1e-15, max_iter=1_000_000):
    """The standard-normal Lloyd-Max quantizer of ``bits`` bits by Lloyd's
    algorithm on the exact density: start from 2^b centroids evenly spaced in
    (-2, 2), alternate thresholds = midpoints and centroids = conditional
    means E[X | cell] = (phi(a) - phi(b)) / P(a < X < b) until no centroid
    moves by more than ``tol``.  Returns (centroids, thresholds, mse), all float64;
    mse = E[(X - Q(X))^2]."""
    n = 2 ** bits
    c = [-2 + 4 * (k + 0.5) / n for k in range(n)]
    for _ in range(max_iter):
        t = [0.5 * (c[k] + c[k + 1]) for k in range(n - 1)]
        edges = [-math.inf] + t + [math.inf]
        new = [(_phi(edges[k]) - _phi(edges[k + 1])) / _cell_mass(edges[k], edges[k + 1]) for k in range(n)]
        moved = max(abs(u - v) for u, v in zip(new, c))
        c = new
        if moved <= tol:
            break
    else:
        raise RuntimeError("Lloyd's algorithm did not converge")
    t = [0.5 * (c[k] + c[k + 1]) for k in range(n - 1)]
    edges = [-math.inf] + t + [math.inf]
    mse = 0.0
    for k in range(n):
        a, b = edges[k], edges[k + 1]
        p = _cell_mass(a, b)
        # E[X^2; a<X<b] = p + a phi(a) - b phi(b);  E[X; a<X<b] = phi(a) - phi(b)
        ex2 = p + (a * _phi(a) if math.isfinite(a) else 0.0) - (b * _phi(b) if math.isfinite(b) else 0.0)
        mse += ex2 - 2 * c[k] * (_phi(a) - _phi(b)) + c[k] ** 2 * p
    return np.array(c), np.array(t), mse


def turbo_codebook(bits):
    """(centroids, thresholds) as the float32 tables quantize uses: the float32
    roundings of the Lloyd-Max centroids and of the midpoints computed in double."""
    c, t, _ = lloyd_max(bits)
    return c.astype(np.float32), t.astype(np.float32)


def rotation_signs(seed, D):
    """s_j = -1 when the top bit of splitmix64 output j (state = seed) is set, else +1."""
    return np.where(splitmix64(seed, D) >> np.uint64(63), -1.0, 1.0).astype(np.float32)


def fwht(x):
    """Unnormalised Walsh-Hadamard transform along the last axis (natural order,
    H[i][j] = (-1)^popcount(i & j)), float32 butterflies of stride 1, 2, 4, ..."""
    y = np.array(x, dtype=np.float32, copy=True)
    n = y.shape[-1]
    h = 1
    while h < n:
        v = y.reshape(*y.shape[:-1], n // (2 * h), 2, h)
        a, b = v[..., 0, :].copy(), v[..., 1, :].copy()
        v[..., 0, :] = a + b
        v[..., 1, :] = a - b
        h *= 2
    return y


def turbo_rotate(x, seed, inverse=False):
    """y = H (s .* x) / sqrt(D), or x = s .* H y / sqrt(D) when inverse
    (the division as a product with float32(1 / sqrt(D)), as ccomp rounds it)."""
    x = np.asarray(x, dtype=np.float32)
    D = x.shape[-1]
    s = rotation_signs(seed, D)
    inv_sqrt = np.float32(1 / math.sqrt(D))
    if inverse:
        return s * fwht(x) * inv_sqrt
    return fwht(s * x) * inv_sqrt


def qjl_matrix(seed, D):
    """The D x D QJL matrix: splitmix64 from seed ^ 0xd1b54a32d192ed03, outputs
    in pairs (z1, z2) -> u1 = ((z1 >> 11) + 1) 2^-53, u2 = (z2 >> 11) 2^-53,
    Box-Muller rho cos(2 pi u2), rho sin(2 pi u2) in double, float32, row-major."""
    z = splitmix64((seed & (2 ** 64 - 1)) ^ 0xD1B54A32D192ED03, D * D)
    u1 = ((z[0::2] >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0 ** -53
    u2 = (z[1::2] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    rho = np.sqrt(-2.0 * np.log(u1))
    pairs = np.stack([rho * np.cos(2 * np.pi * u2), rho * np.sin(2 * np.pi * u2)], axis=-1)
    return pairs.reshape(D, D).astype(np.float32)


def turbo_quantize(x, bits, seed=0, qjl=False):
    """TurboQuant (ccomp/kv_turbo.h).  Per token row: norm = ||x|| (double ->
    float32), u = x / norm, w = H (s .* u) (float32), code_j = #{k : w_j >= t_k}
    (t the float32 Lloyd-Max thresholds); a zero row gets code 2^(b-1).
    With qjl: r = x - x', res_norm = ||r||, sign bit i = ((S r)_i >= 0),
    little-endian in the row's D/8 bytes.  Returns {"codes", "norms"[, "signs",
    "res_norms"]}."""
    a = _slices(x)
    _finite(a, "turbo")
    S, T, D = a.shape
    _, thr = turbo_codebook(bits)
    norm = np.sqrt(np.sum(a.astype(np.float64) ** 2, axis=-1)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(norm[..., None] > 0, a / norm[..., None], np.float32(0)).astype(np.float32)
    w = fwht(rotation_signs(seed, D) * u)
    codes = np.sum(w[..., None] >= thr, axis=-1).astype(np.uint8)
    codes[norm == 0] = 2 ** (bits - 1)
    out = {"codes": pack_codes(codes, bits).reshape(S, -1), "norms": norm}
    if qjl:
        r = a - turbo_dequantize(out, T, D, bits, seed)
        Sm = qjl_matrix(seed, D).astype(np.float64)
        proj = r.astype(np.float64) @ Sm.T  # [S, T, D]: (S r)_i
        out["signs"] = np.packbits(proj >= 0, axis=-1, bitorder="little").reshape(S, -1)
        out["res_norms"] = np.sqrt(np.sum(r.astype(np.float64) ** 2, axis=-1)).astype(np.float32)
    return out


def turbo_dequantize(arrays, T, D, bits, seed=0):
    """x' = norm / D * s .* H c[code] (float32, [S, T, D]); the QJL part is not recoverable."""
    S = arrays["codes"].shape[0]
    cen, _ = turbo_codebook(bits)
    codes = unpack_codes(arrays["codes"].reshape(S, T, D * bits // 8), D, bits)
    y = rotation_signs(seed, D) * fwht(cen[codes])
    return np.asarray(arrays["norms"], np.float32).reshape(S, T, 1) * y / np.float32(D)


def turbo_scores(arrays, q, T, D, bits, seed=0):
    """Key scores <q, x'_t> (+ sqrt(pi/2)/D res_norm_t <S q, sign(S r_t)> with QJL,
    the unbiased estimate of <q, x_t>), float64.  q: [S, D] (one query per
    slice) gives [S, T]; q: [S, nq, D] gives [S, nq, T]."""
    q = np.asarray(q, np.float64)
    single = q.ndim == 2
    q = q[:, None, :] if single else q
    xk = turbo_dequantize(arrays, T, D, bits, seed).astype(np.float64)
    s = q @ xk.transpose(0, 2, 1)
    if "signs" in arrays:
        S = xk.shape[0]
        bits_ = np.unpackbits(arrays["signs"].reshape(S, T, D // 8), axis=-1, bitorder="little")
        sign = np.where(bits_ != 0, 1.0, -1.0)
        sq = q @ qjl_matrix(seed, D).astype(np.float64).T  # (S q)_i
        s += math.sqrt(math.pi / 2) / D * (sq @ sign.transpose(0, 2, 1)) * arrays["res_norms"].reshape(S, 1, T)
    return s[:, 0] if single else s


# ---------------------------------------------------------- sparse, GEAR


def round_count(frac, n):
    """round(frac * n), half up, in double: floor(frac * n + 0.5)."""
    return int(math.floor(float(frac) * n + 0.5))


def top_magnitude_mask(a, k):
    """Boolean mask of the k entries of largest |x| of every row (last axis);
    ties (equal |x|, +0 and -0 included) go to the lower channel index."""
    order = np.argsort(-np.abs(a), axis=-1, kind="stable")[..., :k]
    mask = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def _check_fp16_range(a, what):
    _finite(a, what)
    if np.any(np.abs(a) >= 65520):
        raise ValueError(f"{what}: an element is beyond float16")


def bitmap_sparse_quantize(x, sparsity):
    """Per-token magnitude pruning (ccomp/kv_sparse.h): kept = D - round(s D)
    entries per row; tiles of 64 channels (i = row * D/64 + tile): bitmap bit j
    <=> channel tile*64 + j kept; values: the kept values in row-major order
    as fp16; offsets[i] = index of tile i's first value, plus a final nnz.
    Returns {"bitmaps" u64 [S, T*D/64], "offsets" u32 [S, T*D/64 + 1], "values" u16 [S, nnz]}."""
    a = _slices(x)
    _check_fp16_range(a, "bitmap_sparse")
    S, T, D = a.shape
    mask = top_magnitude_mask(a, D - round_count(sparsity, D))
    tiles = mask.reshape(S, T * D // 64, 64)
    bitmaps = np.packbits(tiles, axis=-1, bitorder="little").view("<u8")[..., 0]
    counts = tiles.sum(axis=-1)
    offsets = np.zeros((S, counts.shape[1] + 1), dtype=np.uint32)
    np.cumsum(counts, axis=-1, out=offsets[:, 1:])
    values = f16_bits(a[mask]).reshape(S, -1)
    return {"bitmaps": bitmaps.astype(np.uint64), "offsets": offsets, "values": values}


def bitmap_sparse_dequantize(arrays, T, D):
    """The pruned matrix: kept values (fp16) in place, 0 elsewhere; [S, T, D]."""
    S = arrays["bitmaps"].shape[0]
    bm = np.ascontiguousarray(arrays["bitmaps"].astype("<u8")).view(np.uint8).reshape(S, -1, 8)
    mask = np.unpackbits(bm, axis=-1, bitorder="little").astype(bool).reshape(S, T, D)
    out = np.zeros((S, T, D), dtype=np.float32)
    out[mask] = f16_value(arrays["values"]).reshape(-1)
    return out


def gear_outliers(a, frac):
    """The per_row = round(frac * D) entries of largest |x| of every token row:
    (idx [S, T, per_row] increasing uint16, fp16 vals, mask)."""
    per_row = round_count(frac, a.shape[-1])
    mask = top_magnitude_mask(a, per_row)
    idx = np.nonzero(mask)[-1].reshape(*a.shape[:-1], per_row)  # nonzero is row-major: increasing channels
    vals = np.take_along_axis(a, idx, axis=-1)
    return idx.astype(np.uint16), f16_bits(vals), mask


def gaussian_omega(seed, D, r):
    """Omega (D x r, row-major), the low-rank start: splitmix64 from ``seed``,
    u = 1 - (z >> 11) 2^-53 in (0, 1]; pairs of draws (u1, u2) give
    sqrt(-2 ln u1) cos(2 pi u2) then sqrt(-2 ln u1) sin(2 pi u2)."""
    n = D * r
    m = (n + 1) // 2
    u = 1.0 - (splitmix64(seed, 2 * m) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    u1, u2 = u[0::2], u[1::2]
    rho = np.sqrt(-2.0 * np.log(u1))
    pairs = np.stack([rho * np.cos(2 * np.pi * u2), rho * np.sin(2 * np.pi * u2)], axis=-1)
    return pairs.reshape(-1)[:n].reshape(D, r)


def low_rank(R, rank, iters, seed=0):
    """Subspace iteration in double: Y = Omega; iters times A = qr(R Y) and,
    except after the last, Y = qr(R^T A); U = A, W = R^T A (L = U W^T = A A^T R).
    R: [T, D]; returns (U [T, r], W [D, r]) float64.  np.linalg.qr gives another
    basis than ccomp's Gram-Schmidt, but L (a projection) is basis-independent."""
    R = np.asarray(R, dtype=np.float64)
    Y = gaussian_omega(seed, R.shape[1], rank)
    for it in range(iters):
        A = np.linalg.qr(R @ Y)[0]
        if it < iters - 1:
            Y = np.linalg.qr(R.T @ A)[0]
    return A, R.T @ A


def gear_quantize(x, bits, group, axis, outliers=0.02, rank=4, iters=2, seed=0):
    """GEAR: outliers S (per-token top |x|, fp16), groupwise backbone D of x with
    the outliers replaced by 0, and a rank-r approximation of R = x - D' - S'
    (fp16 factors).  Returns the groupwise arrays plus "out_idx", "out_vals"
    and (rank > 0) "U" [S, T*r], "W" [S, D*r] as fp16 bits."""
    a = _slices(x)
    _check_fp16_range(a, "gear")
    S, T, D = a.shape
    idx, vals, mask = gear_outliers(a, outliers)
    out = groupwise_quantize(np.where(mask, np.float32(0), a), bits, group, axis)
    out["out_idx"] = idx.reshape(S, -1)
    out["out_vals"] = vals.reshape(S, -1)
    if rank > 0:
        R = a - groupwise_dequantize(out, T, D, bits, group, axis)
        np.put_along_axis(R, idx.astype(np.int64), np.take_along_axis(R, idx.astype(np.int64), -1) - f16_value(vals),
                          axis=-1)
        UW = [low_rank(R[i], rank, iters, seed) for i in range(S)]
        out["U"] = f16_bits(np.stack([u for u, _ in UW]).astype(np.float32)).reshape(S, -1)
        out["W"] = f16_bits(np.stack([w for _, w in UW]).astype(np.float32)).reshape(S, -1)
    return out


def gear_dequantize(arrays, T, D, bits, group, axis, rank):
    """D' + S' + U W^T (float32 [S, T, D])."""
    out = groupwise_dequantize(arrays, T, D, bits, group, axis)
    S = out.shape[0]
    idx = arrays["out_idx"].reshape(S, T, -1).astype(np.int64)
    vals = f16_value(arrays["out_vals"]).reshape(S, T, -1)
    np.put_along_axis(out, idx, np.take_along_axis(out, idx, -1) + vals, axis=-1)
    if rank > 0:
        U = f16_value(arrays["U"]).reshape(S, T, rank).astype(np.float64)
        W = f16_value(arrays["W"]).reshape(S, D, rank).astype(np.float64)
        out = (out + U @ W.transpose(0, 2, 1)).astype(np.float32)
    return out


# ------------------------------------------------------------------ KIVI


def kivi_dequantize(k, v, bits, group, residual):
    """What a KIVICache(bits, group, residual) holds after appending k, v ((..., T, D))
    in any number of steps, dequantized: keys quantized per channel in whole blocks of
    ``residual`` tokens (the last T mod residual stay exact); values quantized per token
    except the ``residual`` most recent.  Per-channel groups never cross a block and
    per-token groups never cross a token, so streaming equals quantizing at once.
    The cache stores its tokens as float16: they are rounded to it first.
    Returns float32 (K', V'), each [S, T, D]."""
    k, v = (_slices(a).astype(np.float16).astype(np.float32) for a in (k, v))
    S, T, D = k.shape
    nk, nv = T // residual * residual, max(T - residual, 0)
    kd, vd = k.copy(), v.copy()
    if nk:
        kd[:, :nk] = groupwise_dequantize(groupwise_quantize(k[:, :nk], bits, group, "channel"), nk, D, bits, group,
                                          "channel")
    if nv:
        vd[:, :nv] = groupwise_dequantize(groupwise_quantize(v[:, :nv], bits, group, "token"), nv, D, bits, group,
                                          "token")
    return kd, vd


# -------------------------------------------------------------- attention


def attention(q, k, v, scale=None):
    """softmax(scale q K^T) V in float64 over dense (dequantized) K, V.
    q: ([B,] H, nq, D); k, v: ([B,] G, T, D) with H % G == 0 (query head h
    uses K/V head h // (H / G)); scale defaults to 1 / sqrt(D)."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    H, G = q.shape[-3], k.shape[-3]
    if H % G:
        raise ValueError(f"query heads {H} not a multiple of K/V heads {G}")
    k, v = np.repeat(k, H // G, axis=-3), np.repeat(v, H // G, axis=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = scale * q @ np.swapaxes(k, -1, -2)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v


# --------------------------------------------------- reference dispatcher


def quantize(x, method, *, bits=None, group=32, axis="token", sparsity=0.5, outliers=0.02, rank=4, iters=2, seed=0,
             qjl=False):
    """The reference arrays of ``ccomp.kv.quantize(x, method, ...)`` (same defaults)."""
    if method == "groupwise":
        return groupwise_quantize(x, 4 if bits is None else bits, group, axis)
    if method == "q8_0":
        return q8_0_quantize(x)
    if method == "q4_0":
        return q4_0_quantize(x)
    if method == "turbo":
        return turbo_quantize(x, 3 if bits is None else bits, seed, qjl)
    if method == "bitmap_sparse":
        return bitmap_sparse_quantize(x, sparsity)
    if method == "gear":
        return gear_quantize(x, 4 if bits is None else bits, group, axis, outliers, rank, iters, seed)
    raise ValueError(f"unknown method {method!r}")


def dequantize(arrays, method, T, D, *, bits=None, group=32, axis="token", rank=4, seed=0, **_):
    """float32 [S, T, D] reconstruction of reference (or ccomp) arrays."""
    if method == "groupwise":
        return groupwise_dequantize(arrays, T, D, 4 if bits is None else bits, group, axis)
    if method in ("q8_0", "q4_0"):
        return ggml_dequantize(arrays["blocks"], T, D, method)
    if method == "turbo":
        return turbo_dequantize(arrays, T, D, 3 if bits is None else bits, seed)
    if method == "bitmap_sparse":
        return bitmap_sparse_dequantize(arrays, T, D)
    if method == "gear":
        return gear_dequantize(arrays, T, D, 4 if bits is None else bits, group, axis, rank)
    raise ValueError(f"unknown method {method!r}")


# ------------------------------------------------------------ self-check

_EXACT = {"groupwise": ("codes", "scale", "zero"), "q8_0": ("blocks",), "q4_0": ("blocks",),
          "turbo": ("codes", "norms"), "bitmap_sparse": ("bitmaps", "offsets", "values"),
          "gear": ("codes", "scale", "zero", "out_idx", "out_vals")}


def _cases(rng):
    """(name, x [S, T, D]) inputs: Gaussian, heavy tails, ties and constant groups."""
    g = rng.normal(size=(3, 128, 64)).astype(np.float32)
    t = (rng.standard_t(2, size=(2, 128, 128)) * 3).astype(np.float32)
    ties = rng.integers(-3, 4, size=(2, 128, 64)).astype(np.float32)
    ties[0, :32] = 1.5  # constant groups (scale 0)
    ties[1, 5] = 0.0    # an all-zero row
    ties[1, 6, ::2] = -0.0
    zeros = np.abs(rng.normal(size=(2, 128, 64))).astype(np.float32)
    zeros[rng.random(zeros.shape) < 0.4] = 0.0
    zeros[rng.random(zeros.shape) < 0.4] = -0.0  # signed-zero minima
    return [("gaussian", g), ("student-t", t), ("ties", ties), ("signed zeros", zeros)]


def _configs():
    for axis in ("token", "channel"):
        for bits in (2, 3, 4, 8):
            for group in (32, 64, 128):
                yield "groupwise", dict(bits=bits, group=group, axis=axis)
    yield "q8_0", {}
    yield "q4_0", {}
    for bits in (1, 2, 3, 4):
        yield "turbo", dict(bits=bits, seed=7)
    yield "turbo", dict(bits=3, seed=11, qjl=True)
    for sp in (0.5, 0.7, 0.0):
        yield "bitmap_sparse", dict(sparsity=sp)
    yield "gear", dict(bits=2, group=32, axis="channel", outliers=0.02, rank=4, iters=2, seed=3)
    yield "gear", dict(bits=4, group=32, axis="token", outliers=0.05, rank=2, iters=3, seed=5)
    yield "gear", dict(bits=3, group=64, axis="channel", outliers=0.1, rank=0)


def _fits(method, params, x):
    """Whether ``x`` [S, T, D] has a shape the method accepts."""
    T, D = x.shape[-2:]
    if method == "bitmap_sparse":
        return D % 64 == 0
    if method in ("groupwise", "gear"):
        return (D if params["axis"] == "token" else T) % params["group"] == 0
    return True


def attention_check(kv, method, params, x, rng):
    """ccomp.kv.attention over a cache compressed with ``method`` vs :func:`attention`
    over the reference reconstruction (QJL keys: the reference's unbiased scores);
    returns the relative error of the output."""
    S, T, D = x.shape
    v = rng.normal(size=x.shape).astype(np.float32)
    q = rng.normal(size=(2 * S, 3, D)).astype(np.float32)  # two query heads per K/V head
    kq, vq = kv.quantize(x, method, **params), kv.quantize(v, method, **params)
    got = kv.attention(q, kq, vq)
    vd = dequantize(vq.arrays, method, T, D, **params)
    if method == "turbo" and params.get("qjl"):
        qs = q.reshape(S, 2 * 3, D)
        sc = turbo_scores(kq.arrays, qs, T, D, params["bits"], params.get("seed", 0)) / math.sqrt(D)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        want = (p @ vd.astype(np.float64)).reshape(2 * S, 3, D)
    else:
        want = attention(q, dequantize(kq.arrays, method, T, D, **params), vd)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def self_check(seed=0):
    """Compare every method with ccomp on random data; returns a list of mismatch strings."""
    import ccomp.kv as kv

    rng = np.random.default_rng(seed)
    problems, checked = [], 0
    for method, params in _configs():
        for name, x in _cases(rng):
            if not _fits(method, params, x):
                continue
            tag = f"{method} {params} on {name}"
            try:
                got = kv.quantize(x, method, **params)
            except ValueError as e:
                if "method must be one of" in str(e):
                    problems.append(f"{tag}: not available in ccomp.kv ({e})")
                    break
                raise
            want = quantize(x, method, **params)
            checked += 1
            for key in _EXACT[method]:
                a, b = got.arrays[key], want[key]
                if a.shape != b.shape or not np.array_equal(a.view(np.uint8), np.ascontiguousarray(b).view(np.uint8)):
                    n = a.size if a.shape != b.shape else int(np.sum(a != b))
                    problems.append(f"{tag}: {key} differs ({n} of {b.size} entries; shapes {a.shape} vs {b.shape})")
            T, D = x.shape[-2:]
            deq = got.dequantize()
            ref = dequantize(got.arrays, method, T, D, **params)  # our decoder on ccomp's arrays
            tol = 1e-6 * max(1.0, float(np.abs(ref).max()))
            if not np.allclose(deq, ref, rtol=1e-5, atol=tol):
                problems.append(f"{tag}: dequantize differs by {float(np.abs(deq - ref).max()):.3g}")
            if method == "turbo" and params.get("qjl"):
                agree = np.mean(np.unpackbits(got.arrays["signs"]) == np.unpackbits(want["signs"]))
                if agree < 0.999:
                    problems.append(f"{tag}: QJL sign bits agree on {agree:.4f} only")
                if not np.allclose(got.arrays["res_norms"], want["res_norms"], rtol=1e-5, atol=1e-6):
                    problems.append(f"{tag}: res_norms differ")
            if method == "gear" and params.get("rank", 0) > 0:
                mine = dequantize(want, method, T, D, **params)
                err = np.linalg.norm(mine - deq) / np.linalg.norm(x)
                if err > 1e-5:
                    problems.append(f"{tag}: reconstruction differs from the reference by {err:.3g} (relative)")
            err = attention_check(kv, method, params, x, rng)
            if err > 1e-5:
                problems.append(f"{tag}: attention differs from the reference by {err:.3g} (relative)")
    # fp16 rounding over the whole finite range: every fp16 value, the exact midpoints to its
    # neighbour (ties to even) and random points between, through bitmap_sparse with nothing pruned
    h = np.arange(0x10000, dtype=np.uint32)
    h = h[(h & 0x7C00) != 0x7C00].astype(np.uint16)
    lo, hi = f16_value(h).astype(np.float64), f16_value(h + np.uint16(1)).astype(np.float64)
    ok = (h & 0x7FFF) != 0x7BFF  # the largest finite value has no finite neighbour above
    frac = rng.random(lo.shape)
    pts = np.concatenate([lo, ((lo + hi) / 2)[ok], (lo + frac * (hi - lo))[ok]]).astype(np.float32)
    pts = pts[np.abs(pts) < 65520]
    pts = np.resize(pts, (pts.size // 64 + 1) * 64).reshape(1, -1, 64)
    got = kv.quantize(pts, "bitmap_sparse", sparsity=0.0).arrays["values"]
    if not np.array_equal(got, f16_bits(pts).reshape(1, -1)):
        problems.append(f"fp16 conversion differs on {int(np.sum(got != f16_bits(pts).reshape(1, -1)))} values")
    # KIVI: a prefill, then decode steps of one token, then a chunk
    k, v = rng.normal(size=(2, 3, 300, 64)).astype(np.float32), rng.normal(size=(2, 3, 300, 64)).astype(np.float32)
    for bits, group, residual in ((2, 32, 128), (4, 64, 64)):
        cache = kv.KIVICache(bits=bits, group=group, residual=residual)
        for a, b in ((0, 150), *((t, t + 1) for t in range(150, 170)), (170, 300)):
            cache.append(k[:, :, a:b], v[:, :, a:b])
            kd, vd = kivi_dequantize(k[:, :, :b], v[:, :, :b], bits, group, residual)
            if not (np.array_equal(cache.k_cache.dequantize().reshape(kd.shape), kd)
                    and np.array_equal(cache.v_cache.dequantize().reshape(vd.shape), vd)):
                problems.append(f"KIVICache({bits}, {group}, {residual}) differs after {b} tokens")
                break
        else:
            q = rng.normal(size=(2, 6, 2, 64)).astype(np.float32)  # two query heads per K/V head
            want = attention(q, kd.reshape(k.shape), vd.reshape(v.shape))
            rel_err = np.linalg.norm(kv.attention(q, cache.k_cache, cache.v_cache) - want) / np.linalg.norm(want)
            if rel_err > 1e-5:
                problems.append(f"KIVICache({bits}, {group}, {residual}) attention differs by {rel_err:.3g}")
    core = getattr(kv, "_core", None)
    for b in (1, 2, 3, 4):
        if hasattr(core, "kv_turbo_codebook"):
            c, t = (np.asarray(a, np.float32) for a in core.kv_turbo_codebook(b))
            if not (np.array_equal(c, turbo_codebook(b)[0]) and np.array_equal(t, turbo_codebook(b)[1])):
                problems.append(f"turbo codebook of {b} bits differs")
    for D in (16, 128, 1024):
        if hasattr(core, "kv_turbo_qjl_matrix") and not np.array_equal(core.kv_turbo_qjl_matrix(42, D),
                                                                        qjl_matrix(42, D)):
            problems.append(f"QJL matrix (seed 42, D={D}) differs")
        if hasattr(core, "kv_turbo_rotate"):
            x = rng.normal(size=(4, D)).astype(np.float32)
            for inv in (0, 1):
                if not np.array_equal(core.kv_turbo_rotate(42, x, inv), turbo_rotate(x, 42, bool(inv))):
                    problems.append(f"rotation (seed 42, D={D}, inverse={inv}) differs")
    return checked, problems


if __name__ == "__main__":
    import ccomp.kv as kv

    for b in (1, 2, 3, 4):
        c, t, mse = lloyd_max(b)
        print(f"Lloyd-Max {b} bits: mse {mse:.6f}, centroids {np.round(c, 6).tolist()}")
        if hasattr(kv, "lloyd_max"):
            cc, tc, mc = kv.lloyd_max(b)
            print(f"  ccomp: max |centroid diff| {np.abs(np.asarray(cc) - c).max():.3g}, mse diff {abs(mc - mse):.3g}")
    checked, problems = self_check()
    print(f"{checked} quantize configurations compared with ccomp, plus fp16 rounding, KIVICache streaming, "
          "the turbo codebooks, rotation and QJL matrix")
    for p in problems:
        print("MISMATCH", p)
    if not problems:
        print("all exact fields match byte for byte; reconstructions within tolerance")

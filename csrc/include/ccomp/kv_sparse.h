/* Sparse and low-rank pieces of ccomp.kv: bitmap sparse pruning
 * (Mustafar-style) and the building blocks of GEAR (per-token outliers and a
 * low-rank approximation of a residual).
 *
 * Slices are as in ccomp/kv.h: one head, a row-major float32 matrix of `rows`
 * tokens by `cols` channels with a row stride of `ld` elements.  Buffers are
 * owned by the caller (sizes from the functions below); the core allocates
 * only workspace freed before returning (the low-rank factors, and a private
 * copy of the row being selected, so that a caller rewriting x meanwhile can
 * only change the values, never the counts the buffers are sized for).
 *
 * Selection rule shared by the sparse format and the outliers: in each token
 * row the k entries of largest |x| are chosen, ties (equal |x|, including
 * +0 / -0) going to the lower channel index.  It is computed by a radix select
 * on the IEEE bits of |x| (O(cols) per row, no scratch), so it is exact and
 * deterministic.  Counts are round(s * cols) with round half up, i.e.
 * floor(s * cols + 0.5) evaluated in double precision.
 */
#ifndef CCOMP_KV_SPARSE_H
#define CCOMP_KV_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/kv.h"
#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------ bitmap sparse */

/* Per-token magnitude pruning to a sparsity s (fraction of zeros), 0 <= s < 1:
 * each row keeps kept = cols - round(s * cols) entries (possibly 0 when s is
 * close to 1 and cols small), the others become 0.
 *
 * Storage, in tiles of 64 consecutive channels (cols % 64 == 0), tiles
 * numbered i = row * (cols / 64) + tile in row-major order:
 *   bitmaps[i]: bit j set <=> channel tile * 64 + j is kept;
 *   values:     the kept values as fp16 (round to nearest even), tile after
 *               tile, in channel order inside a tile; nnz = rows * kept;
 *   offsets[i]: index in values of tile i's first value; offsets[ntiles] = nnz
 *               (ntiles + 1 entries; offsets[row * (cols / 64)] = row * kept).
 * rows * cols must be below 2^32 (uint32 offsets). */
enum { CCOMP_KV_SPARSE_TILE = 64 };

typedef struct ccomp_kv_sparse {
    size_t rows, cols;
    double sparsity;
    uint64_t *bitmaps; /* ccomp_kv_sparse_tiles(rows, cols) */
    uint32_t *offsets; /* ccomp_kv_sparse_tiles(rows, cols) + 1 */
    uint16_t *values;  /* ccomp_kv_sparse_nnz(rows, cols, sparsity), fp16 */
    size_t nnz;        /* set by ccomp_kv_sparse_quantize */
} ccomp_kv_sparse;

/* CCOMP_ERR_VALUE (saying what was expected and received) unless cols is a
 * positive multiple of 64, 0 <= sparsity < 1 and rows * cols < 2^32. */
ccomp_status ccomp_kv_sparse_check(size_t rows, size_t cols, double sparsity, ccomp_error *err);
/* Entries kept per row: cols - round(sparsity * cols) (valid parameters). */
size_t ccomp_kv_sparse_kept(size_t cols, double sparsity);
/* rows * kept: the exact number of stored values. */
size_t ccomp_kv_sparse_nnz(size_t rows, size_t cols, double sparsity);
/* rows * cols / 64: the number of bitmaps (offsets has one more entry). */
size_t ccomp_kv_sparse_tiles(size_t rows, size_t cols);

/* CCOMP_ERR_CORRUPT unless offsets[0] == 0, every tile's offset step equals
 * its bitmap's popcount and offsets[ntiles] <= nvalues (the stored values):
 * arrays that pass cannot make the readers below go out of bounds. */
ccomp_status ccomp_kv_sparse_validate(const ccomp_kv_sparse *q, size_t nvalues, ccomp_error *err);

/* Prunes and packs x (q->rows x q->cols, stride ld) into q's buffers and sets
 * q->nnz.  Fails with CCOMP_ERR_VALUE, before writing anything, on bad
 * parameters and on the first (row-major) element that is NaN, infinite or
 * beyond fp16 (|x| >= 65520, which rounds to infinity), naming its token and
 * channel. */
ccomp_status ccomp_kv_sparse_quantize(const float *x, size_t ld, ccomp_kv_sparse *q, ccomp_error *err);
/* out (stride ld) = the pruned matrix, kept values rounded to fp16, 0 elsewhere. */
void ccomp_kv_sparse_dequantize(const ccomp_kv_sparse *q, float *out, size_t ld);
/* s[t] = sum_j q[j] k[t][j] over the kept entries (channel order, float). */
void ccomp_kv_sparse_scores(const ccomp_kv_sparse *k, const float *q, float *s);
/* o[j] += sum_t p[t] v[t][j] over the kept entries (token order, float). */
void ccomp_kv_sparse_accum(const ccomp_kv_sparse *v, const float *p, float *o);

/* ------------------------------------------------------- GEAR outliers */

/* The per_row = round(frac * cols) entries of largest |x| in every token row
 * (the same count for every row, whatever the number of tokens), in CSR-like
 * form with a fixed row length: row t's outliers are
 * idx[t * per_row + m] (strictly increasing channel indices) and
 * vals[t * per_row + m] (the value, fp16 round to nearest even).
 * 0 <= frac < 1, 1 <= cols <= 65536 (uint16 indices). */
typedef struct ccomp_kv_outliers {
    size_t rows, cols, per_row;
    uint16_t *idx;  /* rows * per_row channel indices */
    uint16_t *vals; /* rows * per_row values, fp16 */
} ccomp_kv_outliers;

ccomp_status ccomp_kv_outliers_check(size_t rows, size_t cols, double frac, ccomp_error *err);
/* round(frac * cols) for valid parameters. */
size_t ccomp_kv_outliers_per_row(size_t cols, double frac);

/* Fills o->idx and o->vals from x (o->rows x o->cols, stride ld; o->per_row
 * set by the caller, at most cols) and, when x_filled is not NULL, writes x
 * with the outliers replaced by 0 to x_filled (stride ld2; x_filled may be x
 * itself with ld2 == ld).  The backbone is then quantized from x_filled so that
 * its ranges ignore the outliers.
 *
 * Fill value 0 (as GEAR's reference): it does not depend on the backbone's
 * grouping (per-channel keys or per-token values; a value derived from the
 * row would only suit per-token groups), it lies inside the range of nearly
 * every group of zero-centred K/V activations, and it keeps the decomposition
 * additive: the backbone reconstructs about 0 at an outlier position, so the
 * stored value is x itself and x_filled + S == x up to the fp16 rounding of S.
 * Fails with CCOMP_ERR_VALUE, before writing anything, when per_row > cols,
 * cols is not in [1, 65536], or an element is NaN, infinite or beyond fp16
 * (|x| >= 65520), naming the first such element (token, channel). */
ccomp_status ccomp_kv_outliers_extract(const float *x, size_t ld, ccomp_kv_outliers *o, float *x_filled, size_t ld2,
                                       ccomp_error *err);
/* CCOMP_ERR_CORRUPT unless every channel index is below cols. */
ccomp_status ccomp_kv_outliers_validate(const ccomp_kv_outliers *o, ccomp_error *err);
/* out[t][idx] += val (add back), resp. -= val (e.g. residual = x - D - S). */
void ccomp_kv_outliers_add(const ccomp_kv_outliers *o, float *out, size_t ld);
void ccomp_kv_outliers_sub(const ccomp_kv_outliers *o, float *out, size_t ld);
/* s[t] += sum over row t's outliers of q[idx] * val. */
void ccomp_kv_outliers_scores(const ccomp_kv_outliers *o, const float *q, float *s);
/* out[idx] += p[t] * val for every outlier of every row t. */
void ccomp_kv_outliers_accum(const ccomp_kv_outliers *o, const float *p, float *out);

/* ---------------------------------------------------- GEAR low rank */

/* Rank-r approximation L = U W^T of a residual R (rows x cols, stride ld) by
 * subspace (power) iteration, everything in double precision:
 *   Omega: cols x r Gaussian from `seed` (below);  Y = Omega
 *   repeat iters times:  A = qr(R Y)  and, except after the last,  Y = qr(R^T A)
 *   U = A (rows x r, orthonormal columns),  W = R^T A (cols x r)
 * so that L = A A^T R, the projection of R on the subspace found.  iters
 * counts products with R as GEAR's reference does: iters = 1 is the plain
 * randomized range finder, 2 or 3 are enough on a decaying spectrum.
 * qr is modified Gram-Schmidt applied twice; a column that vanishes (R of
 * rank below r) is replaced by the unit vector e_i with the largest component
 * orthogonal to the previous columns (lowest i on ties), so a matrix of rank
 * <= r is reproduced exactly up to rounding.
 *
 * Omega, row-major (element j * r + k): splitmix64 with state `seed`
 * (state += 0x9e3779b97f4a7c15; z = state; z = (z ^ z >> 30) *
 * 0xbf58476d1ce4e5b9; z = (z ^ z >> 27) * 0x94d049bb133111eb; z ^= z >> 31),
 * u = 1 - (z >> 11) * 2^-53 in (0, 1]; each pair of elements takes two draws
 * u1, u2: sqrt(-2 ln u1) cos(2 pi u2), then sqrt(-2 ln u1) sin(2 pi u2) (the
 * sine of the last pair unused when cols * r is odd).
 *
 * U: rows x r and W: cols x r, row-major float32 (contiguous).  Each slice gets
 * its own basis (nothing is shared between calls).  Fails with
 * CCOMP_ERR_VALUE unless 1 <= rank <= min(rows, cols) and 1 <= iters <= 100,
 * on a NaN or infinite element (naming it) or when W overflows float32;
 * CCOMP_ERR_NOMEM when the (rows + cols) * r doubles of workspace cannot be
 * allocated. */
ccomp_status ccomp_kv_lowrank_check(size_t rows, size_t cols, int rank, int iters, ccomp_error *err);
ccomp_status ccomp_kv_lowrank(const float *R, size_t rows, size_t cols, size_t ld, int rank, int iters, uint64_t seed,
                              float *U, float *W, ccomp_error *err);


/* ------------------------------------------------------------- GEAR */

/* GEAR (Kang et al. 2024): X ~ D + S + L with
 *   S: the per-token outliers of ccomp_kv_outliers (a fixed count per token,
 *      whatever the sequence length), kept in fp16;
 *   D: groupwise quantization (ccomp_kv_gw, 2^b - 1 levels for every b) of X
 *      with the outliers replaced by 0;
 *   L: the rank-r approximation U W^T (ccomp_kv_lowrank, a basis of its own
 *      for every slice) of the residual R = X - D - S, U and W stored as fp16.
 * rank 0 leaves L out.  The caller sets every field and provides the buffers
 * (backbone codes/scale/zero, outliers idx/vals with per_row set, U rows x
 * rank, W cols x rank). */
typedef struct ccomp_kv_gear {
    ccomp_kv_gw backbone;
    ccomp_kv_outliers outliers;
    int rank;
    uint16_t *U; /* rows x rank, fp16 */
    uint16_t *W; /* cols x rank, fp16 */
} ccomp_kv_gear;

/* The checks of the three parts (rank 0 allowed). */
ccomp_status ccomp_kv_gear_check(size_t rows, size_t cols, int bits, int group, int axis, double frac, int rank,
                                 int iters, ccomp_error *err);
/* Fails as its parts do, and with CCOMP_ERR_VALUE when U or W overflows fp16. */
ccomp_status ccomp_kv_gear_quantize(const float *x, size_t ld, ccomp_kv_gear *g, int iters, uint64_t seed,
                                    ccomp_error *err);
void ccomp_kv_gear_dequantize(const ccomp_kv_gear *g, float *out, size_t ld);
void ccomp_kv_gear_scores(const ccomp_kv_gear *g, const float *q, float *s);
void ccomp_kv_gear_accum(const ccomp_kv_gear *g, const float *p, float *o);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_KV_SPARSE_H */

/* ccomp.tokens: cosine-similarity top-k between token sets, the heavy part of
 * correlation-guided token compression, ToMe, PruMerge and VisionZip (docs/tokens.md).
 *
 * Similarity: S[i, j] = float32(<k_i, k_j> / (max(|k_i|, 1e-12) max(|k_j|, 1e-12))) as computed in
 * float64.  Candidates are screened with a cheap product with a proven error bound (int8 keys with
 * AVX-512 VNNI, or float32 tiles of normalized keys); every candidate that the bound cannot rule out
 * is recomputed in float64, so the chosen set and its order (value descending, ties to the lower token
 * index) are those of the float64 definition whichever screen ran.  Bit-identical keys are screened
 * once.  The N x N matrix is never stored: a task holds the similarities of one block of rows. */
#ifndef CCOMP_TOKENS_H
#define CCOMP_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CCOMP_TOKENS_F32 = 0, CCOMP_TOKENS_F64 = 1, CCOMP_TOKENS_F16 = 2 };

/* The screen: AUTO picks int8 where the CPU has AVX-512 VNNI, the keys are float32 or float16, D <= 65536
 * and the typical int8 error bound of the sub-image (the mean residual bound e times (1 + the largest n),
 * screen8.h) is below 0.05, else float32.  The answer is the same. */
enum { CCOMP_TOKENS_SCREEN_AUTO = 0, CCOMP_TOKENS_SCREEN_F32 = 1, CCOMP_TOKENS_SCREEN_INT8 = 2 };

#define CCOMP_TOKENS_MAX_K 4096

/* keys: B x N x D values (dtype CCOMP_TOKENS_F32, _F64 or _F16), C order.
 * For sub-image b, the query rows are rows[rows_off[b] .. rows_off[b + 1]) and the candidates
 * cols[cols_off[b] .. cols_off[b + 1]) (token indices in [0, N)).  For every query row r (in that
 * flat order) out_idx[r * k + t] / out_val[r * k + t], t < k, are its t-th best candidate and the
 * similarity; with exclude_self a row's own token is not a candidate.  Rows with fewer than k
 * candidates are filled with index -1 and value -inf.  screen: CCOMP_TOKENS_SCREEN_* (forcing INT8 on a
 * CPU without AVX-512 VNNI, or with float64 keys, is an error). */
ccomp_status ccomp_tokens_topk(const void *keys, int dtype, size_t B, size_t N, size_t D, const int64_t *rows,
                               const size_t *rows_off, const int64_t *cols, const size_t *cols_off, int exclude_self,
                               size_t k, int screen, int64_t *out_idx, float *out_val, int threads, ccomp_error *err);

/* Weighted sums of token rows, the merging step of the methods: row o of out is
 *   (sum over i with dst[i] = o of w[i] * x[bsel[i]][rows[i]]) / div[o]
 * in float64, the contributions added in the order given (the same bits at any thread count), then
 * rounded to out_dtype (CCOMP_TOKENS_F32 or _F64).  x: B x N x D of dtype CCOMP_TOKENS_*, C order; w NULL:
 * every weight 1; div NULL: no division.  out: n_out x D, overwritten.  Indices out of range are refused. */
ccomp_status ccomp_tokens_gather_sum(const void *x, int dtype, size_t B, size_t N, size_t D, const int64_t *bsel,
                                     const int64_t *rows, const int64_t *dst, const double *w, size_t M,
                                     const double *div, void *out, int out_dtype, size_t n_out, int threads,
                                     ccomp_error *err);

/* Row copies: row i of out (row_bytes bytes) is token rows[i] of sub-image bsel[i] of x (B x N rows of
 * row_bytes bytes, C order).  Indices out of range are refused. */
ccomp_status ccomp_tokens_take(const void *x, size_t row_bytes, size_t B, size_t N, const int64_t *bsel,
                               const int64_t *rows, size_t M, void *out, int threads, ccomp_error *err);

/* The exact similarity (definition above) of tokens i and j of sub-image b. */
float ccomp_tokens_similarity(const void *keys, int dtype, size_t N, size_t D, size_t b, size_t i, size_t j);

/* The screening kernels this CPU runs: "int8 avx512-vnni, float32 avx512", or the float32 kernel alone
 * ("float32 avx512", "float32 avx2", "float32 scalar"). */
const char *ccomp_tokens_kernel_name(void);

#ifdef __cplusplus
}
#endif

#endif

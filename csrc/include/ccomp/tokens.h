/* ccomp.tokens: cosine-similarity top-k between token sets, the heavy part of
 * correlation-guided token compression, ToMe, PruMerge and VisionZip (docs/tokens.md).
 *
 * Similarity: S[i, j] = float32(<k_i, k_j> / (max(|k_i|, 1e-12) max(|k_j|, 1e-12))) as computed in
 * float64.  Candidates are screened with float32 tiles of normalized keys; every candidate within the
 * float32 error bound of the k-th best is recomputed in float64, so the chosen set and its order
 * (value descending, ties to the lower token index) are those of the float64 definition.  The
 * N x N matrix is never stored: a task holds the similarities of one block of rows. */
#ifndef CCOMP_TOKENS_H
#define CCOMP_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CCOMP_TOKENS_F32 = 0, CCOMP_TOKENS_F64 = 1 };

#define CCOMP_TOKENS_MAX_K 4096

/* keys: B x N x D values (dtype CCOMP_TOKENS_F32 or _F64), C order.
 * For sub-image b, the query rows are rows[rows_off[b] .. rows_off[b + 1]) and the candidates
 * cols[cols_off[b] .. cols_off[b + 1]) (token indices in [0, N)).  For every query row r (in that
 * flat order) out_idx[r * k + t] / out_val[r * k + t], t < k, are its t-th best candidate and the
 * similarity; with exclude_self a row's own token is not a candidate.  Rows with fewer than k
 * candidates are filled with index -1 and value -inf. */
ccomp_status ccomp_tokens_topk(const void *keys, int dtype, size_t B, size_t N, size_t D, const int64_t *rows,
                               const size_t *rows_off, const int64_t *cols, const size_t *cols_off, int exclude_self,
                               size_t k, int64_t *out_idx, float *out_val, int threads, ccomp_error *err);

/* The exact similarity (definition above) of tokens i and j of sub-image b. */
float ccomp_tokens_similarity(const void *keys, int dtype, size_t N, size_t D, size_t b, size_t i, size_t j);

/* "avx512", "avx2" or "scalar": the float32 screening kernel this CPU runs. */
const char *ccomp_tokens_kernel_name(void);

#ifdef __cplusplus
}
#endif

#endif

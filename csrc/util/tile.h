/* A register-tiled float32 product shared by the kernels (internal to the core):
 *
 *   C[r][q] (+)= sum_{d < K} A[r * lda + d] * P[d * CCOMP_TILE_W + q],   r < R <= 12, q < 32
 *
 * A: R rows read along d (each element broadcast), P: a packed panel of 32 columns.  Every C element
 * is one chain of fused multiply-adds in d order (continued from C's value when `accumulate`), so
 * splitting K into blocks gives the same bits as one call.  Kernels: AVX-512 (12 rows x 2 zmm),
 * AVX2 + FMA (6 rows x 4 ymm, twice) and scalar, chosen once per CPU. */
#ifndef CCOMP_UTIL_TILE_H
#define CCOMP_UTIL_TILE_H

#include <stddef.h>

#define CCOMP_TILE_W 32
#define CCOMP_TILE_R 12

enum { CCOMP_TILE_SCALAR = 0, CCOMP_TILE_AVX2 = 1, CCOMP_TILE_AVX512 = 2 };

/* The kernel this CPU runs. */
int ccomp_tile_kernel(void);
const char *ccomp_tile_kernel_name(int kern);

void ccomp_tile_nt(int kern, const float *A, size_t lda, size_t R, const float *P, size_t K, float *C, size_t ldc,
                   int accumulate);

#endif

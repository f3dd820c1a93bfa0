/* The shared register-tiled float32 product (tile.h). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* gcc: -ffp-contract=off (the build sets it) */
#endif
#include "tile.h"

#include "ccomp/cpu.h"

#define W CCOMP_TILE_W

static void tile_scalar(const float *A, size_t lda, size_t R, const float *P, size_t K, float *C, size_t ldc,
                        int accumulate)
{
    size_t r, q, d;
    for (r = 0; r < R; r++)
        for (q = 0; q < W; q++) {
            float s = accumulate ? C[r * ldc + q] : 0.0f;
            for (d = 0; d < K; d++) s += A[r * lda + d] * P[d * W + q];
            C[r * ldc + q] = s;
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define TA512 __attribute__((target("avx512f"), always_inline)) static inline
#define TA2 __attribute__((target("avx2,fma"), always_inline)) static inline

TA512 void t512(const float *A, size_t lda, const float *P, size_t K, float *C, size_t ldc, int accumulate,
                const int R)
{
    __m512 c0[CCOMP_TILE_R], c1[CCOMP_TILE_R];
    size_t d;
    int r;
#pragma GCC unroll 12
    for (r = 0; r < R; r++) {
        c0[r] = accumulate ? _mm512_loadu_ps(C + (size_t)r * ldc) : _mm512_setzero_ps();
        c1[r] = accumulate ? _mm512_loadu_ps(C + (size_t)r * ldc + 16) : _mm512_setzero_ps();
    }
    for (d = 0; d < K; d++) {
        const __m512 b0 = _mm512_loadu_ps(P + d * W), b1 = _mm512_loadu_ps(P + d * W + 16);
#pragma GCC unroll 12
        for (r = 0; r < R; r++) {
            const __m512 a = _mm512_set1_ps(A[(size_t)r * lda + d]);
            c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
        }
    }
#pragma GCC unroll 12
    for (r = 0; r < R; r++) {
        _mm512_storeu_ps(C + (size_t)r * ldc, c0[r]);
        _mm512_storeu_ps(C + (size_t)r * ldc + 16, c1[r]);
    }
}

__attribute__((target("avx512f"))) static void tile_avx512(const float *A, size_t lda, size_t R, const float *P,
                                                           size_t K, float *C, size_t ldc, int accumulate)
{
    switch (R) {
    case 12: t512(A, lda, P, K, C, ldc, accumulate, 12); break;
    case 11: t512(A, lda, P, K, C, ldc, accumulate, 11); break;
    case 10: t512(A, lda, P, K, C, ldc, accumulate, 10); break;
    case 9: t512(A, lda, P, K, C, ldc, accumulate, 9); break;
    case 8: t512(A, lda, P, K, C, ldc, accumulate, 8); break;
    case 7: t512(A, lda, P, K, C, ldc, accumulate, 7); break;
    case 6: t512(A, lda, P, K, C, ldc, accumulate, 6); break;
    case 5: t512(A, lda, P, K, C, ldc, accumulate, 5); break;
    case 4: t512(A, lda, P, K, C, ldc, accumulate, 4); break;
    case 3: t512(A, lda, P, K, C, ldc, accumulate, 3); break;
    case 2: t512(A, lda, P, K, C, ldc, accumulate, 2); break;
    case 1: t512(A, lda, P, K, C, ldc, accumulate, 1); break;
    default: break;
    }
}

/* R <= 6 rows by 16 columns (half = 0 or 1 picks the panel half) */
TA2 void t256(const float *A, size_t lda, const float *P, size_t K, float *C, size_t ldc, int accumulate,
              const int R)
{
    __m256 c0[6], c1[6];
    size_t d;
    int r;
#pragma GCC unroll 6
    for (r = 0; r < R; r++) {
        c0[r] = accumulate ? _mm256_loadu_ps(C + (size_t)r * ldc) : _mm256_setzero_ps();
        c1[r] = accumulate ? _mm256_loadu_ps(C + (size_t)r * ldc + 8) : _mm256_setzero_ps();
    }
    for (d = 0; d < K; d++) {
        const __m256 b0 = _mm256_loadu_ps(P + d * W), b1 = _mm256_loadu_ps(P + d * W + 8);
#pragma GCC unroll 6
        for (r = 0; r < R; r++) {
            const __m256 a = _mm256_broadcast_ss(A + (size_t)r * lda + d);
            c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
        }
    }
#pragma GCC unroll 6
    for (r = 0; r < R; r++) {
        _mm256_storeu_ps(C + (size_t)r * ldc, c0[r]);
        _mm256_storeu_ps(C + (size_t)r * ldc + 8, c1[r]);
    }
}

__attribute__((target("avx2,fma"))) static void tile_avx2(const float *A, size_t lda, size_t R, const float *P,
                                                         size_t K, float *C, size_t ldc, int accumulate)
{
    size_t r0;
    int half;
    for (r0 = 0; r0 < R; r0 += 6) {
        size_t n = R - r0 < 6 ? R - r0 : 6;
        for (half = 0; half < 2; half++) {
            const float *a = A + r0 * lda, *p = P + half * 16;
            float *c = C + r0 * ldc + half * 16;
            switch (n) {
            case 6: t256(a, lda, p, K, c, ldc, accumulate, 6); break;
            case 5: t256(a, lda, p, K, c, ldc, accumulate, 5); break;
            case 4: t256(a, lda, p, K, c, ldc, accumulate, 4); break;
            case 3: t256(a, lda, p, K, c, ldc, accumulate, 3); break;
            case 2: t256(a, lda, p, K, c, ldc, accumulate, 2); break;
            default: t256(a, lda, p, K, c, ldc, accumulate, 1); break;
            }
        }
    }
}

int ccomp_tile_kernel(void)
{
    unsigned f = ccomp_cpu_features();
    if ((f & CCOMP_CPU_AVX512F) && (f & CCOMP_CPU_AVX2) && (f & CCOMP_CPU_FMA)) return CCOMP_TILE_AVX512;
    if ((f & CCOMP_CPU_AVX2) && (f & CCOMP_CPU_FMA)) return CCOMP_TILE_AVX2;
    return CCOMP_TILE_SCALAR;
}
#else
static void tile_avx512(const float *A, size_t lda, size_t R, const float *P, size_t K, float *C, size_t ldc,
                        int accumulate)
{
    tile_scalar(A, lda, R, P, K, C, ldc, accumulate);
}
#define tile_avx2 tile_avx512
int ccomp_tile_kernel(void)
{
    return CCOMP_TILE_SCALAR;
}
#endif

const char *ccomp_tile_kernel_name(int kern)
{
    return kern == CCOMP_TILE_AVX512 ? "avx512" : kern == CCOMP_TILE_AVX2 ? "avx2" : "scalar";
}

void ccomp_tile_nt(int kern, const float *A, size_t lda, size_t R, const float *P, size_t K, float *C, size_t ldc,
                   int accumulate)
{
    if (R == 0) return;
    if (R > CCOMP_TILE_R) R = CCOMP_TILE_R;
    if (kern == CCOMP_TILE_AVX512)
        tile_avx512(A, lda, R, P, K, C, ldc, accumulate);
    else if (kern == CCOMP_TILE_AVX2)
        tile_avx2(A, lda, R, P, K, C, ldc, accumulate);
    else
        tile_scalar(A, lda, R, P, K, C, ldc, accumulate);
}

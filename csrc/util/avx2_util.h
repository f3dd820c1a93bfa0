/* Shared pieces of the AVX2 + FMA + F16C kernels (include from a file that is
 * compiled for x86-64 with GCC or Clang; functions carry their own target
 * attribute, so the rest of the build needs no -mavx2). */
#ifndef CCOMP_AVX2_UTIL_H
#define CCOMP_AVX2_UTIL_H

#include <immintrin.h>

#include "ccomp/cpu.h"

#define CCOMP_AVX2_TA __attribute__((target("avx2,fma,f16c")))
#define CCOMP_AVX2_TAI __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* The CPU has AVX2, FMA and F16C (the kernels' requirement). */
static inline int ccomp_avx2_fma_f16c(void)
{
    const unsigned need = CCOMP_CPU_AVX2 | CCOMP_CPU_FMA | CCOMP_CPU_F16C;
    return (ccomp_cpu_features() & need) == need;
}

/* Horizontal sum, minimum and maximum of 8 floats. */
CCOMP_AVX2_TAI float ccomp_avx2_hsum(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

CCOMP_AVX2_TAI float ccomp_avx2_hmin(__m256 v)
{
    __m128 x = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_min_ps(x, _mm_movehl_ps(x, x));
    x = _mm_min_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

CCOMP_AVX2_TAI float ccomp_avx2_hmax(__m256 v)
{
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

#endif /* CCOMP_AVX2_UTIL_H */

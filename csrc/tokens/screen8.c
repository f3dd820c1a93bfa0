/* The int8 screen of the token similarity (screen8.h). */
#include "screen8.h"

#include <math.h>
#include <string.h>

#include "ccomp/cpu.h"

#if TOK8_BUILT

#include <immintrin.h>

#define T8 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

int tok8_available(void)
{
    return (ccomp_cpu_features() & CCOMP_CPU_AVX512VNNI) != 0;
}

T8 float tok8_quantize(const float *k, size_t D, size_t Dp, double inv, int8_t *q, double *e, double *n,
                       int32_t *qsum)
{
    __m512 mx = _mm512_setzero_ps();
    __m512d r2 = _mm512_setzero_pd(), qs = _mm512_setzero_pd(), q2 = _mm512_setzero_pd(), vf, vinv, vs;
    size_t d;
    float m, s;
    double f;
    for (d = 0; d + 16 <= D; d += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(k + d)));
    if (d < D) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps((__mmask16)((1u << (D - d)) - 1u), k + d)));
    m = _mm512_reduce_max_ps(mx);
    memset(q, 0, Dp);
    if (!(m > 0.0f)) { /* a zero key: x = 0 exactly */
        *e = 0.0;
        *n = 0.0;
        *qsum = 0;
        return 0.0f;
    }
    /* q = round(k f) has |q| <= 127; x = k inv is s q plus the residual r, measured below in float64
     * (s >= 1e-35: inv m <= 1 and inv >= 1 / |k| or 1e12) */
    f = 127.0 / (double)m;
    s = (float)(inv / f);
    vf = _mm512_set1_pd(f);
    vinv = _mm512_set1_pd(inv);
    vs = _mm512_set1_pd((double)s);
    for (d = 0; d < D; d += 8) {
        const __mmask8 mk = D - d >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (D - d)) - 1u);
        const __m512d kd = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(mk, k + d));
        const __m512d qd = _mm512_roundscale_pd(_mm512_mul_pd(kd, vf), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512d r = _mm512_fnmadd_pd(vs, qd, _mm512_mul_pd(kd, vinv));
        _mm_mask_storeu_epi8(q + d, mk, _mm256_cvtepi32_epi8(_mm512_cvtpd_epi32(qd)));
        r2 = _mm512_fmadd_pd(r, r, r2);
        qs = _mm512_add_pd(qs, qd);
        q2 = _mm512_fmadd_pd(qd, qd, q2);
    }
    /* each r is within 2^-52 (|x_d| + |r_d|) of its exact value, so |r| within 2^-51; the sum of squares
     * within D 2^-53 relative; sums of integers below 2^53 are exact */
    *e = sqrt(_mm512_reduce_add_pd(r2)) * (1.0 + ldexp(1.0, -30)) + ldexp(1.0, -48);
    *n = (double)s * sqrt(_mm512_reduce_add_pd(q2)) * (1.0 + ldexp(1.0, -40));
    *qsum = (int32_t)_mm512_reduce_add_pd(qs);
    return s;
}

/* the 4-channel groups of each key become 32-bit words, word (w, i) of the slice; q + 128 = q xor 0x80 as a
 * byte */
void tok8_pack_rows(const int8_t *const *q, size_t nr, size_t Dp, uint8_t *slice)
{
    uint32_t *out = (uint32_t *)(void *)slice;
    size_t i, w;
    for (i = 0; i < TOK8_R; i++)
        for (w = 0; w < Dp / 4; w++) {
            uint32_t v = 0;
            if (i < nr) memcpy(&v, q[i] + 4 * w, 4);
            out[w * TOK8_R + i] = v ^ 0x80808080u;
        }
}

void tok8_put_column(int8_t *panel, size_t c, const int8_t *q, size_t Dp)
{
    size_t w;
    for (w = 0; w < Dp / 4; w++) memcpy(panel + 4 * (w * TOK8_W + c), q + 4 * w, 4);
}

void tok8_get_column(const int8_t *panel, size_t c, int8_t *q, size_t Dp)
{
    size_t w;
    for (w = 0; w < Dp / 4; w++) memcpy(q + 4 * w, panel + 4 * (w * TOK8_W + c), 4);
}

/* The accumulators are 24 named variables (GCC keeps arrays of vectors in memory here). */
#define T8_DECL(i) __m512i c0_##i = _mm512_setzero_si512(), c1_##i = c0_##i, c2_##i = c0_##i
#define T8_STEP(i)                                                                                                 \
    do {                                                                                                           \
        const __m512i av = _mm512_set1_epi32((int)a[w * TOK8_R + (i)]);                                            \
        c0_##i = _mm512_dpbusd_epi32(c0_##i, av, b0);                                                              \
        c1_##i = _mm512_dpbusd_epi32(c1_##i, av, b1);                                                              \
        c2_##i = _mm512_dpbusd_epi32(c2_##i, av, b2);                                                              \
    } while (0)
#define T8_SAVE(i)                                                                                                 \
    do {                                                                                                           \
        _mm512_storeu_si512(acc + (i) * TOK8_W, c0_##i);                                                           \
        _mm512_storeu_si512(acc + (i) * TOK8_W + 16, c1_##i);                                                      \
        _mm512_storeu_si512(acc + (i) * TOK8_W + 32, c2_##i);                                                      \
    } while (0)

T8 void tok8_tile(const uint8_t *slice, const int8_t *panel, size_t Dp, const int32_t *csum, const float *cscale,
                  const float *rscale, float *S, size_t lds)
{
    const uint32_t *a = (const uint32_t *)(const void *)slice;
    const uint32_t *p = (const uint32_t *)(const void *)panel;
    const size_t K4 = Dp / 4;
    int32_t acc[TOK8_R * TOK8_W];
    size_t w, v, i;
    T8_DECL(0);
    T8_DECL(1);
    T8_DECL(2);
    T8_DECL(3);
    T8_DECL(4);
    T8_DECL(5);
    T8_DECL(6);
    T8_DECL(7);
    for (w = 0; w < K4; w++) {
        const __m512i b0 = _mm512_loadu_si512(p + w * TOK8_W), b1 = _mm512_loadu_si512(p + w * TOK8_W + 16),
                      b2 = _mm512_loadu_si512(p + w * TOK8_W + 32);
        T8_STEP(0);
        T8_STEP(1);
        T8_STEP(2);
        T8_STEP(3);
        T8_STEP(4);
        T8_STEP(5);
        T8_STEP(6);
        T8_STEP(7);
    }
    /* through memory: GCC spills inside the loop when the accumulators live on into the epilogue */
    T8_SAVE(0);
    T8_SAVE(1);
    T8_SAVE(2);
    T8_SAVE(3);
    T8_SAVE(4);
    T8_SAVE(5);
    T8_SAVE(6);
    T8_SAVE(7);
    /* <q_r, q_c> = sum (q_r + 128) q_c - 128 sum q_c, then the scales */
    for (v = 0; v < TOK8_W; v += 16) {
        const __m512i off = _mm512_slli_epi32(_mm512_loadu_si512(csum + v), 7);
        const __m512 cs = _mm512_loadu_ps(cscale + v);
        for (i = 0; i < TOK8_R; i++)
            _mm512_storeu_ps(S + (size_t)i * lds + v,
                             _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(
                                                             _mm512_loadu_si512(acc + i * TOK8_W + v), off)), cs),
                                           _mm512_set1_ps(rscale[i])));
    }
}

#else

int tok8_available(void)
{
    return 0;
}

#endif

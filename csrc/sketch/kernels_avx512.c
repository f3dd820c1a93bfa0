/* AVX-512 lookup-table GEMV of the sketch for 2- and 4-bit codes (runtime
 * dispatched from kernels.c when the CPU has AVX-512F/VL; 3-bit codes and the
 * other kernels use kernels_avx2.c).
 *
 * vpermps on a zmm register looks 16 lanes up in a 16-entry table held in one
 * register (the low 4 bits of each index lane), so one shuffle yields 16
 * weights, where AVX2 needs two shuffles and a blend for 8.
 *
 * 4 bits: the 8 bytes of 16 codes are broadcast to the 8 qword lanes and
 * shifted by a per-qword amount (vpsrlvq): dword lane 2q gets the code of
 * column q, lane 2q + 1 the code of column q + 8 (32 bits later).  The input
 * x is therefore interleaved once per call, block by block of 16 columns from
 * each group start ([x0, x8, x1, x9, ...], see sk_interleave16); columns past
 * the last whole block keep their places.
 * 2 bits: the 4 bytes of 16 codes are broadcast to the 16 dword lanes and
 * shifted per lane (vpsrlvd), natural order; the 4-entry table is held four
 * times, so the two bits above each code do not matter.
 *
 * Per row: up to 4 x rows at a time, 4 accumulators each, one 8-column block with a 256-bit
 * 16-entry lookup (vpermt2ps) and a scalar tail per group; columns in chunks (see gemv). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* gcc: -ffp-contract=off (the build sets it) */
#endif
#include <math.h>
#include <string.h>

#include "ccomp/cpu.h"
#include "sketch_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define TA __attribute__((target("avx512f,avx512vl,avx2,fma,f16c")))
#define TAI __attribute__((target("avx512f,avx512vl,avx2,fma,f16c"), always_inline)) static inline

int sk_avx512_ok(void)
{
    const unsigned need = CCOMP_CPU_AVX512F | CCOMP_CPU_AVX2 | CCOMP_CPU_FMA | CCOMP_CPU_F16C;
    return (ccomp_cpu_features() & need) == need && __builtin_cpu_supports("avx512vl");
}

/* the 16-lane table: entries 0-15 (b = 4), entries 0-3 four times (b = 2) */
TAI __m512 load_table16(const ccomp_sketch *s, size_t base, const int bits)
{
    switch (s->dtype) {
    case CCOMP_SKETCH_F32: {
        const float *t = (const float *)s->tables + base;
        return bits == 4 ? _mm512_loadu_ps(t) : _mm512_broadcast_f32x4(_mm_loadu_ps(t));
    }
    case CCOMP_SKETCH_F16: {
        const uint16_t *t = (const uint16_t *)s->tables + base;
        return bits == 4 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)t))
                         : _mm512_broadcast_f32x4(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)t)));
    }
    case CCOMP_SKETCH_BF16: {
        const uint16_t *t = (const uint16_t *)s->tables + base;
        if (bits == 4)
            return _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)t)), 16));
        return _mm512_broadcast_f32x4(_mm_castsi128_ps(
            _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(const void *)t)), 16)));
    }
    default: {
        float f[16];
        size_t k, K = (size_t)1 << bits;
        for (k = 0; k < 16; k++) f[k] = (float)((const double *)s->tables)[base + (k & (K - 1))];
        return _mm512_loadu_ps(f);
    }
    }
}

TAI __m512 hsum_prep(__m512 a, __m512 b, __m512 c, __m512 d)
{
    return _mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d));
}

/* 16 weights of the 16 codes at p (layout above) */
TAI __m512 weights16(const uint8_t *p, __m512 t, const int bits)
{
    if (bits == 4) {
        uint64_t u;
        memcpy(&u, p, 8);
        return _mm512_permutexvar_ps(
            _mm512_srlv_epi64(_mm512_set1_epi64((long long)u), _mm512_setr_epi64(4, 0, 12, 8, 20, 16, 28, 24)), t);
    } else {
        uint32_t u;
        memcpy(&u, p, 4);
        return _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi32((int)u),
                                                       _mm512_setr_epi32(6, 4, 2, 0, 14, 12, 10, 8, 22, 20, 18, 16,
                                                                         30, 28, 26, 24)),
                                     t);
    }
}

/* 8 weights of the 8 codes at p, natural order (the 8-column block after the 16-column ones) */
TAI __m256 weights8(const uint8_t *p, __m512 t, const int bits)
{
    uint32_t u = 0;
    __m256i idx;
    if (bits == 4) {
        memcpy(&u, p, 4);
        idx = _mm256_srlv_epi32(_mm256_set1_epi32((int)u), _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24));
    } else {
        u = (uint32_t)p[0] | (uint32_t)p[1] << 8;
        idx = _mm256_srlv_epi32(_mm256_set1_epi32((int)u), _mm256_setr_epi32(6, 4, 2, 0, 14, 12, 10, 8));
    }
    return _mm256_permutex2var_ps(_mm512_castps512_ps256(t), idx,
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
}

#define GEMV_CHUNK 1024 /* columns per pass over a task's rows: up to 4 rows of x (16 KB) stay in L1 */
#define ACC_FLOATS (4 * 16 + 8 + 8) /* per row and x row: 4 zmm accumulators, the 8-column one, the tail */

/* y[i][r] for x rows i < NB (1, 2 or 4) and W rows [r0, r1), r1 - r0 <= SK_GEMV512_ROWS.  The columns are
 * walked in chunks (whole groups when groups are small) across all the rows, each row's accumulators parked
 * in buf between chunks: every lane keeps one chain of fused multiply-adds in column order, so the result
 * does not depend on the chunking. */
TAI void gemv(const ccomp_sketch *s, const float *x, size_t ldx, float *y, size_t r0, size_t r1, float *buf,
              const int NB, const int bits)
{
    const size_t gn = sk_group_cols(s), gb = sk_run_bytes(s), K = (size_t)1 << bits, blocks = gn / 16;
    const size_t bb = 2 * (size_t)bits, cols = s->cols; /* bytes per 16 codes */
    const size_t chunk = gn < GEMV_CHUNK ? (GEMV_CHUNK / gn) * gn : GEMV_CHUNK;
    const int has8 = (gn % 16) >= 8;
    size_t r, c0, c1, g, m, j;
    int i;
    memset(buf, 0, (r1 - r0) * (size_t)NB * ACC_FLOATS * sizeof(float));
    for (c0 = 0; c0 < cols; c0 = c1) {
        c1 = c0 + chunk;
        if (gn >= GEMV_CHUNK && c1 > (c0 / gn + 1) * gn) c1 = (c0 / gn + 1) * gn;
        if (c1 > cols) c1 = cols;
        for (r = r0; r < r1; r++) {
            float *acc = buf + (r - r0) * (size_t)NB * ACC_FLOATS;
            __m512 a0[4], a1[4], a2[4], a3[4];
            __m256 h[4];
#pragma GCC unroll 4
            for (i = 0; i < NB; i++) {
                a0[i] = _mm512_loadu_ps(acc + i * ACC_FLOATS);
                a1[i] = _mm512_loadu_ps(acc + i * ACC_FLOATS + 16);
                a2[i] = _mm512_loadu_ps(acc + i * ACC_FLOATS + 32);
                a3[i] = _mm512_loadu_ps(acc + i * ACC_FLOATS + 48);
                h[i] = _mm256_loadu_ps(acc + i * ACC_FLOATS + 64);
            }
            for (g = c0 / gn; g * gn < c1; g++) {
                const uint8_t *run = s->codes + (r * s->groups + g) * gb;
                const float *xg = x + g * gn;
                const size_t jlo = c0 > g * gn ? c0 - g * gn : 0, jhi = c1 - g * gn < gn ? c1 - g * gn : gn;
                const size_t mend = jhi == gn ? blocks : jhi / 16;
                const __m512 t = load_table16(s, (r * s->groups + g) * K, bits);
                __m512 w;
                for (m = jlo / 16; m + 4 <= mend; m += 4) {
                    const uint8_t *p = run + m * bb;
                    const float *xm = xg + 16 * m;
                    w = weights16(p, t, bits);
#pragma GCC unroll 4
                    for (i = 0; i < NB; i++) a0[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xm + i * ldx), a0[i]);
                    w = weights16(p + bb, t, bits);
#pragma GCC unroll 4
                    for (i = 0; i < NB; i++) a1[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xm + i * ldx + 16), a1[i]);
                    w = weights16(p + 2 * bb, t, bits);
#pragma GCC unroll 4
                    for (i = 0; i < NB; i++) a2[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xm + i * ldx + 32), a2[i]);
                    w = weights16(p + 3 * bb, t, bits);
#pragma GCC unroll 4
                    for (i = 0; i < NB; i++) a3[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xm + i * ldx + 48), a3[i]);
                }
                for (; m < mend; m++) {
                    w = weights16(run + m * bb, t, bits);
#pragma GCC unroll 4
                    for (i = 0; i < NB; i++) a0[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xg + 16 * m + i * ldx), a0[i]);
                }
                if (jhi < gn) continue;
                /* the group's end: an 8-column block, then single columns */
                j = blocks * 16;
                if (has8) {
                    __m256 w8 = weights8(run + j / 8 * (size_t)bits, t, bits);
#pragma GCC unroll 4
                    for (i = 0; i < NB; i++) h[i] = _mm256_fmadd_ps(w8, _mm256_loadu_ps(xg + j + i * ldx), h[i]);
                    j += 8;
                }
                if (j < gn) {
                    float tv[16];
                    _mm512_storeu_ps(tv, t);
                    for (; j < gn; j++) {
                        float tw = tv[sk_code_at(run, j, bits)];
                        for (i = 0; i < NB; i++)
                            acc[i * ACC_FLOATS + 72] = fmaf(tw, xg[i * ldx + j], acc[i * ACC_FLOATS + 72]);
                    }
                }
            }
#pragma GCC unroll 4
            for (i = 0; i < NB; i++) {
                _mm512_storeu_ps(acc + i * ACC_FLOATS, a0[i]);
                _mm512_storeu_ps(acc + i * ACC_FLOATS + 16, a1[i]);
                _mm512_storeu_ps(acc + i * ACC_FLOATS + 32, a2[i]);
                _mm512_storeu_ps(acc + i * ACC_FLOATS + 48, a3[i]);
                _mm256_storeu_ps(acc + i * ACC_FLOATS + 64, h[i]);
            }
        }
    }
    for (r = r0; r < r1; r++)
        for (i = 0; i < NB; i++) {
            const float *acc = buf + ((r - r0) * (size_t)NB + (size_t)i) * ACC_FLOATS;
            __m512 a = hsum_prep(_mm512_loadu_ps(acc), _mm512_loadu_ps(acc + 16), _mm512_loadu_ps(acc + 32),
                                 _mm512_loadu_ps(acc + 48));
            __m256 v = _mm256_add_ps(_mm512_castps512_ps256(a),
                                     _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
            __m128 q;
            v = _mm256_add_ps(v, _mm256_loadu_ps(acc + 64));
            q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            y[(size_t)i * s->rows + r] = _mm_cvtss_f32(q) + acc[72];
        }
}

TA void sk_gemv_rows_avx512(const ccomp_sketch *s, const float *x, size_t n, float *y, size_t r0, size_t r1,
                            float *buf)
{
    const size_t cols = s->cols;
    size_t rt, i;
    for (rt = r0; rt < r1; rt += SK_GEMV512_ROWS) {
        size_t re = r1 - rt < SK_GEMV512_ROWS ? r1 : rt + SK_GEMV512_ROWS;
        i = 0;
        if (s->bits == 4) {
            for (; i + 4 <= n; i += 4) gemv(s, x + i * cols, cols, y + i * s->rows, rt, re, buf, 4, 4);
            for (; i + 2 <= n; i += 2) gemv(s, x + i * cols, cols, y + i * s->rows, rt, re, buf, 2, 4);
            if (i < n) gemv(s, x + i * cols, cols, y + i * s->rows, rt, re, buf, 1, 4);
        } else {
            for (; i + 4 <= n; i += 4) gemv(s, x + i * cols, cols, y + i * s->rows, rt, re, buf, 4, 2);
            for (; i + 2 <= n; i += 2) gemv(s, x + i * cols, cols, y + i * s->rows, rt, re, buf, 2, 2);
            if (i < n) gemv(s, x + i * cols, cols, y + i * s->rows, rt, re, buf, 1, 2);
        }
    }
}

#else

int sk_avx512_ok(void)
{
    return 0;
}

void sk_gemv_rows_avx512(const ccomp_sketch *s, const float *x, size_t n, float *y, size_t r0, size_t r1,
                         float *buf)
{
    (void)buf;
    sk_matmul_rows_ref(s, x, n, CCOMP_SKETCH_F32, y, r0, r1);
}

#endif

/* [x0 .. x15] -> [x0, x8, x1, x9, ..., x7, x15] in every whole 16-column block of every group */
void sk_interleave16(const ccomp_sketch *s, const float *x, size_t n, float *out)
{
    const size_t gn = sk_group_cols(s), blocks = gn / 16;
    size_t i, g, m, q;
    for (i = 0; i < n; i++)
        for (g = 0; g < s->groups; g++) {
            const float *src = x + i * s->cols + g * gn;
            float *dst = out + i * s->cols + g * gn;
            for (m = 0; m < blocks; m++)
                for (q = 0; q < 8; q++) {
                    dst[16 * m + 2 * q] = src[16 * m + q];
                    dst[16 * m + 2 * q + 1] = src[16 * m + q + 8];
                }
            memcpy(dst + 16 * blocks, src + 16 * blocks, (gn - 16 * blocks) * sizeof(float));
        }
}

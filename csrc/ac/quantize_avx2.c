/* AVX2 scan of 8 float32 rows at once (runtime dispatched).
 *
 * Lane k holds row k's running sum; each step adds one column to all lanes,
 * so every lane performs exactly the float additions of ccomp_ac_scan_ref
 * in the same order, and the results are bit-identical to it.  The
 * sequential sums of a single row are a chain of dependent additions; eight
 * rows side by side turn it into vector work. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* gcc: -ffp-contract=off (the build sets it) */
#endif
#include <string.h>

#include "ccomp/cpu.h"
#include "quantize.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

int ccomp_ac_scan8_f32_available(void)
{
    return (ccomp_cpu_features() & CCOMP_CPU_AVX2) != 0;
}

__attribute__((target("avx2"))) static inline void transpose8(__m256 *r)
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

__attribute__((target("avx2"))) void ccomp_ac_scan8_f32(const float *const *p, size_t V, qrow *r)
{
    /* columns [0, main) in blocks of 8; the rest (which always includes the
     * last column, whose running sum is c_last) lane by lane */
    size_t main = ((V - 1u) / 8u) * 8u, i, k;
    __m256 acc = _mm256_setzero_ps(), badv = _mm256_setzero_ps(), zero = _mm256_setzero_ps();
    float lane[8];
    int bad[8];
    for (i = 0; i < main; i += 8) {
        __m256 c[8];
        if (i % CK == 0) {
            _mm256_storeu_ps(lane, acc);
            for (k = 0; k < 8; k++) r[k].ck[i / CK] = lane[k];
        }
        for (k = 0; k < 8; k++) c[k] = _mm256_loadu_ps(p[k] + i);
        transpose8(c);
        for (k = 0; k < 8; k++) {
            badv = _mm256_or_ps(badv, _mm256_cmp_ps(c[k], zero, _CMP_NGE_UQ));
            acc = _mm256_add_ps(acc, c[k]);
        }
    }
    _mm256_storeu_ps(lane, acc);
    {
        float bl[8];
        _mm256_storeu_ps(bl, badv);
        for (k = 0; k < 8; k++) {
            uint32_t b;
            memcpy(&b, &bl[k], sizeof b);
            bad[k] = b != 0;
        }
    }
    for (k = 0; k < 8; k++) {
        float a = lane[k];
        const float *pk = p[k];
        for (i = main; i < V; i++) {
            if (i % CK == 0) r[k].ck[i / CK] = a;
            if (i + 1 == V) r[k].c_last = a;
            bad[k] |= !(pk[i] >= 0.0f);
            a += pk[i];
        }
        r[k].S = a;
        r[k].bad = bad[k];
        r[k].argmax = 0;
    }
}

#else

int ccomp_ac_scan8_f32_available(void)
{
    return 0;
}

void ccomp_ac_scan8_f32(const float *const *p, size_t V, qrow *r)
{
    (void)p;
    (void)V;
    (void)r;
}

#endif

/* AVX2 + FMA + F16C kernels of the groupwise method (runtime dispatched from
 * groupwise.c).
 *
 * Quantize and dequantize perform exactly the scalar code's float operations
 * on each element (subtract, divide, add 0.5, clamp, truncate; multiply then
 * add), and the group parameters follow kv_group_params with the F16C
 * instructions (round to nearest even, the same bits as the portable
 * conversion), so the
 * bytes and values are identical to the reference (_ref) path.  The attention kernels
 * (scores, accum) use the same algebra as the scalar ones with a different
 * summation order and fused multiply-adds: equal within float32 rounding.
 *
 * Codes of a token row are a little-endian bit stream; 8 codes of b bits
 * occupy b bytes, so each group of 8 codes is read or written with one
 * shift-by-lane (vpsrlvd / vpsllvd) of a b-byte word. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* gcc: -ffp-contract=off (the build sets it) */
#endif
#include <string.h>

#include "ccomp/cpu.h"
#include "ccomp/half.h"
#include "kv_internal.h"

/* where a ggml block's values start, after its fp16 scale */
#define QS offsetof(ccomp_kv_block_q8_0, qs)

#if defined(__x86_64__) && defined(__GNUC__)
#include "../util/avx2_util.h"

#define TA CCOMP_AVX2_TA
#define TAI CCOMP_AVX2_TAI
#define hsum ccomp_avx2_hsum
#define hmin ccomp_avx2_hmin
#define hmax ccomp_avx2_hmax

int kv_avx2_ok(void)
{
    return ccomp_avx2_fma_f16c();
}

TAI __m256i lane_shifts(int b)
{
    return _mm256_setr_epi32(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b);
}

TAI uint32_t load_word(const uint8_t *p, int b)
{
    uint32_t u = 0;
    switch (b) {
    case 2: u = (uint32_t)p[0] | (uint32_t)p[1] << 8; break;
    case 3: u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16; break;
    default: memcpy(&u, p, 4); break;
    }
    return u;
}

/* the 8 codes at p as floats */
TAI __m256 unpack8(const uint8_t *p, int b)
{
    __m256i v;
    if (b == 8) return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
    v = _mm256_srlv_epi32(_mm256_set1_epi32((int)load_word(p, b)), lane_shifts(b));
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32((1 << b) - 1)));
}

/* 8 codes (int32 lanes) -> b bytes at out */
TAI void pack8(__m256i codes, int b, uint8_t *out)
{
    __m128i x;
    uint32_t u;
    if (b == 8) {
        x = _mm_packus_epi32(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
        x = _mm_packus_epi16(x, x);
        _mm_storel_epi64((__m128i *)(void *)out, x);
        return;
    }
    codes = _mm256_sllv_epi32(codes, lane_shifts(b));
    x = _mm_or_si128(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
    x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0x4E));
    x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0xB1));
    u = (uint32_t)_mm_cvtsi128_si32(x);
    out[0] = (uint8_t)u;
    out[1] = (uint8_t)(u >> 8);
    if (b >= 3) out[2] = (uint8_t)(u >> 16);
    if (b >= 4) out[3] = (uint8_t)(u >> 24);
}

/* codes of 8 values: s == 0 lanes give 0, others clamp(trunc((v - z) / s + 0.5), 0, levels) */
TAI __m256i codes8(__m256 v, __m256 z, __m256 s, __m256 levels)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 t = _mm256_add_ps(_mm256_div_ps(_mm256_sub_ps(v, z), s), _mm256_set1_ps(0.5f));
    __m256 nz = _mm256_cmp_ps(s, zero, _CMP_NEQ_OQ);
    t = _mm256_min_ps(_mm256_max_ps(t, zero), levels);
    return _mm256_and_si256(_mm256_cvttps_epi32(t), _mm256_castps_si256(nz));
}

/* lanes that are finite */
TAI __m256 finite8(__m256 v)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    return _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), _mm256_set1_ps(__builtin_inff()), _CMP_LT_OQ);
}

TAI float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* kv_group_params for one group with F16C conversions; 0 on fp16 overflow */
TAI int params1(float mn, float mx, float levels, uint16_t *s16, uint16_t *z16, float *s, float *z)
{
    mn += 0.0f; /* -0 -> +0 */
    mx += 0.0f;
    *z16 = _cvtss_sh(mn, _MM_FROUND_TO_NEAREST_INT);
    *s16 = _cvtss_sh((mx - mn) / levels, _MM_FROUND_TO_NEAREST_INT);
    *z = _cvtsh_ss(*z16);
    *s = _cvtsh_ss(*s16);
    return (*z16 & 0x7c00u) != 0x7c00u && (*s16 & 0x7c00u) != 0x7c00u;
}

/* the same for 8 groups (per-channel groups of 8 adjacent channels); 0 on fp16 overflow */
TAI int params8(const float *mn, const float *mx, __m256 levels, uint16_t *s16, uint16_t *z16, float *s, float *z)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 lo = _mm256_add_ps(_mm256_loadu_ps(mn), zero), hi = _mm256_add_ps(_mm256_loadu_ps(mx), zero);
    const __m128i zh = _mm256_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT);
    const __m128i sh = _mm256_cvtps_ph(_mm256_div_ps(_mm256_sub_ps(hi, lo), levels), _MM_FROUND_TO_NEAREST_INT);
    const __m128i expo = _mm_set1_epi16(0x7c00);
    const __m128i bad = _mm_or_si128(_mm_cmpeq_epi16(_mm_and_si128(zh, expo), expo),
                                     _mm_cmpeq_epi16(_mm_and_si128(sh, expo), expo));
    _mm_storeu_si128((__m128i *)(void *)z16, zh);
    _mm_storeu_si128((__m128i *)(void *)s16, sh);
    _mm256_storeu_ps(z, _mm256_cvtph_ps(zh));
    _mm256_storeu_ps(s, _mm256_cvtph_ps(sh));
    return _mm_movemask_epi8(bad) == 0;
}

/* ------------------------------------------------------------- quantize */

TAI int quantize_token(const float *x, size_t ld, ccomp_kv_gw *q, const int b)
{
    const size_t rows = q->rows, cols = q->cols, G = (size_t)q->group, ng = cols / G, rb = cols / 8u * (size_t)b;
    const __m256 levels = _mm256_set1_ps((float)((1u << b) - 1u));
    size_t r, g, c;
    for (r = 0; r < rows; r++) {
        const float *row = x + r * ld;
        uint8_t *out = q->codes + r * rb;
        for (g = 0; g < ng; g++) {
            const float *gp = row + g * G;
            __m256 mn = _mm256_loadu_ps(gp), mx = mn, ok = finite8(mn), vz, vs;
            float s, z;
            for (c = 8; c < G; c += 8) {
                __m256 v = _mm256_loadu_ps(gp + c);
                mn = _mm256_min_ps(v, mn);
                mx = _mm256_max_ps(v, mx);
                ok = _mm256_and_ps(ok, finite8(v));
            }
            if (_mm256_movemask_ps(ok) != 0xff ||
                !params1(hmin(mn), hmax(mx), (float)((1u << b) - 1u), &q->scale[r * ng + g], &q->zero[r * ng + g], &s,
                         &z))
                return -1;
            vz = _mm256_set1_ps(z);
            vs = _mm256_set1_ps(s);
            for (c = 0; c < G; c += 8)
                pack8(codes8(_mm256_loadu_ps(gp + c), vz, vs, levels), b, out + (g * G + c) / 8u * (size_t)b);
        }
    }
    return 0;
}

TAI int quantize_channel(const float *x, size_t ld, ccomp_kv_gw *q, const int b)
{
    const size_t rows = q->rows, cols = q->cols, G = (size_t)q->group, rb = cols / 8u * (size_t)b;
    const __m256 levels = _mm256_set1_ps((float)((1u << b) - 1u));
    float mn[KV_MAX_COLS], mx[KV_MAX_COLS], s[KV_MAX_COLS], z[KV_MAX_COLS];
    size_t g, r, c;
    for (g = 0; g < rows / G; g++) {
        const float *blk = x + g * G * ld;
        __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        memcpy(mn, blk, cols * sizeof(float));
        memcpy(mx, blk, cols * sizeof(float));
        for (r = 0; r < G; r++)
            for (c = 0; c < cols; c += 8) {
                __m256 v = _mm256_loadu_ps(blk + r * ld + c);
                _mm256_storeu_ps(mn + c, _mm256_min_ps(v, _mm256_loadu_ps(mn + c)));
                _mm256_storeu_ps(mx + c, _mm256_max_ps(v, _mm256_loadu_ps(mx + c)));
                ok = _mm256_and_ps(ok, finite8(v));
            }
        if (_mm256_movemask_ps(ok) != 0xff) return -1;
        for (c = 0; c < cols; c += 8)
            if (!params8(mn + c, mx + c, levels, &q->scale[g * cols + c], &q->zero[g * cols + c], s + c, z + c))
                return -1;
        for (r = 0; r < G; r++) {
            const float *row = blk + r * ld;
            uint8_t *out = q->codes + (g * G + r) * rb;
            for (c = 0; c < cols; c += 8)
                pack8(codes8(_mm256_loadu_ps(row + c), _mm256_loadu_ps(z + c), _mm256_loadu_ps(s + c), levels), b,
                      out + c / 8u * (size_t)b);
        }
    }
    return 0;
}

TA int kv_gw_quantize_avx2(const float *x, size_t ld, ccomp_kv_gw *q)
{
    const int tok = q->axis == CCOMP_KV_PER_TOKEN;
    switch (q->bits) {
    case 2: return tok ? quantize_token(x, ld, q, 2) : quantize_channel(x, ld, q, 2);
    case 3: return tok ? quantize_token(x, ld, q, 3) : quantize_channel(x, ld, q, 3);
    case 4: return tok ? quantize_token(x, ld, q, 4) : quantize_channel(x, ld, q, 4);
    default: return tok ? quantize_token(x, ld, q, 8) : quantize_channel(x, ld, q, 8);
    }
}

/* ----------------------------------------------------------- dequantize */

TAI void dequantize_b(const ccomp_kv_gw *q, float *out, size_t ld, const int b)
{
    const size_t rows = q->rows, cols = q->cols, G = (size_t)q->group, rb = cols / 8u * (size_t)b;
    float s[KV_MAX_COLS], z[KV_MAX_COLS];
    size_t r, c;
    for (r = 0; r < rows; r++) {
        const uint8_t *in = q->codes + r * rb;
        float *o = out + r * ld;
        if (q->axis == CCOMP_KV_PER_TOKEN) {
            const size_t ng = cols / G;
            size_t g;
            for (g = 0; g < ng; g++) {
                const __m256 vs = _mm256_set1_ps(h2f(q->scale[r * ng + g])), vz = _mm256_set1_ps(h2f(q->zero[r * ng + g]));
                for (c = g * G; c < (g + 1) * G; c += 8)
                    _mm256_storeu_ps(o + c, _mm256_add_ps(_mm256_mul_ps(vs, unpack8(in + c / 8u * (size_t)b, b)), vz));
            }
        } else {
            if (r % G == 0)
                for (c = 0; c < cols; c++) {
                    s[c] = h2f(q->scale[(r / G) * cols + c]);
                    z[c] = h2f(q->zero[(r / G) * cols + c]);
                }
            for (c = 0; c < cols; c += 8)
                _mm256_storeu_ps(o + c, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(s + c), unpack8(in + c / 8u * (size_t)b, b)),
                                                      _mm256_loadu_ps(z + c)));
        }
    }
}

TA void kv_gw_dequantize_avx2(const ccomp_kv_gw *q, float *out, size_t ld)
{
    switch (q->bits) {
    case 2: dequantize_b(q, out, ld, 2); break;
    case 3: dequantize_b(q, out, ld, 3); break;
    case 4: dequantize_b(q, out, ld, 4); break;
    default: dequantize_b(q, out, ld, 8); break;
    }
}

/* ------------------------------------------------------------ attention */

/* dot of n (multiple of 8) floats with the codes at in */
TAI float dot_codes(const float *w, const uint8_t *in, size_t n, const int b)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t c = 0;
    for (; c + 16 <= n; c += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + c), unpack8(in + c / 8u * (size_t)b, b), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + c + 8), unpack8(in + (c + 8) / 8u * (size_t)b, b), a1);
    }
    if (c < n) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + c), unpack8(in + c / 8u * (size_t)b, b), a0);
    return hsum(_mm256_add_ps(a0, a1));
}

TAI void scores_b(const ccomp_kv_gw *k, const float *q, float *s, const int b)
{
    const size_t rows = k->rows, cols = k->cols, G = (size_t)k->group, rb = cols / 8u * (size_t)b;
    float qs[KV_MAX_COLS];
    size_t r, c;
    if (k->axis == CCOMP_KV_PER_CHANNEL) {
        for (r = 0; r < rows; r += G) {
            const uint16_t *sc = k->scale + (r / G) * cols, *ze = k->zero + (r / G) * cols;
            float zt = 0.0f;
            size_t t;
            for (c = 0; c < cols; c++) {
                qs[c] = q[c] * h2f(sc[c]);
                zt += q[c] * h2f(ze[c]);
            }
            for (t = r; t < r + G; t++) s[t] = dot_codes(qs, k->codes + t * rb, cols, b) + zt;
        }
    } else {
        const size_t ng = cols / G;
        float qsum[KV_MAX_COLS / 32];
        size_t g;
        for (g = 0; g < ng; g++) {
            float a = 0.0f;
            for (c = g * G; c < (g + 1) * G; c++) a += q[c];
            qsum[g] = a;
        }
        for (r = 0; r < rows; r++) {
            const uint8_t *in = k->codes + r * rb;
            float acc = 0.0f;
            for (g = 0; g < ng; g++)
                acc += h2f(k->scale[r * ng + g]) * dot_codes(q + g * G, in + g * G / 8u * (size_t)b, G, b) +
                       h2f(k->zero[r * ng + g]) * qsum[g];
            s[r] = acc;
        }
    }
}

TA void kv_gw_scores_avx2(const ccomp_kv_gw *k, const float *q, float *s)
{
    switch (k->bits) {
    case 2: scores_b(k, q, s, 2); break;
    case 3: scores_b(k, q, s, 3); break;
    case 4: scores_b(k, q, s, 4); break;
    default: scores_b(k, q, s, 8); break;
    }
}

/* acc[c] += w * code[c] + u for the n codes at in (u = p * zero: adding each weighted value whole avoids
 * the cancellation of separate sums of p * scale * code and p * zero) */
TAI void axpy_codes(float w, float u, const uint8_t *in, size_t n, float *acc, const int b)
{
    const __m256 vw = _mm256_set1_ps(w), vu = _mm256_set1_ps(u);
    size_t c;
    for (c = 0; c < n; c += 8)
        _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_fmadd_ps(vw, unpack8(in + c / 8u * (size_t)b, b), vu),
                                                _mm256_loadu_ps(acc + c)));
}

TAI void accum_b(const ccomp_kv_gw *v, const float *p, float *o, const int b)
{
    const size_t rows = v->rows, cols = v->cols, G = (size_t)v->group, rb = cols / 8u * (size_t)b;
    float acc[KV_MAX_COLS];
    size_t r, c;
    memset(acc, 0, cols * sizeof(float));
    if (v->axis == CCOMP_KV_PER_TOKEN) {
        const size_t ng = cols / G;
        size_t g;
        for (r = 0; r < rows; r++) {
            const float pr = p[r];
            const uint8_t *in = v->codes + r * rb;
            for (g = 0; g < ng; g++)
                axpy_codes(pr * h2f(v->scale[r * ng + g]), pr * h2f(v->zero[r * ng + g]), in + g * G / 8u * (size_t)b,
                           G, acc + g * G, b);
        }
        for (c = 0; c < cols; c++) o[c] += acc[c];
    } else {
        for (r = 0; r < rows; r += G) {
            const uint16_t *sc = v->scale + (r / G) * cols, *ze = v->zero + (r / G) * cols;
            float psum = 0.0f;
            size_t t;
            memset(acc, 0, cols * sizeof(float));
            for (t = r; t < r + G; t++) {
                psum += p[t];
                axpy_codes(p[t], 0.0f, v->codes + t * rb, cols, acc, b);
            }
            for (c = 0; c < cols; c++) o[c] += h2f(sc[c]) * acc[c] + h2f(ze[c]) * psum;
        }
    }
}

TA void kv_gw_accum_avx2(const ccomp_kv_gw *v, const float *p, float *o)
{
    switch (v->bits) {
    case 2: accum_b(v, p, o, 2); break;
    case 3: accum_b(v, p, o, 3); break;
    case 4: accum_b(v, p, o, 4); break;
    default: accum_b(v, p, o, 8); break;
    }
}

/* --------------------------------------------------------- ggml blocks */

/* the 32 values of a q8_0 (q8 != 0) or q4_0 block without the scale d, as four vectors (value j in
 * vector j / 8, lane j % 8) */
TAI void ggml_codes(const uint8_t *b, int q8, __m256 *v)
{
    int k;
    if (q8) {
        for (k = 0; k < 4; k++)
            v[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + QS + 8 * k))));
    } else {
        const __m256i m = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
        for (k = 0; k < 2; k++) {
            const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + QS + 8 * k)));
            v[k] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(bytes, m), eight));
            v[k + 2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bytes, 4), eight));
        }
    }
}

TA void kv_ggml_scores_avx2(const uint8_t *blocks, size_t rows, size_t cols, int q8, const float *q, float *s)
{
    const size_t bb = CCOMP_KV_GGML_BLOCK_BYTES(q8 ? CCOMP_KV_Q8_0 : CCOMP_KV_Q4_0);
    size_t r, c;
    for (r = 0; r < rows; r++) {
        __m256 acc = _mm256_setzero_ps();
        for (c = 0; c < cols; c += 32, blocks += bb) {
            __m256 v[4], part;
            ggml_codes(blocks, q8, v);
            part = _mm256_mul_ps(_mm256_loadu_ps(q + c), v[0]);
            part = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 8), v[1], part);
            part = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 16), v[2], part);
            part = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 24), v[3], part);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f((uint16_t)(blocks[0] | blocks[1] << 8))), part, acc);
        }
        s[r] = hsum(acc);
    }
}

TA void kv_ggml_accum_avx2(const uint8_t *blocks, size_t rows, size_t cols, int q8, const float *p, float *o)
{
    const size_t bb = CCOMP_KV_GGML_BLOCK_BYTES(q8 ? CCOMP_KV_Q8_0 : CCOMP_KV_Q4_0);
    size_t r, c;
    int k;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c += 32, blocks += bb) {
            __m256 v[4];
            const __m256 w = _mm256_set1_ps(p[r] * h2f((uint16_t)(blocks[0] | blocks[1] << 8)));
            ggml_codes(blocks, q8, v);
            for (k = 0; k < 4; k++)
                _mm256_storeu_ps(o + c + 8 * k, _mm256_fmadd_ps(w, v[k], _mm256_loadu_ps(o + c + 8 * k)));
        }
}

/* ---------------------------------------------------------- dense rows */

TA void kv_dense_scores_avx2(const float *m, size_t rows, size_t cols, const float *q, float *s)
{
    size_t r;
    for (r = 0; r < rows; r++) {
        const float *row = m + r * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        float tail = 0.0f;
        size_t c = 0;
        for (; c + 16 <= cols; c += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(row + c), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 8), _mm256_loadu_ps(row + c + 8), a1);
        }
        for (; c + 8 <= cols; c += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(row + c), a0);
        for (; c < cols; c++) tail += q[c] * row[c];
        s[r] = hsum(_mm256_add_ps(a0, a1)) + tail;
    }
}

TA void kv_dense_accum_avx2(const float *m, size_t rows, size_t cols, const float *p, float *o)
{
    size_t r, c;
    for (r = 0; r < rows; r++) {
        const float *row = m + r * cols;
        const __m256 w = _mm256_set1_ps(p[r]);
        for (c = 0; c + 8 <= cols; c += 8)
            _mm256_storeu_ps(o + c, _mm256_fmadd_ps(w, _mm256_loadu_ps(row + c), _mm256_loadu_ps(o + c)));
        for (; c < cols; c++) o[c] += p[r] * row[c];
    }
}

/* ------------------------------------------------------------- softmax */

/* e^x for x <= 0 (x >= -87.3 after clamping): x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-6
 * polynomial (Taylor coefficients; relative error below 2e-7 on that interval), times 2^n. */
TAI __m256 exp_neg(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), ln2_hi = _mm256_set1_ps(0.693359375f),
                 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 n, r, p;
    __m256i e;
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_fnmadd_ps(n, ln2_hi, x);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);
    p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

TA float kv_softmax_avx2(float *s, size_t n, float scale)
{
    const __m256 vs = _mm256_set1_ps(scale);
    __m256 mx = _mm256_set1_ps(-__builtin_inff()), z = _mm256_setzero_ps(), vm;
    float m = -__builtin_inff(), zt;
    size_t t;
    for (t = 0; t + 8 <= n; t += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s + t), vs);
        _mm256_storeu_ps(s + t, v);
        mx = _mm256_max_ps(mx, v);
    }
    for (; t < n; t++) {
        s[t] *= scale;
        m = s[t] > m ? s[t] : m;
    }
    m = hmax(mx) > m ? hmax(mx) : m;
    vm = _mm256_set1_ps(m);
    for (t = 0; t + 8 <= n; t += 8) {
        __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + t), vm));
        _mm256_storeu_ps(s + t, e);
        z = _mm256_add_ps(z, e);
    }
    zt = hsum(z);
    for (; t < n; t++) {
        s[t] = __builtin_expf(s[t] - m);
        zt += s[t];
    }
    return zt;
}

#else /* not x86-64: the reference path only */

int kv_avx2_ok(void)
{
    return 0;
}
int kv_gw_quantize_avx2(const float *x, size_t ld, ccomp_kv_gw *q)
{
    (void)x;
    (void)ld;
    (void)q;
    return -1;
}
void kv_gw_dequantize_avx2(const ccomp_kv_gw *q, float *out, size_t ld)
{
    (void)q;
    (void)out;
    (void)ld;
}
void kv_gw_scores_avx2(const ccomp_kv_gw *k, const float *q, float *s)
{
    (void)k;
    (void)q;
    (void)s;
}
void kv_gw_accum_avx2(const ccomp_kv_gw *v, const float *p, float *o)
{
    (void)v;
    (void)p;
    (void)o;
}
float kv_softmax_avx2(float *s, size_t n, float scale)
{
    (void)s;
    (void)n;
    (void)scale;
    return 0.0f;
}
void kv_ggml_scores_avx2(const uint8_t *blocks, size_t rows, size_t cols, int q8, const float *q, float *s)
{
    (void)blocks;
    (void)rows;
    (void)cols;
    (void)q8;
    (void)q;
    (void)s;
}
void kv_ggml_accum_avx2(const uint8_t *blocks, size_t rows, size_t cols, int q8, const float *p, float *o)
{
    (void)blocks;
    (void)rows;
    (void)cols;
    (void)q8;
    (void)p;
    (void)o;
}
void kv_dense_scores_avx2(const float *m, size_t rows, size_t cols, const float *q, float *s)
{
    (void)m;
    (void)rows;
    (void)cols;
    (void)q;
    (void)s;
}
void kv_dense_accum_avx2(const float *m, size_t rows, size_t cols, const float *p, float *o)
{
    (void)m;
    (void)rows;
    (void)cols;
    (void)p;
    (void)o;
}
#endif

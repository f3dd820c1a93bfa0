/* AVX2 + FMA + F16C float32 kernels of the sketch (runtime dispatched from
 * kernels.c; the reference loops there are the specification).
 *
 * Decoding 8 codes: 8 codes of b bits are b whole bytes (runs start on a byte
 * and 8-column blocks are counted from the group start).  The b bytes are
 * broadcast to the 8 lanes and shifted by a per-lane amount (vpsrlvd) so that
 * lane k holds the code of column k in its low bits; vpermps then looks the
 * weights up in the group's table held in registers: it reads the low 3 bits
 * of each lane, so a 16-entry table (b = 4) is two registers (entries 0-7 and
 * 8-15) and a blend on bit 3, an 8-entry table (b = 3) one register, and a
 * 4-entry table (b = 2) one register holding it twice (bit 2 is ignored).
 *
 * matmul, batch < SK_GEMM_MIN_BATCH: the lookup-table GEMV.  For every W row
 * and group the table is loaded once, and for every 8 columns the weights are
 * decoded in registers and multiplied with x (4 accumulators per x row); no
 * dense weight is ever stored.  This beats the alternative of per-code
 * partial sums of x (a scatter per weight, which AVX2 cannot vectorise):
 * per 8 weights one broadcast load, two shifts, two vpermps, a blend and an
 * FMA (about 3 cycles; 4096 x 4096 at 4 bits: 2.0 ms on one Sapphire Rapids
 * core, where kernels_avx512.c takes 1.0 ms and NumPy's float32 matvec 2.5).
 * matmul at larger batches and grad_input decode W into float32 blocks with
 * sk_decode_rows_avx2 and multiply with the shared tile kernel (kernels.c).
 * grad_tables: D = gy^T x is formed 4 W rows x 16 columns at a time in
 * registers and added into the rows' per-code sums; D is never stored whole.
 *
 * Every output element is one fixed chain of fused multiply-adds whatever
 * the blocking or the task that computes it (for a given batch size).  The small
 * loops over register blocks carry "#pragma GCC unroll" so that their
 * accumulators live in registers (gcc -O2 would leave some in memory). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* gcc: -ffp-contract=off (the build sets it) */
#endif
#include <math.h>
#include <string.h>

#include "../util/tile.h"
#include "ccomp/cpu.h"
#include "sketch_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "../util/avx2_util.h"

#define TA CCOMP_AVX2_TA
#define TAI CCOMP_AVX2_TAI
#define hsum ccomp_avx2_hsum

int sk_avx2_ok(void)
{
    return ccomp_avx2_fma_f16c();
}

TAI __m256 bf16x8(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The table of (r, g): lo = entries 0-7 (b = 2: entries 0-3 twice), hi = entries 8-15 (b = 4). */
TAI void load_table(const ccomp_sketch *s, size_t r, size_t g, __m256 *lo, __m256 *hi, const int bits)
{
    const size_t K = (size_t)1 << bits, base = (r * s->groups + g) * K;
    __m128 q;
    switch (s->dtype) {
    case CCOMP_SKETCH_F32: {
        const float *t = (const float *)s->tables + base;
        if (bits == 2) {
            q = _mm_loadu_ps(t);
            *lo = *hi = _mm256_set_m128(q, q);
            return;
        }
        *lo = _mm256_loadu_ps(t);
        *hi = bits == 4 ? _mm256_loadu_ps(t + 8) : *lo;
        return;
    }
    case CCOMP_SKETCH_F16: {
        const uint16_t *t = (const uint16_t *)s->tables + base;
        if (bits == 2) {
            q = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)t));
            *lo = *hi = _mm256_set_m128(q, q);
            return;
        }
        *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)t));
        *hi = bits == 4 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(t + 8))) : *lo;
        return;
    }
    case CCOMP_SKETCH_BF16: {
        const uint16_t *t = (const uint16_t *)s->tables + base;
        if (bits == 2) {
            q = _mm256_castps256_ps128(bf16x8(_mm_loadl_epi64((const __m128i *)(const void *)t)));
            *lo = *hi = _mm256_set_m128(q, q);
            return;
        }
        *lo = bf16x8(_mm_loadu_si128((const __m128i *)(const void *)t));
        *hi = bits == 4 ? bf16x8(_mm_loadu_si128((const __m128i *)(const void *)(t + 8))) : *lo;
        return;
    }
    default: {
        float f[CCOMP_SKETCH_MAX_ENTRIES];
        size_t k;
        for (k = 0; k < K; k++) f[k] = (float)((const double *)s->tables)[base + k];
        for (; k < 8; k++) f[k] = f[k & (K - 1)];
        *lo = _mm256_loadu_ps(f);
        *hi = bits == 4 ? _mm256_loadu_ps(f + 8) : *lo;
        return;
    }
    }
}

/* The 8 codes held by the b bytes at p, in the low bits of lanes 0-7 (higher bits are left over). */
TAI __m256i codes8(const uint8_t *p, const int bits)
{
    uint32_t u;
    if (bits == 4) {
        memcpy(&u, p, 4);
        return _mm256_srlv_epi32(_mm256_set1_epi32((int)u), _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24));
    }
    if (bits == 3) {
        u = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8;
        return _mm256_srlv_epi32(_mm256_set1_epi32((int)u), _mm256_setr_epi32(29, 26, 23, 20, 17, 14, 11, 8));
    }
    u = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    return _mm256_srlv_epi32(_mm256_set1_epi32((int)u), _mm256_setr_epi32(6, 4, 2, 0, 14, 12, 10, 8));
}

TAI __m256 lookup8(__m256i idx, __m256 lo, __m256 hi, const int bits)
{
    __m256 a = _mm256_permutevar8x32_ps(lo, idx);
    if (bits != 4) return a;
    return _mm256_blendv_ps(a, _mm256_permutevar8x32_ps(hi, idx), _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* The 8 weights of columns [8m, 8m + 8) of a run. */
TAI __m256 weights8(const uint8_t *run, size_t m, __m256 lo, __m256 hi, const int bits)
{
    return lookup8(codes8(run + m * (size_t)bits, bits), lo, hi, bits);
}

/* W[r][c0 .. c1) as floats (any columns: split at group ends). */
TAI void decode_range(const ccomp_sketch *s, size_t gb, size_t r, size_t c0, size_t c1, float *out, const int bits)
{
    const size_t gn = sk_group_cols(s);
    size_t c = c0;
    while (c < c1) {
        size_t g = c / gn, j = c - g * gn, jend = (c1 < (g + 1) * gn ? c1 : (g + 1) * gn) - g * gn;
        const uint8_t *run = s->codes + (r * s->groups + g) * gb;
        __m256 lo, hi;
        load_table(s, r, g, &lo, &hi, bits);
        c += jend - j;
        if ((j & 7u) || (jend & 7u)) { /* columns outside whole 8-column blocks */
            float tv[CCOMP_SKETCH_MAX_ENTRIES];
            size_t j8 = (j + 7u) & ~(size_t)7u, e8 = jend & ~(size_t)7u;
            _mm256_storeu_ps(tv, lo);
            _mm256_storeu_ps(tv + 8, hi);
            if (j8 > jend) j8 = jend;
            for (; j < j8; j++) *out++ = tv[sk_code_at(run, j, bits)];
            for (; j < e8; j += 8, out += 8) _mm256_storeu_ps(out, weights8(run, j / 8, lo, hi, bits));
            for (; j < jend; j++) *out++ = tv[sk_code_at(run, j, bits)];
        } else {
            for (; j < jend; j += 8, out += 8) _mm256_storeu_ps(out, weights8(run, j / 8, lo, hi, bits));
        }
    }
}

/* ------------------------------------------------------ matmul: LUT GEMV */

/* y[i][r] for x rows i < NB (1 or 2) and W rows [r0, r1). */
TAI void lut_gemv(const ccomp_sketch *s, const float *x, float *y, size_t r0, size_t r1, const int NB, const int bits)
{
    const size_t gn = sk_group_cols(s), blocks = gn / 8, cols = s->cols, gb = sk_run_bytes(s);
    size_t r, g, m, j;
    int i;
    for (r = r0; r < r1; r++) {
        __m256 a0[2], a1[2], a2[2], a3[2];
        float tail[2] = {0.0f, 0.0f};
        const uint8_t *run = s->codes + r * s->groups * gb;
#pragma GCC unroll 4
        for (i = 0; i < NB; i++) a0[i] = a1[i] = a2[i] = a3[i] = _mm256_setzero_ps();
        for (g = 0; g < s->groups; g++, run += gb) {
            const float *xg = x + g * gn;
            __m256 lo, hi, w;
            load_table(s, r, g, &lo, &hi, bits);
            for (m = 0; m + 4 <= blocks; m += 4) {
                const float *xm = xg + 8 * m;
                w = weights8(run, m, lo, hi, bits);
#pragma GCC unroll 4
                for (i = 0; i < NB; i++) a0[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xm + i * cols), a0[i]);
                w = weights8(run, m + 1, lo, hi, bits);
#pragma GCC unroll 4
                for (i = 0; i < NB; i++) a1[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xm + i * cols + 8), a1[i]);
                w = weights8(run, m + 2, lo, hi, bits);
#pragma GCC unroll 4
                for (i = 0; i < NB; i++) a2[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xm + i * cols + 16), a2[i]);
                w = weights8(run, m + 3, lo, hi, bits);
#pragma GCC unroll 4
                for (i = 0; i < NB; i++) a3[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xm + i * cols + 24), a3[i]);
            }
            for (; m < blocks; m++) {
                w = weights8(run, m, lo, hi, bits);
#pragma GCC unroll 4
                for (i = 0; i < NB; i++) a0[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xg + 8 * m + i * cols), a0[i]);
            }
            if (blocks * 8 < gn) {
                float tv[CCOMP_SKETCH_MAX_ENTRIES];
                _mm256_storeu_ps(tv, lo);
                _mm256_storeu_ps(tv + 8, hi);
                for (j = blocks * 8; j < gn; j++) {
                    float t = tv[sk_code_at(run, j, bits)];
#pragma GCC unroll 4
                    for (i = 0; i < NB; i++) tail[i] = fmaf(t, xg[i * cols + j], tail[i]);
                }
            }
        }
#pragma GCC unroll 4
        for (i = 0; i < NB; i++)
            y[(size_t)i * s->rows + r] =
                hsum(_mm256_add_ps(_mm256_add_ps(a0[i], a1[i]), _mm256_add_ps(a2[i], a3[i]))) + tail[i];
    }
}

/* ------------------------------------------------------- matmul: tiles */

/* One chain per (x row, W row) over the columns of a tile: the chunk's sum. */
TAI void matmul_bits(const ccomp_sketch *s, const float *x, size_t n, float *y, size_t r0, size_t r1, float *tile,
                     const int bits)
{
    size_t i = 0;
    (void)tile;
    for (; i + 2 <= n; i += 2) lut_gemv(s, x + i * s->cols, y + i * s->rows, r0, r1, 2, bits);
    if (i < n) lut_gemv(s, x + i * s->cols, y + i * s->rows, r0, r1, 1, bits);
}

TA void sk_matmul_rows_avx2(const ccomp_sketch *s, const float *x, size_t n, float *y, size_t r0, size_t r1,
                            float *scratch)
{
    switch (s->bits) {
    case 2: matmul_bits(s, x, n, y, r0, r1, scratch, 2); break;
    case 3: matmul_bits(s, x, n, y, r0, r1, scratch, 3); break;
    default: matmul_bits(s, x, n, y, r0, r1, scratch, 4); break;
    }
}

/* --------------------------------------------------------- grad_tables */

/* D[rr][0..8V) = sum_i gy[i][r + rr] x[i][c .. c + 8V) for R W rows, one chain per element. */
TAI void d_block(const float *x, size_t ldx, const float *gy, size_t ldg, size_t n, float *d, const int R, const int V)
{
    __m256 acc[4][2];
    size_t i;
    int rr, v;
#pragma GCC unroll 4
    for (rr = 0; rr < R; rr++) {
#pragma GCC unroll 2
        for (v = 0; v < V; v++) acc[rr][v] = _mm256_setzero_ps();
    }
    for (i = 0; i < n; i++) {
        const float *xi = x + i * ldx, *gi = gy + i * ldg;
        __m256 xv0 = _mm256_loadu_ps(xi), xv1 = V > 1 ? _mm256_loadu_ps(xi + 8) : xv0;
#pragma GCC unroll 4
        for (rr = 0; rr < R; rr++) {
            __m256 b = _mm256_broadcast_ss(gi + rr);
            acc[rr][0] = _mm256_fmadd_ps(b, xv0, acc[rr][0]);
            if (V > 1) acc[rr][1] = _mm256_fmadd_ps(b, xv1, acc[rr][1]);
        }
    }
#pragma GCC unroll 4
    for (rr = 0; rr < R; rr++) {
#pragma GCC unroll 2
        for (v = 0; v < V; v++) _mm256_storeu_ps(d + rr * 16 + v * 8, acc[rr][v]);
    }
}

/* the scalar chain of one column (the tail of a group), as one lane of d_block */
TAI float d_one(const float *x, size_t ldx, const float *gy, size_t ldg, size_t n)
{
    float acc = 0.0f;
    size_t i;
    for (i = 0; i < n; i++) acc = fmaf(gy[i * ldg], x[i * ldx], acc);
    return acc;
}

/* the codes of columns [8m, 8m + 8) of a run as int32 (natural order) */
TAI void codes_i32(const uint8_t *run, size_t m, int32_t *out, const int bits)
{
    _mm256_storeu_si256((__m256i *)(void *)out,
                        _mm256_and_si256(codes8(run + m * (size_t)bits, bits), _mm256_set1_epi32((1 << bits) - 1)));
}

TAI void grad_tables_block(const ccomp_sketch *s, const float *x, const float *gy, size_t n, float *gt, size_t r,
                           const int R, const int bits)
{
    const size_t gn = sk_group_cols(s), K = (size_t)1 << bits, cols = s->cols, rows = s->rows, gb = sk_run_bytes(s);
    size_t g, j, jj;
    int rr;
    for (g = 0; g < s->groups; g++) {
        float acc[4][CCOMP_SKETCH_MAX_ENTRIES], d[4 * 16];
        int32_t idx[4 * 16];
        const uint8_t *run[4];
        const float *xg = x + g * gn;
        for (rr = 0; rr < R; rr++) {
            run[rr] = s->codes + ((r + (size_t)rr) * s->groups + g) * gb;
            memset(acc[rr], 0, sizeof acc[rr]);
        }
        /* per-code sums in column order; the rows interleaved so that no add waits on the previous one */
        for (j = 0; j + 16 <= gn; j += 16) {
            d_block(xg + j, cols, gy + r, rows, n, d, R, 2);
            for (rr = 0; rr < R; rr++) {
                codes_i32(run[rr], j / 8, idx + rr * 16, bits);
                codes_i32(run[rr], j / 8 + 1, idx + rr * 16 + 8, bits);
            }
            for (jj = 0; jj < 16; jj++) {
#pragma GCC unroll 4
                for (rr = 0; rr < R; rr++) acc[rr][idx[rr * 16 + jj]] += d[rr * 16 + jj];
            }
        }
        if (j + 8 <= gn) {
            d_block(xg + j, cols, gy + r, rows, n, d, R, 1);
            for (rr = 0; rr < R; rr++) codes_i32(run[rr], j / 8, idx + rr * 16, bits);
            for (jj = 0; jj < 8; jj++) {
#pragma GCC unroll 4
                for (rr = 0; rr < R; rr++) acc[rr][idx[rr * 16 + jj]] += d[rr * 16 + jj];
            }
            j += 8;
        }
        for (; j < gn; j++)
            for (rr = 0; rr < R; rr++)
                acc[rr][sk_code_at(run[rr], j, bits)] += d_one(xg + j, cols, gy + r + (size_t)rr, rows, n);
        for (rr = 0; rr < R; rr++) memcpy(gt + ((r + (size_t)rr) * s->groups + g) * K, acc[rr], K * sizeof(float));
    }
}

/* grad_tables with D from the shared tile kernel: for each 32-column panel, D[48][32] = gyT rows x the panel
 * of x (channel blocks of 256), then the per-code sums in column order as above (the same D chains, so the
 * same bits as grad_tables_block). gyT: [rows][n] (gy transposed), xp: [panels][n][32] (x in column
 * panels, zero past the last column). */
TAI void grad_tables_tiled_bits(const ccomp_sketch *s, const float *gyT, const float *xp, size_t n, float *gt,
                                size_t r0, size_t r1, float *d, int kern, const int bits)
{
    const size_t gn = sk_group_cols(s), K = (size_t)1 << bits, cols = s->cols, gb = sk_run_bytes(s), W = 32;
    const size_t nr = r1 - r0, np = (cols + W - 1) / W;
    size_t cb, kb, rr, r, q;
    int32_t idx[8];
    memset(gt + r0 * s->groups * K, 0, nr * s->groups * K * sizeof(float));
    for (cb = 0; cb < np; cb++) {
        const float *P = xp + cb * n * W;
        const size_t c0 = cb * W, qn = cols - c0 < W ? cols - c0 : W;
        for (kb = 0; kb < n; kb += 256) {
            const size_t kc = n - kb < 256 ? n - kb : 256;
            for (rr = 0; rr < nr; rr += 12)
                ccomp_tile_nt(kern, gyT + (r0 + rr) * n + kb, n, nr - rr, P + kb * W, kc, d + rr * W, W, kb > 0);
        }
        for (r = 0; r < nr; r++) {
            const float *dr = d + r * W;
            float *gtr = gt + (r0 + r) * s->groups * K;
            for (q = 0; q < qn;) {
                const size_t c = c0 + q, g = c / gn, j = c - g * gn;
                const uint8_t *run = s->codes + ((r0 + r) * s->groups + g) * gb;
                float *acc = gtr + g * K;
                if ((j & 7u) == 0 && j + 8 <= gn && q + 8 <= qn) {
                    size_t t;
                    codes_i32(run, j / 8, idx, bits);
                    for (t = 0; t < 8; t++) acc[idx[t]] += dr[q + t];
                    q += 8;
                } else {
                    acc[sk_code_at(run, j, bits)] += dr[q];
                    q++;
                }
            }
        }
    }
}

TA void sk_grad_tables_tiled_avx2(const ccomp_sketch *s, const float *gyT, const float *xp, size_t n, float *gt,
                                  size_t r0, size_t r1, float *d, int kern)
{
    switch (s->bits) {
    case 2: grad_tables_tiled_bits(s, gyT, xp, n, gt, r0, r1, d, kern, 2); break;
    case 3: grad_tables_tiled_bits(s, gyT, xp, n, gt, r0, r1, d, kern, 3); break;
    default: grad_tables_tiled_bits(s, gyT, xp, n, gt, r0, r1, d, kern, 4); break;
    }
}

TAI void grad_tables_bits(const ccomp_sketch *s, const float *x, const float *gy, size_t n, float *gt, size_t r0,
                          size_t r1, const int bits)
{
    size_t r = r0;
    for (; r + 4 <= r1; r += 4) grad_tables_block(s, x, gy, n, gt, r, 4, bits);
    for (; r < r1; r++) grad_tables_block(s, x, gy, n, gt, r, 1, bits);
}

TA void sk_grad_tables_rows_avx2(const ccomp_sketch *s, const float *x, const float *gy, size_t n, float *gt, size_t r0,
                                 size_t r1)
{
    switch (s->bits) {
    case 2: grad_tables_bits(s, x, gy, n, gt, r0, r1, 2); break;
    case 3: grad_tables_bits(s, x, gy, n, gt, r0, r1, 3); break;
    default: grad_tables_bits(s, x, gy, n, gt, r0, r1, 4); break;
    }
}

/* ---------------------------------------------------------- grad_input */

/* gx[i][c .. c + 8V) for I gy rows += sum over nr tile rows of gy[i][r] w[r][...]; one chain per element. */
TA void sk_decode_rows_avx2(const ccomp_sketch *s, size_t r0, size_t nr, size_t c0, size_t c1, float *out,
                            size_t ldo)
{
    const size_t gb = sk_run_bytes(s);
    size_t r;
    for (r = 0; r < nr; r++) switch (s->bits) {
        case 2: decode_range(s, gb, r0 + r, c0, c1, out + r * ldo, 2); break;
        case 3: decode_range(s, gb, r0 + r, c0, c1, out + r * ldo, 3); break;
        default: decode_range(s, gb, r0 + r, c0, c1, out + r * ldo, 4); break;
        }
}

/* ------------------------------------------------------------- fitting */

/* y -= a x (fused), for the GPTQ updates of fit.c */
TA void sk_axpy_avx2(size_t n, float a, const float *x, float *y)
{
    const __m256 va = _mm256_set1_ps(a);
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(y + k, _mm256_fnmadd_ps(va, _mm256_loadu_ps(x + k), _mm256_loadu_ps(y + k)));
    for (; k < n; k++) y[k] = fmaf(-a, x[k], y[k]);
}

#else /* no x86-64: the reference paths run instead */

int sk_avx2_ok(void)
{
    return 0;
}

void sk_matmul_rows_avx2(const ccomp_sketch *s, const float *x, size_t n, float *y, size_t r0, size_t r1,
                         float *scratch)
{
    (void)scratch;
    sk_matmul_rows_ref(s, x, n, CCOMP_SKETCH_F32, y, r0, r1);
}

void sk_grad_tables_rows_avx2(const ccomp_sketch *s, const float *x, const float *gy, size_t n, float *gt, size_t r0,
                              size_t r1)
{
    sk_grad_tables_rows_ref(s, x, gy, n, CCOMP_SKETCH_F32, gt, r0, r1);
}

void sk_decode_rows_avx2(const ccomp_sketch *s, size_t r0, size_t nr, size_t c0, size_t c1, float *out, size_t ldo)
{
    const size_t gn = sk_group_cols(s), K = (size_t)1 << s->bits;
    size_t r, c;
    for (r = 0; r < nr; r++)
        for (c = c0; c < c1; c++) {
            size_t g = c / gn;
            out[r * ldo + (c - c0)] = (float)ccomp_sketch_table_get(
                s->tables, s->dtype, ((r0 + r) * s->groups + g) * K + sk_code_at(sk_run(s, r0 + r, g), c - g * gn, s->bits));
        }
}

void sk_grad_tables_tiled_avx2(const ccomp_sketch *s, const float *gyT, const float *xp, size_t n, float *gt,
                               size_t r0, size_t r1, float *d, int kern)
{
    (void)s, (void)gyT, (void)xp, (void)n, (void)gt, (void)r0, (void)r1, (void)d, (void)kern;
}

void sk_axpy_avx2(size_t n, float a, const float *x, float *y)
{
    size_t k;
    for (k = 0; k < n; k++) y[k] -= a * x[k];
}

#endif

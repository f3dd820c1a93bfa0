/* Cosine-similarity top-k between token sets (ccomp/tokens.h, docs/tokens.md).
 *
 * Stage 1, one task per sub-image: float16 keys widened to float32; the float64 inverse norms of every
 * token; groups of bit-identical keys (hash, then memcmp); the candidate (column) groups and query (row)
 * groups, each with its members; the screen's packed candidates, one column per distinct key:
 * - int8 (screen8.h): every distinct key quantized once, with its error bound, straight into its column;
 * - float32: normalized keys in panels of PANEL columns ([D][PANEL], zero padded).
 *
 * Stage 2, one task per block of RB distinct query keys of one sub-image: the screened similarities of
 * the block against every distinct candidate key (never the whole N x N), then one search per query key
 * (best_of_key) for its k best tokens, plus as many as its own rows must skip:
 * - the kk-th best screened value t, each group counted once per member, bounds the kk-th best exact
 *   value from below by t - d (d: the largest |screen - exact| of the row);
 * - the groups of the kk best screens, then every group whose screen plus its own pair bound reaches the
 *   kk-th best exact value found so far, are recomputed in float64, four at a time; no other group can
 *   hold one of the best;
 * - the best by (value descending, token index ascending); each row drops its own token.
 *
 * Every task writes only its own rows, and no result depends on which screen ran: the same answer at
 * any thread count and on any CPU (the float64 dot product has one fixed summation order). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/bigmem.h"
#include "ccomp/cancel.h"
#include "ccomp/cpu.h"
#include "ccomp/half.h"
#include "ccomp/parallel.h"
#include "ccomp/tokens.h"
#include "../util/tile.h"
#include "screen8.h"

#define RB 48    /* query keys per task (a multiple of both screens' row tiles, 12 and 8) */
#define PANEL CCOMP_TILE_W /* candidate columns per packed float32 panel */
#define KC 256             /* channels per block of the float32 screening product */
#define BLK 16             /* screened values per block of the selection's scans */
#define I8_MAX_DELTA 0.05  /* AUTO uses the int8 screen while its typical error bound is below this */
#define I8_MAX_D 65536     /* int32 sums of D products of |255 x 127| stay exact */

enum { SCR_F32 = 1, SCR_I8 = 2 };

typedef struct sub { /* one sub-image */
    const float *k32;  /* float32 keys (the input's, or widened float16 in job.wide, or own32); NULL for float64 */
    const double *k64; /* float64 keys (the input's, or own64) */
    float *own32;      /* the sub-image's float32 keys with extreme tokens rescaled (else NULL) */
    double *own64;     /* the same for float64 keys */
    int screen;        /* SCR_F32 or SCR_I8 */
    size_t ncols;      /* candidate tokens (with repeats) */
    size_t ncg;        /* candidate groups: distinct candidate keys */
    size_t *cg_key;    /* [ncg] a token holding the group's key */
    size_t *cg_off;    /* [ncg + 1] into cg_tok */
    int64_t *cg_tok;   /* the members of each group, ascending */
    int32_t *cgid;     /* [N] by representative token: its key's candidate group, or -1 */
    uint32_t *occ;     /* [N] times each token is a candidate */
    size_t nrg;        /* query groups: distinct query keys */
    size_t *rg_key;    /* [nrg] a token holding the group's key */
    size_t *rg_off;    /* [nrg + 1] into rg_pos */
    size_t *rg_pos;    /* the flat query rows of each group */
    float *panels;     /* float32 screen: [ceil(ncg / PANEL)][D][PANEL] */
    float *qscale;     /* int8 screen: [N] each key's scale */
    double *qe, *qn;   /* [N] residual bound and norm bound */
    int32_t *qsum;     /* [N] */
    int8_t *panels8;   /* [ceil(ncg / TOK8_W)][Dp * TOK8_W], a slice of job.panels8 */
    int32_t *pcsum;    /* [ceil(ncg / TOK8_W) * TOK8_W] */
    float *pscale;     /* [ceil(ncg / TOK8_W) * TOK8_W] */
    double emax, nmax; /* the largest residual and norm bounds of the candidate keys */
} sub;

typedef struct job {
    const void *keys;
    int dtype, want; /* want: the CCOMP_TOKENS_SCREEN_* asked for */
    size_t B, N, D, Dp;
    const int64_t *rows, *cols;
    const size_t *rows_off, *cols_off;
    int excl;
    size_t k;
    int64_t *oi;
    float *ov;
    double *inv;      /* [B * N]: 1 / max(|k|, 1e-12) */
    size_t *rep;      /* [B * N]: the lowest token index with bit-identical key bytes */
    sub *subs;        /* [B] */
    float *wide;      /* float16 keys: [B][N][D] widened to float32 */
    int8_t *panels8;  /* int8 screen: [B][ceil(N / TOK8_W)][Dp * TOK8_W], each sub-image's panels */
    size_t *task_b, *task_g0, ntasks, max_cols, max_cg;
    int kern;         /* the shared float32 tile kernel (util/tile.h) */
    double delta;     /* float32 screen: bound on |screen - float64 value| */
} job;

static inline const float *key32(const job *j, size_t b, size_t t)
{
    return j->subs[b].k32 + t * j->D;
}

static inline const double *key64(const job *j, size_t b, size_t t)
{
    return j->subs[b].k64 + t * j->D;
}

/* <k_a, k_c> in float64 with 8 partial sums (lane l takes elements l mod 8), combined pairwise:
 * one fixed order on every machine (products of floats are exact in float64, so a fused multiply-add
 * rounds exactly as the product and sum do). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* x against four keys at once with AVX-512: four independent chains, each in that order (one chain takes as
 * long as four, so single products use it too) */
__attribute__((target("avx512f"))) static void dot64x4_f32_avx512(const float *x, const float *const *y, size_t D,
                                                                  double *out)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    double s[4][8];
    size_t d = 0, l, t;
    for (; d + 8 <= D; d += 8) {
        const __m512d xv = _mm512_cvtps_pd(_mm256_loadu_ps(x + d));
        a0 = _mm512_fmadd_pd(xv, _mm512_cvtps_pd(_mm256_loadu_ps(y[0] + d)), a0);
        a1 = _mm512_fmadd_pd(xv, _mm512_cvtps_pd(_mm256_loadu_ps(y[1] + d)), a1);
        a2 = _mm512_fmadd_pd(xv, _mm512_cvtps_pd(_mm256_loadu_ps(y[2] + d)), a2);
        a3 = _mm512_fmadd_pd(xv, _mm512_cvtps_pd(_mm256_loadu_ps(y[3] + d)), a3);
    }
    _mm512_storeu_pd(s[0], a0);
    _mm512_storeu_pd(s[1], a1);
    _mm512_storeu_pd(s[2], a2);
    _mm512_storeu_pd(s[3], a3);
    for (t = 0; t < 4; t++) {
        size_t e;
        for (l = 0, e = d; e < D; e++, l++) s[t][l] += (double)x[e] * (double)y[t][e];
        out[t] = ((s[t][0] + s[t][1]) + (s[t][2] + s[t][3])) + ((s[t][4] + s[t][5]) + (s[t][6] + s[t][7]));
    }
}
#endif

static double dot64_f32(const float *x, const float *y, size_t D)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t d, l;
#if defined(__x86_64__) && defined(__GNUC__)
    if (ccomp_cpu_features() & CCOMP_CPU_AVX512F) {
        const float *const y4[4] = {y, y, y, y};
        double dot[4];
        dot64x4_f32_avx512(x, y4, D, dot);
        return dot[0];
    }
#endif
    for (d = 0; d + 8 <= D; d += 8)
        for (l = 0; l < 8; l++) s[l] += (double)x[d + l] * (double)y[d + l];
    for (l = 0; d < D; d++, l++) s[l] += (double)x[d] * (double)y[d];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static double dot64_f64(const double *x, const double *y, size_t D)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t d, l;
    for (d = 0; d + 8 <= D; d += 8)
        for (l = 0; l < 8; l++) s[l] += x[d + l] * y[d + l];
    for (l = 0; d < D; d++, l++) s[l] += x[d] * y[d];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static float exact_sim(const job *j, size_t b, size_t a, size_t c)
{
    const double dot = j->dtype == CCOMP_TOKENS_F64 ? dot64_f64(key64(j, b, a), key64(j, b, c), j->D)
                                                    : dot64_f32(key32(j, b, a), key32(j, b, c), j->D);
    return (float)(dot * j->inv[b * j->N + a] * j->inv[b * j->N + c]);
}

/* ------------------------------------------------------------ stage 1 */

static size_t elem_size(int dtype)
{
    return dtype == CCOMP_TOKENS_F64 ? 8u : dtype == CCOMP_TOKENS_F16 ? 2u : 4u;
}

static const unsigned char *key_bytes(const job *j, size_t b, size_t t)
{
    return (const unsigned char *)j->keys + (b * j->N + t) * j->D * elem_size(j->dtype);
}

/* A hash of the key's bytes (equal keys, equal hashes; collisions are resolved by memcmp), in independent
 * lanes: four 64-bit ones, or with AVX-512 four vectors of 16 32-bit lanes. */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 31;
    h *= 0x94D049BB133111EBull;
    return h ^ (h >> 29);
}

static uint64_t key_hash_scalar(const unsigned char *p, size_t n)
{
    uint64_t h[4] = {0x9E3779B97F4A7C15ull, 0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull, 0x27D4EB2F165667C5ull};
    uint64_t w;
    size_t i, l;
    for (i = 0; i + 32 <= n; i += 32)
        for (l = 0; l < 4; l++) {
            memcpy(&w, p + i + 8 * l, 8);
            h[l] = (h[l] ^ w) * 0xBF58476D1CE4E5B9ull;
            h[l] ^= h[l] >> 29;
        }
    for (; i < n; i++) h[0] = (h[0] ^ p[i]) * 0x100000001b3ull;
    return mix64(h[0] ^ mix64(h[1]) ^ mix64(h[2] + 1) ^ mix64(h[3] + 2));
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HASH_STEP(h, at) h = _mm512_mullo_epi32(_mm512_xor_si512(h, _mm512_loadu_si512((const void *)(at))), m), \
                         h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15))
__attribute__((target("avx512f"))) static uint64_t key_hash_avx512(const unsigned char *p, size_t n)
{
    const __m512i m = _mm512_set1_epi32((int)0x9E3779B1u);
    __m512i h0 = _mm512_set1_epi32(0x243F6A88), h1 = _mm512_set1_epi32(0x13198A2E), h2 = _mm512_set1_epi32(0x03707344),
            h3 = _mm512_set1_epi32(0x299F31D0);
    uint32_t lanes[16];
    uint64_t h = 0x9E3779B97F4A7C15ull;
    size_t i = 0, l;
    for (; i + 256 <= n; i += 256) {
        HASH_STEP(h0, p + i);
        HASH_STEP(h1, p + i + 64);
        HASH_STEP(h2, p + i + 128);
        HASH_STEP(h3, p + i + 192);
    }
    for (; i + 64 <= n; i += 64) HASH_STEP(h0, p + i);
    h0 = _mm512_xor_si512(_mm512_xor_si512(h0, _mm512_slli_epi32(h1, 1)),
                          _mm512_xor_si512(_mm512_slli_epi32(h2, 2), _mm512_slli_epi32(h3, 3)));
    _mm512_storeu_si512((void *)lanes, h0);
    for (l = 0; l < 16; l++) h = (h ^ lanes[l]) * 0xBF58476D1CE4E5B9ull;
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return mix64(h);
}
#endif

static uint64_t key_hash(const unsigned char *p, size_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (ccomp_cpu_features() & CCOMP_CPU_AVX512F) return key_hash_avx512(p, n);
#endif
    return key_hash_scalar(p, n);
}

/* 1 / max(|k_t|, 1e-12), the sum of squares in float64 with 4 partial sums (sum l takes channel d when
 * d mod 4 = l, over the whole groups of 4; the rest go to sum 0), combined as (s0 + s1) + (s2 + s3).  The
 * GPU (kernels/tokens.cu prep_norms) keeps this order. */
static double inv_from_sums(double s0, double s1, double s2, double s3)
{
    const double s = sqrt((s0 + s1) + (s2 + s3));
    return 1.0 / (s > 1e-12 ? s : 1e-12);
}

static double inv_norm_f32(const float *k, size_t D)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t d = 0;
    for (; d + 4 <= D; d += 4) {
        s0 += (double)k[d] * k[d];
        s1 += (double)k[d + 1] * k[d + 1];
        s2 += (double)k[d + 2] * k[d + 2];
        s3 += (double)k[d + 3] * k[d + 3];
    }
    for (; d < D; d++) s0 += (double)k[d] * k[d];
    return inv_from_sums(s0, s1, s2, s3);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* four tokens at once, one 4-lane accumulator each (lane l: sum l): independent chains, the same sums (a
 * float's square is exact in float64, so the fused multiply-add rounds as the sum alone) */
__attribute__((target("avx2,fma"))) static void inv_norms4_f32_avx2(const float *k, size_t D, double *out)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), a2 = _mm256_setzero_pd(), a3 = _mm256_setzero_pd();
    double s[4][4];
    size_t d = 0, t;
    for (; d + 4 <= D; d += 4) {
        const __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(k + d)), x1 = _mm256_cvtps_pd(_mm_loadu_ps(k + D + d));
        const __m256d x2 = _mm256_cvtps_pd(_mm_loadu_ps(k + 2 * D + d)), x3 = _mm256_cvtps_pd(_mm_loadu_ps(k + 3 * D + d));
        a0 = _mm256_fmadd_pd(x0, x0, a0);
        a1 = _mm256_fmadd_pd(x1, x1, a1);
        a2 = _mm256_fmadd_pd(x2, x2, a2);
        a3 = _mm256_fmadd_pd(x3, x3, a3);
    }
    _mm256_storeu_pd(s[0], a0);
    _mm256_storeu_pd(s[1], a1);
    _mm256_storeu_pd(s[2], a2);
    _mm256_storeu_pd(s[3], a3);
    for (t = 0; t < 4; t++) {
        size_t e;
        for (e = d; e < D; e++) s[t][0] += (double)k[t * D + e] * k[t * D + e];
        out[t] = inv_from_sums(s[t][0], s[t][1], s[t][2], s[t][3]);
    }
}
#endif

/* inv[t] for n consecutive float32 keys */
static void inv_norms_f32(const float *k, size_t n, size_t D, double *inv)
{
    size_t t = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    const unsigned need = CCOMP_CPU_AVX2 | CCOMP_CPU_FMA;
    if ((ccomp_cpu_features() & need) == need)
        for (; t + 4 <= n; t += 4) inv_norms4_f32_avx2(k + t * D, D, inv + t);
#endif
    for (; t < n; t++) inv[t] = inv_norm_f32(k + t * D, D);
}

static double inv_norm_f64(const double *k, size_t D)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t d = 0;
    for (; d + 4 <= D; d += 4) {
        s0 += k[d] * k[d];
        s1 += k[d + 1] * k[d + 1];
        s2 += k[d + 2] * k[d + 2];
        s3 += k[d + 3] * k[d + 3];
    }
    for (; d < D; d++) s0 += k[d] * k[d];
    return inv_from_sums(s0, s1, s2, s3);
}

/* the key normalized to float32 (float32 screen only: within 2 u of the exact value per element) */
static void normalized(const job *j, size_t b, size_t t, float *out)
{
    const size_t D = j->D;
    size_t d;
    if (j->dtype != CCOMP_TOKENS_F64) {
        const float *k = key32(j, b, t), iv = (float)j->inv[b * j->N + t];
        for (d = 0; d < D; d++) out[d] = k[d] * iv;
    } else {
        const double *k = key64(j, b, t), iv = j->inv[b * j->N + t];
        for (d = 0; d < D; d++) out[d] = (float)(k[d] * iv);
    }
}

/* (hash, index) pairs, sorted to find the groups */
typedef struct hi {
    uint64_t h;
    size_t i;
} hi;

static int cmp_hi(const void *pa, const void *pb)
{
    const hi *a = (const hi *)pa, *b = (const hi *)pb;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* rep[t]: the lowest token with the same key bytes */
static ccomp_status find_reps(const job *j, size_t b, ccomp_error *err)
{
    const size_t N = j->N, n = j->D * elem_size(j->dtype);
    size_t *rep = j->rep + b * N, t;
    hi *order = (hi *)malloc(N * sizeof *order);
    if (order == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu sort entries", N);
    for (t = 0; t < N; t++) {
        order[t].h = key_hash(key_bytes(j, b, t), n);
        order[t].i = t;
    }
    qsort(order, N, sizeof *order, cmp_hi);
    for (t = 0; t < N; t++) {
        size_t me = order[t].i, r = me, s;
        for (s = t; s-- > 0 && order[s].h == order[t].h;)
            if (memcmp(key_bytes(j, b, order[s].i), key_bytes(j, b, me), n) == 0) {
                r = rep[order[s].i];
                break;
            }
        rep[me] = r;
    }
    free(order);
    return CCOMP_OK;
}

/* the candidate groups (in order of their lowest member) and the query groups (in order of their first
 * row); gid: [N] scratch */
static ccomp_status make_groups(const job *j, size_t b, sub *sb, int32_t *gid, ccomp_error *err)
{
    const size_t N = j->N, c0 = j->cols_off[b], nc = j->cols_off[b + 1] - c0;
    const size_t r0 = j->rows_off[b], nr = j->rows_off[b + 1] - r0;
    const size_t *rep = j->rep + b * N;
    size_t t, g, i, *fill;
    sb->ncols = nc;
    sb->occ = (uint32_t *)calloc(N, sizeof *sb->occ);
    sb->cgid = (int32_t *)malloc(N * sizeof *sb->cgid);
    sb->cg_key = (size_t *)malloc((nc + 1) * sizeof(size_t));
    sb->cg_off = (size_t *)calloc(nc + 2, sizeof(size_t));
    sb->cg_tok = (int64_t *)malloc((nc + 1) * sizeof(int64_t));
    sb->rg_key = (size_t *)malloc((nr + 1) * sizeof(size_t));
    sb->rg_off = (size_t *)calloc(nr + 2, sizeof(size_t));
    sb->rg_pos = (size_t *)malloc((nr + 1) * sizeof(size_t));
    fill = (size_t *)malloc((nc > nr ? nc : nr) * sizeof(size_t) + 1);
    if (!sb->occ || !sb->cgid || !sb->cg_key || !sb->cg_off || !sb->cg_tok || !sb->rg_key || !sb->rg_off ||
        !sb->rg_pos || !fill) {
        free(fill);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the key groups of %zu tokens", N);
    }
    /* candidates: tokens ascending (repeats kept), grouped by key */
    for (i = 0; i < nc; i++) sb->occ[j->cols[c0 + i]]++;
    for (t = 0; t < N; t++) sb->cgid[t] = -1;
    sb->ncg = 0;
    for (t = 0; t < N; t++)
        if (sb->occ[t]) {
            if (sb->cgid[rep[t]] < 0) {
                sb->cgid[rep[t]] = (int32_t)sb->ncg;
                sb->cg_key[sb->ncg++] = t;
            }
            sb->cg_off[sb->cgid[rep[t]] + 1] += sb->occ[t];
        }
    for (g = 0; g < sb->ncg; g++) sb->cg_off[g + 1] += sb->cg_off[g];
    memcpy(fill, sb->cg_off, sb->ncg * sizeof(size_t));
    for (t = 0; t < N; t++)
        for (i = 0; i < sb->occ[t]; i++) sb->cg_tok[fill[sb->cgid[rep[t]]]++] = (int64_t)t;
    /* queries: rows grouped by key, in order of first appearance */
    for (t = 0; t < N; t++) gid[t] = -1;
    sb->nrg = 0;
    for (i = 0; i < nr; i++) {
        const size_t rp = rep[j->rows[r0 + i]];
        if (gid[rp] < 0) {
            gid[rp] = (int32_t)sb->nrg;
            sb->rg_key[sb->nrg++] = (size_t)j->rows[r0 + i];
        }
        sb->rg_off[gid[rp] + 1]++;
    }
    for (g = 0; g < sb->nrg; g++) sb->rg_off[g + 1] += sb->rg_off[g];
    memcpy(fill, sb->rg_off, sb->nrg * sizeof(size_t));
    for (i = 0; i < nr; i++) sb->rg_pos[fill[gid[rep[j->rows[r0 + i]]]]++] = r0 + i;
    free(fill);
    return CCOMP_OK;
}

static ccomp_status pack_f32(const job *j, sub *sb, size_t b, ccomp_error *err)
{
    const size_t D = j->D, np = (sb->ncg + PANEL - 1) / PANEL;
    size_t p, q, d;
    float *row;
    sb->screen = SCR_F32;
    if (np == 0) return CCOMP_OK;
    sb->panels = (float *)ccomp_alloc_big(np * D * PANEL * sizeof(float));
    row = (float *)malloc(D * sizeof(float));
    if (sb->panels == NULL || row == NULL) {
        free(row);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu floats of packed keys", np * D * PANEL);
    }
    for (p = 0; p < np; p++) {
        float *P = sb->panels + p * D * PANEL;
        for (q = 0; q < PANEL; q++) {
            size_t g = p * PANEL + q;
            if (g >= sb->ncg) {
                for (d = 0; d < D; d++) P[d * PANEL + q] = 0.0f;
            } else {
                normalized(j, b, sb->cg_key[g], row);
                for (d = 0; d < D; d++) P[d * PANEL + q] = row[d];
            }
        }
    }
    free(row);
    return CCOMP_OK;
}

#if TOK8_BUILT
/* quantize every distinct key, straight into its candidate column where it is one; *ok = 1 when the typical
 * pair's bound is within I8_MAX_DELTA (or INT8 was asked for), 0 to fall back to float32 */
static ccomp_status pack_i8(const job *j, sub *sb, size_t b, int *ok, ccomp_error *err)
{
    const size_t N = j->N, D = j->D, Dp = j->Dp, np = (sb->ncg + TOK8_W - 1) / TOK8_W;
    double esum = 0.0;
    int8_t *tmp;
    size_t t, c;
    *ok = 0;
    sb->qscale = (float *)malloc(N * sizeof(float));
    sb->qe = (double *)malloc(N * sizeof(double));
    sb->qn = (double *)malloc(N * sizeof(double));
    sb->qsum = (int32_t *)malloc(N * sizeof(int32_t));
    sb->panels8 = j->panels8 + b * ((N + TOK8_W - 1) / TOK8_W) * Dp * TOK8_W;
    sb->pcsum = (int32_t *)calloc(np * TOK8_W + 1, sizeof(int32_t));
    sb->pscale = (float *)calloc(np * TOK8_W + 1, sizeof(float));
    tmp = (int8_t *)malloc(Dp);
    if (!sb->qscale || !sb->qe || !sb->qn || !sb->qsum || !sb->pcsum || !sb->pscale || !tmp) {
        free(tmp);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu int8 candidate panels of %zu channels", np, Dp);
    }
    for (t = 0; t < N; t++) {
        const size_t rp = j->rep[b * N + t];
        if (rp != t) { /* the same key: the same quantization */
            sb->qscale[t] = sb->qscale[rp];
            sb->qe[t] = sb->qe[rp];
            sb->qn[t] = sb->qn[rp];
            sb->qsum[t] = sb->qsum[rp];
        } else {
            const int32_t g = sb->cgid[t];
            sb->qscale[t] = tok8_quantize(key32(j, b, t), D, Dp, j->inv[b * N + t], tmp, &sb->qe[t], &sb->qn[t],
                                          &sb->qsum[t]);
            if (g >= 0) {
                tok8_put_column(sb->panels8 + (size_t)g / TOK8_W * Dp * TOK8_W, (size_t)g % TOK8_W, tmp, Dp);
                sb->pcsum[g] = sb->qsum[t];
                sb->pscale[g] = sb->qscale[t];
            }
        }
        esum += sb->qe[t];
    }
    memset(tmp, 0, Dp); /* the last panel's spare columns: zero keys */
    for (c = sb->ncg; c < np * TOK8_W; c++)
        tok8_put_column(sb->panels8 + c / TOK8_W * Dp * TOK8_W, c % TOK8_W, tmp, Dp);
    free(tmp);
    sb->emax = sb->nmax = 0.0;
    for (c = 0; c < sb->ncg; c++) {
        const size_t t2 = sb->cg_key[c];
        if (sb->qe[t2] > sb->emax) sb->emax = sb->qe[t2];
        if (sb->qn[t2] > sb->nmax) sb->nmax = sb->qn[t2];
    }
    /* the typical pair's bound e (n + 1): a few keys with a loose bound only widen their own pairs */
    if (j->want == CCOMP_TOKENS_SCREEN_AUTO && esum / (double)N * (sb->nmax + 1.0) > I8_MAX_DELTA) return CCOMP_OK;
    sb->screen = SCR_I8;
    *ok = 1;
    return CCOMP_OK;
}
#endif

/* Keys are rescaled by a power of two (exact, and the cosine does not change) when their largest |x| lies
 * outside [2^-KEY_EXP, 2^KEY_EXP): in float64 a sum of squares of 1e154 overflows and one of 1e-160
 * underflows, a norm below 1e-12 would be clamped, and in float32 the inverse norm of a key near 3e38 is
 * subnormal.  Inside the window nothing changes, so the usual keys keep their bits. */
#define KEY_EXP 20

/* the power of two that brings the largest |x| of a key into [1, 2) when it is outside the window, else 0 */
static int key_shift_f32(const float *k, size_t D)
{
    float m = 0.0f, acc[16] = {0};
    size_t d;
    unsigned l;
    /* 16 independent running maxima (NaN skipped, as in the tail): the compiler keeps them in vector registers */
    for (d = 0; d + 16 <= D; d += 16)
        for (l = 0; l < 16; l++) acc[l] = fabsf(k[d + l]) > acc[l] ? fabsf(k[d + l]) : acc[l];
    for (l = 0; l < 16; l++) m = acc[l] > m ? acc[l] : m;
    for (; d < D; d++) m = fabsf(k[d]) > m ? fabsf(k[d]) : m;
    if (!(m > 0.0f) || !isfinite(m) || (m >= ldexpf(1.0f, -KEY_EXP) && m < ldexpf(1.0f, KEY_EXP))) return 0;
    return -ilogbf(m);
}

static int key_shift_f64(const double *k, size_t D)
{
    double m = 0.0, acc[8] = {0};
    size_t d;
    unsigned l;
    for (d = 0; d + 8 <= D; d += 8)
        for (l = 0; l < 8; l++) acc[l] = fabs(k[d + l]) > acc[l] ? fabs(k[d + l]) : acc[l];
    for (l = 0; l < 8; l++) m = acc[l] > m ? acc[l] : m;
    for (; d < D; d++) m = fabs(k[d]) > m ? fabs(k[d]) : m;
    if (!(m > 0.0) || !isfinite(m) || (m >= ldexp(1.0, -KEY_EXP) && m < ldexp(1.0, KEY_EXP))) return 0;
    return -ilogb(m);
}

static void shift_f32(float *k, size_t D, int e)
{
    size_t d;
    for (d = 0; d < D; d++) k[d] = ldexpf(k[d], e);
}

static void shift_f64(double *k, size_t D, int e)
{
    size_t d;
    for (d = 0; d < D; d++) k[d] = ldexp(k[d], e);
}

/* the sub-image's keys with every extreme token rescaled: in place in `wide` (float16 keys), else into a
 * copy the sub-image owns when some token needs it */
static ccomp_status rescale_keys(const job *j, sub *sb, float *wide, ccomp_error *err)
{
    const size_t N = j->N, D = j->D;
    size_t t;
    for (t = 0; t < N; t++) {
        int e;
        if (j->dtype == CCOMP_TOKENS_F64) {
            if ((e = key_shift_f64(sb->k64 + t * D, D)) == 0) continue;
            if (sb->own64 == NULL) {
                if ((sb->own64 = (double *)malloc(N * D * sizeof(double))) == NULL)
                    return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu rescaled keys", N);
                memcpy(sb->own64, sb->k64, N * D * sizeof(double));
                sb->k64 = sb->own64;
            }
            shift_f64(sb->own64 + t * D, D, e);
        } else {
            if ((e = key_shift_f32(sb->k32 + t * D, D)) == 0) continue;
            if (wide == NULL) {
                if ((sb->own32 = wide = (float *)malloc(N * D * sizeof(float))) == NULL)
                    return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu rescaled keys", N);
                memcpy(wide, sb->k32, N * D * sizeof(float));
                sb->k32 = wide;
            }
            shift_f32(wide + t * D, D, e);
        }
    }
    return CCOMP_OK;
}

static ccomp_status prep_run(void *ctx, void *state, size_t b, ccomp_error *err)
{
    job *j = (job *)ctx;
    sub *sb = &j->subs[b];
    const size_t N = j->N, D = j->D;
    int32_t *gid;
    ccomp_status st;
    size_t t;
    (void)state;
    if (j->dtype == CCOMP_TOKENS_F16) {
        ccomp_f16_to_f32_n((const uint16_t *)j->keys + b * N * D, j->wide + b * N * D, N * D);
        sb->k32 = j->wide + b * N * D;
    } else if (j->dtype == CCOMP_TOKENS_F32) {
        sb->k32 = (const float *)j->keys + b * N * D;
    } else {
        sb->k64 = (const double *)j->keys + b * N * D;
    }
    st = rescale_keys(j, sb, j->dtype == CCOMP_TOKENS_F16 ? j->wide + b * N * D : NULL, err);
    if (st != CCOMP_OK) return st;
    if (ccomp_cancelled()) return ccomp_check_cancel(err, "token similarity");
    if (j->dtype == CCOMP_TOKENS_F64)
        for (t = 0; t < N; t++) j->inv[b * N + t] = inv_norm_f64(key64(j, b, t), D);
    else
        inv_norms_f32(sb->k32, N, D, j->inv + b * N);
    if ((st = find_reps(j, b, err)) != CCOMP_OK) return st;
    gid = (int32_t *)malloc(N * sizeof *gid);
    if (gid == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu group ids", N);
    st = make_groups(j, b, sb, gid, err);
    free(gid);
    if (st != CCOMP_OK) return st;
#if TOK8_BUILT
    if (j->panels8 != NULL) {
        int ok;
        if ((st = pack_i8(j, sb, b, &ok, err)) != CCOMP_OK || ok) return st;
    }
#endif
    return pack_f32(j, sb, b, err);
}

static void sub_free(sub *sb)
{
    free(sb->cg_key);
    free(sb->cg_off);
    free(sb->cg_tok);
    free(sb->cgid);
    free(sb->occ);
    free(sb->rg_key);
    free(sb->rg_off);
    free(sb->rg_pos);
    free(sb->panels);
    free(sb->qscale);
    free(sb->qe);
    free(sb->qn);
    free(sb->qsum);
    free(sb->pcsum);
    free(sb->pscale);
    free(sb->own32);
    free(sb->own64);
}

const char *ccomp_tokens_kernel_name(void)
{
    switch (ccomp_tile_kernel()) {
    case CCOMP_TILE_AVX512: return tok8_available() ? "int8 avx512-vnni, float32 avx512" : "float32 avx512";
    case CCOMP_TILE_AVX2: return "float32 avx2";
    }
    return "float32 scalar";
}

/* ------------------------------------------------------------ stage 2 */

/* a candidate: its exact value and token; ordered by value descending, then token index */
typedef struct cand_order {
    float v;
    int64_t tok;
} cand_order;

static int cmp_cand(const void *pa, const void *pb)
{
    const cand_order *a = (const cand_order *)pa, *b = (const cand_order *)pb;
    const int na = isnan(a->v), nb = isnan(b->v);
    if (na != nb) return na - nb; /* a total order for qsort even with NaN (keys rewritten during the call) */
    if (!na && a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->tok < b->tok ? -1 : a->tok > b->tok;
}

/* a candidate group and its screened value */
typedef struct scored {
    float v;
    int32_t g;
} scored;

typedef struct row_state {
    float *A;         /* float32 screen: [RB][D] normalized query keys */
    uint8_t *A8;      /* int8 screen: RB / TOK8_R packed slices */
    int8_t *Q8;       /* int8 screen: [RB][Dp] the query keys' quantization */
    float rscale[RB]; /* int8 screen: the query keys' scales */
    float *S;         /* [RB][ncg padded] screened similarities */
    scored *top_e;    /* [k + max_cols + 1]: the largest exact values found */
    scored *best;     /* [k + max_cols + 4]: the largest screened values seen */
    float *bm;        /* [max_cg / BLK + 1]: block maxima of a screened row */
    cand_order *cand; /* [max_cols] */
} row_state;

static size_t padded_cols(const job *j)
{
    const size_t a = (j->max_cg + PANEL - 1) / PANEL * PANEL, b = (j->max_cg + TOK8_W - 1) / TOK8_W * TOK8_W;
    return a > b ? a : b;
}

static ccomp_status row_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    const job *j = (const job *)ctx;
    const size_t lds = padded_cols(j);
    row_state *s = (row_state *)calloc(1, sizeof *s);
    (void)worker;
    *state = s;
    if (s == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a row state");
    s->A = (float *)malloc(RB * j->D * sizeof(float) + 64);
    s->A8 = (uint8_t *)malloc(RB * (j->Dp ? j->Dp : 4) + 64);
    s->Q8 = (int8_t *)malloc(RB * (j->Dp ? j->Dp : 4) + 64);
    s->S = (float *)malloc(RB * (lds ? lds : 1) * sizeof(float));
    s->top_e = (scored *)malloc((j->k + j->max_cols + 1) * sizeof(scored));
    s->best = (scored *)malloc((j->k + j->max_cols + 4) * sizeof(scored));
    s->bm = (float *)malloc((j->max_cg / BLK + 2) * sizeof(float));
    s->cand = (cand_order *)malloc((j->max_cols + 1) * sizeof(cand_order));
    if (!s->A || !s->A8 || !s->Q8 || !s->S || !s->top_e || !s->best || !s->bm || !s->cand)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the %zu-row similarity block", (size_t)RB);
    return CCOMP_OK;
}

static void row_fini(void *ctx, void *state)
{
    row_state *s = (row_state *)state;
    (void)ctx;
    if (s == NULL) return;
    free(s->A);
    free(s->A8);
    free(s->Q8);
    free(s->S);
    free(s->top_e);
    free(s->best);
    free(s->bm);
    free(s->cand);
    free(s);
}

/* The k largest values seen (with repeats), as scored pairs: for k <= SMALL_K a descending array (most
 * values fail the first comparison), else a min-heap.  top_min is the k-th largest once n == k. */
#define SMALL_K 16

static void top_push(scored *h, size_t *n, size_t k, float v, int32_t g)
{
    size_t i, p;
    if (k <= SMALL_K) {
        if (*n == k && !(v > h[k - 1].v)) return;
        i = *n < k ? (*n)++ : k - 1;
        for (; i > 0 && h[i - 1].v < v; i--) h[i] = h[i - 1];
        h[i].v = v;
        h[i].g = g;
        return;
    }
    if (*n < k) {
        i = (*n)++;
        while (i > 0 && h[p = (i - 1) / 2].v > v) {
            h[i] = h[p];
            i = p;
        }
        h[i].v = v;
        h[i].g = g;
        return;
    }
    if (!(v > h[0].v)) return;
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        float mv = v;
        if (l < k && h[l].v < mv) {
            m = l;
            mv = h[l].v;
        }
        if (r < k && h[r].v < mv) m = r;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    h[i].v = v;
    h[i].g = g;
}

static inline float top_min(const scored *h, size_t n, size_t k)
{
    return k <= SMALL_K ? h[n - 1].v : h[0].v;
}

/* the screened similarities of query groups g0 .. g0 + nr against every candidate group */
static void screen_block(const job *j, row_state *s, const sub *sb, size_t b, size_t g0, size_t nr, size_t lds)
{
    const size_t D = j->D;
    size_t r, p, rr;
#if TOK8_BUILT
    if (sb->screen == SCR_I8) {
        const size_t Dp = j->Dp, np = (sb->ncg + TOK8_W - 1) / TOK8_W, ns = (nr + TOK8_R - 1) / TOK8_R;
        const int8_t *rq[TOK8_R];
        for (rr = 0; rr < ns; rr++) {
            size_t n = 0;
            for (r = rr * TOK8_R; r < nr && r < (rr + 1) * TOK8_R; r++, n++) {
                const size_t t = sb->rg_key[g0 + r];
                const int32_t g = sb->cgid[j->rep[b * j->N + t]];
                int8_t *q = s->Q8 + r * Dp;
                /* a candidate key's quantization from its column, another's again (the same bytes) */
                if (g >= 0) {
                    tok8_get_column(sb->panels8 + (size_t)g / TOK8_W * Dp * TOK8_W, (size_t)g % TOK8_W, q, Dp);
                } else {
                    double e, nq;
                    int32_t qs;
                    (void)tok8_quantize(key32(j, b, t), D, Dp, j->inv[b * j->N + t], q, &e, &nq, &qs);
                }
                rq[n] = q;
                s->rscale[r] = sb->qscale[t];
            }
            for (; n < TOK8_R; n++) s->rscale[rr * TOK8_R + n] = 0.0f;
            tok8_pack_rows(rq, (size_t)(r - rr * TOK8_R), Dp, s->A8 + rr * TOK8_R * Dp);
        }
        for (p = 0; p < np; p++)
            for (rr = 0; rr < ns; rr++)
                tok8_tile(s->A8 + rr * TOK8_R * Dp, sb->panels8 + p * Dp * TOK8_W, Dp, sb->pcsum + p * TOK8_W,
                          sb->pscale + p * TOK8_W, s->rscale + rr * TOK8_R, s->S + rr * TOK8_R * lds + p * TOK8_W,
                          lds);
        return;
    }
#endif
    {
        const size_t np = (sb->ncg + PANEL - 1) / PANEL;
        size_t kb;
        for (r = 0; r < nr; r++) normalized(j, b, sb->rg_key[g0 + r], s->A + r * D);
        for (p = 0; p < np; p++) {
            const float *P = sb->panels + p * D * PANEL;
            if ((p & 15) == 0 && ccomp_cancelled()) return; /* row_run reports it */
            /* D in blocks of KC: the panel block (32 KB) and the rows' pieces stay in L1 */
            for (kb = 0; kb < D; kb += KC) {
                const size_t kc = D - kb < KC ? D - kb : KC;
                for (rr = 0; rr < nr; rr += CCOMP_TILE_R)
                    ccomp_tile_nt(j->kern, s->A + rr * D + kb, D, nr - rr, P + kb * PANEL, kc,
                                  s->S + rr * lds + p * PANEL, lds, kb > 0);
            }
        }
    }
}

/* bm[i] = max(v[16 i .. 16 i + 16)) for the ceil(n / 16) blocks of v (the scans below skip whole blocks) */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void block_max_avx512(const float *v, size_t n, float *bm)
{
    size_t i;
    for (i = 0; i + BLK <= n; i += BLK) bm[i / BLK] = _mm512_reduce_max_ps(_mm512_loadu_ps(v + i));
    if (i < n)
        bm[i / BLK] = _mm512_reduce_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY),
                                                                 (__mmask16)((1u << (n - i)) - 1u), v + i));
}
#endif

static void block_max(const float *v, size_t n, float *bm)
{
    size_t i, e;
#if defined(__x86_64__) && defined(__GNUC__)
    if (ccomp_cpu_features() & CCOMP_CPU_AVX512F) {
        block_max_avx512(v, n, bm);
        return;
    }
#endif
    for (i = 0; i < n; i += BLK) {
        float m = -INFINITY;
        for (e = i; e < n && e < i + BLK; e++) m = v[e] > m ? v[e] : m;
        bm[i / BLK] = m;
    }
}


/* The exact values of query key `key` and the n <= 4 candidate groups gs: up to kk members of each become
 * candidates (the groups are marked done with -inf in srow). */
static void exact_groups(const job *j, row_state *s, const sub *sb, size_t b, float *srow, size_t key,
                         const int32_t *gs, size_t n, size_t kk, size_t *ne, size_t *ncand)
{
    float e[4];
    size_t i, m;
#if defined(__x86_64__) && defined(__GNUC__)
    if (j->dtype != CCOMP_TOKENS_F64 && (ccomp_cpu_features() & CCOMP_CPU_AVX512F)) {
        /* fewer than four: the spare chains repeat the first key (one chain takes as long as four) */
        const float *y[4];
        double dot[4];
        const double ik = j->inv[b * j->N + key];
        for (i = 0; i < 4; i++) y[i] = key32(j, b, sb->cg_key[gs[i < n ? i : 0]]);
        dot64x4_f32_avx512(key32(j, b, key), y, j->D, dot);
        for (i = 0; i < n; i++) e[i] = (float)(dot[i] * ik * j->inv[b * j->N + sb->cg_key[gs[i]]]);
    } else
#endif
        for (i = 0; i < n; i++) e[i] = exact_sim(j, b, key, sb->cg_key[gs[i]]);
    for (i = 0; i < n; i++) {
        const size_t g = (size_t)gs[i];
        srow[g] = -INFINITY;
        for (m = sb->cg_off[g]; m < sb->cg_off[g + 1] && m - sb->cg_off[g] < kk; m++) {
            s->cand[*ncand].v = e[i];
            s->cand[(*ncand)++].tok = sb->cg_tok[m];
            top_push(s->top_e, ne, kk, e[i], 0);
        }
    }
}

/* The int8 screen's bound on |screen - exact| for a query key with residual bound er and a candidate key with
 * residual and norm bounds e and n (screen8.h), with room for the float32 rounding of screen and exact */
static inline double i8_bound(double er, double e, double n)
{
    return 1.001 * (er * n + e) + ldexp(16.0, -24);
}

/* The kk best candidate tokens of one query key (the row's own token not excluded) from its screened row
 * (which it overwrites): s->cand[0 .. n), best first; returns n.  er: the key's int8 residual bound. */
static size_t best_of_key(const job *j, row_state *s, const sub *sb, size_t b, float *srow, size_t key,
                          size_t kk, double er)
{
    const size_t ncg = sb->ncg;
    const int i8 = sb->screen == SCR_I8;
    /* |screen - exact| <= d_g: e_row n_g + e_g for int8, with room for the float32 rounding of screen and
     * exact; delta for float32.  dmax: the largest over the groups */
    const double dmax = i8 ? i8_bound(er, sb->emax, sb->nmax) : j->delta;
    const size_t nkeep = kk > SMALL_K || kk >= 4 ? kk : 4;
    size_t nb = 0, ne = 0, ncand = 0, np = 0, g, t, m, blk;
    int32_t pend[4];
    double floor_;
    float hmin = -INFINITY;
    /* 1: the best screened values, each group counted once per member (up to kk): the kk best, and at least
     * four, so that the first batch of exact values is the best one (-inf: not a candidate) */
    block_max(srow, ncg, s->bm);
    for (blk = 0; blk * BLK < ncg; blk++) {
        if (!(s->bm[blk] > hmin)) continue;
        for (g = blk * BLK; g < ncg && g < (blk + 1) * BLK; g++) {
            const float v = srow[g];
            if (!(v > hmin)) continue;
            m = sb->cg_off[g + 1] - sb->cg_off[g];
            for (t = 0; t < m && t < kk; t++) top_push(s->best, &nb, nkeep, v, (int32_t)g);
            if (nb == nkeep) hmin = top_min(s->best, nb, nkeep);
        }
    }
    if (nb == 0) return 0;
    /* the kk-th best exact value is at least floor_ (the kk-th best screen minus the bound; the array is
     * sorted when it holds at most SMALL_K, else it is a heap of exactly kk) */
    floor_ = (double)(nkeep <= SMALL_K ? s->best[(nb < kk ? nb : kk) - 1].v : top_min(s->best, nb, kk)) - dmax;
    /* 2: exact values of those groups, then of every other group that the bound cannot rule out against
     * the kk-th best exact value found so far; four at a time */
    for (t = 0; t < nb; t++) {
        const int32_t gg = s->best[t].g;
        if (srow[gg] == -INFINITY) continue; /* done in an earlier batch */
        for (m = 0; m < np && pend[m] != gg; m++) continue;
        if (m == np) pend[np++] = gg;
        if (np == 4) {
            exact_groups(j, s, sb, b, srow, key, pend, np, kk, &ne, &ncand);
            np = 0;
        }
    }
    for (blk = 0; blk * BLK < ncg; blk++) {
        double lim = floor_;
        if (ne == kk && (double)top_min(s->top_e, ne, kk) > lim) lim = (double)top_min(s->top_e, ne, kk);
        if ((double)s->bm[blk] + dmax < lim) continue;
        for (g = blk * BLK; g < ncg && g < (blk + 1) * BLK; g++) {
            if (srow[g] == -INFINITY || (double)srow[g] + dmax < lim) continue;
            if (i8 && (double)srow[g] + i8_bound(er, sb->qe[sb->cg_key[g]], sb->qn[sb->cg_key[g]]) < lim) continue;
            for (m = 0; m < np && pend[m] != (int32_t)g; m++) continue;
            if (m < np) continue;
            pend[np++] = (int32_t)g;
            if (np == 4) {
                exact_groups(j, s, sb, b, srow, key, pend, np, kk, &ne, &ncand);
                np = 0;
                if (ne == kk && (double)top_min(s->top_e, ne, kk) > lim) lim = (double)top_min(s->top_e, ne, kk);
            }
        }
    }
    if (np) exact_groups(j, s, sb, b, srow, key, pend, np, kk, &ne, &ncand);
    if (ncand > 1) qsort(s->cand, ncand, sizeof *s->cand, cmp_cand);
    return ncand < kk ? ncand : kk;
}

static ccomp_status row_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    const job *j = (const job *)ctx;
    row_state *s = (row_state *)state;
    const size_t b = j->task_b[task], g0 = j->task_g0[task], k = j->k;
    const sub *sb = &j->subs[b];
    const size_t nr = sb->nrg - g0 < RB ? sb->nrg - g0 : RB, lds = padded_cols(j);
    size_t r, m, t, c;
    if (sb->ncg > 0) screen_block(j, s, sb, b, g0, nr, lds);
    for (r = 0; r < nr; r++) {
        if (ccomp_cancelled()) return ccomp_check_cancel(err, "token similarity"); /* a block of a large N */
        const size_t g = g0 + r, key = sb->rg_key[g];
        float *srow = s->S + r * lds;
        size_t extra = 0, n = 0;
        /* one search per distinct key, for the k best plus the most any of its rows has to skip (itself); a
         * key of one row whose candidate group holds only that row's token is simply left out */
        if (j->excl)
            for (m = sb->rg_off[g]; m < sb->rg_off[g + 1]; m++) {
                const size_t o = sb->occ[j->rows[sb->rg_pos[m]]];
                extra = o > extra ? o : extra;
            }
        if (extra && sb->rg_off[g + 1] - sb->rg_off[g] == 1) {
            const int32_t og = sb->cgid[j->rep[b * j->N + key]];
            if (sb->cg_off[og + 1] - sb->cg_off[og] == extra) {
                srow[og] = -INFINITY;
                extra = 0;
            }
        }
        if (sb->ncols > 0)
            n = best_of_key(j, s, sb, b, srow, key, k + extra, sb->screen == SCR_I8 ? sb->qe[key] : 0.0);
        for (m = sb->rg_off[g]; m < sb->rg_off[g + 1]; m++) {
            const size_t pos = sb->rg_pos[m];
            const int64_t me = j->rows[pos];
            int64_t *oi = j->oi + pos * k;
            float *ov = j->ov + pos * k;
            for (t = 0, c = 0; c < n && t < k; c++) {
                if (j->excl && s->cand[c].tok == me) continue;
                oi[t] = s->cand[c].tok;
                ov[t++] = s->cand[c].v;
            }
            for (; t < k; t++) {
                oi[t] = -1;
                ov[t] = -INFINITY;
            }
        }
    }
    return CCOMP_OK;
}

/* ------------------------------------------------------------ entry */

float ccomp_tokens_similarity(const void *keys, int dtype, size_t N, size_t D, size_t b, size_t i, size_t j)
{
    /* the two keys, each rescaled as the top-k rescales it */
    float r;
    if (dtype == CCOMP_TOKENS_F64) {
        double *x = (double *)malloc(2 * D * sizeof(double));
        if (x == NULL) return NAN;
        memcpy(x, (const double *)keys + (b * N + i) * D, D * sizeof(double));
        memcpy(x + D, (const double *)keys + (b * N + j) * D, D * sizeof(double));
        shift_f64(x, D, key_shift_f64(x, D));
        shift_f64(x + D, D, key_shift_f64(x + D, D));
        r = (float)(dot64_f64(x, x + D, D) * inv_norm_f64(x, D) * inv_norm_f64(x + D, D));
        free(x);
        return r;
    }
    {
        float *x = (float *)malloc(2 * D * sizeof(float));
        if (x == NULL) return NAN;
        if (dtype == CCOMP_TOKENS_F16) {
            ccomp_f16_to_f32_n((const uint16_t *)keys + (b * N + i) * D, x, D);
            ccomp_f16_to_f32_n((const uint16_t *)keys + (b * N + j) * D, x + D, D);
        } else {
            memcpy(x, (const float *)keys + (b * N + i) * D, D * sizeof(float));
            memcpy(x + D, (const float *)keys + (b * N + j) * D, D * sizeof(float));
        }
        shift_f32(x, D, key_shift_f32(x, D));
        shift_f32(x + D, D, key_shift_f32(x + D, D));
        r = (float)(dot64_f32(x, x + D, D) * inv_norm_f32(x, D) * inv_norm_f32(x + D, D));
        free(x);
        return r;
    }
}

ccomp_status ccomp_tokens_topk(const void *keys, int dtype, size_t B, size_t N, size_t D, const int64_t *rows,
                               const size_t *rows_off, const int64_t *cols, const size_t *cols_off, int exclude_self,
                               size_t k, int screen, int64_t *out_idx, float *out_val, int threads, ccomp_error *err)
{
    ccomp_parallel_ops prep = {NULL, prep_run, NULL}, ops = {row_init, row_run, row_fini};
    ccomp_status st = CCOMP_OK;
    /* the int8 screen may run (each sub-image still decides) */
    const int i8 = screen != CCOMP_TOKENS_SCREEN_F32 && dtype != CCOMP_TOKENS_F64 && D <= I8_MAX_D && tok8_available();
    job j;
    size_t b, t, nt;
    if (dtype != CCOMP_TOKENS_F32 && dtype != CCOMP_TOKENS_F64 && dtype != CCOMP_TOKENS_F16)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "keys must be float32, float64 or float16, got type %d", dtype);
    if (N < 1 || D < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "need at least one token of one channel");
    if (k < 1 || k > CCOMP_TOKENS_MAX_K)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "k must be in [1, %d], got %zu", CCOMP_TOKENS_MAX_K, k);
    if (threads < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", threads);
    if (screen != CCOMP_TOKENS_SCREEN_AUTO && screen != CCOMP_TOKENS_SCREEN_F32 && screen != CCOMP_TOKENS_SCREEN_INT8)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "screen must be 0 (auto), 1 (float32) or 2 (int8), got %d", screen);
    if (screen == CCOMP_TOKENS_SCREEN_INT8) {
        if (!tok8_available())
            return ccomp_fail(err, CCOMP_ERR_VALUE, "the int8 screen needs a CPU with AVX-512 VNNI");
        if (dtype == CCOMP_TOKENS_F64 || D > I8_MAX_D)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "the int8 screen takes float32 or float16 keys of at most %d "
                              "channels", I8_MAX_D);
    }
    if (rows_off[0] != 0 || cols_off[0] != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "row and column offsets must start at 0");
    memset(&j, 0, sizeof j);
    for (b = 0; b < B; b++) {
        if (rows_off[b + 1] < rows_off[b] || cols_off[b + 1] < cols_off[b])
            return ccomp_fail(err, CCOMP_ERR_VALUE, "offsets of sub-image %zu decrease", b);
        for (t = rows_off[b]; t < rows_off[b + 1]; t++)
            if (rows[t] < 0 || (size_t)rows[t] >= N)
                return ccomp_fail(err, CCOMP_ERR_VALUE, "row token %lld of sub-image %zu is outside [0, %zu)",
                                  (long long)rows[t], b, N);
        for (t = cols_off[b]; t < cols_off[b + 1]; t++)
            if (cols[t] < 0 || (size_t)cols[t] >= N)
                return ccomp_fail(err, CCOMP_ERR_VALUE, "candidate token %lld of sub-image %zu is outside [0, %zu)",
                                  (long long)cols[t], b, N);
        if (cols_off[b + 1] - cols_off[b] > j.max_cols) j.max_cols = cols_off[b + 1] - cols_off[b];
        if (cols_off[b + 1] - cols_off[b] > 0xFFFFFFFFu)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "sub-image %zu has more than 2^32 - 1 candidates", b);
    }
    if (B == 0 || rows_off[B] == 0) return CCOMP_OK;
    if (N > 0x7FFFFFFFu) return ccomp_fail(err, CCOMP_ERR_VALUE, "at most 2^31 - 1 tokens per sub-image, got %zu", N);
    j.keys = keys;
    j.dtype = dtype;
    j.want = screen;
    j.B = B;
    j.N = N;
    j.D = D;
    j.Dp = (D + 3) / 4 * 4;
    j.rows = rows;
    j.rows_off = rows_off;
    j.cols = cols;
    j.cols_off = cols_off;
    j.excl = exclude_self;
    j.k = k;
    j.oi = out_idx;
    j.ov = out_val;
    j.kern = ccomp_tile_kernel();
    /* |float32 screen - exact| <= (2 D + 6) u for unit keys: 2 u per normalized element (two roundings),
     * then a sequential sum per element, fused or (scalar kernel) product and sum rounded apart; a quarter
     * more for slack */
    j.delta = 1.25 * (2.0 * (double)D + 12.0) * ldexp(1.0, -24);
    j.inv = (double *)malloc(B * N * sizeof(double));
    j.rep = (size_t *)malloc(B * N * sizeof(size_t));
    j.subs = (sub *)calloc(B, sizeof(sub));
    /* one block each for every sub-image's widened keys and int8 panels (huge pages: few faults) */
    if (dtype == CCOMP_TOKENS_F16) j.wide = (float *)ccomp_alloc_big(B * N * D * sizeof(float));
    if (i8)
        j.panels8 = (int8_t *)ccomp_alloc_big(B * ((N + TOK8_W - 1) / TOK8_W) * j.Dp * TOK8_W);
    if (!j.inv || !j.rep || !j.subs || (dtype == CCOMP_TOKENS_F16 && !j.wide) || (i8 && !j.panels8)) {
        st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the similarity job for %zu x %zu tokens", B, N);
        goto done;
    }
    st = ccomp_parallel_for(threads, B, &prep, &j, err);
    if (st != CCOMP_OK) goto done;
    for (nt = 0, b = 0; b < B; b++) {
        nt += (j.subs[b].nrg + RB - 1) / RB;
        if (j.subs[b].ncg > j.max_cg) j.max_cg = j.subs[b].ncg;
    }
    j.task_b = (size_t *)malloc((nt + 1) * sizeof(size_t));
    j.task_g0 = (size_t *)malloc((nt + 1) * sizeof(size_t));
    if (!j.task_b || !j.task_g0) {
        st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu similarity tasks", nt);
        goto done;
    }
    for (nt = 0, b = 0; b < B; b++)
        for (t = 0; t < j.subs[b].nrg; t += RB) {
            j.task_b[nt] = b;
            j.task_g0[nt++] = t;
        }
    j.ntasks = nt;
    st = ccomp_parallel_for(threads, nt, &ops, &j, err);
done:
    if (j.subs)
        for (b = 0; b < B; b++) sub_free(&j.subs[b]);
    free(j.subs);
    free(j.wide);
    free(j.panels8);
    free(j.inv);
    free(j.rep);
    free(j.task_b);
    free(j.task_g0);
    return st;
}

/* Cosine-similarity top-k between token sets (ccomp/tokens.h, docs/tokens.md).
 *
 * Stage 1, one task per sub-image: the float64 inverse norms of every token, a
 * fingerprint that groups bit-identical keys, and the candidate keys normalized
 * to float32 and packed in panels of PANEL columns ([D][PANEL], zero padded).
 *
 * Stage 2, one task per block of RB query rows of one sub-image: the float32
 * similarities of the block against all candidates (the shared register-tiled
 * kernel of util/tile.h over the panels: AVX-512, AVX2+FMA or scalar), then per row the k-th best
 * float32 value t and every candidate with a value >= t - 2 delta, where delta
 * bounds the float32 error; those are recomputed in float64 (once per distinct
 * key) and the best k taken by (value descending, token index ascending).
 *
 * Every task writes only its own rows, and no result depends on which kernel
 * screened the candidates: the same answer at any thread count and on any CPU
 * (the float64 dot product has one fixed summation order). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/cpu.h"
#include "ccomp/parallel.h"
#include "ccomp/tokens.h"
#include "../util/tile.h"

#define RB 48    /* query rows per task (a multiple of the tile kernel's 12 rows) */
#define PANEL CCOMP_TILE_W /* candidate columns per packed panel */
#define KC 256             /* channels per block of the screening product */

typedef struct job {
    const void *keys;
    int dtype;
    size_t B, N, D;
    const int64_t *rows, *cols;
    const size_t *rows_off, *cols_off;
    int excl;
    size_t k;
    int64_t *oi;
    float *ov;
    double *inv;      /* [B * N]: 1 / max(|k|, 1e-12) */
    size_t *rep;      /* [B * N]: the lowest token index with bit-identical key bytes */
    float **panels;   /* per sub-image: packed normalized candidate keys */
    size_t *task_b, *task_r0, ntasks, max_cols;
    int kern;         /* the shared tile kernel (util/tile.h) */
    double delta;     /* bound on |float32 screen - float64 value| */
} job;

static inline const float *key32(const job *j, size_t b, size_t t)
{
    return (const float *)j->keys + (b * j->N + t) * j->D;
}

static inline const double *key64(const job *j, size_t b, size_t t)
{
    return (const double *)j->keys + (b * j->N + t) * j->D;
}

/* <k_a, k_c> in float64 with 8 partial sums (lane l takes elements l mod 8), combined pairwise:
 * one fixed order on every machine. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* dot64 for float32 keys with AVX-512: lane l is partial sum l (products of floats are exact in float64,
 * so a fused multiply-add rounds exactly as the product and sum do) */
__attribute__((target("avx512f"))) static double dot64_f32_avx512(const float *x, const float *y, size_t D)
{
    __m512d acc = _mm512_setzero_pd();
    double s[8];
    size_t d = 0, l;
    for (; d + 8 <= D; d += 8)
        acc = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + d)), _mm512_cvtps_pd(_mm256_loadu_ps(y + d)), acc);
    _mm512_storeu_pd(s, acc);
    for (l = 0; d < D; d++, l++) s[l] += (double)x[d] * (double)y[d];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
#endif

static double dot64(const job *j, size_t b, size_t a, size_t c)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t d, D = j->D, l;
#if defined(__x86_64__) && defined(__GNUC__)
    if (j->dtype == CCOMP_TOKENS_F32 && j->kern == CCOMP_TILE_AVX512)
        return dot64_f32_avx512(key32(j, b, a), key32(j, b, c), D);
#endif
    if (j->dtype == CCOMP_TOKENS_F32) {
        const float *x = key32(j, b, a), *y = key32(j, b, c);
        for (d = 0; d + 8 <= D; d += 8)
            for (l = 0; l < 8; l++) s[l] += (double)x[d + l] * (double)y[d + l];
        for (l = 0; d < D; d++, l++) s[l] += (double)x[d] * (double)y[d];
    } else {
        const double *x = key64(j, b, a), *y = key64(j, b, c);
        for (d = 0; d + 8 <= D; d += 8)
            for (l = 0; l < 8; l++) s[l] += x[d + l] * y[d + l];
        for (l = 0; d < D; d++, l++) s[l] += x[d] * y[d];
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static float exact_sim(const job *j, size_t b, size_t a, size_t c)
{
    return (float)(dot64(j, b, a, c) * j->inv[b * j->N + a] * j->inv[b * j->N + c]);
}

/* ------------------------------------------------------------ stage 1 */

/* a hash of the key's bytes, 8 at a time (equal keys, equal hashes; collisions are resolved by memcmp) */
static uint64_t key_hash(const job *j, size_t b, size_t t)
{
    const size_t n = j->D * (j->dtype == CCOMP_TOKENS_F32 ? 4u : 8u);
    const unsigned char *p = (const unsigned char *)j->keys + (b * j->N + t) * n;
    uint64_t h = 0x9E3779B97F4A7C15ull, w;
    size_t i;
    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* 1 / max(|k_t|, 1e-12), the sum of squares in float64 with 4 partial sums */
static double inv_norm(const job *j, size_t b, size_t t)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s;
    size_t d = 0, D = j->D;
    if (j->dtype == CCOMP_TOKENS_F32) {
        const float *k = key32(j, b, t);
        for (; d + 4 <= D; d += 4) {
            s0 += (double)k[d] * k[d];
            s1 += (double)k[d + 1] * k[d + 1];
            s2 += (double)k[d + 2] * k[d + 2];
            s3 += (double)k[d + 3] * k[d + 3];
        }
        for (; d < D; d++) s0 += (double)k[d] * k[d];
    } else {
        const double *k = key64(j, b, t);
        for (; d + 4 <= D; d += 4) {
            s0 += k[d] * k[d];
            s1 += k[d + 1] * k[d + 1];
            s2 += k[d + 2] * k[d + 2];
            s3 += k[d + 3] * k[d + 3];
        }
        for (; d < D; d++) s0 += k[d] * k[d];
    }
    s = sqrt((s0 + s1) + (s2 + s3));
    return 1.0 / (s > 1e-12 ? s : 1e-12);
}

/* the key normalized to float32 (screening only: within 2 u of the exact value per element) */
static void normalized(const job *j, size_t b, size_t t, float *out)
{
    const size_t D = j->D;
    size_t d;
    if (j->dtype == CCOMP_TOKENS_F32) {
        const float *k = key32(j, b, t), iv = (float)j->inv[b * j->N + t];
        for (d = 0; d < D; d++) out[d] = k[d] * iv;
    } else {
        const double *k = key64(j, b, t), iv = j->inv[b * j->N + t];
        for (d = 0; d < D; d++) out[d] = (float)(k[d] * iv);
    }
}

static int same_key(const job *j, size_t b, size_t s, size_t t)
{
    size_t w = j->dtype == CCOMP_TOKENS_F32 ? 4u : 8u;
    const unsigned char *base = (const unsigned char *)j->keys + b * j->N * j->D * w;
    return memcmp(base + s * j->D * w, base + t * j->D * w, j->D * w) == 0;
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

static ccomp_status prep_run(void *ctx, void *state, size_t b, ccomp_error *err)
{
    job *j = (job *)ctx;
    const size_t N = j->N, D = j->D, c0 = j->cols_off[b], nc = j->cols_off[b + 1] - c0;
    const size_t np = (nc + PANEL - 1) / PANEL;
    size_t t, d, p, q;
    hi *order;
    float *row;
    (void)state;
    for (t = 0; t < N; t++) j->inv[b * N + t] = inv_norm(j, b, t);
    /* groups of bit-identical keys: sort by (hash, index), confirm with memcmp */
    order = (hi *)malloc(N * sizeof *order);
    if (order == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu sort entries", N);
    for (t = 0; t < N; t++) {
        order[t].h = key_hash(j, b, t);
        order[t].i = t;
    }
    qsort(order, N, sizeof *order, cmp_hi);
    for (t = 0; t < N; t++) {
        size_t me = order[t].i, r = me, s;
        for (s = t; s-- > 0 && order[s].h == order[t].h;)
            if (same_key(j, b, order[s].i, me)) {
                r = j->rep[b * N + order[s].i];
                break;
            }
        j->rep[b * N + me] = r;
    }
    free(order);
    if (np == 0) return CCOMP_OK;
    j->panels[b] = (float *)malloc(np * D * PANEL * sizeof(float));
    row = (float *)malloc(D * sizeof(float));
    if (j->panels[b] == NULL || row == NULL) {
        free(row);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu floats of packed keys", np * D * PANEL);
    }
    for (p = 0; p < np; p++) {
        float *P = j->panels[b] + p * D * PANEL;
        for (q = 0; q < PANEL; q++) {
            size_t ci = p * PANEL + q;
            if (ci >= nc) {
                for (d = 0; d < D; d++) P[d * PANEL + q] = 0.0f;
            } else {
                normalized(j, b, (size_t)j->cols[c0 + ci], row);
                for (d = 0; d < D; d++) P[d * PANEL + q] = row[d];
            }
        }
    }
    free(row);
    return CCOMP_OK;
}

const char *ccomp_tokens_kernel_name(void)
{
    return ccomp_tile_kernel_name(ccomp_tile_kernel());
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
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->tok < b->tok ? -1 : a->tok > b->tok;
}

typedef struct row_state {
    float *A;      /* [RB][D] normalized query keys */
    float *S;      /* [RB][ncols padded] similarities */
    float *heap;   /* [k] the k largest screened values */
    cand_order *cand; /* [max_cols] the candidates of the current row */
    float *memo;   /* [N] exact value per representative key, valid where stamp matches */
    size_t *stamp; /* [N] */
    /* memo[rp] holds the exact similarity of a query key and candidate key rp where stamp[rp] names that
     * query key (sub-image * N + its representative + 1): rows with bit-identical keys share the values */
} row_state;

static ccomp_status row_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    const job *j = (const job *)ctx;
    size_t ldsz = ((j->max_cols + PANEL - 1) / PANEL) * PANEL;
    row_state *s = (row_state *)calloc(1, sizeof *s);
    (void)worker;
    *state = s;
    if (s == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a row state");
    s->A = (float *)malloc(RB * j->D * sizeof(float) + 64);
    s->S = (float *)malloc(RB * (ldsz ? ldsz : 1) * sizeof(float));
    s->heap = (float *)malloc((j->k + 1) * sizeof(float));
    s->cand = (cand_order *)malloc((j->max_cols + 1) * sizeof(cand_order));
    s->memo = (float *)malloc(j->N * sizeof(float));
    s->stamp = (size_t *)calloc(j->N, sizeof(size_t));
    if (!s->A || !s->S || !s->heap || !s->cand || !s->memo || !s->stamp)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the %zu-row similarity block", (size_t)RB);
    return CCOMP_OK;
}

static void row_fini(void *ctx, void *state)
{
    row_state *s = (row_state *)state;
    (void)ctx;
    if (s == NULL) return;
    free(s->A);
    free(s->S);
    free(s->heap);
    free(s->cand);
    free(s->memo);
    free(s->stamp);
    free(s);
}

/* min-heap of the k largest values seen */
static void heap_push(float *h, size_t *n, size_t k, float v)
{
    size_t i, p;
    if (*n < k) {
        i = (*n)++;
        while (i > 0 && h[p = (i - 1) / 2] > v) {
            h[i] = h[p];
            i = p;
        }
        h[i] = v;
        return;
    }
    if (!(v > h[0])) return;
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        float mv = v;
        if (l < k && h[l] < mv) {
            m = l;
            mv = h[l];
        }
        if (r < k && h[r] < mv) m = r;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = v;
}

static ccomp_status row_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    const job *j = (const job *)ctx;
    row_state *s = (row_state *)state;
    const size_t b = j->task_b[task], N = j->N, D = j->D, k = j->k;
    const size_t r0 = j->task_r0[task], rend = j->rows_off[b + 1];
    const size_t nr = rend - r0 < RB ? rend - r0 : RB;
    const size_t c0 = j->cols_off[b], nc = j->cols_off[b + 1] - c0, np = (nc + PANEL - 1) / PANEL;
    const size_t lds = np * PANEL;
    const int64_t *ctok = j->cols + c0;
    size_t r, p, q;
    (void)err;
    /* the block's normalized query keys, zero rows past the end */
    for (r = 0; r < RB; r++) {
        float *a = s->A + r * D;
        if (r < nr) {
            normalized(j, b, (size_t)j->rows[r0 + r], a);
        } else {
            memset(a, 0, D * sizeof(float));
        }
    }
    for (p = 0; p < np; p++) {
        const float *P = j->panels[b] + p * D * PANEL;
        size_t rr, kb;
        /* D in blocks of KC: the panel block (32 KB) and the rows' pieces stay in L1 */
        for (kb = 0; kb < D; kb += KC) {
            const size_t kc = D - kb < KC ? D - kb : KC;
            for (rr = 0; rr < nr; rr += CCOMP_TILE_R)
                ccomp_tile_nt(j->kern, s->A + rr * D + kb, D, nr - rr, P + kb * PANEL, kc, s->S + rr * lds + p * PANEL,
                              lds, kb > 0);
        }
    }
    for (r = 0; r < nr; r++) {
        const size_t row = r0 + r, me = (size_t)j->rows[row];
        const float *srow = s->S + r * lds;
        int64_t *oi = j->oi + row * k;
        float *ov = j->ov + row * k;
        const size_t key_id = b * N + j->rep[b * N + me] + 1;
        size_t nh = 0, nc_ok = 0, ncand = 0, t;
        double lo;
        if (k == 1) { /* the largest screened value: a plain maximum */
            float m = -INFINITY;
            for (q = 0; q < nc; q++)
                if (!(j->excl && (size_t)ctok[q] == me)) {
                    m = srow[q] > m ? srow[q] : m;
                    nc_ok++;
                }
            s->heap[0] = m;
        } else {
            for (q = 0; q < nc; q++) {
                if (j->excl && (size_t)ctok[q] == me) continue;
                heap_push(s->heap, &nh, k, srow[q]);
                nc_ok++;
            }
        }
        for (t = 0; t < k; t++) {
            oi[t] = -1;
            ov[t] = -INFINITY;
        }
        if (nc_ok == 0) continue;
        lo = (double)s->heap[0] - 2.0 * j->delta;
        for (q = 0; q < nc; q++) {
            size_t tok = (size_t)ctok[q], rp;
            if ((j->excl && tok == me) || !((double)srow[q] >= lo)) continue;
            rp = j->rep[b * N + tok];
            if (s->stamp[rp] != key_id) {
                s->stamp[rp] = key_id;
                s->memo[rp] = exact_sim(j, b, me, tok);
            }
            s->cand[ncand].v = s->memo[rp];
            s->cand[ncand].tok = (int64_t)tok;
            ncand++;
        }
        if (k == 1) {
            size_t best = 0;
            for (t = 1; t < ncand; t++)
                if (cmp_cand(&s->cand[t], &s->cand[best]) < 0) best = t;
            oi[0] = s->cand[best].tok;
            ov[0] = s->cand[best].v;
        } else {
            qsort(s->cand, ncand, sizeof *s->cand, cmp_cand);
            for (t = 0; t < k && t < ncand; t++) {
                oi[t] = s->cand[t].tok;
                ov[t] = s->cand[t].v;
            }
        }
    }
    return CCOMP_OK;
}

/* ------------------------------------------------------------ entry */

float ccomp_tokens_similarity(const void *keys, int dtype, size_t N, size_t D, size_t b, size_t i, size_t j)
{
    job jb;
    memset(&jb, 0, sizeof jb);
    jb.keys = keys;
    jb.dtype = dtype;
    jb.N = N;
    jb.D = D;
    return (float)(dot64(&jb, b, i, j) * inv_norm(&jb, b, i) * inv_norm(&jb, b, j));
}

ccomp_status ccomp_tokens_topk(const void *keys, int dtype, size_t B, size_t N, size_t D, const int64_t *rows,
                               const size_t *rows_off, const int64_t *cols, const size_t *cols_off, int exclude_self,
                               size_t k, int64_t *out_idx, float *out_val, int threads, ccomp_error *err)
{
    ccomp_parallel_ops prep = {NULL, prep_run, NULL}, ops = {row_init, row_run, row_fini};
    ccomp_status st = CCOMP_OK;
    job j;
    size_t b, t, nt;
    if (dtype != CCOMP_TOKENS_F32 && dtype != CCOMP_TOKENS_F64)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "keys must be float32 or float64, got type %d", dtype);
    if (N < 1 || D < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "need at least one token of one channel");
    if (k < 1 || k > CCOMP_TOKENS_MAX_K)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "k must be in [1, %d], got %zu", CCOMP_TOKENS_MAX_K, k);
    if (threads < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", threads);
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
    }
    if (B == 0 || rows_off[B] == 0) return CCOMP_OK;
    j.keys = keys;
    j.dtype = dtype;
    j.B = B;
    j.N = N;
    j.D = D;
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
    for (nt = 0, b = 0; b < B; b++) nt += (rows_off[b + 1] - rows_off[b] + RB - 1) / RB;
    j.inv = (double *)malloc(B * N * sizeof(double));
    j.rep = (size_t *)malloc(B * N * sizeof(size_t));
    j.panels = (float **)calloc(B, sizeof(float *));
    j.task_b = (size_t *)malloc(nt * sizeof(size_t));
    j.task_r0 = (size_t *)malloc(nt * sizeof(size_t));
    if (!j.inv || !j.rep || !j.panels || !j.task_b || !j.task_r0) {
        st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the similarity job for %zu x %zu tokens", B, N);
        goto done;
    }
    for (nt = 0, b = 0; b < B; b++)
        for (t = rows_off[b]; t < rows_off[b + 1]; t += RB) {
            j.task_b[nt] = b;
            j.task_r0[nt++] = t;
        }
    j.ntasks = nt;
    st = ccomp_parallel_for(threads, B, &prep, &j, err);
    if (st == CCOMP_OK) st = ccomp_parallel_for(threads, nt, &ops, &j, err);
done:
    if (j.panels)
        for (b = 0; b < B; b++) free(j.panels[b]);
    free(j.panels);
    free(j.inv);
    free(j.rep);
    free(j.task_b);
    free(j.task_r0);
    return st;
}

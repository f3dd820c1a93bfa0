/* Decode attention over compressed K/V (ccomp/kv.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/cancel.h"
#include "ccomp/kv.h"
#include "ccomp/parallel.h"
#include "kv_internal.h"

size_t ccomp_kv_slice_rows(const ccomp_kv_slice *k)
{
    size_t n = 0;
    for (; k != NULL; k = k->next) n += k->rows;
    return n;
}

/* The method row of a slice; anything unknown reads as dense float32. */
static const ccomp_kv_method *ops_of(int method)
{
    const ccomp_kv_method *m = ccomp_kv_method_get(method);
    return m != NULL ? m : ccomp_kv_method_get(CCOMP_KV_M_DENSE);
}

void ccomp_kv_slice_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    for (; k != NULL; s += k->rows, k = k->next) ops_of(k->method)->scores(k, q, s);
}

static void sub_slice(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out);

/* Rows scored per step of the single-query path, between checks for Ctrl-C (a multiple of every group size;
 * scores are per row, so the steps give the same bits as one pass). */
#define KV_SCORE_STEP 8192

/* ccomp_kv_slice_scores in steps that answer cancellation; 0 when cancelled (s then incomplete). */
static int scores_interruptible(const ccomp_kv_slice *k, const float *q, float *s)
{
    for (; k != NULL; s += k->rows, k = k->next) {
        size_t r0;
        for (r0 = 0; r0 < k->rows; r0 += KV_SCORE_STEP) {
            const size_t n = k->rows - r0 < KV_SCORE_STEP ? k->rows - r0 : KV_SCORE_STEP;
            ccomp_kv_storage u;
            ccomp_kv_slice sub;
            if (ccomp_cancelled()) return 0;
            sub_slice(k, r0, n, &u, &sub);
            ops_of(k->method)->scores(&sub, q, s + r0);
        }
    }
    return 1;
}

/* Whether accumulating a segment in row steps gives the bits of one pass: the methods that add every row (or
 * every per-channel group) straight into o.  The others (per-token groupwise, turbo, GEAR) sum privately first. */
static int accum_steps_exact(const ccomp_kv_slice *v)
{
    return ops_of(v->method)->accum_steps_exact(v);
}

/* ccomp_kv_slice_accum in steps that answer cancellation where that leaves the result unchanged; 0 when
 * cancelled (o then incomplete). */
static int accum_interruptible(const ccomp_kv_slice *v, const float *p, float *o)
{
    for (; v != NULL; p += v->rows, v = v->next) {
        size_t r0;
        if (ccomp_cancelled()) return 0;
        if (!accum_steps_exact(v)) {
            ops_of(v->method)->accum(v, p, o);
            continue;
        }
        for (r0 = 0; r0 < v->rows; r0 += KV_SCORE_STEP) {
            const size_t n = v->rows - r0 < KV_SCORE_STEP ? v->rows - r0 : KV_SCORE_STEP;
            ccomp_kv_storage u;
            ccomp_kv_slice sub;
            if (r0 && ccomp_cancelled()) return 0;
            sub_slice(v, r0, n, &u, &sub);
            ops_of(v->method)->accum(&sub, p + r0, o);
        }
    }
    return 1;
}

ccomp_status ccomp_kv_slice_dequantize(const ccomp_kv_slice *s, float *out, ccomp_error *err)
{
    size_t r0;
    for (r0 = 0; r0 < s->rows; r0 += KV_SCORE_STEP) {
        const size_t n = s->rows - r0 < KV_SCORE_STEP ? s->rows - r0 : KV_SCORE_STEP;
        float *dst = out + r0 * s->cols;
        const float *rows;
        ccomp_kv_storage u;
        ccomp_kv_slice sub;
        if (r0 && ccomp_cancelled()) return ccomp_check_cancel(err, "dequantize");
        sub_slice(s, r0, n, &u, &sub);
        rows = ops_of(s->method)->rows(&sub, dst);
        if (rows != dst) memcpy(dst, rows, n * s->cols * sizeof(float));
    }
    return CCOMP_OK;
}

void ccomp_kv_slice_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    for (; v != NULL; p += v->rows, v = v->next) ops_of(v->method)->accum(v, p, o);
}

/* ------------------------------------------------ many queries per head */

/* When several queries read the same K/V head (grouped-query heads, or a
 * block of query tokens), decoding the compressed rows once per query would
 * repeat the same work: the multi-query path decodes tiles of KV_TILE rows
 * into a small buffer (L1/L2 sized, never the whole K or V) and uses each
 * tile for a block of up to KV_QBLOCK queries.  Turbo keys with a QJL
 * residual keep the per-query kernels (their scores are not a dot product
 * with the dequantized rows). */
#define KV_TILE 128
#define KV_QBLOCK 16

/* Rows [r0, r0 + n) of one segment as a slice of its own (r0 and n multiples
 * of the per-channel group where there is one; KV_TILE is). */
static void sub_slice(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out)
{
    *out = *s;
    out->rows = n;
    out->next = NULL;
    ops_of(s->method)->sub(s, r0, n, u, out);
}

/* The rows of a sub-slice as float32 (dense data is used in place). */
static const float *tile_rows(const ccomp_kv_slice *t, float *buf)
{
    return ops_of(t->method)->rows(t, buf);
}

/* 1 when every segment's scores are dot products with its decoded rows (turbo keys with QJL are not) */
static int chain_scores_are_dots(const ccomp_kv_slice *k)
{
    for (; k != NULL; k = k->next)
        if (!ops_of(k->method)->scores_are_dots(k)) return 0;
    return 1;
}

/* s[j][t] = <q_j, k_t> for nqb queries over the chain, a tile at a time */
static void multi_scores(const ccomp_kv_slice *k, const float *const *qs, size_t nqb, size_t T, float *s,
                         float *buf)
{
    size_t t0 = 0;
    for (; k != NULL; t0 += k->rows, k = k->next) {
        size_t r0;
        for (r0 = 0; r0 < k->rows; r0 += KV_TILE) {
            const size_t n = k->rows - r0 < KV_TILE ? k->rows - r0 : KV_TILE;
            ccomp_kv_storage u;
            ccomp_kv_slice sub;
            const float *rows;
            size_t j;
            if (ccomp_cancelled()) return;
            sub_slice(k, r0, n, &u, &sub);
            rows = tile_rows(&sub, buf);
            for (j = 0; j < nqb; j++) kv_dense_scores(rows, n, k->cols, qs[j], s + j * T + t0 + r0);
        }
    }
}

/* o[j][:] += sum_t p[j][t] v_t for nqb queries */
static void multi_accum(const ccomp_kv_slice *v, const float *p, size_t nqb, size_t T, float *const *os, float *buf)
{
    size_t t0 = 0;
    for (; v != NULL; t0 += v->rows, v = v->next) {
        size_t r0;
        for (r0 = 0; r0 < v->rows; r0 += KV_TILE) {
            const size_t n = v->rows - r0 < KV_TILE ? v->rows - r0 : KV_TILE, d = v->cols;
            ccomp_kv_storage u;
            ccomp_kv_slice sub;
            const float *rows;
            size_t j;
            if (ccomp_cancelled()) return;
            sub_slice(v, r0, n, &u, &sub);
            rows = tile_rows(&sub, buf);
            for (j = 0; j < nqb; j++) kv_dense_accum(rows, n, d, p + j * T + t0 + r0, os[j]);
        }
    }
}

typedef struct att_ctx {
    const float *q;
    size_t H, nq, D, Dv, T, G;
    size_t per_group, blocks; /* multi-query path: queries per K/V head, blocks of them per head */
    int multi;
    const ccomp_kv_slice *k, *v;
    float scale;
    float *out;
} att_ctx;

static ccomp_status att_init(void *vctx, int worker, void **state, ccomp_error *err)
{
    att_ctx *c = (att_ctx *)vctx;
    (void)worker;
    const size_t d = c->D > c->Dv ? c->D : c->Dv;
    *state = malloc(((c->multi ? KV_QBLOCK : 1u) * (c->T ? c->T : 1u) + (c->multi ? KV_TILE * d : 0u)) *
                    sizeof(float));
    return *state ? CCOMP_OK : ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
}

static void att_fini(void *vctx, void *state)
{
    (void)vctx;
    free(state);
}

/* 1 when the n scores are finite (a huge q or scale can overflow them: softmax would then hide it) */
static int scores_finite(const float *s, size_t n)
{
    size_t t;
    int ok = 1;
    for (t = 0; t < n; t++) ok &= isfinite(s[t]) != 0;
    return ok;
}

static ccomp_status scores_overflow(ccomp_error *err, size_t h)
{
    return ccomp_fail(err, CCOMP_ERR_VALUE,
                      "the attention scores of query head %zu overflow float32 (q or the cache too large)", h);
}

/* softmax of n logits in place (times scale), returns the normaliser */
static float softmax_row(float *s, size_t n, float scale)
{
    float mx = -INFINITY, z = 0.0f;
    size_t t;
    if (kv_avx2_ok()) return kv_softmax_avx2(s, n, scale);
    for (t = 0; t < n; t++) {
        s[t] *= scale;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (t = 0; t < n; t++) {
        s[t] = expf(s[t] - mx);
        z += s[t];
    }
    return z;
}

/* one block of up to KV_QBLOCK queries of K/V head g */
static ccomp_status att_multi_run(att_ctx *c, float *s, size_t task, ccomp_error *err)
{
    const size_t g = task / c->blocks, j0 = (task % c->blocks) * KV_QBLOCK;
    const size_t nqb = c->per_group - j0 < KV_QBLOCK ? c->per_group - j0 : KV_QBLOCK;
    const float *qs[KV_QBLOCK];
    float *os[KV_QBLOCK], z[KV_QBLOCK], *buf = s + KV_QBLOCK * c->T;
    size_t j, t;
    for (j = 0; j < nqb; j++) {
        /* query j0 + j of the group: head g * rep + (j0 + j) / nq, token (j0 + j) % nq */
        const size_t h = g * (c->H / c->G) + (j0 + j) / c->nq, i = (j0 + j) % c->nq;
        qs[j] = c->q + (h * c->nq + i) * c->D;
        os[j] = c->out + (h * c->nq + i) * c->Dv;
    }
    multi_scores(&c->k[g], qs, nqb, c->T, s, buf);
    if (ccomp_cancelled()) return ccomp_check_cancel(err, "attention");
    for (j = 0; j < nqb; j++)
        if (!scores_finite(s + j * c->T, c->T)) return scores_overflow(err, g * (c->H / c->G) + (j0 + j) / c->nq);
    for (j = 0; j < nqb; j++) {
        z[j] = softmax_row(s + j * c->T, c->T, c->scale);
        memset(os[j], 0, c->Dv * sizeof(float));
    }
    multi_accum(&c->v[g], s, nqb, c->T, os, buf);
    for (j = 0; j < nqb; j++)
        for (t = 0; t < c->Dv; t++) os[j][t] /= z[j];
    return ccomp_check_cancel(err, "attention");
}

static ccomp_status att_run(void *vctx, void *state, size_t task, ccomp_error *err)
{
    att_ctx *c = (att_ctx *)vctx;
    float *s = (float *)state, z, *o;
    size_t h, i, g, t;
    if (c->multi) return att_multi_run(c, s, task, err);
    h = task / c->nq;
    i = task % c->nq;
    g = h / (c->H / c->G);
    o = c->out + (h * c->nq + i) * c->Dv;
    if (!scores_interruptible(&c->k[g], c->q + (h * c->nq + i) * c->D, s))
        return ccomp_check_cancel(err, "attention");
    if (!scores_finite(s, c->T)) return scores_overflow(err, h);
    z = softmax_row(s, c->T, c->scale);
    memset(o, 0, c->Dv * sizeof(float));
    if (!accum_interruptible(&c->v[g], s, o)) return ccomp_check_cancel(err, "attention");
    for (t = 0; t < c->Dv; t++) o[t] /= z;
    return ccomp_check_cancel(err, "attention");
}

ccomp_status ccomp_kv_attention(const float *q, size_t H, size_t nq, size_t D, const ccomp_kv_slice *k,
                                const ccomp_kv_slice *v, size_t G, float scale, float *out, int threads,
                                ccomp_error *err)
{
    att_ctx c;
    ccomp_parallel_ops ops = {att_init, att_run, att_fini};
    size_t g;
    if (G == 0 || H % G != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "query heads (%zu) must be a multiple of the K/V heads (%zu)", H, G);
    c.T = ccomp_kv_slice_rows(&k[0]);
    if (c.T == 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "the cache holds no tokens");
    c.Dv = v[0].cols;
    if (D == 0 || c.Dv == 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dims must be positive, got %zu and %zu", D, c.Dv);
    for (g = 0; g < G; g++) {
        const ccomp_kv_slice *seg;
        size_t i;
        if (ccomp_kv_slice_rows(&k[g]) != c.T || ccomp_kv_slice_rows(&v[g]) != c.T)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "K and V of head %zu hold different token counts", g);
        /* every segment, not only the first: the kernels and the tile buffer size rows by these dims */
        for (seg = &k[g], i = 0; seg != NULL; seg = seg->next, i++)
            if (seg->cols != D)
                return ccomp_fail(err, CCOMP_ERR_VALUE, "head %zu: K segment %zu has head dim %zu, expected %zu (q's)",
                                  g, i, seg->cols, D);
        for (seg = &v[g], i = 0; seg != NULL; seg = seg->next, i++)
            if (seg->cols != c.Dv)
                return ccomp_fail(err, CCOMP_ERR_VALUE, "head %zu: V segment %zu has head dim %zu, expected %zu", g, i,
                                  seg->cols, c.Dv);
    }
    c.q = q;
    c.H = H;
    c.nq = nq;
    c.D = D;
    c.G = G;
    c.k = k;
    c.v = v;
    c.scale = scale;
    c.out = out;
    /* the multi-query path when at least 4 queries share a K/V head and no key segment has QJL */
    c.per_group = H / G * nq;
    c.blocks = (c.per_group + KV_QBLOCK - 1) / KV_QBLOCK;
    c.multi = c.per_group >= 4;
    for (g = 0; g < G && c.multi; g++) c.multi = chain_scores_are_dots(&k[g]);
    return ccomp_parallel_for(threads, c.multi ? G * c.blocks : H * nq, &ops, &c, err);
}

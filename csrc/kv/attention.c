/* Decode attention over compressed K/V (ccomp/kv.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/kv.h"
#include "ccomp/kv_sparse.h"
#include "ccomp/kv_turbo.h"
#include "ccomp/parallel.h"

size_t ccomp_kv_slice_rows(const ccomp_kv_slice *k)
{
    size_t n = 0;
    for (; k != NULL; k = k->next) n += k->rows;
    return n;
}

static void dense_scores(const float *m, size_t rows, size_t cols, const float *q, float *s)
{
    size_t r, c;
    for (r = 0; r < rows; r++) {
        const float *row = m + r * cols;
        float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (c = 0; c < cols; c++) part[c & 7] += q[c] * row[c];
        s[r] = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    }
}

static void dense_accum(const float *m, size_t rows, size_t cols, const float *p, float *o)
{
    size_t r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) o[c] += p[r] * m[r * cols + c];
}

void ccomp_kv_slice_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    for (; k != NULL; s += k->rows, k = k->next) {
        switch (k->method) {
        case CCOMP_KV_M_GROUPWISE: ccomp_kv_gw_scores((const ccomp_kv_gw *)k->data, q, s); break;
        case CCOMP_KV_M_GGML: ccomp_kv_ggml_scores((const uint8_t *)k->data, k->rows, k->cols, k->type, q, s); break;
        case CCOMP_KV_M_TURBO: ccomp_kv_turbo_scores((const ccomp_kv_turbo *)k->data, q, s); break;
        case CCOMP_KV_M_SPARSE: ccomp_kv_sparse_scores((const ccomp_kv_sparse *)k->data, q, s); break;
        case CCOMP_KV_M_GEAR: ccomp_kv_gear_scores((const ccomp_kv_gear *)k->data, q, s); break;
        default: dense_scores((const float *)k->data, k->rows, k->cols, q, s); break;
        }
    }
}

void ccomp_kv_slice_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    for (; v != NULL; p += v->rows, v = v->next) {
        switch (v->method) {
        case CCOMP_KV_M_GROUPWISE: ccomp_kv_gw_accum((const ccomp_kv_gw *)v->data, p, o); break;
        case CCOMP_KV_M_GGML: ccomp_kv_ggml_accum((const uint8_t *)v->data, v->rows, v->cols, v->type, p, o); break;
        case CCOMP_KV_M_TURBO: ccomp_kv_turbo_accum((const ccomp_kv_turbo *)v->data, p, o); break;
        case CCOMP_KV_M_SPARSE: ccomp_kv_sparse_accum((const ccomp_kv_sparse *)v->data, p, o); break;
        case CCOMP_KV_M_GEAR: ccomp_kv_gear_accum((const ccomp_kv_gear *)v->data, p, o); break;
        default: dense_accum((const float *)v->data, v->rows, v->cols, p, o); break;
        }
    }
}

typedef struct att_ctx {
    const float *q;
    size_t H, nq, D, Dv, T, G;
    const ccomp_kv_slice *k, *v;
    float scale;
    float *out;
} att_ctx;

static ccomp_status att_init(void *vctx, int worker, void **state, ccomp_error *err)
{
    att_ctx *c = (att_ctx *)vctx;
    (void)worker;
    *state = malloc((c->T ? c->T : 1u) * sizeof(float));
    return *state ? CCOMP_OK : ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
}

static void att_fini(void *vctx, void *state)
{
    (void)vctx;
    free(state);
}

static ccomp_status att_run(void *vctx, void *state, size_t task, ccomp_error *err)
{
    att_ctx *c = (att_ctx *)vctx;
    float *s = (float *)state, mx = -INFINITY, z = 0.0f;
    size_t h = task / c->nq, i = task % c->nq, g = h / (c->H / c->G), t;
    float *o = c->out + (h * c->nq + i) * c->Dv;
    (void)err;
    ccomp_kv_slice_scores(&c->k[g], c->q + (h * c->nq + i) * c->D, s);
    for (t = 0; t < c->T; t++) {
        s[t] *= c->scale;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (t = 0; t < c->T; t++) {
        s[t] = expf(s[t] - mx);
        z += s[t];
    }
    memset(o, 0, c->Dv * sizeof(float));
    ccomp_kv_slice_accum(&c->v[g], s, o);
    for (t = 0; t < c->Dv; t++) o[t] /= z;
    return CCOMP_OK;
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
    for (g = 0; g < G; g++) {
        if (ccomp_kv_slice_rows(&k[g]) != c.T || ccomp_kv_slice_rows(&v[g]) != c.T)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "K and V of head %zu hold different token counts", g);
        if (k[g].cols != D || v[g].cols != c.Dv)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "head %zu: K has dim %zu, expected %zu", g, k[g].cols, D);
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
    return ccomp_parallel_for(threads, H * nq, &ops, &c, err);
}

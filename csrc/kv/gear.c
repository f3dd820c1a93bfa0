/* GEAR: groupwise backbone + per-token fp16 outliers + fp16 low-rank residual
 * (ccomp/kv_sparse.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/half.h"
#include "ccomp/kv_sparse.h"
#include "kv_internal.h"

ccomp_status ccomp_kv_gear_check(size_t rows, size_t cols, int bits, int group, int axis, double frac, int rank,
                                 int iters, ccomp_error *err)
{
    ccomp_status st = ccomp_kv_gw_check(rows, cols, bits, group, axis, err);
    if (st == CCOMP_OK) st = ccomp_kv_outliers_check(rows, cols, frac, err);
    if (st == CCOMP_OK && cols > KV_MAX_COLS)
        st = ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be at most %d, got %zu", KV_MAX_COLS, cols);
    if (st == CCOMP_OK && rank < 0) st = ccomp_fail(err, CCOMP_ERR_VALUE, "rank must be >= 0, got %d", rank);
    if (st == CCOMP_OK && rank > 0) st = ccomp_kv_lowrank_check(rows, cols, rank, iters, err);
    return st;
}

/* fp16 copy of n floats; 0 when a value does not fit in fp16 */
static int to_f16(const float *a, size_t n, uint16_t *out)
{
    size_t i;
    for (i = 0; i < n; i++) {
        out[i] = ccomp_f32_to_f16(a[i]);
        if ((out[i] & 0x7c00u) == 0x7c00u) return 0;
    }
    return 1;
}

ccomp_status ccomp_kv_gear_quantize(const float *x, size_t ld, ccomp_kv_gear *g, int iters, uint64_t seed,
                                    ccomp_error *err)
{
    const size_t rows = g->backbone.rows, cols = g->backbone.cols, r = g->rank > 0 ? (size_t)g->rank : 0;
    float *res, *uw = NULL;
    size_t t, j;
    ccomp_status st;
    if (g->outliers.rows != rows || g->outliers.cols != cols)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "GEAR parts disagree on the slice shape");
    if (rows == 0) return CCOMP_OK;
    res = (float *)malloc(rows * cols * sizeof(float));
    if (res == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a %zu x %zu residual", rows, cols);
    /* S, and X with the outliers replaced by 0 (in res) */
    st = ccomp_kv_outliers_extract(x, ld, &g->outliers, res, cols, err);
    /* D from it */
    if (st == CCOMP_OK) st = ccomp_kv_gw_quantize(res, cols, &g->backbone, err);
    if (st == CCOMP_OK && r > 0) {
        /* R = X - D - S */
        ccomp_kv_gw_dequantize(&g->backbone, res, cols);
        for (t = 0; t < rows; t++)
            for (j = 0; j < cols; j++) res[t * cols + j] = x[t * ld + j] - res[t * cols + j];
        ccomp_kv_outliers_sub(&g->outliers, res, cols);
        uw = (float *)malloc((rows + cols) * r * sizeof(float));
        if (uw == NULL) st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the low-rank factors");
        if (st == CCOMP_OK) st = ccomp_kv_lowrank(res, rows, cols, cols, g->rank, iters, seed, uw, uw + rows * r, err);
        if (st == CCOMP_OK && !(to_f16(uw, rows * r, g->U) && to_f16(uw + rows * r, cols * r, g->W)))
            st = ccomp_fail(err, CCOMP_ERR_VALUE, "a low-rank factor does not fit in float16 (|value| above 65504)");
    }
    free(uw);
    free(res);
    return st;
}

/* wq[k] = sum_j W[j][k] q[j] */
static void w_times(const uint16_t *W, size_t cols, size_t r, const float *q, float *wq)
{
    size_t j, k;
    for (k = 0; k < r; k++) wq[k] = 0.0f;
    for (j = 0; j < cols; j++) {
        const uint16_t *wj = W + j * r;
        for (k = 0; k < r; k++) wq[k] += ccomp_f16_to_f32(wj[k]) * q[j];
    }
}

void ccomp_kv_gear_dequantize(const ccomp_kv_gear *g, float *out, size_t ld)
{
    const size_t rows = g->backbone.rows, cols = g->backbone.cols, r = g->rank > 0 ? (size_t)g->rank : 0;
    size_t t, j, k;
    ccomp_kv_gw_dequantize(&g->backbone, out, ld);
    ccomp_kv_outliers_add(&g->outliers, out, ld);
    for (t = 0; t < rows && r > 0; t++) {
        float u[KV_MAX_COLS];
        for (k = 0; k < r; k++) u[k] = ccomp_f16_to_f32(g->U[t * r + k]);
        for (j = 0; j < cols; j++) {
            const uint16_t *wj = g->W + j * r;
            float acc = 0.0f;
            for (k = 0; k < r; k++) acc += u[k] * ccomp_f16_to_f32(wj[k]);
            out[t * ld + j] += acc;
        }
    }
}

void ccomp_kv_gear_scores(const ccomp_kv_gear *g, const float *q, float *s)
{
    const size_t rows = g->backbone.rows, r = g->rank > 0 ? (size_t)g->rank : 0;
    float wq[KV_MAX_COLS];
    size_t t, k;
    ccomp_kv_gw_scores(&g->backbone, q, s);
    ccomp_kv_outliers_scores(&g->outliers, q, s);
    if (r == 0) return;
    w_times(g->W, g->backbone.cols, r, q, wq);
    for (t = 0; t < rows; t++) {
        const uint16_t *ut = g->U + t * r;
        float acc = 0.0f;
        for (k = 0; k < r; k++) acc += ccomp_f16_to_f32(ut[k]) * wq[k];
        s[t] += acc;
    }
}

void ccomp_kv_gear_accum(const ccomp_kv_gear *g, const float *p, float *o)
{
    const size_t rows = g->backbone.rows, cols = g->backbone.cols, r = g->rank > 0 ? (size_t)g->rank : 0;
    float up[KV_MAX_COLS];
    size_t t, j, k;
    ccomp_kv_gw_accum(&g->backbone, p, o);
    ccomp_kv_outliers_accum(&g->outliers, p, o);
    if (r == 0) return;
    for (k = 0; k < r; k++) up[k] = 0.0f;
    for (t = 0; t < rows; t++) {
        const uint16_t *ut = g->U + t * r;
        for (k = 0; k < r; k++) up[k] += ccomp_f16_to_f32(ut[k]) * p[t];
    }
    for (j = 0; j < cols; j++) {
        const uint16_t *wj = g->W + j * r;
        float acc = 0.0f;
        for (k = 0; k < r; k++) acc += ccomp_f16_to_f32(wj[k]) * up[k];
        o[j] += acc;
    }
}

/* ------------------------------------------------------------ the method row */

KV_FITS_STORAGE(ccomp_kv_gear);

static ccomp_status ge_layout(size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                              ccomp_error *err)
{
    size_t per_row, r;
    ccomp_status st = ccomp_kv_gear_check(rows, cols, p->bits, p->group, p->axis, p->frac, p->rank, p->iters, err);
    if (st != CCOMP_OK) return st;
    per_row = ccomp_kv_outliers_per_row(cols, p->frac);
    r = (size_t)p->rank;
    kv_gw_layout_arrays(L);
    kv_layout_add(L, "out_idx", "u2", rows * per_row);
    kv_layout_add(L, "out_vals", "u2", rows * per_row);
    kv_layout_add(L, "U", "u2", rows * r);
    kv_layout_add(L, "W", "u2", cols * r);
    L->index_mask = 1u << 3;
    return CCOMP_OK;
}
static void ge_view(const ccomp_kv_layout *L, void *const *arrays, const float *aux, ccomp_kv_view *v)
{
    ccomp_kv_gear *g = (ccomp_kv_gear *)&v->u;
    (void)aux;
    kv_gw_view(L, arrays, &g->backbone);
    g->outliers.rows = L->rows;
    g->outliers.cols = L->cols;
    g->outliers.per_row = ccomp_kv_outliers_per_row(L->cols, L->p.frac);
    g->outliers.idx = (uint16_t *)arrays[3];
    g->outliers.vals = (uint16_t *)arrays[4];
    g->rank = L->p.rank;
    g->U = (uint16_t *)arrays[5];
    g->W = (uint16_t *)arrays[6];
    v->slice.data = g;
}
static ccomp_status ge_validate(const ccomp_kv_layout *L, const ccomp_kv_slice *s, ccomp_error *err)
{
    (void)L;
    return ccomp_kv_outliers_validate(&((const ccomp_kv_gear *)s->data)->outliers, err);
}
static ccomp_status ge_quantize(const ccomp_kv_layout *L, const float *x, size_t ld, const ccomp_kv_slice *s,
                                ccomp_error *err)
{
    return ccomp_kv_gear_quantize(x, ld, (ccomp_kv_gear *)s->data, L->p.iters, L->p.seed, err);
}
static void ge_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    ccomp_kv_gear_scores((const ccomp_kv_gear *)k->data, q, s);
}
static void ge_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    ccomp_kv_gear_accum((const ccomp_kv_gear *)v->data, p, o);
}
static void ge_sub(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out)
{
    const ccomp_kv_gear *ge = (const ccomp_kv_gear *)s->data;
    ccomp_kv_gear *d = (ccomp_kv_gear *)u;
    const size_t r = ge->rank > 0 ? (size_t)ge->rank : 0;
    *d = *ge;
    d->outliers.rows = n;
    d->outliers.idx += r0 * ge->outliers.per_row;
    d->outliers.vals += r0 * ge->outliers.per_row;
    d->U += r0 * r;
    kv_gw_shift(&ge->backbone, r0, n, &d->backbone);
    out->data = d;
}
static const float *ge_rows(const ccomp_kv_slice *t, float *buf)
{
    ccomp_kv_gear_dequantize((const ccomp_kv_gear *)t->data, buf, t->cols);
    return buf;
}

const ccomp_kv_method ccomp_kv_method_gear = {
    .name = "gear",
    .params = "axis bits group iters outliers rank seed",
    .layout = ge_layout,
    .view = ge_view,
    .validate = ge_validate,
    .quantize = ge_quantize,
    .scores = ge_scores,
    .accum = ge_accum,
    .sub = ge_sub,
    .rows = ge_rows,
    .accum_steps_exact = kv_never,
    .scores_are_dots = kv_always,
};

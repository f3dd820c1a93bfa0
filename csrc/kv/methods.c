/* The KV method table (ccomp/kv.h): one row per CCOMP_KV_METHODS line, defined in the method's own file
 * (ccomp_kv_method_<name>), and the dense float32 row used for full-precision segments. */
#include <string.h>

#include "ccomp/kv.h"
#include "kv_internal.h"

/* Largest tokens x head dim of one slice: every per-slice count fits a size_t with room to spare. */
#define KV_MAX_ELEMENTS ((size_t)1 << 40)

#define KV_DECLARE_ROW_(ID, name) extern const ccomp_kv_method ccomp_kv_method_##name;
CCOMP_KV_METHODS(KV_DECLARE_ROW_)
#undef KV_DECLARE_ROW_

static const ccomp_kv_method *const kv_table[CCOMP_KV_M_COUNT] = {
#define KV_ROW_(ID, name) [CCOMP_KV_M_##ID] = &ccomp_kv_method_##name,
    CCOMP_KV_METHODS(KV_ROW_)
#undef KV_ROW_
};

const ccomp_kv_method *ccomp_kv_method_get(int id)
{
    return id >= 0 && id < CCOMP_KV_M_COUNT ? kv_table[id] : NULL;
}

ccomp_status ccomp_kv_layout_init(int id, size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                                  ccomp_error *err)
{
    const ccomp_kv_method *m = ccomp_kv_method_get(id);
    memset(L, 0, sizeof *L);
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "unknown method %d", id);
    if (cols == 0 || rows > KV_MAX_ELEMENTS / cols)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "invalid slice shape (%zu tokens, head dim %zu): expected head dim >= 1 and tokens x head "
                          "dim at most 2^40",
                          rows, cols);
    L->method = id;
    L->rows = rows;
    L->cols = cols;
    L->p = *p;
    return m->layout(rows, cols, p, L, err);
}

void kv_layout_add(ccomp_kv_layout *L, const char *name, const char *dtype, size_t count)
{
    L->name[L->n] = name;
    L->dtype[L->n] = dtype;
    L->count[L->n] = count;
    L->n++;
}

int kv_always(const ccomp_kv_slice *s)
{
    (void)s;
    return 1;
}

int kv_never(const ccomp_kv_slice *s)
{
    (void)s;
    return 0;
}

/* ------------------------------------------------------------ dense float32 rows */

void kv_dense_scores(const float *m, size_t rows, size_t cols, const float *q, float *s)
{
    size_t r, c;
    if (kv_avx2_ok()) {
        kv_dense_scores_avx2(m, rows, cols, q, s);
        return;
    }
    for (r = 0; r < rows; r++) {
        const float *row = m + r * cols;
        float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (c = 0; c < cols; c++) part[c & 7] += q[c] * row[c];
        s[r] = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    }
}

void kv_dense_accum(const float *m, size_t rows, size_t cols, const float *p, float *o)
{
    size_t r, c;
    if (kv_avx2_ok()) {
        kv_dense_accum_avx2(m, rows, cols, p, o);
        return;
    }
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) o[c] += p[r] * m[r * cols + c];
}

static ccomp_status de_layout(size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                              ccomp_error *err)
{
    (void)p, (void)err;
    kv_layout_add(L, "dense", "f4", rows * cols);
    return CCOMP_OK;
}
static void de_view(const ccomp_kv_layout *L, void *const *arrays, const float *aux, ccomp_kv_view *v)
{
    (void)L, (void)aux;
    v->slice.data = arrays[0];
}
static void de_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    kv_dense_scores((const float *)k->data, k->rows, k->cols, q, s);
}
static void de_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    kv_dense_accum((const float *)v->data, v->rows, v->cols, p, o);
}
static void de_sub(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out)
{
    (void)n, (void)u;
    out->data = (const float *)s->data + r0 * s->cols;
}
static const float *de_rows(const ccomp_kv_slice *t, float *buf)
{
    (void)buf;
    return (const float *)t->data;
}

const ccomp_kv_method ccomp_kv_method_dense = {
    .name = "dense",
    .params = "",
    .layout = de_layout,
    .view = de_view,
    .scores = de_scores,
    .accum = de_accum,
    .sub = de_sub,
    .rows = de_rows,
    .accum_steps_exact = kv_always,
    .scores_are_dots = kv_always,
};

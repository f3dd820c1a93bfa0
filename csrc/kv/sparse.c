/* Bitmap sparse pruning (Mustafar-style) and GEAR's per-token outliers
 * (ccomp/kv_sparse.h): top-k by magnitude per token row, exact and
 * deterministic, and the attention kernels on the packed forms. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/cancel.h"
#include "ccomp/half.h"
#include "ccomp/kv_sparse.h"
#include "kv_internal.h"

/* |x| >= this rounds to infinity in fp16 (65504 + half an ulp, ties to even) */
#define F16_OVERFLOW 65520.0f

#if defined(__GNUC__) || defined(__clang__)
#define CTZ64(x) ((unsigned)__builtin_ctzll(x))
#else
static unsigned CTZ64(uint64_t x)
{
    unsigned n = 0;
    while (!(x & 1u)) {
        x >>= 1;
        n++;
    }
    return n;
}
#endif

/* ------------------------------------------------------------ selection */

static inline uint32_t abs_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u & 0x7fffffffu; /* monotonic in |v| for finite v; +0 and -0 equal */
}

/* The k largest |row[c]| (ties to the lower c) as a threshold on the top bits
 * of |x|: c is selected iff h = |x| >> shift is above prefix, or equal to it
 * and among the first `need` such channels.  Radix select, 8 bits a pass,
 * stopping as soon as the candidates left are exactly the ones needed. */
typedef struct topk {
    uint64_t prefix;
    unsigned shift;
    size_t need;
} topk;

static void topk_find(const float *row, size_t n, size_t k, topk *t)
{
    uint64_t prefix = 0;
    unsigned shift = 32;
    size_t need = k, cand = n, c;
    while (shift > 0 && cand != need) {
        size_t cnt[256];
        int b = 255;
        memset(cnt, 0, sizeof cnt);
        shift -= 8;
        for (c = 0; c < n; c++) {
            uint64_t a = abs_bits(row[c]);
            if ((a >> (shift + 8)) == prefix) cnt[(a >> shift) & 255u]++;
        }
        while (cnt[b] < need) { /* sum of cnt == cand >= need: stops at b >= 0 */
            need -= cnt[b];
            b--;
        }
        prefix = (prefix << 8) | (uint64_t)b;
        cand = cnt[b];
    }
    t->prefix = prefix;
    t->shift = shift;
    t->need = need;
}

/* Walks a row in channel order answering "selected?" (state: ties taken). */
static inline int topk_take(const topk *t, float v, size_t *taken)
{
    uint64_t h = (uint64_t)abs_bits(v) >> t->shift;
    if (h > t->prefix) return 1;
    if (h == t->prefix && *taken < t->need) {
        (*taken)++;
        return 1;
    }
    return 0;
}

/* Every element finite and representable in fp16, else CCOMP_ERR_VALUE naming
 * the first bad one in row-major order. */
static ccomp_status check_elements(const float *x, size_t ld, size_t rows, size_t cols, ccomp_error *err)
{
    size_t r, c;
    for (r = 0; r < rows; r++) {
        const float *row = x + r * ld;
        int ok = 1;
        for (c = 0; c < cols; c++) ok &= fabsf(row[c]) < F16_OVERFLOW; /* false for NaN too */
        if (ok) continue;
        for (c = 0; c < cols; c++) {
            float v = row[c];
            if (isnan(v) || isinf(v))
                return ccomp_fail(err, CCOMP_ERR_VALUE, "element (token %zu, channel %zu) is %s", r, c,
                                  isnan(v) ? "NaN" : "infinite");
            if (fabsf(v) >= F16_OVERFLOW)
                return ccomp_fail(err, CCOMP_ERR_VALUE,
                                  "element (token %zu, channel %zu) is %g: expected |x| < 65520 to fit in float16", r,
                                  c, (double)v);
        }
    }
    return CCOMP_OK;
}

static size_t round_count(double s, size_t n)
{
    return (size_t)floor(s * (double)n + 0.5);
}

/* ------------------------------------------------------- bitmap sparse */

ccomp_status ccomp_kv_sparse_check(size_t rows, size_t cols, double sparsity, ccomp_error *err)
{
    if (cols == 0 || cols % CCOMP_KV_SPARSE_TILE != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be a positive multiple of 64, got %zu", cols);
    if (!(sparsity >= 0.0 && sparsity < 1.0))
        return ccomp_fail(err, CCOMP_ERR_VALUE, "sparsity must be in [0, 1), got %g", sparsity);
    if (rows > (size_t)UINT32_MAX / cols)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "tokens x head dim must be below 2^32 (uint32 offsets), got %zu x %zu", rows, cols);
    return CCOMP_OK;
}

size_t ccomp_kv_sparse_kept(size_t cols, double sparsity)
{
    return cols - round_count(sparsity, cols);
}

size_t ccomp_kv_sparse_nnz(size_t rows, size_t cols, double sparsity)
{
    return rows * ccomp_kv_sparse_kept(cols, sparsity);
}

size_t ccomp_kv_sparse_tiles(size_t rows, size_t cols)
{
    return rows * (cols / CCOMP_KV_SPARSE_TILE);
}

ccomp_status ccomp_kv_sparse_quantize(const float *x, size_t ld, ccomp_kv_sparse *q, ccomp_error *err)
{
    const size_t rows = q->rows, cols = q->cols, nt = cols / CCOMP_KV_SPARSE_TILE;
    size_t r, tile, kept;
    uint32_t off = 0;
    float *buf;
    ccomp_status st = ccomp_kv_sparse_check(rows, cols, q->sparsity, err);
    if (st != CCOMP_OK) return st;
    st = check_elements(x, ld, rows, cols, err);
    if (st != CCOMP_OK) return st;
    kept = ccomp_kv_sparse_kept(cols, q->sparsity);
    if (rows == 0) {
        q->offsets[0] = 0;
        q->nnz = 0;
        return CCOMP_OK;
    }
    /* selection reads a row several times: a private copy keeps the counts exact if x changes meanwhile */
    if ((buf = (float *)malloc(cols * sizeof(float))) == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a row of %zu floats", cols);
    for (r = 0; r < rows; r++) {
        const float *row = buf;
        topk t;
        size_t taken = 0;
        memcpy(buf, x + r * ld, cols * sizeof(float));
        if ((st = check_elements(buf, cols, 1, cols, err)) != CCOMP_OK ||
            ((r & 255) == 0 && (st = ccomp_check_cancel(err, "sparse quantize")) != CCOMP_OK)) {
            free(buf);
            return st;
        }
        topk_find(row, cols, kept, &t);
        for (tile = 0; tile < nt; tile++) {
            const float *v = row + tile * CCOMP_KV_SPARSE_TILE;
            uint64_t bm = 0;
            unsigned j;
            q->offsets[r * nt + tile] = off;
            for (j = 0; j < CCOMP_KV_SPARSE_TILE; j++)
                if (topk_take(&t, v[j], &taken)) {
                    bm |= (uint64_t)1 << j;
                    q->values[off++] = ccomp_f32_to_f16(v[j]);
                }
            q->bitmaps[r * nt + tile] = bm;
        }
    }
    free(buf);
    q->offsets[rows * nt] = off;
    q->nnz = off;
    return CCOMP_OK;
}

ccomp_status ccomp_kv_sparse_validate(const ccomp_kv_sparse *q, size_t nvalues, ccomp_error *err)
{
    const size_t nt = ccomp_kv_sparse_tiles(q->rows, q->cols);
    size_t i;
    if (q->offsets[0] != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                          "the bitmap/offset index arrays are inconsistent: offsets must start at 0, got %u "
                          "(damaged data?)",
                          (unsigned)q->offsets[0]);
    for (i = 0; i < nt; i++) {
        uint64_t b = q->bitmaps[i];
        uint32_t n = 0;
        for (; b; b &= b - 1) n++;
        if (q->offsets[i + 1] < q->offsets[i] || q->offsets[i + 1] - q->offsets[i] != n || q->offsets[i + 1] > nvalues)
            return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                              "the bitmap/offset index arrays are inconsistent at tile %zu (damaged data?)", i);
    }
    return CCOMP_OK;
}

void ccomp_kv_sparse_dequantize(const ccomp_kv_sparse *q, float *out, size_t ld)
{
    const size_t nt = q->cols / CCOMP_KV_SPARSE_TILE;
    size_t r, tile;
    for (r = 0; r < q->rows; r++)
        for (tile = 0; tile < nt; tile++) {
            float *o = out + r * ld + tile * CCOMP_KV_SPARSE_TILE;
            uint64_t bm = q->bitmaps[r * nt + tile];
            const uint16_t *v = q->values + q->offsets[r * nt + tile];
            memset(o, 0, CCOMP_KV_SPARSE_TILE * sizeof(float));
            for (; bm; bm &= bm - 1) o[CTZ64(bm)] = ccomp_f16_to_f32(*v++);
        }
}

void ccomp_kv_sparse_scores(const ccomp_kv_sparse *k, const float *q, float *s)
{
    const size_t nt = k->cols / CCOMP_KV_SPARSE_TILE;
    size_t r, tile;
    for (r = 0; r < k->rows; r++) {
        float acc = 0.0f;
        for (tile = 0; tile < nt; tile++) {
            const float *qt = q + tile * CCOMP_KV_SPARSE_TILE;
            uint64_t bm = k->bitmaps[r * nt + tile];
            const uint16_t *v = k->values + k->offsets[r * nt + tile];
            for (; bm; bm &= bm - 1) acc += qt[CTZ64(bm)] * ccomp_f16_to_f32(*v++);
        }
        s[r] = acc;
    }
}

void ccomp_kv_sparse_accum(const ccomp_kv_sparse *v, const float *p, float *o)
{
    const size_t nt = v->cols / CCOMP_KV_SPARSE_TILE;
    size_t r, tile;
    for (r = 0; r < v->rows; r++) {
        const float pr = p[r];
        for (tile = 0; tile < nt; tile++) {
            float *ot = o + tile * CCOMP_KV_SPARSE_TILE;
            uint64_t bm = v->bitmaps[r * nt + tile];
            const uint16_t *val = v->values + v->offsets[r * nt + tile];
            for (; bm; bm &= bm - 1) ot[CTZ64(bm)] += pr * ccomp_f16_to_f32(*val++);
        }
    }
}

/* -------------------------------------------------------- GEAR outliers */

ccomp_status ccomp_kv_outliers_check(size_t rows, size_t cols, double frac, ccomp_error *err)
{
    (void)rows;
    if (cols == 0 || cols > 65536)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be in [1, 65536] (uint16 indices), got %zu", cols);
    if (!(frac >= 0.0 && frac < 1.0))
        return ccomp_fail(err, CCOMP_ERR_VALUE, "outlier fraction must be in [0, 1), got %g", frac);
    return CCOMP_OK;
}

size_t ccomp_kv_outliers_per_row(size_t cols, double frac)
{
    return round_count(frac, cols);
}

ccomp_status ccomp_kv_outliers_extract(const float *x, size_t ld, ccomp_kv_outliers *o, float *x_filled, size_t ld2,
                                       ccomp_error *err)
{
    const size_t rows = o->rows, cols = o->cols, k = o->per_row;
    size_t r, c;
    float *buf;
    ccomp_status st;
    if (cols == 0 || cols > 65536)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be in [1, 65536] (uint16 indices), got %zu", cols);
    if (k > cols)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "outliers per row must be at most the head dim %zu, got %zu", cols,
                          k);
    st = check_elements(x, ld, rows, cols, err);
    if (st != CCOMP_OK || rows == 0) return st;
    /* selection reads a row several times: a private copy keeps the counts exact if x changes meanwhile */
    if ((buf = (float *)malloc(cols * sizeof(float))) == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a row of %zu floats", cols);
    for (r = 0; r < rows; r++) {
        const float *row = buf;
        float *fill = x_filled != NULL ? x_filled + r * ld2 : NULL;
        uint16_t *idx = o->idx + r * k, *val = o->vals + r * k;
        topk t;
        size_t taken = 0, m = 0;
        memcpy(buf, x + r * ld, cols * sizeof(float));
        if ((st = check_elements(buf, cols, 1, cols, err)) != CCOMP_OK) {
            free(buf);
            return st;
        }
        topk_find(row, cols, k, &t);
        for (c = 0; c < cols; c++) {
            float v = row[c]; /* read before the write: x_filled may be x */
            if (topk_take(&t, v, &taken)) {
                idx[m] = (uint16_t)c;
                val[m++] = ccomp_f32_to_f16(v);
                v = 0.0f;
            }
            if (fill != NULL) fill[c] = v;
        }
    }
    free(buf);
    return CCOMP_OK;
}

static void outliers_axpy(const ccomp_kv_outliers *o, float *out, size_t ld, float sign)
{
    size_t r, m;
    for (r = 0; r < o->rows; r++) {
        const uint16_t *idx = o->idx + r * o->per_row, *val = o->vals + r * o->per_row;
        float *row = out + r * ld;
        for (m = 0; m < o->per_row; m++) row[idx[m]] += sign * ccomp_f16_to_f32(val[m]);
    }
}

ccomp_status ccomp_kv_outliers_validate(const ccomp_kv_outliers *o, ccomp_error *err)
{
    size_t i;
    for (i = 0; i < o->rows * o->per_row; i++)
        if (o->idx[i] >= o->cols)
            return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                              "the outlier channel index arrays are inconsistent: index %u at entry %zu, head dim %zu "
                              "(damaged data?)",
                              (unsigned)o->idx[i], i, o->cols);
    return CCOMP_OK;
}

void ccomp_kv_outliers_add(const ccomp_kv_outliers *o, float *out, size_t ld)
{
    outliers_axpy(o, out, ld, 1.0f);
}

void ccomp_kv_outliers_sub(const ccomp_kv_outliers *o, float *out, size_t ld)
{
    outliers_axpy(o, out, ld, -1.0f);
}

void ccomp_kv_outliers_scores(const ccomp_kv_outliers *o, const float *q, float *s)
{
    size_t r, m;
    for (r = 0; r < o->rows; r++) {
        const uint16_t *idx = o->idx + r * o->per_row, *val = o->vals + r * o->per_row;
        float acc = 0.0f;
        for (m = 0; m < o->per_row; m++) acc += q[idx[m]] * ccomp_f16_to_f32(val[m]);
        s[r] += acc;
    }
}

void ccomp_kv_outliers_accum(const ccomp_kv_outliers *o, const float *p, float *out)
{
    size_t r, m;
    for (r = 0; r < o->rows; r++) {
        const uint16_t *idx = o->idx + r * o->per_row, *val = o->vals + r * o->per_row;
        const float pr = p[r];
        for (m = 0; m < o->per_row; m++) out[idx[m]] += pr * ccomp_f16_to_f32(val[m]);
    }
}

/* ------------------------------------------------------------ the method row (bitmap_sparse) */

KV_FITS_STORAGE(ccomp_kv_sparse);

static ccomp_status sp_layout(size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                              ccomp_error *err)
{
    ccomp_status st = ccomp_kv_sparse_check(rows, cols, p->frac, err);
    if (st != CCOMP_OK) return st;
    kv_layout_add(L, "bitmaps", "u8", ccomp_kv_sparse_tiles(rows, cols));
    kv_layout_add(L, "offsets", "u4", ccomp_kv_sparse_tiles(rows, cols) + 1);
    kv_layout_add(L, "values", "u2", ccomp_kv_sparse_nnz(rows, cols, p->frac));
    L->index_mask = 1u << 0 | 1u << 1;
    return CCOMP_OK;
}
static void sp_view(const ccomp_kv_layout *L, void *const *arrays, const float *aux, ccomp_kv_view *v)
{
    ccomp_kv_sparse *q = (ccomp_kv_sparse *)&v->u;
    (void)aux;
    q->rows = L->rows;
    q->cols = L->cols;
    q->sparsity = L->p.frac;
    q->bitmaps = (uint64_t *)arrays[0];
    q->offsets = (uint32_t *)arrays[1];
    q->values = (uint16_t *)arrays[2];
    q->nnz = L->count[2];
    v->slice.data = q;
}
static ccomp_status sp_validate(const ccomp_kv_layout *L, const ccomp_kv_slice *s, ccomp_error *err)
{
    return ccomp_kv_sparse_validate((const ccomp_kv_sparse *)s->data, L->count[2], err);
}
static ccomp_status sp_quantize(const ccomp_kv_layout *L, const float *x, size_t ld, const ccomp_kv_slice *s,
                                ccomp_error *err)
{
    (void)L;
    return ccomp_kv_sparse_quantize(x, ld, (ccomp_kv_sparse *)s->data, err);
}
static void sp_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    ccomp_kv_sparse_scores((const ccomp_kv_sparse *)k->data, q, s);
}
static void sp_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    ccomp_kv_sparse_accum((const ccomp_kv_sparse *)v->data, p, o);
}
static void sp_sub(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out)
{
    ccomp_kv_sparse *q = (ccomp_kv_sparse *)u;
    *q = *(const ccomp_kv_sparse *)s->data;
    q->rows = n;
    q->bitmaps += r0 * (s->cols / CCOMP_KV_SPARSE_TILE);
    q->offsets += r0 * (s->cols / CCOMP_KV_SPARSE_TILE); /* offsets index the whole values array */
    out->data = q;
}
static const float *sp_rows(const ccomp_kv_slice *t, float *buf)
{
    ccomp_kv_sparse_dequantize((const ccomp_kv_sparse *)t->data, buf, t->cols);
    return buf;
}

const ccomp_kv_method ccomp_kv_method_bitmap_sparse = {
    .name = "bitmap_sparse",
    .params = "sparsity",
    .layout = sp_layout,
    .view = sp_view,
    .validate = sp_validate,
    .quantize = sp_quantize,
    .scores = sp_scores,
    .accum = sp_accum,
    .sub = sp_sub,
    .rows = sp_rows,
    .accum_steps_exact = kv_always,
    .scores_are_dots = kv_always,
};

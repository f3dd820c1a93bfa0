/* Groupwise asymmetric min-max quantization (ccomp/kv.h) and its attention
 * kernels on the packed codes. */
#include <math.h>
#include <string.h>

#include "ccomp/cancel.h"
#include "ccomp/half.h"
#include "ccomp/kv.h"
#include "kv_internal.h"

ccomp_status ccomp_kv_gw_check(size_t rows, size_t cols, int bits, int group, int axis, ccomp_error *err)
{
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "bits must be 2, 3, 4 or 8, got %d", bits);
    if (group != 32 && group != 64 && group != 128)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "group size must be 32, 64 or 128, got %d", group);
    if (axis != CCOMP_KV_PER_CHANNEL && axis != CCOMP_KV_PER_TOKEN)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "axis must be per-channel (0) or per-token (1), got %d", axis);
    if (cols == 0 || cols % 8 != 0 || cols > KV_MAX_COLS)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be a positive multiple of 8 up to %d, got %zu",
                          KV_MAX_COLS, cols);
    if (axis == CCOMP_KV_PER_TOKEN && cols % (size_t)group != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be a multiple of the group size %d, got %zu", group,
                          cols);
    if (axis == CCOMP_KV_PER_CHANNEL && rows % (size_t)group != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "per-channel groups need a token count that is a multiple of the group size %d, got %zu",
                          group, rows);
    return CCOMP_OK;
}

size_t ccomp_kv_gw_code_bytes(size_t rows, size_t cols, int bits)
{
    return rows * (cols / 8u) * (size_t)bits;
}

size_t ccomp_kv_gw_groups(size_t rows, size_t cols, int group, int axis)
{
    return axis == CCOMP_KV_PER_CHANNEL ? rows / (size_t)group * cols : rows * (cols / (size_t)group);
}

/* ------------------------------------------------------------- packing */

void kv_pack_row(const uint8_t *codes, size_t n, int bits, uint8_t *out)
{
    size_t i;
    for (i = 0; i < n; i += 8) {
        uint64_t v = 0;
        int k;
        for (k = 0; k < 8; k++) v |= (uint64_t)codes[i + (size_t)k] << (k * bits);
        for (k = 0; k < bits; k++) *out++ = (uint8_t)(v >> (8 * k));
    }
}

void kv_unpack_row_f32(const uint8_t *in, size_t n, int bits, float *out)
{
    size_t i;
    const uint64_t mask = (1u << bits) - 1u;
    if (bits == 4) {
        for (i = 0; i < n; i += 2, in++) {
            out[i] = (float)(*in & 15u);
            out[i + 1] = (float)(*in >> 4);
        }
        return;
    }
    if (bits == 8) {
        for (i = 0; i < n; i++) out[i] = (float)in[i];
        return;
    }
    for (i = 0; i < n; i += 8) {
        uint64_t v = 0;
        int k;
        for (k = 0; k < bits; k++) v |= (uint64_t)in[k] << (8 * k);
        in += bits;
        for (k = 0; k < 8; k++) out[i + (size_t)k] = (float)((v >> (k * bits)) & mask);
    }
}

/* ----------------------------------------------------------- quantize */

/* The error of a quantize that failed: the first non-finite element, else the first element whose group's
 * fp16 zero (its min) or scale ((max - min) / (2^b - 1)) overflows, named with its value. */
static ccomp_status bad_element(const float *x, size_t ld, const ccomp_kv_gw *q, ccomp_error *err)
{
    const size_t rows = q->rows, cols = q->cols, G = (size_t)q->group;
    size_t r, c, r2, c2;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++)
            if (!isfinite(x[r * ld + c]))
                return ccomp_fail(err, CCOMP_ERR_VALUE, "element (token %zu, channel %zu) is %s", r, c,
                                  isnan(x[r * ld + c]) ? "NaN" : "infinite");
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            /* the group of (r, c): G channels of token r, or G tokens of channel c */
            const int tok = q->axis == CCOMP_KV_PER_TOKEN;
            const size_t r0 = tok ? r : r / G * G, r1 = tok ? r + 1 : r0 + G;
            const size_t c0 = tok ? c / G * G : c, c1 = tok ? c0 + G : c + 1;
            float mn = x[r0 * ld + c0], mx = mn, s, z;
            uint16_t s16, z16;
            if (fabsf(x[r * ld + c]) < 32752.0f) continue; /* an overflowing group has an end at least this large */
            for (r2 = r0; r2 < r1; r2++)
                for (c2 = c0; c2 < c1; c2++) {
                    mn = x[r2 * ld + c2] < mn ? x[r2 * ld + c2] : mn;
                    mx = x[r2 * ld + c2] > mx ? x[r2 * ld + c2] : mx;
                }
            if (!kv_group_params(mn, mx, q->bits, &s16, &z16, &s, &z) && (x[r * ld + c] == mn || x[r * ld + c] == mx))
                return ccomp_fail(err, CCOMP_ERR_VALUE,
                                  "element (token %zu, channel %zu) is %g: its group's float16 zero (min %g) or scale "
                                  "((max - min) / %u) overflows; expected values within about +-65504",
                                  r, c, (double)x[r * ld + c], (double)mn, (unsigned)((1u << q->bits) - 1u));
        }
    /* the kernel saw a bad group that a second look does not find: x was rewritten while it was read */
    return ccomp_fail(err, CCOMP_ERR_VALUE,
                      "a group held a NaN, an infinity or a range beyond float16 that x no longer holds "
                      "(x changed during the call?)");
}

int kv_group_params(float mn, float mx, int bits, uint16_t *s16, uint16_t *z16, float *s, float *z)
{
    const float levels = (float)((1u << bits) - 1u);
    mn += 0.0f; /* -0 -> +0 */
    mx += 0.0f;
    *z16 = ccomp_f32_to_f16(mn);
    *s16 = ccomp_f32_to_f16((mx - mn) / levels);
    *z = ccomp_f16_to_f32(*z16);
    *s = ccomp_f16_to_f32(*s16);
    return isfinite(*z) && isfinite(*s);
}

static inline uint8_t code_of(float v, float z, float s, float levels)
{
    float t;
    if (s == 0.0f) return 0;
    t = (v - z) / s + 0.5f; /* floor(t) on [0, levels]: truncation is floor for t >= 0 */
    t = t >= 0.0f ? (t > levels ? levels : t) : 0.0f; /* NaN (x rewritten during the call) -> 0, never UB */
    return (uint8_t)(int)t;
}

ccomp_status ccomp_kv_gw_quantize(const float *x, size_t ld, ccomp_kv_gw *q, ccomp_error *err)
{
    const size_t rows = q->rows, cols = q->cols;
    ccomp_status st = ccomp_kv_gw_check(rows, cols, q->bits, q->group, q->axis, err);
    int bad;
    if (st != CCOMP_OK) return st;
    if (cols > KV_MAX_COLS)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be at most %d, got %zu", KV_MAX_COLS, cols);
    {
        /* steps of whole groups (rows a multiple of 128): the same bytes, with a check for Ctrl-C between */
        const size_t step = 4096, rb = cols / 8u * (size_t)q->bits;
        const size_t gpr = q->axis == CCOMP_KV_PER_TOKEN ? cols / (size_t)q->group : cols; /* groups per step row */
        size_t r0;
        for (r0 = 0, bad = 0; r0 < rows && !bad; r0 += step) {
            ccomp_kv_gw sub = *q;
            sub.rows = rows - r0 < step ? rows - r0 : step;
            sub.codes += r0 * rb;
            sub.scale += (q->axis == CCOMP_KV_PER_TOKEN ? r0 : r0 / (size_t)q->group) * gpr;
            sub.zero += (q->axis == CCOMP_KV_PER_TOKEN ? r0 : r0 / (size_t)q->group) * gpr;
            if ((st = ccomp_check_cancel(err, "groupwise quantize")) != CCOMP_OK) return st;
            bad = kv_avx2_ok() ? kv_gw_quantize_avx2(x + r0 * ld, ld, &sub) : kv_gw_quantize_ref(x + r0 * ld, ld, &sub);
        }
    }
    return bad ? bad_element(x, ld, q, err) : CCOMP_OK;
}

int kv_gw_quantize_ref(const float *x, size_t ld, ccomp_kv_gw *q)
{
    size_t rows = q->rows, cols = q->cols, G = (size_t)q->group, r, c, g;
    const int bits = q->bits;
    const float levels = (float)((1u << bits) - 1u);
    const size_t rb = cols / 8u * (size_t)bits;
    uint8_t codes[KV_MAX_COLS];
    float mn[KV_MAX_COLS], mx[KV_MAX_COLS], s[KV_MAX_COLS], z[KV_MAX_COLS];
    if (q->axis == CCOMP_KV_PER_TOKEN) {
        size_t ng = cols / G;
        for (r = 0; r < rows; r++) {
            const float *row = x + r * ld;
            int finite = 1;
            for (g = 0; g < ng; g++) {
                float lo = row[g * G], hi = row[g * G];
                for (c = g * G; c < (g + 1) * G; c++) {
                    float v = row[c];
                    finite &= isfinite(v);
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
                if (!finite || !kv_group_params(lo, hi, bits, &q->scale[r * ng + g], &q->zero[r * ng + g], &s[g], &z[g]))
                    return -1;
                for (c = g * G; c < (g + 1) * G; c++) codes[c] = code_of(row[c], z[g], s[g], levels);
            }
            kv_pack_row(codes, cols, bits, q->codes + r * rb);
        }
        return 0;
    }
    /* per channel: groups of G tokens */
    for (g = 0; g < rows / G; g++) {
        int finite = 1;
        const float *blk = x + g * G * ld;
        memcpy(mn, blk, cols * sizeof(float));
        memcpy(mx, blk, cols * sizeof(float));
        for (r = 0; r < G; r++) {
            const float *row = blk + r * ld;
            for (c = 0; c < cols; c++) {
                float v = row[c];
                finite &= isfinite(v);
                mn[c] = v < mn[c] ? v : mn[c];
                mx[c] = v > mx[c] ? v : mx[c];
            }
        }
        if (!finite) return -1;
        for (c = 0; c < cols; c++)
            if (!kv_group_params(mn[c], mx[c], bits, &q->scale[g * cols + c], &q->zero[g * cols + c], &s[c], &z[c]))
                return -1;
        for (r = 0; r < G; r++) {
            const float *row = blk + r * ld;
            for (c = 0; c < cols; c++) codes[c] = code_of(row[c], z[c], s[c], levels);
            kv_pack_row(codes, cols, bits, q->codes + (g * G + r) * rb);
        }
    }
    return 0;
}

void ccomp_kv_gw_dequantize(const ccomp_kv_gw *q, float *out, size_t ld)
{
    if (kv_avx2_ok())
        kv_gw_dequantize_avx2(q, out, ld);
    else
        kv_gw_dequantize_ref(q, out, ld);
}

void kv_gw_dequantize_ref(const ccomp_kv_gw *q, float *out, size_t ld)
{
    size_t rows = q->rows, cols = q->cols, G = (size_t)q->group, r, c;
    const size_t rb = cols / 8u * (size_t)q->bits;
    for (r = 0; r < rows; r++) {
        float *o = out + r * ld;
        kv_unpack_row_f32(q->codes + r * rb, cols, q->bits, o);
        if (q->axis == CCOMP_KV_PER_TOKEN) {
            size_t ng = cols / G;
            for (c = 0; c < cols; c++) {
                size_t gi = r * ng + c / G;
                o[c] = ccomp_f16_to_f32(q->scale[gi]) * o[c] + ccomp_f16_to_f32(q->zero[gi]);
            }
        } else {
            const uint16_t *sc = q->scale + (r / G) * cols, *ze = q->zero + (r / G) * cols;
            for (c = 0; c < cols; c++) o[c] = ccomp_f16_to_f32(sc[c]) * o[c] + ccomp_f16_to_f32(ze[c]);
        }
    }
}

/* ---------------------------------------------------------- attention */

static inline float dot(const float *a, const float *b, size_t n)
{
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i;
    int k;
    for (i = 0; i < n; i += 8)
        for (k = 0; k < 8; k++) acc[k] += a[i + (size_t)k] * b[i + (size_t)k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void ccomp_kv_gw_scores(const ccomp_kv_gw *k, const float *q, float *s)
{
    size_t rows = k->rows, cols = k->cols, G = (size_t)k->group, r, c;
    const size_t rb = cols / 8u * (size_t)k->bits;
    float codes[KV_MAX_COLS], qs[KV_MAX_COLS];
    if (kv_avx2_ok()) {
        kv_gw_scores_avx2(k, q, s);
        return;
    }
    if (k->axis == CCOMP_KV_PER_CHANNEL) {
        for (r = 0; r < rows; r += G) {
            const uint16_t *sc = k->scale + (r / G) * cols, *ze = k->zero + (r / G) * cols;
            float zt = 0.0f;
            size_t t;
            for (c = 0; c < cols; c++) {
                qs[c] = q[c] * ccomp_f16_to_f32(sc[c]);
                zt += q[c] * ccomp_f16_to_f32(ze[c]);
            }
            for (t = r; t < r + G; t++) {
                kv_unpack_row_f32(k->codes + t * rb, cols, k->bits, codes);
                s[t] = dot(qs, codes, cols) + zt;
            }
        }
    } else {
        size_t ng = cols / G, g;
        float qsum[KV_MAX_COLS / 32];
        for (g = 0; g < ng; g++) {
            float a = 0.0f;
            for (c = g * G; c < (g + 1) * G; c++) a += q[c];
            qsum[g] = a;
        }
        for (r = 0; r < rows; r++) {
            float acc = 0.0f;
            kv_unpack_row_f32(k->codes + r * rb, cols, k->bits, codes);
            for (g = 0; g < ng; g++) {
                size_t gi = r * ng + g;
                acc += ccomp_f16_to_f32(k->scale[gi]) * dot(q + g * G, codes + g * G, G) +
                       ccomp_f16_to_f32(k->zero[gi]) * qsum[g];
            }
            s[r] = acc;
        }
    }
}

void ccomp_kv_gw_accum(const ccomp_kv_gw *v, const float *p, float *o)
{
    size_t rows = v->rows, cols = v->cols, G = (size_t)v->group, r, c;
    const size_t rb = cols / 8u * (size_t)v->bits;
    float codes[KV_MAX_COLS], acc[KV_MAX_COLS];
    if (kv_avx2_ok()) {
        kv_gw_accum_avx2(v, p, o);
        return;
    }
    if (v->axis == CCOMP_KV_PER_TOKEN) {
        size_t ng = cols / G, g;
        memset(acc, 0, cols * sizeof(float));
        for (r = 0; r < rows; r++) {
            float pr = p[r];
            kv_unpack_row_f32(v->codes + r * rb, cols, v->bits, codes);
            for (g = 0; g < ng; g++) {
                size_t gi = r * ng + g;
                float w = pr * ccomp_f16_to_f32(v->scale[gi]), b = pr * ccomp_f16_to_f32(v->zero[gi]);
                for (c = g * G; c < (g + 1) * G; c++) acc[c] += w * codes[c] + b;
            }
        }
        for (c = 0; c < cols; c++) o[c] += acc[c];
    } else {
        for (r = 0; r < rows; r += G) {
            const uint16_t *sc = v->scale + (r / G) * cols, *ze = v->zero + (r / G) * cols;
            float psum = 0.0f;
            size_t t;
            memset(acc, 0, cols * sizeof(float));
            for (t = r; t < r + G; t++) {
                float pt = p[t];
                psum += pt;
                kv_unpack_row_f32(v->codes + t * rb, cols, v->bits, codes);
                for (c = 0; c < cols; c++) acc[c] += pt * codes[c];
            }
            for (c = 0; c < cols; c++) o[c] += ccomp_f16_to_f32(sc[c]) * acc[c] + ccomp_f16_to_f32(ze[c]) * psum;
        }
    }
}

/* ------------------------------------------------------------ the method row */

void kv_gw_layout_arrays(ccomp_kv_layout *L)
{
    const size_t ng = ccomp_kv_gw_groups(L->rows, L->cols, L->p.group, L->p.axis);
    kv_layout_add(L, "codes", "u1", ccomp_kv_gw_code_bytes(L->rows, L->cols, L->p.bits));
    kv_layout_add(L, "scale", "u2", ng);
    kv_layout_add(L, "zero", "u2", ng);
}

void kv_gw_view(const ccomp_kv_layout *L, void *const *arrays, ccomp_kv_gw *g)
{
    g->rows = L->rows;
    g->cols = L->cols;
    g->bits = L->p.bits;
    g->group = L->p.group;
    g->axis = L->p.axis;
    g->codes = (uint8_t *)arrays[0];
    g->scale = (uint16_t *)arrays[1];
    g->zero = (uint16_t *)arrays[2];
}

void kv_gw_shift(const ccomp_kv_gw *g, size_t r0, size_t n, ccomp_kv_gw *d)
{
    const size_t cols = g->cols;
    *d = *g;
    d->rows = n;
    d->codes += r0 * (cols / 8u) * (size_t)g->bits;
    if (g->axis == CCOMP_KV_PER_CHANNEL) {
        d->scale += r0 / (size_t)g->group * cols;
        d->zero += r0 / (size_t)g->group * cols;
    } else {
        d->scale += r0 * (cols / (size_t)g->group);
        d->zero += r0 * (cols / (size_t)g->group);
    }
}

KV_FITS_STORAGE(ccomp_kv_gw);

static ccomp_status gw_layout(size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                              ccomp_error *err)
{
    ccomp_status st = ccomp_kv_gw_check(rows, cols, p->bits, p->group, p->axis, err);
    if (st == CCOMP_OK) kv_gw_layout_arrays(L);
    return st;
}
static void gw_view(const ccomp_kv_layout *L, void *const *arrays, const float *aux, ccomp_kv_view *v)
{
    ccomp_kv_gw *g = (ccomp_kv_gw *)&v->u;
    (void)aux;
    kv_gw_view(L, arrays, g);
    v->slice.data = g;
}
static ccomp_status gw_quantize(const ccomp_kv_layout *L, const float *x, size_t ld, const ccomp_kv_slice *s,
                                ccomp_error *err)
{
    (void)L;
    return ccomp_kv_gw_quantize(x, ld, (ccomp_kv_gw *)s->data, err);
}
static void gw_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    ccomp_kv_gw_scores((const ccomp_kv_gw *)k->data, q, s);
}
static void gw_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    ccomp_kv_gw_accum((const ccomp_kv_gw *)v->data, p, o);
}
static void gw_sub(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out)
{
    kv_gw_shift((const ccomp_kv_gw *)s->data, r0, n, (ccomp_kv_gw *)u);
    out->data = u;
}
static const float *gw_rows(const ccomp_kv_slice *t, float *buf)
{
    ccomp_kv_gw_dequantize((const ccomp_kv_gw *)t->data, buf, t->cols);
    return buf;
}
/* per-channel groups add every group straight into o; per-token ones sum privately first */
static int gw_steps_exact(const ccomp_kv_slice *v)
{
    return ((const ccomp_kv_gw *)v->data)->axis == CCOMP_KV_PER_CHANNEL;
}

const ccomp_kv_method ccomp_kv_method_groupwise = {
    .name = "groupwise",
    .params = "axis bits group",
    .layout = gw_layout,
    .view = gw_view,
    .quantize = gw_quantize,
    .scores = gw_scores,
    .accum = gw_accum,
    .sub = gw_sub,
    .rows = gw_rows,
    .accum_steps_exact = gw_steps_exact,
    .scores_are_dots = kv_always,
};

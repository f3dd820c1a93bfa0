/* ggml's q8_0 and q4_0 blocks (ccomp/kv.h), byte-identical to its reference
 * quantizers, and attention kernels on them. */
#include <math.h>
#include <string.h>

#include "ccomp/cancel.h"
#include "ccomp/half.h"
#include "ccomp/kv.h"
#include "kv_internal.h"

#include <stddef.h>

#define QK CCOMP_KV_QK
/* where a block's values start, after its fp16 scale (the same for both types) */
#define QS offsetof(ccomp_kv_block_q8_0, qs)
_Static_assert(offsetof(ccomp_kv_block_q8_0, qs) == offsetof(ccomp_kv_block_q4_0, qs),
               "q8_0 and q4_0 values start together");

static size_t block_bytes(int type)
{
    return CCOMP_KV_GGML_BLOCK_BYTES(type);
}

size_t ccomp_kv_ggml_bytes(size_t rows, size_t cols, int type)
{
    return rows * (cols / QK) * block_bytes(type);
}

static void put_f16(uint8_t *p, uint16_t h)
{
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p)
{
    return ccomp_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static int f16_overflows(float d)
{
    return (ccomp_f32_to_f16(d) & 0x7c00u) == 0x7c00u;
}

/* -1, or (nothing written) the index of the block's largest |x| when the fp16 scale amax / 127 overflows */
static int q8_0_block(const float *x, uint8_t *b)
{
    float amax = 0.0f, d, id;
    int j, at = 0;
    for (j = 0; j < QK; j++) {
        float a = fabsf(x[j]);
        if (a > amax) at = j;
        amax = a > amax ? a : amax;
    }
    d = amax / 127.0f;
    if (f16_overflows(d)) return at;
    id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, ccomp_f32_to_f16(d));
    for (j = 0; j < QK; j++) b[QS + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    return -1;
}

/* -1, or (nothing written) the index of the block's largest |x| when the fp16 scale max / -8 overflows */
static int q4_0_block(const float *x, uint8_t *b)
{
    float amax = 0.0f, max = 0.0f, d, id;
    int j, at = 0;
    for (j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
            at = j;
        }
    }
    d = max / -8.0f;
    if (f16_overflows(d)) return at;
    id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, ccomp_f32_to_f16(d));
    for (j = 0; j < QK / 2; j++) {
        float x0 = x[j] * id, x1 = x[QK / 2 + j] * id;
        int xi0 = (int8_t)(x0 + 8.5f), xi1 = (int8_t)(x1 + 8.5f);
        xi0 = xi0 < 15 ? xi0 : 15;
        xi1 = xi1 < 15 ? xi1 : 15;
        b[QS + j] = (uint8_t)(xi0 | (xi1 << 4));
    }
    return -1;
}

ccomp_status ccomp_kv_ggml_quantize(const float *x, size_t rows, size_t cols, size_t ld, int type, uint8_t *blocks,
                                    ccomp_error *err)
{
    size_t r, c, bb = block_bytes(type);
    if (type != CCOMP_KV_Q8_0 && type != CCOMP_KV_Q4_0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "ggml type must be q8_0 or q4_0, got %d", type);
    if (cols == 0 || cols % QK != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "head dim must be a positive multiple of 32 for ggml blocks, got %zu",
                          cols);
    for (r = 0; r < rows; r++) {
        const float *row = x + r * ld;
        ccomp_status st;
        if ((r & 1023) == 0 && (st = ccomp_check_cancel(err, "ggml quantize")) != CCOMP_OK) return st;
        for (c = 0; c < cols; c++)
            if (!isfinite(row[c]))
                return ccomp_fail(err, CCOMP_ERR_VALUE, "element (token %zu, channel %zu) is %s", r, c,
                                  isnan(row[c]) ? "NaN" : "infinite");
        for (c = 0; c < cols; c += QK, blocks += bb) {
            float blk[QK]; /* a private copy: x may be rewritten by another thread, the casts below need finite input */
            int at, j;
            memcpy(blk, row + c, sizeof blk);
            for (j = 0; j < QK; j++)
                if (!isfinite(blk[j]))
                    return ccomp_fail(err, CCOMP_ERR_VALUE, "element (token %zu, channel %zu) is %s", r, c + (size_t)j,
                                      isnan(blk[j]) ? "NaN" : "infinite");
            at = type == CCOMP_KV_Q8_0 ? q8_0_block(blk, blocks) : q4_0_block(blk, blocks);
            if (at >= 0) /* llama.cpp would store an infinite scale: refuse instead of decoding to inf */
                return ccomp_fail(err, CCOMP_ERR_VALUE,
                                  "element (token %zu, channel %zu) is %g: %s blocks need |x| below %s so that the "
                                  "float16 block scale does not overflow",
                                  r, c + (size_t)at, (double)blk[at],
                                  type == CCOMP_KV_Q8_0 ? "q8_0" : "q4_0",
                                  type == CCOMP_KV_Q8_0 ? "65520 * 127 = 8.32e6" : "65520 * 8 = 524160");
        }
    }
    return CCOMP_OK;
}

/* Values of one block into v[0..31]. */
static void block_values(const uint8_t *b, int type, float *v)
{
    float d = get_f16(b);
    int j;
    if (type == CCOMP_KV_Q8_0) {
        for (j = 0; j < QK; j++) v[j] = d * (float)(int8_t)b[QS + j];
    } else {
        for (j = 0; j < QK / 2; j++) {
            v[j] = d * (float)((b[QS + j] & 15) - 8);
            v[QK / 2 + j] = d * (float)((b[QS + j] >> 4) - 8);
        }
    }
}

void ccomp_kv_ggml_dequantize(const uint8_t *blocks, size_t rows, size_t cols, int type, float *out, size_t ld)
{
    size_t r, c, bb = block_bytes(type);
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c += QK, blocks += bb) block_values(blocks, type, out + r * ld + c);
}

void ccomp_kv_ggml_scores(const uint8_t *blocks, size_t rows, size_t cols, int type, const float *q, float *s)
{
    size_t r, c, bb = block_bytes(type);
    float v[QK];
    if (kv_avx2_ok()) {
        kv_ggml_scores_avx2(blocks, rows, cols, type == CCOMP_KV_Q8_0, q, s);
        return;
    }
    for (r = 0; r < rows; r++) {
        float acc = 0.0f;
        for (c = 0; c < cols; c += QK, blocks += bb) {
            float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int j;
            block_values(blocks, type, v);
            for (j = 0; j < QK; j++) part[j & 7] += q[c + (size_t)j] * v[j];
            acc += ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
        }
        s[r] = acc;
    }
}

void ccomp_kv_ggml_accum(const uint8_t *blocks, size_t rows, size_t cols, int type, const float *p, float *o)
{
    size_t r, c, bb = block_bytes(type);
    float v[QK];
    if (kv_avx2_ok()) {
        kv_ggml_accum_avx2(blocks, rows, cols, type == CCOMP_KV_Q8_0, p, o);
        return;
    }
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c += QK, blocks += bb) {
            int j;
            block_values(blocks, type, v);
            for (j = 0; j < QK; j++) o[c + (size_t)j] += p[r] * v[j];
        }
}

/* ------------------------------------------------------------ the method rows (q8_0, q4_0) */

static int type_of(int method)
{
    return method == CCOMP_KV_M_Q8_0 ? CCOMP_KV_Q8_0 : CCOMP_KV_Q4_0;
}
static ccomp_status gg_layout(size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                              ccomp_error *err)
{
    (void)p;
    if (cols % QK != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "ggml blocks need a head dim that is a multiple of 32, got %zu", cols);
    kv_layout_add(L, "blocks", "u1", ccomp_kv_ggml_bytes(rows, cols, type_of(L->method)));
    return CCOMP_OK;
}
static void gg_view(const ccomp_kv_layout *L, void *const *arrays, const float *aux, ccomp_kv_view *v)
{
    (void)L, (void)aux;
    v->slice.data = arrays[0];
}
static ccomp_status gg_quantize(const ccomp_kv_layout *L, const float *x, size_t ld, const ccomp_kv_slice *s,
                                ccomp_error *err)
{
    return ccomp_kv_ggml_quantize(x, s->rows, s->cols, ld, type_of(L->method), (uint8_t *)s->data, err);
}
static void gg_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    ccomp_kv_ggml_scores((const uint8_t *)k->data, k->rows, k->cols, type_of(k->method), q, s);
}
static void gg_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    ccomp_kv_ggml_accum((const uint8_t *)v->data, v->rows, v->cols, type_of(v->method), p, o);
}
static void gg_sub(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out)
{
    (void)n, (void)u;
    out->data = (const uint8_t *)s->data + ccomp_kv_ggml_bytes(r0, s->cols, type_of(s->method));
}
static const float *gg_rows(const ccomp_kv_slice *t, float *buf)
{
    ccomp_kv_ggml_dequantize((const uint8_t *)t->data, t->rows, t->cols, type_of(t->method), buf, t->cols);
    return buf;
}

/* q8_0 and q4_0 share every function: the block type follows from the slice's method id (type_of). */
#define GG_METHOD(NAME)                                                                                          \
    const ccomp_kv_method ccomp_kv_method_##NAME = {                                                            \
        .name = #NAME,                                                                                           \
        .params = "",                                                                                            \
        .layout = gg_layout,                                                                                     \
        .view = gg_view,                                                                                         \
        .quantize = gg_quantize,                                                                                 \
        .scores = gg_scores,                                                                                     \
        .accum = gg_accum,                                                                                       \
        .sub = gg_sub,                                                                                           \
        .rows = gg_rows,                                                                                         \
        .accum_steps_exact = kv_always,                                                                          \
        .scores_are_dots = kv_always,                                                                            \
    };

GG_METHOD(q8_0)
GG_METHOD(q4_0)

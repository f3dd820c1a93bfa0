/* libFuzzer target for the readers of ccomp.kv's compressed slices whose
 * arrays hold indices (ccomp/kv_sparse.h): bitmap sparse (bitmaps, offsets)
 * and GEAR (outlier channel indices).  The other methods' arrays are plain
 * codes and scales that any bytes make valid.
 *
 * The input fills a small slice's arrays byte for byte (shape from the first
 * bytes); the validators must reject it or the readers (dequantize, scores,
 * accum) must stay within the buffers, which AddressSanitizer checks.  The
 * input is also quantized as float data: every result must be a clean
 * status.  Built and run for a bounded time by `make fuzz`. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/kv_sparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Copies the next n bytes of the input into a fresh buffer (zero-padded). */
static void *take(const uint8_t **p, size_t *left, size_t n)
{
    uint8_t *b = (uint8_t *)calloc(n ? n : 1, 1);
    size_t k = n < *left ? n : *left;
    memcpy(b, *p, k);
    *p += k;
    *left -= k;
    return b;
}

static void fuzz_sparse(const uint8_t *p, size_t left, size_t rows, size_t cols)
{
    const size_t nt = ccomp_kv_sparse_tiles(rows, cols), nv = rows * cols / 2;
    ccomp_kv_sparse q = {rows, cols, 0.5, NULL, NULL, NULL, 0};
    float *out = (float *)malloc(rows * cols * sizeof(float)), *qv = (float *)calloc(cols, sizeof(float));
    float *s = (float *)malloc(rows * sizeof(float)), *o = (float *)calloc(cols, sizeof(float));
    ccomp_error err;
    q.bitmaps = (uint64_t *)take(&p, &left, nt * 8);
    q.offsets = (uint32_t *)take(&p, &left, (nt + 1) * 4);
    q.values = (uint16_t *)take(&p, &left, nv * 2);
    q.nnz = nv;
    if (ccomp_kv_sparse_validate(&q, nv, &err) == CCOMP_OK) {
        ccomp_kv_sparse_dequantize(&q, out, cols);
        ccomp_kv_sparse_scores(&q, qv, s);
        ccomp_kv_sparse_accum(&q, s, o);
    }
    free(q.bitmaps);
    free(q.offsets);
    free(q.values);
    free(out);
    free(qv);
    free(s);
    free(o);
}

static void fuzz_gear(const uint8_t *p, size_t left, size_t rows, size_t cols, int bits, int axis)
{
    const size_t ng = ccomp_kv_gw_groups(rows, cols, 32, axis), per = 3, r = 2;
    ccomp_kv_gear g;
    float *out = (float *)malloc(rows * cols * sizeof(float)), *qv = (float *)calloc(cols, sizeof(float));
    float *s = (float *)calloc(rows, sizeof(float)), *o = (float *)calloc(cols, sizeof(float));
    ccomp_error err;
    memset(&g, 0, sizeof g);
    g.backbone = (ccomp_kv_gw){rows, cols, bits, 32, axis, NULL, NULL, NULL};
    g.backbone.codes = (uint8_t *)take(&p, &left, ccomp_kv_gw_code_bytes(rows, cols, bits));
    g.backbone.scale = (uint16_t *)take(&p, &left, ng * 2);
    g.backbone.zero = (uint16_t *)take(&p, &left, ng * 2);
    g.outliers = (ccomp_kv_outliers){rows, cols, per, NULL, NULL};
    g.outliers.idx = (uint16_t *)take(&p, &left, rows * per * 2);
    g.outliers.vals = (uint16_t *)take(&p, &left, rows * per * 2);
    g.rank = (int)r;
    g.U = (uint16_t *)take(&p, &left, rows * r * 2);
    g.W = (uint16_t *)take(&p, &left, cols * r * 2);
    if (ccomp_kv_outliers_validate(&g.outliers, &err) == CCOMP_OK) {
        ccomp_kv_gear_dequantize(&g, out, cols);
        ccomp_kv_gear_scores(&g, qv, s);
        ccomp_kv_gear_accum(&g, s, o);
    }
    free(g.backbone.codes);
    free(g.backbone.scale);
    free(g.backbone.zero);
    free(g.outliers.idx);
    free(g.outliers.vals);
    free(g.U);
    free(g.W);
    free(out);
    free(qv);
    free(s);
    free(o);
}

/* The input as float32 data: quantizers return a status, never crash. */
static void fuzz_quantize(const uint8_t *data, size_t size)
{
    const size_t cols = 64, rows = 32;
    float *x = (float *)calloc(rows * cols, sizeof(float));
    uint64_t bm[64];
    uint32_t off[65];
    uint16_t vals[32 * 64];
    ccomp_kv_sparse q = {rows, cols, 0.75, bm, off, vals, 0};
    ccomp_error err;
    ccomp_status st;
    memcpy(x, data, size < rows * cols * 4 ? size : rows * cols * 4);
    st = ccomp_kv_sparse_quantize(x, cols, &q, &err);
    if (st != CCOMP_OK && st != CCOMP_ERR_VALUE) abort();
    if (st == CCOMP_OK && ccomp_kv_sparse_validate(&q, q.nnz, &err) != CCOMP_OK) abort();
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t rows, cols;
    if (size < 2) return 0;
    rows = 32u * (1u + (data[0] & 1u));
    cols = 64u * (1u + ((data[0] >> 1) & 1u));
    if (data[0] & 4u)
        fuzz_gear(data + 2, size - 2, rows, cols, (data[1] & 3) == 3 ? 8 : 2 + (data[1] & 3), (data[0] >> 3) & 1);
    else
        fuzz_sparse(data + 2, size - 2, rows, cols);
    fuzz_quantize(data, size);
    return 0;
}

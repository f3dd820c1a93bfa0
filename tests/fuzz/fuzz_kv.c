/* libFuzzer target for the readers of ccomp.kv's compressed slices whose
 * arrays hold indices (ccomp/kv_sparse.h): bitmap sparse (bitmaps, offsets)
 * and GEAR (outlier channel indices).  The other methods' arrays are plain
 * codes and scales that any bytes make valid.
 *
 * Behind the CRC: most inputs are read as a CRC-framed slice record (method,
 * shape and parameters, then the method's arrays, then a CRC-32 of all
 * before it) whose CRC the target first recomputes, so that mutations reach
 * the header checks (the core's *_check functions, as the binding's
 * layout_init calls them), the body's size check and the index validators,
 * then every reader (dequantize, scores, accum, attention); a share of
 * inputs keeps its CRC as mutated, to exercise the rejection itself.
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
#include <zlib.h>

#include "ccomp/kv.h"
#include "ccomp/kv_sparse.h"
#include "ccomp/kv_turbo.h"

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

/* ------------------------------------------------ the CRC-framed record */

/* Record: [0] selector (this path), [1] method (CCOMP_KV_M_*), [2..3] T, [4..5] D (little-endian), [6] bits,
 * [7] group, [8] axis, [9] reserved, [10] qjl, [11] rank, [12] frac * 200, then the arrays, then CRC-32 of all
 * before. */
enum { REC_HEAD = 13, REC_MAX_T = 256, REC_MAX_D = 1024 };

typedef struct rec_arrays {
    ccomp_kv_layout c; /* the core's layout, as the binding's layout_init gets it */
    size_t n, size[CCOMP_KV_MAX_ARRAYS];
    uint8_t *a[CCOMP_KV_MAX_ARRAYS];
} rec_arrays;

/* The byte size of each array of the method (the core's method table), 0 when the header is refused. */
static int rec_layout(int method, size_t T, size_t D, int bits, int group, int axis, int qjl, int rank,
                      double frac, rec_arrays *L)
{
    ccomp_error err;
    ccomp_kv_params p;
    int i;
    memset(L, 0, sizeof *L);
    memset(&p, 0, sizeof p);
    p.bits = bits, p.group = group, p.axis = axis, p.qjl = qjl, p.rank = rank, p.iters = 1, p.frac = frac, p.seed = 7;
    if (ccomp_kv_layout_init(method, T, D, &p, &L->c, &err) != CCOMP_OK) return 0;
    L->n = (size_t)L->c.n;
    for (i = 0; i < L->c.n; i++) L->size[i] = L->c.count[i] * (size_t)(L->c.dtype[i][1] - '0');
    return 1;
}

static void fuzz_record(const uint8_t *in, size_t size, int fix_crc)
{
    uint8_t *data;
    size_t T, D, pos, i, need = 0;
    int method, bits, group, axis, qjl, rank, ok;
    double frac;
    rec_arrays L;
    const ccomp_kv_method *m;
    ccomp_kv_view v;
    ccomp_error err;
    float *aux = NULL;
    if (size < REC_HEAD + 4) return;
    data = (uint8_t *)malloc(size);
    memcpy(data, in, size);
    if (fix_crc) {
        uint32_t c = (uint32_t)crc32(0L, data, (uInt)(size - 4));
        memcpy(data + size - 4, &c, 4);
    }
    {
        uint32_t stored;
        memcpy(&stored, data + size - 4, 4);
        if (stored != (uint32_t)crc32(0L, data, (uInt)(size - 4))) goto done; /* damaged: refused */
    }
    method = data[1];
    T = (size_t)data[2] | (size_t)data[3] << 8;
    D = (size_t)data[4] | (size_t)data[5] << 8;
    bits = (int8_t)data[6], group = data[7], axis = data[8], qjl = data[10], rank = data[11];
    frac = data[12] / 200.0;
    if (T > REC_MAX_T || D == 0 || D > REC_MAX_D) goto done; /* the record's own bounds (the binding: 2^40) */
    if (!rec_layout(method, T, D, bits, group, axis, qjl, rank, frac, &L)) goto done;
    for (i = 0; i < L.n; i++) need += L.size[i];
    if (REC_HEAD + need + 4 != size) goto done; /* the body must be exactly the arrays */
    for (i = 0, pos = REC_HEAD; i < L.n; pos += L.size[i], i++) {
        L.a[i] = (uint8_t *)malloc(L.size[i] ? L.size[i] : 1); /* own, aligned copies (the binding snapshots) */
        memcpy(L.a[i], data + pos, L.size[i]);
    }
    m = ccomp_kv_method_get(method);
    if (L.c.aux_floats) {
        aux = (float *)malloc(L.c.aux_floats * sizeof(float));
        m->prepare(&L.c, aux);
    }
    memset(&v, 0, sizeof v);
    v.slice.method = method, v.slice.rows = T, v.slice.cols = D;
    {
        void *arrays[CCOMP_KV_MAX_ARRAYS];
        for (i = 0; i < L.n; i++) arrays[i] = L.a[i];
        m->view(&L.c, arrays, aux, &v);
    }
    ok = m->validate == NULL || m->validate(&L.c, &v.slice, &err) == CCOMP_OK;
    if (ok) {
        /* every reader: dequantize (through one attention tile), per-query and multi-query attention */
        float *q = (float *)calloc(4 * D, sizeof(float)), *o = (float *)malloc(4 * D * sizeof(float));
        for (i = 0; i < 4 * D; i++) q[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        if (T > 0) {
            ccomp_status st1 = ccomp_kv_attention(q, 1, 1, D, &v.slice, &v.slice, 1, 0.1f, o, 1, &err);
            ccomp_status st4 = ccomp_kv_attention(q, 1, 4, D, &v.slice, &v.slice, 1, 0.1f, o, 1, &err);
            if ((st1 != CCOMP_OK && st1 != CCOMP_ERR_VALUE) || (st4 != CCOMP_OK && st4 != CCOMP_ERR_VALUE)) abort();
        }
        free(q);
        free(o);
    }
    for (i = 0; i < L.n; i++) free(L.a[i]);
done:
    free(aux);
    free(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t rows, cols;
    if (size < 2) return 0;
    if ((data[0] & 3u) == 3u && size >= REC_HEAD) {
        /* a quarter: the header as given, the body the rest of the input repeated to the size the header
         * implies (so that header mutations reach the body checks), then a valid CRC */
        rec_arrays L;
        size_t need = 0, i, n;
        uint8_t *rec;
        const size_t T = data[2], D = (size_t)data[4] | (size_t)(data[5] & 3) << 8; /* T < 256, D < 1024 */
        if (rec_layout(data[1], T, D, (int8_t)data[6], data[7], data[8], data[10], data[11], data[12] / 200.0, &L)) {
            for (i = 0; i < L.n; i++) need += L.size[i];
            n = REC_HEAD + need + 4;
            rec = (uint8_t *)malloc(n);
            memcpy(rec, data, REC_HEAD);
            rec[3] = 0;
            rec[5] &= 3;
            for (i = 0; i < need; i++) rec[REC_HEAD + i] = size > REC_HEAD ? data[REC_HEAD + i % (size - REC_HEAD)] : 0;
            fuzz_record(rec, n, 1);
            free(rec);
        }
        return 0;
    }
    if ((data[0] & 3u) != 0) { /* half: the record as given, its CRC fixed except for 1 in 8 */
        fuzz_record(data, size, (data[0] & 0x1cu) != 0);
        return 0;
    }
    rows = 32u * (1u + ((data[0] >> 2) & 1u));
    cols = 64u * (1u + ((data[0] >> 3) & 1u));
    if (data[0] & 16u)
        fuzz_gear(data + 2, size - 2, rows, cols, (data[1] & 3) == 3 ? 8 : 2 + (data[1] & 3), (data[0] >> 5) & 1);
    else
        fuzz_sparse(data + 2, size - 2, rows, cols);
    fuzz_quantize(data, size);
    return 0;
}

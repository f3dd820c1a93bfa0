/* C-level tests of the sketch core (ccomp/sketch.h), sized to run under
 * AddressSanitizer + UBSan: the code layout (SketchTune's nibbles), packing,
 * every kernel against the reference loops for every bit width, table type,
 * group layout and batch size (with sentinels after every output and the
 * same bits for 1 and 3 threads), the float64 path equal to the reference,
 * the fitting methods, and the error paths.  Usage: test_sketch [--quick] */
#define _POSIX_C_SOURCE 200809L /* clock_gettime in test_util.h */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ccomp/half.h"
#include "ccomp/sketch.h"
#include "../../csrc/sketch/sketch_internal.h"
#include "check.h"
#include "test_util.h"

#define SENTINEL 0x5a

static uint64_t seed = 0x5ce7c4u;

static double unif(void)
{
    return (double)(splitmix(&seed) >> 11) * (1.0 / 9007199254740992.0);
}

static float gauss(void)
{
    double u = unif() + 1e-300, v = unif();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* n bytes plus 64 sentinel bytes */
static void *guarded(size_t n)
{
    uint8_t *p = (uint8_t *)malloc(n + 64);
    memset(p, SENTINEL, n + 64);
    return p;
}

static int intact(const void *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p + n;
    size_t i;
    for (i = 0; i < 64; i++)
        if (b[i] != SENTINEL) return 0;
    return 1;
}

typedef struct owned {
    ccomp_sketch s;
    void *tables;
    uint8_t *codes, *raw; /* packed, and one code per byte */
} owned;

static void make_sketch(owned *o, size_t rows, size_t cols, size_t groups, int bits, int dtype)
{
    size_t K = (size_t)1 << bits, nt = rows * groups * K, i;
    ccomp_error err;
    o->raw = (uint8_t *)malloc(rows * cols);
    o->codes = (uint8_t *)guarded(ccomp_sketch_code_bytes(rows, cols, groups, bits));
    o->tables = malloc(nt * ccomp_sketch_dtype_size(dtype));
    for (i = 0; i < rows * cols; i++) o->raw[i] = (uint8_t)(splitmix(&seed) & (K - 1));
    for (i = 0; i < nt; i++) ccomp_sketch_table_set(o->tables, dtype, i, 0.1 * gauss());
    CHECK(ccomp_sketch_pack(o->raw, rows, cols, groups, bits, o->codes, &err) == CCOMP_OK, "pack: %s", err.msg);
    o->s.rows = rows;
    o->s.cols = cols;
    o->s.groups = groups;
    o->s.bits = bits;
    o->s.dtype = dtype;
    o->s.tables = o->tables;
    o->s.codes = o->codes;
}

static void free_sketch(owned *o)
{
    free(o->raw);
    free(o->codes);
    free(o->tables);
}

static float *randf(size_t n)
{
    float *x = (float *)guarded(n * sizeof(float));
    size_t i;
    for (i = 0; i < n; i++) x[i] = gauss();
    return x;
}

/* ---------------------------------------------------------------- layout */

static void test_layout(void)
{
    /* SketchTune: high nibble = even column, low nibble = odd column */
    const uint8_t codes4[4] = {0x1, 0xa, 0xf, 0x3}, codes2[8] = {3, 0, 1, 2, 2, 2, 0, 3};
    const uint8_t codes3[8] = {1, 2, 3, 4, 5, 6, 7, 0};
    uint8_t out[8], back[8];
    ccomp_error err;
    CHECK(ccomp_sketch_pack(codes4, 1, 4, 1, 4, out, &err) == CCOMP_OK && out[0] == 0x1a && out[1] == 0xf3,
          "4-bit nibbles: %02x %02x", out[0], out[1]);
    CHECK(ccomp_sketch_pack(codes2, 1, 8, 1, 2, out, &err) == CCOMP_OK && out[0] == 0xc6 && out[1] == 0xa3,
          "2-bit layout: %02x %02x", out[0], out[1]);
    /* 001 010 011 100 101 110 111 000 */
    CHECK(ccomp_sketch_pack(codes3, 1, 8, 1, 3, out, &err) == CCOMP_OK && out[0] == 0x29 && out[1] == 0xcb &&
              out[2] == 0xb8,
          "3-bit layout: %02x %02x %02x", out[0], out[1], out[2]);
    /* runs are byte aligned and padded: 2 groups of 3 codes of 3 bits -> 2 bytes each */
    {
        const uint8_t c[6] = {7, 7, 7, 1, 2, 3};
        CHECK(ccomp_sketch_group_bytes(3, 3) == 2, "group bytes");
        CHECK(ccomp_sketch_pack(c, 1, 6, 2, 3, out, &err) == CCOMP_OK && out[0] == 0xff && out[1] == 0x80 &&
                  out[2] == 0x29 && out[3] == 0x80,
              "padded runs: %02x %02x %02x %02x", out[0], out[1], out[2], out[3]);
        CHECK(ccomp_sketch_unpack(out, 1, 6, 2, 3, back, &err) == CCOMP_OK && memcmp(back, c, 6) == 0, "unpack");
        out[1] |= 1;
        CHECK(ccomp_sketch_unpack(out, 1, 6, 2, 3, back, &err) == CCOMP_ERR_CORRUPT, "padding bits must be zero");
    }
    {
        const uint8_t bad[4] = {1, 16, 0, 0};
        CHECK(ccomp_sketch_pack(bad, 1, 4, 1, 4, out, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "16") != NULL,
              "out-of-range code: %s", err.msg);
    }
    /* round trips on random codes */
    {
        static const int bits[] = {2, 3, 4};
        int b;
        for (b = 0; b < 3; b++) {
            owned o;
            uint8_t *u = (uint8_t *)malloc(7 * 60);
            make_sketch(&o, 7, 60, 3, bits[b], CCOMP_SKETCH_F32);
            CHECK(ccomp_sketch_unpack(o.codes, 7, 60, 3, bits[b], u, &err) == CCOMP_OK &&
                      memcmp(u, o.raw, 7 * 60) == 0,
                  "%d-bit round trip", bits[b]);
            CHECK(intact(o.codes, ccomp_sketch_code_bytes(7, 60, 3, bits[b])), "pack wrote past its output");
            free(u);
            free_sketch(&o);
        }
    }
}

static void test_rounding(void)
{
    /* float16 / bfloat16 round to nearest even from double, without double rounding */
    double h = ccomp_sketch_round(1.0 + 1.0 / 2048.0, CCOMP_SKETCH_F16); /* a tie: stays at 1 */
    double h2 = ccomp_sketch_round(1.0 + 1.0 / 2048.0 + 1e-12, CCOMP_SKETCH_F16); /* just above: rounds up */
    double b = ccomp_sketch_round(1.0 + 1.0 / 256.0, CCOMP_SKETCH_BF16), b2 = ccomp_sketch_round(1.0 + 1.0 / 256.0 + 1e-12, CCOMP_SKETCH_BF16);
    uint16_t t[2];
    CHECK(h == 1.0 && h2 == 1.0 + 1.0 / 1024.0, "fp16 rounding: %.17g %.17g", h, h2);
    CHECK(b == 1.0 && b2 == 1.0 + 1.0 / 128.0, "bf16 rounding: %.17g %.17g", b, b2);
    ccomp_sketch_table_set(t, CCOMP_SKETCH_BF16, 0, -2.5);
    ccomp_sketch_table_set(t, CCOMP_SKETCH_F16, 1, 0.333);
    CHECK(t[0] == 0xc020 && ccomp_sketch_table_get(t, CCOMP_SKETCH_BF16, 0) == -2.5, "bf16 bits %04x", t[0]);
    CHECK(t[1] == ccomp_f32_to_f16(0.333f), "fp16 bits %04x", t[1]);
}

/* ---------------------------------------------------------------- kernels */

/* |a - b| <= tol * scale for every element (scale: the sum of |terms|) */
static double worst_rel(const float *a, const double *ref, const double *scale, size_t n)
{
    double w = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]) / (scale[i] + 1e-30);
        if (!(e <= w)) w = isnan(e) ? INFINITY : e;
    }
    return w;
}

static void check_kernels(size_t rows, size_t cols, size_t groups, int bits, int dtype, size_t n)
{
    owned o;
    size_t K = (size_t)1 << bits, nt = rows * groups * K, i, r, c;
    float *x, *gy, *y1, *y3, *gt1, *gt3, *gx1, *gx3, *wd;
    double *yr, *gtr, *gxr, *sy, *sgt, *sgx, *x64, *gy64, *y64, *gt64, *gx64, *w64;
    ccomp_error err;
    char what[160];
    snprintf(what, sizeof what, "rows %zu cols %zu groups %zu bits %d dtype %d n %zu", rows, cols, groups, bits, dtype, n);
    make_sketch(&o, rows, cols, groups, bits, dtype);
    x = randf(n * cols);
    gy = randf(n * rows);
    y1 = (float *)guarded(n * rows * 4);
    y3 = (float *)guarded(n * rows * 4);
    gt1 = (float *)guarded(nt * 4);
    gt3 = (float *)guarded(nt * 4);
    gx1 = (float *)guarded(n * cols * 4);
    gx3 = (float *)guarded(n * cols * 4);
    wd = (float *)guarded(rows * cols * 4);
    w64 = (double *)malloc(rows * cols * 8);
    yr = (double *)malloc((n * rows + 1) * 8);
    gtr = (double *)malloc(nt * 8);
    gxr = (double *)malloc((n * cols + 1) * 8);
    sy = (double *)calloc(n * rows + 1, 8);
    sgt = (double *)calloc(nt, 8);
    sgx = (double *)calloc(n * cols + 1, 8);
    x64 = (double *)malloc((n * cols + 1) * 8);
    gy64 = (double *)malloc((n * rows + 1) * 8);
    y64 = (double *)guarded(n * rows * 8);
    gt64 = (double *)guarded(nt * 8);
    gx64 = (double *)guarded(n * cols * 8);
    for (i = 0; i < n * cols; i++) x64[i] = x[i];
    for (i = 0; i < n * rows; i++) gy64[i] = gy[i];

    CHECK(ccomp_sketch_dequantize(&o.s, CCOMP_SKETCH_F32, wd, 2, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(ccomp_sketch_dequantize(&o.s, CCOMP_SKETCH_F64, w64, 1, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(intact(wd, rows * cols * 4), "%s: dequantize wrote past its output", what);
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            size_t g = c / (cols / groups);
            double t = ccomp_sketch_table_get(o.tables, dtype, (r * groups + g) * K + o.raw[r * cols + c]);
            if (w64[r * cols + c] != t || wd[r * cols + c] != (float)t) {
                CHECK(0, "%s: dequantized W[%zu, %zu] = %g, table says %g", what, r, c, w64[r * cols + c], t);
                r = rows;
                break;
            }
        }
    /* error scales: the sums of |terms| */
    for (i = 0; i < n; i++)
        for (r = 0; r < rows; r++)
            for (c = 0; c < cols; c++) {
                double a = fabs(x64[i * cols + c] * w64[r * cols + c]), b = fabs(gy64[i * rows + r] * w64[r * cols + c]);
                sy[i * rows + r] += a;
                sgx[i * cols + c] += b;
                sgt[(r * groups + c / (cols / groups)) * K + o.raw[r * cols + c]] +=
                    fabs(gy64[i * rows + r] * x64[i * cols + c]);
            }

    ccomp_sketch_matmul_ref(&o.s, x64, n, CCOMP_SKETCH_F64, yr);
    ccomp_sketch_grad_tables_ref(&o.s, x64, gy64, n, CCOMP_SKETCH_F64, gtr);
    ccomp_sketch_grad_input_ref(&o.s, gy64, n, CCOMP_SKETCH_F64, gxr);

    CHECK(ccomp_sketch_matmul(&o.s, x, n, CCOMP_SKETCH_F32, y1, 1, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(ccomp_sketch_matmul(&o.s, x, n, CCOMP_SKETCH_F32, y3, 3, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(ccomp_sketch_grad_tables(&o.s, x, gy, n, CCOMP_SKETCH_F32, gt1, 1, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(ccomp_sketch_grad_tables(&o.s, x, gy, n, CCOMP_SKETCH_F32, gt3, 3, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(ccomp_sketch_grad_input(&o.s, gy, n, CCOMP_SKETCH_F32, gx1, 1, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(ccomp_sketch_grad_input(&o.s, gy, n, CCOMP_SKETCH_F32, gx3, 3, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(intact(y1, n * rows * 4) && intact(y3, n * rows * 4) && intact(gt1, nt * 4) && intact(gt3, nt * 4) &&
              intact(gx1, n * cols * 4) && intact(gx3, n * cols * 4),
          "%s: a kernel wrote past its output", what);
    CHECK(memcmp(y1, y3, n * rows * 4) == 0, "%s: matmul differs between 1 and 3 threads", what);
    CHECK(memcmp(gt1, gt3, nt * 4) == 0, "%s: grad_tables differs between 1 and 3 threads", what);
    CHECK(memcmp(gx1, gx3, n * cols * 4) == 0, "%s: grad_input differs between 1 and 3 threads", what);
    {
        double e1 = worst_rel(y1, yr, sy, n * rows), e2 = worst_rel(gt1, gtr, sgt, nt),
               e3 = worst_rel(gx1, gxr, sgx, n * cols);
        CHECK(e1 < 1e-5, "%s: matmul error %g (%s kernels)", what, e1, ccomp_sketch_kernel_name());
        CHECK(e2 < 1e-5, "%s: grad_tables error %g", what, e2);
        CHECK(e3 < 1e-5, "%s: grad_input error %g", what, e3);
    }
    /* the float64 path is the reference itself, threaded */
    CHECK(ccomp_sketch_matmul(&o.s, x64, n, CCOMP_SKETCH_F64, y64, 3, &err) == CCOMP_OK, "%s: %s", what, err.msg);
    CHECK(ccomp_sketch_grad_tables(&o.s, x64, gy64, n, CCOMP_SKETCH_F64, gt64, 3, &err) == CCOMP_OK, "%s", err.msg);
    CHECK(ccomp_sketch_grad_input(&o.s, gy64, n, CCOMP_SKETCH_F64, gx64, 3, &err) == CCOMP_OK, "%s", err.msg);
    CHECK(memcmp(y64, yr, n * rows * 8) == 0 && memcmp(gt64, gtr, nt * 8) == 0 && memcmp(gx64, gxr, n * cols * 8) == 0,
          "%s: the float64 path differs from the reference", what);
    CHECK(intact(y64, n * rows * 8) && intact(gt64, nt * 8) && intact(gx64, n * cols * 8),
          "%s: a float64 kernel wrote past its output", what);

    free(x); free(gy); free(y1); free(y3); free(gt1); free(gt3); free(gx1); free(gx3); free(wd); free(w64);
    free(yr); free(gtr); free(gxr); free(sy); free(sgt); free(sgx); free(x64); free(gy64); free(y64); free(gt64);
    free(gx64);
    free_sketch(&o);
}

/* Each float32 GEMV path the CPU has, called directly (the dispatcher picks only one). */
static void check_gemv_paths(size_t rows, size_t cols, size_t groups, int bits, int dtype, size_t n)
{
    owned o;
    float *x = randf(n * cols), *xi = (float *)malloc(n * cols * 4), *y = (float *)guarded(n * rows * 4);
    float *tile = (float *)malloc(SK_SCRATCH_FLOATS * sizeof(float));
    double *x64 = (double *)malloc(n * cols * 8), *yr = (double *)malloc(n * rows * 8), *sc = (double *)calloc(n * rows, 8);
    double *w64 = (double *)malloc(rows * cols * 8);
    ccomp_error err;
    size_t i, r, c;
    make_sketch(&o, rows, cols, groups, bits, dtype);
    for (i = 0; i < n * cols; i++) x64[i] = x[i];
    ccomp_sketch_matmul_ref(&o.s, x64, n, CCOMP_SKETCH_F64, yr);
    ccomp_sketch_dequantize(&o.s, CCOMP_SKETCH_F64, w64, 1, &err);
    for (i = 0; i < n; i++)
        for (r = 0; r < rows; r++)
            for (c = 0; c < cols; c++) sc[i * rows + r] += fabs(x64[i * cols + c] * w64[r * cols + c]);
    if (sk_avx2_ok()) {
        sk_matmul_rows_avx2(&o.s, x, n, y, 0, rows, tile);
        CHECK(worst_rel(y, yr, sc, n * rows) < 1e-5, "avx2 gemv: rows %zu cols %zu groups %zu bits %d dtype %d n %zu: "
              "error %g", rows, cols, groups, bits, dtype, n, worst_rel(y, yr, sc, n * rows));
    }
    if (sk_avx512_ok() && bits != 3) {
        if (bits == 4)
            sk_interleave16(&o.s, x, n, xi);
        else
            memcpy(xi, x, n * cols * 4);
        sk_gemv_rows_avx512(&o.s, xi, n, y, 0, rows, tile);
        CHECK(worst_rel(y, yr, sc, n * rows) < 1e-5, "avx512 gemv: rows %zu cols %zu groups %zu bits %d dtype %d n %zu: "
              "error %g", rows, cols, groups, bits, dtype, n, worst_rel(y, yr, sc, n * rows));
    }
    CHECK(intact(y, n * rows * 4), "a GEMV wrote past its output");
    free(x); free(xi); free(y); free(tile); free(x64); free(yr); free(sc); free(w64);
    free_sketch(&o);
}

static void test_kernels(int quick)
{
    static const int bits[] = {2, 3, 4};
    static const int dtypes[] = {CCOMP_SKETCH_F32, CCOMP_SKETCH_F16, CCOMP_SKETCH_BF16, CCOMP_SKETCH_F64};
    /* (cols, groups): one group, groups of 64 + tails, odd group sizes, 8-column groups, 1-column groups */
    static const size_t shapes[][2] = {{256, 1}, {200, 2}, {111, 3}, {64, 8}, {600, 1}, {5, 5}};
    static const size_t batches[] = {1, 2, 3, 8, 40, 13}; /* 40: the tiled grad_tables */
    int b, d;
    size_t sh, bi;
    for (b = 0; b < 3; b++)
        for (d = 0; d < 4; d++)
            for (sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
                for (bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                    if (quick && (bi % 2 || sh == 4)) continue;
                    check_kernels(d == 0 ? 37 : 9, shapes[sh][0], shapes[sh][1], bits[b], dtypes[d], batches[bi]);
                }
    /* every GEMV path directly: whole 16/8-column blocks, 8-column remainders and scalar tails */
    {
        static const size_t gshapes[][2] = {{512, 1}, {120, 1}, {232, 2}, {90, 3}, {24, 3}, {7, 1}, {2600, 1}, {2304, 3}};
        size_t n;
        for (b = 0; b < 3; b++)
            for (d = 0; d < 4; d++)
                for (sh = 0; sh < sizeof gshapes / sizeof gshapes[0]; sh++)
                    for (n = 1; n <= 5; n++) check_gemv_paths(19, gshapes[sh][0], gshapes[sh][1], bits[b], dtypes[d], n);
    }
    /* larger: several row tasks and tiles, threads in play */
    if (!quick) {
        check_kernels(300, 1100, 2, 4, CCOMP_SKETCH_F16, 1);
        check_kernels(150, 1100, 1, 4, CCOMP_SKETCH_F32, 17);
        check_kernels(100, 690, 3, 4, CCOMP_SKETCH_F32, 300);
    }
}

/* ---------------------------------------------------------------- fitting */

static double sq_err(const float *w, const float *d, size_t n)
{
    double e = 0;
    size_t i;
    for (i = 0; i < n; i++) e += ((double)w[i] - d[i]) * ((double)w[i] - d[i]);
    return e;
}

static void test_fit(void)
{
    const size_t rows = 20, cols = 96, groups = 2;
    static const int bits[] = {2, 3, 4};
    float *w = randf(rows * cols), *d = (float *)malloc(rows * cols * 4), *u = (float *)calloc(cols * cols, 4);
    ccomp_error err;
    int bi;
    size_t i;
    for (i = 0; i < cols; i++) u[i * cols + i] = 1.0f;
    for (bi = 0; bi < 3; bi++) {
        int b = bits[bi];
        size_t K = (size_t)1 << b, nt = rows * groups * K, nc = ccomp_sketch_code_bytes(rows, cols, groups, b);
        float *t_rtn = (float *)guarded(nt * 4), *t_km = (float *)guarded(nt * 4), *t_km3 = (float *)guarded(nt * 4);
        uint8_t *c_rtn = (uint8_t *)guarded(nc), *c_km = (uint8_t *)guarded(nc), *c_km3 = (uint8_t *)guarded(nc),
                *c_gq = (uint8_t *)guarded(nc);
        ccomp_sketch s = {rows, cols, groups, b, CCOMP_SKETCH_F32, t_rtn, c_rtn};
        double e_rtn, e_km, step_ok = 1;
        size_t r, c;
        CHECK(ccomp_sketch_fit_rtn(w, cols, rows, cols, groups, b, CCOMP_SKETCH_F32, t_rtn, c_rtn, 2, &err) == CCOMP_OK,
              "rtn: %s", err.msg);
        ccomp_sketch_dequantize(&s, CCOMP_SKETCH_F32, d, 1, &err);
        e_rtn = sq_err(w, d, rows * cols);
        /* every weight within half a grid step of its entry */
        for (r = 0; r < rows; r++)
            for (c = 0; c < cols; c++) {
                const float *t = t_rtn + (r * groups + c / (cols / groups)) * K;
                double step = (t[K - 1] - t[0]) / (double)(K - 1);
                if (fabs((double)w[r * cols + c] - d[r * cols + c]) > 0.5 * step * (1 + 1e-6)) step_ok = 0;
            }
        CHECK(step_ok, "%d-bit rtn: a weight is farther than half a step from its entry", b);
        CHECK(ccomp_sketch_fit_kmeans(w, cols, rows, cols, groups, b, CCOMP_SKETCH_F32, NULL, 100, t_km, c_km, 1,
                                      &err) == CCOMP_OK,
              "kmeans: %s", err.msg);
        CHECK(ccomp_sketch_fit_kmeans(w, cols, rows, cols, groups, b, CCOMP_SKETCH_F32, NULL, 100, t_km3, c_km3, 3,
                                      &err) == CCOMP_OK &&
                  memcmp(t_km, t_km3, nt * 4) == 0 && memcmp(c_km, c_km3, nc) == 0,
              "kmeans differs between 1 and 3 threads");
        s.tables = t_km;
        s.codes = c_km;
        ccomp_sketch_dequantize(&s, CCOMP_SKETCH_F32, d, 1, &err);
        e_km = sq_err(w, d, rows * cols);
        CHECK(e_km < e_rtn, "%d-bit: k-means error %g not below rtn %g", b, e_km, e_rtn);
        /* with U = I there is no error feedback: GPTQ gives the nearest codes */
        CHECK(ccomp_sketch_fit_gptq(w, cols, u, rows, cols, groups, b, CCOMP_SKETCH_F32, t_km, 32, c_gq, 2, &err) ==
                      CCOMP_OK && memcmp(c_gq, c_km, nc) == 0,
              "%d-bit gptq with U = I: codes differ from the nearest ones (%s)", b, err.msg);
        CHECK(intact(t_rtn, nt * 4) && intact(t_km, nt * 4) && intact(c_rtn, nc) && intact(c_km, nc) && intact(c_gq, nc),
              "a fit wrote past its output");
        free(t_rtn); free(t_km); free(t_km3); free(c_rtn); free(c_km); free(c_km3); free(c_gq);
    }
    /* GPTQ error feedback lowers the output error on correlated inputs (H = 2 X^T X / m) */
    {
        const size_t m = 256, K = 16, nt = rows * K, nc = ccomp_sketch_code_bytes(rows, cols, 1, 4);
        double *H = (double *)calloc(cols * cols, 8), *L = (double *)calloc(cols * cols, 8),
               *Hi = (double *)calloc(cols * cols, 8);
        float *X = randf(m * cols), *t = (float *)malloc(nt * 4), *wd = (float *)malloc(rows * cols * 4);
        uint8_t *c_near = (uint8_t *)malloc(nc), *c_gq = (uint8_t *)malloc(nc);
        size_t a, bb, k, r, q;
        double e_near = 0, e_gq = 0;
        for (i = 0; i < m; i++)
            for (a = 1; a < cols; a++) X[i * cols + a] = 0.8f * X[i * cols + a - 1] + 0.6f * X[i * cols + a];
        for (a = 0; a < cols; a++)
            for (bb = 0; bb < cols; bb++) {
                double acc = 0;
                for (i = 0; i < m; i++) acc += (double)X[i * cols + a] * X[i * cols + bb];
                H[a * cols + bb] = 2 * acc / (double)m + (a == bb ? 0.01 : 0.0);
            }
        /* H^-1 by Cholesky, then U = chol(H^-1) upper (U^T U = H^-1): Cholesky of the reversed matrix */
        for (a = 0; a < cols; a++)
            for (bb = 0; bb <= a; bb++) {
                double acc = H[a * cols + bb];
                for (k = 0; k < bb; k++) acc -= L[a * cols + k] * L[bb * cols + k];
                L[a * cols + bb] = a == bb ? sqrt(acc) : acc / L[bb * cols + bb];
            }
        for (bb = 0; bb < cols; bb++) { /* columns of H^-1 */
            double *e = (double *)calloc(cols, 8);
            e[bb] = 1;
            for (a = 0; a < cols; a++) {
                for (k = 0; k < a; k++) e[a] -= L[a * cols + k] * e[k];
                e[a] /= L[a * cols + a];
            }
            for (a = cols; a-- > 0;) {
                for (k = a + 1; k < cols; k++) e[a] -= L[k * cols + a] * e[k];
                e[a] /= L[a * cols + a];
            }
            for (a = 0; a < cols; a++) Hi[a * cols + bb] = e[a];
            free(e);
        }
        /* upper U with U^T U = Hi: U[i][j] = (Hi[i][j] - sum_{k<i} U[k][i] U[k][j]) / U[i][i] */
        memset(u, 0, cols * cols * 4);
        for (a = 0; a < cols; a++) {
            double dd = Hi[a * cols + a];
            for (k = 0; k < a; k++) dd -= (double)u[k * cols + a] * u[k * cols + a];
            u[a * cols + a] = (float)sqrt(dd);
            for (bb = a + 1; bb < cols; bb++) {
                double acc = Hi[a * cols + bb];
                for (k = 0; k < a; k++) acc -= (double)u[k * cols + a] * u[k * cols + bb];
                u[a * cols + bb] = (float)(acc / u[a * cols + a]);
            }
        }
        CHECK(ccomp_sketch_fit_kmeans(w, cols, rows, cols, 1, 4, CCOMP_SKETCH_F32, NULL, 50, t, c_near, 1, &err) ==
                  CCOMP_OK, "%s", err.msg);
        CHECK(ccomp_sketch_fit_gptq(w, cols, u, rows, cols, 1, 4, CCOMP_SKETCH_F32, t, 32, c_gq, 2, &err) == CCOMP_OK,
              "%s", err.msg);
        for (q = 0; q < 2; q++) {
            ccomp_sketch s = {rows, cols, 1, 4, CCOMP_SKETCH_F32, t, q ? c_gq : c_near};
            ccomp_sketch_dequantize(&s, CCOMP_SKETCH_F32, wd, 1, &err);
            for (i = 0; i < m; i++)
                for (r = 0; r < rows; r++) {
                    double y = 0;
                    for (a = 0; a < cols; a++) y += (double)X[i * cols + a] * ((double)w[r * cols + a] - wd[r * cols + a]);
                    *(q ? &e_gq : &e_near) += y * y;
                }
        }
        CHECK(e_gq < 0.8 * e_near, "GPTQ output error %g not below nearest rounding %g", e_gq, e_near);
        free(H); free(L); free(Hi); free(X); free(t); free(wd); free(c_near); free(c_gq);
    }
    /* bad input */
    {
        float t[2 * 16];
        uint8_t c[64];
        w[3 * cols + 17] = NAN;
        CHECK(ccomp_sketch_fit_rtn(w, cols, rows, cols, groups, 4, CCOMP_SKETCH_F32, t, c, 1, &err) == CCOMP_ERR_VALUE &&
                  strstr(err.msg, "W[3, 17]") != NULL,
              "NaN weight: %s", err.msg);
        w[3 * cols + 17] = 0.0f;
        u[5 * cols + 5] = 0.0f;
        CHECK(ccomp_sketch_fit_gptq(w, cols, u, rows, cols, 1, 4, CCOMP_SKETCH_F32, t, 32, c, 1, &err) ==
                  CCOMP_ERR_VALUE && strstr(err.msg, "[5, 5]") != NULL,
              "zero pivot: %s", err.msg);
        CHECK(ccomp_sketch_fit_rtn(w, cols, rows, cols, 5, 4, CCOMP_SKETCH_F32, t, c, 1, &err) == CCOMP_ERR_VALUE &&
                  strstr(err.msg, "divisible") != NULL,
              "groups: %s", err.msg);
    }
    free(w);
    free(d);
    free(u);
}

static void test_errors(void)
{
    ccomp_error err;
    float t[16] = {0}, x[8] = {0}, y[8];
    uint8_t c[8] = {0};
    ccomp_sketch s = {1, 8, 1, 5, CCOMP_SKETCH_F32, t, c};
    CHECK(ccomp_sketch_matmul(&s, x, 1, CCOMP_SKETCH_F32, y, 1, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "bits"),
          "bits 5: %s", err.msg);
    s.bits = 4;
    s.groups = 3;
    CHECK(ccomp_sketch_matmul(&s, x, 1, CCOMP_SKETCH_F32, y, 1, &err) == CCOMP_ERR_VALUE, "groups 3 of 8 columns");
    s.groups = 1;
    s.dtype = 9;
    CHECK(ccomp_sketch_matmul(&s, x, 1, CCOMP_SKETCH_F32, y, 1, &err) == CCOMP_ERR_VALUE, "dtype 9");
    s.dtype = CCOMP_SKETCH_F32;
    CHECK(ccomp_sketch_matmul(&s, x, 1, CCOMP_SKETCH_F16, y, 1, &err) == CCOMP_ERR_VALUE, "precision float16");
    CHECK(ccomp_sketch_matmul(&s, x, 1, CCOMP_SKETCH_F32, y, 0, &err) == CCOMP_ERR_VALUE, "0 threads");
    CHECK(ccomp_sketch_matmul(&s, x, 0, CCOMP_SKETCH_F32, y, 1, &err) == CCOMP_OK, "empty batch");
    s.rows = 0;
    CHECK(ccomp_sketch_grad_input(&s, x, 1, CCOMP_SKETCH_F32, y, 1, &err) == CCOMP_ERR_VALUE, "0 rows");
}

/* ------------------------------------------------------------- container */

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    int i;
    for (i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A named container of `count` entries of one 1 x 4 sketch (2 bits, float32 tables), named names[i]; the
 * CRC fixed; returns its size. */
static size_t make_container(uint8_t *buf, const char *const *names, size_t count)
{
    size_t pos = 10, i;
    memcpy(buf, "CCSK", 4);
    buf[4] = 1;
    buf[5] = 1;
    put_le(buf + 6, count, 4);
    for (i = 0; i < count; i++) {
        size_t len = strlen(names[i]);
        put_le(buf + pos, len, 2);
        memcpy(buf + pos + 2, names[i], len);
        pos += 2 + len;
        put_le(buf + pos, 1, 8);
        put_le(buf + pos + 8, 4, 8);
        put_le(buf + pos + 16, 1, 8);
        buf[pos + 24] = 2;
        buf[pos + 25] = CCOMP_SKETCH_F32;
        put_le(buf + pos + 26, 0, 2);
        pos += 28;
        memset(buf + pos, 0, 16); /* 4 float32 entries */
        pos += 16;
        buf[pos++] = 0x1b; /* codes 0 1 2 3 */
    }
    put_le(buf + pos, (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)pos), 4);
    return pos + 4;
}

static void test_container(void)
{
    static uint8_t buf[4096];
    const char *good[] = {"q", "k", "v"}, *dup[] = {"q", "k", "q"}, *empty[] = {"q", ""};
    ccomp_sketch_entry *es;
    ccomp_error err;
    size_t n, count, i;
    int kind;
    n = make_container(buf, good, 3);
    CHECK(ccomp_sketch_container_parse(buf, n, &kind, &es, &count, &err) == CCOMP_OK && kind == 1 && count == 3,
          "a good container: %s", err.msg);
    if (count == 3)
        CHECK(es[2].name_len == 1 && buf[es[2].name_off] == 'v' && es[2].cols == 4 && buf[es[2].codes_off] == 0x1b,
              "the third entry's fields");
    free(es);
    n = make_container(buf, dup, 3);
    CHECK(ccomp_sketch_container_parse(buf, n, &kind, &es, &count, &err) == CCOMP_ERR_CORRUPT &&
              strstr(err.msg, "duplicate layer name 'q'") && es == NULL,
          "duplicate names: %s", err.msg);
    n = make_container(buf, empty, 2);
    CHECK(ccomp_sketch_container_parse(buf, n, &kind, &es, &count, &err) == CCOMP_ERR_CORRUPT &&
              strstr(err.msg, "empty"), "an empty name: %s", err.msg);
    /* every truncation (CRC fixed again) and a huge count are refused */
    n = make_container(buf, good, 3);
    for (i = 0; i + 4 < n; i++) {
        uint8_t cut[4096];
        memcpy(cut, buf, i);
        put_le(cut + i, (uint32_t)crc32(crc32(0L, Z_NULL, 0), cut, (uInt)i), 4);
        CHECK(ccomp_sketch_container_parse(cut, i + 4, &kind, &es, &count, &err) == CCOMP_ERR_CORRUPT,
              "cut at %zu", i);
    }
    put_le(buf + 6, 0xFFFFFFFFu, 4);
    put_le(buf + n - 4, (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(n - 4)), 4);
    CHECK(ccomp_sketch_container_parse(buf, n, &kind, &es, &count, &err) == CCOMP_ERR_CORRUPT &&
              strstr(err.msg, "cannot fit"), "2^32 - 1 entries: %s", err.msg);
}

/* GPTQ with a block far beyond the columns: the same codes as one block of all columns */
static void test_gptq_block(void)
{
    enum { R = 3, C = 16 };
    float w[R * C], u[C * C] = {0}, t[R * 16];
    uint8_t a[R * 8], b[R * 8];
    ccomp_error err;
    size_t i;
    for (i = 0; i < R * C; i++) w[i] = gauss();
    for (i = 0; i < R * 16; i++) t[i] = (float)i / 8.0f - 3.0f;
    for (i = 0; i < C; i++) {
        u[i * C + i] = 1.0f;
        if (i + 1 < C) u[i * C + i + 1] = 0.1f;
    }
    CHECK(ccomp_sketch_fit_gptq(w, C, u, R, C, 1, 4, CCOMP_SKETCH_F32, t, (size_t)1 << 62, a, 1, &err) == CCOMP_OK,
          "block 2^62: %s", err.msg);
    CHECK(ccomp_sketch_fit_gptq(w, C, u, R, C, 1, 4, CCOMP_SKETCH_F32, t, C, b, 1, &err) == CCOMP_OK, "block C");
    CHECK(memcmp(a, b, sizeof a) == 0, "block 2^62 gives the codes of block %d", C);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    test_container();
    test_gptq_block();
    test_layout();
    test_rounding();
    test_kernels(quick);
    test_fit();
    test_errors();
    if (test_failures) {
        fprintf(stderr, "test_sketch: %d checks failed\n", test_failures);
        return 1;
    }
    printf("test_sketch: all passed (%s kernels)\n", ccomp_sketch_kernel_name());
    return 0;
}

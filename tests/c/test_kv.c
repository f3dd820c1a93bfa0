/* C-level tests of the KV-cache core (groupwise, ggml, bitmap sparse, GEAR,
 * attention over chained segments of mixed methods), sized to run under
 * AddressSanitizer + UBSan: every quantizer on strided input, error bounds,
 * attention against dense attention over the dequantized tensors, and the
 * error paths.  Usage: test_kv [--quick] */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/half.h"
#include "ccomp/kv.h"
#include "ccomp/kv_sparse.h"
#include "ccomp/kv_turbo.h"
#include "../../csrc/kv/kv_internal.h"
#include "check.h"

static uint64_t rng_state = 0x1234567u;

static double unif(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

static float gauss(void)
{
    double u = unif() + 1e-300, v = unif();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* rows x cols K/V-like data with row stride ld (a few large channels) */
static float *make(size_t rows, size_t ld)
{
    float *x = (float *)malloc(rows * ld * sizeof(float));
    size_t r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < ld; c++) x[r * ld + c] = gauss() * (c == 3 ? 8.0f : 1.0f) + (c % 17 == 5 ? 2.0f : 0.0f);
    return x;
}

static double rel_err(const float *a, const float *x, size_t rows, size_t cols, size_t ld)
{
    double num = 0, den = 0;
    size_t r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            double d = (double)a[r * cols + c] - (double)x[r * ld + c];
            num += d * d;
            den += (double)x[r * ld + c] * x[r * ld + c];
        }
    return num / den;
}

static void test_groupwise(void)
{
    static const int bits[] = {2, 3, 4, 8};
    static const double bound[] = {0.35, 0.08, 0.02, 0.0002};
    const size_t rows = 128, cols = 64, ld = 70;
    float *x = make(rows, ld), *d = (float *)malloc(rows * cols * sizeof(float));
    int bi, axis;
    for (axis = 0; axis < 2; axis++)
        for (bi = 0; bi < 4; bi++) {
            ccomp_kv_gw q = {rows, cols, bits[bi], 32, axis, NULL, NULL, NULL};
            size_t ng = ccomp_kv_gw_groups(rows, cols, 32, axis);
            ccomp_error err;
            q.codes = (uint8_t *)malloc(ccomp_kv_gw_code_bytes(rows, cols, bits[bi]));
            q.scale = (uint16_t *)malloc(ng * 2);
            q.zero = (uint16_t *)malloc(ng * 2);
            CHECK(ccomp_kv_gw_quantize(x, ld, &q, &err) == CCOMP_OK, "gw quantize: %s", err.msg);
            ccomp_kv_gw_dequantize(&q, d, cols);
            CHECK(rel_err(d, x, rows, cols, ld) < bound[bi], "gw %d bits axis %d: relative error %g", bits[bi],
                  axis, rel_err(d, x, rows, cols, ld));
            free(q.codes);
            free(q.scale);
            free(q.zero);
        }
    free(x);
    free(d);
}

/* The AVX2 path writes the reference (_ref) bytes and values, on data with
 * signed zeros, constant groups and extreme ranges. */
static void test_simd_equals_ref(void)
{
    static const int bits[] = {2, 3, 4, 8}, groups[] = {32, 64, 128};
    const size_t rows = 128, cols = 128, ld = 136;
    float *x = make(rows, ld), *d1 = (float *)malloc(rows * cols * 4), *d2 = (float *)malloc(rows * cols * 4);
    size_t i;
    int bi, gi, axis;
    if (!kv_avx2_ok()) {
        printf("test_kv: no AVX2/FMA/F16C here, SIMD comparison skipped\n");
        free(x);
        free(d1);
        free(d2);
        return;
    }
    for (i = 0; i < rows * ld; i += 7) x[i] = (i % 3 == 0) ? -0.0f : 0.0f;
    for (i = 0; i < 64; i++) x[5 * ld + i] = 1.5f;      /* a constant group (scale 0) */
    for (i = 64; i < 128; i++) x[9 * ld + i] = 3e4f * (float)(i % 2 ? 1 : -1);
    for (axis = 0; axis < 2; axis++)
        for (bi = 0; bi < 4; bi++)
            for (gi = 0; gi < 3; gi++) {
                const size_t nb = ccomp_kv_gw_code_bytes(rows, cols, bits[bi]);
                const size_t ng = ccomp_kv_gw_groups(rows, cols, groups[gi], axis);
                uint8_t *c1 = (uint8_t *)malloc(nb), *c2 = (uint8_t *)malloc(nb);
                uint16_t *p1 = (uint16_t *)malloc(4 * ng), *p2 = (uint16_t *)malloc(4 * ng);
                ccomp_kv_gw a = {rows, cols, bits[bi], groups[gi], axis, c1, p1, p1 + ng};
                ccomp_kv_gw b = {rows, cols, bits[bi], groups[gi], axis, c2, p2, p2 + ng};
                int r1 = kv_gw_quantize_ref(x, ld, &a), r2 = kv_gw_quantize_avx2(x, ld, &b);
                CHECK(r1 == 0 && r2 == 0, "quantize failed (%d, %d)", r1, r2);
                CHECK(memcmp(c1, c2, nb) == 0 && memcmp(p1, p2, 4 * ng) == 0,
                      "bits %d group %d axis %d: SIMD bytes differ from the reference", bits[bi], groups[gi], axis);
                kv_gw_dequantize_ref(&a, d1, cols);
                kv_gw_dequantize_avx2(&a, d2, cols);
                CHECK(memcmp(d1, d2, rows * cols * 4) == 0, "bits %d group %d axis %d: SIMD dequantize differs",
                      bits[bi], groups[gi], axis);
                free(c1);
                free(c2);
                free(p1);
                free(p2);
            }
    x[77 * ld + 3] = NAN;
    {
        uint8_t c[128 * 128];
        uint16_t p[2 * 128 * 4];
        ccomp_kv_gw a = {rows, cols, 4, 32, 1, c, p, p + 512};
        CHECK(kv_gw_quantize_avx2(x, ld, &a) == -1, "SIMD path accepts NaN");
        a.axis = 0;
        CHECK(kv_gw_quantize_avx2(x, ld, &a) == -1, "SIMD path accepts NaN (per channel)");
    }
    free(x);
    free(d1);
    free(d2);
}

/* The vectorised softmax against exp in double. */
static void test_softmax(void)
{
    const size_t n = 1003;
    float *s = (float *)malloc(n * sizeof(float)), *x = (float *)malloc(n * sizeof(float));
    double mx = -1e300, z = 0, worst = 0;
    float zs;
    size_t i;
    if (!kv_avx2_ok()) {
        free(s);
        free(x);
        return;
    }
    for (i = 0; i < n; i++) x[i] = s[i] = (float)(gauss() * 30.0);
    zs = kv_softmax_avx2(s, n, 0.7f);
    for (i = 0; i < n; i++) mx = fmax(mx, (double)(x[i] * 0.7f));
    for (i = 0; i < n; i++) {
        const float arg = x[i] * 0.7f - (float)mx; /* the float argument both compute */
        double e = exp((double)arg);
        z += e;
        if (e > 1e-30) worst = fmax(worst, fabs(s[i] - e) / e);
    }
    CHECK(worst < 5e-7, "softmax: relative error %g", worst);
    CHECK(fabs(zs - z) / z < 1e-6, "softmax: sum %g vs %g", (double)zs, z);
    free(s);
    free(x);
}

static void test_errors(void)
{
    const size_t rows = 64, cols = 64;
    float *x = make(rows, cols);
    uint8_t codes[64 * 64];
    uint16_t sz[2 * 64 * 2];
    ccomp_kv_gw q = {rows, cols, 4, 32, CCOMP_KV_PER_TOKEN, codes, sz, sz + 128};
    ccomp_error err;
    CHECK(ccomp_kv_gw_check(rows, cols, 5, 32, 0, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 5"), "bits 5");
    CHECK(ccomp_kv_gw_check(rows, 48, 4, 32, 1, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 48"), "cols 48");
    CHECK(ccomp_kv_gw_check(40, cols, 4, 32, 0, &err) == CCOMP_ERR_VALUE, "rows 40 per channel");
    x[9 * cols + 7] = NAN;
    CHECK(ccomp_kv_gw_quantize(x, cols, &q, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "token 9, channel 7"),
          "NaN: %s", err.msg);
    CHECK(ccomp_kv_sparse_check(rows, 96, 0.5, &err) == CCOMP_ERR_VALUE, "sparse cols 96");
    CHECK(ccomp_kv_sparse_check(rows, cols, 1.0, &err) == CCOMP_ERR_VALUE, "sparsity 1");
    CHECK(ccomp_kv_gear_check(rows, cols, 2, 32, 1, 0.02, 65, 2, &err) == CCOMP_ERR_VALUE, "rank 65");
    CHECK(ccomp_kv_gear_check(rows, cols, 2, 32, 1, 0.02, -1, 2, &err) == CCOMP_ERR_VALUE, "rank -1");
    free(x);
}

/* attention over dequantized dense tensors, in double */
static void dense_attention(const float *q, size_t D, const float *K, const float *V, size_t T, float scale,
                            double *out)
{
    double *s = (double *)malloc(T * sizeof(double)), mx = -1e300, z = 0;
    size_t t, j;
    for (t = 0; t < T; t++) {
        double a = 0;
        for (j = 0; j < D; j++) a += (double)q[j] * K[t * D + j];
        s[t] = a * scale;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (j = 0; j < D; j++) out[j] = 0;
    for (t = 0; t < T; t++) {
        double p = exp(s[t] - mx);
        z += p;
        for (j = 0; j < D; j++) out[j] += p * V[t * D + j];
    }
    for (j = 0; j < D; j++) out[j] /= z;
    free(s);
}

/* Keys: groupwise (per channel) then GEAR then dense; values: q4_0 then sparse then dense, with
 * different split points; two K/V heads, four query heads. */
static void test_attention_chain(int quick)
{
    const size_t D = 64, T1 = quick ? 64 : 256, T2 = 64, T3 = 5, T = T1 + T2 + T3, G = 2, H = 4;
    const float scale = 0.125f;
    size_t g, h, j;
    float *K[2], *V[2], *Kd[2], *Vd[2], *q = make(H, D), *out = (float *)malloc(H * D * sizeof(float));
    ccomp_kv_slice ks[2][3], vs[2][3];
    ccomp_kv_gw kgw[2];
    ccomp_kv_gear kgear[2];
    ccomp_kv_sparse vsp[2];
    void *bufs[2][16];
    int nb[2] = {0, 0};
    ccomp_error err;
    for (g = 0; g < G; g++) {
        size_t ng1 = ccomp_kv_gw_groups(T1, D, 32, 0), ng2 = ccomp_kv_gw_groups(T2, D, 32, 1);
        size_t per = ccomp_kv_outliers_per_row(D, 0.05), vsplit = T1 + 3;
        int *n = &nb[g];
        K[g] = make(T, D);
        V[g] = make(T, D);
        Kd[g] = (float *)malloc(T * D * sizeof(float));
        Vd[g] = (float *)malloc(T * D * sizeof(float));
        /* keys [0, T1): groupwise 4-bit per channel */
        kgw[g] = (ccomp_kv_gw){T1, D, 4, 32, 0, NULL, NULL, NULL};
        bufs[g][(*n)++] = kgw[g].codes = (uint8_t *)malloc(ccomp_kv_gw_code_bytes(T1, D, 4));
        bufs[g][(*n)++] = kgw[g].scale = (uint16_t *)malloc(ng1 * 2);
        bufs[g][(*n)++] = kgw[g].zero = (uint16_t *)malloc(ng1 * 2);
        CHECK(ccomp_kv_gw_quantize(K[g], D, &kgw[g], &err) == CCOMP_OK, "%s", err.msg);
        ccomp_kv_gw_dequantize(&kgw[g], Kd[g], D);
        /* keys [T1, T1 + T2): GEAR 2-bit per token, outliers, rank 3 */
        memset(&kgear[g], 0, sizeof kgear[g]);
        kgear[g].backbone = (ccomp_kv_gw){T2, D, 2, 32, 1, NULL, NULL, NULL};
        bufs[g][(*n)++] = kgear[g].backbone.codes = (uint8_t *)malloc(ccomp_kv_gw_code_bytes(T2, D, 2));
        bufs[g][(*n)++] = kgear[g].backbone.scale = (uint16_t *)malloc(ng2 * 2);
        bufs[g][(*n)++] = kgear[g].backbone.zero = (uint16_t *)malloc(ng2 * 2);
        kgear[g].outliers = (ccomp_kv_outliers){T2, D, per, NULL, NULL};
        bufs[g][(*n)++] = kgear[g].outliers.idx = (uint16_t *)malloc(T2 * per * 2);
        bufs[g][(*n)++] = kgear[g].outliers.vals = (uint16_t *)malloc(T2 * per * 2);
        kgear[g].rank = 3;
        bufs[g][(*n)++] = kgear[g].U = (uint16_t *)malloc(T2 * 3 * 2);
        bufs[g][(*n)++] = kgear[g].W = (uint16_t *)malloc(D * 3 * 2);
        CHECK(ccomp_kv_gear_quantize(K[g] + T1 * D, D, &kgear[g], 2, 99, &err) == CCOMP_OK, "%s", err.msg);
        ccomp_kv_gear_dequantize(&kgear[g], Kd[g] + T1 * D, D);
        memcpy(Kd[g] + (T1 + T2) * D, K[g] + (T1 + T2) * D, T3 * D * sizeof(float));
        ks[g][0] = (ccomp_kv_slice){CCOMP_KV_M_GROUPWISE, &kgw[g], T1, D, &ks[g][1]};
        ks[g][1] = (ccomp_kv_slice){CCOMP_KV_M_GEAR, &kgear[g], T2, D, &ks[g][2]};
        ks[g][2] = (ccomp_kv_slice){CCOMP_KV_M_DENSE, K[g] + (T1 + T2) * D, T3, D, NULL};
        /* values [0, vsplit): q4_0; [vsplit, T - 2): bitmap sparse 70%; then dense */
        {
            uint8_t *blocks = (uint8_t *)malloc(ccomp_kv_ggml_bytes(vsplit, D, CCOMP_KV_Q4_0));
            bufs[g][(*n)++] = blocks;
            vs[g][0].data = blocks;
            CHECK(ccomp_kv_ggml_quantize(V[g], vsplit, D, D, CCOMP_KV_Q4_0, blocks, &err) == CCOMP_OK, "%s", err.msg);
            ccomp_kv_ggml_dequantize(blocks, vsplit, D, CCOMP_KV_Q4_0, Vd[g], D);
        }
        vsp[g] = (ccomp_kv_sparse){T - 2 - vsplit, D, 0.7, NULL, NULL, NULL, 0};
        bufs[g][(*n)++] = vsp[g].bitmaps = (uint64_t *)malloc(ccomp_kv_sparse_tiles(vsp[g].rows, D) * 8);
        bufs[g][(*n)++] = vsp[g].offsets = (uint32_t *)malloc((ccomp_kv_sparse_tiles(vsp[g].rows, D) + 1) * 4);
        bufs[g][(*n)++] = vsp[g].values = (uint16_t *)malloc(ccomp_kv_sparse_nnz(vsp[g].rows, D, 0.7) * 2 + 2);
        CHECK(ccomp_kv_sparse_quantize(V[g] + vsplit * D, D, &vsp[g], &err) == CCOMP_OK, "%s", err.msg);
        ccomp_kv_sparse_dequantize(&vsp[g], Vd[g] + vsplit * D, D);
        memcpy(Vd[g] + (T - 2) * D, V[g] + (T - 2) * D, 2 * D * sizeof(float));
        vs[g][0] = (ccomp_kv_slice){CCOMP_KV_M_Q4_0, vs[g][0].data, vsplit, D, &vs[g][1]};
        vs[g][1] = (ccomp_kv_slice){CCOMP_KV_M_SPARSE, &vsp[g], vsp[g].rows, D, &vs[g][2]};
        vs[g][2] = (ccomp_kv_slice){CCOMP_KV_M_DENSE, V[g] + (T - 2) * D, 2, D, NULL};
        CHECK(rel_err(Kd[g], K[g], T, D, D) < 0.05, "keys: relative error %g", rel_err(Kd[g], K[g], T, D, D));
        CHECK(rel_err(Vd[g], V[g], T, D, D) < 0.1, "values: relative error %g", rel_err(Vd[g], V[g], T, D, D));
    }
    {
        ccomp_kv_slice kh[2] = {ks[0][0], ks[1][0]}, vh[2] = {vs[0][0], vs[1][0]};
        CHECK(ccomp_kv_slice_rows(&kh[0]) == T && ccomp_kv_slice_rows(&vh[1]) == T, "chain rows");
        CHECK(ccomp_kv_attention(q, H, 1, D, kh, vh, G, scale, out, 2, &err) == CCOMP_OK, "%s", err.msg);
        for (h = 0; h < H; h++) {
            double ref[64], worst = 0;
            g = h / (H / G);
            dense_attention(q + h * D, D, Kd[g], Vd[g], T, scale, ref);
            for (j = 0; j < D; j++) worst = fmax(worst, fabs(ref[j] - out[h * D + j]));
            CHECK(worst < 2e-5, "head %zu: attention differs from dense by %g", h, worst);
        }
        CHECK(ccomp_kv_attention(q, 3, 1, D, kh, vh, G, scale, out, 1, &err) == CCOMP_ERR_VALUE, "H %% G");
        /* the multi-query path: 2 heads x 3 query tokens per K/V head, tiles across segment ends */
        {
            float *q6 = make(2 * 2 * 3, D), *out6 = (float *)malloc(2 * 2 * 3 * D * sizeof(float));
            CHECK(ccomp_kv_attention(q6, 4, 3, D, kh, vh, G, scale, out6, 2, &err) == CCOMP_OK, "%s", err.msg);
            for (h = 0; h < 12; h++) {
                double ref[64], worst = 0;
                g = (h / 3) / 2;
                dense_attention(q6 + h * D, D, Kd[g], Vd[g], T, scale, ref);
                for (j = 0; j < D; j++) worst = fmax(worst, fabs(ref[j] - out6[h * D + j]));
                CHECK(worst < 2e-5, "multi-query %zu: attention differs from dense by %g", h, worst);
            }
            free(q6);
            free(out6);
        }
    }
    for (g = 0; g < G; g++) {
        int i;
        for (i = 0; i < nb[g]; i++) free(bufs[g][i]);
        free(K[g]);
        free(V[g]);
        free(Kd[g]);
        free(Vd[g]);
    }
    free(q);
    free(out);
}

/* Hostile input at the core (issue #13): a chain whose later segment has another head dim is refused (it
 * overflowed the tile buffer), groupwise head dims beyond the kernels' scratch are refused, q8_0/q4_0 name the
 * element whose fp16 block scale would overflow, 0-row slices quantize, and turbo QJL keys longer than one
 * score step give the scores of one pass. */
static void test_hostile(void)
{
    enum { D = 64, T = 4 };
    float k0[T * D], k1[T * 2 * D], v0[T * D], q[2 * D], out[2 * D], x[2 * 32 * 64];
    ccomp_kv_slice ks[2], vs[2];
    ccomp_error err;
    uint8_t blocks[2 * 2 * 34];
    size_t i;
    for (i = 0; i < T * D; i++) k0[i] = v0[i] = gauss();
    for (i = 0; i < 2 * T * D; i++) k1[i] = gauss();
    for (i = 0; i < 2 * D; i++) q[i] = gauss();
    memset(ks, 0, sizeof ks);
    memset(vs, 0, sizeof vs);
    ks[0] = (ccomp_kv_slice){CCOMP_KV_M_DENSE, k0, T, D, &ks[1]};
    ks[1] = (ccomp_kv_slice){CCOMP_KV_M_DENSE, k1, T, 2 * D, NULL};
    vs[0] = (ccomp_kv_slice){CCOMP_KV_M_DENSE, v0, T, D, &vs[1]};
    vs[1] = (ccomp_kv_slice){CCOMP_KV_M_DENSE, v0, T, D, NULL};
    CHECK(ccomp_kv_attention(q, 1, 1, D, ks, vs, 1, 1.0f, out, 1, &err) == CCOMP_ERR_VALUE &&
              strstr(err.msg, "K segment 1 has head dim 128"), "K chain of two head dims accepted: %s", err.msg);
    ks[1].cols = D;
    vs[1] = (ccomp_kv_slice){CCOMP_KV_M_DENSE, k1, T, 2 * D, NULL};
    CHECK(ccomp_kv_attention(q, 1, 1, D, ks, vs, 1, 1.0f, out, 1, &err) == CCOMP_ERR_VALUE &&
              strstr(err.msg, "V segment 1 has head dim 128"), "V chain of two head dims accepted: %s", err.msg);
    CHECK(ccomp_kv_gw_check(32, 2048, 4, 32, 1, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "up to 1024"),
          "groupwise head dim 2048 accepted");
    for (i = 0; i < 2 * 32 * 64; i++) x[i] = gauss();
    x[1 * 64 + 37] = 8.4e6f;
    CHECK(ccomp_kv_ggml_quantize(x, 2, 64, 64, CCOMP_KV_Q8_0, blocks, &err) == CCOMP_ERR_VALUE &&
              strstr(err.msg, "token 1, channel 37") && strstr(err.msg, "8.4e+06"), "q8_0 overflow: %s", err.msg);
    x[1 * 64 + 37] = 8.3e6f;
    CHECK(ccomp_kv_ggml_quantize(x, 2, 64, 64, CCOMP_KV_Q8_0, blocks, &err) == CCOMP_OK, "q8_0 8.3e6 refused");
    x[1 * 64 + 37] = -5.3e5f;
    CHECK(ccomp_kv_ggml_quantize(x, 2, 64, 64, CCOMP_KV_Q4_0, blocks, &err) == CCOMP_ERR_VALUE &&
              strstr(err.msg, "token 1, channel 37"), "q4_0 overflow: %s", err.msg);
    {
        uint64_t bm[1];
        uint32_t off[1] = {7};
        uint16_t vals[1];
        ccomp_kv_sparse sp = {0, 64, 0.5, bm, off, vals, 5};
        CHECK(ccomp_kv_sparse_quantize(x, 64, &sp, &err) == CCOMP_OK && off[0] == 0 && sp.nnz == 0,
              "sparse quantize of 0 rows");
    }
    {
        /* turbo keys with QJL, 9000 rows: one pass of ccomp_kv_turbo_scores vs attention's stepped scores */
        const size_t rows = 9000, d = 16;
        float *kx = (float *)malloc(rows * d * sizeof(float)), *s1 = (float *)malloc(rows * sizeof(float));
        float *m = (float *)malloc(d * d * sizeof(float)), o1[16], vone[16];
        uint8_t *codes = (uint8_t *)malloc(rows * d), *signs = (uint8_t *)malloc(rows * d / 8);
        float *norms = (float *)malloc(rows * sizeof(float)), *rn = (float *)malloc(rows * sizeof(float));
        float *ones = (float *)malloc(rows * d * sizeof(float));
        ccomp_kv_turbo tb = {rows, d, 2, 1, 42, codes, norms, signs, rn, m};
        ccomp_kv_slice kt = {CCOMP_KV_M_TURBO, &tb, rows, d, NULL}, vd = {CCOMP_KV_M_DENSE, ones, rows, d, NULL};
        double ref_o = 0.0, z = 0.0, mx = -1e30;
        size_t t;
        for (i = 0; i < rows * d; i++) kx[i] = gauss(), ones[i] = 1.0f;
        for (i = 0; i < d; i++) vone[i] = gauss();
        ccomp_kv_turbo_qjl_matrix(42, d, m);
        CHECK(ccomp_kv_turbo_quantize(kx, d, &tb, &err) == CCOMP_OK, "turbo quantize: %s", err.msg);
        ccomp_kv_turbo_scores(&tb, vone, s1);
        /* V row t = (t, 1, 1, ...): output[0] is the softmax-weighted mean of t, which every score shapes */
        for (t = 0; t < rows; t++) mx = s1[t] > mx ? s1[t] : mx;
        for (t = 0; t < rows; t++) {
            double e = exp((double)s1[t] - mx);
            z += e;
            ref_o += e * (double)t;
            ones[t * d] = (float)t;
        }
        CHECK(ccomp_kv_attention(vone, 1, 1, d, &kt, &vd, 1, 1.0f, o1, 1, &err) == CCOMP_OK, "%s", err.msg);
        CHECK(fabs(o1[0] - ref_o / z) < 1e-3 * (ref_o / z), "QJL scores past one step: %g vs %g", (double)o1[0],
              ref_o / z);
        free(kx);
        free(s1);
        free(m);
        free(codes);
        free(signs);
        free(norms);
        free(rn);
        free(ones);
    }
}

/* The method table: a row per id with its name and kernels; quantizing through a row gives the bytes of the
 * method's own function; the ggml blocks are the sizes ggml declares. */
static void test_method_table(void)
{
    static const char *const names[] = {"dense", "groupwise", "q8_0", "q4_0", "turbo", "bitmap_sparse", "gear"};
    const size_t T = 4, D = 64;
    float x[4 * 64];
    uint8_t direct[4 * 2 * 34];
    void *arrays[CCOMP_KV_MAX_ARRAYS];
    ccomp_kv_params p;
    ccomp_kv_layout L;
    ccomp_kv_view v;
    ccomp_error err;
    size_t i;
    int id;
    CHECK(CCOMP_KV_M_COUNT == 7, "7 methods, got %d", CCOMP_KV_M_COUNT);
    CHECK(sizeof(ccomp_kv_block_q8_0) == 34 && sizeof(ccomp_kv_block_q4_0) == 18, "ggml block sizes");
    CHECK(ccomp_kv_method_get(-1) == NULL && ccomp_kv_method_get(CCOMP_KV_M_COUNT) == NULL, "ids out of range");
    for (id = 0; id < CCOMP_KV_M_COUNT; id++) {
        const ccomp_kv_method *m = ccomp_kv_method_get(id);
        CHECK(m != NULL && strcmp(m->name, names[id]) == 0, "method %d is %s", id, m ? m->name : "missing");
        CHECK(m && m->layout && m->view && m->scores && m->accum && m->sub && m->rows && m->accum_steps_exact &&
                  m->scores_are_dots,
              "method %d lacks a kernel", id);
        CHECK(m && (id == CCOMP_KV_M_DENSE) == (m->quantize == NULL), "method %d: only dense has no quantizer", id);
    }
    memset(&p, 0, sizeof p);
    CHECK(ccomp_kv_layout_init(42, T, D, &p, &L, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "unknown method"),
          "unknown id: %s", err.msg);
    CHECK(ccomp_kv_layout_init(CCOMP_KV_M_Q8_0, T, 48, &p, &L, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "32"),
          "q8_0 with head dim 48: %s", err.msg);
    for (i = 0; i < T * D; i++) x[i] = gauss();
    for (id = CCOMP_KV_M_Q8_0; id <= CCOMP_KV_M_Q4_0; id++) {
        const ccomp_kv_method *m = ccomp_kv_method_get(id);
        const int type = id == CCOMP_KV_M_Q8_0 ? CCOMP_KV_Q8_0 : CCOMP_KV_Q4_0;
        CHECK(ccomp_kv_layout_init(id, T, D, &p, &L, &err) == CCOMP_OK && L.n == 1 &&
                  L.count[0] == T * (D / 32) * CCOMP_KV_GGML_BLOCK_BYTES(type),
              "%s layout", m->name);
        arrays[0] = calloc(L.count[0], 1);
        memset(&v, 0, sizeof v);
        v.slice.method = id, v.slice.rows = T, v.slice.cols = D;
        m->view(&L, arrays, NULL, &v);
        CHECK(m->quantize(&L, x, D, &v.slice, &err) == CCOMP_OK, "%s quantize: %s", m->name, err.msg);
        CHECK(ccomp_kv_ggml_quantize(x, T, D, D, type, direct, &err) == CCOMP_OK &&
                  memcmp(direct, arrays[0], L.count[0]) == 0,
              "%s: the table's bytes differ from ccomp_kv_ggml_quantize's", m->name);
        free(arrays[0]);
    }
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    test_method_table();
    test_groupwise();
    test_simd_equals_ref();
    test_softmax();
    test_errors();
    test_attention_chain(quick);
    test_hostile();
    if (test_failures) {
        fprintf(stderr, "test_kv: %d checks failed\n", test_failures);
        return 1;
    }
    printf("test_kv: all passed\n");
    return 0;
}

/* C tests of the token-similarity core (ccomp/tokens.h): top-k against a brute force over the
 * exact similarity, on random keys, keys with many bit-identical copies (near-ties everywhere),
 * zero keys and keys with one huge channel (a loose int8 bound); float32, float64 and float16 keys;
 * repeated candidates; every screen (float32, int8 where the CPU has it, auto) and any thread count
 * give the same bytes; bad indices, k, offsets and screens are refused.  `--quick` shrinks the sizes
 * (sanitizer runs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/cpu.h"
#include "ccomp/half.h"
#include "ccomp/tokens.h"

#include "check.h"

static uint64_t rng = 0x243F6A8885A308D3ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53;
}

/* brute force: the k best of row `me` among cols, by (exact value desc, index asc) */
static void brute(const void *keys, int dtype, size_t N, size_t D, size_t b, size_t me, const int64_t *cols,
                  size_t nc, int excl, size_t k, int64_t *oi, float *ov)
{
    size_t t, q;
    for (t = 0; t < k; t++) {
        oi[t] = -1;
        ov[t] = -INFINITY;
    }
    for (q = 0; q < nc; q++) {
        int64_t c = cols[q];
        float v;
        if (excl && (size_t)c == me) continue;
        v = ccomp_tokens_similarity(keys, dtype, N, D, b, me, (size_t)c);
        for (t = 0; t < k; t++)
            if (oi[t] < 0 || v > ov[t] || (v == ov[t] && c < oi[t])) {
                memmove(oi + t + 1, oi + t, (k - t - 1) * sizeof *oi);
                memmove(ov + t + 1, ov + t, (k - t - 1) * sizeof *ov);
                oi[t] = c;
                ov[t] = v;
                break;
            }
    }
}

/* kind 0: random; 1: 70% copies of 3 keys plus small perturbations of them; 2: some zero keys;
 * 3: channel 0 a thousand times the others */
static void *make_keys(int dtype, size_t B, size_t N, size_t D, int kind)
{
    size_t w = dtype == CCOMP_TOKENS_F32 ? 4 : dtype == CCOMP_TOKENS_F16 ? 2 : 8, b, i, d;
    unsigned char *p = malloc(B * N * D * w);
    for (b = 0; b < B; b++)
        for (i = 0; i < N; i++)
            for (d = 0; d < D; d++) {
                double v = urand() * 2.0 - 1.0;
                if (kind == 1 && i % 10 < 7) v = (double)((i % 3) + 1) * (d % 5 == 0 ? 1.0 : -0.5);
                if (kind == 1 && i % 10 == 7) v = (double)((i % 3) + 1) * (d % 5 == 0 ? 1.0 : -0.5) + 1e-6 * v;
                if (kind == 2 && i % 4 == 0) v = 0.0;
                if (kind == 3 && d == 0) v = 1000.0 + 10.0 * v;
                if (dtype == CCOMP_TOKENS_F32)
                    ((float *)p)[(b * N + i) * D + d] = (float)v;
                else if (dtype == CCOMP_TOKENS_F16)
                    ((uint16_t *)p)[(b * N + i) * D + d] = ccomp_f32_to_f16((float)v);
                else
                    ((double *)p)[(b * N + i) * D + d] = v;
            }
    return p;
}

static int int8_ok(int dtype)
{
    return (ccomp_cpu_features() & CCOMP_CPU_AVX512VNNI) && dtype != CCOMP_TOKENS_F64;
}

static void check_case(int dtype, size_t B, size_t N, size_t D, int kind, size_t k, int excl, int screen)
{
    void *keys = make_keys(dtype, B, N, D, kind);
    size_t *ro = malloc((B + 1) * sizeof *ro), *co = malloc((B + 1) * sizeof *co), b, i, t;
    int64_t *rows = malloc(B * N * sizeof *rows), *cols = malloc(B * N * sizeof *cols);
    size_t nr = 0, nc = 0;
    ro[0] = co[0] = 0;
    /* queries: every third token; candidates: all tokens but every fifth (a proper subset), and without
     * exclusion every seventh token twice */
    if (!excl) cols = realloc(cols, 2 * B * N * sizeof *cols);
    for (b = 0; b < B; b++) {
        for (i = 0; i < N; i += 3) rows[nr++] = (int64_t)i;
        for (i = 0; i < N; i++) {
            if (i % 5 != 4 || !excl) cols[nc++] = (int64_t)i;
            if (!excl && i % 7 == 0) cols[nc++] = (int64_t)i;
        }
        ro[b + 1] = nr;
        co[b + 1] = nc;
    }
    int64_t *oi1 = malloc(nr * k * sizeof *oi1), *oi3 = malloc(nr * k * sizeof *oi3), *bi = malloc(k * sizeof *bi);
    float *ov1 = malloc(nr * k * sizeof *ov1), *ov3 = malloc(nr * k * sizeof *ov3), *bv = malloc(k * sizeof *bv);
    ccomp_error err;
    CHECK(ccomp_tokens_topk(keys, dtype, B, N, D, rows, ro, cols, co, excl, k, screen, oi1, ov1, 1, &err) == CCOMP_OK,
          "topk failed: %s", err.msg);
    CHECK(ccomp_tokens_topk(keys, dtype, B, N, D, rows, ro, cols, co, excl, k, screen, oi3, ov3, 3, &err) == CCOMP_OK,
          "topk (3 threads) failed: %s", err.msg);
    CHECK(memcmp(oi1, oi3, nr * k * sizeof *oi1) == 0 && memcmp(ov1, ov3, nr * k * sizeof *ov1) == 0,
          "1 and 3 threads differ (dtype %d, kind %d, k %zu, screen %d)", dtype, kind, k, screen);
    int bad = 0;
    for (b = 0; b < B; b++)
        for (i = ro[b]; i < ro[b + 1]; i++) {
            brute(keys, dtype, N, D, b, (size_t)rows[i], cols + co[b], co[b + 1] - co[b], excl, k, bi, bv);
            for (t = 0; t < k; t++)
                if (bi[t] != oi1[i * k + t] || !(bv[t] == ov1[i * k + t] || (isinf(bv[t]) && isinf(ov1[i * k + t]))))
                    bad++;
        }
    CHECK(bad == 0,
          "%d top-k entries differ from the brute force (dtype %d, B %zu, N %zu, D %zu, kind %d, k %zu, screen %d)",
          bad, dtype, B, N, D, kind, k, screen);
    free(keys);
    free(ro);
    free(co);
    free(rows);
    free(cols);
    free(oi1);
    free(oi3);
    free(bi);
    free(ov1);
    free(ov3);
    free(bv);
}

static void check_errors(void)
{
    float keys[2 * 3 * 4] = {0};
    int64_t rows[3] = {0, 1, 2}, bad_rows[1] = {3}, oi[9];
    size_t ro[3] = {0, 3, 3}, co[3] = {0, 3, 3}, ro1[3] = {0, 1, 1}, dec[3] = {0, 3, 2};
    float ov[9];
    ccomp_error err;
    CHECK(ccomp_tokens_topk(keys, CCOMP_TOKENS_F32, 2, 3, 4, bad_rows, ro1, rows, co, 1, 1, 0, oi, ov, 1, &err) ==
              CCOMP_ERR_VALUE, "row index out of range accepted");
    CHECK(ccomp_tokens_topk(keys, CCOMP_TOKENS_F32, 2, 3, 4, rows, ro, rows, co, 1, 0, 0, oi, ov, 1, &err) ==
              CCOMP_ERR_VALUE, "k = 0 accepted");
    CHECK(ccomp_tokens_topk(keys, 7, 2, 3, 4, rows, ro, rows, co, 1, 1, 0, oi, ov, 1, &err) == CCOMP_ERR_VALUE,
          "unknown dtype accepted");
    CHECK(ccomp_tokens_topk(keys, CCOMP_TOKENS_F32, 2, 3, 4, rows, dec, rows, co, 1, 1, 0, oi, ov, 1, &err) ==
              CCOMP_ERR_VALUE, "decreasing offsets accepted");
    CHECK(ccomp_tokens_topk(keys, CCOMP_TOKENS_F32, 2, 3, 4, rows, ro, rows, co, 1, 1, 0, oi, ov, 0, &err) ==
              CCOMP_ERR_VALUE, "threads = 0 accepted");
    CHECK(ccomp_tokens_topk(keys, CCOMP_TOKENS_F32, 2, 3, 4, rows, ro, rows, co, 1, 1, 3, oi, ov, 1, &err) ==
              CCOMP_ERR_VALUE, "screen 3 accepted");
    CHECK(ccomp_tokens_topk(keys, CCOMP_TOKENS_F64, 2, 3, 2, rows, ro, rows, co, 1, 1, CCOMP_TOKENS_SCREEN_INT8, oi, ov,
                            1, &err) == CCOMP_ERR_VALUE, "the int8 screen accepted float64 keys");
    /* zero keys: similarity 0 everywhere, ties to the lower index; k beyond the candidates: -1 / -inf */
    CHECK(ccomp_tokens_topk(keys, CCOMP_TOKENS_F32, 2, 3, 4, rows, ro, rows, co, 1, 3, 0, oi, ov, 2, &err) == CCOMP_OK,
          "zero keys failed: %s", err.msg);
    /* row 0 (token 0): candidates 1, 2 then none */
    CHECK(oi[0] == 1 && oi[1] == 2 && oi[2] == -1 && ov[0] == 0.0f && isinf(ov[2]), "zero keys: got %lld %lld %lld",
          (long long)oi[0], (long long)oi[1], (long long)oi[2]);
}

/* gather_sum against a plain loop (float32, float16, float64 tokens; float64 and float32 output; with and
 * without weights and divisors; 1 and 3 threads), and its refusals */
static void check_gather_sum(void)
{
    const size_t B = 3, N = 40, D = 11, M = 200, n_out = 17;
    int64_t bsel[200], rows[200], dst[200];
    double w[200], div[17], want[17 * 11], got[17 * 11];
    float got32[17 * 11];
    ccomp_error err;
    int dtype, t, weighted;
    size_t i, d;
    for (i = 0; i < M; i++) {
        bsel[i] = (int64_t)(urand() * B);
        rows[i] = (int64_t)(urand() * N);
        dst[i] = (int64_t)(urand() * n_out);
        w[i] = urand() * 2.0 - 0.5;
    }
    for (i = 0; i < n_out; i++) div[i] = urand() + 0.5;
    for (dtype = 0; dtype < 3; dtype++) {
        void *x = make_keys(dtype, B, N, D, 0);
        for (weighted = 0; weighted < 2; weighted++) {
            memset(want, 0, sizeof want);
            for (i = 0; i < M; i++)
                for (d = 0; d < D; d++) {
                    const size_t at = ((size_t)bsel[i] * N + (size_t)rows[i]) * D + d;
                    const double v = dtype == CCOMP_TOKENS_F32   ? (double)((float *)x)[at]
                                     : dtype == CCOMP_TOKENS_F16 ? (double)ccomp_f16_to_f32(((uint16_t *)x)[at])
                                                                 : ((double *)x)[at];
                    want[dst[i] * D + d] += (weighted ? w[i] : 1.0) * v;
                }
            for (i = 0; i < n_out * D; i++) want[i] /= div[i / D];
            for (t = 1; t <= 3; t += 2) {
                CHECK(ccomp_tokens_gather_sum(x, dtype, B, N, D, bsel, rows, dst, weighted ? w : NULL, M, div, got,
                                              CCOMP_TOKENS_F64, n_out, t, &err) == CCOMP_OK,
                      "gather_sum failed: %s", err.msg);
                CHECK(memcmp(got, want, sizeof want) == 0, "gather_sum differs (dtype %d, weighted %d, %d threads)",
                      dtype, weighted, t);
                CHECK(ccomp_tokens_gather_sum(x, dtype, B, N, D, bsel, rows, dst, weighted ? w : NULL, M, div, got32,
                                              CCOMP_TOKENS_F32, n_out, t, &err) == CCOMP_OK,
                      "gather_sum (float32) failed: %s", err.msg);
                for (i = 0; i < n_out * D; i++)
                    CHECK(got32[i] == (float)want[i], "gather_sum float32 output %zu differs", i);
            }
        }
        free(x);
    }
    {   /* take: plain row copies */
        float *x = make_keys(CCOMP_TOKENS_F32, B, N, D, 0), *o = malloc(M * D * sizeof(float));
        CHECK(ccomp_tokens_take(x, D * sizeof(float), B, N, bsel, rows, M, o, 3, &err) == CCOMP_OK, "take failed: %s",
              err.msg);
        for (i = 0; i < M; i++)
            CHECK(memcmp(o + i * D, x + ((size_t)bsel[i] * N + (size_t)rows[i]) * D, D * sizeof(float)) == 0,
                  "take row %zu differs", i);
        rows[3] = -1;
        CHECK(ccomp_tokens_take(x, D * sizeof(float), B, N, bsel, rows, M, o, 1, &err) == CCOMP_ERR_VALUE,
              "take of row -1 accepted");
        rows[3] = 0;
        free(x);
        free(o);
    }
    rows[5] = (int64_t)N;
    CHECK(ccomp_tokens_gather_sum(got, CCOMP_TOKENS_F64, B, N, D, bsel, rows, dst, NULL, M, NULL, got,
                                  CCOMP_TOKENS_F64, n_out, 1, &err) == CCOMP_ERR_VALUE, "row out of range accepted");
    rows[5] = 0;
    dst[7] = -1;
    CHECK(ccomp_tokens_gather_sum(got, CCOMP_TOKENS_F64, B, N, D, bsel, rows, dst, NULL, M, NULL, got,
                                  CCOMP_TOKENS_F64, n_out, 1, &err) == CCOMP_ERR_VALUE, "output row -1 accepted");
    dst[7] = 0;
    CHECK(ccomp_tokens_gather_sum(got, CCOMP_TOKENS_F64, B, N, D, bsel, rows, dst, NULL, M, NULL, got,
                                  CCOMP_TOKENS_F16, n_out, 1, &err) == CCOMP_ERR_VALUE, "float16 output accepted");
}

/* Keys times 2^k (exact) give the same answer as the keys themselves in every screen, also where the
 * squares would overflow or underflow (float64 1e154 / 1e-160, float32 near 2^100 or subnormal) */
static void check_extreme_scales(void)
{
    enum { N = 40, D = 12 };
    static const int exps64[] = {520, 1000, -540, -1000}, exps32[] = {100, -100, -135};
    double k64[N * D], s64[N * D];
    float k32[N * D], s32[N * D];
    int64_t rows[N], oi0[N * 3], oi[N * 3];
    size_t off[2] = {0, N}, i, e;
    float ov0[N * 3], ov[N * 3];
    ccomp_error err;
    int screen;
    for (i = 0; i < N; i++) rows[i] = (int64_t)i;
    for (i = 0; i < N * D; i++) k32[i] = (float)(k64[i] = urand() - 0.5);
    for (i = D; i < 2 * D; i++) k64[i] = k64[i - D]; /* a tie */
    for (e = 0; e < sizeof exps64 / sizeof *exps64; e++) {
        for (i = 0; i < N * D; i++) s64[i] = ldexp(k64[i], exps64[e]);
        CHECK(ccomp_tokens_topk(k64, CCOMP_TOKENS_F64, 1, N, D, rows, off, rows, off, 1, 3, 0, oi0, ov0, 1, &err) ==
                  CCOMP_OK, "float64 keys: %s", err.msg);
        CHECK(ccomp_tokens_topk(s64, CCOMP_TOKENS_F64, 1, N, D, rows, off, rows, off, 1, 3, 0, oi, ov, 1, &err) ==
                  CCOMP_OK, "float64 keys times 2^%d: %s", exps64[e], err.msg);
        CHECK(memcmp(oi, oi0, sizeof oi) == 0 && memcmp(ov, ov0, sizeof ov) == 0,
              "float64 keys times 2^%d: another answer", exps64[e]);
        CHECK(ccomp_tokens_similarity(s64, CCOMP_TOKENS_F64, N, D, 0, 0, 1) == ov0[0] || oi0[0] != 1,
              "the similarity of float64 keys times 2^%d", exps64[e]);
    }
    for (screen = CCOMP_TOKENS_SCREEN_AUTO; screen <= CCOMP_TOKENS_SCREEN_INT8; screen++) {
        if (screen == CCOMP_TOKENS_SCREEN_INT8 && !int8_ok(CCOMP_TOKENS_F32)) continue;
        CHECK(ccomp_tokens_topk(k32, CCOMP_TOKENS_F32, 1, N, D, rows, off, rows, off, 1, 3, screen, oi0, ov0, 1,
                                &err) == CCOMP_OK, "float32 keys: %s", err.msg);
        for (e = 0; e < sizeof exps32 / sizeof *exps32; e++) {
            int exact = 1;
            for (i = 0; i < N * D; i++) {
                s32[i] = ldexpf(k32[i], exps32[e]);
                exact &= ldexpf(s32[i], -exps32[e]) == k32[i];
            }
            CHECK(ccomp_tokens_topk(s32, CCOMP_TOKENS_F32, 1, N, D, rows, off, rows, off, 1, 3, screen, oi, ov, 1,
                                    &err) == CCOMP_OK, "float32 keys times 2^%d: %s", exps32[e], err.msg);
            for (i = 0; i < N * 3; i++) CHECK(!isnan(ov[i]), "float32 keys times 2^%d: NaN", exps32[e]);
            if (exact)
                CHECK(memcmp(oi, oi0, sizeof oi) == 0 && memcmp(ov, ov0, sizeof ov) == 0,
                      "float32 keys times 2^%d (screen %d): another answer", exps32[e], screen);
        }
    }
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    size_t N = quick ? 70 : 300;
    int dtype, kind;
    int screen;
    for (screen = CCOMP_TOKENS_SCREEN_AUTO; screen <= CCOMP_TOKENS_SCREEN_INT8; screen++)
        for (dtype = 0; dtype < 3; dtype++) {
            if (screen == CCOMP_TOKENS_SCREEN_INT8 && !int8_ok(dtype)) continue;
            for (kind = 0; kind < 4; kind++) {
                check_case(dtype, 2, N, 37, kind, 1, 1, screen);
                check_case(dtype, 1, N, 64, kind, 5, 1, screen);
                check_case(dtype, 2, N, 20, kind, 1, 0, screen);
                check_case(dtype, 1, N, 3, kind, 4, 0, screen);
            }
        }
    if (!quick) {
        check_case(CCOMP_TOKENS_F32, 3, 1024, 256, 1, 33, 1, CCOMP_TOKENS_SCREEN_AUTO);
        check_case(CCOMP_TOKENS_F32, 2, 1024, 256, 0, 1, 1, CCOMP_TOKENS_SCREEN_AUTO);
    }
    printf("kernel: %s\n", ccomp_tokens_kernel_name());
    check_errors();
    check_gather_sum();
    check_extreme_scales();
    if (test_failures) {
        fprintf(stderr, "test_tokens: %d failures\n", test_failures);
        return 1;
    }
    printf("test_tokens: all checks passed\n");
    return 0;
}

/* Tests of the turbo KV method (ccomp/kv_turbo.h): the Lloyd-Max codebooks
 * re-derived, the rotation against an explicit Hadamard matrix, codes and
 * dequantization against a plain double-precision reference, relative MSE on
 * Gaussian and outlier data, scores/accum against dense computations on the
 * dequantized matrix, QJL unbiasedness, and errors.  Usage: test_kv_turbo [--quick] */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/kv_turbo.h"

#include "check.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------ */

static double gauss(uint64_t *r) /* standard normal (Box-Muller) */
{
    double u1 = ((double)(splitmix(r) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(splitmix(r) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* A turbo struct with its own buffers (and QJL matrix when qjl). */
typedef struct tq {
    ccomp_kv_turbo q;
    float *S;
} tq;

static void tq_init(tq *t, size_t rows, size_t cols, int bits, int qjl, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->q.rows = rows;
    t->q.cols = cols;
    t->q.bits = bits;
    t->q.qjl = qjl;
    t->q.seed = seed;
    t->q.codes = xmalloc(ccomp_kv_turbo_code_bytes(rows, cols, bits));
    t->q.norms = xmalloc(rows * sizeof(float));
    if (qjl) {
        t->q.qjl_signs = xmalloc(ccomp_kv_turbo_sign_bytes(rows, cols));
        t->q.res_norms = xmalloc(rows * sizeof(float));
        t->S = xmalloc(cols * cols * sizeof(float));
        ccomp_kv_turbo_qjl_matrix(seed, cols, t->S);
        t->q.qjl_matrix = t->S;
    }
}

static void tq_free(tq *t)
{
    free(t->q.codes);
    free(t->q.norms);
    free(t->q.qjl_signs);
    free(t->q.res_norms);
    free(t->S);
}

/* The documented sign generator, written out again. */
static double ref_sign(uint64_t seed, size_t j)
{
    uint64_t st = seed, z = 0;
    size_t i;
    for (i = 0; i <= j; i++)
        z = splitmix(&st);
    return (z >> 63) ? -1.0 : 1.0;
}

static double hadamard(size_t i, size_t j) /* H[i][j] = (-1)^popcount(i & j) */
{
    size_t v = i & j;
    int p = 0;
    while (v) {
        p ^= 1;
        v &= v - 1;
    }
    return p ? -1.0 : 1.0;
}

/* Explicit rotation matrix R[i][j] = H[i][j] s_j / sqrt(D) in double. */
static double *rotation_matrix(uint64_t seed, size_t d)
{
    double *R = xmalloc(d * d * sizeof *R), *s = xmalloc(d * sizeof *s);
    size_t i, j;
    uint64_t st = seed;
    for (j = 0; j < d; j++)
        s[j] = (splitmix(&st) >> 63) ? -1.0 : 1.0;
    for (i = 0; i < d; i++)
        for (j = 0; j < d; j++)
            R[i * d + j] = hadamard(i, j) * s[j] / sqrt((double)d);
    free(s);
    return R;
}

static unsigned get_code(const uint8_t *row, size_t j, int b) /* generic bit read */
{
    unsigned v = 0;
    int k;
    for (k = 0; k < b; k++) {
        size_t bit = j * (size_t)b + (size_t)k;
        v |= (unsigned)((row[bit >> 3] >> (bit & 7)) & 1u) << k;
    }
    return v;
}

/* ---- Lloyd-Max ---------------------------------------------------------------------- */

static void test_lloyd_max(void)
{
    static const double want_mse[5] = {0, 0.3634, 0.1175, 0.03454, 0.009497};
    int b, k;
    for (b = 1; b <= 4; b++) {
        double c[16], t[15], mse = -1;
        ccomp_error err;
        int n = 1 << b;
        const double *emb = ccomp_kv_turbo_codebook(b);
        const float *cf = ccomp_kv_turbo_centroids(b), *tf = ccomp_kv_turbo_thresholds(b);
        CHECK(ccomp_kv_lloyd_max(b, c, t, &mse, &err) == CCOMP_OK, "lloyd_max(%d) failed: %s", b, err.msg);
        CHECK(fabs(mse - want_mse[b]) < 1e-4, "bits %d: Lloyd-Max MSE %.6f, expected %.6f", b, mse, want_mse[b]);
        CHECK(emb != NULL && cf != NULL && tf != NULL, "bits %d: no embedded table", b);
        if (emb == NULL || cf == NULL || tf == NULL)
            continue;
        for (k = 0; k < n; k++) {
            CHECK(fabs(emb[k] - c[k]) < 1e-12, "bits %d: embedded centroid %d is %.17g, re-derived %.17g", b, k,
                  emb[k], c[k]);
            CHECK(cf[k] == (float)emb[k], "bits %d: float centroid %d is not the rounded constant", b, k);
            CHECK(emb[k] == -emb[n - 1 - k], "bits %d: codebook not symmetric at %d", b, k);
            if (k > 0)
                CHECK(emb[k] > emb[k - 1], "bits %d: centroids not ascending at %d", b, k);
        }
        for (k = 0; k < n - 1; k++) {
            CHECK(fabs(t[k] - 0.5 * (c[k] + c[k + 1])) < 1e-15, "bits %d: threshold %d not a midpoint", b, k);
            CHECK(tf[k] == (float)(0.5 * (emb[k] + emb[k + 1])), "bits %d: float threshold %d is %.9g, expected %.9g",
                  b, k, (double)tf[k], 0.5 * (emb[k] + emb[k + 1]));
        }
        /* the MSE of the codebook by numerical integration agrees */
        {
            double sum = 0.0, h = 1e-4, x;
            for (x = -9.0; x < 9.0; x += h) {
                double xm = x + 0.5 * h, qv = c[0];
                for (k = 0; k < n - 1; k++)
                    if (xm >= t[k])
                        qv = c[k + 1];
                sum += (xm - qv) * (xm - qv) * exp(-0.5 * xm * xm) / sqrt(2 * 3.141592653589793) * h;
            }
            CHECK(fabs(sum - mse) < 1e-6, "bits %d: integrated MSE %.8f, closed form %.8f", b, sum, mse);
        }
    }
    CHECK(fabs(ccomp_kv_turbo_codebook(1)[1] - 0.7979) < 1e-4, "1-bit centroid");
    CHECK(fabs(ccomp_kv_turbo_codebook(2)[2] - 0.4528) < 1e-4 && fabs(ccomp_kv_turbo_codebook(2)[3] - 1.5104) < 1e-4,
          "2-bit centroids");
    {
        ccomp_error err;
        CHECK(ccomp_kv_lloyd_max(5, NULL, NULL, NULL, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 5"),
              "lloyd_max(5) accepted or bad message");
        CHECK(ccomp_kv_turbo_centroids(0) == NULL && ccomp_kv_turbo_thresholds(5) == NULL, "tables for bad bits");
    }
}

/* ---- rotation ----------------------------------------------------------------------- */

static void test_rotation(int quick)
{
    uint64_t r = 11;
    size_t d;
    for (d = 16; d <= 1024; d *= 2) {
        int trials = quick && d > 256 ? 2 : 8, tr;
        uint64_t seed = splitmix(&r);
        double *R = rotation_matrix(seed, d);
        float *x = xmalloc(d * sizeof *x), *y = xmalloc(d * sizeof *y), *z = xmalloc(d * sizeof *z);
        size_t i, j;
        for (j = 0; j < (d < 40 ? d : 40); j++)
            CHECK(R[j] * sqrt((double)d) == ref_sign(seed, j), "d %zu: sign %zu differs from the generator", d, j);
        for (tr = 0; tr < trials; tr++) {
            double nx = 0, ny = 0, maxdiff = 0, maxinv = 0;
            for (j = 0; j < d; j++) {
                x[j] = (float)(gauss(&r) * (j == 3 ? 50.0 : 1.0));
                nx += (double)x[j] * x[j];
            }
            ccomp_kv_turbo_rotate(seed, d, x, y, 0);
            for (i = 0; i < d; i++) {
                double ref = 0;
                for (j = 0; j < d; j++)
                    ref += R[i * d + j] * x[j];
                ny += (double)y[i] * y[i];
                if (fabs(ref - y[i]) > maxdiff)
                    maxdiff = fabs(ref - y[i]);
            }
            CHECK(fabs(sqrt(ny) / sqrt(nx) - 1.0) < 1e-5, "d %zu: rotation changes the norm by %g", d,
                  sqrt(ny) / sqrt(nx) - 1.0);
            CHECK(maxdiff < 1e-5 * sqrt(nx), "d %zu: rotation differs from the explicit matrix by %g", d, maxdiff);
            memcpy(z, y, d * sizeof *z);
            ccomp_kv_turbo_rotate(seed, d, z, z, 1); /* in place */
            for (j = 0; j < d; j++)
                if (fabs((double)z[j] - x[j]) > maxinv)
                    maxinv = fabs((double)z[j] - x[j]);
            CHECK(maxinv < 1e-5 * sqrt(nx), "d %zu: inverse rotation off by %g", d, maxinv);
        }
        free(R);
        free(x);
        free(y);
        free(z);
    }
}

/* ---- codes and dequantization against a double reference ------------------------- */

static void test_reference(int quick)
{
    uint64_t r = 21;
    int trials = quick ? 12 : 40, tr;
    for (tr = 0; tr < trials; tr++) {
        size_t d = (size_t)16 << rnd(&r, quick ? 4 : 6), rows = rnd_range(&r, 1, 40), ld = d + rnd(&r, 5);
        int b = (int)rnd_range(&r, 1, 4), qjl = (int)rnd(&r, 2);
        uint64_t seed = splitmix(&r);
        const double *c = ccomp_kv_turbo_codebook(b);
        const float *tf = ccomp_kv_turbo_thresholds(b);
        double *R = rotation_matrix(seed, d), *w = xmalloc(d * sizeof *w);
        float *x = xmalloc(rows * ld * sizeof *x), *out = xmalloc(rows * ld * sizeof *out);
        size_t t, i, j, mism = 0;
        tq q;
        ccomp_error err;
        tq_init(&q, rows, d, b, qjl, seed);
        for (t = 0; t < rows * ld; t++)
            x[t] = (float)(gauss(&r) * 3.0 + (t % ld == 1 ? 10.0 : 0.0));
        if (rows > 2)
            for (j = 0; j < d; j++)
                x[2 * ld + j] = 0.0f; /* a zero row */
        CHECK(ccomp_kv_turbo_quantize(x, ld, &q.q, &err) == CCOMP_OK, "quantize failed: %s", err.msg);
        ccomp_kv_turbo_dequantize(&q.q, out, ld);
        for (t = 0; t < rows; t++) {
            const float *xt = x + t * ld;
            const uint8_t *row = q.q.codes + t * (d * (size_t)b / 8);
            double nn = 0, maxd = 0;
            for (j = 0; j < d; j++)
                nn += (double)xt[j] * xt[j];
            CHECK(fabs(q.q.norms[t] - sqrt(nn)) <= 1e-6 * sqrt(nn), "row %zu: norm %g, expected %g", t,
                  (double)q.q.norms[t], sqrt(nn));
            for (i = 0; i < d; i++) {
                double y = 0;
                unsigned want = 0, got = get_code(row, i, b);
                for (j = 0; j < d; j++)
                    y += R[i * d + j] * (nn > 0 ? xt[j] / sqrt(nn) : 0.0);
                y *= sqrt((double)d); /* ~ N(0, 1) */
                for (j = 0; j + 1 < ((size_t)1 << b); j++)
                    want += y >= tf[j];
                if (got != want) {
                    /* only allowed at a near tie with a threshold */
                    int near = fabs(y - tf[got < want ? got : want]) < 1e-4;
                    CHECK(near && (got + 1 == want || want + 1 == got),
                          "d %zu b %d row %zu col %zu: code %u, reference %u (y %.8f)", d, b, t, i, got, want, y);
                    mism++;
                }
                w[i] = c[got];
            }
            /* x' = norm * R^T c[code] / sqrt(D) */
            for (j = 0; j < d; j++) {
                double v = 0;
                for (i = 0; i < d; i++)
                    v += R[i * d + j] * w[i];
                v *= sqrt(nn) / sqrt((double)d);
                if (fabs(v - out[t * ld + j]) > maxd)
                    maxd = fabs(v - out[t * ld + j]);
            }
            CHECK(maxd <= 1e-5 * sqrt(nn) + 1e-30, "d %zu b %d row %zu: dequantize off by %g (norm %g)", d, b, t, maxd,
                  sqrt(nn));
            if (nn == 0) {
                for (j = 0; j < d; j++)
                    CHECK(out[t * ld + j] == 0.0f && get_code(row, j, b) == (1u << (b - 1)),
                          "zero row: col %zu gives %g, code %u", j, (double)out[t * ld + j], get_code(row, j, b));
                if (qjl)
                    CHECK(q.q.res_norms[t] == 0.0f, "zero row: residual norm %g", (double)q.q.res_norms[t]);
            }
            if (qjl) {
                double rn = 0;
                for (j = 0; j < d; j++)
                    rn += ((double)xt[j] - out[t * ld + j]) * ((double)xt[j] - out[t * ld + j]);
                CHECK(fabs(q.q.res_norms[t] - sqrt(rn)) <= 1e-4 * sqrt(nn) + 1e-30, "row %zu: residual norm %g, expected %g",
                      t, (double)q.q.res_norms[t], sqrt(rn));
            }
        }
        CHECK(mism <= rows * d / 1000 + 1, "too many near-tie code differences: %zu of %zu", mism, rows * d);
        tq_free(&q);
        free(R);
        free(w);
        free(x);
        free(out);
    }
}

/* ---- relative MSE --------------------------------------------------------------------- */

static double rel_mse(const float *x, size_t rows, size_t d, int b, uint64_t seed)
{
    float *out = xmalloc(rows * d * sizeof *out);
    double num = 0, den = 0;
    size_t i;
    tq q;
    ccomp_error err;
    tq_init(&q, rows, d, b, 0, seed);
    CHECK(ccomp_kv_turbo_quantize(x, d, &q.q, &err) == CCOMP_OK, "quantize failed: %s", err.msg);
    ccomp_kv_turbo_dequantize(&q.q, out, d);
    for (i = 0; i < rows * d; i++) {
        num += ((double)x[i] - out[i]) * ((double)x[i] - out[i]);
        den += (double)x[i] * x[i];
    }
    tq_free(&q);
    free(out);
    return num / den;
}

static void test_mse(int quick)
{
    const size_t rows = quick ? 1024 : 4096, d = 128;
    float *g = xmalloc(rows * d * sizeof *g), *o = xmalloc(rows * d * sizeof *o);
    uint64_t r = 31;
    size_t i;
    int b;
    for (i = 0; i < rows * d; i++) {
        g[i] = (float)gauss(&r);
        /* outlier channels and a per-token scale, as in real keys */
        o[i] = (float)(gauss(&r) * ((i % d) % 17 == 5 ? 20.0 : 1.0) * (1.0 + (double)((i / d) % 7)) + 0.3);
    }
    for (b = 1; b <= 4; b++) {
        double mse, eg = rel_mse(g, rows, d, b, 1234), eo = rel_mse(o, rows, d, b, 99);
        ccomp_kv_lloyd_max(b, NULL, NULL, &mse, NULL);
        printf("turbo %d bits: relative MSE gaussian %.5f, outlier data %.5f (Lloyd-Max %.5f)\n", b, eg, eo, mse);
        CHECK(fabs(eg - mse) < (b == 1 ? 0.005 : 0.002), "bits %d: gaussian relative MSE %.5f, expected %.5f", b, eg,
              mse);
        /* energy in a few channels makes the rotated coordinates lighter-tailed
         * than N(0, 1): the error is at most the Gaussian one, never far below */
        CHECK(eo < mse + 0.004 && eo > 0.75 * mse, "bits %d: outlier-data relative MSE %.5f, expected about %.5f",
              b, eo, mse);
    }
    free(g);
    free(o);
}

/* ---- scores and accum ----------------------------------------------------------------- */

static void test_kernels(int quick)
{
    uint64_t r = 41;
    int trials = quick ? 30 : 120, tr;
    for (tr = 0; tr < trials; tr++) {
        size_t d = (size_t)16 << rnd(&r, 7), rows = rnd_range(&r, 1, quick ? 100 : 300), t, j;
        int b = (int)rnd_range(&r, 1, 4), qjl = (int)rnd(&r, 2);
        uint64_t seed = splitmix(&r);
        float *x = xmalloc(rows * d * sizeof *x), *xd = xmalloc(rows * d * sizeof *xd);
        float *qv = xmalloc(d * sizeof *qv), *s = xmalloc(rows * sizeof *s), *p = xmalloc(rows * sizeof *p);
        float *o = xmalloc(d * sizeof *o), *o0 = xmalloc(d * sizeof *o0), *Sq = xmalloc(d * sizeof *Sq);
        double pa = 0, worst = 0;
        tq q;
        ccomp_error err;
        tq_init(&q, rows, d, b, qjl, seed);
        for (t = 0; t < rows * d; t++)
            x[t] = (float)(gauss(&r) * (1.0 + (double)(t / d % 5)));
        for (j = 0; j < d; j++) {
            qv[j] = (float)gauss(&r);
            o[j] = o0[j] = (float)gauss(&r);
        }
        for (t = 0; t < rows; t++) {
            p[t] = (float)(splitmix(&r) >> 11) * 0x1.0p-53f;
            pa += p[t];
        }
        CHECK(ccomp_kv_turbo_quantize(x, d, &q.q, &err) == CCOMP_OK, "quantize failed: %s", err.msg);
        ccomp_kv_turbo_dequantize(&q.q, xd, d);
        ccomp_kv_turbo_scores(&q.q, qv, s);
        ccomp_kv_turbo_accum(&q.q, p, o);
        if (qjl) /* S q in double for the reference estimate */
            for (j = 0; j < d; j++) {
                double a = 0;
                size_t i;
                for (i = 0; i < d; i++)
                    a += (double)q.S[j * d + i] * qv[i];
                Sq[j] = (float)a;
            }
        for (t = 0; t < rows; t++) {
            double ref = 0, nq = 0, nx = 0, bound;
            for (j = 0; j < d; j++) {
                ref += (double)qv[j] * xd[t * d + j];
                nq += (double)qv[j] * qv[j];
                nx += (double)xd[t * d + j] * xd[t * d + j];
            }
            bound = 1e-5 * sqrt(nq) * sqrt(nx);
            if (qjl) {
                double e = 0, sq = 0;
                const uint8_t *sg = q.q.qjl_signs + t * (d / 8);
                for (j = 0; j < d; j++) {
                    e += ((sg[j >> 3] >> (j & 7)) & 1 ? 1.0 : -1.0) * Sq[j];
                    sq += fabs(Sq[j]);
                }
                ref += sqrt(3.141592653589793 / 2) / (double)d * q.q.res_norms[t] * e;
                bound += 1e-5 * sqrt(3.141592653589793 / 2) / (double)d * q.q.res_norms[t] * sq;
            }
            if (fabs(s[t] - ref) > worst * bound)
                worst = fabs(s[t] - ref) / bound;
            CHECK(fabs(s[t] - ref) <= bound, "d %zu b %d qjl %d row %zu: score %.9g, dense %.9g", d, b, qjl, t,
                  (double)s[t], ref);
        }
        for (j = 0; j < d; j++) {
            double ref = o0[j], bound = 0;
            for (t = 0; t < rows; t++) {
                ref += (double)p[t] * xd[t * d + j];
                bound += fabs((double)p[t]) * q.q.norms[t];
            }
            bound = 1e-5 * bound + 1e-6 * fabs((double)o0[j]);
            CHECK(fabs(o[j] - ref) <= bound, "d %zu b %d row-sum col %zu: accum %.9g, dense %.9g", d, b, j,
                  (double)o[j], ref);
        }
        (void)pa;
        tq_free(&q);
        free(x);
        free(xd);
        free(qv);
        free(s);
        free(p);
        free(o);
        free(o0);
        free(Sq);
    }
    /* rows = 0 does nothing */
    {
        tq q;
        float qv[16] = {1}, o[16] = {0}, s[1] = {7};
        ccomp_error err;
        tq_init(&q, 0, 16, 2, 1, 5);
        CHECK(ccomp_kv_turbo_quantize(qv, 16, &q.q, &err) == CCOMP_OK, "rows 0 rejected: %s", err.msg);
        ccomp_kv_turbo_scores(&q.q, qv, s);
        ccomp_kv_turbo_accum(&q.q, s, o);
        CHECK(s[0] == 7 && o[0] == 0, "rows 0 wrote output");
        tq_free(&q);
    }
}

/* ---- QJL unbiasedness ----------------------------------------------------------------- */

static void test_qjl_unbiased(int quick)
{
    const size_t d = 64, rows = 32;
    const int seeds = quick ? 150 : 600;
    uint64_t r = 51;
    int b, sd;
    for (b = 1; b <= 3; b++) {
        double sum_q = 0, sum2_q = 0, sum_m = 0, sum2_m = 0, n = 0;
        for (sd = 0; sd < seeds; sd++) {
            float x[32 * 64], qv[64], s1[32], s0[32];
            size_t t, j;
            tq q1, q0;
            ccomp_error err;
            uint64_t seed = splitmix(&r);
            /* keys correlated with the query: <q, x> is large and the MSE-only
             * estimate, which shrinks inner products, is biased low */
            for (j = 0; j < d; j++)
                qv[j] = (float)gauss(&r);
            for (t = 0; t < rows; t++)
                for (j = 0; j < d; j++)
                    x[t * d + j] = (float)(0.8 * qv[j] + 0.6 * gauss(&r));
            tq_init(&q1, rows, d, b, 1, seed);
            tq_init(&q0, rows, d, b, 0, seed);
            CHECK(ccomp_kv_turbo_quantize(x, d, &q1.q, &err) == CCOMP_OK, "quantize failed: %s", err.msg);
            CHECK(ccomp_kv_turbo_quantize(x, d, &q0.q, &err) == CCOMP_OK, "quantize failed: %s", err.msg);
            ccomp_kv_turbo_scores(&q1.q, qv, s1);
            ccomp_kv_turbo_scores(&q0.q, qv, s0);
            for (t = 0; t < rows; t++) {
                double truth = 0, e1, e0;
                for (j = 0; j < d; j++)
                    truth += (double)qv[j] * x[t * d + j];
                e1 = s1[t] - truth;
                e0 = s0[t] - truth;
                sum_q += e1;
                sum2_q += e1 * e1;
                sum_m += e0;
                sum2_m += e0 * e0;
                n++;
            }
            tq_free(&q1);
            tq_free(&q0);
        }
        {
            double mq = sum_q / n, sq = sqrt(sum2_q / n - mq * mq), mm = sum_m / n, sm = sqrt(sum2_m / n - mm * mm);
            /* seeds are independent; tokens of one seed share S and q, so allow a wide margin */
            double se = sq / sqrt((double)seeds);
            printf("qjl %d bits: mean error %.4f (std %.4f) vs MSE-only %.4f (std %.4f) over %.0f scores\n", b, mq, sq,
                   mm, sm, n);
            CHECK(fabs(mq) < 4 * se, "bits %d: QJL scores biased: mean error %.4f, standard error %.4f", b, mq, se);
            CHECK(mm < -8 * sm / sqrt((double)seeds), "bits %d: MSE-only scores not biased low in this case (%.4f)", b,
                  mm);
            CHECK(fabs(mq) < 0.2 * fabs(mm), "bits %d: QJL bias %.4f not much smaller than MSE-only %.4f", b, mq, mm);
        }
    }
}

/* ---- errors --------------------------------------------------------------------------- */

static void test_errors(void)
{
    ccomp_error err;
    float x[4 * 32];
    size_t i;
    tq q;
    CHECK(ccomp_kv_turbo_check(4, 64, 5, 0, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "1, 2, 3 or 4") &&
              strstr(err.msg, "got 5"),
          "bits 5: %s", err.msg);
    CHECK(ccomp_kv_turbo_check(4, 64, 0, 0, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 0"), "bits 0: %s",
          err.msg);
    CHECK(ccomp_kv_turbo_check(4, 100, 2, 0, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "power of two") &&
              strstr(err.msg, "got 100"),
          "cols 100: %s", err.msg);
    CHECK(ccomp_kv_turbo_check(4, 8, 2, 0, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "[16, 1024]"), "cols 8: %s",
          err.msg);
    CHECK(ccomp_kv_turbo_check(4, 2048, 2, 0, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 2048"),
          "cols 2048: %s", err.msg);
    CHECK(ccomp_kv_turbo_check(4, 64, 2, 2, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 2"), "qjl 2: %s",
          err.msg);
    CHECK(ccomp_kv_turbo_check(4, 64, 3, 1, &err) == CCOMP_OK, "valid parameters rejected");
    CHECK(ccomp_kv_turbo_bytes(10, 128, 3, 0) == 10 * (48 + 4) + 8, "bytes without qjl");
    CHECK(ccomp_kv_turbo_bytes(10, 128, 3, 1) == 10 * (48 + 4 + 16 + 4) + 8, "bytes with qjl");

    for (i = 0; i < 4 * 32; i++)
        x[i] = (float)i * 0.01f;
    tq_init(&q, 4, 32, 2, 0, 1);
    CHECK(ccomp_kv_turbo_quantize(x, 16, &q.q, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 16"), "ld < cols: %s",
          err.msg);
    x[2 * 32 + 7] = NAN;
    CHECK(ccomp_kv_turbo_quantize(x, 32, &q.q, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "token 2, channel 7") &&
              strstr(err.msg, "NaN"),
          "NaN: %s", err.msg);
    x[2 * 32 + 7] = 0.0f;
    x[3 * 32 + 31] = -INFINITY;
    CHECK(ccomp_kv_turbo_quantize(x, 32, &q.q, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "token 3, channel 31") &&
              strstr(err.msg, "infinite"),
          "inf: %s", err.msg);
    x[3 * 32 + 31] = 0.0f;
    for (i = 0; i < 32; i++)
        x[32 + i] = 3e38f;
    CHECK(ccomp_kv_turbo_quantize(x, 32, &q.q, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "row 1") &&
              strstr(err.msg, "norm"),
          "norm overflow: %s", err.msg);
    q.q.bits = 5;
    CHECK(ccomp_kv_turbo_quantize(x, 32, &q.q, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "got 5"), "bits 5: %s",
          err.msg);
    q.q.bits = 2;
    q.q.qjl = 1; /* no QJL buffers */
    CHECK(ccomp_kv_turbo_quantize(x, 32, &q.q, &err) == CCOMP_ERR_VALUE && strstr(err.msg, "qjl_matrix"),
          "missing QJL buffers: %s", err.msg);
    CHECK(ccomp_kv_turbo_quantize(x, 32, NULL, &err) == CCOMP_ERR_VALUE, "NULL struct accepted");
    tq_free(&q);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    test_lloyd_max();
    test_rotation(quick);
    test_reference(quick);
    test_mse(quick);
    test_kernels(quick);
    test_qjl_unbiased(quick);
    test_errors();
    if (test_failures) {
        fprintf(stderr, "test_kv_turbo: %d failures\n", test_failures);
        return 1;
    }
    printf("test_kv_turbo: all passed\n");
    return 0;
}

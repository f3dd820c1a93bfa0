/* GEAR's low-rank residual (ccomp/kv_sparse.h): subspace iteration with
 * twice-applied modified Gram-Schmidt in double precision, and the attention
 * contributions of L = U W^T. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/cancel.h"
#include "ccomp/kv_sparse.h"

#define LR_MAX_ITERS 100

static const double two_pi = 6.283185307179586476925286766559;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in (0, 1] */
static double unit_open0(uint64_t *s)
{
    return 1.0 - (double)(splitmix64(s) >> 11) * 0x1p-53;
}

static void gaussian(double *g, size_t n, uint64_t seed)
{
    uint64_t st = seed;
    size_t i;
    for (i = 0; i < n; i += 2) {
        double u1 = unit_open0(&st), u2 = unit_open0(&st);
        double rad = sqrt(-2.0 * log(u1)), th = two_pi * u2;
        g[i] = rad * cos(th);
        if (i + 1 < n) g[i + 1] = rad * sin(th);
    }
}

/* column helpers on a row-major n x r matrix */
static double col_dot(const double *a, size_t n, size_t r, size_t k, size_t m)
{
    double acc = 0.0;
    size_t i;
    for (i = 0; i < n; i++) acc += a[i * r + k] * a[i * r + m];
    return acc;
}

/* column k -= (column m . column k) column m for every m < k, twice */
static void orthogonalize(double *a, size_t n, size_t r, size_t k)
{
    int pass;
    size_t m, i;
    for (pass = 0; pass < 2; pass++)
        for (m = 0; m < k; m++) {
            double d = col_dot(a, n, r, m, k);
            for (i = 0; i < n; i++) a[i * r + k] -= d * a[i * r + m];
        }
}

static void col_scale(double *a, size_t n, size_t r, size_t k, double f)
{
    size_t i;
    for (i = 0; i < n; i++) a[i * r + k] *= f;
}

/* Orthonormalizes the r columns of a (n x r, r <= n) in place: Q of a thin QR. */
static void qr_mgs(double *a, size_t n, size_t r)
{
    size_t k, i;
    for (k = 0; k < r; k++) {
        double orig = sqrt(col_dot(a, n, r, k, k)), nrm;
        orthogonalize(a, n, r, k);
        nrm = sqrt(col_dot(a, n, r, k, k));
        if (nrm > 1e-10 * orig) {
            col_scale(a, n, r, k, 1.0 / nrm);
            continue;
        }
        /* the column vanished (rank below r): the unit vector with the
         * largest part orthogonal to the previous columns */
        {
            size_t best = 0, m;
            double best_res = -1.0;
            for (i = 0; i < n; i++) {
                double res = 1.0;
                for (m = 0; m < k; m++) res -= a[i * r + m] * a[i * r + m];
                if (res > best_res) {
                    best_res = res;
                    best = i;
                }
            }
            for (i = 0; i < n; i++) a[i * r + k] = i == best ? 1.0 : 0.0;
            orthogonalize(a, n, r, k);
            col_scale(a, n, r, k, 1.0 / sqrt(col_dot(a, n, r, k, k)));
        }
    }
}

/* a (rows x r) = R y (y: cols x r) */
static void mul_r(const float *R, size_t rows, size_t cols, size_t ld, const double *y, size_t r, double *a)
{
    size_t t, j, k;
    for (t = 0; t < rows; t++) {
        double *at = a + t * r;
        const float *rt = R + t * ld;
        for (k = 0; k < r; k++) at[k] = 0.0;
        for (j = 0; j < cols; j++) {
            const double v = rt[j];
            const double *yj = y + j * r;
            for (k = 0; k < r; k++) at[k] += v * yj[k];
        }
    }
}

/* y (cols x r) = R^T a (a: rows x r) */
static void mul_rt(const float *R, size_t rows, size_t cols, size_t ld, const double *a, size_t r, double *y)
{
    size_t t, j, k;
    memset(y, 0, cols * r * sizeof(double));
    for (t = 0; t < rows; t++) {
        const double *at = a + t * r;
        const float *rt = R + t * ld;
        for (j = 0; j < cols; j++) {
            const double v = rt[j];
            double *yj = y + j * r;
            for (k = 0; k < r; k++) yj[k] += v * at[k];
        }
    }
}

ccomp_status ccomp_kv_lowrank_check(size_t rows, size_t cols, int rank, int iters, ccomp_error *err)
{
    size_t mn = rows < cols ? rows : cols;
    if (rows == 0 || cols == 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "low rank needs a non-empty matrix, got %zu x %zu", rows, cols);
    if (rank < 1 || (size_t)rank > mn)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "rank must be in [1, min(tokens, head dim) = %zu], got %d", mn, rank);
    if (iters < 1 || iters > LR_MAX_ITERS)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "power iterations must be in [1, %d], got %d", LR_MAX_ITERS, iters);
    if ((rows > cols ? rows : cols) > SIZE_MAX / sizeof(double) / 2 / (size_t)rank)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "low-rank workspace of (%zu + %zu) x %d doubles is too large", rows,
                          cols, rank);
    return CCOMP_OK;
}

ccomp_status ccomp_kv_lowrank(const float *R, size_t rows, size_t cols, size_t ld, int rank, int iters, uint64_t seed,
                              float *U, float *W, ccomp_error *err)
{
    size_t r, t, j, i;
    double *a, *y;
    int it;
    ccomp_status st = ccomp_kv_lowrank_check(rows, cols, rank, iters, err);
    if (st != CCOMP_OK) return st;
    r = (size_t)rank;
    for (t = 0; t < rows; t++)
        for (j = 0; j < cols; j++)
            if (!isfinite(R[t * ld + j]))
                return ccomp_fail(err, CCOMP_ERR_VALUE, "element (token %zu, channel %zu) is %s", t, j,
                                  isnan(R[t * ld + j]) ? "NaN" : "infinite");
    a = (double *)malloc(rows * r * sizeof(double));
    y = (double *)malloc(cols * r * sizeof(double));
    if (a == NULL || y == NULL) {
        free(a);
        free(y);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the low-rank workspace ((%zu + %zu) x %zu doubles)",
                          rows, cols, r);
    }
    gaussian(y, cols * r, seed);
    for (it = 1; it <= iters; it++) {
        if ((st = ccomp_check_cancel(err, "low-rank fit")) != CCOMP_OK) {
            free(a);
            free(y);
            return st;
        }
        mul_r(R, rows, cols, ld, y, r, a);
        qr_mgs(a, rows, r);
        mul_rt(R, rows, cols, ld, a, r, y);
        if (it < iters) qr_mgs(y, cols, r);
    }
    /* y = R^T a: W */
    for (i = 0; i < cols * r; i++) {
        float w = (float)y[i];
        if (!isfinite(w)) {
            const double big = fabs(y[i]);
            free(a);
            free(y);
            return ccomp_fail(err, CCOMP_ERR_VALUE,
                              "low-rank factor W overflows float32 (|W| up to %g; expected below %g)", big,
                              (double)FLT_MAX);
        }
        W[i] = w;
    }
    for (i = 0; i < rows * r; i++) U[i] = (float)a[i];
    free(a);
    free(y);
    return CCOMP_OK;
}

/* Fitting sketches: round-to-nearest grids, weighted 1-D k-means, and GPTQ
 * error feedback (the code assignment of LeanQuant).  Rows are independent,
 * so tasks are blocks of rows and any thread count gives the same bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/cancel.h"
#include "ccomp/parallel.h"
#include "sketch_internal.h"

enum { FIT_RTN, FIT_KMEANS, FIT_GPTQ };

#define FIT_ROWS 16 /* rows per task */

typedef struct fit_job {
    int kind;
    const float *w;
    size_t ld, rows, cols, groups;
    int bits, dtype, iters, simd;
    const double *col_weight;
    const float *u;
    const void *tables_in;
    size_t block;
    void *tables;
    uint8_t *packed;
} fit_job;

typedef struct sort_item {
    double v;
    size_t i;
} sort_item;

typedef struct fit_scratch {
    uint8_t *codes;            /* FIT_ROWS x cols */
    sort_item *items;          /* k-means: a group's (value, column) pairs */
    double *xs, *ws, *pw, *ps; /* ... sorted values, their weights, prefix sums (n + 1) */
    float *wb, *err;           /* GPTQ: FIT_ROWS x cols running weights, FIT_ROWS x block errors */
} fit_scratch;

static ccomp_status fit_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    const fit_job *j = (const fit_job *)ctx;
    size_t n = j->cols / j->groups;
    fit_scratch *s = (fit_scratch *)calloc(1, sizeof *s);
    int ok;
    (void)worker;
    *state = s;
    if (s == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate fitting scratch");
    s->codes = (uint8_t *)malloc(FIT_ROWS * j->cols);
    ok = s->codes != NULL;
    if (j->kind == FIT_KMEANS) {
        s->xs = (double *)malloc(n * sizeof(double));
        s->ws = (double *)malloc(n * sizeof(double));
        s->pw = (double *)malloc((n + 1) * sizeof(double));
        s->ps = (double *)malloc((n + 1) * sizeof(double));
        s->items = (sort_item *)malloc(n * sizeof(sort_item));
        ok = ok && s->xs && s->ws && s->pw && s->ps && s->items;
    }
    if (j->kind == FIT_GPTQ) {
        s->wb = (float *)malloc(FIT_ROWS * j->cols * sizeof(float));
        s->err = (float *)malloc(FIT_ROWS * j->block * sizeof(float));
        ok = ok && s->wb && s->err;
    }
    return ok ? CCOMP_OK : ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate fitting scratch for %zu columns", j->cols);
}

static void fit_fini(void *ctx, void *state)
{
    fit_scratch *s = (fit_scratch *)state;
    (void)ctx;
    if (s == NULL) return;
    free(s->codes);
    free(s->xs);
    free(s->ws);
    free(s->pw);
    free(s->ps);
    free(s->items);
    free(s->wb);
    free(s->err);
    free(s);
}

/* MSB-first packing of one run of n codes (padding bits zero) */
static void pack_run(const uint8_t *c, size_t n, int bits, uint8_t *out)
{
    uint32_t acc = 0;
    unsigned have = 0;
    size_t j;
    for (j = 0; j < n; j++) {
        acc = acc << bits | c[j];
        have += (unsigned)bits;
        if (have >= 8) {
            have -= 8;
            *out++ = (uint8_t)(acc >> have);
            acc &= (1u << have) - 1u;
        }
    }
    if (have) *out = (uint8_t)(acc << (8 - have));
}

static void pack_rows(const fit_job *j, const uint8_t *codes, size_t r0, size_t nr)
{
    size_t n = j->cols / j->groups, gb = ccomp_sketch_group_bytes(n, j->bits), r, g;
    for (r = 0; r < nr; r++)
        for (g = 0; g < j->groups; g++)
            pack_run(codes + r * j->cols + g * n, n, j->bits, j->packed + ((r0 + r) * j->groups + g) * gb);
}

/* argmin_k |v - t[k]| over K entries, the lowest k on ties */
static unsigned nearest(double v, const double *t, size_t K)
{
    unsigned best = 0;
    double bd = fabs(v - t[0]);
    size_t k;
    for (k = 1; k < K; k++) {
        double d = fabs(v - t[k]);
        if (d < bd) {
            bd = d;
            best = (unsigned)k;
        }
    }
    return best;
}

static ccomp_status check_row(const fit_job *j, size_t r, ccomp_error *err)
{
    const float *row = j->w + r * j->ld;
    size_t c;
    for (c = 0; c < j->cols; c++)
        if (!isfinite(row[c]))
            return ccomp_fail(err, CCOMP_ERR_VALUE, "weights must be finite, got %s at W[%zu, %zu]",
                              isnan(row[c]) ? "nan" : "inf", r, c);
    return CCOMP_OK;
}

/* Stores the table (rounded to dtype) of (r, g) from K values; t gets the rounded values. */
static void put_table(const fit_job *j, size_t r, size_t g, double *t)
{
    size_t K = (size_t)1 << j->bits, k;
    for (k = 0; k < K; k++) {
        ccomp_sketch_table_set(j->tables, j->dtype, (r * j->groups + g) * K + k, t[k]);
        t[k] = ccomp_sketch_round(t[k], j->dtype);
    }
}

/* ---------------------------------------------------------------- rtn */

static void rtn_group(const fit_job *j, const float *v, size_t n, size_t r, size_t g, uint8_t *codes)
{
    size_t K = (size_t)1 << j->bits, k, c;
    double mn = v[0], mx = v[0], t[CCOMP_SKETCH_MAX_ENTRIES];
    for (c = 1; c < n; c++) {
        if (v[c] < mn) mn = v[c];
        if (v[c] > mx) mx = v[c];
    }
    for (k = 0; k < K; k++) t[k] = mn + (double)k * ((mx - mn) / (double)(K - 1));
    put_table(j, r, g, t);
    for (c = 0; c < n; c++) codes[c] = (uint8_t)nearest(v[c], t, K);
}

/* ------------------------------------------------------------- k-means */

static int cmp_item(const void *a, const void *b)
{
    const sort_item *x = (const sort_item *)a, *y = (const sort_item *)b;
    const int nx = isnan(x->v), ny = isnan(y->v);
    /* a total order even if the weights changed to NaN after the check (NaN last): qsort needs one */
    if (nx != ny) return nx - ny;
    if (!nx && x->v != y->v) return x->v < y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* first index i in [lo, hi) with a[i] >= target (hi if none) */
static size_t lower_bound(const double *a, size_t lo, size_t hi, double target)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* first index i in [lo, hi) with a[i] > target */
static size_t upper_bound(const double *a, size_t lo, size_t hi, double target)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] <= target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Lloyd's algorithm on the sorted values from the centres c (sorted); returns
 * the weighted sum of squared errors of the final centres. */
static double lloyd(const fit_scratch *s, size_t n, size_t K, int iters, double *c)
{
    size_t split[CCOMP_SKETCH_MAX_ENTRIES + 1], prev[CCOMP_SKETCH_MAX_ENTRIES + 1], i, k;
    double sse = 0.0;
    int it;
    for (k = 0; k <= K; k++) prev[k] = (size_t)-1;
    for (it = 0;; it++) {
        /* assignment: contiguous runs of the sorted values; a value on a midpoint goes to the lower centre */
        split[0] = 0;
        split[K] = n;
        for (k = 1; k < K; k++) split[k] = upper_bound(s->xs, split[k - 1], n, 0.5 * (c[k - 1] + c[k]));
        if (it == iters || memcmp(split, prev, sizeof split) == 0) break;
        if ((it & 63) == 63 && ccomp_cancelled()) break; /* the caller sees the cancellation after the group */
        memcpy(prev, split, sizeof split);
        for (k = 0; k < K; k++) {
            double wsum = s->pw[split[k + 1]] - s->pw[split[k]];
            if (split[k + 1] > split[k] && wsum > 0.0) {
                double m = (s->ps[split[k + 1]] - s->ps[split[k]]) / wsum, lo = s->xs[split[k]],
                       hi = s->xs[split[k + 1] - 1];
                c[k] = m < lo ? lo : m > hi ? hi : m;
            }
        }
        /* keep the centres sorted (an empty cluster keeps its old centre) */
        for (k = 1; k < K; k++) {
            double x = c[k];
            size_t q = k;
            while (q > 0 && c[q - 1] > x) {
                c[q] = c[q - 1];
                q--;
            }
            c[q] = x;
        }
    }
    for (k = 0; k < K; k++)
        for (i = split[k]; i < split[k + 1]; i++) sse += s->ws[i] * (s->xs[i] - c[k]) * (s->xs[i] - c[k]);
    return sse;
}

static void kmeans_group(const fit_job *j, fit_scratch *s, const float *v, size_t n, size_t r, size_t g,
                         uint8_t *codes)
{
    const size_t K = (size_t)1 << j->bits;
    const double *cw = j->col_weight ? j->col_weight + g * n : NULL;
    double cq[CCOMP_SKETCH_MAX_ENTRIES], cu[CCOMP_SKETCH_MAX_ENTRIES], sse_q, sse_u;
    size_t i, k;
    /* the values sorted by (value, column), with their weights and prefix sums */
    for (i = 0; i < n; i++) {
        s->items[i].v = v[i];
        s->items[i].i = i;
    }
    qsort(s->items, n, sizeof *s->items, cmp_item);
    for (i = 0; i < n; i++) {
        s->xs[i] = s->items[i].v;
        s->ws[i] = cw ? cw[s->items[i].i] : 1.0;
    }
    s->pw[0] = s->ps[0] = 0.0;
    for (i = 0; i < n; i++) {
        s->pw[i + 1] = s->pw[i] + s->ws[i];
        s->ps[i + 1] = s->ps[i] + s->ws[i] * s->xs[i];
    }
    /* two deterministic starts, the better result kept: the weighted quantiles
     * (k + 1/2) / K, and the uniform grid of rtn (so k-means never does worse) */
    for (k = 0; k < K; k++) {
        double target = ((double)k + 0.5) / (double)K * s->pw[n];
        size_t idx = lower_bound(s->pw + 1, 0, n, target);
        cq[k] = s->xs[idx < n ? idx : n - 1];
        cu[k] = s->xs[0] + (double)k * ((s->xs[n - 1] - s->xs[0]) / (double)(K - 1));
    }
    sse_q = lloyd(s, n, K, j->iters, cq);
    sse_u = lloyd(s, n, K, j->iters, cu);
    if (sse_u < sse_q) memcpy(cq, cu, sizeof cq);
    put_table(j, r, g, cq);
    for (i = 0; i < n; i++) codes[i] = (uint8_t)nearest(v[i], cq, K);
}

/* ---------------------------------------------------------------- GPTQ */

static void axpy(const fit_job *j, size_t n, float a, const float *x, float *y)
{
    size_t k;
    if (j->simd) {
        sk_axpy_avx2(n, a, x, y);
        return;
    }
    for (k = 0; k < n; k++) y[k] -= a * x[k];
}

/* 1 when the call was cancelled (checked every 64 columns: a task may hold many long rows) */
static int gptq_rows(const fit_job *j, fit_scratch *s, size_t r0, size_t nr)
{
    const size_t cols = j->cols, n = cols / j->groups, K = (size_t)1 << j->bits, B = j->block;
    double t[FIT_ROWS][CCOMP_SKETCH_MAX_ENTRIES];
    size_t rr, i1, i, k;
    for (rr = 0; rr < nr; rr++) memcpy(s->wb + rr * cols, j->w + (r0 + rr) * j->ld, cols * sizeof(float));
    for (i1 = 0; i1 < cols; i1 += B) {
        size_t i2 = i1 + B < cols ? i1 + B : cols;
        for (i = i1; i < i2; i++) {
            const float *urow = j->u + i * cols;
            if ((i & 63) == 0 && ccomp_cancelled()) return 1;
            float d = urow[i];
            if (i % n == 0)
                for (rr = 0; rr < nr; rr++)
                    for (k = 0; k < K; k++)
                        t[rr][k] = ccomp_sketch_table_get(j->tables_in, j->dtype, ((r0 + rr) * j->groups + i / n) * K + k);
            for (rr = 0; rr < nr; rr++) {
                float *wr = s->wb + rr * cols, w = wr[i], e;
                unsigned code = nearest((double)w, t[rr], K);
                s->codes[rr * cols + i] = (uint8_t)code;
                e = (w - (float)t[rr][code]) / d;
                s->err[rr * B + (i - i1)] = e;
                if (e != 0.0f) axpy(j, i2 - i - 1, e, urow + i + 1, wr + i + 1);
            }
        }
        if (i2 < cols)
            for (i = i1; i < i2; i++)
                for (rr = 0; rr < nr; rr++) {
                    float e = s->err[rr * B + (i - i1)];
                    if (e != 0.0f) axpy(j, cols - i2, e, j->u + i * cols + i2, s->wb + rr * cols + i2);
                }
    }
    return 0;
}

/* ---------------------------------------------------------------- tasks */

static ccomp_status fit_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    const fit_job *j = (const fit_job *)ctx;
    fit_scratch *s = (fit_scratch *)state;
    size_t r0 = task * FIT_ROWS, nr = j->rows - r0 < FIT_ROWS ? j->rows - r0 : FIT_ROWS, n = j->cols / j->groups, rr, g;
    for (rr = 0; rr < nr; rr++) {
        ccomp_status st = check_row(j, r0 + rr, err);
        if (st != CCOMP_OK) return st;
    }
    if (j->kind == FIT_GPTQ) {
        if (gptq_rows(j, s, r0, nr)) return ccomp_check_cancel(err, "sketch fit (GPTQ)");
    } else {
        for (rr = 0; rr < nr; rr++)
            for (g = 0; g < j->groups; g++) {
                if (ccomp_cancelled()) return ccomp_check_cancel(err, "sketch fit");
                const float *v = j->w + (r0 + rr) * j->ld + g * n;
                uint8_t *codes = s->codes + rr * j->cols + g * n;
                if (j->kind == FIT_RTN)
                    rtn_group(j, v, n, r0 + rr, g, codes);
                else
                    kmeans_group(j, s, v, n, r0 + rr, g, codes);
            }
    }
    if (ccomp_cancelled()) return ccomp_check_cancel(err, "sketch fit"); /* a Lloyd loop may have stopped early */
    pack_rows(j, s->codes, r0, nr);
    return CCOMP_OK;
}

static ccomp_status fit_common(fit_job *j, int threads, ccomp_error *err)
{
    ccomp_parallel_ops ops = {fit_init, fit_run, fit_fini};
    ccomp_status st = ccomp_sketch_check(j->rows, j->cols, j->groups, j->bits, j->dtype, err);
    if (st != CCOMP_OK) return st;
    if (j->ld < j->cols)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "row stride %zu is smaller than the %zu columns", j->ld, j->cols);
    if (threads < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", threads);
    j->simd = sk_avx2_ok();
    return ccomp_parallel_for(threads, (j->rows + FIT_ROWS - 1) / FIT_ROWS, &ops, j, err);
}

/* The fields every fit shares. */
static void job_init(fit_job *j, int kind, const float *w, size_t ld, size_t rows, size_t cols, size_t groups, int bits,
                     int dtype, uint8_t *packed)
{
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->w = w;
    j->ld = ld;
    j->rows = rows;
    j->cols = cols;
    j->groups = groups;
    j->bits = bits;
    j->dtype = dtype;
    j->packed = packed;
}

ccomp_status ccomp_sketch_fit_rtn(const float *w, size_t ld, size_t rows, size_t cols, size_t groups, int bits,
                                  int dtype, void *tables, uint8_t *packed, int threads, ccomp_error *err)
{
    fit_job j;
    job_init(&j, FIT_RTN, w, ld, rows, cols, groups, bits, dtype, packed);
    j.tables = tables;
    return fit_common(&j, threads, err);
}

ccomp_status ccomp_sketch_fit_kmeans(const float *w, size_t ld, size_t rows, size_t cols, size_t groups, int bits,
                                     int dtype, const double *col_weight, int iters, void *tables, uint8_t *packed,
                                     int threads, ccomp_error *err)
{
    fit_job j;
    size_t c;
    if (iters < 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "iters must be >= 0, got %d", iters);
    if (col_weight != NULL)
        for (c = 0; c < cols; c++)
            if (!(col_weight[c] > 0.0) || !isfinite(col_weight[c]))
                return ccomp_fail(err, CCOMP_ERR_VALUE, "column weights must be positive and finite, got %g at "
                                  "column %zu", col_weight[c], c);
    job_init(&j, FIT_KMEANS, w, ld, rows, cols, groups, bits, dtype, packed);
    j.col_weight = col_weight;
    j.iters = iters;
    j.tables = tables;
    return fit_common(&j, threads, err);
}

ccomp_status ccomp_sketch_fit_gptq(const float *w, size_t ld, const float *u, size_t rows, size_t cols, size_t groups,
                                   int bits, int dtype, const void *tables, size_t block, uint8_t *packed, int threads,
                                   ccomp_error *err)
{
    fit_job j;
    size_t i;
    if (block == 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "block size must be >= 1, got 0");
    for (i = 0; i < cols; i++) {
        float d = u[i * cols + i];
        if (!(d > 0.0f) || !isfinite(d))
            return ccomp_fail(err, CCOMP_ERR_VALUE, "the Cholesky factor must have a positive finite diagonal, got "
                              "%g at [%zu, %zu]", (double)d, i, i);
    }
    job_init(&j, FIT_GPTQ, w, ld, rows, cols, groups, bits, dtype, packed);
    j.u = u;
    j.tables_in = tables;
    j.block = block < cols ? block : cols; /* a larger block is the same; it also bounds the scratch size */
    return fit_common(&j, threads, err);
}

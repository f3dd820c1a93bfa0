/* Weighted sums of token rows in float64 (ccomp/tokens.h): the merging step of ToMe, PruMerge,
 * VisionZip and correlation_compress(merge=True); and plain row copies (the kept tokens).
 *
 * The contributions are sorted by output row (stably, so each row adds its contributions in the
 * order given) and the output rows are shared among the threads: the same bits at any thread count. */
#include <stdlib.h>
#include <string.h>

#include "ccomp/half.h"
#include "ccomp/parallel.h"
#include "ccomp/tokens.h"

#define ROWS_PER_TASK 16

typedef struct combine_job {
    const void *x;
    int dtype;
    size_t N, D;
    const int64_t *bsel, *rows;
    const double *w, *div;
    const size_t *order; /* contributions by output row */
    const size_t *start; /* [n_out + 1] into order */
    void *out;
    int out_dtype;
    size_t n_out;
} combine_job;

typedef struct combine_state {
    float *wide; /* [D]: one float16 row widened */
    double *acc; /* [D] */
} combine_state;

static ccomp_status combine_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    const combine_job *j = (const combine_job *)ctx;
    combine_state *s = (combine_state *)calloc(1, sizeof *s);
    (void)worker;
    *state = s;
    if (s == NULL || (j->dtype == CCOMP_TOKENS_F16 && (s->wide = (float *)malloc(j->D * sizeof(float))) == NULL) ||
        (s->acc = (double *)malloc(j->D * sizeof(double))) == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a row of %zu channels", j->D);
    return CCOMP_OK;
}

static void combine_fini(void *ctx, void *state)
{
    combine_state *s = (combine_state *)state;
    (void)ctx;
    if (s == NULL) return;
    free(s->wide);
    free(s->acc);
    free(s);
}

/* acc[d] += w * x[d] (the product rounded, then the sum: the same bits as the scalar loop), and the row's end:
 * acc / div, rounded to float32 into out */
static void accum_f32(double *acc, const float *x, double w, size_t D)
{
    size_t d;
    for (d = 0; d < D; d++) acc[d] += w * (double)x[d];
}

static void accum_f64(double *acc, const double *x, double w, size_t D)
{
    size_t d;
    for (d = 0; d < D; d++) acc[d] += w * x[d];
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include "ccomp/cpu.h"

__attribute__((target("avx512f"))) static void accum_f32_avx512(double *acc, const float *x, double w, size_t D)
{
    const __m512d wv = _mm512_set1_pd(w);
    size_t d = 0;
    for (; d + 8 <= D; d += 8)
        _mm512_storeu_pd(acc + d, _mm512_add_pd(_mm512_loadu_pd(acc + d),
                                                _mm512_mul_pd(wv, _mm512_cvtps_pd(_mm256_loadu_ps(x + d)))));
    for (; d < D; d++) acc[d] += w * (double)x[d];
}

__attribute__((target("avx512f"))) static void accum_f64_avx512(double *acc, const double *x, double w, size_t D)
{
    const __m512d wv = _mm512_set1_pd(w);
    size_t d = 0;
    for (; d + 8 <= D; d += 8)
        _mm512_storeu_pd(acc + d, _mm512_add_pd(_mm512_loadu_pd(acc + d), _mm512_mul_pd(wv, _mm512_loadu_pd(x + d))));
    for (; d < D; d++) acc[d] += w * x[d];
}

__attribute__((target("avx512f"))) static void finish_f32_avx512(const double *acc, double div, float *out, size_t D)
{
    const __m512d dv = _mm512_set1_pd(div);
    size_t d = 0;
    for (; d + 8 <= D; d += 8) _mm256_storeu_ps(out + d, _mm512_cvtpd_ps(_mm512_div_pd(_mm512_loadu_pd(acc + d), dv)));
    for (; d < D; d++) out[d] = (float)(acc[d] / div);
}
#endif

static ccomp_status combine_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    const combine_job *j = (const combine_job *)ctx;
    combine_state *s = (combine_state *)state;
    const size_t D = j->D, o0 = task * ROWS_PER_TASK;
#if defined(__x86_64__) && defined(__GNUC__)
    const int v512 = (ccomp_cpu_features() & CCOMP_CPU_AVX512F) != 0;
#else
    const int v512 = 0;
#endif
    size_t o, c, d;
    (void)err;
    for (o = o0; o < j->n_out && o < o0 + ROWS_PER_TASK; o++) {
        double *acc = j->out_dtype == CCOMP_TOKENS_F64 ? (double *)j->out + o * D : s->acc;
        memset(acc, 0, D * sizeof(double));
        for (c = j->start[o]; c < j->start[o + 1]; c++) {
            const size_t i = j->order[c], at = ((size_t)j->bsel[i] * j->N + (size_t)j->rows[i]) * D;
            const double w = j->w ? j->w[i] : 1.0;
            if (j->dtype == CCOMP_TOKENS_F64) {
                const double *x = (const double *)j->x + at;
#if defined(__x86_64__) && defined(__GNUC__)
                if (v512) accum_f64_avx512(acc, x, w, D);
                else
#endif
                    accum_f64(acc, x, w, D);
            } else {
                const float *x = (const float *)j->x + at;
                if (j->dtype == CCOMP_TOKENS_F16) {
                    ccomp_f16_to_f32_n((const uint16_t *)j->x + at, s->wide, D);
                    x = s->wide;
                }
#if defined(__x86_64__) && defined(__GNUC__)
                if (v512) accum_f32_avx512(acc, x, w, D);
                else
#endif
                    accum_f32(acc, x, w, D);
            }
        }
        if (j->out_dtype == CCOMP_TOKENS_F32) {
            float *out = (float *)j->out + o * D;
            const double div = j->div ? j->div[o] : 1.0;
#if defined(__x86_64__) && defined(__GNUC__)
            if (v512) {
                finish_f32_avx512(acc, div, out, D);
                continue;
            }
#endif
            for (d = 0; d < D; d++) out[d] = (float)(acc[d] / div);
        } else if (j->div) {
            for (d = 0; d < D; d++) acc[d] /= j->div[o];
        }
    }
    return CCOMP_OK;
}

ccomp_status ccomp_tokens_gather_sum(const void *x, int dtype, size_t B, size_t N, size_t D, const int64_t *bsel,
                                     const int64_t *rows, const int64_t *dst, const double *w, size_t M,
                                     const double *div, void *out, int out_dtype, size_t n_out, int threads,
                                     ccomp_error *err)
{
    ccomp_parallel_ops ops = {combine_init, combine_run, combine_fini};
    combine_job j;
    size_t *order, *start, i, o;
    ccomp_status st;
    if (dtype != CCOMP_TOKENS_F32 && dtype != CCOMP_TOKENS_F64 && dtype != CCOMP_TOKENS_F16)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "tokens must be float32, float64 or float16, got type %d", dtype);
    if (out_dtype != CCOMP_TOKENS_F32 && out_dtype != CCOMP_TOKENS_F64)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "the sums are written as float32 or float64, got type %d", out_dtype);
    if (threads < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", threads);
    for (i = 0; i < M; i++) {
        if (bsel[i] < 0 || (size_t)bsel[i] >= B || rows[i] < 0 || (size_t)rows[i] >= N)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "contribution %zu reads token (%lld, %lld) of a %zu x %zu batch", i,
                              (long long)bsel[i], (long long)rows[i], B, N);
        if (dst[i] < 0 || (size_t)dst[i] >= n_out)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "contribution %zu goes to row %lld of %zu", i, (long long)dst[i],
                              n_out);
    }
    if (n_out == 0 || D == 0) return CCOMP_OK;
    order = (size_t *)malloc((M + 1) * sizeof(size_t));
    start = (size_t *)calloc(n_out + 2, sizeof(size_t));
    if (order == NULL || start == NULL) {
        free(order);
        free(start);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the order of %zu contributions", M);
    }
    /* counting sort by output row, stable */
    for (i = 0; i < M; i++) start[dst[i] + 2]++;
    for (o = 2; o <= n_out + 1; o++) start[o] += start[o - 1];
    for (i = 0; i < M; i++) order[start[dst[i] + 1]++] = i;
    memset(&j, 0, sizeof j);
    j.x = x;
    j.dtype = dtype;
    j.N = N;
    j.D = D;
    j.bsel = bsel;
    j.rows = rows;
    j.w = w;
    j.div = div;
    j.out_dtype = out_dtype;
    j.order = order;
    j.start = start;
    j.out = out;
    j.n_out = n_out;
    st = ccomp_parallel_for(threads, (n_out + ROWS_PER_TASK - 1) / ROWS_PER_TASK, &ops, &j, err);
    free(order);
    free(start);
    return st;
}

/* ------------------------------------------------------------ take */

typedef struct take_job {
    const unsigned char *x;
    size_t N, row_bytes;
    const int64_t *bsel, *rows;
    unsigned char *out;
    size_t M;
} take_job;

#define TAKE_ROWS 64

static ccomp_status take_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    const take_job *j = (const take_job *)ctx;
    size_t i;
    (void)state;
    (void)err;
    for (i = task * TAKE_ROWS; i < j->M && i < (task + 1) * TAKE_ROWS; i++)
        memcpy(j->out + i * j->row_bytes, j->x + ((size_t)j->bsel[i] * j->N + (size_t)j->rows[i]) * j->row_bytes,
               j->row_bytes);
    return CCOMP_OK;
}

ccomp_status ccomp_tokens_take(const void *x, size_t row_bytes, size_t B, size_t N, const int64_t *bsel,
                               const int64_t *rows, size_t M, void *out, int threads, ccomp_error *err)
{
    ccomp_parallel_ops ops = {NULL, take_run, NULL};
    take_job j;
    size_t i;
    if (threads < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", threads);
    for (i = 0; i < M; i++)
        if (bsel[i] < 0 || (size_t)bsel[i] >= B || rows[i] < 0 || (size_t)rows[i] >= N)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "row %zu is token (%lld, %lld) of a %zu x %zu batch", i,
                              (long long)bsel[i], (long long)rows[i], B, N);
    if (M == 0 || row_bytes == 0) return CCOMP_OK;
    j.x = (const unsigned char *)x;
    j.N = N;
    j.row_bytes = row_bytes;
    j.bsel = bsel;
    j.rows = rows;
    j.out = (unsigned char *)out;
    j.M = M;
    return ccomp_parallel_for(threads, (M + TAKE_ROWS - 1) / TAKE_ROWS, &ops, &j, err);
}

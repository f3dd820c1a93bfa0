/* ZIP-FIT alignment scores over a thread pool: one task per source, each
 * thread owning one reusable compressor. */
#include <stdlib.h>

#include "ccomp/parallel.h"
#include "ccomp/zipfit.h"

typedef struct score_job {
    ccomp_compressor kind;
    int level;
    ccomp_size_engine engine;
    const ccomp_text *sources;
    const uint8_t *const *target_data; /* the targets as two arrays, for the batched sizer call */
    const size_t *target_lens;
    const size_t *target_sizes;
    size_t ntargets;
    double *scores;
    size_t *source_sizes;
} score_job;

/* What each thread owns: a compressor and room for one source's pair sizes. */
typedef struct worker_state {
    ccomp_sizer *sizer;
    size_t *pair_sizes;
} worker_state;

static ccomp_status worker_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    const score_job *job = ctx;
    (void)worker;
    worker_state *w = calloc(1, sizeof *w);
    if (w == NULL || (job->ntargets && (w->pair_sizes = calloc(job->ntargets, sizeof *w->pair_sizes)) == NULL)) {
        free(w);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a worker's state for %zu targets", job->ntargets);
    }
    ccomp_status st = ccomp_sizer_create(job->kind, job->level, job->engine, &w->sizer, err);
    if (st != CCOMP_OK) {
        free(w->pair_sizes);
        free(w);
        return st;
    }
    *state = w;
    return CCOMP_OK;
}

static void worker_fini(void *ctx, void *state)
{
    worker_state *w = state;
    (void)ctx;
    if (w == NULL)
        return;
    ccomp_sizer_free(w->sizer);
    free(w->pair_sizes);
    free(w);
}

static ccomp_status score_one(void *ctx, void *state, size_t i, ccomp_error *err)
{
    const score_job *job = ctx;
    worker_state *w = state;
    ccomp_sizer *s = w->sizer;
    const ccomp_text x = job->sources[i];
    size_t cx;
    /* C(x) is C(x||"") from the prefix state: x is parsed once for everything */
    ccomp_status st = ccomp_sizer_set_prefix(s, x.data, x.len, err);
    if (st == CCOMP_OK)
        st = ccomp_sizer_size_with_prefix(s, NULL, 0, &cx, err);
    if (st != CCOMP_OK)
        return st;
    if (job->source_sizes != NULL)
        job->source_sizes[i] = cx;
    st = ccomp_sizer_sizes_with_prefix(s, job->target_data, job->target_lens, job->ntargets, w->pair_sizes, err);
    if (st != CCOMP_OK)
        return st;
    double sum = 0.0;
    for (size_t j = 0; j < job->ntargets; j++) {
        size_t cxy = w->pair_sizes[j];
        size_t cy = job->target_sizes[j];
        double lo = (double)(cx < cy ? cx : cy);
        double hi = (double)(cx < cy ? cy : cx);
        sum += 1.0 - ((double)cxy - lo) / hi;
    }
    job->scores[i] = sum / (double)job->ntargets;
    return CCOMP_OK;
}

static ccomp_status size_one(void *ctx, void *state, size_t i, ccomp_error *err)
{
    const score_job *job = ctx;
    worker_state *w = state;
    return ccomp_sizer_size(w->sizer, job->sources[i].data, job->sources[i].len, NULL, 0, &job->source_sizes[i], err);
}

static ccomp_status check_texts(const char *what, const ccomp_text *t, size_t n, ccomp_error *err)
{
    if (t == NULL && n)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "%s: NULL array of %zu texts", what, n);
    for (size_t i = 0; i < n; i++)
        if (t[i].data == NULL && t[i].len)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "%s item %zu: NULL data with length %zu", what, i, t[i].len);
    return CCOMP_OK;
}

ccomp_status ccomp_zipfit_scores(ccomp_compressor c, int level, ccomp_size_engine engine,
                                 const ccomp_text *sources, size_t nsources,
                                 const ccomp_text *targets, const size_t *target_sizes, size_t ntargets,
                                 int nthreads, double *scores, size_t *source_sizes, ccomp_error *err)
{
    ccomp_status st = ccomp_check_level(c, level, err);
    if (st != CCOMP_OK)
        return st;
    if (ntargets == 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "the target set is empty: at least one target text is needed");
    if (scores == NULL && nsources)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "scores output is NULL");
    if (target_sizes == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "target sizes are NULL");
    if ((st = check_texts("sources", sources, nsources, err)) != CCOMP_OK ||
        (st = check_texts("targets", targets, ntargets, err)) != CCOMP_OK)
        return st;
    for (size_t j = 0; j < ntargets; j++)
        if (target_sizes[j] == 0)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "target %zu has compressed size 0 (sizes must come from the same compressor)", j);
    if (nsources == 0)
        return CCOMP_OK;
    const uint8_t **data = malloc(ntargets * sizeof *data);
    size_t *lens = malloc(ntargets * sizeof *lens);
    if (data == NULL || lens == NULL) {
        free(data);
        free(lens);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate the table of %zu targets", ntargets);
    }
    for (size_t j = 0; j < ntargets; j++) {
        data[j] = targets[j].data;
        lens[j] = targets[j].len;
    }
    score_job job = {c, level, engine, sources, data, lens, target_sizes, ntargets, scores, source_sizes};
    const ccomp_parallel_ops ops = {worker_init, score_one, worker_fini};
    st = ccomp_parallel_for(nthreads, nsources, &ops, &job, err);
    free(data);
    free(lens);
    return st;
}

ccomp_status ccomp_compressed_sizes(ccomp_compressor c, int level, ccomp_size_engine engine,
                                    const ccomp_text *texts, size_t n, int nthreads, size_t *sizes,
                                    ccomp_error *err)
{
    ccomp_status st = ccomp_check_level(c, level, err);
    if (st != CCOMP_OK)
        return st;
    if ((st = check_texts("texts", texts, n, err)) != CCOMP_OK)
        return st;
    if (sizes == NULL && n)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "sizes output is NULL");
    if (n == 0)
        return CCOMP_OK;
    score_job job = {c, level, engine, texts, NULL, NULL, NULL, 0, NULL, sizes};
    const ccomp_parallel_ops ops = {worker_init, size_one, worker_fini};
    return ccomp_parallel_for(nthreads, n, &ops, &job, err);
}

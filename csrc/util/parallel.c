#define _GNU_SOURCE
#include "ccomp/parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct shared_run {
    const ccomp_parallel_ops *ops;
    void *ctx;
    size_t ntasks;
    atomic_size_t next;
    atomic_int failed;
} shared_run;

typedef struct worker_slot {
    shared_run *run;
    int index;
    size_t failed_task; /* SIZE_MAX when this worker saw no failure */
    ccomp_error err;
} worker_slot;

static void *worker_main(void *arg)
{
    worker_slot *w = (worker_slot *)arg;
    shared_run *r = w->run;
    void *state = NULL;
    w->failed_task = SIZE_MAX;
    ccomp_error_clear(&w->err);
    if (r->ops->init != NULL && r->ops->init(r->ctx, w->index, &state, &w->err) != CCOMP_OK) {
        w->failed_task = 0;
        atomic_store(&r->failed, 1);
        return NULL;
    }
    for (;;) {
        if (atomic_load_explicit(&r->failed, memory_order_relaxed))
            break;
        size_t t = atomic_fetch_add(&r->next, 1);
        if (t >= r->ntasks)
            break;
        if (r->ops->run(r->ctx, state, t, &w->err) != CCOMP_OK) {
            w->failed_task = t;
            atomic_store(&r->failed, 1);
            break;
        }
    }
    if (r->ops->fini != NULL)
        r->ops->fini(r->ctx, state);
    return NULL;
}

int ccomp_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

ccomp_status ccomp_parallel_for(int nthreads, size_t ntasks, const ccomp_parallel_ops *ops, void *ctx,
                                ccomp_error *err)
{
    if (ops == NULL || ops->run == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "parallel_for: no task function given");
    if (nthreads < 1)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", nthreads);
    if ((size_t)nthreads > ntasks)
        nthreads = ntasks == 0 ? 1 : (int)ntasks;

    shared_run r;
    r.ops = ops;
    r.ctx = ctx;
    r.ntasks = ntasks;
    atomic_init(&r.next, 0);
    atomic_init(&r.failed, 0);

    worker_slot *slots = calloc((size_t)nthreads, sizeof *slots);
    pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
    if (slots == NULL || tids == NULL) {
        free(slots);
        free(tids);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "parallel_for: cannot allocate %d worker slots", nthreads);
    }
    int started = 0;
    for (int i = 0; i < nthreads; i++) {
        slots[i].run = &r;
        slots[i].index = i;
    }
    /* Worker 0 runs on the calling thread; the others get their own. */
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&tids[i], NULL, worker_main, &slots[i]) != 0)
            break;
        started = i;
    }
    worker_main(&slots[0]);
    for (int i = 1; i <= started; i++)
        pthread_join(tids[i], NULL);

    ccomp_status st = CCOMP_OK;
    size_t worst = SIZE_MAX;
    int bad = -1;
    for (int i = 0; i <= started; i++) {
        if (slots[i].failed_task != SIZE_MAX && (bad < 0 || slots[i].failed_task < worst)) {
            worst = slots[i].failed_task;
            bad = i;
        }
    }
    if (bad >= 0) {
        st = slots[bad].err.code == CCOMP_OK ? CCOMP_ERR_BACKEND : slots[bad].err.code;
        if (err != NULL) {
            *err = slots[bad].err;
            err->code = st;
        }
    }
    free(slots);
    free(tids);
    return st;
}

/* A small fork-join helper: run a task function over [0, ntasks) on up to
 * nthreads threads: the caller and workers of a persistent pool (started on
 * first use; a call that finds the pool busy starts threads of its own).  Tasks
 * are handed out one at a time from an atomic counter (dynamic scheduling);
 * every task writes only its own outputs, which keeps results identical
 * whatever the thread count.  When the caller has a cancellation token
 * installed (ccomp/cancel.h), the workers share it: no task starts once the
 * call is cancelled, and the call returns CCOMP_ERR_CANCELLED. */
#ifndef CCOMP_PARALLEL_H
#define CCOMP_PARALLEL_H

#include <stddef.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-thread setup/teardown and the task body.  `worker` is the thread's index
 * in [0, nthreads); `state` is what init stored for that thread. */
typedef struct ccomp_parallel_ops {
    ccomp_status (*init)(void *ctx, int worker, void **state, ccomp_error *err);
    ccomp_status (*run)(void *ctx, void *state, size_t task, ccomp_error *err);
    void (*fini)(void *ctx, void *state);
} ccomp_parallel_ops;

/* Runs ops->run for every task.  On the first failure the remaining tasks are
 * skipped and the error of the lowest failing task index is returned, so the
 * reported error does not depend on scheduling.  init/fini may be NULL. */
ccomp_status ccomp_parallel_for(int nthreads, size_t ntasks, const ccomp_parallel_ops *ops, void *ctx,
                                ccomp_error *err);

/* Number of online CPUs (at least 1). */
int ccomp_cpu_count(void);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_PARALLEL_H */

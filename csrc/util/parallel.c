/* ccomp_parallel_for: a fork-join loop over tasks on a persistent pool of
 * worker threads.
 *
 * Starting threads for every call costs tens of microseconds (more in a VM),
 * which is the whole run time of a small product or a short attention step.
 * The pool starts its workers on first use and keeps them; between calls they
 * spin for a short while (a call that follows at once finds them awake), then
 * sleep on a condition variable.
 *
 * One call uses the pool at a time.  A call that finds it busy (another
 * thread's call, or a task that itself calls ccomp_parallel_for) starts its
 * own threads as before, so nesting and concurrent callers never wait on each
 * other.  After fork() the child has none of the parent's workers: the pool is
 * rebuilt on its first use there. */
#define _GNU_SOURCE
#include "ccomp/parallel.h"

#include <errno.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ccomp/cancel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

typedef struct shared_run {
    const ccomp_parallel_ops *ops;
    void *ctx;
    size_t ntasks;
    atomic_size_t next;
    atomic_int failed;
    atomic_int running;   /* own-thread fallback: workers besides the caller still working */
    ccomp_cancel *cancel; /* the caller's token (NULL: not interruptible) */
} shared_run;

typedef struct worker_slot {
    shared_run *run;
    int index;
    size_t failed_task; /* SIZE_MAX when this worker saw no failure */
    ccomp_error err;
} worker_slot;

/* Runs tasks from r until none is left, one failed or the call was cancelled; the body of every
 * worker.  Worker 0 is the calling thread, which owns the cancellation token; the others adopt it. */
static void work(worker_slot *w)
{
    shared_run *r = w->run;
    void *state = NULL;
    ccomp_cancel *prev = w->index == 0 ? NULL : ccomp_cancel_adopt(r->cancel);
    w->failed_task = SIZE_MAX;
    ccomp_error_clear(&w->err);
    if (r->ops->init != NULL && r->ops->init(r->ctx, w->index, &state, &w->err) != CCOMP_OK) {
        w->failed_task = 0;
        atomic_store(&r->failed, 1);
        if (w->index != 0) ccomp_cancel_adopt(prev);
        return;
    }
    for (;;) {
        if (atomic_load_explicit(&r->failed, memory_order_relaxed)) break;
        size_t t = atomic_fetch_add(&r->next, 1);
        if (t >= r->ntasks) break;
        if (r->cancel != NULL && ccomp_check_cancel(&w->err, "parallel task") != CCOMP_OK) {
            w->failed_task = t;
            atomic_store(&r->failed, 1);
            break;
        }
        if (r->ops->run(r->ctx, state, t, &w->err) != CCOMP_OK) {
            w->failed_task = t;
            atomic_store(&r->failed, 1);
            break;
        }
    }
    if (r->ops->fini != NULL) r->ops->fini(r->ctx, state);
    if (w->index != 0) ccomp_cancel_adopt(prev);
}

static void *thread_main(void *arg)
{
    worker_slot *w = (worker_slot *)arg;
    shared_run *r = w->run;
    work(w);
    atomic_fetch_sub(&r->running, 1);
    return NULL;
}

/* Sleeps about 10 ms (the caller's poll interval while it waits for workers). */
static void nap(void)
{
    struct timespec d = {0, 10000000};
    nanosleep(&d, NULL);
}

/* ------------------------------------------------------------------ pool */

#define POOL_MAX 256 /* workers besides the caller */
#define SPIN_NS 50000 /* how long a worker (or the caller) spins before it sleeps */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Spins until *word differs from `old` (until_zero = 0) or is 0 (until_zero = 1), or SPIN_NS have
 * passed; returns the last value read. */
static uint_fast64_t spin_wait(atomic_uint_fast64_t *word, uint_fast64_t old, int until_zero)
{
    uint64_t start = 0;
    unsigned k;
    for (k = 0;; k++) {
        uint_fast64_t v = atomic_load_explicit(word, memory_order_acquire);
        if (until_zero ? v == 0 : v != old) return v;
        if ((k & 63u) == 0) {
            uint64_t t = now_ns();
            if (k == 0)
                start = t;
            else if (t - start > SPIN_NS)
                return v;
        }
        CPU_RELAX();
    }
}

typedef struct pool {
    pthread_mutex_t lock; /* guards the sleeping/waking below */
    pthread_cond_t wake, done;
    int nworkers;         /* threads started */
    /* call number << 16 | workers taking part in it, published in one word so that a worker that wakes
     * late never pairs one call's number with another call's participants */
    atomic_uint_fast64_t call;
    atomic_uint_fast64_t remaining; /* workers of the current call still working */
    int sleepers;         /* workers waiting on `wake` */
    int caller_sleeping;  /* the caller waits on `done` */
    worker_slot *slots;   /* [POOL_MAX + 1]; slot 0 is the caller's */
    pthread_t tids[POOL_MAX];
} pool;

static pool g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};
static pthread_mutex_t g_pool_busy = PTHREAD_MUTEX_INITIALIZER; /* held by the call using the pool */

static void *pool_main(void *arg)
{
    pool *p = &g_pool;
    const uint_fast64_t index = (uint_fast64_t)(intptr_t)arg;
    /* a new worker takes part in the call that started it, whether or not that call has been published
     * yet: nothing equals this first `seen` */
    uint_fast64_t seen = UINT_FAST64_MAX;
    for (;;) {
        uint_fast64_t c = spin_wait(&p->call, seen, 0);
        if (c == seen) {
            pthread_mutex_lock(&p->lock);
            p->sleepers++;
            while ((c = atomic_load(&p->call)) == seen) pthread_cond_wait(&p->wake, &p->lock);
            p->sleepers--;
            pthread_mutex_unlock(&p->lock);
        }
        seen = c;
        if (index <= (c & 0xffffu)) {
            work(&p->slots[index]);
            if (atomic_fetch_sub_explicit(&p->remaining, 1, memory_order_acq_rel) == 1) {
                pthread_mutex_lock(&p->lock);
                if (p->caller_sleeping) pthread_cond_signal(&p->done);
                pthread_mutex_unlock(&p->lock);
            }
        }
    }
    return NULL;
}

/* Makes sure the pool has at least n workers (fewer when threads cannot be started). */
static void pool_grow(pool *p, int n)
{
    if (n > POOL_MAX) n = POOL_MAX;
    while (p->nworkers < n) {
        int index = p->nworkers + 1;
        if (pthread_create(&p->tids[p->nworkers], NULL, pool_main, (void *)(intptr_t)index) != 0) break;
        p->nworkers++;
    }
}

static void pool_after_fork_child(void)
{
    /* the workers do not exist in the child: start again from an empty pool */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    g_pool.lock = m;
    g_pool.wake = c;
    g_pool.done = c;
    g_pool.nworkers = 0;
    g_pool.sleepers = 0;
    g_pool.caller_sleeping = 0;
    atomic_store(&g_pool.remaining, 0);
    atomic_store(&g_pool.call, 0);
    g_pool_busy = m;
}

static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;
static int g_pool_ok;

static void pool_setup(void)
{
    g_pool.slots = (worker_slot *)calloc(POOL_MAX + 1, sizeof(worker_slot));
    g_pool_ok = g_pool.slots != NULL && pthread_atfork(NULL, NULL, pool_after_fork_child) == 0;
}

/* Runs r on the caller and `nworkers` pool workers; returns the number of workers that took part
 * (0: the pool could not start any, the caller ran every task). */
static int pool_run(pool *p, shared_run *r, int nworkers)
{
    int i;
    pool_grow(p, nworkers);
    if (nworkers > p->nworkers) nworkers = p->nworkers;
    for (i = 0; i <= nworkers; i++) {
        p->slots[i].run = r;
        p->slots[i].index = i;
        p->slots[i].failed_task = SIZE_MAX;
    }
    atomic_store(&p->remaining, (uint_fast64_t)nworkers);
    if (nworkers > 0) {
        uint_fast64_t c = atomic_load(&p->call);
        atomic_store_explicit(&p->call, ((c >> 16) + 1) << 16 | (uint_fast64_t)nworkers, memory_order_release);
        pthread_mutex_lock(&p->lock);
        if (p->sleepers > 0) pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
    work(&p->slots[0]);
    if (nworkers > 0 && spin_wait(&p->remaining, 0, 1) > 0) {
        pthread_mutex_lock(&p->lock);
        p->caller_sleeping = 1;
        while (atomic_load(&p->remaining) > 0) {
            if (r->cancel == NULL) {
                pthread_cond_wait(&p->done, &p->lock);
                continue;
            }
            /* an interruptible call keeps polling while the workers finish: they stop at their next check */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 10000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            if (pthread_cond_timedwait(&p->done, &p->lock, &until) == ETIMEDOUT) {
                pthread_mutex_unlock(&p->lock);
                (void)ccomp_cancelled();
                pthread_mutex_lock(&p->lock);
            }
        }
        p->caller_sleeping = 0;
        pthread_mutex_unlock(&p->lock);
    }
    return nworkers;
}

/* ------------------------------------------------------------------ entry */

int ccomp_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

/* The error of the lowest failing task among slots[0..n]; a cancelled call reports the cancellation. */
static ccomp_status collect(const shared_run *r, const worker_slot *slots, int n, ccomp_error *err)
{
    size_t worst = SIZE_MAX;
    int i, bad = -1;
    ccomp_status st;
    if (r->cancel != NULL && __atomic_load_n(&r->cancel->stop, __ATOMIC_RELAXED))
        return ccomp_fail(err, CCOMP_ERR_CANCELLED, "interrupted");
    for (i = 0; i <= n; i++)
        if (slots[i].failed_task != SIZE_MAX && (bad < 0 || slots[i].failed_task < worst)) {
            worst = slots[i].failed_task;
            bad = i;
        }
    if (bad < 0) return CCOMP_OK;
    st = slots[bad].err.code == CCOMP_OK ? CCOMP_ERR_BACKEND : slots[bad].err.code;
    if (err != NULL) {
        *err = slots[bad].err;
        err->code = st;
    }
    return st;
}

/* The fallback: threads started for this call and joined before it returns. */
static ccomp_status run_own_threads(shared_run *r, int nthreads, ccomp_error *err)
{
    worker_slot *slots = calloc((size_t)nthreads, sizeof *slots);
    pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
    int i, started = 0;
    ccomp_status st;
    if (slots == NULL || tids == NULL) {
        free(slots);
        free(tids);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "parallel_for: cannot allocate %d worker slots", nthreads);
    }
    for (i = 0; i < nthreads; i++) {
        slots[i].run = r;
        slots[i].index = i;
        slots[i].failed_task = SIZE_MAX;
    }
    /* Worker 0 runs on the calling thread; the others get their own. */
    for (i = 1; i < nthreads; i++) {
        atomic_fetch_add(&r->running, 1);
        if (pthread_create(&tids[i], NULL, thread_main, &slots[i]) != 0) {
            atomic_fetch_sub(&r->running, 1);
            break;
        }
        started = i;
    }
    work(&slots[0]);
    if (r->cancel != NULL)
        while (atomic_load(&r->running) > 0) {
            nap();
            (void)ccomp_cancelled();
        }
    for (i = 1; i <= started; i++) pthread_join(tids[i], NULL);
    st = collect(r, slots, started, err);
    free(slots);
    free(tids);
    return st;
}

ccomp_status ccomp_parallel_for(int nthreads, size_t ntasks, const ccomp_parallel_ops *ops, void *ctx,
                                ccomp_error *err)
{
    shared_run r;
    if (ops == NULL || ops->run == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "parallel_for: no task function given");
    if (nthreads < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", nthreads);
    if ((size_t)nthreads > ntasks) nthreads = ntasks == 0 ? 1 : (int)ntasks;

    r.ops = ops;
    r.ctx = ctx;
    r.ntasks = ntasks;
    atomic_init(&r.next, 0);
    atomic_init(&r.failed, 0);
    atomic_init(&r.running, 0);
    r.cancel = ccomp_cancel_current();

    if (nthreads == 1) {
        worker_slot one;
        memset(&one, 0, sizeof one);
        one.run = &r;
        work(&one);
        return collect(&r, &one, 0, err);
    }
    pthread_once(&g_pool_once, pool_setup);
    if (g_pool_ok && nthreads - 1 <= POOL_MAX && pthread_mutex_trylock(&g_pool_busy) == 0) {
        int used = pool_run(&g_pool, &r, nthreads - 1);
        ccomp_status st = collect(&r, g_pool.slots, used, err);
        pthread_mutex_unlock(&g_pool_busy);
        return st;
    }
    return run_own_threads(&r, nthreads, err);
}

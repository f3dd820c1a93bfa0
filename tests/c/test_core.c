/* C-level tests of the core: status reporting, the parallel loop, compressed
 * sizes against direct library calls, and ZIP-FIT scores against a plain
 * single-threaded computation.  `--quick` shrinks the sizes (sanitizer runs). */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lz4frame.h>
#include <zlib.h>
#include <zstd.h>

#include "ccomp/bigmem.h"
#include "ccomp/finite.h"
#include "ccomp/cancel.h"
#include "ccomp/parallel.h"
#include "ccomp/zipfit.h"

#include "check.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* ---- parallel_for ------------------------------------------------------------------ */

typedef struct { size_t fail_from; int *hits; } pf_ctx;

static ccomp_status pf_run(void *ctx, void *state, size_t t, ccomp_error *err)
{
    pf_ctx *c = ctx;
    (void)state;
    if (t >= c->fail_from && t % 7 == 3)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "task %zu failed", t);
    c->hits[t]++;
    return CCOMP_OK;
}

static void test_parallel(void)
{
    enum { N = 1000 };
    int hits[N];
    for (int threads = 1; threads <= 4; threads++) {
        memset(hits, 0, sizeof hits);
        pf_ctx c = {SIZE_MAX, hits};
        ccomp_parallel_ops ops = {NULL, pf_run, NULL};
        ccomp_error err;
        CHECK(ccomp_parallel_for(threads, N, &ops, &c, &err) == CCOMP_OK, "parallel_for failed");
        for (int i = 0; i < N; i++)
            CHECK(hits[i] == 1, "task %d ran %d times with %d threads", i, hits[i], threads);
        /* the reported failure is the lowest failing task whatever the scheduling */
        c.fail_from = 500;
        ccomp_status st = ccomp_parallel_for(threads, N, &ops, &c, &err);
        CHECK(st == CCOMP_ERR_VALUE, "expected value error, got %d", st);
        CHECK(strcmp(err.msg, "task 500 failed") == 0, "wrong failing task reported: %s", err.msg);
    }
    ccomp_error err;
    ccomp_parallel_ops ops = {NULL, pf_run, NULL};
    CHECK(ccomp_parallel_for(0, 10, &ops, NULL, &err) == CCOMP_ERR_VALUE, "threads=0 accepted");
    CHECK(ccomp_parallel_for(2, 10, NULL, NULL, &err) == CCOMP_ERR_VALUE, "NULL ops accepted");
}

/* The pool: many short calls with changing thread counts (workers that sit one call out must not
 * run the next one's tasks twice), calls from inside a task (nested: own threads), two callers at
 * once, and a call in a forked child (the parent's workers are gone there). */
typedef struct { atomic_int *hits; size_t n; int nested; } pool_ctx;

static ccomp_status pool_task(void *ctx, void *state, size_t t, ccomp_error *err)
{
    pool_ctx *c = ctx;
    (void)state;
    if (c->nested) {
        pool_ctx inner = {c->hits + t * 8, 8, 0};
        ccomp_parallel_ops ops = {NULL, pool_task, NULL};
        return ccomp_parallel_for(2, 8, &ops, &inner, err);
    }
    atomic_fetch_add(&c->hits[t], 1);
    return CCOMP_OK;
}

static int pool_round(int threads, size_t n, int nested)
{
    atomic_int *hits = calloc(n * (nested ? 8 : 1), sizeof *hits);
    pool_ctx c = {hits, n, nested};
    ccomp_parallel_ops ops = {NULL, pool_task, NULL};
    ccomp_error err;
    int ok = ccomp_parallel_for(threads, n, &ops, &c, &err) == CCOMP_OK;
    for (size_t i = 0; i < n * (nested ? 8 : 1); i++) ok &= atomic_load(&hits[i]) == 1;
    free(hits);
    return ok;
}

static void *pool_caller(void *arg)
{
    int bad = 0;
    (void)arg;
    for (int k = 0; k < 300; k++) bad += !pool_round(2 + k % 3, 37 + (size_t)k % 50, 0);
    return (void *)(intptr_t)bad;
}

static void test_pool(int quick)
{
    int rounds = quick ? 500 : 5000, bad = 0;
    for (int k = 0; k < rounds; k++) bad += !pool_round(1 + (k * 7) % 5, 1 + (size_t)(k * 13) % 40, 0);
    CHECK(bad == 0, "%d of %d pool rounds ran a task other than once", bad, rounds);
    CHECK(pool_round(3, 20, 1), "nested parallel_for ran a task other than once");
    pthread_t t[2];
    void *res[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, pool_caller, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], &res[i]);
    CHECK(res[0] == NULL && res[1] == NULL, "concurrent callers: %ld and %ld bad rounds", (long)(intptr_t)res[0],
          (long)(intptr_t)res[1]);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = 1;
        for (int k = 0; k < 50; k++) ok &= pool_round(2 + k % 3, 64, 0);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "parallel_for in a forked child failed (status %d)", status);
}

/* ---- sizes against the libraries ---------------------------------------------------------- */

static size_t zlib_gzip_size(const uint8_t *p, size_t n, int level)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&zs, n) + 64;
    uint8_t *out = malloc(cap);
    zs.next_in = (Bytef *)p;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    size_t r = zs.total_out + 18;
    deflateEnd(&zs);
    free(out);
    return r;
}

static size_t lz4_frame_size(const uint8_t *p, size_t n, int level)
{
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.compressionLevel = level;
    prefs.frameInfo.contentSize = n;
    size_t cap = LZ4F_compressFrameBound(n, &prefs);
    uint8_t *out = malloc(cap);
    size_t r = LZ4F_compressFrame(out, cap, p, n, &prefs);
    free(out);
    return r;
}

static size_t zstd_frame_size(const uint8_t *p, size_t n, int level)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    size_t cap = ZSTD_compressBound(n);
    uint8_t *out = malloc(cap);
    size_t r = ZSTD_compress2(c, out, cap, p, n);
    free(out);
    ZSTD_freeCCtx(c);
    return r;
}

static void fill(uint8_t *buf, size_t n, int kind)
{
    static const char words[] = "the cat sat on a mat while def return self value lambda ";
    for (size_t i = 0; i < n; i++) {
        uint64_t r = next_rand();
        buf[i] = kind == 0 ? (uint8_t)r : kind == 1 ? (uint8_t)words[r % (sizeof words - 1)] : (uint8_t)('a' + r % 3);
    }
}

static void test_sizes(int quick)
{
    const size_t lens[] = {0, 1, 2, 17, 300, 1500, 40000, 70000};
    const int nlen = quick ? 6 : 8;
    uint8_t *buf = malloc(70000);
    for (int li = 0; li < nlen; li++) {
        for (int kind = 0; kind < 3; kind++) {
            size_t n = lens[li];
            fill(buf, n, kind);
            for (int level = 1; level <= 9; level += quick ? 4 : 1) {
                for (int e = 0; e < 2; e++) {
                    ccomp_sizer *s = NULL;
                    ccomp_error err;
                    size_t got = 0;
                    ccomp_size_engine engine = e ? CCOMP_ENGINE_AUTO : CCOMP_ENGINE_LIBRARY;
                    CHECK(ccomp_sizer_create(CCOMP_GZIP, level, engine, &s, &err) == CCOMP_OK, "%s", err.msg);
                    CHECK(ccomp_sizer_size(s, buf, n / 2, buf + n / 2, n - n / 2, &got, &err) == CCOMP_OK, "%s", err.msg);
                    CHECK(got == zlib_gzip_size(buf, n, level), "gzip level %d engine %d n %zu kind %d: %zu", level, e, n,
                          kind, got);
                    ccomp_sizer_free(s);
                }
            }
            int lz4_levels[] = {0, 1, 9, 12};
            for (int k = 0; k < 4; k++) {
                ccomp_sizer *s = NULL;
                ccomp_error err;
                size_t got = 0;
                CHECK(ccomp_sizer_create(CCOMP_LZ4, lz4_levels[k], CCOMP_ENGINE_AUTO, &s, &err) == CCOMP_OK, "%s", err.msg);
                CHECK(ccomp_sizer_size(s, buf, n, NULL, 0, &got, &err) == CCOMP_OK, "%s", err.msg);
                CHECK(got == lz4_frame_size(buf, n, lz4_levels[k]), "lz4 level %d n %zu: %zu", lz4_levels[k], n, got);
                ccomp_sizer_free(s);
            }
            int zstd_levels[] = {-3, 1, 3, 12};
            for (int k = 0; k < 4; k++) {
                ccomp_sizer *s = NULL;
                ccomp_error err;
                size_t got = 0;
                CHECK(ccomp_sizer_create(CCOMP_ZSTD, zstd_levels[k], CCOMP_ENGINE_AUTO, &s, &err) == CCOMP_OK, "%s", err.msg);
                CHECK(ccomp_sizer_size(s, buf, n, NULL, 0, &got, &err) == CCOMP_OK, "%s", err.msg);
                CHECK(got == zstd_frame_size(buf, n, zstd_levels[k]), "zstd level %d n %zu: %zu", zstd_levels[k], n, got);
                ccomp_sizer_free(s);
            }
        }
    }
    free(buf);
    ccomp_sizer *s = NULL;
    ccomp_error err;
    CHECK(ccomp_sizer_create(CCOMP_GZIP, 10, CCOMP_ENGINE_AUTO, &s, &err) == CCOMP_ERR_VALUE, "gzip level 10 accepted");
    CHECK(strstr(err.msg, "[0, 9]") != NULL, "message does not give the range: %s", err.msg);
    CHECK(ccomp_sizer_create((ccomp_compressor)7, 1, CCOMP_ENGINE_AUTO, &s, &err) == CCOMP_ERR_VALUE, "compressor 7 accepted");
    CHECK(ccomp_sizer_create(CCOMP_LZ4, 9, CCOMP_ENGINE_MODEL, &s, &err) == CCOMP_ERR_VALUE, "model for lz4 HC accepted");
    CHECK(ccomp_sizer_create(CCOMP_ZSTD, 3, CCOMP_ENGINE_MODEL, &s, &err) == CCOMP_ERR_VALUE, "model for zstd accepted");
    CHECK(ccomp_sizer_create(CCOMP_GZIP, 0, CCOMP_ENGINE_MODEL, &s, &err) == CCOMP_ERR_VALUE, "model for gzip 0 accepted");
}

/* ---- scores -------------------------------------------------------------------------- */

/* Long texts: the sizers feed zlib, lz4 and zstd in slices (with Ctrl-C checks between them); the
 * sizes must equal the one-shot library calls, also with a sizer reused from text to text. */
static void test_sliced_sizes(int quick)
{
    const size_t lens[] = {65537, 131073, 200000, 262144, (size_t)1 << 20 | 7};
    const int nlen = quick ? 3 : 5;
    uint8_t *buf = malloc((size_t)1 << 20 | 7);
    const ccomp_compressor kinds[] = {CCOMP_GZIP, CCOMP_GZIP, CCOMP_GZIP, CCOMP_LZ4, CCOMP_LZ4, CCOMP_LZ4,
                                      CCOMP_ZSTD, CCOMP_ZSTD, CCOMP_ZSTD};
    const int levels[] = {1, 6, 9, 0, 1, 12, 1, 3, 19};
    for (int k = 0; k < 9; k++) {
        ccomp_sizer *s = NULL;
        ccomp_error err;
        CHECK(ccomp_sizer_create(kinds[k], levels[k], CCOMP_ENGINE_LIBRARY, &s, &err) == CCOMP_OK, "%s", err.msg);
        for (int li = 0; li < nlen; li++) {
            for (int kind = 0; kind < 3; kind++) {
                size_t n = lens[li], got = 0, want;
                if (quick && levels[k] >= 12 && n > 200000) continue;
                fill(buf, n, kind);
                CHECK(ccomp_sizer_size(s, buf, n / 3, buf + n / 3, n - n / 3, &got, &err) == CCOMP_OK, "%s", err.msg);
                want = kinds[k] == CCOMP_GZIP ? zlib_gzip_size(buf, n, levels[k])
                       : kinds[k] == CCOMP_LZ4 ? lz4_frame_size(buf, n, levels[k])
                                               : zstd_frame_size(buf, n, levels[k]);
                CHECK(got == want, "compressor %d level %d n %zu kind %d: sliced %zu, one-shot %zu", (int)kinds[k],
                      levels[k], n, kind, got, want);
            }
        }
        ccomp_sizer_free(s);
    }
    free(buf);
}

static int stop_at_second_poll(void *ctx)
{
    return ++*(int *)ctx >= 2;
}

/* One long text is one task: the compression itself must notice the cancellation. */
static void test_cancel_inside_one_text(void)
{
    const size_t n = (size_t)3 << 20;
    uint8_t *buf = malloc(n);
    fill(buf, n, 2);
    const ccomp_compressor kinds[] = {CCOMP_GZIP, CCOMP_GZIP, CCOMP_LZ4, CCOMP_ZSTD};
    const int levels[] = {9, 9, 12, 19};
    const ccomp_size_engine engines[] = {CCOMP_ENGINE_AUTO, CCOMP_ENGINE_LIBRARY, CCOMP_ENGINE_AUTO,
                                         CCOMP_ENGINE_AUTO};
    for (int k = 0; k < 4; k++) {
        int polls = 0;
        ccomp_cancel tok = {stop_at_second_poll, &polls, 0, 0};
        ccomp_text t = {buf, n};
        size_t size = 0;
        ccomp_error err;
        /* the pool polls once before the only task; the stop (second poll, 50 ms later) can only be seen
         * by checks inside the compression */
        ccomp_cancel *prev = ccomp_cancel_install(&tok);
        ccomp_status st = ccomp_compressed_sizes(kinds[k], levels[k], engines[k], &t, 1, 1, &size, &err);
        ccomp_cancel_install(prev);
        CHECK(st == CCOMP_ERR_CANCELLED, "compressor %d engine %d: status %d (%s)", (int)kinds[k], (int)engines[k],
              (int)st, err.msg);
        /* and the same call without a token finishes */
        ccomp_text small = {buf, 100000};
        st = ccomp_compressed_sizes(kinds[k], levels[k], engines[k], &small, 1, 1, &size, &err);
        CHECK(st == CCOMP_OK && size > 0, "compressor %d: call after a cancel: %d", (int)kinds[k], (int)st);
    }
    /* engine "model" never falls back to the library: lz4 over one block is an error */
    {
        ccomp_sizer *s = NULL;
        ccomp_error err;
        size_t got = 0;
        CHECK(ccomp_sizer_create(CCOMP_LZ4, 0, CCOMP_ENGINE_MODEL, &s, &err) == CCOMP_OK, "%s", err.msg);
        CHECK(ccomp_sizer_size(s, buf, 65536, NULL, 0, &got, &err) == CCOMP_OK, "%s", err.msg);
        CHECK(ccomp_sizer_size(s, buf, 40000, buf, 30000, &got, &err) == CCOMP_ERR_VALUE &&
                  strstr(err.msg, "up to 65536 bytes") != NULL,
              "lz4 model over one block: %s", err.msg);
        ccomp_sizer_free(s);
    }
    free(buf);
}

static void test_scores(int quick)
{
    const size_t ns = quick ? 12 : 60, nt = quick ? 5 : 23;
    ccomp_text *src = calloc(ns, sizeof *src), *tgt = calloc(nt, sizeof *tgt);
    uint8_t *pool = malloc(200000);
    fill(pool, 200000, 1);
    for (size_t i = 0; i < ns; i++) {
        src[i].len = (i == 3) ? 0 : (size_t)(next_rand() % 3000);
        src[i].data = pool + next_rand() % (200000 - 3000);
    }
    /* one long source takes the prefix-copy path of zlib */
    src[1].len = 20000;
    for (size_t j = 0; j < nt; j++) {
        tgt[j].len = (size_t)(next_rand() % 400);
        tgt[j].data = pool + next_rand() % (200000 - 400);
    }
    ccomp_compressor kinds[] = {CCOMP_GZIP, CCOMP_GZIP, CCOMP_LZ4, CCOMP_ZSTD};
    ccomp_size_engine engines[] = {CCOMP_ENGINE_LIBRARY, CCOMP_ENGINE_AUTO, CCOMP_ENGINE_AUTO, CCOMP_ENGINE_AUTO};
    int levels[] = {6, 1, 0, 3};
    for (int k = 0; k < 4; k++) {
        size_t *tsz = calloc(nt, sizeof *tsz);
        ccomp_error err;
        CHECK(ccomp_compressed_sizes(kinds[k], levels[k], engines[k], tgt, nt, 2, tsz, &err) == CCOMP_OK, "%s", err.msg);
        /* plain computation, one pair at a time with a fresh library call */
        double *expect = calloc(ns, sizeof *expect);
        uint8_t *cat = malloc(3000 + 20000 + 400);
        ccomp_sizer *s = NULL;
        CHECK(ccomp_sizer_create(kinds[k], levels[k], CCOMP_ENGINE_LIBRARY, &s, &err) == CCOMP_OK, "%s", err.msg);
        for (size_t i = 0; i < ns; i++) {
            size_t cx;
            ccomp_sizer_size(s, src[i].data, src[i].len, NULL, 0, &cx, &err);
            double sum = 0;
            for (size_t j = 0; j < nt; j++) {
                memcpy(cat, src[i].data, src[i].len);
                memcpy(cat + src[i].len, tgt[j].data, tgt[j].len);
                size_t cxy;
                ccomp_sizer_size(s, cat, src[i].len + tgt[j].len, NULL, 0, &cxy, &err);
                size_t lo = cx < tsz[j] ? cx : tsz[j], hi = cx < tsz[j] ? tsz[j] : cx;
                sum += 1.0 - ((double)cxy - (double)lo) / (double)hi;
            }
            expect[i] = sum / (double)nt;
        }
        ccomp_sizer_free(s);
        for (int threads = 1; threads <= 3; threads++) {
            double *got = calloc(ns, sizeof *got);
            CHECK(ccomp_zipfit_scores(kinds[k], levels[k], engines[k], src, ns, tgt, tsz, nt, threads, got, NULL, &err) == CCOMP_OK,
                  "%s", err.msg);
            for (size_t i = 0; i < ns; i++)
                CHECK(got[i] == expect[i], "compressor %d source %zu threads %d: %.17g != %.17g", k, i, threads, got[i],
                      expect[i]);
            free(got);
        }
        double dummy;
        CHECK(ccomp_zipfit_scores(kinds[k], levels[k], engines[k], src, 1, tgt, tsz, 0, 1, &dummy, NULL, &err) == CCOMP_ERR_VALUE,
              "empty target set accepted");
        free(expect);
        free(cat);
        free(tsz);
    }
    free(src);
    free(tgt);
    free(pool);
}

/* ccomp_first_nonfinite: NaN, +-inf and (float16) its own infinity found at their first index, across chunk
 * boundaries and thread counts; finite extremes (largest, subnormal, -0) pass */
static void test_finite(void)
{
    const size_t n = 300000;
    float *f = calloc(n, sizeof *f);
    double *d = calloc(n, sizeof *d);
    uint16_t *h = calloc(n, sizeof *h);
    const size_t spots[3] = {0, 65535, 299999};
    int t, s;
    f[7] = 3.4e38f;
    f[8] = 1e-45f;
    f[9] = -0.0f;
    d[7] = 1.7e308;
    h[7] = 0x7bff; /* the largest finite half */
    for (t = 1; t <= 3; t++) {
        CHECK(ccomp_first_nonfinite(f, CCOMP_FINITE_F32, n, t) == n, "finite float32 flagged");
        CHECK(ccomp_first_nonfinite(d, CCOMP_FINITE_F64, n, t) == n, "finite float64 flagged");
        CHECK(ccomp_first_nonfinite(h, CCOMP_FINITE_F16, n, t) == n, "finite float16 flagged");
    }
    for (s = 2; s >= 0; s--) {
        f[spots[s]] = s == 1 ? -INFINITY : NAN;
        d[spots[s]] = s == 1 ? INFINITY : NAN;
        h[spots[s]] = s == 1 ? 0xfc00 : 0x7e00;
        for (t = 1; t <= 3; t++) {
            CHECK(ccomp_first_nonfinite(f, CCOMP_FINITE_F32, n, t) == spots[s], "float32: wrong first index");
            CHECK(ccomp_first_nonfinite(d, CCOMP_FINITE_F64, n, t) == spots[s], "float64: wrong first index");
            CHECK(ccomp_first_nonfinite(h, CCOMP_FINITE_F16, n, t) == spots[s], "float16: wrong first index");
        }
    }
    CHECK(ccomp_first_nonfinite(f, 9, n, 1) == n && ccomp_first_nonfinite(f, CCOMP_FINITE_F32, 0, 1) == 0,
          "unknown kind or no values");
    free(f);
    free(d);
    free(h);
}

/* ccomp_alloc_big: usable blocks of every size, 2 MB aligned from 2 MB up on Linux */
/* Cancellation: a token whose poll asks to stop after `stop_after` polls. */
typedef struct cancel_probe {
    int polls, stop_after;
} cancel_probe;

static int probe_poll(void *ctx)
{
    cancel_probe *p = (cancel_probe *)ctx;
    return ++p->polls >= p->stop_after;
}

/* A long task: spins until cancelled (or a time limit, which the test reports). */
static ccomp_status spin_task(void *ctx, void *state, size_t t, ccomp_error *err)
{
    struct timespec a, b;
    (void)state;
    (void)t;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (;;) {
        if (ccomp_cancelled()) return ccomp_fail(err, CCOMP_ERR_CANCELLED, "spin: interrupted");
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (b.tv_sec - a.tv_sec > 5) return ccomp_fail(err, CCOMP_ERR_VALUE, "spin: never cancelled");
        if (ctx == NULL) return CCOMP_OK; /* the short form: one check, then done */
    }
}

static void test_cancel(void)
{
    const ccomp_parallel_ops ops = {NULL, spin_task, NULL};
    int threads[] = {1, 2, 5};
    CHECK(!ccomp_cancelled(), "no token installed: never cancelled");
    for (int k = 0; k < 3; k++) {
        cancel_probe probe = {0, 3};
        ccomp_cancel tok = {probe_poll, &probe, 0, 0};
        ccomp_error err;
        ccomp_cancel *prev = ccomp_cancel_install(&tok);
        int dummy = 1;
        ccomp_status st = ccomp_parallel_for(threads[k], 64, &ops, &dummy, &err);
        ccomp_cancel_install(prev);
        CHECK(st == CCOMP_ERR_CANCELLED, "threads=%d: cancelled call returns %d (%s)", threads[k], (int)st, err.msg);
        CHECK(probe.polls == 3, "threads=%d: polled %d times", threads[k], probe.polls);
        CHECK(ccomp_cancel_current() == NULL, "token removed");
        /* the pool is usable afterwards, and without a token nothing is cancelled */
        st = ccomp_parallel_for(threads[k], 64, &ops, NULL, &err);
        CHECK(st == CCOMP_OK, "threads=%d: call after a cancel returns %d", threads[k], (int)st);
    }
    {
        /* a token that never stops changes nothing */
        cancel_probe probe = {0, 1 << 30};
        ccomp_cancel tok = {probe_poll, &probe, 0, 0};
        ccomp_error err;
        ccomp_cancel *prev = ccomp_cancel_install(&tok);
        ccomp_status st = ccomp_parallel_for(2, 1000, &ops, NULL, &err);
        CHECK(st == CCOMP_OK, "quiet token, 2 threads: status %d", (int)st);
        /* one thread runs every task itself, so it polls (the token is due at once) */
        st = ccomp_parallel_for(1, 1000, &ops, NULL, &err);
        ccomp_cancel_install(prev);
        CHECK(st == CCOMP_OK && probe.polls >= 1, "quiet token: status %d, %d polls", (int)st, probe.polls);
    }
}

static void test_bigmem(void)
{
    const size_t sizes[4] = {0, 100, (size_t)2 << 20, (size_t)5 << 20 | 123};
    int i;
    for (i = 0; i < 4; i++) {
        unsigned char *p = ccomp_alloc_big(sizes[i]);
        CHECK(p != NULL, "alloc_big(%zu) failed", sizes[i]);
        if (p == NULL) continue;
        memset(p, 0xab, sizes[i]);
        CHECK(sizes[i] == 0 || p[sizes[i] - 1] == 0xab, "alloc_big(%zu): last byte", sizes[i]);
#if defined(__linux__)
        CHECK(sizes[i] < ((size_t)2 << 20) || (uintptr_t)p % ((uintptr_t)2 << 20) == 0, "alloc_big(%zu) not aligned",
              sizes[i]);
#endif
        free(p);
    }
}

/* ccomp_first_nonfinite on misaligned arrays (a view of a byte buffer at an odd offset): the right index and,
 * under UBSan, no misaligned load */
static void test_finite_misaligned(void)
{
    const size_t n = 70000;
    unsigned char *buf = calloc(n * 8 + 8, 1);
    const float nan32 = NAN;
    const double inf64 = INFINITY;
    const uint16_t inf16 = 0x7c00;
    int t;
    for (t = 1; t <= 2; t++) {
        CHECK(ccomp_first_nonfinite(buf + 1, CCOMP_FINITE_F32, n, t) == n, "misaligned float32 flagged");
        CHECK(ccomp_first_nonfinite(buf + 3, CCOMP_FINITE_F64, n, t) == n, "misaligned float64 flagged");
        CHECK(ccomp_first_nonfinite(buf + 1, CCOMP_FINITE_F16, n, t) == n, "misaligned float16 flagged");
    }
    memcpy(buf + 1 + 4 * 65537, &nan32, 4);
    CHECK(ccomp_first_nonfinite(buf + 1, CCOMP_FINITE_F32, n, 2) == 65537, "misaligned float32: wrong index");
    memset(buf, 0, n * 8 + 8);
    memcpy(buf + 3 + 8 * 12345, &inf64, 8);
    CHECK(ccomp_first_nonfinite(buf + 3, CCOMP_FINITE_F64, n, 2) == 12345, "misaligned float64: wrong index");
    memset(buf, 0, n * 8 + 8);
    memcpy(buf + 1 + 2 * 69999, &inf16, 2);
    CHECK(ccomp_first_nonfinite(buf + 1, CCOMP_FINITE_F16, n, 2) == 69999, "misaligned float16: wrong index");
    free(buf);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    test_parallel();
    test_pool(quick);
    test_finite();
    test_finite_misaligned();
    test_cancel();
    test_cancel_inside_one_text();
    test_bigmem();
    test_sizes(quick);
    test_sliced_sizes(quick);
    test_scores(quick);
    if (test_failures) {
        fprintf(stderr, "test_core: %d test_failures\n", test_failures);
        return 1;
    }
    printf("test_core: all checks passed\n");
    return 0;
}

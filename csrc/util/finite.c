/* Finiteness checks (ccomp/finite.h): each task scans a chunk for an all-ones exponent without branches,
 * then, only in a chunk that has one, finds the first. */
#include "ccomp/finite.h"

#include <stdint.h>
#include <string.h>

#include "ccomp/parallel.h"

#define CHUNK ((size_t)1 << 16)

typedef struct finite_job {
    const void *x;
    int kind;
    size_t n, first; /* first: the smallest bad index found, n if none (updated atomically) */
} finite_job;

static int bad_at(const finite_job *j, size_t i)
{
    switch (j->kind) {
    case CCOMP_FINITE_F32: {
        uint32_t u;
        memcpy(&u, (const char *)j->x + 4 * i, 4);
        return (u & 0x7f800000u) == 0x7f800000u;
    }
    case CCOMP_FINITE_F64: {
        uint64_t u;
        memcpy(&u, (const char *)j->x + 8 * i, 8);
        return (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
    }
    default: {
        uint16_t u;
        memcpy(&u, (const char *)j->x + 2 * i, 2);
        return (u & 0x7c00u) == 0x7c00u;
    }
    }
}

/* whether the chunk [a, b) holds a non-finite value: the count of all-ones exponents, summed.  The array may
 * be misaligned (a view of a byte buffer at an odd offset): elements are read through one-byte-aligned types,
 * 16 at a time so that the compiler turns each block into vector loads and compares. */
typedef uint16_t u16_any __attribute__((aligned(1), may_alias));
typedef uint32_t u32_any __attribute__((aligned(1), may_alias));
typedef uint64_t u64_any __attribute__((aligned(1), may_alias));

#define COUNT_BAD(T, MASK)                                                                                   \
    do {                                                                                                     \
        const T *u = (const T *)j->x;                                                                        \
        for (i = a; i + 16 <= b; i += 16) {                                                                  \
            unsigned l, blk = 0;                                                                             \
            for (l = 0; l < 16; l++) blk += (u[i + l] & (MASK)) == (MASK);                                   \
            c += blk;                                                                                        \
        }                                                                                                    \
        for (; i < b; i++) c += (u[i] & (MASK)) == (MASK);                                                   \
    } while (0)

static size_t count_bad(const finite_job *j, size_t a, size_t b)
{
    size_t i, c = 0;
    if (j->kind == CCOMP_FINITE_F32)
        COUNT_BAD(u32_any, 0x7f800000u);
    else if (j->kind == CCOMP_FINITE_F64)
        COUNT_BAD(u64_any, 0x7ff0000000000000ull);
    else
        COUNT_BAD(u16_any, 0x7c00u);
    return c;
}

static ccomp_status finite_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    finite_job *j = (finite_job *)ctx;
    const size_t a = task * CHUNK, b = a + CHUNK < j->n ? a + CHUNK : j->n;
    size_t i, cur;
    (void)state;
    (void)err;
    if (count_bad(j, a, b) == 0) return CCOMP_OK;
    for (i = a; i < b && !bad_at(j, i); i++) continue;
    cur = __atomic_load_n(&j->first, __ATOMIC_RELAXED);
    while (i < cur && !__atomic_compare_exchange_n(&j->first, &cur, i, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        continue;
    return CCOMP_OK;
}

size_t ccomp_first_nonfinite(const void *x, int kind, size_t n, int threads)
{
    ccomp_parallel_ops ops = {NULL, finite_run, NULL};
    finite_job j;
    ccomp_error err;
    ccomp_status st;
    if (n == 0 || (kind != CCOMP_FINITE_F32 && kind != CCOMP_FINITE_F64 && kind != CCOMP_FINITE_F16)) return n;
    j.x = x;
    j.kind = kind;
    j.n = n;
    j.first = n;
    st = ccomp_parallel_for(threads < 1 ? 1 : threads, (n + CHUNK - 1) / CHUNK, &ops, &j, &err);
    if (st == CCOMP_ERR_CANCELLED) return n; /* the caller is being interrupted: no answer is needed */
    if (st != CCOMP_OK) {
        /* the pool could not start (no memory for threads): the same scan on this thread */
        size_t i;
        for (i = 0; i < n; i++)
            if (bad_at(&j, i)) return i;
        return n;
    }
    return j.first;
}

/* Finiteness checks of float arrays, on all threads (a single pass over the bits). */
#ifndef CCOMP_FINITE_H
#define CCOMP_FINITE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { CCOMP_FINITE_F32 = 0, CCOMP_FINITE_F64 = 1, CCOMP_FINITE_F16 = 2 };

/* The index of the first NaN or infinity among the n values (kind CCOMP_FINITE_*) at x, or n when all are
 * finite (also for an unknown kind, which has no values to judge: callers pass one of the three, and when the
 * call is cancelled, since its caller is being interrupted). */
size_t ccomp_first_nonfinite(const void *x, int kind, size_t n, int threads);

#ifdef __cplusplus
}
#endif

#endif

// Assertions and helpers shared by the emulator's C++ tests (tests/simt/*.cu).
#ifndef CCOMP_SIMT_TEST_H
#define CCOMP_SIMT_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int simt_test_failures = 0;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            simt_test_failures++;                                                   \
        }                                                                           \
    } while (0)

#define CHECK_EQ(a, b)                                                                                          \
    do {                                                                                                        \
        const long long a_ = (long long)(a), b_ = (long long)(b);                                               \
        if (a_ != b_) {                                                                                         \
            fprintf(stderr, "%s:%d: check failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, #a, #b, a_, b_); \
            simt_test_failures++;                                                                               \
        }                                                                                                       \
    } while (0)

// The schedules every deterministic kernel must agree under.
static const char *const kOrders[] = {"forward", "reverse", "random:1", "random:20240917"};

static inline int simt_test_done(const char *name)
{
    if (simt_test_failures) {
        fprintf(stderr, "%s: %d checks failed\n", name, simt_test_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif

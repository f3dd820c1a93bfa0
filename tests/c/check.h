/* CHECK: the assertion of the C test programs (records and goes on). */
#ifndef CCOMP_TEST_CHECK_H
#define CCOMP_TEST_CHECK_H

#include <stdio.h>

/* Failed CHECKs of the test program (each test file includes this header once). */
static int test_failures = 0;

/* Records a failure with its place and a printf-style message, and goes on. */
#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                    \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
            test_failures++;                                                                                           \
        }                                                                                                              \
    } while (0)

#endif

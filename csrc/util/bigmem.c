/* Large scratch buffers (ccomp/bigmem.h). */
#define _GNU_SOURCE
#include "ccomp/bigmem.h"

#include <stdlib.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)

void *ccomp_alloc_big(size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= HUGE_PAGE) {
        const size_t rounded = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        void *p = NULL;
        if (posix_memalign(&p, HUGE_PAGE, rounded) != 0) return NULL;
        (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: where refused, ordinary pages */
        return p;
    }
#endif
    return malloc(n ? n : 1);
}

/* Large scratch buffers (internal to the core): on Linux, blocks of 2 MB and more are aligned to 2 MB and
 * advised for transparent huge pages, so that first touching them costs one page fault per 2 MB instead
 * of one per 4 KB (what dominates filling a fresh buffer).  Free with free(). */
#ifndef CCOMP_BIGMEM_H
#define CCOMP_BIGMEM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* n bytes (uninitialized), or NULL when out of memory (n = 0 gives a valid pointer to free). */
void *ccomp_alloc_big(size_t n);

#ifdef __cplusplus
}
#endif

#endif

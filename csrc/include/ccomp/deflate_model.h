/* Size-only model of zlib's deflate.
 *
 * Gives exactly the length in bytes of zlib's raw deflate stream
 * (deflateInit2(level, Z_DEFLATED, -15, memLevel 8, Z_DEFAULT_STRATEGY), all
 * input given at once, Z_FINISH) without producing the compressed bits, for
 * levels 1-9.  gzip.compress(data, L) is that length plus 18 (10-byte header,
 * 8-byte trailer).  It reproduces zlib 1.2.13's LZ77 parse, block boundaries and
 * block-type choice; ccomp_deflate_model_supported() says whether the zlib that
 * ccomp links is one whose output it reproduces.
 *
 * A model is built once per level and reused; it is not thread-safe (use one per
 * thread).  Prefix reuse: after ccomp_deflate_model_set_prefix(m, a), each
 * ccomp_deflate_model_size_with_prefix(m, b) returns the size of a||b with work
 * proportional to len(b) (plus a small constant), leaving the prefix state intact.
 */
#ifndef CCOMP_DEFLATE_MODEL_H
#define CCOMP_DEFLATE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ccomp_deflate_model ccomp_deflate_model;

/* 1 when the linked zlib's deflate output is reproduced by this model
 * (checked against zlibVersion() at run time), else 0. */
int ccomp_deflate_model_supported(void);

ccomp_status ccomp_deflate_model_create(int level, ccomp_deflate_model **out, ccomp_error *err);
void ccomp_deflate_model_free(ccomp_deflate_model *m);

/* *out = length of the raw deflate stream of a||b (either may be empty / NULL when its length is 0). */
ccomp_status ccomp_deflate_model_size(ccomp_deflate_model *m, const uint8_t *a, size_t na,
                                      const uint8_t *b, size_t nb, size_t *out, ccomp_error *err);

/* Parses a once and keeps that state as the prefix of later calls. */
ccomp_status ccomp_deflate_model_set_prefix(ccomp_deflate_model *m, const uint8_t *a, size_t na,
                                            ccomp_error *err);

/* *out = length of the raw deflate stream of prefix||b; the prefix state is kept for the next call. */
ccomp_status ccomp_deflate_model_size_with_prefix(ccomp_deflate_model *m, const uint8_t *b, size_t nb,
                                                  size_t *out, ccomp_error *err);

/* out[i] = length of the raw deflate stream of prefix||bs[i] for i < count:
 * the same numbers as count calls of size_with_prefix, faster, because the
 * Huffman trees of up to four final blocks are built in lockstep. */
ccomp_status ccomp_deflate_model_sizes_with_prefix(ccomp_deflate_model *m, const uint8_t *const *bs,
                                                   const size_t *nbs, size_t count, size_t *out, ccomp_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_DEFLATE_MODEL_H */

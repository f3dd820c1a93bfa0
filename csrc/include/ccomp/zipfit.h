/* ZIP-FIT: compressed sizes, normalised compression distance and alignment
 * scores (Obbad et al. 2024).
 *
 *   NCD(x, y) = (C(x||y) - min(C(x), C(y))) / max(C(x), C(y))
 *   score(x)  = mean_j (1 - NCD(x, y_j))
 *
 * C is the length of what a Python user gets from the compressor's library:
 *   gzip: len(gzip.compress(b, compresslevel=L))              levels 0-9
 *   lz4:  len(lz4.frame.compress(b, compression_level=L))     levels 0-12 (python-lz4 defaults)
 *   zstd: len(zstandard.ZstdCompressor(level=L).compress(b))  levels ZSTD_minCLevel()..22
 */
#ifndef CCOMP_ZIPFIT_H
#define CCOMP_ZIPFIT_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ccomp_compressor {
    CCOMP_GZIP = 0,
    CCOMP_LZ4 = 1,
    CCOMP_ZSTD = 2
} ccomp_compressor;

/* How sizes are computed: the library itself, or a size-only model (the deflate
 * model for gzip, exact for the zlib versions it supports at levels 1-9; the lz4
 * model for inputs of one 64 KB block).  zstd sizes always come from the library. */
typedef enum ccomp_size_engine {
    CCOMP_ENGINE_AUTO = 0,  /* the model where it applies, else zlib */
    CCOMP_ENGINE_LIBRARY = 1,
    CCOMP_ENGINE_MODEL = 2  /* the model only: CCOMP_ERR_VALUE where it does not apply (lz4 over one 64 KB block) */
} ccomp_size_engine;

/* Checks compressor and level (CCOMP_ERR_VALUE naming the valid range). */
ccomp_status ccomp_check_level(ccomp_compressor c, int level, ccomp_error *err);
/* The valid level range of compressor c, in *lo and *hi. */
void ccomp_level_range(ccomp_compressor c, int *lo, int *hi);

/* Validates compressor, level and engine, and says whether a size model will
 * compute the sizes (*use_model, may be NULL), without allocating anything. */
ccomp_status ccomp_engine_choice(ccomp_compressor c, int level, ccomp_size_engine engine, int *use_model,
                                 ccomp_error *err);
/* "deflate-model", "zlib", "lz4-model", "lz4" or "zstd". */
const char *ccomp_engine_name(ccomp_compressor c, int use_model);

/* A reusable per-thread compressor that only reports sizes. */
typedef struct ccomp_sizer ccomp_sizer;

ccomp_status ccomp_sizer_create(ccomp_compressor c, int level, ccomp_size_engine engine, ccomp_sizer **out,
                                ccomp_error *err);
void ccomp_sizer_free(ccomp_sizer *s);
/* Name of the engine a sizer uses: "zlib", "deflate-model", "lz4", "zstd". */
const char *ccomp_sizer_engine(const ccomp_sizer *s);

/* *out = C(a||b); b may be empty. */
ccomp_status ccomp_sizer_size(ccomp_sizer *s, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                              size_t *out, ccomp_error *err);

/* Prefix reuse: keeps a as the start of the following size_with_prefix calls,
 * where it pays (deflate model; zlib stream copy for long prefixes). */
ccomp_status ccomp_sizer_set_prefix(ccomp_sizer *s, const uint8_t *a, size_t na, ccomp_error *err);
ccomp_status ccomp_sizer_size_with_prefix(ccomp_sizer *s, const uint8_t *b, size_t nb, size_t *out,
                                          ccomp_error *err);
/* out[i] = C(prefix||bs[i]) for i < count: the numbers of count size_with_prefix
 * calls, computed together where the engine gains from it (the deflate model
 * builds two blocks' Huffman trees interleaved). */
ccomp_status ccomp_sizer_sizes_with_prefix(ccomp_sizer *s, const uint8_t *const *bs, const size_t *nbs, size_t count,
                                           size_t *out, ccomp_error *err);

/* A borrowed text: pointer and length (no terminator needed). */
typedef struct ccomp_text {
    const uint8_t *data;
    size_t len;
} ccomp_text;

/* Scores sources against targets whose sizes C(y_j) are given.
 * scores[i] = mean_j (1 - NCD(x_i, y_j)), summed over j in order, then divided by n.
 * Sizes of the sources are written to source_sizes when not NULL.
 * Memory is O(threads); the pair list is never built.  Thread count does not
 * change the result. */
ccomp_status ccomp_zipfit_scores(ccomp_compressor c, int level, ccomp_size_engine engine,
                                 const ccomp_text *sources, size_t nsources,
                                 const ccomp_text *targets, const size_t *target_sizes, size_t ntargets,
                                 int nthreads, double *scores, size_t *source_sizes, ccomp_error *err);

/* sizes[i] = C(texts[i]) on nthreads threads.  Like the scores, interruptible through the caller's
 * cancellation token (ccomp/cancel.h) also inside one long compression: CCOMP_ERR_CANCELLED. */
ccomp_status ccomp_compressed_sizes(ccomp_compressor c, int level, ccomp_size_engine engine,
                                    const ccomp_text *texts, size_t n, int nthreads, size_t *sizes,
                                    ccomp_error *err);

/* Library versions linked: e.g. "1.2.13". */
const char *ccomp_zlib_version(void);
const char *ccomp_lz4_version(void);
const char *ccomp_zstd_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_ZIPFIT_H */

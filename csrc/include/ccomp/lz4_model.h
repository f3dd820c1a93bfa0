/* Size-only model of lz4's fast block compressor inside an lz4 frame.
 *
 * Gives exactly len(lz4.frame.compress(a||b, compression_level=L)) for the
 * python-lz4 defaults (64 KB linked blocks, content size stored, no checksums)
 * and L in 0-2 (lz4's fast mode, acceleration 1), for inputs that fit one block
 * (a||b at most 64 KB), without producing the compressed bytes.  Larger
 * inputs and the HC levels are the library's job (ccomp_lz4_model_size returns
 * CCOMP_ERR_UNSUPPORTED for them; callers fall back to LZ4F_compressFrame).
 *
 * Prefix reuse: after ccomp_lz4_model_set_prefix(m, a), each
 * ccomp_lz4_model_size_with_prefix(m, b) costs work proportional to len(b)
 * plus a short re-parsed tail of a.  One model per thread.
 */
#ifndef CCOMP_LZ4_MODEL_H
#define CCOMP_LZ4_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ccomp_lz4_model ccomp_lz4_model;

/* 1 when the linked lz4 is a version whose output this model reproduces. */
int ccomp_lz4_model_supported(void);
/* Largest a||b length the model handles. */
size_t ccomp_lz4_model_max_input(void);

ccomp_status ccomp_lz4_model_create(ccomp_lz4_model **out, ccomp_error *err);
void ccomp_lz4_model_free(ccomp_lz4_model *m);

ccomp_status ccomp_lz4_model_size(ccomp_lz4_model *m, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                                  size_t *out, ccomp_error *err);
ccomp_status ccomp_lz4_model_set_prefix(ccomp_lz4_model *m, const uint8_t *a, size_t na, ccomp_error *err);
ccomp_status ccomp_lz4_model_size_with_prefix(ccomp_lz4_model *m, const uint8_t *b, size_t nb, size_t *out,
                                              ccomp_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_LZ4_MODEL_H */

/* Status codes and error reports of the ccomp C core.
 *
 * Every core function that can fail returns a ccomp_status and, when given a
 * non-NULL ccomp_error, fills it with a message that says what was expected and
 * what was received.  The core never aborts, exits or prints; the Python
 * binding maps the code to an exception:
 *
 *   CCOMP_ERR_VALUE       -> ValueError
 *   CCOMP_ERR_TYPE        -> TypeError
 *   CCOMP_ERR_NOMEM       -> MemoryError
 *   CCOMP_ERR_CORRUPT     -> ccomp.CorruptStreamError (a ValueError)
 *   CCOMP_ERR_BACKEND     -> RuntimeError (zlib / lz4 / zstd / CUDA failed)
 *   CCOMP_ERR_UNSUPPORTED -> RuntimeError (feature not compiled in / no device)
 *   CCOMP_ERR_CANCELLED   -> KeyboardInterrupt (a progress callback asked to stop)
 */
#ifndef CCOMP_STATUS_H
#define CCOMP_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ccomp_status {
    CCOMP_OK = 0,
    CCOMP_ERR_VALUE = 1,
    CCOMP_ERR_TYPE = 2,
    CCOMP_ERR_NOMEM = 3,
    CCOMP_ERR_CORRUPT = 4,
    CCOMP_ERR_BACKEND = 5,
    CCOMP_ERR_UNSUPPORTED = 6,
    CCOMP_ERR_CANCELLED = 7
} ccomp_status;

#define CCOMP_ERROR_MSG_LEN 256

typedef struct ccomp_error {
    ccomp_status code;
    char msg[CCOMP_ERROR_MSG_LEN];
} ccomp_error;

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so that callers can write `return ccomp_fail(err, ...)`. */
ccomp_status ccomp_fail(ccomp_error *err, ccomp_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Clears err to CCOMP_OK with an empty message. */
void ccomp_error_clear(ccomp_error *err);

/* A short constant name for a status code ("ok", "value error", ...). */
const char *ccomp_status_name(ccomp_status code);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_STATUS_H */

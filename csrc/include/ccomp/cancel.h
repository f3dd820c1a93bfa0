/* Cancellation of long core calls (Ctrl-C in a notebook).
 *
 * The core keeps no globals: a caller that wants its call to be interruptible
 * installs a ccomp_cancel token on its own thread for the duration of the call
 * (the Python binding does this around every call that runs without the GIL).
 * Long loops call ccomp_cancelled() at a bounded interval; on the installing
 * thread it calls the token's poll function at most every CCOMP_CANCEL_POLL_MS,
 * and once poll asks to stop, ccomp_cancelled() is true on every thread that
 * works for the call (ccomp_parallel_for hands the token to its workers, checks
 * it before each task and keeps polling while the caller waits for the pool).
 * A cancelled call returns CCOMP_ERR_CANCELLED; the pool stays usable.
 * Without an installed token ccomp_cancelled() is always 0. */
#ifndef CCOMP_CANCEL_H
#define CCOMP_CANCEL_H

#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CCOMP_CANCEL_POLL_MS 50

typedef struct ccomp_cancel {
    int (*poll)(void *ctx); /* called on the installing thread; nonzero: stop the call */
    void *ctx;
    int stop;               /* set (atomically) once the call is to stop */
    uint64_t next_poll_ns;  /* the installing thread's; 0: poll at the first check */
} ccomp_cancel;

/* Fills c with poll/ctx; the first poll comes CCOMP_CANCEL_POLL_MS from now (a short call never polls). */
void ccomp_cancel_init(ccomp_cancel *c, int (*poll)(void *ctx), void *ctx);

/* Makes c the token of the calling thread (NULL: none) and returns the one it
 * replaces, to be given back to ccomp_cancel_install when the call ends. */
ccomp_cancel *ccomp_cancel_install(ccomp_cancel *c);

/* The calling thread's token (NULL when none is installed). */
ccomp_cancel *ccomp_cancel_current(void);

/* Makes c the calling worker thread's token without owning it (it never polls). */
ccomp_cancel *ccomp_cancel_adopt(ccomp_cancel *c);

/* 1 when the current call is to stop (polling when due on the installing thread), else 0. */
int ccomp_cancelled(void);

/* ccomp_cancelled() as a status: CCOMP_ERR_CANCELLED with a message naming `where`, else CCOMP_OK. */
ccomp_status ccomp_check_cancel(ccomp_error *err, const char *where);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_CANCEL_H */

/* Thread-local cancellation tokens: see ccomp/cancel.h. */
#define _GNU_SOURCE
#include "ccomp/cancel.h"

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

static _Thread_local ccomp_cancel *tls_token;
static _Thread_local int tls_owner; /* this thread installed tls_token and may poll it */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void ccomp_cancel_init(ccomp_cancel *c, int (*poll)(void *ctx), void *ctx)
{
    c->poll = poll;
    c->ctx = ctx;
    c->stop = 0;
    c->next_poll_ns = now_ns() + (uint64_t)CCOMP_CANCEL_POLL_MS * 1000000u;
}

ccomp_cancel *ccomp_cancel_install(ccomp_cancel *c)
{
    ccomp_cancel *prev = tls_token;
    tls_token = c;
    tls_owner = c != NULL;
    return prev;
}

ccomp_cancel *ccomp_cancel_adopt(ccomp_cancel *c)
{
    ccomp_cancel *prev = tls_token;
    tls_token = c;
    tls_owner = 0;
    return prev;
}

ccomp_cancel *ccomp_cancel_current(void)
{
    return tls_token;
}

int ccomp_cancelled(void)
{
    ccomp_cancel *c = tls_token;
    if (c == NULL) return 0;
    if (__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) return 1;
    if (tls_owner && c->poll != NULL) {
        uint64_t t = now_ns();
        if (t >= c->next_poll_ns) {
            c->next_poll_ns = t + (uint64_t)CCOMP_CANCEL_POLL_MS * 1000000u;
            if (c->poll(c->ctx)) {
                __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
                return 1;
            }
        }
    }
    return 0;
}

ccomp_status ccomp_check_cancel(ccomp_error *err, const char *where)
{
    if (!ccomp_cancelled()) return CCOMP_OK;
    return ccomp_fail(err, CCOMP_ERR_CANCELLED, "%s: interrupted", where);
}

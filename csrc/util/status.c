#include "ccomp/status.h"

#include <stdarg.h>
#include <stdio.h>

ccomp_status ccomp_fail(ccomp_error *err, ccomp_status code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void ccomp_error_clear(ccomp_error *err)
{
    if (err != NULL) {
        err->code = CCOMP_OK;
        err->msg[0] = '\0';
    }
}

const char *ccomp_status_name(ccomp_status code)
{
    switch (code) {
    case CCOMP_OK: return "ok";
    case CCOMP_ERR_VALUE: return "value error";
    case CCOMP_ERR_TYPE: return "type error";
    case CCOMP_ERR_NOMEM: return "out of memory";
    case CCOMP_ERR_CORRUPT: return "corrupt stream";
    case CCOMP_ERR_BACKEND: return "backend error";
    case CCOMP_ERR_UNSUPPORTED: return "unsupported";
    case CCOMP_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

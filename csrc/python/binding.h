/* Helpers shared by the binding files of ccomp._core. */
#ifndef CCOMP_PY_BINDING_H
#define CCOMP_PY_BINDING_H

#include <Python.h>

#include "ccomp/cancel.h"
#include "ccomp/status.h"

/* Raises the exception for err's code with "operation: message"; returns NULL.  For
 * CCOMP_ERR_CANCELLED the exception that stopped the call (KeyboardInterrupt from
 * Ctrl-C, or whatever a signal handler raised) is kept when one is pending. */
PyObject *ccomp_raise(const ccomp_error *err, const char *operation);

/* threads=None -> all cores; otherwise an int in [1, 4096].  Returns -1 with an exception set on bad input. */
int ccomp_resolve_threads(PyObject *obj, int *threads);

/* An interruptible stretch without the GIL: ccomp_nogil_begin installs a
 * cancellation token whose poll takes the GIL back for a moment and runs
 * Python's signal handlers (PyErr_CheckSignals), then releases the GIL;
 * ccomp_nogil_end takes the GIL back, removes the token and keeps the
 * handler's exception: ccomp_raise raises it when the core call returned
 * CCOMP_ERR_CANCELLED; a call that finished all the same returns its result
 * and the exception is raised just after it (a pending call).
 * Every binding releases the GIL through CCOMP_NOGIL_BEGIN / CCOMP_NOGIL_END. */
typedef struct ccomp_nogil {
    ccomp_cancel token;
    ccomp_cancel *prev;
    PyThreadState *save;
    PyObject *exc_type, *exc_value, *exc_tb; /* what the signal handler raised */
} ccomp_nogil;

void ccomp_nogil_begin(ccomp_nogil *g);
void ccomp_nogil_end(ccomp_nogil *g);

#define CCOMP_NOGIL_BEGIN                                                                                      \
    {                                                                                                          \
        ccomp_nogil ccomp_nogil_;                                                                              \
        ccomp_nogil_begin(&ccomp_nogil_);
#define CCOMP_NOGIL_END                                                                                        \
    ccomp_nogil_end(&ccomp_nogil_);                                                                            \
    }

/* Method tables of the binding files, added to ccomp._core at import. */
extern PyMethodDef ccomp_zipfit_methods[]; /* zipfit_module.c: compressed sizes, ZIP-FIT scores */
extern PyMethodDef ccomp_ac_methods[]; /* ac_module.c: range coder, quantization, containers */
extern PyMethodDef ccomp_cm_methods[]; /* cm_module.c: the built-in context-mixing compressor */
extern PyMethodDef ccomp_kv_methods[]; /* kv_module.c: KV-cache quantization and attention */
extern PyMethodDef ccomp_sketch_methods[]; /* sketch_module.c: SketchTune sketches, LUT matmul, fitting */
extern PyMethodDef ccomp_tokens_methods[]; /* tokens_module.c: token similarity top-k */

/* Adds zipfit's constants (GZIP, LZ4, ZSTD, ENGINE_*) to the module; -1 with an exception set on failure. */
int ccomp_zipfit_add_constants(PyObject *m);

#endif

/* Helpers shared by the binding files of ccomp._core. */
#ifndef CCOMP_PY_BINDING_H
#define CCOMP_PY_BINDING_H

#include <Python.h>

#include "ccomp/status.h"

/* Raises the exception for err's code with "operation: message"; returns NULL. */
PyObject *ccomp_raise(const ccomp_error *err, const char *operation);

/* threads=None -> all cores; otherwise an int in [1, 4096].  Returns -1 with an exception set on bad input. */
int ccomp_resolve_threads(PyObject *obj, int *threads);

/* Method tables of the binding files, added to ccomp._core at import. */
extern PyMethodDef ccomp_ac_methods[]; /* ac_module.c: range coder, quantization, containers */
extern PyMethodDef ccomp_cm_methods[]; /* cm_module.c: the built-in context-mixing compressor */
extern PyMethodDef ccomp_kv_methods[]; /* kv_module.c: KV-cache quantization and attention */
extern PyMethodDef ccomp_sketch_methods[]; /* sketch_module.c: SketchTune sketches, LUT matmul, fitting */
extern PyMethodDef ccomp_tokens_methods[]; /* tokens_module.c: token similarity top-k */

#endif

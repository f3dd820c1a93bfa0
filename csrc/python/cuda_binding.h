/* Shared by the files of ccomp._cuda (cuda_module.c and one cuda_<area>.c per area). */
#ifndef CCOMP_CUDA_BINDING_H
#define CCOMP_CUDA_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ccomp/status.h"

/* The status convention of the CUDA entry points (ccomp/status.h, as in the C core): NULL with
 * ValueError, TypeError, MemoryError, RuntimeError (CUDA failed, no device) or KeyboardInterrupt set,
 * the message prefixed by `what`. */
PyObject *cuda_status_error(ccomp_status code, const ccomp_error *err, const char *what);

/* Device buffers handed to Python: a capsule named BUFFER_CAPSULE whose destructor frees the memory. */
#define BUFFER_CAPSULE "ccomp.cuda.buffer"
void buffer_destructor(PyObject *capsule);

/* A C-contiguous buffer of exactly n items of itemsize bytes; -1 with ValueError otherwise. */
int get_buffer(PyObject *obj, Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t n, const char *what);

/* Each area's functions, added to ccomp._cuda by PyInit__cuda. */
extern PyMethodDef ccomp_cuda_ac_methods[];
extern PyMethodDef ccomp_cuda_kv_methods[];
extern PyMethodDef ccomp_cuda_sketch_methods[];
extern PyMethodDef ccomp_cuda_tokens_methods[];

#endif

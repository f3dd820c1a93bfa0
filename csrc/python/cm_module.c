/* Binding of the built-in context-mixing byte compressor (ccomp.ac.compress).
 *
 *   cm_compress(data, level, progress=None) -> bytes
 *   cm_decompress(blob, progress=None) -> bytes
 *   cm_info(blob) -> dict(version, level, length, stream_bytes)
 *
 * data / blob: any C-contiguous buffer (its raw bytes).  progress: None or a
 * callable progress(done_bytes, total_bytes), called from the compressing
 * thread with the GIL held about every MiB; an exception it raises stops the
 * call and propagates.  The GIL is released while coding; Ctrl-C is noticed
 * at the same points. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>

#include "binding.h"
#include "ccomp/ac_cm.h"

typedef struct progress_ctx {
    PyObject *callback; /* borrowed; may be NULL */
    int failed;         /* a Python exception is pending (set with the GIL held) */
} progress_ctx;

/* Called by the core without the GIL. */
static int progress_cb(void *ctx_, uint64_t done, uint64_t total)
{
    progress_ctx *ctx = (progress_ctx *)ctx_;
    PyGILState_STATE g = PyGILState_Ensure();
    int stop = 0;
    if (PyErr_CheckSignals() < 0) {
        stop = 1;
    } else if (ctx->callback != NULL) {
        PyObject *r = PyObject_CallFunction(ctx->callback, "KK", (unsigned long long)done, (unsigned long long)total);
        if (r == NULL)
            stop = 1;
        Py_XDECREF(r);
    }
    if (stop)
        ctx->failed = 1;
    PyGILState_Release(g);
    return stop;
}

static int get_bytes(PyObject *obj, Py_buffer *view, const char *what)
{
    if (PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not str (encode it first, e.g. s.encode())",
                     what);
        return -1;
    }
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object (bytes, bytearray, memoryview, a NumPy "
                     "array...), got %s", what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous (got a non-contiguous %s; copy it first)", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

static int progress_arg(PyObject *obj, progress_ctx *ctx)
{
    ctx->callback = NULL;
    ctx->failed = 0;
    if (obj != NULL && obj != Py_None) {
        if (!PyCallable_Check(obj)) {
            PyErr_Format(PyExc_TypeError, "progress must be None or a callable(done, total), got %s",
                         Py_TYPE(obj)->tp_name);
            return -1;
        }
        ctx->callback = obj;
    }
    return 0;
}

static PyObject *finish(ccomp_status st, const ccomp_error *err, const progress_ctx *ctx, uint8_t *out,
                        size_t out_len, const char *operation)
{
    PyObject *res;
    if (st != CCOMP_OK) {
        free(out);
        if (st == CCOMP_ERR_CANCELLED && ctx->failed && PyErr_Occurred())
            return NULL; /* the callback's exception (or KeyboardInterrupt) */
        return ccomp_raise(err, operation);
    }
    res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)out_len);
    free(out);
    return res;
}

static PyObject *py_cm_compress(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "level", "progress", NULL};
    PyObject *data_obj, *level_obj = NULL, *prog_obj = NULL;
    Py_buffer view;
    progress_ctx ctx;
    ccomp_error err;
    ccomp_status st;
    uint8_t *out = NULL;
    size_t out_len = 0;
    long level = CCOMP_CM_DEFAULT_LEVEL;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:cm_compress", kwlist, &data_obj, &level_obj, &prog_obj))
        return NULL;
    if (level_obj != NULL && level_obj != Py_None) {
        if (!PyLong_Check(level_obj) || PyBool_Check(level_obj)) {
            PyErr_Format(PyExc_TypeError, "level must be an int, got %s", Py_TYPE(level_obj)->tp_name);
            return NULL;
        }
        level = PyLong_AsLong(level_obj);
        if (level == -1 && PyErr_Occurred())
            return NULL;
        if (level < CCOMP_CM_MIN_LEVEL || level > CCOMP_CM_MAX_LEVEL) {
            PyErr_Format(PyExc_ValueError, "level must be between %d and %d, got %ld", CCOMP_CM_MIN_LEVEL,
                         CCOMP_CM_MAX_LEVEL, level);
            return NULL;
        }
    }
    if (progress_arg(prog_obj, &ctx) < 0)
        return NULL;
    if (get_bytes(data_obj, &view, "data") < 0)
        return NULL;
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_cm_compress((const uint8_t *)view.buf, (size_t)view.len, (int)level, progress_cb, &ctx, &out,
                           &out_len, &err);
    CCOMP_NOGIL_END
    PyBuffer_Release(&view);
    return finish(st, &err, &ctx, out, out_len, "compress");
}

static PyObject *py_cm_decompress(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"blob", "progress", NULL};
    PyObject *blob_obj, *prog_obj = NULL;
    Py_buffer view;
    progress_ctx ctx;
    ccomp_error err;
    ccomp_status st;
    uint8_t *out = NULL;
    size_t out_len = 0;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:cm_decompress", kwlist, &blob_obj, &prog_obj))
        return NULL;
    if (progress_arg(prog_obj, &ctx) < 0)
        return NULL;
    if (get_bytes(blob_obj, &view, "data") < 0)
        return NULL;
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_cm_decompress((const uint8_t *)view.buf, (size_t)view.len, progress_cb, &ctx, &out, &out_len, &err);
    CCOMP_NOGIL_END
    PyBuffer_Release(&view);
    return finish(st, &err, &ctx, out, out_len, "decompress");
}

static PyObject *py_cm_info(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    ccomp_cm_info info;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (get_bytes(arg, &view, "data") < 0)
        return NULL;
    ccomp_error_clear(&err);
    st = ccomp_cm_parse((const uint8_t *)view.buf, (size_t)view.len, &info, &err);
    PyBuffer_Release(&view);
    if (st != CCOMP_OK)
        return ccomp_raise(&err, "decompress");
    return Py_BuildValue("{s:i,s:i,s:K,s:n,s:K}", "version", info.version, "level", info.level, "length",
                         (unsigned long long)info.length, "stream_bytes", (Py_ssize_t)info.stream_bytes, "memory",
                         (unsigned long long)ccomp_cm_memory(info.level, info.length));
}

static PyObject *py_cm_mixer_check(PyObject *self, PyObject *args)
{
    unsigned long long seed;
    long long rounds;
    size_t bad;
    (void)self;
    if (!PyArg_ParseTuple(args, "KL:cm_mixer_check", &seed, &rounds))
        return NULL;
    if (rounds < 0 || rounds > 1000000000LL) { /* a test hook: about 85 ns a round */
        PyErr_Format(PyExc_ValueError, "cm_mixer_check: rounds must be in [0, 10**9], got %lld", rounds);
        return NULL;
    }
    CCOMP_NOGIL_BEGIN
    bad = ccomp_cm_mixer_check((uint64_t)seed, (size_t)rounds);
    CCOMP_NOGIL_END
    if (PyErr_Occurred()) return NULL; /* stopped by Ctrl-C */
    return PyLong_FromSize_t(bad);
}

PyMethodDef ccomp_cm_methods[] = {
    {"cm_compress", (PyCFunction)(void (*)(void))py_cm_compress, METH_VARARGS | METH_KEYWORDS,
     "cm_compress(data, level=6, progress=None) -> bytes: the built-in context-mixing compressor."},
    {"cm_decompress", (PyCFunction)(void (*)(void))py_cm_decompress, METH_VARARGS | METH_KEYWORDS,
     "cm_decompress(blob, progress=None) -> bytes."},
    {"cm_info", py_cm_info, METH_O, "cm_info(blob) -> dict: the parsed header of a compressed stream."},
    {"cm_mixer_check", py_cm_mixer_check, METH_VARARGS,
     "cm_mixer_check(seed, rounds) -> int: mismatches between the SIMD mixer and its C reference."},
    {NULL, NULL, 0, NULL}};

/* ccomp._core: the CPython binding of the C core.
 *
 * This file holds the module definition and what every binding file shares:
 * status -> exception (ccomp_raise), GIL release with Ctrl-C (CCOMP_NOGIL_*),
 * threads=, build information.  Each area has its own binding file
 * (zipfit_module.c, ac_module.c, cm_module.c, kv_module.c, sketch_module.c,
 * tokens_module.c) whose method table is added at import.
 *
 * Every function has the same shape: parse arguments, borrow buffers, validate,
 * release the GIL, call the core, take the GIL back, turn the status into an
 * exception, release everything at one cleanup label. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL ccomp_ARRAY_API
#include <numpy/arrayobject.h>

#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include "binding.h"
#include "ccomp/cpu.h"
#include "ccomp/deflate_model.h"
#include "ccomp/lz4_model.h"
#include "ccomp/parallel.h"
#include "ccomp/zipfit.h"

#ifndef CCOMP_VERSION
#define CCOMP_VERSION "0.0.0"
#endif

static PyObject *corrupt_stream_error = NULL;

/* The exception a signal handler raised while the GIL was released (KeyboardInterrupt), not raised yet.  A call
 * that the interrupt stopped raises it through ccomp_raise; a call that finished all the same (the signal came
 * after its last check, or it had none) returns its result, and the exception is raised just after by a pending
 * call: a result returned with an exception set is a SystemError.  Signal handlers run on the main thread only,
 * under the GIL: one slot. */
static PyObject *pending_type, *pending_value, *pending_tb;

static int take_pending(void)
{
    if (pending_type == NULL) return 0;
    PyErr_Restore(pending_type, pending_value, pending_tb);
    pending_type = pending_value = pending_tb = NULL;
    return 1;
}

static int raise_pending(void *unused)
{
    (void)unused;
    return take_pending() ? -1 : 0;
}

PyObject *ccomp_raise(const ccomp_error *err, const char *operation)
{
    PyObject *type;
    if (err->code == CCOMP_ERR_CANCELLED && (take_pending() || PyErr_Occurred()))
        return NULL;
    switch (err->code) {
    case CCOMP_ERR_VALUE: type = PyExc_ValueError; break;
    case CCOMP_ERR_TYPE: type = PyExc_TypeError; break;
    case CCOMP_ERR_NOMEM: type = PyExc_MemoryError; break;
    case CCOMP_ERR_CORRUPT: type = corrupt_stream_error ? corrupt_stream_error : PyExc_ValueError; break;
    case CCOMP_ERR_CANCELLED: type = PyExc_KeyboardInterrupt; break;
    default: type = PyExc_RuntimeError; break;
    }
    PyErr_Format(type, "%s: %s", operation, err->msg[0] ? err->msg : ccomp_status_name(err->code));
    return NULL;
}

static int nogil_poll(void *ctx)
{
    ccomp_nogil *g = (ccomp_nogil *)ctx;
    int stop = 0;
    PyEval_RestoreThread(g->save);
    if (g->exc_type == NULL && PyErr_CheckSignals() < 0) {
        PyErr_Fetch(&g->exc_type, &g->exc_value, &g->exc_tb);
        if (g->exc_type == NULL) /* a handler that failed without an exception object */
        {
            Py_INCREF(PyExc_KeyboardInterrupt);
            g->exc_type = PyExc_KeyboardInterrupt;
        }
        stop = 1;
    }
    g->save = PyEval_SaveThread();
    return stop;
}

void ccomp_nogil_begin(ccomp_nogil *g)
{
    memset(g, 0, sizeof *g);
    ccomp_cancel_init(&g->token, nogil_poll, g);
    g->prev = ccomp_cancel_install(&g->token);
    g->save = PyEval_SaveThread();
}

void ccomp_nogil_end(ccomp_nogil *g)
{
    PyEval_RestoreThread(g->save);
    ccomp_cancel_install(g->prev);
    if (g->prev != NULL) /* a nested stretch (a callback that called back into the core) hands the stop on */
        g->prev->stop |= g->token.stop;
    if (g->exc_type == NULL) return;
    if (pending_type != NULL || Py_AddPendingCall(raise_pending, NULL) < 0) {
        if (pending_type == NULL) { /* no room for a pending call: raised now, as before */
            PyErr_Restore(g->exc_type, g->exc_value, g->exc_tb);
            return;
        }
        Py_XDECREF(g->exc_type); /* one interrupt is already on its way */
        Py_XDECREF(g->exc_value);
        Py_XDECREF(g->exc_tb);
        return;
    }
    pending_type = g->exc_type;
    pending_value = g->exc_value;
    pending_tb = g->exc_tb;
}

int ccomp_resolve_threads(PyObject *obj, int *threads)
{
    if (obj == NULL || obj == Py_None) {
        *threads = ccomp_cpu_count();
        return 0;
    }
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "threads must be an int or None, got %s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    long t = PyLong_AsLong(obj);
    if (t == -1 && PyErr_Occurred())
        return -1;
    if (t < 1 || t > 4096) {
        PyErr_Format(PyExc_ValueError, "threads must be between 1 and 4096, got %ld", t);
        return -1;
    }
    *threads = (int)t;
    return 0;
}

/* ---- build info --------------------------------------------------------------------- */

static int dict_set_str(PyObject *d, const char *key, const char *value)
{
    PyObject *v = PyUnicode_FromString(value);
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *py_build_info(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *d = PyDict_New(), *feats = NULL;
    if (d == NULL)
        return NULL;
    char lz4_compiled[32], zstd_compiled[32];
    snprintf(lz4_compiled, sizeof lz4_compiled, "%d.%d.%d", LZ4_VERSION_MAJOR, LZ4_VERSION_MINOR, LZ4_VERSION_RELEASE);
    snprintf(zstd_compiled, sizeof zstd_compiled, "%d.%d.%d", ZSTD_VERSION_MAJOR, ZSTD_VERSION_MINOR,
             ZSTD_VERSION_RELEASE);
    if (dict_set_str(d, "version", CCOMP_VERSION) < 0 || dict_set_str(d, "zlib", ccomp_zlib_version()) < 0 ||
        dict_set_str(d, "zlib_compiled", ZLIB_VERSION) < 0 || dict_set_str(d, "lz4", ccomp_lz4_version()) < 0 ||
        dict_set_str(d, "lz4_compiled", lz4_compiled) < 0 || dict_set_str(d, "zstd", ccomp_zstd_version()) < 0 ||
        dict_set_str(d, "zstd_compiled", zstd_compiled) < 0 ||
        dict_set_str(d, "gzip_engine",
                     ccomp_deflate_model_supported() ? "deflate-model (levels 1-9), zlib (level 0)" : "zlib") < 0 ||
        dict_set_str(d, "lz4_engine",
                     ccomp_lz4_model_supported() ? "lz4-model (levels 0-2, inputs up to one 64 KB block), lz4 (otherwise)"
                                                 : "lz4") < 0)
        goto fail;
    feats = PyList_New(0);
    if (feats == NULL)
        goto fail;
    unsigned f = ccomp_cpu_features();
    for (unsigned bit = 1; bit != 0 && bit <= CCOMP_CPU_AVX512VNNI; bit <<= 1) {
        if (f & bit) {
            PyObject *s = PyUnicode_FromString(ccomp_cpu_feature_name(bit));
            if (s == NULL || PyList_Append(feats, s) < 0) {
                Py_XDECREF(s);
                goto fail;
            }
            Py_DECREF(s);
        }
    }
    if (PyDict_SetItemString(d, "cpu_features", feats) < 0)
        goto fail;
    Py_DECREF(feats);
    PyObject *n = PyLong_FromLong(ccomp_cpu_count());
    if (n == NULL || PyDict_SetItemString(d, "cpu_count", n) < 0) {
        Py_XDECREF(n);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(n);
    return d;
fail:
    Py_XDECREF(feats);
    Py_DECREF(d);
    return NULL;
}

static PyMethodDef core_methods[] = {
    {"build_info", py_build_info, METH_NOARGS, "Versions of ccomp and the libraries it links, and CPU features."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef core_module = {PyModuleDef_HEAD_INIT, "ccomp._core",
                                         "The C core of ccomp (use the ccomp package, not this module).", -1,
                                         core_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    corrupt_stream_error = PyErr_NewExceptionWithDoc(
        "ccomp.CorruptStreamError", "Compressed data is damaged or truncated.", PyExc_ValueError, NULL);
    /* PyModule_AddObject steals a reference on success only (PyModule_AddObjectRef is 3.10+): the module
     * gets its own reference and the static keeps one */
    if (corrupt_stream_error == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(corrupt_stream_error);
    if (PyModule_AddObject(m, "CorruptStreamError", corrupt_stream_error) < 0) {
        Py_DECREF(corrupt_stream_error);
        Py_DECREF(m);
        return NULL;
    }
    /* functions of the other areas' binding files */
    {
        const PyMethodDef *tables[] = {ccomp_zipfit_methods, ccomp_ac_methods,    ccomp_cm_methods,
                                       ccomp_kv_methods,     ccomp_sketch_methods, ccomp_tokens_methods};
        size_t i;
        for (i = 0; i < sizeof tables / sizeof tables[0]; i++) {
            if (PyModule_AddFunctions(m, (PyMethodDef *)tables[i]) < 0) {
                Py_DECREF(m);
                return NULL;
            }
        }
    }
    if (ccomp_zipfit_add_constants(m) < 0 || PyModule_AddStringConstant(m, "__version__", CCOMP_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

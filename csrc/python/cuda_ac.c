/* ccomp._cuda: the ccomp.ac entry points (kernels/ac*.cu), added to the module by cuda_module.c. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "cuda_binding.h"

/* ------------------------------------------------------------ ccomp.ac */

static PyObject *py_ac_lookup(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long ptr;
    int dtype, rule, precision, logits;
    Py_ssize_t T, V, stride;
    double temperature;
    PyObject *symbols;
    if (!PyArg_ParseTuple(args, "KinnniipdO:ac_lookup", &ptr, &dtype, &T, &V, &stride, &rule, &precision, &logits,
                          &temperature, &symbols))
        return NULL;
    if (ptr == 0 || T < 0 || V < 2 || stride < V) {
        PyErr_SetString(PyExc_ValueError, "ac_lookup: bad rows pointer or shape");
        return NULL;
    }
    Py_buffer sb;
    if (get_buffer(symbols, &sb, 8, T, "ac_lookup symbols (int64)") != 0)
        return NULL;
    PyObject *cum = PyBytes_FromStringAndSize(NULL, T * 4), *freq = PyBytes_FromStringAndSize(NULL, T * 4);
    if (cum == NULL || freq == NULL) {
        Py_XDECREF(cum);
        Py_XDECREF(freq);
        PyBuffer_Release(&sb);
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    int64_t first_bad = -1;
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_ac_lookup((const void *)(uintptr_t)ptr, dtype, (size_t)T, (size_t)V, (size_t)stride, rule,
                              precision, logits, temperature, (const int64_t *)sb.buf,
                              (uint32_t *)PyBytes_AS_STRING(cum), (uint32_t *)PyBytes_AS_STRING(freq), &first_bad,
                              &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&sb);
    if (rc != CCOMP_OK) {
        Py_DECREF(cum);
        Py_DECREF(freq);
        return cuda_status_error(rc, &err, "ccomp.ac GPU lookup");
    }
    return Py_BuildValue("(NNL)", cum, freq, (long long)first_bad);
}

#define SCAN_CAPSULE "ccomp.cuda.ac_scan"

static void scan_destructor(PyObject *capsule)
{
    ccomp_cuda_ac_scan *h = (ccomp_cuda_ac_scan *)PyCapsule_GetPointer(capsule, SCAN_CAPSULE);
    if (h != NULL)
        ccomp_cuda_ac_scan_free(h);
    else
        PyErr_Clear();
}

static PyObject *py_ac_scan(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long ptr;
    int dtype, rule, precision, logits;
    Py_ssize_t T, V, stride;
    double temperature;
    if (!PyArg_ParseTuple(args, "Kinnniipd:ac_scan", &ptr, &dtype, &T, &V, &stride, &rule, &precision, &logits,
                          &temperature))
        return NULL;
    if (ptr == 0 || T < 1 || V < 2 || stride < V) {
        PyErr_SetString(PyExc_ValueError, "ac_scan: bad rows pointer or shape");
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    int64_t first_bad = -1;
    ccomp_cuda_ac_scan *h = NULL;
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_ac_scan_rows((const void *)(uintptr_t)ptr, dtype, (size_t)T, (size_t)V, (size_t)stride, rule,
                                 precision, logits, temperature, &h, &first_bad, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "ccomp.ac GPU scan");
    PyObject *cap = PyCapsule_New(h, SCAN_CAPSULE, scan_destructor);
    if (cap == NULL) {
        ccomp_cuda_ac_scan_free(h);
        return NULL;
    }
    return Py_BuildValue("(NL)", cap, (long long)first_bad);
}

static PyObject *py_ac_find(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *rows_t, *targets;
    if (!PyArg_ParseTuple(args, "OOO:ac_find", &cap, &rows_t, &targets))
        return NULL;
    ccomp_cuda_ac_scan *h = (ccomp_cuda_ac_scan *)PyCapsule_GetPointer(cap, SCAN_CAPSULE);
    if (h == NULL)
        return NULL;
    Py_buffer tb, gb;
    if (PyObject_GetBuffer(rows_t, &tb, PyBUF_C_CONTIGUOUS) != 0)
        return NULL;
    Py_ssize_t n = tb.len / 8;
    if (tb.len % 8 != 0 || get_buffer(targets, &gb, 4, n, "ac_find targets (uint32)") != 0) {
        if (tb.len % 8 != 0)
            PyErr_SetString(PyExc_ValueError, "ac_find: row indices must be int64");
        PyBuffer_Release(&tb);
        return NULL;
    }
    PyObject *sym = PyBytes_FromStringAndSize(NULL, n * 4), *cum = PyBytes_FromStringAndSize(NULL, n * 4),
             *freq = PyBytes_FromStringAndSize(NULL, n * 4);
    if (sym == NULL || cum == NULL || freq == NULL) {
        Py_XDECREF(sym);
        Py_XDECREF(cum);
        Py_XDECREF(freq);
        PyBuffer_Release(&tb);
        PyBuffer_Release(&gb);
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_ac_scan_find(h, (const int64_t *)tb.buf, (const uint32_t *)gb.buf, (size_t)n,
                                 (uint32_t *)PyBytes_AS_STRING(sym), (uint32_t *)PyBytes_AS_STRING(cum),
                                 (uint32_t *)PyBytes_AS_STRING(freq), &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&tb);
    PyBuffer_Release(&gb);
    if (rc != CCOMP_OK) {
        Py_DECREF(sym);
        Py_DECREF(cum);
        Py_DECREF(freq);
        return cuda_status_error(rc, &err, "ccomp.ac GPU find");
    }
    return Py_BuildValue("(NNN)", sym, cum, freq);
}

PyMethodDef ccomp_cuda_ac_methods[] = {
    {"ac_lookup", py_ac_lookup, METH_VARARGS,
     "ac_lookup(ptr, dtype, T, V, stride, rule, precision, logits, temperature, symbols_int64) -> "
     "(cum bytes, freq bytes, first bad row or -1)."},
    {"ac_scan", py_ac_scan, METH_VARARGS,
     "ac_scan(ptr, dtype, T, V, stride, rule, precision, logits, temperature) -> (handle, first bad row or -1)."},
    {"ac_find", py_ac_find, METH_VARARGS,
     "ac_find(handle, rows_int64, targets_uint32) -> (symbol bytes, cum bytes, freq bytes)."},
    {NULL, NULL, 0, NULL}};

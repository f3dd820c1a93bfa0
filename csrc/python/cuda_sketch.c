/* ccomp._cuda: the ccomp.sketch entry points (kernels/sketch*.cu), added to the module by cuda_module.c. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "cuda_binding.h"

/* ------------------------------------------------------------ ccomp.sketch */

/* A sketch tuple built by ccomp._sketch_gpu: (tables ptr, table type, codes ptr, rows, cols, groups, bits). */
static int sketch_from(PyObject *obj, ccomp_cuda_sketch *s)
{
    unsigned long long tables, codes;
    Py_ssize_t rows, cols, groups;
    memset(s, 0, sizeof *s);
    if (!PyTuple_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "sketch: expected a tuple (tables, dtype, codes, rows, cols, groups, bits)");
        return -1;
    }
    if (!PyArg_ParseTuple(obj, "KiKnnni:sketch", &tables, &s->dtype, &codes, &rows, &cols, &groups, &s->bits))
        return -1;
    if (rows < 0 || cols < 0 || groups < 0) {
        PyErr_SetString(PyExc_ValueError, "sketch: rows, cols and groups must be non-negative");
        return -1;
    }
    s->tables = (const void *)(uintptr_t)tables;
    s->codes = (const uint8_t *)(uintptr_t)codes;
    s->rows = (size_t)rows;
    s->cols = (size_t)cols;
    s->groups = (size_t)groups;
    return 0;
}

static PyObject *py_sketch_matmul(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sobj;
    unsigned long long x, y, stream;
    int x_dtype;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OKinKK:sketch_matmul", &sobj, &x, &x_dtype, &n, &y, &stream))
        return NULL;
    ccomp_cuda_sketch s;
    if (sketch_from(sobj, &s) != 0)
        return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "sketch_matmul: n must be non-negative, got %zd", n);
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_matmul(&s, (const void *)(uintptr_t)x, x_dtype, (size_t)n, (float *)(uintptr_t)y,
                                  (void *)(uintptr_t)stream, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "ccomp.sketch GPU matmul");
    Py_RETURN_NONE;
}

static PyObject *py_sketch_grad_input(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sobj;
    unsigned long long gy, gx, stream;
    int gy_dtype;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OKinKK:sketch_grad_input", &sobj, &gy, &gy_dtype, &n, &gx, &stream))
        return NULL;
    ccomp_cuda_sketch s;
    if (sketch_from(sobj, &s) != 0)
        return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "sketch_grad_input: n must be non-negative, got %zd", n);
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_grad_input(&s, (const void *)(uintptr_t)gy, gy_dtype, (size_t)n, (float *)(uintptr_t)gx,
                                      (void *)(uintptr_t)stream, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "ccomp.sketch GPU grad_input");
    Py_RETURN_NONE;
}

static PyObject *py_sketch_grad_tables_workspace(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t rows, cols, groups;
    int bits;
    if (!PyArg_ParseTuple(args, "nnni:sketch_grad_tables_workspace", &rows, &cols, &groups, &bits))
        return NULL;
    if (rows < 0 || cols < 0 || groups < 0) {
        PyErr_SetString(PyExc_ValueError, "sketch_grad_tables_workspace: sizes must be non-negative");
        return NULL;
    }
    return PyLong_FromSize_t(ccomp_cuda_sketch_grad_tables_workspace((size_t)rows, (size_t)cols, (size_t)groups, bits));
}

static PyObject *py_sketch_grad_tables(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sobj;
    unsigned long long x, gy, gt, ws, stream;
    int x_dtype, gy_dtype;
    Py_ssize_t n, ws_bytes;
    if (!PyArg_ParseTuple(args, "OKiKinKKnK:sketch_grad_tables", &sobj, &x, &x_dtype, &gy, &gy_dtype, &n, &gt, &ws,
                          &ws_bytes, &stream))
        return NULL;
    ccomp_cuda_sketch s;
    if (sketch_from(sobj, &s) != 0)
        return NULL;
    if (n < 0 || ws_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "sketch_grad_tables: n and the workspace size must be non-negative");
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_grad_tables(&s, (const void *)(uintptr_t)x, x_dtype, (const void *)(uintptr_t)gy, gy_dtype,
                                       (size_t)n, (float *)(uintptr_t)gt, (void *)(uintptr_t)ws, (size_t)ws_bytes,
                                       (void *)(uintptr_t)stream, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "ccomp.sketch GPU grad_tables");
    Py_RETURN_NONE;
}

static PyObject *py_sketch_dequantize(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sobj;
    unsigned long long out, stream;
    int out_dtype;
    if (!PyArg_ParseTuple(args, "OKiK:sketch_dequantize", &sobj, &out, &out_dtype, &stream))
        return NULL;
    ccomp_cuda_sketch s;
    if (sketch_from(sobj, &s) != 0)
        return NULL;
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_dequantize(&s, (void *)(uintptr_t)out, out_dtype, (void *)(uintptr_t)stream, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "ccomp.sketch GPU dequantize");
    Py_RETURN_NONE;
}

PyMethodDef ccomp_cuda_sketch_methods[] = {
    {"sketch_matmul", py_sketch_matmul, METH_VARARGS,
     "sketch_matmul(sketch, x, x_dtype, n, y, stream): y [n, rows] float32 = x W_hat^T (ccomp._sketch_gpu builds "
     "the sketch tuple)."},
    {"sketch_grad_input", py_sketch_grad_input, METH_VARARGS,
     "sketch_grad_input(sketch, gy, gy_dtype, n, gx, stream): gx [n, cols] float32 = gy W_hat."},
    {"sketch_grad_tables_workspace", py_sketch_grad_tables_workspace, METH_VARARGS,
     "sketch_grad_tables_workspace(rows, cols, groups, bits) -> workspace bytes of sketch_grad_tables."},
    {"sketch_grad_tables", py_sketch_grad_tables, METH_VARARGS,
     "sketch_grad_tables(sketch, x, x_dtype, gy, gy_dtype, n, gt, ws, ws_bytes, stream): gt [rows, groups, 2^bits]."},
    {"sketch_dequantize", py_sketch_dequantize, METH_VARARGS,
     "sketch_dequantize(sketch, out, out_dtype, stream): out [rows, cols] = W_hat."},
    {NULL, NULL, 0, NULL}};

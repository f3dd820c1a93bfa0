/* ccomp._cuda: the ccomp.tokens entry points (kernels/tokens*.cu), added to the module by cuda_module.c. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "cuda_binding.h"

/* ------------------------------------------------------------ ccomp.tokens */

/* Borrows the int64 token list and the B + 1 uint64 offsets of one side (rows or candidates) and checks
 * that they agree; the core checks the values. */
static int token_lists(PyObject *list, PyObject *off, Py_ssize_t B, Py_buffer *lb, Py_buffer *ob, const char *what)
{
    if (PyObject_GetBuffer(off, ob, PyBUF_C_CONTIGUOUS) != 0)
        return -1;
    if (ob->len != (B + 1) * 8) {
        PyErr_Format(PyExc_ValueError, "tokens_topk: %s offsets must be %zd uint64 values, got %zd bytes", what,
                     B + 1, ob->len);
        PyBuffer_Release(ob);
        return -1;
    }
    const uint64_t n = ((const uint64_t *)ob->buf)[B];
    if (n > (uint64_t)PY_SSIZE_T_MAX / 8 || get_buffer(list, lb, 8, (Py_ssize_t)n, what) != 0) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "tokens_topk: %s offsets end at %llu", what, (unsigned long long)n);
        PyBuffer_Release(ob);
        return -1;
    }
    return 0;
}

static PyObject *py_tokens_workspace(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t B, N, D, k;
    PyObject *ro, *co;
    if (!PyArg_ParseTuple(args, "nnnOOn:tokens_workspace", &B, &N, &D, &ro, &co, &k))
        return NULL;
    if (B < 1 || N < 1 || D < 1 || k < 1) {
        PyErr_SetString(PyExc_ValueError, "tokens_workspace: B, N, D and k must be positive");
        return NULL;
    }
    Py_buffer rb, cb;
    if (get_buffer(ro, &rb, 8, B + 1, "tokens_workspace row offsets (uint64)") != 0)
        return NULL;
    if (get_buffer(co, &cb, 8, B + 1, "tokens_workspace candidate offsets (uint64)") != 0) {
        PyBuffer_Release(&rb);
        return NULL;
    }
    size_t n = ccomp_cuda_tokens_workspace((size_t)B, (size_t)N, (size_t)D, (const size_t *)rb.buf,
                                           (const size_t *)cb.buf, (size_t)k);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&cb);
    if (n == 0) {
        PyErr_Format(PyExc_ValueError, "tokens_workspace: bad offsets or k = %zd outside [1, %d]", k,
                     CCOMP_CUDA_TOKENS_MAX_K);
        return NULL;
    }
    return PyLong_FromSize_t(n);
}

static PyObject *py_tokens_delta(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t D;
    if (!PyArg_ParseTuple(args, "n:tokens_delta", &D))
        return NULL;
    if (D < 1) {
        PyErr_SetString(PyExc_ValueError, "tokens_delta: D must be positive");
        return NULL;
    }
    return PyFloat_FromDouble(ccomp_cuda_tokens_delta((size_t)D));
}

static PyObject *py_tokens_topk(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long keys, oi, ov, ws, stream;
    int dtype, exclude_self, cols_distinct, check;
    Py_ssize_t B, N, D, sb, sn, k, ws_bytes;
    PyObject *rows, *ro, *cols, *co;
    if (!PyArg_ParseTuple(args, "KinnnnnOOOOpnpKKKnKp:tokens_topk", &keys, &dtype, &B, &N, &D, &sb, &sn, &rows, &ro,
                          &cols, &co, &exclude_self, &k, &cols_distinct, &oi, &ov, &ws, &ws_bytes, &stream, &check))
        return NULL;
    if (B < 1 || N < 1 || D < 1 || sb < 0 || sn < 0 || k < 1 || ws_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "tokens_topk: sizes must be positive and strides non-negative");
        return NULL;
    }
    Py_buffer rb, rob, cb, cob;
    if (token_lists(rows, ro, B, &rb, &rob, "row") != 0)
        return NULL;
    if (token_lists(cols, co, B, &cb, &cob, "candidate") != 0) {
        PyBuffer_Release(&rb);
        PyBuffer_Release(&rob);
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    int64_t first_bad = -1, stats[3] = {0, 0, 0};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_tokens_topk((const void *)(uintptr_t)keys, dtype, (size_t)B, (size_t)N, (size_t)D, (size_t)sb,
                                (size_t)sn, (const int64_t *)rb.buf, (const size_t *)rob.buf, (const int64_t *)cb.buf,
                                (const size_t *)cob.buf, exclude_self, (size_t)k, cols_distinct,
                                (int64_t *)(uintptr_t)oi, (float *)(uintptr_t)ov, (void *)(uintptr_t)ws,
                                (size_t)ws_bytes, (void *)(uintptr_t)stream, check ? &first_bad : NULL,
                                check ? stats : NULL, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&rb);
    PyBuffer_Release(&rob);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&cob);
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "ccomp.tokens GPU top-k");
    return Py_BuildValue("(LLLL)", (long long)first_bad, (long long)stats[0], (long long)stats[1],
                         (long long)stats[2]);
}

PyMethodDef ccomp_cuda_tokens_methods[] = {
    {"tokens_workspace", py_tokens_workspace, METH_VARARGS,
     "tokens_workspace(B, N, D, rows_off_u64, cols_off_u64, k) -> workspace bytes of tokens_topk."},
    {"tokens_delta", py_tokens_delta, METH_VARARGS,
     "tokens_delta(D) -> the GPU screen's error bound for D channels."},
    {"tokens_topk", py_tokens_topk, METH_VARARGS,
     "tokens_topk(keys, dtype, B, N, D, stride_b, stride_n, rows_i64, rows_off_u64, cols_i64, cols_off_u64, "
     "exclude_self, k, cols_distinct, out_idx, out_val, ws, ws_bytes, stream, check) -> "
     "(first bad element or -1, overflowed rows, workspace bytes, slices); the last three 0 without check."},
    {NULL, NULL, 0, NULL}};

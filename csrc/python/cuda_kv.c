/* ccomp._cuda: the ccomp.kv entry points (kernels/kv*.cu), added to the module by cuda_module.c. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "cuda_binding.h"

/* ------------------------------------------------------------ ccomp.kv */

/* A non-negative integer item of a descriptor dict (0 when absent). */
static int desc_u64(PyObject *d, const char *key, unsigned long long *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    *out = 0;
    if (v == NULL)
        return 0;
    *out = PyLong_AsUnsignedLongLong(v);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "kv descriptor: '%s' must be a non-negative integer", key);
        return -1;
    }
    return 0;
}

static int desc_size(PyObject *d, const char *key, size_t *out)
{
    unsigned long long v;
    if (desc_u64(d, key, &v) != 0)
        return -1;
    *out = (size_t)v;
    return 0;
}

static int desc_int(PyObject *d, const char *key, int *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    *out = 0;
    if (v == NULL)
        return 0;
    long x = PyLong_AsLong(v);
    if ((x == -1 && PyErr_Occurred()) || x < -(1L << 30) || x > (1L << 30)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "kv descriptor: '%s' must be a small integer", key);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int desc_floats(PyObject *d, const char *key, float *out, Py_ssize_t n)
{
    PyObject *v = PyDict_GetItemString(d, key);
    memset(out, 0, (size_t)n * sizeof(float));
    if (v == NULL)
        return 0;
    PyObject *seq = PySequence_Fast(v, "kv descriptor: a sequence of floats is expected");
    if (seq == NULL)
        return -1;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    if (m > n) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "kv descriptor: '%s' holds %zd values, at most %zd", key, m, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        double x = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (x == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        out[i] = (float)x;
    }
    Py_DECREF(seq);
    return 0;
}

/* An array item: (device pointer, slice stride in elements, elements per slice). */
static int desc_array(PyObject *d, const char *key, ccomp_cuda_kv_array *a)
{
    PyObject *v = PyDict_GetItemString(d, key);
    memset(a, 0, sizeof *a);
    if (v == NULL)
        return 0;
    unsigned long long ptr, stride, count;
    if (!PyTuple_Check(v) || !PyArg_ParseTuple(v, "KKK", &ptr, &stride, &count)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "kv descriptor: '%s' must be a tuple (pointer, slice stride, count)", key);
        return -1;
    }
    a->ptr = (void *)(uintptr_t)ptr;
    a->stride = (size_t)stride;
    a->count = (size_t)count;
    return 0;
}

/* Fills a descriptor from a dict built by ccomp._kv_gpu. */
static int desc_from(PyObject *obj, ccomp_cuda_kv_desc *d)
{
    unsigned long long u;
    memset(d, 0, sizeof *d);
    if (!PyDict_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "kv descriptor: expected a dict");
        return -1;
    }
    if (desc_int(obj, "method", &d->method) || desc_size(obj, "S", &d->S) || desc_size(obj, "T", &d->T) ||
        desc_size(obj, "D", &d->D) || desc_int(obj, "bits", &d->bits) || desc_int(obj, "group", &d->group) ||
        desc_int(obj, "axis", &d->axis) || desc_int(obj, "qjl", &d->qjl) || desc_u64(obj, "seed", &u))
        return -1;
    d->seed = (uint64_t)u;
    if (desc_floats(obj, "centroids", d->centroids, 16) || desc_floats(obj, "thresholds", d->thresholds, 16) ||
        desc_u64(obj, "qjl_matrix_t", &u))
        return -1;
    d->qjl_matrix_t = (const float *)(uintptr_t)u;
    if (desc_size(obj, "kept", &d->kept) || desc_size(obj, "per_row", &d->per_row) || desc_int(obj, "rank", &d->rank) ||
        desc_u64(obj, "x", &u))
        return -1;
    d->x = (void *)(uintptr_t)u;
    if (desc_int(obj, "x_dtype", &d->x_dtype) || desc_size(obj, "x_ss", &d->x_ss) || desc_size(obj, "x_ld", &d->x_ld) ||
        desc_u64(obj, "flag", &u))
        return -1;
    d->flag = (uint32_t *)(uintptr_t)u;
#define KV_ARRAY(name) {#name, offsetof(ccomp_cuda_kv_desc, name)}
    static const struct {
        const char *name;
        size_t offset;
    } arrays[] = {KV_ARRAY(codes),   KV_ARRAY(scale),    KV_ARRAY(zero),    KV_ARRAY(blocks), KV_ARRAY(norms),
                  KV_ARRAY(signs),   KV_ARRAY(res_norms), KV_ARRAY(bitmaps), KV_ARRAY(offsets), KV_ARRAY(values),
                  KV_ARRAY(out_idx), KV_ARRAY(out_vals), KV_ARRAY(U),       KV_ARRAY(W)};
#undef KV_ARRAY
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        if (desc_array(obj, arrays[i].name, (ccomp_cuda_kv_array *)((char *)d + arrays[i].offset)) != 0)
            return -1;
    return 0;
}

/* A tuple of descriptor dicts -> a malloc'ed array (freed by the caller). */
static ccomp_cuda_kv_desc *descs_from(PyObject *tuple, size_t *n, const char *what)
{
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) < 1 || PyTuple_GET_SIZE(tuple) > 64) {
        PyErr_Format(PyExc_ValueError, "%s: expected a tuple of 1 to 64 segment descriptors", what);
        return NULL;
    }
    *n = (size_t)PyTuple_GET_SIZE(tuple);
    ccomp_cuda_kv_desc *d = (ccomp_cuda_kv_desc *)PyMem_Calloc(*n, sizeof *d);
    if (d == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (size_t i = 0; i < *n; i++)
        if (desc_from(PyTuple_GET_ITEM(tuple, (Py_ssize_t)i), &d[i]) != 0) {
            PyMem_Free(d);
            return NULL;
        }
    return d;
}

typedef ccomp_status (*kv_run_fn)(const ccomp_cuda_kv_desc *, void *, int, int64_t *, ccomp_error *);

static PyObject *kv_run(PyObject *args, kv_run_fn fn, const char *fmt, const char *what)
{
    PyObject *dobj;
    unsigned long long stream;
    int check;
    if (!PyArg_ParseTuple(args, fmt, &dobj, &stream, &check))
        return NULL;
    ccomp_cuda_kv_desc d;
    if (desc_from(dobj, &d) != 0)
        return NULL;
    ccomp_error err = {CCOMP_OK, ""};
    int64_t first_bad = -1;
    ccomp_status st;
    Py_BEGIN_ALLOW_THREADS
    st = fn(&d, (void *)(uintptr_t)stream, check, &first_bad, &err);
    Py_END_ALLOW_THREADS
    if (st != CCOMP_OK)
        return cuda_status_error(st, &err, what);
    return PyLong_FromLongLong((long long)first_bad);
}

static PyObject *py_kv_quantize(PyObject *self, PyObject *args)
{
    (void)self;
    return kv_run(args, ccomp_cuda_kv_quantize, "OKp:kv_quantize", "ccomp.kv GPU quantize");
}

static PyObject *py_kv_dequantize(PyObject *self, PyObject *args)
{
    (void)self;
    return kv_run(args, ccomp_cuda_kv_dequantize, "OKp:kv_dequantize", "ccomp.kv GPU dequantize");
}

static PyObject *py_kv_attention_workspace(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t S, R, Dv;
    PyObject *vt;
    if (!PyArg_ParseTuple(args, "nnnO:kv_attention_workspace", &S, &R, &Dv, &vt))
        return NULL;
    if (S < 0 || R < 0 || Dv < 0) {
        PyErr_SetString(PyExc_ValueError, "kv_attention_workspace: sizes must be non-negative");
        return NULL;
    }
    size_t nv;
    ccomp_cuda_kv_desc *v = descs_from(vt, &nv, "kv_attention_workspace");
    if (v == NULL)
        return NULL;
    size_t n = ccomp_cuda_kv_attention_workspace((size_t)S, (size_t)R, (size_t)Dv, v, nv);
    PyMem_Free(v);
    return PyLong_FromSize_t(n);
}

static PyObject *py_kv_attention(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long q, out, ws, stream;
    int q_dtype;
    Py_ssize_t S, R, D, ws_bytes;
    double scale;
    PyObject *kt, *vt;
    if (!PyArg_ParseTuple(args, "KinnndOOKKnK:kv_attention", &q, &q_dtype, &S, &R, &D, &scale, &kt, &vt, &out, &ws,
                          &ws_bytes, &stream))
        return NULL;
    if (S < 0 || R < 0 || D < 0 || ws_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "kv_attention: sizes must be non-negative");
        return NULL;
    }
    size_t nk, nv;
    ccomp_cuda_kv_desc *k = descs_from(kt, &nk, "kv_attention (K)");
    if (k == NULL)
        return NULL;
    ccomp_cuda_kv_desc *v = descs_from(vt, &nv, "kv_attention (V)");
    if (v == NULL) {
        PyMem_Free(k);
        return NULL;
    }
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ccomp_cuda_kv_attention((const void *)(uintptr_t)q, q_dtype, (size_t)S, (size_t)R, (size_t)D, (float)scale, k,
                                 nk, v, nv, (float *)(uintptr_t)out, (void *)(uintptr_t)ws, (size_t)ws_bytes,
                                 (void *)(uintptr_t)stream, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(k);
    PyMem_Free(v);
    if (st != CCOMP_OK)
        return cuda_status_error(st, &err, "ccomp.kv GPU attention");
    Py_RETURN_NONE;
}

PyMethodDef ccomp_cuda_kv_methods[] = {
    {"kv_quantize", py_kv_quantize, METH_VARARGS,
     "kv_quantize(desc, stream, check) -> first bad slice or -1 (ccomp._kv_gpu builds desc)."},
    {"kv_dequantize", py_kv_dequantize, METH_VARARGS,
     "kv_dequantize(desc, stream, check) -> first bad slice or -1."},
    {"kv_attention_workspace", py_kv_attention_workspace, METH_VARARGS,
     "kv_attention_workspace(S, R, Dv, v_descs) -> workspace bytes of kv_attention."},
    {"kv_attention", py_kv_attention, METH_VARARGS,
     "kv_attention(q, q_dtype, S, R, D, scale, k_descs, v_descs, out, ws, ws_bytes, stream)."},
    {NULL, NULL, 0, NULL}};

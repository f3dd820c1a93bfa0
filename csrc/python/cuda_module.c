/* ccomp._cuda: the CUDA side of ccomp, built only when nvcc is found.
 * A machine without a GPU or driver imports it fine; the functions then say
 * why no device is usable instead of crashing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ccomp_cuda.h"

static PyObject *py_device_count(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    int n = 0;
    char msg[256] = "";
    int rc = ccomp_cuda_device_count(&n, msg, sizeof msg);
    return Py_BuildValue("(is)", rc == 0 ? n : 0, rc == 0 ? "" : msg);
}

static PyObject *py_versions(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    int rt = 0, drv = 0;
    ccomp_cuda_runtime_version(&rt);
    if (ccomp_cuda_driver_version(&drv) != 0)
        drv = 0;
    return Py_BuildValue("(ii)", rt, drv);
}

static PyObject *py_device_name(PyObject *self, PyObject *args)
{
    (void)self;
    int dev;
    if (!PyArg_ParseTuple(args, "i:device_name", &dev))
        return NULL;
    char name[256];
    int major = 0, minor = 0;
    if (ccomp_cuda_device_name(dev, name, sizeof name, &major, &minor) != 0) {
        PyErr_Format(PyExc_RuntimeError, "CUDA device %d: %s", dev, name);
        return NULL;
    }
    return Py_BuildValue("(sii)", name, major, minor);
}

static PyObject *py_iota(PyObject *self, PyObject *args)
{
    (void)self;
    int n, step;
    if (!PyArg_ParseTuple(args, "ii:iota", &n, &step))
        return NULL;
    if (n <= 0 || n > (1 << 26)) {
        PyErr_Format(PyExc_ValueError, "iota: n must be in [1, 2^26], got %d", n);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n * (Py_ssize_t)sizeof(int));
    if (out == NULL)
        return NULL;
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_iota((int *)PyBytes_AS_STRING(out), n, step, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        Py_DECREF(out);
        PyErr_Format(PyExc_RuntimeError, "CUDA kernel launch failed: %s", msg);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------ device memory */

/* Errors from the CUDA objects: -1 is a rejected argument (ValueError); any
 * other code is a CUDA error (RuntimeError). */
static PyObject *cuda_error(int rc, const char *what, const char *msg)
{
    PyErr_Format(rc == -1 ? PyExc_ValueError : PyExc_RuntimeError, "%s: %s", what, msg);
    return NULL;
}

#define BUFFER_CAPSULE "ccomp.cuda.buffer"

static void buffer_destructor(PyObject *capsule)
{
    void *dev = PyCapsule_GetPointer(capsule, BUFFER_CAPSULE);
    if (dev != NULL)
        ccomp_cuda_free(dev);
    else
        PyErr_Clear();
}

static PyObject *py_upload(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*:upload", &b))
        return NULL;
    void *dev = NULL;
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_upload(b.buf, (size_t)b.len, &dev, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    if (rc != 0)
        return cuda_error(rc, "copying to the GPU failed", msg);
    PyObject *cap = PyCapsule_New(dev, BUFFER_CAPSULE, buffer_destructor);
    if (cap == NULL) {
        ccomp_cuda_free(dev);
        return NULL;
    }
    return Py_BuildValue("(NK)", cap, (unsigned long long)(uintptr_t)dev);
}

static PyObject *py_to_host(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long ptr;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "Kn:to_host", &ptr, &n))
        return NULL;
    if (ptr == 0 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "to_host: a non-null pointer and a non-negative size are required");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    if (n == 0)
        return out;
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_to_host(PyBytes_AS_STRING(out), (const void *)(uintptr_t)ptr, (size_t)n, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        Py_DECREF(out);
        return cuda_error(rc, "copying from the GPU failed", msg);
    }
    return out;
}

static PyObject *py_synchronize(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_synchronize(msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, "synchronize", msg);
    Py_RETURN_NONE;
}

/* DLPack (dlpack.h, ABI v0.x "dltensor" capsules), declared here to need no header. */
typedef struct {
    int32_t device_type;
    int32_t device_id;
} cc_DLDevice;
typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} cc_DLDataType;
typedef struct {
    void *data;
    cc_DLDevice device;
    int32_t ndim;
    cc_DLDataType dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} cc_DLTensor;
typedef struct cc_DLManagedTensor {
    cc_DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct cc_DLManagedTensor *);
} cc_DLManagedTensor;

/* Reads a "dltensor" capsule without consuming it (the caller keeps the
 * capsule alive while it uses the pointer). */
static PyObject *py_dlpack_info(PyObject *self, PyObject *cap)
{
    (void)self;
    if (!PyCapsule_IsValid(cap, "dltensor")) {
        PyErr_SetString(PyExc_TypeError, "expected an unconsumed DLPack capsule named 'dltensor'");
        return NULL;
    }
    cc_DLManagedTensor *mt = (cc_DLManagedTensor *)PyCapsule_GetPointer(cap, "dltensor");
    if (mt == NULL)
        return NULL;
    const cc_DLTensor *t = &mt->dl_tensor;
    if (t->ndim < 0 || t->ndim > 32) {
        PyErr_Format(PyExc_ValueError, "DLPack tensor with %d dimensions", (int)t->ndim);
        return NULL;
    }
    PyObject *shape = PyTuple_New(t->ndim), *strides = NULL;
    if (shape == NULL)
        return NULL;
    for (int i = 0; i < t->ndim; i++)
        PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong((long long)t->shape[i]));
    if (t->strides != NULL) {
        strides = PyTuple_New(t->ndim);
        if (strides == NULL) {
            Py_DECREF(shape);
            return NULL;
        }
        for (int i = 0; i < t->ndim; i++)
            PyTuple_SET_ITEM(strides, i, PyLong_FromLongLong((long long)t->strides[i]));
    } else {
        strides = Py_None;
        Py_INCREF(strides);
    }
    unsigned long long ptr = (unsigned long long)(uintptr_t)t->data + (unsigned long long)t->byte_offset;
    return Py_BuildValue("(KiiNNiii)", ptr, (int)t->device.device_type, (int)t->device.device_id, shape, strides,
                         (int)t->dtype.code, (int)t->dtype.bits, (int)t->dtype.lanes);
}

/* ------------------------------------------------------------ ccomp.ac */

static int get_buffer(PyObject *obj, Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t n, const char *what)
{
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS) != 0)
        return -1;
    if (b->len != n * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, n * itemsize, b->len);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

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
    char msg[256] = "";
    int64_t first_bad = -1;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_ac_lookup((const void *)(uintptr_t)ptr, dtype, (size_t)T, (size_t)V, (size_t)stride, rule,
                              precision, logits, temperature, (const int64_t *)sb.buf,
                              (uint32_t *)PyBytes_AS_STRING(cum), (uint32_t *)PyBytes_AS_STRING(freq), &first_bad, msg,
                              sizeof msg);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&sb);
    if (rc != 0) {
        Py_DECREF(cum);
        Py_DECREF(freq);
        return cuda_error(rc, "ccomp.ac GPU lookup", msg);
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
    char msg[256] = "";
    int64_t first_bad = -1;
    ccomp_cuda_ac_scan *h = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_ac_scan_rows((const void *)(uintptr_t)ptr, dtype, (size_t)T, (size_t)V, (size_t)stride, rule,
                                 precision, logits, temperature, &h, &first_bad, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, "ccomp.ac GPU scan", msg);
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
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_ac_scan_find(h, (const int64_t *)tb.buf, (const uint32_t *)gb.buf, (size_t)n,
                                 (uint32_t *)PyBytes_AS_STRING(sym), (uint32_t *)PyBytes_AS_STRING(cum),
                                 (uint32_t *)PyBytes_AS_STRING(freq), msg, sizeof msg);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&tb);
    PyBuffer_Release(&gb);
    if (rc != 0) {
        Py_DECREF(sym);
        Py_DECREF(cum);
        Py_DECREF(freq);
        return cuda_error(rc, "ccomp.ac GPU find", msg);
    }
    return Py_BuildValue("(NNN)", sym, cum, freq);
}


/* ------------------------------------------------------------ ccomp.kv */

static PyObject *py_alloc(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n:alloc", &n))
        return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "alloc: the size must be non-negative, got %zd", n);
        return NULL;
    }
    void *dev = NULL;
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_alloc((size_t)n, &dev, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, "allocating GPU memory failed", msg);
    PyObject *cap = PyCapsule_New(dev, BUFFER_CAPSULE, buffer_destructor);
    if (cap == NULL) {
        ccomp_cuda_free(dev);
        return NULL;
    }
    return Py_BuildValue("(NK)", cap, (unsigned long long)(uintptr_t)dev);
}

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

typedef int (*kv_run_fn)(const ccomp_cuda_kv_desc *, void *, int, int64_t *, char *, size_t);

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
    char msg[256] = "";
    int64_t first_bad = -1;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fn(&d, (void *)(uintptr_t)stream, check, &first_bad, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, what, msg);
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
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_kv_attention((const void *)(uintptr_t)q, q_dtype, (size_t)S, (size_t)R, (size_t)D, (float)scale, k,
                                 nk, v, nv, (float *)(uintptr_t)out, (void *)(uintptr_t)ws, (size_t)ws_bytes,
                                 (void *)(uintptr_t)stream, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    PyMem_Free(k);
    PyMem_Free(v);
    if (rc != 0)
        return cuda_error(rc, "ccomp.kv GPU attention", msg);
    Py_RETURN_NONE;
}

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
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_matmul(&s, (const void *)(uintptr_t)x, x_dtype, (size_t)n, (float *)(uintptr_t)y,
                                  (void *)(uintptr_t)stream, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, "ccomp.sketch GPU matmul", msg);
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
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_grad_input(&s, (const void *)(uintptr_t)gy, gy_dtype, (size_t)n, (float *)(uintptr_t)gx,
                                      (void *)(uintptr_t)stream, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, "ccomp.sketch GPU grad_input", msg);
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
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_grad_tables(&s, (const void *)(uintptr_t)x, x_dtype, (const void *)(uintptr_t)gy, gy_dtype,
                                       (size_t)n, (float *)(uintptr_t)gt, (void *)(uintptr_t)ws, (size_t)ws_bytes,
                                       (void *)(uintptr_t)stream, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, "ccomp.sketch GPU grad_tables", msg);
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
    char msg[256] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_sketch_dequantize(&s, (void *)(uintptr_t)out, out_dtype, (void *)(uintptr_t)stream, msg,
                                      sizeof msg);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return cuda_error(rc, "ccomp.sketch GPU dequantize", msg);
    Py_RETURN_NONE;
}

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
    char msg[256] = "";
    int64_t first_bad = -1, stats[3] = {0, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_tokens_topk((const void *)(uintptr_t)keys, dtype, (size_t)B, (size_t)N, (size_t)D, (size_t)sb,
                                (size_t)sn, (const int64_t *)rb.buf, (const size_t *)rob.buf, (const int64_t *)cb.buf,
                                (const size_t *)cob.buf, exclude_self, (size_t)k, cols_distinct,
                                (int64_t *)(uintptr_t)oi, (float *)(uintptr_t)ov, (void *)(uintptr_t)ws,
                                (size_t)ws_bytes, (void *)(uintptr_t)stream, check ? &first_bad : NULL,
                                check ? stats : NULL, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&rb);
    PyBuffer_Release(&rob);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&cob);
    if (rc != 0)
        return cuda_error(rc, "ccomp.tokens GPU top-k", msg);
    return Py_BuildValue("(LLLL)", (long long)first_bad, (long long)stats[0], (long long)stats[1],
                         (long long)stats[2]);
}

static PyMethodDef cuda_methods[] = {
    {"device_count", py_device_count, METH_NOARGS, "(count, reason): CUDA devices, and why none when 0."},
    {"versions", py_versions, METH_NOARGS, "(runtime, driver) CUDA versions as integers (0 when absent)."},
    {"device_name", py_device_name, METH_VARARGS, "device_name(i) -> (name, major, minor)."},
    {"iota", py_iota, METH_VARARGS, "iota(n, step) -> bytes of int32 i*step computed on the GPU."},
    {"upload", py_upload, METH_VARARGS, "upload(buffer) -> (capsule, ptr): a device copy, freed with the capsule."},
    {"to_host", py_to_host, METH_VARARGS, "to_host(ptr, nbytes) -> bytes copied from device memory."},
    {"synchronize", py_synchronize, METH_NOARGS, "Waits for all work on the current device."},
    {"dlpack_info", py_dlpack_info, METH_O,
     "dlpack_info(capsule) -> (ptr, device_type, device_id, shape, strides or None, code, bits, lanes)."},
    {"ac_lookup", py_ac_lookup, METH_VARARGS,
     "ac_lookup(ptr, dtype, T, V, stride, rule, precision, logits, temperature, symbols_int64) -> "
     "(cum bytes, freq bytes, first bad row or -1)."},
    {"ac_scan", py_ac_scan, METH_VARARGS,
     "ac_scan(ptr, dtype, T, V, stride, rule, precision, logits, temperature) -> (handle, first bad row or -1)."},
    {"ac_find", py_ac_find, METH_VARARGS,
     "ac_find(handle, rows_int64, targets_uint32) -> (symbol bytes, cum bytes, freq bytes)."},
    {"alloc", py_alloc, METH_VARARGS,
     "alloc(nbytes) -> (capsule, ptr): uninitialised device memory, freed with the capsule."},
    {"kv_quantize", py_kv_quantize, METH_VARARGS,
     "kv_quantize(desc, stream, check) -> first bad slice or -1 (ccomp._kv_gpu builds desc)."},
    {"kv_dequantize", py_kv_dequantize, METH_VARARGS,
     "kv_dequantize(desc, stream, check) -> first bad slice or -1."},
    {"kv_attention_workspace", py_kv_attention_workspace, METH_VARARGS,
     "kv_attention_workspace(S, R, Dv, v_descs) -> workspace bytes of kv_attention."},
    {"kv_attention", py_kv_attention, METH_VARARGS,
     "kv_attention(q, q_dtype, S, R, D, scale, k_descs, v_descs, out, ws, ws_bytes, stream)."},
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
    {"tokens_workspace", py_tokens_workspace, METH_VARARGS,
     "tokens_workspace(B, N, D, rows_off_u64, cols_off_u64, k) -> workspace bytes of tokens_topk."},
    {"tokens_delta", py_tokens_delta, METH_VARARGS,
     "tokens_delta(D) -> the GPU screen's error bound for D channels."},
    {"tokens_topk", py_tokens_topk, METH_VARARGS,
     "tokens_topk(keys, dtype, B, N, D, stride_b, stride_n, rows_i64, rows_off_u64, cols_i64, cols_off_u64, "
     "exclude_self, k, cols_distinct, out_idx, out_val, ws, ws_bytes, stream, check) -> "
     "(first bad element or -1, overflowed rows, workspace bytes, slices); the last three 0 without check."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef cuda_module = {PyModuleDef_HEAD_INIT, "ccomp._cuda",
                                         "CUDA entry points of ccomp (use ccomp.cuda).", -1, cuda_methods,
                                         NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cuda(void)
{
    return PyModule_Create(&cuda_module);
}

/* ccomp._cuda: the CUDA side of ccomp, built only when nvcc is found.
 * A machine without a GPU or driver imports it fine; the functions then say
 * why no device is usable instead of crashing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef cuda_module = {PyModuleDef_HEAD_INIT, "ccomp._cuda",
                                         "CUDA entry points of ccomp (use ccomp.cuda).", -1, cuda_methods,
                                         NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cuda(void)
{
    return PyModule_Create(&cuda_module);
}

/* ccomp._cuda: the CUDA side of ccomp, built only when nvcc is found.
 * A machine without a GPU or driver imports it fine; the functions then say
 * why no device is usable instead of crashing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "cuda_binding.h"

static PyObject *py_device_count(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    int n = 0;
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc = ccomp_cuda_device_count(&n, &err);
    return Py_BuildValue("(is)", rc == CCOMP_OK ? n : 0, rc == CCOMP_OK ? "" : err.msg);
}

static PyObject *py_versions(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    int rt = 0, drv = 0;
    ccomp_cuda_runtime_version(&rt, NULL);
    if (ccomp_cuda_driver_version(&drv, NULL) != CCOMP_OK)
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
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc = ccomp_cuda_device_name(dev, name, sizeof name, &major, &minor, &err);
    if (rc != CCOMP_OK) {
        char what[64];
        snprintf(what, sizeof what, "CUDA device %d", dev);
        return cuda_status_error(rc, &err, what);
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
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_iota((int *)PyBytes_AS_STRING(out), n, step, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK) {
        Py_DECREF(out);
        return cuda_status_error(rc, &err, "CUDA kernel launch failed");
    }
    return out;
}

/* ------------------------------------------------------------ device memory */

PyObject *cuda_status_error(ccomp_status code, const ccomp_error *err, const char *what)
{
    PyObject *type = PyExc_RuntimeError;
    switch (code) {
    case CCOMP_ERR_VALUE:
    case CCOMP_ERR_CORRUPT:
        type = PyExc_ValueError;
        break;
    case CCOMP_ERR_TYPE:
        type = PyExc_TypeError;
        break;
    case CCOMP_ERR_NOMEM:
        type = PyExc_MemoryError;
        break;
    case CCOMP_ERR_CANCELLED:
        type = PyExc_KeyboardInterrupt;
        break;
    default:
        break;
    }
    PyErr_Format(type, "%s: %s", what, err != NULL && err->msg[0] ? err->msg : "failed");
    return NULL;
}

void buffer_destructor(PyObject *capsule)
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
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_upload(b.buf, (size_t)b.len, &dev, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "copying to the GPU failed");
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
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_to_host(PyBytes_AS_STRING(out), (const void *)(uintptr_t)ptr, (size_t)n, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK) {
        Py_DECREF(out);
        return cuda_status_error(rc, &err, "copying from the GPU failed");
    }
    return out;
}

static PyObject *py_synchronize(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_synchronize(&err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "synchronize");
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

int get_buffer(PyObject *obj, Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t n, const char *what)
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
    ccomp_error err = {CCOMP_OK, ""};
    ccomp_status rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ccomp_cuda_alloc((size_t)n, &dev, &err);
    Py_END_ALLOW_THREADS
    if (rc != CCOMP_OK)
        return cuda_status_error(rc, &err, "allocating GPU memory failed");
    PyObject *cap = PyCapsule_New(dev, BUFFER_CAPSULE, buffer_destructor);
    if (cap == NULL) {
        ccomp_cuda_free(dev);
        return NULL;
    }
    return Py_BuildValue("(NK)", cap, (unsigned long long)(uintptr_t)dev);
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
    {"alloc", py_alloc, METH_VARARGS,
     "alloc(nbytes) -> (capsule, ptr): uninitialised device memory, freed with the capsule."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef cuda_module = {PyModuleDef_HEAD_INIT, "ccomp._cuda",
                                         "CUDA entry points of ccomp (use ccomp.cuda).", -1, cuda_methods,
                                         NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cuda(void)
{
    PyObject *m = PyModule_Create(&cuda_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, ccomp_cuda_ac_methods) != 0 || PyModule_AddFunctions(m, ccomp_cuda_kv_methods) != 0 ||
        PyModule_AddFunctions(m, ccomp_cuda_sketch_methods) != 0 ||
        PyModule_AddFunctions(m, ccomp_cuda_tokens_methods) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

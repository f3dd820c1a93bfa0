/* ccomp._cuda: the CUDA side of ccomp, built only when nvcc is found.
 * A machine without a GPU or driver imports it fine; the functions then say
 * why no device is usable instead of crashing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

static PyMethodDef cuda_methods[] = {
    {"device_count", py_device_count, METH_NOARGS, "(count, reason): CUDA devices, and why none when 0."},
    {"versions", py_versions, METH_NOARGS, "(runtime, driver) CUDA versions as integers (0 when absent)."},
    {"device_name", py_device_name, METH_VARARGS, "device_name(i) -> (name, major, minor)."},
    {"iota", py_iota, METH_VARARGS, "iota(n, step) -> bytes of int32 i*step computed on the GPU."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef cuda_module = {PyModuleDef_HEAD_INIT, "ccomp._cuda",
                                         "CUDA entry points of ccomp (use ccomp.cuda).", -1, cuda_methods,
                                         NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cuda(void)
{
    return PyModule_Create(&cuda_module);
}

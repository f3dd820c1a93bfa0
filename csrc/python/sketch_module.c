/* Binding of the sketch core (ccomp.sketch).
 *
 * python/ccomp/sketch.py passes a sketch as (tables, tdtype, codes, cols,
 * bits): tables a C-contiguous [rows, G, 2^bits] array whose NumPy type
 * matches tdtype (float32, float16, float64; bfloat16 as its uint16 bits),
 * codes the packed uint8 [rows, G, group_bytes].  Inputs of the kernels are
 * C-contiguous 2-D float32 or float64 arrays (the precision); outputs are new
 * arrays of the same type. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL ccomp_ARRAY_API
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "ccomp/sketch.h"

static const char *dtype_name(int t)
{
    switch (t) {
    case CCOMP_SKETCH_F32: return "float32";
    case CCOMP_SKETCH_F16: return "float16";
    case CCOMP_SKETCH_BF16: return "bfloat16 (as uint16 bits)";
    case CCOMP_SKETCH_F64: return "float64";
    }
    return "unknown";
}

static int npy_of(int t)
{
    switch (t) {
    case CCOMP_SKETCH_F32: return NPY_FLOAT32;
    case CCOMP_SKETCH_F16: return NPY_FLOAT16;
    case CCOMP_SKETCH_BF16: return NPY_UINT16;
    default: return NPY_FLOAT64;
    }
}

/* "uint8", "float32", ... (NumPy's scalar type name without the module) */
static const char *type_name(PyArrayObject *a)
{
    const char *n = PyArray_DESCR(a)->typeobj->tp_name, *dot = strrchr(n, '.');
    return dot ? dot + 1 : n;
}

/* A C-contiguous, aligned, native-endian view of obj (a new reference appended to keep); NULL with an exception. */
static PyArrayObject *borrow(PyObject *obj, PyObject *keep)
{
    PyArrayObject *a =
        (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED);
    if (a == NULL) return NULL;
    if (PyList_Append(keep, (PyObject *)a) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    Py_DECREF(a);
    return a;
}

static void shape_str(PyArrayObject *a, char *buf, size_t len)
{
    int d, nd = PyArray_NDIM(a);
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "(");
    for (d = 0; d < nd && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %zd" : "%zd", (Py_ssize_t)PyArray_DIM(a, d));
    if (o < len) snprintf(buf + o, len - o, nd == 1 ? ",)" : ")");
}

/* Fills s from (tables, tdtype, codes, cols, bits); -1 with an exception on bad input. */
static int sketch_from(PyObject *tables_obj, int tdtype, PyObject *codes_obj, Py_ssize_t cols, int bits, PyObject *keep,
                       ccomp_sketch *s, const char *what)
{
    PyArrayObject *t, *c;
    ccomp_error err;
    char got[96];
    size_t rows, groups, gb;
    if ((t = borrow(tables_obj, keep)) == NULL || (c = borrow(codes_obj, keep)) == NULL) return -1;
    if (tdtype < CCOMP_SKETCH_F32 || tdtype > CCOMP_SKETCH_F64) {
        PyErr_Format(PyExc_ValueError, "%s: unknown table type %d", what, tdtype);
        return -1;
    }
    if (PyArray_TYPE(t) != npy_of(tdtype)) {
        PyErr_Format(PyExc_TypeError, "%s: tables must be %s, got %s", what, dtype_name(tdtype),
                     type_name(t));
        return -1;
    }
    shape_str(t, got, sizeof got);
    if (bits < 2 || bits > 4) {
        PyErr_Format(PyExc_ValueError, "%s: bits must be 2, 3 or 4, got %d", what, bits);
        return -1;
    }
    if (PyArray_NDIM(t) != 3 || PyArray_DIM(t, 2) != (npy_intp)1 << bits || PyArray_DIM(t, 0) < 1 ||
        PyArray_DIM(t, 1) < 1) {
        PyErr_Format(PyExc_ValueError, "%s: tables must have shape (out_features, groups, %d) for %d-bit codes, got %s",
                     what, 1 << bits, bits, got);
        return -1;
    }
    rows = (size_t)PyArray_DIM(t, 0);
    groups = (size_t)PyArray_DIM(t, 1);
    ccomp_error_clear(&err);
    if (cols < 0 || ccomp_sketch_check(rows, (size_t)cols, groups, bits, tdtype, &err) != CCOMP_OK) {
        if (cols < 0) ccomp_fail(&err, CCOMP_ERR_VALUE, "in_features must be positive, got %zd", cols);
        ccomp_raise(&err, what);
        return -1;
    }
    gb = ccomp_sketch_group_bytes((size_t)cols / groups, bits);
    shape_str(c, got, sizeof got);
    if (PyArray_TYPE(c) != NPY_UINT8 || PyArray_NDIM(c) != 3 || (size_t)PyArray_DIM(c, 0) != rows ||
        (size_t)PyArray_DIM(c, 1) != groups || (size_t)PyArray_DIM(c, 2) != gb) {
        PyErr_Format(PyExc_ValueError, "%s: codes must be uint8 of shape (%zu, %zu, %zu) (out_features, groups, "
                     "ceil(%zu * %d / 8) bytes per group), got %s of shape %s",
                     what, rows, groups, gb, (size_t)cols / groups, bits, type_name(c), got);
        return -1;
    }
    s->rows = rows;
    s->cols = (size_t)cols;
    s->groups = groups;
    s->bits = bits;
    s->dtype = tdtype;
    s->tables = PyArray_DATA(t);
    s->codes = (const uint8_t *)PyArray_DATA(c);
    return 0;
}

/* A 2-D float32/float64 input of `width` columns; *prec gets its precision (or must equal it when >= 0). */
static PyArrayObject *input_2d(PyObject *obj, size_t width, int *prec, PyObject *keep, const char *name,
                               const char *what)
{
    PyArrayObject *a = borrow(obj, keep);
    int p;
    char got[96];
    if (a == NULL) return NULL;
    p = PyArray_TYPE(a) == NPY_FLOAT32 ? CCOMP_SKETCH_F32 : PyArray_TYPE(a) == NPY_FLOAT64 ? CCOMP_SKETCH_F64 : -1;
    if (p < 0 || (*prec >= 0 && p != *prec)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be %s, got %s", what, name,
                     *prec >= 0 ? dtype_name(*prec) : "float32 or float64", type_name(a));
        return NULL;
    }
    shape_str(a, got, sizeof got);
    if (PyArray_NDIM(a) != 2 || (size_t)PyArray_DIM(a, 1) != width) {
        PyErr_Format(PyExc_ValueError, "%s: %s must have shape (n, %zu), got %s", what, name, width, got);
        return NULL;
    }
    *prec = p;
    return a;
}

static PyArrayObject *new_array(int nd, npy_intp *dims, int prec)
{
    return (PyArrayObject *)PyArray_SimpleNew(nd, dims, prec == CCOMP_SKETCH_F64 ? NPY_FLOAT64 : NPY_FLOAT32);
}

/* sketch_check(tables, tdtype, codes, cols, bits) -> None: the shapes and types of a sketch */
static PyObject *py_sketch_check(PyObject *self, PyObject *args)
{
    PyObject *tobj, *cobj, *keep;
    int tdtype, bits, rc;
    Py_ssize_t cols;
    ccomp_sketch s;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiOni", &tobj, &tdtype, &cobj, &cols, &bits)) return NULL;
    if ((keep = PyList_New(0)) == NULL) return NULL;
    rc = sketch_from(tobj, tdtype, cobj, cols, bits, keep, &s, "Sketch");
    Py_DECREF(keep);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* sketch_pack(codes uint8 [rows, cols], groups, bits) -> packed uint8 [rows, groups, group_bytes] */
static PyObject *py_sketch_pack(PyObject *self, PyObject *args)
{
    PyObject *obj, *keep = NULL, *res = NULL;
    Py_ssize_t groups;
    int bits;
    PyArrayObject *c, *out;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oni", &obj, &groups, &bits)) return NULL;
    if ((keep = PyList_New(0)) == NULL || (c = borrow(obj, keep)) == NULL) goto done;
    if (PyArray_TYPE(c) == NPY_UINT8 && PyArray_NDIM(c) == 2) {
        /* the core checks every code, then packs it: a copy keeps another thread from changing it in between */
        PyArrayObject *own = (PyArrayObject *)PyArray_NewCopy(c, NPY_CORDER);
        if (own == NULL || PyList_Append(keep, (PyObject *)own) < 0) {
            Py_XDECREF(own);
            goto done;
        }
        Py_DECREF(own);
        c = own;
    }
    if (PyArray_TYPE(c) != NPY_UINT8 || PyArray_NDIM(c) != 2) {
        PyErr_Format(PyExc_TypeError, "pack: codes must be a 2-D uint8 array (out_features, in_features), got %d-D %s",
                     PyArray_NDIM(c), type_name(c));
        goto done;
    }
    ccomp_error_clear(&err);
    if (groups < 1 || ccomp_sketch_check((size_t)PyArray_DIM(c, 0), (size_t)PyArray_DIM(c, 1), (size_t)groups, bits,
                                         CCOMP_SKETCH_F32, &err) != CCOMP_OK) {
        if (groups < 1) ccomp_fail(&err, CCOMP_ERR_VALUE, "groups must be >= 1, got %zd", groups);
        ccomp_raise(&err, "pack");
        goto done;
    }
    {
        size_t rows = (size_t)PyArray_DIM(c, 0), cols = (size_t)PyArray_DIM(c, 1);
        npy_intp dims[3] = {(npy_intp)rows, groups, (npy_intp)ccomp_sketch_group_bytes(cols / (size_t)groups, bits)};
        if ((out = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_UINT8)) == NULL) goto done;
        CCOMP_NOGIL_BEGIN
        st = ccomp_sketch_pack((const uint8_t *)PyArray_DATA(c), rows, cols, (size_t)groups, bits,
                               (uint8_t *)PyArray_DATA(out), &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            Py_DECREF(out);
            ccomp_raise(&err, "pack");
            goto done;
        }
        res = (PyObject *)out;
    }
done:
    Py_XDECREF(keep);
    return res;
}

/* sketch_unpack(packed uint8 [rows, groups, gb], cols, bits) -> uint8 [rows, cols] */
static PyObject *py_sketch_unpack(PyObject *self, PyObject *args)
{
    PyObject *obj, *keep = NULL, *res = NULL;
    Py_ssize_t cols;
    int bits;
    PyArrayObject *c, *out;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oni", &obj, &cols, &bits)) return NULL;
    if ((keep = PyList_New(0)) == NULL || (c = borrow(obj, keep)) == NULL) goto done;
    if (PyArray_TYPE(c) != NPY_UINT8 || PyArray_NDIM(c) != 3 || PyArray_DIM(c, 0) < 1 || PyArray_DIM(c, 1) < 1) {
        PyErr_Format(PyExc_ValueError, "unpack: codes must be a 3-D uint8 array (out_features, groups, bytes), got "
                     "%d-D %s", PyArray_NDIM(c), type_name(c));
        goto done;
    }
    ccomp_error_clear(&err);
    {
        size_t rows = (size_t)PyArray_DIM(c, 0), groups = (size_t)PyArray_DIM(c, 1);
        npy_intp dims[2] = {(npy_intp)rows, cols};
        if (cols < 1 || ccomp_sketch_check(rows, (size_t)cols, groups, bits, CCOMP_SKETCH_F32, &err) != CCOMP_OK) {
            if (cols < 1) ccomp_fail(&err, CCOMP_ERR_VALUE, "in_features must be positive, got %zd", cols);
            ccomp_raise(&err, "unpack");
            goto done;
        }
        if ((size_t)PyArray_DIM(c, 2) != ccomp_sketch_group_bytes((size_t)cols / groups, bits)) {
            PyErr_Format(PyExc_ValueError, "unpack: %zu %d-bit codes per group take %zu bytes, got %zd", (size_t)cols / groups,
                         bits, ccomp_sketch_group_bytes((size_t)cols / groups, bits), (Py_ssize_t)PyArray_DIM(c, 2));
            goto done;
        }
        if ((out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8)) == NULL) goto done;
        CCOMP_NOGIL_BEGIN
        st = ccomp_sketch_unpack((const uint8_t *)PyArray_DATA(c), rows, (size_t)cols, groups, bits,
                                 (uint8_t *)PyArray_DATA(out), &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            Py_DECREF(out);
            ccomp_raise(&err, "unpack");
            goto done;
        }
        res = (PyObject *)out;
    }
done:
    Py_XDECREF(keep);
    return res;
}

/* sketch_dequantize(tables, tdtype, codes, cols, bits, float64, threads) -> W_hat [rows, cols] */
static PyObject *py_sketch_dequantize(PyObject *self, PyObject *args)
{
    PyObject *tobj, *cobj, *thobj, *keep = NULL, *res = NULL;
    int tdtype, bits, f64, threads;
    Py_ssize_t cols;
    ccomp_sketch s;
    ccomp_error err;
    ccomp_status st;
    PyArrayObject *out;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiOnipO", &tobj, &tdtype, &cobj, &cols, &bits, &f64, &thobj) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if ((keep = PyList_New(0)) == NULL || sketch_from(tobj, tdtype, cobj, cols, bits, keep, &s, "dequantize") < 0)
        goto done;
    {
        npy_intp dims[2] = {(npy_intp)s.rows, (npy_intp)s.cols};
        int prec = f64 ? CCOMP_SKETCH_F64 : CCOMP_SKETCH_F32;
        if ((out = new_array(2, dims, prec)) == NULL) goto done;
        ccomp_error_clear(&err);
        CCOMP_NOGIL_BEGIN
        st = ccomp_sketch_dequantize(&s, prec, PyArray_DATA(out), threads, &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            Py_DECREF(out);
            ccomp_raise(&err, "dequantize");
            goto done;
        }
        res = (PyObject *)out;
    }
done:
    Py_XDECREF(keep);
    return res;
}

/* sketch_matmul(x [n, cols], tables, tdtype, codes, cols, bits, threads) -> y [n, rows] */
static PyObject *py_sketch_matmul(PyObject *self, PyObject *args)
{
    PyObject *xobj, *tobj, *cobj, *thobj, *keep = NULL, *res = NULL;
    int tdtype, bits, threads, prec = -1;
    Py_ssize_t cols;
    ccomp_sketch s;
    ccomp_error err;
    ccomp_status st;
    PyArrayObject *x, *out;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiOniO", &xobj, &tobj, &tdtype, &cobj, &cols, &bits, &thobj) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if ((keep = PyList_New(0)) == NULL || sketch_from(tobj, tdtype, cobj, cols, bits, keep, &s, "matmul") < 0 ||
        (x = input_2d(xobj, s.cols, &prec, keep, "x", "matmul")) == NULL)
        goto done;
    {
        npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)s.rows};
        if ((out = new_array(2, dims, prec)) == NULL) goto done;
        ccomp_error_clear(&err);
        CCOMP_NOGIL_BEGIN
        st = ccomp_sketch_matmul(&s, PyArray_DATA(x), (size_t)PyArray_DIM(x, 0), prec, PyArray_DATA(out), threads, &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            Py_DECREF(out);
            ccomp_raise(&err, "matmul");
            goto done;
        }
        res = (PyObject *)out;
    }
done:
    Py_XDECREF(keep);
    return res;
}

/* sketch_grad_tables(x [n, cols], gy [n, rows], tables, tdtype, codes, cols, bits, threads) -> [rows, G, K] */
static PyObject *py_sketch_grad_tables(PyObject *self, PyObject *args)
{
    PyObject *xobj, *gobj, *tobj, *cobj, *thobj, *keep = NULL, *res = NULL;
    int tdtype, bits, threads, prec = -1;
    Py_ssize_t cols;
    ccomp_sketch s;
    ccomp_error err;
    ccomp_status st;
    PyArrayObject *x, *gy, *out;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOiOniO", &xobj, &gobj, &tobj, &tdtype, &cobj, &cols, &bits, &thobj) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if ((keep = PyList_New(0)) == NULL || sketch_from(tobj, tdtype, cobj, cols, bits, keep, &s, "grad_tables") < 0 ||
        (x = input_2d(xobj, s.cols, &prec, keep, "x", "grad_tables")) == NULL ||
        (gy = input_2d(gobj, s.rows, &prec, keep, "grad_y", "grad_tables")) == NULL)
        goto done;
    if (PyArray_DIM(gy, 0) != PyArray_DIM(x, 0)) {
        PyErr_Format(PyExc_ValueError, "grad_tables: grad_y must have as many rows as x (%zd), got %zd",
                     (Py_ssize_t)PyArray_DIM(x, 0), (Py_ssize_t)PyArray_DIM(gy, 0));
        goto done;
    }
    {
        npy_intp dims[3] = {(npy_intp)s.rows, (npy_intp)s.groups, (npy_intp)1 << bits};
        if ((out = new_array(3, dims, prec)) == NULL) goto done;
        ccomp_error_clear(&err);
        CCOMP_NOGIL_BEGIN
        st = ccomp_sketch_grad_tables(&s, PyArray_DATA(x), PyArray_DATA(gy), (size_t)PyArray_DIM(x, 0), prec,
                                      PyArray_DATA(out), threads, &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            Py_DECREF(out);
            ccomp_raise(&err, "grad_tables");
            goto done;
        }
        res = (PyObject *)out;
    }
done:
    Py_XDECREF(keep);
    return res;
}

/* sketch_grad_input(gy [n, rows], tables, tdtype, codes, cols, bits, threads) -> gx [n, cols] */
static PyObject *py_sketch_grad_input(PyObject *self, PyObject *args)
{
    PyObject *gobj, *tobj, *cobj, *thobj, *keep = NULL, *res = NULL;
    int tdtype, bits, threads, prec = -1;
    Py_ssize_t cols;
    ccomp_sketch s;
    ccomp_error err;
    ccomp_status st;
    PyArrayObject *gy, *out;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiOniO", &gobj, &tobj, &tdtype, &cobj, &cols, &bits, &thobj) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if ((keep = PyList_New(0)) == NULL || sketch_from(tobj, tdtype, cobj, cols, bits, keep, &s, "grad_input") < 0 ||
        (gy = input_2d(gobj, s.rows, &prec, keep, "grad_y", "grad_input")) == NULL)
        goto done;
    {
        npy_intp dims[2] = {PyArray_DIM(gy, 0), (npy_intp)s.cols};
        if ((out = new_array(2, dims, prec)) == NULL) goto done;
        ccomp_error_clear(&err);
        CCOMP_NOGIL_BEGIN
        st = ccomp_sketch_grad_input(&s, PyArray_DATA(gy), (size_t)PyArray_DIM(gy, 0), prec, PyArray_DATA(out), threads,
                                     &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            Py_DECREF(out);
            ccomp_raise(&err, "grad_input");
            goto done;
        }
        res = (PyObject *)out;
    }
done:
    Py_XDECREF(keep);
    return res;
}

/* The weights of a fit: a 2-D float32 array (rows may be strided). */
static PyArrayObject *weights_2d(PyObject *obj, PyObject *keep, const char *what)
{
    PyArrayObject *w = borrow(obj, keep);
    if (w == NULL) return NULL;
    if (PyArray_TYPE(w) != NPY_FLOAT32 || PyArray_NDIM(w) != 2) {
        PyErr_Format(PyExc_TypeError, "%s: W must be a 2-D float32 array (out_features, in_features), got %d-D %s", what,
                     PyArray_NDIM(w), type_name(w));
        return NULL;
    }
    return w;
}

/* sketch_fit(method 0 rtn / 1 kmeans, W f32 [rows, cols], groups, bits, tdtype, col_weight f64 [cols] or None,
 *            iters, threads) -> (tables [rows, G, K], codes [rows, G, gb]) */
static PyObject *py_sketch_fit(PyObject *self, PyObject *args)
{
    PyObject *wobj, *cwobj, *thobj, *keep = NULL, *res = NULL;
    int method, bits, tdtype, iters, threads;
    Py_ssize_t groups;
    PyArrayObject *w, *cw = NULL, *tables = NULL, *codes = NULL;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOniiOiO", &method, &wobj, &groups, &bits, &tdtype, &cwobj, &iters, &thobj) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if (method != 0 && method != 1) {
        PyErr_Format(PyExc_ValueError, "fit: method must be 0 (rtn) or 1 (k-means), got %d", method);
        return NULL;
    }
    if ((keep = PyList_New(0)) == NULL || (w = weights_2d(wobj, keep, "fit")) == NULL) goto done;
    {
        size_t rows = (size_t)PyArray_DIM(w, 0), cols = (size_t)PyArray_DIM(w, 1);
        ccomp_error_clear(&err);
        if (groups < 1 || ccomp_sketch_check(rows, cols, (size_t)groups, bits, tdtype, &err) != CCOMP_OK) {
            if (groups < 1) ccomp_fail(&err, CCOMP_ERR_VALUE, "groups must be >= 1, got %zd", groups);
            ccomp_raise(&err, "fit");
            goto done;
        }
        if (cwobj != Py_None) {
            cw = (PyArrayObject *)PyArray_FROMANY(cwobj, NPY_FLOAT64, 1, 1, NPY_ARRAY_IN_ARRAY);
            if (cw == NULL || PyList_Append(keep, (PyObject *)cw) < 0) {
                Py_XDECREF(cw);
                goto done;
            }
            Py_DECREF(cw);
            if ((size_t)PyArray_DIM(cw, 0) != cols) {
                PyErr_Format(PyExc_ValueError, "fit: column weights must have %zu entries, got %zd", cols,
                             (Py_ssize_t)PyArray_DIM(cw, 0));
                goto done;
            }
        }
        {
            npy_intp td[3] = {(npy_intp)rows, groups, (npy_intp)1 << bits};
            npy_intp cd[3] = {(npy_intp)rows, groups, (npy_intp)ccomp_sketch_group_bytes(cols / (size_t)groups, bits)};
            tables = (PyArrayObject *)PyArray_SimpleNew(3, td, npy_of(tdtype));
            codes = (PyArrayObject *)PyArray_SimpleNew(3, cd, NPY_UINT8);
            if (tables == NULL || codes == NULL) goto done;
        }
        CCOMP_NOGIL_BEGIN
        if (method == 0)
            st = ccomp_sketch_fit_rtn((const float *)PyArray_DATA(w), cols, rows, cols, (size_t)groups, bits, tdtype,
                                      PyArray_DATA(tables), (uint8_t *)PyArray_DATA(codes), threads, &err);
        else
            st = ccomp_sketch_fit_kmeans((const float *)PyArray_DATA(w), cols, rows, cols, (size_t)groups, bits, tdtype,
                                         cw ? (const double *)PyArray_DATA(cw) : NULL, iters, PyArray_DATA(tables),
                                         (uint8_t *)PyArray_DATA(codes), threads, &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            ccomp_raise(&err, "fit");
            goto done;
        }
        res = Py_BuildValue("(OO)", tables, codes);
    }
done:
    Py_XDECREF(tables);
    Py_XDECREF(codes);
    Py_XDECREF(keep);
    return res;
}

/* sketch_gptq(W f32 [rows, cols], U f32 [cols, cols], tables, tdtype, groups, bits, block, threads) -> codes */
static PyObject *py_sketch_gptq(PyObject *self, PyObject *args)
{
    PyObject *wobj, *uobj, *tobj, *thobj, *keep = NULL, *res = NULL;
    int bits, tdtype, threads;
    Py_ssize_t groups, block;
    PyArrayObject *w, *u, *t, *codes = NULL;
    ccomp_error err;
    ccomp_status st;
    char got[96];
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOininO", &wobj, &uobj, &tobj, &tdtype, &groups, &bits, &block, &thobj) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if ((keep = PyList_New(0)) == NULL || (w = weights_2d(wobj, keep, "fit")) == NULL ||
        (u = borrow(uobj, keep)) == NULL || (t = borrow(tobj, keep)) == NULL)
        goto done;
    {
        size_t rows = (size_t)PyArray_DIM(w, 0), cols = (size_t)PyArray_DIM(w, 1);
        ccomp_error_clear(&err);
        if (groups < 1 || block < 1 ||
            ccomp_sketch_check(rows, cols, (size_t)groups, bits, tdtype, &err) != CCOMP_OK) {
            if (groups < 1 || block < 1)
                ccomp_fail(&err, CCOMP_ERR_VALUE, "groups and block size must be >= 1, got %zd and %zd", groups, block);
            ccomp_raise(&err, "fit");
            goto done;
        }
        shape_str(u, got, sizeof got);
        if (PyArray_TYPE(u) != NPY_FLOAT32 || PyArray_NDIM(u) != 2 || (size_t)PyArray_DIM(u, 0) != cols ||
            (size_t)PyArray_DIM(u, 1) != cols) {
            PyErr_Format(PyExc_ValueError, "fit: the Cholesky factor must be float32 of shape (%zu, %zu), got %s %s", cols,
                         cols, type_name(u), got);
            goto done;
        }
        shape_str(t, got, sizeof got);
        if (PyArray_TYPE(t) != npy_of(tdtype) || PyArray_NDIM(t) != 3 || (size_t)PyArray_DIM(t, 0) != rows ||
            PyArray_DIM(t, 1) != groups || PyArray_DIM(t, 2) != (npy_intp)1 << bits) {
            PyErr_Format(PyExc_ValueError, "fit: tables must be %s of shape (%zu, %zd, %d), got %s %s",
                         dtype_name(tdtype), rows, groups, 1 << bits, type_name(t), got);
            goto done;
        }
        {
            npy_intp cd[3] = {(npy_intp)rows, groups, (npy_intp)ccomp_sketch_group_bytes(cols / (size_t)groups, bits)};
            if ((codes = (PyArrayObject *)PyArray_SimpleNew(3, cd, NPY_UINT8)) == NULL) goto done;
        }
        CCOMP_NOGIL_BEGIN
        st = ccomp_sketch_fit_gptq((const float *)PyArray_DATA(w), cols, (const float *)PyArray_DATA(u), rows, cols,
                                   (size_t)groups, bits, tdtype, PyArray_DATA(t), (size_t)block,
                                   (uint8_t *)PyArray_DATA(codes), threads, &err);
        CCOMP_NOGIL_END
        if (st != CCOMP_OK) {
            ccomp_raise(&err, "fit");
            goto done;
        }
        res = (PyObject *)codes;
        codes = NULL;
    }
done:
    Py_XDECREF(codes);
    Py_XDECREF(keep);
    return res;
}

/* sketch_container_parse(bytes-like) -> (kind, [(name bytes, rows, cols, groups, bits, tdtype, tables_off,
 * codes_off)]): the checked layout of a CCSK container (CorruptStreamError when it is not one) */
static PyObject *py_sketch_container_parse(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    ccomp_sketch_entry *es = NULL;
    size_t count = 0, i;
    int kind = 0;
    ccomp_error err;
    ccomp_status st;
    PyObject *list = NULL, *res = NULL;
    (void)self;
    if (PyObject_GetBuffer(arg, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    ccomp_error_clear(&err);
    /* the parse is linear and reads an immutable copy's worth of bytes: it keeps the GIL (a bytes object) */
    st = ccomp_sketch_container_parse((const uint8_t *)view.buf, (size_t)view.len, &kind, &es, &count, &err);
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "sketch container");
        goto done;
    }
    if ((list = PyList_New((Py_ssize_t)count)) == NULL) goto done;
    for (i = 0; i < count; i++) {
        const ccomp_sketch_entry *e = &es[i];
        PyObject *t = Py_BuildValue("(y#nnniinn)", (const char *)view.buf + e->name_off, (Py_ssize_t)e->name_len,
                                    (Py_ssize_t)e->rows, (Py_ssize_t)e->cols, (Py_ssize_t)e->groups, e->bits, e->dtype,
                                    (Py_ssize_t)e->tables_off, (Py_ssize_t)e->codes_off);
        if (t == NULL) goto done;
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    res = Py_BuildValue("(iO)", kind, list);
done:
    Py_XDECREF(list);
    free(es);
    PyBuffer_Release(&view);
    return res;
}

static PyObject *py_sketch_kernel_name(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(ccomp_sketch_kernel_name());
}

PyMethodDef ccomp_sketch_methods[] = {
    {"sketch_check", py_sketch_check, METH_VARARGS, "sketch_check(tables, tdtype, codes, in_features, bits) -> None."},
    {"sketch_pack", py_sketch_pack, METH_VARARGS, "sketch_pack(codes u8 [out, in], groups, bits) -> packed."},
    {"sketch_unpack", py_sketch_unpack, METH_VARARGS, "sketch_unpack(packed, in_features, bits) -> codes u8 [out, in]."},
    {"sketch_dequantize", py_sketch_dequantize, METH_VARARGS,
     "sketch_dequantize(tables, tdtype, codes, in_features, bits, float64, threads) -> W_hat."},
    {"sketch_matmul", py_sketch_matmul, METH_VARARGS,
     "sketch_matmul(x [n, in], tables, tdtype, codes, in_features, bits, threads) -> x W_hat^T."},
    {"sketch_grad_tables", py_sketch_grad_tables, METH_VARARGS,
     "sketch_grad_tables(x, grad_y, tables, tdtype, codes, in_features, bits, threads) -> [out, G, 2^bits]."},
    {"sketch_grad_input", py_sketch_grad_input, METH_VARARGS,
     "sketch_grad_input(grad_y, tables, tdtype, codes, in_features, bits, threads) -> grad_y W_hat."},
    {"sketch_fit", py_sketch_fit, METH_VARARGS,
     "sketch_fit(method, W, groups, bits, tdtype, col_weight, iters, threads) -> (tables, codes)."},
    {"sketch_gptq", py_sketch_gptq, METH_VARARGS,
     "sketch_gptq(W, U, tables, tdtype, groups, bits, block, threads) -> codes."},
    {"sketch_container_parse", py_sketch_container_parse, METH_O,
     "sketch_container_parse(data) -> (kind, [(name, out, in, groups, bits, tdtype, tables_off, codes_off)])."},
    {"sketch_kernel_name", py_sketch_kernel_name, METH_NOARGS, "The float32 kernel set in use (avx2 or scalar)."},
    {NULL, NULL, 0, NULL}};

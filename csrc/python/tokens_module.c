/* Binding of the token-similarity core (ccomp.tokens).
 *
 * python/ccomp/tokens.py passes C-contiguous arrays: keys [B, N, D] float32 or
 * float64, and per sub-image sets of query rows and candidates as flat int64
 * token indices with uint64 offsets [B + 1] (CSR).  The core checks every index
 * before it reads a key. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL ccomp_ARRAY_API
#include <numpy/arrayobject.h>

#include <math.h>

#include "binding.h"
#include "ccomp/finite.h"
#include "ccomp/tokens.h"

/* A C-contiguous view of obj with NumPy type `type` and `nd` dimensions (a new reference kept in keep). */
static PyArrayObject *view(PyObject *obj, int type, int nd, PyObject *keep, const char *name)
{
    PyArrayObject *a;
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != type || PyArray_NDIM((PyArrayObject *)obj) != nd) {
        PyErr_Format(PyExc_TypeError, "tokens: %s must be a %d-D array of %s", name, nd,
                     type == NPY_INT64 ? "int64" : type == NPY_UINT64 ? "uint64" : "float32, float64 or float16");
        return NULL;
    }
    a = (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED);
    if (a == NULL) return NULL;
    if (PyList_Append(keep, (PyObject *)a) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    Py_DECREF(a);
    return a;
}

/* An index array of the caller as a private copy (kept in keep): the core reads it without the GIL, after
 * checking it, and another thread may rewrite the caller's array meanwhile. */
static PyArrayObject *snapshot(PyObject *obj, int type, PyObject *keep, const char *name)
{
    PyArrayObject *a = view(obj, type, 1, keep, name), *c;
    if (a == NULL) return NULL;
    if ((c = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER)) == NULL) return NULL;
    if (PyList_Append(keep, (PyObject *)c) < 0) {
        Py_DECREF(c);
        return NULL;
    }
    Py_DECREF(c);
    return c;
}

/* The core's kind (CCOMP_TOKENS_F32 / _F64 / _F16, the same values as CCOMP_FINITE_*) of a float16, float32
 * or float64 array, with its NumPy type in *npy; -1 with a TypeError naming fn and what otherwise. */
_Static_assert((int)CCOMP_TOKENS_F32 == (int)CCOMP_FINITE_F32 && (int)CCOMP_TOKENS_F64 == (int)CCOMP_FINITE_F64 &&
                   (int)CCOMP_TOKENS_F16 == (int)CCOMP_FINITE_F16,
               "the tokens and finite kinds agree");

static int float_kind(PyObject *obj, const char *fn, const char *what, int *npy)
{
    *npy = PyArray_Check(obj) ? PyArray_TYPE((PyArrayObject *)obj) : -1;
    switch (*npy) {
    case NPY_FLOAT32: return CCOMP_TOKENS_F32;
    case NPY_FLOAT64: return CCOMP_TOKENS_F64;
    case NPY_FLOAT16: return CCOMP_TOKENS_F16;
    }
    PyErr_Format(PyExc_TypeError, "%s: %s must be a float32, float64 or float16 array", fn, what);
    return -1;
}

/* out (the caller's reference passes on) when the core succeeded, else NULL with its error raised */
static PyObject *result_or_raise(ccomp_status st, ccomp_error *err, const char *fn, PyArrayObject *out)
{
    if (st == CCOMP_OK) return (PyObject *)out;
    ccomp_raise(err, fn);
    Py_DECREF(out);
    return NULL;
}

/* tokens_topk(keys [B, N, D], rows, rows_off, cols, cols_off, exclude_self, k, threads, screen=0)
 *   -> (idx int64 [len(rows), k], val float32 [len(rows), k]) */
static PyObject *py_tokens_topk(PyObject *self, PyObject *args)
{
    PyObject *kobj, *robj, *roobj, *cobj, *coobj, *thobj, *keep = NULL, *res = NULL;
    PyArrayObject *keys, *rows, *ro, *cols, *co, *oi = NULL, *ov = NULL;
    int excl, threads, dtype, screen = CCOMP_TOKENS_SCREEN_AUTO, npy;
    Py_ssize_t k;
    size_t B, n_keys, bad;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOpnO|i", &kobj, &robj, &roobj, &cobj, &coobj, &excl, &k, &thobj, &screen) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if ((keep = PyList_New(0)) == NULL) return NULL;
    if ((dtype = float_kind(kobj, "tokens_topk", "keys", &npy)) < 0) goto done;
    if ((keys = view(kobj, npy, 3, keep, "keys")) == NULL ||
        (rows = snapshot(robj, NPY_INT64, keep, "rows")) == NULL ||
        (ro = snapshot(roobj, NPY_UINT64, keep, "rows_off")) == NULL ||
        (cols = snapshot(cobj, NPY_INT64, keep, "cols")) == NULL ||
        (co = snapshot(coobj, NPY_UINT64, keep, "cols_off")) == NULL)
        goto done;
    B = (size_t)PyArray_DIM(keys, 0);
    if ((size_t)PyArray_DIM(ro, 0) != B + 1 || (size_t)PyArray_DIM(co, 0) != B + 1) {
        PyErr_Format(PyExc_ValueError, "tokens_topk: offsets must have %zu entries", B + 1);
        goto done;
    }
    if (((const uint64_t *)PyArray_DATA(ro))[B] != (uint64_t)PyArray_DIM(rows, 0) ||
        ((const uint64_t *)PyArray_DATA(co))[B] != (uint64_t)PyArray_DIM(cols, 0)) {
        PyErr_SetString(PyExc_ValueError, "tokens_topk: the last offset must equal the number of indices");
        goto done;
    }
    if (k < 1 || k > CCOMP_TOKENS_MAX_K) {
        PyErr_Format(PyExc_ValueError, "tokens_topk: k must be in [1, %d], got %zd", CCOMP_TOKENS_MAX_K, k);
        goto done;
    }
    {
        npy_intp dims[2] = {PyArray_DIM(rows, 0), (npy_intp)k};
        oi = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64);
        ov = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
        if (oi == NULL || ov == NULL) goto done;
    }
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    /* NaN keys would make every decision meaningless: refused like the Python layer does */
    n_keys = (size_t)PyArray_SIZE(keys);
    bad = ccomp_first_nonfinite(PyArray_DATA(keys), dtype, n_keys, threads);
    if (bad < n_keys)
        st = ccomp_fail(&err, CCOMP_ERR_VALUE, "keys must be finite, got a NaN or infinity at flat index %zu", bad);
    else
        st = ccomp_tokens_topk(PyArray_DATA(keys), dtype, B, (size_t)PyArray_DIM(keys, 1), (size_t)PyArray_DIM(keys, 2),
                           (const int64_t *)PyArray_DATA(rows), (const size_t *)PyArray_DATA(ro),
                           (const int64_t *)PyArray_DATA(cols), (const size_t *)PyArray_DATA(co), excl, (size_t)k, screen,
                           (int64_t *)PyArray_DATA(oi), (float *)PyArray_DATA(ov), threads, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "tokens_topk");
        goto done;
    }
    res = Py_BuildValue("(OO)", oi, ov);
done:
    Py_XDECREF(oi);
    Py_XDECREF(ov);
    Py_XDECREF(keep);
    return res;
}

/* tokens_gather_sum(x [B, N, D] float16/32/64, bsel int64 [M], rows int64 [M], dst int64 [M], w float64 [M] or
 * None, n_out, threads, div float64 [n_out] or None, float32 out: bool)
 *   -> [n_out, D] float64 (or float32): row o = sum over dst[i] = o of w[i] x[bsel[i], rows[i]], / div[o] */
static PyObject *py_tokens_gather_sum(PyObject *self, PyObject *args)
{
    PyObject *xo, *bo, *ro, *dobj, *wo, *thobj, *divo = Py_None, *keep = NULL, *res = NULL;
    PyArrayObject *x, *bs, *rs, *ds, *ws = NULL, *dv = NULL, *out = NULL;
    Py_ssize_t n_out;
    int threads, npy, dtype, f32 = 0;
    size_t M;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOnO|Op", &xo, &bo, &ro, &dobj, &wo, &n_out, &thobj, &divo, &f32) ||
        ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if (n_out < 0) {
        PyErr_SetString(PyExc_ValueError, "tokens_gather_sum: n_out must be >= 0");
        return NULL;
    }
    if ((keep = PyList_New(0)) == NULL) return NULL;
    if ((dtype = float_kind(xo, "tokens_gather_sum", "x", &npy)) < 0) goto done;
    if ((x = view(xo, npy, 3, keep, "x")) == NULL || (bs = snapshot(bo, NPY_INT64, keep, "bsel")) == NULL ||
        (rs = snapshot(ro, NPY_INT64, keep, "rows")) == NULL || (ds = snapshot(dobj, NPY_INT64, keep, "dst")) == NULL)
        goto done;
    M = (size_t)PyArray_DIM(bs, 0);
    if ((size_t)PyArray_DIM(rs, 0) != M || (size_t)PyArray_DIM(ds, 0) != M) {
        PyErr_SetString(PyExc_ValueError, "tokens_gather_sum: bsel, rows and dst must have the same length");
        goto done;
    }
    if (wo != Py_None) {
        if ((ws = view(wo, NPY_FLOAT64, 1, keep, "w")) == NULL) goto done;
        if ((size_t)PyArray_DIM(ws, 0) != M) {
            PyErr_SetString(PyExc_ValueError, "tokens_gather_sum: w must have one weight per contribution");
            goto done;
        }
    }
    if (divo != Py_None) {
        if ((dv = view(divo, NPY_FLOAT64, 1, keep, "div")) == NULL) goto done;
        if (PyArray_DIM(dv, 0) != n_out) {
            PyErr_SetString(PyExc_ValueError, "tokens_gather_sum: div must have one divisor per output row");
            goto done;
        }
    }
    {
        npy_intp dims[2] = {(npy_intp)n_out, PyArray_DIM(x, 2)};
        if ((out = (PyArrayObject *)PyArray_SimpleNew(2, dims, f32 ? NPY_FLOAT32 : NPY_FLOAT64)) == NULL) goto done;
    }
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_tokens_gather_sum(PyArray_DATA(x), dtype, (size_t)PyArray_DIM(x, 0), (size_t)PyArray_DIM(x, 1),
                                 (size_t)PyArray_DIM(x, 2), (const int64_t *)PyArray_DATA(bs),
                                 (const int64_t *)PyArray_DATA(rs), (const int64_t *)PyArray_DATA(ds),
                                 ws ? (const double *)PyArray_DATA(ws) : NULL, M,
                                 dv ? (const double *)PyArray_DATA(dv) : NULL, PyArray_DATA(out),
                                 f32 ? CCOMP_TOKENS_F32 : CCOMP_TOKENS_F64, (size_t)n_out, threads, &err);
    CCOMP_NOGIL_END
    res = result_or_raise(st, &err, "tokens_gather_sum", out);
    out = NULL;
done:
    Py_XDECREF(out);
    Py_XDECREF(keep);
    return res;
}

/* tokens_take(x [B, N, D] float16/32/64, bsel int64 [M], rows int64 [M], threads) -> [M, D] of x's dtype */
static PyObject *py_tokens_take(PyObject *self, PyObject *args)
{
    PyObject *xo, *bo, *ro, *thobj, *keep = NULL, *res = NULL;
    PyArrayObject *x, *bs, *rs, *out = NULL;
    int threads, npy;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOO", &xo, &bo, &ro, &thobj) || ccomp_resolve_threads(thobj, &threads) < 0)
        return NULL;
    if ((keep = PyList_New(0)) == NULL) return NULL;
    if (float_kind(xo, "tokens_take", "x", &npy) < 0) goto done;
    if ((x = view(xo, npy, 3, keep, "x")) == NULL || (bs = snapshot(bo, NPY_INT64, keep, "bsel")) == NULL ||
        (rs = snapshot(ro, NPY_INT64, keep, "rows")) == NULL)
        goto done;
    if (PyArray_DIM(rs, 0) != PyArray_DIM(bs, 0)) {
        PyErr_SetString(PyExc_ValueError, "tokens_take: bsel and rows must have the same length");
        goto done;
    }
    {
        npy_intp dims[2] = {PyArray_DIM(bs, 0), PyArray_DIM(x, 2)};
        if ((out = (PyArrayObject *)PyArray_SimpleNew(2, dims, npy)) == NULL) goto done;
    }
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_tokens_take(PyArray_DATA(x), (size_t)PyArray_DIM(x, 2) * (size_t)PyArray_ITEMSIZE(x),
                           (size_t)PyArray_DIM(x, 0), (size_t)PyArray_DIM(x, 1), (const int64_t *)PyArray_DATA(bs),
                           (const int64_t *)PyArray_DATA(rs), (size_t)PyArray_DIM(bs, 0), PyArray_DATA(out), threads,
                           &err);
    CCOMP_NOGIL_END
    res = result_or_raise(st, &err, "tokens_take", out);
    out = NULL;
done:
    Py_XDECREF(out);
    Py_XDECREF(keep);
    return res;
}

/* first_nonfinite(a float16/32/64 C-contiguous, threads) -> flat index of the first NaN or infinity, or -1 */
static PyObject *py_first_nonfinite(PyObject *self, PyObject *args)
{
    PyObject *ao, *thobj;
    PyArrayObject *a;
    int threads, npy, kind;
    size_t n, at;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &ao, &thobj) || ccomp_resolve_threads(thobj, &threads) < 0) return NULL;
    if ((kind = float_kind(ao, "first_nonfinite", "a", &npy)) < 0) return NULL;
    a = (PyArrayObject *)ao;
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISNOTSWAPPED(a)) {
        PyErr_SetString(PyExc_TypeError, "first_nonfinite: a must be C-contiguous in native byte order");
        return NULL;
    }
    /* a misaligned view (of a byte buffer) is read from an aligned copy */
    if (!PyArray_ISALIGNED(a)) {
        if ((a = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER)) == NULL) return NULL;
    } else {
        Py_INCREF(a);
    }
    n = (size_t)PyArray_SIZE(a);
    CCOMP_NOGIL_BEGIN
    at = ccomp_first_nonfinite(PyArray_DATA(a), kind, n, threads);
    CCOMP_NOGIL_END
    Py_DECREF(a);
    return PyLong_FromSsize_t(at == n ? -1 : (Py_ssize_t)at);
}

/* tokens_race_keys(u float64 [n], w float64 [n]) -> float64 [n]: -log(u_i) / w_i, +inf where w_i <= 0, with the
 * C library's log (what Python's math.log calls: the same bits as the reference) */
static PyObject *py_tokens_race_keys(PyObject *self, PyObject *args)
{
    PyObject *uo, *wo, *res = NULL;
    PyArrayObject *u = NULL, *w = NULL, *out = NULL;
    npy_intp i, n;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &uo, &wo)) return NULL;
    u = (PyArrayObject *)PyArray_FROMANY(uo, NPY_FLOAT64, 1, 1, NPY_ARRAY_IN_ARRAY);
    w = (PyArrayObject *)PyArray_FROMANY(wo, NPY_FLOAT64, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (u == NULL || w == NULL) goto done;
    n = PyArray_DIM(u, 0);
    if (PyArray_DIM(w, 0) != n) {
        PyErr_SetString(PyExc_ValueError, "tokens_race_keys: u and w must have the same length");
        goto done;
    }
    if ((out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64)) == NULL) goto done;
    {
        const double *pu = (const double *)PyArray_DATA(u), *pw = (const double *)PyArray_DATA(w);
        double *po = (double *)PyArray_DATA(out);
        for (i = 0; i < n; i++) {
            if (!(pu[i] > 0.0 && pu[i] <= 1.0)) {
                /* PyErr_Format has no %g (Python 3.13 raises SystemError on it): the number is formatted first */
                char num[32];
                snprintf(num, sizeof num, "%g", pu[i]);
                PyErr_Format(PyExc_ValueError, "tokens_race_keys: u[%zd] = %s is outside (0, 1]", (Py_ssize_t)i, num);
                goto done;
            }
            po[i] = pw[i] > 0.0 ? -log(pu[i]) / pw[i] : INFINITY;
        }
    }
    res = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(u);
    Py_XDECREF(w);
    Py_XDECREF(out);
    return res;
}

static PyObject *py_tokens_kernel_name(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(ccomp_tokens_kernel_name());
}

PyMethodDef ccomp_tokens_methods[] = {
    {"tokens_topk", py_tokens_topk, METH_VARARGS,
     "tokens_topk(keys [B, N, D] float32/float64/float16, rows, rows_off, cols, cols_off, exclude_self, k, threads, "
     "screen=0) -> (idx, val); screen 0 auto, 1 float32, 2 int8 (the same answer)."},
    {"tokens_gather_sum", py_tokens_gather_sum, METH_VARARGS,
     "tokens_gather_sum(x [B, N, D], bsel, rows, dst, w or None, n_out, threads, div=None, f32=False) -> "
     "[n_out, D]: row o = sum over dst[i] = o of w[i] x[bsel[i], rows[i]], divided by div[o]."},
    {"tokens_take", py_tokens_take, METH_VARARGS,
     "tokens_take(x [B, N, D], bsel, rows, threads) -> [len(rows), D]: row i = x[bsel[i], rows[i]], in x's dtype."},
    {"first_nonfinite", py_first_nonfinite, METH_VARARGS,
     "first_nonfinite(a, threads) -> flat index of the first NaN or infinity of a C-contiguous float array, or -1."},
    {"tokens_race_keys", py_tokens_race_keys, METH_VARARGS,
     "tokens_race_keys(u, w) -> -log(u) / w (+inf where w <= 0), float64, with the C library's log."},
    {"tokens_kernel_name", py_tokens_kernel_name, METH_NOARGS, "The screening kernels in use."},
    {NULL, NULL, 0, NULL}};

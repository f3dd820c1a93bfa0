/* Binding of the KV-cache core (ccomp.kv).
 *
 * One table-driven path serves every method: the core's method table (ccomp_kv_method_get) gives the
 * parameter check, the arrays, the slice view and the kernels.  python/ccomp/kv.py describes a compressed
 * tensor as (method, T, D, params, arrays):
 *   method: the core's id (CCOMP_KV_M_*; kv_methods() lists them with their names);
 *   params: a dict of exactly the method's parameter keys (QuantizedTensor.params: "axis" is "channel" or
 *           "token"; "sparsity" and "outliers" are the core's frac), read into a ccomp_kv_params;
 *   arrays: a tuple of C-contiguous 2-D arrays [S, n], one row per slice
 *           (batch x heads), in the order of the method's layout.  A row may be longer than the slice
 *           needs (a growing cache keeps spare capacity): the prefix is used.
 * Slices are processed in parallel; every slice writes only its own outputs. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL ccomp_ARRAY_API
#include <numpy/arrayobject.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "ccomp/kv.h"
#include "ccomp/kv_sparse.h"
#include "ccomp/kv_turbo.h"
#include "ccomp/parallel.h"

#define KV_MAX_ARRAYS CCOMP_KV_MAX_ARRAYS
/* Largest tokens x head dim of one slice: every per-slice count below fits a size_t with room to spare. */
#define KV_MAX_ELEMENTS ((size_t)1 << 40)

/* A method, its slice shape and parameters (the core's layout), and the NumPy types of its arrays. */
typedef struct kv_layout {
    ccomp_kv_layout c;
    const ccomp_kv_method *m;
    int dtype[KV_MAX_ARRAYS];
    float *aux; /* the call's scratch (c.aux_floats), owned */
} kv_layout;

typedef ccomp_kv_view kv_view;

/* NumPy's type of a layout dtype code ("u1", "u2", "u4", "u8", "f4") */
static int npy_type(const char *code)
{
    return strcmp(code, "u1") == 0   ? NPY_UINT8
           : strcmp(code, "u2") == 0 ? NPY_UINT16
           : strcmp(code, "u4") == 0 ? NPY_UINT32
           : strcmp(code, "u8") == 0 ? NPY_UINT64
                                     : NPY_FLOAT32;
}

static void layout_free(kv_layout *L)
{
    free(L->aux);
    L->aux = NULL;
}

/* One parameter of a params dict: -1 with a Python exception when missing or of the wrong kind. */
static PyObject *param_item(PyObject *params, const char *key, const char *method, const char *what)
{
    PyObject *v = PyDict_GetItemString(params, key);
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "%s: params of %s need the key '%s'", what, method, key);
    return v;
}

static int param_int(PyObject *v, const char *key, const char *what, long lo, long hi, long *out)
{
    long x;
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s: params['%s'] must be an int, got %s", what, key, Py_TYPE(v)->tp_name);
        return -1;
    }
    x = PyLong_AsLong(v);
    if ((x == -1 && PyErr_Occurred()) || x < lo || x > hi) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: params['%s'] must be in [%ld, %ld]", what, key, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* params (a dict of exactly the method's keys, ccomp_kv_method.params) -> ccomp_kv_params */
static int params_from(const ccomp_kv_method *m, PyObject *params, ccomp_kv_params *p, const char *what)
{
    const char *k = m->params;
    Py_ssize_t nkeys = 0;
    memset(p, 0, sizeof *p);
    p->iters = 1;
    if (!PyDict_Check(params)) {
        PyErr_Format(PyExc_TypeError, "%s: params must be a dict of the method's parameters, got %s", what,
                     Py_TYPE(params)->tp_name);
        return -1;
    }
    while (*k) {
        char key[32];
        size_t n = strcspn(k, " ");
        PyObject *v;
        long x;
        memcpy(key, k, n < sizeof key ? n : sizeof key - 1);
        key[n < sizeof key ? n : sizeof key - 1] = 0;
        k += n + (k[n] == ' ');
        nkeys++;
        if ((v = param_item(params, key, m->name, what)) == NULL) return -1;
        if (strcmp(key, "axis") == 0) {
            const char *a = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
            if (a == NULL || (strcmp(a, "channel") != 0 && strcmp(a, "token") != 0)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s: params['axis'] must be 'channel' or 'token'", what);
                return -1;
            }
            p->axis = strcmp(a, "channel") == 0 ? CCOMP_KV_PER_CHANNEL : CCOMP_KV_PER_TOKEN;
        } else if (strcmp(key, "sparsity") == 0 || strcmp(key, "outliers") == 0) {
            p->frac = PyFloat_AsDouble(v);
            if (p->frac == -1.0 && PyErr_Occurred()) return -1;
        } else if (strcmp(key, "seed") == 0) {
            const unsigned long long u = PyLong_Check(v) ? PyLong_AsUnsignedLongLong(v) : (unsigned long long)-1;
            if (!PyLong_Check(v) || (u == (unsigned long long)-1 && PyErr_Occurred())) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s: params['seed'] must be an int in [0, 2^64)", what);
                return -1;
            }
            p->seed = (uint64_t)u;
        } else {
            if (param_int(v, key, what, -(1L << 30), 1L << 30, &x) < 0) return -1;
            if (strcmp(key, "bits") == 0) p->bits = (int)x;
            else if (strcmp(key, "group") == 0) p->group = (int)x;
            else if (strcmp(key, "qjl") == 0) p->qjl = (int)x;
            else if (strcmp(key, "rank") == 0) p->rank = (int)x;
            else if (strcmp(key, "iters") == 0) p->iters = (int)x;
        }
    }
    if (PyDict_GET_SIZE(params) != nkeys) {
        PyErr_Format(PyExc_ValueError, "%s: params of %s must have exactly the keys '%s'", what, m->name, m->params);
        return -1;
    }
    return 0;
}

/* Checks the parameters with the core and lists the arrays; -1 with a Python exception on error. */
static int layout_init(kv_layout *L, int method, Py_ssize_t T, Py_ssize_t D, PyObject *params, const char *what)
{
    ccomp_error err;
    ccomp_kv_params p;
    int i;
    memset(L, 0, sizeof *L);
    L->m = ccomp_kv_method_get(method);
    if (L->m == NULL) {
        PyErr_Format(PyExc_ValueError, "%s: unknown method %d", what, method);
        return -1;
    }
    if (params_from(L->m, params, &p, what) < 0) return -1;
    if (T < 0 || D <= 0 || (size_t)T > KV_MAX_ELEMENTS / (size_t)D) {
        PyErr_Format(PyExc_ValueError,
                     "%s: invalid slice shape (%zd tokens, head dim %zd): expected tokens >= 0, head dim >= 1 and "
                     "tokens x head dim at most 2^40",
                     what, T, D);
        return -1;
    }
    ccomp_error_clear(&err);
    if (ccomp_kv_layout_init(method, (size_t)T, (size_t)D, &p, &L->c, &err) != CCOMP_OK) {
        ccomp_raise(&err, what);
        return -1;
    }
    for (i = 0; i < L->c.n; i++) L->dtype[i] = npy_type(L->c.dtype[i]);
    if (L->c.aux_floats) {
        L->aux = (float *)malloc(L->c.aux_floats * sizeof(float));
        if (L->aux == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        L->m->prepare(&L->c, L->aux);
    }
    return 0;
}

/* The arrays of a tensor: base pointers and row strides (bytes), S slices. */
typedef struct kv_arrays {
    char *base[KV_MAX_ARRAYS];
    size_t stride[KV_MAX_ARRAYS];
    size_t S;
    char *owned[KV_MAX_ARRAYS];    /* snapshots of the index arrays (base points there), freed by arrays_free */
    const char *span[KV_MAX_ARRAYS]; /* the caller's memory of each array: [span, span + span_len) */
    size_t span_len[KV_MAX_ARRAYS];
} kv_arrays;

static void arrays_free(kv_arrays *A)
{
    int i;
    for (i = 0; i < KV_MAX_ARRAYS; i++) {
        free(A->owned[i]);
        A->owned[i] = NULL;
    }
}

#define ARR(A, i, s, type) ((type *)((A)->base[i] + (s) * (A)->stride[i]))

static void view_at(const kv_layout *L, const kv_arrays *A, size_t s, kv_view *v);

/* Index arrays of slice s refer only to stored values (checked by the core),
 * so damaged or hand-made arrays cannot make a kernel read out of bounds.
 * -1 with ccomp.CorruptStreamError otherwise. */
static int indices_valid(const kv_layout *L, const kv_arrays *A, size_t s, const char *what)
{
    kv_view v;
    ccomp_error err;
    if (L->m->validate == NULL) return 0;
    view_at(L, A, s, &v);
    ccomp_error_clear(&err);
    if (L->m->validate(&L->c, &v.slice, &err) != CCOMP_OK) {
        char msg[CCOMP_ERROR_MSG_LEN];
        snprintf(msg, sizeof msg, "slice %zu: %.200s", s, err.msg);
        memcpy(err.msg, msg, sizeof msg);
        ccomp_raise(&err, what);
        return -1;
    }
    return 0;
}

/* Checks a tuple of arrays against the layout (types, S rows of at least the
 * needed length); references are appended to keep. */
static int arrays_from(const kv_layout *L, PyObject *tuple, PyObject *keep, kv_arrays *A, const char *what)
{
    int i;
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != L->c.n) {
        PyErr_Format(PyExc_TypeError, "%s: expected a tuple of %d arrays", what, L->c.n);
        return -1;
    }
    for (i = 0; i < L->c.n; i++) {
        PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OF(PyTuple_GET_ITEM(tuple, i),
                                                            NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
        int bad;
        if (a == NULL) return -1;
        if (PyList_Append(keep, (PyObject *)a) < 0) {
            Py_DECREF(a);
            return -1;
        }
        Py_DECREF(a);
        bad = PyArray_TYPE(a) != L->dtype[i] || PyArray_NDIM(a) != 2;
        if (!bad && i == 0) A->S = (size_t)PyArray_DIM(a, 0);
        if (bad || (size_t)PyArray_DIM(a, 0) != A->S || (size_t)PyArray_DIM(a, 1) < L->c.count[i]) {
            PyErr_Format(PyExc_ValueError, "%s: array '%s' must be a 2-D %s array of %zu rows and at least %zu "
                         "columns, got %d-D dtype %c%d shape (%zd, %zd)",
                         what, L->c.name[i], L->c.dtype[i], A->S, L->c.count[i], PyArray_NDIM(a),
                         PyArray_DESCR(a)->kind, (int)PyArray_ITEMSIZE(a),
                         PyArray_NDIM(a) > 0 ? PyArray_DIM(a, 0) : (npy_intp)-1,
                         PyArray_NDIM(a) > 1 ? PyArray_DIM(a, 1) : (npy_intp)-1);
            return -1;
        }
        A->base[i] = (char *)PyArray_DATA(a);
        A->stride[i] = (size_t)PyArray_DIM(a, 1) * (size_t)PyArray_ITEMSIZE(a);
        A->span[i] = A->base[i];
        A->span_len[i] = A->stride[i] * A->S;
        if ((L->c.index_mask >> i & 1u)) {
            /* the prefix each row needs, into memory the binding owns */
            const size_t row = L->c.count[i] * (size_t)PyArray_ITEMSIZE(a);
            size_t s;
            char *copy = (char *)malloc(row * A->S > 0 ? row * A->S : 1);
            if (copy == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            for (s = 0; s < A->S; s++) memcpy(copy + s * row, A->base[i] + s * A->stride[i], row);
            A->owned[i] = copy;
            A->base[i] = copy;
            A->stride[i] = row;
        }
    }
    {
        size_t s;
        for (s = 0; s < A->S; s++)
            if (indices_valid(L, A, s, what) < 0) return -1;
    }
    return 0;
}

/* -1 with a ValueError when [p, p + n) overlaps one of the arrays (the output would overwrite input that is
 * still to be read). */
static int check_no_overlap(const kv_layout *L, const kv_arrays *A, const char *p, size_t n, const char *what)
{
    int i;
    for (i = 0; i < L->c.n; i++)
        if (n && A->span_len[i] && p < A->span[i] + A->span_len[i] && A->span[i] < p + n) {
            PyErr_Format(PyExc_ValueError, "%s: out must not share memory with the input array '%s'", what,
                         L->c.name[i]);
            return -1;
        }
    return 0;
}

/* Fresh arrays of exactly the layout's sizes for S slices; returned as a tuple. */
static PyObject *arrays_new(const kv_layout *L, size_t S, kv_arrays *A)
{
    PyObject *t = PyTuple_New(L->c.n);
    int i;
    if (t == NULL) return NULL;
    A->S = S;
    for (i = 0; i < L->c.n; i++) {
        npy_intp dims[2] = {(npy_intp)S, (npy_intp)L->c.count[i]};
        PyArrayObject *a = (PyArrayObject *)PyArray_ZEROS(2, dims, L->dtype[i], 0);
        if (a == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, (PyObject *)a);
        A->base[i] = (char *)PyArray_DATA(a);
        A->stride[i] = (size_t)L->c.count[i] * (size_t)PyArray_ITEMSIZE(a);
    }
    return t;
}

/* Slice s of the tensor as the core's struct. */
static void view_at(const kv_layout *L, const kv_arrays *A, size_t s, kv_view *v)
{
    void *arrays[KV_MAX_ARRAYS];
    int i;
    memset(v, 0, sizeof *v);
    for (i = 0; i < L->c.n; i++) arrays[i] = A->base[i] + s * A->stride[i];
    v->slice.method = L->c.method;
    v->slice.rows = L->c.rows;
    v->slice.cols = L->c.cols;
    L->m->view(&L->c, arrays, L->aux, v);
}

/* ------------------------------------------------- quantize / dequantize */

typedef struct slice_job {
    const kv_layout *L;
    kv_arrays A;
    float *x; /* [S, T, D] */
    int quantize;
} slice_job;

static ccomp_status slice_run(void *vctx, void *state, size_t s, ccomp_error *err)
{
    slice_job *j = (slice_job *)vctx;
    float *x = j->x + s * j->L->c.rows * j->L->c.cols;
    kv_view v;
    ccomp_status st = CCOMP_OK;
    (void)state;
    view_at(j->L, &j->A, s, &v);
    if (!j->quantize) return ccomp_kv_slice_dequantize(&v.slice, x, err); /* in steps that answer Ctrl-C */
    st = j->L->m->quantize(&j->L->c, x, j->L->c.cols, &v.slice, err);
    if (st != CCOMP_OK && err) {
        char msg[CCOMP_ERROR_MSG_LEN];
        snprintf(msg, sizeof msg, "slice %zu: %.200s", s, err->msg);
        memcpy(err->msg, msg, sizeof msg);
    }
    return st;
}

static int run_slices(slice_job *j, int threads, const char *what)
{
    ccomp_parallel_ops ops = {NULL, slice_run, NULL};
    ccomp_error err;
    ccomp_status st;
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_parallel_for(threads, j->A.S, &ops, j, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, what);
        return -1;
    }
    return 0;
}

/* kv_quantize(method, x[S,T,D] f32, params, threads) -> tuple of arrays */
static PyObject *py_kv_quantize(PyObject *self, PyObject *args)
{
    PyObject *xo, *params, *res = NULL;
    int method, threads;
    PyArrayObject *x;
    kv_layout L;
    slice_job j;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOOi", &method, &xo, &params, &threads)) return NULL;
    x = (PyArrayObject *)PyArray_FROM_OF(xo, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (x == NULL) return NULL;
    if (PyArray_TYPE(x) != NPY_FLOAT32 || PyArray_NDIM(x) != 3) {
        PyErr_SetString(PyExc_TypeError, "x must be a C-contiguous 3-D float32 array [slices, tokens, head_dim]");
        Py_DECREF(x);
        return NULL;
    }
    if (ccomp_kv_method_get(method) != NULL && ccomp_kv_method_get(method)->quantize == NULL) {
        PyErr_Format(PyExc_ValueError, "quantize: '%s' is not a quantization method",
                     ccomp_kv_method_get(method)->name);
        Py_DECREF(x);
        return NULL;
    }
    if (layout_init(&L, method, PyArray_DIM(x, 1), PyArray_DIM(x, 2), params, "quantize") < 0) {
        Py_DECREF(x);
        return NULL;
    }
    memset(&j, 0, sizeof j);
    j.L = &L;
    j.x = (float *)PyArray_DATA(x);
    j.quantize = 1;
    res = arrays_new(&L, (size_t)PyArray_DIM(x, 0), &j.A);
    if (res != NULL && run_slices(&j, threads, "quantize") < 0) Py_CLEAR(res);
    layout_free(&L);
    Py_DECREF(x);
    return res;
}

/* kv_dequantize(method, T, D, params, arrays, threads[, out]) -> x[S,T,D] f32 (out when given) */
static PyObject *py_kv_dequantize(PyObject *self, PyObject *args)
{
    PyObject *params, *arrays, *keep, *res = NULL, *outo = Py_None;
    Py_ssize_t T, D;
    int method, threads;
    kv_layout L;
    slice_job j;
    (void)self;
    if (!PyArg_ParseTuple(args, "innOOi|O", &method, &T, &D, &params, &arrays, &threads, &outo)) return NULL;
    if (layout_init(&L, method, T, D, params, "dequantize") < 0) return NULL;
    memset(&j, 0, sizeof j);
    keep = PyList_New(0);
    if (keep != NULL && arrays_from(&L, arrays, keep, &j.A, "dequantize") == 0) {
        npy_intp dims[3] = {(npy_intp)j.A.S, T, D};
        PyArrayObject *out = NULL;
        if (outo == Py_None) {
            out = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT32);
        } else if (!PyArray_Check(outo) || PyArray_TYPE((PyArrayObject *)outo) != NPY_FLOAT32 ||
                   !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)outo) || !PyArray_ISWRITEABLE((PyArrayObject *)outo) ||
                   !PyArray_ISALIGNED((PyArrayObject *)outo) || !PyArray_ISNOTSWAPPED((PyArrayObject *)outo) ||
                   PyArray_SIZE((PyArrayObject *)outo) != dims[0] * dims[1] * dims[2]) {
            PyErr_Format(PyExc_ValueError,
                         "out must be a writeable, aligned, C-contiguous native float32 array of %zd elements",
                         (Py_ssize_t)(dims[0] * dims[1] * dims[2]));
        } else if (check_no_overlap(&L, &j.A, (const char *)PyArray_DATA((PyArrayObject *)outo),
                                    (size_t)PyArray_NBYTES((PyArrayObject *)outo), "dequantize") == 0) {
            out = (PyArrayObject *)outo;
            Py_INCREF(out);
        }
        if (out != NULL) {
            j.L = &L;
            j.x = (float *)PyArray_DATA(out);
            if (run_slices(&j, threads, "dequantize") < 0)
                Py_DECREF(out);
            else
                res = (PyObject *)out;
        }
    }
    Py_XDECREF(keep);
    arrays_free(&j.A);
    layout_free(&L);
    return res;
}

/* kv_validate(method, T, D, params, arrays) -> None: the checks of kv_dequantize (layout, dtypes, shapes, index
 * arrays) without decoding; the error names the array or slice at fault. */
static PyObject *py_kv_validate(PyObject *self, PyObject *args)
{
    PyObject *params, *arrays, *keep;
    Py_ssize_t T, D;
    int method, bad;
    kv_layout L;
    kv_arrays A;
    (void)self;
    if (!PyArg_ParseTuple(args, "innOO", &method, &T, &D, &params, &arrays)) return NULL;
    if (layout_init(&L, method, T, D, params, "validate") < 0) return NULL;
    memset(&A, 0, sizeof A);
    keep = PyList_New(0);
    bad = keep == NULL || arrays_from(&L, arrays, keep, &A, "validate") < 0;
    Py_XDECREF(keep);
    arrays_free(&A);
    layout_free(&L);
    if (bad) return NULL;
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------- attention */

/* A cache: a list of segments along the tokens, each (method, T, D, params,
 * arrays) with G rows per array.  Builds G chains of slices. */
typedef struct cache_build {
    kv_layout *layouts; /* nseg */
    kv_arrays *arrays;  /* nseg (their index snapshots live until the call ends) */
    kv_view *views;     /* G * nseg: head g's segments at g * nseg */
    size_t G, nseg;
} cache_build;

static void cache_free(cache_build *c)
{
    size_t i;
    for (i = 0; c->layouts && i < c->nseg; i++) layout_free(&c->layouts[i]);
    for (i = 0; c->arrays && i < c->nseg; i++) arrays_free(&c->arrays[i]);
    free(c->layouts);
    free(c->arrays);
    free(c->views);
    memset(c, 0, sizeof *c);
}

static int cache_from(PyObject *desc, size_t G, PyObject *keep, cache_build *c, const char *name)
{
    Py_ssize_t n, i;
    size_t g;
    memset(c, 0, sizeof *c);
    if (!PyList_Check(desc) || (n = PyList_GET_SIZE(desc)) < 1) {
        PyErr_Format(PyExc_TypeError, "%s: expected a non-empty list of segments", name);
        return -1;
    }
    c->G = G;
    if (G > (size_t)PY_SSIZE_T_MAX / sizeof(kv_view) / (size_t)n) {
        PyErr_Format(PyExc_ValueError, "%s: too many heads (%zu)", name, G);
        return -1;
    }
    c->layouts = (kv_layout *)calloc((size_t)n, sizeof *c->layouts);
    c->arrays = (kv_arrays *)calloc((size_t)n, sizeof *c->arrays);
    c->views = (kv_view *)calloc(G * (size_t)n, sizeof *c->views);
    if (!c->layouts || !c->arrays || !c->views) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *seg = PyList_GET_ITEM(desc, i), *params, *arrays;
        int method;
        Py_ssize_t T, D;
        kv_arrays *A = &c->arrays[i];
        if (!PyTuple_Check(seg) ||
            !PyArg_ParseTuple(seg, "innOO;a segment is (method, T, D, params, arrays)", &method, &T, &D, &params,
                              &arrays))
            return -1;
        if (layout_init(&c->layouts[i], method, T, D, params, name) < 0) return -1;
        c->nseg = (size_t)i + 1;
        if (arrays_from(&c->layouts[i], arrays, keep, A, name) < 0) return -1;
        if (A->S != G) {
            PyErr_Format(PyExc_ValueError, "%s: segment %zd holds %zu heads, expected %zu", name, i, A->S, G);
            return -1;
        }
        for (g = 0; g < G; g++) {
            kv_view *v = &c->views[g * (size_t)n + (size_t)i];
            view_at(&c->layouts[i], A, g, v);
        }
    }
    for (g = 0; g < G; g++)
        for (i = 0; i + 1 < n; i++)
            c->views[g * (size_t)n + (size_t)i].slice.next = &c->views[g * (size_t)n + (size_t)i + 1].slice;
    return 0;
}

/* kv_attention(q[H,nq,D] f32, kdesc, vdesc, G, scale, threads) -> out[H,nq,Dv] */
static PyObject *py_kv_attention(PyObject *self, PyObject *args)
{
    PyObject *qo, *kd, *vd, *keep = NULL, *res = NULL;
    Py_ssize_t G;
    float scale;
    int threads;
    PyArrayObject *q = NULL, *out = NULL;
    cache_build kc, vc;
    ccomp_kv_slice *kh = NULL, *vh = NULL;
    ccomp_error err;
    ccomp_status st;
    size_t g;
    (void)self;
    memset(&kc, 0, sizeof kc);
    memset(&vc, 0, sizeof vc);
    if (!PyArg_ParseTuple(args, "OOOnfi", &qo, &kd, &vd, &G, &scale, &threads)) return NULL;
    if (G < 1) {
        PyErr_SetString(PyExc_ValueError, "attention: need at least one K/V head");
        return NULL;
    }
    q = (PyArrayObject *)PyArray_FROM_OF(qo, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (q == NULL) return NULL;
    if (PyArray_TYPE(q) != NPY_FLOAT32 || PyArray_NDIM(q) != 3) {
        PyErr_SetString(PyExc_TypeError, "q must be a C-contiguous 3-D float32 array [heads, n_query, head_dim]");
        goto done;
    }
    if (!isfinite(scale)) {
        /* PyErr_Format has no %g (Python 3.13 raises SystemError on it): the number is formatted first */
        char num[32];
        snprintf(num, sizeof num, "%g", (double)scale);
        PyErr_Format(PyExc_ValueError, "attention: scale must be finite, got %s", num);
        goto done;
    }
    if ((keep = PyList_New(0)) == NULL) goto done;
    if (cache_from(kd, (size_t)G, keep, &kc, "k_cache") < 0 || cache_from(vd, (size_t)G, keep, &vc, "v_cache") < 0)
        goto done;
    if (PyArray_DIM(q, 0) % G != 0) {
        PyErr_Format(PyExc_ValueError, "attention: query heads (%zd) must be a multiple of the K/V heads (%zd)",
                     (Py_ssize_t)PyArray_DIM(q, 0), G);
        goto done;
    }
    {
        /* every segment of K has q's head dim, every segment of V the first one's (the output's) */
        size_t i;
        for (i = 0; i < kc.nseg; i++)
            if (kc.layouts[i].c.cols != (size_t)PyArray_DIM(q, 2)) {
                PyErr_Format(PyExc_ValueError, "attention: q has head dim %zd but K segment %zu has %zu",
                             (Py_ssize_t)PyArray_DIM(q, 2), i, kc.layouts[i].c.cols);
                goto done;
            }
        for (i = 1; i < vc.nseg; i++)
            if (vc.layouts[i].c.cols != vc.layouts[0].c.cols) {
                PyErr_Format(PyExc_ValueError, "attention: V segment %zu has head dim %zu, segment 0 has %zu", i,
                             vc.layouts[i].c.cols, vc.layouts[0].c.cols);
                goto done;
            }
    }
    kh = (ccomp_kv_slice *)malloc((size_t)G * sizeof *kh);
    vh = (ccomp_kv_slice *)malloc((size_t)G * sizeof *vh);
    if (!kh || !vh) {
        PyErr_NoMemory();
        goto done;
    }
    for (g = 0; g < (size_t)G; g++) {
        kh[g] = kc.views[g * kc.nseg].slice;
        vh[g] = vc.views[g * vc.nseg].slice;
    }
    {
        npy_intp dims[3] = {PyArray_DIM(q, 0), PyArray_DIM(q, 1), (npy_intp)vh[0].cols};
        if ((out = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT32)) == NULL) goto done;
    }
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_kv_attention((const float *)PyArray_DATA(q), (size_t)PyArray_DIM(q, 0), (size_t)PyArray_DIM(q, 1),
                            (size_t)PyArray_DIM(q, 2), kh, vh, (size_t)G, scale, (float *)PyArray_DATA(out), threads,
                            &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "attention");
        goto done;
    }
    res = (PyObject *)out;
    out = NULL;
done:
    free(kh);
    free(vh);
    cache_free(&kc);
    cache_free(&vc);
    Py_XDECREF(keep);
    Py_XDECREF(q);
    Py_XDECREF(out);
    return res;
}

/* ------------------------------------------------------------- helpers */

/* kv_lloyd_max(bits) -> (centroids f64, thresholds f64, mse) computed by Lloyd's algorithm */
static PyObject *py_kv_lloyd_max(PyObject *self, PyObject *args)
{
    int bits;
    double c[16], t[15], mse;
    ccomp_error err;
    npy_intp nc, nt;
    PyArrayObject *ca, *ta;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &bits)) return NULL;
    ccomp_error_clear(&err);
    if (ccomp_kv_lloyd_max(bits, c, t, &mse, &err) != CCOMP_OK) return ccomp_raise(&err, "lloyd_max");
    nc = (npy_intp)1 << bits;
    nt = nc - 1;
    ca = (PyArrayObject *)PyArray_SimpleNew(1, &nc, NPY_FLOAT64);
    ta = (PyArrayObject *)PyArray_SimpleNew(1, &nt, NPY_FLOAT64);
    if (!ca || !ta) {
        Py_XDECREF(ca);
        Py_XDECREF(ta);
        return NULL;
    }
    memcpy(PyArray_DATA(ca), c, (size_t)nc * sizeof(double));
    memcpy(PyArray_DATA(ta), t, (size_t)nt * sizeof(double));
    return Py_BuildValue("NNd", ca, ta, mse);
}

/* kv_turbo_codebook(bits) -> (centroids f32, thresholds f32) used by the quantizer */
static PyObject *py_kv_turbo_codebook(PyObject *self, PyObject *args)
{
    int bits;
    npy_intp nc, nt;
    PyArrayObject *ca, *ta;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &bits)) return NULL;
    if (bits < 1 || bits > CCOMP_KV_TURBO_MAX_BITS) {
        PyErr_Format(PyExc_ValueError, "turbo bits must be 1 to 4, got %d", bits);
        return NULL;
    }
    nc = (npy_intp)1 << bits;
    nt = nc - 1;
    ca = (PyArrayObject *)PyArray_SimpleNew(1, &nc, NPY_FLOAT32);
    ta = (PyArrayObject *)PyArray_SimpleNew(1, &nt, NPY_FLOAT32);
    if (!ca || !ta) {
        Py_XDECREF(ca);
        Py_XDECREF(ta);
        return NULL;
    }
    memcpy(PyArray_DATA(ca), ccomp_kv_turbo_centroids(bits), (size_t)nc * sizeof(float));
    memcpy(PyArray_DATA(ta), ccomp_kv_turbo_thresholds(bits), (size_t)nt * sizeof(float));
    return Py_BuildValue("NN", ca, ta);
}

/* kv_turbo_rotate(seed, x[n, D] f32, inverse) -> y[n, D] */
static PyObject *py_kv_turbo_rotate(PyObject *self, PyObject *args)
{
    unsigned long long seed;
    PyObject *xo;
    int inverse;
    PyArrayObject *x, *y;
    npy_intp i, D;
    (void)self;
    if (!PyArg_ParseTuple(args, "KOp", &seed, &xo, &inverse)) return NULL;
    x = (PyArrayObject *)PyArray_FROMANY(xo, NPY_FLOAT32, 2, 2, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (x == NULL) return NULL;
    D = PyArray_DIM(x, 1);
    if (D < CCOMP_KV_TURBO_MIN_COLS || D > CCOMP_KV_TURBO_MAX_COLS || (D & (D - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "head dim must be a power of two in [16, 1024], got %zd", D);
        Py_DECREF(x);
        return NULL;
    }
    y = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(x), NPY_FLOAT32);
    if (y != NULL)
        for (i = 0; i < PyArray_DIM(x, 0); i++)
            ccomp_kv_turbo_rotate(seed, (size_t)D, (const float *)PyArray_DATA(x) + i * D,
                                  (float *)PyArray_DATA(y) + i * D, inverse);
    Py_DECREF(x);
    return (PyObject *)y;
}

/* kv_turbo_qjl_matrix(seed, D) -> S[D, D] f32 */
static PyObject *py_kv_turbo_qjl_matrix(PyObject *self, PyObject *args)
{
    unsigned long long seed;
    Py_ssize_t D;
    npy_intp dims[2];
    PyArrayObject *m;
    (void)self;
    if (!PyArg_ParseTuple(args, "Kn", &seed, &D)) return NULL;
    if (D < 1 || D > CCOMP_KV_TURBO_MAX_COLS) {
        PyErr_Format(PyExc_ValueError, "head dim must be in [1, 1024], got %zd", D);
        return NULL;
    }
    dims[0] = dims[1] = D;
    m = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (m != NULL) ccomp_kv_turbo_qjl_matrix(seed, (size_t)D, (float *)PyArray_DATA(m));
    return (PyObject *)m;
}

/* kv_layout(method, T, D, params) -> [(name, dtype such as "u2", count per slice), ...] */
static PyObject *py_kv_layout(PyObject *self, PyObject *args)
{
    PyObject *params, *list;
    Py_ssize_t T, D;
    int method, i;
    kv_layout L;
    (void)self;
    if (!PyArg_ParseTuple(args, "innO", &method, &T, &D, &params)) return NULL;
    if (layout_init(&L, method, T, D, params, "layout") < 0) return NULL;
    list = PyList_New(L.c.n);
    for (i = 0; list != NULL && i < L.c.n; i++) {
        PyObject *t = Py_BuildValue("(ssn)", L.c.name[i], L.c.dtype[i], (Py_ssize_t)L.c.count[i]);
        if (t == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, t);
    }
    layout_free(&L);
    return list;
}

/* kv_methods() -> [(id, name, parameter keys, quantizes)] in id order: the core's method table */
static PyObject *py_kv_methods(PyObject *self, PyObject *args)
{
    PyObject *list = PyList_New(0);
    int id;
    (void)self, (void)args;
    for (id = 0; list != NULL && id < CCOMP_KV_M_COUNT; id++) {
        const ccomp_kv_method *m = ccomp_kv_method_get(id);
        PyObject *keys = PyUnicode_FromString(m->params), *split, *t;
        split = keys ? PyUnicode_Split(keys, NULL, -1) : NULL;
        Py_XDECREF(keys);
        t = split ? Py_BuildValue("(isNO)", id, m->name, PyList_AsTuple(split), m->quantize ? Py_True : Py_False)
                  : NULL;
        Py_XDECREF(split);
        if (t == NULL || PyList_Append(list, t) < 0) Py_CLEAR(list);
        Py_XDECREF(t);
    }
    return list;
}

/* A head dim and a fraction in [0, 1) from args; -1 with a ValueError otherwise. */
static int dim_frac(PyObject *args, const char *fmt, Py_ssize_t *D, double *frac, const char *what)
{
    if (!PyArg_ParseTuple(args, fmt, D, frac)) return -1;
    if (*D < 1 || *D > 65536 || !(*frac >= 0.0 && *frac < 1.0)) {
        char num[32];
        snprintf(num, sizeof num, "%g", *frac);
        PyErr_Format(PyExc_ValueError, "%s: expected a head dim in [1, 65536] and a fraction in [0, 1), got %zd and %s",
                     what, *D, num);
        return -1;
    }
    return 0;
}

/* kv_sparse_kept(D, sparsity) -> values bitmap_sparse keeps per token */
static PyObject *py_kv_sparse_kept(PyObject *self, PyObject *args)
{
    Py_ssize_t D;
    double f;
    (void)self;
    if (dim_frac(args, "nd:kv_sparse_kept", &D, &f, "kv_sparse_kept") < 0) return NULL;
    return PyLong_FromSize_t(ccomp_kv_sparse_kept((size_t)D, f));
}

/* kv_outliers_per_row(D, frac) -> outliers gear keeps per token */
static PyObject *py_kv_outliers_per_row(PyObject *self, PyObject *args)
{
    Py_ssize_t D;
    double f;
    (void)self;
    if (dim_frac(args, "nd:kv_outliers_per_row", &D, &f, "kv_outliers_per_row") < 0) return NULL;
    return PyLong_FromSize_t(ccomp_kv_outliers_per_row((size_t)D, f));
}

PyMethodDef ccomp_kv_methods[] = {
    {"kv_methods", py_kv_methods, METH_NOARGS, "kv_methods() -> [(id, name, parameter keys, quantizes)]."},
    {"kv_sparse_kept", py_kv_sparse_kept, METH_VARARGS, "kv_sparse_kept(D, sparsity) -> values kept per token."},
    {"kv_outliers_per_row", py_kv_outliers_per_row, METH_VARARGS,
     "kv_outliers_per_row(D, frac) -> outliers kept per token."},
    {"kv_layout", py_kv_layout, METH_VARARGS, "kv_layout(method, T, D, params) -> [(name, dtype, count)]."},
    {"kv_quantize", py_kv_quantize, METH_VARARGS, "kv_quantize(method, x[S,T,D] f32, params, threads) -> arrays."},
    {"kv_dequantize", py_kv_dequantize, METH_VARARGS,
     "kv_dequantize(method, T, D, params, arrays, threads) -> x[S,T,D] f32."},
    {"kv_validate", py_kv_validate, METH_VARARGS,
     "kv_validate(method, T, D, params, arrays) -> None; raises as kv_dequantize would."},
    {"kv_attention", py_kv_attention, METH_VARARGS,
     "kv_attention(q[H,nq,D], k_segments, v_segments, G, scale, threads) -> out[H,nq,Dv]."},
    {"kv_lloyd_max", py_kv_lloyd_max, METH_VARARGS, "kv_lloyd_max(bits) -> (centroids, thresholds, mse)."},
    {"kv_turbo_codebook", py_kv_turbo_codebook, METH_VARARGS, "kv_turbo_codebook(bits) -> (centroids, thresholds)."},
    {"kv_turbo_rotate", py_kv_turbo_rotate, METH_VARARGS, "kv_turbo_rotate(seed, x[n,D], inverse) -> y[n,D]."},
    {"kv_turbo_qjl_matrix", py_kv_turbo_qjl_matrix, METH_VARARGS, "kv_turbo_qjl_matrix(seed, D) -> S[D,D]."},
    {NULL, NULL, 0, NULL}};

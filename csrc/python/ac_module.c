/* Binding of the range coder, CDF quantization and containers (ccomp.ac).
 *
 * Arrays come in validated by python/ccomp/ac.py (dtype, shape) and are checked
 * again here, so that a direct call cannot crash: rows are 1-D or 2-D
 * float32/float64 arrays whose last axis is contiguous; ranks, lengths, handle
 * types, precisions and thread counts are checked by every entry point.
 * Whatever the core indexes with (symbols, (cum, freq) pairs, chunk tables) is
 * copied into memory the binding owns before the GIL is released, so another
 * thread rewriting the caller's array cannot move an index out of bounds. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL ccomp_ARRAY_API
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "ccomp/ac.h"

/* ---------------------------------------------------------- arguments */

/* A borrowed view of a float32/float64 array with a contiguous last axis. */
typedef struct rows_view {
    PyArrayObject *arr; /* owned reference */
    const void *data;
    size_t T, V, stride; /* stride in elements between rows */
    int dtype;
} rows_view;

static int get_rows(PyObject *obj, int ndim, const char *name, rows_view *v)
{
    PyArrayObject *a;
    int type;
    npy_intp es;
    memset(v, 0, sizeof *v);
    if (ndim != 1 && ndim != 2) {
        PyErr_Format(PyExc_ValueError, "%s rank must be 1 or 2, got %d", name, ndim);
        return -1;
    }
    a = (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED);
    if (a == NULL) return -1;
    type = PyArray_TYPE(a);
    if (type != NPY_FLOAT32 && type != NPY_FLOAT64) {
        PyErr_Format(PyExc_TypeError, "%s must be float32 or float64, got %s", name,
                     PyArray_DESCR(a)->typeobj->tp_name);
        Py_DECREF(a);
        return -1;
    }
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-D, got %d-D", name, ndim, PyArray_NDIM(a));
        Py_DECREF(a);
        return -1;
    }
    es = PyArray_ITEMSIZE(a);
    v->V = (size_t)PyArray_DIM(a, ndim - 1);
    v->T = ndim == 2 ? (size_t)PyArray_DIM(a, 0) : 1u;
    if (v->T > 0 && v->V > 1 && PyArray_STRIDE(a, ndim - 1) != es) {
        PyErr_Format(PyExc_ValueError, "%s must have a contiguous last axis (use np.ascontiguousarray)", name);
        Py_DECREF(a);
        return -1;
    }
    v->stride = v->V;
    if (ndim == 2 && v->T > 1) {
        npy_intp rs = PyArray_STRIDE(a, 0);
        if (rs <= 0 || rs % es != 0 || (size_t)(rs / es) < v->V) {
            PyErr_Format(PyExc_ValueError, "%s rows must be laid out one after the other (use np.ascontiguousarray)",
                         name);
            Py_DECREF(a);
            return -1;
        }
        v->stride = (size_t)(rs / es);
    }
    v->arr = a;
    v->data = PyArray_DATA(a);
    v->dtype = type == NPY_FLOAT32 ? CCOMP_AC_F32 : CCOMP_AC_F64;
    return 0;
}

/* A 1-D C-contiguous array of the given type (no conversion). */
static PyArrayObject *get_vec(PyObject *obj, int type, const char *name)
{
    PyArrayObject *a =
        (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED);
    if (a == NULL) return NULL;
    if (PyArray_TYPE(a) != type || PyArray_NDIM(a) != 1) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D %s array", name,
                     type == NPY_INT64 ? "int64" : (type == NPY_UINT32 ? "uint32" : "numeric"));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

/* A copy of a 1-D array of the given type, owned by the caller (free()):
 * the core indexes with it after the GIL is released. */
static void *snapshot_vec(PyObject *obj, int type, const char *name, size_t *n)
{
    PyArrayObject *a = get_vec(obj, type, name);
    void *copy;
    size_t bytes;
    if (a == NULL) return NULL;
    *n = (size_t)PyArray_DIM(a, 0);
    bytes = *n * (size_t)PyArray_ITEMSIZE(a);
    copy = malloc(bytes ? bytes : 1u);
    if (copy == NULL) {
        Py_DECREF(a);
        PyErr_NoMemory();
        return NULL;
    }
    if (bytes) memcpy(copy, PyArray_DATA(a), bytes);
    Py_DECREF(a);
    return copy;
}

static int get_threads(PyObject *obj, int *threads)
{
    return ccomp_resolve_threads(obj, threads);
}

static int model_from(int precision, int rule, int logits, double temperature, int dtype, ccomp_ac_model *m)
{
    m->precision = precision;
    m->rule = rule;
    m->logits = logits;
    m->temperature = temperature;
    m->dtype = dtype;
    return 0;
}

/* ------------------------------------------------------- quantization */

static PyObject *py_ac_lookup(PyObject *self, PyObject *args)
{
    PyObject *rows_obj, *sym_obj, *threads_obj, *result = NULL;
    int precision, rule, logits, threads;
    double temperature;
    rows_view rv;
    int64_t *sym = NULL;
    size_t nsym = 0;
    PyArrayObject *cum = NULL, *freq = NULL;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    npy_intp dim;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiipdO", &rows_obj, &sym_obj, &precision, &rule, &logits, &temperature,
                          &threads_obj))
        return NULL;
    if (get_threads(threads_obj, &threads) < 0) return NULL;
    if (get_rows(rows_obj, 2, "probs", &rv) < 0) return NULL;
    if ((sym = (int64_t *)snapshot_vec(sym_obj, NPY_INT64, "symbols", &nsym)) == NULL) goto done;
    if (nsym != rv.T) {
        PyErr_Format(PyExc_ValueError, "symbols has %zu entries but probs has %zu rows", nsym, rv.T);
        goto done;
    }
    dim = (npy_intp)rv.T;
    cum = (PyArrayObject *)PyArray_SimpleNew(1, &dim, NPY_UINT32);
    freq = (PyArrayObject *)PyArray_SimpleNew(1, &dim, NPY_UINT32);
    if (cum == NULL || freq == NULL) goto done;
    model_from(precision, rule, logits, temperature, rv.dtype, &m);
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_lookup(&m, rv.data, rv.T, rv.V, rv.stride, sym, (uint32_t *)PyArray_DATA(cum),
                         (uint32_t *)PyArray_DATA(freq), threads, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "quantize");
        goto done;
    }
    result = Py_BuildValue("OO", cum, freq);
done:
    free(sym);
    Py_XDECREF(rv.arr);
    Py_XDECREF(cum);
    Py_XDECREF(freq);
    return result;
}

static PyObject *py_ac_cdf(PyObject *self, PyObject *args)
{
    PyObject *row_obj;
    int precision, rule, logits;
    double temperature;
    rows_view rv;
    PyArrayObject *out;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    npy_intp dim;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oiipd", &row_obj, &precision, &rule, &logits, &temperature)) return NULL;
    if (get_rows(row_obj, 1, "probs", &rv) < 0) return NULL;
    dim = (npy_intp)rv.V + 1;
    out = (PyArrayObject *)PyArray_SimpleNew(1, &dim, NPY_UINT32);
    if (out == NULL) {
        Py_DECREF(rv.arr);
        return NULL;
    }
    model_from(precision, rule, logits, temperature, rv.dtype, &m);
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_cdf(&m, rv.data, rv.V, (uint32_t *)PyArray_DATA(out), 0, &err);
    CCOMP_NOGIL_END
    Py_DECREF(rv.arr);
    if (st != CCOMP_OK) {
        Py_DECREF(out);
        return ccomp_raise(&err, "quantize");
    }
    return (PyObject *)out;
}

static PyObject *py_ac_find(PyObject *self, PyObject *args)
{
    PyObject *row_obj;
    int precision, rule, logits;
    unsigned long target;
    double temperature;
    rows_view rv;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    uint32_t sym = 0, cum = 0, freq = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "Okiipd", &row_obj, &target, &precision, &rule, &logits, &temperature)) return NULL;
    if (target > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "target must be below 2^precision");
        return NULL;
    }
    if (get_rows(row_obj, 1, "probs", &rv) < 0) return NULL;
    model_from(precision, rule, logits, temperature, rv.dtype, &m);
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_find(&m, rv.data, rv.V, (uint32_t)target, &sym, &cum, &freq, 0, &err);
    CCOMP_NOGIL_END
    Py_DECREF(rv.arr);
    if (st != CCOMP_OK) return ccomp_raise(&err, "quantize");
    return Py_BuildValue("kkk", (unsigned long)sym, (unsigned long)cum, (unsigned long)freq);
}

/* ---------------------------------------------------------- containers */

static PyObject *bytes_from(uint8_t *buf, size_t n)
{
    PyObject *b = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)n);
    free(buf);
    return b;
}

/* ac_pack(symbols, cum, freq, precision, rule, logits, temperature, float64, vocab, chunk, threads):
 * (cum, freq) computed elsewhere (the GPU) under the model described. */
static PyObject *py_ac_pack(PyObject *self, PyObject *args)
{
    PyObject *sym_obj, *cum_obj, *freq_obj, *threads_obj, *result = NULL;
    int precision, rule, logits, f64, threads;
    double temperature;
    unsigned long long vocab;
    Py_ssize_t chunk;
    int64_t *sym = NULL;
    uint32_t *cum = NULL, *freq = NULL;
    size_t ns = 0, nc = 0, nf = 0;
    uint8_t *buf = NULL;
    size_t n = 0;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOiipdpKnO", &sym_obj, &cum_obj, &freq_obj, &precision, &rule, &logits,
                          &temperature, &f64, &vocab, &chunk, &threads_obj))
        return NULL;
    if (get_threads(threads_obj, &threads) < 0) return NULL;
    if (chunk < 1 || vocab > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "chunk must be >= 1 and vocab < 2^32, got %zd and %llu", chunk, vocab);
        return NULL;
    }
    if ((sym = (int64_t *)snapshot_vec(sym_obj, NPY_INT64, "symbols", &ns)) == NULL) goto done;
    if ((cum = (uint32_t *)snapshot_vec(cum_obj, NPY_UINT32, "cum", &nc)) == NULL) goto done;
    if ((freq = (uint32_t *)snapshot_vec(freq_obj, NPY_UINT32, "freq", &nf)) == NULL) goto done;
    if (nc != nf || ns != nc) {
        PyErr_Format(PyExc_ValueError, "symbols, cum and freq must have the same length, got %zu, %zu and %zu", ns, nc,
                     nf);
        goto done;
    }
    model_from(precision, rule, logits, temperature, f64 ? CCOMP_AC_F64 : CCOMP_AC_F32, &m);
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_pack(&m, (uint32_t)vocab, sym, cum, freq, nc, (size_t)chunk, threads, &buf, &n, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "encode");
        goto done;
    }
    result = bytes_from(buf, n);
done:
    free(sym);
    free(cum);
    free(freq);
    return result;
}

/* lookup + pack without Python-level intermediates */
/* lookup + pack without Python-level intermediates */
static PyObject *py_ac_encode(PyObject *self, PyObject *args)
{
    PyObject *rows_obj, *sym_obj, *threads_obj, *result = NULL;
    int precision, rule, logits, threads;
    double temperature;
    Py_ssize_t chunk;
    rows_view rv;
    int64_t *sym = NULL;
    size_t nsym = 0;
    uint32_t *pairs = NULL;
    uint8_t *buf = NULL;
    size_t n = 0;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiipdnO", &rows_obj, &sym_obj, &precision, &rule, &logits, &temperature, &chunk,
                          &threads_obj))
        return NULL;
    if (chunk < 1) {
        PyErr_Format(PyExc_ValueError, "chunk must be >= 1, got %zd", chunk);
        return NULL;
    }
    if (get_threads(threads_obj, &threads) < 0) return NULL;
    if (get_rows(rows_obj, 2, "probs", &rv) < 0) return NULL;
    if ((sym = (int64_t *)snapshot_vec(sym_obj, NPY_INT64, "symbols", &nsym)) == NULL) goto done;
    if (nsym != rv.T) {
        PyErr_Format(PyExc_ValueError, "symbols has %zu entries but probs has %zu rows", nsym, rv.T);
        goto done;
    }
    if (rv.V > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "vocabulary too large");
        goto done;
    }
    pairs = (uint32_t *)malloc(2u * (rv.T ? rv.T : 1u) * sizeof *pairs);
    if (pairs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    model_from(precision, rule, logits, temperature, rv.dtype, &m);
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_lookup(&m, rv.data, rv.T, rv.V, rv.stride, sym, pairs, pairs + rv.T, threads, &err);
    if (st == CCOMP_OK)
        st = ccomp_ac_pack(&m, (uint32_t)rv.V, sym, pairs, pairs + rv.T, rv.T, (size_t)chunk, threads, &buf, &n, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "encode");
        goto done;
    }
    result = bytes_from(buf, n);
done:
    free(pairs);
    free(sym);
    Py_XDECREF(rv.arr);
    return result;
}

/* Parses a container without the GIL (the CRC of a large one takes a while). */
static int parse_container(Py_buffer *b, ccomp_ac_info *info)
{
    ccomp_error err;
    ccomp_status st;
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_parse((const uint8_t *)b->buf, (size_t)b->len, info, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "decode");
        return -1;
    }
    return 0;
}

static PyObject *info_dict(const ccomp_ac_info *info)
{
    PyObject *logits = info->version == 1 ? Py_None : (info->logits ? Py_True : Py_False);
    PyObject *temperature = info->version == 1 ? Py_None : PyFloat_FromDouble(info->temperature);
    PyObject *dtype = info->version == 1 ? Py_None : PyUnicode_FromString(info->dtype == CCOMP_AC_F64 ? "float64" : "float32");
    PyObject *d = NULL;
    if (temperature != NULL && dtype != NULL) {
        if (info->version == 1) {
            Py_INCREF(temperature);
            Py_INCREF(dtype);
        }
        d = Py_BuildValue("{s:i,s:i,s:i,s:K,s:K,s:I,s:I,s:O,s:N,s:N}", "version", info->version, "precision",
                          info->precision, "rule", info->rule, "tokens", (unsigned long long)info->tokens,
                          "chunk_tokens", (unsigned long long)info->chunk_tokens, "vocab", (unsigned)info->vocab,
                          "chunks", (unsigned)info->chunks, "logits", logits, "temperature", temperature, "dtype",
                          dtype);
        return d;
    }
    if (info->version != 1) {
        Py_XDECREF(temperature);
        Py_XDECREF(dtype);
    }
    return NULL;
}

static PyObject *py_ac_info(PyObject *self, PyObject *args)
{
    Py_buffer b;
    ccomp_ac_info info;
    PyObject *d;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    if (parse_container(&b, &info) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    d = info_dict(&info);
    ccomp_ac_info_free(&info);
    PyBuffer_Release(&b);
    return d;
}

static PyObject *py_ac_decode(PyObject *self, PyObject *args)
{
    Py_buffer b;
    PyObject *rows_obj, *threads_obj, *result = NULL;
    int logits, threads;
    double temperature;
    rows_view rv;
    ccomp_ac_info info;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    PyArrayObject *out = NULL;
    npy_intp dim;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*OpdO", &b, &rows_obj, &logits, &temperature, &threads_obj)) return NULL;
    rv.arr = NULL;
    memset(&info, 0, sizeof info);
    if (get_threads(threads_obj, &threads) < 0) goto done;
    if (parse_container(&b, &info) < 0) goto done;
    if (get_rows(rows_obj, 2, "probs", &rv) < 0) goto done;
    if (rv.T != info.tokens || rv.V != info.vocab) {
        PyErr_Format(PyExc_ValueError, "probs has shape (%zu, %zu) but the container holds %llu tokens over %u symbols",
                     rv.T, rv.V, (unsigned long long)info.tokens, info.vocab);
        goto done;
    }
    dim = (npy_intp)rv.T;
    out = (PyArrayObject *)PyArray_SimpleNew(1, &dim, NPY_INT64);
    if (out == NULL) goto done;
    model_from(info.precision, info.rule, logits, temperature, rv.dtype, &m);
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_unpack_rows(&info, &m, rv.data, rv.stride, (int64_t *)PyArray_DATA(out), threads, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "decode");
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    ccomp_ac_info_free(&info);
    Py_XDECREF(out);
    Py_XDECREF(rv.arr);
    PyBuffer_Release(&b);
    return result;
}

/* ------------------------------------------------- raw streams, decoder */

static PyObject *py_rc_encode(PyObject *self, PyObject *args)
{
    PyObject *cum_obj, *freq_obj, *result = NULL;
    int precision;
    uint32_t *cum = NULL, *freq = NULL;
    size_t nc = 0, nf = 0;
    ccomp_rc_enc e;
    ccomp_error err;
    ccomp_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOi", &cum_obj, &freq_obj, &precision)) return NULL;
    if ((cum = (uint32_t *)snapshot_vec(cum_obj, NPY_UINT32, "cum", &nc)) == NULL) goto done;
    if ((freq = (uint32_t *)snapshot_vec(freq_obj, NPY_UINT32, "freq", &nf)) == NULL) goto done;
    if (nc != nf) {
        PyErr_Format(PyExc_ValueError, "cum and freq must have the same length, got %zu and %zu", nc, nf);
        goto done;
    }
    ccomp_rc_enc_init(&e);
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_rc_encode_many(&e, cum, freq, nc, precision, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_rc_enc_free(&e);
        ccomp_raise(&err, "encode");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(4u * ccomp_rc_enc_sealed_words(&e)));
    if (result) ccomp_rc_enc_seal_to(&e, (uint8_t *)PyBytes_AS_STRING(result));
    ccomp_rc_enc_free(&e);
done:
    free(cum);
    free(freq);
    return result;
}

/* A decoder over a bytes object (kept alive by the capsule). */
typedef struct dec_state {
    ccomp_rc_dec d;
    Py_buffer view;
    int busy;      /* set while a call that released the GIL runs */
    void *scratch; /* row summaries of ccomp_rc_dec_rows */
} dec_state;

static const char *DEC_CAPSULE = "ccomp.ac.decoder";

static void dec_destroy(PyObject *cap)
{
    dec_state *s = (dec_state *)PyCapsule_GetPointer(cap, DEC_CAPSULE);
    if (s == NULL) return;
    PyBuffer_Release(&s->view);
    ccomp_rc_rows_scratch_free(&s->scratch);
    free(s);
}

static PyObject *py_rc_dec_open(PyObject *self, PyObject *args)
{
    PyObject *obj, *cap;
    Py_ssize_t off, len;
    dec_state *s;
    ccomp_error err;
    (void)self;
    if (!PyArg_ParseTuple(args, "Onn", &obj, &off, &len)) return NULL;
    s = (dec_state *)calloc(1, sizeof *s);
    if (s == NULL) return PyErr_NoMemory();
    if (PyObject_GetBuffer(obj, &s->view, PyBUF_SIMPLE) < 0) {
        free(s);
        return NULL;
    }
    if (off < 0 || len < 0 || off > s->view.len || len > s->view.len - off) {
        PyBuffer_Release(&s->view);
        free(s);
        PyErr_SetString(PyExc_ValueError, "stream range outside the data");
        return NULL;
    }
    ccomp_error_clear(&err);
    if (ccomp_rc_dec_init(&s->d, (const uint8_t *)s->view.buf + off, (size_t)len, &err) != CCOMP_OK) {
        PyBuffer_Release(&s->view);
        free(s);
        return ccomp_raise(&err, "decode");
    }
    cap = PyCapsule_New(s, DEC_CAPSULE, dec_destroy);
    if (cap == NULL) {
        PyBuffer_Release(&s->view);
        free(s);
    }
    return cap;
}

static dec_state *dec_get(PyObject *cap)
{
    dec_state *s = (dec_state *)PyCapsule_GetPointer(cap, DEC_CAPSULE);
    if (s != NULL && s->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this decoder is in use by another thread");
        return NULL;
    }
    return s;
}

static int check_precision(int precision)
{
    if (precision < CCOMP_AC_MIN_PRECISION || precision > CCOMP_AC_MAX_PRECISION) {
        PyErr_Format(PyExc_ValueError, "precision must be between %d and %d bits, got %d", CCOMP_AC_MIN_PRECISION,
                     CCOMP_AC_MAX_PRECISION, precision);
        return -1;
    }
    return 0;
}

static PyObject *py_rc_dec_target(PyObject *self, PyObject *args)
{
    PyObject *cap;
    int precision;
    dec_state *s;
    uint32_t t;
    ccomp_error err;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oi", &cap, &precision)) return NULL;
    if ((s = dec_get(cap)) == NULL) return NULL;
    ccomp_error_clear(&err);
    if (ccomp_rc_dec_target(&s->d, precision, &t, &err) != CCOMP_OK) return ccomp_raise(&err, "decode");
    return PyLong_FromUnsignedLong(t);
}

static PyObject *py_rc_dec_advance(PyObject *self, PyObject *args)
{
    PyObject *cap;
    int precision;
    unsigned long cum, freq;
    dec_state *s;
    ccomp_error err;
    (void)self;
    if (!PyArg_ParseTuple(args, "Okki", &cap, &cum, &freq, &precision)) return NULL;
    if ((s = dec_get(cap)) == NULL) return NULL;
    if (cum > UINT32_MAX || freq > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "cum and freq must be below 2^32");
        return NULL;
    }
    ccomp_error_clear(&err);
    if (ccomp_rc_dec_advance(&s->d, (uint32_t)cum, (uint32_t)freq, precision, &err) != CCOMP_OK)
        return ccomp_raise(&err, "decode");
    Py_RETURN_NONE;
}

static PyObject *py_rc_dec_exhausted(PyObject *self, PyObject *args)
{
    PyObject *cap;
    dec_state *s;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    if ((s = dec_get(cap)) == NULL) return NULL;
    return PyBool_FromLong(ccomp_rc_dec_exhausted(&s->d));
}

/* Decodes one symbol per row of a 1-D or 2-D probs array (autoregressive use). */
static PyObject *py_rc_dec_rows(PyObject *self, PyObject *args)
{
    PyObject *cap, *rows_obj, *result = NULL;
    int precision, rule, logits, ndim;
    double temperature;
    dec_state *s;
    rows_view rv;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    PyArrayObject *out = NULL;
    npy_intp dim;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiipdi", &cap, &rows_obj, &precision, &rule, &logits, &temperature, &ndim))
        return NULL;
    if ((s = dec_get(cap)) == NULL) return NULL;
    if (ndim != 1 && ndim != 2) {
        PyErr_Format(PyExc_ValueError, "ndim must be 1 or 2, got %d", ndim);
        return NULL;
    }
    if (get_rows(rows_obj, ndim, "probs", &rv) < 0) return NULL;
    dim = (npy_intp)rv.T;
    out = (PyArrayObject *)PyArray_SimpleNew(1, &dim, NPY_INT64);
    if (out == NULL) goto done;
    model_from(precision, rule, logits, temperature, rv.dtype, &m);
    ccomp_error_clear(&err);
    if (s->busy) { /* converting probs may have run Python code, and another thread with it */
        PyErr_SetString(PyExc_RuntimeError, "this decoder is in use by another thread");
        goto done;
    }
    s->busy = 1;
    CCOMP_NOGIL_BEGIN
    st = ccomp_rc_dec_rows(&s->d, &m, rv.data, rv.T, rv.V, rv.stride, (int64_t *)PyArray_DATA(out), &s->scratch,
                           &err);
    CCOMP_NOGIL_END
    s->busy = 0;
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "decode");
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(out);
    Py_XDECREF(rv.arr);
    return result;
}

/* Decodes one symbol per row of explicit CDFs (uint32, [n, V + 1]). */
static PyObject *py_rc_dec_cdfs(PyObject *self, PyObject *args)
{
    PyObject *cap, *cdf_obj;
    int precision;
    dec_state *s;
    PyArrayObject *cdf = NULL, *out = NULL;
    ccomp_error err;
    ccomp_status st;
    npy_intp n;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOi", &cap, &cdf_obj, &precision)) return NULL;
    if ((s = dec_get(cap)) == NULL || check_precision(precision) < 0) return NULL;
    cdf = (PyArrayObject *)PyArray_FROM_OF(cdf_obj, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (cdf == NULL) return NULL;
    if (PyArray_TYPE(cdf) != NPY_UINT32 || PyArray_NDIM(cdf) != 2 || PyArray_DIM(cdf, 1) < 2) {
        PyErr_SetString(PyExc_TypeError, "cdfs must be a 2-D uint32 array of shape (n, V + 1)");
        Py_DECREF(cdf);
        return NULL;
    }
    n = PyArray_DIM(cdf, 0);
    out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_INT64);
    if (out == NULL) {
        Py_DECREF(cdf);
        return NULL;
    }
    if (s->busy) { /* converting cdfs may have run Python code, and another thread with it */
        PyErr_SetString(PyExc_RuntimeError, "this decoder is in use by another thread");
        Py_DECREF(cdf);
        Py_DECREF(out);
        return NULL;
    }
    ccomp_error_clear(&err);
    s->busy = 1;
    CCOMP_NOGIL_BEGIN
    st = ccomp_rc_dec_cdfs(&s->d, (const uint32_t *)PyArray_DATA(cdf), (size_t)n, (size_t)PyArray_DIM(cdf, 1),
                           precision, (int64_t *)PyArray_DATA(out), &err);
    CCOMP_NOGIL_END
    s->busy = 0;
    Py_DECREF(cdf);
    if (st != CCOMP_OK) {
        Py_DECREF(out);
        return ccomp_raise(&err, "decode");
    }
    return (PyObject *)out;
}

/* ------------------------------------------- container decoder (Decoder) */

/* An incremental decoder of a whole container: ac_dec_open(data) parses it
 * (the chunk table is copied into the state) and keeps the buffer alive. */
typedef struct acdec_state {
    ccomp_ac_info info;
    ccomp_ac_reader r;
    Py_buffer view;
    int busy; /* set while a call that released the GIL runs */
} acdec_state;

static const char *ACDEC_CAPSULE = "ccomp.ac.container_decoder";

static void acdec_destroy(PyObject *cap)
{
    acdec_state *s = (acdec_state *)PyCapsule_GetPointer(cap, ACDEC_CAPSULE);
    if (s == NULL) return;
    ccomp_ac_reader_free(&s->r);
    ccomp_ac_info_free(&s->info);
    PyBuffer_Release(&s->view);
    free(s);
}

static PyObject *py_ac_dec_open(PyObject *self, PyObject *args)
{
    PyObject *obj, *cap;
    acdec_state *s;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &obj)) return NULL;
    s = (acdec_state *)calloc(1, sizeof *s);
    if (s == NULL) return PyErr_NoMemory();
    if (PyObject_GetBuffer(obj, &s->view, PyBUF_SIMPLE) < 0) {
        free(s);
        return NULL;
    }
    if (parse_container(&s->view, &s->info) < 0) {
        PyBuffer_Release(&s->view);
        free(s);
        return NULL;
    }
    ccomp_ac_reader_init(&s->r, &s->info);
    cap = PyCapsule_New(s, ACDEC_CAPSULE, acdec_destroy);
    if (cap == NULL) {
        ccomp_ac_info_free(&s->info);
        PyBuffer_Release(&s->view);
        free(s);
    }
    return cap;
}

static acdec_state *acdec_get(PyObject *cap)
{
    acdec_state *s = (acdec_state *)PyCapsule_GetPointer(cap, ACDEC_CAPSULE);
    if (s != NULL && s->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this decoder is in use by another thread");
        return NULL;
    }
    return s;
}

/* ac_dec_info(dec) -> (info dict, tokens decoded) */
static PyObject *py_ac_dec_info(PyObject *self, PyObject *args)
{
    PyObject *cap;
    acdec_state *s;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    if ((s = acdec_get(cap)) == NULL) return NULL;
    return Py_BuildValue("NK", info_dict(&s->info), (unsigned long long)s->r.pos);
}

static PyObject *py_ac_dec_rows(PyObject *self, PyObject *args)
{
    PyObject *cap, *rows_obj, *result = NULL;
    int logits, ndim;
    double temperature;
    acdec_state *s;
    rows_view rv;
    ccomp_ac_model m;
    ccomp_error err;
    ccomp_status st;
    PyArrayObject *out = NULL;
    npy_intp dim;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOpdi", &cap, &rows_obj, &logits, &temperature, &ndim)) return NULL;
    if ((s = acdec_get(cap)) == NULL) return NULL;
    if (get_rows(rows_obj, ndim, "probs", &rv) < 0) return NULL;
    dim = (npy_intp)rv.T;
    out = (PyArrayObject *)PyArray_SimpleNew(1, &dim, NPY_INT64);
    if (out == NULL) goto done;
    if (rv.V != s->info.vocab) {
        PyErr_Format(PyExc_ValueError, "probs has %zu symbols but the container was coded over %u", rv.V,
                     s->info.vocab);
        goto done;
    }
    model_from(s->info.precision, s->info.rule, logits, temperature, rv.dtype, &m);
    ccomp_error_clear(&err);
    if (s->busy) { /* converting probs may have run Python code, and another thread with it */
        PyErr_SetString(PyExc_RuntimeError, "this decoder is in use by another thread");
        goto done;
    }
    s->busy = 1;
    CCOMP_NOGIL_BEGIN
    st = ccomp_ac_reader_rows(&s->r, &m, rv.data, rv.T, rv.stride, (int64_t *)PyArray_DATA(out), &err);
    CCOMP_NOGIL_END
    s->busy = 0;
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "decode");
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(out);
    Py_XDECREF(rv.arr);
    return result;
}

static PyObject *py_ac_dec_target(PyObject *self, PyObject *args)
{
    PyObject *cap;
    acdec_state *s;
    uint32_t t;
    ccomp_error err;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    if ((s = acdec_get(cap)) == NULL) return NULL;
    ccomp_error_clear(&err);
    if (ccomp_ac_reader_target(&s->r, &t, &err) != CCOMP_OK) return ccomp_raise(&err, "decode");
    return PyLong_FromUnsignedLong(t);
}

static PyObject *py_ac_dec_advance(PyObject *self, PyObject *args)
{
    PyObject *cap;
    unsigned long long symbol, cum, freq;
    acdec_state *s;
    ccomp_error err;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKKK", &cap, &symbol, &cum, &freq)) return NULL;
    if ((s = acdec_get(cap)) == NULL) return NULL;
    if (symbol > UINT32_MAX || cum > UINT32_MAX || freq > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "symbol, cum and freq must be below 2^32");
        return NULL;
    }
    ccomp_error_clear(&err);
    if (ccomp_ac_reader_advance(&s->r, (uint32_t)symbol, (uint32_t)cum, (uint32_t)freq, &err) != CCOMP_OK)
        return ccomp_raise(&err, "decode");
    Py_RETURN_NONE;
}

/* ------------------------------------------------ equal-info windows */

/* eiw_encode(cum, freq, precision, bits) -> (windows bytes, counts int64 array)
 * for a model whose (cum, freq) do not depend on the window. */
static PyObject *py_eiw_encode(PyObject *self, PyObject *args)
{
    PyObject *cum_obj, *freq_obj, *result = NULL;
    int precision;
    unsigned bits;
    PyArrayObject *cum = NULL, *freq = NULL, *ca = NULL;
    uint8_t *win = NULL;
    int64_t *counts = NULL;
    size_t nw = 0;
    ccomp_error err;
    ccomp_status st;
    npy_intp dn;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiI", &cum_obj, &freq_obj, &precision, &bits)) return NULL;
    if (check_precision(precision) < 0) return NULL;
    if (bits < 1 || bits > CCOMP_EIW_MAX_BITS) {
        PyErr_Format(PyExc_ValueError, "window bits must be between 1 and %d", CCOMP_EIW_MAX_BITS);
        return NULL;
    }
    if ((cum = get_vec(cum_obj, NPY_UINT32, "cum")) == NULL) goto done;
    if ((freq = get_vec(freq_obj, NPY_UINT32, "freq")) == NULL) goto done;
    if (PyArray_DIM(freq, 0) != PyArray_DIM(cum, 0)) {
        PyErr_SetString(PyExc_ValueError, "cum and freq must have the same length");
        goto done;
    }
    ccomp_error_clear(&err);
    CCOMP_NOGIL_BEGIN
    st = ccomp_eiw_pack((const uint32_t *)PyArray_DATA(cum), (const uint32_t *)PyArray_DATA(freq),
                        (size_t)PyArray_DIM(cum, 0), precision, bits, &win, &counts, &nw, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "encode");
        goto done;
    }
    dn = (npy_intp)nw;
    if ((ca = (PyArrayObject *)PyArray_SimpleNew(1, &dn, NPY_INT64)) == NULL) goto done;
    if (nw) memcpy(PyArray_DATA(ca), counts, nw * sizeof *counts);
    result = Py_BuildValue("y#O", (const char *)win, (Py_ssize_t)(nw * ((bits + 7u) / 8u)), ca);
done:
    free(win);
    free(counts);
    Py_XDECREF(ca);
    Py_XDECREF(cum);
    Py_XDECREF(freq);
    return result;
}

/* An incremental window encoder (for models that are reset at every window):
 * eiw_enc_new(bits) -> capsule; eiw_enc_try(cap, cum, freq, precision) -> bool;
 * eiw_enc_finish(cap) -> window bytes (and the coder restarts). */
typedef struct eiwe_state {
    ccomp_eiw w;
    unsigned bits;
} eiwe_state;

static const char *EIWE_CAPSULE = "ccomp.ac.eiw_enc";

static void eiwe_destroy(PyObject *cap)
{
    free(PyCapsule_GetPointer(cap, EIWE_CAPSULE));
}

static PyObject *py_eiw_enc_new(PyObject *self, PyObject *args)
{
    unsigned bits;
    eiwe_state *s;
    PyObject *cap;
    (void)self;
    if (!PyArg_ParseTuple(args, "I", &bits)) return NULL;
    if (bits < 1 || bits > CCOMP_EIW_MAX_BITS) {
        PyErr_Format(PyExc_ValueError, "window bits must be between 1 and %d", CCOMP_EIW_MAX_BITS);
        return NULL;
    }
    s = (eiwe_state *)calloc(1, sizeof *s);
    if (s == NULL) return PyErr_NoMemory();
    ccomp_eiw_reset(&s->w);
    s->bits = bits;
    cap = PyCapsule_New(s, EIWE_CAPSULE, eiwe_destroy);
    if (cap == NULL) free(s);
    return cap;
}

static PyObject *py_eiw_enc_try(PyObject *self, PyObject *args)
{
    PyObject *cap;
    unsigned long cum, freq;
    int precision;
    eiwe_state *s;
    (void)self;
    if (!PyArg_ParseTuple(args, "Okki", &cap, &cum, &freq, &precision)) return NULL;
    if ((s = (eiwe_state *)PyCapsule_GetPointer(cap, EIWE_CAPSULE)) == NULL || check_precision(precision) < 0)
        return NULL;
    if (freq < 1 || (uint64_t)cum + freq > ((uint64_t)1 << precision)) {
        PyErr_SetString(PyExc_ValueError, "(cum, freq) is not a nonempty interval of [0, 2^precision)");
        return NULL;
    }
    return PyBool_FromLong(ccomp_eiw_try_encode(&s->w, (uint32_t)cum, (uint32_t)freq, precision, s->bits));
}

static PyObject *py_eiw_enc_finish(PyObject *self, PyObject *args)
{
    PyObject *cap, *out;
    eiwe_state *s;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    if ((s = (eiwe_state *)PyCapsule_GetPointer(cap, EIWE_CAPSULE)) == NULL) return NULL;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((s->bits + 7u) / 8u));
    if (out == NULL) return NULL;
    ccomp_eiw_finish(&s->w, s->bits, (uint8_t *)PyBytes_AS_STRING(out));
    ccomp_eiw_reset(&s->w);
    return out;
}

/* A window decoder: eiw_dec_open(window bytes, bits) -> capsule; target/advance. */
typedef struct eiw_state {
    ccomp_eiw_dec d;
    uint8_t buf[CCOMP_EIW_MAX_BITS / 8];
} eiw_state;

static const char *EIW_CAPSULE = "ccomp.ac.eiw";

static void eiw_destroy(PyObject *cap)
{
    free(PyCapsule_GetPointer(cap, EIW_CAPSULE));
}

static PyObject *py_eiw_dec_open(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned bits;
    eiw_state *s;
    PyObject *cap;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*I", &b, &bits)) return NULL;
    if (bits < 1 || bits > CCOMP_EIW_MAX_BITS || (size_t)b.len != (bits + 7u) / 8u) {
        PyBuffer_Release(&b);
        PyErr_Format(PyExc_ValueError, "a window of %u bits is %u bytes", bits, (bits + 7u) / 8u);
        return NULL;
    }
    s = (eiw_state *)calloc(1, sizeof *s);
    if (s == NULL) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    memcpy(s->buf, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    ccomp_eiw_dec_init(&s->d, s->buf, bits);
    cap = PyCapsule_New(s, EIW_CAPSULE, eiw_destroy);
    if (cap == NULL) free(s);
    return cap;
}

static PyObject *py_eiw_dec_step(PyObject *self, PyObject *args)
{
    /* eiw_dec_step(cap, precision, cum, freq): cum == -1 asks for the target */
    PyObject *cap;
    int precision;
    long long cum, freq;
    eiw_state *s;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiLL", &cap, &precision, &cum, &freq)) return NULL;
    if ((s = (eiw_state *)PyCapsule_GetPointer(cap, EIW_CAPSULE)) == NULL || check_precision(precision) < 0)
        return NULL;
    if (cum < 0) return PyLong_FromUnsignedLong(ccomp_eiw_dec_target(&s->d, precision));
    if (freq < 1 || cum > (1LL << precision) || freq > (1LL << precision) - cum) {
        PyErr_SetString(PyExc_ValueError, "(cum, freq) is not a nonempty interval of [0, 2^precision)");
        return NULL;
    }
    ccomp_eiw_dec_advance(&s->d, (uint32_t)cum, (uint32_t)freq, precision);
    Py_RETURN_NONE;
}

PyMethodDef ccomp_ac_methods[] = {
    {"ac_lookup", py_ac_lookup, METH_VARARGS,
     "ac_lookup(probs[T,V], symbols[T] int64, precision, rule, logits, temperature, threads) -> (cum, freq)."},
    {"ac_cdf", py_ac_cdf, METH_VARARGS, "ac_cdf(probs[V], precision, rule, logits, temperature) -> uint32 cdf[V+1]."},
    {"ac_find", py_ac_find, METH_VARARGS,
     "ac_find(probs[V], target, precision, rule, logits, temperature) -> (symbol, cum, freq)."},
    {"ac_pack", py_ac_pack, METH_VARARGS,
     "ac_pack(symbols, cum, freq, precision, rule, logits, temperature, float64, vocab, chunk, threads) -> container."},
    {"ac_encode", py_ac_encode, METH_VARARGS,
     "ac_encode(probs, symbols, precision, rule, logits, temperature, chunk, threads) -> container."},
    {"ac_info", py_ac_info, METH_VARARGS, "ac_info(container) -> dict."},
    {"ac_decode", py_ac_decode, METH_VARARGS, "ac_decode(container, probs, logits, temperature, threads) -> symbols."},
    {"ac_dec_open", py_ac_dec_open, METH_VARARGS, "ac_dec_open(container) -> incremental container decoder."},
    {"ac_dec_info", py_ac_dec_info, METH_VARARGS, "ac_dec_info(dec) -> (info dict, tokens decoded)."},
    {"ac_dec_rows", py_ac_dec_rows, METH_VARARGS,
     "ac_dec_rows(dec, probs, logits, temperature, ndim) -> int64 symbols of the next rows."},
    {"ac_dec_target", py_ac_dec_target, METH_VARARGS, "ac_dec_target(dec) -> the next token's target."},
    {"ac_dec_advance", py_ac_dec_advance, METH_VARARGS, "ac_dec_advance(dec, symbol, cum, freq)."},
    {"rc_encode", py_rc_encode, METH_VARARGS, "rc_encode(cum, freq, precision) -> raw stream bytes."},
    {"rc_dec_open", py_rc_dec_open, METH_VARARGS, "rc_dec_open(data, offset, length) -> decoder capsule."},
    {"rc_dec_target", py_rc_dec_target, METH_VARARGS, "rc_dec_target(dec, precision) -> int."},
    {"rc_dec_advance", py_rc_dec_advance, METH_VARARGS, "rc_dec_advance(dec, cum, freq, precision)."},
    {"rc_dec_exhausted", py_rc_dec_exhausted, METH_VARARGS, "rc_dec_exhausted(dec) -> bool."},
    {"rc_dec_rows", py_rc_dec_rows, METH_VARARGS,
     "rc_dec_rows(dec, probs, precision, rule, logits, temperature, ndim) -> int64 symbols."},
    {"rc_dec_cdfs", py_rc_dec_cdfs, METH_VARARGS, "rc_dec_cdfs(dec, cdfs[n, V+1], precision) -> int64 symbols."},
    {"eiw_encode", py_eiw_encode, METH_VARARGS, "eiw_encode(cum, freq, precision, bits) -> (windows, counts)."},
    {"eiw_enc_new", py_eiw_enc_new, METH_VARARGS, "eiw_enc_new(bits) -> capsule."},
    {"eiw_enc_try", py_eiw_enc_try, METH_VARARGS, "eiw_enc_try(enc, cum, freq, precision) -> bool."},
    {"eiw_enc_finish", py_eiw_enc_finish, METH_VARARGS, "eiw_enc_finish(enc) -> window bytes."},
    {"eiw_dec_open", py_eiw_dec_open, METH_VARARGS, "eiw_dec_open(window, bits) -> capsule."},
    {"eiw_dec_step", py_eiw_dec_step, METH_VARARGS, "eiw_dec_step(dec, precision, cum, freq) -> target or None."},
    {NULL, NULL, 0, NULL}};

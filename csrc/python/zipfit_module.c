/* Binding of ZIP-FIT (ccomp.zipfit): compressed sizes and alignment scores of
 * texts under gzip, lz4 or zstd.  Texts are borrowed from Python sequences
 * (str as UTF-8, bytes in place, other bytes-like objects copied) and stay
 * valid while the GIL is released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL ccomp_ARRAY_API
#include <numpy/arrayobject.h>

#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "ccomp/zipfit.h"

/* ---- borrowed texts --------------------------------------------------------------- */

/* Texts borrowed from a Python sequence: str items as their UTF-8 form (kept
 * by the str object), bytes items in place (immutable), other bytes-like items
 * (bytearray, NumPy arrays, memoryviews: another thread may rewrite them while
 * the GIL is released) copied into a private snapshot.  `items` is a tuple copy
 * of the sequence, so the pointers stay valid while the GIL is released even if
 * the caller's list changes. */
typedef struct text_batch {
    PyObject *items;
    ccomp_text *texts;
    uint8_t **copies;
    Py_ssize_t n;
} text_batch;

static void text_batch_release(text_batch *b)
{
    if (b->copies != NULL)
        for (Py_ssize_t i = 0; i < b->n; i++)
            PyMem_Free(b->copies[i]);
    PyMem_Free(b->copies);
    PyMem_Free(b->texts);
    Py_XDECREF(b->items);
    memset(b, 0, sizeof *b);
}

/* "sources item 3" (index >= 0) or "text" (index < 0: a single text argument). */
static PyObject *text_label(const char *what, Py_ssize_t index)
{
    return index < 0 ? PyUnicode_FromString(what) : PyUnicode_FromFormat("%s item %zd", what, index);
}

/* Raises type("<label><fmt % detail>"); detail is an object (%S) or, when name is not NULL, that C string (%s). */
static void text_error(PyObject *type, const char *what, Py_ssize_t index, const char *fmt, PyObject *detail,
                       const char *name)
{
    PyObject *label = text_label(what, index);
    if (label == NULL)
        return;
    PyObject *msg = name != NULL ? PyUnicode_FromFormat(fmt, name) : PyUnicode_FromFormat(fmt, detail);
    if (msg != NULL)
        PyErr_Format(type, "%U%U", label, msg);
    Py_XDECREF(msg);
    Py_DECREF(label);
}

/* Points t at item's bytes; *copy receives a snapshot the caller frees (NULL when none was needed). */
static int text_from_object(PyObject *item, ccomp_text *t, uint8_t **copy, const char *what, Py_ssize_t index)
{
    *copy = NULL;
    if (PyUnicode_Check(item)) {
        Py_ssize_t len;
        const char *p = PyUnicode_AsUTF8AndSize(item, &len);
        if (p == NULL) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            text_error(PyExc_ValueError, what, index, " cannot be encoded as UTF-8: %S", value ? value : Py_None, NULL);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return -1;
        }
        t->data = (const uint8_t *)p;
        t->len = (size_t)len;
        return 0;
    }
    if (PyBytes_CheckExact(item)) {
        t->data = (const uint8_t *)PyBytes_AS_STRING(item);
        t->len = (size_t)PyBytes_GET_SIZE(item);
        return 0;
    }
    if (!PyObject_CheckBuffer(item)) {
        text_error(PyExc_TypeError, what, index, ": expected str or a bytes-like object, got %s", NULL,
                   Py_TYPE(item)->tp_name);
        return -1;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(item, &view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        text_error(PyExc_TypeError, what, index, ": expected a C-contiguous bytes-like object, got %s", NULL,
                   Py_TYPE(item)->tp_name);
        return -1;
    }
    if (view.ndim == 0 || view.itemsize != 1) {
        /* a NumPy scalar or 0-d array, or an array of wider items (floats, ints): not text, refused
         * rather than sized as raw bytes */
        char detail[160];
        if (view.ndim == 0)
            snprintf(detail, sizeof detail, "a 0-dimensional %s", Py_TYPE(item)->tp_name);
        else
            snprintf(detail, sizeof detail, "%s of %zd-byte items (use .tobytes() to size its raw bytes)",
                     Py_TYPE(item)->tp_name, view.itemsize);
        PyBuffer_Release(&view);
        text_error(PyExc_TypeError, what, index, ": expected str or a bytes-like object of bytes, got %s", NULL,
                   detail);
        return -1;
    }
    *copy = PyMem_Malloc(view.len > 0 ? (size_t)view.len : 1);
    if (*copy == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return -1;
    }
    if (view.len > 0)
        memcpy(*copy, view.buf, (size_t)view.len);
    t->data = *copy;
    t->len = (size_t)view.len;
    PyBuffer_Release(&view);
    return 0;
}

static int text_batch_init(text_batch *b, PyObject *seq, const char *what, Py_ssize_t index_offset)
{
    memset(b, 0, sizeof *b);
    if (PyUnicode_Check(seq) || PyBytes_Check(seq) || PyByteArray_Check(seq) || PyMemoryView_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s must be a sequence of texts, not a single %s", what, Py_TYPE(seq)->tp_name);
        return -1;
    }
    if (index_offset < 0) {
        PyErr_Format(PyExc_ValueError, "index_offset must be >= 0, got %zd", index_offset);
        return -1;
    }
    b->items = PySequence_Tuple(seq);
    if (b->items == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a sequence of texts, got %s", what, Py_TYPE(seq)->tp_name);
        }
        return -1;
    }
    b->n = PyTuple_GET_SIZE(b->items);
    if (index_offset > PY_SSIZE_T_MAX - b->n) {
        PyErr_Format(PyExc_ValueError, "index_offset %zd is too large for %zd texts", index_offset, b->n);
        text_batch_release(b);
        return -1;
    }
    b->texts = PyMem_Calloc((size_t)(b->n ? b->n : 1), sizeof *b->texts);
    b->copies = PyMem_Calloc((size_t)(b->n ? b->n : 1), sizeof *b->copies);
    if (b->texts == NULL || b->copies == NULL) {
        PyErr_NoMemory();
        text_batch_release(b);
        return -1;
    }
    for (Py_ssize_t i = 0; i < b->n; i++) {
        if (text_from_object(PyTuple_GET_ITEM(b->items, i), &b->texts[i], &b->copies[i], what, index_offset + i) < 0) {
            text_batch_release(b);
            return -1;
        }
    }
    return 0;
}

static int single_text(PyObject *obj, ccomp_text *t, uint8_t **copy, const char *what)
{
    return text_from_object(obj, t, copy, what, -1);
}

/* index_offset= (where the batch starts in the caller's stream, for messages): None or an int >= 0. */
static int offset_arg(PyObject *obj, Py_ssize_t *out)
{
    *out = 0;
    if (obj == NULL || obj == Py_None)
        return 0;
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "index_offset must be an int, got %s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t v = PyLong_AsSsize_t(obj);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        v = -1;
    }
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "index_offset must be an int in [0, %zd], got %R", PY_SSIZE_T_MAX, obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* An int argument of the zipfit functions: TypeError unless an int (bool refused), ValueError outside [lo, hi]. */
static int int_arg(PyObject *obj, const char *name, long lo, long hi, int *out)
{
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, got %s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be an int in [%ld, %ld], got %R", name, lo, hi, obj);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* ---- zipfit ------------------------------------------------------------------------- */

/* Parses and validates compressor, level and engine (Python objects) before any work; *use_model may be NULL. */
static int parse_compressor(PyObject *c_obj, PyObject *level_obj, PyObject *engine_obj, int *compressor, int *level,
                            int *engine, int *use_model)
{
    if (int_arg(c_obj, "compressor", CCOMP_GZIP, CCOMP_ZSTD, compressor) < 0 ||
        int_arg(engine_obj, "engine", CCOMP_ENGINE_AUTO, CCOMP_ENGINE_MODEL, engine) < 0)
        return -1;
    int lo, hi;
    ccomp_level_range((ccomp_compressor)*compressor, &lo, &hi);
    if (int_arg(level_obj, "level", lo, hi, level) < 0)
        return -1;
    ccomp_error err;
    ccomp_error_clear(&err);
    if (ccomp_engine_choice((ccomp_compressor)*compressor, *level, (ccomp_size_engine)*engine, use_model, &err) !=
        CCOMP_OK) {
        ccomp_raise(&err, "zipfit");
        return -1;
    }
    return 0;
}

static PyObject *py_pair_size(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *c_obj, *level_obj, *engine_obj, *a_obj, *b_obj;
    int compressor, level, engine;
    if (!PyArg_ParseTuple(args, "OOOOO:pair_size", &c_obj, &level_obj, &engine_obj, &a_obj, &b_obj))
        return NULL;
    if (parse_compressor(c_obj, level_obj, engine_obj, &compressor, &level, &engine, NULL) < 0)
        return NULL;
    ccomp_text a = {0}, b = {0};
    uint8_t *ca = NULL, *cb = NULL;
    if (single_text(a_obj, &a, &ca, "x") < 0)
        return NULL;
    if (b_obj != Py_None && single_text(b_obj, &b, &cb, "y") < 0) {
        PyMem_Free(ca);
        return NULL;
    }
    ccomp_error err;
    ccomp_error_clear(&err);
    ccomp_sizer *s = NULL;
    size_t out = 0;
    ccomp_status st;
    CCOMP_NOGIL_BEGIN
    st = ccomp_sizer_create((ccomp_compressor)compressor, level, (ccomp_size_engine)engine, &s, &err);
    if (st == CCOMP_OK)
        st = ccomp_sizer_size(s, a.data, a.len, b.data, b.len, &out, &err);
    ccomp_sizer_free(s);
    CCOMP_NOGIL_END
    PyMem_Free(ca);
    PyMem_Free(cb);
    if (st != CCOMP_OK)
        return ccomp_raise(&err, "compressed_size");
    return PyLong_FromSize_t(out);
}

static PyObject *py_engine_name(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *c_obj, *level_obj, *engine_obj;
    int compressor, level, engine, use_model = 0;
    if (!PyArg_ParseTuple(args, "OOO:engine_name", &c_obj, &level_obj, &engine_obj))
        return NULL;
    if (parse_compressor(c_obj, level_obj, engine_obj, &compressor, &level, &engine, &use_model) < 0)
        return NULL;
    return PyUnicode_FromString(ccomp_engine_name((ccomp_compressor)compressor, use_model));
}

static PyObject *py_level_range(PyObject *self, PyObject *c_obj)
{
    (void)self;
    int compressor, lo, hi;
    if (int_arg(c_obj, "compressor", CCOMP_GZIP, CCOMP_ZSTD, &compressor) < 0)
        return NULL;
    ccomp_level_range((ccomp_compressor)compressor, &lo, &hi);
    return Py_BuildValue("(ii)", lo, hi);
}

static PyObject *py_compressed_sizes(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"texts", "compressor", "level", "engine", "threads", "index_offset", "what", NULL};
    PyObject *texts_obj, *c_obj, *level_obj, *engine_obj, *threads_obj = Py_None, *offset_obj = NULL;
    int compressor, level, engine;
    Py_ssize_t offset = 0;
    const char *what = "texts";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|OOs:compressed_sizes", kwlist, &texts_obj, &c_obj, &level_obj,
                                     &engine_obj, &threads_obj, &offset_obj, &what))
        return NULL;
    int threads;
    if (offset_arg(offset_obj, &offset) < 0 ||
        parse_compressor(c_obj, level_obj, engine_obj, &compressor, &level, &engine, NULL) < 0 ||
        ccomp_resolve_threads(threads_obj, &threads) < 0)
        return NULL;
    text_batch batch;
    if (text_batch_init(&batch, texts_obj, what, offset) < 0)
        return NULL;
    npy_intp dims[1] = {batch.n};
    PyArrayObject *sizes = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    PyObject *result = NULL;
    if (sizes == NULL)
        goto done;
    ccomp_error err;
    ccomp_error_clear(&err);
    ccomp_status st;
    size_t *out = (size_t *)PyArray_DATA(sizes);
    CCOMP_NOGIL_BEGIN
    st = ccomp_compressed_sizes((ccomp_compressor)compressor, level, (ccomp_size_engine)engine, batch.texts,
                                (size_t)batch.n, threads, out, &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "compressed_sizes");
        goto done;
    }
    result = (PyObject *)sizes;
    sizes = NULL;
done:
    Py_XDECREF(sizes);
    text_batch_release(&batch);
    return result;
}

static PyObject *py_alignment_scores(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"sources", "targets", "target_sizes", "compressor", "level", "engine",
                             "threads", "index_offset", NULL};
    PyObject *src_obj, *tgt_obj, *tsize_obj, *c_obj, *level_obj, *engine_obj, *threads_obj = Py_None;
    PyObject *offset_obj = NULL;
    int compressor, level, engine;
    Py_ssize_t offset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOO|OO:alignment_scores", kwlist, &src_obj, &tgt_obj,
                                     &tsize_obj, &c_obj, &level_obj, &engine_obj, &threads_obj, &offset_obj))
        return NULL;
    int threads;
    if (offset_arg(offset_obj, &offset) < 0 ||
        parse_compressor(c_obj, level_obj, engine_obj, &compressor, &level, &engine, NULL) < 0 ||
        ccomp_resolve_threads(threads_obj, &threads) < 0)
        return NULL;
    text_batch sources, targets;
    memset(&targets, 0, sizeof targets);
    PyArrayObject *tsizes = NULL, *scores = NULL, *ssizes = NULL;
    PyObject *result = NULL;
    if (text_batch_init(&sources, src_obj, "sources", offset) < 0)
        return NULL;
    if (text_batch_init(&targets, tgt_obj, "targets", 0) < 0)
        goto done;
    if (targets.n == 0) {
        PyErr_SetString(PyExc_ValueError, "the target set is empty: ZIP-FIT needs at least one target text");
        goto done;
    }
    /* a private copy: the sizes are checked here and read without the GIL */
    tsizes = (PyArrayObject *)PyArray_FROMANY(tsize_obj, NPY_INT64, 1, 1, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY);
    if (tsizes == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_Format(PyErr_GivenExceptionMatches(type, PyExc_ValueError) ? PyExc_ValueError : PyExc_TypeError,
                     "target_sizes must be a 1-D array of int64 sizes: %S", value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        goto done;
    }
    if (PyArray_DIM(tsizes, 0) != targets.n) {
        PyErr_Format(PyExc_ValueError, "target_sizes has %zd entries for %zd targets", (Py_ssize_t)PyArray_DIM(tsizes, 0),
                     targets.n);
        goto done;
    }
    const int64_t *ts = (const int64_t *)PyArray_DATA(tsizes);
    for (Py_ssize_t j = 0; j < targets.n; j++)
        if (ts[j] <= 0) {
            PyErr_Format(PyExc_ValueError, "target_sizes[%zd] must be positive, got %lld", j, (long long)ts[j]);
            goto done;
        }
    npy_intp dims[1] = {sources.n};
    scores = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT64);
    ssizes = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    if (scores == NULL || ssizes == NULL)
        goto done;
    ccomp_error err;
    ccomp_error_clear(&err);
    ccomp_status st;
    CCOMP_NOGIL_BEGIN
    st = ccomp_zipfit_scores((ccomp_compressor)compressor, level, (ccomp_size_engine)engine, sources.texts,
                             (size_t)sources.n, targets.texts, (const size_t *)ts, (size_t)targets.n, threads,
                             (double *)PyArray_DATA(scores), (size_t *)PyArray_DATA(ssizes), &err);
    CCOMP_NOGIL_END
    if (st != CCOMP_OK) {
        ccomp_raise(&err, "alignment_scores");
        goto done;
    }
    result = Py_BuildValue("(OO)", scores, ssizes);
done:
    Py_XDECREF(tsizes);
    Py_XDECREF(scores);
    Py_XDECREF(ssizes);
    text_batch_release(&sources);
    text_batch_release(&targets);
    return result;
}

int ccomp_zipfit_add_constants(PyObject *m)
{
    if (PyModule_AddIntConstant(m, "GZIP", CCOMP_GZIP) < 0 || PyModule_AddIntConstant(m, "LZ4", CCOMP_LZ4) < 0 ||
        PyModule_AddIntConstant(m, "ZSTD", CCOMP_ZSTD) < 0 ||
        PyModule_AddIntConstant(m, "ENGINE_AUTO", CCOMP_ENGINE_AUTO) < 0 ||
        PyModule_AddIntConstant(m, "ENGINE_LIBRARY", CCOMP_ENGINE_LIBRARY) < 0 ||
        PyModule_AddIntConstant(m, "ENGINE_MODEL", CCOMP_ENGINE_MODEL) < 0)
        return -1;
    return 0;
}

PyMethodDef ccomp_zipfit_methods[] = {
    {"pair_size", py_pair_size, METH_VARARGS, "pair_size(compressor, level, engine, a, b) -> C(a||b)."},
    {"engine_name", py_engine_name, METH_VARARGS, "engine_name(compressor, level, engine) -> str."},
    {"level_range", py_level_range, METH_O, "level_range(compressor) -> (lowest, highest) level."},
    {"compressed_sizes", (PyCFunction)(void (*)(void))py_compressed_sizes, METH_VARARGS | METH_KEYWORDS,
     "compressed_sizes(texts, compressor, level, engine, threads=None, index_offset=0, what='texts') -> int64 array."},
    {"alignment_scores", (PyCFunction)(void (*)(void))py_alignment_scores, METH_VARARGS | METH_KEYWORDS,
     "alignment_scores(sources, targets, target_sizes, compressor, level, engine, threads=None, index_offset=0)"
     " -> (float64 scores, int64 source sizes)."},
    {NULL, NULL, 0, NULL}};

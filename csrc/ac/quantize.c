/* CDF quantization (ccomp/ac.h): probabilities or logits -> integer CDFs.
 *
 * Every row is processed on its own, in a fixed order (left-to-right sums),
 * so results never depend on threads.  A row is first scanned once: its
 * normalisation S and its running sums at every CK-th position
 * ("checkpoints"); a lookup or a search then only walks from the nearest
 * checkpoint.  quantize_scan.h has the scan, in a plain version (the
 * reference) and an AVX2 version over 8 rows at once (each lane does the
 * same sequence of float additions as the plain version, so the bits agree).
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* gcc: -ffp-contract=off (the build sets it) */
#endif
#include "quantize.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp/ac_exp.h"
#include "ccomp/cpu.h"
#include "ccomp/parallel.h"

ccomp_status ccomp_ac_model_check(const ccomp_ac_model *m, size_t V, ccomp_error *err)
{
    if (m->precision < CCOMP_AC_MIN_PRECISION || m->precision > CCOMP_AC_MAX_PRECISION)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "precision must be between %d and %d bits, got %d",
                          CCOMP_AC_MIN_PRECISION, CCOMP_AC_MAX_PRECISION, m->precision);
    if (m->rule != CCOMP_AC_RULE_CONSTRICTION && m->rule != CCOMP_AC_RULE_NACRITH)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "unknown quantization rule %d", m->rule);
    if (m->dtype != CCOMP_AC_F32 && m->dtype != CCOMP_AC_F64)
        return ccomp_fail(err, CCOMP_ERR_TYPE, "rows must be float32 or float64");
    if (V < 2)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "the vocabulary needs at least 2 symbols, got %zu", V);
    if (V >= ((size_t)1 << m->precision) - 1u)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "a vocabulary of %zu symbols needs a precision above %d bits (every symbol keeps a "
                          "frequency of at least 1 out of 2^precision)",
                          V, m->precision);
    if (!(m->temperature > 0.0) || !isfinite(m->temperature))
        return ccomp_fail(err, CCOMP_ERR_VALUE, "temperature must be a positive finite number, got %g",
                          m->temperature);
    if (!m->logits && m->temperature != 1.0)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "temperature applies to logits; pass logits=True (or scale the probabilities yourself)");
    return CCOMP_OK;
}

/* ------------------------------------------------------------ row input */

/* Logits -> weights exp((x - max) / temperature), into w (F of the model's
 * dtype for the constriction rule, float64 for nacrith). */
static ccomp_status logits_to_weights(const ccomp_ac_model *m, const void *row, size_t V, void *w, size_t t,
                                      ccomp_error *err)
{
    size_t i;
    double mx = -INFINITY, tau = m->temperature;
    for (i = 0; i < V; i++) {
        double x = m->dtype == CCOMP_AC_F32 ? (double)((const float *)row)[i] : ((const double *)row)[i];
        if (x != x) return ccomp_fail(err, CCOMP_ERR_VALUE, "logits[%zu, %zu] is NaN", t, i);
        if (x == INFINITY) return ccomp_fail(err, CCOMP_ERR_VALUE, "logits[%zu, %zu] is +inf", t, i);
        if (x > mx) mx = x;
    }
    if (mx == -INFINITY) return ccomp_fail(err, CCOMP_ERR_VALUE, "logits[%zu] are all -inf", t);
    for (i = 0; i < V; i++) {
        double x = m->dtype == CCOMP_AC_F32 ? (double)((const float *)row)[i] : ((const double *)row)[i];
        double e = ccomp_dexp((x - mx) / tau);
        if (m->rule == CCOMP_AC_RULE_NACRITH || m->dtype == CCOMP_AC_F64)
            ((double *)w)[i] = e;
        else
            ((float *)w)[i] = (float)e;
    }
    return CCOMP_OK;
}

/* The dtype the rule sees after logits are turned into weights. */
static int weight_dtype(const ccomp_ac_model *m)
{
    if (m->logits && m->rule == CCOMP_AC_RULE_NACRITH) return CCOMP_AC_F64;
    return m->dtype;
}

static size_t weight_size(const ccomp_ac_model *m)
{
    return weight_dtype(m) == CCOMP_AC_F32 ? sizeof(float) : sizeof(double);
}

/* ------------------------------------------------------- row summaries */

size_t ccomp_ac_num_ck(size_t V)
{
    return (V + CK - 1u) / CK;
}

static ccomp_status bad_value(const ccomp_ac_model *m, const void *p, size_t V, int dtype, size_t t,
                              ccomp_error *err)
{
    size_t i;
    const char *what = m->logits ? "weights from logits" : "probs";
    for (i = 0; i < V; i++) {
        double x = dtype == CCOMP_AC_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
        if (x != x) return ccomp_fail(err, CCOMP_ERR_VALUE, "%s[%zu, %zu] is NaN", what, t, i);
        if (x < 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "%s[%zu, %zu] = %g is negative", what, t, i, x);
        if (isinf(x)) return ccomp_fail(err, CCOMP_ERR_VALUE, "%s[%zu, %zu] is infinite", what, t, i);
    }
    return ccomp_fail(err, CCOMP_ERR_VALUE, "%s[%zu] cannot be normalised", what, t);
}

/* Completes a scanned row (S, checkpoints, bad flag) into its rule's summary. */
ccomp_status ccomp_ac_finish_row(const ccomp_ac_model *m, const void *p, size_t V, qrow *r, size_t t,
                                 ccomp_error *err)
{
    int dt = weight_dtype(m);
    const uint64_t total = (uint64_t)1 << m->precision;
    const uint64_t freew = total - V;
    (void)total;
    if (r->bad) return bad_value(m, p, V, dt, t, err);
    if (m->rule == CCOMP_AC_RULE_CONSTRICTION) {
        if (dt == CCOMP_AC_F32) {
            float S = (float)r->S;
            if (!(S >= FLT_MIN) || isinf(S)) {
                if (S == 0.0f) return ccomp_fail(err, CCOMP_ERR_VALUE, "probs[%zu] are all zero", t);
                return bad_value(m, p, V, dt, t, err);
            }
            r->scale = (float)freew / S;
        } else {
            double S = r->S;
            if (!(S >= DBL_MIN) || isinf(S)) {
                if (S == 0.0) return ccomp_fail(err, CCOMP_ERR_VALUE, "probs[%zu] are all zero", t);
                return bad_value(m, p, V, dt, t, err);
            }
            r->scale = (double)freew / S;
        }
        return CCOMP_OK;
    }
    /* nacrith */
    {
        size_t i;
        uint64_t sum = 0;
        int64_t rem;
        double q;
        if (!(r->S >= DBL_MIN) || isinf(r->S)) {
            if (r->S == 0.0) return ccomp_fail(err, CCOMP_ERR_VALUE, "probs[%zu] are all zero", t);
            return bad_value(m, p, V, dt, t, err);
        }
        q = (double)freew / r->S;
        r->scale = q;
        for (i = 0; i < V; i++) {
            double x = dt == CCOMP_AC_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
            if (i % CK == 0) r->ick[i / CK] = sum;
            sum += (uint32_t)(x * q) + 1u;
        }
        rem = (int64_t)total - (int64_t)sum;
        {
            double x = dt == CCOMP_AC_F32 ? (double)((const float *)p)[r->argmax] : ((const double *)p)[r->argmax];
            int64_t fmax = (int64_t)(uint32_t)(x * q) + 1;
            if (fmax + rem < 1)
                return ccomp_fail(err, CCOMP_ERR_VALUE, "probs[%zu] cannot be quantized at precision %d", t,
                                  m->precision);
        }
        r->rem = rem;
    }
    return CCOMP_OK;
}

/* ------------------------------------------------------ cdf of a symbol */

/* cdf[i] of a finished row, for one i in [0, V]. */
static inline uint32_t cdf_at_c32(const qrow *r, float c, size_t i)
{
    return (uint32_t)(c * (float)r->scale) + (uint32_t)i;
}

static inline uint32_t cdf_at_c64(const qrow *r, double c, size_t i)
{
    return (uint32_t)(c * r->scale) + (uint32_t)i;
}

static inline uint32_t nac_f(double x, double q)
{
    return (uint32_t)(x * q) + 1u;
}

/* (cum, freq) of symbol s of a finished row. */
void ccomp_ac_row_pair(const ccomp_ac_model *m, const void *p, size_t V, const qrow *r, size_t s, uint32_t *cum,
                       uint32_t *freq)
{
    const uint64_t total = (uint64_t)1 << m->precision;
    int dt = weight_dtype(m);
    size_t j = s / CK, i;
    if (m->rule == CCOMP_AC_RULE_CONSTRICTION) {
        uint32_t lo, hi;
        if (dt == CCOMP_AC_F32) {
            const float *pf = (const float *)p;
            float c = (float)r->ck[j];
            for (i = j * CK; i < s; i++) c += pf[i];
            lo = cdf_at_c32(r, c, s);
            hi = s + 1 == V ? (uint32_t)total : cdf_at_c32(r, c + pf[s], s + 1);
        } else {
            const double *pd = (const double *)p;
            double c = r->ck[j];
            for (i = j * CK; i < s; i++) c += pd[i];
            lo = cdf_at_c64(r, c, s);
            hi = s + 1 == V ? (uint32_t)total : cdf_at_c64(r, c + pd[s], s + 1);
        }
        *cum = lo;
        *freq = hi - lo;
    } else {
        uint64_t c = r->ick[j];
        for (i = j * CK; i < s; i++)
            c += nac_f(dt == CCOMP_AC_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i], r->scale);
        *freq = nac_f(dt == CCOMP_AC_F32 ? (double)((const float *)p)[s] : ((const double *)p)[s], r->scale);
        if (r->argmax < s) c += (uint64_t)r->rem;
        if (r->argmax == s) *freq = (uint32_t)((int64_t)*freq + r->rem);
        *cum = (uint32_t)c;
    }
}

/* The constriction rule in float32 can, by rounding, leave symbols at the end
 * of the vocabulary an empty (or out-of-range) interval; constriction itself
 * then refuses to encode them.  Such a symbol is reported, not coded. */
ccomp_status ccomp_ac_check_pair(const ccomp_ac_model *m, uint32_t cum, uint32_t freq, size_t t, size_t s,
                                 ccomp_error *err)
{
    uint64_t total = (uint64_t)1 << m->precision;
    if (freq == 0 || freq > total || (uint64_t)cum + freq > total)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "probs[%zu]: symbol %zu gets no frequency: %s rounding of the constriction rule at "
                          "precision %d leaves it an empty interval; use float64 or rule='nacrith'",
                          t, s, weight_dtype(m) == CCOMP_AC_F32 ? "float32" : "float64", m->precision);
    return CCOMP_OK;
}

/* cdf at checkpoint j (position j * CK) of a finished row. */
static uint32_t cdf_at_ck(const ccomp_ac_model *m, const qrow *r, size_t j)
{
    if (m->rule == CCOMP_AC_RULE_CONSTRICTION) {
        if (weight_dtype(m) == CCOMP_AC_F32) return cdf_at_c32(r, (float)r->ck[j], j * CK);
        return cdf_at_c64(r, r->ck[j], j * CK);
    }
    return (uint32_t)(r->ick[j] + (r->argmax < j * CK ? (uint64_t)r->rem : 0u));
}

void ccomp_ac_row_find(const ccomp_ac_model *m, const void *p, size_t V, const qrow *r, uint32_t target,
                       uint32_t *symbol, uint32_t *cum, uint32_t *freq)
{
    const uint64_t total = (uint64_t)1 << m->precision;
    int dt = weight_dtype(m);
    size_t lo = 0, hi = ccomp_ac_num_ck(V), s;
    uint64_t a, b;
    /* the last checkpoint whose cdf is <= target (cdf at checkpoint 0 is 0) */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (cdf_at_ck(m, r, mid) <= target)
            lo = mid;
        else
            hi = mid;
    }
    /* walk from the checkpoint: the symbol is the last s with cdf[s] <= target */
    s = lo * CK;
    if (m->rule == CCOMP_AC_RULE_CONSTRICTION && dt == CCOMP_AC_F32) {
        const float *pf = (const float *)p;
        float c = (float)r->ck[lo];
        a = cdf_at_c32(r, c, s);
        for (;; s++) {
            c += pf[s];
            b = s + 1 == V ? total : cdf_at_c32(r, c, s + 1);
            if (s + 1 == V || b > target) break;
            a = b;
        }
    } else if (m->rule == CCOMP_AC_RULE_CONSTRICTION) {
        const double *pd = (const double *)p;
        double c = r->ck[lo];
        a = cdf_at_c64(r, c, s);
        for (;; s++) {
            c += pd[s];
            b = s + 1 == V ? total : cdf_at_c64(r, c, s + 1);
            if (s + 1 == V || b > target) break;
            a = b;
        }
    } else {
        uint64_t c = r->ick[lo];
        a = c + (r->argmax < s ? (uint64_t)r->rem : 0u);
        for (;; s++) {
            double x = dt == CCOMP_AC_F32 ? (double)((const float *)p)[s] : ((const double *)p)[s];
            c += nac_f(x, r->scale);
            b = c + (r->argmax <= s ? (uint64_t)r->rem : 0u);
            if (s + 1 == V || b > target) break;
            a = b;
        }
        if (s + 1 == V) b = total;
    }
    *symbol = (uint32_t)s;
    *cum = (uint32_t)a;
    *freq = (uint32_t)(b - a);
}

/* ---------------------------------------------------------- plain scan */

void ccomp_ac_scan_ref(const ccomp_ac_model *m, const void *p, size_t V, qrow *r)
{
    size_t i;
    int dt = weight_dtype(m);
    r->bad = 0;
    r->argmax = 0;
    if (m->rule == CCOMP_AC_RULE_CONSTRICTION && dt == CCOMP_AC_F32) {
        const float *pf = (const float *)p;
        float acc = 0.0f;
        int bad = 0;
        for (i = 0; i < V; i++) {
            if (i % CK == 0) r->ck[i / CK] = acc;
            if (i + 1 == V) r->c_last = acc;
            bad |= !(pf[i] >= 0.0f);
            acc += pf[i];
        }
        r->S = acc;
        r->bad = bad;
    } else {
        double acc = 0.0, best = -1.0;
        int bad = 0;
        for (i = 0; i < V; i++) {
            double x = dt == CCOMP_AC_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
            if (i % CK == 0) r->ck[i / CK] = acc;
            if (i + 1 == V) r->c_last = acc;
            bad |= !(x >= 0.0);
            if (x > best) {
                best = x;
                r->argmax = i;
            }
            acc += x;
        }
        r->S = acc;
        r->bad = bad;
    }
}

/* ------------------------------------------------------- single rows */

ccomp_status ccomp_ac_row_prepare(const ccomp_ac_model *m, const void *row, size_t V, qscratch *sc, const void **p,
                                  size_t t, ccomp_error *err)
{
    ccomp_status st;
    size_t nck = ccomp_ac_num_ck(V);
    if (sc->cap_ck < nck) {
        double *ck = (double *)realloc(sc->ck, nck * sizeof *ck);
        uint64_t *ick;
        if (ck == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        sc->ck = ck;
        ick = (uint64_t *)realloc(sc->ick, nck * sizeof *ick);
        if (ick == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        sc->ick = ick;
        sc->cap_ck = nck;
    }
    sc->row.ck = sc->ck;
    sc->row.ick = sc->ick;
    *p = row;
    if (m->logits) {
        if (sc->cap_w < V) {
            void *w = realloc(sc->w, V * sizeof(double));
            if (w == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
            sc->w = w;
            sc->cap_w = V;
        }
        if ((st = logits_to_weights(m, row, V, sc->w, t, err)) != CCOMP_OK) return st;
        *p = sc->w;
    }
    ccomp_ac_scan_ref(m, *p, V, &sc->row);
    return ccomp_ac_finish_row(m, *p, V, &sc->row, t, err);
}

void ccomp_ac_scratch_free(qscratch *sc)
{
    free(sc->ck);
    free(sc->ick);
    free(sc->w);
    memset(sc, 0, sizeof *sc);
}

ccomp_status ccomp_ac_cdf(const ccomp_ac_model *m, const void *row, size_t V, uint32_t *cdf, size_t row_index,
                          ccomp_error *err)
{
    qscratch sc;
    const void *p;
    size_t s;
    ccomp_status st = ccomp_ac_model_check(m, V, err);
    if (st != CCOMP_OK) return st;
    memset(&sc, 0, sizeof sc);
    st = ccomp_ac_row_prepare(m, row, V, &sc, &p, row_index, err);
    if (st == CCOMP_OK) {
        for (s = 0; s < V && st == CCOMP_OK; s++) {
            uint32_t c, f;
            ccomp_ac_row_pair(m, p, V, &sc.row, s, &c, &f);
            cdf[s] = c;
            st = ccomp_ac_check_pair(m, c, f, row_index, s, err);
        }
        cdf[V] = (uint32_t)((uint64_t)1 << m->precision);
    }
    ccomp_ac_scratch_free(&sc);
    return st;
}

ccomp_status ccomp_ac_find(const ccomp_ac_model *m, const void *row, size_t V, uint32_t target, uint32_t *symbol,
                           uint32_t *cum, uint32_t *freq, size_t row_index, ccomp_error *err)
{
    qscratch sc;
    const void *p;
    ccomp_status st = ccomp_ac_model_check(m, V, err);
    if (st != CCOMP_OK) return st;
    if ((uint64_t)target >> m->precision)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "target %u is not below 2^%d", target, m->precision);
    memset(&sc, 0, sizeof sc);
    st = ccomp_ac_row_prepare(m, row, V, &sc, &p, row_index, err);
    if (st == CCOMP_OK) ccomp_ac_row_find(m, p, V, &sc.row, target, symbol, cum, freq);
    ccomp_ac_scratch_free(&sc);
    return st;
}

/* ----------------------------------------------------- batched rows */

/* Scans rows [t0, t0 + n) (n <= SCAN_GROUP) into g->rows, with the AVX2 kernel
 * where it applies, and finishes them.  g->p[k] is the row the rule reads. */
ccomp_status ccomp_ac_group_prepare(const ccomp_ac_model *m, const void *rows, size_t V, size_t row_stride,
                                    size_t t0, size_t n, qgroup *g, ccomp_error *err)
{
    size_t k, nck = ccomp_ac_num_ck(V), es = m->dtype == CCOMP_AC_F32 ? sizeof(float) : sizeof(double);
    ccomp_status st;
    if (g->cap_ck < nck) {
        double *ck = (double *)realloc(g->ck, SCAN_GROUP * nck * sizeof *ck);
        uint64_t *ick;
        if (ck == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        g->ck = ck;
        ick = (uint64_t *)realloc(g->ick, SCAN_GROUP * nck * sizeof *ick);
        if (ick == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        g->ick = ick;
        g->cap_ck = nck;
    }
    if (m->logits && g->cap_w < V) {
        void *w = realloc(g->w, SCAN_GROUP * V * sizeof(double));
        if (w == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        g->w = w;
        g->cap_w = V;
    }
    for (k = 0; k < n; k++) {
        const uint8_t *row = (const uint8_t *)rows + (t0 + k) * row_stride * es;
        g->rows[k].ck = g->ck + k * nck;
        g->rows[k].ick = g->ick + k * nck;
        g->p[k] = row;
        if (m->logits) {
            void *w = (uint8_t *)g->w + k * V * sizeof(double);
            if ((st = logits_to_weights(m, row, V, w, t0 + k, err)) != CCOMP_OK) return st;
            g->p[k] = w;
        }
    }
    if (n == SCAN_GROUP && m->rule == CCOMP_AC_RULE_CONSTRICTION && weight_dtype(m) == CCOMP_AC_F32 &&
        ccomp_ac_scan8_f32_available()) {
        ccomp_ac_scan8_f32((const float *const *)g->p, V, g->rows);
    } else {
        for (k = 0; k < n; k++) ccomp_ac_scan_ref(m, g->p[k], V, &g->rows[k]);
    }
    for (k = 0; k < n; k++)
        if ((st = ccomp_ac_finish_row(m, g->p[k], V, &g->rows[k], t0 + k, err)) != CCOMP_OK) return st;
    (void)weight_size;
    return CCOMP_OK;
}

void ccomp_ac_group_free(qgroup *g)
{
    free(g->ck);
    free(g->ick);
    free(g->w);
    memset(g, 0, sizeof *g);
}

typedef struct lookup_ctx {
    const ccomp_ac_model *m;
    const void *rows;
    size_t T, V, stride;
    const int64_t *symbols;
    uint32_t *cum, *freq;
} lookup_ctx;

static ccomp_status lookup_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    (void)ctx;
    (void)worker;
    *state = calloc(1, sizeof(qgroup));
    return *state ? CCOMP_OK : ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
}

static void lookup_fini(void *ctx, void *state)
{
    (void)ctx;
    if (state) ccomp_ac_group_free((qgroup *)state);
    free(state);
}

static ccomp_status lookup_run(void *vctx, void *state, size_t task, ccomp_error *err)
{
    lookup_ctx *c = (lookup_ctx *)vctx;
    qgroup *g = (qgroup *)state;
    size_t t0 = task * SCAN_GROUP, n = c->T - t0 < SCAN_GROUP ? c->T - t0 : SCAN_GROUP, k;
    ccomp_status st = ccomp_ac_group_prepare(c->m, c->rows, c->V, c->stride, t0, n, g, err);
    if (st != CCOMP_OK) return st;
    for (k = 0; k < n; k++) {
        size_t t = t0 + k;
        int64_t s = c->symbols[t]; /* read once and checked here, where it indexes the row */
        if (s < 0 || (uint64_t)s >= c->V)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "symbols[%zu] = %lld is outside [0, %zu)", t, (long long)s, c->V);
        ccomp_ac_row_pair(c->m, g->p[k], c->V, &g->rows[k], (size_t)s, &c->cum[t], &c->freq[t]);
        if ((st = ccomp_ac_check_pair(c->m, c->cum[t], c->freq[t], t, (size_t)s, err)) != CCOMP_OK) return st;
    }
    return CCOMP_OK;
}

ccomp_status ccomp_ac_check_symbols(const int64_t *symbols, size_t T, size_t V, ccomp_error *err)
{
    size_t t;
    for (t = 0; t < T; t++)
        if (symbols[t] < 0 || (uint64_t)symbols[t] >= V)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "symbols[%zu] = %lld is outside [0, %zu)", t,
                              (long long)symbols[t], V);
    return CCOMP_OK;
}

ccomp_status ccomp_ac_lookup(const ccomp_ac_model *m, const void *rows, size_t T, size_t V, size_t row_stride,
                             const int64_t *symbols, uint32_t *cum, uint32_t *freq, int threads,
                             ccomp_error *err)
{
    lookup_ctx c;
    ccomp_parallel_ops ops = {lookup_init, lookup_run, lookup_fini};
    ccomp_status st = ccomp_ac_model_check(m, V, err);
    if (st == CCOMP_OK) st = ccomp_ac_check_symbols(symbols, T, V, err);
    if (st != CCOMP_OK) return st;
    if (row_stride < V) return ccomp_fail(err, CCOMP_ERR_VALUE, "row stride %zu is below V = %zu", row_stride, V);
    c.m = m;
    c.rows = rows;
    c.T = T;
    c.V = V;
    c.stride = row_stride;
    c.symbols = symbols;
    c.cum = cum;
    c.freq = freq;
    return ccomp_parallel_for(threads, (T + SCAN_GROUP - 1) / SCAN_GROUP, &ops, &c, err);
}

/* The range coder and the Equal-Info-Windows bit coder (ccomp/ac.h). */
#include "ccomp/cancel.h"
#include "quantize.h"
#include "rc_impl.h"

void ccomp_rc_enc_init(ccomp_rc_enc *e)
{
    memset(e, 0, sizeof *e);
    e->range = UINT64_MAX;
}

void ccomp_rc_enc_free(ccomp_rc_enc *e)
{
    free(e->words);
    ccomp_rc_enc_init(e);
}

static ccomp_status check_pair(uint32_t cum, uint32_t freq, int precision, size_t index, ccomp_error *err)
{
    uint64_t total = (uint64_t)1 << precision;
    if (freq == 0 || (uint64_t)cum + freq > total)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "symbol %zu: (cum, freq) = (%u, %u) is not a nonempty interval of [0, 2^%d)", index,
                          cum, freq, precision);
    return CCOMP_OK;
}

static ccomp_status check_precision(int precision, ccomp_error *err)
{
    if (precision < CCOMP_AC_MIN_PRECISION || precision > CCOMP_AC_MAX_PRECISION)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "precision must be between %d and %d bits, got %d",
                          CCOMP_AC_MIN_PRECISION, CCOMP_AC_MAX_PRECISION, precision);
    return CCOMP_OK;
}

ccomp_status ccomp_rc_encode(ccomp_rc_enc *e, uint32_t cum, uint32_t freq, int precision, ccomp_error *err)
{
    ccomp_status st = check_precision(precision, err);
    if (st == CCOMP_OK) st = check_pair(cum, freq, precision, e->symbols, err);
    if (st != CCOMP_OK) return st;
    if (!rc_encode_step(e, cum, freq, precision)) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    return CCOMP_OK;
}

ccomp_status ccomp_rc_encode_many(ccomp_rc_enc *e, const uint32_t *cum, const uint32_t *freq, size_t n,
                                  int precision, ccomp_error *err)
{
    size_t i;
    ccomp_status st = check_precision(precision, err);
    if (st != CCOMP_OK) return st;
    for (i = 0; i < n; i++) {
        uint32_t c = cum[i], f = freq[i]; /* read once: what is checked is what is coded */
        if ((st = check_pair(c, f, precision, i, err)) != CCOMP_OK) return st;
        if ((i & 0xffffu) == 0xffffu && ccomp_cancelled()) return ccomp_check_cancel(err, "encode");
        if (!rc_encode_step(e, c, f, precision))
            return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    }
    return CCOMP_OK;
}

size_t ccomp_rc_enc_sealed_words(const ccomp_rc_enc *e)
{
    uint64_t point;
    if (e->range == UINT64_MAX) return e->n; /* nothing encoded: nothing to seal */
    point = e->lower + (RC_LOW_LIMIT - 1u);
    return e->n + e->num_inverted + 1u + ((point >> 32) == ((e->lower + e->range) >> 32));
}

void ccomp_rc_enc_seal_to(const ccomp_rc_enc *e, uint8_t *out)
{
    size_t i, k = 0;
    uint64_t point;
    for (i = 0; i < e->n; i++, k++) rc_store_le32(out + 4 * k, e->words[i]);
    if (e->range == UINT64_MAX) return;
    point = e->lower + (RC_LOW_LIMIT - 1u);
    if (e->num_inverted) {
        int carry = point < e->lower;
        rc_store_le32(out + 4 * k++, e->first_inverted + (carry ? 1u : 0u));
        for (i = 1; i < e->num_inverted; i++) rc_store_le32(out + 4 * k++, carry ? 0u : UINT32_MAX);
    }
    rc_store_le32(out + 4 * k++, (uint32_t)(point >> 32));
    if ((point >> 32) == ((e->lower + e->range) >> 32)) rc_store_le32(out + 4 * k++, 0u);
}

ccomp_status ccomp_rc_dec_init(ccomp_rc_dec *d, const uint8_t *data, size_t nbytes, ccomp_error *err)
{
    memset(d, 0, sizeof *d);
    if (nbytes % 4u != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "a range-coder stream is a whole number of 32-bit words, got %zu bytes",
                          nbytes);
    d->data = data;
    d->nwords = nbytes / 4u;
    d->range = UINT64_MAX;
    /* the first two words; a shorter stream is padded with zero bits */
    if (d->nwords >= 2) {
        d->point = (uint64_t)rc_load_le32(data) << 32 | rc_load_le32(data + 4);
        d->pos = 2;
    } else if (d->nwords == 1) {
        d->point = (uint64_t)rc_load_le32(data) << 32;
        d->pos = 1;
    }
    return CCOMP_OK;
}

ccomp_status ccomp_rc_dec_target(const ccomp_rc_dec *d, int precision, uint32_t *target, ccomp_error *err)
{
    ccomp_status st = check_precision(precision, err);
    if (st != CCOMP_OK) return st;
    *target = rc_dec_target_raw(d, precision);
    if (*target == UINT32_MAX)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "the stream is not a valid range-coder stream (target out of range)");
    return CCOMP_OK;
}

ccomp_status ccomp_rc_dec_advance(ccomp_rc_dec *d, uint32_t cum, uint32_t freq, int precision, ccomp_error *err)
{
    ccomp_status st = check_precision(precision, err);
    uint32_t t;
    if (st == CCOMP_OK) st = check_pair(cum, freq, precision, 0, err);
    if (st != CCOMP_OK) return st;
    t = rc_dec_target_raw(d, precision);
    if (t == UINT32_MAX || t < cum || t - cum >= freq)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "(cum, freq) = (%u, %u) does not contain the decoder's target %u", cum, freq, t);
    rc_dec_advance_raw(d, cum, freq, precision);
    return CCOMP_OK;
}

int ccomp_rc_dec_exhausted(const ccomp_rc_dec *d)
{
    uint64_t max_difference = ((uint64_t)1 << 33) - 1u;
    return d->pos >= d->nwords && (d->range == UINT64_MAX || d->point - d->lower < max_difference);
}

/* ------------------------------------------ raw streams under a model */

ccomp_status ccomp_rc_dec_rows(ccomp_rc_dec *d, const ccomp_ac_model *m, const void *rows, size_t n, size_t V,
                               size_t row_stride, int64_t *symbols, void **scratch, ccomp_error *err)
{
    size_t done = 0, j;
    uint64_t total;
    qgroup *g;
    ccomp_status st = ccomp_ac_model_check(m, V, err);
    if (st != CCOMP_OK) return st;
    if (n > 1 && row_stride < V)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "row stride %zu is below V = %zu", row_stride, V);
    if (*scratch == NULL && (*scratch = calloc(1, sizeof(qgroup))) == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    g = (qgroup *)*scratch;
    total = (uint64_t)1 << m->precision;
    while (st == CCOMP_OK && done < n) {
        size_t g_n = n - done < SCAN_GROUP ? n - done : SCAN_GROUP;
        st = ccomp_ac_group_prepare(m, rows, V, row_stride, done, g_n, g, err);
        for (j = 0; st == CCOMP_OK && j < g_n; j++) {
            uint32_t target = rc_dec_target_raw(d, m->precision), sym, cum, freq;
            if (target == UINT32_MAX) {
                st = ccomp_fail(err, CCOMP_ERR_CORRUPT, "row %zu: the stream is not valid for these probabilities",
                                done + j);
                break;
            }
            ccomp_ac_row_find(m, g->p[j], V, &g->rows[j], target, &sym, &cum, &freq);
            /* rows rewritten while being read can point at no symbol's interval */
            if (sym >= V || freq == 0 || target < cum || target - cum >= freq || (uint64_t)cum + freq > total) {
                st = ccomp_fail(err, CCOMP_ERR_CORRUPT, "row %zu: the stream's target %u falls in no symbol's interval",
                                done + j, target);
                break;
            }
            rc_dec_advance_raw(d, cum, freq, m->precision);
            symbols[done + j] = sym;
        }
        done += g_n;
        if (st == CCOMP_OK && ccomp_cancelled()) st = ccomp_check_cancel(err, "decode");
    }
    return st;
}

void ccomp_rc_rows_scratch_free(void **scratch)
{
    if (*scratch != NULL) ccomp_ac_group_free((qgroup *)*scratch);
    free(*scratch);
    *scratch = NULL;
}

ccomp_status ccomp_rc_dec_cdfs(ccomp_rc_dec *d, const uint32_t *cdfs, size_t n, size_t W, int precision,
                               int64_t *symbols, ccomp_error *err)
{
    size_t t, i;
    uint64_t total;
    ccomp_status st = check_precision(precision, err);
    if (st != CCOMP_OK) return st;
    if (W < 2) return ccomp_fail(err, CCOMP_ERR_VALUE, "a CDF row has V + 1 >= 2 entries, got %zu", W);
    total = (uint64_t)1 << precision;
    for (t = 0; t < n; t++) {
        const uint32_t *c = cdfs + t * W;
        if ((t & 0x3ffu) == 0x3ffu && ccomp_cancelled()) return ccomp_check_cancel(err, "decode");
        if (c[0] != 0 || c[W - 1] != total)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "cdfs[%zu] must start at 0 and end at 2^%d", t, precision);
        for (i = 1; i < W; i++)
            if (c[i] <= c[i - 1])
                return ccomp_fail(err, CCOMP_ERR_VALUE, "cdfs[%zu] is not strictly increasing at position %zu", t,
                                  i);
    }
    for (t = 0; t < n; t++) {
        const uint32_t *c = cdfs + t * W;
        uint32_t target = rc_dec_target_raw(d, precision), lo_c, hi_c;
        size_t lo = 0, hi = W - 1;
        if (target == UINT32_MAX)
            return ccomp_fail(err, CCOMP_ERR_CORRUPT, "symbol %zu: the stream is not valid for these CDFs", t);
        while (hi - lo > 1) { /* last i with c[i] <= target */
            size_t mid = lo + (hi - lo) / 2;
            if (c[mid] <= target)
                lo = mid;
            else
                hi = mid;
        }
        lo_c = c[lo];
        hi_c = c[lo + 1];
        /* read once and checked again: another thread may have rewritten the row since it was checked */
        if (hi_c <= lo_c || hi_c > total || target < lo_c || target >= hi_c)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "cdfs[%zu] changed while it was being decoded", t);
        rc_dec_advance_raw(d, lo_c, hi_c - lo_c, precision);
        symbols[t] = (int64_t)lo;
        if ((t & 0x3ffu) == 0x3ffu && ccomp_cancelled()) return ccomp_check_cancel(err, "decode");
    }
    return CCOMP_OK;
}

/* ------------------------------------------------ Equal-Info Windows */

#define EIW_BITS 62
#define EIW_TOP ((uint64_t)1 << EIW_BITS)
#define EIW_HALF (EIW_TOP >> 1)
#define EIW_Q1 (EIW_TOP >> 2)
#define EIW_Q3 (EIW_HALF + EIW_Q1)

void ccomp_eiw_reset(ccomp_eiw *w)
{
    memset(w, 0, sizeof *w);
    w->high = EIW_TOP - 1u;
}

static void eiw_put(ccomp_eiw *w, int bit)
{
    if (w->nbits < CCOMP_EIW_MAX_BITS && bit) w->bits[w->nbits >> 3] |= (uint8_t)(0x80u >> (w->nbits & 7u));
    w->nbits++;
}

static void eiw_put_follow(ccomp_eiw *w, int bit)
{
    eiw_put(w, bit);
    for (; w->pending; w->pending--) eiw_put(w, !bit);
}

uint64_t ccomp_eiw_terminated_bits(const ccomp_eiw *w)
{
    /* the untouched coder needs no bits: the all-zero window decodes nothing wrong */
    if (w->low == 0 && w->high == EIW_TOP - 1u && w->nbits == 0) return 0;
    return w->nbits + w->pending + 2u;
}

/* Interval update and renormalisation (Witten, Neal and Cleary's coder with
 * the interval split by scale = range >> P, as in the range coder). */
static void eiw_step(ccomp_eiw *w, uint32_t cum, uint32_t freq, int precision)
{
    uint64_t scale = (w->high - w->low + 1u) >> precision;
    w->high = w->low + scale * ((uint64_t)cum + freq) - 1u;
    w->low = w->low + scale * cum;
    for (;;) {
        if (w->high < EIW_HALF) {
            eiw_put_follow(w, 0);
        } else if (w->low >= EIW_HALF) {
            eiw_put_follow(w, 1);
            w->low -= EIW_HALF;
            w->high -= EIW_HALF;
        } else if (w->low >= EIW_Q1 && w->high < EIW_Q3) {
            w->pending++;
            w->low -= EIW_Q1;
            w->high -= EIW_Q1;
        } else {
            break;
        }
        w->low <<= 1;
        w->high = (w->high << 1) | 1u;
    }
}

int ccomp_eiw_try_encode(ccomp_eiw *w, uint32_t cum, uint32_t freq, int precision, unsigned budget)
{
    ccomp_eiw t = *w;
    eiw_step(&t, cum, freq, precision);
    if (ccomp_eiw_terminated_bits(&t) > budget) return 0;
    *w = t;
    return 1;
}

void ccomp_eiw_finish(ccomp_eiw *w, unsigned budget, uint8_t *out)
{
    if (ccomp_eiw_terminated_bits(w) > 0) {
        /* two bits select a quarter inside [low, high]; zeros may follow */
        w->pending++;
        eiw_put_follow(w, w->low >= EIW_Q1);
    }
    memcpy(out, w->bits, (budget + 7u) / 8u);
}

/* Grows the window and count arrays of ccomp_eiw_pack to hold `cap` windows. */
static int eiw_grow(uint8_t **win, int64_t **counts, size_t cap, size_t wbytes)
{
    uint8_t *w2;
    int64_t *c2;
    if (cap > SIZE_MAX / CCOMP_EIW_MAX_BITS) return 0;
    if ((w2 = (uint8_t *)realloc(*win, cap * wbytes)) == NULL) return 0;
    *win = w2;
    if ((c2 = (int64_t *)realloc(*counts, cap * sizeof *c2)) == NULL) return 0;
    *counts = c2;
    return 1;
}

ccomp_status ccomp_eiw_pack(const uint32_t *cum, const uint32_t *freq, size_t n, int precision, unsigned bits,
                            uint8_t **windows, int64_t **counts, size_t *nwindows, ccomp_error *err)
{
    size_t wbytes = (bits + 7u) / 8u, cap = 16, nw = 0, t;
    uint8_t *win = NULL;
    int64_t *cnt = NULL;
    ccomp_eiw w;
    ccomp_status st = check_precision(precision, err);
    *windows = NULL;
    *counts = NULL;
    *nwindows = 0;
    if (st != CCOMP_OK) return st;
    if (bits < 1 || bits > CCOMP_EIW_MAX_BITS)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "window bits must be between 1 and %d, got %u", CCOMP_EIW_MAX_BITS,
                          bits);
    if (!eiw_grow(&win, &cnt, cap, wbytes)) {
        free(win);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    }
    ccomp_eiw_reset(&w);
    cnt[0] = 0; /* cnt[nw]: symbols in the open window */
    for (t = 0; t < n; t++) {
        uint32_t c = cum[t], f = freq[t]; /* read once: what is checked is what is coded */
        if ((t & 0xffffu) == 0xffffu && ccomp_cancelled()) {
            st = ccomp_check_cancel(err, "encode");
            break;
        }
        if ((st = check_pair(c, f, precision, t, err)) != CCOMP_OK) break;
        if (ccomp_eiw_try_encode(&w, c, f, precision, bits)) {
            cnt[nw]++;
            continue;
        }
        if (cnt[nw] > 0) { /* the window is full: close it and retry the symbol in a fresh one */
            if (nw + 1 >= cap && !eiw_grow(&win, &cnt, cap *= 2, wbytes)) {
                st = ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
                break;
            }
            ccomp_eiw_finish(&w, bits, win + nw * wbytes);
            cnt[++nw] = 0;
            ccomp_eiw_reset(&w);
            if (ccomp_eiw_try_encode(&w, c, f, precision, bits)) {
                cnt[nw]++;
                continue;
            }
        }
        st = ccomp_fail(err, CCOMP_ERR_VALUE, "symbol %zu alone needs more than %u bits; use larger windows", t, bits);
        break;
    }
    if (st == CCOMP_OK && cnt[nw] > 0) ccomp_eiw_finish(&w, bits, win + nw++ * wbytes);
    if (st != CCOMP_OK) {
        free(win);
        free(cnt);
        return st;
    }
    *windows = win;
    *counts = cnt;
    *nwindows = nw;
    return CCOMP_OK;
}

static int eiw_bit(const ccomp_eiw_dec *d, unsigned i)
{
    return i < d->budget ? (d->bits[i >> 3] >> (7u - (i & 7u))) & 1 : 0;
}

void ccomp_eiw_dec_init(ccomp_eiw_dec *d, const uint8_t *window, unsigned budget)
{
    unsigned i;
    d->low = 0;
    d->high = EIW_TOP - 1u;
    d->bits = window;
    d->budget = budget;
    d->value = 0;
    for (i = 0; i < EIW_BITS; i++) d->value = (d->value << 1) | (uint64_t)eiw_bit(d, i);
    d->pos = EIW_BITS;
}

uint32_t ccomp_eiw_dec_target(const ccomp_eiw_dec *d, int precision)
{
    uint64_t scale = (d->high - d->low + 1u) >> precision;
    uint64_t q = (d->value - d->low) / scale;
    uint64_t top = ((uint64_t)1 << precision) - 1u;
    return (uint32_t)(q > top ? top : q); /* a damaged window still decodes within bounds */
}

void ccomp_eiw_dec_advance(ccomp_eiw_dec *d, uint32_t cum, uint32_t freq, int precision)
{
    uint64_t scale = (d->high - d->low + 1u) >> precision;
    d->high = d->low + scale * ((uint64_t)cum + freq) - 1u;
    d->low = d->low + scale * cum;
    for (;;) {
        if (d->high < EIW_HALF) {
            /* nothing to subtract */
        } else if (d->low >= EIW_HALF) {
            d->low -= EIW_HALF;
            d->high -= EIW_HALF;
            d->value -= EIW_HALF;
        } else if (d->low >= EIW_Q1 && d->high < EIW_Q3) {
            d->low -= EIW_Q1;
            d->high -= EIW_Q1;
            d->value -= EIW_Q1;
        } else {
            break;
        }
        d->low <<= 1;
        d->high = (d->high << 1) | 1u;
        d->value = (d->value << 1) | (uint64_t)eiw_bit(d, d->pos++);
    }
}

/* The CCAC container (ccomp/ac.h): chunked range-coder streams with a CRC. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ccomp/cancel.h"
#include "ccomp/parallel.h"
#include "quantize.h"
#include "rc_impl.h"

void ccomp_ac_info_free(ccomp_ac_info *info)
{
    free(info->offsets);
    free(info->lengths);
    free(info->sym_crc);
    info->offsets = NULL;
    info->lengths = NULL;
    info->sym_crc = NULL;
}

static double load_f64(const uint8_t *p)
{
    uint64_t u = rc_load_le64(p);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void store_f64(uint8_t *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    rc_store_le64(p, u);
}

ccomp_status ccomp_ac_parse(const uint8_t *data, size_t n, ccomp_ac_info *info, ccomp_error *err)
{
    uint64_t need, expect_chunks, left;
    uint32_t k;
    size_t header, entry, off;
    const uint8_t *table;
    memset(info, 0, sizeof *info);
    if (data == NULL && n > 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "data is NULL but n = %zu", n);
    if (n < CCOMP_AC_HEADER_BYTES + 4u)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "%zu bytes is too short for a ccomp.ac container (at least %u)", n,
                          CCOMP_AC_HEADER_BYTES + 4u);
    if (memcmp(data, "CCAC", 4) != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "not a ccomp.ac container (bad magic)");
    if (ccomp_crc32(data, n - 4u) != rc_load_le32(data + n - 4u))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "CRC-32 mismatch: the container is damaged or truncated");
    info->version = data[4];
    info->precision = data[5];
    info->rule = data[6];
    info->flags = data[7];
    info->tokens = rc_load_le64(data + 8);
    info->chunk_tokens = rc_load_le64(data + 16);
    info->chunks = rc_load_le32(data + 24);
    info->vocab = rc_load_le32(data + 28);
    info->data = data;
    info->size = n;
    info->logits = info->dtype = -1;
    info->temperature = 1.0;
    if (info->version != 1 && info->version != (int)CCOMP_AC_VERSION)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "unsupported container version %d (this build reads 1 and %u)",
                          info->version, CCOMP_AC_VERSION);
    header = info->version == 1 ? CCOMP_AC_HEADER_BYTES : CCOMP_AC_HEADER2_BYTES;
    entry = info->version == 1 ? 4u : 8u;
    if (info->precision < CCOMP_AC_MIN_PRECISION || info->precision > CCOMP_AC_MAX_PRECISION ||
        (info->rule != CCOMP_AC_RULE_CONSTRICTION && info->rule != CCOMP_AC_RULE_NACRITH))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid container parameters (precision %d, rule %d)",
                          info->precision, info->rule);
    if (info->version == 1 ? info->flags != 0
                           : (info->flags & ~(int)(CCOMP_AC_FLAG_LOGITS | CCOMP_AC_FLAG_F64)) != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid container flags 0x%02x", info->flags);
    if (info->vocab < 2 || (uint64_t)info->vocab >= ((uint64_t)1 << info->precision) - 1u)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid vocabulary size %u at precision %d", info->vocab,
                          info->precision);
    if (info->version != 1) {
        if (n < header + 4u)
            return ccomp_fail(err, CCOMP_ERR_CORRUPT, "%zu bytes is too short for a version %d container", n,
                              info->version);
        info->logits = (info->flags & CCOMP_AC_FLAG_LOGITS) != 0;
        info->dtype = (info->flags & CCOMP_AC_FLAG_F64) ? CCOMP_AC_F64 : CCOMP_AC_F32;
        info->temperature = load_f64(data + 32);
        if (!(info->temperature > 0.0) || !isfinite(info->temperature) ||
            (!info->logits && info->temperature != 1.0))
            return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid recorded temperature %g", info->temperature);
    }
    if (info->chunk_tokens == 0 && info->tokens != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid chunk size 0");
    expect_chunks = info->tokens == 0 ? 0 : (info->tokens - 1u) / info->chunk_tokens + 1u;
    if (expect_chunks != info->chunks)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk count %u does not match %llu tokens in chunks of %llu",
                          info->chunks, (unsigned long long)info->tokens, (unsigned long long)info->chunk_tokens);
    need = (uint64_t)header + entry * (uint64_t)info->chunks + 4u;
    if (need > n) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk table runs past the end");
    table = data + header;
    /* one pass over the table, into memory the container's readers own */
    info->offsets = (size_t *)malloc((info->chunks ? info->chunks : 1u) * sizeof *info->offsets);
    info->lengths = (uint32_t *)malloc((info->chunks ? info->chunks : 1u) * sizeof *info->lengths);
    if (info->version != 1) info->sym_crc = (uint32_t *)malloc((info->chunks ? info->chunks : 1u) * sizeof(uint32_t));
    if (info->offsets == NULL || info->lengths == NULL || (info->version != 1 && info->sym_crc == NULL)) {
        ccomp_ac_info_free(info);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory for a table of %u chunks", info->chunks);
    }
    off = (size_t)need - 4u;
    left = n - need;
    for (k = 0; k < info->chunks; k++) {
        uint32_t len = rc_load_le32(table + entry * k);
        const char *why = NULL;
        if (len % 4u)
            why = "is not whole words";
        else if (len == 0)
            why = "is empty but the chunk holds tokens";
        else if (len > left)
            why = "runs past the end";
        if (why) {
            ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk %u: its stream length %u %s", k, len, why);
            ccomp_ac_info_free(info);
            return CCOMP_ERR_CORRUPT;
        }
        info->offsets[k] = off;
        info->lengths[k] = len;
        if (info->sym_crc) info->sym_crc[k] = rc_load_le32(table + entry * k + 4u);
        off += len;
        left -= len;
    }
    if (left != 0) {
        ccomp_ac_info_free(info);
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk lengths do not add up to the size (%llu bytes left over)",
                          (unsigned long long)left);
    }
    return CCOMP_OK;
}

uint32_t ccomp_ac_symbols_crc(uint32_t crc, const int64_t *symbols, size_t n)
{
    uint8_t buf[1024];
    uLong c = crc;
    while (n > 0) {
        size_t m = n < sizeof buf / 4u ? n : sizeof buf / 4u, i;
        for (i = 0; i < m; i++) rc_store_le32(buf + 4u * i, (uint32_t)symbols[i]);
        c = crc32(c, buf, (uInt)(4u * m));
        symbols += m;
        n -= m;
    }
    return (uint32_t)c;
}

static const char *dtype_name(int dtype)
{
    return dtype == CCOMP_AC_F64 ? "float64" : "float32";
}

ccomp_status ccomp_ac_model_matches(const ccomp_ac_info *info, const ccomp_ac_model *m, ccomp_error *err)
{
    ccomp_status st;
    if (m->precision != info->precision || m->rule != info->rule)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "the model's precision/rule (%d, %d) differ from the container's (%d, %d)", m->precision,
                          m->rule, info->precision, info->rule);
    if ((st = ccomp_ac_model_check(m, info->vocab, err)) != CCOMP_OK) return st;
    if (info->version == 1) return CCOMP_OK;
    if (m->logits != info->logits || (info->logits && m->temperature != info->temperature))
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "the container was encoded with logits=%s, temperature=%.17g but the decoder was given "
                          "logits=%s, temperature=%.17g: the probabilities would differ from the encoder's",
                          info->logits ? "True" : "False", info->temperature, m->logits ? "True" : "False",
                          m->temperature);
    /* the constriction rule sums the rows in their own float type; nacrith works in float64 */
    if (info->rule == CCOMP_AC_RULE_CONSTRICTION && m->dtype != info->dtype)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "the container was encoded from %s rows but the decoder was given %s rows: the "
                          "constriction rule's CDFs depend on the float type (pass %s rows)",
                          dtype_name(info->dtype), dtype_name(m->dtype), dtype_name(info->dtype));
    return CCOMP_OK;
}

/* ------------------------------------------------ chunk checks (shared) */

static uint64_t chunk_first(const ccomp_ac_info *info, uint32_t k)
{
    return (uint64_t)k * info->chunk_tokens;
}

static uint64_t chunk_count(const ccomp_ac_info *info, uint32_t k)
{
    uint64_t t0 = chunk_first(info, k);
    return info->tokens - t0 < info->chunk_tokens ? info->tokens - t0 : info->chunk_tokens;
}

static ccomp_status chunk_open(const ccomp_ac_info *info, uint32_t k, ccomp_rc_dec *d, ccomp_error *err)
{
    return ccomp_rc_dec_init(d, info->data + info->offsets[k], info->lengths[k], err);
}

/* A sealed stream is read exactly to its end with at most one word past it:
 * the decoder reads two words ahead of the encoder's output, and sealing
 * wrote one or two words.  More words past the end (at any time) means the
 * stream ran out; words left over at the chunk's end mean it was decoded with
 * other probabilities. */
static ccomp_status chunk_running(const ccomp_ac_info *info, uint32_t k, const ccomp_rc_dec *d, ccomp_error *err)
{
    if (d->overread > 1)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                          "chunk %u: the stream ends before its %llu tokens (damaged, or decoded with probabilities "
                          "that differ from the encoder's)",
                          k, (unsigned long long)chunk_count(info, k));
    return CCOMP_OK;
}

static ccomp_status chunk_end(const ccomp_ac_info *info, uint32_t k, const ccomp_rc_dec *d, uint32_t crc,
                              ccomp_error *err)
{
    ccomp_status st = chunk_running(info, k, d, err);
    unsigned long long t0 = (unsigned long long)chunk_first(info, k),
                       t1 = t0 + (unsigned long long)chunk_count(info, k);
    if (st != CCOMP_OK) return st;
    if (info->sym_crc != NULL && crc != info->sym_crc[k])
        return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                          "chunk %u (tokens %llu..%llu): the decoded symbols differ from the encoded ones (CRC-32 "
                          "mismatch): the model's probabilities differ from the encoder's (another model, another "
                          "evaluation order, temperature or float type)",
                          k, t0, t1 - 1u);
    if (d->pos != d->nwords)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                          "chunk %u (tokens %llu..%llu): %zu words of its stream are left over: the model's "
                          "probabilities differ from the encoder's, or the container is damaged",
                          k, t0, t1 - 1u, d->nwords - d->pos);
    return CCOMP_OK;
}

/* ------------------------------------------------------------- packing */

typedef struct pack_ctx {
    int precision;
    const int64_t *symbols;
    const uint32_t *cum, *freq;
    size_t T, chunk;
    ccomp_rc_enc *enc; /* one per chunk */
    uint32_t *crc;     /* one per chunk */
} pack_ctx;

static ccomp_status pack_run(void *vctx, void *state, size_t k, ccomp_error *err)
{
    pack_ctx *c = (pack_ctx *)vctx;
    size_t t0 = k * c->chunk, n = c->T - t0 < c->chunk ? c->T - t0 : c->chunk, i;
    uint64_t total = (uint64_t)1 << c->precision;
    (void)state;
    for (i = 0; i < n; i++) {
        /* each value is read once: what is checked is what is coded */
        uint32_t cum = c->cum[t0 + i], freq = c->freq[t0 + i];
        if (freq == 0 || (uint64_t)cum + freq > total)
            return ccomp_fail(err, CCOMP_ERR_VALUE,
                              "token %zu: (cum, freq) = (%u, %u) is not a nonempty interval of [0, 2^%d)", t0 + i,
                              cum, freq, c->precision);
        if (!rc_encode_step(&c->enc[k], cum, freq, c->precision))
            return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        if ((i & 0xffffu) == 0xffffu && ccomp_cancelled()) return ccomp_check_cancel(err, "encode");
    }
    c->crc[k] = ccomp_ac_symbols_crc(0, c->symbols + t0, n);
    return CCOMP_OK;
}

ccomp_status ccomp_ac_pack(const ccomp_ac_model *m, uint32_t vocab, const int64_t *symbols, const uint32_t *cum,
                           const uint32_t *freq, size_t T, size_t chunk_tokens, int threads, uint8_t **out,
                           size_t *out_len, ccomp_error *err)
{
    pack_ctx c;
    ccomp_parallel_ops ops = {NULL, pack_run, NULL};
    size_t nchunks, k, total, pos;
    uint8_t *buf;
    ccomp_status st;
    *out = NULL;
    *out_len = 0;
    if ((st = ccomp_ac_model_check(m, vocab, err)) != CCOMP_OK) return st;
    if (T > 0 && (symbols == NULL || cum == NULL || freq == NULL))
        return ccomp_fail(err, CCOMP_ERR_VALUE, "symbols, cum and freq must not be NULL");
    if (chunk_tokens == 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "chunk size must be at least 1 token");
    nchunks = T == 0 ? 0 : (T - 1u) / chunk_tokens + 1u;
    if (nchunks > UINT32_MAX) return ccomp_fail(err, CCOMP_ERR_VALUE, "too many chunks (%zu)", nchunks);
    if ((st = ccomp_ac_check_symbols(symbols, T, vocab, err)) != CCOMP_OK) return st;
    c.precision = m->precision;
    c.symbols = symbols;
    c.cum = cum;
    c.freq = freq;
    c.T = T;
    c.chunk = chunk_tokens;
    c.enc = (ccomp_rc_enc *)calloc(nchunks ? nchunks : 1u, sizeof *c.enc);
    c.crc = (uint32_t *)calloc(nchunks ? nchunks : 1u, sizeof *c.crc);
    if (c.enc == NULL || c.crc == NULL) {
        free(c.enc);
        free(c.crc);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    }
    for (k = 0; k < nchunks; k++) ccomp_rc_enc_init(&c.enc[k]);
    st = ccomp_parallel_for(threads, nchunks, &ops, &c, err);
    total = 0;
    if (st == CCOMP_OK) {
        total = CCOMP_AC_HEADER2_BYTES + 8u * nchunks + 4u;
        for (k = 0; k < nchunks; k++) {
            size_t bytes = 4u * ccomp_rc_enc_sealed_words(&c.enc[k]);
            if (bytes > UINT32_MAX) {
                st = ccomp_fail(err, CCOMP_ERR_VALUE, "chunk %zu is over 4 GiB; use smaller chunks", k);
                break;
            }
            total += bytes;
        }
    }
    if (st == CCOMP_OK) {
        buf = (uint8_t *)malloc(total);
        if (buf == NULL) {
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        } else {
            memcpy(buf, "CCAC", 4);
            buf[4] = (uint8_t)CCOMP_AC_VERSION;
            buf[5] = (uint8_t)m->precision;
            buf[6] = (uint8_t)m->rule;
            buf[7] = (uint8_t)((m->logits ? CCOMP_AC_FLAG_LOGITS : 0u) | (m->dtype == CCOMP_AC_F64 ? CCOMP_AC_FLAG_F64 : 0u));
            rc_store_le64(buf + 8, T);
            rc_store_le64(buf + 16, chunk_tokens);
            rc_store_le32(buf + 24, (uint32_t)nchunks);
            rc_store_le32(buf + 28, vocab);
            store_f64(buf + 32, m->logits ? m->temperature : 1.0);
            pos = CCOMP_AC_HEADER2_BYTES + 8u * nchunks;
            for (k = 0; k < nchunks; k++) {
                size_t bytes = 4u * ccomp_rc_enc_sealed_words(&c.enc[k]);
                rc_store_le32(buf + CCOMP_AC_HEADER2_BYTES + 8u * k, (uint32_t)bytes);
                rc_store_le32(buf + CCOMP_AC_HEADER2_BYTES + 8u * k + 4u, c.crc[k]);
                ccomp_rc_enc_seal_to(&c.enc[k], buf + pos);
                pos += bytes;
            }
            rc_store_le32(buf + pos, ccomp_crc32(buf, pos));
            *out = buf;
            *out_len = total;
        }
    }
    for (k = 0; k < nchunks; k++) ccomp_rc_enc_free(&c.enc[k]);
    free(c.enc);
    free(c.crc);
    return st;
}

/* ----------------------------------------------------------- unpacking */

/* Probabilities: every row is scanned first, in parallel over groups of rows
 * (summaries kept: 1/32 of the rows' size or less), then the chunks decode in
 * parallel, each walking its rows from their checkpoints.  Logits: the
 * weights of a row are needed while it is decoded, so each chunk scans its
 * own rows as it goes. */
typedef struct unpack_ctx {
    const ccomp_ac_info *info;
    const ccomp_ac_model *m;
    const void *rows;
    size_t stride, es, nck;
    int64_t *symbols;
    qrow *all; /* pre-scanned rows (probabilities only) */
    double *ck;
    uint64_t *ick;
} unpack_ctx;

static ccomp_status unpack_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    (void)ctx;
    (void)worker;
    *state = calloc(1, sizeof(qgroup));
    return *state ? CCOMP_OK : ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
}

static void unpack_fini(void *ctx, void *state)
{
    (void)ctx;
    if (state) ccomp_ac_group_free((qgroup *)state);
    free(state);
}

static ccomp_status prescan_run(void *vctx, void *state, size_t task, ccomp_error *err)
{
    unpack_ctx *c = (unpack_ctx *)vctx;
    qgroup *g = (qgroup *)state;
    size_t T = c->info->tokens, t0 = task * SCAN_GROUP, n = T - t0 < SCAN_GROUP ? T - t0 : SCAN_GROUP, k;
    ccomp_status st = ccomp_ac_group_prepare(c->m, c->rows, c->info->vocab, c->stride, t0, n, g, err);
    if (st != CCOMP_OK) return st;
    for (k = 0; k < n; k++) {
        qrow *dst = &c->all[t0 + k];
        double *ck = c->ck ? c->ck + (t0 + k) * c->nck : NULL;
        uint64_t *ick = c->ick ? c->ick + (t0 + k) * c->nck : NULL;
        *dst = g->rows[k];
        dst->ck = ck;
        dst->ick = ick;
        if (ck) memcpy(ck, g->rows[k].ck, c->nck * sizeof *ck);
        if (ick) memcpy(ick, g->rows[k].ick, c->nck * sizeof *ick);
    }
    return CCOMP_OK;
}

/* One token: the symbol of the row whose interval holds the decoder's target. */
static ccomp_status decode_token(const ccomp_ac_model *m, const void *p, size_t V, const qrow *r, ccomp_rc_dec *d,
                                 uint64_t t, uint32_t *sym, ccomp_error *err)
{
    uint32_t target = rc_dec_target_raw(d, m->precision), cum, freq;
    if (target == UINT32_MAX)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                          "token %llu: the stream is not valid for these probabilities (damaged, or another model)",
                          (unsigned long long)t);
    ccomp_ac_row_find(m, p, V, r, target, sym, &cum, &freq);
    /* a damaged stream (or rows rewritten while being read) can point at no symbol's interval */
    if (*sym >= V || freq == 0 || target < cum || target - cum >= freq ||
        (uint64_t)cum + freq > ((uint64_t)1 << m->precision))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT,
                          "token %llu: the stream's target %u falls in no symbol's interval (damaged, or another model)",
                          (unsigned long long)t, target);
    rc_dec_advance_raw(d, cum, freq, m->precision);
    return CCOMP_OK;
}

static ccomp_status unpack_run(void *vctx, void *state, size_t k, ccomp_error *err)
{
    unpack_ctx *c = (unpack_ctx *)vctx;
    qgroup *g = (qgroup *)state;
    const ccomp_ac_info *info = c->info;
    size_t t0 = (size_t)chunk_first(info, (uint32_t)k), V = info->vocab;
    size_t n = (size_t)chunk_count(info, (uint32_t)k), done = 0, j;
    ccomp_rc_dec d;
    ccomp_status st = chunk_open(info, (uint32_t)k, &d, err);
    if (st != CCOMP_OK) return st;
    while (done < n) {
        size_t g_n = n - done < SCAN_GROUP ? n - done : SCAN_GROUP;
        if (c->all == NULL) {
            st = ccomp_ac_group_prepare(c->m, c->rows, V, c->stride, t0 + done, g_n, g, err);
            if (st != CCOMP_OK) return st;
        }
        for (j = 0; j < g_n; j++) {
            size_t t = t0 + done + j;
            uint32_t sym;
            if (c->all == NULL)
                st = decode_token(c->m, g->p[j], V, &g->rows[j], &d, t, &sym, err);
            else
                st = decode_token(c->m, (const uint8_t *)c->rows + t * c->stride * c->es, V, &c->all[t], &d, t, &sym,
                                  err);
            if (st != CCOMP_OK) return st;
            c->symbols[t] = sym;
        }
        done += g_n;
        if ((st = chunk_running(info, (uint32_t)k, &d, err)) != CCOMP_OK) return st;
        if (ccomp_cancelled()) return ccomp_check_cancel(err, "decode");
    }
    return chunk_end(info, (uint32_t)k, &d, ccomp_ac_symbols_crc(0, c->symbols + t0, n), err);
}

ccomp_status ccomp_ac_unpack_rows(const ccomp_ac_info *info, const ccomp_ac_model *m, const void *rows,
                                  size_t row_stride, int64_t *symbols, int threads, ccomp_error *err)
{
    unpack_ctx c;
    ccomp_parallel_ops ops = {unpack_init, unpack_run, unpack_fini};
    ccomp_parallel_ops pre = {unpack_init, prescan_run, unpack_fini};
    size_t T = info->tokens;
    ccomp_status st;
    if ((st = ccomp_ac_model_matches(info, m, err)) != CCOMP_OK) return st;
    if (row_stride < info->vocab)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "row stride %zu is below V = %u", row_stride, info->vocab);
    if (info->chunks > 0 && info->offsets == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "the container was not parsed (ccomp_ac_parse)");
    memset(&c, 0, sizeof c);
    c.info = info;
    c.m = m;
    c.rows = rows;
    c.stride = row_stride;
    c.es = m->dtype == CCOMP_AC_F32 ? sizeof(float) : sizeof(double);
    c.nck = ccomp_ac_num_ck(info->vocab);
    c.symbols = symbols;
    if (!m->logits && T > 0) {
        c.all = (qrow *)malloc(T * sizeof *c.all);
        if (m->rule == CCOMP_AC_RULE_CONSTRICTION)
            c.ck = (double *)malloc(T * c.nck * sizeof *c.ck);
        else
            c.ick = (uint64_t *)malloc(T * c.nck * sizeof *c.ick);
        if (c.all == NULL || (c.ck == NULL && c.ick == NULL))
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
        else
            st = ccomp_parallel_for(threads, (T + SCAN_GROUP - 1) / SCAN_GROUP, &pre, &c, err);
    }
    if (st == CCOMP_OK) st = ccomp_parallel_for(threads, info->chunks, &ops, &c, err);
    free(c.all);
    free(c.ck);
    free(c.ick);
    return st;
}

/* ------------------------------------------------- incremental reader */

void ccomp_ac_reader_init(ccomp_ac_reader *r, const ccomp_ac_info *info)
{
    memset(r, 0, sizeof *r);
    r->info = info;
}

void ccomp_ac_reader_free(ccomp_ac_reader *r)
{
    if (r->scratch) ccomp_ac_group_free((qgroup *)r->scratch);
    free(r->scratch);
    r->scratch = NULL;
}

static ccomp_status reader_ready(ccomp_ac_reader *r, ccomp_error *err)
{
    const ccomp_ac_info *info = r->info;
    if (r->failed) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "an earlier error stopped this decoder");
    if (r->pos >= info->tokens)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "all %llu tokens have been decoded", (unsigned long long)info->tokens);
    if (!r->open) {
        ccomp_status st;
        r->chunk = (uint32_t)(r->pos / info->chunk_tokens);
        if ((st = chunk_open(info, r->chunk, &r->d, err)) != CCOMP_OK) return st;
        r->crc = 0;
        r->open = 1;
    }
    return CCOMP_OK;
}

static ccomp_status reader_fail(ccomp_ac_reader *r, ccomp_status st)
{
    if (st != CCOMP_OK && st != CCOMP_ERR_CANCELLED) r->failed = 1;
    return st;
}

ccomp_status ccomp_ac_reader_target(ccomp_ac_reader *r, uint32_t *target, ccomp_error *err)
{
    ccomp_status st = reader_ready(r, err);
    if (st != CCOMP_OK) return st;
    *target = rc_dec_target_raw(&r->d, r->info->precision);
    if (*target == UINT32_MAX)
        return reader_fail(r, ccomp_fail(err, CCOMP_ERR_CORRUPT,
                                         "token %llu: the stream is not valid for these probabilities (damaged, or "
                                         "another model)",
                                         (unsigned long long)r->pos));
    return CCOMP_OK;
}

/* The token just decoded: symbol CRC, and the chunk checks at its end. */
static ccomp_status reader_step_done(ccomp_ac_reader *r, uint32_t symbol, ccomp_error *err)
{
    const ccomp_ac_info *info = r->info;
    int64_t s = symbol;
    ccomp_status st;
    r->crc = ccomp_ac_symbols_crc(r->crc, &s, 1);
    r->pos++;
    if ((st = chunk_running(info, r->chunk, &r->d, err)) != CCOMP_OK) return reader_fail(r, st);
    if (r->pos == chunk_first(info, r->chunk) + chunk_count(info, r->chunk)) {
        r->open = 0;
        if ((st = chunk_end(info, r->chunk, &r->d, r->crc, err)) != CCOMP_OK) return reader_fail(r, st);
    }
    return CCOMP_OK;
}

ccomp_status ccomp_ac_reader_advance(ccomp_ac_reader *r, uint32_t symbol, uint32_t cum, uint32_t freq,
                                     ccomp_error *err)
{
    uint32_t target;
    int P = r->info->precision;
    ccomp_status st = ccomp_ac_reader_target(r, &target, err);
    if (st != CCOMP_OK) return st;
    if (symbol >= r->info->vocab)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "symbol %u is outside [0, %u)", symbol, r->info->vocab);
    if (freq == 0 || (uint64_t)cum + freq > ((uint64_t)1 << P) || target < cum || target - cum >= freq)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "(cum, freq) = (%u, %u) does not contain the decoder's target %u", cum,
                          freq, target);
    rc_dec_advance_raw(&r->d, cum, freq, P);
    return reader_step_done(r, symbol, err);
}

ccomp_status ccomp_ac_reader_rows(ccomp_ac_reader *r, const ccomp_ac_model *m, const void *rows, size_t n,
                                  size_t row_stride, int64_t *symbols, ccomp_error *err)
{
    const ccomp_ac_info *info = r->info;
    size_t V = info->vocab, done = 0, j;
    uint64_t pos0 = r->pos;
    ccomp_status st;
    qgroup *g;
    if ((st = ccomp_ac_model_matches(info, m, err)) != CCOMP_OK) return st;
    if (n > 0 && r->pos >= info->tokens)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "all %llu tokens have been decoded", (unsigned long long)info->tokens);
    if (n > info->tokens - r->pos)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "%zu rows given but only %llu tokens remain", n,
                          (unsigned long long)(info->tokens - r->pos));
    if (n > 1 && row_stride < V)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "row stride %zu is below V = %zu", row_stride, V);
    if (r->scratch == NULL && (r->scratch = calloc(1, sizeof(qgroup))) == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    g = (qgroup *)r->scratch;
    while (st == CCOMP_OK && done < n) {
        size_t g_n = n - done < SCAN_GROUP ? n - done : SCAN_GROUP;
        st = ccomp_ac_group_prepare(m, rows, V, row_stride, done, g_n, g, err);
        for (j = 0; st == CCOMP_OK && j < g_n; j++) {
            uint32_t sym = 0;
            if ((st = reader_ready(r, err)) != CCOMP_OK) break;
            st = decode_token(m, g->p[j], V, &g->rows[j], &r->d, r->pos, &sym, err);
            if (st != CCOMP_OK) break;
            symbols[done + j] = sym;
            st = reader_step_done(r, sym, err);
        }
        done += g_n;
        if (st == CCOMP_OK && ccomp_cancelled()) st = ccomp_check_cancel(err, "decode");
    }
    /* tokens consumed by a call that fails are lost to the caller: the reader cannot go on */
    if (st != CCOMP_OK && (r->pos != pos0 || st == CCOMP_ERR_CORRUPT)) r->failed = 1;
    return st;
}

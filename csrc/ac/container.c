/* The CCAC container (ccomp/ac.h): chunked range-coder streams with a CRC. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ccomp/parallel.h"
#include "quantize.h"
#include "rc_impl.h"

ccomp_status ccomp_ac_parse(const uint8_t *data, size_t n, ccomp_ac_info *info, ccomp_error *err)
{
    uint64_t need, sum = 0, expect_chunks;
    uint32_t k;
    memset(info, 0, sizeof *info);
    if (n < CCOMP_AC_HEADER_BYTES + 4u)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "%zu bytes is too short for a ccomp.ac container (at least %u)", n,
                          CCOMP_AC_HEADER_BYTES + 4u);
    if (memcmp(data, "CCAC", 4) != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "not a ccomp.ac container (bad magic)");
    if (rc_crc32(data, n - 4u) != rc_load_le32(data + n - 4u))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "CRC-32 mismatch: the container is damaged or truncated");
    info->version = data[4];
    info->precision = data[5];
    info->rule = data[6];
    info->flags = data[7];
    info->tokens = rc_load_le64(data + 8);
    info->chunk_tokens = rc_load_le64(data + 16);
    info->chunks = rc_load_le32(data + 24);
    info->vocab = rc_load_le32(data + 28);
    if (info->version != (int)CCOMP_AC_VERSION)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "unsupported container version %d (this build reads %u)",
                          info->version, CCOMP_AC_VERSION);
    if (info->precision < CCOMP_AC_MIN_PRECISION || info->precision > CCOMP_AC_MAX_PRECISION ||
        (info->rule != CCOMP_AC_RULE_CONSTRICTION && info->rule != CCOMP_AC_RULE_NACRITH) || info->flags != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid container parameters");
    if (info->chunk_tokens == 0 && info->tokens != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid chunk size 0");
    expect_chunks = info->tokens == 0 ? 0 : (info->tokens - 1u) / info->chunk_tokens + 1u;
    if (expect_chunks != info->chunks)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk count %u does not match %llu tokens in chunks of %llu",
                          info->chunks, (unsigned long long)info->tokens, (unsigned long long)info->chunk_tokens);
    need = (uint64_t)CCOMP_AC_HEADER_BYTES + 4u * (uint64_t)info->chunks + 4u;
    if (need > n) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk table runs past the end");
    info->table = data + CCOMP_AC_HEADER_BYTES;
    info->payload = info->table + 4u * (size_t)info->chunks;
    for (k = 0; k < info->chunks; k++) {
        uint32_t len = rc_load_le32(info->table + 4u * k);
        if (len % 4u) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk %u length %u is not whole words", k, len);
        sum += len;
    }
    if (need + sum != n) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk lengths do not add up to the size");
    return CCOMP_OK;
}

void ccomp_ac_chunk(const ccomp_ac_info *info, uint32_t k, size_t *offset, size_t *length)
{
    size_t off = 0;
    uint32_t i;
    for (i = 0; i < k; i++) off += rc_load_le32(info->table + 4u * i);
    *offset = (size_t)(info->payload - (info->table - CCOMP_AC_HEADER_BYTES)) + off;
    *length = rc_load_le32(info->table + 4u * k);
}

/* ------------------------------------------------------------- packing */

typedef struct pack_ctx {
    int precision;
    const uint32_t *cum, *freq;
    size_t T, chunk;
    ccomp_rc_enc *enc; /* one per chunk */
} pack_ctx;

static ccomp_status pack_run(void *vctx, void *state, size_t k, ccomp_error *err)
{
    pack_ctx *c = (pack_ctx *)vctx;
    size_t t0 = k * c->chunk, n = c->T - t0 < c->chunk ? c->T - t0 : c->chunk;
    ccomp_status st;
    (void)state;
    st = ccomp_rc_encode_many(&c->enc[k], c->cum + t0, c->freq + t0, n, c->precision, err);
    if (st != CCOMP_OK && err && err->code == CCOMP_ERR_VALUE) {
        /* name the token in the whole sequence, not in the chunk */
        size_t i;
        for (i = 0; i < n; i++) {
            uint64_t total = (uint64_t)1 << c->precision;
            if (c->freq[t0 + i] == 0 || (uint64_t)c->cum[t0 + i] + c->freq[t0 + i] > total)
                return ccomp_fail(err, CCOMP_ERR_VALUE,
                                  "token %zu: (cum, freq) = (%u, %u) is not a nonempty interval of [0, 2^%d)",
                                  t0 + i, c->cum[t0 + i], c->freq[t0 + i], c->precision);
        }
    }
    return st;
}

ccomp_status ccomp_ac_pack(int precision, int rule, uint32_t vocab, const uint32_t *cum, const uint32_t *freq,
                           size_t T, size_t chunk_tokens, int threads, uint8_t **out, size_t *out_len,
                           ccomp_error *err)
{
    pack_ctx c;
    ccomp_parallel_ops ops = {NULL, pack_run, NULL};
    size_t nchunks, k, total, pos;
    uint8_t *buf;
    ccomp_status st;
    *out = NULL;
    *out_len = 0;
    if (precision < CCOMP_AC_MIN_PRECISION || precision > CCOMP_AC_MAX_PRECISION)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "precision must be between %d and %d bits, got %d",
                          CCOMP_AC_MIN_PRECISION, CCOMP_AC_MAX_PRECISION, precision);
    if (chunk_tokens == 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "chunk size must be at least 1 token");
    nchunks = T == 0 ? 0 : (T - 1u) / chunk_tokens + 1u;
    if (nchunks > UINT32_MAX) return ccomp_fail(err, CCOMP_ERR_VALUE, "too many chunks (%zu)", nchunks);
    c.precision = precision;
    c.cum = cum;
    c.freq = freq;
    c.T = T;
    c.chunk = chunk_tokens;
    c.enc = (ccomp_rc_enc *)calloc(nchunks ? nchunks : 1u, sizeof *c.enc);
    if (c.enc == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    for (k = 0; k < nchunks; k++) ccomp_rc_enc_init(&c.enc[k]);
    st = ccomp_parallel_for(threads, nchunks, &ops, &c, err);
    if (st == CCOMP_OK) {
        total = CCOMP_AC_HEADER_BYTES + 4u * nchunks + 4u;
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
            buf[5] = (uint8_t)precision;
            buf[6] = (uint8_t)rule;
            buf[7] = 0;
            rc_store_le64(buf + 8, T);
            rc_store_le64(buf + 16, chunk_tokens);
            rc_store_le32(buf + 24, (uint32_t)nchunks);
            rc_store_le32(buf + 28, vocab);
            pos = CCOMP_AC_HEADER_BYTES + 4u * nchunks;
            for (k = 0; k < nchunks; k++) {
                size_t bytes = 4u * ccomp_rc_enc_sealed_words(&c.enc[k]);
                rc_store_le32(buf + CCOMP_AC_HEADER_BYTES + 4u * k, (uint32_t)bytes);
                ccomp_rc_enc_seal_to(&c.enc[k], buf + pos);
                pos += bytes;
            }
            rc_store_le32(buf + pos, rc_crc32(buf, pos));
            *out = buf;
            *out_len = total;
        }
    }
    for (k = 0; k < nchunks; k++) ccomp_rc_enc_free(&c.enc[k]);
    free(c.enc);
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
    size_t *offsets; /* byte offset of each chunk from the container start */
    const uint8_t *base;
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

static ccomp_status unpack_run(void *vctx, void *state, size_t k, ccomp_error *err)
{
    unpack_ctx *c = (unpack_ctx *)vctx;
    qgroup *g = (qgroup *)state;
    const ccomp_ac_info *info = c->info;
    size_t t0 = k * info->chunk_tokens, T = info->tokens, V = info->vocab;
    size_t n = T - t0 < info->chunk_tokens ? T - t0 : info->chunk_tokens, done = 0, j;
    size_t len = rc_load_le32(info->table + 4u * k);
    int P = info->precision;
    ccomp_rc_dec d;
    ccomp_status st = ccomp_rc_dec_init(&d, c->base + c->offsets[k], len, err);
    if (st != CCOMP_OK) return st;
    while (done < n) {
        size_t g_n = n - done < SCAN_GROUP ? n - done : SCAN_GROUP;
        if (c->all == NULL) {
            st = ccomp_ac_group_prepare(c->m, c->rows, V, c->stride, t0 + done, g_n, g, err);
            if (st != CCOMP_OK) return st;
        }
        for (j = 0; j < g_n; j++) {
            size_t t = t0 + done + j;
            uint32_t target = rc_dec_target_raw(&d, P), sym, cum, freq;
            if (target == UINT32_MAX)
                return ccomp_fail(err, CCOMP_ERR_CORRUPT, "token %zu: the stream is not valid for these probabilities",
                                  t);
            if (c->all == NULL)
                ccomp_ac_row_find(c->m, g->p[j], V, &g->rows[j], target, &sym, &cum, &freq);
            else
                ccomp_ac_row_find(c->m, (const uint8_t *)c->rows + t * c->stride * c->es, V, &c->all[t], target, &sym,
                                  &cum, &freq);
            rc_dec_advance_raw(&d, cum, freq, P);
            c->symbols[t] = sym;
        }
        done += g_n;
        if (d.overread > 2)
            return ccomp_fail(err, CCOMP_ERR_CORRUPT, "chunk %zu: the stream ends before its tokens", k);
    }
    return CCOMP_OK;
}

ccomp_status ccomp_ac_unpack_rows(const ccomp_ac_info *info, const ccomp_ac_model *m, const void *rows,
                                  size_t row_stride, int64_t *symbols, int threads, ccomp_error *err)
{
    unpack_ctx c;
    ccomp_parallel_ops ops = {unpack_init, unpack_run, unpack_fini};
    ccomp_parallel_ops pre = {unpack_init, prescan_run, unpack_fini};
    size_t k, off, T = info->tokens;
    ccomp_status st;
    if (m->precision != info->precision || m->rule != info->rule)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "the model's precision/rule (%d, %d) differ from the container's (%d, %d)",
                          m->precision, m->rule, info->precision, info->rule);
    if ((st = ccomp_ac_model_check(m, info->vocab, err)) != CCOMP_OK) return st;
    if (row_stride < info->vocab)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "row stride %zu is below V = %u", row_stride, info->vocab);
    memset(&c, 0, sizeof c);
    c.info = info;
    c.m = m;
    c.rows = rows;
    c.stride = row_stride;
    c.es = m->dtype == CCOMP_AC_F32 ? sizeof(float) : sizeof(double);
    c.nck = ccomp_ac_num_ck(info->vocab);
    c.symbols = symbols;
    c.base = info->table - CCOMP_AC_HEADER_BYTES;
    c.offsets = (size_t *)malloc((info->chunks ? info->chunks : 1u) * sizeof *c.offsets);
    if (c.offsets == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory");
    off = (size_t)(info->payload - c.base);
    for (k = 0; k < info->chunks; k++) {
        c.offsets[k] = off;
        off += rc_load_le32(info->table + 4u * k);
    }
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
    free(c.offsets);
    return st;
}

/* C tests of the ccomp.ac core: the AVX2 row scan against the plain one
 * (bit for bit, including NaN/negative flags), range-coder round trips,
 * Equal-Info-Windows round trips, and damaged containers (truncations, bit
 * flips, random bytes) decoded without crashing.  Usage: test_ac [--quick] */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../../csrc/ac/quantize.h"
#include "../../csrc/ac/rc_impl.h"
#include "check.h"
#include "test_util.h"

static float rnd_prob(uint64_t *r)
{
    size_t k = rnd(r, 100);
    if (k < 10) return 0.0f;
    if (k < 20) return (float)ldexp(1.0, -(int)rnd(r, 140)); /* tiny, some subnormal */
    return (float)(splitmix(r) >> 11) * 0x1p-53f;
}

static void test_scan8(int quick)
{
    uint64_t r = 1;
    size_t trials = quick ? 30 : 300, t;
    ccomp_ac_model m = {CCOMP_AC_RULE_CONSTRICTION, 24, CCOMP_AC_F32, 0, 1.0};
    if (!ccomp_ac_scan8_f32_available()) {
        printf("scan8: AVX2 not available, skipped\n");
        return;
    }
    for (t = 0; t < trials; t++) {
        size_t V = rnd_range(&r, 2, 3000), k, nck = ccomp_ac_num_ck(V), j;
        float *rows[8];
        qrow a[8], b[8];
        double *cka = (double *)malloc(8 * nck * sizeof(double)), *ckb = (double *)malloc(8 * nck * sizeof(double));
        for (k = 0; k < 8; k++) {
            size_t i;
            rows[k] = (float *)malloc(V * sizeof(float));
            for (i = 0; i < V; i++) rows[k][i] = rnd_prob(&r);
            if (rnd(&r, 10) == 0) rows[k][rnd(&r, V)] = rnd(&r, 2) ? NAN : -1.0f;
            a[k].ck = cka + k * nck;
            b[k].ck = ckb + k * nck;
            ccomp_ac_scan_ref(&m, rows[k], V, &a[k]);
        }
        ccomp_ac_scan8_f32((const float *const *)rows, V, b);
        for (k = 0; k < 8; k++) {
            CHECK(a[k].bad == b[k].bad, "scan8 bad flag V=%zu lane %zu", V, k);
            if (a[k].bad) continue;
            CHECK(a[k].S == b[k].S && a[k].c_last == b[k].c_last, "scan8 sums V=%zu lane %zu: %.9g vs %.9g", V, k,
                  a[k].S, b[k].S);
            for (j = 0; j < nck; j++) CHECK(a[k].ck[j] == b[k].ck[j], "scan8 checkpoint %zu V=%zu lane %zu", j, V, k);
        }
        for (k = 0; k < 8; k++) free(rows[k]);
        free(cka);
        free(ckb);
    }
    printf("scan8: %zu groups of 8 rows identical to the plain scan\n", trials);
}

static void test_coder(int quick)
{
    uint64_t r = 2;
    size_t trials = quick ? 20 : 200, t;
    for (t = 0; t < trials; t++) {
        int P = (int)rnd_range(&r, CCOMP_AC_MIN_PRECISION, CCOMP_AC_MAX_PRECISION);
        size_t n = rnd(&r, 5000), i, nw;
        uint64_t total = (uint64_t)1 << P;
        uint32_t *cum = (uint32_t *)malloc((n + 1) * 4), *freq = (uint32_t *)malloc((n + 1) * 4);
        uint8_t *buf;
        ccomp_rc_enc e;
        ccomp_rc_dec d;
        ccomp_error err;
        for (i = 0; i < n; i++) {
            /* a mix of near-certain, typical and rare symbols */
            size_t kind = rnd(&r, 3);
            uint64_t f = kind == 0 ? total - rnd_range(&r, 1, 16) : (kind == 1 ? rnd_range(&r, 1, total / 2) : rnd_range(&r, 1, 4));
            freq[i] = (uint32_t)f;
            cum[i] = (uint32_t)rnd(&r, total - f + 1);
        }
        ccomp_rc_enc_init(&e);
        CHECK(ccomp_rc_encode_many(&e, cum, freq, n, P, &err) == CCOMP_OK, "encode: %s", err.msg);
        nw = ccomp_rc_enc_sealed_words(&e);
        buf = (uint8_t *)malloc(4 * nw + 4);
        ccomp_rc_enc_seal_to(&e, buf);
        CHECK(ccomp_rc_dec_init(&d, buf, 4 * nw, &err) == CCOMP_OK, "dec init");
        for (i = 0; i < n; i++) {
            uint32_t tg;
            if (ccomp_rc_dec_target(&d, P, &tg, &err) != CCOMP_OK || tg < cum[i] || tg - cum[i] >= freq[i]) {
                CHECK(0, "coder round trip P=%d symbol %zu of %zu", P, i, n);
                break;
            }
            rc_dec_advance_raw(&d, cum[i], freq[i], P);
        }
        CHECK(ccomp_rc_dec_exhausted(&d), "decoder not exhausted at the end (P=%d n=%zu)", P, n);
        ccomp_rc_enc_free(&e);
        free(buf);
        free(cum);
        free(freq);
    }
    printf("coder: %zu random streams round-trip\n", trials);
}

static void test_eiw(int quick)
{
    uint64_t r = 3;
    size_t trials = quick ? 50 : 500, t;
    for (t = 0; t < trials; t++) {
        unsigned bits = (unsigned)rnd_range(&r, 16, 128);
        int P = (int)rnd_range(&r, 12, 24);
        uint64_t total = (uint64_t)1 << P;
        uint32_t cum[64], freq[64];
        size_t n = 0, i;
        ccomp_eiw w;
        uint8_t out[32];
        ccomp_eiw_dec d;
        ccomp_eiw_reset(&w);
        for (;;) {
            uint64_t f = rnd_range(&r, total / 64 + 1, total - 1);
            uint32_t c = (uint32_t)rnd(&r, total - f + 1);
            if (n == 64 || !ccomp_eiw_try_encode(&w, c, (uint32_t)f, P, bits)) break;
            cum[n] = c;
            freq[n] = (uint32_t)f;
            n++;
        }
        CHECK(ccomp_eiw_terminated_bits(&w) <= bits, "window over budget");
        memset(out, 0xAA, sizeof out);
        ccomp_eiw_finish(&w, bits, out);
        ccomp_eiw_dec_init(&d, out, bits);
        for (i = 0; i < n; i++) {
            uint32_t tg = ccomp_eiw_dec_target(&d, P);
            if (tg < cum[i] || tg - cum[i] >= freq[i]) {
                CHECK(0, "window round trip bits=%u P=%d symbol %zu", bits, P, i);
                break;
            }
            ccomp_eiw_dec_advance(&d, cum[i], freq[i], P);
        }
    }
    printf("eiw: %zu windows round-trip\n", trials);
}

/* (cum, freq) pairs of a skewed model: mostly likely symbols, some rare ones
 * (the generator of the golden windows below, written the same way in Python). */
static void eiw_pairs(uint64_t seed, size_t n, int P, uint32_t *cum, uint32_t *freq)
{
    uint64_t r = seed, total = (uint64_t)1 << P;
    size_t i;
    for (i = 0; i < n; i++) {
        size_t k = rnd(&r, 8);
        uint64_t f = 1 + rnd(&r, total >> (1 + 3 * (k == 0) + 9 * (k == 1)));
        freq[i] = (uint32_t)f;
        cum[i] = (uint32_t)rnd(&r, total - f + 1);
    }
}

/* The windows of the one-symbol-at-a-time coder: try, close when full, retry in a fresh window. */
static int eiw_pack_stepwise(const uint32_t *cum, const uint32_t *freq, size_t n, int P, unsigned bits,
                             uint8_t *win, int64_t *counts, size_t *nw)
{
    size_t wb = (bits + 7u) / 8u, t;
    ccomp_eiw w;
    *nw = 0;
    counts[0] = 0;
    ccomp_eiw_reset(&w);
    for (t = 0; t < n; t++) {
        if (ccomp_eiw_try_encode(&w, cum[t], freq[t], P, bits)) {
            counts[*nw]++;
            continue;
        }
        if (counts[*nw] == 0) return -1;
        ccomp_eiw_finish(&w, bits, win + *nw * wb);
        counts[++*nw] = 0;
        ccomp_eiw_reset(&w);
        t--;
    }
    if (counts[*nw] > 0) ccomp_eiw_finish(&w, bits, win + (*nw)++ * wb);
    return 0;
}

static uint32_t counts_crc(const int64_t *counts, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    size_t i;
    for (i = 0; i < n; i++) {
        uint8_t b[8];
        rc_store_le64(b, (uint64_t)counts[i]);
        c = crc32(c, b, 8);
    }
    return (uint32_t)c;
}

/* ccomp_eiw_pack: the windows ccomp.ac.equal_info_windows returned before the packing moved into the core
 * (golden bytes and CRCs), the same windows as the stepwise coder, a round trip, and its errors. */
static void test_eiw_pack(int quick)
{
    static const struct {
        uint64_t seed;
        size_t n;
        int P;
        unsigned bits;
        size_t windows;
        uint32_t win_crc, counts_crc;
    } golden[] = {{11, 48, 16, 24, 8, 0x48010b9cu, 0x087a4174u},
                  {12, 5000, 20, 64, 326, 0xefe4d03cu, 0x8a4e0c6du},
                  {13, 3000, 24, 256, 48, 0x240223ccu, 0x0330b83au}};
    static const uint8_t golden11[24] = {0x07, 0x45, 0x26, 0xa0, 0xdd, 0x52, 0x1c, 0xfb, 0x94, 0xe5, 0x23, 0x00,
                                         0xe1, 0xd2, 0x46, 0x98, 0xf3, 0x00, 0xa8, 0xc9, 0xf0, 0xa7, 0xf8, 0x00};
    static const int64_t counts11[8] = {7, 6, 7, 6, 5, 8, 4, 5};
    size_t nmax = 5000, g, t, trials = quick ? 40 : 400;
    uint32_t *cum = (uint32_t *)malloc(nmax * 4), *freq = (uint32_t *)malloc(nmax * 4);
    uint8_t *ref = (uint8_t *)malloc(nmax * 32), *win = NULL;
    int64_t *rcounts = (int64_t *)malloc((nmax + 1) * sizeof(int64_t)), *counts = NULL;
    size_t nw = 0, rnw;
    uint64_t r = 5;
    ccomp_error err;
    for (g = 0; g < sizeof golden / sizeof golden[0]; g++) {
        eiw_pairs(golden[g].seed, golden[g].n, golden[g].P, cum, freq);
        if (ccomp_eiw_pack(cum, freq, golden[g].n, golden[g].P, golden[g].bits, &win, &counts, &nw, &err) != CCOMP_OK) {
            CHECK(0, "eiw_pack golden %zu: %s", g, err.msg);
            continue;
        }
        CHECK(nw == golden[g].windows, "eiw_pack golden %zu: %zu windows, expected %zu", g, nw, golden[g].windows);
        CHECK(ccomp_crc32(win, nw * ((golden[g].bits + 7u) / 8u)) == golden[g].win_crc,
              "eiw_pack golden %zu: window bytes", g);
        CHECK(counts_crc(counts, nw) == golden[g].counts_crc, "eiw_pack golden %zu: counts", g);
        if (g == 0 && nw == 8) {
            CHECK(memcmp(win, golden11, sizeof golden11) == 0, "eiw_pack golden bytes");
            CHECK(memcmp(counts, counts11, sizeof counts11) == 0, "eiw_pack golden counts");
        }
        free(win);
        free(counts);
    }
    /* random models: the stepwise coder's windows, and each window decodes to its symbols */
    for (t = 0; t < trials; t++) {
        int P = (int)rnd_range(&r, CCOMP_AC_MIN_PRECISION, CCOMP_AC_MAX_PRECISION);
        unsigned bits = (unsigned)rnd_range(&r, 24, CCOMP_EIW_MAX_BITS);
        size_t n = rnd(&r, 2000), wb = (bits + 7u) / 8u, k, pos = 0, i;
        eiw_pairs(splitmix(&r), n, P, cum, freq);
        if (eiw_pack_stepwise(cum, freq, n, P, bits, ref, rcounts, &rnw) < 0) {
            CHECK(ccomp_eiw_pack(cum, freq, n, P, bits, &win, &counts, &nw, &err) == CCOMP_ERR_VALUE,
                  "eiw_pack accepted a symbol too large for %u bits", bits);
            CHECK(win == NULL && counts == NULL && nw == 0, "eiw_pack failed but returned windows");
            continue;
        }
        if (ccomp_eiw_pack(cum, freq, n, P, bits, &win, &counts, &nw, &err) != CCOMP_OK) {
            CHECK(0, "eiw_pack P=%d bits=%u n=%zu: %s", P, bits, n, err.msg);
            continue;
        }
        CHECK(nw == rnw && memcmp(win, ref, nw * wb) == 0 && memcmp(counts, rcounts, nw * sizeof *counts) == 0,
              "eiw_pack differs from the stepwise coder (P=%d bits=%u n=%zu)", P, bits, n);
        for (k = 0; k < nw; k++) {
            ccomp_eiw_dec d;
            ccomp_eiw_dec_init(&d, win + k * wb, bits);
            for (i = 0; i < (size_t)counts[k]; i++, pos++) {
                uint32_t tg = ccomp_eiw_dec_target(&d, P);
                if (tg < cum[pos] || tg - cum[pos] >= freq[pos]) {
                    CHECK(0, "eiw_pack round trip P=%d bits=%u symbol %zu", P, bits, pos);
                    k = nw;
                    break;
                }
                ccomp_eiw_dec_advance(&d, cum[pos], freq[pos], P);
            }
        }
        CHECK(pos == n || test_failures, "eiw_pack windows hold %zu of %zu symbols", pos, n);
        free(win);
        free(counts);
    }
    /* errors name the symbol; nothing is returned */
    eiw_pairs(14, 2000, 12, cum, freq);
    CHECK(ccomp_eiw_pack(cum, freq, 2000, 12, 13, &win, &counts, &nw, &err) == CCOMP_ERR_VALUE &&
              strstr(err.msg, "symbol 8 alone needs more than 13 bits") != NULL,
          "eiw_pack: symbol too large: %s", err.msg);
    CHECK(win == NULL && counts == NULL && nw == 0, "eiw_pack failed but returned windows");
    eiw_pairs(15, 100, 16, cum, freq);
    freq[37] = 0;
    CHECK(ccomp_eiw_pack(cum, freq, 100, 16, 64, &win, &counts, &nw, &err) == CCOMP_ERR_VALUE &&
              strstr(err.msg, "symbol 37:") != NULL,
          "eiw_pack: empty interval: %s", err.msg);
    freq[37] = 1;
    cum[37] = 65535;
    freq[38] = 2;
    cum[38] = 65535;
    CHECK(ccomp_eiw_pack(cum, freq, 100, 16, 64, &win, &counts, &nw, &err) == CCOMP_ERR_VALUE &&
              strstr(err.msg, "symbol 38:") != NULL,
          "eiw_pack: interval past 2^P: %s", err.msg);
    CHECK(ccomp_eiw_pack(cum, freq, 10, 16, 0, &win, &counts, &nw, &err) == CCOMP_ERR_VALUE, "eiw_pack: 0 bits");
    CHECK(ccomp_eiw_pack(cum, freq, 10, 16, CCOMP_EIW_MAX_BITS + 1, &win, &counts, &nw, &err) == CCOMP_ERR_VALUE,
          "eiw_pack: too many bits");
    CHECK(ccomp_eiw_pack(cum, freq, 10, 40, 64, &win, &counts, &nw, &err) == CCOMP_ERR_VALUE, "eiw_pack: precision");
    CHECK(ccomp_eiw_pack(cum, freq, 0, 16, 64, &win, &counts, &nw, &err) == CCOMP_OK && nw == 0, "eiw_pack: empty");
    free(win);
    free(counts);
    printf("eiw_pack: golden windows, %zu random models as the stepwise coder, round trips and errors\n", trials);
    free(cum);
    free(freq);
    free(ref);
    free(rcounts);
}

/* A raw stream of symbols coded under rows, decoded back by ccomp_rc_dec_rows (a few rows at a time, one
 * scratch for all calls) and by ccomp_rc_dec_cdfs from the same rows' CDFs. */
static void test_raw_rows(int quick)
{
    uint64_t r = 6;
    size_t trials = quick ? 10 : 60, t;
    for (t = 0; t < trials; t++) {
        size_t T = rnd_range(&r, 0, 200), V = rnd_range(&r, 2, 300), i, j, done = 0;
        int logits = (int)rnd(&r, 2);
        /* float64 rows: float32 under the constriction rule leaves tiny symbols empty at high precision */
        ccomp_ac_model m = {(int)rnd(&r, 2), (int)rnd_range(&r, 16, 28), CCOMP_AC_F64, logits, logits ? 0.7 : 1.0};
        double *rows = (double *)malloc((T * V + 1) * sizeof(double));
        uint32_t *cum = (uint32_t *)malloc((T + 1) * 4), *freq = (uint32_t *)malloc((T + 1) * 4);
        uint32_t *cdfs = (uint32_t *)malloc((T * (V + 1) + 1) * 4);
        int64_t *sym = (int64_t *)malloc((T + 1) * sizeof(int64_t));
        int64_t *out = (int64_t *)malloc((T + 1) * sizeof(int64_t));
        uint8_t *buf;
        void *scratch = NULL;
        ccomp_rc_enc e;
        ccomp_rc_dec d, d0;
        ccomp_error err;
        for (i = 0; i < T; i++) {
            for (j = 0; j < V; j++)
                rows[i * V + j] = logits ? (double)rnd(&r, 2000) * 0.01 - 10.0 : rnd_prob(&r) + 1e-6;
            sym[i] = (int64_t)rnd(&r, V);
        }
        CHECK(ccomp_ac_lookup(&m, rows, T, V, V, sym, cum, freq, 1, &err) == CCOMP_OK, "lookup: %s", err.msg);
        for (i = 0; i < T; i++)
            CHECK(ccomp_ac_cdf(&m, rows + i * V, V, cdfs + i * (V + 1), i, &err) == CCOMP_OK, "cdf: %s", err.msg);
        ccomp_rc_enc_init(&e);
        CHECK(ccomp_rc_encode_many(&e, cum, freq, T, m.precision, &err) == CCOMP_OK, "encode: %s", err.msg);
        buf = (uint8_t *)malloc(4 * ccomp_rc_enc_sealed_words(&e) + 4);
        ccomp_rc_enc_seal_to(&e, buf);
        CHECK(ccomp_rc_dec_init(&d, buf, 4 * ccomp_rc_enc_sealed_words(&e), &err) == CCOMP_OK, "dec init");
        d0 = d;
        memset(out, 0xff, (T + 1) * sizeof *out);
        while (done < T) {
            size_t k = rnd_range(&r, 1, 20);
            if (k > T - done) k = T - done;
            if (ccomp_rc_dec_rows(&d, &m, rows + done * V, k, V, V, out + done, &scratch, &err) != CCOMP_OK) {
                CHECK(0, "rc_dec_rows: %s", err.msg);
                break;
            }
            done += k;
        }
        CHECK(memcmp(out, sym, T * sizeof *sym) == 0, "rc_dec_rows round trip (T=%zu V=%zu)", T, V);
        CHECK(ccomp_rc_dec_exhausted(&d), "rc_dec_rows: stream not used up");
        d = d0;
        memset(out, 0xff, (T + 1) * sizeof *out);
        CHECK(ccomp_rc_dec_cdfs(&d, cdfs, T, V + 1, m.precision, out, &err) == CCOMP_OK, "rc_dec_cdfs: %s", err.msg);
        CHECK(memcmp(out, sym, T * sizeof *sym) == 0, "rc_dec_cdfs round trip (T=%zu V=%zu)", T, V);
        if (T > 0) {
            /* a CDF that does not increase is refused before anything is decoded */
            size_t bad = rnd(&r, T);
            d = d0;
            cdfs[bad * (V + 1) + 1] = 0;
            CHECK(ccomp_rc_dec_cdfs(&d, cdfs, T, V + 1, m.precision, out, &err) == CCOMP_ERR_VALUE &&
                      memcmp(&d, &d0, sizeof d) == 0,
                  "rc_dec_cdfs accepted a flat CDF");
            cdfs[bad * (V + 1) + V] = 5;
            CHECK(ccomp_rc_dec_cdfs(&d, cdfs, T, V + 1, m.precision, out, &err) == CCOMP_ERR_VALUE,
                  "rc_dec_cdfs accepted a CDF that does not end at 2^P");
        }
        CHECK(ccomp_rc_dec_cdfs(&d, cdfs, T, 1, m.precision, out, &err) == CCOMP_ERR_VALUE, "rc_dec_cdfs: W = 1");
        CHECK(ccomp_rc_dec_cdfs(&d, cdfs, T, V + 1, 40, out, &err) == CCOMP_ERR_VALUE, "rc_dec_cdfs: precision");
        m.precision = 40;
        CHECK(ccomp_rc_dec_rows(&d, &m, rows, T, V, V, out, &scratch, &err) == CCOMP_ERR_VALUE,
              "rc_dec_rows: precision");
        ccomp_rc_rows_scratch_free(&scratch);
        CHECK(scratch == NULL, "scratch not released");
        ccomp_rc_enc_free(&e);
        free(buf);
        free(rows);
        free(cum);
        free(freq);
        free(cdfs);
        free(sym);
        free(out);
    }
    printf("raw rows: %zu streams decoded from rows and from CDFs\n", trials);
}

/* A container of real-looking rows, then damaged copies of it. */
static void test_damaged(int quick)
{
    uint64_t r = 4;
    size_t T = 300, V = 97, i, j, trials = quick ? 300 : 5000, t;
    float *rows = (float *)malloc(T * V * sizeof(float));
    int64_t *sym = (int64_t *)malloc(T * sizeof(int64_t)), *out = (int64_t *)malloc(T * sizeof(int64_t));
    uint32_t *cum = (uint32_t *)malloc(T * 4), *freq = (uint32_t *)malloc(T * 4);
    uint8_t *data = NULL, *bad;
    size_t n = 0;
    ccomp_ac_model m = {CCOMP_AC_RULE_CONSTRICTION, 24, CCOMP_AC_F32, 0, 1.0};
    ccomp_ac_info info;
    ccomp_error err;
    for (i = 0; i < T; i++) {
        for (j = 0; j < V; j++) rows[i * V + j] = rnd_prob(&r) + 1e-6f;
        sym[i] = (int64_t)rnd(&r, V - 1);
    }
    CHECK(ccomp_ac_lookup(&m, rows, T, V, V, sym, cum, freq, 2, &err) == CCOMP_OK, "lookup: %s", err.msg);
    CHECK(ccomp_ac_pack(&m, (uint32_t)V, sym, cum, freq, T, 64, 2, &data, &n, &err) == CCOMP_OK, "pack");
    CHECK(ccomp_ac_parse(data, n, &info, &err) == CCOMP_OK, "parse");
    CHECK(ccomp_ac_unpack_rows(&info, &m, rows, V, out, 2, &err) == CCOMP_OK, "unpack: %s", err.msg);
    CHECK(memcmp(out, sym, T * sizeof *sym) == 0, "container round trip");
    {
        /* the incremental reader, a few rows at a time, gives the same tokens */
        ccomp_ac_reader rd;
        float keep[97];
        size_t done = 0;
        ccomp_ac_reader_init(&rd, &info);
        memset(out, 0xff, T * sizeof *out);
        while (done < T) {
            size_t k = T - done < 7 ? T - done : 7;
            CHECK(ccomp_ac_reader_rows(&rd, &m, rows + done * V, k, V, out + done, &err) == CCOMP_OK, "reader: %s",
                  err.msg);
            done += k;
        }
        CHECK(memcmp(out, sym, T * sizeof *sym) == 0, "reader round trip");
        ccomp_ac_reader_free(&rd);
        /* one row's probabilities shifted by 0.1%: a CRC mismatch, never other tokens as success */
        memcpy(keep, rows + 5 * V, sizeof keep);
        for (j = 0; j < V; j++) rows[5 * V + j] *= j < V / 2 ? 1.001f : 0.999f;
        CHECK(ccomp_ac_unpack_rows(&info, &m, rows, V, out, 2, &err) == CCOMP_ERR_CORRUPT, "perturbed model accepted");
        ccomp_ac_reader_init(&rd, &info);
        CHECK(ccomp_ac_reader_rows(&rd, &m, rows, T, V, out, &err) == CCOMP_ERR_CORRUPT, "reader: perturbed model");
        ccomp_ac_reader_free(&rd);
        memcpy(rows + 5 * V, keep, sizeof keep);
    }
    ccomp_ac_info_free(&info);
    bad = (uint8_t *)malloc(n + 64);
    for (t = 0; t < trials; t++) {
        size_t len = n;
        memcpy(bad, data, n);
        switch (rnd(&r, 3)) {
        case 0: len = rnd(&r, n); break;
        case 1: bad[rnd(&r, n)] ^= (uint8_t)(1u << rnd(&r, 8)); break;
        default:
            len = rnd(&r, n + 64);
            for (i = 0; i < len; i++) bad[i] = (uint8_t)splitmix(&r);
            if (len >= 4 && rnd(&r, 2)) memcpy(bad, "CCAC", 4);
        }
        /* a damaged container must never parse (the CRC covers it) */
        CHECK(ccomp_ac_parse(bad, len, &info, &err) == CCOMP_ERR_CORRUPT, "damaged container accepted");
        ccomp_ac_info_free(&info);
        /* the bare coder on damaged words decodes within bounds or reports corruption */
        {
            ccomp_rc_dec d;
            if (ccomp_rc_dec_init(&d, bad, len / 4 * 4, &err) == CCOMP_OK) {
                for (i = 0; i < 50; i++) {
                    uint32_t tg;
                    if (ccomp_rc_dec_target(&d, 24, &tg, &err) != CCOMP_OK) break;
                    {
                        uint32_t c, f, s;
                        qscratch sc;
                        const void *p;
                        memset(&sc, 0, sizeof sc);
                        if (ccomp_ac_row_prepare(&m, rows + (i % T) * V, V, &sc, &p, i, &err) == CCOMP_OK) {
                            ccomp_ac_row_find(&m, p, V, &sc.row, tg, &s, &c, &f);
                            CHECK(s < V && f > 0 && c <= tg && tg - c < f, "find out of bounds");
                            rc_dec_advance_raw(&d, c, f, 24);
                        }
                        ccomp_ac_scratch_free(&sc);
                    }
                }
            }
        }
    }
    printf("damaged: %zu damaged containers rejected, bare decoding stays in bounds\n", trials);
    free(bad);
    free(data);
    free(rows);
    free(sym);
    free(out);
    free(cum);
    free(freq);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    test_scan8(quick);
    test_coder(quick);
    test_eiw(quick);
    test_eiw_pack(quick);
    test_raw_rows(quick);
    test_damaged(quick);
    if (test_failures) {
        fprintf(stderr, "test_ac: %d failure(s)\n", test_failures);
        return 1;
    }
    printf("test_ac: all passed\n");
    return 0;
}

/* libFuzzer target: arbitrary bytes as a ccomp.ac container, as a bare
 * range-coder stream and as an Equal-Info window.  Decoding must never crash,
 * hang or read out of bounds: a container is rejected unless intact; a bare
 * stream decodes within bounds or reports corruption.
 *
 * To reach behind the CRC, a share of the inputs (first byte odd) gets its
 * trailing CRC-32 recomputed before parsing, so mutated headers, chunk tables
 * and streams (the corpus holds the golden containers of both versions) reach
 * the parser and both container decoders, which must agree: the parallel
 * unpacker and the incremental reader succeed or fail together and return the
 * same tokens.  Built and run for a bounded time by `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../../csrc/ac/quantize.h"
#include "../../csrc/ac/rc_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes an intact container against deterministic rows with both decoders. */
static void decode_container(const ccomp_ac_info *info, uint8_t salt)
{
    size_t T = (size_t)info->tokens, V = info->vocab, t, i;
    float *rows;
    int64_t *a, *b;
    ccomp_ac_model m = {info->rule, info->precision, CCOMP_AC_F32, 0, 1.0};
    ccomp_ac_reader rd;
    ccomp_error err;
    ccomp_status sa, sb = CCOMP_OK;
    if (V < 2 || V > 4096 || T > 4096) return;
    if (info->version != 1) {
        m.logits = info->logits;
        m.temperature = info->temperature;
        /* a float64 container is decoded with float32 rows: the model check must refuse it cleanly */
    }
    rows = (float *)malloc((T ? T : 1) * V * sizeof(float));
    a = (int64_t *)malloc((T ? T : 1) * sizeof(int64_t));
    b = (int64_t *)malloc((T ? T : 1) * sizeof(int64_t));
    if (rows && a && b) {
        for (t = 0; t < T; t++)
            for (i = 0; i < V; i++) rows[t * V + i] = (float)(1 + (t * 7 + i * 13 + salt) % 17);
        sa = ccomp_ac_unpack_rows(info, &m, rows, V, a, 1 + (salt & 1), &err);
        ccomp_ac_reader_init(&rd, info);
        for (t = 0; t < T && sb == CCOMP_OK;) {
            size_t k = 1 + (t + salt) % 9;
            if (k > T - t) k = T - t;
            sb = ccomp_ac_reader_rows(&rd, &m, rows + t * V, k, V, b + t, &err);
            t += k;
        }
        ccomp_ac_reader_free(&rd);
        if ((sa == CCOMP_OK) != (sb == CCOMP_OK)) abort();
        if (sa == CCOMP_OK)
            for (t = 0; t < T; t++)
                if (a[t] < 0 || (size_t)a[t] >= V || a[t] != b[t]) abort();
    }
    free(rows);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum { V = 40 };
    static const int precisions[4] = {12, 16, 24, 28};
    float row[V];
    ccomp_ac_info info;
    ccomp_error err;
    ccomp_rc_dec d;
    int i, P, rule;
    if (size < 1) return 0;
    P = precisions[data[0] & 3];
    rule = (data[0] >> 2) & 1;
    for (i = 0; i < V; i++) row[i] = (float)(1 + (i * 7 + data[0]) % 13);
    if (ccomp_ac_parse(data, size, &info, &err) == CCOMP_OK) decode_container(&info, data[0]);
    ccomp_ac_info_free(&info);
    if (size >= 8 && (data[size - 5] & 1)) {
        /* the same bytes with a valid CRC: the parser and decoders see the mutation itself */
        uint8_t *fixed = (uint8_t *)malloc(size);
        if (fixed != NULL) {
            memcpy(fixed, data, size);
            rc_store_le32(fixed + size - 4, ccomp_crc32(fixed, size - 4));
            if (ccomp_ac_parse(fixed, size, &info, &err) == CCOMP_OK) decode_container(&info, data[0]);
            ccomp_ac_info_free(&info);
            free(fixed);
        }
    }
    if (ccomp_rc_dec_init(&d, data + 1, (size - 1) / 4 * 4, &err) == CCOMP_OK) {
        ccomp_ac_model m = {rule, P, CCOMP_AC_F32, 0, 1.0};
        qscratch sc;
        const void *p;
        memset(&sc, 0, sizeof sc);
        if (ccomp_ac_row_prepare(&m, row, V, &sc, &p, 0, &err) == CCOMP_OK) {
            for (i = 0; i < 64; i++) {
                uint32_t tg, s, c, f;
                if (ccomp_rc_dec_target(&d, P, &tg, &err) != CCOMP_OK) break;
                ccomp_ac_row_find(&m, p, V, &sc.row, tg, &s, &c, &f);
                if (s >= V || f == 0 || c > tg || tg - c >= f) abort();
                rc_dec_advance_raw(&d, c, f, P);
            }
        }
        ccomp_ac_scratch_free(&sc);
    }
    {
        ccomp_eiw_dec w;
        unsigned bits = size > 32 ? 256u : (unsigned)(size * 8);
        uint8_t win[32] = {0};
        memcpy(win, data, size < 32 ? size : 32);
        if (bits >= 1) {
            ccomp_eiw_dec_init(&w, win, bits);
            for (i = 0; i < 64; i++) {
                uint32_t tg = ccomp_eiw_dec_target(&w, P);
                uint32_t c = tg > 100 ? tg - 100 : 0, f = 200;
                if (tg >= ((uint32_t)1 << P)) abort();
                if ((uint64_t)c + f > ((uint64_t)1 << P)) c = (uint32_t)(((uint64_t)1 << P) - f);
                ccomp_eiw_dec_advance(&w, c, f, P);
            }
        }
    }
    return 0;
}

/* libFuzzer target: arbitrary bytes as a ccomp.ac container and as a bare
 * range-coder stream.  Decoding must never crash, hang or read out of bounds:
 * a container is rejected unless intact; a bare stream decodes within bounds
 * or reports corruption.  Built and run for a bounded time by `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../csrc/ac/quantize.h"
#include "../../csrc/ac/rc_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    if (ccomp_ac_parse(data, size, &info, &err) == CCOMP_OK && info.vocab >= 2 && info.vocab < 4096 &&
        info.tokens < 4096) {
        /* an intact container (the fuzzer may forge a CRC): decode it against uniform rows */
        size_t T = (size_t)info.tokens, Vc = info.vocab, k;
        float *rows = (float *)malloc((T ? T : 1) * Vc * sizeof(float));
        int64_t *out = (int64_t *)malloc((T ? T : 1) * sizeof(int64_t));
        ccomp_ac_model m = {info.rule, info.precision, CCOMP_AC_F32, 0, 1.0};
        if (rows && out) {
            for (k = 0; k < T * Vc; k++) rows[k] = 1.0f;
            if (ccomp_ac_unpack_rows(&info, &m, rows, Vc, out, 1, &err) == CCOMP_OK)
                for (k = 0; k < T; k++)
                    if (out[k] < 0 || (size_t)out[k] >= Vc) abort();
        }
        free(rows);
        free(out);
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
                if ((uint64_t)c + f > ((uint64_t)1 << P)) c = (uint32_t)(((uint64_t)1 << P) - f);
                ccomp_eiw_dec_advance(&w, c, f, P);
            }
        }
    }
    return 0;
}

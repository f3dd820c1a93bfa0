/* libFuzzer target for the built-in context-mixing compressor (ccomp/ac_cm.h).
 *
 * Each input is used three ways:
 *   1. as a whole CCCM stream: it must be rejected as corrupt or decode (only
 *      an intact stream passes the CRCs); and, with its trailing CRC
 *      recomputed, so that mutations of the header and bits reach the decoder;
 *   2. as the coded bits of a stream whose header and CRC are made valid here
 *      (level and a small length from the first bytes), so the decoder itself
 *      runs on arbitrary bits: it must stop with CCOMP_ERR_CORRUPT (or decode
 *      data with a matching CRC) within bounds;
 *   3. as data to compress (up to 1 KiB): the round trip must be exact.
 * Built and run for a bounded time by `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ccomp/ac_cm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *out = NULL, *blob = NULL;
    size_t out_len = 0, blob_len = 0;
    ccomp_error err;
    ccomp_status st;

    /* 1. the input as a stream */
    st = ccomp_cm_decompress(data, size, NULL, NULL, &out, &out_len, &err);
    if (st != CCOMP_OK && st != CCOMP_ERR_CORRUPT) abort();
    if (st != CCOMP_OK && out != NULL) abort();
    free(out);
    out = NULL;

    /* 1b. the input with its trailing CRC recomputed: mutated headers (version,
     * level, flags, length, data CRC) and coded bits reach the parser and decoder */
    if (size >= 24) {
        uint8_t *s = (uint8_t *)malloc(size);
        if (s == NULL) return 0;
        memcpy(s, data, size);
        put32(s + size - 4, (uint32_t)crc32(0L, s, (uInt)(size - 4)));
        st = ccomp_cm_decompress(s, size, NULL, NULL, &out, &out_len, &err);
        if (st != CCOMP_OK && st != CCOMP_ERR_CORRUPT && st != CCOMP_ERR_NOMEM) abort();
        if (st != CCOMP_OK && out != NULL) abort();
        free(out);
        out = NULL;
        free(s);
    }

    /* 2. the input as the coded bits of a forged, CRC-valid stream */
    if (size >= 3) {
        size_t words = (size - 3) / 4, n = 20 + 4 * words + 4;
        uint64_t len = (uint64_t)(data[1] | data[2] << 8) % 512u + (words ? 1u : 0u);
        uint8_t *s = (uint8_t *)malloc(n);
        if (s == NULL) return 0;
        memcpy(s, "CCCM\x01", 5);
        s[5] = (uint8_t)(1 + data[0] % 9);
        s[6] = s[7] = 0;
        put32(s + 8, (uint32_t)len);
        put32(s + 12, 0);
        put32(s + 16, (uint32_t)(data[0] * 0x9E3779B1u)); /* a CRC of the data that will rarely match */
        memcpy(s + 20, data + 3, 4 * words);
        put32(s + n - 4, (uint32_t)crc32(0L, s, (uInt)(n - 4)));
        st = ccomp_cm_decompress(s, n, NULL, NULL, &out, &out_len, &err);
        if (st != CCOMP_OK && st != CCOMP_ERR_CORRUPT) abort();
        if (st == CCOMP_OK && out_len != len) abort();
        free(out);
        out = NULL;
        free(s);
    }

    /* 3. round trip */
    if (size <= 1024) {
        int level = size ? 1 + data[size - 1] % 9 : 6;
        if (ccomp_cm_compress(data, size, level, NULL, NULL, &blob, &blob_len, &err) != CCOMP_OK) abort();
        if (ccomp_cm_decompress(blob, blob_len, NULL, NULL, &out, &out_len, &err) != CCOMP_OK) abort();
        if (out_len != size || (size && memcmp(out, data, size) != 0)) abort();
        free(out);
        free(blob);
    }
    return 0;
}

/* The kv and sketch container frame (ccomp/frame.h), checked as python/ccomp/_container.py checks it. */
#include "ccomp/frame.h"

#include <string.h>
#include <zlib.h>

uint32_t ccomp_crc32(const uint8_t *p, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        uInt k = n > 0x40000000u ? 0x40000000u : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

ccomp_status ccomp_frame_check(const uint8_t *data, size_t n, const char magic[4], int version, size_t head,
                               const char *what, ccomp_error *err)
{
    const uint8_t *crc;
    if (n < CCOMP_FRAME_PREFIX + CCOMP_FRAME_CRC || n - CCOMP_FRAME_PREFIX - CCOMP_FRAME_CRC < head ||
        memcmp(data, magic, 4) != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "not a %s (bad magic or too short: %zu bytes)", what, n);
    crc = data + n - CCOMP_FRAME_CRC;
    if (ccomp_crc32(data, n - CCOMP_FRAME_CRC) !=
        ((uint32_t)crc[0] | (uint32_t)crc[1] << 8 | (uint32_t)crc[2] << 16 | (uint32_t)crc[3] << 24))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "CRC-32 mismatch: the %s is damaged or truncated", what);
    if (data[4] != version)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "unsupported %s version %d (this build reads %d)", what, data[4],
                          version);
    return CCOMP_OK;
}

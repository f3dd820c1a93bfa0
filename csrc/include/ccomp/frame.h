/* The framing ccomp's kv and sketch containers share (python/ccomp/_container.py writes it): a 4-byte
 * magic, a version byte, the format's own bytes, then the CRC-32 (zlib's, u32 little-endian) of everything
 * before it. */
#ifndef CCOMP_FRAME_H
#define CCOMP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* magic + version before the format's bytes, the CRC-32 after them */
#define CCOMP_FRAME_PREFIX 5
#define CCOMP_FRAME_CRC 4

/* zlib's CRC-32 of n bytes (any n: zlib takes at most 4 GiB a call). */
uint32_t ccomp_crc32(const uint8_t *p, size_t n);

/* Checks the frame of n bytes at data, in this order: at least CCOMP_FRAME_PREFIX + head + CCOMP_FRAME_CRC
 * bytes and the magic, the CRC-32, then the version.  `what` names the object in the messages
 * ("ccomp.sketch container").  CCOMP_ERR_CORRUPT on any failure. */
ccomp_status ccomp_frame_check(const uint8_t *data, size_t n, const char magic[4], int version, size_t head,
                               const char *what, ccomp_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_FRAME_H */

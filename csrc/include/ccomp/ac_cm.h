/* The built-in context-mixing byte compressor (ccomp.ac.compress / decompress).
 *
 * No neural network: adaptive byte models in C drive the project's range
 * coder (ccomp/ac.h) one bit at a time.  Each bit of a byte is predicted by
 *
 *   - order-0 and order-1 (previous byte) adaptive probabilities,
 *   - hashed bit-history models of orders 2, 3 and 4, of the current word
 *     and of the current word with the one before it: a small state machine
 *     per context and bit position whose state an adaptive table maps to a
 *     probability,
 *   - a match model that follows the last earlier occurrence of the recent
 *     bytes and predicts the bit that came next there,
 *
 * combined by online logistic mixing (two weight sets, chosen by the bits of
 * the current byte and by the match state, trained by gradient descent on
 * coding cost), then refined by an adaptive probability map (SSE) over the
 * order-1 context.  Everything is integer arithmetic, so the streams are the
 * same on every machine.
 *
 * Container "CCCM" (integers little-endian):
 *   0  magic "CCCM"   4  u8 version (1)   5  u8 level (1..9)   6  u8 flags (0)   7  u8 reserved (0)
 *   8  u64 length of the original data
 *   16 u32 CRC-32 (zlib's) of the original data
 *   20 the range-coder stream (a whole number of 32-bit words; empty for empty data)
 *   last 4: u32 CRC-32 of every byte before it.
 * The level sets the model memory (ccomp_cm_memory), so decompressing needs
 * no parameters.
 */
#ifndef CCOMP_AC_CM_H
#define CCOMP_AC_CM_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CCOMP_CM_VERSION 1u
#define CCOMP_CM_HEADER_BYTES 20u
#define CCOMP_CM_OVERHEAD (CCOMP_CM_HEADER_BYTES + 4u) /* header + trailing CRC */
#define CCOMP_CM_MIN_LEVEL 1
#define CCOMP_CM_MAX_LEVEL 9
#define CCOMP_CM_DEFAULT_LEVEL 6
/* The progress callback is called after every this many bytes (and at the end). */
#define CCOMP_CM_PROGRESS_STEP ((uint64_t)1 << 20)

/* Progress callback: `done` of `total` bytes coded so far.  Returning nonzero
 * stops the call with CCOMP_ERR_CANCELLED. */
typedef int (*ccomp_cm_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* Bytes of model memory that compressing or decompressing n bytes at `level`
 * allocates at most (0 for an invalid level): a hash table of up to
 * 2^(18 + level) bytes, a match table of up to 2^(16 + level) bytes and about
 * 5 MiB of fixed tables; small inputs get smaller tables. */
size_t ccomp_cm_memory(int level, uint64_t n);

/* Compresses data[0 .. n) into a CCCM container; *out is malloc'ed (free with
 * free()).  progress may be NULL. */
ccomp_status ccomp_cm_compress(const uint8_t *data, size_t n, int level, ccomp_cm_progress_fn progress,
                               void *progress_ctx, uint8_t **out, size_t *out_len, ccomp_error *err);

typedef struct ccomp_cm_info {
    int version, level, flags;
    uint64_t length;       /* of the original data */
    uint32_t data_crc;     /* CRC-32 of the original data */
    const uint8_t *stream; /* the range-coder stream */
    size_t stream_bytes;
} ccomp_cm_info;

/* Parses and checks a container (magic, CRC, version, level, a length that
 * the stream can hold). */
ccomp_status ccomp_cm_parse(const uint8_t *blob, size_t n, ccomp_cm_info *info, ccomp_error *err);

/* Decompresses a CCCM container; *out is malloc'ed (free with free()).
 * Damaged data gives CCOMP_ERR_CORRUPT, never a crash or a hang. */
ccomp_status ccomp_cm_decompress(const uint8_t *blob, size_t n, ccomp_cm_progress_fn progress, void *progress_ctx,
                                 uint8_t **out, size_t *out_len, ccomp_error *err);

/* Test hook: compares the mixer's SIMD steps (when built) with the plain C
 * reference on `rounds` random cases; returns the number of mismatches. */
size_t ccomp_cm_mixer_check(uint64_t seed, size_t rounds);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_AC_CM_H */

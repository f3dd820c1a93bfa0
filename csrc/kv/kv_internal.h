/* Shared pieces of the KV-cache core. */
#ifndef CCOMP_KV_INTERNAL_H
#define CCOMP_KV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Largest head dimension (per-row scratch lives on the stack). */
#define KV_MAX_COLS 1024

/* n b-bit codes (n % 8 == 0) <-> a little-endian bit stream of n * b / 8 bytes */
void kv_pack_row(const uint8_t *codes, size_t n, int bits, uint8_t *out);
void kv_unpack_row_f32(const uint8_t *in, size_t n, int bits, float *out);

#endif

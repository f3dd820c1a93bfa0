/* Shared pieces of the sketch core. */
#ifndef CCOMP_SKETCH_INTERNAL_H
#define CCOMP_SKETCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/sketch.h"

/* Columns per group, bytes per (row, group) run, entries per table. */
static inline size_t sk_group_cols(const ccomp_sketch *s)
{
    return s->cols / s->groups;
}

static inline size_t sk_run_bytes(const ccomp_sketch *s)
{
    return ccomp_sketch_group_bytes(s->cols / s->groups, s->bits);
}

/* The code run of (row r, group g). */
static inline const uint8_t *sk_run(const ccomp_sketch *s, size_t r, size_t g)
{
    return s->codes + (r * s->groups + g) * sk_run_bytes(s);
}

/* Code j of an MSB-first run of b-bit codes (reads only the bytes holding it). */
static inline unsigned sk_code_at(const uint8_t *run, size_t j, int bits)
{
    size_t bit = j * (size_t)bits, byte = bit >> 3;
    unsigned shift = (unsigned)(bit & 7u), mask = (1u << bits) - 1u;
    unsigned v = (unsigned)run[byte] << 8;
    if (shift + (unsigned)bits > 8u) v |= run[byte + 1];
    return (v >> (16u - shift - (unsigned)bits)) & mask;
}

/* The table of (row r, group g) as float / double values. */
void sk_table_f32(const ccomp_sketch *s, size_t r, size_t g, float *out);
void sk_table_f64(const ccomp_sketch *s, size_t r, size_t g, double *out);

/* The reference kernels on a part of the output: rows [r0, r1) of y / gt,
 * columns [c0, c1) of gx (any columns, across groups). */
void sk_matmul_rows_ref(const ccomp_sketch *s, const void *x, size_t n, int prec, void *y, size_t r0, size_t r1);
void sk_grad_tables_rows_ref(const ccomp_sketch *s, const void *x, const void *gy, size_t n, int prec, void *gt,
                             size_t r0, size_t r1);
void sk_grad_input_cols_ref(const ccomp_sketch *s, const void *gy, size_t n, int prec, void *gx, size_t c0,
                            size_t c1);

/* AVX2 + FMA + F16C float32 kernels (kernels_avx2.c), used when sk_avx2_ok().
 * Same contracts as the reference ones on their part of the output (float32
 * precision); `scratch` holds at least SK_SCRATCH_FLOATS floats. */
#define SK_GEMM_MIN_BATCH 8     /* batches from it run the tiled GEMM of kernels.c */
#define SK_GEMV512_MAX_BATCH 16 /* batches below it run the AVX-512 GEMV (when available) */
#define SK_SCRATCH_FLOATS (SK_GEMV512_ROWS * 4 * (4 * 16 + 8 + 8)) /* the GEMVs' accumulators */
int sk_avx2_ok(void);
void sk_matmul_rows_avx2(const ccomp_sketch *s, const float *x, size_t n, float *y, size_t r0, size_t r1,
                         float *scratch);
void sk_grad_tables_rows_avx2(const ccomp_sketch *s, const float *x, const float *gy, size_t n, float *gt, size_t r0,
                              size_t r1);
/* grad_tables rows [r0, r1) from gy transposed (gyT [rows][n]) and x in 32-column panels (xp [panels][n][32]),
 * D through the shared tile kernel `kern` (util/tile.h); d: 48 x 32 floats, r1 - r0 <= 48 */
void sk_grad_tables_tiled_avx2(const ccomp_sketch *s, const float *gyT, const float *xp, size_t n, float *gt,
                               size_t r0, size_t r1, float *d, int kern);
/* W rows [r0, r0 + nr), columns [c0, c1) (any, across groups) as float32 into out (row stride ldo) */
void sk_decode_rows_avx2(const ccomp_sketch *s, size_t r0, size_t nr, size_t c0, size_t c1, float *out, size_t ldo);
/* AVX-512F/VL lookup-table GEMV for 2- and 4-bit codes (kernels_avx512.c), used
 * for batches below SK_GEMV512_MAX_BATCH when sk_avx512_ok(); for 4 bits x must be
 * interleaved by sk_interleave16 first (n rows of cols floats); buf: scratch of
 * SK_SCRATCH_FLOATS floats. */
int sk_avx512_ok(void);
#define SK_GEMV512_ROWS 16 /* rows whose accumulators share one pass over a chunk of columns */
void sk_gemv_rows_avx512(const ccomp_sketch *s, const float *x, size_t n, float *y, size_t r0, size_t r1,
                         float *buf);
void sk_interleave16(const ccomp_sketch *s, const float *x, size_t n, float *out);
/* y[0..n) -= a x[0..n), fused (the GPTQ updates of fit.c) */
void sk_axpy_avx2(size_t n, float a, const float *x, float *y);

#endif

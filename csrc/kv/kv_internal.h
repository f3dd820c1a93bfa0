/* Shared pieces of the KV-cache core. */
#ifndef CCOMP_KV_INTERNAL_H
#define CCOMP_KV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/kv.h"

/* Largest head dimension (per-row scratch lives on the stack). */
#define KV_MAX_COLS 1024

/* n b-bit codes (n % 8 == 0) <-> a little-endian bit stream of n * b / 8 bytes */
void kv_pack_row(const uint8_t *codes, size_t n, int bits, uint8_t *out);
void kv_unpack_row_f32(const uint8_t *in, size_t n, int bits, float *out);

/* A group's fp16 scale and zero from its min and max (both canonicalised so
 * that -0 and +0 give the same bytes whatever the reduction order), and their
 * float values; 0 when they overflow fp16. */
int kv_group_params(float mn, float mx, int bits, uint16_t *s16, uint16_t *z16, float *s, float *z);

/* The CPU runs the kv AVX2 + FMA + F16C kernels (groupwise, ggml, dense and
 * softmax; groupwise_avx2.c).  The groupwise ones: quantize returns -1 on a non-finite value or an fp16
 * overflow (the caller reports it) and writes the same bytes as the reference
 * path otherwise. */
int kv_avx2_ok(void);
/* the portable paths, with the same contracts and results */
int kv_gw_quantize_ref(const float *x, size_t ld, ccomp_kv_gw *q);
void kv_gw_dequantize_ref(const ccomp_kv_gw *q, float *out, size_t ld);
int kv_gw_quantize_avx2(const float *x, size_t ld, ccomp_kv_gw *q);
void kv_gw_dequantize_avx2(const ccomp_kv_gw *q, float *out, size_t ld);
void kv_gw_scores_avx2(const ccomp_kv_gw *k, const float *q, float *s);
void kv_gw_accum_avx2(const ccomp_kv_gw *v, const float *p, float *o);
/* ggml blocks (q8 nonzero: q8_0, else q4_0): the scores and accum of ccomp_kv_ggml_* */
void kv_ggml_scores_avx2(const uint8_t *blocks, size_t rows, size_t cols, int q8, const float *q, float *s);
void kv_ggml_accum_avx2(const uint8_t *blocks, size_t rows, size_t cols, int q8, const float *p, float *o);
/* float32 rows: s[r] = q . row r; o += sum_r p[r] row r */
void kv_dense_scores_avx2(const float *m, size_t rows, size_t cols, const float *q, float *s);
void kv_dense_accum_avx2(const float *m, size_t rows, size_t cols, const float *p, float *o);
/* s = exp(scale * s - max) in place (relative error below 2e-7 per value); returns the sum */
float kv_softmax_avx2(float *s, size_t n, float scale);

/* --- pieces of the method rows (ccomp_kv_method) that several methods share */

/* Appends an array to a layout. */
void kv_layout_add(ccomp_kv_layout *L, const char *name, const char *dtype, size_t count);
/* The groupwise arrays (codes, scale, zero) of L's shape and parameters, and a ccomp_kv_gw over them. */
void kv_gw_layout_arrays(ccomp_kv_layout *L);
void kv_gw_view(const ccomp_kv_layout *L, void *const *arrays, ccomp_kv_gw *g);
/* g's rows [r0, r0 + n) as d */
void kv_gw_shift(const ccomp_kv_gw *g, size_t r0, size_t n, ccomp_kv_gw *d);
/* float32 rows: s[r] = q . row r; o += sum_r p[r] row r (the AVX2 kernels where the CPU has them) */
void kv_dense_scores(const float *m, size_t rows, size_t cols, const float *q, float *s);
void kv_dense_accum(const float *m, size_t rows, size_t cols, const float *p, float *o);
/* method rows that accumulate every row straight into o, or whose scores are dot products with their rows */
int kv_always(const ccomp_kv_slice *s);
int kv_never(const ccomp_kv_slice *s);

/* a method struct fits the view's storage */
#define KV_FITS_STORAGE(type)                                                                                          \
    _Static_assert(sizeof(type) <= sizeof(ccomp_kv_storage), #type " outgrows ccomp_kv_storage")

#endif

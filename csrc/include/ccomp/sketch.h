/* SketchTune sketches of weight matrices (ccomp.sketch).
 *
 * A sketch of a weight matrix W [rows = out, cols = in] splits every row into
 * G contiguous column groups of n = cols / G columns; group g of row r has a
 * table of K = 2^b values T[r][g][0..K) and every weight is replaced by a
 * b-bit code into its group's table:  W_hat[r][g n + j] = T[r][g][c[r][g n + j]].
 *
 * Tables: [rows][G][K] in float32, float16 (IEEE, RNE), bfloat16 (the high
 * 16 bits of a float32, RNE) or float64, stored as the element type says.
 *
 * Codes (b in {2, 3, 4}): each (row, group) run of n codes is an MSB-first
 * bit stream padded with zero bits to whole bytes, gb = ceil(n b / 8) bytes:
 * code j occupies the b bits that start b j bits after the most significant
 * bit of the run's first byte.  The codes array is [rows][G][gb] bytes.
 *   b = 4: byte p holds code 2p in its HIGH nibble and code 2p + 1 in its low
 *          nibble: SketchTune's released layout (uint8 [out, G, in / G / 2]);
 *   b = 2: byte p holds codes 4p .. 4p + 3 in bits 7-6, 5-4, 3-2, 1-0;
 *   b = 3: 3 bytes hold 8 codes, the first in bits 7-5 of the first byte.
 *
 * Kernels (never materialising W_hat beyond a small per-thread tile):
 *   matmul:      y[i][r]     = sum_c x[i][c] W_hat[r][c]            (x W_hat^T)
 *   grad_tables: gt[r][g][k] = sum_{c in g, c[r][c] = k} sum_i gy[i][r] x[i][c]
 *   grad_input:  gx[i][c]    = sum_r gy[i][r] W_hat[r][c]           (gy W_hat)
 * with x, y, gy, gx row-major float32 or float64 (CCOMP_SKETCH_F32 / _F64,
 * the "precision"); any table type works with either precision.  Heavy calls
 * split the work into tasks that each own their outputs, so the results are
 * bit-identical whatever the thread count.  The _ref functions are the
 * specification: plain loops, one thread, sums in double precision.
 */
#ifndef CCOMP_SKETCH_H
#define CCOMP_SKETCH_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of tables (and precisions of the kernels: F32 or F64). */
enum { CCOMP_SKETCH_F32 = 0, CCOMP_SKETCH_F16 = 1, CCOMP_SKETCH_BF16 = 2, CCOMP_SKETCH_F64 = 3 };

#define CCOMP_SKETCH_MAX_BITS 4
#define CCOMP_SKETCH_MAX_ENTRIES 16

typedef struct ccomp_sketch {
    size_t rows, cols, groups; /* out, in, G (cols % groups == 0) */
    int bits;                  /* 2, 3 or 4 */
    int dtype;                 /* element type of tables (CCOMP_SKETCH_*) */
    const void *tables;        /* [rows][groups][1 << bits] */
    const uint8_t *codes;      /* [rows][groups][group_bytes] */
} ccomp_sketch;

/* Checks shape, bits and table type (message: expected vs received). */
ccomp_status ccomp_sketch_check(size_t rows, size_t cols, size_t groups, int bits, int dtype, ccomp_error *err);
/* Bytes of one (row, group) code run of n codes: ceil(n b / 8). */
size_t ccomp_sketch_group_bytes(size_t n, int bits);
/* Bytes of all codes, and entries of all tables. */
size_t ccomp_sketch_code_bytes(size_t rows, size_t cols, size_t groups, int bits);
size_t ccomp_sketch_table_entries(size_t rows, size_t groups, int bits);
/* Size in bytes of one element of a table type (0 if unknown). */
size_t ccomp_sketch_dtype_size(int dtype);

/* codes [rows][cols] (one code per byte) -> packed [rows][groups][group_bytes];
 * fails naming the first code >= 2^bits. */
ccomp_status ccomp_sketch_pack(const uint8_t *codes, size_t rows, size_t cols, size_t groups, int bits,
                               uint8_t *packed, ccomp_error *err);
/* The inverse; fails (CCOMP_ERR_CORRUPT) naming the first run whose padding bits are not zero. */
ccomp_status ccomp_sketch_unpack(const uint8_t *packed, size_t rows, size_t cols, size_t groups, int bits,
                                 uint8_t *codes, ccomp_error *err);

/* Rounds a value to a table type (float16 / bfloat16 / float32: round to
 * nearest even; float64 unchanged), and reads / writes table entries. */
double ccomp_sketch_round(double v, int dtype);
double ccomp_sketch_table_get(const void *tables, int dtype, size_t index);
void ccomp_sketch_table_set(void *tables, int dtype, size_t index, double v);

/* W_hat [rows][cols] in precision prec (F32 or F64). */
ccomp_status ccomp_sketch_dequantize(const ccomp_sketch *s, int prec, void *out, int threads, ccomp_error *err);

/* The kernels (see the top of this file); n rows of x / gy; n may be 0. */
ccomp_status ccomp_sketch_matmul(const ccomp_sketch *s, const void *x, size_t n, int prec, void *y, int threads,
                                 ccomp_error *err);
ccomp_status ccomp_sketch_grad_tables(const ccomp_sketch *s, const void *x, const void *gy, size_t n, int prec,
                                      void *gt, int threads, ccomp_error *err);
ccomp_status ccomp_sketch_grad_input(const ccomp_sketch *s, const void *gy, size_t n, int prec, void *gx,
                                     int threads, ccomp_error *err);

/* The specification of the kernels: the same contracts (s already checked). */
void ccomp_sketch_matmul_ref(const ccomp_sketch *s, const void *x, size_t n, int prec, void *y);
void ccomp_sketch_grad_tables_ref(const ccomp_sketch *s, const void *x, const void *gy, size_t n, int prec, void *gt);
void ccomp_sketch_grad_input_ref(const ccomp_sketch *s, const void *gy, size_t n, int prec, void *gx);

/* The float32 kernels in use: "avx512+avx2" (the AVX-512 GEMV for 2- and 4-bit codes), "avx2" or "scalar". */
const char *ccomp_sketch_kernel_name(void);

/* ------------------------------------------------------------- fitting */

/* All fitting functions read W [rows][cols] float32 (row stride ld), fail on a
 * non-finite weight (naming it), round every table entry to `dtype` and give
 * each weight the code of the nearest rounded entry (ties: the lower code).
 * tables: [rows][groups][K] of `dtype`; packed: [rows][groups][group_bytes]. */

/* Round to nearest on a uniform grid per (row, group): entries
 * min + k (max - min) / (K - 1), k = 0 .. K - 1. */
ccomp_status ccomp_sketch_fit_rtn(const float *w, size_t ld, size_t rows, size_t cols, size_t groups, int bits,
                                  int dtype, void *tables, uint8_t *packed, int threads, ccomp_error *err);

/* Weighted 1-D k-means (Lloyd) per (row, group) with K centres, run from two
 * deterministic starts (the weighted quantiles (k + 1/2) / K of the group's
 * weights, and the uniform rtn grid), each until the assignment is stable or
 * for `iters` rounds; the start with the smaller weighted error is kept.  col_weight: NULL (all 1) or
 * cols positive finite weights of the columns (LeanQuant: diag(U)^-p). */
ccomp_status ccomp_sketch_fit_kmeans(const float *w, size_t ld, size_t rows, size_t cols, size_t groups, int bits,
                                     int dtype, const double *col_weight, int iters, void *tables, uint8_t *packed,
                                     int threads, ccomp_error *err);

/* Codes for given tables by GPTQ / OBQ error feedback: columns in order,
 * q = nearest entry of the column's group table to the running w,
 * err = (w - q) / U[i][i], and the not yet quantized columns of the row get
 * w[j] -= err U[i][j] (j > i); updates inside blocks of `block` columns are
 * immediate, those beyond a block applied once the block is done.
 * u: [cols][cols] float32, the upper Cholesky factor of H^-1 (only its upper
 * triangle is read; the diagonal must be positive and finite). */
ccomp_status ccomp_sketch_fit_gptq(const float *w, size_t ld, const float *u, size_t rows, size_t cols, size_t groups,
                                   int bits, int dtype, const void *tables, size_t block, uint8_t *packed, int threads,
                                   ccomp_error *err);

/* ----------------------------------------------------------- container */

/* One entry of a CCSK container (python/ccomp/sketch.py's save/load): offsets into the container. */
typedef struct ccomp_sketch_entry {
    size_t name_off, name_len;  /* UTF-8 bytes of the name */
    size_t rows, cols, groups;
    int bits, dtype;
    size_t tables_off;          /* rows * groups * 2^bits little-endian elements of dtype */
    size_t codes_off;           /* ccomp_sketch_code_bytes(...) packed code bytes */
} ccomp_sketch_entry;

/* Reads a CCSK container of n bytes: magic, CRC-32, version 1, kind (0: one unnamed sketch, 1: named),
 * every entry's header (shape checked as ccomp_sketch_check does), data within the container and no
 * byte after the last entry, zero padding bits of every code run, and in a named container names that
 * are non-empty, without NUL and pairwise distinct.  Linear in n (names compared through a hash table).
 * On success *entries is a malloc'ed array of *count entries (the caller frees it; NULL when none);
 * failures are CCOMP_ERR_CORRUPT naming what is wrong. */
ccomp_status ccomp_sketch_container_parse(const uint8_t *data, size_t n, int *kind, ccomp_sketch_entry **entries,
                                          size_t *count, ccomp_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_SKETCH_H */

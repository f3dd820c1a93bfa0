/* extern "C" entry points of ccomp's CUDA objects, callable from the C binding.
 * Like the C core, each returns a ccomp_status and fills a ccomp_error (ccomp/status.h; err may be
 * NULL): CCOMP_OK, CCOMP_ERR_VALUE for a rejected argument, CCOMP_ERR_BACKEND for a CUDA failure (no
 * device or driver included), CCOMP_ERR_NOMEM when device or host memory runs out. */
#ifndef CCOMP_CUDA_H
#define CCOMP_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/kv.h"
#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device discovery: the message of a failure is the CUDA runtime's reason alone. */
ccomp_status ccomp_cuda_device_count(int *count, ccomp_error *err);
ccomp_status ccomp_cuda_runtime_version(int *version, ccomp_error *err);
ccomp_status ccomp_cuda_driver_version(int *version, ccomp_error *err);
ccomp_status ccomp_cuda_device_name(int device, char *name, size_t name_len, int *major, int *minor,
                                    ccomp_error *err);
ccomp_status ccomp_cuda_iota(int *host_out, int n, int step, ccomp_error *err);

/* Device memory (kernels/device.cu; the current device): alloc gives n bytes without a copy (a distinct pointer
 * for n = 0), upload a copy of n host bytes, both freed with ccomp_cuda_free; to_host copies n bytes back on the
 * device that holds dev. */
ccomp_status ccomp_cuda_alloc(size_t n, void **dev, ccomp_error *err);
ccomp_status ccomp_cuda_upload(const void *host, size_t n, void **dev, ccomp_error *err);
void ccomp_cuda_free(void *dev);
ccomp_status ccomp_cuda_to_host(void *host, const void *dev, size_t n, ccomp_error *err);
ccomp_status ccomp_cuda_synchronize(ccomp_error *err);

/* ---- ccomp.ac: CDF quantization on the GPU (kernels/ac.cu; csrc/ac/quantize.c is the specification).
 * rows: device pointer to T rows of V float32 (dtype 0) or float64 (dtype 1) values, row_stride elements
 * apart; rule 0 = constriction, 1 = nacrith; temperature applies to logits.  The rows' device is made
 * current for the call.  *first_bad is the first row the CPU reference would reject (-1: none); the
 * caller asks the CPU for the exact message.  Work runs on the legacy default stream and is finished
 * when the call returns. */
ccomp_status ccomp_cuda_ac_lookup(const void *rows, int dtype, size_t T, size_t V, size_t row_stride, int rule,
                                  int precision, int logits, double temperature, const int64_t *symbols_host,
                                  uint32_t *cum_host, uint32_t *freq_host, int64_t *first_bad, ccomp_error *err);

/* Row summaries and checkpoints of every row, kept on the device for decoding.  The rows must stay
 * alive (and unchanged) until ccomp_cuda_ac_scan_free. */
typedef struct ccomp_cuda_ac_scan ccomp_cuda_ac_scan;
ccomp_status ccomp_cuda_ac_scan_rows(const void *rows, int dtype, size_t T, size_t V, size_t row_stride, int rule,
                                     int precision, int logits, double temperature, ccomp_cuda_ac_scan **out,
                                     int64_t *first_bad, ccomp_error *err);
/* For each query i: the symbol of row rows_t[i] whose [cum, cum + freq) contains targets[i] (< 2^P). */
ccomp_status ccomp_cuda_ac_scan_find(const ccomp_cuda_ac_scan *h, const int64_t *rows_t, const uint32_t *targets,
                                     size_t n, uint32_t *symbol, uint32_t *cum, uint32_t *freq, ccomp_error *err);
size_t ccomp_cuda_ac_scan_rows_count(const ccomp_cuda_ac_scan *h);
void ccomp_cuda_ac_scan_free(ccomp_cuda_ac_scan *h);

/* ---- ccomp.kv: KV-cache (de)quantization and decode attention on the GPU (kernels/kv_*.cu: kv_codec.cu
 * dispatches through kv_table.cuh's method table to each method's kernel file; kv_attention.cu).  The C core
 * in csrc/kv and the ccomp/kv headers are the specification: codes, scales and dequantized values are
 * bit-identical to it.
 *
 * A tensor is S slices (batch x heads) of T tokens x D channels.  Its method's arrays are 2-D [S, n]
 * device arrays as in ccomp.kv (names below); each is given by a device pointer, the distance in
 * elements from one slice's row to the next (>= count) and the elements available per slice.
 * Work is queued on `stream` (a cudaStream_t; NULL is the legacy default stream) on the device that
 * holds the tensor, which is made current for the call.  Calls that take `check` return at once when it
 * is 0; with check = 1 they wait for the stream and set *first_bad to the first slice whose data the CPU
 * would reject (a NaN or infinite value, a group range beyond fp16, inconsistent sparse offsets or
 * outlier channels; -1: none), and the caller asks the CPU for the exact message.  Return: CCOMP_OK, or a
 * ccomp_status with err filled like the core's (CCOMP_ERR_VALUE for rejected arguments, CCOMP_ERR_BACKEND
 * or CCOMP_ERR_NOMEM for a CUDA failure).  Methods are the core's ids (CCOMP_KV_M_*, ccomp/kv.h). */
enum { CCOMP_CUDA_KV_FLOAT32 = 0, CCOMP_CUDA_KV_FLOAT16 = 1 };

typedef struct ccomp_cuda_kv_array {
    void *ptr;     /* device pointer; NULL when the method has no such array */
    size_t stride; /* elements between consecutive slices */
    size_t count;  /* elements available per slice */
} ccomp_cuda_kv_array;

typedef struct ccomp_cuda_kv_desc {
    int method;        /* CCOMP_KV_M_* (ccomp/kv.h) */
    size_t S, T, D;    /* slices, tokens, head dim */
    int bits, group;   /* groupwise and GEAR's backbone; turbo bits (1..4) */
    int axis;          /* 0: per channel (groups of tokens), 1: per token (groups of channels) */
    int qjl;           /* turbo: 1 with the QJL residual sketch */
    uint64_t seed;     /* turbo rotation signs */
    float centroids[16], thresholds[16]; /* turbo codebook (ccomp_kv_turbo_centroids / _thresholds) */
    const float *qjl_matrix_t;           /* turbo with QJL: device D x D, the transpose of
                                            ccomp_kv_turbo_qjl_matrix (element [j][i] = S[i][j]) */
    size_t kept;       /* bitmap_sparse: values kept per token */
    size_t per_row;    /* gear: outliers per token */
    int rank;          /* gear: low rank (0: none) */
    /* The dense tensor: quantize's input, dequantize's output (contiguous [S, T, D]) or a dense attention
     * segment; x_ss / x_ld: elements between slices / tokens (channels contiguous). */
    void *x;
    int x_dtype;       /* CCOMP_CUDA_KV_FLOAT32 or _FLOAT16 */
    size_t x_ss, x_ld;
    ccomp_cuda_kv_array codes, scale, zero, blocks, norms, signs, res_norms, bitmaps, offsets, values, out_idx,
        out_vals, U, W;
    uint32_t *flag;    /* 4 bytes of device memory for the data check (quantize; sparse and gear dequantize) */
} ccomp_cuda_kv_desc;

ccomp_status ccomp_cuda_kv_quantize(const ccomp_cuda_kv_desc *d, void *stream, int check, int64_t *first_bad,
                                    ccomp_error *err);
ccomp_status ccomp_cuda_kv_dequantize(const ccomp_cuda_kv_desc *d, void *stream, int check, int64_t *first_bad,
                                      ccomp_error *err);

/* Decode attention: out[s * R + r] = softmax(scale * K_s q_{s R + r}) V_s for the S K/V slices and their R
 * query rows each (R = query heads per K/V head x query tokens; q: [S * R, D] float32 or float16 rows,
 * contiguous; out: [S * R, Dv] float32).  The cache is nk K segments and nv V segments along the tokens
 * (groupwise, q8_0, q4_0 or dense; the token counts add up to the same T on both sides).  ws: device
 * workspace of ccomp_cuda_kv_attention_workspace bytes.  Asynchronous on `stream`. */
size_t ccomp_cuda_kv_attention_workspace(size_t S, size_t R, size_t Dv, const ccomp_cuda_kv_desc *v, size_t nv);
ccomp_status ccomp_cuda_kv_attention(const void *q, int q_dtype, size_t S, size_t R, size_t D, float scale,
                                     const ccomp_cuda_kv_desc *k, size_t nk, const ccomp_cuda_kv_desc *v, size_t nv,
                                     float *out, void *ws, size_t ws_bytes, void *stream, ccomp_error *err);


/* ---- ccomp.sketch: SketchTune sketches on the GPU (kernels/sketch.cu; csrc/sketch/kernels.c and ccomp/sketch.h
 * are the specification).  A sketch is W_hat [rows][cols]: tables [rows][groups][2^bits] of float32, float16 or
 * bfloat16 (the CCOMP_SKETCH_* types of ccomp/sketch.h; float64 tables stay on the CPU) and the packed codes
 * [rows][groups][ceil((cols / groups) bits / 8)] bytes, both contiguous device arrays.  Inputs (x [n][cols],
 * gy [n][rows]) are contiguous float32 or float16 rows; outputs are contiguous float32.  Arithmetic is
 * float32 in a fixed order (the same bits on every run; the CPU's results within float32 rounding).
 * Work is queued on `stream` (a cudaStream_t; NULL: the legacy default stream) on the device that holds
 * the codes, made current for the call; nothing waits for the GPU.  Errors as above (ccomp_status). */
enum { CCOMP_CUDA_SKETCH_F32 = 0, CCOMP_CUDA_SKETCH_F16 = 1, CCOMP_CUDA_SKETCH_BF16 = 2 };

typedef struct ccomp_cuda_sketch {
    size_t rows, cols, groups; /* out, in, G (cols % groups == 0) */
    int bits;                  /* 2, 3 or 4 */
    int dtype;                 /* table type: CCOMP_CUDA_SKETCH_* */
    const void *tables;        /* device [rows][groups][1 << bits] */
    const uint8_t *codes;      /* device [rows][groups][group bytes] */
} ccomp_cuda_sketch;

/* y [n][rows] = x W_hat^T: a lookup-table GEMV for n <= 8, a tiled GEMM above. */
ccomp_status ccomp_cuda_sketch_matmul(const ccomp_cuda_sketch *s, const void *x, int x_dtype, size_t n, float *y,
                                      void *stream, ccomp_error *err);
/* gt [rows][groups][2^bits]: per table entry the sum over the columns with that code of (gy^T x)[r][c], without
 * the dense gradient.  ws: device workspace of ccomp_cuda_sketch_grad_tables_workspace bytes (NULL when 0). */
size_t ccomp_cuda_sketch_grad_tables_workspace(size_t rows, size_t cols, size_t groups, int bits);
ccomp_status ccomp_cuda_sketch_grad_tables(const ccomp_cuda_sketch *s, const void *x, int x_dtype, const void *gy,
                                           int gy_dtype, size_t n, float *gt, void *ws, size_t ws_bytes,
                                           void *stream, ccomp_error *err);
/* gx [n][cols] = gy W_hat. */
ccomp_status ccomp_cuda_sketch_grad_input(const ccomp_cuda_sketch *s, const void *gy, int gy_dtype, size_t n,
                                          float *gx, void *stream, ccomp_error *err);
/* out [rows][cols] = W_hat as float32, float16 or bfloat16 (out_dtype: CCOMP_CUDA_SKETCH_*; rounded to nearest
 * even). */
ccomp_status ccomp_cuda_sketch_dequantize(const ccomp_cuda_sketch *s, void *out, int out_dtype, void *stream,
                                          ccomp_error *err);

/* ---- ccomp.tokens: cosine-similarity top-k on the GPU (kernels/tokens.cu; csrc/tokens/similarity.c is the
 * specification, and the results equal it bit for bit).
 *
 * keys: device pointer to B sub-images of N tokens of D channels (float32, float64 or float16), element
 * (b, t, d) at keys[b * stride_b + t * stride_n + d].  rows / cols (host int64 token indices) and
 * rows_off / cols_off (host, B + 1 offsets starting at 0) are the query rows and candidates of every
 * sub-image, as in ccomp_tokens_topk; cols_distinct = 1 promises that no candidate list repeats a token
 * (it enables dropping bit-identical duplicates early).  out_idx / out_val: device [rows, k] int64 /
 * float32 (index -1 and -inf where a row has fewer than k candidates).  k <= CCOMP_CUDA_TOKENS_MAX_K.
 * ws: a device workspace of ccomp_cuda_tokens_workspace bytes, 256-byte aligned (no N x N buffer: it
 * holds fp16 normalized keys, per-token norms and per-row candidate lists of 2 k + 128 entries).
 * Work is queued on `stream` (NULL: the legacy default stream) on the keys' device, made current for the
 * call.  With first_bad or stats non-NULL the call waits for the stream: *first_bad is the flat index
 * (b N + t) D + d of the first NaN or infinite key element (-1: none); stats[0] = rows whose candidate
 * list overflowed (recomputed exactly over all candidates), stats[1] = workspace bytes, stats[2] =
 * candidate slices of the threshold pass.  Errors as above (ccomp_status). */
enum { CCOMP_CUDA_TOKENS_F32 = 0, CCOMP_CUDA_TOKENS_F64 = 1, CCOMP_CUDA_TOKENS_F16 = 2 };
#define CCOMP_CUDA_TOKENS_MAX_K 64

size_t ccomp_cuda_tokens_workspace(size_t B, size_t N, size_t D, const size_t *rows_off, const size_t *cols_off,
                                   size_t k);
/* The bound on |fp16 tensor-core screen - exact similarity| the GPU path uses for D channels. */
double ccomp_cuda_tokens_delta(size_t D);
ccomp_status ccomp_cuda_tokens_topk(const void *keys, int dtype, size_t B, size_t N, size_t D, size_t stride_b,
                                    size_t stride_n, const int64_t *rows, const size_t *rows_off, const int64_t *cols,
                                    const size_t *cols_off, int exclude_self, size_t k, int cols_distinct,
                                    int64_t *out_idx, float *out_val, void *ws, size_t ws_bytes, void *stream,
                                    int64_t *first_bad, int64_t *stats, ccomp_error *err);

#ifdef __cplusplus
}
#endif

#endif

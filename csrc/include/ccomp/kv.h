/* KV-cache quantization and attention over the compressed cache (ccomp.kv).
 *
 * Every function works on one "slice": a row-major float32 matrix of
 * `rows` tokens by `cols` channels (one head of a K or V cache) with a row
 * stride of `ld` elements.  The Python layer loops over batch and heads (in
 * parallel) and owns the buffers; the core fills caller-provided arrays whose
 * sizes come from the *_sizes functions.
 *
 * Half precision values (scales, zeros, norms, kept nonzeros) are IEEE fp16
 * stored as uint16_t, converted with round-to-nearest-even (ccomp/half.h).
 *
 * Attention: a method provides two kernels on a compressed slice,
 *   scores: s[t] = sum_j q[j] * k[t][j]      for every token t
 *   accum:  o[j] += sum_t p[t] * v[t][j]
 * computed from the compressed form (no dense K or V is built).
 * ccomp_kv_attention combines them into softmax(scale * K q) V for every
 * query head (grouped-query heads share a K/V head).
 */
#ifndef CCOMP_KV_H
#define CCOMP_KV_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ groupwise */

/* Asymmetric min-max uniform quantization with b in {2, 3, 4, 8} bits
 * (codes 0 .. 2^b - 1), groups of G in {32, 64, 128} elements:
 *   CCOMP_KV_PER_CHANNEL: G consecutive tokens of one channel (keys, KIVI);
 *                         rows % G == 0; scale/zero are [rows / G][cols]
 *   CCOMP_KV_PER_TOKEN:   G consecutive channels of one token (values);
 *                         cols % G == 0; scale/zero are [rows][cols / G]
 * zero = fp16(min), scale = fp16((max - min) / (2^b - 1)) (float32
 * arithmetic, RNE; a zero min or max counts as +0, so the bytes do not depend
 * on the order in which a group is reduced); with z, s the float values of
 * those fp16 numbers, code = clamp(floor((x - z) / s + 0.5), 0, 2^b - 1) in
 * float32 (0 when s is 0), and x' = s * code + z (multiply, then add).  Codes: each token row is a little-endian bit
 * stream of cols b-bit codes (code j at bits [j b, j b + b)); cols % 8 == 0
 * so a row is cols * b / 8 bytes. */
enum { CCOMP_KV_PER_CHANNEL = 0, CCOMP_KV_PER_TOKEN = 1 };

typedef struct ccomp_kv_gw {
    size_t rows, cols;
    int bits, group, axis;
    uint8_t *codes;  /* rows * cols * bits / 8 bytes */
    uint16_t *scale; /* fp16, ngroups */
    uint16_t *zero;  /* fp16, ngroups */
} ccomp_kv_gw;

ccomp_status ccomp_kv_gw_check(size_t rows, size_t cols, int bits, int group, int axis, ccomp_error *err);
size_t ccomp_kv_gw_code_bytes(size_t rows, size_t cols, int bits);
size_t ccomp_kv_gw_groups(size_t rows, size_t cols, int group, int axis);
/* Fails (naming the element) on NaN or infinite input. */
ccomp_status ccomp_kv_gw_quantize(const float *x, size_t ld, ccomp_kv_gw *q, ccomp_error *err);
void ccomp_kv_gw_dequantize(const ccomp_kv_gw *q, float *out, size_t ld);
void ccomp_kv_gw_scores(const ccomp_kv_gw *k, const float *q, float *s);
void ccomp_kv_gw_accum(const ccomp_kv_gw *v, const float *p, float *o);

/* --------------------------------------------------------- ggml blocks */

/* q8_0 / q4_0: blocks of 32 consecutive values of a row (cols % 32 == 0),
 * byte-identical to ggml's reference quantizers (quantize_row_q8_0_ref,
 * quantize_row_q4_0_ref):
 *   q8_0 (34 bytes): d = amax / 127, id = d ? 1 / d : 0 (float32), fp16 d,
 *                    then 32 int8 roundf(x * id) (multiplied by the
 *                    reciprocal as ggml does, not divided by d);
 *   q4_0 (18 bytes): d = m / -8 (m the value of largest magnitude, the
 *                    first one in the block on ties),
 *                    id = d ? 1 / d : 0, fp16 d, then 16 bytes: low nibble
 *                    min(15, (int8)(x[j] * id + 8.5)), high nibble the same
 *                    for x[j + 16].
 * Quantize fails with CCOMP_ERR_VALUE, naming the element (token, channel,
 * value), on NaN or infinite input and where fp16(d) would be infinite
 * (|x| >= 65520 * 127 for q8_0, >= 65520 * 8 for q4_0): llama.cpp stores an
 * infinite scale there, which decodes to inf/NaN. */
enum { CCOMP_KV_Q8_0 = 0, CCOMP_KV_Q4_0 = 1 };
size_t ccomp_kv_ggml_bytes(size_t rows, size_t cols, int type);
ccomp_status ccomp_kv_ggml_quantize(const float *x, size_t rows, size_t cols, size_t ld, int type, uint8_t *blocks,
                                    ccomp_error *err);
void ccomp_kv_ggml_dequantize(const uint8_t *blocks, size_t rows, size_t cols, int type, float *out, size_t ld);
void ccomp_kv_ggml_scores(const uint8_t *blocks, size_t rows, size_t cols, int type, const float *q, float *s);
void ccomp_kv_ggml_accum(const uint8_t *blocks, size_t rows, size_t cols, int type, const float *p, float *o);

/* --------------------------------------------------------- attention */

/* One compressed K or V slice, whatever its method.  A cache may be made of
 * several segments along the tokens (e.g. KIVI: quantized blocks, then the
 * recent tokens in full precision): `next` chains them, rows add up. */
typedef struct ccomp_kv_slice {
    int method;       /* CCOMP_KV_M_* */
    const void *data; /* the method's struct (e.g. ccomp_kv_gw), the blocks for ggml,
                         a float32 rows x cols matrix for dense */
    size_t rows, cols;
    int type; /* ggml type */
    const struct ccomp_kv_slice *next;
} ccomp_kv_slice;

/* Total tokens of a chain of segments. */
size_t ccomp_kv_slice_rows(const ccomp_kv_slice *k);

/* data: DENSE float32 rows x cols; GROUPWISE ccomp_kv_gw; GGML the blocks
 * (type set); TURBO ccomp_kv_turbo (ccomp/kv_turbo.h); SPARSE
 * ccomp_kv_sparse and GEAR ccomp_kv_gear (ccomp/kv_sparse.h). */
enum {
    CCOMP_KV_M_DENSE = 0,
    CCOMP_KV_M_GROUPWISE = 1,
    CCOMP_KV_M_GGML = 2,
    CCOMP_KV_M_TURBO = 3,
    CCOMP_KV_M_SPARSE = 4,
    CCOMP_KV_M_GEAR = 5
};

void ccomp_kv_slice_scores(const ccomp_kv_slice *k, const float *q, float *s);
void ccomp_kv_slice_accum(const ccomp_kv_slice *v, const float *p, float *o);

/* The rows x cols float32 values of one segment (s->next ignored) into out (row stride cols), in steps of
 * rows that answer cancellation (the same bits as the method's own dequantize: every method decodes row by
 * row); CCOMP_ERR_CANCELLED when the call is cancelled, out then incomplete. */
ccomp_status ccomp_kv_slice_dequantize(const ccomp_kv_slice *s, float *out, ccomp_error *err);

/* out[h][i][:] = softmax(scale * K_g q_hi) V_g for query heads h in [0, H),
 * query tokens i in [0, nq), with g = h / (H / G) the K/V head (H % G == 0).
 * q: [H][nq][D] float32; k[g], v[g]: G compressed slices of T x D (K and V
 * may use different methods); out: [H][nq][Dv].  Parallel over (h, i).
 * CCOMP_ERR_VALUE unless every segment of every K chain has cols D and every
 * segment of every V chain the cols of v[0] (Dv), K and V of each head hold
 * the same tokens (at least one), and every score is finite (a huge q or
 * scale would overflow float32); CCOMP_ERR_CANCELLED when the calling
 * thread's ccomp_cancel token asks to stop (checked between tiles of rows). */
ccomp_status ccomp_kv_attention(const float *q, size_t H, size_t nq, size_t D, const ccomp_kv_slice *k,
                                const ccomp_kv_slice *v, size_t G, float scale, float *out, int threads,
                                ccomp_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_KV_H */

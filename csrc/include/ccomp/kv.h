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

/* The blocks, declared once for the C core and the CUDA kernels (ggml-common.h's block_q8_0 / block_q4_0):
 * d is the little-endian fp16 scale.  Arrays of blocks are byte arrays (a row may start at any byte), so
 * the C core reads d byte by byte and uses these structs for sizes and offsets. */
#define CCOMP_KV_QK 32
typedef struct ccomp_kv_block_q8_0 {
    uint16_t d;
    int8_t qs[CCOMP_KV_QK];
} ccomp_kv_block_q8_0;
typedef struct ccomp_kv_block_q4_0 {
    uint16_t d;
    uint8_t qs[CCOMP_KV_QK / 2];
} ccomp_kv_block_q4_0;
#ifdef __cplusplus
static_assert(sizeof(ccomp_kv_block_q8_0) == 2 + CCOMP_KV_QK, "wrong q8_0 block size/padding");
static_assert(sizeof(ccomp_kv_block_q4_0) == 2 + CCOMP_KV_QK / 2, "wrong q4_0 block size/padding");
#else
_Static_assert(sizeof(ccomp_kv_block_q8_0) == 2 + CCOMP_KV_QK, "wrong q8_0 block size/padding");
_Static_assert(sizeof(ccomp_kv_block_q4_0) == 2 + CCOMP_KV_QK / 2, "wrong q4_0 block size/padding");
#endif
/* bytes of one block of a ggml type */
#define CCOMP_KV_GGML_BLOCK_BYTES(type) \
    ((type) == CCOMP_KV_Q8_0 ? sizeof(ccomp_kv_block_q8_0) : sizeof(ccomp_kv_block_q4_0))
size_t ccomp_kv_ggml_bytes(size_t rows, size_t cols, int type);
ccomp_status ccomp_kv_ggml_quantize(const float *x, size_t rows, size_t cols, size_t ld, int type, uint8_t *blocks,
                                    ccomp_error *err);
void ccomp_kv_ggml_dequantize(const uint8_t *blocks, size_t rows, size_t cols, int type, float *out, size_t ld);
void ccomp_kv_ggml_scores(const uint8_t *blocks, size_t rows, size_t cols, int type, const float *q, float *s);
void ccomp_kv_ggml_accum(const uint8_t *blocks, size_t rows, size_t cols, int type, const float *p, float *o);

/* --------------------------------------------------------- methods */

/* One id per method name, shared by the C core, the Python binding and the CUDA kernels: each line is the
 * method's row of the table (csrc/kv/methods.c builds it from this list; the method's file defines
 * `const ccomp_kv_method ccomp_kv_method_<name>`).  Ids are positions in this list; they never travel in
 * a container (ccomp.kv's format stores the name). */
#define CCOMP_KV_METHODS(X)                                                                                            \
    X(DENSE, dense)                                                                                                    \
    X(GROUPWISE, groupwise)                                                                                            \
    X(Q8_0, q8_0)                                                                                                      \
    X(Q4_0, q4_0)                                                                                                      \
    X(TURBO, turbo)                                                                                                    \
    X(SPARSE, bitmap_sparse)                                                                                           \
    X(GEAR, gear)

enum {
#define CCOMP_KV_METHOD_ID_(ID, name) CCOMP_KV_M_##ID,
    CCOMP_KV_METHODS(CCOMP_KV_METHOD_ID_)
#undef CCOMP_KV_METHOD_ID_
        CCOMP_KV_M_COUNT
};

/* The parameters of every method; a method reads only its own (ccomp_kv_method.params names them). */
typedef struct ccomp_kv_params {
    int bits;      /* groupwise, gear: 2, 3, 4 or 8; turbo: 1 to 4 */
    int group;     /* groupwise, gear: 32, 64 or 128 */
    int axis;      /* groupwise, gear: CCOMP_KV_PER_CHANNEL or CCOMP_KV_PER_TOKEN */
    int qjl;       /* turbo: 1 with the QJL residual sketch */
    int rank;      /* gear: rank of the low-rank term (0: none) */
    int iters;     /* gear: power iterations */
    double frac;   /* bitmap_sparse: the sparsity; gear: the outlier fraction */
    uint64_t seed; /* turbo: rotation and QJL; gear: the low-rank fit */
} ccomp_kv_params;

/* --------------------------------------------------------- attention */

/* One compressed K or V slice, whatever its method.  A cache may be made of
 * several segments along the tokens (e.g. KIVI: quantized blocks, then the
 * recent tokens in full precision): `next` chains them, rows add up. */
typedef struct ccomp_kv_slice {
    int method;       /* CCOMP_KV_M_* */
    const void *data; /* the method's struct (e.g. ccomp_kv_gw), the blocks for q8_0 / q4_0,
                         a float32 rows x cols matrix for dense */
    size_t rows, cols;
    const struct ccomp_kv_slice *next;
} ccomp_kv_slice;

/* Total tokens of a chain of segments. */
size_t ccomp_kv_slice_rows(const ccomp_kv_slice *k);

/* data: DENSE float32 rows x cols; GROUPWISE ccomp_kv_gw; Q8_0 / Q4_0 the blocks; TURBO ccomp_kv_turbo
 * (ccomp/kv_turbo.h); SPARSE ccomp_kv_sparse and GEAR ccomp_kv_gear (ccomp/kv_sparse.h). */

/* ------------------------------------------------------ the method table */

/* The arrays one slice of a method needs (ccomp.kv's QuantizedTensor.arrays, in this order). */
#define CCOMP_KV_MAX_ARRAYS 7
typedef struct ccomp_kv_layout {
    int method;
    size_t rows, cols;
    ccomp_kv_params p;
    int n;                                  /* number of arrays */
    const char *name[CCOMP_KV_MAX_ARRAYS];  /* e.g. "codes" */
    const char *dtype[CCOMP_KV_MAX_ARRAYS]; /* "u1", "u2", "u4", "u8" or "f4" (NumPy's codes) */
    size_t count[CCOMP_KV_MAX_ARRAYS];      /* elements per slice */
    unsigned index_mask; /* bit i: array i holds indices the kernels address memory with (snapshot them
                            before ccomp_kv_method.validate when another thread may rewrite them) */
    size_t aux_floats;   /* float32 scratch shared by every slice of a call (turbo QJL: its D x D matrix) */
} ccomp_kv_layout;

/* Room for a slice's method struct (every method's fits: checked where it is defined). */
typedef union ccomp_kv_storage {
    void *align_p;
    double align_d;
    uint64_t align_u;
    unsigned char bytes[256];
} ccomp_kv_storage;

/* One slice's method struct and the ccomp_kv_slice on it. */
typedef struct ccomp_kv_view {
    ccomp_kv_storage u;
    ccomp_kv_slice slice;
} ccomp_kv_view;

/* A method: what the binding, attention and the dequantizer switch on (ggml's type_traits, zstd's
 * blockCompressor table).  Every function gets a slice built by `view`. */
typedef struct ccomp_kv_method {
    const char *name;   /* ccomp.kv's method name */
    const char *params; /* the ccomp.kv parameter keys it keeps, sorted, space-separated ("axis bits group") */
    /* checks rows x cols and the parameters (CCOMP_ERR_VALUE saying which), fills L */
    ccomp_status (*layout)(size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                           ccomp_error *err);
    /* fills the call's scratch (L->aux_floats floats); NULL when it needs none */
    void (*prepare)(const ccomp_kv_layout *L, float *aux);
    /* slice over its arrays (arrays[i]: L->count[i] elements of L->dtype[i]) */
    void (*view)(const ccomp_kv_layout *L, void *const *arrays, const float *aux, ccomp_kv_view *v);
    /* the index arrays refer only to stored values (CCOMP_ERR_CORRUPT otherwise); NULL: nothing to check */
    ccomp_status (*validate)(const ccomp_kv_layout *L, const ccomp_kv_slice *s, ccomp_error *err);
    /* rows x cols float32 (row stride ld) into the slice's arrays; NULL: not a quantizer (dense) */
    ccomp_status (*quantize)(const ccomp_kv_layout *L, const float *x, size_t ld, const ccomp_kv_slice *s,
                             ccomp_error *err);
    void (*scores)(const ccomp_kv_slice *k, const float *q, float *s);
    void (*accum)(const ccomp_kv_slice *v, const float *p, float *o);
    /* rows [r0, r0 + n) as a slice of its own (out is a copy of s with rows = n; r0 and n multiples of any
     * per-channel group); its struct lives in u */
    void (*sub)(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out);
    /* the slice's rows as float32 (into buf, rows x cols, or in place for dense data) */
    const float *(*rows)(const ccomp_kv_slice *t, float *buf);
    /* 1 when accumulating in row steps gives the bits of one pass (the method adds every row straight
     * into o), 0 when it sums privately first */
    int (*accum_steps_exact)(const ccomp_kv_slice *v);
    /* 1 when the scores are the dot products of q with `rows` (attention's multi-query path decodes tiles
     * once for many queries); 0 when they are not (turbo's QJL estimate) */
    int (*scores_are_dots)(const ccomp_kv_slice *k);
} ccomp_kv_method;

/* The method with this id (CCOMP_KV_M_*), NULL when there is none. */
const ccomp_kv_method *ccomp_kv_method_get(int id);

/* ccomp_kv_method_get(id)->layout, with the shape bounded (rows x cols at most 2^40, cols >= 1) and an
 * unknown id rejected, each with CCOMP_ERR_VALUE. */
ccomp_status ccomp_kv_layout_init(int id, size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                                  ccomp_error *err);

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

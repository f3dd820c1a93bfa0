// Shared pieces of ccomp.kv's CUDA files (kernels/kv_*.cu): constants, exact scalar conversions, loads
// and stores, the job every kernel reads, the decoders of a unit of 8 values that several operations use,
// and the host-side checks and launches.  Included inside each file's anonymous namespace (like
// cuda_host.cuh), so every object keeps its own copy and exports nothing.
//
// The specification is the C core (csrc/kv/*.c, ccomp/kv.h, kv_turbo.h,
// kv_sparse.h); ccomp_cuda.h documents the entry points.
//
// Bit-exactness of codes, scales and dequantized values with the CPU:
//  - every float operation of the CPU formulas is an explicit round-to-nearest
//    intrinsic (__fadd_rn, __fdiv_rn, __dmul_rn, ...), which nvcc never
//    contracts into an FMA (the CPU core is built with -ffp-contract=off);
//  - fp16 <-> fp32 conversions are ports of csrc/util/half.c (round to
//    nearest even, overflow to infinity, subnormals, NaN payloads);
//  - where the CPU keeps the first of equal values (q4_0's value of largest
//    magnitude; a group's min/max, whose -0 then becomes +0), the parallel
//    reductions combine partial results in index order;
//  - sums whose order the CPU fixes (turbo's float64 norms, QJL's matrix-vector
//    products, GEAR's low-rank dot products) are computed in the same order by
//    one thread; the fast Walsh-Hadamard transform is the same butterfly graph.
// Attention is float32 arithmetic in another order than the CPU's (relative
// differences ~1e-6): scores s = K q per K segment into a workspace, then per
// chunk of CHUNK tokens of every V segment a partial softmax (max, sum) and the
// partial output, then one combine kernel (split-K / flash-decoding), so that
// one sequence of one batch still fills the GPU.
#ifndef CCOMP_KV_COMMON_CUH
#define CCOMP_KV_COMMON_CUH

constexpr unsigned FULL = 0xffffffffu;
constexpr int NT = 256; // threads of the element-wise kernels (a multiple of 32)
constexpr int SCORE_T = 128; // tokens (one per thread) of a scores block
constexpr int ACC_T = 256; // threads of an accumulation block
constexpr int CHUNK = 256; // tokens of an accumulation block (a multiple of every group size)
constexpr int RB_MAX = 4; // query rows handled together by the attention kernels
constexpr int AXIS_CHANNEL = 0;
constexpr int AXIS_TOKEN = 1;

// -------------------------------------------------------------- exact scalars

__device__ __forceinline__ bool finite_f(float v)
{
    return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}

// ccomp_f32_to_f16 (csrc/util/half.c), bit for bit.
__device__ __forceinline__ uint32_t f32_to_f16(float f)
{
    const uint32_t x = __float_as_uint(f), sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    int32_t exp = (int32_t)((x >> 23) & 0xffu);
    if (exp == 0xff) return sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u);
    exp -= 127 - 15;
    if (exp >= 0x1f) return sign | 0x7c00u;
    if (exp <= 0) {
        if (exp < -10) return sign;
        const uint32_t m = mant | 0x800000u, shift = (uint32_t)(14 - exp), half_bit = 1u << (shift - 1);
        const uint32_t rest = m & ((half_bit << 1) - 1u);
        uint32_t r = m >> shift;
        if (rest > half_bit || (rest == half_bit && (r & 1u))) r++;
        return sign | r;
    }
    uint32_t r = ((uint32_t)exp << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) r++;
    return sign | r;
}

// ccomp_f16_to_f32, bit for bit (subnormals are m * 2^-24, exact in float32).
__device__ __forceinline__ float f16_to_f32(uint32_t h)
{
    const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0) return __uint_as_float(sign | __float_as_uint(__fmul_rn((float)m, 5.9604644775390625e-8f)));
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

// An fp16 input element (exact; NaN inputs are rejected whatever their payload).
__device__ __forceinline__ float in_f16(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}

// ---------------------------------------------------------- loads and stores

// 8 consecutive input elements; vec: the address is 16-byte aligned.
__device__ __forceinline__ void load8(const float *p, bool vec, float v[8])
{
    if (vec) {
        const float4 a = __ldg(reinterpret_cast<const float4 *>(p)), b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = __ldg(p + k);
    }
}

__device__ __forceinline__ void load8(const uint16_t *p, bool vec, float v[8])
{
    if (vec) {
        const uint4 a = __ldg(reinterpret_cast<const uint4 *>(p));
        const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v[2 * k] = in_f16((uint16_t)(w[k] & 0xffffu));
            v[2 * k + 1] = in_f16((uint16_t)(w[k] >> 16));
        }
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = in_f16(__ldg(p + k));
    }
}

__device__ __forceinline__ void store8(float *p, bool vec, const float v[8])
{
    if (vec) {
        reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) p[k] = v[k];
    }
}

// float16 output: the float32 result rounded to nearest even (as NumPy's astype).
__device__ __forceinline__ void store8(uint16_t *p, bool vec, const float v[8])
{
    uint32_t h[8];
#pragma unroll
    for (int k = 0; k < 8; k++) h[k] = f32_to_f16(v[k]);
    if (vec) {
        *reinterpret_cast<uint4 *>(p) =
            make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) p[k] = (uint16_t)h[k];
    }
}

// The BITS bytes holding 8 consecutive b-bit codes (little-endian).
template <int BITS> __device__ __forceinline__ uint64_t load_unit(const uint8_t *p)
{
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (BITS == 8 && (a & 7u) == 0) return __ldg(reinterpret_cast<const unsigned long long *>(p));
    if (BITS == 4 && (a & 3u) == 0) return __ldg(reinterpret_cast<const unsigned int *>(p));
    if (BITS == 2 && (a & 1u) == 0) return __ldg(reinterpret_cast<const unsigned short *>(p));
    uint64_t v = 0;
#pragma unroll
    for (int k = 0; k < BITS; k++) v |= (uint64_t)__ldg(p + k) << (8 * k);
    return v;
}

template <int BITS> __device__ __forceinline__ void store_unit(uint8_t *p, uint64_t v)
{
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (BITS == 8 && (a & 7u) == 0) {
        *reinterpret_cast<unsigned long long *>(p) = v;
    } else if (BITS == 4 && (a & 3u) == 0) {
        *reinterpret_cast<unsigned int *>(p) = (unsigned int)v;
    } else if (BITS == 2 && (a & 1u) == 0) {
        *reinterpret_cast<unsigned short *>(p) = (unsigned short)v;
    } else {
#pragma unroll
        for (int k = 0; k < BITS; k++) p[k] = (uint8_t)(v >> (8 * k));
    }
}

// ggml blocks (ccomp/kv.h: ccomp_kv_block_q8_0 / _q4_0, declared once for C and CUDA): their size, and where
// their values start after the fp16 scale.
__host__ __device__ constexpr size_t ggml_block_bytes(bool q8)
{
    return q8 ? sizeof(ccomp_kv_block_q8_0) : sizeof(ccomp_kv_block_q4_0);
}
constexpr size_t QS = offsetof(ccomp_kv_block_q8_0, qs);
static_assert(offsetof(ccomp_kv_block_q4_0, qs) == QS, "q8_0 and q4_0 values start together");

// 8 bytes at a 2-byte aligned address (ggml blocks have an even size).
__device__ __forceinline__ void store8_bytes_a2(uint8_t *p, uint64_t v)
{
    unsigned short *q = reinterpret_cast<unsigned short *>(p);
#pragma unroll
    for (int k = 0; k < 4; k++) q[k] = (unsigned short)(v >> (16 * k));
}

__device__ __forceinline__ uint32_t ld_u16(const uint8_t *p)
{
    return (uint32_t)__ldg(p) | (uint32_t)__ldg(p + 1) << 8;
}

// Data the CPU would reject in slice s: keep the lowest such slice.
__device__ __forceinline__ void report(uint32_t *flag, size_t s)
{
    atomicMin(flag, (unsigned int)s);
}

// A code as float without a conversion instruction: 2^23 + code, minus 2^23 (exact).
__device__ __forceinline__ float code_float(uint32_t c)
{
    return __uint_as_float(0x4b000000u | c) - 8388608.0f;
}

// ------------------------------------------------------------------ the job

// Everything the element-wise kernels need, by value (a few hundred bytes).
struct Job {
    size_t S, T, D;
    int bits, group, axis, rank;
    const void *xin;
    void *xout;
    size_t x_ss, x_ld;
    int vec; // 16-byte access of x is aligned
    uint8_t *codes;
    size_t codes_ss;
    uint16_t *scale, *zero;
    size_t scale_ss, zero_ss;
    uint8_t *blocks;
    size_t blocks_ss;
    float *norms;
    size_t norms_ss;
    uint8_t *signs;
    size_t signs_ss;
    float *res_norms;
    size_t res_ss;
    uint64_t *bitmaps;
    size_t bitmaps_ss;
    uint32_t *offsets;
    size_t offsets_ss;
    uint16_t *values;
    size_t values_ss, values_n;
    uint16_t *out_idx, *out_vals;
    size_t idx_ss, vals_ss, per_row;
    uint16_t *U, *W;
    size_t U_ss, W_ss;
    size_t kept;
    int qjl;
    uint32_t sign_mask[32]; // turbo: bit j set <=> the rotation sign of channel j is -1
    float cent[16], thr[16];
    const float *st; // turbo QJL matrix, transposed
    uint32_t *flag;
};

// The 8 values of unit cu of token t: scale * code + zero (dequantize of groupwise.c).
template <int BITS, int AXIS>
__device__ __forceinline__ void gw_unit(const Job &j, size_t s, size_t t, size_t cu, float v[8])
{
    const size_t U = j.D / 8, G = (size_t)j.group;
    const uint64_t p = load_unit<BITS>(j.codes + s * j.codes_ss + (t * U + cu) * BITS);
    const uint32_t mask = (1u << BITS) - 1u;
    if (AXIS == AXIS_TOKEN) {
        const size_t gi = t * (j.D / G) + cu * 8 / G;
        const float sc = f16_to_f32(__ldg(j.scale + s * j.scale_ss + gi)),
                    z = f16_to_f32(__ldg(j.zero + s * j.zero_ss + gi));
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = __fadd_rn(__fmul_rn(sc, (float)((uint32_t)(p >> (k * BITS)) & mask)), z);
    } else {
        const size_t base = (t / G) * j.D + cu * 8;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float sc = f16_to_f32(__ldg(j.scale + s * j.scale_ss + base + k));
            const float z = f16_to_f32(__ldg(j.zero + s * j.zero_ss + base + k));
            v[k] = __fadd_rn(__fmul_rn(sc, (float)((uint32_t)(p >> (k * BITS)) & mask)), z);
        }
    }
}

// ------------------------------------------------------------ ggml blocks

constexpr int Q8_0 = 0;
constexpr int Q4_0 = 1;

// Values 8q .. 8q + 7 of a q8_0 / q4_0 block: d * q (block_values of ggml.c).
template <int TYPE> __device__ __forceinline__ void ggml_unit(const uint8_t *blk, unsigned q, float v[8])
{
    const float d = f16_to_f32(ld_u16(blk));
    if constexpr (TYPE == Q8_0) {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = __fmul_rn(d, (float)(int8_t)__ldg(blk + QS + 8 * q + k));
    } else {
        const unsigned sh = q >= 2 ? 4 : 0;
#pragma unroll
        for (int k = 0; k < 8; k++)
            v[k] = __fmul_rn(d, (float)((int)((__ldg(blk + QS + 8 * (q & 1u) + k) >> sh) & 15u) - 8));
    }
}

template <class TIn> __device__ __forceinline__ float load_one(const TIn *p);
template <> __device__ __forceinline__ float load_one<float>(const float *p)
{
    return __ldg(p);
}
template <> __device__ __forceinline__ float load_one<uint16_t>(const uint16_t *p)
{
    return in_f16(__ldg(p));
}

// ------------------------------------------------------------------ host side

#include "cuda_host.cuh"

// Every launch goes through here: the dynamic shared memory limit is raised when needed.
template <class... P, class... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A... args)
{
    if (smem > 48 * 1024) {
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    CCOMP_LAUNCH(grid, block, smem, stream, kernel)(args...);
    return cudaGetLastError();
}

inline unsigned blocks_of(size_t n, size_t per)
{
    return (unsigned)((n + per - 1) / per);
}

inline bool aligned16(const void *p, size_t ss, size_t ld, size_t S, size_t T, size_t es)
{
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0 && (S <= 1 || (ss * es) % 16 == 0) &&
           (T <= 1 || (ld * es) % 16 == 0);
}

// --- argument checks (the Python layer checks first with friendlier messages; these keep bad values
// from reaching a kernel)

inline ccomp_status check_array(const ccomp_cuda_kv_array &a, size_t need, size_t S, size_t es, const char *name, ccomp_error *err)
{
    if (need == 0) return CCOMP_OK;
    if (a.ptr == NULL) return reject(err, "array '%s' is missing", name);
    if (reinterpret_cast<uintptr_t>(a.ptr) % es != 0)
        return reject(err, "array '%s' is not aligned to its %zu-byte elements", name, es);
    if (a.count < need)
        return reject(err, "array '%s' holds %zu elements per slice, expected at least %zu", name, a.count,
                      need);
    if (S > 1 && a.stride < need)
        return reject(err, "array '%s' has a slice stride of %zu elements, below the %zu it needs", name,
                      a.stride, need);
    return CCOMP_OK;
}

inline bool is_pow2(size_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

inline ccomp_status check_x(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    if (d->x == NULL) return reject(err, "the dense tensor is missing");
    if (d->x_dtype != CCOMP_CUDA_KV_FLOAT32 && d->x_dtype != CCOMP_CUDA_KV_FLOAT16)
        return reject(err, "the dense tensor must be float32 or float16, got dtype code %d", d->x_dtype);
    const size_t es = d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? 4 : 2;
    if (reinterpret_cast<uintptr_t>(d->x) % es != 0) return reject(err, "the dense tensor is misaligned");
    if ((d->T > 1 && d->x_ld < d->D) || (d->S > 1 && d->x_ss < (d->T ? (d->T - 1) * d->x_ld + d->D : 0)))
        return reject(err, "the dense tensor's strides (%zu, %zu) overlap its %zu x %zu slices", d->x_ss,
                      d->x_ld, d->T, d->D);
    return CCOMP_OK;
}

// The shape of a tensor, then its method's parameters and arrays (the method's row of the CUDA table).
inline ccomp_status check_desc(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    const ccomp_kv_cuda_method *m = ccomp_kv_cuda_method_get(d->method);
    if (d->S >= 0xffffffffu) return reject(err, "too many slices (%zu)", d->S);
    if (d->D == 0 || d->D % 8 != 0) return reject(err, "head dim must be a positive multiple of 8, got %zu", d->D);
    if (m == NULL) return reject(err, "unknown method %d", d->method);
    return m->check(d, err);
}

// The groupwise arrays (codes, scale, zero) of groupwise and GEAR's backbone.
inline ccomp_status check_gw(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    const size_t S = d->S, T = d->T, D = d->D;
    const int b = d->bits, G = d->group;
    ccomp_status rc;
    if (b != 2 && b != 3 && b != 4 && b != 8) return reject(err, "bits must be 2, 3, 4 or 8, got %d", b);
    if (G != 32 && G != 64 && G != 128) return reject(err, "group size must be 32, 64 or 128, got %d", G);
    if (d->axis != AXIS_CHANNEL && d->axis != AXIS_TOKEN)
        return reject(err, "axis must be 0 (per channel) or 1 (per token), got %d", d->axis);
    if (D > 1024) return reject(err, "head dim must be at most 1024, got %zu", D);
    if (d->axis == AXIS_TOKEN && D % (size_t)G != 0)
        return reject(err, "head dim must be a multiple of the group size %d, got %zu", G, D);
    if (d->axis == AXIS_CHANNEL && T % (size_t)G != 0)
        return reject(err, "per-channel groups need a token count that is a multiple of the group size %d, got %zu", G,
                      T);
    const size_t ng = d->axis == AXIS_CHANNEL ? T / (size_t)G * D : T * (D / (size_t)G);
    if ((rc = check_array(d->codes, T * D / 8 * (size_t)b, S, 1, "codes", err)) ||
        (rc = check_array(d->scale, ng, S, 2, "scale", err)) || (rc = check_array(d->zero, ng, S, 2, "zero", err)))
        return rc;
    return CCOMP_OK;
}

inline Job make_job(const ccomp_cuda_kv_desc *d)
{
    Job j;
    memset(&j, 0, sizeof j);
    j.S = d->S, j.T = d->T, j.D = d->D;
    j.bits = d->bits, j.group = d->group, j.axis = d->axis, j.rank = d->rank;
    j.xin = d->x, j.xout = d->x, j.x_ss = d->x_ss, j.x_ld = d->x_ld;
    j.vec = aligned16(d->x, d->x_ss, d->x_ld, d->S, d->T, d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? 4 : 2);
    j.codes = (uint8_t *)d->codes.ptr, j.codes_ss = d->codes.stride;
    j.scale = (uint16_t *)d->scale.ptr, j.scale_ss = d->scale.stride;
    j.zero = (uint16_t *)d->zero.ptr, j.zero_ss = d->zero.stride;
    j.blocks = (uint8_t *)d->blocks.ptr, j.blocks_ss = d->blocks.stride;
    j.norms = (float *)d->norms.ptr, j.norms_ss = d->norms.stride;
    j.signs = (uint8_t *)d->signs.ptr, j.signs_ss = d->signs.stride;
    j.res_norms = (float *)d->res_norms.ptr, j.res_ss = d->res_norms.stride;
    j.bitmaps = (uint64_t *)d->bitmaps.ptr, j.bitmaps_ss = d->bitmaps.stride;
    j.offsets = (uint32_t *)d->offsets.ptr, j.offsets_ss = d->offsets.stride;
    j.values = (uint16_t *)d->values.ptr, j.values_ss = d->values.stride, j.values_n = d->values.count;
    j.out_idx = (uint16_t *)d->out_idx.ptr, j.idx_ss = d->out_idx.stride;
    j.out_vals = (uint16_t *)d->out_vals.ptr, j.vals_ss = d->out_vals.stride, j.per_row = d->per_row;
    j.U = (uint16_t *)d->U.ptr, j.U_ss = d->U.stride;
    j.W = (uint16_t *)d->W.ptr, j.W_ss = d->W.stride;
    j.kept = d->kept;
    j.qjl = d->qjl;
    j.st = d->qjl_matrix_t;
    for (int i = 0; i < 16; i++) j.cent[i] = d->centroids[i], j.thr[i] = d->thresholds[i];
    j.flag = d->flag;
    return j;
}

inline int e_of(size_t D)
{
    return D <= 32 ? 1 : (int)(D / 32);
}


// Queues the flag reset, the kernels and (check) the read-back of the first bad slice.
template <class F> ccomp_status run_checked(const ccomp_cuda_kv_desc *d, cudaStream_t st, int check, int64_t *first_bad,
                                   F kernels, const char *what, ccomp_error *err)
{
    *first_bad = -1;
    cudaError_t e = cudaSuccess;
    const bool flagged = d->flag != NULL;
    if (check && !flagged) return reject(err, "%s: a data check needs the flag buffer", what);
    if (flagged && (e = cudaMemsetAsync(d->flag, 0xff, sizeof(uint32_t), st)) != cudaSuccess)
        return fail(err, e, "cudaMemsetAsync");
    if ((e = kernels()) != cudaSuccess) return fail(err, e, what);
    if (check) {
        uint32_t h = 0xffffffffu;
        if ((e = cudaMemcpyAsync(&h, d->flag, sizeof h, cudaMemcpyDeviceToHost, st)) != cudaSuccess)
            return fail(err, e, "cudaMemcpyAsync (data check)");
        if ((e = cudaStreamSynchronize(st)) != cudaSuccess) return fail(err, e, what);
        *first_bad = h == 0xffffffffu ? -1 : (int64_t)h;
    }
    return CCOMP_OK;
}

#endif

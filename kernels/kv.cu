// GPU path of ccomp.kv: groupwise, ggml q8_0/q4_0, turbo, bitmap_sparse and GEAR
// (de)quantization, and decode attention computed on the compressed cache.
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
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "launch.cuh"

namespace
{

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

// ------------------------------------------------------------- groupwise

struct Group {
    float s, z;
    uint32_t s16, z16;
    bool ok;
};

// zero = fp16(min), scale = fp16((max - min) / (2^b - 1)) with -0 taken as +0; ok: both finite
// (kv_group_params of groupwise.c).
template <int BITS> __device__ __forceinline__ Group group_params(float lo, float hi)
{
    const float levels = (float)((1u << BITS) - 1u);
    lo = __fadd_rn(lo, 0.0f);
    hi = __fadd_rn(hi, 0.0f);
    Group g;
    g.z16 = f32_to_f16(lo);
    g.s16 = f32_to_f16(__fdiv_rn(__fsub_rn(hi, lo), levels));
    g.z = f16_to_f32(g.z16);
    g.s = f16_to_f32(g.s16);
    g.ok = finite_f(g.z) && finite_f(g.s);
    return g;
}

// code_of of groupwise.c: clamp(trunc((v - z) / s + 0.5), 0, 2^b - 1), 0 when s is 0.
template <int BITS> __device__ __forceinline__ uint32_t code_of(float v, float z, float s)
{
    const float levels = (float)((1u << BITS) - 1u);
    if (s == 0.0f) return 0;
    float t = __fadd_rn(__fdiv_rn(__fsub_rn(v, z), s), 0.5f);
    t = t < 0.0f ? 0.0f : (t > levels ? levels : t);
    return (uint32_t)__float2int_rz(t);
}

// Groups of G channels of a token: one thread per 8 channels, G / 8 = UG lanes per group,
// min/max combined across the group's lanes in channel order.
template <class TIn, int BITS, int UG> __global__ void __launch_bounds__(NT) gw_quantize_token(Job j)
{
    const size_t U = j.D / 8, units = j.S * j.T * U;
    const size_t u0 = (size_t)blockIdx.x * NT + threadIdx.x;
    const bool live = u0 < units;
    const size_t u = live ? u0 : units - 1; // idle lanes still take part in the shuffles
    const size_t row = u / U, cu = u - row * U, s = row / j.T, t = row - s * j.T;
    float v[8];
    load8(static_cast<const TIn *>(j.xin) + s * j.x_ss + t * j.x_ld + cu * 8, j.vec != 0, v);
    bool ok = true;
    float lo = v[0], hi = v[0];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        ok = ok && finite_f(v[k]);
        lo = v[k] < lo ? v[k] : lo; // the first of equal values stays (+0 / -0)
        hi = v[k] > hi ? v[k] : hi;
    }
    const unsigned lane = threadIdx.x & 31u;
#pragma unroll
    for (int o = 1; o < UG; o <<= 1) {
        const float olo = __shfl_xor_sync(FULL, lo, o), ohi = __shfl_xor_sync(FULL, hi, o);
        if (lane & (unsigned)o) { // this lane holds the later channels
            lo = lo < olo ? lo : olo;
            hi = hi > ohi ? hi : ohi;
        } else {
            lo = olo < lo ? olo : lo;
            hi = ohi > hi ? ohi : hi;
        }
    }
    const Group g = group_params<BITS>(lo, hi);
    if (!live) return;
    if (!(ok && g.ok)) report(j.flag, s);
    uint64_t packed = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) packed |= (uint64_t)code_of<BITS>(v[k], g.z, g.s) << (k * BITS);
    store_unit<BITS>(j.codes + s * j.codes_ss + (t * U + cu) * BITS, packed);
    if (cu % UG == 0) {
        const size_t gi = t * (U / UG) + cu / UG;
        j.scale[s * j.scale_ss + gi] = (uint16_t)g.s16;
        j.zero[s * j.zero_ss + gi] = (uint16_t)g.z16;
    }
}

// Groups of G tokens of a channel: a block per (slice, token group); nsub row ranges of G / nsub
// tokens per 8-channel unit, their min/max combined in token order through shared memory.
template <class TIn, int BITS> __global__ void __launch_bounds__(NT) gw_quantize_channel(Job j, int nsub)
{
    CCOMP_DYNAMIC_SHARED(unsigned char, kv_smem);
    const size_t D = j.D, U = D / 8, G = (size_t)j.group, ng = j.T / G;
    const size_t s = blockIdx.x / ng, g = blockIdx.x - s * ng;
    float *lo_p = reinterpret_cast<float *>(kv_smem), *hi_p = lo_p + (size_t)nsub * D;
    float *zs = hi_p + (size_t)nsub * D, *ss = zs + D;
    const unsigned tid = threadIdx.x;
    const bool active = tid < U * (size_t)nsub;
    const size_t cu = tid % U, sub = tid / U, rpt = G / (size_t)nsub;
    const size_t r0 = g * G + sub * rpt;
    const TIn *x = static_cast<const TIn *>(j.xin) + s * j.x_ss + cu * 8;
    bool ok = true;
    if (active) {
        float lo[8], hi[8], v[8];
        load8(x + r0 * j.x_ld, j.vec != 0, v);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            lo[k] = hi[k] = v[k];
            ok = ok && finite_f(v[k]);
        }
        for (size_t r = 1; r < rpt; r++) {
            load8(x + (r0 + r) * j.x_ld, j.vec != 0, v);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                ok = ok && finite_f(v[k]);
                lo[k] = v[k] < lo[k] ? v[k] : lo[k];
                hi[k] = v[k] > hi[k] ? v[k] : hi[k];
            }
        }
#pragma unroll
        for (int k = 0; k < 8; k++) {
            lo_p[sub * D + cu * 8 + k] = lo[k];
            hi_p[sub * D + cu * 8 + k] = hi[k];
        }
    }
    __syncthreads();
    for (size_t c = tid; c < D; c += blockDim.x) {
        float lo = lo_p[c], hi = hi_p[c];
        for (int b = 1; b < nsub; b++) { // later token ranges replace only on a strict improvement
            const float a = lo_p[(size_t)b * D + c], h = hi_p[(size_t)b * D + c];
            lo = a < lo ? a : lo;
            hi = h > hi ? h : hi;
        }
        const Group gp = group_params<BITS>(lo, hi);
        ok = ok && gp.ok;
        j.scale[s * j.scale_ss + g * D + c] = (uint16_t)gp.s16;
        j.zero[s * j.zero_ss + g * D + c] = (uint16_t)gp.z16;
        zs[c] = gp.z;
        ss[c] = gp.s;
    }
    __syncthreads();
    if (active) {
        float z[8], sc[8], v[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            z[k] = zs[cu * 8 + k];
            sc[k] = ss[cu * 8 + k];
        }
        for (size_t r = 0; r < rpt; r++) {
            load8(x + (r0 + r) * j.x_ld, j.vec != 0, v);
            uint64_t packed = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) packed |= (uint64_t)code_of<BITS>(v[k], z[k], sc[k]) << (k * BITS);
            store_unit<BITS>(j.codes + s * j.codes_ss + ((r0 + r) * U + cu) * BITS, packed);
        }
    }
    if (!ok) report(j.flag, s);
}

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

template <int BITS, int AXIS, class TOut> __global__ void __launch_bounds__(NT) gw_dequantize(Job j)
{
    const size_t U = j.D / 8, units = j.S * j.T * U;
    const size_t u = (size_t)blockIdx.x * NT + threadIdx.x;
    if (u >= units) return;
    const size_t row = u / U, cu = u - row * U, s = row / j.T, t = row - s * j.T;
    float v[8];
    gw_unit<BITS, AXIS>(j, s, t, cu, v);
    store8(static_cast<TOut *>(j.xout) + s * j.x_ss + t * j.x_ld + cu * 8, j.vec != 0, v);
}

// ------------------------------------------------------------------ GEAR

// backbone + outliers (in their order) + U W^T, each term as csrc/kv/gear.c adds it.
template <int BITS, int AXIS, class TOut> __global__ void __launch_bounds__(NT) gear_dequantize(Job j)
{
    const size_t U = j.D / 8, units = j.S * j.T * U;
    const size_t u = (size_t)blockIdx.x * NT + threadIdx.x;
    if (u >= units) return;
    const size_t row = u / U, cu = u - row * U, s = row / j.T, t = row - s * j.T, c0 = cu * 8;
    float v[8];
    gw_unit<BITS, AXIS>(j, s, t, cu, v);
    bool ok = true;
    const uint16_t *idx = j.out_idx + s * j.idx_ss + t * j.per_row, *val = j.out_vals + s * j.vals_ss + t * j.per_row;
    for (size_t m = 0; m < j.per_row; m++) {
        const size_t c = __ldg(idx + m);
        if (c >= j.D) {
            ok = false;
        } else if (c >= c0 && c < c0 + 8) {
            const float o = f16_to_f32(__ldg(val + m));
#pragma unroll
            for (int k = 0; k < 8; k++)
                if (c == c0 + (size_t)k) v[k] = __fadd_rn(v[k], o);
        }
    }
    if (j.rank > 0) {
        const size_t r = (size_t)j.rank;
        const uint16_t *ut = j.U + s * j.U_ss + t * r, *w = j.W + s * j.W_ss + c0 * r;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (size_t k = 0; k < r; k++) {
            const float uk = f16_to_f32(__ldg(ut + k));
#pragma unroll
            for (int c = 0; c < 8; c++)
                acc[c] = __fadd_rn(acc[c], __fmul_rn(uk, f16_to_f32(__ldg(w + (size_t)c * r + k))));
        }
#pragma unroll
        for (int c = 0; c < 8; c++) v[c] = __fadd_rn(v[c], acc[c]);
    }
    if (!ok) report(j.flag, s);
    store8(static_cast<TOut *>(j.xout) + s * j.x_ss + t * j.x_ld + c0, j.vec != 0, v);
}

// ------------------------------------------------------------ ggml blocks

constexpr int Q8_0 = 0;
constexpr int Q4_0 = 1;

// One thread per 8 values, 4 lanes per block of 32 (ggml's quantize_row_q8_0_ref / _q4_0_ref).
template <class TIn, int TYPE> __global__ void __launch_bounds__(NT) ggml_quantize(Job j)
{
    constexpr size_t BB = ggml_block_bytes(TYPE == Q8_0);
    const size_t U = j.D / 8, units = j.S * j.T * U;
    const size_t u0 = (size_t)blockIdx.x * NT + threadIdx.x;
    const bool live = u0 < units;
    const size_t u = live ? u0 : units - 1;
    const size_t row = u / U, cu = u - row * U, s = row / j.T, t = row - s * j.T;
    const unsigned lane = threadIdx.x & 31u, q = (unsigned)(cu & 3u);
    float v[8];
    load8(static_cast<const TIn *>(j.xin) + s * j.x_ss + t * j.x_ld + cu * 8, j.vec != 0, v);
    bool ok = true;
#pragma unroll
    for (int k = 0; k < 8; k++) ok = ok && finite_f(v[k]);
    uint8_t *blk = j.blocks + s * j.blocks_ss + (t * (j.D / 32) + cu / 4) * BB;
    if constexpr (TYPE == Q8_0) {
        float amax = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float a = fabsf(v[k]);
            amax = a > amax ? a : amax;
        }
#pragma unroll
        for (int o = 1; o < 4; o <<= 1) {
            const float a = __shfl_xor_sync(FULL, amax, o);
            amax = a > amax ? a : amax;
        }
        const float d = __fdiv_rn(amax, 127.0f), id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
        if (!live) return;
        uint64_t bytes = 0;
#pragma unroll
        for (int k = 0; k < 8; k++) bytes |= (uint64_t)(uint8_t)(int8_t)(int)roundf(__fmul_rn(v[k], id)) << (8 * k);
        if (q == 0) *reinterpret_cast<unsigned short *>(blk) = (unsigned short)f32_to_f16(d);
        store8_bytes_a2(blk + QS + 8 * q, bytes);
    } else {
        float amax = 0.0f, mx = 0.0f; // the first value of largest magnitude
#pragma unroll
        for (int k = 0; k < 8; k++)
            if (amax < fabsf(v[k])) {
                amax = fabsf(v[k]);
                mx = v[k];
            }
#pragma unroll
        for (int o = 1; o < 4; o <<= 1) {
            const float oa = __shfl_xor_sync(FULL, amax, o), om = __shfl_xor_sync(FULL, mx, o);
            const bool later_wins = (lane & (unsigned)o) ? amax > oa : oa > amax;
            if (lane & (unsigned)o) { // this lane holds the later values: it wins only when strictly larger
                if (!later_wins) amax = oa, mx = om;
            } else if (later_wins) {
                amax = oa, mx = om;
            }
        }
        const float d = __fdiv_rn(mx, -8.0f), id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
        uint32_t nib = 0;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int xi = (int8_t)__float2int_rz(__fadd_rn(__fmul_rn(v[k], id), 8.5f));
            xi = xi < 15 ? xi : 15;
            nib |= (uint32_t)xi << (4 * k);
        }
        const uint32_t high = __shfl_down_sync(FULL, nib, 2); // values 16..31 of the block are lanes 2, 3
        if (!live) return;
        if (q < 2) {
            uint64_t bytes = 0;
#pragma unroll
            for (int k = 0; k < 8; k++)
                bytes |= (uint64_t)(((nib >> (4 * k)) & 15u) | ((high >> (4 * k)) & 15u) << 4) << (8 * k);
            if (q == 0) *reinterpret_cast<unsigned short *>(blk) = (unsigned short)f32_to_f16(d);
            store8_bytes_a2(blk + QS + 8 * q, bytes);
        }
    }
    if (!ok) report(j.flag, s);
}

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

template <int TYPE, class TOut> __global__ void __launch_bounds__(NT) ggml_dequantize(Job j)
{
    constexpr size_t BB = ggml_block_bytes(TYPE == Q8_0);
    const size_t U = j.D / 8, units = j.S * j.T * U;
    const size_t u = (size_t)blockIdx.x * NT + threadIdx.x;
    if (u >= units) return;
    const size_t row = u / U, cu = u - row * U, s = row / j.T, t = row - s * j.T;
    float v[8];
    ggml_unit<TYPE>(j.blocks + s * j.blocks_ss + (t * (j.D / 32) + cu / 4) * BB, (unsigned)(cu & 3u), v);
    store8(static_cast<TOut *>(j.xout) + s * j.x_ss + t * j.x_ld + cu * 8, j.vec != 0, v);
}

// ----------------------------------------------------------------- turbo

// Lane l holds channels 32 e + l (e < E); D < 32 uses lanes 0 .. D - 1.  The unnormalized
// Walsh-Hadamard butterflies of turbo.c's fwht: the same pairs, so the same results.
// Levels h < 32 pair lanes, levels h >= 32 (D = 32 E) pair registers e and e + h / 32.
template <int E> __device__ __forceinline__ void fwht_warp(float w[E], unsigned lane, int D)
{
    for (int h = 1; h < D && h < 32; h <<= 1) {
        const bool upper = (lane & (unsigned)h) != 0;
#pragma unroll
        for (int e = 0; e < E; e++) {
            const float o = __shfl_xor_sync(FULL, w[e], h);
            w[e] = upper ? __fsub_rn(o, w[e]) : __fadd_rn(w[e], o);
        }
    }
#pragma unroll
    for (int eh = 1; eh < E; eh <<= 1)
#pragma unroll
        for (int e = 0; e < E; e++)
            if (!(e & eh)) {
                const float x = w[e], y = w[e | eh];
                w[e] = __fadd_rn(x, y);
                w[e | eh] = __fsub_rn(x, y);
            }
}

// cent[code] for every lane's code: lanes 0..15 hold the codebook.
__device__ __forceinline__ float centroid(float lane_cent, uint32_t code)
{
    return __shfl_sync(FULL, lane_cent, (int)code);
}

__device__ __forceinline__ bool neg_sign(const Job &j, int c)
{
    return (j.sign_mask[c >> 5] >> (c & 31)) & 1u;
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

// A warp per 32 rows: first each lane sums its row's squares in float64 in channel order (the
// CPU's order), then the warp rotates, codes and packs the rows one after the other.
template <class TIn, int E> __global__ void __launch_bounds__(128) turbo_quantize(Job j)
{
    CCOMP_DYNAMIC_SHARED(unsigned char, kv_smem);
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const int D = (int)j.D, b = j.bits, nt = (1 << b) - 1;
    const size_t rows = j.S * j.T, first = ((size_t)blockIdx.x * 4 + warp) * 32;
    float *rbuf = reinterpret_cast<float *>(kv_smem) + (size_t)warp * (size_t)D;
    if (first >= rows) return; // whole warps only
    float norm = 0.0f;
    {
        const size_t row = first + lane;
        if (row < rows) {
            const size_t s = row / j.T, t = row - s * j.T;
            const TIn *x = static_cast<const TIn *>(j.xin) + s * j.x_ss + t * j.x_ld;
            double acc = 0.0;
            bool ok = true;
            for (int c = 0; c < D; c += 8) {
                float v[8];
                load8(x + c, j.vec != 0, v);
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    ok = ok && finite_f(v[k]);
                    acc = __dadd_rn(acc, __dmul_rn((double)v[k], (double)v[k]));
                }
            }
            norm = __double2float_rn(__dsqrt_rn(acc));
            if (!ok || !finite_f(norm)) report(j.flag, s);
            j.norms[s * j.norms_ss + t] = norm;
        }
    }
    const float lane_cent = j.cent[lane & 15u];
    const size_t rb = (size_t)D * (size_t)b / 8;
    for (int i = 0; i < 32 && first + (size_t)i < rows; i++) {
        const size_t row = first + (size_t)i, s = row / j.T, t = row - s * j.T;
        const float nrm = __shfl_sync(FULL, norm, i);
        const TIn *x = static_cast<const TIn *>(j.xin) + s * j.x_ss + t * j.x_ld;
        float xv[E], w[E];
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int c = 32 * e + (int)lane;
            xv[e] = c < D ? load_one<TIn>(x + c) : 0.0f;
            const float u = nrm > 0.0f ? __fdiv_rn(xv[e], nrm) : 0.0f;
            w[e] = c < D && nrm > 0.0f ? (neg_sign(j, c) ? -u : u) : 0.0f;
        }
        fwht_warp<E>(w, lane, D);
        uint32_t code[E];
#pragma unroll
        for (int e = 0; e < E; e++) {
            uint32_t c = 0;
#pragma unroll
            for (int k = 0; k < 15; k++) c += k < nt && w[e] >= j.thr[k];
            code[e] = 32 * e + (int)lane < D ? c : 0u;
        }
        // pack: chunk e holds the codes of channels 32 e .. 32 e + 31, b 32-bit words
        uint8_t *out = j.codes + s * j.codes_ss + t * rb;
#pragma unroll
        for (int e = 0; e < E; e++) {
            const unsigned bit = lane * (unsigned)b, wi = bit >> 5, sh = bit & 31u;
            uint32_t word[4] = {0, 0, 0, 0};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint32_t part = 0;
                if (wi == (unsigned)k) part = code[e] << sh;
                if (sh + (unsigned)b > 32u && wi + 1u == (unsigned)k) part = code[e] >> (32u - sh);
                word[k] = k < b ? __reduce_or_sync(FULL, part) : 0u;
            }
            const size_t byte = (size_t)e * 4u * (size_t)b + lane;
            if (lane < 4u * (unsigned)b && byte < rb) {
                uint32_t wsel = word[0];
#pragma unroll
                for (int k = 1; k < 4; k++)
                    if ((lane >> 2) == (unsigned)k) wsel = word[k];
                out[byte] = (uint8_t)(wsel >> (8 * (lane & 3u)));
            }
        }
        if (!j.qjl) continue;
        // residual r = x - norm / D * s .* H c[code], its float64 norm (channel order, one lane) and
        // the signs of S r (each output summed in channel order, one lane per output)
        const float scale = __fdiv_rn(nrm, (float)D);
        float h[E];
#pragma unroll
        for (int e = 0; e < E; e++) {
            const float v = centroid(lane_cent, code[e]);
            h[e] = 32 * e + (int)lane < D ? v : 0.0f;
        }
        fwht_warp<E>(h, lane, D);
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int c = 32 * e + (int)lane;
            if (c < D) rbuf[c] = __fsub_rn(xv[e], __fmul_rn(scale, neg_sign(j, c) ? -h[e] : h[e]));
        }
        __syncwarp();
        if (lane == 0) {
            double rs = 0.0;
            for (int c = 0; c < D; c++) rs = __dadd_rn(rs, __dmul_rn((double)rbuf[c], (double)rbuf[c]));
            j.res_norms[s * j.res_ss + t] = __double2float_rn(__dsqrt_rn(rs));
        }
        uint8_t *sg = j.signs + s * j.signs_ss + t * (size_t)(D / 8);
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int i_out = 32 * e + (int)lane;
            float acc = 0.0f;
            if (i_out < D)
                for (int c = 0; c < D; c++)
                    acc = __fadd_rn(acc, __fmul_rn(__ldg(j.st + (size_t)c * D + i_out), rbuf[c]));
            const uint32_t bits = __ballot_sync(FULL, i_out < D && acc >= 0.0f);
            if (lane < 4u && 32 * e + 8 * (int)lane < D) sg[4 * e + lane] = (uint8_t)(bits >> (8 * lane));
        }
        __syncwarp();
    }
}

// A warp per row: x' = norm / D * s .* H c[code].
template <int E, class TOut> __global__ void __launch_bounds__(128) turbo_dequantize(Job j)
{
    const unsigned lane = threadIdx.x & 31u;
    const size_t row = (size_t)blockIdx.x * 4 + (threadIdx.x >> 5), rows = j.S * j.T;
    if (row >= rows) return;
    const int D = (int)j.D, b = j.bits;
    const size_t s = row / j.T, t = row - s * j.T, rb = (size_t)D * (size_t)b / 8;
    const uint8_t *in = j.codes + s * j.codes_ss + t * rb;
    const float scale = __fdiv_rn(__ldg(j.norms + s * j.norms_ss + t), (float)D);
    const float lane_cent = j.cent[lane & 15u];
    float h[E];
#pragma unroll
    for (int e = 0; e < E; e++) {
        const int c = 32 * e + (int)lane;
        uint32_t code = 0;
        if (c < D) {
            const size_t bit = (size_t)c * (size_t)b, byte = bit >> 3;
            uint32_t v = __ldg(in + byte);
            if (byte + 1 < rb) v |= (uint32_t)__ldg(in + byte + 1) << 8;
            code = (v >> (bit & 7u)) & ((1u << b) - 1u);
        }
        const float cv = centroid(lane_cent, code);
        h[e] = c < D ? cv : 0.0f;
    }
    fwht_warp<E>(h, lane, D);
    TOut *o = static_cast<TOut *>(j.xout) + s * j.x_ss + t * j.x_ld;
#pragma unroll
    for (int e = 0; e < E; e++) {
        const int c = 32 * e + (int)lane;
        if (c < D) {
            const float v = __fmul_rn(scale, neg_sign(j, c) ? -h[e] : h[e]);
            if (sizeof(TOut) == 4)
                reinterpret_cast<float *>(o)[c] = v;
            else
                reinterpret_cast<uint16_t *>(o)[c] = (uint16_t)f32_to_f16(v);
        }
    }
}

// --------------------------------------------------------- bitmap sparse

// A warp per row, lane l holding channels 32 e + l.  The kept entries are the k largest |x| with
// ties to the lower channel: v = the k-th largest |x| bit pattern (bisection on the count of
// |x| >= v), then every |x| > v and the first (k - #{|x| > v}) channels with |x| == v.
template <class TIn, int E> __global__ void __launch_bounds__(128) sparse_quantize(Job j)
{
    const unsigned lane = threadIdx.x & 31u, lt = (1u << lane) - 1u;
    const size_t row = (size_t)blockIdx.x * 4 + (threadIdx.x >> 5), rows = j.S * j.T;
    if (row >= rows) return;
    const size_t s = row / j.T, t = row - s * j.T, k = j.kept, nt = j.D / 64;
    const TIn *x = static_cast<const TIn *>(j.xin) + s * j.x_ss + t * j.x_ld;
    float xv[E];
    uint32_t a[E];
    bool ok = true;
#pragma unroll
    for (int e = 0; e < E; e++) {
        xv[e] = load_one<TIn>(x + 32 * e + lane);
        ok = ok && fabsf(xv[e]) < 65520.0f; // false for NaN too
        a[e] = __float_as_uint(xv[e]) & 0x7fffffffu;
    }
    if (!__all_sync(FULL, ok) && lane == 0) report(j.flag, s);
    uint32_t v = 0;
    if (k > 0) {
        for (int bit = 30; bit >= 0; bit--) {
            const uint32_t cand = v | (1u << bit);
            unsigned cnt = 0;
#pragma unroll
            for (int e = 0; e < E; e++) cnt += (unsigned)__popc(__ballot_sync(FULL, a[e] >= cand));
            if (cnt >= k) v = cand;
        }
    }
    unsigned above = 0;
#pragma unroll
    for (int e = 0; e < E; e++) above += (unsigned)__popc(__ballot_sync(FULL, a[e] > v));
    const unsigned need = k > 0 ? (unsigned)k - above : 0u;
    unsigned prior_eq = 0, prior_sel = 0, tile_first = 0;
    uint32_t low = 0;
    uint16_t *vals = j.values + s * j.values_ss + t * k;
#pragma unroll
    for (int e = 0; e < E; e++) {
        const uint32_t eq = __ballot_sync(FULL, a[e] == v);
        const bool sel = k > 0 && (a[e] > v || (a[e] == v && prior_eq + (unsigned)__popc(eq & lt) < need));
        prior_eq += (unsigned)__popc(eq);
        const uint32_t sm = __ballot_sync(FULL, sel);
        if (sel) vals[prior_sel + (unsigned)__popc(sm & lt)] = (uint16_t)f32_to_f16(xv[e]);
        if ((e & 1) == 0) {
            tile_first = prior_sel;
            low = sm;
        } else if (lane == 0) {
            const size_t ti = t * nt + (size_t)(e >> 1);
            j.bitmaps[s * j.bitmaps_ss + ti] = (uint64_t)low | (uint64_t)sm << 32;
            j.offsets[s * j.offsets_ss + ti] = (uint32_t)(t * k + tile_first);
        }
        prior_sel += (unsigned)__popc(sm);
    }
    if (t == j.T - 1 && lane == 0) j.offsets[s * j.offsets_ss + j.T * nt] = (uint32_t)(j.T * k);
}

// A warp per row; the offsets are checked as the CPU binding checks them (first 0, each tile's
// count equal to its bitmap's popcount, within the values) and bad slices reported.
template <int E, class TOut> __global__ void __launch_bounds__(128) sparse_dequantize(Job j)
{
    const unsigned lane = threadIdx.x & 31u;
    const size_t row = (size_t)blockIdx.x * 4 + (threadIdx.x >> 5), rows = j.S * j.T;
    if (row >= rows) return;
    const size_t s = row / j.T, t = row - s * j.T, nt = j.D / 64;
    const uint64_t *bm = j.bitmaps + s * j.bitmaps_ss + t * nt;
    const uint32_t *off = j.offsets + s * j.offsets_ss + t * nt;
    const uint16_t *vals = j.values + s * j.values_ss;
    TOut *o = static_cast<TOut *>(j.xout) + s * j.x_ss + t * j.x_ld;
    bool ok = !(t == 0 && __ldg(off) != 0u);
#pragma unroll
    for (int e = 0; e < E; e++) {
        const uint64_t b = __ldg(bm + (e >> 1));
        const uint32_t o0 = __ldg(off + (e >> 1)), o1 = __ldg(off + (e >> 1) + 1);
        if (o1 < o0 || o1 - o0 != (uint32_t)__popcll(b) || o1 > j.values_n) ok = false;
        const unsigned pos = (unsigned)(e & 1) * 32u + lane;
        float v = 0.0f;
        if ((b >> pos) & 1u) {
            const size_t i = (size_t)o0 + (size_t)__popcll(b & ((1ull << pos) - 1ull));
            if (i < j.values_n)
                v = f16_to_f32(__ldg(vals + i));
            else
                ok = false;
        }
        const int c = 32 * e + (int)lane;
        if (sizeof(TOut) == 4)
            reinterpret_cast<float *>(o)[c] = v;
        else
            reinterpret_cast<uint16_t *>(o)[c] = (uint16_t)f32_to_f16(v);
    }
    if (!ok) report(j.flag, s);
}

// ------------------------------------------------------------- attention

enum Kind { K_DENSE_F32 = 0, K_DENSE_F16 = 1, K_GW_CHANNEL = 2, K_GW_TOKEN = 3, K_Q8_0 = 4, K_Q4_0 = 5 };

struct Seg {
    int kind, bits, group;
    size_t tokens, t0; // tokens of the segment, first token in the cache
    const uint8_t *data;
    size_t data_ss; // slice stride: bytes (codes, blocks) or elements (dense)
    size_t ld; // dense: elements between tokens
    size_t row_bytes; // quantized: bytes per token
    const uint16_t *scale, *zero;
    size_t scale_ss, zero_ss;
};

struct Attn {
    const void *q;
    int q_f16;
    size_t S, R, D, Dv, T, NC, chunk0;
    float scale_log2; // scale * log2(e)
    float *scores; // [S * R][T]
    float *pm, *pl; // [S * R][NC]
    float *po; // [S * R][NC][Dv]
    float *out; // [S * R][Dv]
    Seg g;
    int pitch; // words per staged token row (odd)
    int rb; // rows per batch (<= RB_MAX)
};

__device__ __forceinline__ float q_at(const Attn &a, size_t row, size_t c)
{
    return a.q_f16 ? in_f16(__ldg(static_cast<const uint16_t *>(a.q) + row * a.D + c))
                   : __ldg(static_cast<const float *>(a.q) + row * a.D + c);
}

// Code k (0..31) of a 32-channel chunk held in BITS words.
template <int BITS> __device__ __forceinline__ uint32_t chunk_code(const uint32_t (&w)[BITS], int k)
{
    const int bit = k * BITS, wi = bit >> 5, sh = bit & 31;
    uint32_t v = w[wi] >> sh;
    if (sh + BITS > 32) v |= w[wi + 1] << (32 - sh);
    return v & ((1u << BITS) - 1u);
}

// Copies nrows token rows of row_bytes bytes (contiguous in global memory) to shared memory rows of
// `pitch` words; coalesced, 16 bytes per thread where the alignment allows.
__device__ void stage_rows(uint32_t *tile, int pitch, const uint8_t *src, size_t row_bytes, int nrows, int tid,
                           int nthreads)
{
    const uintptr_t a = reinterpret_cast<uintptr_t>(src);
    if ((a & 15u) == 0 && (row_bytes & 15u) == 0) {
        const size_t rw = row_bytes / 4, n = (size_t)nrows * row_bytes / 16;
        for (size_t i = (size_t)tid; i < n; i += (size_t)nthreads) {
            const uint4 v = __ldg(reinterpret_cast<const uint4 *>(src) + i);
            const size_t w = i * 4, r = w / rw, c = w - r * rw;
            uint32_t *d = tile + r * (size_t)pitch + c;
            d[0] = v.x, d[1] = v.y, d[2] = v.z, d[3] = v.w;
        }
    } else if ((a & 3u) == 0 && (row_bytes & 3u) == 0) {
        const size_t rw = row_bytes / 4, n = (size_t)nrows * rw;
        for (size_t i = (size_t)tid; i < n; i += (size_t)nthreads) {
            const size_t r = i / rw, c = i - r * rw;
            tile[r * (size_t)pitch + c] = __ldg(reinterpret_cast<const uint32_t *>(src) + i);
        }
    } else {
        uint8_t *t8 = reinterpret_cast<uint8_t *>(tile);
        const size_t n = (size_t)nrows * row_bytes;
        for (size_t i = (size_t)tid; i < n; i += (size_t)nthreads) {
            const size_t r = i / row_bytes, c = i - r * row_bytes;
            t8[r * (size_t)pitch * 4 + c] = __ldg(src + i);
        }
    }
}

// s[t] = q . k_t for the SCORE_T tokens of a block (one per thread) and every query row of slice
// blockIdx.y, RB rows at a time; quantized rows are staged in shared memory, then each thread
// decodes its token once per RB rows.  Shared memory: q rows [RB][D]; staged rows [SCORE_T][pitch];
// per-channel groups: q * scale [groups][RB][D] and q . zero [groups][RB]; per-token groups: the
// group sums of q [RB][D / G].
template <int KIND, int BITS, int RB> __global__ void __launch_bounds__(SCORE_T) scores_kernel(Attn a)
{
    CCOMP_DYNAMIC_SHARED(unsigned char, kv_smem);
    const Seg &g = a.g;
    const int tid = threadIdx.x, D = (int)a.D;
    const size_t s = blockIdx.y, tile0 = (size_t)blockIdx.x * SCORE_T, t = tile0 + (size_t)tid;
    const int nrows = (int)min((size_t)SCORE_T, g.tokens - tile0);
    const bool live = tid < nrows;
    const bool quant = KIND != K_DENSE_F32 && KIND != K_DENSE_F16;
    const int G = g.group, ngt = KIND == K_GW_CHANNEL ? (nrows + G - 1) / G : 0;
    float *qsh = reinterpret_cast<float *>(kv_smem);
    uint32_t *tile = reinterpret_cast<uint32_t *>(qsh + RB * D);
    float *extra = reinterpret_cast<float *>(tile + (quant ? SCORE_T * a.pitch : 0));
    if (quant)
        stage_rows(tile, a.pitch, g.data + s * g.data_ss + tile0 * g.row_bytes, g.row_bytes, nrows, tid, SCORE_T);
    for (size_t rb0 = 0; rb0 < a.R; rb0 += RB) {
        __syncthreads(); // the previous batch is done with the shared rows (and the tile is staged)
        for (int i = tid; i < RB * D; i += SCORE_T) {
            const int r = i / D, c = i - r * D;
            qsh[i] = rb0 + (size_t)r < a.R ? q_at(a, s * a.R + rb0 + (size_t)r, (size_t)c) : 0.0f;
        }
        __syncthreads();
        if constexpr (KIND == K_GW_CHANNEL) {
            const size_t gf = tile0 / (size_t)G;
            float *qs = extra, *zt = extra + (size_t)ngt * RB * D;
            for (int i = tid; i < ngt * RB * D; i += SCORE_T) {
                const int gl = i / (RB * D), rem = i - gl * RB * D, c = rem % D;
                qs[i] = qsh[rem] * in_f16(__ldg(g.scale + s * g.scale_ss + (gf + gl) * a.D + c));
            }
            for (int p = tid >> 5; p < ngt * RB; p += SCORE_T / 32) {
                const int gl = p / RB, r = p - gl * RB;
                float acc = 0.0f;
                for (int c = tid & 31; c < D; c += 32)
                    acc += qsh[r * D + c] * in_f16(__ldg(g.zero + s * g.zero_ss + (gf + gl) * a.D + c));
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL, acc, o);
                if ((tid & 31) == 0) zt[p] = acc;
            }
            __syncthreads();
        } else if constexpr (KIND == K_GW_TOKEN) {
            const int ng = D / G;
            for (int i = tid; i < RB * ng; i += SCORE_T) {
                const int r = i / ng, gg = i - r * ng;
                float acc = 0.0f;
                for (int c = gg * G; c < (gg + 1) * G; c++) acc += qsh[r * D + c];
                extra[i] = acc;
            }
            __syncthreads();
        }
        if (!live) continue;
        float acc[RB];
#pragma unroll
        for (int r = 0; r < RB; r++) acc[r] = 0.0f;
        if constexpr (KIND == K_GW_CHANNEL || KIND == K_GW_TOKEN) {
            const uint32_t *rw = tile + (size_t)tid * a.pitch;
            const int ng = D / G, chunks_per_group = G / 32;
            const int gl = tid / G; // per channel: the token's group within the block (tile0 % G == 0)
            const float *qbase = KIND == K_GW_CHANNEL ? extra + (size_t)gl * RB * D : qsh;
            for (int gg = 0; gg < (KIND == K_GW_TOKEN ? ng : 1); gg++) {
                float part[RB];
#pragma unroll
                for (int r = 0; r < RB; r++) part[r] = 0.0f;
                const int c_begin = KIND == K_GW_TOKEN ? gg * chunks_per_group : 0;
                const int c_end = KIND == K_GW_TOKEN ? c_begin + chunks_per_group : D / 32;
                for (int ch = c_begin; ch < c_end; ch++) {
                    uint32_t w[BITS];
#pragma unroll
                    for (int k = 0; k < BITS; k++) w[k] = rw[ch * BITS + k];
                    const float *qc = qbase + ch * 32; // 16-byte aligned: D % 32 == 0
#pragma unroll
                    for (int k4 = 0; k4 < 8; k4++) {
                        float f[4];
#pragma unroll
                        for (int k = 0; k < 4; k++) f[k] = code_float(chunk_code<BITS>(w, 4 * k4 + k));
#pragma unroll
                        for (int r = 0; r < RB; r++) {
                            const float4 qv = *reinterpret_cast<const float4 *>(qc + r * D + 4 * k4);
                            part[r] = fmaf(qv.x, f[0], part[r]);
                            part[r] = fmaf(qv.y, f[1], part[r]);
                            part[r] = fmaf(qv.z, f[2], part[r]);
                            part[r] = fmaf(qv.w, f[3], part[r]);
                        }
                    }
                }
                if constexpr (KIND == K_GW_TOKEN) {
                    const size_t gi = t * (size_t)ng + (size_t)gg;
                    const float sc = in_f16(__ldg(g.scale + s * g.scale_ss + gi));
                    const float z = in_f16(__ldg(g.zero + s * g.zero_ss + gi));
#pragma unroll
                    for (int r = 0; r < RB; r++) acc[r] += sc * part[r] + z * extra[r * ng + gg];
                } else {
                    const float *zt = extra + (size_t)ngt * RB * D + (size_t)gl * RB;
#pragma unroll
                    for (int r = 0; r < RB; r++) acc[r] = part[r] + zt[r];
                }
            }
        } else if constexpr (KIND == K_Q8_0 || KIND == K_Q4_0) {
            const uint8_t *rw = reinterpret_cast<const uint8_t *>(tile + (size_t)tid * a.pitch);
            const int bb = (int)ggml_block_bytes(KIND == K_Q8_0);
            for (int blk = 0; blk < D / 32; blk++) {
                const uint8_t *p = rw + blk * bb;
                const float d = in_f16((uint16_t)(p[0] | p[1] << 8));
                float part[RB];
#pragma unroll
                for (int r = 0; r < RB; r++) part[r] = 0.0f;
#pragma unroll 8
                for (int k = 0; k < 32; k++) {
                    const float f = KIND == K_Q8_0 ? (float)(int8_t)p[QS + k]
                                                   : (float)((int)((p[QS + (k & 15)] >> (k < 16 ? 0 : 4)) & 15u) - 8);
#pragma unroll
                    for (int r = 0; r < RB; r++) part[r] = fmaf(qsh[r * D + blk * 32 + k], f, part[r]);
                }
#pragma unroll
                for (int r = 0; r < RB; r++) acc[r] = fmaf(d, part[r], acc[r]);
            }
        } else {
            for (int c = 0; c < D; c++) {
                const size_t off = s * g.data_ss + t * g.ld + (size_t)c;
                const float kv = KIND == K_DENSE_F32 ? __ldg(reinterpret_cast<const float *>(g.data) + off)
                                                     : in_f16(__ldg(reinterpret_cast<const uint16_t *>(g.data) + off));
#pragma unroll
                for (int r = 0; r < RB; r++) acc[r] = fmaf(qsh[r * D + c], kv, acc[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < RB; r++)
            if (rb0 + (size_t)r < a.R) a.scores[(s * a.R + rb0 + (size_t)r) * a.T + g.t0 + t] = acc[r];
    }
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// One chunk of CHUNK tokens of a V segment for every query row of slice blockIdx.y, RB rows at a
// time: m = max of the scaled scores, p = 2^(score - m), l = sum p, o = sum p v (partials of the
// combine).  Threads: unit u (8 channels) x token lane tl; each thread decodes its tokens once for the
// RB rows.  Shared memory: p [RB][CHUNK], per-thread sums [ACC_T / U][RB][Dv].
template <int KIND, int BITS, int RB> __global__ void __launch_bounds__(ACC_T) accum_kernel(Attn a)
{
    CCOMP_DYNAMIC_SHARED(unsigned char, kv_smem);
    const Seg &g = a.g;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const size_t s = blockIdx.y, c0 = (size_t)blockIdx.x * CHUNK, gchunk = a.chunk0 + blockIdx.x;
    const int n = (int)min((size_t)CHUNK, g.tokens - c0);
    const int Dv = (int)a.Dv, U = Dv / 8, ntl = ACC_T / U, unit = tid % U, tl = tid / U;
    const bool active = tl < ntl;
    float *psh = reinterpret_cast<float *>(kv_smem), *red = psh + RB * CHUNK;
    for (size_t rb0 = 0; rb0 < a.R; rb0 += RB) {
        __syncthreads();
        if (warp < RB) {
            const size_t r = rb0 + (size_t)warp;
            float *p = psh + warp * CHUNK;
            if (r < a.R) {
                const size_t row = s * a.R + r;
                const float *sr = a.scores + row * a.T + g.t0 + c0;
                float m = -INFINITY;
                for (int i = lane; i < n; i += 32) {
                    const float x = sr[i] * a.scale_log2;
                    p[i] = x;
                    m = fmaxf(m, x);
                }
                m = warp_max(m);
                float l = 0.0f;
                for (int i = lane; i < n; i += 32) {
                    const float e = exp2f(p[i] - m);
                    p[i] = e;
                    l += e;
                }
                l = warp_sum(l);
                if (lane == 0) {
                    a.pm[row * a.NC + gchunk] = m;
                    a.pl[row * a.NC + gchunk] = l;
                }
            } else {
                for (int i = lane; i < n; i += 32) p[i] = 0.0f;
            }
        }
        __syncthreads();
        float acc[RB][8];
#pragma unroll
        for (int r = 0; r < RB; r++)
#pragma unroll
            for (int k = 0; k < 8; k++) acc[r][k] = 0.0f;
        if (active) {
            if constexpr (KIND == K_GW_TOKEN) {
                const int G = g.group;
                const size_t gcol = (size_t)unit * 8 / (size_t)G, ngr = (size_t)(Dv / G);
                float zacc[RB];
#pragma unroll
                for (int r = 0; r < RB; r++) zacc[r] = 0.0f;
#pragma unroll 4
                for (int i = tl; i < n; i += ntl) {
                    const size_t t = c0 + (size_t)i;
                    const uint64_t pk = load_unit<BITS>(g.data + s * g.data_ss + t * g.row_bytes + (size_t)unit * BITS);
                    const size_t gi = t * ngr + gcol;
                    const float sc = in_f16(__ldg(g.scale + s * g.scale_ss + gi));
                    const float z = in_f16(__ldg(g.zero + s * g.zero_ss + gi));
                    float f[8];
#pragma unroll
                    for (int k = 0; k < 8; k++) f[k] = code_float((uint32_t)(pk >> (k * BITS)) & ((1u << BITS) - 1u));
#pragma unroll
                    for (int r = 0; r < RB; r++) {
                        const float pr = psh[r * CHUNK + i], w = pr * sc;
                        zacc[r] = fmaf(pr, z, zacc[r]);
#pragma unroll
                        for (int k = 0; k < 8; k++) acc[r][k] = fmaf(w, f[k], acc[r][k]);
                    }
                }
#pragma unroll
                for (int r = 0; r < RB; r++)
#pragma unroll
                    for (int k = 0; k < 8; k++) acc[r][k] += zacc[r];
            } else if constexpr (KIND == K_GW_CHANNEL) {
                const int G = g.group;
                for (int gl = 0; gl * G < n; gl++) {
                    const int gbeg = gl * G, gend = min(n, gbeg + G);
                    const size_t base = (c0 / (size_t)G + (size_t)gl) * (size_t)Dv + (size_t)unit * 8;
                    float part[RB][8], ps[RB];
#pragma unroll
                    for (int r = 0; r < RB; r++) {
                        ps[r] = 0.0f;
#pragma unroll
                        for (int k = 0; k < 8; k++) part[r][k] = 0.0f;
                    }
#pragma unroll 4
                    for (int i = gbeg + ((tl - gbeg % ntl) + ntl) % ntl; i < gend; i += ntl) {
                        const size_t t = c0 + (size_t)i;
                        const uint64_t pk =
                            load_unit<BITS>(g.data + s * g.data_ss + t * g.row_bytes + (size_t)unit * BITS);
                        float f[8];
#pragma unroll
                        for (int k = 0; k < 8; k++)
                            f[k] = code_float((uint32_t)(pk >> (k * BITS)) & ((1u << BITS) - 1u));
#pragma unroll
                        for (int r = 0; r < RB; r++) {
                            const float pr = psh[r * CHUNK + i];
                            ps[r] += pr;
#pragma unroll
                            for (int k = 0; k < 8; k++) part[r][k] = fmaf(pr, f[k], part[r][k]);
                        }
                    }
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        const float sc = in_f16(__ldg(g.scale + s * g.scale_ss + base + k));
                        const float z = in_f16(__ldg(g.zero + s * g.zero_ss + base + k));
#pragma unroll
                        for (int r = 0; r < RB; r++) acc[r][k] += sc * part[r][k] + z * ps[r];
                    }
                }
            } else if constexpr (KIND == K_Q8_0 || KIND == K_Q4_0) {
                const size_t bb = ggml_block_bytes(KIND == K_Q8_0);
                for (int i = tl; i < n; i += ntl) {
                    const size_t t = c0 + (size_t)i;
                    float f[8];
                    ggml_unit<KIND == K_Q8_0 ? Q8_0 : Q4_0>(
                        g.data + s * g.data_ss + t * g.row_bytes + (size_t)(unit / 4) * bb, (unsigned)(unit & 3), f);
#pragma unroll
                    for (int r = 0; r < RB; r++) {
                        const float pr = psh[r * CHUNK + i];
#pragma unroll
                        for (int k = 0; k < 8; k++) acc[r][k] = fmaf(pr, f[k], acc[r][k]);
                    }
                }
            } else {
                for (int i = tl; i < n; i += ntl) {
                    const size_t off = s * g.data_ss + (c0 + (size_t)i) * g.ld + (size_t)unit * 8;
                    float f[8];
#pragma unroll
                    for (int k = 0; k < 8; k++)
                        f[k] = KIND == K_DENSE_F32
                                   ? __ldg(reinterpret_cast<const float *>(g.data) + off + k)
                                   : in_f16(__ldg(reinterpret_cast<const uint16_t *>(g.data) + off + k));
#pragma unroll
                    for (int r = 0; r < RB; r++) {
                        const float pr = psh[r * CHUNK + i];
#pragma unroll
                        for (int k = 0; k < 8; k++) acc[r][k] = fmaf(pr, f[k], acc[r][k]);
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < RB; r++)
#pragma unroll
                for (int k = 0; k < 8; k++) red[((size_t)tl * RB + r) * Dv + unit * 8 + k] = acc[r][k];
        }
        __syncthreads();
        for (int i = tid; i < RB * Dv; i += ACC_T) {
            const int r = i / Dv, c = i - r * Dv;
            if (rb0 + (size_t)r >= a.R) continue;
            float sum = 0.0f;
            for (int l = 0; l < ntl; l++) sum += red[((size_t)l * RB + r) * Dv + c];
            a.po[((s * a.R + rb0 + (size_t)r) * a.NC + gchunk) * a.Dv + (size_t)c] = sum;
        }
    }
}

// out = sum_j o_j 2^(m_j - M) / sum_j l_j 2^(m_j - M), M = max_j m_j: a block per query row.
__global__ void __launch_bounds__(256) combine_kernel(Attn a)
{
    CCOMP_DYNAMIC_SHARED(unsigned char, kv_smem);
    __shared__ float red[32];
    float *wgt = reinterpret_cast<float *>(kv_smem);
    const size_t row = blockIdx.x;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    const float *pm = a.pm + row * a.NC, *pl = a.pl + row * a.NC;
    float m = -INFINITY;
    for (size_t j = (size_t)tid; j < a.NC; j += blockDim.x) m = fmaxf(m, pm[j]);
    m = warp_max(m);
    if (lane == 0) red[warp] = m;
    __syncthreads();
    m = red[0];
    for (int w = 1; w < nw; w++) m = fmaxf(m, red[w]);
    __syncthreads();
    float l = 0.0f;
    for (size_t j = (size_t)tid; j < a.NC; j += blockDim.x) {
        const float w = exp2f(pm[j] - m);
        wgt[j] = w;
        l += pl[j] * w;
    }
    l = warp_sum(l);
    if (lane == 0) red[warp] = l;
    __syncthreads();
    l = 0.0f;
    for (int w = 0; w < nw; w++) l += red[w];
    const float inv = 1.0f / l;
    for (size_t c = (size_t)tid; c < a.Dv; c += blockDim.x) {
        float o = 0.0f;
        for (size_t j = 0; j < a.NC; j++) o += a.po[(row * a.NC + j) * a.Dv + c] * wgt[j];
        a.out[row * a.Dv + c] = o * inv;
    }
}

// ------------------------------------------------------------------ host side

#include "cuda_host.cuh"

// enter_device in the status convention: makes the device holding p current, or says why not.
ccomp_status kv_enter_device(const void *p, DeviceGuard &g, ccomp_error *err)
{
    char msg[CCOMP_ERROR_MSG_LEN] = "";
    const int rc = enter_device(p, g, msg, sizeof msg);
    if (rc == 0) return CCOMP_OK;
    const ccomp_status code = rc == -1                         ? CCOMP_ERR_VALUE
                              : rc == cudaErrorMemoryAllocation ? CCOMP_ERR_NOMEM
                                                                : CCOMP_ERR_BACKEND;
    if (err != NULL) {
        err->code = code;
        snprintf(err->msg, sizeof err->msg, "%s", msg);
    }
    return code;
}

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

unsigned blocks_of(size_t n, size_t per)
{
    return (unsigned)((n + per - 1) / per);
}

bool aligned16(const void *p, size_t ss, size_t ld, size_t S, size_t T, size_t es)
{
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0 && (S <= 1 || (ss * es) % 16 == 0) &&
           (T <= 1 || (ld * es) % 16 == 0);
}

// --- argument checks (the Python layer checks first with friendlier messages; these keep bad values
// from reaching a kernel)

ccomp_status check_array(const ccomp_cuda_kv_array &a, size_t need, size_t S, size_t es, const char *name, ccomp_error *err)
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

bool is_pow2(size_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

ccomp_status check_x(const ccomp_cuda_kv_desc *d, ccomp_error *err)
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

// The shape and parameters of a tensor, and its arrays for the method.
ccomp_status check_desc(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    const size_t S = d->S, T = d->T, D = d->D;
    ccomp_status rc;
    if (S >= 0xffffffffu) return reject(err, "too many slices (%zu)", S);
    if (D == 0 || D % 8 != 0) return reject(err, "head dim must be a positive multiple of 8, got %zu", D);
    switch (d->method) {
    case CCOMP_KV_M_GROUPWISE:
    case CCOMP_KV_M_GEAR: {
        const int b = d->bits, G = d->group;
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
            (rc = check_array(d->scale, ng, S, 2, "scale", err)) ||
            (rc = check_array(d->zero, ng, S, 2, "zero", err)))
            return rc;
        if (d->method == CCOMP_KV_M_GEAR) {
            if (d->per_row > D)
                return reject(err, "outliers per row (%zu) exceed the head dim %zu", d->per_row, D);
            if (d->rank < 0 || (size_t)d->rank > D)
                return reject(err, "rank must be in [0, %zu], got %d", D, d->rank);
            const size_t r = (size_t)d->rank;
            if ((rc = check_array(d->out_idx, T * d->per_row, S, 2, "out_idx", err)) ||
                (rc = check_array(d->out_vals, T * d->per_row, S, 2, "out_vals", err)) ||
                (rc = check_array(d->U, T * r, S, 2, "U", err)) ||
                (rc = check_array(d->W, D * r, S, 2, "W", err)))
                return rc;
        }
        return CCOMP_OK;
    }
    case CCOMP_KV_M_Q8_0:
    case CCOMP_KV_M_Q4_0:
        if (D % 32 != 0)
            return reject(err, "ggml blocks need a head dim that is a multiple of 32, got %zu", D);
        return check_array(d->blocks, T * (D / 32) * ggml_block_bytes(d->method == CCOMP_KV_M_Q8_0), S, 1, "blocks", err);
    case CCOMP_KV_M_TURBO:
        if (d->bits < 1 || d->bits > 4)
            return reject(err, "turbo: bits must be 1, 2, 3 or 4, got %d", d->bits);
        if (!is_pow2(D) || D < 16 || D > 1024)
            return reject(err, "turbo: head dim must be a power of two in [16, 1024], got %zu", D);
        if (d->qjl != 0 && d->qjl != 1) return reject(err, "turbo: qjl must be 0 or 1, got %d", d->qjl);
        if ((rc = check_array(d->codes, T * D * (size_t)d->bits / 8, S, 1, "codes", err)) ||
            (rc = check_array(d->norms, T, S, 4, "norms", err)))
            return rc;
        if (d->qjl) {
            if ((rc = check_array(d->signs, T * D / 8, S, 1, "signs", err)) ||
                (rc = check_array(d->res_norms, T, S, 4, "res_norms", err)))
                return rc;
        }
        return CCOMP_OK;
    case CCOMP_KV_M_SPARSE: {
        if (D != 64 && D != 128 && D != 192 && D != 256 && D != 384 && D != 512 && D != 768 && D != 1024)
            return reject(err, "bitmap_sparse on the GPU: head dim must be 64, 128, 192, 256, 384, 512, 768 "
                          "or 1024, got %zu",
                          D);
        if (T * D >= ((size_t)1 << 32))
            return reject(err, "bitmap_sparse: tokens x head dim must be below 2^32, got %zu x %zu", T, D);
        if (d->kept > D) return reject(err, "bitmap_sparse: kept (%zu) exceeds the head dim %zu", d->kept, D);
        const size_t tiles = T * (D / 64);
        if ((rc = check_array(d->bitmaps, tiles, S, 8, "bitmaps", err)) ||
            (rc = check_array(d->offsets, tiles + 1, S, 4, "offsets", err)) ||
            (rc = check_array(d->values, T * d->kept, S, 2, "values", err)))
            return rc;
        return CCOMP_OK;
    }
    case CCOMP_KV_M_DENSE: return S * T > 0 ? check_x(d, err) : CCOMP_OK;
    default: return reject(err, "unknown method %d", d->method);
    }
}

Job make_job(const ccomp_cuda_kv_desc *d)
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
    if (d->method == CCOMP_KV_M_TURBO) { // the splitmix64 signs of kv_turbo.h, one per channel
        uint64_t st = d->seed;
        for (size_t c = 0; c < d->D && c < 1024; c++) {
            uint64_t z = (st += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            if (z >> 63) j.sign_mask[c >> 5] |= 1u << (c & 31);
        }
    }
    j.flag = d->flag;
    return j;
}

int e_of(size_t D)
{
    return D <= 32 ? 1 : (int)(D / 32);
}

// --- quantize launchers

template <class TIn> cudaError_t launch_quantize(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
{
    const size_t units = d->S * d->T * (d->D / 8);
    switch (d->method) {
    case CCOMP_KV_M_GROUPWISE:
        if (d->axis == AXIS_TOKEN) {
#define GW_TOKEN(B, UGV) launch(gw_quantize_token<TIn, B, UGV>, dim3(blocks_of(units, NT)), dim3(NT), 0, st, j)
#define GW_TOKEN_G(B) (d->group == 32 ? GW_TOKEN(B, 4) : d->group == 64 ? GW_TOKEN(B, 8) : GW_TOKEN(B, 16))
            switch (d->bits) {
            case 2: return GW_TOKEN_G(2);
            case 3: return GW_TOKEN_G(3);
            case 4: return GW_TOKEN_G(4);
            default: return GW_TOKEN_G(8);
            }
#undef GW_TOKEN_G
#undef GW_TOKEN
        } else {
            const size_t U = d->D / 8, G = (size_t)d->group;
            size_t nsub = 1;
            while (nsub * 2 <= (size_t)NT / U && nsub * 2 <= G) nsub *= 2;
            const unsigned threads = (unsigned)((U * nsub + 31) / 32 * 32);
            const size_t smem = (2 * nsub * d->D + 2 * d->D) * sizeof(float);
            const dim3 grid(blocks_of(d->S * (d->T / G), 1));
#define GW_CH(B) launch(gw_quantize_channel<TIn, B>, grid, dim3(threads), smem, st, j, (int)nsub)
            switch (d->bits) {
            case 2: return GW_CH(2);
            case 3: return GW_CH(3);
            case 4: return GW_CH(4);
            default: return GW_CH(8);
            }
#undef GW_CH
        }
    case CCOMP_KV_M_Q8_0: return launch(ggml_quantize<TIn, Q8_0>, dim3(blocks_of(units, NT)), dim3(NT), 0, st, j);
    case CCOMP_KV_M_Q4_0: return launch(ggml_quantize<TIn, Q4_0>, dim3(blocks_of(units, NT)), dim3(NT), 0, st, j);
    case CCOMP_KV_M_TURBO: {
        const dim3 grid(blocks_of(d->S * d->T, 128));
        const size_t smem = d->qjl ? 4 * d->D * sizeof(float) : 0;
        switch (e_of(d->D)) {
        case 1: return launch(turbo_quantize<TIn, 1>, grid, dim3(128), smem, st, j);
        case 2: return launch(turbo_quantize<TIn, 2>, grid, dim3(128), smem, st, j);
        case 4: return launch(turbo_quantize<TIn, 4>, grid, dim3(128), smem, st, j);
        case 8: return launch(turbo_quantize<TIn, 8>, grid, dim3(128), smem, st, j);
        case 16: return launch(turbo_quantize<TIn, 16>, grid, dim3(128), smem, st, j);
        default: return launch(turbo_quantize<TIn, 32>, grid, dim3(128), smem, st, j);
        }
    }
    case CCOMP_KV_M_SPARSE: {
        const dim3 grid(blocks_of(d->S * d->T, 4));
        switch (d->D / 32) {
        case 2: return launch(sparse_quantize<TIn, 2>, grid, dim3(128), 0, st, j);
        case 4: return launch(sparse_quantize<TIn, 4>, grid, dim3(128), 0, st, j);
        case 6: return launch(sparse_quantize<TIn, 6>, grid, dim3(128), 0, st, j);
        case 8: return launch(sparse_quantize<TIn, 8>, grid, dim3(128), 0, st, j);
        case 12: return launch(sparse_quantize<TIn, 12>, grid, dim3(128), 0, st, j);
        case 16: return launch(sparse_quantize<TIn, 16>, grid, dim3(128), 0, st, j);
        case 24: return launch(sparse_quantize<TIn, 24>, grid, dim3(128), 0, st, j);
        case 32: return launch(sparse_quantize<TIn, 32>, grid, dim3(128), 0, st, j);
        default: return cudaErrorInvalidValue;
        }
    }
    default: return cudaErrorInvalidValue;
    }
}

template <class TOut> cudaError_t launch_dequantize(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
{
    const size_t units = d->S * d->T * (d->D / 8);
    const dim3 grid(blocks_of(units, NT)), block(NT);
    switch (d->method) {
    case CCOMP_KV_M_GROUPWISE:
    case CCOMP_KV_M_GEAR: {
        const bool gear = d->method == CCOMP_KV_M_GEAR;
#define GW_DQ(B)                                                                                                       \
    (d->axis == AXIS_TOKEN                                                                                             \
         ? launch(gear ? gear_dequantize<B, AXIS_TOKEN, TOut> : gw_dequantize<B, AXIS_TOKEN, TOut>, grid, block, 0,    \
                  st, j)                                                                                               \
         : launch(gear ? gear_dequantize<B, AXIS_CHANNEL, TOut> : gw_dequantize<B, AXIS_CHANNEL, TOut>, grid, block,   \
                  0, st, j))
        switch (d->bits) {
        case 2: return GW_DQ(2);
        case 3: return GW_DQ(3);
        case 4: return GW_DQ(4);
        default: return GW_DQ(8);
        }
#undef GW_DQ
    }
    case CCOMP_KV_M_Q8_0: return launch(ggml_dequantize<Q8_0, TOut>, grid, block, 0, st, j);
    case CCOMP_KV_M_Q4_0: return launch(ggml_dequantize<Q4_0, TOut>, grid, block, 0, st, j);
    case CCOMP_KV_M_TURBO: {
        const dim3 g4(blocks_of(d->S * d->T, 4));
        switch (e_of(d->D)) {
        case 1: return launch(turbo_dequantize<1, TOut>, g4, dim3(128), 0, st, j);
        case 2: return launch(turbo_dequantize<2, TOut>, g4, dim3(128), 0, st, j);
        case 4: return launch(turbo_dequantize<4, TOut>, g4, dim3(128), 0, st, j);
        case 8: return launch(turbo_dequantize<8, TOut>, g4, dim3(128), 0, st, j);
        case 16: return launch(turbo_dequantize<16, TOut>, g4, dim3(128), 0, st, j);
        default: return launch(turbo_dequantize<32, TOut>, g4, dim3(128), 0, st, j);
        }
    }
    case CCOMP_KV_M_SPARSE: {
        const dim3 g4(blocks_of(d->S * d->T, 4));
        switch (d->D / 32) {
        case 2: return launch(sparse_dequantize<2, TOut>, g4, dim3(128), 0, st, j);
        case 4: return launch(sparse_dequantize<4, TOut>, g4, dim3(128), 0, st, j);
        case 6: return launch(sparse_dequantize<6, TOut>, g4, dim3(128), 0, st, j);
        case 8: return launch(sparse_dequantize<8, TOut>, g4, dim3(128), 0, st, j);
        case 12: return launch(sparse_dequantize<12, TOut>, g4, dim3(128), 0, st, j);
        case 16: return launch(sparse_dequantize<16, TOut>, g4, dim3(128), 0, st, j);
        case 24: return launch(sparse_dequantize<24, TOut>, g4, dim3(128), 0, st, j);
        case 32: return launch(sparse_dequantize<32, TOut>, g4, dim3(128), 0, st, j);
        default: return cudaErrorInvalidValue;
        }
    }
    default: return cudaErrorInvalidValue;
    }
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

// --- attention

int kind_of(const ccomp_cuda_kv_desc *d)
{
    switch (d->method) {
    case CCOMP_KV_M_DENSE: return d->x_dtype == CCOMP_CUDA_KV_FLOAT16 ? K_DENSE_F16 : K_DENSE_F32;
    case CCOMP_KV_M_GROUPWISE: return d->axis == AXIS_TOKEN ? K_GW_TOKEN : K_GW_CHANNEL;
    case CCOMP_KV_M_Q8_0: return K_Q8_0;
    case CCOMP_KV_M_Q4_0: return K_Q4_0;
    default: return -1;
    }
}

Seg make_seg(const ccomp_cuda_kv_desc *d, size_t t0)
{
    Seg g;
    memset(&g, 0, sizeof g);
    g.kind = kind_of(d);
    g.bits = d->bits, g.group = d->group, g.tokens = d->T, g.t0 = t0;
    switch (d->method) {
    case CCOMP_KV_M_DENSE: g.data = (const uint8_t *)d->x, g.data_ss = d->x_ss, g.ld = d->x_ld; break;
    case CCOMP_KV_M_GROUPWISE:
        g.data = (const uint8_t *)d->codes.ptr, g.data_ss = d->codes.stride, g.row_bytes = d->D / 8 * (size_t)d->bits;
        g.scale = (const uint16_t *)d->scale.ptr, g.zero = (const uint16_t *)d->zero.ptr;
        g.scale_ss = d->scale.stride, g.zero_ss = d->zero.stride;
        break;
    default: // ggml
        g.data = (const uint8_t *)d->blocks.ptr, g.data_ss = d->blocks.stride;
        g.row_bytes = d->D / 32 * ggml_block_bytes(d->method == CCOMP_KV_M_Q8_0);
        break;
    }
    return g;
}

size_t chunks_of(const ccomp_cuda_kv_desc *v, size_t nv)
{
    size_t n = 0;
    for (size_t i = 0; i < nv; i++) n += (v[i].T + CHUNK - 1) / CHUNK;
    return n;
}

// Shared memory of a scores block, laid out as scores_kernel reads it.
size_t scores_smem(const Seg &g, size_t D, int rb, int pitch)
{
    size_t n = (size_t)rb * D * 4;
    if (g.kind != K_DENSE_F32 && g.kind != K_DENSE_F16) n += (size_t)SCORE_T * (size_t)pitch * 4;
    if (g.kind == K_GW_CHANNEL) {
        const size_t ngt = (SCORE_T + (size_t)g.group - 1) / (size_t)g.group;
        n += (ngt * (size_t)rb * D + ngt * (size_t)rb) * 4;
    } else if (g.kind == K_GW_TOKEN) {
        n += (size_t)rb * (D / (size_t)g.group) * 4;
    }
    return n;
}

template <int KIND, int BITS> cudaError_t launch_scores_rb(const Attn &a, dim3 grid, size_t smem, cudaStream_t st)
{
    return a.rb == 1 ? launch(scores_kernel<KIND, BITS, 1>, grid, dim3(SCORE_T), smem, st, a)
                     : launch(scores_kernel<KIND, BITS, RB_MAX>, grid, dim3(SCORE_T), smem, st, a);
}

template <int KIND, int BITS> cudaError_t launch_accum_rb(const Attn &a, dim3 grid, size_t smem, cudaStream_t st)
{
    return a.rb == 1 ? launch(accum_kernel<KIND, BITS, 1>, grid, dim3(ACC_T), smem, st, a)
                     : launch(accum_kernel<KIND, BITS, RB_MAX>, grid, dim3(ACC_T), smem, st, a);
}

#define KV_DISPATCH_KIND(FN, a, grid, smem, st)                                                                        \
    switch ((a).g.kind) {                                                                                              \
    case K_DENSE_F32: return FN<K_DENSE_F32, 0>(a, grid, smem, st);                                                    \
    case K_DENSE_F16: return FN<K_DENSE_F16, 0>(a, grid, smem, st);                                                    \
    case K_Q8_0: return FN<K_Q8_0, 0>(a, grid, smem, st);                                                              \
    case K_Q4_0: return FN<K_Q4_0, 0>(a, grid, smem, st);                                                              \
    case K_GW_CHANNEL:                                                                                                 \
        switch ((a).g.bits) {                                                                                          \
        case 2: return FN<K_GW_CHANNEL, 2>(a, grid, smem, st);                                                         \
        case 3: return FN<K_GW_CHANNEL, 3>(a, grid, smem, st);                                                         \
        case 4: return FN<K_GW_CHANNEL, 4>(a, grid, smem, st);                                                         \
        default: return FN<K_GW_CHANNEL, 8>(a, grid, smem, st);                                                        \
        }                                                                                                              \
    default:                                                                                                           \
        switch ((a).g.bits) {                                                                                          \
        case 2: return FN<K_GW_TOKEN, 2>(a, grid, smem, st);                                                           \
        case 3: return FN<K_GW_TOKEN, 3>(a, grid, smem, st);                                                           \
        case 4: return FN<K_GW_TOKEN, 4>(a, grid, smem, st);                                                           \
        default: return FN<K_GW_TOKEN, 8>(a, grid, smem, st);                                                          \
        }                                                                                                              \
    }

cudaError_t launch_scores(const Attn &a, dim3 grid, size_t smem,
                          cudaStream_t st){KV_DISPATCH_KIND(launch_scores_rb, a, grid, smem, st)}

cudaError_t launch_accum(const Attn &a, dim3 grid, size_t smem, cudaStream_t st)
{
    KV_DISPATCH_KIND(launch_accum_rb, a, grid, smem, st)
}

#undef KV_DISPATCH_KIND

ccomp_status check_segments(const ccomp_cuda_kv_desc *segs, size_t n, size_t S, size_t D, const char *side, size_t *T, ccomp_error *err)
{
    *T = 0;
    if (n == 0 || segs == NULL) return reject(err, "the %s cache has no segments", side);
    for (size_t i = 0; i < n; i++) {
        const ccomp_cuda_kv_desc *d = &segs[i];
        ccomp_error inner;
        if (kind_of(d) < 0)
            return reject(err, "%s segment %zu: attention takes groupwise, q8_0, q4_0 or dense segments", side,
                          i);
        if (d->S != S) return reject(err, "%s segment %zu has %zu slices, expected %zu", side, i, d->S, S);
        if (d->D != D) return reject(err, "%s segment %zu has head dim %zu, expected %zu", side, i, d->D, D);
        if (check_desc(d, &inner) != CCOMP_OK) return reject(err, "%s segment %zu: %s", side, i, inner.msg);
        if (d->method == CCOMP_KV_M_DENSE && d->T > 0 && d->S * d->T > 0) {
            const size_t es = d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? 4 : 2;
            if (reinterpret_cast<uintptr_t>(d->x) % es != 0)
                return reject(err, "%s segment %zu: dense data is misaligned", side, i);
        }
        *T += d->T;
    }
    return CCOMP_OK;
}

} // namespace

// ====================================================================== entry points

extern "C" ccomp_status ccomp_cuda_kv_quantize(const ccomp_cuda_kv_desc *d, void *stream, int check, int64_t *first_bad,
                                      ccomp_error *err)
{
    *first_bad = -1;
    ccomp_status rc = check_desc(d, err);
    if (rc) return rc;
    if (d->method == CCOMP_KV_M_DENSE || d->method == CCOMP_KV_M_GEAR)
        return reject(err, "the GPU quantizes groupwise, q8_0, q4_0, turbo and bitmap_sparse");
    if ((rc = check_x(d, err)) != CCOMP_OK) return rc;
    if (d->flag == NULL) return reject(err, "quantize needs the flag buffer");
    if (d->method == CCOMP_KV_M_TURBO && d->qjl && d->qjl_matrix_t == NULL)
        return reject(err, "turbo with qjl needs the QJL matrix");
    if ((d->method == CCOMP_KV_M_Q8_0 || d->method == CCOMP_KV_M_Q4_0) &&
        ((reinterpret_cast<uintptr_t>(d->blocks.ptr) & 1u) || (d->S > 1 && (d->blocks.stride & 1u))))
        return reject(err, "the blocks array must be 2-byte aligned with an even slice stride");
    if (d->S * d->T == 0) return CCOMP_OK;
    DeviceGuard guard;
    if ((rc = kv_enter_device(d->x, guard, err)) != CCOMP_OK) return rc;
    const Job j = make_job(d);
    cudaStream_t st = (cudaStream_t)stream;
    return run_checked(
        d, st, check, first_bad,
        [&]() {
            return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? launch_quantize<float>(d, j, st)
                                                       : launch_quantize<uint16_t>(d, j, st);
        },
        "the quantize kernel", err);
}

extern "C" ccomp_status ccomp_cuda_kv_dequantize(const ccomp_cuda_kv_desc *d, void *stream, int check, int64_t *first_bad,
                                        ccomp_error *err)
{
    *first_bad = -1;
    ccomp_status rc = check_desc(d, err);
    if (rc) return rc;
    if (d->method == CCOMP_KV_M_DENSE) return reject(err, "nothing to dequantize for a dense tensor");
    if ((rc = check_x(d, err)) != CCOMP_OK) return rc;
    const bool checked = d->method == CCOMP_KV_M_SPARSE || d->method == CCOMP_KV_M_GEAR;
    if (checked && d->flag == NULL) return reject(err, "dequantize of this method needs the flag buffer");
    if (d->S * d->T == 0) return CCOMP_OK;
    DeviceGuard guard;
    if ((rc = kv_enter_device(d->x, guard, err)) != CCOMP_OK) return rc;
    const Job j = make_job(d);
    cudaStream_t st = (cudaStream_t)stream;
    ccomp_cuda_kv_desc dd = *d;
    if (!checked) dd.flag = NULL;
    return run_checked(
        &dd, st, checked && check, first_bad,
        [&]() {
            return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? launch_dequantize<float>(d, j, st)
                                                       : launch_dequantize<uint16_t>(d, j, st);
        },
        "the dequantize kernel", err);
}

extern "C" size_t ccomp_cuda_kv_attention_workspace(size_t S, size_t R, size_t Dv, const ccomp_cuda_kv_desc *v,
                                                    size_t nv)
{
    size_t T = 0;
    for (size_t i = 0; i < nv; i++) T += v[i].T;
    const size_t NC = chunks_of(v, nv);
    return S * R * (T + 2 * NC + NC * Dv) * sizeof(float);
}

extern "C" ccomp_status ccomp_cuda_kv_attention(const void *q, int q_dtype, size_t S, size_t R, size_t D, float scale,
                                       const ccomp_cuda_kv_desc *k, size_t nk, const ccomp_cuda_kv_desc *v, size_t nv,
                                       float *out, void *ws, size_t ws_bytes, void *stream, ccomp_error *err)
{
    if (q == NULL || out == NULL) return reject(err, "q and out are required");
    if (q_dtype != CCOMP_CUDA_KV_FLOAT32 && q_dtype != CCOMP_CUDA_KV_FLOAT16)
        return reject(err, "q must be float32 or float16");
    if (S == 0 || S > 65535)
        return reject(err, "K/V slices (batch x kv heads) must be in [1, 65535], got %zu", S);
    if (R == 0 || R > 4096) return reject(err, "query rows per K/V head must be in [1, 4096], got %zu", R);
    if (D == 0 || D % 32 != 0 || D > 256)
        return reject(err, "the GPU attention needs a key head dim that is a multiple of 32 up to 256, got %zu", D);
    if (nv == 0 || v == NULL) return reject(err, "the V cache has no segments");
    const size_t Dv = v[0].D;
    if (Dv == 0 || Dv % 32 != 0 || Dv > 256)
        return reject(err, "the GPU attention needs a value head dim that is a multiple of 32 up to 256, got %zu", Dv);
    if (!(scale == scale) || isinf(scale)) return reject(err, "scale must be finite");
    size_t Tk, Tv;
    ccomp_status rc;
    if ((rc = check_segments(k, nk, S, D, "K", &Tk, err)) != CCOMP_OK) return rc;
    if ((rc = check_segments(v, nv, S, Dv, "V", &Tv, err)) != CCOMP_OK) return rc;
    if (Tk != Tv) return reject(err, "K and V hold different token counts (%zu and %zu)", Tk, Tv);
    if (Tk == 0) return reject(err, "the cache holds no tokens");
    if (Tk > ((size_t)1 << 31)) return reject(err, "too many tokens (%zu)", Tk);
    const size_t NC = chunks_of(v, nv);
    if (NC > 8192) return reject(err, "too many tokens for one call (%zu chunks of %d)", NC, CHUNK);
    const size_t need = ccomp_cuda_kv_attention_workspace(S, R, Dv, v, nv);
    if (ws == NULL || ws_bytes < need)
        return reject(err, "the workspace holds %zu bytes, expected at least %zu", ws_bytes, need);
    if (reinterpret_cast<uintptr_t>(ws) % 16 != 0) return reject(err, "the workspace is misaligned");
    DeviceGuard guard;
    if ((rc = kv_enter_device(q, guard, err)) != CCOMP_OK) return rc;
    cudaStream_t st = (cudaStream_t)stream;
    Attn a;
    memset(&a, 0, sizeof a);
    a.q = q, a.q_f16 = q_dtype == CCOMP_CUDA_KV_FLOAT16;
    a.S = S, a.R = R, a.D = D, a.Dv = Dv, a.T = Tk, a.NC = NC;
    a.scale_log2 = scale * 1.4426950408889634f;
    a.scores = (float *)ws;
    a.pm = a.scores + S * R * Tk;
    a.pl = a.pm + S * R * NC;
    a.po = a.pl + S * R * NC;
    a.out = out;
    a.rb = R == 1 ? 1 : RB_MAX;
    cudaError_t e = cudaSuccess;
    size_t t0 = 0;
    for (size_t i = 0; i < nk && e == cudaSuccess; i++) {
        if (k[i].T == 0) continue;
        a.g = make_seg(&k[i], t0);
        const int rw = (int)((a.g.row_bytes + 3) / 4);
        a.pitch = rw | 1;
        const size_t smem = scores_smem(a.g, D, a.rb, a.pitch);
        e = launch_scores(a, dim3(blocks_of(k[i].T, SCORE_T), (unsigned)S), smem, st);
        t0 += k[i].T;
    }
    if (e != cudaSuccess) return fail(err, e, "the attention scores kernel");
    t0 = 0;
    for (size_t i = 0; i < nv && e == cudaSuccess; i++) {
        if (v[i].T == 0) continue;
        a.g = make_seg(&v[i], t0);
        const size_t smem = ((size_t)a.rb * CHUNK + (size_t)(ACC_T / (Dv / 8)) * (size_t)a.rb * Dv) * sizeof(float);
        e = launch_accum(a, dim3(blocks_of(v[i].T, CHUNK), (unsigned)S), smem, st);
        a.chunk0 += (v[i].T + CHUNK - 1) / CHUNK;
        t0 += v[i].T;
    }
    if (e != cudaSuccess) return fail(err, e, "the attention accumulation kernel");
    e = launch(combine_kernel, dim3((unsigned)(S * R)), dim3(256), NC * sizeof(float), st, a);
    if (e != cudaSuccess) return fail(err, e, "the attention combine kernel");
    return CCOMP_OK;
}

extern "C" int ccomp_cuda_alloc(size_t n, void **dev, char *msg, size_t msg_len)
{
    *dev = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return fail(e == cudaSuccess ? cudaErrorNoDevice : e, "cudaGetDeviceCount", msg, msg_len);
    e = cudaMalloc(dev, n ? n : 1);
    if (e != cudaSuccess) {
        *dev = NULL;
        return fail(e, "cudaMalloc", msg, msg_len);
    }
    return 0;
}

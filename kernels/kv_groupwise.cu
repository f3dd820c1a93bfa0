// ccomp.kv on the GPU: groupwise (de)quantization (csrc/kv/groupwise.c is the specification) and its row of
// the CUDA method table.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "kv_table.cuh"
#include "launch.cuh"

namespace
{

#include "kv_common.cuh"

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

// The launcher for the dense tensor's element type (float32 or float16 bits).
template <template <class> class F> cudaError_t by_dtype(const ccomp_cuda_kv_desc *d, cudaStream_t st)
{
    const Job j = make_job(d);
    return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? F<float>::run(d, j, st) : F<uint16_t>::run(d, j, st);
}

template <class TIn> struct GwQuantize {
    static cudaError_t run(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
    {
        if (d->axis == AXIS_TOKEN) {
            const size_t units = d->S * d->T * (d->D / 8);
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
        }
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
};

template <class TOut> struct GwDequantize {
    static cudaError_t run(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
    {
        const dim3 grid(blocks_of(d->S * d->T * (d->D / 8), NT)), block(NT);
#define GW_DQ(B)                                                                                                       \
    (d->axis == AXIS_TOKEN ? launch(gw_dequantize<B, AXIS_TOKEN, TOut>, grid, block, 0, st, j)                         \
                           : launch(gw_dequantize<B, AXIS_CHANNEL, TOut>, grid, block, 0, st, j))
        switch (d->bits) {
        case 2: return GW_DQ(2);
        case 3: return GW_DQ(3);
        case 4: return GW_DQ(4);
        default: return GW_DQ(8);
        }
#undef GW_DQ
    }
};

} // namespace

extern const ccomp_kv_cuda_method ccomp_kv_cuda_groupwise = {check_gw, NULL, by_dtype<GwQuantize>,
                                                             by_dtype<GwDequantize>, false};

// ccomp.kv on the GPU: ggml q8_0 / q4_0 blocks (csrc/kv/ggml.c is the specification; the block structs are
// ccomp/kv.h's) and their rows of the CUDA method table.
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

// The launcher for the dense tensor's element type (float32 or float16 bits).
template <template <class> class F> cudaError_t by_dtype(const ccomp_cuda_kv_desc *d, cudaStream_t st)
{
    const Job j = make_job(d);
    return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? F<float>::run(d, j, st) : F<uint16_t>::run(d, j, st);
}

ccomp_status check_ggml(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    if (d->D % 32 != 0) return reject(err, "ggml blocks need a head dim that is a multiple of 32, got %zu", d->D);
    return check_array(d->blocks, d->T * (d->D / 32) * ggml_block_bytes(d->method == CCOMP_KV_M_Q8_0), d->S, 1,
                       "blocks", err);
}

// the quantizer stores 8 bytes at a time at 2-byte aligned addresses
ccomp_status check_ggml_quantize(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    if ((reinterpret_cast<uintptr_t>(d->blocks.ptr) & 1u) || (d->S > 1 && (d->blocks.stride & 1u)))
        return reject(err, "the blocks array must be 2-byte aligned with an even slice stride");
    return CCOMP_OK;
}

template <int TYPE> struct GgmlQuantize {
    template <class TIn> struct Of {
        static cudaError_t run(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
        {
            const size_t units = d->S * d->T * (d->D / 8);
            return launch(ggml_quantize<TIn, TYPE>, dim3(blocks_of(units, NT)), dim3(NT), 0, st, j);
        }
    };
};

template <int TYPE> struct GgmlDequantize {
    template <class TOut> struct Of {
        static cudaError_t run(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
        {
            const size_t units = d->S * d->T * (d->D / 8);
            return launch(ggml_dequantize<TYPE, TOut>, dim3(blocks_of(units, NT)), dim3(NT), 0, st, j);
        }
    };
};

} // namespace

extern const ccomp_kv_cuda_method ccomp_kv_cuda_q8_0 = {check_ggml, check_ggml_quantize,
                                                        by_dtype<GgmlQuantize<Q8_0>::Of>,
                                                        by_dtype<GgmlDequantize<Q8_0>::Of>, false};
extern const ccomp_kv_cuda_method ccomp_kv_cuda_q4_0 = {check_ggml, check_ggml_quantize,
                                                        by_dtype<GgmlQuantize<Q4_0>::Of>,
                                                        by_dtype<GgmlDequantize<Q4_0>::Of>, false};

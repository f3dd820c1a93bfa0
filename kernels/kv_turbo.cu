// ccomp.kv on the GPU: turbo (random Hadamard rotation + Lloyd-Max codes, optional QJL residual signs;
// csrc/kv/turbo.c is the specification) and its row of the CUDA method table.
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

// The job, with the splitmix64 signs of kv_turbo.h, one per channel.
Job turbo_job(const ccomp_cuda_kv_desc *d)
{
    Job j = make_job(d);
    uint64_t st = d->seed;
    for (size_t c = 0; c < d->D && c < 1024; c++) {
        uint64_t z = (st += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        if (z >> 63) j.sign_mask[c >> 5] |= 1u << (c & 31);
    }
    return j;
}

ccomp_status check_turbo(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    const size_t S = d->S, T = d->T, D = d->D;
    ccomp_status rc;
    if (d->bits < 1 || d->bits > 4) return reject(err, "turbo: bits must be 1, 2, 3 or 4, got %d", d->bits);
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
}

ccomp_status check_turbo_quantize(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    if (d->qjl && d->qjl_matrix_t == NULL) return reject(err, "turbo with qjl needs the QJL matrix");
    return CCOMP_OK;
}

template <class TIn> cudaError_t turbo_quantize_as(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
{
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

template <class TOut> cudaError_t turbo_dequantize_as(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
{
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

cudaError_t turbo_quantize_launch(const ccomp_cuda_kv_desc *d, cudaStream_t st)
{
    const Job j = turbo_job(d);
    return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? turbo_quantize_as<float>(d, j, st)
                                               : turbo_quantize_as<uint16_t>(d, j, st);
}

cudaError_t turbo_dequantize_launch(const ccomp_cuda_kv_desc *d, cudaStream_t st)
{
    const Job j = turbo_job(d);
    return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? turbo_dequantize_as<float>(d, j, st)
                                               : turbo_dequantize_as<uint16_t>(d, j, st);
}

} // namespace

extern const ccomp_kv_cuda_method ccomp_kv_cuda_turbo = {check_turbo, check_turbo_quantize, turbo_quantize_launch,
                                                         turbo_dequantize_launch, false};

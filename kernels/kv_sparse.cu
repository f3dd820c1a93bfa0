// ccomp.kv on the GPU: bitmap_sparse (magnitude pruning in 64-channel bitmap tiles; csrc/kv/sparse.c is the
// specification) and its row of the CUDA method table.
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

// The launcher for the dense tensor's element type (float32 or float16 bits).
template <template <class> class F> cudaError_t by_dtype(const ccomp_cuda_kv_desc *d, cudaStream_t st)
{
    const Job j = make_job(d);
    return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? F<float>::run(d, j, st) : F<uint16_t>::run(d, j, st);
}

ccomp_status check_sparse(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    const size_t S = d->S, T = d->T, D = d->D;
    ccomp_status rc;
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

template <class TIn> struct SparseQuantize {
    static cudaError_t run(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
    {
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
};

template <class TOut> struct SparseDequantize {
    static cudaError_t run(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
    {
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
};

} // namespace

extern const ccomp_kv_cuda_method ccomp_kv_cuda_bitmap_sparse = {check_sparse, NULL, by_dtype<SparseQuantize>,
                                                                 by_dtype<SparseDequantize>, true};

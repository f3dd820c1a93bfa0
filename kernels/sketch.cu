// GPU path of ccomp.sketch: lookup-table matmul (GEMV for a few input rows,
// tiled GEMM for more), the gradients with respect to the tables and the input,
// and dequantization.  The specification is csrc/sketch/kernels.c (the _ref
// loops) and ccomp/sketch.h (the format); ccomp_cuda.h documents the entry
// points.  W_hat is never built, except by dequantize (asked for) and in small
// shared-memory tiles of the GEMM.
//
// Arithmetic is float32 (inputs float32 or float16, tables float32, float16 or
// bfloat16 converted exactly) with a fixed summation order, so a call gives the
// same bits on every run, whatever the device; the order differs from the CPU's
// (results agree to float32 rounding):
//  - GEMV (batch <= GEMV_MAX_BATCH): one warp per W row; lane l takes the
//    32-column chunks l, l + 32, l + 64, ... in increasing order, columns in
//    order inside a chunk (fmaf into one float per input row); then the 32
//    lane sums are combined by the butterfly __shfl_xor_sync(16, 8, 4, 2, 1).
//  - GEMM (matmul with a larger batch, grad_input): every output is one fmaf
//    chain over the reduction index in increasing order (columns of W for
//    matmul, rows of W for grad_input).
//  - grad_tables: d[r][c] = sum_i gy[i][r] x[i][c] is one fmaf chain over i in
//    increasing order; each of 4 threads of a row adds its d values (columns in
//    increasing order, 16 of every 64) into its own per-code bins; the 4 bins
//    are summed in thread order, and a row-group split into several column
//    segments (shape-dependent only, see gt_plan) sums its segments in order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ccomp/sketch.h"
#include "ccomp_cuda.h"
#include "launch.cuh"

static_assert((int)CCOMP_CUDA_SKETCH_F32 == (int)CCOMP_SKETCH_F32 &&
                  (int)CCOMP_CUDA_SKETCH_F16 == (int)CCOMP_SKETCH_F16 &&
                  (int)CCOMP_CUDA_SKETCH_BF16 == (int)CCOMP_SKETCH_BF16,
              "the GPU table types are the core's");

namespace
{

constexpr unsigned FULL = 0xffffffffu;
constexpr int GEMV_WARPS = 8;     // W rows (one per warp) of a GEMV block
constexpr int GEMV_MAX_BATCH = 8; // input rows up to which matmul runs the GEMV
constexpr int GM_T = 256;         // threads of a GEMM block: 16 x 16, 4 output columns each
constexpr int GM_BN = 64;         // output columns of a GEMM block
constexpr int GM_BK = 16;         // reduction step of the GEMM
constexpr int GT_T = 256;         // threads of a grad_tables block: 64 rows x 4 column quarters
constexpr int GT_ROWS = 64;       // W rows of a grad_tables block
constexpr int GT_COLS = 64;       // columns of a grad_tables sub-tile (16 per thread)
constexpr int GT_BK = 32;         // input rows staged per step
constexpr int GT_MIN_BLOCKS = 512; // grad_tables splits groups into column segments below this many blocks
constexpr int EW_T = 256;         // threads of an element-wise block (grad_tables_sum, dequantize_kernel)
constexpr int MAX_K = 16;

// What every kernel reads: the sketch and the call's arrays.
struct Args {
    const void *tables;
    const uint8_t *codes;
    size_t rows, cols, groups, gn, gb; // gn columns per group, gb code bytes per (row, group)
    int bits;
    bool tab_vec; // tables 16-byte aligned with K entries a multiple of 16 bytes
    const void *x, *gy; // [n][cols], [n][rows]
    float *out;
    void *ws;
    size_t n;
    size_t seg, spg; // grad_tables: columns per segment, segments per group
};

// ------------------------------------------------------------ element access

// Table entry i as float (exact for every table type).
template <int TD> __device__ __forceinline__ float tab_get(const void *t, size_t i)
{
    if (TD == CCOMP_CUDA_SKETCH_F32) return __ldg(static_cast<const float *>(t) + i);
    const uint32_t h = __ldg(static_cast<const unsigned short *>(t) + i);
    if (TD == CCOMP_CUDA_SKETCH_F16) return __half2float(__ushort_as_half((unsigned short)h));
    return __uint_as_float(h << 16); // bfloat16: the high half of a float32
}

// The K entries of a table from element offset off; vec: 16-byte loads.
template <int TD, int K> __device__ __forceinline__ void load_table(const void *t, size_t off, bool vec, float v[K])
{
    constexpr int ES = TD == CCOMP_CUDA_SKETCH_F32 ? 4 : 2;
    if ((K * ES) % 16 == 0 && vec) {
        const uint4 *p = reinterpret_cast<const uint4 *>(static_cast<const char *>(t) + off * ES);
#pragma unroll
        for (int q = 0; q < K * ES / 16; q++) {
            const uint4 u = __ldg(p + q);
            const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (ES == 4) {
                    v[q * 4 + e] = __uint_as_float(w[e]);
                } else if (TD == CCOMP_CUDA_SKETCH_F16) {
                    v[q * 8 + 2 * e] = __half2float(__ushort_as_half((unsigned short)(w[e] & 0xffffu)));
                    v[q * 8 + 2 * e + 1] = __half2float(__ushort_as_half((unsigned short)(w[e] >> 16)));
                } else {
                    v[q * 8 + 2 * e] = __uint_as_float(w[e] << 16);
                    v[q * 8 + 2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
                }
            }
        }
    } else {
#pragma unroll
        for (int k = 0; k < K; k++) v[k] = tab_get<TD>(t, off + k);
    }
}

// Input element i (float32, or float16 held as its bits).
__device__ __forceinline__ float in_get(const float *p, size_t i)
{
    return __ldg(p + i);
}

__device__ __forceinline__ float in_get(const uint16_t *p, size_t i)
{
    return __half2float(__ushort_as_half(__ldg(p + i)));
}

// 8 consecutive inputs at a 16-byte aligned address.
__device__ __forceinline__ void load8(const float *p, float v[8])
{
    const float4 a = __ldg(reinterpret_cast<const float4 *>(p)), b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ void load8(const uint16_t *p, float v[8])
{
    const uint4 a = __ldg(reinterpret_cast<const uint4 *>(p));
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        v[2 * k] = __half2float(__ushort_as_half((unsigned short)(w[k] & 0xffffu)));
        v[2 * k + 1] = __half2float(__ushort_as_half((unsigned short)(w[k] >> 16)));
    }
}

// Code j of an MSB-first run of b-bit codes (sk_code_at of the core; reads only the bytes holding it).
__device__ __forceinline__ unsigned code_at(const uint8_t *run, size_t j, int bits)
{
    const size_t bit = j * (size_t)bits, byte = bit >> 3;
    const unsigned shift = (unsigned)(bit & 7u), mask = (1u << bits) - 1u;
    unsigned v = (unsigned)__ldg(run + byte) << 8;
    if (shift + (unsigned)bits > 8u) v |= __ldg(run + byte + 1);
    return (v >> (16u - shift - (unsigned)bits)) & mask;
}

// W_hat[r][c].
template <int TD> __device__ __forceinline__ float w_hat(const Args &a, size_t r, size_t c)
{
    const size_t g = c / a.gn, idx = r * a.groups + g;
    return tab_get<TD>(a.tables, (idx << a.bits) + code_at(a.codes + idx * a.gb, c - g * a.gn, a.bits));
}

// The 4 * BITS bytes of 32 codes (a chunk), as little-endian words: 16-, 8- or 3 x 4-byte loads.
template <int BITS> __device__ __forceinline__ void load_chunk(const uint8_t *p, uint32_t w[BITS])
{
    if (BITS == 4) {
        const uint4 u = __ldg(reinterpret_cast<const uint4 *>(p));
        w[0] = u.x, w[1] = u.y, w[2] = u.z, w[3] = u.w;
    } else if (BITS == 2) {
        const uint2 u = __ldg(reinterpret_cast<const uint2 *>(p));
        w[0] = u.x, w[1] = u.y;
    } else {
#pragma unroll
        for (int k = 0; k < BITS; k++) w[k] = __ldg(reinterpret_cast<const unsigned int *>(p) + k);
    }
}

// Code j (a compile-time constant after unrolling) of a loaded chunk: code_at on its bytes.
template <int BITS> __device__ __forceinline__ unsigned chunk_code(const uint32_t w[BITS], int j)
{
    const int bit = j * BITS, byte = bit >> 3, shift = bit & 7;
    unsigned v = ((w[byte >> 2] >> (8 * (byte & 3))) & 0xffu) << 8;
    if (shift + BITS > 8) v |= (w[(byte + 1) >> 2] >> (8 * ((byte + 1) & 3))) & 0xffu;
    return (v >> (16 - shift - BITS)) & ((1u << BITS) - 1u);
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// ------------------------------------------------------------------ GEMV

// y[b][r] = sum_c x[b][c] W_hat[r][c] for b < n <= NB; one warp per row r.
// Needs gn % 32 == 0 and 16-byte aligned codes and x: a chunk of 32 codes
// (4 * BITS bytes, one wide load) then lies in one group and one row.  Each
// lane keeps the table of its chunk's group in its own column of a shared
// [K][32] array (lane l reads bank l: no conflicts), reloaded when the group
// changes.
//
// Blocks per SM the launch bound asks for: none (ptxas picks its register target), but 6 (at most 40
// registers) for float16 inputs in batches of up to 4: the 40 registers ptxas picked on its own there, yet
// given as a bound, which it then meets without the spill it made for lut_gemv<3, 2, unsigned short, 4>.
template <class TX, int NB>
constexpr int gemv_min_blocks()
{
    return sizeof(TX) == 2 && NB == 4 ? 6 : 0;
}

template <int BITS, int TD, class TX, int NB>
__global__ void __launch_bounds__(GEMV_WARPS * 32, (gemv_min_blocks<TX, NB>())) lut_gemv(const Args a)
{
    constexpr int K = 1 << BITS;
    __shared__ float lut[GEMV_WARPS][K * 32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t r = (size_t)blockIdx.x * GEMV_WARPS + warp;
    if (r >= a.rows) return; // the whole warp: no block-wide barrier follows
    float *my = &lut[warp][lane];
    const unsigned chunks = (unsigned)(a.cols >> 5), cpg = (unsigned)(a.gn >> 5); // cols <= 2^31
    const uint8_t *rc = a.codes + r * a.groups * a.gb;
    const TX *x = static_cast<const TX *>(a.x);
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0.0f;
    unsigned cur = ~0u;
    for (unsigned q = lane; q < chunks; q += 32) {
        const unsigned g = q / cpg;
        if (g != cur) {
            cur = g;
            float t[K];
            load_table<TD, K>(a.tables, (r * a.groups + g) * K, a.tab_vec, t);
#pragma unroll
            for (int k = 0; k < K; k++) my[k * 32] = t[k];
        }
        uint32_t w[BITS];
        load_chunk<BITS>(rc + (size_t)q * (4 * BITS), w);
        const TX *xq = x + (size_t)q * 32;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            float wv[8];
#pragma unroll
            for (int j = 0; j < 8; j++) wv[j] = my[chunk_code<BITS>(w, u * 8 + j) * 32];
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b < (int)a.n) {
                    float xv[8];
                    load8(xq + (size_t)b * a.cols + u * 8, xv);
#pragma unroll
                    for (int j = 0; j < 8; j++) acc[b] = fmaf(wv[j], xv[j], acc[b]);
                }
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        const float s = warp_sum(acc[b]);
        if (lane == 0 && b < (int)a.n) a.out[(size_t)b * a.rows + r] = s;
    }
}

// The same product for any layout (group sizes that are not a multiple of 32,
// unaligned arrays): lane l takes columns l, l + 32, ... and reads each code and
// table entry on its own.
template <int TD, class TX, int NB> __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_any(const Args a)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t r = (size_t)blockIdx.x * GEMV_WARPS + warp;
    if (r >= a.rows) return;
    const TX *x = static_cast<const TX *>(a.x);
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0.0f;
    for (size_t c = lane; c < a.cols; c += 32) {
        const float w = w_hat<TD>(a, r, c);
#pragma unroll
        for (int b = 0; b < NB; b++)
            if (b < (int)a.n) acc[b] = fmaf(w, in_get(x, (size_t)b * a.cols + c), acc[b]);
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        const float s = warp_sum(acc[b]);
        if (lane == 0 && b < (int)a.n) a.out[(size_t)b * a.rows + r] = s;
    }
}

// ------------------------------------------------------------------ GEMM

// out[m][o] = sum_k A[m][k] B[k][o] for m < M (rows of A from m0), with A the
// input ([M][Kd] row-major: x for matmul, gy for grad_input) and B decoded from
// the sketch a tile at a time: WT (matmul) B[k][o] = W_hat[o][k], Kd = cols;
// otherwise (grad_input) B[k][o] = W_hat[k][o], Kd = rows.  A block computes
// BM x 64 outputs; thread (tx, ty) of 16 x 16 the rows ty * BM/16 .. and
// columns tx * 4 .. + 3.
template <int TD, class TA, int BM, bool WT>
__global__ void __launch_bounds__(GM_T) sketch_gemm(const Args a, const TA *A, size_t M, float *out)
{
    constexpr int TM = BM / 16;
    __shared__ float As[GM_BK][BM + 1];
    __shared__ __align__(16) float Bs[GM_BK][GM_BN + 4];
    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    const size_t Kd = WT ? a.cols : a.rows, No = WT ? a.rows : a.cols;
    const size_t m0 = (size_t)blockIdx.y * BM, o0 = (size_t)blockIdx.x * GM_BN;
    float acc[TM][4];
#pragma unroll
    for (int m = 0; m < TM; m++)
#pragma unroll
        for (int o = 0; o < 4; o++) acc[m][o] = 0.0f;
    for (size_t k0 = 0; k0 < Kd; k0 += GM_BK) {
#pragma unroll
        for (int e = 0; e < TM; e++) { // BM x 16 inputs, TM per thread
            const int idx = t + GM_T * e, m = idx / GM_BK, k = idx % GM_BK;
            const size_t gm = m0 + m, gk = k0 + k;
            As[k][m] = gm < M && gk < Kd ? in_get(A, gm * Kd + gk) : 0.0f;
        }
#pragma unroll
        for (int e = 0; e < GM_BK * GM_BN / GM_T; e++) { // 16 x 64 weights, 4 per thread
            const int idx = t + GM_T * e;
            const int k = WT ? idx % GM_BK : idx / GM_BN, o = WT ? idx / GM_BK : idx % GM_BN;
            const size_t gk = k0 + k, go = o0 + o;
            Bs[k][o] = gk < Kd && go < No ? (WT ? w_hat<TD>(a, go, gk) : w_hat<TD>(a, gk, go)) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GM_BK; kk++) {
            const float4 b = *reinterpret_cast<const float4 *>(&Bs[kk][tx * 4]);
#pragma unroll
            for (int m = 0; m < TM; m++) {
                const float av = As[kk][ty * TM + m];
                acc[m][0] = fmaf(av, b.x, acc[m][0]);
                acc[m][1] = fmaf(av, b.y, acc[m][1]);
                acc[m][2] = fmaf(av, b.z, acc[m][2]);
                acc[m][3] = fmaf(av, b.w, acc[m][3]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < TM; m++) {
        const size_t gm = m0 + (size_t)ty * TM + m;
        if (gm >= M) continue;
#pragma unroll
        for (int o = 0; o < 4; o++) {
            const size_t go = o0 + (size_t)tx * 4 + o;
            if (go < No) out[gm * No + go] = acc[m][o];
        }
    }
}

// ------------------------------------------------------------ grad_tables

// Block (segment, row tile): W rows r0 .. r0 + 63 and the columns
// [c_begin, c_end) of one group.  Per sub-tile of 64 columns, thread (rr, cq)
// computes d[rr][16 cq + j] = sum_i gy[i][r0 + rr] x[i][c] (j < 16) from
// shared-memory tiles of gy and x, then adds each d to bins[code][t] (its own
// bins: bank t % 32, no conflicts).  The 4 threads of a row are summed in order
// into gt (one segment per group) or the workspace (several).
template <class TX, class TG> __global__ void __launch_bounds__(GT_T) grad_tables_kernel(const Args a)
{
    __shared__ __align__(16) float gys[GT_BK][GT_ROWS];
    __shared__ __align__(16) float xs[GT_BK][GT_COLS];
    __shared__ float bins[MAX_K * GT_T];
    const int t = threadIdx.x, rr = t % GT_ROWS, cq = t / GT_ROWS;
    const int K = 1 << a.bits;
    const size_t g = blockIdx.x / a.spg, s = blockIdx.x % a.spg;
    const size_t gbeg = g * a.gn, c_begin = gbeg + s * a.seg;
    const size_t c_end = c_begin + a.seg < gbeg + a.gn ? c_begin + a.seg : gbeg + a.gn;
    const size_t r0 = (size_t)blockIdx.y * GT_ROWS, r = r0 + rr;
    const TX *x = static_cast<const TX *>(a.x);
    const TG *gy = static_cast<const TG *>(a.gy);
    for (int k = 0; k < K; k++) bins[k * GT_T + t] = 0.0f;
    for (size_t c0 = c_begin; c0 < c_end; c0 += GT_COLS) {
        float d[16];
#pragma unroll
        for (int j = 0; j < 16; j++) d[j] = 0.0f;
        for (size_t i0 = 0; i0 < a.n; i0 += GT_BK) {
            __syncthreads(); // the previous tiles are consumed
#pragma unroll
            for (int e = 0; e < GT_BK * GT_ROWS / GT_T; e++) {
                const int idx = t + GT_T * e, ii = idx / GT_ROWS, q = idx % GT_ROWS;
                const size_t gi = i0 + ii;
                gys[ii][q] = gi < a.n && r0 + q < a.rows ? in_get(gy, gi * a.rows + r0 + q) : 0.0f;
                xs[ii][q] = gi < a.n && c0 + q < c_end ? in_get(x, gi * a.cols + c0 + q) : 0.0f;
            }
            __syncthreads();
#pragma unroll 4
            for (int ii = 0; ii < GT_BK; ii++) {
                const float gv = gys[ii][rr];
                const float4 *xp = reinterpret_cast<const float4 *>(&xs[ii][cq * 16]);
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const float4 v = xp[q];
                    d[4 * q] = fmaf(gv, v.x, d[4 * q]);
                    d[4 * q + 1] = fmaf(gv, v.y, d[4 * q + 1]);
                    d[4 * q + 2] = fmaf(gv, v.z, d[4 * q + 2]);
                    d[4 * q + 3] = fmaf(gv, v.w, d[4 * q + 3]);
                }
            }
        }
        if (r < a.rows) {
            const uint8_t *run = a.codes + (r * a.groups + g) * a.gb;
#pragma unroll
            for (int j = 0; j < 16; j++) {
                const size_t c = c0 + (size_t)cq * 16 + j;
                if (c < c_end) bins[code_at(run, c - gbeg, a.bits) * GT_T + t] += d[j];
            }
        }
    }
    __syncthreads();
    for (int o = t; o < GT_ROWS * K; o += GT_T) {
        const int orow = o / K, k = o % K;
        if (r0 + orow >= a.rows) continue;
        const float *b = &bins[k * GT_T + orow];
        const float v = ((b[0] + b[GT_ROWS]) + b[2 * GT_ROWS]) + b[3 * GT_ROWS];
        const size_t rg = (r0 + orow) * a.groups + g;
        if (a.spg == 1)
            a.out[rg * K + k] = v;
        else
            static_cast<float *>(a.ws)[(rg * a.spg + s) * K + k] = v;
    }
}

// gt[rg][k] = sum over the segments s (in order) of ws[rg][s][k].
__global__ void __launch_bounds__(EW_T) grad_tables_sum(const Args a)
{
    const size_t K = (size_t)1 << a.bits, total = a.rows * a.groups * K;
    const float *ws = static_cast<const float *>(a.ws);
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        const size_t rg = e / K, k = e % K;
        float v = 0.0f;
        for (size_t s = 0; s < a.spg; s++) v += ws[(rg * a.spg + s) * K + k];
        a.out[e] = v;
    }
}

// ------------------------------------------------------------ dequantize

template <int TD, int TO> __global__ void __launch_bounds__(EW_T) dequantize_kernel(const Args a, void *out)
{
    const size_t total = a.rows * a.cols;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / a.cols, c = e % a.cols;
        const float v = w_hat<TD>(a, r, c);
        if (TO == CCOMP_CUDA_SKETCH_F32)
            static_cast<float *>(out)[e] = v;
        else if (TO == CCOMP_CUDA_SKETCH_F16)
            static_cast<__half *>(out)[e] = __float2half_rn(v);
        else
            static_cast<__nv_bfloat16 *>(out)[e] = __float2bfloat16_rn(v);
    }
}

// ------------------------------------------------------------------ host side

#include "cuda_host.cuh"

template <class... P, class... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t stream, A... args)
{
    CCOMP_LAUNCH(grid, block, 0, stream, kernel)(args...);
    return cudaGetLastError();
}

unsigned blocks_of(size_t n, size_t per)
{
    return (unsigned)((n + per - 1) / per);
}

bool aligned16(const void *p)
{
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

size_t tab_size(int dtype)
{
    return dtype == CCOMP_CUDA_SKETCH_F32 ? 4 : 2;
}

// Checks the sketch and fills the shared arguments (the Python layer checks first with its own messages).
ccomp_status check_sketch(const ccomp_cuda_sketch *s, Args &a, ccomp_error *err)
{
    memset(&a, 0, sizeof a);
    if (s == NULL) return reject(err, "no sketch");
    if (s->bits < 2 || s->bits > 4) return reject(err, "bits must be 2, 3 or 4, got %d", s->bits);
    if (s->dtype != CCOMP_CUDA_SKETCH_F32 && s->dtype != CCOMP_CUDA_SKETCH_F16 && s->dtype != CCOMP_CUDA_SKETCH_BF16)
        return reject(err, "the GPU reads float32, float16 or bfloat16 tables (types 0, 1, 2), got type %d",
                      s->dtype);
    if (s->rows == 0 || s->cols == 0 || s->groups == 0 || s->cols % s->groups != 0)
        return reject(err, "bad sketch shape: %zu rows, %zu columns, %zu groups (columns must be a positive "
                      "multiple of the groups)", s->rows, s->cols, s->groups);
    if (s->rows > ((size_t)1 << 31) || s->cols > ((size_t)1 << 31))
        return reject(err, "the GPU kernels take up to 2^31 rows and columns, got %zu x %zu", s->rows,
                      s->cols);
    if (s->tables == NULL || s->codes == NULL)
        return reject(err, "the sketch's tables and codes are required");
    a.tables = s->tables;
    a.codes = s->codes;
    a.rows = s->rows, a.cols = s->cols, a.groups = s->groups, a.bits = s->bits;
    a.gn = s->cols / s->groups;
    a.gb = (a.gn * (size_t)s->bits + 7) / 8;
    a.tab_vec = aligned16(s->tables) && (((size_t)1 << s->bits) * tab_size(s->dtype)) % 16 == 0;
    return CCOMP_OK;
}

ccomp_status check_input(const void *p, int dtype, size_t n, size_t width, const char *name, ccomp_error *err)
{
    if (dtype != CCOMP_CUDA_SKETCH_F32 && dtype != CCOMP_CUDA_SKETCH_F16)
        return reject(err, "%s must be float32 or float16 (types 0, 1), got type %d", name, dtype);
    if (n > ((size_t)1 << 40) / width) return reject(err, "%s is too large (%zu x %zu)", name, n, width);
    if (n > 0 && p == NULL) return reject(err, "%s is required", name);
    return CCOMP_OK;
}

// --- matmul

template <int BITS, int TD, class TX> cudaError_t gemv_fast(const Args &a, cudaStream_t st)
{
    const dim3 grid(blocks_of(a.rows, GEMV_WARPS)), block(GEMV_WARPS * 32);
    if (a.n == 1) return launch(lut_gemv<BITS, TD, TX, 1>, grid, block, st, a);
    if (a.n <= 4) return launch(lut_gemv<BITS, TD, TX, 4>, grid, block, st, a);
    return launch(lut_gemv<BITS, TD, TX, 8>, grid, block, st, a);
}

template <int TD, class TX> cudaError_t matmul_typed(const Args &a, cudaStream_t st)
{
    if (a.n <= GEMV_MAX_BATCH) {
        const bool fast = a.gn % 32 == 0 && aligned16(a.codes) && aligned16(a.x);
        if (fast) {
            switch (a.bits) {
            case 2: return gemv_fast<2, TD, TX>(a, st);
            case 3: return gemv_fast<3, TD, TX>(a, st);
            default: return gemv_fast<4, TD, TX>(a, st);
            }
        }
        const dim3 grid(blocks_of(a.rows, GEMV_WARPS)), block(GEMV_WARPS * 32);
        if (a.n == 1) return launch(gemv_any<TD, TX, 1>, grid, block, st, a);
        if (a.n <= 4) return launch(gemv_any<TD, TX, 4>, grid, block, st, a);
        return launch(gemv_any<TD, TX, 8>, grid, block, st, a);
    }
    // GEMM over slices of at most 65535 blocks of input rows
    const TX *x = static_cast<const TX *>(a.x);
    const size_t bm = a.n <= 32 ? 16 : 64, step = bm * 65535;
    for (size_t m = 0; m < a.n; m += step) {
        const size_t M = a.n - m < step ? a.n - m : step;
        const dim3 grid(blocks_of(a.rows, GM_BN), blocks_of(M, bm));
        cudaError_t e = bm == 16 ? launch(sketch_gemm<TD, TX, 16, true>, grid, dim3(GM_T), st, a, x + m * a.cols, M,
                                          a.out + m * a.rows)
                                 : launch(sketch_gemm<TD, TX, 64, true>, grid, dim3(GM_T), st, a, x + m * a.cols, M,
                                          a.out + m * a.rows);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

template <int TD> cudaError_t matmul_td(const Args &a, int x_dtype, cudaStream_t st)
{
    return x_dtype == CCOMP_CUDA_SKETCH_F16 ? matmul_typed<TD, uint16_t>(a, st) : matmul_typed<TD, float>(a, st);
}

// --- grad_input

template <int TD, class TG> cudaError_t grad_input_typed(const Args &a, cudaStream_t st)
{
    const TG *gy = static_cast<const TG *>(a.gy);
    const size_t bm = a.n <= 32 ? 16 : 64, step = bm * 65535;
    for (size_t m = 0; m < a.n; m += step) {
        const size_t M = a.n - m < step ? a.n - m : step;
        const dim3 grid(blocks_of(a.cols, GM_BN), blocks_of(M, bm));
        cudaError_t e = bm == 16 ? launch(sketch_gemm<TD, TG, 16, false>, grid, dim3(GM_T), st, a, gy + m * a.rows, M,
                                          a.out + m * a.cols)
                                 : launch(sketch_gemm<TD, TG, 64, false>, grid, dim3(GM_T), st, a, gy + m * a.rows, M,
                                          a.out + m * a.cols);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

template <int TD> cudaError_t grad_input_td(const Args &a, int gy_dtype, cudaStream_t st)
{
    return gy_dtype == CCOMP_CUDA_SKETCH_F16 ? grad_input_typed<TD, uint16_t>(a, st)
                                             : grad_input_typed<TD, float>(a, st);
}

// --- grad_tables

// Columns per segment and segments per group: whole groups when the row tiles
// times the groups give GT_MIN_BLOCKS blocks, else each group is split into
// segments of whole 64-column sub-tiles.  Depends on the shape only.
void gt_plan(size_t rows, size_t cols, size_t groups, size_t *seg, size_t *spg)
{
    const size_t gn = cols / groups, tiles = (gn + GT_COLS - 1) / GT_COLS;
    const size_t base = ((rows + GT_ROWS - 1) / GT_ROWS) * groups;
    size_t want = base >= (size_t)GT_MIN_BLOCKS ? 1 : (GT_MIN_BLOCKS + base - 1) / base;
    if (want > tiles) want = tiles;
    const size_t seg_tiles = (tiles + want - 1) / want;
    *seg = seg_tiles * GT_COLS;
    *spg = (tiles + seg_tiles - 1) / seg_tiles;
}

template <class TX, class TG> cudaError_t grad_tables_typed(const Args &a, cudaStream_t st)
{
    const dim3 grid((unsigned)(a.groups * a.spg), blocks_of(a.rows, GT_ROWS));
    cudaError_t e = launch(grad_tables_kernel<TX, TG>, grid, dim3(GT_T), st, a);
    if (e != cudaSuccess || a.spg == 1) return e;
    const size_t total = a.rows * a.groups * ((size_t)1 << a.bits);
    const size_t nb = (total + EW_T - 1) / EW_T;
    return launch(grad_tables_sum, dim3((unsigned)(nb < 65536 ? nb : 65536)), dim3(EW_T), st, a);
}

// --- dequantize

template <int TD> cudaError_t dequantize_td(const Args &a, void *out, int out_dtype, dim3 grid, cudaStream_t st)
{
    if (out_dtype == CCOMP_CUDA_SKETCH_F32)
        return launch(dequantize_kernel<TD, CCOMP_CUDA_SKETCH_F32>, grid, dim3(EW_T), st, a, out);
    if (out_dtype == CCOMP_CUDA_SKETCH_F16)
        return launch(dequantize_kernel<TD, CCOMP_CUDA_SKETCH_F16>, grid, dim3(EW_T), st, a, out);
    return launch(dequantize_kernel<TD, CCOMP_CUDA_SKETCH_BF16>, grid, dim3(EW_T), st, a, out);
}

} // namespace

// ------------------------------------------------------------------ entry points

extern "C" ccomp_status ccomp_cuda_sketch_matmul(const ccomp_cuda_sketch *s, const void *x, int x_dtype, size_t n,
                                                 float *y, void *stream, ccomp_error *err)
{
    Args a;
    ccomp_status rc;
    if ((rc = check_sketch(s, a, err)) != CCOMP_OK) return rc;
    if ((rc = check_input(x, x_dtype, n, a.cols, "x", err)) != CCOMP_OK) return rc;
    if (n > 0 && y == NULL) return reject(err, "the output is required");
    if (n == 0) return CCOMP_OK;
    DeviceGuard guard;
    if ((rc = enter_device(s->codes, guard, err, "the sketch codes are")) != CCOMP_OK) return rc;
    a.x = x, a.out = y, a.n = n;
    const cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e;
    switch (s->dtype) {
    case CCOMP_CUDA_SKETCH_F32: e = matmul_td<CCOMP_CUDA_SKETCH_F32>(a, x_dtype, st); break;
    case CCOMP_CUDA_SKETCH_F16: e = matmul_td<CCOMP_CUDA_SKETCH_F16>(a, x_dtype, st); break;
    default: e = matmul_td<CCOMP_CUDA_SKETCH_BF16>(a, x_dtype, st); break;
    }
    if (e != cudaSuccess) return fail(err, e, "the sketch matmul kernel");
    return CCOMP_OK;
}

extern "C" ccomp_status ccomp_cuda_sketch_grad_input(const ccomp_cuda_sketch *s, const void *gy, int gy_dtype,
                                                     size_t n, float *gx, void *stream, ccomp_error *err)
{
    Args a;
    ccomp_status rc;
    if ((rc = check_sketch(s, a, err)) != CCOMP_OK) return rc;
    if ((rc = check_input(gy, gy_dtype, n, a.rows, "grad_y", err)) != CCOMP_OK) return rc;
    if (n > 0 && gx == NULL) return reject(err, "the output is required");
    if (n == 0) return CCOMP_OK;
    DeviceGuard guard;
    if ((rc = enter_device(s->codes, guard, err, "the sketch codes are")) != CCOMP_OK) return rc;
    a.gy = gy, a.out = gx, a.n = n;
    const cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e;
    switch (s->dtype) {
    case CCOMP_CUDA_SKETCH_F32: e = grad_input_td<CCOMP_CUDA_SKETCH_F32>(a, gy_dtype, st); break;
    case CCOMP_CUDA_SKETCH_F16: e = grad_input_td<CCOMP_CUDA_SKETCH_F16>(a, gy_dtype, st); break;
    default: e = grad_input_td<CCOMP_CUDA_SKETCH_BF16>(a, gy_dtype, st); break;
    }
    if (e != cudaSuccess) return fail(err, e, "the sketch grad_input kernel");
    return CCOMP_OK;
}

extern "C" size_t ccomp_cuda_sketch_grad_tables_workspace(size_t rows, size_t cols, size_t groups, int bits)
{
    if (rows == 0 || groups == 0 || cols % groups != 0 || bits < 2 || bits > 4) return 0;
    size_t seg, spg;
    gt_plan(rows, cols, groups, &seg, &spg);
    return spg > 1 ? rows * groups * spg * ((size_t)1 << bits) * sizeof(float) : 0;
}

extern "C" ccomp_status ccomp_cuda_sketch_grad_tables(const ccomp_cuda_sketch *s, const void *x, int x_dtype,
                                                      const void *gy, int gy_dtype, size_t n, float *gt, void *ws,
                                                      size_t ws_bytes, void *stream, ccomp_error *err)
{
    Args a;
    ccomp_status rc;
    if ((rc = check_sketch(s, a, err)) != CCOMP_OK) return rc;
    if ((rc = check_input(x, x_dtype, n, a.cols, "x", err)) != CCOMP_OK) return rc;
    if ((rc = check_input(gy, gy_dtype, n, a.rows, "grad_y", err)) != CCOMP_OK) return rc;
    if (gt == NULL) return reject(err, "the output is required");
    if (a.rows > (size_t)65535 * GT_ROWS)
        return reject(err, "grad_tables on the GPU takes up to %zu rows, got %zu", (size_t)65535 * GT_ROWS,
                      a.rows);
    gt_plan(a.rows, a.cols, a.groups, &a.seg, &a.spg);
    if (a.groups * a.spg > 0x7fffffffu) return reject(err, "too many groups (%zu)", a.groups);
    const size_t need = ccomp_cuda_sketch_grad_tables_workspace(a.rows, a.cols, a.groups, a.bits);
    if (need > 0 && (ws == NULL || ws_bytes < need))
        return reject(err, "the workspace holds %zu bytes, expected at least %zu", ws_bytes, need);
    DeviceGuard guard;
    if ((rc = enter_device(s->codes, guard, err, "the sketch codes are")) != CCOMP_OK) return rc;
    const cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e;
    if (n == 0) {
        e = cudaMemsetAsync(gt, 0, a.rows * a.groups * ((size_t)1 << a.bits) * sizeof(float), st);
        return e == cudaSuccess ? CCOMP_OK : fail(err, e, "cudaMemsetAsync");
    }
    a.x = x, a.gy = gy, a.out = gt, a.ws = ws, a.n = n;
    const bool xh = x_dtype == CCOMP_CUDA_SKETCH_F16, gh = gy_dtype == CCOMP_CUDA_SKETCH_F16;
    if (xh)
        e = gh ? grad_tables_typed<uint16_t, uint16_t>(a, st) : grad_tables_typed<uint16_t, float>(a, st);
    else
        e = gh ? grad_tables_typed<float, uint16_t>(a, st) : grad_tables_typed<float, float>(a, st);
    if (e != cudaSuccess) return fail(err, e, "the sketch grad_tables kernel");
    return CCOMP_OK;
}

extern "C" ccomp_status ccomp_cuda_sketch_dequantize(const ccomp_cuda_sketch *s, void *out, int out_dtype,
                                                     void *stream, ccomp_error *err)
{
    Args a;
    ccomp_status rc;
    if ((rc = check_sketch(s, a, err)) != CCOMP_OK) return rc;
    if (out_dtype != CCOMP_CUDA_SKETCH_F32 && out_dtype != CCOMP_CUDA_SKETCH_F16 &&
        out_dtype != CCOMP_CUDA_SKETCH_BF16)
        return reject(err, "the output must be float32, float16 or bfloat16 (types 0, 1, 2), got type %d",
                      out_dtype);
    if (out == NULL) return reject(err, "the output is required");
    DeviceGuard guard;
    if ((rc = enter_device(s->codes, guard, err, "the sketch codes are")) != CCOMP_OK) return rc;
    const cudaStream_t st = (cudaStream_t)stream;
    const size_t nb = (a.rows * a.cols + EW_T - 1) / EW_T;
    const dim3 grid((unsigned)(nb < (1u << 20) ? nb : (1u << 20)));
    cudaError_t e;
    switch (s->dtype) {
    case CCOMP_CUDA_SKETCH_F32: e = dequantize_td<CCOMP_CUDA_SKETCH_F32>(a, out, out_dtype, grid, st); break;
    case CCOMP_CUDA_SKETCH_F16: e = dequantize_td<CCOMP_CUDA_SKETCH_F16>(a, out, out_dtype, grid, st); break;
    default: e = dequantize_td<CCOMP_CUDA_SKETCH_BF16>(a, out, out_dtype, grid, st); break;
    }
    if (e != cudaSuccess) return fail(err, e, "the sketch dequantize kernel");
    return CCOMP_OK;
}

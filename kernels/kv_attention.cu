// ccomp.kv on the GPU: decode attention computed on the compressed cache (groupwise, q8_0, q4_0 and dense
// float32 / float16 segments) and the dense method's row of the CUDA method table.
//
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
#include "kv_table.cuh"
#include "launch.cuh"

namespace
{

#include "kv_common.cuh"

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
// Blocks per SM the launch bound asks for: 12 for dense rows (at most 40 registers, as ptxas chose alone),
// 8 for quantized rows (32 of 64 warps, at most 64 registers).  Left to pick its own target, ptxas took 56
// registers for those (9 blocks) and spilled around the calls of 64-bit divisions.
template <int KIND> constexpr int scores_min_blocks()
{
    return KIND == K_DENSE_F32 || KIND == K_DENSE_F16 ? 12 : 8;
}

template <int KIND, int BITS, int RB>
__global__ void __launch_bounds__(SCORE_T, (scores_min_blocks<KIND>())) scores_kernel(Attn a)
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

// Dense float32 / float16 data: checked for attention; nothing to quantize or dequantize.
ccomp_status check_dense(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    return d->S * d->T > 0 ? check_x(d, err) : CCOMP_OK;
}

} // namespace

extern const ccomp_kv_cuda_method ccomp_kv_cuda_dense = {check_dense, NULL, NULL, NULL, false};

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
    if ((rc = enter_device(q, guard, err)) != CCOMP_OK) return rc;
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


// GPU path of ccomp.tokens: per query row, the k most similar candidates by cosine similarity,
// S[i, j] = float32(<k_i, k_j> / (max(|k_i|, 1e-12) max(|k_j|, 1e-12))) computed in float64,
// ties to the lower token index.  csrc/tokens/similarity.c is the specification; ccomp_cuda.h
// documents the entry points.  Results equal the CPU core's bit for bit.
//
// Stages (one stream, no host synchronisation until the optional final check):
//  1. prep_norms: per token, the float64 inverse norm (sum of squares in the CPU's order) and
//     a 64-bit fingerprint of its bits; prep_half: the keys normalized to fp16 (zero padded to a
//     multiple of KC channels).  rep_tokens / col_ranks (only when the candidate lists hold no
//     repeated token): a token's representative (lowest index with bit-identical key) and every
//     candidate's rank inside its group of bit-identical keys.
//  2. screen_threshold: thread blocks own BM query rows x a slice of the candidates, loop over
//     candidate tiles of BN staged in shared memory and multiply with fp16 tensor cores (fp32
//     accumulation); per row a running top-k of the screened values is kept in shared memory.
//     threshold_rows merges the slices: t = the k-th best screened value, lo = t - 2 delta.
//  3. screen_collect: the same tiles again; every candidate with screen >= lo (and a group rank
//     below k + exclude_self) is appended to a bounded per-row list (CAP entries, overflow counted).
//  4. recheck_rows: per row, every listed candidate in float64 exactly as the CPU (8 partial sums,
//     lane l taking the elements d = l mod 8, combined pairwise; no FMA contraction), then ordered by
//     (value desc, token asc).  Rows whose list overflowed are queued for fallback_rows, which
//     computes the exact value of every candidate of the row and selects the top k.
// The N x N similarities are never stored: the largest buffers are the fp16 keys (B N D) and the
// lists (rows x CAP).
//
// Why this equals the CPU: |screen - S| <= delta for every pair (fp16 rounding of the normalized
// keys, tensor-core fp32 accumulation, the float32 rounding of S; bound in screen_delta).  Let v_k be
// the exact k-th best value of a row.  At most k - 1 candidates have S > v_k, so at most k - 1
// screens exceed v_k + delta and t <= v_k + delta; every member of the exact top k has
// screen >= v_k - delta >= t - 2 delta = lo, so it is listed.  A candidate whose group of
// bit-identical keys holds k + exclude_self members before it (by token index) is never in the
// top k (they have the same exact value and lower indices), so dropping it changes nothing.
// Ordering a superset of the top k by the exact values and the token index gives the top k.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "launch.cuh"
#include "ptx.cuh"

namespace
{

constexpr unsigned FULL = 0xffffffffu;
constexpr int BM = 64;           // query rows of a screening block
constexpr int BN = 64;           // candidates of a screening tile
constexpr int KC = 32;           // channels per staged chunk (fp16)
constexpr int LDS = KC + 8;      // shared row pitch in halves: 80 bytes, conflict-free fragment loads
constexpr int SCREEN_T = 128;    // 4 warps, 2 x 2, each 32 rows x 32 candidates
constexpr int KMAX = CCOMP_CUDA_TOKENS_MAX_K;
constexpr int MAX_SPLITS = 8;    // candidate slices of the threshold pass
constexpr int PREP_T = 128;      // one thread per token: prep_norms, rep_tokens, col_ranks (one per candidate)
constexpr int WARP_ROWS_T = 256; // one warp per token or row: prep_half, threshold_rows
constexpr int RECHECK_T = 256;   // 8 warps, one row each
constexpr int FALLBACK_T = 256;  // 32 groups of 8 lanes
constexpr int FALLBACK_BLOCKS = 264;
constexpr int CAP_MAX = 2 * KMAX + 128;

static_assert(KMAX == 64, "the running top-k keeps two slots per lane");
static_assert(BM * (BN + 1) * 4 <= 2 * (BM + BN) * LDS * 2, "the score tile fits in the staging buffers");

struct Keys {
    const void *p;
    int dtype;          // CCOMP_CUDA_TOKENS_F32 / _F64 / _F16
    long long sb, sn;   // element strides between sub-images and tokens; channels contiguous
    int N, D, Dp;       // Dp: D rounded up to KC
};

__device__ __forceinline__ double key_at(const Keys &K, int b, int t, int d)
{
    const long long i = (long long)b * K.sb + (long long)t * K.sn + d;
    if (K.dtype == CCOMP_CUDA_TOKENS_F32) return (double)__ldg((const float *)K.p + i);
    if (K.dtype == CCOMP_CUDA_TOKENS_F64) return __ldg((const double *)K.p + i);
    return (double)__half2float(__ushort_as_half(__ldg((const unsigned short *)K.p + i)));
}

__device__ __forceinline__ unsigned long long key_bits(const Keys &K, int b, int t, int d)
{
    const long long i = (long long)b * K.sb + (long long)t * K.sn + d;
    if (K.dtype == CCOMP_CUDA_TOKENS_F32) return __ldg((const unsigned *)K.p + i);
    if (K.dtype == CCOMP_CUDA_TOKENS_F64) return __ldg((const unsigned long long *)K.p + i);
    return __ldg((const unsigned short *)K.p + i);
}

// The sub-image of flat position pos: off[b] <= pos < off[b + 1] (off has B + 1 entries).
__device__ __forceinline__ int find_b(const int *off, int B, int pos)
{
    int lo = 0, hi = B - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (__ldg(off + mid) <= pos) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// ------------------------------------------------------------------ stage 1

// One thread per token: inverse norm in the CPU's order (csrc/tokens/similarity.c inv_norm), fingerprint, first
// non-finite element.
__global__ void __launch_bounds__(PREP_T)
    prep_norms(Keys K, int B, double *inv, unsigned long long *hash, unsigned long long *bad)
{
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (long long)B * K.N) return;
    const int b = (int)(g / K.N), t = (int)(g % K.N);
    // the CPU's order: partial sum d mod 4 over the whole groups of 4 channels, the rest into sum 0, then
    // (s0 + s1) + (s2 + s3)
    double p[4] = {0.0, 0.0, 0.0, 0.0}, s;
    unsigned long long h = 0xcbf29ce484222325ull;
    bool finite = true;
    const int D4 = K.D & ~3;
    for (int d = 0; d < K.D; d++) {
        const double v = key_at(K, b, t, d);
        if (finite && !isfinite(v)) {
            finite = false;
            atomicMin(bad, (unsigned long long)(g * K.D + d));
        }
        p[d < D4 ? (d & 3) : 0] = __dadd_rn(p[d < D4 ? (d & 3) : 0], __dmul_rn(v, v));
        h = (h ^ key_bits(K, b, t, d)) * 0x100000001b3ull;
    }
    s = __dsqrt_rn(__dadd_rn(__dadd_rn(p[0], p[1]), __dadd_rn(p[2], p[3])));
    inv[g] = __ddiv_rn(1.0, s > 1e-12 ? s : 1e-12);
    hash[g] = h ^ (h >> 29);
}

// One warp per token: the normalized key in fp16, zero padded to Dp.
__global__ void __launch_bounds__(WARP_ROWS_T) prep_half(Keys K, int B, const double *inv, __half *kh)
{
    const long long g = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (g >= (long long)B * K.N) return;
    const int b = (int)(g / K.N), t = (int)(g % K.N);
    const double iv = inv[g];
    __half2 *row = reinterpret_cast<__half2 *>(kh + g * K.Dp);
    for (int d = 2 * lane; d < K.Dp; d += 64) {
        const float x0 = d < K.D ? __double2float_rn(__dmul_rn(key_at(K, b, t, d), iv)) : 0.0f;
        const float x1 = d + 1 < K.D ? __double2float_rn(__dmul_rn(key_at(K, b, t, d + 1), iv)) : 0.0f;
        row[d >> 1] = __halves2half2(__float2half_rn(x0), __float2half_rn(x1));
    }
}

__device__ bool same_key(const Keys &K, int b, int s, int t)
{
    for (int d = 0; d < K.D; d++)
        if (key_bits(K, b, s, d) != key_bits(K, b, t, d)) return false;
    return true;
}

// rep[b N + t] = the lowest token of sub-image b whose key has the same bits as token t.
__global__ void __launch_bounds__(PREP_T) rep_tokens(Keys K, int B, const unsigned long long *hash, int *rep)
{
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (long long)B * K.N) return;
    const int b = (int)(g / K.N), t = (int)(g % K.N);
    const unsigned long long *hb = hash + (long long)b * K.N, h = hb[t];
    int r = t;
    for (int s = 0; s < t; s++)
        if (hb[s] == h && same_key(K, b, s, t)) {
            r = s;
            break;
        }
    rep[g] = r;
}

// rank[q] = min(limit, candidates of q's group listed before it by token index); positions hold
// distinct tokens (the caller checks), so the token index alone orders a group.
__global__ void __launch_bounds__(PREP_T) col_ranks(const int *cols, const int *cols_off, int B, int N, int C,
                                                    const int *rep, int limit, int *rank)
{
    const int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= C) return;
    const int b = find_b(cols_off, B, q), c0 = cols_off[b], c1 = cols_off[b + 1];
    const int *rb = rep + (long long)b * N;
    const int tok = cols[q], g = rb[tok];
    int n = 0;
    for (int p = c0; p < c1 && n < limit; p++) {
        const int u = __ldg(cols + p);
        n += (u < tok && __ldg(rb + u) == g);
    }
    rank[q] = n;
}

// ------------------------------------------------------------------ stages 2 and 3: fp16 tensor-core tiles

// cp_async16, cp_async_commit, cp_async_wait and mma16816: kernels/ptx.cuh

struct Stage {
    __half a[2][BM][LDS];
    __half b[2][BN][LDS];
};

// acc[mi][ni][e] += the fp16 screen of query rows rtok[] x candidates ctok[] of one sub-image
// (kh: its normalized keys).  Element e of tile (mi, ni) of warp (wm, wn) is row
// wm 32 + mi 16 + g + 8 (e >= 2), candidate wn 32 + ni 8 + 2 tg + (e & 1).  Ends with a barrier.
__device__ void screen_tile(const __half *kh, int Dp, const int *rtok, const int *ctok, Stage &S, float acc[2][4][4])
{
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    const int wm = warp >> 1, wn = warp & 1, nk = Dp / KC;
    auto load = [&](int kc, int st) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int v = tid + i * SCREEN_T, r = v >> 2, part = v & 3;
            cp_async16(&S.a[st][r][part * 8], kh + (size_t)rtok[r] * Dp + kc * KC + part * 8);
            cp_async16(&S.b[st][r][part * 8], kh + (size_t)ctok[r] * Dp + kc * KC + part * 8);
        }
        cp_async_commit();
    };
    load(0, 0);
    for (int kc = 0; kc < nk; kc++) {
        const int st = kc & 1;
        if (kc + 1 < nk) {
            load(kc + 1, st ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < KC; ks += 16) {
            uint32_t a[2][4], bq[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                const int r = wm * 32 + mi * 16 + g;
                a[mi][0] = *reinterpret_cast<const uint32_t *>(&S.a[st][r][ks + 2 * tg]);
                a[mi][1] = *reinterpret_cast<const uint32_t *>(&S.a[st][r + 8][ks + 2 * tg]);
                a[mi][2] = *reinterpret_cast<const uint32_t *>(&S.a[st][r][ks + 8 + 2 * tg]);
                a[mi][3] = *reinterpret_cast<const uint32_t *>(&S.a[st][r + 8][ks + 8 + 2 * tg]);
            }
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int c = wn * 32 + ni * 8 + g;
                bq[ni][0] = *reinterpret_cast<const uint32_t *>(&S.b[st][c][ks + 2 * tg]);
                bq[ni][1] = *reinterpret_cast<const uint32_t *>(&S.b[st][c][ks + 8 + 2 * tg]);
            }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++) mma16816(acc[mi][ni], a[mi], bq[ni]);
        }
        __syncthreads(); // the next load overwrites this stage
    }
}

struct Screen {
    const __half *kh;
    int N, Dp, B;
    const int *rows, *rows_off, *cols, *cols_off; // flat token lists and their B + 1 offsets
    const int *task_b, *task_r0;                  // row tiles: sub-image and first row (position in rows[b])
    int exclude_self, k, splits;
    float *topv;                                  // [rows][splits][k]: pass 1's per-slice top k
    const float *lo;                              // [rows]: the screening threshold
    const int *rank;                              // [C] group ranks or NULL
    int limit;                                    // drop candidates with rank >= limit
    int *cnt, *list, cap;                         // [rows], [rows][cap]
};

// Pass 1: block (tile, slice) keeps per row the k largest screened values of its candidate slice.
__global__ void __launch_bounds__(SCREEN_T) screen_threshold(Screen P)
{
    __shared__ __align__(16) unsigned char stage_raw[sizeof(Stage)];
    __shared__ float lst[BM][KMAX];
    __shared__ float thr[BM];
    __shared__ int rtok[BM], ctok[BN];
    Stage &S = *reinterpret_cast<Stage *>(stage_raw);
    float(*St)[BN + 1] = reinterpret_cast<float(*)[BN + 1]>(stage_raw);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    const int wm = warp >> 1, wn = warp & 1;
    const int b = P.task_b[blockIdx.x], r0 = P.task_r0[blockIdx.x];
    const int rbase = P.rows_off[b], nr = min(BM, P.rows_off[b + 1] - rbase - r0);
    const int c0 = P.cols_off[b], nc = P.cols_off[b + 1] - c0;
    const int ntiles = (nc + BN - 1) / BN, per = (ntiles + P.splits - 1) / P.splits;
    const int j0 = blockIdx.y * per, j1 = min(ntiles, j0 + per);
    const __half *kh = P.kh + (size_t)b * P.N * P.Dp;
    if (tid < BM) {
        rtok[tid] = P.rows[rbase + r0 + min(tid, nr - 1)];
        thr[tid] = -INFINITY;
    }
    for (int i = tid; i < BM * KMAX; i += SCREEN_T) lst[i / KMAX][i % KMAX] = (i % KMAX) < P.k ? -INFINITY : INFINITY;
    for (int j = j0; j < j1; j++) {
        __syncthreads(); // the previous tile's scores and candidates are consumed
        if (tid < BN) ctok[tid] = P.cols[c0 + min(j * BN + tid, nc - 1)];
        __syncthreads();
        float acc[2][4][4] = {};
        screen_tile(kh, P.Dp, rtok, ctok, S, acc);
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = wm * 32 + mi * 16 + g + (e >= 2 ? 8 : 0), c = wn * 32 + ni * 8 + 2 * tg + (e & 1);
                    const bool ok = j * BN + c < nc && !(P.exclude_self && ctok[c] == rtok[r]);
                    St[r][c] = ok ? acc[mi][ni][e] : -INFINITY;
                }
        __syncthreads();
        for (int r = warp * (BM / 4); r < (warp + 1) * (BM / 4) && r < nr; r++) {
            float t = thr[r];
            const float v0 = St[r][lane], v1 = St[r][lane + 32];
            unsigned m0 = __ballot_sync(FULL, v0 > t), m1 = __ballot_sync(FULL, v1 > t);
            if ((m0 | m1) == 0) continue;
            float l0 = lst[r][lane], l1 = lst[r][lane + 32];
            while (m0 | m1) {
                float v;
                if (m0) {
                    const int src = __ffs(m0) - 1;
                    m0 &= m0 - 1;
                    v = __shfl_sync(FULL, v0, src);
                } else {
                    const int src = __ffs(m1) - 1;
                    m1 &= m1 - 1;
                    v = __shfl_sync(FULL, v1, src);
                }
                if (!(v > t)) continue;
                // replace one slot holding the current minimum t, then take the new minimum
                const unsigned e0 = __ballot_sync(FULL, l0 == t), e1 = __ballot_sync(FULL, l1 == t);
                if (e0) {
                    if (lane == __ffs(e0) - 1) l0 = v;
                } else if (e1) {
                    if (lane == __ffs(e1) - 1) l1 = v;
                }
                float mn = fminf(l0, l1);
#pragma unroll
                for (int o = 16; o; o >>= 1) mn = fminf(mn, __shfl_xor_sync(FULL, mn, o));
                t = mn;
            }
            lst[r][lane] = l0;
            lst[r][lane + 32] = l1;
            if (lane == 0) thr[r] = t;
        }
    }
    __syncthreads();
    for (int i = tid; i < nr * P.k; i += SCREEN_T) {
        const int r = i / P.k, s = i % P.k;
        P.topv[((size_t)(rbase + r0 + r) * P.splits + blockIdx.y) * P.k + s] = lst[r][s];
    }
}

// One warp per row: t = the k-th largest of the slices' values (at most 64), lo = t - 2 delta rounded down.
__global__ void __launch_bounds__(WARP_ROWS_T)
    threshold_rows(const float *topv, int R, int splits, int k, double two_delta, float *lo)
{
    const int row = (int)(((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (row >= R) return;
    const int n = splits * k; // <= 64, two per lane
    const float *v = topv + (size_t)row * n;
    float mine[2];
#pragma unroll
    for (int i = 0; i < 2; i++) mine[i] = lane + 32 * i < n ? v[lane + 32 * i] : -INFINITY;
    int gt[2] = {0, 0}, ge[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 2; i++)
        for (int src = 0; src < 32; src++) {
            const float y = __shfl_sync(FULL, mine[i], src);
            if (src + 32 * i >= n) continue;
#pragma unroll
            for (int m = 0; m < 2; m++) {
                gt[m] += y > mine[m];
                ge[m] += y >= mine[m];
            }
        }
    float t = -INFINITY;
    bool have = false;
#pragma unroll
    for (int m = 0; m < 2; m++)
        if (lane + 32 * m < n && gt[m] < k && ge[m] >= k) {
            t = mine[m];
            have = true;
        }
    const unsigned who = __ballot_sync(FULL, have);
    t = __shfl_sync(FULL, t, who ? __ffs(who) - 1 : 0);
    if (lane == 0) lo[row] = __double2float_rd((double)t - two_delta);
}

// Pass 2: block (tile, candidate tile) appends every candidate with screen >= lo to its row's list.
__global__ void __launch_bounds__(SCREEN_T) screen_collect(Screen P)
{
    __shared__ __align__(16) Stage S;
    __shared__ float los[BM];
    __shared__ int rtok[BM], ctok[BN];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    const int wm = warp >> 1, wn = warp & 1;
    const int b = P.task_b[blockIdx.x], r0 = P.task_r0[blockIdx.x], j = blockIdx.y;
    const int rbase = P.rows_off[b], nr = min(BM, P.rows_off[b + 1] - rbase - r0);
    const int c0 = P.cols_off[b], nc = P.cols_off[b + 1] - c0;
    if (j * BN >= nc) return; // uniform over the block
    if (tid < BM) {
        rtok[tid] = P.rows[rbase + r0 + min(tid, nr - 1)];
        los[tid] = P.lo[rbase + r0 + min(tid, nr - 1)];
    }
    if (tid < BN) ctok[tid] = P.cols[c0 + min(j * BN + tid, nc - 1)];
    __syncthreads();
    float acc[2][4][4] = {};
    screen_tile(P.kh + (size_t)b * P.N * P.Dp, P.Dp, rtok, ctok, S, acc);
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = wm * 32 + mi * 16 + g + (e >= 2 ? 8 : 0), c = wn * 32 + ni * 8 + 2 * tg + (e & 1);
                const int q = j * BN + c;
                if (r >= nr || q >= nc || !(acc[mi][ni][e] >= los[r])) continue;
                if (P.exclude_self && ctok[c] == rtok[r]) continue;
                if (P.rank != NULL && P.rank[c0 + q] >= P.limit) continue;
                const int row = rbase + r0 + r, p = atomicAdd(P.cnt + row, 1);
                if (p < P.cap) P.list[(size_t)row * P.cap + p] = q;
            }
}

// ------------------------------------------------------------------ stage 4: exact values

// <k_a, k_c> in float64 by the 8 lanes of an aligned group: lane l sums the elements d = l mod 8 in
// increasing d, the group combines ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)); all 8 lanes get the sum.
// Every lane of the warp must call it (shuffles); inactive groups pass active = false.
__device__ __forceinline__ double dot64_group(const Keys &K, int b, int a, int c, bool active)
{
    const int l = threadIdx.x & 7;
    double s = 0.0;
    if (active)
        for (int d = l; d < K.D; d += 8) s = __dadd_rn(s, __dmul_rn(key_at(K, b, a, d), key_at(K, b, c, d)));
    s = __dadd_rn(s, __shfl_xor_sync(FULL, s, 1));
    s = __dadd_rn(s, __shfl_xor_sync(FULL, s, 2));
    s = __dadd_rn(s, __shfl_xor_sync(FULL, s, 4));
    return s;
}

__device__ __forceinline__ float exact_sim(const Keys &K, const double *inv, int b, int me, int tok, bool active)
{
    const double dot = dot64_group(K, b, me, tok, active);
    if (!active) return 0.0f;
    const double *ib = inv + (long long)b * K.N;
    return __double2float_rn(__dmul_rn(__dmul_rn(dot, ib[me]), ib[tok]));
}

// (v, tok, pos) before (w, tuk, qos) in the output order
__device__ __forceinline__ bool before(float v, int tok, int pos, float w, int tuk, int qos)
{
    if (v != w) return v > w;
    if (tok != tuk) return tok < tuk;
    return pos < qos;
}

struct Finish {
    Keys K;
    int B, R, k;
    const double *inv;
    const int *rows, *rows_off, *cols, *cols_off;
    const int *cnt, *list;
    int cap, exclude_self;
    const int *rank;
    int limit;
    int *ov_rows, *ov_n;
    float *scratch;                // [FALLBACK_BLOCKS][max_cols]
    int max_cols;
    long long *out_idx;
    float *out_val;
};

// One warp per row: exact values of the listed candidates, ranked, the best k written.  The launch bound
// names the 3 blocks per SM (80 registers) ptxas picked on its own: given as a bound, it keeps the hoisted
// addresses of the float64 dot products in registers instead of spilling some of them.
__global__ void __launch_bounds__(RECHECK_T, 3) recheck_rows(Finish F)
{
    __shared__ float sv[RECHECK_T / 32][CAP_MAX];
    __shared__ int stok[RECHECK_T / 32][CAP_MAX], spos[RECHECK_T / 32][CAP_MAX];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * (RECHECK_T / 32) + warp;
    if (row >= F.R) return; // whole warps
    const int n = F.cnt[row];
    if (n > F.cap) {
        if (lane == 0) F.ov_rows[atomicAdd(F.ov_n, 1)] = row;
        return;
    }
    const int b = find_b(F.rows_off, F.B, row), me = F.rows[row], c0 = F.cols_off[b];
    const int *lst = F.list + (size_t)row * F.cap;
    for (int i0 = 0; i0 < n; i0 += 4) {
        const int i = i0 + (lane >> 3);
        const bool active = i < n;
        const int q = active ? lst[i] : 0, tok = active ? F.cols[c0 + q] : 0;
        const float v = exact_sim(F.K, F.inv, b, me, tok, active);
        if (active && (lane & 7) == 0) {
            sv[warp][i] = v;
            stok[warp][i] = tok;
            spos[warp][i] = q;
        }
    }
    __syncwarp();
    long long *oi = F.out_idx + (size_t)row * F.k;
    float *ov = F.out_val + (size_t)row * F.k;
    for (int i = lane; i < n; i += 32) {
        const float v = sv[warp][i];
        const int tok = stok[warp][i], pos = spos[warp][i];
        int rk = 0;
        for (int j = 0; j < n; j++) rk += before(sv[warp][j], stok[warp][j], spos[warp][j], v, tok, pos);
        if (rk < F.k) {
            oi[rk] = tok;
            ov[rk] = v;
        }
    }
    for (int t = n + lane; t < F.k; t += 32) {
        oi[t] = -1;
        ov[t] = -INFINITY;
    }
}

// Rows whose list overflowed: the exact value of every candidate, then k rounds of block arg-max.
__global__ void __launch_bounds__(FALLBACK_T) fallback_rows(Finish F)
{
    __shared__ float rv[FALLBACK_T / 32];
    __shared__ int rt[FALLBACK_T / 32], rp[FALLBACK_T / 32];
    __shared__ float last_v;
    __shared__ int last_t, last_p;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, grp = tid >> 3;
    float *sc = F.scratch + (size_t)blockIdx.x * F.max_cols;
    const int nov = *F.ov_n;
    for (int ri = blockIdx.x; ri < nov; ri += gridDim.x) {
        const int row = F.ov_rows[ri], b = find_b(F.rows_off, F.B, row), me = F.rows[row];
        const int c0 = F.cols_off[b], nc = F.cols_off[b + 1] - c0;
        auto valid = [&](int q) {
            return !(F.exclude_self && F.cols[c0 + q] == me) && !(F.rank != NULL && F.rank[c0 + q] >= F.limit);
        };
        for (int q0 = 0; q0 < nc; q0 += FALLBACK_T / 8) {
            const int q = q0 + grp;
            const bool active = q < nc && valid(q);
            const float v = exact_sim(F.K, F.inv, b, me, active ? F.cols[c0 + q] : 0, active);
            if (active && (tid & 7) == 0) sc[q] = v;
        }
        if (tid == 0) {
            last_v = INFINITY;
            last_t = -1;
            last_p = -1;
        }
        __syncthreads();
        for (int t = 0; t < F.k; t++) {
            const float lv = last_v;
            const int lt = last_t, lp = last_p;
            float bv = -INFINITY;
            int bt = -1, bp = -1;
            for (int q = tid; q < nc; q += FALLBACK_T) {
                if (!valid(q)) continue;
                const float v = sc[q];
                const int tok = F.cols[c0 + q];
                if ((lp < 0 || before(lv, lt, lp, v, tok, q)) && (bp < 0 || before(v, tok, q, bv, bt, bp))) {
                    bv = v;
                    bt = tok;
                    bp = q;
                }
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) {
                const float ov = __shfl_xor_sync(FULL, bv, o);
                const int ot = __shfl_xor_sync(FULL, bt, o), op = __shfl_xor_sync(FULL, bp, o);
                if (op >= 0 && (bp < 0 || before(ov, ot, op, bv, bt, bp))) {
                    bv = ov;
                    bt = ot;
                    bp = op;
                }
            }
            if (lane == 0) {
                rv[warp] = bv;
                rt[warp] = bt;
                rp[warp] = bp;
            }
            __syncthreads();
            if (tid == 0) {
                for (int w = 1; w < FALLBACK_T / 32; w++)
                    if (rp[w] >= 0 && (bp < 0 || before(rv[w], rt[w], rp[w], bv, bt, bp))) {
                        bv = rv[w];
                        bt = rt[w];
                        bp = rp[w];
                    }
                F.out_idx[(size_t)row * F.k + t] = bp >= 0 ? bt : -1;
                F.out_val[(size_t)row * F.k + t] = bp >= 0 ? bv : -INFINITY;
                if (bp >= 0) {
                    last_v = bv;
                    last_t = bt;
                    last_p = bp;
                }
            }
            __syncthreads();
        }
    }
}

// ------------------------------------------------------------------ host side

#include "cuda_host.cuh"

unsigned blocks_of(size_t n, size_t per)
{
    return (unsigned)((n + per - 1) / per);
}

size_t align256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

int cap_of(size_t k)
{
    return (int)(2 * k + 128);
}

int max_splits(size_t k) // slices x k <= 64 values per row
{
    int s = (int)(64 / k);
    return s < 1 ? 1 : (s > MAX_SPLITS ? MAX_SPLITS : s);
}

// Workspace regions, in this order, each 256-byte aligned.
struct Layout {
    size_t inv, hash, rep, kh, rows, rows_off, cols, cols_off, task_b, task_r0, rank, topv, lo, cnt, list, ov_rows,
        ov_n, bad, scratch, total;
};

Layout layout(size_t B, size_t N, size_t D, size_t R, size_t C, size_t max_cols, size_t k, size_t tiles)
{
    Layout L;
    const size_t Dp = (D + KC - 1) / KC * KC;
    size_t o = 0;
    auto take = [&](size_t bytes) {
        const size_t at = o;
        o += align256(bytes ? bytes : 1);
        return at;
    };
    L.inv = take(B * N * 8);
    L.hash = take(B * N * 8);
    L.rep = take(B * N * 4);
    L.kh = take(B * N * Dp * 2);
    L.rows = take(R * 4);
    L.rows_off = take((B + 1) * 4);
    L.cols = take(C * 4);
    L.cols_off = take((B + 1) * 4);
    L.task_b = take(tiles * 4);
    L.task_r0 = take(tiles * 4);
    L.rank = take(C * 4);
    L.topv = take(R * (size_t)max_splits(k) * k * 4);
    L.lo = take(R * 4);
    L.cnt = take(R * 4);
    L.list = take(R * (size_t)cap_of(k) * 4);
    L.ov_rows = take(R * 4);
    L.ov_n = take(4);
    L.bad = take(8);
    L.scratch = take((size_t)FALLBACK_BLOCKS * max_cols * 4);
    L.total = o;
    return L;
}

size_t row_tiles(size_t B, const size_t *rows_off)
{
    size_t t = 0;
    for (size_t b = 0; b < B; b++) t += (rows_off[b + 1] - rows_off[b] + BM - 1) / BM;
    return t;
}

// Host-side argument checks shared by the workspace size and the run.
ccomp_status check_args(int dtype, size_t B, size_t N, size_t D, const int64_t *rows, const size_t *rows_off,
                        const int64_t *cols, const size_t *cols_off, size_t k, size_t *max_cols, ccomp_error *err)
{
    if (dtype != CCOMP_CUDA_TOKENS_F32 && dtype != CCOMP_CUDA_TOKENS_F64 && dtype != CCOMP_CUDA_TOKENS_F16)
        return reject(err, "keys must be float32, float64 or float16 (type code %d)", dtype);
    if (B < 1 || N < 1 || D < 1) return reject(err, "need at least one sub-image of one token of one channel");
    if (N > (size_t)INT32_MAX / 2 || D > (size_t)INT32_MAX / 2 || B > (size_t)INT32_MAX / 2)
        return reject(err, "too many tokens or channels for the GPU path (B %zu, N %zu, D %zu)", B, N, D);
    if (k < 1 || k > KMAX) return reject(err, "the GPU path takes k in [1, %d], got %zu", KMAX, k);
    if (rows_off == NULL || cols_off == NULL || (rows_off[B] && rows == NULL) || (cols_off[B] && cols == NULL))
        return reject(err, "row and candidate lists are required");
    if (rows_off[0] != 0 || cols_off[0] != 0) return reject(err, "row and column offsets must start at 0");
    *max_cols = 0;
    for (size_t b = 0; b < B; b++) {
        if (rows_off[b + 1] < rows_off[b] || cols_off[b + 1] < cols_off[b])
            return reject(err, "offsets of sub-image %zu decrease", b);
        const size_t nc = cols_off[b + 1] - cols_off[b];
        if (nc > *max_cols) *max_cols = nc;
    }
    if (rows_off[B] > (size_t)INT32_MAX / 2 || cols_off[B] > (size_t)INT32_MAX / 2)
        return reject(err, "too many rows or candidates for one GPU call");
    if (*max_cols > (size_t)65535 * BN) return reject(err, "too many candidates per sub-image (%zu)", *max_cols);
    for (size_t t = 0; t < rows_off[B]; t++)
        if (rows[t] < 0 || (size_t)rows[t] >= N)
            return reject(err, "row token %lld is outside [0, %zu)", (long long)rows[t], N);
    for (size_t t = 0; t < cols_off[B]; t++)
        if (cols[t] < 0 || (size_t)cols[t] >= N)
            return reject(err, "candidate token %lld is outside [0, %zu)", (long long)cols[t], N);
    return CCOMP_OK;
}

// |fp16 tensor-core screen - S| for normalized keys of D channels: fp16 rounding of both operands
// (2^-11 relative each, plus 2^-25 absolute below fp16's normal range: sqrt(D) 2^-24 in all), an fp32
// accumulation bounded generously by (D + 16) 2^-21 (4x the sequential bound, for truncating adders),
// S's own float32 rounding (2^-24), and a quarter more.
double screen_delta(size_t D)
{
    return 1.25 * (ldexp(1.0, -10) + (sqrt((double)D) + 1.0) * ldexp(1.0, -24) + ((double)D + 16.0) * ldexp(1.0, -21));
}

} // namespace

extern "C" size_t ccomp_cuda_tokens_workspace(size_t B, size_t N, size_t D, const size_t *rows_off,
                                              const size_t *cols_off, size_t k)
{
    if (B == 0 || rows_off == NULL || cols_off == NULL || k < 1 || k > KMAX) return 0;
    size_t max_cols = 0;
    for (size_t b = 0; b < B; b++) {
        if (cols_off[b + 1] < cols_off[b] || rows_off[b + 1] < rows_off[b]) return 0;
        if (cols_off[b + 1] - cols_off[b] > max_cols) max_cols = cols_off[b + 1] - cols_off[b];
    }
    return layout(B, N, D, rows_off[B], cols_off[B], max_cols, k, row_tiles(B, rows_off)).total;
}

extern "C" double ccomp_cuda_tokens_delta(size_t D)
{
    return screen_delta(D);
}

extern "C" ccomp_status ccomp_cuda_tokens_topk(const void *keys, int dtype, size_t B, size_t N, size_t D,
                                               size_t stride_b, size_t stride_n, const int64_t *rows,
                                               const size_t *rows_off, const int64_t *cols, const size_t *cols_off,
                                               int exclude_self, size_t k, int cols_distinct, int64_t *out_idx,
                                               float *out_val, void *ws, size_t ws_bytes, void *stream,
                                               int64_t *first_bad, int64_t *stats, ccomp_error *err)
{
    size_t max_cols = 0;
    ccomp_status rc = check_args(dtype, B, N, D, rows, rows_off, cols, cols_off, k, &max_cols, err);
    if (rc != CCOMP_OK) return rc;
    if (keys == NULL) return reject(err, "the keys pointer is null");
    const size_t R = rows_off[B], C = cols_off[B];
    if (R > 0 && (out_idx == NULL || out_val == NULL)) return reject(err, "the outputs are required");
    if (stride_n < D || (B > 1 && stride_b < (N - 1) * stride_n + D))
        return reject(err, "key strides (%zu, %zu) overlap for %zu tokens of %zu channels", stride_b,
                      stride_n, N, D);
    const size_t item = dtype == CCOMP_CUDA_TOKENS_F64 ? 8 : dtype == CCOMP_CUDA_TOKENS_F32 ? 4 : 2;
    if (reinterpret_cast<uintptr_t>(keys) % item != 0) return reject(err, "the keys are misaligned");
    const size_t tiles = row_tiles(B, rows_off);
    const Layout L = layout(B, N, D, R, C, max_cols, k, tiles);
    if (ws == NULL || ws_bytes < L.total)
        return reject(err, "the workspace holds %zu bytes, expected at least %zu", ws_bytes, L.total);
    if (reinterpret_cast<uintptr_t>(ws) % 256 != 0) return reject(err, "the workspace is misaligned");
    if (first_bad) *first_bad = -1;
    if (stats) stats[0] = stats[1] = stats[2] = 0;
    if (R == 0) return CCOMP_OK;
    DeviceGuard guard;
    if ((rc = enter_device(keys, guard, err, "the keys are")) != CCOMP_OK) return rc;
    cudaStream_t st = (cudaStream_t)stream;
    unsigned char *w = (unsigned char *)ws;
    const int Dp = (int)((D + KC - 1) / KC * KC);

    // small host tables: int32 token lists, offsets and the row tiles
    const size_t n_host = R + C + 2 * (B + 1) + 2 * tiles;
    int *h = (int *)malloc(n_host * sizeof(int));
    if (h == NULL) return out_of_memory(err, "cannot allocate %zu host ints", n_host);
    int *h_rows = h, *h_cols = h_rows + R, *h_ro = h_cols + C, *h_co = h_ro + B + 1, *h_tb = h_co + B + 1,
        *h_tr = h_tb + tiles;
    for (size_t i = 0; i < R; i++) h_rows[i] = (int)rows[i];
    for (size_t i = 0; i < C; i++) h_cols[i] = (int)cols[i];
    for (size_t b = 0; b <= B; b++) {
        h_ro[b] = (int)rows_off[b];
        h_co[b] = (int)cols_off[b];
    }
    size_t nt = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t r0 = 0; r0 < rows_off[b + 1] - rows_off[b]; r0 += BM) {
            h_tb[nt] = (int)b;
            h_tr[nt++] = (int)r0;
        }
    cudaError_t e = cudaSuccess;
    const struct {
        size_t off;
        const int *src;
        size_t n;
    } ups[] = {{L.rows, h_rows, R},       {L.cols, h_cols, C},       {L.rows_off, h_ro, B + 1},
               {L.cols_off, h_co, B + 1}, {L.task_b, h_tb, tiles},   {L.task_r0, h_tr, tiles}};
    for (size_t i = 0; i < sizeof ups / sizeof ups[0] && e == cudaSuccess; i++)
        if (ups[i].n) e = cudaMemcpyAsync(w + ups[i].off, ups[i].src, ups[i].n * 4, cudaMemcpyHostToDevice, st);
    free(h); // a copy from pageable memory has read the host buffer when cudaMemcpyAsync returns
    if (e != cudaSuccess) return fail(err, e, "copying the token lists to the GPU");
    if ((e = cudaMemsetAsync(w + L.cnt, 0, R * 4, st)) != cudaSuccess ||
        (e = cudaMemsetAsync(w + L.ov_n, 0, 4, st)) != cudaSuccess ||
        (e = cudaMemsetAsync(w + L.bad, 0xff, 8, st)) != cudaSuccess)
        return fail(err, e, "cudaMemsetAsync");

    Keys K;
    K.p = keys;
    K.dtype = dtype;
    K.sb = (long long)stride_b;
    K.sn = (long long)stride_n;
    K.N = (int)N;
    K.D = (int)D;
    K.Dp = Dp;
    double *inv = (double *)(w + L.inv);
    unsigned long long *hash = (unsigned long long *)(w + L.hash), *bad = (unsigned long long *)(w + L.bad);
    __half *kh = (__half *)(w + L.kh);
    const int *d_rows = (const int *)(w + L.rows), *d_cols = (const int *)(w + L.cols);
    const int *d_ro = (const int *)(w + L.rows_off), *d_co = (const int *)(w + L.cols_off);
    const size_t BN_tokens = B * N;

    CCOMP_LAUNCH(blocks_of(BN_tokens, PREP_T), PREP_T, 0, st, prep_norms)(K, (int)B, inv, hash, bad);
    if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the norm kernel");
    CCOMP_LAUNCH(blocks_of(BN_tokens * 32, WARP_ROWS_T), WARP_ROWS_T, 0, st, prep_half)(K, (int)B, inv, kh);
    if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the fp16 key kernel");

    const int limit = (int)k + (exclude_self ? 1 : 0);
    const int *rank = NULL;
    if (cols_distinct && C > 0) {
        int *rep = (int *)(w + L.rep), *rk = (int *)(w + L.rank);
        CCOMP_LAUNCH(blocks_of(BN_tokens, PREP_T), PREP_T, 0, st, rep_tokens)(K, (int)B, hash, rep);
        if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the duplicate-key kernel");
        CCOMP_LAUNCH(blocks_of(C, PREP_T), PREP_T, 0, st, col_ranks)(d_cols, d_co, (int)B, (int)N, (int)C, rep,
                                                                     limit, rk);
        if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the group-rank kernel");
        rank = rk;
    }

    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaGetLastError();
    const int col_tiles = (int)((max_cols + BN - 1) / BN);
    int splits = 1;
    while (splits < max_splits(k) && splits < col_tiles && (size_t)splits * tiles < (size_t)sms * 4) splits *= 2;
    if (splits > max_splits(k)) splits = max_splits(k);

    Screen P;
    P.kh = kh;
    P.N = (int)N;
    P.Dp = Dp;
    P.B = (int)B;
    P.rows = d_rows;
    P.rows_off = d_ro;
    P.cols = d_cols;
    P.cols_off = d_co;
    P.task_b = (const int *)(w + L.task_b);
    P.task_r0 = (const int *)(w + L.task_r0);
    P.exclude_self = exclude_self ? 1 : 0;
    P.k = (int)k;
    P.splits = splits;
    P.topv = (float *)(w + L.topv);
    P.lo = (const float *)(w + L.lo);
    P.rank = rank;
    P.limit = limit;
    P.cnt = (int *)(w + L.cnt);
    P.list = (int *)(w + L.list);
    P.cap = cap_of(k);

    if (max_cols > 0) {
        CCOMP_LAUNCH(dim3((unsigned)tiles, (unsigned)splits), SCREEN_T, 0, st, screen_threshold)(P);
        if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the screening (threshold) kernel");
        CCOMP_LAUNCH(blocks_of(R * 32, WARP_ROWS_T), WARP_ROWS_T, 0, st, threshold_rows)(P.topv, (int)R, splits, (int)k,
                                                                                        2.0 * screen_delta(D),
                                                                                        (float *)(w + L.lo));
        if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the threshold kernel");
        CCOMP_LAUNCH(dim3((unsigned)tiles, (unsigned)col_tiles), SCREEN_T, 0, st, screen_collect)(P);
        if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the screening (collect) kernel");
    }

    Finish F;
    F.K = K;
    F.B = (int)B;
    F.R = (int)R;
    F.k = (int)k;
    F.inv = inv;
    F.rows = d_rows;
    F.rows_off = d_ro;
    F.cols = d_cols;
    F.cols_off = d_co;
    F.cnt = P.cnt;
    F.list = P.list;
    F.cap = P.cap;
    F.exclude_self = P.exclude_self;
    F.rank = rank;
    F.limit = limit;
    F.ov_rows = (int *)(w + L.ov_rows);
    F.ov_n = (int *)(w + L.ov_n);
    F.scratch = (float *)(w + L.scratch);
    F.max_cols = (int)max_cols;
    F.out_idx = (long long *)out_idx;
    F.out_val = out_val;
    CCOMP_LAUNCH(blocks_of(R, RECHECK_T / 32), RECHECK_T, 0, st, recheck_rows)(F);
    if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the recheck kernel");
    // one block per overflowed row at most (their count is on the device; R bounds it)
    const unsigned fallback_blocks = R < (size_t)FALLBACK_BLOCKS ? (unsigned)(R > 0 ? R : 1) : FALLBACK_BLOCKS;
    CCOMP_LAUNCH(fallback_blocks, FALLBACK_T, 0, st, fallback_rows)(F);
    if ((e = cudaGetLastError()) != cudaSuccess) return fail(err, e, "the fallback kernel");

    if (first_bad != NULL || stats != NULL) {
        unsigned long long hb = 0;
        int ov = 0;
        if ((e = cudaMemcpyAsync(&hb, bad, 8, cudaMemcpyDeviceToHost, st)) != cudaSuccess ||
            (e = cudaMemcpyAsync(&ov, w + L.ov_n, 4, cudaMemcpyDeviceToHost, st)) != cudaSuccess ||
            (e = cudaStreamSynchronize(st)) != cudaSuccess)
            return fail(err, e, "reading the result flags");
        if (first_bad != NULL) *first_bad = hb == ~0ull ? -1 : (int64_t)hb;
        if (stats != NULL) {
            stats[0] = ov;
            stats[1] = (int64_t)L.total;
            stats[2] = splits;
        }
    }
    return CCOMP_OK;
}

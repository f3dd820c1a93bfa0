// GPU path of ccomp.ac's CDF quantization (the specification is csrc/ac/quantize.c).
//
// Bit-exactness with the CPU comes from doing exactly the CPU's floating-point
// operations in exactly its order:
//  - the normalisation S and the running sums c[i] are sequential left-to-right
//    sums (never a parallel reduction);
//  - every operation is an explicit round-to-nearest intrinsic (__fadd_rn,
//    __dmul_rn, ...), which nvcc never contracts into an FMA;
//  - float -> uint32 conversions truncate (__float2uint_rz, like C's cast);
//  - exp() of logits is ccomp_dexp (ccomp/ac_exp.h), the same bits as the CPU;
//  - argmax keeps the first index on ties.
// Integer sums (the nacrith frequencies) and max/any reductions are order-free
// and are reduced across lanes.
//
// Layout: one warp per row.  The warp walks the row in chunks of CK = 256
// elements (the CPU's checkpoint spacing): each lane loads 8 elements of a chunk
// (coalesced), turns them into weights in parallel (exp for logits) and stores
// them in the warp's shared-memory buffer; the chain of additions then runs over
// the 256 weights in order, every lane reading the same 16 bytes at a time
// (a broadcast: 4 floats or 2 doubles per load) and adding them to its own copy
// of the running sum (all lanes hold the same sum, so nothing is broadcast
// back).  The next chunk's loads are issued before the chain of the current one.
// With thousands of rows there are thousands of warps in flight, which hides the
// latency of the dependent chain.
#include <cuda_runtime.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CCOMP_DEXP_CUDA
#include "ccomp/ac_exp.h"
#include "ccomp_cuda.h"
#include "launch.cuh"

namespace {

constexpr unsigned CKN = 256;      // checkpoint spacing: CK of csrc/ac/quantize.h
constexpr unsigned PER_LANE = CKN / 32;
constexpr int WARPS = 8;           // warps (rows or queries) per block
constexpr unsigned FULL = 0xffffffffu;
constexpr int RULE_CONSTRICTION = 0;
constexpr int RULE_NACRITH = 1;

// ----------------------------------------------------- exact arithmetic in F

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ uint32_t to_u32(float x) { return __float2uint_rz(x); }
__device__ __forceinline__ uint32_t to_u32(double x) { return __double2uint_rz(x); }

template <class F> struct Lim;
template <> struct Lim<float> {
    __device__ static float from_u64(uint64_t v) { return __ull2float_rn(v); }
    __device__ static float from_double(double v) { return __double2float_rn(v); }
    __device__ static bool normal_finite(float s) { return s >= FLT_MIN && s <= FLT_MAX; }
};
template <> struct Lim<double> {
    __device__ static double from_u64(uint64_t v) { return __ull2double_rn(v); }
    __device__ static double from_double(double v) { return v; }
    __device__ static bool normal_finite(double s) { return s >= DBL_MIN && s <= DBL_MAX; }
};

// The type the rule's running sums are kept in: the row's float type for the
// constriction rule, float64 for nacrith.
template <class In, int RULE> struct AccOf { typedef In type; };
template <class In> struct AccOf<In, RULE_NACRITH> { typedef double type; };

// One input element -> the weight the rule sees (logits: exp((x - max) / tau)
// in float64, rounded to Acc).  Exactly logits_to_weights() of quantize.c.
template <class In, class Acc, bool LOGITS>
__device__ __forceinline__ Acc weight(In x, double mx, double tau)
{
    if (LOGITS) {
        double e = ccomp_dexp(__ddiv_rn(__dadd_rn((double)x, -mx), tau));
        return Lim<Acc>::from_double(e);
    }
    return (Acc)x; // identity, or float -> double (exact)
}

// acc + buf[0] + buf[1] + ... + buf[CKN - 1], left to right; buf is 16-byte aligned
// shared memory that every lane reads at the same address.
__device__ __forceinline__ float chain_chunk(const float *buf, float acc)
{
#pragma unroll 16
    for (unsigned e = 0; e < CKN; e += 4) {
        const float4 q = *reinterpret_cast<const float4 *>(buf + e);
        acc = __fadd_rn(acc, q.x);
        acc = __fadd_rn(acc, q.y);
        acc = __fadd_rn(acc, q.z);
        acc = __fadd_rn(acc, q.w);
    }
    return acc;
}

__device__ __forceinline__ double chain_chunk(const double *buf, double acc)
{
#pragma unroll 16
    for (unsigned e = 0; e < CKN; e += 2) {
        const double2 q = *reinterpret_cast<const double2 *>(buf + e);
        acc = __dadd_rn(acc, q.x);
        acc = __dadd_rn(acc, q.y);
    }
    return acc;
}

__device__ __forceinline__ uint64_t warp_sum_u64(uint64_t v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// ------------------------------------------------------------- arguments

struct Model {
    int rule, precision, logits;
    double tau;
    uint64_t total; // 2^P
    uint64_t freew; // 2^P - V
};

// Summary of a scanned row, kept on the device for decoding.
struct RowSum {
    double S;
    double scale; // constriction: free / S in the rule's float type (stored exactly); nacrith: q
    double mx;    // logits: the row maximum
    long long rem;
    unsigned long long argmax;
    int status; // 0: valid; 1: the CPU reference rejects the row
    int pad;
};

struct RowsArgs {
    const void *rows;
    size_t T, V, stride, nck;
    Model m;
    const int64_t *symbols; // lookup
    uint32_t *cum, *freq;   // lookup
    int *status;            // lookup: per row
    RowSum *sums;           // scan
    double *ck;             // scan, constriction: T x nck running sums at j * CKN
    unsigned long long *ick; // scan, nacrith: T x nck frequency sums before j * CKN
};

// ------------------------------------------------------- the row kernel
//
// SCAN = false: (cum, freq) of symbols[t] under row t.
// SCAN = true : the row summary and checkpoints, for decoding.
//
// Blocks per SM the launch bound asks for: 4 (32 of 64 warps, at most 64 registers), but 3 (24 warps,
// at most 80 registers) for logits summed in float64 (float64 rows, or the nacrith rule): the float64
// exp beside the float64 chunk of weights spilled to local memory at 64 registers.
template <class In, bool LOGITS, int RULE>
constexpr int rows_min_blocks()
{
    return LOGITS && sizeof(typename AccOf<In, RULE>::type) == 8 ? 3 : 4;
}

template <class In, bool LOGITS, int RULE, bool SCAN>
__global__ void __launch_bounds__(WARPS * 32, (rows_min_blocks<In, LOGITS, RULE>())) rows_kernel(RowsArgs a)
{
    typedef typename AccOf<In, RULE>::type Acc;
    __shared__ __align__(16) Acc sbuf[WARPS][CKN];
    const unsigned lane = threadIdx.x & 31u;
    const size_t t = (size_t)blockIdx.x * WARPS + threadIdx.x / 32u;
    if (t >= a.T) return; // whole warp
    const size_t V = a.V;
    const In *p = (const In *)a.rows + t * a.stride;
    const size_t sym = SCAN ? ~(size_t)0 : (size_t)a.symbols[t];
    double mx = 0.0;
    int bad = 0;

    // ---- pass 0 (logits): row maximum; NaN, +inf or all -inf reject the row
    if (LOGITS) {
        double m = -INFINITY;
        int b = 0;
#pragma unroll 4
        for (size_t i = lane; i < V; i += 32) {
            double x = (double)p[i];
            b |= (x != x) | (x == INFINITY);
            m = x > m ? x : m;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            double y = __shfl_xor_sync(FULL, m, o);
            m = y > m ? y : m;
        }
        bad = __any_sync(FULL, b) || m == -INFINITY;
        mx = m;
    }

    // ---- pass 1: the sequential sum (S, checkpoints, c[sym], c[V-1]); argmax
    Acc acc = Acc(0), cs = Acc(0), ps = Acc(0), clast = Acc(0);
    double best = -1.0;
    size_t bidx = V;
    if (!bad) {
        In raw[PER_LANE];
#pragma unroll
        for (unsigned j = 0; j < PER_LANE; j++) {
            size_t i = j * 32u + lane;
            raw[j] = i < V ? p[i] : In(0);
        }
        for (size_t base = 0; base < V; base += CKN) {
            Acc v[PER_LANE];
#pragma unroll
            for (unsigned j = 0; j < PER_LANE; j++) {
                size_t i = base + j * 32u + lane;
                v[j] = i < V ? weight<In, Acc, LOGITS>(raw[j], mx, a.m.tau) : Acc(0);
                bad |= !(v[j] >= Acc(0));
                if (RULE == RULE_NACRITH && i < V && (double)v[j] > best) {
                    best = (double)v[j];
                    bidx = i;
                }
            }
            const size_t next = base + CKN;
            if (next < V) { // prefetch the next chunk while the chain runs
#pragma unroll
                for (unsigned j = 0; j < PER_LANE; j++) {
                    size_t i = next + j * 32u + lane;
                    raw[j] = i < V ? p[i] : In(0);
                }
            }
            if (SCAN && RULE == RULE_CONSTRICTION && lane == 0) a.ck[t * a.nck + base / CKN] = (double)acc;
            // chunks holding the symbol or the last element record the running sum there
            const bool special = (V - 1u - base < CKN) || (!SCAN && RULE == RULE_CONSTRICTION && sym - base < CKN);
            Acc *buf = sbuf[threadIdx.x / 32u];
            __syncwarp(); // the previous chunk's chain has read buf
#pragma unroll
            for (unsigned j = 0; j < PER_LANE; j++) buf[j * 32u + lane] = v[j];
            __syncwarp();
            if (!special) {
                acc = chain_chunk(buf, acc);
            } else {
#pragma unroll 4
                for (unsigned e = 0; e < CKN; e++) {
                    const Acc x = buf[e];
                    const size_t i = base + e;
                    if (i == sym) {
                        cs = acc;
                        ps = x;
                    }
                    if (i == V - 1u) clast = acc;
                    acc = add_rn(acc, x); // zeros past the end leave acc unchanged
                }
            }
        }
        bad = __any_sync(FULL, bad);
    }

    // every lane holds the same acc, cs, ps, clast: finish the row in all lanes
    int status = bad;
    double scale_out = 0.0;
    long long rem = 0;
    if (RULE == RULE_CONSTRICTION) {
        const Acc S = acc;
        Acc scale = Acc(0);
        if (!status && !Lim<Acc>::normal_finite(S)) status = 1;
        if (!status) {
            scale = div_rn(Lim<Acc>::from_u64(a.m.freew), S);
            const Acc last = mul_rn(clast, scale);
            if ((uint64_t)to_u32(last) + (V - 1u) >= a.m.total) status = 1;
        }
        scale_out = (double)scale;
        if (!SCAN && lane == 0) {
            uint32_t lo = 0, hi = 0;
            if (!status) {
                lo = to_u32(mul_rn(cs, scale)) + (uint32_t)sym;
                hi = sym + 1u == V ? (uint32_t)a.m.total
                                   : to_u32(mul_rn(add_rn(cs, ps), scale)) + (uint32_t)(sym + 1u);
            }
            a.cum[t] = lo;
            a.freq[t] = hi - lo;
            a.status[t] = status;
        }
    } else {
        // argmax: the largest weight, the first index on ties
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            double ob = __shfl_xor_sync(FULL, best, o);
            size_t oi = __shfl_xor_sync(FULL, (unsigned long long)bidx, o);
            if (ob > best || (ob == best && oi < bidx)) {
                best = ob;
                bidx = oi;
            }
        }
        const double S = (double)acc;
        if (!status && !Lim<double>::normal_finite(S)) status = 1;
        uint32_t fs = 0;
        uint64_t below = 0;
        if (!status) {
            // ---- pass 2: integer frequencies f[i] = (u32)(p[i] * q) + 1, any order
            const double q = __ddiv_rn(__ull2double_rn(a.m.freew), S);
            scale_out = q;
            uint64_t total = 0, fmax = 0;
            for (size_t base = 0; base < V; base += CKN) {
                uint64_t chunk = 0;
#pragma unroll
                for (unsigned j = 0; j < PER_LANE; j++) {
                    const size_t i = base + j * 32u + lane;
                    if (i < V) {
                        const double x = (double)weight<In, Acc, LOGITS>(p[i], mx, a.m.tau);
                        const uint32_t f = to_u32(__dmul_rn(x, q)) + 1u;
                        chunk += f;
                        if (!SCAN) {
                            if (i < sym) below += f;
                            if (i == sym) fs = f;
                        }
                        if (i == bidx) fmax = f;
                    }
                }
                if (SCAN) {
                    const uint64_t c = warp_sum_u64(chunk);
                    if (lane == 0) a.ick[t * a.nck + base / CKN] = total;
                    total += c;
                } else {
                    total += chunk; // lane-local; reduced below
                }
            }
            if (!SCAN) {
                total = warp_sum_u64(total);
                below = warp_sum_u64(below);
                fs = (uint32_t)warp_sum_u64(fs); // one lane holds it
            }
            fmax = warp_sum_u64(fmax);
            rem = (long long)a.m.total - (long long)total;
            if ((long long)fmax + rem < 1) status = 1;
        }
        if (!SCAN && lane == 0) {
            uint32_t c = 0, f = 0;
            if (!status) {
                c = (uint32_t)(below + (bidx < sym ? (uint64_t)rem : 0u));
                f = (uint32_t)((long long)fs + (bidx == sym ? rem : 0));
            }
            a.cum[t] = c;
            a.freq[t] = f;
            a.status[t] = status;
        }
    }
    if (SCAN && lane == 0) {
        RowSum r;
        r.S = (double)acc;
        r.scale = scale_out;
        r.mx = mx;
        r.rem = rem;
        r.argmax = bidx;
        r.status = status;
        r.pad = 0;
        a.sums[t] = r;
    }
}

// ------------------------------------------------------ the find kernel

struct FindArgs {
    const void *rows;
    size_t T, V, stride, nck;
    Model m;
    const RowSum *sums;
    const double *ck;
    const unsigned long long *ick;
    const int64_t *qt;      // query rows
    const uint32_t *qtarget; // query targets (< 2^P)
    size_t n;
    uint32_t *symbol, *cum, *freq;
    int *status;
};

// One warp per query: binary search over the checkpoints, the chunk's weights
// computed by all lanes, then lane 0 walks the chunk in order (ccomp_ac_row_find).
template <class In, bool LOGITS, int RULE>
__global__ void __launch_bounds__(WARPS * 32) find_kernel(FindArgs a)
{
    typedef typename AccOf<In, RULE>::type Acc;
    __shared__ Acc wbuf[WARPS][CKN];
    const unsigned lane = threadIdx.x & 31u, w = threadIdx.x / 32u;
    const size_t qi = (size_t)blockIdx.x * WARPS + w;
    if (qi >= a.n) return;
    const size_t t = (size_t)a.qt[qi], V = a.V;
    const uint32_t target = a.qtarget[qi];
    const RowSum r = a.sums[t];
    if (r.status) {
        if (lane == 0) a.status[qi] = 1;
        return;
    }
    const In *p = (const In *)a.rows + t * a.stride;
    const double *ck = a.ck + t * a.nck;
    const unsigned long long *ick = a.ick + t * a.nck;
    const Acc scale = (Acc)r.scale;
    const uint64_t rem = (uint64_t)r.rem;

    // the last checkpoint whose cdf is <= target (uniform across the warp)
    size_t lo = 0, hi = a.nck;
    while (hi - lo > 1) {
        const size_t mid = (lo + hi) / 2;
        uint32_t c;
        if (RULE == RULE_CONSTRICTION)
            c = to_u32(mul_rn((Acc)ck[mid], scale)) + (uint32_t)(mid * CKN);
        else
            c = (uint32_t)(ick[mid] + (r.argmax < mid * CKN ? rem : 0u));
        if (c <= target)
            lo = mid;
        else
            hi = mid;
    }
    const size_t base = lo * CKN;
#pragma unroll
    for (unsigned j = 0; j < PER_LANE; j++) {
        const size_t i = base + j * 32u + lane;
        wbuf[w][j * 32u + lane] = i < V ? weight<In, Acc, LOGITS>(p[i], r.mx, a.m.tau) : Acc(0);
    }
    __syncwarp();
    if (lane != 0) return;

    // walk: the symbol is the last s with cdf[s] <= target
    size_t s = base;
    uint32_t out_c = 0, out_f = 0;
    if (RULE == RULE_CONSTRICTION) {
        Acc c = (Acc)ck[lo];
        for (;;) {
            const Acc x = s - base < CKN ? wbuf[w][s - base] : weight<In, Acc, LOGITS>(p[s], r.mx, a.m.tau);
            const uint32_t lo_c = to_u32(mul_rn(c, scale)) + (uint32_t)s;
            const Acc c1 = add_rn(c, x);
            const uint32_t hi_c = s + 1u == V ? (uint32_t)a.m.total : to_u32(mul_rn(c1, scale)) + (uint32_t)(s + 1u);
            if (s + 1u == V || (uint64_t)lo_c + (uint32_t)(hi_c - lo_c) > target) {
                out_c = lo_c;
                out_f = hi_c - lo_c;
                break;
            }
            c = c1;
            s++;
        }
    } else {
        const double q = r.scale;
        uint64_t c = ick[lo];
        for (;;) {
            const double x =
                (double)(s - base < CKN ? wbuf[w][s - base] : weight<In, Acc, LOGITS>(p[s], r.mx, a.m.tau));
            const uint32_t f = to_u32(__dmul_rn(x, q)) + 1u;
            const uint32_t cum = (uint32_t)(c + (r.argmax < s ? rem : 0u));
            const uint32_t fr = (uint32_t)((long long)f + (r.argmax == s ? r.rem : 0));
            if (s + 1u == V || (uint64_t)cum + fr > target) {
                out_c = cum;
                out_f = fr;
                break;
            }
            c += f;
            s++;
        }
    }
    a.symbol[qi] = (uint32_t)s;
    a.cum[qi] = out_c;
    a.freq[qi] = out_f;
    a.status[qi] = 0;
}

// ------------------------------------------------------------- dispatch

template <bool SCAN>
void launch_rows(const RowsArgs &a, int dtype, unsigned blocks)
{
    const dim3 grid(blocks), block(WARPS * 32);
#define CCOMP_AC_ROWS(In, L, R) CCOMP_LAUNCH(grid, block, 0, 0, rows_kernel<In, L, R, SCAN>)(a)
    const int r = a.m.rule, l = a.m.logits;
    if (dtype == 0) {
        if (r == RULE_CONSTRICTION) {
            if (l) CCOMP_AC_ROWS(float, true, RULE_CONSTRICTION); else CCOMP_AC_ROWS(float, false, RULE_CONSTRICTION);
        } else {
            if (l) CCOMP_AC_ROWS(float, true, RULE_NACRITH); else CCOMP_AC_ROWS(float, false, RULE_NACRITH);
        }
    } else {
        if (r == RULE_CONSTRICTION) {
            if (l) CCOMP_AC_ROWS(double, true, RULE_CONSTRICTION); else CCOMP_AC_ROWS(double, false, RULE_CONSTRICTION);
        } else {
            if (l) CCOMP_AC_ROWS(double, true, RULE_NACRITH); else CCOMP_AC_ROWS(double, false, RULE_NACRITH);
        }
    }
#undef CCOMP_AC_ROWS
}

void launch_find(const FindArgs &a, int dtype, unsigned blocks)
{
    const dim3 grid(blocks), block(WARPS * 32);
#define CCOMP_AC_FIND(In, L, R) CCOMP_LAUNCH(grid, block, 0, 0, find_kernel<In, L, R>)(a)
    const int r = a.m.rule, l = a.m.logits;
    if (dtype == 0) {
        if (r == RULE_CONSTRICTION) {
            if (l) CCOMP_AC_FIND(float, true, RULE_CONSTRICTION); else CCOMP_AC_FIND(float, false, RULE_CONSTRICTION);
        } else {
            if (l) CCOMP_AC_FIND(float, true, RULE_NACRITH); else CCOMP_AC_FIND(float, false, RULE_NACRITH);
        }
    } else {
        if (r == RULE_CONSTRICTION) {
            if (l) CCOMP_AC_FIND(double, true, RULE_CONSTRICTION); else CCOMP_AC_FIND(double, false, RULE_CONSTRICTION);
        } else {
            if (l) CCOMP_AC_FIND(double, true, RULE_NACRITH); else CCOMP_AC_FIND(double, false, RULE_NACRITH);
        }
    }
#undef CCOMP_AC_FIND
}

// ------------------------------------------------------------ host side

#include "cuda_host.cuh"

// Checks the model (the caller validates with the CPU's messages first; this
// only keeps bad values from reaching a kernel).
ccomp_status check_model(int dtype, size_t V, size_t stride, int rule, int precision, double temperature,
                         ccomp_error *err)
{
    if (dtype != 0 && dtype != 1) return reject(err, "rows must be float32 or float64");
    if (rule != RULE_CONSTRICTION && rule != RULE_NACRITH) return reject(err, "unknown quantization rule");
    if (precision < 12 || precision > 28) return reject(err, "precision must be between 12 and 28 bits");
    if (V < 2 || V >= ((size_t)1 << precision) - 1u)
        return reject(err, "the vocabulary size does not fit the precision");
    if (stride < V) return reject(err, "the row stride is below the vocabulary size");
    if (!(temperature > 0.0) || !(temperature <= DBL_MAX)) return reject(err, "temperature must be positive");
    return CCOMP_OK;
}

Model make_model(size_t V, int rule, int precision, int logits, double temperature)
{
    Model m;
    m.rule = rule;
    m.precision = precision;
    m.logits = logits != 0;
    m.tau = logits ? temperature : 1.0;
    m.total = (uint64_t)1 << precision;
    m.freew = m.total - V;
    return m;
}

// Makes the rows' device current (restored by DeviceGuard's destructor) and gives its number.
ccomp_status enter_rows_device(const void *rows, DeviceGuard &g, int *device, ccomp_error *err)
{
    cudaError_t rc = cudaGetDevice(&g.old);
    if (rc != cudaSuccess) {
        g.old = -1;
        return fail(err, rc, "cudaGetDevice (no usable CUDA device?)");
    }
    cudaPointerAttributes attr;
    rc = cudaPointerGetAttributes(&attr, rows);
    if (rc != cudaSuccess) return fail(err, rc, "cudaPointerGetAttributes");
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        return reject(err, "rows are not in GPU memory (expected a CUDA tensor or array)");
    *device = attr.device;
    if (attr.device != g.old) {
        rc = cudaSetDevice(attr.device);
        if (rc != cudaSuccess) return fail(err, rc, "cudaSetDevice");
    }
    return CCOMP_OK;
}

unsigned blocks_for(size_t n)
{
    return (unsigned)((n + WARPS - 1) / WARPS);
}

} // namespace

struct ccomp_cuda_ac_scan {
    const void *rows;
    int dtype, device;
    size_t T, V, stride, nck;
    Model m;
    RowSum *sums;
    double *ck;
    unsigned long long *ick;
};

extern "C" ccomp_status ccomp_cuda_ac_lookup(const void *rows, int dtype, size_t T, size_t V, size_t row_stride,
                                             int rule, int precision, int logits, double temperature,
                                             const int64_t *symbols, uint32_t *cum, uint32_t *freq, int64_t *first_bad,
                                             ccomp_error *err)
{
    *first_bad = -1;
    ccomp_status rc = check_model(dtype, V, row_stride, rule, precision, temperature, err);
    if (rc != CCOMP_OK) return rc;
    if (T == 0) return CCOMP_OK;
    if (T > ((size_t)1 << 40)) return reject(err, "too many rows");
    for (size_t t = 0; t < T; t++)
        if (symbols[t] < 0 || (uint64_t)symbols[t] >= V) return reject(err, "symbol out of range");
    DeviceGuard guard;
    int device;
    if ((rc = enter_rows_device(rows, guard, &device, err)) != CCOMP_OK) return rc;

    // one allocation: symbols (int64), cum, freq, status (32-bit each)
    char *buf = NULL;
    cudaError_t e = cudaMalloc(&buf, T * (sizeof(int64_t) + 3 * sizeof(uint32_t)));
    if (e != cudaSuccess) return fail(err, e, "cudaMalloc");
    int64_t *d_sym = (int64_t *)buf;
    uint32_t *d_cum = (uint32_t *)(buf + T * sizeof(int64_t));
    uint32_t *d_freq = d_cum + T;
    int *d_status = (int *)(d_freq + T);
    int *h_status = (int *)malloc(T * sizeof(int));
    const char *where = "cudaMemcpy (symbols)";
    if (h_status == NULL) {
        cudaFree(buf);
        return out_of_memory(err, "out of memory");
    }
    e = cudaMemcpy(d_sym, symbols, T * sizeof(int64_t), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        RowsArgs a;
        memset(&a, 0, sizeof a);
        a.rows = rows;
        a.T = T;
        a.V = V;
        a.stride = row_stride;
        a.nck = (V + CKN - 1) / CKN;
        a.m = make_model(V, rule, precision, logits, temperature);
        a.symbols = d_sym;
        a.cum = d_cum;
        a.freq = d_freq;
        a.status = d_status;
        launch_rows<false>(a, dtype, blocks_for(T));
        where = "the lookup kernel";
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        where = "cudaMemcpy (results)";
        e = cudaMemcpy(cum, d_cum, T * sizeof(uint32_t), cudaMemcpyDeviceToHost);
    }
    if (e == cudaSuccess) e = cudaMemcpy(freq, d_freq, T * sizeof(uint32_t), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(h_status, d_status, T * sizeof(int), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) {
        for (size_t t = 0; t < T; t++)
            if (h_status[t]) {
                *first_bad = (int64_t)t;
                break;
            }
    }
    free(h_status);
    cudaFree(buf);
    if (e != cudaSuccess) return fail(err, e, where);
    return CCOMP_OK;
}

extern "C" ccomp_status ccomp_cuda_ac_scan_rows(const void *rows, int dtype, size_t T, size_t V, size_t row_stride,
                                                int rule, int precision, int logits, double temperature,
                                                ccomp_cuda_ac_scan **out, int64_t *first_bad, ccomp_error *err)
{
    *out = NULL;
    *first_bad = -1;
    ccomp_status rc = check_model(dtype, V, row_stride, rule, precision, temperature, err);
    if (rc != CCOMP_OK) return rc;
    if (T == 0 || T > ((size_t)1 << 40)) return reject(err, "the number of rows must be positive");
    DeviceGuard guard;
    int device;
    if ((rc = enter_rows_device(rows, guard, &device, err)) != CCOMP_OK) return rc;
    ccomp_cuda_ac_scan *h = (ccomp_cuda_ac_scan *)calloc(1, sizeof *h);
    if (h == NULL) return out_of_memory(err, "out of memory");
    h->rows = rows;
    h->dtype = dtype;
    h->device = device;
    h->T = T;
    h->V = V;
    h->stride = row_stride;
    h->nck = (V + CKN - 1) / CKN;
    h->m = make_model(V, rule, precision, logits, temperature);
    const char *where = "cudaMalloc";
    cudaError_t e = cudaMalloc(&h->sums, T * sizeof(RowSum));
    if (e == cudaSuccess) {
        if (rule == RULE_CONSTRICTION)
            e = cudaMalloc(&h->ck, T * h->nck * sizeof(double));
        else
            e = cudaMalloc(&h->ick, T * h->nck * sizeof(unsigned long long));
    }
    if (e == cudaSuccess) {
        RowsArgs a;
        memset(&a, 0, sizeof a);
        a.rows = rows;
        a.T = T;
        a.V = V;
        a.stride = row_stride;
        a.nck = h->nck;
        a.m = h->m;
        a.sums = h->sums;
        a.ck = h->ck;
        a.ick = h->ick;
        launch_rows<true>(a, dtype, blocks_for(T));
        where = "the scan kernel";
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        // the first rejected row: status is at a fixed offset of each summary
        int *h_status = (int *)malloc(T * sizeof(int));
        if (h_status == NULL) {
            ccomp_cuda_ac_scan_free(h);
            return out_of_memory(err, "out of memory");
        }
        where = "cudaMemcpy2D (row status)";
        e = cudaMemcpy2D(h_status, sizeof(int), (const char *)h->sums + offsetof(RowSum, status), sizeof(RowSum),
                         sizeof(int), T, cudaMemcpyDeviceToHost);
        if (e == cudaSuccess)
            for (size_t t = 0; t < T; t++)
                if (h_status[t]) {
                    *first_bad = (int64_t)t;
                    break;
                }
        free(h_status);
    }
    if (e != cudaSuccess) {
        ccomp_cuda_ac_scan_free(h);
        return fail(err, e, where);
    }
    *out = h;
    return CCOMP_OK;
}

extern "C" ccomp_status ccomp_cuda_ac_scan_find(const ccomp_cuda_ac_scan *h, const int64_t *rows_t,
                                                const uint32_t *targets, size_t n, uint32_t *symbol, uint32_t *cum,
                                                uint32_t *freq, ccomp_error *err)
{
    if (n == 0) return CCOMP_OK;
    for (size_t i = 0; i < n; i++) {
        if (rows_t[i] < 0 || (uint64_t)rows_t[i] >= h->T) return reject(err, "row index out of range");
        if ((uint64_t)targets[i] >= h->m.total) return reject(err, "target out of range");
    }
    DeviceGuard guard;
    cudaError_t e = cudaGetDevice(&guard.old);
    if (e != cudaSuccess) {
        guard.old = -1;
        return fail(err, e, "cudaGetDevice");
    }
    if (guard.old != h->device && (e = cudaSetDevice(h->device)) != cudaSuccess)
        return fail(err, e, "cudaSetDevice");
    // one allocation: query rows (int64), targets, symbol, cum, freq, status (32-bit each)
    char *buf = NULL;
    const char *where = "cudaMalloc";
    e = cudaMalloc(&buf, n * (sizeof(int64_t) + 5 * sizeof(uint32_t)));
    if (e != cudaSuccess) return fail(err, e, where);
    int64_t *d_t = (int64_t *)buf;
    uint32_t *d_target = (uint32_t *)(buf + n * sizeof(int64_t));
    uint32_t *d_sym = d_target + n, *d_cum = d_sym + n, *d_freq = d_cum + n;
    int *d_status = (int *)(d_freq + n);
    int *h_status = (int *)malloc(n * sizeof(int));
    if (h_status == NULL) {
        cudaFree(buf);
        return out_of_memory(err, "out of memory");
    }
    where = "cudaMemcpy (queries)";
    e = cudaMemcpy(d_t, rows_t, n * sizeof(int64_t), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(d_target, targets, n * sizeof(uint32_t), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemset(d_status, 0, n * sizeof(int));
    if (e == cudaSuccess) {
        FindArgs a;
        memset(&a, 0, sizeof a);
        a.rows = h->rows;
        a.T = h->T;
        a.V = h->V;
        a.stride = h->stride;
        a.nck = h->nck;
        a.m = h->m;
        a.sums = h->sums;
        a.ck = h->ck;
        a.ick = h->ick;
        a.qt = d_t;
        a.qtarget = d_target;
        a.n = n;
        a.symbol = d_sym;
        a.cum = d_cum;
        a.freq = d_freq;
        a.status = d_status;
        launch_find(a, h->dtype, blocks_for(n));
        where = "the find kernel";
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        where = "cudaMemcpy (results)";
        e = cudaMemcpy(symbol, d_sym, n * sizeof(uint32_t), cudaMemcpyDeviceToHost);
    }
    if (e == cudaSuccess) e = cudaMemcpy(cum, d_cum, n * sizeof(uint32_t), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(freq, d_freq, n * sizeof(uint32_t), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(h_status, d_status, n * sizeof(int), cudaMemcpyDeviceToHost);
    int rejected = 0;
    if (e == cudaSuccess)
        for (size_t i = 0; i < n; i++) rejected |= h_status[i];
    free(h_status);
    cudaFree(buf);
    if (e != cudaSuccess) return fail(err, e, where);
    if (rejected) return reject(err, "a queried row was rejected by the scan");
    return CCOMP_OK;
}

extern "C" void ccomp_cuda_ac_scan_free(ccomp_cuda_ac_scan *h)
{
    if (h == NULL) return;
    int old = -1;
    if (cudaGetDevice(&old) == cudaSuccess && old != h->device) cudaSetDevice(h->device);
    cudaFree(h->sums);
    cudaFree(h->ck);
    cudaFree(h->ick);
    cudaGetLastError(); // a context torn down at exit is not an error here
    if (old >= 0 && old != h->device) cudaSetDevice(old);
    free(h);
}

extern "C" size_t ccomp_cuda_ac_scan_rows_count(const ccomp_cuda_ac_scan *h)
{
    return h->T;
}

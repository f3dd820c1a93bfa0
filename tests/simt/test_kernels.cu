// The SIMT emulator on small test kernels: correct kernels give the reference answer, identical under
// every schedule; broken kernels are caught and reported as launch failures. Built three ways by
// `make simt` (plain, AddressSanitizer, race build): the out-of-bounds cases are asserted in the ASan
// build and the race cases in the race build, where those checkers exist.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "launch.cuh"
#include "ptx.cuh"
#include "simt_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#else
#define ASAN_BUILD 0
#endif
#if defined(CCOMP_SIMT_RACECHECK)
#define RACE_BUILD 1
#else
#define RACE_BUILD 0
#endif

#define FULL 0xffffffffu

// ---------------------------------------------------------------- correct kernels

// out[block] = sum of in[block * 256 + i]: a shared-memory tree with a barrier per level.
__global__ void block_sum(const int *in, int *out)
{
    __shared__ int s[256];
    const int t = threadIdx.x;
    s[t] = in[blockIdx.x * 256 + t];
    __syncthreads();
    for (int h = 128; h > 0; h >>= 1) {
        if (t < h) s[t] += s[t + h];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// Per warp: butterfly sum (xor), tree sum (down), inclusive scan (up), broadcast of lane 5 (idx), and
// half-warp sums (width 16).
__global__ void warp_ops(const float *in, float *out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x & 31;
    const float v = in[i];
    float x = v, d = v, u = v;
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL, x, o);
    for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(FULL, d, o);
    for (int o = 1; o < 32; o <<= 1) {
        const float n = __shfl_up_sync(FULL, u, o);
        if (lane >= o) u += n;
    }
    float h = v;
    for (int o = 8; o > 0; o >>= 1) h += __shfl_xor_sync(FULL, h, o, 16);
    out[i * 5 + 0] = x;
    out[i * 5 + 1] = __shfl_sync(FULL, d, 0);
    out[i * 5 + 2] = u;
    out[i * 5 + 3] = __shfl_sync(FULL, v, 5);
    out[i * 5 + 4] = h;
}

__global__ void votes(const int *in, unsigned *out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int p = in[i];
    const unsigned b = __ballot_sync(FULL, p > 0);
    const int any = __any_sync(FULL, p > 5), all = __all_sync(FULL, p >= 0);
    const unsigned orr = __reduce_or_sync(FULL, (unsigned)p);
    const int cnt = __syncthreads_count(p > 3);
    __syncwarp();
    out[i * 5 + 0] = b;
    out[i * 5 + 1] = (unsigned)any;
    out[i * 5 + 2] = (unsigned)all;
    out[i * 5 + 3] = orr;
    out[i * 5 + 4] = (unsigned)cnt;
}

// A histogram and a minimum with global atomics, a per-block count with a shared atomic.
__global__ void atomics(const int *in, int n, int *hist, unsigned *minv, int *blocks_seen)
{
    __shared__ int local;
    if (threadIdx.x == 0) local = 0;
    __syncthreads();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicAdd(hist + (in[i] & 15), 1);
        atomicMin(minv, (unsigned)in[i]);
        atomicAdd(&local, 1);
    }
    __syncthreads();
    if (threadIdx.x == 0 && local > 0) atomicCAS(blocks_seen + blockIdx.x, 0, local);
}

// Reverses each block's slice through dynamic shared memory.
__global__ void reverse_dynamic(const double *in, double *out)
{
    CCOMP_DYNAMIC_SHARED(double, s);
    const int t = threadIdx.x, n = blockDim.x;
    s[t] = in[blockIdx.x * n + t];
    __syncthreads();
    out[blockIdx.x * n + t] = s[n - 1 - t];
}

// One warp: D (16x8) = A (16x16, row-major f16) x B (16x8, stored as its 8x16 transpose) + C with
// the fragments loaded in the PTX ISA layout, as tokens.cu does.
__global__ void mma_tile(const __half *A, const __half *Bt, const float *C, float *D)
{
    const int lane = threadIdx.x, g = lane >> 2, tg = lane & 3;
    uint32_t a[4], b[2];
    a[0] = *reinterpret_cast<const uint32_t *>(A + g * 16 + 2 * tg);
    a[1] = *reinterpret_cast<const uint32_t *>(A + (g + 8) * 16 + 2 * tg);
    a[2] = *reinterpret_cast<const uint32_t *>(A + g * 16 + 8 + 2 * tg);
    a[3] = *reinterpret_cast<const uint32_t *>(A + (g + 8) * 16 + 8 + 2 * tg);
    b[0] = *reinterpret_cast<const uint32_t *>(Bt + g * 16 + 2 * tg);
    b[1] = *reinterpret_cast<const uint32_t *>(Bt + g * 16 + 8 + 2 * tg);
    float c[4];
    for (int e = 0; e < 4; e++) c[e] = C[(g + (e >= 2 ? 8 : 0)) * 8 + 2 * tg + (e & 1)];
    mma16816(c, a, b);
    for (int e = 0; e < 4; e++) D[(g + (e >= 2 ? 8 : 0)) * 8 + 2 * tg + (e & 1)] = c[e];
}

// Stages 16-byte chunks into shared memory with cp.async, then writes them back rotated by one chunk.
__global__ void cp_async_rotate(const int4 *in, int4 *out)
{
    __shared__ __align__(16) int4 s[64];
    const int t = threadIdx.x;
    cp_async16(&s[t], in + blockIdx.x * 64 + t);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    out[blockIdx.x * 64 + t] = s[(t + 1) & 63];
}

// out[r][o] = sum_k A[r][k] B[k][o] for an R x K by K x 32 product, staged through shared tiles of K0
// columns, as the GEMM kernels do. A template kernel: GCC places its static __shared__ arrays in COMDAT
// sections of their own, not beside the plain kernels' arrays. Barriers = 2 is correct; 1 leaves out the
// barrier that keeps the next tile's writes from overtaking this tile's reads, 0 both.
template <class T, int R, int K0, int Barriers> __global__ void tiled_product(const T *A, const T *B, int K, T *out)
{
    __shared__ T As[R][K0];
    __shared__ T Bs[K0][32];
    const int o = threadIdx.x, r = threadIdx.y; // 32 x R threads, one output each
    T acc = 0;
    for (int k0 = 0; k0 < K; k0 += K0) {
        for (int k = o; k < K0; k += 32) As[r][k] = A[r * K + k0 + k];
        for (int k = r; k < K0; k += R) Bs[k][o] = B[(k0 + k) * 32 + o];
        if (Barriers >= 1) __syncthreads();
        for (int k = 0; k < K0; k++) acc += As[r][k] * Bs[k][o];
        if (Barriers >= 2) __syncthreads();
    }
    out[r * 32 + o] = acc;
}

// Block 0 alone fills the array; every block reads it back. Static shared memory does not outlive a block
// on a GPU: blocks other than 0 read shared memory nobody wrote.
template <int N> __global__ void stale_static_shared(int *out)
{
    __shared__ int s[N];
    const int t = threadIdx.x;
    if (blockIdx.x == 0) s[t] = 100 + t;
    __syncthreads();
    out[blockIdx.x * N + t] = s[t];
}

// ---------------------------------------------------------------- broken kernels

// A device function template with its own __shared__ array, and no barrier between the write and the read.
template <class T> __device__ T neighbour(T v)
{
    __shared__ T cell[64];
    cell[threadIdx.x] = v;
    return cell[(threadIdx.x + 1) & 63];
}

__global__ void helper_missing_barrier(int *out)
{
    out[threadIdx.x] = neighbour<int>((int)threadIdx.x);
}

// Reads a neighbour's slot without a barrier after the writes.
__global__ void missing_barrier(int *out)
{
    __shared__ int s[64];
    const int t = threadIdx.x;
    s[t] = t * 7;
    out[t] = s[(t + 1) & 63];
}

// Two threads write the same word in one interval.
__global__ void write_write(int *out)
{
    __shared__ int s[4];
    s[threadIdx.x & 3] = (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x & 3];
}

// A warp-synchronous reduction that relies on lockstep execution (no __syncwarp between steps).
__global__ void warp_no_syncwarp(const int *in, int *out)
{
    CCOMP_DYNAMIC_SHARED(int, s);
    const int t = threadIdx.x;
    s[t] = in[t];
    for (int o = 16; o > 0; o >>= 1)
        if (t < o) s[t] += s[t + o];
    if (t == 0) out[0] = s[0];
}

// The same with __syncwarp: correct.
__global__ void warp_with_syncwarp(const int *in, int *out)
{
    CCOMP_DYNAMIC_SHARED(int, s);
    const int t = threadIdx.x;
    s[t] = in[t];
    __syncwarp();
    for (int o = 16; o > 0; o >>= 1) {
        int v = 0;
        if (t < o) v = s[t] + s[t + o];
        __syncwarp();
        if (t < o) s[t] = v;
        __syncwarp();
    }
    if (t == 0) out[0] = s[0];
}

__global__ void shared_overrun(int *out)
{
    __shared__ int s[64];
    const int t = threadIdx.x;
    s[t + 1] = t; // thread 63 writes s[64]
    __syncthreads();
    out[t] = s[t];
}

__global__ void dynamic_overrun(int *out)
{
    CCOMP_DYNAMIC_SHARED(int, s);
    const int t = threadIdx.x;
    s[t] = t; // launched with one int too few
    __syncthreads();
    out[t] = s[t];
}

__global__ void global_overrun(int *out, int n)
{
    out[threadIdx.x] = n; // launched with more threads than out has ints
}

// Half the warp shuffles with a full mask; the other half leaves.
__global__ void divergent_shuffle_exit(int *out)
{
    const int lane = threadIdx.x & 31;
    if (lane >= 16) return;
    out[lane] = __shfl_xor_sync(FULL, lane, 16);
}

// The two halves of the warp reach different shuffles.
__global__ void divergent_shuffle_sites(int *out)
{
    const int lane = threadIdx.x & 31;
    int v;
    if (lane & 1) v = __shfl_xor_sync(FULL, lane, 1);
    else v = __shfl_xor_sync(FULL, lane, 2);
    out[lane] = v;
}

__global__ void lane_not_in_mask(int *out)
{
    out[threadIdx.x] = __shfl_sync(0x1u, (int)threadIdx.x, 0);
}

// A barrier inside a branch that only some threads take.
__global__ void divergent_barrier(int *out)
{
    __shared__ int s[64];
    const int t = threadIdx.x;
    s[t] = t;
    if (t < 32) __syncthreads();
    __syncthreads();
    out[t] = s[63 - t];
}

// Threads leave before a barrier the others wait at.
__global__ void exit_before_barrier(int *out)
{
    __shared__ int s[64];
    const int t = threadIdx.x;
    if (t >= 40) return;
    s[t] = t;
    __syncthreads();
    out[t] = s[39 - t];
}

// Threads of one warp wait at a shuffle while the rest of the block waits at a barrier.
__global__ void shuffle_vs_barrier(int *out)
{
    const int t = threadIdx.x;
    int v = t;
    if (t < 16) v = __shfl_sync(FULL, v, 0);
    else __syncthreads();
    out[t] = v;
}

// ---------------------------------------------------------------- helpers

template <class T> T *to_device(const std::vector<T> &h)
{
    T *d = nullptr;
    CHECK(cudaMalloc(&d, h.size() * sizeof(T)) == cudaSuccess);
    CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
    return d;
}

template <class T> std::vector<T> to_host(const T *d, size_t n)
{
    std::vector<T> h(n);
    CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
}

static uint32_t lcg(uint32_t &s)
{
    s = s * 1664525u + 1013904223u;
    return s >> 8;
}

// Runs `launch` under every schedule; each run's output must equal the first's and `ok` must hold.
template <class Launch, class Ok> static void each_order(const char *what, Launch launch, Ok ok)
{
    std::vector<unsigned char> first;
    for (const char *order : kOrders) {
        CHECK(ccomp_simt_set_schedule(order) == 0);
        const std::vector<unsigned char> got = launch();
        if (cudaGetLastError() != cudaSuccess) {
            fprintf(stderr, "%s under %s: %s\n", what, order, ccomp_simt_report());
            CHECK(!"launch failed");
            ccomp_simt_reset();
            continue;
        }
        if (!ok(got)) {
            fprintf(stderr, "%s under %s: wrong result\n", what, order);
            CHECK(!"result");
        }
        if (first.empty()) first = got;
        else if (got != first) {
            fprintf(stderr, "%s under %s: differs from the first order\n", what, order);
            CHECK(!"identical under every order");
        }
    }
    CHECK(ccomp_simt_set_schedule("forward") == 0);
}

template <class T> static std::vector<unsigned char> bytes(const std::vector<T> &v)
{
    const unsigned char *p = reinterpret_cast<const unsigned char *>(v.data());
    return std::vector<unsigned char>(p, p + v.size() * sizeof(T));
}

template <class T> static std::vector<T> as(const std::vector<unsigned char> &b)
{
    std::vector<T> v(b.size() / sizeof(T));
    memcpy(v.data(), b.data(), b.size());
    return v;
}

// The launch must fail with a report naming the kernel and containing every word in `words`.
static void expect_failure(const char *kernel, std::initializer_list<const char *> words)
{
    const cudaError_t e = cudaGetLastError();
    const std::string report = ccomp_simt_report();
    bool ok = e == cudaErrorLaunchFailure && report.find(kernel) != std::string::npos;
    for (const char *w : words) ok = ok && report.find(w) != std::string::npos;
    if (!ok) fprintf(stderr, "expected %s to fail (%s); got error %d, report: %s\n", kernel, *words.begin(), (int)e, report.c_str());
    CHECK(ok);
    CHECK(std::string(cudaGetErrorString(cudaErrorLaunchFailure)) == report); // the message the bindings show
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure);                      // sticky
    int *p = nullptr;
    CHECK(cudaMalloc(&p, 4) == cudaErrorLaunchFailure);
    ccomp_simt_reset();
    CHECK(cudaGetLastError() == cudaSuccess);
}

// ---------------------------------------------------------------- tests

static void test_block_sum()
{
    const int blocks = 5;
    std::vector<int> in(blocks * 256), want(blocks, 0);
    uint32_t s = 1;
    for (int i = 0; i < blocks * 256; i++) want[i / 256] += in[i] = (int)(lcg(s) % 2001) - 1000;
    int *din = to_device(in), *dout = nullptr;
    CHECK(cudaMalloc(&dout, blocks * sizeof(int)) == cudaSuccess);
    each_order("block_sum", [&] {
        CCOMP_LAUNCH(blocks, 256, 0, 0, block_sum)(din, dout);
        return bytes(to_host(dout, blocks));
    }, [&](const std::vector<unsigned char> &b) { return as<int>(b) == want; });
    cudaFree(din);
    cudaFree(dout);
}

static void test_warp_ops()
{
    const int n = 128;
    std::vector<float> in(n);
    uint32_t s = 2;
    for (int i = 0; i < n; i++) in[i] = (float)(int)(lcg(s) % 1000) / 8.0f; // exact sums in any order
    float *din = to_device(in), *dout = nullptr;
    CHECK(cudaMalloc(&dout, n * 5 * sizeof(float)) == cudaSuccess);
    std::vector<float> want(n * 5);
    for (int i = 0; i < n; i++) {
        const int w = i & ~31, lane = i & 31, h = i & ~15;
        float sum = 0, scan = 0, half = 0;
        for (int j = 0; j < 32; j++) sum += in[w + j];
        for (int j = 0; j <= lane; j++) scan += in[w + j];
        for (int j = 0; j < 16; j++) half += in[h + j];
        want[i * 5 + 0] = sum;
        want[i * 5 + 1] = sum;
        want[i * 5 + 2] = scan;
        want[i * 5 + 3] = in[w + 5];
        want[i * 5 + 4] = half;
    }
    each_order("warp_ops", [&] {
        CCOMP_LAUNCH(2, 64, 0, 0, warp_ops)(din, dout);
        return bytes(to_host(dout, n * 5));
    }, [&](const std::vector<unsigned char> &b) { return as<float>(b) == want; });
    cudaFree(din);
    cudaFree(dout);
}

static void test_votes()
{
    const int n = 96; // three warps in one block
    std::vector<int> in(n);
    uint32_t s = 3;
    for (int i = 0; i < n; i++) in[i] = (int)(lcg(s) % 7);
    for (int i = 32; i < 64; i++) in[i] = i == 40 ? 9 : 1; // warp 1: any(>5) from one lane
    int *din = to_device(in);
    unsigned *dout = nullptr;
    CHECK(cudaMalloc(&dout, n * 5 * sizeof(unsigned)) == cudaSuccess);
    std::vector<unsigned> want(n * 5);
    int cnt = 0;
    for (int i = 0; i < n; i++) cnt += in[i] > 3;
    for (int i = 0; i < n; i++) {
        const int w = i & ~31;
        unsigned b = 0, orr = 0;
        int any = 0, all = 1;
        for (int j = 0; j < 32; j++) {
            b |= (unsigned)(in[w + j] > 0) << j;
            any |= in[w + j] > 5;
            all &= in[w + j] >= 0;
            orr |= (unsigned)in[w + j];
        }
        want[i * 5 + 0] = b;
        want[i * 5 + 1] = (unsigned)any;
        want[i * 5 + 2] = (unsigned)all;
        want[i * 5 + 3] = orr;
        want[i * 5 + 4] = (unsigned)cnt;
    }
    each_order("votes", [&] {
        CCOMP_LAUNCH(1, n, 0, 0, votes)(din, dout);
        return bytes(to_host(dout, n * 5));
    }, [&](const std::vector<unsigned char> &b) { return as<unsigned>(b) == want; });
    cudaFree(din);
    cudaFree(dout);
}

static void test_atomics()
{
    const int n = 1000, blocks = (n + 127) / 128;
    std::vector<int> in(n), want_hist(16, 0), want_seen(blocks, 0);
    uint32_t s = 4;
    unsigned want_min = 0xffffffffu;
    for (int i = 0; i < n; i++) {
        in[i] = (int)(lcg(s) % 100000) + 7;
        want_hist[in[i] & 15]++;
        want_min = std::min(want_min, (unsigned)in[i]);
        want_seen[i / 128]++;
    }
    int *din = to_device(in), *hist = nullptr, *seen = nullptr;
    unsigned *minv = nullptr;
    CHECK(cudaMalloc(&hist, 16 * sizeof(int)) == cudaSuccess);
    CHECK(cudaMalloc(&minv, sizeof(unsigned)) == cudaSuccess);
    CHECK(cudaMalloc(&seen, blocks * sizeof(int)) == cudaSuccess);
    each_order("atomics", [&] {
        CHECK(cudaMemset(hist, 0, 16 * sizeof(int)) == cudaSuccess);
        CHECK(cudaMemset(minv, 0xff, sizeof(unsigned)) == cudaSuccess);
        CHECK(cudaMemset(seen, 0, blocks * sizeof(int)) == cudaSuccess);
        CCOMP_LAUNCH(blocks, 128, 0, 0, atomics)(din, n, hist, minv, seen);
        std::vector<int> out = to_host(hist, 16), sn = to_host(seen, blocks);
        out.push_back((int)to_host(minv, 1)[0]);
        out.insert(out.end(), sn.begin(), sn.end());
        return bytes(out);
    }, [&](const std::vector<unsigned char> &b) {
        std::vector<int> w = want_hist;
        w.push_back((int)want_min);
        w.insert(w.end(), want_seen.begin(), want_seen.end());
        return as<int>(b) == w;
    });
    cudaFree(din);
    cudaFree(hist);
    cudaFree(minv);
    cudaFree(seen);
}

static void test_dynamic_shared()
{
    const int t = 96, blocks = 3;
    std::vector<double> in(t * blocks), want(t * blocks);
    for (int i = 0; i < t * blocks; i++) in[i] = i * 0.25 - 3;
    for (int i = 0; i < t * blocks; i++) want[i] = in[(i / t) * t + (t - 1 - i % t)];
    double *din = to_device(in), *dout = nullptr;
    CHECK(cudaMalloc(&dout, in.size() * sizeof(double)) == cudaSuccess);
    each_order("reverse_dynamic", [&] {
        CCOMP_LAUNCH(blocks, t, t * sizeof(double), 0, reverse_dynamic)(din, dout);
        return bytes(to_host(dout, in.size()));
    }, [&](const std::vector<unsigned char> &b) { return as<double>(b) == want; });

    // more than 48 KB needs the opt-in, as on the GPU
    CCOMP_LAUNCH(1, 32, 64 * 1024, 0, reverse_dynamic)(din, dout);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(cudaFuncSetAttribute(reverse_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) == cudaSuccess);
    CCOMP_LAUNCH(1, 32, 64 * 1024, 0, reverse_dynamic)(din, dout);
    CHECK(cudaGetLastError() == cudaSuccess);
    CCOMP_LAUNCH(1, 2048, 0, 0, reverse_dynamic)(din, dout);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    CCOMP_LAUNCH(0, 32, 0, 0, reverse_dynamic)(din, dout);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    cudaFree(din);
    cudaFree(dout);
}

static void test_mma()
{
    std::vector<__half> A(16 * 16), Bt(8 * 16);
    std::vector<float> C(16 * 8), want(16 * 8);
    uint32_t s = 5;
    for (auto &x : A) x = __float2half_rn((float)((int)(lcg(s) % 200) - 100) / 32.0f);
    for (auto &x : Bt) x = __float2half_rn((float)((int)(lcg(s) % 200) - 100) / 64.0f);
    for (auto &x : C) x = (float)((int)(lcg(s) % 100) - 50) / 4.0f;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 8; c++) {
            double acc = C[r * 8 + c];
            for (int k = 0; k < 16; k++) acc += (double)__half2float(A[r * 16 + k]) * (double)__half2float(Bt[c * 16 + k]);
            want[r * 8 + c] = (float)acc; // the products and sums are exact here: any order agrees
        }
    __half *dA = to_device(A), *dB = to_device(Bt);
    float *dC = to_device(C), *dD = nullptr;
    CHECK(cudaMalloc(&dD, 16 * 8 * sizeof(float)) == cudaSuccess);
    each_order("mma_tile", [&] {
        CCOMP_LAUNCH(1, 32, 0, 0, mma_tile)(dA, dB, dC, dD);
        return bytes(to_host(dD, 16 * 8));
    }, [&](const std::vector<unsigned char> &b) { return as<float>(b) == want; });
    // a warp with missing lanes cannot run mma.sync
    CCOMP_LAUNCH(1, 16, 0, 0, mma_tile)(dA, dB, dC, dD);
    expect_failure("mma_tile", {"mma.sync", "all 32 lanes"});
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    cudaFree(dD);
}

static void test_cp_async()
{
    const int blocks = 2, n = blocks * 64;
    std::vector<int4> in(n), want(n);
    for (int i = 0; i < n; i++) in[i] = make_int4(i, -i, i * 3, 7);
    for (int i = 0; i < n; i++) want[i] = in[(i / 64) * 64 + ((i % 64 + 1) & 63)];
    int4 *din = to_device(in), *dout = nullptr;
    CHECK(cudaMalloc(&dout, n * sizeof(int4)) == cudaSuccess);
    each_order("cp_async_rotate", [&] {
        CCOMP_LAUNCH(blocks, 64, 0, 0, cp_async_rotate)(din, dout);
        return bytes(to_host(dout, n));
    }, [&](const std::vector<unsigned char> &b) { return b == bytes(want); });
    cudaFree(din);
    cudaFree(dout);
}

// Template kernels: the race build checks their static __shared__ arrays like any other.
static void test_template_shared()
{
    const int R = 4, K = 64, K0 = 16;
    std::vector<int> A(R * K), B(K * 32), want(R * 32, 0);
    uint32_t s = 6;
    for (auto &x : A) x = (int)(lcg(s) % 21) - 10;
    for (auto &x : B) x = (int)(lcg(s) % 21) - 10;
    for (int r = 0; r < R; r++)
        for (int o = 0; o < 32; o++)
            for (int k = 0; k < K; k++) want[r * 32 + o] += A[r * K + k] * B[k * 32 + o];
    int *dA = to_device(A), *dB = to_device(B), *dout = nullptr;
    CHECK(cudaMalloc(&dout, R * 32 * sizeof(int)) == cudaSuccess);
    each_order("tiled_product<int, 4, 16, 2>", [&] {
        CCOMP_LAUNCH(1, dim3(32, R), 0, 0, tiled_product<int, R, K0, 2>)(dA, dB, K, dout);
        return bytes(to_host(dout, R * 32));
    }, [&](const std::vector<unsigned char> &b) { return as<int>(b) == want; });
    // a second instance of the template (another element type) in two blocks
    std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end()), wantf(want.begin(), want.end());
    float *dAf = to_device(Af), *dBf = to_device(Bf), *doutf = nullptr;
    CHECK(cudaMalloc(&doutf, R * 32 * sizeof(float)) == cudaSuccess);
    each_order("tiled_product<float, 4, 16, 2>", [&] {
        CCOMP_LAUNCH(2, dim3(32, R), 0, 0, tiled_product<float, R, K0, 2>)(dAf, dBf, K, doutf);
        return bytes(to_host(doutf, R * 32));
    }, [&](const std::vector<unsigned char> &b) { return as<float>(b) == wantf; });

    if (RACE_BUILD) {
        // the barrier after the reads is missing: the next tile's writes race with this tile's reads
        CCOMP_LAUNCH(1, dim3(32, R), 0, 0, tiled_product<int, R, K0, 1>)(dA, dB, K, dout);
        expect_failure("tiled_product", {"shared-memory race", "kernel tiled_product<int, 4, 16, 1>,",
                                          "static __shared__ `", "write by thread"});
        CCOMP_LAUNCH(1, dim3(32, R), 0, 0, tiled_product<float, R, K0, 0>)(dAf, dBf, K, doutf);
        expect_failure("tiled_product", {"shared-memory race", "kernel tiled_product<float, 4, 16, 0>,",
                                          "static __shared__ `As` byte 4", "write by thread", "read by thread"});
        // a __shared__ array of a device function template the kernel calls
        CCOMP_LAUNCH(1, 64, 0, 0, helper_missing_barrier)(dout);
        expect_failure("helper_missing_barrier", {"shared-memory race", "static __shared__ `neighbour<int>::cell` byte",
                                                   "write by thread", "read by thread"});
        // static shared memory is refilled with the order's junk before every block, as the dynamic arena is
        const int n = 32, blocks = 3;
        int *d = nullptr;
        CHECK(cudaMalloc(&d, n * blocks * sizeof(int)) == cudaSuccess);
        for (const char *order : {"forward", "reverse"}) {
            CHECK(ccomp_simt_set_schedule(order) == 0);
            CCOMP_LAUNCH(blocks, n, 0, 0, stale_static_shared<n>)(d);
            CHECK(cudaGetLastError() == cudaSuccess);
            const std::vector<int> got = to_host(d, n * blocks);
            const int junk = order[0] == 'f' ? 0x5a5a5a5a : (int)0xa5a5a5a5u;
            for (int i = 0; i < n * blocks; i++) CHECK_EQ(got[i], i < n ? 100 + i : junk);
        }
        CHECK(ccomp_simt_set_schedule("forward") == 0);
        cudaFree(d);
    }
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dout);
    cudaFree(dAf);
    cudaFree(dBf);
    cudaFree(doutf);
}

// The host code of an instrumented file uses atomics as well (std::atomic, the guard of a function-local
// static): in the race build they reach the emulator's __tsan_atomic* hooks, which must perform them.
static std::vector<int> squares(int n)
{
    std::vector<int> v(n);
    for (int i = 0; i < n; i++) v[i] = i * i;
    return v;
}

static void test_host_atomics()
{
    static const std::vector<int> table = squares(10); // guarded initialisation
    CHECK_EQ(table[9], 81);
    std::atomic<int> a{5};
    CHECK_EQ(a.fetch_add(3), 5);
    CHECK_EQ(a.load(), 8);
    int expected = 7;
    CHECK(!a.compare_exchange_strong(expected, 1) && expected == 8);
    CHECK(a.compare_exchange_strong(expected, 1));
    CHECK_EQ(a.exchange(4), 1);
    CHECK_EQ(a.fetch_xor(6), 4);
    CHECK_EQ(a.fetch_or(8), 2);
    CHECK_EQ(a.fetch_and(3), 10);
    CHECK_EQ(a.fetch_sub(5), 2);
    CHECK_EQ(a.load(), -3);
    std::atomic<long long> total{0};
    std::atomic<unsigned char> flag{0};
    auto add = [&] {
        for (int i = 0; i < 20000; i++) total.fetch_add(i, std::memory_order_relaxed);
        flag.fetch_add(1);
    };
    std::thread t1(add), t2(add);
    t1.join();
    t2.join();
    CHECK_EQ(total.load(), 2LL * (20000LL * 19999 / 2));
    CHECK_EQ(flag.load(), 2);
}

static void test_broken()
{
    int *out = nullptr, *in = nullptr;
    CHECK(cudaMalloc(&out, 64 * sizeof(int)) == cudaSuccess);
    std::vector<int> ones(64, 1);
    in = to_device(ones);

    CCOMP_LAUNCH(1, 32, 0, 0, divergent_shuffle_exit)(out);
    expect_failure("divergent_shuffle_exit", {"__shfl_xor_sync", "reads lane 16", "exited"});
    CCOMP_LAUNCH(1, 32, 0, 0, divergent_shuffle_sites)(out);
    expect_failure("divergent_shuffle_sites", {"warp collective mismatch", "test_kernels.cu:"});
    CCOMP_LAUNCH(1, 32, 0, 0, lane_not_in_mask)(out);
    expect_failure("lane_not_in_mask", {"lane 1", "not in its mask"});
    CCOMP_LAUNCH(1, 64, 0, 0, divergent_barrier)(out);
    expect_failure("divergent_barrier", {"different synchronisation points", "threads 0-31", "threads 32-63"});
    CCOMP_LAUNCH(1, 64, 0, 0, exit_before_barrier)(out);
    expect_failure("exit_before_barrier", {"threads 40-63 exited", "threads 0-39 wait at __syncthreads"});
    CCOMP_LAUNCH(1, 64, 0, 0, shuffle_vs_barrier)(out);
    expect_failure("shuffle_vs_barrier", {"__shfl_sync", "__syncthreads", "threads 0-15", "threads 16-63"});

    // the correct warp-synchronous version passes every build and order
    each_order("warp_with_syncwarp", [&] {
        CCOMP_LAUNCH(1, 32, 32 * sizeof(int), 0, warp_with_syncwarp)(in, out);
        return bytes(to_host(out, 1));
    }, [&](const std::vector<unsigned char> &b) { return as<int>(b)[0] == 32; });

    if (RACE_BUILD) {
        CCOMP_LAUNCH(1, 64, 0, 0, missing_barrier)(out);
        expect_failure("missing_barrier", {"shared-memory race", "static __shared__ `s` byte", "write by thread",
                                          "read by thread"});
        CCOMP_LAUNCH(1, 8, 0, 0, write_write)(out);
        expect_failure("write_write", {"shared-memory race", "write by thread 0 and write by thread 4"});
        CCOMP_LAUNCH(1, 32, 32 * sizeof(int), 0, warp_no_syncwarp)(in, out);
        expect_failure("warp_no_syncwarp", {"shared-memory race", "dynamic shared memory"});
    }
    if (ASAN_BUILD) {
        CCOMP_LAUNCH(1, 64, 0, 0, shared_overrun)(out);
        expect_failure("shared_overrun", {"out-of-bounds", "thread 63", "global-buffer-overflow"});
        CCOMP_LAUNCH(1, 64, 63 * sizeof(int), 0, dynamic_overrun)(out);
        expect_failure("dynamic_overrun", {"out-of-bounds", "thread 63", "heap-buffer-overflow"});
        CCOMP_LAUNCH(1, 65, 0, 0, global_overrun)(out, 3);
        expect_failure("global_overrun", {"out-of-bounds", "thread 64", "heap-buffer-overflow"});
    }
    cudaFree(out);
    cudaFree(in);
}

static void test_runtime_api()
{
    // device allocations are 256-byte aligned, as cudaMalloc guarantees (kernels rely on it for vector loads)
    std::vector<void *> blocks;
    for (size_t size : {0, 1, 3, 255, 256, 257, 4099}) {
        void *p = nullptr;
        CHECK(cudaMalloc(&p, size) == cudaSuccess && p != nullptr);
        CHECK_EQ((uintptr_t)p % 256, 0);
        blocks.push_back(p);
    }
    for (void *p : blocks) CHECK(cudaFree(p) == cudaSuccess);
    int *d = nullptr;
    int h[4] = {1, 2, 3, 4};
    CHECK(cudaMalloc(&d, sizeof h) == cudaSuccess);
    cudaPointerAttributes attr;
    CHECK(cudaPointerGetAttributes(&attr, d + 2) == cudaSuccess && attr.type == cudaMemoryTypeDevice && attr.device == 0);
    CHECK(cudaPointerGetAttributes(&attr, h) == cudaSuccess && attr.type != cudaMemoryTypeDevice);
    // copies are checked against the allocation
    CHECK(cudaMemcpy(d, h, sizeof h + 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaSuccess); // not sticky
    CHECK(cudaMemcpy(h, h + 1, 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    cudaGetLastError();
    cudaStream_t st;
    CHECK(cudaStreamCreate(&st) == cudaSuccess);
    CHECK(cudaMemcpyAsync(d, h, sizeof h, cudaMemcpyHostToDevice, st) == cudaSuccess);
    CHECK(cudaMemsetAsync(d, 0, 4, st) == cudaSuccess);
    CHECK(cudaStreamSynchronize(st) == cudaSuccess);
    int back[4];
    CHECK(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(back[0] == 0 && back[1] == 2 && back[3] == 4);
    int h2[6] = {0, 0, 0, 0, 0, 0}, *d2 = nullptr; // two rows of 2 ints, pitches 3 (host) and 2 (device)
    CHECK(cudaMalloc(&d2, 4 * sizeof(int)) == cudaSuccess);
    const int src2[6] = {1, 2, -1, 3, 4, -1};
    CHECK(cudaMemcpy2D(d2, 8, src2, 12, 8, 2, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(cudaMemcpy2D(h2, 12, d2, 8, 8, 2, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(h2[0] == 1 && h2[1] == 2 && h2[2] == 0 && h2[3] == 3 && h2[4] == 4 && h2[5] == 0);
    CHECK(cudaMemcpy2D(d2, 8, src2, 12, 8, 3, cudaMemcpyHostToDevice) == cudaErrorInvalidValue); // past the end
    cudaGetLastError();
    CHECK(cudaFree(d2) == cudaSuccess);
    CHECK(cudaStreamDestroy(st) == cudaSuccess);
    CHECK(cudaFree(d) == cudaSuccess);
    CHECK(cudaFree(h) == cudaErrorInvalidValue);
    cudaGetLastError();
    CHECK(ccomp_simt_set_schedule("sideways") == -1);
    CHECK(ccomp_simt_set_schedule("random:") == -1);
    CHECK(ccomp_simt_set_schedule("random:12x") == -1);
}

int main()
{
    test_runtime_api();
    test_host_atomics();
    test_block_sum();
    test_warp_ops();
    test_votes();
    test_atomics();
    test_dynamic_shared();
    test_mma();
    test_cp_async();
    test_template_shared();
    test_broken();
    return simt_test_done(RACE_BUILD ? "test_kernels (race build)" : ASAN_BUILD ? "test_kernels (asan build)" : "test_kernels");
}

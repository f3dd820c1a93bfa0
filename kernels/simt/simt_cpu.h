// ccomp's SIMT emulator: the CUDA sources in kernels/ compiled for the host by g++ and run with
// one fiber per CUDA thread, so that every kernel is executed and checked without a GPU.
//
// Build (each .cu compiled as C++, force-including this header; the runtime linked once):
//   g++ -std=c++17 -DCCOMP_SIMT -include kernels/simt/simt_cpu.h -Ikernels/simt/include
//       -I/usr/local/cuda/include -Ikernels -Icsrc/include -ffp-contract=off -Wno-unknown-pragmas -x c++ -c X.cu
//   (`make simt` builds and runs tests/simt/ in all three builds below; its rules are the reference)
//   g++ -std=c++17 -c kernels/simt/simt_runtime.cpp          (x86-64 context switch, else ucontext)
// Checking builds (keep them apart: one sanitizer per object):
//   out-of-bounds: -fsanitize=address on the .cu files and the runtime. Device allocations and the
//     dynamic shared arena are exact-size heap blocks, static __shared__ arrays are globals with
//     redzones (GCC gives none to those of template kernels: COMDAT globals are not instrumented); a
//     report fails the launch (continue with -fsanitize-recover=address and
//     ASAN_OPTIONS=halt_on_error=0, else ASan stops the process after its report).
//   races: add -DCCOMP_SIMT_RACECHECK -fsanitize=thread to the .cu files ONLY and link without
//     -fsanitize=thread: GCC then calls the runtime's own __tsan_read*/__tsan_write* before every
//     load and store, and a shadow per shared byte reports two threads' conflicting accesses
//     (write-write, write-read, read-write) in one barrier interval. Shared memory is recognised by
//     address: the dynamic arena, and the writable static storage (.data/.bss, found with
//     dl_iterate_phdr) of the module that holds the launched kernel, where kernel code writes nothing
//     but its static __shared__ variables, whatever section the compiler gives them (template
//     kernels' go to COMDAT sections); fiber stacks and device memory are not checked. Only the
//     launching host thread's fiber accesses count. Lanes of one warp are ordered by their warp
//     collectives. Accesses made through memcpy/memset calls and atomics are not checked. Reports
//     name the variable from the module's symbol table (.symtab; an address when stripped).
//
// What is emulated: blocks run one after another, in x-fastest order; the threads of a block are
// fibers that run until a synchronisation point: __syncthreads(_count|_and|_or), __syncwarp,
// __shfl(_up|_down|_xor)_sync (with width), __ballot_sync, __any_sync, __all_sync,
// __reduce_{or,and,xor,add,min,max}_sync, mma.sync m16n8k16 f16->f32 (kernels/ptx.cuh). The order
// in which runnable threads resume is CCOMP_SIMT_SCHEDULE=forward|reverse|random:SEED (or
// ccomp_simt_set_schedule); random reshuffles every round. __shared__ is static storage (one block
// runs at a time; the race build refills the bytes kernels wrote with junk before every block, as it
// does the arena); dynamic shared memory is a per-launch heap block of the exact size, refilled with
// schedule-dependent junk before every block so that reads of unwritten shared memory show up as
// order-dependent results. Atomics are plain read-modify-writes (one host thread runs a launch;
// launches are serialised). Float arithmetic is the host's IEEE arithmetic, one rounding per
// operation (-ffp-contract=off; fmaf is a true fma); fast intrinsics (__expf, __fdividef, rsqrtf)
// are the exact functions, not the GPU's approximations. mma.sync rounds the exact sum once.
//
// What is not: timing, occupancy, the memory model (a thread that spins on a flag written by
// another thread or block never sees it change), inter-block concurrency, asynchrony (launches and
// copies complete before the call returns), the GPU's exact approximations and its tensor-core
// accumulation order, textures, cooperative groups, dynamic parallelism.
//
// Interface (stable): CCOMP_LAUNCH / CCOMP_DYNAMIC_SHARED (kernels/launch.cuh) run a kernel here;
// the CUDA runtime subset of kernels/simt/include/cuda_runtime.h (one device, 0; "device memory" is
// exact-size malloc blocks, cudaPointerGetAttributes says device only for those); the C functions
// ccomp_simt_set_schedule, ccomp_simt_report, ccomp_simt_reset, ccomp_simt_launch_count below.
// Environment: CCOMP_SIMT_SCHEDULE (read at the first launch unless set by the API),
// CCOMP_SIMT_ABORT=1, CCOMP_SIMT_SMS (the multiprocessor count reported, default 4, so that grids
// sized by it stay small).
//
// Checks: a check that fails marks the launch failed: the sticky error cudaErrorLaunchFailure (until
// cudaDeviceReset), cudaGetErrorString of it and ccomp_simt_report() return a message naming the
// kernel, the block, the check and the threads. CCOMP_SIMT_ABORT=1 prints it and aborts instead.
//   barriers: every live thread of the block must reach the same __syncthreads (file:line); a thread
//     that has exited when a barrier completes is reported; a warp collective must be reached at the
//     same call site with the same mask by every non-exited lane its mask names, the calling lane
//     must be in the mask, and a shuffle must not read a lane that is not taking part; threads
//     blocked at different kinds of synchronisation (a deadlock) are reported.
//   launch configuration: block size, grid size, dynamic shared memory above 48 KB without the
//     cudaFuncSetAttribute opt-in (cudaErrorInvalidValue / cudaErrorInvalidConfiguration, not sticky).
#ifndef CCOMP_SIMT_CPU_H
#define CCOMP_SIMT_CPU_H

#ifdef __cplusplus

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime.h> // the emulator's (kernels/simt/include)
#include <cuda_fp16.h>    // the toolkit's host-capable half and bfloat16 types
#include <cuda_bf16.h>

// Host-side control of the emulator (C linkage, so a binding can reach it with ctypes as well).
extern "C" {
// "forward", "reverse" or "random:SEED"; returns 0, or -1 for a spec it does not know (unchanged).
int ccomp_simt_set_schedule(const char *spec);
// The report of the last failed launch of this process ("" if none).
const char *ccomp_simt_report(void);
// Clears the sticky launch failure and its report (as cudaDeviceReset does).
void ccomp_simt_reset(void);
// How many launches ran (config errors excluded): lets tests see that a kernel really ran here.
unsigned long long ccomp_simt_launch_count(void);
}

namespace simt {

// One CUDA thread. The kernel-visible fields come first.
struct Thread {
    uint3 thread_idx;
    int linear; // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
};

extern Thread *g_cur;      // the running thread (set by the scheduler)
extern uint3 g_block_idx;  // the running block
extern dim3 g_block_dim;
extern dim3 g_grid_dim;
extern unsigned char *g_dynamic_shared;

struct LaunchConfig {
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    const char *name;   // the kernel as written at the launch
    const void *kernel; // for the shared-memory opt-in
};

// Runs body(ctx) as every thread of every block; failures go to the error state (see above).
void run(const LaunchConfig &cfg, void (*body)(void *), void *ctx);

// Synchronisation points (a site is the file and line of the call).
void syncthreads(const char *file, int line);
int syncthreads_reduce(int kind, int pred, const char *file, int line); // kind: 0 count, 1 and, 2 or

enum Collective {
    SYNCWARP,
    SHFL_IDX,
    SHFL_UP,
    SHFL_DOWN,
    SHFL_XOR,
    BALLOT,
    ANY,
    ALL,
    REDUCE_OR,
    REDUCE_AND,
    REDUCE_XOR,
    REDUCE_ADD,
    REDUCE_MIN,
    REDUCE_MAX,
    REDUCE_MIN_S,
    REDUCE_MAX_S,
    MMA_M16N8K16_F32_F16,
};
// The lane's part of a warp collective: `in` (size bytes) is read by the lanes it names, `out` is
// written when the collective completes. arg: srcLane / delta / laneMask; for MMA in is a MmaIn.
void warp_collective(Collective kind, unsigned mask, const void *in, void *out, size_t size, int arg, int width,
                     const char *file, int line);

struct MmaIn {
    uint32_t a[4], b[2];
    float c[4];
};

// Reports a failed check of this launch from kernel code (marks the running thread failed).
[[noreturn]] void fail_thread(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

template <class... P> struct Launch {
    LaunchConfig cfg;
    void (*kernel)(P...);

    template <class... A> void operator()(A &&...args)
    {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        std::tuple<P...> params(static_cast<P>(std::forward<A>(args))...);
        struct Ctx {
            void (*kernel)(P...);
            std::tuple<P...> *params;
        } ctx{kernel, &params};
        run(cfg, [](void *c) {
            Ctx *x = static_cast<Ctx *>(c);
            std::apply(x->kernel, *x->params); // every thread gets its own copy of the parameters
        }, &ctx);
    }
};

template <class... P>
Launch<P...> launcher(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, const char *name,
                      void (*kernel)(P...))
{
    return Launch<P...>{{grid, block, shared_bytes, stream, name, reinterpret_cast<const void *>(kernel)}, kernel};
}

template <class T> inline T shfl(Collective kind, unsigned mask, T v, int arg, int width, const char *file, int line)
{
    static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of a type the emulator cannot move");
    T out;
    warp_collective(kind, mask, &v, &out, sizeof(T), arg, width, file, line);
    return out;
}

inline unsigned vote(Collective kind, unsigned mask, int pred, const char *file, int line)
{
    unsigned out = 0, in = pred != 0;
    warp_collective(kind, mask, &in, &out, sizeof in, 0, 32, file, line);
    return out;
}

template <class T> inline T reduce(Collective kind, unsigned mask, T v, const char *file, int line)
{
    T out;
    warp_collective(kind, mask, &v, &out, sizeof(T), 0, 32, file, line);
    return out;
}

template <class T, class U> inline T bit_cast(U u)
{
    static_assert(sizeof(T) == sizeof(U), "bit_cast between sizes");
    T t;
    memcpy(&t, &u, sizeof t);
    return t;
}

} // namespace simt

// ---------------------------------------------------------------- language

#undef __shared__
#define __shared__ static
#undef __constant__
#define __constant__ static const
#define __launch_bounds__(...)

#define threadIdx (::simt::g_cur->thread_idx)
#define blockIdx (::simt::g_block_idx)
#define blockDim (::simt::g_block_dim)
#define gridDim (::simt::g_grid_dim)
constexpr int warpSize = 32;

#define CCOMP_LAUNCH(grid, block, shared_bytes, stream, ...) \
    ::simt::launcher((grid), (block), (shared_bytes), (stream), #__VA_ARGS__, __VA_ARGS__)
#define CCOMP_DYNAMIC_SHARED(type, name) type *const name = reinterpret_cast<type *>(::simt::g_dynamic_shared)

// ---------------------------------------------------------------- synchronisation

#define CCOMP_SIMT_SITE const char *file_ = __builtin_FILE(), int line_ = __builtin_LINE()

inline void __syncthreads(CCOMP_SIMT_SITE) { ::simt::syncthreads(file_, line_); }
inline int __syncthreads_count(int p, CCOMP_SIMT_SITE) { return ::simt::syncthreads_reduce(0, p, file_, line_); }
inline int __syncthreads_and(int p, CCOMP_SIMT_SITE) { return ::simt::syncthreads_reduce(1, p, file_, line_); }
inline int __syncthreads_or(int p, CCOMP_SIMT_SITE) { return ::simt::syncthreads_reduce(2, p, file_, line_); }
inline void __syncwarp(unsigned mask = 0xffffffffu, CCOMP_SIMT_SITE)
{
    ::simt::warp_collective(::simt::SYNCWARP, mask, nullptr, nullptr, 0, 0, 32, file_, line_);
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32, CCOMP_SIMT_SITE)
{
    return ::simt::shfl(::simt::SHFL_IDX, mask, v, src, width, file_, line_);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, CCOMP_SIMT_SITE)
{
    return ::simt::shfl(::simt::SHFL_UP, mask, v, (int)delta, width, file_, line_);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, CCOMP_SIMT_SITE)
{
    return ::simt::shfl(::simt::SHFL_DOWN, mask, v, (int)delta, width, file_, line_);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, CCOMP_SIMT_SITE)
{
    return ::simt::shfl(::simt::SHFL_XOR, mask, v, lane_mask, width, file_, line_);
}
inline unsigned __ballot_sync(unsigned mask, int p, CCOMP_SIMT_SITE) { return ::simt::vote(::simt::BALLOT, mask, p, file_, line_); }
inline int __any_sync(unsigned mask, int p, CCOMP_SIMT_SITE) { return (int)::simt::vote(::simt::ANY, mask, p, file_, line_); }
inline int __all_sync(unsigned mask, int p, CCOMP_SIMT_SITE) { return (int)::simt::vote(::simt::ALL, mask, p, file_, line_); }
inline unsigned __reduce_or_sync(unsigned mask, unsigned v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_OR, mask, v, file_, line_); }
inline unsigned __reduce_and_sync(unsigned mask, unsigned v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_AND, mask, v, file_, line_); }
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_XOR, mask, v, file_, line_); }
inline unsigned __reduce_add_sync(unsigned mask, unsigned v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_ADD, mask, v, file_, line_); }
inline int __reduce_add_sync(unsigned mask, int v, CCOMP_SIMT_SITE) { return (int)::simt::reduce(::simt::REDUCE_ADD, mask, (unsigned)v, file_, line_); }
inline unsigned __reduce_min_sync(unsigned mask, unsigned v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_MIN, mask, v, file_, line_); }
inline unsigned __reduce_max_sync(unsigned mask, unsigned v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_MAX, mask, v, file_, line_); }
inline int __reduce_min_sync(unsigned mask, int v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_MIN_S, mask, v, file_, line_); }
inline int __reduce_max_sync(unsigned mask, int v, CCOMP_SIMT_SITE) { return ::simt::reduce(::simt::REDUCE_MAX_S, mask, v, file_, line_); }

inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------- atomics
// One host thread runs all fibers of a launch, so a plain read-modify-write is atomic here; they are
// not instrumented in the race build (atomics do not race).
#define CCOMP_SIMT_ATOMIC inline __attribute__((no_sanitize_thread))
template <class T> CCOMP_SIMT_ATOMIC T atomicAdd(T *p, T v) { T o = *p; *p = (T)(o + v); return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicSub(T *p, T v) { T o = *p; *p = (T)(o - v); return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicMin(T *p, T v) { T o = *p; *p = v < o ? v : o; return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicMax(T *p, T v) { T o = *p; *p = v > o ? v : o; return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicAnd(T *p, T v) { T o = *p; *p = o & v; return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicOr(T *p, T v) { T o = *p; *p = o | v; return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicXor(T *p, T v) { T o = *p; *p = o ^ v; return o; }
template <class T> CCOMP_SIMT_ATOMIC T atomicCAS(T *p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }
CCOMP_SIMT_ATOMIC unsigned atomicInc(unsigned *p, unsigned lim) { unsigned o = *p; *p = o >= lim ? 0 : o + 1; return o; }
CCOMP_SIMT_ATOMIC unsigned atomicDec(unsigned *p, unsigned lim) { unsigned o = *p; *p = (o == 0 || o > lim) ? lim : o - 1; return o; }

// ---------------------------------------------------------------- intrinsics

template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline size_t __cvta_generic_to_shared(const T *p) { return (size_t)(uintptr_t)p; }

inline unsigned __float_as_uint(float f) { return simt::bit_cast<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return simt::bit_cast<float>(u); }
inline int __float_as_int(float f) { return simt::bit_cast<int>(f); }
inline float __int_as_float(int u) { return simt::bit_cast<float>(u); }
inline long long __double_as_longlong(double d) { return simt::bit_cast<long long>(d); }
inline double __longlong_as_double(long long v) { return simt::bit_cast<double>(v); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline int __clzll(unsigned long long x) { return x ? __builtin_clzll(x) : 64; }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __ffsll(unsigned long long x) { return __builtin_ffsll((long long)x); }
inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s)
{
    s &= 31;
    return s ? (hi << s) | (lo >> (32 - s)) : hi;
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s)
{
    s &= 31;
    return s ? (lo >> s) | (hi << (32 - s)) : lo;
}

// Correctly rounded single operations (the build uses -ffp-contract=off, so none is fused).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float exp10f(float x) { return powf(10.0f, x); }

// Conversions: the GPU's rounding and saturation (NaN -> 0 for integers).
namespace simt {
template <class I, class F> inline I sat_rz(F x)
{
    if (x != x) return 0;
    const F t = std::trunc(x);
    if (t <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (t >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)t;
}
} // namespace simt
inline unsigned __float2uint_rz(float x) { return simt::sat_rz<unsigned>(x); }
inline int __float2int_rz(float x) { return simt::sat_rz<int>(x); }
inline unsigned __double2uint_rz(double x) { return simt::sat_rz<unsigned>(x); }
inline int __double2int_rz(double x) { return simt::sat_rz<int>(x); }
inline long long __float2ll_rz(float x) { return simt::sat_rz<long long>(x); }
inline unsigned long long __float2ull_rz(float x) { return simt::sat_rz<unsigned long long>(x); }
inline int __float2int_rn(float x) { return simt::sat_rz<int>(nearbyintf(x)); }
inline int __float2int_rd(float x) { return simt::sat_rz<int>(floorf(x)); }
inline int __float2int_ru(float x) { return simt::sat_rz<int>(ceilf(x)); }
inline float __double2float_rn(double x) { return (float)x; }
inline float __double2float_rd(double x)
{
    float f = (float)x;
    return (double)f > x ? nextafterf(f, -INFINITY) : f;
}
inline float __double2float_ru(double x)
{
    float f = (float)x;
    return (double)f < x ? nextafterf(f, INFINITY) : f;
}
inline float __ull2float_rn(unsigned long long v) { return (float)v; }
inline double __ull2double_rn(unsigned long long v) { return (double)v; }
inline float __ll2float_rn(long long v) { return (float)v; }
inline double __ll2double_rn(long long v) { return (double)v; }
inline float __int2float_rn(int v) { return (float)v; }
inline float __uint2float_rn(unsigned v) { return (float)v; }

// min/max as CUDA overloads them: the usual arithmetic conversions of the two arguments.
template <class A, class B, class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>::type>
inline typename std::common_type<A, B>::type min(A a, B b)
{
    typedef typename std::common_type<A, B>::type C;
    if (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);
    return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B, class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>::type>
inline typename std::common_type<A, B>::type max(A a, B b)
{
    typedef typename std::common_type<A, B>::type C;
    if (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
    return (C)a < (C)b ? (C)b : (C)a;
}

#endif // __cplusplus
#endif

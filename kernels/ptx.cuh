// The inline PTX that ccomp's kernels use, one small device function each, so that the same source
// serves both builds: the CUDA build keeps the asm, the SIMT emulator (CCOMP_SIMT) implements it.
//   cp_async16(smem, gmem)  16-byte global -> shared copy (cp.async.cg); the emulator copies at once
//   cp_async_commit(), cp_async_wait<N>()   group bookkeeping; no-ops in the emulator
//   mma16816(c, a, b)  c += a b with mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (fragments in
//                      the PTX ISA layout); the emulator gathers the warp's fragments at the collective
#ifndef CCOMP_PTX_CUH
#define CCOMP_PTX_CUH

#include <stdint.h>

#ifdef CCOMP_SIMT

static inline void cp_async16(void *smem, const void *gmem)
{
    // four 4-byte copies, so the race build sees the shared-memory writes
    uint32_t *d = static_cast<uint32_t *>(smem);
    const uint32_t *s = static_cast<const uint32_t *>(gmem);
    for (int i = 0; i < 4; i++) d[i] = s[i];
}

static inline void cp_async_commit() {}

template <int N> static inline void cp_async_wait() {}

static inline void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2], CCOMP_SIMT_SITE)
{
    ::simt::MmaIn in;
    for (int i = 0; i < 4; i++) in.a[i] = a[i], in.c[i] = c[i];
    in.b[0] = b[0];
    in.b[1] = b[1];
    ::simt::warp_collective(::simt::MMA_M16N8K16_F32_F16, 0xffffffffu, &in, c, sizeof in, 0, 32, file_, line_);
}

#else

static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}

static __device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N> static __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

static __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

#endif
#endif

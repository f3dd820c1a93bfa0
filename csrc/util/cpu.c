#include "ccomp/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* Bit set on the cached value once detection has run. */
#define CPU_DETECTED (1u << 31)

static unsigned detect(void)
{
    unsigned f = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        f |= CCOMP_CPU_SSE42;
    if (__builtin_cpu_supports("avx2"))
        f |= CCOMP_CPU_AVX2;
    if (__builtin_cpu_supports("bmi2"))
        f |= CCOMP_CPU_BMI2;
    if (__builtin_cpu_supports("avx512f"))
        f |= CCOMP_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
        f |= CCOMP_CPU_AVX512VNNI;
    {
        /* FMA and F16C from CPUID leaf 1 (ECX bits 12 and 29): clang's __builtin_cpu_supports lacks "f16c";
         * both are only used together with AVX2, whose check includes the OS's AVX state */
        unsigned a, b, c, d;
        if (__get_cpuid(1, &a, &b, &c, &d)) {
            if (c & (1u << 12))
                f |= CCOMP_CPU_FMA;
            if (c & (1u << 29))
                f |= CCOMP_CPU_F16C;
        }
    }
#elif defined(__aarch64__)
    f |= CCOMP_CPU_NEON;
#endif
    return f;
}

/* Kernels ask on every call (per tile, per query), and CPUID traps to the
 * hypervisor in a VM: the answer, a fixed property of the machine, is kept
 * after the first call.  Threads racing on the first call store the same
 * value. */
unsigned ccomp_cpu_features(void)
{
    static unsigned cached;
    unsigned f = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!(f & CPU_DETECTED)) {
        f = detect() | CPU_DETECTED;
        __atomic_store_n(&cached, f, __ATOMIC_RELAXED);
    }
    return f & ~CPU_DETECTED;
}

const char *ccomp_cpu_feature_name(unsigned flag)
{
    switch (flag) {
    case CCOMP_CPU_SSE42: return "sse4.2";
    case CCOMP_CPU_AVX2: return "avx2";
    case CCOMP_CPU_BMI2: return "bmi2";
    case CCOMP_CPU_AVX512F: return "avx512f";
    case CCOMP_CPU_NEON: return "neon";
    case CCOMP_CPU_FMA: return "fma";
    case CCOMP_CPU_F16C: return "f16c";
    case CCOMP_CPU_AVX512VNNI: return "avx512vnni";
    }
    return "unknown";
}

#include "ccomp/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

unsigned ccomp_cpu_features(void)
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
    }
    return "unknown";
}

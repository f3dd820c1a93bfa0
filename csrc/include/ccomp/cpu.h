/* CPU features detected at run time (the default build uses no -march=native). */
#ifndef CCOMP_CPU_H
#define CCOMP_CPU_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CCOMP_CPU_SSE42 = 1 << 0,
    CCOMP_CPU_AVX2 = 1 << 1,
    CCOMP_CPU_BMI2 = 1 << 2,
    CCOMP_CPU_AVX512F = 1 << 3,
    CCOMP_CPU_NEON = 1 << 4,
    CCOMP_CPU_FMA = 1 << 5,
    CCOMP_CPU_F16C = 1 << 6,
    CCOMP_CPU_AVX512VNNI = 1 << 7 /* AVX-512 VNNI together with AVX-512 BW */
};

/* Bit set of CCOMP_CPU_* flags. */
unsigned ccomp_cpu_features(void);

/* Name of one CCOMP_CPU_* flag ("sse4.2", "avx2", ...). */
const char *ccomp_cpu_feature_name(unsigned flag);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_CPU_H */

/* exp() with the same bits on every CPU and GPU, for quantizing logits.
 *
 * Libraries' exp functions differ in the last bit between platforms (glibc,
 * CUDA's libdevice), which would make a CDF computed on the GPU differ from
 * the one computed on the CPU.  This one uses only IEEE-754 double additions,
 * multiplications and rint, each rounded separately (never fused), so it is
 * reproducible: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor
 * polynomial of degree 13 (truncation error < 1e-17), times 2^k.  Relative
 * error about 2e-16 for x in [-745, 0].
 *
 * Compile C with -ffp-contract=off; CUDA code defines CCOMP_DEXP_CUDA so that
 * the operations are __dmul_rn / __dadd_rn (which nvcc never contracts). */
#ifndef CCOMP_AC_EXP_H
#define CCOMP_AC_EXP_H

#include <stdint.h>
#include <string.h>

#ifdef CCOMP_DEXP_CUDA
#define CCOMP_DEXP_FN static __device__ __forceinline__ /* __dmul_rn / __dadd_rn are device-only */
#define CCOMP_DMUL(a, b) __dmul_rn((a), (b))
#define CCOMP_DADD(a, b) __dadd_rn((a), (b))
#define CCOMP_DRINT(a) rint(a)
#else
#include <math.h>
#define CCOMP_DEXP_FN static inline
#define CCOMP_DMUL(a, b) ((a) * (b))
#define CCOMP_DADD(a, b) ((a) + (b))
#define CCOMP_DRINT(a) nearbyint(a)
#endif

/* 2^k for -1022 <= k <= 1023 */
CCOMP_DEXP_FN double ccomp_pow2i(int k)
{
    uint64_t bits = (uint64_t)(k + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* exp(x) for x <= 0 (x = -inf gives 0).  x must not be NaN. */
CCOMP_DEXP_FN double ccomp_dexp(double x)
{
    const double log2e = 0x1.71547652b82fep+0;
    const double ln2_hi = 0x1.62e42fee00000p-1; /* 32 significant bits: k * ln2_hi is exact */
    const double ln2_lo = 0x1.a39ef35793c76p-33;
    double k, r, p;
    int ki;
    if (x < -746.0) return 0.0;
    k = CCOMP_DRINT(CCOMP_DMUL(x, log2e));
    r = CCOMP_DADD(CCOMP_DADD(x, -CCOMP_DMUL(k, ln2_hi)), -CCOMP_DMUL(k, ln2_lo));
    p = 0x1.6124613a86d09p-33; /* 1/13! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.1eed8eff8d898p-29); /* 1/12! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.ae64567f544e4p-26); /* 1/11! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.27e4fb7789f5cp-22); /* 1/10! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.71de3a556c734p-19); /* 1/9! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.a01a01a01a01ap-16); /* 1/8! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.a01a01a01a01ap-13); /* 1/7! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.6c16c16c16c17p-10); /* 1/6! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.1111111111111p-7);  /* 1/5! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.5555555555555p-5);  /* 1/4! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0x1.5555555555555p-3);  /* 1/3! */
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 0.5);
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 1.0);
    p = CCOMP_DADD(CCOMP_DMUL(p, r), 1.0);
    ki = (int)k; /* in [-1077, 0] */
    if (ki >= -1022) return CCOMP_DMUL(p, ccomp_pow2i(ki));
    /* subnormal result: scale in two exact-then-rounded steps */
    return CCOMP_DMUL(CCOMP_DMUL(p, ccomp_pow2i(ki + 600)), ccomp_pow2i(-600));
}

#endif /* CCOMP_AC_EXP_H */

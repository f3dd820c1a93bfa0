#include "ccomp/half.h"

#include <string.h>

#include "ccomp/cpu.h"

uint16_t ccomp_f32_to_f16(float f)
{
    uint32_t x, sign, mant;
    int32_t exp;
    memcpy(&x, &f, sizeof x);
    sign = (x >> 16) & 0x8000u;
    exp = (int32_t)((x >> 23) & 0xffu);
    mant = x & 0x7fffffu;
    if (exp == 0xff) /* inf or NaN (NaN keeps a quiet payload bit) */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
    exp -= 127 - 15;
    if (exp >= 0x1f) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (exp <= 0) {
        /* subnormal half (or zero): shift the full significand right */
        uint32_t m, shift, half_bit, rest, r;
        if (exp < -10) return (uint16_t)sign; /* below half the smallest subnormal */
        m = mant | 0x800000u;
        shift = (uint32_t)(14 - exp);
        r = m >> shift;
        half_bit = 1u << (shift - 1);
        rest = m & ((half_bit << 1) - 1u);
        if (rest > half_bit || (rest == half_bit && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    {
        uint32_t r = ((uint32_t)exp << 10) | (mant >> 13), rest = mant & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) r++; /* may carry into the exponent: correct */
        return (uint16_t)(sign | r);
    }
}

float ccomp_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
    float f;
    if (exp == 0x1f) {
        x = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                mant <<= 1;
                e++;
            } while (!(mant & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else {
        x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    memcpy(&f, &x, sizeof f);
    return f;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint16_t *in, float *out, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(in + i))));
    for (; i < n; i++) out[i] = ccomp_f16_to_f32(in[i]);
}
#endif

void ccomp_f16_to_f32_n(const uint16_t *in, float *out, size_t n)
{
    size_t i;
#if defined(__x86_64__) && defined(__GNUC__)
    if ((ccomp_cpu_features() & (CCOMP_CPU_AVX2 | CCOMP_CPU_F16C)) == (CCOMP_CPU_AVX2 | CCOMP_CPU_F16C)) {
        f16_to_f32_f16c(in, out, n);
        return;
    }
#endif
    for (i = 0; i < n; i++) out[i] = ccomp_f16_to_f32(in[i]);
}

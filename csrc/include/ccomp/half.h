/* IEEE-754 half precision (fp16) conversions, round to nearest even, in
 * portable C (the same bits as F16C's vcvtps2ph with rounding mode 0 and as
 * NumPy's float16). */
#ifndef CCOMP_HALF_H
#define CCOMP_HALF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint16_t ccomp_f32_to_f16(float f);
float ccomp_f16_to_f32(uint16_t h);

/* out[i] = ccomp_f16_to_f32(in[i]) for i < n (F16C where the CPU has it: the same values). */
void ccomp_f16_to_f32_n(const uint16_t *in, float *out, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_HALF_H */

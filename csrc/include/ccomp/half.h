/* IEEE-754 half precision (fp16) conversions, round to nearest even, in
 * portable C (the same bits as F16C's vcvtps2ph with rounding mode 0 and as
 * NumPy's float16). */
#ifndef CCOMP_HALF_H
#define CCOMP_HALF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint16_t ccomp_f32_to_f16(float f);
float ccomp_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_HALF_H */

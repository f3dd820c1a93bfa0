/* The int8 screen of the token similarity (internal to csrc/tokens, docs/tokens.md "Screening").
 *
 * A key k (D channels) normalized in float64, x = k / max(|k|, 1e-12), is stored as s * q with q an
 * int8 vector in [-127, 127] and s a float32 scale.  Alongside: e >= |x - s q| (the residual's norm,
 * bounded with the float64 rounding of its computation) and n >= |s q|.  For two keys
 *
 *   |<x, y> - s_x s_y <q_x, q_y>| <= |x| e_y + e_x |s_y q_y| <= e_y + e_x n_y,
 *
 * and <q_x, q_y> is exact in int32 (AVX-512 VNNI: u8 x s8 dot products of 4 channels, the query
 * bytes offset by 128 and the offset taken out with the candidate's sum of q).
 *
 * Layouts (D padded to Dp, a multiple of 4, with zero channels):
 * - rows: slices of TOK8_R keys, [Dp / 4][TOK8_R][4] unsigned bytes q + 128;
 * - candidates: panels of TOK8_W keys, [Dp / 4][TOK8_W][4] signed bytes, with each column's sum of q
 *   and scale.
 * Everything here runs only where ccomp_cpu_features() has CCOMP_CPU_AVX512VNNI. */
#ifndef CCOMP_TOKENS_SCREEN8_H
#define CCOMP_TOKENS_SCREEN8_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define TOK8_BUILT 1 /* the int8 screen is compiled (x86-64); it runs where tok8_available() */
#else
#define TOK8_BUILT 0
#endif

#define TOK8_R 8  /* rows per slice */
#define TOK8_W 48 /* candidates per panel (3 x 16 int32 lanes) */

/* Whether this build and CPU run the int8 screen. */
int tok8_available(void);

#if TOK8_BUILT
/* Quantize one key of D float32 channels with inverse norm inv into q[Dp] (zeros past D); returns the
 * scale, and stores e, n and the sum of q. */
float tok8_quantize(const float *k, size_t D, size_t Dp, double inv, int8_t *q, double *e, double *n,
                    int32_t *qsum);

/* Pack nr <= TOK8_R quantized keys q[i] (Dp bytes each) into one row slice (missing rows as q = 0). */
void tok8_pack_rows(const int8_t *const *q, size_t nr, size_t Dp, uint8_t *slice);

/* Column c < TOK8_W of a panel: written from, or read into, a quantized key q[Dp]. */
void tok8_put_column(int8_t *panel, size_t c, const int8_t *q, size_t Dp);
void tok8_get_column(const int8_t *panel, size_t c, int8_t *q, size_t Dp);

/* S[i * lds + c] = float32(<q_i, q_c>) * cscale[c] * rscale[i] for the TOK8_R rows of a slice and the
 * TOK8_W columns of a panel (csum[c]: the column's sum of q). */
void tok8_tile(const uint8_t *slice, const int8_t *panel, size_t Dp, const int32_t *csum, const float *cscale,
               const float *rscale, float *S, size_t lds);
#endif

#endif

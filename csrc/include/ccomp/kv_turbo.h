/* TurboQuant-style KV-cache quantization with an optional QJL residual
 * (ccomp.kv method "turbo").
 *
 * Works on one slice like the other ccomp.kv methods (ccomp/kv.h): a
 * row-major float32 matrix of `rows` tokens by `cols` channels (D, a power of
 * two in [16, 1024]) with a row stride of `ld` elements.
 *
 * Per token row x:
 *   norm = ||x||_2 (computed in double, stored as float32);
 *   u    = x / norm (float32; all zeros when norm is 0);
 *   w    = H (s .* u), H the unnormalized Walsh-Hadamard transform (in-place
 *          butterflies, natural/Sylvester order: H[i][j] = (-1)^popcount(i&j)),
 *          s the random signs of the seed (below).  The rotated unit vector is
 *          y = w / sqrt(D), whose coordinates are ~N(0, 1/D); w is ~N(0, 1);
 *   code_j = #{k : w_j >= t_k} with t the 2^b - 1 thresholds of the
 *          standard-normal Lloyd-Max codebook of b bits (as float32), i.e.
 *          the Lloyd-Max quantizer of N(0, 1/D) applied to y_j;
 *   x'   = norm / D * s .* H c[code]   (c the centroids as float32): the
 *          inverse rotation is s .* H / sqrt(D) since H H = D I.
 * A zero row gets the codes of w = 0 (code 2^(b-1)) and dequantizes to 0.
 *
 * Codes: each token row is a little-endian bit stream of cols b-bit codes
 * (code j at bits [j b, j b + b)), cols * b / 8 bytes, as in ccomp_kv_gw.
 *
 * Random signs: the splitmix64 stream started at state = seed,
 *   state += 0x9e3779b97f4a7c15; z = state;
 *   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
 *   z ^= z >> 31;
 * one output per channel j = 0 .. D-1: s_j = -1 when the top bit of z is set, else +1.
 *
 * QJL residual (qjl = 1): r = x - x' (float32, x' as dequantized above),
 * res_norm = ||r||_2 (float32), and one sign bit per row i of S r where S
 * is the D x D Gaussian matrix of ccomp_kv_turbo_qjl_matrix(seed, D):
 * bit i (little-endian within the row's D/8 bytes) is 1 when (S r)_i >= 0
 * (sign +1), else 0 (sign -1).  Scores then add the unbiased estimate
 *   <q, r> ~= sqrt(pi/2) / D * res_norm * <S q, sign(S r)>
 * (unbiased over the draw of S).  Dequantize cannot recover r: it returns x'
 * (the MSE part), and accum (values) uses x' only; the residual bits correct
 * scores (keys) alone.
 *
 * Size: rows * (cols * b / 8 + 4) bytes, plus rows * (cols / 8 + 4) with
 * QJL, plus the 8-byte seed (ccomp_kv_turbo_bytes).
 */
#ifndef CCOMP_KV_TURBO_H
#define CCOMP_KV_TURBO_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CCOMP_KV_TURBO_MIN_COLS 16
#define CCOMP_KV_TURBO_MAX_COLS 1024
#define CCOMP_KV_TURBO_MAX_BITS 4
/* Largest row norm quantize accepts (FLT_MAX / 4): every reconstructed value, at most norm times the largest
 * centroid (2.74), stays finite. */
#define CCOMP_KV_TURBO_MAX_NORM 8.507059173023462e37

typedef struct ccomp_kv_turbo {
    size_t rows, cols;
    int bits;      /* 1 .. 4 */
    int qjl;       /* 0 or 1 */
    uint64_t seed; /* rotation signs and QJL matrix */
    uint8_t *codes;    /* rows * cols * bits / 8 bytes */
    float *norms;      /* rows */
    uint8_t *qjl_signs; /* rows * cols / 8 bytes, when qjl */
    float *res_norms;  /* rows, when qjl */
    /* When qjl: cols * cols floats holding ccomp_kv_turbo_qjl_matrix(seed, cols)
     * (not part of the compressed data: regenerate it from the seed; slices
     * with the same seed and cols may share one).  Ignored when qjl is 0. */
    const float *qjl_matrix;
} ccomp_kv_turbo;

/* CCOMP_ERR_VALUE (stating expected and received values) unless bits in
 * 1..4, qjl in {0, 1}, cols a power of two in [16, 1024]. */
ccomp_status ccomp_kv_turbo_check(size_t rows, size_t cols, int bits, int qjl, ccomp_error *err);
size_t ccomp_kv_turbo_code_bytes(size_t rows, size_t cols, int bits); /* rows * cols * bits / 8 */
size_t ccomp_kv_turbo_sign_bytes(size_t rows, size_t cols);           /* rows * cols / 8 */
/* Total compressed size in bytes: codes, float32 norms, QJL bits and
 * residual norms when qjl, and the 8-byte seed. */
size_t ccomp_kv_turbo_bytes(size_t rows, size_t cols, int bits, int qjl);

/* Fills q's codes and norms (and qjl_signs, res_norms) from x; q's rows, cols,
 * bits, qjl, seed and buffers (and qjl_matrix when qjl) are set by the caller.
 * Fails with CCOMP_ERR_VALUE on bad parameters, a NULL buffer, NaN or infinite
 * input (naming row and column), or a row whose norm is above
 * CCOMP_KV_TURBO_MAX_NORM. */
ccomp_status ccomp_kv_turbo_quantize(const float *x, size_t ld, ccomp_kv_turbo *q, ccomp_error *err);
/* out = x' (the MSE part; the QJL residual is not recoverable). */
void ccomp_kv_turbo_dequantize(const ccomp_kv_turbo *q, float *out, size_t ld);
/* s[t] = <q, x'_t> (+ the QJL estimate of <q, r_t> when qjl), for all rows t.
 * O(D log D + D^2 [qjl]) per call plus O(D) per token; stack scratch only. */
void ccomp_kv_turbo_scores(const ccomp_kv_turbo *k, const float *q, float *s);
/* o[j] += sum_t p[t] x'_t[j] (the MSE part; QJL is not used for values). */
void ccomp_kv_turbo_accum(const ccomp_kv_turbo *v, const float *p, float *o);

/* The rotation: y = H (s .* x) * c, or its inverse x = s .* H y * c with
 * c = (float)(1 / sqrt(D)) (a float32 multiply by the rounded reciprocal) when
 * inverse is nonzero (cols a power of two in [16, 1024]; x and y may alias). */
void ccomp_kv_turbo_rotate(uint64_t seed, size_t cols, const float *x, float *y, int inverse);

/* The D x D QJL matrix S (row-major, S[i][j] at i * cols + j) of a seed:
 * splitmix64 (as above) started at state = seed ^ 0xd1b54a32d192ed03; its
 * outputs taken in pairs (z1, z2) give u1 = ((z1 >> 11) + 1) * 2^-53 in (0, 1],
 * u2 = (z2 >> 11) * 2^-53, rho = sqrt(-2 ln u1) and the two standard normals
 * rho cos(2 pi u2), rho sin(2 pi u2) (in double, stored as float32), which
 * fill S in row-major order. */
void ccomp_kv_turbo_qjl_matrix(uint64_t seed, size_t cols, float *S);

/* The float32 centroids (2^bits) and thresholds (2^bits - 1, ascending) of
 * the standard-normal Lloyd-Max codebook used by quantize; NULL if bits is
 * not 1..4.  Centroids are the float32 roundings of constants computed by
 * ccomp_kv_lloyd_max (ccomp_kv_turbo_codebook); thresholds the float32
 * roundings of the midpoints 0.5 * (c[k] + c[k+1]) computed in double. */
const float *ccomp_kv_turbo_centroids(int bits);
/* The embedded double constants (2^bits centroids) behind those tables. */
const double *ccomp_kv_turbo_codebook(int bits);
const float *ccomp_kv_turbo_thresholds(int bits);

/* The standard-normal Lloyd-Max codebook of b bits (1 <= b <= 4) by Lloyd's
 * algorithm on the exact Gaussian (centroids: conditional means between
 * thresholds via pdf/erfc; thresholds: midpoints) from centroids evenly
 * spaced in (-2, 2) until no centroid moves by more than 1e-15 (other bits:
 * CCOMP_ERR_VALUE).  centroids gets 2^b
 * values, thresholds 2^b - 1 (either may be NULL), mse (may be NULL) the mean
 * squared error E[(X - Q(X))^2] for X ~ N(0, 1). */
ccomp_status ccomp_kv_lloyd_max(int bits, double *centroids, double *thresholds, double *mse, ccomp_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_KV_TURBO_H */

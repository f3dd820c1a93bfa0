/* TurboQuant-style KV quantization: random-sign Walsh-Hadamard rotation,
 * Lloyd-Max scalar codes for N(0, 1/D), optional QJL residual sign bits.
 * The format and the generators are specified in ccomp/kv_turbo.h. */
#include "ccomp/kv_turbo.h"
#include "kv_internal.h"

#include "ccomp/cancel.h"

#include <math.h>
#include <string.h>

#define MAXD CCOMP_KV_TURBO_MAX_COLS

/* ---------------------------------------------------------------- codebooks */

/* The standard-normal Lloyd-Max codebooks, the output of ccomp_kv_lloyd_max
 * (Lloyd's algorithm on the exact Gaussian, iterated until no centroid moves
 * by more than 1e-15: 2, 59, 231 and 858 iterations) printed with %.17g;
 * tests/c/test_kv_turbo.c re-derives and compares them.  MSE: 0.36338023,
 * 0.11748185, 0.03454776, 0.00950101.  Thresholds are the midpoints. */
static const double lm_c1[2] = {-0.79788456080286541, 0.79788456080286541};
static const double lm_c2[4] = {-1.5104176084990963, -0.45278003463649252, 0.45278003463649252,
                                1.5104176084990963};
static const double lm_c3[8] = {-2.1519457045369816, -1.3439092785049955, -0.7560052812058744,
                                -0.24509417894422028, 0.24509417894422028, 0.7560052812058744,
                                1.3439092785049955,  2.1519457045369816};
static const double lm_c4[16] = {-2.7325895709951475, -2.0690172265313684,  -1.6180463860218663,
                                 -1.2562311973471627, -0.94234045648695008, -0.65675911853245439,
                                 -0.38804829949028413, -0.12839502985114487, 0.12839502985114487,
                                 0.38804829949028413, 0.65675911853245439,  0.94234045648695008,
                                 1.2562311973471627,  1.6180463860218663,   2.0690172265313684,
                                 2.7325895709951475};

/* The same as float32 (centroids) and float32 midpoints (thresholds, computed
 * in double from the constants above, then rounded). */
static const float cf1[2] = {(float)-0.79788456080286541, (float)0.79788456080286541};
static const float tf1[1] = {0.0f};
static const float cf2[4] = {(float)-1.5104176084990963, (float)-0.45278003463649252, (float)0.45278003463649252,
                             (float)1.5104176084990963};
static const float tf2[3] = {(float)(0.5 * (-1.5104176084990963 + -0.45278003463649252)), 0.0f,
                             (float)(0.5 * (1.5104176084990963 + 0.45278003463649252))};
static const float cf3[8] = {(float)-2.1519457045369816,  (float)-1.3439092785049955, (float)-0.7560052812058744,
                             (float)-0.24509417894422028, (float)0.24509417894422028, (float)0.7560052812058744,
                             (float)1.3439092785049955,   (float)2.1519457045369816};
static const float tf3[7] = {(float)(0.5 * (-2.1519457045369816 + -1.3439092785049955)),
                             (float)(0.5 * (-1.3439092785049955 + -0.7560052812058744)),
                             (float)(0.5 * (-0.7560052812058744 + -0.24509417894422028)),
                             0.0f,
                             (float)(0.5 * (0.7560052812058744 + 0.24509417894422028)),
                             (float)(0.5 * (1.3439092785049955 + 0.7560052812058744)),
                             (float)(0.5 * (2.1519457045369816 + 1.3439092785049955))};
static const float cf4[16] = {
    (float)-2.7325895709951475,  (float)-2.0690172265313684,  (float)-1.6180463860218663, (float)-1.2562311973471627,
    (float)-0.94234045648695008, (float)-0.65675911853245439, (float)-0.38804829949028413, (float)-0.12839502985114487,
    (float)0.12839502985114487,  (float)0.38804829949028413,  (float)0.65675911853245439,  (float)0.94234045648695008,
    (float)1.2562311973471627,   (float)1.6180463860218663,   (float)2.0690172265313684,   (float)2.7325895709951475};
static const float tf4[15] = {(float)(0.5 * (-2.7325895709951475 + -2.0690172265313684)),
                              (float)(0.5 * (-2.0690172265313684 + -1.6180463860218663)),
                              (float)(0.5 * (-1.6180463860218663 + -1.2562311973471627)),
                              (float)(0.5 * (-1.2562311973471627 + -0.94234045648695008)),
                              (float)(0.5 * (-0.94234045648695008 + -0.65675911853245439)),
                              (float)(0.5 * (-0.65675911853245439 + -0.38804829949028413)),
                              (float)(0.5 * (-0.38804829949028413 + -0.12839502985114487)),
                              0.0f,
                              (float)(0.5 * (0.38804829949028413 + 0.12839502985114487)),
                              (float)(0.5 * (0.65675911853245439 + 0.38804829949028413)),
                              (float)(0.5 * (0.94234045648695008 + 0.65675911853245439)),
                              (float)(0.5 * (1.2562311973471627 + 0.94234045648695008)),
                              (float)(0.5 * (1.6180463860218663 + 1.2562311973471627)),
                              (float)(0.5 * (2.0690172265313684 + 1.6180463860218663)),
                              (float)(0.5 * (2.7325895709951475 + 2.0690172265313684))};

static const double *const lm_tables[5] = {NULL, lm_c1, lm_c2, lm_c3, lm_c4};
static const float *const cf_tables[5] = {NULL, cf1, cf2, cf3, cf4};
static const float *const tf_tables[5] = {NULL, tf1, tf2, tf3, tf4};

const double *ccomp_kv_turbo_codebook(int bits)
{
    return bits >= 1 && bits <= 4 ? lm_tables[bits] : NULL;
}

const float *ccomp_kv_turbo_centroids(int bits)
{
    return bits >= 1 && bits <= 4 ? cf_tables[bits] : NULL;
}

const float *ccomp_kv_turbo_thresholds(int bits)
{
    return bits >= 1 && bits <= 4 ? tf_tables[bits] : NULL;
}

/* Upper tail Q(x) = P(X > x), accurate in both tails. */
static double gauss_q(double x)
{
    return 0.5 * erfc(x / sqrt(2.0));
}

static double gauss_pdf(double x)
{
    return isinf(x) ? 0.0 : exp(-0.5 * x * x) / sqrt(2.0 * 3.14159265358979323846);
}

/* P(a < X < b), computed from the nearer tail (symmetric in sign). */
static double gauss_mass(double a, double b)
{
    if (a >= 0.0)
        return gauss_q(a) - gauss_q(b);
    if (b <= 0.0)
        return gauss_q(-b) - gauss_q(-a);
    return 1.0 - gauss_q(-a) - gauss_q(b);
}

ccomp_status ccomp_kv_lloyd_max(int bits, double *centroids, double *thresholds, double *mse, ccomp_error *err)
{
    double c[16], t[17], change = 1.0;
    int n, k;
    long it;
    if (bits < 1 || bits > 4)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "lloyd_max: bits must be 1, 2, 3 or 4, got %d", bits);
    n = 1 << bits;
    for (k = 0; k < n; k++)
        c[k] = -2.0 + 4.0 * (k + 0.5) / n;
    t[0] = -INFINITY;
    t[n] = INFINITY;
    for (it = 0; it < 1000000 && change > 1e-15; it++) {
        for (k = 1; k < n; k++)
            t[k] = 0.5 * (c[k - 1] + c[k]);
        change = 0.0;
        for (k = 0; k < n; k++) {
            double nc = (gauss_pdf(t[k]) - gauss_pdf(t[k + 1])) / gauss_mass(t[k], t[k + 1]);
            double d = fabs(nc - c[k]);
            if (d > change)
                change = d;
            c[k] = nc;
        }
    }
    if (change > 1e-15)
        return ccomp_fail(err, CCOMP_ERR_BACKEND, "lloyd_max: %d bits did not converge (last change %g)", bits,
                          change);
    for (k = 1; k < n; k++)
        t[k] = 0.5 * (c[k - 1] + c[k]);
    if (centroids != NULL)
        memcpy(centroids, c, (size_t)n * sizeof *c);
    if (thresholds != NULL)
        memcpy(thresholds, t + 1, (size_t)(n - 1) * sizeof *t);
    if (mse != NULL) {
        /* E[X^2] - E[Q(X)^2] for centroids at the conditional means */
        double e = 1.0;
        for (k = 0; k < n; k++)
            e -= c[k] * c[k] * gauss_mass(t[k], t[k + 1]);
        *mse = e;
    }
    return CCOMP_OK;
}

/* ----------------------------------------------------------------- helpers */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void make_signs(uint64_t seed, size_t d, float *s)
{
    uint64_t st = seed;
    size_t j;
    for (j = 0; j < d; j++)
        s[j] = (splitmix64(&st) >> 63) ? -1.0f : 1.0f;
}

/* In-place unnormalized Walsh-Hadamard transform (Sylvester order). */
static void fwht(float *a, size_t d)
{
    size_t h, i, j;
    for (h = 1; h < d; h <<= 1)
        for (i = 0; i < d; i += h << 1)
            for (j = i; j < i + h; j++) {
                float x = a[j], y = a[j + h];
                a[j] = x + y;
                a[j + h] = x - y;
            }
}

static int is_pow2(size_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

ccomp_status ccomp_kv_turbo_check(size_t rows, size_t cols, int bits, int qjl, ccomp_error *err)
{
    if (bits < 1 || bits > CCOMP_KV_TURBO_MAX_BITS)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "turbo: bits must be 1, 2, 3 or 4, got %d", bits);
    if (qjl != 0 && qjl != 1)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "turbo: qjl must be 0 or 1, got %d", qjl);
    if (!is_pow2(cols) || cols < CCOMP_KV_TURBO_MIN_COLS || cols > CCOMP_KV_TURBO_MAX_COLS)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "turbo: cols (head dim) must be a power of two in [%d, %d], got %zu",
                          CCOMP_KV_TURBO_MIN_COLS, CCOMP_KV_TURBO_MAX_COLS, cols);
    if (rows > ((size_t)-1) / 2 / cols)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "turbo: rows must be at most %zu for cols %zu, got %zu",
                          ((size_t)-1) / 2 / cols, cols, rows);
    return CCOMP_OK;
}

size_t ccomp_kv_turbo_code_bytes(size_t rows, size_t cols, int bits)
{
    return rows * (cols * (size_t)bits / 8);
}

size_t ccomp_kv_turbo_sign_bytes(size_t rows, size_t cols)
{
    return rows * (cols / 8);
}

size_t ccomp_kv_turbo_bytes(size_t rows, size_t cols, int bits, int qjl)
{
    size_t n = ccomp_kv_turbo_code_bytes(rows, cols, bits) + rows * sizeof(float) + sizeof(uint64_t);
    if (qjl)
        n += ccomp_kv_turbo_sign_bytes(rows, cols) + rows * sizeof(float);
    return n;
}

void ccomp_kv_turbo_rotate(uint64_t seed, size_t cols, const float *x, float *y, int inverse)
{
    float s[MAXD];
    const float scale = (float)(1.0 / sqrt((double)cols));
    size_t j;
    make_signs(seed, cols, s);
    if (!inverse) {
        for (j = 0; j < cols; j++)
            y[j] = s[j] * x[j];
        fwht(y, cols);
        for (j = 0; j < cols; j++)
            y[j] *= scale;
    } else {
        if (y != x)
            memmove(y, x, cols * sizeof *y);
        fwht(y, cols);
        for (j = 0; j < cols; j++)
            y[j] = s[j] * (y[j] * scale);
    }
}

void ccomp_kv_turbo_qjl_matrix(uint64_t seed, size_t cols, float *S)
{
    const double two_pi = 6.283185307179586476925;
    uint64_t st = seed ^ 0xd1b54a32d192ed03ull;
    size_t n = cols * cols, i;
    for (i = 0; i < n; i += 2) {
        uint64_t z1 = splitmix64(&st), z2 = splitmix64(&st);
        double u1 = (double)((z1 >> 11) + 1) * 0x1.0p-53;
        double u2 = (double)(z2 >> 11) * 0x1.0p-53;
        double rho = sqrt(-2.0 * log(u1));
        S[i] = (float)(rho * cos(two_pi * u2));
        if (i + 1 < n)
            S[i + 1] = (float)(rho * sin(two_pi * u2));
    }
}

/* y = S v for the D x D matrix S (each output summed in index order; four
 * rows at a time for instruction-level parallelism). */
static void matvec(const float *S, size_t d, const float *v, float *y)
{
    size_t i, j;
    for (i = 0; i < d; i += 4) {
        const float *r0 = S + i * d, *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (j = 0; j < d; j++) {
            a0 += r0[j] * v[j];
            a1 += r1[j] * v[j];
            a2 += r2[j] * v[j];
            a3 += r3[j] * v[j];
        }
        y[i] = a0;
        y[i + 1] = a1;
        y[i + 2] = a2;
        y[i + 3] = a3;
    }
}

/* Packs d b-bit codes (d % 8 == 0) into d * b / 8 bytes, little-endian. */
static void pack_codes(const uint8_t *code, size_t d, int b, uint8_t *out)
{
    size_t g, k;
    for (g = 0; g < d; g += 8) {
        uint32_t acc = 0;
        for (k = 0; k < 8; k++)
            acc |= (uint32_t)code[g + k] << (k * (unsigned)b);
        for (k = 0; k < (size_t)b; k++)
            *out++ = (uint8_t)(acc >> (8 * k));
    }
}

static inline uint32_t load_group(const uint8_t *p, int b)
{
    uint32_t acc = 0;
    int k;
    for (k = 0; k < b; k++)
        acc |= (uint32_t)p[k] << (8 * k);
    return acc;
}

/* Centroid values of one row's codes: out[j] = cent[code_j] * mul. */
static inline void decode_row(const uint8_t *row, size_t d, int b, const float *cent, float *out)
{
    const uint32_t mask = (1u << b) - 1u;
    size_t g;
    int k;
    for (g = 0; g < d; g += 8, row += b) {
        uint32_t acc = load_group(row, b);
        for (k = 0; k < 8; k++)
            out[g + (size_t)k] = cent[(acc >> (k * b)) & mask];
    }
}

/* ------------------------------------------------------------------ kernels */

ccomp_status ccomp_kv_turbo_quantize(const float *x, size_t ld, ccomp_kv_turbo *q, ccomp_error *err)
{
    float s[MAXD], w[MAXD], xr[MAXD], sr[MAXD];
    uint8_t code[MAXD];
    const float *cent, *thr;
    size_t d, t, j, rb, sb;
    int b, nt, k;
    ccomp_status st;
    if (q == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "turbo: quantize needs a ccomp_kv_turbo, got NULL");
    st = ccomp_kv_turbo_check(q->rows, q->cols, q->bits, q->qjl, err);
    if (st != CCOMP_OK)
        return st;
    d = q->cols;
    b = q->bits;
    if (ld < d)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "turbo: row stride ld must be at least cols = %zu, got %zu", d, ld);
    if (q->rows == 0)
        return CCOMP_OK;
    if (x == NULL || q->codes == NULL || q->norms == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "turbo: input, codes and norms must be non-NULL buffers");
    if (q->qjl && (q->qjl_signs == NULL || q->res_norms == NULL || q->qjl_matrix == NULL))
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "turbo: qjl = 1 needs non-NULL qjl_signs, res_norms and qjl_matrix buffers");
    cent = cf_tables[b];
    thr = tf_tables[b];
    nt = (1 << b) - 1;
    rb = d * (size_t)b / 8;
    sb = d / 8;
    make_signs(q->seed, d, s);
    for (t = 0; t < q->rows; t++) {
        const float *xt = x + t * ld;
        double ss = 0.0;
        float norm;
        if ((t & 15) == 0 && (st = ccomp_check_cancel(err, "turbo quantize")) != CCOMP_OK) return st;
        for (j = 0; j < d; j++) {
            if (!isfinite(xt[j]))
                return ccomp_fail(err, CCOMP_ERR_VALUE,
                                  "element (token %zu, channel %zu) is %s", t, j,
                                  isnan(xt[j]) ? "NaN" : "infinite");
            ss += (double)xt[j] * (double)xt[j];
        }
        norm = (float)sqrt(ss);
        if (!(sqrt(ss) <= CCOMP_KV_TURBO_MAX_NORM)) /* x' reaches norm * max|c| < 4 norm: keep it finite */
            return ccomp_fail(err, CCOMP_ERR_VALUE,
                              "turbo: row norm must be at most %g (FLT_MAX / 4, so that the reconstruction stays "
                              "finite), got %g at row %zu",
                              CCOMP_KV_TURBO_MAX_NORM, sqrt(ss), t);
        q->norms[t] = norm;
        for (j = 0; j < d; j++)
            w[j] = norm > 0.0f ? s[j] * (xt[j] / norm) : 0.0f;
        fwht(w, d);
        for (j = 0; j < d; j++) {
            int c = 0;
            for (k = 0; k < nt; k++)
                c += w[j] >= thr[k];
            code[j] = (uint8_t)c;
        }
        pack_codes(code, d, b, q->codes + t * rb);
        if (q->qjl) {
            const float scale = norm / (float)d;
            double rs = 0.0;
            uint8_t *sg = q->qjl_signs + t * sb;
            for (j = 0; j < d; j++)
                xr[j] = cent[code[j]];
            fwht(xr, d);
            for (j = 0; j < d; j++) {
                float r = xt[j] - scale * (s[j] * xr[j]);
                xr[j] = r;
                rs += (double)r * (double)r;
            }
            q->res_norms[t] = (float)sqrt(rs);
            if (isinf(q->res_norms[t]) || isnan(q->res_norms[t]))
                return ccomp_fail(err, CCOMP_ERR_VALUE,
                                  "turbo: the QJL residual norm of row %zu overflows float32 (row norm %g)", t,
                                  (double)norm);
            matvec(q->qjl_matrix, d, xr, sr);
            for (j = 0; j < sb; j++) {
                unsigned byte = 0, i;
                for (i = 0; i < 8; i++)
                    byte |= (unsigned)(sr[8 * j + i] >= 0.0f) << i;
                sg[j] = (uint8_t)byte;
            }
        }
    }
    return CCOMP_OK;
}

void ccomp_kv_turbo_dequantize(const ccomp_kv_turbo *q, float *out, size_t ld)
{
    float s[MAXD], h[MAXD];
    const size_t d = q->cols;
    const size_t rb = d * (size_t)q->bits / 8;
    const float *cent = cf_tables[q->bits];
    size_t t, j;
    make_signs(q->seed, d, s);
    for (t = 0; t < q->rows; t++) {
        const float scale = q->norms[t] / (float)d;
        float *o = out + t * ld;
        decode_row(q->codes + t * rb, d, q->bits, cent, h);
        fwht(h, d);
        for (j = 0; j < d; j++)
            o[j] = scale * (s[j] * h[j]);
    }
}

/* sum_j qh[j] * cent[code_j] over one packed row, for a constant b. */
static inline float row_dot(const uint8_t *row, size_t d, int b, const float *cent, const float *qh)
{
    const uint32_t mask = (1u << b) - 1u;
    float total = 0.0f;
    size_t g;
    int k;
    for (g = 0; g < d; g += 8, row += b) {
        uint32_t acc = load_group(row, b);
        float part = 0.0f;
        for (k = 0; k < 8; k++)
            part += qh[g + (size_t)k] * cent[(acc >> (k * b)) & mask];
        total += part;
    }
    return total;
}

/* o_rot[j] += a * cent[code_j] over one packed row, for a constant b. */
static inline void row_axpy(const uint8_t *row, size_t d, int b, const float *cent, float a, float *orot)
{
    const uint32_t mask = (1u << b) - 1u;
    size_t g;
    int k;
    for (g = 0; g < d; g += 8, row += b) {
        uint32_t acc = load_group(row, b);
        for (k = 0; k < 8; k++)
            orot[g + (size_t)k] += a * cent[(acc >> (k * b)) & mask];
    }
}

#define DISPATCH_BITS(b, CALL)                                                                                         \
    switch (b) {                                                                                                       \
    case 1: CALL(1); break;                                                                                            \
    case 2: CALL(2); break;                                                                                            \
    case 3: CALL(3); break;                                                                                            \
    default: CALL(4); break;                                                                                           \
    }

void ccomp_kv_turbo_scores(const ccomp_kv_turbo *k, const float *q, float *s)
{
    float sg[MAXD], qh[MAXD], sq[MAXD];
    const size_t d = k->cols, rows = k->rows;
    const size_t rb = d * (size_t)k->bits / 8, sb = d / 8;
    const float *cent = cf_tables[k->bits];
    size_t t, j;
    if (rows == 0)
        return;
    make_signs(k->seed, d, sg);
    for (j = 0; j < d; j++)
        qh[j] = sg[j] * q[j];
    fwht(qh, d);
    for (j = 0; j < d; j++)
        qh[j] /= (float)d;
#define SCORE_LOOP(B)                                                                                                  \
    for (t = 0; t < rows; t++)                                                                                         \
        s[t] = k->norms[t] * row_dot(k->codes + t * rb, d, B, cent, qh);
    DISPATCH_BITS(k->bits, SCORE_LOOP)
#undef SCORE_LOOP
    if (k->qjl) {
        /* sqrt(pi/2) / m * ||r|| * <S q, sign(S r)> with m = D */
        const float c = (float)(1.2533141373155002512 / (double)d);
        matvec(k->qjl_matrix, d, q, sq);
        for (j = 0; j < d; j++)
            sq[j] *= c;
        for (t = 0; t < rows; t++) {
            const uint8_t *bits = k->qjl_signs + t * sb;
            float total = 0.0f;
            for (j = 0; j < sb; j++) {
                const unsigned byte = bits[j];
                float part = 0.0f;
                unsigned i;
                for (i = 0; i < 8; i++)
                    part += ((byte >> i) & 1u) ? sq[8 * j + i] : -sq[8 * j + i];
                total += part;
            }
            s[t] += k->res_norms[t] * total;
        }
    }
}

void ccomp_kv_turbo_accum(const ccomp_kv_turbo *v, const float *p, float *o)
{
    float sg[MAXD], orot[MAXD];
    const size_t d = v->cols, rows = v->rows;
    const size_t rb = d * (size_t)v->bits / 8;
    const float *cent = cf_tables[v->bits];
    size_t t, j;
    if (rows == 0)
        return;
    memset(orot, 0, d * sizeof *orot);
#define ACCUM_LOOP(B)                                                                                                  \
    for (t = 0; t < rows; t++) {                                                                                       \
        const float a = p[t] * v->norms[t];                                                                            \
        if (a != 0.0f)                                                                                                 \
            row_axpy(v->codes + t * rb, d, B, cent, a, orot);                                                          \
    }
    DISPATCH_BITS(v->bits, ACCUM_LOOP)
#undef ACCUM_LOOP
    make_signs(v->seed, d, sg);
    fwht(orot, d);
    for (j = 0; j < d; j++)
        o[j] += sg[j] * (orot[j] / (float)d);
}

/* ------------------------------------------------------------ the method row */

KV_FITS_STORAGE(ccomp_kv_turbo);

static ccomp_status tb_layout(size_t rows, size_t cols, const ccomp_kv_params *p, ccomp_kv_layout *L,
                              ccomp_error *err)
{
    ccomp_status st = ccomp_kv_turbo_check(rows, cols, p->bits, p->qjl, err);
    if (st != CCOMP_OK) return st;
    kv_layout_add(L, "codes", "u1", ccomp_kv_turbo_code_bytes(rows, cols, p->bits));
    kv_layout_add(L, "norms", "f4", rows);
    if (p->qjl) {
        kv_layout_add(L, "signs", "u1", ccomp_kv_turbo_sign_bytes(rows, cols));
        kv_layout_add(L, "res_norms", "f4", rows);
        L->aux_floats = cols * cols; /* the QJL matrix, shared by every slice */
    }
    return CCOMP_OK;
}
static void tb_prepare(const ccomp_kv_layout *L, float *aux)
{
    if (L->p.qjl) ccomp_kv_turbo_qjl_matrix(L->p.seed, L->cols, aux);
}
static void tb_view(const ccomp_kv_layout *L, void *const *arrays, const float *aux, ccomp_kv_view *v)
{
    ccomp_kv_turbo *t = (ccomp_kv_turbo *)&v->u;
    t->rows = L->rows;
    t->cols = L->cols;
    t->bits = L->p.bits;
    t->qjl = L->p.qjl;
    t->seed = L->p.seed;
    t->codes = (uint8_t *)arrays[0];
    t->norms = (float *)arrays[1];
    if (L->p.qjl) {
        t->qjl_signs = (uint8_t *)arrays[2];
        t->res_norms = (float *)arrays[3];
        t->qjl_matrix = aux;
    }
    v->slice.data = t;
}
static ccomp_status tb_quantize(const ccomp_kv_layout *L, const float *x, size_t ld, const ccomp_kv_slice *s,
                                ccomp_error *err)
{
    (void)L;
    return ccomp_kv_turbo_quantize(x, ld, (ccomp_kv_turbo *)s->data, err);
}
static void tb_scores(const ccomp_kv_slice *k, const float *q, float *s)
{
    ccomp_kv_turbo_scores((const ccomp_kv_turbo *)k->data, q, s);
}
static void tb_accum(const ccomp_kv_slice *v, const float *p, float *o)
{
    ccomp_kv_turbo_accum((const ccomp_kv_turbo *)v->data, p, o);
}
static void tb_sub(const ccomp_kv_slice *s, size_t r0, size_t n, ccomp_kv_storage *u, ccomp_kv_slice *out)
{
    ccomp_kv_turbo *t = (ccomp_kv_turbo *)u;
    *t = *(const ccomp_kv_turbo *)s->data;
    t->rows = n;
    t->codes += r0 * (s->cols / 8u) * (size_t)t->bits;
    t->norms += r0;
    if (t->qjl) { /* the residual's sign bits and norms follow the rows too */
        t->qjl_signs += r0 * (s->cols / 8u);
        t->res_norms += r0;
    }
    out->data = t;
}
static const float *tb_rows(const ccomp_kv_slice *t, float *buf)
{
    ccomp_kv_turbo_dequantize((const ccomp_kv_turbo *)t->data, buf, t->cols);
    return buf;
}
/* with QJL, a score adds the residual's sketch estimate: not a dot product with the dequantized row */
static int tb_scores_are_dots(const ccomp_kv_slice *k)
{
    return !((const ccomp_kv_turbo *)k->data)->qjl;
}

const ccomp_kv_method ccomp_kv_method_turbo = {
    .name = "turbo",
    .params = "bits qjl seed",
    .layout = tb_layout,
    .prepare = tb_prepare,
    .view = tb_view,
    .quantize = tb_quantize,
    .scores = tb_scores,
    .accum = tb_accum,
    .sub = tb_sub,
    .rows = tb_rows,
    .accum_steps_exact = kv_never,
    .scores_are_dots = tb_scores_are_dots,
};

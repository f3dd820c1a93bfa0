/* The sketch format: shape checks, code packing, table element types. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ccomp/half.h"
#include "ccomp/parallel.h"
#include "sketch_internal.h"

size_t ccomp_sketch_dtype_size(int dtype)
{
    switch (dtype) {
    case CCOMP_SKETCH_F32: return 4;
    case CCOMP_SKETCH_F16:
    case CCOMP_SKETCH_BF16: return 2;
    case CCOMP_SKETCH_F64: return 8;
    }
    return 0;
}

size_t ccomp_sketch_group_bytes(size_t n, int bits)
{
    return (n * (size_t)bits + 7u) / 8u;
}

size_t ccomp_sketch_code_bytes(size_t rows, size_t cols, size_t groups, int bits)
{
    return groups ? rows * groups * ccomp_sketch_group_bytes(cols / groups, bits) : 0;
}

size_t ccomp_sketch_table_entries(size_t rows, size_t groups, int bits)
{
    return rows * groups * ((size_t)1 << bits);
}

ccomp_status ccomp_sketch_check(size_t rows, size_t cols, size_t groups, int bits, int dtype, ccomp_error *err)
{
    const size_t limit = (size_t)1 << 40; /* keeps every product below of size_t range */
    if (bits < 2 || bits > CCOMP_SKETCH_MAX_BITS)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "bits must be 2, 3 or 4, got %d", bits);
    if (ccomp_sketch_dtype_size(dtype) == 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "unknown table type %d (expected float32, float16, bfloat16 or "
                          "float64)", dtype);
    if (rows == 0 || cols == 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "the weight matrix must have at least one row and one column, got "
                          "%zu x %zu", rows, cols);
    if (rows > limit || cols > limit || rows * (cols / 8 + 1) > limit)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "the weight matrix %zu x %zu is too large", rows, cols);
    if (groups == 0 || groups > cols || cols % groups != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "in_features (%zu) must be divisible by groups (%zu), with "
                          "1 <= groups <= in_features", cols, groups);
    return CCOMP_OK;
}

/* ------------------------------------------------------------- packing */

ccomp_status ccomp_sketch_pack(const uint8_t *codes, size_t rows, size_t cols, size_t groups, int bits,
                               uint8_t *packed, ccomp_error *err)
{
    ccomp_status st = ccomp_sketch_check(rows, cols, groups, bits, CCOMP_SKETCH_F32, err);
    size_t n, gb, r, g, j;
    if (st != CCOMP_OK) return st;
    n = cols / groups;
    gb = ccomp_sketch_group_bytes(n, bits);
    for (r = 0; r < rows; r++)
        for (j = 0; j < cols; j++)
            if (codes[r * cols + j] >> bits)
                return ccomp_fail(err, CCOMP_ERR_VALUE, "code %u at (%zu, %zu) is out of range: %d-bit codes are "
                                  "0 .. %d", codes[r * cols + j], r, j, bits, (1 << bits) - 1);
    for (r = 0; r < rows; r++)
        for (g = 0; g < groups; g++) {
            const uint8_t *c = codes + r * cols + g * n;
            uint8_t *out = packed + (r * groups + g) * gb;
            uint32_t acc = 0;
            unsigned have = 0;
            size_t o = 0;
            for (j = 0; j < n; j++) {
                acc = acc << bits | c[j];
                have += (unsigned)bits;
                if (have >= 8) {
                    have -= 8;
                    out[o++] = (uint8_t)(acc >> have);
                    acc &= (1u << have) - 1u;
                }
            }
            if (have) out[o++] = (uint8_t)(acc << (8 - have));
        }
    return CCOMP_OK;
}

ccomp_status ccomp_sketch_unpack(const uint8_t *packed, size_t rows, size_t cols, size_t groups, int bits,
                                 uint8_t *codes, ccomp_error *err)
{
    ccomp_status st = ccomp_sketch_check(rows, cols, groups, bits, CCOMP_SKETCH_F32, err);
    size_t n, gb, r, g, j;
    unsigned pad;
    if (st != CCOMP_OK) return st;
    n = cols / groups;
    gb = ccomp_sketch_group_bytes(n, bits);
    pad = (unsigned)(gb * 8 - n * (size_t)bits);
    for (r = 0; r < rows; r++)
        for (g = 0; g < groups; g++) {
            const uint8_t *run = packed + (r * groups + g) * gb;
            if (pad && (run[gb - 1] & ((1u << pad) - 1u)))
                return ccomp_fail(err, CCOMP_ERR_CORRUPT, "row %zu group %zu: the %u padding bits after the last "
                                  "code are not zero", r, g, pad);
            for (j = 0; j < n; j++) codes[r * cols + g * n + j] = (uint8_t)sk_code_at(run, j, bits);
        }
    return CCOMP_OK;
}

/* ------------------------------------------------------- element types */

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* float32 nearest to v with round-to-odd: the float32 value when exact,
 * otherwise v truncated toward zero with its lowest bit set, so that a second
 * rounding to fewer bits (half, bfloat16) equals the direct rounding of v. */
static float round_odd_f32(double v)
{
    float f = (float)v;
    uint32_t u;
    if (isnan(v) || isinf(f) || (double)f == v) return f;
    if (fabs((double)f) > fabs(v)) f = nextafterf(f, 0.0f);
    u = f32_bits(f) | 1u;
    return bits_f32(u);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays a quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

double ccomp_sketch_round(double v, int dtype)
{
    switch (dtype) {
    case CCOMP_SKETCH_F32: return (double)(float)v;
    case CCOMP_SKETCH_F16: return (double)ccomp_f16_to_f32(ccomp_f32_to_f16(round_odd_f32(v)));
    case CCOMP_SKETCH_BF16: return (double)bf16_to_f32(f32_to_bf16(round_odd_f32(v)));
    default: return v;
    }
}

double ccomp_sketch_table_get(const void *tables, int dtype, size_t i)
{
    switch (dtype) {
    case CCOMP_SKETCH_F32: return (double)((const float *)tables)[i];
    case CCOMP_SKETCH_F16: return (double)ccomp_f16_to_f32(((const uint16_t *)tables)[i]);
    case CCOMP_SKETCH_BF16: return (double)bf16_to_f32(((const uint16_t *)tables)[i]);
    default: return ((const double *)tables)[i];
    }
}

void ccomp_sketch_table_set(void *tables, int dtype, size_t i, double v)
{
    switch (dtype) {
    case CCOMP_SKETCH_F32: ((float *)tables)[i] = (float)v; break;
    case CCOMP_SKETCH_F16: ((uint16_t *)tables)[i] = ccomp_f32_to_f16(round_odd_f32(v)); break;
    case CCOMP_SKETCH_BF16: ((uint16_t *)tables)[i] = f32_to_bf16(round_odd_f32(v)); break;
    default: ((double *)tables)[i] = v; break;
    }
}

void sk_table_f64(const ccomp_sketch *s, size_t r, size_t g, double *out)
{
    size_t K = (size_t)1 << s->bits, base = (r * s->groups + g) * K, k;
    for (k = 0; k < K; k++) out[k] = ccomp_sketch_table_get(s->tables, s->dtype, base + k);
}

void sk_table_f32(const ccomp_sketch *s, size_t r, size_t g, float *out)
{
    size_t K = (size_t)1 << s->bits, base = (r * s->groups + g) * K, k;
    for (k = 0; k < K; k++) out[k] = (float)ccomp_sketch_table_get(s->tables, s->dtype, base + k);
}

/* ---------------------------------------------------------- dequantize */

typedef struct deq_job {
    const ccomp_sketch *s;
    int prec;
    void *out;
} deq_job;

#define DEQ_ROWS 16

static ccomp_status deq_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    const deq_job *j = (const deq_job *)ctx;
    const ccomp_sketch *s = j->s;
    size_t n = sk_group_cols(s), r, g, c, r1 = (task + 1) * DEQ_ROWS;
    (void)state;
    (void)err;
    if (r1 > s->rows) r1 = s->rows;
    for (r = task * DEQ_ROWS; r < r1; r++)
        for (g = 0; g < s->groups; g++) {
            const uint8_t *run = sk_run(s, r, g);
            double t[CCOMP_SKETCH_MAX_ENTRIES];
            sk_table_f64(s, r, g, t);
            if (j->prec == CCOMP_SKETCH_F64) {
                double *o = (double *)j->out + r * s->cols + g * n;
                for (c = 0; c < n; c++) o[c] = t[sk_code_at(run, c, s->bits)];
            } else {
                float *o = (float *)j->out + r * s->cols + g * n;
                for (c = 0; c < n; c++) o[c] = (float)t[sk_code_at(run, c, s->bits)];
            }
        }
    return CCOMP_OK;
}

ccomp_status ccomp_sketch_dequantize(const ccomp_sketch *s, int prec, void *out, int threads, ccomp_error *err)
{
    ccomp_parallel_ops ops = {NULL, deq_run, NULL};
    deq_job j;
    ccomp_status st = ccomp_sketch_check(s->rows, s->cols, s->groups, s->bits, s->dtype, err);
    if (st != CCOMP_OK) return st;
    if (prec != CCOMP_SKETCH_F32 && prec != CCOMP_SKETCH_F64)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "precision must be float32 or float64, got type %d", prec);
    j.s = s;
    j.prec = prec;
    j.out = out;
    return ccomp_parallel_for(threads, (s->rows + DEQ_ROWS - 1) / DEQ_ROWS, &ops, &j, err);
}

/* The sketch kernels: the reference loops (the specification, and the float64
 * path), and the threaded entry points that pick the AVX2 float32 kernels
 * when the CPU has them.
 *
 * Work split (each task owns its outputs, so any thread count gives the same
 * bits): matmul and grad_tables over blocks of W rows, grad_input over blocks
 * of 32 columns.
 *
 * float32 matmul at batches from SK_GEMM_MIN_BATCH (below the AVX-512 GEMV's
 * range) and grad_input: W is decoded to float32 in blocks (48 rows of a
 * matmul task; a 32-column panel of every row for grad_input) and multiplied
 * with the shared register-tiled kernel of util/tile.h, x packed once per
 * call into 32-row panels for the matmul.  Each output is one chain of fused
 * multiply-adds in column (or row) order, whatever the blocking. */
#include <stdlib.h>
#include <string.h>

#include "../util/tile.h"
#include "ccomp/cancel.h"
#include "ccomp/parallel.h"
#include "sketch_internal.h"

#define GEMM_WROWS 48           /* matmul (tiled): W rows per task, 4 times the tile's rows */
#define GEMM_KC 256             /* columns per K block: the x panel block (32 KB) stays in L1 */
#define GI_COLS CCOMP_TILE_W    /* grad_input: columns per task */
#define GT_TILED_MIN_BATCH 32   /* grad_tables: the tile kernel from this batch (below, the 4 x 16 blocks) */

/* x / y element i in precision prec */
static inline double ld_val(const void *p, int prec, size_t i)
{
    return prec == CCOMP_SKETCH_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static inline void st_val(void *p, int prec, size_t i, double v)
{
    if (prec == CCOMP_SKETCH_F64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* ------------------------------------------------------------ reference */

void sk_matmul_rows_ref(const ccomp_sketch *s, const void *x, size_t n, int prec, void *y, size_t r0, size_t r1)
{
    size_t gn = sk_group_cols(s), i, r, g, j;
    double t[CCOMP_SKETCH_MAX_ENTRIES];
    for (r = r0; r < r1; r++)
        for (i = 0; i < n; i++) {
            double acc = 0.0;
            for (g = 0; g < s->groups; g++) {
                const uint8_t *run = sk_run(s, r, g);
                sk_table_f64(s, r, g, t);
                for (j = 0; j < gn; j++) acc += t[sk_code_at(run, j, s->bits)] * ld_val(x, prec, i * s->cols + g * gn + j);
            }
            st_val(y, prec, i * s->rows + r, acc);
        }
}

void sk_grad_tables_rows_ref(const ccomp_sketch *s, const void *x, const void *gy, size_t n, int prec, void *gt,
                             size_t r0, size_t r1)
{
    size_t gn = sk_group_cols(s), K = (size_t)1 << s->bits, i, r, g, j, k;
    for (r = r0; r < r1; r++)
        for (g = 0; g < s->groups; g++) {
            const uint8_t *run = sk_run(s, r, g);
            double acc[CCOMP_SKETCH_MAX_ENTRIES] = {0};
            for (j = 0; j < gn; j++) {
                double d = 0.0;
                for (i = 0; i < n; i++) d += ld_val(gy, prec, i * s->rows + r) * ld_val(x, prec, i * s->cols + g * gn + j);
                acc[sk_code_at(run, j, s->bits)] += d;
            }
            for (k = 0; k < K; k++) st_val(gt, prec, (r * s->groups + g) * K + k, acc[k]);
        }
}

void sk_grad_input_cols_ref(const ccomp_sketch *s, const void *gy, size_t n, int prec, void *gx, size_t c0,
                            size_t c1)
{
    size_t gn = sk_group_cols(s), i, r, c;
    for (i = 0; i < n; i++)
        for (c = c0; c < c1; c++) {
            size_t g = c / gn, j = c - g * gn;
            double acc = 0.0;
            for (r = 0; r < s->rows; r++) {
                size_t K = (size_t)1 << s->bits;
                double w = ccomp_sketch_table_get(s->tables, s->dtype,
                                                  (r * s->groups + g) * K + sk_code_at(sk_run(s, r, g), j, s->bits));
                acc += ld_val(gy, prec, i * s->rows + r) * w;
            }
            st_val(gx, prec, i * s->cols + c, acc);
        }
}

void ccomp_sketch_matmul_ref(const ccomp_sketch *s, const void *x, size_t n, int prec, void *y)
{
    sk_matmul_rows_ref(s, x, n, prec, y, 0, s->rows);
}

void ccomp_sketch_grad_tables_ref(const ccomp_sketch *s, const void *x, const void *gy, size_t n, int prec, void *gt)
{
    sk_grad_tables_rows_ref(s, x, gy, n, prec, gt, 0, s->rows);
}

void ccomp_sketch_grad_input_ref(const ccomp_sketch *s, const void *gy, size_t n, int prec, void *gx)
{
    sk_grad_input_cols_ref(s, gy, n, prec, gx, 0, s->cols);
}

/* ------------------------------------------------------------- dispatch */

const char *ccomp_sketch_kernel_name(void)
{
    if (sk_avx2_ok()) return sk_avx512_ok() ? "avx512+avx2" : "avx2";
    return "scalar";
}

enum { K_MATMUL, K_GRAD_TABLES, K_GRAD_INPUT };

typedef struct kernel_job {
    const ccomp_sketch *s;
    const void *x, *gy;
    void *out;
    size_t n;
    int prec, kind, simd;
    int gemv512;              /* matmul: the AVX-512 GEMV on x (interleaved for 4 bits) */
    int tiled;                /* matmul / grad_input: decoded blocks and the tile kernel */
    int tile_kern;            /* util/tile.h's kernel */
    const float *xp;          /* tiled matmul: x packed [xblocks][cols][32]; grad_tables: [panels][n][32] */
    const float *gyT;         /* tiled grad_tables: gy transposed [rows][n] */
    size_t xblocks;
    size_t rows_per_task;     /* matmul, grad_tables */
    size_t scratch_floats;    /* per worker */
} kernel_job;

static ccomp_status job_init(void *ctx, int worker, void **state, ccomp_error *err)
{
    const kernel_job *j = (const kernel_job *)ctx;
    (void)worker;
    *state = NULL;
    if (!j->simd) return CCOMP_OK;
    *state = malloc(j->scratch_floats * sizeof(float) + 64);
    if (*state == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a %zu-byte tile",
                                          j->scratch_floats * sizeof(float));
    return CCOMP_OK;
}

static void job_fini(void *ctx, void *state)
{
    (void)ctx;
    free(state);
}

static float *scratch_of(void *state)
{
    uintptr_t p = (uintptr_t)state;
    return (float *)((p + 63u) & ~(uintptr_t)63u);
}

/* y[:, r0:r1] of the tiled matmul: decode the rows, then per 32-row panel of x and K block the tile kernel
 * into ct, transposed into y at the end. */
static void gemm_rows(const kernel_job *j, size_t r0, size_t r1, float *buf)
{
    const ccomp_sketch *s = j->s;
    const size_t cols = s->cols, rows = s->rows, nr = r1 - r0, W = CCOMP_TILE_W;
    float *wd = buf, *ct = buf + GEMM_WROWS * cols, *y = (float *)j->out;
    size_t blk, kb, rr, q, r;
    sk_decode_rows_avx2(s, r0, nr, 0, cols, wd, cols);
    for (blk = 0; blk < j->xblocks; blk++) {
        const float *P = j->xp + blk * cols * W;
        if (ccomp_cancelled()) return; /* a long batch; job_run reports it */
        const size_t qn = j->n - blk * W < W ? j->n - blk * W : W;
        for (kb = 0; kb < cols; kb += GEMM_KC) {
            const size_t kc = cols - kb < GEMM_KC ? cols - kb : GEMM_KC;
            for (rr = 0; rr < nr; rr += CCOMP_TILE_R)
                ccomp_tile_nt(j->tile_kern, wd + rr * cols + kb, cols, nr - rr, P + kb * W, kc, ct + rr * W, W,
                              kb > 0);
        }
        for (q = 0; q < qn; q++) {
            float *yq = y + (blk * W + q) * rows + r0;
            for (r = 0; r < nr; r++) yq[r] = ct[r * W + q];
        }
    }
}

/* gx[:, c0:c1) (c1 - c0 <= 32): decode the 32-column panel of every W row, then the tile kernel over
 * blocks of 12 rows of gy. */
static void grad_input_cols(const kernel_job *j, size_t c0, size_t c1, float *buf)
{
    const ccomp_sketch *s = j->s;
    const size_t rows = s->rows, cols = s->cols, width = c1 - c0, W = CCOMP_TILE_W;
    const float *gy = (const float *)j->gy;
    float *P = buf, *ct = buf + rows * W, *gx = (float *)j->out;
    size_t i, kb, r, q;
    sk_decode_rows_avx2(s, 0, rows, c0, c1, P, W);
    if (width < W)
        for (r = 0; r < rows; r++) memset(P + r * W + width, 0, (W - width) * sizeof(float));
    for (i = 0; i < j->n; i += CCOMP_TILE_R) {
        const size_t R = j->n - i < CCOMP_TILE_R ? j->n - i : CCOMP_TILE_R;
        if ((i & 1023) == 0 && ccomp_cancelled()) return; /* a long batch; job_run reports it */
        float *C = width == W ? gx + i * cols + c0 : ct;
        const size_t ldc = width == W ? cols : W;
        for (kb = 0; kb < rows; kb += GEMM_KC) {
            const size_t kc = rows - kb < GEMM_KC ? rows - kb : GEMM_KC;
            ccomp_tile_nt(j->tile_kern, gy + i * rows + kb, rows, R, P + kb * W, kc, C, ldc, kb > 0);
        }
        if (width < W)
            for (r = 0; r < R; r++)
                for (q = 0; q < width; q++) gx[(i + r) * cols + c0 + q] = ct[r * W + q];
    }
}

static ccomp_status job_run(void *ctx, void *state, size_t task, ccomp_error *err)
{
    const kernel_job *j = (const kernel_job *)ctx;
    const ccomp_sketch *s = j->s;
    if (j->kind == K_GRAD_INPUT) {
        size_t c0 = task * GI_COLS, c1 = c0 + GI_COLS;
        if (c1 > s->cols) c1 = s->cols;
        if (j->tiled)
            grad_input_cols(j, c0, c1, scratch_of(state));
        else
            sk_grad_input_cols_ref(s, j->gy, j->n, j->prec, j->out, c0, c1);
        return ccomp_check_cancel(err, "sketch grad_input");
    }
    {
        size_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task;
        if (r1 > s->rows) r1 = s->rows;
        if (j->kind == K_MATMUL) {
            if (j->gemv512)
                sk_gemv_rows_avx512(s, (const float *)j->x, j->n, (float *)j->out, r0, r1, scratch_of(state));
            else if (j->tiled)
                gemm_rows(j, r0, r1, scratch_of(state));
            else if (j->simd)
                sk_matmul_rows_avx2(s, (const float *)j->x, j->n, (float *)j->out, r0, r1, scratch_of(state));
            else
                sk_matmul_rows_ref(s, j->x, j->n, j->prec, j->out, r0, r1);
        } else {
            if (j->tiled)
                sk_grad_tables_tiled_avx2(s, j->gyT, j->xp, j->n, (float *)j->out, r0, r1, scratch_of(state),
                                          j->tile_kern);
            else if (j->simd)
                sk_grad_tables_rows_avx2(s, (const float *)j->x, (const float *)j->gy, j->n, (float *)j->out, r0, r1);
            else
                sk_grad_tables_rows_ref(s, j->x, j->gy, j->n, j->prec, j->out, r0, r1);
        }
    }
    return ccomp_check_cancel(err, "sketch kernel"); /* a cut-short task must not pass as done */
}

/* The inputs in the layout the chosen kernels read, in one buffer the caller frees: x interleaved for the
 * 4-bit AVX-512 GEMV; x in panels of 32 rows (xp[blk][d][q] = x[blk * 32 + q][d]) for the tiled matmul;
 * gy transposed and x in 32-column panels (xp[cb][i][q] = x[i][cb * 32 + q]) for the tiled grad_tables.
 * Zero past the last row / column.  NULL when nothing is repacked. */
static ccomp_status pack_inputs(kernel_job *j, float **buf, ccomp_error *err)
{
    const ccomp_sketch *s = j->s;
    const size_t W = CCOMP_TILE_W, cols = s->cols, rows = s->rows, n = j->n, np = (cols + W - 1) / W;
    const float *x = (const float *)j->x, *gy = (const float *)j->gy;
    size_t need = 0, blk, d, q, i, r;
    float *p;
    *buf = NULL;
    if (j->gemv512 && s->bits == 4)
        need = n * cols;
    else if (j->tiled && j->kind == K_MATMUL)
        need = (j->xblocks = (n + W - 1) / W) * cols * W;
    else if (j->tiled && j->kind == K_GRAD_TABLES)
        need = rows * n + np * n * W;
    if (need == 0) return CCOMP_OK;
    if ((p = *buf = (float *)malloc(need * sizeof(float))) == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu floats for the packed inputs", need);
    if (j->gemv512) {
        sk_interleave16(s, x, n, p);
        j->x = p;
    } else if (j->kind == K_MATMUL) {
        for (blk = 0; blk < j->xblocks; blk++)
            for (q = 0; q < W; q++) {
                float *dst = p + blk * cols * W + q;
                i = blk * W + q;
                for (d = 0; d < cols; d++) dst[d * W] = i < n ? x[i * cols + d] : 0.0f;
            }
        j->xp = p;
    } else {
        float *xp = p + rows * n;
        for (i = 0; i < n; i++)
            for (r = 0; r < rows; r++) p[r * n + i] = gy[i * rows + r];
        for (blk = 0; blk < np; blk++)
            for (i = 0; i < n; i++)
                for (q = 0; q < W; q++) xp[(blk * n + i) * W + q] = blk * W + q < cols ? x[i * cols + blk * W + q] : 0.0f;
        j->gyT = p;
        j->xp = xp;
    }
    return CCOMP_OK;
}

static ccomp_status run_kernel(kernel_job *j, int threads, ccomp_error *err)
{
    const ccomp_sketch *s = j->s;
    ccomp_parallel_ops ops = {job_init, job_run, job_fini};
    ccomp_status st = ccomp_sketch_check(s->rows, s->cols, s->groups, s->bits, s->dtype, err);
    size_t ntasks, work;
    float *packed;
    if (st != CCOMP_OK) return st;
    if (j->prec != CCOMP_SKETCH_F32 && j->prec != CCOMP_SKETCH_F64)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "precision must be float32 or float64, got type %d", j->prec);
    if (threads < 1) return ccomp_fail(err, CCOMP_ERR_VALUE, "threads must be >= 1, got %d", threads);
    if (j->n == 0) {
        if (j->kind == K_GRAD_TABLES)
            memset(j->out, 0, ccomp_sketch_table_entries(s->rows, s->groups, s->bits) *
                                  (j->prec == CCOMP_SKETCH_F64 ? sizeof(double) : sizeof(float)));
        return CCOMP_OK;
    }
    j->simd = j->prec == CCOMP_SKETCH_F32 && sk_avx2_ok();
    j->scratch_floats = SK_SCRATCH_FLOATS;
    j->tile_kern = ccomp_tile_kernel();
    j->rows_per_task = 16;
    if (j->kind == K_GRAD_INPUT) {
        ntasks = (s->cols + GI_COLS - 1) / GI_COLS;
        j->tiled = j->simd;
        if (j->tiled) j->scratch_floats = s->rows * CCOMP_TILE_W + CCOMP_TILE_R * CCOMP_TILE_W;
    } else {
        j->gemv512 = j->kind == K_MATMUL && j->simd && j->n < SK_GEMV512_MAX_BATCH && s->bits != 3 && sk_avx512_ok();
        if (j->kind == K_MATMUL && j->simd && j->n >= SK_GEMM_MIN_BATCH && !j->gemv512) {
            j->tiled = 1;
            j->rows_per_task = GEMM_WROWS;
            j->scratch_floats = GEMM_WROWS * s->cols + GEMM_WROWS * CCOMP_TILE_W;
        }
        if (j->kind == K_GRAD_TABLES && j->simd && j->n >= GT_TILED_MIN_BATCH) {
            j->tiled = 1;
            j->rows_per_task = GEMM_WROWS;
            j->scratch_floats = GEMM_WROWS * CCOMP_TILE_W;
        }
        ntasks = (s->rows + j->rows_per_task - 1) / j->rows_per_task;
    }
    /* small products are not worth a thread start (tens of microseconds) */
    work = s->rows * s->cols * (j->n < 64 ? j->n : 64);
    if (work < ((size_t)1 << 19)) threads = 1;
    st = pack_inputs(j, &packed, err);
    if (st == CCOMP_OK) st = ccomp_parallel_for(threads, ntasks, &ops, j, err);
    free(packed);
    return st;
}

/* One kernel call: x and gy as the kind needs them (NULL otherwise). */
static ccomp_status start(int kind, const ccomp_sketch *s, const void *x, const void *gy, size_t n, int prec,
                          void *out, int threads, ccomp_error *err)
{
    kernel_job j;
    memset(&j, 0, sizeof j);
    j.s = s;
    j.x = x;
    j.gy = gy;
    j.out = out;
    j.n = n;
    j.prec = prec;
    j.kind = kind;
    return run_kernel(&j, threads, err);
}

ccomp_status ccomp_sketch_matmul(const ccomp_sketch *s, const void *x, size_t n, int prec, void *y, int threads,
                                 ccomp_error *err)
{
    return start(K_MATMUL, s, x, NULL, n, prec, y, threads, err);
}

ccomp_status ccomp_sketch_grad_tables(const ccomp_sketch *s, const void *x, const void *gy, size_t n, int prec,
                                      void *gt, int threads, ccomp_error *err)
{
    return start(K_GRAD_TABLES, s, x, gy, n, prec, gt, threads, err);
}

ccomp_status ccomp_sketch_grad_input(const ccomp_sketch *s, const void *gy, size_t n, int prec, void *gx,
                                     int threads, ccomp_error *err)
{
    return start(K_GRAD_INPUT, s, NULL, gy, n, prec, gx, threads, err);
}

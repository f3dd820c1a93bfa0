/* Internal interface of the CDF quantization (quantize.c, quantize_avx2.c),
 * used by the containers (container.c). */
#ifndef CCOMP_AC_QUANTIZE_H
#define CCOMP_AC_QUANTIZE_H

#include "ccomp/ac.h"

/* Checkpoint spacing: a lookup walks at most CK elements from a checkpoint. */
#define CK 256u
/* Rows scanned together (the AVX2 scan keeps one row per lane). */
#define SCAN_GROUP 8u

/* Summary of one scanned row. */
typedef struct qrow {
    double S;       /* normalisation (a float32 value when the rule works in float32) */
    double c_last;  /* running sum before the last symbol */
    double scale;   /* constriction: free / S (in the rule's float type); nacrith: (2^P - V) / S */
    double *ck;     /* constriction: running sums at positions j * CK */
    uint64_t *ick;  /* nacrith: sums of frequencies before positions j * CK */
    size_t argmax;  /* nacrith: the most likely symbol (first on ties) */
    int64_t rem;    /* nacrith: 2^P - sum of frequencies, given to argmax */
    int bad;        /* a NaN or negative value was seen */
} qrow;

typedef struct qscratch {
    qrow row;
    double *ck;
    uint64_t *ick;
    size_t cap_ck;
    void *w; /* weights from logits */
    size_t cap_w;
} qscratch;

typedef struct qgroup {
    qrow rows[SCAN_GROUP];
    const void *p[SCAN_GROUP]; /* what the rule reads for each row */
    double *ck;
    uint64_t *ick;
    size_t cap_ck;
    void *w;
    size_t cap_w;
} qgroup;

size_t ccomp_ac_num_ck(size_t V);
void ccomp_ac_scan_ref(const ccomp_ac_model *m, const void *p, size_t V, qrow *r);
int ccomp_ac_scan8_f32_available(void);
void ccomp_ac_scan8_f32(const float *const *p, size_t V, qrow *r);
ccomp_status ccomp_ac_finish_row(const ccomp_ac_model *m, const void *p, size_t V, qrow *r, size_t t,
                                 ccomp_error *err);
void ccomp_ac_row_pair(const ccomp_ac_model *m, const void *p, size_t V, const qrow *r, size_t s, uint32_t *cum,
                       uint32_t *freq);
void ccomp_ac_row_find(const ccomp_ac_model *m, const void *p, size_t V, const qrow *r, uint32_t target,
                       uint32_t *symbol, uint32_t *cum, uint32_t *freq);
ccomp_status ccomp_ac_row_prepare(const ccomp_ac_model *m, const void *row, size_t V, qscratch *sc, const void **p,
                                  size_t t, ccomp_error *err);
void ccomp_ac_scratch_free(qscratch *sc);
ccomp_status ccomp_ac_group_prepare(const ccomp_ac_model *m, const void *rows, size_t V, size_t row_stride,
                                    size_t t0, size_t n, qgroup *g, ccomp_error *err);
void ccomp_ac_group_free(qgroup *g);
ccomp_status ccomp_ac_check_pair(const ccomp_ac_model *m, uint32_t cum, uint32_t freq, size_t t, size_t s,
                                 ccomp_error *err);
ccomp_status ccomp_ac_check_symbols(const int64_t *symbols, size_t T, size_t V, ccomp_error *err);

#endif /* CCOMP_AC_QUANTIZE_H */

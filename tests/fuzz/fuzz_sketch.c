/* libFuzzer target for the CCSK sketch container reader (ccomp_sketch_container_parse).
 *
 * The reader must accept or refuse any bytes with a clean status and stay within the input, which
 * AddressSanitizer checks.  Random mutations almost never keep the trailing CRC-32 valid, so for half
 * of the inputs (the low bit of the last byte before the CRC) the CRC is recomputed over the mutated
 * bytes first: those reach every check behind it.  Every accepted entry is then decoded and used by the
 * kernels (small ones), which read tables and codes at the offsets the reader returned.  Built and run
 * for a bounded time by `make fuzz` (corpus: tests/fixtures, e.g. sketch_v1.ccsk). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ccomp/sketch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The entry's tables converted to a native array of its type (the container holds them little-endian). */
static void *load_tables(const uint8_t *buf, const ccomp_sketch_entry *e, size_t nt)
{
    const size_t es = ccomp_sketch_dtype_size(e->dtype);
    uint8_t *t = (uint8_t *)malloc(nt * es);
    if (t != NULL) memcpy(t, buf + e->tables_off, nt * es); /* x86: little-endian already */
    return t;
}

static void use_entry(const uint8_t *buf, const ccomp_sketch_entry *e)
{
    const size_t nt = ccomp_sketch_table_entries(e->rows, e->groups, e->bits);
    ccomp_sketch s = {e->rows, e->cols, e->groups, e->bits, e->dtype, NULL, buf + e->codes_off};
    ccomp_error err;
    float *x, *y, *w;
    uint8_t *codes;
    if (e->rows * e->cols > 4096) return; /* the kernels' cost, not the reader's */
    s.tables = load_tables(buf, e, nt);
    x = (float *)calloc(2 * e->cols, sizeof(float));
    y = (float *)malloc(2 * e->rows * sizeof(float));
    w = (float *)malloc(e->rows * e->cols * sizeof(float));
    codes = (uint8_t *)malloc(e->rows * e->cols);
    if (s.tables && x && y && w && codes) {
        size_t i;
        for (i = 0; i < 2 * e->cols; i++) x[i] = (float)(i % 7) - 3.0f;
        ccomp_error_clear(&err);
        (void)ccomp_sketch_dequantize(&s, CCOMP_SKETCH_F32, w, 1, &err);
        (void)ccomp_sketch_matmul(&s, x, 2, CCOMP_SKETCH_F32, y, 1, &err);
        if (ccomp_sketch_unpack(s.codes, e->rows, e->cols, e->groups, e->bits, codes, &err) != CCOMP_OK) abort();
    }
    free((void *)s.tables);
    free(x);
    free(y);
    free(w);
    free(codes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = (uint8_t *)malloc(size ? size : 1);
    ccomp_sketch_entry *es = NULL;
    size_t count = 0, i;
    int kind;
    ccomp_error err;
    if (buf == NULL) return 0;
    memcpy(buf, data, size);
    if (size > 4 && (buf[size - 5] & 1u)) { /* reach behind the CRC */
        uint32_t c = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(size - 4));
        for (i = 0; i < 4; i++) buf[size - 4 + i] = (uint8_t)(c >> (8 * i));
    }
    ccomp_error_clear(&err);
    if (ccomp_sketch_container_parse(buf, size, &kind, &es, &count, &err) == CCOMP_OK) {
        for (i = 0; i < count; i++) use_entry(buf, &es[i]);
        free(es);
    } else if (err.code == CCOMP_OK || es != NULL) {
        abort(); /* a failure must say why and hand back nothing */
    }
    free(buf);
    return 0;
}

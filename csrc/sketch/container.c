/* The CCSK container reader (ccomp/sketch.h): every field checked before it is used, one pass. */
#include <stdlib.h>
#include <string.h>

#include "ccomp/frame.h"
#include "sketch_internal.h"

#define HEAD 10   /* magic, version, kind, count */
#define ENTRY 28  /* out, in, groups (u64), bits, table type (u8), reserved (u16) */

static uint64_t le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A name's hash (FNV-1a) for the duplicate check. */
static uint64_t name_hash(const uint8_t *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;
    for (i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* 1 when entry e's name equals one already in the table (open addressing over entry indices + 1). */
static int seen_before(const uint8_t *data, const ccomp_sketch_entry *es, size_t e, size_t *slots, size_t mask)
{
    const uint8_t *nm = data + es[e].name_off;
    size_t i = (size_t)name_hash(nm, es[e].name_len) & mask;
    for (; slots[i] != 0; i = (i + 1) & mask) {
        const ccomp_sketch_entry *o = &es[slots[i] - 1];
        if (o->name_len == es[e].name_len && memcmp(data + o->name_off, nm, o->name_len) == 0) return 1;
    }
    slots[i] = e + 1;
    return 0;
}

static ccomp_status check_entry(const uint8_t *data, size_t end, size_t *pos, int kind, ccomp_sketch_entry *e,
                                size_t index, ccomp_error *err)
{
    ccomp_error shape;
    uint64_t rows, cols, groups;
    size_t p = *pos, nt, nc, es, gb, r, pad;
    int bits, td;
    if (end - p < 2) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: truncated name length", index);
    e->name_len = (size_t)le(data + p, 2);
    e->name_off = p + 2;
    p += 2;
    if (end - p < e->name_len) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: truncated name", index);
    if (kind == 1 && e->name_len == 0) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: empty layer name", index);
    if (kind == 1 && memchr(data + p, 0, e->name_len) != NULL)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: a NUL character in the layer name", index);
    p += e->name_len;
    if (end - p < ENTRY) return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: truncated entry header", index);
    rows = le(data + p, 8);
    cols = le(data + p + 8, 8);
    groups = le(data + p + 16, 8);
    bits = data[p + 24];
    td = data[p + 25];
    p += ENTRY;
    ccomp_error_clear(&shape);
    if (rows > ((uint64_t)1 << 40) || cols > ((uint64_t)1 << 40) || groups > cols ||
        ccomp_sketch_check((size_t)rows, (size_t)cols, (size_t)groups, bits, td, &shape) != CCOMP_OK)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: invalid parameters (out %llu, in %llu, groups %llu, bits "
                          "%d, table type %d)", index, (unsigned long long)rows, (unsigned long long)cols,
                          (unsigned long long)groups, bits, td);
    e->rows = (size_t)rows;
    e->cols = (size_t)cols;
    e->groups = (size_t)groups;
    e->bits = bits;
    e->dtype = td;
    es = ccomp_sketch_dtype_size(td);
    nt = ccomp_sketch_table_entries(e->rows, e->groups, bits);
    nc = ccomp_sketch_code_bytes(e->rows, e->cols, e->groups, bits);
    /* rows <= 2^40 and groups <= cols: the products stay far below SIZE_MAX (ccomp_sketch_check's bound) */
    if ((end - p) / es < nt || end - p - nt * es < nc)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: data runs past the end", index);
    e->tables_off = p;
    p += nt * es;
    e->codes_off = p;
    gb = ccomp_sketch_group_bytes(e->cols / e->groups, bits);
    pad = gb * 8 - (e->cols / e->groups) * (size_t)bits;
    if (pad)
        for (r = 0; r < e->rows * e->groups; r++)
            if (data[p + r * gb + gb - 1] & ((1u << pad) - 1u))
                return ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: the %zu padding bits after the last code of "
                                  "run %zu are not zero", index, pad, r);
    p += nc;
    *pos = p;
    return CCOMP_OK;
}

ccomp_status ccomp_sketch_container_parse(const uint8_t *data, size_t n, int *kind, ccomp_sketch_entry **entries,
                                          size_t *count, ccomp_error *err)
{
    ccomp_sketch_entry *es = NULL;
    size_t *slots = NULL, end, pos = HEAD, want, i, mask = 0;
    ccomp_status st = CCOMP_OK;
    *entries = NULL;
    *count = 0;
    if ((st = ccomp_frame_check(data, n, "CCSK", 1, HEAD - CCOMP_FRAME_PREFIX, "ccomp.sketch container", err)) !=
        CCOMP_OK)
        return st;
    end = n - CCOMP_FRAME_CRC;
    *kind = data[5];
    want = (size_t)le(data + 6, 4);
    if (*kind > 1 || (*kind == 0 && want != 1))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid container kind %d with %zu entries", *kind, want);
    /* every entry takes at least 2 + 28 + 8 + 1 bytes: a count beyond that is refused before any allocation */
    if (want > (end - HEAD) / (2 + ENTRY + 9))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "%zu entries cannot fit in %zu bytes", want, n);
    if (want > 0) {
        while (mask + 1 < 2 * want) mask = mask * 2 + 1;
        es = (ccomp_sketch_entry *)malloc(want * sizeof *es);
        slots = (size_t *)calloc(mask + 1, sizeof *slots);
        if (es == NULL || slots == NULL) {
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu container entries", want);
            goto done;
        }
    }
    for (i = 0; i < want; i++) {
        if ((st = check_entry(data, end, &pos, *kind, &es[i], i, err)) != CCOMP_OK) goto done;
        if (*kind == 1 && seen_before(data, es, i, slots, mask)) {
            st = ccomp_fail(err, CCOMP_ERR_CORRUPT, "entry %zu: duplicate layer name '%.*s'", i,
                            (int)(es[i].name_len < 64 ? es[i].name_len : 64), (const char *)data + es[i].name_off);
            goto done;
        }
    }
    if (pos != end) {
        st = ccomp_fail(err, CCOMP_ERR_CORRUPT, "%zu trailing bytes after the last entry", end - pos);
        goto done;
    }
done:
    free(slots);
    if (st != CCOMP_OK) {
        free(es);
        return st;
    }
    *entries = es;
    *count = want;
    return CCOMP_OK;
}

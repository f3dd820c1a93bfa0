/* Inline steps of the range coder (see ccomp/ac.h for the algorithm), shared
 * by the coder, the containers and the built-in byte compressor. */
#ifndef CCOMP_AC_RC_IMPL_H
#define CCOMP_AC_RC_IMPL_H

#include <stdlib.h>
#include <string.h>

#include "ccomp/ac.h"
#include "ccomp/frame.h" /* ccomp_crc32 */

#define RC_WORD_BITS 32
#define RC_LOW_LIMIT ((uint64_t)1 << 32) /* range stays >= 2^32 between symbols */

static inline void rc_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t rc_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void rc_store_le64(uint8_t *p, uint64_t v)
{
    rc_store_le32(p, (uint32_t)v);
    rc_store_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t rc_load_le64(const uint8_t *p)
{
    return (uint64_t)rc_load_le32(p) | (uint64_t)rc_load_le32(p + 4) << 32;
}

/* Appends one word; returns 0 when memory runs out. */
static inline int rc_put(ccomp_rc_enc *e, uint32_t w)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 256;
        uint32_t *p = (uint32_t *)realloc(e->words, cap * sizeof *p);
        if (p == NULL) return 0;
        e->words = p;
        e->cap = cap;
    }
    e->words[e->n++] = w;
    return 1;
}

/* Writes the held-back words once the carry is known. */
static inline int rc_release(ccomp_rc_enc *e, int carry)
{
    size_t i;
    uint32_t fill = carry ? 0u : UINT32_MAX;
    if (!rc_put(e, e->first_inverted + (carry ? 1u : 0u))) return 0;
    for (i = 1; i < e->num_inverted; i++)
        if (!rc_put(e, fill)) return 0;
    e->num_inverted = 0;
    return 1;
}

/* One symbol, already validated.  Returns 0 when memory runs out. */
static inline int rc_encode_step(ccomp_rc_enc *e, uint32_t cum, uint32_t freq, int precision)
{
    uint64_t scale = e->range >> precision;
    uint64_t new_lower = e->lower + scale * cum;
    e->range = scale * freq;
    if (e->num_inverted && new_lower + e->range > new_lower) {
        if (!rc_release(e, new_lower < e->lower)) return 0;
    }
    e->lower = new_lower;
    e->symbols++;
    if (e->range < RC_LOW_LIMIT) {
        uint32_t word = (uint32_t)(e->lower >> 32);
        e->range <<= 32;
        e->lower <<= 32;
        if (e->num_inverted) {
            e->num_inverted++;
        } else if (e->lower + e->range > e->lower) {
            if (!rc_put(e, word)) return 0;
        } else {
            e->num_inverted = 1;
            e->first_inverted = word;
        }
    }
    return 1;
}

static inline uint32_t rc_dec_next_word(ccomp_rc_dec *d)
{
    if (d->pos < d->nwords) return rc_load_le32(d->data + 4 * d->pos++);
    d->overread++;
    return 0;
}

/* Target of the next symbol; UINT32_MAX when the stream is invalid. */
static inline uint32_t rc_dec_target_raw(const ccomp_rc_dec *d, int precision)
{
    uint64_t scale = d->range >> precision;
    uint64_t q = (d->point - d->lower) / scale;
    return q >> precision ? UINT32_MAX : (uint32_t)q;
}

static inline void rc_dec_advance_raw(ccomp_rc_dec *d, uint32_t cum, uint32_t freq, int precision)
{
    uint64_t scale = d->range >> precision;
    d->lower += scale * cum;
    d->range = scale * freq;
    if (d->range < RC_LOW_LIMIT) {
        d->lower <<= 32;
        d->range <<= 32;
        d->point = d->point << 32 | rc_dec_next_word(d);
    }
}

#endif /* CCOMP_AC_RC_IMPL_H */

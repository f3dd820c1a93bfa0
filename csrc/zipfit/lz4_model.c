/* Size-only model of lz4 1.9.4's fast block compressor inside an lz4 frame.
 *
 * What LZ4F_compressFrame does for one block of n <= 64 KB bytes with
 * compressionLevel 0-2, default block size, linked blocks, no checksums and
 * the content size requested (the python-lz4 defaults):
 *   - the whole input fits one 64 KB block, so LZ4F switches the frame to
 *     independent blocks and compresses it with
 *     LZ4_compress_fast_extState_fastReset(state, src, dst, n, n - 1, 1) on a
 *     freshly initialised state: byU16 hash table (8192 16-bit entries, hash
 *     of the 4 bytes at p: (read32(p) * 2654435761) >> 19, all entries 0 at
 *     the start), no dictionary, limited output of n - 1 bytes;
 *   - when that returns 0 (does not fit in n - 1 bytes) the block is stored
 *     raw.  The limited-output checks never change the parse and fail exactly
 *     when the unlimited size C would exceed n - 1, so the block payload is
 *     C when C < n and n otherwise;
 *   - frame = 7 header bytes (magic, FLG, BD, HC) + 8 content-size bytes when
 *     n > 0 (LZ4F only stores a nonzero content size) + for n > 0 a 4-byte
 *     block header and the payload + the 4-byte end mark.
 *
 * The parse reproduced (LZ4_compress_generic, byU16, noDict, acceleration 1):
 *   - n < 13 (LZ4_minLength): all literals;
 *   - position 0 is put in the table, the search starts at 1; each probe at
 *     ip reads the candidate of hash(ip), stores ip, advances by step, where
 *     step = searchMatchNb++ >> 6 (searchMatchNb starts at 64 in every search)
 *     and gives up (last literals) once ip + step > n - 11 (mflimitPlusOne);
 *     a candidate matches when its 4 bytes equal those at ip (no distance test
 *     for byU16: every position is within 65535);
 *   - catch-up backwards while ip > anchor, match > 0 and the previous bytes
 *     are equal; the match is then counted up to n - 5 (matchlimit);
 *   - after a match: stop if ip >= n - 11, else put ip - 2, then test ip
 *     itself (read candidate, store ip, 4-byte test); a hit is a new sequence
 *     with no literals, otherwise the search restarts at ip + 1;
 *   - sizes: token + literal-length bytes ((L - 15) / 255 + 1 when L >= 15)
 *     + literals + 2-byte offset + match-length bytes (same rule with the
 *     match length minus 4), then a last token, length bytes and literals.
 *
 * Prefix reuse: set_prefix parses a alone (as an input of length na).  This
 * parse is identical to the parse of a||b for every b up to the first point
 * where the end of the input matters, which can only be one of
 *   (1) a search probe's end test (ip + step > na - 11),
 *   (2) a match count that reaches matchlimit (na - 5) without a mismatch,
 *   (3) the test ip >= na - 11 after a match,
 * (everything before only read bytes below na - 5 and passed tests that also
 * pass with a larger end).  The state at that point (no table write happens
 * between the last one and the test) is the checkpoint: for (1) the probe
 * position, step, searchMatchNb, anchor and output size; for (2) the match
 * start, its source and how far it has been counted; for (3) the position.
 * size_with_prefix copies b after a and resumes there.
 *
 * The prefix table is never written after set_prefix: size_with_prefix
 * writes to an overlay table of 32-bit entries (generation << 16) | position,
 * where an entry counts only when its generation is the current one, and the
 * prefix table answers otherwise.  Each call takes a new generation, so
 * restoring the prefix state costs nothing; the overlay is cleared once every
 * 65535 calls when the generation wraps.  ccomp_lz4_model_size parses with a
 * plain zeroed table and zeroes it again afterwards (the written slots for
 * inputs up to 256 bytes, all of it above).
 *
 * Speed (text, ~1 KB prefixes, 160-byte targets): size_with_prefix re-parses
 * the target and about the last 10 bytes of the prefix, about 4x faster than
 * LZ4F_compressFrame on a||b; ccomp_lz4_model_size costs about as much as
 * LZ4F_compressFrame (slightly more: it parses exactly like lz4).
 */
#include "ccomp/lz4_model.h"

#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#define LZM_MAX_INPUT 65536u /* one 64 KB block; byU16 up to LZ4_64Klimit */
#define LZM_HASH_LOG 13u     /* LZ4_HASHLOG + 1 for byU16 */
#define LZM_HASH_SIZE (1u << LZM_HASH_LOG)
#define LZM_MINMATCH 4u
#define LZM_LASTLITERALS 5u
#define LZM_MFLIMIT 12u
#define LZM_MIN_LENGTH (LZM_MFLIMIT + 1u)
#define LZM_SKIP_TRIGGER 6u
#define LZM_FRAME_HEADER 7u
#define LZM_CONTENT_SIZE 8u
#define LZM_BLOCK_HEADER 4u
#define LZM_END_MARK 4u
/* Table writes of one parse: the first byte, at most one per probed position
 * (probes are at distinct positions below n) and two per match (each covers
 * >= 4 bytes), so fewer than 2 n + 64. */
#define LZM_UNDO_MAX_N 256u /* ccomp_lz4_model_size undoes its writes up to this n */
#define LZM_HLOG_CAP (2u * LZM_UNDO_MAX_N + 64u)

#if defined(__GNUC__)
#define LZM_FORCE_INLINE inline __attribute__((always_inline))
#else
#define LZM_FORCE_INLINE inline
#endif

enum { ST_INIT = 0, ST_SEARCH = 1, ST_MATCH = 2, ST_POST = 3 };

typedef struct lz_state {
    int kind;
    uint32_t p0;   /* SEARCH: next probe; MATCH: match start; POST: position */
    uint32_t p1;   /* SEARCH: step; MATCH: match source */
    uint32_t p2;   /* SEARCH: searchMatchNb; MATCH: counted up to here */
    uint32_t p3;   /* SEARCH: anchor */
    uint32_t osize; /* compressed bytes so far */
} lz_state;

struct ccomp_lz4_model {
    uint16_t ptab[LZM_HASH_SIZE]; /* table at the prefix checkpoint */
    uint32_t otab[LZM_HASH_SIZE]; /* overlay: (generation << 16) | position */
    uint16_t ztab[LZM_HASH_SIZE]; /* all zero between calls: for _size */
    uint16_t *hlog;               /* slots written by a parse for _size */
    uint32_t gen;                 /* current generation << 16, never 0 */
    uint8_t *pbuf;                /* prefix a, then b appended */
    uint8_t *sbuf;                /* a||b for ccomp_lz4_model_size */
    uint32_t na;
    lz_state pstate;
    ccomp_status prefix_status; /* of the last set_prefix: no prefix to use unless OK */
    size_t refused_na;          /* the length it refused */
};

/* ------------------------------------------------------------------------ */

/* Native-endian, as LZ4_read32 (lz4 hashes the native value for byU16). */
static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint32_t hash4(const uint8_t *p)
{
    return (rd32(p) * 2654435761u) >> (32u - LZM_HASH_LOG);
}

/* Length bytes after the token for a literal run or a match length minus 4:
 * none below 15, else (len - 15) / 255 + 1; (len + 240) / 255 is the same. */
static inline uint32_t ext_len(uint32_t len)
{
    return (len + 240u) / 255u;
}

/* Number of equal bytes src[pin + k] == src[m + k] with pin + k < limit.  Only
 * reads below limit (m < pin). */
static inline uint32_t count_eq(const uint8_t *src, uint32_t pin, uint32_t m, uint32_t limit)
{
    uint32_t start = pin;
    while (pin + 8u <= limit) {
        uint64_t x, y;
        memcpy(&x, src + pin, 8);
        memcpy(&y, src + m, 8);
        if (x != y) {
#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
            return pin - start + (uint32_t)(__builtin_ctzll(x ^ y) >> 3);
#else
            while (src[pin] == src[m]) { pin++; m++; }
            return pin - start;
#endif
        }
        pin += 8u;
        m += 8u;
    }
    while (pin < limit && src[pin] == src[m]) { pin++; m++; }
    return pin - start;
}

/* How parse() keeps its hash table. */
enum {
    MODE_PREFIX = 0, /* tab written in place; stop at the first end-dependent test */
    MODE_OVERLAY = 1, /* otab (generation gen) over tab, which is not written */
    MODE_LOGGED = 2, /* tab written in place, each written slot appended to hlog */
    MODE_PLAIN = 3   /* tab written in place */
};

/* The parse of src[0..n).  MODE_PREFIX: stop at the first end-dependent test
 * and store the state there in *st (return value unused).  Otherwise: run to
 * the end from *st and return the compressed block size. */
static LZM_FORCE_INLINE uint32_t
parse(const uint8_t *src, uint32_t n, uint16_t *tab, lz_state *st, const int mode, uint32_t *otab, uint32_t gen,
      uint16_t *hlog, uint32_t *nhlog)
{
    const int prefix = mode == MODE_PREFIX;
    uint32_t op = st->osize;
    uint32_t anchor = 0, ip = 0, fwd = 0, step = 0, smn = 0, match = 0, pin = 0, nl = 0;
    uint32_t mflimit1, matchlimit;

#define GET(h)                                                                                                    \
    (mode != MODE_OVERLAY ? (uint32_t)tab[h] : ((otab[h] ^ gen) < 0x10000u ? (otab[h] & 0xffffu) : (uint32_t)tab[h]))
#define PUT(h, pos)                                                                                               \
    do {                                                                                                          \
        if (mode == MODE_OVERLAY) {                                                                               \
            otab[h] = gen | (pos);                                                                                \
        } else {                                                                                                  \
            if (mode == MODE_LOGGED) hlog[nl++] = (uint16_t)(h);                                                  \
            tab[h] = (uint16_t)(pos);                                                                             \
        }                                                                                                         \
    } while (0)

    if (st->kind == ST_INIT) {
        if (n < LZM_MIN_LENGTH) {
            if (prefix) return 0; /* stays INIT: the whole input may still grow */
            anchor = 0;
            goto last_literals;
        }
    }
    mflimit1 = n - LZM_MFLIMIT + 1u;
    matchlimit = n - LZM_LASTLITERALS;

    switch (st->kind) {
    case ST_INIT:
        PUT(hash4(src), 0u);
        fwd = 1u;
        step = 1u;
        smn = 1u << LZM_SKIP_TRIGGER;
        anchor = 0u;
        break;
    case ST_SEARCH:
        fwd = st->p0;
        step = st->p1;
        smn = st->p2;
        anchor = st->p3;
        break;
    case ST_MATCH:
        ip = st->p0;
        match = st->p1;
        pin = st->p2;
        goto count;
    default: /* ST_POST */
        ip = st->p0;
        anchor = ip;
        goto after_match;
    }

    for (;;) {
        /* search: top of a probe iteration */
        for (;;) {
            uint32_t h;
            if (fwd + step > mflimit1) {
                if (prefix) {
                    st->kind = ST_SEARCH;
                    st->p0 = fwd;
                    st->p1 = step;
                    st->p2 = smn;
                    st->p3 = anchor;
                    st->osize = op;
                    return 0;
                }
                goto last_literals;
            }
            ip = fwd;
            h = hash4(src + ip);
            match = GET(h);
            fwd += step;
            step = smn++ >> LZM_SKIP_TRIGGER;
            PUT(h, ip);
            if (rd32(src + match) == rd32(src + ip)) break;
        }
        /* catch up: back while ip > anchor, match > 0 and the bytes before are
         * equal; 8 bytes at a time where match has 8 bytes before it (then so
         * does ip > match), clamped to ip - anchor */
#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        while (match >= 8u) {
            uint32_t room = ip - anchor, back;
            uint64_t x, y, d;
            memcpy(&x, src + ip - 8u, 8);
            memcpy(&y, src + match - 8u, 8);
            d = x ^ y;
            back = d ? (uint32_t)(__builtin_clzll(d) >> 3) : 8u;
            if (back > room) back = room;
            ip -= back;
            match -= back;
            if (back < 8u) goto caught_up;
        }
#endif
        while (ip > anchor && match > 0u && src[ip - 1u] == src[match - 1u]) {
            ip--;
            match--;
        }
#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    caught_up:
#endif
        {
            uint32_t lit = ip - anchor;
            op += 1u + ext_len(lit) + lit + 2u;
        }
        pin = ip + LZM_MINMATCH;

    count:
        for (;;) {
            pin += count_eq(src, pin, match + (pin - ip), matchlimit);
            if (pin >= matchlimit && prefix) {
                st->kind = ST_MATCH;
                st->p0 = ip;
                st->p1 = match;
                st->p2 = pin;
                st->osize = op;
                return 0;
            }
            op += ext_len(pin - ip - LZM_MINMATCH);
            ip = pin;
            anchor = ip;

        after_match:
            if (ip >= mflimit1) {
                if (prefix) {
                    st->kind = ST_POST;
                    st->p0 = ip;
                    st->osize = op;
                    return 0;
                }
                goto last_literals;
            }
            PUT(hash4(src + ip - 2u), ip - 2u);
            {
                uint32_t h = hash4(src + ip);
                match = GET(h);
                PUT(h, ip);
                if (rd32(src + match) != rd32(src + ip)) break;
            }
            op += 1u + 2u; /* token, no literals, offset */
            pin = ip + LZM_MINMATCH;
        }
        fwd = ip + 1u;
        step = 1u;
        smn = 1u << LZM_SKIP_TRIGGER;
    }

last_literals:
    {
        uint32_t last = n - anchor;
        op += 1u + ext_len(last) + last;
    }
    if (mode == MODE_LOGGED) *nhlog = nl;
    return op;
#undef GET
#undef PUT
}

/* A new overlay generation: every overlay entry is stale afterwards. */
static inline uint32_t next_gen(ccomp_lz4_model *m)
{
    m->gen += 0x10000u;
    if (m->gen == 0u) { /* wrapped: no stale entry may look current */
        memset(m->otab, 0, sizeof m->otab);
        m->gen = 0x10000u;
    }
    return m->gen;
}

/* Parse to the end from *st0 over the prefix table. */
static uint32_t parse_over(ccomp_lz4_model *m, const uint8_t *src, uint32_t n, const lz_state *st0)
{
    lz_state st = *st0;
    uint32_t gen = next_gen(m);
    return parse(src, n, m->ptab, &st, MODE_OVERLAY, m->otab, gen, NULL, NULL);
}

/* Parse all of src[0..n) from a fresh (all-zero) table, and zero it again. */
static uint32_t parse_zero(ccomp_lz4_model *m, const uint8_t *src, uint32_t n)
{
    lz_state st;
    uint32_t nl = 0u, block, i;
    memset(&st, 0, sizeof st);
    st.kind = ST_INIT;
    if (n > LZM_UNDO_MAX_N) { /* clearing all (as lz4 does) is cheaper than undoing ~n writes */
        block = parse(src, n, m->ztab, &st, MODE_PLAIN, NULL, 0u, NULL, NULL);
        memset(m->ztab, 0, sizeof m->ztab);
    } else {
        block = parse(src, n, m->ztab, &st, MODE_LOGGED, NULL, 0u, m->hlog, &nl);
        for (i = 0; i < nl; i++) m->ztab[m->hlog[i]] = 0u;
    }
    return block;
}

/* Parse a prefix up to its checkpoint, writing the prefix table. */
static void parse_prefix(const uint8_t *src, uint32_t n, uint16_t *tab, lz_state *st)
{
    parse(src, n, tab, st, MODE_PREFIX, NULL, 0u, NULL, NULL);
}

static inline size_t frame_size(uint32_t n, uint32_t block)
{
    if (n == 0u) return LZM_FRAME_HEADER + LZM_END_MARK;
    return (size_t)LZM_FRAME_HEADER + LZM_CONTENT_SIZE + LZM_BLOCK_HEADER + (block < n ? block : n) + LZM_END_MARK;
}

/* ------------------------------------------------------------------------ */

/* The headers ccomp was built against and the library loaded at run time must
 * both be the version reproduced (1.9.4). */
int ccomp_lz4_model_supported(void)
{
    return LZ4_VERSION_NUMBER == 10904 && LZ4_versionNumber() == 10904;
}

size_t ccomp_lz4_model_max_input(void)
{
    return LZM_MAX_INPUT;
}

ccomp_status ccomp_lz4_model_create(ccomp_lz4_model **out, ccomp_error *err)
{
    ccomp_lz4_model *m;
    if (out == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: expected an output pointer, got NULL");
    *out = NULL;
    m = (ccomp_lz4_model *)calloc(1, sizeof *m);
    if (m == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "lz4 model: could not allocate the model (%zu bytes)", sizeof *m);
    m->hlog = (uint16_t *)malloc(LZM_HLOG_CAP * sizeof *m->hlog);
    m->pbuf = (uint8_t *)malloc(LZM_MAX_INPUT);
    m->sbuf = (uint8_t *)malloc(LZM_MAX_INPUT);
    if (m->hlog == NULL || m->pbuf == NULL || m->sbuf == NULL) {
        ccomp_lz4_model_free(m);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "lz4 model: could not allocate the model buffers (%zu bytes)",
                          (size_t)LZM_HLOG_CAP * sizeof(uint16_t) + 2u * (size_t)LZM_MAX_INPUT);
    }
    m->na = 0u;
    m->gen = 0x10000u; /* otab is zero: generation 0 is never current */
    m->pstate.kind = ST_INIT; /* empty prefix, tables zero (calloc) */
    *out = m;
    return CCOMP_OK;
}

void ccomp_lz4_model_free(ccomp_lz4_model *m)
{
    if (m == NULL) return;
    free(m->hlog);
    free(m->pbuf);
    free(m->sbuf);
    free(m);
}

ccomp_status ccomp_lz4_model_size(ccomp_lz4_model *m, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                                  size_t *out, ccomp_error *err)
{
    const uint8_t *src;
    uint32_t n, block;
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: expected a model, got NULL");
    if (out == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: expected an output pointer, got NULL");
    if (a == NULL && na > 0u)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: source is NULL with length %zu (expected data)", na);
    if (b == NULL && nb > 0u)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: target is NULL with length %zu (expected data)", nb);
    if (na > LZM_MAX_INPUT || nb > LZM_MAX_INPUT - na)
        return ccomp_fail(err, CCOMP_ERR_UNSUPPORTED,
                          "lz4 model: input of %zu + %zu bytes exceeds the one-block limit of %u bytes "
                          "(use LZ4F_compressFrame)",
                          na, nb, LZM_MAX_INPUT);
    n = (uint32_t)(na + nb);
    if (nb == 0u) {
        src = a;
    } else if (na == 0u) {
        src = b;
    } else {
        memcpy(m->sbuf, a, na);
        memcpy(m->sbuf + na, b, nb);
        src = m->sbuf;
    }
    block = parse_zero(m, src, n);
    *out = frame_size(n, block);
    return CCOMP_OK;
}

ccomp_status ccomp_lz4_model_set_prefix(ccomp_lz4_model *m, const uint8_t *a, size_t na, ccomp_error *err)
{
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: expected a model, got NULL");
    /* after a failure, size_with_prefix must not use the previous prefix */
    m->refused_na = na;
    if (a == NULL && na > 0u) {
        m->prefix_status = CCOMP_ERR_VALUE;
        return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: prefix is NULL with length %zu (expected data)", na);
    }
    if (na > LZM_MAX_INPUT) {
        m->prefix_status = CCOMP_ERR_UNSUPPORTED;
        return ccomp_fail(err, CCOMP_ERR_UNSUPPORTED,
                          "lz4 model: prefix of %zu bytes exceeds the one-block limit of %u bytes "
                          "(use LZ4F_compressFrame)",
                          na, LZM_MAX_INPUT);
    }
    m->prefix_status = CCOMP_OK;
    if (na > 0u) memcpy(m->pbuf, a, na);
    m->na = (uint32_t)na;
    memset(m->ptab, 0, sizeof m->ptab);
    m->pstate.kind = ST_INIT;
    m->pstate.osize = 0u;
    m->pstate.p0 = m->pstate.p1 = m->pstate.p2 = m->pstate.p3 = 0u;
    parse_prefix(m->pbuf, m->na, m->ptab, &m->pstate);
    return CCOMP_OK;
}

ccomp_status ccomp_lz4_model_size_with_prefix(ccomp_lz4_model *m, const uint8_t *b, size_t nb, size_t *out,
                                              ccomp_error *err)
{
    uint32_t n, block;
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: expected a model, got NULL");
    if (out == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: expected an output pointer, got NULL");
    if (b == NULL && nb > 0u)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "lz4 model: target is NULL with length %zu (expected data)", nb);
    if (m->prefix_status == CCOMP_ERR_UNSUPPORTED)
        return ccomp_fail(err, CCOMP_ERR_UNSUPPORTED,
                          "lz4 model: prefix of %zu + target of %zu bytes exceeds the one-block limit of %u bytes "
                          "(set_prefix refused the prefix; use LZ4F_compressFrame)",
                          m->refused_na, nb, LZM_MAX_INPUT);
    if (m->prefix_status != CCOMP_OK)
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "lz4 model: expected a prefix set by a successful set_prefix, but the last set_prefix "
                          "failed (NULL prefix of length %zu)",
                          m->refused_na);
    if (nb > LZM_MAX_INPUT - m->na)
        return ccomp_fail(err, CCOMP_ERR_UNSUPPORTED,
                          "lz4 model: prefix of %u + target of %zu bytes exceeds the one-block limit of %u bytes "
                          "(use LZ4F_compressFrame)",
                          m->na, nb, LZM_MAX_INPUT);
    if (nb > 0u) memcpy(m->pbuf + m->na, b, nb);
    n = m->na + (uint32_t)nb;
    block = parse_over(m, m->pbuf, n, &m->pstate);
    *out = frame_size(n, block);
    return CCOMP_OK;
}

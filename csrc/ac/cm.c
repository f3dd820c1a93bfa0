/* The built-in context-mixing byte compressor (ccomp/ac_cm.h).
 *
 * One model predicts each bit of the data (most significant bit of a byte
 * first); the range coder codes the bit with that probability at precision 16.
 * Encoder and decoder run the very same model code on the same bits, so they
 * stay in step.  Everything is integer arithmetic: the streams are the same on
 * every machine, with or without the SSE2 mixer.
 *
 * Parts of the model:
 *
 *   stretch / squash   x = ln(p / (1 - p)) in 1/256 units, clamped to +-2047,
 *                      and its inverse with 12-bit output; squash interpolates
 *                      33 points of the logistic function.
 *   adaptive counter   a 22-bit probability and a 10-bit count in one u32; the
 *                      probability moves towards each bit by 1 / (count + 1.5)
 *                      and the count stops at a limit (so it keeps adapting).
 *   bit history        one byte per context and bit position: a state standing
 *                      for a pair of bit counts (n0, n1); on a bit its count
 *                      grows and a large opposite count is halved (old evidence
 *                      fades).  An adaptive counter per state and model turns a
 *                      state into a probability.
 *   hash table         buckets of 16 bytes (a check byte + the 15 bit-history
 *                      states of the binary tree of one nibble), four buckets
 *                      per 64-byte line; a context looks in the four buckets of
 *                      its line and, when its check byte is in none of them,
 *                      takes over the one whose first state has seen fewest
 *                      bits.  Hashed contexts: orders 2, 3 and 4, the current
 *                      word (letters and digits, case-folded; the previous byte
 *                      between words) and the current word with the one before.
 *                      The buckets a context will need are prefetched a bit
 *                      early (for both values of the bit still unknown).
 *   direct counters    order 0 and order 1 (previous byte), by partial byte.
 *   match model        the position after the last occurrence of the previous
 *                      MATCH_MIN bytes (hashed, verified backwards); while the
 *                      bytes keep agreeing, the bit that followed there is
 *                      predicted with a strength learnt per match length.
 *   mixer              two weighted sums of the stretched predictions, one with
 *                      weights chosen by the bits seen of the current byte, one
 *                      by match length and bit position, trained online towards
 *                      lower coding cost; their outputs are averaged.
 *   APM / SSE          the mixed probability refined by interpolating between
 *                      33 adaptive points of its stretch, per order-1 context
 *                      (previous byte and partial byte), averaged 3:1 with it.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ccomp/ac_cm.h"
#include "ccomp/cancel.h"
#include "rc_impl.h"

/* Bytes coded between two checks for Ctrl-C (a few milliseconds). */
#define CM_CANCEL_STEP 4096u

#define CM_PREC 16                 /* range-coder precision of a bit */
#define CM_PMIN 16                 /* final probability range, of 2^16 */
#define CM_PMAX (65536 - CM_PMIN)
/* A bit costs at least -log2(CM_PMAX / 2^16) > 1 / 2840 bits, a byte > 1 / 355:
 * a valid stream of S bits holds fewer than 355 * (S + 64) bytes. */
#define CM_MAX_BYTES_PER_BIT 356u

#define MIX_RATE 4   /* mixer learning rate (error scale) */
#define MIX_SKIP 24  /* no mixer training step for errors up to this (of 4096) */
#define APM_RATE 7   /* SSE points move 1 / 2^APM_RATE of the way */
#define LIMIT_DIRECT 60     /* count limit of the order-0/1 counters (they keep adapting) */
#define LIMIT_STATE 1023    /* count limit of the bit-history and match counters */
#define W_INIT (1 << 14)    /* initial mixer weight, 0.25 */
#define MATCH_MIN 6    /* bytes hashed to find a match */
#define MATCH_VERIFY 64 /* longest match length measured backwards */

enum {
    N_HASHED = 5, /* orders 2, 3, 4, word, word pair */
    /* mixer inputs: the bit histories, order 0, order 1, match, bias; padded
     * with zero inputs to a multiple of 4 (vectorizable loops) */
    N_USED = N_HASHED + 4,
    N_IN = (N_USED + 3) & ~3,
    N_PAD = N_IN - N_USED
};

/* ---------------------------------------------------------------- tables */

static const int16_t squash_points[33] = {1,    2,    4,    6,    10,   17,   27,   45,   74,   120,  194,
                                          311,  488,  747,  1102, 1546, 2048, 2550, 2994, 3349, 3608, 3785,
                                          3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090, 4092, 4094, 4095};

typedef struct cm_tables {
    int16_t squash[4096]; /* index x + 2048, x in [-2048, 2047] -> (0, 4096) */
    int16_t stretch[4096];
    uint32_t recip[1024]; /* 2^16 / (n + 1.5) */
    uint8_t next[256][2]; /* bit-history transitions */
    uint8_t seen[256];    /* n0 + n1 of a state (replacement priority) */
    uint8_t n0[256], n1[256];
} cm_tables;

static int squash_calc(int x)
{
    int i, w;
    if (x >= 2047) return 4095;
    if (x <= -2047) return 1;
    i = (x + 2048) >> 7;
    w = (x + 2048) & 127;
    return (squash_points[i] * (128 - w) + squash_points[i + 1] * w + 64) >> 7;
}

/* Bit-history states: pairs (n0, n1) with both counts <= HIST_MAX and the
 * smaller one <= HIST_MIN_CAP, numbered by total count. */
#define HIST_MAX 30
#define HIST_MIN_CAP 3
_Static_assert(2 * (HIST_MIN_CAP + 1) * (HIST_MAX + 1) - (HIST_MIN_CAP + 1) * (HIST_MIN_CAP + 1) <= 256,
               "bit-history states must fit in a byte");

static int hist_ok(int a, int b)
{
    return a <= HIST_MAX && b <= HIST_MAX && (a <= HIST_MIN_CAP || b <= HIST_MIN_CAP);
}

static void hist_step(int *a, int *b, int y)
{
    int *same = y ? b : a, *other = y ? a : b;
    if (*same < HIST_MAX) (*same)++;
    if (*other > 2) *other = (*other + 2) / 2; /* the other side fades */
    if (!hist_ok(*a, *b)) *other = HIST_MIN_CAP;
}

static void tables_init(cm_tables *t)
{
    int x, p, prev, i, total, a, b;
    int16_t index[HIST_MAX + 1][HIST_MAX + 1];
    int ns = 0;
    for (x = -2048; x < 2048; x++) t->squash[x + 2048] = (int16_t)squash_calc(x);
    prev = 0;
    for (x = -2047; x <= 2047; x++) {
        int v = squash_calc(x);
        for (p = prev; p <= v; p++) t->stretch[p] = (int16_t)x;
        prev = v + 1;
    }
    for (p = prev; p < 4096; p++) t->stretch[p] = 2047;
    for (i = 0; i < 1024; i++) t->recip[i] = (uint32_t)(131072u / (2u * (unsigned)i + 3u));
    for (a = 0; a <= HIST_MAX; a++)
        for (b = 0; b <= HIST_MAX; b++) index[a][b] = -1;
    for (total = 0; total <= 2 * HIST_MAX; total++)
        for (a = 0; a <= total; a++) {
            b = total - a;
            if (hist_ok(a, b)) {
                index[a][b] = (int16_t)ns;
                t->n0[ns] = (uint8_t)a;
                t->n1[ns] = (uint8_t)b;
                t->seen[ns] = (uint8_t)total;
                ns++;
            }
        }
    for (i = ns; i < 256; i++) t->n0[i] = t->n1[i] = t->seen[i] = 0;
    for (i = 0; i < 256; i++) {
        int y;
        for (y = 0; y < 2; y++) {
            if (i < ns) {
                a = t->n0[i];
                b = t->n1[i];
                hist_step(&a, &b, y);
                t->next[i][y] = (uint8_t)index[a][b];
            } else {
                t->next[i][y] = 0;
            }
        }
    }
}

/* ---------------------------------------------------------------- hashing */

/* A 32-bit hash of two words (multiply / xor-shift rounds); the low bits pick
 * a table line, the top byte is the check byte. */
static inline uint32_t hash2(uint32_t a, uint32_t b)
{
    uint32_t x = (a ^ (b * 0x632BE5ABu + 0x9E3779B9u)) * 0x9E3779B1u;
    x ^= x >> 15;
    x *= 0x85EBCA77u;
    x ^= x >> 13;
    return x;
}

/* ---------------------------------------------------------------- model */

#define W_MAX ((1 << 19) - 1) /* mixer weights: 16.16 fixed point, |w| < 8 */
_Static_assert(N_IN == 12, "the SSE2 mixer is written for 12 inputs");
#define W1_SETS (17 * 8)      /* second weight set: match state x bit position */

typedef struct cm_model {
    cm_tables t;

    uint32_t o0p[256];             /* order-0 counters by partial byte */
    uint32_t o1p[65536];           /* order-1 counters by previous byte and partial byte */
    uint32_t hsm[N_HASHED][256];   /* per bit-history model: a counter per state */
    uint32_t msm[128];             /* match: 64 length buckets x expected bit */
    int32_t w0[256][N_IN];         /* mixer weights by partial byte */
    int32_t w1[W1_SETS][N_IN];     /* mixer weights by match state and bit position */
    int16_t apm_row[33];           /* initial APM row */
    uint8_t row_ready[256];        /* order-1 rows of o1p and apm initialised (on first use) */

    uint8_t *ht_mem, *ht;  /* hashed bit histories: 64-byte aligned buckets of 16 bytes */
    uint32_t hbuckets_mask;
    uint32_t *mt;          /* match model: hash of the last MATCH_MIN bytes -> position after them */
    uint32_t mmask;
    uint16_t *apm;         /* SSE: 65536 order-1 contexts x 33 points */

    const uint8_t *buf;    /* the data coded so far (the input, or the output being decoded) */
    size_t pos;            /* bytes coded so far */
    uint32_t c0, c4, c8;   /* partial byte with a leading 1; the last 4 bytes; the 4 before */
    int bitpos;
    uint32_t word, word_prev;

    uint32_t h[N_HASHED + 1];        /* this byte's context hashes (+ the match model's) */
    uint32_t hbyte[2][N_HASHED + 1]; /* the next byte's, after 7 bits, for a last bit 0 / 1 */
    uint32_t hnext[2][N_HASHED];     /* second-nibble hashes after 3 bits, for a next bit 0 / 1 */
    uint8_t *bucket[N_HASHED];
    uint8_t *cp[N_HASHED];           /* current bit-history state of each hashed model */

    size_t mptr;      /* match: position of the predicted byte */
    uint32_t mlen;    /* match length (0: none) */
    int mexp;         /* predicted byte */
    int mbit;         /* predicted bit, -1 when no prediction for this bit */
    int mctx;         /* counter used */

    int16_t x[N_IN];  /* mixer inputs (stretched probabilities) */
    int w1ctx;
    int pm0, pm1, pm; /* mixer outputs, 12 bits */
    int apm_idx, apm_w;
    int pr;           /* final probability of a 1, 16 bits */
} cm_model;

static size_t hash_bytes(int level, uint64_t n)
{
    size_t full = (size_t)1 << (18 + level), want = (size_t)1 << 16;
    while (want < full && (uint64_t)want < n * 128u) want <<= 1;
    return want;
}

static size_t match_entries(int level, uint64_t n)
{
    size_t full = (size_t)1 << (14 + level), want = (size_t)1 << 12;
    while (want < full && (uint64_t)want < n) want <<= 1;
    return want;
}

size_t ccomp_cm_memory(int level, uint64_t n)
{
    if (level < CCOMP_CM_MIN_LEVEL || level > CCOMP_CM_MAX_LEVEL) return 0;
    return sizeof(cm_model) + hash_bytes(level, n) + 64 + 4 * match_entries(level, n) + 2 * 33 * 65536;
}

static void model_free(cm_model *m)
{
    if (m == NULL) return;
    free(m->ht_mem);
    free(m->mt);
    free(m->apm);
    free(m);
}

static inline uint32_t counter_init(int p12)
{
    return (uint32_t)p12 << 20;
}

static void model_predict(cm_model *m);
static void byte_contexts(cm_model *m, const uint32_t *h);

static cm_model *model_new(int level, uint64_t n, const uint8_t *buf)
{
    size_t hb = hash_bytes(level, n), me = match_entries(level, n), i;
    int k, j;
    cm_model *m = (cm_model *)calloc(1, sizeof *m);
    if (m == NULL) return NULL;
    m->ht_mem = (uint8_t *)calloc(hb + 64, 1);
    m->mt = (uint32_t *)calloc(me, sizeof(uint32_t));
    m->apm = (uint16_t *)malloc((size_t)65536 * 33 * sizeof(uint16_t));
    if (!m->ht_mem || !m->mt || !m->apm) {
        model_free(m);
        return NULL;
    }
    tables_init(&m->t);
    m->ht = (uint8_t *)(((uintptr_t)m->ht_mem + 63u) & ~(uintptr_t)63u);
    m->hbuckets_mask = (uint32_t)(hb / 16u - 1u);
    m->mmask = (uint32_t)(me - 1u);
    for (i = 0; i < 256; i++) m->o0p[i] = counter_init(2048);
    for (k = 0; k < N_HASHED; k++)
        for (i = 0; i < 256; i++) {
            unsigned n0 = m->t.n0[i], n1 = m->t.n1[i];
            m->hsm[k][i] = counter_init((int)((4096u * (2u * n1 + 1u)) / (2u * (n0 + n1) + 2u)));
        }
    for (i = 0; i < 128; i++) m->msm[i] = counter_init((i & 1) ? 3072 : 1024);
    for (k = 0; k < N_IN; k++) {
        int32_t w = k < N_IN - N_PAD ? W_INIT : 0;
        for (i = 0; i < 256; i++) m->w0[i][k] = w;
        for (i = 0; i < W1_SETS; i++) m->w1[i][k] = w;
    }
    for (j = 0; j < 33; j++) m->apm_row[j] = (int16_t)(squash_calc((j - 16) * 128) * 16);
    m->buf = buf;
    m->c0 = 1;
    m->mbit = -1;
    byte_contexts(m, NULL);
    model_predict(m);
    return m;
}

#if defined(__GNUC__) && !defined(__clang__)
#define CM_UNROLL _Pragma("GCC unroll 8")
#else
#define CM_UNROLL
#endif

#if defined(__GNUC__)
#define CM_PREFETCH(p) __builtin_prefetch(p)
#else
#define CM_PREFETCH(p) ((void)(p))
#endif

static inline uint8_t *bucket_line(const cm_model *m, uint32_t h)
{
    return m->ht + (size_t)(h & m->hbuckets_mask & ~3u) * 16u;
}

/* The bucket of context hash h: found by its check byte among the four
 * buckets of its line, or taken over (cleared) from the least used one. */
static inline uint8_t *bucket_find(cm_model *m, uint32_t h)
{
    uint8_t *line = bucket_line(m, h), *best;
    uint8_t chk = (uint8_t)(h >> 24);
    int i, best_seen, s;
    for (i = 0; i < 4; i++)
        if (line[16 * i] == chk) return line + 16 * i;
    best = line;
    best_seen = 1 << 30;
    for (i = 0; i < 4; i++) {
        s = m->t.seen[line[16 * i + 1]];
        if (s < best_seen) {
            best_seen = s;
            best = line + 16 * i;
        }
    }
    memset(best, 0, 16);
    best[0] = chk;
    return best;
}

static inline int is_word_byte(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 128;
}

static inline void word_step(uint32_t word, uint32_t word_prev, uint32_t c, uint32_t *nw, uint32_t *nwp)
{
    if (is_word_byte(c)) {
        uint32_t lc = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        *nw = (word + lc + 1) * 0x2F0B3C6Du;
        *nwp = word_prev;
    } else {
        *nw = 0;
        *nwp = word ? word : word_prev;
    }
}

/* The context hashes of a byte that follows c4 (the last four bytes, latest
 * lowest), c8 (the four before) and the word hashes; h[N_HASHED] is the match
 * model's hash. */
static inline void context_hashes(uint32_t c4, uint32_t c8, uint32_t word, uint32_t word_prev, uint32_t *h)
{
    uint32_t c1 = c4 & 255;
    h[0] = hash2(c4 & 0xffff, 2);
    h[1] = hash2(c4 & 0xffffff, 3);
    h[2] = hash2(c4, 4);
    h[3] = hash2(word + (word ? 0 : c1 << 8), 7);
    h[4] = hash2(word, word_prev + 8);
    h[N_HASHED] = hash2(c4, (c8 & 0xffff) + 99);
}

/* Starts the next byte: its contexts' buckets and the match model.  h holds
 * its context hashes (already prefetched), or is NULL to compute them. */
static void byte_contexts(cm_model *m, const uint32_t *h)
{
    int k;
    uint32_t hm, c1 = m->c4 & 255;
    if (!m->row_ready[c1]) {
        /* the first byte after c1: set up its order-1 rows (keeps small inputs cheap) */
        for (k = 0; k < 256; k++) {
            m->o1p[c1 << 8 | (uint32_t)k] = counter_init(2048);
            memcpy(m->apm + ((size_t)c1 << 8 | (size_t)k) * 33, m->apm_row, sizeof m->apm_row);
        }
        m->row_ready[c1] = 1;
    }
    if (h == NULL)
        context_hashes(m->c4, m->c8, m->word, m->word_prev, m->h);
    else
        memcpy(m->h, h, sizeof m->h);
    CM_UNROLL
    for (k = 0; k < N_HASHED; k++) {
        m->bucket[k] = bucket_find(m, m->h[k]);
        m->cp[k] = m->bucket[k] + 1;
    }
    hm = m->h[N_HASHED] & m->mmask;
    if (m->pos >= MATCH_MIN) {
        if (m->mlen == 0) {
            uint32_t cand = m->mt[hm];
            if (cand > 0) {
                uint32_t len = 0;
                while (len < MATCH_VERIFY && len < cand && m->buf[cand - 1 - len] == m->buf[m->pos - 1 - len]) len++;
                if (len >= MATCH_MIN) {
                    m->mlen = len;
                    m->mptr = cand;
                }
            }
        }
        m->mt[hm] = (uint32_t)m->pos;
    }
    if (m->mlen > 0) {
        m->mexp = m->buf[m->mptr];
        m->mbit = 0;
    } else {
        m->mbit = -1;
    }
}

static inline int squash(const cm_model *m, int x)
{
    if (x > 2047) x = 2047;
    if (x < -2047) x = -2047;
    return m->t.squash[x + 2048];
}

static inline int match_len_bucket(uint32_t len)
{
    if (len < 16) return (int)len;
    if (len < 64) return 16 + (int)((len - 16) >> 2);
    if (len < 512) return 28 + (int)((len - 64) >> 4);
    return 63;
}

/* The mixer.  Reference: dot = (sum of (w[i] >> 4) * x[i]) >> 12, i.e. the
 * weights with 12 fractional bits (|w| <= W_MAX keeps w >> 4 in int16); the
 * training step w[i] += (x[i] * err + 2^13) >> 14, clamped to +-W_MAX, with
 * |x| <= 2047 and |err| <= 2^14.  The SSE2 versions compute exactly the same
 * integers (checked by ccomp_cm_mixer_check). */
static inline int32_t mixer_dot_ref(const int32_t *w, const int16_t *x)
{
    int32_t s = 0;
    int i;
    for (i = 0; i < N_IN; i++) s += (w[i] >> 4) * x[i];
    return s >> 12;
}

static inline void mixer_train_ref(int32_t *w, const int16_t *x, int32_t err)
{
    int i;
    for (i = 0; i < N_IN; i++) {
        int32_t v = w[i] + ((x[i] * err + 8192) >> 14);
        w[i] = v > W_MAX ? W_MAX : v < -W_MAX ? -W_MAX : v;
    }
}

#if defined(__SSE2__)
#include <emmintrin.h>
#define CM_HAVE_SSE2 1

static inline int32_t mixer_dot_sse2(const int32_t *w, const int16_t *x)
{
    __m128i x0 = _mm_loadu_si128((const __m128i *)x);
    __m128i x1 = _mm_loadl_epi64((const __m128i *)(x + 8));
    __m128i w0 = _mm_srai_epi32(_mm_loadu_si128((const __m128i *)w), 4);
    __m128i w1 = _mm_srai_epi32(_mm_loadu_si128((const __m128i *)(w + 4)), 4);
    __m128i w2 = _mm_srai_epi32(_mm_loadu_si128((const __m128i *)(w + 8)), 4);
    __m128i s = _mm_add_epi32(_mm_madd_epi16(_mm_packs_epi32(w0, w1), x0),
                              _mm_madd_epi16(_mm_packs_epi32(w2, _mm_setzero_si128()), x1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s) >> 12;
}

static inline __m128i clamp_w(__m128i v)
{
    const __m128i hi = _mm_set1_epi32(W_MAX), lo = _mm_set1_epi32(-W_MAX);
    __m128i gt = _mm_cmpgt_epi32(v, hi), lt = _mm_cmplt_epi32(v, lo);
    v = _mm_or_si128(_mm_and_si128(gt, hi), _mm_andnot_si128(gt, v));
    return _mm_or_si128(_mm_and_si128(lt, lo), _mm_andnot_si128(lt, v));
}

static inline void mixer_train_sse2(int32_t *w, const int16_t *x, int32_t err)
{
    const __m128i e = _mm_set1_epi16((int16_t)err), round = _mm_set1_epi32(8192);
    const __m128i hi = _mm_set1_epi32(W_MAX), lo = _mm_set1_epi32(-W_MAX);
    __m128i x0 = _mm_loadu_si128((const __m128i *)x);
    __m128i x1 = _mm_loadl_epi64((const __m128i *)(x + 8));
    __m128i lo0 = _mm_mullo_epi16(x0, e), hi0 = _mm_mulhi_epi16(x0, e);
    __m128i lo1 = _mm_mullo_epi16(x1, e), hi1 = _mm_mulhi_epi16(x1, e);
    __m128i *wv = (__m128i *)w;
    __m128i v0 = _mm_add_epi32(_mm_loadu_si128(wv),
                               _mm_srai_epi32(_mm_add_epi32(_mm_unpacklo_epi16(lo0, hi0), round), 14));
    __m128i v1 = _mm_add_epi32(_mm_loadu_si128(wv + 1),
                               _mm_srai_epi32(_mm_add_epi32(_mm_unpackhi_epi16(lo0, hi0), round), 14));
    __m128i v2 = _mm_add_epi32(_mm_loadu_si128(wv + 2),
                               _mm_srai_epi32(_mm_add_epi32(_mm_unpacklo_epi16(lo1, hi1), round), 14));
    __m128i out = _mm_or_si128(_mm_or_si128(_mm_cmpgt_epi32(v0, hi), _mm_cmplt_epi32(v0, lo)),
                               _mm_or_si128(_mm_cmpgt_epi32(v1, hi), _mm_cmplt_epi32(v1, lo)));
    out = _mm_or_si128(out, _mm_or_si128(_mm_cmpgt_epi32(v2, hi), _mm_cmplt_epi32(v2, lo)));
    if (_mm_movemask_epi8(out)) { /* rare: a weight at its limit */
        v0 = clamp_w(v0);
        v1 = clamp_w(v1);
        v2 = clamp_w(v2);
    }
    _mm_storeu_si128(wv, v0);
    _mm_storeu_si128(wv + 1, v1);
    _mm_storeu_si128(wv + 2, v2);
}
#define mixer_dot mixer_dot_sse2
#define mixer_train mixer_train_sse2
#else
#define CM_HAVE_SSE2 0
#define mixer_dot mixer_dot_ref
#define mixer_train mixer_train_ref
#endif

size_t ccomp_cm_mixer_check(uint64_t seed, size_t rounds)
{
    size_t r, bad = 0;
    int i;
    uint64_t z = seed;
    for (r = 0; r < rounds; r++) {
        int32_t wa[N_IN], wb[N_IN], err;
        if ((r & 0xffffu) == 0xffffu && ccomp_cancelled()) break; /* a test hook, but never a call that cannot stop */
        int16_t x[N_IN];
        for (i = 0; i < N_IN; i++) {
            z = z * 6364136223846793005ull + 1442695040888963407ull;
            /* weights anywhere in range, often at the limits; inputs up to +-2047 */
            wa[i] = (int32_t)((z >> 20) % (2u * W_MAX + 1u)) - W_MAX;
            if ((z >> 8) % 8 == 0) wa[i] = (z >> 12) & 1 ? W_MAX : -W_MAX;
            x[i] = (int16_t)((int32_t)((z >> 40) % 4095u) - 2047);
            wb[i] = wa[i];
        }
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        err = ((int32_t)((z >> 33) % 8191u) - 4095) * MIX_RATE;
        if (mixer_dot_ref(wa, x) != mixer_dot(wb, x)) bad++;
        mixer_train_ref(wa, x, err);
        mixer_train(wb, x, err);
        if (memcmp(wa, wb, sizeof wa) != 0) bad++;
    }
    return bad;
}

static void model_predict(cm_model *m)
{
    int k, p12, s, pa, pr;
    uint32_t c0 = m->c0, c1 = m->c4 & 255, actx;
    const uint16_t *a;
    CM_UNROLL
    for (k = 0; k < N_HASHED; k++) m->x[k] = m->t.stretch[m->hsm[k][*m->cp[k]] >> 20];
    m->x[N_HASHED] = m->t.stretch[m->o0p[c0] >> 20];
    m->x[N_HASHED + 1] = m->t.stretch[m->o1p[c1 << 8 | c0] >> 20];
    if (m->mbit >= 0) {
        int eb = (m->mexp >> (7 - m->bitpos)) & 1;
        m->mbit = eb;
        m->mctx = match_len_bucket(m->mlen) * 2 + eb;
        m->x[N_HASHED + 2] = m->t.stretch[m->msm[m->mctx] >> 20];
        m->w1ctx = (1 + (match_len_bucket(m->mlen) >> 2)) * 8 + m->bitpos;
    } else {
        m->x[N_HASHED + 2] = 0;
        m->w1ctx = m->bitpos;
    }
    m->x[N_HASHED + 3] = 256;

    {
        int32_t d0 = mixer_dot(m->w0[c0], m->x), d1 = mixer_dot(m->w1[m->w1ctx], m->x);
        m->pm0 = squash(m, d0);
        m->pm1 = squash(m, d1);
        m->pm = p12 = squash(m, (d0 + d1) >> 1);
    }

    /* SSE by order 1: interpolate between the two nearest of 33 points */
    actx = c0 | c1 << 8;
    s = m->t.stretch[p12] + 2048; /* 1 .. 4095 */
    m->apm_idx = (int)(actx * 33u) + (s >> 7);
    m->apm_w = s & 127;
    a = m->apm + m->apm_idx;
    pa = (a[0] * (128 - m->apm_w) + a[1] * m->apm_w) >> 7;
    pr = (p12 * 16 + pa * 3) >> 2;
    if (pr < CM_PMIN) pr = CM_PMIN;
    if (pr > CM_PMAX) pr = CM_PMAX;
    m->pr = pr;
}

static inline void counter_update(uint32_t *c, int y, uint32_t limit, const uint32_t *recip)
{
    uint32_t v = *c, n = v & 1023u;
    int32_t p = (int32_t)(v >> 10); /* 22 bits */
    int32_t target = y ? (1 << 22) - 1 : 0;
    p += (int32_t)(((int64_t)(target - p) * recip[n]) >> 16);
    *c = (uint32_t)p << 10 | (n < limit ? n + 1 : n);
}

static void model_update(cm_model *m, int y)
{
    int k;
    uint32_t c0 = m->c0, c1 = m->c4 & 255;
    const uint32_t *recip = m->t.recip;

    {
        /* a mixer that was right within MIX_SKIP / 4096 is left as it is (saves time, costs ~0.02%) */
        int e0 = (y << 12) - m->pm0, e1 = (y << 12) - m->pm1;
        if (e0 > MIX_SKIP || e0 < -MIX_SKIP) mixer_train(m->w0[c0], m->x, e0 * MIX_RATE);
        if (e1 > MIX_SKIP || e1 < -MIX_SKIP) mixer_train(m->w1[m->w1ctx], m->x, e1 * MIX_RATE);
    }
    {
        uint16_t *a = m->apm + m->apm_idx + (m->apm_w >> 6);
        int target = y ? 65535 : 0;
        *a = (uint16_t)(*a + ((target - *a) >> APM_RATE));
    }
    CM_UNROLL
    for (k = 0; k < N_HASHED; k++) {
        uint8_t st = *m->cp[k];
        counter_update(&m->hsm[k][st], y, LIMIT_STATE, recip);
        *m->cp[k] = m->t.next[st][y];
    }
    counter_update(&m->o0p[c0], y, LIMIT_DIRECT, recip);
    counter_update(&m->o1p[c1 << 8 | c0], y, LIMIT_DIRECT, recip);
    if (m->mbit >= 0) {
        counter_update(&m->msm[m->mctx], y, LIMIT_STATE, recip);
        if (m->mbit != y) {
            m->mbit = -1;
            m->mlen = 0;
        }
    }

    c0 = c0 << 1 | (uint32_t)y;
    m->bitpos++;
    if (m->bitpos == 8) {
        uint32_t c = c0 & 255;
        m->c8 = m->c8 << 8 | m->c4 >> 24;
        m->c4 = m->c4 << 8 | c;
        m->pos++;
        word_step(m->word, m->word_prev, c, &m->word, &m->word_prev);
        if (m->mlen > 0) {
            m->mptr++;
            if (m->mlen < 65535) m->mlen++;
        }
        m->c0 = 1;
        m->bitpos = 0;
        byte_contexts(m, m->hbyte[y]);
    } else {
        m->c0 = c0;
        if (m->bitpos == 4) {
            const uint32_t *hn = m->hnext[c0 & 1];
            CM_UNROLL
            for (k = 0; k < N_HASHED; k++) {
                m->bucket[k] = bucket_find(m, hn[k]);
                m->cp[k] = m->bucket[k] + 1;
            }
        } else {
            /* node of the nibble's binary tree: 1, 2..3, 4..7, 8..15 */
            uint32_t node = (c0 & ((1u << (m->bitpos & 3)) - 1u)) | (1u << (m->bitpos & 3));
            CM_UNROLL
            for (k = 0; k < N_HASHED; k++) m->cp[k] = m->bucket[k] + node;
            if (m->bitpos == 3) {
                /* the second nibble's buckets for either next bit: fetch them early */
                CM_UNROLL
                for (k = 0; k < N_HASHED; k++) {
                    m->hnext[0][k] = hash2(m->h[k], c0 << 1);
                    m->hnext[1][k] = hash2(m->h[k], c0 << 1 | 1u);
                    CM_PREFETCH(bucket_line(m, m->hnext[0][k]));
                    CM_PREFETCH(bucket_line(m, m->hnext[1][k]));
                }
            } else if (m->bitpos == 7) {
                /* the next byte's contexts for either last bit: fetch them early */
                int b;
                for (b = 0; b < 2; b++) {
                    uint32_t c = (c0 << 1 | (uint32_t)b) & 255, w, wp;
                    word_step(m->word, m->word_prev, c, &w, &wp);
                    context_hashes(m->c4 << 8 | c, m->c8 << 8 | m->c4 >> 24, w, wp, m->hbyte[b]);
                    CM_UNROLL
                    for (k = 0; k < N_HASHED; k++) CM_PREFETCH(bucket_line(m, m->hbyte[b][k]));
                    CM_PREFETCH(m->mt + (m->hbyte[b][N_HASHED] & m->mmask));
                }
            }
        }
    }
    model_predict(m);
}

/* ---------------------------------------------------------------- container */

static int report(ccomp_cm_progress_fn progress, void *ctx, uint64_t done, uint64_t total)
{
    return progress != NULL && progress(ctx, done, total) != 0;
}

ccomp_status ccomp_cm_compress(const uint8_t *data, size_t n, int level, ccomp_cm_progress_fn progress,
                               void *progress_ctx, uint8_t **out, size_t *out_len, ccomp_error *err)
{
    ccomp_rc_enc e;
    cm_model *m = NULL;
    size_t i, words, total;
    uint8_t *blob, *own = NULL;
    ccomp_status st = CCOMP_OK;

    if (out == NULL || out_len == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "output pointers must not be NULL");
    *out = NULL;
    *out_len = 0;
    if (data == NULL && n > 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "data is NULL but n = %zu", n);
    if (level < CCOMP_CM_MIN_LEVEL || level > CCOMP_CM_MAX_LEVEL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "level must be between %d and %d, got %d", CCOMP_CM_MIN_LEVEL,
                          CCOMP_CM_MAX_LEVEL, level);
    if ((uint64_t)n > (uint64_t)UINT32_MAX - 1u)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "inputs are limited to 4 GiB - 2 bytes, got %zu bytes", n);

    ccomp_rc_enc_init(&e);
    if (n > 0) {
        /* the model, the coder and the checksum all read this copy: a caller's buffer that
         * changes during the call cannot make them disagree (a stream that never decodes) */
        own = (uint8_t *)malloc(n);
        if (own == NULL) {
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu bytes for a copy of the input", n);
            goto done;
        }
        memcpy(own, data, n);
        data = own;
        m = model_new(level, n, data);
        if (m == NULL) {
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu bytes of model memory",
                            ccomp_cm_memory(level, n));
            goto done;
        }
        for (i = 0; i < n; i++) {
            int c = data[i], b;
            for (b = 7; b >= 0; b--) {
                int y = (c >> b) & 1;
                uint32_t p1 = (uint32_t)m->pr;
                if (!(y ? rc_encode_step(&e, 0, p1, CM_PREC) : rc_encode_step(&e, p1, 65536u - p1, CM_PREC))) {
                    st = ccomp_fail(err, CCOMP_ERR_NOMEM, "out of memory for the compressed stream");
                    goto done;
                }
                model_update(m, y);
            }
            if (((i + 1) & (CM_CANCEL_STEP - 1)) == 0 && ccomp_cancelled()) {
                st = ccomp_check_cancel(err, "compress");
                goto done;
            }
            if (((i + 1) & (CCOMP_CM_PROGRESS_STEP - 1)) == 0 && i + 1 < n &&
                report(progress, progress_ctx, i + 1, n)) {
                st = ccomp_fail(err, CCOMP_ERR_CANCELLED, "cancelled after %zu of %zu bytes", i + 1, n);
                goto done;
            }
        }
    }
    words = ccomp_rc_enc_sealed_words(&e);
    total = CCOMP_CM_OVERHEAD + 4 * words;
    blob = (uint8_t *)malloc(total);
    if (blob == NULL) {
        st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu bytes for the output", total);
        goto done;
    }
    memcpy(blob, "CCCM", 4);
    blob[4] = (uint8_t)CCOMP_CM_VERSION;
    blob[5] = (uint8_t)level;
    blob[6] = 0;
    blob[7] = 0;
    rc_store_le64(blob + 8, (uint64_t)n);
    rc_store_le32(blob + 16, ccomp_crc32(data, n));
    ccomp_rc_enc_seal_to(&e, blob + CCOMP_CM_HEADER_BYTES);
    rc_store_le32(blob + total - 4, ccomp_crc32(blob, total - 4));
    *out = blob;
    *out_len = total;
    if (report(progress, progress_ctx, n, n)) {
        free(blob);
        *out = NULL;
        *out_len = 0;
        st = ccomp_fail(err, CCOMP_ERR_CANCELLED, "cancelled at the end");
    }
done:
    model_free(m);
    free(own);
    ccomp_rc_enc_free(&e);
    return st;
}

ccomp_status ccomp_cm_parse(const uint8_t *blob, size_t n, ccomp_cm_info *info, ccomp_error *err)
{
    uint64_t max_len;
    memset(info, 0, sizeof *info);
    if (blob == NULL && n > 0) return ccomp_fail(err, CCOMP_ERR_VALUE, "blob is NULL but n = %zu", n);
    if (n < CCOMP_CM_OVERHEAD)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "%zu bytes is too short for a ccomp.ac.compress stream (at least %u)",
                          n, CCOMP_CM_OVERHEAD);
    if (memcmp(blob, "CCCM", 4) != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "not a ccomp.ac.compress stream (bad magic)");
    if (ccomp_crc32(blob, n - 4u) != rc_load_le32(blob + n - 4u))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "CRC-32 mismatch: the stream is damaged or truncated");
    info->version = blob[4];
    info->level = blob[5];
    info->flags = blob[6];
    info->length = rc_load_le64(blob + 8);
    info->data_crc = rc_load_le32(blob + 16);
    info->stream = blob + CCOMP_CM_HEADER_BYTES;
    info->stream_bytes = n - CCOMP_CM_OVERHEAD;
    if (info->version != (int)CCOMP_CM_VERSION)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "unsupported stream version %d (this build reads %u)", info->version,
                          CCOMP_CM_VERSION);
    if (info->level < CCOMP_CM_MIN_LEVEL || info->level > CCOMP_CM_MAX_LEVEL || info->flags != 0 || blob[7] != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid stream parameters (level %d, flags %d)", info->level,
                          info->flags);
    if (info->stream_bytes % 4u != 0)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "the coded stream is %zu bytes, not a whole number of words",
                          info->stream_bytes);
    if ((info->length == 0) != (info->stream_bytes == 0))
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "length %llu does not match a %zu-byte coded stream",
                          (unsigned long long)info->length, info->stream_bytes);
    max_len = ((uint64_t)info->stream_bytes * 8u + 64u) * CM_MAX_BYTES_PER_BIT;
    if (info->length > max_len || info->length > (uint64_t)UINT32_MAX - 1u || info->length > (uint64_t)SIZE_MAX)
        return ccomp_fail(err, CCOMP_ERR_CORRUPT, "length %llu is more than a %zu-byte coded stream can hold",
                          (unsigned long long)info->length, info->stream_bytes);
    return CCOMP_OK;
}

ccomp_status ccomp_cm_decompress(const uint8_t *blob, size_t n, ccomp_cm_progress_fn progress, void *progress_ctx,
                                 uint8_t **out, size_t *out_len, ccomp_error *err)
{
    ccomp_cm_info info;
    ccomp_rc_dec d;
    cm_model *m = NULL;
    uint8_t *buf = NULL;
    size_t len, i;
    ccomp_status st;

    if (out == NULL || out_len == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "output pointers must not be NULL");
    *out = NULL;
    *out_len = 0;
    st = ccomp_cm_parse(blob, n, &info, err);
    if (st != CCOMP_OK) return st;
    len = (size_t)info.length;
    buf = (uint8_t *)malloc(len ? len : 1);
    if (buf == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu bytes for the output", len);
    if (len > 0) {
        st = ccomp_rc_dec_init(&d, info.stream, info.stream_bytes, err);
        if (st != CCOMP_OK) goto fail;
        m = model_new(info.level, len, buf);
        if (m == NULL) {
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu bytes of model memory",
                            ccomp_cm_memory(info.level, len));
            goto fail;
        }
        for (i = 0; i < len; i++) {
            int b, c = 0;
            for (b = 0; b < 8; b++) {
                uint32_t p1 = (uint32_t)m->pr, t = rc_dec_target_raw(&d, CM_PREC);
                int y;
                if (t == UINT32_MAX) {
                    st = ccomp_fail(err, CCOMP_ERR_CORRUPT, "invalid coded stream at byte %zu", i);
                    goto fail;
                }
                y = t < p1;
                if (y)
                    rc_dec_advance_raw(&d, 0, p1, CM_PREC);
                else
                    rc_dec_advance_raw(&d, p1, 65536u - p1, CM_PREC);
                c = c << 1 | y;
                if (b == 7) buf[i] = (uint8_t)c; /* before the model's byte update reads it */
                model_update(m, y);
            }
            if (d.overread > 2) {
                st = ccomp_fail(err, CCOMP_ERR_CORRUPT, "the coded stream ends early (at byte %zu of %zu)", i + 1,
                                len);
                goto fail;
            }
            if (((i + 1) & (CM_CANCEL_STEP - 1)) == 0 && ccomp_cancelled()) {
                st = ccomp_check_cancel(err, "decompress");
                goto fail;
            }
            if (((i + 1) & (CCOMP_CM_PROGRESS_STEP - 1)) == 0 && i + 1 < len &&
                report(progress, progress_ctx, i + 1, len)) {
                st = ccomp_fail(err, CCOMP_ERR_CANCELLED, "cancelled after %zu of %zu bytes", i + 1, len);
                goto fail;
            }
        }
        model_free(m);
        m = NULL;
    }
    if (ccomp_crc32(buf, len) != info.data_crc) {
        st = ccomp_fail(err, CCOMP_ERR_CORRUPT, "CRC-32 of the decoded data does not match: the stream is damaged");
        goto fail;
    }
    if (report(progress, progress_ctx, len, len)) {
        st = ccomp_fail(err, CCOMP_ERR_CANCELLED, "cancelled at the end");
        goto fail;
    }
    *out = buf;
    *out_len = len;
    return CCOMP_OK;
fail:
    model_free(m);
    free(buf);
    return st;
}

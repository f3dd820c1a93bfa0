/* Checks ccomp's lz4 size model against real lz4 (LZ4F_compressFrame), and
 * benchmarks it.
 *
 *   test_lz4_model [--pairs N] [--seed S] [--bench] FILE...
 *
 * (source, target) pairs are generated from the files (pieces of random
 * length, mostly 0..4 KB, some up to and around the 64 KB one-block limit,
 * pieces under 13 bytes, targets continuing or copying their source) and from
 * synthetic data (random bytes, 2-4 symbol alphabets, runs of one byte, empty
 * inputs).  For each pair a||b the frame size of LZ4F_compressFrame(level 0,
 * default 64 KB blocks, linked blocks, no checksums, content size) is compared
 * with ccomp_lz4_model_size(a, b) and with set_prefix(a) +
 * size_with_prefix(b); each source meets several targets and an earlier
 * target is asked again afterwards to check that the prefix state is intact.
 * Inputs over ccomp_lz4_model_max_input() must give CCOMP_ERR_UNSUPPORTED.
 * Before the N random pairs come fixed checks: error cases, every split of
 * short inputs (0..80 bytes) of each data kind, and long series of calls on
 * one prefix (state left behind by earlier calls, generation wrap-around).
 * Some pairs also check the framing facts the model relies on (header sizes,
 * the raw-block fallback against LZ4_compress_default with n - 1 bytes,
 * levels 1 and 2 giving the same frame size as level 0).  Exit status 0 when
 * everything matches; otherwise the first mismatch is printed with its seed,
 * phase, group and target (rerun with the same --seed and --pairs).
 *
 * --bench: pairs/s of the model (prefix reuse, ~1 KB text sources, 164
 * targets of 160 bytes cut from the text files per source; also
 * ccomp_lz4_model_size without reuse) against one LZ4F_compressFrame per
 * pair, single thread, best of 7, process CPU time (wall clock in brackets:
 * the CPU time is steadier on a shared machine).
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -Icsrc/include \
 *          tests/c/test_lz4_model.c csrc/zipfit/lz4_model.c csrc/util/status.c -llz4
 * (add -fsanitize=address,undefined -fno-omit-frame-pointer -g for the
 * sanitizer build; the default 20000 random pairs take a few seconds there).
 * Run:   test_lz4_model python/ccomp/data/corpus/{alice29.txt,asyoulik.txt,lcet10.txt,...}
 */
#define _POSIX_C_SOURCE 200809L

#include <lz4.h>
#include <lz4frame.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccomp/lz4_model.h"
#include "test_util.h"

static file_data *g_files;
static int g_nfiles;
static size_t g_max;

/* ------------------------------------------------------------------------ */

/* Best wall-clock and CPU (process) times of repeated measurements. */
typedef struct timing {
    double wall, cpu, w0, c0;
} timing;

static void timing_start(timing *t)
{
    t->w0 = clock_s(CLOCK_MONOTONIC);
    t->c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

static void timing_stop(timing *t, double scale)
{
    double w = (clock_s(CLOCK_MONOTONIC) - t->w0) * scale, c = (clock_s(CLOCK_PROCESS_CPUTIME_ID) - t->c0) * scale;
    if (w < t->wall) t->wall = w;
    if (c < t->cpu) t->cpu = c;
}

/* ------------------------------------------------------------------------ */
/* The reference */

static LZ4F_preferences_t g_prefs;
static uint8_t *g_dst;
static size_t g_dst_cap;

static void init_prefs(void)
{
    memset(&g_prefs, 0, sizeof g_prefs);
    g_prefs.compressionLevel = 0;
    g_prefs.frameInfo.blockSizeID = LZ4F_default;
    g_prefs.frameInfo.blockMode = LZ4F_blockLinked;
    g_prefs.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
    g_prefs.frameInfo.blockChecksumFlag = LZ4F_noBlockChecksum;
    g_prefs.frameInfo.contentSize = 1; /* replaced by the input size (not stored when 0) */
}

static size_t ref_size(const uint8_t *src, size_t n)
{
    size_t need = LZ4F_compressFrameBound(n, &g_prefs), r;
    if (need > g_dst_cap) {
        free(g_dst);
        g_dst_cap = need + 1024;
        g_dst = (uint8_t *)malloc(g_dst_cap);
        if (g_dst == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    g_prefs.frameInfo.contentSize = n;
    r = LZ4F_compressFrame(g_dst, g_dst_cap, src, n, &g_prefs);
    if (LZ4F_isError(r)) {
        fprintf(stderr, "LZ4F_compressFrame failed: %s\n", LZ4F_getErrorName(r));
        exit(2);
    }
    return r;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* After ref_size(src, n): checks the frame layout the model relies on.
 * Returns 0 when fine, else prints and returns 1. */
static int check_framing(const uint8_t *src, size_t n, size_t fsize)
{
    static uint8_t *blk;
    static size_t blk_cap;
    const uint8_t *f = g_dst;
    size_t hdr = (n > 0) ? 15 : 7, expect;
    int c;
    if (le32(f) != 0x184D2204u) {
        fprintf(stderr, "framing: bad magic for n=%zu\n", n);
        return 1;
    }
    if (((f[4] >> 3) & 1) != (n > 0)) {
        fprintf(stderr, "framing: content-size flag %d for n=%zu (expected %d)\n", (f[4] >> 3) & 1, n, n > 0);
        return 1;
    }
    if (n == 0) {
        if (fsize != 11 || le32(f + 7) != 0) {
            fprintf(stderr, "framing: empty input gave %zu bytes (expected 11 with end mark)\n", fsize);
            return 1;
        }
        return 0;
    }
    if (n + 16 > blk_cap) {
        free(blk);
        blk_cap = n + 1024;
        blk = (uint8_t *)malloc(blk_cap);
        if (blk == NULL) exit(2);
    }
    {
        int lvl;
        for (lvl = 1; lvl <= 2; lvl++) { /* levels 1 and 2 are the same fast mode */
            size_t r;
            static uint8_t *tmp;
            static size_t tmp_cap;
            LZ4F_preferences_t pl = g_prefs;
            size_t need = LZ4F_compressFrameBound(n, &pl);
            if (need > tmp_cap) {
                free(tmp);
                tmp_cap = need + 1024;
                tmp = (uint8_t *)malloc(tmp_cap);
                if (tmp == NULL) exit(2);
            }
            pl.compressionLevel = lvl;
            r = LZ4F_compressFrame(tmp, tmp_cap, src, n, &pl);
            if (LZ4F_isError(r) || r != fsize) {
                fprintf(stderr, "framing: level %d gave %zu bytes, level 0 %zu (n=%zu)\n", lvl, r, fsize, n);
                return 1;
            }
        }
    }
    {
        uint32_t bh = le32(f + hdr), bs = bh & 0x7fffffffu, raw = bh >> 31;
        c = LZ4_compress_default((const char *)src, (char *)blk, (int)n, (int)n - 1);
        expect = (c == 0 || (size_t)c >= n) ? n : (size_t)c;
        if (bs != expect || raw != (expect == n) || fsize != hdr + 4 + bs + 4 || le32(f + hdr + 4 + bs) != 0) {
            fprintf(stderr,
                    "framing: n=%zu frame=%zu block header size=%u raw=%u, LZ4_compress_default(n-1)=%d "
                    "(expected block %zu)\n",
                    n, fsize, bs, raw, c, expect);
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Input generation */

typedef struct piece {
    uint8_t *p;
    size_t n, cap;
} piece;

static void piece_reserve(piece *pc, size_t n)
{
    if (n > pc->cap || pc->p == NULL) {
        free(pc->p);
        pc->cap = n + 256;
        pc->p = (uint8_t *)malloc(pc->cap);
        if (pc->p == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
}

static size_t pick_len_small(uint64_t *r)
{
    switch (rnd(r, 10)) {
    case 0: return rnd(r, 13);            /* under LZ4_minLength */
    case 1: return rnd_range(r, 13, 40);  /* just above */
    case 2: return rnd_range(r, 2000, 4096);
    default: return rnd_range(r, 0, 2048);
    }
}

static const file_data *pick_file(uint64_t *r, int text_only)
{
    int i, tries;
    for (tries = 0; tries < 32; tries++) {
        const file_data *f = &g_files[rnd(r, (size_t)g_nfiles)];
        if (!text_only || f->text) return f;
    }
    for (i = 0; i < g_nfiles; i++)
        if (g_files[i].text) return &g_files[i];
    return &g_files[0];
}

/* Fills pc with len bytes of the given synthetic/corpus kind; *file_pos gets
 * the end position in the file for corpus pieces (or SIZE_MAX). */
static void gen_kind(uint64_t *r, piece *pc, int kind, size_t len, const file_data **src_file, size_t *file_end)
{
    size_t i;
    piece_reserve(pc, len);
    pc->n = len;
    *file_end = SIZE_MAX;
    switch (kind) {
    case 0: { /* corpus */
        const file_data *f = pick_file(r, 0);
        if (f->len == 0) {
            memset(pc->p, 'x', len);
            break;
        }
        if (len > f->len) {
            size_t done = 0;
            while (done < len) { /* wrap around a short file */
                size_t k = f->len < len - done ? f->len : len - done;
                memcpy(pc->p + done, f->data, k);
                done += k;
            }
        } else {
            size_t pos = rnd(r, f->len - len + 1);
            memcpy(pc->p, f->data + pos, len);
            *file_end = pos + len;
        }
        *src_file = f;
        break;
    }
    case 1: /* random bytes */
        for (i = 0; i < len; i++) pc->p[i] = (uint8_t)splitmix(r);
        break;
    case 2: { /* 2-4 symbol alphabet */
        uint8_t sym[4];
        size_t k = rnd_range(r, 2, 4);
        for (i = 0; i < 4; i++) sym[i] = (uint8_t)splitmix(r);
        if (rnd(r, 2)) {
            for (i = 0; i < len; i++) pc->p[i] = sym[rnd(r, k)];
        } else { /* skewed: mostly the first symbol */
            for (i = 0; i < len; i++) pc->p[i] = rnd(r, 8) ? sym[0] : sym[rnd(r, k)];
        }
        break;
    }
    default: { /* run of one byte, sometimes with a few breaks */
        uint8_t c = rnd(r, 2) ? 0 : (uint8_t)splitmix(r);
        memset(pc->p, c, len);
        if (len > 0 && rnd(r, 3) == 0) {
            size_t k = rnd_range(r, 1, 4);
            for (i = 0; i < k; i++) pc->p[rnd(r, len)] = (uint8_t)splitmix(r);
        }
        break;
    }
    }
}

static void gen_source(uint64_t *r, piece *a, const file_data **f, size_t *fend)
{
    int kind = rnd(r, 10) < 6 ? 0 : (int)rnd_range(r, 1, 3);
    size_t len;
    *f = NULL;
    switch (rnd(r, 40)) {
    case 0: len = 0; break;
    case 1: case 2: len = rnd_range(r, 4096, g_max); break;
    case 3: len = rnd_range(r, g_max - 300, g_max); break; /* near the limit */
    case 4: len = rnd_range(r, g_max - 20, g_max + 20); break;
    default: len = pick_len_small(r); break;
    }
    gen_kind(r, a, kind, len, f, fend);
}

static void gen_target(uint64_t *r, piece *b, const piece *a, const file_data *af, size_t afend)
{
    size_t len, i;
    const file_data *dummy;
    size_t dend;
    int what = (int)rnd(r, 16);
    switch (rnd(r, 12)) {
    case 0: len = rnd(r, 13); break;
    case 1: len = 0; break;
    case 2: len = rnd_range(r, 400, 4096); break;
    case 3: len = a->n < g_max ? rnd_range(r, 0, g_max - a->n + (rnd(r, 2) ? 16 : 0)) : rnd(r, 40); break;
    case 4: len = a->n + 40 < g_max ? g_max - a->n - 20 + rnd(r, 41) : rnd(r, 40); break; /* around the limit */
    default: len = rnd_range(r, 100, 220); break;
    }
    if (what <= 3 && af != NULL && afend != SIZE_MAX && afend + len <= af->len) {
        /* the continuation of the source in its file */
        piece_reserve(b, len);
        b->n = len;
        memcpy(b->p, af->data + afend, len);
        return;
    }
    if ((what == 4 || what == 5) && a->n > 0) {
        /* copies of pieces of the source, with a few changes */
        piece_reserve(b, len);
        b->n = len;
        for (i = 0; i < len;) {
            size_t s = rnd(r, a->n), k = rnd_range(r, 1, 300);
            if (what == 5 && rnd(r, 2)) s = a->n - 1 - rnd(r, a->n < 32 ? a->n : 32); /* near its end */
            if (k > a->n - s) k = a->n - s;
            if (k > len - i) k = len - i;
            memcpy(b->p + i, a->p + s, k);
            i += k;
            if (i < len && rnd(r, 2)) b->p[i++] = (uint8_t)splitmix(r);
        }
        return;
    }
    if (what == 6 && a->n > 0) { /* run of the source's last byte */
        piece_reserve(b, len);
        b->n = len;
        memset(b->p, a->p[a->n - 1], len);
        return;
    }
    gen_kind(r, b, what < 11 ? 0 : (int)rnd_range(r, 1, 3), len, &dummy, &dend);
}

/* ------------------------------------------------------------------------ */
/* The check */

typedef struct checker {
    ccomp_lz4_model *m;
    uint8_t *ab;
    size_t ab_cap;
    unsigned long long pairs, unsupported, framing;
    uint64_t seed;
    const char *phase;
} checker;

static uint8_t *exact_copy(const uint8_t *p, size_t n) /* so that ASan sees overreads */
{
    uint8_t *q = (uint8_t *)malloc(n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (n) memcpy(q, p, n);
    return q;
}

static void report_case(const checker *c, unsigned long long group, int t, const char *what, const piece *a,
                        const piece *b, size_t expect, size_t got, const char *msg)
{
    fprintf(stderr,
            "MISMATCH (%s): seed=%llu %s group=%llu target=%d na=%zu nb=%zu expected=%zu got=%zu%s%s\n", what,
            (unsigned long long)c->seed, c->phase, group, t, a->n, b->n, expect, got, msg ? " msg=" : "", msg ? msg : "");
}

/* Returns 0 when all pairs of the group match. */
static int check_group(checker *c, unsigned long long group, const piece *a, piece *bs, int nt, uint64_t *r)
{
    size_t *expect = (size_t *)malloc((size_t)nt * sizeof *expect);
    uint8_t *ac = exact_copy(a->p, a->n);
    ccomp_error err;
    ccomp_status st;
    int t, prefix_ok, rc = 0;
    if (expect == NULL) exit(2);

    ccomp_error_clear(&err);
    st = ccomp_lz4_model_set_prefix(c->m, a->n ? ac : NULL, a->n, &err);
    if (a->n > g_max) {
        if (st != CCOMP_ERR_UNSUPPORTED) {
            report_case(c, group, -1, "set_prefix over limit", a, &bs[0], CCOMP_ERR_UNSUPPORTED, st, err.msg);
            rc = 1;
            goto done;
        }
        prefix_ok = 0;
    } else if (st != CCOMP_OK) {
        report_case(c, group, -1, "set_prefix", a, &bs[0], CCOMP_OK, st, err.msg);
        rc = 1;
        goto done;
    } else {
        prefix_ok = 1;
    }
    /* a fresh copy of a so that the model cannot depend on the caller's buffer */
    if (a->n) memset(ac, 0xA5, a->n);

    for (t = 0; t < nt; t++) {
        const piece *b = &bs[t];
        size_t n = a->n + b->n, got = 0, got2 = 0;
        uint8_t *bc = exact_copy(b->p, b->n);
        uint8_t *a2 = exact_copy(a->p, a->n);
        if (n > c->ab_cap) {
            free(c->ab);
            c->ab_cap = n + 1024;
            c->ab = (uint8_t *)malloc(c->ab_cap);
            if (c->ab == NULL) exit(2);
        }
        if (a->n) memcpy(c->ab, a->p, a->n);
        if (b->n) memcpy(c->ab + a->n, b->p, b->n);
        if (n > g_max) {
            expect[t] = 0;
            if (!prefix_ok) { /* a refused prefix must not leave an earlier one in use */
                st = ccomp_lz4_model_size_with_prefix(c->m, bc, b->n, &got2, &err);
                if (st != CCOMP_ERR_UNSUPPORTED) {
                    report_case(c, group, t, "size_with_prefix after a refused prefix: status", a, b,
                                CCOMP_ERR_UNSUPPORTED, st, err.msg);
                    rc = 1;
                }
            }
            st = ccomp_lz4_model_size(c->m, a2, a->n, bc, b->n, &got, &err);
            if (st != CCOMP_ERR_UNSUPPORTED) {
                report_case(c, group, t, "size over limit: status", a, b, CCOMP_ERR_UNSUPPORTED, st, err.msg);
                rc = 1;
            }
            if (prefix_ok) {
                st = ccomp_lz4_model_size_with_prefix(c->m, bc, b->n, &got2, &err);
                if (st != CCOMP_ERR_UNSUPPORTED) {
                    report_case(c, group, t, "size_with_prefix over limit: status", a, b, CCOMP_ERR_UNSUPPORTED,
                                st, err.msg);
                    rc = 1;
                }
            }
            c->unsupported++;
        } else {
            size_t ref = ref_size(c->ab, n);
            expect[t] = ref;
            if (rnd(r, 16) == 0) {
                c->framing++;
                if (check_framing(c->ab, n, ref)) {
                    report_case(c, group, t, "framing facts", a, b, ref, ref, NULL);
                    rc = 1;
                }
            }
            st = ccomp_lz4_model_size(c->m, a->n ? a2 : NULL, a->n, b->n ? bc : NULL, b->n, &got, &err);
            if (st != CCOMP_OK || got != ref) {
                report_case(c, group, t, "ccomp_lz4_model_size", a, b, ref, st != CCOMP_OK ? (size_t)st : got,
                            st != CCOMP_OK ? err.msg : NULL);
                rc = 1;
            }
            st = ccomp_lz4_model_size_with_prefix(c->m, b->n ? bc : NULL, b->n, &got2, &err);
            if (st != CCOMP_OK || got2 != ref) {
                report_case(c, group, t, "size_with_prefix", a, b, ref, st != CCOMP_OK ? (size_t)st : got2,
                            st != CCOMP_OK ? err.msg : NULL);
                rc = 1;
            }
            c->pairs++;
        }
        free(bc);
        free(a2);
        if (rc) goto done;
    }
    /* the prefix state must be intact: ask earlier targets again */
    if (prefix_ok && nt > 0) {
        int k, again = nt > 1 ? 2 : 1;
        for (k = 0; k < again; k++) {
            int t0 = k == 0 ? 0 : (int)rnd(r, (size_t)nt);
            size_t got = 0;
            if (a->n + bs[t0].n > g_max) continue;
            st = ccomp_lz4_model_size_with_prefix(c->m, bs[t0].n ? bs[t0].p : NULL, bs[t0].n, &got, &err);
            if (st != CCOMP_OK || got != expect[t0]) {
                report_case(c, group, t0, "size_with_prefix asked again", a, &bs[t0], expect[t0],
                            st != CCOMP_OK ? (size_t)st : got, st != CCOMP_OK ? err.msg : NULL);
                rc = 1;
                goto done;
            }
            c->pairs++;
        }
    }
done:
    free(expect);
    free(ac);
    return rc;
}

/* Checks buf[0..len) as prefix buf[0..split) and the single target after it. */
static int check_split(checker *c, unsigned long long group, piece *a, piece *bs, const uint8_t *buf, size_t len,
                       size_t split, uint64_t *r)
{
    piece_reserve(a, split);
    a->n = split;
    memcpy(a->p, buf, split);
    piece_reserve(&bs[0], len - split);
    bs[0].n = len - split;
    memcpy(bs[0].p, buf + split, len - split);
    return check_group(c, group, a, bs, 1, r);
}

/* Every split of short inputs, and every length of a few prefixes. */
static int check_sweep(checker *c, uint64_t *r)
{
    piece a = {0}, bs[1] = {{0}};
    unsigned long long group = 0;
    int kind;
    uint8_t *buf = (uint8_t *)malloc(600);
    const file_data *f;
    size_t fend;
    if (buf == NULL) exit(2);
    for (kind = 0; kind < 4; kind++) {
        piece full = {0};
        size_t len, split;
        gen_kind(r, &full, kind, 600, &f, &fend);
        memcpy(buf, full.p, 600);
        for (len = 0; len <= 80; len++) {
            for (split = 0; split <= len; split++) {
                if (check_split(c, group++, &a, bs, buf, len, split, r)) return 1;
            }
        }
        for (len = 81; len <= 600; len += 7) {
            split = rnd(r, len + 1);
            if (check_split(c, group++, &a, bs, buf, len, split, r)) return 1;
        }
        free(full.p);
    }
    free(a.p);
    free(bs[0].p);
    free(buf);
    return 0;
}

/* Many calls on one prefix: whatever per-call bookkeeping the model keeps
 * (generation counters, undo logs) must not let one target's state leak into
 * a later target, also after 2^16 calls.  Each target is compared with the
 * library right after a long series of other calls. */
static int check_many_calls(checker *c, uint64_t *r)
{
    const file_data *f = pick_file(r, 1);
    piece a = {0}, x = {0}, y = {0};
    const file_data *df;
    size_t dend, k, got = 0, ref_x, ref_y, na = 1000, nt = 160;
    ccomp_error err;
    uint8_t *ab = (uint8_t *)malloc(na + nt);
    int rc = 0;
    if (ab == NULL) exit(2);
    if (f->len < na + 4 * nt) {
        gen_kind(r, &a, 2, na, &df, &dend);
        gen_kind(r, &x, 2, nt, &df, &dend);
        gen_kind(r, &y, 2, nt, &df, &dend);
    } else {
        piece_reserve(&a, na);
        piece_reserve(&x, nt);
        piece_reserve(&y, nt);
        a.n = na;
        x.n = y.n = nt;
        memcpy(a.p, f->data, na);
        memcpy(x.p, f->data + na, nt); /* continues a: long matches */
        memcpy(y.p, f->data + f->len - nt, nt);
    }
    memcpy(ab, a.p, na);
    memcpy(ab + na, x.p, nt);
    ref_x = ref_size(ab, na + nt);
    memcpy(ab + na, y.p, nt);
    ref_y = ref_size(ab, na + nt);
    if (ccomp_lz4_model_set_prefix(c->m, a.p, na, &err) != CCOMP_OK) {
        fprintf(stderr, "many calls: set_prefix failed: %s\n", err.msg);
        rc = 1;
    }
    /* x, then L - 1 calls with other targets (empty ones, and y once), then
     * x again: a 16-bit generation counter that wraps after L calls would
     * see the first x's entries as current */
    for (k = 0; k < 4 && rc == 0; k++) {
        size_t L = (k & 1) ? 65536u : 65535u, i;
        for (i = 0; i <= L && rc == 0; i++) {
            int which = (i == 0 || i == L) ? 1 : (i == L / 2) ? 2 : 0;
            const piece *b = which == 1 ? &x : &y;
            size_t expect = which == 1 ? ref_x : ref_y;
            if (which == 0) {
                if (ccomp_lz4_model_size_with_prefix(c->m, NULL, 0, &got, &err) != CCOMP_OK) rc = 1;
                continue;
            }
            if (ccomp_lz4_model_size_with_prefix(c->m, b->p, b->n, &got, &err) != CCOMP_OK || got != expect) {
                fprintf(stderr, "MISMATCH (many calls): series %zu call %zu, target %s: expected %zu got %zu\n", k,
                        i, which == 1 ? "x" : "y", expect, got);
                rc = 1;
            }
            c->pairs++;
            if (ccomp_lz4_model_size(c->m, a.p, na, b->p, b->n, &got, &err) != CCOMP_OK || got != expect) {
                fprintf(stderr, "MISMATCH (many calls, size): series %zu call %zu: expected %zu got %zu\n", k, i,
                        expect, got);
                rc = 1;
            }
        }
    }
    free(a.p);
    free(x.p);
    free(y.p);
    free(ab);
    return rc;
}

/* Inputs of exactly max_input - 1, max_input and max_input + 1 bytes, split in
 * several ways (the target continuing the source), for each data kind. */
static int check_limit(checker *c, uint64_t *r)
{
    static const size_t splits[] = {0, 1, 12, 13, 160, 4096, 65000};
    piece full = {0}, a = {0}, bs[3];
    const file_data *df;
    size_t dend, si;
    int kind, t, rc = 0;
    unsigned long long group = 0;
    memset(bs, 0, sizeof bs);
    for (kind = 0; kind < 4 && rc == 0; kind++) {
        gen_kind(r, &full, kind, g_max + 2, &df, &dend);
        for (si = 0; si < sizeof splits / sizeof splits[0] && rc == 0; si++) {
            size_t na = g_max - splits[si];
            piece_reserve(&a, na);
            a.n = na;
            memcpy(a.p, full.p, na);
            for (t = 0; t < 3; t++) { /* n = max - 1, max, max + 1 (max .. max + 2 when a is max) */
                size_t nb = splits[si] > 0 ? splits[si] + (size_t)t - 1u : (size_t)t;
                piece_reserve(&bs[t], nb);
                bs[t].n = nb;
                memcpy(bs[t].p, full.p + na, nb);
            }
            if (check_group(c, group++, &a, bs, 3, r)) rc = 1;
        }
    }
    free(full.p);
    free(a.p);
    for (t = 0; t < 3; t++) free(bs[t].p);
    return rc;
}

static int check_errors(ccomp_lz4_model *m)
{
    ccomp_error err;
    size_t out = 0;
    uint8_t x[4] = {1, 2, 3, 4};
    ccomp_error_clear(&err);
    if (ccomp_lz4_model_size(m, NULL, 3, x, 4, &out, &err) != CCOMP_ERR_VALUE || err.code != CCOMP_ERR_VALUE ||
        err.msg[0] == '\0') {
        fprintf(stderr, "errors: NULL source with length: expected CCOMP_ERR_VALUE and a message\n");
        return 1;
    }
    if (ccomp_lz4_model_size(m, x, 4, NULL, 1, &out, &err) != CCOMP_ERR_VALUE) {
        fprintf(stderr, "errors: NULL target with length: expected CCOMP_ERR_VALUE\n");
        return 1;
    }
    if (ccomp_lz4_model_size(m, x, 4, x, 4, NULL, &err) != CCOMP_ERR_VALUE) {
        fprintf(stderr, "errors: NULL out: expected CCOMP_ERR_VALUE\n");
        return 1;
    }
    if (ccomp_lz4_model_set_prefix(m, NULL, 5, &err) != CCOMP_ERR_VALUE) {
        fprintf(stderr, "errors: NULL prefix with length: expected CCOMP_ERR_VALUE\n");
        return 1;
    }
    if (ccomp_lz4_model_size_with_prefix(m, x, 4, &out, &err) != CCOMP_ERR_VALUE) {
        fprintf(stderr, "errors: size_with_prefix after a failed set_prefix: expected CCOMP_ERR_VALUE\n");
        return 1;
    }
    if (ccomp_lz4_model_set_prefix(m, x, 4, &err) != CCOMP_OK ||
        ccomp_lz4_model_size_with_prefix(m, x, 4, &out, &err) != CCOMP_OK || out != 31) {
        fprintf(stderr, "errors: 8 bytes after set_prefix: expected CCOMP_OK and 31 bytes, got %zu\n", out);
        return 1;
    }
    if (ccomp_lz4_model_size_with_prefix(m, NULL, 5, &out, &err) != CCOMP_ERR_VALUE) {
        fprintf(stderr, "errors: NULL target with length: expected CCOMP_ERR_VALUE\n");
        return 1;
    }
    if (ccomp_lz4_model_size(NULL, x, 4, x, 4, &out, &err) != CCOMP_ERR_VALUE) {
        fprintf(stderr, "errors: NULL model: expected CCOMP_ERR_VALUE\n");
        return 1;
    }
    if (ccomp_lz4_model_size(m, x, (size_t)-1, x, 4, &out, &err) != CCOMP_ERR_UNSUPPORTED ||
        ccomp_lz4_model_size(m, x, 4, x, (size_t)-2, &out, &err) != CCOMP_ERR_UNSUPPORTED ||
        err.code != CCOMP_ERR_UNSUPPORTED) {
        fprintf(stderr, "errors: huge length: expected CCOMP_ERR_UNSUPPORTED\n");
        return 1;
    }
    if (ccomp_lz4_model_size(m, NULL, 0, NULL, 0, &out, &err) != CCOMP_OK || out != 11) {
        fprintf(stderr, "errors: empty input: expected CCOMP_OK and 11 bytes, got %zu\n", out);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Benchmark */

static int run_bench(ccomp_lz4_model *m, uint64_t seed)
{
    enum { NSRC = 1000, NT = 164, TLEN = 160 };
    const file_data *texts[64];
    int ntext = 0, i, rep;
    uint8_t **srcs, *tg, *ab;
    size_t *slen, *ref;
    uint64_t r = seed ^ 0xbe4c4ull;
    timing tm = {1e30, 1e30, 0, 0}, tl = {1e30, 1e30, 0, 0}, tp = {1e30, 1e30, 0, 0};
    volatile size_t sink = 0;
    ccomp_error err;

    for (i = 0; i < g_nfiles && ntext < 64; i++)
        if (g_files[i].text && g_files[i].len >= 4096) texts[ntext++] = &g_files[i];
    if (ntext == 0) {
        fprintf(stderr, "bench: needs at least one text file of >= 4 KB\n");
        return 1;
    }
    srcs = (uint8_t **)calloc(NSRC, sizeof *srcs);
    slen = (size_t *)calloc(NSRC, sizeof *slen);
    tg = (uint8_t *)malloc((size_t)NSRC * NT * TLEN);
    ref = (size_t *)malloc((size_t)NSRC * NT * sizeof *ref);
    ab = (uint8_t *)malloc(4096);
    if (!srcs || !slen || !tg || !ref || !ab) exit(2);
    for (i = 0; i < NSRC; i++) {
        const file_data *f = texts[rnd(&r, (size_t)ntext)];
        int t;
        slen[i] = rnd_range(&r, 800, 1300);
        srcs[i] = (uint8_t *)malloc(slen[i]);
        if (srcs[i] == NULL) exit(2);
        memcpy(srcs[i], f->data + rnd(&r, f->len - slen[i]), slen[i]);
        for (t = 0; t < NT; t++) {
            const file_data *g = texts[rnd(&r, (size_t)ntext)];
            memcpy(tg + ((size_t)i * NT + t) * TLEN, g->data + rnd(&r, g->len - TLEN), TLEN);
        }
    }
    /* correctness of the bench data, and the reference sizes */
    for (i = 0; i < NSRC; i++) {
        int t;
        if (ccomp_lz4_model_set_prefix(m, srcs[i], slen[i], &err) != CCOMP_OK) return 1;
        memcpy(ab, srcs[i], slen[i]);
        for (t = 0; t < NT; t++) {
            size_t got = 0;
            const uint8_t *b = tg + ((size_t)i * NT + t) * TLEN;
            memcpy(ab + slen[i], b, TLEN);
            ref[(size_t)i * NT + t] = ref_size(ab, slen[i] + TLEN);
            if (ccomp_lz4_model_size_with_prefix(m, b, TLEN, &got, &err) != CCOMP_OK ||
                got != ref[(size_t)i * NT + t]) {
                fprintf(stderr, "bench: MISMATCH source %d target %d: expected %zu got %zu\n", i, t,
                        ref[(size_t)i * NT + t], got);
                return 1;
            }
        }
    }
    for (rep = 0; rep < 7; rep++) {
        timing_start(&tm);
        for (i = 0; i < NSRC; i++) {
            int t;
            ccomp_lz4_model_set_prefix(m, srcs[i], slen[i], &err);
            for (t = 0; t < NT; t++) {
                size_t got = 0;
                ccomp_lz4_model_size_with_prefix(m, tg + ((size_t)i * NT + t) * TLEN, TLEN, &got, &err);
                sink += got;
            }
        }
        timing_stop(&tm, 1.0);

        timing_start(&tl);
        for (i = 0; i < NSRC; i += 4) { /* a quarter of the sources: the library is slower */
            int t;
            memcpy(ab, srcs[i], slen[i]);
            for (t = 0; t < NT; t++) {
                size_t n = slen[i] + TLEN, rr;
                memcpy(ab + slen[i], tg + ((size_t)i * NT + t) * TLEN, TLEN);
                g_prefs.frameInfo.contentSize = n;
                rr = LZ4F_compressFrame(g_dst, g_dst_cap, ab, n, &g_prefs);
                sink += rr;
            }
        }
        timing_stop(&tl, 4.0);

        timing_start(&tp);
        for (i = 0; i < NSRC; i += 4) {
            int t;
            for (t = 0; t < NT; t++) {
                size_t got = 0;
                ccomp_lz4_model_size(m, srcs[i], slen[i], tg + ((size_t)i * NT + t) * TLEN, TLEN, &got, &err);
                sink += got;
            }
        }
        timing_stop(&tp, 4.0);
    }
    {
        double pairs = (double)NSRC * NT;
        printf("bench: %d sources of 800-1300 bytes x %d targets of %d bytes (text files), best of 7, 1 thread\n",
               NSRC, NT, TLEN);
        printf("  (CPU time of this process; wall clock in brackets)\n");
        printf("  model, prefix reuse     : %9.0f pairs/s  %.3f us/pair [wall %.3f]  (incl. set_prefix)\n",
               pairs / tm.cpu, 1e6 * tm.cpu / pairs, 1e6 * tm.wall / pairs);
        printf("  model, no prefix (size) : %9.0f pairs/s  %.3f us/pair [wall %.3f]\n", pairs / tp.cpu,
               1e6 * tp.cpu / pairs, 1e6 * tp.wall / pairs);
        printf("  LZ4F_compressFrame      : %9.0f pairs/s  %.3f us/pair [wall %.3f]\n", pairs / tl.cpu,
               1e6 * tl.cpu / pairs, 1e6 * tl.wall / pairs);
        printf("  speed-up over LZ4F: prefix model %.2fx [wall %.2fx], no-prefix model %.2fx [wall %.2fx]\n",
               tl.cpu / tm.cpu, tl.wall / tm.wall, tl.cpu / tp.cpu, tl.wall / tp.wall);
    }
    (void)sink;
    for (i = 0; i < NSRC; i++) free(srcs[i]);
    free(srcs);
    free(slen);
    free(tg);
    free(ref);
    free(ab);
    return 0;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    unsigned long long npairs = 20000, group = 0, sweep_pairs = 0;
    uint64_t seed = 1, r;
    int bench = 0, i, rc = 0;
    checker c;
    ccomp_error err;
    piece a = {0}, bs[16];
    double t0;

    memset(bs, 0, sizeof bs);
    g_files = (file_data *)calloc((size_t)argc, sizeof *g_files);
    if (g_files == NULL) return 2;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pairs") == 0 && i + 1 < argc) {
            npairs = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--bench") == 0) {
            bench = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--pairs N] [--seed S] [--bench] FILE...\n", argv[0]);
            return 2;
        } else {
            double printable;
            if (load_file(argv[i], &g_files[g_nfiles], &printable) != 0) {
                fprintf(stderr, "cannot read %s\n", argv[i]);
                return 2;
            }
            g_files[g_nfiles].text = printable >= 0.95;
            g_nfiles++;
        }
    }
    if (g_nfiles == 0) {
        fprintf(stderr, "usage: %s [--pairs N] [--seed S] [--bench] FILE...  (needs at least one file)\n", argv[0]);
        return 2;
    }
    if (!ccomp_lz4_model_supported()) {
        fprintf(stderr, "lz4 %s is not the version the model reproduces (1.9.4)\n", LZ4_versionString());
        return 1;
    }
    g_max = ccomp_lz4_model_max_input();
    init_prefs();
    memset(&c, 0, sizeof c);
    c.seed = seed;
    ccomp_error_clear(&err);
    if (ccomp_lz4_model_create(&c.m, &err) != CCOMP_OK) {
        fprintf(stderr, "create failed: %s\n", err.msg);
        return 1;
    }
    ref_size((const uint8_t *)"", 0);

    if (check_errors(c.m)) return 1;

    if (bench) {
        rc = run_bench(c.m, seed);
        ccomp_lz4_model_free(c.m);
        return rc;
    }

    t0 = now_s();
    { /* a hashed start state: neighbouring seeds give unrelated streams */
        uint64_t t = seed;
        r = splitmix(&t) ^ 0x2545F4914F6CDD1Dull;
    }
    c.phase = "fixed";
    if (check_many_calls(&c, &r) || check_limit(&c, &r) || check_sweep(&c, &r)) {
        rc = 1;
        goto out;
    }
    sweep_pairs = c.pairs;
    c.phase = "random";
    while (c.pairs - sweep_pairs < npairs) {
        const file_data *af;
        size_t afend;
        int nt, t;
        gen_source(&r, &a, &af, &afend);
        nt = (int)rnd_range(&r, 1, 12);
        for (t = 0; t < nt; t++) gen_target(&r, &bs[t], &a, af, afend);
        if (check_group(&c, group, &a, bs, nt, &r)) {
            rc = 1;
            goto out;
        }
        group++;
    }
    printf("lz4 model: %llu pairs match LZ4F_compressFrame (lz4 %s; %llu fixed + %llu random, re-asks "
           "included), %llu over-limit pairs refused, %llu framing checks, seed %llu, %.1f s\n",
           c.pairs, LZ4_versionString(), sweep_pairs, c.pairs - sweep_pairs, c.unsupported, c.framing,
           (unsigned long long)seed, now_s() - t0);
out:
    ccomp_lz4_model_free(c.m);
    free(a.p);
    for (i = 0; i < 16; i++) free(bs[i].p);
    for (i = 0; i < g_nfiles; i++) free(g_files[i].data);
    free(g_files);
    free(g_dst);
    free(c.ab);
    return rc;
}

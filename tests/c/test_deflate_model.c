/* Checks ccomp's deflate size model against real zlib, and benchmarks it.
 *
 *   test_deflate_model [--pairs-per-level N] [--seed S] [--levels 1-9]
 *                      [--threads T] [--dump PREFIX] FILE...
 *   test_deflate_model --bench [--seed S] FILE...
 *
 * For each level 1-9, N (source, target) pairs are generated from the files
 * (pieces of random length, a few large ones crossing the 32 KB window, the
 * 16383-symbol block limit and several hundred KB) and from synthetic data
 * (random bytes, 2-4 symbol alphabets, empty inputs, runs of one byte, targets
 * cut from or continuing their source).  Each pair is compressed by zlib
 * (deflateInit2(level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), deflateReset
 * between pairs, one deflate(Z_FINISH)) and the byte count is compared with
 * ccomp_deflate_model_size(a, b), with set_prefix(a) + size_with_prefix(b)
 * (each source meets several targets), and with the batched
 * sizes_with_prefix over each source's whole group of targets.  Exit status 0 when
 * everything matches; otherwise the first mismatch is reported with its level,
 * group and target so that it can be replayed with --levels L --group G.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -Icsrc/include -pthread \
 *          tests/c/test_deflate_model.c csrc/zipfit/deflate_model.c csrc/util/status.c -lz
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "ccomp/deflate_model.h"
#include "test_util.h"

static file_data *g_files;
static int g_nfiles;
static atomic_int g_failed;
static const char *g_dump;
static int g_no_special;

/* ------------------------------------------------------------------------ */

static double pow2_approx(double x) /* 2^x for 0 <= x <= 12, without libm */
{
    double v = 1.0;
    while (x >= 1.0) {
        v *= 2.0;
        x -= 1.0;
    }
    return v * (1.0 + x * (0.6931472 + x * (0.2402265 + x * 0.0555041)));
}

static size_t log_uniform(uint64_t *r, size_t hi) /* roughly log-uniform in [0, hi] */
{
    double u = (double)(splitmix(r) >> 11) / 9007199254740992.0;
    size_t v = (size_t)(pow2_approx(u * 12.0));
    return v > hi ? hi : v - 1 + rnd(r, 2);
}

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void bytes_reserve(bytes *b, size_t n)
{
    if (n <= b->cap) return;
    b->cap = n + n / 2 + 64;
    b->p = (uint8_t *)realloc(b->p, b->cap);
    if (b->p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
}

static void piece_from_file(uint64_t *r, bytes *out, size_t len, int want_big_file)
{
    const file_data *f = &g_files[rnd(r, (size_t)g_nfiles)];
    size_t off;
    if (want_big_file) { /* prefer a file that holds len bytes */
        int k;
        for (k = 0; k < 8 && f->len < len; k++) f = &g_files[rnd(r, (size_t)g_nfiles)];
    }
    if (len > f->len) len = f->len;
    off = rnd(r, f->len - len + 1);
    bytes_reserve(out, len);
    memcpy(out->p, f->data + off, len);
    out->n = len;
}

/* role 0: source, 1: target (src = its source); big: 0, 1 (60-160 KB), 2 (200-700 KB) */
static void gen_input(uint64_t *r, bytes *out, int role, const bytes *src, int big)
{
    size_t len, i, k = rnd(r, 1000);
    if (big == 1)
        len = rnd_range(r, 60000, 160000);
    else if (big == 2)
        len = rnd_range(r, 200000, 700000);
    else if (role == 0) { /* sources: mostly 200 B - 2 KB, 0..4 KB, a few up to 12 KB */
        size_t q = rnd(r, 100);
        len = q < 45 ? log_uniform(r, 4096) : q < 90 ? rnd_range(r, 200, 2048) : q < 98 ? rnd(r, 4097)
                                                                              : rnd_range(r, 4096, 12000);
    } else { /* targets: mostly ~160 B */
        size_t q = rnd(r, 100);
        len = q < 75 ? rnd_range(r, 100, 220) : q < 85 ? log_uniform(r, 4096) : q < 95 ? rnd(r, 601)
                                                                                : rnd(r, 31);
    }
    out->n = 0;
    if (big && k < 200) { /* periodic: a block repeated at a distance near MAX_DIST / w_size */
        static const size_t periods[] = {32505, 32506, 32507, 32767, 32768, 32769, 16384, 65536};
        size_t per = periods[rnd(r, sizeof periods / sizeof periods[0])];
        piece_from_file(r, out, per, 1);
        if (rnd(r, 2)) /* random bytes instead of text */
            for (i = 0; i < out->n; i++) out->p[i] = (uint8_t)splitmix(r);
        per = out->n;
        if (rnd(r, 3) == 0) len = rnd_range(r, 65274 - 300, 65536 + 300); /* end near the slide point */
        bytes_reserve(out, len + 1);
        for (i = per; i < len; i++) out->p[i] = out->p[i - per];
        out->n = per ? len : 0;
        return;
    }
    if (k >= 560 && k < 600) { /* skewed (Fibonacci-like) byte frequencies: long codes, length limiting */
        size_t nsym = rnd_range(r, 12, 30);
        uint8_t sym[30];
        uint64_t w[30], tot = 0, x;
        for (i = 0; i < nsym; i++) {
            sym[i] = (uint8_t)splitmix(r);
            w[i] = i < 2 ? 1 : w[i - 1] + w[i - 2];
            tot += w[i];
        }
        bytes_reserve(out, len + 1);
        for (i = 0; i < len; i++) {
            size_t q = 0;
            x = splitmix(r) % tot;
            while (x >= w[q]) x -= w[q++];
            out->p[i] = sym[q];
        }
        out->n = len;
        return;
    }
    if (k < 600) {
        piece_from_file(r, out, len, big);
        return;
    }
    bytes_reserve(out, len + 1);
    out->n = len;
    if (k < 660) { /* random bytes */
        for (i = 0; i < len; i++) out->p[i] = (uint8_t)splitmix(r);
    } else if (k < 760) { /* low entropy: alphabet of 2-4 symbols */
        uint8_t sym[4];
        size_t na = rnd_range(r, 2, 4);
        for (i = 0; i < na; i++) sym[i] = (uint8_t)splitmix(r);
        for (i = 0; i < len; i++) out->p[i] = sym[rnd(r, na)];
    } else if (k < 790) { /* empty */
        out->n = 0;
    } else if (k < 830) { /* one repeated byte */
        memset(out->p, (int)(uint8_t)splitmix(r), len);
    } else if (role == 1 && src->n > 0 && k < 900) { /* cut from the source, maybe mutated */
        size_t st = rnd(r, src->n), m;
        if (len > src->n - st) len = src->n - st;
        memcpy(out->p, src->p + st, len);
        out->n = len;
        m = rnd(r, 4);
        for (i = 0; i < m && len > 0; i++) out->p[rnd(r, len)] = (uint8_t)splitmix(r);
    } else if (role == 1 && src->n > 0 && k < 950) { /* the source's tail again, then text */
        size_t t = rnd_range(r, 1, src->n < 300 ? src->n : 300), rest;
        if (t > len) len = t;
        bytes_reserve(out, len + 1);
        memcpy(out->p, src->p + src->n - t, t);
        rest = len - t;
        if (rest) {
            bytes tmp = {0, 0, 0};
            piece_from_file(r, &tmp, rest, 0);
            memcpy(out->p + t, tmp.p, tmp.n);
            len = t + tmp.n;
            free(tmp.p);
        }
        out->n = len;
    } else if (k < 975) { /* text with a 2-symbol tail (long matches near the end) */
        size_t t;
        piece_from_file(r, out, len, big);
        t = out->n ? rnd(r, out->n) : 0;
        for (i = out->n - t; i < out->n; i++) out->p[i] = (uint8_t)('a' + rnd(r, 2));
    } else {
        piece_from_file(r, out, len, big);
    }
}

/* ------------------------------------------------------------------------ */

typedef struct zref {
    z_stream zs;
    uint8_t *out;
    size_t cap;
} zref;

static int zref_init(zref *z, int level)
{
    memset(z, 0, sizeof *z);
    return deflateInit2(&z->zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK ? 0 : -1;
}

static size_t zref_size(zref *z, const uint8_t *p, size_t n)
{
    size_t need = deflateBound(&z->zs, (uLong)n) + 1024;
    int rc;
    if (need > z->cap) {
        z->cap = need;
        z->out = (uint8_t *)realloc(z->out, need);
        if (z->out == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    deflateReset(&z->zs);
    z->zs.next_in = (Bytef *)(uintptr_t)p;
    z->zs.avail_in = (uInt)n;
    z->zs.next_out = z->out;
    z->zs.avail_out = (uInt)z->cap;
    rc = deflate(&z->zs, Z_FINISH);
    if (rc != Z_STREAM_END) {
        fprintf(stderr, "zlib deflate returned %d\n", rc);
        exit(2);
    }
    return (size_t)z->zs.total_out;
}

/* ------------------------------------------------------------------------ */

typedef struct job {
    int level, tid, nthreads;
    uint64_t seed;
    long long quota; /* pairs to check */
    long long only_group;
    long long pairs, groups, big_groups, bytes_in, special;
    double secs;
    /* one group's targets, for ccomp_deflate_model_sizes_with_prefix (groups have at most 185) */
    uint8_t *batch_data[185];
    size_t batch_len[185], batch_zlib[185], batch_out[185];
} job;

static uint64_t group_seed(uint64_t seed, int level, long long gid)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)level << 48) ^ (uint64_t)gid;
    splitmix(&x);
    return splitmix(&x);
}

static void dump_pair(const bytes *a, const bytes *b)
{
    char name[4096];
    FILE *f;
    if (g_dump == NULL) return;
    snprintf(name, sizeof name, "%s_a.bin", g_dump);
    if ((f = fopen(name, "wb")) != NULL) {
        fwrite(a->p, 1, a->n, f);
        fclose(f);
    }
    snprintf(name, sizeof name, "%s_b.bin", g_dump);
    if ((f = fopen(name, "wb")) != NULL) {
        fwrite(b->p, 1, b->n, f);
        fclose(f);
    }
}

/* Crafted inputs for the window edges: data repeating at a distance near
 * MAX_DIST (32506) and w_size, ending near the slide point (strstart 65274 with
 * a short lookahead), runs of one byte, and skewed byte frequencies (length
 * limiting).  Each is checked as a whole and split at several points. */
/* Compares zlib with the model's plain and prefix paths on p[0..n) split at na;
 * returns 1 (after printing the case) on a mismatch. */
static int check_split(int level, ccomp_deflate_model *m, zref *z, const uint8_t *p, size_t n, size_t na,
                       const char *what, long long *checked)
{
    ccomp_error err;
    size_t zs = zref_size(z, p, n), ms = 0, ps = 0;
    ccomp_deflate_model_size(m, p, na, p + na, n - na, &ms, &err);
    ccomp_deflate_model_set_prefix(m, p, na, &err);
    ccomp_deflate_model_size_with_prefix(m, p + na, n - na, &ps, &err);
    (*checked)++;
    if (zs == ms && zs == ps) return 0;
    fprintf(stderr, "MISMATCH level %d special case %s length %zu split %zu: zlib=%zu model_size=%zu model_prefix=%zu\n",
            level, what, n, na, zs, ms, ps);
    return 1;
}

static int run_special(int level, ccomp_deflate_model *m, zref *z, uint64_t seed, long long *checked)
{
    static const size_t periods[] = {32505, 32506, 32507, 32767, 32768, 32769};
    static const size_t ends[] = {65273, 65274, 65275, 65276, 65277, 65280, 65300, 65400, 65500, 65535,
                                  65536, 65537, 65540, 65800, 98040, 98304, 131072};
    uint64_t r = seed ^ 0x5eedull ^ (uint64_t)level;
    bytes d = {0, 0, 0};
    size_t pi, ei, i;
    int fail = 0;
    bytes_reserve(&d, 140000);
    for (pi = 0; pi < sizeof periods / sizeof periods[0] && !fail; pi++) {
        for (ei = 0; ei < sizeof ends / sizeof ends[0] && !fail; ei++) {
            size_t per = periods[pi], n = ends[ei], cuts[4], c;
            int textual = (int)((pi + ei) & 1);
            for (i = 0; i < per; i++) d.p[i] = textual ? (uint8_t)('a' + rnd(&r, 20)) : (uint8_t)splitmix(&r);
            for (i = per; i < n; i++) d.p[i] = d.p[i - per];
            if (ei % 3 == 1) /* break the repetition here and there */
                for (i = 0; i < 40; i++) d.p[rnd(&r, n)] ^= 1;
            cuts[0] = n;
            cuts[1] = n - rnd(&r, 300);
            cuts[2] = rnd(&r, n + 1);
            cuts[3] = n > 65274 ? 65274 - rnd(&r, 10) : n / 2;
            for (c = 0; c < 4 && !fail; c++) {
                char what[64];
                snprintf(what, sizeof what, "period %zu", per);
                fail = check_split(level, m, z, d.p, n, cuts[c] <= n ? cuts[c] : n, what, checked);
            }
        }
    }
    /* random bytes with bytes [32768, 32768+L) copied to strstart 65274: the
     * candidate at distance MAX_DIST is usable unless the window slides at
     * exactly 65274, which zlib does only when the lookahead is short there. */
    for (pi = 0; pi < 4 && !fail; pi++) {
        static const size_t lens[] = {3, 6, 20, 258};
        static const size_t tails[] = {0, 1, 5, 150, 300, 2000};
        for (ei = 0; ei < sizeof tails / sizeof tails[0] && !fail; ei++) {
            size_t L = lens[pi], n = 65274 + L + tails[ei];
            char what[64];
            for (i = 0; i < n; i++) d.p[i] = (uint8_t)splitmix(&r);
            memcpy(d.p + 65274, d.p + 32768, L);
            snprintf(what, sizeof what, "slide-at-65274 copy %zu", L);
            fail = check_split(level, m, z, d.p, n, rnd(&r, n + 1), what, checked);
        }
    }
    free(d.p);
    return fail;
}

static void *run_job(void *arg)
{
    job *j = (job *)arg;
    ccomp_deflate_model *m = NULL;
    ccomp_error err;
    zref z;
    bytes a = {0, 0, 0}, b = {0, 0, 0}, ab = {0, 0, 0};
    long long gid;
    double t0 = now_s();

    if (ccomp_deflate_model_create(j->level, &m, &err) != CCOMP_OK) {
        fprintf(stderr, "level %d: model create failed: %s\n", j->level, err.msg);
        atomic_store(&g_failed, 1);
        return NULL;
    }
    if (zref_init(&z, j->level) != 0) {
        fprintf(stderr, "level %d: deflateInit2 failed\n", j->level);
        atomic_store(&g_failed, 1);
        return NULL;
    }
    if (j->tid == 0 && j->only_group < 0 && !g_no_special && run_special(j->level, m, &z, j->seed, &j->special))
        atomic_store(&g_failed, 1);
    for (gid = j->tid; j->pairs < j->quota && !atomic_load(&g_failed); gid += j->nthreads) {
        uint64_t r;
        int big = 0;
        size_t ntargets, t, q;
        if (j->only_group >= 0) {
            if (gid != j->only_group) {
                if (gid > j->only_group) break;
                continue;
            }
        }
        r = group_seed(j->seed, j->level, gid);
        /* large sources: every 97th group among the first 97 * 60, several
         * hundred KB every 1000th among the first 10000 (the crafted cases of
         * run_special cross the window and block limits at every level too) */
        if (gid % 1000 == 7 && gid < 10000)
            big = 2;
        else if (gid % 97 == 5 && gid < 97 * 60)
            big = 1;
        gen_input(&r, &a, 0, NULL, big);
        q = rnd(&r, 100);
        ntargets = big ? rnd_range(&r, 1, 3) : q < 50 ? rnd_range(&r, 1, 8) : q < 90 ? rnd_range(&r, 9, 64) : 185;
        j->groups++;
        if (big) j->big_groups++;
        if (ccomp_deflate_model_set_prefix(m, a.p, a.n, &err) != CCOMP_OK) {
            fprintf(stderr, "level %d group %lld: set_prefix failed: %s\n", j->level, gid, err.msg);
            atomic_store(&g_failed, 1);
            break;
        }
        size_t done = 0, held = 0;
        for (t = 0; t < ntargets && j->pairs < j->quota; t++) {
            size_t zs, ms = 0, ps = 0;
            gen_input(&r, &b, 1, &a, 0);
            /* keep the target for the batched call below */
            j->batch_data[t] = (uint8_t *)malloc(b.n ? b.n : 1);
            held = t + 1;
            if (b.n) memcpy(j->batch_data[t], b.p, b.n);
            j->batch_len[t] = b.n;
            bytes_reserve(&ab, a.n + b.n + 1);
            if (a.n) memcpy(ab.p, a.p, a.n);
            if (b.n) memcpy(ab.p + a.n, b.p, b.n);
            ab.n = a.n + b.n;
            zs = zref_size(&z, ab.p, ab.n);
            if (ccomp_deflate_model_size(m, a.p, a.n, b.p, b.n, &ms, &err) != CCOMP_OK ||
                ccomp_deflate_model_size_with_prefix(m, b.p, b.n, &ps, &err) != CCOMP_OK) {
                fprintf(stderr, "level %d group %lld target %zu: model call failed: %s\n", j->level, gid, t,
                        err.msg);
                atomic_store(&g_failed, 1);
                break;
            }
            j->pairs++;
            j->bytes_in += (long long)ab.n;
            j->batch_zlib[t] = zs;
            done = t + 1;
            if (zs != ms || zs != ps) {
                if (atomic_exchange(&g_failed, 1) == 0) {
                    fprintf(stderr,
                            "MISMATCH level %d pair group %lld target %zu (seed %llu): len(a)=%zu len(b)=%zu "
                            "zlib=%zu model_size=%zu model_prefix=%zu\n",
                            j->level, gid, t, (unsigned long long)j->seed, a.n, b.n, zs, ms, ps);
                    dump_pair(&a, &b);
                }
                break;
            }
        }
        /* the batched call must give the same numbers for the whole group */
        if (done && !atomic_load(&g_failed)) {
            if (ccomp_deflate_model_sizes_with_prefix(m, (const uint8_t *const *)j->batch_data, j->batch_len, done,
                                                      j->batch_out, &err) != CCOMP_OK) {
                fprintf(stderr, "level %d group %lld: batched call failed: %s\n", j->level, gid, err.msg);
                atomic_store(&g_failed, 1);
            }
            for (t = 0; t < done && !atomic_load(&g_failed); t++) {
                if (j->batch_out[t] != j->batch_zlib[t] && atomic_exchange(&g_failed, 1) == 0)
                    fprintf(stderr, "MISMATCH level %d group %lld target %zu (seed %llu): zlib=%zu batched=%zu\n",
                            j->level, gid, t, (unsigned long long)j->seed, j->batch_zlib[t], j->batch_out[t]);
            }
        }
        for (t = 0; t < held; t++) free(j->batch_data[t]);
    }
    j->secs = now_s() - t0;
    ccomp_deflate_model_free(m);
    deflateEnd(&z.zs);
    free(z.out);
    free(a.p);
    free(b.p);
    free(ab.p);
    return NULL;
}

static int api_checks(void)
{
    ccomp_deflate_model *m = NULL;
    ccomp_error err;
    size_t out = 0;
    int bad = 0;
    const uint8_t x[4] = {1, 2, 3, 4};
    if (ccomp_deflate_model_create(0, &m, &err) != CCOMP_ERR_VALUE || m != NULL) bad |= 1;
    if (ccomp_deflate_model_create(10, &m, &err) != CCOMP_ERR_VALUE || m != NULL) bad |= 2;
    if (ccomp_deflate_model_create(6, NULL, &err) != CCOMP_ERR_VALUE) bad |= 4;
    if (ccomp_deflate_model_create(6, &m, &err) != CCOMP_OK) return 1;
    if (ccomp_deflate_model_size(m, NULL, 3, x, 4, &out, &err) != CCOMP_ERR_VALUE) bad |= 8;
    if (ccomp_deflate_model_size(m, x, 4, NULL, 1, &out, &err) != CCOMP_ERR_VALUE) bad |= 16;
    if (ccomp_deflate_model_size(m, NULL, 0, NULL, 0, &out, &err) != CCOMP_OK || out != 2) bad |= 32;
    if (ccomp_deflate_model_set_prefix(m, NULL, 2, &err) != CCOMP_ERR_VALUE) bad |= 64;
    if (ccomp_deflate_model_size_with_prefix(m, NULL, 2, &out, &err) != CCOMP_ERR_VALUE) bad |= 128;
    if (ccomp_deflate_model_size_with_prefix(m, x, 4, &out, &err) != CCOMP_OK || out != 6) bad |= 256;
    if (ccomp_deflate_model_size(NULL, x, 4, x, 4, &out, &err) != CCOMP_ERR_VALUE) bad |= 512;
    ccomp_deflate_model_free(m);
    ccomp_deflate_model_free(NULL);
    if (bad) fprintf(stderr, "API checks failed (mask %d)\n", bad);
    return bad;
}

/* ------------------------------------------------------------------------ */

static int bench(uint64_t seed)
{
    enum { NSRC = 100, NT = 185 };
    static bytes src[NSRC], tgt[NSRC][NT];
    int levels[2] = {1, 6}, li, ntext = 0, i, k;
    uint64_t r = seed;
    bytes ab = {0, 0, 0};
    int *text_idx = (int *)malloc(sizeof(int) * (size_t)g_nfiles);

    for (i = 0; i < g_nfiles; i++)
        if (g_files[i].text) text_idx[ntext++] = i;
    if (ntext == 0)
        for (i = 0; i < g_nfiles; i++) text_idx[ntext++] = i;
    for (i = 0; i < NSRC; i++) {
        const file_data *f = &g_files[text_idx[rnd(&r, (size_t)ntext)]];
        size_t len = rnd_range(&r, 700, 900), off;
        if (len > f->len) len = f->len;
        off = rnd(&r, f->len - len + 1);
        bytes_reserve(&src[i], len);
        memcpy(src[i].p, f->data + off, len);
        src[i].n = len;
        for (k = 0; k < NT; k++) {
            const file_data *g = &g_files[text_idx[rnd(&r, (size_t)ntext)]];
            size_t tl = rnd_range(&r, 140, 180), to;
            if (tl > g->len) tl = g->len;
            to = rnd(&r, g->len - tl + 1);
            bytes_reserve(&tgt[i][k], tl);
            memcpy(tgt[i][k].p, g->data + to, tl);
            tgt[i][k].n = tl;
        }
    }
    printf("bench: %d sources of 700-900 B x %d targets of 140-180 B from %d text file(s), single thread\n", NSRC,
           NT, ntext);
    for (li = 0; li < 2; li++) {
        int level = levels[li], rep, reps = 3;
        zref z;
        ccomp_deflate_model *m = NULL;
        ccomp_error err;
        double tz = 1e30, tp = 1e30, tx = 1e30;
        unsigned long long sz = 0, sp = 0, sx = 0, npairs = (unsigned long long)NSRC * NT;
        if (zref_init(&z, level) != 0 || ccomp_deflate_model_create(level, &m, &err) != CCOMP_OK) return 1;
        for (rep = 0; rep < reps; rep++) {
            double t0 = now_s(), t1, t2, t3;
            sz = sp = sx = 0;
            for (i = 0; i < NSRC; i++)
                for (k = 0; k < NT; k++) {
                    bytes_reserve(&ab, src[i].n + tgt[i][k].n);
                    memcpy(ab.p, src[i].p, src[i].n);
                    memcpy(ab.p + src[i].n, tgt[i][k].p, tgt[i][k].n);
                    sz += zref_size(&z, ab.p, src[i].n + tgt[i][k].n);
                }
            t1 = now_s();
            for (i = 0; i < NSRC; i++)
                for (k = 0; k < NT; k++) {
                    size_t o = 0;
                    ccomp_deflate_model_size(m, src[i].p, src[i].n, tgt[i][k].p, tgt[i][k].n, &o, &err);
                    sp += o;
                }
            t2 = now_s();
            for (i = 0; i < NSRC; i++) {
                ccomp_deflate_model_set_prefix(m, src[i].p, src[i].n, &err);
                for (k = 0; k < NT; k++) {
                    size_t o = 0;
                    ccomp_deflate_model_size_with_prefix(m, tgt[i][k].p, tgt[i][k].n, &o, &err);
                    sx += o;
                }
            }
            t3 = now_s();
            if (t1 - t0 < tz) tz = t1 - t0;
            if (t2 - t1 < tp) tp = t2 - t1;
            if (t3 - t2 < tx) tx = t3 - t2;
        }
        printf("level %d: zlib+deflateReset %.0f pairs/s (%.2f us/pair) | model size %.0f pairs/s (%.2f us/pair, "
               "%.1fx) | model prefix reuse %.0f pairs/s (%.2f us/pair, %.1fx) | byte sums %s\n",
               level, npairs / tz, 1e6 * tz / npairs, npairs / tp, 1e6 * tp / npairs, tz / tp, npairs / tx,
               1e6 * tx / npairs, tz / tx, (sz == sp && sz == sx) ? "equal" : "DIFFER");
        if (sz != sp || sz != sx) atomic_store(&g_failed, 1);
        ccomp_deflate_model_free(m);
        deflateEnd(&z.zs);
        free(z.out);
    }
    free(ab.p);
    free(text_idx);
    for (i = 0; i < NSRC; i++) {
        free(src[i].p);
        for (k = 0; k < NT; k++) free(tgt[i][k].p);
    }
    return atomic_load(&g_failed) ? 1 : 0;
}

/* ------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: test_deflate_model [--pairs-per-level N] [--seed S] [--levels A-B] [--threads T]\n"
            "                          [--group G] [--dump PREFIX] [--no-special] FILE...\n"
            "       test_deflate_model --bench [--seed S] FILE...\n");
}

int main(int argc, char **argv)
{
    long long n_pairs = 20000, only_group = -1;
    uint64_t seed = 12345;
    int lo = 1, hi = 9, nthreads = 2, do_bench = 0, i, level;
    double t_all = now_s();

    g_files = (file_data *)calloc((size_t)argc, sizeof(file_data));
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pairs-per-level") == 0 && i + 1 < argc) {
            n_pairs = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--levels") == 0 && i + 1 < argc) {
            const char *s = argv[++i];
            lo = atoi(s);
            hi = strchr(s, '-') ? atoi(strchr(s, '-') + 1) : lo;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            nthreads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--group") == 0 && i + 1 < argc) {
            only_group = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--dump") == 0 && i + 1 < argc) {
            g_dump = argv[++i];
        } else if (strcmp(argv[i], "--no-special") == 0) {
            g_no_special = 1;
        } else if (strcmp(argv[i], "--bench") == 0) {
            do_bench = 1;
        } else if (argv[i][0] == '-') {
            usage();
            return 2;
        } else {
            double printable;
            if (load_file(argv[i], &g_files[g_nfiles], &printable) != 0) {
                fprintf(stderr, "cannot read %s\n", argv[i]);
                return 2;
            }
            /* "text" files feed the text-like generators: plain-text corpus files only */
            g_files[g_nfiles].text = printable >= 0.97 && strstr(argv[i], ".txt") != NULL;
            g_nfiles++;
        }
    }
    if (g_nfiles == 0 || lo < 1 || hi > 9 || lo > hi || nthreads < 1 || nthreads > 64) {
        usage();
        return 2;
    }
    if (!ccomp_deflate_model_supported()) {
        fprintf(stderr, "zlib %s is not the version the model reproduces (1.2.13)\n", zlibVersion());
        return 1;
    }
    if (api_checks()) return 1;
    if (do_bench) return bench(seed);

    printf("zlib %s, %d file(s), %lld pairs per level, seed %llu, %d thread(s)\n", zlibVersion(), g_nfiles,
           n_pairs, (unsigned long long)seed, nthreads);
    for (level = lo; level <= hi && !atomic_load(&g_failed); level++) {
        job jobs[64];
        pthread_t th[64];
        long long pairs = 0, groups = 0, big = 0, bytes_in = 0, special = 0;
        double t0 = now_s();
        for (i = 0; i < nthreads; i++) {
            memset(&jobs[i], 0, sizeof jobs[i]);
            jobs[i].level = level;
            jobs[i].tid = i;
            jobs[i].nthreads = nthreads;
            jobs[i].seed = seed;
            jobs[i].only_group = only_group;
            jobs[i].quota = n_pairs / nthreads + (i < n_pairs % nthreads ? 1 : 0);
            if (pthread_create(&th[i], NULL, run_job, &jobs[i]) != 0) {
                fprintf(stderr, "pthread_create failed\n");
                return 2;
            }
        }
        for (i = 0; i < nthreads; i++) {
            pthread_join(th[i], NULL);
            pairs += jobs[i].pairs;
            groups += jobs[i].groups;
            big += jobs[i].big_groups;
            bytes_in += jobs[i].bytes_in;
            special += jobs[i].special;
        }
        printf("level %d: %lld pairs checked (model size and prefix reuse, each vs zlib), %lld sources (%lld "
               "large), %.1f MB input, + %lld crafted window-edge cases, %s, %.1f s\n",
               level, pairs, groups, big, bytes_in / 1e6, special, atomic_load(&g_failed) ? "FAILED" : "all equal",
               now_s() - t0);
        fflush(stdout);
    }
    printf("total %.1f s: %s\n", now_s() - t_all, atomic_load(&g_failed) ? "FAILED" : "OK");
    for (i = 0; i < g_nfiles; i++) free(g_files[i].data);
    free(g_files);
    return atomic_load(&g_failed) ? 1 : 0;
}

/* C tests of the built-in context-mixing compressor (ccomp/ac_cm.h):
 *
 *   - the SSE2 mixer against its C reference on random cases;
 *   - exact round trips of real files (bits per byte printed), of random and
 *     structured data (empty, 1 byte, runs, periodic, all 256 byte values) at
 *     every level, and the compressed size of data the model must find easy;
 *   - the stream is the same from two threads at once (no shared state);
 *   - progress reports and cancelling;
 *   - thousands of damaged streams -- truncations, bit flips, random bytes,
 *     with and without a repaired outer CRC (so the decoder itself runs on
 *     the damaged bits), and forged headers -- each either rejected with
 *     CCOMP_ERR_CORRUPT or decoded to the original; never a crash, an
 *     out-of-bounds access (run it under ASan) or a hang.
 *
 *   - the golden fixture tests/fixtures/cm_alice_head.ccm (when alice29.txt is
 *     among the files and the test runs from the repository root).
 *
 * Usage: test_ac_cm [--quick] [--mutations N] [FILE...]
 * The first FILE (default: a synthetic text) also gives the sample that is
 * damaged. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ccomp/ac_cm.h"
#include "check.h"
#include "test_util.h"

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* Rewrites the trailing CRC of a stream so that the decoder gets past it. */
static void fix_crc(uint8_t *blob, size_t n)
{
    if (n >= 4) put32(blob + n - 4, (uint32_t)crc32(0L, blob, (uInt)(n - 4)));
}

/* Round trip; returns the compressed size (0 on failure). */
static size_t roundtrip(const uint8_t *data, size_t n, int level, const char *what)
{
    uint8_t *blob = NULL, *back = NULL;
    size_t blen = 0, rlen = 0;
    ccomp_error err;
    ccomp_status st = ccomp_cm_compress(data, n, level, NULL, NULL, &blob, &blen, &err);
    CHECK(st == CCOMP_OK, "%s (n=%zu, level %d): compress failed: %s", what, n, level, err.msg);
    if (st != CCOMP_OK) return 0;
    st = ccomp_cm_decompress(blob, blen, NULL, NULL, &back, &rlen, &err);
    CHECK(st == CCOMP_OK, "%s (n=%zu, level %d): decompress failed: %s", what, n, level, err.msg);
    CHECK(st != CCOMP_OK || (rlen == n && (n == 0 || memcmp(back, data, n) == 0)),
          "%s (n=%zu, level %d): round trip differs", what, n, level);
    CHECK(blen >= CCOMP_CM_OVERHEAD && (blen - CCOMP_CM_OVERHEAD) % 4 == 0, "%s: bad stream size %zu", what, blen);
    free(blob);
    free(back);
    return blen;
}

static void test_mixer(int quick)
{
    size_t bad = ccomp_cm_mixer_check(12345, quick ? 20000 : 1000000);
    CHECK(bad == 0, "SIMD mixer differs from the reference in %zu cases", bad);
}

static void test_files(file_data *files, int nfiles, int quick)
{
    int i;
    for (i = 0; i < nfiles; i++) {
        size_t n = files[i].len, blen;
        double t0, dt;
        if (quick && n > 65536) n = 65536;
        t0 = now_s();
        blen = roundtrip(files[i].data, n, CCOMP_CM_DEFAULT_LEVEL, files[i].name);
        dt = now_s() - t0;
        if (blen)
            printf("  %-32s %9zu -> %8zu bytes  %.4f bits/byte  (round trip %.2f s)\n", files[i].name, n, blen,
                   8.0 * (double)blen / (double)(n ? n : 1), dt);
        if (files[i].text && n >= 20000) {
            /* real text must compress well below 3 bits per byte */
            CHECK(blen > 0 && 8.0 * (double)blen / (double)n < 3.0, "%s: %.3f bits/byte on text", files[i].name,
                  8.0 * (double)blen / (double)n);
        }
    }
}

static void test_synthetic(int quick)
{
    uint64_t r = 7;
    size_t n, i, blen;
    int level;
    uint8_t *buf = (uint8_t *)malloc(1 << 20);
    const size_t lens[] = {0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 1000, 4096, 65537};
    for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t k;
        n = lens[i];
        for (k = 0; k < n; k++) buf[k] = (uint8_t)splitmix(&r);
        blen = roundtrip(buf, n, CCOMP_CM_DEFAULT_LEVEL, "random");
        /* incompressible data grows by little */
        CHECK(blen <= n + n / 50 + CCOMP_CM_OVERHEAD + 8, "random n=%zu grew to %zu", n, blen);
        if (n == 0) CHECK(blen == CCOMP_CM_OVERHEAD, "empty input gave %zu bytes", blen);
    }
    /* every level on the same mixed data */
    n = 20000;
    for (i = 0; i < n; i++) buf[i] = i % 3000 < 1500 ? (uint8_t)"abcabdabe"[i % 9] : (uint8_t)(splitmix(&r) % 7);
    for (level = CCOMP_CM_MIN_LEVEL; level <= CCOMP_CM_MAX_LEVEL; level += quick ? 4 : 1)
        roundtrip(buf, n, level, "mixed");
    /* all 256 byte values, twice */
    for (i = 0; i < 512; i++) buf[i] = (uint8_t)i;
    roundtrip(buf, 512, CCOMP_CM_DEFAULT_LEVEL, "bytes 0..255");
    /* easy data must cost almost nothing */
    n = quick ? 200000 : 1000000;
    memset(buf, 0, n);
    blen = roundtrip(buf, n, CCOMP_CM_DEFAULT_LEVEL, "zeros");
    CHECK(blen > 0 && blen < n / 500, "%zu zeros -> %zu bytes", n, blen);
    for (i = 0; i < n; i++) buf[i] = (uint8_t)("0123456789abcdefghij\n"[i % 21]);
    blen = roundtrip(buf, n, CCOMP_CM_DEFAULT_LEVEL, "period 21");
    CHECK(blen > 0 && blen < n / 300, "periodic %zu bytes -> %zu bytes", n, blen);
    /* long runs of random lengths */
    for (i = 0; i < n;) {
        size_t run = rnd_range(&r, 1, 300), k;
        uint8_t c = (uint8_t)splitmix(&r);
        for (k = 0; k < run && i < n; k++) buf[i++] = c;
    }
    roundtrip(buf, n, 2, "runs");
    free(buf);
}

static void test_errors(void)
{
    uint8_t *out = NULL, data[4] = {1, 2, 3, 4};
    size_t len = 0;
    ccomp_error err;
    ccomp_cm_info info;
    CHECK(ccomp_cm_compress(data, 4, 0, NULL, NULL, &out, &len, &err) == CCOMP_ERR_VALUE, "level 0 accepted");
    CHECK(ccomp_cm_compress(data, 4, 10, NULL, NULL, &out, &len, &err) == CCOMP_ERR_VALUE, "level 10 accepted");
    CHECK(strstr(err.msg, "level") != NULL, "message does not name the level: %s", err.msg);
    CHECK(ccomp_cm_compress(NULL, 4, 6, NULL, NULL, &out, &len, &err) == CCOMP_ERR_VALUE, "NULL data accepted");
    CHECK(ccomp_cm_compress(NULL, 0, 6, NULL, NULL, &out, &len, &err) == CCOMP_OK, "NULL empty data rejected");
    free(out);
    CHECK(ccomp_cm_decompress(NULL, 0, NULL, NULL, &out, &len, &err) == CCOMP_ERR_CORRUPT, "empty blob accepted");
    CHECK(ccomp_cm_parse(data, 4, &info, &err) == CCOMP_ERR_CORRUPT, "4-byte blob accepted");
    CHECK(ccomp_cm_memory(0, 10) == 0 && ccomp_cm_memory(6, 10) > 0, "ccomp_cm_memory");
    CHECK(ccomp_cm_memory(9, 1u << 30) > ccomp_cm_memory(6, 1u << 30), "levels do not grow the memory");
}

typedef struct prog_state {
    uint64_t last, calls, cancel_at;
    int bad;
} prog_state;

static int prog_fn(void *ctx, uint64_t done, uint64_t total)
{
    prog_state *p = (prog_state *)ctx;
    if (done < p->last || done > total) p->bad = 1;
    p->last = done;
    p->calls++;
    return p->cancel_at && p->calls >= p->cancel_at;
}

static void test_progress(int quick)
{
    size_t n = quick ? ((size_t)9 << 17) : ((size_t)3 << 20), i, blen = 0, rlen = 0;
    uint8_t *data = (uint8_t *)malloc(n), *blob = NULL, *back = NULL;
    uint64_t r = 99;
    prog_state p = {0, 0, 0, 0};
    ccomp_error err;
    for (i = 0; i < n; i++) data[i] = (uint8_t)("ab"[splitmix(&r) & 1]);
    CHECK(ccomp_cm_compress(data, n, 3, prog_fn, &p, &blob, &blen, &err) == CCOMP_OK, "compress: %s", err.msg);
    CHECK(!p.bad && p.last == n && p.calls == (n + CCOMP_CM_PROGRESS_STEP - 1) / CCOMP_CM_PROGRESS_STEP,
          "compress progress: %llu calls, last %llu", (unsigned long long)p.calls, (unsigned long long)p.last);
    memset(&p, 0, sizeof p);
    CHECK(ccomp_cm_decompress(blob, blen, prog_fn, &p, &back, &rlen, &err) == CCOMP_OK, "decompress: %s", err.msg);
    CHECK(rlen == n && memcmp(back, data, n) == 0, "round trip with progress differs");
    CHECK(!p.bad && p.last == n, "decompress progress ended at %llu", (unsigned long long)p.last);
    free(back);
    back = NULL;
    memset(&p, 0, sizeof p);
    p.cancel_at = 1;
    CHECK(ccomp_cm_decompress(blob, blen, prog_fn, &p, &back, &rlen, &err) == CCOMP_ERR_CANCELLED,
          "decompress not cancelled");
    CHECK(back == NULL && rlen == 0, "cancelled decompress left output");
    free(blob);
    blob = NULL;
    memset(&p, 0, sizeof p);
    p.cancel_at = 1;
    CHECK(ccomp_cm_compress(data, n, 3, prog_fn, &p, &blob, &blen, &err) == CCOMP_ERR_CANCELLED,
          "compress not cancelled");
    CHECK(blob == NULL && p.calls == 1, "cancelled compress went on (%llu calls)", (unsigned long long)p.calls);
    free(data);
}

typedef struct thread_job {
    const uint8_t *data;
    size_t n;
    uint8_t *blob;
    size_t blen;
    ccomp_status st;
} thread_job;

static void *thread_run(void *arg)
{
    thread_job *j = (thread_job *)arg;
    ccomp_error err;
    j->st = ccomp_cm_compress(j->data, j->n, 4, NULL, NULL, &j->blob, &j->blen, &err);
    return NULL;
}

static void test_threads(const uint8_t *data, size_t n)
{
    thread_job jobs[3];
    pthread_t th[3];
    int i;
    for (i = 0; i < 3; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].data = data;
        jobs[i].n = n;
    }
    for (i = 0; i < 3; i++) pthread_create(&th[i], NULL, thread_run, &jobs[i]);
    for (i = 0; i < 3; i++) pthread_join(th[i], NULL);
    for (i = 0; i < 3; i++) CHECK(jobs[i].st == CCOMP_OK, "thread %d failed", i);
    for (i = 1; i < 3; i++)
        CHECK(jobs[i].blen == jobs[0].blen && memcmp(jobs[i].blob, jobs[0].blob, jobs[0].blen) == 0,
              "thread %d's stream differs", i);
    for (i = 0; i < 3; i++) free(jobs[i].blob);
}

/* Decodes a damaged stream: it must be rejected as corrupt, or (a harmless
 * change) decode to the original. */
static int decode_damaged(const uint8_t *blob, size_t n, const uint8_t *orig, size_t orig_len, const char *what,
                          size_t trial)
{
    uint8_t *out = NULL;
    size_t len = 0;
    ccomp_error err;
    ccomp_status st = ccomp_cm_decompress(blob, n, NULL, NULL, &out, &len, &err);
    int ok = st == CCOMP_ERR_CORRUPT || (st == CCOMP_OK && len == orig_len && memcmp(out, orig, len) == 0);
    CHECK(ok, "%s #%zu: status %d (%s), %zu bytes out", what, trial, (int)st, err.msg, len);
    CHECK(st == CCOMP_OK || out == NULL, "%s #%zu: output left on failure", what, trial);
    free(out);
    return st == CCOMP_ERR_CORRUPT;
}

static void test_damaged(const uint8_t *sample, size_t sn, size_t mutations)
{
    uint8_t *blob = NULL, *m = NULL;
    size_t blen = 0, t, rejected = 0, total = 0;
    uint64_t r = 2024;
    ccomp_error err;
    if (ccomp_cm_compress(sample, sn, CCOMP_CM_DEFAULT_LEVEL, NULL, NULL, &blob, &blen, &err) != CCOMP_OK) {
        CHECK(0, "compress of the sample failed: %s", err.msg);
        return;
    }
    m = (uint8_t *)malloc(blen + 64);
    /* every truncation, with and without a repaired CRC */
    for (t = 0; t < blen; t++) {
        memcpy(m, blob, t);
        rejected += decode_damaged(m, t, sample, sn, "truncated", t);
        fix_crc(m, t);
        rejected += decode_damaged(m, t, sample, sn, "truncated+crc", t);
        total += 2;
    }
    for (t = 0; t < mutations; t++) {
        size_t k, nflips = rnd_range(&r, 1, 4), len = blen;
        int mode = (int)rnd(&r, 4);
        memcpy(m, blob, blen);
        if (mode == 3) {
            /* payload bytes replaced by random ones */
            size_t at = CCOMP_CM_HEADER_BYTES + rnd(&r, blen - CCOMP_CM_OVERHEAD), run = rnd_range(&r, 1, 16);
            for (k = 0; k < run && at + k < blen - 4; k++) m[at + k] = (uint8_t)splitmix(&r);
        } else {
            for (k = 0; k < nflips; k++) {
                size_t bit = rnd(&r, 8 * blen);
                m[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            }
        }
        if (mode == 2 && blen > CCOMP_CM_OVERHEAD + 8) len = blen - 4 * rnd_range(&r, 1, 2); /* and shorter */
        if (mode >= 1) fix_crc(m, len);
        rejected += decode_damaged(m, len, sample, sn, mode ? "flipped+crc" : "flipped", t);
        total++;
    }
    /* random bytes, with a valid magic and CRC half of the time */
    for (t = 0; t < mutations / 4; t++) {
        size_t len = rnd_range(&r, 0, 200), k;
        for (k = 0; k < len; k++) m[k] = (uint8_t)splitmix(&r);
        if (t % 2 && len >= CCOMP_CM_OVERHEAD) {
            memcpy(m, "CCCM\x01", 5);
            m[5] = (uint8_t)rnd_range(&r, 1, 9);
            m[6] = m[7] = 0;
            put64(m + 8, rnd(&r, 3) == 0 ? splitmix(&r) : rnd(&r, 4096));
            len = CCOMP_CM_OVERHEAD + 4 * ((len - CCOMP_CM_OVERHEAD) / 4);
            fix_crc(m, len);
        }
        rejected += decode_damaged(m, len, sample, sn, "random", t);
        total++;
    }
    /* forged lengths: far more than the stream can hold is rejected up front */
    memcpy(m, blob, blen);
    put64(m + 8, (uint64_t)1 << 40);
    fix_crc(m, blen);
    rejected += decode_damaged(m, blen, sample, sn, "huge length", 0);
    put64(m + 8, (uint64_t)sn + 1);
    fix_crc(m, blen);
    rejected += decode_damaged(m, blen, sample, sn, "length+1", 0);
    put64(m + 8, (uint64_t)sn - 1);
    fix_crc(m, blen);
    rejected += decode_damaged(m, blen, sample, sn, "length-1", 0);
    total += 3;
    printf("  damaged streams: %zu decoded, %zu rejected as corrupt\n", total, rejected);
    free(m);
    free(blob);
}

/* The golden fixture: the first 4 KiB of alice29.txt at level 6, frozen. */
static void test_fixture(file_data *files, int nfiles)
{
    const char *path = "tests/fixtures/cm_alice_head.ccm";
    file_data fx;
    double printable;
    int i;
    if (load_file(path, &fx, &printable) != 0) {
        printf("  %s not found (run from the repository root): fixture check skipped\n", path);
        return;
    }
    for (i = 0; i < nfiles; i++) {
        size_t nl = strlen(files[i].name);
        if (nl >= 11 && strcmp(files[i].name + nl - 11, "alice29.txt") == 0 && files[i].len >= 4096) {
            uint8_t *blob = NULL, *back = NULL;
            size_t blen = 0, rlen = 0;
            ccomp_error err;
            CHECK(ccomp_cm_compress(files[i].data, 4096, 6, NULL, NULL, &blob, &blen, &err) == CCOMP_OK,
                  "fixture: compress failed");
            CHECK(blen == fx.len && memcmp(blob, fx.data, blen) == 0,
                  "fixture: compressing alice29.txt[:4096] no longer gives %s (the format changed?)", path);
            CHECK(ccomp_cm_decompress(fx.data, fx.len, NULL, NULL, &back, &rlen, &err) == CCOMP_OK &&
                      rlen == 4096 && memcmp(back, files[i].data, 4096) == 0,
                  "fixture: %s does not decode to alice29.txt[:4096]", path);
            free(blob);
            free(back);
            printf("  golden fixture %s: ok\n", path);
        }
    }
    free(fx.data);
}

static const char synthetic_text[] =
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
    "once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations "
    "in it, 'and what is the use of a book,' thought Alice 'without pictures or conversations?' ";

int main(int argc, char **argv)
{
    int quick = 0, nfiles = 0, i;
    size_t mutations = 4000, sn;
    file_data *files = (file_data *)calloc((size_t)argc, sizeof *files);
    const uint8_t *sample;
    for (i = 1; i < argc; i++) {
        double printable;
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
            mutations = 600;
        } else if (strcmp(argv[i], "--mutations") == 0 && i + 1 < argc) {
            mutations = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (load_file(argv[i], &files[nfiles], &printable) == 0) {
            files[nfiles].text = printable > 0.95;
            nfiles++;
        } else {
            fprintf(stderr, "test_ac_cm: cannot read %s\n", argv[i]);
            return 2;
        }
    }
    test_mixer(quick);
    test_errors();
    test_synthetic(quick);
    test_progress(quick);
    test_files(files, nfiles, quick);
    test_fixture(files, nfiles);
    if (nfiles > 0) {
        sample = files[0].data;
        sn = files[0].len < 1024 ? files[0].len : 1024;
    } else {
        sample = (const uint8_t *)synthetic_text;
        sn = sizeof synthetic_text - 1;
    }
    test_threads(sample, sn);
    test_damaged(sample, quick && sn > 400 ? 400 : sn, mutations);
    for (i = 0; i < nfiles; i++) free(files[i].data);
    free(files);
    if (test_failures) {
        fprintf(stderr, "test_ac_cm: %d failure(s)\n", test_failures);
        return 1;
    }
    printf("test_ac_cm: all passed\n");
    return 0;
}

/* Helpers shared by the C test programs: input files, a seeded generator, a clock. */
#ifndef CCOMP_TEST_UTIL_H
#define CCOMP_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct file_data {
    const char *name;
    uint8_t *data;
    size_t len;
    int text;
} file_data;

static inline uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline size_t rnd(uint64_t *r, size_t n) /* uniform in [0, n) */
{
    return n ? (size_t)(splitmix(r) % n) : 0;
}

static inline size_t rnd_range(uint64_t *r, size_t lo, size_t hi) /* [lo, hi] */
{
    return lo + rnd(r, hi - lo + 1);
}

static inline double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

/* Reads a whole file into f (f->text is left 0); *printable gets the share of
 * printable ASCII bytes in its first 64 KB.  Returns 0, or -1 when unreadable. */
static inline int load_file(const char *path, file_data *f, double *printable)
{
    FILE *fp = fopen(path, "rb");
    long len;
    size_t i, count = 0, sample;
    if (fp == NULL)
        return -1;
    if (fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return -1;
    }
    f->name = path;
    f->len = (size_t)len;
    f->text = 0;
    f->data = (uint8_t *)malloc(f->len ? f->len : 1);
    if (f->data == NULL || fread(f->data, 1, f->len, fp) != f->len) {
        fclose(fp);
        return -1;
    }
    fclose(fp);
    sample = f->len < 65536 ? f->len : 65536;
    for (i = 0; i < sample; i++) {
        uint8_t c = f->data[i];
        if ((c >= 32 && c < 127) || c == '\n' || c == '\r' || c == '\t')
            count++;
    }
    *printable = sample ? (double)count / (double)sample : 0.0;
    return 0;
}

#endif

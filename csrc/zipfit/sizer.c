/* Compressed-size engines for ZIP-FIT: zlib (gzip framing), the deflate size
 * model, lz4 frames and zstd frames, each matching the byte count of the Python
 * library a reference user calls. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lz4frame.h>
#include <zlib.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_c_stableInBuffer */
#include <zstd.h>

#include "ccomp/cancel.h"
#include "ccomp/deflate_model.h"
#include "ccomp/lz4_model.h"
#include "ccomp/zipfit.h"

/* gzip.compress adds a 10-byte header and an 8-byte trailer to the raw deflate stream. */
#define GZIP_FRAMING 18
/* Below this prefix length re-compressing the prefix is cheaper than deflateCopy's ~300 KB copy
 * (measured: level 1 and 6, 160-byte targets, crossover between 2 and 4 KB). */
#ifndef ZLIB_PREFIX_COPY_MIN
#define ZLIB_PREFIX_COPY_MIN 4096
#endif
/* Input slice between two checks for Ctrl-C inside one compression: about 0.1 s of zlib level 9
 * or lz4 HC on the slowest (3-letter) input measured.  zlib's output does not depend on how its
 * input is split (levels 1-9, Z_NO_FLUSH); lz4 frames are fed whole 64 KB blocks. */
#define SIZER_SLICE ((size_t)65536)
/* zstd compresses a stable input buffer only in whole blocks of at most 128 KB */
#define ZSTD_SLICE ((size_t)131072)

struct ccomp_sizer {
    ccomp_compressor kind;
    int level;
    int use_model;
    int model_required;   /* engine "model" asked for: no silent fall back to the library */
    /* zlib */
    z_stream zs;
    int zs_ready;
    z_stream prefix_zs;   /* stream state after feeding the prefix (long prefixes only) */
    int prefix_zs_ready;
    size_t prefix_out;    /* bytes the prefix state has already emitted */
    ccomp_deflate_model *model;
    ccomp_lz4_model *lz4_model;
    int prefix_in_model;  /* the lz4 model holds the prefix (it fitted in one block) */
    /* lz4 / zstd */
    ZSTD_CCtx *zctx;
    int zstd_stable;      /* zstd reads the input in place (ZSTD_c_stableInBuffer accepted) */
    /* scratch: output space, and the concatenation a||b */
    uint8_t *out;
    size_t out_cap;
    uint8_t *cat;
    size_t cat_cap;
    uint8_t *prefix;      /* copy of the prefix where the engine needs it */
    size_t prefix_cap;
    size_t prefix_len;
};

void ccomp_level_range(ccomp_compressor c, int *lo, int *hi)
{
    switch (c) {
    case CCOMP_GZIP: *lo = 0; *hi = 9; return;
    case CCOMP_LZ4: *lo = 0; *hi = LZ4F_compressionLevel_max(); return;
    case CCOMP_ZSTD: *lo = ZSTD_minCLevel(); *hi = ZSTD_maxCLevel(); return;
    }
    *lo = 0;
    *hi = -1;
}

static const char *compressor_name(ccomp_compressor c)
{
    switch (c) {
    case CCOMP_GZIP: return "gzip";
    case CCOMP_LZ4: return "lz4";
    case CCOMP_ZSTD: return "zstd";
    }
    return "unknown";
}

ccomp_status ccomp_check_level(ccomp_compressor c, int level, ccomp_error *err)
{
    if (c != CCOMP_GZIP && c != CCOMP_LZ4 && c != CCOMP_ZSTD)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "unknown compressor id %d (expected gzip, lz4 or zstd)", (int)c);
    int lo, hi;
    ccomp_level_range(c, &lo, &hi);
    if (level < lo || level > hi)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "%s level must be in [%d, %d], got %d", compressor_name(c), lo, hi,
                          level);
    return CCOMP_OK;
}

const char *ccomp_zlib_version(void) { return zlibVersion(); }
const char *ccomp_lz4_version(void) { return LZ4_versionString(); }
const char *ccomp_zstd_version(void) { return ZSTD_versionString(); }

static ccomp_status reserve(uint8_t **buf, size_t *cap, size_t need, ccomp_error *err)
{
    if (need <= *cap)
        return CCOMP_OK;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    uint8_t *p = realloc(*buf, n);
    if (p == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate %zu bytes of compressor scratch", n);
    *buf = p;
    *cap = n;
    return CCOMP_OK;
}

ccomp_status ccomp_engine_choice(ccomp_compressor c, int level, ccomp_size_engine engine, int *use_model,
                                 ccomp_error *err)
{
    ccomp_status st = ccomp_check_level(c, level, err);
    if (st != CCOMP_OK)
        return st;
    if (engine != CCOMP_ENGINE_AUTO && engine != CCOMP_ENGINE_LIBRARY && engine != CCOMP_ENGINE_MODEL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "unknown gzip engine %d", (int)engine);
    int gzip_model = c == CCOMP_GZIP && level >= 1;
    int lz4_model = c == CCOMP_LZ4 && level <= 2;
    int model_ok = (gzip_model && ccomp_deflate_model_supported()) || (lz4_model && ccomp_lz4_model_supported());
    if (engine == CCOMP_ENGINE_MODEL && !model_ok) {
        if (c == CCOMP_ZSTD)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "zstd has no size model; use the library engine");
        if (c == CCOMP_GZIP && !gzip_model)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "the deflate model covers gzip levels 1-9, not level %d", level);
        if (c == CCOMP_LZ4 && !lz4_model)
            return ccomp_fail(err, CCOMP_ERR_VALUE, "the lz4 model covers lz4 levels 0-2 (fast mode), not level %d",
                              level);
        if (c == CCOMP_GZIP)
            return ccomp_fail(err, CCOMP_ERR_UNSUPPORTED,
                              "the deflate model does not reproduce the linked zlib %s (verified: 1.2.13)",
                              zlibVersion());
        return ccomp_fail(err, CCOMP_ERR_UNSUPPORTED,
                          "the lz4 model does not reproduce the linked lz4 %s (verified: 1.9.4)", LZ4_versionString());
    }
    if (use_model != NULL)
        *use_model = model_ok && engine != CCOMP_ENGINE_LIBRARY;
    return CCOMP_OK;
}

const char *ccomp_engine_name(ccomp_compressor c, int use_model)
{
    switch (c) {
    case CCOMP_GZIP: return use_model ? "deflate-model" : "zlib";
    case CCOMP_LZ4: return use_model ? "lz4-model" : "lz4";
    case CCOMP_ZSTD: return "zstd";
    }
    return "unknown";
}

ccomp_status ccomp_sizer_create(ccomp_compressor c, int level, ccomp_size_engine engine, ccomp_sizer **out,
                                ccomp_error *err)
{
    int use_model = 0;
    if (out == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "sizer_create: output pointer is NULL");
    ccomp_status st = ccomp_engine_choice(c, level, engine, &use_model, err);
    if (st != CCOMP_OK)
        return st;
    ccomp_sizer *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot allocate a compressor");
    s->kind = c;
    s->level = level;
    s->model_required = engine == CCOMP_ENGINE_MODEL;
    switch (c) {
    case CCOMP_GZIP:
        if (use_model) {
            s->use_model = 1;
            st = ccomp_deflate_model_create(level, &s->model, err);
        } else if (deflateInit2(&s->zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "zlib deflateInit2 failed for level %d", level);
        } else {
            s->zs_ready = 1;
        }
        break;
    case CCOMP_LZ4:
        if (use_model) {
            s->use_model = 1;
            st = ccomp_lz4_model_create(&s->lz4_model, err);
        }
        break;
    case CCOMP_ZSTD:
        s->zctx = ZSTD_createCCtx();
        if (s->zctx == NULL) {
            st = ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot create a zstd context");
            break;
        }
        /* The frame parameters of zstandard.ZstdCompressor(level=L) */
        if (ZSTD_isError(ZSTD_CCtx_setParameter(s->zctx, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(s->zctx, ZSTD_c_contentSizeFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(s->zctx, ZSTD_c_checksumFlag, 0)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(s->zctx, ZSTD_c_dictIDFlag, 1)))
            st = ccomp_fail(err, CCOMP_ERR_BACKEND, "zstd rejected level %d", level);
        /* an experimental parameter: a zstd without it compresses in one call (not interruptible) */
        s->zstd_stable = !ZSTD_isError(ZSTD_CCtx_setParameter(s->zctx, ZSTD_c_stableInBuffer, 1));
        break;
    }
    if (st != CCOMP_OK) {
        ccomp_sizer_free(s);
        return st;
    }
    *out = s;
    return CCOMP_OK;
}

void ccomp_sizer_free(ccomp_sizer *s)
{
    if (s == NULL)
        return;
    if (s->zs_ready)
        deflateEnd(&s->zs);
    if (s->prefix_zs_ready)
        deflateEnd(&s->prefix_zs);
    ccomp_deflate_model_free(s->model);
    ccomp_lz4_model_free(s->lz4_model);
    ZSTD_freeCCtx(s->zctx);
    free(s->out);
    free(s->cat);
    free(s->prefix);
    free(s);
}

const char *ccomp_sizer_engine(const ccomp_sizer *s)
{
    return ccomp_engine_name(s->kind, s->use_model);
}

/* CPython's zlib.compress grows its output in blocks of these sizes; level 0's
 * stored-block lengths depend on them, so they are replayed exactly. */
static size_t python_out_block(int i)
{
    static const size_t kb = 1024, mb = 1024 * 1024;
    static const size_t blocks[] = {32 * kb, 64 * kb, 256 * kb, 1 * mb, 4 * mb, 8 * mb, 16 * mb, 16 * mb,
                                    32 * mb, 32 * mb, 32 * mb, 32 * mb, 64 * mb, 64 * mb, 128 * mb, 128 * mb};
    const int n = (int)(sizeof blocks / sizeof blocks[0]);
    return i < n ? blocks[i] : 256 * mb;
}

/* Runs deflate on strm until Z_STREAM_END with input (p, n) and flush mode;
 * adds the bytes produced to *produced.  For level 0 the output space is offered
 * in CPython's block sizes; for the other levels the split does not change the
 * output, so one reusable scratch block is enough. */
static ccomp_status zlib_feed(ccomp_sizer *s, z_stream *strm, const uint8_t *p, size_t n, int flush,
                              size_t *produced, int *block_index, ccomp_error *err)
{
    strm->next_in = (Bytef *)(uintptr_t)p;
    size_t left = n;
    /* level 0's stored blocks follow the input split, so it is fed whole (it only copies) */
    const size_t slice = s->level == 0 ? (size_t)UINT_MAX : SIZER_SLICE;
    for (;;) {
        uInt chunk = left > slice ? (uInt)slice : (uInt)left;
        strm->avail_in = chunk;
        left -= chunk;
        int mode = left ? Z_NO_FLUSH : flush;
        for (;;) {
            size_t blk = s->level == 0 ? python_out_block(*block_index) : 65536;
            if (s->level == 0 && strm->avail_out == 0) {
                ccomp_status st = reserve(&s->out, &s->out_cap, blk, err);
                if (st != CCOMP_OK)
                    return st;
                strm->next_out = s->out;
                strm->avail_out = (uInt)blk;
                (*block_index)++;
            } else if (s->level != 0) {
                ccomp_status st = reserve(&s->out, &s->out_cap, blk, err);
                if (st != CCOMP_OK)
                    return st;
                strm->next_out = s->out;
                strm->avail_out = (uInt)blk;
            }
            uInt before = strm->avail_out;
            int rc = deflate(strm, mode);
            *produced += before - strm->avail_out;
            if (rc == Z_STREAM_END)
                return CCOMP_OK;
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return ccomp_fail(err, CCOMP_ERR_BACKEND, "zlib deflate failed (%d)", rc);
            if (strm->avail_out != 0 && strm->avail_in == 0)
                break; /* needs more input */
        }
        if (left == 0)
            return CCOMP_OK;
        ccomp_status st = ccomp_check_cancel(err, "gzip");
        if (st != CCOMP_OK)
            return st;
    }
}

static ccomp_status concat(ccomp_sizer *s, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                           const uint8_t **p, size_t *n, ccomp_error *err)
{
    if (nb == 0) {
        *p = a;
        *n = na;
        return CCOMP_OK;
    }
    if (na == 0) {
        *p = b;
        *n = nb;
        return CCOMP_OK;
    }
    if (na > SIZE_MAX - nb)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "texts too long to concatenate");
    ccomp_status st = reserve(&s->cat, &s->cat_cap, na + nb, err);
    if (st != CCOMP_OK)
        return st;
    memcpy(s->cat, a, na);
    memcpy(s->cat + na, b, nb);
    *p = s->cat;
    *n = na + nb;
    return CCOMP_OK;
}

static void lz4_prefs(const ccomp_sizer *s, size_t n, LZ4F_preferences_t *prefs)
{
    /* python-lz4's lz4.frame.compress defaults: linked 64 KB blocks, content
     * size stored, no checksums. */
    memset(prefs, 0, sizeof *prefs);
    prefs->compressionLevel = s->level;
    prefs->frameInfo.blockSizeID = LZ4F_default;
    prefs->frameInfo.blockMode = LZ4F_blockLinked;
    prefs->frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
    prefs->frameInfo.blockChecksumFlag = LZ4F_noBlockChecksum;
    prefs->frameInfo.contentSize = (unsigned long long)n;
}

/* Inputs over one block: LZ4F_compressFrame's own calls (auto flush, stable
 * source, 64 KB blocks, a fresh context: a reused one changes the output of the
 * fast levels), with the input handed over block by block, so the same blocks
 * are compressed in the same memory, and Ctrl-C is checked between them. */
static ccomp_status lz4_size_sliced(ccomp_sizer *s, const uint8_t *p, size_t n, size_t *out, ccomp_error *err)
{
    LZ4F_preferences_t prefs;
    lz4_prefs(s, n, &prefs);
    prefs.autoFlush = 1;
    prefs.frameInfo.blockSizeID = LZ4F_max64KB;
    size_t bound = LZ4F_compressBound(SIZER_SLICE, &prefs);
    if (bound < LZ4F_HEADER_SIZE_MAX)
        bound = LZ4F_HEADER_SIZE_MAX;
    ccomp_status st = reserve(&s->out, &s->out_cap, bound, err);
    if (st != CCOMP_OK)
        return st;
    LZ4F_cctx *ctx = NULL;
    if (LZ4F_isError(LZ4F_createCompressionContext(&ctx, LZ4F_VERSION)))
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "cannot create an lz4 frame context");
    LZ4F_compressOptions_t opts;
    memset(&opts, 0, sizeof opts);
    opts.stableSrc = 1;
    size_t r = LZ4F_compressBegin(ctx, s->out, s->out_cap, &prefs);
    size_t total = 0;
    for (size_t at = 0; !LZ4F_isError(r) && st == CCOMP_OK; at += SIZER_SLICE) {
        total += r;
        if (at >= n) {
            r = LZ4F_compressEnd(ctx, s->out, s->out_cap, &opts);
            if (!LZ4F_isError(r))
                *out = total + r;
            break;
        }
        if (at != 0 && (st = ccomp_check_cancel(err, "lz4")) != CCOMP_OK)
            break;
        size_t len = n - at < SIZER_SLICE ? n - at : SIZER_SLICE;
        r = LZ4F_compressUpdate(ctx, s->out, s->out_cap, p + at, len, &opts);
    }
    LZ4F_freeCompressionContext(ctx);
    if (st == CCOMP_OK && LZ4F_isError(r))
        st = ccomp_fail(err, CCOMP_ERR_BACKEND, "lz4 frame compression failed: %s", LZ4F_getErrorName(r));
    return st;
}

static ccomp_status lz4_size(ccomp_sizer *s, const uint8_t *p, size_t n, size_t *out, ccomp_error *err)
{
    if (n > SIZER_SLICE)
        return lz4_size_sliced(s, p, n, out, err);
    LZ4F_preferences_t prefs;
    lz4_prefs(s, n, &prefs);
    size_t bound = LZ4F_compressFrameBound(n, &prefs);
    ccomp_status st = reserve(&s->out, &s->out_cap, bound, err);
    if (st != CCOMP_OK)
        return st;
    size_t r = LZ4F_compressFrame(s->out, s->out_cap, p, n, &prefs);
    if (LZ4F_isError(r))
        return ccomp_fail(err, CCOMP_ERR_BACKEND, "lz4 frame compression failed: %s", LZ4F_getErrorName(r));
    *out = r;
    return CCOMP_OK;
}

static ccomp_status zstd_size(ccomp_sizer *s, const uint8_t *p, size_t n, size_t *out, ccomp_error *err)
{
    size_t bound = ZSTD_compressBound(n);
    ccomp_status st = reserve(&s->out, &s->out_cap, bound, err);
    if (st != CCOMP_OK)
        return st;
    ZSTD_CCtx_reset(s->zctx, ZSTD_reset_session_only);
    /* The input stays where it is (stable buffer) and is offered 128 KB more at
     * a time: zstd compresses it in the same whole blocks as one call would, and
     * Ctrl-C is checked between them; the last call ends the frame. */
    const int sliced = s->zstd_stable && n > ZSTD_SLICE;
    size_t r = ZSTD_CCtx_setPledgedSrcSize(s->zctx, (unsigned long long)n);
    if (!ZSTD_isError(r)) {
        ZSTD_inBuffer in = {p, 0, 0};
        ZSTD_outBuffer o = {s->out, s->out_cap, 0};
        for (;;) {
            const int last = !sliced || n - in.size <= ZSTD_SLICE;
            in.size = last ? n : in.size + ZSTD_SLICE;
            r = ZSTD_compressStream2(s->zctx, &o, &in, last ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(r) || last)
                break;
            if ((st = ccomp_check_cancel(err, "zstd")) != CCOMP_OK) {
                ZSTD_CCtx_reset(s->zctx, ZSTD_reset_session_only);
                return st;
            }
        }
        if (!ZSTD_isError(r) && r != 0)
            return ccomp_fail(err, CCOMP_ERR_BACKEND, "zstd did not finish the frame");
        *out = o.pos;
    }
    if (ZSTD_isError(r))
        return ccomp_fail(err, CCOMP_ERR_BACKEND, "zstd compression failed: %s", ZSTD_getErrorName(r));
    return CCOMP_OK;
}

static ccomp_status zlib_size(ccomp_sizer *s, const uint8_t *p, size_t n, size_t *out, ccomp_error *err)
{
    if (deflateReset(&s->zs) != Z_OK)
        return ccomp_fail(err, CCOMP_ERR_BACKEND, "zlib deflateReset failed");
    s->zs.avail_out = 0;
    size_t produced = 0;
    int block = 0;
    ccomp_status st = zlib_feed(s, &s->zs, p, n, Z_FINISH, &produced, &block, err);
    if (st != CCOMP_OK)
        return st;
    *out = produced + GZIP_FRAMING;
    return CCOMP_OK;
}

ccomp_status ccomp_sizer_size(ccomp_sizer *s, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                              size_t *out, ccomp_error *err)
{
    if ((a == NULL && na) || (b == NULL && nb) || out == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "sizer_size: NULL buffer with nonzero length");
    if (s->use_model && s->kind == CCOMP_GZIP) {
        size_t raw;
        ccomp_status st = ccomp_deflate_model_size(s->model, a, na, b, nb, &raw, err);
        if (st == CCOMP_OK)
            *out = raw + GZIP_FRAMING;
        return st;
    }
    if (s->use_model && na <= ccomp_lz4_model_max_input() && nb <= ccomp_lz4_model_max_input() - na)
        return ccomp_lz4_model_size(s->lz4_model, a, na, b, nb, out, err);
    if (s->use_model && s->model_required) /* the lz4 model is one block; "model" must not mean "library" */
        return ccomp_fail(err, CCOMP_ERR_VALUE,
                          "engine 'model' covers lz4 inputs up to %zu bytes (one 64 KiB block), got %zu bytes; "
                          "use engine 'auto' or 'library' for longer texts",
                          ccomp_lz4_model_max_input(), na > SIZE_MAX - nb ? SIZE_MAX : na + nb);
    const uint8_t *p = NULL;
    size_t n = 0;
    ccomp_status st = concat(s, a, na, b, nb, &p, &n, err);
    if (st != CCOMP_OK)
        return st;
    switch (s->kind) {
    case CCOMP_GZIP: return zlib_size(s, p, n, out, err);
    case CCOMP_LZ4: return lz4_size(s, p, n, out, err);
    case CCOMP_ZSTD: return zstd_size(s, p, n, out, err);
    }
    return ccomp_fail(err, CCOMP_ERR_VALUE, "unknown compressor");
}

ccomp_status ccomp_sizer_set_prefix(ccomp_sizer *s, const uint8_t *a, size_t na, ccomp_error *err)
{
    if (a == NULL && na)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "sizer_set_prefix: NULL buffer with nonzero length");
    if (s->use_model && s->kind == CCOMP_GZIP)
        return ccomp_deflate_model_set_prefix(s->model, a, na, err);
    s->prefix_in_model = 0;
    if (s->prefix_zs_ready) {
        deflateEnd(&s->prefix_zs);
        s->prefix_zs_ready = 0;
    }
    ccomp_status st = reserve(&s->prefix, &s->prefix_cap, na ? na : 1, err);
    if (st != CCOMP_OK)
        return st;
    if (na)
        memcpy(s->prefix, a, na);
    s->prefix_len = na;
    s->prefix_out = 0;
    if (s->use_model && na <= ccomp_lz4_model_max_input()) {
        /* the copy above still serves targets too long for one lz4 block */
        s->prefix_in_model = 1;
        return ccomp_lz4_model_set_prefix(s->lz4_model, a, na, err);
    }
    if (s->kind == CCOMP_GZIP && s->level >= 1 && na >= ZLIB_PREFIX_COPY_MIN) {
        /* Feed the prefix without flushing: deflate holds back the last
         * MIN_LOOKAHEAD bytes, so the state does not depend on what follows. */
        if (deflateReset(&s->zs) != Z_OK)
            return ccomp_fail(err, CCOMP_ERR_BACKEND, "zlib deflateReset failed");
        s->zs.avail_out = 0;
        size_t produced = 0;
        int block = 0;
        st = zlib_feed(s, &s->zs, a, na, Z_NO_FLUSH, &produced, &block, err);
        if (st != CCOMP_OK)
            return st;
        if (deflateCopy(&s->prefix_zs, &s->zs) != Z_OK)
            return ccomp_fail(err, CCOMP_ERR_NOMEM, "zlib deflateCopy failed");
        s->prefix_zs_ready = 1;
        s->prefix_out = produced;
    }
    return CCOMP_OK;
}

ccomp_status ccomp_sizer_size_with_prefix(ccomp_sizer *s, const uint8_t *b, size_t nb, size_t *out,
                                          ccomp_error *err)
{
    if ((b == NULL && nb) || out == NULL)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "sizer_size_with_prefix: NULL buffer with nonzero length");
    if (s->use_model && s->kind == CCOMP_GZIP) {
        size_t raw;
        ccomp_status st = ccomp_deflate_model_size_with_prefix(s->model, b, nb, &raw, err);
        if (st == CCOMP_OK)
            *out = raw + GZIP_FRAMING;
        return st;
    }
    if (s->prefix_in_model && nb <= ccomp_lz4_model_max_input() - s->prefix_len)
        return ccomp_lz4_model_size_with_prefix(s->lz4_model, b, nb, out, err);
    if (s->prefix_zs_ready) {
        deflateEnd(&s->zs);
        s->zs_ready = 0;
        if (deflateCopy(&s->zs, &s->prefix_zs) != Z_OK)
            return ccomp_fail(err, CCOMP_ERR_NOMEM, "zlib deflateCopy failed");
        s->zs_ready = 1;
        size_t produced = s->prefix_out;
        int block = 0;
        s->zs.avail_out = 0;
        ccomp_status st = zlib_feed(s, &s->zs, b, nb, Z_FINISH, &produced, &block, err);
        if (st != CCOMP_OK)
            return st;
        *out = produced + GZIP_FRAMING;
        return CCOMP_OK;
    }
    return ccomp_sizer_size(s, s->prefix, s->prefix_len, b, nb, out, err);
}

ccomp_status ccomp_sizer_sizes_with_prefix(ccomp_sizer *s, const uint8_t *const *bs, const size_t *nbs, size_t count,
                                           size_t *out, ccomp_error *err)
{
    if (count != 0 && (bs == NULL || nbs == NULL || out == NULL))
        return ccomp_fail(err, CCOMP_ERR_VALUE, "sizer_sizes_with_prefix: NULL arrays for %zu targets", count);
    if (s->use_model && s->kind == CCOMP_GZIP) {
        ccomp_status st = ccomp_deflate_model_sizes_with_prefix(s->model, bs, nbs, count, out, err);
        if (st == CCOMP_OK)
            for (size_t i = 0; i < count; i++)
                out[i] += GZIP_FRAMING;
        return st;
    }
    for (size_t i = 0; i < count; i++) {
        ccomp_status st = (i & 15) == 15 ? ccomp_check_cancel(err, "zipfit") : CCOMP_OK;
        if (st == CCOMP_OK)
            st = ccomp_sizer_size_with_prefix(s, bs[i], nbs[i], &out[i], err);
        if (st != CCOMP_OK)
            return st;
    }
    return CCOMP_OK;
}

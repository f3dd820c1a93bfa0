/* Arithmetic (range) coding for neural lossless compression.
 *
 * The range coder
 * ---------------
 * 64-bit state (lower, range), 32-bit output words, CDF precision P in
 * [CCOMP_AC_MIN_PRECISION, CCOMP_AC_MAX_PRECISION].  A symbol is given as its
 * (cumulative, frequency) pair with freq >= 1 and cum + freq <= 2^P.  Encoding
 * one symbol:
 *
 *     scale = range >> P;  lower += scale * cum (mod 2^64);  range = scale * freq;
 *     if range < 2^32: emit the top word of lower; lower <<= 32; range <<= 32.
 *
 * A carry out of `lower` is resolved by holding back the words that a carry
 * could still change (the "inverted" situation) until it is known.  Finishing
 * writes lower + 2^32 - 1's top word, plus a zero word when the top word of
 * lower + range equals it (so that the stream decodes whatever follows it),
 * and nothing at all for an empty message.  This is the algorithm of the
 * range coder of the `constriction` library (RangeEncoder<u32, u64>), so its
 * streams and ccomp's are interchangeable when the (cum, freq) pairs agree.
 *
 * Word order and byte order: words are written first to last; in the byte
 * form of a stream (`ccomp_rc_enc_bytes`, and everything ccomp serialises)
 * each word is stored little-endian.  A stream's bytes are therefore the
 * bytes of constriction's compressed uint32 array on a little-endian machine.
 *
 * The decoder reads missing words past the end as zero, like constriction's,
 * and reports CCOMP_ERR_CORRUPT when a target falls outside [0, 2^P) (which a
 * valid stream never produces).
 */
#ifndef CCOMP_AC_H
#define CCOMP_AC_H

#include <stddef.h>
#include <stdint.h>

#include "ccomp/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CCOMP_AC_MIN_PRECISION 12
#define CCOMP_AC_MAX_PRECISION 28
#define CCOMP_AC_DEFAULT_PRECISION 24

/* ---------------------------------------------------------------- coder */

typedef struct ccomp_rc_enc {
    uint64_t lower, range;
    size_t num_inverted;     /* > 0: words held back while a carry is open */
    uint32_t first_inverted; /* the first held-back word */
    uint32_t *words;
    size_t n, cap;
    size_t symbols; /* symbols encoded so far */
} ccomp_rc_enc;

void ccomp_rc_enc_init(ccomp_rc_enc *e);
void ccomp_rc_enc_free(ccomp_rc_enc *e);
/* Encodes one symbol; rejects freq == 0 or cum + freq > 2^precision. */
ccomp_status ccomp_rc_encode(ccomp_rc_enc *e, uint32_t cum, uint32_t freq, int precision, ccomp_error *err);
/* Encodes n symbols; an invalid pair is reported with its index. */
ccomp_status ccomp_rc_encode_many(ccomp_rc_enc *e, const uint32_t *cum, const uint32_t *freq, size_t n,
                                  int precision, ccomp_error *err);
/* Number of words the sealed stream has now (words written + held back + final). */
size_t ccomp_rc_enc_sealed_words(const ccomp_rc_enc *e);
/* Writes the sealed stream (ccomp_rc_enc_sealed_words() words, little-endian)
 * to out, which must have room for 4 * that many bytes.  The encoder is left
 * unchanged, so more symbols may follow. */
void ccomp_rc_enc_seal_to(const ccomp_rc_enc *e, uint8_t *out);

typedef struct ccomp_rc_dec {
    uint64_t lower, range, point;
    const uint8_t *data; /* little-endian words */
    size_t nwords, pos;
    size_t overread; /* words read past the end (as zeros) */
} ccomp_rc_dec;

/* nbytes must be a multiple of 4. */
ccomp_status ccomp_rc_dec_init(ccomp_rc_dec *d, const uint8_t *data, size_t nbytes, ccomp_error *err);
/* The decoder's target in [0, 2^precision): the symbol to decode next is the
 * one whose [cum, cum + freq) contains it. */
ccomp_status ccomp_rc_dec_target(const ccomp_rc_dec *d, int precision, uint32_t *target, ccomp_error *err);
/* Consumes the symbol (cum, freq) that contains the last target. */
ccomp_status ccomp_rc_dec_advance(ccomp_rc_dec *d, uint32_t cum, uint32_t freq, int precision, ccomp_error *err);
/* Nonzero when every word has been consumed in a way a sealed stream would be
 * (constriction's maybe_exhausted). */
int ccomp_rc_dec_exhausted(const ccomp_rc_dec *d);

/* ------------------------------------------------------- quantization */

/* How probabilities become integer frequencies summing to 2^P:
 *  CCOMP_AC_RULE_CONSTRICTION: constriction's Categorical(perfect=False):
 *      free = 2^P - V;  S = p[0] + p[1] + ... (left to right, in the input's
 *      float type F);  scale = (F)free / S;  cdf[i] = (u32)(c[i] * scale) + i
 *      where c[i] = p[0] + ... + p[i-1] summed the same way; cdf[V] = 2^P.
 *  CCOMP_AC_RULE_NACRITH: f[i] = floor(p[i] * (2^P - V) / S) + 1 in float64
 *      (S the left-to-right float64 sum), and the remainder 2^P - sum(f) goes
 *      to the most likely symbol (the first one on ties).
 * Logits input: w[i] = exp((x[i] - max x) / temperature) in float64 with
 * ccomp's own exp (the same bits on every CPU and GPU), rounded to F for the
 * constriction rule; then the rule above on w. */
typedef enum ccomp_ac_rule { CCOMP_AC_RULE_CONSTRICTION = 0, CCOMP_AC_RULE_NACRITH = 1 } ccomp_ac_rule;
typedef enum ccomp_ac_dtype { CCOMP_AC_F32 = 0, CCOMP_AC_F64 = 1 } ccomp_ac_dtype;

typedef struct ccomp_ac_model {
    int rule;           /* ccomp_ac_rule */
    int precision;      /* P */
    int dtype;          /* ccomp_ac_dtype of the rows */
    int logits;         /* rows are logits (else probabilities / weights) */
    double temperature; /* logits only; > 0 */
} ccomp_ac_model;

/* Checks the parameters for a vocabulary of V symbols. */
ccomp_status ccomp_ac_model_check(const ccomp_ac_model *m, size_t V, ccomp_error *err);

/* The full quantized CDF of one row: cdf[0 .. V] (cdf[0] = 0, cdf[V] = 2^P).
 * `row_index` only names the row in error messages. */
ccomp_status ccomp_ac_cdf(const ccomp_ac_model *m, const void *row, size_t V, uint32_t *cdf, size_t row_index,
                          ccomp_error *err);

/* (cum, freq) of symbols[t] under row t, for rows t in [0, T) at `rows` with
 * a stride of `row_stride` elements.  Parallel over rows; identical results
 * for any thread count. */
ccomp_status ccomp_ac_lookup(const ccomp_ac_model *m, const void *rows, size_t T, size_t V, size_t row_stride,
                             const int64_t *symbols, uint32_t *cum, uint32_t *freq, int threads,
                             ccomp_error *err);

/* The symbol of one row whose interval contains target (< 2^P). */
ccomp_status ccomp_ac_find(const ccomp_ac_model *m, const void *row, size_t V, uint32_t target, uint32_t *symbol,
                           uint32_t *cum, uint32_t *freq, size_t row_index, ccomp_error *err);

/* ------------------------------------------ raw streams under a model */

/* Decodes n symbols from a raw stream, symbol t under row t (rows n x V,
 * row_stride elements apart) of model m.  *scratch holds row summaries kept
 * from call to call (NULL at first; release with ccomp_rc_rows_scratch_free).
 * A target outside every symbol's interval is CCOMP_ERR_CORRUPT; the symbols
 * decoded before an error have consumed the stream. */
ccomp_status ccomp_rc_dec_rows(ccomp_rc_dec *d, const ccomp_ac_model *m, const void *rows, size_t n, size_t V,
                               size_t row_stride, int64_t *symbols, void **scratch, ccomp_error *err);
void ccomp_rc_rows_scratch_free(void **scratch);

/* Decodes n symbols from a raw stream, symbol t under the explicit CDF
 * cdfs[t * W .. t * W + W - 1] (W = V + 1 >= 2): every row must start at 0, end
 * at 2^precision and increase strictly; all rows are checked before the first
 * symbol is decoded. */
ccomp_status ccomp_rc_dec_cdfs(ccomp_rc_dec *d, const uint32_t *cdfs, size_t n, size_t W, int precision,
                               int64_t *symbols, ccomp_error *err);

/* ------------------------------------------------------- containers */

/* Container "CCAC" (all integers little-endian).  Version 2 (written):
 *   0  magic "CCAC"          4  u8 version (2)   5  u8 precision   6  u8 rule
 *   7  u8 flags: bit 0 the rows were logits, bit 1 the rows were float64
 *      (else float32); no other bit is set
 *   8  u64 token count       16 u64 tokens per chunk
 *   24 u32 chunk count       28 u32 vocabulary size
 *   32 f64 temperature (IEEE-754 bits; 1.0 unless logits)
 *   40 chunk table: chunk count x (u32 byte length of the chunk's stream,
 *      u32 CRC-32 of the chunk's symbols, each as a u32 little-endian)
 *   ... the chunks' range-coder streams, one after the other
 *   last 4: u32 CRC-32 (zlib's) of every byte before it.
 * Version 1 (still read): flags 0, no temperature, a table of lengths only
 * (chunk count x u32) at offset 32, nothing recorded about the model.
 * Chunk k codes tokens [k * chunk, min(T, (k + 1) * chunk)) as an independent
 * range-coder stream.  Everything that shapes the quantized CDFs (precision,
 * rule, logits, temperature, float type) is recorded, and the symbol CRCs let
 * a decoder notice a model that differs from the encoder's. */
#define CCOMP_AC_HEADER_BYTES 32u  /* version 1 */
#define CCOMP_AC_HEADER2_BYTES 40u /* version 2 */
#define CCOMP_AC_VERSION 2u
#define CCOMP_AC_FLAG_LOGITS 1u
#define CCOMP_AC_FLAG_F64 2u

typedef struct ccomp_ac_info {
    int version, precision, rule, flags;
    int logits, dtype;  /* version 2: recorded (dtype a ccomp_ac_dtype); version 1: -1 */
    double temperature; /* version 2: recorded; version 1: 1.0 */
    uint64_t tokens, chunk_tokens;
    uint32_t chunks, vocab;
    const uint8_t *data; /* the container */
    size_t size;
    /* the chunk table, copied out of the container by ccomp_ac_parse (the
     * decoders index the data only with these checked values) */
    size_t *offsets;   /* byte offset of each chunk's stream from data */
    uint32_t *lengths; /* byte length of each chunk's stream */
    uint32_t *sym_crc; /* version 2: CRC-32 of each chunk's symbols; NULL for version 1 */
} ccomp_ac_info;

/* Parses and checks a container (CRC, sizes, parameters), in time linear in
 * n; on success info owns the chunk table: release it with ccomp_ac_info_free
 * (also safe after a failed parse). */
ccomp_status ccomp_ac_parse(const uint8_t *data, size_t n, ccomp_ac_info *info, ccomp_error *err);
void ccomp_ac_info_free(ccomp_ac_info *info);

/* CRC-32 of symbols (each as a u32 little-endian) continued from crc (0 to start). */
uint32_t ccomp_ac_symbols_crc(uint32_t crc, const int64_t *symbols, size_t n);

/* Checks that model m is the one the container records (precision, rule and,
 * for version 2, logits, temperature and, where the rule depends on it, the
 * float type) and that it suits the vocabulary. */
ccomp_status ccomp_ac_model_matches(const ccomp_ac_info *info, const ccomp_ac_model *m, ccomp_error *err);

/* Encodes T tokens, given their (cum, freq) pairs under model m, into a
 * container (version 2), chunks in parallel; symbols (in [0, vocab)) give the
 * chunks' symbol CRCs.  *out is malloc'ed (free with free()). */
ccomp_status ccomp_ac_pack(const ccomp_ac_model *m, uint32_t vocab, const int64_t *symbols, const uint32_t *cum,
                           const uint32_t *freq, size_t T, size_t chunk_tokens, int threads, uint8_t **out,
                           size_t *out_len, ccomp_error *err);

/* Decodes every token of a container given all rows (T x V), chunks in
 * parallel.  A chunk whose stream is not used up exactly, runs out, or (version
 * 2) whose symbols' CRC differs gives CCOMP_ERR_CORRUPT. */
ccomp_status ccomp_ac_unpack_rows(const ccomp_ac_info *info, const ccomp_ac_model *m, const void *rows,
                                  size_t row_stride, int64_t *symbols, int threads, ccomp_error *err);

/* Incremental (autoregressive) decoding of a container, token by token or a
 * few rows at a time.  It performs the same chunk checks as
 * ccomp_ac_unpack_rows when a chunk's last token is decoded, so symbols
 * returned before the end of their chunk are provisional.  After an error the
 * reader refuses to go on. */
typedef struct ccomp_ac_reader {
    const ccomp_ac_info *info;
    uint64_t pos;    /* tokens decoded */
    uint32_t chunk;  /* the open chunk (valid when open) */
    int open, failed;
    ccomp_rc_dec d;
    uint32_t crc;    /* CRC-32 of the open chunk's symbols so far */
    void *scratch;   /* row summaries (internal) */
} ccomp_ac_reader;

void ccomp_ac_reader_init(ccomp_ac_reader *r, const ccomp_ac_info *info);
void ccomp_ac_reader_free(ccomp_ac_reader *r);
/* The target of the next token (in [0, 2^precision)). */
ccomp_status ccomp_ac_reader_target(ccomp_ac_reader *r, uint32_t *target, ccomp_error *err);
/* Consumes the next token: symbol (< vocab) whose interval [cum, cum + freq)
 * holds the target. */
ccomp_status ccomp_ac_reader_advance(ccomp_ac_reader *r, uint32_t symbol, uint32_t cum, uint32_t freq,
                                     ccomp_error *err);
/* Decodes the next n tokens with one row each (rows n x V, row_stride
 * elements apart) under model m (checked with ccomp_ac_model_matches). */
ccomp_status ccomp_ac_reader_rows(ccomp_ac_reader *r, const ccomp_ac_model *m, const void *rows, size_t n,
                                  size_t row_stride, int64_t *symbols, ccomp_error *err);

/* --------------------------------------------------- equal-info windows */

/* Bit-level arithmetic coder for Equal-Info Windows (Lester et al. 2024):
 * 62-bit interval, bits emitted most significant first; a window of b bits
 * holds the symbols whose code, terminated, fits in b bits, and is padded
 * with zero bits.  Each window restarts the coder. */
typedef struct ccomp_eiw {
    uint64_t low, high;
    uint64_t pending; /* bits to follow (underflow) */
    uint64_t nbits;   /* bits emitted */
    uint8_t bits[32]; /* the window, up to 256 bits */
} ccomp_eiw;

#define CCOMP_EIW_MAX_BITS 256

void ccomp_eiw_reset(ccomp_eiw *w);
/* Bits the window needs if it were terminated now. */
uint64_t ccomp_eiw_terminated_bits(const ccomp_eiw *w);
/* Encodes (cum, freq) into the window unless the terminated code would exceed
 * `budget` bits; returns 1 if encoded, 0 if it does not fit (w unchanged). */
int ccomp_eiw_try_encode(ccomp_eiw *w, uint32_t cum, uint32_t freq, int precision, unsigned budget);
/* Terminates the window and writes ceil(budget / 8) bytes (zero padded). */
void ccomp_eiw_finish(ccomp_eiw *w, unsigned budget, uint8_t *out);

/* Packs n symbols, given as (cum, freq) pairs under a model that does not
 * depend on the window, into windows of `bits` bits: each window takes the
 * symbols that fit with its code terminated, then the coder restarts.  On
 * success *windows (*nwindows x ceil(bits / 8) bytes) and *counts (the symbols
 * in each window) are malloc'ed (free with free()); a symbol that alone needs
 * more than `bits` bits, or an invalid pair, is CCOMP_ERR_VALUE naming it. */
ccomp_status ccomp_eiw_pack(const uint32_t *cum, const uint32_t *freq, size_t n, int precision, unsigned bits,
                            uint8_t **windows, int64_t **counts, size_t *nwindows, ccomp_error *err);

typedef struct ccomp_eiw_dec {
    uint64_t low, high, value;
    const uint8_t *bits;
    unsigned budget, pos;
} ccomp_eiw_dec;

void ccomp_eiw_dec_init(ccomp_eiw_dec *d, const uint8_t *window, unsigned budget);
uint32_t ccomp_eiw_dec_target(const ccomp_eiw_dec *d, int precision);
void ccomp_eiw_dec_advance(ccomp_eiw_dec *d, uint32_t cum, uint32_t freq, int precision);

#ifdef __cplusplus
}
#endif

#endif /* CCOMP_AC_H */

/* Size-only model of zlib 1.2.13's deflate (raw stream, windowBits 15,
 * memLevel 8, default strategy, levels 1-9, all input given at once with
 * Z_FINISH and an output buffer that never fills).
 *
 * What is reproduced (see zlib's deflate.c / trees.c for the algorithm):
 *   - the LZ77 parse: hash of 3 bytes (hash_bits 15, hash_shift 5), head/prev
 *     chains, longest_match with the level's chain/good/nice limits, deflate_fast
 *     (levels 1-3, max_insert_length) and deflate_slow (levels 4-9, lazy
 *     evaluation, TOO_FAR 4096), fill_window and the window slide at
 *     strstart >= w_size + MAX_DIST (entries at or below the slid-out half
 *     become NIL);
 *   - block boundaries: a block is flushed after 16383 symbols (sym_end) and at
 *     the end (the last block);
 *   - per block, _tr_flush_block's choice between stored, fixed and dynamic
 *     Huffman codes, with the exact bit counts of build_tree (heap order with
 *     the depth tie-break), gen_bitlen (length limiting), scan_tree and
 *     build_bl_tree; stored blocks align to a byte; the stream ends with
 *     bi_windup.
 *
 * Implementation notes:
 *   - The data is kept in one contiguous buffer and all positions are absolute.
 *     zlib's sliding window is modelled by `base`, the absolute position of
 *     window[0]: a hash entry q is NIL when q <= base (slide_hash maps entries
 *     below w_size to NIL, and entry w_size to 0 == NIL), and the lookahead is
 *     min(n, base + 2*w_size) - strstart, which is what fill_window leaves
 *     when all input is available.  Bytes beyond the data never change a
 *     result (nice_match and the returned length are clamped to the lookahead).
 *   - Hash entries are stored as off + position, where `off` grows from parse
 *     to parse ("generation"); an entry is valid iff it is > off + base, so the
 *     head table never needs clearing between calls.  prev[] is only read for
 *     positions inserted by the current parse, so it never needs clearing.
 *   - Prefix reuse: set_prefix parses a alone, iteration by iteration, as long
 *     as an iteration provably reads and decides nothing that depends on what
 *     follows a (bytes at >= na, or the lookahead being short); the state
 *     before the first iteration that might depend on it is the checkpoint.
 *     size_with_prefix appends b after a, resumes from the checkpoint, logs
 *     every head/prev write in an undo log and rolls it back at the end.
 */
#include "ccomp/deflate_model.h"
#include "ccomp/cancel.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define WSIZE 32768u
#define WMASK (WSIZE - 1u)
#define HASH_MASK 0x7fffu
#define MIN_MATCH 3u
#define MAX_MATCH 258u
#define MIN_LOOKAHEAD (MAX_MATCH + MIN_MATCH + 1u) /* 262 */
#define MAX_DIST (WSIZE - MIN_LOOKAHEAD)          /* 32506 */
#define WINDOW_SIZE (2u * WSIZE)
#define SLIDE_AT (WSIZE + MAX_DIST) /* 65274 */
#define TOO_FAR 4096u
#define SYM_LIMIT 16383u /* lit_bufsize - 1 */
#define L_CODES 286
#define D_CODES 30
#define BL_CODES 19
#define HEAP_SIZE (2 * L_CODES + 1)
#define MAX_BITS 15
#define MAX_BL_BITS 7
#define END_BLOCK 256
/* sizes_with_prefix builds the final blocks' trees of up to NPEND targets at once */
#define NPEND 4
#define RUN_TAB 32 /* scan_tree: runs up to this long are looked up */
#define PAD 320u /* readable bytes after the data (match compares read ahead) */
/* Largest input handled: hash entries are 32-bit (off + position). */
#define DM_MAX_INPUT ((size_t)UINT32_MAX - 4u * WINDOW_SIZE)
/* Positions parsed between two checks for Ctrl-C: about 0.1 s at level 9 on the slowest input measured */
#define DM_SLICE ((size_t)65536)

typedef struct config {
    unsigned good, lazy, nice, chain;
    int slow;
} config;

static const config config_table[10] = {
    {0, 0, 0, 0, 0},         /* level 0: not modelled */
    {4, 4, 8, 4, 0},         {4, 5, 16, 8, 0},      {4, 6, 32, 32, 0},
    {4, 4, 16, 16, 1},       {8, 16, 32, 32, 1},    {8, 16, 128, 128, 1},
    {8, 32, 128, 256, 1},    {32, 128, 258, 1024, 1}, {32, 258, 258, 4096, 1},
};

static const unsigned char extra_lbits[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                              2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const unsigned char extra_dbits[D_CODES] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                                   6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
static const unsigned char extra_blbits[BL_CODES] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                     0, 0, 0, 0, 0, 0, 2, 3, 7};
static const unsigned char bl_order[BL_CODES] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                 11, 4,  12, 3, 13, 2, 14, 1, 15};

/* Hash tables of one parsing context. */
typedef struct hctx {
    uint32_t *head; /* WSIZE entries (hash_size == w_size here) */
    uint32_t *prev; /* WSIZE entries */
    uint32_t off;   /* stored value = off + absolute position */
    uint64_t hw;    /* every stored head value is < hw */
} hctx;

/* Parse state (everything zlib keeps between loop iterations that matters). */
typedef struct pstate {
    size_t strstart;
    size_t base;        /* absolute position of window[0] */
    size_t block_start; /* absolute; the block has a buffer iff >= base */
    size_t match_start;
    unsigned match_length; /* used by deflate_slow only */
    int match_available;
    unsigned nsym; /* symbols in the current block */
    uint64_t bits; /* bits of the blocks already flushed */
    uint16_t lfreq[L_CODES];
    uint16_t dfreq[D_CODES];
} pstate;

/* Scratch of one block's Huffman trees. */
typedef struct hscratch {
    uint16_t lf[HEAP_SIZE], ll[HEAP_SIZE]; /* freq and length per node (the symbols first) */
    uint16_t df[HEAP_SIZE], dl[HEAP_SIZE];
    uint16_t bf[HEAP_SIZE], bl[HEAP_SIZE];
    uint32_t pq[2 * HEAP_SIZE + 8];
    uint32_t kids[L_CODES]; /* internal node elems+i: its two children (low half: the one popped first) */
    /* used only when a tree is deeper than its max_length (gen_bitlen_slow) */
    int heap[HEAP_SIZE];
    uint16_t dad[HEAP_SIZE];
    uint16_t bl_count[MAX_BITS + 1];
} hscratch;

struct ccomp_deflate_model {
    int level;
    config cfg;
    unsigned char length_code[256];
    unsigned char dist_code[512];

    hctx plain; /* for ccomp_deflate_model_size */
    hctx pre;   /* for the prefix */

    uint8_t *buf; /* plain: a||b + PAD */
    size_t buf_cap;
    uint8_t *pbuf; /* prefix: a||b + PAD */
    size_t pbuf_cap;
    size_t na;
    pstate cp;   /* checkpoint after the prefix */
    pstate work; /* scratch state */

    uint32_t *undo; /* pairs (slot, old value); slot >= WSIZE: prev slot */
    size_t undo_cap;

    /* Huffman scratch: one set per pending block, so that their trees can be built interleaved */
    hscratch hs[NPEND];
    int defer_final; /* run_loop leaves the last block unflushed (sizes_with_prefix) */
    pstate pending[NPEND];
    /* per symbol: (static code length + extra bits) | (extra bits << 32) */
    uint64_t sx_l[HEAP_SIZE], sx_d[HEAP_SIZE], sx_b[HEAP_SIZE];
    unsigned char xbits_l[HEAP_SIZE], xbits_d[HEAP_SIZE], xbits_b[HEAP_SIZE];
    /* run_counts of runs up to RUN_TAB long, [v == 0][run] */
    unsigned char run_self[2][RUN_TAB + 1];
    uint64_t run_rep[2][RUN_TAB + 1];
};

/* ------------------------------------------------------------------------ */
static inline uint16_t load16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Huffman trees (trees.c: build_tree, gen_bitlen, scan_tree, build_bl_tree) */

/* Heap entries carry their sort key: (freq << 17) | (depth << 10) | node
 * (a block has at most 16385 symbols, so freq < 2^15; a Huffman tree of that
 * weight is less than 32 levels deep, so depth < 2^7; nodes < 2^10).
 * zlib's smaller(n, m) is freq[n] < freq[m] || (freq[n] == freq[m] &&
 * depth[n] <= depth[m]), i.e. key(n) <= key(m), i.e. a <= (b | NODE_MASK). */
#define NODE_BITS 10
#define NODE_MASK ((1u << NODE_BITS) - 1u)
#define DEPTH_SHIFT NODE_BITS
#define FREQ_SHIFT 17
#define SMALLER(a, b) ((a) <= ((b) | NODE_MASK))

/* One step of zlib's pqdownheap of v, the hole at q, without data-dependent
 * branches; positions past heap_len hold UINT32_MAX, which is never smaller.
 * zlib moves to the child j it picks (the right one on a tie: smaller(c1, c0))
 * unless smaller(v, heap[j]).  The step always copies the picked child into
 * the hole and moves q only when zlib would; once v has stopped at q, later
 * steps see the same children of q, rewrite q and stay, and the final store
 * of v (pqdownheap) fixes q, so the heap ends as zlib leaves it.  Keys order
 * by their bits above NODE_BITS and the picked child has the smaller of them,
 * so "not smaller(v, picked)" is "v above either child", which depends on the
 * loads only (a shorter dependency chain than going through the pick); with
 * vk = v without its node bits, "v above c" (v > (c | NODE_MASK)) is vk > c. */
#define PQ_LEVEL(h, q, vk)                                                         \
    do {                                                                           \
        uint32_t c0_ = (h)[2 * (q)], c1_ = (h)[2 * (q) + 1];                       \
        size_t r_ = c1_ <= (c0_ | NODE_MASK);                                      \
        size_t go_ = ((vk) > c0_) | ((vk) > c1_);                                  \
        (h)[q] = (h)[2 * (q) + r_];                                                \
        (q) = ((q) << go_) + (r_ & go_);                                           \
    } while (0)
#define KEY_ONLY(v) ((v) & ~NODE_MASK)

/* zlib's pqdownheap of value v into the hole at k; levels: the depth of the
 * heap below k (more are harmless: the walk stays where it stopped). */
static inline __attribute__((always_inline)) void pqdownheap(uint32_t *h, int levels, size_t k, uint32_t v)
{
    size_t q = k;
    uint32_t vk = KEY_ONLY(v);
    int i;
    for (i = 0; i < levels; i++) PQ_LEVEL(h, q, vk);
    h[q] = v;
}

/* pqdownheap from the root of two independent heaps in lockstep: the two
 * walks are latency-bound chains, which the processor overlaps only when
 * their instructions are interleaved this finely (a whole merge of one tree
 * after the other fills the scheduler with one chain).  levels is the larger
 * of the two heaps' depths: the smaller heap's walk then reads children of a
 * node <= heap_len, i.e. positions <= 2 * heap_len + 1, which hold UINT32_MAX
 * (tree_start pads to 2 * heap_len + 3, tree_pop refills what it frees). */
static inline __attribute__((always_inline)) void pqdownheap2(uint32_t *h0, uint32_t *h1, int levels, uint32_t v0,
                                                              uint32_t v1)
{
    size_t q0 = 1, q1 = 1;
    uint32_t vk0 = KEY_ONLY(v0), vk1 = KEY_ONLY(v1);
    int i;
    for (i = 0; i < levels; i++) {
        PQ_LEVEL(h0, q0, vk0);
        PQ_LEVEL(h1, q1, vk1);
    }
    h0[q0] = v0;
    h1[q1] = v1;
}

static inline int ilog2(unsigned x) /* x >= 1 */
{
    return 31 - __builtin_clz(x);
}

typedef struct tree_desc {
    uint16_t *freq, *len; /* HEAP_SIZE entries each (len: internal nodes too) */
    int elems;
    const uint64_t *sx;         /* (static length + extra bits) | extra bits << 32, per symbol */
    const unsigned char *xbits; /* extra bits per symbol */
    int has_stree;
    int want_len; /* the code lengths are read afterwards (scan_tree) */
    int max_length;
} tree_desc;

/* One tree being built: zlib's build_tree split into start, merge steps and
 * finish, so that up to four independent trees can advance in one loop.  Instead of
 * zlib's heap[heap_max..] and dad[] the merges record each internal node's
 * children (kids); both are rebuilt from them when zlib's gen_bitlen has to
 * correct lengths (gen_bitlen_slow). */
typedef struct tree_build {
    hscratch *m;
    const tree_desc *t;
    int heap_len, node, max_code;
    uint32_t wsum; /* sum of the weights of the internal nodes so far */
    uint32_t xsum; /* sum of freq * extra bits over the symbols */
} tree_build;

static void tree_start(tree_build *b, hscratch *m, const tree_desc *t, uint64_t *opt_len, uint64_t *static_len)
{
    uint16_t *f = t->freq;
    uint32_t *pq = m->pq;
    int n, node, max_code = -1, heap_len = 0;
    uint64_t sx = 0;

    /* f[elems .. elems+3] are 0 (never written), so whole groups of 4 can be read */
    for (n = 0; n < t->elems; n += 4) {
        int k;
        if (load64((const uint8_t *)(f + n)) == 0) continue;
        for (k = n; k < n + 4; k++) {
            int nz = f[k] != 0;
            pq[heap_len + 1] = ((uint32_t)f[k] << FREQ_SHIFT) | (unsigned)k;
            heap_len += nz;
            max_code = nz ? k : max_code;
            sx += (uint64_t)f[k] * t->sx[k];
        }
    }
    /* The symbols' part of gen_bitlen's sums: static_len gets
     * f * (stree + xbits) of every symbol (< 2^32: no carry into the high
     * half), opt_len the f * xbits part here (see tree_finish).  The nodes
     * forced below have extra bits 0 (node 0, 1 or 2, or node 0 of the
     * literal tree), and zlib's static_len adds f * stree = stree[node] for
     * them in gen_bitlen and subtracts it here, so they are left out. */
    if (t->has_stree) *static_len += (uint32_t)sx;
    b->xsum = (uint32_t)(sx >> 32);
    while (heap_len < 2) {
        node = (max_code < 2 ? ++max_code : 0);
        pq[++heap_len] = ((uint32_t)1 << FREQ_SHIFT) | (unsigned)node;
        f[node] = 1;
        (*opt_len)--;
    }
    for (n = heap_len + 1; n <= 2 * heap_len + 3; n++) pq[n] = UINT32_MAX;
    for (n = heap_len / 2; n >= 1; n--)
        pqdownheap(pq, ilog2((unsigned)heap_len) - ilog2((unsigned)n), (size_t)n, pq[n]);
    b->m = m;
    b->t = t;
    b->heap_len = heap_len;
    b->node = t->elems;
    b->max_code = max_code;
    b->wsum = 0;
}

/* First half of a merge: removes the least frequent node into *a, leaves the
 * last one in *last (to go down from the root); returns the levels. */
static inline __attribute__((always_inline)) int tree_pop(tree_build *b, uint32_t *a, uint32_t *last)
{
    uint32_t *pq = b->m->pq;
    int heap_len = b->heap_len;
    *a = pq[1];
    *last = pq[heap_len];
    pq[heap_len--] = UINT32_MAX;
    b->heap_len = heap_len;
    return ilog2((unsigned)heap_len);
}

/* Second half: a and the new top c become children of a new node, whose
 * key is returned (to go down from the root). */
static inline __attribute__((always_inline)) uint32_t tree_merge(tree_build *b, uint32_t a)
{
    uint32_t c = b->m->pq[1], w;
    unsigned da = (a >> DEPTH_SHIFT) & 0x7fu, dc = (c >> DEPTH_SHIFT) & 0x7fu;
    unsigned d = (da >= dc ? da : dc) + 1u;
    int node = b->node++;
    w = (a >> FREQ_SHIFT) + (c >> FREQ_SHIFT);
    b->wsum += w;
    b->m->kids[node - b->t->elems] = (a & NODE_MASK) | (c & NODE_MASK) << 16;
    return ((w & 0x7fffu) << FREQ_SHIFT) | ((d & 0x7fu) << DEPTH_SHIFT) | (unsigned)node;
}

/* One merge of the two least frequent nodes (needs heap_len >= 2). */
static inline __attribute__((always_inline)) void tree_step(tree_build *b)
{
    uint32_t a, last;
    int levels = tree_pop(b, &a, &last);
    pqdownheap(b->m->pq, levels, 1, last);
    pqdownheap(b->m->pq, levels, 1, tree_merge(b, a));
}

/* One merge in each of two trees (both need heap_len >= 2). */
static inline __attribute__((always_inline)) void tree_step2(tree_build *b0, tree_build *b1)
{
    uint32_t a0, a1, last0, last1;
    int l0 = tree_pop(b0, &a0, &last0), l1 = tree_pop(b1, &a1, &last1);
    int levels = l0 > l1 ? l0 : l1;
    pqdownheap2(b0->m->pq, b1->m->pq, levels, last0, last1);
    pqdownheap2(b0->m->pq, b1->m->pq, levels, tree_merge(b0, a0), tree_merge(b1, a1));
}

/* pqdownheap from the root of four independent heaps in lockstep. */
static inline __attribute__((always_inline)) void pqdownheap4(uint32_t *const *h, int levels, const uint32_t *v)
{
    uint32_t *h0 = h[0], *h1 = h[1], *h2 = h[2], *h3 = h[3];
    uint32_t v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3];
    uint32_t vk0 = KEY_ONLY(v0), vk1 = KEY_ONLY(v1), vk2 = KEY_ONLY(v2), vk3 = KEY_ONLY(v3);
    size_t q0 = 1, q1 = 1, q2 = 1, q3 = 1;
    int i;
    for (i = 0; i < levels; i++) {
        PQ_LEVEL(h0, q0, vk0);
        PQ_LEVEL(h1, q1, vk1);
        PQ_LEVEL(h2, q2, vk2);
        PQ_LEVEL(h3, q3, vk3);
    }
    h0[q0] = v0;
    h1[q1] = v1;
    h2[q2] = v2;
    h3[q3] = v3;
}

/* One merge in each of four trees (all need heap_len >= 2). */
static inline __attribute__((always_inline)) void tree_step4(tree_build *const *b)
{
    uint32_t *h[4], a[4], v[4];
    int k, levels = 0;
    for (k = 0; k < 4; k++) {
        int l = tree_pop(b[k], &a[k], &v[k]);
        h[k] = b[k]->m->pq;
        levels = l > levels ? l : levels;
    }
    pqdownheap4(h, levels, v);
    for (k = 0; k < 4; k++) v[k] = tree_merge(b[k], a[k]);
    pqdownheap4(h, levels, v);
}

/* Runs n (<= 4) started trees to their last merge, as many in lockstep as
 * are unfinished (four, then two at a time, then one). */
static void run_trees(tree_build *b, int n)
{
    tree_build *p[4];
    int k, na = 0;
    for (k = 0; k < n; k++) {
        if (b[k].heap_len >= 2) p[na++] = &b[k];
    }
    for (;;) {
        if (na == 4) {
            while (p[0]->heap_len >= 2 && p[1]->heap_len >= 2 && p[2]->heap_len >= 2 && p[3]->heap_len >= 2)
                tree_step4(p);
        } else if (na >= 2) {
            tree_build *b0 = p[0], *b1 = p[1];
            while (b0->heap_len >= 2 && b1->heap_len >= 2) tree_step2(b0, b1);
        } else {
            if (na == 1) {
                while (p[0]->heap_len >= 2) tree_step(p[0]);
            }
            return;
        }
        for (k = 0; k < na;) { /* drop the finished ones */
            if (p[k]->heap_len < 2)
                p[k] = p[--na];
            else
                k++;
        }
    }
}

/* zlib's gen_bitlen, for a tree with a node deeper than max_length: rebuilds
 * heap[heap_max..] (zlib stores the two merged nodes at --heap_max, first
 * the one popped first, and the root last) and dad[] from kids[], and adds
 * the f * (len + xbits) sums to *opt_len. */
static void gen_bitlen_slow(tree_build *b, uint64_t *opt_len)
{
    hscratch *m = b->m;
    const tree_desc *t = b->t;
    uint16_t *f = t->freq, *len = t->len, *dad = m->dad;
    int *heap = m->heap;
    int h = HEAP_SIZE, k, n, bits, overflow = 0, max_code = b->max_code;
    uint64_t opt = 0;

    for (k = 0; k < b->node - t->elems; k++) {
        uint32_t kd = m->kids[k];
        heap[--h] = (int)(kd & 0xffffu);
        heap[--h] = (int)(kd >> 16);
        dad[kd & 0xffffu] = dad[kd >> 16] = (uint16_t)(t->elems + k);
    }
    heap[--h] = b->node - 1; /* root */

    for (bits = 0; bits <= MAX_BITS; bits++) m->bl_count[bits] = 0;
    len[heap[h]] = 0; /* root */
    for (k = h + 1; k < HEAP_SIZE; k++) {
        unsigned fl, ovf, leaf;
        n = heap[k];
        bits = len[dad[n]] + 1;
        ovf = bits > t->max_length;
        bits = ovf ? t->max_length : bits;
        overflow += (int)ovf;
        len[n] = (uint16_t)bits;
        leaf = n <= max_code;
        m->bl_count[bits] = (uint16_t)(m->bl_count[bits] + leaf);
        fl = leaf ? f[n] : 0u; /* f[] of internal nodes is stale */
        opt += (uint64_t)fl * ((unsigned)bits + t->xbits[n]);
    }
    *opt_len += opt;
    if (overflow == 0) return;

    do {
        bits = t->max_length - 1;
        while (m->bl_count[bits] == 0) bits--;
        m->bl_count[bits]--;
        m->bl_count[bits + 1] += 2;
        m->bl_count[t->max_length]--;
        overflow -= 2;
    } while (overflow > 0);

    h = HEAP_SIZE;
    for (bits = t->max_length; bits != 0; bits--) {
        n = m->bl_count[bits];
        while (n != 0) {
            k = heap[--h];
            if (k > max_code) continue;
            if (len[k] != (unsigned)bits) {
                *opt_len += ((uint64_t)(unsigned)bits - len[k]) * f[k]; /* modular, as zlib */
                len[k] = (uint16_t)bits;
            }
            n--;
        }
    }
}

/* Ends build_tree (zlib's gen_bitlen; gen_codes does not change sizes).
 * Returns max_code.  The key of the root carries zlib's depth[] of it, the
 * height of the tree.  When that is at most max_length, gen_bitlen gives
 * every leaf its depth and corrects nothing, and its sum of f * len over the
 * leaves is the sum of the weights of the internal nodes (each leaf counted
 * once per ancestor): no loop over the symbols.  Lengths, when wanted, go
 * from the root down over kids[]. */
static int tree_finish(tree_build *b, uint64_t *opt_len)
{
    hscratch *m = b->m;
    const tree_desc *t = b->t;
    int elems = t->elems, k;
    if (t->want_len) memset(t->len, 0, (size_t)elems * sizeof t->len[0]);
    if (((m->pq[1] >> DEPTH_SHIFT) & 0x7fu) > (unsigned)t->max_length) {
        gen_bitlen_slow(b, opt_len);
        return b->max_code;
    }
    *opt_len += (uint64_t)b->wsum + b->xsum;
    if (t->want_len) {
        uint16_t *len = t->len;
        len[b->node - 1] = 0;
        for (k = b->node - 1; k >= elems; k--) {
            uint16_t l = (uint16_t)(len[k] + 1u);
            uint32_t kd = m->kids[k - elems];
            len[kd & 0xffffu] = l;
            len[kd >> 16] = l;
        }
    }
    return b->max_code;
}

/* zlib's build_tree for one tree.  Returns max_code. */
static int build_tree(hscratch *m, const tree_desc *t, uint64_t *opt_len, uint64_t *static_len)
{
    tree_build b;
    tree_start(&b, m, t, opt_len, static_len);
    while (b.heap_len >= 2) tree_step(&b);
    return tree_finish(&b, opt_len);
}

/* zlib's scan_tree counts for one run of run equal lengths v (the lengths
 * either side differ, so zlib's prevlen != v at its start): zlib cuts it into
 * counts of at most max_count and codes each count c as follows.
 *   v == 0: counts of 138; c < 3: c times length 0, else one REPZ_3_10
 *           (c <= 10) or REPZ_11_138;
 *   v != 0: a first count of at most 7 (c < 4: c times v, else v itself and
 *           REP_3_6, since prevlen != v), then counts of at most 6 with
 *           prevlen == v (c < 3: c times v, else REP_3_6).
 * *self: how many times v itself; returns the REP_3_6, REPZ_3_10 and
 * REPZ_11_138 counts packed in 16-bit fields (RUN_REP_*). */
#define RUN_REP_16 ((uint64_t)1)
#define RUN_REP_17 ((uint64_t)1 << 16)
#define RUN_REP_18 ((uint64_t)1 << 32)
static uint64_t run_counts(unsigned v, int run, unsigned *self)
{
    uint64_t rep = 0;
    if (v == 0) {
        for (; run >= 138; run -= 138) rep += RUN_REP_18;
        *self = run < 3 ? (unsigned)run : 0u;
        if (run >= 3) rep += run <= 10 ? RUN_REP_17 : RUN_REP_18;
        return rep;
    }
    if (run < 4) {
        *self = (unsigned)run;
        return 0;
    }
    *self = 1;
    rep = RUN_REP_16;
    for (run -= 7; run >= 6; run -= 6) rep += RUN_REP_16;
    if (run >= 3)
        rep += RUN_REP_16;
    else if (run > 0)
        *self += (unsigned)run;
    return rep;
}

/* zlib's scan_tree, a run at a time (run_counts; short runs from a table).
 * zlib's guard (len[max_code + 1] = 0xffff) ends the last run at max_code. */
static void scan_tree(const ccomp_deflate_model *m, uint16_t *blf, const uint16_t *len, int max_code)
{
    int n = 0, end = max_code + 1;
    uint64_t rep = 0;
    while (n < end) {
        unsigned v = len[n], self;
        uint64_t pat = (uint64_t)v * 0x0001000100010001u;
        int r = n + 1, run;
        /* len[] has HEAP_SIZE entries and end <= L_CODES, so r + 3 is readable */
        for (;;) {
            uint64_t x = load64((const uint8_t *)(len + r)) ^ pat;
            if (x != 0) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                r += __builtin_ctzll(x) >> 4;
#else
                while (len[r] == v) r++;
#endif
                break;
            }
            r += 4;
            if (r >= end) break;
        }
        if (r > end) r = end;
        run = r - n;
        n = r;
        if (run <= RUN_TAB) {
            self = m->run_self[v == 0][run];
            rep += m->run_rep[v == 0][run];
        } else {
            rep += run_counts(v, run, &self);
        }
        blf[v] = (uint16_t)(blf[v] + self);
    }
    blf[16] = (uint16_t)(blf[16] + (rep & 0xffffu));
    blf[17] = (uint16_t)(blf[17] + ((rep >> 16) & 0xffffu));
    blf[18] = (uint16_t)(blf[18] + ((rep >> 32) & 0xffffu));
}

/* The three trees of one block (tree_desc wiring over a scratch set). */
typedef struct block_trees {
    tree_desc lt, dt, bt;
    uint64_t opt_len, static_len;
    int lmax, dmax;
} block_trees;

static void block_trees_init(const ccomp_deflate_model *m, hscratch *h, const pstate *st, block_trees *bt)
{
    memcpy(h->lf, st->lfreq, sizeof st->lfreq);
    memcpy(h->df, st->dfreq, sizeof st->dfreq);
    memset(h->bf, 0, BL_CODES * sizeof h->bf[0]);
    bt->opt_len = bt->static_len = 0;
    bt->lt.freq = h->lf; bt->lt.len = h->ll; bt->lt.elems = L_CODES; bt->lt.sx = m->sx_l;
    bt->lt.xbits = m->xbits_l; bt->lt.has_stree = 1; bt->lt.want_len = 1; bt->lt.max_length = MAX_BITS;
    bt->dt.freq = h->df; bt->dt.len = h->dl; bt->dt.elems = D_CODES; bt->dt.sx = m->sx_d;
    bt->dt.xbits = m->xbits_d; bt->dt.has_stree = 1; bt->dt.want_len = 1; bt->dt.max_length = MAX_BITS;
    bt->bt.freq = h->bf; bt->bt.len = h->bl; bt->bt.elems = BL_CODES; bt->bt.sx = m->sx_b;
    bt->bt.xbits = m->xbits_b; bt->bt.has_stree = 0; bt->bt.want_len = 0; bt->bt.max_length = MAX_BL_BITS;
}

/* The rest of _tr_flush_block once the trees are built: returns the bit
 * position after the block.  zlib's bl_tree[n].Len != 0 iff n is a leaf of
 * the bit length tree, i.e. iff its freq (after build_tree's forcing) != 0. */
static uint64_t block_choice(const hscratch *h, block_trees *bt, uint64_t stored_len, int has_buf, uint64_t bitpos)
{
    uint64_t opt_len = bt->opt_len, static_len = bt->static_len, opt_lenb, static_lenb;
    int max_blindex;
    for (max_blindex = BL_CODES - 1; max_blindex >= 3; max_blindex--) {
        if (h->bf[bl_order[max_blindex]] != 0) break;
    }
    opt_len += 3u * ((uint64_t)max_blindex + 1u) + 5u + 5u + 4u;

    opt_lenb = (opt_len + 3u + 7u) >> 3;
    static_lenb = (static_len + 3u + 7u) >> 3;
    if (static_lenb <= opt_lenb) opt_lenb = static_lenb;

    if (stored_len + 4u <= opt_lenb && has_buf) {
        bitpos += 3u;
        bitpos = (bitpos + 7u) & ~(uint64_t)7u;
        return bitpos + 32u + 8u * stored_len;
    }
    if (static_lenb == opt_lenb) return bitpos + 3u + static_len;
    return bitpos + 3u + opt_len;
}

/* _tr_flush_block: returns the bit position after the block. */
static uint64_t block_bits(ccomp_deflate_model *m, const pstate *st, uint64_t stored_len, int has_buf,
                           uint64_t bitpos)
{
    hscratch *h = &m->hs[0];
    block_trees bt;
    block_trees_init(m, h, st, &bt);
    bt.lmax = build_tree(h, &bt.lt, &bt.opt_len, &bt.static_len);
    bt.dmax = build_tree(h, &bt.dt, &bt.opt_len, &bt.static_len);
    scan_tree(m, h->bf, h->ll, bt.lmax);
    scan_tree(m, h->bf, h->dl, bt.dmax);
    build_tree(h, &bt.bt, &bt.opt_len, &bt.static_len);
    return block_choice(h, &bt, stored_len, has_buf, bitpos);
}

/* The final blocks of the n (<= NPEND) pending states m->pending[] (left
 * unflushed by run_loop), their trees built in lockstep; out[k] = total
 * bytes of stream k. */
static void final_sizes(ccomp_deflate_model *m, int n, size_t *out)
{
    block_trees bt[NPEND];
    tree_build tb[NPEND];
    int k;
    for (k = 0; k < n; k++) {
        block_trees_init(m, &m->hs[k], &m->pending[k], &bt[k]);
        tree_start(&tb[k], &m->hs[k], &bt[k].lt, &bt[k].opt_len, &bt[k].static_len);
    }
    run_trees(tb, n);
    for (k = 0; k < n; k++) {
        bt[k].lmax = tree_finish(&tb[k], &bt[k].opt_len);
        tree_start(&tb[k], &m->hs[k], &bt[k].dt, &bt[k].opt_len, &bt[k].static_len);
    }
    run_trees(tb, n);
    for (k = 0; k < n; k++) {
        bt[k].dmax = tree_finish(&tb[k], &bt[k].opt_len);
        scan_tree(m, m->hs[k].bf, m->hs[k].ll, bt[k].lmax);
        scan_tree(m, m->hs[k].bf, m->hs[k].dl, bt[k].dmax);
        tree_start(&tb[k], &m->hs[k], &bt[k].bt, &bt[k].opt_len, &bt[k].static_len);
    }
    run_trees(tb, n);
    for (k = 0; k < n; k++) {
        const pstate *st = &m->pending[k];
        uint64_t bits;
        tree_finish(&tb[k], &bt[k].opt_len);
        bits = block_choice(&m->hs[k], &bt[k], (uint64_t)(st->strstart - st->block_start),
                            st->block_start >= st->base, st->bits);
        out[k] = (size_t)((bits + 7u) >> 3);
    }
}

static void init_block(pstate *st)
{
    memset(st->lfreq, 0, sizeof st->lfreq);
    memset(st->dfreq, 0, sizeof st->dfreq);
    st->lfreq[END_BLOCK] = 1;
    st->nsym = 0;
}

/* FLUSH_BLOCK at strstart == s. */
static void flush_block(ccomp_deflate_model *m, pstate *st, size_t s, size_t base)
{
    st->bits = block_bits(m, st, (uint64_t)(s - st->block_start), st->block_start >= base, st->bits);
    st->block_start = s;
    init_block(st);
}

static void init_state(pstate *st)
{
    memset(st, 0, sizeof *st);
    st->match_length = MIN_MATCH - 1;
    init_block(st);
}

/* ------------------------------------------------------------------------ */
/* LZ77 */

#define HASH(w, p) ((((unsigned)(w)[p] << 10) ^ ((unsigned)(w)[(p) + 1] << 5) ^ (unsigned)(w)[(p) + 2]) & HASH_MASK)

/* Length of the common prefix of a and b, at most MAX_MATCH (reads up to 263
 * bytes of each). */
static inline unsigned common_len(const uint8_t *a, const uint8_t *b)
{
    unsigned k = 0;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (k < MAX_MATCH) {
        uint64_t x = load64(a + k) ^ load64(b + k);
        if (x != 0) {
            k += (unsigned)__builtin_ctzll(x) >> 3;
            break;
        }
        k += 8;
    }
#else
    while (k < MAX_MATCH && a[k] == b[k]) k++;
#endif
    return k < MAX_MATCH ? k : MAX_MATCH;
}

/* longest_match.  cur is a stored chain value (off + position).  safe_len:
 * a candidate whose common length reaches safe_len sets *unsafe (prefix
 * parsing); pass a huge value otherwise.  Returns the length clamped to la. */
static inline unsigned longest_match(const uint8_t *w, const uint32_t *prev, uint32_t off, size_t s, size_t base,
                                     uint32_t cur, unsigned best_len, unsigned chain, unsigned nice, size_t la,
                                     size_t *match_start, size_t safe_len, int *unsafe)
{
    const uint8_t *scan = w + s;
    uint32_t limit = off + (uint32_t)(s - base > MAX_DIST ? s - MAX_DIST : base);
    uint16_t scan_start = load16(scan), scan_end = load16(scan + best_len - 1);
    if (nice > la) nice = (unsigned)la;
    do {
        const uint8_t *match = w + (cur - off);
        unsigned len;
        /* zlib's quick rejection compares bytes best_len, best_len-1, 0 and 1;
         * any test of bytes 0..best_len rejects only candidates that cannot
         * beat best_len, so compare them two at a time */
        if (load16(match + best_len - 1) != scan_end || load16(match) != scan_start) continue;
        len = common_len(scan, match);
        if (len >= safe_len) {
            *unsafe = 1;
            return 0;
        }
        if (len > best_len) {
            *match_start = cur - off;
            best_len = len;
            if (len >= nice) break;
            scan_end = load16(scan + best_len - 1);
        }
    } while ((cur = prev[cur & WMASK]) > limit && --chain != 0);
    return best_len <= la ? best_len : (unsigned)la;
}

static inline void tally_lit(pstate *st, unsigned c)
{
    st->lfreq[c]++;
    st->nsym++;
}

static inline void tally_dist(const ccomp_deflate_model *m, pstate *st, size_t dist, unsigned lc)
{
    size_t d = dist - 1;
    st->lfreq[m->length_code[lc] + END_BLOCK + 1]++;
    st->dfreq[d < 256 ? m->dist_code[d] : m->dist_code[256 + (d >> 7)]]++;
    st->nsym++;
}

/* INSERT_STRING at position p; returns the previous head (stored form). */
#define INSERT(p, out)                                                                    \
    do {                                                                                  \
        size_t p_ = (p);                                                                  \
        unsigned h_ = HASH(w, p_);                                                        \
        uint32_t o_ = head[h_];                                                           \
        if (logging) {                                                                    \
            undo[ul++] = h_;                                                              \
            undo[ul++] = o_;                                                              \
            if (p_ >= WSIZE) {                                                            \
                undo[ul++] = WSIZE + (uint32_t)(p_ & WMASK);                              \
                undo[ul++] = prev[p_ & WMASK];                                            \
            }                                                                             \
        }                                                                                 \
        prev[p_ & WMASK] = o_;                                                            \
        head[h_] = off + (uint32_t)p_;                                                    \
        (out) = o_;                                                                       \
    } while (0)

/* Runs the main loop of deflate_fast (slow == 0) or deflate_slow over w[0..n)
 * from state st.  If the loop reaches an iteration with strstart > stop it
 * returns 0 with st at the top of that iteration; when the input is used up it
 * flushes the last block and returns 1.  logging: record head/prev writes in
 * m->undo (count returned in *undo_len). */
static inline __attribute__((always_inline)) int run_loop(ccomp_deflate_model *m, hctx *cx, pstate *st,
                                                          const uint8_t *w, size_t n, size_t stop,
                                                          const int slow, const int logging,
                                                          size_t *undo_len)
{
    uint32_t *head = cx->head, *prev = cx->prev;
    const uint32_t off = cx->off;
    uint32_t *undo = m->undo;
    size_t ul = logging ? *undo_len : 0;
    size_t s = st->strstart, base = st->base;
    size_t read_end = n < base + WINDOW_SIZE ? n : base + WINDOW_SIZE;
    const unsigned chain = m->cfg.chain, nice = m->cfg.nice, good = m->cfg.good, lazy = m->cfg.lazy;
    int finished = 0;
    const size_t huge = (size_t)-1;

    for (;;) {
        size_t la;
        uint32_t hh = 0;
        if (s > stop) break;
        la = read_end - s;
        if (la < MIN_LOOKAHEAD) { /* fill_window */
            if (s - base >= SLIDE_AT) base += WSIZE;
            read_end = n < base + WINDOW_SIZE ? n : base + WINDOW_SIZE;
            la = read_end - s;
            if (la == 0) {
                finished = 1;
                break;
            }
        }
        if (la >= MIN_MATCH) INSERT(s, hh);

        if (!slow) {
            unsigned ml = 0;
            if (hh > off + (uint32_t)base && (off + (uint32_t)s) - hh <= MAX_DIST) {
                int unsafe = 0;
                ml = longest_match(w, prev, off, s, base, hh, MIN_MATCH - 1, chain, nice, la, &st->match_start,
                                   huge, &unsafe);
            }
            if (ml >= MIN_MATCH) {
                tally_dist(m, st, s - st->match_start, ml - MIN_MATCH);
                la -= ml;
                if (ml <= lazy && la >= MIN_MATCH) {
                    size_t p, e = s + ml;
                    uint32_t dummy;
                    for (p = s + 1; p < e; p++) INSERT(p, dummy);
                    (void)dummy;
                }
                s += ml;
            } else {
                tally_lit(st, w[s]);
                s++;
            }
            if (st->nsym == SYM_LIMIT) flush_block(m, st, s, base);
        } else {
            unsigned prev_length = st->match_length;
            size_t prev_match = st->match_start;
            unsigned ml = MIN_MATCH - 1;
            if (hh > off + (uint32_t)base && prev_length < lazy && (off + (uint32_t)s) - hh <= MAX_DIST) {
                int unsafe = 0;
                ml = longest_match(w, prev, off, s, base, hh, prev_length,
                                   prev_length >= good ? chain >> 2 : chain, nice, la, &st->match_start, huge,
                                   &unsafe);
                if (ml == MIN_MATCH && s - st->match_start > TOO_FAR) ml = MIN_MATCH - 1;
            }
            if (prev_length >= MIN_MATCH && ml <= prev_length) {
                size_t max_insert = s + la - MIN_MATCH;
                size_t p, e = s + prev_length - 1;
                uint32_t dummy;
                tally_dist(m, st, s - 1 - prev_match, prev_length - MIN_MATCH);
                if (e - 1 <= max_insert) {
                    for (p = s + 1; p < e; p++) INSERT(p, dummy);
                } else {
                    for (p = s + 1; p < e && p <= max_insert; p++) INSERT(p, dummy);
                }
                (void)dummy;
                st->match_available = 0;
                st->match_length = MIN_MATCH - 1;
                s = e;
                if (st->nsym == SYM_LIMIT) flush_block(m, st, s, base);
            } else if (st->match_available) {
                st->match_length = ml;
                tally_lit(st, w[s - 1]);
                if (st->nsym == SYM_LIMIT) flush_block(m, st, s, base);
                s++;
            } else {
                st->match_length = ml;
                st->match_available = 1;
                s++;
            }
        }
    }
    st->strstart = s;
    st->base = base;
    if (finished) {
        if (slow && st->match_available) {
            tally_lit(st, w[s - 1]);
            st->match_available = 0;
        }
        if (!m->defer_final) flush_block(m, st, s, base);
    }
    if (undo_len) *undo_len = ul;
    return finished;
}

static int run_plain(ccomp_deflate_model *m, hctx *cx, pstate *st, const uint8_t *w, size_t n, size_t stop)
{
    if (m->cfg.slow) return run_loop(m, cx, st, w, n, stop, 1, 0, NULL);
    return run_loop(m, cx, st, w, n, stop, 0, 0, NULL);
}

/* *ul: undo entries already logged (the log goes on from there) */
static int run_logged(ccomp_deflate_model *m, hctx *cx, pstate *st, const uint8_t *w, size_t n, size_t stop,
                      size_t *ul)
{
    if (m->cfg.slow) return run_loop(m, cx, st, w, n, stop, 1, 1, ul);
    return run_loop(m, cx, st, w, n, stop, 0, 1, ul);
}

/* The next stop of a parse run in slices (Ctrl-C is checked between slices), at most `end`. */
static size_t next_stop(const pstate *st, size_t end)
{
    return end - st->strstart > DM_SLICE ? st->strstart + DM_SLICE : end;
}

/* One iteration of the prefix parse over a = w[0..na) whose continuation is
 * unknown.  Commits it and returns 1 only if its outcome is the same for every
 * continuation; otherwise returns 0 and st is a valid point to resume from (at
 * the top of the loop; a window slide that every continuation does may have
 * been committed). */
static int try_step(ccomp_deflate_model *m, hctx *cx, pstate *st, const uint8_t *w, size_t na)
{
    uint32_t *head = cx->head, *prev = cx->prev;
    const uint32_t off = cx->off;
    size_t s = st->strstart, base = st->base;
    size_t la = base + WINDOW_SIZE - s; /* lookahead if the input went on forever */
    size_t ms = st->match_start;
    const int logging = 0;
    uint32_t *undo = NULL;
    size_t ul = 0;
    uint32_t hh;
    int valid, unsafe = 0;
    unsigned h;

    (void)undo;
    (void)ul;
    if (la < MIN_LOOKAHEAD) { /* every continuation calls fill_window here and slides */
        base += WSIZE;
        st->base = base;
        la = base + WINDOW_SIZE - s;
    } else if (s - base == SLIDE_AT) {
        return 0; /* fill_window (and a slide) iff the continuation is short */
    }
    if (s + MIN_MATCH > na) return 0; /* the insert depends on lookahead >= 3 */
    h = HASH(w, s);
    hh = head[h];
    valid = hh > off + (uint32_t)base && (off + (uint32_t)s) - hh <= MAX_DIST;

    if (!m->cfg.slow) {
        unsigned ml = 0;
        size_t e;
        if (valid) {
            ml = longest_match(w, prev, off, s, base, hh, MIN_MATCH - 1, m->cfg.chain, m->cfg.nice, la, &ms,
                               na - s, &unsafe);
            if (unsafe) return 0;
        }
        if (ml >= MIN_MATCH) {
            e = s + ml;
            if (ml <= m->cfg.lazy && e + MIN_MATCH > na) return 0;
            INSERT(s, hh);
            st->match_start = ms;
            tally_dist(m, st, s - ms, ml - MIN_MATCH);
            if (ml <= m->cfg.lazy) {
                size_t p;
                uint32_t dummy;
                for (p = s + 1; p < e; p++) INSERT(p, dummy);
                (void)dummy;
            }
            s = e;
        } else {
            INSERT(s, hh);
            tally_lit(st, w[s]);
            s++;
        }
        st->strstart = s;
        if (st->nsym == SYM_LIMIT) flush_block(m, st, s, base);
        return 1;
    } else {
        unsigned prev_length = st->match_length;
        size_t prev_match = st->match_start;
        unsigned ml = MIN_MATCH - 1;
        if (valid && prev_length < m->cfg.lazy) {
            if (prev_length >= na - s) return 0; /* reads scan[prev_length] */
            ml = longest_match(w, prev, off, s, base, hh, prev_length,
                               prev_length >= m->cfg.good ? m->cfg.chain >> 2 : m->cfg.chain, m->cfg.nice, la,
                               &ms, na - s, &unsafe);
            if (unsafe) return 0;
            if (ml == MIN_MATCH && s - ms > TOO_FAR) ml = MIN_MATCH - 1;
        }
        if (prev_length >= MIN_MATCH && ml <= prev_length) {
            size_t p, e = s + prev_length - 1;
            uint32_t dummy;
            if (e + 2 > na) return 0; /* inserts up to e - 1 need lookahead */
            INSERT(s, hh);
            st->match_start = ms;
            tally_dist(m, st, s - 1 - prev_match, prev_length - MIN_MATCH);
            for (p = s + 1; p < e; p++) INSERT(p, dummy);
            (void)dummy;
            st->match_available = 0;
            st->match_length = MIN_MATCH - 1;
            st->strstart = e;
            if (st->nsym == SYM_LIMIT) flush_block(m, st, e, base);
        } else if (st->match_available) {
            INSERT(s, hh);
            st->match_start = ms;
            st->match_length = ml;
            tally_lit(st, w[s - 1]);
            if (st->nsym == SYM_LIMIT) flush_block(m, st, s, base);
            st->strstart = s + 1;
        } else {
            INSERT(s, hh);
            st->match_start = ms;
            st->match_length = ml;
            st->match_available = 1;
            st->strstart = s + 1;
        }
        return 1;
    }
}

/* ------------------------------------------------------------------------ */

/* Starts a parse of n bytes in context cx: picks a fresh generation. */
static void begin_generation(hctx *cx, size_t n)
{
    uint64_t off = (cx->hw + 0xffffu) & ~(uint64_t)0xffffu;
    if (off + n + 2u * WINDOW_SIZE > UINT32_MAX) {
        memset(cx->head, 0, WSIZE * sizeof(uint32_t));
        off = 0;
    }
    cx->off = (uint32_t)off;
    cx->hw = off + n + 1u;
}

static ccomp_status ensure_buf(uint8_t **buf, size_t *cap, size_t need, int keep, ccomp_error *err)
{
    uint8_t *nb;
    size_t ncap;
    if (need <= *cap) return CCOMP_OK;
    ncap = *cap ? *cap : 4096;
    while (ncap < need) ncap = ncap > ((size_t)-1) / 2 ? need : ncap * 2;
    if (keep) {
        nb = (uint8_t *)realloc(*buf, ncap);
    } else {
        free(*buf);
        *buf = NULL;
        *cap = 0;
        nb = (uint8_t *)malloc(ncap);
    }
    if (nb == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "deflate model: could not allocate %zu bytes", ncap);
    *buf = nb;
    *cap = ncap;
    return CCOMP_OK;
}

/* Checked twice: the zlib headers ccomp was built against (ZLIB_VERNUM) and
 * the library loaded at run time must both be the version reproduced. */
#define DM_VERIFIED_ZLIB "1.2.13"
#define DM_VERIFIED_ZLIB_VERNUM 0x12d0

int ccomp_deflate_model_supported(void)
{
    const char *v = zlibVersion();
    return ZLIB_VERNUM == DM_VERIFIED_ZLIB_VERNUM && v != NULL && strcmp(v, DM_VERIFIED_ZLIB) == 0;
}

static void init_tables(ccomp_deflate_model *m)
{
    int code, n, length = 0, dist = 0;
    for (code = 0; code < 28; code++) {
        for (n = 0; n < (1 << extra_lbits[code]); n++) m->length_code[length++] = (unsigned char)code;
    }
    m->length_code[length - 1] = (unsigned char)code; /* length 258 -> code 28 */
    for (code = 0; code < 16; code++) {
        for (n = 0; n < (1 << extra_dbits[code]); n++) m->dist_code[dist++] = (unsigned char)code;
    }
    dist >>= 7;
    for (; code < D_CODES; code++) {
        for (n = 0; n < (1 << (extra_dbits[code] - 7)); n++) m->dist_code[256 + dist++] = (unsigned char)code;
    }
    /* (calloc'ed: entries past the codes stay 0) */
    for (n = END_BLOCK + 1; n < L_CODES; n++) m->xbits_l[n] = extra_lbits[n - END_BLOCK - 1];
    for (n = 0; n < D_CODES; n++) m->xbits_d[n] = extra_dbits[n];
    for (n = 0; n < BL_CODES; n++) m->xbits_b[n] = extra_blbits[n];
    for (n = 0; n < L_CODES; n++) {
        unsigned sl = n <= 143 ? 8u : n <= 255 ? 9u : n <= 279 ? 7u : 8u; /* static_ltree lengths */
        m->sx_l[n] = (uint64_t)(sl + m->xbits_l[n]) | (uint64_t)m->xbits_l[n] << 32;
    }
    for (n = 0; n < D_CODES; n++) m->sx_d[n] = (uint64_t)(5u + m->xbits_d[n]) | (uint64_t)m->xbits_d[n] << 32;
    for (n = 0; n < BL_CODES; n++) m->sx_b[n] = (uint64_t)m->xbits_b[n] | (uint64_t)m->xbits_b[n] << 32;
    for (n = 0; n <= RUN_TAB; n++) {
        unsigned self;
        m->run_rep[0][n] = run_counts(1, n, &self); /* any v != 0 counts alike */
        m->run_self[0][n] = (unsigned char)self;
        m->run_rep[1][n] = run_counts(0, n, &self);
        m->run_self[1][n] = (unsigned char)self;
    }
}

void ccomp_deflate_model_free(ccomp_deflate_model *m)
{
    if (m == NULL) return;
    free(m->plain.head);
    free(m->plain.prev);
    free(m->pre.head);
    free(m->pre.prev);
    free(m->buf);
    free(m->pbuf);
    free(m->undo);
    free(m);
}

ccomp_status ccomp_deflate_model_create(int level, ccomp_deflate_model **out, ccomp_error *err)
{
    ccomp_deflate_model *m;
    if (out == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected an output pointer, got NULL");
    *out = NULL;
    if (level < 1 || level > 9)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected level 1-9, got %d", level);
    m = (ccomp_deflate_model *)calloc(1, sizeof *m);
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_NOMEM, "deflate model: could not allocate the model");
    m->level = level;
    m->cfg = config_table[level];
    init_tables(m);
    m->plain.head = (uint32_t *)calloc(WSIZE, sizeof(uint32_t));
    m->plain.prev = (uint32_t *)calloc(WSIZE, sizeof(uint32_t));
    m->pre.head = (uint32_t *)calloc(WSIZE, sizeof(uint32_t));
    m->pre.prev = (uint32_t *)calloc(WSIZE, sizeof(uint32_t));
    if (!m->plain.head || !m->plain.prev || !m->pre.head || !m->pre.prev) {
        ccomp_deflate_model_free(m);
        return ccomp_fail(err, CCOMP_ERR_NOMEM, "deflate model: could not allocate hash tables (%zu bytes)",
                          4u * WSIZE * sizeof(uint32_t));
    }
    {
        ccomp_status rc = ccomp_deflate_model_set_prefix(m, NULL, 0, err);
        if (rc != CCOMP_OK) {
            ccomp_deflate_model_free(m);
            return rc;
        }
    }
    *out = m;
    return CCOMP_OK;
}

static ccomp_status size_plain(ccomp_deflate_model *m, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                               size_t *out, ccomp_error *err)
{
    size_t n = na + nb;
    ccomp_status rc = ensure_buf(&m->buf, &m->buf_cap, n + PAD, 0, err);
    if (rc != CCOMP_OK) return rc;
    if (na) memcpy(m->buf, a, na);
    if (nb) memcpy(m->buf + na, b, nb);
    memset(m->buf + n, 0, PAD);
    begin_generation(&m->plain, n);
    init_state(&m->work);
    while (!run_plain(m, &m->plain, &m->work, m->buf, n, next_stop(&m->work, (size_t)-1))) {
        rc = ccomp_check_cancel(err, "deflate model");
        if (rc != CCOMP_OK) return rc;
    }
    *out = (size_t)((m->work.bits + 7u) >> 3);
    return CCOMP_OK;
}

ccomp_status ccomp_deflate_model_size(ccomp_deflate_model *m, const uint8_t *a, size_t na, const uint8_t *b,
                                      size_t nb, size_t *out, ccomp_error *err)
{
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected a model, got NULL");
    if (out == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected an output pointer, got NULL");
    if (a == NULL && na != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: a is NULL but its length is %zu", na);
    if (b == NULL && nb != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: b is NULL but its length is %zu", nb);
    if (na > DM_MAX_INPUT || nb > DM_MAX_INPUT - na)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected at most %zu input bytes, got %zu + %zu",
                          (size_t)DM_MAX_INPUT, na, nb);
    return size_plain(m, a, na, b, nb, out, err);
}

ccomp_status ccomp_deflate_model_set_prefix(ccomp_deflate_model *m, const uint8_t *a, size_t na, ccomp_error *err)
{
    ccomp_status rc;
    pstate *st;
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected a model, got NULL");
    if (a == NULL && na != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: prefix is NULL but its length is %zu", na);
    if (na > DM_MAX_INPUT)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected a prefix of at most %zu bytes, got %zu",
                          (size_t)DM_MAX_INPUT, na);
    rc = ensure_buf(&m->pbuf, &m->pbuf_cap, na + PAD + 1024, 0, err);
    if (rc != CCOMP_OK) { /* leave a valid, empty prefix */
        m->na = 0;
        begin_generation(&m->pre, 0);
        init_state(&m->cp);
        return rc;
    }
    if (na) memcpy(m->pbuf, a, na);
    memset(m->pbuf + na, 0, PAD);
    m->na = na;
    begin_generation(&m->pre, na);
    st = &m->cp;
    init_state(st);
    /* Iterations at strstart with strstart + MIN_LOOKAHEAD <= na read only
     * bytes of a and see a lookahead >= MIN_LOOKAHEAD whatever follows. */
    if (na >= MIN_LOOKAHEAD) {
        const size_t end = na - MIN_LOOKAHEAD;
        for (;;) {
            run_plain(m, &m->pre, st, m->pbuf, (size_t)-1, next_stop(st, end));
            if (st->strstart > end) break;
            rc = ccomp_check_cancel(err, "deflate model");
            if (rc != CCOMP_OK) { /* leave a valid, empty prefix */
                m->na = 0;
                begin_generation(&m->pre, 0);
                init_state(&m->cp);
                return rc;
            }
        }
    }
    while (try_step(m, &m->pre, st, m->pbuf, na)) {
    }
    return CCOMP_OK;
}

/* Parses prefix||b from the checkpoint and rolls the hash tables back.  With
 * m->defer_final set, the last block is left in m->work (pending = 1);
 * otherwise, or when the reuse space is used up, *out is the size. */
static ccomp_status run_target(ccomp_deflate_model *m, const uint8_t *b, size_t nb, size_t *out, int *pending,
                               ccomp_error *err)
{
    size_t na, n, ul = 0, need;
    ccomp_status rc;
    *pending = 0;
    if (b == NULL && nb != 0)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: b is NULL but its length is %zu", nb);
    na = m->na;
    if (nb > DM_MAX_INPUT - na)
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected at most %zu input bytes, got %zu + %zu",
                          (size_t)DM_MAX_INPUT, na, nb);
    n = na + nb;
    if ((uint64_t)m->pre.off + n + 2u * WINDOW_SIZE > UINT32_MAX) { /* generation space used up: no reuse */
        int defer = m->defer_final;
        m->defer_final = 0;
        rc = size_plain(m, m->pbuf, na, b, nb, out, err);
        m->defer_final = defer;
        return rc;
    }
    rc = ensure_buf(&m->pbuf, &m->pbuf_cap, n + PAD, 1, err);
    if (rc != CCOMP_OK) return rc;
    need = 4u * (n - m->cp.strstart) + 16u;
    if (need > m->undo_cap) {
        uint32_t *u;
        size_t cap = m->undo_cap ? m->undo_cap : 4096;
        while (cap < need) cap *= 2;
        u = (uint32_t *)realloc(m->undo, cap * sizeof(uint32_t));
        if (u == NULL)
            return ccomp_fail(err, CCOMP_ERR_NOMEM, "deflate model: could not allocate an undo log of %zu bytes",
                              cap * sizeof(uint32_t));
        m->undo = u;
        m->undo_cap = cap;
    }
    if (nb) memcpy(m->pbuf + na, b, nb);
    memset(m->pbuf + n, 0, PAD);
    m->work = m->cp;
    while (!run_logged(m, &m->pre, &m->work, m->pbuf, n, next_stop(&m->work, (size_t)-1), &ul)) {
        rc = ccomp_check_cancel(err, "deflate model");
        if (rc != CCOMP_OK) break;
    }
    if (rc == CCOMP_OK && m->defer_final)
        *pending = 1;
    else if (rc == CCOMP_OK)
        *out = (size_t)((m->work.bits + 7u) >> 3);
    /* roll back the hash tables */
    while (ul != 0) {
        uint32_t val = m->undo[--ul];
        uint32_t slot = m->undo[--ul];
        if (slot < WSIZE)
            m->pre.head[slot] = val;
        else
            m->pre.prev[slot - WSIZE] = val;
    }
    return rc;
}

ccomp_status ccomp_deflate_model_size_with_prefix(ccomp_deflate_model *m, const uint8_t *b, size_t nb, size_t *out,
                                                  ccomp_error *err)
{
    int pending;
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected a model, got NULL");
    if (out == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected an output pointer, got NULL");
    m->defer_final = 0;
    return run_target(m, b, nb, out, &pending, err);
}

ccomp_status ccomp_deflate_model_sizes_with_prefix(ccomp_deflate_model *m, const uint8_t *const *bs,
                                                   const size_t *nbs, size_t count, size_t *out, ccomp_error *err)
{
    size_t i = 0;
    int held = 0; /* states waiting in m->pending[] */
    size_t held_index[NPEND], sz[NPEND];
    ccomp_status rc = CCOMP_OK;
    int k;
    if (m == NULL) return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: expected a model, got NULL");
    if (count != 0 && (bs == NULL || nbs == NULL || out == NULL))
        return ccomp_fail(err, CCOMP_ERR_VALUE, "deflate model: NULL target arrays for %zu targets", count);
    m->defer_final = 1;
    for (i = 0; i < count; i++) {
        int pending;
        if ((i & 15) == 15 && (rc = ccomp_check_cancel(err, "deflate model")) != CCOMP_OK) break;
        rc = run_target(m, bs[i], nbs[i], &out[i], &pending, err);
        if (rc != CCOMP_OK) break;
        if (!pending) continue;
        m->pending[held] = m->work;
        held_index[held++] = i;
        if (held == NPEND) {
            final_sizes(m, held, sz);
            for (k = 0; k < held; k++) out[held_index[k]] = sz[k];
            held = 0;
        }
    }
    m->defer_final = 0;
    if (rc == CCOMP_OK && held != 0) {
        final_sizes(m, held, sz);
        for (k = 0; k < held; k++) out[held_index[k]] = sz[k];
    }
    return rc;
}

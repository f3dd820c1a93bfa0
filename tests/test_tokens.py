"""ccomp.tokens against the plain NumPy reference (tests/reference/tokens_ref.py).

Indices must be equal exactly and merged tokens within float32 rounding, on random tokens, on tokens
full of exact duplicates and near-duplicates (the near-tie case of real pages), on real MiniLM hidden
states, and at any thread count.
"""
import numpy as np
import pytest

from ccomp import _tokens_host, tokens
from reference import tokens_ref as ref

RTOL = 2e-6


def _close(a, b, rtol=RTOL):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
    assert np.abs(a - b).max(initial=0.0) <= rtol * scale


def random_tokens(B, N, D, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((B, N, D)).astype(dtype)


def page_like(B, N, D, seed=0):
    """Sub-images with blank runs (exact copies), near-copies (1e-4 noise) and distinct tokens."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, N, D)).astype(np.float32)
    blank = rng.standard_normal(D).astype(np.float32)
    for b in range(B):
        frac = (b + 1) / (B + 1)
        m = rng.random(N) < frac
        x[b, m] = blank
        near = rng.random(N) < 0.1
        x[b, near] = blank + (1e-4 * rng.standard_normal((int(near.sum()), D))).astype(np.float32)
    return x


def attention(B, N, seed=1):
    a = np.random.default_rng(seed).gamma(0.3, size=(B, N))
    return a / a.sum(axis=1, keepdims=True)


def _minilm_tokens():
    from ccomp import minilm
    try:
        Q, K, V = minilm.real_qkv(max_tokens=192)
    except Exception as e:  # the model package is part of the dev requirements
        pytest.skip(f"MiniLM unavailable: {e}")
    # [layers, heads, tokens, head_dim] -> per layer a [tokens, 384] hidden-size key matrix
    k = np.ascontiguousarray(K.transpose(0, 2, 1, 3).reshape(K.shape[0], K.shape[2], -1))
    return k.astype(np.float32)


CASES = {
    "random": lambda: random_tokens(3, 200, 48),
    "page-like": lambda: page_like(3, 256, 40),
    "float64": lambda: random_tokens(2, 130, 33, dtype=np.float64),
    "float16": lambda: page_like(2, 150, 24).astype(np.float16),
}


def _case(name):
    return CASES[name]() if name != "minilm" else _minilm_tokens()


ALL = list(CASES) + ["minilm"]


def _check_most_similar(x, k):
    """most_similar equals the reference's top k of every row: indices and float32 values."""
    idx, val = tokens.most_similar(x, k=k, threads=2)
    for b in range(x.shape[0]):
        s = ref.similarity(x[b])
        np.fill_diagonal(s, -np.inf)
        for i in range(x.shape[1]):
            want = ref.top_indices(s[i].astype(np.float64), k)
            assert idx[b, i].tolist() == want.tolist(), (b, i)
            assert val[b, i].tolist() == s[i][want].tolist()


@pytest.mark.parametrize("name", ALL)
def test_most_similar_matches_reference(name):
    _check_most_similar(_case(name), 3)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("mode", ["sample", "topk", "outliers"])
@pytest.mark.parametrize("merge", [False, True])
def test_correlation_compress_matches_reference(name, mode, merge):
    x = _case(name)
    B, N = x.shape[:2]
    a = attention(B, N)
    thr = 0.9 if name != "minilm" else 0.6
    got = tokens.correlation_compress(x, cls_attention=a, threshold=thr, mode=mode, k_min=4, seed=7, merge=merge,
                                      threads=2)
    want = ref.correlation_compress(x, cls_attention=a, threshold=thr, mode=mode, k_min=4, seed=7, merge=merge)
    assert got.keep.tolist() == list(want.keep)
    np.testing.assert_array_equal(got.max_similarity, want.max_similarity)
    np.testing.assert_array_equal(got.redundant, want.redundant)
    np.testing.assert_array_equal(got.density, want.density)
    for b in range(B):
        assert got.indices[b].tolist() == list(want.indices[b])
        assert got.tokens[b].dtype == want.tokens[b].dtype
        _close(got.tokens[b], want.tokens[b], RTOL if x.dtype != np.float16 else 1e-3)


def test_correlation_compress_cls_vector_and_uniform():
    x = page_like(2, 120, 16)
    cls = np.random.default_rng(3).standard_normal((2, 16))
    for kw in ({"cls": cls}, {}):
        got = tokens.correlation_compress(x, threshold=0.95, mode="sample", seed=3, **kw)
        want = ref.correlation_compress(x, threshold=0.95, mode="sample", seed=3, **kw)
        for b in range(2):
            assert got.indices[b].tolist() == list(want.indices[b])


def test_density_orders_blank_below_distinct():
    x = page_like(4, 256, 32)  # sub-image b has a blank fraction (b + 1) / 5
    c = tokens.correlation_compress(x, threshold=0.9, mode="topk")
    assert np.all(np.diff(c.density) < 0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cls_token", [False, True])
def test_tome_matches_reference(name, cls_token):
    x = _case(name)
    B, N = x.shape[:2]
    sizes = np.random.default_rng(5).integers(1, 4, size=(B, N)).astype(np.float64)
    for r in (0, 1, N // 4, N):
        got = tokens.tome_merge(x, r, sizes=sizes, cls_token=cls_token, threads=2)
        want = ref.tome_merge(x, r, sizes=sizes, cls_token=cls_token)
        np.testing.assert_array_equal(got[2], want[2])
        _close(got[1], want[1])
        _close(got[0], want[0], RTOL if x.dtype != np.float16 else 1e-3)
        assert np.allclose(got[1].sum(axis=1), sizes.sum(axis=1))
        if r == 0:  # ToMe leaves the tokens as they are
            np.testing.assert_array_equal(got[2], np.tile(np.arange(N), (B, 1)))
            np.testing.assert_array_equal(got[0], x.astype(got[0].dtype))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("ratio", [None, 0.1])
def test_prumerge_matches_reference(name, ratio):
    x = _case(name)
    a = attention(*x.shape[:2], seed=4)
    got_t, got_i = tokens.prumerge(x, a, ratio=ratio, neighbors=8, threads=2)
    want_t, want_i = ref.prumerge(x, a, ratio=ratio, neighbors=8)
    for b in range(x.shape[0]):
        assert got_i[b].tolist() == list(want_i[b])
        _close(got_t[b], want_t[b], RTOL if x.dtype != np.float16 else 1e-3)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dominant,contextual", [(20, 7), (0, 10), (30, 0)])
def test_visionzip_matches_reference(name, dominant, contextual):
    x = _case(name)
    a = attention(*x.shape[:2], seed=6)
    got = tokens.visionzip(x, a, dominant=dominant, contextual=contextual, threads=2)
    want = ref.visionzip(x, a, dominant=dominant, contextual=contextual)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    _close(got[0], want[0], RTOL if x.dtype != np.float16 else 1e-3)


def test_fastv_matches_reference():
    x = page_like(3, 100, 8)
    a = np.round(attention(3, 100, seed=8), 3)  # rounded: many ties
    for keep in (1, 37, 100):
        got = tokens.fastv_select(x, a, keep=keep)
        want = ref.fastv_select(x, a, keep=keep)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


def test_any_thread_count_same_bytes():
    x = page_like(3, 300, 24)
    a = attention(3, 300)
    outs = [tokens.correlation_compress(x, cls_attention=a, merge=True, threads=t) for t in (1, 2, 5)]
    for o in outs[1:]:
        for b in range(3):
            np.testing.assert_array_equal(o.indices[b], outs[0].indices[b])
            np.testing.assert_array_equal(o.tokens[b], outs[0].tokens[b])
        np.testing.assert_array_equal(o.max_similarity, outs[0].max_similarity)


def test_sampling_is_seeded():
    x = random_tokens(1, 300, 8)
    a = attention(1, 300)
    one = tokens.correlation_compress(x, cls_attention=a, threshold=-1.0, k_min=50, seed=1)
    two = tokens.correlation_compress(x, cls_attention=a, threshold=-1.0, k_min=50, seed=1)
    other = tokens.correlation_compress(x, cls_attention=a, threshold=-1.0, k_min=50, seed=2)
    assert one.indices[0].tolist() == two.indices[0].tolist() != other.indices[0].tolist()
    assert one.keep[0] == 50  # every token redundant at threshold -1: k_min is what is kept


def test_2d_input():
    x = random_tokens(1, 64, 8)[0]
    c = tokens.correlation_compress(x, cls_attention=np.ones(64))
    assert c.max_similarity.shape == (1, 64)
    m, s, src = tokens.tome_merge(x, 8)
    assert m.shape == (56, 8) and src.shape == (64,)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("call,match", [
    (lambda x: tokens.correlation_compress(x[:, :1]), "at least 2 tokens"),
    (lambda x: tokens.correlation_compress(x, threshold=1.5), "threshold"),
    (lambda x: tokens.correlation_compress(x, threshold=float("nan")), "threshold"),
    (lambda x: tokens.correlation_compress(x, mode="best"), "mode"),
    (lambda x: tokens.correlation_compress(x, cls_attention=np.ones((2, 9))), "cls_attention"),
    (lambda x: tokens.correlation_compress(x, cls_attention=-np.ones((2, 10))), ">= 0"),
    (lambda x: tokens.correlation_compress(x, cls=np.ones((2, 5))), "cls"),
    (lambda x: tokens.correlation_compress(x, keys=np.ones((2, 9, 4))), "keys"),
    (lambda x: tokens.correlation_compress(x, k_min=0), "k_min"),
    (lambda x: tokens.correlation_compress(x, k_min=11), "k_min"),
    (lambda x: tokens.tome_merge(x, -1), "r must"),
    (lambda x: tokens.tome_merge(x, 2, sizes=np.zeros((2, 10))), "sizes"),
    (lambda x: tokens.visionzip(x, np.ones((2, 10)), dominant=8, contextual=5), "contextual"),
    (lambda x: tokens.prumerge(x, np.ones((2, 10)), ratio=0.0), "ratio"),
    (lambda x: tokens.fastv_select(x, np.ones((2, 10)), keep=0), "keep"),
    (lambda x: tokens.most_similar(x, k=10), "k must"),
    (lambda x: tokens.correlation_compress(x.reshape(20, 8)[None, None]), "shape"),
])
def test_bad_input_is_a_clear_error(call, match):
    x = random_tokens(2, 10, 8)
    with pytest.raises(ValueError, match=match):
        call(x)


def test_nan_and_dtype_errors():
    x = random_tokens(2, 10, 8)
    x[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(1, 3, 2\)"):
        tokens.correlation_compress(x)
    for bad in (np.inf, -np.inf, np.nan):  # float16 is checked through its exponent bits
        h = random_tokens(2, 10, 8, dtype=np.float16)
        h[0, 7, 5] = bad
        with pytest.raises(ValueError, match=r"\(0, 7, 5\)"):
            tokens.tome_merge(h, 2)
    for dt in (np.float32, np.float64):  # the first bad value is named, also in a strided view
        big = random_tokens(3, 400, 64, dtype=dt)
        big[2, 399, 63] = np.inf
        big[1, 250, 10] = np.nan
        with pytest.raises(ValueError, match=r"\(1, 250, 10\)"):
            tokens.most_similar(big)
        with pytest.raises(ValueError, match=r"\(1, 125, 5\)"):
            tokens.most_similar(big[:, ::2, ::2])
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        tokens.tome_merge(np.ones((2, 10, 4), dtype=np.int32), 2)
    a = np.ones((2, 10))
    a[0, 0] = np.inf
    with pytest.raises(ValueError, match="cls_attention"):
        tokens.prumerge(random_tokens(2, 10, 8), a)


# ------------------------------------------------------------------ real pages and real text

@pytest.fixture(scope="module")
def real_pages():
    import shutil
    from ccomp import pages
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (apt-get install poppler-utils)")
    pdfs = {p.rsplit("/", 1)[-1]: p for p in pages.bundled_pdfs()}
    return [pages.page_tokens(pdfs[name], page) for name, page in (("Artin.pdf", 2), ("Dummit-Foote.pdf", 14))]


def test_real_pages_match_reference_and_order_blank_below_text(real_pages):
    from ccomp import pages
    blank, text = [], []
    for p in real_pages:
        for mode, merge in (("topk", False), ("sample", True), ("outliers", True)):
            got = tokens.correlation_compress(p.tokens, cls_attention=p.saliency, threshold=pages.TEXT_THRESHOLD,
                                              mode=mode, merge=merge, seed=3)
            want = ref.correlation_compress(p.tokens, cls_attention=p.saliency, threshold=pages.TEXT_THRESHOLD,
                                            mode=mode, merge=merge, seed=3)
            np.testing.assert_array_equal(got.max_similarity, want.max_similarity)
            np.testing.assert_array_equal(got.density, want.density)
            for b in range(len(p.tokens)):
                assert got.indices[b].tolist() == list(want.indices[b])
                _close(got.tokens[b], want.tokens[b])
        for b in range(len(p.tokens)):
            ink = float(np.mean(p.sub_images[b] < 128))
            if np.all(p.sub_images[b] == 255):
                blank.append(got.density[b])
            elif ink >= 0.01:
                text.append(got.density[b])
    assert blank and len(text) >= 4
    assert max(blank) < 0.05 < min(text)


def test_real_pages_peers_match_reference(real_pages):
    x = np.stack([t for p in real_pages for t in p.tokens])
    a = np.stack([s for p in real_pages for s in p.saliency]).astype(np.float64) + 1e-3
    got = tokens.tome_merge(x, 300)
    want = ref.tome_merge(x, 300)
    np.testing.assert_array_equal(got[2], want[2])
    _close(got[0], want[0])
    g = tokens.visionzip(x, a)
    w = ref.visionzip(x, a)
    np.testing.assert_array_equal(g[1], w[1])
    np.testing.assert_array_equal(g[2], w[2])
    _close(g[0], w[0])
    gt, gi = tokens.prumerge(x[:4], a[:4])
    wt, wi = ref.prumerge(x[:4], a[:4])
    for b in range(4):
        assert gi[b].tolist() == list(wi[b])
        _close(gt[b], wt[b])


def test_real_minilm_text_tokens_with_cls_vector():
    from ccomp import pages
    try:
        t = pages.minilm_tokens(tokens=96, windows=3, layer=6)
    except Exception as e:
        pytest.skip(f"MiniLM unavailable: {e}")
    got = tokens.correlation_compress(t[:, 1:-1], cls=t[:, 0], threshold=0.6, seed=5, merge=True)
    want = ref.correlation_compress(t[:, 1:-1], cls=t[:, 0], threshold=0.6, seed=5, merge=True)
    for b in range(3):
        assert got.indices[b].tolist() == list(want.indices[b])
        _close(got.tokens[b], want.tokens[b])


# ------------------------------------------------------------------ screens

SCREENS = {"float32": 1, "int8": 2}


def _int8_screen_available():
    from ccomp import _core
    return "int8" in _core.tokens_kernel_name()


def _with_screen(monkeypatch, screen):
    if screen == 2 and not _int8_screen_available():
        pytest.skip("this CPU has no AVX-512 VNNI (the int8 screen)")
    monkeypatch.setattr(_tokens_host, "_SCREEN", screen)


@pytest.mark.parametrize("screen", list(SCREENS))
@pytest.mark.parametrize("name", ["random", "page-like", "float16", "minilm"])
def test_every_screen_matches_reference(monkeypatch, screen, name):
    """The float32 and the int8 screen only choose what is recomputed in float64: the same answers."""
    _with_screen(monkeypatch, SCREENS[screen])
    x = _case(name)
    _check_most_similar(x, 5)
    a = attention(*x.shape[:2])
    got = tokens.correlation_compress(x, cls_attention=a, threshold=0.6, merge=True, seed=2)
    want = ref.correlation_compress(x, cls_attention=a, threshold=0.6, merge=True, seed=2)
    np.testing.assert_array_equal(got.max_similarity, want.max_similarity)
    for b in range(x.shape[0]):
        assert got.indices[b].tolist() == list(want.indices[b])


def test_screens_agree_on_real_pages(monkeypatch, real_pages):
    from ccomp import pages
    x = np.concatenate([p.tokens for p in real_pages])
    a = np.concatenate([p.saliency for p in real_pages]).astype(np.float64)
    outs = []
    for screen in (1, 2, 0):
        _with_screen(monkeypatch, screen)
        c = tokens.correlation_compress(x, cls_attention=a, threshold=pages.TEXT_THRESHOLD, merge=True, seed=5)
        outs.append((c, tokens.most_similar(x, k=4), tokens.tome_merge(x, 200)[2]))
    for c, (i, v), src in outs[1:]:
        np.testing.assert_array_equal(c.max_similarity, outs[0][0].max_similarity)
        np.testing.assert_array_equal(i, outs[0][1][0])
        np.testing.assert_array_equal(v, outs[0][1][1])
        np.testing.assert_array_equal(src, outs[0][2])
        for b in range(len(x)):
            np.testing.assert_array_equal(c.tokens[b], outs[0][0].tokens[b])


def test_screens_agree_on_keys_with_an_outlier_channel(monkeypatch):
    """One channel far larger than the rest: a loose int8 bound (here about 0.06, so auto falls back to
    float32; forced int8 rechecks more), the same exact answer."""
    x = random_tokens(2, 300, 256, seed=4)
    x[:, :, 0] = 20.0 + x[:, :, 0]
    outs = []
    for screen in (1, 2, 0):
        _with_screen(monkeypatch, screen)
        outs.append(tokens.most_similar(x, k=3))
    for i, v in outs[1:]:
        np.testing.assert_array_equal(i, outs[0][0])
        np.testing.assert_array_equal(v, outs[0][1])


def test_core_refuses_a_bad_screen():
    from ccomp import _core
    x = random_tokens(1, 4, 8, dtype=np.float64)
    r = np.arange(4, dtype=np.int64)
    off = np.array([0, 4], dtype=np.uint64)
    with pytest.raises(ValueError, match="screen must be"):
        _core.tokens_topk(x, r, off, r, off, True, 1, 1, 7)
    if _int8_screen_available():
        with pytest.raises(ValueError, match="int8 screen takes float32 or float16"):
            _core.tokens_topk(x, r, off, r, off, True, 1, 1, 2)


def test_race_keys_use_the_c_library_log():
    import math
    from ccomp import _core
    u = ref.uniforms(9, 3, 500)
    w = attention(1, 500)[0]
    w[::7] = 0.0
    np.testing.assert_array_equal(_core.tokens_race_keys(u, w), ref.race_keys(u, w))
    assert _core.tokens_race_keys(np.array([0.5]), np.array([2.0]))[0] == -math.log(0.5) / 2.0
    with pytest.raises(ValueError, match="outside"):
        _core.tokens_race_keys(np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="same length"):
        _core.tokens_race_keys(np.array([0.5, 0.5]), np.array([1.0]))


def test_gather_sum_matches_numpy_and_refuses_bad_indices():
    from ccomp import _core
    rng = np.random.default_rng(11)
    for dt in (np.float16, np.float32, np.float64):
        x = rng.standard_normal((3, 20, 7)).astype(dt)
        M = 50
        bsel, rows, dst = rng.integers(0, 3, M), rng.integers(0, 20, M), rng.integers(0, 9, M)
        w = rng.random(M)
        want = np.zeros((9, 7))
        for i in range(M):  # in order, as the core adds them
            want[dst[i]] += w[i] * x[bsel[i], rows[i]].astype(np.float64)
        for t in (1, 3):
            np.testing.assert_array_equal(_core.tokens_gather_sum(x, bsel, rows, dst, w, 9, t), want)
        div = rng.random(9) + 0.5
        np.testing.assert_array_equal(_core.tokens_gather_sum(x, bsel, rows, dst, w, 9, 2, div), want / div[:, None])
        got32 = _core.tokens_gather_sum(x, bsel, rows, dst, w, 9, 2, div, True)
        assert got32.dtype == np.float32
        np.testing.assert_array_equal(got32, (want / div[:, None]).astype(np.float32))
        ones = _core.tokens_gather_sum(x, bsel, rows, dst, None, 9, 1)
        np.testing.assert_allclose(ones, np.array([x[bsel[dst == o], rows[dst == o]].astype(np.float64).sum(axis=0)
                                                   for o in range(9)]), rtol=1e-12, atol=1e-12)
    x = np.zeros((2, 4, 3), np.float32)
    i = np.array([0], np.int64)
    with pytest.raises(ValueError, match="reads token"):
        _core.tokens_gather_sum(x, i, np.array([4], np.int64), i, None, 1, 1)
    with pytest.raises(ValueError, match="goes to row"):
        _core.tokens_gather_sum(x, i, i, np.array([1], np.int64), None, 1, 1)
    with pytest.raises(ValueError, match="one weight per"):
        _core.tokens_gather_sum(x, i, i, i, np.ones(2), 1, 1)
    with pytest.raises(ValueError, match="one divisor per"):
        _core.tokens_gather_sum(x, i, i, i, None, 1, 1, np.ones(2))
    xt = rng.standard_normal((3, 20, 7)).astype(np.float16)
    bsel, rows = rng.integers(0, 3, 30), rng.integers(0, 20, 30)
    got = _core.tokens_take(xt, bsel, rows, 2)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, xt[bsel, rows])
    with pytest.raises(ValueError, match="of a 3 x 20 batch"):
        _core.tokens_take(xt, bsel, np.full(30, 20), 1)


def test_first_nonfinite_helper():
    """The shared check (ccomp._args.first_nonfinite): the first bad index of any float array, contiguous or
    not, in the core or through NumPy."""
    from ccomp._args import first_nonfinite
    for dt in (np.float16, np.float32, np.float64):
        a = np.zeros((5, 7, 3), dtype=dt)
        assert first_nonfinite(a) is None and first_nonfinite(a[:0]) is None
        a[4, 6, 2] = np.inf
        a[2, 5, 1] = np.nan
        assert first_nonfinite(a) == (2, 5, 1)
        assert first_nonfinite(a[:, ::-1]) == (2, 1, 1)
        assert first_nonfinite(a.astype(a.dtype.newbyteorder(">"))) == (2, 5, 1)

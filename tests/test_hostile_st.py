"""Hostile input in ccomp.sketch and ccomp.tokens (issue #13): direct ccomp._core calls with garbage raise,
duplicate container names are refused, extreme keys keep their decisions, empty batches work, and long
calls answer Ctrl-C."""
import os
import signal
import struct
import threading
import time
import zlib

import numpy as np
import pytest

from tests.interrupt import assert_interrupted

from ccomp import CorruptStreamError, _core, _tokens_host, sketch, tokens
from tests.reference import tokens_ref as ref

_W = np.random.default_rng(0).normal(size=(8, 32)).astype(np.float32)
_S = sketch.fit(_W, bits=4, groups=2, method="rtn")


# ------------------------------------------------------------------ direct _core calls (item 2)

_T, _C = _S.tables, _S.codes
_X = np.ones((3, 32), np.float32)
_GARBAGE = [np.float32(1.0), np.zeros((), np.float32), np.zeros(5, np.float32), np.zeros((2, 2, 2, 2), np.float32),
            np.zeros((8, 2, 16), np.int64), "abc", None, 7]


@pytest.mark.parametrize("bad", range(len(_GARBAGE)))
def test_core_sketch_entry_points_refuse_garbage(bad):
    g = _GARBAGE[bad]
    calls = [
        lambda: _core.sketch_check(g, 0, _C, 32, 4),
        lambda: _core.sketch_check(_T, 0, g, 32, 4),
        lambda: _core.sketch_pack(g, 2, 4),
        lambda: _core.sketch_unpack(g, 32, 4),
        lambda: _core.sketch_dequantize(g, 0, _C, 32, 4, False, 1),
        lambda: _core.sketch_matmul(g, _T, 0, _C, 32, 4, 1),
        lambda: _core.sketch_matmul(_X, g, 0, _C, 32, 4, 1),
        lambda: _core.sketch_matmul(_X, _T, 0, g, 32, 4, 1),
        lambda: _core.sketch_grad_tables(_X, g, _T, 0, _C, 32, 4, 1),
        lambda: _core.sketch_grad_input(g, _T, 0, _C, 32, 4, 1),
        lambda: _core.sketch_fit(0, g, 2, 4, 0, None, 0, 1),
        lambda: _core.sketch_fit(1, _W, 2, 4, 0, "x" if g is None else g, 5, 1),
        lambda: _core.sketch_gptq(_W, g, _T, 0, 2, 4, 8, 1),
        lambda: _core.sketch_gptq(_W, np.eye(32, dtype=np.float32), g, 0, 2, 4, 8, 1),
    ]
    for call in calls:
        with pytest.raises((TypeError, ValueError)):
            call()


def test_core_sketch_bad_sizes_and_ints():
    eye = np.eye(32, dtype=np.float32)
    bad = [
        lambda: _core.sketch_matmul(_X, _T, 0, _C, 31, 4, 1),          # cols vs code bytes
        lambda: _core.sketch_matmul(_X, _T, 0, _C, -32, 4, 1),
        lambda: _core.sketch_matmul(_X, _T, 0, _C, 32, 3, 1),          # bits vs table size
        lambda: _core.sketch_matmul(_X, _T, 9, _C, 32, 4, 1),          # table type
        lambda: _core.sketch_matmul(_X, _T, 1, _C, 32, 4, 1),          # float32 tables named float16
        lambda: _core.sketch_matmul(_X, _T[:, :1], 0, _C, 32, 4, 1),   # groups of tables vs codes
        lambda: _core.sketch_matmul(_X, _T, 0, _C, 32, 4, 0),          # threads
        lambda: _core.sketch_matmul(_X, _T, 0, _C, 32, 4, 1 << 20),
        lambda: _core.sketch_pack(np.zeros((4, 8), np.uint8), -1, 4),
        lambda: _core.sketch_pack(np.zeros((4, 8), np.uint8), 3, 4),
        lambda: _core.sketch_pack(np.full((4, 8), 16, np.uint8), 2, 4),
        lambda: _core.sketch_unpack(_C, 0, 4),
        lambda: _core.sketch_fit(7, _W, 2, 4, 0, None, 5, 1),          # method
        lambda: _core.sketch_fit(1, _W, 0, 4, 0, None, 5, 1),
        lambda: _core.sketch_fit(1, _W, 2, 4, 0, None, -1, 1),
        lambda: _core.sketch_fit(1, _W, 2, 4, 0, np.ones(31), 5, 1),
        lambda: _core.sketch_fit(1, _W, 2, 4, 0, -np.ones(32), 5, 1),
        lambda: _core.sketch_gptq(_W, eye, _T, 0, 2, 4, 0, 1),
        lambda: _core.sketch_gptq(_W, -eye, _T, 0, 2, 4, 8, 1),
        lambda: _core.sketch_gptq(_W, eye[:31, :31], _T, 0, 2, 4, 8, 1),
    ]
    for i, call in enumerate(bad):
        with pytest.raises((TypeError, ValueError)):
            call()
    # a block far beyond the columns is the same as one of all columns (and allocates nothing huge)
    a = _core.sketch_gptq(_W, eye, _T, 0, 2, 4, 1 << 60, 1)
    b = _core.sketch_gptq(_W, eye, _T, 0, 2, 4, 32, 1)
    assert np.array_equal(a, b)


def _topk_args(B=2, N=16, D=8):
    keys = np.random.default_rng(1).standard_normal((B, N, D)).astype(np.float32)
    r = np.tile(np.arange(N, dtype=np.int64), B)
    off = np.arange(B + 1, dtype=np.uint64) * N
    return keys, r, off


def test_core_tokens_entry_points_refuse_garbage():
    keys, r, off = _topk_args()
    nan_keys = keys.copy()
    nan_keys[1, 3, 0] = np.nan
    bad = [
        lambda: _core.tokens_topk(keys[0], r, off, r, off, True, 1, 1),
        lambda: _core.tokens_topk(np.float32(1), r, off, r, off, True, 1, 1),
        lambda: _core.tokens_topk(keys, r.astype(np.int32), off, r, off, True, 1, 1),
        lambda: _core.tokens_topk(keys, r, off[:2], r, off, True, 1, 1),
        lambda: _core.tokens_topk(keys, r[:-1], off, r, off, True, 1, 1),
        lambda: _core.tokens_topk(keys, r + 16, off, r, off, True, 1, 1),
        lambda: _core.tokens_topk(keys, r, off, r - 1, off, True, 1, 1),
        lambda: _core.tokens_topk(keys, r, off[::-1].copy(), r, off, True, 1, 1),
        lambda: _core.tokens_topk(keys, r, off, r, off, True, 0, 1),
        lambda: _core.tokens_topk(keys, r, off, r, off, True, 1 << 40, 1),
        lambda: _core.tokens_topk(keys, r, off, r, off, True, 1, 0),
        lambda: _core.tokens_topk(keys, r, off, r, off, True, 1, 1, 9),
        lambda: _core.tokens_topk(nan_keys, r, off, r, off, True, 1, 1),
        lambda: _core.tokens_gather_sum(keys, r[:3], r[:3], r[:3], None, 2, 1),
        lambda: _core.tokens_gather_sum(keys, r[:3] * 0, r[:3], r[:2], None, 8, 1),
        lambda: _core.tokens_gather_sum(keys, r[:3] * 0, r[:3], r[:3] + 7, None, 8, 1),
        lambda: _core.tokens_gather_sum(keys, r[:3] * 0, r[:3], r[:3], np.ones(2), 8, 1),
        lambda: _core.tokens_gather_sum(keys, r[:3] * 0, r[:3], r[:3], None, -1, 1),
        lambda: _core.tokens_take(keys, r[:3] * 0 + 2, r[:3], 1),
        lambda: _core.tokens_take(keys, r[:3] * 0, r[:3] - 5, 1),
        lambda: _core.tokens_take(keys, r[:3] * 0, r[:2], 1),
        lambda: _core.tokens_take(keys.astype(np.int32), r[:3] * 0, r[:3], 1),
        lambda: _core.first_nonfinite(keys, 0),
        lambda: _core.first_nonfinite([1.0], 1),
        lambda: _core.tokens_race_keys(np.zeros(2), np.ones(2)),
        lambda: _core.tokens_race_keys(np.ones(2), np.ones(3)),
    ]
    for i, call in enumerate(bad):
        with pytest.raises((TypeError, ValueError)):
            call()


# ------------------------------------------------------------------ container names (item 11, 17)

def test_save_refuses_names_that_collide(tmp_path):
    with pytest.raises(ValueError, match="duplicate layer name '1'"):
        sketch.save(tmp_path / "a.ccsk", {1: _S, "1": _S})
    sketch.save(tmp_path / "b.ccsk", {0: _S, "x": _S})   # int keys: their decimal form
    assert sorted(sketch.load(tmp_path / "b.ccsk")) == ["0", "x"]
    for bad in ("", "a\x00b", "\ud800", "n" * 70000):
        with pytest.raises(ValueError, match="cannot be stored"):
            sketch.save(tmp_path / "c.ccsk", {bad: _S})
    with pytest.raises(TypeError, match="layer names"):
        sketch.save(tmp_path / "c.ccsk", {1.0: _S})


def _rewrite(data, old, new):
    """The container with the first occurrence of old replaced by new (same length) and its CRC recomputed."""
    data = bytearray(data)
    at = bytes(data).index(old)
    data[at:at + len(old)] = new
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def test_load_refuses_duplicate_and_bad_names(tmp_path):
    p = tmp_path / "a.ccsk"
    sketch.save(p, {"ab": _S, "cd": _S})
    good = p.read_bytes()
    for new, what in ((b"\x02\x00ab", "duplicate layer name"), (b"\x02\x00a\x00", "NUL")):
        p.write_bytes(_rewrite(good, b"\x02\x00cd", new))
        with pytest.raises(CorruptStreamError, match=what):
            sketch.load(p)
    # a name length that runs past the end, behind a valid CRC
    p.write_bytes(_rewrite(good, b"\x02\x00ab", b"\xff\xffab"))
    with pytest.raises(CorruptStreamError):
        sketch.load(p)


def test_from_bytes_type_and_fraction_arguments():
    with pytest.raises(TypeError, match="data"):
        sketch.Sketch.from_bytes(5)
    assert sketch.Sketch.from_bytes(bytearray(_S.to_bytes())) == _S
    assert sketch.Sketch.from_bytes(memoryview(_S.to_bytes())) == _S
    with pytest.raises(TypeError, match="in_features"):
        sketch.Sketch(_S.tables, _S.codes, 8.9)
    with pytest.raises(ValueError, match="in_features"):
        sketch.Sketch(_S.tables, _S.codes, 2**70)
    big = _S.tables.astype(">f4")
    assert sketch.Sketch(big, _S.codes, 32) == _S                   # big-endian float32 is float32
    assert np.array_equal(sketch.matmul(_X.astype(">f4"), _S), sketch.matmul(_X, _S))


# ------------------------------------------------------------------ extreme keys (item 6)

@pytest.mark.parametrize("screen", [0, 1, 2])
@pytest.mark.parametrize("dtype,scales", [(np.float64, [1e154, 1e300, 1e-160, 1e-300, 5e-324 * 2**40]),
                                          (np.float32, [2.0**100, 2.0**-100, 2.0**-130]),
                                          (np.float16, [2.0**10, 2.0**-20])])
def test_extreme_keys_decide_as_the_rescaled_keys(screen, dtype, scales, monkeypatch):
    if screen == 2 and ("int8" not in tokens.kernel_name() or dtype == np.float64):
        pytest.skip("the int8 screen takes float32/float16 keys on a CPU with AVX-512 VNNI")
    monkeypatch.setattr(_tokens_host, "_SCREEN", screen)
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 48, 16)).astype(dtype)
    base[1, 10:20] = base[1, 9]   # ties
    for sc in scales:
        keys = (base.astype(np.float64) * sc).astype(dtype)
        assert np.all(np.isfinite(keys))
        idx, val = tokens.most_similar(keys, k=3)
        assert not np.isnan(val).any()
        want = ref.rescale(keys).astype(np.float64)   # the same keys brought to a unit scale
        for b in range(2):
            S = ref.similarity(want[b])
            np.fill_diagonal(S, -np.inf)
            for i in range(48):
                order = ref.top_indices(S[i], 3)
                assert idx[b, i].tolist() == order.tolist(), (sc, b, i)
                assert np.array_equal(val[b, i], S[i][order])
        # the decisions equal those of the keys at their own scale, where the scale is exact
        if dtype == np.float64:
            i0, v0 = tokens.most_similar(base, k=3)
            assert np.array_equal(idx, i0) and np.array_equal(val, v0)


def test_tiny_and_huge_keys_in_correlation_compress():
    x = np.random.default_rng(4).standard_normal((1, 32, 8))
    x[0, 16:] = x[0, 15]
    c0 = tokens.correlation_compress(x, threshold=0.9, seed=1)
    for sc in (1e154, 1e-160):
        c = tokens.correlation_compress(x * sc, threshold=0.9, seed=1)
        assert np.array_equal(c.max_similarity, c0.max_similarity)
        assert np.array_equal(c.indices, c0.indices)


# ------------------------------------------------------------------ empty dimensions (item 16)

def test_empty_batches():
    e = np.zeros((0, 8, 4), np.float32)
    idx, val = tokens.most_similar(e, k=2)
    assert idx.shape == (0, 8, 2) and idx.dtype == np.int64 and val.shape == (0, 8, 2) and val.dtype == np.float32
    c = tokens.correlation_compress(e)
    assert c.density.shape == (0,)
    for merge in (False, True):
        c = tokens.correlation_compress(e, cls_attention=np.zeros((0, 8)), merge=merge)
        assert c.tokens == [] and c.keep.shape == (0,) and c.max_similarity.shape == (0, 8)
    m, sizes, source = tokens.tome_merge(e, 2)
    assert m.shape == (0, 6, 4) and sizes.shape == (0, 6) and source.shape == (0, 8)
    out, kept = tokens.prumerge(e, np.zeros((0, 8)))
    assert out == [] and kept == []
    v, d, t = tokens.visionzip(e, np.zeros((0, 8)), dominant=2, contextual=2)
    assert v.shape == (0, 4, 4) and d.shape == (0, 2) and t.shape == (0, 2)
    sel, ind = tokens.fastv_select(e, np.zeros((0, 8)), keep=2)
    assert sel.shape == (0, 2, 4) and ind.shape == (0, 2)
    with pytest.raises(ValueError, match="at least one channel"):
        tokens.most_similar(np.zeros((1, 8, 0), np.float32))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        tokens.most_similar(np.zeros((1, 0, 4), np.float32))
    assert sketch.matmul(np.zeros((0, 32), np.float32), _S).shape == (0, 8)
    assert sketch.grad_input(np.zeros((0, 8), np.float32), _S).shape == (0, 32)
    assert np.array_equal(sketch.grad_tables(np.zeros((0, 32)), np.zeros((0, 8)), _S), np.zeros((8, 2, 16)))
    with pytest.raises(ValueError, match="at least one row"):
        sketch.fit(np.zeros((0, 32), np.float32))
    with pytest.raises(ValueError, match="at least one row"):
        sketch.fit(np.zeros((4, 0), np.float32))


# ------------------------------------------------------------------ Ctrl-C (item 5)

def test_ctrl_c_stops_gptq_fit():
    # the GPTQ pass of LeanQuant (the LAPACK factorisation before it is NumPy's): about 6 s on one thread
    W = np.random.default_rng(5).normal(size=(6144, 4096)).astype(np.float32)
    s = sketch.fit(W[:64], bits=4, groups=32, method="rtn")
    tables = np.ascontiguousarray(np.broadcast_to(s.tables[:1], (6144,) + s.tables.shape[1:]))
    U = np.triu(np.full((4096, 4096), 0.01, np.float32))
    np.fill_diagonal(U, 1.0)
    assert_interrupted(lambda: _core.sketch_gptq(W, U, tables, 0, 32, 4, 4096, 1))
    small = sketch.fit(W[:4, :64], bits=4, hessian=np.eye(64))       # the next call works
    assert small.shape == (4, 64)


def test_ctrl_c_stops_kmeans_fit():
    W = np.random.default_rng(6).normal(size=(1536, 16384)).astype(np.float32)   # about 6 s uninterrupted
    assert_interrupted(lambda: sketch.fit(W, bits=4, groups=1, method="kmeans", iters=1000, threads=1))
    assert sketch.fit(W[:2, :64], bits=4, method="kmeans").shape == (2, 64)


def test_ctrl_c_stops_token_screen():
    keys = np.random.default_rng(7).standard_normal((1, 50000, 256)).astype(np.float32)   # about 6 s
    assert_interrupted(lambda: tokens.most_similar(keys, k=4, threads=1))
    i, v = tokens.most_similar(keys[:, :64], k=2)
    assert i.shape == (1, 64, 2)


def test_no_infinite_tables_or_weights_from_finite_input():
    W = np.full((2, 8), 1e5, np.float32)
    W[0, 0] = -1e5
    with pytest.raises(ValueError, match="float16"):
        sketch.fit(W, dtype="float16", method="rtn")
    assert np.isfinite(sketch.fit(W, dtype="float32", method="kmeans").table_values()).all()
    with pytest.raises(ValueError, match="cls"):
        tokens.cls_weights(np.full(4, 1e200), np.full((8, 4), 1e200))


def test_output_error_is_a_number_or_a_clear_error():
    W = np.random.default_rng(1).normal(size=(8, 32))
    X = np.random.default_rng(2).normal(size=(5, 32))
    e = sketch.output_error(W, _S, X)
    # the relative error does not depend on the scale of X: huge and tiny inputs give the same number (they
    # gave NaN: the squares overflowed or underflowed)
    for scale in (2.0 ** 900, 2.0 ** -1000):
        assert sketch.output_error(W, _S, X * scale) == e
    assert sketch.output_error(W, _S, X.astype(np.float32)) == pytest.approx(e, rel=1e-6)
    cases = [((W, np.zeros((0, 32))), ValueError, "X must hold at least one input row"),
             ((W, np.zeros((5, 32))), ValueError, "relative output error is undefined"),
             ((np.zeros((8, 32)), X), ValueError, "relative output error is undefined"),
             ((W, np.where(np.eye(5, 32) > 0, np.nan, X)), ValueError, r"X must be finite, got nan at X\[0, 0\]"),
             ((np.where(np.eye(8, 32) > 0, 1e308, W), X), ValueError, r"W must fit float32.*1e\+308 at W\[0, 0\]"),
             ((W, X.astype(complex)), TypeError, "X must be a float array")]
    for (w, x), exc, match in cases:
        with pytest.raises(exc, match=match):
            sketch.output_error(w, _S, x)


@pytest.mark.parametrize("name", ["prumerge", "visionzip"])
def test_merged_tokens_that_overflow_are_an_error(name):
    """Finite tokens (or attention weights) whose weighted sums leave the float32 range gave inf tokens."""
    merge = {"prumerge": lambda x, a: tokens.prumerge(x, a)[0][0],
             "visionzip": lambda x, a: tokens.visionzip(x, a, dominant=5, contextual=3)[0]}[name]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 50, 16)).astype(np.float32)
    a = rng.random((2, 50)).astype(np.float32)
    ok = merge(x, a)
    bad = [(np.full_like(x, 3e38), a)] + ([(x, np.full_like(a, 3e38))] if name == "prumerge" else [])
    for xx, aa in bad:  # (visionzip uses the attention only to rank tokens)
        with pytest.raises(ValueError, match="a merged token overflows float32"):
            merge(xx, aa)
    assert np.isfinite(merge(np.full(x.shape, 3e38), a)).all()  # float64 tokens hold the same sums
    assert np.array_equal(merge(x, a), ok)


def test_ctrl_c_during_the_numpy_and_lapack_parts():
    """The Hessian and its Cholesky factorisation (sketch.fit with calibration inputs) and cls_weights' einsum are
    single NumPy/LAPACK calls that never return to the interpreter: they answered Ctrl-C only at their end
    (5 s late for a 4096-wide layer). They run on a helper thread now and the caller answers at once."""
    rng = np.random.default_rng(6)
    W = rng.normal(size=(16, 4096)).astype(np.float32)
    X = rng.normal(size=(512, 4096)).astype(np.float32)
    H = 2.0 * (X.T.astype(np.float64) @ X) / 512
    assert_interrupted(lambda: [sketch.fit(W, bits=2, hessian=H, threads=1) for _ in range(20)])
    k = rng.normal(size=(8, 100000, 128)).astype(np.float32)
    c = np.ones((8, 128), np.float32)
    assert_interrupted(lambda: [tokens.cls_weights(c, k) for _ in range(20)])
    # the same results as before
    w = tokens.cls_weights(c[:1], k[:1, :1000])
    logits = np.einsum("bnd,bd->bn", k[:1, :1000].astype(np.float64), c[:1].astype(np.float64)) / np.sqrt(128)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert np.array_equal(w, e / e.sum(axis=1, keepdims=True))
    assert sketch.fit(W[:4, :64], bits=2, hessian=H[:64, :64]) == sketch.fit(W[:4, :64], bits=2, hessian=H[:64, :64])


def test_ctrl_c_during_a_scan_for_nan_raises_keyboard_interrupt():
    """first_nonfinite, interrupted, returned its index with the KeyboardInterrupt set (SystemError: 'returned a
    result with an exception set'); any binding whose call finishes after the signal raises KeyboardInterrupt."""
    a = np.zeros(150_000_000, np.float32)
    assert_interrupted(lambda: [_core.first_nonfinite(a, 1) for _ in range(100)])
    a[123] = np.nan
    assert _core.first_nonfinite(a[:1000], 2) == 123


def test_iqr_bound_of_huge_values():
    """Finite weights near the float64 limit gave -inf (the percentile's interpolation overflowed): the bound is
    computed on exactly rescaled values, inf only when the bound itself is beyond the range."""
    w = np.random.default_rng(8).random(101)
    assert tokens.iqr_bound(w * 2.0 ** 1020) == tokens.iqr_bound(w) * 2.0 ** 1020
    assert tokens.iqr_bound(np.array([1e308, -1e308])) == np.inf
    assert tokens.iqr_bound(np.array([-1e308, -1e308, -1e308, 0.0])) == pytest.approx(-3.75e307)  # Q3 + 1.5 IQR

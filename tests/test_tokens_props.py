"""Property tests of the token-similarity core (csrc/tokens/similarity.c) against a bit-exact emulation.

The core promises the top k of the float64 definition, whichever screen ran. Here hypothesis draws small
batches full of the cases that make screens disagree: bit-identical copies, scaled copies (cosine 1 up to
the last bit), near-copies, zero keys, huge channels, repeated query rows and candidates, k beyond the
candidates; the answer must equal a NumPy emulation of the C definition, bit for bit, for every screen and
thread count.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ccomp import _core


def _lanes(p, lanes):
    """dot64's order: lane l sums p[d] for d = l mod lanes over the whole groups, sequentially; the rest go
    to lanes 0, 1, ... (one each)."""
    whole = (len(p) // lanes) * lanes
    s = np.zeros(lanes)
    if whole:
        s = np.cumsum(p[:whole].reshape(-1, lanes), axis=0)[-1].copy()
    for i, v in enumerate(p[whole:]):
        s[i] += v
    return s


def _inv(k):
    """1 / max(|k|, 1e-12) in inv_norm's order: sum l takes d = l mod 4 over the whole groups of 4, the rest
    go to sum 0; then (s0 + s1) + (s2 + s3)."""
    sq = k * k
    whole = (len(k) // 4) * 4
    s = np.cumsum(sq[:whole].reshape(-1, 4), axis=0)[-1].copy() if whole else np.zeros(4)
    for v in sq[whole:]:
        s[0] += v
    n = np.sqrt((s[0] + s[1]) + (s[2] + s[3]))
    return 1.0 / max(n, 1e-12)


def _sim(a, c):
    s = _lanes(a * c, 8)
    dot = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
    return np.float32(dot * _inv(a) * _inv(c))


def _brute(keys64, rows, cols, excl, k):
    out_i = np.full((len(rows), k), -1, dtype=np.int64)
    out_v = np.full((len(rows), k), -np.inf, dtype=np.float32)
    for r, me in enumerate(rows):
        cand = sorted(((-float(_sim(keys64[me], keys64[c])), int(c)) for c in cols if not (excl and c == me)))
        for t, (v, c) in enumerate(cand[:k]):
            out_i[r, t] = c
            out_v[r, t] = -v
    return out_i, out_v


def _screens():
    return [0, 1] + ([2] if "int8" in _core.tokens_kernel_name() else [])


@st.composite
def batches(draw):
    B = draw(st.integers(1, 3))
    N = draw(st.integers(1, 24))
    D = draw(st.integers(1, 70))
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((B, N, D))
    for b in range(B):  # the hard cases, placed at random
        for i in range(N):
            kind = draw(st.sampled_from(["plain", "plain", "copy", "scaled", "near", "zero", "huge"]))
            j = int(rng.integers(0, N))
            if kind == "copy":
                x[b, i] = x[b, j]
            elif kind == "scaled":
                x[b, i] = 2.0 * x[b, j]
            elif kind == "near":
                x[b, i] = x[b, j] + 1e-3 * rng.standard_normal(D)
            elif kind == "zero":
                x[b, i] = 0.0
            elif kind == "huge":
                x[b, i, 0] = 300.0
    x = x.astype(dtype)
    rows = [rng.integers(0, N, draw(st.integers(0, N + 2))) for _ in range(B)]
    cols = [rng.integers(0, N, draw(st.integers(0, N + 4))) for _ in range(B)]
    k = draw(st.integers(1, 6))
    excl = draw(st.booleans())
    return x, rows, cols, k, excl


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=batches())
def test_topk_equals_the_definition_bit_for_bit(case):
    x, rows, cols, k, excl = case
    x64 = x.astype(np.float64)
    ro = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.uint64)
    co = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.uint64)
    r = np.concatenate(rows).astype(np.int64)
    c = np.concatenate(cols).astype(np.int64)
    want_i, want_v = [], []
    for b in range(x.shape[0]):
        i, v = _brute(x64[b], rows[b], cols[b], excl, k)
        want_i.append(i)
        want_v.append(v)
    want_i, want_v = np.concatenate(want_i), np.concatenate(want_v)
    for screen in _screens():
        for threads in (1, 3):
            if screen == 2 and x.dtype == np.float64:
                with pytest.raises(ValueError, match="float32 or float16"):
                    _core.tokens_topk(x, r, ro, c, co, excl, k, threads, screen)
                continue
            gi, gv = _core.tokens_topk(x, r, ro, c, co, excl, k, threads, screen)
            np.testing.assert_array_equal(gi, want_i, err_msg=f"screen {screen}, {threads} threads")
            np.testing.assert_array_equal(gv, want_v, err_msg=f"screen {screen}, {threads} threads")

"""The plain-NumPy reference of ccomp.tokens (tests/reference/tokens_ref.py)
checked on its own, before ccomp's C code is compared with it: small cases
worked out by hand, independent brute-force loops (plain Python cosines, a
transcription of ToMe's gather/scatter code), and the exponential race's
selection frequencies against the exact sampling probabilities."""
import itertools
import math

import numpy as np
import pytest

from reference import kv_ref, tokens_ref as ref


def unit(*v):
    return np.asarray(v, dtype=np.float64)


def angles(*deg):
    """2-D unit vectors at the given angles (degrees): cosines are cos(differences)."""
    r = np.radians(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(r), np.sin(r)], axis=1)


def cosine_loop(a, b):
    """Independent cosine of two vectors in plain Python floats, rounded to float32."""
    na = max(math.sqrt(math.fsum(x * x for x in a)), 1e-12)
    nb = max(math.sqrt(math.fsum(x * x for x in b)), 1e-12)
    return np.float32(math.fsum(x * y for x, y in zip(a, b)) / (na * nb))


# ------------------------------------------------------------ similarity

def test_similarity_by_hand():
    k = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [-3, 0]], dtype=np.float32)
    s = ref.similarity(k)
    assert s.dtype == np.float32 and s.shape == (5, 5)
    assert s[0, 1] == 0 and s[0, 4] == -1 and s[0, 0] == 1
    assert s[0, 2] == np.float32(1 / math.sqrt(2)) and s[1, 2] == np.float32(1 / math.sqrt(2))
    assert np.all(s[3] == 0) and np.all(s[:, 3] == 0)  # a zero key: 0 with every token, itself included


def test_similarity_matches_a_brute_force_loop():
    rng = np.random.default_rng(1)
    ka = rng.normal(size=(12, 7)).astype(np.float32)
    kb = rng.normal(size=(9, 7)).astype(np.float16)
    s = ref.similarity_ab(ka, kb)
    want = np.array([[cosine_loop(a.astype(float), b.astype(float)) for b in kb] for a in ka])
    assert np.array_equal(s, want)


# -------------------------------------------------------------- sampling

def splitmix_python(state):
    z = (state + 0x9E3779B97F4A7C15) % 2 ** 64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2 ** 64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2 ** 64
    return z ^ (z >> 31)


def test_splitmix64_known_values_and_wraparound():
    # the published splitmix64 stream from state 0
    assert ref.splitmix64(0) == 0xE220A8397B1DCDAF
    assert ref.splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    for x in (0, 1, 2 ** 63, 2 ** 64 - 1, 0x0123456789ABCDEF):
        assert ref.splitmix64(x) == splitmix_python(x)
        assert int(ref.splitmix64(np.array([x], dtype=np.uint64))[0]) == splitmix_python(x)
        assert int(kv_ref.splitmix64(x, 1)[0]) == splitmix_python(x)  # the same generator as ccomp.kv


def test_uniforms_by_hand():
    seed, b, n = 12345, 3, 50
    u = ref.uniforms(seed, b, n)
    s = splitmix_python(seed)
    for i in range(n):
        r = splitmix_python(s ^ ((b << 32) | i))
        assert u[i] == ((r >> 11) + 0.5) * 2.0 ** -53
    assert np.all((u > 0) & (u <= 1))
    assert not np.array_equal(ref.uniforms(seed, 0, n), ref.uniforms(seed, 1, n))
    assert not np.array_equal(ref.uniforms(0, 0, n), ref.uniforms(1, 0, n))
    assert np.array_equal(ref.uniforms(-1, 0, n), ref.uniforms(2 ** 64 - 1, 0, n))


def test_race_keys_zero_weight_is_infinite():
    keys = ref.race_keys(np.array([0.5, 0.5, 0.25]), np.array([1.0, 0.0, 2.0]))
    assert keys[0] == -math.log(0.5) and keys[1] == np.inf and keys[2] == -math.log(0.25) / 2


def inclusion_probabilities(w, k):
    """Exact P(i in sample) of k draws without replacement, each proportional to w."""
    w = np.asarray(w, dtype=np.float64)
    p = np.zeros(len(w))
    for seq in itertools.permutations(range(len(w)), k):
        prob, left = 1.0, w.sum()
        for i in seq:
            prob *= w[i] / left
            left -= w[i]
        p[list(seq)] += prob
    return p


@pytest.mark.parametrize("k", [1, 2])
def test_exponential_race_matches_sampling_without_replacement(k):
    w = np.array([1.0, 2.0, 0.0, 3.0, 4.0])
    trials = 20000
    counts = np.zeros(len(w))
    for seed in range(trials):
        chosen = ref.order_asc(ref.race_keys(ref.uniforms(seed, 0, len(w)), w))[:k]
        counts[chosen] += 1
    freq = counts / trials
    p = inclusion_probabilities(w, k)
    assert freq[2] == 0  # zero weight: never chosen while positive weights remain
    sigma = np.sqrt(np.maximum(p * (1 - p), 1e-12) / trials)
    assert np.all(np.abs(freq - p) < 5 * sigma), (freq, p)


def test_sample_mode_frequencies_through_correlation_compress():
    # tokens 2, 3, 4 are copies (redundant), 0 and 1 are not: R = 3, k = 2 of N = 5
    x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=np.float32)
    w = np.array([4.0, 1.0, 2.0, 0.5, 2.5])
    trials = 6000
    counts = np.zeros(5)
    for seed in range(trials):
        c = ref.correlation_compress(x, cls_attention=w, mode="sample", seed=seed)
        assert c.keep[0] == 2 and len(c.indices[0]) == 2 and np.all(np.diff(c.indices[0]) > 0)
        counts[c.indices[0]] += 1
    p = inclusion_probabilities(w, 2)
    sigma = np.sqrt(p * (1 - p) / trials)
    assert np.all(np.abs(counts / trials - p) < 5 * sigma)


def test_sample_mode_is_reproducible_and_uses_the_sub_image_index():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 40, 8))
    w = rng.random((3, 40))
    a = ref.correlation_compress(x, cls_attention=w, threshold=0.5, seed=7)
    b = ref.correlation_compress(x, cls_attention=w, threshold=0.5, seed=7)
    assert all(np.array_equal(i, j) for i, j in zip(a.indices, b.indices))
    one = ref.correlation_compress(x[0], cls_attention=w[0], threshold=0.5, seed=7)  # sub-image 0 alone
    assert np.array_equal(one.indices[0], a.indices[0])
    # sub-image 1 alone is sub-image 0 of its own call: a different counter block
    u_b1 = ref.uniforms(7, 1, 40)
    want = np.sort(ref.order_asc(ref.race_keys(u_b1, w[1]))[:a.keep[1]])
    assert np.array_equal(a.indices[1], want)


# ------------------------------------------------------------- IQR rule

def test_iqr_bound_by_hand():
    w = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], dtype=np.float64)
    # n = 10: Q1 at h = 2.25 -> 3 + 0.25 = 3.25; Q3 at h = 6.75 -> 7.75; bound 7.75 + 1.5 * 4.5
    assert ref.percentile_linear(w, 25) == 3.25 and ref.percentile_linear(w, 75) == 7.75
    assert ref.iqr_bound(w) == 14.5
    assert ref.outlier_count(w) == 1
    assert ref.iqr_bound(np.ones(7)) == 1.0 and ref.outlier_count(np.ones(7)) == 0


def test_percentile_written_out_equals_numpy_bit_for_bit():
    rng = np.random.default_rng(3)
    for n in list(range(2, 40)) + [576, 1024, 1025]:
        w = rng.random(n) ** 3
        for q in (25, 75):
            assert ref.percentile_linear(w, q) == float(np.percentile(w, q))


# ------------------------------------------------------ correlation_compress

def test_identical_tokens_have_zero_density_and_keep_k_min():
    rng = np.random.default_rng(4)
    v = rng.normal(size=24)
    x = np.tile(v, (16, 1)) * rng.uniform(0.5, 2.0, size=(16, 1))  # same direction, any length
    c = ref.correlation_compress(x, mode="topk")
    assert np.all(c.max_similarity == 1) and np.all(c.redundant)
    assert c.density[0] == 0 and c.keep[0] == 1  # keep / N = 1 / N
    assert ref.correlation_compress(x, mode="topk", k_min=3).keep[0] == 3


def test_distinct_and_zero_tokens_are_not_redundant():
    x = np.eye(6)
    c = ref.correlation_compress(x, mode="topk")
    assert c.density[0] == 1 and c.keep[0] == 6 and not c.redundant.any()
    z = np.zeros((5, 3))  # zero keys: similarity 0 with everything
    c = ref.correlation_compress(z, mode="topk")
    assert np.all(c.max_similarity == 0) and c.density[0] == 1


def test_max_similarity_matches_a_brute_force_loop():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 30, 6)).astype(np.float32)
    x[0, 10] = x[0, 3]  # exact duplicates
    x[1, 4] = 0  # a zero token
    c = ref.correlation_compress(x, threshold=0.6, mode="topk")
    for b in range(2):
        want = np.array([max(cosine_loop(x[b, i].astype(float), x[b, j].astype(float))
                             for j in range(30) if j != i) for i in range(30)])
        assert np.array_equal(c.max_similarity[b], want)
        r = int(np.sum(want.astype(np.float64) > 0.6))
        assert c.density[b] == 1 - r / 30 and c.keep[b] == max(1, 30 - r)


def test_threshold_is_strict_and_exact():
    x = angles(0, 60, 180)  # max similarities 0.5, 0.5, cos 120 = -0.5
    s = np.float32(0.5)
    assert ref.correlation_compress(x, threshold=float(s), mode="topk").redundant.sum() == 0
    assert ref.correlation_compress(x, threshold=0.49, mode="topk").redundant.sum() == 2


def hand_case():
    """N = 6: tokens 0 and 1 are the same direction (both redundant), 2..5 distinct."""
    x = np.array([[1, 0, 0, 0, 0], [2, 0, 0, 0, 0], [0, 1, 0, 0, 0],
                  [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=np.float32)
    w = np.array([0.1, 0.5, 0.5, 0.2, 0.3, 0.05])
    return x, w


def test_topk_by_hand():
    x, w = hand_case()
    c = ref.correlation_compress(x, cls_attention=w, mode="topk")
    assert list(c.redundant[0]) == [True, True, False, False, False, False]
    assert c.density[0] == 1 - 2 / 6 and c.keep[0] == 4  # 1 - R / N, not (N - R) / N: they differ in the last bit
    assert c.indices[0].tolist() == [1, 2, 3, 4]  # 0.5, 0.5, 0.3, 0.2
    assert c.tokens[0].dtype == np.float32 and np.array_equal(c.tokens[0], x[[1, 2, 3, 4]])
    # equal weights: the lowest indices
    c = ref.correlation_compress(x, cls_attention=np.ones(6), mode="topk")
    assert c.indices[0].tolist() == [0, 1, 2, 3]


def test_merge_by_hand():
    x, w = hand_case()
    c = ref.correlation_compress(x, cls_attention=w, mode="topk", merge=True)
    # not kept: 0 (most similar kept token: 1) and 5 (similarity 0 to all kept: tie -> 1, the lowest)
    want = np.array([(w[1] * x[1] + w[0] * x[0] + w[5] * x[5]) / (w[1] + w[0] + w[5]), x[2], x[3], x[4]])
    assert c.tokens[0].dtype == np.float32
    assert np.allclose(c.tokens[0], want.astype(np.float32), rtol=0, atol=1e-7)
    # zero weights: kept 2, 4, 3 and then 0 (the lowest of the zeros); 1 and 5 merge into 0,
    # whose group has weight 0 in all: the plain mean
    w0 = w.copy()
    w0[[0, 1, 5]] = 0
    c = ref.correlation_compress(x, cls_attention=w0, mode="topk", merge=True)
    assert c.indices[0].tolist() == [0, 2, 3, 4]
    assert np.allclose(c.tokens[0][0], (x[0] + x[1] + x[5]) / 3, atol=1e-7)


def test_merge_zero_denominator_uses_the_plain_mean():
    x = np.array([[1, 0], [2, 0], [0, 1]], dtype=np.float64)  # 0 and 1 redundant
    w = np.array([0.0, 0.0, 1.0])
    c = ref.correlation_compress(x, cls_attention=w, mode="topk", merge=True, threshold=0.9)
    # k = 1: the top weight is token 2; tokens 0 and 1 have similarity 0 with it and merge into it
    assert c.indices[0].tolist() == [2] and c.tokens[0].dtype == np.float64
    assert np.allclose(c.tokens[0], [[0, 1]])
    c = ref.correlation_compress(x, cls_attention=np.array([0.0, 1.0, 0.0]), mode="topk", merge=True)
    assert c.indices[0].tolist() == [1]
    assert np.allclose(c.tokens[0], [(0 * x[0] + 1 * x[1] + 0 * x[2]) / 1.0])
    c = ref.correlation_compress(x, cls_attention=np.zeros(3), mode="topk", merge=True)
    assert c.indices[0].tolist() == [0] and np.allclose(c.tokens[0], [x.mean(axis=0)])


def test_outliers_mode_by_hand():
    x = np.eye(8)
    w = np.array([1, 1, 1, 1, 1, 1, 1, 10.0])
    c = ref.correlation_compress(x, cls_attention=w, mode="outliers")
    assert c.keep[0] == 1 and c.indices[0].tolist() == [7] and c.density[0] == 1
    c = ref.correlation_compress(x, cls_attention=w, mode="outliers", k_min=3)
    assert c.indices[0].tolist() == [0, 1, 7]


def test_cls_vector_gives_softmax_weights():
    rng = np.random.default_rng(6)
    k = rng.normal(size=(10, 4))
    cls = rng.normal(size=4)
    w = ref.cls_weights(cls, k)
    logits = [math.fsum(a * b for a, b in zip(cls, row)) / 2.0 for row in k]
    e = [math.exp(v - max(logits)) for v in logits]
    assert np.allclose(w, [v / sum(e) for v in e], rtol=1e-14, atol=0)
    x = rng.normal(size=(10, 6))
    c = ref.correlation_compress(x, cls=cls, keys=k, mode="topk", threshold=-1)
    assert c.indices[0].tolist() == [int(np.argmax(w))]  # everything redundant at -1: k = 1


# ----------------------------------------------------------------- ToMe

def test_tome_six_tokens_by_hand():
    # A = 0, 2, 4 at 0, 100, 200 degrees; B = 1, 3, 5 at 10, 95, 260 degrees
    x = (angles(0, 10, 100, 95, 200, 260) * np.array([[1], [2], [1], [3], [1], [1]])).astype(np.float32)
    out, sizes, source = ref.tome_merge(x, r=2)
    # a2 -> b3 (cos 5), a0 -> b1 (cos 10) merge; a4 (best cos 60) stays
    want = [x[4], (x[1] + x[0]) / 2, (x[3] + x[2]) / 2, x[5]]
    assert out.dtype == np.float32 and out.shape == (4, 2)
    assert np.allclose(out, want, atol=1e-6)
    assert sizes.tolist() == [1, 2, 2, 1]
    assert source.tolist() == [1, 1, 2, 2, 0, 3]
    # sizes weight the average
    s = np.array([1, 2, 3, 1, 1, 4.0])
    out, sizes, _ = ref.tome_merge(x, r=2, sizes=s)
    assert np.allclose(out[1], (2 * x[1] + 1 * x[0]) / 3, atol=1e-6) and sizes.tolist() == [1, 3, 4, 4]


def test_tome_cls_token_by_hand():
    x = angles(0, 10, 100, 95, 200, 260)
    out, sizes, source = ref.tome_merge(x, r=5, cls_token=True)  # r capped at (6 - 1) // 2 = 2
    assert out.shape == (4, 2)
    assert np.allclose(out, [x[0], x[1], (x[2] + x[3]) / 2, (x[4] + x[5]) / 2], atol=1e-7)
    assert source.tolist() == [0, 1, 2, 2, 3, 3]


def test_tome_ties_keep_the_lower_index():
    x = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    out, sizes, source = ref.tome_merge(x, r=1)
    # a0 and a2 both have node_max 1 (best b: 1, the lower of b1, b3); a0 comes first
    assert source.tolist() == [2, 2, 0, 3, 1, 4]


def tome_transcribed(x, r, size):
    """ToMe's bipartite_soft_matching + merge_wavg (tome/merge.py) transcribed op by op into
    NumPy: gather, argsort descending, scatter_reduce sum.  Valid without ties."""
    m = x / np.linalg.norm(x, axis=-1, keepdims=True)
    a, b = m[..., ::2, :], m[..., 1::2, :]
    scores = a @ np.swapaxes(b, -1, -2)
    node_max, node_idx = scores.max(-1), scores.argmax(-1)
    edge_idx = np.argsort(-node_max, axis=-1)
    unm_idx, src_idx = edge_idx[..., r:], edge_idx[..., :r]
    dst_idx = np.take_along_axis(node_idx, src_idx, -1)

    def merge(v):
        src, dst = v[..., ::2, :], v[..., 1::2, :].copy()
        unm = np.take_along_axis(src, unm_idx[..., None], -2)
        s = np.take_along_axis(src, src_idx[..., None], -2)
        for bi in range(v.shape[0]):
            np.add.at(dst[bi], dst_idx[bi], s[bi])
        return np.concatenate([unm, dst], axis=-2)

    xs = merge(x * size)
    sz = merge(size)
    return xs / sz, sz


def test_tome_matches_the_transcribed_official_code():
    rng = np.random.default_rng(7)
    for n, r in ((16, 5), (17, 8), (50, 12)):
        x = rng.normal(size=(3, n, 8))
        size = rng.integers(1, 4, size=(3, n, 1)).astype(np.float64)
        want, want_size = tome_transcribed(x, r, size)
        got, got_size, _ = ref.tome_merge(x, r, sizes=size[..., 0])
        assert got.dtype == np.float64
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12)
        assert np.array_equal(got_size, want_size[..., 0])


def test_tome_source_maps_tokens_to_rows():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 5))
    out, sizes, source = ref.tome_merge(x, r=6)
    for row in range(out.shape[0]):
        members = np.flatnonzero(source == row)
        assert len(members) == sizes[row]
        assert np.allclose(out[row], x[members].mean(axis=0), atol=1e-6)


# -------------------------------------------------------------- PruMerge

def test_prumerge_by_hand():
    # 8 tokens, two attention outliers: int(8 * 2 / 8) = 2 kept (+ the extra token)
    x = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1], [0.8, 0.3, 0], [0, 1, 1],
                  [0, 0, 2], [1, 0.05, 0]], dtype=np.float32)
    a = np.array([1, 2, 1, 1, 1, 1, 1, 10.0]) / 20
    # Q1 = 1/20, Q3 = 1.25/20, bound 1.625/20: tokens 1 (2/20) and 7 (10/20) are the outliers
    assert ref.outlier_count(a) == 2
    tokens, indices = ref.prumerge(x, a, neighbors=2)
    assert indices[0].tolist() == [7, 1]  # descending attention
    s = ref.similarity(x)
    nn7 = ref.top_indices(np.where(np.arange(8) == 7, -np.inf, s[7]), 2)
    nn1 = ref.top_indices(np.where(np.arange(8) == 1, -np.inf, s[1]), 2)
    assert sorted(nn7.tolist()) == [0, 1] and sorted(nn1.tolist()) == [0, 7]
    x64 = x.astype(np.float64)
    want = [x64[7] + a[0] * x64[0] + a[1] * x64[1],
            x64[1] + a[0] * x64[0] + a[7] * x64[7],
            sum(a[j] * x64[j] for j in range(7) if j != 1)]
    assert tokens[0].shape == (3, 3) and tokens[0].dtype == np.float32
    assert np.allclose(tokens[0], want, atol=1e-7)
    tokens, _ = ref.prumerge(x, a, neighbors=2, extra_token=False)
    assert tokens[0].shape == (2, 3)


def test_prumerge_keep_count_is_int_of_n_times_ratio():
    # 8 outliers of 49: 49 * (8 / 49) = 7.999999999999999, so the released code keeps 7
    a = np.concatenate([np.full(41, 1.0), np.full(8, 5.0)])
    assert ref.outlier_count(a) == 8 and 49 * (8 / 49) < 8
    assert ref.prumerge_keep_count(a) == 7
    assert ref.prumerge_keep_count(a, ratio=0.5) == 24
    assert ref.prumerge_keep_count(np.ones(10)) == 1  # no outlier: at least 1


def test_prumerge_neighbors_brute_force():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 24, 5))
    keys = rng.normal(size=(2, 24, 3))
    a = rng.random((2, 24))
    tokens, indices = ref.prumerge(x, a, keys=keys, ratio=0.25, neighbors=4)
    for b in range(2):
        assert indices[b].tolist() == sorted(range(24), key=lambda i: (-a[b, i], i))[:6]
        for row, i in enumerate(indices[b]):
            sims = sorted(((cosine_loop(keys[b, i], keys[b, j]), j) for j in range(24) if j != i),
                          key=lambda t: (-t[0], t[1]))[:4]
            want = x[b, i] + sum(a[b, j] * x[b, j] for _, j in sims)
            assert np.allclose(tokens[b][row], want, atol=1e-6)


# ------------------------------------------------------------- VisionZip

def test_visionzip_target_positions():
    assert ref.visionzip_targets(15, 4).tolist() == [0, 3, 6, 9]
    assert ref.visionzip_targets(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert ref.visionzip_targets(522, 10).tolist() == list(range(0, 520, 52))  # 576 - 54 in LLaVA
    x = np.random.default_rng(10).normal(size=(20, 4))
    att = np.zeros(20)
    att[[3, 7, 11, 15, 19]] = [5, 4, 3, 2, 1]
    out, dom, tgt = ref.visionzip(x, att, dominant=5, contextual=4)
    assert dom.tolist() == [3, 7, 11, 15, 19]
    # rest = 0 1 2 4 5 6 8 9 10 12 13 14 16 17 18; positions 0, 3, 6, 9
    assert tgt.tolist() == [0, 4, 8, 12]
    assert out.shape == (9, 4)


def test_visionzip_by_hand():
    x = np.arange(18, dtype=np.float32).reshape(6, 3)
    keys = np.array([[1, 0], [1, 0.1], [5, 5], [0, 1], [0.1, 1], [0, 0]], dtype=np.float32)
    att = np.array([0, 0, 9, 0, 0, 0.0])
    out, dom, tgt = ref.visionzip(x, att, keys=keys, dominant=1, contextual=2)
    # rest 0 1 3 4 5, step 2: targets 0 and 3; 1 -> 0, 4 -> 3, 5 (zero key, a tie) -> 0
    assert dom.tolist() == [2] and tgt.tolist() == [0, 3]
    want = [x[2], x[0] + (x[1] + x[5]) / 2, x[3] + x[4]]
    assert out.dtype == np.float32 and np.allclose(out, want)
    # a target nothing is assigned to stays as it is
    out, _, tgt = ref.visionzip(x, att, keys=keys, dominant=1, contextual=5)
    assert tgt.tolist() == [0, 1, 3, 4, 5] and np.array_equal(out[1:], x[[0, 1, 3, 4, 5]])


# ----------------------------------------------------------------- FastV

def test_fastv_by_hand():
    x = np.arange(20, dtype=np.float16).reshape(10, 2)
    att = np.array([0.1, 0.9, 0.3, 0.3, 0.3, 0.0, 0.8, 0.3, 0.2, 0.3])
    out, idx = ref.fastv_select(x, att)  # keep 10 - 5 = 5: 0.9, 0.8, then 0.3 at 2 and 3
    assert idx.tolist() == [1, 2, 3, 4, 6]
    assert out.dtype == np.float16 and np.array_equal(out, x[[1, 2, 3, 4, 6]])
    _, idx = ref.fastv_select(x, att, keep=2)
    assert idx.tolist() == [1, 6]
    _, idx = ref.fastv_select(np.stack([x, x]), np.stack([att, att[::-1]]), ratio=0.75)
    assert idx.tolist() == [[1, 2, 6], [0, 3, 8]]  # keep 10 - int(7.5) = 3


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("call, word", [
    (lambda: ref.correlation_compress(np.ones((1, 4))), "N >= 2"),
    (lambda: ref.correlation_compress(np.ones((3, 4)), keys=np.ones((2, 4))), "keys"),
    (lambda: ref.correlation_compress(np.ones((3, 4)), cls_attention=np.ones(4)), "cls_attention"),
    (lambda: ref.correlation_compress(np.ones((3, 4)), cls=np.ones(3)), "cls"),
    (lambda: ref.correlation_compress(np.ones((3, 4)), threshold=1.5), "threshold"),
    (lambda: ref.correlation_compress(np.full((3, 4), np.nan)), "tokens"),
    (lambda: ref.correlation_compress(np.ones((3, 4)), cls_attention=-np.ones(3)), "cls_attention"),
    (lambda: ref.correlation_compress(np.ones((3, 4)), mode="random"), "mode"),
    (lambda: ref.tome_merge(np.ones((4, 2)), r=-1), "r"),
    (lambda: ref.fastv_select(np.ones((4, 2)), np.ones(4), keep=5), "keep"),
    (lambda: ref.fastv_select(np.ones((4, 2)), np.ones(4), keep=0), "keep"),
    (lambda: ref.visionzip(np.ones((4, 2)), np.ones(4), dominant=5, contextual=0), "dominant"),
    (lambda: ref.visionzip(np.ones((4, 2)), np.ones(4), dominant=2, contextual=3), "contextual"),
    (lambda: ref.prumerge(np.ones((4, 2)), np.ones(4), keys=np.ones((4, 2, 1))), "keys"),
])
def test_errors_name_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()

"""ccomp.tokens on the GPU (kernels/tokens.cu via ccomp._tokens_gpu).

Everywhere: a NumPy model of the GPU algorithm (fp16 screen, threshold t - 2 delta, duplicate groups
dropped past rank k, exact recheck) gives the CPU core's indices and values on random, page-like and
float16/float64 keys, and its screen stays within the bound delta.
Without a GPU: every GPU entry (most_similar, correlation_compress and the other methods on CUDA
arrays) raises a clear RuntimeError before touching the data, and the raw bindings reject bad
arguments with ValueError (never a crash).
With a GPU (skipped otherwise): the top-k equals the CPU core bit for bit on fresh random data, on
page-like near-tie data full of identical tokens, in float16/float32/float64, on strided views, for
subsets of rows and candidates, through the overflow fallback and for k > 64 (CPU fallback);
correlation_compress gives the CPU's results; NaN keys give the CPU's message.
"""
import numpy as np
import pytest

from ccomp import _tokens_gpu, cuda, tokens

from gpu_suite import gpu, no_gpu, pick
from reference import tokens_ref as ref

built = pytest.mark.skipif(not cuda.built(), reason="ccomp was built without CUDA")


class FakeCudaTensor:
    """Looks like a CUDA tensor (DLPack device kDLCUDA) but must never be touched without a GPU."""

    shape = (2, 64, 16)
    dtype = np.float32

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):  # pragma: no cover - reaching it would be the bug
        raise AssertionError("the tensor was exported although no GPU is usable")


def random_tokens(B, N, D, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((B, N, D)).astype(dtype)


def page_like(B, N, D, seed=0, near=0.1):
    """Blank runs (exact copies), near-copies (1e-4 noise) and distinct tokens, as in test_tokens."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, N, D)).astype(np.float32)
    blank = rng.standard_normal(D).astype(np.float32)
    for b in range(B):
        m = rng.random(N) < (b + 1) / (B + 1)
        x[b, m] = blank
        nm = rng.random(N) < near
        x[b, nm] = blank + (1e-4 * rng.standard_normal((int(nm.sum()), D))).astype(np.float32)
    return x


def cpu_keys(x):
    return np.ascontiguousarray(x.astype(np.float32) if x.dtype == np.float16 else x)


# ------------------------------------------------------------------ the algorithm, in NumPy


def model_topk(x, rows, cols, exclude_self, k, delta, cols_distinct=True):
    """The GPU algorithm on the host; also returns the largest |screen - exact| seen."""
    kk = cpu_keys(x).astype(np.float64)
    out_i, out_v, worst = [], [], 0.0
    for b in range(kk.shape[0]):
        xb = kk[b]
        inv = 1.0 / np.maximum(np.sqrt((xb * xb).sum(axis=1)), 1e-12)
        kh = (xb * inv[:, None]).astype(np.float32).astype(np.float16).astype(np.float32)
        exact = ref.similarity(x[b])
        r, c = np.asarray(rows[b]), np.asarray(cols[b])
        screen = kh[r] @ kh[c].T
        valid = np.ones((len(r), len(c)), bool)
        if exclude_self:
            valid &= r[:, None] != c[None, :]
        ex = exact[np.ix_(r, c)]
        if valid.any():
            worst = max(worst, float(np.abs(screen - ex)[valid].max()))
        # group rank: candidates of the same bit-identical key with a lower token index
        raw = cpu_keys(x)[b]
        _, group = np.unique(raw.view(np.uint8).reshape(raw.shape[0], -1), axis=0, return_inverse=True)
        group = group.reshape(-1)
        rank = np.array([np.sum((group[c] == group[t]) & (c < t)) for t in c])
        limit = k + int(bool(exclude_self)) if cols_distinct else 1 << 30
        ii = np.full((len(r), k), -1, np.int64)
        vv = np.full((len(r), k), -np.inf, np.float32)
        for i in range(len(r)):
            s = np.where(valid[i], screen[i], -np.inf)
            t = np.sort(s)[::-1][k - 1] if len(s) >= k else -np.inf
            lo = np.float64(t) - 2 * delta
            cand = np.flatnonzero(valid[i] & (s >= lo) & (rank < limit))
            order = np.lexsort((c[cand], -ex[i, cand].astype(np.float64)))[:k]
            ii[i, :len(order)] = c[cand[order]]
            vv[i, :len(order)] = ex[i, cand[order]]
        out_i.append(ii)
        out_v.append(vv)
    return out_i, out_v, worst


MODEL_CASES = {
    "random": lambda: random_tokens(2, 150, 40),
    "page-like": lambda: page_like(3, 160, 24),
    "float16": lambda: page_like(2, 120, 20).astype(np.float16),
    "float64": lambda: random_tokens(2, 100, 33, dtype=np.float64),
    "wide": lambda: random_tokens(1, 80, 700),
}


@built
@pytest.mark.parametrize("name", list(MODEL_CASES))
@pytest.mark.parametrize("k", [1, 3, 17])
def test_gpu_algorithm_model_equals_cpu(name, k):
    x = MODEL_CASES[name]()
    B, N, D = x.shape
    delta = cuda._cuda.tokens_delta(D)
    allr = [np.arange(N)] * B
    rng = np.random.default_rng(k)
    sub_r = [np.sort(rng.choice(N, N // 3, replace=False)) for _ in range(B)]
    sub_c = [rng.permutation(N)[: N // 2] for _ in range(B)]
    for rows, cols, excl in ((allr, allr, True), (sub_r, sub_c, False), (sub_r, sub_c, True)):
        mi, mv, worst = model_topk(x, rows, cols, excl, k, delta)
        ci, cv = tokens._topk(cpu_keys(x), rows, cols, excl, k, 2)
        assert worst <= delta, (worst, delta)
        for b in range(B):
            np.testing.assert_array_equal(mi[b], ci[b])
            np.testing.assert_array_equal(mv[b].view(np.uint32), cv[b].view(np.uint32))


@built
def test_delta_bounds_the_cpu_bound_and_grows_with_d():
    d = [cuda._cuda.tokens_delta(D) for D in (1, 64, 1024, 4096)]
    assert d == sorted(d)
    assert all(v > 1.25 * (D + 8) * 2.0 ** -24 for v, D in zip(d, (1, 64, 1024, 4096)))
    assert d[2] < 3e-3  # a window that keeps the float64 recheck small at D = 1024


# ------------------------------------------------------------------ without a GPU


@no_gpu
@pytest.mark.parametrize("call", [
    lambda: tokens.most_similar(FakeCudaTensor(), k=2),
    lambda: tokens.correlation_compress(FakeCudaTensor()),
    lambda: tokens.correlation_compress(random_tokens(2, 64, 16), keys=FakeCudaTensor()),
    lambda: tokens.correlation_compress(random_tokens(2, 64, 16), cls_attention=FakeCudaTensor()),
    lambda: tokens.tome_merge(FakeCudaTensor(), 4),
    lambda: tokens.tome_merge(random_tokens(2, 64, 16), 4, metric=FakeCudaTensor()),
    lambda: tokens.prumerge(FakeCudaTensor(), np.ones((2, 64))),
    lambda: tokens.visionzip(FakeCudaTensor(), np.ones((2, 64)), dominant=8, contextual=4),
    lambda: tokens.fastv_select(FakeCudaTensor(), np.ones((2, 64))),
    lambda: _tokens_gpu.most_similar(np.ones((2, 8, 4), np.float32)),
    lambda: _tokens_gpu.DeviceKeys(FakeCudaTensor()),
], ids=["most_similar", "correlation_compress", "cc-keys", "cc-attention", "tome", "tome-metric", "prumerge",
        "visionzip", "fastv", "gpu-module-numpy", "device-keys"])
def test_cuda_inputs_raise_runtime_error_without_gpu(call):
    with pytest.raises(RuntimeError, match="needs a GPU"):
        call()


def _raw_args(**change):
    """Arguments of the raw tokens_topk binding: 2 sub-images of 8 tokens, 4 channels, k = 2."""
    B, N = 2, 8
    rows = np.tile(np.arange(N, dtype=np.int64), B)
    off = np.array([0, N, 2 * N], dtype=np.uint64)
    a = dict(keys=1 << 20, dtype=0, B=B, N=N, D=4, sb=N * 4, sn=4, rows=rows, ro=off, cols=rows.copy(),
             co=off.copy(), excl=True, k=2, distinct=True, oi=1 << 21, ov=1 << 22, ws=1 << 24, ws_bytes=1 << 22,
             stream=0, check=True)
    a.update(change)
    return tuple(a.values())


@built
@no_gpu
def test_raw_tokens_binding_fails_cleanly_without_gpu():
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda._cuda.tokens_topk(*_raw_args())


@built
def test_raw_tokens_binding_rejects_bad_arguments_before_the_gpu():
    ext = cuda._cuda
    off = np.array([0, 8, 16], dtype=np.uint64)
    bad_rows = np.tile(np.arange(8, dtype=np.int64), 2)
    bad_rows[5] = 8
    cases = [({"k": 0}, "sizes must be positive"), ({"k": 65}, r"k in \[1, 64\]"), ({"dtype": 7}, "float32"),
             ({"rows": bad_rows}, "row token 8"), ({"cols": -bad_rows}, "candidate token"),
             ({"ro": np.array([0, 9, 16], np.uint64), "rows": np.zeros(16, np.int64)}, None),
             ({"ro": np.array([0, 8], np.uint64)}, "offsets must be 3"), ({"rows": np.zeros(5, np.int64)}, "bytes"),
             ({"ws_bytes": 64}, "workspace holds 64 bytes"), ({"ws": (1 << 24) + 8}, "misaligned"),
             ({"sn": 2}, "overlap"), ({"keys": 0}, "null"), ({"co": np.array([1, 8, 16], np.uint64)}, "start at 0"),
             ({"B": 0}, "positive")]
    for change, match in cases:
        if match is None:  # decreasing offsets never reach the GPU
            with pytest.raises(ValueError):
                ext.tokens_topk(*_raw_args(ro=np.array([0, 9, 8], np.uint64), rows=np.zeros(8, np.int64)))
            continue
        with pytest.raises(ValueError, match=match):
            ext.tokens_topk(*_raw_args(**change))
    n = ext.tokens_workspace(2, 8, 4, off, off, 2)
    assert 0 < n < 1 << 20
    with pytest.raises(ValueError, match="k = 65"):
        ext.tokens_workspace(2, 8, 4, off, off, 65)
    with pytest.raises(ValueError, match="bytes"):
        ext.tokens_workspace(2, 8, 4, off[:2], off, 2)


@built
def test_workspace_holds_no_n_by_n_buffer():
    """Beyond the fp16 keys, the workspace grows linearly with N (per-row lists), never as N x N."""
    ext = cuda._cuda

    def extra(B, N, D, k):
        off = np.arange(B + 1, dtype=np.uint64) * N
        return ext.tokens_workspace(B, N, D, off, off, k) - B * N * D * 2

    for k in (1, 8, 32, 64):
        small, large = extra(2, 1024, 256, k), extra(2, 8192, 256, k)
        assert large < 9 * small, (k, small, large)  # 8x the tokens: about 8x the bytes
        assert large < 2 * 8192 * 8192, (k, large)    # under 1 byte per pair (float32 N x N: 4)
    assert extra(9, 1024, 1024, 1) < 9 * 1024 * 1024


# ------------------------------------------------------------------ with a GPU


def _device_kinds():
    kinds = ["ccomp"]
    try:
        import torch

        if torch.cuda.is_available():
            kinds.append("torch")
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            kinds.append("cupy")
    except Exception:
        pass
    return kinds


def to_dev(x, kind):
    if kind == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).cuda()
    if kind == "cupy":
        import cupy

        return cupy.asarray(x)
    from ccomp._ac_gpu import to_device

    return to_device(x)


def host(a):
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return a.get()


def assert_same(gi, gv, ci, cv, what):
    gi, gv = host(gi), host(gv)
    assert gi.shape == ci.shape, what
    bad = np.argwhere((gi != ci) | (gv.view(np.uint32) != cv.view(np.uint32)))
    assert bad.size == 0, f"{what}: {len(bad)} differences, first at {bad[0].tolist()}: gpu {gi[tuple(bad[0])]} " \
                          f"{gv[tuple(bad[0])]} cpu {ci[tuple(bad[0])]} {cv[tuple(bad[0])]}"


# (B, N, D) per case: several 64-row screening blocks and 64-candidate tiles with a partial last one,
# channels in whole and partial chunks of 32; the small shapes keep that
GPU_CASES = {
    "random": lambda s: random_tokens(*pick((3, 300, 64), (2, 100, 64)), seed=s),
    "page-like": lambda s: page_like(*pick((4, 512, 48), (3, 130, 48)), seed=s),
    "page-like-dense-near": lambda s: page_like(*pick((2, 400, 32), (2, 100, 32)), seed=s, near=0.5),
    "float16": lambda s: page_like(*pick((2, 256, 40), (2, 100, 40)), seed=s).astype(np.float16),
    "float64": lambda s: random_tokens(*pick((2, 200, 33), (2, 100, 33)), seed=s, dtype=np.float64),
    "odd-sizes": lambda s: random_tokens(3, 77, 5, seed=s),
    "wide": lambda s: random_tokens(*pick((2, 130, 1030), (1, 70, 1030)), seed=s),
}


@gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
@pytest.mark.parametrize("k", [1, 4, 64])
def test_most_similar_equals_cpu(name, k):
    for seed in pick((0, 1), (0,)):
        x = GPU_CASES[name](seed)
        k_ = min(k, x.shape[1] - 1)
        ci, cv = tokens.most_similar(cpu_keys(x), k=k_, threads=2)
        for kind in _device_kinds():
            gi, gv = tokens.most_similar(to_dev(x, kind), k=k_)
            assert_same(gi, gv, ci, cv, f"{name} k={k_} seed={seed} {kind}")


@gpu
def test_subsets_and_overflow_and_large_k():
    x = page_like(*pick((3, 600, 24), (1, 300, 24)), seed=5, near=0.6)
    B, N = x.shape[:2]
    rng = np.random.default_rng(0)
    dk = _tokens_gpu.DeviceKeys(to_dev(x, "ccomp"))
    cases = [([np.arange(N)] * B, [np.arange(N)] * B, True, 1),
             ([np.sort(rng.choice(N, N // 6, replace=False)) for _ in range(B)],
              [rng.permutation(N)[:N // 2] for _ in range(B)], False, 5),
             ([np.arange(0, N, 2)] * B, [np.arange(1, N, 2)] * B, False, 1),
             ([np.arange(N)] * B, [np.concatenate([np.arange(N), np.arange(10)])] * B, True, 3),  # repeated tokens
             ([np.arange(N)] * B, [np.zeros(0, np.int64)] * B, True, 2)]  # no candidates
    overflowed = 0
    for rows, cols, excl, k in cases:
        gi, gv = _tokens_gpu.topk(dk, rows, cols, excl, k)
        overflowed += _tokens_gpu.last_stats.get("overflow_rows", 0)
        ci, cv = tokens._topk(cpu_keys(x), rows, cols, excl, k, 2)
        for b in range(B):
            assert_same(gi[b], gv[b], ci[b], cv[b], f"subset case k={k} b={b}")
    assert overflowed > 0  # the near-copies overflow the lists: the exact fallback ran
    gi, gv = tokens.most_similar(to_dev(x, "ccomp"), k=100)  # k > 64: CPU fallback
    ci, cv = tokens.most_similar(cpu_keys(x), k=100)
    assert_same(gi, gv, ci, cv, "k=100")


@gpu
def test_strided_view_and_2d():
    from ccomp._ac_gpu import to_device

    big = random_tokens(2, 130, 48, seed=3)
    dev = to_device(big)

    class View:  # tokens 0..127 of each sub-image, first 40 channels: token stride 48
        @property
        def __cuda_array_interface__(self):
            return {"shape": (2, 128, 40), "typestr": "<f4", "data": (dev.ptr, True), "version": 3,
                    "strides": (130 * 48 * 4, 48 * 4, 4), "stream": None}

    gi, gv = tokens.most_similar(View(), k=3)
    ci, cv = tokens.most_similar(np.ascontiguousarray(big[:, :128, :40]), k=3)
    assert_same(gi, gv, ci, cv, "strided")
    gi, gv = tokens.most_similar(to_device(big[1]), k=2)
    ci, cv = tokens.most_similar(big[1], k=2)
    assert_same(gi, gv, ci, cv, "2-D")


@gpu
@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("mode", ["sample", "topk"])
def test_correlation_compress_equals_cpu(merge, mode):
    x = page_like(*pick((3, 256, 32), (3, 130, 32)), seed=9)
    a = np.random.default_rng(2).gamma(0.3, size=x.shape[:2])
    want = tokens.correlation_compress(x, cls_attention=a, threshold=0.9, mode=mode, merge=merge, seed=4)
    for kind in _device_kinds():
        got = tokens.correlation_compress(to_dev(x, kind), cls_attention=a, threshold=0.9, mode=mode, merge=merge,
                                          seed=4)
        np.testing.assert_array_equal(got.max_similarity.view(np.uint32), want.max_similarity.view(np.uint32))
        np.testing.assert_array_equal(got.keep, want.keep)
        for b in range(3):
            np.testing.assert_array_equal(got.indices[b], want.indices[b])
            np.testing.assert_array_equal(host(got.tokens[b]), want.tokens[b])


@gpu
def test_other_methods_with_cuda_tokens_equal_cpu():
    x = page_like(2, pick(200, 120), 16, seed=11)
    a = np.random.default_rng(3).gamma(0.3, size=x.shape[:2])
    d = to_dev(x, "ccomp")
    for got, want in ((tokens.tome_merge(d, 50), tokens.tome_merge(x, 50)),
                      (tokens.visionzip(d, a, dominant=20, contextual=8), tokens.visionzip(x, a, dominant=20,
                                                                                           contextual=8))):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    gt, gi = tokens.prumerge(d, a, neighbors=8)
    wt, wi = tokens.prumerge(x, a, neighbors=8)
    for b in range(2):
        np.testing.assert_array_equal(gi[b], wi[b])
        np.testing.assert_array_equal(gt[b], wt[b])


@gpu
def test_nan_keys_give_the_cpu_message():
    x = random_tokens(2, 64, 8)
    x[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match=r"keys has a NaN or infinite value at index \(1, 3, 2\)"):
        tokens.most_similar(to_dev(x, "ccomp"))
    with pytest.raises(ValueError, match=r"tokens has a NaN or infinite value at index \(1, 3, 2\)"):
        tokens.correlation_compress(to_dev(x, "ccomp"))
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        tokens.most_similar(to_dev(np.ones((2, 8, 4), np.int32), "ccomp"))

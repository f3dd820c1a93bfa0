"""ccomp.ac on the GPU (kernels/ac.cu via ccomp._ac_gpu).

Without a GPU: every GPU function raises a clear RuntimeError (never crashes).
With a GPU: (cum, freq) lookups and symbol searches are bit-identical to the CPU
reference (ccomp._core.ac_lookup / ac_find), including edge cases; these tests
are skipped when ccomp.cuda.is_available() is False.
"""
import numpy as np
import pytest

import ccomp
from ccomp import _ac_gpu, cuda
from ccomp import _core

from gpu_suite import gpu, no_gpu, pick

RULES = ("constriction", "nacrith")


class FakeCudaTensor:
    """Looks like a CUDA tensor (DLPack device kDLCUDA) but must never be touched without a GPU."""

    shape = (2, 8)

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):  # pragma: no cover - reaching it would be the bug
        raise AssertionError("the tensor was exported although no GPU is usable")


# ------------------------------------------------------------------ without a GPU


@no_gpu
@pytest.mark.parametrize("call", [
    lambda: _ac_gpu.lookup(np.ones((2, 8), np.float32), np.zeros(2, np.int64)),
    lambda: _ac_gpu.lookup(FakeCudaTensor(), np.zeros(2, np.int64), 16, "nacrith", True, 0.7),
    lambda: _ac_gpu.scan(np.ones((2, 8))),
    lambda: _ac_gpu.find(np.ones(8), 5),
    lambda: _ac_gpu.to_device(np.ones(8)),
    lambda: ccomp.ac.lookup(np.zeros(2, np.int64), FakeCudaTensor()),
], ids=["lookup", "lookup-fake-cuda", "scan", "find", "to_device", "ac.lookup-fake-cuda"])
def test_gpu_functions_raise_runtime_error_without_gpu(call):
    with pytest.raises(RuntimeError, match="needs a GPU"):
        call()


@no_gpu
def test_raw_bindings_fail_cleanly_without_gpu():
    if not cuda.built():
        pytest.skip("ccomp was built without CUDA")
    ext = cuda._cuda
    for call in (lambda: ext.ac_lookup(1 << 20, 0, 2, 8, 8, 0, 24, False, 1.0, np.zeros(2, np.int64)),
                 lambda: ext.ac_scan(1 << 20, 1, 2, 8, 8, 1, 24, True, 1.0),
                 lambda: ext.to_host(1 << 20, 16),
                 lambda: ext.upload(b"abcd"),
                 lambda: ext.synchronize()):
        with pytest.raises(RuntimeError, match="CUDA"):
            call()


def test_raw_bindings_reject_bad_arguments_before_the_gpu():
    if not cuda.built():
        pytest.skip("ccomp was built without CUDA")
    ext = cuda._cuda
    with pytest.raises(ValueError, match="precision"):
        ext.ac_lookup(1 << 20, 0, 2, 8, 8, 0, 40, False, 1.0, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="symbol"):
        ext.ac_lookup(1 << 20, 0, 2, 8, 8, 0, 24, False, 1.0, np.array([0, 8], np.int64))
    with pytest.raises(ValueError, match="bytes"):
        ext.ac_lookup(1 << 20, 0, 2, 8, 8, 0, 24, False, 1.0, np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        ext.ac_lookup(0, 0, 2, 8, 8, 0, 24, False, 1.0, np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="DLPack"):
        ext.dlpack_info(object())
    with pytest.raises(ValueError):
        ext.ac_find(object(), b"", b"")


def test_parameters_are_checked_before_the_gpu():
    rows = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="rule"):
        _ac_gpu.lookup(rows, [0, 1], 24, "zipf")
    with pytest.raises(ValueError, match="precision"):
        _ac_gpu.lookup(rows, [0, 1], 30)
    with pytest.raises(ValueError, match="temperature"):
        _ac_gpu.lookup(rows, [0, 1], 24, "constriction", False, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        _ac_gpu.scan(rows, 24, "nacrith", True, float("nan"))
    with pytest.raises(ValueError, match="target"):
        _ac_gpu.find(rows[0], 1 << 24)


# ------------------------------------------------------------------ data


def zipf_logits(rng, T, V, dtype, alpha=1.1, noise=1.0):
    ranks = np.stack([rng.permutation(V) for _ in range(T)]) + 1
    return (-alpha * np.log(ranks) + noise * rng.standard_normal((T, V))).astype(dtype)


def softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cases(rng, dtype):
    """(name, rows, logits) edge cases and random rows."""
    out = []
    for V in (2, 3, 255, 256, 257, 1000, 4099):
        lg = zipf_logits(rng, 5, V, dtype)
        out.append((f"logits-V{V}", lg, True))
        out.append((f"probs-V{V}", softmax(lg).astype(dtype), False))
    lg = zipf_logits(rng, 6, 700, dtype)
    lg[1, ::3] = -np.inf  # masked logits (top-k / grammar constraints)
    lg[2, 1:] = -np.inf  # a single symbol left
    lg[3, :-1] = -np.inf
    out.append(("logits-minus-inf", lg, True))
    p = softmax(zipf_logits(rng, 6, 700, dtype)).astype(dtype)
    p[1, 100:400] = 0  # zero probabilities
    p[2, :] = 0
    p[2, 699] = 1
    p[3, 0] = 0
    p[4, :] = 1.0 / 7  # unnormalised weights, ties for argmax
    out.append(("probs-zeros", p, False))
    return out


def cpu_lookup(rows, sym, P, rule, logits, temperature=1.0):
    return _core.ac_lookup(np.ascontiguousarray(rows), np.asarray(sym, np.int64), P, _ac_gpu.RULES[rule], logits,
                           temperature, 2)


def cpu_find(row, target, P, rule, logits, temperature=1.0):
    return tuple(int(x) for x in _core.ac_find(np.ascontiguousarray(row), int(target), P, _ac_gpu.RULES[rule],
                                               logits, temperature))


# ------------------------------------------------------------------ with a GPU


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES)
def test_lookup_matches_cpu_bit_for_bit(dtype, rule):
    rng = np.random.default_rng(7)
    for name, rows, logits in cases(rng, dtype):
        T, V = rows.shape
        for P in (16, 24, 28):
            if V >= (1 << P) - 1:
                continue
            temps = (1.0, 0.7) if logits else (1.0,)
            for temp in temps:
                for sym in (rng.integers(0, V, T), np.zeros(T, np.int64), np.full(T, V - 1)):
                    try:
                        want = cpu_lookup(rows, sym, P, rule, logits, temp)
                    except ValueError as exc:
                        with pytest.raises(ValueError) as got:
                            _ac_gpu.lookup(rows, sym, P, rule, logits, temp)
                        assert str(got.value) == str(exc), (name, P)
                        continue
                    got = _ac_gpu.lookup(rows, sym, P, rule, logits, temp)
                    assert got[0].dtype == np.uint32 and got[1].dtype == np.uint32
                    np.testing.assert_array_equal(got[0], want[0], err_msg=f"cum {name} P={P} T={temp}")
                    np.testing.assert_array_equal(got[1], want[1], err_msg=f"freq {name} P={P} T={temp}")


@gpu
@pytest.mark.parametrize("rule", RULES)
def test_find_matches_cpu(rule):
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        for name, rows, logits in cases(rng, dtype):
            T, V = rows.shape
            P = 20 if V < (1 << 20) - 1 else 24
            try:
                handle = _ac_gpu.scan(rows, P, rule, logits)
            except ValueError:
                with pytest.raises(ValueError):
                    cpu_lookup(rows, np.zeros(T, np.int64), P, rule, logits)
                continue
            ts = rng.integers(0, T, 40)
            targets = rng.integers(0, 1 << P, 40)
            targets[:3] = [0, (1 << P) - 1, 1 << (P - 1)]
            sym, cum, freq = handle.find_many(ts, targets)
            for i, (t, tg) in enumerate(zip(ts, targets)):
                want = cpu_find(rows[t], tg, P, rule, logits)
                assert (int(sym[i]), int(cum[i]), int(freq[i])) == want, (name, t, tg)
                assert cum[i] <= tg < cum[i] + freq[i]
            # targets at every interval boundary of one row
            cdf = _core.ac_cdf(np.ascontiguousarray(rows[0]), P, _ac_gpu.RULES[rule], logits, 1.0).astype(np.int64)
            for s in list(rng.integers(0, V, 20)) + [0, V - 1]:
                pair = (int(s), int(cdf[s]), int(cdf[s + 1] - cdf[s]))
                for tg in (cdf[s], cdf[s + 1] - 1):
                    assert handle.find(0, int(tg)) == pair
            assert _ac_gpu.find(rows[0], int(targets[0]), P, rule, logits) == cpu_find(rows[0], targets[0], P, rule,
                                                                                         logits)
            handle.close()
            with pytest.raises(ValueError, match="closed"):
                handle.find(0, 0)


@gpu
def test_errors_name_the_row_like_the_cpu():
    rng = np.random.default_rng(3)
    p = softmax(zipf_logits(rng, 4, 300, np.float32)).astype(np.float32)
    sym = np.zeros(4, np.int64)
    for mutate in (lambda a: a.__setitem__((2, 17), np.nan), lambda a: a.__setitem__((2, 5), -0.25),
                   lambda a: a.__setitem__(2, 0.0), lambda a: a.__setitem__((2, 9), np.inf)):
        bad = p.copy()
        mutate(bad)
        bad[3, 4] = np.nan  # a later bad row must not be the one reported
        with pytest.raises(ValueError) as want:
            cpu_lookup(bad, sym, 24, "constriction", False)
        for fn in (lambda: _ac_gpu.lookup(bad, sym, 24, "constriction"),
                   lambda: _ac_gpu.scan(bad, 24, "constriction")):
            with pytest.raises(ValueError) as got:
                fn()
            assert str(got.value) == str(want.value)
            assert "[2" in str(got.value)
    lg = zipf_logits(rng, 3, 300, np.float64)
    lg[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"logits\[1, 7\]"):
        _ac_gpu.lookup(lg, np.zeros(3, np.int64), 24, "nacrith", True)
    lg[1, :] = -np.inf
    with pytest.raises(ValueError, match=r"logits\[1\]"):
        _ac_gpu.lookup(lg, np.zeros(3, np.int64), 24, "nacrith", True)
    with pytest.raises(ValueError, match=r"symbols\[1\] = 300"):
        _ac_gpu.lookup(p, np.array([0, 300, 0, 0]), 24)
    with pytest.raises(ValueError, match=r"symbols\[0\] = -1"):
        _ac_gpu.lookup(p, np.array([-1, 0, 0, 0]), 24)
    with pytest.raises(TypeError, match="float16"):
        _ac_gpu.lookup(p.astype(np.float16), sym, 24)


class StridedRows:
    """A [T, V] view with a row stride > V of a DeviceArray, through __cuda_array_interface__."""

    def __init__(self, dev, T, V, stride):
        self.dev, self.T, self.V, self.stride = dev, T, V, stride

    @property
    def __cuda_array_interface__(self):
        item = self.dev.dtype.itemsize
        return {"shape": (self.T, self.V), "typestr": self.dev.dtype.str, "data": (self.dev.ptr, True),
                "version": 3, "strides": (self.stride * item, item), "stream": None}


@gpu
def test_device_arrays_row_stride_and_device_symbols():
    rng = np.random.default_rng(5)
    wide = zipf_logits(rng, 6, 1100, np.float32)
    rows = wide[:, :1000]
    sym = rng.integers(0, 1000, 6)
    want = cpu_lookup(rows, sym, 24, "constriction", True)
    dev = _ac_gpu.to_device(wide)
    np.testing.assert_array_equal(dev.get(), wide)
    view = StridedRows(dev, 6, 1000, 1100)
    got = _ac_gpu.lookup(view, _ac_gpu.to_device(sym), 24, "constriction", True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    handle = _ac_gpu.scan(view, 24, "constriction", True)
    for t in range(6):
        assert handle.find(t, 12345) == cpu_find(rows[t], 12345, 24, "constriction", True)
    bad = StridedRows(dev, 6, 1000, 500)
    with pytest.raises(ValueError, match="overlap"):
        _ac_gpu.lookup(bad, sym, 24)


@gpu
def test_torch_tensors():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    rng = np.random.default_rng(9)
    lg = zipf_logits(rng, 33, 5000, np.float32)
    sym = rng.integers(0, 5000, 33)
    x = torch.tensor(lg, device="cuda", requires_grad=True)
    for rule in RULES:
        want = cpu_lookup(lg, sym, 24, rule, True, 0.8)
        for s in (sym, torch.tensor(sym, device="cuda"), torch.tensor(sym, device="cuda", dtype=torch.int32)):
            got = _ac_gpu.lookup(x, s, 24, rule, True, 0.8)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        got = ccomp.ac.lookup(torch.tensor(sym, device="cuda"), x, 24, rule, True, 0.8)
        assert all(g.device == x.device and g.dtype == torch.int32 for g in got)
        np.testing.assert_array_equal(got[0].cpu().numpy(), want[0].astype(np.int32))
        np.testing.assert_array_equal(got[1].cpu().numpy(), want[1].astype(np.int32))
        # a non-contiguous view: every other row
        want = cpu_lookup(lg[::2], sym[::2], 24, rule, True)
        got = _ac_gpu.lookup(x[::2], sym[::2], 24, rule, True)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert _ac_gpu.find(x[3], 777, 24, rule, True) == cpu_find(lg[3], 777, 24, rule, True)
    with pytest.raises(ValueError, match="contiguous"):
        _ac_gpu.lookup(x.t(), np.zeros(5000, np.int64), 24)

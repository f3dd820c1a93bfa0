"""ccomp.kv from several Python threads: shared tensors and caches read at once give the single-thread
results, and arrays rewritten by another thread while a call runs without the GIL never crash it (index
arrays are snapshotted: the call gives the exact result or raises CorruptStreamError)."""
import threading
import time

import numpy as np
import pytest

from tests.concurrency import Rewriter

import ccomp
import ccomp.kv as kv

RNG = np.random.default_rng(7)
SECONDS = 0.8


def normal(shape):
    return RNG.standard_normal(shape).astype(np.float32)


def run_threads(fns):
    errors = []

    def wrap(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(f,)) for f in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("method", ["groupwise", "gear", "bitmap_sparse", "turbo", "q8_0"])
def test_shared_tensor_from_many_threads(method):
    x = normal((4, 256, 128))
    k = kv.quantize(x, method, rank=2) if method == "gear" else kv.quantize(x, method)
    q1, q8 = normal((8, 1, 128)), normal((8, 8, 128))
    want = (kv.attention(q1, k, k, threads=1), kv.attention(q8, k, k, threads=1), k.dequantize(threads=1))

    def worker():
        end = time.monotonic() + SECONDS / 2
        while time.monotonic() < end:
            assert np.array_equal(kv.attention(q1, k, k, threads=2), want[0])
            assert np.array_equal(kv.attention(q8, k, k, threads=1), want[1])
            assert np.array_equal(k.dequantize(threads=2), want[2])

    run_threads([worker] * 4)


def test_shared_kivi_cache_from_many_threads():
    c = kv.KIVICache(bits=2, group=32, residual=64)
    c.append(normal((4, 300, 64)), normal((4, 300, 64)))
    q = normal((8, 4, 64))
    want = kv.attention(q, c.k_cache, c.v_cache, threads=1)

    def worker():
        end = time.monotonic() + SECONDS / 2
        while time.monotonic() < end:
            assert np.array_equal(kv.attention(q, c.k_cache, c.v_cache, threads=2), want)

    run_threads([worker] * 4)


@pytest.mark.parametrize("method,field,garbage", [("bitmap_sparse", "offsets", 0xFFFFFFFF),
                                                  ("bitmap_sparse", "bitmaps", 2 ** 64 - 1),
                                                  ("gear", "out_idx", 0xFFFF)])
@pytest.mark.parametrize("call", ["attention", "dequantize"])
def test_index_arrays_rewritten_during_calls(method, field, garbage, call):
    """Another thread rewrites an index array with values that would address memory outside the data (the
    issue's SIGSEGV): every call gives the exact result of the original arrays or CorruptStreamError."""
    x = normal((4, 512, 128))
    t = kv.quantize(x, method, rank=0) if method == "gear" else kv.quantize(x, method)
    q = normal((4, 1, 128))
    want = kv.attention(q, t, t, threads=1) if call == "attention" else t.dequantize(threads=1)
    done = refused = 0
    with Rewriter(t.arrays[field], garbage, restore=True):
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            try:
                got = kv.attention(q, t, t, threads=2) if call == "attention" else t.dequantize(threads=2)
            except ccomp.CorruptStreamError as e:
                assert "inconsistent" in str(e)
                refused += 1
                continue
            assert np.array_equal(got, want)
            done += 1
    assert done + refused > 0


@pytest.mark.parametrize("method", ["groupwise", "q8_0", "turbo"])
def test_codes_rewritten_during_attention(method):
    """Codes and scales are not indices: a call racing with a writer gives finite output of the right shape."""
    x = normal((4, 512, 128))
    t = kv.quantize(x, method)
    name = "blocks" if method == "q8_0" else "codes"
    garbage = np.random.default_rng(1).integers(0, 256, t.arrays[name].shape, dtype=np.uint8)
    if method == "q8_0":  # keep every block's fp16 scale as it is: garbage quants only
        garbage.reshape(4, -1, 34)[:, :, :2] = t.arrays[name].reshape(4, -1, 34)[:, :, :2]
    q = normal((4, 4, 128))
    with Rewriter(t.arrays[name], garbage, restore=True):
        end = time.monotonic() + SECONDS / 2
        while time.monotonic() < end:
            out = kv.attention(q, t, t, threads=2)
            assert out.shape == (4, 4, 128) and np.isfinite(out).all()


@pytest.mark.parametrize("method", ["bitmap_sparse", "gear", "q4_0", "groupwise"])
def test_input_rewritten_during_quantize(method):
    """x rewritten while it is quantized: the result is a consistent tensor (the selection reads a private
    copy of each row) or a clean ValueError when the writer put a NaN in."""
    x = normal((4, 256, 128))
    garbage = normal((4, 256, 128)) * 100
    garbage[2, 100, 5] = np.nan
    done = refused = 0
    with Rewriter(x, garbage, restore=True):
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            try:
                q = kv.quantize(x, method, threads=2)
            except ValueError as e:
                assert "NaN" in str(e) or "x changed during the call" in str(e)
                refused += 1
                continue
            kv.QuantizedTensor(q.method, q.shape, q.params, q.arrays)  # validates: consistent indices, finite scales
            done += 1
    assert done + refused > 0


def test_kivi_appends_from_many_threads():
    """Appends from 4 threads at once are applied one at a time: every token is kept, K and V agree, and the
    cache equals one built by the same appends in one thread (tokens from one thread are identical rows)."""
    c = kv.KIVICache(bits=4, group=32, residual=32)
    rows = [np.full((2, 1, 64), i, np.float32) for i in range(4)]

    def worker(i):
        return lambda: [c.append(rows[i], rows[i]) for _ in range(40)]

    run_threads([worker(i) for i in range(4)])
    assert c.tokens == 160 and c.k_cache.shape == c.v_cache.shape == (2, 160, 64)
    k, v = c.k_cache.dequantize(), c.v_cache.dequantize()
    assert sorted(np.bincount(np.rint(k[0, :, 0]).astype(int), minlength=4)) == [40, 40, 40, 40]
    assert np.allclose(k, v, atol=0.2)


def test_kivi_attention_while_another_thread_appends():
    """attention and dequantize of a KIVI cache that another thread appends to see the cache between appends,
    never half way through one (they raised "K and V caches disagree" when K had grown and V not yet): each
    result is the one of some prefix of the appends."""
    c = kv.KIVICache(bits=4, group=32, residual=32)
    c.append(normal((2, 40, 64)), normal((2, 40, 64)))
    q = normal((2, 1, 64))
    stop = threading.Event()
    seen = []

    def appender():
        for _ in range(200):
            c.append(normal((2, 3, 64)), normal((2, 3, 64)))
        stop.set()

    def reader():
        while not stop.is_set():
            out = kv.attention(q, c.k_cache, c.v_cache)
            k, v = c.k_cache.dequantize(), c.v_cache.dequantize()
            assert out.shape == (2, 1, 64) and np.isfinite(out).all()
            assert k.shape[1] >= 40 and (k.shape[1] - 40) % 3 == 0 and v.shape[1] >= 40
            seen.append(k.shape[1])

    run_threads([appender, reader, reader])
    assert c.tokens == 40 + 600 and seen

"""ccomp.zipfit called from several Python threads at once: the same results as one thread, and a
text buffer rewritten by another thread while it is being sized gives the size of one whole content
(the binding snapshots mutable buffers before releasing the GIL), never a crash."""
import threading
import time

import numpy as np
import pytest

from ccomp import zipfit

N_THREADS = 4


def _run_threads(fn, n=N_THREADS):
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:  # reported below, with the thread's index
            errors.append((i, exc))

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


@pytest.fixture(scope="module")
def texts():
    rng = np.random.default_rng(5)
    words = ["def", "return", "self", "x", "+", "(", ")", ":", "import", "numpy", "for", "in", "range", "\n"]
    out = [" ".join(rng.choice(words, rng.integers(5, 400))) for _ in range(120)]
    out.append("")  # empty texts are valid
    out.append(bytes(rng.integers(0, 256, 70000, dtype=np.uint8)))  # over one lz4 block
    return out


@pytest.mark.parametrize("compressor,level", [("gzip", 6), ("gzip", 0), ("lz4", 0), ("lz4", 9), ("zstd", 3)])
def test_scoring_from_many_threads_matches_one_thread(texts, compressor, level):
    sources, targets = texts[:40], texts[100:]
    ref_sizes = zipfit.compressed_sizes(texts, compressor, level, threads=1)
    ref_scores = zipfit.alignment_scores(sources, targets, compressor, level, threads=1)
    ref_ncd = zipfit.ncd(texts[0], texts[1], compressor, level)

    def work(i):
        # every call shares the same inputs; threads= varies so the pool is shared differently
        return (zipfit.compressed_sizes(texts, compressor, level, threads=1 + i % 3),
                zipfit.alignment_scores(sources, targets, compressor, level, threads=1 + i % 2, chunk_size=7),
                zipfit.ncd(texts[0], texts[1], compressor, level),
                zipfit.select_top_k(sources, targets, 5, compressor, level, threads=2))

    for sizes, scores, d, (idx, top) in _run_threads(work):
        assert np.array_equal(sizes, ref_sizes)
        assert np.array_equal(scores, ref_scores)
        assert d == ref_ncd
        assert np.array_equal(idx, zipfit.top_k_indices(ref_scores, 5)) and np.array_equal(top, ref_scores[idx])


def _rewriter(buf, contents, stop):
    i = 0
    while not stop.is_set():
        buf[:] = contents[i % 2]  # a bytearray slice assignment holds the GIL: whole contents only
        i += 1
        time.sleep(0.0005)


# engines that read their input progressively while compressing (zlib, lz4 HC, zstd at a high level)
SLOW = [("gzip", 9, "library"), ("lz4", 12, "auto"), ("zstd", 19, "auto"), ("gzip", 9, "auto")]


def test_bytearray_rewritten_during_compressed_sizes():
    rng = np.random.default_rng(7)
    a = bytes(rng.choice(np.frombuffer(b"ab", np.uint8), 80_000))
    b = bytes(rng.integers(0, 256, 80_000, dtype=np.uint8))
    expected = {c: {zipfit.compressed_size(a, c, lv, engine=e), zipfit.compressed_size(b, c, lv, engine=e)}
                for c, lv, e in SLOW}
    buf = bytearray(a)
    stop = threading.Event()
    writer = threading.Thread(target=_rewriter, args=(buf, (a, b), stop))
    writer.start()
    try:
        for c, lv, e in SLOW:
            sizes = zipfit.compressed_sizes([buf, buf, b"fixed"], c, lv, threads=2, engine=e)
            assert sizes[0] in expected[c] and sizes[1] in expected[c], (c, lv, e, sizes)
            assert sizes[2] == zipfit.compressed_size(b"fixed", c, lv, engine=e)
        scores = zipfit.alignment_scores([buf], [buf, "t"], threads=2)
        assert scores.shape == (1,) and np.isfinite(scores).all()
    finally:
        stop.set()
        writer.join()


def test_numpy_buffer_rewritten_during_compressed_sizes():
    # NumPy may copy without the GIL, so a snapshot can mix the two contents: the call must still
    # finish with the size of a whole buffer of that length, or raise cleanly
    rng = np.random.default_rng(8)
    a = rng.integers(0, 4, 400_000, dtype=np.uint8)
    b = rng.integers(0, 256, 400_000, dtype=np.uint8)
    arr = a.copy()
    stop = threading.Event()

    def rewrite():
        i = 0
        while not stop.is_set():
            np.copyto(arr, (a, b)[i % 2])
            i += 1
            time.sleep(0.0005)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for compressor in ("gzip", "lz4", "zstd"):
            lo = zipfit.compressed_size(np.zeros(400_000, np.uint8), compressor)
            hi = zipfit.compressed_size(b, compressor) + 1024
            for _ in range(3):
                sizes = zipfit.compressed_sizes([arr, arr[:1000]], compressor, threads=2)
                assert sizes.dtype == np.int64 and all(lo <= s <= hi for s in sizes[:1])
                assert 0 < sizes[1] < 2000
    finally:
        stop.set()
        writer.join()


def test_list_mutated_during_calls(texts):
    shared = list(texts[:40])
    stop = threading.Event()

    def mutate():
        i = 0
        while not stop.is_set():
            shared[i % len(shared)] = texts[(i * 7) % len(texts)]
            i += 1
            if i % 64 == 0:
                time.sleep(0.0005)

    writer = threading.Thread(target=mutate)
    writer.start()
    try:
        for _ in range(20):
            sizes = zipfit.compressed_sizes(shared, "gzip", 1, threads=2)
            assert sizes.shape == (40,) and (sizes > 0).all()
    finally:
        stop.set()
        writer.join()

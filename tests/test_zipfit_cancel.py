"""Ctrl-C stops long zipfit calls within about a second, even inside one compression of a large
text, and the next call works (issue #13, item 5)."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from ccomp import _core, zipfit
from tests.interrupt import LATENCY, interrupted_after as _interrupted



@pytest.fixture(scope="module")
def slow_texts():
    # a 3-letter alphabet is the slowest input for zlib level 9 and lz4 HC (long hash chains)
    rng = np.random.default_rng(13)
    letters = np.frombuffer(b"abc", np.uint8)
    return [rng.choice(letters, 4 << 20).tobytes() for _ in range(4)]


@pytest.mark.parametrize("compressor,level,engine", [
    ("gzip", 9, "auto"),      # the deflate model's parse loop
    ("gzip", 9, "library"),   # zlib fed in slices
    ("lz4", 12, "auto"),      # lz4 frames fed block by block
    ("zstd", 19, "auto"),     # zstd on a stable input buffer, block by block
])
def test_compressed_sizes_answers_ctrl_c_inside_one_text(slow_texts, compressor, level, engine):
    late = _interrupted(lambda: zipfit.compressed_sizes(slow_texts * 4, compressor, level, threads=2,
                                                        engine=engine))
    assert late < LATENCY, f"KeyboardInterrupt came {late:.2f} s after the signal"
    # the pool and the engines are usable again, with exact sizes
    small = [slow_texts[0][:70000], b"hello hello hello"]
    assert list(zipfit.compressed_sizes(small, compressor, level, threads=2, engine=engine)) == \
        [zipfit.compressed_size(t, compressor, level, engine=engine) for t in small]


def test_alignment_scores_answers_ctrl_c_with_one_long_source(slow_texts):
    # one source: one task, whose prefix parse and pair sizes must check for Ctrl-C themselves
    late = _interrupted(lambda: zipfit.alignment_scores([slow_texts[0] * 2], [b"abcabc", b"cab"] * 4, level=9,
                                                        threads=1))
    assert late < LATENCY, f"KeyboardInterrupt came {late:.2f} s after the signal"
    got = zipfit.alignment_scores(["abcabc"], ["cab", "abc"], level=9)
    assert got.shape == (1,) and 0.0 < got[0] < 1.0


def test_alignment_scores_answers_ctrl_c_with_many_targets():
    # one source against many targets (~15 s uninterrupted): the loop over targets checks for Ctrl-C
    from conftest import corpus_bytes

    source = corpus_bytes("alice29.txt")[:6000]
    targets = [f"target {i} " * 20 for i in range(300_000)]
    sizes = zipfit.compressed_sizes(targets, "gzip", 9, engine="library")  # not in the interrupted call
    late = _interrupted(lambda: _core.alignment_scores([source], targets, sizes, _core.GZIP, 9,
                                                       _core.ENGINE_LIBRARY, threads=1))
    assert late < LATENCY, f"KeyboardInterrupt came {late:.2f} s after the signal"


def test_alignment_scores_answers_ctrl_c_with_a_huge_chunk():
    # the reproducer: chunk_size=10**6 puts every source in one call
    sources = [f"def f{i}(x):\n    return x * {i} + 1\n" for i in range(10**6)]
    late = _interrupted(lambda: zipfit.alignment_scores(sources, ["def add(a, b):\n    return a + b\n"] * 50,
                                                        level=1, chunk_size=10**6))
    assert late < LATENCY, f"KeyboardInterrupt came {late:.2f} s after the signal"

"""compressed_size equals the byte count of each compressor's Python library."""
import gzip
import os
import random
import zlib

import lz4
import lz4.frame
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import ccomp
from ccomp import zipfit

from conftest import corpus_bytes
from reference import zipfit_ref


def test_linked_library_versions_match_the_python_peers():
    info = ccomp.build_info()
    assert info["zlib"] == zlib.ZLIB_RUNTIME_VERSION, "Python's zlib and ccomp's differ: gzip sizes may differ"
    assert info["lz4"] == lz4.library_version_string(), (
        f"python-lz4 bundles lz4 {lz4.library_version_string()} but ccomp links {info['lz4']}: "
        "install the python-lz4 release built on the same lz4 (requirements-dev.txt)")
    assert info["zstd"] == ".".join(map(str, zstandard.ZSTD_VERSION)), (
        f"zstandard bundles zstd {zstandard.ZSTD_VERSION} but ccomp links {info['zstd']}")


def _real_pieces():
    rng = random.Random(7)
    pieces = [b"", b"a", b"\x00" * 5000, b"z" * 70000]
    for name in ["alice29.txt", "html", "urls.10K", "geo.protodata", "kppkn.gtb", "fireworks.jpeg",
                 "paper-100k.pdf", "plrabn12.txt"]:
        data = corpus_bytes(name)
        for n in (1, 37, 160, 900, 2000, 33000, 70000):
            start = rng.randrange(0, max(1, len(data) - n))
            pieces.append(data[start:start + n])
    pieces.append(corpus_bytes("plrabn12.txt"))  # 470 KB: many blocks, window slides
    pieces.append(os.urandom(100000))
    return pieces


REAL = _real_pieces()


@pytest.mark.parametrize("level", range(10))
@pytest.mark.parametrize("engine", ["auto", "zlib"])
def test_gzip_sizes_equal_python_gzip(level, engine):
    for piece in REAL:
        assert zipfit.compressed_size(piece, "gzip", level, engine=engine) == len(gzip.compress(piece, level)), \
            (level, len(piece))


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4, 9, 12])
@pytest.mark.parametrize("engine", ["auto", "library"])
def test_lz4_sizes_equal_python_lz4(level, engine):
    for piece in REAL:
        assert zipfit.compressed_size(piece, "lz4", level, engine=engine) == \
            len(lz4.frame.compress(piece, compression_level=level))


@pytest.mark.parametrize("level", [-5, -1, 0, 1, 3, 7, 15, 19])
def test_zstd_sizes_equal_zstandard(level):
    for piece in REAL[:-2]:
        expected = len(zstandard.ZstdCompressor(level=level).compress(piece))
        assert zipfit.compressed_size(piece, "zstd", level) == expected, (level, len(piece))


def test_str_is_utf8_and_bytes_like_objects_are_accepted():
    text = "naïve café — 数据选择 " * 20
    expected = len(gzip.compress(text.encode("utf-8"), 1))
    assert zipfit.compressed_size(text, "gzip", 1) == expected
    raw = text.encode("utf-8")
    for obj in (raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8)):
        assert zipfit.compressed_size(obj, "gzip", 1) == expected


def test_compressed_sizes_batch_matches_one_by_one():
    pieces = REAL[:40]
    sizes = zipfit.compressed_sizes(pieces, "zstd", 3, threads=2)
    assert sizes.dtype == np.int64
    assert list(sizes) == [zipfit_ref.compressed_size(p, "zstd", 3) for p in pieces]


def test_ncd_matches_reference(real_documents):
    x, y = real_documents[0], real_documents[5]
    for comp, level in [("gzip", 1), ("gzip", 9), ("lz4", 0), ("zstd", 3)]:
        assert zipfit.ncd(x, y, comp, level) == zipfit_ref.ncd(x, y, comp, level)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), level=st.integers(0, 9))
def test_gzip_random_bytes(data, level):
    assert zipfit.compressed_size(data, "gzip", level) == len(gzip.compress(data, level))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=3000), level=st.sampled_from([0, 1, 5, 9, 12]))
def test_lz4_random_bytes(data, level):
    assert zipfit.compressed_size(data, "lz4", level) == len(lz4.frame.compress(data, compression_level=level))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=3000), level=st.sampled_from([-3, 1, 3, 9, 19]))
def test_zstd_random_bytes(data, level):
    assert zipfit.compressed_size(data, "zstd", level) == len(zstandard.ZstdCompressor(level=level).compress(data))

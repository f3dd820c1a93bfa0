"""The size-only deflate model equals zlib on every (source, target) pair hypothesis can think of.

CCOMP_HYPOTHESIS_EXAMPLES scales the search (default 1000 examples per property; see strategies.py)."""
import gzip

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ccomp
from ccomp import zipfit

from strategies import SETTINGS, texts

pytestmark = pytest.mark.skipif(zipfit.engine("gzip", 1) != "deflate-model",
                                reason="the deflate model does not apply to the linked zlib")


@SETTINGS
@given(source=texts, targets=st.lists(texts, min_size=1, max_size=4), level=st.integers(1, 9))
def test_model_scores_equal_zlib_scores(source, targets, level):
    model = zipfit.alignment_scores([source], targets, "gzip", level, engine="model", threads=1)
    zlib_ = zipfit.alignment_scores([source], targets, "gzip", level, engine="zlib", threads=1)
    assert np.array_equal(model, zlib_)


@SETTINGS
@given(a=texts, b=texts, level=st.integers(1, 9))
def test_model_pair_size_equals_gzip(a, b, level):
    assert zipfit.compressed_size(a + b, "gzip", level, engine="model") == len(gzip.compress(a + b, level))
    assert zipfit.ncd(a, b, "gzip", level, engine="model") == zipfit.ncd(a, b, "gzip", level, engine="zlib")


def test_model_on_long_real_inputs():
    from conftest import corpus_bytes

    big = corpus_bytes("plrabn12.txt") + corpus_bytes("kppkn.gtb")
    for level in range(1, 10):
        assert zipfit.compressed_size(big, "gzip", level, engine="model") == len(gzip.compress(big, level))


def test_model_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="covers gzip levels 1-9"):
        zipfit.compressed_size(b"abc", "gzip", 0, engine="model")
    assert "deflate-model" in ccomp.build_info()["gzip_engine"]

"""The size-only lz4 model equals python-lz4 on every (source, target) pair hypothesis can think of."""

import lz4.frame
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccomp import zipfit

from strategies import SETTINGS, texts

pytestmark = pytest.mark.skipif(zipfit.engine("lz4", 0) != "lz4-model",
                                reason="the lz4 model does not apply to the linked lz4")


@SETTINGS
@given(source=texts, targets=st.lists(texts, min_size=1, max_size=4), level=st.integers(0, 2))
def test_model_scores_equal_library_scores(source, targets, level):
    model = zipfit.alignment_scores([source], targets, "lz4", level, engine="model", threads=1)
    library = zipfit.alignment_scores([source], targets, "lz4", level, engine="library", threads=1)
    assert np.array_equal(model, library)


@SETTINGS
@given(a=texts, b=texts)
def test_model_pair_size_equals_python_lz4(a, b):
    assert zipfit.compressed_size(a + b, "lz4", 0, engine="model") == len(lz4.frame.compress(a + b,
                                                                                           compression_level=0))


@pytest.mark.parametrize("n", [0, 1, 12, 13, 65535, 65536, 65537, 200000])
def test_model_at_the_block_limit(n):
    from conftest import corpus_bytes

    data = (corpus_bytes("lcet10.txt") * 2)[:n]
    expected = len(lz4.frame.compress(data, compression_level=0))
    half = n // 2
    ref = zipfit.alignment_scores([data[:half]], [data[half:]], "lz4", 0, engine="library")
    # "auto" uses the model up to one block and the library beyond: exact either way
    assert zipfit.compressed_size(data, "lz4", 0, engine="auto") == expected
    assert np.array_equal(zipfit.alignment_scores([data[:half]], [data[half:]], "lz4", 0, engine="auto"), ref)
    if n <= 65536:
        assert zipfit.compressed_size(data, "lz4", 0, engine="model") == expected
        got = zipfit.alignment_scores([data[:half]], [data[half:]], "lz4", 0, engine="model")
        assert np.array_equal(got, ref)
    else:
        # engine="model" insists on the model, which covers one 64 KiB block: no silent library
        with pytest.raises(ValueError, match=r"engine 'model' covers lz4 inputs up to 65536 bytes .*got %d" % n):
            zipfit.compressed_size(data, "lz4", 0, engine="model")
        with pytest.raises(ValueError, match="engine 'model' covers lz4 inputs up to 65536 bytes"):
            zipfit.alignment_scores([data[:half]], [data[half:]], "lz4", 0, engine="model")

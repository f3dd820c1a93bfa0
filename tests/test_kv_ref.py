"""ccomp.kv against the plain-NumPy specification in tests/reference/kv_ref.py:
codes, scales, zeros, ggml blocks, bitmaps, offsets and outlier indices byte for
byte; reconstructions and attention within float32 rounding; fp16 rounding over
the whole range; KIVI streaming; turbo codebooks, rotation and QJL matrix."""
import numpy as np
import pytest

import ccomp.kv as kv
from reference import kv_ref


@pytest.mark.parametrize("seed", [0, 1])
def test_every_method_matches_the_reference(seed):
    checked, problems = kv_ref.self_check(seed)
    assert checked >= 100
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lloyd_max_matches_the_reference(bits):
    c, t, mse = kv.lloyd_max(bits)
    rc, rt, rmse = kv_ref.lloyd_max(bits)
    assert np.allclose(c, rc, atol=1e-12) and np.allclose(t, rt, atol=1e-12)
    assert mse == pytest.approx(rmse, rel=1e-9)

"""ccomp.kv's golden version-1 files (tests/fixtures/kv_<case>_v1.cckv, written once by tools/kv_fixtures.py):
each decodes to the values recorded beside it (tests/fixtures/kv_v1_values.npz) and re-encodes to the same
bytes, so a change of the format or of a decoder fails here.  bitmap_sparse's file is checked in
tests/test_kv_hostile.py."""
import importlib.util
import os

import numpy as np
import pytest

import ccomp
from ccomp import kv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("kv_fixtures", os.path.join(ROOT, "tools", "kv_fixtures.py"))
kv_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kv_fixtures)

CASES = {case: (method, kw) for case, method, kw in kv_fixtures.CASES}
# Methods whose quantizer is integer arithmetic on exactly rounded floats: today's encoder must write the very
# bytes of the fixture.  (turbo's rotation and gear's power iteration sum floats in an order the SIMD paths
# choose; their fixtures are checked by decoding and re-encoding.)
EXACT = ("groupwise", "groupwise_3bit_token", "q8_0", "q4_0")


def read(case):
    with open(kv_fixtures.path(case), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def values():
    with np.load(kv_fixtures.VALUES) as z:
        return {k: z[k] for k in z.files}


def test_every_method_has_a_golden_file(values):
    methods = {method for method, _kw in CASES.values()}
    assert methods | {"bitmap_sparse"} == set(kv.METHODS) - {"kivi"}
    assert sorted(values) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_file_decodes_to_the_recorded_values(case, values):
    method, kw = CASES[case]
    data = read(case)
    t = kv.QuantizedTensor.from_bytes(data)
    assert t.method == method and t.shape == (2, 32, 64)
    assert {k: v for k, v in t.params.items() if k in kw} == kw
    want = values[case]
    assert want.shape == (2, 32, 64) and want.dtype == np.float32
    got = t.dequantize()
    if case in EXACT:
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    # the values are a reconstruction of the fixture's input, not an arbitrary array
    x = kv_fixtures.fixture_input()
    assert float(np.mean((got - x) ** 2) / np.mean(x ** 2)) < 0.05
    assert t.to_bytes() == data


@pytest.mark.parametrize("case", EXACT)
def test_todays_encoder_writes_the_golden_bytes(case):
    method, kw = CASES[case]
    assert kv.quantize(kv_fixtures.fixture_input(), method, **kw).to_bytes() == read(case)


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_golden_file_is_refused(case):
    data = read(case)
    for at in range(0, len(data), 101):
        bad = data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]
        with pytest.raises(ccomp.CorruptStreamError):
            kv.QuantizedTensor.from_bytes(bad)
    with pytest.raises(ccomp.CorruptStreamError, match="CRC"):
        kv.QuantizedTensor.from_bytes(data[:-1])

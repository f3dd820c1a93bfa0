"""Writes ccomp.kv's golden version-1 files: tests/fixtures/kv_<case>_v1.cckv, one per case below, and
tests/fixtures/kv_v1_values.npz, what each decodes to (float32, by the name of the case).

Run once, when the format is frozen (python tools/kv_fixtures.py); tests/test_kv_golden.py then decodes the
committed files on every run, so a change of the format or of a decoder is caught.  Rerunning it on an
unchanged ccomp rewrites the same bytes.  bitmap_sparse has its own file (tests/fixtures/kv_sparse_v1.cckv).
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
VALUES = os.path.join(FIXTURES, "kv_v1_values.npz")

# (case, method, quantize's keyword arguments): every method's arrays, 3-bit packing, both axes, QJL
CASES = [
    ("groupwise", "groupwise", {"bits": 4, "group": 32, "axis": "channel"}),
    ("groupwise_3bit_token", "groupwise", {"bits": 3, "group": 32, "axis": "token"}),
    ("q8_0", "q8_0", {}),
    ("q4_0", "q4_0", {}),
    ("turbo", "turbo", {"bits": 3, "qjl": True, "seed": 7}),
    ("gear", "gear", {"bits": 4, "group": 32, "axis": "channel", "outliers": 0.05, "rank": 2, "iters": 2,
                      "seed": 3}),
]


def fixture_input():
    """The tensor every case quantizes: (2, 32, 64) float32 from a formula (no random generator), with a
    spread of magnitudes so that outliers, groups and blocks all matter."""
    i = np.arange(2 * 32 * 64, dtype=np.float64)
    x = ((i * 37) % 101 - 50) / 10 + ((i * i * 13) % 29) / 40 - np.where(i % 97 == 0, 9.0, 0.0)
    return x.astype(np.float32).reshape(2, 32, 64)


def path(case):
    return os.path.join(FIXTURES, f"kv_{case}_v1.cckv")


def main():
    sys.path.insert(0, os.path.join(ROOT, "python"))
    from ccomp import kv

    x = fixture_input()
    values = {}
    for case, method, kw in CASES:
        t = kv.quantize(x, method, **kw)
        with open(path(case), "wb") as f:
            f.write(t.to_bytes())
        values[case] = t.dequantize().astype(np.float32)
        print(f"{path(case)}: {len(t.to_bytes())} bytes, {t.bits_per_element:.3f} bits per element")
    np.savez_compressed(VALUES, **values)
    print(VALUES)


if __name__ == "__main__":
    main()

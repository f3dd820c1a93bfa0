"""bench/model_loop.py end to end in its quick mode, cut further to keep the test short (SmolLM2-135M,
96 tokens of perplexity fed 32 at a time, 256 tokens of context, 2 timed steps): every
cache configuration runs, the chunked reference equals one forward pass, 8-bit caches keep the perplexity,
the byte counts are the caches' own, and the report is written."""
import importlib
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_loop():
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        yield importlib.import_module("model_loop")
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def test_quick_run_end_to_end(model_loop, tmp_path):
    out = tmp_path / "model_loop.md"
    args = model_loop.parse_args(["--quick", "--tokens", "96", "--chunk", "32", "--contexts", "256", "--steps", "2",
                                   "--no-sections", "--out", str(out)])
    report = model_loop.run(args)

    assert report["ppl_missing"] == [] and report["time_missing"] == []
    rows = {r["label"]: r for r in report["ppl_rows"]}
    assert list(rows) == [s.label for s in model_loop.perplexity_specs()]
    sanity = report["sanity"]
    assert sanity["scored"] == 95 and sanity["diff"] < 1e-4

    ref = rows[model_loop.REF + " (reference)"]
    # float32 K and V of 30 layers x 3 heads x 96 tokens x 64 channels
    assert ref["bytes"] == 2 * 30 * 3 * 96 * 64 * 4 and ref["bits"] == 32.0
    assert rows["fp16 DynamicCache (stored float16)"]["bytes"] == ref["bytes"] // 2
    for label in ("fp16 DynamicCache (stored float16)", "ccomp q8_0 R=0", "ccomp groupwise 8-bit G=32 R=128"):
        assert abs(rows[label]["ppl"] / ref["ppl"] - 1) < 0.01, (label, rows[label]["ppl"], ref["ppl"])
    # q8_0: 32 int8 codes and one float16 scale per block, nothing else
    assert rows["ccomp q8_0 R=0"]["bits"] == pytest.approx(8.5)
    for r in rows.values():
        assert math.isfinite(r["ppl"]) and r["ppl"] > 1 and r["bytes"] > 0
    # fewer bits cost perplexity: KIVI 2-bit is worse than 4-bit at the same residual window
    assert rows["ccomp KIVI 2-bit G=32 R=32"]["ppl"] > rows["ccomp KIVI 4-bit G=32 R=32"]["ppl"]
    assert rows["ccomp KIVI 2-bit G=32 R=32"]["bits"] < rows["ccomp KIVI 4-bit G=32 R=32"]["bits"] < 16

    timed = report["time_rows"]
    assert sorted({r["context"] for r in timed}) == [256]
    assert [r["label"] for r in timed] == [s.label for s in model_loop.timing_specs()]
    assert all(0 < r["best"] <= r["median"] for r in timed)

    text = out.read_text(encoding="utf-8")
    assert report["png"].is_file()
    for label in rows:
        assert f"| {label} |" in text
    assert "256 tokens of context" in text and "**missing**" not in text

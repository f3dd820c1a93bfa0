"""`ccomp demo`'s tokens part runs on the bundled real page, and skips in one line without pdftoppm."""
import shutil

import pytest

from ccomp import demo, pages


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm not installed (apt-get install poppler-utils)")
def test_tokens_demo_prints_density_and_kept_tokens_per_sub_image(capsys):
    demo.tokens_demo()
    out = capsys.readouterr().out
    assert "ccomp.tokens on a real page: Artin.pdf page 2" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("(")]
    assert [r[:2] for r in rows] == [["(0,", "0)"], ["(0,", "1)"], ["(1,", "0)"], ["(1,", "1)"], ["(2,", "0)"],
                                     ["(2,", "1)"]]
    density = [float(r[2]) for r in rows]
    kept = [int(r[3]) for r in rows]
    assert all(d > 0.1 for d in density[:4]) and density[5] == 0.0  # text above, blank paper at the bottom right
    assert kept[5] == 1  # k_min
    assert f"kept {sum(kept)} of 6144 tokens" in out


def test_tokens_demo_skips_without_pdftoppm(monkeypatch, capsys):
    monkeypatch.setattr(pages.shutil, "which", lambda name: None)
    demo.tokens_demo()
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [out.strip()]
    assert out.strip().startswith("ccomp.tokens demo skipped:") and "apt-get install poppler-utils" in out

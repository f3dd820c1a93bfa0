"""The `ccomp zipfit` command: top-k records keep their fields and gain the score."""
import json
import os
import subprocess
import sys

import numpy as np

from ccomp import zipfit


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ccomp", *args], capture_output=True, text=True, timeout=300)


def test_zipfit_cli_selects_top_k(tmp_path, real_documents, humaneval_prompts):
    src = tmp_path / "sources.jsonl"
    tgt = tmp_path / "targets.jsonl"
    with open(src, "w") as f:
        for i, d in enumerate(real_documents):
            f.write(json.dumps({"id": i, "text": d, "meta": {"n": len(d)}}) + "\n")
    with open(tgt, "w") as f:
        for p in humaneval_prompts[:50]:
            f.write(json.dumps({"prompt": p}) + "\n")
    out = tmp_path / "selected.jsonl"
    scores_path = tmp_path / "scores.npy"
    r = run_cli("zipfit", "--target", str(tgt), "--target-key", "prompt", "--source", str(src), "--top-k", "5",
                "--out", str(out), "--scores", str(scores_path), "--compressor", "gzip", "--level", "1")
    assert r.returncode == 0, r.stderr
    expected = zipfit.alignment_scores(real_documents, humaneval_prompts[:50], "gzip", 1)
    assert np.array_equal(np.load(scores_path), expected)
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    order = zipfit.top_k_indices(expected, 5)
    assert [row["id"] for row in rows] == list(order)
    for row in rows:
        assert row["text"] == real_documents[row["id"]]
        assert row["meta"] == {"n": len(row["text"])}
        assert row["score"] == expected[row["id"]]


def test_zipfit_cli_reports_bad_input(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text('{"text": "a"}\nnot json\n')
    tgt = tmp_path / "t.jsonl"
    tgt.write_text('{"text": "b"}\n')
    r = run_cli("zipfit", "--target", str(tgt), "--source", str(src), "--top-k", "1", "--out",
                str(tmp_path / "o.jsonl"), "--no-progress")
    assert r.returncode == 2
    assert "s.jsonl, line 2: not a valid JSON record" in r.stderr
    assert not os.path.exists(tmp_path / "o.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = run_cli("zipfit", "--target", str(empty), "--source", str(src), "--top-k", "1", "--out",
                str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "target set is empty" in r.stderr


def test_info_command():
    r = run_cli("info")
    assert r.returncode == 0
    assert "zlib: " in r.stdout and "cuda: " in r.stdout

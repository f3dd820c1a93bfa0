"""Every notebook under notebooks/ executes without error from notebooks/ (Jupyter's working
directory when one opens it), and the cheaper ones once more from an unrelated empty folder: the
data comes from ccomp.datasets, never from a path relative to the checkout."""
import glob
import json
import os
import re

import pytest

import ccomp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
# sketch.ipynb takes about half of the notebooks' time; it reads its data the way kv_cache.ipynb does
# (ccomp.minilm on the bundled corpus), which the second pass covers; model_loop.ipynb (SmolLM2, about a
# minute) and lm_compress.ipynb (SmolLM2 through llama.cpp) read their model and text through ccomp.models and
# ccomp.datasets, which other tests cover
ONCE = ("sketch.ipynb", "model_loop.ipynb", "lm_compress.ipynb")
ELSEWHERE = [p for p in NOTEBOOKS if os.path.basename(p) not in ONCE]


def _run(path, cwd, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    # the kernel is a new process: it must import the ccomp under test, and read the bundled data
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(ccomp.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.delenv("CCOMP_DATA", raising=False)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs_from_the_notebooks_folder(path, monkeypatch):
    _run(path, os.path.join(ROOT, "notebooks"), monkeypatch)


@pytest.mark.parametrize("path", ELSEWHERE, ids=[os.path.basename(p) for p in ELSEWHERE])
def test_notebook_runs_from_an_unrelated_folder(path, tmp_path, monkeypatch):
    _run(path, tmp_path, monkeypatch)


def test_no_notebook_reads_a_path_relative_to_the_checkout():
    for path in NOTEBOOKS:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            assert not re.search(r"""["'](\.\./)*data/|Path\.cwd\(\)|os\.getcwd\(\)|\bROOT\b""", src), (path, src[:300])

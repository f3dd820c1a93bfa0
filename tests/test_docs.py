"""The README's first Python example runs as written."""
import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_tour_runs():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["scores"].shape == (3,)


def _python_blocks(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_readme_kv_tour_runs():
    block = next(b for b in _python_blocks("README.md") if "ccomp.kv" in b)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (2, 32, 1, 128)
    assert namespace["kq"].bits_per_element == 3.0


def test_kv_guide_example_runs():
    namespace = {}
    exec(compile(_python_blocks("docs/kv.md")[0], "docs/kv.md", "exec"), namespace)
    assert namespace["out"].shape == (1, 32, 1, 128)


def test_sketch_guide_example_runs():
    namespace = {}
    exec(compile(_python_blocks("docs/sketch.md")[0], "docs/sketch.md", "exec"), namespace)
    s = namespace["s"]
    assert s.tables.shape == (256, 1, 16) and s.codes.shape == (256, 1, 256)
    assert s.bits_per_weight == 4.5
    assert namespace["err"] < 0.2
    assert namespace["gt"].shape == (256, 1, 16) and namespace["gx"].shape == (8, 512)


def test_readme_sketch_tour_runs():
    block = next(b for b in _python_blocks("README.md") if "ccomp.sketch" in b or "from ccomp import sketch" in b)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["y"].shape == (4, 128)
    assert namespace["s"].bits == 4


def test_readme_tokens_tour_runs():
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (apt-get install poppler-utils)")
    block = next(b for b in _python_blocks("README.md") if "from ccomp import pages, tokens" in b)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    c = namespace["c"]
    assert c.keep.tolist() == [259, 177, 353, 224, 1, 1]
    assert c.density.round(3).tolist() == [0.253, 0.173, 0.345, 0.219, 0.001, 0.0]
    assert c.tokens[0].shape == (259, 588)
    assert namespace["merged"].shape == (6, 512, 588) and namespace["vz"].shape == (6, 64, 588)
    assert namespace["fv"].shape == (6, 256, 588)

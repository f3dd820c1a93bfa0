import os
import random

# Under pytest-xdist (make test: two workers on two cores) torch and the BLAS libraries run one thread per
# worker, as they would with one core each: two workers of two threads would oversubscribe the cores,
# and OpenMP's spinning waits burn what is left.  Set before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

from ccomp import datasets  # noqa: E402
# CCOMP_REQUIRE_TORCH=1 (make test): a skip for lack of torch, transformers, timm ... fails (tests/strict_skips.py)
from strict_skips import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus_bytes(name):
    return datasets.corpus(name)


@pytest.fixture(scope="session")
def humaneval_prompts():
    return datasets.humaneval()


@pytest.fixture(scope="session")
def real_documents():
    """Distinct documents of 100-2500 characters cut from real prose, HTML, URLs and code."""
    rng = random.Random(1234)
    docs = []
    for name in ["alice29.txt", "lcet10.txt", "html", "urls.10K"]:
        text = corpus_bytes(name).decode("utf-8", errors="replace")
        for _ in range(12):
            n = rng.randint(100, 2500)
            start = rng.randrange(0, len(text) - n)
            docs.append(text[start:start + n])
    with open(os.path.join(ROOT, "python", "ccomp", "zipfit", "__init__.py"), encoding="utf-8") as f:
        code = f.read()
    for _ in range(12):
        n = rng.randint(100, 2500)
        start = rng.randrange(0, max(1, len(code) - n))
        docs.append(code[start:start + n])
    return list(dict.fromkeys(docs))


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)``: SmolLM2-135M-Instruct (float32, eval mode), loaded once per test process.
    Tests must not change its weights or modules (copy.deepcopy it first)."""
    pytest.importorskip("transformers")
    from ccomp import models

    return models.smollm2()

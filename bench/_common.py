"""Shared helpers for the ccomp benchmarks: real data, deterministic documents, machine info.

Everything here is deterministic for a given machine: the corpus files and
HumanEval come from the data bundled with ccomp (``ccomp.datasets``), the code from this machine's Python
standard library (``sysconfig.get_paths()["stdlib"]``, ``*.py`` files in
sorted order), and documents are cut with a seeded ``random.Random``.
"""
import bisect
import json
import os
import platform
import random
import sys
import sysconfig
from pathlib import Path

# Corpus texts used as sources (decoded as UTF-8 with errors="replace"), with their source type.
CORPUS_FILES = {
    "alice29.txt": "prose",
    "asyoulik.txt": "prose",
    "lcet10.txt": "prose",
    "plrabn12.txt": "prose",
    "html": "html",
    "urls.10K": "urls",
}

SHORT = (200, 2000)          # characters, uniform
LONG = (8 * 1024, 32 * 1024)  # characters, uniform


def humaneval_path():
    """The bundled HumanEval.jsonl (164 problems)."""
    from ccomp import datasets  # imported on use: the peers' worker processes measure memory without ccomp

    return datasets.humaneval_path()


def load_humaneval(field="prompt"):
    """The 164 HumanEval prompts; ``field="prompt+solution"`` appends the canonical solution."""
    from ccomp import datasets

    records = datasets.humaneval(field=None)
    if field == "prompt":
        return [ex["prompt"] for ex in records]
    if field == "prompt+solution":
        return [ex["prompt"] + ex["canonical_solution"] for ex in records]
    raise ValueError(f"unknown HumanEval field {field!r}")


def load_corpus_texts():
    """[(source_type, name, text)] for the corpus files, in a fixed order."""
    from ccomp import datasets

    return [(kind, name, datasets.corpus(name).decode("utf-8", errors="replace"))
            for name, kind in CORPUS_FILES.items()]


def stdlib_files():
    """Sorted relative paths of this Python's standard-library *.py files (no site-packages)."""
    base = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        for fn in filenames:
            if fn.endswith(".py"):
                paths.append(Path(dirpath, fn).relative_to(base))
    return base, sorted(paths)


def load_stdlib_texts(max_bytes=None):
    """[("code", relpath, text)] for the standard-library sources, sorted; optionally capped in total size."""
    base, rels = stdlib_files()
    out = []
    total = 0
    for rel in rels:
        try:
            text = (base / rel).read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
        if not text:
            continue
        out.append(("code", str(rel), text))
        total += len(text)
        if max_bytes is not None and total >= max_bytes:
            break
    return out


def cut_documents(pools, n, lengths, seed=0, weights=None, with_labels=False, max_tries_factor=50):
    """Cut ``n`` distinct documents from ``pools`` deterministically.

    pools: {group: [(source_type, name, text), ...]}; a group is picked with
    ``weights`` (default: equal), then a file within the group with probability
    proportional to its length, then a length uniform in ``lengths`` (inclusive)
    and a uniform start.  Files shorter than the length are skipped (retry).
    Returns a list of texts, or of (text, source_type, name) with ``with_labels``.
    """
    rng = random.Random(seed)
    groups = [g for g in pools if pools[g]]
    if weights is None:
        weights = {g: 1.0 for g in groups}
    gweights = [float(weights.get(g, 0.0)) for g in groups]
    cum = {}
    for g in groups:
        acc, c = 0, []
        for _, _, t in pools[g]:
            acc += len(t)
            c.append(acc)
        cum[g] = c
    lo, hi = lengths
    seen = set()
    out = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > max_tries_factor * n + 1000:
            raise RuntimeError(f"could only cut {len(out)} distinct documents of {n}")
        g = rng.choices(groups, weights=gweights)[0]
        c = cum[g]
        i = bisect.bisect_right(c, rng.randrange(c[-1]))
        kind, name, text = pools[g][i]
        length = rng.randint(lo, hi)
        if len(text) < length:
            continue
        start = rng.randrange(len(text) - length + 1)
        doc = text[start:start + length]
        if doc in seen:
            continue
        seen.add(doc)
        out.append((doc, kind, name) if with_labels else doc)
    return out


_POOLS = None


def default_pools():
    """{"corpus": corpus texts, "code": stdlib sources} (loaded once per process)."""
    global _POOLS
    if _POOLS is None:
        _POOLS = {"corpus": load_corpus_texts(), "code": load_stdlib_texts()}
    return _POOLS


def make_sources(n, kind="short", seed=1234):
    """``n`` distinct source documents, 30% cut from the corpus texts, 70% from stdlib code."""
    lengths = {"short": SHORT, "long": LONG}[kind]
    return cut_documents(default_pools(), n, lengths, seed=seed, weights={"corpus": 0.3, "code": 0.7})


def write_jsonl(path, texts, key="text", with_id=False):
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            rec = {"id": i, key: t} if with_id else {key: t}
            f.write(json.dumps(rec) + "\n")


def read_jsonl_texts(path, key="text"):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)[key] for line in f if line.strip()]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def core_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def package_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "not installed"


def machine_info():
    return {
        "cpu": cpu_model(),
        "cores": core_count(),
        "os_cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def best(f, reps, budget=0.0):
    """Best wall time of at least reps calls of f (after one warm-up call), repeated while less
    than budget seconds have been spent (at most 1000 calls): fast kernels get many tries, which
    filters out the scheduler's interruptions on a shared machine."""
    import time

    f()
    t = []
    start = time.perf_counter()
    while len(t) < reps or (time.perf_counter() - start < budget and len(t) < 1000):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)

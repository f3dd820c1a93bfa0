"""pytest at the repository root: `make test` also runs the package's doctests
(`--doctest-modules python/ccomp`); the torch modules (`_sketch_torch.py`, the
custom ops in `_ops_*.py`) are skipped when torch is not installed (torch is
optional; CCOMP_REQUIRE_TORCH=1, set by `make test`, makes a missing torch an
error: tests/strict_skips.py)."""
import importlib.util

collect_ignore = []
collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("python/ccomp/_sketch_torch.py")
    collect_ignore_glob.append("python/ccomp/_ops_*.py")

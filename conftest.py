"""pytest at the repository root: `make test` also runs the package's doctests
(`--doctest-modules python/ccomp`); the torch integration module is skipped
when torch is not installed (torch is optional)."""
import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("python/ccomp/_sketch_torch.py")

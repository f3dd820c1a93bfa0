"""pytest at the repository root: `make test` also runs the package's doctests
(`--doctest-modules python/ccomp`).  torch, transformers and timm are optional:
a module of the package that imports one of them at its top (`_sketch_torch.py`,
the custom ops in `_ops_*.py`, the integrations) is left out of the doctests
where that package is not installed.  CCOMP_REQUIRE_TORCH=1, set by `make test`,
makes a missing one an error instead (tests/strict_skips.py)."""
import ast
import glob
import importlib.util
import os

OPTIONAL = ("torch", "transformers", "timm")


def _top_level_imports(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


collect_ignore = []
_missing = {m for m in OPTIONAL if importlib.util.find_spec(m) is None}
if _missing:
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "python", "ccomp", "**", "*.py"), recursive=True)):
        if _missing.intersection(_top_level_imports(path)):
            collect_ignore.append(os.path.relpath(path, here))

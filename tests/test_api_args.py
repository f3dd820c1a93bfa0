"""Every public function, walked with wrong types, NaN, empty and huge values: each raises the
documented exception (TypeError for a wrong type, ValueError for a bad value) whose message names
the argument, and no parameter of the public API is left out of the table (tests/api/)."""
import importlib
import inspect
import pkgutil

import pytest

import tests.api as api

AREAS = sorted(m.name[len("cases_"):] for m in pkgutil.iter_modules(api.__path__) if m.name.startswith("cases_"))


def _area(name):
    return importlib.import_module(f"tests.api.cases_{name}")


def _all_cases():
    out = []
    for a in AREAS:
        out += _area(a).CASES
    return out


CASES = _all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_argument_raises_naming_it(case):
    with pytest.raises(case.exc) as info:
        case.call()
    assert type(info.value) is case.exc or issubclass(type(info.value), case.exc)
    want = case.match if case.match is not None else case.param
    assert want in str(info.value), f"{case.id}: message {str(info.value)!r} does not name {want!r}"


def _public_callables(module_name):
    """(qualified name, callable) of every public function and class (with its public methods) of
    ccomp.<module_name> defined in the package."""
    mod = importlib.import_module(f"ccomp.{module_name}")
    names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
    out = []
    for n in names:
        obj = getattr(mod, n)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("ccomp"):
            continue
        if inspect.isclass(obj):
            out.append((f"{module_name}.{n}", obj))
            for m, meth in vars(obj).items():
                if m.startswith("_") and m != "__init__":
                    continue
                f = meth.__func__ if isinstance(meth, (staticmethod, classmethod)) else meth
                if inspect.isfunction(f) and m != "__init__":
                    out.append((f"{module_name}.{n}.{m}", f))
        else:
            out.append((f"{module_name}.{n}", obj))
    return out


def _params(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@pytest.mark.parametrize("area", AREAS)
def test_every_parameter_is_walked(area):
    mod = _area(area)
    covered = {(c.func, c.param) for c in mod.CASES}
    exempt = getattr(mod, "EXEMPT", {})
    missing = []
    for modname in getattr(mod, "MODULES", [area]):
        for qual, obj in _public_callables(modname):
            for p in _params(obj):
                if (qual, p) not in covered and p not in exempt.get(qual, {}) and "*" not in exempt.get(qual, {}):
                    missing.append(f"{qual}({p})")
    assert not missing, f"parameters with no hostile case and no exemption: {', '.join(missing)}"

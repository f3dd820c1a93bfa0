"""The KV methods as the core lists them (its method table), and their checked parameters.

Shared by ccomp.kv (the CPU path) and ccomp._kv_gpu (the GPU path), which both import it: it imports
only ccomp._core and ccomp._args, so neither of them imports the other.
"""
import numpy as np

from . import _args
from . import _core

# (id, name, parameter keys, quantizes) of every method, in the core's id order (CCOMP_KV_METHODS)
_TABLE = tuple(_core.kv_methods())
# method name -> the core's id (the CPU binding and the CUDA kernels use the same numbers)
CODE = {name: mid for mid, name, _, _ in _TABLE}
# the params each quantization method keeps (exactly these keys)
PARAM_KEYS = {name: keys for _, name, keys, quantizes in _TABLE if quantizes}
# the quantization methods, in the core's order
QUANTIZERS = tuple(PARAM_KEYS)
AXES = ("channel", "token")


def check_method(method):
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if method not in PARAM_KEYS:
        raise ValueError(f"method must be one of {QUANTIZERS}, got {method!r}")
    return method


def check_params(method, params):
    """The params dict of a method, strictly: exactly its keys, each of the right type and range."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    want = PARAM_KEYS[method]
    if tuple(sorted(params)) != want:
        raise ValueError(f"params of {method} must have exactly the keys {list(want)}, got {sorted(map(str, params))}")
    p = {}
    for k in want:
        v, name = params[k], f"params[{k!r}]"
        if k == "bits":
            ok = (2, 3, 4, 8) if method in ("groupwise", "gear") else (1, 2, 3, 4)
            p[k] = _args.integer(name, v, min(ok), max(ok))
            if p[k] not in ok:
                raise ValueError(f"{name} must be one of {ok}, got {p[k]}")
        elif k == "group":
            p[k] = _args.integer(name, v, 32, 128)
            if p[k] not in (32, 64, 128):
                raise ValueError(f"{name} must be 32, 64 or 128, got {p[k]}")
        elif k == "axis":
            p[k] = _args.choice(name, v, AXES)
        elif k in ("outliers", "sparsity"):
            p[k] = _args.real(name, v, 0, 1, hi_open=True)
        elif k == "rank":
            p[k] = _args.integer(name, v, 0, 1024)
        elif k == "iters":
            p[k] = _args.integer(name, v, 1, 100)
        elif k == "seed":
            p[k] = _args.integer(name, v, 0, 2 ** 64 - 1)
        else:
            p[k] = _args.flag(name, v)
    return p


def method_params(method, bits, group, axis, sparsity, outliers, rank, iters, seed, qjl):
    """The params dict a method keeps (types and ranges checked by ccomp._args; the core checks the sets of
    allowed values)."""
    keys = PARAM_KEYS.get(method) if isinstance(method, str) else None
    if keys is None:
        raise ValueError(f"method must be one of {QUANTIZERS} (KIVI is the streaming KIVICache), "
                         f"got {method!r}")
    p = {}
    if "axis" in keys:
        if not isinstance(axis, str):
            raise TypeError(f"axis must be 'channel' or 'token', got {type(axis).__name__}")
        if axis not in AXES:
            raise ValueError(f"axis must be 'channel' or 'token', got {axis!r}")
    for k in keys:
        if k == "bits":
            p[k] = _args.integer("bits", (4 if "group" in keys else 3) if bits is None else bits, 0, 64)
        elif k == "group":
            p[k] = _args.integer("group", group, 1, 2 ** 31 - 1)
        elif k == "axis":
            p[k] = axis
        elif k == "outliers":
            p[k] = _args.real("outliers", outliers, 0, 1, hi_open=True)
        elif k == "sparsity":
            p[k] = _args.real("sparsity", sparsity, 0, 1, hi_open=True)
        elif k == "rank":
            p[k] = _args.integer("rank", rank, 0, 2 ** 31 - 1)
        elif k == "iters":
            p[k] = _args.integer("iters", iters, 1, 100)
        elif k == "seed":
            p[k] = _args.integer("seed", seed, -2 ** 63, 2 ** 64 - 1) & (2 ** 64 - 1)
        elif k == "qjl":
            p[k] = _args.flag("qjl", qjl)
    return p


def layout(method, T, D, params):
    """[(name, dtype code such as "u2", count per slice)] of a method's arrays, from the core (its checks and
    messages)."""
    return _core.kv_layout(CODE[method], T, D, params)


def nbytes(method, shape, params):
    """Bytes of a quantized tensor of this method, shape and params: every array of its layout (slices x
    count elements), plus the 8-byte seed a turbo tensor needs to decode."""
    S = int(np.prod(shape[:-2], dtype=np.int64))
    return sum(S * n * np.dtype(dt).itemsize for _, dt, n in layout(method, shape[-2], shape[-1], params)) + (
        8 if method == "turbo" else 0)


# ccomp.kv registers its QuantizedTensor here (the GPU tensor's to_host builds one without importing ccomp.kv)
_HOST_TENSOR = []


def register_host_tensor(cls):
    _HOST_TENSOR[:] = [cls]


def host_tensor():
    """ccomp.kv.QuantizedTensor (registered when ccomp.kv is imported, which importing ccomp does)."""
    if not _HOST_TENSOR:
        raise RuntimeError("ccomp.kv is not loaded: import ccomp.kv first")
    return _HOST_TENSOR[0]

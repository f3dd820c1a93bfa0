"""torch custom ops (namespace ``ccomp::``) over ccomp.kv's quantizers and its attention on packed codes.

They wrap the core (``_core.kv_quantize``, ``kv_dequantize``, ``kv_attention``) so that dynamo can
trace code that calls them: each has a fake implementation (shapes and dtypes only), so
``torch.compile(fullgraph=True)`` keeps a model that runs them in one graph.  Quantization is not
differentiable; none of them has an autograd formula.

A quantized tensor is a list of 2-D tensors ``[slices, n]``, one per array of the method's layout
(:func:`layout`), in that order: uint8 codes and blocks, float16 scales, zeros, outlier values and
low-rank factors, int16/int32/int64 for the unsigned index arrays (the same bits), float32 norms.
Arrays may hold more columns than the tokens need (capacity buffers): the core reads the prefix.

- ``ccomp::kv_quantize(x, method, params) -> list[Tensor]``: ``x`` ``(slices, tokens, head_dim)``
  of any float dtype; ``params`` the JSON of :attr:`ccomp.kv.QuantizedTensor.params`.
- ``ccomp::kv_dequantize(arrays, method, params, tokens, head_dim) -> Tensor``: float32
  ``(slices, tokens, head_dim)``.
- ``ccomp::kv_attention(q, k_arrays, v_arrays, k_segments, v_segments, k_tokens, v_tokens, k_dense,
  v_dense, scale, causal) -> Tensor``: ``softmax(q K^T scale) V`` of ``q`` ``(B, H, n_query, D)``
  over packed segments (``k_segments``: the JSON of ``[[method, params], ...]``, their arrays
  concatenated in ``k_arrays`` with ``B * G`` rows, ``k_tokens`` their token counts) followed by
  the dense tokens ``k_dense`` ``(B, G, Tk, D)`` (any float dtype); the V side likewise (its split
  between packed and dense tokens may differ from K's; the totals agree).  Query head ``h`` reads
  K/V head ``h // (H // G)``.  With ``causal`` query ``i`` sees every packed token and the dense
  ones up to ``n_query - 1 - i`` before the end (the new tokens are the dense tail).  float32
  ``(B, H, n_query, Dv)``.

Tensors on a GPU are computed on the host (copied there and back).

>>> import torch, ccomp._ops_kv as ops
>>> x = torch.randn(3, 64, 64)
>>> arrays = torch.ops.ccomp.kv_quantize(x, "q8_0", "{}")
>>> [tuple(a.shape) for a in arrays], arrays[0].dtype
([(3, 4352)], torch.uint8)
>>> y = torch.ops.ccomp.kv_dequantize(arrays, "q8_0", "{}", 64, 64)
>>> bool((y - x).abs().max() < 0.05)
True
"""
import functools
import json

import numpy as np
import torch

from . import _core
from . import _kv_params
from . import kv as _kv
from ._args import threads as _threads

__all__ = ["layout", "params_json", "torch_dtype"]

# layout arrays that hold float16 numbers (stored by the core as uint16 bits)
_F16_ARRAYS = frozenset(("scale", "zero", "values", "out_vals", "U", "W"))
_SIGNED = {"u1": torch.uint8, "u2": torch.int16, "u4": torch.int32, "u8": torch.int64, "f4": torch.float32}


def torch_dtype(name, code):
    """The torch dtype of layout array ``name`` of dtype code ``code`` (``"u2"`` etc.)."""
    if code == "u2" and name in _F16_ARRAYS:
        return torch.float16
    return _SIGNED[code]


def params_json(params):
    """The canonical JSON of a params dict (the ops' ``params`` argument)."""
    return json.dumps(params, sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _layout(method, tokens, head_dim, params):
    p = json.loads(params)
    return tuple((name, code, n) for name, code, n in _kv_params.layout(method, tokens, head_dim, p))


def layout(method, tokens, head_dim, params):
    """``[(name, torch dtype, columns)]`` of a method's arrays for ``tokens`` x ``head_dim`` (``params``: a
    dict or its JSON); ValueError from the core for shapes the method cannot take."""
    pj = params if isinstance(params, str) else params_json(params)
    return [(name, torch_dtype(name, code), n) for name, code, n in _layout(method, int(tokens), int(head_dim), pj)]


def _columns(method, tokens, head_dim, params):
    """Column counts of the arrays for sizes that may be symbolic: every layout is affine in the tokens (read at
    one and two whole units of the method's granularity); a symbolic head dim gives unbacked sizes."""
    if isinstance(tokens, int) and isinstance(head_dim, int):
        return [n for _, _, n in _layout(method, tokens, head_dim, params)]
    u, t1 = _unit(params), _probe(params)
    if not isinstance(head_dim, int):
        ctx = torch.library.get_ctx()
        return [ctx.new_dynamic_size() for _ in _layout(method, t1, 128, params)]
    one = _layout(method, t1, head_dim, params)
    two = _layout(method, t1 + u, head_dim, params)
    return [a[2] + (b[2] - a[2]) * ((tokens - t1) // u) for a, b in zip(one, two)]


def _unit(params):
    """The token granularity of a layout: the group for groups along tokens, else one token."""
    p = json.loads(params)
    return p.get("group", 1) if p.get("axis") == "channel" else 1


def _probe(params):
    """A token count every layout of these params takes (whole units, at least the low rank)."""
    u, rank = _unit(params), json.loads(params).get("rank", 1)
    return u * max(1, -(-rank // u))


def _host(t):
    """A tensor's data as the C-contiguous NumPy array the core reads (unsigned/uint16 views of the signed and
    float16 stand-ins)."""
    a = t.detach()
    if a.device.type != "cpu":
        a = a.cpu()
    a = a.contiguous().numpy()
    if a.dtype == np.float16 or a.dtype.kind == "i":
        a = a.view(a.dtype.str.replace("f", "u").replace("i", "u"))
    return a


def _threads_for(elements):
    """One thread for small calls (a decode step's few tokens: starting threads would cost more), else all."""
    return 1 if elements < 1 << 16 else _threads(None)


def _float32(t):
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float32).numpy())


def _check_method(method):
    if method not in _kv_params.QUANTIZERS:
        raise ValueError(f"method must be one of {_kv_params.QUANTIZERS}, got {method!r}")


def _params(method, params):
    _check_method(method)
    try:
        p = json.loads(params)
    except ValueError as e:
        raise ValueError(f"params must be the JSON of a params dict, got {params!r:.80} ({e})") from None
    return _kv_params.check_params(method, p)


# ------------------------------------------------------------------ quantize


@torch.library.custom_op("ccomp::kv_quantize", mutates_args=())
def kv_quantize(x: torch.Tensor, method: str, params: str) -> list[torch.Tensor]:
    p = _params(method, params)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (slices, tokens, head_dim), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {x.dtype}")
    q = _kv.quantize(_float32(x), method, threads=_threads_for(x.numel()), **p)
    out = []
    for name, dt, _ in layout(method, x.shape[1], x.shape[2], params):
        a = np.ascontiguousarray(q.arrays[name])
        if dt == torch.float16:
            a = a.view(np.float16)
        elif a.dtype.kind == "u" and a.itemsize > 1:  # torch's signed stand-ins for uint16/32/64
            a = a.view(a.dtype.str.replace("u", "i"))
        out.append(torch.from_numpy(a).to(x.device))
    return out


@kv_quantize.register_fake
def _(x, method, params):
    S, T, D = x.shape
    # the dtypes do not depend on the sizes: read them at a head dim every method takes
    dts = [torch_dtype(name, code) for name, code, _ in _layout(method, _probe(params), 128, params)]
    return [x.new_empty((S, n), dtype=dt) for n, dt in zip(_columns(method, T, D, params), dts)]


# ------------------------------------------------------------------ dequantize


@torch.library.custom_op("ccomp::kv_dequantize", mutates_args=())
def kv_dequantize(arrays: list[torch.Tensor], method: str, params: str, tokens: int, head_dim: int) -> torch.Tensor:
    p = _params(method, params)
    if not arrays:
        raise ValueError("arrays must hold the method's arrays, got an empty list")
    out = _core.kv_dequantize(_kv_params.CODE[method], tokens, head_dim, p, tuple(_host(a) for a in arrays),
                              _threads(None))
    return torch.from_numpy(out).to(arrays[0].device)


@kv_dequantize.register_fake
def _(arrays, method, params, tokens, head_dim):
    return arrays[0].new_empty((arrays[0].shape[0], tokens, head_dim), dtype=torch.float32)


# ------------------------------------------------------------------ attention


def _segments(arrays, spec, tokens, head_dim, name):
    """[(method, params dict, tokens, [arrays])] of a side; ValueError when the arrays do not add up."""
    try:
        segs = json.loads(spec)
    except ValueError as e:
        raise ValueError(f"{name}_segments must be the JSON of [[method, params], ...] ({e})") from None
    if not isinstance(segs, list) or len(segs) != len(tokens):
        raise ValueError(f"{name}_segments must list one [method, params] per entry of {name}_tokens "
                         f"({len(tokens)}), got {spec!r:.80}")
    out, at = [], 0
    for seg, T in zip(segs, tokens):
        if not (isinstance(seg, list) and len(seg) == 2 and isinstance(seg[0], str)):
            raise ValueError(f"{name}_segments entries must be [method, params], got {seg!r:.80}")
        method, params = seg
        p = _params(method, params_json(params))
        count = len(_kv_params.layout(method, int(T), head_dim, p))
        if at + count > len(arrays):
            raise ValueError(f"{name}_arrays holds {len(arrays)} arrays, fewer than its segments need")
        out.append((method, p, int(T), arrays[at:at + count]))
        at += count
    if at != len(arrays):
        raise ValueError(f"{name}_arrays holds {len(arrays)} arrays, its segments need {at}")
    return out


@torch.library.custom_op("ccomp::kv_attention", mutates_args=())
def kv_attention(q: torch.Tensor, k_arrays: list[torch.Tensor], v_arrays: list[torch.Tensor], k_segments: str,
                 v_segments: str, k_tokens: list[int], v_tokens: list[int], k_dense: torch.Tensor,
                 v_dense: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    if q.dim() != 4 or k_dense.dim() != 4 or v_dense.dim() != 4:
        raise ValueError(f"q, k_dense and v_dense must be 4-D (B, heads, tokens, head_dim), got shapes "
                         f"{tuple(q.shape)}, {tuple(k_dense.shape)} and {tuple(v_dense.shape)}")
    B, H, nq, D = q.shape
    G, Tk, Tv = k_dense.shape[1], k_dense.shape[2], v_dense.shape[2]
    if k_dense.shape[0] != B or v_dense.shape[:2] != k_dense.shape[:2] or k_dense.shape[3] != D:
        raise ValueError(f"k_dense and v_dense must have shapes ({B}, G, Tk, {D}) and ({B}, G, Tv, Dv) with q's batch "
                         f"and head dim, got {tuple(k_dense.shape)} and {tuple(v_dense.shape)}")
    if G < 1 or H % G:
        raise ValueError(f"query heads ({H}) must be a multiple of the K/V heads ({G})")
    if causal and min(Tk, Tv) < nq:
        raise ValueError(f"causal attention needs the {nq} queries' own tokens in the dense parts, which hold "
                         f"{Tk} and {Tv}")
    Dv = v_dense.shape[3]
    ks = _segments(k_arrays, k_segments, k_tokens, D, "k")
    vs = _segments(v_arrays, v_segments, v_tokens, Dv, "v")
    if sum(t for _, _, t, _ in ks) + Tk != sum(t for _, _, t, _ in vs) + Tv:
        raise ValueError(f"K holds {sum(t for _, _, t, _ in ks) + Tk} tokens and V "
                         f"{sum(t for _, _, t, _ in vs) + Tv}")
    if not ks and not Tk:
        raise ValueError("attention over an empty cache: no segment and no dense token")
    qa = _float32(q)
    kd, vd = _float32(k_dense).reshape(B * G, Tk * D), _float32(v_dense).reshape(B * G, Tv * Dv)
    th = _threads_for(B * G * (sum(k_tokens) + Tk) * D)
    dense = _kv_params.CODE["dense"]
    out = np.empty((B, H, nq, Dv), np.float32)
    for b in range(B):
        rows = slice(b * G, (b + 1) * G)
        kp = [(_kv_params.CODE[m], T, D, p, tuple(_host(x[rows]) for x in a)) for m, p, T, a in ks if T]
        vp = [(_kv_params.CODE[m], T, Dv, p, tuple(_host(x[rows]) for x in a)) for m, p, T, a in vs if T]
        # without a causal limit every query sees every token: one call; else query i sees the dense tokens up
        # to its own (the core reads each dense row's prefix)
        for i in (range(nq) if causal and nq > 1 else [None]):
            cut = Tk if i is None else Tk - nq + i + 1
            vcut = Tv if i is None else Tv - nq + i + 1
            kseg = kp + ([(dense, cut, D, {}, (kd[rows],))] if cut else [])
            vseg = vp + ([(dense, vcut, Dv, {}, (vd[rows],))] if vcut else [])
            qi = qa[b] if i is None else qa[b, :, i:i + 1]
            res = _core.kv_attention(np.ascontiguousarray(qi), kseg, vseg, G, float(scale), th)
            if i is None:
                out[b] = res
            else:
                out[b, :, i:i + 1] = res
    if not np.isfinite(out).all():
        raise ValueError("attention output is not finite: scale * q K^T overflows float32 or a cache holds "
                         "non-finite values")
    return torch.from_numpy(out).to(q.device)


@kv_attention.register_fake
def _(q, k_arrays, v_arrays, k_segments, v_segments, k_tokens, v_tokens, k_dense, v_dense, scale, causal):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2], v_dense.shape[3]), dtype=torch.float32)

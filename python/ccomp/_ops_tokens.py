"""torch custom ops of :mod:`ccomp.tokens` (namespace ``ccomp::``), and the torch forms of its merges.

The merges of ToMe, PruMerge and VisionZip are two steps:

1. a **plan** (``ccomp::tome_match``, ``ccomp::prumerge_match``, ``ccomp::visionzip_match``,
   ``ccomp::fastv_topk``): which token goes to which output row, decided without gradients on the
   similarity of ccomp.tokens (the same C core, so the same matching as the NumPy functions);
2. **the merge** ``ccomp::token_merge(x, rows, dst, w, div)``: output row ``o`` of sub-image ``b`` is
   ``sum(w[b, m] * x[b, rows[b, m]] for dst[b, m] == o) / div[b, o]``, summed in float64 in the order
   of ``m`` (on the CPU by the C core that the NumPy functions use, so the values are equal bit for
   bit). Its backward is the transpose of the merge: each output row's gradient, times ``w / div``,
   scattered back to the rows it came from; ``w`` and ``div`` get theirs too (sizes and attention
   weights that carry gradients).

Every op has a fake implementation (shapes only), so ``torch.compile(fullgraph=True)`` traces a
model that calls them without a graph break. PruMerge with ``ratio=None`` (an adaptive count per
sub-image) decides its output size from the data: it runs eagerly, one sub-image at a time.
"""
import numpy as np
import torch

from . import _core
from . import _tokens_host as _tk
from ._args import first_nonfinite as _first_nonfinite
from ._args import threads as _threads
from ._torchio import first_tensor, to_numpy

__all__ = ["tome_merge", "prumerge", "visionzip", "fastv_select"]

Tensor = torch.Tensor


def _nthreads(threads):
    return _threads(None if threads == 0 else threads)


def _plan_keys(t, name):
    """Keys for the C core's top-k (NumPy, validated) or, for a CUDA tensor, the GPU's DeviceKeys."""
    if t.device.type == "cpu":
        k, _ = _tk._tokens3(to_numpy(t), name)
        return np.ascontiguousarray(k)
    from . import _tokens_gpu
    return _tokens_gpu.DeviceKeys(t.float() if t.dtype == torch.bfloat16 else t, name)


def _scores(t, name, nonneg=True):
    """[B, N] float64 scores (attention, sizes) as NumPy, checked (finite; >= 0 unless nonneg=False)."""
    a = to_numpy(t.detach().cpu())
    x = np.empty(tuple(a.shape) + (1,))
    return _tk._rows(a, x, name, nonneg)


def _long(a, device):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)


# ------------------------------------------------------------------ the merge


@torch.library.custom_op("ccomp::token_merge", mutates_args=())
def token_merge(x: Tensor, rows: Tensor, dst: Tensor, w: Tensor, div: Tensor, threads: int = 0) -> Tensor:
    """``out[b, o] = sum_{m: dst[b, m] = o} w[b, m] x[b, rows[b, m]] / div[b, o]``.

    x ``[B, N, D]`` float; rows, dst ``[B, M]`` int64; w ``[B, M]``; div ``[B, n_out]``. Returns
    ``[B, n_out, D]`` in x's dtype (summed in float64, rounded to float32, or kept in float64 for
    float64 x)."""
    B, N, D = x.shape
    n_out = div.shape[1]
    if x.device.type == "cpu":
        xn = to_numpy(x)
        _tk._finite(xn, "tokens")
        bsel = np.repeat(np.arange(B, dtype=np.int64), rows.shape[1])
        r = rows.numpy().reshape(-1)
        d = (dst.numpy() + np.arange(B, dtype=np.int64)[:, None] * n_out).reshape(-1)
        wn = np.ascontiguousarray(w.detach().double().numpy().reshape(-1))
        dv = np.ascontiguousarray(div.detach().double().numpy().reshape(-1))
        out = _core.tokens_gather_sum(np.ascontiguousarray(xn), bsel, r, d, wn, B * n_out, _nthreads(threads), dv,
                                      x.dtype != torch.float64)
        bad = _first_nonfinite(out)
        if bad is not None:
            raise ValueError(f"tokens: a merged token overflows {out.dtype} ({out[bad]} at output row {bad[0]}): "
                             f"the weighted sum of these finite tokens leaves its range; scale the tokens down")
        return torch.from_numpy(out.reshape(B, n_out, D)).to(x.dtype)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("tokens has a NaN or infinite value")
    xr = torch.gather(x.double(), 1, rows[..., None].expand(-1, -1, D))
    acc = torch.zeros((B, n_out, D), dtype=torch.float64, device=x.device)
    acc.scatter_add_(1, dst[..., None].expand(-1, -1, D), w.double()[..., None] * xr)
    out = acc / div.double()[..., None]
    return (out if x.dtype == torch.float64 else out.float()).to(x.dtype)


@token_merge.register_fake
def _(x, rows, dst, w, div, threads=0):
    return x.new_empty((x.shape[0], div.shape[1], x.shape[2]))


def _merge_setup(ctx, inputs, output):
    x, rows, dst, w, div, _ = inputs
    ctx.save_for_backward(x, rows, dst, w, div, output)


def _merge_backward(ctx, g):
    # the transpose of the merge: output row o's gradient, times w / div, back to each row that went into o
    x, rows, dst, w, div, out = ctx.saved_tensors
    D = x.shape[2]
    gx = gw = gdiv = None
    gd = torch.gather(g, 1, dst[..., None].expand(-1, -1, D))
    dv = torch.gather(div, 1, dst)
    if ctx.needs_input_grad[0]:
        coef = (w / dv).to(g.dtype)
        gx = torch.zeros_like(x).scatter_add(1, rows[..., None].expand(-1, -1, D), (coef[..., None] * gd).to(x.dtype))
    if ctx.needs_input_grad[3]:
        xr = torch.gather(x, 1, rows[..., None].expand(-1, -1, D))
        gw = ((xr * gd).sum(-1).to(dv.dtype) / dv).to(w.dtype)
    if ctx.needs_input_grad[4]:
        gdiv = (-(out * g).sum(-1).to(div.dtype) / div).to(div.dtype)
    return gx, None, None, gw, gdiv, None


token_merge.register_autograd(_merge_backward, setup_context=_merge_setup)


# ------------------------------------------------------------------ plans (no gradient)


@torch.library.custom_op("ccomp::tome_match", mutates_args=())
def tome_match(metric: Tensor, sizes: Tensor, r: int, cls_token: bool, threads: int = 0) -> tuple[Tensor, Tensor]:
    """ToMe's bipartite matching as contributions ``(rows [B, N], dst [B, N])`` (ccomp.tokens._tome_plan);
    ``sizes`` is only checked (finite, > 0). 0 < r <= (N - cls_token) // 2."""
    B, N = metric.shape[:2]
    s = _scores(sizes, "sizes")
    if (s <= 0).any():
        raise ValueError("sizes must be > 0")
    rows, dst, _ = _tk._tome_plan(_plan_keys(metric, "metric"), B, N, r, cls_token, _nthreads(threads))
    return _long(rows, metric.device), _long(dst, metric.device)


@tome_match.register_fake
def _(metric, sizes, r, cls_token, threads=0):
    B, N = metric.shape[:2]
    return metric.new_empty((B, N), dtype=torch.int64), metric.new_empty((B, N), dtype=torch.int64)


def _prumerge_m(N, k, neighbors, extra_token):
    return k + k * min(neighbors, N - 1) + ((N - k) if extra_token else 0)


@torch.library.custom_op("ccomp::prumerge_match", mutates_args=())
def prumerge_match(keys: Tensor, attention: Tensor, k: int, neighbors: int, extra_token: bool,
                   threads: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """PruMerge's choices keeping k tokens per sub-image: ``(kept [B, k], rows [B, M], dst [B, M])``,
    the first k contributions of weight 1, the others weighted by attention (ccomp.tokens._prumerge_plan)."""
    B, N = keys.shape[:2]
    a = _scores(attention, "cls_attention")
    plan = _tk._prumerge_plan(_plan_keys(keys, "keys"), a, N, [k] * B, neighbors, extra_token, _nthreads(threads))
    M = _prumerge_m(N, k, neighbors, extra_token)
    kept = np.stack([p[0] for p in plan]) if B else np.zeros((0, k), np.int64)
    rows = np.stack([p[1] for p in plan]) if B else np.zeros((0, M), np.int64)
    dst = np.stack([p[2] for p in plan]) if B else np.zeros((0, M), np.int64)
    return _long(kept, keys.device), _long(rows, keys.device), _long(dst, keys.device)


@prumerge_match.register_fake
def _(keys, attention, k, neighbors, extra_token, threads=0):
    B, N = keys.shape[:2]
    M = _prumerge_m(N, k, neighbors, extra_token)
    i64 = torch.int64
    return keys.new_empty((B, k), dtype=i64), keys.new_empty((B, M), dtype=i64), keys.new_empty((B, M), dtype=i64)


def _visionzip_sizes(N, dominant, contextual):
    """(targets, contributions) of VisionZip's plan."""
    n_rest = N - dominant
    nt = len(range(0, n_rest, max(1, n_rest // contextual))[:contextual]) if contextual > 0 and n_rest > 0 else 0
    return nt, dominant + nt + ((n_rest - nt) if nt else 0)


@torch.library.custom_op("ccomp::visionzip_match", mutates_args=())
def visionzip_match(keys: Tensor, attention: Tensor, dominant: int, contextual: int,
                    threads: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """VisionZip's choices ``(dominant, targets, rows, dst, w, div)`` (ccomp.tokens._visionzip_plan);
    w and div float64."""
    B, N = keys.shape[:2]
    a = _scores(attention, "cls_attention")
    d, t, rows, dst, w, div = _tk._visionzip_plan(_plan_keys(keys, "keys"), a, N, dominant, contextual,
                                                  _nthreads(threads))
    dev = keys.device
    return (_long(d, dev), _long(t, dev), _long(rows, dev), _long(dst, dev), torch.from_numpy(w).to(dev),
            torch.from_numpy(div).to(dev))


@visionzip_match.register_fake
def _(keys, attention, dominant, contextual, threads=0):
    B, N = keys.shape[:2]
    nt, M = _visionzip_sizes(N, dominant, contextual)
    i64, f64 = torch.int64, torch.float64
    return (keys.new_empty((B, dominant), dtype=i64), keys.new_empty((B, nt), dtype=i64),
            keys.new_empty((B, M), dtype=i64), keys.new_empty((B, M), dtype=i64),
            keys.new_empty((B, M), dtype=f64), keys.new_empty((B, dominant + nt), dtype=f64))


@torch.library.custom_op("ccomp::fastv_topk", mutates_args=())
def fastv_topk(attention: Tensor, keep: int) -> Tensor:
    """The ``keep`` largest scores of each row of ``attention [B, N]`` (ties: lower index), ascending."""
    a = _scores(attention, "attention", nonneg=False)
    idx = np.stack([np.sort(_tk._top_by_weight(row, keep)) for row in a]) if len(a) else np.zeros((0, keep))
    return _long(idx, attention.device)


@fastv_topk.register_fake
def _(attention, keep):
    return attention.new_empty((attention.shape[0], keep), dtype=torch.int64)


# ------------------------------------------------------------------ the torch forms of ccomp.tokens


def _as_tensor(v, like):
    if v is None or isinstance(v, torch.Tensor):
        return v
    return torch.as_tensor(np.asarray(v), device=like.device)


def _tokens(t, name="tokens"):
    """(tokens as [B, N, D], whether the input was 2-D), with the shape checks of ccomp.tokens."""
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
    if t.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape [B, N, D] or [N, D], got {tuple(t.shape)}")
    squeeze = t.dim() == 2
    x = t[None] if squeeze else t
    if x.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 tokens per sub-image, got N = {x.shape[1]}")
    if x.shape[2] < 1:
        raise ValueError(f"{name} needs at least one channel, got D = 0")
    return x, squeeze


def _like_rows(t, x, name, squeeze):
    """A [B, N] tensor of per-token scores (a [N] one for a single sub-image)."""
    if t.dim() == 1 and (squeeze or x.shape[0] == 1):
        t = t[None]
    if tuple(t.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{name} must have shape {list(x.shape[:2])} (one value per token), got {list(t.shape)}")
    return t


def _keys_like(k, x, name, squeeze):
    if k is None:
        return x.detach()
    k, _ = _tokens(k, name)
    if tuple(k.shape[:2]) != tuple(x.shape[:2]):
        raise ValueError(f"{name} must have {x.shape[0]} x {x.shape[1]} rows like the tokens, got shape "
                         f"{tuple(k.shape[1:] if squeeze else k.shape)}")
    return k.detach()


def _size_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _threads_arg(threads):
    return 0 if threads is None else _threads(threads)


def tome_merge(tokens, r, metric=None, sizes=None, cls_token=False, threads=None):
    """:func:`ccomp.tokens.tome_merge` on torch tensors, differentiable w.r.t. ``tokens`` and ``sizes``.

    Returns ``(merged [B, N - r, D] in the tokens' dtype, sizes [B, N - r], source [B, N] int64)``;
    sizes are float32 (float64 for float64 tokens) unless given in another float dtype."""
    tokens = _as_tensor(tokens, first_tensor(tokens, metric, sizes))
    x, squeeze = _tokens(tokens)
    B, N, D = x.shape
    r = _tk._count(r, "r", 0, N)
    cls_token = _tk._flag("cls_token", cls_token)
    r = min(r, (N - int(cls_token)) // 2)
    m = _keys_like(_as_tensor(metric, x), x, "metric", squeeze)
    if sizes is None:
        s = torch.ones((B, N), dtype=_size_dtype(x), device=x.device)
    else:
        s = _like_rows(_as_tensor(sizes, x), x, "sizes", squeeze)
        if not s.is_floating_point() or s.dtype in (torch.float16, torch.bfloat16):
            s = s.to(_size_dtype(x))
    th = _threads_arg(threads)
    if r == 0:
        src = torch.arange(N, device=x.device).expand(B, N)
        out = (x.clone(), s.clone(), src.clone())
        return tuple(o[0] for o in out) if squeeze else out
    rows, dst = torch.ops.ccomp.tome_match(m, s.detach(), r, cls_token, th)
    nu = (N + 1) // 2 - r
    nb = N // 2
    sg = torch.gather(s, 1, rows)
    merged = torch.zeros((B, nb), dtype=s.dtype, device=x.device).scatter_add(1, dst[:, nu:] - nu, sg[:, nu:])
    ones = torch.ones((B, nu), dtype=s.dtype, device=x.device)
    w = torch.cat([ones, sg[:, nu:]], dim=1)
    div = torch.cat([ones, merged], dim=1)
    out = torch.ops.ccomp.token_merge(x, rows, dst, w, div, th)
    out_s = torch.cat([sg[:, :nu], merged], dim=1)
    source = torch.zeros((B, N), dtype=torch.int64, device=x.device).scatter(1, rows, dst)
    if squeeze:
        return out[0], out_s[0], source[0]
    return out, out_s, source


def prumerge(tokens, cls_attention, keys=None, ratio=None, neighbors=32, extra_token=True, threads=None):
    """:func:`ccomp.tokens.prumerge` on torch tensors, differentiable w.r.t. ``tokens`` and
    ``cls_attention``. Returns ``(tokens, indices)``, lists of B tensors. A fixed ``ratio`` runs as
    one op over all sub-images (traceable); ``ratio=None`` picks each sub-image's count eagerly."""
    tokens = _as_tensor(tokens, first_tensor(tokens, cls_attention, keys))
    x, squeeze = _tokens(tokens)
    B, N, D = x.shape
    a = _like_rows(_as_tensor(cls_attention, x), x, "cls_attention", squeeze)
    if ratio is not None:
        ratio = _tk._real("ratio", ratio, 0.0, 1.0, lo_open=True)
    neighbors = _tk._count(neighbors, "neighbors", 1, 1 << 20)
    extra_token = _tk._flag("extra_token", extra_token)
    k = _keys_like(_as_tensor(keys, x), x, "keys", squeeze)
    th = _threads_arg(threads)

    def run(xs, as_, ks, count):
        kept, rows, dst = torch.ops.ccomp.prumerge_match(ks, as_.detach(), count, neighbors, extra_token, th)
        w = torch.cat([torch.ones((xs.shape[0], count), dtype=as_.dtype, device=xs.device),
                       torch.gather(as_, 1, rows[:, count:])], dim=1)
        div = torch.ones((xs.shape[0], count + int(extra_token)), dtype=as_.dtype, device=xs.device)
        return torch.ops.ccomp.token_merge(xs, rows, dst, w, div, th), kept

    if ratio is not None:
        out, kept = run(x, a, k, min(N, max(1, int(N * ratio))))
        return list(out.unbind(0)), list(kept.unbind(0))
    counts = _tk._prumerge_counts(_scores(a, "cls_attention"), N, None)
    res = [run(x[b:b + 1], a[b:b + 1], k[b:b + 1], counts[b]) for b in range(B)]
    return [o[0][0] for o in res], [o[1][0] for o in res]


def visionzip(tokens, cls_attention, keys=None, dominant=54, contextual=10, threads=None):
    """:func:`ccomp.tokens.visionzip` on torch tensors, differentiable w.r.t. ``tokens``."""
    tokens = _as_tensor(tokens, first_tensor(tokens, cls_attention, keys))
    x, squeeze = _tokens(tokens)
    B, N, D = x.shape
    a = _like_rows(_as_tensor(cls_attention, x), x, "cls_attention", squeeze)
    dominant = _tk._count(dominant, "dominant", 0, N)
    contextual = _tk._count(contextual, "contextual", 0, N - dominant)
    k = _keys_like(_as_tensor(keys, x), x, "keys", squeeze)
    th = _threads_arg(threads)
    d, t, rows, dst, w, div = torch.ops.ccomp.visionzip_match(k, a.detach(), dominant, contextual, th)
    out = torch.ops.ccomp.token_merge(x, rows, dst, w, div, th)
    if squeeze:
        return out[0], d[0], t[0]
    return out, d, t


def fastv_select(tokens, attention, keep=None, ratio=0.5):
    """:func:`ccomp.tokens.fastv_select` on torch tensors (a gather: differentiable w.r.t. ``tokens``)."""
    tokens = _as_tensor(tokens, first_tensor(tokens, attention))
    x, squeeze = _tokens(tokens)
    B, N, D = x.shape
    a = _like_rows(_as_tensor(attention, x), x, "attention", squeeze)
    if keep is None:
        ratio = _tk._real("ratio", ratio, 0.0, 1.0, hi_open=True)
        keep = N - int(N * ratio)
    keep = _tk._count(keep, "keep", 1, N)
    idx = torch.ops.ccomp.fastv_topk(a.detach(), keep)
    out = torch.gather(x, 1, idx[..., None].expand(-1, -1, D))
    if squeeze:
        return out[0], idx[0]
    return out, idx

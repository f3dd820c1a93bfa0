"""GPU path of ccomp.tokens (kernels/tokens.cu): the similarity top-k on CUDA arrays.

ccomp.tokens sends its similarity top-k here when the keys (or the tokens, when no keys are given)
are CUDA arrays: torch tensors, CuPy arrays, anything with ``__cuda_array_interface__`` (such as
:class:`ccomp._device.DeviceArray`) or a CUDA ``__dlpack__``; float32, float64 or float16, shape
``[B, N, D]`` or ``[N, D]``, channels contiguous and any token / sub-image stride.

Results are bit-identical to the CPU core (``ccomp._core.tokens_topk``, csrc/tokens/similarity.c):
the same indices and the same float32 similarities, ties to the lower token index.  The N x N
similarity matrix is never stored on the device either; the workspace holds the keys normalized to
fp16, per-token norms and per-row candidate lists of ``2 k + 128`` entries.  ``k`` up to 64 runs on
the GPU; a larger ``k`` copies the keys to the host and runs the CPU core.

What runs where:
  - ``most_similar``: on the GPU; the outputs are device arrays of the input's kind (torch in ->
    torch out, CuPy in -> CuPy out, otherwise :class:`DeviceArray`).
  - ``correlation_compress``: the similarity and its decisions on the GPU; the [B, N] results
    (density, max_similarity, redundant, keep) and the kept indices are small host NumPy arrays,
    and so are ``cls_attention`` (copied to the host) and the sampling.  ``cls=`` computes its
    softmax on a host copy of the keys (float64, as on the CPU).  The kept tokens stay on the
    tokens' device (torch/CuPy indexing; other CUDA arrays through a host copy); ``merge=True``
    merges a host copy of the tokens in float64 exactly as the CPU does and moves the result back.
  - ``tome_merge``, ``prumerge``, ``visionzip``: the top-k on the GPU (metric/keys, or the tokens);
    the merging arithmetic runs on a host copy of the tokens and returns NumPy arrays, as on the CPU.
  - ``fastv_select`` needs no similarity: CUDA inputs are copied to the host.

Work is queued on the framework's current stream for the data's device (the legacy default stream
for other arrays); every call waits for it, to report NaN or infinite keys with the CPU's message.
Without a usable GPU every function raises ``RuntimeError`` before touching the data.
"""
import sys

import numpy as np

from ._args import integer as _integer
from ._device import DeviceArray, _dtype_name, _empty, _ext, _from_host, _on_stream, _ptr, _same_device, _stream, _view
from ._device import on_device

__all__ = ["DeviceKeys", "most_similar", "topk", "to_host", "MAX_K", "last_stats"]

MAX_K = 64
_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}

#: what the last GPU top-k reported: {"overflow_rows", "workspace_bytes", "slices"} (for kernels/gpu_check.py)
last_stats = {}


def on_gpu(a):
    """True for a CUDA array (never for NumPy or a CPU tensor)."""
    return a is not None and not isinstance(a, np.ndarray) and on_device(a)


class DeviceKeys:
    """A validated ``[B, N, D]`` view of keys in GPU memory (2-D input counts as B = 1)."""

    def __init__(self, obj, name="keys"):
        self.ext = _ext(f"ccomp.tokens on CUDA {name}")
        v = _view(obj, name, self.ext)
        if not isinstance(v.dtype, np.dtype) or v.dtype not in _CODES:
            raise TypeError(f"{name} must be float16, float32 or float64, got {_dtype_name(v.dtype)}")
        if len(v.shape) not in (2, 3):
            raise ValueError(f"{name} must have shape [B, N, D] or [N, D], got {tuple(v.shape)}")
        self.squeeze = len(v.shape) == 2
        shape = (1,) + tuple(v.shape) if self.squeeze else tuple(v.shape)
        strides = (0,) + tuple(v.strides) if self.squeeze else tuple(v.strides)
        B, N, D = shape
        if N < 2:
            raise ValueError(f"{name} needs at least 2 tokens per sub-image, got N = {N}")
        if D < 1:
            raise ValueError(f"{name} needs at least one channel, got D = 0")
        if B < 1:
            raise ValueError(f"{name} holds no sub-image (shape {tuple(v.shape)})")
        if D > 1 and strides[2] != 1:
            raise ValueError(f"{name} must have contiguous channels (strides {tuple(v.strides)} in elements); "
                             f"make it contiguous")
        if any(s < 0 for s in strides):
            raise ValueError(f"{name} has negative strides {tuple(v.strides)}; make it contiguous")
        self.obj, self.v, self.name = obj, v, name
        self.shape = (B, N, D)
        self.sb = strides[0] if B > 1 else N * max(strides[1], D)
        self.sn = strides[1] if N > 1 else D
        self.code = _CODES[v.dtype]
        self.dtype = v.dtype


def to_host(a, name="array"):
    """A NumPy copy of a CUDA array (RuntimeError without a GPU)."""
    ext = _ext(f"ccomp.tokens on a CUDA {name}")
    if getattr(a, "requires_grad", False) and hasattr(a, "detach"):
        a = a.detach()
    if type(a).__module__.split(".")[0] == "torch":
        if str(a.dtype) == "torch.bfloat16":
            raise TypeError(f"{name} must be float16, float32 or float64, got bfloat16")
        return a.cpu().numpy()
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    if isinstance(a, DeviceArray):
        return a.get()
    v = _view(a, name, ext)
    if not isinstance(v.dtype, np.dtype):
        raise TypeError(f"{name} must be float16, float32 or float64, got {_dtype_name(v.dtype)}")
    n = int(np.prod(v.shape, dtype=np.int64))
    span = 1 + sum((s - 1) * st for s, st in zip(v.shape, v.strides)) if n else 0
    raw = ext.to_host(v.ptr, span * v.dtype.itemsize) if span else b""
    flat = np.frombuffer(raw, dtype=v.dtype)
    return np.lib.stride_tricks.as_strided(flat, v.shape, tuple(s * v.dtype.itemsize for s in v.strides)).copy()


def _numpy(a):
    if isinstance(a, DeviceArray):
        return a.get()
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return a.cpu().numpy()


def _reshape(a, shape):
    if isinstance(a, DeviceArray):
        return DeviceArray(a._capsule, a.ptr, shape, a.dtype)
    return a.reshape(shape)


def _new(like, shape, dtype, ext):
    """A new device array of like's kind (torch's int64 included, which _kv_gpu's helper does not map)."""
    if like.kind == "torch":
        torch = sys.modules["torch"]
        tdt = {np.dtype(np.int64): torch.int64, np.dtype(np.float32): torch.float32,
               np.dtype(np.uint8): torch.uint8}[np.dtype(dtype)]
        return torch.empty(tuple(int(s) for s in shape), dtype=tdt, device=like.obj.device)
    return _empty(like, shape, dtype, ext)


def _offsets(lists):
    off = np.zeros(len(lists) + 1, dtype=np.uint64)
    off[1:] = np.cumsum([len(x) for x in lists])
    flat = np.concatenate(lists).astype(np.int64) if len(lists) else np.zeros(0, np.int64)
    return np.ascontiguousarray(flat), off


def topk_device(dk, rows, cols, exclude_self, k):
    """(index int64 [R, k], similarity float32 [R, k]) device arrays of dk's kind; R = all rows, in order."""
    ext = dk.ext
    B, N, D = dk.shape
    if len(rows) != B or len(cols) != B:
        raise ValueError(f"expected row and candidate lists for {B} sub-images, got {len(rows)} and {len(cols)}")
    r, ro = _offsets(rows)
    c, co = _offsets(cols)
    seen = {}  # lists are often one array repeated for every sub-image: check each once
    for x in cols:
        if id(x) not in seen:
            seen[id(x)] = len(np.unique(x)) == len(x)
    distinct = all(seen.values())
    ws_bytes = ext.tokens_workspace(B, N, D, ro, co, int(k))
    handle = _stream(dk.v, None)
    R = int(ro[-1])
    with _on_stream(dk.v, handle):
        oi = _new(dk.v, (R, k), np.int64, ext)
        ov = _new(dk.v, (R, k), np.float32, ext)
        ws = _new(dk.v, (ws_bytes,), np.uint8, ext)
    bad, over, wsb, slices = ext.tokens_topk(dk.v.ptr, dk.code, B, N, D, dk.sb, dk.sn, r, ro, c, co,
                                             bool(exclude_self), int(k), distinct, _ptr(oi, ext), _ptr(ov, ext),
                                             _ptr(ws, ext), ws_bytes, handle, True)
    if bad >= 0:
        idx = tuple(int(i) for i in np.unravel_index(bad, (B, N, D)))
        raise ValueError(f"{dk.name} has a NaN or infinite value at index {idx}")
    last_stats.clear()
    last_stats.update(overflow_rows=over, workspace_bytes=wsb, slices=slices, rows=R)
    return oi, ov


def _gpu_k(k):
    if k > MAX_K:
        raise ValueError(f"k = {k} is above the GPU's limit of {MAX_K} (ccomp.tokens runs a larger k on the CPU)")
    return k


def topk(dk, rows, cols, exclude_self, k):
    """ccomp.tokens._topk for device keys and k up to MAX_K: per sub-image host (index, similarity) arrays."""
    oi, ov = topk_device(dk, rows, cols, exclude_self, _gpu_k(k))
    idx, val = _numpy(oi), _numpy(ov)
    out_i, out_v, at = [], [], 0
    for rb in rows:
        out_i.append(idx[at:at + len(rb)])
        out_v.append(val[at:at + len(rb)])
        at += len(rb)
    return out_i, out_v


def most_similar(keys, k=1):
    """ccomp.tokens.most_similar on CUDA keys (or a DeviceKeys) for k up to MAX_K: device (index int64,
    similarity float32) arrays."""
    dk = keys if isinstance(keys, DeviceKeys) else DeviceKeys(keys, "keys")
    B, N, D = dk.shape
    k = _gpu_k(_integer("k", k, 1, N - 1))
    shape = (N, k) if dk.squeeze else (B, N, k)
    allr = [np.arange(N)] * B
    oi, ov = topk_device(dk, allr, allr, True, k)
    return _reshape(oi, shape), _reshape(ov, shape)


def same_device(a, b, what):
    """ValueError when two DeviceKeys live on different GPUs."""
    _same_device([a.v, b.v], what)


def gather(dk, b, idx):
    """Rows idx (host int64, ascending) of sub-image b of device tokens, on their device and kind."""
    obj = dk.obj
    mod = type(obj).__module__.split(".")[0]
    if mod == "torch":
        torch = sys.modules["torch"]
        t = obj.detach() if dk.squeeze else obj.detach()[b]
        return t.index_select(0, torch.as_tensor(idx, dtype=torch.int64, device=t.device))
    if mod == "cupy":
        cp = sys.modules["cupy"]
        with cp.cuda.Device(dk.v.device):
            t = obj if dk.squeeze else obj[b]
            return t[cp.asarray(idx)]
    host = to_host(obj, dk.name).reshape(dk.shape)[b]
    return from_host_like(dk, np.ascontiguousarray(host[idx]))


def from_host_like(dk, arr):
    """A host array moved to dk's device and kind."""
    return _from_host(dk.v, np.ascontiguousarray(arr), dk.ext)


def all_finite(dk):
    """True when torch or CuPy tokens hold no NaN or infinity (checked on their device); False for them
    otherwise and for other CUDA arrays, whose host copy the caller then checks."""
    obj = dk.obj
    mod = type(obj).__module__.split(".")[0]
    if mod == "torch":
        return bool(sys.modules["torch"].isfinite(obj.detach()).all())
    if mod == "cupy":
        return bool(sys.modules["cupy"].isfinite(obj).all())
    return False

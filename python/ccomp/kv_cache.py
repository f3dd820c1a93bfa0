"""A transformers KV cache backed by ccomp.kv, and an attention function that reads its packed codes.

:class:`CompressedCache` is a ``transformers.Cache``: pass it to ``model.generate(...,
past_key_values=cache)`` (or ``cache=``) or to a forward call.  Per layer it keeps keys and
values compressed with one of ccomp's quantizers plus a float16 window of recent tokens::

    from ccomp.kv_cache import CompressedCache
    cache = CompressedCache("kivi", config=model.config, nbits=2, q_group_size=32, residual_length=128)
    out = model.generate(ids, max_new_tokens=64, past_key_values=cache)
    cache.bits_per_element        # codes, scales, zeros, outliers, low-rank factors and the window

Importing this module registers the attention implementation ``"ccomp"`` with transformers
(``AttentionInterface`` and, for its padding masks, ``AttentionMaskInterface`` with sdpa's
masks).  With ``attn_implementation="ccomp"`` (``from_pretrained`` or
``model.set_attn_implementation("ccomp")``) every step after the prefill runs ccomp's
attention on the packed codes (``ccomp::kv_attention``): the cache is never dequantized as a
whole.  With any other attention (sdpa, eager) the cache's ``update`` returns the dequantized
K/V, as transformers' ``QuantizedCache`` does: slower, same values.

What each step attends to: the past as the cache stores it (quantized tokens dequantized by the
kernels, the window in float16) and the step's own new tokens as the model gave them (as
transformers' ``QuantizedCache`` and KIVI do).  The first prefill of an empty cache is plain
attention over the prompt.

How the attention function reaches the cache: transformers' attention modules call
``cache.update(key, value, layer_idx, kwargs=kwargs)`` with the dict of keyword arguments they
then pass on to the attention function.  When the model runs the ``"ccomp"`` attention, the
layer's ``update`` stores a description of its past (packed arrays, their token counts, the
float16 window) in that dict under ``"ccomp_past"`` and returns only the new tokens; the
attention function takes it from there.  Nothing is global, so several models and caches (and
threads) can run side by side, and dynamo traces it (``torch.compile(fullgraph=True)``).  A
model whose attention does not pass that dict gets the dequantized K/V, and the ``"ccomp"``
attention then runs sdpa on them.

>>> import torch
>>> from ccomp.kv_cache import CompressedCache
>>> cache = CompressedCache("q8_0", num_hidden_layers=1)
>>> k = v = torch.randn(1, 3, 40, 64)
>>> keys, values = cache.update(k, v, 0)
>>> cache.get_seq_length(), cache.nbytes, cache.bits_per_element
(40, 16320, 8.5)
>>> bool((keys - k).abs().max() < 0.05)
True
"""
import json

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from . import _args
from . import _kv_params
from . import _ops_kv

__all__ = ["CompressedCache", "CompressedLayer", "ccomp_attention_forward", "register", "METHODS", "ATTENTION"]

# the cache's methods: "kivi" is groupwise with KIVI's defaults (2 bits, keys per channel, values per token)
METHODS = ("kivi", "groupwise", "gear", "q8_0", "q4_0", "turbo")
# the attention implementation's name in transformers' AttentionInterface
ATTENTION = "ccomp"
# the key of the forward's keyword-argument dict under which a layer hands its past to the attention function
PAST_KEY = "ccomp_past"
# causal queries over a compressed past (chunked prefill, draft verification) take one kernel call per
# query up to this many; longer chunks attend over the dequantized past
PACKED_CAUSAL_MAX = 64

_GROUPED = ("kivi", "groupwise", "gear")
_DEFAULT_BITS = {"kivi": 2, "groupwise": 4, "gear": 4, "turbo": 3}
_DEFAULT_RESIDUAL = {"kivi": 128, "groupwise": 128, "gear": 128, "q8_0": 0, "q4_0": 0, "turbo": 0}


def _side_params(method, nbits, group, axis, outliers, rank, iters, seed, qjl):
    """The ccomp.kv params of one side (keys or values), checked."""
    base = "groupwise" if method == "kivi" else method
    p = {"bits": nbits, "group": group, "axis": axis, "outliers": outliers, "rank": rank, "iters": iters,
         "seed": seed, "qjl": qjl}
    return base, _kv_params.check_params(base, {k: p[k] for k in _kv_params.PARAM_KEYS[base]})


class _Side:
    """Keys or values of one layer: packed tokens, then a float16 window of the most recent ones.

    groupwise, q8_0, q4_0 and turbo arrays grow in place (capacity buffers ``[B*G, cap]``, doubling);
    gear and bitmap_sparse keep one segment per quantized block (each block has its own low-rank basis
    or offsets).  ``block`` windows (groups along tokens, and segment methods) quantize whole blocks of
    ``residual`` tokens when the window fills (KIVI's keys); the others keep the ``residual`` most
    recent tokens and quantize what leaves the window (KIVI's values)."""

    def __init__(self, method, params, residual):
        self.method, self.params = method, params
        self.pjson = _ops_kv.params_json(params)
        self.spec = json.dumps([[method, params]], sort_keys=True)
        self.residual = residual
        self.segmented = method in ("gear", "bitmap_sparse")
        self.unit = params["group"] if params.get("axis") == "channel" else 1
        self.block = self.segmented or self.unit > 1
        self.seed_bytes = 8 if method == "turbo" else 0  # a turbo tensor needs its seed to decode
        self.B = self.G = self.D = None

    # ------------------------------------------------------------ state
    def start(self, B, G, D, device):
        layout = _ops_kv.layout(self.method, _ops_kv._probe(self.pjson), D, self.params)  # ValueError for a bad D
        self.B, self.G, self.D = B, G, D
        self.dtypes = [dt for _, dt, _ in layout]
        self.per_unit = [n for _, _, n in _ops_kv.layout(self.method, self.unit, D, self.params)] \
            if not self.segmented else None
        self.bufs = [torch.empty((B * G, 0), dtype=dt, device=device) for dt in self.dtypes]
        self.tokens_q = 0
        self.segs = []  # segmented methods: [(arrays, tokens)]
        self.res = torch.empty((B, G, 0, D), dtype=torch.float16, device=device)

    def cols(self, tokens):
        return [tokens // self.unit * n for n in self.per_unit]

    @property
    def quantized_tokens(self):
        return sum(t for _, t in self.segs) if self.segmented else self.tokens_q

    @property
    def tokens(self):
        return self.quantized_tokens + self.res.shape[2]

    def _quantize(self, x):
        """Packs ``x`` [B, G, n, D] float16 after the quantized tokens."""
        n = x.shape[2]
        arrays = torch.ops.ccomp.kv_quantize(x.reshape(self.B * self.G, n, self.D), self.method, self.pjson)
        if self.segmented:
            self.segs.append((arrays, n))
            return
        at, end = self.cols(self.tokens_q), self.cols(self.tokens_q + n)
        for i, a in enumerate(arrays):
            buf = self.bufs[i]
            if end[i] > buf.shape[1]:  # amortised growth: the capacity doubles
                grown = buf.new_empty((buf.shape[0], max(end[i], 2 * buf.shape[1])))
                grown[:, :at[i]] = buf[:, :at[i]]
                self.bufs[i] = buf = grown
            buf[:, at[i]:end[i]] = a
        self.tokens_q += n

    def add(self, x):
        """Appends ``x`` [B, G, n, D] (any float dtype, stored as float16) and quantizes what leaves the window."""
        res = torch.cat([self.res, x.to(torch.float16)], dim=2)
        R, n = self.residual, res.shape[2]
        m = n // R * R if self.block else n - R
        if m > 0:
            self._quantize(res[:, :, :m].contiguous())
            res = res[:, :, m:]
        self.res = res

    def past(self):
        """(arrays, segment spec JSON, token counts, float16 window): the side as stored now.  The arrays stay
        valid after later appends (the buffers only grow past the tokens described, or are replaced)."""
        if self.segmented:
            arrays = [a for arrs, _ in self.segs for a in arrs]
            spec = json.dumps([[self.method, self.params]] * len(self.segs), sort_keys=True)
            return arrays, spec, [t for _, t in self.segs], self.res
        if not self.tokens_q:
            return [], "[]", [], self.res
        return list(self.bufs), self.spec, [self.tokens_q], self.res

    def dequantize(self, past, dtype):
        """[B, G, T, D] of ``dtype``: a past (from :meth:`past`) dequantized, window included."""
        arrays, _, tokens, res = past
        parts, at = [], 0
        k = len(self.dtypes)
        for t in tokens:
            x = torch.ops.ccomp.kv_dequantize(arrays[at:at + k], self.method, self.pjson, t, self.D)
            parts.append(x.view(self.B, self.G, t, self.D).to(dtype))
            at += k
        parts.append(res.to(dtype))
        return torch.cat(parts, dim=2)

    # ------------------------------------------------------------ cache edits
    def crop(self, keep):
        """Keeps the first ``keep`` tokens; packed tokens cut inside a unit (a group of tokens, a segment) go
        back to the window as the cache held them (dequantized)."""
        q = self.quantized_tokens
        if keep >= q:
            self.res = self.res[:, :, :keep - q]
            return
        if self.segmented:
            while self.segs and sum(t for _, t in self.segs) > keep:
                arrays, t = self.segs.pop()
            kept = sum(t for _, t in self.segs)
            tail = self.dequantize((arrays, None, [t], self.res[:, :, :0]), torch.float16)[:, :, :keep - kept]
        else:
            cut = keep // self.unit * self.unit
            tail = self.res[:, :, :0]
            if cut < keep:
                a, b = self.cols(cut), self.cols(cut + self.unit)
                arrays = [buf[:, i:j].contiguous() for buf, i, j in zip(self.bufs, a, b)]
                tail = self.dequantize((arrays, None, [self.unit], tail), torch.float16)[:, :, :keep - cut]
            self.tokens_q = cut
        self.res = tail.contiguous()

    def select_rows(self, index):
        """Keeps batch entries ``index`` (a 1-D tensor of batch positions, repeats allowed) in that order."""
        B2 = index.shape[0]

        def rows(a):
            return a.reshape(self.B, self.G, -1).index_select(0, index.to(a.device)).reshape(B2 * self.G, -1)

        if self.segmented:
            self.segs = [([rows(a) for a in arrays], t) for arrays, t in self.segs]
        else:
            self.bufs = [rows(b) for b in self.bufs]
        self.res = self.res.index_select(0, index.to(self.res.device))
        self.B = B2

    @property
    def nbytes(self):
        """Bytes of what decodes the side: the packed arrays' used columns, the seed where one is needed, and
        the float16 window."""
        if self.B is None:
            return 0
        S = self.B * self.G
        if self.segmented:
            packed = sum(a.numel() * a.element_size() for arrays, _ in self.segs for a in arrays)
        else:
            packed = sum(S * n * b.element_size() for n, b in zip(self.cols(self.tokens_q), self.bufs))
        seed = self.seed_bytes if self.quantized_tokens else 0
        return packed + seed + self.res.numel() * self.res.element_size()


class CompressedLayer(CacheLayerMixin):
    """One layer of a :class:`CompressedCache` (keys and values as :class:`_Side`)."""

    is_compileable = False
    is_sliding = False
    is_croppable = True

    def __init__(self, key_side, value_side, config=None):
        super().__init__()
        self.k, self.v = key_side, value_side
        self.config = config
        self.cumulative_length = 0

    def lazy_initialization(self, key_states, value_states):
        if key_states.dim() != 4 or value_states.dim() != 4 or key_states.shape[:3] != value_states.shape[:3]:
            raise ValueError(f"key_states and value_states must be (batch, kv_heads, tokens, head_dim) alike, got "
                             f"{tuple(key_states.shape)} and {tuple(value_states.shape)}")
        B, G, _, D = key_states.shape
        self.k.start(B, G, D, key_states.device)
        self.v.start(B, G, value_states.shape[3], value_states.device)
        self.device, self.dtype = key_states.device, key_states.dtype
        self.is_initialized = True

    def _packed_attention(self):
        return self.config is not None and getattr(self.config, "_attn_implementation", None) == ATTENTION

    def update(self, key_states, value_states, *args, **kwargs):
        """Appends the new tokens; returns the new tokens when the model runs the ``"ccomp"`` attention (the
        past goes to it through the forward's keyword arguments), else the dequantized past and the new
        tokens."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        elif key_states.shape[0] != self.k.B or key_states.shape[1] != self.k.G or key_states.shape[3] != self.k.D:
            raise ValueError(f"the layer holds (batch, kv_heads, head_dim) = ({self.k.B}, {self.k.G}, {self.k.D}), "
                             f"got key_states of shape {tuple(key_states.shape)}")
        past = (self.k.past(), self.v.past(), self.cumulative_length)
        self.k.add(key_states)
        self.v.add(value_states)
        self.cumulative_length += key_states.shape[2]
        forward_kwargs = kwargs.get("kwargs")
        if self._packed_attention() and isinstance(forward_kwargs, dict):
            forward_kwargs[PAST_KEY] = past
            return key_states, value_states
        if past[2] == 0:
            return key_states, value_states
        keys = torch.cat([self.k.dequantize(past[0], key_states.dtype), key_states], dim=2)
        values = torch.cat([self.v.dequantize(past[1], value_states.dtype), value_states], dim=2)
        return keys, values

    def get_mask_sizes(self, query_length):
        return self.cumulative_length + query_length, 0

    def get_seq_length(self):
        return self.cumulative_length

    def get_max_length(self):
        return -1

    def reset(self):
        if self.is_initialized:
            self.k.B = self.v.B = None
        self.is_initialized = False
        self.cumulative_length = 0

    def crop(self, tokens_to_remove):
        """Removes the last ``-tokens_to_remove`` tokens (transformers' convention: a negative count)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes minus the number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        keep = max(self.cumulative_length + tokens_to_remove, 0)
        self.k.crop(keep)
        self.v.crop(keep)
        self.cumulative_length = keep

    def reorder_cache(self, beam_idx):
        if self.is_initialized:
            self.k.select_rows(beam_idx)
            self.v.select_rows(beam_idx)

    def batch_select_indices(self, indices):
        if self.is_initialized:
            if indices.dtype == torch.bool:
                indices = indices.nonzero().flatten()
            self.reorder_cache(torch.as_tensor(indices).flatten())

    def batch_repeat_interleave(self, repeats):
        if self.is_initialized:
            self.reorder_cache(torch.arange(self.k.B).repeat_interleave(repeats))

    @property
    def nbytes(self):
        return self.k.nbytes + self.v.nbytes

    def dequantize(self):
        """``(keys, values)``: the layer's K/V as stored, dequantized (float32, ``(batch, kv_heads, tokens,
        head_dim)``)."""
        if not self.is_initialized:
            raise ValueError("the layer holds no tokens yet")
        return self.k.dequantize(self.k.past(), torch.float32), self.v.dequantize(self.v.past(), torch.float32)


class CompressedCache(Cache):
    """A transformers KV cache compressed by ccomp (one :class:`CompressedLayer` per decoder layer).

    ``method``: ``"kivi"`` (groupwise, 2 bits by default, keys per channel and values per token, as
    KIVI), ``"groupwise"`` (the same, 4 bits by default), ``"gear"`` (groupwise + outliers + low
    rank), ``"q8_0"``, ``"q4_0"`` (ggml blocks), ``"turbo"`` (rotation + Lloyd-Max, 3 bits by
    default, ``qjl`` optional).  The knobs are transformers' ``QuantizedCache``'s:

    - ``nbits``: 2, 3, 4 or 8 (groupwise, gear); 1..4 (turbo); q8_0/q4_0 take none.
    - ``q_group_size``: 32, 64 or 128 (groupwise, gear; default 32).
    - ``axis_key``, ``axis_value``: ``"channel"`` (groups of tokens of one channel) or ``"token"``
      (groups of channels of one token); default keys per channel, values per token (KIVI).
    - ``residual_length``: tokens kept in float16 (default 128 for groupwise/kivi/gear, 0 for
      q8_0, q4_0 and turbo).  Per-channel groups and gear quantize whole blocks of this many tokens
      when the window fills (so it must be a positive multiple of the group); per-token methods keep
      the ``residual_length`` most recent tokens.  At any prefill length, tokens that do not fill a
      group stay in the window.
    - gear: ``outliers``, ``rank``, ``iters``, ``seed``; turbo: ``seed``, ``qjl``.

    ``config`` (the model's config) sizes the cache and tells it which attention the model runs;
    without it give ``num_hidden_layers`` (or nothing: layers are made as they are used) and the
    cache returns dequantized K/V to any attention.  ``nbytes`` and ``bits_per_element`` count
    everything that decodes the cache (codes, scales, zeros, outliers, low-rank factors, seeds and
    the float16 window).  Bad knobs raise ValueError (TypeError for a wrong type).

    >>> from ccomp.kv_cache import CompressedCache
    >>> CompressedCache("kivi", num_hidden_layers=2, nbits=2, q_group_size=32, residual_length=64)
    CompressedCache(kivi, keys groupwise {'axis': 'channel', 'bits': 2, 'group': 32}, values groupwise {'axis': 'token', 'bits': 2, 'group': 32}, residual_length=64, 2 layers)
    >>> CompressedCache("q8_0", nbits=4)
    Traceback (most recent call last):
    ...
    ValueError: q8_0 takes no nbits (its blocks fix the bits), got 4
    """

    def __init__(self, method="kivi", config=None, *, nbits=None, q_group_size=None, residual_length=None,
                 axis_key=None, axis_value=None, outliers=0.02, rank=4, iters=2, seed=0, qjl=False,
                 num_hidden_layers=None):
        if not isinstance(method, str):
            raise TypeError(f"method must be a str, one of {METHODS}, got {type(method).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method in ("q8_0", "q4_0"):
            for name, v in (("nbits", nbits), ("q_group_size", q_group_size), ("axis_key", axis_key),
                            ("axis_value", axis_value)):
                if v is not None:
                    raise ValueError(f"{method} takes no {name} (its blocks fix the "
                                     f"{'bits' if name == 'nbits' else 'layout'}), got {v!r}")
        if method == "turbo":
            for name, v in (("q_group_size", q_group_size), ("axis_key", axis_key), ("axis_value", axis_value)):
                if v is not None:
                    raise ValueError(f"turbo takes no {name} (it rotates each token whole), got {v!r}")
        nbits = _DEFAULT_BITS.get(method) if nbits is None else nbits
        group = 32 if q_group_size is None else q_group_size
        residual = _DEFAULT_RESIDUAL[method] if residual_length is None else residual_length
        residual = _args.integer("residual_length", residual, 0, 2 ** 31 - 1)
        axes = []
        for name, v, default in (("axis_key", axis_key, "channel"), ("axis_value", axis_value, "token")):
            v = default if v is None else v
            if v not in _kv_params.AXES:
                raise ValueError(f"{name} must be 'channel' or 'token' (groups of tokens of one channel, or of "
                                 f"channels of one token), got {v!r}")
            axes.append(v)
        try:
            k_method, k_params = _side_params(method, nbits, group, axes[0], outliers, rank, iters, seed, qjl)
            v_method, v_params = _side_params(method, nbits, group, axes[1], outliers, rank, iters, seed, qjl)
        except ValueError as e:  # name the cache's knobs, not ccomp.kv's params
            raise ValueError(str(e).replace("params['bits']", "nbits").replace("params['group']", "q_group_size")
                             .replace("params[", "").replace("']", "").replace("'", "")) from None
        except TypeError as e:
            raise TypeError(str(e).replace("params['bits']", "nbits").replace("params['group']", "q_group_size")) \
                from None
        self.method, self.residual_length = method, residual
        self._sides = ((k_method, k_params), (v_method, v_params))
        for name, (m, p) in zip(("keys", "values"), self._sides):
            blocks = m in ("gear", "bitmap_sparse") or p.get("axis") == "channel"
            unit = p["group"] if p.get("axis") == "channel" else 1
            if blocks and (residual < unit or residual % unit):
                raise ValueError(f"residual_length must be a positive multiple of q_group_size ({unit}) for {name} "
                                 f"{'in groups along tokens' if unit > 1 else 'of ' + method}, got {residual}")
        text = config.get_text_config(decoder=True) if config is not None else None
        if text is not None:
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            for m, p in self._sides:
                _ops_kv.layout(m, _ops_kv._probe(_ops_kv.params_json(p)), head_dim, p)  # ValueError for this model
            num_hidden_layers = text.num_hidden_layers
        self.config = text
        if num_hidden_layers is not None:
            n = _args.integer("num_hidden_layers", num_hidden_layers, 1, 2 ** 20)
            super().__init__(layers=[self._new_layer() for _ in range(n)])
        else:
            super().__init__(layer_class_to_replicate=self._new_layer)

    def _new_layer(self):
        (km, kp), (vm, vp) = self._sides
        return CompressedLayer(_Side(km, kp, self.residual_length), _Side(vm, vp, self.residual_length), self.config)

    def __repr__(self):
        (km, kp), (vm, vp) = self._sides
        return (f"CompressedCache({self.method}, keys {km} {kp}, values {vm} {vp}, "
                f"residual_length={self.residual_length}, {len(self.layers)} layers)")

    @property
    def nbytes(self):
        """Bytes of every layer's keys and values as stored (see the class docstring)."""
        return sum(layer.nbytes for layer in self.layers)

    @property
    def bits_per_element(self):
        """``8 * nbytes`` over the elements of K and V (batch x kv heads x tokens x head dim, both sides)."""
        n = sum(layer.cumulative_length * layer.k.B * layer.k.G * (layer.k.D + layer.v.D)
                for layer in self.layers if layer.is_initialized)
        return 8.0 * self.nbytes / n if n else 0.0


# ------------------------------------------------------------------ attention


def _causal_mask(nq, P, device):
    """[nq, P + nq] bool: query i sees the past and the new tokens up to its own."""
    return torch.arange(nq, device=device)[:, None] + P >= torch.arange(P + nq, device=device)[None, :]


def _plain_causal(mask, nq, P):
    """Whether a 4-D mask (bool, or additive float) lets every query see the whole past and the new tokens
    causally (no padding to honour)."""
    allowed = mask if mask.dtype == torch.bool else mask == 0
    return allowed.shape[-2:] == (nq, P + nq) and bool(torch.equal(allowed, _causal_mask(nq, P, mask.device)
                                                                    .expand_as(allowed)))


def ccomp_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                            **kwargs):
    """transformers attention function (registered as ``"ccomp"``): ``softmax(q K^T scaling) V`` over a
    :class:`CompressedCache` layer's packed past and the new tokens, with ccomp's kernels.

    ``query`` ``(batch, heads, n_query, head_dim)``; ``key``/``value`` the new tokens (what the layer's
    ``update`` returned); the past comes in ``kwargs["ccomp_past"]`` (see the module docstring).
    Returns ``(output (batch, n_query, heads, head_dim), None)``.  Runs sdpa instead where the packed
    path does not apply: no compressed past (another cache, the first prefill), a mask with padding,
    dropout, or more than ``PACKED_CAUSAL_MAX`` causal queries (then over the dequantized past).

    >>> import torch
    >>> from ccomp.kv_cache import CompressedCache, ccomp_attention_forward
    >>> class Attn(torch.nn.Module):
    ...     config, num_key_value_groups, is_causal, training = None, 3, True, False
    >>> cache, fwd = CompressedCache("q8_0", num_hidden_layers=1), {}
    >>> cache.config = cache.layers[0].config = type("Config", (), {"_attn_implementation": "ccomp"})()
    >>> k = v = torch.randn(1, 3, 50, 64)
    >>> _ = cache.update(k, v, 0, kwargs={})                            # prefill: 50 tokens packed
    >>> q, k1 = torch.randn(1, 9, 1, 64), torch.randn(1, 3, 1, 64)
    >>> k1, v1 = cache.update(k1, k1, 0, kwargs=fwd)                    # a decode step: only the new token back
    >>> out, _ = ccomp_attention_forward(Attn(), q, k1, v1, None, scaling=0.125, **fwd)
    >>> out.shape
    torch.Size([1, 1, 9, 64])
    """
    past = kwargs.pop(PAST_KEY, None)
    sdpa_kw = dict(dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
    if past is None or past[2] == 0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **sdpa_kw)
    (k_arrays, k_spec, k_tokens, k_res), (v_arrays, v_spec, v_tokens, v_res), P = past
    nq = query.shape[2]
    packed = not (dropout and module.training) and nq <= PACKED_CAUSAL_MAX
    if packed and attention_mask is not None:
        packed = _plain_causal(attention_mask, nq, P)
    if not packed:  # attend over the dequantized past and the new tokens (same values, sdpa's masks)
        k_full = torch.cat([_dequantize_past(k_arrays, k_spec, k_tokens, k_res, key), key], dim=2)
        v_full = torch.cat([_dequantize_past(v_arrays, v_spec, v_tokens, v_res, value), value], dim=2)
        if attention_mask is None:
            attention_mask = _causal_mask(nq, P, query.device)[None, None]
        return sdpa_attention_forward(module, query, k_full, v_full, attention_mask, **sdpa_kw)
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    k_dense = torch.cat([k_res.float(), key.float()], dim=2)
    v_dense = torch.cat([v_res.float(), value.float()], dim=2)
    out = torch.ops.ccomp.kv_attention(query, k_arrays, v_arrays, k_spec, v_spec, k_tokens, v_tokens, k_dense,
                                       v_dense, scale, nq > 1)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _dequantize_past(arrays, spec, tokens, res, like):
    """[B, G, T, D] of ``like``'s dtype: a packed past (segments then the float16 window) dequantized."""
    segs = json.loads(spec)
    B, G, _, D = res.shape
    parts, at = [], 0
    for (method, params), t in zip(segs, tokens):
        pj = _ops_kv.params_json(params)
        k = len(_ops_kv.layout(method, _ops_kv._probe(pj), D, params))
        x = torch.ops.ccomp.kv_dequantize(arrays[at:at + k], method, pj, t, D)
        parts.append(x.view(B, G, t, D).to(like.dtype))
        at += k
    parts.append(res.to(like.dtype))
    return torch.cat(parts, dim=2)


def register(name=ATTENTION):
    """Registers :func:`ccomp_attention_forward` with transformers as ``name`` (with sdpa's mask function, so
    that padding masks reach it); done when this module is imported.

    >>> from ccomp import kv_cache
    >>> from transformers import AttentionInterface
    >>> kv_cache.register("ccomp") is None and AttentionInterface._global_mapping["ccomp"] is kv_cache.ccomp_attention_forward
    True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    AttentionInterface.register(name, ccomp_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)


register()

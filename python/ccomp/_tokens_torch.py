"""Token merging and pruning inside vision transformers: ToMe, FastV and VisionZip patchers
(imported on first use of ``ccomp.tokens.patch_timm``, ``patch_vit``, ``fastv``, ``visionzip_layer``
or ``unpatch``).

Supported models: timm's ``VisionTransformer`` (blocks of ``timm.models.vision_transformer.Block``
with the standard ``Attention``, at most one prefix token), transformers' ``ViTModel`` (also inside
``ViTForImageClassification`` and the like) and the vision tower of CLIP (``CLIPVisionModel``, also
inside ``CLIPModel`` and ``CLIPVisionModelWithProjection``: only its vision encoder is patched).

A patch swaps the class of the module that runs the layer loop (the timm model, ``ViTModel`` or the
CLIP vision ``CLIPEncoder``) for a subclass whose loop carries the token sizes from layer to layer,
and attaches one small module per acting layer (``layer.token_merge``, a :class:`ToMeMerge`,
:class:`FastVSelect` or :class:`VisionZipSelect`): forward hooks on it see each layer's input tokens,
metric, sizes and attention, and its output. No weight changes; :func:`unpatch` (or leaving the
``with`` block of the returned :class:`TokenPatch`) restores the original classes and modules.
Layers with nothing to do run their original forward, so ``r=0`` gives the unpatched model's
outputs exactly. Gradients flow through the merges and selections (train mode works).
"""
import torch
from torch import nn
from torch.nn import functional as F

from . import _ops_tokens
from . import _tokens_host as _tk
from ._args import flag as _flag
from ._args import integer as _integer

__all__ = ["TokenPatch", "DecoderFastV", "ToMeMerge", "FastVSelect", "VisionZipSelect", "patch_timm", "patch_vit",
           "fastv", "visionzip_layer", "unpatch"]

_ATTR = "_ccomp_token_patch"


# ------------------------------------------------------------------ per-layer actions


class ToMeMerge(nn.Module):
    """One layer's ToMe step (between attention and MLP): ``forward(x, metric, size, cls_attention)``
    merges ``r`` tokens by :func:`ccomp.tokens.tome_merge` (the class token protected when
    ``cls_token``) and returns ``(x, size)``."""

    needs_cls_attention = False
    after_mlp = False

    def __init__(self, r, cls_token=True):
        super().__init__()
        self.r, self.cls_token = int(r), bool(cls_token)

    def forward(self, x, metric, size, cls_attention=None):
        if size is None:
            size = torch.ones(x.shape[:2], dtype=_ops_tokens._size_dtype(x), device=x.device)
        out, size, _ = _ops_tokens.tome_merge(x, self.r, metric=metric, sizes=size, cls_token=self.cls_token)
        return out, size

    def extra_repr(self):
        return f"r={self.r}, cls_token={self.cls_token}"


class FastVSelect(nn.Module):
    """After its layer: keep the class token and the ``keep`` patch tokens that the class token
    attends to most (attention averaged over heads), as :func:`ccomp.tokens.fastv_select`, in order."""

    needs_cls_attention = True
    after_mlp = True

    def __init__(self, keep=None, ratio=0.5):
        super().__init__()
        self.keep, self.ratio = keep, ratio

    def forward(self, x, metric, size, cls_attention):
        patches, idx = _ops_tokens.fastv_select(x[:, 1:], cls_attention[:, 1:], keep=self.keep, ratio=self.ratio)
        out = torch.cat([x[:, :1], patches], dim=1)
        if size is not None:
            size = torch.cat([size[:, :1], torch.gather(size[:, 1:], 1, idx)], dim=1)
        return out, size

    def extra_repr(self):
        return f"keep={self.keep}, ratio={self.ratio}"


class VisionZipSelect(nn.Module):
    """After its layer: the class token, then VisionZip's ``dominant`` patch tokens (largest class-token
    attention) and ``contextual`` merged tokens (cosine of the layer's keys averaged over heads), as
    :func:`ccomp.tokens.visionzip` on the patch tokens."""

    needs_cls_attention = True
    after_mlp = True

    def __init__(self, dominant=54, contextual=10):
        super().__init__()
        self.dominant, self.contextual = dominant, contextual

    def forward(self, x, metric, size, cls_attention):
        patches, _, _ = _ops_tokens.visionzip(x[:, 1:], cls_attention[:, 1:], keys=metric[:, 1:],
                                              dominant=self.dominant, contextual=self.contextual)
        return torch.cat([x[:, :1], patches], dim=1), None

    def extra_repr(self):
        return f"dominant={self.dominant}, contextual={self.contextual}"


# ------------------------------------------------------------------ attention with sizes and metric


def _attend(q, k, v, scale, size, dropout_p, need_cls):
    """softmax(q k^T scale + log size) v; with ``need_cls`` also the class token's attention [B, N]
    averaged over heads."""
    bias = None if size is None else size.log().to(q.dtype)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    cls_att = None
    if need_cls:
        logits = (q[:, :, :1] @ k.transpose(-2, -1)) * scale
        if bias is not None:
            logits = logits + bias
        cls_att = logits.float().softmax(-1)[:, :, 0].mean(1)
    return out, cls_att


def _timm_attention(attn, x, size, need_cls):
    B, N, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    o, cls_att = _attend(q, k, v, attn.scale, size, attn.attn_drop.p if attn.training else 0.0, need_cls)
    o = o.transpose(1, 2).reshape(B, N, attn.num_heads * attn.head_dim)
    o = attn.norm(o) if hasattr(attn, "norm") else o
    if gate is not None:
        o = o * gate
    return attn.proj_drop(attn.proj(o)), k.mean(1), cls_att


def _timm_block(blk, x, size, prop_attn):
    act = getattr(blk, "token_merge", None)
    if act is None and (size is None or not prop_attn):
        return blk(x), size
    need_cls = act is not None and act.needs_cls_attention
    a, metric, cls_att = _timm_attention(blk.attn, blk.norm1(x), size if prop_attn else None, need_cls)
    x = x + blk.drop_path1(blk.ls1(a))
    if act is not None and not act.after_mlp:
        x, size = act(x, metric, size, cls_att)
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    if act is not None and act.after_mlp:
        x, size = act(x, metric, size, cls_att)
    return x, size


def _hf_parts(layer):
    """(norm1, attention, output projection, norm2, dropout or None) of a ViT or CLIP encoder layer."""
    if hasattr(layer, "layernorm_before"):  # ViTLayer
        return layer.layernorm_before, layer.attention, layer.attention.o_proj, layer.layernorm_after, layer.dropout
    return layer.layer_norm1, layer.self_attn, layer.self_attn.out_proj, layer.layer_norm2, None


def _hf_attention(attn, out_proj, x, size, need_cls):
    shape = (*x.shape[:-1], -1, attn.head_dim)
    q = attn.q_proj(x).view(shape).transpose(1, 2)
    k = attn.k_proj(x).view(shape).transpose(1, 2)
    v = attn.v_proj(x).view(shape).transpose(1, 2)
    scale = getattr(attn, "scaling", None) or attn.scale
    p = getattr(attn, "attention_dropout", getattr(attn, "dropout", 0.0))
    o, cls_att = _attend(q, k, v, scale, size, p if attn.training else 0.0, need_cls)
    o = o.transpose(1, 2).reshape(*x.shape[:-1], -1)
    return out_proj(o), k.mean(1), cls_att


def _hf_layer(layer, h, size, prop_attn):
    act = getattr(layer, "token_merge", None)
    if act is None and (size is None or not prop_attn):
        return layer(h, None), size
    norm1, attn, out_proj, norm2, drop = _hf_parts(layer)
    need_cls = act is not None and act.needs_cls_attention
    a, metric, cls_att = _hf_attention(attn, out_proj, norm1(h), size if prop_attn else None, need_cls)
    h = h + (drop(a) if drop is not None else a)
    if act is not None and not act.after_mlp:
        h, size = act(h, metric, size, cls_att)
    m = layer.mlp(norm2(h))
    h = h + (drop(m) if drop is not None else m)
    if act is not None and act.after_mlp:
        h, size = act(h, metric, size, cls_att)
    return h, size


# ------------------------------------------------------------------ the patched layer loops


def _timm_forward_features(self, x, attn_mask=None, is_causal=False):
    if attn_mask is not None or is_causal:
        raise ValueError("a token-patched timm model takes no attn_mask or is_causal (the token count changes)")
    x = self.patch_embed(x)
    x = self._pos_embed(x)
    x = self.patch_drop(x)
    x = self.norm_pre(x)
    size = None
    prop = getattr(self, _ATTR).prop_attn
    for blk in self.blocks:
        x, size = _timm_block(blk, x, size, prop)
    return self.norm(x)


def _vit_forward(self, pixel_values=None, bool_masked_pos=None, interpolate_pos_encoding=None, attention_mask=None,
                 **kwargs):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if attention_mask is not None:
        raise ValueError("a token-patched ViT takes no attention_mask (the token count changes)")
    pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
    h = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos,
                        interpolate_pos_encoding=bool(interpolate_pos_encoding))
    size = None
    prop = getattr(self, _ATTR).prop_attn
    for layer in self.layers:
        h, size = _hf_layer(layer, h, size, prop)
    seq = self.layernorm(h)
    pooled = self.pooler(seq) if self.pooler is not None else None
    return BaseModelOutputWithPooling(last_hidden_state=seq, pooler_output=pooled)


def _clip_encoder_forward(self, inputs_embeds, attention_mask=None, **kwargs):
    from transformers.modeling_outputs import BaseModelOutput

    if attention_mask is not None:
        raise ValueError("a token-patched CLIP vision encoder takes no attention_mask (the token count changes)")
    h, size = inputs_embeds, None
    prop = getattr(self, _ATTR).prop_attn
    for layer in self.layers:
        h, size = _hf_layer(layer, h, size, prop)
    return BaseModelOutput(last_hidden_state=h)


_SUBCLASSES = {}


def _swap_class(module, method_name, fn):
    base = type(module)
    key = (base, method_name)
    if key not in _SUBCLASSES:
        _SUBCLASSES[key] = type(f"TokenPatched{base.__name__}", (base,), {method_name: fn, "_ccomp_base": base})
    module.__class__ = _SUBCLASSES[key]


class _Reversible:
    """A patch usable as a context manager: leaving the block calls ``unpatch()``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unpatch()
        return False


class TokenPatch(_Reversible):
    """What the patchers return: ``unpatch()`` restores the model (also on leaving a ``with`` block).

    Attributes: ``model``, ``layers`` (the patched layer modules), ``actions`` (layer index -> the
    attached :class:`ToMeMerge` / :class:`FastVSelect` / :class:`VisionZipSelect`), ``prop_attn``.
    """

    def __init__(self, model, loop, layers, actions, prop_attn):
        self.model, self.loop, self.layers, self.actions, self.prop_attn = model, loop, layers, actions, prop_attn
        self.active = True

    def unpatch(self):
        """Restore the original classes and remove the attached modules (idempotent)."""
        if not self.active:
            return
        for i in self.actions:
            del self.layers[i].token_merge
        self.loop.__class__ = self.loop._ccomp_base
        delattr(self.loop, _ATTR)
        if self.model is not self.loop and getattr(self.model, _ATTR, None) is self:
            delattr(self.model, _ATTR)
        self.active = False

    def __repr__(self):
        what = ", ".join(f"{i}: {a.__class__.__name__}({a.extra_repr()})" for i, a in self.actions.items())
        return f"TokenPatch({type(self.loop).__name__}, {{{what}}}, prop_attn={self.prop_attn}, active={self.active})"


def _install(model, loop, layers, actions, prop_attn, method_name, fn):
    if getattr(loop, _ATTR, None) is not None or getattr(model, _ATTR, None) is not None:
        raise ValueError("this model is already token-patched; unpatch it first (ccomp.tokens.unpatch(model))")
    for i, act in actions.items():
        layers[i].token_merge = act
    _swap_class(loop, method_name, fn)
    handle = TokenPatch(model, loop, layers, actions, prop_attn)
    setattr(loop, _ATTR, handle)
    if model is not loop:
        object.__setattr__(model, _ATTR, handle)
    return handle


def unpatch(model):
    """Undo :func:`patch_timm`, :func:`patch_vit`, :func:`fastv` or :func:`visionzip_layer` on ``model``
    (nothing happens when it is not patched)."""
    handle = getattr(model, _ATTR, None)
    if handle is None:
        for m in model.modules():
            handle = getattr(m, _ATTR, None)
            if handle is not None:
                break
    if handle is not None:
        handle.unpatch()


# ------------------------------------------------------------------ finding the layer loop


def _find(model):
    """(kind, loop module, layers): "timm" for a timm VisionTransformer, "vit" for a transformers ViTModel,
    "clip" for a CLIP vision encoder."""
    try:
        from timm.models.vision_transformer import Block, VisionTransformer
    except ImportError:  # pragma: no cover
        VisionTransformer = Block = None
    if VisionTransformer is not None and isinstance(model, VisionTransformer):
        from timm.layers import Attention
        blocks = list(model.blocks)
        for i, b in enumerate(blocks):
            if type(b) is not Block or type(b.attn) is not Attention:
                raise TypeError(f"block {i} is a {type(b).__name__} with {type(getattr(b, 'attn', None)).__name__}: "
                                f"the patch handles timm's Block with its standard Attention")
        if model.num_prefix_tokens > 1:
            raise ValueError(f"the model has {model.num_prefix_tokens} prefix tokens (class/register tokens); "
                             f"the patch protects at most one (the class token)")
        return "timm", model, blocks, model.num_prefix_tokens == 1
    try:
        from transformers.models.clip.modeling_clip import CLIPVisionModel
        from transformers.models.vit.modeling_vit import ViTModel
    except ImportError:  # pragma: no cover
        CLIPVisionModel = ViTModel = None
    if ViTModel is not None:
        for m in model.modules():
            if isinstance(m, ViTModel):
                return "vit", m, list(m.layers), True
            if isinstance(m, CLIPVisionModel):
                return "clip", m.encoder, list(m.encoder.layers), True
    raise TypeError(f"{type(model).__name__} is not a supported model: a timm VisionTransformer, a transformers "
                    f"ViTModel or a CLIP vision model (or a model that contains one)")


def _loop_method(kind):
    return {"timm": ("forward_features", _timm_forward_features), "vit": ("forward", _vit_forward),
            "clip": ("forward", _clip_encoder_forward)}[kind]


def _r_list(r, depth):
    if isinstance(r, (list, tuple)):
        if len(r) != depth:
            raise ValueError(f"r must give one value per layer ({depth}), got {len(r)}")
        return [_integer(f"r[{i}]", v, 0, 1 << 30) for i, v in enumerate(r)]
    return [_integer("r", r, 0, 1 << 30)] * depth


def _patch(model, actions_of, prop_attn):
    kind, loop, layers, has_cls = _find(model)
    actions = {i: a for i, a in actions_of(len(layers), has_cls).items() if a is not None}
    name, fn = _loop_method(kind)
    return _install(model, loop, layers, actions, prop_attn, name, fn)


def patch_timm(model, r, prop_attn=True):
    """ToMe (Bolya et al., 2023) in a timm ``VisionTransformer``, in place.

    Each block merges ``r`` tokens (an int for every layer, or a list with one value per block)
    between its attention and its MLP, by bipartite soft matching on the attention keys averaged over
    heads (:func:`ccomp.tokens.tome_merge`, the class token protected). Sizes are tracked; with
    ``prop_attn`` every attention after the first merge adds ``log(size)`` to its logits. Returns a
    :class:`TokenPatch` (a context manager; ``unpatch()`` restores the model).

    >>> import timm, torch
    >>> from ccomp import tokens
    >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    >>> with tokens.patch_timm(vit, r=8) as patch:              # doctest: +SKIP
    ...     logits = vit(torch.randn(2, 3, 224, 224))           # 197 tokens in, 197 - 12 * 8 = 101 at the end
    """
    kind, _, _, _ = _find(model)
    if kind != "timm":
        raise TypeError(f"patch_timm takes a timm VisionTransformer, got {type(model).__name__} (use patch_vit)")
    return _tome(model, r, prop_attn)


def patch_vit(model, r, prop_attn=True):
    """ToMe in a transformers ViT (``ViTModel``, or a model containing one such as
    ``ViTForImageClassification``) or CLIP vision model (``CLIPVisionModel``, ``CLIPModel``: the vision
    tower only), in place; as :func:`patch_timm`. Returns a :class:`TokenPatch`.

    >>> import torch
    >>> from transformers import ViTConfig, ViTModel
    >>> from ccomp import tokens
    >>> vit = ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128))
    >>> patch = tokens.patch_vit(vit, r=16)
    >>> vit(torch.randn(1, 3, 224, 224)).last_hidden_state.shape   # doctest: +SKIP
    torch.Size([1, 165, 64])
    >>> patch.unpatch()
    """
    kind, _, _, _ = _find(model)
    if kind == "timm":
        raise TypeError("patch_vit takes a transformers ViT or CLIP vision model; use patch_timm for timm")
    return _tome(model, r, prop_attn)


def _tome(model, r, prop_attn):
    prop_attn = _flag("prop_attn", prop_attn)
    _, _, layers, _ = _find(model)
    rs = _r_list(r, len(layers))
    return _patch(model, lambda depth, cls: {i: ToMeMerge(v, cls) for i, v in enumerate(rs) if v > 0}, prop_attn)


def _layer_index(layer, depth):
    layer = _integer("layer", layer, -depth, depth - 1)
    return layer % depth


def fastv(model, layer, keep=None, ratio=0.5, image_tokens=None):
    """FastV-style pruning (Chen et al., 2024) after block ``layer`` of a decoder language model or of a
    vision encoder (timm ViT, transformers ViT or CLIP vision), in place.

    **Decoder language model** (a transformers model whose decoder layers have a ``self_attn`` with
    ``q_proj``/``k_proj`` and rotary position embeddings, as Llama, Qwen2, Mistral, SmolLM2): acts on
    the positions ``image_tokens`` (a slice, or ``(start, stop)``) of the prompt. After decoder layer
    ``layer``, only the ``keep`` image positions that the last position attends to most in that layer
    (softmax attention averaged over heads, with RoPE, grouped-query heads repeated) go on, with every
    other position, in order; later layers get the matching position embeddings, position ids and mask
    rows, so each kept token keeps its original position. The logits come out for the kept positions
    only (``patch.kept``: ``[B, T']`` indices). One forward pass over a whole prompt (prefill, scoring,
    training); decoding further from a cache it filled raises ValueError. Returns a
    :class:`DecoderFastV`.

    **Vision encoder**: acts on the patch tokens (every token after the class token, which is always kept first): after
    block ``layer`` (negative counts from the end), only the class token and the ``keep`` patch tokens
    that the class token attends to most in that block (softmax attention averaged over heads) go on,
    in their original order, as :func:`ccomp.tokens.fastv_select`. ``keep`` defaults to
    ``P - int(P * ratio)`` of the P patch tokens. Returns a :class:`TokenPatch`.

    >>> import timm
    >>> from ccomp import tokens
    >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    >>> with tokens.fastv(vit, layer=5, keep=64):               # doctest: +SKIP
    ...     feats = vit.forward_features(torch.randn(1, 3, 224, 224))   # [1, 65, 192] after block 5
    >>> from ccomp import models
    >>> lm, tok = models.smollm2()                               # doctest: +SKIP
    >>> with tokens.fastv(lm, layer=2, image_tokens=slice(5, 581), ratio=0.5) as p:  # doctest: +SKIP
    ...     logits = lm(ids).logits                              # T - 288 positions, p.kept says which
    """
    dec = _decoder_layers(model)
    if dec is not None:
        return _decoder_fastv(model, dec, layer, keep, ratio, image_tokens)
    if image_tokens is not None:
        raise ValueError("image_tokens is for decoder language models; a vision encoder's patch tokens are all the "
                         "tokens after the class token")
    _, _, layers, has_cls = _find(model)
    i = _layer_index(layer, len(layers))
    if not has_cls:
        raise ValueError("fastv needs a class token (its attention ranks the patch tokens)")
    if keep is not None:
        keep = _integer("keep", keep, 1, 1 << 30)
    else:
        _tk._real("ratio", ratio, 0.0, 1.0, hi_open=True)
    return _patch(model, lambda depth, cls: {i: FastVSelect(keep, ratio)}, False)


def visionzip_layer(model, layer=-2, dominant=54, contextual=10):
    """VisionZip (Yang et al., 2024) after block ``layer`` (default the penultimate, as VisionZip) of a
    vision encoder (timm ViT, transformers ViT or CLIP vision), in place.

    Acts on the patch tokens (the class token is kept first): the ``dominant`` patch tokens with the
    largest class-token attention in that block, then ``contextual`` tokens merging the rest by the
    cosine of that block's keys averaged over heads, as :func:`ccomp.tokens.visionzip`. Returns a
    :class:`TokenPatch`.

    >>> from ccomp import tokens
    >>> tokens.visionzip_layer                                   # doctest: +ELLIPSIS
    <function visionzip_layer at ...>
    """
    _, _, layers, has_cls = _find(model)
    i = _layer_index(layer, len(layers))
    if not has_cls:
        raise ValueError("visionzip_layer needs a class token (its attention ranks the patch tokens)")
    dominant = _integer("dominant", dominant, 0, 1 << 30)
    contextual = _integer("contextual", contextual, 0, 1 << 30)
    return _patch(model, lambda depth, cls: {i: VisionZipSelect(dominant, contextual)}, False)


# ------------------------------------------------------------------ FastV in a decoder language model


def _decoder_layers(model):
    """The decoder layers (a ModuleList of layers with ``self_attn.q_proj``) of a transformers language
    model, or None."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(model, PreTrainedModel):
        return None
    for name, m in model.named_modules():
        if name.split(".")[-1] == "layers" and isinstance(m, nn.ModuleList) and len(m) and \
                hasattr(getattr(m[0], "self_attn", None), "q_proj") and hasattr(m[0], "input_layernorm"):
            return m
    return None


def _last_query_attention(attn, hidden, cos, sin, mask):
    """Softmax attention of the last position over all positions [B, T] (float32), averaged over heads."""
    import sys

    mod = sys.modules[type(attn).__module__]
    B, T, _ = hidden.shape
    shape = (B, T, -1, attn.head_dim)
    q = attn.q_proj(hidden[:, -1:]).view(B, 1, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(hidden).view(shape).transpose(1, 2)
    q, _ = mod.apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])
    _, k = mod.apply_rotary_pos_emb(k, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q.float() @ k.float().transpose(-2, -1)) * attn.scaling  # [B, H, 1, T]
    if mask is not None:
        m = mask[:, :, -1:, :T]
        logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.float()
    return logits.softmax(-1)[:, :, 0].mean(1)


def _take(t, idx, dim):
    """t gathered at positions idx [B, T'] along dim (t's batch may be 1: broadcast)."""
    if t.shape[0] != idx.shape[0]:
        t = t.expand(idx.shape[0], *t.shape[1:])
    shape = [idx.shape[0]] + [1] * (t.dim() - 1)
    shape[dim] = idx.shape[1]
    i = idx.view(shape).expand(*[s if d == dim or d == 0 else t.shape[d] for d, s in enumerate(shape)])
    return torch.gather(t, dim, i)


class DecoderFastV(_Reversible):
    """What :func:`fastv` returns for a decoder language model: ``kept`` (``[B, T']`` positions kept by
    the last forward pass, None before one), ``layer``, ``keep``, ``image_tokens``; ``unpatch()`` removes
    the hooks (also on leaving a ``with`` block)."""

    def __init__(self, model, layers, layer, keep, ratio, image):
        self.model, self.layers, self.layer, self.keep, self.ratio = model, layers, layer, keep, ratio
        self.image_tokens = image
        self.kept = None
        self._att = None
        self.active = True
        h = [layers[0].register_forward_pre_hook(self._check_cache, with_kwargs=True),
             layers[layer].self_attn.register_forward_hook(self._attention, with_kwargs=True),
             layers[layer].register_forward_hook(self._select)]
        h += [layers[j].register_forward_pre_hook(self._narrow, with_kwargs=True)
              for j in range(layer + 1, len(layers))]
        self._hooks = h

    def _check_cache(self, mod, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError("FastV prunes a whole prompt in one forward pass; decoding on from a cache is not "
                             "supported (call the model with use_cache=False, or unpatch before generating)")
        self.kept = None

    def _attention(self, mod, args, kwargs, out):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cos, sin = kwargs["position_embeddings"]
        with torch.no_grad():
            self._att = _last_query_attention(mod, hidden, cos, sin, kwargs.get("attention_mask"))

    def _select(self, mod, args, out):
        h = out[0] if isinstance(out, tuple) else out
        B, T, _ = h.shape
        start, stop, _ = self.image_tokens.indices(T)
        if stop - start < 1 or stop > T - 1:
            raise ValueError(f"image_tokens {self.image_tokens} must hold at least one position before the last of "
                             f"the {T} positions")
        n = stop - start
        keep = self.keep if self.keep is not None else n - int(n * self.ratio)
        keep = min(keep, n)
        sel = _ops_tokens.fastv_topk(self._att[:, start:stop].contiguous(), keep) + start
        pos = torch.arange(T, device=h.device).expand(B, T)
        kept = torch.cat([pos[:, :start], sel, pos[:, stop:]], dim=1)
        self.kept = kept
        h = _take(h, kept, 1)
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    def _narrow(self, mod, args, kwargs):
        if self.kept is None:
            return None
        kept = self.kept
        kwargs = dict(kwargs)
        if kwargs.get("position_embeddings") is not None:
            kwargs["position_embeddings"] = tuple(_take(t, kept, 1) for t in kwargs["position_embeddings"])
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = _take(kwargs["position_ids"], kept, 1)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            kwargs["attention_mask"] = _take(_take(mask, kept, 2), kept, 3)
        return args, kwargs

    def unpatch(self):
        """Remove the hooks (idempotent)."""
        if not self.active:
            return
        for h in self._hooks:
            h.remove()
        if getattr(self.model, _ATTR, None) is self:
            delattr(self.model, _ATTR)
        self.active = False

    def __repr__(self):
        return (f"DecoderFastV(layer={self.layer}, keep={self.keep}, ratio={self.ratio}, "
                f"image_tokens={self.image_tokens}, active={self.active})")


def _decoder_fastv(model, layers, layer, keep, ratio, image_tokens):
    if getattr(model, _ATTR, None) is not None:
        raise ValueError("this model is already token-patched; unpatch it first (ccomp.tokens.unpatch(model))")
    if isinstance(image_tokens, tuple) and len(image_tokens) == 2:
        image_tokens = slice(*image_tokens)
    if not isinstance(image_tokens, slice) or image_tokens.step not in (None, 1):
        raise ValueError(f"a decoder language model needs image_tokens=slice(start, stop) (or (start, stop)): the "
                         f"prompt positions FastV may prune; got {image_tokens!r}")
    depth = len(layers)
    i = _integer("layer", layer, -depth, depth - 1) % depth
    if keep is not None:
        keep = _integer("keep", keep, 1, 1 << 30)
    else:
        _tk._real("ratio", ratio, 0.0, 1.0, hi_open=True)
    handle = DecoderFastV(model, layers, i, keep, ratio, image_tokens)
    object.__setattr__(model, _ATTR, handle)
    return handle

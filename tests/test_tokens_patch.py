"""ToMe / FastV / VisionZip patchers on random-weight timm and transformers vision models: each layer's merge equals
the NumPy reference merge (ccomp.tokens on the captured tokens and metric), sizes tracked, class token kept,
training steps, r=0 and unpatch give the original model exactly, torch.compile(fullgraph=True) traces it."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

from ccomp import tokens  # noqa: E402

torch.set_num_threads(2)


def small_timm():
    torch.manual_seed(0)
    # vit_tiny_patch16_224's layout at 64 x 64 pixels: 16 patches + the class token, 12 blocks
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()


def hf_models():
    from transformers import CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    kw = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=128, image_size=64,
              patch_size=8)
    return [ViTForImageClassification(ViTConfig(num_labels=3, **kw)).eval(),
            CLIPVisionModel(CLIPVisionConfig(**kw)).eval()]


def hidden(model, px):
    out = model(px)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def capture(layers):
    caps = []
    for i, layer in enumerate(layers):
        layer.token_merge.register_forward_hook(
            lambda mod, args, out, i=i: caps.append((i, [None if a is None else a.detach().clone() for a in args],
                                                     [o.detach().clone() if o is not None else None for o in out])))
    return caps


def assert_merges_equal_reference(caps, r, n_layers):
    assert [c[0] for c in caps] == list(range(n_layers))
    n = None
    for i, (x, metric, size, _), (xo, so) in caps:
        s = np.ones(x.shape[:2]) if size is None else size.numpy()
        if size is None:
            assert i == 0
        else:
            assert x.shape[1] == n and size.sum(1).eq(size.sum(1)[0]).all()
        want, want_s, src = tokens.tome_merge(x.numpy(), r, metric=metric.numpy(), sizes=s, cls_token=True)
        np.testing.assert_array_equal(xo.numpy(), want, err_msg=f"layer {i}")
        np.testing.assert_array_equal(so.numpy(), want_s.astype(np.float32), err_msg=f"layer {i}")
        assert (src[:, 0] == 0).all() and so[:, 0].eq(1 if size is None else size[:, 0]).all()  # class token
        n = xo.shape[1]


def test_timm_each_layer_merge_equals_numpy_reference():
    m = small_timm()
    px = torch.randn(2, 3, 64, 64)
    with tokens.patch_timm(m, 2) as patch:
        caps = capture(m.blocks)
        with torch.no_grad():
            feats = m.forward_features(px)
        assert len(patch.actions) == 12
    n = 17
    for _ in range(12):
        n -= min(2, (n - 1) // 2)  # r per layer, at most half of the tokens after the class token
    assert feats.shape == (2, n, 192) and n == 2
    assert_merges_equal_reference(caps, 2, 12)
    final_sizes = caps[-1][2][1]
    assert torch.equal(final_sizes.sum(1), torch.full((2,), 17.0))  # every input token counted once


def test_timm_r0_equals_unpatched_and_unpatch_restores():
    m = small_timm()
    px = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(px)
        with tokens.patch_timm(m, 0):
            assert torch.equal(m(px), ref)
        p = tokens.patch_timm(m, [1, 0, 2] + [1] * 9, prop_attn=True)
        assert not torch.equal(m(px), ref)
        with pytest.raises(ValueError, match="already token-patched"):
            tokens.patch_timm(m, 1)
        tokens.unpatch(m)
        assert not p.active and type(m).__name__ == "VisionTransformer"
        assert not any(hasattr(b, "token_merge") for b in m.blocks)
        assert torch.equal(m(px), ref)


def test_timm_prop_attn_changes_the_logits():
    m = small_timm()
    px = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        with tokens.patch_timm(m, 2, prop_attn=True):
            a = m(px)
        with tokens.patch_timm(m, 2, prop_attn=False):
            b = m(px)
    assert not torch.allclose(a, b)


def test_timm_training_step_reaches_the_weights():
    m = small_timm().train()
    before = m.blocks[0].attn.qkv.weight.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with tokens.patch_timm(m, 2):
        loss = m(torch.randn(2, 3, 64, 64)).logsumexp(-1).mean()
        loss.backward()
        assert m.blocks[-1].mlp.fc1.weight.grad.abs().sum() > 0 and m.patch_embed.proj.weight.grad.abs().sum() > 0
        opt.step()
    assert not torch.equal(before, m.blocks[0].attn.qkv.weight)


def test_timm_compile_fullgraph_no_graph_break():
    torch._dynamo.reset()
    m = small_timm()
    px = torch.randn(2, 3, 64, 64)
    with tokens.patch_timm(m, 2):
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(compiled(px), m(px), rtol=0, atol=0)
    torch._dynamo.reset()


def test_timm_rejects_what_it_cannot_patch():
    with pytest.raises(TypeError, match="not a supported model"):
        tokens.patch_timm(torch.nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="one value per layer"):
        tokens.patch_timm(small_timm(), [1, 2])
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, reg_tokens=4)
    with pytest.raises(ValueError, match="prefix tokens"):
        tokens.patch_timm(m, 1)
    with pytest.raises(TypeError, match="use patch_timm"):
        tokens.patch_vit(small_timm(), 1)


@pytest.mark.parametrize("which", [0, 1], ids=["vit", "clip"])
def test_hf_each_layer_merge_equals_reference_and_r0_is_exact(which):
    model = hf_models()[which]
    px = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = hidden(model, px)
        with tokens.patch_vit(model, 0):
            assert torch.equal(hidden(model, px), ref)
        with tokens.patch_vit(model, 10) as patch:
            caps = capture(patch.layers)
            out = hidden(model, px)
        assert torch.equal(hidden(model, px), ref)  # unpatched again
    assert_merges_equal_reference(caps, 10, 3)
    assert caps[-1][2][0].shape[1] == 65 - 10 - 10 - 10


@pytest.mark.parametrize("which", [0, 1], ids=["vit", "clip"])
def test_hf_training_step(which):
    model = hf_models()[which].train()
    with tokens.patch_vit(model, 8):
        hidden(model, torch.randn(2, 3, 64, 64)).square().mean().backward()
    layer = model.vit.layers[0] if which == 0 else model.encoder.layers[0]
    q = layer.attention.q_proj if which == 0 else layer.self_attn.q_proj
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0


def _cls_attention_and_keys(layers, layer, which_kind):
    """A forward hook on the action module gets (x, metric, size, cls_attention)."""
    got = {}
    layers[layer].token_merge.register_forward_hook(
        lambda mod, args, out: got.update(x=args[0].detach(), metric=args[1].detach(), att=args[3].detach(),
                                          out=out[0].detach()))
    return got


@pytest.mark.parametrize("kind", ["timm", "vit", "clip"])
def test_fastv_keeps_the_tokens_fastv_select_keeps(kind):
    model = small_timm() if kind == "timm" else hf_models()[kind == "clip"]
    px = torch.randn(2, 3, 64, 64)
    n_patch = 16 if kind == "timm" else 64
    with tokens.fastv(model, layer=1, keep=5) as patch:
        got = _cls_attention_and_keys(patch.layers, 1, kind)
        with torch.no_grad():
            model(px)
        want, idx = tokens.fastv_select(got["x"][:, 1:].numpy(), got["att"][:, 1:].numpy(), keep=5)
        np.testing.assert_array_equal(got["out"][:, 1:].numpy(), want)
        torch.testing.assert_close(got["out"][:, 0], got["x"][:, 0], rtol=0, atol=0)  # class token first
        assert got["att"].shape == (2, n_patch + 1)
        torch.testing.assert_close(got["att"].sum(1), torch.ones(2))
        model.train()
        out = model(px)
        (out if isinstance(out, torch.Tensor) else hidden(model, px)).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kind", ["timm", "clip"])
def test_visionzip_layer_equals_visionzip(kind):
    model = small_timm() if kind == "timm" else hf_models()[1]
    px = torch.randn(2, 3, 64, 64)
    with tokens.visionzip_layer(model, layer=-2, dominant=6, contextual=3) as patch:
        got = _cls_attention_and_keys(patch.layers, len(patch.layers) - 2, kind)
        with torch.no_grad():
            model(px)
        want, _, _ = tokens.visionzip(got["x"][:, 1:].numpy(), got["att"][:, 1:].numpy(),
                                      keys=got["metric"][:, 1:].numpy(), dominant=6, contextual=3)
        assert got["out"].shape[1] == 1 + 6 + 3
        np.testing.assert_array_equal(got["out"][:, 1:].numpy(), want)
        model.train()
        out = model(px)
        (out if isinstance(out, torch.Tensor) else out.last_hidden_state).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def eager_last_query_attention(model, ids, mask, layer):
    model.config._attn_implementation = "eager"
    try:
        att = model(ids, attention_mask=mask, use_cache=False, output_attentions=True).attentions[layer]
    finally:
        model.config._attn_implementation = "sdpa"
    return att[:, :, -1, :].mean(1)


@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "left-padded"])
def test_decoder_fastv_keeps_what_fastv_select_keeps(padded):
    model = tiny_llama()
    ids = torch.randint(0, 100, (2, 24))
    mask = torch.ones(2, 24, dtype=torch.long)
    if padded:
        mask[0, :2] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, use_cache=False).logits
        a = eager_last_query_attention(model, ids, mask, 1)
        with tokens.fastv(model, layer=1, keep=6, image_tokens=slice(4, 20)) as patch:
            out = model(ids, attention_mask=mask).logits
        _, want = tokens.fastv_select(np.zeros((2, 16, 1), np.float32), a[:, 4:20].numpy(), keep=6)
        assert out.shape == (2, 4 + 6 + 4, 100)
        np.testing.assert_array_equal(patch.kept[:, 4:10].numpy(), want + 4)
        np.testing.assert_array_equal(patch.kept[:, :4].numpy(), np.tile(np.arange(4), (2, 1)))
        np.testing.assert_array_equal(patch.kept[:, 10:].numpy(), np.tile(np.arange(20, 24), (2, 1)))
        # keeping every image token: the position embeddings, ids and mask follow, the logits are the model's
        with tokens.fastv(model, layer=1, keep=16, image_tokens=(4, 20)):
            torch.testing.assert_close(model(ids, attention_mask=mask).logits, ref, rtol=0, atol=1e-6)
        assert torch.equal(model(ids, attention_mask=mask, use_cache=False).logits, ref)  # unpatched


def test_decoder_fastv_trains_and_refuses_cached_decoding():
    model = tiny_llama().train()
    ids = torch.randint(0, 100, (2, 16))
    with tokens.fastv(model, layer=0, ratio=0.5, image_tokens=slice(2, 14)) as patch:
        model(ids).logits.sum().backward()
        assert patch.kept.shape == (2, 10)
    assert model.model.layers[2].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.eval()
    with tokens.fastv(model, layer=1, keep=4, image_tokens=slice(2, 14)):
        with pytest.raises(ValueError, match="decoding on from a cache is not supported"):
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                           pad_token_id=0)
    with pytest.raises(ValueError, match="image_tokens"):
        tokens.fastv(model, layer=1, keep=4)

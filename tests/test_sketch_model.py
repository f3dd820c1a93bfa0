"""Model-level sketching: ccomp.sketch.sketch_model on SmolLM2-135M (real weights, real text as
calibration), a timm ViT and a small transformers Llama; save_sketched / load_sketched round trips
with identical logits, and the wrong ways of loading raise."""
import copy
import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from ccomp import datasets, sketch  # noqa: E402
from ccomp._sketch_torch import SketchedLinear  # noqa: E402


@pytest.fixture(scope="module")
def alice_ids(smollm2):
    _, tok = smollm2
    return tok(datasets.corpus_text("alice29.txt")[:4000], return_tensors="pt").input_ids[:, :96]


def tiny_llama(seed=0, tie=True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


def densify(sketched):
    """`sketched` with each SketchedLinear replaced, in place, by an nn.Linear holding its dequantized sketch."""
    for name, m in sketch.sketched_layers(sketched).items():
        lin = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(m.to_sketch().dequantize()))
            if m.bias is not None:
                lin.bias.copy_(m.bias)
        parent, _, child = name.rpartition(".")
        setattr(sketched.get_submodule(parent) if parent else sketched, child, lin)
    return sketched


@pytest.mark.parametrize("method", ["rtn", "leanquant"])
def test_smollm2_sketched_layers_equal_dequantized_weights(smollm2, alice_ids, method, tmp_path):
    model, _ = smollm2
    m = copy.deepcopy(model)
    m, report = sketch.sketch_model(m, bits=4, group_size=64, method=method, calibration=alice_ids[:, :64],
                                    include=["model.layers.1.self_attn.*",
                                             re.compile(r"model\.layers\.7\.mlp\.(up|down)_proj")],
                                    return_report=True)
    names = list(sketch.sketched_layers(m))
    assert names == [f"model.layers.1.self_attn.{p}_proj" for p in "qkvo"] + ["model.layers.7.mlp.up_proj",
                                                                              "model.layers.7.mlp.down_proj"]
    assert list(report) == names
    assert all(0 < r["output_error"] < 0.2 and r["bits"] == 4 and r["method"] == method for r in report.values())
    assert report["model.layers.7.mlp.down_proj"]["groups"] == 1536 // 64
    assert type(m.lm_head) is torch.nn.Linear and m.lm_head.weight is m.model.embed_tokens.weight
    ids = alice_ids[:, 32:]
    with torch.no_grad():
        got = m(ids).logits
        dense = model(ids).logits
    if method == "leanquant":
        # save and reload: identical logits; the wrong ways of loading raise
        path = sketch.save_sketched(m, tmp_path / "sk")
        assert sorted(os.listdir(path)) == ["ccomp_sketch.json", "ccomp_sketch.safetensors", "config.json"]
        with open(os.path.join(path, "config.json")) as f:
            qc = json.load(f)["quantization_config"]
        assert qc["quant_method"] == "ccomp_sketch" and qc["layers"]["model.layers.7.mlp.up_proj"]["groups"] == 9
        again = sketch.load_sketched(path)
        assert list(sketch.sketched_layers(again)) == names
        with torch.no_grad():
            assert torch.equal(again(ids).logits, got)
        assert again.lm_head.weight is again.model.embed_tokens.weight
        del again
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM
        with pytest.raises(OSError, match="model.safetensors"):
            AutoModelForCausalLM.from_pretrained(path)
        with pytest.raises(ValueError, match="save_sketched"):
            m.save_pretrained(tmp_path / "hf")
        assert not os.path.exists(tmp_path / "hf")
    with torch.no_grad():
        want = densify(m)(ids).logits
    # float32 sums in another order through 30 layers: differences of ~3e-3 on logits of ~20
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-2)
    assert (got - dense).abs().max() > 0.2  # the sketches did change the model
    if method == "leanquant":  # m is an unsketched model now: the saved state dict does not load into it
        with pytest.raises(RuntimeError, match=r"(?s)Missing key.*model\.layers\.1\.self_attn\.q_proj\.weight"
                                               r".*Unexpected key.*model\.layers\.1\.self_attn\.q_proj\.tables"):
            m.load_state_dict(load_file(os.path.join(path, "ccomp_sketch.safetensors")))


def test_timm_vit_sketches_runs_and_reloads(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    images = torch.randn(2, 3, 224, 224)
    m, report = sketch.sketch_model(copy.deepcopy(vit), bits=4, group_size=64, method="leanquant", calibration=images,
                                    include="blocks.[01].*", return_report=True)
    assert len(report) == 8 and all(r["output_error"] < 0.2 for r in report.values())
    assert type(m.head) is torch.nn.Linear  # the classifier head is never sketched by default
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        got = m(x)
    path = sketch.save_sketched(m, tmp_path / "vit")
    with pytest.raises(ValueError, match="pass model="):
        sketch.load_sketched(path)
    again = sketch.load_sketched(path, model=timm.create_model("vit_tiny_patch16_224", pretrained=False))
    with torch.no_grad():
        assert torch.equal(again(x), got)
    with pytest.raises(ValueError, match="no module 'blocks.1.attn.qkv'"):
        sketch.load_sketched(path, model=timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1))
    with torch.no_grad():
        torch.testing.assert_close(got, densify(m)(x), rtol=1e-4, atol=1e-4)
    # without calibration rtn sketches every Linear but the head
    m2 = sketch.sketch_model(copy.deepcopy(vit), bits=2, group_size=None, method="rtn")
    assert len(sketch.sketched_layers(m2)) == 48 and type(m2.head) is torch.nn.Linear
    with torch.no_grad():
        assert m2(x).shape == (1, 1000)


def test_include_exclude_and_defaults():
    model = tiny_llama()
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "lm_head" in linears

    def picked(**kw):
        return list(sketch.sketched_layers(sketch.sketch_model(copy.deepcopy(model), group_size=32, method="rtn",
                                                               **kw)))

    assert picked() == [n for n in linears if n != "lm_head"]  # tied lm_head skipped by default
    assert picked(include="*.q_proj") == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    assert picked(include=re.compile(r"model\.layers\.1\.mlp\..*"), exclude="*gate*") == [
        "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"]
    assert picked(include=lambda name, mod: mod.out_features == 32) == [
        "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj"]
    assert len(picked(exclude=["model.layers.0.*", "*.o_proj"])) == 6
    with pytest.raises(ValueError, match="tied to model.embed_tokens"):
        picked(include="lm_head")
    untied = tiny_llama(tie=False)
    m = sketch.sketch_model(copy.deepcopy(untied), group_size=32, method="rtn")
    assert type(m.lm_head) is torch.nn.Linear  # an untied head is skipped too ...
    m = sketch.sketch_model(copy.deepcopy(untied), group_size=32, method="rtn", include=["lm_head"])
    assert list(sketch.sketched_layers(m)) == ["lm_head"]  # ... unless include names it
    # nn.MultiheadAttention reads out_proj.weight itself: never replaced
    mha = _Attention().eval()
    x = torch.randn(2, 5, 32)
    m = sketch.sketch_model(copy.deepcopy(mha), group_size=16, calibration=x)
    assert list(sketch.sketched_layers(m)) == ["proj"]
    with torch.no_grad():
        assert m(x).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="reads its out_proj weight directly"):
        sketch.sketch_model(copy.deepcopy(mha), group_size=16, method="rtn", include="attn.*")


class _Attention(torch.nn.Module):
    """nn.MultiheadAttention, then a Linear."""

    def __init__(self):
        super().__init__()
        self.attn, self.proj = torch.nn.MultiheadAttention(32, 4, batch_first=True), torch.nn.Linear(32, 16)

    def forward(self, x):
        return self.proj(self.attn(x, x, x, need_weights=False)[0])


def test_bad_arguments():
    model = tiny_llama()
    ids = torch.randint(0, 128, (2, 16))
    cases = [
        (dict(bits=5), ValueError, "bits must be 2, 3 or 4"),
        (dict(bits=4.0), ValueError, "bits must be"),
        (dict(group_size=48), ValueError, r"layer 'model.layers.0.self_attn.q_proj': in_features 64 is not divisible "
                                          r"by group_size 48"),
        (dict(group_size=0), ValueError, "group_size must be a positive int"),
        (dict(method="gptq"), ValueError, "method must be one of rtn, kmeans, leanquant"),
        (dict(method="leanquant", calibration=None), ValueError, "needs calibration="),
        (dict(calibration="some text"), TypeError, "calibration must be token ids"),
        (dict(calibration=torch.zeros(0, 16, dtype=torch.long)), ValueError, "no input"),
        (dict(calibration=[]), ValueError, "calibration is empty"),
        (dict(include=3), TypeError, "include must be a glob"),
        (dict(include="nothing.*"), ValueError, "no nn.Linear layer of the model matches"),
        (dict(dampening=0.1), TypeError, "unexpected keyword arguments"),
        (dict(dtype="int8"), ValueError, "dtype must be one of"),
        (dict(batch_size=0), ValueError, "batch_size"),
    ]
    for kw, exc, msg in cases:
        args = dict(bits=4, group_size=32, method="leanquant", calibration=ids)
        args.update(kw)
        m = copy.deepcopy(model)
        with pytest.raises(exc, match=msg):
            sketch.sketch_model(m, **args)
        assert not sketch.sketched_layers(m)  # nothing replaced when the arguments are refused
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sketch.sketch_model("model")
    with pytest.raises(ValueError, match="received no input"):
        sketch.sketch_model(_Unused(), group_size=8, calibration=torch.randn(4, 8))
    with pytest.raises(ValueError, match="no SketchedLinear"):
        sketch.save_sketched(model, "unused")
    with pytest.raises(ValueError, match="not a sketched model"):
        sketch.load_sketched(os.path.dirname(__file__))


class _Unused(torch.nn.Module):
    """A Linear that its forward never calls."""

    def __init__(self):
        super().__init__()
        self.used, self.unused = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.used(x)


def test_calibration_forms_and_memory_chunks_give_the_same_sketches():
    model = tiny_llama()
    ids = torch.randint(0, 128, (4, 24), generator=torch.Generator().manual_seed(1))

    def tables(**kw):
        m = sketch.sketch_model(copy.deepcopy(model), bits=3, group_size=32, method="leanquant", **kw)
        return {n: (layer.tables.detach().clone(), layer.codes.clone())
                for n, layer in sketch.sketched_layers(m).items()}

    want = tables(calibration=ids)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=3)
    for got in (tables(calibration=ids, max_memory=1),  # one layer per forward pass
                tables(calibration=ids, batch_size=1),
                tables(calibration=loader),
                tables(calibration={"input_ids": ids, "attention_mask": torch.ones_like(ids)}),
                tables(calibration=iter([ids[:2], ids[2:]]))):
        assert got.keys() == want.keys()
        for n in want:
            torch.testing.assert_close(got[n][0], want[n][0], rtol=1e-5, atol=1e-6)
            assert (got[n][1] != want[n][1]).float().mean() < 0.01  # float sums in another order may flip a rare tie


def test_training_step_changes_only_the_tables(tmp_path):
    model = sketch.sketch_model(tiny_llama(), bits=4, group_size=32, method="rtn").train()
    model.requires_grad_(False)
    for layer in sketch.sketched_layers(model).values():
        layer.tables.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.randint(0, 128, (2, 12))
    loss = model(ids, labels=ids).loss
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{n}.tables" for n in sketch.sketched_layers(model)}
    # the fine-tuned tables save and reload exactly
    path = sketch.save_sketched(model, tmp_path / "tuned")
    again = sketch.load_sketched(path)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model.eval()(ids).logits)


def test_compile_fullgraph_over_a_sketched_transformers_model():
    torch._dynamo.reset()
    model = sketch.sketch_model(tiny_llama(), bits=4, group_size=32, method="rtn").train()
    ids = torch.randint(0, 128, (2, 10))

    def step(run):
        model.zero_grad()
        loss = run(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), model.model.layers[1].mlp.down_proj.tables.grad.clone()

    want = step(model)
    got = step(torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()

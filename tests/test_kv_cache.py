"""ccomp.kv_cache: a transformers Cache backed by ccomp.kv, and the "ccomp" attention on its packed codes,
on SmolLM2-135M (greedy, beam search and prompt-lookup decoding against transformers' DynamicCache)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import DynamicCache  # noqa: E402
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

from ccomp import datasets, models  # noqa: E402
from ccomp.kv_cache import CompressedCache, ccomp_attention_forward  # noqa: E402

torch.set_num_threads(2)
PROMPT = 40  # not a multiple of the group (32)


@pytest.fixture(scope="module")
def ccomp_model(smollm2):
    """SmolLM2 running the "ccomp" attention (its own copy: the shared fixture keeps sdpa)."""
    model, _ = models.smollm2(attn_implementation="ccomp")
    assert model.config._attn_implementation == "ccomp"
    return model


@pytest.fixture(scope="module")
def prompt(smollm2):
    _, tok = smollm2
    return tok(datasets.corpus_text("alice29.txt")[3000:6000], return_tensors="pt").input_ids[:, :PROMPT]


def greedy(model, ids, cache, n, **kw):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False, cache=cache, **kw)[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def reference_64(smollm2, prompt):
    model, _ = smollm2
    return greedy(model, prompt, DynamicCache(config=model.config), 64)


@pytest.mark.parametrize("method,kw", [("q8_0", {}), ("groupwise", dict(nbits=8, residual_length=32))])
def test_8bit_caches_give_the_same_64_tokens(ccomp_model, prompt, reference_64, method, kw):
    cache = CompressedCache(method, config=ccomp_model.config, **kw)
    assert greedy(ccomp_model, prompt, cache, 64) == reference_64
    layer = cache.layers[0]
    assert cache.get_seq_length() == PROMPT + 63 and layer.k.quantized_tokens > 0 and layer.v.quantized_tokens > 0


def teacher_forced_logits(model, ids, cache, steps=4):
    """Logits of a prefill of PROMPT tokens, then of `steps` single-token steps on the prompt's continuation."""
    with torch.no_grad():
        out = [model(ids[:, :PROMPT], cache=cache, logits_to_keep=1).logits[:, -1]]
        for t in range(PROMPT, PROMPT + steps):
            out.append(model(ids[:, t:t + 1], cache=cache).logits[:, -1])
    return torch.cat(out)


def test_kivi_at_a_prefill_of_40_tokens_stays_close_to_fp16(smollm2, ccomp_model):
    model, tok = smollm2
    ids = tok(datasets.corpus_text("alice29.txt")[3000:6000], return_tensors="pt").input_ids[:, :PROMPT + 4]
    ref = teacher_forced_logits(model, ids, DynamicCache(config=model.config))
    errs = {}
    for bits in (2, 4):
        cache = CompressedCache("kivi", config=ccomp_model.config, nbits=bits, q_group_size=32, residual_length=32)
        got = teacher_forced_logits(ccomp_model, ids, cache)
        layer = cache.layers[3]
        # 44 tokens: one group of 32 keys quantized per channel, 12 in the window; values: all but 32 per token
        assert layer.k.quantized_tokens == 32 and layer.k.res.shape[2] == 12 and layer.v.quantized_tokens == 12
        errs[bits] = float((got - ref).norm() / ref.norm())
        assert torch.equal(got[0], ref[0])  # the prefill attends over the prompt as given
    assert errs[4] < 0.05 and errs[2] < 0.3 and errs[4] < errs[2], errs


@pytest.mark.parametrize("method,kw", [("kivi", {}), ("groupwise", dict(nbits=4, axis_key="token")),
                                       ("gear", dict(residual_length=32)), ("q4_0", {}), ("turbo", dict(qjl=True))])
def test_every_method_generates(smollm2, ccomp_model, prompt, method, kw):
    model, _ = smollm2
    packed = greedy(ccomp_model, prompt, CompressedCache(method, config=ccomp_model.config, **kw), 4)
    dequantized = greedy(model, prompt, CompressedCache(method, config=model.config, **kw), 4)  # sdpa
    assert len(packed) == 4 and all(0 <= t < 49152 for t in packed)
    if method != "turbo":  # turbo's QJL scores are an estimate: its kernel is not its dequantization
        assert packed == dequantized


def test_beam_search_and_prompt_lookup_match_the_dynamic_cache(smollm2, ccomp_model, prompt):
    model, _ = smollm2
    for kw in (dict(num_beams=2), dict(prompt_lookup_num_tokens=3)):
        want = greedy(model, prompt, DynamicCache(config=model.config), 8, **kw)
        got = greedy(ccomp_model, prompt, CompressedCache("q8_0", config=ccomp_model.config), 8, **kw)
        assert got == want, kw


def filled(method, B=2, G=3, D=64, T=100, dtype=torch.float32, **kw):
    cache = CompressedCache(method, num_hidden_layers=1, **kw)
    rng = np.random.default_rng(0)
    k, v = (torch.from_numpy(rng.normal(size=(B, G, T, D)).astype(np.float32)).to(dtype) for _ in range(2))
    cache.update(k[:, :, :T - 7], v[:, :, :T - 7], 0)
    for t in range(T - 7, T):
        cache.update(k[:, :, t:t + 1], v[:, :, t:t + 1], 0)
    return cache, k, v


def test_nbytes_and_bits_per_element_are_a_hand_count():
    cache, _, _ = filled("kivi", B=1, nbits=2, q_group_size=32, residual_length=32)
    S, D = 3, 64
    # keys: 96 tokens per channel (2-bit codes, fp16 scale and zero per 32 tokens of a channel), 4 in the window;
    # values: 68 tokens per token (fp16 scale and zero per 32 channels), the 32 most recent in the window
    keys = S * (96 * D * 2 // 8 + 2 * 2 * (96 // 32) * D + 4 * D * 2)
    values = S * (68 * D * 2 // 8 + 2 * 2 * 68 * (D // 32) + 32 * D * 2)
    assert cache.nbytes == keys + values
    assert cache.bits_per_element == pytest.approx(8 * (keys + values) / (2 * S * 100 * D))
    q8, _, _ = filled("q8_0", B=1)  # 34 bytes per 32 values, no window
    assert q8.nbytes == 2 * S * 100 * (D // 32) * 34 and q8.bits_per_element == 8.5
    turbo, _, _ = filled("turbo", B=1, nbits=3)  # codes, float32 norm per token, and the seed of each side
    assert turbo.nbytes == 2 * (S * 100 * (D * 3 // 8 + 4) + 8)


@pytest.mark.parametrize("method,kw", [("kivi", dict(residual_length=32)), ("gear", dict(residual_length=32)),
                                       ("q8_0", {}), ("turbo", {}), ("groupwise", dict(nbits=8, axis_key="token"))])
@pytest.mark.parametrize("n_query", [1, 3])
def test_attention_fn_equals_sdpa_on_the_dequantized_cache(method, kw, n_query):
    cache, _, _ = filled(method, **kw)
    layer = cache.layers[0]
    layer.config = type("Config", (), {"_attn_implementation": "ccomp"})()
    K, V = layer.dequantize()

    class Attention(torch.nn.Module):
        num_key_value_groups, is_causal = 3, True

    rng = np.random.default_rng(1)
    q, k1, v1 = (torch.from_numpy(rng.normal(size=(2, h, n_query, 64)).astype(np.float32)) for h in (9, 3, 3))
    fwd = {}
    kr, vr = cache.update(k1, v1, 0, kwargs=fwd)
    assert kr is k1 and vr is v1 and "ccomp_past" in fwd
    out, _ = ccomp_attention_forward(Attention(), q, kr, vr, None, scaling=0.125, **fwd)
    mask = (torch.arange(n_query)[:, None] + 100 >= torch.arange(100 + n_query)[None, :])[None, None]
    want, _ = sdpa_attention_forward(Attention(), q, torch.cat([K, k1], 2), torch.cat([V, v1], 2), mask,
                                     scaling=0.125)
    tol = 0.15 if method == "turbo" else 1e-5  # turbo's kernel scores are not its dequantization's
    assert out.shape == (2, n_query, 9, 64) and torch.allclose(out, want, atol=tol)
    # a padding mask takes the dequantized path: the same values
    padded = mask.expand(2, 1, n_query, 100 + n_query).clone()
    padded[1, :, :, :5] = False
    out_p, _ = ccomp_attention_forward(Attention(), q, kr, vr, padded, scaling=0.125, **dict(fwd))
    want_p, _ = sdpa_attention_forward(Attention(), q, torch.cat([K, k1], 2), torch.cat([V, v1], 2), padded,
                                       scaling=0.125)
    assert torch.allclose(out_p, want_p, atol=1e-5)


@pytest.mark.parametrize("method,kw", [("kivi", dict(residual_length=32)), ("gear", dict(residual_length=32)),
                                       ("q8_0", {})])
def test_crop_and_batch_edits_keep_what_the_cache_held(method, kw):
    cache, _, _ = filled(method, **kw)
    K, V = cache.layers[0].dequantize()
    cache.crop(-30)  # into the packed tokens (within a group of keys, a gear segment)
    K2, V2 = cache.layers[0].dequantize()
    assert cache.get_seq_length() == 70 and K2.shape[2] == 70
    assert torch.allclose(K2, K[:, :, :70], atol=1e-2) and torch.allclose(V2, V[:, :, :70], atol=1e-2)
    cache.reorder_cache(torch.tensor([1, 1]))
    K3, _ = cache.layers[0].dequantize()
    assert torch.equal(K3[0], K2[1]) and torch.equal(K3[1], K2[1])
    cache.batch_repeat_interleave(2)
    cache.batch_select_indices(torch.tensor([0, 3]))
    assert torch.equal(cache.layers[0].dequantize()[0], K3[[0, 1]])


def test_bfloat16_states_are_accepted():
    cache, k, _ = filled("kivi", dtype=torch.bfloat16, residual_length=32)
    keys, values = cache.update(k[:, :, :1], k[:, :, :1], 0)  # no ccomp attention: dequantized K/V back
    assert keys.dtype == torch.bfloat16 and keys.shape == (2, 3, 101, 64)
    assert torch.allclose(keys[:, :, 96:100].float(), k[:, :, 96:].float(), atol=1e-2)  # the float16 window


@pytest.mark.parametrize("kw,match", [
    (dict(method="q5_1"), "method must be one of"),
    (dict(method="kivi", nbits=5), "nbits must be one of"),
    (dict(method="kivi", q_group_size=48), "q_group_size must be 32, 64 or 128"),
    (dict(method="kivi", residual_length=48), "positive multiple of q_group_size"),
    (dict(method="kivi", residual_length=0), "positive multiple of q_group_size"),
    (dict(method="gear", axis_key="token", axis_value="token", residual_length=0), "positive multiple"),
    (dict(method="groupwise", axis_key="head"), "axis_key must be 'channel' or 'token'"),
    (dict(method="q8_0", nbits=8), "q8_0 takes no nbits"),
    (dict(method="q4_0", q_group_size=32), "q4_0 takes no q_group_size"),
    (dict(method="turbo", nbits=6), "nbits must be an int in \\[1, 4\\]"),
    (dict(method="kivi", residual_length=-1), "residual_length"),
])
def test_bad_knobs_raise_value_error(kw, match):
    with pytest.raises(ValueError, match=match):
        CompressedCache(num_hidden_layers=2, **kw)


def test_head_dim_checked_against_the_config(smollm2):
    model, _ = smollm2
    with pytest.raises(ValueError, match="head"):
        CompressedCache("groupwise", config=model.config, axis_value="token", q_group_size=128)  # 64 channels


def test_compiled_decode_step_through_the_cache_has_no_graph_break(ccomp_model):
    """One LlamaAttention of SmolLM2 with the cache and the ccomp attention, compiled with fullgraph=True."""
    torch._dynamo.reset()
    attn, rotary = ccomp_model.model.layers[0].self_attn, ccomp_model.model.rotary_emb
    rng = np.random.default_rng(2)
    prefill = torch.from_numpy(rng.normal(size=(1, 50, 576)).astype(np.float32))
    step_in = torch.from_numpy(rng.normal(size=(1, 1, 576)).astype(np.float32))

    def decode(cache):
        pos = torch.tensor([[50]])
        with torch.no_grad():
            return attn(step_in, position_embeddings=rotary(step_in, pos), attention_mask=None, cache=cache)[0]

    def prefilled():
        cache = CompressedCache("kivi", config=ccomp_model.config, residual_length=32)
        with torch.no_grad():
            attn(prefill, position_embeddings=rotary(prefill, torch.arange(50)[None]), attention_mask=None,
                 cache=cache)
        return cache

    eager_cache, compiled_cache = prefilled(), prefilled()
    want = decode(eager_cache)
    got = torch.compile(decode, fullgraph=True, backend="aot_eager")(compiled_cache)
    assert torch.allclose(got, want, atol=1e-5)
    assert compiled_cache.get_seq_length() == 51 and compiled_cache.layers[0].v.res.shape[2] == 32

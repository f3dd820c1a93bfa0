"""ccomp.ac.LMCompressor with the real model (SmolLM2-135M) on both backends: exact round trips on the bundled
texts (shortened here; bench/lm_compress.py runs the whole files), what a mismatch gives, the llama.cpp
backend's thread-count invariance, and the CLI.  `make test` does not build llama-cpp-python (see the
Makefile): there the transformers backend carries the round trips and the llama.cpp tests skip."""
import copy
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import ccomp
from ccomp import _lm, datasets
from ccomp.ac import LMCompressor, lm_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("transformers")
needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="needs llama-cpp-python (pip install llama-cpp-python)")


def _texts(n):
    """The first ``n`` bytes of each bundled text and of a Python source file, cut at a line end."""
    out = {}
    for name in ("alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt"):
        out[name] = datasets.corpus(name)
    with open(os.path.join(ROOT, "python", "ccomp", "_lm.py"), "rb") as f:
        out["_lm.py"] = f.read()
    return {k: v[:v.rfind(b"\n", 0, n) + 1] for k, v in out.items()}


TEXTS = _texts(320)


@pytest.fixture(scope="module")
def hf(smollm2):
    model, tok = smollm2
    return LMCompressor(model, tok, chunk_tokens=40)


@pytest.fixture(scope="module")
def llama():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python (pip install llama-cpp-python)")
    return LMCompressor("smollm2", backend="llama.cpp", chunk_tokens=40)


def _roundtrip(c, name):
    """Compress and decompress; the header, and the bits per byte of the coded streams alone."""
    data = TEXTS[name]
    blob = c.compress(data)
    assert c.decompress(blob) == data
    h = lm_info(blob)
    return h, 8 * (len(blob) - len(_lm._pack_header(h)) - 4 * h["chunks"]) / len(data)


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_transformers_roundtrip(hf, name):
    h, bpb = _roundtrip(hf, name)
    assert h["backend"] == "transformers" and h["dtype"] == "float32" and h["raw_bytes"] == 0
    assert bpb < 4.5  # chunks of 40 tokens of 400 bytes of text: far from the 1 bit per byte of long chunks


@needs_llama
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_llama_roundtrip(llama, name):
    h, bpb = _roundtrip(llama, name)
    assert h["backend"] == "llama.cpp" and h["dtype"] == "Q4_1" and h["raw_bytes"] == 0
    assert bpb < 4.5


def test_same_model_hash_whichever_way_it_is_opened(hf, smollm2):
    """Another TransformersBackend over the same weights records the same identity; the model file's
    dequantized weights and tokenizer are what is hashed."""
    model, tok = smollm2
    assert LMCompressor(model, tok).backend.identity() == hf.backend.identity()


def test_invalid_utf8_and_special_token_text(hf):
    data = b"<|im_start|>user\nBytes \xff\xfe that are not UTF-8, then text again.\r\n\x00end<|endoftext|>"
    blob = hf.compress(data)
    assert lm_info(blob)["raw_bytes"] == 2
    assert hf.decompress(blob) == data


def test_other_weights_refused_then_detected(hf, smollm2):
    model, tok = smollm2
    other = copy.deepcopy(model)
    with __import__("torch").no_grad():
        other.model.layers[3].mlp.down_proj.weight.mul_(1.01)
    blob = hf.compress(TEXTS["alice29.txt"][:200])
    with pytest.raises(ValueError, match="model weights"):
        LMCompressor(other, tok).decompress(blob)
    with pytest.raises(ccomp.CorruptStreamError, match="differ"):
        LMCompressor(other, tok, strict=False).decompress(blob)


def test_other_tokenizer_and_temperature_refused(hf, smollm2):
    model, tok = smollm2
    short = TEXTS["asyoulik.txt"][:120]
    blob = hf.compress(short)
    other_tok = copy.deepcopy(tok)
    other_tok.add_tokens(["ccomp-token"])
    with pytest.raises(ValueError, match="tokenizer"):
        LMCompressor(model, other_tok).decompress(blob)
    with pytest.raises(ValueError, match="temperature"):
        LMCompressor(model, tok, temperature=0.8).decompress(blob)
    warm = LMCompressor(model, tok, temperature=0.8, chunk_tokens=40)
    blob = warm.compress(short)
    assert lm_info(blob)["temperature"] == 0.8 and warm.decompress(blob) == short


@needs_llama
def test_other_backend_refused(hf, llama):
    blob = llama.compress(TEXTS["plrabn12.txt"][:200])
    with pytest.raises(ValueError, match="backend"):
        hf.decompress(blob)
    with pytest.raises(ccomp.CorruptStreamError):
        LMCompressor(hf.backend, strict=False).decompress(blob)


@needs_llama
def test_llama_logits_do_not_depend_on_threads_or_other_sessions(llama):
    """The property the parallel loop relies on: a step's logits depend on the tokens and the batch shape
    only -- not on the thread count, nor on another session running at the same time."""
    b = llama.backend
    ids = np.asarray(b.tokenize(TEXTS["lcet10.txt"]), dtype=np.int64)
    feeds = ids[:24].reshape(4, 6).T  # 6 steps of a batch of 4

    def run(threads):
        s = b.session(threads)
        s.reset(4, 6)
        out = np.stack([s.step(np.ascontiguousarray(f)) for f in feeds])
        s.close()
        return out

    one = run(1)
    assert np.array_equal(one, run(2))
    assert np.isfinite(one).all() and one.shape == (6, 4, b.vocab)


def test_cli_roundtrip(tmp_path):
    src = tmp_path / "alice.txt"
    src.write_bytes(TEXTS["alice29.txt"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    backend = "llama.cpp" if importlib.util.find_spec("llama_cpp") else "transformers"
    run = [sys.executable, "-m", "ccomp"]
    r = subprocess.run(run + ["compress", "--model", "smollm2", "--backend", backend, "--chunk-tokens", "64",
                              "--no-progress", str(src)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "bits/byte" in r.stderr
    out = tmp_path / "back.txt"
    r = subprocess.run(run + ["decompress", "--no-progress", "-o", str(out), str(src) + ".ccm"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == src.read_bytes()
    r = subprocess.run(run + ["compress", "--level", "3", "--model", "smollm2", "-f", str(src)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "--level" in r.stderr

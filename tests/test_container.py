"""The framing kv (CCKV) and sketch (CCSK) share (python/ccomp/_container.py writes it, and reads kv's;
csrc/util/frame.c reads sketch's): magic, version byte, the format's bytes, CRC-32 of all before it."""
import struct
import zlib

import numpy as np
import pytest

import ccomp
from ccomp import _container, kv, sketch


def test_frame_layout():
    data = _container.frame(b"ABCD", 3, [b"xy", bytearray(b"z")])
    assert data[:5] == b"ABCD\x03" and data[5:-4] == b"xyz"
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(b"ABCD\x03xyz")
    assert _container.frame(b"ABCD", 3, b"xyz") == data
    assert bytes(_container.unframe(data, b"ABCD", 3, "thing")) == b"xyz"
    assert bytes(_container.unframe(_container.frame(b"ABCD", 0, []), b"ABCD", 0, "thing")) == b""
    for magic, version in [(b"ABC", 1), (b"ABCD", 256), (b"ABCD", -1)]:
        with pytest.raises(ValueError):
            _container.frame(magic, version, b"")


def test_unframe_checks_in_order():
    data = _container.frame(b"ABCD", 1, b"payload")
    cases = [(data[:8], 4, "too short: 8 bytes"), (b"ABCE" + data[4:], 0, "bad magic"),
             (data[:6] + b"P" + data[7:], 0, "CRC-32 mismatch: the thing is damaged"),
             (data[:-1], 0, "CRC-32 mismatch")]
    body = b"ABCD\x02payload"
    cases.append((body + struct.pack("<I", zlib.crc32(body)), 0, r"unsupported thing version 2 \(this build reads 1\)"))
    for bad, head, match in cases:
        with pytest.raises(ccomp.CorruptStreamError, match=match):
            _container.unframe(bad, b"ABCD", 1, "thing", head=head)
    # a wrong version behind a damaged CRC is reported as damage (the CRC is checked first)
    with pytest.raises(ccomp.CorruptStreamError, match="CRC"):
        _container.unframe(body + b"\0\0\0\0", b"ABCD", 1, "thing")


def _refix(data, at, value):
    body = bytearray(data[:-4])
    body[at] = value
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def test_kv_and_sketch_share_the_frame():
    """Both containers are the same frame around their own bytes, and the Python reader (kv) and the C reader
    (sketch) refuse the same damage with the same words."""
    t = kv.quantize(np.linspace(-1, 1, 32 * 64, dtype=np.float32).reshape(32, 64), "q8_0")
    s = sketch.fit(np.linspace(-1, 1, 4 * 16, dtype=np.float32).reshape(4, 16), bits=2, method="rtn")
    for data, magic, what, reader in [(t.to_bytes(), b"CCKV", "ccomp.kv tensor", kv.QuantizedTensor.from_bytes),
                                      (s.to_bytes(), b"CCSK", "ccomp.sketch container", sketch.Sketch.from_bytes)]:
        body = bytes(_container.unframe(data, magic, 1, what))
        assert _container.frame(magic, 1, body) == data
        for bad, match in [(b"XXXX" + data[4:], f"not a {what} \\(bad magic or too short: {len(data)} bytes\\)"),
                           (data[:7], f"not a {what} \\(bad magic or too short: 7 bytes\\)"),
                           (data[:-4] + bytes([data[-4] ^ 1]) + data[-3:], f"CRC-32 mismatch: the {what} is damaged"),
                           (_refix(data, 4, 2), f"unsupported {what} version 2 \\(this build reads 1\\)")]:
            with pytest.raises(ccomp.CorruptStreamError, match=match):
                reader(bad)

"""The framing every ccomp container shares (kv's CCKV, sketch's CCSK): a 4-byte magic, a version byte, the
format's own bytes, then the CRC-32 (zlib's, uint32 little-endian) of everything before it.

A format's header length, when it has one, is the format's business (kv writes one; sketch's entries
carry their own sizes).  The C reader of CCSK checks the same frame in csrc/util/frame.c.
"""
import struct
import zlib

from ._core import CorruptStreamError

# magic (4) + version (1) before the format's bytes; the CRC-32 (4) after them
PREFIX = 5
CRC = 4


def frame(magic, version, body):
    """``magic + version + body + crc32`` as bytes; ``body`` is bytes or a list of bytes-like parts."""
    if len(magic) != 4 or not 0 <= version <= 255:
        raise ValueError(f"a container magic is 4 bytes and a version one byte, got {magic!r} and {version}")
    parts = [magic, bytes([version])] + ([body] if isinstance(body, (bytes, bytearray, memoryview)) else list(body))
    data = b"".join(parts)
    return data + struct.pack("<I", zlib.crc32(data))


def unframe(data, magic, version, what, head=0):
    """The format's bytes of ``data`` (a ``bytes``), between the version byte and the CRC-32, after checking,
    in this order: at least ``PREFIX + head + CRC`` bytes and the magic, the CRC-32, then the version.

    ``what`` names the object in the messages ("ccomp.kv tensor"); CorruptStreamError on any failure."""
    if len(data) < PREFIX + head + CRC or data[:4] != magic:
        raise CorruptStreamError(f"not a {what} (bad magic or too short: {len(data)} bytes)")
    if zlib.crc32(memoryview(data)[:-CRC]) != struct.unpack("<I", data[-CRC:])[0]:
        raise CorruptStreamError(f"CRC-32 mismatch: the {what} is damaged or truncated")
    if data[4] != version:
        raise CorruptStreamError(f"unsupported {what} version {data[4]} (this build reads {version})")
    return memoryview(data)[PREFIX:-CRC]

"""Plain-Python specification of ZIP-FIT scoring, straight from the paper's formulas
and the compressors' own Python libraries.  Slow and obviously right."""
import gzip

import lz4.frame
import zstandard


def compressed_size(data, compressor, level):
    if isinstance(data, str):
        data = data.encode("utf-8")
    if compressor == "gzip":
        return len(gzip.compress(data, compresslevel=level))
    if compressor == "lz4":
        return len(lz4.frame.compress(data, compression_level=level))
    if compressor == "zstd":
        return len(zstandard.ZstdCompressor(level=level).compress(data))
    raise ValueError(compressor)


def _bytes(t):
    return t.encode("utf-8") if isinstance(t, str) else bytes(t)


def ncd(x, y, compressor, level):
    cx = compressed_size(x, compressor, level)
    cy = compressed_size(y, compressor, level)
    cxy = compressed_size(_bytes(x) + _bytes(y), compressor, level)
    return (cxy - min(cx, cy)) / max(cx, cy)


def alignment_scores(sources, targets, compressor, level):
    out = []
    for x in sources:
        total = 0.0
        for y in targets:
            total += 1.0 - ncd(x, y, compressor, level)
        out.append(total / len(targets))
    return out

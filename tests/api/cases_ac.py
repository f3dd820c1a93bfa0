"""Hostile arguments of ccomp.ac (range coding, containers, Equal-Info windows) and of the built-in
compressor ccomp._cm (ac.compress / ac.decompress)."""
import numpy as np

import ccomp
from ccomp import _cm
import ccomp.ac as ac
from tests.api import Case
from tests.api.cases_args import _BadDLPack

MODULES = ["ac", "_cm"]

P = np.full((3, 10), 0.1, np.float32)
S = np.array([0, 1, 2])
DATA = ac.encode(S, P)
LOGIT_DATA = ac.encode(S, P, logits=True, temperature=0.5)
SKEWED = np.tile(np.array([0.5] + [0.5 / 9] * 9, np.float32), (3, 1))  # another model than DATA's
NAN = P.copy()
NAN[1, 3] = np.nan
WINDOWS, COUNTS = ac.equal_info_windows(S, P, bits=32, precision=16)
BLOB = ac.compress(b"hostile input")


def _dec():
    return ac.Decoder(DATA)


def _rdec():
    return ac.RangeDecoder(ac.RangeEncoder(16).get_compressed() + b"\0" * 8, 16)


def _model_cases(func, call):
    """precision / rule / logits / temperature of a function taking the model keywords: call(**kw)."""
    return [
        Case(func, "precision", lambda: call(precision=24.0), TypeError, what="float"),
        Case(func, "precision", lambda: call(precision=2**70), ValueError, what="2**70"),
        Case(func, "precision", lambda: call(precision=11), ValueError, what="too small"),
        Case(func, "rule", lambda: call(rule="huffman"), ValueError, what="unknown"),
        Case(func, "rule", lambda: call(rule=0), TypeError, what="int"),
        Case(func, "logits", lambda: call(logits="yes"), TypeError, what="str"),
        Case(func, "temperature", lambda: call(logits=True, temperature=float("nan")), ValueError, what="NaN"),
        Case(func, "temperature", lambda: call(logits=True, temperature=0.0), ValueError, what="zero"),
        Case(func, "temperature", lambda: call(logits=True, temperature="1"), TypeError, what="str"),
        Case(func, "temperature", lambda: call(temperature=2.0), ValueError, what="without logits"),
    ]


CASES = [
    # quantize / lookup / ideal_bits
    Case("ac.quantize", "probs", lambda: ac.quantize("abc"), TypeError, what="str"),
    Case("ac.quantize", "probs", lambda: ac.quantize(np.ones(5, np.int32)), TypeError, what="int dtype"),
    Case("ac.quantize", "probs", lambda: ac.quantize(np.ones(1)), ValueError, what="V=1"),
    Case("ac.quantize", "probs", lambda: ac.quantize(np.ones((2, 2, 2))), ValueError, what="3-D"),
    Case("ac.quantize", "probs", lambda: ac.quantize(NAN), ValueError, what="NaN"),
    *_model_cases("ac.quantize", lambda **kw: ac.quantize(P[0], **kw)),
    Case("ac.lookup", "symbols", lambda: ac.lookup([0.5, 1, 2], P), TypeError, what="float"),
    Case("ac.lookup", "symbols", lambda: ac.lookup([0, 10, 2], P), ValueError, what="out of range"),
    Case("ac.lookup", "symbols", lambda: ac.lookup([0, 1], P), ValueError, what="length"),
    Case("ac.lookup", "symbols", lambda: ac.lookup(None, P), TypeError, what="None"),
    Case("ac.lookup", "probs", lambda: ac.lookup(S, P.astype(np.float16)), TypeError, what="float16"),
    Case("ac.lookup", "probs", lambda: ac.lookup(S, NAN), ValueError, what="NaN"),
    *_model_cases("ac.lookup", lambda **kw: ac.lookup(S, P, **kw)),
    Case("ac.lookup", "threads", lambda: ac.lookup(S, P, threads=1.5), TypeError, what="float"),
    Case("ac.lookup", "threads", lambda: ac.lookup(S, P, threads=0), ValueError, what="zero"),
    Case("ac.ideal_bits", "cum_freq_or_symbols", lambda: ac.ideal_bits(5), TypeError, what="int"),
    Case("ac.ideal_bits", "cum_freq_or_symbols", lambda: ac.ideal_bits([0, 99, 1], P), ValueError, "symbols",
         "out of range"),
    Case("ac.ideal_bits", "probs", lambda: ac.ideal_bits(S, "p"), TypeError, what="str"),
    Case("ac.ideal_bits", "precision", lambda: ac.ideal_bits(S, P, precision=1.5), TypeError, what="float"),
    Case("ac.ideal_bits", "precision", lambda: ac.ideal_bits((S, S), precision=99), ValueError, what="99"),

    # containers
    Case("ac.encode", "symbols", lambda: ac.encode([0, 10, 0], P), ValueError, what="out of range"),
    Case("ac.encode", "symbols", lambda: ac.encode([-1, 0, 0], P), ValueError, what="negative"),
    Case("ac.encode", "symbols", lambda: ac.encode(np.array([2**64 - 1, 0, 0], np.uint64), P), ValueError,
         what="2**64-1"),
    Case("ac.encode", "symbols", lambda: ac.encode("abc", P), TypeError, what="str"),
    Case("ac.encode", "probs", lambda: ac.encode(S, P[0]), ValueError, what="1-D"),
    Case("ac.encode", "probs", lambda: ac.encode(S, NAN), ValueError, what="NaN"),
    Case("ac.encode", "probs", lambda: ac.encode(S, _BadDLPack()), TypeError, "probs", "bogus DLPack export"),
    Case("ac.encode", "symbols", lambda: ac.encode(_BadDLPack(), P), TypeError, "symbols", "bogus DLPack export"),
    Case("ac.encode", "probs", lambda: ac.encode(S, np.zeros((3, 10), np.float32)), ValueError, what="zeros"),
    Case("ac.encode", "probs", lambda: ac.encode(S, P[:, ::2]), ValueError, what="strided"),
    *_model_cases("ac.encode", lambda **kw: ac.encode(S, P, **kw)),
    Case("ac.encode", "chunk_size", lambda: ac.encode(S, P, chunk_size=1.9), TypeError, what="fraction"),
    Case("ac.encode", "chunk_size", lambda: ac.encode(S, P, chunk_size=2**70), ValueError, what="2**70"),
    Case("ac.encode", "chunk_size", lambda: ac.encode(S, P, chunk_size=0), ValueError, what="zero"),
    Case("ac.encode", "threads", lambda: ac.encode(S, P, threads=2**70), ValueError, what="2**70"),
    Case("ac.encode", "threads", lambda: ac.encode(S, P, threads="4"), TypeError, what="str"),
    Case("ac.info", "data", lambda: ac.info(5), TypeError, what="int"),
    Case("ac.info", "data", lambda: ac.info("CCAC"), TypeError, what="str"),
    Case("ac.info", "data", lambda: ac.info(b""), ccomp.CorruptStreamError, "too short", "empty"),
    Case("ac.info", "data", lambda: ac.info(DATA[:-1]), ccomp.CorruptStreamError, "CRC", "truncated"),
    Case("ac.decode", "data", lambda: ac.decode(5, P), TypeError, what="int"),
    Case("ac.decode", "data", lambda: ac.decode(DATA[:20], P), ccomp.CorruptStreamError, "too short", "short"),
    Case("ac.decode", "probs", lambda: ac.decode(DATA, P[:2]), ValueError, what="rows"),
    Case("ac.decode", "probs", lambda: ac.decode(DATA, NAN), ValueError, what="NaN"),
    Case("ac.decode", "probs", lambda: ac.decode(DATA, SKEWED), ccomp.CorruptStreamError,
         "probabilities differ", "other model"),
    Case("ac.decode", "logits", lambda: ac.decode(DATA, P, logits=True), ValueError, what="conflict"),
    Case("ac.decode", "logits", lambda: ac.decode(DATA, P, logits="no"), TypeError, what="str"),
    Case("ac.decode", "temperature", lambda: ac.decode(LOGIT_DATA, P, temperature=0.6), ValueError, what="conflict"),
    Case("ac.decode", "temperature", lambda: ac.decode(LOGIT_DATA, P, temperature=float("nan")), ValueError,
         what="NaN"),
    Case("ac.decode", "threads", lambda: ac.decode(DATA, P, threads=-1), ValueError, what="negative"),
    Case("ac.Decoder", "data", lambda: ac.Decoder(None), TypeError, what="None"),
    Case("ac.Decoder", "data", lambda: ac.Decoder(b"CCAC" * 20), ccomp.CorruptStreamError, "CRC", "garbage"),
    Case("ac.Decoder", "logits", lambda: ac.Decoder(LOGIT_DATA, logits=False), ValueError, what="conflict"),
    Case("ac.Decoder", "temperature", lambda: ac.Decoder(LOGIT_DATA, temperature=2.0), ValueError, what="conflict"),
    Case("ac.Decoder", "temperature", lambda: ac.Decoder(LOGIT_DATA, temperature=[1]), TypeError, what="list"),
    Case("ac.Decoder.decode", "probs_t", lambda: _dec().decode(np.full(11, 0.1)), ValueError, "probs", "vocab"),
    Case("ac.Decoder.decode", "probs_t", lambda: _dec().decode(P), ValueError, "probs", "2-D"),
    Case("ac.Decoder.decode", "probs_t", lambda: _dec().decode(NAN[1]), ValueError, "probs", "NaN"),
    Case("ac.Decoder.decode", "probs_t", lambda: _dec().decode("row"), TypeError, "probs", "str"),
    Case("ac.Decoder.decode_batch", "probs", lambda: _dec().decode_batch(np.full((4, 10), 0.1, np.float32)), ValueError,
         "remain", "too many"),
    Case("ac.Decoder.decode_batch", "probs", lambda: _dec().decode_batch(NAN), ValueError, what="NaN"),
    Case("ac.Decoder.decode_batch", "probs", lambda: _dec().decode_batch(P.astype(np.float64)), ValueError,
         "float64", "float type"),

    # the bare coder
    Case("ac.RangeEncoder", "precision", lambda: ac.RangeEncoder(30), ValueError, what="30"),
    Case("ac.RangeEncoder", "precision", lambda: ac.RangeEncoder("24"), TypeError, what="str"),
    Case("ac.RangeEncoder.encode", "cum", lambda: ac.RangeEncoder(12).encode([4000], [100]), ValueError,
         "nonempty interval", "past the end"),
    Case("ac.RangeEncoder.encode", "cum", lambda: ac.RangeEncoder(12).encode([0.5], [100]), TypeError, what="float"),
    Case("ac.RangeEncoder.encode", "cum", lambda: ac.RangeEncoder(12).encode([-1], [100]), ValueError,
         what="negative"),
    Case("ac.RangeEncoder.encode", "freq", lambda: ac.RangeEncoder(12).encode([0], [0]), ValueError,
         "nonempty interval", "zero"),
    Case("ac.RangeEncoder.encode", "freq", lambda: ac.RangeEncoder(12).encode([0], "f"), TypeError, what="str"),
    Case("ac.RangeEncoder.encode", "freq", lambda: ac.RangeEncoder(12).encode([0, 1], [1]), ValueError,
         "same 1-D shape", "length"),
    Case("ac.RangeDecoder", "data", lambda: ac.RangeDecoder(b"abc"), ccomp.CorruptStreamError, "whole number",
         "partial word"),
    Case("ac.RangeDecoder", "data", lambda: ac.RangeDecoder(3.5), TypeError, what="float"),
    Case("ac.RangeDecoder", "precision", lambda: ac.RangeDecoder(b"", 29), ValueError, what="29"),
    Case("ac.RangeDecoder.advance", "cum", lambda: _rdec().advance(1.5, 1), TypeError, what="float"),
    Case("ac.RangeDecoder.advance", "cum", lambda: _rdec().advance(2**40, 1), ValueError, what="2**40"),
    Case("ac.RangeDecoder.advance", "freq", lambda: _rdec().advance(0, 0), ValueError, what="zero"),
    Case("ac.RangeDecoder.advance", "freq", lambda: _rdec().advance(5, 5), ValueError, "target", "misses target"),
    Case("ac.RangeDecoder.decode", "cdf", lambda: _rdec().decode(np.array([0, 1 << 16])), TypeError, what="int64"),
    Case("ac.RangeDecoder.decode", "cdf", lambda: _rdec().decode(np.array([0, 9, 9, 1 << 16], np.uint32)),
         ValueError, "increasing", "not increasing"),
    Case("ac.RangeDecoder.decode", "cdf", lambda: _rdec().decode(np.zeros((1, 1, 3), np.uint32)), ValueError,
         what="3-D"),
    Case("ac.RangeDecoder.decode_probs", "probs", lambda: _rdec().decode_probs(NAN), ValueError, what="NaN"),
    Case("ac.RangeDecoder.decode_probs", "probs", lambda: _rdec().decode_probs(None), TypeError, what="None"),
    *_model_cases("ac.RangeDecoder.decode_probs",
                  lambda **kw: _rdec().decode_probs(P, **{k: v for k, v in kw.items() if k != "precision"})
                  if "precision" not in kw else ac.RangeDecoder(b"", kw["precision"])),

    # Equal-Info windows
    Case("ac.equal_info_windows", "symbols", lambda: ac.equal_info_windows([0, 99, 0], P), ValueError,
         what="out of range"),
    Case("ac.equal_info_windows", "symbols", lambda: ac.equal_info_windows([0.5, 1, 0], P), TypeError,
         what="float"),
    Case("ac.equal_info_windows", "model", lambda: ac.equal_info_windows(S, "model"), TypeError, what="str"),
    Case("ac.equal_info_windows", "model", lambda: ac.equal_info_windows(S, lambda w: np.ones(1)), ValueError,
         what="callable V=1"),
    Case("ac.equal_info_windows", "model", lambda: ac.equal_info_windows(S, NAN), ValueError, "probs", "NaN"),
    Case("ac.equal_info_windows", "bits", lambda: ac.equal_info_windows(S, P, bits=16.5), TypeError, what="float"),
    Case("ac.equal_info_windows", "bits", lambda: ac.equal_info_windows(S, P, bits=257), ValueError, what="257"),
    Case("ac.equal_info_windows", "bits", lambda: ac.equal_info_windows(S, P, bits=2**70), ValueError,
         what="2**70"),
    *_model_cases("ac.equal_info_windows", lambda **kw: ac.equal_info_windows(S, P, **kw)),
    Case("ac.decode_equal_info_windows", "windows",
         lambda: ac.decode_equal_info_windows(5, COUNTS, P, bits=32, precision=16), TypeError, what="int"),
    Case("ac.decode_equal_info_windows", "windows",
         lambda: ac.decode_equal_info_windows([b"\0"] * len(COUNTS), COUNTS, P, bits=32, precision=16),
         ValueError, "bytes", "short window"),
    Case("ac.decode_equal_info_windows", "windows",
         lambda: ac.decode_equal_info_windows([1.5] * len(COUNTS), COUNTS, P, bits=32, precision=16),
         TypeError, what="float window"),
    Case("ac.decode_equal_info_windows", "counts",
         lambda: ac.decode_equal_info_windows(WINDOWS, [0] * len(WINDOWS), P, bits=32, precision=16),
         ValueError, "at least one", "zero"),
    Case("ac.decode_equal_info_windows", "counts",
         lambda: ac.decode_equal_info_windows(WINDOWS, [1.5] * len(WINDOWS), P, bits=32, precision=16),
         TypeError, what="float"),
    Case("ac.decode_equal_info_windows", "model",
         lambda: ac.decode_equal_info_windows(WINDOWS, COUNTS, P[:2], bits=32, precision=16), ValueError,
         what="rows"),
    Case("ac.decode_equal_info_windows", "model",
         lambda: ac.decode_equal_info_windows(WINDOWS, COUNTS, "m", bits=32, precision=16), TypeError, what="str"),
    Case("ac.decode_equal_info_windows", "bits",
         lambda: ac.decode_equal_info_windows(WINDOWS, COUNTS, P, bits=0, precision=16), ValueError, what="zero"),
    Case("ac.decode_equal_info_windows", "bits",
         lambda: ac.decode_equal_info_windows(WINDOWS, COUNTS, P, bits=None, precision=16), TypeError,
         what="None"),
    *_model_cases("ac.decode_equal_info_windows",
                  lambda **kw: ac.decode_equal_info_windows(WINDOWS, COUNTS, P, bits=32, **kw)),
]

for _mod in ("ac", "_cm"):
    _m = ac if _mod == "ac" else _cm
    CASES += [
        Case(f"{_mod}.compress", "data", lambda m=_m: m.compress("text"), TypeError, what="str"),
        Case(f"{_mod}.compress", "data", lambda m=_m: m.compress(12345), TypeError, what="int"),
        Case(f"{_mod}.compress", "data", lambda m=_m: m.compress(np.arange(10, dtype=np.uint8)[::2]), ValueError,
             what="strided"),
        Case(f"{_mod}.compress", "level", lambda m=_m: m.compress(b"x", level=6.0), TypeError, what="float"),
        Case(f"{_mod}.compress", "level", lambda m=_m: m.compress(b"x", level=2**70), ValueError, what="2**70"),
        Case(f"{_mod}.compress", "level", lambda m=_m: m.compress(b"x", level=0), ValueError, what="zero"),
        Case(f"{_mod}.compress", "progress", lambda m=_m: m.compress(b"x", progress="yes"), TypeError, what="str"),
        Case(f"{_mod}.decompress", "data", lambda m=_m: m.decompress(None), TypeError, what="None"),
        Case(f"{_mod}.decompress", "data", lambda m=_m: m.decompress(BLOB[:-1]), ccomp.CorruptStreamError, "CRC",
             "truncated"),
        Case(f"{_mod}.decompress", "progress", lambda m=_m: m.decompress(BLOB, progress=1), TypeError, what="int"),
        # the message named "blob", the core's name for it
        Case(f"{_mod}.decompress", "data", lambda m=_m: m.decompress(np.frombuffer(BLOB * 2, np.uint8)[::2]),
             ValueError, "data must be C-contiguous", "strided"),
    ]
CASES += [
    Case("_cm.info", "data", lambda: _cm.info(5), TypeError, what="int"),
    Case("_cm.info", "data", lambda: _cm.info(b"CCCM"), ccomp.CorruptStreamError, "too short", "short"),
]

EXEMPT = {}

# ccomp.ac.LMCompressor and lm_info, on the small deterministic model of tests/lm_toy.py (no torch)
from tests.lm_toy import ToyBackend  # noqa: E402


def _lm(**kw):
    return ac.LMCompressor(ToyBackend(), **kw)


LM_BLOB = _lm(chunk_tokens=8).compress(b"hostile input")
CASES += [
    Case("ac.LMCompressor", "model", lambda: ac.LMCompressor(42), TypeError, what="int"),
    Case("ac.LMCompressor", "model", lambda: ac.LMCompressor("/nonexistent/model.gguf"), FileNotFoundError,
         what="missing file"),
    Case("ac.LMCompressor", "tokenizer", lambda: ac.LMCompressor("smollm2", tokenizer=object()), ValueError,
         what="with a path"),
    Case("ac.LMCompressor", "backend", lambda: ac.LMCompressor("smollm2", backend="onnx"), ValueError,
         what="unknown"),
    Case("ac.LMCompressor", "backend", lambda: ac.LMCompressor("smollm2", backend=1), TypeError, what="int"),
    Case("ac.LMCompressor", "chunk_tokens", lambda: _lm(chunk_tokens=0), ValueError, what="zero"),
    Case("ac.LMCompressor", "chunk_tokens", lambda: _lm(chunk_tokens=8.0), TypeError, what="float"),
    Case("ac.LMCompressor", "chunk_tokens", lambda: _lm(chunk_tokens=2**70), ValueError, what="2**70"),
    Case("ac.LMCompressor", "chunk_tokens", lambda: _lm(chunk_tokens=1 << 20), ValueError, what="beyond context"),
    Case("ac.LMCompressor", "batch", lambda: _lm(batch=0), ValueError, what="zero"),
    Case("ac.LMCompressor", "batch", lambda: _lm(batch="4"), TypeError, what="str"),
    Case("ac.LMCompressor", "precision", lambda: _lm(precision=24.0), TypeError, what="float"),
    Case("ac.LMCompressor", "precision", lambda: _lm(precision=11), ValueError, what="too small"),
    Case("ac.LMCompressor", "rule", lambda: _lm(rule="huffman"), ValueError, what="unknown"),
    Case("ac.LMCompressor", "temperature", lambda: _lm(temperature=float("nan")), ValueError, what="NaN"),
    Case("ac.LMCompressor", "temperature", lambda: _lm(temperature=0.0), ValueError, what="zero"),
    Case("ac.LMCompressor", "temperature", lambda: _lm(temperature="1"), TypeError, what="str"),
    Case("ac.LMCompressor", "threads", lambda: _lm(threads=0), ValueError, what="zero"),
    Case("ac.LMCompressor", "threads", lambda: _lm(threads=1.5), TypeError, what="float"),
    Case("ac.LMCompressor", "strict", lambda: _lm(strict="yes"), TypeError, what="str"),
    Case("ac.LMCompressor.compress", "data", lambda: _lm().compress("text"), TypeError, what="str"),
    Case("ac.LMCompressor.compress", "data", lambda: _lm().compress(None), TypeError, what="None"),
    Case("ac.LMCompressor.compress", "progress", lambda: _lm().compress(b"x", progress=1), TypeError, what="int"),
    Case("ac.LMCompressor.decompress", "blob", lambda: _lm().decompress("blob"), TypeError, what="str"),
    Case("ac.LMCompressor.decompress", "blob", lambda: _lm().decompress(LM_BLOB[:-1]), ccomp.CorruptStreamError,
         "CRC", "truncated"),
    Case("ac.LMCompressor.decompress", "blob", lambda: _lm(temperature=0.5).decompress(LM_BLOB), ValueError,
         "temperature", "other settings"),
    Case("ac.LMCompressor.decompress", "blob", lambda: _lm().decompress(BLOB), ccomp.CorruptStreamError,
         "ccomp LM container", "a CM stream"),
    Case("ac.LMCompressor.decompress", "progress", lambda: _lm().decompress(LM_BLOB, progress="no"), TypeError,
         what="str"),
    Case("ac.LMCompressor.decompress", "max_tokens", lambda: _lm().decompress(LM_BLOB, max_tokens=-1), ValueError,
         what="negative"),
    Case("ac.LMCompressor.decompress", "max_tokens", lambda: _lm().decompress(LM_BLOB, max_tokens=3), ValueError,
         what="too many tokens"),
    Case("ac.LMCompressor.decompress", "max_tokens", lambda: _lm().decompress(LM_BLOB, max_tokens=1.0), TypeError,
         what="float"),
    Case("ac.lm_info", "blob", lambda: ac.lm_info(None), TypeError, what="None"),
    Case("ac.lm_info", "blob", lambda: ac.lm_info(LM_BLOB[:20]), ccomp.CorruptStreamError, "ccomp LM container",
         "short"),
]

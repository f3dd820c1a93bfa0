"""``ccomp demo``: ZIP-FIT selection, then the built-in compressor, on the real data bundled with ccomp
(:mod:`ccomp.datasets`).

Targets are the 164 HumanEval prompts; candidates are documents cut from the
Canterbury-corpus texts, an HTML page, a URL list and this machine's Python
standard library.  A good selection for a code benchmark puts code on top.
"""
import os
import random
import sys
import sysconfig
import time

from . import build_info, datasets, zipfit

__all__ = ["mixed_corpus", "run_demo", "kv_demo", "sketch_demo", "tokens_demo"]

PROSE = ["alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt"]


def _cut(text, kind, rng, count, lo=200, hi=2000):
    docs = []
    if len(text) <= lo:
        return docs
    for _ in range(count):
        n = rng.randint(lo, hi)
        start = rng.randrange(0, max(1, len(text) - n))
        docs.append({"text": text[start:start + n], "type": kind})
    return docs


def mixed_corpus(per_type=120, seed=0):
    """Labelled documents of 200-2000 characters: prose, html, urls and python code."""
    rng = random.Random(seed)
    docs = []
    prose = "".join(datasets.corpus_text(f) for f in PROSE)
    docs += _cut(prose, "prose", rng, per_type)
    docs += _cut(datasets.corpus_text("html"), "html", rng, per_type)
    docs += _cut(datasets.corpus_text("urls.10K"), "urls", rng, per_type)
    stdlib = sysconfig.get_paths()["stdlib"]
    code_files = sorted(os.path.join(stdlib, f) for f in os.listdir(stdlib) if f.endswith(".py"))
    code = "".join(open(p, encoding="utf-8", errors="replace").read() for p in code_files[:60])
    docs += _cut(code, "python", rng, per_type)
    rng.shuffle(docs)
    return docs


def run_demo(top=10, level=1):
    targets = datasets.humaneval()
    docs = mixed_corpus()
    info = build_info()
    print(f"ccomp {info['version']}: zlib {info['zlib']}, lz4 {info['lz4']}, zstd {info['zstd']}; "
          f"gzip engine at level {level}: {zipfit.engine('gzip', level)}")
    print(f"ZIP-FIT: {len(docs)} candidate documents (prose, html, urls, python) "
          f"against {len(targets)} HumanEval prompts, gzip level {level}")
    t0 = time.perf_counter()
    idx, scores = zipfit.select_top_k([d["text"] for d in docs], targets, k=top, level=level, progress=True)
    dt = time.perf_counter() - t0
    pairs = len(docs) * len(targets)
    print(f"scored {pairs} pairs in {dt:.2f} s ({pairs / dt:,.0f} pairs/s)\n")
    print(f"{'rank':>4}  {'score':>8}  {'type':<7} text")
    for r, (i, s) in enumerate(zip(idx, scores), 1):
        snippet = " ".join(docs[i]["text"].split())[:70]
        print(f"{r:>4}  {s:8.5f}  {docs[i]['type']:<7} {snippet}")
    kinds = [docs[i]["type"] for i in idx]
    print(f"\ntop {len(idx)}: " + ", ".join(f"{k} {kinds.count(k)}" for k in sorted(set(kinds))))
    compress_demo()
    kv_demo()
    sketch_demo()
    tokens_demo()
    sys.stdout.flush()
    return 0


def compress_demo(name="alice29.txt"):
    """The built-in context-mixing compressor on a bundled real text, next to gzip and xz."""
    import lzma
    import zlib

    from . import ac

    data = datasets.corpus(name)
    t0 = time.perf_counter()
    blob = ac.compress(data)
    dt = time.perf_counter() - t0
    if ac.decompress(blob) != data:
        raise RuntimeError("the built-in compressor did not round-trip")
    bpb = lambda n: 8.0 * n / len(data)  # noqa: E731
    print(f"\nccomp.ac.compress on {name} ({len(data):,} bytes): {bpb(len(blob)):.3f} bits/byte "
          f"({len(data) / dt / 1e6:.2f} MB/s); gzip -9: {bpb(len(zlib.compress(data, 9))):.3f}, "
          f"xz -9: {bpb(len(lzma.compress(data, preset=9))):.3f} bits/byte")


def kv_demo(tokens=512):
    """KV-cache quantization of a real transformer's K/V: bits per element against error."""
    import numpy as np

    from . import kv, minilm

    try:
        Q, K, V = minilm.real_qkv(max_tokens=tokens)
    except ImportError as e:  # the weights' package is optional for a user install
        print(f"\nccomp.kv demo skipped: {e}")
        return
    L, H, T, D = K.shape
    q = Q[:, :, -1:]  # the last token's queries, as in a decode step
    dense = kv.attention(q, K, V)  # layers play the role of the batch axis
    print(f"\nccomp.kv on real K/V: all-MiniLM-L6-v2 on alice29.txt, {L} layers x {H} heads x {T} tokens x "
          f"head dim {D}; attention of each head's last query over the compressed cache")
    print(f"{'method':<34} {'bits/elem':>9} {'K rel.MSE':>10} {'V rel.MSE':>10} {'attn out err':>12} {'ms':>6}")
    configs = [("groupwise 4-bit (K/channel, V/token)", "groupwise", dict(bits=4, group=32), True),
               ("groupwise 2-bit (K/channel, V/token)", "groupwise", dict(bits=2, group=32), True),
               ("GEAR 2-bit, 2% outliers, rank 2", "gear", dict(bits=2, group=32, outliers=0.02, rank=2), True),
               ("turbo 3-bit", "turbo", dict(bits=3), False),
               ("q8_0 (llama.cpp)", "q8_0", {}, False),
               ("q4_0 (llama.cpp)", "q4_0", {}, False)]
    for label, method, p, kivi_axes in configs:
        t0 = time.perf_counter()
        kq = kv.quantize(K, method, **(dict(p, axis="channel") if kivi_axes else p))
        vq = kv.quantize(V, method, **(dict(p, axis="token") if kivi_axes else p))
        out = kv.attention(q, kq, vq)
        ms = 1e3 * (time.perf_counter() - t0)
        rel = lambda a, b: float(np.sum((a - b) ** 2) / np.sum(b ** 2))  # noqa: E731
        bits = (kq.nbytes + vq.nbytes) * 8 / (K.size + V.size)
        print(f"{label:<34} {bits:9.3f} {rel(kq.dequantize(), K):10.2e} {rel(vq.dequantize(), V):10.2e} "
              f"{np.sqrt(rel(out, dense)):12.2e} {ms:6.0f}")


def sketch_demo(layer="encoder.layer.0.intermediate.dense", tokens=256, bits=4):
    """A SketchTune sketch of a real transformer layer: output error, size and LUT matmul speed."""
    import numpy as np

    from . import minilm, sketch

    try:
        W, X = minilm.linear_layers(max_tokens=tokens)[layer]
    except ImportError as e:  # the weights' package is optional for a user install
        print(f"\nccomp.sketch demo skipped: {e}")
        return
    t0 = time.perf_counter()
    s = sketch.fit(W, bits=bits, groups=1, method="leanquant", calibration=X, dtype="float16")
    t_fit = time.perf_counter() - t0
    err = sketch.output_error(W, s, X)
    print(f"\nccomp.sketch on a real layer: all-MiniLM-L6-v2 {layer} [{W.shape[0]} x {W.shape[1]}], "
          f"{X.shape[0]} real input tokens; LeanQuant {bits}-bit, one float16 table per row, fitted in "
          f"{t_fit:.2f} s")
    print(f"output error ||XW^T - XW_hat^T|| / ||XW^T||: {err:.4f}")
    print(f"size: {s.nbytes:,} bytes ({s.bits_per_weight:.3f} bits/weight) against float32 {W.nbytes:,} bytes "
          f"({W.nbytes / s.nbytes:.1f}x smaller) and float16 {W.nbytes // 2:,} bytes ({W.nbytes / 2 / s.nbytes:.1f}x)")
    Wh = s.dequantize()
    x = np.ascontiguousarray(X[:1])

    def best(f, reps=200):
        f()
        t = []
        for _ in range(reps):
            t1 = time.perf_counter()
            f()
            t.append(time.perf_counter() - t1)
        return min(t)

    t_lut = best(lambda: sketch.matmul(x, s))
    t_np = best(lambda: Wh @ x[0])
    print(f"matmul, one token: ccomp LUT GEMV {t_lut * 1e6:.0f} us, NumPy float32 W_hat @ x {t_np * 1e6:.0f} us "
          f"({t_np / t_lut:.1f}x; best of 200; bench/sketch_bench.py times 4096x4096 and 11008x4096 layers)")


def tokens_demo(pdf="Artin.pdf", page=2):
    """Correlation-guided compression of a real page's patch tokens: density and kept tokens per sub-image."""
    from . import pages, tokens

    try:
        p = pages.page_tokens(datasets.pdf(pdf), page)
    except RuntimeError as e:  # pdftoppm (poppler-utils) is optional for a user install
        print(f"\nccomp.tokens demo skipped: {e}")
        return
    B, N, _ = p.tokens.shape
    t0 = time.perf_counter()
    c = tokens.correlation_compress(p.tokens, cls_attention=p.saliency, threshold=pages.TEXT_THRESHOLD)
    ms = 1e3 * (time.perf_counter() - t0)
    print(f"\nccomp.tokens on a real page: {pdf} page {page} at {p.dpi} dpi, {B} sub-images of "
          f"{pages.SUB_IMAGE} x {pages.SUB_IMAGE} pixels, {N} patch tokens each; correlation_compress at "
          f"threshold {pages.TEXT_THRESHOLD}, patch saliency as the [CLS] attention")
    print(f"{'sub-image (row, col)':>20} {'density':>8} {'kept':>5} {'kept fraction':>13}")
    for b, (r, col) in enumerate(p.grid):
        print(f"{f'({r}, {col})':>20} {c.density[b]:8.3f} {c.keep[b]:5d} {c.kept_fraction[b]:13.3f}")
    total = int(c.keep.sum())
    print(f"kept {total} of {B * N} tokens ({total / (B * N):.1%}) in {ms:.0f} ms; an even split of the same total "
          f"would give every sub-image {total // B}, blank ones included")

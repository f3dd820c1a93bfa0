"""Real calls into ccomp._core, each replayed with one argument replaced by garbage.

A child process wraps every ``_core`` function, runs a small scenario through the public API of
every area (so the arguments are the well-formed ones the Python layer passes), and before each
real call (of a new signature) makes the same call with one argument at a time swapped for each
hostile value (0-d and wrongly shaped arrays, wrong dtypes, huge and negative ints, NaN, None,
truncated bytes...), while any handle it takes is live.
Every replay must return or raise an exception: a crash fails the test and names the call."""
import os
import subprocess
import sys
import textwrap

import pytest

SCENARIOS = {
    "ac": r"""
        import ccomp.ac as ac
        p = rng.random((12, 9)).astype(np.float32) + 0.01
        p /= p.sum(1, keepdims=True)
        s = rng.integers(0, 9, 12)
        blob = ac.encode(s, p, chunk_size=5)
        ac.decode(blob, p); ac.info(blob)
        d = ac.Decoder(blob)
        for row in p: d.decode(row)
        ac.lookup(s, p); ac.quantize(p)
        enc = ac.RangeEncoder(precision=12); enc.encode([0, 2048], [2048, 1024])
        rd = ac.RangeDecoder(enc.get_compressed(), precision=12)
        rd.decode(np.array([0, 2048, 3072, 4096], dtype=np.uint32))
        lg = np.log(p)
        w, c = ac.equal_info_windows(s, lambda ctx: lg[len(ctx)] if len(ctx) < len(lg) else lg[-1], bits=16, logits=True)
        ac.decode_equal_info_windows(w, c, lambda ctx: lg[len(ctx)] if len(ctx) < len(lg) else lg[-1], bits=16, logits=True)
        z = ac.compress(b"hello hello hello world" * 20, level=2); ac.decompress(z)
    """,
    "kv": r"""
        import ccomp.kv as kv
        x = rng.normal(size=(2, 8, 64)).astype(np.float32)
        q = rng.normal(size=(2, 64)).astype(np.float32)
        for m, kw in [("groupwise", dict(bits=4, group=32)), ("groupwise", dict(bits=2, group=32, axis="channel")),
                      ("bitmap_sparse", dict(sparsity=0.5)), ("gear", dict(bits=4, rank=2)), ("q8_0", {}),
                      ("q4_0", {}), ("turbo", dict(bits=3))]:
            try:
                t = kv.quantize(x, m, **kw)
            except (ValueError, TypeError):
                continue
            t.dequantize(); kv.attention(q[:, None, :].repeat(1, 1) if False else q.reshape(2, 1, 64), t, t)
            kv.QuantizedTensor.from_bytes(t.to_bytes())
        c = kv.KIVICache(bits=2, group=32, residual=32)
        c.append(x, x)
    """,
    "sketch": r"""
        from ccomp import sketch
        W = rng.normal(size=(16, 64)).astype(np.float32)
        X = rng.normal(size=(32, 64)).astype(np.float32)
        for m in ("rtn", "kmeans", "leanquant"):
            s = sketch.fit(W, bits=4, groups=2, method=m, calibration=X, iters=3)
        sketch.matmul(X[:3], s); sketch.grad_tables(X[:3], rng.normal(size=(3, 16)).astype(np.float32), s)
        sketch.grad_input(rng.normal(size=(3, 16)).astype(np.float32), s)
        s.dequantize(); sketch.output_error(W, s, X)
    """,
    "tokens": r"""
        from ccomp import tokens
        x = rng.standard_normal((2, 32, 16)).astype(np.float32)
        x[1, 8:] = x[1, 7]
        tokens.correlation_compress(x, cls_attention=np.ones((2, 32)), threshold=0.9, seed=1)
        tokens.correlation_compress(x, cls_attention=np.ones((2, 32)), threshold=0.9, seed=1, merge=True)
        tokens.tome_merge(x, r=8); tokens.most_similar(x, k=2)
        tokens.prumerge(x, np.ones((2, 32), np.float32)); tokens.visionzip(x, np.ones((2, 32), np.float32), dominant=4, contextual=2)
    """,
    "zipfit": r"""
        from ccomp import zipfit
        docs = ["the cat sat on the mat " * 5, "def f(x): return x + 1\n" * 4, "lorem ipsum dolor " * 6]
        for comp in ("gzip", "lz4", "zstd"):
            zipfit.compressed_sizes(docs, compressor=comp)
            zipfit.alignment_scores(docs, docs[:2], compressor=comp, chunk_size=16)
        zipfit.ncd(docs[0], docs[1])
    """,
}

CHILD = textwrap.dedent(r"""
    import faulthandler, sys
    import numpy as np
    import ccomp._core as core
    faulthandler.enable()
    area, scenario, mutate = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    f32 = np.float32
    garbage = [None, -1, 0, 2**31, 2**63 - 1, 2**70, 1.5, float("nan"), "x", b"", b"\x00" * 7,
               np.array(0.5, f32), np.zeros(0, f32), np.zeros((1, 1), f32), np.zeros(3, np.int64),
               np.array([-1, 2**30], np.int32), np.zeros(5, np.uint8), np.ones((2, 3, 4, 5), np.float16),
               np.zeros(9, np.uint8)[1:].view(f32), (), (1, 2, 3)]
    seen = set()

    def replay(name, f, a, k):
        # the bad calls run just before the real one, while any handle it takes is in its live state
        key = (name, tuple(type(v).__name__ + str(getattr(v, "shape", "")) for v in a))
        if key in seen:
            return
        seen.add(key)
        for i in range(len(a)):
            for g in garbage:
                b = list(a)
                b[i] = g
                print("call", name, "arg", i, "=", type(g).__name__, getattr(g, "shape", repr(g)[:20]),
                      file=sys.stderr, flush=True)
                try:
                    f(*b, **k)
                except Exception:
                    pass

    def recorder(name, f):
        def wrapped(*a, **k):
            if mutate:
                replay(name, f, a, k)
            seen.add((name,)) if not mutate else None
            return f(*a, **k)
        return wrapped

    for n in dir(core):
        f = getattr(core, n)
        if not n.startswith("_") and callable(f) and not isinstance(f, type):
            setattr(core, n, recorder(n, f))
    rng = np.random.default_rng(0)
    try:
        exec(scenario)
    except Exception as e:
        # with mutation a bad call may leave a handle in another state: only the clean run must succeed
        print("scenario stopped:", type(e).__name__, e, file=sys.stderr)
    print("ok", len(seen))
""")


@pytest.mark.parametrize("area", sorted(SCENARIOS))
def test_recorded_calls_with_one_bad_argument(area, tmp_path):
    clean = subprocess.run([sys.executable, "-c", CHILD, area, textwrap.dedent(SCENARIOS[area]), "0"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert clean.returncode == 0 and "scenario stopped" not in clean.stderr, clean.stderr[-2000:]
    assert int(clean.stdout.split()[1]) > 0, f"{area}: no _core call was recorded"
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, area, textwrap.dedent(SCENARIOS[area]), "1"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{area}: a replayed call hung; last call:\n" + "\n".join(err.splitlines()[-2:]))
    tail = "\n".join(p.stderr.strip().splitlines()[-30:])
    assert p.returncode == 0 and p.stdout.startswith("ok"), f"{area}: crash (exit {p.returncode}):\n{tail}"

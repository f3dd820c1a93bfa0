#!/usr/bin/env python3
"""ccomp.kv speed on this machine, against its peers in the same run.

1. Memory bandwidth: NumPy copies of the same float32 tensor on 1 and 2
   threads (the faster is "memcpy").
2. Quantize / dequantize throughput of every method (float32 input bytes per
   second) on 2 threads, as a share of memcpy (target for groupwise: >= 50%),
   against the peers that exist as code: llama.cpp's own NumPy quantizers
   (PyPI ``gguf``) for q8_0/q4_0, the NumPy specification of every method in
   tests/reference/kv_ref.py (vectorised NumPy, the way a researcher writes
   the papers' formulas), and torch (CPU) for the groupwise formula when torch
   is installed.
3. Decode attention (batch 1, 32 heads, head dim 128, one query token) over a
   32k-token cache: ccomp over 4-bit and 2-bit caches (and the other formats)
   against NumPy float32 attention over the dense cache (target: faster), and
   torch's scaled_dot_product_attention over the dense cache when torch is
   installed.

    python bench/kv_bench.py [--quick]

Writes bench/results/kv.md (date, machine, versions).
"""
import argparse
import concurrent.futures
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import _common  # noqa: E402
from _common import best  # noqa: E402
import ccomp  # noqa: E402
import ccomp.kv as kv  # noqa: E402
from reference import kv_ref  # noqa: E402

try:
    import torch
except ImportError:  # optional peer
    torch = None
try:
    import gguf
    from gguf.constants import GGMLQuantizationType as QT
except ImportError:  # optional peer
    gguf = None


def memcpy_rate(x, reps):
    """Bytes of x copied per second: one NumPy copy, and two threads copying halves."""
    dst = np.empty_like(x)
    one = x.nbytes / best(lambda: np.copyto(dst, x), reps)
    half = x.shape[0] // 2
    pool = concurrent.futures.ThreadPoolExecutor(2)

    def two():
        a = pool.submit(np.copyto, dst[:half], x[:half])
        b = pool.submit(np.copyto, dst[half:], x[half:])
        a.result()
        b.result()

    two_rate = x.nbytes / best(two, reps)
    pool.shutdown()
    return one, two_rate


METHODS = [
    ("groupwise 4-bit G=32, per token (values)", "groupwise", dict(bits=4, group=32, axis="token")),
    ("groupwise 4-bit G=128, per channel (keys)", "groupwise", dict(bits=4, group=128, axis="channel")),
    ("groupwise 2-bit G=32, per channel (keys)", "groupwise", dict(bits=2, group=32, axis="channel")),
    ("groupwise 2-bit G=32, per token (values)", "groupwise", dict(bits=2, group=32, axis="token")),
    ("groupwise 3-bit G=64, per token", "groupwise", dict(bits=3, group=64, axis="token")),
    ("groupwise 8-bit G=128, per token", "groupwise", dict(bits=8, group=128, axis="token")),
    ("q8_0", "q8_0", {}),
    ("q4_0", "q4_0", {}),
    ("turbo 3-bit", "turbo", dict(bits=3)),
    ("turbo 3-bit + QJL", "turbo", dict(bits=3, qjl=True)),
    ("bitmap_sparse 70%", "bitmap_sparse", dict(sparsity=0.7)),
    ("GEAR 2-bit, 2% outliers, rank 4", "gear", dict(bits=2, group=32, axis="token", outliers=0.02, rank=4)),
]


def torch_groupwise(xt, bits, group):
    """The groupwise per-token formula in torch (what KIVI's and GEAR's reference code does), with
    bit packing of the codes into bytes; fp16 scale/zero."""
    levels = 2 ** bits - 1
    g = xt.reshape(xt.shape[0], xt.shape[1], -1, group)
    mn = g.amin(-1, keepdim=True).half().float()
    mx = g.amax(-1, keepdim=True)
    scale = ((mx - mn) / levels).half().float()
    codes = torch.clamp(torch.floor((g - mn) / scale.clamp_min(1e-30) + 0.5), 0, levels).to(torch.uint8)
    codes = codes.reshape(xt.shape[0], xt.shape[1], -1, 8 // bits, 1)
    packed = (codes.squeeze(-1) << torch.arange(0, 8, bits, dtype=torch.uint8)).sum(-1, dtype=torch.uint8)
    return packed, scale, mn


def throughput_rows(x, memcpy, reps, small):
    rows = []
    for label, method, p in METHODS:
        q = kv.quantize(x, method, threads=2, **p)
        tq = best(lambda: kv.quantize(x, method, threads=2, **p), reps)
        out = np.empty_like(x)  # into a preallocated array, as the memcpy writes into one
        td = best(lambda: q.dequantize(threads=2, out=out.reshape(q.shape)), reps)
        row = {"label": label, "bits": q.bits_per_element, "q": x.nbytes / tq, "d": x.nbytes / td, "peers": []}
        # NumPy specification (single-threaded NumPy) on a slice, rate per input byte
        xs = x[:small]
        tr = best(lambda: kv_ref.quantize(xs, method, **p), 1)
        row["peers"].append(("NumPy (tests/reference)", xs.nbytes / tr))
        if gguf is not None and method in ("q8_0", "q4_0"):
            flat = x.reshape(-1, x.shape[-1])
            qt = QT.Q8_0 if method == "q8_0" else QT.Q4_0
            tg = best(lambda: gguf.quants.quantize(flat, qt), 1)
            row["peers"].append((f"gguf {_common.package_version('gguf')} (llama.cpp)", x.nbytes / tg))
        if torch is not None and method == "groupwise" and p["axis"] == "token" and p["bits"] in (2, 4, 8):
            torch.set_num_threads(2)
            xt = torch.from_numpy(x)
            tt = best(lambda: torch_groupwise(xt, p["bits"], p["group"]), reps)
            row["peers"].append((f"torch {torch.__version__} (CPU, 2 threads)", x.nbytes / tt))
        rows.append(row)
        print(f"  {label:45s} {q.bits_per_element:6.3f} b/e  quantize {row['q'] / 1e9:6.2f} GB/s "
              f"({100 * row['q'] / memcpy:5.1f}% of memcpy)  dequantize {row['d'] / 1e9:6.2f} GB/s "
              f"({100 * row['d'] / memcpy:5.1f}%)  " +
              "  ".join(f"{name}: {row['q'] / r:.1f}x" for name, r in row["peers"]), flush=True)
    return rows


def numpy_attention(q, K, V):
    s = np.matmul(q, K.transpose(0, 2, 1)) * np.float32(K.shape[-1] ** -0.5)
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.matmul(p, V)


ATTENTION = [
    ("groupwise 4-bit (K per channel, V per token, G=128)", dict(method="groupwise", bits=4, group=128),
     "channel", "token"),
    ("groupwise 4-bit (KIVI layout, G=32)", dict(method="groupwise", bits=4, group=32), "channel", "token"),
    ("groupwise 2-bit (KIVI layout, G=32)", dict(method="groupwise", bits=2, group=32), "channel", "token"),
    ("groupwise 2-bit (G=128)", dict(method="groupwise", bits=2, group=128), "channel", "token"),
    ("q4_0", dict(method="q4_0"), None, None),
    ("q8_0", dict(method="q8_0"), None, None),
    ("turbo 3-bit", dict(method="turbo", bits=3), None, None),
    ("bitmap_sparse 70%", dict(method="bitmap_sparse", sparsity=0.7), None, None),
]


def attention_rows(H, T, D, reps):
    rng = np.random.default_rng(0)
    K = rng.normal(size=(H, T, D)).astype(np.float32)
    V = rng.normal(size=(H, T, D)).astype(np.float32)
    q = rng.normal(size=(H, 1, D)).astype(np.float32)
    ref = numpy_attention(q, K, V)
    t_np = best(lambda: numpy_attention(q, K, V), reps)
    rows = [("NumPy float32, dense cache", 32.0, t_np, None)]
    print(f"  NumPy dense fp32: {t_np * 1e3:.1f} ms", flush=True)
    if torch is not None:
        torch.set_num_threads(2)
        qt, Kt, Vt = (torch.from_numpy(a)[None] for a in (q, K, V))
        t_t = best(lambda: torch.nn.functional.scaled_dot_product_attention(qt, Kt, Vt), reps)
        rows.append((f"torch {torch.__version__} SDPA float32, dense cache", 32.0, t_t, None))
        Kh, Vh, qh = Kt.half(), Vt.half(), qt.half()
        t_h = best(lambda: torch.nn.functional.scaled_dot_product_attention(qh, Kh, Vh), reps)
        rows.append((f"torch {torch.__version__} SDPA float16, dense cache", 16.0, t_h, None))
        print(f"  torch SDPA fp32 {t_t * 1e3:.1f} ms, fp16 {t_h * 1e3:.1f} ms", flush=True)
    t_dense = best(lambda: kv.attention(q, K, V, threads=2), reps)
    rows.append(("ccomp, dense float32 cache", 32.0, t_dense,
                 float(np.abs(kv.attention(q, K, V) - ref).max())))
    for label, p, kax, vax in ATTENTION:
        p = dict(p)
        method = p.pop("method")
        kq = kv.quantize(K, method, **(dict(p, axis=kax) if kax else p))
        vq = kv.quantize(V, method, **(dict(p, axis=vax) if vax else p))
        t = best(lambda: kv.attention(q, kq, vq, threads=2), reps)
        out = kv.attention(q, kq, vq, threads=2)
        err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        bits = (kq.nbytes + vq.nbytes) * 8 / (2 * K.size)
        rows.append((f"ccomp, {label}", bits, t, err))
        print(f"  {label:55s} {bits:6.3f} b/e {t * 1e3:7.1f} ms  {t_np / t:5.2f}x NumPy  (output rel. err {err:.3g})",
              flush=True)
    # KIVI streaming cache: 128 recent tokens in full precision
    c = kv.KIVICache(bits=2, group=32, residual=128, threads=2)
    c.append(K, V)
    t = best(lambda: kv.attention(q, c.k_cache, c.v_cache, threads=2), reps)
    rows.append(("ccomp, KIVICache 2-bit G=32 R=128 (streaming)", c.bits_per_element, t,
                 float(np.linalg.norm(kv.attention(q, c.k_cache, c.v_cache) - ref) / np.linalg.norm(ref))))
    print(f"  KIVICache 2-bit: {t * 1e3:.1f} ms ({t_np / t:.2f}x NumPy)", flush=True)
    return rows, t_np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller tensors, fewer repetitions")
    ap.add_argument("--out", default=str(HERE / "results" / "kv.md"))
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    S, T, D = (8, 2048, 128) if args.quick else (32, 8192, 128)
    H, TA = (8, 4096) if args.quick else (32, 32768)
    started = time.time()
    load0 = os.getloadavg()
    x = np.random.default_rng(1).normal(size=(S, T, D)).astype(np.float32)
    one, two = memcpy_rate(x, reps)
    memcpy = max(one, two)
    print(f"memcpy of {x.nbytes / 2**20:.0f} MiB: 1 thread {one / 1e9:.2f} GB/s, 2 threads {two / 1e9:.2f} GB/s")
    rows = throughput_rows(x, memcpy, reps, small=max(1, S // 16))
    print(f"decode attention: {H} heads x {TA} tokens x head dim {D}, one query token")
    att, t_np = attention_rows(H, TA, D, reps)
    load1 = os.getloadavg()

    m = _common.machine_info()
    lines = ["# ccomp.kv speed: quantization throughput and decode attention", "",
             f"Generated by `bench/kv_bench.py{' --quick' if args.quick else ''}` on "
             f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC ({time.time() - started:.0f} s in all).", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores usable; {m['platform']}; Python {m['python']}",
             f"- Versions: ccomp {ccomp.__version__}, NumPy {np.__version__}, gguf {_common.package_version('gguf')}, "
             f"torch {torch.__version__ if torch is not None else 'not installed'}; CPU features "
             f"{', '.join(ccomp.build_info()['cpu_features'])}",
             f"- Load average (1 min) at start {load0[0]:.2f}, at end {load1[0]:.2f}. Times are the best of "
             f"{reps} runs after a warm-up.", "",
             "## Quantize / dequantize throughput (2 threads)", "",
             f"Tensor: {S} slices x {T} tokens x head dim {D}, float32 ({x.nbytes / 2**20:.0f} MiB). Throughput is "
             f"float32 input bytes per second; memcpy is the faster of a NumPy copy on 1 thread "
             f"({one / 1e9:.2f} GB/s) and on 2 threads ({two / 1e9:.2f} GB/s) of the same tensor: "
             f"**{memcpy / 1e9:.2f} GB/s**. Dequantize writes into a preallocated array (`out=`), as the copy "
             f"does. Target: groupwise quantize and dequantize >= 50% of memcpy.", "",
             "| method | bits/element | quantize GB/s | % memcpy | dequantize GB/s | % memcpy | quantize vs peers |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        peers = "; ".join(f"{r['q'] / rate:.1f}x {name}" for name, rate in r["peers"])
        lines.append(f"| {r['label']} | {r['bits']:.3f} | {r['q'] / 1e9:.2f} | {100 * r['q'] / memcpy:.0f}% | "
                     f"{r['d'] / 1e9:.2f} | {100 * r['d'] / memcpy:.0f}% | {peers} |")
    lines += ["", "## Decode attention over a 32k-token cache" if not args.quick else "## Decode attention", "",
              f"Batch 1, {H} heads, {TA} tokens, head dim {D}, one query token, 2 threads; random Gaussian K/V. "
              "ccomp computes softmax(q K^T / sqrt(d)) V from the compressed arrays (no dense K or V is built). "
              "Output error: ||O' - O|| / ||O|| against NumPy over the original dense cache. "
              "Target: 4-bit and 2-bit caches faster than NumPy float32 over the dense cache.", "",
              "| implementation | bits/element | ms | vs NumPy dense | output rel. err |", "|---|---:|---:|---:|---:|"]
    for label, bits, t, err in att:
        lines.append(f"| {label} | {bits:.3f} | {t * 1e3:.1f} | {t_np / t:.2f}x | "
                     f"{'' if err is None else f'{err:.2e}'} |")
    lines += ["", "Peers not run here: the KIVI and GEAR reference code and HF `QuantizedCache` need CUDA or "
              "model-specific torch stacks; their quantization formula is the torch row above (KIVI/GEAR's "
              "groupwise step). GPU figures come from `kernels/gpu_check.py`.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

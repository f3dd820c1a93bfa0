#!/usr/bin/env python3
"""sketch_model on SmolLM2-135M: perplexity, fit time, save/reload and forward time against the dense model.

Model: SmolLM2-135M-Instruct, float32 on the CPU (``ccomp.models.smollm2()``: the GGUF's weights
dequantized). Every decoder Linear layer (30 layers x q, k, v, o, gate, up, down = 210 layers) is
replaced by a ``SketchedLinear`` (``ccomp.sketch.sketch_model``); lm_head and the embeddings (tied)
stay dense. 4-bit codes, float16 tables, rtn and LeanQuant, with one group per row
(``group_size=None``, LeanQuant's and SketchTune's usual layout) and with groups of 64 columns.

- Calibration (LeanQuant's Hessians; rtn does not use it): 8 sequences of 256 tokens cut from
  lcet10.txt (--quick: 4 x 128), a different text from the one evaluated.
- Perplexity: one forward pass over the first 2,048 tokens of alice29.txt (--quick: 256; ``--tokens``),
  the mean next-token cross-entropy exponentiated; the same for the dense model.
- Fit time: ``sketch_model`` end to end (calibration passes, Hessians, fitting 210 layers, replacing).
- Save and reload: ``save_sketched`` then ``load_sketched``; the max |difference| of the logits of the
  reloaded and the saved model on 256 tokens (it must be 0).
- Forward time, sketched against dense, best of a few runs: a 512-token prefill (the tiled GEMM of
  ``ccomp.sketch.matmul``) and a one-token decode step after a 64-token prompt (batch 1: the LUT GEMV).

``section(args) -> str`` gives the markdown (the driver bench/model_loop.py calls it; it reads
``args.quick`` and, if set, ``args.tokens``); run alone it prints the section:

    python bench/model_loop_sketch.py [--quick] [--tokens N]
"""
import argparse
import copy
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

EVAL_TEXT = "alice29.txt"
CALIB_TEXT = "lcet10.txt"
EXCLUDE_NOTE = "lm_head (tied to the embeddings) and the embeddings stay dense"


def _tokens(tokenizer, name, n, offset=0):
    from ccomp import datasets

    text = datasets.corpus_text(name)
    ids = tokenizer(text[offset:offset + 12 * n], return_tensors="pt").input_ids
    if ids.shape[1] < n:
        raise ValueError(f"{name} gives only {ids.shape[1]} tokens, {n} asked for")
    return ids[:, :n]


def perplexity(model, ids):
    import torch

    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="mean")
    return math.exp(float(nll))


def forward_times(models, ids, quick):
    """{name: (prefill seconds, one-token decode seconds after a 64-token prompt)}, best of a few runs, the
    models taking turns (so that a change of load on the machine reaches all of them alike)."""
    import torch

    prefill = ids[:, :128 if quick else 512]
    prompt, nxt = ids[:, :64], ids[:, 64:65]
    best = {name: [float("inf"), float("inf")] for name in models}
    with torch.no_grad():
        caches = {}
        for name, model in models.items():
            model(prefill[:, :16])  # warm-up
            caches[name] = model(prompt, use_cache=True).cache
        for _ in range(3 if quick else 5):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(prefill)
                best[name][0] = min(best[name][0], time.perf_counter() - t0)
                for _ in range(3):
                    c = copy.deepcopy(caches[name])
                    t0 = time.perf_counter()
                    model(nxt, cache=c, use_cache=True)
                    best[name][1] = min(best[name][1], time.perf_counter() - t0)
    return {name: tuple(v) for name, v in best.items()}


def sketched_bits(model):
    from ccomp import sketch

    layers = sketch.sketched_layers(model)
    nbytes = sum(m.tables.numel() * m.tables.element_size() + m.codes.numel() for m in layers.values())
    weights = sum(m.in_features * m.out_features for m in layers.values())
    return len(layers), 8.0 * nbytes / weights, nbytes, 4 * weights


def section(args):
    import torch

    from ccomp import models, sketch

    torch.manual_seed(0)
    quick = bool(getattr(args, "quick", False))
    n_tokens = getattr(args, "tokens", None) or (256 if quick else 2048)
    dense, tokenizer = models.smollm2()
    calib = torch.cat([_tokens(tokenizer, CALIB_TEXT, 128 if quick else 256, offset=20000 * i)
                       for i in range(4 if quick else 8)])
    ids = _tokens(tokenizer, EVAL_TEXT, max(n_tokens, 512 + 1))
    eval_ids = ids[:, :n_tokens]
    configs = [("rtn", None), ("leanquant", None)] if quick else \
        [("rtn", None), ("leanquant", None), ("rtn", 64), ("leanquant", 64)]

    load0 = os.getloadavg()[0]
    ppl_dense = perplexity(dense, eval_ids)
    print(f"dense: perplexity {ppl_dense:.3f}", flush=True)
    rows = []
    tmp = tempfile.mkdtemp(prefix="ccomp-sketch-bench-")
    try:
        for method, group_size in configs:
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            model, report = sketch.sketch_model(model, bits=4, group_size=group_size, method=method,
                                                calibration=calib, dtype="float16", return_report=True)
            fit_s = time.perf_counter() - t0
            n_layers, bpw, nbytes, dense_bytes = sketched_bits(model)
            ppl = perplexity(model, eval_ids)
            path = sketch.save_sketched(model, os.path.join(tmp, f"{method}-{group_size}"))
            again = sketch.load_sketched(path)
            with torch.no_grad():
                diff = float((again(ids[:, :256]).logits - model(ids[:, :256]).logits).abs().max())
            del again
            shutil.rmtree(path, ignore_errors=True)
            times = forward_times({"dense": dense, "sketched": model}, ids, quick)
            (dense_prefill, dense_decode), (prefill, decode) = times["dense"], times["sketched"]
            out_err = [r["output_error"] for r in report.values()]
            rows.append(dict(method=method, group_size=group_size, layers=n_layers, bpw=bpw, mib=nbytes / 2**20,
                             dense_mib=dense_bytes / 2**20, fit=fit_s, ppl=ppl, diff=diff, prefill=prefill,
                             decode=decode, dense_prefill=dense_prefill, dense_decode=dense_decode,
                             err_mean=sum(out_err) / len(out_err), err_max=max(out_err)))
            r = rows[-1]
            print(f"{method} g={group_size}: perplexity {ppl:.3f}, fit {fit_s:.1f} s, reload max|diff| {diff:g}, "
                  f"prefill {prefill:.3f} s (dense {dense_prefill:.3f}), decode {decode * 1e3:.1f} ms (dense "
                  f"{dense_decode * 1e3:.1f})", flush=True)
            del model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    g = {None: "row", 64: "64"}
    lines = ["## sketch_model on SmolLM2", "",
             f"SmolLM2-135M-Instruct (float32, dequantized GGUF) with all {rows[0]['layers']} decoder Linear layers "
             f"sketched by `ccomp.sketch.sketch_model` at 4 bits, float16 tables ({EXCLUDE_NOTE}). Calibration: "
             f"{calib.shape[0]} x {calib.shape[1]} tokens of {CALIB_TEXT}. Perplexity: one forward pass over the "
             f"first {n_tokens} tokens of {EVAL_TEXT}. Group `row`: one group (table) per weight row. Output error: "
             "`||X (W - W_hat)^T|| / ||X W^T||` of each layer on its calibration inputs (mean / max over the "
             "layers). Prefill: a forward pass over " + ("128" if quick else "512") + " tokens; decode: one token "
             "after a 64-token prompt (KV-cached); best of a few runs, the dense model timed in turn with each "
             f"sketched one (its figure in the dense row: the best over all turns); torch on {torch.get_num_threads()} "
             f"threads; load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.", "",
             "| model | group | bits/weight | sketched layers MiB | perplexity | vs dense | fit s | "
             "output error mean / max | reload max abs diff | prefill s | decode ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| dense float32 | - | 32 | {rows[0]['dense_mib']:.1f} | {ppl_dense:.3f} | 1.000 | - | - | - | "
             f"{min(r['dense_prefill'] for r in rows):.3f} | {min(r['dense_decode'] for r in rows) * 1e3:.1f} |"]
    for r in rows:
        lines.append(f"| {r['method']} | {g[r['group_size']]} | {r['bpw']:.3f} | {r['mib']:.1f} | {r['ppl']:.3f} | "
                     f"{r['ppl'] / ppl_dense:.3f} | {r['fit']:.1f} | {r['err_mean']:.4f} / {r['err_max']:.4f} | "
                     f"{r['diff']:g} | {r['prefill']:.3f} ({r['dense_prefill'] / r['prefill']:.2f}x dense) | "
                     f"{r['decode'] * 1e3:.1f} ({r['dense_decode'] / r['decode']:.2f}x dense) |")
    lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 x 128 calibration tokens, 256 evaluated, two configs")
    ap.add_argument("--tokens", type=int, default=None, help="tokens evaluated (default 2048, --quick 256)")
    args = ap.parse_args()
    if args.tokens is not None and args.tokens < 2:
        ap.error("--tokens must be at least 2")
    print(section(args))


if __name__ == "__main__":
    main()

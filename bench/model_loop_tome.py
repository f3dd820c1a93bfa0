"""ToMe inside a timm ViT on the CPU: throughput of the unpatched model against ccomp's ToMe patch (r = 8, 16).

``section(args) -> str`` gives the markdown section that bench/model_loop.py puts in its report; run alone,
``python bench/model_loop_tome.py [--model vit_small_patch16_224] [--batch 16] [--repeats 3]`` prints it.

Random weights (throughput does not depend on them), inference mode, float32, the machine's torch threads.
The peer, the official ToMe (facebookresearch/ToMe, ``tome.patch.timm``), is not on PyPI: the PyPI
package named ``tome`` is an unrelated markup language, so it is not measured here.
"""
import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))


def _time_interleaved(model, x, configs, repeats):
    """Best seconds per batch of each config (None: unpatched, else r), measured in turn, round after round, so
    that a change in the machine's load touches every config alike."""
    import torch

    from ccomp import tokens

    best = {c: float("inf") for c in configs}
    with torch.inference_mode():
        for rnd in range(repeats + 1):  # round 0 warms up
            for c in configs:
                patch = tokens.patch_timm(model, c) if c is not None else None
                try:
                    t0 = time.perf_counter()
                    model(x)
                    dt = time.perf_counter() - t0
                finally:
                    if patch is not None:
                        patch.unpatch()
                if rnd:
                    best[c] = min(best[c], dt)
    return best


def _last_tokens(model, x):
    import torch

    with torch.inference_mode():
        return int(model.forward_features(x[:1]).shape[1])


def section(args=None):
    """The markdown section: images/s and tokens at the last layer, unpatched and ToMe r = 8 / 16."""
    import timm
    import torch

    from ccomp import tokens

    name = getattr(args, "tome_model", None) or getattr(args, "model", None) or "vit_small_patch16_224"
    batch = getattr(args, "batch", None) or 16
    repeats = getattr(args, "repeats", None) or 4
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(batch, 3, 224, 224)
    configs = (None, 8, 16)
    best = _time_interleaved(model, x, configs, repeats)
    base = batch / best[None]
    rows = [("unpatched", "-", _last_tokens(model, x), base)]
    for r in configs[1:]:
        with tokens.patch_timm(model, r):
            rows.append((f"ccomp ToMe r={r}", "yes", _last_tokens(model, x), batch / best[r]))
    cpu = platform.processor() or platform.machine()
    out = [f"### ToMe in timm {name} (random weights, batch {batch}, float32, CPU: {cpu}, "
           f"{torch.get_num_threads()} torch threads)", "",
           "| model | prop. attention | tokens at the last layer | images/s | speed-up |", "|---|---|---|---|---|"]
    for label, prop, n, ips in rows:
        out.append(f"| {label} | {prop} | {n} | {ips:.2f} | {ips / base:.2f}x |")
    out += ["", f"Best of {repeats} timed batches per row after one warm-up round, the rows measured in turn. "
            "Peer: the official ToMe (`tome.patch.timm`) "
            "is not on PyPI (`pip index versions tome` finds an unrelated markup-language package), so it is not "
            "run here."]
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=4)
    print(section(p.parse_args(argv)))


if __name__ == "__main__":
    main()

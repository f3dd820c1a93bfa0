"""Command line: ``ccomp zipfit ...``, ``ccomp compress`` / ``ccomp decompress``, ``ccomp info``, ``ccomp demo``."""
import argparse
import json
import os
import sys

import numpy as np

__all__ = ["main"]


def _add_zipfit(sub):
    p = sub.add_parser(
        "zipfit",
        help="select the source records best aligned with a target set (ZIP-FIT)",
        description="Score every record of a source JSONL file against a target JSONL file by "
                    "compression distance and write the top-k records, best first, each with its score.")
    p.add_argument("--target", required=True, help="target set, JSONL")
    p.add_argument("--source", required=True, help="candidate records, JSONL (read in bounded-memory chunks)")
    p.add_argument("--key", default="text", help="field holding the source text (default: text)")
    p.add_argument("--target-key", default=None, help="field holding the target text (default: --key)")
    p.add_argument("--top-k", type=int, required=True, help="number of records to select")
    p.add_argument("--out", required=True, help="selected records, JSONL, best first")
    p.add_argument("--scores", default=None, help="also save every source's score as a .npy float64 array")
    p.add_argument("--score-field", default="score", help="field added to each selected record (default: score)")
    p.add_argument("--compressor", default="gzip", choices=["gzip", "lz4", "zstd"])
    p.add_argument("--level", type=int, default=None, help="compression level (default: the library's default)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--chunk-size", type=int, default=2048, help="sources scored per batch (default: 2048)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_run_zipfit)


def _run_zipfit(args):
    from . import zipfit
    from .io import iter_jsonl, iter_jsonl_texts

    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {args.top_k}")
    targets = list(iter_jsonl_texts(args.target, args.target_key or args.key))
    scores = zipfit.score_jsonl(args.source, targets, key=args.key, compressor=args.compressor, level=args.level,
                                threads=args.threads, progress=not args.no_progress, chunk_size=args.chunk_size)
    if args.scores:
        np.save(args.scores, scores)
    chosen = zipfit.top_k_indices(scores, args.top_k)
    rank = {int(i): r for r, i in enumerate(chosen)}
    selected = [None] * len(chosen)
    # Second pass over the source file: keep only the chosen records, with all their fields.
    index = 0
    for _lineno, record in iter_jsonl(args.source):
        r = rank.get(index)
        if r is not None:
            record[args.score_field] = float(scores[index])
            selected[r] = record
        index += 1
    if index != len(scores):
        raise ValueError(f"{args.source} changed while it was being read ({len(scores)} then {index} records)")
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for record in selected:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"scored {len(scores)} records against {len(targets)} targets; wrote the top {len(selected)} "
          f"to {args.out}", file=sys.stderr)
    return 0


def _run_info(args):
    from . import build_info

    for key, value in build_info().items():
        print(f"{key}: {value}")
    return 0


def _run_demo(args):
    from .demo import run_demo

    return run_demo(top=args.top)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ccomp", description="ccomp: compression toolkit for ML research")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_zipfit(sub)
    from ._cli_compress import add_parsers

    add_parsers(sub)
    sub.add_parser("info", help="print versions, linked libraries, CPU features and CUDA status").set_defaults(
        func=_run_info)
    demo = sub.add_parser("demo", help="run ZIP-FIT and the built-in compressor on the bundled real data")
    demo.add_argument("--top", type=int, default=10)
    demo.set_defaults(func=_run_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"ccomp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

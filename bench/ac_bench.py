"""ccomp.ac benchmark: writes bench/results/ac.md.

Sections (each a function returning markdown, run in the order of SECTIONS):

1. ``bench_vocab`` (bench/ac_vocab.py): large-vocabulary coding, V = 49,152 and
   T = 4,096 float32 rows, end to end against constriction (target >= 5x both
   ways, coded sizes within 0.1%).
2. ``bench_texts``: the built-in context-mixing compressor (``ccomp.ac.compress``,
   no LLM) on every file of ccomp's bundled corpus (ccomp.datasets) against gzip -9, bzip2 -9, xz -9,
   zstd -19 and PPMd (var. I, order 6, 16 MiB; PyPI ``pyppmd``): bits per
   byte, ccomp's compression and decompression speed (one thread), every round
   trip verified, and the targets -- smaller than xz -9 on every Canterbury
   text, within 3% of PPMd (or better) on each, >= 1 MB/s compressing.

Usage: python bench/ac_bench.py [--quick] [--repeat N] [--level L] [--out FILE]
"""
import argparse
import bz2
import datetime
import gzip
import lzma
import os
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402
from ac_vocab import bench_vocab  # noqa: E402

TEXT_FILES = ["alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt"]
XZ_MARGIN = 1.0     # ccomp must be smaller than xz -9 on every text file
PPMD_MARGIN = 1.03  # ... and at most 3% larger than PPMd order 6
MIN_SPEED = 1.0     # MB/s compressing, one thread
PPMD_ORDER = 6
PPMD_MEM = 16 << 20


def corpus_files():
    """(name, bytes) for the Canterbury texts first, then the other corpus files (licence files skipped)."""
    from ccomp import datasets

    names = datasets.corpus_names()
    names = [n for n in TEXT_FILES if n in names] + [n for n in names if n not in TEXT_FILES]
    return [(n, datasets.corpus(n)) for n in names]


def peers():
    """(label, compress, decompress) of the peer compressors available here."""
    out = [
        ("gzip -9", lambda d: gzip.compress(d, 9, mtime=0), gzip.decompress),
        ("bzip2 -9", lambda d: bz2.compress(d, 9), bz2.decompress),
        ("xz -9", lambda d: lzma.compress(d, preset=9), lzma.decompress),
    ]
    try:
        import zstandard

        out.append(("zstd -19", lambda d: zstandard.ZstdCompressor(level=19).compress(d),
                    lambda c: zstandard.ZstdDecompressor().decompress(c)))
    except ImportError:
        pass
    try:
        import pyppmd

        out.append((f"PPMd o{PPMD_ORDER}",
                    lambda d: pyppmd.compress(d, max_order=PPMD_ORDER, mem_size=PPMD_MEM),
                    lambda c: pyppmd.decompress(c, max_order=PPMD_ORDER, mem_size=PPMD_MEM)))
    except ImportError:
        pass
    return out


def peer_versions():
    import ccomp

    v = {"ccomp": ccomp.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION}
    try:
        import zstandard

        v["zstandard"] = f"{zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})"
    except ImportError:
        v["zstandard"] = "not installed"
    v["pyppmd"] = _common.package_version("pyppmd")
    v["constriction"] = _common.package_version("constriction")
    v["bzip2, xz"] = f"Python {sys.version.split()[0]}'s bz2 and lzma modules"
    return v


def best_time(fn, repeat):
    out, best = None, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def bench_texts(quick=False, repeat=3, level=6):
    """Section 2: the built-in CM compressor against gzip/bzip2/xz/zstd/PPMd on the bundled corpus; markdown."""
    import ccomp.ac as ac

    files = corpus_files()
    if quick:
        files = [(n, d[:60000]) for n, d in files if n in TEXT_FILES[:2] or n == "html"]
        repeat = 1
    peer_list = peers()
    labels = [p[0] for p in peer_list]
    rows = []
    for name, data in files:
        blob, t_c = best_time(lambda: ac.compress(data, level=level), repeat)
        back, t_d = best_time(lambda: ac.decompress(blob), repeat)
        if back != data:
            raise AssertionError(f"ccomp round trip failed on {name}")
        sizes = {}
        for label, comp, decomp in peer_list:
            c = comp(data)
            if decomp(c) != data:
                raise AssertionError(f"{label} round trip failed on {name}")
            sizes[label] = len(c)
        rows.append({"name": name, "n": len(data), "ccomp": len(blob), "peers": sizes, "t_c": t_c, "t_d": t_d,
                     "text": name in TEXT_FILES})
        bpb = lambda s: 8.0 * s / len(data)  # noqa: E731
        print(f"{name:16s} {len(data):8d}  ccomp {bpb(len(blob)):.3f}  " +
              "  ".join(f"{k} {bpb(v):.3f}" for k, v in sizes.items()) +
              f"  | {len(data) / 1e6 / t_c:.2f} / {len(data) / 1e6 / t_d:.2f} MB/s", flush=True)

    def bpb(size, n):
        return 8.0 * size / n

    lines = ["## 2. Built-in context-mixing compressor vs gzip, bzip2, xz, zstd, PPMd", ""]
    lines.append(f"`ccomp.ac.compress(data, level={level})` on each file of the bundled corpus (`ccomp.datasets`)"
                 f"{' (quick: first 60,000 bytes of three files)' if quick else ''}; bits per byte "
                 "(compressed bits / original bytes, lower is better; container overhead included: 24 bytes for "
                 f"ccomp). PPMd is PyPI pyppmd (7-Zip's PPMd var. I), order {PPMD_ORDER}, {PPMD_MEM >> 20} MiB "
                 "(256 MiB gives the same sizes on these files). Speeds: ccomp, one thread, best of "
                 f"{repeat} wall-clock run(s), MB = 10^6 bytes. Every round trip (ccomp and peers) is verified.")
    lines.append("")
    head = ["file", "bytes", "**ccomp**"] + labels + ["ccomp / xz", "ccomp / PPMd", "compress MB/s",
                                                      "decompress MB/s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    ppmd_label = f"PPMd o{PPMD_ORDER}"
    for r in rows:
        n = r["n"]
        cells = [r["name"] + (" (text)" if r["text"] else ""), f"{n:,}", f"**{bpb(r['ccomp'], n):.3f}**"]
        best_peer = min(r["peers"].values()) if r["peers"] else None
        for label in labels:
            s = r["peers"][label]
            cells.append(f"{bpb(s, n):.3f}" + (" (best peer)" if s == best_peer else ""))
        xz = r["peers"].get("xz -9")
        pp = r["peers"].get(ppmd_label)
        cells.append(f"{r['ccomp'] / xz:.3f}" if xz else "-")
        cells.append(f"{r['ccomp'] / pp:.3f}" if pp else "-")
        cells.append(f"{n / 1e6 / r['t_c']:.2f}")
        cells.append(f"{n / 1e6 / r['t_d']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    texts = [r for r in rows if r["text"]]
    if texts:
        n_text = sum(r["n"] for r in texts)
        speed_c = n_text / 1e6 / sum(r["t_c"] for r in texts)
        speed_d = n_text / 1e6 / sum(r["t_d"] for r in texts)
        slowest = min(r["n"] / 1e6 / r["t_c"] for r in texts)
        xz_ok = all("xz -9" in r["peers"] and r["ccomp"] < XZ_MARGIN * r["peers"]["xz -9"] for r in texts)
        have_ppmd = all(ppmd_label in r["peers"] for r in texts)
        ppmd_ok = have_ppmd and all(r["ccomp"] <= PPMD_MARGIN * r["peers"][ppmd_label] for r in texts)
        mark = lambda ok: "met" if ok else "**NOT met**"  # noqa: E731
        lines.append("Targets on the Canterbury texts (" + ", ".join(r["name"] for r in texts) + "):")
        lines.append("")
        worst_xz = max(r["ccomp"] / r["peers"]["xz -9"] for r in texts if "xz -9" in r["peers"])
        lines.append(f"- smaller than xz -9 on every text file: {mark(xz_ok)} (largest ccomp / xz ratio "
                     f"{worst_xz:.3f})")
        if have_ppmd:
            worst_pp = max(r["ccomp"] / r["peers"][ppmd_label] for r in texts)
            lines.append(f"- within 3% of PPMd order {PPMD_ORDER} or better on each: {mark(ppmd_ok)} (largest "
                         f"ccomp / PPMd ratio {worst_pp:.3f}; total "
                         f"{sum(r['ccomp'] for r in texts) / sum(r['peers'][ppmd_label] for r in texts):.3f})")
        else:
            lines.append("- within 3% of PPMd: not measured (pyppmd is not installed)")
        lines.append(f"- compression speed >= {MIN_SPEED:g} MB/s (one thread): {mark(slowest >= MIN_SPEED)} "
                     f"(slowest text file {slowest:.2f} MB/s; all texts together {speed_c:.2f} MB/s compressing, "
                     f"{speed_d:.2f} MB/s decompressing)")
        lines.append("")
    return "\n".join(lines)


# Sections of bench/results/ac.md, in order; each takes quick= and returns markdown.
SECTIONS = [bench_vocab, bench_texts]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, one run each (a smoke test)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement, best kept (default 3)")
    ap.add_argument("--level", type=int, default=6, help="ccomp.ac.compress level (default 6)")
    ap.add_argument("--out", default=str(HERE / "results" / "ac.md"), help="markdown results file")
    args = ap.parse_args(argv)

    now = datetime.datetime.now(datetime.timezone.utc)
    info = _common.machine_info()
    versions = peer_versions()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    sections = []
    for fn in SECTIONS:
        kwargs = {"quick": args.quick}
        if fn is bench_texts:
            kwargs.update(repeat=args.repeat, level=args.level)
        sections.append(fn(**kwargs))
    load_after = os.getloadavg()
    lines = ["# ccomp.ac benchmark", ""]
    lines.append(f"Generated by `bench/ac_bench.py{' --quick' if args.quick else ''}` on {now:%Y-%m-%d %H:%M} UTC "
                 f"({time.perf_counter() - t0:.0f} s in all).")
    lines.append("")
    lines.append(f"- Machine: {info['cpu']}, {info['cores']} cores usable (os.cpu_count() = {info['os_cpu_count']}); "
                 f"{info['platform']}")
    lines.append("- Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"- Load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load_before)}, at end "
                 f"{'/'.join(f'{x:.2f}' for x in load_after)}: the machine may be shared, so timings can be noisy.")
    lines.append("")
    text = "\n".join(lines) + "\n" + "\n\n".join(sections) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

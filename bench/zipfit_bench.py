#!/usr/bin/env python
"""ZIP-FIT benchmark: ccomp.zipfit against the reference ``zip-fit`` package and DSIR.

Runs every implementation on the same real data in one run and prints a table of
pairs/s, peak memory and ratios (each ratio against the reference measured in the
same run), then writes the table to ``bench/results/zipfit.md``.

Data
    targets: the 164 HumanEval prompts (``--targets prompt+solution`` appends the
    canonical solutions); sources: distinct documents cut with a fixed seed from the
    corpus texts bundled with ccomp (ccomp.datasets, 30%) and this machine's Python standard-library
    sources (70%): "short" 200..2000 characters, "long" 8..32 KiB.

Usage
    python bench/zipfit_bench.py                # full run (several minutes)
    python bench/zipfit_bench.py --quick        # small sizes (< 2 minutes)
    python bench/zipfit_bench.py --skip-dsir --out /tmp/zipfit.md

The script never asserts on time: it always exits 0 and reports.
"""
import argparse
import contextlib
import datetime
import gc
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import _common  # noqa: E402

TARGET_GZIP = 5.0       # ccomp / reference pairs/s, gzip level 1, short docs
STRETCH_GZIP = 10.0
TARGET_LZ4 = 3.0        # lz4 short docs
TARGET_MEM = 20.0       # reference / ccomp peak memory

FULL = dict(n_short=4000, n_short_fast=12000, n_long=200, n_engine=1000, n_mem=50000, n_dsir=4000, k_dsir=400)
QUICK = dict(n_short=300, n_short_fast=900, n_long=30, n_engine=200, n_mem=6000, n_dsir=1000, k_dsir=100)


# --------------------------------------------------------------------------- runners


def run_reference(sources, targets, compressor, level):
    """Reference ZIPFIT end to end; returns (seconds, {text: score})."""
    from zip_fit import ZIPFIT

    z = ZIPFIT("sources.jsonl", "targets.jsonl", k=len(sources), compression_algorithm=compressor,
               compress_level=level)
    gc.collect()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress lines
        top = z.rank_sequences_by_alignment(sources, targets)
    dt = time.perf_counter() - t0
    return dt, {text: float(score) for text, score in top}


def run_ccomp(sources, targets, compressor, level, threads, engine="auto"):
    import ccomp

    gc.collect()
    t0 = time.perf_counter()
    scores = ccomp.zipfit.alignment_scores(sources, targets, compressor=compressor, level=level, threads=threads,
                                           engine=engine)
    return time.perf_counter() - t0, scores


def max_diff(sources, scores, ref_map):
    if ref_map is None:
        return None
    if len(ref_map) != len(sources):
        return float("inf")
    return float(max(abs(ref_map[s] - float(v)) for s, v in zip(sources, scores)))


# --------------------------------------------------------------------------- subprocess (memory) runs


def child_main(mode, src_path, opts):
    """Runs in a fresh interpreter; prints one JSON line with wall time and its own rusage."""
    targets = _common.load_humaneval(field=opts["targets"])
    result = {"mode": mode}
    t0 = time.perf_counter()
    if mode == "baseline":  # interpreter + numpy + ccomp + the sources list, no work
        import ccomp  # noqa: F401

        sources = _common.read_jsonl_texts(src_path)
        result["n"] = len(sources)
    elif mode == "reference":
        from zip_fit import ZIPFIT

        sources = _common.read_jsonl_texts(src_path)
        z = ZIPFIT(src_path, "targets.jsonl", k=len(sources), compression_algorithm=opts["compressor"],
                   compress_level=opts["level"])
        with contextlib.redirect_stdout(sys.stderr):
            top = z.rank_sequences_by_alignment(sources, targets)
        result["n"] = len(top)
        result["checksum"] = float(sum(s for _, s in top))
    elif mode in ("ccomp", "ccomp-stream"):
        import ccomp

        if mode == "ccomp":
            sources = _common.read_jsonl_texts(src_path)
            scores = ccomp.zipfit.alignment_scores(sources, targets, compressor=opts["compressor"],
                                                   level=opts["level"], threads=opts["threads"])
        else:
            scores = ccomp.zipfit.score_jsonl(src_path, targets, key="text", compressor=opts["compressor"],
                                              level=opts["level"], threads=opts["threads"])
        result["n"] = len(scores)
        result["checksum"] = float(scores.sum())
        if opts.get("k"):
            result["top"] = ccomp.zipfit.top_k_indices(scores, opts["k"]).tolist()
    elif mode == "dsir":
        from data_selection import HashedNgramDSIR

        work = Path(tempfile.mkdtemp(prefix="dsir_", dir=opts["tmp"]))
        target_path = _common.humaneval_path()
        field = opts["targets"]
        if field == "prompt":
            parse = _parse_prompt
        else:
            parse = _parse_prompt_solution
        with contextlib.redirect_stdout(sys.stderr):
            dsir = HashedNgramDSIR([src_path], [target_path], cache_dir=str(work / "cache"),
                                   target_parse_example_fn=parse, num_proc=opts["threads"], min_example_length=0)
            dsir.fit_importance_estimator(num_tokens_to_fit="all")
            dsir.compute_importance_weights()
            dsir.resample(out_dir=str(work / "out"), num_to_sample=opts["k"], cache_dir=str(work / "rcache"),
                          top_k=True)
        top = []
        for f in sorted((work / "out").glob("*.jsonl")):
            with open(f, encoding="utf-8") as fh:
                top.extend(json.loads(line)["id"] for line in fh if line.strip())
        result["top"] = top
        result["n"] = len(top)
    else:
        raise SystemExit(f"unknown child mode {mode}")
    result["wall_s"] = time.perf_counter() - t0
    # Peak RSS of this process: VmHWM (KiB) of its own address space.  getrusage(RUSAGE_SELF).ru_maxrss
    # is not used for it because Linux carries the spawning parent's high-water mark across fork + exec.
    result["self_maxrss_kib"] = _vm_hwm_kib() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # RUSAGE_CHILDREN (KiB): the largest single waited-for descendant (the reference's pool workers).
    result["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


def _vm_hwm_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _parse_prompt(ex):
    return ex["prompt"]


def _parse_prompt_solution(ex):
    return ex["prompt"] + ex["canonical_solution"]


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants (psutil) every ``interval`` seconds."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_sum = 0
        self.peak_pss = 0
        self.pss = True
        self.peak_worker = 0
        self.peak_procs = 0
        self.stop = threading.Event()
        self.available = True

    def run(self):
        try:
            import psutil
        except ImportError:
            self.available = False
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            total = 0
            total_pss = 0
            worker = 0
            for p in procs:
                try:
                    if self.pss:
                        mi = p.memory_full_info()
                        total_pss += mi.pss
                    else:
                        mi = p.memory_info()
                    rss = mi.rss
                except psutil.AccessDenied:
                    self.pss = False
                    continue
                except psutil.Error:
                    continue
                total += rss
                if p.pid != self.pid:
                    worker = max(worker, rss)
            self.peak_sum = max(self.peak_sum, total)
            self.peak_pss = max(self.peak_pss, total_pss)
            self.peak_worker = max(self.peak_worker, worker)
            self.peak_procs = max(self.peak_procs, len(procs))
            self.stop.wait(self.interval)


def run_child(mode, src_path, opts, timeout=None):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, "--_src", str(src_path),
           "--_opts", json.dumps(opts)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        sampler.stop.set()
        sampler.join()
        return {"mode": mode, "error": f"timed out after {timeout} s"}
    sampler.stop.set()
    sampler.join()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (err or "").strip().splitlines()[-5:]
        return {"mode": mode, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    res = json.loads(lines[-1])
    res["tree_peak_sum_bytes"] = sampler.peak_sum if sampler.available else None
    res["tree_peak_pss_bytes"] = sampler.peak_pss if (sampler.available and sampler.pss) else None
    res["tree_peak_worker_bytes"] = sampler.peak_worker if sampler.available else None
    res["tree_peak_procs"] = sampler.peak_procs
    return res


# --------------------------------------------------------------------------- formatting


def fmt_rate(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def mib(kib=None, b=None):
    if kib is not None:
        return f"{kib / 1024:.0f}"
    if b is not None:
        return f"{b / 2**20:.0f}"
    return "-"


def verdict(ratio, target):
    if ratio is None:
        return "not measured"
    return "met" if ratio >= target else "NOT met"


def mem_ratio_text(ratios):
    head = ratios.get("tree_peak_pss_bytes") or ratios.get("tree_peak_sum_bytes") or ratios["self"]
    parts = []
    if "tree_peak_pss_bytes" in ratios:
        parts.append(f"{ratios['tree_peak_pss_bytes']:.1f}x by process-tree PSS")
    if "tree_peak_sum_bytes" in ratios:
        parts.append(f"{ratios['tree_peak_sum_bytes']:.1f}x by process-tree RSS")
    parts.append(f"{ratios['self']:.1f}x by the main process alone")
    return ", ".join(parts) + f" (target >= {TARGET_MEM:g}x, i.e. <= 1/20: {verdict(head, TARGET_MEM)})"


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (< 2 minutes in all)")
    ap.add_argument("--skip-dsir", action="store_true", help="do not run the DSIR peer")
    ap.add_argument("--out", default=str(HERE / "results" / "zipfit.md"), help="markdown results file")
    ap.add_argument("--targets", choices=["prompt", "prompt+solution"], default="prompt",
                    help="HumanEval text used as target (default: prompt)")
    ap.add_argument("--mem-n", type=int, default=None, help="number of sources in the peak-memory runs")
    ap.add_argument("--threads", type=int, default=2, help="ccomp threads in the throughput rows (default 2)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--repeat", type=int, default=None,
                    help="throughput runs per measurement, best kept (default: 2, 1 with --quick)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_src", help=argparse.SUPPRESS)
    ap.add_argument("--_opts", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        child_main(args._child, args._src, json.loads(args._opts))
        return 0

    import ccomp

    t_start = time.perf_counter()
    sizes = dict(QUICK if args.quick else FULL)
    if args.mem_n:
        sizes["n_mem"] = args.mem_n
    threads = args.threads
    repeat = args.repeat if args.repeat else (1 if args.quick else 2)
    load_before = os.getloadavg()
    targets = _common.load_humaneval(field=args.targets)
    n_t = len(targets)
    now = datetime.datetime.now(datetime.timezone.utc)
    info = _common.machine_info()
    build = ccomp.build_info()
    versions = {name: _common.package_version(name)
                for name in ("zip-fit", "lz4", "zstandard", "data-selection", "numpy", "psutil")}
    versions["ccomp"] = getattr(ccomp, "__version__", build.get("version"))

    print(f"ccomp ZIP-FIT benchmark ({'quick' if args.quick else 'full'}), {now:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}")
    print(f"gzip engine: level 1 -> {ccomp.zipfit.engine('gzip', 1)}, level 6 -> {ccomp.zipfit.engine('gzip', 6)}")

    t0 = time.perf_counter()
    short_all = _common.make_sources(max(sizes["n_short_fast"], sizes["n_short"], sizes["n_dsir"]), "short",
                                     seed=args.seed)
    long_docs = _common.make_sources(sizes["n_long"], "long", seed=args.seed + 1)
    print(f"cut {len(short_all)} short and {len(long_docs)} long documents in {time.perf_counter() - t0:.1f} s")

    # warm-up (imports, thread pool)
    ccomp.zipfit.alignment_scores(short_all[:8], targets[:8], "gzip", 1, threads=threads)

    rows = []  # throughput rows
    notes = []

    def add(case, comp, level, docs, impl, engine, thr, secs, ref_secs, target, diff):
        n_pairs = docs[0] * docs[1]
        rate = n_pairs / secs if secs else None
        ratio = (ref_secs / secs) if (ref_secs and secs) else None
        tgt = ""
        if target is not None and impl != "reference (zip-fit)":
            tgt = f">= {target[0]:g}x" + (f" (stretch {target[1]:g}x)" if len(target) > 1 else "")
            tgt += ": " + verdict(ratio, target[0])
            if len(target) > 1 and ratio is not None and ratio >= target[1]:
                tgt += ", stretch met"
        row = [case, f"{comp} {level}", f"{docs[0]} x {docs[1]}", impl, engine, thr, f"{secs:.2f}",
               fmt_rate(rate), fmt_ratio(ratio) if impl != "reference (zip-fit)" else "1.00x",
               tgt, "-" if diff is None else f"{diff:.1e}"]
        rows.append(row)
        print("  " + " | ".join(str(c) for c in row), flush=True)

    def compare(case, sources, comp, level, variants, target=None, run_ref=True, tg=None):
        """Best (minimum) wall time of ``repeat`` interleaved runs of the reference and each ccomp variant."""
        tg = targets if tg is None else tg
        docs = (len(sources), len(tg))
        ref_secs, ref_map = None, None
        best = {}
        ref_ok = run_ref
        for _ in range(repeat):
            if ref_ok:
                try:
                    secs, ref_map = run_reference(sources, tg, comp, level)
                    ref_secs = secs if ref_secs is None else min(ref_secs, secs)
                except Exception as e:  # report and go on
                    notes.append(f"{case} {comp} {level}: reference failed: {type(e).__name__}: {e}")
                    print("  reference failed:", e)
                    ref_ok = False
            for engine, thr in variants:
                secs, scores = run_ccomp(sources, tg, comp, level, thr, engine)
                prev = best.get((engine, thr))
                best[(engine, thr)] = (min(secs, prev[0]) if prev else secs, scores)
        if ref_secs is not None:
            add(case, comp, level, docs, "reference (zip-fit)", "python " + comp, "procs=%d" % os.cpu_count(),
                ref_secs, ref_secs, None, None)
        for engine, thr in variants:
            eng_name = ccomp.zipfit.engine(comp, level) if engine == "auto" else engine
            secs, scores = best[(engine, thr)]
            add(case, comp, level, docs, "ccomp", f"{engine} ({eng_name})", thr, secs, ref_secs, target,
                max_diff(sources, scores, ref_map))
        return ref_secs, best

    print("throughput (pairs/s = sources x targets / wall seconds, end to end):")
    short = short_all[:sizes["n_short"]]
    short_fast = short_all[:sizes["n_short_fast"]]
    compare("1 short", short, "gzip", 1, [("auto", threads), ("zlib", threads)], (TARGET_GZIP, STRETCH_GZIP))
    compare("2 short", short_fast, "lz4", 0, [("auto", threads)], (TARGET_LZ4,))
    compare("3 long", long_docs, "gzip", 1, [("auto", threads)], None)
    compare("3 long", long_docs, "lz4", 0, [("auto", threads)], None)
    compare("4 short", short, "zstd", 3, [("auto", threads)], None)
    if not args.quick:
        alt = "prompt+solution" if args.targets == "prompt" else "prompt"
        compare(f"1b short, targets {alt}", short, "gzip", 1, [("auto", threads)], None,
                tg=_common.load_humaneval(field=alt))

    # 5. single-thread engine comparison (ccomp only)
    eng_rows = []
    sub = short_all[:sizes["n_engine"]]
    for level in (1, 6):
        z_secs = a_secs = float("inf")
        for _ in range(repeat):
            secs, z_scores = run_ccomp(sub, targets, "gzip", level, 1, "zlib")
            z_secs = min(z_secs, secs)
            secs, a_scores = run_ccomp(sub, targets, "gzip", level, 1, "auto")
            a_secs = min(a_secs, secs)
        pairs = len(sub) * n_t
        diff = float(np.max(np.abs(z_scores - a_scores))) if len(sub) else 0.0
        eng_rows.append([f"gzip {level}", f"{len(sub)} x {n_t}", 1, fmt_rate(pairs / z_secs),
                         f"{fmt_rate(pairs / a_secs)} ({ccomp.zipfit.engine('gzip', level)})",
                         fmt_ratio(z_secs / a_secs), f"{diff:.1e}"])
        print("  engine: " + " | ".join(str(c) for c in eng_rows[-1]), flush=True)

    # 6. peak memory, fresh subprocesses
    mem_rows = []
    mem_ratio = {}
    tmp = tempfile.mkdtemp(prefix="zipfit_bench_")
    n_mem = sizes["n_mem"]
    print(f"peak memory at {n_mem} short sources x {n_t} targets (gzip 1), fresh subprocesses:", flush=True)
    mem_sources = _common.make_sources(n_mem, "short", seed=args.seed + 2)
    mem_path = Path(tmp) / "mem_sources.jsonl"
    _common.write_jsonl(mem_path, mem_sources)
    del mem_sources
    gc.collect()
    opts = {"compressor": "gzip", "level": 1, "threads": threads, "targets": args.targets, "tmp": tmp}
    mem_res = {}
    for mode, label in (("baseline", "baseline: python + ccomp + sources list, no scoring"),
                        ("reference", "reference (zip-fit)"),
                        ("ccomp", "ccomp alignment_scores(list)"),
                        ("ccomp-stream", "ccomp score_jsonl (streamed from file)")):
        res = run_child(mode, mem_path, opts)
        mem_res[mode] = res
        if "error" in res:
            notes.append(f"memory {mode}: {res['error']}")
            mem_rows.append([label, n_mem, "failed", "-", "-", "-", "-", "-", "-"])
            print("  " + label + ": " + res["error"], flush=True)
            continue
        rate = fmt_rate(n_mem * n_t / res["wall_s"]) if mode != "baseline" else "-"
        mem_rows.append([label, f"{n_mem} x {n_t}", f"{res['wall_s']:.1f}", rate, mib(kib=res["self_maxrss_kib"]),
                         mib(kib=res["children_maxrss_kib"]), mib(b=res["tree_peak_sum_bytes"]),
                         mib(b=res["tree_peak_pss_bytes"]), res["tree_peak_procs"]])
        print("  " + " | ".join(str(c) for c in mem_rows[-1]), flush=True)
    ref = mem_res.get("reference", {})
    for mode in ("ccomp", "ccomp-stream"):
        cc = mem_res.get(mode, {})
        if "error" in ref or "error" in cc or not ref or not cc:
            continue
        ratios = {"self": ref["self_maxrss_kib"] / cc["self_maxrss_kib"]}
        for key in ("tree_peak_sum_bytes", "tree_peak_pss_bytes"):
            if ref.get(key) and cc.get(key):
                ratios[key] = ref[key] / cc[key]
        mem_ratio[mode] = ratios

    # 7. DSIR on the short-doc selection task
    dsir_rows = []
    if not args.skip_dsir:
        n_d, k_d = sizes["n_dsir"], sizes["k_dsir"]
        print(f"selection task: top {k_d} of {n_d} short sources for HumanEval ({args.targets}):", flush=True)
        d_path = Path(tmp) / "dsir_sources.jsonl"
        _common.write_jsonl(d_path, short_all[:n_d], with_id=True)
        d_opts = dict(opts, k=k_d)
        cc = run_child("ccomp", d_path, d_opts)
        ds = run_child("dsir", d_path, d_opts)
        for label, res in (("ccomp select (gzip 1, alignment_scores + top-k)", cc),
                           ("DSIR HashedNgramDSIR (fit + weights + top-k resample)", ds)):
            if "error" in res:
                notes.append(f"selection {label}: {res['error']}")
                dsir_rows.append([label, n_d, k_d, "failed", "-", "-", "-", "-", "-"])
                continue
            overlap = "-"
            if res is ds and "top" in cc:
                inter = len(set(cc["top"]) & set(ds["top"]))
                overlap = f"{inter}/{k_d} ({100.0 * inter / k_d:.0f}%)"
            dsir_rows.append([label, f"{n_d} x {n_t}", k_d, f"{res['wall_s']:.2f}", mib(kib=res["self_maxrss_kib"]),
                              mib(kib=res["children_maxrss_kib"]), mib(b=res["tree_peak_sum_bytes"]),
                              mib(b=res["tree_peak_pss_bytes"]), overlap])
            print("  " + " | ".join(str(c) for c in dsir_rows[-1]), flush=True)

    shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start
    load_after = os.getloadavg()

    # ------------------------------------------------------------------ report
    lines = []
    lines.append("# ZIP-FIT benchmark: ccomp vs zip-fit (reference) and DSIR")
    lines.append("")
    lines.append(f"Generated by `bench/zipfit_bench.py{' --quick' if args.quick else ''}"
                 f"{' --skip-dsir' if args.skip_dsir else ''}"
                 f"{' --targets ' + args.targets if args.targets != 'prompt' else ''}` on "
                 f"{now:%Y-%m-%d %H:%M} UTC ({'quick' if args.quick else 'full'} mode, {total:.0f} s in all).")
    lines.append("")
    lines.append(f"- Machine: {info['cpu']}, {info['cores']} cores usable (os.cpu_count() = {info['os_cpu_count']}); "
                 f"{info['platform']}")
    lines.append(f"- Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"- Load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load_before)}, at end "
                 f"{'/'.join(f'{x:.2f}' for x in load_after)}: the machine may be shared, so timings can be noisy; "
                 f"throughput rows keep the best of {repeat} interleaved run(s) of each implementation, the memory "
                 "and selection rows are single runs.")
    lines.append("- ccomp.build_info(): `" + json.dumps(build, sort_keys=True, default=str) + "`")
    lines.append(f"- gzip engine: level 1 -> `{ccomp.zipfit.engine('gzip', 1)}`, level 6 -> "
                 f"`{ccomp.zipfit.engine('gzip', 6)}`")
    lines.append(f"- Targets: the {n_t} HumanEval {args.targets.replace('+', ' + ')} texts. Sources: distinct documents "
                 f"cut with seed {args.seed} (30% from the bundled corpus alice29/asyoulik/lcet10/plrabn12/html/urls.10K "
                 "decoded as UTF-8 with errors=replace, 70% from this machine's stdlib *.py sources); short = 200..2000 "
                 "characters, long = 8..32 KiB (uniform lengths).")
    lines.append(f"- The reference runs `ZIPFIT.rank_sequences_by_alignment` with k = N (multiprocessing.Pool of "
                 f"{os.cpu_count()} processes); ccomp runs `ccomp.zipfit.alignment_scores` with the threads shown. "
                 "Wall time is end to end (source and target sizes included). `max |d score|` is the largest "
                 "difference between ccomp's and the reference's score of the same text (required <= 1e-12).")
    lines.append("")
    lines.append("## Throughput")
    lines.append("")
    lines.append(md_table(["Case", "Compressor", "Sources x targets", "Implementation", "Engine", "Threads",
                           "Wall s", "Pairs/s", "vs reference", "Target", "max |d score|"], rows))
    lines.append("")
    lines.append("## Single-thread engine comparison (ccomp, threads=1, short docs)")
    lines.append("")
    lines.append(md_table(["Compressor", "Sources x targets", "Threads", "engine=zlib pairs/s",
                           "engine=auto pairs/s", "auto vs zlib", "max |d score|"], eng_rows))
    lines.append("")
    lines.append(f"## Peak memory ({n_mem} short sources x {n_t} targets, gzip level 1"
                 f"{', reduced by --quick (full: 50000)' if args.quick and n_mem != FULL['n_mem'] else ''})")
    lines.append("")
    lines.append("Each implementation runs in a fresh interpreter (a subprocess of this script) that first reads the "
                 "same JSONL file of sources into a list, as the reference requires (the streaming row instead reads "
                 "it chunk by chunk with `ccomp.zipfit.score_jsonl`). Columns: `self` = the child's own peak RSS "
                 "(`VmHWM` in /proc/self/status at its end; `getrusage(RUSAGE_SELF).ru_maxrss` is not used because "
                 "Linux carries the spawning parent's high-water mark across fork + exec); `workers` = the child's "
                 "`getrusage(RUSAGE_CHILDREN).ru_maxrss` after its pools have exited: the peak RSS of the largest "
                 "single waited-for descendant (the reference's Pool workers; ccomp uses threads, so 0); `tree RSS` = "
                 "peak of the summed RSS of the child and all its descendants, sampled every 0.1 s with psutil from "
                 "this script (counts pages shared by forked workers once per process: an upper bound); `tree PSS` = "
                 "the same with proportional set size (shared pages split between the processes: the physical "
                 "memory in use). The headline ratio uses tree PSS.")
    lines.append("")
    lines.append(md_table(["Run", "Sources x targets", "Wall s", "Pairs/s", "self peak MiB", "workers peak MiB",
                           "tree RSS peak MiB", "tree PSS peak MiB", "Processes"], mem_rows))
    lines.append("")
    for mode, ratios in mem_ratio.items():
        lines.append(f"- Reference / {mode}: " + mem_ratio_text(ratios))
    lines.append("")
    if dsir_rows:
        lines.append("## Selection task: ccomp vs DSIR (data-selection HashedNgramDSIR)")
        lines.append("")
        lines.append("Same sources (JSONL written beforehand, not timed), HumanEval as target, select the same k. "
                     "DSIR: hashed unigram+bigram features (10000 buckets), `fit_importance_estimator"
                     "(num_tokens_to_fit='all')`, `compute_importance_weights()`, `resample(top_k=True)`, "
                     f"num_proc={threads}, min_example_length=0 so every source is eligible. Overlap = how many of "
                     "DSIR's k are in ccomp's top k (information only: the methods differ). DSIR's joblib (loky) workers "
                     "are not waited-for children of its process, so `workers` shows 0 for it; the tree columns "
                     "include them.")
        lines.append("")
        lines.append(md_table(["Run", "Sources x targets", "k", "Wall s", "self peak MiB", "workers peak MiB",
                               "tree RSS peak MiB", "tree PSS peak MiB", "Overlap with ccomp top-k"], dsir_rows))
        lines.append("")
    lines.append("## Targets")
    lines.append("")
    g = [r for r in rows if r[0] == "1 short" and r[3] == "ccomp" and r[4].startswith("auto")]
    l4 = [r for r in rows if r[0] == "2 short" and r[3] == "ccomp"]
    lines.append(f"- gzip level 1, short docs, ccomp / reference pairs/s: {g[0][8] if g else '-'} "
                 f"(target >= {TARGET_GZIP:g}x, stretch >= {STRETCH_GZIP:g}x)")
    lines.append(f"- lz4, short docs: {l4[0][8] if l4 else '-'} (target >= {TARGET_LZ4:g}x)")
    if "ccomp" in mem_ratio:
        lines.append("- peak memory, reference / ccomp (list input): " + mem_ratio_text(mem_ratio["ccomp"]))
    if "ccomp-stream" in mem_ratio:
        lines.append("- peak memory, reference / ccomp (streamed input): " + mem_ratio_text(mem_ratio["ccomp-stream"]))
    if notes:
        lines.append("")
        lines.append("## Notes")
        lines.append("")
        for n in notes:
            lines.append(f"- {n}")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

#!/usr/bin/env python3
"""GPU check for ccomp: build, compare every kernel with the CPU reference, time against torch.

Run on a machine with an NVIDIA GPU from the repository root:

    python3 kernels/gpu_check.py            # full log under $OUT (or ./gpu_check_out), table last
    python3 kernels/gpu_check.py ac --quick # one section (iota, ac), smaller sizes

Steps: (1) build ccomp with CCOMP_CUDA=1 (pip install -e .; if the core cannot be built there, e.g.
missing lz4/zstd headers, the CUDA extension alone is compiled with nvcc and gcc); (2) report the device;
(3) for every kernel, compare with the CPU reference; (4) time against the torch baseline; (5) print a table.
Exit status is nonzero when any comparison fails.
"""
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("OUT") or os.path.join(ROOT, "gpu_check_out")
os.makedirs(OUT, exist_ok=True)
LOG = open(os.path.join(OUT, "gpu_check.log"), "w")
ROWS = []


def log(*parts):
    line = " ".join(str(p) for p in parts)
    print(line, file=LOG, flush=True)
    print(line, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$", " ".join(cmd))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    LOG.write(r.stdout + r.stderr)
    LOG.flush()
    return r.returncode


def build():
    env = dict(os.environ, CCOMP_CUDA="1")
    t = time.time()
    rc = run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."], env=env)
    if rc == 0:
        log(f"built ccomp (core + CUDA) in {time.time() - t:.1f}s")
        sys.path.insert(0, os.path.join(ROOT, "python"))  # the editable install is seen by new interpreters only
        import ccomp.cuda as cuda

        return cuda._cuda, "ccomp (pip install -e .)"
    log("full build failed (see log); building the CUDA extension alone")
    tmp = tempfile.mkdtemp()
    nvcc = os.environ.get("NVCC", "nvcc")
    objs = []
    for src in sorted(f for f in os.listdir(os.path.join(ROOT, "kernels")) if f.endswith(".cu")):
        obj = os.path.join(tmp, src + ".o")
        if run([nvcc, "-c", "kernels/" + src, "-o", obj, "-O2", "-std=c++17", "-Ikernels", "-Icsrc/include",
                "-Xcompiler", "-fPIC", "-gencode=arch=compute_90,code=sm_90"]) != 0:
            raise SystemExit("nvcc failed: see " + LOG.name)
        objs.append(obj)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = os.path.join(tmp, "_cuda" + suffix)
    cuda_home = os.path.dirname(os.path.dirname(os.path.realpath(subprocess.check_output(["which", nvcc],
                                                                                         text=True).strip())))
    if run(["gcc", "-shared", "-fPIC", "-O2", "-Ikernels", "-I" + sysconfig.get_paths()["include"],
            "csrc/python/cuda_module.c", *objs, "-o", so, "-L" + os.path.join(cuda_home, "lib64"),
            "-lcudart_static", "-ldl", "-lrt", "-lpthread", "-lstdc++"]) != 0:
        raise SystemExit("linking the CUDA extension failed: see " + LOG.name)
    spec = importlib.util.spec_from_file_location("_cuda", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, "CUDA extension alone"


def check_iota(mod):
    import numpy as np

    n, step = 1 << 20, 7
    got = np.frombuffer(mod.iota(n, step), dtype=np.int32)
    ref = np.arange(n, dtype=np.int32) * step
    ok = bool(np.array_equal(got, ref))
    mod.iota(n, step)  # warm-up
    t = time.perf_counter()
    for _ in range(20):
        mod.iota(n, step)
    ours = (time.perf_counter() - t) / 20
    torch_time = None
    try:
        import torch

        (torch.arange(n, dtype=torch.int32, device="cuda") * step).cpu()  # warm-up: context, kernels
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            (torch.arange(n, dtype=torch.int32, device="cuda") * step).cpu()
        torch.cuda.synchronize()
        torch_time = (time.perf_counter() - t) / 20
    except Exception as exc:  # torch absent or without CUDA
        log("torch baseline unavailable:", exc)
    ROWS.append(("iota (device round trip, 1M int32)", "bit-exact" if ok else "MISMATCH", ours, torch_time))
    return ok


# ---------------------------------------------------------------- ccomp.ac

AC_RESULTS = []  # (case, verdict, ours_s, torch_s) for the summary
QUICK = "--quick" in sys.argv


def _ac_cases():
    """(V, T, dtype, rule, logits, precision, temperature, finds)."""
    t_big = 1024 if QUICK else 4096
    t_wide = 256 if QUICK else 1024
    out = []
    for V, T, finds in ((49152, t_big, 200), (151936, t_wide, 100)):
        for dtype in ("float32", "float64"):
            for rule in ("constriction", "nacrith"):
                for logits in (True, False):
                    out.append((V, T, dtype, rule, logits, 24, 1.0, finds))
    if QUICK:
        out = out[::3]
    out += [(151936, t_big, "float32", "constriction", True, 24, 1.0, 0),  # the big timing case
            (49152, t_big, "float32", "nacrith", False, 16, 1.0, 50),
            (151936, t_wide, "float64", "constriction", True, 28, 0.8, 50),
            (49152, t_wide, "float32", "nacrith", True, 28, 1.0, 50)]
    return out


def _median_time(fn, reps=3, sync=None):
    fn()  # warm-up (and the value returned)
    times = []
    for _ in range(reps):
        if sync:
            sync()
        t = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], out


def _make_logits(V, T, seed, torch):
    """Zipf-like logits (-1.1 log rank + noise, a different permutation per row), float64 on the host or
    float32 on the GPU; row 1 has a third of its logits at -inf."""
    import numpy as np

    primes = np.array([1000003, 999983, 999979, 999961, 999959, 999953, 999931, 999917], dtype=np.int64)
    if torch is not None:
        g = torch.Generator(device="cuda").manual_seed(seed)
        i = torch.arange(V, device="cuda", dtype=torch.int64)
        a = torch.as_tensor(primes, device="cuda")[torch.randint(0, 8, (T, 1), generator=g, device="cuda")]
        b = torch.randint(0, V, (T, 1), generator=g, device="cuda")
        rank = (i[None, :] * a + b) % V + 1
        x = -1.1 * torch.log(rank.float()) + torch.randn(T, V, generator=g, device="cuda")
        x[1, ::3] = float("-inf")
        return x
    rng = np.random.default_rng(seed)
    i = np.arange(V, dtype=np.int64)
    x = np.empty((T, V), dtype=np.float32)
    for t in range(T):
        rank = (i * primes[rng.integers(0, 8)] + rng.integers(0, V)) % V + 1
        x[t] = -1.1 * np.log(rank) + rng.standard_normal(V, dtype=np.float32)
    x[1, ::3] = -np.inf
    return x


def _torch_baseline(torch, x, sym, P, logits, temperature):
    """(cum, freq) the obvious way on the device: softmax + cumsum + gather + float -> int."""
    V = x.shape[1]
    p = torch.softmax(x / temperature, dim=-1) if logits else x
    c = torch.cumsum(p, dim=-1)
    scale = (2 ** P - V) / c[:, -1:]
    s = sym[:, None]
    hi_c = c.gather(1, s)
    lo_c = hi_c - p.gather(1, s)
    cum = (lo_c * scale).long() + s
    hi = (hi_c * scale).long() + s + 1
    return torch.cat([cum, hi - cum], 1).to(torch.int32).cpu()


def check_ac():
    """ccomp.ac on the GPU: lookup and find bit for bit against the CPU reference, lookup timed against torch."""
    import traceback

    import numpy as np

    try:
        import ccomp._core as core
        from ccomp import _ac_gpu
    except Exception as exc:
        log("ac: ccomp is not importable (the full build failed?):", exc)
        ROWS.append(("ac (not run: ccomp not importable)", "FAILED", 0.0, None))
        return False
    torch = None
    try:
        import torch as _torch

        if _torch.cuda.is_available():
            torch = _torch
            torch.zeros(1, device="cuda")
    except Exception as exc:
        log("ac: torch with CUDA unavailable; device arrays come from ccomp._ac_gpu.to_device:", exc)
    threads = os.cpu_count() or 1
    ok_all = True
    base = {}
    t_section = time.time()
    for case in _ac_cases():
        V, T, dtype, rule, logits, P, temp, finds = case
        name = f"ac {'logits' if logits else 'probs'} {dtype[5:]}b {rule[:5]} V={V} T={T} P={P}" + \
            (f" tau={temp}" if temp != 1.0 else "")
        verdict, ours, theirs = "ERROR", None, None
        try:
            key = (V, T)
            if key not in base:
                base.clear()
                if torch is not None:
                    torch.cuda.empty_cache()
                t0 = time.perf_counter()
                base[key] = _make_logits(V, T, 1000 + V + T, torch)
                log(f"ac: logits {T}x{V} made in {time.perf_counter() - t0:.2f}s")
            x0 = base[key]
            rng = np.random.default_rng(V + T + P)
            if torch is not None:
                tdt = torch.float32 if dtype == "float32" else torch.float64
                if logits:
                    x = x0.to(tdt)
                else:
                    x = torch.softmax(x0.double(), dim=-1).to(tdt)
                    x[2, 100:5000] = 0  # zero probabilities
                x_np = x.cpu().numpy()
                top = torch.argmax(x, dim=1).cpu().numpy()
            else:
                if logits:
                    x_np = x0.astype(dtype)
                else:
                    e = np.exp(x0.astype(np.float64) - x0.max(axis=1, keepdims=True))
                    x_np = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
                    x_np[2, 100:5000] = 0
                x = _ac_gpu.to_device(x_np)
                top = np.argmax(x_np, axis=1)
            # half the tokens are the most likely symbol (as in real text), half uniform
            sym = np.where(rng.random(T) < 0.5, top, rng.integers(0, V, T)).astype(np.int64)
            sym[0], sym[-1] = 0, V - 1
            sym_dev = torch.as_tensor(sym, device="cuda") if torch is not None else _ac_gpu.to_device(sym)

            t0 = time.perf_counter()
            try:
                ref = core.ac_lookup(x_np, sym, P, _ac_gpu.RULES[rule], logits, temp, threads)
                ref_err = None
            except ValueError as exc:
                ref, ref_err = None, str(exc)
            cpu_s = time.perf_counter() - t0
            if ref_err is not None:
                try:
                    _ac_gpu.lookup(x, sym_dev, P, rule, logits, temp)
                    verdict = f"MISMATCH: CPU rejects ({ref_err}), GPU accepts"
                except ValueError as exc:
                    same = str(exc) == ref_err
                    verdict = "both reject, same message" if same else f"MISMATCH: messages {ref_err!r} vs {exc!r}"
                log(f"{name}: {verdict}")
                ok_all &= verdict.startswith("both")
                AC_RESULTS.append((name, verdict, None, None))
                continue
            ours, got = _median_time(lambda: _ac_gpu.lookup(x, sym_dev, P, rule, logits, temp))
            bad = int(np.count_nonzero((got[0] != ref[0]) | (got[1] != ref[1])))
            verdict = "bit-exact" if bad == 0 else f"MISMATCH {bad}/{T}"
            if bad:
                i = int(np.flatnonzero((got[0] != ref[0]) | (got[1] != ref[1]))[0])
                log(f"{name}: first mismatch t={i} sym={sym[i]} gpu=({got[0][i]}, {got[1][i]}) "
                    f"cpu=({ref[0][i]}, {ref[1][i]})")
            if torch is not None:
                try:
                    theirs, _ = _median_time(lambda: _torch_baseline(torch, x, sym_dev, P, logits, temp),
                                             sync=torch.cuda.synchronize)
                except Exception as exc:  # e.g. out of memory for the softmax copy
                    log(f"{name}: torch baseline failed: {exc}")
            # decoding: one scan, then finds against ccomp._core.ac_find
            if finds:
                scan_s, handle = _median_time(lambda: _ac_gpu.scan(x, P, rule, logits, temp), reps=1)
                ts = rng.integers(0, T, finds)
                ts[:3] = [0, 1, 2]  # the masked and zeroed rows
                targets = rng.integers(0, 1 << P, finds)
                targets[:2] = [0, (1 << P) - 1]
                t0 = time.perf_counter()
                fs, fc, ff = handle.find_many(ts, targets)
                many_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                single = [handle.find(int(t), int(g)) for t, g in zip(ts[:20], targets[:20])]
                one_s = (time.perf_counter() - t0) / 20
                fbad = 0
                for k, (t, g) in enumerate(zip(ts, targets)):
                    want = tuple(int(v) for v in core.ac_find(np.ascontiguousarray(x_np[t]), int(g), P,
                                                              _ac_gpu.RULES[rule], logits, temp))
                    got_k = (int(fs[k]), int(fc[k]), int(ff[k]))
                    if got_k != want or (k < 20 and single[k] != want):
                        if fbad == 0:
                            log(f"{name}: find mismatch t={t} target={g} gpu={got_k} cpu={want}")
                        fbad += 1
                row = x[int(ts[0])] if torch is not None else x_np[int(ts[0])]
                t0 = time.perf_counter()
                one = _ac_gpu.find(row, int(targets[0]), P, rule, logits, temp)
                oneshot_s = time.perf_counter() - t0
                want = tuple(int(v) for v in core.ac_find(np.ascontiguousarray(x_np[ts[0]]), int(targets[0]), P,
                                                          _ac_gpu.RULES[rule], logits, temp))
                fbad += one != want
                verdict += f"; find {finds + 1 - fbad}/{finds + 1}" if fbad else f"; find {finds + 1} ok"
                log(f"{name}: scan {scan_s * 1e3:.2f} ms, find_many({finds}) {many_s * 1e3:.2f} ms, "
                    f"find {one_s * 1e3:.3f} ms each, one-shot find (scan 1 row + find) {oneshot_s * 1e3:.2f} ms")
                handle.close()
                bad += fbad
            ok_all &= bad == 0
            log(f"{name}: {verdict}; ccomp {ours * 1e3:.2f} ms, torch "
                f"{'-' if theirs is None else f'{theirs * 1e3:.2f} ms'}, CPU reference ({threads} threads) "
                f"{cpu_s * 1e3:.1f} ms")
        except Exception:
            ok_all = False
            verdict = "ERROR (see log)"
            log(f"{name}: exception\n{traceback.format_exc()}")
        AC_RESULTS.append((name, verdict, ours, theirs))
        if time.time() - t_section > 420:
            log("ac: stopping early (time budget of the section spent)")
            AC_RESULTS.append(("ac (remaining cases skipped: time budget)", "SKIPPED", None, None))
            ok_all = False
            break
    base.clear()
    log(f"ac: section took {time.time() - t_section:.1f}s")
    return ok_all


def main():
    sections = [a for a in sys.argv[1:] if not a.startswith("--")] or ["iota", "ac"]
    mod, how = build()
    count, reason = mod.device_count()
    runtime, driver = mod.versions()
    log(f"build: {how}; CUDA runtime {runtime}, driver {driver}; devices: {count} {reason}")
    if count == 0:
        log("no usable CUDA device:", reason)
        return 1
    for i in range(count):
        log("device", i, mod.device_name(i))
    ok = True
    if "iota" in sections:
        ok &= check_iota(mod)
    if "ac" in sections:
        ok &= check_ac()
    lines = ["", "| kernel | vs CPU reference | ccomp s | torch s | ratio |", "|---|---|---|---|---|"]
    for name, verdict, ours, theirs in ROWS:
        ratio = f"{theirs / ours:.2f}x" if theirs else "-"
        lines.append(f"| {name} | {verdict} | {ours:.6f} | {theirs if theirs is None else f'{theirs:.6f}'} | {ratio} |")
    if AC_RESULTS:
        lines += ["", "ccomp.ac lookup, end to end (device rows -> host cum/freq); ratio = torch / ccomp",
                  "| case | vs CPU reference | ccomp ms | torch ms | ratio |", "|---|---|---|---|---|"]
        for name, verdict, ours, theirs in AC_RESULTS:
            ratio = f"{theirs / ours:.2f}x" if theirs and ours else "-"
            lines.append(f"| {name} | {verdict} | {'-' if ours is None else f'{ours * 1e3:.2f}'} | "
                         f"{'-' if theirs is None else f'{theirs * 1e3:.2f}'} | {ratio} |")
    lines.append(f"\nOVERALL: {'PASS' if ok else 'FAIL'}")
    print("\n".join(lines), file=LOG, flush=True)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""GPU check for ccomp: build, run the GPU test suite on the device, its sanitizers, and time against torch.

Run on a machine with an NVIDIA GPU from the repository root:

    python3 kernels/gpu_check.py                 # everything; full log under $OUT (or ./gpu_check_out), table last
    python3 kernels/gpu_check.py --quick         # smaller timing shapes
    python3 kernels/gpu_check.py kv sketch       # some areas only (iota, ac, kv, sketch, tokens)
    python3 kernels/gpu_check.py --no-tests --no-sanitizer kv   # the kv timings alone

Steps: (1) build ccomp with its CUDA extension (`pip install --no-build-isolation --no-deps -e .`, for this
GPU's architecture); (2) report the device; (3) correctness: `pytest -m gpu` over tests/test_cuda.py and
the areas' tests/test_*_gpu.py at their real shapes, every kernel against the CPU reference with the
rules the tests state (bit equality where the docs promise it, float32 bounds for attention and the
LUT matmul); (4) compute-sanitizer's memcheck, racecheck and synccheck over the same tests at the small
shapes the SIMT emulator runs (CCOMP_GPU_SMALL=1), where the toolkit has compute-sanitizer; (5) time every
kernel against its torch baseline (outputs checked against the CPU at the timed sizes); (6) print a table.
Exit status is nonzero when a test, a sanitizer or a timed comparison fails.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

if __name__ == "__main__" and ("--help" in sys.argv or "-h" in sys.argv):
    print(__doc__)
    sys.exit(0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("OUT") or os.path.join(ROOT, "gpu_check_out")
os.makedirs(OUT, exist_ok=True)
LOG = open(os.path.join(OUT, "gpu_check.log"), "w")
ROWS = []
SUITE = []  # (suite, verdict, seconds): pytest -m gpu and the sanitizer runs
AREAS = ["iota", "ac", "kv", "sketch", "tokens"]
TEST_FILES = {"iota": "tests/test_cuda.py", "ac": "tests/test_ac_gpu.py", "kv": "tests/test_kv_gpu.py",
              "sketch": "tests/test_sketch_gpu.py", "tokens": "tests/test_tokens_gpu.py"}
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck")
SANITIZER_ERROR = 86  # compute-sanitizer's exit status when it reported an error


def log(*parts):
    line = " ".join(str(p) for p in parts)
    print(line, file=LOG, flush=True)
    print(line, file=sys.stderr, flush=True)


def run(cmd, log_name=None, timeout=None, **kw):
    """Runs cmd in the repository root; its output goes to the log (or to $OUT/log_name). Returns
    (exit status, seconds); 124 when it ran past `timeout` seconds."""
    log("$", " ".join(cmd))
    t = time.time()
    out = open(os.path.join(OUT, log_name), "w") if log_name else LOG
    try:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                            **kw).returncode
    except subprocess.TimeoutExpired:
        rc = 124
        log(f"timed out after {timeout} s")
    finally:
        if log_name:
            out.close()
        LOG.flush()
    return rc, time.time() - t


def _local_arch():
    """nvcc -gencode for the GPU of this machine (None when nvidia-smi cannot say)."""
    try:
        cap = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.split()[0]
        major, minor = cap.split(".")
        return f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"
    except Exception:
        return None


def build():
    """pip install -e . with CCOMP_CUDA=1 (for this GPU only: a third of nvcc's time); exits when it fails."""
    env = dict(os.environ, CCOMP_CUDA="1")
    if "CCOMP_CUDA_ARCH" not in env and _local_arch():
        env["CCOMP_CUDA_ARCH"] = _local_arch()
        log("building for", env["CCOMP_CUDA_ARCH"])
    rc, seconds = run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."], env=env)
    if rc != 0:
        log(f"the build failed (exit status {rc}): see {LOG.name}")
        raise SystemExit(1)
    log(f"built ccomp (core + CUDA) in {seconds:.1f}s")
    sys.path.insert(0, os.path.join(ROOT, "python"))  # the editable install is seen by new interpreters only
    import ccomp.cuda as cuda

    return cuda


def _junit_counts(path):
    """(tests, failed, skipped) from pytest's JUnit XML (None when pytest wrote none)."""
    try:
        suite = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = int(suite.get("tests", 0))
    return n, int(suite.get("failures", 0)) + int(suite.get("errors", 0)), int(suite.get("skipped", 0))


def run_tests(files, name, log_name, env=None, prefix=(), timeout=None):
    """pytest -m gpu over `files` (under `prefix`, a sanitizer); a SUITE row; True when every test passed."""
    xml = os.path.join(OUT, log_name.replace(".log", ".xml"))
    cmd = [*prefix, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", f"--junitxml={xml}",
           *files]
    rc, seconds = run(cmd, log_name, timeout=timeout, env=dict(os.environ, CCOMP_REQUIRE_GPU="1", **(env or {})))
    counts = _junit_counts(xml)
    verdict = "no result" if counts is None else f"{counts[0] - counts[1] - counts[2]} passed, {counts[1]} failed, " \
        f"{counts[2]} skipped"
    if rc == SANITIZER_ERROR and prefix:
        verdict += "; SANITIZER ERRORS"
    elif rc == 124:
        verdict += "; TIMED OUT"
    ok = rc == 0 and counts is not None and counts[1] == 0 and counts[0] > counts[2]  # some ran, none failed
    if not ok:
        verdict += f" FAIL (exit status {rc}, see {log_name})"
    log(f"{name}: {verdict} in {seconds:.0f}s")
    SUITE.append((name, verdict, seconds))
    return ok


def _sanitizer():
    found = shutil.which("compute-sanitizer")
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        path = os.path.join(home, "bin", "compute-sanitizer") if home else None
        if found is None and path and os.path.exists(path):
            found = path
    return found


def run_sanitizers(files, timeout):
    """memcheck, racecheck and synccheck over the small-shape GPU tests; True when all are clean."""
    tool_path = _sanitizer()
    if tool_path is None:
        log("compute-sanitizer not found: the sanitizer runs are skipped")
        SUITE.append(("compute-sanitizer", "SKIPPED (not in this CUDA toolkit)", 0.0))
        return True
    ok = True
    for tool in SANITIZER_TOOLS:
        prefix = [tool_path, "--tool", tool, "--error-exitcode", str(SANITIZER_ERROR), "--print-limit", "20"]
        if tool == "memcheck":
            prefix += ["--leak-check", "no"]
        ok &= run_tests(files, f"compute-sanitizer {tool}, pytest -m gpu (small shapes)", f"sanitizer_{tool}.log",
                        env={"CCOMP_GPU_SMALL": "1"}, prefix=prefix, timeout=timeout)
    return ok


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


# ---------------------------------------------------------------- ccomp.kv

KV_RESULTS = []  # (case, verdict, ours_s, baseline_s, note)


def _kv_bits_equal(a, b):
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.itemsize != b.dtype.itemsize:
        return False
    u = f"u{a.dtype.itemsize}"
    return bool(np.array_equal(a.view(u), b.view(u)))


def _kv_host(a):
    return a.get() if hasattr(a, "get") and not hasattr(a, "cpu") else a.detach().cpu().numpy()


def _kv_time(fn, torch, reps=20, warmup=3):
    """(median seconds of one call between CUDA events, mean seconds per call of reps back-to-back calls)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    single = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        single.append(s.elapsed_time(e) / 1e3)
    single.sort()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    e.synchronize()
    return single[len(single) // 2], s.elapsed_time(e) / 1e3 / reps


def _kv_rel(a, b):
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _kv_speed(kv, g, torch, rng, quick):
    """Quantize against a device copy; 4- and 2-bit attention against torch SDPA over the fp16 cache."""
    import numpy as np

    ok = True
    F = torch.nn.functional
    # memcpy ceiling: bytes read + written per second
    big = torch.empty(1 << 28, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(big)
    copy_s, _ = _kv_time(lambda: dst.copy_(big), torch, reps=10)
    bw = 2 * big.numel() * 4 / copy_s
    del big, dst
    log(f"kv: device copy {bw / 1e12:.2f} TB/s (bytes read + written)")
    KV_RESULTS.append(("device copy 1 GiB (bytes read + written)", f"{bw / 1e12:.2f} TB/s", copy_s, None, ""))
    B, H, T, D = 1, 32, (8192 if quick else 32768), 128
    x = torch.randn(B, H, T, D, device="cuda", dtype=torch.float16)
    for method, p in (("groupwise", {"bits": 4, "group": 32, "axis": "token"}),
                      ("groupwise", {"bits": 4, "group": 32, "axis": "channel"}),
                      ("groupwise", {"bits": 2, "group": 128, "axis": "channel"}), ("q8_0", {}), ("q4_0", {}),
                      ("turbo", {"bits": 3}), ("bitmap_sparse", {"sparsity": 0.5})):
        name = f"kv quantize {method} {' '.join(f'{k}={v}' for k, v in p.items())} fp16 {list(x.shape)}"
        try:
            out = g.quantize(x, method, check=False, **p)
            nbytes = x.numel() * 2 + sum(a.numel() * a.element_size() for a in out.values())
            one, many = _kv_time(lambda: g.quantize(x, method, check=False, **p), torch, reps=10)
            checked, _ = _kv_time(lambda: g.quantize(x, method, **p), torch, reps=5, warmup=1)
            ref = kv.quantize(x.cpu().numpy(), method, **p)
            exact = all(_kv_bits_equal(_kv_host(out[n]), ref.arrays[n]) for n in ref.arrays)
            frac = nbytes / many / bw
            note = f"{nbytes / many / 1e12:.2f} TB/s = {100 * frac:.0f}% of copy; with check {checked * 1e3:.3f} ms"
            slow = frac < 0.5 and method not in ("turbo", "bitmap_sparse")
            verdict = ("bit-exact" if exact else "MISMATCH") + (" (below 50% of copy)" if slow else "")
            ok &= exact
            KV_RESULTS.append((name, verdict, many, nbytes / bw, note))
            log(f"{name}: {verdict}; {many * 1e3:.3f} ms/call back to back, {one * 1e3:.3f} ms single; {note}")
        except Exception as exc:
            import traceback

            log(f"{name}: exception\n{traceback.format_exc()}")
            ok = False
            KV_RESULTS.append((name, f"ERROR {type(exc).__name__}", None, None, ""))
    del x
    torch.cuda.empty_cache()
    # attention: B=1, 32 heads, T tokens, D=128, one query token
    for G, nq in ((32, 1), (8, 1), (32, 4)):
        H = 32
        K = torch.randn(B, G, T, D, device="cuda", dtype=torch.float16)
        V = torch.randn(B, G, T, D, device="cuda", dtype=torch.float16)
        q = torch.randn(B, H, nq, D, device="cuda", dtype=torch.float16)
        gqa = {"enable_gqa": True} if G != H else {}
        try:
            sdpa_one, sdpa = _kv_time(lambda: F.scaled_dot_product_attention(q, K, V, **gqa), torch)
        except Exception as exc:
            log(f"kv: SDPA G={G} failed: {exc}")
            sdpa_one = sdpa = None
        ref = F.scaled_dot_product_attention(q.float(), K.float(), V.float(), **gqa) if not gqa else None
        for bits in (4, 2):
            name = f"kv attention {bits}-bit K/channel V/token B={B} H={H} G={G} nq={nq} T={T} D={D}"
            try:
                kq = g.quantize(K, "groupwise", bits=bits, group=32, axis="channel")
                vq = g.quantize(V, "groupwise", bits=bits, group=32, axis="token")
                kd = g.Quantized("groupwise", K.shape, {"bits": bits, "group": 32, "axis": "channel"}, kq)
                vd = g.Quantized("groupwise", V.shape, {"bits": bits, "group": 32, "axis": "token"}, vq)
                out = g.attention(q, kd, vd)
                one, many = _kv_time(lambda: g.attention(q, kd, vd), torch)
                # against the same math on the dequantized cache (torch, float32)
                kf = g.dequantize(kd).float()
                vf = g.dequantize(vd).float()
                want = F.scaled_dot_product_attention(q.float(), kf, vf, **gqa)
                err = _kv_rel(out.cpu().numpy(), want.cpu().numpy())
                del kf, vf
                speed = sdpa / many if sdpa else None
                verdict = f"rel err {err:.1e}" + ("" if err < 1e-4 else " FAIL")
                if nq == 1 and G == H and speed is not None and speed < 2.0:
                    verdict += " (below 2x SDPA)"
                ok &= err < 1e-4
                note = f"single call {one * 1e3:.3f} ms vs SDPA {sdpa_one * 1e3:.3f} ms" if sdpa_one else ""
                if ref is not None:
                    unq = _kv_rel(out.cpu().numpy(), ref.cpu().numpy())
                    note += f"; vs SDPA on the unquantized cache rel {unq:.1e}"
                KV_RESULTS.append((name, verdict, many, sdpa, note))
                log(f"{name}: {verdict}; ccomp {many * 1e3:.3f} ms/call, SDPA fp16 "
                    f"{'-' if sdpa is None else f'{sdpa * 1e3:.3f} ms'}; {note}")
            except Exception as exc:
                import traceback

                log(f"{name}: exception\n{traceback.format_exc()}")
                ok = False
                KV_RESULTS.append((name, f"ERROR {type(exc).__name__}", None, sdpa, ""))
        if G == H and nq == 1:  # the dense path of ccomp over the same fp16 cache, for reference
            try:
                out = g.attention(q, K, V)
                one, many = _kv_time(lambda: g.attention(q, K, V), torch)
                err = _kv_rel(out.cpu().numpy(), ref.cpu().numpy())
                ok &= err < 1e-4
                KV_RESULTS.append((f"kv attention dense fp16 B={B} H={H} T={T} D={D}", f"rel err {err:.1e}", many,
                                   sdpa, "ccomp's dense segment kernels"))
            except Exception as exc:
                log(f"kv dense attention: {exc!r}")
                ok = False
        del K, V
        torch.cuda.empty_cache()
    return ok


# ---------------------------------------------------------------- ccomp.sketch

SK_RESULTS = []  # (case, verdict, ours_s, baseline_s, note)


def _sk_random(sketch, rng, out, cols, groups, bits, dtype):
    """A sketch with random normal tables (rounded to dtype) and uniformly random codes."""
    tables = rng.normal(size=(out, groups, 1 << bits)).astype("float32")
    codes = rng.integers(0, 1 << bits, size=(out, cols), dtype="uint8")
    return sketch.Sketch.from_codes(tables, codes).astype(dtype)


def _sk_graph_time(fn, torch, calls=20):
    """Seconds per call of fn replayed from a CUDA graph of `calls` calls (None when capture fails)."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="relaxed"):
            for _ in range(calls):
                fn()
        one, _ = _kv_time(graph.replay, torch, reps=10, warmup=2)
        return one / calls
    except Exception as exc:
        log(f"sketch: CUDA graph timing unavailable ({type(exc).__name__}: {exc})")
        return None


def _sk_best(fn, torch):
    """(time per call: the CUDA-graph replay when it works, else back to back; back-to-back time)."""
    _one, many = _kv_time(fn, torch, reps=20)
    graph = _sk_graph_time(fn, torch)
    return (graph if graph is not None else many), many


def _sk_speed(sketch, g, torch, rng, quick):
    """LUT GEMV vs torch fp16 matvec and dequantize + cuBLAS; GEMM vs torch fp16 matmul; grad_tables vs the
    dense route with peak memory; grad_input vs torch fp16.  Weights rotate among copies larger than L2."""
    import itertools

    import numpy as np

    ok = True
    F = torch.nn.functional
    big = torch.empty(1 << 28, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(big)
    copy_s, _ = _kv_time(lambda: dst.copy_(big), torch, reps=10)
    bw = 2 * big.numel() * 4 / copy_s
    del big, dst
    log(f"sketch: device copy {bw / 1e12:.2f} TB/s (bytes read + written)")
    SK_RESULTS.append(("device copy 1 GiB (bytes read + written)", f"{bw / 1e12:.2f} TB/s", copy_s, None, ""))
    l2 = torch.cuda.get_device_properties(0).L2_cache_size if hasattr(torch.cuda.get_device_properties(0),
                                                                       "L2_cache_size") else 64 << 20
    shapes = [(4096, 4096, 4, 32), (4096, 4096, 4, 1), (4096, 4096, 2, 1), (11008, 4096, 4, 32)]
    if not quick:
        shapes += [(11008, 4096, 2, 1), (4096, 11008, 4, 32), (4096, 11008, 4, 1)]
    for out, cols, bits, G in shapes:
        label = f"{out}x{cols} b{bits} G={G}"
        try:
            s = _sk_random(sketch, rng, out, cols, G, bits, "float16")
            d0 = g.to_device(s, torch.zeros(1, device="cuda"))
            sk_bytes = d0.tables.numel() * 2 + d0.codes.numel()
            copies = max(2, min(16, int(3 * l2 // sk_bytes) + 1))
            ds = [g.DeviceSketch(d0.tables.clone(), d0.codes.clone(), cols, dtype="float16") for _ in range(copies)]
            w16 = g.dequantize(d0, "float16")
            wcopies = max(2, min(8, int(3 * l2 // (w16.numel() * 2)) + 1))
            ws = [w16.clone() for _ in range(wcopies)]
            x1 = torch.randn(1, cols, device="cuda", dtype=torch.float16)
            # GEMV, batch 1: end to end (Python call), and the raw kernel call
            it = itertools.cycle(ds)
            ours, ours_b2b = _sk_best(lambda: g.matmul(x1, next(it)), torch)
            y = torch.empty(1, out, device="cuda", dtype=torch.float32)
            ext = g._ext("gpu_check")
            raw = itertools.cycle([d._tuple() for d in ds])
            kern, _ = _sk_best(lambda: ext.sketch_matmul(next(raw), x1.data_ptr(), 1, 1, y.data_ptr(),
                                                          torch.cuda.current_stream().cuda_stream), torch)
            wit = itertools.cycle(ws)
            mv, _ = _sk_best(lambda: torch.mv(next(wit), x1[0]), torch)
            dit = itertools.cycle(ds)
            deq, _ = _sk_best(lambda: F.linear(x1, g.dequantize(next(dit), "float16")), torch)
            floor = (sk_bytes + cols * 2 + out * 4) / bw
            speed = mv / kern
            verdict = f"{speed:.2f}x torch.mv" + ("" if speed >= 2.0 else " (below 2x)")
            verdict += f"; {deq / kern:.1f}x dequantize+cuBLAS"
            note = (f"kernel {kern * 1e6:.1f} us (floor {floor * 1e6:.1f} us at copy bandwidth), Python call "
                    f"{ours * 1e6:.1f} us ({ours_b2b * 1e6:.1f} back to back); torch.mv fp16 {mv * 1e6:.1f} us, "
                    f"dequantize+F.linear {deq * 1e6:.1f} us; {copies} sketch copies, {wcopies} fp16 copies")
            SK_RESULTS.append((f"sketch GEMV batch 1 {label}", verdict, kern, mv, note))
            log(f"sketch GEMV batch 1 {label}: {verdict}; {note}")
            # GEMM batches
            for n in (16, 128):
                xb = torch.randn(n, cols, device="cuda", dtype=torch.float16)
                it = itertools.cycle(ds)
                t_ours, _ = _sk_best(lambda: g.matmul(xb, next(it)), torch)
                wit = itertools.cycle(ws)
                t_ref, _ = _sk_best(lambda: F.linear(xb, next(wit)), torch)
                SK_RESULTS.append((f"sketch matmul batch {n} {label}", f"{t_ref / t_ours:.2f}x F.linear fp16",
                                   t_ours, t_ref, "CUDA cores, float32 (F.linear: fp16 tensor cores)"))
                log(f"sketch matmul batch {n} {label}: ours {t_ours * 1e6:.1f} us, F.linear fp16 {t_ref * 1e6:.1f} us")
            # grad_tables vs the dense route (gy^T x, then a scatter-add into the bins), with peak memory
            n = 128 if quick else 512
            xb = torch.randn(n, cols, device="cuda", dtype=torch.float16)
            gyb = torch.randn(n, out, device="cuda", dtype=torch.float16)
            codes = s.unpacked_codes().astype(np.int64)
            K = 1 << bits
            idx = (codes + (np.arange(out)[:, None] * G + np.arange(cols)[None, :] // (cols // G)) * K).reshape(-1)
            idx_d = torch.from_numpy(idx).cuda()
            del codes, idx

            def dense_route():
                dense = (gyb.t() @ xb).float().reshape(-1)
                return torch.zeros(out * G * K, device="cuda").index_add_(0, idx_d, dense).view(out, G, K)

            peaks = []
            for fn in (lambda: g.grad_tables(xb, gyb, ds[0]), dense_route):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                r = fn()
                torch.cuda.synchronize()
                peaks.append(torch.cuda.max_memory_allocated() - base)
                del r
            diff = _kv_rel(g.grad_tables(xb, gyb, ds[0]).cpu().numpy(), dense_route().cpu().numpy())
            it = itertools.cycle(ds)
            t_ours, _ = _sk_best(lambda: g.grad_tables(xb, gyb, next(it)), torch)
            t_dense, _ = _sk_best(dense_route, torch)
            dense_bytes = out * cols * 4
            mem_ok = peaks[0] < dense_bytes / 4
            ok &= mem_ok and diff < 1e-2
            verdict = (f"peak {peaks[0] / 2**20:.1f} MiB vs dense {peaks[1] / 2**20:.1f} MiB"
                       + ("" if mem_ok else " (NOT below a quarter of the dense gradient) FAIL")
                       + f"; rel diff to dense route {diff:.1e}" + ("" if diff < 1e-2 else " FAIL"))
            SK_RESULTS.append((f"sketch grad_tables n={n} {label}", verdict, t_ours, t_dense,
                               "dense route: fp16 gy^T x then index_add_ (fp32), index precomputed"))
            log(f"sketch grad_tables n={n} {label}: {verdict}; ours {t_ours * 1e3:.3f} ms, "
                f"dense {t_dense * 1e3:.3f} ms")
            del idx_d
            it = itertools.cycle(ds)
            t_ours, _ = _sk_best(lambda: g.grad_input(gyb, next(it)), torch)
            wit = itertools.cycle(ws)
            t_ref, _ = _sk_best(lambda: gyb @ next(wit), torch)
            SK_RESULTS.append((f"sketch grad_input n={n} {label}", f"{t_ref / t_ours:.2f}x torch fp16", t_ours, t_ref,
                               "CUDA cores, float32"))
            log(f"sketch grad_input n={n} {label}: ours {t_ours * 1e3:.3f} ms, gy @ W fp16 {t_ref * 1e3:.3f} ms")
            del ds, ws, w16, d0
            torch.cuda.empty_cache()
        except Exception as exc:
            import traceback

            log(f"sketch speed {label}: exception\n{traceback.format_exc()}")
            SK_RESULTS.append((f"sketch speed {label}", f"ERROR {type(exc).__name__}", None, None, ""))
            ok = False
    return ok


# ------------------------------------------------------------------ tokens

TOKENS_RESULTS = []


def _tokens_page(rng, B, N, D, near=0.1):
    """Page-like keys: blank runs (exact copies, a growing fraction per sub-image), near-copies, distinct tokens."""
    import numpy as np

    x = rng.standard_normal((B, N, D), dtype=np.float32)
    blank = rng.standard_normal(D, dtype=np.float32)
    for b in range(B):
        x[b, rng.random(N) < (b + 1) / (B + 1)] = blank
        m = rng.random(N) < near
        x[b, m] = blank + 1e-4 * rng.standard_normal((int(m.sum()), D), dtype=np.float32)
    return x


def _tokens_torch(torch, x, k):
    """The obvious torch pipeline: normalize, bmm (the N x N matrix), diagonal masked, amax / topk."""
    xn = torch.nn.functional.normalize(x, dim=-1)
    s = torch.bmm(xn, xn.transpose(1, 2))
    s.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    if k == 1:
        v, i = s.max(dim=-1)
        return i[..., None], v[..., None]
    v, i = s.topk(k, dim=-1)
    return i, v


def _tokens_speed(tk, g, torch, rng, quick):
    """most_similar on the device against torch's normalize + bmm + amax/topk; time and peak memory."""
    import numpy as np

    ok = True
    B, N, D = 9, 1024, 1024
    for name, make in (("random", lambda: rng.standard_normal((B, N, D), dtype=np.float32)),
                       ("page-like", lambda: _tokens_page(rng, B, N, D))):
        base = make()
        for dt in (torch.float32, torch.float16):
            x = torch.from_numpy(base).to("cuda", dt)
            for k in ((1, 32) if not quick else (1,)) if name == "random" else (1,):
                label = f"tokens top-{k} {name} [{B}, {N}, {D}] {str(dt).replace('torch.', '')}"
                try:
                    gi, gv = tk.most_similar(x, k=k)
                    ti, tv = _tokens_torch(torch, x, k)
                    ci, cv = tk.most_similar(_kv_host(x).astype(np.float32), k=k)
                    exact = bool(np.array_equal(_kv_host(gi), ci) and np.array_equal(_kv_host(gv), cv))
                    agree = float(np.mean(_kv_host(ti)[..., 0] == ci[..., 0]))
                    ok &= exact
                    ours, _ = _kv_time(lambda: tk.most_similar(x, k=k), torch, reps=10 if quick else 20)
                    theirs, _ = _kv_time(lambda: _tokens_torch(torch, x, k), torch, reps=10 if quick else 20)
                    mem = []
                    for fn in (lambda: tk.most_similar(x, k=k), lambda: _tokens_torch(torch, x, k)):
                        torch.cuda.synchronize()
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                        before = torch.cuda.memory_allocated()
                        out = fn()
                        torch.cuda.synchronize()
                        mem.append(torch.cuda.max_memory_allocated() - before)
                        del out
                    note = (f"peak MiB ccomp {mem[0] / 2**20:.1f} / torch {mem[1] / 2**20:.1f} "
                            f"(N x N float32: {B * N * N * 4 / 2**20:.1f}); torch top-1 = exact on {agree:.4f} of rows")
                    log(f"{label}: ccomp {ours * 1e3:.3f} ms (exact: {exact}), torch {theirs * 1e3:.3f} ms, "
                        f"{theirs / ours:.2f}x; {note}; overflow rows {g.last_stats.get('overflow_rows')}")
                    TOKENS_RESULTS.append((label, "bit-exact" if exact else "MISMATCH", ours, theirs, note,
                                           f"{g.last_stats.get('overflow_rows')}"))
                except Exception:
                    import traceback

                    log(f"{label}: exception\n{traceback.format_exc()}")
                    TOKENS_RESULTS.append((label, "FAILED", None, None, "", ""))
                    ok = False
            torch.cuda.empty_cache()
    return ok


def _tokens_table():
    if not TOKENS_RESULTS:
        return []
    lines = ["", "ccomp.tokens most_similar on the device (exact float64-defined top-k); ratio = torch / ccomp "
             "(torch: normalize + bmm + masked amax/topk, same dtype, not exact)",
             "| case | vs CPU core | ccomp ms | torch ms | ratio | memory / note | overflow rows |",
             "|---|---|---|---|---|---|---|"]
    for name, verdict, ours, theirs, note, over in TOKENS_RESULTS:
        ratio = f"{theirs / ours:.2f}x" if theirs and ours else "-"
        lines.append(f"| {name} | {verdict} | {'-' if ours is None else f'{ours * 1e3:.3f}'} | "
                     f"{'-' if theirs is None else f'{theirs * 1e3:.3f}'} | {ratio} | {note} | {over} |")
    return lines


# ------------------------------------------------------------------ timing against torch


def _torch():
    """torch when it can use the GPU, else None (logged): the timings against torch are then skipped."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")
            return torch
        log("torch sees no GPU: the timings against torch are skipped")
    except Exception as exc:
        log("torch with CUDA unavailable: the timings against torch are skipped:", exc)
    return None


def _timed(section, fn, results, error_row):
    """Runs one area's timing (fn() -> ok); an exception is logged and becomes a failed row."""
    import traceback

    t = time.time()
    try:
        ok = fn()
    except Exception:
        log(f"{section} timing: exception\n{traceback.format_exc()}")
        results.append(error_row)
        ok = False
    log(f"{section}: timing took {time.time() - t:.1f}s")
    return ok


def time_kv(torch):
    import numpy as np

    import ccomp.kv as kv
    from ccomp import _kv_gpu as g

    return _timed("kv", lambda: _kv_speed(kv, g, torch, np.random.default_rng(2024), QUICK), KV_RESULTS,
                  ("kv timing", "ERROR (see log)", None, None, ""))


def time_sketch(torch):
    import numpy as np

    import ccomp.sketch as sketch
    from ccomp import _sketch_gpu as g

    return _timed("sketch", lambda: _sk_speed(sketch, g, torch, np.random.default_rng(2025), QUICK), SK_RESULTS,
                  ("sketch timing", "ERROR (see log)", None, None, ""))


def time_tokens(torch):
    import numpy as np

    import ccomp.tokens as tk
    from ccomp import _tokens_gpu as g

    return _timed("tokens", lambda: _tokens_speed(tk, g, torch, np.random.default_rng(7), QUICK), TOKENS_RESULTS,
                  ("tokens timing", "ERROR (see log)", None, None, "", ""))


def table():
    lines = ["", "| suite | result | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {verdict} | {seconds:.0f} |" for name, verdict, seconds in SUITE]
    if ROWS:
        lines += ["", "| kernel | vs CPU reference | ccomp s | torch s | ratio |", "|---|---|---|---|---|"]
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
    if KV_RESULTS:
        lines += ["", "ccomp.kv: ratio = baseline / ccomp (quantize: the time a device copy of the same bytes takes; "
                  "attention: torch SDPA over the fp16 cache); times per call, back to back",
                  "| case | vs CPU reference | ccomp ms | baseline ms | ratio | note |", "|---|---|---|---|---|---|"]
        for name, verdict, ours, theirs, note in KV_RESULTS:
            ratio = f"{theirs / ours:.2f}x" if theirs and ours else "-"
            lines.append(f"| {name} | {verdict} | {'-' if ours is None else f'{ours * 1e3:.3f}'} | "
                         f"{'-' if theirs is None else f'{theirs * 1e3:.3f}'} | {ratio} | {note} |")
    if SK_RESULTS:
        lines += ["", "ccomp.sketch: ratio = baseline / ccomp, times per call (CUDA graph replay where it works); "
                  "GEMV time = the raw kernel call",
                  "| case | verdict | ccomp ms | baseline ms | ratio | note |", "|---|---|---|---|---|---|"]
        for name, verdict, ours, theirs, note in SK_RESULTS:
            ratio = f"{theirs / ours:.2f}x" if theirs and ours else "-"
            lines.append(f"| {name} | {verdict} | {'-' if ours is None else f'{ours * 1e3:.4f}'} | "
                         f"{'-' if theirs is None else f'{theirs * 1e3:.4f}'} | {ratio} | {note} |")
    return lines + _tokens_table()


def main(argv=None):
    ap = argparse.ArgumentParser(description="build ccomp, run pytest -m gpu, compute-sanitizer and the timings")
    ap.add_argument("areas", nargs="*", help=f"some of {', '.join(AREAS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller timing shapes")
    ap.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    ap.add_argument("--no-sanitizer", action="store_true", help="skip the compute-sanitizer runs")
    ap.add_argument("--no-timing", action="store_true", help="skip the timings against torch")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds for each pytest or sanitizer run")
    args = ap.parse_args(argv)
    unknown = [a for a in args.areas if a not in AREAS]
    if unknown:
        ap.error(f"unknown area {unknown[0]!r} (expected some of {', '.join(AREAS)})")
    areas = args.areas or AREAS
    cuda = build()
    mod = cuda._cuda
    count, reason = mod.device_count()
    runtime, driver = mod.versions()
    log(f"CUDA runtime {runtime}, driver {driver}; devices: {count} {reason}")
    if count == 0:
        log("no usable CUDA device:", reason)
        return 1
    for i in range(count):
        log("device", i, mod.device_name(i))
    if cuda.emulated():
        log("the device is ccomp's SIMT emulator: timings mean nothing here (make simt-py runs the tests)")
    files = [TEST_FILES[a] for a in areas]
    ok = True
    if not args.no_tests:
        ok &= run_tests(files, "pytest -m gpu (real shapes)", "pytest_gpu.log", timeout=args.timeout)
    if not args.no_sanitizer:
        ok &= run_sanitizers(files, args.timeout)
    if not args.no_timing:
        if "iota" in areas:
            ok &= check_iota(mod)
        if "ac" in areas:
            ok &= check_ac()
        torch = _torch() if {"kv", "sketch", "tokens"} & set(areas) else None
        if torch is not None:
            for area, fn in (("kv", time_kv), ("sketch", time_sketch), ("tokens", time_tokens)):
                if area in areas:
                    ok &= fn(torch)
    lines = table()
    lines.append(f"\nOVERALL: {'PASS' if ok else 'FAIL'}")
    print("\n".join(lines), file=LOG, flush=True)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

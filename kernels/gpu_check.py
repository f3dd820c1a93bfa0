#!/usr/bin/env python3
"""GPU check for ccomp: build, compare every kernel with the CPU reference, time against torch.

Run on a machine with an NVIDIA GPU from the repository root:

    python3 kernels/gpu_check.py            # full log under $OUT (or ./gpu_check_out), table last

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
    obj = os.path.join(tmp, "device.o")
    nvcc = os.environ.get("NVCC", "nvcc")
    if run([nvcc, "-c", "kernels/device.cu", "-o", obj, "-O2", "-std=c++17", "-Ikernels", "-Xcompiler", "-fPIC",
            "-gencode=arch=compute_90,code=sm_90"]) != 0:
        raise SystemExit("nvcc failed: see " + LOG.name)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = os.path.join(tmp, "_cuda" + suffix)
    cuda_home = os.path.dirname(os.path.dirname(os.path.realpath(subprocess.check_output(["which", nvcc],
                                                                                         text=True).strip())))
    if run(["gcc", "-shared", "-fPIC", "-O2", "-Ikernels", "-I" + sysconfig.get_paths()["include"],
            "csrc/python/cuda_module.c", obj, "-o", so, "-L" + os.path.join(cuda_home, "lib64"),
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


def main():
    mod, how = build()
    count, reason = mod.device_count()
    runtime, driver = mod.versions()
    log(f"build: {how}; CUDA runtime {runtime}, driver {driver}; devices: {count} {reason}")
    if count == 0:
        log("no usable CUDA device:", reason)
        return 1
    for i in range(count):
        log("device", i, mod.device_name(i))
    ok = check_iota(mod)
    print("\n| kernel | vs CPU reference | ccomp s | torch s | ratio |")
    print("|---|---|---|---|---|")
    for name, verdict, ours, theirs in ROWS:
        ratio = f"{theirs / ours:.2f}x" if theirs else "-"
        print(f"| {name} | {verdict} | {ours:.6f} | {theirs if theirs is None else f'{theirs:.6f}'} | {ratio} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

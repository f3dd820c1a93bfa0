#!/usr/bin/env python3
"""Builds a copy of the ccomp package whose CUDA extension runs on the SIMT emulator (docs/gpu.md).

    python tools/simt_build.py [--out build/simt-py] [--check asan|race] [--jobs N]

Every kernel source is compiled by g++ as C++ against the emulator (kernels/simt/simt_cpu.h is
force-included; kernels/simt/include/cuda_runtime.h stands in for CUDA's, the toolkit's headers give
__half and __nv_bfloat16) and linked with the emulator's runtime (kernels/simt/*.cpp) and the _cuda
binding into OUT/ccomp/_cuda.  The kernel and binding sources, their headers and the shared flags are
tools/buildinfo.py's, the lists setup.py and the Makefile use; only the emulator's own flags are here.  OUT/ccomp is
a copy of python/ccomp with the _core extension built in place (`make install`), or built here when
there is none.
  --check asan (default): AddressSanitizer + UBSan everywhere: out-of-bounds device and shared
    accesses.  Run the tests with libasan preloaded (the interpreter is not instrumented) and
    PYTHONMALLOC=malloc, as `make simt-py` does.
  --check race: the kernels with -fsanitize=thread -DCCOMP_SIMT_RACECHECK, linked without TSan's
    runtime: the emulator's own hooks report shared-memory races between barriers (no ASan there).
Objects are kept in OUT-obj/CHECK and rebuilt when a source or header changes.
"""
import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import buildinfo  # noqa: E402  the one list of sources and flags (setup.py and the Makefile read it too)

SIMT = os.path.join("kernels", "simt")
SAN = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
# the kernels and the runtime continue after an ASan report (with halt_on_error=0): the emulator turns
# it into a failed launch, which the test sees as a RuntimeError naming the thread
SAN_RECOVER = SAN + ["-fsanitize-recover=address"]
UBSAN = ["-fsanitize=undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
RACE = ["-fsanitize=thread", "-DCCOMP_SIMT_RACECHECK"]  # the kernels only: the runtime supplies the hooks
# What the emulator adds to the build's own flags: position-independent code for the module, debug
# information for the reports, -O1 (sanitizers), and the emulator's defines.
SIMT_COMMON = ["-fPIC", "-g", "-O1"]
# The kernels as nvcc compiles them (language, include folders; not nvcc's optimisation level), with the
# core's warnings and floating-point semantics, as C++ against the emulator.
CXXFLAGS = ([f for f in buildinfo.NVCC_FLAGS if not f.startswith("-O")] + buildinfo.C_WARNINGS + ["-Werror"]
            + buildinfo.C_SEMANTICS + buildinfo.C_EXTENSION + SIMT_COMMON + ["-Wno-unknown-pragmas", "-DCCOMP_SIMT"])
# The _cuda binding with the real extension's flags (setup.py's, warnings as errors), plus the above.
CFLAGS = buildinfo.c_flags(werror=True) + SIMT_COMMON
BINDING_INCLUDES = ["kernels", "csrc/python"] + buildinfo.C_INCLUDE


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def newest(paths):
    return max((os.path.getmtime(os.path.join(ROOT, p)) for p in paths), default=0.0)


def compile_one(cmd, src, obj, deps_time):
    """Runs cmd (compiling src into obj) unless obj is newer than src and every header; returns (src, log)."""
    if os.path.exists(obj) and os.path.getmtime(obj) > max(deps_time, os.path.getmtime(os.path.join(ROOT, src))):
        return src, None
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {src} failed:\n$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return src, proc.stderr


def cuda_include():
    """The CUDA toolkit's include folder (cuda_fp16.h, cuda_bf16.h, vector_types.h: host-capable headers)."""
    sys.path.insert(0, ROOT)
    from setup import find_nvcc  # the build's own search: CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda

    nvcc = find_nvcc()
    if nvcc is None:
        sys.exit("simt: the CUDA toolkit's headers are needed (cuda_fp16.h): set CUDA_HOME or put nvcc on PATH")
    return os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include")


def undefined_tsan_hooks(so):
    """The -fsanitize=thread hooks the module calls and nothing in it defines (TSan's runtime is not linked)."""
    proc = subprocess.run(["nm", "-D", "--undefined-only", so], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"simt: nm could not list the undefined symbols of {so}:\n{proc.stderr}")
    names = (line.split()[-1] for line in proc.stdout.splitlines() if line.strip())
    return sorted({n for n in names if n.startswith("__tsan_")})


def copy_package(out):
    """OUT/ccomp: python/ccomp without its extension modules, plus the _core built in place (or built here)."""
    dst = os.path.join(out, "ccomp")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "python", "ccomp"), dst,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    core = os.path.join(ROOT, "python", "ccomp", "_core" + suffix)
    if os.path.exists(core):
        shutil.copy2(core, dst)
        return
    print("simt: no in-place _core (make install builds it); building one", file=sys.stderr)
    env = dict(os.environ, CCOMP_CUDA="0")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", out, "--build-temp",
                    out + "-core-tmp"], cwd=ROOT, env=env, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="build/simt-py", help="the package copy goes to OUT/ccomp (default build/simt-py)")
    ap.add_argument("--check", choices=("asan", "race"), default="asan",
                    help="asan: ASan + UBSan (out of bounds); race: the shared-memory race checker")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args(argv)
    out = os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out
    if not os.path.exists(os.path.join(ROOT, SIMT, "simt_cpu.h")):
        sys.exit(f"simt: {SIMT}/simt_cpu.h is missing: the emulator is not in this checkout")
    obj_dir = os.path.join(out + "-obj", args.check)
    os.makedirs(obj_dir, exist_ok=True)
    if args.check == "asan":
        kernel_san, runtime_san, binding_san, link_san = SAN_RECOVER, SAN_RECOVER, SAN, SAN
    else:
        kernel_san, runtime_san, binding_san, link_san = RACE + UBSAN, UBSAN, UBSAN, UBSAN

    kernels = buildinfo.cuda_sources(ROOT)
    runtime = rel(f"{SIMT}/*.cpp")
    bindings = buildinfo.cuda_binding_sources(ROOT)
    headers = buildinfo.cuda_headers(ROOT) + buildinfo.core_headers(ROOT) + rel(f"{SIMT}/include/*.h")
    deps_time = max(newest(headers), os.path.getmtime(os.path.abspath(__file__)))
    py_inc = sysconfig.get_paths()["include"]
    # the emulator's cuda_runtime.h first, then the toolkit's host headers (the build's own come with CXXFLAGS)
    includes = ["-I" + os.path.join(SIMT, "include"), "-I" + cuda_include()]
    cxx = os.environ.get("CXX", "g++")
    jobs = []
    for src in kernels:
        obj = os.path.join(obj_dir, os.path.basename(src) + ".o")
        jobs.append(([cxx, "-x", "c++", *CXXFLAGS, *kernel_san, *includes, "-include", os.path.join(SIMT, "simt_cpu.h"),
                      "-c", src, "-o", obj], src, obj))
    for src in runtime:
        obj = os.path.join(obj_dir, os.path.basename(src) + ".o")
        # default visibility: ccomp_simt_report and the other control functions stay reachable (ctypes)
        flags = [f for f in CXXFLAGS if f != "-fvisibility=hidden"]
        jobs.append(([cxx, *flags, *runtime_san, *includes, "-c", src, "-o", obj], src, obj))
    for src in bindings:
        obj = os.path.join(obj_dir, os.path.basename(src) + ".o")
        jobs.append(([os.environ.get("CC", "gcc"), *CFLAGS, *binding_san, *["-I" + d for d in BINDING_INCLUDES],
                      "-I" + py_inc, "-c", src, "-o", obj], src, obj))
    # the largest files first, so that the slowest compile does not start last
    jobs.sort(key=lambda j: -os.path.getsize(os.path.join(ROOT, j[1])))
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(compile_one, cmd, src, obj, deps_time) for cmd, src, obj in jobs]
        for fut in concurrent.futures.as_completed(futures):
            src, log = fut.result()
            if log:
                sys.stderr.write(log)
            print(f"simt: {src} {'compiled' if log is not None else 'up to date'}", file=sys.stderr)

    copy_package(out)
    so = os.path.join(out, "ccomp", "_cuda" + sysconfig.get_config_var("EXT_SUFFIX"))
    link = [cxx, "-shared", *link_san, "-o", so, *[j[2] for j in jobs], "-lpthread"]
    subprocess.run(link, cwd=ROOT, check=True)
    if args.check == "race":
        missing = undefined_tsan_hooks(so)
        if missing:
            sys.exit(f"simt: the race build's runtime (kernels/simt/simt_runtime.cpp) lacks {', '.join(missing)}, "
                     f"which the instrumented kernels call: {os.path.relpath(so, ROOT)} would not load")
    what = "ASan + UBSan" if args.check == "asan" else "the race checker + UBSan"
    print(f"simt: {os.path.relpath(so, ROOT)} (kernels on the SIMT emulator, {what})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

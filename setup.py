"""Build of ccomp's C extension (always) and CUDA extension (when nvcc is found).

Environment switches:
  CCOMP_CUDA=auto|0|1   auto (default): build ccomp._cuda when nvcc exists; 1: fail without nvcc; 0: skip
  CCOMP_CUDA_ARCH       nvcc -gencode list (default: sm_80, sm_90 and compute_90 PTX)
  CCOMP_WERROR=1        compile C with -Werror (CI)
  CCOMP_DEBUG=1         -O0 -g
"""
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
DEFAULT_ARCH = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]


def rel(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def c_flags():
    flags = ["-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-fvisibility=hidden",
             "-ffp-contract=off"]
    flags += ["-O0", "-g"] if os.environ.get("CCOMP_DEBUG") == "1" else ["-O2"]
    if os.environ.get("CCOMP_WERROR") == "1":
        flags.append("-Werror")
    return flags


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = "/usr/local/cuda/bin/nvcc"
    return default if os.path.exists(default) else None


def cuda_mode():
    mode = os.environ.get("CCOMP_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"CCOMP_CUDA must be auto, 0 or 1, got {mode!r}")
    return mode


core_sources = rel("csrc/util/*.c") + rel("csrc/zipfit/*.c") + rel("csrc/ac/*.c") + rel("csrc/kv/*.c") + rel("csrc/sketch/*.c") + rel("csrc/tokens/*.c")
binding_sources = [p for p in rel("csrc/python/*.c") if not p.endswith("cuda_module.c")]

core = Extension(
    "ccomp._core",
    sources=core_sources + binding_sources,
    include_dirs=["csrc/include", "csrc/python", numpy.get_include()],
    libraries=["z", "lz4", "zstd", "pthread"],
    define_macros=[("CCOMP_VERSION", f'"{VERSION}"')],
    extra_compile_args=c_flags(),
)

cuda = Extension(
    "ccomp._cuda",
    sources=["csrc/python/cuda_module.c"],
    include_dirs=["kernels"],
    extra_compile_args=c_flags(),
)


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_compile(compiler, workers):
    """Make compiler.compile build an extension's C sources on `workers` threads (each runs its own cc
    process); distutils compiles them one after another."""
    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=0, extra_preargs=None,
                extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj):
            if obj in build:
                src, ext = build[obj]
                compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(one, objects))  # list(): a failed compile raises here
        return objects

    compiler.compile = compile


class BuildExt(build_ext):
    """Compiles the C sources on every core, and kernels/*.cu with nvcc, linked into ccomp._cuda."""

    def build_extensions(self):
        parallel_compile(self.compiler, min(cpu_count(), 8))
        mode = cuda_mode()
        nvcc = find_nvcc()
        if mode == "1" and nvcc is None:
            raise RuntimeError("CCOMP_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
        if mode == "0" or nvcc is None:
            self.extensions = [e for e in self.extensions if e.name != "ccomp._cuda"]
            if mode == "auto":
                print("ccomp: nvcc not found, building without CUDA", file=sys.stderr)
        else:
            self._prepare_cuda(nvcc)
        super().build_extensions()

    @staticmethod
    def _wait_nvcc(job):
        proc, src = job
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, f"nvcc {src}")

    def _prepare_cuda(self, nvcc):
        cuda_home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        arch = os.environ.get("CCOMP_CUDA_ARCH", "").split() or DEFAULT_ARCH
        out_dir = os.path.join(self.build_temp, "kernels")
        os.makedirs(out_dir, exist_ok=True)
        objects, jobs = [], []
        # one nvcc per CPU (at most): the CUDA files are independent and each compile is single-threaded
        parallel = max(1, min(cpu_count(), 4))
        for src in rel("kernels/*.cu"):
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj, "-O2", "-std=c++17", "-Ikernels", "-Icsrc/include",
                   "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden"] + arch
            print(" ".join(cmd), file=sys.stderr)
            while len(jobs) >= parallel:
                self._wait_nvcc(jobs.pop(0))
            jobs.append((subprocess.Popen(cmd, cwd=HERE), src))
            objects.append(obj)
        while jobs:
            self._wait_nvcc(jobs.pop(0))
        lib_dirs = [d for d in (os.path.join(cuda_home, "lib64"),
                                os.path.join(cuda_home, "targets", "x86_64-linux", "lib"),
                                os.path.join(cuda_home, "targets", "sbsa-linux", "lib")) if os.path.isdir(d)]
        for ext in self.extensions:
            if ext.name == "ccomp._cuda":
                ext.extra_objects = objects
                ext.library_dirs = lib_dirs
                # The static runtime keeps the module loadable where libcudart.so is not on the
                # loader path; it finds the driver (libcuda) at run time.
                ext.libraries = ["cudart_static", "dl", "rt", "pthread", "stdc++"]
                ext.define_macros = [("CCOMP_CUDA_VERSION_BUILD", "1")]


setup(
    version=VERSION,
    ext_modules=[core, cuda],
    cmdclass={"build_ext": BuildExt},
)

"""Build of ccomp's C extension (always) and CUDA extension (when nvcc is found).

Environment switches:
  CCOMP_CUDA=auto|0|1   auto (default): build ccomp._cuda when nvcc exists; 1: fail without nvcc; 0: skip
  CCOMP_CUDA_ARCH       nvcc -gencode list (default: sm_80, sm_90 and compute_90 PTX)
  CCOMP_WERROR=1        compile C with -Werror (CI)
  CCOMP_DEBUG=1         -O0 -g

Builds happen in a fresh temporary folder (nothing is written into the checkout and nothing
stale is reused) unless a build folder is named: `setup.py build --build-base DIR` or CCOMP_BUILD_DIR.
"""
import atexit
import concurrent.futures
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy
from setuptools import Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext
from setuptools.command.egg_info import egg_info

HERE = os.path.dirname(os.path.abspath(__file__))


def load_buildinfo():
    """tools/buildinfo.py, the one list of sources and flags (the Makefile reads it too), loaded by path."""
    spec = importlib.util.spec_from_file_location("ccomp_buildinfo", os.path.join(HERE, "tools", "buildinfo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


buildinfo = load_buildinfo()
VERSION = "0.1.0"
DEFAULT_ARCH = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]


def c_flags():
    return buildinfo.c_flags(debug=os.environ.get("CCOMP_DEBUG") == "1", werror=os.environ.get("CCOMP_WERROR") == "1")


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


core = Extension(
    "ccomp._core",
    sources=buildinfo.core_sources(HERE) + buildinfo.binding_sources(HERE),
    depends=buildinfo.core_headers(HERE),
    include_dirs=buildinfo.C_INCLUDE + ["csrc/python", numpy.get_include()],
    libraries=list(buildinfo.LIBRARIES),
    define_macros=[("CCOMP_VERSION", f'"{VERSION}"')],
    extra_compile_args=c_flags(),
)

cuda = Extension(
    "ccomp._cuda",
    sources=buildinfo.cuda_binding_sources(HERE),
    depends=buildinfo.cuda_sources(HERE) + buildinfo.cuda_headers(HERE) + ["csrc/python/cuda_binding.h"],
    include_dirs=["kernels", "csrc/python"] + buildinfo.C_INCLUDE,
    extra_compile_args=c_flags(),
)


# (header, what it belongs to); the package names per platform follow
REQUIRED_HEADERS = [("zlib.h", "zlib"), ("lz4frame.h", "lz4"), ("zstd.h", "zstd"), ("Python.h", "python")]
PACKAGES = {
    "Debian/Ubuntu": ("sudo apt-get install", {"zlib": "zlib1g-dev", "lz4": "liblz4-dev", "zstd": "libzstd-dev",
                                               "python": "python3-dev", "cc": "build-essential"}),
    "Fedora/RHEL": ("sudo dnf install", {"zlib": "zlib-devel", "lz4": "lz4-devel", "zstd": "libzstd-devel",
                                         "python": "python3-devel", "cc": "gcc"}),
    "Homebrew": ("brew install", {"zlib": "zlib", "lz4": "lz4", "zstd": "zstd", "python": "python",
                                  "cc": None}),
    "conda": ("conda install -c conda-forge", {"zlib": "zlib", "lz4": "lz4-c", "zstd": "zstd", "python": "python",
                                               "cc": "c-compiler"}),
}


def missing_headers(cc, include_dirs, headers=REQUIRED_HEADERS):
    """The (header, owner) pairs that `cc` (a command list, flags included) cannot find with these -I folders.

    Returns [("", "cc")] when the compiler itself does not run."""
    missing = []
    for header, owner in headers:
        cmd = list(cc) + ["-E", "-x", "c", "-"] + ["-I" + d for d in include_dirs]
        try:
            proc = subprocess.run(cmd, input=f"#include <{header}>\n", capture_output=True, text=True)
        except OSError:
            return [("", "cc")]
        if proc.returncode != 0:
            missing.append((header, owner))
    return missing


def missing_message(missing):
    """One message naming what is missing and the packages that provide it on each platform."""
    owners = [owner for _header, owner in missing]
    if owners == ["cc"]:
        what = "no working C compiler was found"
    else:
        what = "these headers were not found: " + ", ".join(f"{h} ({o})" for h, o in missing)
    lines = [f"ccomp cannot be built: {what}.", "Install the development packages, then build again:"]
    for platform, (command, names) in PACKAGES.items():
        pkgs = [names[o] for o in owners if names.get(o)]
        if pkgs:
            lines.append(f"  {platform + ':':15s} {command} {' '.join(dict.fromkeys(pkgs))}")
    if "cc" in owners:
        lines.append("  macOS:          xcode-select --install")
    lines.append("Headers installed elsewhere: CFLAGS=-I/their/include LDFLAGS=-L/their/lib pip install ...")
    return "\n".join(lines)


def announce(message):
    """A line the user sees even under pip, which keeps a build's output to itself unless -v is given."""
    print(message, file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        return
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(message + "\n")
    except OSError:
        pass  # no terminal (CI, a pipe): the line stays in the build log


def temp_dir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


class Build(build):
    """Builds in a fresh temporary folder unless one is named, so the checkout stays clean and no
    earlier build's files (a _cuda module built before CCOMP_CUDA=0) end up in a wheel."""

    def finalize_options(self):
        if self.build_base == "build":  # the default, not given on the command line
            self.build_base = os.environ.get("CCOMP_BUILD_DIR") or temp_dir("ccomp-build-")
        super().finalize_options()


class EggInfo(egg_info):
    """Writes ccomp.egg-info to a temporary folder, not python/ (the sdist carries PKG-INFO at its root)."""

    def finalize_options(self):
        if self.egg_base is None:
            self.egg_base = temp_dir("ccomp-egg-info-")
        super().finalize_options()


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
        self._check_headers()
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
            announce(f"ccomp: compiling the CUDA kernels with {nvcc}: this takes several minutes "
                     "(about 5 on 2 cores); set CCOMP_CUDA=0 to build without them")
            start = time.monotonic()
            self._prepare_cuda(nvcc)
            announce(f"ccomp: CUDA kernels compiled in {time.monotonic() - start:.0f} s")
        super().build_extensions()

    def _check_headers(self):
        """Stops with one message naming the packages to install, before the compiler fails on #include."""
        include_dirs = list(self.include_dirs or [])
        for ext in self.extensions:
            if ext.name == "ccomp._core":
                include_dirs += ext.include_dirs
        include_dirs.append(sysconfig.get_paths()["include"])
        missing = missing_headers(self.compiler.compiler_so, include_dirs)
        if missing:
            sys.exit(missing_message(missing))

    def run(self):
        if self._switches_changed():
            self.force = True  # a reused build folder (CCOMP_BUILD_DIR) holds objects built with other switches
        super().run()
        if not any(e.name == "ccomp._cuda" for e in self.extensions):
            self._remove_stale_cuda()

    def _switches_changed(self):
        """Records the switches of this build in the build folder; True when they differ from the last build's."""
        keys = ("CCOMP_CUDA", "CCOMP_CUDA_ARCH", "CCOMP_DEBUG", "CCOMP_WERROR", "CUDA_HOME", "CUDA_PATH", "CC",
                "CFLAGS", "CPPFLAGS", "LDFLAGS")
        switches = "\n".join([sys.version] + [f"{k}={os.environ.get(k, '')}" for k in keys]) + "\n"
        stamp = os.path.join(self.build_temp, "ccomp-switches.txt")
        previous = None
        if os.path.exists(stamp):
            with open(stamp) as f:
                previous = f.read()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(switches)
        return previous != switches

    def _remove_stale_cuda(self):
        """A build without CUDA removes the _cuda module an earlier build left in a reused build folder
        (CCOMP_BUILD_DIR) or, in place (editable), in the package."""
        folders = [os.path.join(self.build_lib, "ccomp")]
        if self.inplace:
            folders.append(self.get_finalized_command("build_py").get_package_dir("ccomp"))
        for folder in folders:
            for path in glob.glob(os.path.join(folder, "_cuda.*")):
                print(f"ccomp: removing {path} (built earlier with CUDA; this build has none)", file=sys.stderr)
                os.remove(path)

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
        for src in buildinfo.cuda_sources(HERE):
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj] + buildinfo.NVCC_FLAGS + [
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


if __name__ == "__main__":  # pip and `python setup.py` run it as __main__; the tests import the helpers above
    setup(
        version=VERSION,
        ext_modules=[core, cuda],
        cmdclass={"build": Build, "build_ext": BuildExt, "egg_info": EggInfo},
    )

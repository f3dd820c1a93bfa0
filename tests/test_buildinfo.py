"""tools/buildinfo.py is the one list of sources and flags: setup.py and the Makefile both take theirs from it,
its globs pick up new files, and the Makefile runs every C test and every bench without naming them."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


buildinfo = load("ccomp_buildinfo_test", "tools/buildinfo.py")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
# a fresh make: not the answer or the job server of a make that runs these tests (`make test`)
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("CCOMP_BUILDINFO", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


def touch(root, *paths):
    for p in paths:
        full = os.path.join(root, p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write("\n")


def test_every_c_file_has_one_place():
    """Each csrc .c file is in exactly one of the core, the _core binding, the _cuda binding."""
    core = buildinfo.core_sources()
    binding = buildinfo.binding_sources()
    cuda = buildinfo.cuda_binding_sources()
    every = sorted(os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(os.path.join(ROOT, "csrc"))
                   for f in fs if f.endswith(".c"))
    assert sorted(core + binding + cuda) == every
    assert "csrc/python/module.c" in binding and "csrc/python/cuda_module.c" in cuda
    assert "csrc/util/frame.c" in core and not any(p.startswith("csrc/python/") for p in core)


def test_new_files_are_picked_up(tmp_path):
    """A new area folder, a new _core binding file, a new CUDA binding file and a new kernel file need no edit;
    a sub-folder of kernels/ (host tools) is a dependency, not a kernel."""
    touch(tmp_path, "csrc/util/a.c", "csrc/vq/kmeans.c", "csrc/vq/vq_internal.h", "csrc/include/ccomp/vq.h",
          "csrc/python/module.c", "csrc/python/zipfit_module.c", "csrc/python/cuda_module.c",
          "csrc/python/cuda_vq.c", "kernels/kv.cu", "kernels/kv_decode.cu", "kernels/launch.cuh",
          "kernels/simt/runtime.h", "kernels/simt/broken.cu")
    root = str(tmp_path)
    assert buildinfo.core_sources(root) == ["csrc/util/a.c", "csrc/vq/kmeans.c"]
    assert buildinfo.binding_sources(root) == ["csrc/python/module.c", "csrc/python/zipfit_module.c"]
    assert buildinfo.cuda_binding_sources(root) == ["csrc/python/cuda_module.c", "csrc/python/cuda_vq.c"]
    assert buildinfo.cuda_sources(root) == ["kernels/kv.cu", "kernels/kv_decode.cu"]
    assert "csrc/vq/vq_internal.h" in buildinfo.core_headers(root)
    assert {"kernels/launch.cuh", "kernels/simt/runtime.h", "csrc/include/ccomp/vq.h"} <= set(
        buildinfo.cuda_headers(root))


def test_setup_takes_its_lists_and_flags_from_buildinfo(monkeypatch):
    monkeypatch.delenv("CCOMP_DEBUG", raising=False)
    monkeypatch.setenv("CCOMP_WERROR", "1")
    setup = load("ccomp_setup_buildinfo_test", "setup.py")
    assert setup.core.sources == buildinfo.core_sources() + buildinfo.binding_sources()
    assert setup.cuda.sources == buildinfo.cuda_binding_sources()
    assert setup.core.depends == buildinfo.core_headers()
    assert setup.core.libraries == buildinfo.LIBRARIES
    flags = setup.core.extra_compile_args
    assert flags == buildinfo.c_flags(werror=True)
    for flag in ("-std=c11", "-ffp-contract=off", "-fvisibility=hidden", "-O2", "-Werror"):
        assert flag in flags


def make_vars(*names, extra=""):
    """The values the Makefile gives these variables (an extra makefile read after it prints them)."""
    rule = "print-vars:\n" + "".join(f"\t@echo '{n}=$({n})'\n" for n in names) + extra
    proc = subprocess.run(["make", "--no-print-directory", "-f", "Makefile", "-f", "-", "print-vars",
                           f"PYTHON={sys.executable}"], cwd=ROOT, input=rule, capture_output=True, text=True,
                          env=MAKE_ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


@needs_make
def test_makefile_reads_the_same_list():
    got = make_vars("CORE_SRC", "CORE_DEPS", "CFLAGS_C", "CFLAGS_FUZZ", "LIBS", "CUDA_SRC", "NVCC_FLAGS", "FUZZ_OBJ")
    assert got["CORE_SRC"].split() == buildinfo.core_sources()
    assert got["CORE_DEPS"].split() == buildinfo.core_headers()
    assert got["CFLAGS_C"].split() == buildinfo.test_c_flags() and "-Werror" in got["CFLAGS_C"].split()
    assert got["CFLAGS_FUZZ"].split() == buildinfo.fuzz_c_flags()
    assert got["LIBS"].split() == ["-l" + lib for lib in buildinfo.LIBRARIES]
    assert got["CUDA_SRC"].split() == buildinfo.cuda_sources()
    assert got["NVCC_FLAGS"].split() == buildinfo.NVCC_FLAGS
    # the fuzzers link the same core as the C tests
    assert got["FUZZ_OBJ"].split() == [re.sub(r"^csrc/(.*)\.c$", r"build/obj/fuzz/\1.o", p)
                                       for p in buildinfo.core_sources()]


@needs_make
def test_makefile_runs_every_c_test_and_bench():
    """`make -n`: ctest-deflate + ctest-rest run each tests/c/test_*.c once, asan each once, and bench runs
    every bench/*_bench.py and *_quality.py, and bench/model_loop.py."""
    tests = sorted(f[:-2] for f in os.listdir(os.path.join(ROOT, "tests", "c")) if re.match(r"test_.*\.c$", f))
    proc = subprocess.run(["make", "-n", "--no-print-directory", "ctest-deflate", "ctest-rest", "asan", "bench",
                           f"PYTHON={sys.executable}", "VENV=/nonexistent-venv"], cwd=ROOT, capture_output=True,
                          text=True, env=MAKE_ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ran = sorted(m.group(1) for line in lines for m in [re.match(r"build/ctest/(test_\w+)( |$)", line)] if m)
    assert ran == tests
    quick = [line for line in lines if re.match(r"ASAN_OPTIONS=\S+ build/asan/test_\w+", line)]
    assert sorted(re.search(r"build/asan/(test_\w+)", line).group(1) for line in quick) == tests
    assert "build/asan/test_kv --quick" in "\n".join(quick)
    assert any("build/asan/test_lz4_model --pairs 20000 " in line for line in quick)
    assert any(re.match(r"build/ctest/test_lz4_model --pairs \d+ \S*corpus", line) for line in lines)
    benches = sorted(f for f in os.listdir(os.path.join(ROOT, "bench")) if re.search(r"_(bench|quality)\.py$|^model_loop\.py$", f))
    assert len(benches) >= 6
    assert sorted(m.group(1) for line in lines for m in [re.search(r"python (bench/\S+\.py)", line)] if m) == \
        ["bench/" + b for b in benches]


def test_cli_answers_each_query():
    for query in buildinfo.QUERIES:
        out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "buildinfo.py"), query],
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == buildinfo.QUERIES[query](), query
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "buildinfo.py"), "nonsense"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr

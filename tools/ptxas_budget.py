"""Resource budgets of the CUDA kernels, checked without a GPU.

Compiles every kernels/*.cu for each real target (sm_80, sm_90) with `nvcc -cubin -Xptxas -v`, reads per
kernel what ptxas reports (registers, spill stores and loads, static shared memory, stack frame, constant
memory) and the `__launch_bounds__` nvcc wrote into the PTX (`.maxntid`), and checks them against the
committed table kernels/budgets.md, one row per kernel (a figure reads "52/54" where sm_80 and sm_90 differ):

- every kernel has a row and every row names a kernel;
- no measured figure exceeds its row (the table is the budget: a reviewed change runs `--update`);
- the launch fits the hardware: the row's threads per block within `__launch_bounds__` and 1024, the
  registers of a block within the 64K register file, static + dynamic shared memory within 48 KB, or
  within the per-block opt-in limit (227 KB on sm_90, 163 KB on sm_80) for kernels launched after
  cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize);
- kernels marked hot do not spill.

    python tools/ptxas_budget.py            # check (exit 1 with one line per failure)
    python tools/ptxas_budget.py --update   # rewrite the measured columns, add rows for new kernels,
                                            # drop rows of kernels that are gone
"""
import argparse
import concurrent.futures
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "kernels", "budgets.md")
ARCHES = ("sm_80", "sm_90")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import buildinfo  # noqa: E402  (tools/buildinfo.py: the one list of sources and flags)

# The flags setup.py compiles the kernels with (the -gencode list is replaced by one arch per compile).
NVCC_FLAGS = buildinfo.NVCC_FLAGS

MAX_THREADS = 1024
REGISTER_FILE = 65536  # 32-bit registers per SM, and the most one block may use (sm_80 and sm_90)
REGISTER_UNIT = 256  # registers are given to a warp in units of 256
MAX_REGISTERS = 255  # per thread
SMEM_DEFAULT = 48 * 1024  # static + dynamic shared memory per block without the opt-in
SMEM_OPT_IN = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}  # cudaDevAttrMaxSharedMemoryPerBlockOptin

MEASURED = ("regs", "spill_st", "spill_ld", "smem", "stack", "cmem")
POLICY = ("threads", "dyn_smem", "opt_in", "hot")
# Table columns: (header, field)
COLUMNS = (("kernel", "kernel"), ("file", "file"), ("threads", "threads"),
           ("dyn smem", "dyn_smem"), ("opt-in", "opt_in"), ("hot", "hot"), ("regs", "regs"),
           ("spill st", "spill_st"), ("spill ld", "spill_ld"), ("smem", "smem"), ("stack", "stack"),
           ("cmem", "cmem"))
FIGURE = {"regs": "registers", "spill_st": "spill stores (bytes)", "spill_ld": "spill loads (bytes)",
          "smem": "static shared memory (bytes)", "stack": "stack frame (bytes)",
          "cmem": "constant memory (bytes)"}
VERSION_PREFIX = "Measured with nvcc "


class BudgetError(Exception):
    """The table or the compiler output cannot be read."""


@dataclasses.dataclass
class Measure:
    """What ptxas reports for one kernel on one arch, plus its launch bounds from the PTX."""
    regs: int = 0
    spill_st: int = 0
    spill_ld: int = 0
    smem: int = 0
    stack: int = 0
    cmem: int = 0
    max_threads: int = 0  # .maxntid / .reqntid (x*y*z); 0 without __launch_bounds__
    min_blocks: int = 0  # .minnctapersm

    def figures(self):
        return tuple(getattr(self, f) for f in MEASURED)


@dataclasses.dataclass
class Row:
    """One kernel's row: how it is launched (reviewed by hand) and its budget per arch (measured)."""
    kernel: str
    file: str
    threads: object  # int, or None when not recorded
    dyn_smem: int = 0
    opt_in: bool = False
    hot: bool = False
    budget: dict = dataclasses.field(default_factory=dict)  # arch -> {figure: bytes or count}


# ------------------------------------------------------------------ parsing

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)")
_ITEM_SMEM = re.compile(r"(\d+) bytes smem$")
_ITEM_CMEM = re.compile(r"(\d+) bytes cmem\[\d+\]$")


def parse_ptxas(text):
    """ptxas -v output -> {(mangled kernel name, arch): Measure}.

    Reads the entry functions only: "Function properties" of a called (non-inlined) device function
    belong to no kernel, and its stack is already in the kernel's cumulative figures.
    """
    out = {}
    entry = None  # (name, arch) of the entry being compiled
    props_of_entry = False
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            entry = (m.group(1), m.group(2))
            if entry in out:
                raise BudgetError(f"ptxas reported kernel {entry[0]} twice for {entry[1]}")
            out[entry] = Measure()
            props_of_entry = False
            continue
        m = _PROPS.search(line)
        if m:
            props_of_entry = entry is not None and m.group(1) == entry[0]
            continue
        m = _FRAME.search(line)
        if m:
            if props_of_entry:
                cur = out[entry]
                cur.stack, cur.spill_st, cur.spill_ld = (int(g) for g in m.groups())
            props_of_entry = False
            continue
        m = _USED.search(line)
        if m and entry is not None:
            cur = out[entry]
            cur.regs = int(m.group(1))
            for item in m.group(2).split(","):
                item = item.strip()
                s = _ITEM_SMEM.match(item)
                if s:
                    cur.smem = int(s.group(1))
                c = _ITEM_CMEM.match(item)
                if c:
                    cur.cmem += int(c.group(1))
            entry = None
    return out


_PTX_ENTRY = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+([\w$.]+)\s*\(")
_PTX_NTID = re.compile(r"^\s*\.(maxntid|reqntid)\s+([\d\s,]+)")
_PTX_MINCTA = re.compile(r"^\s*\.minnctapersm\s+(\d+)")


def parse_ptx_bounds(text):
    """PTX -> {mangled kernel name: (threads allowed per block or 0, min blocks per SM or 0)}.

    The performance directives sit between an entry's parameter list and its body.
    """
    out = {}
    name = None
    for line in text.splitlines():
        m = _PTX_ENTRY.match(line)
        if m:
            name = m.group(1)
            out[name] = (0, 0)
            continue
        if name is None:
            continue
        if line.strip().startswith("{"):
            name = None
            continue
        m = _PTX_NTID.match(line)
        if m:
            dims = [int(x) for x in m.group(2).replace(",", " ").split()]
            n = 1
            for d in dims:
                n *= d
            out[name] = (n, out[name][1])
            continue
        m = _PTX_MINCTA.match(line)
        if m:
            out[name] = (out[name][0], int(m.group(1)))
    return out


def demangle(names):
    """Mangled names -> demangled ones, with binutils' c++filt (one process for all)."""
    names = list(names)
    if not names:
        return {}
    filt = shutil.which("c++filt")
    if filt is None:
        raise BudgetError("c++filt (GNU binutils) is needed to demangle the kernel names and was not found")
    res = subprocess.run([filt], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
    lines = res.stdout.splitlines()
    if len(lines) != len(names):
        raise BudgetError(f"c++filt returned {len(lines)} names for {len(names)}")
    return dict(zip(names, lines))


def short_name(demangled):
    """'void (anonymous namespace)::k<1, float>((anonymous namespace)::Job)' -> 'k<1, float>'.

    Kernels return void and live in one file's anonymous namespace, so neither tells them apart; the
    parameter list does not either unless a kernel is overloaded (kernel_names keeps it then).
    """
    s = demangled.replace("(anonymous namespace)::", "")
    if s.endswith(")"):
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            if s[i] == ")":
                depth += 1
            elif s[i] == "(":
                depth -= 1
                if depth == 0:
                    s = s[:i]
                    break
    if s.startswith("void "):
        s = s[len("void "):]
    return s.strip()


def kernel_names(mangled):
    """Mangled names -> table names: short names, or the full signature where two kernels share one."""
    full = demangle(mangled)
    short = {m: short_name(d) for m, d in full.items()}
    count = {}
    for s in short.values():
        count[s] = count.get(s, 0) + 1
    return {m: short[m] if count[short[m]] == 1 else full[m].replace("(anonymous namespace)::", "")
            for m in full}


# ------------------------------------------------------------------ the table

def _int(text, what, at):
    try:
        v = int(text)
    except ValueError:
        raise BudgetError(f"{at}: {what} must be a whole number, got {text!r}") from None
    if v < 0:
        raise BudgetError(f"{at}: {what} must not be negative, got {v}")
    return v


def _flag(text, what, at):
    if text in ("yes", "no"):
        return text == "yes"
    raise BudgetError(f"{at}: {what} must be yes or no, got {text!r}")


def _figure_cell(text, what, at):
    """'52' (every arch) or '52/54' (one value per arch, in ARCHES order; '-' where the kernel is absent)."""
    parts = [p.strip() for p in text.split("/")]
    if len(parts) == 1:
        parts = parts * len(ARCHES)
    if len(parts) != len(ARCHES):
        raise BudgetError(f"{at}: {what} must be one value or {len(ARCHES)} "
                          f"separated by / ({'/'.join(ARCHES)}), got {text!r}")
    return {arch: None if p == "-" else _int(p, what, at) for arch, p in zip(ARCHES, parts)}


def read_table(text, name="kernels/budgets.md"):
    """The table's text -> (lines before the table, rows, lines after it); name is for the messages."""
    lines = text.splitlines()
    header = [h for h, _ in COLUMNS]
    start = None
    for i, line in enumerate(lines):
        if line.startswith("|") and [c.strip() for c in line.strip().strip("|").split("|")] == header:
            start = i
            break
    if start is None:
        raise BudgetError(f"{name} has no table with the columns " + " | ".join(header))
    rows, seen = [], {}
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        lineno = end + 1
        at = f"{name} line {lineno}"
        cells = [c.strip() for c in lines[end].strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS):
            raise BudgetError(f"{at}: {len(cells)} cells, expected {len(COLUMNS)}")
        v = dict(zip((f for _, f in COLUMNS), cells))
        if v["kernel"] in seen:
            raise BudgetError(f"{at}: a second row for {v['kernel']} "
                              f"(the first is on line {seen[v['kernel']]})")
        seen[v["kernel"]] = lineno
        per_figure = {f: _figure_cell(v[f], FIGURE[f], at) for f in MEASURED}
        rows.append(Row(kernel=v["kernel"], file=v["file"],
                        threads=None if v["threads"] == "?" else _int(v["threads"], "threads", at),
                        dyn_smem=_int(v["dyn_smem"], "dyn smem", at), opt_in=_flag(v["opt_in"], "opt-in", at),
                        hot=_flag(v["hot"], "hot", at),
                        budget={arch: None if any(per_figure[f][arch] is None for f in MEASURED)
                                else {f: per_figure[f][arch] for f in MEASURED} for arch in ARCHES}))
        end += 1
    return lines[:start], rows, lines[end:]


def _natural(s):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def format_table(before, rows, after):
    def figure(r, f):
        vals = ["-" if r.budget.get(a) is None else str(r.budget[a][f]) for a in ARCHES]
        return vals[0] if len(set(vals)) == 1 else "/".join(vals)

    def cells(r):
        return [r.kernel, r.file, "?" if r.threads is None else str(r.threads), str(r.dyn_smem),
                "yes" if r.opt_in else "no", "yes" if r.hot else "no"] + [figure(r, f) for f in MEASURED]

    body = [cells(r) for r in sorted(rows, key=lambda r: (r.file, _natural(r.kernel)))]
    head = [h for h, _ in COLUMNS]
    width = [max(len(x) for x in col) for col in zip(head, *body)]
    numeric = [False, False] + [True] * (len(COLUMNS) - 2)

    def line(values, is_head=False):
        return "| " + " | ".join(v.rjust(w) if num and not is_head else v.ljust(w)
                                 for v, w, num in zip(values, width, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(width, numeric)) + "|"
    return "\n".join(before + [line(head, True), sep] + [line(b) for b in body] + after) + "\n"


# ------------------------------------------------------------------ checking

def check(measured, rows):
    """measured: {(kernel, arch): (file, Measure)}; rows: the table.

    Returns (failures, notes): one line each, naming kernel, file, arch and figure.
    """
    failures, notes = [], []
    by_kernel = {r.kernel: r for r in rows}
    known = {k for k, _ in measured}
    for r in rows:
        if r.kernel not in known:
            failures.append(f"{r.kernel} ({r.file}): the table has a row for it but no kernel of that name was "
                            "compiled")
    for (kernel, arch), (file, m) in sorted(measured.items(), key=lambda kv: (kv[1][0], _natural(kv[0][0]), kv[0][1])):
        at = f"{kernel} ({file}, {arch})"
        r = by_kernel.get(kernel)
        if r is None:
            failures.append(f"{at}: no row in kernels/budgets.md (run tools/ptxas_budget.py --update, then review "
                            "its threads, dyn smem, opt-in and hot)")
            continue
        budget = r.budget.get(arch)
        if budget is None:
            failures.append(f"{at}: its row has no figures for {arch} (-)")
        else:
            for f in MEASURED:
                got, limit = getattr(m, f), budget[f]
                if got > limit:
                    failures.append(f"{at}: {FIGURE[f]} {got} exceed the budget of {limit}")
                elif got < limit:
                    notes.append(f"{at}: {FIGURE[f]} {got}, below the budget of {limit}")
        failures.extend(f"{at}: {msg}" for msg in launch_failures(r, m, arch))
    return failures, notes


def launch_failures(r, m, arch):
    """What the hardware refuses (or the table forbids) for a launch of r.threads threads."""
    out = []
    if r.threads is None:
        out.append("threads per block of its launch not recorded (the table says ?)")
    elif r.threads < 1 or r.threads > MAX_THREADS:
        out.append(f"threads per block {r.threads} outside [1, {MAX_THREADS}]")
    else:
        if m.max_threads and r.threads > m.max_threads:
            out.append(f"launched with {r.threads} threads per block but __launch_bounds__ allows {m.max_threads}")
        warps = (r.threads + 31) // 32
        per_warp = (m.regs * 32 + REGISTER_UNIT - 1) // REGISTER_UNIT * REGISTER_UNIT
        if warps * per_warp > REGISTER_FILE:
            out.append(f"registers {m.regs} x {r.threads} threads need {warps * per_warp} of the "
                       f"{REGISTER_FILE} registers of an SM")
    if m.regs > MAX_REGISTERS:
        out.append(f"registers {m.regs} exceed {MAX_REGISTERS} per thread")
    total = m.smem + r.dyn_smem
    limit = SMEM_OPT_IN[arch] if r.opt_in else SMEM_DEFAULT
    if total > limit:
        how = "the opt-in limit" if r.opt_in else "the limit without the cudaFuncSetAttribute opt-in"
        out.append(f"shared memory {m.smem} static + {r.dyn_smem} dynamic = {total} bytes exceed {how} of "
                   f"{limit} bytes")
    if r.hot and (m.spill_st or m.spill_ld):
        out.append(f"hot kernel spills ({m.spill_st} bytes of spill stores, {m.spill_ld} bytes of spill loads)")
    return out


def update(measured, rows):
    """The table's rows with the measured columns rewritten; rows for new kernels (threads from
    __launch_bounds__, ? without; no dynamic shared memory, no opt-in, not hot); rows of kernels that are
    gone dropped. Returns (rows, messages)."""
    policy = {r.kernel: r for r in rows}
    messages = []
    per_kernel = {}
    for (kernel, arch), (file, m) in measured.items():
        per_kernel.setdefault(kernel, (file, {}))[1][arch] = m
    new_rows = []
    for kernel, (file, by_arch) in per_kernel.items():
        p = policy.get(kernel)
        if p is None:
            bounds = {m.max_threads for m in by_arch.values()}
            p = Row(kernel=kernel, file=file, threads=bounds.pop() if len(bounds) == 1 and 0 not in bounds else None)
            messages.append(f"new row: {kernel} ({file}); review its threads, dyn smem, opt-in and hot")
        new_rows.append(Row(kernel=kernel, file=file, threads=p.threads, dyn_smem=p.dyn_smem, opt_in=p.opt_in,
                            hot=p.hot, budget={a: {f: getattr(by_arch[a], f) for f in MEASURED} if a in by_arch
                                               else None for a in ARCHES}))
    for kernel in sorted(set(policy) - set(per_kernel)):
        messages.append(f"dropped row: {kernel} (no such kernel any more)")
    return new_rows, messages


# ------------------------------------------------------------------ compiling

def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc")
                                    else None)


def nvcc_version(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release [\d.]+, (V[\d.]+)", out)
    return m.group(1) if m else "(unknown version)"


def compile_one(nvcc, src, arch, workdir):
    """One .cu for one arch -> (ptxas -v text, PTX text)."""
    base = os.path.splitext(os.path.basename(src))[0]
    keep = os.path.join(workdir, f"{base}.{arch}")
    os.makedirs(keep)
    cmd = [nvcc, "-cubin", os.path.relpath(src, ROOT), "-o", os.path.join(keep, base + ".cubin")] + NVCC_FLAGS + [
        f"-gencode=arch=compute_{arch[3:]},code={arch}", "-Xptxas", "-v", "--keep", "--keep-dir", keep]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise BudgetError(f"nvcc failed on {os.path.relpath(src, ROOT)} for {arch}:\n{res.stdout}{res.stderr}")
    ptx = glob.glob(os.path.join(keep, "*.ptx"))
    if len(ptx) != 1:
        raise BudgetError(f"nvcc --keep left {len(ptx)} PTX files for {src} ({arch}), expected 1")
    with open(ptx[0], encoding="utf-8") as f:
        return res.stdout + res.stderr, f.read()


def _collect(raw, outputs, file, arch, log_dir):
    """Adds one compile's kernels to raw: {(mangled, arch): (file, Measure)}."""
    text, ptx = outputs
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, f"{file}.{arch}.txt"), "w", encoding="utf-8") as f:
            f.write(text)
    bounds = parse_ptx_bounds(ptx)
    for (name, got_arch), m in parse_ptxas(text).items():
        if got_arch != arch:
            raise BudgetError(f"ptxas compiled {name} for {got_arch} when asked for {arch}")
        m.max_threads, m.min_blocks = bounds.get(name, (0, 0))
        if (name, arch) in raw:
            raise BudgetError(f"kernel {name} is defined in both {raw[(name, arch)][0]} and {file}")
        raw[(name, arch)] = (file, m)


def measure(nvcc, sources, jobs, log_dir=None):
    """Compiles every source for every arch (jobs at a time) -> {(kernel, arch): (file, Measure)}."""
    raw = {}  # (mangled, arch) -> (file, Measure)
    with tempfile.TemporaryDirectory(prefix="ptxas_budget_") as work:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = {pool.submit(compile_one, nvcc, src, arch, work): (src, arch)
                       for src in sources for arch in ARCHES}
            for fut in concurrent.futures.as_completed(futures):
                src, arch = futures[fut]
                _collect(raw, fut.result(), os.path.basename(src), arch, log_dir)
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, the compiles not yet started are dropped
    names = kernel_names({n for n, _ in raw})
    out = {}
    for (n, arch), (file, m) in raw.items():
        key = (names[n], arch)
        if key in out:  # the same kernel in two files' anonymous namespaces
            raise BudgetError(f"two kernels are named {names[n]}, in {out[key][0]} and {file}; the table needs "
                              "one name per kernel")
        out[key] = (file, m)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite the table's measured columns")
    ap.add_argument("--table", default=TABLE, help="the budget table (default kernels/budgets.md)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="nvcc processes at once")
    ap.add_argument("--nvcc", default=None, help="the nvcc to use (default: CUDA_HOME, PATH, /usr/local/cuda)")
    ap.add_argument("--log-dir", default=None, help="also write each compile's ptxas -v output here")
    ap.add_argument("--verbose", action="store_true", help="also list figures below their budget")
    ap.add_argument("sources", nargs="*", help="the .cu files (default: kernels/*.cu)")
    args = ap.parse_args(argv)
    try:
        nvcc = args.nvcc or find_nvcc()
        if nvcc is None:
            raise BudgetError("nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
        sources = [os.path.abspath(s) for s in args.sources] or [os.path.join(ROOT, p) for p in buildinfo.cuda_sources()]
        sources.sort(key=os.path.getsize, reverse=True)  # the longest compiles first
        if not sources:
            raise BudgetError("no kernels/*.cu to compile")
        with open(args.table, encoding="utf-8") as f:
            before, rows, after = read_table(f.read(), os.path.relpath(args.table))
        version = nvcc_version(nvcc)
        measured = measure(nvcc, sources, max(1, args.jobs), args.log_dir)
    except BudgetError as e:
        print(f"ptxas_budget: {e}", file=sys.stderr)
        return 2
    if args.update:
        rows, messages = update(measured, rows)
        before = [VERSION_PREFIX + version + "." if line.startswith(VERSION_PREFIX) else line for line in before]
        with open(args.table, "w", encoding="utf-8") as f:
            f.write(format_table(before, rows, after))
        for m in messages:
            print(m)
        print(f"ptxas_budget: wrote {len(rows)} rows to {args.table}")
    failures, notes = check(measured, rows)
    if args.verbose:
        for n in notes:
            print(n)
    kernels = len({k for k, _ in measured})
    if failures:
        for line in failures:
            print(line, file=sys.stderr)
        recorded = next((line[len(VERSION_PREFIX):].rstrip(".") for line in before if line.startswith(VERSION_PREFIX)),
                        None)
        if recorded and recorded != version:
            print(f"(the table was measured with nvcc {recorded}; this is nvcc {version})", file=sys.stderr)
        print(f"ptxas_budget: {len(failures)} failures over {kernels} kernels", file=sys.stderr)
        return 1
    print(f"ptxas_budget: {kernels} kernels within their budgets on {', '.join(ARCHES)}"
          + (f" ({len(notes)} figures below budget: --verbose lists them)" if notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

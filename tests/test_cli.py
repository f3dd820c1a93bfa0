"""The `ccomp zipfit` command: top-k records keep their fields and gain the score."""
import json
import os
import subprocess
import sys

import numpy as np

from ccomp import zipfit


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ccomp", *args], capture_output=True, text=True, timeout=300)


def test_zipfit_cli_selects_top_k(tmp_path, real_documents, humaneval_prompts):
    src = tmp_path / "sources.jsonl"
    tgt = tmp_path / "targets.jsonl"
    with open(src, "w") as f:
        for i, d in enumerate(real_documents):
            f.write(json.dumps({"id": i, "text": d, "meta": {"n": len(d)}}) + "\n")
    with open(tgt, "w") as f:
        for p in humaneval_prompts[:50]:
            f.write(json.dumps({"prompt": p}) + "\n")
    out = tmp_path / "selected.jsonl"
    scores_path = tmp_path / "scores.npy"
    r = run_cli("zipfit", "--target", str(tgt), "--target-key", "prompt", "--source", str(src), "--top-k", "5",
                "--out", str(out), "--scores", str(scores_path), "--compressor", "gzip", "--level", "1")
    assert r.returncode == 0, r.stderr
    expected = zipfit.alignment_scores(real_documents, humaneval_prompts[:50], "gzip", 1)
    assert np.array_equal(np.load(scores_path), expected)
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    order = zipfit.top_k_indices(expected, 5)
    assert [row["id"] for row in rows] == list(order)
    for row in rows:
        assert row["text"] == real_documents[row["id"]]
        assert row["meta"] == {"n": len(row["text"])}
        assert row["score"] == expected[row["id"]]


def test_zipfit_cli_reports_bad_input(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text('{"text": "a"}\nnot json\n')
    tgt = tmp_path / "t.jsonl"
    tgt.write_text('{"text": "b"}\n')
    r = run_cli("zipfit", "--target", str(tgt), "--source", str(src), "--top-k", "1", "--out",
                str(tmp_path / "o.jsonl"), "--no-progress")
    assert r.returncode == 2
    assert "s.jsonl, line 2: not a valid JSON record" in r.stderr
    assert not os.path.exists(tmp_path / "o.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = run_cli("zipfit", "--target", str(empty), "--source", str(src), "--top-k", "1", "--out",
                str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "target set is empty" in r.stderr


def test_info_command():
    r = run_cli("info")
    assert r.returncode == 0
    assert "zlib: " in r.stdout and "cuda: " in r.stdout


# ---- issue #13: hostile input to the command line ----------------------------------------------

import stat  # noqa: E402

import pytest  # noqa: E402

from ccomp.cli import main  # noqa: E402


def _zipfit_files(tmp_path, records=None):
    src = tmp_path / "s.jsonl"
    records = records if records is not None else [{"id": i, "text": f"def f{i}(x): return x + {i}"} for i in range(6)]
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    tgt = tmp_path / "t.jsonl"
    tgt.write_text(json.dumps({"text": "def add(a, b): return a + b"}) + "\n")
    return src, tgt


def _zipfit(src, tgt, out, *extra):
    return main(["zipfit", "--target", str(tgt), "--source", str(src), "--top-k", "3", "--out", str(out),
                 "--no-progress", "--level", "1", *extra])


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_zipfit_cli_failure_leaves_no_file(tmp_path, capsys):
    # item 13: a failure while writing left OUT.tmp, and --scores stayed behind
    records = [{"id": 0, "text": "def f(x): return x", "note": "bad \ud800"}, {"id": 1, "text": "def g(): pass"}]
    src, tgt = _zipfit_files(tmp_path, records)
    before = _listing(tmp_path)
    assert _zipfit(src, tgt, tmp_path / "o.jsonl", "--scores", str(tmp_path / "scores.npy")) == 2
    err = capsys.readouterr().err
    # an unencodable copied field names the file and line
    assert "s.jsonl, line 1: the record cannot be written as UTF-8 JSON" in err
    assert _listing(tmp_path) == before


def test_zipfit_cli_refuses_to_overwrite_an_existing_score_field(tmp_path, capsys):
    records = [{"text": "def f(x): return x"}, {"text": "def g(): pass", "score": "human label"}]
    src, tgt = _zipfit_files(tmp_path, records)
    scores = tmp_path / "scores.npy"
    scores.write_bytes(b"previous run")
    assert _zipfit(src, tgt, tmp_path / "o.jsonl", "--scores", str(scores)) == 2
    assert "s.jsonl, line 2: the record already has a field 'score'; name the added field with --score-field" \
        in capsys.readouterr().err
    assert scores.read_bytes() == b"previous run"  # an existing output is untouched by a failed run
    assert _listing(tmp_path) == ["s.jsonl", "scores.npy", "t.jsonl"]
    # with another field name it works, and the original field is kept
    assert _zipfit(src, tgt, tmp_path / "o.jsonl", "--score-field", "zipfit", "--scores", str(scores)) == 0
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert {r.get("score") for r in rows} == {None, "human label"} and all("zipfit" in r for r in rows)
    # --scores is written at exactly the given path
    assert np.load(scores).shape == (2,)


def test_zipfit_cli_out_must_be_a_regular_file(tmp_path, capsys):
    src, tgt = _zipfit_files(tmp_path)
    folder = tmp_path / "outdir"
    folder.mkdir()
    assert _zipfit(src, tgt, folder) == 2
    assert "--out " + str(folder) + " is a directory, not a regular file" in capsys.readouterr().err
    assert _listing(folder) == [] and _listing(tmp_path) == ["outdir", "s.jsonl", "t.jsonl"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _zipfit(src, tgt, fifo) == 2
    assert "is a FIFO (named pipe), not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # the source file given as the output
    assert _zipfit(src, tgt, src) == 2
    assert "is the --source file" in capsys.readouterr().err
    # a FIFO as input is refused without blocking on it
    assert _zipfit(fifo, tgt, tmp_path / "o.jsonl") == 2
    assert "--source " + str(fifo) + " is a FIFO" in capsys.readouterr().err


def test_zipfit_cli_temporary_names_are_unique(tmp_path):
    # item 13: the temporary name was fixed (OUT.tmp), so concurrent runs collided
    src, tgt = _zipfit_files(tmp_path)
    out = tmp_path / "o.jsonl"
    other_run = tmp_path / "o.jsonl.tmp"
    other_run.write_text("another run's partial output")
    assert _zipfit(src, tgt, out) == 0
    assert other_run.read_text() == "another run's partial output"
    assert len(out.read_text().splitlines()) == 3
    assert _listing(tmp_path) == ["o.jsonl", "o.jsonl.tmp", "s.jsonl", "t.jsonl"]
    # the output gets the usual permissions, not mkstemp's 0600
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~mask


def test_zipfit_cli_interrupted_leaves_no_file(tmp_path, capsys, monkeypatch):
    from ccomp import zipfit as zf

    src, tgt = _zipfit_files(tmp_path)
    real = np.save

    def save_then_interrupt(f, a):
        real(f, a)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", save_then_interrupt)
    assert _zipfit(src, tgt, tmp_path / "o.jsonl", "--scores", str(tmp_path / "sc.npy")) == 130
    assert "interrupted; no output written" in capsys.readouterr().err
    assert _listing(tmp_path) == ["s.jsonl", "t.jsonl"]
    # Ctrl-C during the scoring (the CLI scores through zipfit._Scorer, with its own progress bar)
    monkeypatch.setattr(zf._Scorer, "score", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert _zipfit(src, tgt, tmp_path / "o.jsonl") == 130
    assert _listing(tmp_path) == ["s.jsonl", "t.jsonl"]


def test_zipfit_cli_deeply_nested_json(tmp_path, capsys):
    # item 15: RecursionError escaped (traceback, exit 1)
    src, tgt = _zipfit_files(tmp_path)
    with open(src, "a") as f:
        f.write('{"text": "x", "m": ' + "[" * 100000 + "]" * 100000 + "}\n")
    assert _zipfit(src, tgt, tmp_path / "o.jsonl") == 2
    assert "s.jsonl, line 7: not a valid JSON record (nested too deeply" in capsys.readouterr().err
    tgt.write_text("{" * 50000 + "\n")
    assert _zipfit(src, tgt, tmp_path / "o.jsonl") == 2
    assert "t.jsonl, line 1: not a valid JSON record" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_zipfit_cli_bad_numbers_exit_2(tmp_path, capsys):
    src, tgt = _zipfit_files(tmp_path)
    for extra, msg in ((["--chunk-size", "0"], "chunk_size must be an int in"),
                       (["--threads", "0"], "threads must be an int in [1, 4096]"),
                       (["--level", "99"], "gzip level must be in [0, 9], got 99")):
        assert _zipfit(src, tgt, tmp_path / "o.jsonl", *extra) == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse: not an int
        _zipfit(src, tgt, tmp_path / "o.jsonl", "--chunk-size", "1.9")
    assert info.value.code == 2


def test_cli_empty_or_folder_like_output_paths_are_refused_before_the_work(tmp_path, capsys, monkeypatch):
    # --out "" failed after the scoring with "No such file or directory: '.../..x.tmp' -> ''" naming no flag,
    # --scores "" was ignored (no scores written, exit 0), and "-o new/" failed after the work
    src, tgt = _zipfit_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    for extra, said in (([], "--out: the path is empty"),
                        (["--scores", ""], "--scores: the path is empty"),
                        (["--scores", "nd/"], "--scores nd/ ends with /: name a file, not a folder")):
        out = "" if not extra else "o.jsonl"
        assert _zipfit(src, tgt, out, *extra) == 2
        assert said in capsys.readouterr().err
    assert _zipfit("", tgt, "o.jsonl") == 2
    assert "--source: the path is empty" in capsys.readouterr().err
    for dest, said in (("", "output: the path is empty"), ("nd/", "output nd/ ends with /")):
        assert _compress(src, "-o", dest) == 2
        assert said in capsys.readouterr().err
    assert _listing(tmp_path) == ["s.jsonl", "t.jsonl"]


def test_zipfit_cli_field_names_that_are_not_utf8(tmp_path, capsys):
    # a --score-field given as non-UTF-8 bytes failed on the first selected record, blaming the source file
    src, tgt = _zipfit_files(tmp_path)
    bad = os.fsdecode(b"\xff")
    for flag in ("--score-field", "--key", "--target-key"):
        assert _zipfit(src, tgt, tmp_path / "o.jsonl", flag, bad) == 2
        assert f"{flag} '\\udcff' is not valid UTF-8 text" in capsys.readouterr().err
    assert _listing(tmp_path) == ["s.jsonl", "t.jsonl"]


def _compress(*args):
    return main(["compress", "--no-progress", *map(str, args)])


def test_compress_never_replaces_a_non_regular_file(tmp_path, capsys):
    # item 14: -o FIFO --force replaced the FIFO with a regular file
    data = tmp_path / "d.txt"
    data.write_bytes(b"hello hello hello\n" * 50)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for force in ([], ["--force"]):
        assert _compress(data, "-o", fifo, *force) == 2
        assert "is a FIFO (named pipe), not a regular file; ccomp only replaces regular files" in \
            capsys.readouterr().err
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # a device node (/dev/null) given as the output
    assert _compress(data, "-o", os.devnull, "--force") == 2
    assert "is a character device" in capsys.readouterr().err
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    # a symbolic link and a directory
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    assert _compress(data, "-o", link, "--force") == 2
    assert "is a symbolic link" in capsys.readouterr().err and link.is_symlink()
    folder = tmp_path / "folder"
    folder.mkdir()
    assert _compress(data, "-o", folder, "--force") == 2
    assert "is a directory" in capsys.readouterr().err
    # a FIFO or a device as input is refused without reading it
    assert _compress(fifo, "-o", tmp_path / "x.ccm") == 2
    assert "is a FIFO" in capsys.readouterr().err
    assert main(["decompress", "--no-progress", "/dev/zero", "-o", str(tmp_path / "x")]) == 2
    assert "is a character device" in capsys.readouterr().err
    assert _listing(tmp_path) == ["d.txt", "folder", "link", "pipe"]
    # a regular file is replaced with --force, refused without it
    out = tmp_path / "d.ccm"
    out.write_bytes(b"old")
    assert _compress(data, "-o", out) == 2
    assert "exists (use --force to overwrite)" in capsys.readouterr().err
    assert _compress(data, "-o", out, "--force") == 0
    assert main(["decompress", "--no-progress", str(out), "-o", str(tmp_path / "back.txt")]) == 0
    assert (tmp_path / "back.txt").read_bytes() == data.read_bytes()
    # the input named again as the output (through another path)
    assert _compress(data, "-o", tmp_path / "folder" / ".." / "d.txt", "--force") == 2
    assert "must differ from the input" in capsys.readouterr().err


# ---- issue #14: --version, bare ccomp, compressed/stdin/Parquet/datasets input, --out -, progress total ------

import gzip  # noqa: E402
import io  # noqa: E402
import sys as _sys  # noqa: E402
import types  # noqa: E402


def run_cli_bytes(*args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "ccomp", *args], input=stdin, capture_output=True, timeout=300)


def test_version_and_bare_command_prints_help():
    import ccomp

    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"ccomp {ccomp.__version__}"
    r = run_cli()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ccomp") and "zipfit" in r.stdout and "compress" in r.stdout
    assert r.stderr == ""


def _reference_run(tmp_path, src, tgt, *extra):
    """--out and --scores of a run on the plain JSONL files: what every other input form must reproduce."""
    out, sc = tmp_path / "ref.jsonl", tmp_path / "ref.npy"
    assert _zipfit(src, tgt, out, "--scores", str(sc), *extra) == 0
    return out.read_bytes(), np.load(sc)


def _records_with_blank_lines(tmp_path):
    src, tgt = _zipfit_files(tmp_path, [{"id": i, "text": f"def f{i}(x): return x * {i} + {i % 3}"} for i in range(40)])
    src.write_text(src.read_text().replace("\n", "\n\n", 3))  # blank lines are skipped, lines still count
    return src, tgt


def test_zipfit_cli_gzip_and_zstd_inputs_match_the_plain_file(tmp_path, capsys):
    import zstandard

    src, tgt = _records_with_blank_lines(tmp_path)
    ref_out, ref_scores = _reference_run(tmp_path, src, tgt)
    gz, zst = tmp_path / "s.jsonl.gz", tmp_path / "s.jsonl.zst"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    zst.write_bytes(zstandard.ZstdCompressor().compress(src.read_bytes()))
    tgt_gz = tmp_path / "t.jsonl.gz"
    tgt_gz.write_bytes(gzip.compress(tgt.read_bytes()))
    for source, target in ((gz, tgt), (zst, tgt), (src, tgt_gz), (zst, tgt_gz)):
        out, sc = tmp_path / "o.jsonl", tmp_path / "o.npy"
        assert _zipfit(source, target, out, "--scores", str(sc)) == 0, capsys.readouterr().err
        assert out.read_bytes() == ref_out
        assert np.array_equal(np.load(sc), ref_scores)


def test_zipfit_cli_damaged_compressed_input_names_file_and_line(tmp_path, capsys):
    src, tgt = _records_with_blank_lines(tmp_path)
    gz = tmp_path / "s.jsonl.gz"
    blob = gzip.compress(src.read_bytes())
    gz.write_bytes(blob[: len(blob) // 2])  # truncated
    assert _zipfit(gz, tgt, tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err
    assert "s.jsonl.gz, after line" in err and "damaged or truncated" in err
    gz.write_bytes(b"this is not gzip\n")
    assert _zipfit(gz, tgt, tmp_path / "o.jsonl") == 2
    assert "s.jsonl.gz, after line 0: the compressed stream is damaged" in capsys.readouterr().err
    gz.write_bytes(gzip.compress(b'{"text": "a"}\nnot json\n'))
    assert _zipfit(gz, tgt, tmp_path / "o.jsonl") == 2
    assert "s.jsonl.gz, line 2: not a valid JSON record" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_zipfit_cli_zst_without_zstandard_names_the_package(tmp_path, capsys, monkeypatch):
    src, tgt = _zipfit_files(tmp_path)
    zst = tmp_path / "s.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd")
    monkeypatch.setitem(_sys.modules, "zstandard", None)  # import zstandard -> ImportError
    assert _zipfit(zst, tgt, tmp_path / "o.jsonl") == 2
    assert "reading .zst files needs the zstandard package (pip install zstandard)" in capsys.readouterr().err


def test_zipfit_cli_stdin_and_stdout_match_the_file_path(tmp_path):
    src, tgt = _records_with_blank_lines(tmp_path)
    ref_out, ref_scores = _reference_run(tmp_path, src, tgt)
    common = ("--top-k", "3", "--no-progress", "--level", "1")
    for data in (src.read_bytes(), gzip.compress(src.read_bytes())):  # gzip on stdin is recognised by its magic
        sc = tmp_path / "stdin.npy"
        r = run_cli_bytes("zipfit", "--target", str(tgt), "--source", "-", "--out", "-", "--scores", str(sc), *common,
                          stdin=data)
        assert r.returncode == 0, r.stderr
        assert r.stdout == ref_out
        assert np.array_equal(np.load(sc), ref_scores)
        assert b"wrote the top 3 to stdout" in r.stderr
    # the target on stdin
    r = run_cli_bytes("zipfit", "--target", "-", "--source", str(src), "--out", "-", *common, stdin=tgt.read_bytes())
    assert r.returncode == 0 and r.stdout == ref_out
    # errors on stdin name <stdin> and the line; nothing reaches stdout
    r = run_cli_bytes("zipfit", "--target", str(tgt), "--source", "-", "--out", "-", *common,
                      stdin=b'{"text": "a"}\n\n{"text": 3}\n')
    assert r.returncode == 2 and r.stdout == b""
    assert b"<stdin>, line 3: field 'text' must be a string" in r.stderr
    r = run_cli_bytes("zipfit", "--target", "-", "--source", "-", "--out", "-", *common)
    assert r.returncode == 2 and b"cannot both be - (stdin)" in r.stderr
    r = run_cli_bytes("zipfit", "--target", str(tgt), "--source", str(src), "--out", "-", "--scores", "-", *common)
    assert r.returncode == 2 and b"--scores - is not supported" in r.stderr and r.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.jsonl", "ref.npy", "s.jsonl", "stdin.npy", "t.jsonl"]


def test_zipfit_cli_progress_bar_has_a_total(tmp_path, capsys):
    src, tgt = _records_with_blank_lines(tmp_path)
    gz = tmp_path / "s.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    for source in (src, gz):
        assert main(["zipfit", "--target", str(tgt), "--source", str(source), "--top-k", "3", "--level", "1",
                     "--out", str(tmp_path / "o.jsonl"), "--chunk-size", "8"]) == 0
        err = capsys.readouterr().err
        assert "/43" in err  # counted before scoring: 40 records + 3 blank lines
        assert "40/40" in err and "100%" in err  # and closed at the true record count


def test_zipfit_cli_top_k_below_1_is_an_error(tmp_path, capsys):
    src, tgt = _zipfit_files(tmp_path)
    for k in ("0", "-1"):
        assert main(["zipfit", "--target", str(tgt), "--source", str(src), "--top-k", k,
                     "--out", str(tmp_path / "o.jsonl"), "--no-progress"]) == 2
        assert f"--top-k must be >= 1, got {k}" in capsys.readouterr().err
    assert _listing(tmp_path) == ["s.jsonl", "t.jsonl"]


def test_zipfit_cli_parquet_source_matches_jsonl(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src, tgt = _records_with_blank_lines(tmp_path)
    ref_out, ref_scores = _reference_run(tmp_path, src, tgt)
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s.parquet", row_group_size=7)
    out, sc = tmp_path / "o.jsonl", tmp_path / "o.npy"
    assert _zipfit(tmp_path / "s.parquet", tgt, out, "--scores", str(sc)) == 0, capsys.readouterr().err
    assert out.read_bytes() == ref_out and np.array_equal(np.load(sc), ref_scores)
    assert _zipfit(tmp_path / "s.parquet", tgt, out, "--key", "body", "--target-key", "text") == 2
    assert "s.parquet: no column 'body' (columns: 'id', 'text')" in capsys.readouterr().err
    pq.write_table(pa.Table.from_pylist([{"text": "def f(): pass"}, {"text": None}]), tmp_path / "n.parquet")
    assert _zipfit(tmp_path / "n.parquet", tgt, out) == 2
    assert "n.parquet, row 2: field 'text' must be a string, got NoneType" in capsys.readouterr().err
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert _zipfit(tmp_path / "bad.parquet", tgt, out) == 2
    assert "bad.parquet: not a readable Parquet file" in capsys.readouterr().err


def test_zipfit_cli_parquet_and_datasets_missing_name_the_package(tmp_path, capsys, monkeypatch):
    src, tgt = _zipfit_files(tmp_path)
    pqf = tmp_path / "s.parquet"
    pqf.write_bytes(b"PAR1")
    for name in ("pyarrow", "pyarrow.parquet", "datasets"):
        monkeypatch.setitem(_sys.modules, name, None)
    assert _zipfit(pqf, tgt, tmp_path / "o.jsonl") == 2
    assert "reading Parquet needs the pyarrow package, which is not installed (pip install pyarrow)" \
        in capsys.readouterr().err
    assert _zipfit("hf:openai_humaneval:test", tgt, tmp_path / "o.jsonl") == 2
    assert "needs the datasets package, which is not installed (pip install datasets)" in capsys.readouterr().err


def test_zipfit_cli_hf_source_matches_jsonl(tmp_path, capsys, monkeypatch):
    # offline here: a stand-in datasets module returns the same rows, so the hf: plumbing is what is tested
    src, tgt = _records_with_blank_lines(tmp_path)
    ref_out, ref_scores = _reference_run(tmp_path, src, tgt)
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        if name == "missing":
            raise FileNotFoundError("Couldn't find a dataset script")
        return rows

    monkeypatch.setitem(_sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    out, sc = tmp_path / "o.jsonl", tmp_path / "o.npy"
    assert _zipfit("hf:user/code", tgt, out, "--scores", str(sc)) == 0, capsys.readouterr().err
    assert out.read_bytes() == ref_out and np.array_equal(np.load(sc), ref_scores)
    assert _zipfit("hf:user/code:validation", tgt, out) == 0
    assert calls == [("user/code", "train"), ("user/code", "validation")]
    assert _zipfit("hf:missing", tgt, out) == 2
    assert "--source hf:missing: cannot load the dataset (FileNotFoundError" in capsys.readouterr().err


def test_zipfit_cli_stdout_closed_early_is_quiet(tmp_path):
    src, tgt = _records_with_blank_lines(tmp_path)
    cmd = [sys.executable, "-m", "ccomp", "zipfit", "--target", str(tgt), "--source", str(src), "--top-k", "40",
           "--out", "-", "--no-progress", "--level", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the selection is written
    err = p.stderr.read()
    assert p.wait(timeout=300) == 141
    assert err == b""


def _sh_blocks_with(doc, needle):
    text = open(os.path.join(os.path.dirname(__file__), "..", doc)).read()
    blocks = [b.split("```", 1)[0] for b in text.split("```sh\n")[1:]]
    return [b for b in blocks if needle in b]


@pytest.mark.parametrize("doc", ["README.md", "docs/zipfit.md"])
def test_zipfit_cli_sh_examples_run_on_bundled_data(doc, tmp_path):
    # the documented commands, verbatim, from an empty folder; ccomp and python are this interpreter's
    (block,) = _sh_blocks_with(doc, "ccomp zipfit")
    prelude = f'set -e\nccomp() {{ "{sys.executable}" -m ccomp "$@"; }}\npython() {{ "{sys.executable}" "$@"; }}\n'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run(["bash", "-c", prelude + block], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr
    selected = [json.loads(line) for line in (tmp_path / "selected.jsonl").read_text().splitlines()]
    assert selected and all(row["task_id"].startswith("HumanEval/") and "score" in row for row in selected)
    assert np.load(tmp_path / "scores.npy").shape == (164,)
    if doc == "README.md":
        top3 = [json.loads(line) for line in (tmp_path / "top3.jsonl").read_text().splitlines()]
        assert top3 == selected[:3]  # stdin (gzip) to stdout selects what the file run selected
    else:
        assert "same selection" in r.stdout


def test_python_api_reads_compressed_jsonl_like_the_cli(tmp_path):
    import zstandard

    from ccomp.io import iter_jsonl

    src, tgt = _records_with_blank_lines(tmp_path)
    gz, zst = tmp_path / "s.jsonl.gz", tmp_path / "s.jsonl.zst"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    zst.write_bytes(zstandard.ZstdCompressor().compress(src.read_bytes()))
    plain = list(iter_jsonl(src))
    assert list(iter_jsonl(gz)) == plain and list(iter_jsonl(zst)) == plain  # same line numbers too
    targets = ["def add(a, b): return a + b"]
    expected = zipfit.score_jsonl(src, targets, level=1)
    assert np.array_equal(zipfit.score_jsonl(gz, targets, level=1), expected)
    assert np.array_equal(zipfit.score_jsonl(zst, targets, level=1), expected)


def test_zipfit_cli_interrupted_with_out_stdout_writes_nothing(tmp_path, capsysbinary, monkeypatch):
    from ccomp import zipfit as zf

    src, tgt = _zipfit_files(tmp_path)
    monkeypatch.setattr(zf._Scorer, "score", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["zipfit", "--target", str(tgt), "--source", str(src), "--top-k", "2", "--out", "-",
                 "--scores", str(tmp_path / "sc.npy"), "--no-progress"]) == 130
    out, err = capsysbinary.readouterr()
    assert out == b"" and b"interrupted; no output written" in err
    assert _listing(tmp_path) == ["s.jsonl", "t.jsonl"]

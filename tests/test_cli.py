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
    monkeypatch.setattr(zf, "score_jsonl", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
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

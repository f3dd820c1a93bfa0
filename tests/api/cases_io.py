"""Hostile arguments of ccomp.io (tests/test_api_args.py walks this table)."""
from ccomp import io
from tests.api import Case

MODULES = ["io"]

CASES = [
    Case("io.iter_jsonl", "path", lambda: io.iter_jsonl(3), TypeError, "path", "int"),
    Case("io.iter_jsonl", "path", lambda: io.iter_jsonl(None), TypeError, "path", "None"),
    Case("io.iter_jsonl", "path", lambda: list(io.iter_jsonl("/nonexistent/x.jsonl")), FileNotFoundError,
         "x.jsonl", "missing file"),
    Case("io.iter_jsonl_texts", "path", lambda: io.iter_jsonl_texts(b"\0".decode() + "x"), ValueError, "null",
         "NUL in path"),
    Case("io.iter_jsonl_texts", "path", lambda: io.iter_jsonl_texts([]), TypeError, "path", "list"),
    Case("io.iter_jsonl_texts", "key", lambda: io.iter_jsonl_texts(__file__, 5), TypeError, "key", "int"),
    Case("io.iter_jsonl_texts", "key", lambda: io.iter_jsonl_texts(__file__, None), TypeError, "key", "None"),
]

EXEMPT = {}

"""Reading texts and records from JSON Lines files, with errors that name the file and line."""
import json
import os

__all__ = ["iter_jsonl", "iter_jsonl_texts"]


def iter_jsonl(path):
    """Yield ``(line_number, record)`` for each non-blank line of a JSONL file.

    Raises ValueError naming the file and the line when a line is not valid
    JSON or not valid UTF-8.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}, line {lineno}: not a valid JSON record ({exc})") from None
            yield lineno, record


def iter_jsonl_texts(path, key="text"):
    """Yield the text under ``key`` of every record of a JSONL file.

    Raises ValueError naming file and line when a line is unreadable, is not a
    JSON object, or lacks ``key``; TypeError when the field is not a string.
    """
    path = os.fspath(path)
    for lineno, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
        if key not in record:
            raise ValueError(f"{path}, line {lineno}: record has no field {key!r} "
                             f"(fields: {', '.join(map(repr, list(record)[:8]))})")
        text = record[key]
        if not isinstance(text, str):
            raise TypeError(f"{path}, line {lineno}: field {key!r} must be a string, got {type(text).__name__}")
        yield text

"""Reading texts and records from JSON Lines files, with errors that name the file and line.

Every problem of a line is a ``ValueError`` (``TypeError`` for a text field that is not a string)
whose message starts with ``"<file>, line <n>:"``: invalid UTF-8, invalid JSON, JSON nested too
deeply for Python's parser, the non-standard constants ``NaN``/``Infinity`` and numbers beyond the
float range (they would be copied out as invalid JSON), integers too long for Python to parse, a
record that is not an object, a missing field, and a text that is not valid Unicode (a lone
surrogate escape such as ``"\\ud800"`` cannot be encoded as UTF-8).
"""
import json
import math

from . import _args

__all__ = ["iter_jsonl", "iter_jsonl_texts"]


def _path(path):
    return _args.path("path", path)


def _key(key):
    if not isinstance(key, str):
        raise TypeError(f"key must be a str (JSON field names are strings), got {type(key).__name__}")
    return key


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e999 would be copied out as Infinity, which is not JSON
        raise ValueError(f"number {text} is out of the float range")
    return value


def _decode(path, lineno, raw):
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"{path}, line {lineno}: not a valid JSON record (nested too deeply for the parser)") \
            from None
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}, line {lineno}: not a valid JSON record ({exc})") from None


def _records(path):
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            yield lineno, _decode(path, lineno, raw)


def iter_jsonl(path):
    """Yield ``(line_number, record)`` for each non-blank line of a JSONL file.

    Raises ValueError naming the file and the line when a line is not valid
    JSON (nested too deeply included) or not valid UTF-8; TypeError at once when
    ``path`` is not a path.
    """
    return _records(_path(path))


def _texts(path, key):
    for lineno, record in _records(path):
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
        if key not in record:
            raise ValueError(f"{path}, line {lineno}: record has no field {key!r} "
                             f"(fields: {', '.join(map(repr, list(record)[:8]))})")
        text = record[key]
        if not isinstance(text, str):
            raise TypeError(f"{path}, line {lineno}: field {key!r} must be a string, got {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{path}, line {lineno}: field {key!r} is not valid Unicode "
                                 f"({exc.reason} at character {exc.start})") from None
        yield text


def iter_jsonl_texts(path, key="text"):
    """Yield the text under ``key`` of every record of a JSONL file.

    Raises ValueError naming file and line when a line is unreadable, is not a
    JSON object, lacks ``key`` or holds a text that is not valid Unicode;
    TypeError when the field is not a string.  ``path`` and ``key`` are checked
    at the call (TypeError), the file as it is read.
    """
    return _texts(_path(path), _key(key))

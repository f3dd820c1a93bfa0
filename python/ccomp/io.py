"""Reading texts and records from JSON Lines files, with errors that name the file and line.

Every problem of a line is a ``ValueError`` (``TypeError`` for a text field that is not a string)
whose message starts with ``"<file>, line <n>:"``: invalid UTF-8, invalid JSON, JSON nested too
deeply for Python's parser, the non-standard constants ``NaN``/``Infinity`` and numbers beyond the
float range (they would be copied out as invalid JSON), integers too long for Python to parse, a
record that is not an object, a missing field, and a text that is not valid Unicode (a lone
surrogate escape such as ``"\\ud800"`` cannot be encoded as UTF-8).

A path ending in ``.gz`` is read through gzip (standard library), one ending in ``.zst`` through
the ``zstandard`` package (a clear error names it when it is not installed); a damaged compressed
stream is a ``ValueError`` naming the file and the last line read.
"""
import gzip
import io
import json
import math
import os
import zlib

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


def _zstd_reader(raw, name):
    try:
        import zstandard
    except ImportError:
        raise ValueError(f"{name}: reading .zst files needs the zstandard package (pip install zstandard)") from None
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True))


def _stream_errors():
    errors = [gzip.BadGzipFile, EOFError, zlib.error]
    try:
        import zstandard
        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def open_binary(path, name=None):
    """A binary file object over the decompressed content of path (.gz: gzip, .zst: zstd, else as is)."""
    name = path if name is None else name
    raw = open(path, "rb")
    try:
        lower = os.fsdecode(path).lower()
        if lower.endswith(".gz"):
            return _GzipOwning(raw)
        if lower.endswith(".zst"):
            return _zstd_reader(raw, name)
    except BaseException:
        raw.close()
        raise
    return raw


class _GzipOwning(gzip.GzipFile):
    """A GzipFile that closes the file it reads (GzipFile(fileobj=...) leaves it open)."""

    def __init__(self, raw):
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def records_in(f, name):
    """Yield ``(line_number, record)`` for each non-blank line of the binary file object f, named name in errors."""
    lineno = 0
    errors = _stream_errors()
    it = iter(f)
    while True:
        try:
            raw = next(it)
        except StopIteration:
            return
        except errors as exc:  # a damaged or truncated .gz/.zst stream
            raise ValueError(f"{name}, after line {lineno}: the compressed stream is damaged or truncated ({exc})") \
                from None
        lineno += 1
        if not raw.strip():
            continue
        yield lineno, _decode(name, lineno, raw)


def _records(path):
    with open_binary(path) as f:
        yield from records_in(f, path)


def count_lines(f, name, chunk=1 << 20):
    """Lines in the binary file object f (a last line without a newline counted), read in chunks: a cheap upper
    bound of the records (blank lines are counted, then skipped by the readers)."""
    errors = _stream_errors()
    n, last = 0, b"\n"
    while True:
        try:
            block = f.read(chunk)
        except errors as exc:
            raise ValueError(f"{name}: the compressed stream is damaged or truncated ({exc})") from None
        if not block:
            return n + (last != b"\n")
        n += block.count(b"\n")
        last = block[-1:]


def iter_jsonl(path):
    """Yield ``(line_number, record)`` for each non-blank line of a JSONL file.

    Raises ValueError naming the file and the line when a line is not valid
    JSON (nested too deeply included) or not valid UTF-8; TypeError at once when
    ``path`` is not a path.
    """
    return _records(_path(path))


def texts_in(records, path, key, where="line"):
    """The texts under key of (number, record) pairs read from path; errors say '<path>, <where> <number>:'."""
    for lineno, record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{path}, {where} {lineno}: expected a JSON object, got {type(record).__name__}")
        if key not in record:
            raise ValueError(f"{path}, {where} {lineno}: record has no field {key!r} "
                             f"(fields: {', '.join(map(repr, list(record)[:8]))})")
        text = record[key]
        if not isinstance(text, str):
            raise TypeError(f"{path}, {where} {lineno}: field {key!r} must be a string, got {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{path}, {where} {lineno}: field {key!r} is not valid Unicode "
                                 f"({exc.reason} at character {exc.start})") from None
        yield text


def iter_jsonl_texts(path, key="text"):
    """Yield the text under ``key`` of every record of a JSONL file.

    Raises ValueError naming file and line when a line is unreadable, is not a
    JSON object, lacks ``key`` or holds a text that is not valid Unicode;
    TypeError when the field is not a string.  ``path`` and ``key`` are checked
    at the call (TypeError), the file as it is read.
    """
    path, key = _path(path), _key(key)
    return texts_in(_records(path), path, key)

"""Where ``ccomp zipfit`` reads records from: JSONL (plain, ``.jsonl.gz``, ``.jsonl.zst`` or ``-`` for
stdin), Parquet (``*.parquet``, with pyarrow) or a Hugging Face dataset (``hf:NAME[:SPLIT]``, with
``datasets``).

Every source gives ``count()`` (the record total for the progress bar, or None), ``texts(key)`` and
``records()`` (``(number, record)`` pairs), and ``where`` ("line" or "row") for error messages; the
scoring pass and the selection pass read the same records in the same order.  Stdin is copied once
to an anonymous temporary file (bounded memory, removed on exit), since ZIP-FIT reads its source twice.
"""
import os
import shutil
import sys
import tempfile

from . import io as _io
from ._cli_output import check_input

__all__ = ["open_source", "STDIN"]

STDIN = "-"
_GZIP_MAGIC, _ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


class _Jsonl:
    where = "line"

    def __init__(self, path, what):
        check_input(path, what)
        self.path = self.name = path

    def _open(self):
        return _io.open_binary(self.path)

    def count(self):
        with self._open() as f:
            return _io.count_lines(f, self.name)

    def records(self):
        with self._open() as f:
            yield from _io.records_in(f, self.name)

    def texts(self, key):
        return _io.texts_in(self.records(), self.name, key)

    def close(self):
        pass


class _Stdin(_Jsonl):
    """Stdin spooled to an anonymous temporary file; gzip or zstd content is recognised by its magic bytes."""

    def __init__(self, what):
        self.name = "<stdin>"
        self._tmp = tempfile.TemporaryFile()
        shutil.copyfileobj(sys.stdin.buffer, self._tmp, 1 << 20)
        self._tmp.seek(0)
        head = self._tmp.read(4)
        self._kind = "gz" if head[:2] == _GZIP_MAGIC else "zst" if head == _ZSTD_MAGIC else ""

    def _open(self):
        raw = os.fdopen(os.dup(self._tmp.fileno()), "rb")  # its own descriptor: closing it keeps the spool
        raw.seek(0)
        if self._kind == "gz":
            return _io._GzipOwning(raw)
        if self._kind == "zst":
            return _io._zstd_reader(raw, self.name)
        return raw

    def close(self):
        self._tmp.close()


def _missing(package, what):
    return ValueError(f"{what} needs the {package} package, which is not installed (pip install {package})")


class _Parquet:
    where = "row"

    def __init__(self, path, what):
        check_input(path, what)
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise _missing("pyarrow", f"{what} {path}: reading Parquet") from None
        self.name = path
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
            raise ValueError(f"{what} {path}: not a readable Parquet file ({exc})") from None

    def count(self):
        return self._file.metadata.num_rows

    def _rows(self, columns=None):
        n = 0
        for batch in self._file.iter_batches(batch_size=4096, columns=columns):
            for row in batch.to_pylist():
                n += 1
                yield n, row

    def records(self):
        return self._rows()

    def texts(self, key):
        if key not in self._file.schema_arrow.names:
            names = ", ".join(map(repr, self._file.schema_arrow.names[:8]))
            raise ValueError(f"{self.name}: no column {key!r} (columns: {names})")
        return _io.texts_in(self._rows([key]), self.name, key, "row")

    def close(self):
        getattr(self._file, "close", lambda: None)()  # ParquetFile.close is recent (pyarrow >= 13)


class _HuggingFace:
    where = "row"

    def __init__(self, spec, what):
        name, _, split = spec[len("hf:"):].partition(":")
        if not name:
            raise ValueError(f"{what} {spec}: name a dataset, hf:NAME or hf:NAME:SPLIT")
        try:
            import datasets
        except ImportError:
            raise _missing("datasets", f"{what} {spec}: a Hugging Face dataset") from None
        self.name = spec
        try:
            self._data = datasets.load_dataset(name, split=split or "train")
        except Exception as exc:  # network, missing dataset or split: whatever datasets raises, said plainly
            raise ValueError(f"{what} {spec}: cannot load the dataset ({type(exc).__name__}: {exc})") from None

    def count(self):
        return len(self._data)

    def records(self):
        return ((i, dict(row)) for i, row in enumerate(self._data, 1))

    def texts(self, key):
        return _io.texts_in(self.records(), self.name, key, "row")

    def close(self):
        pass


def open_source(spec, what):
    """The source named on the command line: '-' (stdin), 'hf:NAME[:SPLIT]', '*.parquet', else a JSONL file."""
    if spec == STDIN:
        return _Stdin(what)
    if spec.startswith("hf:") and not os.path.exists(spec):  # a local file of that name is read as a file
        return _HuggingFace(spec, what)
    if spec.lower().endswith(".parquet"):
        return _Parquet(spec, what)
    return _Jsonl(spec, what)

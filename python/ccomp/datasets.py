"""The real sample data bundled with ccomp, wherever ccomp is installed.

The files live in the package (``ccomp/data/``), so they travel with the wheel
and the sdist; nothing depends on the working directory.  Set ``CCOMP_DATA``
to a folder with the same layout to read another copy instead.

- ``corpus/``: the Canterbury-corpus texts ``alice29.txt``, ``asyoulik.txt``,
  ``lcet10.txt``, ``plrabn12.txt`` and other real files (``html``, ``urls.10K``,
  ``geo.protodata``, ``kppkn.gtb``, ``fireworks.jpeg``, ``paper-100k.pdf``),
  from snappy's test data (licence: ``corpus/COPYING.snappy``).
- ``zipfit/HumanEval.jsonl``: the 164 HumanEval problems (MIT, ``zipfit/LICENSE.human-eval``).
- ``docs/*.pdf``: mathematical exercise documents from ProofNet (MIT, ``docs/LICENSE.proofnet``).

>>> from ccomp import datasets
>>> "alice29.txt" in datasets.corpus_names()
True
>>> len(datasets.corpus("alice29.txt"))
152089
>>> prompts = datasets.humaneval()
>>> len(prompts), prompts[0].startswith("from typing import List")
(164, True)
>>> datasets.pdf_names()
['Artin.pdf', 'Dummit-Foote.pdf', 'Herstein.pdf']
"""
import codecs
import json
import os

__all__ = ["data_dir", "path", "corpus_names", "corpus", "corpus_text", "humaneval", "humaneval_path",
           "pdf_names", "pdf", "pdfs"]

ENV = "CCOMP_DATA"
_BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_LICENCES = ("COPYING.", "LICENSE.")  # licence files sit next to the data they cover; they are not samples


def data_dir():
    """The data folder in use: ``$CCOMP_DATA`` when set, else the copy inside the package."""
    override = os.environ.get(ENV)
    if override:
        if not os.path.isdir(override):
            raise FileNotFoundError(f"{ENV}={override!r} is not a folder (unset it to use the data bundled with ccomp)")
        return os.path.abspath(override)
    if not os.path.isdir(_BUNDLED):
        raise FileNotFoundError(f"the data bundled with ccomp is missing ({_BUNDLED}); reinstall ccomp or set {ENV}")
    return _BUNDLED


def path(*parts):
    """The absolute path of a bundled file or folder, e.g. ``path("corpus", "alice29.txt")``.

    Every part must be a plain name (no separators, no ``..``), so a path never leaves the data folder.
    """
    if not parts:
        return data_dir()
    for p in parts:
        if not isinstance(p, str):
            raise TypeError(f"path parts must be str, got {type(p).__name__}")
        if p in ("", ".", "..") or "/" in p or os.sep in p or (os.altsep and os.altsep in p) or "\0" in p:
            raise ValueError(f"path parts must be plain file or folder names, got {p!r}")
    full = os.path.join(data_dir(), *parts)
    if not os.path.exists(full):
        raise FileNotFoundError(f"{'/'.join(parts)} is not in the data folder {data_dir()}")
    return full


def _listing(folder, keep):
    d = path(folder)
    return sorted(f for f in os.listdir(d)
                  if keep(f) and not f.startswith(_LICENCES) and os.path.isfile(os.path.join(d, f)))


def _checked(name, folder, names, what):
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be str, got {type(name).__name__}")
    if name not in names:
        choices = f"choose one of {', '.join(names)}" if names else "it holds none"
        raise ValueError(f"no {what} named {name!r} in {path(folder)}; {choices}")
    return name


def corpus_names():
    """The files of ``corpus/``, sorted (licence files left out)."""
    return _listing("corpus", lambda f: True)


def _corpus_file(name):
    return path("corpus", _checked(name, "corpus", corpus_names(), "corpus file"))


def corpus(name):
    """The bytes of one corpus file, e.g. ``corpus("alice29.txt")``."""
    with open(_corpus_file(name), "rb") as f:
        return f.read()


def corpus_text(name, encoding="utf-8", errors="replace"):
    """One corpus file as text, read as ``open(..., encoding=encoding, errors=errors)`` reads it
    (universal newlines: ``\\r\\n`` becomes ``\\n``)."""
    for arg, value, lookup in (("encoding", encoding, codecs.lookup), ("errors", errors, codecs.lookup_error)):
        if not isinstance(value, str):
            raise TypeError(f"{arg} must be str, got {type(value).__name__}")
        try:
            lookup(value)
        except LookupError as e:  # open() would raise LookupError, which is no ValueError
            raise ValueError(f"{arg}: {e}") from None
    with open(_corpus_file(name), encoding=encoding, errors=errors) as f:
        return f.read()


def humaneval_path():
    """The path of ``zipfit/HumanEval.jsonl`` (one JSON record per line)."""
    return path("zipfit", "HumanEval.jsonl")


def humaneval(field="prompt"):
    """The 164 HumanEval problems in file order: each record's ``field`` (default the prompt),
    or the whole records (dicts with task_id, prompt, canonical_solution, test, entry_point) when
    ``field`` is None."""
    if field is not None and not isinstance(field, str):
        raise TypeError(f"field must be a str or None, got {type(field).__name__}")
    with open(humaneval_path(), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if field is None:
        return records
    if field not in records[0]:
        raise ValueError(f"HumanEval records have no field {field!r}; they have {', '.join(records[0])}")
    return [r[field] for r in records]


def pdf_names():
    """The names of the bundled PDFs in ``docs/``, sorted."""
    return _listing("docs", lambda f: f.lower().endswith(".pdf"))


def pdf(name):
    """The absolute path of one bundled PDF, e.g. ``pdf("Artin.pdf")``."""
    return path("docs", _checked(name, "docs", pdf_names(), "PDF"))


def pdfs():
    """The absolute paths of every bundled PDF, sorted by name."""
    return [pdf(n) for n in pdf_names()]

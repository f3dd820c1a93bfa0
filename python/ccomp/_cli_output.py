"""Files written by the command line: complete or not at all, and only ever regular files.

Every output goes to a temporary file with a unique name (``tempfile.mkstemp``) in the destination
folder and is renamed into place once complete, so an interrupted or failed run (KeyboardInterrupt
included) leaves neither a partial output nor a temporary file, and concurrent runs never share a
temporary name.  A destination that exists and is not a regular file (a directory, a FIFO, a device
node, a socket, a symbolic link) is never replaced, with or without ``--force``: the rename would
put a regular file in its place.  Inputs must be regular files too (a FIFO or ``/dev/zero`` could
block or never end).  The one output that is not a file is ``ccomp zipfit --out -`` (stdout, which
cannot be renamed into place): the CLI writes it only once all the work has succeeded.
"""
import os
import stat
import tempfile

__all__ = ["check_input", "check_output", "AtomicOutput", "same_file"]


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def _named(path, what):
    """ValueError for a path that cannot name a file: empty, or with a NUL character."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what}: the path is empty")
    if ("\0" if isinstance(path, str) else b"\0") in path:
        raise ValueError(f"{what} {path!r}: a path cannot contain a NUL character")
    return path


def check_input(path, what="input"):
    """ValueError unless path names a regular file (symbolic links to one are followed)."""
    path = _named(path, what)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is a {_kind(st.st_mode)}, not a regular file")


def check_output(path, force, what="output"):
    """Checks a destination before any work: its folder exists; if it exists, it is a regular file
    (never replaced otherwise) and force allows replacing it."""
    path = _named(path, what)
    if path.endswith(os.sep if isinstance(path, str) else os.sep.encode()):
        raise ValueError(f"{what} {path} ends with {os.sep}: name a file, not a folder")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{what} {path}: folder {folder} does not exist") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is a {_kind(st.st_mode)}, not a regular file; ccomp only replaces "
                         f"regular files (even with --force)")
    if st is not None and not force:
        raise FileExistsError(f"{what} {path} exists (use --force to overwrite)")
    if not os.access(folder, os.W_OK | os.X_OK):  # said now, not after the work
        raise PermissionError(f"{what} {path}: folder {folder} is not writable")


def same_file(a, b):
    """True when a and b name the same existing file (or the same path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicOutput:
    """``with AtomicOutput(path, force) as f: f.write(...)``: f is a binary file on a fresh temporary in
    path's folder; a clean exit renames it to path (refusing to replace anything check_output
    refuses), any exception removes it."""

    def __init__(self, path, force, what="output"):
        check_output(path, force, what)
        self.path, self.force, self.what = os.fspath(path), force, what
        self.tmp = None
        self.file = None

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=folder)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's 0600
            self.file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        return self.file

    def __exit__(self, exc_type, exc, tb):
        try:
            self.file.close()
            if exc_type is None:
                self._commit()
        finally:
            if os.path.lexists(self.tmp):
                os.unlink(self.tmp)
        return False

    def _commit(self):
        # checked again: the destination may have appeared or changed while we worked
        check_output(self.path, self.force, self.what)
        if self.force:
            os.replace(self.tmp, self.path)
            return
        try:
            os.link(self.tmp, self.path)  # fails if the path appeared meanwhile: never clobbers
        except FileExistsError:
            raise FileExistsError(f"{self.what} {self.path} appeared while writing (use --force to overwrite)") \
                from None
        except OSError:  # a file system without hard links
            os.replace(self.tmp, self.path)

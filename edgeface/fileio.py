"""Atomic file writes: a reader (or a crash) never sees half a file, and no temp file is left behind.

Every file edgeface writes for a user -- galleries, manifests, crops, plots, run state, checkpoints, CSVs --
goes through here.  Standard library only, so the board runtime imports it for free.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def umask_mode(base: int) -> int:
    """``base`` (0o666 for files, 0o777 for folders) less the process umask: the mode open()/mkdir() give.

    mkstemp/mkdtemp create 0600/0700 entries; what edgeface writes must be readable by whoever the umask lets
    read it (a service user on the board, a colleague), like any file written plainly.
    """
    return base & ~_umask()


def _umask() -> int:
    try:  # Linux says it without changing it (setting it, even briefly, races with other threads' files)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, and put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp", private: bool = False) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed onto ``path`` when the block ends without an exception,
    deleted when it raises.

    For writers that want a file name (``fig.savefig``, ``model.save``); ``suffix`` keeps the extension those
    pick their format from.  The parent folder is created if missing.  A new file gets the umask's mode, or
    0600 when ``private`` (face templates and face crops are biometric data: no other account on a board
    should read them).  A file that already exists keeps its mode (a gallery someone made 0600 stays 0600, and
    one a user opened up on purpose is not narrowed behind their back), and a symbolic link keeps pointing at
    the file it names, which gets the new content (renaming onto the link would replace the link with a plain
    file).
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:  # a new file: the mode open() would give it, or the owner's alone
        mode = 0o600 if private else umask_mode(0o666)
    # Same folder: os.replace is atomic only within one filesystem.  Hidden, and named after the target, so
    # debris from a killed process says where it came from.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # cleaning up must not hide the reason the write failed
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False, private: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``fsync`` also flushes it to the disk before the rename (for
    files a power cut on a board must not lose, like the gallery); ``private``: a new file is 0600."""
    with atomic_output(path, private=private) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def nearest_existing_parent(path: str | os.PathLike) -> Path:
    """The closest folder above ``path`` that exists (where creating ``path`` and its parents starts)."""
    probe = Path(path).resolve().parent
    while not probe.exists():
        probe = probe.parent
    return probe


def check_writable_file(path: str | os.PathLike, option: str) -> None:
    """A :class:`~edgeface.errors.UserError` now, for an output file that could not be written later.

    For outputs written at the end of long work (a benchmark's CSV, a plot): the mistake is found before
    the minutes of measuring, not after.
    """
    from edgeface.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder: give a file name")
    probe = nearest_existing_parent(path)
    if not probe.is_dir():
        raise UserError(f"{option} {path}: cannot create it, {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{option} {path}: not writable (check permissions or choose another path)")


class PreadFile:
    """A file opened read-only and read with ``os.pread`` at byte offsets (safe to share between threads): the
    descriptor's lifetime (``close``, ``with``, closed when collected) and whole reads, for the pack readers.

    A missing file is a :class:`~edgeface.errors.UserError` saying ``WHAT not found: PATH``.
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        from edgeface.errors import UserError

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{what} not found: {self.path}")
        self._fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def close(self) -> None:
        """Release the file descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _pread(self, n: int, offset: int) -> bytes:
        """``n`` bytes from ``offset`` (fewer only at the end of the file)."""
        data = os.pread(self._fd, n, offset)
        while len(data) < n:  # pread may return less than asked (signals, network filesystems)
            more = os.pread(self._fd, n - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data

    def where(self, record: int | None, offset: int) -> str:
        """``FILE: record N at byte B`` for messages."""
        name = f"record {record}" if record is not None else "record"
        return f"{self.path}: {name} at byte {offset}"


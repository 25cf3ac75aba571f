"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Every file the project writes that a user keeps (checkpoints, caches, ``metrics.csv`` when it is
rewritten, benchmark JSON, ``RESULTS.md``) goes through :func:`atomic_write`: the bytes go to a
temporary file in the destination folder (``.NAME.<random>.tmp``), are flushed to disk, and then
``os.replace`` puts them in place, which is atomic on POSIX and Windows. The old file, if any, stays
intact until the new one is complete. A failure (disk full, read-only folder, a path that is a
file) raises :class:`WriteError`, one line naming the path; the temporary file is removed.

Without ``--overwrite`` a command's final write is a no-clobber one (``overwrite=False``): the
complete temporary is hard-linked into place (``os.link`` fails if the name exists, atomically), so
a file that another process wrote there while this one worked is kept, and the write raises
:class:`ClobberError` naming it (checking before the work alone leaves that window open).

:func:`remove_stale_temporaries` clears the ``.NAME.*.tmp`` files that a process killed mid-write
(SIGKILL, power loss) leaves behind.

This module imports nothing from the project: every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


class WriteError(OSError):
    """A file could not be written: the message names the path and the reason in one line."""


class ClobberError(WriteError):
    """A no-clobber write found its path taken by a file that appeared meanwhile (kept)."""


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only or not yours)"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err).strip().splitlines()
    # torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc...]"
    if text and "enforce fail" in text[0]:
        return "the write failed (is the disk full?)"
    return text[0] if text else type(err).__name__


def check_folder(folder: str | Path, flag: str = "") -> Path:
    """``folder`` created if missing; :class:`WriteError` naming it (and ``flag``) when it is a
    file, cannot be created or cannot be written to."""
    folder = Path(folder)
    what = f"{flag} {folder}" if flag else str(folder)
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{what} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{what}: cannot create the folder: {_reason(e)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteError(f"{what}: cannot write to the folder: permission denied")
    return folder


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *,
                 overwrite: bool = True, flag: str = "") -> Path:
    """Call ``write(f)`` on a binary file object, then move the result to ``path`` atomically.

    Raises :class:`WriteError` naming ``path`` when the folder or the disk refuses; ``path``
    itself is then untouched. ``overwrite=False``: never replace a file at ``path``, even one
    that appeared a moment ago (:class:`ClobberError` naming it and ``flag``)."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path} is a folder, not a file")
    if path.parent.exists() and not path.parent.is_dir():
        raise WriteError(f"{path}: {path.parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {_reason(e)}") from None
    try:
        _set_mode(fd, path)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path, flag)
    except ClobberError:
        _unlink_quietly(tmp)
        raise
    except (OSError, RuntimeError) as e:
        _unlink_quietly(tmp)
        raise WriteError(f"cannot write {path}: {_reason(e)}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _link_new(tmp: str, path: Path, flag: str) -> None:
    """Put the complete temporary ``tmp`` at ``path`` only if no file is there: a hard link
    (atomic, fails if the name exists), or where the file system has none, the name claimed with
    ``O_CREAT | O_EXCL`` and then replaced. :class:`ClobberError` when the name is taken."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _appeared(path, flag) from None
    except OSError:  # no hard links here (FAT, some network file systems)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise _appeared(path, flag) from None
        try:
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(path)  # our empty claim, not a result
            raise
    else:
        _unlink_quietly(tmp)


def _appeared(path: Path, flag: str) -> ClobberError:
    what = f"{flag} {path}" if flag else str(path)
    again = f"another {flag}" if flag else "another path"
    return ClobberError(f"{what} appeared while this command ran (another process wrote it) and "
                        f"is kept: --overwrite to replace it, or {again}")


def _set_mode(fd: int, path: Path) -> None:
    """Give the temporary file the mode ``open(path, "w")`` would: an existing file's own, else
    0o666 less the umask (``mkstemp`` makes it 0o600, which would hide every checkpoint and
    metrics file from the group and from other users on a shared machine)."""
    if not hasattr(os, "fchmod"):  # Windows before Python 3.13: modes barely apply there
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.fchmod(fd, mode)


def write_text(path: str | Path, text: str, *, overwrite: bool = True, flag: str = "") -> Path:
    """``text`` (UTF-8) to ``path``, atomically (``overwrite``, ``flag``: :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode()), overwrite=overwrite, flag=flag)


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True,
                flag: str = "") -> Path:
    """``data`` to ``path``, atomically (``overwrite``, ``flag``: :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data), overwrite=overwrite, flag=flag)


def refuse_existing(paths, flag: str, overwrite: bool) -> None:
    """Results are never replaced without ``--overwrite``: a ``ValueError`` naming ``flag``
    and the first of ``paths`` that exists as a file, unless ``overwrite``. Call it before the
    work, and write with ``overwrite=overwrite`` after it: a file that appeared meanwhile is then
    kept too. (A folder in the way is left to the write, whose error names it.)"""
    if overwrite:
        return
    for p in map(Path, paths):
        if p.exists() and not p.is_dir():
            raise ValueError(f"{flag} {p} exists: --overwrite to replace it, or another {flag}")


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` when its process
    was killed mid-write (all of them, or only those of the file ``name``). Returns what it
    removed. Call it only in a folder this process owns (a run folder under its lock)."""
    folder = Path(folder)
    pattern = f".{name}.*{TMP_SUFFIX}" if name else f".*{TMP_SUFFIX}"
    removed = []
    for p in folder.glob(pattern):
        if p.is_file() and not p.is_symlink():
            _unlink_quietly(p)
            removed.append(p)
    return removed


def _unlink_quietly(p: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)

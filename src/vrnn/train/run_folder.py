"""A training run's folder (``--out``): one process at a time, no stale files, no mixed runs.

    with RunFolder("runs/x") as run:          # refuses while another process trains there
        run.remove_stale_temporaries()        # what a kill mid-write left (.last.pt.*.tmp, ...)
        if run.existing_results() and overwrite:
            run.clear()                       # every old result goes, or none does
        rows, notes = repair_metrics(run.path / "metrics.csv", METRIC_FIELDS)

The lock is ``<out>/.lock``, created with ``O_CREAT | O_EXCL`` and held with ``fcntl.flock``
while the run lives, holding ``{"pid", "host", "started"}``. The kernel drops a flock when its
process dies, however it dies (SIGKILL, power loss of a client), so a lock file whose flock is
free is stale and is taken over with a warning naming the dead pid. Where flock is not available
(Windows, some network file systems) the pid is checked instead, which only works on the host
that wrote the lock: a lock written on another host is refused, with how to remove it.

Only :meth:`RunFolder.clear` and :meth:`RunFolder.remove_stale_temporaries` delete anything, and
both are meant to run under the lock, in a folder no other process writes to.

This module imports only :mod:`vrnn.host.files` and the standard library.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import secrets
import shutil
import socket
import stat
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from vrnn.host import files

try:
    import fcntl
except ImportError:  # Windows: the pid check alone
    fcntl = None

LOCK_NAME = ".lock"
TRASH_PREFIX = ".trash-"

RESULT_NAMES = ("last.pt", "best.pt", "metrics.csv", "config.json", "tensorboard")
"""What ``vrnn train`` writes in its ``--out`` (see :mod:`vrnn.train.loop`,
:mod:`vrnn.store.checkpoint`):
the checkpoints, the metrics, the resolved config and the TensorBoard event folder. A run's
results are these and any TensorBoard event file (``events.out.tfevents.*``) at the top level;
``samples/`` and pictures that ``vrnn sample`` or ``vrnn analyse`` put beside a checkpoint are
the user's, not the run's."""
EVENT_GLOB = "events.out.tfevents.*"

_YOUNG_S = 2.0
"""A lock file younger than this with no content yet is being written by its owner, not stale."""


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (in use, or a damaged file): one line naming it."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (True when this cannot be checked)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would *terminate* it on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def _try_flock(fd: int) -> bool | None:
    """Take an exclusive flock on ``fd`` without waiting: True taken, False held by another open
    file, None when this file system or platform has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, EINVAL: a file system without flock
    return True


class RunFolder:
    """The ``--out`` folder of one training run, locked by this process.

    Args:
        path: the folder; created by :meth:`acquire` when missing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path / LOCK_NAME
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, locked={self.locked})"

    @property
    def locked(self) -> bool:
        """Whether this object holds the folder's lock."""
        return self._fd is not None

    # -- the lock -------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Create the folder if missing and lock it for this process.

        Raises:
            files.WriteError: the path is a file, or the folder cannot be created or written.
            RunFolderError: another live process holds the folder (its pid, host and start
                time in the message), or a process on another host does.
        Warns (RuntimeWarning) when it takes over the lock of a process that is gone.
        """
        if self._fd is not None:
            return
        files.check_folder(self.path, "--out")
        deadline = time.monotonic() + 3 * _YOUNG_S
        while time.monotonic() < deadline:  # each pass locks or raises, unless a race intervenes
            if self._create() or self._take_over():
                return
            time.sleep(0.01)  # a lock released, or being written, meanwhile: look again
        raise RunFolderError(f"{self.path}: could not take its lock {self.lock_path} (other "
                             f"processes keep taking and releasing it); try again")

    def _create(self) -> bool:
        """Make the lock file ours if there is none: True when it is.

        The record is written and flocked in a temporary file first, then hard-linked to
        ``.lock`` (``link`` fails if the name exists, atomically): no other process ever sees
        an empty or unlocked ``.lock`` of a live run. The temporary (``.lock.*.tmp``) goes
        right after, or with :meth:`remove_stale_temporaries` after a kill."""
        tmp = self.path / f"{LOCK_NAME}.{os.getpid()}.{secrets.token_hex(4)}{files.TMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except OSError as e:
            raise files.WriteError(f"--out {self.path}: cannot create {self.lock_path}: "
                                   f"{files._reason(e)}") from None
        ours = False
        try:
            _try_flock(fd)  # nobody else knows this file yet: taken, or no flock here
            self._write_record(fd)
            try:
                os.link(tmp, self.lock_path)
            except (FileExistsError, FileNotFoundError):  # a lock exists / tmp was cleaned
                return False
            except OSError:  # a file system without hard links
                return self._create_in_place()
            self._fd, ours = fd, True
            return True
        finally:
            files._unlink_quietly(tmp)
            if not ours:
                os.close(fd)

    def _create_in_place(self) -> bool:
        """:meth:`_create` where hard links fail: ``O_CREAT | O_EXCL`` on ``.lock`` itself, then
        flock and record (others wait while it is young and empty)."""
        try:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise files.WriteError(f"--out {self.path}: cannot create {self.lock_path}: "
                                   f"{files._reason(e)}") from None
        return self._hold(fd)

    def _hold(self, fd: int) -> bool:
        """Flock ``fd`` (the lock file we just created) and write our record; False if another
        process kept its flock (then the file is theirs to judge)."""
        # another process probing the still empty file may hold its flock for a moment
        deadline = time.monotonic() + _YOUNG_S
        while _try_flock(fd) is False:
            if time.monotonic() > deadline:
                os.close(fd)
                return False
            time.sleep(0.01)
        try:
            self._write_record(fd)
        except files.WriteError:
            files._unlink_quietly(self.lock_path)
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _write_record(self, fd: int) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        data = (json.dumps(record) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            if hasattr(os, "pwrite"):
                os.pwrite(fd, data, 0)
            else:
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, data)
            os.fsync(fd)
        except OSError as e:
            raise files.WriteError(f"cannot write {self.lock_path}: {files._reason(e)}") from None

    def _take_over(self) -> bool:
        """The lock file exists: refuse (RunFolderError), take it over (True), or ask the caller
        to try again (False: it went away or is being written)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return False  # released meanwhile
        except OSError as e:
            raise files.WriteError(f"--out {self.path}: cannot open {self.lock_path}: "
                                   f"{files._reason(e)}") from None
        keep = False
        try:
            flocked = _try_flock(fd)
            if flocked and not self._same_file(fd):
                return False  # we locked a file that its owner unlinked meanwhile
            record, young = self._read_record(fd)
            pid, host = record.get("pid"), record.get("host")
            started = record.get("started", "an unknown time")
            me = socket.gethostname()
            if flocked is False:
                if record or not young:
                    raise self._in_use(pid, host, started)
                return False  # its owner is writing it: look again
            if not record and young:
                return False  # created in place a moment ago, not yet flocked
            if host not in (None, me):
                raise RunFolderError(
                    f"{self.path} is locked by pid {pid} on host {host} since {started}, which "
                    f"cannot be checked from {me}; if that process is gone, delete "
                    f"{self.lock_path} and run again, or use another --out")
            if flocked is None and isinstance(pid, int) and _pid_alive(pid):
                raise self._in_use(pid, host or me, started)
            if not isinstance(pid, int):
                who = "an unknown process (the lock file holds no pid)"
            elif _pid_alive(pid):
                who = f"pid {pid} (since {started}), which no longer holds it"
            else:
                who = f"pid {pid} (since {started}), which is no longer running"
            warnings.warn(f"{self.path}: taking over the lock of {who}", RuntimeWarning,
                          stacklevel=3)
            if flocked:  # we hold the flock on the very file at the path: reuse it
                self._write_record(fd)
                self._fd = fd
                keep = True
                return True
            files._unlink_quietly(self.lock_path)  # no flock here: the pid said it is gone
            return False
        finally:
            if not keep:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _in_use(self, pid, host, started) -> RunFolderError:
        who = (f"pid {pid} on host {host} since {started}" if pid is not None
               else f"another process (no record in {self.lock_path})")
        return RunFolderError(f"{self.path} is in use by {who}; wait for it or use another "
                              f"--out")

    def _same_file(self, fd: int) -> bool:
        try:
            here = os.stat(self.lock_path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _read_record(self, fd: int) -> tuple[dict, bool]:
        """The lock's JSON record ({} when empty or unreadable) and whether the file is young."""
        raw = b""
        try:
            raw = os.pread(fd, 4096, 0) if hasattr(os, "pread") else os.read(fd, 4096)
            young = time.time() - os.fstat(fd).st_mtime < _YOUNG_S
        except OSError:
            young = False
        try:
            record = json.loads(raw.decode() or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = {}
        return (record if isinstance(record, dict) else {}), young

    def release(self) -> None:
        """Remove the lock, if this object holds it (a lock that is not ours is left alone)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._same_file(fd):
                files._unlink_quietly(self.lock_path)  # while still flocked: no one sees it free
        finally:
            os.close(fd)

    def __enter__(self) -> RunFolder:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- what is in it --------------------------------------------------------------------------

    def existing_results(self) -> list[Path]:
        """The results of an earlier run in the folder (:data:`RESULT_NAMES`, TensorBoard event
        files), sorted; [] for a missing or empty folder."""
        if not self.path.is_dir():
            return []
        found = {self.path / n for n in RESULT_NAMES if os.path.lexists(self.path / n)}
        found.update(self.path.glob(EVENT_GLOB))
        return sorted(found)

    def clear(self) -> None:
        """``--overwrite``: remove every result of an earlier run, so that none survives beside
        the new run's files. Call it under the lock.

        The results are first moved (``os.replace``, atomic each) into a hidden ``.trash-<pid>``
        folder, then that is deleted: a crash midway leaves only old results in the folder (the
        next run then refuses again without ``--overwrite``), never a mix with new ones; a
        trash folder left behind goes with :meth:`remove_stale_temporaries`.

        Raises:
            files.WriteError: a result cannot be moved (a read-only folder), naming it.
        """
        results = self.existing_results()
        if not results:
            return
        trash = self.path / f"{TRASH_PREFIX}{os.getpid()}"
        if os.path.lexists(trash):
            _rmtree(trash)
        try:
            trash.mkdir()
        except OSError as e:
            raise files.WriteError(f"--overwrite: cannot clear {self.path}: "
                                   f"{files._reason(e)}") from None
        # last.pt first: a folder without it is not resumable, so a half-cleared folder can
        # never be taken for a run to continue
        results.sort(key=lambda p: p.name != "last.pt")
        for p in results:
            try:
                try:
                    os.replace(p, trash / p.name)
                except PermissionError:
                    if not p.is_dir() or p.is_symlink():
                        raise
                    os.chmod(p, stat.S_IMODE(p.stat().st_mode) | stat.S_IRWXU)  # moving a
                    os.replace(p, trash / p.name)  # folder rewrites its '..': needs write access
            except OSError as e:
                raise files.WriteError(f"--overwrite: cannot remove {p}: "
                                       f"{files._reason(e)}") from None
        _rmtree(trash)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete what interrupted writes left: the ``.NAME.*.tmp`` files of
        :func:`vrnn.host.files.atomic_write` and of ``checkpoint.save_atomic`` (``.last.pt.*.tmp``,
        the same pattern), and ``.trash-*`` folders of an interrupted :meth:`clear`. Returns
        what it removed. Call it under the lock: another writer's temporaries would go too."""
        if not self.path.is_dir():
            return []
        removed = files.remove_stale_temporaries(self.path)
        for p in self.path.glob(f"{TRASH_PREFIX}*"):
            if p.is_dir() and not p.is_symlink():
                _rmtree(p)
                removed.append(p)
        return sorted(removed)


def _rmtree(folder: Path) -> None:
    """``shutil.rmtree``, making read-only entries writable on the way (a warning, not an error,
    if something still stays: the results are already out of the run folder)."""

    def retry(func, p, _exc_info):
        try:
            os.chmod(os.path.dirname(p) or ".", stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    for _ in range(2):  # a second pass for what a read-only folder hid from the first
        if sys.version_info >= (3, 12):
            shutil.rmtree(folder, onexc=lambda f, p, e: retry(f, p, None))
        else:
            shutil.rmtree(folder, onerror=retry)
        if not os.path.lexists(folder):
            return
    warnings.warn(f"could not delete {folder} entirely; delete it by hand", RuntimeWarning,
                  stacklevel=3)


def repair_metrics(path: Path, fields: Sequence[str]) -> tuple[list[dict], list[str]]:
    """The rows of a run's ``metrics.csv`` as dicts of strings keyed by ``fields``, and notes.

    A partial last line (no line end, or fewer columns than the header: what a kill mid-write
    leaves) is dropped with a note. A header that differs from ``fields`` (a run of another
    version) is read by name: missing columns are empty, with a note. A missing file gives
    ([], []).

    Raises:
        RunFolderError: another malformed row (a wrong number of columns, a step that is not a
            whole number), or a header without ``step``, naming the file and the line.
    """
    path = Path(path)
    fields = list(fields)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    except OSError as e:
        raise RunFolderError(f"cannot read {path}: {files._reason(e)}") from None
    partial = f"{path}: dropped a partial last line (from an interrupted write)"
    lines = text.split("\n")
    complete = lines[:-1]  # the last piece has no line end: empty, or a partial line
    notes: list[str] = []
    if lines[-1].strip():
        notes.append(partial)
    parsed = [(n, next(csv.reader([line.rstrip("\r")]), []))
              for n, line in enumerate(complete, 1)]
    parsed = [(n, cells) for n, cells in parsed if cells]  # blank lines
    if not parsed:
        return [], notes
    head_no, header = parsed[0]
    if "step" not in header:
        raise RunFolderError(f"{path}, line {head_no}: the header has no 'step' column "
                             f"(is this a vrnn metrics.csv?)")
    if header != fields:
        missing = [f for f in fields if f not in header]
        notes.append(f"{path}: written with other columns"
                     + (f" (no {', '.join(missing)})" if missing else ""))
    rows = []
    for i, (n, cells) in enumerate(parsed[1:], 1):
        if len(cells) != len(header):
            if i == len(parsed) - 1 and len(cells) < len(header) and notes[:1] != [partial]:
                notes.insert(0, partial)
                break
            raise RunFolderError(f"{path}, line {n}: {len(cells)} columns where the header has "
                                 f"{len(header)} (a damaged file: repair or delete that line)")
        row = dict(zip(header, cells))
        try:
            int(row["step"])
        except ValueError:
            raise RunFolderError(f"{path}, line {n}: step {row['step']!r} is not a whole number "
                                 f"(a damaged file: repair or delete that line)") from None
        rows.append({f: row.get(f, "") for f in fields})
    return rows, notes

"""Walking a data folder: every real file once, whatever its symbolic links do.

A data folder may link to recordings kept elsewhere (``train -> /big/disk/train``), so links are
followed; but each directory is entered once and each file counted once, both keyed by the
``(st_dev, st_ino)`` of what they resolve to. A link back up the tree (``self -> .``,
``sub/up -> ..``) is therefore never entered a second time (no endless walk), and a recording
reachable by two paths (a link, a hard link) is one recording, which cannot land in both the
training and the test split. Real folders are walked before linked ones and, of two paths to one
file, the one without links is kept, so the split subfolders (``train/``, ``test/``) a file sits in
are those of its real path.

File names that are not valid UTF-8 (on Linux, any bytes are allowed; Python carries the invalid
ones as surrogate escapes, which most libraries refuse) are not returned as files: each becomes a
'name: problem' line, the name shown with ``\\xNN`` escapes, so that ``skip_bad`` can leave it out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Walk:
    """What :func:`walk_files` found under a folder."""

    files: list[Path] = field(default_factory=list)
    """The kept files, each once, sorted."""
    bad: list[str] = field(default_factory=list)
    """'name: problem' lines for files that cannot be used by name (and folders not listable)."""


def shown(path: str | os.PathLike) -> str:
    """``path`` printable anywhere: bytes that are not UTF-8 as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_is_valid(path: str | os.PathLike) -> bool:
    """Whether ``path`` is valid UTF-8 (no surrogate escapes)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk_files(root: str | Path, keep: Callable[[str], bool] | None = None,
               exclude_dirs: tuple[str, ...] = ()) -> Walk:
    """Every file under ``root`` (recursively, links followed safely; see the module docstring).

    Args:
        root: the folder; a path that is not a folder gives an empty :class:`Walk`.
        keep: a test on a file's name (``keep("a.WAV")``); None keeps every file.
        exclude_dirs: names of folders not to enter.
    """
    root = Path(root)
    seen_dirs: set[tuple[int, int]] = set()
    best: dict[object, tuple[tuple[bool, bool, str], Path]] = {}  # file id -> (rank, path)
    bad: list[str] = []
    real: list[tuple[Path, bool]] = [(root, False)]  # (folder, reached through a link)
    linked: list[tuple[Path, bool]] = []
    while real or linked:
        folder, via_link = real.pop() if real else linked.pop(0)
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            if folder == root and not root.is_dir():
                return Walk()
            bad.append(f"{shown(folder)}: cannot list the folder ({e.strerror or e})")
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue  # entered before: a link loop, or a second link to the same folder
        seen_dirs.add((st.st_dev, st.st_ino))
        subdirs = []
        for entry in entries:
            link = entry.is_symlink()
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                if entry.name not in exclude_dirs:
                    (linked if link else subdirs).append((Path(entry.path), via_link or link))
                continue
            if keep is not None and not keep(entry.name):
                continue
            if not name_is_valid(entry.path):
                bad.append(f"{shown(entry.path)}: the file name is not valid UTF-8; rename the "
                           f"file")
                continue
            try:
                fst = entry.stat()  # follows links
                key: object = (fst.st_dev, fst.st_ino)
            except OSError:  # a broken link: kept, so that reading it names it
                key = entry.path
            rank = (via_link, link, entry.path)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, Path(entry.path))
        real.extend(reversed(subdirs))
    return Walk(files=sorted(p for _, p in best.values()), bad=bad)

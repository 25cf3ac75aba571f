"""Sequences to the pickle-free ``.npz`` layout that ``--data`` reads (``vrnn data pack``).

The file written holds, per split, the sequences concatenated along time and their lengths::

    train (sum T_i, D), train_lengths (N_train,), valid, valid_lengths, test, test_lengths

or, when the source has no split, ``data`` (sum T_i, D) and ``lengths`` (N,) (which ``--data``
then splits 0.9 / 0.05 / 0.05 with seed 0). Values keep their dtype (promoted to one per file).

Sources: lists of arrays in Python; a ``.npy`` / ``.npz`` file in any layout of
``vrnn.data.formats``; a folder of ``.npy`` / ``.npz`` / ``.csv`` / ``.txt`` files. Old files of
NumPy object arrays (``np.save(p, list_of_arrays)``, ``np.savez(p, train=list_of_arrays)``) are
read only with ``allow_pickle=True`` (``--trust-pickle``): unpickling runs whatever code the file
carries, so pass it only for a file you made or trust. Nothing here unpickles otherwise.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vrnn.data.core import SPLITS, DataError
from vrnn.data.formats import _SPLIT_KEYS, _load, _sequences, pickle_error
from vrnn.data.walk import walk_files
from vrnn.host.files import atomic_write

PACK_SUFFIXES = (".npy", ".npz", ".csv", ".txt")
"""Files a folder given to :func:`pack_sequences` may hold: one sequence each (a .npy or .npz may
hold several). ``.csv``: comma-separated, ``.txt``: whitespace-separated rows of D numbers, one
per step, with at most one header line."""
_FOLDER_SPLITS = {**_SPLIT_KEYS, "dev": "valid"}

Items = list[tuple[str | None, str, np.ndarray]]
"""(split or None, label for messages, array) of each sequence."""


def _unpickled(obj, where: str) -> list[tuple[str, np.ndarray]]:
    """(label, array) of the sequences in an unpickled object: lists, tuples, dicts and object
    arrays of (T_i, D) arrays, nested."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _unpickled(v, f"{where}[{k!r}]")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _unpickled(v, f"{where}[{i}]")
                ] if obj and not np.isscalar(obj[0]) else [(where, np.asarray(obj))]
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        if obj.ndim == 0:
            return _unpickled(obj.item(), where)
        return [(f"{where}[{i}]", np.asarray(v)) for i, v in enumerate(obj.reshape(-1))]
    arr = np.asarray(obj)
    if arr.ndim == 3:
        return [(f"{where}[{i}]", a) for i, a in enumerate(arr)]
    return [(where, arr)]


def _trusted(path: Path, keys: list[str]) -> Items:
    """The sequences of the object-array ``keys`` of ``path`` ('' = a whole .npy), unpickled."""
    items: Items = []
    try:
        with open(path, "rb") as f:
            obj = np.load(f, allow_pickle=True)  # the caller passed allow_pickle=True
            if hasattr(obj, "files"):  # an .npz
                with obj as z:
                    named = {k: z[k] for k in keys}
            else:  # a .npy object array, or a plain pickle
                if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
                    obj = obj.item()
                named = obj if isinstance(obj, dict) else {None: obj}
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError,
            ImportError) as e:
        raise DataError(f"{path}: cannot read numpy data with pickle ({e})") from None
    for k, v in named.items():
        split = _SPLIT_KEYS.get(str(k).split("/", 1)[0].lower()) if k is not None else None
        where = f"{path}[{k!r}]" if k is not None else str(path)
        items += [(split, label, a) for label, a in _unpickled(v, where)]
    return items


def _file_items(path: Path, allow_pickle: bool) -> Items:
    """The sequences of one .npy / .npz / .csv / .txt file, with the split its keys name."""
    if path.suffix.lower() in (".csv", ".txt"):
        delimiter = "," if path.suffix.lower() == ".csv" else None
        for skip in (0, 1):  # at most one header line
            try:
                return [(None, str(path), np.loadtxt(path, delimiter=delimiter, ndmin=2,
                                                     skiprows=skip))]
            except ValueError as e:
                err = e
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e})") from None
        raise DataError(f"{path}: not rows of numbers ({err})")
    arrays, pickled = _load(path)
    if pickled and not allow_pickle:
        raise pickle_error(path, pickled)
    bad: list[str] = []
    items = _sequences(arrays, path, bad)
    if bad:
        raise DataError(f"{path}: " + "; ".join(bad[:5]))
    return items + (_trusted(path, pickled) if pickled else [])


def _gather(src, allow_pickle: bool) -> tuple[Items, str]:
    """Every sequence of ``src`` with its split, and how the splits were found."""
    if isinstance(src, Mapping):
        unknown = [k for k in src if k not in _SPLIT_KEYS]
        if unknown:
            raise DataError(f"pack_sequences: split names are train, valid and test; got "
                            f"{unknown}")
        return [(_SPLIT_KEYS[k], f"{k}[{i}]", np.asarray(a)) for k, seqs in src.items()
                for i, a in enumerate(seqs)], "the given splits"
    if not isinstance(src, (str, Path)):
        return [(None, f"[{i}]", np.asarray(a)) for i, a in enumerate(src)], "no split"
    path = Path(src).expanduser()
    if path.is_file():
        return _file_items(path, allow_pickle), "the file's keys"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    walk = walk_files(path, lambda n: Path(n).suffix.lower() in PACK_SUFFIXES)
    if walk.bad:
        raise DataError(f"{path}: {len(walk.bad)} file(s) cannot be read: "
                        + "; ".join(walk.bad[:5]))
    if not walk.files:
        raise DataError(f"{path}: no {', '.join(PACK_SUFFIXES)} files found (searched "
                        f"recursively)")
    tops = {f.relative_to(path).parts[0].lower() for f in walk.files
            if len(f.relative_to(path).parts) > 1}
    named = {_FOLDER_SPLITS[t] for t in tops if t in _FOLDER_SPLITS}
    by_folder = "train" in named and len(named) > 1
    items: Items = []
    for f in walk.files:
        parts = f.relative_to(path).parts
        split = _FOLDER_SPLITS.get(parts[0].lower()) if by_folder and len(parts) > 1 else None
        items += [(split, label, a) for _, label, a in _file_items(f, allow_pickle)]
    return items, ("the folder's train/valid/test subfolders" if by_folder else "no split")


def _checked(items: Items, what: str) -> int:
    """The one frame size D of the sequences; DataError naming the sequences that are not
    non-empty numeric (T, D) arrays, or the first of each D when they differ."""
    bad, first_of_dim = [], {}
    for _, label, a in items:
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            bad.append(f"{label}: not a numeric array (dtype {a.dtype})")
        elif a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
            bad.append(f"{label}: expected a (T, D) array with T, D >= 1, got shape "
                       f"{tuple(a.shape)}")
        else:
            first_of_dim.setdefault(int(a.shape[1]), label)
    if bad:
        raise DataError(f"{what}: cannot pack {len(bad)} sequence(s): " + "; ".join(bad[:5])
                        + (f"; ... ({len(bad) - 5} more)" if len(bad) > 5 else ""))
    if not first_of_dim:
        raise DataError(f"{what}: no sequences to pack")
    if len(first_of_dim) > 1:
        sizes = ", ".join(f"D={d} (first: {label})" for d, label in sorted(first_of_dim.items()))
        raise DataError(f"{what}: sequences have different frame sizes: {sizes}")
    return next(iter(first_of_dim))


def pack_sequences(src: str | Path | Sequence[np.ndarray] | Mapping[str, Sequence[np.ndarray]],
                   dst: str | Path, *, allow_pickle: bool = False) -> dict:
    """Write sequences to ``dst`` in the pickle-free layout of the module docstring.

    Args:
        src: a list of (T_i, D) arrays; a dict 'train' / 'valid' / 'test' -> such lists; a
            ``.npy`` / ``.npz`` file (its ``train`` / ``valid`` / ``test`` keys kept as splits
            when ``train`` and one more are there); or a folder of :data:`PACK_SUFFIXES` files
            (searched recursively, each real file once), its ``train/``, ``valid/`` (or
            ``validation/``, ``dev/``) and ``test/`` subfolders becoming the splits.
        dst: the ``.npz`` file to write, atomically (it may be ``src`` itself).
        allow_pickle: read NumPy object arrays in ``src`` files by unpickling them. Unpickling
            runs any code the file carries: only for a file you made or trust.

    Returns:
        ``{"path", "x_dim", "dtype", "split_from", "unused", "splits": {split: {"n_sequences",
        "n_steps"}}}``; ``unused`` counts the sequences under other keys of a split file.

    Raises:
        DataError naming the file or sequence (object arrays without ``allow_pickle``, ragged
        shapes, mixed D); FileNotFoundError; ``vrnn.host.files.WriteError`` when ``dst`` cannot be
        written.
    """
    dst = Path(dst).expanduser()
    if dst.suffix.lower() != ".npz":
        raise DataError(f"{dst}: the packed file must end in .npz")
    items, split_from = _gather(src, allow_pickle)
    what = str(src) if isinstance(src, (str, Path)) else "pack_sequences"
    x_dim = _checked(items, what)
    named = {s for s, _, _ in items if s}
    by_split = "train" in named and len(named) > 1
    arrays: dict[str, np.ndarray] = {}
    splits: dict[str, dict] = {}
    for split in (SPLITS if by_split else (None,)):
        seqs = [a for s, _, a in items if s == split or not by_split]
        if not seqs:
            continue
        key, lengths_key = (split, f"{split}_lengths") if split else ("data", "lengths")
        arrays[key] = np.concatenate(seqs)  # (sum T_i, D)
        arrays[lengths_key] = np.array([len(a) for a in seqs], dtype=np.int64)  # (N,)
        splits[split or "all"] = {"n_sequences": len(seqs), "n_steps": int(len(arrays[key]))}
    unused = sum(1 for s, _, _ in items if s is None) if by_split else 0
    atomic_write(dst, lambda f: np.savez(f, **arrays))
    dtype = next(a.dtype for k, a in arrays.items() if not k.endswith("lengths"))
    return {"path": str(dst), "x_dim": x_dim, "dtype": str(dtype),
            "split_from": split_from if by_split else "no split (--data splits 0.9/0.05/0.05)",
            "unused": unused, "splits": splits}

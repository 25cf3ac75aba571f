"""Arrays the user saved with numpy, and picking a reader for a filesystem path.

``.npy`` / ``.npz`` (any source, any licence: the user's own data)
    A ``.npy`` holding a list (object array) or a dict of ``(T_i, D)`` arrays, or one (N, T, D)
    array; a ``.npz`` whose arrays are such lists or one sequence each (``np.savez(path, *seqs)``).
    Keys ``train`` / ``valid`` (or ``validation``) / ``test`` are used as the splits; otherwise all
    sequences are split 0.9 / 0.05 / 0.05 with seed 0. Object arrays need pickle: only load files
    you trust.

    The kind is read off the values: all in {0, 1} -> ``binary`` (no normalisation); D = 3 with a
    {0, 1} last column -> ``strokes`` (taken as (dx, dy, pen_up); dx and dy normalised by their
    training mean/std); otherwise ``audio``, this library's kind for real-valued frames (Gaussian
    and GMM outputs), every dim normalised by its training mean/std (a constant dim keeps std 1).

:func:`detect_format` picks the reader of a path: ``.npy``/``.npz`` files; folders in TIMIT's LDC
layout; folders of IAM-OnDB lineStrokes XML; folders of WAV/FLAC files.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from vrnn.data.audio import find_audio_files, find_timit_root
from vrnn.data.core import (
    DataError,
    DataInfo,
    SequenceDataset,
    moments,
    report_bad,
    split_indices,
)
from vrnn.data.strokes import find_stroke_files

FORMATS = ("numpy", "timit", "iam", "audio")
FORMAT_ALIASES = {"npz": "numpy", "npy": "numpy", "numpy": "numpy", "timit": "timit",
                  "iam": "iam", "iam-ondb": "iam", "iamondb": "iam", "audio": "audio",
                  "wav": "audio", "flac": "audio", "folder": "audio"}
_SPLIT_KEYS = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}


def detect_format(path: Path) -> str:
    """'numpy', 'timit', 'iam' or 'audio' for an existing path; DataError if none fits."""
    if path.is_file():
        if path.suffix.lower() in (".npy", ".npz"):
            return "numpy"
        raise DataError(f"{path}: cannot tell the format of this file (expected .npy or .npz, "
                        f"or a folder of WAV/FLAC, TIMIT or IAM-OnDB files)")
    if find_timit_root(path) is not None:
        return "timit"
    if find_stroke_files(path):
        return "iam"
    if find_audio_files(path):
        return "audio"
    raise DataError(f"{path}: found no data (no .wav/.flac files, no TIMIT TRAIN/TEST folders, "
                    f"no IAM-OnDB lineStrokes .xml files)")


def _load(path: Path):
    try:
        with open(path, "rb") as f:  # our handle: closed even when numpy fails half-way
            if path.suffix.lower() == ".npz":
                with np.load(f, allow_pickle=True) as z:
                    return {k: z[k] for k in z.files}
            try:
                return np.load(f, allow_pickle=False)
            except ValueError:
                f.seek(0)
                return np.load(f, allow_pickle=True)  # object arrays (lists of sequences)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise DataError(f"{path}: cannot read numpy data ({e})") from None


def _sequences(obj, where: str) -> list[tuple[str, np.ndarray]]:
    """(label, array) pairs of the sequences inside ``obj`` (arrays not yet checked)."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _sequences(v, f"{where}[{k!r}]")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _sequences(v, f"{where}[{i}]")
                ] if obj and not np.isscalar(obj[0]) else [(where, np.asarray(obj))]
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        if obj.ndim == 0:
            return _sequences(obj.item(), where)
        return [(f"{where}[{i}]", np.asarray(v)) for i, v in enumerate(obj.reshape(-1))]
    arr = np.asarray(obj)
    if arr.ndim == 3:
        return [(f"{where}[{i}]", a) for i, a in enumerate(arr)]
    return [(where, arr)]


def _check(pairs: list[tuple[str, np.ndarray]], bad: list[str],
           first_of_dim: dict[int, str]) -> list[np.ndarray]:
    """The valid arrays of ``pairs`` as float32; a 'label: problem' line in ``bad`` for each
    invalid one, and the label of the first array of each frame size D in ``first_of_dim``."""
    out = []
    for label, a in pairs:
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            bad.append(f"{label}: not a numeric array (dtype {a.dtype})")
        elif a.ndim != 2:
            bad.append(f"{label}: expected a (T, D) array, got shape {tuple(a.shape)}")
        elif len(a) == 0:
            bad.append(f"{label}: sequence shorter than one frame (shape {tuple(a.shape)})")
        elif not np.all(np.isfinite(a)):
            bad.append(f"{label}: holds {int(np.isnan(a).sum())} NaN and "
                       f"{int(np.isinf(a).sum())} infinite values")
        else:
            first_of_dim.setdefault(int(a.shape[1]), label)
            out.append(a.astype(np.float32))
    return out


def load_numpy(path: str | Path, *, skip_bad: bool = False) -> SequenceDataset:
    """A ``.npy`` / ``.npz`` file of ragged ``(T_i, D)`` sequences (see the module docstring)."""
    path = Path(path)
    obj = _load(path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        obj = obj.item()
    bad: list[str] = []
    first_of_dim: dict[int, str] = {}
    keys = {_SPLIT_KEYS[k]: k for k in obj if k in _SPLIT_KEYS} if isinstance(obj, dict) else {}
    if "train" in keys and len(keys) > 1:
        splits = {s: _check(_sequences(obj[k], f"{path}[{k!r}]"), bad, first_of_dim)
                  for s, k in keys.items()}
        note = "Predefined split: the file's " + ", ".join(keys.values()) + " arrays."
    else:
        seqs = _check(_sequences(obj, str(path)), bad, first_of_dim)
        idx = split_indices(len(seqs))
        splits = {s: [seqs[i] for i in v] for s, v in idx.items()}
        note = f"{len(seqs)} sequences split 0.9/0.05/0.05 with seed 0."
    for s in ("train", "valid", "test"):
        splits.setdefault(s, [])
    if bad and not skip_bad:
        raise report_bad(bad, f"data {path}")
    every = [a for s in splits.values() for a in s]
    if not splits["train"]:
        raise DataError(f"{path}: no usable training sequences")
    if len(first_of_dim) > 1:
        sizes = ", ".join(f"D={d} (first: {label})" for d, label in sorted(first_of_dim.items()))
        raise DataError(f"{path}: sequences have different frame sizes: {sizes}")
    D = every[0].shape[1]
    binary = all(np.all((a == 0) | (a == 1)) for a in every)
    pen = D == 3 and all(np.all((a[:, 2] == 0) | (a[:, 2] == 1)) for a in every)
    if binary:
        info = DataInfo(name=str(path), kind="binary", x_dim=D, normalised_dims=[])
    elif pen:
        mean, std = moments(splits["train"], dims=[0, 1])
        std = np.where(std > 0, std, 1.0)
        info = DataInfo(name=str(path), kind="strokes", x_dim=3, normalised_dims=[0, 1],
                        mean=[float(mean[0]), float(mean[1]), 0.0],
                        std=[float(std[0]), float(std[1]), 1.0])
    else:
        mean, std = moments(splits["train"], dims=list(range(D)))
        std = np.where(std > 0, std, 1.0)
        info = DataInfo(name=str(path), kind="audio", x_dim=D, mean=mean.tolist(),
                        std=std.tolist(), normalised_dims=list(range(D)))
    info.source = f"numpy file {path}"
    info.split_note = note
    info.skipped = bad
    norm = {s: [info.normalise(a).astype(np.float32) for a in v] for s, v in splits.items()}
    return SequenceDataset(info=info, train=norm["train"], valid=norm["valid"], test=norm["test"])

"""Arrays the user saved with NumPy, and picking a reader for a filesystem path.

``.npy`` / ``.npz`` (any source, any licence: the user's own data), read with
``allow_pickle=False`` always: a data file never runs code. The layouts:

    ``np.save(p, x)``
        x an (N, T, D) array: N sequences of T steps; an (T, D) array: one sequence.
    ``np.savez(p, data=np.concatenate(seqs), lengths=[len(s) for s in seqs])``
        ragged sequences, concatenated along time: ``data`` (T_1 + ... + T_N, D), ``lengths`` (N,).
        Any key ``K`` with a ``K_lengths`` partner is read the same way.
    ``np.savez(p, train=..., train_lengths=..., valid=..., valid_lengths=..., test=...,``
    ``test_lengths=...)``
        the same per split (``vrnn data pack`` writes this; :func:`vrnn.data.pack.pack_sequences`).
    ``np.savez(p, *seqs)`` or ``np.savez(p, **{"train/0": s0, "train/1": s1, "test/0": ...})``
        one key per sequence (each (T, D), or (N, T, D) for N of them); ``train/``, ``valid/``
        (or ``validation/``) and ``test/`` prefixes name the split.

Keys ``train`` / ``valid`` (or ``validation``) / ``test`` (or those prefixes) are used as the splits
when ``train`` and one more are there; otherwise all sequences are split 0.9 / 0.05 / 0.05 with
seed 0. NumPy object arrays (``np.save`` of a list or a dict, ``np.savez(p, train=[...])`` of
ragged lists) can only be read by unpickling, which runs whatever code the file carries: they are
refused with a message naming the file, its keys, and the command that converts a file one trusts
(``vrnn data pack OLD NEW.npz --trust-pickle``). With ``skip_bad`` a file's object-array keys are
left out (never read) when other keys hold data. Frames are float32: complex arrays and values
beyond float32's range (about 3.4e38) are refused by name (file, key, dtype), as are negative
``lengths`` (the value and its key) and a ``train`` split with no sequences.

Files ``--data`` does not read (``.txt``, anything else) are refused with what it takes and, for
``.txt``, how to convert it (:func:`detect_format`). CSV, TSV and Parquet tables are read by
:mod:`vrnn.data.tables`.

With ``seq_len``, training and validation sequences are cut into consecutive windows of
``seq_len`` steps, the last window of each keeping the remaining steps (nothing is dropped); test
sequences stay whole.

The kind is read off the values: all in {0, 1} -> ``binary`` (no normalisation); D = 3 with a
{0, 1} last column -> ``strokes`` (taken as (dx, dy, pen_up); dx and dy normalised by their
training mean/std); otherwise ``real``, real-valued frames (Gaussian and GMM outputs), every dim
normalised by its training mean/std (a constant dim keeps std 1).

:func:`detect_format` picks the reader of a path: ``.npy``/``.npz`` files; ``.csv``, ``.tsv`` and
``.parquet`` tables (:mod:`vrnn.data.tables`); folders in TIMIT's LDC layout; folders of IAM-OnDB
lineStrokes XML; folders of audio files (every format soundfile reads,
``vrnn.data.audio.AUDIO_SUFFIXES``); folders of tables.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vrnn.data.audio import find_audio_files, find_timit_root, suffix_list
from vrnn.data.core import (
    BUILTIN_DATASETS,
    SPLITS,
    DataError,
    DataInfo,
    SequenceDataset,
    float32_problem,
    moments,
    report_bad,
    split_indices,
    window_sequences,
)
from vrnn.data.strokes import find_stroke_files
from vrnn.data.tables import TABLE_SUFFIXES, find_table_files, is_table, read_table_parts

FORMATS = ("numpy", "timit", "iam", "audio", "table")
FORMAT_ALIASES = {"npz": "numpy", "npy": "numpy", "numpy": "numpy", "timit": "timit",
                  "iam": "iam", "iam-ondb": "iam", "iamondb": "iam", "audio": "audio",
                  "wav": "audio", "flac": "audio", "folder": "audio", "table": "table",
                  "csv": "table", "tsv": "table", "parquet": "table"}
_SPLIT_KEYS = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}
LENGTHS_SUFFIX = "_lengths"


def what_data_takes() -> str:
    """One sentence for messages: what ``--data`` (``load_dataset``) reads."""
    return (f"--data takes a built-in name ({', '.join(BUILTIN_DATASETS)}), a folder of audio "
            f"files ({suffix_list()}), TIMIT in its LDC layout (TRAIN/ and TEST/ folders), a "
            f"folder of IAM-OnDB lineStrokes .xml files, a .npy of (N, T, D) or (T, D) frames, "
            f"a .npz of sequences (data + lengths, or train/valid/test + train_lengths...; "
            f"see vrnn.data.formats), or a .csv, .tsv or .parquet table with one row per time "
            f"step, or a folder of them (see vrnn.data.tables)")


def _unread_file(path: Path) -> str:
    """Why ``--data`` does not read the file ``path``, and what to do instead."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return (f"{path}: --data does not read .txt files: text training uses the built-in text "
                f"set (--data text), or a .npy of one-hot frames (T, V) (trained as binary "
                f"frames); a .txt of numbers, one row per step, converts with: vrnn data pack "
                f"{path} NEW.npz")
    return f"{path}: cannot tell the format of this file"


def detect_format(path: Path) -> str:
    """'numpy', 'timit', 'iam', 'audio' or 'table' for an existing path; DataError if none fits,
    saying what ``--data`` takes (and how to convert a .txt file)."""
    if path.is_file():
        if path.suffix.lower() in (".npy", ".npz"):
            return "numpy"
        if is_table(path):
            return "table"
        raise DataError(f"{_unread_file(path)}. {what_data_takes()}")
    if find_timit_root(path) is not None:
        return "timit"
    bad: list[str] = []
    if find_stroke_files(path):
        return "iam"
    if find_audio_files(path, bad=bad) or bad:
        return "audio"
    if find_table_files(path, bad=bad) or bad:
        return "table"
    raise DataError(f"{path}: found no data (no audio files ({suffix_list()}), no TIMIT "
                    f"TRAIN/TEST folders, no IAM-OnDB lineStrokes .xml files, no tables "
                    f"({', '.join(TABLE_SUFFIXES)}))")


def pickle_error(path: Path, keys: list[str]) -> DataError:
    """The error for a file whose data only pickle can read: what to do, naming the file."""
    where = (" (key" + ("s " if len(keys) > 1 else " ") + ", ".join(repr(k) for k in keys[:5])
             + (", ..." if len(keys) > 5 else "") + ")") if any(keys) else ""
    return DataError(
        f"{path}: holds NumPy object arrays{where}, which only pickle can read, and unpickling "
        f"runs any code the file carries, so vrnn never does it for --data. If you made this file "
        f"or trust it, convert it once with: vrnn data pack {path} NEW.npz --trust-pickle, then "
        f"pass NEW.npz; or save it without objects, e.g. np.savez('NEW.npz', "
        f"data=np.concatenate(seqs), lengths=[len(s) for s in seqs]) (see vrnn.data.formats)")


def _load(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of a .npy (key '') or .npz file read without pickle, and the keys that hold
    object arrays (left unread)."""
    arrays: dict[str, np.ndarray] = {}
    pickled: list[str] = []
    try:
        with open(path, "rb") as f:  # our handle: closed even when numpy fails half-way
            try:
                obj = np.load(f, allow_pickle=False)
            except ValueError as e:
                if "pickle" in str(e):  # a pickle, or a .npy object array
                    return {}, [""]
                raise
            if isinstance(obj, np.ndarray):
                return {"": obj}, []
            with obj as z:
                for k in z.files:
                    try:
                        arrays[k] = z[k]
                    except ValueError as e:
                        if "pickle" not in str(e):
                            raise
                        pickled.append(k)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read numpy data ({e})") from None
    return arrays, pickled


def _partner(key: str, arrays: dict) -> str | None:
    """The lengths key that says how ``key`` is cut into sequences, if there is one."""
    if key + LENGTHS_SUFFIX in arrays:
        return key + LENGTHS_SUFFIX
    return "lengths" if key == "data" and "lengths" in arrays else None


def _cut(a: np.ndarray, lengths: np.ndarray, label: str, where: str,
         bad: list[str]) -> list[tuple[str, np.ndarray]]:
    """A concatenated (sum T_i, D) array cut into its sequences by ``lengths`` (N,)."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        bad.append(f"{where}: expected a 1-D array of sequence lengths (integers >= 0), got "
                   f"dtype {lengths.dtype} shape {tuple(lengths.shape)}")
        return []
    negative = np.flatnonzero(lengths < 0)
    if negative.size:
        i = int(negative[0])
        more = f" and {negative.size - 1} more" if negative.size > 1 else ""
        bad.append(f"{where}: sequence lengths must be >= 0, got {int(lengths[i])} (sequence "
                   f"{i}){more}")
        return []
    if a.ndim != 2 or int(lengths.sum()) != len(a):
        bad.append(f"{label}: expected a (T, D) array of {int(lengths.sum())} steps (the sum of "
                   f"{where}), got shape {tuple(a.shape)}")
        return []
    if not len(lengths):  # no sequences (np.split would make one empty one)
        return []
    return [(f"{label}[{i}]", s) for i, s in enumerate(np.split(a, np.cumsum(lengths)[:-1]))]


def _split_of(key: str) -> str | None:
    """The split a key names ('train', 'valid', 'test'; prefixes 'train/'...), or None."""
    return _SPLIT_KEYS.get(key.split("/", 1)[0].lower())


def _sequences(arrays: dict[str, np.ndarray], path: Path,
               bad: list[str]) -> list[tuple[str | None, str, np.ndarray]]:
    """(split or None, label, array) of every sequence in a file's arrays (not yet checked)."""
    out: list[tuple[str | None, str, np.ndarray]] = []
    partners = {_partner(k, arrays) for k in arrays} - {None}
    for k, a in arrays.items():
        if k in partners:
            continue
        if k.endswith(LENGTHS_SUFFIX) or k == "lengths":
            bad.append(f"{path}[{k!r}]: lengths without the array they cut (expected a key "
                       f"{k[:-len(LENGTHS_SUFFIX)] if k != 'lengths' else 'data'!r})")
            continue
        split = _split_of(k)
        label = f"{path}[{k!r}]" if k else str(path)
        if np.iscomplexobj(a):  # the whole key: each of its sequences would repeat the line
            bad.append(f"{label}: {float32_problem(a)}")
            continue
        partner = _partner(k, arrays)
        if partner is not None:
            pieces = _cut(a, arrays[partner], label, f"{path}[{partner!r}]", bad)
        elif a.ndim == 3:
            pieces = [(f"{label}[{i}]", s) for i, s in enumerate(a)]
        else:
            pieces = [(label, a)]
        out += [(split, lab, s) for lab, s in pieces]
    return out


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
        elif a.shape[1] == 0:
            bad.append(f"{label}: frames of D=0 values (shape {tuple(a.shape)}); each step needs "
                       f"at least one value")
        elif not np.all(np.isfinite(a)):
            bad.append(f"{label}: holds {int(np.isnan(a).sum())} NaN and "
                       f"{int(np.isinf(a).sum())} infinite values")
        elif problem := float32_problem(a):
            bad.append(f"{label}: {problem}")
        else:
            first_of_dim.setdefault(int(a.shape[1]), label)
            out.append(a.astype(np.float32))
    return out


def load_numpy(path: str | Path, *, skip_bad: bool = False,
               seq_len: int | None = None) -> SequenceDataset:
    """A ``.npy`` / ``.npz`` file of ragged ``(T_i, D)`` sequences, read without pickle (see the
    module docstring).

    Args:
        skip_bad: leave out bad sequences and object-array keys (listed in ``info.skipped``).
        seq_len: cut training and validation sequences into windows of this many steps.
    """
    path = Path(path)
    if seq_len is not None and seq_len < 1:
        raise DataError(f"seq_len must be >= 1 step, got {seq_len}")
    arrays, pickled = _load(path)
    if pickled and (not skip_bad or not arrays):
        raise pickle_error(path, pickled)
    bad = [f"{path}[{k!r}]: a NumPy object array (only pickle reads it): not loaded"
           for k in pickled]
    first_of_dim: dict[int, str] = {}
    items = _sequences(arrays, path, bad)
    named = {_split_of(k) for k in arrays} - {None}  # a split key with no sequences counts too
    predefined = "train" in named and len(named) > 1
    if predefined:
        splits = {s: _check([(lab, a) for sp, lab, a in items if sp == s], bad, first_of_dim)
                  for s in named}
        unused = sum(1 for sp, _, _ in items if sp is None)
        note = ("Predefined split: the file's " + ", ".join(s for s in SPLITS if s in named)
                + " arrays" + (f" ({unused} sequences under other keys unused)." if unused
                               else "."))
    else:
        seqs = _check([(lab, a) for _, lab, a in items], bad, first_of_dim)
        idx = split_indices(len(seqs))
        splits = {s: [seqs[i] for i in v] for s, v in idx.items()}
        note = f"{len(seqs)} sequences split 0.9/0.05/0.05 with seed 0."
    for s in ("train", "valid", "test"):
        splits.setdefault(s, [])
    if bad and not skip_bad:
        raise report_bad(bad, f"data {path}")
    if not splits["train"]:
        if bad:
            raise report_bad(bad, f"data {path}", skip_bad=True)
        keys = [repr(k) for k in arrays if _split_of(k) == "train"]
        where = (f"its key{'s' if len(keys) > 1 else ''} {', '.join(keys)} hold"
                 f"{'' if len(keys) > 1 else 's'} no sequences" if predefined
                 else "the file holds no sequences")
        raise DataError(f"{path}: the train split is empty ({where}); training needs at least "
                        f"one sequence")
    if len(first_of_dim) > 1:
        sizes = ", ".join(f"D={d} (first: {label})" for d, label in sorted(first_of_dim.items()))
        raise DataError(f"{path}: sequences have different frame sizes: {sizes}")
    info = _infer_info(path, splits)
    info.split_note = note + (f" Train/valid: windows of at most {seq_len} steps (seq_len); "
                              f"test: whole sequences." if seq_len else "")
    info.skipped = bad
    norm = {s: [info.normalise(a).astype(np.float32) for a in v] for s, v in splits.items()}
    return SequenceDataset(info=info, train=window_sequences(norm["train"], seq_len),
                           valid=window_sequences(norm["valid"], seq_len), test=norm["test"],
                           formats={"NPZ" if arrays.keys() != {""} else "NPY": 1})


def _infer_info(path: Path, splits: dict[str, list[np.ndarray]]) -> DataInfo:
    """The kind and statistics of a file's sequences (see the module docstring)."""
    every = [a for s in splits.values() for a in s]
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
        info = DataInfo(name=str(path), kind="real", x_dim=D, mean=mean.tolist(),
                        std=std.tolist(), normalised_dims=list(range(D)))
    info.source = f"numpy file {path}"
    return info


def load_table(path: str | Path, *, sequence_column: str | None = None,
               time_column: str | None = None,
               feature_columns: str | Sequence[str] | None = None, seq_len: int | None = None,
               skip_bad: bool = False, max_files: int | None = None) -> SequenceDataset:
    """A table (:func:`vrnn.data.tables.read_table`) as ``--data`` reads it: split 0.9 / 0.05 /
    0.05 with seed 0, its kind read off the values, normalised by the training split's
    statistics (see :mod:`vrnn.data.tables`).

    Args:
        path: a table file or a folder of them.
        sequence_column: as :func:`vrnn.data.tables.read_table`.
        time_column: as :func:`vrnn.data.tables.read_table`.
        feature_columns: as :func:`vrnn.data.tables.read_table`.
        seq_len: cut training and validation sequences into windows of this many steps.
        skip_bad: leave out a folder's files that cannot be read (listed in ``info.skipped``).
        max_files: read at most this many files of a folder (a seeded random choice).
    """
    path = Path(path).expanduser()
    if seq_len is not None and seq_len < 1:
        raise DataError(f"seq_len must be >= 1 step, got {seq_len}")
    table, bad, formats = read_table_parts(path, sequence_column=sequence_column,
                                      time_column=time_column, feature_columns=feature_columns,
                                      skip_bad=skip_bad, max_files=max_files)
    seqs = table.sequences
    idx = split_indices(len(seqs))
    splits = {s: [seqs[i] for i in v] for s, v in idx.items()}
    info = _infer_info(path, splits)
    by = (f"sequence column {table.sequence_column!r}" if table.sequence_column
          else "one sequence per file" if path.is_dir()
          else "no sequence column: the whole file is one sequence (name one with "
               "--sequence-column)")
    order = (f"time column {table.time_column!r}" if table.time_column
             else "rows in the file's order")
    info.source = (f"table {path}: {by}; {order}; features {', '.join(table.features)}")
    info.split_note = (f"{len(seqs)} sequence{'s' if len(seqs) != 1 else ''} split "
                       f"0.9/0.05/0.05 with seed 0"
                       + (" (fewer than 3: all are training data)." if len(seqs) < 3 else ".")
                       + (f" Train/valid: windows of at most {seq_len} steps (seq_len); test: "
                          f"whole sequences." if seq_len else ""))
    info.skipped = bad
    norm = {s: [info.normalise(a).astype(np.float32) for a in v] for s, v in splits.items()}
    return SequenceDataset(info=info, train=window_sequences(norm["train"], seq_len),
                           valid=window_sequences(norm["valid"], seq_len), test=norm["test"],
                           formats=formats)

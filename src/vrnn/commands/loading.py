"""A checkpoint put to use: its model on a device, and the sequences it is applied to.

``vrnn evaluate`` and ``vrnn analyse`` read one split of the checkpoint's own data set or of other
data. Either way the sequences are normalised with the *checkpoint's* statistics, so that the
densities are those of the data the model was trained for; other data must have the same frame
size and be of the same kind (real values, pen strokes or binary frames).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vrnn.data import DataInfo
from vrnn.models.base import SequenceModel

SPLITS = ("train", "valid", "test")
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid",
               "test": "test"}
"""The names of the splits in a file's keys (``.npz``: ``test``, ``test/...``) and folders."""


class SplitSequences(NamedTuple):
    """What :func:`checkpoint_sequences` read."""

    name: str
    """The data's name."""
    sequences: list[np.ndarray]
    """``(T_i, D)`` float32 arrays in the checkpoint's normalised units."""
    skipped: list[str]
    """The bad sequences or files left out (``--skip-bad``) that belong to the split or whose
    split is unknown, each 'name: problem'."""
    in_split: int | None
    """How many sequences the split holds, those left out included; None where some left out
    cannot be placed in a split (their file was split after it was read)."""


def split_of(skipped: str) -> str | None:
    """The split a line of ``DataInfo.skipped`` names: a split key of a ``.npz`` file
    (``path['test'][2]: ...``) or a ``train``/``valid``/``test`` folder on its path; None where it
    names none (a file or sequence of data that is split after it is read)."""
    label = skipped.split(": ", 1)[0]
    key = re.search(r"\['([^'/]*)", label)
    if key:
        return SPLIT_NAMES.get(key.group(1).lower())
    for part in reversed(Path(label).parts[:-1]):
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return None


def load_for_use(path: str | Path, device: str = "cpu") -> tuple[dict, SequenceModel, DataInfo]:
    """(checkpoint dict, its model on ``device`` in eval mode, its :class:`DataInfo`).

    ``device``: auto, cpu, cuda or cuda:N. Raises a ``CheckpointError`` naming ``path`` when it is
    missing, corrupt or its weights do not fit its configuration."""
    from vrnn.store.checkpoint import (
        data_info_from_checkpoint,
        load_checkpoint,
        model_from_checkpoint,
    )
    from vrnn.train.distributed import resolve_device

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, resolve_device(device), str(path))
    return ckpt, model, data_info_from_checkpoint(ckpt)


def _data_flags(ckpt: dict, info: DataInfo, name: str, skip_bad: bool) -> dict:
    """The ``load_dataset`` flags to read ``name`` with: those the checkpoint was trained with
    for its own data, the data set's defaults (with the model's frame size) for other data, and
    for a table the checkpoint's sequence, time and feature columns."""
    from vrnn.data.formats import detect_format

    tc = ckpt.get("train_config") or {}
    own = name == (tc.get("data") or info.name)
    path = Path(name).expanduser()
    # a table's columns are the model's frame: other tables are read with the same columns
    table = own or (path.exists() and detect_format(path) == "table")
    return {"seq_len": tc.get("seq_len"), "frame_size": tc.get("frame_size") or 200,
            "sample_rate": tc.get("sample_rate") if own else None,
            "subsample": tc.get("subsample") if own else None,
            "max_files": tc.get("max_files") if own else None,
            "skip_bad": skip_bad or (own and bool(tc.get("skip_bad"))),
            **{k: tc.get(k) if table else None
               for k in ("sequence_column", "time_column", "feature_columns")}}


def checkpoint_sequences(ckpt: dict, info: DataInfo, data: str | None = None,
                         split: str = "test", limit: int = 0,
                         skip_bad: bool = False) -> SplitSequences:
    """The ``split`` of ``data`` (default the checkpoint's), as the checkpoint's model reads it.

    Args:
        ckpt: a checkpoint dict (:func:`vrnn.store.checkpoint.load_checkpoint`).
        info: its :class:`DataInfo` (frame size, kind, normalisation statistics).
        data: a built-in name or a path; None: the data set the checkpoint was trained on,
            read with the data flags it was trained with (other data: its defaults).
        split: train, valid or test.
        limit: the first N sequences only (0: all).
        skip_bad: report and skip unreadable files instead of stopping (listed on stderr
            and in the result's ``skipped``: those of ``split`` and those of no known split).

    Returns:
        a :class:`SplitSequences`: the data's name, the ``(T_i, D)`` float32 arrays in the
        checkpoint's normalised units, what was left out.

    Audio at another sample rate than the model's is resampled to the model's (a note on stderr
    says so): a density over 200-sample frames means something only at one rate.
    """
    from vrnn.data import check_same_kind, check_x_dim, load_dataset

    if split not in SPLITS:
        raise ValueError(f"--split must be train, valid or test, got {split!r}")
    tc = ckpt.get("train_config") or {}
    name = data or tc.get("data") or info.name
    flags = _data_flags(ckpt, info, name, skip_bad)
    ds = load_dataset(name, **flags)
    rate = ds.info.sample_rate
    if (info.kind == "audio" and ds.info.kind == "audio" and info.sample_rate and rate
            and rate != info.sample_rate):
        print(f"note: --data {name} is {rate} Hz; resampled to the model's {info.sample_rate} Hz",
              file=sys.stderr)
        ds = load_dataset(name, **{**flags, "sample_rate": info.sample_rate})
    check_x_dim(ds.info, ckpt["model_config"]["x_dim"])
    check_same_kind(ds.info, info, "--data")
    seqs = list(ds.split(split))
    skipped = [s for s in ds.info.skipped if split_of(s) in (split, None)]
    known = sum(split_of(s) == split for s in skipped)
    in_split = len(seqs) + known if known == len(skipped) else None
    if skipped:
        print(f"--skip-bad: skipped {len(skipped)} bad sequence(s) or file(s) of {name} "
              f"(the {split} split{'' if in_split is not None else ' or of no known split'}; "
              f"the rest are numbered without them):\n  " + "\n  ".join(skipped),
              file=sys.stderr)
    if limit:
        seqs = seqs[:limit]
    if not seqs:
        left = f" ({len(skipped)} bad ones skipped)" if skipped else ""
        raise ValueError(f"--data {name}: the {split} split is empty{left}")
    same = (list(ds.info.mean) == list(info.mean) and list(ds.info.std) == list(info.std)
            and list(ds.info.normalised_dims) == list(info.normalised_dims))
    if not same:  # the data's own units, then the checkpoint's normalisation
        seqs = [np.asarray(info.normalise(ds.info.denormalise(s)), dtype=np.float32)
                for s in seqs]
    return SplitSequences(name, seqs, skipped, in_split)

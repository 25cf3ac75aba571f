"""A checkpoint put to use: its model on a device, and the sequences it is applied to.

``vrnn evaluate`` and ``vrnn analyse`` read one split of the checkpoint's own data set or of other
data. Either way the sequences are normalised with the *checkpoint's* statistics, so that the
densities are those of the data the model was trained for; other data must have the same frame
size and be of the same kind (real values, pen strokes or binary frames).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vrnn.data import DataInfo
from vrnn.models.base import SequenceModel

SPLITS = ("train", "valid", "test")


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
    for its own data, the data set's defaults (with the model's frame size) for other data."""
    tc = ckpt.get("train_config") or {}
    own = name == (tc.get("data") or info.name)
    return {"seq_len": tc.get("seq_len"), "frame_size": tc.get("frame_size") or 200,
            "sample_rate": tc.get("sample_rate") if own else None,
            "subsample": tc.get("subsample") if own else None,
            "max_files": tc.get("max_files") if own else None,
            "skip_bad": skip_bad or (own and bool(tc.get("skip_bad")))}


def checkpoint_sequences(ckpt: dict, info: DataInfo, data: str | None = None,
                         split: str = "test", limit: int = 0,
                         skip_bad: bool = False) -> tuple[str, list[np.ndarray]]:
    """The ``split`` of ``data`` (default the checkpoint's), as the checkpoint's model reads it.

    Args:
        ckpt: a checkpoint dict (:func:`vrnn.store.checkpoint.load_checkpoint`).
        info: its :class:`DataInfo` (frame size, kind, normalisation statistics).
        data: a built-in name or a path; None: the data set the checkpoint was trained on,
            read with the data flags it was trained with (other data: its defaults).
        split: train, valid or test.
        limit: the first N sequences only (0: all).
        skip_bad: report and skip unreadable files instead of stopping.

    Returns:
        (the data's name, ``(T_i, D)`` float32 arrays in the checkpoint's normalised units).

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
    if limit:
        seqs = seqs[:limit]
    if not seqs:
        raise ValueError(f"--data {name}: the {split} split is empty")
    same = (list(ds.info.mean) == list(info.mean) and list(ds.info.std) == list(info.std)
            and list(ds.info.normalised_dims) == list(info.normalised_dims))
    if not same:  # the data's own units, then the checkpoint's normalisation
        seqs = [np.asarray(info.normalise(ds.info.denormalise(s)), dtype=np.float32)
                for s in seqs]
    return name, seqs

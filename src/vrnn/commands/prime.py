"""``vrnn sample --prime FILE``: a prefix the model reads before it continues, from a file.

A ``.npy`` array ``(P, D)`` in data units (what ``samples.npy`` holds); for an audio model, an
audio file read the way the data sets read audio (:func:`vrnn.data.audio.read_audio`: channels
averaged, resampled to the model's rate) and cut into frames of D samples; for a text model, a
UTF-8 ``.txt`` file, one frame per character (one-hot over the checkpoint's vocabulary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vrnn.data import DataError, DataInfo


def _check_values(arr: np.ndarray, info: DataInfo, path: Path) -> None:
    """The prefix must be data the model could have been trained on (named, not a tensor dump
    from inside a distribution)."""
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"--prime: {path} holds NaN or infinite values")
    if info.kind == "binary" and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"--prime: {path} must hold binary frames (0 or 1) for this "
                         f"{info.name} model; found other values")
    if info.kind == "text" and not (np.all((arr == 0) | (arr == 1)) and np.all(arr.sum(1) == 1)):
        raise ValueError(f"--prime: {path} must hold one-hot frames (a single 1 per row) for "
                         f"this {info.name} text model; found other rows")
    if info.kind == "strokes" and not np.all((arr[:, 2] == 0) | (arr[:, 2] == 1)):
        raise ValueError(f"--prime: {path}: the pen-up column (the last of dx, dy, pen-up) must "
                         f"be 0 or 1")


def _read_npy(path: Path, info: DataInfo) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError... for a bad file
        raise ValueError(f"--prime: cannot read {path} as a .npy array ({e})") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != info.x_dim or len(arr) == 0:
        raise ValueError(f"--prime: {path} must hold a (P, D={info.x_dim}) array, got shape "
                         f"{arr.shape}")
    _check_values(arr, info, path)
    return arr


def _read_audio_frames(path: Path, info: DataInfo) -> np.ndarray:
    from vrnn.data.audio import read_audio

    if info.kind != "audio":
        raise ValueError(f"--prime: {path} is not a .npy; audio files only prime audio models, "
                         f"this checkpoint models {info.kind!r} data")
    try:
        wav, _ = read_audio(path, info.sample_rate or None)  # (N,) at the model's rate
    except DataError as e:
        raise DataError(f"--prime: {e}") from None
    d = info.x_dim
    frames = len(wav) // d
    if frames == 0:
        raise ValueError(f"--prime: {path} is shorter than one frame of {d} samples")
    return wav[:frames * d].reshape(frames, d)  # (P, D)


def _read_text(path: Path, info: DataInfo) -> np.ndarray:
    from vrnn.data.text import encode

    if info.kind != "text":
        raise ValueError(f"--prime: {path} is text; .txt files only prime text models, this "
                         f"checkpoint models {info.kind!r} data")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--prime: {path} is not UTF-8 text ({e})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise ValueError(f"--prime: {path} is empty")
    try:
        return encode(text, info.vocabulary)  # (P, V)
    except DataError as e:
        raise ValueError(f"--prime: {path}: {e} of the model ({info.name})") from None


def read_prime(path: str | Path, info: DataInfo) -> np.ndarray:
    """The prefix in ``path`` as a ``(P, D)`` float32 array in the checkpoint's normalised units.

    Args:
        path: a ``.npy`` ``(P, D)`` array in data units, an audio file (audio models only) or a
            ``.txt`` file (text models only).
        info: the checkpoint's :class:`DataInfo` (D, kind, sample rate, normalisation).

    Raises:
        FileNotFoundError / ValueError naming ``--prime`` and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prime: file not found: {path}")
    if path.suffix == ".npy":
        arr = _read_npy(path, info)
    elif path.suffix.lower() == ".txt" or info.kind == "text":
        arr = _read_text(path, info)
    else:
        arr = _read_audio_frames(path, info)
    return np.asarray(info.normalise(arr), dtype=np.float32)

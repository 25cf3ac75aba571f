"""``vrnn sample --prime FILE``: a prefix the model reads before it continues, from a file.

A ``.npy`` array ``(P, D)`` in data units (what ``samples.npy`` holds); for an audio model, an
audio file read the way the data sets read audio (:func:`vrnn.data.audio.read_audio`: channels
averaged, resampled to the model's rate, by at most :data:`MAX_RESAMPLE_RATIO` either way) and cut
into frames of D samples; for a text model, a UTF-8 ``.txt`` file (a leading byte-order mark
dropped), one frame per character (one-hot over the checkpoint's vocabulary).

The model reads a prefix one step after another, as training does, so a prefix longer than
:data:`vrnn.data.core.LONG_SEQUENCE_STEPS` (10,000) frames is cut to its last 10,000, with a
warning that says so.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from vrnn.data import DataError, DataInfo
from vrnn.data.core import LONG_SEQUENCE_STEPS, float32_problem

MAX_RESAMPLE_RATIO = 16
"""An audio prefix at another rate than the model's is resampled by at most this factor (either
way); further apart it is refused: a file whose header says 1 Hz, resampled for an 8 kHz model,
grew 8000x (an 8 kB file took 3.3 GB)."""


def _cut_long(x, path: Path, unit: str):
    """The last :data:`LONG_SEQUENCE_STEPS` steps of ``x`` (frames, or characters of a text),
    with a warning when that cuts it."""
    if len(x) <= LONG_SEQUENCE_STEPS:
        return x
    warnings.warn(f"--prime: {path} is {len(x):,} {unit} long; the model reads a prefix one step "
                  f"after another, as slowly as training on it, so only its last "
                  f"{LONG_SEQUENCE_STEPS:,} {unit} are used (cut the file to choose another part)",
                  UserWarning, stacklevel=3)
    return x[len(x) - LONG_SEQUENCE_STEPS:]


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
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"--prime: {path} must hold numbers, got dtype {arr.dtype}")
    problem = float32_problem(arr)
    if problem:
        raise ValueError(f"--prime: {path}: {problem}")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != info.x_dim or len(arr) == 0:
        raise ValueError(f"--prime: {path} must hold a (P, D={info.x_dim}) array, got shape "
                         f"{arr.shape}")
    _check_values(arr, info, path)
    return _cut_long(arr, path, "frames")


def _read_audio_frames(path: Path, info: DataInfo) -> np.ndarray:
    from vrnn.data.audio import read_audio, resample

    if info.kind != "audio":
        raise ValueError(f"--prime: {path} is not a .npy; audio files only prime audio models, "
                         f"this checkpoint models {info.kind!r} data")
    try:
        wav, rate = read_audio(path)  # (N,) at the file's rate
    except DataError as e:
        raise DataError(f"--prime: {e}") from None
    target = info.sample_rate
    if target and rate != target:
        ratio = max(rate / target, target / rate)
        if ratio > MAX_RESAMPLE_RATIO:
            raise DataError(f"--prime: {path} is at {rate:,} Hz and the model's rate is "
                            f"{target:,} Hz: resampling by {ratio:,.3g}x is refused (at most "
                            f"{MAX_RESAMPLE_RATIO}x either way); resample the file nearer "
                            f"{target:,} Hz first")
        wav = resample(wav, rate, target)  # (N * target / rate,)
    d = info.x_dim
    frames = len(wav) // d
    if frames == 0:
        raise ValueError(f"--prime: {path} is shorter than one frame of {d} samples")
    return _cut_long(wav[:frames * d].reshape(frames, d), path, "frames")  # (P, D)


def _read_text(path: Path, info: DataInfo) -> np.ndarray:
    from vrnn.data.text import encode

    if info.kind != "text":
        raise ValueError(f"--prime: {path} is text; .txt files only prime text models, this "
                         f"checkpoint models {info.kind!r} data")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark dropped
    except UnicodeDecodeError as e:
        raise ValueError(f"--prime: {path} is not UTF-8 text ({e})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise ValueError(f"--prime: {path} is empty")
    text = _cut_long(text, path, "characters")
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

    Warns:
        UserWarning naming the file when it is longer than ``LONG_SEQUENCE_STEPS`` frames (text:
        characters) and only its last ``LONG_SEQUENCE_STEPS`` are used.
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

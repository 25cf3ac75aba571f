"""The built-in ``text`` set: a novel as one-hot characters, the character-level example; and
:func:`load_text_file`, any UTF-8 ``.txt`` file read the same way (from Python; a leading
byte-order mark is dropped).

Source and licence
    Jane Austen's *Lady Susan* (written about 1794, published 1871; Austen died in 1817, so the
    text is in the public domain everywhere), the Project Gutenberg etext that the PyPI ``music21``
    package ships as ``music21/languageExcerpts/trainingData/en.txt`` (127 kB, ASCII; music21 is
    BSD-3-Clause and uses the file to train its language detector). The package is located with
    ``importlib.util.find_spec``, not imported. Project Gutenberg's one-line header and footer
    are removed; nothing else of the text is changed.

Preprocessing
    Runs of three or more newlines are cut to two (a blank line between paragraphs); the text's
    own line breaks are kept, as char-RNN corpora keep them. Frame t is the one-hot vector of
    character t over the vocabulary: every distinct character of the *training* split, sorted by
    code point (``DataInfo.vocabulary``; the checkpoint carries it, and the samples are decoded
    with it). A valid or test character outside it is a :class:`DataError` (none is, for the
    built-in text). Frames are float32 {0, 1}, never normalised.

Splits
    The text is cut into contiguous chunks of whole lines, each closed once it holds at least
    :data:`CHUNK_CHARS` characters (the last keeps the rest); the chunks are split 0.9 / 0.05 /
    0.05 with seed 0 (:func:`vrnn.data.core.split_indices`), so no line is in two splits.
    Train and valid: each run of adjacent chunks of the split is one stretch of contiguous text,
    cut into non-overlapping windows of ``seq_len`` characters (default :data:`WINDOW_CHARS`; a
    run's last partial window is dropped). Test: the test chunks whole (variable length, padded
    with a mask).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vrnn.data.core import (
    DataError,
    DataInfo,
    SequenceDataset,
    not_installed,
    package_path,
    split_indices,
)

MUSIC21_PIP = "music21==10.5.1"
CHUNK_CHARS = 1000
"""Characters (at least, whole lines) per chunk of the split; about the test sequences' length."""
WINDOW_CHARS = 100
"""Characters per training / validation window when ``seq_len`` is not given."""
SOURCE = "Jane Austen, Lady Susan (Project Gutenberg etext), in PyPI music21"
LICENCE = "public domain (Jane Austen, 1775-1817; published 1871); music21 is BSD-3-Clause"


def text_path() -> Path | None:
    """music21's ``languageExcerpts/trainingData/en.txt`` (music21 not imported), or None."""
    p = package_path("music21", "languageExcerpts", "trainingData", "en.txt")
    return p if p is not None and p.is_file() else None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a leading byte-order mark dropped
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _strip_gutenberg(text: str) -> str:
    """The text without Project Gutenberg's header and footer lines (those naming it)."""
    lines = text.splitlines()
    return "\n".join(line for line in lines if "project gutenberg" not in line.lower())


def normalise_text(text: str) -> str:
    """Line ends as ``\\n``, at most one blank line in a row, no leading or trailing space."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` cut into contiguous chunks of whole lines, each of at least ``size`` characters
    but the last; ``"".join(chunks(text)) == text``."""
    pieces = text.splitlines(keepends=True)
    out: list[str] = []
    current = ""
    for piece in pieces:
        current += piece
        if len(current) >= size:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def encode(text: str, vocabulary: str) -> np.ndarray:
    """``text`` as one-hot frames ``(len(text), V)`` float32 over ``vocabulary`` (V characters).

    Raises a DataError naming the characters that are not in the vocabulary."""
    index = {c: i for i, c in enumerate(vocabulary)}
    missing = sorted(set(text) - set(index))
    if missing:
        raise DataError(f"characters {''.join(missing)!r} are not in the vocabulary of "
                        f"{len(vocabulary)} characters")
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    frames = np.zeros((len(text), len(vocabulary)), dtype=np.float32)  # (T, V)
    frames[np.arange(len(text)), ids] = 1.0
    return frames


def decode(frames: np.ndarray, vocabulary: str) -> str:
    """One-hot (or probability) frames ``(T, V)`` back to text: the most probable character of
    each frame; all-zero frames (padding) are left out."""
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] != len(vocabulary):
        raise ValueError(f"decode needs frames (T, V={len(vocabulary)}), got shape "
                         f"{tuple(frames.shape)}")
    keep = frames.max(axis=1) > 0
    return "".join(vocabulary[i] for i in frames[keep].argmax(axis=1))


def _windows(stretches: list[str], vocabulary: str, length: int) -> list[np.ndarray]:
    out = []
    for s in stretches:
        frames = encode(s, vocabulary)
        out += [frames[i:i + length] for i in range(0, len(s) - length + 1, length)]
    return out


def _runs(parts: list[str], ids: list[int]) -> list[str]:
    """The chunks ``ids`` (sorted) joined into runs of adjacent chunks: contiguous stretches."""
    runs: list[str] = []
    last = None
    for i in ids:
        if last is not None and i == last + 1:
            runs[-1] += parts[i]
        else:
            runs.append(parts[i])
        last = i
    return runs


def text_dataset(text: str, *, name: str, source: str, licence: str,
                 seq_len: int | None = None) -> SequenceDataset:
    """A text as a :class:`SequenceDataset` of one-hot characters (see the module docstring)."""
    length = WINDOW_CHARS if seq_len is None else int(seq_len)
    if length < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    text = normalise_text(text)
    if not text:
        raise DataError(f"{name}: the text is empty")
    parts = chunks(text)
    idx = split_indices(len(parts))
    train_text = "".join(parts[i] for i in idx["train"])
    vocabulary = "".join(sorted(set(train_text)))
    for split in ("valid", "test"):
        unseen = sorted(set("".join(parts[i] for i in idx[split])) - set(vocabulary))
        if unseen:
            raise DataError(f"{name}: the {split} split holds characters the training split "
                            f"lacks ({''.join(unseen)!r}), so the model could give them no "
                            f"probability")
    train = _windows(_runs(parts, idx["train"]), vocabulary, length)
    if not train:
        raise DataError(f"{name}: no training window of {length} characters (seq_len); the "
                        f"training text has {len(train_text)}")
    info = DataInfo(
        name=name, kind="text", x_dim=len(vocabulary), vocabulary=vocabulary,
        normalised_dims=[], source=source, licence=licence,
        split_note=(f"{len(text):,} characters in {len(parts)} chunks of whole lines (at "
                    f"least {CHUNK_CHARS} characters each), split 0.9/0.05/0.05 with seed 0; "
                    f"vocabulary: the {len(vocabulary)} characters of the training split. "
                    f"Train/valid: windows of {length} characters (seq_len) cut from runs of "
                    f"adjacent chunks; test: whole chunks."))
    return SequenceDataset(info=info, train=train,
                           valid=_windows(_runs(parts, idx["valid"]), vocabulary, length),
                           test=[encode(parts[i], vocabulary) for i in idx["test"]],
                           formats={"TXT": 1})


def load_text(seq_len: int | None = None) -> SequenceDataset:
    """The built-in ``text`` set (see the module docstring)."""
    path = text_path()
    if path is None:
        raise not_installed("text", "music21", MUSIC21_PIP)
    return text_dataset(_strip_gutenberg(_read(path)), name="text",
                        source=f"{SOURCE} ({path})", licence=LICENCE, seq_len=seq_len)


def load_text_file(path: str | Path, seq_len: int | None = None) -> SequenceDataset:
    """Any UTF-8 ``.txt`` file as one-hot characters, split and windowed as the built-in set."""
    path = Path(path)
    return text_dataset(_read(path), name=str(path), source=str(path), licence="",
                        seq_len=seq_len)

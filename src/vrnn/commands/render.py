"""What a person looks at or listens to: samples as pictures, sounds and MIDI; learning curves.

Every function takes arrays in data units (``DataInfo.denormalise`` already applied) and writes
files; nothing here touches a model. Figures are built with ``matplotlib.figure.Figure`` and saved
through its own Agg canvas, so no pyplot state is created, no backend is switched and no display
is needed; figures are released when the function returns.

What ``write_samples`` writes per data kind (``P`` = its ``prefix``, ``i`` = sample index):

    strokes   ``Ps.png`` (a grid: a first row of real lines when given, then the samples) and one
              ``P_i.svg`` per sample.
    audio     one ``P_i.wav`` per sample (16-bit PCM at ``info.sample_rate``) and
              ``Ps_waveform.png`` (one waveform per row, real ones first).
    binary    88 keys (piano roll): ``Ps_pianoroll.png`` and one ``P_i.mid`` per sample;
              28 pixels (digit rows): ``Ps_digits.png``; any other width: ``Ps_raster.png``.
    text      one ``P_i.txt`` per sample (its one-hot frames decoded with
              ``info.vocabulary``, UTF-8), ``Ps.txt`` (all of them, real ones first, each under a
              ``== sample i ==`` line) and ``Ps_text.png`` (their first lines, in a monospace font).
    other     ``Ps.png``: line plots of the first dims.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from vrnn.data.core import DataInfo
from vrnn.data.music import LOWEST_KEY, N_KEYS
from vrnn.data.text import decode
from vrnn.host.files import atomic_write

TICKS_PER_QUARTER = 480
"""MIDI time resolution: ticks per quarter note; one roll step is one quarter note."""
GRID_COLUMNS = 4
"""Pictures per row in the strokes and digit grids."""


# -- shared helpers ---------------------------------------------------------------------------

def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, path: Path, **kw) -> Path:
    # No date in the metadata and a fixed SVG id salt: the same arrays give the same bytes.
    import matplotlib

    fmt = path.suffix.lstrip(".").lower()
    with matplotlib.rc_context({"svg.hashsalt": "vrnn"}):
        fig.savefig(path, format=fmt, metadata={"Date": None} if fmt in ("svg", "pdf") else None,
                    **kw)
    return path


def _as_batch(x, info: DataInfo, what: str) -> np.ndarray:
    """``x`` as a float64 array ``(N, T, D)`` with D = ``info.x_dim``, or a ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != info.x_dim:
        raise ValueError(f"{what} must be an array (N, T, D={info.x_dim}) in data units for "
                         f"{info.name!r}, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} has no sequences or no time steps: shape {tuple(arr.shape)}")
    return arr


def _labelled(samples: np.ndarray, real: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
    """``[('real 0', r0), ..., ('sample 0', s0), ...]``: real ones first, as they are drawn."""
    rows = [] if real is None else [(f"real {i}", r) for i, r in enumerate(real)]
    return rows + [(f"sample {i}", s) for i, s in enumerate(samples)]


def _grid(samples: np.ndarray, real: np.ndarray | None, draw, title: str, path: Path,
          cell: tuple[float, float]) -> Path:
    """A grid of ``draw(ax, seq)`` pictures: one row of real ones (when given), then samples."""
    ncols = min(GRID_COLUMNS, len(samples))
    real_row = [] if real is None else list(real[:ncols])
    nrows = math.ceil(len(samples) / ncols) + (1 if real_row else 0)
    fig = new_figure(cell[0] * ncols, cell[1] * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for j, seq in enumerate(real_row):
        draw(axes[0, j], seq)
        axes[0, j].set_title(f"real {j}", fontsize=9)
    first = 1 if real_row else 0
    for i, seq in enumerate(samples):
        ax = axes[first + i // ncols, i % ncols]
        draw(ax, seq)
        ax.set_title(f"sample {i}", fontsize=9)
    fig.suptitle(title)
    return save_figure(fig, path, dpi=100)


# -- strokes ----------------------------------------------------------------------------------

def stroke_segments(seq: np.ndarray) -> list[np.ndarray]:
    """Pen offsets ``(T, 3)`` = (dx, dy, pen_up) -> the drawn strokes, each ``(n, 2)`` absolute.

    Positions are the cumulative sums of the offsets; pen_up > 0.5 lifts the pen after its point,
    so the next point starts a new stroke.
    """
    xy = np.cumsum(seq[:, :2], axis=0)  # (T, 2)
    ends = np.flatnonzero(seq[:, 2] > 0.5) + 1
    return [s for s in np.split(xy, ends) if len(s)]


def draw_strokes(ax, seq: np.ndarray) -> None:
    for seg in stroke_segments(seq):
        ax.plot(seg[:, 0], seg[:, 1], "-", color="black", linewidth=1.2,
                marker="." if len(seg) == 1 else None, markersize=2)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])


def _write_strokes(samples, info, out, prefix, real) -> list[Path]:
    written = [_grid(samples, real, draw_strokes, f"{info.name}: generated handwriting"
                     + (" (top row: real)" if real is not None else ""),
                     out / f"{prefix}s.png", cell=(3.0, 2.2))]
    for i, seq in enumerate(samples):
        fig = new_figure(4.0, 3.0)
        ax = fig.add_subplot()
        draw_strokes(ax, seq)
        ax.set_axis_off()
        written.append(save_figure(fig, out / f"{prefix}_{i}.svg"))
    return written


# -- audio ------------------------------------------------------------------------------------

def to_pcm16(wave: np.ndarray) -> np.ndarray:
    """A float waveform in [-1, 1] -> int16 with the reader's scale (value * 32768), clipped.

    Samples in data units are the raw float waveform that soundfile read (int16 / 32768), so this
    is its inverse: reading the file back gives the clipped input within half a step (one step,
    1/32768, at +1). NaN becomes silence.
    """
    scaled = np.round(np.nan_to_num(np.asarray(wave, dtype=np.float64)) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def _write_audio(samples, info, out, prefix, real) -> list[Path]:
    import soundfile as sf

    written = []
    sr = info.sample_rate
    if sr:  # without a rate there is no sound to write, only the picture
        for i, seq in enumerate(samples):
            path = out / f"{prefix}_{i}.wav"
            sf.write(path, to_pcm16(seq.reshape(-1)), int(sr), subtype="PCM_16")  # (T * D,)
            written.append(path)
    rows = _labelled(samples, real)
    fig = new_figure(8.0, 1.4 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, seq) in zip(axes, rows):
        wave = seq.reshape(-1)  # frames concatenated: (T * D,)
        t = np.arange(len(wave)) / sr if sr else np.arange(len(wave))
        ax.plot(t, wave, linewidth=0.5, color="tab:gray" if label.startswith("real") else "C0")
        ax.set_ylabel(label, fontsize=8)
        ax.margins(x=0)
    axes[-1].set_xlabel("time (s)" if sr else "time (samples)")
    fig.suptitle(f"{info.name}: generated waveforms" + (" (real ones first)" if real is not None
                                                        else ""))
    written.append(save_figure(fig, out / f"{prefix}s_waveform.png", dpi=100))
    return written


# -- binary: piano rolls, digits, rasters -----------------------------------------------------

def _vlq(n: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(roll: np.ndarray, path: str | Path, *, low: int = LOWEST_KEY,
               threshold: float = 0.5, velocity: int = 80, bpm: float = 120.0) -> Path:
    """Write a piano roll ``(T, K)`` as a standard MIDI file (format 0, one track, channel 1).

    Key k is MIDI note ``low + k``; it sounds at step t when ``roll[t, k] > threshold``. Each step
    lasts one quarter note (``TICKS_PER_QUARTER`` ticks); a run of consecutive "on" steps is one
    note (a roll cannot tell a held note from a repeated one). Returns ``path``.
    """
    on = np.asarray(roll) > threshold  # (T, K)
    if on.ndim != 2 or low < 0 or low + on.shape[1] > 128:
        raise ValueError(f"roll must be (T, K) with MIDI notes low..low+K-1 in 0..127; got shape "
                         f"{tuple(on.shape)} and low={low}")
    idle = np.zeros((1, on.shape[1]), dtype=bool)
    before = np.concatenate([idle, on])  # (T + 1, K): step t-1
    after = np.concatenate([on, idle])  # (T + 1, K): step t
    events = bytearray()
    events += _vlq(0) + b"\xff\x51\x03" + round(60e6 / bpm).to_bytes(3, "big")  # tempo
    last_tick = 0
    for t in range(on.shape[0] + 1):
        offs = np.flatnonzero(before[t] & ~after[t])
        ons = np.flatnonzero(after[t] & ~before[t])
        for status, keys, vel in ((0x80, offs, 64), (0x90, ons, velocity)):  # offs first
            for k in keys:
                tick = t * TICKS_PER_QUARTER
                events += _vlq(tick - last_tick) + bytes((status, low + int(k), vel))
                last_tick = tick
    events += _vlq(0) + b"\xff\x2f\x00"  # end of track
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") \
        + TICKS_PER_QUARTER.to_bytes(2, "big")
    path = Path(path)
    path.write_bytes(header + b"MTrk" + len(events).to_bytes(4, "big") + bytes(events))
    return path


def _raster_panels(samples, real, info, path: Path, *, piano: bool) -> Path:
    rows = _labelled(samples, real)
    fig = new_figure(8.0, (1.8 if piano else 1.2) * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    low = LOWEST_KEY if piano else 0
    for ax, (label, seq) in zip(axes, rows):
        ax.imshow(seq.T, origin="lower", aspect="auto", cmap="gray_r", vmin=0.0, vmax=1.0,
                  interpolation="nearest",
                  extent=(0, seq.shape[0], low - 0.5, low + info.x_dim - 0.5))  # (D, T)
        ax.set_ylabel(f"{label}\n" + ("MIDI note" if piano else "dim"), fontsize=8)
    axes[-1].set_xlabel("time step (quarter notes)" if piano else "time step")
    kind = "piano rolls" if piano else "binary sequences"
    fig.suptitle(f"{info.name}: generated {kind}" + (" (real ones first)" if real is not None
                                                    else ""))
    return save_figure(fig, path, dpi=100)


def _draw_digit(ax, seq: np.ndarray) -> None:
    ax.imshow(seq, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")  # rows (T, 28)


def _write_binary(samples, info, out, prefix, real) -> list[Path]:
    if info.x_dim == N_KEYS:
        written = [_raster_panels(samples, real, info, out / f"{prefix}s_pianoroll.png",
                                  piano=True)]
        written += [write_midi(seq, out / f"{prefix}_{i}.mid") for i, seq in enumerate(samples)]
        return written
    if info.x_dim == 28:
        title = f"{info.name}: generated digits" + (" (top row: real)" if real is not None else "")
        return [_grid(samples, real, _draw_digit, title, out / f"{prefix}s_digits.png",
                      cell=(1.6, 1.8))]
    return [_raster_panels(samples, real, info, out / f"{prefix}s_raster.png", piano=False)]


# -- anything else ----------------------------------------------------------------------------

# -- text -------------------------------------------------------------------------------------

TEXT_PICTURE_LINES = 8
"""Lines of each sequence drawn in ``Ps_text.png`` (the .txt files hold all of it)."""
TEXT_PICTURE_WIDTH = 90
"""Characters per drawn line; longer lines are cut."""


def _write_text_file(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _write_text(samples, info, out, prefix, real) -> list[Path]:
    rows = [(label, decode(seq, info.vocabulary)) for label, seq in _labelled(samples, real)]
    written = [_write_text_file(out / f"{prefix}s.txt",
                                "".join(f"== {label} ==\n{text}\n\n" for label, text in rows))]
    fig = new_figure(9.0, 0.2 * (TEXT_PICTURE_LINES + 2) * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, text) in zip(axes, rows):
        lines = [line[:TEXT_PICTURE_WIDTH] for line in text.split("\n")[:TEXT_PICTURE_LINES]]
        ax.set_axis_off()
        ax.set_title(label, fontsize=8, loc="left")
        ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=7, va="top",
                ha="left", transform=ax.transAxes, parse_math=False)
    fig.suptitle(f"{info.name}: generated text (first {TEXT_PICTURE_LINES} lines)")
    written.append(save_figure(fig, out / f"{prefix}s_text.png", dpi=100))
    for i, seq in enumerate(samples):
        written.append(_write_text_file(out / f"{prefix}_{i}.txt", decode(seq, info.vocabulary)))
    return written


def _write_lines(samples, info, out, prefix, real, max_dims: int = 4) -> list[Path]:
    rows = _labelled(samples, real)
    fig = new_figure(8.0, 1.4 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, seq) in zip(axes, rows):
        for d in range(min(max_dims, seq.shape[1])):
            ax.plot(seq[:, d], linewidth=0.8, label=f"dim {d}")
        ax.set_ylabel(label, fontsize=8)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("time step")
    fig.suptitle(f"{info.name}: generated sequences (first {min(max_dims, info.x_dim)} dims)")
    return [save_figure(fig, out / f"{prefix}s.png", dpi=100)]


def write_samples(samples, info: DataInfo, out_dir: str | Path, *, prefix: str = "sample",
                  real=None) -> list[Path]:
    """Write samples as the files a person looks at or listens to; see the module docstring.

    Args:
        samples: ``(N, T, D)`` float array in data units (``info.denormalise`` applied).
        info: the data's :class:`~vrnn.data.DataInfo`; ``kind`` picks what is written, audio uses
            ``sample_rate`` (no WAV files without one).
        out_dir: folder to write into (created if missing).
        prefix: start of every file name.
        real: optional ``(M, T', D)`` real sequences in data units, drawn beside the samples
            (at most one row of them in the grids).

    Returns:
        The paths written, pictures and sounds, in a fixed order.
    """
    samples = _as_batch(samples, info, "samples")
    if real is not None:
        real = _as_batch(real, info, "real") if np.size(real) else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = {"strokes": _write_strokes, "audio": _write_audio, "real": _write_lines,
              "binary": _write_binary, "text": _write_text}.get(info.kind, _write_lines)
    return writer(samples, info, out, prefix, real)


# -- learning curves --------------------------------------------------------------------------

_BOUNDS = ("train_bound", "valid_bound", "train_bound_per_step", "valid_bound_per_step")


def _column_label(column: str) -> str:
    """Axis words for a metrics.csv column. Bounds are ELBOs in nats (exact log-likelihoods for
    RNNs), so higher is better."""
    if column not in _BOUNDS:
        return column
    split = "validation" if column.startswith("valid") else "training"
    unit = "nats per step" if column.endswith("per_step") else "nats per sequence"
    return f"{split} bound ({unit})"


def _read_curve(path: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of the rows of a metrics.csv where ``column`` holds a finite number."""
    steps, values = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                s, v = float(row.get("step") or "nan"), float(row.get(column) or "nan")
            except ValueError:
                continue
            if math.isfinite(s) and math.isfinite(v):
                steps.append(s)
                values.append(v)
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps)[order], np.asarray(values)[order]


def plot_learning_curves(metrics: dict[str, str | Path], out_png: str | Path, *,
                         y: str = "valid_bound") -> Path | None:
    """Plot column ``y`` of each run's metrics.csv against the training step, one line per run.

    Args:
        metrics: run label -> path of its ``metrics.csv`` (written by ``vrnn.train.loop``).
        out_png: the PNG to write.
        y: the column to plot; a run with no values in it (no validation set) falls back to the
            training counterpart (``valid_bound`` -> ``train_bound``, ``valid_bound_per_step`` ->
            ``train_bound_per_step``, anything else -> ``train_bound``), drawn dashed, and the
            axis label says so.

    Returns:
        ``out_png``, or None when no run had a value to plot.
    """
    fallback = "train_" + y[len("valid_"):] if y.startswith("valid_") else "train_bound"
    lines = []
    for label, path in metrics.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"metrics file of {label!r} not found: {path}")
        for column in (y, fallback):
            steps, values = _read_curve(path, column)
            if len(steps):
                lines.append((label, column, steps, values))
                break
    if not lines:
        return None
    used = {column for _, column, _, _ in lines}
    if used == {y}:
        ylabel = _column_label(y)
    elif used == {fallback}:
        ylabel = f"{_column_label(fallback)}\n(no {y} values)"
    else:
        ylabel = f"{_column_label(y)}\n(dashed: {_column_label(fallback)}, runs without {y})"
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    for label, column, steps, values in lines:
        ax.plot(steps, values, "--" if column != y else "-", marker="." if len(steps) < 30
                else None, label=label if column == y else f"{label} ({column})")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    bounds = used <= set(_BOUNDS)
    ax.set_title("Learning curves" + (": ELBO, exact log-likelihood for RNNs; higher is better"
                                      if bounds else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out, dpi=100)

"""``metrics.csv`` (and TensorBoard events when installed): what a run logs, on rank 0.

Rows are appended one at a time, so a run killed mid-write can leave a partial last line; a
resumed run repairs the file (:func:`vrnn.train.run_folder.repair_metrics`: the partial line is
dropped with a note, any other malformed row is an error naming the file and line), keeps the rows
up to its checkpoint's step and rewrites it atomically.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np

from vrnn.host.files import WriteError, write_text

METRIC_FIELDS = (
    "step", "epoch", "sequences", "elapsed_s", "train_bound", "train_bound_per_step",
    "train_kl_per_step", "kl_weight", "grad_norm", "lr", "valid_bound", "valid_bound_per_step",
    "train_objective", "train_ess",
)
"""Columns of ``metrics.csv``. Train rows leave the valid columns empty and vice versa. Bounds
are ELBOs (exact log-likelihoods for RNNs) in nats: per sequence, and per time step; the
validation bound is the ELBO whatever ``--objective`` trains.
``sequences``: training sequences (or TBPTT windows) seen so far, summed over all processes.
``train_objective``: the bound being maximised, per sequence: the ELBO with the KL weight and
free bits of the loss (``--objective elbo``), the IWAE or the FIVO bound. With ``--objective
fivo`` the train ELBO and KL (``train_bound``, ``train_bound_per_step``,
``train_kl_per_step``) are those of the update that writes the row only: beside FIVO they cost a
pass of their own, which the other updates skip. ``train_ess``: fivo's
effective sample size (mean over steps and sequences, 1 to ``--particles``); empty otherwise.
The last two came later: a metrics.csv without them is read by name and resumes."""


def metrics_rows(path: Path, quiet: bool = False) -> list[dict]:
    """The rows of a ``metrics.csv`` (repaired: see the module docstring); the repair's notes on
    stderr unless ``quiet``."""
    from vrnn.train.run_folder import repair_metrics

    rows, notes = repair_metrics(path, METRIC_FIELDS)
    for note in () if quiet else notes:
        print(f"note: {note}", file=sys.stderr)
    return rows


def last_logged_step(path: Path, quiet: bool = False) -> int | None:
    """The highest step in a ``metrics.csv``, None when it has no row (or does not exist)."""
    if not path.is_file():
        return None
    return max((int(r["step"]) for r in metrics_rows(path, quiet)), default=None)


class MetricsLog:
    """metrics.csv and TensorBoard on rank 0; a no-op on the other ranks.

    Args:
        out_dir: the run folder.
        enabled: whether this process writes (rank 0).
        resume_step: a resumed run's checkpoint step: rows logged after it are dropped (they are
            logged again); None for a fresh run, which starts the file anew.
        tensorboard: also write TensorBoard events when tensorboard is installed.
    """

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int | None, tensorboard: bool):
        self.path = out_dir / "metrics.csv"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.path.exists():
            rows = [r for r in metrics_rows(self.path) if int(r["step"]) <= resume_step]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path, text.getvalue())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # a resumed run drops the events logged after its checkpoint, as the CSV does
                self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step)
            except Exception:  # tensorboard not installed: the CSV is enough
                self.tb = None

    def write(self, row: dict) -> None:
        """Append one row (missing columns empty; floats with 6 significant digits)."""
        if not self.enabled:
            return
        try:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, METRIC_FIELDS).writerow(
                    {k: _fmt(row.get(k)) for k in METRIC_FIELDS})
        except OSError as e:
            raise WriteError(f"cannot write {self.path}: {e.strerror or e}") from None
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and v is not None:
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class TrainWindow:
    """Sums of the updates since the last train row of ``metrics.csv``: the row reports their
    means (per sequence, per time step), not the last update's noisy figure."""

    def __init__(self) -> None:
        self.elbo = self.kl = self.sequences = self.steps = self.objective = 0.0
        self.elbo_sequences = self.elbo_steps = 0.0
        self.ess: float | None = None
        self.grad_norms: list[float] = []

    def add(self, elbo: float, kl: float, sequences: float, steps: float, grad_norm: float,
            objective: float | None = None, ess: float | None = None,
            elbo_sequences: float | None = None, elbo_steps: float | None = None) -> None:
        """One update's sums over its sequences: ELBO, KL, the objective (default: the ELBO)
        and the ESS (fivo; None otherwise). ``elbo_sequences`` and ``elbo_steps``: what the
        ELBO and KL sums cover (default: every sequence and step; 0 for a fivo update that
        did not compute them)."""
        self.elbo += elbo
        self.kl += kl
        self.sequences += sequences
        self.steps += steps
        self.elbo_sequences += sequences if elbo_sequences is None else elbo_sequences
        self.elbo_steps += steps if elbo_steps is None else elbo_steps
        self.objective += elbo if objective is None else objective
        if ess is not None:
            self.ess = (self.ess or 0.0) + ess
        self.grad_norms.append(grad_norm)

    def row(self) -> dict:
        """The window's train columns; then the window starts afresh."""
        figured = self.elbo_sequences > 0
        row = {"train_bound": self.elbo / self.elbo_sequences if figured else None,
               "train_bound_per_step": self.elbo / self.elbo_steps if figured else None,
               "train_kl_per_step": self.kl / self.elbo_steps if figured else None,
               "grad_norm": float(np.mean(self.grad_norms)),
               "train_objective": self.objective / self.sequences,
               "train_ess": None if self.ess is None else self.ess / self.sequences}
        self.__init__()
        return row

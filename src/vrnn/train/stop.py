"""Why a training run stops, in one place (:class:`StopConditions`), and what the ranks sum
after every update to agree on it (:class:`RankSums`)."""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

from vrnn.train.config import TrainConfig
from vrnn.train.state import TrainClock, TrainState


class TrainingError(RuntimeError):
    """Training cannot go on (the loss stayed non-finite, a checkpoint could not be written); the
    last good checkpoint is kept."""


@dataclass
class RankSums:
    """What one update sums over all ranks, in one all-reduce: its figures and the stop votes."""

    elbo: float = 0.0
    """Sum of the per-sequence ELBOs (nats)."""
    kl: float = 0.0
    """Sum of the KL terms over sequences and time steps (nats)."""
    sequences: float = 0.0
    steps: float = 0.0
    """Time steps (real frames, padding excluded)."""
    non_finite: float = 0.0
    """Ranks whose loss or gradient norm was not finite."""
    sigint: float = 0.0
    """Ranks that received Ctrl-C (SIGINT) ..."""
    sigterm: float = 0.0
    """... or SIGTERM since the run started."""
    out_of_time: float = 0.0
    """Ranks whose ``--max-minutes`` budget is spent."""


class StopConditions:
    """Every reason a run ends, in one place: a signal (Ctrl-C or SIGTERM: finish the update,
    save, stop; a second one aborts), the ``--max-minutes`` budget, early stopping
    (``--patience``), ``--max-bad-steps`` non-finite updates in a row, and ``--max-steps``.

    Used as a context manager, it installs the signal handlers for the run and restores the
    previous ones after it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, cfg: TrainConfig, clock: TrainClock, last_path: Path | None):
        self.cfg, self.clock, self.last_path = cfg, clock, last_path
        self.received: int | None = None
        """The signal this process received, if any."""
        self.signal: int | None = None
        """The signal that stopped the run (received by this rank or another)."""
        self.bad_in_row = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopConditions:
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: signals stay as they are
                break
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _on_signal(self, signum, frame) -> None:
        self.received = signum
        self._restore()  # a second Ctrl-C (or SIGTERM) acts at once

    def _restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def out_of_time(self) -> bool:
        if self.cfg.max_minutes is None:
            return False
        return self.clock.spent(self.cfg.budget_clock) > 60 * self.cfg.max_minutes

    def votes(self) -> RankSums:
        """This rank's stop votes, summed over the ranks with the next update's figures."""
        return RankSums(sigint=float(self.received == signal.SIGINT),
                        sigterm=float(self.received == signal.SIGTERM),
                        out_of_time=float(self.out_of_time()))

    def patience_spent(self, state: TrainState) -> bool:
        return bool(self.cfg.patience and state.bad_validations >= self.cfg.patience)

    def before_start(self, state: TrainState) -> str | None:
        """A resumed run whose budget is spent, or that had already stopped early."""
        if self.out_of_time():
            return "time_limit"
        return "early_stopping" if self.patience_spent(state) else None

    def after_update(self, figures, state: TrainState) -> str | None:
        """Why to stop after this update (None: go on). Raises :class:`TrainingError` after
        ``--max-bad-steps`` non-finite updates in a row."""
        if figures.finite:
            self.bad_in_row = 0
        else:
            self.bad_in_row += 1
            warnings.warn(f"step {state.step + 1}: non-finite loss or gradient; skipping this "
                          f"update ({self.bad_in_row}/{self.cfg.max_bad_steps} in a row)",
                          RuntimeWarning, stacklevel=3)
            if self.bad_in_row >= self.cfg.max_bad_steps:
                if self.last_path is None:  # vrnn.fit: the weights stay in memory
                    kept = "the model keeps its weights of the last finite update"
                elif self.last_path.exists():
                    kept = f"the last good checkpoint, {self.last_path}, is kept"
                else:
                    kept = "no checkpoint was written yet"
                raise TrainingError(
                    f"the loss was non-finite for {self.bad_in_row} updates in a row at step "
                    f"{state.step}; stopping: {kept} (try a smaller --lr or --grad-clip)")
        if self.patience_spent(state):  # the validation of this step said so
            return "early_stopping"
        if figures.sums.sigint or figures.sums.sigterm:
            self.signal = signal.SIGTERM if figures.sums.sigterm else signal.SIGINT
            return "interrupted"
        if figures.sums.out_of_time:
            return "time_limit"
        return "max_steps" if state.step >= self.cfg.max_steps else None

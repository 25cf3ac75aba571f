"""What a training run shows while it trains: a bar on a terminal, a line every so often
elsewhere (:class:`Progress`, driven by :func:`vrnn.train.loop.train`'s loop)."""

from __future__ import annotations

import sys
import time

PROGRESS_LINE_SECONDS = 30.0
"""Seconds between the progress lines of a run that shows no bar (its output is a log file or a
pipe, or :func:`train` was asked for lines)."""


class Progress:
    """What rank 0 shows while it trains (with --progress): the updates, the training time on
    the budget's clock against ``--max-minutes``, a running mean of the training bound and the
    last validation bound.

    On a terminal (or a notebook) a tqdm bar, over the budget when the run has one (else over
    ``--max-steps``); elsewhere, where every redraw of a bar would be a line of the log file
    (tqdm's ``disable=None``), or when ``every`` is given (processes that share one terminal), a
    line on stderr at the first update and then every ``every`` seconds
    (:data:`PROGRESS_LINE_SECONDS` by default)."""

    def __init__(self, run, every: float | None = None):  # run: a vrnn.train.loop.Run
        from tqdm.auto import tqdm

        self.run, cfg = run, run.cfg
        self.running: float | None = None
        self.budget = 60 * cfg.max_minutes if cfg.max_minutes else None  # seconds on its clock
        show = run.env.is_main and cfg.progress
        self.bar = None
        if show and every is None:
            spent = self._spent()
            total, initial = ((self.budget, min(spent, self.budget)) if self.budget else
                              (cfg.max_steps, min(run.state.step, cfg.max_steps)))
            self.bar = tqdm(total=total, initial=initial, disable=None, dynamic_ncols=True,
                            desc=cfg.model, bar_format="{percentage:3.0f}%|{bar:12}| {desc}")
            if self.bar.disable:  # not a terminal
                self.bar = None
        self.every = (every if every is not None else PROGRESS_LINE_SECONDS) if show else None
        self.next_line = time.monotonic()  # the first update prints a line

    def _spent(self) -> float:
        return self.run.state.clock.spent(self.run.cfg.budget_clock)

    def status(self) -> str:
        """One line: the updates, the time against the budget, the bounds."""
        cfg, state = self.run.cfg, self.run.state
        spent = self._spent()
        parts = [f"update {state.step}" + ("" if self.budget else f" of {cfg.max_steps}"),
                 f"{cfg.budget_clock} {spent / 60:.1f}"
                 + (f" of {cfg.max_minutes:g} min" if self.budget else " min")]
        if self.running is not None:
            parts.append(f"train bound {self.running:.4g}")
        valid = self.run.last_stats.get("valid_bound")
        if valid is not None:
            parts.append(f"valid bound {valid:.4g} (update {self.run.validated_at})")
        return ", ".join(parts)

    def update(self, bound: float | None) -> None:
        """After an update: ``bound`` its ELBO per sequence (None: not computed, fivo)."""
        if bound is not None:
            self.running = (bound if self.running is None
                            else 0.95 * self.running + 0.05 * bound)
        if self.bar is not None:
            done = min(self._spent(), self.budget) if self.budget else self.run.state.step
            self.bar.update(done - self.bar.n)  # redrawn at most every tenth of a second
            self.bar.set_description_str(f"{self.run.cfg.model}: {self.status()}",
                                         refresh=False)
        elif self.every is not None and time.monotonic() >= self.next_line:
            print(f"[{self.run.cfg.model}] {self.status()}", file=sys.stderr, flush=True)
            self.next_line = time.monotonic() + self.every

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

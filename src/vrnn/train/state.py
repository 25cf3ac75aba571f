"""What a training run carries from one update to the next, and what a checkpoint saves of it
so that a resumed run continues exactly where it stopped (see :mod:`vrnn.store.checkpoint` for the
file format; the keys written here are the training part of it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vrnn.store import checkpoint as ckio


class TrainClock:
    """Training time in seconds, counted across resumes: elapsed (wall) and this process's CPU
    time. A resumed run starts from the time its checkpoint had spent."""

    def __init__(self) -> None:
        self._wall0, self._cpu0 = time.time(), time.process_time()

    def add(self, wall_s: float, cpu_s: float) -> None:
        """Count ``wall_s`` / ``cpu_s`` seconds spent before this process started."""
        self._wall0 -= wall_s
        self._cpu0 -= cpu_s

    def wall(self) -> float:
        return time.time() - self._wall0

    def cpu(self) -> float:
        return time.process_time() - self._cpu0

    def spent(self, clock: str) -> float:
        """Seconds on ``clock``: 'wall' or 'cpu' (``--budget-clock``)."""
        return self.wall() if clock == "wall" else self.cpu()


def seed_everything(seed: int) -> None:
    """Seed torch's and numpy's global generators (model initialisation, before the model is
    built)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class TrainState:
    """The position of a run: counters, best bound, carried TBPTT state, random states, time.

    The data order is a function of (seed, epoch) only, so (epoch, batch_in_epoch) is where the
    data stream stands; ``noise`` is the generator every z_t's noise is drawn from."""

    noise: torch.Generator
    """The noise generator (shared by all ranks, identically seeded)."""
    step: int = 0
    """Optimiser updates done."""
    epoch: int = 0
    batch_in_epoch: int = 0
    """Batches of ``epoch`` consumed (skipped ones included)."""
    sequences_seen: int = 0
    """Training sequences (or TBPTT windows) seen, summed over all ranks."""
    best_bound: float | None = None
    """Best validation bound so far (nats per sequence)."""
    bad_validations: int = 0
    """Validations in a row without a better bound (early stopping's patience count)."""
    carried: tuple[Tensor, ...] | None = None
    """The recurrent state carried to the next TBPTT window, each ``(B, H)``; None = reset."""
    clock: TrainClock = field(default_factory=TrainClock)

    @classmethod
    def start(cls, seed: int, device: torch.device, clock: TrainClock | None = None
              ) -> TrainState:
        """A fresh run's state: the noise generator seeded with ``seed``."""
        return cls(noise=torch.Generator(device=device).manual_seed(seed),
                   clock=clock or TrainClock())

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        self.carried = None

    def to_checkpoint(self) -> dict:
        """The training part of a checkpoint (keys as documented in
        :mod:`vrnn.store.checkpoint`)."""
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "sequences_seen": self.sequences_seen, "best_bound": self.best_bound,
            "bad_validations": self.bad_validations, "rng": ckio.rng_state(self.noise),
            "tbptt_state": (None if self.carried is None
                            else [s.detach().cpu() for s in self.carried]),
            "train_seconds": self.clock.wall(), "train_cpu_seconds": self.clock.cpu(),
        }

    def restore(self, ckpt: dict, device: torch.device) -> None:
        """Continue from a checkpoint written by :meth:`to_checkpoint`: counters, all random
        states (torch, noise, numpy, python), carried state and the time already spent."""
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self.sequences_seen = int(ckpt.get("sequences_seen", 0))
        self.best_bound, self.bad_validations = ckpt["best_bound"], int(ckpt["bad_validations"])
        ckio.set_rng_state(ckpt["rng"], self.noise)
        self.clock.add(float(ckpt.get("train_seconds", 0.0)),
                       float(ckpt.get("train_cpu_seconds", 0.0)))
        saved = ckpt.get("tbptt_state")
        self.carried = None if saved is None else tuple(s.to(device) for s in saved)


"""The data order of training: the global batches of an epoch, a function of (seed, epoch)
only, so that a resumed run sees the batches it would have seen, and every rank its rows."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vrnn.train.config import TrainConfig
from vrnn.train.distributed import DistEnv, shard


@dataclass
class Batch:
    """This rank's rows of one global batch."""

    x: Tensor
    """``(b, T, D)``: my rows (padded)."""
    mask: Tensor | None
    """``(b, T)``: true on real frames; None for TBPTT windows (all real)."""
    global_size: int
    """Sequences in the global batch (all ranks)."""
    global_len: int
    """T of the global batch: the noise is drawn for ``(global_size, global_len, Z)``."""
    rows: list[int]
    """My rows' indices in the global batch."""


class EpochBatches:
    """The global batches of an epoch: bucketed, shuffled whole sequences (ragged, with a mask),
    or, for contiguous audio with TBPTT, windows whose row i continues row i of the previous one.
    """

    def __init__(self, dataset, cfg: TrainConfig, env: DistEnv):
        self.dataset, self.cfg, self.env = dataset, cfg, env
        self.lengths = np.array([len(s) for s in dataset.train])
        self.tbptt = bool(cfg.tbptt and dataset.info.kind == "audio" and dataset.train_streams)
        self.window = (cfg.seq_len or int(np.median(self.lengths)) or 40) if self.tbptt else None
        why = f" (no sequence is as long as --seq-len {cfg.seq_len})" if cfg.seq_len else ""
        if len(dataset.train) == 0 and not self.tbptt:
            raise ValueError(f"--data {cfg.data}: the training split is empty{why}")
        if not dataset.valid and env.is_main:
            warnings.warn(f"--data {cfg.data}: the validation split is empty{why}; training goes "
                          "on without validation: best.pt will be the last checkpoint and "
                          "--patience has no effect", RuntimeWarning, stacklevel=3)
        if env.world_size > cfg.batch_size:
            raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the "
                             f"{env.world_size} processes")
        self.batch_size, self.note = self._fitting_batch()

    def _fitting_batch(self) -> tuple[int, str | None]:
        """The batch size training uses, and a note when it is less than --batch-size: a
        training split too small for the batch trains with the largest batch it fills (every
        sequence; for TBPTT, as many rows as the audio has windows of --seq-len), rather than
        yielding no batch at all."""
        cfg, env = self.cfg, self.env
        if self.tbptt:
            frames = int(sum(len(s) for s in self.dataset.train_streams))
            largest = frames // self.window  # rows of at least one window each
            what = f"{frames} frames of training audio, rows of --seq-len {self.window} frames"
            if largest < env.world_size:
                raise ValueError(f"--data {cfg.data}: its {frames} frames of training audio do "
                                 f"not fill {env.world_size} row(s) of --seq-len {self.window} "
                                 f"frames; pass a smaller --seq-len")
        else:
            largest = len(self.lengths)
            what = f"{largest} training sequence{'s' if largest != 1 else ''}"
        if cfg.batch_size <= largest:
            return cfg.batch_size, None
        return largest, (f"note: --batch-size {cfg.batch_size} is more than the training split "
                         f"fills ({what}): training with batches of {largest}")

    def __call__(self, epoch: int, skip: int) -> Iterator[Batch]:
        """The batches of ``epoch`` after the first ``skip`` (consumed before a resume)."""
        from vrnn.data import BucketBatchSampler, contiguous_batches, pad_batch

        cfg, env = self.cfg, self.env
        if self.tbptt:
            wins = contiguous_batches(self.dataset.train_streams, self.batch_size, self.window,
                                      seed=cfg.seed, epoch=epoch)
            for win in itertools.islice(wins, skip, None):
                win = np.asarray(win, dtype=np.float32)  # (B, T, D)
                rows = shard(list(range(len(win))), env)
                yield Batch(torch.from_numpy(win[rows]), None, len(win), win.shape[1], rows)
            return
        sampler = BucketBatchSampler(self.lengths, self.batch_size, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
        full = (list(b) for b in sampler if len(b) >= env.world_size)  # >= 1 row per rank
        for batch in itertools.islice(full, skip, None):
            rows = shard(list(range(len(batch))), env)
            x, mask = pad_batch([self.dataset.train[batch[r]] for r in rows])
            yield Batch(x, mask, len(batch), int(self.lengths[batch].max()), rows)

    def updates_per_epoch(self) -> int:
        """Global batches in an epoch (the same for every epoch): the TBPTT windows of the
        concatenated audio, or the bucketed batches of whole sequences."""
        from vrnn.data import BucketBatchSampler

        cfg = self.cfg
        if self.tbptt:
            steps = sum(len(s) for s in self.dataset.train_streams)
            return steps // self.batch_size // self.window
        return len(BucketBatchSampler(self.lengths, self.batch_size, shuffle=True, seed=cfg.seed))

    def empty_epoch_error(self) -> ValueError:
        return ValueError(f"--data {self.cfg.data}: the training split yields no batch of "
                          f"{self.batch_size} sequences"
                          + (f" and --seq-len {self.window}" if self.tbptt else ""))

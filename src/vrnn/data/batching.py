"""Batches of variable-length sequences: zero-padding with a mask, a length-bucketing batch
sampler, and contiguous windows for truncated BPTT. (Data parallelism shards the rows of each
global batch, ``vrnn.train.distributed.shard``: every rank iterates the same global batches.)

Every order here is a function of (seed, epoch) only, so a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from vrnn.data.core import DataError


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**63, int(epoch) % 2**63])


def pad_batch(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad sequences to a batch.

    Args:
        seqs: B arrays of shape (T_i, D), the same D.

    Returns:
        x: (B, T_max, D) float32, zeros after each sequence's end;
        mask: (B, T_max) bool, True on the real steps.
    """
    if len(seqs) == 0:
        raise DataError("pad_batch: no sequences to batch")
    arrays = [np.asarray(s) for s in seqs]
    bad = [(i, a.shape) for i, a in enumerate(arrays) if a.ndim != 2]
    if bad:
        raise DataError(f"pad_batch: sequence {bad[0][0]} has shape {bad[0][1]}, expected (T, D)")
    dims = {a.shape[1] for a in arrays}
    if len(dims) > 1:
        raise DataError(f"pad_batch: sequences have different frame sizes D {sorted(dims)}")
    D = dims.pop()
    lengths = [len(a) for a in arrays]
    x = np.zeros((len(arrays), max(lengths), D), dtype=np.float32)  # (B, T_max, D)
    mask = np.zeros((len(arrays), max(lengths)), dtype=bool)  # (B, T_max)
    for i, a in enumerate(arrays):
        x[i, : len(a)] = a
        mask[i, : len(a)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


class BucketBatchSampler:
    """Batches of indices whose sequences have similar lengths (little padding).

    Each epoch (``set_epoch``): the indices are shuffled with (seed, epoch), cut into buckets of
    ``BUCKET_BATCHES * batch_size``, sorted by length inside each bucket, cut into batches, and the
    batches shuffled. Without ``shuffle``: all indices sorted by length, batches in that order.
    Only the last batch may be smaller than ``batch_size``; ``drop_last`` drops it.
    """

    BUCKET_BATCHES = 50
    """Batches per length bucket: larger means less padding but batches less random."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order ``__iter__`` yields."""
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        n, bs = len(self.lengths), self.batch_size
        if self.shuffle:
            rng = _rng(self.seed, self.epoch)
            perm = rng.permutation(n)
            size = bs * self.BUCKET_BATCHES
            order = np.concatenate(
                [c[np.argsort(self.lengths[c], kind="stable")]
                 for c in (perm[i:i + size] for i in range(0, n, size))] or [perm])
        else:
            order = np.argsort(self.lengths, kind="stable")
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._batches():
            yield [int(i) for i in b]

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        return n // bs if self.drop_last else -(-n // bs)


def contiguous_batches(streams: list[np.ndarray], batch_size: int, seq_len: int, *,
                       seed: int = 0, epoch: int = 0) -> Iterator[np.ndarray]:
    """Windows for truncated BPTT, so that a carried recurrent state stays meaningful.

    The utterances (each (T_i, D)) are shuffled with (seed, epoch) and concatenated into one
    stream of S steps, which is cut into ``batch_size`` rows of L = S // batch_size consecutive
    steps (the last S mod batch_size steps dropped). Window k holds steps [k * seq_len,
    (k + 1) * seq_len) of every row, so row i of window k + 1 continues row i of window k.
    Yields L // seq_len windows, each float32 of shape (batch_size, seq_len, D); none when a row is
    shorter than ``seq_len``.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    if not streams:
        return
    dims = {np.shape(s)[1] if np.ndim(s) == 2 else -1 for s in streams}
    if len(dims) > 1 or -1 in dims:
        raise DataError(f"contiguous_batches: streams must be (T_i, D) arrays of one D, got "
                        f"shapes like {[np.shape(s) for s in streams[:3]]}")
    D = dims.pop()
    order = _rng(seed, epoch).permutation(len(streams))
    pieces = [streams[i] for i in order]
    cum = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])  # stream offsets
    row_len = int(cum[-1]) // batch_size

    def take(start: int, out: np.ndarray) -> None:
        """Copy steps [start, start + len(out)) of the concatenated stream into out."""
        j = int(np.searchsorted(cum, start, side="right")) - 1
        pos, filled = start, 0
        while filled < len(out):
            piece = pieces[j][pos - cum[j]: pos - cum[j] + len(out) - filled]
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
            pos += len(piece)
            j += 1

    for k in range(row_len // seq_len):
        win = np.empty((batch_size, seq_len, D), dtype=np.float32)  # (B, seq_len, D)
        for i in range(batch_size):
            take(i * row_len + k * seq_len, win[i])
        yield win

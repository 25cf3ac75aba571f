"""Per-step scores of a set of sequences: log p(x_t | x_{<t}), the effective sample size and the
KL of every step (:meth:`vrnn.models.base.SequenceModel.score`), batched by similar length.

What ``vrnn score`` writes, one row per valid step. The figures and when to trust them:
:class:`vrnn.inference.likelihood.StepScores` and :func:`vrnn.inference.smc.smc_step_scores`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vrnn.data.batching import pad_batch
from vrnn.inference.likelihood import check_method
from vrnn.models.base import SequenceModel


@dataclass(kw_only=True)
class SequenceScores:
    """The per-step scores of N sequences, in the order they were given: one ``(T_i,)`` float64
    array per sequence in each list (valid steps only, so no padding).

    ``log_p``: log p(x_t | x_{<t}) in nats per step (exact for a model without latent variables,
    else one particle filter's estimate; a sequence's steps sum to that filter's log p^(x));
    ``ess``: ESS_t, between 1 and ``num_samples`` (1 when exact); ``kl``: KL(q || p) of z_t
    averaged over the particles under the weights they carry into the step (0 without latent
    variables); ``resampled``: bool, the filter resampled after the step; ``method``: "smc" or
    "exact"; ``num_samples``: K, the particles (1 when exact).
    """

    log_p: list[np.ndarray]
    ess: list[np.ndarray]
    kl: list[np.ndarray]
    resampled: list[np.ndarray]
    method: str
    num_samples: int

    @property
    def lengths(self) -> np.ndarray:
        """The sequences' lengths ``(N,)``."""
        return np.array([len(v) for v in self.log_p])

    @property
    def log_likelihood(self) -> np.ndarray:
        """Each sequence's log p^(x), ``(N,)``: the sum of its steps."""
        return np.array([float(v.sum()) for v in self.log_p])

    def rows(self) -> Iterator[tuple[int, int, float, float, float]]:
        """``(sequence, step, log_p, ess, kl)`` for every valid step, both indices from 0."""
        for i, (lp, ess, kl) in enumerate(zip(self.log_p, self.ess, self.kl)):
            for t in range(len(lp)):
                yield i, t, float(lp[t]), float(ess[t]), float(kl[t])


def score_sequences(model: SequenceModel, sequences: Sequence[np.ndarray], *,
                    batch_size: int = 32, num_samples: int = 40, seed: int = 0,
                    threshold: float = 0.5, resampling: str = "multinomial",
                    device: torch.device | str | None = None,
                    progress=None) -> SequenceScores:
    """``model.score`` of every ``(T_i, D)`` array of ``sequences``, batched by similar length.

    Args:
        num_samples: K, the particles of the one filter per sequence (ignored, exactly, by a
            model without latent variables).
        threshold, resampling: the filter's (:meth:`vrnn.models.base.SequenceModel.score`).
        seed: the draws of every batch come from one generator seeded with it.
        progress: an optional callable taking the number of sequences just finished.
    """
    if len(sequences) == 0:
        raise ValueError("score_sequences got no sequences")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    check_method("smc", num_samples, 1, threshold, resampling)
    device = torch.device(device) if device is not None else model.initial_state.device
    gen = torch.Generator(device=device).manual_seed(seed)
    lengths = np.array([len(s) for s in sequences])
    order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths share a batch
    fields = ("log_p", "ess", "kl", "resampled")
    out: dict[str, list] = {f: [None] * len(sequences) for f in fields}
    method = "smc"
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, mask = pad_batch([sequences[i] for i in idx])
            scores = model.score(x.to(device), mask.to(device), num_samples=num_samples,
                                 threshold=threshold, resampling=resampling, generator=gen)
            method = scores.method
            for f in fields:
                value = getattr(scores, f).cpu()
                value = value.numpy() if f == "resampled" else value.double().numpy()
                for row, i in enumerate(idx):
                    out[f][i] = value[row, :lengths[i]].copy()  # (T_i,)
            if progress is not None:
                progress(len(idx))
    finally:
        model.train(was_training)
    return SequenceScores(**out, method=method,
                         num_samples=num_samples if method != "exact" else 1)

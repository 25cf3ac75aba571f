"""What a training update maximises and what validation measures: the loss as a module (so that
DistributedDataParallel's hooks run), the sums of an update reduced over the ranks, the KL
weight's schedule, and the validation bound."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from vrnn.evaluation.sequences import evaluate_sequences
from vrnn.inference.objectives import Bound, Objective, make_objective
from vrnn.kernels.precision import autocast
from vrnn.models.base import SequenceModel
from vrnn.train.config import TrainConfig
from vrnn.train.distributed import DistEnv, all_reduce_fields
from vrnn.train.stop import RankSums


class LossModule(nn.Module):
    """The training loss as a module, so that DistributedDataParallel's hooks run: DDP only
    synchronises gradients of computations that go through the *wrapper's* forward.

    ``forward`` returns ``loss = -sum_b bound_b * scale`` (scale = world_size / global batch
    makes DDP's gradient average the single-process mean over the global batch) and the
    :class:`vrnn.inference.objectives.Bound` of the batch from ``objective``
    (:class:`vrnn.inference.objectives.ELBO` with its KL weight and free bits, ``IWAE`` or
    ``FIVO``): the bound beside the plain ELBO and KL per sequence, the final recurrent state
    for truncated BPTT (the ELBO only) and FIVO's ESS.

    Args of ``forward``: ``x (B, T, D)``, ``mask (B, T)``; ``noise``: what
    :meth:`vrnn.inference.objectives.Objective.noise` drew; ``state``: the carried state (the
    ELBO only); ``generator``: FIVO's particle draws; ``figures``: whether the plain ELBO and KL
    beside the loss are needed (FIVO computes them in a pass of their own, so training asks for
    them on the updates that write a row of ``metrics.csv`` only).

    ``precision`` (``--precision``): ``bf16`` runs the forward pass under
    :func:`vrnn.kernels.precision.autocast` (its products, and so their backward, in bfloat16;
    the bounds, densities and sums in float32); ``fp32`` leaves everything in float32.
    """

    def __init__(self, model: SequenceModel, objective: Objective, precision: str = "fp32"):
        super().__init__()
        self.model = model
        self.objective = objective
        self.precision = precision

    def forward(self, x: Tensor, mask: Tensor | None, noise: Tensor | None, state,
                kl_weight: float, scale: float, generator: torch.Generator | None = None,
                figures: bool = True) -> tuple[Tensor, Bound]:
        with autocast(self.model, self.precision, x.device):
            bound = self.objective.bound(self.model, x, mask, noise=noise, state=state,
                                         kl_weight=kl_weight, generator=generator,
                                         figures=figures)
        loss = -bound.objective.sum() * scale
        bound.objective = bound.objective.detach()
        return loss, bound


def objective_of(cfg: TrainConfig) -> Objective:
    """The objective a run's ``--objective``, ``--particles``, ``--resampling``,
    ``--free-bits`` and KL annealing flags describe."""
    return make_objective(cfg.objective, particles=cfg.particles, free_bits=cfg.free_bits,
                          kl_start=cfg.kl_start, kl_anneal_steps=cfg.kl_anneal_steps,
                          resampling=cfg.resampling or "multinomial")


@dataclass
class UpdateSums(RankSums):
    """:class:`vrnn.train.stop.RankSums` and the figures of the K-particle objectives."""

    objective: float = 0.0
    """Sum of the per-sequence bounds being maximised (nats; the ELBO's for --objective elbo
    with its KL weight and free bits)."""
    ess: float = 0.0
    """fivo: sum over sequences of their mean effective sample size."""
    elbo_sequences: float = 0.0
    """The sequences whose ELBO and KL are in ``elbo`` and ``kl``: all of them, or none on a
    fivo update that wrote no row (its ELBO costs a pass of its own)."""
    elbo_steps: float = 0.0
    """Their time steps."""


def kl_weight_at(cfg: TrainConfig, step: int) -> float:
    """The KL weight of a run's objective at update ``step`` (linear annealing from
    ``kl_start`` to 1 over ``kl_anneal_steps``; 1 when off)."""
    return objective_of(cfg).kl_weight(step)


@dataclass
class ValidSums:
    """What validation sums over the ranks."""

    elbo: float = 0.0
    sequences: float = 0.0
    steps: float = 0.0


def validate(model: SequenceModel, sequences: list[np.ndarray], cfg: TrainConfig,
             env: DistEnv) -> tuple[float, float]:
    """Validation bound: mean ELBO per sequence and per step (nats), one posterior sample per
    sequence (the RNN's is the exact log-likelihood).

    The sequences are cut into fixed chunks, each evaluated with its own seed and chunks dealt
    out to the ranks, so the bound does not depend on the number of processes."""
    if cfg.val_max_sequences:
        sequences = sequences[:cfg.val_max_sequences]
    size = max(cfg.batch_size, 16)
    sums = ValidSums()
    for ci in range(env.rank, math.ceil(len(sequences) / size), env.world_size):
        chunk = sequences[ci * size:(ci + 1) * size]
        res = evaluate_sequences(model, chunk, num_samples=1, seed=cfg.seed + ci,
                                 device=env.device, batch_size=size)
        sums.elbo += float(res.elbo.sum())
        sums.sequences += len(chunk)
        sums.steps += float(res.lengths.sum())
    sums = all_reduce_fields(sums, env)
    return sums.elbo / max(sums.sequences, 1), sums.elbo / max(sums.steps, 1)

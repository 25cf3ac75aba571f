"""The bounds training can maximise (``../shared/SPEC.md`` Section 6), per sequence.

- ``elbo``: Eq. 11 of the paper, log p(x_t | .) minus the analytic KL(q(z_t | .) || p(z_t | .))
  summed over time, with KL annealing (a weight on the KL) and free bits (Kingma et al. 2016:
  each step's KL replaced by max(KL_t, lambda) in the loss, :func:`free_bits_kl`).
- ``iwae``: the K-sample importance-weighted bound (Burda et al. 2016),
  log (1/K) sum_k w^k with log w^k = sum_t log p(x_t | .) + log p(z^k_t | .) - log q(z^k_t | .)
  of K trajectories z^k ~ q drawn with :meth:`vrnn.models.vrnn.VRNN.forward`'s ``replicas`` (phi_x
  and
  its products once per sequence). With K = 1 it is the ELBO with a *sampled* KL (the log-ratio
  of the drawn z), not the analytic one: equal in expectation, not per draw.
- ``fivo``: the SMC bound (Maddison et al. 2017), :func:`vrnn.inference.smc.smc_log_likelihood` with
  ``differentiable=True``: K particles resampled when ESS < K/2, the gradient of log p^(x)
  without the resampling's score-function term.

Each returns a :class:`Bound`: the differentiable per-sequence objective whose negative sum the
training loss is, and beside it the plain ELBO and KL of the same pass (detached; what
``metrics.csv`` reports as ``train_bound``). Model code only: no training state, no I/O.

Notation as in :mod:`vrnn.models.vrnn`: B sequences, T steps, Z latent size, K particles; replica k
of
sequence b is row ``k * B + b`` of every ``(K * B, .)`` tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vrnn.models.vrnn import SequenceModel, State, StepTerms, masked_sum

OBJECTIVES = ("elbo", "iwae", "fivo")
"""The values of ``--objective``."""

DEFAULT_PARTICLES = 4
"""``--particles`` of iwae and fivo when not given (FIVO's speech experiments use 4)."""


@dataclass
class Bound:
    """One objective's figures for a batch, each ``(B,)``."""

    objective: Tensor
    """The bound being maximised, per sequence (differentiable; the loss is minus its sum)."""
    elbo: Tensor
    """The ELBO with the analytic KL and weight 1 (detached; the mean over the K particles)."""
    kl: Tensor
    """The analytic KL summed over the valid steps (detached; the mean over the particles)."""
    state: State | None = None
    """The final recurrent state of the B rows (the ELBO's, for TBPTT); None for iwae / fivo,
    whose windows all start from the initial state."""
    ess: Tensor | None = None
    """fivo: the mean over time of each sequence's effective sample size (1 to K)."""


def free_bits_kl(kl: Tensor, free_bits: float) -> Tensor:
    """Free bits per time step: ``max(KL_t, lambda)`` of each row's ``kl (B, T)`` (the KL of the
    whole latent vector z_t, summed over its Z dimensions) -> ``(B, T)``.

    Per step rather than per dimension: ``StepTerms.kl`` is already the step's KL, so this works
    for every latent model (VRNN, VRNN-I, SRNN) without a per-dimension KL, and lambda reads in
    the same unit as ``train_kl_per_step``. Per row (each sequence's own KL_t), not Kingma et
    al.'s minibatch mean of it: the loss stays a sum over sequences, so DistributedDataParallel's
    gradient stays that of one process over the global batch. Steps whose KL is below lambda
    give the encoder and the prior no gradient through the KL term."""
    return kl.clamp(min=free_bits)


def elbo_bound(model: SequenceModel, x: Tensor, mask: Tensor | None, *, noise: Tensor | None,
               state: State | None = None, kl_weight: float = 1.0,
               free_bits: float = 0.0, generator: torch.Generator | None = None) -> Bound:
    """The ELBO of ``x (B, T, D)``, ``mask (B, T)`` with ``noise (B, T, Z)``, from ``state``.

    The objective is ``sum_t log p(x_t | .) - kl_weight * KL_t`` (``max(KL_t, free_bits)`` when
    ``free_bits > 0``: :func:`free_bits_kl`); ``elbo`` is the true ELBO (weight 1, no clamp).
    """
    terms = model(x, mask, state=state, noise=noise, generator=generator)
    if free_bits > 0:
        objective = masked_sum(terms.log_px - kl_weight * free_bits_kl(terms.kl, free_bits),
                               mask)  # (B,)
    else:
        objective = terms.elbo(mask, kl_weight)  # (B,)
    return Bound(objective, terms.elbo(mask).detach(), masked_sum(terms.kl, mask).detach(),
                 state=terms.state)


def log_weights(terms: StepTerms, mask: Tensor | None, particles: int) -> Tensor:
    """Log importance weights of a ``replicas=K`` pass with ``sample_terms=True``:
    ``log w = sum_t log p(x_t | .) + log p(z_t | .) - log q(z_t | .)`` over the valid steps
    -> ``(K, B)``, row k holding particle k of every sequence."""
    mr = None if mask is None else mask.repeat(particles, 1)  # (K * B, T)
    log_w = masked_sum(terms.log_px + terms.log_pz - terms.log_qz, mr)  # (K * B,)
    return log_w.view(particles, -1)  # (K, B)


def iwae(log_w: Tensor) -> Tensor:
    """The importance-weighted bound ``log (1/K) sum_k w^k`` of ``log_w (K, B)`` -> ``(B,)``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def iwae_bound(model: SequenceModel, x: Tensor, mask: Tensor | None, *, particles: int,
               noise: Tensor | None = None, generator: torch.Generator | None = None) -> Bound:
    """The IWAE bound (Burda et al. 2016) of ``x (B, T, D)`` with K = ``particles`` posterior
    trajectories per sequence from the initial state; ``noise (K * B, T, Z)`` (row ``k * B +
    b``: particle k of sequence b), drawn from ``generator`` when None."""
    if particles < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    B = x.shape[0]
    terms = model(x, mask, noise=noise, generator=generator, sample_terms=True,
                  replicas=particles)  # (K * B, T) terms
    mr = None if mask is None else mask.repeat(particles, 1)  # (K * B, T)
    elbo = terms.elbo(mr).view(particles, B).mean(0)  # (B,)
    kl = masked_sum(terms.kl, mr).view(particles, B).mean(0)  # (B,)
    return Bound(iwae(log_weights(terms, mask, particles)), elbo.detach(), kl.detach())


def fivo_bound(model: SequenceModel, x: Tensor, mask: Tensor | None, *, particles: int,
               generator: torch.Generator | None = None, elbo_noise: Tensor | None = None
               ) -> Bound:
    """The FIVO bound (Maddison et al. 2017) of ``x (B, T, D)``: the log of SMC's unbiased
    estimate of p(x) with ``particles`` particles (:func:`vrnn.inference.smc.smc_log_likelihood`,
    ``differentiable=True``: no gradient through the resampling), its draws from ``generator``.

    The plain ELBO beside it comes from one more pass without gradient, with ``elbo_noise
    (B, T, Z)`` (drawn from ``generator`` when None)."""
    from vrnn.inference.smc import smc_log_likelihood  # imported here: the SMC is only FIVO's

    est = smc_log_likelihood(model, x, mask, particles=particles, generator=generator,
                             differentiable=True)
    with torch.no_grad():
        terms = model(x, mask, noise=elbo_noise, generator=generator)
    return Bound(est.log_likelihood, terms.elbo(mask), masked_sum(terms.kl, mask),
                 ess=est.ess_mean.detach())

"""The bounds training can maximise, per sequence, as objects a training loop is handed.

- :class:`ELBO`: Eq. 11 of Chung et al., log p(x_t | .) minus the analytic
  KL(q(z_t | .) || p(z_t | .)) summed over time, with KL annealing (a weight on the KL, raised
  linearly from ``kl_start`` to 1 over ``kl_anneal_steps`` updates) and free bits (Kingma et al.
  2016: each step's KL replaced by max(KL_t, lambda) in the loss, :func:`free_bits_kl`).
- :class:`IWAE`: the K-sample importance-weighted bound (Burda et al. 2016),
  log (1/K) sum_k w^k with log w^k = sum_t log p(x_t | .) + log p(z^k_t | .) - log q(z^k_t | .)
  of K trajectories z^k ~ q drawn with ``model(x, replicas=K)`` (what does not depend on z once
  per sequence). With K = 1 it is the ELBO with a *sampled* KL (the log-ratio of the drawn z),
  not the analytic one: equal in expectation, not per draw.
- :class:`FIVO`: the SMC bound (Maddison et al. 2017): K particles resampled when ESS < K/2, the
  gradient of log p^(x) without the resampling's score-function term. The filter runs inside the
  model's own pass (:meth:`vrnn.models.base.SequenceModel.particle_pass`: the VRNN's hand-written
  loop, the literal pass for the other families; :mod:`vrnn.inference.particles`).

Each object owns its noise (:meth:`Objective.noise`: what it draws from a run's shared stream for
a global batch) and its bound (:meth:`Objective.bound`), which returns a :class:`Bound`: the
differentiable per-sequence objective whose negative sum the training loss is, and beside it the
plain ELBO and KL of the same pass (detached; what ``metrics.csv`` reports as ``train_bound``).
Swapping the bound is one argument: ``vrnn.fit(model, data, objective=FIVO(4))``.

Notation as in :mod:`vrnn.models.base`: B sequences, T steps, Z latent size, K particles;
replica k of sequence b is row ``k * B + b`` of every ``(K * B, .)`` tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vrnn.inference.likelihood import check_method
from vrnn.inference.particles import ParticleFilter, resampled_log_likelihood
from vrnn.inference.protocol import State, StepTerms, masked_sum
from vrnn.inference.weights import log_mean_exp

OBJECTIVES = ("elbo", "iwae", "fivo")
"""The values of ``--objective``."""

DEFAULT_PARTICLES = 4
"""``--particles`` of iwae and fivo when not given (FIVO's speech experiments use 4)."""


@dataclass
class Bound:
    """One objective's figures for a batch, each ``(B,)``."""

    objective: Tensor
    """The bound being maximised, per sequence (differentiable; the loss is minus its sum)."""
    elbo: Tensor | None
    """The ELBO with the analytic KL and weight 1 (detached; the mean over the K particles);
    None where it would cost a pass of its own and was not asked for (fivo with
    ``figures=False``)."""
    kl: Tensor | None
    """The analytic KL summed over the valid steps (detached; the mean over the particles);
    None with ``elbo``."""
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


def elbo_bound(model, x: Tensor, mask: Tensor | None, *, noise: Tensor | None,
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
    return terms.log_weights(mr).view(particles, -1)  # (K, B)


def iwae(log_w: Tensor) -> Tensor:
    """The importance-weighted bound ``log (1/K) sum_k w^k`` of ``log_w (K, B)`` -> ``(B,)``."""
    return log_mean_exp(log_w, 0)


def iwae_bound(model, x: Tensor, mask: Tensor | None, *, particles: int,
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


def fivo_bound(model, x: Tensor, mask: Tensor | None, *, particles: int,
               generator: torch.Generator | None = None, elbo_noise: Tensor | None = None,
               threshold: float = 0.5, resampling: str = "multinomial",
               noise: Tensor | None = None, figures: bool = True) -> Bound:
    """The FIVO bound (Maddison et al. 2017) of ``x (B, T, D)``: the log of SMC's unbiased
    estimate of p(x) with ``particles`` particles, no gradient through the resampling.

    The particles' noise ``(K * B, T, Z)`` (``noise``, else drawn from ``generator`` first),
    then the ancestors, drawn from ``generator`` at the steps that resample; the filter runs in
    the model's own pass (:meth:`~vrnn.models.base.SequenceModel.particle_pass`), and log p^
    is recomputed from the pass's differentiable terms along the ancestors it chose
    (:func:`vrnn.inference.particles.resampled_log_likelihood`). The plain ELBO beside it comes
    from one more pass of the B sequences without gradient, with ``elbo_noise (B, T, Z)``
    (drawn from ``generator`` when None); ``figures=False`` skips that pass (the Bound's
    ``elbo`` and ``kl`` are then None): training asks for it on the updates that write a row
    of ``metrics.csv`` only."""
    check_method("smc", particles, 1, threshold, resampling)
    model._check_input(x, mask)
    B, T, _ = x.shape
    K = particles
    valid = (torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None
             else mask.bool())
    if noise is None:
        noise = torch.randn(K * B, T, model.latent_dim, dtype=x.dtype, device=x.device,
                            generator=generator)
    pf = ParticleFilter(K, valid, threshold=threshold, resampling=resampling,
                        generator=generator, dtype=x.dtype)
    terms = model.particle_pass(x, mask, noise=noise, particles=pf)  # (K * B, T) terms
    log_alpha = terms.log_px + terms.log_pz - terms.log_qz
    bound = resampled_log_likelihood(log_alpha, pf.resampled, valid, K)  # (B,)
    if not figures:
        return Bound(bound, None, None, ess=pf.ess_mean)
    with torch.no_grad():
        plain = model(x, mask, noise=elbo_noise, generator=generator)
    return Bound(bound, plain.elbo(mask), masked_sum(plain.kl, mask), ess=pf.ess_mean)


# -- the objectives as objects -------------------------------------------------------------------


class Objective:
    """A bound a training loop maximises: its noise and its bound (see the module's notes)."""

    name: str = ""
    particles: int = 1
    reports_ess: bool = False
    """Whether its :class:`Bound` carries an effective sample size (``metrics.csv``'s
    ``train_ess``)."""
    carries_state: bool = False
    """Whether truncated BPTT may carry the recurrent state across windows (the ELBO is a sum
    over windows; a K-sample bound is not, so its windows start from the initial state)."""

    def kl_weight(self, step: int) -> float:
        """The KL's weight at update ``step`` (1: the bound itself)."""
        return 1.0

    def noise(self, latent_dim: int, global_size: int, global_len: int, rows: Tensor, T: int,
              stream: torch.Generator | None, device: torch.device | str,
              rank: int = 0) -> tuple[Tensor, torch.Generator | None]:
        """This update's draws from a run's shared ``stream`` for a global batch of
        ``global_size`` sequences padded to ``global_len``: the noise of the local ``rows``
        (their first ``T`` steps) and, for an objective that draws as it goes, a generator
        seeded from the stream (and ``rank``). The whole global batch's noise is drawn and the
        local rows kept, so a sequence gets the same noise whichever process holds it.
        Default: one trajectory per row, ``(b, T, Z)``, and no generator."""
        noise = torch.randn(global_size, global_len, latent_dim, device=device,
                            generator=stream)[rows, :T]
        return noise, None

    def bound(self, model, x: Tensor, mask: Tensor | None, *, noise: Tensor | None,
              state: State | None = None, kl_weight: float = 1.0,
              generator: torch.Generator | None = None, figures: bool = True) -> Bound:
        """The :class:`Bound` of ``x (B, T, D)``, ``mask (B, T)``; ``figures=False``: the plain
        ELBO and KL beside the objective may be left out (None) where they cost a pass of their
        own (fivo); objectives that get them from their own pass report them anyway."""
        raise NotImplementedError

    def describe(self) -> str:
        """The objective as the command line names it, e.g. ``iwae (K=4)``."""
        return self.name if self.particles == 1 else f"{self.name} (K={self.particles})"


class ELBO(Objective):
    """The ELBO, with KL annealing and free bits.

    Args:
        free_bits: lambda in nats per step: the loss counts each step's KL as at least lambda
            (0: off).
        kl_start: the KL weight at update 0 when annealing.
        kl_anneal_steps: updates over which the weight rises linearly to 1 (0: no annealing).
    """

    name = "elbo"
    carries_state = True

    def __init__(self, free_bits: float = 0.0, kl_start: float = 0.0, kl_anneal_steps: int = 0):
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0 nats, got {free_bits}")
        if not 0.0 <= kl_start <= 1.0:
            raise ValueError(f"kl_start must be in [0, 1], got {kl_start}")
        if kl_anneal_steps < 0:
            raise ValueError(f"kl_anneal_steps must be >= 0, got {kl_anneal_steps}")
        self.free_bits, self.kl_start = float(free_bits), float(kl_start)
        self.kl_anneal_steps = int(kl_anneal_steps)

    def kl_weight(self, step: int) -> float:
        """Linear KL annealing from ``kl_start`` to 1 over ``kl_anneal_steps`` (1 when off)."""
        if self.kl_anneal_steps <= 0:
            return 1.0
        return self.kl_start + (1.0 - self.kl_start) * min(1.0, step / self.kl_anneal_steps)

    def bound(self, model, x, mask, *, noise, state=None, kl_weight=1.0, generator=None,
              figures=True):
        return elbo_bound(model, x, mask, noise=noise, state=state, kl_weight=kl_weight,
                          free_bits=self.free_bits, generator=generator)

    def __repr__(self) -> str:
        return (f"ELBO(free_bits={self.free_bits}, kl_start={self.kl_start}, "
                f"kl_anneal_steps={self.kl_anneal_steps})")


def _check_particles(particles: int) -> int:
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles must be an int >= 1, got {particles!r}")
    return particles


class IWAE(Objective):
    """The importance-weighted bound of ``particles`` trajectories per sequence."""

    name = "iwae"

    def __init__(self, particles: int = DEFAULT_PARTICLES):
        self.particles = _check_particles(particles)

    def noise(self, latent_dim, global_size, global_len, rows, T, stream, device, rank=0):
        """The whole global batch's K samples at once, ``(K * b, T, Z)`` of the local rows
        (row ``k * b + j``: particle k of local row j)."""
        K = self.particles
        noise = torch.randn(K, global_size, global_len, latent_dim, device=device,
                            generator=stream)
        return noise[:, rows, :T].reshape(K * len(rows), T, latent_dim), None

    def bound(self, model, x, mask, *, noise, state=None, kl_weight=1.0, generator=None,
              figures=True):
        return iwae_bound(model, x, mask, particles=self.particles, noise=noise,
                          generator=generator)

    def __repr__(self) -> str:
        return f"IWAE(particles={self.particles})"


class FIVO(Objective):
    """The particle filter's bound with ``particles`` particles, resampling (``resampling``:
    multinomial or systematic) when the ESS falls below ``threshold * particles``."""

    name = "fivo"
    reports_ess = True

    def __init__(self, particles: int = DEFAULT_PARTICLES, threshold: float = 0.5,
                 resampling: str = "multinomial"):
        self.particles = _check_particles(particles)
        check_method("smc", self.particles, 1, threshold, resampling)
        self.threshold, self.resampling = float(threshold), resampling

    def noise(self, latent_dim, global_size, global_len, rows, T, stream, device, rank=0):
        """The ELBO figure's noise as :class:`Objective`'s, then a generator for the particles
        and their ancestors, seeded afresh from the stream each update (and the rank): the
        draws are per row, so with several processes they depend on the rank."""
        noise, _ = super().noise(latent_dim, global_size, global_len, rows, T, stream, device)
        seed = int(torch.randint(2**62, (1,), device=device, generator=stream))
        return noise, torch.Generator(device=device).manual_seed(seed + rank)

    def bound(self, model, x, mask, *, noise, state=None, kl_weight=1.0, generator=None,
              figures=True):
        return fivo_bound(model, x, mask, particles=self.particles, generator=generator,
                          elbo_noise=noise, threshold=self.threshold,
                          resampling=self.resampling, figures=figures)

    def __repr__(self) -> str:
        return (f"FIVO(particles={self.particles}, threshold={self.threshold}, "
                f"resampling={self.resampling!r})")


def make_objective(name: str, *, particles: int | None = None, free_bits: float = 0.0,
                   kl_start: float = 0.0, kl_anneal_steps: int = 0,
                   resampling: str = "multinomial") -> Objective:
    """The objective the command line's ``--objective NAME`` and its flags describe."""
    if name not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}; got {name!r}")
    if name == "elbo":
        return ELBO(free_bits=free_bits, kl_start=kl_start, kl_anneal_steps=kl_anneal_steps)
    K = particles or DEFAULT_PARTICLES
    return IWAE(K) if name == "iwae" else FIVO(K, resampling=resampling)

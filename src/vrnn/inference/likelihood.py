"""One answer to "what is log p(x)": :class:`LogProb`, whatever estimated it.

``model.log_prob(x, mask, method="is" | "smc")`` (:meth:`vrnn.models.base.SequenceModel.log_prob`,
through :func:`vrnn.inference.estimate.log_prob_of`) returns it: importance sampling
(:mod:`vrnn.inference.importance`), the particle filter (:mod:`vrnn.inference.smc`), or the
exact log-likelihood of a model without latent variables. ``model.score`` answers the same
question step by step, log p(x_t | x_{<t}), as :class:`StepScores`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("is", "smc")
"""The estimators of log p(x): importance sampling, sequential Monte Carlo (a particle filter)."""
RESAMPLING = ("multinomial", "systematic")
"""How the particle filter draws ancestors."""
DEFAULT_SMC_REPEATS = 4
"""Independent particle filters per sequence for SMC's standard error."""


@dataclass
class LogProb:
    """log p(x) of B sequences and how far to trust it; every tensor ``(B,)`` unless noted.

    ``log_likelihood``: the estimate, nats per sequence (summed over the valid steps), on the
    scale of the data handed in; ``stderr``: its Monte Carlo standard error by the delta method,
    over the S importance weights (IS) or the R filters' estimates (SMC), zero when exact;
    ``elbo``: the ELBO, averaged over the posterior draws; ``ess_mean`` / ``ess_min``: the
    effective sample size (IS: of the S trajectory weights, both the same; SMC: mean and least
    over the steps and the filters; exact: ``num_samples``); ``resamples``: resampling steps per
    filter, mean over the filters (0 unless SMC); ``log_weights``: ``(S, B)`` the log importance
    weights (IS) or ``(R, B)`` the filters' log-estimates (SMC), whose log-mean-exp is the
    estimate; ``method``: "is", "smc" or "exact"; ``num_samples``: S, the samples or the
    particles per filter; ``repeats``: R, SMC's filters per sequence (1 otherwise).
    """

    log_likelihood: Tensor
    stderr: Tensor
    elbo: Tensor
    ess_mean: Tensor
    ess_min: Tensor
    resamples: Tensor
    log_weights: Tensor
    method: str
    num_samples: int
    repeats: int = 1

    def shifted(self, by: Tensor) -> LogProb:
        """The same estimate with ``by (B,)`` nats added to the log-likelihood, the ELBO and the
        log weights (a change of the data's scale)."""
        return LogProb(self.log_likelihood + by, self.stderr, self.elbo + by, self.ess_mean,
                       self.ess_min, self.resamples, self.log_weights + by, self.method,
                       self.num_samples, self.repeats)


def exact_log_prob(log_likelihood: Tensor) -> LogProb:
    """The :class:`LogProb` of an exact log-likelihood ``(B,)``: no error, one "sample"."""
    ones = torch.ones_like(log_likelihood)
    return LogProb(log_likelihood, torch.zeros_like(log_likelihood), log_likelihood, ones,
                   ones.clone(), torch.zeros_like(log_likelihood), log_likelihood.unsqueeze(0),
                   "exact", 1)


def check_method(method: str, num_samples: int, repeats: int, threshold: float,
                 resampling: str) -> None:
    """One-line errors for the arguments of :func:`log_prob_of`, naming the argument."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {', '.join(RESAMPLING)}; "
                         f"got {resampling!r}")


@dataclass
class StepScores:
    """log p(x_t | x_{<t}) at every step of B sequences, and how far to trust each: what
    ``model.score`` returns (:meth:`vrnn.models.base.SequenceModel.score`). Every tensor is
    ``(B, T)``; padded steps (``mask`` false) hold zeros (never NaN), and ``resampled`` false.

    ``log_p``: the one-step predictive log-density log p(x_t | x_{<t}), nats per step on the
    scale of the data handed in (a model that normalises its input adds the step's log-Jacobian,
    as ``log_prob`` does). Exact for a model without latent variables (``method == "exact"``);
    otherwise one particle filter's estimate log sum_k W_{t-1}^k alpha_t^k
    (:mod:`vrnn.inference.smc`), so the steps of a sequence sum to that filter's log p^(x)
    (:attr:`log_likelihood`), a stochastic lower bound of log p(x). ``ess``: ESS_t =
    1 / sum_k (W_t^k)^2, the effective number of particles behind the step's figure: the ESS of
    its K terms W_{t-1}^k alpha_t^k (between 1 and K; 1 when exact); near 1, one particle
    carried the step and its figure is noisy. ``kl``: KL(q(z_t | past, x) || p(z_t | past)), the
    analytic KL of each particle averaged under W_{t-1}, the weights its past carries into step
    t (uniform after a resampling step), in nats: how far the frame moved the posterior from the
    prior (zero without latent variables). ``resampled``: bool, whether the filter resampled
    after step t. ``mask``: bool, the valid steps. ``method``: "smc" or "exact";
    ``num_samples``: K, the particles (1 when exact).
    """

    log_p: Tensor
    ess: Tensor
    kl: Tensor
    resampled: Tensor
    mask: Tensor
    method: str
    num_samples: int

    @property
    def log_likelihood(self) -> Tensor:
        """log p^(x) per sequence, ``(B,)``: the sum of :attr:`log_p` over the valid steps."""
        return self.log_p.sum(1)

    def shifted(self, by: Tensor | float) -> StepScores:
        """The same scores with ``by`` nats (a scalar or ``(B, T)``) added to ``log_p`` at every
        valid step (a change of the data's scale: the per-step log-Jacobian)."""
        by = torch.as_tensor(by, dtype=self.log_p.dtype, device=self.log_p.device)
        log_p = self.log_p + by * self.mask.to(self.log_p.dtype)  # (B, T)
        return StepScores(log_p, self.ess, self.kl, self.resampled, self.mask, self.method,
                          self.num_samples)


def exact_step_scores(log_p: Tensor, mask: Tensor | None = None) -> StepScores:
    """The :class:`StepScores` of an exact ``log p(x_t | x_{<t})`` ``(B, T)`` (a model without
    latent variables): zeros at padded steps, ESS 1, no KL, one "sample"."""
    mask = (torch.ones(log_p.shape, dtype=torch.bool, device=log_p.device) if mask is None
            else mask.bool())
    zeros = torch.zeros_like(log_p)
    return StepScores(torch.where(mask, log_p, 0.0), mask.to(log_p.dtype), zeros,
                      torch.zeros_like(mask), mask, "exact", 1)

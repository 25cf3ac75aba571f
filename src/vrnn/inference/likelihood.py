"""One answer to "what is log p(x)": :class:`LogProb`, whatever estimated it.

``model.log_prob(x, mask, method="is" | "smc")`` (:meth:`vrnn.models.base.SequenceModel.log_prob`,
through :func:`vrnn.inference.estimate.log_prob_of`) returns it: importance sampling
(:mod:`vrnn.inference.importance`), the particle filter (:mod:`vrnn.inference.smc`), or the
exact log-likelihood of a model without latent variables.
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

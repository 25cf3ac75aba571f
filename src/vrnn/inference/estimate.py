"""log p(x) by the method asked for: the estimators behind ``model.log_prob``."""

from __future__ import annotations

import torch
from torch import Tensor

from vrnn.inference.importance import estimate_log_likelihood
from vrnn.inference.likelihood import DEFAULT_SMC_REPEATS, LogProb, check_method
from vrnn.inference.smc import estimate_log_likelihood_smc


@torch.no_grad()
def log_prob_of(model, x: Tensor, mask: Tensor | None, *, method: str, num_samples: int,
                repeats: int = DEFAULT_SMC_REPEATS, threshold: float = 0.5,
                resampling: str = "multinomial",
                generator: torch.Generator | None = None) -> LogProb:
    """log p(x) of ``x (B, T, D)`` by ``method``: the estimators behind ``model.log_prob``.

    ``"is"``: :func:`vrnn.inference.importance.estimate_log_likelihood` with ``num_samples``
    trajectories. ``"smc"``: :func:`vrnn.inference.smc.estimate_log_likelihood_smc`, ``repeats``
    filters of ``num_samples`` particles, and the ELBO from ``repeats`` posterior draws.
    """
    check_method(method, num_samples, repeats, threshold, resampling)
    if method == "is":
        return estimate_log_likelihood(model, x, mask, num_samples=num_samples,
                                       generator=generator)
    est = estimate_log_likelihood_smc(model, x, mask, particles=num_samples, repeats=repeats,
                                      threshold=threshold, resampling=resampling,
                                      generator=generator)
    est.elbo = estimate_log_likelihood(model, x, mask, num_samples=repeats,
                                       generator=generator).elbo
    return est

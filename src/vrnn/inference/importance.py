"""Importance sampling of log p(x) (Chung et al. 2015, Section 5; Burda et al. 2016).

Each of S importance samples is a whole latent trajectory z^s_{<=T} drawn from the posterior q,
and

    log p(x_{<=T}) ~ log (1/S) sum_s exp( sum_t [log p(x_t | .) + log p(z^s_t | .)
                                                 - log q(z^s_t | .)] )

computed with logsumexp (:mod:`vrnn.inference.weights`). The estimate is the log of an unbiased
estimate of p(x), so a stochastic lower bound whose expectation rises to log p(x) as S grows; on
average it sits at or above the ELBO. Over long sequences one trajectory soon carries all the
weight (an effective sample size near 1), where the particle filter (:mod:`vrnn.inference.smc`)
is far tighter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vrnn.inference.likelihood import LogProb
from vrnn.inference.weights import delta_stderr, effective_sample_size, log_mean_exp

DEFAULT_STEP_BUDGET = 1 << 16
"""Sequence-steps per forward pass: bounds the memory of the S x B replicas."""
DEFAULT_ROW_BUDGET = 512
"""Rows (replicas x sequences) per time step of a pass: beyond a few hundred rows the per-step
tensors leave the caches and a pass gets slower per row (measured at the benchmark's MNIST size:
4 replicas of 128 sequences beat 8 or more)."""


@torch.no_grad()
def estimate_log_likelihood(model, x: Tensor, mask: Tensor | None = None, *,
                            num_samples: int = 40, chunk_size: int | None = None,
                            generator: torch.Generator | None = None) -> LogProb:
    """ELBO and importance-sampled log p(x) of every sequence of ``x (B, T, D)``.

    The S samples are batched together: each pass carries ``chunk`` replicas of every sequence
    (``model(x, replicas=chunk)``: what does not depend on z runs once per sequence, the rest
    once per replica), and passes run until S samples are drawn, so memory stays bounded
    (default chunk: as many replicas as fit ``DEFAULT_ROW_BUDGET`` rows per step and
    ``DEFAULT_STEP_BUDGET`` sequence-steps per pass). The result is that of
    ``x.repeat(chunk, 1, 1)`` with the same noise.

    Returns:
        :class:`vrnn.inference.likelihood.LogProb` with ``method="is"``; ``log_weights`` the
        ``(S, B)`` log importance weights, ``ess_mean`` and ``ess_min`` both their ESS.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    B, T, _ = x.shape
    if chunk_size is None:
        chunk_size = max(1, min(num_samples, DEFAULT_ROW_BUDGET // max(1, B),
                                DEFAULT_STEP_BUDGET // max(1, B * T)))
    log_ws, elbos = [], []
    done = 0
    while done < num_samples:
        c = min(chunk_size, num_samples - done)
        # replica s of sequence b at row s * B + b of every term
        mr = None if mask is None else mask.repeat(c, 1)  # (c * B, T)
        terms = model(x, mask, generator=generator, sample_terms=True, replicas=c)
        log_ws.append(terms.log_weights(mr).view(c, B))  # (c, B)
        elbos.append(terms.elbo(mr).view(c, B))  # (c, B)
        done += c
    log_w = torch.cat(log_ws)  # (S, B)
    ess = effective_sample_size(log_w)
    return LogProb(log_likelihood=log_mean_exp(log_w), stderr=delta_stderr(log_w),
                   elbo=torch.cat(elbos).mean(0), ess_mean=ess, ess_min=ess,
                   resamples=torch.zeros_like(ess), log_weights=log_w, method="is",
                   num_samples=num_samples)

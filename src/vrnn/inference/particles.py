"""The particle filter inside a model's own pass over time: FIVO and SMC at the fast path's speed.

:mod:`vrnn.inference.smc` runs the filter one step at a time through the step protocol, every
network called on ``(K * B, .)`` slices under autograd. A model's fast pass (the VRNN's
hand-written filtering loop) runs the same K particles as ``replicas=K``; what it lacks is the
filter's one sequential decision: after each step, whether a sequence's particles have
degenerated and which ancestors they continue from. :class:`ParticleFilter` is that decision,
handed to the pass as a hook: the pass reports each step's incremental log weights (computed
without gradient), the hook returns the rows to reorder the state by, or None. Afterwards the
pass's own per-step terms (batched over all steps, differentiable) give the log weights again,
and :func:`resampled_log_likelihood` turns them into log p^(x) along the same ancestors: the
FIVO bound whose gradient is the fast path's (no gradient through the choice of ancestors, as
Maddison et al. 2017).

The filter (Maddison et al. 2017, Section 3; notation of :mod:`vrnn.inference.smc`):

    log p^(x) = sum_t log sum_k W_{t-1}^k alpha_t^k,   W_t^k ∝ W_{t-1}^k alpha_t^k,
    resample sequence b after step t when ESS_t = 1 / sum_k (W_t^k)^2 < threshold * K, and then
    W_t^k = 1/K.

Rows are particle-major: row ``k * B + b`` is particle k of sequence b. Padded steps (``valid``
false; prefix masks) have alpha = 1 and never resample; nor does a sequence's last valid step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vrnn.inference.weights import effective_sample_size


def draw_ancestors(weights_log: Tensor, resampling: str,
                   generator: torch.Generator | None) -> Tensor:
    """K ancestor indices for each of b sequences from their normalised log weights
    ``(b, K)`` -> ``(b, K)`` (long): multinomial (K independent draws from W) or systematic (the
    points (u + k) / K, one u ~ U(0, 1) per sequence, through the cumulative weights)."""
    b, K = weights_log.shape
    W = weights_log.exp()  # (b, K)
    if resampling == "multinomial":
        return torch.multinomial(W, K, replacement=True, generator=generator)  # (b, K)
    u = torch.rand(b, 1, dtype=W.dtype, device=W.device, generator=generator)  # (b, 1)
    points = (u + torch.arange(K, dtype=W.dtype, device=W.device)) / K  # (b, K)
    cdf = W.cumsum(1)  # (b, K)
    return torch.searchsorted(cdf, points).clamp(max=K - 1)  # (b, K)


class ParticleFilter:
    """The resampling decisions of K particles of B sequences, step by step (no gradient).

    Call it as ``rows = pf(t, log_alpha)`` with step t's incremental log weights ``(K * B,)``
    (log p(x_t | .) + log p(z_t | .) - log q(z_t | .) of each row, in the row order of step t):
    it reweights, records ESS_t and the increment of log p^, and returns ``rows (K * B,)`` (long:
    particle i continues from row ``rows[i]``) when some sequence resamples, else None.
    Ancestors are drawn from ``generator`` by :func:`draw_ancestors`
    (``resampling``: multinomial or systematic), only at steps where a sequence resamples.

    Args:
        particles: K.
        valid: ``(B, T)`` bool, true on the valid prefix of each sequence.
        threshold: resample when ESS_t < ``threshold * K`` (0: never).
        resampling: ``"multinomial"`` or ``"systematic"``.
        generator: the stream of the ancestor draws.
        noise: ``(K * B, T, Z)``, the pass's noise, to be drawn as the filter goes: step 0's
            slice now, and step t + 1's right after step t's ancestors, all from
            ``generator``: the order in which :func:`vrnn.inference.smc.smc_log_likelihood`
            draws them, so both give the same particles (for a pass without gradient: the
            buffer is written while the pass reads it).

    After the pass: ``log_likelihood (B,)`` log p^(x); ``resampled (B, T)`` whether the sequence
    resampled after step t; ``increments (B, T)`` log sum_k W_{t-1}^k alpha_t^k (0 where padded);
    ``ess (B, T)`` ESS_t before any resampling (0 where padded); ``ess_mean``, ``ess_min``,
    ``resamples`` per sequence.
    """

    def __init__(self, particles: int, valid: Tensor, *, threshold: float = 0.5,
                 resampling: str = "multinomial", generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, noise: Tensor | None = None):
        self.K = K = particles
        self.valid = valid.bool()
        B, T = valid.shape
        self.threshold, self.resampling, self.generator = threshold, resampling, generator
        device = valid.device
        self.log_W = torch.full((K, B), -math.log(K), dtype=dtype, device=device)
        self.increments = torch.zeros(B, T, dtype=dtype, device=device)
        self.ess = torch.zeros(B, T, dtype=dtype, device=device)
        self.resampled = torch.zeros(B, T, dtype=torch.bool, device=device)
        self._columns = torch.arange(B, device=device)
        self.noise = noise
        if noise is not None:
            self._draw(0)

    def _draw(self, t: int) -> None:
        self.noise[:, t] = torch.randn(self.noise[:, t].shape, dtype=self.noise.dtype,
                                       device=self.noise.device, generator=self.generator)

    @torch.no_grad()
    def __call__(self, t: int, log_alpha: Tensor) -> Tensor | None:
        rows = self._weigh(t, log_alpha)
        if self.noise is not None and t + 1 < self.valid.shape[1]:
            self._draw(t + 1)
        return rows

    def _weigh(self, t: int, log_alpha: Tensor) -> Tensor | None:
        K, (B, T) = self.K, self.valid.shape
        on = self.valid[:, t]  # (B,)
        la = torch.where(on, log_alpha.detach().view(K, B).to(self.log_W.dtype), 0.0)
        unnorm = self.log_W + la  # (K, B): log W_{t-1} alpha_t
        increment = unnorm.logsumexp(0)  # (B,)
        self.log_W = unnorm - increment
        ess = effective_sample_size(self.log_W)  # (B,)
        self.increments[:, t] = torch.where(on, increment, 0.0)
        self.ess[:, t] = torch.where(on, ess, 0.0)
        if t + 1 == T or self.threshold == 0.0:
            return None
        need = on & self.valid[:, t + 1] & (ess < self.threshold * K)  # (B,)
        if not bool(need.any()):
            return None
        drawn = draw_ancestors(self.log_W[:, need].T, self.resampling, self.generator)  # (b, K)
        ancestors = torch.arange(K, device=la.device).unsqueeze(1).repeat(1, B)  # (K, B)
        ancestors[:, need] = drawn.T
        self.log_W = torch.where(need, -math.log(K), self.log_W)
        self.resampled[:, t] = need
        return (ancestors * B + self._columns).reshape(K * B)

    @property
    def log_likelihood(self) -> Tensor:
        """log p^(x) per sequence ``(B,)``."""
        return self.increments.sum(1)

    @property
    def ess_mean(self) -> Tensor:
        """The mean of ESS_t over each sequence's valid steps ``(B,)``."""
        return self.ess.sum(1) / self.valid.sum(1).clamp(min=1)

    @property
    def ess_min(self) -> Tensor:
        """The least ESS_t over each sequence's valid steps ``(B,)``."""
        return torch.where(self.valid, self.ess, math.inf).amin(1)

    @property
    def resamples(self) -> Tensor:
        """How many times each sequence resampled ``(B,)``."""
        return self.resampled.sum(1)


def resampled_log_likelihood(log_alpha: Tensor, resampled: Tensor, valid: Tensor,
                             particles: int) -> Tensor:
    """log p^(x) of a particle filter whose ancestors are fixed: ``log_alpha (K * B, T)`` each
    row's incremental log weights in its step's row order (differentiable), ``resampled
    (B, T)`` whether sequence b resampled after step t, ``valid (B, T)`` -> ``(B,)``.

    Between resampling steps the normalised weights carry over, and after one they restart at
    1/K, so the result is differentiable in ``log_alpha`` and, through it, in everything that
    produced the particles; not in the choice of ancestors (FIVO's gradient).

    Computed without a loop over time: the weights restart at 1/K after each resampling, so the
    product of a segment's increments (the steps from one restart to the next) telescopes to
    (1/K) sum_k prod_{t in segment} alpha_t^k, and log p^ = sum over segments of
    logsumexp_k (sum_{t in segment} log alpha_t^k) - log K. A segment is numbered by the
    resamplings before its steps; the numbers no sequence reaches have all-zero sums and add
    log K - log K = 0. Padded steps (alpha = 1) add nothing."""
    K = particles
    B, T = valid.shape
    la = torch.where(valid, log_alpha.view(K, B, T), 0.0)  # (K, B, T)
    segment = torch.zeros(B, T, dtype=torch.long, device=la.device)  # (B, T)
    segment[:, 1:] = resampled[:, :-1].long().cumsum(1)
    sums = la.new_zeros(K, B, T).scatter_add(2, segment.expand(K, B, T), la)  # (K, B, T)
    return (sums.logsumexp(0) - math.log(K)).sum(1)  # (B,)

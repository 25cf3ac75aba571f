"""The maths of importance weights, written once: the log of their mean, the delta-method standard
error of that log, and the effective sample size.

With S weights w_s = p(x, z^s) / q(z^s | x) of one sequence (importance sampling's whole
trajectories, or R particle filters' estimates p^_r(x)), the estimate of log p(x) is
log (1/S) sum_s w_s, computed with logsumexp. Its standard error by the delta method is
sd(w) / (sqrt(S) mean(w)); the effective sample size (sum_s w_s)^2 / sum_s w_s^2 says how many of
the S weights carry the estimate (S when equal, 1 when one dominates). Where the ESS is small the
standard error, computed from the same few weights, understates the estimate's real error.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def log_mean_exp(log_w: Tensor, dim: int = 0) -> Tensor:
    """``log(mean(exp(log_w)))`` along ``dim``, computed stably with logsumexp."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def delta_stderr(log_w: Tensor) -> Tensor:
    """Standard error of ``log_mean_exp(log_w, 0)`` for ``log_w (S, B)`` by the delta method:
    sd(w) / (sqrt(S) * mean(w)), with the weights rescaled by their maximum first -> ``(B,)``;
    zero for S = 1."""
    S = log_w.shape[0]
    if S < 2:
        return torch.zeros(log_w.shape[1:], dtype=log_w.dtype, device=log_w.device)
    w = torch.exp(log_w - log_w.max(0, keepdim=True).values)  # (S, B), max weight 1
    return w.std(0) / (math.sqrt(S) * w.mean(0))


def effective_sample_size(log_w: Tensor) -> Tensor:
    """(sum_s w_s)^2 / sum_s w_s^2 of the weights ``exp(log_w)``, ``log_w (S, B)`` -> ``(B,)``:
    between 1 (one weight carries all) and S (all equal)."""
    return torch.exp(2 * log_w.logsumexp(0) - (2 * log_w).logsumexp(0))

"""The paper's evaluation: ELBO (``>=``) and importance-sampled log p(x) (``~``) per sequence;
or, with ``estimator="smc"``, the particle filter's log p^(x) (:mod:`vrnn.inference.smc`).

For a VRNN, each of S importance samples is a whole latent trajectory z^s_{<=T} drawn from the
filtering posterior q, and

    log p(x_{<=T}) ~ log (1/S) sum_s exp( sum_t [log p(x_t | .) + log p(z^s_t | .)
                                                 - log q(z^s_t | .)] )

computed with logsumexp. The estimate is a stochastic lower bound whose expectation rises to
log p(x) as S grows (Burda et al., 2016), so on average it sits at or above the ELBO. For an RNN
the log-likelihood is exact and both numbers coincide.

The effective sample size (ESS) says how many of the S weights carry the estimate: for IS,
(sum_s w_s)^2 / sum_s w_s^2 of each sequence's S trajectory weights (S when they are all equal, 1
when one dominates); for SMC, ESS_t of the particles' weights at each step before resampling,
averaged (and minimised) over the steps. Where it is small the delta-method standard error below,
computed from the same few weights, understates the estimate's real error.

SMC's standard error: one filter gives one draw of p^(x), with no spread to measure, so the filter
runs as R independent repeats (``repeats``, default 4), each with S particles (``num_samples``),
and the estimate is

    log p^(x) = log (1/R) sum_r p^_r(x),   se = sd_r(p^_r) / (sqrt(R) mean_r(p^_r))  (delta method)

An average of unbiased estimates of p(x) is unbiased, so this is still a stochastic lower bound
(and in expectation at least as tight as one filter). S particles per filter, not S / R: the bound
of each filter tightens with its particle count, and splitting S would weaken the estimate the
numbers are about; the price is R * S trajectories per sequence, R times IS at the same S.

Units: nats per sequence, summed over time (the paper's Table 1), plus per step and, for audio,
per sample and bits per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vrnn.evaluation.stats import mean_se
from vrnn.inference.smc import smc_log_likelihood
from vrnn.kernels.precision import autocast
from vrnn.models.vrnn import SequenceModel, masked_sum

# Sequence-steps per forward pass during evaluation: bounds memory of the S x B replicas.
DEFAULT_STEP_BUDGET = 1 << 16
# Rows (replicas x sequences) per time step of the filtering loop: beyond a few hundred rows the
# per-step tensors leave the caches and a pass gets slower per row (measured at the benchmark's
# MNIST size, docs/PERFORMANCE.md: 4 replicas of 128 sequences beat 8 or more).
DEFAULT_ROW_BUDGET = 512
ESTIMATORS = ("is", "smc")
"""``evaluate_sequences``'s estimators of log p(x): importance sampling, sequential Monte Carlo."""
DEFAULT_SMC_REPEATS = 4
"""Independent particle filters per sequence for SMC's standard error (see the module's notes)."""


@dataclass
class LikelihoodEstimate:
    """Per-sequence results for one batch, each ``(B,)``.

    ``elbo``: the ELBO with the analytic KL, averaged over the S posterior samples;
    ``log_likelihood``: the importance-sampled estimate (exact for RNNs);
    ``stderr``: delta-method standard error of that estimate from the spread of the S weights
    (zero for RNNs); ``log_weights``: ``(S, B)`` log importance weights.
    """

    elbo: Tensor
    log_likelihood: Tensor
    stderr: Tensor
    log_weights: Tensor


def log_mean_exp(log_w: Tensor, dim: int = 0) -> Tensor:
    """``log(mean(exp(log_w)))`` along ``dim``, computed stably with logsumexp."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def is_stderr(log_w: Tensor) -> Tensor:
    """Standard error of ``log_mean_exp(log_w, 0)`` for ``log_w (S, B)`` by the delta method:
    sd(w) / (sqrt(S) * mean(w)), with the weights rescaled by their maximum first."""
    S = log_w.shape[0]
    if S < 2:
        return torch.zeros(log_w.shape[1:], dtype=log_w.dtype, device=log_w.device)
    w = torch.exp(log_w - log_w.max(0, keepdim=True).values)  # (S, B), max weight 1
    return w.std(0) / (math.sqrt(S) * w.mean(0))


def effective_sample_size(log_w: Tensor) -> Tensor:
    """(sum_s w_s)^2 / sum_s w_s^2 of the weights ``exp(log_w)``, ``log_w (S, B)`` -> ``(B,)``:
    between 1 (one weight carries all) and S (all equal)."""
    return torch.exp(2 * log_w.logsumexp(0) - (2 * log_w).logsumexp(0))


@torch.no_grad()
def estimate_log_likelihood(model: SequenceModel, x: Tensor, mask: Tensor | None = None, *,
                            num_samples: int = 40, chunk_size: int | None = None,
                            generator: torch.Generator | None = None) -> LikelihoodEstimate:
    """ELBO and importance-sampled log p(x) of every sequence of ``x (B, T, D)``.

    The S samples are batched together: each pass carries ``chunk`` replicas of every sequence
    (``model(x, replicas=chunk)``: phi_x and its products run once per sequence, the rest once
    per replica), and passes run until S samples are drawn, so memory stays bounded (default
    chunk: as many replicas as fit ``DEFAULT_ROW_BUDGET`` rows per step and
    ``DEFAULT_STEP_BUDGET`` sequence-steps per pass). The result is that of ``x.repeat(chunk, 1,
    1)`` with the same noise.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    B, T, _ = x.shape
    if not model.is_latent:
        terms = model(x, mask)
        ll = masked_sum(terms.log_px, mask)  # (B,)
        return LikelihoodEstimate(ll, ll, torch.zeros_like(ll), ll.unsqueeze(0))
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
        log_w = masked_sum(terms.log_px + terms.log_pz - terms.log_qz, mr)  # (c * B,)
        log_ws.append(log_w.view(c, B))  # (c, B)
        elbos.append(terms.elbo(mr).view(c, B))  # (c, B)
        done += c
    log_w = torch.cat(log_ws)  # (S, B)
    return LikelihoodEstimate(elbo=torch.cat(elbos).mean(0), log_likelihood=log_mean_exp(log_w),
                              stderr=is_stderr(log_w), log_weights=log_w)


@dataclass
class SMCLikelihood:
    """Per-sequence results of R independent particle filters of S particles, each ``(B,)``.

    ``log_likelihood``: log of the mean of the R estimates p^_r(x); ``stderr``: its delta-method
    standard error over the repeats; ``log_estimates``: ``(R, B)`` the log p^_r(x); ``ess_mean``:
    mean over steps and repeats of ESS_t; ``ess_min``: minimum over steps and repeats;
    ``resamples``: resampling steps per filter, mean over the repeats.
    """

    log_likelihood: Tensor
    stderr: Tensor
    log_estimates: Tensor
    ess_mean: Tensor
    ess_min: Tensor
    resamples: Tensor


@torch.no_grad()
def estimate_log_likelihood_smc(model: SequenceModel, x: Tensor, mask: Tensor | None = None, *,
                                particles: int = 40, repeats: int = DEFAULT_SMC_REPEATS,
                                threshold: float = 0.5, row_budget: int = DEFAULT_ROW_BUDGET,
                                generator: torch.Generator | None = None) -> SMCLikelihood:
    """log p^(x) of every sequence of ``x (B, T, D)`` by ``repeats`` independent particle
    filters of ``particles`` each (:func:`vrnn.inference.smc.smc_log_likelihood`).

    The R * B filters run in passes of as many filters as fit ``row_budget`` rows (particles x
    filters) per step, at least one; a pass runs to its own longest sequence. Only the state of
    the current step is kept, so memory does not grow with T.
    """
    if particles < 1 or repeats < 1:
        raise ValueError(f"SMC needs particles >= 1 and repeats >= 1, got particles={particles}, "
                         f"repeats={repeats}")
    B, T, _ = x.shape
    R = repeats
    xr = x.repeat_interleave(R, 0)  # (B * R, T, D): row b * R + r, similar lengths together
    mr = (torch.ones(B * R, T, dtype=torch.bool, device=x.device) if mask is None
          else mask.bool().repeat_interleave(R, 0))
    per_pass = max(1, row_budget // particles)
    parts = []
    for start in range(0, B * R, per_pass):
        m = mr[start:start + per_pass]
        steps = int(m.sum(1).max())  # the pass's longest sequence
        parts.append(smc_log_likelihood(model, xr[start:start + per_pass, :steps], m[:, :steps],
                                        particles=particles, generator=generator,
                                        threshold=threshold))

    def gather(field: str) -> Tensor:
        return torch.cat([getattr(p, field) for p in parts]).view(B, R).T  # (R, B)

    log_est = gather("log_likelihood")  # (R, B)
    return SMCLikelihood(log_likelihood=log_mean_exp(log_est), stderr=is_stderr(log_est),
                         log_estimates=log_est, ess_mean=gather("ess_mean").mean(0),
                         ess_min=gather("ess_min").min(0).values,
                         resamples=gather("resamples").to(x.dtype).mean(0))


@dataclass
class EvaluationResult:
    """Results over a set of sequences; per-sequence arrays have one entry per sequence.

    ``is_stderr``: the estimator's own (Monte Carlo) standard error per sequence, by the delta
    method: over the S importance weights (IS) or the R repeats (SMC); ``num_samples``: S, the
    importance samples or the particles per filter (1 for an RNN's exact likelihood);
    ``ess_mean`` / ``ess_min``: the effective sample size per sequence (IS: of the S weights, both
    the same; SMC: mean and minimum over steps and repeats); ``resamples``: SMC's resampling steps
    per filter; ``estimator``: "is", "smc" or "exact" (RNN); ``repeats``: SMC's R;
    ``log_spread``: SMC with R > 1: the standard deviation of log p^_r(x) over the R filters, in
    nats (the estimator's own variability in log space; the delta-method ``is_stderr`` over as
    few as R = 4 repeats reaches its ceiling of 1 as soon as one filter dominates).
    """

    elbo: np.ndarray
    log_likelihood: np.ndarray
    is_stderr: np.ndarray
    lengths: np.ndarray
    num_samples: int
    frame_size: int | None = None
    ess_mean: np.ndarray | None = None
    ess_min: np.ndarray | None = None
    resamples: np.ndarray | None = None
    estimator: str = "is"
    repeats: int = 1
    log_spread: np.ndarray | None = None

    def summary(self) -> dict:
        """The paper's unit (mean nats per sequence) with the standard error over sequences, and
        per step, and per audio sample (``frame_size`` given): ``*_per_sample`` in nats, and the
        negative of it in bits as ``nll_bits_per_sample`` (from the log-likelihood) and
        ``neg_elbo_bits_per_sample`` (from the ELBO), the usual "bits per sample" (lower is
        better)."""
        n = len(self.lengths)
        steps = float(self.lengths.sum())
        out: dict = {"n_sequences": n, "n_steps": int(steps), "num_samples": self.num_samples}
        for key, vals in (("elbo", self.elbo), ("log_likelihood", self.log_likelihood)):
            out[key], out[f"{key}_stderr"] = mean_se(vals)  # stderr None for one sequence
            out[f"{key}_per_step"] = float(vals.sum() / steps)
            if self.frame_size:
                per_sample = float(vals.sum() / (steps * self.frame_size))
                out[f"{key}_per_sample"] = per_sample
                bits = "nll" if key == "log_likelihood" else "neg_elbo"
                out[f"{bits}_bits_per_sample"] = -per_sample / math.log(2.0)
        out["stderr"] = out["log_likelihood_stderr"]
        out["is_stderr_mean"] = float(self.is_stderr.mean()) if n else 0.0
        out["estimator"] = self.estimator
        if self.ess_mean is not None and n:  # mean over sequences; the smallest of any sequence
            out["ess_mean"] = float(self.ess_mean.mean())
            out["ess_min"] = float(self.ess_min.min())
        if self.estimator == "smc":
            out["repeats"] = self.repeats
            if self.resamples is not None and n:
                out["resamples_mean"] = float(self.resamples.mean())  # per filter and sequence
                out["resamples_per_step"] = float(self.resamples.sum() / steps)
            if self.log_spread is not None and n:
                out["log_spread_mean"] = float(self.log_spread.mean())
        return out


@torch.no_grad()
def _estimate(model: SequenceModel, x: Tensor, mask: Tensor, smc: bool, num_samples: int,
              repeats: int, threshold: float, gen: torch.Generator):
    """One batch's estimate (SMC, or IS) and its ELBO per sequence: SMC's is averaged over
    ``repeats`` posterior draws, IS's is the estimate's own."""
    if not smc:
        est = estimate_log_likelihood(model, x, mask, num_samples=num_samples, generator=gen)
        return est, est.elbo
    est = estimate_log_likelihood_smc(model, x, mask, particles=num_samples, repeats=repeats,
                                      threshold=threshold, generator=gen)
    return est, estimate_log_likelihood(model, x, mask, num_samples=repeats,
                                        generator=gen).elbo


def evaluate_sequences(model: SequenceModel, sequences: Sequence[np.ndarray], *,
                       batch_size: int = 32, num_samples: int = 40,
                       frame_size: int | None = None, seed: int = 0,
                       device: torch.device | str | None = None,
                       progress=None, estimator: str = "is",
                       repeats: int = DEFAULT_SMC_REPEATS,
                       threshold: float = 0.5, precision: str = "fp32") -> EvaluationResult:
    """Evaluate ``model`` on a list of ``(T_i, D)`` arrays, batched by similar length.

    Args:
        num_samples: S, importance samples (IS) or particles per filter (SMC).
        estimator: "is" (:func:`estimate_log_likelihood`) or "smc"
            (:func:`estimate_log_likelihood_smc`: ``repeats`` filters of S particles that
            resample below ESS ``threshold * S``; its ELBO is averaged over ``repeats`` posterior
            draws). An RNN's likelihood is exact under either.
        progress: an optional callable taking the number of sequences just finished.
        precision: "fp32" (the reference), or "bf16": the matrix products in bfloat16 under
            :func:`vrnn.kernels.precision.autocast`, every density, weight and log-sum-exp in
            float32.
    """
    from vrnn.data import pad_batch

    if len(sequences) == 0:
        raise ValueError("evaluate_sequences got no sequences")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    smc = estimator == "smc" and model.is_latent
    device = torch.device(device) if device is not None else model.initial_state.device
    gen = torch.Generator(device=device).manual_seed(seed)
    lengths = np.array([len(s) for s in sequences])
    order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths share a batch
    elbo = np.zeros(len(sequences))
    ll = np.zeros(len(sequences))
    se = np.zeros(len(sequences))
    ess_mean, ess_min, resamples, spread = (np.zeros(len(sequences)) for _ in range(4))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, mask = pad_batch([sequences[i] for i in idx])
            x, mask = x.to(device), mask.to(device)
            with autocast(model, precision, device):
                est, batch = _estimate(model, x, mask, smc, num_samples, repeats, threshold, gen)
            if smc:
                elbo[idx] = batch.double().cpu().numpy()
                ess_mean[idx] = est.ess_mean.double().cpu().numpy()
                ess_min[idx] = est.ess_min.double().cpu().numpy()
                resamples[idx] = est.resamples.double().cpu().numpy()
                if repeats > 1:
                    spread[idx] = est.log_estimates.double().std(0).cpu().numpy()
            else:
                elbo[idx] = batch.double().cpu().numpy()
                ess_mean[idx] = ess_min[idx] = (
                    effective_sample_size(est.log_weights).double().cpu().numpy())
            ll[idx] = est.log_likelihood.double().cpu().numpy()
            se[idx] = est.stderr.double().cpu().numpy()
            if progress is not None:
                progress(len(idx))
    finally:
        model.train(was_training)
    if not model.is_latent:
        return EvaluationResult(elbo, ll, se, lengths, 1, frame_size, ess_mean, ess_min,
                                estimator="exact")
    return EvaluationResult(elbo, ll, se, lengths, num_samples, frame_size, ess_mean, ess_min,
                            resamples if smc else None, estimator,
                            repeats if smc else 1, spread if smc and repeats > 1 else None)

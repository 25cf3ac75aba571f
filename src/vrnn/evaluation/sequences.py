"""A model over a set of sequences: Chung et al.'s evaluation, the ELBO (``>=``) and log p(x)
(``~``) per sequence, by importance sampling or the particle filter
(:meth:`vrnn.models.base.SequenceModel.log_prob`), in the paper's units.

The sequences, a list of ``(T_i, D)`` arrays, are batched by similar length (padded, with a
mask). Units: nats per sequence, summed over time (the paper's Table 1), plus per step and, for
audio, per sample and bits per sample. The estimators, their effective sample size and when a
standard error can be trusted: :mod:`vrnn.inference.weights`, :mod:`vrnn.inference.importance`,
:mod:`vrnn.inference.smc`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vrnn.data.batching import pad_batch
from vrnn.evaluation.stats import mean_se
from vrnn.inference.likelihood import DEFAULT_SMC_REPEATS, METHODS, check_method
from vrnn.kernels.precision import autocast
from vrnn.models.base import SequenceModel

ESTIMATORS = METHODS
"""``evaluate_sequences``'s estimators of log p(x): importance sampling, sequential Monte Carlo."""
SE_CEILING = 0.9
"""The delta-method standard error of log (1/R) sum_r w_r is at most 1, reached when one weight
carries the mean; at or above this it says only that one filter carried the estimate."""
SPREAD_FACTOR = 1.5
"""Where the delta method holds, the R log-estimates' standard deviation is about se sqrt(R);
their filters disagree (:func:`filters_disagree`) when it is more than this many times that."""


def filters_disagree(stderr: np.ndarray, spread: np.ndarray, repeats: int) -> np.ndarray:
    """Per sequence, whether its R filters' log-estimates disagree by more than the delta-method
    standard error ``stderr`` says: the error at its ceiling (``>= SE_CEILING``: one filter
    carried the estimate), or their standard deviation ``spread`` (nats) above ``SPREAD_FACTOR``
    times ``stderr * sqrt(R)``. The se then understates the estimator's error: simulated with
    R = 4 log-normal estimates of sd s nats, the spread of log (1/R) sum_r w_r over reruns is 1.5
    times the median se at s = 1, 2 at s = 2, 3 at s = 4 and 28 at s = 40 (at s = 0.3: 1.15); the
    rule flags 3% of sequences at s = 0.7, 9% at s = 1, 47% at s = 2 and 87% at s = 4."""
    stderr, spread = np.asarray(stderr), np.asarray(spread)
    return (stderr >= SE_CEILING) | (spread > SPREAD_FACTOR * stderr * math.sqrt(repeats))


@dataclass(kw_only=True)
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
    few as R = 4 repeats reaches its ceiling of 1 as soon as one filter dominates);
    ``log_range``: the same, max - min. A single weight (IS with S = 1, SMC with R = 1) has no
    Monte Carlo error to measure: its ``is_stderr`` is 0 here and None (JSON null) in
    :meth:`summary` and the command's output.
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
    log_range: np.ndarray | None = None

    @property
    def single_weight(self) -> bool:
        """One importance sample or one filter per sequence: no Monte Carlo error to measure."""
        return ((self.estimator == "is" and self.num_samples == 1)
                or (self.estimator == "smc" and self.repeats == 1))

    def disagree(self) -> np.ndarray | None:
        """SMC with R > 1: per sequence, :func:`filters_disagree`; else None."""
        if self.log_spread is None:
            return None
        return filters_disagree(self.is_stderr, self.log_spread, self.repeats)

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
        out["is_stderr_mean"] = (None if self.single_weight
                                 else float(self.is_stderr.mean()) if n else 0.0)
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
                out["log_range_mean"] = float(self.log_range.mean())
                out["log_range_max"] = float(self.log_range.max())
                out["repeats_disagree"] = int(self.disagree().sum())
        return out



def evaluate_sequences(model: SequenceModel, sequences: Sequence[np.ndarray], *,
                       batch_size: int = 32, num_samples: int = 40,
                       frame_size: int | None = None, seed: int = 0,
                       device: torch.device | str | None = None,
                       progress=None, estimator: str = "is",
                       repeats: int = DEFAULT_SMC_REPEATS,
                       threshold: float = 0.5, precision: str = "fp32",
                       resampling: str = "multinomial") -> EvaluationResult:
    """Evaluate ``model`` on a list of ``(T_i, D)`` arrays, batched by similar length.

    Args:
        num_samples: S, importance samples (IS) or particles per filter (SMC).
        estimator: the ``method`` of :meth:`vrnn.models.base.SequenceModel.log_prob`: "is"
            (importance sampling) or "smc" (``repeats`` filters of S particles that resample
            below ESS ``threshold * S``; its ELBO is averaged over ``repeats`` posterior draws).
            A model without latent variables answers exactly under either.
        resampling: SMC's ancestors, "multinomial" or "systematic".
        progress: an optional callable taking the number of sequences just finished.
        precision: "fp32" (the reference), or "bf16": the matrix products in bfloat16 under
            :func:`vrnn.kernels.precision.autocast`, every density, weight and log-sum-exp in
            float32.
    """
    if len(sequences) == 0:
        raise ValueError("evaluate_sequences got no sequences")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    check_method(estimator, num_samples, repeats, threshold, resampling)
    device = torch.device(device) if device is not None else model.initial_state.device
    gen = torch.Generator(device=device).manual_seed(seed)
    lengths = np.array([len(s) for s in sequences])
    order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths share a batch
    n = len(sequences)
    elbo, ll, se, ess_mean, ess_min, resamples, spread, span = (np.zeros(n) for _ in range(8))
    method = estimator
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, mask = pad_batch([sequences[i] for i in idx])
            x, mask = x.to(device), mask.to(device)
            with autocast(model, precision, device):
                est = model.log_prob(x, mask, method=estimator, num_samples=num_samples,
                                     repeats=repeats, threshold=threshold,
                                     resampling=resampling, generator=gen)
            method = est.method
            for field, out in (("elbo", elbo), ("log_likelihood", ll), ("stderr", se),
                               ("ess_mean", ess_mean), ("ess_min", ess_min),
                               ("resamples", resamples)):
                out[idx] = getattr(est, field).double().cpu().numpy()
            if est.repeats > 1:  # the spread of the R filters' log-estimates, in nats
                log_est = est.log_weights.double()  # (R, B)
                spread[idx] = log_est.std(0).cpu().numpy()
                span[idx] = (log_est.max(0).values - log_est.min(0).values).cpu().numpy()
            if progress is not None:
                progress(len(idx))
    finally:
        model.train(was_training)
    smc = method == "smc"
    many = smc and repeats > 1
    return EvaluationResult(
        elbo=elbo, log_likelihood=ll, is_stderr=se, lengths=lengths,
        num_samples=num_samples if method != "exact" else 1, frame_size=frame_size,
        ess_mean=ess_mean, ess_min=ess_min, resamples=resamples if smc else None,
        estimator=method, repeats=repeats if smc else 1, log_spread=spread if many else None,
        log_range=span if many else None)

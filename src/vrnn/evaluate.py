"""The paper's evaluation: ELBO (``>=``) and importance-sampled log p(x) (``~``) per sequence.

For a VRNN, each of S importance samples is a whole latent trajectory z^s_{<=T} drawn from the
filtering posterior q, and

    log p(x_{<=T}) ~ log (1/S) sum_s exp( sum_t [log p(x_t | .) + log p(z^s_t | .)
                                                 - log q(z^s_t | .)] )

computed with logsumexp. The estimate is a stochastic lower bound whose expectation rises to
log p(x) as S grows (Burda et al., 2016), so on average it sits at or above the ELBO. For an RNN
the log-likelihood is exact and both numbers coincide.

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

from vrnn.model import SequenceModel, masked_sum
from vrnn.report import mean_se

# Sequence-steps per forward pass during evaluation: bounds memory of the S x B replicas.
DEFAULT_STEP_BUDGET = 1 << 16
# Rows (replicas x sequences) per time step of the filtering loop: beyond a few hundred rows the
# per-step tensors leave the caches and a pass gets slower per row (measured at the benchmark's
# MNIST size, docs/PERFORMANCE.md: 4 replicas of 128 sequences beat 8 or more).
DEFAULT_ROW_BUDGET = 512


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
class EvaluationResult:
    """Results over a set of sequences; per-sequence arrays have one entry per sequence."""

    elbo: np.ndarray
    log_likelihood: np.ndarray
    is_stderr: np.ndarray
    lengths: np.ndarray
    num_samples: int
    frame_size: int | None = None

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
        return out


@torch.no_grad()
def evaluate_sequences(model: SequenceModel, sequences: Sequence[np.ndarray], *,
                       batch_size: int = 32, num_samples: int = 40,
                       frame_size: int | None = None, seed: int = 0,
                       device: torch.device | str | None = None,
                       progress=None) -> EvaluationResult:
    """Evaluate ``model`` on a list of ``(T_i, D)`` arrays, batched by similar length.

    ``progress`` is an optional callable taking the number of sequences just finished.
    """
    from vrnn.data import pad_batch

    if len(sequences) == 0:
        raise ValueError("evaluate_sequences got no sequences")
    device = torch.device(device) if device is not None else model.initial_state.device
    gen = torch.Generator(device=device).manual_seed(seed)
    lengths = np.array([len(s) for s in sequences])
    order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths share a batch
    elbo = np.zeros(len(sequences))
    ll = np.zeros(len(sequences))
    se = np.zeros(len(sequences))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, mask = pad_batch([sequences[i] for i in idx])
            x, mask = x.to(device), mask.to(device)
            est = estimate_log_likelihood(model, x, mask, num_samples=num_samples, generator=gen)
            elbo[idx] = est.elbo.double().cpu().numpy()
            ll[idx] = est.log_likelihood.double().cpu().numpy()
            se[idx] = est.stderr.double().cpu().numpy()
            if progress is not None:
                progress(len(idx))
    finally:
        model.train(was_training)
    return EvaluationResult(elbo, ll, se, lengths, num_samples if model.is_latent else 1,
                            frame_size)

"""Sequential Monte Carlo (a particle filter) for log p(x) of every latent model; FIVO.

Maddison et al. "Filtering Variational Objectives" (NIPS 2017),
Le et al. "Auto-Encoding Sequential Monte Carlo" (ICLR 2018), Naesseth et al. "Variational
Sequential Monte Carlo" (AISTATS 2018). Importance sampling (:mod:`vrnn.evaluation.sequences`)
weighs K whole trajectories drawn from q at once; over long sequences one of them soon carries all
the weight. The filter instead grows K particles step by step and, when their weights have
degenerated, replaces the light ones by copies of the heavy ones:

    z_t^k ~ q(z_t | past^k, x)                                      (propose)
    alpha_t^k = p(x_t | z_t^k, past^k) p(z_t^k | past^k) / q(z_t^k | past^k, x)
    log p^(x) += log sum_k W_{t-1}^k alpha_t^k                      (W_0^k = 1/K)
    W_t^k = W_{t-1}^k alpha_t^k / sum_j W_{t-1}^j alpha_t^j
    ESS_t = 1 / sum_k (W_t^k)^2;  if ESS_t < threshold * K:          (resample)
        a^k ~ Multinomial(W_t), particle k <- particle a^k (its whole recurrent state), W_t = 1/K

p^(x) is unbiased for p(x), so E[log p^(x)] <= log p(x): a stochastic lower bound, as the IS
estimate, but with a far smaller variance over long sequences. With ``threshold = 0`` the filter
never resamples and p^(x) is the IS estimate of the same K trajectories; with K = 1 it is the
single trajectory's importance weight.

"past^k" is what particle k's model carries between steps, and the filter reads every family
through the step protocol (:mod:`vrnn.inference.protocol`): what the model computes from the
frames alone (``context``: phi_x, a backward RNN's a_t, the SRNN's deterministic d_t) runs once
per sequence and is shared by the particles, never resampled; ``step`` proposes z_t and gives the
three densities of alpha_t; ``observe`` folds x_t into the state; ``reorder`` copies whole states
from their ancestors. A model without latent variables (z_t of size 0) has alpha_t = p(x_t | past)
for every particle: the filter returns its exact log-likelihood.

Ancestors are drawn multinomially (``resampling="multinomial"``, the FIVO paper's) or
systematically (``"systematic"``: one uniform u per sequence and the K points (u + k) / K
through the weights' cumulative sum, a lower-variance draw that most SMC code uses).

Rows are particle-major as in ``model(x, replicas=K)``: row ``k * B + b`` is particle k of
sequence b. Each sequence has its own weights, its own ESS and resamples on its own. Padded steps
(``mask`` false; masks are prefix masks) leave weights, states and log p^ unchanged and never
trigger resampling; nor does a sequence's last valid step (nothing after it would use the copies).

With ``differentiable=True`` log p^(x) is differentiable: the draws are reparameterised and the
gradient flows through the weights and through the copied states, but not through the choice of
ancestors (the resampling's score-function term is dropped, as Maddison et al.).

Where it runs: an estimate without gradient and without per-step figures runs the filter inside
the model's own pass (:meth:`vrnn.models.base.SequenceModel.particle_pass`,
:mod:`vrnn.inference.particles`: the VRNN's hand-written loop, the SRNN's z-chain; the literal
pass for the other families), drawing the noise and the ancestors in the order this module's
step-by-step filter draws them, so both give the same particles. FIVO training
(:class:`vrnn.inference.objectives.FIVO`) runs there too. The step-by-step filter below remains
the reference, the per-step scores' filter and ``differentiable=True``.

Notation as in :mod:`vrnn.models.base`: B sequences, T steps, D frame size, Z latent size, K
particles, N = K * B rows.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from vrnn.inference.likelihood import DEFAULT_SMC_REPEATS, LogProb, StepScores, check_method
from vrnn.inference.particles import ParticleFilter, draw_ancestors
from vrnn.inference.weights import delta_stderr, effective_sample_size, log_mean_exp

DEFAULT_ROW_BUDGET = 512
"""Rows (particles x filters) per step of one pass of :func:`estimate_log_likelihood_smc`."""


@dataclass
class SMCEstimate:
    """One particle filter's results per sequence, each ``(B,)``.

    ``log_likelihood``: log p^(x) in nats per sequence (exact without latent variables);
    ``ess_mean``: the mean over the sequence's valid steps of ESS_t, the effective number of
    particles of the normalised weights after step t's reweighting and before any resampling
    (between 1 and K); ``ess_min``: its minimum over the valid steps; ``resamples``: how many
    times the sequence resampled; ``steps``: the per-step figures
    (:class:`vrnn.inference.likelihood.StepScores`, ``(B, T)`` each) when asked for
    (``per_step``), else None.
    """

    log_likelihood: Tensor
    ess_mean: Tensor
    ess_min: Tensor
    resamples: Tensor
    steps: StepScores | None = None


def smc_log_likelihood(model, x: Tensor, mask: Tensor | None = None, *, particles: int,
                       generator: torch.Generator | None = None, threshold: float = 0.5,
                       differentiable: bool = False, resampling: str = "multinomial",
                       per_step: bool = False) -> SMCEstimate:
    """The particle filter's log p^(x) of every sequence of ``x (B, T, D)``.

    Args:
        model: any model of the step protocol (:mod:`vrnn.inference.protocol`).
        mask: ``(B, T)`` true on a prefix of each row (the valid steps); default all valid.
        particles: K particles per sequence; memory per step is K * B rows of state, and nothing
            of length T per particle is kept unless ``differentiable``.
        generator: the stream of the proposals' noise (``randn (N, Z)`` per step, in step order)
            and of the ancestors (only at steps that resample); on x's device.
        threshold: resample a sequence when its ESS_t < ``threshold * K``; 0 never resamples
            (importance sampling), 1 whenever the weights are not all equal.
        differentiable: FIVO: log p^ differentiable in the model's parameters (reparameterised
            draws; no gradient through the ancestor indices). False runs under ``no_grad``.
        resampling: ``"multinomial"`` or ``"systematic"`` ancestors.
        per_step: also keep every step's increment log sum_k W_{t-1}^k alpha_t^k, ESS_t, the
            KL averaged under W_{t-1} and whether it resampled (``steps``; not with
            ``differentiable``). The draws, and so every other figure, are the same either way.

    Returns:
        :class:`SMCEstimate`, every field ``(B,)`` (``steps``: ``(B, T)`` each).
    """
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles must be an int >= 1, got {particles!r}")
    check_method("smc", particles, 1, threshold, resampling)
    model._check_input(x, mask)
    if per_step and differentiable:
        raise ValueError("per_step figures are not differentiable: pass one of per_step, "
                         "differentiable")
    if not (differentiable or per_step):  # the filter inside the model's own pass
        return _filter_in_pass(model, x, None if mask is None else mask.bool(), particles,
                               generator, threshold, resampling)
    context = contextlib.nullcontext() if differentiable else torch.no_grad()
    with context:
        return _filter(model, x, None if mask is None else mask.bool(), particles, generator,
                       threshold, resampling, per_step=per_step)


@torch.no_grad()
def _filter_in_pass(model, x: Tensor, mask: Tensor | None, K: int,
                    generator: torch.Generator | None, threshold: float,
                    resampling: str) -> SMCEstimate:
    """:func:`_filter`'s estimate from the model's own pass with the filter inside it
    (:meth:`~vrnn.models.base.SequenceModel.particle_pass`; the VRNN: its fast loop), the noise
    and the ancestors drawn from ``generator`` in the order :func:`_filter` draws them."""
    B, T, _ = x.shape
    valid = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask
    noise = x.new_empty(K * B, T, model.latent_dim)
    pf = ParticleFilter(K, valid, threshold=threshold, resampling=resampling,
                        generator=generator, dtype=x.dtype, noise=noise)
    model.particle_pass(x, mask, noise=noise, particles=pf, terms=False)
    return SMCEstimate(log_likelihood=pf.log_likelihood, ess_mean=pf.ess_mean,
                       ess_min=pf.ess_min, resamples=pf.resamples)


def _filter(model, x: Tensor, mask: Tensor | None, K: int,
            generator: torch.Generator | None, threshold: float,
            resampling: str = "multinomial", per_step: bool = False) -> SMCEstimate:
    B, T, _ = x.shape
    valid = (torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None
             else mask)  # (B, T)
    N, Z = K * B, model.latent_dim
    # what does not depend on z, once per sequence; each step's slice tiled over the particles
    ctx = model.context(x, mask, model.init_state(B))  # each (B, T, .)
    state = model.init_state(N)
    log_uniform = -math.log(K)
    log_W = x.new_full((K, B), log_uniform)  # normalised log weights, W_0 = 1/K
    log_phat = x.new_zeros(B)
    ess_sum, ess_min = x.new_zeros(B), x.new_full((B,), math.inf)
    resamples = torch.zeros(B, dtype=torch.long, device=x.device)
    columns = torch.arange(B, device=x.device)  # (B,)
    if per_step:  # (B, T) each: the step's increment, ESS_t, KL under W_{t-1}, resampled
        step_log_p, step_ess, step_kl = (x.new_zeros(B, T) for _ in range(3))
        step_resampled = torch.zeros(B, T, dtype=torch.bool, device=x.device)
    for t in range(T):
        eps = torch.randn(N, Z, dtype=x.dtype, device=x.device, generator=generator)
        ctx_t = tuple(c[:, t].repeat(K, 1) for c in ctx)  # each (N, .)
        x_t = x[:, t].repeat(K, 1)  # (N, D)
        st = model.step(state, ctx_t, eps)
        # alpha_t = p(x_t | z_t, past) p(z_t | past) / q(z_t | past, x)
        log_alpha = (st.emission.log_prob(x_t) + st.prior.log_prob(st.z)
                     - st.posterior.log_prob(st.z))  # (N,)
        new_state = model.observe(st.carry, x_t, ctx_t)
        on = valid[:, t]  # (B,)
        if per_step:  # each particle's analytic KL_t, weighted by the W_{t-1} its past carries
            kl = kl_divergence(st.posterior, st.prior).view(K, B)  # (K, B)
            step_kl[:, t] = torch.where(on, (log_W.exp() * kl).sum(0), 0.0)
        on_rows = on.repeat(K)  # (N,)
        log_alpha = torch.where(on, log_alpha.view(K, B), 0.0)  # (K, B); padded: alpha = 1
        state = tuple(torch.where(on_rows.view(-1, *[1] * (new.dim() - 1)), new, old)
                      for new, old in zip(new_state, state))
        unnorm = log_W + log_alpha  # (K, B): log W_{t-1} alpha_t
        increment = unnorm.logsumexp(0)  # (B,): log sum_k W_{t-1}^k alpha_t^k
        log_phat = log_phat + increment  # padded steps add log sum_k W_{t-1}^k = 0
        log_W = unnorm - increment  # (K, B), normalised
        ess = effective_sample_size(log_W).detach()  # (B,): 1 / sum_k W^2
        ess_sum = ess_sum + torch.where(on, ess, 0.0)
        ess_min = torch.where(on, torch.minimum(ess_min, ess), ess_min)
        if per_step:
            step_log_p[:, t] = torch.where(on, increment, 0.0)
            step_ess[:, t] = torch.where(on, ess, 0.0)
        if t + 1 == T or threshold == 0.0:
            continue
        need = on & valid[:, t + 1] & (ess < threshold * K)  # (B,): not after the last step
        if not bool(need.any()):
            continue
        # ancestors for the sequences that resample, the identity for the others
        drawn = draw_ancestors(log_W.detach()[:, need].T, resampling, generator)  # (b, K)
        ancestors = torch.arange(K, device=x.device).unsqueeze(1).repeat(1, B)  # (K, B)
        ancestors[:, need] = drawn.T
        rows = (ancestors * B + columns).reshape(N)  # particle k of b <- row a^k * B + b
        state = model.reorder(state, rows)
        log_W = torch.where(need, log_uniform, log_W)  # reset: no gradient through resampling
        resamples = resamples + need.long()
        if per_step:
            step_resampled[:, t] = need
    n_valid = valid.sum(1).clamp(min=1).to(x.dtype)  # (B,)
    steps = (StepScores(step_log_p, step_ess, step_kl, step_resampled, valid, "smc", K)
             if per_step else None)
    return SMCEstimate(log_likelihood=log_phat, ess_mean=ess_sum / n_valid, ess_min=ess_min,
                       resamples=resamples, steps=steps)


@torch.no_grad()
def estimate_log_likelihood_smc(model, x: Tensor, mask: Tensor | None = None, *,
                                particles: int = 40, repeats: int = DEFAULT_SMC_REPEATS,
                                threshold: float = 0.5, resampling: str = "multinomial",
                                row_budget: int = DEFAULT_ROW_BUDGET,
                                generator: torch.Generator | None = None) -> LogProb:
    """log p^(x) of every sequence of ``x (B, T, D)`` by ``repeats`` independent particle
    filters of ``particles`` each (:func:`smc_log_likelihood`).

    One filter gives one draw of p^(x), with no spread to measure, so R filters run and the
    estimate is log (1/R) sum_r p^_r(x), with the delta-method standard error over the R
    (:mod:`vrnn.inference.weights`). An average of unbiased estimates of p(x) is unbiased, so
    this is still a stochastic lower bound, in expectation at least as tight as one filter. S
    particles per filter, not S / R: each filter's bound tightens with its particle count; the
    price is R * S trajectories per sequence.

    The R * B filters run in passes of as many filters as fit ``row_budget`` rows (particles x
    filters) per step, at least one; a pass runs to its own longest sequence. Only the state of
    the current step is kept, so memory does not grow with T.

    Returns:
        :class:`vrnn.inference.likelihood.LogProb` with ``method="smc"``; ``log_weights`` the
        ``(R, B)`` log p^_r(x); ``elbo`` NaN (:func:`vrnn.inference.estimate.log_prob_of` fills
        it from posterior draws).
    """
    check_method("smc", particles, repeats, threshold, resampling)
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
                                        threshold=threshold, resampling=resampling))

    def gather(field: str) -> Tensor:
        return torch.cat([getattr(p, field) for p in parts]).view(B, R).T  # (R, B)

    log_est = gather("log_likelihood")  # (R, B)
    return LogProb(log_likelihood=log_mean_exp(log_est), stderr=delta_stderr(log_est),
                   elbo=torch.full_like(log_est[0], float("nan")),
                   ess_mean=gather("ess_mean").mean(0), ess_min=gather("ess_min").min(0).values,
                   resamples=gather("resamples").to(x.dtype).mean(0), log_weights=log_est,
                   method="smc", num_samples=particles, repeats=R)


@torch.no_grad()
def smc_step_scores(model, x: Tensor, mask: Tensor | None = None, *, particles: int = 40,
                    threshold: float = 0.5, resampling: str = "multinomial",
                    row_budget: int = DEFAULT_ROW_BUDGET,
                    generator: torch.Generator | None = None) -> StepScores:
    """log p^(x_t | x_{<t}) at every step of ``x (B, T, D)``: one particle filter of
    ``particles`` per sequence (:func:`smc_log_likelihood` with ``per_step``), its increments
    log sum_k W_{t-1}^k alpha_t^k, ESS_t and the KL under W_{t-1}.

    One filter, not several: a sequence's steps then sum to that filter's log p^(x) (the
    log-mean of R filters' estimates does not split over the steps). The B filters run in passes
    of as many sequences as fit ``row_budget`` rows (particles x sequences) per step, at least
    one; a pass runs to its own longest sequence, and the draws of a pass that holds the whole
    batch are those of ``smc_log_likelihood(model, x, mask, particles=..., generator=...)``.
    ``threshold=0`` never resamples: importance sampling's K trajectories, step by step.

    Returns:
        :class:`vrnn.inference.likelihood.StepScores` with ``method="smc"``, each ``(B, T)``.
    """
    check_method("smc", particles, 1, threshold, resampling)
    model._check_input(x, mask)
    B, T, _ = x.shape
    valid = (torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None
             else mask.bool())  # (B, T)
    per_pass = max(1, row_budget // particles)
    parts = []
    for start in range(0, B, per_pass):
        m = valid[start:start + per_pass]
        steps = max(1, int(m.sum(1).max()))  # the pass's longest sequence
        est = smc_log_likelihood(model, x[start:start + per_pass, :steps], m[:, :steps],
                                 particles=particles, generator=generator, threshold=threshold,
                                 resampling=resampling, per_step=True)
        parts.append(est.steps)

    def gather(field: str) -> Tensor:  # (B, T): each pass padded back to T steps
        out = torch.zeros(B, T, dtype=getattr(parts[0], field).dtype, device=x.device)
        row = 0
        for p in parts:
            value = getattr(p, field)  # (b, steps)
            out[row:row + value.shape[0], :value.shape[1]] = value
            row += value.shape[0]
        return out

    return StepScores(log_p=gather("log_p"), ess=gather("ess"), kl=gather("kl"),
                      resampled=gather("resampled"), mask=valid, method="smc",
                      num_samples=particles)

"""Sequential Monte Carlo (a particle filter) for log p(x) of every latent model; FIVO.

``../shared/SPEC.md`` Section 6; Maddison et al. "Filtering Variational Objectives" (NIPS 2017),
Le et al. "Auto-Encoding Sequential Monte Carlo" (ICLR 2018), Naesseth et al. "Variational
Sequential Monte Carlo" (AISTATS 2018). Importance sampling (:mod:`vrnn.evaluation.sequences`)
weighs K whole
trajectories drawn from q at once; over long sequences one of them soon carries all the weight.
The filter instead grows K particles step by step and, when their weights have degenerated,
replaces the light ones by copies of the heavy ones:

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

"past^k" is what particle k's model carries between steps (its *state*):

* VRNN (filtering or smoothing posterior; VRNN-I): the cell's ``(h, c)`` or ``(h,)``. The encoder
  reads ``encoder_features`` (phi_x(x_t), with a_t of the backward RNN when smoothing), which do
  not depend on z: computed once per sequence, before the loop.
* SRNN (smoothing or filtering, Res_q or not): z_{t-1}. The deterministic layer d_t and the
  inference features a_t do not depend on z either: once per sequence, shared by the particles,
  never resampled.
* RNN: no latents; log p(x) is exact (every particle is the same).

Rows are particle-major as in ``model(x, replicas=K)``: row ``k * B + b`` is particle k of
sequence b. Each sequence has its own weights, its own ESS and resamples on its own. Padded steps
(``mask`` false; masks are prefix masks) leave weights, states and log p^ unchanged and never
trigger resampling; nor does a sequence's last valid step (nothing after it would use the copies).

FIVO trains on log p^(x) (``differentiable=True``): the draws are reparameterised and the
gradient flows through the weights and through the copied states, but not through the choice of
ancestors (the resampling's score-function term is dropped, as Maddison et al.).

Notation as in :mod:`vrnn.models.vrnn`: B sequences, T steps, D frame size, Z latent size, K
particles,
N = K * B rows.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vrnn.models.srnn import SRNN
from vrnn.models.vrnn import VRNN, SequenceModel, State, masked_sum, reparameterise


@dataclass
class SMCEstimate:
    """One particle filter's results per sequence, each ``(B,)``.

    ``log_likelihood``: log p^(x) in nats per sequence (exact for an RNN); ``ess_mean``: the mean
    over the sequence's valid steps of ESS_t, the effective number of particles of the normalised
    weights after step t's reweighting and before any resampling (between 1 and K); ``ess_min``:
    its minimum over the valid steps; ``resamples``: how many times the sequence resampled.
    """

    log_likelihood: Tensor
    ess_mean: Tensor
    ess_min: Tensor
    resamples: Tensor


# -- one step of each model family: init(), step(t, state, eps), reindex(state, rows) ------------


class _VRNNSteps:
    """The VRNN's particles; state = the cell's ``(h, c)`` or ``(h,)``, each ``(N, H)``.

    Per step, with h = h_{t-1} of each particle:
        q = q(z_t | x, h)           Eq. 9 (its features precomputed, incl. a_t when smoothing)
        z_t = loc_q + scale_q * eps
        log alpha = log p(x_t | z_t, h) + log p(z_t | h) - log q(z_t | x, h)     Eq. 5, 6, 9
        h_t = f([phi_x(x_t), phi_z(z_t)], h)                                    Eq. 7
    """

    def __init__(self, model: VRNN, x: Tensor, mask: Tensor | None, K: int):
        self.model, self.x, self.K = model, x, K
        self.feat_x = model.phi_x(x)  # (B, T, X): depends on x alone, once per sequence
        self.enc = model.encoder_features(self.feat_x, mask)  # (B, T, X [+ A])

    def init(self) -> State:
        return self.model.init_state(self.K * self.x.shape[0])

    def step(self, t: int, state: State, eps: Tensor) -> tuple[Tensor, State]:
        m, K = self.model, self.K
        h = state[0]  # (N, H): h_{t-1}
        q = m.posterior(self.enc[:, t].repeat(K, 1), h)  # Eq. 9, batch (N,)
        z = reparameterise(q, eps)  # (N, Z)
        feat_z = m.phi_z(z)  # (N, F)
        px = m.decoder(torch.cat([feat_z, h], -1))  # Eq. 6
        log_alpha = (px.log_prob(self.x[:, t].repeat(K, 1)) + m.prior_dist(h).log_prob(z)
                     - q.log_prob(z))  # (N,)
        state = m.cell_step(torch.cat([self.feat_x[:, t].repeat(K, 1), feat_z], -1), state)
        return log_alpha, state

    @staticmethod
    def reindex(state: State, rows: Tensor) -> State:
        return tuple(s[rows] for s in state)


class _SRNNSteps:
    """The SRNN's particles; state = ``(z_{t-1},)``, ``(N, Z)``; d_t and a_t shared.

    Per step:
        p = p(z_t | z_{t-1}, d_t),  q = q(z_t | z_{t-1}, a_t) (Res_q: mean mu_p + delta)
        z_t = loc_q + scale_q * eps
        log alpha = log p(x_t | z_t, d_t) + log p(z_t | .) - log q(z_t | .)
    """

    def __init__(self, model: SRNN, x: Tensor, mask: Tensor | None, K: int):
        self.model, self.x, self.K = model, x, K
        *d_state, _, x_prev = model.init_state(x.shape[0])
        feat_x, self.d, _ = model.deterministic(x, tuple(d_state), x_prev)  # d (B, T, H)
        self.a = model.inference_features(self.d, feat_x, mask)  # (B, T, A)

    def init(self) -> State:
        return (self.d.new_zeros(self.K * self.x.shape[0], self.model.config.z_dim),)  # z_0 = 0

    def step(self, t: int, state: State, eps: Tensor) -> tuple[Tensor, State]:
        m, K = self.model, self.K
        z_prev = state[0]  # (N, Z)
        d_t = self.d[:, t].repeat(K, 1)  # (N, H)
        p = m.prior_dist(d_t, z_prev)
        q = m.posterior(self.a[:, t].repeat(K, 1), z_prev, p.base_dist.loc)
        z = reparameterise(q, eps)  # (N, Z)
        px = m.decoder(torch.cat([z, d_t], -1))
        log_alpha = px.log_prob(self.x[:, t].repeat(K, 1)) + p.log_prob(z) - q.log_prob(z)
        return log_alpha, (z,)

    @staticmethod
    def reindex(state: State, rows: Tensor) -> State:
        return tuple(s[rows] for s in state)


def _steps_for(model: SequenceModel, x: Tensor, mask: Tensor | None, K: int):
    if isinstance(model, SRNN):
        return _SRNNSteps(model, x, mask, K)
    if isinstance(model, VRNN):
        return _VRNNSteps(model, x, mask, K)
    raise ValueError(f"SMC needs a VRNN or SRNN (or an RNN: exact); got {type(model).__name__}")


# -- the filter -----------------------------------------------------------------------------------


def smc_log_likelihood(model: SequenceModel, x: Tensor, mask: Tensor | None = None, *,
                       particles: int, generator: torch.Generator | None = None,
                       threshold: float = 0.5, differentiable: bool = False) -> SMCEstimate:
    """The particle filter's log p^(x) of every sequence of ``x (B, T, D)``.

    Args:
        mask: ``(B, T)`` true on a prefix of each row (the valid steps); default all valid.
        particles: K particles per sequence; memory per step is K * B rows of state, and nothing
            of length T per particle is kept unless ``differentiable``.
        generator: the stream of the proposals' noise (``randn (N, Z)`` per step, in step order)
            and of the ancestors (``multinomial``, only at steps that resample); on x's device.
        threshold: resample a sequence when its ESS_t < ``threshold * K``; 0 never resamples
            (importance sampling), 1 whenever the weights are not all equal.
        differentiable: FIVO: log p^ differentiable in the model's parameters (reparameterised
            draws; no gradient through the ancestor indices). False runs under ``no_grad``.

    Returns:
        :class:`SMCEstimate`, every field ``(B,)``. For an RNN the exact log-likelihood, ESS = K
        and no resampling.
    """
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles must be an int >= 1, got {particles!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    model._check_input(x, mask)
    context = contextlib.nullcontext() if differentiable else torch.no_grad()
    with context:
        return _filter(model, x, None if mask is None else mask.bool(), particles, generator,
                       threshold)


def _filter(model: SequenceModel, x: Tensor, mask: Tensor | None, K: int,
            generator: torch.Generator | None, threshold: float) -> SMCEstimate:
    B, T, _ = x.shape
    if not model.is_latent:
        ll = masked_sum(model(x, mask).log_px, mask)  # (B,): exact
        full = ll.new_full((B,), float(K))
        return SMCEstimate(ll, full, full.clone(), torch.zeros(B, dtype=torch.long,
                                                               device=x.device))
    valid = (torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None
             else mask)  # (B, T)
    steps = _steps_for(model, x, mask, K)
    state = steps.init()
    N, Z = K * B, model.config.z_dim
    log_uniform = -math.log(K)
    log_W = x.new_full((K, B), log_uniform)  # normalised log weights, W_0 = 1/K
    log_phat = x.new_zeros(B)
    ess_sum, ess_min = x.new_zeros(B), x.new_full((B,), math.inf)
    resamples = torch.zeros(B, dtype=torch.long, device=x.device)
    columns = torch.arange(B, device=x.device)  # (B,)
    for t in range(T):
        eps = torch.randn(N, Z, dtype=x.dtype, device=x.device, generator=generator)
        log_alpha, new_state = steps.step(t, state, eps)
        on = valid[:, t]  # (B,)
        on_rows = on.repeat(K)  # (N,)
        log_alpha = torch.where(on, log_alpha.view(K, B), 0.0)  # (K, B); padded: alpha = 1
        state = tuple(torch.where(on_rows.unsqueeze(-1), new, old)
                      for new, old in zip(new_state, state))
        unnorm = log_W + log_alpha  # (K, B): log W_{t-1} alpha_t
        increment = unnorm.logsumexp(0)  # (B,): log sum_k W_{t-1}^k alpha_t^k
        log_phat = log_phat + increment  # padded steps add log sum_k W_{t-1}^k = 0
        log_W = unnorm - increment  # (K, B), normalised
        ess = torch.exp(-torch.logsumexp(2 * log_W, 0)).detach()  # (B,): 1 / sum_k W^2
        ess_sum = ess_sum + torch.where(on, ess, 0.0)
        ess_min = torch.where(on, torch.minimum(ess_min, ess), ess_min)
        if t + 1 == T or threshold == 0.0:
            continue
        need = on & valid[:, t + 1] & (ess < threshold * K)  # (B,): not after the last step
        if not bool(need.any()):
            continue
        # multinomial ancestors for the sequences that resample, the identity for the others
        weights = log_W.detach()[:, need].T.exp()  # (b, K)
        drawn = torch.multinomial(weights, K, replacement=True, generator=generator)  # (b, K)
        ancestors = torch.arange(K, device=x.device).unsqueeze(1).repeat(1, B)  # (K, B)
        ancestors[:, need] = drawn.T
        rows = (ancestors * B + columns).reshape(N)  # particle k of b <- row a^k * B + b
        state = steps.reindex(state, rows)
        log_W = torch.where(need, log_uniform, log_W)  # reset: no gradient through resampling
        resamples = resamples + need.long()
    n_valid = valid.sum(1).clamp(min=1).to(x.dtype)  # (B,)
    return SMCEstimate(log_likelihood=log_phat, ess_mean=ess_sum / n_valid, ess_min=ess_min,
                       resamples=resamples)

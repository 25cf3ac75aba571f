"""The Deep Markov Model (DMM): a nonlinear state-space model and its structured inference network.

Krishnan, Shalit, Sontag. "Structured Inference Networks for Nonlinear State Space Models." AAAI
2017 (arXiv:1609.09869). The frames depend on the past only through z, a Markov chain:

    z_0                                            a learned vector
    p(z_t | z_{t-1}) = N(mu_p, sigma_p)            the gated transition:
        g       = sigmoid(W_g2 relu(W_g1 z_{t-1}))      gate
        h       = W_h2 relu(W_h1 z_{t-1})               proposed mean
        mu_p    = (1 - g) * (W_l z_{t-1} + b_l) + g * h
        sigma_p = softplus(W_s relu(h) + b_s)
    p(x_t | z_t)                                   emission: an MLP of z_t into any output head
    r_t = RNN(x_T, ..., x_t)                       smoothing (the paper's DKS): backwards
    r_t = RNN(x_1, ..., x_t)                       filtering (its ST-L): forwards
    q(z_t | z_{t-1}, r_t) = N(mu_q, sigma_q)       the combiner:
        c       = (tanh(W_c z_{t-1} + b_c) + r_t) / 2
        mu_q    = W_m c + b_m,   sigma_q = softplus(W_v c + b_v)

ELBO = sum_t E_q[log p(x_t | z_t) - KL(q(z_t | z_{t-1}, r_t) || p(z_t | z_{t-1}))], the KL in closed
form given the sampled z_{t-1}. With linear maps in place of the networks and a Gaussian emission
the DMM is the linear-Gaussian state-space model, whose log p(x) the Kalman filter gives exactly
(the tests build it so).

How this version differs from the paper and from Pyro's ``examples/dmm.py`` (the sizes of the
``paper`` preset are Pyro's on polyphonic music): the RNNs are the configured LSTM or GRU over
phi_x(x_t) (the identity at ``paper``), not a ReLU RNN; one learned z_0 starts both the transition
and the combiner (Pyro learns a second one for the guide); every scale is ``softplus + min_scale``
and the emission reads logits, as everywhere in this package; the paper's other inference networks
(the mean-field MF-L and MF-LR, the bidirectional ST-LR) are not offered. Truncated BPTT carries
z_{t-1} (and the filtering RNN's state) across windows; the smoothing RNN sees the future within a
window only.

The fast path: the RNN runs as one fused library call over the sequence (it does not read z),
once per sequence whatever the replicas; the loop over time holds the combiner's product with
z_{t-1} and the draw only (its product with r_t is made for every step before the loop). The
transition reads z_{t-1} alone, so it runs after the loop on the stacked z_{0..T-1}, batched, as
do the emission, the KL and the likelihood. The step protocol's literal reading
(:meth:`DMM.step`, read by :meth:`vrnn.models.base.SequenceModel.literal_forward`, the particle
filter and generation) is pinned to it by the tests.

Notation as in :mod:`vrnn.models.base`: B sequences, T steps, D frame size, Z latent size, A units
of the inference RNN, R replicas of each sequence and N = R * B rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import kl_divergence

from vrnn.inference.protocol import State, Step, StepTerms
from vrnn.kernels.activations import positive_scale
from vrnn.kernels.precision import from_low
from vrnn.models.base import SequenceModel
from vrnn.models.config import ModelConfig
from vrnn.models.distributions import GaussianHead, diagonal_normal, gaussian_params
from vrnn.models.generation import DMMSampler
from vrnn.models.layers import MLP, BackwardRNN, Decoder, ForwardRNN, reparameterise


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): a gate between a linear map of z_{t-1} and a nonlinear proposal.
    ``z_prev (..., Z)`` -> ``loc, scale`` each ``(..., Z)``. ``widths`` are the hidden layers of
    the gate's and the proposal's MLPs (one of 200 in the paper)."""

    def __init__(self, z_dim: int, widths: tuple[int, ...], cfg: ModelConfig):
        super().__init__()
        self.gate_hidden = MLP(z_dim, widths)  # relu(W_g1 z)
        self.gate = nn.Linear(self.gate_hidden.out_dim, z_dim)  # W_g2
        self.proposal_hidden = MLP(z_dim, widths)  # relu(W_h1 z)
        self.proposal = nn.Linear(self.proposal_hidden.out_dim, z_dim)  # W_h2
        self.linear_loc = nn.Linear(z_dim, z_dim)  # W_l, b_l
        self.scale = nn.Linear(z_dim, z_dim)  # W_s, b_s
        self.min_scale = cfg.min_scale
        with torch.no_grad():  # start as z_t = z_{t-1} + noise, as Pyro's example
            self.linear_loc.weight.zero_().diagonal().fill_(1.0)  # W_l = I, b_l = 0
            self.linear_loc.bias.zero_()
            self.scale.bias.fill_(cfg.scale_bias)

    def forward(self, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        g = torch.sigmoid(self.gate(self.gate_hidden(z_prev)))  # (..., Z)
        h = self.proposal(self.proposal_hidden(z_prev))  # (..., Z)
        loc = (1 - g) * self.linear_loc(z_prev) + g * h
        return loc, positive_scale(self.scale(F.relu(h)), self.min_scale)


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, r_t): c = (tanh(W_c z_{t-1} + b_c) + r_t) / 2 into a Gaussian layer.
    ``z_prev (..., Z)``, ``r_t (..., A)`` -> ``loc, scale`` each ``(..., Z)``."""

    def __init__(self, z_dim: int, units: int, cfg: ModelConfig):
        super().__init__()
        self.z_to_hidden = nn.Linear(z_dim, units)  # W_c, b_c
        self.gaussian = GaussianHead(units, z_dim, min_scale=cfg.min_scale,
                                     scale_bias=cfg.scale_bias)  # [W_m; W_v], [b_m; b_v]

    def forward(self, z_prev: Tensor, r_t: Tensor) -> tuple[Tensor, Tensor]:
        return self.gaussian.params(0.5 * (torch.tanh(self.z_to_hidden(z_prev)) + r_t))


class _SplitCombiner:
    """The combiner split at its linear output: the product with r_t / 2 (and the bias) for
    every step of ``r (B, T, A)`` at once, then per step the product with tanh(W_c z_{t-1} +
    b_c) / 2 for ``z_prev (N, Z)``, N = R * B rows -> ``loc, scale`` each ``(N, Z)``."""

    def __init__(self, combiner: Combiner, r: Tensor):
        self.combiner = combiner
        head = combiner.gaussian.linear
        self.weight = head.weight
        # under bf16 autocast a direct F.linear returns bfloat16 (the model's layers are cast
        # back by vrnn.kernels.precision.autocast; these products are cast back here)
        self.static = from_low(F.linear(0.5 * r, head.weight, head.bias))  # (B, T, 2Z)

    def steps(self):
        return self.static.unbind(1)

    def __call__(self, static_t: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        c_z = 0.5 * torch.tanh(self.combiner.z_to_hidden(z_prev))  # (N, A)
        out = from_low(F.linear(c_z, self.weight))  # (N, 2Z)
        out = (out.view(-1, *static_t.shape) + static_t).view(out.shape)  # row r * B + b
        return gaussian_params(out, self.combiner.gaussian.min_scale)


class DMM(SequenceModel):
    """The DMM with the smoothing (the paper's DKS, Pyro's) or filtering (ST-L) inference RNN.

    Modules: ``phi_x`` (features of x the inference RNN reads; the identity with no widths),
    ``rnn`` (a :class:`BackwardRNN` when smoothing, a :class:`ForwardRNN` when filtering, of
    ``config.a_dim or config.h_dim`` units), ``transition`` (:class:`GatedTransition`, hidden
    widths ``config.prior_net``), ``combiner`` (:class:`Combiner`) and ``emitter`` (an MLP of
    ``config.decoder`` widths into the output head). ``initial_state`` is z_0 ``(1, Z)``
    (learned with ``config.learn_h0``, else zero). The recurrent state, carried across TBPTT
    windows and through generation, is ``(z_prev (B, Z),)``, and when filtering the forward
    RNN's ``(h, c)`` or ``(h,)`` after it. ``config.phi_z`` and ``config.encoder`` are not read
    (the combiner has no hidden layer of its own).
    """

    fast_sampler = DMMSampler
    """Generation without the step protocol's objects (:mod:`vrnn.models.generation`)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        cfg = config
        if cfg.family != "dmm":
            raise ValueError(f"DMM needs config.family='dmm', got {cfg.family!r}")
        Z, A = cfg.z_dim, cfg.a_dim or cfg.h_dim
        self.phi_x = MLP(cfg.x_dim, cfg.phi_x)
        X = self.phi_x.out_dim
        self.smoothing = cfg.posterior == "smoothing"
        self.rnn = BackwardRNN(X, A, cfg.cell) if self.smoothing else ForwardRNN(X, A, cfg.cell)
        self.transition = GatedTransition(Z, cfg.prior_net, cfg)
        self.combiner = Combiner(Z, A, cfg)
        self.emitter = Decoder(Z, cfg)

    @staticmethod
    def initial_state_shape(config: ModelConfig) -> tuple[int, int]:
        """z_0, ``(1, Z)``: the DMM has no deterministic recurrence to start."""
        return (1, config.z_dim)

    def init_state(self, batch: int) -> State:
        """z_0 for ``batch`` rows, and (filtering) the forward RNN's zero state."""
        z0 = super().init_state(batch)
        if self.smoothing:
            return z0
        return (*z0, *self.rnn.zero_state(batch, self.initial_state))

    # -- the networks, shared by the fast path and the step protocol ---------------------------
    def inference_rnn(self, x: Tensor, mask: Tensor | None,
                      rnn_state: State) -> tuple[Tensor, State]:
        """r_t of every step of ``x (B, T, D)``, ``(B, T, A)``: backwards over each sequence's
        valid steps (smoothing) or forwards from ``rnn_state`` (filtering); and the forward
        RNN's state after the window (``()`` when smoothing)."""
        feat_x = self.phi_x(x)  # (B, T, X)
        if self.smoothing:
            return self.rnn(feat_x, mask), ()
        return self.rnn(feat_x, rnn_state)

    def prior_dist(self, z_prev: Tensor):
        """p(z_t | z_{t-1}): ``(..., Z)`` -> batch ``(...)``, event ``(Z,)``."""
        return diagonal_normal(*self.transition(z_prev))

    def posterior(self, z_prev: Tensor, r_t: Tensor):
        """q(z_t | z_{t-1}, r_t): ``(..., Z), (..., A)`` -> batch ``(...)``, event ``(Z,)``."""
        return diagonal_normal(*self.combiner(z_prev, r_t))

    # -- the step protocol (vrnn.inference.protocol): the literal path, SMC, generation -------
    def context(self, x: Tensor, mask: Tensor | None, state: State) -> tuple[Tensor, ...]:
        """r_t ``(B, T, A)``: the inference RNN reads the frames only."""
        return (self.inference_rnn(x, mask, state[1:])[0],)

    def step(self, carry: State, ctx_t: tuple[Tensor, ...] | None, eps: Tensor,
             temperature: float = 1.0) -> Step:
        """The transition from z_{t-1} = ``carry[0]``, the combiner with r_t, z_t and the
        emission p(x_t | z_t); z_t becomes the carry's first entry."""
        z_prev = carry[0]  # (N, Z)
        p = self.prior_dist(z_prev)
        q = None if ctx_t is None else self.posterior(z_prev, ctx_t[0])
        z = reparameterise(p if q is None else q, eps)  # (N, Z)
        return Step(p, q, z, self.emitter(z, temperature), (z, *carry[1:]))

    def observe(self, carry: State, x_t: Tensor, ctx_t: tuple[Tensor, ...] | None) -> State:
        """x_t enters no state of the generative model (and the RNN's through the context)."""
        return carry

    def window_state(self, x: Tensor, mask: Tensor | None, state: State,
                     carry: State) -> State:
        """The last z_t and (filtering) the forward RNN's state after the window."""
        if self.smoothing:
            return carry
        return (carry[0], *self.inference_rnn(x, mask, state[1:])[1])

    # -- the fast path --------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1) -> StepTerms:
        """One pass over ``x (B, T, D)`` with ``mask (B, T)``: the arguments and the result of
        :meth:`vrnn.models.base.SequenceModel.forward` (``latents['r']`` holds r_t).

        With ``replicas`` R > 1 and no ``state`` the inference RNN runs once per sequence and
        only the z-chain once per replica; a given ``state`` of ``R * B`` rows runs everything
        per replica.
        """
        noise = self._checked_noise(x, mask, noise, generator, replicas)
        N = noise.shape[0]
        shared = state is None  # every replica starts alike: r once per sequence
        if shared:
            state = self.init_state(x.shape[0])
        elif replicas > 1:
            x = x.repeat(replicas, 1, 1)
            mask = None if mask is None else mask.repeat(replicas, 1)
        r, rnn_last = self.inference_rnn(x, mask, state[1:])  # (M, T, A), M = B or N
        z_prev = state[0]
        if shared and replicas > 1:
            z_prev = z_prev.repeat(replicas, 1)
            rnn_last = tuple(s.repeat(replicas, 1) for s in rnn_last)

        z, q_loc, q_scale = self._z_chain(r, noise, z_prev)  # (N, T, Z)
        # After the loop: the transition of every z_{t-1}, the emission, KL and likelihood.
        z_before = torch.cat([z_prev.unsqueeze(1), z[:, :-1]], 1)  # z_{t-1}, (N, T, Z)
        p, q = self.prior_dist(z_before), diagonal_normal(q_loc, q_scale)
        x_rows = x.repeat(replicas, 1, 1) if x.shape[0] != N else x  # (N, T, D)
        terms = StepTerms(log_px=self.emitter(z).log_prob(x_rows), kl=kl_divergence(q, p),
                          state=(z[:, -1], *rnn_last))  # (N, T)
        if sample_terms:
            terms.log_pz, terms.log_qz = p.log_prob(z), q.log_prob(z)
        if return_latents:
            terms.latents = {"z": z, "enc_loc": q_loc, "enc_scale": q_scale,
                             "prior_loc": p.base_dist.loc, "prior_scale": p.base_dist.scale,
                             "r": r.repeat(replicas, 1, 1) if r.shape[0] != N else r}
        return terms

    def _z_chain(self, r: Tensor, noise: Tensor, z_prev: Tensor):
        """The sequential part: z_t ~ q(z_t | z_{t-1}, r_t) for t = 1..T from ``z_prev (N, Z)``
        with ``noise (N, T, Z)``. Returns z, the posterior's loc and scale, each ``(N, T, Z)``."""
        combine = _SplitCombiner(self.combiner, r)
        columns = []
        # unbind(1), not [:, t]: the latter's backward writes a full-size tensor per step
        for static_t, eps_t in zip(combine.steps(), noise.unbind(1)):
            loc, scale = combine(static_t, z_prev)
            z_prev = loc + scale * eps_t
            columns.append((z_prev, loc, scale))
        return tuple(torch.stack(c, 1) for c in zip(*columns))

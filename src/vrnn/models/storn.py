"""STORN, the stochastic recurrent network: an RNN driven by independent latent noise.

Bayer, Osendorfer. "Learning Stochastic Recurrent Networks." arXiv:1411.7610, 2014. An RNN whose
input at step t is the last frame and a latent variable drawn afresh, so that the frame's
conditional is a mixture over z_t:

    p(z_t) = N(0, I)                                   prior, independent over t
    h_t = f(h_{t-1}, [phi_x(x_{t-1}), phi_z(z_t)])     the generative RNN, x_0 = 0
    p(x_t | h_t)                                        emission: an MLP of h_t into any head
    g_t = f_q(g_{t-1}, phi_x(x_t))                     the recognition RNN, forwards
    q(z_t | x_{<=t}) = N(mu(g_t), sigma(g_t))          the recognition model, reading no z

ELBO = sum_t E_q[log p(x_t | z_{<=t}, x_{<t}) - KL(q(z_t | x_{<=t}) || N(0, I))], the KL in
closed form. With every z_t fixed to its prior mean the model is an RNN of the frames: STORN
generalises the deterministic RNN.

How this version differs from the paper: the RNNs are the configured LSTM or GRU; phi_x and
phi_z are optional ReLU MLPs (none at ``paper``, where x_{t-1} and z_t enter the cell as they
are); every scale is ``softplus + min_scale`` and the emission reads logits, as everywhere in this
package; q(z_t) reads x_{1..t}, x_t included, so that z_t can carry what x_t needs (ports differ
here: the dvae-speech code notes that the paper's recognition reads up to x_{t-1}). The sizes of
the ``paper`` preset could not be checked against the paper's text: see
:mod:`vrnn.models.presets`. Truncated BPTT carries both RNNs' states and the last frame across
windows, so two windows are one pass.

The fast path: q reads no z, so the recognition RNN and the encoder run once over the whole
sequence (once per sequence whatever the replicas), every z_t is drawn at once, and the
generative RNN runs as one fused library call over [phi_x(x_{t-1}), phi_z(z_t)]: there is no
Python loop over time. The emission, the KL and the likelihood are batched over all steps. The
step protocol's literal reading (:meth:`STORN.step`, read by
:meth:`vrnn.models.base.SequenceModel.literal_forward`, the particle filter and generation) is
pinned to it by the tests.

Notation as in :mod:`vrnn.models.base`: B sequences, T steps, D frame size, Z latent size, H units
of the generative RNN, A of the recognition RNN, R replicas of each sequence and N = R * B rows.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Independent, kl_divergence

from vrnn.inference.protocol import State, Step, StepTerms
from vrnn.models.base import SequenceModel
from vrnn.models.config import ModelConfig
from vrnn.models.distributions import diagonal_normal
from vrnn.models.generation import STORNSampler
from vrnn.models.layers import MLP, Decoder, ForwardRNN, LatentGaussian, reparameterise


class STORN(SequenceModel):
    """STORN: a generative RNN fed [x_{t-1}, z_t], z_t ~ N(0, I), and a recognition RNN.

    Modules: ``phi_x``, ``phi_z`` (features; the identity with no widths), ``rnn`` (the
    generative :class:`ForwardRNN` of ``config.h_dim`` units, its h_0 the base's learned
    ``initial_state``), ``recognition`` (a :class:`ForwardRNN` over phi_x(x_t) of
    ``config.a_dim or config.h_dim`` units, starting from zeros), ``encoder`` (an MLP of
    ``config.encoder`` widths and a Gaussian layer over g_t) and ``decoder`` (an MLP of
    ``config.decoder`` widths into the output head). The recurrent state, carried across TBPTT
    windows and through generation, is ``(*h_state, *g_state, x_prev (B, D))``: the generative
    RNN's ``(h, c)`` or ``(h,)``, the recognition RNN's, and the last frame. ``config.prior_net``
    is not read (the prior has no parameters).
    """

    fast_sampler = STORNSampler
    """Generation without the step protocol's objects (:mod:`vrnn.models.generation`)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        cfg = config
        if cfg.family != "storn":
            raise ValueError(f"STORN needs config.family='storn', got {cfg.family!r}")
        self.phi_x = MLP(cfg.x_dim, cfg.phi_x)
        self.phi_z = MLP(cfg.z_dim, cfg.phi_z)
        X = self.phi_x.out_dim
        self.rnn = ForwardRNN(X + self.phi_z.out_dim, cfg.h_dim, cfg.cell)
        self.recognition = ForwardRNN(X, cfg.a_dim or cfg.h_dim, cfg.cell)
        self.encoder = LatentGaussian(self.recognition.out_dim, cfg.encoder, cfg.z_dim, cfg)
        self.decoder = Decoder(cfg.h_dim, cfg)

    # -- the recurrent state --------------------------------------------------------------------
    def init_state(self, batch: int) -> State:
        """h_0 (learned or zero), g_0 = 0 and x_0 = 0 for ``batch`` rows."""
        ref = self.initial_state
        return (*super().init_state(batch), *self.recognition.zero_state(batch, ref),
                ref.new_zeros(batch, self.config.x_dim))

    def _split(self, state: State) -> tuple[State, State, Tensor]:
        """``(h_state, g_state, x_prev)`` of a state."""
        n = self.rnn.n_state
        return state[:n], state[n:2 * n], state[-1]

    # -- the networks, shared by the fast path and the step protocol ---------------------------
    def prior_dist(self, like: Tensor) -> Independent:
        """p(z_t) = N(0, I), batch ``like.shape[:-1]``, event ``(Z,)``."""
        zeros = like.new_zeros(*like.shape[:-1], self.config.z_dim)
        return diagonal_normal(zeros, torch.ones_like(zeros))

    def recognise(self, x: Tensor, g_state: State) -> tuple[Tensor, Tensor, State]:
        """phi_x(x_t) ``(B, T, X)`` and g_t ``(B, T, A)`` of every step of ``x (B, T, D)`` from
        the recognition state ``g_state``, and that state after the window."""
        feat_x = self.phi_x(x)  # (B, T, X)
        g, g_last = self.recognition(feat_x, g_state)
        return feat_x, g, g_last

    @staticmethod
    def generative_inputs(feat_x: Tensor, feat_prev: Tensor) -> Tensor:
        """phi_x(x_{t-1}) of every step ``(B, T, X)``: ``feat_x (B, T, X)`` shifted one step
        later, ``feat_prev (B, X)`` = phi_x(x_0) first."""
        return torch.cat([feat_prev.unsqueeze(1), feat_x[:, :-1]], 1)

    # -- the step protocol (vrnn.inference.protocol): the literal path, SMC, generation -------
    def context(self, x: Tensor, mask: Tensor | None, state: State) -> tuple[Tensor, ...]:
        """g_t ``(B, T, A)``: the recognition RNN reads the frames only."""
        return (self.recognise(x, self._split(state)[1])[1],)

    def step(self, carry: State, ctx_t: tuple[Tensor, ...] | None, eps: Tensor,
             temperature: float = 1.0) -> Step:
        """z_t from q(z_t | g_t) (generating: from N(0, I)), then h_t = f(h_{t-1},
        [phi_x(x_{t-1}), phi_z(z_t)]) and the emission p(x_t | h_t)."""
        h_state, g_state, x_prev = self._split(carry)
        p = self.prior_dist(x_prev)
        q = None if ctx_t is None else diagonal_normal(*self.encoder(ctx_t[0]))
        z = reparameterise(p if q is None else q, eps)  # (N, Z)
        inp = torch.cat([self.phi_x(x_prev), self.phi_z(z)], -1).unsqueeze(1)  # (N, 1, X + F)
        _, h_state = self.rnn(inp, h_state)
        return Step(p, q, z, self.decoder(h_state[0], temperature), (*h_state, *g_state, x_prev))

    def observe(self, carry: State, x_t: Tensor, ctx_t: tuple[Tensor, ...] | None) -> State:
        """The frame becomes the next step's input x_{t-1}."""
        return (*carry[:-1], x_t)

    def window_state(self, x: Tensor, mask: Tensor | None, state: State,
                     carry: State) -> State:
        """The generative state and last frame of the steps, the recognition RNN's after the
        window (the context ran it; the steps did not)."""
        h_state, _, x_last = self._split(carry)
        return (*h_state, *self.recognise(x, self._split(state)[1])[2], x_last)

    # -- the fast path --------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1) -> StepTerms:
        """One pass over ``x (B, T, D)`` with ``mask (B, T)``: the arguments and the result of
        :meth:`vrnn.models.base.SequenceModel.forward` (``latents['h']`` holds h_t,
        ``latents['g']`` g_t).

        With ``replicas`` R > 1 and no ``state`` the recognition RNN and q run once per
        sequence, the generative RNN once per replica; a given ``state`` of ``R * B`` rows runs
        everything per replica.
        """
        noise = self._checked_noise(x, mask, noise, generator, replicas)
        N = noise.shape[0]
        shared = state is None  # every replica starts alike: g and q once per sequence
        if shared:
            state = self.init_state(x.shape[0])
        elif replicas > 1:
            x = x.repeat(replicas, 1, 1)
            mask = None if mask is None else mask.repeat(replicas, 1)
        h_state, g_state, x_prev = self._split(state)
        feat_x, g, g_last = self.recognise(x, g_state)  # (M, T, .), M = B or N
        q_loc, q_scale = self.encoder(g)  # (M, T, Z)
        feat_u = self.generative_inputs(feat_x, self.phi_x(x_prev))  # phi_x(x_{t-1}), (M, T, X)

        def rows(t: Tensor) -> Tensor:  # (M, ...) -> (N, ...), row r * B + b
            return t.repeat(replicas, *[1] * (t.dim() - 1)) if t.shape[0] != N else t

        q = diagonal_normal(rows(q_loc), rows(q_scale))  # batch (N, T)
        z = reparameterise(q, noise)  # every z_t at once, (N, T, Z)
        inp = torch.cat([rows(feat_u), self.phi_z(z)], -1)  # (N, T, X + F)
        h, h_last = self.rnn(inp, tuple(rows(s) for s in h_state))  # (N, T, H)
        p = self.prior_dist(z)
        x_rows = rows(x)  # (N, T, D)
        terms = StepTerms(log_px=self.decoder(h).log_prob(x_rows), kl=kl_divergence(q, p),
                          state=(*h_last, *(rows(s) for s in g_last), x_rows[:, -1]))  # (N, T)
        if sample_terms:
            terms.log_pz, terms.log_qz = p.log_prob(z), q.log_prob(z)
        if return_latents:
            terms.latents = {"z": z, "enc_loc": q.base_dist.loc, "enc_scale": q.base_dist.scale,
                             "prior_loc": p.base_dist.loc, "prior_scale": p.base_dist.scale,
                             "h": h, "g": rows(g)}
        return terms

"""The Stochastic Recurrent Neural Network (SRNN), the VRNN's successor.

Fraccaro, Sønderby, Paquet, Winther. "Sequential Neural Models with Stochastic Layers." NIPS 2016
(arXiv:1605.07571), Section 3. The deterministic and stochastic
layers are stacked, not mixed as in the VRNN:

    d_t = f(d_{t-1}, phi_x(x_{t-1}))                  deterministic layer, x_0 = 0 (Eq. 2)
    p(z_t | z_{t-1}, d_t) = N(mu_p, sigma_p)          prior, an MLP of [d_t, z_{t-1}], z_0 = 0
    p(x_t | z_t, d_t)                                  emission, an MLP of [z_t, d_t], any head
    a_t = g(a_{t+1}, [d_t, phi_x(x_t)])                smoothing: a backward RNN (Eq. 12)
    a_t = MLP([d_t, phi_x(x_t)])                       filtering
    q(z_t | z_{t-1}, a_t) = N(mu_q, sigma_q)          an MLP of [a_t, z_{t-1}];
                                                       Res_q: mu_q = mu_p + delta

Because d does not see z, it runs as one fused library RNN over the whole sequence, and so does
the backward RNN; only the z-chain is sequential. Inside its loop run the products with z_{t-1}
alone: the products of the first layers with d_t and a_t are computed for all steps before it,
the emission, the KL and the log-likelihood after it. The prior runs in the loop only with Res_q
(the posterior mean needs it); without, it runs after the loop too.

Notation as in :mod:`vrnn.models.base`: B sequences, T steps, D frame size, Z latent size, H units
of d, A units of a, R replicas of each sequence and N = R * B rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import kl_divergence

from vrnn.inference.particles import ParticleFilter
from vrnn.inference.protocol import State, Step, StepTerms
from vrnn.kernels.precision import from_low
from vrnn.models.base import SequenceModel
from vrnn.models.config import ModelConfig
from vrnn.models.distributions import diagonal_normal, gaussian_params
from vrnn.models.generation import SRNNSampler
from vrnn.models.layers import (
    MLP,
    BackwardRNN,
    Decoder,
    LatentGaussian,
    emission_log_density,
    reparameterise,
)


def _tiled(rows: Tensor, per_sequence: Tensor) -> Tensor:
    """``rows (R * B, n) + per_sequence (B, n)``, row ``r * B + b`` getting sequence b's."""
    B = per_sequence.shape[0]
    return (rows.view(-1, B, rows.shape[-1]) + per_sequence).view(rows.shape)


class _SplitGaussian:
    """A :class:`LatentGaussian` over ``[static_t, z_{t-1}]`` split in two: the first layer's
    product with ``static (B, T, S)`` for every step at once, then per step the product with
    ``z_prev (N, Z)`` and the rest of the network -> ``loc, scale`` each ``(N, Z)``."""

    def __init__(self, net: LatentGaussian, static: Tensor):
        layers = list(net.mlp.layers)
        self.first = layers[0] if layers else net.gaussian.linear
        self.rest = layers[1:]
        self.hidden = bool(layers)
        self.net = net
        S = static.shape[-1]
        # under bf16 autocast a direct F.linear returns bfloat16 (the model's layers are cast
        # back by vrnn.kernels.precision.autocast; these two products are cast back here)
        self.static = from_low(F.linear(static, self.first.weight[:, :S], self.first.bias))
        self.w_z = self.first.weight[:, S:]

    def steps(self):
        return self.static.unbind(1)

    def __call__(self, static_t: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        out = _tiled(from_low(F.linear(z_prev, self.w_z)), static_t)  # (N, n)
        if not self.hidden:
            return gaussian_params(out, self.net.gaussian.min_scale)
        out = F.relu(out)
        for layer in self.rest:
            out = F.relu(layer(out))
        return self.net.gaussian.params(out)


class SRNN(SequenceModel):
    """The SRNN with the smoothing (default) or filtering posterior, with or without Res_q.

    Modules: ``phi_x`` (features of x; the identity with no widths, as the SRNN paper), ``rnn``
    (the deterministic layer, a library LSTM/GRU), ``inference`` (a :class:`BackwardRNN` over
    ``[d_t, phi_x(x_t)]`` when smoothing, else an MLP of it), ``prior``, ``encoder`` and
    ``decoder``. The recurrent state, carried across TBPTT windows and through generation, is
    ``(*d_state, z_prev (B, Z), x_prev (B, D))``: the deterministic layer's ``(h, c)`` or
    ``(h,)``, the last latent and the last frame (the next step's input u_t = x_{t-1}).
    """

    fast_sampler = SRNNSampler
    """Generation without the step protocol's objects (:mod:`vrnn.models.generation`)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        cfg = config
        if cfg.family != "srnn":
            raise ValueError(f"SRNN needs config.family='srnn', got {cfg.family!r}")
        H, Z = cfg.h_dim, cfg.z_dim
        A = cfg.a_dim or H
        self.phi_x = MLP(cfg.x_dim, cfg.phi_x)
        X = self.phi_x.out_dim
        self.rnn = (nn.LSTM if cfg.cell == "lstm" else nn.GRU)(X, H, batch_first=True)
        self.inference = (BackwardRNN(H + X, A, cfg.cell) if cfg.posterior == "smoothing"
                          else MLP(H + X, (A,)))
        self.prior = LatentGaussian(H + Z, cfg.prior_net, Z, cfg)
        self.encoder = LatentGaussian(A + Z, cfg.encoder, Z, cfg)
        self.decoder = Decoder(Z + H, cfg)

    # -- the recurrent state --------------------------------------------------------------------
    def init_state(self, batch: int) -> State:
        """d_0 (learned or zero), z_0 = 0 and x_0 = 0 for ``batch`` rows."""
        d0 = super().init_state(batch)
        ref = self.initial_state
        return (*d0, ref.new_zeros(batch, self.config.z_dim),
                ref.new_zeros(batch, self.config.x_dim))

    def _rnn_state(self, d_state: State):
        s = tuple(t.unsqueeze(0).contiguous() for t in d_state)  # (1, B, H) each
        return s if self.config.cell == "lstm" else s[0]

    @staticmethod
    def _from_rnn_state(s) -> State:
        return tuple(t[0] for t in s) if isinstance(s, tuple) else (s[0],)

    def deterministic(self, x: Tensor, d_state: State, x_prev: Tensor) -> tuple[Tensor, Tensor,
                                                                                 State]:
        """The deterministic layer over ``x (B, T, D)``: ``phi_x(x) (B, T, X)``, d_t of every
        step ``(B, T, H)`` (d_t reads x_{t-1}; ``x_prev (B, D)`` before the first step) and the
        layer's state after the last step."""
        feat_x = self.phi_x(x)  # (B, T, X)
        feat_u = torch.cat([self.phi_x(x_prev).unsqueeze(1), feat_x[:, :-1]], 1)  # u_t = x_{t-1}
        d, last = self.rnn(feat_u, self._rnn_state(d_state))
        return feat_x, d, self._from_rnn_state(last)

    def inference_features(self, d: Tensor, feat_x: Tensor,
                           mask: Tensor | None = None) -> Tensor:
        """a_t of every step ``(B, T, A)`` from ``d (B, T, H)`` and ``phi_x(x) (B, T, X)``:
        backwards over the valid steps when smoothing, step by step when filtering."""
        inp = torch.cat([d, feat_x], -1)
        if isinstance(self.inference, BackwardRNN):
            return self.inference(inp, mask)
        return self.inference(inp)

    # -- one pass -------------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1, particles: ParticleFilter | None = None) -> StepTerms:
        """One pass over ``x (B, T, D)`` with ``mask (B, T)``: the arguments and the result of
        :meth:`vrnn.models.base.SequenceModel.forward` (``latents['d']`` holds d_t,
        ``latents['a']`` a_t); ``particles``: a particle filter run in the z-chain
        (:meth:`particle_pass`), ``replicas`` its K.

        With ``replicas`` R > 1 and no ``state``, the deterministic layer and a_t run once per
        sequence and only the z-chain once per replica; a given ``state`` of ``R * B`` rows runs
        everything per replica.
        """
        noise = self._checked_noise(x, mask, noise, generator, replicas)
        B, T, _ = x.shape
        N = replicas * B
        shared = state is None  # every replica starts alike: d and a once per sequence
        if shared:
            state = self.init_state(B)
        elif replicas > 1:
            x = x.repeat(replicas, 1, 1)
            mask = None if mask is None else mask.repeat(replicas, 1)
        *d_state, z_prev, x_prev = state
        feat_x, d, d_last = self.deterministic(x, tuple(d_state), x_prev)  # (M, T, .)
        a = self.inference_features(d, feat_x, mask)  # (M, T, A), M = B or N
        if shared and replicas > 1:
            z_prev = z_prev.repeat(replicas, 1)
            d_last = tuple(s.repeat(replicas, 1) for s in d_last)

        d_rows = d.repeat(replicas, 1, 1) if d.shape[0] != N else d  # (N, T, H)
        x_rows = x.repeat(replicas, 1, 1) if x.shape[0] != N else x  # (N, T, D)
        weigh = None if particles is None else self._weigh(d_rows, x_rows, particles)
        # z_before: z_{t-1} as step t read it (after any resampling), (N, T, Z)
        z, q_loc, q_scale, p_loc, p_scale, z_before = self._z_chain(d, a, noise, z_prev, weigh)
        if p_loc is None:  # no Res_q: the prior after the loop, batched over all steps
            p_loc, p_scale = self.prior(torch.cat([d_rows, z_before], -1))
        q, p = diagonal_normal(q_loc, q_scale), diagonal_normal(p_loc, p_scale)
        px = self.decoder(torch.cat([z, d_rows], -1))
        terms = StepTerms(log_px=px.log_prob(x_rows), kl=kl_divergence(q, p),
                          state=(*d_last, z[:, -1], x_rows[:, -1]))  # (N, T)
        if sample_terms:
            terms.log_pz, terms.log_qz = p.log_prob(z), q.log_prob(z)
        if return_latents:
            terms.latents = {"z": z, "enc_loc": q_loc, "enc_scale": q_scale, "prior_loc": p_loc,
                             "prior_scale": p_scale, "d": d_rows,
                             "a": a.repeat(replicas, 1, 1) if a.shape[0] != N else a}
        return terms

    def _z_chain(self, d: Tensor, a: Tensor, noise: Tensor, z_prev: Tensor, weigh=None):
        """The sequential part: z_t ~ q(z_t | z_{t-1}, a_t) for t = 1..T from ``z_prev (N, Z)``,
        with ``noise (N, T, Z)``; the prior in the loop only with Res_q. ``weigh``: the particle
        filter's hook (:meth:`_weigh`), which may reorder z_t by ancestor before the next step
        reads it. Returns z, the posterior's loc and scale, (Res_q) the prior's (else None) and
        the z_{t-1} each step read, each ``(N, T, Z)``."""
        enc = _SplitGaussian(self.encoder, a)
        prior = _SplitGaussian(self.prior, d) if self.config.res_q else None
        columns, reads = [], []
        # unbind(1), not [:, t]: the latter's backward writes a full-size tensor per step
        prior_steps = prior.steps() if prior else [None] * noise.shape[1]
        for t, (a_t, d_t, eps_t) in enumerate(zip(enc.steps(), prior_steps, noise.unbind(1))):
            reads.append(z_prev)
            q_loc, q_scale = enc(a_t, z_prev)
            if prior is not None:
                p_loc, p_scale = prior(d_t, z_prev)
                q_loc = p_loc + q_loc  # Res_q: mu_q = mu_p + delta
                columns.append((q_loc + q_scale * eps_t, q_loc, q_scale, p_loc, p_scale))
            else:
                columns.append((q_loc + q_scale * eps_t, q_loc, q_scale))
            z_prev = columns[-1][0]
            rows = None if weigh is None else weigh(t, reads[-1], *columns[-1], eps_t)
            if rows is not None:  # the particles continue from their ancestors' z_t
                z_prev = z_prev[rows]
        out = [torch.stack(c, 1) for c in zip(*columns)]
        z_before = torch.stack(reads, 1)
        return (*out, None, None, z_before) if prior is None else (*out, z_before)

    def particle_pass(self, x, mask, *, noise, particles, terms=True):
        """The filter inside the fast pass's z-chain (:meth:`forward` with ``particles``)."""
        return self(x, mask, noise=noise, sample_terms=True, replicas=particles.K,
                    particles=particles)

    def _weigh(self, d_rows: Tensor, x_rows: Tensor, particles: ParticleFilter):
        """The z-chain's resampling hook: step t's alpha_t = p(x_t | z_t, d_t) p(z_t | z_{t-1},
        d_t) / q(z_t | .) of every row, without gradient (the pass's differentiable terms come
        from its batched products after the chain), handed to ``particles``."""
        def weigh(t: int, z_prev: Tensor, z: Tensor, q_loc: Tensor, q_scale: Tensor,
                  *rest: Tensor) -> Tensor | None:
            *prior, eps = rest
            with torch.no_grad():
                d_t, x_t = d_rows[:, t], x_rows[:, t]
                p_loc, p_scale = prior if prior else self.prior(torch.cat([d_t, z_prev], -1))
                # log q(z_t) with z_t = loc + scale * eps; the 2 pi terms cancel with log p's
                log_q = -(0.5 * eps.square() + q_scale.log()).sum(-1)
                log_p = -(0.5 * ((z - p_loc) / p_scale).square() + p_scale.log()).sum(-1)
                log_px = emission_log_density(self.decoder, torch.cat([z, d_t], -1), x_t)
                return particles(t, log_px + log_p - log_q)
        return weigh

    # -- the step protocol (vrnn.inference.protocol): the literal path, SMC, generation -------
    def step_deterministic(self, x_prev: Tensor, d_state: State) -> State:
        """d_t from x_{t-1} ``(B, D)`` and d_{t-1}'s state -> d_t's state (``d_t = state[0]``)."""
        _, last = self.rnn(self.phi_x(x_prev).unsqueeze(1), self._rnn_state(d_state))
        return self._from_rnn_state(last)

    def prior_dist(self, d_t: Tensor, z_prev: Tensor):
        """p(z_t | z_{t-1}, d_t): ``(B, H), (B, Z)`` -> batch ``(B,)``, event ``(Z,)``."""
        return diagonal_normal(*self.prior(torch.cat([d_t, z_prev], -1)))

    def posterior(self, a_t: Tensor, z_prev: Tensor, prior_loc: Tensor | None = None):
        """q(z_t | z_{t-1}, a_t); with Res_q its mean is ``prior_loc`` plus the network's."""
        loc, scale = self.encoder(torch.cat([a_t, z_prev], -1))
        if self.config.res_q:
            loc = prior_loc + loc
        return diagonal_normal(loc, scale)

    def context(self, x: Tensor, mask: Tensor | None, state: State) -> tuple[Tensor, ...]:
        """d_t ``(B, T, H)`` from the state's d and x_{t-1}, and a_t ``(B, T, A)``: neither reads
        z, so both run fused over the window."""
        *d_state, _, x_prev = state
        feat_x, d, _ = self.deterministic(x, tuple(d_state), x_prev)
        return d, self.inference_features(d, feat_x, mask)

    def step(self, carry: State, ctx_t: tuple[Tensor, ...] | None, eps: Tensor,
             temperature: float = 1.0) -> Step:
        """The prior p(z_t | z_{t-1}, d_t), the posterior q(z_t | z_{t-1}, a_t) (Res_q: its mean
        the prior's plus the encoder's) and the emission p(x_t | z_t, d_t). Generating
        (``ctx_t`` None), d_t is stepped here from the last frame drawn."""
        *d_state, z_prev, x_prev = carry
        if ctx_t is None:
            d_state = self.step_deterministic(x_prev, tuple(d_state))
            d_t = d_state[0]  # (N, H)
        else:
            d_t = ctx_t[0]
        p = self.prior_dist(d_t, z_prev)
        q = None if ctx_t is None else self.posterior(ctx_t[1], z_prev, p.base_dist.loc)
        z = reparameterise(p if q is None else q, eps)  # (N, Z)
        px = self.decoder(torch.cat([z, d_t], -1), temperature)
        return Step(p, q, z, px, (*d_state, z, x_prev))

    def observe(self, carry: State, x_t: Tensor, ctx_t: tuple[Tensor, ...] | None) -> State:
        """The frame becomes the next step's input u_{t+1} = x_t."""
        return (*carry[:-1], x_t)

    def window_state(self, x: Tensor, mask: Tensor | None, state: State,
                     carry: State) -> State:
        """d after the window (the context ran it; the steps did not) with the last z_t and
        x_t."""
        *d_state, _, x_prev = state
        _, _, d_last = self.deterministic(x, tuple(d_state), x_prev)
        return (*d_last, carry[-2], carry[-1])

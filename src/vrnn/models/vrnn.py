"""The Variational Recurrent Neural Network.

Chung, Kastner, Dinh, Goel, Courville, Bengio. "A Recurrent Latent Variable Model for Sequential
Data." NIPS 2015 (arXiv:1506.02216), Section 3. This file follows the section: the feature
extractors, the prior (Eq. 5), the decoder (Eq. 6), the recurrence (Eq. 7), the posterior
(Eq. 9), then the models. Equation numbers are the paper's.

Notation, batch-first everywhere:
    B batch, T time steps, D frame size (x_dim), Z latent size, H recurrent units,
    K mixture components, S importance samples; X = phi_x width, F = phi_z width.

How this version differs from a literal reading of the paper: the paper's VRNN is a VAE per step
with every network evaluated inside the time loop. Only four things feed the recurrence (the
encoder, the reparameterised sample, phi_z and the cell), so only those run in the loop here
(:mod:`vrnn.kernels.filtering`, with a hand-written backward pass); phi_x of every frame runs
before it, and the prior, decoder, KL and likelihood run after it, batched over all T steps. The
literal per-step version is the step protocol's (:meth:`VRNN.step`, :meth:`VRNN.observe`, read by
:meth:`vrnn.models.base.SequenceModel.literal_forward`, the particle filter and generation), and the
tests assert that both give the same loss and gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Independent, kl_divergence

from vrnn.inference.particles import ParticleFilter
from vrnn.inference.protocol import State, Step, StepTerms
from vrnn.kernels.filtering import LoopWeights, Resample, filtering_loop
from vrnn.kernels.precision import product_dtype
from vrnn.kernels.replay import MLPRecord
from vrnn.models.base import SequenceModel
from vrnn.models.config import ModelConfig
from vrnn.models.distributions import diagonal_normal
from vrnn.models.generation import VRNNSampler
from vrnn.models.layers import (
    MLP,
    BackwardRNN,
    Decoder,
    LatentGaussian,
    emission_log_density,
    make_cell,
    reparameterise,
)


class VRNN(SequenceModel):
    """The VRNN (Eq. 5-9), or VRNN-I with ``config.prior == 'standard'``.

    Modules: ``phi_x``, ``phi_z`` feature extractors; ``prior`` (phi_prior, absent for VRNN-I);
    ``encoder`` (phi_enc); ``decoder`` (phi_dec with the output head); ``cell`` (f of Eq. 7);
    with ``config.posterior == 'smoothing'``, ``smoother``: a :class:`BackwardRNN` over
    phi_x(x_{>=t}) whose a_t the encoder reads beside phi_x(x_t) and h_{t-1}, so q(z_t | x_{<=T},
    z_{<t}) instead of the paper's filtering q(z_t | x_{<=t}, z_{<t}) (Eq. 10's assumption).
    """

    fast_sampler = VRNNSampler
    """Generation without the step protocol's objects (:mod:`vrnn.models.generation`)."""

    custom_loop: bool = True
    """Run the filtering loop with its hand-written backward (:mod:`vrnn.kernels.filtering`); False
    falls back to autograd step by step (same numbers, slower; also supports double backward)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        cfg = config
        if cfg.family != "vrnn":
            raise ValueError(f"VRNN needs config.family='vrnn', got {cfg.family!r}")
        self.phi_x = MLP(cfg.x_dim, cfg.phi_x)
        self.phi_z = MLP(cfg.z_dim, cfg.phi_z)
        self.smoother = (BackwardRNN(self.phi_x.out_dim, cfg.a_dim or cfg.h_dim, cfg.cell)
                         if cfg.posterior == "smoothing" else None)
        enc_in = self.phi_x.out_dim + (self.smoother.out_dim if self.smoother else 0)
        self.encoder = LatentGaussian(enc_in + cfg.h_dim, cfg.encoder, cfg.z_dim, cfg)
        self.prior = (LatentGaussian(cfg.h_dim, cfg.prior_net, cfg.z_dim, cfg)
                      if cfg.prior == "learned" else None)
        self.decoder = Decoder(self.phi_z.out_dim + cfg.h_dim, cfg)
        self.cell = make_cell(cfg, self.phi_x.out_dim + self.phi_z.out_dim)

    # -- the equations, shared by the fast path, the literal reference and generation ----------
    def prior_dist(self, h_prev: Tensor) -> Independent:
        """Eq. 5: p(z_t | h_{t-1}); N(0, I) for VRNN-I. ``(..., H) -> batch (...), event (Z,)``."""
        if self.prior is None:
            zeros = h_prev.new_zeros(*h_prev.shape[:-1], self.config.z_dim)
            return diagonal_normal(zeros, torch.ones_like(zeros))
        return diagonal_normal(*self.prior(h_prev))

    def encoder_features(self, feat_x: Tensor, mask: Tensor | None = None) -> Tensor:
        """What the encoder reads of the frames: ``phi_x(x_t) (B, T, X)``, and with the smoothing
        posterior the backward RNN's a_t beside it -> ``(B, T, X + A)``."""
        if self.smoother is None:
            return feat_x
        return torch.cat([feat_x, self.smoother(feat_x, mask)], -1)

    def posterior(self, enc_feat: Tensor, h_prev: Tensor) -> Independent:
        """Eq. 9: q(z_t | x_t, h_{t-1}) from the encoder's features of step t (``phi_x(x_t)``,
        and a_t when smoothing: :meth:`encoder_features`) and ``h_prev (..., H)``; batch
        ``(...)``, event ``(Z,)``."""
        return diagonal_normal(*self.encoder(torch.cat([enc_feat, h_prev], -1)))

    def cell_step(self, inp: Tensor, state: State) -> State:
        """Eq. 7 with the library cell: ``inp = [phi_x(x_t), phi_z(z_t)] (B, X + F)``, state
        ``(h, c)`` or ``(h,)`` -> the next state."""
        if self.config.cell == "lstm":
            return self.cell(inp, state)
        return (self.cell(inp, state[0]),)

    # -- the step protocol (vrnn.inference.protocol): the literal path, IS, SMC, generation ----
    def context(self, x: Tensor, mask: Tensor | None, state: State) -> tuple[Tensor, ...]:
        """phi_x of every frame ``(B, T, X)`` and what the encoder reads of it ``(B, T, X [+
        A])``: neither depends on z."""
        feat_x = self.phi_x(x)  # (B, T, X)
        return feat_x, self.encoder_features(feat_x, mask)

    def step(self, carry: State, ctx_t: tuple[Tensor, ...] | None, eps: Tensor,
             temperature: float = 1.0) -> Step:
        """Eq. 5, 9 and 6 from h_{t-1} = ``carry[0]``; the carry gains phi_z(z_t) for Eq. 7."""
        h = carry[0]  # h_{t-1}, (N, H)
        p = self.prior_dist(h)  # Eq. 5
        q = None if ctx_t is None else self.posterior(ctx_t[1], h)  # Eq. 9
        z = reparameterise(p if q is None else q, eps)  # (N, Z)
        feat_z = self.phi_z(z)  # (N, F)
        px = self.decoder(torch.cat([feat_z, h], -1), temperature)  # Eq. 6
        return Step(p, q, z, px, (*carry, feat_z))

    def observe(self, carry: State, x_t: Tensor, ctx_t: tuple[Tensor, ...] | None) -> State:
        """Eq. 7: h_t = f([phi_x(x_t), phi_z(z_t)], h_{t-1})."""
        *state, feat_z = carry
        feat_x = self.phi_x(x_t) if ctx_t is None else ctx_t[0]  # (N, X)
        return self.cell_step(torch.cat([feat_x, feat_z], -1), tuple(state))

    # -- the fast path --------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1, particles: ParticleFilter | None = None) -> StepTerms:
        """One pass of the filtering posterior over ``x (B, T, D)`` with ``mask (B, T)``.

        Args:
            state: recurrent state to start from (truncated BPTT); default the initial state.
            noise: ``(B, T, Z)`` standard-normal draws for the reparameterised z_t; drawn from
                ``generator`` when absent.
            sample_terms: also return log p(z_t) and log q(z_t) of the sampled z (for IS).
            return_latents: also return z and the encoder / prior parameters, ``(B, T, Z)``.
            replicas: pass every sequence this many times, each with its own noise, as if ``x``
                were ``x.repeat(replicas, 1, 1)``: every returned tensor (and ``noise``,
                ``state``) then has ``replicas * B`` rows, row ``r * B + b`` being replica r of
                sequence b. phi_x and the products with phi_x(x_t) run once per sequence, not
                once per replica (importance sampling, IWAE).
            particles: a particle filter (:meth:`particle_pass`, with ``replicas`` its K): the
                loop weighs each step's particles and reorders its state by ancestor.
        """
        # the loop reads the weights of the library's own MLPs; a swapped-in module goes by steps
        if not self._fast():
            return self.literal_forward(x, mask, state=state, noise=noise, generator=generator,
                                        sample_terms=sample_terms,
                                        return_latents=return_latents, replicas=replicas,
                                        particles=particles)
        noise = self._checked_noise(x, mask, noise, generator, replicas)
        B, T, _ = x.shape
        N = replicas * B
        state = self.init_state(N) if state is None else state

        feat_x = self.phi_x(x)  # (B, T, X), before the loop: it depends on x alone
        enc_feat = self.encoder_features(feat_x, mask)  # (B, T, X [+ A])
        records = None if particles is None else self._records(N, T, x)
        f = filtering_loop(enc_feat, noise, state, self.loop_weights(),
                           min_scale=self.config.min_scale, replicas=replicas,
                           hand_written=self.custom_loop,
                           resample=None if particles is None
                           else self._weigh(x, replicas, particles, records))

        # After the loop: prior, decoder, KL and likelihood, batched over all steps (a particle
        # filter's hook already ran the prior's and the decoder's MLPs: their recorded
        # activations stand in for the forward products, :mod:`vrnn.kernels.replay`).
        q = diagonal_normal(f.loc, f.scale)  # Eq. 9
        dec_in = torch.cat([f.phi_z, f.h_prev], -1)
        if records is None:
            p = self.prior_dist(f.h_prev)  # Eq. 5
            px = self.decoder(dec_in)  # Eq. 6
        else:
            prior_rec, dec_rec = records
            p = (self.prior_dist(f.h_prev) if prior_rec is None
                 else diagonal_normal(*self.prior.gaussian.params(prior_rec.replay(f.h_prev))))
            px = self.decoder.head(dec_rec.replay(dec_in))
        xr = x if replicas == 1 else x.repeat(replicas, 1, 1)  # (N, T, D)
        terms = StepTerms(log_px=px.log_prob(xr), kl=kl_divergence(q, p), state=f.state)  # (N, T)
        if sample_terms:
            terms.log_pz, terms.log_qz = p.log_prob(f.z), q.log_prob(f.z)  # (N, T)
        if return_latents:
            terms.latents = {"z": f.z, "enc_loc": f.loc, "enc_scale": f.scale,
                             "prior_loc": p.base_dist.loc, "prior_scale": p.base_dist.scale,
                             "h": f.h_prev}
        return terms

    def particle_pass(self, x, mask, *, noise, particles, terms=True):
        """The filter inside the hand-written loop (:meth:`forward` with ``particles``); with
        ``terms=False`` the loop alone (the filter's weights are computed inside it), None."""
        K = particles.K
        if terms or not self._fast():
            return self(x, mask, noise=noise, sample_terms=True, replicas=K, particles=particles)
        noise = self._checked_noise(x, mask, noise, None, K)
        enc_feat = self.encoder_features(self.phi_x(x), mask)  # (B, T, X [+ A])
        filtering_loop(enc_feat, noise, self.init_state(K * x.shape[0]), self.loop_weights(),
                       min_scale=self.config.min_scale, replicas=K,
                       hand_written=self.custom_loop, resample=self._weigh(x, K, particles))
        return None

    def _fast(self) -> bool:
        """Whether the loop can read the weights (the library's own MLPs, not swapped-in
        modules)."""
        return isinstance(self.phi_z, MLP) and isinstance(self.encoder.mlp, MLP)

    def _records(self, rows: int, steps: int, x: Tensor
                 ) -> tuple[MLPRecord | None, MLPRecord] | None:
        """Where the resampling hook keeps the prior's and the decoder's MLP activations for
        the batched pass after the loop: ``(prior or None, decoder)``; None (the batched pass
        runs them again) for a module swapped in, an MLP without layers, or bf16 products
        (the hook runs in float32)."""
        dec = self.decoder
        if (type(dec) is not Decoder or type(dec.mlp) is not MLP or not dec.mlp.layers
                or product_dtype(x.device.type) is not None):
            return None
        def record(mlp: MLP) -> MLPRecord:
            layers = tuple((layer.weight, layer.bias) for layer in mlp.layers)
            return MLPRecord(layers, rows, steps, x)
        prior = self.prior
        if prior is None:
            return None, record(dec.mlp)
        if type(prior) is not LatentGaussian or type(prior.mlp) is not MLP:
            return None
        return (record(prior.mlp) if prior.mlp.layers else None), record(dec.mlp)

    def _weigh(self, x: Tensor, replicas: int, particles: ParticleFilter,
               records: tuple[MLPRecord | None, MLPRecord] | None = None) -> Resample:
        """The loop's resampling hook: step t's alpha_t = p(x_t | z_t, h_{t-1}) p(z_t | h_{t-1})
        / q(z_t | .) of every row from what the loop computed (Eq. 5 and 6 run here, without
        gradient, on the step's N rows), handed to ``particles``. With ``records``
        (:meth:`_records`) the MLPs' activations are kept for the batched pass after the loop,
        which then runs only their output layers and the backward products."""
        prior_rec, dec_rec = (None, None) if records is None else records

        def resample(t: int, h: Tensor, z: Tensor, feat_z: Tensor, scale: Tensor,
                     eps: Tensor) -> Tensor | None:
            with torch.no_grad():
                x_t = x[:, t].repeat(replicas, 1)  # (N, D)
                # log q(z_t) with z_t = loc + scale * eps; the 2 pi terms cancel with log p's
                log_q = -(0.5 * eps.square() + scale.log()).sum(-1)
                if self.prior is None:
                    log_p = -0.5 * z.square().sum(-1)
                else:
                    loc, sd = (self.prior(h) if prior_rec is None
                               else self.prior.gaussian.params(prior_rec.record(t, h)))
                    log_p = -(0.5 * ((z - loc) / sd).square() + sd.log()).sum(-1)
                dec_in = torch.cat([feat_z, h], -1)
                if dec_rec is None:
                    log_px = emission_log_density(self.decoder, dec_in, x_t)
                else:
                    head = self.decoder.head
                    log_px = head.log_density(head.linear(dec_rec.record(t, dec_in)), x_t)
                return particles(t, log_px + log_p - log_q)
        return resample

    def loop_weights(self) -> LoopWeights:
        """The tensors the filtering loop reads: the encoder's layers and Gaussian layer, phi_z's
        layers, the cell's weights (the parameters themselves, not copies).

        The loop reads one input per step for both the encoder and the cell. With the smoothing
        posterior that input is ``[phi_x(x_t), a_t]``, which the cell does not read: its input
        weight gets zero columns for a_t (their products run once, before the loop, and the
        gradient reaches the real columns through the concatenation)."""
        def pairs(layers) -> tuple[tuple[Tensor, Tensor], ...]:
            return tuple((layer.weight, layer.bias) for layer in layers)
        head = self.encoder.gaussian.linear
        cell = self.cell
        w_ih = cell.weight_ih
        if self.smoother is not None:
            X = self.phi_x.out_dim
            skip = w_ih.new_zeros(w_ih.shape[0], self.smoother.out_dim)
            w_ih = torch.cat([w_ih[:, :X], skip, w_ih[:, X:]], 1)  # (G, X + A + F)
        return LoopWeights(encoder=pairs(self.encoder.mlp.layers), head=(head.weight, head.bias),
                           phi_z=pairs(self.phi_z.layers),
                           cell=(w_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))

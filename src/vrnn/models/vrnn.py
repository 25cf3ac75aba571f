"""The Variational Recurrent Neural Network and the paper's RNN baselines.

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
before it,
and the prior, decoder, KL and likelihood run after it, batched over all T steps.
:class:`vrnn.models.reference.LiteralVRNN` keeps the literal per-step version, built on the same
:meth:`VRNN.prior_dist`, :meth:`VRNN.posterior` and :meth:`VRNN.cell_step` that generation uses,
and the tests assert that both give the same loss and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, kl_divergence

from vrnn.kernels.filtering import Filtered, LoopWeights, filtering_loop
from vrnn.models.config import ModelConfig
from vrnn.models.distributions import GaussianHead, diagonal_normal, draw, make_head

State = tuple[Tensor, ...]
"""Recurrent state: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU, each ``(B, H)``."""


def masked_sum(values: Tensor, mask: Tensor | None) -> Tensor:
    """Sum ``values (B, T)`` over time where ``mask (B, T)`` is true -> ``(B,)``.

    The one reduction over time in the package: padded steps of a ragged batch contribute nothing,
    so a sequence's loss is the same alone and padded inside a longer batch.
    """
    if mask is None:
        return values.sum(1)
    return (values * mask.to(values.dtype)).sum(1)


# -- feature extractors phi_x, phi_z --------------------------------------------------------------


class MLP(nn.Module):
    """ReLU feature extractor. ``(..., in_dim) -> (..., widths[-1])``; identity if no widths."""

    def __init__(self, in_dim: int, widths: tuple[int, ...]):
        super().__init__()
        dims = (in_dim, *widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        return x


# -- Eq. 5: the prior p(z_t | h_{t-1}) ------------------------------------------------------------


class LatentGaussian(nn.Module):
    """An MLP and a Gaussian layer: phi_prior of Eq. 5 (reading h_{t-1}) and, reading
    ``[phi_x(x_t), h_{t-1}]``, phi_enc of Eq. 9."""

    def __init__(self, in_dim: int, widths: tuple[int, ...], z_dim: int, cfg: ModelConfig):
        super().__init__()
        self.mlp = MLP(in_dim, widths)
        self.gaussian = GaussianHead(self.mlp.out_dim, z_dim, min_scale=cfg.min_scale,
                                     scale_bias=cfg.scale_bias)

    def forward(self, inp: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., in_dim)`` -> ``loc, scale`` each ``(..., Z)``."""
        return self.gaussian.params(self.mlp(inp))


# -- Eq. 6: the decoder p(x_t | z_t, h_{t-1}) -----------------------------------------------------


class Decoder(nn.Module):
    """phi_dec: an MLP of ``[phi_z(z_t), h_{t-1}]`` (the RNN: of h_{t-1}) and the output head."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.mlp = MLP(in_dim, cfg.decoder)
        self.head = make_head(cfg.output, self.mlp.out_dim, cfg.x_dim, components=cfg.components,
                              min_scale=cfg.min_scale, scale_bias=cfg.scale_bias)

    def forward(self, inp: Tensor, temperature: float = 1.0) -> Distribution:
        """``(..., in_dim)`` -> a distribution with batch shape ``(...)`` over frames ``(D,)``."""
        return self.head(self.mlp(inp), temperature)


# -- Eq. 7: the recurrence h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}) -------------------------------


def make_cell(cfg: ModelConfig, in_dim: int) -> nn.Module:
    """f of Eq. 7: the library LSTM or GRU cell over ``in_dim`` inputs."""
    return nn.LSTMCell(in_dim, cfg.h_dim) if cfg.cell == "lstm" else nn.GRUCell(in_dim, cfg.h_dim)


# -- Eq. 9: the posterior q(z_t | x_t, h_{t-1}) and its reparameterised sample --------------------


def reverse_in_time(x: Tensor, mask: Tensor | None) -> Tensor:
    """Reverse every sequence of ``x (B, T, .)`` within its own length (``mask (B, T)``, true on
    a prefix of each row): step t of a sequence of L valid steps goes to L - 1 - t, padding stays
    where it is. Its own inverse."""
    if mask is None:
        return x.flip(1)
    T = x.shape[1]
    steps = torch.arange(T, device=x.device)
    lengths = mask.sum(1, keepdim=True)  # (B, 1)
    index = lengths - 1 - steps  # (B, T)
    index = torch.where(index >= 0, index, steps)  # padded steps map to themselves
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class BackwardRNN(nn.Module):
    """The smoothing posterior's summary of the present and the future, a_t = g(a_{t+1}, inp_t),
    run from each sequence's last valid step back to its first with the library LSTM/GRU (a_{T+1}
    = 0). ``inp (B, T, in_dim)`` -> ``a (B, T, units)``; padded steps of ``mask`` change no valid
    one."""

    def __init__(self, in_dim: int, units: int, cell: str):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(in_dim, units, batch_first=True)
        self.out_dim = units

    def forward(self, inp: Tensor, mask: Tensor | None = None) -> Tensor:
        out, _ = self.rnn(reverse_in_time(inp, mask))
        return reverse_in_time(out, mask)


def reparameterise(q: Independent, eps: Tensor) -> Tensor:
    """z_t = loc + scale * eps of a diagonal Gaussian, differentiable in loc and scale."""
    return q.base_dist.loc + q.base_dist.scale * eps


# -- the models -----------------------------------------------------------------------------------


@dataclass
class StepTerms:
    """Per-step terms of one pass over a batch; every tensor is ``(B, T)`` unless noted.

    ``log_px``: log p(x_t | z_{<=t}, x_{<t}); ``kl``: KL(q(z_t | .) || p(z_t | .)) in closed form
    (zeros for RNNs); ``log_pz``/``log_qz``: log-densities of the sampled z_t under prior and
    posterior (for importance sampling; None unless asked); ``state``: the recurrent state after
    the last step (for truncated BPTT); ``latents``: optional dict of ``(B, T, Z)`` tensors
    (``z``, ``enc_loc``, ``enc_scale``, ``prior_loc``, ``prior_scale``) and ``h (B, T, H)``.
    """

    log_px: Tensor
    kl: Tensor
    state: State
    log_pz: Tensor | None = None
    log_qz: Tensor | None = None
    latents: dict[str, Tensor] | None = None

    def elbo(self, mask: Tensor | None = None, kl_weight: float = 1.0) -> Tensor:
        """Per-sequence ELBO (Eq. 11) summed over valid steps -> ``(B,)``."""
        return masked_sum(self.log_px - kl_weight * self.kl, mask)


class SequenceModel(nn.Module):
    """What every model of the package offers: per-step terms, the training loss, sampling."""

    config: ModelConfig

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        n_state = 2 if config.cell == "lstm" else 1
        init = torch.zeros(n_state, config.h_dim)
        if config.learn_h0:
            self.initial_state = nn.Parameter(init)
        else:
            self.register_buffer("initial_state", init)

    @property
    def is_latent(self) -> bool:
        return self.config.family != "rnn"

    def init_state(self, batch: int) -> State:
        """The learned (or zero) initial state expanded to ``batch`` rows, each ``(B, H)``."""
        return tuple(s.unsqueeze(0).expand(batch, -1) for s in self.initial_state)

    def _check_input(self, x: Tensor, mask: Tensor | None) -> None:
        if x.dim() != 3 or x.shape[-1] != self.config.x_dim:
            raise ValueError(f"expected x of shape (B, T, D={self.config.x_dim}), "
                             f"got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("x has no time steps (T=0)")
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(f"mask must have shape (B, T)={tuple(x.shape[:2])}, "
                             f"got {tuple(mask.shape)}")

    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False) -> StepTerms:
        raise NotImplementedError

    def _checked_noise(self, x: Tensor, mask: Tensor | None, noise: Tensor | None,
                       generator: torch.Generator | None, replicas: int) -> Tensor:
        """A latent model's pass checks: ``x``, ``mask`` and ``replicas``; then the noise of the
        reparameterised z_t, ``(replicas * B, T, Z)``: as given, or drawn from ``generator``."""
        self._check_input(x, mask)
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        N, T, Z = replicas * x.shape[0], x.shape[1], self.config.z_dim
        if noise is None:
            return torch.randn(N, T, Z, dtype=x.dtype, device=x.device, generator=generator)
        if noise.shape != (N, T, Z):
            raise ValueError(f"noise must have shape (replicas * B, T, Z)={(N, T, Z)}, got "
                             f"{tuple(noise.shape)}")
        return noise

    def loss(self, x: Tensor, mask: Tensor | None = None, *, kl_weight: float = 1.0,
             state: State | None = None, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, StepTerms]:
        """Training objective: the negative ELBO summed over time, averaged over sequences.

        For an RNN this is the exact negative log-likelihood. ``kl_weight`` < 1 anneals the KL
        term (off by default, as in the paper). Returns ``(loss, terms)``.
        """
        terms = self(x, mask, state=state, noise=noise, generator=generator)
        return -terms.elbo(mask, kl_weight).mean(), terms

    def sample(self, num: int, steps: int, *, prime: Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               include_prime: bool = False) -> Tensor:
        """Generate ``num`` sequences of ``steps`` frames -> ``(num, steps, D)``.

        Args:
            prime: optional prefix ``(P, D)`` or ``(num, P, D)``, encoded first (VRNN: with the
                filtering posterior q) before sampling continues from the prior.
            temperature: divides mixture / Bernoulli logits, multiplies output scales by its root.
            generator: the random stream, for reproducible samples.
            include_prime: prepend the prefix to the output -> ``(num, P + steps, D)``.
        """
        if num < 1 or steps < 0:
            raise ValueError(f"sample needs num >= 1 and steps >= 0, got num={num}, steps={steps}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        ref = self.initial_state
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                state = self.init_state(num)
                if prime is not None:
                    prime = prime.to(device=ref.device, dtype=ref.dtype)
                    if prime.dim() == 2:
                        prime = prime.unsqueeze(0).expand(num, -1, -1)  # (num, P, D)
                    if (prime.dim() != 3 or prime.shape[0] != num
                            or prime.shape[-1] != self.config.x_dim):
                        raise ValueError(f"prime must be (P, D={self.config.x_dim}) or "
                                         f"(num={num}, P, D); got {tuple(prime.shape)}")
                    state = self(prime, state=state, generator=generator).state
                out = self._generate(state, steps, temperature, generator)
        finally:
            self.train(was_training)
        if include_prime and prime is not None:
            out = torch.cat([prime, out], 1)
        return out

    def _generate(self, state: State, steps: int, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError


class VRNN(SequenceModel):
    """The VRNN (Eq. 5-9), or VRNN-I with ``config.prior == 'standard'``.

    Modules: ``phi_x``, ``phi_z`` feature extractors; ``prior`` (phi_prior, absent for VRNN-I);
    ``encoder`` (phi_enc); ``decoder`` (phi_dec with the output head); ``cell`` (f of Eq. 7);
    with ``config.posterior == 'smoothing'``, ``smoother``: a :class:`BackwardRNN` over
    phi_x(x_{>=t}) whose a_t the encoder reads beside phi_x(x_t) and h_{t-1}, so q(z_t | x_{<=T},
    z_{<t}) instead of the paper's filtering q(z_t | x_{<=t}, z_{<t}) (Eq. 10's assumption).
    """

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

    # -- the fast path --------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1) -> StepTerms:
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
                once per replica (importance sampling, Section 2 of the spec).
        """
        noise = self._checked_noise(x, mask, noise, generator, replicas)
        B, T, _ = x.shape
        N = replicas * B
        state = self.init_state(N) if state is None else state

        feat_x = self.phi_x(x)  # (B, T, X), before the loop: it depends on x alone
        enc_feat = self.encoder_features(feat_x, mask)  # (B, T, X [+ A])
        # the loop reads the weights of the library's own MLPs; a swapped-in module goes by steps
        if isinstance(self.phi_z, MLP) and isinstance(self.encoder.mlp, MLP):
            f = filtering_loop(enc_feat, noise, state, self.loop_weights(),
                               min_scale=self.config.min_scale, replicas=replicas,
                               hand_written=self.custom_loop)
        else:
            f = self._filter_step_by_step(feat_x, enc_feat, noise, state, replicas)

        # After the loop: prior, decoder, KL and likelihood, batched over all steps.
        q = diagonal_normal(f.loc, f.scale)  # Eq. 9
        p = self.prior_dist(f.h_prev)  # Eq. 5
        px = self.decoder(torch.cat([f.phi_z, f.h_prev], -1))  # Eq. 6
        xr = x if replicas == 1 else x.repeat(replicas, 1, 1)  # (N, T, D)
        terms = StepTerms(log_px=px.log_prob(xr), kl=kl_divergence(q, p), state=f.state)  # (N, T)
        if sample_terms:
            terms.log_pz, terms.log_qz = p.log_prob(f.z), q.log_prob(f.z)  # (N, T)
        if return_latents:
            terms.latents = {"z": f.z, "enc_loc": f.loc, "enc_scale": f.scale,
                             "prior_loc": p.base_dist.loc, "prior_scale": p.base_dist.scale,
                             "h": f.h_prev}
        return terms

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

    def _filter_step_by_step(self, feat_x: Tensor, enc_feat: Tensor, noise: Tensor,
                             state: State, replicas: int) -> Filtered:
        """Eq. 7-9 one step at a time through the model's own modules, for a phi_z or encoder
        MLP replaced by another module (whose weights the fast loop cannot read)."""
        if replicas > 1:
            feat_x = feat_x.repeat(replicas, 1, 1)  # (N, T, X)
            enc_feat = enc_feat.repeat(replicas, 1, 1)
        steps = []
        for feat_x_t, enc_t, eps_t in zip(feat_x.unbind(1), enc_feat.unbind(1), noise.unbind(1)):
            h_prev = state[0]
            q = self.posterior(enc_t, h_prev)  # Eq. 9
            z = reparameterise(q, eps_t)  # (N, Z)
            feat_z = self.phi_z(z)  # (N, F)
            state = self.cell_step(torch.cat([feat_x_t, feat_z], -1), state)  # Eq. 7
            steps.append((h_prev, z, feat_z, q.base_dist.loc, q.base_dist.scale))
        columns = (torch.stack(column, 1) for column in zip(*steps))  # each (N, T, .)
        return Filtered(*columns, state=state)

    def _generate(self, state: State, steps: int, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        frames = []
        for _ in range(steps):
            h = state[0]
            z = draw(self.prior_dist(h), generator)  # Eq. 5, (num, Z)
            feat_z = self.phi_z(z)
            x = draw(self.decoder(torch.cat([feat_z, h], -1), temperature), generator)  # Eq. 6
            state = self.cell_step(torch.cat([self.phi_x(x), feat_z], -1), state)  # Eq. 7
            frames.append(x)
        if not frames:
            return state[0].new_zeros(state[0].shape[0], 0, self.config.x_dim)
        return torch.stack(frames, 1)  # (num, steps, D)


class RNN(SequenceModel):
    """The paper's baselines (RNN-Gauss, RNN-GMM, ...): h_t = f(phi_x(x_t), h_{t-1}) and
    x_t ~ phi_dec(h_{t-1}). No latents, so the whole recurrence is one fused library LSTM/GRU and
    the log-likelihood is exact."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        cfg = config
        if cfg.family != "rnn":
            raise ValueError(f"RNN needs config.family='rnn', got {cfg.family!r}")
        self.phi_x = MLP(cfg.x_dim, cfg.phi_x)
        rnn_cls = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(self.phi_x.out_dim, cfg.h_dim, batch_first=True)
        self.decoder = Decoder(cfg.h_dim, cfg)

    def _rnn_state(self, state: State) -> Tensor | tuple[Tensor, Tensor]:
        s = tuple(t.unsqueeze(0).contiguous() for t in state)  # (1, B, H) each
        return s if self.config.cell == "lstm" else s[0]

    def _from_rnn_state(self, s) -> State:
        return tuple(t.squeeze(0) for t in s) if isinstance(s, tuple) else (s.squeeze(0),)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False) -> StepTerms:
        """Exact per-step log-likelihood of ``x (B, T, D)``; ``kl`` is zero."""
        self._check_input(x, mask)
        B = x.shape[0]
        state = self.init_state(B) if state is None else state
        out, last = self.rnn(self.phi_x(x), self._rnn_state(state))  # (B, T, H)
        h_prev = torch.cat([state[0].unsqueeze(1), out[:, :-1]], 1)  # (B, T, H): h_{t-1}
        log_px = self.decoder(h_prev).log_prob(x)  # (B, T)
        zeros = torch.zeros_like(log_px)
        terms = StepTerms(log_px=log_px, kl=zeros, state=self._from_rnn_state(last))
        if sample_terms:
            terms.log_pz, terms.log_qz = zeros, zeros
        if return_latents:
            terms.latents = {"h": h_prev}
        return terms

    def _generate(self, state: State, steps: int, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        frames = []
        s = self._rnn_state(state)
        h = state[0]
        for _ in range(steps):
            x = draw(self.decoder(h, temperature), generator)  # (num, D)
            out, s = self.rnn(self.phi_x(x).unsqueeze(1), s)
            h = out[:, 0]
            frames.append(x)
        if not frames:
            return h.new_zeros(h.shape[0], 0, self.config.x_dim)
        return torch.stack(frames, 1)  # (num, steps, D)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""The Variational Recurrent Neural Network and the paper's RNN baselines.

Chung, Kastner, Dinh, Goel, Courville, Bengio. "A Recurrent Latent Variable Model for Sequential
Data." NIPS 2015 (arXiv:1506.02216). Equation numbers below are the paper's.

Notation, batch-first everywhere:
    B batch, T time steps, D frame size (x_dim), Z latent size, H recurrent units,
    K mixture components, S importance samples; X = phi_x width, F = phi_z width.

How this version differs from a literal reading of the paper: the paper's VRNN is a VAE per step
with every network evaluated inside the time loop. Only four things feed the recurrence (the
encoder, the reparameterised sample, phi_z and the cell), so only those run in the loop here;
phi_x of every frame runs before it, and the prior, decoder, KL and likelihood run after it,
batched over all T steps. The input-side halves of the encoder's first layer and of the cell's
input product are also computed before the loop, and the two products with h_{t-1} (encoder and
cell) are fused into one matrix multiply per step. ``tests/reference.py`` keeps the literal
per-step version and the tests assert both give the same loss and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from vrnn.config import ModelConfig
from vrnn.distributions import draw, make_head, positive_scale

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


class MLP(nn.Module):
    """ReLU feature extractor. ``(..., in_dim) -> (..., widths[-1])``; identity if no widths."""

    def __init__(self, in_dim: int, widths: tuple[int, ...]):
        super().__init__()
        dims = (in_dim, *widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out_dim = dims[-1]

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """Apply layers ``start:``; ``start=1`` continues after a first layer computed elsewhere."""
        for layer in self.layers[start:]:
            x = F.relu(layer(x))
        return x


class GaussianLayer(nn.Module):
    """Linear map to the ``(loc, scale)`` of a diagonal Gaussian; scale = softplus + floor."""

    def __init__(self, in_dim: int, out_dim: int, min_scale: float, scale_bias: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * out_dim)
        self.min_scale = min_scale
        with torch.no_grad():
            self.linear.bias[out_dim:].fill_(scale_bias)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.linear(h).chunk(2, -1)
        return loc, positive_scale(raw, self.min_scale)


class LatentGaussian(nn.Module):
    """An MLP followed by a :class:`GaussianLayer`: the prior phi_prior and encoder phi_enc."""

    def __init__(self, in_dim: int, widths: tuple[int, ...], z_dim: int, cfg: ModelConfig):
        super().__init__()
        self.mlp = MLP(in_dim, widths)
        self.gaussian = GaussianLayer(self.mlp.out_dim, z_dim, cfg.min_scale, cfg.scale_bias)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., in_dim)`` -> ``loc, scale`` each ``(..., Z)``."""
        return self.gaussian(self.mlp(h))


class Emitter(nn.Module):
    """phi_dec: an MLP of its input followed by the output head; returns a distribution over x_t."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.mlp = MLP(in_dim, cfg.decoder)
        self.head = make_head(cfg.output, self.mlp.out_dim, cfg.x_dim, components=cfg.components,
                              min_scale=cfg.min_scale, scale_bias=cfg.scale_bias)

    def forward(self, h: Tensor, temperature: float = 1.0) -> Distribution:
        return self.head(self.mlp(h), temperature)


def _cell(cfg: ModelConfig, in_dim: int) -> nn.Module:
    return nn.LSTMCell(in_dim, cfg.h_dim) if cfg.cell == "lstm" else nn.GRUCell(in_dim, cfg.h_dim)


@dataclass
class StepTerms:
    """Per-step terms of one pass over a batch; every tensor is ``(B, T)`` unless noted.

    ``log_px``: log p(x_t | z_{<=t}, x_{<t}); ``kl``: KL(q(z_t | .) || p(z_t | .)) in closed form
    (zeros for RNNs); ``log_pz``/``log_qz``: log-densities of the sampled z_t under prior and
    posterior (for importance sampling; None unless asked); ``state``: the recurrent state after
    the last step (for truncated BPTT); ``latents``: optional dict of ``(B, T, Z)`` tensors
    (``z``, ``enc_loc``, ``enc_scale``, ``prior_loc``, ``prior_scale``) for analysis.
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
        return self.config.family == "vrnn"

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
        device = self.initial_state.device
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                state = self.init_state(num)
                if prime is not None:
                    prime = prime.to(device=device, dtype=self.initial_state.dtype)
                    if prime.dim() == 2:
                        prime = prime.unsqueeze(0).expand(num, -1, -1)
                    if prime.dim() != 3 or prime.shape[0] != num or prime.shape[-1] != \
                            self.config.x_dim:
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
    ``encoder`` (phi_enc); ``decoder`` (phi_dec with the output head); ``cell`` (f of Eq. 7).
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        if c.family != "vrnn":
            raise ValueError(f"VRNN needs config.family='vrnn', got {c.family!r}")
        self.phi_x = MLP(c.x_dim, c.phi_x)
        self.phi_z = MLP(c.z_dim, c.phi_z)
        self.encoder = LatentGaussian(self.phi_x.out_dim + c.h_dim, c.encoder, c.z_dim, c)
        self.prior = (LatentGaussian(c.h_dim, c.prior_net, c.z_dim, c)
                      if c.prior == "learned" else None)
        self.decoder = Emitter(self.phi_z.out_dim + c.h_dim, c)
        self.cell = _cell(c, self.phi_x.out_dim + self.phi_z.out_dim)

    # -- pieces shared by the fast path, the per-step reference and generation ------------------
    def prior_dist(self, h_prev: Tensor) -> Independent:
        """Eq. 5: p(z_t | h_{t-1}); N(0, I) for VRNN-I. ``(..., H) -> batch (...), event (Z,)``."""
        if self.prior is None:
            zeros = h_prev.new_zeros(*h_prev.shape[:-1], self.config.z_dim)
            return Independent(Normal(zeros, torch.ones_like(zeros)), 1)
        return Independent(Normal(*self.prior(h_prev)), 1)

    def cell_step(self, inp: Tensor, state: State) -> State:
        """Eq. 7 with the library cell: ``inp (B, X + F)``, state -> new state."""
        if self.config.cell == "lstm":
            return self.cell(inp, state)
        return (self.cell(inp, state[0]),)

    # -- the fast path ------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False) -> StepTerms:
        """One pass of the filtering posterior over ``x (B, T, D)`` with ``mask (B, T)``.

        Args:
            state: recurrent state to start from (truncated BPTT); default the initial state.
            noise: ``(B, T, Z)`` standard-normal draws for the reparameterised z_t; drawn from
                ``generator`` when absent.
            sample_terms: also return log p(z_t) and log q(z_t) of the sampled z (for IS).
            return_latents: also return z and the encoder / prior parameters, ``(B, T, Z)``.
        """
        self._check_input(x, mask)
        c = self.config
        B, T, _ = x.shape
        Z = c.z_dim
        if noise is None:
            noise = torch.randn(B, T, Z, dtype=x.dtype, device=x.device, generator=generator)
        elif noise.shape != (B, T, Z):
            raise ValueError(f"noise must have shape (B, T, Z)={(B, T, Z)}, got "
                             f"{tuple(noise.shape)}")
        state = self.init_state(B) if state is None else state

        # Before the loop: everything that depends on x alone.
        feat_x = self.phi_x(x)  # (B, T, X)
        X = feat_x.shape[-1]
        enc_first = self.encoder.mlp.layers[0]
        e1 = enc_first.out_features
        enc_x = F.linear(feat_x, enc_first.weight[:, :X], enc_first.bias)  # (B, T, E1)
        lstm = c.cell == "lstm"
        w_ih_x = self.cell.weight_ih[:, :X]
        w_ih_z = self.cell.weight_ih[:, X:]
        if lstm:
            cell_x = F.linear(feat_x, w_ih_x, self.cell.bias_ih + self.cell.bias_hh)  # (B,T,4H)
            w_h = torch.cat([enc_first.weight[:, X:], self.cell.weight_hh])  # (E1 + 4H, H)
            b_h = None
        else:
            cell_x = F.linear(feat_x, w_ih_x, self.cell.bias_ih)  # (B, T, 3H)
            w_h = torch.cat([enc_first.weight[:, X:], self.cell.weight_hh])  # (E1 + 3H, H)
            b_h = torch.cat([enc_first.bias.new_zeros(e1), self.cell.bias_hh])

        # The loop: only what feeds h_t. unbind(1) rather than [:, t] indexing, whose backward
        # writes a full-size zero tensor per step and makes the cost quadratic in T.
        h = state[0]
        cstate = state[1] if lstm else None
        hs, zs, fzs, locs, scales = [], [], [], [], []
        for enc_x_t, cell_x_t, eps_t in zip(enc_x.unbind(1), cell_x.unbind(1), noise.unbind(1)):
            hs.append(h)
            hw = F.linear(h, w_h, b_h)  # (B, E1 + 4H): one fused product with h_{t-1}
            enc_h, cell_h = hw.split([e1, hw.shape[1] - e1], 1)
            # Eq. 9: encoder from phi_x(x_t) and h_{t-1}
            loc, scale = self.encoder.gaussian(self.encoder.mlp(F.relu(enc_x_t + enc_h), 1))
            z = loc + scale * eps_t  # (B, Z), reparameterised
            fz = self.phi_z(z)  # (B, F)
            gi = cell_x_t + F.linear(fz, w_ih_z)  # input side of Eq. 7
            if lstm:
                i, f, g, o = (gi + cell_h).chunk(4, 1)
                cstate = torch.sigmoid(f) * cstate + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(cstate)
            else:
                ir, iz, inn = gi.chunk(3, 1)
                hr, hz, hn = cell_h.chunk(3, 1)
                r, u = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - u) * torch.tanh(inn + r * hn) + u * h
            zs.append(z)
            fzs.append(fz)
            locs.append(loc)
            scales.append(scale)
        final = (h, cstate) if lstm else (h,)

        # After the loop: prior, decoder, KL and likelihood, batched over all steps.
        h_prev = torch.stack(hs, 1)  # (B, T, H)
        z = torch.stack(zs, 1)  # (B, T, Z)
        q = Independent(Normal(torch.stack(locs, 1), torch.stack(scales, 1)), 1)
        p = self.prior_dist(h_prev)
        px = self.decoder(torch.cat([torch.stack(fzs, 1), h_prev], -1))  # Eq. 6
        terms = StepTerms(log_px=px.log_prob(x), kl=kl_divergence(q, p), state=final)  # (B, T)
        if sample_terms:
            terms.log_pz, terms.log_qz = p.log_prob(z), q.log_prob(z)  # (B, T)
        if return_latents:
            terms.latents = {"z": z, "enc_loc": q.base_dist.loc, "enc_scale": q.base_dist.scale,
                             "prior_loc": p.base_dist.loc, "prior_scale": p.base_dist.scale,
                             "h": h_prev}
        return terms

    def _generate(self, state: State, steps: int, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        frames = []
        for _ in range(steps):
            h = state[0]
            z = draw(self.prior_dist(h), generator)  # Eq. 5, (num, Z)
            fz = self.phi_z(z)
            x = draw(self.decoder(torch.cat([fz, h], -1), temperature), generator)  # Eq. 6
            state = self.cell_step(torch.cat([self.phi_x(x), fz], -1), state)  # Eq. 7
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
        c = config
        if c.family != "rnn":
            raise ValueError(f"RNN needs config.family='rnn', got {c.family!r}")
        self.phi_x = MLP(c.x_dim, c.phi_x)
        rnn_cls = nn.LSTM if c.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(self.phi_x.out_dim, c.h_dim, batch_first=True)
        self.decoder = Emitter(c.h_dim, c)

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


def build_model(config: ModelConfig) -> SequenceModel:
    """The model a config describes: :class:`VRNN` or :class:`RNN`."""
    return VRNN(config) if config.family == "vrnn" else RNN(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""The networks every family is built from: the ReLU feature extractors (phi_x, phi_z), a Gaussian
layer over an MLP (phi_prior, phi_enc), the decoder into an output head (phi_dec), the recurrent
cell, the smoothing posterior's backward RNN and a forward RNN from a given state (the DMM's
filtering RNN, STORN's two). Section 3 of Chung et al. (NIPS 2015) names them; equation numbers
are the paper's.

Notation as in :mod:`vrnn.models.base`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from vrnn.models.config import ModelConfig
from vrnn.models.distributions import GaussianHead, make_head

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

    def log_density(self, inp: Tensor, x: Tensor) -> Tensor:
        """``forward(inp).log_prob(x)`` for ``inp (N, in_dim)``, ``x (N, D)`` -> ``(N,)``, from
        the head's linear output without distribution objects: the per-step weights of a
        particle filter, a few dozen operations a step instead of hundreds."""
        return self.head.log_density(self.head.linear(self.mlp(inp)), x)


def emission_log_density(decoder: nn.Module, inp: Tensor, x: Tensor) -> Tensor:
    """log p(x | inp) of a model's decoder: :meth:`Decoder.log_density` for the library's own,
    the distribution's ``log_prob`` for a module swapped in."""
    if type(decoder) is Decoder:
        return decoder.log_density(inp, x)
    return decoder(inp).log_prob(x)


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


class ForwardRNN(nn.Module):
    """The library LSTM/GRU forwards from a given state, as one fused call over a window (a
    step is the same call on one frame): ``inp (B, T, in_dim)`` and the state ``(h, c)`` or
    ``(h,)`` (each ``(B, units)``) -> the outputs ``(B, T, units)`` and the state after the last
    step. Padded steps come after the valid ones, so they change no valid output."""

    def __init__(self, in_dim: int, units: int, cell: str):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(in_dim, units, batch_first=True)
        self.out_dim, self.n_state = units, 2 if cell == "lstm" else 1

    def zero_state(self, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        """The all-zero state of ``batch`` rows, dtype and device of ``like``."""
        return tuple(like.new_zeros(batch, self.out_dim) for _ in range(self.n_state))

    def forward(self, inp: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        s = tuple(t.unsqueeze(0).contiguous() for t in state)  # (1, B, units) each
        out, last = self.rnn(inp, s if self.n_state == 2 else s[0])
        return out, tuple(t[0] for t in (last if self.n_state == 2 else (last,)))


def reparameterise(q: Independent, eps: Tensor) -> Tensor:
    """z_t = loc + scale * eps of a diagonal Gaussian, differentiable in loc and scale."""
    return q.base_dist.loc + q.base_dist.scale * eps

"""The VRNN read literally, one time step at a time: the check the fast path is pinned to.

Public ports of the VRNN call every network of Eq. 5-9 on ``(B, .)`` slices inside the Python loop
over time. :class:`LiteralVRNN` does exactly that with a model's own modules and its library cell
(``nn.LSTMCell`` / ``nn.GRUCell``), and takes the KL from ``torch.distributions.kl_divergence``,
so it shares none of the fast path's tricks: no products moved out of the loop, no fused matrix,
no hand-written gates or backward pass. The tests assert that both give the same terms, loss and
gradients; the benchmark times it as the baseline. :func:`literal_primed_sample` is the same
reading of a primed sample, for the VRNN and the RNN baselines. :class:`LiteralSRNN` is the same
reading of the SRNN: its deterministic layer stepped one frame at a time with the model's library
RNN, every network of the z-chain called per step. With the smoothing posterior both first run
the model's backward RNN over the whole sequence (it reads the future, so no per-step reading of
it exists), then go step by step.

Notation as in :mod:`vrnn.models.vrnn`: B batch, T time steps, D frame size, Z latent size, H units.
"""

from __future__ import annotations

import copy as copy_module
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from vrnn.models.distributions import diagonal_normal, draw
from vrnn.models.srnn import SRNN
from vrnn.models.vrnn import RNN, VRNN, SequenceModel, State, masked_sum, reparameterise


class StepOut(NamedTuple):
    """The terms of one time step, each ``(B,)``."""

    log_px: Tensor
    """log p(x_t | z_{<=t}, x_{<t}), Eq. 6."""
    kl: Tensor
    """KL(q(z_t | x_{<=t}, z_{<t}) || p(z_t | x_{<t}, z_{<t})), Eq. 9 against Eq. 5."""
    log_ratio: Tensor
    """log p(z_t) - log q(z_t) of the sampled z_t (the importance weight's step term)."""


class LiteralVRNN(nn.Module):
    """Eq. 5-9 read literally: every network called on ``(B, .)`` slices inside the Python loop
    over time, the model's own library cell, the KL from ``torch.distributions.kl_divergence``.

    Args:
        model: the :class:`VRNN` whose modules (and so weights) are used.
        copy: deep-copy the model, so this reference holds its own weights (the benchmark trains
            both); by default it shares the model's modules, and gradients land on the model.
    """

    net: VRNN

    def __init__(self, model: VRNN, *, copy: bool = False):
        super().__init__()
        if not isinstance(model, VRNN):
            raise ValueError(f"LiteralVRNN reads a VRNN, got {type(model).__name__}")
        self.net = copy_module.deepcopy(model) if copy else model
        # torch.compile cannot trace kl_divergence's first look-up of a pair of types (a min
        # over a generator, torch 2.13), only the memo that look-up fills: make it here, so
        # that step compiles with fullgraph=True
        unit = diagonal_normal(torch.zeros(1), torch.ones(1))
        kl_divergence(unit, unit)

    def step(self, x_t: Tensor, eps_t: Tensor, state: State,
             a_t: Tensor | None = None) -> tuple[StepOut, State]:
        """One time step: ``x_t (B, D)``, the noise ``eps_t (B, Z)`` of the reparameterised z_t
        and the state before it (``(h, c)`` or ``(h,)``, each ``(B, H)``) -> the step's terms
        and the next state; ``a_t (B, A)``: the smoothing posterior's backward summary of step t.
        No data-dependent Python control flow (``torch.compile`` friendly)."""
        net = self.net
        h = state[0]  # h_{t-1}
        feat_x = net.phi_x(x_t)  # (B, X)
        q = net.posterior(feat_x if a_t is None else torch.cat([feat_x, a_t], -1), h)  # Eq. 9
        p = net.prior_dist(h)  # Eq. 5
        z = reparameterise(q, eps_t)  # (B, Z)
        feat_z = net.phi_z(z)  # (B, F)
        px = net.decoder(torch.cat([feat_z, h], -1))  # Eq. 6
        out = StepOut(log_px=px.log_prob(x_t), kl=kl_divergence(q, p),
                      log_ratio=p.log_prob(z) - q.log_prob(z))
        return out, net.cell_step(torch.cat([feat_x, feat_z], -1), state)  # Eq. 7

    def terms(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log_px``, ``kl`` and ``log_ratio``, each ``(B, T)``, of ``x (B, T, D)`` from the
        model's initial state with the noise ``(B, T, Z)``."""
        return self.terms_masked(x, noise, None)

    def terms_masked(self, x: Tensor, noise: Tensor,
                     mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`terms` where ``mask (B, T)`` tells the smoothing posterior each length."""
        net = self.net
        state = net.init_state(x.shape[0])
        a = None
        if net.smoother is not None:
            a = net.smoother(net.phi_x(x), mask).unbind(1)  # (B, A) per step
        steps = []
        for t, (x_t, eps_t) in enumerate(zip(x.unbind(1), noise.unbind(1))):
            out, state = self.step(x_t, eps_t, state, None if a is None else a[t])
            steps.append(out)
        return tuple(torch.stack(column, 1) for column in zip(*steps))  # each (B, T)

    def loss(self, x: Tensor, noise: Tensor, mask: Tensor | None = None) -> Tensor:
        """The negative ELBO summed over the valid steps, averaged over sequences: ``VRNN.loss``
        with the same noise."""
        log_px, kl, _ = self.terms_masked(x, noise, mask)
        return -masked_sum(log_px - kl, mask).mean()


class LiteralSRNN(nn.Module):
    """The SRNN read literally: d_t stepped one frame at a time with the model's library RNN,
    then the z-chain with the prior, the posterior, the emission and the KL
    (``torch.distributions``) called per step on ``(B, .)`` slices.

    Args:
        model: the :class:`~vrnn.models.srnn.SRNN` whose modules are used.
        copy: deep-copy the model (the benchmark trains both); else gradients land on it.
    """

    net: SRNN

    def __init__(self, model: SRNN, *, copy: bool = False):
        super().__init__()
        if not isinstance(model, SRNN):
            raise ValueError(f"LiteralSRNN reads an SRNN, got {type(model).__name__}")
        self.net = copy_module.deepcopy(model) if copy else model

    def terms(self, x: Tensor, noise: Tensor,
              mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``log_px``, ``kl`` and ``log_ratio``, each ``(B, T)``, of ``x (B, T, D)`` from the
        model's initial state with the noise ``(B, T, Z)``."""
        net = self.net
        *d_state, z_prev, x_prev = net.init_state(x.shape[0])
        d_state = tuple(d_state)
        ds = []
        for x_t in x.unbind(1):  # d_t = f(d_{t-1}, phi_x(x_{t-1}))
            d_state = net.step_deterministic(x_prev, d_state)
            ds.append(d_state[0])
            x_prev = x_t
        d = torch.stack(ds, 1)  # (B, T, H)
        a = net.inference_features(d, net.phi_x(x), mask)  # (B, T, A)
        steps = []
        for d_t, a_t, x_t, eps_t in zip(d.unbind(1), a.unbind(1), x.unbind(1), noise.unbind(1)):
            p = net.prior_dist(d_t, z_prev)
            q = net.posterior(a_t, z_prev, p.base_dist.loc)
            z = reparameterise(q, eps_t)  # (B, Z)
            px = net.decoder(torch.cat([z, d_t], -1))
            steps.append(StepOut(log_px=px.log_prob(x_t), kl=kl_divergence(q, p),
                                 log_ratio=p.log_prob(z) - q.log_prob(z)))
            z_prev = z
        return tuple(torch.stack(column, 1) for column in zip(*steps))  # each (B, T)

    def loss(self, x: Tensor, noise: Tensor, mask: Tensor | None = None) -> Tensor:
        """The negative ELBO summed over the valid steps, averaged over sequences: ``SRNN.loss``
        with the same noise."""
        log_px, kl, _ = self.terms(x, noise, mask)
        return -masked_sum(log_px - kl, mask).mean()


def _rnn_step(model: RNN, feat_x: Tensor, state: State) -> State:
    """One step of the RNN baseline's library LSTM/GRU on ``feat_x (B, X)``."""
    s = tuple(t.unsqueeze(0).contiguous() for t in state)  # (1, B, H) each
    _, s = model.rnn(feat_x.unsqueeze(1), s if len(s) == 2 else s[0])
    return tuple(t[0] for t in s) if isinstance(s, tuple) else (s[0],)


@torch.no_grad()
def literal_primed_sample(model: SequenceModel, prime: Tensor, steps: int, temperature: float,
                          gen: torch.Generator) -> Tensor:
    """A primed continuation written out from the paper's equations with the model's modules.

    The prefix ``prime (num, P, D)`` runs through the filtering posterior (VRNN: Eq. 9 with the
    noise of one ``(num, P, Z)`` draw, as the forward pass takes it) or through the RNN; then
    Eq. 5-7 from the prior for ``steps`` frames (RNN: the decoder on h_{t-1}), every draw from
    ``gen`` in order. Returns ``(num, steps, D)``, the prefix left out.
    """
    num, P, _ = prime.shape
    state = model.init_state(num)
    vrnn = isinstance(model, VRNN)
    if vrnn:
        noise = torch.randn(num, P, model.config.z_dim, generator=gen)
        enc_feat = model.encoder_features(model.phi_x(prime))  # (num, P, X [+ A])
    for t in range(P):
        feat_x = model.phi_x(prime[:, t])
        if vrnn:
            q = model.posterior(enc_feat[:, t], state[0])  # Eq. 9
            feat_z = model.phi_z(reparameterise(q, noise[:, t]))
            state = model.cell_step(torch.cat([feat_x, feat_z], -1), state)  # Eq. 7
        else:
            state = _rnn_step(model, feat_x, state)
    frames = []
    for _ in range(steps):
        h = state[0]
        if vrnn:
            feat_z = model.phi_z(draw(model.prior_dist(h), gen))  # Eq. 5
            x = draw(model.decoder(torch.cat([feat_z, h], -1), temperature), gen)  # Eq. 6
            state = model.cell_step(torch.cat([model.phi_x(x), feat_z], -1), state)  # Eq. 7
        else:
            x = draw(model.decoder(h, temperature), gen)
            state = _rnn_step(model, model.phi_x(x), state)
        frames.append(x)
    if not frames:
        return prime.new_zeros(num, 0, prime.shape[-1])
    return torch.stack(frames, 1)  # (num, steps, D)

"""Every family read literally, one time step at a time: the check the fast paths are pinned to.

Public ports of the VRNN call every network of Eq. 5-9 on ``(B, .)`` slices inside the Python loop
over time. :class:`Literal` does exactly that for any model of the step protocol
(:mod:`vrnn.inference.protocol`), with the model's own modules and library cells: what does not
depend on z (the model's ``context``: phi_x, a backward RNN over the future, the SRNN's
deterministic layer) once over the sequence, then per step the model's ``step`` and ``observe``,
the KL from ``torch.distributions.kl_divergence``. It shares none of the fast paths' tricks: no
products moved out of the loop, no fused matrix, no hand-written gates or backward pass. The tests
assert that both give the same terms, loss and gradients; the benchmark times it as the baseline
(and ``torch.compile`` of its :meth:`Literal.step` as another). :func:`literal_primed_sample` is
the same reading of a primed sample.

Notation as in :mod:`vrnn.models.base`: B batch, T time steps, D frame size, Z latent size.
"""

from __future__ import annotations

import copy as copy_module
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from vrnn.inference.protocol import State, masked_sum
from vrnn.models.base import SequenceModel
from vrnn.models.distributions import diagonal_normal


class StepOut(NamedTuple):
    """The terms of one time step, each ``(B,)``."""

    log_px: Tensor
    """log p(x_t | z_{<=t}, x_{<t}), Eq. 6."""
    kl: Tensor
    """KL(q(z_t | .) || p(z_t | .)), the posterior against the prior."""
    log_ratio: Tensor
    """log p(z_t) - log q(z_t) of the sampled z_t (the importance weight's step term)."""


class Literal(nn.Module):
    """A model read literally through its step protocol.

    Args:
        model: the model whose modules (and so weights) are used.
        copy: deep-copy the model, so this reference holds its own weights (the benchmark trains
            both); by default it shares the model's modules, and gradients land on the model.
    """

    net: SequenceModel

    def __init__(self, model: SequenceModel, *, copy: bool = False):
        super().__init__()
        if not isinstance(model, SequenceModel):
            raise ValueError(f"Literal reads a vrnn model, got {type(model).__name__}")
        self.net = copy_module.deepcopy(model) if copy else model
        # torch.compile cannot trace kl_divergence's first look-up of a pair of types (a min
        # over a generator, torch 2.13), only the memo that look-up fills: make it here, so
        # that step compiles with fullgraph=True
        unit = diagonal_normal(torch.zeros(1), torch.ones(1))
        kl_divergence(unit, unit)

    def step(self, x_t: Tensor, eps_t: Tensor, state: State,
             ctx_t: tuple[Tensor, ...]) -> tuple[StepOut, State]:
        """One time step: ``x_t (B, D)``, the noise ``eps_t (B, Z)`` of the reparameterised z_t,
        the state before it and the step's context (each ``(B, .)``) -> the step's terms and
        the next state. No data-dependent Python control flow (``torch.compile`` friendly)."""
        st = self.net.step(state, ctx_t, eps_t)
        q, p = st.posterior, st.prior
        out = StepOut(log_px=st.emission.log_prob(x_t), kl=kl_divergence(q, p),
                      log_ratio=p.log_prob(st.z) - q.log_prob(st.z))
        return out, self.net.observe(st.carry, x_t, ctx_t)

    def terms(self, x: Tensor, noise: Tensor,
              mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``log_px``, ``kl`` and ``log_ratio``, each ``(B, T)``, of ``x (B, T, D)`` from the
        model's initial state with the noise ``(B, T, Z)``; ``mask (B, T)`` tells a smoothing
        posterior each sequence's length."""
        state = self.net.init_state(x.shape[0])
        ctx = self.net.context(x, mask, state)  # each (B, T, .)
        steps = []
        for x_t, eps_t, *ctx_t in zip(x.unbind(1), noise.unbind(1), *(c.unbind(1) for c in ctx)):
            out, state = self.step(x_t, eps_t, state, tuple(ctx_t))
            steps.append(out)
        return tuple(torch.stack(column, 1) for column in zip(*steps))  # each (B, T)

    def loss(self, x: Tensor, noise: Tensor, mask: Tensor | None = None) -> Tensor:
        """The negative ELBO summed over the valid steps, averaged over sequences: the model's
        ``loss`` with the same noise."""
        log_px, kl, _ = self.terms(x, noise, mask)
        return -masked_sum(log_px - kl, mask).mean()


Literal = Literal
"""The VRNN's literal reading (the benchmark's per-step baseline): :class:`Literal`."""
Literal = Literal
"""The SRNN's literal reading: :class:`Literal`."""


@torch.no_grad()
def literal_primed_sample(model: SequenceModel, prime: Tensor, steps: int, temperature: float,
                          gen: torch.Generator) -> Tensor:
    """A primed continuation read literally: the prefix ``prime (num, P, D)`` through the
    posterior one step at a time (:meth:`vrnn.models.base.SequenceModel.literal_forward`, with the
    noise of one ``(num, P, Z)`` draw, as the forward pass takes it), then ``steps`` frames of
    the model's generation, every draw from ``gen`` in order. Returns ``(num, steps, D)``."""
    num, P, _ = prime.shape
    noise = torch.randn(num, P, model.latent_dim, generator=gen)
    state = model.literal_forward(prime, noise=noise).state
    return model.generate(state, steps, temperature, gen)

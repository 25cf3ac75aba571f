"""The step protocol: what every sequence model states once, and what the estimators read.

A family (the VRNN, the SRNN, the RNN baselines, ...) describes one time step; everything that
walks over time (the literal per-step pass, importance sampling, the particle filter, IWAE and
FIVO, unconditional and primed generation, the KL per step) is written once against these
methods. A family's fast path (the VRNN's hand-written loop, the SRNN's hoisted products)
overrides ``forward`` and is pinned by the tests to the literal pass built from its step.

The methods, with N rows (replicas or particles of B sequences), T steps, D frame size, Z latent
size (0 for a model without latent variables: its prior and posterior are the empty Gaussian,
its KL and log-ratios zero, so every estimator is exact on it):

``init_state(n) -> State``
    the state before the first step, each tensor ``(n, .)``.
``context(x, mask, state) -> tuple[Tensor, ...]``
    what the model computes from the frames without z, each ``(B, T, .)``: phi_x, a backward
    RNN's summaries of the future, a deterministic RNN over x_{<t}. Computed once per sequence
    and shared by its replicas and particles.
``step(carry, ctx_t, eps, temperature=1.0) -> Step``
    from the state before step t and that step's context (``ctx_t``, each ``(N, .)``; None when
    generating, where the posterior is not asked for), the prior p(z_t | past), the posterior
    q(z_t | past, x) (None when generating), z_t reparameterised with the standard-normal
    ``eps (N, Z)`` (from q, or from p when generating), the emission p(x_t | z_t, past) and the
    state after z_t.
``observe(carry, x_t, ctx_t) -> State``
    the state after step t from :attr:`Step.carry` and the frame ``x_t (N, D)`` (observed, or
    just generated; ``ctx_t`` None when generating).
``reorder(state, rows) -> State``
    the state of the particles ``rows (N,)``: particle i takes row ``rows[i]``'s state
    (resampling).
``window_state(x, mask, state, carry) -> State``
    the state after a whole window from the state before it and the last step's ``observe``
    (a family whose context advances part of its state over the window completes it here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor
from torch.distributions import Distribution, Independent

State = tuple[Tensor, ...]
"""A model's recurrent state, each tensor ``(N, .)``: the VRNN's ``(h, c)``, the SRNN's
``(*d_state, z_prev, x_prev)``."""


def masked_sum(values: Tensor, mask: Tensor | None) -> Tensor:
    """Sum ``values (B, T)`` over time where ``mask (B, T)`` is true -> ``(B,)``.

    The one reduction over time in the package: padded steps of a ragged batch contribute nothing,
    so a sequence's loss is the same alone and padded inside a longer batch.
    """
    if mask is None:
        return values.sum(1)
    return (values * mask.to(values.dtype)).sum(1)


class Step(NamedTuple):
    """One time step of a model, N rows (see the module's notes)."""

    prior: Independent
    """p(z_t | past): batch ``(N,)``, event ``(Z,)``."""
    posterior: Independent | None
    """q(z_t | past, x): batch ``(N,)``, event ``(Z,)``; None when generating."""
    z: Tensor
    """z_t ``(N, Z)``, reparameterised from the posterior (generating: from the prior)."""
    emission: Distribution
    """p(x_t | z_t, past): batch ``(N,)`` over frames ``(D,)``."""
    carry: tuple[Tensor, ...]
    """The state after z_t, before x_t is folded in by ``observe``."""


@dataclass
class StepTerms:
    """Per-step terms of one pass over a batch; every tensor is ``(B, T)`` unless noted.

    ``log_px``: log p(x_t | z_{<=t}, x_{<t}); ``kl``: KL(q(z_t | .) || p(z_t | .)) in closed form
    (zeros without latents); ``log_pz``/``log_qz``: log-densities of the sampled z_t under prior
    and posterior (for importance sampling; None unless asked); ``state``: the recurrent state
    after the last step (for truncated BPTT); ``latents``: optional dict of ``(B, T, Z)`` tensors
    ``z``, ``enc_loc``, ``enc_scale``, ``prior_loc``, ``prior_scale``, and a family's own
    (the VRNN's ``h`` (B, T, H): h_{t-1}; the SRNN's ``d`` and ``a``).
    """

    log_px: Tensor
    kl: Tensor
    state: State
    log_pz: Tensor | None = None
    log_qz: Tensor | None = None
    latents: dict[str, Tensor] | None = None

    def elbo(self, mask: Tensor | None = None, kl_weight: float = 1.0) -> Tensor:
        """Per-sequence ELBO (Eq. 11 of Chung et al.) summed over valid steps -> ``(B,)``."""
        return masked_sum(self.log_px - kl_weight * self.kl, mask)

    def log_weights(self, mask: Tensor | None = None) -> Tensor:
        """Each row's log importance weight, ``sum_t log p(x_t | .) + log p(z_t | .) -
        log q(z_t | .)`` over the valid steps -> ``(B,)`` (needs ``sample_terms``)."""
        return masked_sum(self.log_px + self.log_pz - self.log_qz, mask)

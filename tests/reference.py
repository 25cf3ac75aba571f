"""The literal per-step VRNN of the paper, kept to pin the fast path in ``vrnn.model`` to it.

Every network is called inside the loop over time on the model's own modules, as public ports do,
with the library cells (``nn.LSTMCell`` / ``nn.GRUCell``) rather than the fused gate arithmetic
of the fast path.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from vrnn.model import VRNN


def reference_terms(model: VRNN, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-step ``log_px (B, T)``, ``kl (B, T)`` and ``log_pz - log_qz (B, T)`` of ``x (B, T, D)``
    with the reparameterisation noise ``(B, T, Z)``."""
    B, T, _ = x.shape
    state = model.init_state(B)
    log_px, kl, log_ratio = [], [], []
    for t in range(T):
        h = state[0]
        fx = model.phi_x(x[:, t])  # Eq. 9 input
        loc, scale = model.encoder(torch.cat([fx, h], -1))
        q = Independent(Normal(loc, scale), 1)
        p = model.prior_dist(h)  # Eq. 5
        z = loc + scale * noise[:, t]
        fz = model.phi_z(z)
        px = model.decoder(torch.cat([fz, h], -1))  # Eq. 6
        log_px.append(px.log_prob(x[:, t]))
        kl.append(kl_divergence(q, p))
        log_ratio.append(p.log_prob(z) - q.log_prob(z))
        state = model.cell_step(torch.cat([fx, fz], -1), state)  # Eq. 7
    return torch.stack(log_px, 1), torch.stack(kl, 1), torch.stack(log_ratio, 1)

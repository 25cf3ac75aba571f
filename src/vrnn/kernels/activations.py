"""The positive scale of every Gaussian layer, shared by the models and the fast loops."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def positive_scale(raw: Tensor, min_scale: float) -> Tensor:
    """Standard deviation from an unconstrained output: ``softplus(raw) + min_scale``."""
    return F.softplus(raw) + min_scale

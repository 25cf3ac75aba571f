"""The parts both filtering loops share (:mod:`vrnn.kernels.filtering` runs them, with autograd or
with the hand-written backward of :mod:`vrnn.kernels.filtering_backward`): the weights the loop
reads, its static facts, the activations kept for the backward pass, their step-major buffers, what
the loop returns, and the gates of Eq. 7, stated once.

Notation as in :mod:`vrnn.kernels.filtering`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

Pair = tuple[Tensor, Tensor]
"""A linear layer's ``(weight (out, in), bias (out,))``."""


class LoopWeights(NamedTuple):
    """The weights the filtering loop reads, in the model's own tensors (no copies)."""

    encoder: tuple[Pair, ...]
    """phi_enc's ReLU layers; the first reads ``[phi_x(x_t), h_{t-1}]``: ``(E1, X + H)``."""
    head: Pair
    """phi_enc's Gaussian layer ``(2Z, .)``: rows of the loc, then of the raw scale."""
    phi_z: tuple[Pair, ...]
    """phi_z's ReLU layers (none: the identity)."""
    cell: tuple[Tensor, Tensor, Tensor, Tensor]
    """The cell's ``W_ih (G, X + F), W_hh (G, H), b_ih, b_hh (G,)``, library gate order."""

    def flat(self) -> tuple[Tensor, ...]:
        """Every tensor in order: encoder, head, phi_z (weight then bias), then the cell."""
        pairs = (*self.encoder, self.head, *self.phi_z)
        return (*(t for pair in pairs for t in pair), *self.cell)

    @classmethod
    def from_flat(cls, tensors: tuple[Tensor, ...], n_enc: int, n_phi_z: int) -> LoopWeights:
        """The inverse of :meth:`flat`, given the number of encoder and phi_z layers."""
        pairs = [tuple(tensors[i:i + 2]) for i in range(0, 2 * (n_enc + 1 + n_phi_z), 2)]
        return cls(tuple(pairs[:n_enc]), pairs[n_enc], tuple(pairs[n_enc + 1:]),
                   tuple(tensors[-4:]))


@dataclass(frozen=True)
class LoopSpec:
    """Static facts of the filtering loop: the cell, layer counts, the scale floor, replicas."""

    lstm: bool
    n_enc: int
    n_phi_z: int
    min_scale: float
    replicas: int = 1
    product: torch.dtype | None = None
    """The dtype of every product, forward and backward (bfloat16), or None: float32."""


def product_weights(weights: LoopWeights, dtype: torch.dtype | None) -> LoopWeights:
    """``weights`` with every matrix in the products' ``dtype``, cast once per pass (the
    biases stay float32: they are added to float32 results); ``weights`` itself for None."""
    if dtype is None:
        return weights

    def pairs(layers: tuple[Pair, ...]) -> tuple[Pair, ...]:
        return tuple((w.to(dtype), b) for w, b in layers)
    w_ih, w_hh, b_ih, b_hh = weights.cell
    return LoopWeights(encoder=pairs(weights.encoder), head=pairs((weights.head,))[0],
                       phi_z=pairs(weights.phi_z),
                       cell=(w_ih.to(dtype), w_hh.to(dtype), b_ih, b_hh))


def step_major(n: int, t: int, width: int, like: Tensor, dtype: torch.dtype | None) -> Tensor:
    """An empty ``(n, t, width)`` buffer laid out step-major, as ``(t, n, width)`` in memory
    (``like``'s device; its dtype unless ``dtype``): the ``[:, t]`` slice each step reads and
    writes is one contiguous block, not n rows a whole sequence apart, which made the loop's
    small elementwise operations wait on memory; the weight gradients read the buffers as
    ``(t * n, width)`` views."""
    return torch.empty(t, n, width, dtype=dtype or like.dtype,
                       device=like.device).transpose(0, 1)


class Saved(NamedTuple):
    """The forward activations the backward pass reads; per-step ones are ``(N, T, .)``."""

    h_prev: Tensor
    h_last: Tensor
    enc_out: Tensor
    scale: Tensor
    z: Tensor
    gates: Tensor
    """LSTM (i, f, g, o) or GRU (r, u, n) activations, ``(N, T, G)``."""
    a_enc: tuple[Tensor, ...]
    a_z: tuple[Tensor, ...]
    h_low: Tensor | None
    """h_{t-1} in the products' dtype ``(N, T, H)`` as the step's product read it, kept for
    the weight gradient (None in float32)."""
    cell_extra: tuple[Tensor, ...]
    """LSTM: c_t and tanh(c_t); GRU: the hidden-side n pre-activation; each ``(N, T, H)``."""

    def pack(self) -> tuple[Tensor, ...]:
        return (*self[:6], *self.a_enc, *self.a_z, self.h_low, *self.cell_extra)

    @classmethod
    def unpack(cls, spec: LoopSpec, tensors: tuple[Tensor, ...]) -> Saved:
        k = 6 + spec.n_enc
        m = k + spec.n_phi_z
        return cls(*tensors[:6], tuple(tensors[6:k]), tuple(tensors[k:m]), tensors[m],
                   tuple(tensors[m + 1:]))


class LoopOutputs(NamedTuple):
    """What the filtering loop returns, hand-written or left to autograd; per-step tensors are
    ``(N, T, .)``, step-major. Its backward pass receives the gradients with respect to them in
    the same fields (None: no gradient flows into that output)."""

    h_prev: Tensor
    """``(N, T, H)``: h_{t-1} of every step."""
    z: Tensor
    """``(N, T, Z)``: the reparameterised samples z_t = loc + scale * eps_t."""
    phi_z: Tensor | None
    """``(N, T, F)``: phi_z(z_t); None when phi_z is the identity (z_t itself, in ``z``)."""
    enc_out: Tensor
    """``(N, T, 2Z)``: the encoder's Gaussian layer, the loc then the raw scale."""
    scale: Tensor
    """``(N, T, Z)``: the encoder's standard deviation, softplus(raw scale) + min_scale."""
    h: Tensor
    """``(N, H)``: h after the last step."""
    cell: Tensor | None
    """``(N, H)``: the LSTM's c after the last step; None for a GRU."""


# -- the gates of Eq. 7, stated once --------------------------------------------------------------


def _cols(buffer: Tensor | None, start: int, stop: int) -> Tensor | None:
    return None if buffer is None else buffer[:, start:stop]


def lstm_gates(pre: Tensor, cell_prev: Tensor, *, act: Tensor | None = None,
               cell_out: Tensor | None = None, tanh_out: Tensor | None = None,
               h_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The LSTM update from its gate pre-activations ``pre (N, 4H)`` in the library's order
    (i, f, g, o) and ``cell_prev (N, H)`` -> ``h_t, c_t``, each ``(N, H)``:
    c_t = sigma(f) c_{t-1} + sigma(i) tanh(g), h_t = sigma(o) tanh(c_t).

    The optional buffers receive the gate activations ``(N, 4H)``, c_t, tanh(c_t) and h_t (the
    hand-written loop keeps them for its backward pass); without them autograd can
    differentiate the function.
    """
    H = cell_prev.shape[-1]
    in_forget = torch.sigmoid(pre[:, :2 * H], out=_cols(act, 0, 2 * H))
    g = torch.tanh(pre[:, 2 * H:3 * H], out=_cols(act, 2 * H, 3 * H))
    o = torch.sigmoid(pre[:, 3 * H:], out=_cols(act, 3 * H, 4 * H))
    i, f = in_forget.chunk(2, 1)
    cell = torch.mul(f, cell_prev, out=cell_out).addcmul_(i, g)
    h = torch.mul(o, torch.tanh(cell, out=tanh_out), out=h_out)
    return h, cell


def gru_gates(gi: Tensor, gh: Tensor, h_prev: Tensor, *, act: Tensor | None = None,
              h_out: Tensor | None = None) -> Tensor:
    """The GRU update from its input-side ``gi (N, 3H)`` and hidden-side ``gh (N, 3H)``
    pre-activations (library order r, u, n; ``gh`` holds b_hh) and ``h_prev (N, H)`` -> h_t:
    n = tanh(gi_n + r gh_n), h_t = (1 - u) n + u h_{t-1}.

    The optional buffers receive the activations ``(N, 3H)`` (r, u, n) and h_t.
    """
    H = h_prev.shape[-1]
    reset_update = torch.sigmoid(gi[:, :2 * H] + gh[:, :2 * H], out=_cols(act, 0, 2 * H))
    r, u = reset_update.chunk(2, 1)
    n = torch.tanh(torch.addcmul(gi[:, 2 * H:], r, gh[:, 2 * H:]), out=_cols(act, 2 * H, 3 * H))
    return torch.addcmul(n, h_prev - n, u, out=h_out)

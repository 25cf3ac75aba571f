"""The hand-written backward pass of the filtering loop (:mod:`vrnn.kernels.filtering`): the loop
backwards over time for the activations (B rows per product), then every weight gradient as one
product over all N * T rows. Both take the loop's weights already in the products' dtype
(:func:`vrnn.kernels.filtering_parts.product_weights`, cast once per backward pass by the caller).

Notation as in :mod:`vrnn.kernels.filtering`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vrnn.kernels.filtering_parts import LoopOutputs, LoopSpec, LoopWeights, Saved, step_major
from vrnn.kernels.precision import Factor, addmm, low, mm


class PreGrads(NamedTuple):
    """Gradients with respect to the loop's pre-activations, each ``(N, T, .)``."""

    hw: Tensor
    """Of the fused product with h_{t-1}: ``(N, T, E1 + G)``."""
    enc: list[Tensor]
    """Of each encoder layer (the first is a view of ``hw``)."""
    head: Tensor
    """Of the encoder's Gaussian layer ``(N, T, 2Z)``."""
    phi_z: list[Tensor]
    cell_in: Tensor
    """Of the cell's input-side product ``(N, T, G)`` (LSTM: a view of ``hw``)."""
    hw_low: Tensor | None = None
    """``hw`` in the products' dtype, as the step's product read it (None in float32)."""
    cell_in_low: Tensor | None = None
    """``cell_in`` in the products' dtype (a view of ``hw_low`` for an LSTM; None in float32)."""


def lstm_step_back(act: Tensor, tanh_c: Tensor, cell_prev: Tensor, dh: Tensor, dcell: Tensor,
                    g_pre: Tensor) -> None:
    """One LSTM step backwards: d pre-activations into ``g_pre (N, 4H)``; ``dcell`` (d c_t on
    entry) becomes d c_{t-1} in place."""
    H = dh.shape[1]
    i, f, g, o = act.chunk(4, 1)
    gi, gf, gg, go = g_pre.chunk(4, 1)
    torch.mul(dh, tanh_c, out=go)
    dcell.addcmul_(dh * o, 1.0 - tanh_c * tanh_c)
    torch.mul(dcell, g, out=gi)
    torch.mul(dcell, cell_prev, out=gf)
    torch.mul(dcell, i, out=gg)
    # sigmoid' = (1 - y) y, not y - y^2, which cancels where a gate saturates
    deriv = torch.rsub(act, 1.0).mul_(act)  # for i, f and o ...
    torch.mul(g, g, out=deriv[:, 2 * H:3 * H]).neg_().add_(1.0)  # ... tanh' for g
    g_pre.mul_(deriv)
    dcell.mul_(f)


def gru_step_back(act: Tensor, gh_n: Tensor, h_prev: Tensor, dh: Tensor, g_in: Tensor,
                   g_hid: Tensor) -> Tensor:
    """One GRU step backwards: d pre-activations of the input side into ``g_in (N, 3H)`` and of
    the hidden side into ``g_hid``; returns the part of d h_{t-1} that skips the products."""
    r, u, n = act.chunk(3, 1)
    gr, gu, gn = g_in.chunk(3, 1)
    hr, hu, hn = g_hid.chunk(3, 1)
    torch.mul(dh, 1.0 - u, out=gn).mul_(1.0 - n * n)  # d n pre-activation
    torch.mul(dh, h_prev - n, out=gu).mul_((1.0 - u) * u)  # not u - u^2: see the LSTM
    torch.mul(gn, gh_n, out=gr).mul_((1.0 - r) * r)
    hr.copy_(gr)
    hu.copy_(gu)
    torch.mul(gn, r, out=hn)
    return dh * u


def backward_through_time(spec: LoopSpec, s: Saved, noise: Tensor, cell0: Tensor,
                           weights: LoopWeights, grads: LoopOutputs,
                           ancestors: list[Tensor | None] | None = None):
    """The loop backwards over time for the activations: returns the pre-activation gradients
    of every step (:class:`PreGrads`) and d h_0, d c_0. ``grads``: the gradients with respect to
    the loop's outputs, field by field (None: none flows into that output). ``ancestors``: the
    rows the forward pass's particle filter reordered the state by after each step (None, or
    None at a step: not reordered); the gradient of a reordered state goes back to the rows it
    was copied from (summed where a row was copied several times)."""
    lo = spec.product
    (w_e1, _), *enc_rest = weights.encoder
    w_head, _ = weights.head
    w_ih, w_hh, _, _ = weights.cell
    N, T, Z = noise.shape
    G, H = w_hh.shape
    E1 = w_e1.shape[0]
    X = w_e1.shape[1] - H
    w_h = torch.cat([w_e1[:, X:], w_hh])  # (E1 + G, H)
    w_iz = w_ih[:, X:]
    f_h, f_iz, f_head = Factor(w_h, lo, N), Factor(w_iz, lo, N), Factor(w_head, lo, N)
    f_enc = [Factor(w, lo, N) for w, _ in enc_rest]
    f_z = [Factor(w, lo, N) for w, _ in weights.phi_z]

    def or_zeros(g: Tensor | None, like: Tensor) -> Tensor:
        return torch.zeros_like(like) if g is None else g

    d_hprev, d_z = or_zeros(grads.h_prev, s.h_prev), or_zeros(grads.z, s.z)
    d_enc_out, d_scale = or_zeros(grads.enc_out, s.enc_out), or_zeros(grads.scale, s.scale)
    d_fz = or_zeros(grads.phi_z, s.a_z[-1]) if weights.phi_z else None
    dh = or_zeros(grads.h, s.h_last).clone()
    dcell = or_zeros(grads.cell, s.h_last).clone() if spec.lstm else None

    def steps(n: int, t: int, width: int, dtype: torch.dtype | None = None) -> Tensor:
        return step_major(n, t, width, noise, dtype)
    g_hw = steps(N, T, E1 + G)
    g = PreGrads(hw=g_hw, enc=[g_hw[..., :E1]] + [steps(N, T, w.shape[0]) for w, _ in enc_rest],
                  head=steps(N, T, 2 * Z),
                  phi_z=[steps(N, T, w.shape[0]) for w, _ in weights.phi_z],
                  cell_in=g_hw[..., E1:] if spec.lstm else steps(N, T, G))
    if lo is not None:  # the pre-activation gradients of the two big products, cast once
        hw_low = steps(N, T, E1 + G, lo)
        # the first encoder layer's gradient is a product's output (rounded to bf16 on CPU)
        # masked by its ReLU: written straight into its bf16 slot, no float32 copy is needed
        g = g._replace(hw_low=hw_low, enc=[hw_low[..., :E1], *g.enc[1:]],
                       cell_in_low=hw_low[..., E1:] if spec.lstm
                       else steps(N, T, G, lo))
    d_softplus = torch.sigmoid(s.enc_out[..., Z:])  # softplus'(raw), (N, T, Z)

    def reordered(t: int) -> Tensor | None:  # the rows step t's state was copied from
        return None if not ancestors or t < 0 else ancestors[t]
    for t in reversed(range(T)):
        d_in = g.cell_in[:, t]
        d_in_low = d_in  # what the products with w_iz read
        if spec.lstm:
            cells, tanh_c = s.cell_extra
            cell_prev = cells[:, t - 1] if t > 0 else cell0
            if reordered(t - 1) is not None:  # c_{t-1} as step t read it
                cell_prev = cell_prev[reordered(t - 1)]
            lstm_step_back(s.gates[:, t], tanh_c[:, t], cell_prev, dh, dcell, d_in)
        else:
            dh_direct = gru_step_back(s.gates[:, t], s.cell_extra[0][:, t], s.h_prev[:, t], dh,
                                       d_in, g_hw[:, t, E1:])
        if lo is not None:  # cast once, for the products here and the weight gradient
            d_in_low = g.cell_in_low[:, t].copy_(d_in)
        # phi_z and the reparameterisation, backwards
        if weights.phi_z:
            gz = f_iz.addmm(d_fz[:, t], d_in_low, out=g.phi_z[-1][:, t])  # d phi_z(z_t)
            relu_mask_(gz, s.a_z[-1][:, t])
            for i in reversed(range(spec.n_phi_z - 1)):
                gz = f_z[i + 1].mm(gz, out=g.phi_z[i][:, t])
                relu_mask_(gz, s.a_z[i][:, t])
            dz = f_z[0].addmm(d_z[:, t], gz)  # (N, Z)
        else:
            dz = f_iz.addmm(d_z[:, t], d_in_low)
        gh = g.head[:, t]
        torch.add(d_enc_out[:, t, :Z], dz, out=gh[:, :Z])
        torch.addcmul(d_scale[:, t], dz, noise[:, t], out=gh[:, Z:]).mul_(
            d_softplus[:, t]).add_(d_enc_out[:, t, Z:])
        # the encoder, backwards
        ge = relu_mask_(f_head.mm(gh, out=g.enc[-1][:, t]), s.a_enc[-1][:, t])
        for i in reversed(range(spec.n_enc - 1)):
            ge = relu_mask_(f_enc[i].mm(ge, out=g.enc[i][:, t]), s.a_enc[i][:, t])
        # d h_{t-1}: both products with h_{t-1} in one
        g_hw_t = g_hw[:, t]
        if lo is not None:  # the encoder's and (LSTM) the cell's parts are in hw_low already
            g_hw_t = g.hw_low[:, t]
            if not spec.lstm:
                g_hw_t[:, E1:].copy_(g_hw[:, t, E1:])
        dh = f_h.addmm(d_hprev[:, t], g_hw_t)
        if not spec.lstm:
            dh.add_(dh_direct)
        rows = reordered(t - 1)
        if rows is not None:  # from the copies step t read back to the states of step t - 1
            dh = torch.zeros_like(dh).index_add_(0, rows, dh)
            if spec.lstm:
                dcell = torch.zeros_like(dcell).index_add_(0, rows, dcell)
    return g, dh, dcell


def relu_mask_(grad: Tensor, act: Tensor) -> Tensor:
    """ReLU backward in place: zero ``grad`` where the (post-ReLU) activation is not positive."""
    return torch.ops.aten.threshold_backward.grad_input(grad, act, 0.0, grad_input=grad)


def weight_grads(spec: LoopSpec, need_feat_x: bool, s: Saved, feat_x: Tensor,
                  weights: LoopWeights, g: PreGrads) -> tuple[Tensor | None, list[Tensor]]:
    """Every weight gradient as one product over all N * T rows, in ``LoopWeights.flat()``
    order, and d phi_x(x_t) through the products computed before the loop. Each weight's
    product accumulates over the N * T rows in float32 (in the products' dtype, inside the
    kernel); each bias gradient is a float32 sum."""
    lo = spec.product
    (w_e1, _), *_ = weights.encoder
    w_ih = weights.cell[0]
    B, T, X = feat_x.shape
    E1 = w_e1.shape[0]

    def flat(v: Tensor) -> Tensor:  # (rows, T, n) -> (T * rows, n), step-major (a view)
        return v.transpose(0, 1).reshape(-1, v.shape[-1])

    def per_sequence(v: Tensor) -> Tensor:  # (R * B, T, n) -> (T * B, n): replicas summed
        if spec.replicas == 1:
            return flat(v)
        steps = v.transpose(0, 1).reshape(T, spec.replicas, B, v.shape[-1])
        return float32_sum(steps.transpose(0, 1)).reshape(T * B, -1)

    def float32_sum(v: Tensor) -> Tensor:  # over the first dimension; a bf16 v in float32
        return v.sum(0, dtype=torch.float32) if v.dtype == torch.bfloat16 else v.sum(0)

    def bias_sum(v: Tensor) -> Tensor:  # a bias gradient
        return float32_sum(flat(v))

    def prod(a: Tensor, b: Tensor) -> Tensor:  # a @ b in the products' dtype, float32 out
        return mm(a, b, lo)

    def low_or(v: Tensor, v_low: Tensor | None) -> Tensor:  # the copy cast in the loop, if any
        return flat(v if v_low is None else v_low)

    fx = low(flat(feat_x), lo)  # read by two products
    gw_h = prod(low_or(g.hw, g.hw_low).t(), low_or(s.h_prev, s.h_low))  # (E1 + G, H)
    g_enc0_x = per_sequence(g.enc[0])  # the product with phi_x(x_t) was shared by the replicas
    if spec.replicas == 1 and g.hw_low is not None:
        g_enc0_x = flat(g.hw_low[..., :E1])  # (no sum over replicas to do in bfloat16)
    d_params = [torch.cat([prod(g_enc0_x.t(), fx), gw_h[:E1]], 1), bias_sum(g.enc[0])]
    for i in range(1, spec.n_enc):
        gi = flat(g.enc[i])
        d_params += [prod(gi.t(), flat(s.a_enc[i - 1])), gi.sum(0)]
    gh = flat(g.head)
    d_params += [prod(gh.t(), flat(s.a_enc[-1])), gh.sum(0)]
    for i in range(spec.n_phi_z):
        gz = flat(g.phi_z[i])
        inp = flat(s.z) if i == 0 else flat(s.a_z[i - 1])
        d_params += [prod(gz.t(), inp), gz.sum(0)]
    g_cell = flat(g.cell_in)
    g_cell_x = per_sequence(g.cell_in)
    g_cell_low = low_or(g.cell_in, g.cell_in_low)
    if spec.replicas == 1:
        g_cell_x = g_cell_low
    feat_z = flat(s.a_z[-1]) if spec.n_phi_z else flat(s.z)
    d_w_ih = torch.cat([prod(g_cell_x.t(), fx), prod(g_cell_low.t(), feat_z)], 1)
    d_b_ih = g_cell.sum(0)
    d_b_hh = d_b_ih if spec.lstm else flat(g.hw[..., E1:]).sum(0)
    d_params += [d_w_ih, gw_h[E1:], d_b_ih, d_b_hh]
    d_feat_x = None
    if need_feat_x:  # through the input-side products computed before the loop
        d_steps = addmm(prod(g_enc0_x, w_e1[:, :X]), g_cell_x, w_ih[:, :X], lo)  # (T * B, X)
        d_feat_x = d_steps.view(T, B, X).transpose(0, 1)
    return d_feat_x, d_params

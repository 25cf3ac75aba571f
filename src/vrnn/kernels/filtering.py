"""The VRNN's filtering loop: Eq. 7-9 over all T steps, with a hand-written backward pass.

Only four things feed the recurrence: the encoder (Eq. 9), the reparameterised sample, phi_z and
the cell (Eq. 7). :func:`filtering_loop` runs just those inside the loop over time, on the layer
weights that :meth:`vrnn.models.vrnn.VRNN.loop_weights` hands it; the model runs phi_x before it and
the prior, decoder, KL and likelihood after it, batched over all steps.

Why by hand: autograd differentiates the loop step by step, so every weight used inside it gets
its gradient as T thin products (B rows each) accumulated into a full-size matrix per step,
memory-bound work that took a quarter of a speech-sized training step. Here the backward loop
carries only what the recurrence needs (gradients with respect to activations, B rows per
product) and stores the per-step gradients of every pre-activation; each weight gradient is then
one product over all B * T rows, written once, at the machine's full matmul rate. The input-side
halves of the encoder's first layer and of the cell (the products with phi_x(x_t)) are computed
before the loop, and the two products with h_{t-1} share one matrix. Every per-step result is
written into a preallocated ``(N, T, .)`` buffer, laid out step-major (each step's slice one
contiguous block), so the loop allocates little and reads and writes memory in order.

The same loop differentiated by autograd (``hand_written=False``) is kept as the benchmark's
ablation and for double backward; both use the one statement of the gates,
:func:`lstm_gates` and :func:`gru_gates`. This module holds the forward passes and the entry
point; what both loops share is in :mod:`vrnn.kernels.filtering_parts`, the hand-written backward in
:mod:`vrnn.kernels.filtering_backward`.

Notation as in :mod:`vrnn.models.vrnn` (B sequences, T steps, Z latent size, H units), and here:
R replicas of each sequence and N = R * B rows; X, F the widths of phi_x and phi_z; E1 the width
of the encoder's first layer; G the cell's gate rows (4H for an LSTM, 3H for a GRU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from vrnn.kernels import filtering_backward as back
from vrnn.kernels.activations import positive_scale
from vrnn.kernels.filtering_parts import (
    LoopOutputs,
    LoopSpec,
    LoopWeights,
    Pair,
    Saved,
    gru_gates,
    lstm_gates,
    product_weights,
    step_major,
)
from vrnn.kernels.precision import Factor, linear, low, product_dtype

__all__ = ["Filtered", "LoopWeights", "Pair", "Resample", "filtering_loop", "gru_gates",
           "lstm_gates"]

Resample = Callable[[int, Tensor, Tensor, Tensor, Tensor, Tensor], "Tensor | None"]
"""The particle filter's hook: called after step t's cell as ``resample(t, h_prev, z, phi_z,
scale, eps)`` (each ``(N, .)``: the h_{t-1} step t read, z_t, phi_z(z_t), the encoder's scale and
the noise of z_t), it returns None, or ``rows (N,)`` (long): row i then continues from row
``rows[i]``'s state (h_t, and c_t for an LSTM), the ancestors of a resampling step. Never at the
last step. The choice is not differentiated (FIVO drops the resampling's score-function term):
the backward pass sends each row's state gradient back to its ancestor (a scatter-add)."""


class Filtered(NamedTuple):
    """What the filtering loop returns; every tensor has N = replicas * B rows."""

    h_prev: Tensor
    """``(N, T, H)``: h_{t-1} of every step."""
    z: Tensor
    """``(N, T, Z)``: the reparameterised samples z_t = loc + scale * eps_t."""
    phi_z: Tensor
    """``(N, T, F)``: phi_z(z_t) (z itself when phi_z is the identity)."""
    loc: Tensor
    """``(N, T, Z)``: the encoder's mean."""
    scale: Tensor
    """``(N, T, Z)``: the encoder's standard deviation."""
    state: tuple[Tensor, ...]
    """The state after the last step: ``(h, c)`` or ``(h,)``, each ``(N, H)``."""


def filtering_loop(feat_x: Tensor, noise: Tensor, state: tuple[Tensor, ...],
                   weights: LoopWeights, *, min_scale: float, replicas: int = 1,
                   hand_written: bool = True, resample: Resample | None = None) -> Filtered:
    """Eq. 7-9 over all steps: the filtering posterior and the recurrence it drives.

    Args:
        feat_x: ``(B, T, X)`` phi_x(x_t) of every step, computed before the loop.
        noise: ``(N, T, Z)`` standard-normal draws of the reparameterisation.
        state: the state before the first step, ``(h, c)`` (LSTM) or ``(h,)`` (GRU), ``(N, H)``.
        weights: the encoder's, phi_z's and the cell's weights.
        min_scale: the floor of the encoder's softplus scale.
        replicas: each sequence runs this many times (row ``r * B + b``) with its own noise;
            the products with phi_x(x_t) are computed once per sequence and shared.
        hand_written: differentiate with the hand-written backward; False: autograd, step by
            step (same numbers, slower; supports double backward).
        resample: the particle filter's hook (:data:`Resample`): after each step it may reorder
            the N rows' state by ancestor (rows stay within their sequence: row ``r * B + b``
            takes a row ``r' * B + b``). Every returned per-step tensor is in its step's own row
            order; ``h_prev`` holds h_{t-1} as step t read it, after any reordering.
    """
    lstm = len(state) == 2
    device = feat_x.device.type
    # bf16 under vrnn.kernels.precision.autocast, else None (float32)
    product = product_dtype(device)
    spec = LoopSpec(lstm=lstm, n_enc=len(weights.encoder), n_phi_z=len(weights.phi_z),
                     min_scale=min_scale, replicas=replicas, product=product)
    h0, cell0 = state[0], state[1] if lstm else None
    params = weights.flat()
    # the loop casts its own products (autocast cannot write into its float32 buffers)
    with (torch.autocast(device, enabled=False) if product is not None
          else contextlib.nullcontext()):
        if not hand_written:
            out = _autograd_loop(spec, feat_x, noise, h0, cell0, weights, resample)
        elif torch.is_grad_enabled() and any(t.requires_grad for t in (feat_x, *state, *params)):
            # apply hands back a plain tuple, in the fields' order
            out = LoopOutputs(*_FilteringLoop.apply(spec, resample, feat_x, noise, h0, cell0,
                                                    *params))
        else:  # inference: nothing kept for a backward pass
            out, _, _ = _forward(spec, feat_x, noise, h0, cell0, weights, keep=False,
                                 resample=resample)
    Z = noise.shape[-1]
    return Filtered(h_prev=out.h_prev, z=out.z, phi_z=out.z if out.phi_z is None else out.phi_z,
                    loc=out.enc_out[..., :Z], scale=out.scale,
                    state=(out.h, out.cell) if lstm else (out.h,))


# -- the loop differentiated by autograd ----------------------------------------------------------


def _autograd_loop(spec: LoopSpec, feat_x: Tensor, noise: Tensor, h0: Tensor,
                   cell0: Tensor | None, weights: LoopWeights,
                   resample: Resample | None = None) -> LoopOutputs:
    """The loop of :class:`_FilteringLoop` with the same products hoisted and fused, left to
    autograd: the readable statement of what the hand-written pass computes.

    In bf16 each step casts the weights afresh (no bf16 copy made once): a copy shared by the
    T steps would sum its T gradients in bfloat16; per-step casts send each step's gradient
    back to float32, where autograd sums them."""
    lo = spec.product
    (w_e1, b_e1), *enc_rest = weights.encoder
    w_head, b_head = weights.head
    w_ih, w_hh, b_ih, b_hh = weights.cell
    B, _, X = feat_x.shape
    E1 = w_e1.shape[0]

    def tiled_add(rows: Tensor, per_seq: Tensor) -> Tensor:  # (R * B, n) + (B, n)
        return (rows.view(spec.replicas, B, -1) + per_seq).view(rows.shape)

    fx = low(feat_x, lo).transpose(0, 1).contiguous()  # (T, B, X), as the hand-written pass
    enc_x = linear(fx, w_e1[:, :X], b_e1, lo)  # (T, B, E1)
    cell_x = linear(fx, w_ih[:, :X], b_ih + b_hh if spec.lstm else b_ih, lo)  # (T, B, G)
    w_h = torch.cat([w_e1[:, X:], w_hh])  # (E1 + G, H)
    b_h = None if spec.lstm else torch.cat([b_hh.new_zeros(E1), b_hh])  # GRU: b_hn inside r*()
    w_iz = w_ih[:, X:]  # (G, F)

    # unbind(1) rather than [:, t] indexing, whose backward writes a full-size zero tensor per
    # step and makes the cost quadratic in T
    h, cell = h0, cell0
    hs, zs, fzs, outs, scales = [], [], [], [], []
    steps = zip(enc_x.unbind(0), cell_x.unbind(0), noise.unbind(1))
    for t, (enc_x_t, cell_x_t, eps_t) in enumerate(steps):
        hs.append(h)
        enc_h, cell_h = linear(h, w_h, b_h, lo).split([E1, w_hh.shape[0]], 1)  # one product
        a = F.relu(tiled_add(enc_h, enc_x_t))  # Eq. 9: the encoder
        for w, b in enc_rest:
            a = F.relu(linear(a, w, b, lo))
        enc_out = linear(a, w_head, b_head, lo)  # (N, 2Z): loc, raw scale
        loc, raw = enc_out.chunk(2, 1)
        scale = positive_scale(raw, spec.min_scale)
        z = loc + scale * eps_t  # (N, Z), reparameterised
        fz = z
        for w, b in weights.phi_z:
            fz = F.relu(linear(fz, w, b, lo))
        gi = tiled_add(linear(fz, w_iz, None, lo), cell_x_t)  # Eq. 7: input side of the cell
        if spec.lstm:
            h, cell = lstm_gates(gi + cell_h, cell)
        else:
            h = gru_gates(gi, cell_h, h)
        rows = None if resample is None else resample(t, hs[-1], z, fz, scale, eps_t)
        if rows is not None:  # the particles continue from their ancestors' states
            h, cell = h[rows], (cell[rows] if spec.lstm else None)
        zs.append(z)
        fzs.append(fz)
        outs.append(enc_out)
        scales.append(scale)
    # each (N, T, .), step-major in memory as the hand-written pass returns them (a different
    # layout would change which kernels the model's batched products after the loop run)
    h_prev, z, fz, enc_out, scale = (torch.stack(v, 0).transpose(0, 1)
                                     for v in (hs, zs, fzs, outs, scales))
    return LoopOutputs(h_prev=h_prev, z=z, phi_z=fz if weights.phi_z else None, enc_out=enc_out,
                       scale=scale, h=h, cell=cell)


# -- the hand-written pass ------------------------------------------------------------------------


class _FilteringLoop(torch.autograd.Function):
    """The filtering loop with its hand-written backward pass (the "custom cell").

    Inputs: ``spec``, ``resample`` (the particle filter's hook, or None), ``feat_x (B, T, X)``,
    ``noise (N, T, Z)``, ``h0 (N, H)``, ``cell0 (N, H)`` (None for a GRU), then
    ``LoopWeights.flat()``. Outputs: the fields of :class:`LoopOutputs`,
    ``h_prev (N, T, H)``, ``z (N, T, Z)``, ``phi_z (N, T, F)`` (None when phi_z is the identity),
    ``enc_out (N, T, 2Z)`` (the encoder's loc and raw scale), ``scale (N, T, Z)``, and the final
    ``h``, ``cell`` (None: GRU); ``apply`` returns them as a plain tuple.
    """

    @staticmethod
    def forward(ctx, spec: LoopSpec, resample: Resample | None, feat_x: Tensor, noise: Tensor,
                h0: Tensor, cell0: Tensor | None, *params: Tensor) -> LoopOutputs:
        weights = LoopWeights.from_flat(params, spec.n_enc, spec.n_phi_z)
        out, saved, ancestors = _forward(spec, feat_x, noise, h0, cell0, weights, keep=True,
                                         resample=resample)
        packed = saved.pack()
        ctx.spec, ctx.n_saved, ctx.ancestors = spec, len(packed), ancestors
        ctx.save_for_backward(*packed, feat_x, noise,
                              cell0 if cell0 is not None else h0.new_empty(0), *params)
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        spec, n = ctx.spec, ctx.n_saved
        tensors = ctx.saved_tensors
        saved = Saved.unpack(spec, tensors[:n])
        feat_x, noise, cell0 = tensors[n:n + 3]
        # the weights in the products' dtype, cast once for both halves of the backward pass
        weights = product_weights(LoopWeights.from_flat(tensors[n + 3:], spec.n_enc,
                                                        spec.n_phi_z), spec.product)
        pre, d_h0, d_cell0 = back.backward_through_time(spec, saved, noise, cell0, weights,
                                                        LoopOutputs(*grads), ctx.ancestors)
        d_feat_x, d_params = back.weight_grads(spec, ctx.needs_input_grad[2], saved, feat_x,
                                               weights, pre)
        return (None, None, d_feat_x, None, d_h0, d_cell0, *d_params)


def _forward(spec: LoopSpec, feat_x: Tensor, noise: Tensor, h0: Tensor, cell0: Tensor | None,
             weights: LoopWeights, keep: bool, resample: Resample | None = None
             ) -> tuple[LoopOutputs, Saved, list[Tensor | None]]:
    """The loop of :class:`_FilteringLoop`: its outputs, what the backward pass reads
    (``keep``: stored for every step; else only the per-step outputs are whole), and the
    ancestors ``resample`` chose after each step (None where it kept the rows as they were)."""
    lo = spec.product
    weights = product_weights(weights, lo)
    (w_e1, b_e1), *enc_rest = weights.encoder
    w_head, b_head = weights.head
    w_ih, w_hh, b_ih, b_hh = weights.cell
    B, T, X = feat_x.shape
    N, _, Z = noise.shape
    G, H = w_hh.shape
    E1 = w_e1.shape[0]
    new = feat_x.new_empty

    def steps(n: int, t: int, width: int, dtype: torch.dtype | None = None) -> Tensor:
        return step_major(n, t, width, feat_x, dtype)

    def tiled(v: Tensor) -> Tensor:  # (R * B, n) -> (R, B, n), to add a per-sequence term
        return v.view(spec.replicas, B, v.shape[-1])
    kept = T if keep else 1  # steps of backward-only buffers: one, overwritten, if none is kept

    # Before the loop: the input-side products with phi_x(x_t), and one matrix for both products
    # with h_{t-1} (the encoder's first layer and the cell's hidden-to-hidden weights).
    w_h = torch.cat([w_e1[:, X:], w_hh])  # (E1 + G, H)
    # step-major (T, B, .), so that each step reads one contiguous block
    fx = low(feat_x, lo).transpose(0, 1).contiguous()  # (T, B, X)
    enc_x = linear(fx, w_e1[:, :X], b_e1, lo)  # (T, B, E1)
    cell_x = linear(fx, w_ih[:, :X], b_ih + b_hh if spec.lstm else b_ih, lo)  # (T, B, G)
    b_h = None if spec.lstm else torch.cat([b_hh.new_zeros(E1), b_hh])  # GRU: b_hn inside r*()
    w_iz = w_ih[:, X:]  # (G, F)
    # every matrix the steps multiply by, prepared once (cast to bf16, and packed, in bf16)
    f_h, f_iz = Factor(w_h.t(), lo, N), Factor(w_iz.t(), lo, N)
    f_enc = [Factor(w.t(), lo, N) for w, _ in enc_rest]
    f_head = Factor(w_head.t(), lo, N)
    f_z = [Factor(w.t(), lo, N) for w, _ in weights.phi_z]

    last_z = spec.n_phi_z - 1  # phi_z's output is returned: kept at every step
    # in bf16 the encoder's ReLU outputs are kept in bf16: they are read only as the operands of
    # products (which round them to bf16 anyway) and by the ReLU masks of the backward pass
    # (rounding keeps the sign), so one cast per step is saved and nothing changes
    a_dtype = feat_x.dtype if lo is None else lo
    s = Saved(h_prev=steps(N, T, H), h_last=new(N, H), enc_out=steps(N, T, 2 * Z),
               scale=steps(N, T, Z), z=steps(N, T, Z), gates=steps(N, kept, G),
               a_enc=tuple(steps(N, kept, w.shape[0], a_dtype)
                           for w, _ in weights.encoder),
               a_z=tuple(steps(N, T if i == last_z else kept, w.shape[0])
                         for i, (w, _) in enumerate(weights.phi_z)),
               h_low=None if lo is None else steps(N, kept, H, lo),
               cell_extra=tuple(steps(N, kept, H) for _ in range(2 if spec.lstm else 1)))
    s.h_prev[:, 0] = h0
    h, cell = s.h_prev[:, 0], cell0
    ancestors: list[Tensor | None] = []
    for t in range(T):
        k = t if keep else 0
        # in bf16, h_{t-1} is cast once, for this product and the weight gradient
        h_in = h if s.h_low is None else s.h_low[:, k].copy_(h)
        # (N, E1 + G); LSTM in bf16: left in bf16, the float32 sums below read it as it is
        hw = f_h.mm(h_in, keep_low=True) if b_h is None else f_h.addmm(b_h, h_in)
        # Eq. 9: the encoder from phi_x(x_t) and h_{t-1}
        a = s.a_enc[0][:, k]
        torch.add(tiled(hw[:, :E1]), enc_x[t], out=tiled(a)).relu_()
        for i, (_, b) in enumerate(enc_rest, 1):
            a = f_enc[i - 1].addmm(b, a, out=s.a_enc[i][:, k]).relu_()
        enc_out = f_head.addmm(b_head, a, out=s.enc_out[:, t])  # (N, 2Z)
        scale = torch.add(F.softplus(enc_out[:, Z:]), spec.min_scale, out=s.scale[:, t])
        fz = torch.addcmul(enc_out[:, :Z], scale, noise[:, t], out=s.z[:, t])  # z_t
        for i, (_, b) in enumerate(weights.phi_z):
            fz = f_z[i].addmm(b, fz, out=s.a_z[i][:, t if i == last_z else k]).relu_()
        # Eq. 7: the cell
        h_out = s.h_prev[:, t + 1] if t + 1 < T else s.h_last
        if spec.lstm:
            if lo is None:
                tiled(hw[:, E1:]).add_(cell_x[t])
                pre = f_iz.addmm(hw[:, E1:], fz)  # (N, 4H)
            else:  # float32 sums of the two bf16 products and the float32 input side
                pre = torch.add(tiled(hw[:, E1:]), cell_x[t]).view(N, G)
                pre.add_(f_iz.mm(fz, keep_low=True))
            cells, tanh_c = s.cell_extra
            h, cell = lstm_gates(pre, cell, act=s.gates[:, k], cell_out=cells[:, k],
                                 tanh_out=tanh_c[:, k], h_out=h_out)
        else:
            gi = f_iz.mm(fz)  # (N, 3H) input side
            tiled(gi).add_(cell_x[t])
            gh = hw[:, E1:]  # (N, 3H) hidden side, with b_hh
            s.cell_extra[0][:, k] = gh[:, 2 * H:]
            h = gru_gates(gi, gh, h, act=s.gates[:, k], h_out=h_out)
        if resample is not None:
            rows = resample(t, s.h_prev[:, t], s.z[:, t], fz, s.scale[:, t], noise[:, t])
            if rows is not None:
                if t + 1 == T:
                    raise ValueError("the filtering loop cannot resample after its last step")
                # the particles continue from their ancestors' states; what step t kept for
                # the backward pass stays in its own row order
                h = h_out.copy_(h[rows])
                cell = cell[rows] if spec.lstm else None
            ancestors.append(rows)
    # phi_z may be the identity: phi_z(z) is then z itself, returned once (None in its slot)
    out = LoopOutputs(h_prev=s.h_prev, z=s.z, phi_z=s.a_z[-1] if weights.phi_z else None,
                      enc_out=s.enc_out, scale=s.scale, h=h, cell=cell if spec.lstm else None)
    return out, s, ancestors

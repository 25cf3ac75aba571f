"""The VRNN's filtering loop: Eq. 7-9 over all T steps, with a hand-written backward pass.

Only four things feed the recurrence: the encoder (Eq. 9), the reparameterised sample, phi_z and
the cell (Eq. 7). :func:`filtering_loop` runs just those inside the loop over time, on the layer
weights that :meth:`vrnn.model.VRNN.loop_weights` hands it; the model runs phi_x before it and
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
:func:`lstm_gates` and :func:`gru_gates`.

Notation as in :mod:`vrnn.model` (B sequences, T steps, Z latent size, H units), and here:
R replicas of each sequence and N = R * B rows; X, F the widths of phi_x and phi_z; E1 the width
of the encoder's first layer; G the cell's gate rows (4H for an LSTM, 3H for a GRU).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from vrnn.distributions import positive_scale
from vrnn.precision import Factor, addmm, linear, low, mm, product_dtype

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
                   hand_written: bool = True) -> Filtered:
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
    """
    lstm = len(state) == 2
    device = feat_x.device.type
    product = product_dtype(device)  # bf16 under vrnn.precision.autocast, else None (float32)
    spec = _LoopSpec(lstm=lstm, n_enc=len(weights.encoder), n_phi_z=len(weights.phi_z),
                     min_scale=min_scale, replicas=replicas, product=product)
    h0, cell0 = state[0], state[1] if lstm else None
    params = weights.flat()
    # the loop casts its own products (autocast cannot write into its float32 buffers)
    with (torch.autocast(device, enabled=False) if product is not None
          else contextlib.nullcontext()):
        if not hand_written:
            out = _autograd_loop(spec, feat_x, noise, h0, cell0, weights)
        elif torch.is_grad_enabled() and any(t.requires_grad for t in (feat_x, *state, *params)):
            out = _FilteringLoop.apply(spec, feat_x, noise, h0, cell0, *params)
        else:  # inference: nothing kept for a backward pass
            out, _ = _forward(spec, feat_x, noise, h0, cell0, weights, keep=False)
    h_prev, z, feat_z, enc_out, scale, h, cell = out
    Z = noise.shape[-1]
    return Filtered(h_prev=h_prev, z=z, phi_z=z if feat_z is None else feat_z,
                    loc=enc_out[..., :Z], scale=scale, state=(h, cell) if lstm else (h,))


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


# -- the loop differentiated by autograd ----------------------------------------------------------


def _autograd_loop(spec: _LoopSpec, feat_x: Tensor, noise: Tensor, h0: Tensor,
                   cell0: Tensor | None, weights: LoopWeights):
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
    for enc_x_t, cell_x_t, eps_t in zip(enc_x.unbind(0), cell_x.unbind(0), noise.unbind(1)):
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
        zs.append(z)
        fzs.append(fz)
        outs.append(enc_out)
        scales.append(scale)
    # each (N, T, .), step-major in memory as the hand-written pass returns them (a different
    # layout would change which kernels the model's batched products after the loop run)
    stacked = [torch.stack(v, 0).transpose(0, 1) for v in (hs, zs, fzs, outs, scales)]
    if not weights.phi_z:
        stacked[2] = None
    return (*stacked, h, cell)


# -- the hand-written pass ------------------------------------------------------------------------


@dataclass(frozen=True)
class _LoopSpec:
    """Static facts of the filtering loop: the cell, layer counts, the scale floor, replicas."""

    lstm: bool
    n_enc: int
    n_phi_z: int
    min_scale: float
    replicas: int = 1
    product: torch.dtype | None = None
    """The dtype of every product, forward and backward (bfloat16), or None: float32."""


def _product_weights(weights: LoopWeights, dtype: torch.dtype | None) -> LoopWeights:
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


def _step_major(n: int, t: int, width: int, like: Tensor, dtype: torch.dtype | None) -> Tensor:
    """An empty ``(n, t, width)`` buffer laid out step-major, as ``(t, n, width)`` in memory
    (``like``'s device; its dtype unless ``dtype``): the ``[:, t]`` slice each step reads and
    writes is one contiguous block, not n rows a whole sequence apart, which made the loop's
    small elementwise operations wait on memory; the weight gradients read the buffers as
    ``(t * n, width)`` views."""
    return torch.empty(t, n, width, dtype=dtype or like.dtype,
                       device=like.device).transpose(0, 1)


class _Saved(NamedTuple):
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
    def unpack(cls, spec: _LoopSpec, tensors: tuple[Tensor, ...]) -> _Saved:
        k = 6 + spec.n_enc
        m = k + spec.n_phi_z
        return cls(*tensors[:6], tuple(tensors[6:k]), tuple(tensors[k:m]), tensors[m],
                   tuple(tensors[m + 1:]))


class _FilteringLoop(torch.autograd.Function):
    """The filtering loop with its hand-written backward pass (the "custom cell").

    Inputs: ``spec``, ``feat_x (B, T, X)``, ``noise (N, T, Z)``, ``h0 (N, H)``, ``cell0 (N, H)``
    (None for a GRU), then ``LoopWeights.flat()``. Outputs: ``h_prev (N, T, H)``, ``z (N, T, Z)``,
    ``phi_z(z) (N, T, F)`` (None when phi_z is the identity), ``enc_out (N, T, 2Z)`` (the
    encoder's loc and raw scale), ``scale (N, T, Z)``, and the final ``h``, ``c`` (None: GRU).
    """

    @staticmethod
    def forward(ctx, spec: _LoopSpec, feat_x: Tensor, noise: Tensor, h0: Tensor,
                cell0: Tensor | None, *params: Tensor):
        weights = LoopWeights.from_flat(params, spec.n_enc, spec.n_phi_z)
        out, saved = _forward(spec, feat_x, noise, h0, cell0, weights, keep=True)
        packed = saved.pack()
        ctx.spec, ctx.n_saved = spec, len(packed)
        ctx.save_for_backward(*packed, feat_x, noise,
                              cell0 if cell0 is not None else h0.new_empty(0), *params)
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        spec, n = ctx.spec, ctx.n_saved
        tensors = ctx.saved_tensors
        saved = _Saved.unpack(spec, tensors[:n])
        feat_x, noise, cell0 = tensors[n:n + 3]
        weights = LoopWeights.from_flat(tensors[n + 3:], spec.n_enc, spec.n_phi_z)
        pre, d_h0, d_cell0 = _backward_through_time(spec, saved, noise, cell0, weights, grads)
        d_feat_x, d_params = _weight_grads(spec, ctx.needs_input_grad[1], saved, feat_x,
                                           weights, pre)
        return (None, d_feat_x, None, d_h0, d_cell0, *d_params)


def _forward(spec: _LoopSpec, feat_x: Tensor, noise: Tensor, h0: Tensor, cell0: Tensor | None,
             weights: LoopWeights, keep: bool):
    """The loop of :class:`_FilteringLoop`; ``keep``: store what the backward pass needs."""
    lo = spec.product
    weights = _product_weights(weights, lo)
    (w_e1, b_e1), *enc_rest = weights.encoder
    w_head, b_head = weights.head
    w_ih, w_hh, b_ih, b_hh = weights.cell
    B, T, X = feat_x.shape
    N, _, Z = noise.shape
    G, H = w_hh.shape
    E1 = w_e1.shape[0]
    new = feat_x.new_empty

    def steps(n: int, t: int, width: int, dtype: torch.dtype | None = None) -> Tensor:
        return _step_major(n, t, width, feat_x, dtype)

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
    s = _Saved(h_prev=steps(N, T, H), h_last=new(N, H), enc_out=steps(N, T, 2 * Z),
               scale=steps(N, T, Z), z=steps(N, T, Z), gates=steps(N, kept, G),
               a_enc=tuple(steps(N, kept, w.shape[0], a_dtype)
                           for w, _ in weights.encoder),
               a_z=tuple(steps(N, T if i == last_z else kept, w.shape[0])
                         for i, (w, _) in enumerate(weights.phi_z)),
               h_low=None if lo is None else steps(N, kept, H, lo),
               cell_extra=tuple(steps(N, kept, H) for _ in range(2 if spec.lstm else 1)))
    s.h_prev[:, 0] = h0
    h, cell = s.h_prev[:, 0], cell0
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
    # phi_z may be the identity: phi_z(z) is then z itself, returned once (None in its slot)
    out = (s.h_prev, s.z, s.a_z[-1] if weights.phi_z else None, s.enc_out, s.scale, h,
           cell if spec.lstm else None)
    return out, s


class _PreGrads(NamedTuple):
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


def _lstm_step_back(act: Tensor, tanh_c: Tensor, cell_prev: Tensor, dh: Tensor, dcell: Tensor,
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


def _gru_step_back(act: Tensor, gh_n: Tensor, h_prev: Tensor, dh: Tensor, g_in: Tensor,
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


def _backward_through_time(spec: _LoopSpec, s: _Saved, noise: Tensor, cell0: Tensor,
                           weights: LoopWeights, grads: tuple[Tensor | None, ...]):
    """The loop backwards over time for the activations: returns the pre-activation gradients
    of every step (:class:`_PreGrads`) and d h_0, d c_0."""
    lo = spec.product
    weights = _product_weights(weights, lo)
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

    d_hprev, d_z, d_fz, d_enc_out, d_scale, d_h, d_cell = grads
    d_hprev, d_z = or_zeros(d_hprev, s.h_prev), or_zeros(d_z, s.z)
    d_enc_out, d_scale = or_zeros(d_enc_out, s.enc_out), or_zeros(d_scale, s.scale)
    if weights.phi_z:
        d_fz = or_zeros(d_fz, s.a_z[-1])
    dh = or_zeros(d_h, s.h_last).clone()
    dcell = or_zeros(d_cell, s.h_last).clone() if spec.lstm else None

    def steps(n: int, t: int, width: int, dtype: torch.dtype | None = None) -> Tensor:
        return _step_major(n, t, width, noise, dtype)
    g_hw = steps(N, T, E1 + G)
    g = _PreGrads(hw=g_hw, enc=[g_hw[..., :E1]] + [steps(N, T, w.shape[0]) for w, _ in enc_rest],
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
    for t in reversed(range(T)):
        d_in = g.cell_in[:, t]
        d_in_low = d_in  # what the products with w_iz read
        if spec.lstm:
            cells, tanh_c = s.cell_extra
            _lstm_step_back(s.gates[:, t], tanh_c[:, t], cells[:, t - 1] if t > 0 else cell0,
                            dh, dcell, d_in)
        else:
            dh_direct = _gru_step_back(s.gates[:, t], s.cell_extra[0][:, t], s.h_prev[:, t], dh,
                                       d_in, g_hw[:, t, E1:])
        if lo is not None:  # cast once, for the products here and the weight gradient
            d_in_low = g.cell_in_low[:, t].copy_(d_in)
        # phi_z and the reparameterisation, backwards
        if weights.phi_z:
            gz = f_iz.addmm(d_fz[:, t], d_in_low, out=g.phi_z[-1][:, t])  # d phi_z(z_t)
            _relu_mask_(gz, s.a_z[-1][:, t])
            for i in reversed(range(spec.n_phi_z - 1)):
                gz = f_z[i + 1].mm(gz, out=g.phi_z[i][:, t])
                _relu_mask_(gz, s.a_z[i][:, t])
            dz = f_z[0].addmm(d_z[:, t], gz)  # (N, Z)
        else:
            dz = f_iz.addmm(d_z[:, t], d_in_low)
        gh = g.head[:, t]
        torch.add(d_enc_out[:, t, :Z], dz, out=gh[:, :Z])
        torch.addcmul(d_scale[:, t], dz, noise[:, t], out=gh[:, Z:]).mul_(
            d_softplus[:, t]).add_(d_enc_out[:, t, Z:])
        # the encoder, backwards
        ge = _relu_mask_(f_head.mm(gh, out=g.enc[-1][:, t]), s.a_enc[-1][:, t])
        for i in reversed(range(spec.n_enc - 1)):
            ge = _relu_mask_(f_enc[i].mm(ge, out=g.enc[i][:, t]), s.a_enc[i][:, t])
        # d h_{t-1}: both products with h_{t-1} in one
        g_hw_t = g_hw[:, t]
        if lo is not None:  # the encoder's and (LSTM) the cell's parts are in hw_low already
            g_hw_t = g.hw_low[:, t]
            if not spec.lstm:
                g_hw_t[:, E1:].copy_(g_hw[:, t, E1:])
        dh = f_h.addmm(d_hprev[:, t], g_hw_t)
        if not spec.lstm:
            dh.add_(dh_direct)
    return g, dh, dcell


def _relu_mask_(grad: Tensor, act: Tensor) -> Tensor:
    """ReLU backward in place: zero ``grad`` where the (post-ReLU) activation is not positive."""
    return torch.ops.aten.threshold_backward.grad_input(grad, act, 0.0, grad_input=grad)


def _weight_grads(spec: _LoopSpec, need_feat_x: bool, s: _Saved, feat_x: Tensor,
                  weights: LoopWeights, g: _PreGrads) -> tuple[Tensor | None, list[Tensor]]:
    """Every weight gradient as one product over all N * T rows, in ``LoopWeights.flat()``
    order, and d phi_x(x_t) through the products computed before the loop. Each weight's
    product accumulates over the N * T rows in float32 (in the products' dtype, inside the
    kernel); each bias gradient is a float32 sum."""
    lo = spec.product
    weights = _product_weights(weights, lo)
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

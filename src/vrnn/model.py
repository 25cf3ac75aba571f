"""The Variational Recurrent Neural Network and the paper's RNN baselines.

Chung, Kastner, Dinh, Goel, Courville, Bengio. "A Recurrent Latent Variable Model for Sequential
Data." NIPS 2015 (arXiv:1506.02216). Equation numbers below are the paper's.

Notation, batch-first everywhere:
    B batch, T time steps, D frame size (x_dim), Z latent size, H recurrent units,
    K mixture components, S importance samples; X = phi_x width, F = phi_z width.

How this version differs from a literal reading of the paper: the paper's VRNN is a VAE per step
with every network evaluated inside the time loop. Only four things feed the recurrence (the
encoder, the reparameterised sample, phi_z and the cell), so only those run in the loop here;
phi_x of every frame runs before it, and the prior, decoder, KL and likelihood run after it,
batched over all T steps. The input-side halves of the encoder's first layer and of the cell's
input product are also computed before the loop, and the two products with h_{t-1} (encoder and
cell) are fused into one matrix multiply per step. ``tests/reference.py`` keeps the literal
per-step version and the tests assert both give the same loss and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from vrnn.config import ModelConfig
from vrnn.distributions import draw, make_head, positive_scale

State = tuple[Tensor, ...]
"""Recurrent state: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU, each ``(B, H)``."""


def masked_sum(values: Tensor, mask: Tensor | None) -> Tensor:
    """Sum ``values (B, T)`` over time where ``mask (B, T)`` is true -> ``(B,)``.

    The one reduction over time in the package: padded steps of a ragged batch contribute nothing,
    so a sequence's loss is the same alone and padded inside a longer batch.
    """
    if mask is None:
        return values.sum(1)
    return (values * mask.to(values.dtype)).sum(1)


class MLP(nn.Module):
    """ReLU feature extractor. ``(..., in_dim) -> (..., widths[-1])``; identity if no widths."""

    def __init__(self, in_dim: int, widths: tuple[int, ...]):
        super().__init__()
        dims = (in_dim, *widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out_dim = dims[-1]

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """Apply layers ``start:``; ``start=1`` continues after a first layer computed elsewhere."""
        for layer in self.layers[start:]:
            x = F.relu(layer(x))
        return x


class GaussianLayer(nn.Module):
    """Linear map to the ``(loc, scale)`` of a diagonal Gaussian; scale = softplus + floor."""

    def __init__(self, in_dim: int, out_dim: int, min_scale: float, scale_bias: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * out_dim)
        self.min_scale = min_scale
        with torch.no_grad():
            self.linear.bias[out_dim:].fill_(scale_bias)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.linear(h).chunk(2, -1)
        return loc, positive_scale(raw, self.min_scale)


class LatentGaussian(nn.Module):
    """An MLP followed by a :class:`GaussianLayer`: the prior phi_prior and encoder phi_enc."""

    def __init__(self, in_dim: int, widths: tuple[int, ...], z_dim: int, cfg: ModelConfig):
        super().__init__()
        self.mlp = MLP(in_dim, widths)
        self.gaussian = GaussianLayer(self.mlp.out_dim, z_dim, cfg.min_scale, cfg.scale_bias)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., in_dim)`` -> ``loc, scale`` each ``(..., Z)``."""
        return self.gaussian(self.mlp(h))


class Emitter(nn.Module):
    """phi_dec: an MLP of its input followed by the output head; returns a distribution over x_t."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.mlp = MLP(in_dim, cfg.decoder)
        self.head = make_head(cfg.output, self.mlp.out_dim, cfg.x_dim, components=cfg.components,
                              min_scale=cfg.min_scale, scale_bias=cfg.scale_bias)

    def forward(self, h: Tensor, temperature: float = 1.0) -> Distribution:
        return self.head(self.mlp(h), temperature)


def _cell(cfg: ModelConfig, in_dim: int) -> nn.Module:
    return nn.LSTMCell(in_dim, cfg.h_dim) if cfg.cell == "lstm" else nn.GRUCell(in_dim, cfg.h_dim)


@dataclass
class StepTerms:
    """Per-step terms of one pass over a batch; every tensor is ``(B, T)`` unless noted.

    ``log_px``: log p(x_t | z_{<=t}, x_{<t}); ``kl``: KL(q(z_t | .) || p(z_t | .)) in closed form
    (zeros for RNNs); ``log_pz``/``log_qz``: log-densities of the sampled z_t under prior and
    posterior (for importance sampling; None unless asked); ``state``: the recurrent state after
    the last step (for truncated BPTT); ``latents``: optional dict of ``(B, T, Z)`` tensors
    (``z``, ``enc_loc``, ``enc_scale``, ``prior_loc``, ``prior_scale``) for analysis.
    """

    log_px: Tensor
    kl: Tensor
    state: State
    log_pz: Tensor | None = None
    log_qz: Tensor | None = None
    latents: dict[str, Tensor] | None = None

    def elbo(self, mask: Tensor | None = None, kl_weight: float = 1.0) -> Tensor:
        """Per-sequence ELBO (Eq. 11) summed over valid steps -> ``(B,)``."""
        return masked_sum(self.log_px - kl_weight * self.kl, mask)


class SequenceModel(nn.Module):
    """What every model of the package offers: per-step terms, the training loss, sampling."""

    config: ModelConfig

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        n_state = 2 if config.cell == "lstm" else 1
        init = torch.zeros(n_state, config.h_dim)
        if config.learn_h0:
            self.initial_state = nn.Parameter(init)
        else:
            self.register_buffer("initial_state", init)

    @property
    def is_latent(self) -> bool:
        return self.config.family == "vrnn"

    def init_state(self, batch: int) -> State:
        """The learned (or zero) initial state expanded to ``batch`` rows, each ``(B, H)``."""
        return tuple(s.unsqueeze(0).expand(batch, -1) for s in self.initial_state)

    def _check_input(self, x: Tensor, mask: Tensor | None) -> None:
        if x.dim() != 3 or x.shape[-1] != self.config.x_dim:
            raise ValueError(f"expected x of shape (B, T, D={self.config.x_dim}), "
                             f"got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("x has no time steps (T=0)")
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(f"mask must have shape (B, T)={tuple(x.shape[:2])}, "
                             f"got {tuple(mask.shape)}")

    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False) -> StepTerms:
        raise NotImplementedError

    def loss(self, x: Tensor, mask: Tensor | None = None, *, kl_weight: float = 1.0,
             state: State | None = None, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, StepTerms]:
        """Training objective: the negative ELBO summed over time, averaged over sequences.

        For an RNN this is the exact negative log-likelihood. ``kl_weight`` < 1 anneals the KL
        term (off by default, as in the paper). Returns ``(loss, terms)``.
        """
        terms = self(x, mask, state=state, noise=noise, generator=generator)
        return -terms.elbo(mask, kl_weight).mean(), terms

    def sample(self, num: int, steps: int, *, prime: Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               include_prime: bool = False) -> Tensor:
        """Generate ``num`` sequences of ``steps`` frames -> ``(num, steps, D)``.

        Args:
            prime: optional prefix ``(P, D)`` or ``(num, P, D)``, encoded first (VRNN: with the
                filtering posterior q) before sampling continues from the prior.
            temperature: divides mixture / Bernoulli logits, multiplies output scales by its root.
            generator: the random stream, for reproducible samples.
            include_prime: prepend the prefix to the output -> ``(num, P + steps, D)``.
        """
        if num < 1 or steps < 0:
            raise ValueError(f"sample needs num >= 1 and steps >= 0, got num={num}, steps={steps}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        device = self.initial_state.device
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                state = self.init_state(num)
                if prime is not None:
                    prime = prime.to(device=device, dtype=self.initial_state.dtype)
                    if prime.dim() == 2:
                        prime = prime.unsqueeze(0).expand(num, -1, -1)
                    if prime.dim() != 3 or prime.shape[0] != num or prime.shape[-1] != \
                            self.config.x_dim:
                        raise ValueError(f"prime must be (P, D={self.config.x_dim}) or "
                                         f"(num={num}, P, D); got {tuple(prime.shape)}")
                    state = self(prime, state=state, generator=generator).state
                out = self._generate(state, steps, temperature, generator)
        finally:
            self.train(was_training)
        if include_prime and prime is not None:
            out = torch.cat([prime, out], 1)
        return out

    def _generate(self, state: State, steps: int, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class _LoopSpec:
    """Static facts of the filtering loop: the cell, layer counts, the scale floor."""

    lstm: bool
    n_enc: int
    """Encoder layers (the first reads ``[phi_x(x_t), h_{t-1}]``)."""
    n_phi_z: int
    """phi_z layers (0: identity)."""
    min_scale: float
    replicas: int = 1
    """Each sequence runs this many times (rows ``r * B + b``) with its own noise: the products
    with phi_x(x_t) are computed once per sequence and shared (importance sampling)."""


def _relu_mask_(grad: Tensor, act: Tensor) -> Tensor:
    """ReLU backward in place: zero ``grad`` where the (post-ReLU) activation is not positive."""
    return torch.ops.aten.threshold_backward.grad_input(grad, act, 0.0, grad_input=grad)


class _FilteringLoop(torch.autograd.Function):
    """Eq. 7-9 over all T steps, the part of the VRNN that cannot leave the time loop, with a
    hand-written backward pass (the "custom cell").

    Inputs: ``spec``, ``feat_x (B, T, X)``, ``noise (B, T, Z)``, ``h0 (B, H)``, ``c0 (B, H)`` (None
    for a GRU), then the parameters: per encoder layer ``(W, b)`` (the first ``W`` is
    ``(E1, X + H)``), the encoder's Gaussian layer ``(W, b)``, per phi_z layer ``(W, b)``, and the
    cell's ``W_ih (nH, X + F), W_hh (nH, H), b_ih, b_hh`` (n = 4 for an LSTM, 3 for a GRU).

    Outputs: ``h_prev (B, T, H)`` (h_{t-1} of every step), ``z (B, T, Z)``, ``fz (B, T, F)``
    (None when phi_z is the identity),
    ``loc_raw (B, T, 2Z)`` (the encoder's loc and its raw scale), ``scale (B, T, Z)``, and the
    final ``h (B, H)`` and ``c (B, H)`` (None for a GRU).

    Why by hand: autograd differentiates the loop step by step, so every weight used inside it gets
    its gradient as T thin products (B rows each) accumulated into a full-size matrix per step,
    memory-bound work that took a quarter of a speech-sized training step. Here the backward loop
    carries only what the recurrence needs (gradients with respect to activations, B rows per
    product) and stores the per-step gradients of every pre-activation; each weight gradient is
    then one product over all B * T rows, written once, at the machine's full matmul rate. The
    input-side halves of the first encoder layer and of the cell (products with phi_x(x_t)) are
    computed before the loop, and the two products with h_{t-1} share one matrix. Every per-step
    result is written into a preallocated ``(B, T, .)`` buffer, so the loop allocates little.
    """

    @staticmethod
    def forward(ctx, spec: _LoopSpec, feat_x: Tensor, noise: Tensor, h0: Tensor,
                c0: Tensor | None, *params: Tensor):
        out, saved = _filtering_forward(spec, feat_x, noise, h0, c0, params, keep=True)
        ctx.spec = spec
        ctx.n_saved = len(saved)
        ctx.save_for_backward(*saved, feat_x, noise, h0,
                              c0 if c0 is not None else h0.new_empty(0), *params)
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        spec = ctx.spec
        tensors = ctx.saved_tensors
        saved = tensors[:ctx.n_saved]
        feat_x, noise, h0, c0 = tensors[ctx.n_saved:ctx.n_saved + 4]
        params = tensors[ctx.n_saved + 4:]
        d_feat_x, d_h0, d_c0, d_params = _filtering_backward(
            spec, ctx.needs_input_grad[1], saved, feat_x, noise, h0, c0, params, grads)
        return (None, d_feat_x, None, d_h0, d_c0 if spec.lstm else None, *d_params)


def _split_params(spec: _LoopSpec, params: tuple[Tensor, ...]):
    enc = [params[2 * i:2 * i + 2] for i in range(spec.n_enc)]
    k = 2 * spec.n_enc
    head = params[k:k + 2]
    k += 2
    phz = [params[k + 2 * i:k + 2 * i + 2] for i in range(spec.n_phi_z)]
    k += 2 * spec.n_phi_z
    w_ih, w_hh, b_ih, b_hh = params[k:k + 4]
    return enc, head, phz, (w_ih, w_hh, b_ih, b_hh)


def _filtering_forward(spec: _LoopSpec, feat_x: Tensor, noise: Tensor, h0: Tensor,
                       c0: Tensor | None, params: tuple[Tensor, ...], keep: bool):
    """The loop of :class:`_FilteringLoop`; ``keep``: store what the backward pass needs."""
    enc, (w_g, b_g), phz, (w_ih, w_hh, b_ih, b_hh) = _split_params(spec, params)
    B0, T, X = feat_x.shape
    B, _, Z = noise.shape  # B = replicas * B0 rows
    R = spec.replicas
    nH, H = w_hh.shape
    E1 = enc[0][0].shape[0]
    new = feat_x.new_empty

    def tiled(v: Tensor) -> Tensor:  # (R * B0, n) -> (R, B0, n), to add a per-sequence term
        return v.view(R, B0, v.shape[-1])
    S = T if keep else 1  # backward-only buffers: one step's worth when nothing is kept

    # Before the loop: the input-side products with phi_x(x_t), and one matrix for both products
    # with h_{t-1} (the encoder's first layer and the cell's hidden-to-hidden weights).
    w_h = torch.cat([enc[0][0][:, X:], w_hh])  # (E1 + nH, H)
    enc_x = F.linear(feat_x, enc[0][0][:, :X], enc[0][1])  # (B, T, E1)
    cell_x = F.linear(feat_x, w_ih[:, :X], b_ih + b_hh if spec.lstm else b_ih)  # (B, T, nH)
    b_h = None if spec.lstm else torch.cat([b_hh.new_zeros(E1), b_hh])  # GRU: b_hn inside r*()
    w_iz = w_ih[:, X:]  # (nH, F)

    h_prev = new(B, T, H)
    a_enc = [new(B, S, w.shape[0]) for w, _ in enc]
    loc_raw = new(B, T, 2 * Z)
    scale = new(B, T, Z)
    z = new(B, T, Z)
    a_z = [new(B, T if i == spec.n_phi_z - 1 else S, w.shape[0]) for i, (w, _) in
           enumerate(phz)]
    gates = new(B, S, nH)  # gate activations: LSTM (i, f, g, o), GRU (r, u, n)
    cells = new(B, S, H) if spec.lstm else None  # LSTM c_t
    tanh_c = new(B, S, H) if spec.lstm else None
    gh_n = None if spec.lstm else new(B, S, H)  # GRU hidden-side n pre-activation
    h_last = new(B, H)
    h_prev[:, 0] = h0
    h, c = h_prev[:, 0], c0
    for t in range(T):
        k = t if keep else 0
        hw = torch.mm(h, w_h.t()) if b_h is None else torch.addmm(b_h, h, w_h.t())  # (B, E1+nH)
        # Eq. 9: the encoder from phi_x(x_t) and h_{t-1}
        a = a_enc[0][:, k]
        torch.add(tiled(hw[:, :E1]), enc_x[:, t], out=tiled(a)).relu_()
        for i, (w, b) in enumerate(enc[1:], 1):
            a = torch.addmm(b, a, w.t(), out=a_enc[i][:, k]).relu_()
        lr = torch.addmm(b_g, a, w_g.t(), out=loc_raw[:, t])  # (B, 2Z)
        s = torch.add(F.softplus(lr[:, Z:]), spec.min_scale, out=scale[:, t])
        fz = torch.addcmul(lr[:, :Z], s, noise[:, t], out=z[:, t])  # reparameterised z_t
        for i, (w, b) in enumerate(phz):
            fz = torch.addmm(b, fz, w.t(), out=a_z[i][:, t if i == spec.n_phi_z - 1 else k])
            fz.relu_()
        # Eq. 7: the cell
        out_h = h_prev[:, t + 1] if t + 1 < T else h_last
        act = gates[:, k]
        if spec.lstm:
            tiled(hw[:, E1:]).add_(cell_x[:, t])
            pre = torch.addmm(hw[:, E1:], fz, w_iz.t())  # (B, 4H)
            torch.sigmoid(pre, out=act)
            torch.tanh(pre[:, 2 * H:3 * H], out=act[:, 2 * H:3 * H])
            i_, f_, g_, o_ = act.chunk(4, 1)
            c = torch.mul(f_, c, out=cells[:, k]).addcmul_(i_, g_)
            tc = torch.tanh(c, out=tanh_c[:, k])
            h = torch.mul(o_, tc, out=out_h)
        else:
            gi = torch.mm(fz, w_iz.t())  # (B, 3H) input side
            tiled(gi).add_(cell_x[:, t])
            gh = hw[:, E1:]  # (B, 3H) hidden side, with b_hh
            torch.sigmoid(gi[:, :2 * H].add_(gh[:, :2 * H]), out=act[:, :2 * H])
            r, u = act[:, :H], act[:, H:2 * H]
            gh_n[:, k] = gh[:, 2 * H:]
            n = torch.tanh(gi[:, 2 * H:].addcmul_(r, gh[:, 2 * H:]), out=act[:, 2 * H:])
            h = torch.sub(h, n, out=out_h).mul_(u).add_(n)  # (1 - u) * n + u * h
    # phi_z may be the identity: fz is then z itself, returned once (None in its slot).
    out = (h_prev, z, a_z[-1] if phz else None, loc_raw, scale, h, c if spec.lstm else None)
    saved = (h_prev, h, *a_enc, loc_raw, scale, z, *a_z, gates,
             *((cells, tanh_c) if spec.lstm else (gh_n,)))
    return out, saved


def _filtering_backward(spec: _LoopSpec, need_feat_x: bool, saved, feat_x: Tensor,
                        noise: Tensor, h0: Tensor, c0: Tensor, params: tuple[Tensor, ...],
                        grads: tuple[Tensor | None, ...]):
    """Gradients of :class:`_FilteringLoop`: the loop backwards over time for the activations,
    then every weight gradient as one product over all B * T rows."""
    enc, (w_g, b_g), phz, (w_ih, w_hh, b_ih, b_hh) = _split_params(spec, params)
    ne, nz = spec.n_enc, spec.n_phi_z
    h_prev, h_last = saved[0], saved[1]
    a_enc = saved[2:2 + ne]
    loc_raw, scale, z = saved[2 + ne:5 + ne]
    a_z = saved[5 + ne:5 + ne + nz]
    gates = saved[5 + ne + nz]
    rest = saved[6 + ne + nz:]
    B0, T, X = feat_x.shape
    B, _, Z = noise.shape  # B = replicas * B0 rows
    nH, H = w_hh.shape
    E1 = enc[0][0].shape[0]
    w_h = torch.cat([enc[0][0][:, X:], w_hh])  # (E1 + nH, H)
    w_iz = w_ih[:, X:]

    def zeros_if_none(g, like):
        return torch.zeros_like(like) if g is None else g

    d_hprev, d_z, d_fz, d_lr, d_scale, d_h, d_c = grads
    d_hprev = zeros_if_none(d_hprev, h_prev)
    d_z = zeros_if_none(d_z, z)
    if nz:
        d_fz = zeros_if_none(d_fz, a_z[-1])
    d_lr = zeros_if_none(d_lr, loc_raw)
    d_scale = zeros_if_none(d_scale, scale)
    dh = torch.zeros_like(h_last) if d_h is None else d_h.clone()
    new = feat_x.new_empty
    g_hw = new(B, T, E1 + nH)  # d pre-activations of the products with h_{t-1}
    g_enc = [g_hw[..., :E1]] + [new(B, T, w.shape[0]) for w, _ in enc[1:]]
    g_head = new(B, T, 2 * Z)
    g_z = [new(B, T, w.shape[0]) for w, _ in phz]
    g_gi = g_hw[..., E1:] if spec.lstm else new(B, T, nH)  # d input-side cell pre-activation
    sig_raw = torch.sigmoid(loc_raw[..., Z:])  # softplus'(raw), (B, T, Z)
    if spec.lstm:
        cells, tanh_c = rest
        dc = torch.zeros_like(h_last) if d_c is None else d_c.clone()
    else:
        (gh_n,) = rest
    for t in reversed(range(T)):
        act = gates[:, t]
        if spec.lstm:
            i_, f_, g_, o_ = act.chunk(4, 1)
            tc = tanh_c[:, t]
            c_prev = cells[:, t - 1] if t > 0 else c0
            gi, gf, gg, go = g_gi[:, t].chunk(4, 1)
            torch.mul(dh, tc, out=go)
            dc.addcmul_(dh * o_, 1.0 - tc * tc)
            torch.mul(dc, g_, out=gi)
            torch.mul(dc, c_prev, out=gf)
            torch.mul(dc, i_, out=gg)
            # sigmoid' = (1 - y) y, not y - y^2, which cancels where a gate saturates
            deriv = torch.rsub(act, 1.0).mul_(act)  # for i, f and o ...
            torch.mul(g_, g_, out=deriv[:, 2 * H:3 * H]).neg_().add_(1.0)  # ... tanh' for g
            g_gi[:, t].mul_(deriv)
            dc.mul_(f_)
            d_in = g_gi[:, t]
        else:
            r, u, n = act.chunk(3, 1)
            ghn = gh_n[:, t]
            hp = h_prev[:, t]
            gr, gu, gn = g_gi[:, t].chunk(3, 1)  # input side
            hr, hu, hn = g_hw[:, t, E1:].chunk(3, 1)  # hidden side
            torch.mul(dh, 1.0 - u, out=gn).mul_(1.0 - n * n)  # d n pre-activation
            torch.mul(dh, hp - n, out=gu).mul_((1.0 - u) * u)  # not u - u^2: see the LSTM
            torch.mul(gn, ghn, out=gr).mul_((1.0 - r) * r)
            hr.copy_(gr)
            hu.copy_(gu)
            torch.mul(gn, r, out=hn)
            dh = dh * u
            d_in = g_gi[:, t]
        # phi_z and the reparameterisation, backwards
        if nz:
            gz = torch.addmm(d_fz[:, t], d_in, w_iz, out=g_z[-1][:, t])  # d fz, (B, F)
            _relu_mask_(gz, a_z[-1][:, t])
            for i in reversed(range(nz - 1)):
                gz = torch.mm(gz, phz[i + 1][0], out=g_z[i][:, t])
                _relu_mask_(gz, a_z[i][:, t])
            dz = torch.addmm(d_z[:, t], gz, phz[0][0])  # (B, Z)
        else:
            dz = torch.addmm(d_z[:, t], d_in, w_iz)
        gh = g_head[:, t]
        torch.add(d_lr[:, t, :Z], dz, out=gh[:, :Z])
        torch.addcmul(d_scale[:, t], dz, noise[:, t], out=gh[:, Z:]).mul_(
            sig_raw[:, t]).add_(d_lr[:, t, Z:])
        # the encoder, backwards
        ge = _relu_mask_(torch.mm(gh, w_g, out=g_enc[-1][:, t]), a_enc[-1][:, t])
        for i in reversed(range(ne - 1)):
            ge = _relu_mask_(torch.mm(ge, enc[i + 1][0], out=g_enc[i][:, t]), a_enc[i][:, t])
        # d h_{t-1}: both products with h_{t-1} in one
        dh_new = torch.addmm(d_hprev[:, t], g_hw[:, t], w_h)
        dh = dh_new if spec.lstm else dh_new.add_(dh)
    d_c0 = dc if spec.lstm else None

    # Every weight gradient: one product over the B * T rows.
    def flat(v: Tensor) -> Tensor:  # (rows, T, n) -> (rows * T, n)
        return v.reshape(-1, v.shape[-1])

    def per_sequence(g: Tensor) -> Tensor:  # (R * B0, T, n) -> (B0 * T, n): replicas summed
        if spec.replicas == 1:
            return flat(g)
        return g.reshape(spec.replicas, B0 * T, g.shape[-1]).sum(0)

    fx = flat(feat_x)
    hp = flat(h_prev)
    gw_h = flat(g_hw).t() @ hp  # (E1 + nH, H)
    g_enc0 = flat(g_enc[0])
    g_enc0_x = per_sequence(g_enc[0])  # the product with phi_x(x_t) was shared by the replicas
    d_params = []
    d_params += [torch.cat([g_enc0_x.t() @ fx, gw_h[:E1]], 1), g_enc0.sum(0)]
    for i in range(1, ne):
        gi_ = flat(g_enc[i])
        d_params += [gi_.t() @ flat(a_enc[i - 1]), gi_.sum(0)]
    gh_ = flat(g_head)
    d_params += [gh_.t() @ flat(a_enc[-1]), gh_.sum(0)]
    for i in range(nz):
        gz_ = flat(g_z[i])
        inp = flat(z) if i == 0 else flat(a_z[i - 1])
        d_params += [gz_.t() @ inp, gz_.sum(0)]
    g_cell = flat(g_gi)
    g_cell_x = per_sequence(g_gi)
    fz = flat(a_z[-1]) if nz else flat(z)
    d_w_ih = torch.cat([g_cell_x.t() @ fx, g_cell.t() @ fz], 1)
    d_b_ih = g_cell.sum(0)
    if spec.lstm:
        d_params += [d_w_ih, gw_h[E1:], d_b_ih, d_b_ih]
    else:
        d_params += [d_w_ih, gw_h[E1:], d_b_ih, flat(g_hw[..., E1:]).sum(0)]
    d_feat_x = None
    if need_feat_x:  # through the input-side products computed before the loop
        d_feat_x = torch.addmm(g_enc0_x @ enc[0][0][:, :X], g_cell_x, w_ih[:, :X])
        d_feat_x = d_feat_x.view(B0, T, X)
    return d_feat_x, dh, d_c0, d_params


class VRNN(SequenceModel):
    """The VRNN (Eq. 5-9), or VRNN-I with ``config.prior == 'standard'``.

    Modules: ``phi_x``, ``phi_z`` feature extractors; ``prior`` (phi_prior, absent for VRNN-I);
    ``encoder`` (phi_enc); ``decoder`` (phi_dec with the output head); ``cell`` (f of Eq. 7).
    """

    custom_loop: bool = True
    """Run the filtering loop with its hand-written backward (:class:`_FilteringLoop`); False
    falls back to autograd step by step (same numbers, slower; also supports double backward)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        if c.family != "vrnn":
            raise ValueError(f"VRNN needs config.family='vrnn', got {c.family!r}")
        self.phi_x = MLP(c.x_dim, c.phi_x)
        self.phi_z = MLP(c.z_dim, c.phi_z)
        self.encoder = LatentGaussian(self.phi_x.out_dim + c.h_dim, c.encoder, c.z_dim, c)
        self.prior = (LatentGaussian(c.h_dim, c.prior_net, c.z_dim, c)
                      if c.prior == "learned" else None)
        self.decoder = Emitter(self.phi_z.out_dim + c.h_dim, c)
        self.cell = _cell(c, self.phi_x.out_dim + self.phi_z.out_dim)

    # -- pieces shared by the fast path, the per-step reference and generation ------------------
    def prior_dist(self, h_prev: Tensor) -> Independent:
        """Eq. 5: p(z_t | h_{t-1}); N(0, I) for VRNN-I. ``(..., H) -> batch (...), event (Z,)``."""
        if self.prior is None:
            zeros = h_prev.new_zeros(*h_prev.shape[:-1], self.config.z_dim)
            return Independent(Normal(zeros, torch.ones_like(zeros)), 1)
        return Independent(Normal(*self.prior(h_prev)), 1)

    def cell_step(self, inp: Tensor, state: State) -> State:
        """Eq. 7 with the library cell: ``inp (B, X + F)``, state -> new state."""
        if self.config.cell == "lstm":
            return self.cell(inp, state)
        return (self.cell(inp, state[0]),)

    # -- the fast path ------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1) -> StepTerms:
        """One pass of the filtering posterior over ``x (B, T, D)`` with ``mask (B, T)``.

        Args:
            state: recurrent state to start from (truncated BPTT); default the initial state.
            noise: ``(B, T, Z)`` standard-normal draws for the reparameterised z_t; drawn from
                ``generator`` when absent.
            sample_terms: also return log p(z_t) and log q(z_t) of the sampled z (for IS).
            return_latents: also return z and the encoder / prior parameters, ``(B, T, Z)``.
            replicas: pass every sequence this many times, each with its own noise, as if ``x``
                were ``x.repeat(replicas, 1, 1)``: every returned tensor (and ``noise``,
                ``state``) then has ``replicas * B`` rows, row ``r * B + b`` being replica r of
                sequence b. phi_x and the products with phi_x(x_t) run once per sequence, not
                once per replica (importance sampling, Section 2 of the spec).
        """
        self._check_input(x, mask)
        c = self.config
        B, T, _ = x.shape
        Z = c.z_dim
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        N = replicas * B
        if noise is None:
            noise = torch.randn(N, T, Z, dtype=x.dtype, device=x.device, generator=generator)
        elif noise.shape != (N, T, Z):
            raise ValueError(f"noise must have shape (replicas * B, T, Z)={(N, T, Z)}, got "
                             f"{tuple(noise.shape)}")
        state = self.init_state(N) if state is None else state

        feat_x = self.phi_x(x)  # (B, T, X), before the loop: it depends on x alone
        # the hand-written loop knows the library's own MLPs; a swapped-in module goes by autograd
        if self.custom_loop and isinstance(self.phi_z, MLP) and isinstance(self.encoder.mlp, MLP):
            h_prev, z, fz, loc, scale, final = self._loop(feat_x, noise, state, replicas)
        else:
            h_prev, z, fz, loc, scale, final = self._autograd_loop(feat_x, noise, state,
                                                                   replicas)

        # After the loop: prior, decoder, KL and likelihood, batched over all steps.
        q = Independent(Normal(loc, scale), 1)
        p = self.prior_dist(h_prev)
        px = self.decoder(torch.cat([fz, h_prev], -1))  # Eq. 6
        xr = x if replicas == 1 else x.repeat(replicas, 1, 1)  # (N, T, D)
        terms = StepTerms(log_px=px.log_prob(xr), kl=kl_divergence(q, p), state=final)  # (N, T)
        if sample_terms:
            terms.log_pz, terms.log_qz = p.log_prob(z), q.log_prob(z)  # (B, T)
        if return_latents:
            terms.latents = {"z": z, "enc_loc": q.base_dist.loc, "enc_scale": q.base_dist.scale,
                             "prior_loc": p.base_dist.loc, "prior_scale": p.base_dist.scale,
                             "h": h_prev}
        return terms

    def _loop_params(self) -> list[Tensor]:
        """The parameters of the filtering loop in :class:`_FilteringLoop`'s order."""
        out: list[Tensor] = []
        for layer in (*self.encoder.mlp.layers, self.encoder.gaussian.linear, *self.phi_z.layers):
            out += [layer.weight, layer.bias]
        return out + [self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih,
                      self.cell.bias_hh]

    def _loop(self, feat_x: Tensor, noise: Tensor, state: State, replicas: int = 1):
        """The filtering loop (Eq. 7-9) with the hand-written backward of :class:`_FilteringLoop`.

        Returns ``h_prev (B, T, H)``, ``z (B, T, Z)``, ``fz (B, T, F)``, the encoder's ``loc`` and
        ``scale`` ``(B, T, Z)`` and the final state.
        """
        c = self.config
        spec = _LoopSpec(lstm=c.cell == "lstm", n_enc=len(self.encoder.mlp.layers),
                         n_phi_z=len(self.phi_z.layers), min_scale=c.min_scale,
                         replicas=replicas)
        params = self._loop_params()
        h0, c0 = state[0], state[1] if spec.lstm else None
        inputs = (feat_x, h0, *params) + ((c0,) if spec.lstm else ())
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            h_prev, z, fz, loc_raw, scale, h, cell = _FilteringLoop.apply(
                spec, feat_x, noise, h0, c0, *params)
        else:  # inference: nothing kept for a backward pass
            (h_prev, z, fz, loc_raw, scale, h, cell), _ = _filtering_forward(
                spec, feat_x, noise, h0, c0, tuple(params), keep=False)
        final = (h, cell) if spec.lstm else (h,)
        return h_prev, z, z if fz is None else fz, loc_raw[..., :c.z_dim], scale, final

    def _autograd_loop(self, feat_x: Tensor, noise: Tensor, state: State, replicas: int = 1):
        """The same loop differentiated by autograd step by step (``custom_loop = False``): the
        previous fast path, kept for the benchmark's ablation and as a readable statement of
        what :class:`_FilteringLoop` computes."""
        c = self.config
        B0, _, X = feat_x.shape

        def tiled_add(rows: Tensor, per_seq: Tensor) -> Tensor:  # (R * B0, n) + (B0, n)
            return (rows.view(replicas, B0, -1) + per_seq).view(rows.shape)

        enc_first = self.encoder.mlp.layers[0]
        e1 = enc_first.out_features
        enc_x = F.linear(feat_x, enc_first.weight[:, :X], enc_first.bias)  # (B, T, E1)
        lstm = c.cell == "lstm"
        w_ih_x = self.cell.weight_ih[:, :X]
        w_ih_z = self.cell.weight_ih[:, X:]
        if lstm:
            cell_x = F.linear(feat_x, w_ih_x, self.cell.bias_ih + self.cell.bias_hh)  # (B,T,4H)
            w_h = torch.cat([enc_first.weight[:, X:], self.cell.weight_hh])  # (E1 + 4H, H)
            b_h = None
        else:
            cell_x = F.linear(feat_x, w_ih_x, self.cell.bias_ih)  # (B, T, 3H)
            w_h = torch.cat([enc_first.weight[:, X:], self.cell.weight_hh])  # (E1 + 3H, H)
            b_h = torch.cat([enc_first.bias.new_zeros(e1), self.cell.bias_hh])

        # The loop: only what feeds h_t. unbind(1) rather than [:, t] indexing, whose backward
        # writes a full-size zero tensor per step and makes the cost quadratic in T.
        h = state[0]
        cstate = state[1] if lstm else None
        hs, zs, fzs, locs, scales = [], [], [], [], []
        for enc_x_t, cell_x_t, eps_t in zip(enc_x.unbind(1), cell_x.unbind(1), noise.unbind(1)):
            hs.append(h)
            hw = F.linear(h, w_h, b_h)  # (B, E1 + 4H): one fused product with h_{t-1}
            enc_h, cell_h = hw.split([e1, hw.shape[1] - e1], 1)
            # Eq. 9: encoder from phi_x(x_t) and h_{t-1}
            loc, scale = self.encoder.gaussian(self.encoder.mlp(F.relu(tiled_add(enc_h, enc_x_t)),
                                                                1))
            z = loc + scale * eps_t  # (B, Z), reparameterised
            fz = self.phi_z(z)  # (B, F)
            gi = tiled_add(F.linear(fz, w_ih_z), cell_x_t)  # input side of Eq. 7
            if lstm:
                i, f, g, o = (gi + cell_h).chunk(4, 1)
                cstate = torch.sigmoid(f) * cstate + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(cstate)
            else:
                ir, iz, inn = gi.chunk(3, 1)
                hr, hz, hn = cell_h.chunk(3, 1)
                r, u = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - u) * torch.tanh(inn + r * hn) + u * h
            zs.append(z)
            fzs.append(fz)
            locs.append(loc)
            scales.append(scale)
        final = (h, cstate) if lstm else (h,)

        return (torch.stack(hs, 1), torch.stack(zs, 1), torch.stack(fzs, 1),
                torch.stack(locs, 1), torch.stack(scales, 1), final)  # each (B, T, .)

    def _generate(self, state: State, steps: int, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        frames = []
        for _ in range(steps):
            h = state[0]
            z = draw(self.prior_dist(h), generator)  # Eq. 5, (num, Z)
            fz = self.phi_z(z)
            x = draw(self.decoder(torch.cat([fz, h], -1), temperature), generator)  # Eq. 6
            state = self.cell_step(torch.cat([self.phi_x(x), fz], -1), state)  # Eq. 7
            frames.append(x)
        if not frames:
            return state[0].new_zeros(state[0].shape[0], 0, self.config.x_dim)
        return torch.stack(frames, 1)  # (num, steps, D)


class RNN(SequenceModel):
    """The paper's baselines (RNN-Gauss, RNN-GMM, ...): h_t = f(phi_x(x_t), h_{t-1}) and
    x_t ~ phi_dec(h_{t-1}). No latents, so the whole recurrence is one fused library LSTM/GRU and
    the log-likelihood is exact."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        if c.family != "rnn":
            raise ValueError(f"RNN needs config.family='rnn', got {c.family!r}")
        self.phi_x = MLP(c.x_dim, c.phi_x)
        rnn_cls = nn.LSTM if c.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(self.phi_x.out_dim, c.h_dim, batch_first=True)
        self.decoder = Emitter(c.h_dim, c)

    def _rnn_state(self, state: State) -> Tensor | tuple[Tensor, Tensor]:
        s = tuple(t.unsqueeze(0).contiguous() for t in state)  # (1, B, H) each
        return s if self.config.cell == "lstm" else s[0]

    def _from_rnn_state(self, s) -> State:
        return tuple(t.squeeze(0) for t in s) if isinstance(s, tuple) else (s.squeeze(0),)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False) -> StepTerms:
        """Exact per-step log-likelihood of ``x (B, T, D)``; ``kl`` is zero."""
        self._check_input(x, mask)
        B = x.shape[0]
        state = self.init_state(B) if state is None else state
        out, last = self.rnn(self.phi_x(x), self._rnn_state(state))  # (B, T, H)
        h_prev = torch.cat([state[0].unsqueeze(1), out[:, :-1]], 1)  # (B, T, H): h_{t-1}
        log_px = self.decoder(h_prev).log_prob(x)  # (B, T)
        zeros = torch.zeros_like(log_px)
        terms = StepTerms(log_px=log_px, kl=zeros, state=self._from_rnn_state(last))
        if sample_terms:
            terms.log_pz, terms.log_qz = zeros, zeros
        if return_latents:
            terms.latents = {"h": h_prev}
        return terms

    def _generate(self, state: State, steps: int, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        frames = []
        s = self._rnn_state(state)
        h = state[0]
        for _ in range(steps):
            x = draw(self.decoder(h, temperature), generator)  # (num, D)
            out, s = self.rnn(self.phi_x(x).unsqueeze(1), s)
            h = out[:, 0]
            frames.append(x)
        if not frames:
            return h.new_zeros(h.shape[0], 0, self.config.x_dim)
        return torch.stack(frames, 1)  # (num, steps, D)


def build_model(config: ModelConfig) -> SequenceModel:
    """The model a config describes: :class:`VRNN` or :class:`RNN`."""
    return VRNN(config) if config.family == "vrnn" else RNN(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""Fast generation: every family's ancestral sampler without the step protocol's objects.

:meth:`vrnn.models.base.SequenceModel.generate` samples through the step protocol, the literal
reference: each step builds the prior, the emission and their ``torch.distributions`` objects
(with their argument checks), concatenates the inputs of every network and calls the library
cell. The samplers here draw the same sequences from the same weights, step by step, with none
of that:

- no distribution objects: z_t is ``loc + scale * eps`` from the Gaussian layer's output, x_t
  comes from the output head's own ``sample_from`` (:mod:`vrnn.models.distributions`), which
  draws the random numbers :func:`vrnn.models.distributions.draw` draws, in its order;
- the weights are split by input and fused by input once per call: every product with one
  vector runs as one matrix product, e.g. the VRNN's h_{t-1} meets the prior's first layer, the
  decoder's h-columns and the cell's recurrent weights in one product, and phi_z(z_t) the
  decoder's z-columns and the cell's input columns in another, so no input is concatenated;
- the recurrent cell is its gate equations on those products (the library's gate order);
- the frames go into one preallocated ``(num, steps, D)`` tensor, under ``torch.no_grad``.

The noise is drawn as the literal sampler draws it (eps_t of the prior, then the emission's),
so the fast and the literal sampler give the same sequences from the same generator, up to the
rounding of the reordered sums (tested to 1e-9 in float64, for every family and head, with a
temperature and after a prefix). A model whose networks are not the library's own (a module
swapped in) has no fast sampler: it samples literally.

Notation as in :mod:`vrnn.models.base`: N rows (``num`` sequences), D frame size, Z latent
size, H recurrent units.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vrnn.inference.protocol import State
from vrnn.kernels.activations import positive_scale
from vrnn.models.distributions import gaussian_params
from vrnn.models.layers import MLP, Decoder, ForwardRNN, LatentGaussian


class NotFast(Exception):
    """The model holds a network this module cannot split: it samples literally."""


def _need(ok: bool) -> None:
    if not ok:
        raise NotFast


# -- the pieces: a network read from its first layer on, products fused by input --------------


def _weights(layer: nn.Module) -> tuple[Tensor, Tensor | None]:
    _need(type(layer) is nn.Linear)
    return layer.weight, layer.bias


def split_net(mlp: nn.Module, final: nn.Linear | None) -> tuple[nn.Linear | None,
                                                                  Callable[[Tensor], Tensor]]:
    """A ReLU :class:`MLP` and an optional final linear layer, read as the linear layer that
    reads the input (``first``; None for an identity: no layers, no final) and the rest of the
    network from that layer's output (``rest(pre)``, on the weights themselves: no module
    calls): so the first product can be fused with other products of the same input."""
    _need(type(mlp) is MLP)
    layers = list(mlp.layers)
    last = None if final is None else _weights(final)
    if not layers:
        return final, lambda pre: pre
    hidden = [_weights(layer) for layer in layers[1:]]

    def rest(pre: Tensor) -> Tensor:
        h = torch.relu(pre)
        for w, b in hidden:
            h = torch.relu(F.linear(h, w, b))
        return h if last is None else F.linear(h, *last)

    return layers[0], rest


def features(mlp: nn.Module) -> Callable[[Tensor], Tensor]:
    """A feature extractor (phi_x, phi_z) as a function on its weights, or the identity (no
    layers) without a call."""
    _need(type(mlp) is MLP)
    layers = [_weights(layer) for layer in mlp.layers]
    if not layers:
        return lambda v: v

    def run(v: Tensor) -> Tensor:
        for w, b in layers:
            v = torch.relu(F.linear(v, w, b))
        return v

    return run


class Fused:
    """Every product with one input as one matrix product: ``blocks`` of ``(weight (out_i, in),
    bias (out_i,) or None)`` stacked once; calling it on ``v (N, in)`` returns the blocks'
    ``v W_i^T + b_i`` as views ``(N, out_i)``."""

    def __init__(self, blocks: list[tuple[Tensor, Tensor | None]]):
        self.sizes = [w.shape[0] for w, _ in blocks]
        self.weight = torch.cat([w for w, _ in blocks]).contiguous()  # (sum out_i, in)
        biases = [b for _, b in blocks]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else w.new_zeros(w.shape[0]) for (w, _), b in zip(blocks, biases)])
        self.one = len(blocks) == 1

    def __call__(self, v: Tensor) -> tuple[Tensor, ...]:
        out = F.linear(v, self.weight, self.bias)
        return (out,) if self.one else out.split_with_sizes(self.sizes, -1)


def latent_net(net: nn.Module) -> tuple[nn.Linear, Callable[[Tensor], Tensor], float]:
    """A :class:`LatentGaussian` (phi_prior) as :func:`split_net`'s pair and its scale floor."""
    _need(type(net) is LatentGaussian)
    first, rest = split_net(net.mlp, net.gaussian.linear)
    return first, rest, net.gaussian.min_scale


def decoder_net(dec: nn.Module) -> tuple[nn.Linear, Callable[[Tensor], Tensor], nn.Module]:
    """A :class:`Decoder` (phi_dec and its head) as :func:`split_net`'s pair ending in the head's
    linear output, and the head (whose ``sample_from`` draws the frame from that output)."""
    _need(type(dec) is Decoder and hasattr(dec.head, "sample_from"))
    first, rest = split_net(dec.mlp, dec.head.linear)
    return first, rest, dec.head


class Cell:
    """A library LSTM or GRU (``nn.LSTMCell``/``nn.GRUCell`` or a one-layer ``nn.LSTM``/
    ``nn.GRU``) as its weights and its gate equations (the library's gate order).

    ``hidden()``: the product that reads h_{t-1} as a block for :class:`Fused`, ``W_hh`` with
    the biases that go with it (an LSTM's b_ih + b_hh: its gates are one sum; a GRU's b_hh: its
    candidate's reset gate multiplies the hidden side with its bias); ``input_bias``: the bias
    left for the input side (a GRU's b_ih; None for an LSTM); ``update(gi, gh, state)``: the
    next state from the input-side pre-activations ``gi (N, G)`` and the hidden side ``gh``."""

    def __init__(self, module: nn.Module):
        if type(module) in (nn.LSTMCell, nn.GRUCell):
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        else:  # one layer, one direction, no projection
            _need(type(module) in (nn.LSTM, nn.GRU) and module.num_layers == 1
                  and not module.bidirectional and getattr(module, "proj_size", 0) == 0)
            names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        self.w_ih, self.w_hh, b_ih, b_hh = (getattr(module, n, None) for n in names)
        self.lstm = type(module) in (nn.LSTMCell, nn.LSTM)
        if self.lstm:
            both = [b for b in (b_ih, b_hh) if b is not None]
            self.hidden_bias = sum(both[1:], both[0]) if both else None
            self.input_bias = None
        else:
            self.hidden_bias, self.input_bias = b_hh, b_ih

    def hidden(self) -> tuple[Tensor, Tensor | None]:
        return self.w_hh, self.hidden_bias

    def update(self, gi: Tensor, gh: Tensor, state: State) -> State:
        H = state[0].shape[-1]
        if self.lstm:  # c_t = sigma(f) c_{t-1} + sigma(i) tanh(g), h_t = sigma(o) tanh(c_t)
            pre = gi + gh  # (N, 4H): i, f, g, o
            act = torch.sigmoid(pre)  # i, f and o (g's column block unused)
            c = torch.addcmul(act[:, H:2 * H] * state[1], act[:, :H],
                              torch.tanh(pre[:, 2 * H:3 * H]))
            return act[:, 3 * H:] * torch.tanh(c), c
        # GRU: n = tanh(gi_n + r gh_n), h_t = (1 - u) n + u h_{t-1}
        r, u = torch.sigmoid(gi[:, :2 * H] + gh[:, :2 * H]).chunk(2, -1)
        n = torch.tanh(torch.addcmul(gi[:, 2 * H:], r, gh[:, 2 * H:]))
        return ((1 - u) * n + u * state[0],)


class Sampler:
    """What every family's sampler shares: the dtype, device and sizes of the model's weights
    (it keeps no reference to the model itself, which keys its cache) and the loop over steps
    into one preallocated output; a family states :meth:`start` (the carry from the model's
    state) and :meth:`step`."""

    def __init__(self, model: nn.Module):
        ref = model.initial_state  # (no reference to the model: the cache is keyed by it)
        self.dtype, self.device = ref.dtype, ref.device
        self.Z, self.D = model.latent_dim, model.config.x_dim

    def eps(self, num: int, generator: torch.Generator | None) -> Tensor:
        """The prior's noise of one step, drawn as the literal sampler draws it."""
        return torch.randn(num, self.Z, dtype=self.dtype, device=self.device, generator=generator)

    @torch.no_grad()
    def run(self, state: State, steps: int, temperature: float,
            generator: torch.Generator | None) -> Tensor:
        """``steps`` frames from ``state`` (each ``(num, .)``) -> ``(num, steps, D)``."""
        num = state[0].shape[0]
        out = torch.empty(num, steps, self.D, dtype=self.dtype, device=self.device)
        if steps == 0:
            return out
        carry = self.start(state)
        for t in range(steps):
            x, carry = self.step(carry, self.eps(num, generator), temperature, generator)
            out[:, t] = x
        return out

    def start(self, state: State):
        raise NotImplementedError

    def step(self, carry, eps: Tensor, temperature: float, generator):
        """One step from ``carry`` with the prior's noise ``eps (N, Z)`` -> ``(x_t (N, D),
        carry)``."""
        raise NotImplementedError


# -- the families --------------------------------------------------------------------------------


class VRNNSampler(Sampler):
    """The VRNN (Chung et al. 2015): from h_{t-1}, z_t ~ p(z_t | h_{t-1}) (Eq. 5; N(0, I) for
    VRNN-I), x_t ~ phi_dec(phi_z(z_t), h_{t-1}) (Eq. 6), h_t = f(phi_x(x_t), phi_z(z_t),
    h_{t-1}) (Eq. 7). Two fused products per step besides the MLPs' own: h_{t-1} with
    [phi_prior's first layer; phi_dec's h-columns; W_hh], phi_z(z_t) with [phi_dec's
    z-columns; W_ih's z-columns]."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        m = model
        self.phi_x, self.phi_z = features(m.phi_x), features(m.phi_z)
        Fz, X = m.phi_z.out_dim, m.phi_x.out_dim
        dec, self.dec_rest, self.head = decoder_net(m.decoder)
        self.cell = Cell(m.cell)
        blocks = [(dec.weight[:, Fz:], dec.bias), self.cell.hidden()]
        self.prior = None
        if m.prior is not None:
            first, self.prior, self.min_scale = latent_net(m.prior)
            blocks.insert(0, (first.weight, first.bias))
        self.on_h = Fused(blocks)  # h_{t-1}: [prior; decoder's h-columns; W_hh]
        self.on_z = Fused([(dec.weight[:, :Fz], None),
                           (self.cell.w_ih[:, X:], self.cell.input_bias)])
        self.w_x = self.cell.w_ih[:, :X].contiguous().t()  # (X, G)

    def start(self, state: State) -> State:
        return state

    def step(self, state, eps, temperature, generator):
        *prior_pre, dec_h, gh = self.on_h(state[0])
        if self.prior is None:
            z = eps  # VRNN-I: 0 + 1 * eps
        else:
            loc, scale = gaussian_params(self.prior(prior_pre[0]), self.min_scale)  # Eq. 5
            z = torch.addcmul(loc, scale, eps)
        dec_z, gz = self.on_z(self.phi_z(z))
        x = self.head.sample_from(self.dec_rest(dec_h + dec_z), temperature, generator)  # Eq. 6
        gi = torch.addmm(gz, self.phi_x(x), self.w_x)
        return x, self.cell.update(gi, gh, state)  # Eq. 7


class SRNNSampler(Sampler):
    """The SRNN (Fraccaro et al. 2016): d_t = f(d_{t-1}, phi_x(x_{t-1})), z_t ~ p(z_t | z_{t-1},
    d_t), x_t ~ p(x_t | z_t, d_t). Fused: d_t with [the prior's d-columns; the emission's
    d-columns; W_hh (for d_{t+1})], z_t with [the emission's z-columns; the prior's z-columns
    (for z_{t+1})]."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        m = model
        H, Z = m.config.h_dim, self.Z
        self.phi_x = features(m.phi_x)
        prior, self.prior, self.min_scale = latent_net(m.prior)
        dec, self.dec_rest, self.head = decoder_net(m.decoder)
        self.cell = Cell(m.rnn)
        self.n_d = 2 if self.cell.lstm else 1
        self.on_d = Fused([(prior.weight[:, :H], prior.bias), (dec.weight[:, Z:], dec.bias),
                           self.cell.hidden()])
        self.on_z = Fused([(dec.weight[:, :Z], None), (prior.weight[:, H:], None)])
        self.on_x = Fused([(self.cell.w_ih, self.cell.input_bias)])
        self.gh0 = Fused([self.cell.hidden()])

    def start(self, state: State):
        *d_state, z_prev, x_prev = state
        (gh,) = self.gh0(d_state[0])
        (_, prior_z) = self.on_z(z_prev)
        return tuple(d_state), gh, prior_z, x_prev

    def step(self, carry, eps, temperature, generator):
        d_state, gh, prior_z, x_prev = carry
        (gx,) = self.on_x(self.phi_x(x_prev))
        d_state = self.cell.update(gx, gh, d_state)  # d_t
        prior_d, dec_d, gh = self.on_d(d_state[0])
        loc, scale = gaussian_params(self.prior(prior_d + prior_z), self.min_scale)
        z = torch.addcmul(loc, scale, eps)
        dec_z, prior_z = self.on_z(z)
        x = self.head.sample_from(self.dec_rest(dec_d + dec_z), temperature, generator)
        return x, (d_state, gh, prior_z, x)


class DMMSampler(Sampler):
    """The DMM (Krishnan et al. 2017): z_t ~ p(z_t | z_{t-1}) (the gated transition), x_t ~
    p(x_t | z_t). Fused: z_t with [the emitter's first layer; the transition's three first
    layers (gate, proposal, linear mean; for z_{t+1})]. The inference RNN's state (filtering)
    rides along unread, as the step protocol leaves it."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        tr = model.transition
        _need(all(type(getattr(tr, n)) is nn.Linear
                  for n in ("gate", "proposal", "linear_loc", "scale")))
        gate, self.gate = split_net(tr.gate_hidden, tr.gate)
        prop, self.proposal = split_net(tr.proposal_hidden, tr.proposal)
        self.scale, self.min_scale = _weights(tr.scale), tr.min_scale
        emit, self.emit_rest, self.head = decoder_net(model.emitter)
        transition = [(w.weight, w.bias) for w in (gate, prop, tr.linear_loc)]
        self.on_z0 = Fused(transition)
        self.on_z = Fused([(emit.weight, emit.bias), *transition])

    def start(self, state: State):
        return self.on_z0(state[0]), state[1:]

    def step(self, carry, eps, temperature, generator):
        (gate_pre, prop_pre, lin), rest = carry
        g = torch.sigmoid(self.gate(gate_pre))
        h = self.proposal(prop_pre)
        loc = (1 - g) * lin + g * h
        z = torch.addcmul(loc, positive_scale(F.linear(torch.relu(h), *self.scale),
                                              self.min_scale), eps)
        emit, *transition = self.on_z(z)
        x = self.head.sample_from(self.emit_rest(emit), temperature, generator)
        return x, (transition, rest)


class STORNSampler(Sampler):
    """STORN (Bayer and Osendorfer 2014): z_t ~ N(0, I), h_t = f(h_{t-1}, [phi_x(x_{t-1}),
    phi_z(z_t)]), x_t ~ p(x_t | h_t). Fused: h_t with [the decoder's first layer; W_hh (for
    h_{t+1})]. The recognition RNN's state rides along unread."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        m = model
        _need(type(m.rnn) is ForwardRNN)
        self.phi_x, self.phi_z = features(m.phi_x), features(m.phi_z)
        X = m.phi_x.out_dim
        dec, self.dec_rest, self.head = decoder_net(m.decoder)
        self.cell = Cell(m.rnn.rnn)
        self.n_h = 2 if self.cell.lstm else 1
        self.on_h = Fused([(dec.weight, dec.bias), self.cell.hidden()])
        self.gh0 = Fused([self.cell.hidden()])
        self.on_x = Fused([(self.cell.w_ih[:, :X], self.cell.input_bias)])
        self.w_z = self.cell.w_ih[:, X:].contiguous().t()  # (F, G)

    def start(self, state: State):
        h_state, rest = state[:self.n_h], state[self.n_h:-1]
        (gh,) = self.gh0(h_state[0])
        (gx,) = self.on_x(self.phi_x(state[-1]))
        return h_state, gh, gx, rest

    def step(self, carry, eps, temperature, generator):
        h_state, gh, gx, rest = carry
        gi = torch.addmm(gx, self.phi_z(eps), self.w_z)  # z_t = 0 + 1 * eps
        h_state = self.cell.update(gi, gh, h_state)
        dec, gh = self.on_h(h_state[0])
        x = self.head.sample_from(self.dec_rest(dec), temperature, generator)
        (gx,) = self.on_x(self.phi_x(x))
        return x, (h_state, gh, gx, rest)


class RNNSampler(Sampler):
    """The RNN baselines: x_t ~ phi_dec(h_{t-1}), h_t = f(phi_x(x_t), h_{t-1}). Fused: h_{t-1}
    with [the decoder's first layer; W_hh]. The empty z_t is drawn as the literal sampler draws
    it (nothing)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.phi_x = features(model.phi_x)
        dec, self.dec_rest, self.head = decoder_net(model.decoder)
        self.cell = Cell(model.rnn)
        self.on_h = Fused([(dec.weight, dec.bias), self.cell.hidden()])
        self.on_x = Fused([(self.cell.w_ih, self.cell.input_bias)])

    def start(self, state: State) -> State:
        return state

    def step(self, state, eps, temperature, generator):
        dec, gh = self.on_h(state[0])
        x = self.head.sample_from(self.dec_rest(dec), temperature, generator)
        (gx,) = self.on_x(self.phi_x(x))
        return x, self.cell.update(gx, gh, state)


_SAMPLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> (the key of its weights, its sampler): the fused weights are stacked once, not at
every call, and afresh once any weight changes (an optimiser step, ``load_state_dict``, a cast or
a move: each changes a parameter's version or storage)."""


def _weights_key(model: nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, p.device)
                 for p in itertools.chain(model.parameters(), model.buffers()))


def fast_sampler(model: nn.Module) -> Sampler | None:
    """The model's fast sampler (its class's ``fast_sampler``), or None where it has none or
    holds a network the sampler cannot split."""
    cls = getattr(type(model), "fast_sampler", None)
    if cls is None:
        return None
    key = (cls, _weights_key(model))
    cached = _SAMPLERS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        with torch.no_grad():
            sampler = cls(model)
    except NotFast:
        sampler = None
    _SAMPLERS[model] = (key, sampler)
    return sampler

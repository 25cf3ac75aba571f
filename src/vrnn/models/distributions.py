"""Output and latent distributions of the VRNN and its RNN baselines.

Every network in this package ends in a *head*: a linear layer whose output is read as the
parameters of a ``torch.distributions`` object. Scales are standard deviations, always
``softplus(raw) + min_scale``: mixing up std, variance and log-variance is the classic bug of
public VRNN code, so nothing here takes a log of a scale.

Notation (batch-first, as everywhere in the package): B batch, T time, D frame size, Z latent
size, K mixture components. Heads accept inputs of any leading shape ``(..., in_dim)``.

Temperature ``tau`` follows the handwriting-synthesis convention: mixture, Bernoulli and
Categorical logits are divided by tau and scales multiplied by sqrt(tau); tau = 1 is the model
itself, tau -> 0 the most probable value (a Categorical's argmax).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    OneHotCategorical,
    constraints,
)

from vrnn.kernels.activations import positive_scale

OUTPUTS = ("gauss", "gmm", "bernoulli", "stroke-gauss", "stroke-gmm", "categorical")

_NO_SHAPE = torch.Size()

# |rho| is kept below this so that 1 - rho^2 stays representable in float32.
MAX_CORRELATION = 0.999


def diagonal_normal(loc: Tensor, scale: Tensor) -> Independent:
    """A diagonal Gaussian over the last axis of ``loc``, ``scale (..., n)`` (standard
    deviations): ``Independent(Normal(loc, scale), 1)``, batch ``(...)``, event ``(n,)``."""
    return Independent(Normal(loc, scale), 1)


def bivariate_log_density(x: Tensor, loc: Tensor, scale: Tensor, rho: Tensor) -> Tensor:
    """The bivariate normal's log-density of ``x (..., 2)`` with ``loc``, ``scale`` ``(..., 2)``
    and correlation ``rho (...)`` -> ``(...)``: :meth:`BivariateNormal.log_prob`, and the pen
    strokes' per-step weights without the object."""
    z1, z2 = ((x - loc) / scale).unbind(-1)
    one_minus_rho2 = 1.0 - rho.square()
    quad = (z1.square() - 2.0 * rho * z1 * z2 + z2.square()) / one_minus_rho2
    return -math.log(2.0 * math.pi) - scale.log().sum(-1) - 0.5 * one_minus_rho2.log() - 0.5 * quad


class BivariateNormal(Distribution):
    """Bivariate normal over (dx, dy) with a correlation term, as in Graves (2013) Eq. 24-25.

    Args:
        loc: ``(..., 2)`` means.
        scale: ``(..., 2)`` standard deviations.
        rho: ``(...)`` correlations in (-1, 1).

    ``event_shape`` is ``(2,)``; ``batch_shape`` is ``loc.shape[:-1]``. The closed-form density
    is used instead of ``MultivariateNormal`` (which solves a triangular system per point).
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "scale": constraints.independent(constraints.positive, 1),
        "rho": constraints.interval(-1.0, 1.0),
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, rho: Tensor, validate_args: bool | None = None):
        if loc.shape[-1] != 2 or scale.shape != loc.shape or rho.shape != loc.shape[:-1]:
            raise ValueError(
                f"BivariateNormal needs loc and scale of shape (..., 2) and rho of shape (...); "
                f"got loc {tuple(loc.shape)}, scale {tuple(scale.shape)}, rho {tuple(rho.shape)}"
            )
        self.loc, self.scale, self.rho = loc, scale, rho
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    @property
    def mean(self) -> Tensor:
        return self.loc

    def log_prob(self, value: Tensor) -> Tensor:
        return bivariate_log_density(value, self.loc, self.scale, self.rho)

    def rsample(self, sample_shape: torch.Size = _NO_SHAPE, generator=None) -> Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        e1, e2 = eps.unbind(-1)
        s1, s2 = self.scale.unbind(-1)
        m1, m2 = self.loc.unbind(-1)
        x1 = m1 + s1 * e1
        x2 = m2 + s2 * (self.rho * e1 + (1.0 - self.rho.square()).sqrt() * e2)
        return torch.stack([x1, x2], -1)

    def sample(self, sample_shape: torch.Size = _NO_SHAPE, generator=None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)


class StrokeDistribution(Distribution):
    """Pen-stroke frames ``(dx, dy, pen_up)``: a (mixture of) bivariate normal(s) over the offset
    times an independent Bernoulli pen-up bit, the IAM-OnDB output of the paper.

    Args:
        offset: a distribution with ``event_shape (2,)`` over (dx, dy).
        pen: ``Bernoulli`` over the pen-up bit, same batch shape.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, offset: Distribution, pen: Bernoulli, validate_args: bool | None = None):
        self.offset, self.pen = offset, pen
        super().__init__(offset.batch_shape, torch.Size([3]), validate_args=validate_args)

    @property
    def mean(self) -> Tensor:
        return torch.cat([self.offset.mean, self.pen.mean.unsqueeze(-1)], -1)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.offset.log_prob(value[..., :2]) + self.pen.log_prob(value[..., 2])


class CategoricalFrames(OneHotCategorical):
    """One symbol of V per frame, the frame its one-hot vector ``(..., V)``: text characters.

    ``torch.distributions.OneHotCategorical(logits=...)`` with a log-density that reads a frame
    as the dot product ``sum_v x_v log p_v``: log p(k) for the one-hot frame of symbol k, and 0
    for an all-zero frame, so the zero frames that pad a batch are finite (the mask removes them)
    where ``OneHotCategorical.log_prob`` would read them as symbol 0 or refuse them.
    ``mean`` is the probability vector, ``mode`` the one-hot frame of the most probable symbol.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            ok = ((value == 0) | (value == 1)).all(-1) & (value.sum(-1) <= 1)
            if not bool(ok.all()):
                raise ValueError(f"CategoricalFrames.log_prob needs one-hot (or all-zero padding) "
                                 f"frames of size V={self.event_shape[0]}; got values of shape "
                                 f"{tuple(value.shape)} that are not")
        return (value * self.logits).sum(-1)  # (...): self.logits are log-softmax normalised


def draw(dist: Distribution, generator: torch.Generator | None = None) -> Tensor:
    """One sample from any distribution built in this module, from ``generator``'s stream.

    ``torch.distributions`` samplers take no generator; seeded, reproducible generation needs one.
    """
    if isinstance(dist, Independent):
        return draw(dist.base_dist, generator)
    if isinstance(dist, Normal):
        eps = torch.randn(dist.loc.shape, dtype=dist.loc.dtype, device=dist.loc.device,
                          generator=generator)
        return dist.loc + dist.scale * eps
    if isinstance(dist, Bernoulli):
        u = torch.rand(dist.probs.shape, dtype=dist.probs.dtype, device=dist.probs.device,
                       generator=generator)
        return (u < dist.probs).to(dist.probs.dtype)
    if isinstance(dist, OneHotCategorical):
        probs = dist.probs  # (..., V)
        v = probs.shape[-1]
        idx = torch.multinomial(probs.reshape(-1, v), 1, generator=generator)  # (N, 1)
        return F.one_hot(idx.view(probs.shape[:-1]), v).to(probs.dtype)  # (..., V)
    if isinstance(dist, BivariateNormal):
        return dist.sample(generator=generator)
    if isinstance(dist, MixtureSameFamily):
        probs = dist.mixture_distribution.probs  # (..., K)
        k = probs.shape[-1]
        idx = torch.multinomial(probs.reshape(-1, k), 1, generator=generator)  # (N, 1)
        idx = idx.view(probs.shape[:-1])  # (...)
        comp = draw(dist.component_distribution, generator)  # (..., K, *event)
        event = dist.event_shape
        gather_idx = idx.view(*idx.shape, 1, *([1] * len(event))).expand(
            *idx.shape, 1, *event
        )
        return comp.gather(len(idx.shape), gather_idx).squeeze(len(idx.shape))  # (..., *event)
    if isinstance(dist, StrokeDistribution):
        offset = draw(dist.offset, generator)
        pen = draw(dist.pen, generator)
        return torch.cat([offset, pen.unsqueeze(-1)], -1)
    raise TypeError(f"draw() does not know how to sample {type(dist).__name__}")


# -- drawing from a head's linear output directly (fast generation) --------------------------------
# Each head's ``sample_from(out, temperature, generator)`` draws what ``draw(head(h, temperature),
# generator)`` draws from ``out = head.linear(h)``, without building a distribution: the same
# parameters by the same operations and the same random numbers from ``generator`` in the same
# order (so the two agree draw for draw), and nothing that validates arguments.


def _category(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """One category per row of ``logits (..., K)`` -> ``(...)``: ``Categorical(logits=...)``'s
    probabilities (the log-softmax normalised logits through a softmax, as that class computes
    them, so that ``torch.multinomial`` sees the same numbers) and one multinomial draw."""
    k = logits.shape[-1]
    probs = F.softmax(logits - logits.logsumexp(-1, keepdim=True), -1)  # (..., K)
    return torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(
        logits.shape[:-1])


def _bits(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """Bernoulli bits of ``logits``: a uniform below ``sigmoid(logits)``, as :func:`draw`."""
    probs = torch.sigmoid(logits)
    u = torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator)
    return (u < probs).to(probs.dtype)


def _columns(index: Tensor, width: int, offset: int = 0) -> Tensor:
    """The columns ``offset + index * width + (0 .. width - 1)`` of component ``index (N,)`` in
    a row of K blocks of ``width`` -> ``(N, width)`` (for ``gather``)."""
    return torch.arange(offset, offset + width, device=index.device) + index.unsqueeze(-1) * width


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _normal_log_density(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """``Normal(loc, scale).log_prob(x)``, element-wise, without a distribution object."""
    return -0.5 * ((x - loc) / scale).square() - scale.log() - _HALF_LOG_2PI


def gaussian_params(out: Tensor, min_scale: float) -> tuple[Tensor, Tensor]:
    """loc and scale of a Gaussian layer's linear output ``(..., 2 D)``: the first half, and the
    second through :func:`positive_scale` (every Gaussian layer of the library)."""
    loc, raw = out.chunk(2, -1)
    return loc, positive_scale(raw, min_scale)


class GaussianHead(nn.Module):
    """Linear layer to a diagonal Gaussian ``Independent(Normal(loc, scale), 1)`` over D dims."""

    def __init__(self, in_dim: int, out_dim: int, *, min_scale: float, scale_bias: float):
        super().__init__()
        self.out_dim, self.min_scale = out_dim, min_scale
        self.linear = nn.Linear(in_dim, 2 * out_dim)
        with torch.no_grad():
            self.linear.bias[out_dim:].fill_(scale_bias)

    def params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``h (..., in_dim)`` -> ``loc, scale`` each ``(..., out_dim)``."""
        return gaussian_params(self.linear(h), self.min_scale)

    def forward(self, h: Tensor, temperature: float = 1.0) -> Distribution:
        loc, scale = self.params(h)
        if temperature != 1.0:
            scale = scale * math.sqrt(temperature)
        return diagonal_normal(loc, scale)

    def sample_from(self, out: Tensor, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``forward`` from the linear output ``out (N, 2 D)`` -> ``(N, D)``."""
        loc, scale = gaussian_params(out, self.min_scale)
        if temperature != 1.0:
            scale = scale * math.sqrt(temperature)
        eps = torch.randn(loc.shape, dtype=loc.dtype, device=loc.device, generator=generator)
        return loc + scale * eps

    def log_density(self, out: Tensor, x: Tensor) -> Tensor:
        """``forward``'s log-density of frames ``x (N, D)`` from the linear output ``out
        (N, 2 D)`` -> ``(N,)``, without a distribution object (a particle filter's per-step
        weights)."""
        loc, scale = gaussian_params(out, self.min_scale)
        return _normal_log_density(x, loc, scale).sum(-1)


class GMMHead(nn.Module):
    """Linear layer to a K-component diagonal Gaussian mixture over D dims, one set of mixture
    weights per frame: ``MixtureSameFamily(Categorical(logits), Independent(Normal, 1))``."""

    def __init__(self, in_dim: int, out_dim: int, components: int, *, min_scale: float,
                 scale_bias: float):
        super().__init__()
        self.out_dim, self.k, self.min_scale = out_dim, components, min_scale
        self.linear = nn.Linear(in_dim, components * (1 + 2 * out_dim))
        with torch.no_grad():
            self.linear.bias[components * (1 + out_dim):].fill_(scale_bias)

    def forward(self, h: Tensor, temperature: float = 1.0) -> Distribution:
        k, d = self.k, self.out_dim
        out = self.linear(h)
        logits, loc, raw = out.split([k, k * d, k * d], -1)
        loc = loc.unflatten(-1, (k, d))  # (..., K, D)
        scale = positive_scale(raw, self.min_scale).unflatten(-1, (k, d))  # (..., K, D)
        if temperature != 1.0:
            logits, scale = logits / temperature, scale * math.sqrt(temperature)
        return MixtureSameFamily(Categorical(logits=logits), diagonal_normal(loc, scale))

    def sample_from(self, out: Tensor, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``forward`` from the linear output ``out (N, K (1 + 2 D))`` -> ``(N, D)``:
        the component, then the noise of every component (as :func:`draw`), of which the
        chosen one's is used."""
        k, d = self.k, self.out_dim
        logits = out[:, :k] if temperature == 1.0 else out[:, :k] / temperature
        idx = _category(logits, generator)  # (N,)
        eps = torch.randn(out.shape[0], k * d, dtype=out.dtype, device=out.device,
                          generator=generator)  # (N, K D): every component's, as draw()
        cols = _columns(idx, d)  # (N, D): the chosen component's
        loc = out.gather(1, cols + k)  # [logits K | loc K D | raw K D]
        scale = positive_scale(out.gather(1, cols + k * (1 + d)), self.min_scale)
        if temperature != 1.0:
            scale = scale * math.sqrt(temperature)
        return loc + scale * eps.gather(1, cols)

    def log_density(self, out: Tensor, x: Tensor) -> Tensor:
        """``forward``'s log-density of frames ``x (N, D)`` from the linear output ``out
        (N, K (1 + 2 D))`` -> ``(N,)``, without distribution objects."""
        k, d = self.k, self.out_dim
        logits, loc, raw = out.split([k, k * d, k * d], -1)
        loc = loc.unflatten(-1, (k, d))  # (N, K, D)
        scale = positive_scale(raw, self.min_scale).unflatten(-1, (k, d))  # (N, K, D)
        per = _normal_log_density(x.unsqueeze(-2), loc, scale).sum(-1)  # (N, K)
        return (torch.log_softmax(logits, -1) + per).logsumexp(-1)


class BernoulliHead(nn.Module):
    """Linear layer to independent Bernoulli bits ``Independent(Bernoulli(logits=...), 1)``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, h: Tensor, temperature: float = 1.0) -> Distribution:
        logits = self.linear(h)
        if temperature != 1.0:
            logits = logits / temperature
        return Independent(Bernoulli(logits=logits), 1)

    def sample_from(self, out: Tensor, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``forward`` from the logits ``out (N, D)`` -> ``(N, D)`` bits."""
        return _bits(out / temperature if temperature != 1.0 else out, generator)

    def log_density(self, out: Tensor, x: Tensor) -> Tensor:
        """``forward``'s log-probability of bits ``x (N, D)`` from the logits ``out (N, D)``
        -> ``(N,)``, without a distribution object."""
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)


class CategoricalHead(nn.Module):
    """Linear layer to one symbol of ``out_dim`` per frame, :class:`CategoricalFrames` over
    one-hot frames (``logits=``; the event is the frame, so no ``Independent``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, h: Tensor, temperature: float = 1.0) -> Distribution:
        logits = self.linear(h)  # (..., V)
        if temperature != 1.0:
            logits = logits / temperature
        return CategoricalFrames(logits=logits)

    def sample_from(self, out: Tensor, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``forward`` from the logits ``out (N, V)`` -> ``(N, V)`` one-hot frames."""
        idx = _category(out / temperature if temperature != 1.0 else out, generator)
        return F.one_hot(idx, out.shape[-1]).to(out.dtype)

    def log_density(self, out: Tensor, x: Tensor) -> Tensor:
        """``forward``'s log-probability of one-hot frames ``x (N, V)`` from the logits ``out
        (N, V)`` -> ``(N,)`` (0 for an all-zero padding frame, as :class:`CategoricalFrames`)."""
        return (x * torch.log_softmax(out, -1)).sum(-1)


class StrokeHead(nn.Module):
    """Linear layer to pen-stroke frames ``(dx, dy, pen_up)``: a K-component mixture of bivariate
    normals with correlation (K = 1 is the bivariate Gaussian output) times a Bernoulli pen bit."""

    def __init__(self, in_dim: int, components: int, *, min_scale: float, scale_bias: float):
        super().__init__()
        self.k, self.min_scale = components, min_scale
        # per component: 1 logit, 2 locs, 2 raw scales, 1 raw correlation; then 1 pen logit
        self.linear = nn.Linear(in_dim, 6 * components + 1)
        with torch.no_grad():
            self.linear.bias[3 * components:5 * components].fill_(scale_bias)

    def forward(self, h: Tensor, temperature: float = 1.0) -> Distribution:
        k = self.k
        logits, loc, raw, raw_rho, pen_logit = self.linear(h).split([k, 2 * k, 2 * k, k, 1], -1)
        loc = loc.unflatten(-1, (k, 2))  # (..., K, 2)
        scale = positive_scale(raw, self.min_scale).unflatten(-1, (k, 2))  # (..., K, 2)
        rho = MAX_CORRELATION * torch.tanh(raw_rho)  # (..., K)
        pen_logit = pen_logit.squeeze(-1)  # (...)
        if temperature != 1.0:
            logits, pen_logit = logits / temperature, pen_logit / temperature
            scale = scale * math.sqrt(temperature)
        offset = MixtureSameFamily(Categorical(logits=logits), BivariateNormal(loc, scale, rho))
        return StrokeDistribution(offset, Bernoulli(logits=pen_logit))

    def sample_from(self, out: Tensor, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``forward`` from the linear output ``out (N, 6 K + 1)`` -> ``(N, 3)``: the
        component, the noise of every component (as :func:`draw`), the chosen one's offset
        (Graves's Eq. 24-25), then the pen bit."""
        k = self.k  # out: [logits K | loc 2K | raw scale 2K | raw rho K | pen 1]
        logits, pen_logit = out[:, :k], out[:, -1]
        if temperature != 1.0:
            logits, pen_logit = logits / temperature, pen_logit / temperature
        idx = _category(logits, generator)  # (N,)
        eps = torch.randn(out.shape[0], 2 * k, dtype=out.dtype, device=out.device,
                          generator=generator)  # (N, 2K): every component's, as draw()
        cols = _columns(idx, 2)  # (N, 2): the chosen component's
        e1, e2 = eps.gather(1, cols).unbind(-1)
        m1, m2 = out.gather(1, cols + k).unbind(-1)
        scale = positive_scale(out.gather(1, cols + 3 * k), self.min_scale)
        if temperature != 1.0:
            scale = scale * math.sqrt(temperature)
        s1, s2 = scale.unbind(-1)
        rho = MAX_CORRELATION * torch.tanh(out.gather(1, idx.unsqueeze(-1) + 5 * k)[:, 0])
        x1 = m1 + s1 * e1
        x2 = m2 + s2 * (rho * e1 + (1.0 - rho.square()).sqrt() * e2)
        return torch.stack([x1, x2, _bits(pen_logit, generator)], -1)

    def log_density(self, out: Tensor, x: Tensor) -> Tensor:
        """``forward``'s log-density of frames ``x (N, 3)`` from the linear output ``out
        (N, 6 K + 1)`` -> ``(N,)``, without distribution objects: the mixture of
        :class:`BivariateNormal` over (dx, dy), plus the pen bit's Bernoulli."""
        k = self.k
        logits, loc, raw, raw_rho, pen_logit = out.split([k, 2 * k, 2 * k, k, 1], -1)
        loc = loc.unflatten(-1, (k, 2))  # (N, K, 2)
        scale = positive_scale(raw, self.min_scale).unflatten(-1, (k, 2))  # (N, K, 2)
        rho = MAX_CORRELATION * torch.tanh(raw_rho)  # (N, K)
        per = bivariate_log_density(x[..., None, :2], loc, scale, rho)  # (N, K)
        offset = (torch.log_softmax(logits, -1) + per).logsumexp(-1)
        pen = -F.binary_cross_entropy_with_logits(pen_logit.squeeze(-1), x[..., 2],
                                                  reduction="none")
        return offset + pen


def make_head(output: str, in_dim: int, x_dim: int, *, components: int, min_scale: float,
              scale_bias: float) -> nn.Module:
    """The output head named by ``output`` (one of ``OUTPUTS``) for frames of size ``x_dim``."""
    if output == "gauss":
        return GaussianHead(in_dim, x_dim, min_scale=min_scale, scale_bias=scale_bias)
    if output == "gmm":
        return GMMHead(in_dim, x_dim, components, min_scale=min_scale, scale_bias=scale_bias)
    if output == "bernoulli":
        return BernoulliHead(in_dim, x_dim)
    if output == "categorical":
        return CategoricalHead(in_dim, x_dim)
    if output in ("stroke-gauss", "stroke-gmm"):
        if x_dim != 3:
            raise ValueError(f"output {output!r} models (dx, dy, pen_up) frames: x_dim must be 3, "
                             f"got {x_dim}")
        k = 1 if output == "stroke-gauss" else components
        return StrokeHead(in_dim, k, min_scale=min_scale, scale_bias=scale_bias)
    raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")

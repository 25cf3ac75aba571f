"""Fast generation (vrnn.models.generation) against the literal sampler of the step protocol.

The literal sampler (``sample(..., literal=True)``: the prefix through ``literal_forward``, then
``generate``, every step's distribution objects drawn by ``distributions.draw``) is the oracle.
The fast sampler draws the same random numbers in the same order, so with one seed both give
the same sequences, up to the rounding of reordered sums: compared in float64 to 1e-9, every
family, every output head, both cells, networks without hidden layers, a temperature and a
prefix. Discrete draws (mixture components, bits, characters) must agree exactly."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from vrnn.models.build import build_model
from vrnn.models.config import MODEL_NAMES
from vrnn.models.generation import fast_sampler
from vrnn.models.presets import model_config

D = {"audio": 5, "strokes": 3, "binary": 6, "text": 6}


def _valid(name: str, kind: str) -> bool:
    try:
        model_config(name, x_dim=D[kind], data_kind=kind, preset="tiny")
    except ValueError:
        return False
    return True


CASES = [(n, k) for n, k in itertools.product(MODEL_NAMES, D) if _valid(n, k)]


def make_model(name: str, kind: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(model_config(name, x_dim=D[kind], data_kind=kind, preset="tiny",
                                     **overrides)).double()
    with torch.no_grad():  # away from the initial weights, so that every path matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def make_prime(kind: str, P: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(P, D[kind], generator=g, dtype=torch.float64)
    if kind == "strokes":
        x[:, 2] = (x[:, 2] > 0.5).double()
    elif kind == "binary":
        x = (x > 0).double()
    elif kind == "text":
        x = nn.functional.one_hot(x.argmax(-1), D[kind]).double()
    return x


def assert_same(model: nn.Module, kind: str, num: int = 3, steps: int = 9) -> None:
    """Fast and literal from one seed: unconditional and primed, at temperatures 1 and 0.6."""
    for prime, tau in itertools.product((None, make_prime(kind)), (1.0, 0.6)):
        fast, literal = (model.sample(num, steps, prime=prime, temperature=tau,
                                      generator=torch.Generator().manual_seed(11),
                                      literal=lit) for lit in (False, True))
        assert fast.shape == (num, steps, D[kind]) and fast.dtype == torch.float64
        torch.testing.assert_close(fast, literal, rtol=1e-9, atol=1e-9)
        if kind in ("binary", "text"):  # discrete frames: draw for draw
            assert torch.equal(fast, literal)
        if kind == "strokes":
            assert torch.equal(fast[..., 2], literal[..., 2])


@pytest.mark.parametrize("name,kind", CASES)
def test_fast_sampler_draws_what_the_literal_one_draws(name, kind):
    model = make_model(name, kind)
    assert fast_sampler(model) is not None  # the fast path runs, not a fallback
    assert_same(model, kind)


@pytest.mark.parametrize("name,kind,overrides", [
    ("vrnn-gauss", "audio", {"cell": "gru"}),
    ("vrnn-gmm", "strokes", {"phi_x": (), "phi_z": (), "decoder": (), "prior_net": ()}),
    ("vrnn-gauss", "audio", {"posterior": "smoothing", "prior_net": (7, 5)}),
    ("srnn-gauss", "audio", {"cell": "gru", "posterior": "filtering", "res_q": False}),
    ("srnn-bernoulli", "binary", {"phi_x": (), "decoder": (), "prior_net": ()}),
    ("dmm-gauss", "audio", {"prior_net": (), "decoder": (), "posterior": "filtering"}),
    ("dmm-gmm", "strokes", {"cell": "gru", "prior_net": (6, 4)}),
    ("storn-gauss", "audio", {"cell": "gru", "phi_x": (), "phi_z": ()}),
    ("rnn-gmm", "strokes", {"cell": "gru", "decoder": ()}),
])
def test_fast_sampler_on_other_shapes(name, kind, overrides):
    """Both cells, networks without hidden layers (identity phi_x, phi_z; a decoder or prior
    that is its Gaussian or output layer alone), deeper ones, either posterior for the prefix."""
    model = make_model(name, kind, **overrides)
    assert fast_sampler(model) is not None
    assert_same(model, kind)


@pytest.mark.parametrize("num", [1, 4])
def test_fast_sampling_builds_no_distribution(num, monkeypatch):
    """The fast path draws from the heads' outputs directly: constructing any
    torch.distributions object while it runs is an error."""
    models = [make_model(n, k) for n, k in (("vrnn-gmm", "strokes"), ("srnn-gauss", "audio"),
                                            ("dmm-bernoulli", "binary"),
                                            ("storn-categorical", "text"), ("rnn-gmm", "audio"))]

    def refuse(*args, **kwargs):
        raise AssertionError("a distribution object was built")

    monkeypatch.setattr(torch.distributions.Distribution, "__init__", refuse)
    for m in models:
        assert m.sample(num, 5, generator=torch.Generator().manual_seed(0)).shape[:2] == (num, 5)
    with pytest.raises(AssertionError, match="distribution object"):
        models[0].sample(num, 2, literal=True)  # the literal sampler does build them


def test_a_swapped_in_network_samples_literally():
    """A module that is not the library's own cannot be split: the model samples literally,
    giving what the literal sampler gives."""
    model = make_model("vrnn-gauss", "audio")
    swapped = nn.Sequential(nn.Linear(model.config.z_dim, model.phi_z.out_dim), nn.Tanh())
    model.phi_z = swapped.double()
    assert fast_sampler(model) is None
    a = model.sample(2, 4, generator=torch.Generator().manual_seed(0))
    b = model.sample(2, 4, generator=torch.Generator().manual_seed(0), literal=True)
    assert torch.equal(a, b)


def test_the_comparison_can_fail():
    """The oracle is not blind: a fast sampler that draws its mixture noise for the chosen
    component only (the same distribution, other numbers) is caught."""
    from vrnn.models import distributions as dist

    model = make_model("vrnn-gmm", "audio")
    head = model.decoder.head
    original = dist.GMMHead.sample_from

    def one_component(self, out, temperature=1.0, generator=None):
        k, d = self.k, self.out_dim
        cols = dist._columns(dist._category(out[:, :k] / temperature, generator), d)
        loc = out.gather(1, cols + k)
        scale = dist.positive_scale(out.gather(1, cols + k * (1 + d)), self.min_scale)
        return loc + scale * temperature ** 0.5 * torch.randn(loc.shape, dtype=loc.dtype,
                                                               generator=generator)

    try:
        dist.GMMHead.sample_from = one_component
        with pytest.raises(AssertionError):
            assert_same(model, "audio")
    finally:
        dist.GMMHead.sample_from = original
    assert head.sample_from.__func__ is original
    assert_same(model, "audio")


def test_float32_sampling_agrees():
    """At the training dtype the two agree to float32 rounding over a short horizon."""
    torch.manual_seed(0)
    model = build_model(model_config("vrnn-gauss", x_dim=5, preset="tiny"))
    fast, literal = (model.sample(4, 6, generator=torch.Generator().manual_seed(2), literal=lit)
                     for lit in (False, True))
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, literal, rtol=1e-4, atol=1e-5)

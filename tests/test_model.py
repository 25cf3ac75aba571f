"""The models: the fast path against the literal reference (:mod:`vrnn.models.reference`), masks,
gradients, sampling."""

import dataclasses

import pytest
import torch
from torch import nn

from vrnn import ModelConfig, build_model, masked_sum, model_config
from vrnn.models.config import parse_model_name
from vrnn.models.presets import DATA_KINDS, DEFAULT_X_DIM, PRESETS
from vrnn.models.reference import Literal, literal_primed_sample
from vrnn.models.rnn import RNN
from vrnn.models.vrnn import VRNN

KINDS = {"audio": 5, "strokes": 3, "binary": 6}


def make_x(kind: str, B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    D = KINDS[kind]
    x = torch.randn(B, T, D, generator=gen)
    if kind == "strokes":
        x[..., 2] = (x[..., 2] > 0.5).float()
    if kind == "binary":
        x = (x > 0).float()
    return x


def tiny(name: str, kind: str = "audio", **kw) -> ModelConfig:
    return model_config(name, x_dim=KINDS[kind], data_kind=kind, preset="tiny", **kw)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def assert_same_gradients(model: nn.Module, loss_a: torch.Tensor, loss_b: torch.Tensor) -> None:
    """Every parameter's gradient of ``loss_a`` equals that of ``loss_b`` to 1e-5 (relative)."""
    params = [p for p in model.parameters() if p.requires_grad]
    g_a = torch.autograd.grad(loss_a, params, allow_unused=True, retain_graph=True)
    g_b = torch.autograd.grad(loss_b, params, allow_unused=True, retain_graph=True)
    for (pname, p), a, b in zip(model.named_parameters(), g_a, g_b):
        a = torch.zeros_like(p) if a is None else a  # unused (e.g. the cell when T = 1)
        b = torch.zeros_like(p) if b is None else b
        if b.abs().sum() == 0:
            assert a.abs().sum() == 0, pname
        else:
            assert rel_err(a, b) < 1e-5, (pname, rel_err(a, b))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("name,kind", [("vrnn-gauss", "audio"), ("vrnn-i-gauss", "audio"),
                                       ("vrnn-gmm", "strokes"), ("vrnn-bernoulli", "binary")])
def test_fast_path_matches_per_step_reference(B, T, cell, name, kind):
    """Same weights, same noise: the same per-step terms, loss and gradients (float32, 1e-5)."""
    gen = torch.Generator().manual_seed(B * 100 + T)
    torch.manual_seed(0)
    model = build_model(tiny(name, kind, cell=cell, encoder=(16, 12), phi_x=(16, 16)))
    x = make_x(kind, B, T, gen)
    noise = torch.randn(B, T, model.config.z_dim, generator=gen)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[-1, T // 2 + 1:] = False  # a ragged batch

    terms = model(x, mask, noise=noise, sample_terms=True)
    ref = Literal(model)
    ref_px, ref_kl, ref_ratio = ref.terms(x, noise)
    torch.testing.assert_close(terms.log_px, ref_px, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.kl, ref_kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.log_pz - terms.log_qz, ref_ratio, rtol=1e-5, atol=1e-5)

    loss_fast = model.loss(x, mask, noise=noise)[0]
    loss_ref = ref.loss(x, noise, mask)
    assert loss_fast.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    assert loss_ref.item() == pytest.approx(-masked_sum(ref_px - ref_kl, mask).mean().item())
    assert_same_gradients(model, loss_fast, loss_ref)


class Wrapped(nn.Module):
    """A module that is not the library's MLP (so the fast loop cannot read its weights)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("route", ["autograd", "step-by-step"])
def test_every_route_through_the_filtering_loop_agrees(cell, route):
    """The autograd loop (``custom_loop = False``) and the module-by-module loop taken for a
    swapped-in phi_z give the hand-written loop's terms and gradients, replicas included."""
    torch.manual_seed(9)
    model = build_model(tiny("vrnn-gmm", cell=cell, encoder=(12, 10), phi_z=(8, 6)))
    gen = torch.Generator().manual_seed(3)
    x = make_x("audio", 2, 5, gen)
    noise = torch.randn(3 * 2, 5, model.config.z_dim, generator=gen)
    state = tuple(0.5 * torch.randn(6, model.config.h_dim, generator=gen)
                  for _ in model.initial_state)  # a carried state, different per row
    fast = model(x, noise=noise, state=state, replicas=3, sample_terms=True)
    other = VRNN(model.config)
    other.load_state_dict(model.state_dict())
    if route == "autograd":
        other.custom_loop = False
    else:
        other.phi_z = Wrapped(other.phi_z)
    slow = other(x, noise=noise, state=state, replicas=3, sample_terms=True)
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        torch.testing.assert_close(getattr(slow, key), getattr(fast, key), rtol=1e-5, atol=1e-5)
    for a, b in zip(slow.state, fast.state):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    loss_fast, loss_slow = -fast.elbo().mean(), -slow.elbo().mean()
    g_fast = torch.autograd.grad(loss_fast, list(model.parameters()), allow_unused=True)
    g_slow = torch.autograd.grad(loss_slow, list(other.parameters()), allow_unused=True)
    for (pname, _), a, b in zip(model.named_parameters(), g_slow, g_fast):
        if pname == "initial_state":  # not used: the state was given
            assert a is None and b is None
        else:
            assert rel_err(a, b) < 1e-5, (pname, rel_err(a, b))


# every output head: (data kind, output suffix) -> gauss, gmm, bernoulli, stroke-gauss, stroke-gmm
OUTPUT_KINDS = [("audio", "gauss"), ("audio", "gmm"), ("binary", "bernoulli"),
                ("strokes", "gauss"), ("strokes", "gmm")]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("family", ["vrnn", "vrnn-i", "rnn"])
@pytest.mark.parametrize("kind,output", OUTPUT_KINDS)
def test_every_parameter_receives_a_gradient(kind, output, family, cell):
    torch.manual_seed(1)
    model = build_model(tiny(f"{family}-{output}", kind, cell=cell))
    x = make_x(kind, 3, 5, torch.Generator().manual_seed(0))
    loss, _ = model.loss(x)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    if family == "vrnn-i":
        assert model.prior is None  # N(0, I): no prior network at all


@pytest.mark.parametrize("name", ["vrnn-gmm", "rnn-gauss"])
def test_padding_invariance(name):
    """A sequence's terms are the same alone and padded inside a longer batch."""
    torch.manual_seed(2)
    model = build_model(tiny(name))
    gen = torch.Generator().manual_seed(1)
    short = make_x("audio", 1, 4, gen)
    other = make_x("audio", 2, 9, gen)
    Z = model.config.z_dim
    noise = torch.randn(3, 9, Z, generator=gen)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 5, 5)], 1), other])
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, 4:] = False
    padded = model(batch, mask, noise=noise).elbo(mask)[0]
    alone = model(short, noise=noise[:1, :4]).elbo()[0]
    assert padded.item() == pytest.approx(alone.item(), rel=1e-6)
    batch[0, 4:] = 123.0  # whatever the padding holds
    assert model(batch, mask, noise=noise).elbo(mask)[0].item() == pytest.approx(
        alone.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["vrnn-gauss", "vrnn-i-gauss"])
def test_per_step_kl_matches_monte_carlo_of_the_models_own_posterior_and_prior(name):
    """``terms.kl`` at every step against E_q[log q(z_t) - log p(z_t)] over the z_t the model
    itself samples (R replicas of each sequence): the per-replica difference has mean zero given
    z_{<t}, so its replica mean must sit within a few standard errors of 0. Catches a KL with
    swapped arguments or a missing term, and a z_t not drawn from the q the KL is taken of."""
    torch.manual_seed(8)
    model = build_model(tiny(name))
    Z = model.config.z_dim
    with torch.no_grad():  # make q and p far apart and unequal in scale, so KL(q||p) != KL(p||q)
        enc = model.encoder.gaussian.linear
        enc.weight.mul_(3.0)
        enc.bias[Z:].fill_(-1.0)  # posterior scales about 0.3
        if model.prior is not None:
            prior = model.prior.gaussian.linear
            prior.weight.mul_(3.0)
            prior.bias[Z:].fill_(1.0)  # prior scales about 1.3
    B, T, R = 2, 4, 4000
    x = make_x("audio", B, T, torch.Generator().manual_seed(9))
    with torch.no_grad():
        terms = model(x, generator=torch.Generator().manual_seed(10), sample_terms=True,
                      replicas=R)
    kl = terms.kl.view(R, B, T)  # row r * B + b is replica r of sequence b
    mc = (terms.log_qz - terms.log_pz).view(R, B, T)  # one-sample estimates of the KL
    diff = mc - kl
    se = diff.std(0) / R**0.5  # (B, T)
    assert torch.all(kl > 1.0)  # far apart: the check below has something to find
    assert torch.all(diff.mean(0).abs() < 4 * se), (kl.mean(0), mc.mean(0), se)
    # step 1: h_0 is fixed, so every replica has the same q and p
    torch.testing.assert_close(kl[:, :, 0], kl[:1, :, 0].expand(R, B))


@pytest.mark.parametrize("name", ["vrnn-gauss", "rnn-gmm"])
def test_state_carries_across_chunks(name):
    """Truncated BPTT: two halves with the state carried equal one pass over the whole."""
    torch.manual_seed(3)
    model = build_model(tiny(name))
    gen = torch.Generator().manual_seed(2)
    x = make_x("audio", 2, 8, gen)
    noise = torch.randn(2, 8, model.config.z_dim, generator=gen)
    whole = model(x, noise=noise)
    first = model(x[:, :5], noise=noise[:, :5])
    second = model(x[:, 5:], noise=noise[:, 5:], state=first.state)
    torch.testing.assert_close(torch.cat([first.log_px, second.log_px], 1), whole.log_px)
    torch.testing.assert_close(torch.cat([first.kl, second.kl], 1), whole.kl)


def test_rnn_is_exact_per_step_likelihood():
    """The fused RNN against a per-step loop of its own modules."""
    torch.manual_seed(4)
    model = build_model(tiny("rnn-gmm"))
    assert isinstance(model, RNN)
    x = make_x("audio", 2, 6, torch.Generator().manual_seed(3))
    terms = model(x)
    state = tuple(s.unsqueeze(0).contiguous() for s in model.init_state(2))
    h = state[0][0]
    for t in range(6):
        ref = model.decoder(h).log_prob(x[:, t])
        torch.testing.assert_close(terms.log_px[:, t], ref)
        out, state = model.rnn(model.phi_x(x[:, t:t + 1]), state)
        h = out[:, 0]
    assert torch.all(terms.kl == 0)


@pytest.mark.parametrize("name,kind", [("vrnn-gmm", "strokes"), ("rnn-gauss", "strokes"),
                                       ("vrnn-bernoulli", "binary"), ("vrnn-i-gauss", "audio"),
                                       ("rnn-gmm", "audio")])
def test_sample_shapes_values_and_seed(name, kind):
    torch.manual_seed(5)
    model = build_model(tiny(name, kind))
    s = model.sample(4, 11, generator=torch.Generator().manual_seed(7))
    assert s.shape == (4, 11, KINDS[kind])
    assert torch.isfinite(s).all()
    again = model.sample(4, 11, generator=torch.Generator().manual_seed(7))
    assert torch.equal(s, again)
    if kind == "strokes":
        assert set(s[..., 2].unique().tolist()) <= {0.0, 1.0}
    if kind == "binary":
        assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert model.training  # sampling restores the mode


@pytest.mark.parametrize("name", ["vrnn-gauss", "vrnn-i-gmm", "rnn-gmm"])
def test_primed_sample_reproduces_prefix_and_depends_on_it(name):
    torch.manual_seed(6)
    model = build_model(tiny(name))
    prime = make_x("audio", 1, 5, torch.Generator().manual_seed(4))[0]  # (P, D)
    out = model.sample(3, 4, prime=prime, include_prime=True,
                       generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 9, 5)
    assert torch.equal(out[:, :5], prime.expand(3, 5, 5))
    cont = model.sample(3, 4, prime=prime, generator=torch.Generator().manual_seed(0))
    assert cont.shape == (3, 4, 5)
    torch.testing.assert_close(out[:, 5:], cont)
    other = model.sample(3, 4, prime=prime + 5.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(cont, other)  # the continuation is conditioned on the prefix
    # ... and exactly as the equations say: the state the posterior reaches over the prefix (the
    # same random stream), then the prior and decoder from there, at the asked temperature
    for tau in (1.0, 0.5):
        cont = model.sample(3, 4, prime=prime, temperature=tau,
                            generator=torch.Generator().manual_seed(1))
        ref = literal_primed_sample(model, prime.expand(3, 5, 5), 4, tau,
                                    torch.Generator().manual_seed(1))
        torch.testing.assert_close(cont, ref, rtol=1e-5, atol=1e-5)


def test_prime_and_input_shape_errors():
    model = build_model(tiny("vrnn-gauss"))
    with pytest.raises(ValueError, match=r"\(B, T, D=5\).*\(2, 3, 4\)"):
        model(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"mask must have shape"):
        model(torch.zeros(2, 3, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="prime must be"):
        model.sample(2, 3, prime=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, 3, temperature=0)


def test_config_round_trip_and_errors():
    cfg = tiny("vrnn-gmm", "strokes")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(build_model(cfg), VRNN)
    with pytest.raises(ValueError, match="ModelConfig.cell"):
        dataclasses.replace(cfg, cell="rnn")
    with pytest.raises(ValueError, match="x_dim=3"):
        dataclasses.replace(cfg, x_dim=4)
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_name("vrnn-poisson")
    with pytest.raises(ValueError, match="rnn-bernoulli"):
        parse_model_name("rnn-gauss", "binary")
    assert parse_model_name("vrnn-i-gauss", "strokes") == {
        "family": "vrnn", "prior": "standard", "output": "stroke-gauss", "name": "VRNN-I-Gauss"}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", DATA_KINDS)
def test_rnn_baselines_match_parameter_counts(kind, preset):
    """As in the paper, the RNN gets wider MLPs so its size matches the VRNN's (within 1%), at
    every preset and for every data kind at its real frame size (200-sample audio frames, pen
    strokes, 88-key rolls), where one unit of a GMM output layer alone costs K (1 + 2D) weights."""
    from vrnn.models.presets import _count

    x_dim = DEFAULT_X_DIM[kind]
    suffix = {"binary": ["bernoulli"], "text": ["categorical"]}.get(kind, ["gauss", "gmm"])
    for s in suffix:
        rnn_cfg = model_config(f"rnn-{s}", x_dim=x_dim, data_kind=kind, preset=preset)
        vrnn_cfg = model_config(f"vrnn-{s}", x_dim=x_dim, data_kind=kind, preset=preset)
        rnn, vrnn = _count(rnn_cfg), _count(vrnn_cfg)
        assert abs(rnn - vrnn) / vrnn < 0.01, (s, rnn, vrnn)
        # only the baseline's MLPs change, and only wider: the VRNN keeps its preset sizes
        assert rnn_cfg.h_dim == vrnn_cfg.h_dim
        assert all(a >= b for a, b in zip(rnn_cfg.phi_x, vrnn_cfg.phi_x))
        assert all(a >= b for a, b in zip(rnn_cfg.decoder, vrnn_cfg.decoder))

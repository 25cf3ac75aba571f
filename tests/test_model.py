"""The models: fast path against the literal per-step reference, masks, gradients, sampling."""

import dataclasses

import pytest
import torch
from reference import reference_terms

from vrnn import ModelConfig, build_model, masked_sum, model_config
from vrnn.config import parse_model_name
from vrnn.model import RNN, VRNN

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
    ref_px, ref_kl, ref_ratio = reference_terms(model, x, noise)
    torch.testing.assert_close(terms.log_px, ref_px, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.kl, ref_kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.log_pz - terms.log_qz, ref_ratio, rtol=1e-5, atol=1e-5)

    params = [p for p in model.parameters() if p.requires_grad]
    loss_fast = -terms.elbo(mask).mean()
    g_fast = torch.autograd.grad(loss_fast, params, allow_unused=True)
    loss_ref = -masked_sum(ref_px - ref_kl, mask).mean()
    g_ref = torch.autograd.grad(loss_ref, params, allow_unused=True)
    assert loss_fast.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    for (pname, p), a, b in zip(model.named_parameters(), g_fast, g_ref):
        a = torch.zeros_like(p) if a is None else a  # unused (e.g. the cell when T = 1)
        b = torch.zeros_like(p) if b is None else b
        if b.abs().sum() == 0:
            assert a.abs().sum() == 0, pname
        else:
            assert rel_err(a, b) < 1e-5, pname


@pytest.mark.parametrize("name", ["vrnn-gauss", "vrnn-gmm", "vrnn-i-gauss", "rnn-gauss",
                                  "rnn-gmm"])
def test_every_parameter_receives_a_gradient(name):
    torch.manual_seed(1)
    model = build_model(tiny(name, "strokes"))
    x = make_x("strokes", 3, 5, torch.Generator().manual_seed(0))
    loss, _ = model.loss(x)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    if name == "vrnn-i-gauss":
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


@pytest.mark.parametrize("name", ["vrnn-gauss", "rnn-gmm"])
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
    other = model.sample(3, 4, prime=prime + 5.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(cont, other)  # the continuation is conditioned on the prefix


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


@pytest.mark.parametrize("kind,preset", [("audio", "small"), ("audio", "paper"),
                                         ("strokes", "paper"), ("binary", "small")])
def test_rnn_baselines_match_parameter_counts(kind, preset):
    """As in the paper, the RNN gets wider MLPs so its size matches the VRNN's (within 1%)."""
    from vrnn.presets import _count

    suffix = ["bernoulli"] if kind == "binary" else ["gauss", "gmm"]
    for s in suffix:
        rnn = _count(model_config(f"rnn-{s}", x_dim=KINDS[kind], data_kind=kind, preset=preset))
        vrnn = _count(model_config(f"vrnn-{s}", x_dim=KINDS[kind], data_kind=kind,
                                   preset=preset))
        assert abs(rnn - vrnn) / vrnn < 0.01, (s, rnn, vrnn)

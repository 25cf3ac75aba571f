"""Output densities and the model's KL against independent numpy/scipy formulas, and the sampler
against moments."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from vrnn import build_model, model_config
from vrnn.models.distributions import (
    BivariateNormal,
    GMMHead,
    StrokeHead,
    draw,
    make_head,
)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_gaussian_head_matches_scipy():
    torch.manual_seed(0)
    head = make_head("gauss", 5, 4, components=1, min_scale=1e-4, scale_bias=0.6)
    h = torch.randn(3, 2, 5)
    x = torch.randn(3, 2, 4)
    dist = head(h)
    loc, raw = head.linear(h).chunk(2, -1)
    scale = np.log1p(np.exp(raw.detach().numpy())) + 1e-4  # softplus + floor, a std
    ref = stats.norm.logpdf(x.numpy(), loc.detach().numpy(), scale).sum(-1)
    np.testing.assert_allclose(dist.log_prob(x).detach().numpy(), ref, rtol=1e-10)
    assert dist.batch_shape == (3, 2) and dist.event_shape == (4,)
    fast = head.log_density(head.linear(h), x)  # a particle filter's, without the object
    np.testing.assert_allclose(fast.detach().numpy(), ref, rtol=1e-10)


def test_gmm_density_matches_numpy_formula():
    torch.manual_seed(1)
    K, D = 3, 4
    head = GMMHead(6, D, K, min_scale=1e-4, scale_bias=0.6)
    h = torch.randn(5, 6)
    x = torch.randn(5, D)
    out = head.linear(h).detach().numpy()
    logits, loc, raw = out[:, :K], out[:, K:K + K * D], out[:, K + K * D:]
    loc = loc.reshape(5, K, D)
    scale = (np.log1p(np.exp(raw)) + 1e-4).reshape(5, K, D)
    log_w = logits - logsumexp(logits, -1, keepdims=True)
    comp = stats.norm.logpdf(x.numpy()[:, None, :], loc, scale).sum(-1)  # (5, K)
    ref = logsumexp(log_w + comp, -1)
    np.testing.assert_allclose(head(h).log_prob(x).detach().numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(head.log_density(head.linear(h), x).detach().numpy(), ref,
                               rtol=1e-10)


def test_stroke_density_matches_scipy():
    torch.manual_seed(2)
    K = 4
    head = StrokeHead(7, K, min_scale=1e-4, scale_bias=0.6)
    with torch.no_grad():
        head.linear.weight.mul_(3.0)  # strong correlations and distinct components
    h = torch.randn(6, 7)
    x = torch.randn(6, 3)
    x[:, 2] = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    dist = head(h)
    comp = dist.offset.component_distribution
    probs = dist.offset.mixture_distribution.probs.detach().numpy()
    loc, scale, rho = (t.detach().numpy() for t in (comp.loc, comp.scale, comp.rho))
    pen_p = dist.pen.probs.detach().numpy()
    fast = head.log_density(head.linear(h), x)
    for n in range(6):
        dens = 0.0
        for k in range(K):
            s1, s2 = scale[n, k]
            cov = [[s1 * s1, rho[n, k] * s1 * s2], [rho[n, k] * s1 * s2, s2 * s2]]
            dens += probs[n, k] * stats.multivariate_normal(loc[n, k], cov).pdf(x[n, :2].numpy())
        pen = pen_p[n] if x[n, 2] == 1 else 1 - pen_p[n]
        assert dist.log_prob(x)[n].item() == pytest.approx(math.log(dens * pen), rel=1e-9)
        assert fast[n].item() == pytest.approx(math.log(dens * pen), rel=1e-9)


def test_bernoulli_and_categorical_log_density_match_numpy():
    """The heads' log-densities from their logits (a particle filter's per-step weights): bits
    against log sigma(l) x + log(1 - sigma(l)) (1 - x), one-hot frames against log softmax, and
    an all-zero padding frame 0."""
    torch.manual_seed(3)
    bern = make_head("bernoulli", 5, 6, components=1, min_scale=1e-4, scale_bias=0.6)
    h = torch.randn(4, 5)
    x = (torch.rand(4, 6) < 0.5).double()
    logit = bern.linear(h).detach().numpy()
    log_sig = -np.logaddexp(0.0, -logit)
    ref = (x.numpy() * log_sig + (1 - x.numpy()) * (log_sig - logit)).sum(-1)
    np.testing.assert_allclose(bern.log_density(bern.linear(h), x).detach().numpy(), ref,
                               rtol=1e-10)
    cat = make_head("categorical", 5, 7, components=1, min_scale=1e-4, scale_bias=0.6)
    frames = torch.zeros(4, 7)
    frames[[0, 1, 2], [3, 0, 6]] = 1.0  # row 3: padding
    logits = cat.linear(h).detach().numpy()
    log_p = logits - logsumexp(logits, -1, keepdims=True)
    ref = [log_p[0, 3], log_p[1, 0], log_p[2, 6], 0.0]
    np.testing.assert_allclose(cat.log_density(cat.linear(h), frames).detach().numpy(), ref,
                               rtol=1e-10, atol=1e-12)


def test_bivariate_sampler_moments():
    gen = torch.Generator().manual_seed(3)
    loc = torch.tensor([1.0, -2.0])
    scale = torch.tensor([0.5, 2.0])
    rho = torch.tensor(-0.7)
    d = BivariateNormal(loc.expand(200_000, 2), scale.expand(200_000, 2), rho.expand(200_000))
    s = d.sample(generator=gen).numpy()
    np.testing.assert_allclose(s.mean(0), loc.numpy(), atol=0.02)
    cov = np.cov(s.T)
    np.testing.assert_allclose(cov, [[0.25, -0.7], [-0.7, 4.0]], atol=0.03)


def test_draw_mixture_weights_and_seed():
    torch.manual_seed(4)
    head = GMMHead(3, 2, 3, min_scale=1e-4, scale_bias=-5.0)  # tiny scales: samples sit on locs
    h = torch.randn(1, 3).expand(50_000, 3)
    dist = head(h)
    x = draw(dist, torch.Generator().manual_seed(0))
    locs = dist.component_distribution.base_dist.loc[0]  # (K, D)
    nearest = torch.cdist(x, locs).argmin(-1)
    freq = torch.bincount(nearest, minlength=3).double() / len(x)
    np.testing.assert_allclose(freq.numpy(), dist.mixture_distribution.probs[0].detach().numpy(),
                               atol=0.01)
    again = draw(dist, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_temperature_scales_and_logits():
    torch.manual_seed(5)
    head = GMMHead(3, 2, 3, min_scale=1e-4, scale_bias=0.6)
    h = torch.randn(4, 3)
    d1, d2 = head(h), head(h, temperature=0.25)
    s1 = d1.component_distribution.base_dist.scale
    s2 = d2.component_distribution.base_dist.scale
    torch.testing.assert_close(s2, s1 * 0.5)
    torch.testing.assert_close(d2.mixture_distribution.logits.softmax(-1),
                               (d1.mixture_distribution.logits / 0.25).softmax(-1))


@pytest.mark.parametrize("tau", [0.25, 3.0])
def test_temperature_on_gaussian_bernoulli_and_stroke_heads(tau):
    """Every head: logits (mixture weights, Bernoulli bits, the pen bit) divided by tau, scales
    multiplied by sqrt(tau); locations and correlations untouched."""
    torch.manual_seed(7)
    h = torch.randn(4, 5)
    root = math.sqrt(tau)

    gauss = make_head("gauss", 5, 3, components=1, min_scale=1e-4, scale_bias=0.6)
    g1, g2 = gauss(h).base_dist, gauss(h, temperature=tau).base_dist
    torch.testing.assert_close(g2.loc, g1.loc)
    torch.testing.assert_close(g2.scale, g1.scale * root)

    bern = make_head("bernoulli", 5, 3, components=1, min_scale=1e-4, scale_bias=0.6)
    b1, b2 = bern(h).base_dist, bern(h, temperature=tau).base_dist
    torch.testing.assert_close(b2.logits, b1.logits / tau)

    stroke = StrokeHead(5, 3, min_scale=1e-4, scale_bias=0.6)
    s1, s2 = stroke(h), stroke(h, temperature=tau)
    c1, c2 = s1.offset.component_distribution, s2.offset.component_distribution
    torch.testing.assert_close(c2.loc, c1.loc)
    torch.testing.assert_close(c2.scale, c1.scale * root)
    torch.testing.assert_close(c2.rho, c1.rho)
    torch.testing.assert_close(s2.offset.mixture_distribution.probs,
                               (s1.offset.mixture_distribution.logits / tau).softmax(-1))
    torch.testing.assert_close(s2.pen.logits, s1.pen.logits / tau)


@pytest.mark.parametrize("prior", ["learned", "standard"])
def test_model_kl_is_the_closed_form_of_its_encoder_and_prior(prior):
    """A VRNN's per-step KL against the numpy closed form
    sum_z log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2, with the scales taken as
    standard deviations, softplus(raw) + floor of the encoder's and prior's own linear layers:
    catches swapped arguments, a variance or log-scale read as a std, and a VRNN-I prior that
    is not N(0, I)."""
    torch.manual_seed(6)
    cfg = model_config("vrnn-gauss" if prior == "learned" else "vrnn-i-gauss", x_dim=3,
                       preset="tiny")
    model = build_model(cfg)
    with torch.no_grad():  # q and p far apart and of unequal scales: KL(q||p) != KL(p||q)
        model.encoder.gaussian.linear.bias[cfg.z_dim:].fill_(-1.0)
        if model.prior is not None:
            model.prior.gaussian.linear.bias[cfg.z_dim:].fill_(1.0)
    x = torch.randn(2, 5, 3)
    terms = model(x, return_latents=True)
    lat = terms.latents
    h = lat["h"]  # (B, T, H): h_{t-1} of every step

    def loc_and_std(net, inp):
        out = net.gaussian.linear(net.mlp(inp)).detach().numpy()
        raw = out[..., cfg.z_dim:]
        return out[..., :cfg.z_dim], np.log1p(np.exp(raw)) + cfg.min_scale

    m_q, s_q = loc_and_std(model.encoder, torch.cat([model.phi_x(x), h], -1))
    if model.prior is None:
        m_p, s_p = np.zeros_like(m_q), np.ones_like(s_q)
    else:
        m_p, s_p = loc_and_std(model.prior, h)
    ref = (np.log(s_p / s_q) + (s_q**2 + (m_q - m_p) ** 2) / (2 * s_p**2) - 0.5).sum(-1)
    np.testing.assert_allclose(terms.kl.detach().numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(lat["enc_scale"].detach().numpy(), s_q, rtol=1e-10)
    assert ref.min() > 0.5  # far apart: the check above has something to find


def test_bad_shapes_are_value_errors():
    with pytest.raises(ValueError, match="x_dim must be 3"):
        make_head("stroke-gmm", 4, 5, components=2, min_scale=1e-4, scale_bias=0.6)
    with pytest.raises(ValueError, match="unknown output"):
        make_head("poisson", 4, 5, components=2, min_scale=1e-4, scale_bias=0.6)
    with pytest.raises(ValueError, match=r"loc \(3, 2\)"):
        BivariateNormal(torch.zeros(3, 2), torch.ones(3, 3), torch.zeros(3))

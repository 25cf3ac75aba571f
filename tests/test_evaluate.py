"""The importance-sampled log-likelihood against an exact marginal, and the evaluation summary."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vrnn import build_model, estimate_log_likelihood, evaluate_sequences, model_config


class Linear(nn.Module):
    """A linear feature map with the MLP's call signature (``start`` is ignored)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)
        self.out_dim = n_out

    def forward(self, x, start: int = 0):
        return self.lin(x)


def linear_gaussian_vrnn(seed: int = 0):
    """A one-step VRNN whose generative side is linear-Gaussian: z ~ N(mu_p, s_p^2) from the prior
    network on the fixed h_0, x | z ~ N(A z + c, diag(s_x^2)) with s_x independent of z. Then
    p(x) = N(A mu_p + c, A diag(s_p^2) A^T + diag(s_x^2)) exactly. The encoder stays nonlinear:
    any proposal q gives an unbiased estimate of p(x)."""
    torch.manual_seed(seed)
    cfg = model_config("vrnn-gauss", x_dim=3, data_kind="audio", preset="tiny", z_dim=2)
    model = build_model(cfg).double()
    H, F = cfg.h_dim, cfg.phi_z[-1]  # the cell reads phi_z's width F
    model.phi_z = Linear(2, F).double()
    model.decoder.mlp = Linear(F + H, cfg.decoder[-1]).double()
    head = model.decoder.head.linear
    with torch.no_grad():
        head.weight[3:].zero_()  # the output scale depends on nothing: a constant
        head.bias[3:] = torch.tensor([0.2, -0.5, 0.4], dtype=torch.float64)
    return model


@torch.no_grad()
def exact_log_px(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x_1) of ``x (B, 1, D)`` under :func:`linear_gaussian_vrnn`."""
    h0 = model.init_state(1)[0]  # (1, H)
    mu_p, s_p = model.prior(h0)
    A_z = model.phi_z.lin.weight  # (F, Z)
    F = A_z.shape[0]
    W = model.decoder.mlp.lin.weight  # (E, F + H)
    head = model.decoder.head.linear
    Wl, bl = head.weight[:3], head.bias[:3]  # loc rows
    A = Wl @ W[:, :F] @ A_z  # (D, Z): x_loc = A z + c
    c = Wl @ (W[:, :F] @ model.phi_z.lin.bias + W[:, F:] @ h0[0] + model.decoder.mlp.lin.bias) + bl
    s_x = nn.functional.softplus(head.bias[3:]) + model.config.min_scale
    mean = A @ mu_p[0] + c
    cov = A @ torch.diag(s_p[0] ** 2) @ A.T + torch.diag(s_x**2)
    return MultivariateNormal(mean, cov).log_prob(x[:, 0])


def test_importance_sampling_matches_exact_likelihood():
    """IS with S samples is within a few standard errors of the exact log p(x), and tighter than
    the ELBO; both bracket the truth as theory says."""
    model = linear_gaussian_vrnn()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 3, generator=gen, dtype=torch.float64) * 2.0
    exact = exact_log_px(model, x)
    with torch.no_grad():
        est = estimate_log_likelihood(model, x, num_samples=4000, chunk_size=1000, generator=gen)
    err = (est.log_likelihood - exact).abs()
    assert torch.all(err < 4 * est.stderr + 1e-3), (est.log_likelihood, exact, est.stderr)
    assert torch.all(est.elbo <= exact + 1e-9)  # Jensen: the ELBO is a lower bound
    assert torch.all(exact - est.log_likelihood < exact - est.elbo)  # IS is tighter


def test_importance_sampling_tightens_with_more_samples():
    """The gap to log p(x) shrinks as S grows (averaged over repeats); IS >= ELBO on average."""
    model = linear_gaussian_vrnn(1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 3, generator=gen, dtype=torch.float64) * 2.0
    exact = exact_log_px(model, x)
    gaps = {}
    for S in (1, 10, 100):
        reps = [estimate_log_likelihood(model, x, num_samples=S, generator=gen)
                for _ in range(20)]
        gaps[S] = float(torch.stack([exact - r.log_likelihood for r in reps]).mean())
        elbo = float(torch.stack([r.elbo for r in reps]).mean())
        ll = float(torch.stack([r.log_likelihood for r in reps]).mean())
        if S > 1:  # at S = 1 the two agree only in expectation (sampled vs analytic KL)
            assert ll > elbo
    assert gaps[1] > gaps[10] > gaps[100] > -0.05, gaps


def test_chunking_does_not_change_the_estimate():
    model = linear_gaussian_vrnn(2)
    x = torch.randn(3, 1, 3, dtype=torch.float64)
    a = estimate_log_likelihood(model, x, num_samples=12, chunk_size=12,
                                generator=torch.Generator().manual_seed(5))
    b = estimate_log_likelihood(model, x, num_samples=12, chunk_size=5,
                                generator=torch.Generator().manual_seed(5))
    # the draws differ in order, so compare distributions of the weights only through moments
    assert a.log_weights.shape == b.log_weights.shape == (12, 3)
    torch.testing.assert_close(a.log_likelihood, b.log_likelihood, rtol=0, atol=1.0)


def test_rnn_likelihood_is_exact_and_has_no_spread():
    torch.manual_seed(3)
    model = build_model(model_config("rnn-gmm", x_dim=4, preset="tiny"))
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    est = estimate_log_likelihood(model, x, mask, num_samples=40)
    expected = (model(x, mask).log_px * mask).sum(1)
    torch.testing.assert_close(est.log_likelihood, expected)
    torch.testing.assert_close(est.elbo, expected)
    assert torch.all(est.stderr == 0)


def test_evaluate_sequences_summary_units():
    torch.manual_seed(4)
    model = build_model(model_config("vrnn-gauss", x_dim=4, preset="tiny"))
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (3, 7, 5, 1)]
    res = evaluate_sequences(model, seqs, batch_size=3, num_samples=6, frame_size=4)
    s = res.summary()
    assert s["n_sequences"] == 4 and s["n_steps"] == 16 and s["num_samples"] == 6
    assert s["elbo"] == pytest.approx(res.elbo.mean())
    assert s["log_likelihood_per_step"] == pytest.approx(res.log_likelihood.sum() / 16)
    assert s["log_likelihood_per_sample"] == pytest.approx(res.log_likelihood.sum() / 64)
    assert s["log_likelihood_bits_per_sample"] == pytest.approx(
        -s["log_likelihood_per_sample"] / math.log(2))
    assert s["stderr"] == pytest.approx(res.log_likelihood.std(ddof=1) / 2)
    # a sequence's result does not depend on the others it is batched with
    alone = evaluate_sequences(model, seqs[3:], batch_size=1, num_samples=6)
    assert np.isfinite(alone.log_likelihood).all()
    with pytest.raises(ValueError, match="num_samples"):
        estimate_log_likelihood(model, torch.zeros(1, 2, 4), num_samples=0)

"""The importance-sampled log-likelihood against an exact marginal, and the evaluation summary."""

import json
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


def ragged_batch(seed: int, lengths: tuple[int, ...], D: int, dtype=torch.float32):
    """``x (B, T, D)`` and ``mask (B, T)`` for sequences of ``lengths``, zeros after each end."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = torch.arange(T) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    x = torch.randn(len(lengths), T, D, generator=gen, dtype=dtype) * mask.unsqueeze(-1)
    return x, mask


@pytest.mark.parametrize("chunk_size", [1, 5, 12])
def test_chunking_does_not_change_the_estimate(chunk_size):
    """Chunks are assembled exactly: the S samples are drawn as passes of ``chunk_size``
    replicas (the last one shorter), each drawing its noise ``(c * B, T, Z)`` from the generator
    in turn, and the result is that of one pass of S replicas over those draws put end to end,
    to float64 rounding (the replica layout, the repeated mask and the means over chunks)."""
    torch.manual_seed(2)
    model = build_model(model_config("vrnn-gmm", x_dim=3, preset="tiny")).double()
    S, lengths = 12, (6, 2, 4)
    B, Z = len(lengths), model.config.z_dim
    x, mask = ragged_batch(3, lengths, 3, torch.float64)
    est = estimate_log_likelihood(model, x, mask, num_samples=S, chunk_size=chunk_size,
                                  generator=torch.Generator().manual_seed(5))

    gen = torch.Generator().manual_seed(5)
    sizes = [min(chunk_size, S - done) for done in range(0, S, chunk_size)]
    noise = torch.cat([torch.randn(c * B, x.shape[1], Z, generator=gen, dtype=torch.float64)
                       for c in sizes])  # (S * B, T, Z), row s * B + b
    with torch.no_grad():
        terms = model(x, mask, noise=noise, sample_terms=True, replicas=S)
    mr = mask.repeat(S, 1)  # (S * B, T)
    log_w = ((terms.log_px + terms.log_pz - terms.log_qz) * mr).sum(1).view(S, B)
    tight = {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(est.log_weights, log_w, **tight)
    torch.testing.assert_close(est.log_likelihood, log_w.logsumexp(0) - math.log(S), **tight)
    elbo = ((terms.log_px - terms.kl) * mr).sum(1).view(S, B).mean(0)
    torch.testing.assert_close(est.elbo, elbo, **tight)


def test_other_chunk_sizes_agree_within_their_standard_errors():
    """Under one seed, two chunk sizes see the same noise only when every chunk draws a multiple
    of 16 normals: torch's CPU sampler fills a tensor of 16 or more values by Box-Muller over
    blocks of 16 uniforms (recomputing the last block), so ``randn(n)`` is in general not the
    concatenation of ``randn`` of the chunks' sizes. Here (Z = 2, B = 3, T = 1, chunks of 5: 30
    normals) the two runs are independent estimates of the same quantity, so they can only be
    asked to agree within 4 combined standard errors (the same noise: the test above, 1e-10)."""
    model = linear_gaussian_vrnn(2)
    x = torch.randn(3, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    a, b = (estimate_log_likelihood(model, x, num_samples=48, chunk_size=c,
                                    generator=torch.Generator().manual_seed(5))
            for c in (48, 5))
    assert torch.all((a.log_likelihood - b.log_likelihood).abs()
                     < 4 * (a.stderr.square() + b.stderr.square()).sqrt())


def test_importance_sampling_stderr_matches_the_spread_of_repeats():
    """The reported (delta-method) standard error against the spread of R independent estimates
    of the same sequences, and shrinking as 1/sqrt(S). Each of the R copies of a sequence in one
    batch is an independent estimate (its own noise)."""
    model = linear_gaussian_vrnn(3)
    gen = torch.Generator().manual_seed(7)
    B, R = 4, 300
    x = torch.randn(B, 1, 3, generator=gen, dtype=torch.float64)
    spread, reported = {}, {}
    for S in (8, 32):
        est = estimate_log_likelihood(model, x.repeat(R, 1, 1), num_samples=S, chunk_size=S,
                                      generator=gen)
        spread[S] = est.log_likelihood.view(R, B).std(0)  # (B,) over repeats
        reported[S] = est.stderr.view(R, B).mean(0)  # (B,)
        ratio = spread[S] / reported[S]
        assert torch.all((ratio > 0.6) & (ratio < 1.6)), (S, ratio)
    for d in (spread, reported):  # 4x the samples: half the error
        shrink = d[32] / d[8]
        assert torch.all((shrink > 0.35) & (shrink < 0.7)), shrink


def garbage_pad(x: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` with finite nonsense in every padded frame."""
    junk = 50.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) + 7.0
    return torch.where(mask.unsqueeze(-1), x, junk.to(x.dtype))


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_padding_does_not_change_the_estimate(chunk_size):
    """Same seed, same batch, different values in the padded frames: the same per-sequence ELBO,
    IS estimate, standard error and weights (every replica's padded steps are masked)."""
    torch.manual_seed(11)
    model = build_model(model_config("vrnn-gmm", x_dim=4, preset="tiny"))
    x, mask = ragged_batch(12, (4, 9, 6), 4)
    a, b = (estimate_log_likelihood(model, xx, mask, num_samples=5, chunk_size=chunk_size,
                                    generator=torch.Generator().manual_seed(13))
            for xx in (x, garbage_pad(x, mask, 14)))
    for field in ("elbo", "log_likelihood", "stderr", "log_weights"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-5, atol=1e-5,
                                   msg=field)


@pytest.mark.parametrize("name", ["vrnn-gauss", "rnn-gmm"])
def test_evaluate_sequences_ignores_padding(name, monkeypatch):
    """``evaluate_sequences`` end to end with garbage instead of zeros after each sequence's end
    gives the same per-sequence numbers; for an RNN (exact, no noise) a sequence also gives the
    same number alone as batched with longer ones."""
    import vrnn.data

    torch.manual_seed(15)
    model = build_model(model_config(name, x_dim=4, preset="tiny"))
    rng = np.random.default_rng(1)
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (3, 7, 5, 1, 6)]
    clean = evaluate_sequences(model, seqs, batch_size=3, num_samples=6, seed=2)
    pad_batch = vrnn.data.pad_batch

    def garbage_pad_batch(batch):
        x, mask = pad_batch(batch)
        return garbage_pad(x, mask, len(batch)), mask

    monkeypatch.setattr(vrnn.data, "pad_batch", garbage_pad_batch)
    dirty = evaluate_sequences(model, seqs, batch_size=3, num_samples=6, seed=2)
    for field in ("elbo", "log_likelihood", "is_stderr"):
        np.testing.assert_allclose(getattr(dirty, field), getattr(clean, field), rtol=1e-5,
                                   atol=1e-5, err_msg=field)
    if name.startswith("rnn"):
        alone = evaluate_sequences(model, seqs, batch_size=1, seed=2)
        np.testing.assert_allclose(alone.log_likelihood, clean.log_likelihood, rtol=1e-5,
                                   atol=1e-5)


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
    assert s["nll_bits_per_sample"] == pytest.approx(
        -s["log_likelihood_per_sample"] / math.log(2))
    assert s["stderr"] == pytest.approx(res.log_likelihood.std(ddof=1) / 2)
    with pytest.raises(ValueError, match="num_samples"):
        estimate_log_likelihood(model, torch.zeros(1, 2, 4), num_samples=0)


def test_importance_sampling_ess_is_that_of_the_weights():
    """IS's per-sequence ESS is (sum w)^2 / sum w^2 of the same S weights the estimate used (same
    seed, same batches), between 1 and S; the summary reports its mean and minimum."""
    from vrnn.inference.weights import effective_sample_size

    log_w = torch.tensor([[0.0, 5.0], [0.0, -30.0], [0.0, 0.0]], dtype=torch.float64)  # (S, B)
    w2 = (math.exp(5), math.exp(-30), 1.0)  # the second column's weights
    by_hand = sum(w2) ** 2 / sum(v * v for v in w2)  # about 1.013: one weight carries it
    torch.testing.assert_close(effective_sample_size(log_w),
                               torch.tensor([3.0, by_hand], dtype=torch.float64))
    torch.manual_seed(5)
    model = build_model(model_config("vrnn-gauss", x_dim=4, preset="tiny"))
    rng = np.random.default_rng(2)
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (6, 4)]
    res = evaluate_sequences(model, seqs, batch_size=2, num_samples=9, seed=3)
    from vrnn.data import pad_batch

    x, mask = pad_batch(seqs)
    with torch.no_grad():
        est = estimate_log_likelihood(model, x, mask, num_samples=9,
                                      generator=torch.Generator().manual_seed(3))
    w = np.exp(est.log_weights.double().numpy())  # (S, B)
    np.testing.assert_allclose(res.ess_mean, w.sum(0) ** 2 / (w ** 2).sum(0), rtol=1e-5)
    np.testing.assert_array_equal(res.ess_mean, res.ess_min)
    assert ((res.ess_mean >= 1) & (res.ess_mean <= 9)).all()
    s = res.summary()
    assert s["estimator"] == "is" and "resamples_mean" not in s
    assert s["ess_mean"] == pytest.approx(res.ess_mean.mean())
    assert s["ess_min"] == pytest.approx(res.ess_min.min())


def test_skip_bad_says_what_evaluate_and_analyse_left_out(tmp_path):
    """``--skip-bad`` on a test split whose sequences 1 and 2 of 3 hold NaN and inf: evaluate
    and analyse list them on stderr; evaluate's header says "1 of 3 sequences" and its JSON
    names them in ``skipped``, beside ``sequences_in_split``. Without bad data: no note, an
    empty list."""
    from toydata import tiny_train_config, vrnn, write_npz

    from vrnn.train.loop import train

    clean = write_npz(tmp_path / "clean.npz")
    train(tiny_train_config(str(clean), tmp_path / "run", max_steps=2))
    ckpt = tmp_path / "run" / "last.pt"
    rng = np.random.default_rng(0)
    test = rng.normal(size=(3, 5, 4)).astype(np.float32)
    test[1, 2, 0], test[2, 0, 3] = np.nan, np.inf
    bad = tmp_path / "bad.npz"
    np.savez(bad, train=rng.normal(size=(6, 5, 4)), valid=rng.normal(size=(2, 5, 4)), test=test)

    proc = vrnn("evaluate", ckpt, "--data", bad, "--skip-bad", "--samples", "2", "--json")
    res = json.loads(proc.stdout)
    assert res["n_sequences"] == 1 and res["sequences_in_split"] == 3
    assert [s.split(": ")[0] for s in res["skipped"]] == [f"{bad}['test'][1]",
                                                          f"{bad}['test'][2]"]
    for name in res["skipped"]:
        assert name.split(": ")[0] in proc.stderr
    assert "skipped 2" in proc.stderr
    text = vrnn("evaluate", ckpt, "--data", bad, "--skip-bad", "--samples", "2").stdout
    assert "1 of 3 sequences" in text.splitlines()[0], text
    proc = vrnn("analyse", ckpt, "--data", bad, "--skip-bad", "--out", tmp_path / "kl.png")
    assert f"{bad}['test'][1]" in proc.stderr and f"{bad}['test'][2]" in proc.stderr
    plain = vrnn("evaluate", ckpt, "--samples", "2", "--json")
    assert json.loads(plain.stdout)["skipped"] == [] and "skipped" not in plain.stderr

"""Per-step scores (``model.score``, :func:`vrnn.inference.smc.smc_step_scores`, ``vrnn score``):
log p(x_t | x_{<t}) of every step, its ESS and the KL.

The oracles are not the code under test: the Kalman filter's one-step predictive densities of a
linear-Gaussian state-space model (tests/test_kalman.py's SRNN that is one), the model's own
batched pass over the same draws (no resampling: the filter is importance sampling step by step),
the RNN's literal per-step pass and its loss; and the filter's log p^(x), which the steps must sum
to with the same seed."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from test_kalman import as_tensor, gauss_logpdf, sample_ssm, ssm, ssm_model
from test_smc import ragged, same_noise, tiny

from vrnn.evaluation.scores import score_sequences
from vrnn.inference.smc import smc_log_likelihood, smc_step_scores

LATENT = [dict(name="vrnn-gmm"), dict(name="vrnn-gauss", posterior="smoothing"),
          dict(name="srnn-gauss"), dict(name="dmm-gauss"), dict(name="storn-gauss")]
LATENT_IDS = ["vrnn", "vrnn-smooth", "srnn", "dmm", "storn"]


def _model(spec: dict):
    spec = dict(spec)
    return tiny(spec.pop("name"), **spec)


# -- the steps sum to the filter's estimate ----------------------------------------------------


@pytest.mark.parametrize("spec", LATENT, ids=LATENT_IDS)
@pytest.mark.parametrize("lengths", [(6,), (7, 1, 4)], ids=["B1", "B3"])
def test_steps_sum_to_the_same_filters_estimate(spec, lengths):
    """Resampling at most steps (threshold 0.9): each sequence's steps sum to
    ``smc_log_likelihood``'s log p^(x) with the same seed, the per-step ESS lies in [1, K] and
    averages to the filter's ``ess_mean``, the resampling flags count its resamplings, and the
    padded steps hold zeros."""
    model = _model(spec)
    x, mask = ragged(3, lengths)
    K = 5
    scores = model.score(x, mask, num_samples=K, threshold=0.9,
                         generator=torch.Generator().manual_seed(1))
    est = smc_log_likelihood(model, x, mask, particles=K, threshold=0.9,
                             generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(scores.log_likelihood, est.log_likelihood, rtol=0, atol=1e-10)
    assert scores.method == "smc" and scores.num_samples == K
    assert scores.log_p.shape == mask.shape and torch.equal(scores.mask, mask)
    on = scores.ess[mask]
    assert bool(((on >= 1 - 1e-9) & (on <= K + 1e-9)).all())
    torch.testing.assert_close((scores.ess * mask).sum(1) / mask.sum(1), est.ess_mean)
    assert torch.equal(scores.resampled.sum(1), est.resamples)
    if len(lengths) > 1:
        assert int(est.resamples[0]) >= 2  # the test does see resampling
    for field in ("log_p", "ess", "kl"):
        value = getattr(scores, field)
        assert torch.isfinite(value).all()
        assert bool((value[~mask] == 0).all()), field
    assert not bool(scores.resampled[~mask].any())
    assert bool((scores.kl[mask] >= 0).all())


def test_a_sum_off_by_one_step_would_be_seen():
    """The comparison above can fail: dropping the last step, or the first, moves the sum by far
    more than its tolerance."""
    model = _model(LATENT[0])
    x, mask = ragged(3, (7, 1, 4))
    scores = model.score(x, mask, num_samples=5, generator=torch.Generator().manual_seed(1))
    total = scores.log_likelihood
    assert (total - scores.log_p[:, :-1].sum(1)).abs()[0] > 1e-3
    assert ((total - scores.log_p[:, 1:].sum(1)).abs() > 1e-3).all()


@pytest.mark.parametrize("spec", [LATENT[0], LATENT[2]], ids=["vrnn", "srnn"])
@pytest.mark.parametrize("K", [1, 4])
def test_without_resampling_the_steps_are_importance_sampling_step_by_step(spec, K):
    """threshold 0: with the K trajectories' summed log weights c_t^k = sum_{s<=t} log alpha_s^k
    from the model's own batched pass over the same noise, log p^(x_t | x_{<t}) = logsumexp_k
    c_t^k - logsumexp_k c_{t-1}^k, ESS_t = 1 / sum_k softmax_k(c_t)^2 and the KL is the pass's
    KL_t^k averaged under softmax_k(c_{t-1})."""
    model = _model(spec)
    x, mask = ragged(5, (6, 2, 4))
    B, T = mask.shape
    noise = same_noise(K * B, T, model.config.z_dim, seed=7)
    with torch.no_grad():
        terms = model(x, mask, noise=noise, sample_terms=True, replicas=K)
    m = mask.to(x.dtype)
    log_alpha = ((terms.log_px + terms.log_pz - terms.log_qz) * m.repeat(K, 1)).view(K, B, T)
    c = torch.cat([torch.zeros(K, B, 1, dtype=x.dtype), log_alpha.cumsum(2)], 2)  # (K, B, T+1)
    log_norm = c.logsumexp(0)  # (B, T + 1)
    expected = (log_norm[:, 1:] - log_norm[:, :-1]) * m
    W_prev = torch.softmax(c[..., :-1], 0)  # (K, B, T)
    W = torch.softmax(c[..., 1:], 0)
    ess = 1 / (W ** 2).sum(0) * m
    kl = (W_prev * terms.kl.view(K, B, T)).sum(0) * m
    scores = smc_step_scores(model, x, mask, particles=K, threshold=0.0,
                             generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(scores.log_p, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(scores.ess, ess, rtol=0, atol=1e-9)
    torch.testing.assert_close(scores.kl, kl, rtol=0, atol=1e-9)
    assert not bool(scores.resampled.any())


def test_passes_give_the_steps_of_one_filter_each():
    """A row budget of one sequence per pass still fills every sequence's steps (each pass runs
    to its own longest sequence), and the sums are each filter's log p^(x)."""
    model = _model(LATENT[0])
    x, mask = ragged(3, (2, 7, 4))
    scores = smc_step_scores(model, x, mask, particles=4, row_budget=4,
                             generator=torch.Generator().manual_seed(2))
    assert bool((scores.ess[mask] >= 1 - 1e-9).all()) and bool((scores.log_p[~mask] == 0).all())
    gen = torch.Generator().manual_seed(2)
    for b, n in enumerate((2, 7, 4)):
        one = smc_log_likelihood(model, x[b:b + 1, :n], particles=4, generator=gen)
        torch.testing.assert_close(scores.log_likelihood[b:b + 1], one.log_likelihood,
                                   rtol=0, atol=1e-10)


def test_padding_gives_the_same_steps():
    """Finite nonsense in the padded frames changes no step's figures (same seed)."""
    model = _model(LATENT[1])
    x, mask = ragged(8, (7, 1, 4))
    junk = 50 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9),
                            dtype=x.dtype) + 7
    dirty = torch.where(mask.unsqueeze(-1), x, junk)
    a, b = (model.score(xx, mask, num_samples=6, threshold=1.0,
                        generator=torch.Generator().manual_seed(10)) for xx in (x, dirty))
    for field in ("log_p", "ess", "kl", "resampled"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=1e-10)


# -- against the Kalman filter's one-step predictive densities ------------------------------------


def kalman_steps(x: np.ndarray, p: dict) -> np.ndarray:
    """log p(x_t | x_{<t}) of every frame of ``x (T, D)`` by the Kalman filter: the innovation
    e_t = x_t - C A m_{t-1} under N(0, C P_t^- C^T + R)."""
    A, C, Q, R = p["A"], p["C"], p["Q"], p["R"]
    m, P = np.zeros(A.shape[0]), np.zeros_like(A)
    out = []
    for x_t in x:
        m_, P_ = A @ m, A @ P @ A.T + Q
        e, S = x_t - C @ m_, C @ P_ @ C.T + R
        out.append(gauss_logpdf(e, S))
        gain = P_ @ C.T @ np.linalg.inv(S)
        m, P = m_ + gain @ e, (np.eye(len(m)) - gain @ C) @ P_
    return np.array(out)


def test_steps_match_the_kalman_filters_predictive_densities():
    """The SRNN that is a linear-Gaussian SSM (|A| = 0.6): with 400 particles every step's score
    is within 0.25 nats of the Kalman filter's log p(x_t | x_{<t}) (measured: 0.09 at most, mean
    error 0.001), the first step exactly (its proposal is the exact posterior of z_1), while the
    steps themselves spread over several nats, so a score one step out of place is far off."""
    p = ssm(0.6, 0.2)
    x = sample_ssm(p, 3, 12, seed=1)
    exact = np.stack([kalman_steps(s, p) for s in x])  # (B, T)
    scores = ssm_model(p).score(as_tensor(x), num_samples=400,
                                generator=torch.Generator().manual_seed(0))
    diff = scores.log_p.numpy() - exact
    assert np.abs(diff).max() < 0.25, np.abs(diff).max()
    assert abs(diff.mean()) < 0.05
    np.testing.assert_allclose(diff[:, 0], 0.0, atol=1e-10)
    assert np.abs(exact[:, 1:] - exact[:, :-1]).mean() > 1.0  # misplaced steps would show


# -- the RNN: exact -----------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [(5,), (5, 3, 1)], ids=["B1", "B3"])
def test_rnn_scores_are_its_exact_per_step_likelihood(lengths):
    """Each step is the literal per-step pass's log p(x_t | x_{<t}) (step and observe, not the
    fused LSTM), the steps sum to -loss x B and to ``log_prob``; ESS 1, KL 0, method exact."""
    model = _model(dict(name="rnn-gmm"))
    x, mask = ragged(6, lengths)
    scores = model.score(x, mask, num_samples=7)
    with torch.no_grad():
        literal = model.literal_forward(x, mask).log_px * mask
        loss, _ = model.loss(x, mask)
    torch.testing.assert_close(scores.log_p, literal, rtol=0, atol=1e-10)
    assert scores.log_likelihood.sum().item() == pytest.approx(-loss.item() * len(lengths),
                                                               abs=1e-9)
    torch.testing.assert_close(scores.log_likelihood, model.log_prob(x, mask).log_likelihood)
    assert scores.method == "exact" and scores.num_samples == 1
    assert torch.equal(scores.ess, mask.to(x.dtype)) and bool((scores.kl == 0).all())


# -- the user's scale: the per-step log-Jacobian ---------------------------------------------------


@pytest.mark.parametrize("name", ["rnn-gauss", "vrnn-gauss"])
def test_scores_of_a_normalising_model_carry_the_per_step_jacobian(name):
    """A model with ``x_loc``, ``x_scale`` scores frames on the user's scale: the scores of the
    normalised frames minus sum_d log scale_d at every valid step, so the steps sum to
    ``log_prob``'s figure (exact for the RNN; the same filter's for the VRNN)."""
    model = _model(dict(name=name))
    x, mask = ragged(4, (6, 3))
    loc, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 3.0])
    plain = model.score(x, mask, num_samples=4, generator=torch.Generator().manual_seed(3))
    model.config.x_loc, model.config.x_scale = tuple(loc.tolist()), tuple(scale.tolist())
    user = x * scale.double() + loc.double()
    scaled = model.score(user, mask, num_samples=4, generator=torch.Generator().manual_seed(3))
    jacobian = -math.log(2.0 * 0.5 * 3.0)
    torch.testing.assert_close(scaled.log_p, plain.log_p + jacobian * mask.double(), rtol=0,
                               atol=1e-9)
    torch.testing.assert_close(scaled.ess, plain.ess)
    if name.startswith("rnn"):
        torch.testing.assert_close(scaled.log_likelihood,
                                   model.log_prob(user, mask).log_likelihood)


# -- what the scores are for -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rnn-gauss", "vrnn-gauss", "srnn-gauss"])
def test_a_planted_outlier_scores_far_below_its_neighbours(name):
    """A spike planted at step 6 of smooth sequences is each sequence's lowest score, tens of
    nats below the median of the others (the figure belongs to the step of the frame it
    predicts, not the one after)."""
    model = _model(dict(name=name))
    t = torch.linspace(0, 3, 12, dtype=torch.float64)
    x = torch.stack([torch.stack([torch.sin(t + ph), torch.cos(t + ph), 0.1 * t], -1)
                     for ph in (0.0, 1.0)])  # (2, 12, 3)
    x[:, 6] += 6.0
    scores = model.score(x, num_samples=8, generator=torch.Generator().manual_seed(0))
    assert scores.log_p.argmin(1).tolist() == [6, 6]
    others = torch.cat([scores.log_p[:, :6], scores.log_p[:, 7:]], 1)
    assert bool((others.median(1).values - scores.log_p[:, 6] > 20).all())


def test_score_sequences_keeps_the_order_and_drops_the_padding():
    """Sequences of any lengths come back in their order, each ``(T_i,)``, the rows one per
    valid step; the same seed gives the same figures."""
    model = _model(LATENT[0]).float()
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (3, 9, 1, 6)]
    a = score_sequences(model, seqs, batch_size=2, num_samples=4, seed=1)
    b = score_sequences(model, seqs, batch_size=2, num_samples=4, seed=1)
    assert a.lengths.tolist() == [3, 9, 1, 6] and a.method == "smc"
    assert all(np.array_equal(u, v) for u, v in zip(a.log_p, b.log_p))
    rows = list(a.rows())
    assert len(rows) == 19 and rows[0][:2] == (0, 0) and rows[-1][:2] == (3, 5)
    np.testing.assert_allclose(a.log_likelihood, [lp.sum() for lp in a.log_p])
    with pytest.raises(ValueError, match="num_samples"):
        score_sequences(model, seqs, num_samples=0)


# -- the command line ------------------------------------------------------------------------------


def test_vrnn_score_writes_one_row_per_step_and_never_overwrites(tmp_path, capsys):
    """``vrnn score`` on a saved tiny VRNN and a data file: a CSV of the documented columns, one
    row per valid step of the split, each sequence's rows summing to the library's figures with
    the same seed; a second run onto the file is refused (exit 2, file kept) unless
    ``--overwrite``; a bad flag is one line naming it; an RNN's scores are exact."""
    from toydata import write_npz

    import vrnn
    from vrnn.cli import main
    from vrnn.commands.loading import checkpoint_sequences, load_for_use

    data = str(write_npz(tmp_path / "toy.npz"))
    ckpt, out = tmp_path / "vrnn.pt", tmp_path / "scores.csv"
    torch.manual_seed(0)
    vrnn.save(vrnn.build_model(vrnn.model_config("vrnn-gauss", x_dim=4, preset="tiny")), ckpt)
    assert main(["score", str(ckpt), "--data", data, "--samples", "4", "--seed", "3",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "one particle filter of 4 particles" in text and "nats" in text
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sequence", "step", "log_p", "ess", "kl"]
    c, model, info = load_for_use(ckpt, "cpu")
    seqs = checkpoint_sequences(c, info, data, "test").sequences
    assert len(rows) == sum(len(s) for s in seqs)
    assert [int(r["step"]) for r in rows if r["sequence"] == "0"] == list(range(len(seqs[0])))
    assert all(1 - 1e-6 <= float(r["ess"]) <= 4 + 1e-6 for r in rows)
    ref = score_sequences(model, seqs, num_samples=4, seed=3)
    sums = np.zeros(len(seqs))
    for r in rows:
        sums[int(r["sequence"])] += float(r["log_p"])
    np.testing.assert_allclose(sums, ref.log_likelihood, rtol=1e-6, atol=1e-4)
    before = out.read_bytes()
    assert main(["score", str(ckpt), "--data", data, "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["score", str(ckpt), "--data", data, "--samples", "4", "--seed", "4",
                 "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != before
    capsys.readouterr()
    assert main(["score", str(ckpt), "--data", data, "--samples", "0",
                 "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "--samples" in err and len(err.strip().splitlines()) == 1
    assert main(["score", str(ckpt), "--data", data, "--samples", str(10**12),
                 "--out", str(tmp_path / "x.csv")]) == 2  # refused before any work
    err = capsys.readouterr().err
    assert "--samples 1000000000000: " in err and "memory" in err and err.count("\n") == 1
    assert not (tmp_path / "x.csv").exists()
    rnn = tmp_path / "rnn.pt"
    vrnn.save(vrnn.build_model(vrnn.model_config("rnn-gauss", x_dim=4, preset="tiny")), rnn)
    assert main(["score", str(rnn), "--data", data, "--out", str(tmp_path / "rnn.csv")]) == 0
    assert "(exact)" in capsys.readouterr().out
    with open(tmp_path / "rnn.csv", newline="") as f:
        assert {r["ess"] for r in csv.DictReader(f)} == {"1"}

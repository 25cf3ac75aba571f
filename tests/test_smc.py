"""The particle filter (:mod:`vrnn.inference.smc`): unbiased in p(x) against the Kalman filter,
tighter than importance sampling over long sequences, a trajectory-level reference for the
resampling (whole states follow their ancestors), the limits (no resampling is IS, one particle is
one weight), padding, FIVO's gradients, and ``vrnn evaluate --estimator smc``."""

import json
import math

import numpy as np
import pytest
import torch
from test_kalman import as_tensor, kalman_log_likelihood, sample_ssm, ssm, ssm_model

from vrnn import build_model, model_config
from vrnn.evaluation.sequences import evaluate_sequences
from vrnn.inference import smc
from vrnn.inference.importance import estimate_log_likelihood
from vrnn.inference.smc import SMCEstimate, smc_log_likelihood
from vrnn.models.base import SequenceModel
from vrnn.models.layers import reparameterise

# -- against the exact log p(x) of a linear-Gaussian state-space model ----------------------------


def kalman_setting(rho: float, r: float, batch: int, steps: int, seed: int):
    """The SSM, the float64 SRNN that is it (tests/test_kalman.py), ``x (batch, steps, D)`` drawn
    from it and the Kalman filter's exact log p(x) of each sequence."""
    p = ssm(rho, r)
    x = sample_ssm(p, batch, steps, seed=seed)
    exact = np.array([kalman_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"]) for s in x])
    return ssm_model(p), as_tensor(x), exact


def test_smc_is_unbiased_in_p_and_a_lower_bound():
    """E[p^(x)] = p(x): the mean over 1000 repeats of p^(x) / p(x) is 1 within 3 standard errors
    (pooled over 4 sequences; measured 0.995 +- 0.037), with resampling happening (about 2 of
    15 steps per filter at K = 4) and E[log p^] below log p(x)."""
    model, x, exact = kalman_setting(0.9, 0.5, 4, 15, seed=1)
    reps, B = 1000, 4
    est = smc_log_likelihood(model, x.repeat(reps, 1, 1), particles=4,
                             generator=torch.Generator().manual_seed(0))
    diff = est.log_likelihood.view(reps, B).numpy() - exact  # (reps, B)
    ratio = np.exp(diff)
    se = ratio.std(ddof=1) / math.sqrt(ratio.size)
    assert abs(ratio.mean() - 1) < 3 * se, (ratio.mean(), se)
    assert float(est.resamples.double().mean()) > 1.0  # the filter did resample
    se_log = diff.std(0, ddof=1) / math.sqrt(reps)
    assert (diff.mean(0) < 3 * se_log).all() and diff.mean() < -0.3  # Jensen: below log p(x)
    # the ESS fields are in range: 1 <= min <= mean <= K
    assert torch.all((est.ess_min >= 1 - 1e-9) & (est.ess_min <= est.ess_mean + 1e-12)
                     & (est.ess_mean <= 4 + 1e-9))


def test_smc_spread_is_smaller_than_importance_sampling_over_long_sequences():
    """At T = 100 with strong dynamics and S = 16, the SMC estimate's spread over repeats and its
    gap below log p(x) are both far smaller than IS's (measured over 48 repeats of 2 sequences:
    sd 2.1 against 3.8 nats, mean gap 2.4 against 12)."""
    model, x, exact = kalman_setting(0.9, 0.5, 2, 100, seed=1)
    reps, S, B = 48, 16, 2
    gen = torch.Generator().manual_seed(1)
    smc = smc_log_likelihood(model, x.repeat(reps, 1, 1), particles=S, generator=gen)
    imp = estimate_log_likelihood(model, x.repeat(reps, 1, 1), num_samples=S, generator=gen)
    d_smc = smc.log_likelihood.view(reps, B).numpy() - exact
    d_is = imp.log_likelihood.view(reps, B).numpy() - exact
    assert (d_smc.std(0) < 0.75 * d_is.std(0)).all(), (d_smc.std(0), d_is.std(0))
    assert (-d_smc.mean(0) < 0.5 * -d_is.mean(0)).all(), (d_smc.mean(0), d_is.mean(0))


# -- resampling against a textbook filter over whole trajectories ---------------------------------


def reference_filter(model, x: torch.Tensor, K: int, gen: torch.Generator,
                     threshold: float) -> torch.Tensor:
    """A particle filter written over trajectories, for ``x (B, T, D)`` with every step valid:
    each particle is the list of its z_1..z_t, resampling copies lists, and the model's state of
    each particle is recomputed at every step from its whole trajectory (no state is carried, so
    none can be left behind). It draws from ``gen`` what :func:`smc_log_likelihood` documents:
    ``randn (K * B, Z)`` per step, then ``multinomial`` over the sequences that resample."""
    B, T, _ = x.shape
    N, Z = K * B, model.config.z_dim
    paths = [[] for _ in range(N)]  # row k * B + b: particle k of sequence b
    log_W = torch.full((K, B), -math.log(K), dtype=x.dtype)
    log_p = torch.zeros(B, dtype=x.dtype)
    is_srnn = model.config.family == "srnn"
    if is_srnn:
        *d_state, _, x0 = model.init_state(B)
        feat_x, d, _ = model.deterministic(x, tuple(d_state), x0)
        a = model.inference_features(d, feat_x)
    else:
        feat_x = model.phi_x(x)
        enc = model.encoder_features(feat_x)
    for t in range(T):
        eps = torch.randn(N, Z, dtype=x.dtype, generator=gen)
        log_alpha = torch.empty(N, dtype=x.dtype)
        new_z = []
        for n in range(N):
            b = n % B
            if is_srnn:  # the state is the trajectory's last z (z_0 = 0)
                z_prev = paths[n][-1] if paths[n] else torch.zeros(1, Z, dtype=x.dtype)
                p = model.prior_dist(d[b:b + 1, t], z_prev)
                q = model.posterior(a[b:b + 1, t], z_prev, p.base_dist.loc)
                z = reparameterise(q, eps[n:n + 1])
                px = model.decoder(torch.cat([z, d[b:b + 1, t]], -1))
            else:  # h_{t-1} by running the cell over the whole trajectory from h_0
                state = model.init_state(1)
                for s, z_s in enumerate(paths[n]):
                    inp = torch.cat([feat_x[b:b + 1, s], model.phi_z(z_s)], -1)
                    state = model.cell_step(inp, state)
                h = state[0]
                q = model.posterior(enc[b:b + 1, t], h)
                z = reparameterise(q, eps[n:n + 1])
                p = model.prior_dist(h)
                px = model.decoder(torch.cat([model.phi_z(z), h], -1))
            log_alpha[n] = (px.log_prob(x[b:b + 1, t]) + p.log_prob(z) - q.log_prob(z))[0]
            new_z.append(z)
        paths = [path + [z] for path, z in zip(paths, new_z)]
        increment, log_W = reweigh_and_resample(paths, log_W, log_alpha, threshold, t + 1 < T,
                                                gen)
        log_p += increment
    return log_p


def reweigh_and_resample(paths: list, log_W: torch.Tensor, log_alpha: torch.Tensor,
                         threshold: float, may_resample: bool, gen: torch.Generator):
    """One step of a textbook filter over trajectories, after the incremental weights
    ``log_alpha (K * B,)``: the increment of log p^ ``(B,)`` and the normalised weights ``(K,
    B)``; where ESS < ``threshold * K`` (and ``may_resample``: not at the last step) ancestors
    drawn from ``gen``, each path (row k * B + b of ``paths``, replaced in place) a copy of its
    ancestor's, and the weights reset."""
    K, B = log_W.shape
    unnorm = log_W + log_alpha.view(K, B)
    increment = unnorm.logsumexp(0)
    log_W = unnorm - increment
    need = torch.exp(-torch.logsumexp(2 * log_W, 0)) < threshold * K
    if may_resample and need.any():
        drawn = torch.multinomial(log_W[:, need].T.exp(), K, replacement=True, generator=gen)
        for j, b in enumerate(need.nonzero()[:, 0].tolist()):
            old = [paths[k * B + b] for k in range(K)]
            for k in range(K):
                paths[k * B + b] = list(old[int(drawn[j, k])])
            log_W[:, b] = -math.log(K)
    return increment, log_W


def tiny(name: str, **kw):
    torch.manual_seed(0)
    return build_model(model_config(name, x_dim=3, preset="tiny", **kw)).double().eval()


REFERENCE_MODELS = {
    "vrnn-lstm-smoothing": dict(name="vrnn-gmm", cell="lstm", posterior="smoothing"),
    "srnn-resq": dict(name="srnn-gauss"),
}


def _reference_case(key: str):
    spec = dict(REFERENCE_MODELS[key])
    model = tiny(spec.pop("name"), **spec)
    x = torch.randn(3, 6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return model, x


@pytest.mark.parametrize("key", list(REFERENCE_MODELS))
def test_resampling_matches_the_trajectory_reference(key):
    """With resampling at most steps (threshold 0.9), the filter's log p^ equals the textbook
    filter's over the same draws to float64 rounding; so each copied particle continues with its
    ancestor's whole state (for the LSTM both h and c)."""
    model, x = _reference_case(key)
    with torch.no_grad():
        est = smc_log_likelihood(model, x, particles=5, threshold=0.9,
                                 generator=torch.Generator().manual_seed(3))
        ref = reference_filter(model, x, 5, torch.Generator().manual_seed(3), 0.9)
    assert int(est.resamples.sum()) >= 6  # resampled often (out of 3 * 5 possible)
    torch.testing.assert_close(est.log_likelihood, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("broken", ["keep", "h only", "other sequence"])
def test_the_reference_notices_states_left_behind(broken, monkeypatch):
    """The comparison above can fail: states not copied at all, only h copied of an LSTM's (h,
    c), or copied from the same particle of the neighbouring sequence each make it red. Planted
    in the protocol's ``reorder``, which the step-by-step filter reads (the VRNN's estimate runs
    the filter inside its fast loop, which copies the state itself: its planted copies are in
    tests/test_particles.py)."""
    model, x = _reference_case("vrnn-lstm-smoothing")
    good = SequenceModel.reorder
    B = x.shape[0]

    def bad(self, state, rows):
        if broken == "keep":
            return state
        if broken == "h only":
            return (state[0][rows], state[1])
        return good(self, state, (rows // B) * B + (rows + 1) % B)

    monkeypatch.setattr(type(model), "reorder", bad)
    with torch.no_grad():
        est = smc._filter(model, x, None, 5, torch.Generator().manual_seed(3), 0.9)
        ref = reference_filter(model, x, 5, torch.Generator().manual_seed(3), 0.9)
    assert (est.log_likelihood - ref).abs().max() > 1e-6


def test_srnn_reference_notices_z_left_behind(monkeypatch):
    model, x = _reference_case("srnn-resq")
    monkeypatch.setattr(type(model), "reorder", lambda self, state, rows: state)
    with torch.no_grad():  # the step-by-step filter, which reads reorder
        est = smc._filter(model, x, None, 5, torch.Generator().manual_seed(3), 0.9)
        ref = reference_filter(model, x, 5, torch.Generator().manual_seed(3), 0.9)
    assert (est.log_likelihood - ref).abs().max() > 1e-6


def test_srnn_fast_estimate_notices_z_left_behind(monkeypatch):
    """The SRNN's estimate runs the filter in its z-chain, which copies z itself: a chain that
    keeps z_t where it should take the ancestor's turns the comparison red."""
    model, x = _reference_case("srnn-resq")
    real = type(model)._weigh
    monkeypatch.setattr(type(model), "_weigh", lambda self, *a: (
        lambda *b: (real(self, *a)(*b), None)[1]))
    with torch.no_grad():
        est = smc_log_likelihood(model, x, particles=5, threshold=0.9,
                                 generator=torch.Generator().manual_seed(3))
        ref = reference_filter(model, x, 5, torch.Generator().manual_seed(3), 0.9)
    assert (est.log_likelihood - ref).abs().max() > 1e-6


# -- the limits: no resampling is importance sampling, one particle is one weight -----------------


def same_noise(N: int, T: int, Z: int, seed: int) -> torch.Tensor:
    """``(N, T, Z)``: the filter's draws without resampling, ``randn (N, Z)`` per step."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(N, Z, generator=gen, dtype=torch.float64)
                        for _ in range(T)], 1)


def ragged(seed: int, lengths: tuple[int, ...], D: int = 3):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    x = torch.randn(len(lengths), max(lengths), D, generator=gen, dtype=torch.float64)
    return x * mask.unsqueeze(-1), mask


MODELS = [dict(name="vrnn-gmm"), dict(name="vrnn-gauss", posterior="smoothing"),
          dict(name="vrnn-i-gauss"), dict(name="srnn-gauss"),
          dict(name="srnn-gmm", posterior="filtering", res_q=False, cell="gru")]
MODEL_IDS = ["vrnn", "vrnn-smooth", "vrnn-i", "srnn-smooth-resq", "srnn-filt-gru"]


def _model(spec: dict):
    spec = dict(spec)
    return tiny(spec.pop("name"), **spec)


@pytest.mark.parametrize("spec", MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("K", [1, 4])
def test_no_resampling_is_importance_sampling_of_the_same_draws(spec, K):
    """threshold 0: log p^ = log mean_k of the K trajectories' summed log weights, computed by
    the model's own batched pass over the same noise (and with K = 1 that is the single weight,
    at any threshold: one particle's ESS is 1, resampling it changes nothing)."""
    model = _model(spec)
    x, mask = ragged(5, (6, 2, 4))
    B, T = mask.shape
    noise = same_noise(K * B, T, model.config.z_dim, seed=7)
    with torch.no_grad():
        terms = model(x, mask, noise=noise, sample_terms=True, replicas=K)
    mr = mask.repeat(K, 1)
    log_w = ((terms.log_px + terms.log_pz - terms.log_qz) * mr).sum(1).view(K, B)
    expected = log_w.logsumexp(0) - math.log(K)
    for threshold in (0.0, 1.0) if K == 1 else (0.0,):
        est = smc_log_likelihood(model, x, mask, particles=K, threshold=threshold,
                                 generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(est.log_likelihood, expected, rtol=0, atol=1e-9)
        assert torch.all(est.resamples == 0)
    if K == 1:
        assert torch.all(est.ess_mean == 1) and torch.all(est.ess_min == 1)


def test_rnn_gets_its_exact_likelihood():
    model = _model(dict(name="rnn-gmm"))
    x, mask = ragged(6, (5, 3))
    est = smc_log_likelihood(model, x, mask, particles=7)
    with torch.no_grad():
        exact = (model(x, mask).log_px * mask).sum(1)
    torch.testing.assert_close(est.log_likelihood, exact)
    torch.testing.assert_close(est.ess_mean, torch.full_like(est.ess_mean, 7.0))  # all equal
    assert torch.all(est.resamples == 0)


# -- padding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [MODELS[1], MODELS[3]], ids=["vrnn-smooth", "srnn"])
def test_padding_changes_nothing_and_never_resamples(spec):
    """Finite nonsense in the padded frames gives the same estimates, ESS and resampling counts
    (same seed); at threshold 1 a sequence of L steps resamples at most L - 1 times (never at
    or after its last step), and a one-step sequence never."""
    model = _model(spec)
    lengths = (7, 1, 4)
    x, mask = ragged(8, lengths)
    junk = 50 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9),
                            dtype=x.dtype) + 7
    dirty = torch.where(mask.unsqueeze(-1), x, junk)
    a, b = (smc_log_likelihood(model, xx, mask, particles=6, threshold=1.0,
                               generator=torch.Generator().manual_seed(10)) for xx in (x, dirty))
    for field in ("log_likelihood", "ess_mean", "ess_min", "resamples"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=1e-10,
                                   msg=field)
    assert a.resamples.tolist()[1] == 0
    assert all(n <= L - 1 for n, L in zip(a.resamples.tolist(), lengths))
    assert a.resamples[0] >= 3  # threshold 1: nearly every step of the long one
    # padding the batch further (more padded steps) changes nothing either: the draws of padded
    # steps come after, so a copy of x with 3 more padded steps gives the same numbers
    longer = torch.cat([x, torch.zeros(3, 3, 3, dtype=x.dtype)], 1)
    mask_l = torch.cat([mask, torch.zeros(3, 3, dtype=torch.bool)], 1)
    c = smc_log_likelihood(model, longer, mask_l, particles=6, threshold=1.0,
                           generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(c.log_likelihood, a.log_likelihood, rtol=0, atol=1e-10)


# -- FIVO: gradients through the filter -----------------------------------------------------------


@pytest.mark.parametrize("spec", [MODELS[0], MODELS[1], MODELS[3]],
                         ids=["vrnn", "vrnn-smooth", "srnn"])
def test_differentiable_filter_gives_finite_gradients_through_resampling(spec):
    model = _model(spec).train()
    x, mask = ragged(11, (6, 3))
    est = smc_log_likelihood(model, x, mask, particles=4, threshold=1.0, differentiable=True,
                             generator=torch.Generator().manual_seed(12))
    assert int(est.resamples.sum()) > 0
    est.log_likelihood.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # not differentiable: no graph at all
    plain = smc_log_likelihood(model, x, mask, particles=4, threshold=1.0,
                               generator=torch.Generator().manual_seed(12))
    assert not plain.log_likelihood.requires_grad
    torch.testing.assert_close(plain.log_likelihood, est.log_likelihood.detach())


def test_fivo_without_resampling_has_the_iwae_gradient():
    """threshold 0: the filter's gradient is IWAE's over the same draws (the model's fast path,
    with its hand-written backward), so the FIVO gradient is assembled right."""
    model = _model(MODELS[0]).train()
    x, mask = ragged(13, (5, 3))
    K, (B, T) = 3, mask.shape
    est = smc_log_likelihood(model, x, mask, particles=K, threshold=0.0, differentiable=True,
                             generator=torch.Generator().manual_seed(14))
    got = torch.autograd.grad(est.log_likelihood.sum(), list(model.parameters()))
    noise = same_noise(K * B, T, model.config.z_dim, seed=14)
    terms = model(x, mask, noise=noise, sample_terms=True, replicas=K)
    log_w = ((terms.log_px + terms.log_pz - terms.log_qz) * mask.repeat(K, 1)).sum(1)
    iwae = (log_w.view(K, B).logsumexp(0) - math.log(K)).sum()
    want = torch.autograd.grad(iwae, list(model.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9)


def test_bad_arguments_are_named():
    model = _model(MODELS[0])
    x = torch.zeros(2, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="particles"):
        smc_log_likelihood(model, x, particles=0)
    with pytest.raises(ValueError, match="threshold"):
        smc_log_likelihood(model, x, particles=2, threshold=1.5)
    with pytest.raises(ValueError, match="mask"):
        smc_log_likelihood(model, x, torch.ones(2, 4, dtype=torch.bool), particles=2)
    assert isinstance(smc_log_likelihood(model, x, particles=2), SMCEstimate)


# -- evaluation and the command line --------------------------------------------------------------


def test_evaluate_sequences_with_smc_reports_ess_and_resampling():
    model = build_model(model_config("vrnn-gauss", x_dim=4, preset="tiny"))
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (9, 3, 6, 1)]
    res = evaluate_sequences(model, seqs, batch_size=3, num_samples=8, estimator="smc",
                             repeats=3, seed=1)
    assert res.estimator == "smc" and res.repeats == 3 and res.num_samples == 8
    for field in ("ess_mean", "ess_min", "resamples", "is_stderr", "log_likelihood", "elbo"):
        assert getattr(res, field).shape == (4,) and np.isfinite(getattr(res, field)).all()
    assert ((res.ess_min >= 1 - 1e-6) & (res.ess_min <= res.ess_mean + 1e-6)
            & (res.ess_mean <= 8 + 1e-6)).all()
    assert res.resamples[3] == 0  # one step: nothing to resample for
    s = res.summary()
    assert s["estimator"] == "smc" and s["repeats"] == 3
    assert s["ess_mean"] == pytest.approx(res.ess_mean.mean())
    assert s["ess_min"] == pytest.approx(res.ess_min.min())
    assert s["resamples_mean"] == pytest.approx(res.resamples.mean())
    assert (res.is_stderr > 0).all()  # the spread of the 3 repeats
    # a row budget smaller than one filter still runs (one filter per pass), same numbers
    from vrnn.inference.smc import estimate_log_likelihood_smc

    small = estimate_log_likelihood_smc(model, torch.zeros(2, 3, 4), particles=8, repeats=2,
                                           row_budget=4,
                                           generator=torch.Generator().manual_seed(2))
    big = estimate_log_likelihood_smc(model, torch.zeros(2, 3, 4), particles=8, repeats=2,
                                         generator=torch.Generator().manual_seed(2))
    assert small.log_weights.shape == (2, 2) and torch.isfinite(small.log_likelihood).all()
    assert big.log_weights.shape == (2, 2)
    with pytest.raises(ValueError, match="estimator"):
        evaluate_sequences(model, seqs, estimator="mcmc")


def test_vrnn_evaluate_estimator_smc_in_process(tmp_path, capsys):
    """``vrnn evaluate --estimator smc`` on a checkpoint trained for one step: the JSON carries
    the ESS fields and the resampling count, the text names the estimator and the ESS."""
    from toydata import write_npz

    from vrnn.cli import main

    data = write_npz(tmp_path / "toy.npz", n_train=8)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "vrnn-gauss", "--out", str(out),
                 "--preset", "tiny", "--max-steps", "1", "--batch-size", "4",
                 "--val-interval", "1", "--device", "cpu", "--no-progress"]) == 0
    ckpt = str(out / "last.pt")
    capsys.readouterr()
    assert main(["evaluate", ckpt, "--estimator", "smc", "--samples", "4", "--repeats", "2",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["estimator"] == "smc" and res["num_samples"] == 4 and res["repeats"] == 2
    for key in ("ess_mean", "ess_min", "resamples_mean"):
        assert np.isfinite(res[key])
    assert len(res["per_sequence"]["ess_mean"]) == res["n_sequences"] == 6
    assert main(["evaluate", ckpt, "--estimator", "smc", "--samples", "4"]) == 0
    text = capsys.readouterr().out
    assert "SMC, 4 filters x 4 particles" in text and "ESS per step" in text
    assert "warning: mean ESS < 5" in text  # 4 particles: never enough for the se
    assert main(["evaluate", ckpt, "--samples", "60", "--max-sequences", "2"]) == 0
    text = capsys.readouterr().out
    assert "importance sampling, S=60" in text and "ESS " in text


def test_ess_warning_rule():
    from vrnn.commands.evaluate import ess_too_low, format_evaluation

    assert ess_too_low(4.9, 40) and not ess_too_low(5.0, 40)  # 5 samples at small S
    assert ess_too_low(99.0, 1000) and not ess_too_low(100.0, 1000)  # S / 10 at large S
    base = {"name": "VRNN-Gauss", "latent": True, "data": "toy", "split": "test", "step": 1,
            "n_sequences": 2, "elbo": -3.0, "elbo_stderr": 0.1, "log_likelihood": -2.0,
            "log_likelihood_stderr": 0.1, "log_likelihood_per_step": -0.5,
            "num_samples": 40, "is_stderr_mean": 0.2, "estimator": "is", "ess_min": 1.0}
    assert "warning" in format_evaluation({**base, "ess_mean": 2.0})
    assert "warning" not in format_evaluation({**base, "ess_mean": 20.0})


def test_smc_error_shows_the_filters_spread_and_warns_when_they_disagree(tmp_path, capsys):
    """``vrnn evaluate --estimator smc`` on long sequences, where one of the R filters carries
    the estimate: the delta-method se is at its ceiling of 1 while the R log-estimates lie tens of
    nats apart. The text shows their spread beside the se and warns; the JSON has the spread and
    range per sequence and how many sequences disagree. One filter (``--repeats 1``) has no
    error to show: "n/a" and null, never 0.00."""
    from vrnn.cli import main
    from vrnn.data import pack_sequences

    rng = np.random.default_rng(0)

    def split(n, steps):
        return [rng.normal(size=(steps, 4)).astype(np.float32) for _ in range(n)]

    data = tmp_path / "long.npz"
    pack_sequences({"train": split(8, 20), "valid": split(2, 20), "test": split(3, 300)}, data)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "vrnn-gauss", "--out", str(out),
                 "--preset", "tiny", "--max-steps", "1", "--batch-size", "4",
                 "--val-interval", "1", "--device", "cpu", "--no-progress"]) == 0
    ckpt = str(out / "last.pt")
    smc = ["evaluate", ckpt, "--estimator", "smc", "--samples", "8"]
    capsys.readouterr()
    assert main([*smc, "--repeats", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    per = res["per_sequence"]
    assert len(per["log_spread"]) == len(per["log_range"]) == 3
    assert max(per["log_range"]) > 5 >= 5 * max(per["stderr"])  # far more than the se says
    assert res["log_range_max"] == pytest.approx(max(per["log_range"]))
    assert res["log_spread_mean"] == pytest.approx(np.mean(per["log_spread"]))
    assert res["repeats_disagree"] >= 1
    assert main([*smc, "--repeats", "4"]) == 0
    text = capsys.readouterr().out
    assert "filters' log-estimates: sd" in text, text
    assert "disagree by more than the se says" in text, text
    assert main([*smc, "--repeats", "1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["is_stderr_mean"] is None and set(one["per_sequence"]["stderr"]) == {None}
    assert "log_spread" not in one["per_sequence"] and one.get("repeats_disagree") is None
    assert main([*smc, "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    assert "Monte Carlo se n/a" in text and "se 0.00" not in text, text


def test_the_filters_disagree_rule():
    """A sequence's R filters disagree when the delta-method se is at its ceiling (one filter
    carries the estimate) or the spread of their log-estimates is well above what the se implies
    (sd ~ se sqrt(R) where the delta method holds); estimates a fraction of a nat apart agree."""
    from vrnn.evaluation.sequences import filters_disagree
    from vrnn.inference.weights import delta_stderr

    log_est = torch.tensor([[0.0, 0.0, 0.0], [0.1, -78.0, 0.0], [-0.1, -70.0, 0.0],
                            [0.05, -75.0, -3.0]], dtype=torch.float64)  # (R, B)
    se = delta_stderr(log_est).numpy()
    spread = log_est.std(0).numpy()
    assert se[1] == pytest.approx(1.0, abs=1e-6)  # the ceiling
    assert se[2] < 0.5 and spread[2] > 2 * se[2] * math.sqrt(4)  # one filter 3 nats off
    assert filters_disagree(se, spread, 4).tolist() == [False, True, True]


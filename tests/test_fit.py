"""The Python API a researcher types: ``vrnn.fit`` on arrays in memory, ``model.log_prob`` on the
user's own scale with one result type, ``vrnn.load`` and ``vrnn.save``; the package docstring's
example and the README's Python section run as written."""

import doctest
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vrnn
from vrnn.inference.likelihood import LogProb

README = Path(__file__).resolve().parents[1] / "README.md"


def walks(n: int, D: int = 3, seed: int = 0, scale: float = 1.0, shift: float = 0.0):
    """``n`` random walks of 12 to 30 steps, on a scale far from unit (so normalising
    matters)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((int(T), D)).cumsum(0) * scale + shift).astype(np.float32)
            for T in rng.integers(12, 30, n)]


def tiny(name: str = "vrnn-gauss", D: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    kind = "binary" if name.endswith("bernoulli") else "audio"
    return vrnn.build_model(vrnn.model_config(name, x_dim=D, preset="tiny", data_kind=kind))


def test_the_package_docstring_example_runs():
    result = doctest.testmod(vrnn, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_the_readme_python_section_runs(tmp_path, monkeypatch):
    """The first ```python block of the README's "From Python" section, executed as written."""
    text = README.read_text()
    section = text[text.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})


def test_fit_trains_and_reports_its_history():
    model = tiny()
    seqs = walks(40)
    before = model.log_prob(seqs[30:], num_samples=4,
                            generator=torch.Generator().manual_seed(0)).log_likelihood.mean()
    history = vrnn.fit(model, seqs[:30], valid=seqs[30:], steps=60, batch_size=8,
                       val_interval=20, progress=False, lr=3e-3)
    assert history.stopped == "max_steps" and history.steps == 60
    steps, bounds = history.column("valid_bound")
    assert list(steps) == [20, 40, 60] and np.isfinite(bounds).all()
    _, train = history.column("train_bound")
    assert len(train) == 6  # a train row every 10 updates
    after = model.log_prob(seqs[30:], num_samples=4,
                           generator=torch.Generator().manual_seed(0)).log_likelihood.mean()
    assert after > before + 5  # it learned something (nats per sequence)
    assert not model.training


def test_fit_restores_the_best_validation_weights():
    model = tiny(seed=1)
    seqs = walks(30, seed=1)
    snapshots = {}

    def keep(step, row):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    history = vrnn.fit(model, seqs[:24], valid=seqs[24:], steps=40, batch_size=6,
                       val_interval=10, progress=False, lr=1e-2, callback=keep)
    steps, bounds = history.column("valid_bound")
    assert history.best_step == steps[bounds.argmax()]
    assert history.best_bound == pytest.approx(bounds.max(), rel=1e-5)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[history.best_step][k])


def test_normalisation_travels_with_the_model_and_log_prob_is_on_the_users_scale():
    seqs = walks(30, scale=40.0, shift=500.0)
    model = tiny()
    vrnn.fit(model, seqs[:24], steps=5, batch_size=6, progress=False)
    frames = np.concatenate(seqs[:24]).astype(np.float64)
    np.testing.assert_allclose(model.config.x_loc, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.config.x_scale, frames.std(0), rtol=1e-5)
    test = seqs[24:]
    user = model.log_prob(test, num_samples=3, generator=torch.Generator().manual_seed(5))
    # the oracle: the same model without the statistics, on frames normalised here, plus the
    # log-Jacobian of the normalisation (numpy), sum over steps and features of -log scale
    loc, scale = frames.mean(0), frames.std(0)
    plain = tiny()
    plain.load_state_dict(model.state_dict())
    plain.eval()
    normed = [((s - loc) / scale).astype(np.float32) for s in test]
    inner = plain.log_prob(normed, num_samples=3, generator=torch.Generator().manual_seed(5))
    jacobian = np.array([-len(s) * np.log(scale).sum() for s in test])
    np.testing.assert_allclose(user.log_likelihood.numpy(),
                               inner.log_likelihood.numpy() + jacobian, rtol=1e-4)
    # samples come back on the user's scale, near the data's level
    out = model.sample(16, 5, generator=torch.Generator().manual_seed(0))
    assert abs(float(out.mean()) - frames.mean()) < 10 * frames.std()
    assert float(out.mean()) > 100  # not the normalised scale


def test_binary_frames_are_not_normalised():
    rng = np.random.default_rng(0)
    seqs = [(rng.random((int(T), 5)) < 0.3).astype(np.float32) for T in rng.integers(5, 9, 12)]
    model = tiny("vrnn-bernoulli", D=5)
    vrnn.fit(model, seqs, steps=2, batch_size=4, progress=False)
    assert model.config.x_loc == () and model.config.x_scale == ()
    with pytest.raises(ValueError, match="bernoulli output reads discrete frames"):
        vrnn.fit(tiny("vrnn-bernoulli", D=5), seqs, steps=1, batch_size=4, progress=False,
                 normalise=True)


@pytest.mark.parametrize("objective", [vrnn.IWAE(3), vrnn.FIVO(3, resampling="systematic")],
                         ids=["iwae", "fivo"])
def test_fit_takes_any_objective(objective):
    model = tiny()
    history = vrnn.fit(model, walks(12), steps=3, batch_size=4, progress=False,
                       objective=objective, log_interval=1)
    _, bound = history.column("train_objective")
    assert len(bound) == 3 and np.isfinite(bound).all()
    if objective.reports_ess:
        _, ess = history.column("train_ess")
        assert ((ess >= 1 - 1e-6) & (ess <= 3 + 1e-6)).all()


def test_fit_reads_a_padded_batch_with_lengths_or_a_mask():
    seqs = walks(8)
    T = max(len(s) for s in seqs)
    x = np.zeros((8, T, 3), np.float32)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    lengths = np.array([len(s) for s in seqs])
    mask = np.arange(T)[None] < lengths[:, None]
    a, b = tiny(), tiny()
    ha = vrnn.fit(a, (x, lengths), steps=2, batch_size=4, progress=False, log_interval=1)
    hb = vrnn.fit(b, (torch.from_numpy(x), torch.from_numpy(mask)), steps=2, batch_size=4,
                  progress=False, log_interval=1)
    assert ha.column("train_bound")[1] == pytest.approx(hb.column("train_bound")[1])


@pytest.mark.parametrize("data,match", [
    ([np.zeros((5, 4))], r"train\[0\]: expected a \(T, D=3\) sequence"),
    ([np.zeros((5, 3)), np.full((4, 3), np.nan)], r"train\[1\]: holds NaN"),
    (np.zeros((5, 3)), r"train: an array must be \(B, T, D\)"),
    ((np.zeros((2, 5, 3)), np.array([5, 9])), r"lengths must be in 1..T=5"),
    ("walks.npz", "expected a list of"),
])
def test_fit_refuses_bad_data_naming_it(data, match):
    with pytest.raises(ValueError, match=match):
        vrnn.fit(tiny(), data, steps=1, batch_size=1, progress=False)


def test_fit_refuses_a_batch_larger_than_the_data_and_a_foreign_objective():
    with pytest.raises(ValueError, match="batch_size 8 is more than the 5 training sequences"):
        vrnn.fit(tiny(), walks(5), steps=1, batch_size=8, progress=False)
    # the default batch (32) on five sequences: all five in each batch, said once
    with pytest.warns(UserWarning, match=r"batch_size 32 \(the default\) is more than the 5 "
                                         r"training sequences: training with batches of 5"):
        history = vrnn.fit(tiny(), walks(5), steps=2, progress=False)
    assert len(history.rows) >= 1
    with pytest.raises(ValueError, match="objective must be vrnn.ELBO"):
        vrnn.fit(tiny(), walks(5), steps=1, batch_size=2, progress=False, objective="fivo")


# -- log_prob: one question, one result type ------------------------------------------------------


def test_log_prob_is_one_result_type_for_every_method_and_family():
    seqs = walks(4)
    for name in ("vrnn-gauss", "srnn-gauss", "rnn-gauss"):
        model = tiny(name).eval()
        for method in ("is", "smc"):
            est = model.log_prob(seqs, method=method, num_samples=5, repeats=2,
                                 generator=torch.Generator().manual_seed(0))
            assert isinstance(est, LogProb)
            for field in ("log_likelihood", "stderr", "elbo", "ess_mean", "ess_min",
                          "resamples"):
                v = getattr(est, field)
                assert v.shape == (4,) and torch.isfinite(v).all(), (name, method, field)
            if name == "rnn-gauss":  # no latents: exact whatever was asked
                assert est.method == "exact" and torch.all(est.stderr == 0)
                torch.testing.assert_close(est.elbo, est.log_likelihood)
            else:
                assert est.method == method
                assert (est.ess_min <= est.ess_mean + 1e-5).all()
                assert (est.ess_mean <= 5 + 1e-5).all()
                assert est.log_weights.shape == ((5, 4) if method == "is" else (2, 4))


def test_the_rnns_log_prob_is_its_exact_likelihood():
    model = tiny("rnn-gmm").eval()
    seqs = walks(3)
    est = model.log_prob(seqs)
    with torch.no_grad():
        for i, s in enumerate(seqs):
            exact = model(torch.from_numpy(s)[None]).log_px.sum()
            assert float(est.log_likelihood[i]) == pytest.approx(float(exact), rel=1e-6)


def test_log_prob_refuses_bad_arguments_by_name():
    model = tiny().eval()
    x = torch.zeros(2, 4, 3)
    for kw, match in ((dict(method="mcmc"), "method must be one of is, smc"),
                      (dict(num_samples=0), "num_samples must be an int >= 1"),
                      (dict(method="smc", repeats=0), "repeats must be an int >= 1"),
                      (dict(method="smc", resampling="stratified"), "resampling must be one of")):
        with pytest.raises(ValueError, match=match):
            model.log_prob(x, **kw)
    with pytest.raises(ValueError, match=r"sequence 1: expected \(T, D=3\)"):
        model.log_prob([np.zeros((3, 3)), np.zeros((3, 2))])


def test_systematic_resampling_copies_each_particle_its_expected_number_of_times():
    """Systematic resampling's defining property (unlike multinomial): particle k is drawn
    floor(K W_k) or ceil(K W_k) times."""
    from vrnn.inference.smc import draw_ancestors

    g = torch.Generator().manual_seed(0)
    K = 7
    for _ in range(50):
        W = torch.distributions.Dirichlet(torch.ones(K)).sample((3,))  # (3, K)
        anc = draw_ancestors(W.log(), "systematic", g)  # (3, K)
        counts = torch.stack([torch.bincount(a, minlength=K) for a in anc]).double()
        expected = K * W.double()
        assert ((counts >= expected.floor() - 1e-9) & (counts <= expected.ceil() + 1e-9)).all()
    # the same check catches multinomial draws (which it is not about)
    W = torch.full((1, K), 1.0 / K)
    multi = torch.stack([torch.bincount(draw_ancestors(W.log(), "multinomial", g)[0],
                                        minlength=K) for _ in range(20)])
    assert (multi != 1).any()


def test_smc_with_systematic_resampling_is_unbiased_on_a_tiny_case():
    """E[p^(x)] = p(x): the mean of many filters' p^ (not log p^) against the exact p(x)
    of a one-step-at-a-time model is checked for multinomial in test_smc; here the systematic
    filter's log-mean-exp over many repeats agrees with the multinomial filter's."""
    model = tiny("vrnn-gauss").double().eval()
    x = torch.randn(1, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ests = {r: model.log_prob(x.float().double(), method="smc", num_samples=4, repeats=400,
                              resampling=r, threshold=1.0,
                              generator=torch.Generator().manual_seed(2))
            for r in ("multinomial", "systematic")}
    a, b = ests["multinomial"], ests["systematic"]
    tol = 4 * math.hypot(float(a.stderr), float(b.stderr))
    assert abs(float(a.log_likelihood - b.log_likelihood)) < tol
    assert float(b.resamples.mean()) > 0


# -- load and save --------------------------------------------------------------------------------


def test_load_a_pretrained_model_by_name_and_a_saved_model_by_path(tmp_path):
    model = vrnn.load("handwriting-vrnn-gmm")
    assert model.config.name == "VRNN-GMM" and not model.training
    fitted = tiny()
    vrnn.fit(fitted, walks(8, scale=5.0), steps=2, batch_size=4, progress=False)
    path = vrnn.save(fitted, tmp_path / "mine.pt")
    again = vrnn.load(path)
    assert again.config.x_scale == fitted.config.x_scale
    seqs = walks(2, seed=3, scale=5.0)
    a = fitted.log_prob(seqs, generator=torch.Generator().manual_seed(0)).log_likelihood
    b = again.log_prob(seqs, generator=torch.Generator().manual_seed(0)).log_likelihood
    torch.testing.assert_close(a, b)
    # what torch.load reads without running code
    assert torch.load(path, weights_only=True)["format"] == "vrnn-checkpoint"


@pytest.mark.parametrize("source,error,match", [
    ("", ValueError, "needs a checkpoint path or a pretrained model's name"),
    ("no-such-model", FileNotFoundError, "no such checkpoint file, nor a pretrained model"),
    (3, ValueError, "needs a checkpoint path"),
])
def test_load_refuses_what_it_cannot_read(source, error, match):
    with pytest.raises(error, match=match):
        vrnn.load(source)

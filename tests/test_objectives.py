"""The training objectives (:mod:`vrnn.inference.objectives`, ``vrnn train --objective``): the IWAE
against its literal formula and the ELBO, its rise with K up to the IS estimate, free bits, FIVO
wired to the particle filter, and the training loop's runs, metrics, resume and refusals."""

import csv
import dataclasses
import math
import types

import numpy as np
import pytest
import torch
from toydata import tiny_train_config, write_npz

from vrnn import build_model, model_config
from vrnn.inference.importance import estimate_log_likelihood
from vrnn.inference.objectives import elbo_bound, fivo_bound, free_bits_kl, iwae_bound
from vrnn.inference.protocol import masked_sum
from vrnn.models.reference import Literal
from vrnn.store.checkpoint import load_checkpoint
from vrnn.train.config import add_train_flags
from vrnn.train.loop import TrainConfig, train
from vrnn.train.metrics import METRIC_FIELDS
from vrnn.train.run_folder import repair_metrics

D = 3


def tiny(name="vrnn-gauss", seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    return build_model(model_config(name, x_dim=D, preset="tiny", **kw)).to(dtype)


def prefix_mask(lengths, T):
    return torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, T)


# -- the IWAE -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vrnn-gauss", "srnn-gauss"])
@pytest.mark.parametrize("B,T", [(1, 1), (3, 7)])
def test_iwae_with_one_particle_is_the_sampled_kl_elbo(name, B, T):
    model = tiny(name)
    x = torch.randn(B, T, D)
    mask = prefix_mask([T, max(1, T - 3), 1][:B], T)
    noise = torch.randn(B, T, model.config.z_dim)
    bound = iwae_bound(model, x, mask, particles=1, noise=noise)
    log_px, kl, log_ratio = Literal(model).terms(x, noise, mask)
    # K = 1: log w itself, the ELBO with the sampled log-ratio in place of the analytic KL
    torch.testing.assert_close(bound.objective, masked_sum(log_px + log_ratio, mask))
    torch.testing.assert_close(bound.elbo, masked_sum(log_px - kl, mask))
    torch.testing.assert_close(bound.kl, masked_sum(kl, mask))
    assert not torch.allclose(bound.objective, bound.elbo)  # sampled KL != analytic KL
    assert bound.state is None


def test_the_iwae_gradient_is_autograd_of_the_literal_formula():
    model = tiny("vrnn-gmm", dtype=torch.float64)
    K, B, T = 3, 2, 4
    x = torch.randn(B, T, D, dtype=torch.float64)
    noise = torch.randn(K * B, T, model.config.z_dim, dtype=torch.float64)
    params = [p for p in model.parameters()]
    fast = iwae_bound(model, x, None, particles=K, noise=noise).objective.sum()
    fast_grads = torch.autograd.grad(fast, params, allow_unused=True)
    # written out: log w^k_b = sum_t log p(x_t | .) + log p(z_t) - log q(z_t), per particle,
    # each particle a separate literal pass with its own rows of the noise
    ref = Literal(model)
    log_w = []
    for k in range(K):
        log_px, _, log_ratio = ref.terms(x, noise[k * B:(k + 1) * B])
        log_w.append((log_px + log_ratio).sum(1))  # (B,)
    log_w = torch.stack(log_w)  # (K, B)
    literal = (torch.log(torch.exp(log_w - log_w.max(0).values).mean(0))
               + log_w.max(0).values).sum()
    torch.testing.assert_close(fast, literal)
    literal_grads = torch.autograd.grad(literal, params, allow_unused=True)
    checked = 0
    for p, a, b in zip(params, fast_grads, literal_grads):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        checked += int(b.abs().sum() > 0)
    assert checked >= len(params) - 1  # every parameter but at most an unused one takes part


@torch.no_grad()
def test_the_iwae_rises_with_k_towards_the_importance_sampled_likelihood():
    model = tiny("vrnn-gauss", seed=3)
    B, T, draws = 2, 5, 300
    x = torch.randn(B, T, D) * 2
    xr = x.repeat(draws, 1, 1)  # (draws * B, T, D): one IWAE draw per row
    gen = torch.Generator().manual_seed(0)
    means, errs = {}, {}
    for K in (1, 4, 16):
        b = iwae_bound(model, xr, None, particles=K, generator=gen).objective.view(draws, B)
        means[K], errs[K] = b.mean(0), b.std(0) / math.sqrt(draws)
        if K == 1:  # in expectation the sampled-KL ELBO is the analytic one
            elbo = model(xr, generator=gen).elbo().view(draws, B).mean(0)
            assert (means[1] - elbo).abs().max() < 4 * errs[1].max()
    log_p = estimate_log_likelihood(model, x, num_samples=20000, generator=gen).log_likelihood
    for lo, hi in ((1, 4), (4, 16)):
        assert (means[hi] - means[lo] > 3 * (errs[hi] + errs[lo])).all(), (means, errs)
    assert (means[16] <= log_p + 3 * errs[16]).all(), (means[16], log_p)
    assert (log_p - means[1] > 1.0).all()  # a gap worth closing: the test can tell K apart


# -- free bits ------------------------------------------------------------------------------------

def test_free_bits_clamp_each_steps_kl_and_leave_the_reported_elbo_alone():
    model = tiny("vrnn-gauss", seed=1)
    B, T = 3, 6
    x = torch.randn(B, T, D) * 2
    mask = prefix_mask([6, 4, 2], T)
    noise = torch.randn(B, T, model.config.z_dim)
    plain = elbo_bound(model, x, mask, noise=noise)
    terms = model(x, mask, noise=noise)
    lam = float(terms.kl.detach()[mask].median())  # about half the steps below lambda
    below = (terms.kl < lam) & mask
    assert 0 < int(below.sum()) < int(mask.sum())
    freed = elbo_bound(model, x, mask, noise=noise, free_bits=lam)
    torch.testing.assert_close(freed.elbo, plain.elbo)  # the report is the true ELBO
    torch.testing.assert_close(freed.kl, plain.kl)
    # the objective is the ELBO less exactly the clamped amount of the steps below lambda
    clamped = masked_sum((lam - terms.kl).clamp(min=0), mask)
    torch.testing.assert_close(freed.objective, plain.objective - clamped)
    torch.testing.assert_close(free_bits_kl(terms.kl, lam), torch.maximum(terms.kl,
                                                                          torch.tensor(lam)))
    # the gradient: steps below lambda lose their KL term, the others keep it
    params = list(model.prior.parameters()) + list(model.encoder.parameters())
    got = torch.autograd.grad(freed.objective.sum(), params)
    t2 = model(x, mask, noise=noise)
    want = torch.autograd.grad(masked_sum(t2.log_px - t2.kl * ~below, mask).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # lambda above every step's KL: the prior (seen only through the KL) gets no gradient
    high = elbo_bound(model, x, mask, noise=noise, free_bits=1e3).objective.sum()
    for g in torch.autograd.grad(high, list(model.prior.parameters()), allow_unused=True):
        assert g is None or not g.abs().any()
    with_kl = torch.autograd.grad(plain.objective.sum(), list(model.prior.parameters()))
    assert any(g.abs().sum() > 0 for g in with_kl)


# -- FIVO -----------------------------------------------------------------------------------------

def test_fivo_is_the_differentiable_particle_filter_beside_the_elbo():
    """FIVO's bound is the particle filter run in the model's pass (its value and gradient
    against a filter written from the protocol: tests/test_particles.py): with one particle
    and no resampling it is the single trajectory's log weight, and the ELBO beside it is the
    plain ELBO pass's."""
    model = tiny("vrnn-gauss", seed=2)
    x = torch.randn(2, 5, D)
    noise = torch.randn(2, 5, model.config.z_dim)
    bound = fivo_bound(model, x, None, particles=3, generator=torch.Generator().manual_seed(4),
                       elbo_noise=noise)
    assert bound.objective.requires_grad and not bound.elbo.requires_grad
    assert bool(((bound.ess >= 1) & (bound.ess <= 3)).all())
    torch.testing.assert_close(bound.elbo, elbo_bound(model, x, None, noise=noise).elbo)
    one = fivo_bound(model, x, None, particles=1, generator=torch.Generator().manual_seed(4),
                     noise=noise, elbo_noise=noise)
    terms = model(x, None, noise=noise, sample_terms=True)
    torch.testing.assert_close(one.objective, terms.log_weights())
    lean = fivo_bound(model, x, None, particles=3, generator=torch.Generator().manual_seed(4),
                      elbo_noise=noise, figures=False)  # the same filter, no ELBO pass
    assert lean.elbo is None and lean.kl is None
    torch.testing.assert_close(lean.objective, bound.objective)
    torch.testing.assert_close(lean.ess, bound.ess)


# -- the training loop ----------------------------------------------------------------------------

@pytest.fixture
def data(tmp_path):
    return str(write_npz(tmp_path / "toy.npz", x_dim=4))


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("model,objective", [("vrnn-gauss", "elbo"), ("vrnn-gauss", "iwae"),
                                             ("srnn-gauss", "iwae"), ("vrnn-i-gauss", "fivo")])
def test_each_objective_trains_and_logs_its_bound_beside_the_elbo(data, tmp_path, model,
                                                                   objective):
    out = tmp_path / "run"
    cfg = tiny_train_config(data, out, model=model, objective=objective, max_steps=2,
                            log_interval=1, val_interval=2)
    assert cfg.particles == (None if objective == "elbo" else 4)
    result = train(cfg)
    assert result.step == 2
    rows = rows_of(out / "metrics.csv")
    assert tuple(rows[0]) == METRIC_FIELDS
    train_rows = [r for r in rows if r["train_bound"]]
    assert len(train_rows) == 2
    for r in train_rows:
        bound, objective_value = float(r["train_bound"]), float(r["train_objective"])
        assert np.isfinite(bound) and np.isfinite(objective_value)
        if objective == "elbo":
            assert objective_value == bound and r["train_ess"] == ""
        elif objective == "iwae":  # log-mean-exp of the same 4 particles' weights
            assert objective_value > bound
        if objective == "fivo":
            assert 1 <= float(r["train_ess"]) <= 4
        else:
            assert r["train_ess"] == ""
    assert all(r["valid_bound"] == "" for r in train_rows)


def test_fivo_runs_its_elbo_pass_on_the_updates_that_write_a_row(data, tmp_path, monkeypatch):
    """FIVO's plain ELBO costs a pass of its own: training asks for it on the updates that log
    (every --log-interval and the last), and each row reports that update's ELBO and KL beside
    the FIVO bound averaged over all the updates since the last row."""
    from vrnn.inference.objectives import FIVO

    asked = []
    real = FIVO.bound

    def spy(self, *a, figures=True, **kw):
        asked.append(figures)
        return real(self, *a, figures=figures, **kw)

    monkeypatch.setattr(FIVO, "bound", spy)
    out = tmp_path / "run"
    train(tiny_train_config(data, out, objective="fivo", particles=3, max_steps=7,
                            log_interval=3, val_interval=100))
    assert asked == [False, False, True, False, False, True, True]
    train_rows = [r for r in rows_of(out / "metrics.csv") if r["train_objective"]]
    assert [int(r["step"]) for r in train_rows] == [3, 6, 7]
    for r in train_rows:
        assert np.isfinite(float(r["train_bound"])) and float(r["train_kl_per_step"]) >= 0
        assert 1 <= float(r["train_ess"]) <= 3


@pytest.mark.parametrize("objective", ["iwae", "fivo"])
def test_a_resumed_k_particle_run_matches_one_that_never_stopped(data, tmp_path, objective):
    kw = dict(objective=objective, particles=3, max_steps=4, val_interval=2)
    train(tiny_train_config(data, tmp_path / "a", **kw))
    train(tiny_train_config(data, tmp_path / "b", **{**kw, "max_steps": 2}))
    train(tiny_train_config(data, tmp_path / "b", resume="auto", **kw))
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])
    ra, rb = rows_of(tmp_path / "a" / "metrics.csv"), rows_of(tmp_path / "b" / "metrics.csv")
    for x, y in zip(ra, rb, strict=True):
        assert {k: v for k, v in x.items() if k != "elapsed_s"} == \
            {k: v for k, v in y.items() if k != "elapsed_s"}


def test_free_bits_train_and_the_logged_bound_stays_the_elbo(data, tmp_path):
    kw = dict(max_steps=2, log_interval=1, val_interval=2)
    train(tiny_train_config(data, tmp_path / "plain", **kw))
    train(tiny_train_config(data, tmp_path / "freed", free_bits=50.0, **kw))
    plain, freed = rows_of(tmp_path / "plain" / "metrics.csv"), \
        rows_of(tmp_path / "freed" / "metrics.csv")
    # the first update sees the same weights and noise: same ELBO, lower objective
    assert plain[0]["train_bound"] == freed[0]["train_bound"]
    assert float(freed[0]["train_objective"]) < float(freed[0]["train_bound"])
    assert float(plain[0]["train_objective"]) == float(plain[0]["train_bound"])


def test_an_old_metrics_csv_without_the_new_columns_resumes(data, tmp_path, capsys):
    out = tmp_path / "run"
    kw = dict(max_steps=4, val_interval=2)
    train(tiny_train_config(data, out, **{**kw, "max_steps": 2}))
    old = [f for f in METRIC_FIELDS if f not in ("train_objective", "train_ess")]
    rows = rows_of(out / "metrics.csv")
    with open(out / "metrics.csv", "w", newline="") as f:  # as an older version wrote it
        w = csv.DictWriter(f, old, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    read, notes = repair_metrics(out / "metrics.csv", METRIC_FIELDS)
    assert [r["train_objective"] for r in read] == [""] * len(rows)
    assert notes and "no train_objective, train_ess" in notes[0]
    train(tiny_train_config(data, out, resume="auto", **kw))
    assert "written with other columns" in capsys.readouterr().err
    after = rows_of(out / "metrics.csv")
    assert tuple(after[0]) == METRIC_FIELDS
    assert [r["step"] for r in after[:len(rows)]] == [r["step"] for r in rows]
    assert after[-2]["train_objective"] != ""  # the resumed rows have it


def test_k_particle_objectives_start_every_tbptt_window_afresh(tmp_path, capsys):
    from vrnn.data import load_dataset

    ds = load_dataset(str(write_npz(tmp_path / "toy.npz", x_dim=4)))
    rng = np.random.default_rng(1)
    streams = [rng.normal(size=(60, 4)).astype(np.float32) for _ in range(2)]
    audio = types.SimpleNamespace(info=dataclasses.replace(ds.info, kind="audio"),
                                  train=ds.train, valid=ds.valid, test=ds.test,
                                  train_streams=streams)
    kw = dict(max_steps=2, seq_len=5, batch_size=4, val_interval=100)
    train(tiny_train_config("toy", tmp_path / "iwae", objective="iwae", **kw), dataset=audio)
    assert "every TBPTT window of 5 frames starts from the initial state" in \
        capsys.readouterr().err
    assert load_checkpoint(tmp_path / "iwae" / "last.pt")["tbptt_state"] is None
    train(tiny_train_config("toy", tmp_path / "elbo", **kw), dataset=audio)
    assert "TBPTT" not in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "elbo" / "last.pt")["tbptt_state"] is not None


@pytest.mark.parametrize("kw,flag", [
    (dict(model="rnn-gauss", objective="iwae"), "--objective"),
    (dict(model="rnn-gmm", free_bits=0.5), "--free-bits"),
    (dict(objective="iwae", free_bits=0.5), "--free-bits"),
    (dict(objective="fivo", kl_anneal_steps=100), "--kl-anneal-steps"),
    (dict(particles=4), "--particles"),
    (dict(objective="iwae", particles=0), "--particles"),
    (dict(free_bits=-1.0), "--free-bits"),
    (dict(objective="vimco"), "--objective"),
])
def test_settings_that_do_not_go_together_name_their_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        TrainConfig(model=kw.pop("model", "vrnn-gauss"), **kw)


def test_the_flags_parse_and_the_defaults_are_the_papers():
    import argparse

    p = argparse.ArgumentParser()
    add_train_flags(p)
    args = p.parse_args(["--objective", "fivo", "--particles", "8"])
    assert (args.objective, args.particles, args.free_bits) == ("fivo", 8, 0.0)
    assert p.parse_args(["--free-bits", "0.25"]).free_bits == 0.25
    with pytest.raises(SystemExit):
        p.parse_args(["--objective", "vimco"])
    cfg = TrainConfig()
    assert (cfg.objective, cfg.particles, cfg.free_bits) == ("elbo", None, 0.0)

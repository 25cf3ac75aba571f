"""STORN (:mod:`vrnn.models.storn`): the fast path (no loop over time) against the literal
reading (terms, loss and every gradient, float32 and float64, a planted bug), masks and padding,
truncated BPTT, replicas, a recognition model that never reads a later frame and a prior that
is N(0, I), the particle filter against a trajectory-level reference, sampling, training,
presets, and the command line. The helpers are tests/test_dmm.py's."""

from __future__ import annotations

import pytest
import torch
from test_dmm import (
    assert_bf16_products_and_float32_sums,
    assert_fast_path_is_literal,
    assert_log_prob_fields,
    assert_no_resampling_is_importance_sampling,
    assert_padding_changes_nothing,
    assert_replicas_are_the_batch_repeated,
    assert_sampling,
    assert_smc_follows_trajectories,
    assert_temperature_narrows,
    assert_trains,
    assert_units_match_the_vrnn,
    cli_workflow,
    make_x,
    noise_for,
    tiny_model,
)
from test_srnn import case_id, ragged

from vrnn import ModelConfig, model_config, parse_model_name
from vrnn.models.reference import Literal
from vrnn.models.storn import STORN
from vrnn.train.config import TrainConfig

TOL = dict(rtol=1e-10, atol=1e-10)


# -- 1. the fast path against the literal reading -------------------------------------------------

CASES = [dict(cell=c, dtype=d) for c in ("lstm", "gru") for d in ("float64", "float32")]
CASES += [dict(output="gmm", cell="gru"), dict(output="bernoulli", cell="lstm"),
          dict(output="categorical", cell="gru"),
          dict(cell="lstm", phi_x=(), phi_z=(), encoder=(), decoder=()),
          dict(cell="gru", encoder=(5, 4), a_dim=6)]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fast_path_matches_the_literal_reading(case):
    """A ragged batch: the same terms, loss and every gradient as :class:`Literal` (float64
    1e-9, float32 1e-5), both cells, every head, with and without feature MLPs."""
    case = dict(case)
    output = case.pop("output", "gauss")
    dtype = getattr(torch, case.pop("dtype", "float64"))
    model = tiny_model(f"storn-{output}", dtype=dtype, **case)
    assert isinstance(model, STORN) and model.config.prior == "standard"
    gen = torch.Generator().manual_seed(1)
    x = make_x(f"storn-{output}", 3, 6, gen, dtype)
    assert_fast_path_is_literal(model, x, ragged([6, 4, 2], 6),
                                noise_for(model, 3, 6, gen, dtype))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7])
def test_fast_path_matches_at_every_size(B, T):
    model = tiny_model("storn-gauss", cell="gru")
    gen = torch.Generator().manual_seed(2)
    assert_fast_path_is_literal(model, make_x("storn-gauss", B, T, gen), None,
                                noise_for(model, B, T, gen))


def test_a_planted_bug_in_the_fast_path_turns_the_comparison_red(monkeypatch):
    """The comparison can fail: a fast path whose generative RNN reads x_t instead of x_{t-1}
    (the frames not shifted) differs from the literal reading from the second step on."""
    model = tiny_model("storn-gauss")
    gen = torch.Generator().manual_seed(3)
    x, noise = make_x("storn-gauss", 2, 5, gen), noise_for(model, 2, 5, gen)
    monkeypatch.setattr(STORN, "generative_inputs", staticmethod(lambda feat_x, prev: feat_x))
    with torch.no_grad():
        fast = model(x, noise=noise).log_px
        literal = Literal(model).terms(x, noise)[0]
    assert (fast - literal).abs().amin(0).min() > 1e-6  # every step moved


def test_the_prior_is_standard_normal_and_the_kl_is_against_it():
    model = tiny_model("storn-gauss")
    gen = torch.Generator().manual_seed(4)
    x, noise = make_x("storn-gauss", 2, 4, gen), noise_for(model, 2, 4, gen)
    with torch.no_grad():
        out = model(x, noise=noise, return_latents=True)
    lat = out.latents
    assert torch.equal(lat["prior_loc"], torch.zeros_like(lat["prior_loc"]))
    assert torch.equal(lat["prior_scale"], torch.ones_like(lat["prior_scale"]))
    m, s = lat["enc_loc"], lat["enc_scale"]  # KL(N(m, s^2) || N(0, 1)) summed over Z
    torch.testing.assert_close(out.kl, 0.5 * (m ** 2 + s ** 2 - 1 - 2 * s.log()).sum(-1), **TOL)


# -- 2. padding, truncated BPTT, replicas ---------------------------------------------------------


def test_a_sequence_scores_the_same_alone_and_padded():
    assert_padding_changes_nothing(tiny_model("storn-gauss", cell="lstm"))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_windows_are_one_pass(cell):
    """x[:, :k] then x[:, k:] from the first window's state (both RNNs' states and x_{k-1}) is
    one pass over x, by the fast path and by the literal reading; each part of the state
    counts."""
    model = tiny_model("storn-gauss", cell=cell)
    gen = torch.Generator().manual_seed(6)
    x, noise, k = make_x("storn-gauss", 2, 7, gen), noise_for(model, 2, 7, gen), 3
    one = model(x, noise=noise, sample_terms=True, return_latents=True)
    first = model(x[:, :k], noise=noise[:, :k], sample_terms=True)
    n = 2 if cell == "lstm" else 1
    assert len(first.state) == 2 * n + 1
    torch.testing.assert_close(first.state[-1], x[:, k - 1], rtol=0, atol=0)
    torch.testing.assert_close(first.state[0], one.latents["h"][:, k - 1], **TOL)
    torch.testing.assert_close(first.state[n], one.latents["g"][:, k - 1], **TOL)
    second = model(x[:, k:], state=first.state, noise=noise[:, k:], sample_terms=True)
    literal = model.literal_forward(x[:, k:], state=first.state, noise=noise[:, k:],
                                    sample_terms=True)
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        whole = getattr(one, key)
        torch.testing.assert_close(getattr(first, key), whole[:, :k], **TOL)
        torch.testing.assert_close(getattr(second, key), whole[:, k:], **TOL)
        torch.testing.assert_close(getattr(literal, key), whole[:, k:], **TOL)
    for a, b, c in zip(second.state, one.state, literal.state):
        torch.testing.assert_close(a, b, **TOL)
        torch.testing.assert_close(c, b, **TOL)
    for part in (0, n, 2 * n):  # h, g, x_prev: zeroing any one changes the second window
        state = tuple(torch.zeros_like(s) if i == part else s for i, s in enumerate(first.state))
        wrong = model(x[:, k:], state=state, noise=noise[:, k:])
        assert (wrong.log_px + wrong.kl - second.log_px - second.kl).abs().max() > 1e-6, part


@pytest.mark.parametrize("explicit_state", [False, True])
def test_replicas_are_the_batch_repeated(explicit_state):
    assert_replicas_are_the_batch_repeated(tiny_model("storn-gauss", cell="lstm"),
                                           explicit_state)


# -- 3. q(z_t) reads x_{<=t} only -----------------------------------------------------------------


def test_the_recognition_model_never_reads_a_later_frame():
    """With fixed noise a change of x_u leaves q(z_s) and every term of the steps s < u
    bit-identical, and moves q(z_u): STORN's q(z_t | x_{<=t})."""
    model = tiny_model("storn-gauss", seed=1)
    gen = torch.Generator().manual_seed(8)
    T = 7
    x, noise = make_x("storn-gauss", 2, T, gen), noise_for(model, 2, T, gen)
    with torch.no_grad():
        a = model(x, noise=noise, sample_terms=True, return_latents=True)
        for u in (1, 4, 6):
            moved = x.clone()
            moved[:, u] += 2.0
            b = model(moved, noise=noise, sample_terms=True, return_latents=True)
            for key in ("enc_loc", "enc_scale", "z"):
                assert torch.equal(a.latents[key][:, :u], b.latents[key][:, :u]), (key, u)
                assert (a.latents[key][:, u] - b.latents[key][:, u]).abs().max() > 1e-6
            for key in ("log_px", "kl", "log_qz"):
                assert torch.equal(getattr(a, key)[:, :u], getattr(b, key)[:, :u]), (key, u)


# -- 4. the particle filter, sampling, log_prob, training -----------------------------------------


def test_the_particle_filter_follows_whole_trajectories(monkeypatch):
    assert_smc_follows_trajectories(tiny_model("storn-gauss", cell="lstm"), monkeypatch)


@pytest.mark.parametrize("name", ["storn-gauss", "storn-categorical"])
def test_no_resampling_is_importance_sampling_of_the_same_draws(name):
    assert_no_resampling_is_importance_sampling(tiny_model(name))


@pytest.mark.parametrize("name", ["storn-gmm", "storn-bernoulli"])
def test_log_prob_by_is_and_smc(name):
    assert_log_prob_fields(tiny_model(name))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sampling(cell):
    model = tiny_model("storn-gauss", cell=cell)
    assert_sampling(model, make_x("storn-gauss", 1, 4, torch.Generator().manual_seed(7))[0])
    assert_temperature_narrows(model)


def test_training_with_every_objective():
    assert_trains("storn-gauss")


def test_bf16_products_and_float32_sums():
    assert_bf16_products_and_float32_sums(tiny_model("storn-gauss", dtype=torch.float32,
                                                     cell="gru"))


# -- 5. configuration and presets -----------------------------------------------------------------


def test_config_names_and_presets():
    assert parse_model_name("storn-bernoulli", "binary") == {
        "family": "storn", "prior": "standard", "output": "bernoulli", "name": "STORN-Bernoulli"}
    cfg = model_config("storn-bernoulli", x_dim=88, data_kind="binary", preset="paper")
    assert (cfg.h_dim, cfg.a_dim, cfg.z_dim, cfg.phi_x, cfg.decoder) == (300, 300, 100, (), ())
    for bad in (dict(prior="learned"), dict(prior="standard", posterior="smoothing")):
        with pytest.raises(ValueError, match="STORN's prior is N"):
            ModelConfig(family="storn", **bad)
    with pytest.raises(ValueError, match="--posterior must be filtering for STORN"):
        TrainConfig(model="storn-gauss", posterior="smoothing")
    assert TrainConfig(model="storn-gauss", posterior="filtering").posterior == "filtering"
    with pytest.raises(ValueError, match="family='storn'"):
        STORN(ModelConfig(family="vrnn"))


@pytest.mark.parametrize("preset", ["paper", "small", "tiny"])
def test_presets_match_the_vrnn(preset):
    assert_units_match_the_vrnn("storn", preset)


# -- 6. the command line --------------------------------------------------------------------------


def test_train_evaluate_sample_on_the_command_line(tmp_path):
    cli_workflow("storn-bernoulli", tmp_path)

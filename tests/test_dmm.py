"""The Deep Markov Model (:mod:`vrnn.models.dmm`): the fast path against the literal reading
(terms, loss and every gradient, float32 and float64, both posteriors, a planted bug), masks and
padding, truncated BPTT, replicas, which frames each posterior reads, the DMM built as a
linear-Gaussian state-space model against the Kalman filter's exact log p(x) (the ELBO below it,
importance sampling and the particle filter rising to it and unbiased in p(x), exact with the
exact posterior), the particle filter against a trajectory-level reference, sampling, training,
presets, and the command line.

Helpers shared with tests/test_storn.py live here: :func:`tiny_model`, :func:`make_x`,
:func:`assert_fast_path_is_literal`, :func:`trajectory_filter`, :func:`cli_workflow`, ..."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from test_kalman import (
    joint_log_likelihood,
    kalman_log_likelihood,
    model_expected_elbo,
    numpy_expected_elbo,
    posterior_params,
    sample_ssm,
    softplus_inv,
    ssm,
)
from test_precision import _audit, _batch, _bf16_products_only, _no_bf16_reductions
from test_smc import reweigh_and_resample
from test_srnn import case_id, gradients, ragged, rel_err
from toydata import vrnn

import vrnn as api
from vrnn import ELBO, FIVO, IWAE, ModelConfig, build_model, model_config
from vrnn.cli import main
from vrnn.commands.analysis import kl_profile
from vrnn.data import list_datasets
from vrnn.inference.importance import estimate_log_likelihood
from vrnn.inference.protocol import masked_sum
from vrnn.inference.smc import smc_log_likelihood
from vrnn.models.base import SequenceModel
from vrnn.models.dmm import DMM, _SplitCombiner
from vrnn.models.layers import BackwardRNN, ForwardRNN
from vrnn.models.presets import _count
from vrnn.models.reference import Literal

KINDS = {"gauss": ("audio", 4), "gmm": ("strokes", 3), "bernoulli": ("binary", 5),
         "categorical": ("text", 5)}
"""Each output with the data kind it goes with and a tiny frame size."""

TOLS = {torch.float64: 1e-9, torch.float32: 1e-5}
"""The fast path against the literal reading: relative tolerance per dtype."""


# -- helpers (also read by tests/test_storn.py) ----------------------------------------------------


def tiny_model(name: str, *, dtype=torch.float64, seed: int = 0, **kw) -> SequenceModel:
    """A small model of ``name`` (``dmm-gauss``, ``storn-gmm``, ...): z 3, 8 units, MLPs of one
    or two small layers, unless ``kw`` says otherwise; weights from ``seed``, and the learned
    initial state (the DMM's z_0, STORN's h_0) drawn too, so that a path that ignores it fails."""
    kind, D = KINDS[name.rsplit("-", 1)[1]]
    sizes = dict(h_dim=8, z_dim=3, phi_x=(5,), phi_z=(4,), prior_net=(6,), encoder=(6,),
                 decoder=(7,))
    cfg = model_config(name, x_dim=D, data_kind=kind, preset="tiny", match_parameters=False,
                       **{**sizes, **kw})
    torch.manual_seed(seed)
    model = build_model(cfg).to(dtype)
    if isinstance(model.initial_state, torch.nn.Parameter):
        with torch.no_grad():
            model.initial_state.normal_()
    return model


def make_x(name: str, B: int, T: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Frames that fit the model's output: Gaussian, pen offsets with a pen bit, bits, one-hot."""
    kind, D = KINDS[name.rsplit("-", 1)[1]]
    x = torch.randn(B, T, D, generator=gen, dtype=dtype)
    if kind == "strokes":
        x[..., 2] = (x[..., 2] > 0.5).to(dtype)
    if kind == "binary":
        x = (x > 0).to(dtype)
    if kind == "text":
        x = torch.nn.functional.one_hot(x.argmax(-1), D).to(dtype)
    return x


def noise_for(model, N: int, T: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(N, T, model.latent_dim, generator=gen, dtype=dtype)


def assert_fast_path_is_literal(model, x, mask, noise) -> None:
    """Same weights, same noise: the fast ``forward`` and :class:`Literal` give the same
    per-step terms, loss and gradient of every parameter (each of which gets one, when T > 1:
    a one-step sequence leaves the recurrent weights out), to the dtype's tolerance; the mask
    counts."""
    tol = TOLS[x.dtype]
    close = dict(rtol=tol, atol=tol)
    terms = model(x, mask, noise=noise, sample_terms=True)
    ref = Literal(model)
    log_px, kl, log_ratio = ref.terms(x, noise, mask)
    torch.testing.assert_close(terms.log_px, log_px, **close)
    torch.testing.assert_close(terms.kl, kl, **close)
    torch.testing.assert_close(terms.log_pz - terms.log_qz, log_ratio, **close)
    assert (kl > 0).all()  # a real KL, not zeros on both sides
    loss, _ = model.loss(x, mask, noise=noise)
    loss_ref = ref.loss(x, noise, mask)
    torch.testing.assert_close(loss, loss_ref, **close)
    torch.testing.assert_close(loss_ref, -masked_sum(log_px - kl, mask).mean(), **close)
    if mask is not None and not mask.all():
        assert abs(model.loss(x, None, noise=noise)[0].item() - loss.item()) > 1e-3
    g_fast, g_ref = gradients(model, loss), gradients(model, loss_ref)
    for name, g in g_ref.items():
        assert g.abs().sum() > 0 or x.shape[1] == 1, f"{name} gets no gradient"
        assert rel_err(g_fast[name], g) < tol, (name, rel_err(g_fast[name], g))


def trajectory_filter(model, x: torch.Tensor, K: int, gen: torch.Generator,
                      threshold: float) -> torch.Tensor:
    """A particle filter over whole trajectories of noise, for ``x (B, T, D)`` with every step
    valid: particle k of sequence b is the list of its eps_1..eps_t, resampling copies lists,
    and its incremental weight at step t is read from the model's literal pass over the whole
    sequence with its own noise (later steps padded with zeros, which step t cannot read), so no
    state is carried. Draws from ``gen`` what :func:`smc_log_likelihood` documents."""
    B, T, _ = x.shape
    N, Z = K * B, model.latent_dim
    paths = [[] for _ in range(N)]  # row k * B + b: particle k of sequence b
    log_W = torch.full((K, B), -math.log(K), dtype=x.dtype)
    log_p = torch.zeros(B, dtype=x.dtype)
    for t in range(T):
        eps = torch.randn(N, Z, dtype=x.dtype, generator=gen)
        paths = [path + [eps[n]] for n, path in enumerate(paths)]
        log_alpha = torch.empty(N, dtype=x.dtype)
        for n, path in enumerate(paths):
            b = n % B
            noise = torch.zeros(1, T, Z, dtype=x.dtype)
            noise[0, :t + 1] = torch.stack(path)
            terms = model.literal_forward(x[b:b + 1], noise=noise, sample_terms=True)
            log_alpha[n] = (terms.log_px + terms.log_pz - terms.log_qz)[0, t]
        increment, log_W = reweigh_and_resample(paths, log_W, log_alpha, threshold, t + 1 < T,
                                                gen)
        log_p += increment
    return log_p


def assert_padding_changes_nothing(model):
    """Each sequence's terms (its own noise) alone equal its rows padded in a ragged batch of
    lengths 7, 4, 2, and what the padded frames hold changes no valid term. Returns the batch
    with 1e3 in its padded frames, the noise and the padded terms."""
    gen = torch.Generator().manual_seed(4)
    lengths = [7, 4, 2]
    x, mask = make_x(model.config.name.lower(), 3, 7, gen), ragged(lengths, 7)
    noise = noise_for(model, 3, 7, gen)
    padded = model(x, mask, noise=noise, sample_terms=True)
    for b, L in enumerate(lengths):
        alone = model(x[b:b + 1, :L], noise=noise[b:b + 1, :L], sample_terms=True)
        for key in ("log_px", "kl", "log_pz", "log_qz"):
            torch.testing.assert_close(getattr(alone, key), getattr(padded, key)[b:b + 1, :L],
                                       rtol=1e-10, atol=1e-10)
    garbage = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 1e3))
    moved = model(garbage, mask, noise=noise, sample_terms=True)
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        torch.testing.assert_close(getattr(moved, key)[mask], getattr(padded, key)[mask],
                                   rtol=1e-10, atol=1e-10)
    return garbage, noise, padded


def assert_replicas_are_the_batch_repeated(model, explicit_state: bool) -> None:
    """``model(x, mask, replicas=R)`` is ``model(x.repeat(R, 1, 1), mask.repeat(R, 1))`` with
    the same noise: every term, latent and the final state; from the initial state, or from an
    explicit one of R * B rows."""
    gen = torch.Generator().manual_seed(7)
    B, T, R = 2, 5, 3
    x, mask = make_x(model.config.name.lower(), B, T, gen), ragged([5, 3], T)
    noise = noise_for(model, R * B, T, gen)
    state = None
    if explicit_state:
        state = tuple(torch.randn(R * B, s.shape[-1], generator=gen, dtype=torch.float64)
                      for s in model.init_state(1))
    rep = model(x, mask, replicas=R, noise=noise, state=state, sample_terms=True,
                return_latents=True)
    big = model(x.repeat(R, 1, 1), mask.repeat(R, 1), noise=noise, state=state,
                sample_terms=True, return_latents=True)
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        torch.testing.assert_close(getattr(rep, key), getattr(big, key), rtol=1e-10, atol=1e-10)
    for key in big.latents:
        torch.testing.assert_close(rep.latents[key], big.latents[key], rtol=1e-10, atol=1e-10)
    for a, b in zip(rep.state, big.state):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert (rep.log_px[:B] - rep.log_px[B:2 * B]).abs().max() > 1e-6  # each its own noise


def assert_smc_follows_trajectories(model, monkeypatch) -> None:
    """With resampling at most steps the filter's log p^ equals :func:`trajectory_filter`'s over
    the same draws, and a filter that forgets to copy the states does not."""
    x = make_x(model.config.name.lower(), 2, 5, torch.Generator().manual_seed(4))

    def both():
        with torch.no_grad():
            est = smc_log_likelihood(model.eval(), x, particles=4, threshold=0.9,
                                     generator=torch.Generator().manual_seed(3))
            ref = trajectory_filter(model, x, 4, torch.Generator().manual_seed(3), 0.9)
        return est, ref

    est, ref = both()
    assert int(est.resamples.sum()) >= 3  # resampled often (out of 2 * 4 possible)
    torch.testing.assert_close(est.log_likelihood, ref, rtol=0, atol=1e-10)
    monkeypatch.setattr(type(model), "reorder", lambda self, state, rows: state)
    est, ref = both()
    assert (est.log_likelihood - ref).abs().max() > 1e-6


def assert_no_resampling_is_importance_sampling(model) -> None:
    """threshold 0: the filter's log p^ is the log-mean of the K trajectories' weights from the
    fast path's replicas pass over the same noise (a ragged batch)."""
    K = 3
    gen = torch.Generator().manual_seed(5)
    mask = ragged([6, 2, 4], 6)
    x = make_x(model.config.name.lower(), 3, 6, gen) * mask.unsqueeze(-1)
    B, T = mask.shape
    g = torch.Generator().manual_seed(7)
    noise = torch.stack([torch.randn(K * B, model.latent_dim, generator=g, dtype=x.dtype)
                         for _ in range(T)], 1)  # the filter's draws: randn (N, Z) per step
    with torch.no_grad():
        terms = model(x, mask, noise=noise, sample_terms=True, replicas=K)
        est = smc_log_likelihood(model, x, mask, particles=K, threshold=0.0,
                                 generator=torch.Generator().manual_seed(7))
    log_w = masked_sum(terms.log_px + terms.log_pz - terms.log_qz, mask.repeat(K, 1))
    torch.testing.assert_close(est.log_likelihood, log_w.view(K, B).logsumexp(0) - math.log(K),
                               rtol=0, atol=1e-9)


def assert_log_prob_fields(model) -> None:
    """``log_prob`` by "is" and "smc" (and of a list of sequences): finite fields of shape (B,),
    the ESS within [1, S], IS's estimate at least the ELBO on average."""
    gen = torch.Generator().manual_seed(8)
    x = make_x(model.config.name.lower(), 3, 5, gen)
    mask = ragged([5, 3, 4], 5)
    for method in ("is", "smc"):
        est = model.log_prob(x, mask, method=method, num_samples=6,
                             generator=torch.Generator().manual_seed(1))
        assert est.method == method and est.num_samples == 6
        for field in ("log_likelihood", "stderr", "elbo", "ess_mean", "ess_min", "resamples"):
            value = getattr(est, field)
            assert value.shape == (3,) and torch.isfinite(value).all(), field
        assert ((est.ess_min >= 1 - 1e-9) & (est.ess_mean <= 6 + 1e-9)).all()
        assert float(est.log_likelihood.mean()) >= float(est.elbo.mean()) - 1.0
    seqs = [x[b, :int(mask[b].sum())].numpy() for b in range(3)]
    listed = model.log_prob(seqs, generator=torch.Generator().manual_seed(1))
    direct = model.log_prob(x, mask, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(listed.log_likelihood, direct.log_likelihood)


def assert_sampling(model, prime: torch.Tensor) -> None:
    """Shapes, seeded reproducibility, the prime prepended, the continuation that of the
    literal reading (the prime through the posterior one step at a time, then generation), a
    different prime giving another continuation, temperature checked."""
    D = model.config.x_dim

    def gen(seed=0):
        return torch.Generator().manual_seed(seed)

    out = model.sample(3, 5, generator=gen())
    assert out.shape == (3, 5, D) and out.dtype == torch.float64 and torch.isfinite(out).all()
    torch.testing.assert_close(model.sample(3, 5, generator=gen()), out, rtol=0, atol=0)
    assert model.training  # sample() switches to eval and back
    primed = model.sample(3, 5, prime=prime, generator=gen(), include_prime=True)
    assert primed.shape == (3, prime.shape[0] + 5, D)
    torch.testing.assert_close(primed[:, :prime.shape[0]], prime.expand(3, -1, -1), rtol=0,
                               atol=0)
    cont = primed[:, prime.shape[0]:]
    g = gen()  # the prime read literally with the noise of one (num, P, Z) draw, then generated
    noise = torch.randn(3, prime.shape[0], model.latent_dim, generator=g, dtype=prime.dtype)
    with torch.no_grad():
        state = model.literal_forward(prime.expand(3, -1, -1), noise=noise).state
        expected = model.generate(state, 5, 1.0, g)
    torch.testing.assert_close(cont, expected, rtol=1e-9, atol=1e-9)
    other = model.sample(3, 5, prime=prime.flip(0), generator=gen())
    assert not torch.equal(other, cont)
    assert model.sample(2, 0, prime=prime, include_prime=True).shape == (2, prime.shape[0], D)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, 3, temperature=0.0)


def assert_temperature_narrows(model) -> None:
    """A Gaussian emission at a low temperature: the same draws spread less."""
    hot = model.sample(64, 3, temperature=1.0, generator=torch.Generator().manual_seed(0))
    cold = model.sample(64, 3, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert cold.std(0).mean() < 0.9 * hot.std(0).mean()


def assert_trains(name: str) -> None:
    """``vrnn.fit`` with the ELBO (KL annealing, free bits), IWAE and FIVO: finite bounds and
    changed weights; the model's KL per step for ``vrnn analyse``."""
    rng = np.random.default_rng(0)
    kind, D = KINDS[name.rsplit("-", 1)[1]]
    seqs = [rng.standard_normal((int(n), D)).cumsum(0) for n in rng.integers(5, 9, 12)]
    for objective in (ELBO(free_bits=0.1, kl_start=0.2, kl_anneal_steps=2), IWAE(3), FIVO(3)):
        model = tiny_model(name, dtype=torch.float32)
        before = [p.detach().clone() for p in model.parameters()]
        history = api.fit(model, seqs[:10], valid=seqs[10:], objective=objective, steps=3,
                          batch_size=4, progress=False, log_interval=1)
        assert history.steps == 3
        _, bounds = history.column("train_bound")
        assert len(bounds) and np.isfinite(bounds).all(), objective
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    profile = kl_profile(model, seqs[0].astype(np.float32))
    assert profile["kl"].shape == (len(seqs[0]),) and (profile["kl"] > 0).all()


def assert_bf16_products_and_float32_sums(model) -> None:
    """A bf16 training step (the GRU: oneDNN's bf16 LSTM needs a CPU with native bf16): every
    matrix product, forward and backward, in bfloat16, every sum and density in float32, the
    gradients float32 (tests/test_precision.py's audit)."""
    x, noise = _batch(x_dim=model.config.x_dim, z_dim=model.config.z_dim)
    _no_bf16_reductions(_audit(model, x, noise, backward=False))
    _bf16_products_only(_audit(model, x, noise, backward=True))
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def cli_workflow(model_name: str, tmp_path) -> None:
    """``vrnn train`` on chorales at the tiny preset for 3 steps, ``vrnn evaluate`` by IS and
    by SMC, and ``vrnn sample``, each in a subprocess, asserting on the files written; then
    ``vrnn info`` and ``vrnn export`` in process."""
    info = {d["name"]: d for d in list_datasets()}["chorales"]
    if not info["present"]:
        pytest.skip(f"chorales is not installed: {info.get('install_hint')}")
    out = tmp_path / "run"
    vrnn("train", "--data", "chorales", "--model", model_name, "--preset", "tiny",
         "--max-steps", "3", "--batch-size", "4", "--val-interval", "3",
         "--val-max-sequences", "4", "--max-files", "6", "--out", out, "--device", "cpu",
         "--no-progress")
    ckpt = out / "best.pt"
    assert ckpt.exists() and (out / "metrics.csv").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["family"] == model_name.split("-")[0]
    for estimator in ("is", "smc"):
        res = json.loads(vrnn("evaluate", ckpt, "--samples", "2", "--max-sequences", "2",
                              "--estimator", estimator, "--json").stdout)
        assert res["model"] == model_name and res["estimator"] == estimator
        assert np.isfinite(res["elbo"]) and np.isfinite(res["log_likelihood"])
    samples = tmp_path / "samples"
    vrnn("sample", ckpt, "--num", "2", "--steps", "6", "--out", samples)
    arr = np.load(samples / "samples.npy")
    assert arr.shape == (2, 6, 88) and set(np.unique(arr)) <= {0.0, 1.0}
    assert {".mid", ".png"} <= {p.suffix for p in samples.iterdir()}
    # and the checkpoint's other two commands, in process
    assert main(["info", str(ckpt), "--json"]) == 0
    assert main(["export", str(ckpt), "--out", str(tmp_path / "w.safetensors")]) == 0
    exported = json.loads((tmp_path / "w.json").read_text())
    assert exported["model_config"]["family"] == model_name.split("-")[0]


# -- 1. the fast path against the literal reading -------------------------------------------------

CASES = [dict(posterior=p, cell=c, dtype=d) for p in ("smoothing", "filtering")
         for c in ("lstm", "gru") for d in ("float64", "float32")]
CASES += [dict(output="gmm", posterior="smoothing", cell="gru"),
          dict(output="bernoulli", posterior="filtering", cell="lstm"),
          dict(output="categorical", posterior="smoothing", cell="lstm"),
          dict(posterior="filtering", cell="gru", prior_net=(), decoder=(), phi_x=()),
          dict(posterior="smoothing", cell="lstm", prior_net=(5, 4), a_dim=6)]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fast_path_matches_the_literal_reading(case):
    """A ragged batch: the same terms, loss and every gradient as :class:`Literal` (float64
    1e-9, float32 1e-5), for both posteriors, both cells, every head and other widths."""
    case = dict(case)
    output = case.pop("output", "gauss")
    dtype = getattr(torch, case.pop("dtype", "float64"))
    model = tiny_model(f"dmm-{output}", dtype=dtype, **case)
    assert isinstance(model, DMM)
    assert isinstance(model.rnn, BackwardRNN if case["posterior"] == "smoothing" else ForwardRNN)
    assert model.initial_state.shape == (1, model.config.z_dim)  # z_0, no unused h_0
    gen = torch.Generator().manual_seed(1)
    x = make_x(f"dmm-{output}", 3, 6, gen, dtype)
    assert_fast_path_is_literal(model, x, ragged([6, 4, 2], 6), noise_for(model, 3, 6, gen, dtype))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7])
def test_fast_path_matches_at_every_size(B, T):
    model = tiny_model("dmm-gauss", posterior="smoothing", cell="gru")
    gen = torch.Generator().manual_seed(2)
    assert_fast_path_is_literal(model, make_x("dmm-gauss", B, T, gen), None,
                                noise_for(model, B, T, gen))


def test_a_planted_bug_in_the_fast_path_turns_the_comparison_red(monkeypatch):
    """The comparison can fail: a fast loop whose combiner reads z_{t-2} instead of z_{t-1}
    differs from the literal reading."""
    model = tiny_model("dmm-gauss")
    gen = torch.Generator().manual_seed(3)
    x, noise = make_x("dmm-gauss", 2, 5, gen), noise_for(model, 2, 5, gen)
    good = _SplitCombiner.__call__
    seen = {}

    def stale(self, static_t, z_prev):
        older = seen.get(id(self), z_prev)
        seen[id(self)] = z_prev
        return good(self, static_t, older)

    monkeypatch.setattr(_SplitCombiner, "__call__", stale)
    with torch.no_grad():
        fast = model(x, noise=noise).kl
        literal = Literal(model).terms(x, noise)[1]
    assert torch.allclose(fast[:, 0], literal[:, 0])  # step 1 reads z_0 either way
    assert (fast[:, 1:] - literal[:, 1:]).abs().amin(0).min() > 1e-6  # every later step moved


# -- 2. padding, truncated BPTT, replicas ---------------------------------------------------------


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_a_sequence_scores_the_same_alone_and_padded(posterior):
    """:func:`assert_padding_changes_nothing`, and for the smoothing posterior only because the
    mask reaches the backward RNN: without it the padded frames leak in."""
    model = tiny_model("dmm-gauss", posterior=posterior)
    garbage, noise, padded = assert_padding_changes_nothing(model)
    leaked = model(garbage, None, noise=noise).kl
    assert ((leaked[1, :4] - padded.kl[1, :4]).abs().max() > 1e-6) == (posterior == "smoothing")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_filtering_two_windows_are_one_pass(cell):
    """Filtering: x[:, :k] then x[:, k:] from the first window's state (z_{k-1} and the forward
    RNN's state) is one pass over x, by the fast path and by the literal reading."""
    model = tiny_model("dmm-gauss", posterior="filtering", cell=cell)
    gen = torch.Generator().manual_seed(5)
    x, noise, k = make_x("dmm-gauss", 2, 7, gen), noise_for(model, 2, 7, gen), 3
    one = model(x, noise=noise, sample_terms=True, return_latents=True)
    first = model(x[:, :k], noise=noise[:, :k], sample_terms=True, return_latents=True)
    assert len(first.state) == 1 + (2 if cell == "lstm" else 1)
    torch.testing.assert_close(first.state[0], first.latents["z"][:, -1], rtol=0, atol=0)
    second = model(x[:, k:], state=first.state, noise=noise[:, k:], sample_terms=True,
                   return_latents=True)
    literal = model.literal_forward(x[:, k:], state=first.state, noise=noise[:, k:],
                                    sample_terms=True)
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        whole = getattr(one, key)
        torch.testing.assert_close(getattr(first, key), whole[:, :k], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(getattr(second, key), whole[:, k:], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(getattr(literal, key), whole[:, k:], rtol=1e-10, atol=1e-10)
    for a, b, c in zip(second.state, one.state, literal.state):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(c, b, rtol=1e-10, atol=1e-10)
    # the carried RNN state counts: from a zero one the second window's r_t differ
    cold = (first.state[0], *model.rnn.zero_state(2, x))
    assert (model(x[:, k:], state=cold, noise=noise[:, k:]).kl - one.kl[:, k:]).abs().max() > 1e-6


def test_smoothing_windows_carry_z_while_r_sees_only_its_window():
    """Smoothing: the first window's r_t cannot see x_{>=k}, so its z differ from the one
    pass's; carrying the one pass's z_{k-1} gives its second window exactly."""
    model = tiny_model("dmm-gauss", posterior="smoothing")
    gen = torch.Generator().manual_seed(6)
    x, noise, k = make_x("dmm-gauss", 2, 7, gen), noise_for(model, 2, 7, gen), 4
    one = model(x, noise=noise, sample_terms=True, return_latents=True)
    first = model(x[:, :k], noise=noise[:, :k], return_latents=True)
    assert len(first.state) == 1
    assert (first.latents["r"][:, -1] - one.latents["r"][:, k - 1]).abs().max() > 1e-6
    again = model(x[:, k:], state=(one.latents["z"][:, k - 1],), noise=noise[:, k:],
                  sample_terms=True, return_latents=True)
    torch.testing.assert_close(again.latents["r"], one.latents["r"][:, k:], rtol=0, atol=1e-12)
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        torch.testing.assert_close(getattr(again, key), getattr(one, key)[:, k:], rtol=1e-10,
                                   atol=1e-10)


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
@pytest.mark.parametrize("explicit_state", [False, True])
def test_replicas_are_the_batch_repeated(posterior, explicit_state):
    assert_replicas_are_the_batch_repeated(tiny_model("dmm-gauss", posterior=posterior),
                                           explicit_state)


# -- 3. which frames each posterior reads ---------------------------------------------------------


def test_smoothing_reads_the_future_and_filtering_does_not():
    """With fixed noise a change of x_u moves the smoothing q(z_s) for every s <= u and leaves
    the filtering q(z_s), s < u, bit-identical (and moves it at u)."""
    gen = torch.Generator().manual_seed(8)
    T, u = 7, 4
    x = make_x("dmm-gauss", 2, T, gen)
    moved = x.clone()
    moved[:, u] += 2.0
    for posterior in ("smoothing", "filtering"):
        model = tiny_model("dmm-gauss", posterior=posterior, seed=1)
        noise = noise_for(model, 2, T, torch.Generator().manual_seed(9))
        with torch.no_grad():
            a = model(x, noise=noise, return_latents=True).latents
            b = model(moved, noise=noise, return_latents=True).latents
        for key in ("enc_loc", "enc_scale"):
            change = (a[key] - b[key]).abs().amax((0, 2))  # (T,)
            assert (change[u:] > 1e-6).all()
            if posterior == "smoothing":
                assert (change[:u] > 1e-6).all(), (key, change)
            else:
                assert torch.equal(a[key][:, :u], b[key][:, :u]), key


# -- 4. the DMM as a linear-Gaussian state-space model against the Kalman filter ------------------

D, Z = 3, 2  # as tests/test_kalman.py
MIN_SCALE = 1e-4
EPS = 1e-6
"""tanh(EPS u) / EPS = u (1 - (EPS u)^2 / 3 + ...): the RNN and the combiner's tanh in their
linear range, so the combiner's mean is F z_{t-1} + G x_t to about 1e-10."""
T_SSM, B_SSM = 15, 4


def kalman_dmm(p: dict, posterior: str) -> DMM:
    """The float64 DMM that is the SSM ``p`` (z_0 = 0, no hidden layers): the gate is shut
    (sigmoid(-1e4) = 0 exactly), so mu_p = W_l z_{t-1} = A z_{t-1}, with the scale sqrt(Q); the
    emission is N(C z_t, r I); the GRU's update gate is shut and its recurrent weights zero, so
    r_t = tanh(EPS G x_t) reads x_t alone (either direction); the combiner's mean is
    (2 / EPS) (tanh(EPS F z_{t-1}) + r_t) / 2 = F z_{t-1} + G x_t and its scale sqrt(diag
    Sigma): the locally optimal proposal p(z_t | z_{t-1}, x_t) of tests/test_kalman.py."""
    cfg = ModelConfig(family="dmm", x_dim=D, z_dim=Z, h_dim=Z, output="gauss", cell="gru",
                      posterior=posterior, phi_x=(), prior_net=(), decoder=(), learn_h0=False,
                      min_scale=MIN_SCALE)
    model = build_model(cfg).double().eval()
    Sigma, F, G = posterior_params(p)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        for w in model.parameters():
            w.zero_()
        tr = model.transition
        tr.gate.bias.fill_(-1e4)
        tr.linear_loc.weight.copy_(t(p["A"]))
        tr.scale.bias.copy_(t(softplus_inv(np.sqrt(np.diag(p["Q"])) - MIN_SCALE)))
        head = model.emitter.head.linear  # z_t -> [loc (D), raw (D)]
        assert len(model.emitter.mlp.layers) == 0 and head.weight.shape == (2 * D, Z)
        head.weight[:D] = t(p["C"])
        head.bias[D:] = float(softplus_inv(math.sqrt(p["r"]) - MIN_SCALE))
        gru = model.rnn.rnn  # gates r, z, n; weight_ih (3Z, D)
        gru.bias_ih_l0[Z:2 * Z] = -1e4  # the update gate shut: h_t = n_t
        gru.weight_ih_l0[2 * Z:] = EPS * t(G)
        comb = model.combiner
        comb.z_to_hidden.weight.copy_(EPS * t(F))
        comb.gaussian.linear.weight[:Z] = (2 / EPS) * torch.eye(Z, dtype=torch.float64)
        comb.gaussian.linear.bias[Z:] = t(softplus_inv(np.sqrt(np.diag(Sigma)) - MIN_SCALE))
    return model


def kalman_setting(rho: float, r: float, posterior: str, seed: int):
    p = ssm(rho, r)
    x = sample_ssm(p, B_SSM, T_SSM, seed=seed)
    exact = np.array([kalman_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"]) for s in x])
    return p, kalman_dmm(p, posterior), torch.as_tensor(x), exact


def test_the_kalman_reference_is_the_joint_gaussian():
    p = ssm(0.9, 0.5)
    for s in sample_ssm(p, 2, 4, seed=3):
        assert kalman_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"]) == pytest.approx(
            joint_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"]), abs=1e-9)


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_the_construction(posterior):
    """The DMM's conditionals are the SSM's, against numpy: the gate exactly 0, the transition
    N(A z, Q), the emission N(C z, r I), the posterior the locally optimal one."""
    p, model, _, _ = kalman_setting(0.9, 0.5, posterior, seed=1)
    Sigma, F, G = posterior_params(p)
    rng = np.random.default_rng(5)
    z_prev, x_t, z_t = (torch.as_tensor(rng.standard_normal(s)) for s in ((6, Z), (6, D), (6, Z)))
    with torch.no_grad():
        tr = model.transition
        assert torch.equal(torch.sigmoid(tr.gate(z_prev)), torch.zeros(6, Z))
        prior = model.prior_dist(z_prev).base_dist
        emit = model.emitter(z_t).base_dist
        r_t = model.context(x_t.unsqueeze(1), None, model.init_state(6))[0][:, 0]
        q = model.posterior(z_prev, r_t).base_dist
    np.testing.assert_allclose(prior.loc.numpy(), z_prev.numpy() @ p["A"].T, atol=1e-12)
    np.testing.assert_allclose(prior.scale.numpy(), np.broadcast_to(np.sqrt(np.diag(p["Q"])),
                                                                    (6, Z)), atol=1e-12)
    np.testing.assert_allclose(emit.loc.numpy(), z_t.numpy() @ p["C"].T, atol=1e-12)
    np.testing.assert_allclose(emit.scale.numpy(), math.sqrt(p["r"]), atol=1e-12)
    np.testing.assert_allclose(q.loc.numpy(), z_prev.numpy() @ F.T + x_t.numpy() @ G.T,
                               atol=1e-9)
    np.testing.assert_allclose(q.scale.numpy(), np.broadcast_to(np.sqrt(np.diag(Sigma)), (6, Z)),
                               atol=1e-12)
    assert torch.equal(model.init_state(2)[0], torch.zeros(2, Z))  # z_0 = 0 (not learned)


def test_elbo_is_exact_and_below_the_log_likelihood():
    """The expected ELBO (analytic KL, the cubature's exact mean over the noise) is numpy's
    closed form for this proposal, and below log p(x): the proposal ignores the future."""
    p, model, x, exact = kalman_setting(0.9, 0.5, "smoothing", seed=1)
    with torch.no_grad():
        elbo = model_expected_elbo(model, x).numpy()
    ref = np.array([numpy_expected_elbo(s, p) for s in x.numpy()])
    np.testing.assert_allclose(elbo, ref, atol=1e-6)
    assert ((exact - elbo) > 0.05).all(), exact - elbo


def test_importance_sampling_and_the_filter_rise_to_the_log_likelihood():
    """Mean gap below log p(x) over 16 repeats of 4 sequences: it shrinks as the samples
    (IS) or the particles (SMC) grow, from about the KL at one to a few hundredths."""
    p, model, x, exact = kalman_setting(0.9, 0.5, "filtering", seed=1)
    reps = 16
    xr, ex = x.repeat(reps, 1, 1), np.tile(exact, reps)
    g = torch.Generator().manual_seed(8)
    gaps = {"is": [], "smc": []}
    for S in (1, 10, 100):
        est = estimate_log_likelihood(model, xr, num_samples=S, generator=g)
        gaps["is"].append(float((ex - est.log_likelihood.numpy()).mean()))
        smc = smc_log_likelihood(model, xr, particles=S, generator=g)
        gaps["smc"].append(float((ex - smc.log_likelihood.numpy()).mean()))
    for name, gap in gaps.items():
        assert all(a > b for a, b in zip(gap, gap[1:])), (name, gap)
        assert gap[0] > 1.0 and abs(gap[-1]) < 0.1 * gap[0], (name, gap)


@pytest.mark.parametrize("method", ["is", "smc"])
def test_the_estimates_are_unbiased_in_p(method):
    """E[p^(x)] = p(x): the mean of p^(x) / p(x) over 1000 repeats is 1 within 3 standard errors
    of that mean (pooled over the sequences; 4 within each), the ratio not degenerate, and
    E[log p^] below log p(x)."""
    p, model, x, exact = kalman_setting(0.6, 0.2, "smoothing", seed=1)
    reps = 1000
    g = torch.Generator().manual_seed(9)
    if method == "is":
        est = estimate_log_likelihood(model, x.repeat(reps, 1, 1), num_samples=4, generator=g)
    else:
        est = smc_log_likelihood(model, x.repeat(reps, 1, 1), particles=4, generator=g)
        assert float(est.resamples.double().mean()) > 0.2  # the filter did resample
    diff = est.log_likelihood.numpy().reshape(reps, B_SSM) - exact
    ratio = np.exp(diff)
    se = ratio.std(ddof=1) / math.sqrt(ratio.size)
    assert abs(ratio.mean() - 1) < 3 * se, (ratio.mean(), se)
    se_b = ratio.std(0, ddof=1) / math.sqrt(reps)
    assert (np.abs(ratio.mean(0) - 1) < 4 * se_b).all(), (ratio.mean(0), se_b)
    assert (ratio.std(0) > 0.05).all()
    assert diff.mean() < 0


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_the_exact_posterior_gives_the_exact_likelihood(posterior):
    """A = 0: the frames are independent, p(z_t | z_{t-1}, x_t) = p(z_t | x_{1:T}) is the exact
    posterior, so every importance weight (and every particle's) is p(x): IS and SMC equal the
    Kalman filter's log p(x) at any sample size, with no spread."""
    _, model, x, exact = kalman_setting(0.0, 0.5, posterior, seed=2)
    g = torch.Generator().manual_seed(10)
    for S in (1, 7):
        est = estimate_log_likelihood(model, x, num_samples=S, generator=g)
        np.testing.assert_allclose(est.log_likelihood.numpy(), exact, atol=1e-6)
        assert float(est.log_weights.std(0).max() if S > 1 else 0.0) < 1e-6
        smc = smc_log_likelihood(model, x, particles=S, generator=g)
        np.testing.assert_allclose(smc.log_likelihood.numpy(), exact, atol=1e-6)
        assert torch.all(smc.resamples == 0)


# -- 5. the particle filter, sampling, log_prob, training -----------------------------------------


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_the_particle_filter_follows_whole_trajectories(posterior, monkeypatch):
    assert_smc_follows_trajectories(tiny_model("dmm-gauss", posterior=posterior), monkeypatch)


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_no_resampling_is_importance_sampling_of_the_same_draws(posterior):
    assert_no_resampling_is_importance_sampling(tiny_model("dmm-gauss", posterior=posterior))


@pytest.mark.parametrize("name,posterior", [("dmm-gauss", "smoothing"),
                                            ("dmm-bernoulli", "filtering")])
def test_log_prob_by_is_and_smc(name, posterior):
    assert_log_prob_fields(tiny_model(name, posterior=posterior))


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_sampling(posterior):
    model = tiny_model("dmm-gauss", posterior=posterior)
    assert_sampling(model, make_x("dmm-gauss", 1, 4, torch.Generator().manual_seed(7))[0])
    assert_temperature_narrows(model)


def test_training_with_every_objective():
    assert_trains("dmm-gauss")


@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_bf16_products_and_float32_sums(posterior):
    assert_bf16_products_and_float32_sums(tiny_model("dmm-gauss", dtype=torch.float32,
                                                     posterior=posterior, cell="gru"))


# -- 6. configuration and presets -----------------------------------------------------------------


def test_config_names_and_presets():
    named = api.parse_model_name("dmm-gmm", "strokes")
    assert named == {"family": "dmm", "prior": "learned", "output": "stroke-gmm",
                     "name": "DMM-GMM"}
    cfg = model_config("dmm-bernoulli", x_dim=88, data_kind="binary", preset="paper")
    assert (cfg.z_dim, cfg.prior_net, cfg.decoder, cfg.h_dim, cfg.phi_x) == (100, (200,),
                                                                            (100, 100), 600, ())
    assert cfg.posterior == "smoothing"  # the paper's DKS, as Pyro's example
    assert model_config("dmm-gauss", x_dim=4, posterior="filtering").posterior == "filtering"
    with pytest.raises(ValueError, match="prior is always learned"):
        ModelConfig(family="dmm", prior="standard")
    with pytest.raises(ValueError, match="res_q"):
        ModelConfig(family="dmm", res_q=True)
    with pytest.raises(ValueError, match="family='dmm'"):
        DMM(ModelConfig(family="srnn"))


def assert_units_match_the_vrnn(family: str, preset: str) -> None:
    """Off its paper's sizes the family's parameter count is the VRNN's with the same output:
    within 1% at ``small`` and ``paper``, and at ``tiny``, where one unit is worth more than
    that, as close as whole units allow (one unit fewer or more is no closer)."""
    for kind, output, D in (("binary", "bernoulli", 88), ("strokes", "gmm", 3),
                            ("text", "categorical", 67)):
        if preset == "paper" and kind == "binary":
            continue  # its paper's own sizes
        ref = _count(model_config(f"vrnn-{output}", x_dim=D, data_kind=kind, preset=preset))
        cfg = model_config(f"{family}-{output}", x_dim=D, data_kind=kind, preset=preset)
        gap = abs(_count(cfg) - ref)
        if preset != "tiny":
            assert gap <= 0.01 * ref, (kind, gap, ref)
        for step in (-1, 1):
            other = dataclasses.replace(cfg, h_dim=cfg.h_dim + step,
                                        a_dim=cfg.a_dim and cfg.a_dim + step)
            assert abs(_count(other) - ref) >= gap, (kind, step)


@pytest.mark.parametrize("preset", ["paper", "small", "tiny"])
def test_presets_match_the_vrnn(preset):
    assert_units_match_the_vrnn("dmm", preset)


# -- 7. the command line --------------------------------------------------------------------------


def test_train_evaluate_sample_on_the_command_line(tmp_path):
    cli_workflow("dmm-bernoulli", tmp_path)

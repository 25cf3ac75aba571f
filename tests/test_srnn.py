"""The SRNN (:mod:`vrnn.models.srnn`) and the smoothing posterior of the VRNN: the fast paths
against the literal references (:mod:`vrnn.models.reference`), masks and padding, truncated BPTT,
replicas, sampling, importance sampling, config and command-line errors, exact resume."""

import dataclasses
import functools
import math
import types

import numpy as np
import pytest
import torch
from torch import nn
from toydata import tiny_train_config, write_npz

from vrnn import ModelConfig, build_model, model_config
from vrnn.inference.importance import estimate_log_likelihood
from vrnn.inference.protocol import masked_sum
from vrnn.models.layers import MLP, BackwardRNN, reverse_in_time
from vrnn.models.reference import Literal
from vrnn.models.srnn import SRNN
from vrnn.models.vrnn import VRNN

OUTPUTS = {"gauss": ("audio", 4), "gmm": ("strokes", 3), "bernoulli": ("binary", 5)}
"""Each output head with the data kind it goes with and a tiny frame size."""

TOL = dict(rtol=1e-10, atol=1e-10)
"""float64: the fast path and the references differ by rounding only."""


@functools.lru_cache
def tiny_config(family: str, output: str, settings: tuple) -> ModelConfig:
    """The tiny preset's config (cached: sizing an SRNN's units to the VRNN's takes a while)."""
    kind, D = OUTPUTS[output]
    return model_config(f"{family}-{output}", x_dim=D, data_kind=kind, preset="tiny",
                        **dict(settings))


def tiny(family: str, output: str = "gauss", *, seed: int = 0, **kw) -> nn.Module:
    """A tiny float64 model (``family`` 'srnn' or 'vrnn'), its weights drawn from ``seed``."""
    cfg = dataclasses.replace(tiny_config(family, output, tuple(sorted(kw.items()))))
    torch.manual_seed(seed)
    return build_model(cfg).double()


def make_x(output: str, B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    """Frames that fit the output head: Gaussian, pen offsets with a pen bit, or binary."""
    x = torch.randn(B, T, OUTPUTS[output][1], generator=gen, dtype=torch.float64)
    if output == "gmm":
        x[..., 2] = (x[..., 2] > 0.5).double()
    if output == "bernoulli":
        x = (x > 0).double()
    return x


def ragged(lengths: list[int], T: int) -> torch.Tensor:
    """A (B, T) mask true on the first ``lengths[b]`` steps of row b."""
    return torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def case_id(value) -> str:
    """A parametrize id: a name as it is, a dict of settings as its values joined."""
    if isinstance(value, dict):
        return "-".join(str(v) for v in value.values())
    return str(value)


def noise_for(model, N: int, T: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(N, T, model.config.z_dim, generator=gen, dtype=torch.float64)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def gradients(model: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of ``loss`` (zeros where unused)."""
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads)}


def assert_same_gradients(model: nn.Module, loss_a: torch.Tensor, loss_b: torch.Tensor,
                          tol: float = 1e-9) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of ``loss_a`` equals that of ``loss_b`` (relative ``tol``),
    and every parameter gets one; returns the gradients of ``loss_a``."""
    g_a, g_b = gradients(model, loss_a), gradients(model, loss_b)
    for name in g_a:
        assert g_b[name].abs().sum() > 0, f"{name} gets no gradient from the reference"
        assert rel_err(g_a[name], g_b[name]) < tol, (name, rel_err(g_a[name], g_b[name]))
    return g_a


def assert_terms_close(a, b, rows=slice(None), steps=slice(None)) -> None:
    """Two StepTerms' per-step tensors agree on ``[rows, steps]`` of ``b``."""
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        if getattr(a, key) is not None:
            torch.testing.assert_close(getattr(a, key), getattr(b, key)[rows, steps], **TOL)


# -- 1. the SRNN's fast path against its literal reading ------------------------------------------

SRNN_CASES = [
    # every cell x posterior x Res_q with the Gaussian output ...
    *[dict(cell=c, posterior=p, res_q=r) for c in ("lstm", "gru")
      for p in ("smoothing", "filtering") for r in (True, False)],
    # ... the other heads, and first layers without / with more hidden layers (_SplitGaussian)
    dict(output="gmm", cell="gru", posterior="smoothing", res_q=True),
    dict(output="bernoulli", cell="lstm", posterior="filtering", res_q=False),
    dict(cell="lstm", posterior="smoothing", res_q=True, encoder=(), prior_net=()),
    dict(cell="gru", posterior="filtering", res_q=False, encoder=(7, 6), prior_net=(),
         phi_x=(6,)),
    dict(cell="lstm", posterior="smoothing", res_q=False, encoder=(), prior_net=(5, 4),
         a_dim=7),
]


@pytest.mark.parametrize("case", SRNN_CASES, ids=case_id)
def test_srnn_fast_path_matches_the_literal_reading(case):
    """Same weights, same noise, a ragged batch: the same per-step terms (log p(x_t), the KL,
    log p(z_t) - log q(z_t)), loss and gradient of every parameter (float64, 1e-10 / 1e-9)."""
    case = dict(case)
    output = case.pop("output", "gauss")
    model = tiny("srnn", output, **case)
    assert isinstance(model, SRNN) and model.config.res_q == case["res_q"]
    assert isinstance(model.inference, BackwardRNN) == (case["posterior"] == "smoothing")
    gen = torch.Generator().manual_seed(1)
    B, T = 3, 6
    x = make_x(output, B, T, gen)
    noise = noise_for(model, B, T, gen)
    mask = ragged([6, 4, 2], T)

    terms = model(x, mask, noise=noise, sample_terms=True)
    ref = Literal(model)
    log_px, kl, log_ratio = ref.terms(x, noise, mask)
    assert log_px.shape == kl.shape == log_ratio.shape == (B, T)
    torch.testing.assert_close(terms.log_px, log_px, **TOL)
    torch.testing.assert_close(terms.kl, kl, **TOL)
    torch.testing.assert_close(terms.log_pz - terms.log_qz, log_ratio, **TOL)
    assert (kl > 0).all()  # a real KL, not zeros on both sides

    loss, _ = model.loss(x, mask, noise=noise)
    loss_ref = ref.loss(x, noise, mask)
    torch.testing.assert_close(loss, loss_ref, **TOL)
    torch.testing.assert_close(loss_ref, -masked_sum(log_px - kl, mask).mean(), **TOL)
    # the mask counts: the padded steps' terms are not zero, so dropping it changes the loss
    assert abs(model.loss(x, None, noise=noise)[0].item() - loss.item()) > 1e-3
    assert_same_gradients(model, loss, loss_ref)


def test_res_q_adds_the_prior_mean_to_the_posterior_mean():
    """With Res_q, mu_q = mu_p + delta: the same weights without the flag give mu_q = delta, the
    scales unchanged."""
    model = tiny("srnn", res_q=True, posterior="filtering")
    gen = torch.Generator().manual_seed(0)
    x = make_x("gauss", 2, 4, gen)
    noise = noise_for(model, 2, 4, gen)
    with_res = model(x, noise=noise, return_latents=True).latents
    model.config.res_q = False
    try:
        without = model(x, noise=noise, return_latents=True).latents
    finally:
        model.config.res_q = True
    # step 1 starts from the same z_0 = 0 in both, so there the difference is the prior mean
    torch.testing.assert_close(with_res["enc_loc"][:, 0] - without["enc_loc"][:, 0],
                               with_res["prior_loc"][:, 0], **TOL)
    torch.testing.assert_close(with_res["enc_scale"][:, 0], without["enc_scale"][:, 0], **TOL)
    assert with_res["prior_loc"][:, 0].abs().max() > 1e-3


# -- 2. the smoothing VRNN: the hand-written loop against the literal reading and autograd --------

@pytest.mark.parametrize("cell,output", [("lstm", "gauss"), ("gru", "gauss"), ("gru", "gmm"),
                                         ("lstm", "bernoulli")])
def test_smoothing_vrnn_fast_path_matches_literal_and_autograd(cell, output):
    """The smoothing VRNN feeds [phi_x(x_t), a_t] into the hand-written filtering loop, with zero
    columns padded into the cell's input weight for a_t. Its terms, loss and every gradient equal
    the literal reading (Literal.terms) and the autograd loop (custom_loop=False);
    the gradient reaches the backward RNN and both blocks of the cell's input weight, and a_t
    does not leak into the cell (the literal cell reads [phi_x(x_t), phi_z(z_t)] only)."""
    model = tiny("vrnn", output, cell=cell, posterior="smoothing")
    assert isinstance(model, VRNN) and isinstance(model.smoother, BackwardRNN)
    gen = torch.Generator().manual_seed(2)
    B, T = 3, 6
    x = make_x(output, B, T, gen)
    noise = noise_for(model, B, T, gen)
    mask = ragged([6, 3, 5], T)

    terms = model(x, mask, noise=noise, sample_terms=True)
    ref = Literal(model)
    log_px, kl, log_ratio = ref.terms(x, noise, mask)
    torch.testing.assert_close(terms.log_px, log_px, **TOL)
    torch.testing.assert_close(terms.kl, kl, **TOL)
    torch.testing.assert_close(terms.log_pz - terms.log_qz, log_ratio, **TOL)
    # the mask reaches the backward RNN: without it, row 1's a_t reads its padded frames
    unmasked = ref.terms(x, noise)[1]
    assert (unmasked[1, :3] - kl[1, :3]).abs().max() > 1e-6

    fast = model.loss(x, mask, noise=noise)[0]
    model.custom_loop = False
    try:
        autograd = model.loss(x, mask, noise=noise)[0]
    finally:
        del model.custom_loop  # back to the class default
    assert model.custom_loop
    literal = ref.loss(x, noise, mask)
    torch.testing.assert_close(fast, literal, **TOL)
    torch.testing.assert_close(autograd, literal, **TOL)
    g = assert_same_gradients(model, fast, literal)
    assert_same_gradients(model, autograd, literal)
    for name, grad in g.items():
        if name.startswith("smoother."):
            assert grad.abs().max() > 0, name
    X = model.phi_x.out_dim
    w_ih = g["cell.weight_ih"]
    assert w_ih.shape[1] == X + model.phi_z.out_dim  # the parameter has no a_t columns
    assert w_ih[:, :X].abs().max() > 0 and w_ih[:, X:].abs().max() > 0


# -- 3. padding invariance ------------------------------------------------------------------------

PADDED_MODELS = [("srnn", dict(posterior="smoothing", cell="lstm")),
                 ("srnn", dict(posterior="filtering", cell="gru", res_q=False)),
                 ("srnn", dict(posterior="smoothing", cell="gru", res_q=False)),
                 ("vrnn", dict(posterior="smoothing", cell="lstm")),
                 ("vrnn", dict(posterior="smoothing", cell="gru"))]


@pytest.mark.parametrize("family,kw", PADDED_MODELS,
                         ids=case_id)
def test_a_sequence_scores_the_same_alone_and_padded(family, kw):
    """Each sequence's per-step terms (with its own noise) are the same alone as padded inside a
    longer batch; a padded frame's value changes no valid step. With the smoothing posterior that
    needs the backward RNN to start at each sequence's own last valid step: the test shows the
    padding would leak in without the mask."""
    model = tiny(family, **kw)
    gen = torch.Generator().manual_seed(3)
    B, T = 3, 7
    lengths = [7, 4, 2]
    x = make_x("gauss", B, T, gen)
    noise = noise_for(model, B, T, gen)
    mask = ragged(lengths, T)
    padded = model(x, mask, noise=noise, sample_terms=True, return_latents=True)
    for b, L in enumerate(lengths):
        alone = model(x[b:b + 1, :L], noise=noise[b:b + 1, :L], sample_terms=True,
                      return_latents=True)
        assert_terms_close(alone, padded, slice(b, b + 1), slice(0, L))
        torch.testing.assert_close(alone.latents["z"], padded.latents["z"][b:b + 1, :L], **TOL)

    garbage = x.clone()
    garbage[~mask] = 1e3  # what a padded frame holds changes nothing valid
    moved = model(garbage, mask, noise=noise, sample_terms=True)
    for key in ("log_px", "kl", "log_pz", "log_qz"):
        torch.testing.assert_close(getattr(moved, key)[mask], getattr(padded, key)[mask], **TOL)
    if kw["posterior"] == "smoothing":  # ... but only because the mask reached the backward RNN
        leaked = model(garbage, None, noise=noise)
        assert (leaked.kl[1, :4] - padded.kl[1, :4]).abs().max() > 1e-6


def test_reverse_in_time_reverses_each_sequence_within_its_length():
    x = torch.arange(12.0).view(2, 6, 1)
    mask = ragged([6, 4], 6)
    out = reverse_in_time(x, mask)
    assert out[0, :, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [9, 8, 7, 6, 10, 11]  # padding stays where it is
    torch.testing.assert_close(reverse_in_time(out, mask), x)


# -- 4. truncated BPTT ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_filtering_srnn_two_windows_equal_one_pass(cell):
    """Filtering SRNN: x[:, :k] then x[:, k:] from the first window's state is one pass over x.
    The state carries d's state, z_{t-1} and x_{t-1} (d_k reads x_{k-1}): with the frame zeroed,
    the second window's first d differs."""
    model = tiny("srnn", cell=cell, posterior="filtering")
    gen = torch.Generator().manual_seed(4)
    B, T, k = 2, 7, 3
    x = make_x("gauss", B, T, gen)
    noise = noise_for(model, B, T, gen)
    one = model(x, noise=noise, sample_terms=True, return_latents=True)
    first = model(x[:, :k], noise=noise[:, :k], sample_terms=True, return_latents=True)
    n_d = 2 if cell == "lstm" else 1
    assert len(first.state) == n_d + 2
    torch.testing.assert_close(first.state[-1], x[:, k - 1], **TOL)  # x_{k-1}
    torch.testing.assert_close(first.state[-2], first.latents["z"][:, -1], **TOL)  # z_{k-1}
    torch.testing.assert_close(first.state[0], one.latents["d"][:, k - 1], **TOL)  # d_{k-1}
    second = model(x[:, k:], state=first.state, noise=noise[:, k:], sample_terms=True,
                   return_latents=True)
    assert_terms_close(first, one, steps=slice(0, k))
    assert_terms_close(second, one, steps=slice(k, T))
    for key in one.latents:
        torch.testing.assert_close(second.latents[key], one.latents[key][:, k:], **TOL)
    for a, b in zip(second.state, one.state):
        torch.testing.assert_close(a, b, **TOL)

    no_frame = (*first.state[:-1], torch.zeros_like(first.state[-1]))
    wrong = model(x[:, k:], state=no_frame, noise=noise[:, k:], return_latents=True)
    assert (wrong.latents["d"][:, 0] - one.latents["d"][:, k]).abs().max() > 1e-6


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_smoothing_srnn_windows_carry_d_while_a_sees_only_its_window(cell):
    """Smoothing SRNN over two windows: the carried state makes every d_t of the second window
    the one-pass d_t. a_t is a backward RNN over the window only, so the first window's a_t
    (which cannot see x_{>=k}) differ from the one pass's, and hence its z; the second window
    ends where the sequence does, so there a_t is the one pass's. Carrying the one pass's
    z_{k-1} instead of the window's then gives the one pass's second-window terms exactly."""
    model = tiny("srnn", cell=cell, posterior="smoothing")
    gen = torch.Generator().manual_seed(5)
    B, T, k = 2, 7, 4
    x = make_x("gauss", B, T, gen)
    noise = noise_for(model, B, T, gen)
    one = model(x, noise=noise, sample_terms=True, return_latents=True)
    first = model(x[:, :k], noise=noise[:, :k], return_latents=True)
    second = model(x[:, k:], state=first.state, noise=noise[:, k:], return_latents=True)
    torch.testing.assert_close(first.latents["d"], one.latents["d"][:, :k], **TOL)
    torch.testing.assert_close(second.latents["d"], one.latents["d"][:, k:], **TOL)
    torch.testing.assert_close(second.latents["a"], one.latents["a"][:, k:], **TOL)
    assert (first.latents["a"][:, -1] - one.latents["a"][:, k - 1]).abs().max() > 1e-6
    assert (first.latents["z"][:, -1] - one.latents["z"][:, k - 1]).abs().max() > 1e-6

    *d_state, _, x_prev = first.state
    state = (*d_state, one.latents["z"][:, k - 1], x_prev)
    again = model(x[:, k:], state=state, noise=noise[:, k:], sample_terms=True)
    assert_terms_close(again, one, steps=slice(k, T))


# -- 5. replicas ----------------------------------------------------------------------------------

@pytest.mark.parametrize("family,kw", [("srnn", dict(posterior="smoothing", cell="lstm")),
                                       ("srnn", dict(posterior="filtering", cell="gru")),
                                       ("srnn", dict(posterior="smoothing", cell="gru",
                                                     res_q=False)),
                                       ("vrnn", dict(posterior="smoothing", cell="lstm")),
                                       ("vrnn", dict(posterior="smoothing", cell="gru"))],
                         ids=case_id)
@pytest.mark.parametrize("explicit_state", [False, True])
def test_replicas_are_the_batch_repeated(family, kw, explicit_state):
    """``model(x, mask, replicas=R, noise=n)`` is ``model(x.repeat(R, 1, 1), mask.repeat(R, 1),
    noise=n)``: every term, latent and the final state, row r * B + b being replica r of
    sequence b; from the initial state and from an explicit state of R * B rows."""
    model = tiny(family, **kw)
    gen = torch.Generator().manual_seed(6)
    B, T, R = 2, 5, 3
    x = make_x("gauss", B, T, gen)
    mask = ragged([5, 3], T)
    noise = noise_for(model, R * B, T, gen)
    state = None
    if explicit_state:
        state = tuple(torch.randn(R * B, s.shape[-1], generator=gen, dtype=torch.float64)
                      for s in model.init_state(1))
    rep = model(x, mask, replicas=R, noise=noise, state=state, sample_terms=True,
                return_latents=True)
    big = model(x.repeat(R, 1, 1), mask.repeat(R, 1), noise=noise, state=state,
                sample_terms=True, return_latents=True)
    assert rep.kl.shape == (R * B, T)
    assert_terms_close(rep, big)
    for key in big.latents:
        torch.testing.assert_close(rep.latents[key], big.latents[key], **TOL)
    for a, b in zip(rep.state, big.state):
        torch.testing.assert_close(a, b, **TOL)
    # the replicas are not copies: each has its own noise
    assert (rep.kl[:B] - rep.kl[B:2 * B]).abs().max() > 1e-6
    with pytest.raises(ValueError, match="noise"):
        model(x, mask, replicas=R, noise=noise[:B])


# -- 6. sampling ----------------------------------------------------------------------------------

def literal_primed_srnn_sample(model: SRNN, prime: torch.Tensor, steps: int, temperature: float,
                               gen: torch.Generator) -> torch.Tensor:
    """The SRNN's primed sample written out from the equations: d over the prime one frame at a
    time, a_t, z_t ~ q with one (num, P, Z) draw of noise; then per step d_t from x_{t-1},
    z_t ~ p(z_t | z_{t-1}, d_t), x_t ~ p(x_t | z_t, d_t), every draw from ``gen`` in order."""
    from vrnn.models.distributions import draw

    num, P, _ = prime.shape
    *d_state, z_prev, x_prev = model.init_state(num)
    d_state = tuple(d_state)
    noise = torch.randn(num, P, model.config.z_dim, generator=gen, dtype=prime.dtype)
    ds = []
    for t in range(P):
        d_state = model.step_deterministic(x_prev, d_state)
        ds.append(d_state[0])
        x_prev = prime[:, t]
    a = model.inference_features(torch.stack(ds, 1), model.phi_x(prime))
    for t in range(P):
        p = model.prior_dist(ds[t], z_prev)
        q = model.posterior(a[:, t], z_prev, p.base_dist.loc)
        z_prev = q.base_dist.loc + q.base_dist.scale * noise[:, t]
    frames = []
    for _ in range(steps):
        d_state = model.step_deterministic(x_prev, d_state)
        z_prev = draw(model.prior_dist(d_state[0], z_prev), gen)
        x_prev = draw(model.decoder(torch.cat([z_prev, d_state[0]], -1), temperature), gen)
        frames.append(x_prev)
    return torch.stack(frames, 1)


@pytest.mark.parametrize("output,kw", [("gauss", dict(posterior="smoothing", cell="lstm")),
                                       ("gauss", dict(posterior="filtering", cell="gru",
                                                      res_q=False)),
                                       ("bernoulli", dict(posterior="smoothing", cell="gru"))],
                         ids=["gauss-smoothing", "gauss-filtering", "bernoulli"])
def test_srnn_sampling(output, kw):
    """Shape, reproducibility with a seeded generator, the prime prepended, the prime actually
    conditioning the continuation, the state handed over as the equations say, temperature > 0,
    and the training mode restored."""
    model = tiny("srnn", output, **kw)
    D = model.config.x_dim

    def gen(seed=0):
        return torch.Generator().manual_seed(seed)

    out = model.sample(3, 5, generator=gen())
    assert out.shape == (3, 5, D) and out.dtype == torch.float64 and torch.isfinite(out).all()
    torch.testing.assert_close(model.sample(3, 5, generator=gen()), out, rtol=0, atol=0)
    assert not torch.equal(model.sample(3, 5, generator=gen(1)), out)
    assert model.training  # sample() switches to eval and back

    prime = make_x(output, 1, 4, gen(7))[0]  # (P, D)
    primed = model.sample(3, 5, prime=prime, generator=gen(), include_prime=True)
    assert primed.shape == (3, 9, D)
    torch.testing.assert_close(primed[:, :4], prime.expand(3, -1, -1), rtol=0, atol=0)
    cont = model.sample(3, 5, prime=prime, generator=gen())
    torch.testing.assert_close(cont, primed[:, 4:], rtol=0, atol=0)
    if output != "bernoulli":  # binary draws of probabilities near 1/2 may well coincide
        other = make_x(output, 1, 4, gen(8))[0]
        assert (model.sample(3, 5, prime=other, generator=gen()) - cont).abs().max() > 1e-6
    with torch.no_grad():
        expected = literal_primed_srnn_sample(model, prime.expand(3, -1, -1), 5, 1.0, gen())
    torch.testing.assert_close(cont, expected, **TOL)
    assert model.sample(2, 0, prime=prime, include_prime=True).shape == (2, 4, D)

    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            model.sample(2, 3, temperature=bad)
    with pytest.raises(ValueError, match="prime"):
        model.sample(2, 3, prime=torch.zeros(3, 4, D))  # num rows do not match


def test_temperature_narrows_the_gaussian_emission():
    """A lower temperature shrinks the emission's scale: the same draws lie closer to the mean,
    so samples spread less."""
    model = tiny("srnn", posterior="filtering")
    hot = model.sample(64, 3, temperature=1.0, generator=torch.Generator().manual_seed(0))
    cold = model.sample(64, 3, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert cold[:, 0].std(0).mean() < 0.9 * hot[:, 0].std(0).mean()


# -- 7. importance sampling -----------------------------------------------------------------------

@pytest.mark.parametrize("posterior", ["smoothing", "filtering"])
def test_estimate_is_that_of_the_batch_repeated_with_the_same_noise(posterior):
    """``estimate_log_likelihood`` with chunks of c replicas is c-fold repeated passes with the
    noise drawn from the generator chunk by chunk: the log weights sum log p(x_t) + log p(z_t)
    - log q(z_t) over the valid steps, the estimate is their log-mean-exp, the ELBO their
    analytic-KL mean; S = 1 gives one weight and no standard error."""
    model = tiny("srnn", posterior=posterior)
    gen = torch.Generator().manual_seed(9)
    B, T, S, c = 3, 5, 4, 2
    x = make_x("gauss", B, T, gen)
    mask = ragged([5, 2, 4], T)
    est = estimate_log_likelihood(model, x, mask, num_samples=S, chunk_size=c,
                                  generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    log_w, elbo = [], []
    with torch.no_grad():
        for _ in range(S // c):
            m = mask.repeat(c, 1)
            terms = model(x.repeat(c, 1, 1), m, noise=noise_for(model, c * B, T, g),
                          sample_terms=True)
            log_w.append(masked_sum(terms.log_px + terms.log_pz - terms.log_qz, m).view(c, B))
            elbo.append(terms.elbo(m).view(c, B))
    log_w = torch.cat(log_w)
    assert est.log_weights.shape == (S, B)
    torch.testing.assert_close(est.log_weights, log_w, **TOL)
    torch.testing.assert_close(est.elbo, torch.cat(elbo).mean(0), **TOL)
    torch.testing.assert_close(est.log_likelihood, torch.logsumexp(log_w, 0) - math.log(S), **TOL)
    assert (est.stderr > 0).all()

    one = estimate_log_likelihood(model, x, mask, num_samples=1,
                                  generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        terms = model(x, mask, noise=noise_for(model, B, T, torch.Generator().manual_seed(2)),
                      sample_terms=True)
    log_w1 = masked_sum(terms.log_px + terms.log_pz - terms.log_qz, mask)
    torch.testing.assert_close(one.log_weights, log_w1.unsqueeze(0), **TOL)
    torch.testing.assert_close(one.log_likelihood, log_w1, **TOL)
    torch.testing.assert_close(one.elbo, terms.elbo(mask), **TOL)
    assert (one.stderr == 0).all() and (one.log_likelihood != one.elbo).all()


def test_importance_sampling_sits_above_the_elbo():
    """With S = 64 the IS estimate is at least the mean of its own log weights (Jensen) and, on
    average over a few sequences, above the ELBO."""
    model = tiny("srnn", seed=1)
    gen = torch.Generator().manual_seed(10)
    x = make_x("gauss", 3, 6, gen)
    mask = ragged([6, 5, 3], 6)
    est = estimate_log_likelihood(model, x, mask, num_samples=64, generator=gen)
    assert (est.log_likelihood >= est.log_weights.mean(0) - 1e-9).all()
    assert est.log_likelihood.mean() >= est.elbo.mean() - 1e-3 * est.elbo.abs().mean()
    assert (est.log_likelihood - est.elbo).mean() > 0


@pytest.mark.parametrize("res_q", [True, False])
def test_sampled_log_ratio_averages_to_minus_the_analytic_kl(res_q):
    """log p(z_t) - log q(z_t) of the sampled z_t is an unbiased estimate of -KL given z_{t-1}:
    over many replicas its mean minus the analytic KL's is zero within 5 standard errors (a KL
    against the wrong prior, or log q at the wrong mean, would not be)."""
    model = tiny("srnn", res_q=res_q)
    gen = torch.Generator().manual_seed(11)
    B, T, R = 2, 4, 2000
    x = make_x("gauss", B, T, gen)
    with torch.no_grad():
        terms = model(x, replicas=R, generator=gen, sample_terms=True)
    diff = (terms.log_pz - terms.log_qz + terms.kl).view(R, B, T)
    mean, se = diff.mean(0), diff.std(0) / math.sqrt(R)
    assert (mean.abs() < 5 * se + 1e-9).all(), (mean, se)
    assert (terms.kl > 0).all()


# -- 8. config and command-line errors ------------------------------------------------------------

def test_config_errors():
    with pytest.raises(ValueError, match="posterior"):
        model_config("rnn-gauss", x_dim=4, preset="tiny", posterior="smoothing")
    with pytest.raises(ValueError, match="res_q"):
        model_config("vrnn-gauss", x_dim=4, preset="tiny", res_q=True)
    with pytest.raises(ValueError, match="posterior"):
        model_config("srnn-gauss", x_dim=4, preset="tiny", posterior="backwards")
    with pytest.raises(ValueError, match="prior"):
        model_config("srnn-gauss", x_dim=4, preset="tiny", prior="standard")
    # the SRNN's defaults, and the VRNN's, and the flags that change them
    srnn = model_config("srnn-gauss", x_dim=4, preset="tiny")
    assert (srnn.family, srnn.posterior, srnn.res_q) == ("srnn", "smoothing", True)
    vrnn = model_config("vrnn-gauss", x_dim=4, preset="tiny")
    assert (vrnn.posterior, vrnn.res_q) == ("filtering", False)
    assert build_model(vrnn).smoother is None
    off = model_config("srnn-gauss", x_dim=4, preset="tiny", posterior="filtering", res_q=False)
    assert (off.posterior, off.res_q) == ("filtering", False)
    assert isinstance(build_model(off).inference, MLP)  # a_t = MLP([d_t, phi_x(x_t)])
    with pytest.raises(ValueError, match="Literal reads a vrnn model"):
        Literal(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("args,flag", [(["--model", "vrnn-gauss", "--res-q"], "--res-q"),
                                       (["--model", "rnn-gauss", "--no-res-q"], "--res-q"),
                                       (["--model", "rnn-gauss", "--posterior", "smoothing"],
                                        "--posterior")])
def test_command_line_refuses_flags_the_model_does_not_have(tmp_path, capsys, args, flag):
    from vrnn.cli import main

    data = write_npz(tmp_path / "toy.npz")
    code = main(["train", "--data", str(data), *args, "--preset", "tiny", "--max-steps", "1",
                 "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard"])
    assert code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


# -- 9. training end to end: an exact resume ------------------------------------------------------

def test_srnn_stopped_and_resumed_run_matches_one_that_never_stopped(tmp_path):
    """A tiny SRNN trained 4 steps then resumed to 6 ends with the parameters of a straight 6-step
    run. The resume may repeat the run's own --posterior / --res-q, but not change them."""
    from vrnn.data import load_dataset
    from vrnn.store.checkpoint import load_checkpoint
    from vrnn.train.loop import train

    data = str(write_npz(tmp_path / "toy.npz"))
    ds = load_dataset(data)
    seqs = types.SimpleNamespace(info=ds.info, train=ds.train, valid=ds.valid, test=ds.test,
                                 train_streams=None)
    kw = dict(model="srnn-gauss", max_steps=6, val_interval=3, log_interval=3)
    straight = train(tiny_train_config(data, tmp_path / "a", **kw), dataset=seqs)
    train(tiny_train_config(data, tmp_path / "b", **{**kw, "max_steps": 4}), dataset=seqs)
    stopped = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    for flags, flag in ((dict(posterior="filtering"), "--posterior"),
                        (dict(res_q=False), "--no-res-q")):
        with pytest.raises(ValueError, match=flag):
            train(tiny_train_config(data, tmp_path / "b", resume="auto", **kw, **flags),
                  dataset=seqs)
    resumed = train(tiny_train_config(data, tmp_path / "b", resume="auto", posterior="smoothing",
                                      res_q=True, **kw), dataset=seqs)
    assert straight.step == resumed.step == 6
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["model_config"]["family"] == "srnn" and a["model_config"]["posterior"] == "smoothing"
    assert a["model"].keys() == b["model"].keys()
    assert any(not torch.equal(stopped[k], a["model"][k]) for k in a["model"])
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)


def test_srnn_truncated_bptt_resume_carries_its_whole_state(tmp_path):
    """TBPTT over audio streams: the carried SRNN state (d's h and c, z_{t-1} and x_{t-1}) goes
    into the checkpoint and back, so a run stopped after 5 updates and resumed to 7 ends where a
    straight 7-update run does."""
    from vrnn.data import load_dataset
    from vrnn.store.checkpoint import load_checkpoint
    from vrnn.train.loop import train

    ds = load_dataset(str(write_npz(tmp_path / "toy.npz")))
    rng = np.random.default_rng(1)
    streams = [rng.normal(size=(120, 4)).astype(np.float32) for _ in range(2)]
    audio = types.SimpleNamespace(info=dataclasses.replace(ds.info, kind="audio"), train=ds.train,
                                  valid=ds.valid, test=ds.test, train_streams=streams)
    kw = dict(model="srnn-gauss", max_steps=7, seq_len=5, batch_size=4, tbptt_reset=4,
              val_interval=100, log_interval=100)
    train(tiny_train_config("toy", tmp_path / "a", **kw), dataset=audio)
    train(tiny_train_config("toy", tmp_path / "b", **{**kw, "max_steps": 5}), dataset=audio)
    carried = load_checkpoint(tmp_path / "b" / "last.pt")["tbptt_state"]
    assert carried is not None and len(carried) == 4  # h, c, z_{t-1}, x_{t-1}
    assert carried[3].shape == (4, 4) and carried[3].abs().sum() > 0
    train(tiny_train_config("toy", tmp_path / "b", resume="auto", **kw), dataset=audio)
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)

"""The particle filter inside the fast loop (vrnn.inference.particles, the resampling hook of
vrnn.kernels.filtering): FIVO's value and gradient from the VRNN's hand-written loop against a
particle filter written here from the step protocol's distributions, with the same noise and the
same ancestors; the planted bugs it must catch."""

from __future__ import annotations

import math

import pytest
import torch

from vrnn import build_model, model_config
from vrnn.inference import particles as particles_mod
from vrnn.inference.objectives import FIVO, fivo_bound
from vrnn.inference.smc import draw_ancestors
from vrnn.kernels import filtering_backward
from vrnn.kernels import replay as replay_mod

B, T, K, D = 3, 12, 4, 3


def _model(cell: str = "lstm", posterior: str = "filtering", dtype=torch.float64, seed=0,
           name: str = "vrnn-gauss", **options):
    torch.manual_seed(seed)
    cfg = model_config(name, x_dim=D, preset="tiny", cell=cell, posterior=posterior, **options)
    return build_model(cfg).to(dtype)


def _batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(B, T, D, generator=g, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 8:] = False  # a shorter sequence: padded steps neither weigh nor resample
    return x, mask


def _noise(model, dtype, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K * B, T, model.latent_dim, generator=g, dtype=dtype)


def reference_fivo(model, x, mask, noise, generator, threshold, resampling="multinomial"):
    """The FIVO bound by the book: the protocol's step and observe on K * B rows, the weights of
    Maddison et al.'s Algorithm 1 computed here from the step's distributions, ancestors drawn
    by draw_ancestors from ``generator`` at the steps that resample (as the filter under test
    draws them), the state reordered by the protocol's reorder. Differentiable (autograd)."""
    ctx = model.context(x, mask, model.init_state(B))
    state = model.init_state(K * B)
    log_W = x.new_full((K, B), -math.log(K))
    total = x.new_zeros(B)
    for t in range(T):
        ctx_t = tuple(c[:, t].repeat(K, 1) for c in ctx)
        x_t = x[:, t].repeat(K, 1)
        st = model.step(state, ctx_t, noise[:, t])
        log_alpha = (st.emission.log_prob(x_t) + st.prior.log_prob(st.z)
                     - st.posterior.log_prob(st.z)).view(K, B)
        state = model.observe(st.carry, x_t, ctx_t)
        on = mask[:, t]
        unnorm = log_W + torch.where(on, log_alpha, torch.zeros_like(log_alpha))
        inc = torch.logsumexp(unnorm, 0)
        total = total + inc
        log_W = unnorm - inc
        W = log_W.detach().exp()
        ess = 1.0 / (W * W).sum(0)
        if t + 1 == T:
            break
        need = on & mask[:, t + 1] & (ess < threshold * K)
        if need.any():
            drawn = draw_ancestors(log_W.detach()[:, need].T, resampling, generator)
            anc = torch.arange(K).unsqueeze(1).repeat(1, B)
            anc[:, need] = drawn.T
            rows = (anc * B + torch.arange(B)).reshape(-1)
            state = model.reorder(state, rows)
            log_W = torch.where(need, torch.full_like(log_W, -math.log(K)), log_W)
    return total


def _grads(model, value):
    model.zero_grad(set_to_none=True)
    value.sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _compare(model, x, mask, noise, threshold, resampling, tol, seed=5):
    ref = reference_fivo(model, x, mask, noise, torch.Generator().manual_seed(seed), threshold,
                         resampling)
    g_ref = _grads(model, ref)
    bound = fivo_bound(model, x, mask, particles=K, generator=torch.Generator().manual_seed(seed),
                       noise=noise, threshold=threshold, resampling=resampling)
    g_fast = _grads(model, bound.objective)
    assert torch.allclose(bound.objective, ref.detach(), rtol=tol, atol=0), \
        (bound.objective, ref)
    assert set(g_fast) == set(g_ref)
    for name in g_ref:
        err = (g_fast[name] - g_ref[name]).abs().max() / g_ref[name].abs().max().clamp(min=1e-12)
        assert err < tol, (name, float(err))
    return bound


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("resampling", ["multinomial", "systematic"])
def test_fast_fivo_equals_the_book_float64(cell, resampling):
    model = _model(cell)
    x, mask = _batch()
    noise = _noise(model, torch.float64)
    bound = _compare(model, x, mask, noise, 0.9, resampling, 1e-9)
    assert bound.ess is not None and bool((bound.ess >= 1).all())


def test_fast_fivo_equals_the_book_float32_smoothing_and_the_autograd_loop():
    model = _model("lstm", posterior="smoothing", dtype=torch.float32)
    x, mask = _batch(torch.float32)
    noise = _noise(model, torch.float32)
    _compare(model, x, mask, noise, 0.9, "multinomial", 1e-5)
    model.custom_loop = False  # the same loop differentiated by autograd, with the hook
    _compare(model, x, mask, noise, 0.9, "multinomial", 1e-5)


@pytest.mark.parametrize("name", ["vrnn-gmm", "vrnn-i-gauss", "vrnn-bernoulli"])
def test_fast_fivo_replays_the_hooks_activations_as_the_book(name, monkeypatch):
    """The batched pass after the loop reads the prior's and the decoder's MLP activations the
    resampling hook recorded (vrnn.kernels.replay) instead of running their forward products
    again; value and gradient still those of the filter written here, and the replay is used."""
    calls = []
    real = replay_mod.replay
    monkeypatch.setattr(replay_mod, "replay", lambda *a: calls.append(1) or real(*a))
    binary = name == "vrnn-bernoulli"
    model = _model("lstm", name=name, **(dict(data_kind="binary") if binary else {}))
    x, mask = _batch()
    if binary:
        x = (x > 0).double()
    _compare(model, x, mask, _noise(model, torch.float64), 0.9, "multinomial", 1e-9)
    assert len(calls) == (1 if name == "vrnn-i-gauss" else 2)


def test_replay_is_the_mlps_gradient():
    """replay's hand-written backward against autograd through the same ReLU MLP (float64):
    every weight, every bias and the input, with some units off at every layer."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 6),
                              torch.nn.ReLU()).double()
    inp = torch.randn(4, 9, 5, dtype=torch.float64, requires_grad=True)
    layers = ((mlp[0].weight, mlp[0].bias), (mlp[2].weight, mlp[2].bias))
    record = replay_mod.MLPRecord(layers, 4, 9, inp.detach())
    for t in range(9):
        record.record(t, inp.detach()[:, t])
    assert all(bool((a == 0).any()) for a in record.buffers)  # the ReLUs cut somewhere
    g_out = torch.randn(4, 9, 6, dtype=torch.float64)
    params = [inp, *mlp.parameters()]
    want = torch.autograd.grad((mlp(inp) * g_out).sum(), params)
    got_out = record.replay(inp)
    torch.testing.assert_close(got_out, mlp(inp), rtol=0, atol=1e-12)
    got = torch.autograd.grad((got_out * g_out).sum(), params)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,options", [
    ("srnn-gauss", dict(posterior="smoothing", res_q=True)),
    ("srnn-gauss", dict(posterior="filtering", res_q=False)),
    ("dmm-gauss", dict(posterior="smoothing")),
    ("storn-gauss", dict(posterior="filtering")),
])
def test_every_family_runs_fivo_as_the_book(name, options):
    """The SRNN runs the filter in its fast pass's z-chain; the DMM and STORN in the literal
    pass (the protocol's default); each equals the filter written here, value and gradient."""
    posterior = options.pop("posterior")
    model = _model("lstm", posterior=posterior, name=name, **options)
    x, mask = _batch()
    _compare(model, x, mask, _noise(model, torch.float64), 0.9, "multinomial", 1e-9)


def test_the_filter_resampled_and_the_bound_is_the_filters_own_estimate():
    model = _model()
    x, mask = _batch()
    noise = _noise(model, torch.float64)
    pf = particles_mod.ParticleFilter(K, mask, threshold=0.9,
                                      generator=torch.Generator().manual_seed(5),
                                      dtype=torch.float64)
    terms = model.particle_pass(x, mask, noise=noise, particles=pf)
    assert int(pf.resamples.min()) >= 2  # the comparisons above exercise the reordering
    assert not bool(pf.resampled[1, 7:].any())  # never at or after the last valid step
    again = particles_mod.resampled_log_likelihood(terms.log_px + terms.log_pz - terms.log_qz,
                                                   pf.resampled, mask, K)
    assert torch.allclose(again, pf.log_likelihood, rtol=1e-12)
    # threshold 0 never resamples: the filter's estimate is IS over the same K trajectories
    pf0 = particles_mod.ParticleFilter(K, mask, threshold=0.0, dtype=torch.float64)
    t0 = model.particle_pass(x, mask, noise=noise, particles=pf0)
    log_w = (torch.where(mask.repeat(K, 1), t0.log_px + t0.log_pz - t0.log_qz, 0.0)
             .sum(1).view(K, B))
    assert torch.allclose(pf0.log_likelihood, log_w.logsumexp(0) - math.log(K), rtol=1e-12)


def test_fivo_trains_from_the_objective_object():
    model = _model(dtype=torch.float32)
    x, mask = _batch(torch.float32)
    obj = FIVO(K, resampling="systematic")
    noise, gen = obj.noise(model.latent_dim, B, T, torch.arange(B), T,
                           torch.Generator().manual_seed(0), "cpu")
    b = obj.bound(model, x, mask, noise=noise, generator=gen)
    (-b.objective.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# -- planted bugs: each must turn the comparison red --------------------------------------------


def _red(model, x, mask, noise):
    with pytest.raises(AssertionError):
        _compare(model, x, mask, noise, 0.9, "multinomial", 1e-9)


def test_planted_wrong_ancestor_row_in_the_backward_pass(monkeypatch):
    model = _model()
    x, mask = _batch()
    noise = _noise(model, torch.float64)
    real = filtering_backward.backward_through_time

    def shifted(spec, s, noise_, cell0, weights, grads, ancestors=None):
        wrong = [None if a is None else a.roll(1) for a in ancestors or []]
        return real(spec, s, noise_, cell0, weights, grads, wrong)
    monkeypatch.setattr(filtering_backward, "backward_through_time", shifted)
    _red(model, x, mask, noise)


def test_planted_state_not_reordered(monkeypatch):
    model = _model()
    x, mask = _batch()
    noise = _noise(model, torch.float64)
    real = type(model)._weigh

    def forgetful(self, x_, replicas, pf, records=None):
        hook = real(self, x_, replicas, pf, records)
        return lambda *a: (hook(*a), None)[1]  # the filter decides; the loop copies nothing
    monkeypatch.setattr(type(model), "_weigh", forgetful)
    _red(model, x, mask, noise)


def test_planted_gradient_through_the_resampling(monkeypatch):
    model = _model()
    x, mask = _batch()
    noise = _noise(model, torch.float64)

    def leaky(log_alpha, resampled, valid, particles):  # same value, gradient through the reset
        K_, (B_, T_) = particles, valid.shape
        log_W = log_alpha.new_full((K_, B_), -math.log(K_))
        total = log_alpha.new_zeros(B_)
        la = torch.where(valid, log_alpha.view(K_, B_, T_), 0.0)
        for t in range(T_):
            unnorm = log_W + la[:, :, t]
            inc = unnorm.logsumexp(0)
            total = total + inc
            log_W = unnorm - inc
            kept = log_W - log_W.detach() - math.log(K_)  # value 1/K, gradient of the weights
            log_W = torch.where(resampled[:, t], kept, log_W)
        return total
    monkeypatch.setattr("vrnn.inference.objectives.resampled_log_likelihood", leaky)
    _red(model, x, mask, noise)


@pytest.mark.parametrize("resampling", ["multinomial", "systematic"])
def test_smc_estimate_in_the_fast_loop_draws_as_the_literal_filter(resampling):
    """SMC evaluation runs the filter in the VRNN's loop; with the same generator it draws the
    same noise and ancestors as the protocol's step-by-step filter (_filter), so the estimates,
    ESS and resampling counts agree."""
    from vrnn.inference import smc

    model = _model()
    x, mask = _batch()
    fast = smc.smc_log_likelihood(model, x, mask, particles=K, threshold=0.9,
                                  resampling=resampling,
                                  generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        slow = smc._filter(model, x, mask, K, torch.Generator().manual_seed(3), 0.9, resampling)
    assert int(slow.resamples.sum()) > 0
    assert torch.equal(fast.resamples, slow.resamples)
    for a, b in ((fast.log_likelihood, slow.log_likelihood), (fast.ess_mean, slow.ess_mean),
                 (fast.ess_min, slow.ess_min)):
        assert torch.allclose(a, b, rtol=1e-10), (a, b)


@pytest.mark.parametrize("broken", ["keep", "other sequence"])
def test_planted_wrong_copies_in_the_fast_estimate(broken, monkeypatch):
    """The fast SMC estimate against the step-by-step filter turns red when the loop's copies
    are wrong: none made, or made from the same particle of the neighbouring sequence."""
    from vrnn.inference import smc

    model = _model()
    x, mask = _batch()
    real = particles_mod.ParticleFilter._weigh

    def bad(self, t, log_alpha):
        rows = real(self, t, log_alpha)
        if rows is None or broken == "keep":
            return None
        return (rows // B) * B + (rows + 1) % B
    monkeypatch.setattr(particles_mod.ParticleFilter, "_weigh", bad)
    fast = smc.smc_log_likelihood(model, x, mask, particles=K, threshold=0.9,
                                  generator=torch.Generator().manual_seed(3))
    monkeypatch.undo()
    with torch.no_grad():
        slow = smc._filter(model, x, mask, K, torch.Generator().manual_seed(3), 0.9)
    assert (fast.log_likelihood - slow.log_likelihood).abs().max() > 1e-6


def test_the_resampled_likelihood_is_the_filters_recursion_step_by_step():
    """The segment sums of resampled_log_likelihood against the filter's recursion written out
    (W_t ∝ W_{t-1} alpha_t, increments log sum_k W_{t-1}^k alpha_t^k, W = 1/K after a
    resampling), value and gradient, on ragged sequences resampling at random steps."""
    g = torch.Generator().manual_seed(7)
    Kp, Bp, Tp = 5, 4, 17
    log_alpha = (3 * torch.randn(Kp * Bp, Tp, generator=g, dtype=torch.float64)
                 ).requires_grad_()
    valid = torch.ones(Bp, Tp, dtype=torch.bool)
    valid[1, 11:] = False
    valid[3, 4:] = False
    resampled = (torch.rand(Bp, Tp, generator=g) < 0.4) & valid
    resampled[:, -1] = False
    resampled[1, 10:] = False  # never at or after a sequence's last valid step (the filter's)
    resampled[3, 3:] = False
    assert int(resampled.sum()) >= 8

    def recursion(la):
        total = []
        for b in range(Bp):
            log_W = torch.full((Kp,), -math.log(Kp), dtype=torch.float64)
            acc = la.new_zeros(())
            for t in range(Tp):
                if not valid[b, t]:
                    continue
                unnorm = log_W + la.view(Kp, Bp, Tp)[:, b, t]
                inc = torch.logsumexp(unnorm, 0)
                acc = acc + inc
                log_W = unnorm - inc
                if resampled[b, t]:
                    log_W = torch.full((Kp,), -math.log(Kp), dtype=torch.float64)
            total.append(acc)
        return torch.stack(total)

    ours = particles_mod.resampled_log_likelihood(log_alpha, resampled, valid, Kp)
    ref = recursion(log_alpha)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn(Bp, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), log_alpha)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), log_alpha)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    # a resampling the recursion does not make changes the value: the segments matter
    moved = resampled.clone()
    moved[0, 5] = ~moved[0, 5]
    assert not torch.allclose(
        particles_mod.resampled_log_likelihood(log_alpha, moved, valid, Kp)[0], ref[0])

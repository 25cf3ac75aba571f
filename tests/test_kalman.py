"""The SRNN against an exact reference: a linear-Gaussian state-space model and its Kalman filter.

The model, a linear-Gaussian state-space model:

    z_t = A z_{t-1} + w_t,  w_t ~ N(0, Q),  Q diagonal,       z_0 = 0
    x_t = C z_t + v_t,      v_t ~ N(0, R),  R = r I

and the Kalman filter written below (predict, innovate, update; Kalman 1960) gives
log p(x_{1:T}) exactly.

An SRNN (Fraccaro et al. 2016) with no hidden layers anywhere is exactly this model, in float64:

* the deterministic layer d_t is made irrelevant: the LSTM's weights are zero (so d_t = 0
  exactly: every gate is sigmoid(0) = 1/2 of a cell input tanh(0) = 0) and every weight column
  that reads d_t (prior, emission, inference) is zero as well;
* the prior is one linear layer over [d_t, z_{t-1}] -> [loc, raw scale]: the loc weights on
  z_{t-1} are A, the loc bias 0, the raw-scale weights 0 and its bias softplus^{-1}(sqrt(Q_ii) -
  min_scale), so p(z_t | z_{t-1}) = N(A z_{t-1}, Q) exactly (scale = softplus(raw) + min_scale);
* the emission is one linear layer over [z_t, d_t]: loc weights C, scale constant sqrt(r), so
  p(x_t | z_t) = N(C z_t, r I);
* the filtering posterior is q(z_t | z_{t-1}, a_t) with a_t = relu(W [d_t, x_t] + b): with W the
  identity on x_t and b a large shift (100, asserted to keep every pre-activation positive) relu
  is the identity, a_t = x_t + 100, and the encoder, one linear layer over [a_t, z_{t-1}],
  removes the shift in its bias. It is set to the locally optimal proposal

      q(z_t | z_{t-1}, x_t) = p(z_t | z_{t-1}, x_t)
                            = N(Sigma (Q^-1 A z_{t-1} + C^T R^-1 x_t), Sigma),
      Sigma = (Q^-1 + C^T R^-1 C)^-1,

  which a diagonal Gaussian can represent when Sigma is diagonal: C = U diag(s) with orthonormal
  columns U (D >= Z) makes C^T C = diag(s^2), so Sigma is diagonal (asserted, with Sigma from a
  full matrix inverse).

What is exact then:

* With A != 0 the proposal ignores the future frames, so q(z_{1:T} | x) = prod_t p(z_t | z_{t-1},
  x_t) differs from p(z_{1:T} | x_{1:T}): the ELBO is strictly below log p(x) (by KL(q || p(z |
  x)) > 0) and the importance-sampled estimate rises towards log p(x) with S, p^(x) being
  unbiased. Every latent z_t is an affine function of the noise (the posterior mean is linear in
  z_{t-1}) and the analytic-KL ELBO of one draw is a quadratic in the noise, so its expectation is
  computed exactly (no Monte Carlo) by the degree-3 cubature rule on +-sqrt(n) e_i; it is checked
  against the same expectation computed in numpy from q's joint Gaussian over z_{1:T}.
* With A = 0 the frames are independent given nothing, p(z_t | z_{t-1}, x_t) = p(z_t | x_t) = p(z_t
  | x_{1:T}) is the exact posterior, and every importance weight equals p(x): log p(x_t, z_t) -
  log q(z_t) = log N(x_t; 0, C Q C^T + R) for every draw, a zero-variance estimator at any S.
  (The analytic-KL ELBO of one draw, log p(x | z) - KL, still varies with z; its expectation
  equals log p(x), checked with the cubature.)

The construction itself is checked apart from the likelihoods (the prior, emission and posterior
parameters against numpy, and the generated data's moments against the model's), so that a
mistake in it fails loudly rather than making the model consistently wrong. Finally, the future
dependence of the posteriors: with fixed noise a change of x_{t+k} (k >= 1) leaves the filtering
q(z_s), s <= t, bit-identical, and changes the smoothing one (SRNN and VRNN).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vrnn import ModelConfig, build_model
from vrnn.inference.importance import estimate_log_likelihood
from vrnn.models.presets import model_config

D, Z, H = 3, 2, 2  # frame size, latent size, units of the (irrelevant) deterministic layer
MIN_SCALE = 1e-4  # the config's default floor, subtracted before the softplus inverse
SHIFT = 100.0  # a_t = x_t + SHIFT keeps the inference ReLU on its identity branch
T, B = 15, 4  # steps and sequences of the data


# -- the exact reference ---------------------------------------------------------------------------


def gauss_logpdf(e: np.ndarray, cov: np.ndarray) -> float:
    """log N(e; 0, cov) by hand (Cholesky), for a vector ``e``."""
    L = np.linalg.cholesky(cov)
    u = np.linalg.solve(L, e)
    return float(-0.5 * (len(e) * math.log(2 * math.pi) + u @ u) - np.log(np.diag(L)).sum())


def kalman_log_likelihood(x: np.ndarray, A: np.ndarray, C: np.ndarray, Q: np.ndarray,
                          R: np.ndarray) -> float:
    """log p(x_{1:T}) of the linear-Gaussian SSM, ``x (T, D)``, z_0 = 0."""
    n = A.shape[0]
    m, P = np.zeros(n), np.zeros((n, n))
    ll = 0.0
    for x_t in x:
        m_, P_ = A @ m, A @ P @ A.T + Q  # predict
        e = x_t - C @ m_  # innovation
        S = C @ P_ @ C.T + R
        ll += gauss_logpdf(e, S)
        K = P_ @ C.T @ np.linalg.inv(S)  # update
        m, P = m_ + K @ e, (np.eye(n) - K @ C) @ P_
    return ll


def joint_log_likelihood(x: np.ndarray, A, C, Q, R) -> float:
    """The same log p(x_{1:T}) as one Gaussian over all frames: z = M w with block (t, s) of M
    A^{t-s} (s <= t), x = (I_T (x) C) z + v. A reference for the Kalman filter, not the model."""
    T_, n = len(x), A.shape[0]
    M = np.zeros((T_ * n, T_ * n))
    for t in range(T_):
        for s in range(t + 1):
            M[t * n:(t + 1) * n, s * n:(s + 1) * n] = np.linalg.matrix_power(A, t - s)
    cov_z = M @ np.kron(np.eye(T_), Q) @ M.T
    Cb = np.kron(np.eye(T_), C)
    cov_x = Cb @ cov_z @ Cb.T + np.kron(np.eye(T_), R)
    return gauss_logpdf(x.reshape(-1), cov_x)


# -- the SSM and the SRNN that is it ---------------------------------------------------------------


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def ssm(rho: float = 0.9, r: float = 0.5) -> dict:
    """A = rho * rotation (rho = 0: no dynamics), C = U diag(s) (orthonormal U), Q diagonal and
    R = r I."""
    U, _ = np.linalg.qr(np.array([[1.0, 0.3], [0.5, -1.0], [-0.4, 0.8]]))
    C = U @ np.diag([1.3, 0.7])
    A = rho * rotation(0.6)
    Q = np.diag([0.6, 0.3])
    return {"A": A, "C": C, "Q": Q, "r": r, "R": r * np.eye(D)}


def sample_ssm(p: dict, batch: int, steps: int, seed: int) -> np.ndarray:
    """``(batch, steps, D)`` frames drawn from the SSM itself (numpy generator)."""
    rng = np.random.default_rng(seed)
    z = np.zeros((batch, Z))
    xs = []
    for _ in range(steps):
        z = z @ p["A"].T + rng.standard_normal((batch, Z)) * np.sqrt(np.diag(p["Q"]))
        xs.append(z @ p["C"].T + rng.standard_normal((batch, D)) * math.sqrt(p["r"]))
    return np.stack(xs, 1)


def posterior_params(p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma (full inverse), F = Sigma Q^-1 A and G = Sigma C^T R^-1 of the locally optimal
    proposal, whose mean is F z_{t-1} + G x_t."""
    Qi, Ri = np.linalg.inv(p["Q"]), np.linalg.inv(p["R"])
    Sigma = np.linalg.inv(Qi + p["C"].T @ Ri @ p["C"])
    return Sigma, Sigma @ Qi @ p["A"], Sigma @ p["C"].T @ Ri


def softplus_inv(y: np.ndarray) -> np.ndarray:
    return np.log(np.expm1(y))


def ssm_model(p: dict) -> torch.nn.Module:
    """The float64 SRNN (filtering, no hidden layers) that is exactly the SSM ``p``."""
    cfg = ModelConfig(family="srnn", x_dim=D, z_dim=Z, h_dim=H, a_dim=D, output="gauss",
                      posterior="filtering", res_q=False, phi_x=(), prior_net=(), encoder=(),
                      decoder=(), learn_h0=False, min_scale=MIN_SCALE)
    model = build_model(cfg).double().eval()
    Sigma, F, G = posterior_params(p)
    assert np.abs(Sigma - np.diag(np.diag(Sigma))).max() < 1e-12  # representable
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        for w in model.rnn.parameters():
            w.zero_()
        prior = model.prior.gaussian.linear  # [d_t (H), z_{t-1} (Z)] -> [loc (Z), raw (Z)]
        assert len(model.prior.mlp.layers) == 0 and prior.weight.shape == (2 * Z, H + Z)
        prior.weight.zero_()
        prior.bias.zero_()
        prior.weight[:Z, H:] = t(p["A"])
        prior.bias[Z:] = t(softplus_inv(np.sqrt(np.diag(p["Q"])) - MIN_SCALE))
        dec = model.decoder.head.linear  # [z_t (Z), d_t (H)] -> [loc (D), raw (D)]
        assert len(model.decoder.mlp.layers) == 0 and dec.weight.shape == (2 * D, Z + H)
        dec.weight.zero_()
        dec.bias.zero_()
        dec.weight[:D, :Z] = t(p["C"])
        dec.bias[D:] = float(softplus_inv(math.sqrt(p["r"]) - MIN_SCALE))
        inf = model.inference.layers[0]  # relu([d_t (H), x_t (D)]) -> a_t (D)
        assert len(model.inference.layers) == 1 and inf.weight.shape == (D, H + D)
        inf.weight.zero_()
        inf.weight[:, H:] = torch.eye(D, dtype=torch.float64)
        inf.bias.fill_(SHIFT)
        enc = model.encoder.gaussian.linear  # [a_t (D), z_{t-1} (Z)] -> [loc (Z), raw (Z)]
        assert len(model.encoder.mlp.layers) == 0 and enc.weight.shape == (2 * Z, D + Z)
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:Z, :D] = t(G)
        enc.weight[:Z, D:] = t(F)
        enc.bias[:Z] = t(-G @ np.full(D, SHIFT))
        enc.bias[Z:] = t(softplus_inv(np.sqrt(np.diag(Sigma)) - MIN_SCALE))
    return model


def as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


# -- numpy references of the model's terms ---------------------------------------------------------


def cubature_noise(n_rows: int, steps: int) -> torch.Tensor:
    """The 2n points +-sqrt(n) e_i (n = steps * Z) of the cubature rule that integrates every
    polynomial of degree <= 3 in the noise exactly against N(0, I): ``(2n, steps, Z)``."""
    n = steps * Z
    pts = math.sqrt(n) * np.concatenate([np.eye(n), -np.eye(n)])  # (2n, n)
    assert pts.shape[0] == n_rows
    return as_tensor(pts.reshape(2 * n, steps, Z))


def model_expected_elbo(model, x: torch.Tensor) -> torch.Tensor:
    """E_noise[ELBO] of the model (analytic KL) for every sequence of ``x (B, T, D)``, exactly:
    the ELBO of one draw is quadratic in the noise, so the cubature mean is its expectation."""
    Bx, Tx, _ = x.shape
    pts = cubature_noise(2 * Tx * Z, Tx)  # (P, T, Z)
    P = pts.shape[0]
    noise = pts.repeat_interleave(Bx, 0)  # row j * B + b: point j for sequence b
    terms = model(x.repeat(P, 1, 1), noise=noise)
    return terms.elbo().view(P, Bx).mean(0)


def numpy_expected_elbo(x: np.ndarray, p: dict) -> float:
    """E_q[log p(x, z) - log q(z)] in closed form from q's joint Gaussian over z_{1:T}:
    z_t = F z_{t-1} + G x_t + L eps_t, L = Sigma^(1/2)."""
    Sigma, F, G = posterior_params(p)
    A, C, Q, r = p["A"], p["C"], p["Q"], p["r"]
    T_ = len(x)
    L = np.sqrt(np.diag(Sigma))
    mean, z = [], np.zeros(Z)
    for x_t in x:
        z = F @ z + G @ x_t
        mean.append(z)
    mu = np.concatenate(mean)
    M = np.zeros((T_ * Z, T_ * Z))
    for t in range(T_):
        for s in range(t + 1):
            M[t * Z:(t + 1) * Z, s * Z:(s + 1) * Z] = np.linalg.matrix_power(F, t - s) * L
    cov = M @ M.T

    def expected_quadratic(K, c, W):  # E[(K z + c)^T W (K z + c)], z ~ N(mu, cov)
        m = K @ mu + c
        return m @ W @ m + np.trace(W @ K @ cov @ K.T)

    shift_down = np.kron(np.eye(T_, k=-1), A)  # block (t, t-1) = A: the prior's mean
    prior_res = expected_quadratic(np.eye(T_ * Z) - shift_down, np.zeros(T_ * Z),
                                   np.kron(np.eye(T_), np.linalg.inv(Q)))
    log_pz = -0.5 * (T_ * Z * math.log(2 * math.pi) + T_ * np.log(np.linalg.det(Q)) + prior_res)
    emit_res = expected_quadratic(-np.kron(np.eye(T_), C), x.reshape(-1), np.eye(T_ * D) / r)
    log_px = -0.5 * (T_ * D * math.log(2 * math.pi * r) + emit_res)
    entropy = T_ * (np.log(L).sum() + 0.5 * Z * (1 + math.log(2 * math.pi)))
    return float(log_pz + log_px + entropy)


# -- fixtures --------------------------------------------------------------------------------------


def setting(p: dict, seed: int):
    """An SSM, its SRNN, ``B`` sequences drawn from it and the Kalman log p(x) of each."""
    x = sample_ssm(p, B, T, seed=seed)
    exact = np.array([kalman_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"]) for s in x])
    return p, ssm_model(p), as_tensor(x), exact


@pytest.fixture(scope="module")
def dyn():
    """Strong dynamics (|A| = 0.9): the proposal misses a lot of the future, KL(q || p(z | x))
    is ~3 nats per sequence, so the ELBO and the IS estimate at small S are far below log p(x)."""
    return setting(ssm(0.9, 0.5), seed=1)


@pytest.fixture(scope="module")
def mild():
    """Milder dynamics (|A| = 0.6, r = 0.2): KL ~1 nat, weights light-tailed enough for a mean
    of p^(x) / p(x) over a thousand repeats to be reliable."""
    return setting(ssm(0.6, 0.2), seed=1)


@pytest.fixture(scope="module")
def static():
    """The SSM with A = 0: the proposal is the exact posterior."""
    return setting(ssm(0.0, 0.5), seed=2)


# -- 1. the reference itself -----------------------------------------------------------------------


def test_kalman_single_step_is_the_marginal_gaussian():
    p = ssm()
    x = sample_ssm(p, 3, 1, seed=3)
    S = p["C"] @ p["Q"] @ p["C"].T + p["R"]  # x_1 ~ N(0, C Q C^T + R) since z_0 = 0
    for s in x:
        e = s[0]
        by_hand = -0.5 * (D * math.log(2 * math.pi) + math.log(np.linalg.det(S))
                          + e @ np.linalg.inv(S) @ e)
        assert kalman_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"]) == pytest.approx(
            by_hand, abs=1e-12)


def test_kalman_matches_the_joint_gaussian_over_all_frames():
    p = ssm()
    x = sample_ssm(p, 2, 12, seed=4)
    for s in x:
        k = kalman_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"])
        assert k == pytest.approx(joint_log_likelihood(s, p["A"], p["C"], p["Q"], p["R"]),
                                  abs=1e-9)
    # and the dynamics matter: A = 0 gives another value (so the comparison can tell)
    assert abs(kalman_log_likelihood(s, np.zeros((Z, Z)), p["C"], p["Q"], p["R"]) - k) > 0.1


# -- 4. the construction, apart from the likelihoods -----------------------------------------------


def test_construction_prior_emission_posterior(dyn):
    p, model, x, _ = dyn
    Sigma, _, _ = posterior_params(p)
    rng = np.random.default_rng(5)
    z_prev = rng.standard_normal((6, Z))
    x_t = rng.standard_normal((6, D))
    z_t = rng.standard_normal((6, Z))
    d = torch.zeros(6, H, dtype=torch.float64)
    with torch.no_grad():
        prior = model.prior_dist(d, as_tensor(z_prev)).base_dist
        emit = model.decoder(torch.cat([as_tensor(z_t), d], -1)).base_dist
        a = model.inference(torch.cat([d, as_tensor(x_t)], -1))
        q = model.posterior(a, as_tensor(z_prev)).base_dist
    np.testing.assert_allclose(prior.loc.numpy(), z_prev @ p["A"].T, atol=1e-12)
    np.testing.assert_allclose(prior.scale.numpy(), np.broadcast_to(np.sqrt(np.diag(p["Q"])),
                                                                    (6, Z)), atol=1e-12)
    np.testing.assert_allclose(emit.loc.numpy(), z_t @ p["C"].T, atol=1e-12)
    np.testing.assert_allclose(emit.scale.numpy(), math.sqrt(p["r"]), atol=1e-12)
    np.testing.assert_allclose(a.numpy(), x_t + SHIFT, atol=1e-12)
    # q = p(z_t | z_{t-1}, x_t) by Bayes' rule, with the full-matrix inverses
    Qi, Ri = np.linalg.inv(p["Q"]), np.linalg.inv(p["R"])
    q_mean = (Sigma @ (Qi @ p["A"] @ z_prev.T + p["C"].T @ Ri @ x_t.T)).T
    np.testing.assert_allclose(q.loc.numpy(), q_mean, atol=1e-10)
    np.testing.assert_allclose(q.scale.numpy(), np.broadcast_to(np.sqrt(np.diag(Sigma)), (6, Z)),
                               atol=1e-12)

    # in a full pass: d_t = 0, the prior's mean is A z_{t-1} of the sampled chain, z_0 = 0
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lat = model(x, generator=g, return_latents=True).latents
    assert torch.equal(lat["d"], torch.zeros_like(lat["d"]))
    assert float(lat["a"].min()) > 0  # the ReLU stayed on its identity branch
    z = lat["z"].numpy()
    np.testing.assert_allclose(lat["prior_loc"][:, 0].numpy(), 0.0, atol=0)
    np.testing.assert_allclose(lat["prior_loc"][:, 1:].numpy(), z[:, :-1] @ p["A"].T, atol=1e-12)


def test_construction_generated_moments(dyn):
    """Frames the model generates have the SSM's moments: Cov x_1 = C Q C^T + R and the lag-one
    cross-covariance Cov(x_2, x_1) = C A Q C^T (which tells A from its transpose)."""
    p, model, _, _ = dyn
    N = 100000
    g = torch.Generator().manual_seed(6)
    xs = model.sample(N, 2, generator=g).numpy()
    A, C, Q, R = p["A"], p["C"], p["Q"], p["R"]
    cov1 = C @ Q @ C.T + R
    cross = C @ A @ Q @ C.T
    cov2 = C @ (A @ Q @ A.T + Q) @ C.T + R
    tol = 6 * 2 / math.sqrt(N)  # a few standard errors of entries of size <= ~2
    np.testing.assert_allclose(xs.mean(0), 0.0, atol=tol)
    np.testing.assert_allclose(xs[:, 0].T @ xs[:, 0] / N, cov1, atol=tol)
    np.testing.assert_allclose(xs[:, 1].T @ xs[:, 0] / N, cross, atol=tol)
    np.testing.assert_allclose(xs[:, 1].T @ xs[:, 1] / N, cov2, atol=tol)
    assert np.abs(C @ A.T @ Q @ C.T - cross).max() > 5 * tol  # the check can tell


# -- 2. and 6. with dynamics: ELBO < log p(x), IS rises to it, p^(x) unbiased ---------------------


def test_expected_elbo_is_exact_and_below_log_likelihood(dyn):
    p, model, x, exact = dyn
    with torch.no_grad():
        elbo = model_expected_elbo(model, x).numpy()
    ref = np.array([numpy_expected_elbo(s, p) for s in x.numpy()])
    np.testing.assert_allclose(elbo, ref, atol=1e-8)
    gap = exact - elbo  # KL(q(z | x) || p(z | x)) > 0: the proposal ignores the future
    assert (gap > 0.05).all(), gap
    # a plain Monte Carlo average of the ELBO agrees (within 4 standard errors)
    g = torch.Generator().manual_seed(7)
    n = 200
    with torch.no_grad():
        draws = model(x.repeat(n, 1, 1), generator=g).elbo().view(n, B).numpy()
    se = draws.std(0, ddof=1) / math.sqrt(n)
    assert (np.abs(draws.mean(0) - elbo) < 4 * se).all()
    assert (draws.mean(0) < exact).all()


def test_importance_sampling_rises_to_log_likelihood(dyn):
    p, model, x, exact = dyn
    reps = 16
    xr = x.repeat(reps, 1, 1)  # every sequence `reps` times, each with its own draws
    ex = np.tile(exact, reps)
    g = torch.Generator().manual_seed(8)
    sizes = (1, 10, 100, 1000)
    mean_gap = []
    for S in sizes:
        est = estimate_log_likelihood(model, xr, num_samples=S, generator=g)
        mean_gap.append(float((ex - est.log_likelihood.numpy()).mean()))
    # measured (exact - IS, mean of 64): 3.41, 0.83, 0.17, 0.015; E[gap] at S = 1 is the KL ~3.4
    assert all(a > b for a, b in zip(mean_gap, mean_gap[1:])), mean_gap
    assert mean_gap[0] > 1.0
    assert abs(mean_gap[-1]) < 0.05 * mean_gap[0], mean_gap


def test_importance_estimate_is_unbiased_in_p_and_a_lower_bound(mild):
    p, model, x, exact = mild
    reps, S = 1000, 4
    g = torch.Generator().manual_seed(9)
    est = estimate_log_likelihood(model, x.repeat(reps, 1, 1), num_samples=S, generator=g)
    diff = est.log_likelihood.numpy().reshape(reps, B) - exact  # (reps, B)
    ratio = np.exp(diff)  # p^(x) / p(x): mean 1
    se = ratio.std(ddof=1) / math.sqrt(ratio.size)
    assert abs(ratio.mean() - 1) < 3 * se, (ratio.mean(), se)  # pooled over the sequences
    se_b = ratio.std(0, ddof=1) / math.sqrt(reps)
    assert (np.abs(ratio.mean(0) - 1) < 4 * se_b).all(), (ratio.mean(0), se_b)
    assert (ratio.std(0) > 0.1).all()  # not degenerate: the weights do vary with A != 0
    # E[log p^] <= log p(x): a stochastic lower bound (here clearly below: Jensen)
    se_log = diff.std(0, ddof=1) / math.sqrt(reps)
    assert (diff.mean(0) <= 3 * se_log).all(), (diff.mean(0), se_log)
    assert diff.mean() < -0.1


# -- 3. A = 0: the proposal is the exact posterior ------------------------------------------------


def test_exact_posterior_gives_zero_variance_estimate(static):
    p, model, x, exact = static
    g = torch.Generator().manual_seed(10)
    for S in (1, 7, 64):
        est = estimate_log_likelihood(model, x, num_samples=S, generator=g)
        np.testing.assert_allclose(est.log_likelihood.numpy(), exact, atol=1e-8)
        lw = est.log_weights.numpy()  # (S, B)
        np.testing.assert_allclose(lw, np.broadcast_to(exact, lw.shape), atol=1e-8)
        assert (lw.max(0) - lw.min(0) < 1e-10).all()
        assert float(est.stderr.abs().max()) < 1e-8
    # the analytic-KL ELBO's expectation is log p(x) too (KL(q || p(z | x)) = 0)
    with torch.no_grad():
        elbo = model_expected_elbo(model, x).numpy()
    np.testing.assert_allclose(elbo, exact, atol=1e-8)


def test_exact_posterior_step_terms(static):
    """Per step, log p(x_t | z_t) + log p(z_t) - log q(z_t) = log N(x_t; 0, C Q C^T + R) for every
    draw, and the KL and log_px terms are those of numpy's Gaussians."""
    p, model, x, _ = static
    C, Q, r = p["C"], p["Q"], p["r"]
    Sigma, _, G = posterior_params(p)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        terms = model(x.repeat(3, 1, 1), generator=g, sample_terms=True, return_latents=True)
    xs = x.repeat(3, 1, 1).numpy()
    z = terms.latents["z"].numpy()
    S = C @ Q @ C.T + r * np.eye(D)
    marg = np.array([[gauss_logpdf(f, S) for f in seq] for seq in xs])  # (N, T)
    incr = (terms.log_px + terms.log_pz - terms.log_qz).numpy()
    np.testing.assert_allclose(incr, marg, atol=1e-10)
    log_px = np.array([[gauss_logpdf(f - C @ zz, r * np.eye(D)) for f, zz in zip(seq, zs)]
                       for seq, zs in zip(xs, z)])
    np.testing.assert_allclose(terms.log_px.numpy(), log_px, atol=1e-10)
    mu = xs @ G.T  # q's mean with A = 0
    s2, q2 = np.diag(Sigma), np.diag(Q)
    kl = 0.5 * (np.log(q2 / s2) + (s2 + mu ** 2) / q2 - 1).sum(-1)  # KL(N(mu, Sigma) || N(0, Q))
    np.testing.assert_allclose(terms.kl.numpy(), kl, atol=1e-10)
    np.testing.assert_allclose(terms.elbo().numpy(), (log_px - kl).sum(1), atol=1e-9)
    # a draw's ELBO with the analytic KL is not the constant log p(x): only its mean is
    assert np.ptp(terms.elbo().numpy().reshape(3, B), 0).min() > 1e-3


# -- 5. the smoothing posterior sees the future, the filtering one does not ------------------------


def _posterior_after_change(model, x, noise, t, k):
    x2 = x.clone()
    x2[:, t + k] += 2.0
    with torch.no_grad():
        a = model(x, noise=noise, return_latents=True).latents
        b = model(x2, noise=noise, return_latents=True).latents
    return a, b


@pytest.mark.parametrize("family", ["srnn", "vrnn"])
def test_future_dependence(family):
    torch.manual_seed(12)
    steps, t = 8, 3
    models = {}
    for posterior in ("filtering", "smoothing"):
        if family == "srnn":
            cfg = ModelConfig(family="srnn", x_dim=4, z_dim=3, h_dim=8, a_dim=8,
                              phi_x=(), prior_net=(8,), encoder=(8,), decoder=(8,),
                              posterior=posterior)
        else:
            cfg = model_config("vrnn-gauss", x_dim=4, preset="tiny", posterior=posterior)
        models[posterior] = build_model(cfg).double().eval()
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, steps, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(2, steps, models["filtering"].config.z_dim, generator=g,
                        dtype=torch.float64)
    for k in (1, 3):
        a, b = _posterior_after_change(models["filtering"], x, noise, t, k)
        for key in ("enc_loc", "enc_scale"):
            assert torch.equal(a[key][:, :t + k], b[key][:, :t + k]), (key, k)
            assert not torch.equal(a[key][:, t + k], b[key][:, t + k])  # x_{t+k} is seen then
        a, b = _posterior_after_change(models["smoothing"], x, noise, t, k)
        for key in ("enc_loc", "enc_scale"):
            change = (a[key][:, t] - b[key][:, t]).abs().max()
            assert change > 1e-4, (key, k, float(change))
        assert (a["enc_loc"][:, 0] - b["enc_loc"][:, 0]).abs().max() > 1e-5  # back to step 1

"""The cost of the K-particle objectives and of the particle-filter estimate.

A training step of ``--objective iwae`` or ``fivo`` with K particles runs the K trajectories of a
sequence as replicas (phi_x, and its products with the recurrence's weights, once per sequence),
so it should cost well under K one-particle (ELBO) steps. FIVO runs its particle filter inside
the same pass (vrnn.inference.particles: the filtering loop weighs each step's particles and
copies states by ancestor), so it should cost about what IWAE does at the same K; the
``fivo-steps`` rows time the filter run one step at a time through the step protocol under
autograd (``smc_log_likelihood(differentiable=True)``, how FIVO trained before), beside it. The
SMC estimate of log p(x) with S particles runs the same S trajectories as importance sampling,
plus the per-step weights and the resampling, inside the fast loop too (``smc_steps_ms``: the
step-by-step filter). All timed here in one rotation, on the benchmark's batch of a
configuration.
"""

from __future__ import annotations

import argparse

import torch

from vrnn.bench.configs import IS_SAMPLES, BenchConfig, make_batch
from vrnn.bench.measure import interleaved, median, sync_for
from vrnn.bench.suites import is_chunk
from vrnn.bench.variants import make_optimizer
from vrnn.inference.importance import estimate_log_likelihood
from vrnn.inference.objectives import ELBO, make_objective
from vrnn.inference.smc import _filter, smc_log_likelihood
from vrnn.models.vrnn import VRNN
from vrnn.train.objective import LossModule

PARTICLES = (4, 16)
"""K of the timed K-particle steps by default (``--particles``)."""
ELBO_PASS_EVERY = 10
"""Training runs FIVO's plain-ELBO pass on the updates that write a row of metrics.csv: one in
``--log-interval`` (10 by default)."""


def _step(objective: LossModule, opt: torch.optim.Optimizer, x, gen: torch.Generator):
    """One training update of ``objective`` on ``x`` (forward, backward, Adam), as training does
    it on an update that writes no row of metrics.csv (:class:`vrnn.train.objective.LossModule`
    with ``figures=False``: the ELBO and IWAE report the plain ELBO from their own pass anyway;
    FIVO's costs one more pass without gradient, run on one update in ``--log-interval``, 10 by
    default, and timed apart as ``fivo_elbo_pass_ms``)."""
    scale = 1.0 / x.shape[0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(x, None, None, None, 1.0, scale, gen, False)
        loss.backward()
        opt.step()

    return step


def bench_particles(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """Milliseconds of one ELBO training step and of one K-particle step of iwae and fivo for
    each K of ``args.particles``, in one interleaved rotation; each K-particle step over K
    one-particle steps (the paired ratio of each round, its median); then SMC against IS at
    S = 40 without gradients."""
    torch.manual_seed(0)
    model = VRNN(cfg.model_config()).to(device)
    x, _ = make_batch(cfg, device)
    gen = torch.Generator(device=device).manual_seed(0)
    opt = make_optimizer(model.parameters())  # shared: the weights' values do not change costs
    fns = {"elbo": _step(LossModule(model, ELBO()), opt, x, gen)}
    for k in args.particles:
        for objective in ("iwae", "fivo"):
            loss = LossModule(model, make_objective(objective, particles=k))
            fns[f"{objective}_{k}"] = _step(loss, opt, x, gen)
        fns[f"fivo-steps_{k}"] = _steps_fivo(model, opt, x, gen, k)

    def elbo_pass() -> None:  # FIVO's plain ELBO beside its bound: B rows, no gradient
        with torch.no_grad():
            model(x, generator=gen)

    fns["fivo-elbo-pass"] = elbo_pass
    ts = interleaved(fns, args.particle_repeats, args.warmup, sync_for(device))
    pass_ts = ts["fivo-elbo-pass"]
    one = ts["elbo"]
    steps = {}
    for k in args.particles:
        iw = ts[f"iwae_{k}"]
        for objective in ("iwae", "fivo", "fivo-steps"):
            t = ts[f"{objective}_{k}"]
            steps[f"{objective}_{k}"] = {
                "objective": objective, "particles": k, "ms": median(t) * 1e3,
                "over_one_particle": median([a / b for a, b in zip(t, one)]),
                "over_k_one_particle_steps": median([a / (k * b) for a, b in zip(t, one)]),
                "over_iwae": median([a / b for a, b in zip(t, iw)])}
            if objective == "fivo":  # with its ELBO pass on one update in ELBO_PASS_EVERY
                steps[f"{objective}_{k}"]["over_iwae_amortised"] = median(
                    [(a + e / ELBO_PASS_EVERY) / b for a, e, b in zip(t, pass_ts, iw)])

    model.eval()
    chunk = is_chunk(cfg)

    def is_eval() -> None:
        estimate_log_likelihood(model, x, num_samples=IS_SAMPLES, generator=gen,
                                chunk_size=chunk)

    def smc_eval() -> None:
        smc_log_likelihood(model, x, particles=IS_SAMPLES, generator=gen)

    def smc_steps_eval() -> None:
        with torch.no_grad():
            _filter(model, x, None, IS_SAMPLES, gen, 0.5)

    ev = interleaved({"is": is_eval, "smc": smc_eval, "smc_steps": smc_steps_eval},
                     args.eval_repeats, args.eval_warmup, sync_for(device))
    return {"batch": cfg.batch, "steps": cfg.steps, "repeats": args.particle_repeats,
            "elbo_step_ms": median(one) * 1e3, "particle_steps": steps,
            "fivo_elbo_pass_ms": median(pass_ts) * 1e3,
            "evaluation": {"samples": IS_SAMPLES, "repeats": args.eval_repeats,
                           "is_ms": median(ev["is"]) * 1e3, "smc_ms": median(ev["smc"]) * 1e3,
                           "smc_over_is": median([a / b for a, b in zip(ev["smc"], ev["is"])]),
                           "smc_steps_ms": median(ev["smc_steps"]) * 1e3,
                           "smc_steps_over_is": median([a / b for a, b in
                                                        zip(ev["smc_steps"], ev["is"])])}}


def _steps_fivo(model: VRNN, opt: torch.optim.Optimizer, x, gen: torch.Generator, k: int):
    """One FIVO update with the filter run step by step through the protocol under autograd
    (``smc_log_likelihood(differentiable=True)``), and the plain ELBO pass beside it, as FIVO
    trained before the filter ran inside the loop."""
    scale = 1.0 / x.shape[0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        est = smc_log_likelihood(model, x, particles=k, generator=gen, differentiable=True)
        with torch.no_grad():
            model(x, generator=gen)
        (-est.log_likelihood.sum() * scale).backward()
        opt.step()

    return step

"""The four measurements of one configuration: the training step of every variant, importance-
sampled evaluation, generation, and the cost per time step as T and B grow. Each returns the
JSON record of its section."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

import torch
from torch import Tensor

from vrnn.bench.configs import (
    BF16_TARGET,
    GENERATION_AGREEMENT_ATOL,
    GENERATION_TARGET,
    IS_SAMPLES,
    IS_TARGET,
    TARGETS,
    BenchConfig,
    BenchmarkError,
    make_batch,
)
from vrnn.bench.isolated import pair_in_fresh_process
from vrnn.bench.measure import (
    family_training_flops,
    interleaved,
    is_flop_ratio,
    median,
    paired_ratio,
    profile_step,
    saved_bytes,
    sgemm_fn,
    srnn_training_flops,
    sync_for,
    thin_product_bound,
    training_flops,
)
from vrnn.bench.variants import (
    BASELINE,
    Variant,
    build_variants,
    check_agreement,
    make_optimizer,
    train_step,
    vrnn_reference,
)
from vrnn.inference.importance import (
    DEFAULT_ROW_BUDGET,
    DEFAULT_STEP_BUDGET,
    estimate_log_likelihood,
)
from vrnn.inference.protocol import masked_sum
from vrnn.inference.weights import log_mean_exp
from vrnn.models.vrnn import VRNN

# -- training ----------------------------------------------------------------------------------


LOW_DTYPES = {"bf16": torch.bfloat16}
"""The dtype of each precision's matmul rate (``sgemm_bf16``) and bound (``bound_bf16``)."""


def bench_training(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """One training step (forward, backward, Adam) of every variant, interleaved with the
    machine's matmul rate, after the agreement check; memory, the bound, the targets and (with
    ``--profile``) the operator profile. An SRNN, DMM or STORN configuration times its two
    variants and, in the same rotation, the VRNN's ``ours`` of the same sizes
    (``vrnn_reference``); it has no bound.

    Each precision P of ``args.precisions`` but fp32 (``--precision``) adds ``per-step P`` and
    ``ours P`` to the rotation, and an ``n x n x n`` product in P (``sgemm_P``): the JSON's
    ``sgemm_P_gflops``; a P variant's ``fraction_of_sgemm`` is of that rate, its
    ``speedup_vs_per_step`` against the float32 per-step, its ``speedup_vs_fp32`` (and
    ``paired_speedup_vs_fp32``) against the float32 variant it copies; ``bound_P`` is the thin-
    product bound in P (VRNN configurations).

    With ``args.isolated`` (``--isolated``, the default) each such P also times ``ours`` against
    ``ours P`` once more in a fresh process of their own, before anything is built here
    (:mod:`vrnn.bench.isolated`): the JSON's ``isolated[P]``, and the target
    ``bf16_speedup_isolated`` beside ``bf16_speedup_vs_fp32``."""
    other = cfg.family != "vrnn"  # an SRNN, DMM or STORN: two variants beside the VRNN's
    precisions = [p for p in getattr(args, "precisions", ["fp32"]) if p != "fp32"]
    isolated = {}
    if getattr(args, "isolated", False):  # first, while this process holds the least memory
        for p in precisions:
            print(f"[{cfg.name}] ours and ours {p} in a process of their own ...", flush=True)
            isolated[p] = pair_in_fresh_process(cfg, p, args.repeats, args.warmup,
                                                torch.get_num_threads(), device)
    variants, x, noise, info = build_variants(cfg, device, args.compile,
                                              precisions=["fp32", *precisions])
    agreement = check_agreement(variants)
    if cfg.family == "srnn":
        flops = srnn_training_flops(variants["ours"].net, cfg.batch, cfg.steps)
    elif other:
        flops = family_training_flops(variants["ours"].net, cfg.batch, cfg.steps)
    else:
        flops = training_flops(variants["ours"].net, cfg.batch, cfg.steps)
    fns = {name: train_step(v.loss, make_optimizer(v.module.parameters()))
           for name, v in variants.items()}
    mm, mm_flops = sgemm_fn(args.sgemm_size, device)
    fns["sgemm"] = mm
    for p in precisions:  # the same n, in P, in the same rotation
        fns[f"sgemm_{p}"] = sgemm_fn(args.sgemm_size, device, LOW_DTYPES[p])[0]
    ref = vrnn_reference(cfg, device) if other else None
    if ref is not None:  # the VRNN's ours of the same sizes, in the same rotation
        fns[ref.name] = train_step(ref.loss, make_optimizer(ref.module.parameters()))
    times = interleaved(fns, args.repeats, args.warmup, sync_for(device))
    rate = mm_flops / median(times.pop("sgemm")) / 1e9
    rates = {"fp32": rate} | {p: mm_flops / median(times.pop(f"sgemm_{p}")) / 1e9
                              for p in precisions}
    ref_times = times.pop(ref.name) if ref is not None else None
    rows = cfg.batch * cfg.steps
    out: dict = {"sizes": asdict(cfg), "flops_per_step": flops, "agreement": agreement,
                 "sgemm_gflops": rate, "sgemm_size": args.sgemm_size}
    out |= {f"sgemm_{p}_gflops": rates[p] for p in precisions}
    out |= {**info, "variants": {}}
    if isolated:
        for rec in isolated.values():  # the child's first losses against this process's
            for name, loss in rec.get("first_loss", {}).items():
                here = agreement["variants"][name]["loss"]
                rec.setdefault("first_loss_rel_diff", {})[name] = abs(loss - here) / abs(here)
        out["isolated"] = isolated
    base = times[BASELINE]
    for name, ts in times.items():
        v = variants[name]
        ms = median(ts) * 1e3
        gflops = flops["total"] / (ms / 1e3) / 1e9
        record = {
            "ms": ms, "ms_all": [t * 1e3 for t in ts], "seq_steps_per_s": rows / (ms / 1e3),
            "gflops": gflops, "fraction_of_sgemm": gflops / rates[v.precision],
            "speedup_vs_per_step": median(base) / median(ts),
            "paired_speedup_vs_per_step": paired_ratio(base, ts),
        }
        if v.precision != "fp32":  # against the float32 variant it copies
            fp32 = times[v.fp32_name]
            record |= {"precision": v.precision, "speedup_vs_fp32": median(fp32) / median(ts),
                       "paired_speedup_vs_fp32": paired_ratio(fp32, ts)}
        out["variants"][name] = record
    out["memory"] = {name: {"saved_for_backward_bytes": saved_bytes(v.loss)}
                     for name, v in variants.items()}
    if device.type == "cuda":
        for name in variants:
            torch.cuda.reset_peak_memory_stats(device)
            fns[name]()
            out["memory"][name]["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    if other:
        out["vrnn_reference"] = vrnn_reference_record(ref, ref_times, times["ours"], cfg,
                                                      rate)
    else:
        out["bound"] = thin_product_bound(variants["ours"].net, cfg, flops, rate, args.repeats,
                                          device)
        for p in precisions:
            out[f"bound_{p}"] = thin_product_bound(variants["ours"].net, cfg, flops, rates[p],
                                                   args.repeats, device, LOW_DTYPES[p])
    if args.profile and device.type == "cpu":
        profiled = (BASELINE, "autograd-loop", "ours", *(f"ours {p}" for p in precisions))
        out["profile"] = {name: profile_step(fns[name], cfg.batch, rows, library_rnn=other)
                          for name in profiled if name in variants}
    out["targets"] = targets(cfg.name, out["variants"]["ours"],
                             out["variants"].get("ours bf16"), isolated.get("bf16"))
    return out


def vrnn_reference_record(ref: Variant, ref_times: list[float], ours_times: list[float],
                          cfg: BenchConfig, rate: float) -> dict:
    """An SRNN, DMM or STORN row's reference: the VRNN's ``ours`` of the same sizes, timed in the
    same rotation; ``over_vrnn``: the row's ``ours`` time over it (ratio of medians; and
    ``paired_over_vrnn``, the median of the per-round ratios). Results written before the DMM
    and STORN rows call them ``srnn_over_vrnn`` and ``paired_srnn_over_vrnn``."""
    vcfg = cfg.as_vrnn()
    flops = training_flops(ref.net, vcfg.batch, vcfg.steps)
    ms = median(ref_times) * 1e3
    return {"sizes": asdict(vcfg), "flops_per_step": flops, "ms": ms,
            "ms_all": [t * 1e3 for t in ref_times],
            "gflops": flops["total"] / (ms / 1e3) / 1e9,
            "fraction_of_sgemm": flops["total"] / (ms / 1e3) / 1e9 / rate,
            "saved_for_backward_bytes": saved_bytes(ref.loss),
            "over_vrnn": median(ours_times) / median(ref_times),
            "paired_over_vrnn": paired_ratio(ours_times, ref_times)}


def targets(name: str, ours: dict, ours_bf16: dict | None = None,
            isolated_bf16: dict | None = None) -> dict:
    """``ours``'s figures against the config's :data:`TARGETS`: value, target, met; with
    ``ours_bf16`` (the ``ours bf16`` record) also its ``speedup_vs_fp32`` (over ``ours``, the
    ratio of medians) against :data:`BF16_TARGET`, as ``bf16_speedup_vs_fp32``; with
    ``isolated_bf16`` (the pair timed in a process of its own, without an ``error``) the same
    target for its ratio, as ``bf16_speedup_isolated``."""
    speed_target, frac_target = TARGETS.get(name, (None, None))
    out = {}
    for key, target in (("speedup_vs_per_step", speed_target),
                        ("fraction_of_sgemm", frac_target)):
        if target is not None:
            out[key] = {"value": ours[key], "target": target, "met": ours[key] >= target}
    bf16_target = BF16_TARGET.get(name)
    if ours_bf16 is not None and bf16_target is not None:
        value = ours_bf16["speedup_vs_fp32"]
        out["bf16_speedup_vs_fp32"] = {"value": value, "target": bf16_target,
                                       "met": value >= bf16_target}
        if isolated_bf16 is not None and "error" not in isolated_bf16:
            value = isolated_bf16["speedup_vs_fp32"]
            out["bf16_speedup_isolated"] = {"value": value, "target": bf16_target,
                                            "met": value >= bf16_target}
    return out


# -- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def is_with_repeat(model: VRNN, x: Tensor, num_samples: int,
                   generator: torch.Generator | None, chunk_size: int) -> Tensor:
    """IS as batched public code does it: ``model(x.repeat(c, 1, 1))``, so that phi_x and the
    products with phi_x(x_t) run once per sample, not once per sequence as in
    ``estimate_log_likelihood``. Same noise stream. Returns log p(x) estimates ``(B,)``."""
    B = x.shape[0]
    log_ws, done = [], 0
    while done < num_samples:
        c = min(chunk_size, num_samples - done)
        terms = model(x.repeat(c, 1, 1), generator=generator, sample_terms=True)
        log_ws.append(masked_sum(terms.log_px + terms.log_pz - terms.log_qz, None).view(c, B))
        done += c
    return log_mean_exp(torch.cat(log_ws))  # (B,)


def is_chunk(cfg: BenchConfig) -> int:
    """Samples per pass: the library's default (``DEFAULT_ROW_BUDGET`` rows per step,
    ``DEFAULT_STEP_BUDGET`` sequence steps per pass), the step budget scaled down for layers wider
    than 1000 so that the paper-speech size stays within memory."""
    budget = DEFAULT_STEP_BUDGET * 1000 // max(1000, cfg.hidden)
    return max(1, min(IS_SAMPLES, DEFAULT_ROW_BUDGET // cfg.batch,
                      budget // (cfg.batch * cfg.steps)))


def bench_evaluation(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """IS with S = 40 (``estimate_log_likelihood``: samples batched, phi_x shared) against one
    ELBO pass, 40 separate ELBO passes and IS over repeated sequences, all without gradients."""
    torch.manual_seed(0)
    model = VRNN(cfg.model_config()).to(device).eval()
    x, _ = make_batch(cfg, device)
    gen = torch.Generator(device=device).manual_seed(0)
    chunk = is_chunk(cfg)

    def one_pass() -> None:
        with torch.no_grad():
            model(x, generator=gen).elbo()

    def separate() -> None:
        for _ in range(IS_SAMPLES):
            one_pass()

    def is_eval() -> None:
        estimate_log_likelihood(model, x, num_samples=IS_SAMPLES, generator=gen,
                                chunk_size=chunk)

    def is_repeat() -> None:
        is_with_repeat(model, x, IS_SAMPLES, gen, chunk)

    fns = {"is_40": is_eval, "is_40_repeat": is_repeat, "elbo_pass": one_pass}
    if args.eval_separate:
        fns["elbo_40_separate"] = separate
    ts = interleaved(fns, args.eval_repeats, args.eval_warmup, sync_for(device))
    t_is, t_one = median(ts["is_40"]), median(ts["elbo_pass"])
    t_rep = median(ts["is_40_repeat"])
    t_sep = median(ts["elbo_40_separate"]) if "elbo_40_separate" in ts else IS_SAMPLES * t_one
    bound = is_flop_ratio(model)
    return {"samples": IS_SAMPLES, "samples_per_pass": chunk, "repeats": args.eval_repeats,
            "is_ms": t_is * 1e3, "elbo_pass_ms": t_one * 1e3,
            "is_repeat_ms": t_rep * 1e3, "is_repeat_over_one_pass": t_rep / t_one,
            "separate_40_ms": t_sep * 1e3, "separate_measured": "elbo_40_separate" in ts,
            "is_over_one_pass": t_is / t_one, "separate_over_is": t_sep / t_is,
            "flop_ratio": bound["ratio"], "shared_flop_share": bound["shared_share"],
            "target": IS_TARGET, "met": t_is / t_one <= IS_TARGET}


# -- generation and scaling --------------------------------------------------------------------


def bench_generation(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """``model.sample`` from the prior, ``args.gen_steps`` steps at batch 1 and 64: the fast
    sampler (the default, :mod:`vrnn.models.generation`) against the literal per-step one
    (``sample(..., literal=True)``: the step protocol's distribution objects) in one rotation, the
    speed-up their ratio of medians (and the median of the per-round ratios) against
    :data:`~vrnn.bench.configs.GENERATION_TARGET`. First the two must draw the same sequences
    from one seed (a float64 copy of the model, a few steps): else ``BenchmarkError``."""
    torch.manual_seed(0)
    model = VRNN(cfg.model_config()).to(device).eval()
    diff = generation_agreement(model)
    if diff > GENERATION_AGREEMENT_ATOL:
        raise BenchmarkError(f"{cfg.name}: the fast sampler's sequences differ from the literal "
                             f"sampler's by {diff:.2e} (float64, same seed)")
    gen = torch.Generator(device=device).manual_seed(0)
    steps = args.gen_steps
    out: dict = {"steps": steps, "agreement_max_abs_diff": diff, "target": GENERATION_TARGET}
    for num in (1, 64):
        fns = {"fast": lambda n=num: model.sample(n, steps, generator=gen),
               "literal": lambda n=num: model.sample(n, steps, generator=gen, literal=True)}
        ts = interleaved(fns, args.eval_repeats, 1, sync_for(device))
        rec = {}
        for name, t in ts.items():
            s = median(t)
            rec[name] = {"ms": s * 1e3, "ms_per_step": s * 1e3 / steps,
                         "steps_per_s": steps / s, "frames_per_s": num * steps / s}
        speedup = median(ts["literal"]) / median(ts["fast"])
        out[f"batch_{num}"] = {**rec["fast"], "steps": steps, "literal": rec["literal"],
                               "speedup_vs_literal": speedup,
                               "paired_speedup_vs_literal": paired_ratio(ts["literal"],
                                                                         ts["fast"]),
                               "met": speedup >= GENERATION_TARGET}
    return out


def generation_agreement(model: VRNN, num: int = 3, steps: int = 5) -> float:
    """The largest difference between the fast and the literal sampler's sequences from one
    seed, on a float64 copy of ``model`` (so that rounding cannot flip a discrete draw)."""
    import copy

    twin = copy.deepcopy(model).double()
    fast, literal = (twin.sample(num, steps, generator=torch.Generator(
        device=twin.initial_state.device).manual_seed(1), literal=lit) for lit in (False, True))
    return float((fast - literal).abs().max())


def bench_scaling(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """Cost per time step of the training step as T grows (B fixed) and as B grows (T fixed).
    Flat in T means no step costs more than the last: no hidden O(T) work per step."""
    sync = sync_for(device)
    out: dict = {"model": asdict(cfg), "by_steps": [], "by_batch": []}
    sizes = [("by_steps", replace(cfg, steps=v, batch=cfg.batch)) for v in args.scale_steps]
    sizes += [("by_batch", replace(cfg, batch=v, steps=args.scale_fixed_steps))
              for v in args.scale_batch]
    for key, c in sizes:
        torch.manual_seed(0)
        model = VRNN(c.model_config()).to(device)
        x, noise = make_batch(c, device)
        fn = train_step(lambda m=model, x=x, n=noise: m.loss(x, noise=n)[0],
                        make_optimizer(model.parameters()))
        s = median(interleaved({"step": fn}, args.scale_repeats, 1, sync)["step"])
        out[key].append({"steps": c.steps, "batch": c.batch, "ms": s * 1e3,
                         "ms_per_time_step": s * 1e3 / c.steps,
                         "us_per_sequence_step": s * 1e6 / (c.steps * c.batch)})
    per_step = [r["ms_per_time_step"] for r in out["by_steps"]]
    # Fixed costs (the optimiser, the batched work) make short sequences dearer per step; a
    # quadratic term would make the longest the dearest.
    out["longest_over_cheapest_per_step"] = per_step[-1] / min(per_step)
    out["flat_in_steps"] = per_step[-1] <= 1.25 * min(per_step)
    return out

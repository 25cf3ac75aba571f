"""One checkpoint evaluated on one split: what ``vrnn evaluate`` computes and prints.

:mod:`vrnn.evaluation.sequences` holds the estimators (the ELBO, the importance-sampled and the
particle-filter log-likelihood of sequences); this module puts a checkpoint's model to them on its
own data or on ``--data`` (:mod:`vrnn.commands.loading`), and formats the result for people.
"""

from __future__ import annotations

import math
from pathlib import Path

from vrnn.commands.loading import checkpoint_sequences, load_for_use
from vrnn.evaluation.sequences import ESTIMATORS, evaluate_sequences
from vrnn.evaluation.stats import format_se
from vrnn.inference.likelihood import DEFAULT_SMC_REPEATS, RESAMPLING
from vrnn.kernels.precision import PRECISIONS, check_supported
from vrnn.models.base import count_parameters

ESS_WARN_FRACTION = 0.1
"""The Monte Carlo standard error is flagged unreliable when the mean ESS is below this fraction
of S ..."""
ESS_WARN_MIN = 5.0
"""... or below this many samples: the delta method's sd is then estimated from a handful of
weights that dominate the rest, and heavy-tailed weights make it far too small."""


def ess_too_low(ess_mean: float, samples: int) -> bool:
    """Whether a mean effective sample size ``ess_mean`` of ``samples`` (S) is too low for the
    delta-method standard error to be read as such: ESS < max(5, S / 10)."""
    return ess_mean < max(ESS_WARN_MIN, ESS_WARN_FRACTION * samples)


def check_memory(model, seqs, estimator: str, samples: int, repeats: int,
                 batch_size: int) -> None:
    """Refuse, naming ``--samples`` (or ``--repeats``), an evaluation that cannot fit in the
    device's memory: the weights kept of every sample of a batch (S x B, with their ESS and
    standard error), the rows of one pass (bounded as :mod:`vrnn.inference.importance` bounds
    them), and SMC's particles of one step (:mod:`vrnn.inference.smc`)."""
    from vrnn.host.memory import FLOAT_BYTES, check_fits, floats_per_row
    from vrnn.inference.importance import DEFAULT_ROW_BUDGET, DEFAULT_STEP_BUDGET
    from vrnn.inference.smc import DEFAULT_ROW_BUDGET as SMC_ROWS

    if model.latent_dim == 0:  # an RNN: its exact likelihood draws no samples
        return
    B, T = min(batch_size, len(seqs)), max(len(s) for s in seqs)
    row = floats_per_row(model.config) * FLOAT_BYTES  # one row of one step

    def sampled(S: int) -> int:  # S importance samples of B sequences
        chunk = max(1, min(S, DEFAULT_ROW_BUDGET // B, DEFAULT_STEP_BUDGET // (B * T)))
        return 16 * FLOAT_BYTES * S * B + 3 * chunk * B * T * row

    if estimator == "smc":
        filters = min(max(1, SMC_ROWS // samples), B * repeats)  # per pass
        particles, elbo = 4 * filters * samples * row, sampled(repeats)  # + R posterior draws
        flag = f"--samples {samples}" if particles >= elbo else f"--repeats {repeats}"
        need, why = particles + elbo, (f"{filters} particle filter(s) of {samples} particles "
                                       f"at a time, {repeats} per sequence")
    else:
        flag, need = f"--samples {samples}", sampled(samples)
        why = f"importance sampling {B} sequences at a time, {samples} samples each"
    check_fits(need, model.initial_state.device, flag, why,
               "use fewer --samples (the paper's 40) or --repeats, or a smaller --batch-size")


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, split: str = "test",
                        samples: int = 40, batch_size: int = 32, max_sequences: int = 0,
                        seed: int = 0, device: str = "auto", skip_bad: bool = False,
                        estimator: str = "is", repeats: int = DEFAULT_SMC_REPEATS,
                        precision: str = "fp32", resampling: str | None = None) -> dict:
    """The paper's numbers for one checkpoint on one split (``vrnn evaluate``).

    Args:
        path: a checkpoint file.
        data: the data set to read the split from; default the checkpoint's own (see
            :func:`vrnn.commands.loading.checkpoint_sequences` for how other data is read).
        samples: importance samples S per sequence (the paper's 40), or with ``estimator="smc"``
            particles per filter.
        max_sequences: evaluate the first N sequences of the split only (0: all).
        estimator: "is" (importance sampling) or "smc" (a particle filter,
        :mod:`vrnn.inference.smc`).
        repeats: SMC: independent filters per sequence, for its standard error (R * S
            trajectories in all).
        precision: ``--precision``: "fp32" (the reference, default) or "bf16" (the products
            in bfloat16; refused, naming the flag, where the device lacks native bf16).
        resampling: ``--resampling``: SMC's ancestors, "multinomial" (default with smc) or
            "systematic"; refused with ``estimator="is"``, which does not resample.

    Returns:
        plain values: what was evaluated (model, data, split, checkpoint, step, parameters),
        ``skipped`` (the bad sequences or files ``--skip-bad`` left out, 'name: problem') and
        ``sequences_in_split`` (evaluated or not, skipped included; None where some skipped
        ones cannot be placed in a split), :meth:`EvaluationResult.summary` (with
        ``ess_mean``, ``ess_min``; SMC: ``repeats``, ``resamples_mean``, and with R > 1
        ``log_spread_mean``, ``log_range_mean``, ``log_range_max`` and ``repeats_disagree``,
        the sequences whose filters disagree by more than their se says:
        :func:`vrnn.evaluation.sequences.filters_disagree`), and ``per_sequence`` ELBO,
        log-likelihood, Monte Carlo standard error (None for one sample or filter: nothing to
        measure) and ESS lists (SMC: and resampling counts; with R > 1 the sd and range of the
        R log-estimates, ``log_spread`` and ``log_range``). Text: ``bits_per_character``, the
        negative log-likelihood per step in bits (-log_likelihood_per_step / ln 2; an upper
        bound for a latent model, whose log-likelihood is an estimate from below), and
        ``neg_elbo_bits_per_character``, the same from the ELBO.
    """
    for flag, value, least in (("--samples", samples, 1), ("--batch-size", batch_size, 1),
                               ("--max-sequences", max_sequences, 0), ("--repeats", repeats, 1)):
        if value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if resampling is not None and estimator != "smc":
        raise ValueError(f"--resampling applies to --estimator smc (importance sampling does "
                         f"not resample), got --estimator {estimator}")
    if resampling is not None and resampling not in RESAMPLING:
        raise ValueError(f"--resampling must be one of {', '.join(RESAMPLING)}, got "
                         f"{resampling!r}")
    if estimator == "smc" and resampling is None:
        resampling = "multinomial"
    ckpt, model, info = load_for_use(path, device)
    check_supported(precision, model.initial_state.device, "vrnn evaluate")
    name, seqs, skipped, in_split = checkpoint_sequences(ckpt, info, data, split, max_sequences,
                                                         skip_bad=skip_bad)
    check_memory(model, seqs, estimator, samples, repeats, batch_size)
    res = evaluate_sequences(model, seqs, batch_size=batch_size, num_samples=samples,
                             frame_size=info.frame_size if info.kind == "audio" else None,
                             seed=seed, estimator=estimator, repeats=repeats,
                             precision=precision, resampling=resampling or "multinomial")
    per_sequence = {"elbo": res.elbo.tolist(), "log_likelihood": res.log_likelihood.tolist(),
                    "stderr": ([None] * len(seqs) if res.single_weight
                               else res.is_stderr.tolist()),
                    "ess_mean": res.ess_mean.tolist(), "ess_min": res.ess_min.tolist()}
    if res.resamples is not None:
        per_sequence["resamples"] = res.resamples.tolist()
    if res.log_spread is not None:  # SMC, R > 1: the R filters' log-estimates, sd and range
        per_sequence["log_spread"] = res.log_spread.tolist()
        per_sequence["log_range"] = res.log_range.tolist()
    summary = res.summary()
    if info.kind == "text":
        summary["bits_per_character"] = -summary["log_likelihood_per_step"] / math.log(2.0)
        summary["neg_elbo_bits_per_character"] = -summary["elbo_per_step"] / math.log(2.0)
    return {"model": (ckpt.get("train_config") or {}).get("model") or model.config.name,
            "name": model.config.name, "latent": res.estimator != "exact", "data": name,
            "split": split, "skipped": skipped, "sequences_in_split": in_split,
            "checkpoint": str(path), "step": ckpt.get("step"),
            "n_parameters": count_parameters(model), "precision": precision,
            **({"resampling": resampling} if estimator == "smc" else {}), **summary,
            "per_sequence": per_sequence}


def _estimator_lines(r: dict) -> list[str]:
    """The estimator's own error for people: ESS and the Monte Carlo standard error per
    sequence, and a warning where the ESS is too low for that error to be trusted."""
    if r.get("ess_mean") is None:
        return []
    S = r["num_samples"]
    se = r.get("is_stderr_mean")
    smc = r.get("estimator") == "smc"
    if se is None:  # one weight per sequence: no spread to measure (never a 0.00)
        error = ("Monte Carlo se n/a (one filter per sequence: --repeats 2 or more measure it)"
                 if smc else "Monte Carlo se n/a (one sample per sequence)")
    else:
        error = (f"Monte Carlo se {se:.2f} per sequence (delta method"
                 + (f" over the {r['repeats']} filters)" if smc else ")"))
    if "log_spread_mean" in r:  # SMC, R > 1: the R log-estimates beside their se
        error += (f"; the filters' log-estimates: sd {r['log_spread_mean']:.2f}, max - min "
                  f"{r['log_range_mean']:.2f} nats (means over sequences)")
    if smc:
        lines = [f"  ESS per step {r['ess_mean']:.1f} of {S} particles (min "
                 f"{r['ess_min']:.1f}), {r.get('resamples_mean', 0.0):.1f} resamplings per filter",
                 f"  {error}"]
    else:
        lines = [f"  ESS {r['ess_mean']:.1f} of {S} samples (min {r['ess_min']:.1f}); {error}"]
    if ess_too_low(r["ess_mean"], S):
        lines.append(f"  warning: mean ESS < {max(ESS_WARN_MIN, ESS_WARN_FRACTION * S):g}: the "
                     f"Monte Carlo se is unreliable (too small); log p(x) may be well above "
                     f"the estimate")
    if r.get("repeats_disagree"):
        lines.append(f"  warning: on {r['repeats_disagree']} of {r['n_sequences']} sequences the "
                     f"{r['repeats']} filters' log-estimates disagree by more than the se says "
                     f"(max - min up to {r['log_range_max']:.1f} nats; an se near its ceiling "
                     f"of 1 means one filter carried the estimate): the Monte Carlo se is "
                     f"unreliable (too small); more particles (--samples) bring the filters "
                     f"together")
    return lines


def _sequences(r: dict) -> str:
    """How many sequences were evaluated, and of how many where ``--skip-bad`` left some out."""
    n, skipped = r["n_sequences"], r.get("skipped") or []
    if not skipped:
        return f"{n} sequences"
    if r.get("sequences_in_split") is not None:
        return f"{n} of {r['sequences_in_split']} sequences, {len(skipped)} bad ones skipped"
    return f"{n} sequences, {len(skipped)} bad sequences or files of the data skipped"


def format_evaluation(result: dict) -> str:
    """:func:`evaluate_checkpoint`'s result for people: ``>=`` the ELBO, ``~`` the importance-
    sampled or SMC estimate (``=`` for an RNN's exact likelihood), +- the standard error over
    sequences; then the estimator's effective sample size and own standard error, flagged where
    the ESS is below max(5, S / 10) (:func:`ess_too_low`); per step; and for text the bits per
    character (an RNN's exact, a latent model's at most the printed value)."""
    r = result
    lines = [f"{r['name']} on {r['data']} ({r['split']}, {_sequences(r)}, step {r['step']}); "
             f"nats per sequence, +- standard error over sequences"]
    se = format_se(r["log_likelihood_stderr"], 2)
    if r["latent"]:
        how = (f"SMC, {r['repeats']} filters x {r['num_samples']} particles"
               + (f", {r['resampling']} resampling" if "resampling" in r else "")
               if r.get("estimator") == "smc" else f"importance sampling, S={r['num_samples']}")
        lines += [f"  ELBO            >= {r['elbo']:.2f} +- {format_se(r['elbo_stderr'], 2)}",
                  f"  log-likelihood  ~  {r['log_likelihood']:.2f} +- {se}  ({how})",
                  *_estimator_lines(r)]
    else:
        lines.append(f"  log-likelihood  =  {r['log_likelihood']:.2f} +- {se} (exact)")
    lines.append(f"  per step: {r['log_likelihood_per_step']:.4f}")
    if "bits_per_character" in r:  # lower is better
        if r["latent"]:
            lines.append(f"  bits per character: <= {r['bits_per_character']:.4f} (from the "
                         f"log-likelihood estimate; from the ELBO "
                         f"{r['neg_elbo_bits_per_character']:.4f})")
        else:
            lines.append(f"  bits per character: {r['bits_per_character']:.4f} (exact)")
    if "log_likelihood_per_sample" in r:
        lines.append(f"  per audio sample: {r['log_likelihood_per_sample']:.4f} nats, "
                     f"negative log-likelihood {r['nll_bits_per_sample']:.4f} bits")
    if r.get("precision", "fp32") != "fp32":
        lines.append(f"  products in {r['precision']} (--precision {r['precision']}): fp32, the "
                     f"default, is the reference")
    return "\n".join(lines)

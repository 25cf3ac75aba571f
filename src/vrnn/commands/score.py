"""``vrnn score``: log p(x_t | x_{<t}) at every step of a split, as a CSV file.

The figures are :meth:`vrnn.models.base.SequenceModel.score`'s over the sequences of
:func:`vrnn.evaluation.scores.score_sequences`; this module picks the checkpoint, the data and the
file, and says what the figures are for people. One row per valid step (padding gives none):

    sequence,step,log_p,ess,kl

``sequence``: the sequence's index in the split (as ``vrnn analyse --index`` and the
``per_sequence`` lists of ``vrnn evaluate --json``), ``step``: t from 0, ``log_p``: log p(x_t |
x_{<t}) in nats (exact for an RNN, else one particle filter's estimate), ``ess``: the step's
effective sample size (1 to ``--samples``; 1 for an RNN), ``kl``: KL(q(z_t | .) || p(z_t | .)) in
nats, averaged over the particles under the weights they carry into the step (0 for an RNN).
The units are those of ``vrnn evaluate`` (the data as the checkpoint reads it; a model fitted by
:func:`vrnn.fit` answers in its own data's units): a sequence's rows sum to one particle filter's
estimate of the log-likelihood that ``vrnn evaluate --estimator smc`` reports for it as the mean
of ``--repeats`` filters.
"""

from __future__ import annotations

from pathlib import Path

from vrnn.commands.evaluate import ess_too_low

COLUMNS = ("sequence", "step", "log_p", "ess", "kl")
"""The CSV's columns, in order."""
LOWEST = 5
"""How many of the lowest-scoring steps the summary names."""


def scores_csv(scores) -> str:
    """The rows of a :class:`vrnn.evaluation.scores.SequenceScores` as CSV text, a header of
    :data:`COLUMNS` first; floats with 10 significant digits."""
    lines = [",".join(COLUMNS)]
    lines += [f"{i},{t},{lp:.10g},{ess:.10g},{kl:.10g}" for i, t, lp, ess, kl in scores.rows()]
    return "\n".join(lines) + "\n"


def check_memory(model, seqs, samples: int, batch_size: int) -> None:
    """Refuse, naming ``--samples``, a scoring that cannot fit in the device's memory: the
    particles of one pass of the filter (:func:`vrnn.inference.smc.smc_step_scores`, as
    :func:`vrnn.commands.evaluate.check_memory` counts a filter's) and the per-step figures of
    a batch."""
    from vrnn.host.memory import FLOAT_BYTES, check_fits, floats_per_row
    from vrnn.inference.smc import DEFAULT_ROW_BUDGET

    if model.latent_dim == 0:  # an RNN: exact, no particles
        return
    B, T = min(batch_size, len(seqs)), max(len(s) for s in seqs)
    filters = min(max(1, DEFAULT_ROW_BUDGET // samples), B)  # sequences per pass
    need = (4 * filters * samples * floats_per_row(model.config) * FLOAT_BYTES
            + 8 * B * T * FLOAT_BYTES)
    check_fits(need, model.initial_state.device, f"--samples {samples}",
               f"{filters} particle filter(s) of {samples} particles at a time",
               "use fewer --samples (40 is the default), or a smaller --batch-size")


def score_checkpoint(path: str | Path, *, data: str | None = None, split: str = "test",
                     samples: int = 40, batch_size: int = 32, max_sequences: int = 0,
                     seed: int = 0, device: str = "auto", skip_bad: bool = False,
                     out: str | Path | None = None, overwrite: bool = False) -> dict:
    """Write the per-step scores of ``split`` of ``data`` to ``out`` (``vrnn score``).

    Args:
        path: a checkpoint file.
        data, split, skip_bad, max_sequences: which sequences
            (:func:`vrnn.commands.loading.checkpoint_sequences`; ``max_sequences`` 0: all).
        samples: the particles of the one filter per sequence (a model without latent
            variables answers exactly and draws none).
        seed: seed of the particles.
        out: the CSV to write; default ``scores.csv`` beside the checkpoint.
        overwrite: replace an existing ``out`` (refused without, before any work).

    Returns:
        plain values: what was scored (model, data, split, checkpoint, step, ``skipped``),
        ``out``, ``method`` ("smc" or "exact"), ``num_samples``, ``n_sequences``, ``n_steps``,
        ``log_p_per_step`` (nats, the mean over the steps), ``ess_mean`` and ``ess_min`` over the
        steps, ``low_ess_steps`` (steps whose ESS is below max(5, K / 10)), ``frame_size``
        (audio: samples per step, else None) and ``lowest``: the :data:`LOWEST` lowest-scoring
        steps as ``{"sequence", "step", "log_p", "ess"}``.
    """
    import numpy as np

    from vrnn.commands.loading import checkpoint_sequences, load_for_use
    from vrnn.evaluation.scores import score_sequences
    from vrnn.host.files import WriteError, check_folder, refuse_existing, write_text

    for flag, value, least in (("--samples", samples, 1), ("--batch-size", batch_size, 1),
                               ("--max-sequences", max_sequences, 0)):
        if value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    csv = Path(out) if out else Path(path).parent / "scores.csv"
    if csv.is_dir():
        raise WriteError(f"--out {csv} is a folder, not a file")
    ckpt, model, info = load_for_use(path, device)
    check_folder(csv.parent, "--out")
    refuse_existing([csv], "--out", overwrite)  # before the work, not after it
    name, seqs, skipped, _ = checkpoint_sequences(ckpt, info, data, split, max_sequences,
                                                  skip_bad=skip_bad)
    check_memory(model, seqs, samples, batch_size)
    scores = score_sequences(model, seqs, batch_size=batch_size, num_samples=samples, seed=seed)
    write_text(csv, scores_csv(scores), overwrite=overwrite, flag="--out")
    log_p, ess = np.concatenate(scores.log_p), np.concatenate(scores.ess)
    where = [(i, t) for i, n in enumerate(scores.lengths) for t in range(n)]
    lowest = [{"sequence": where[j][0], "step": where[j][1], "log_p": float(log_p[j]),
               "ess": float(ess[j])} for j in np.argsort(log_p, kind="stable")[:LOWEST]]
    K = scores.num_samples
    return {"model": (ckpt.get("train_config") or {}).get("model") or model.config.name,
            "name": model.config.name, "data": name, "split": split, "skipped": skipped,
            "checkpoint": str(path), "step": ckpt.get("step"), "out": str(csv),
            "method": scores.method, "num_samples": K, "n_sequences": len(seqs),
            "n_steps": int(len(log_p)), "log_p_per_step": float(log_p.mean()),
            "ess_mean": float(ess.mean()), "ess_min": float(ess.min()),
            "low_ess_steps": int(sum(ess_too_low(float(e), K) for e in ess))
            if scores.method == "smc" else 0,
            "frame_size": info.frame_size if info.kind == "audio" else None, "lowest": lowest}


def format_scores(r: dict) -> str:
    """:func:`score_checkpoint`'s result for people: what was written, in which units, the ESS
    and a warning where it is low, and the lowest-scoring steps."""
    per = f" (one step = {r['frame_size']} audio samples)" if r.get("frame_size") else ""
    trained = f"; checkpoint step {r['step']}" if r.get("step") is not None else ""
    lines = [f"{r['name']} on {r['data']} ({r['split']}, {r['n_sequences']} sequences, "
             f"{r['n_steps']} steps{per}{trained})",
             f"  wrote {r['out']}: {', '.join(COLUMNS)}; one row per step, log p(x_t | x_<t) and "
             f"KL in nats per step, the units of vrnn evaluate"]
    if r["method"] == "exact":
        lines.append(f"  log p per step: mean {r['log_p_per_step']:.4f} nats (exact)")
    else:
        K = r["num_samples"]
        lines += [f"  log p per step: mean {r['log_p_per_step']:.4f} nats (one particle filter "
                  f"of {K} particles per sequence; a sequence's rows sum to its estimate)",
                  f"  ESS per step {r['ess_mean']:.1f} of {K} particles (min {r['ess_min']:.1f})"]
        if r["low_ess_steps"]:
            lines.append(f"  warning: {r['low_ess_steps']} of {r['n_steps']} steps have an ESS "
                         f"below {max(5.0, 0.1 * K):g}: their log p rests on a handful of "
                         f"particles; rerun with more --samples or another --seed before "
                         f"reading them")
    lows = "; ".join(f"sequence {s['sequence']} step {s['step']}: {s['log_p']:.2f}"
                     + (f" (ESS {s['ess']:.1f})" if r["method"] == "smc" else "")
                     for s in r["lowest"])
    lines.append(f"  lowest log p: {lows}")
    return "\n".join(lines)

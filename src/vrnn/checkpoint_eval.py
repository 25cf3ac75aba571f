"""One checkpoint evaluated on one split: what ``vrnn evaluate`` computes and prints.

:mod:`vrnn.evaluate` holds the estimators (the ELBO and the importance-sampled log-likelihood of
sequences); this module puts a checkpoint's model to them on its own data or on ``--data``
(:mod:`vrnn.checkpoint_data`), and formats the result for people.
"""

from __future__ import annotations

from pathlib import Path

from vrnn.checkpoint_data import checkpoint_sequences, load_for_use
from vrnn.evaluate import evaluate_sequences
from vrnn.model import count_parameters
from vrnn.report import format_se


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, split: str = "test",
                        samples: int = 40, batch_size: int = 32, max_sequences: int = 0,
                        seed: int = 0, device: str = "auto", skip_bad: bool = False) -> dict:
    """The paper's numbers for one checkpoint on one split (``vrnn evaluate``).

    Args:
        path: a checkpoint file.
        data: the data set to read the split from; default the checkpoint's own (see
            :func:`vrnn.checkpoint_data.checkpoint_sequences` for how other data is read).
        samples: importance samples S per sequence (the paper's 40).
        max_sequences: evaluate the first N sequences of the split only (0: all).

    Returns:
        plain values: what was evaluated (model, data, split, checkpoint, step, parameters),
        :meth:`EvaluationResult.summary`, and ``per_sequence`` ELBO and log-likelihood lists.
    """
    for flag, value, least in (("--samples", samples, 1), ("--batch-size", batch_size, 1),
                               ("--max-sequences", max_sequences, 0)):
        if value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    ckpt, model, info = load_for_use(path, device)
    name, seqs = checkpoint_sequences(ckpt, info, data, split, max_sequences, skip_bad=skip_bad)
    res = evaluate_sequences(model, seqs, batch_size=batch_size, num_samples=samples,
                             frame_size=info.frame_size if info.kind == "audio" else None,
                             seed=seed)
    return {"model": (ckpt.get("train_config") or {}).get("model") or model.config.name,
            "name": model.config.name, "latent": model.is_latent, "data": name, "split": split,
            "checkpoint": str(path), "step": ckpt.get("step"),
            "n_parameters": count_parameters(model), **res.summary(),
            "per_sequence": {"elbo": res.elbo.tolist(),
                             "log_likelihood": res.log_likelihood.tolist()}}


def format_evaluation(result: dict) -> str:
    """:func:`evaluate_checkpoint`'s result for people: ``>=`` the ELBO, ``~`` the importance-
    sampled estimate (``=`` for an RNN's exact likelihood), +- the standard error over
    sequences."""
    r = result
    lines = [f"{r['name']} on {r['data']} ({r['split']}, {r['n_sequences']} sequences, "
             f"step {r['step']}); nats per sequence, +- standard error over sequences"]
    se = format_se(r["log_likelihood_stderr"], 2)
    if r["latent"]:
        lines += [f"  ELBO            >= {r['elbo']:.2f} +- {format_se(r['elbo_stderr'], 2)}",
                  f"  log-likelihood  ~  {r['log_likelihood']:.2f} +- {se}"
                  f"  (importance sampling, S={r['num_samples']})"]
    else:
        lines.append(f"  log-likelihood  =  {r['log_likelihood']:.2f} +- {se} (exact)")
    lines.append(f"  per step: {r['log_likelihood_per_step']:.4f}")
    if "log_likelihood_per_sample" in r:
        lines.append(f"  per audio sample: {r['log_likelihood_per_sample']:.4f} nats, "
                     f"negative log-likelihood {r['nll_bits_per_sample']:.4f} bits")
    return "\n".join(lines)

"""``vrnn reproduce``: the paper's comparison (Table 1, Figures 2 to 4) on data that installs with
the project.

For one data set it trains the five models of Table 1 (RNN-Gauss, RNN-GMM, VRNN-I-Gauss,
VRNN-Gauss, VRNN-GMM; for binary data the Bernoulli RNN, VRNN-I and VRNN) at one preset, with
parameter counts matched as in the paper, the same data, splits, optimiser, batch size and
training-time budget each, keeps the checkpoint with the best validation bound (early stopping),
and evaluates it on the whole test split: the exact log-likelihood for an RNN, the ELBO and the
S-sample importance-sampled estimate for a VRNN, per sequence, with standard errors.

It resumes where it stopped: each model's run folder holds ``last.pt`` and the time budget counts
the time already spent (``TrainConfig.max_minutes``), and test evaluations are cached by the
checkpoint they came from. So a study can run in pieces::

    vrnn reproduce --data handwriting --budget-minutes 20      # stop it any time, run it again

Ctrl-C (or SIGTERM) stops the study where it is (:mod:`vrnn.study.interrupt`): the model in
training saves ``last.pt`` as ``vrnn train`` does, nothing more is trained, evaluated or reported,
and the command exits 130 (143) naming the command that resumes it.

What it writes: ``<out>/<model>/`` (the runs), ``<out>/results.json`` (every per-sequence number),
and in ``--docs`` (default ``docs/``): a section of ``RESULTS.md`` for the data set (the table in
Table 1's layout, the claims with their paired standard errors, the settings and the exact
command) and the figures ``<data>_fig2_kl.png``, ``<data>_fig3_waveforms.png`` (+ WAV files),
``<data>_fig4_samples.png`` and ``<data>_learning_curves.png``.

``--study srnn`` runs the SRNN paper's comparison (Fraccaro et al. 2016) instead: five entries,
each trained and evaluated as above (:data:`SRNN_STUDY`): the SRNN with the smoothing posterior
and Res_q, without Res_q, and with the filtering posterior (``srnn-gauss``,
``srnn-gauss-no-res-q``, ``srnn-gauss-filtering``), beside the VRNN with its filtering posterior
and with a smoothing one (``vrnn-gauss``, ``vrnn-gauss-smoothing``); ``-bernoulli`` for binary
data. The study acts as the tag ``srnn``: its runs go to ``runs/reproduce/<data>-srnn/<key>``,
its section of ``RESULTS.md`` is ``<data>-srnn`` (with ``--tag X``: ``<data>-srnn-X``), and it
judges the SRNN paper's claims (SRNN above VRNN, smoothing above filtering, Res_q above plain)
with the same paired test, beside the SRNN paper's own numbers. Its only figure is
``<data>-srnn_learning_curves.png`` (Figures 2 to 4 and the KL statistics are the VRNN paper's).

``--study objectives`` trains the VRNN with each objective of ``vrnn train --objective``, at the
same budget (:data:`vrnn.study.studies.OBJECTIVES_STUDY`'s entries): VRNN-Gauss and VRNN-GMM with
the ELBO, IWAE (K = 4), FIVO (K = 4) and the ELBO with free bits (1 nat per step), beside RNN-Gauss
and RNN-GMM (for binary data: VRNN-Bernoulli and RNN-Bernoulli). It acts as the tag ``objectives``
and judges whether each objective trains a better model than the ELBO and whether any VRNN rises
above the RNNs.

Every study evaluates each latent model twice, with the same S: by importance sampling of whole
trajectories (the paper's estimate) and by a particle filter that resamples on a low effective
sample size (``--smc-repeats`` filters per sequence; 0 leaves it out), and reports both with
their effective sample sizes (mean and minimum), the KL per step on the test split, and the
claims judged by each estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import time
from pathlib import Path
from signal import SIGINT

import numpy as np
import torch

from vrnn.host.files import check_folder, write_text
from vrnn.study.figures import make_figures
from vrnn.study.interrupt import StudyInterrupted, stop_on_signals
from vrnn.study.studies import SRNN_PAPER, STUDIES, Entry, study_claims, study_entries
from vrnn.study.tables import ModelResult, format_cell, format_se, format_table, paired_gap

STUDY_DATA = ("speech", "speech-multi", "handwriting", "chorales", "text")
DEFAULT_BATCH = {"audio": 32, "strokes": 20, "binary": 20, "text": 32}
"""Sequences per update (the paper: 128 for speech, 20 for handwriting; 32 keeps two CPU cores
busy at the small preset; text: 32 windows of characters)."""
TRAIN_FIELDS = ("data", "preset", "max_steps", "seed", "lr", "batch_size", "kl_anneal_steps",
                "val_interval", "patience", "budget_clock", "device", "progress")
"""The :class:`~vrnn.train.config.TrainConfig` fields a study takes as flags, for every model."""
TRAIN_DEFAULTS = {"max_steps": 100_000, "batch_size": None, "val_interval": 100, "patience": 10,
                  "budget_clock": "cpu"}
"""A study's defaults where they differ from ``vrnn train``'s: the time budget decides when a
model stops (``--max-steps`` only caps it), early stopping is on, the budget counts CPU time
(fair when the machine is shared; run with OMP_NUM_THREADS=1), and the batch depends on the
data's kind (:data:`DEFAULT_BATCH`)."""
SMC_REPEATS = 4
"""``--smc-repeats`` by default: independent particle filters per test sequence (its standard
error comes from their spread)."""


def study_tag(args: argparse.Namespace) -> str:
    """The study's tag: ``--tag``, after the study's name for a study other than ``paper``."""
    study = getattr(args, "study", "paper")
    return "-".join(t for t in (study if study != "paper" else "", args.tag) if t)


def study_stem(data: str, tag: str = "") -> str:
    """The study's name in file names and RESULTS.md: the data's stem, plus ``-<tag>``."""
    from vrnn.train.config import data_stem

    return data_stem(data) + (f"-{tag}" if tag else "")


def _amend_help(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    for action in parser._actions:
        if action.dest == dest:
            action.help = f"{action.help} {text}"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The flags of ``vrnn reproduce``: the study's own, then the training flags every model of
    the study shares (declared once, in :class:`~vrnn.train.config.TrainConfig`)."""
    from vrnn.train.config import add_train_flags

    p = p or argparse.ArgumentParser(prog="vrnn reproduce", description=__doc__.split("\n\n")[0])
    add_train_flags(p, only=("data",), required=("data",))
    _amend_help(p, "data", f"The studies of docs/RESULTS.md: {', '.join(STUDY_DATA)}.")
    p.add_argument("--study", choices=STUDIES, default="paper",
                   help="paper: the VRNN paper's Table 1 (default); srnn: the SRNN paper's "
                        "comparison (SRNN with smoothing + Res_q, smoothing, filtering; VRNN "
                        "with filtering, smoothing); objectives: VRNN-Gauss and VRNN-GMM "
                        "trained with elbo, iwae K=4, fivo K=4 and free bits, beside RNN-Gauss "
                        "and RNN-GMM. A study other than paper acts as a tag: its runs and its "
                        "section of RESULTS.md are <data>-<study>[-<tag>]")
    p.add_argument("--budget-minutes", type=float, default=20.0,
                   help="training time per model in minutes, counted across resumes (default 20)")
    p.add_argument("--models", default=None,
                   help="comma-separated subset of the study's models (default all of them), "
                        "by key: for --study srnn srnn-gauss, srnn-gauss-no-res-q, "
                        "srnn-gauss-filtering, vrnn-gauss, vrnn-gauss-smoothing (-bernoulli for "
                        "binary data); for --study objectives rnn-gauss, rnn-gmm and vrnn-gauss, "
                        "vrnn-gmm with nothing, -iwae, -fivo or -free-bits after them")
    p.add_argument("--samples", type=int, default=40,
                   help="importance samples per test sequence (default 40, as the paper), and "
                        "particles per filter of the SMC estimate")
    p.add_argument("--smc-repeats", type=int, default=SMC_REPEATS,
                   help=f"particle filters per test sequence for the SMC estimate of each latent "
                        f"model (default {SMC_REPEATS}; 0: importance sampling only)")
    p.add_argument("--max-test", type=int, default=0,
                   help="evaluate at most N test sequences (default 0: all)")
    p.add_argument("--tag", default="",
                   help="name a variant of the study (e.g. kl-anneal): its runs and its section "
                        "of RESULTS.md are kept apart from the main study's (with --study S: "
                        "<data>-S-<tag>)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="default runs/reproduce/<data>[-<study>][-<tag>]")
    p.add_argument("--docs", default="docs", metavar="DIR",
                   help="where RESULTS.md and the figures go (default docs)")
    p.add_argument("--eval-only", action="store_true",
                   help="do not train: evaluate and report the checkpoints that exist")
    group = p.add_argument_group("training, the same for every model (as vrnn train)")
    add_train_flags(group, only=[f for f in TRAIN_FIELDS if f != "data"],
                    defaults=TRAIN_DEFAULTS)
    _amend_help(p, "batch_size", "Here the default is 32 for audio and text, 20 for strokes and "
                                 "binary.")
    _amend_help(p, "max_steps", "Here a cap per model: the budget decides.")
    _amend_help(p, "budget_clock", "Here it is what --budget-minutes counts.")
    return p


def command_line(args: argparse.Namespace) -> str:
    """The ``vrnn reproduce`` command that makes this study: every flag not at its default
    (``--eval-only`` left out: it rewrites the report of the runs the rest of the command made).
    """
    parser = build_parser()
    defaults = parser.parse_args(["--data", args.data])
    parts = ["vrnn", "reproduce", "--data", args.data]
    for action in parser._actions:
        key = action.dest
        if not action.option_strings or key in ("help", "data", "eval_only"):
            continue
        value = getattr(args, key, None)
        if value != getattr(defaults, key):
            flag = action.option_strings[0]
            parts += [flag] if action.nargs == 0 else [flag, str(value)]
    return shlex.join(parts)


# -- the study ---------------------------------------------------------------------------------

def _check_study_flags(args: argparse.Namespace) -> None:
    for flag, value, ok in (("--budget-minutes", args.budget_minutes, args.budget_minutes > 0),
                            ("--samples", args.samples, args.samples >= 1),
                            ("--smc-repeats", args.smc_repeats, args.smc_repeats >= 0),
                            ("--max-test", args.max_test, args.max_test >= 0),
                            ("--max-steps", args.max_steps, args.max_steps >= 1)):
        if not ok:
            raise ValueError(f"{flag} must be positive, got {value}")
    if args.tag and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.tag):
        raise ValueError(f"--tag names files: use letters, digits, '_', '.' or '-', got "
                         f"{args.tag!r}")


def select_entries(args: argparse.Namespace, kind: str) -> tuple[Entry, ...]:
    """The entries of ``--study`` that ``--models`` selects (all of them by default)."""
    study = study_entries(getattr(args, "study", "paper"), kind)
    if not args.models:
        return study
    by_key = {e.key: e for e in study}
    keys = tuple(m.strip() for m in args.models.split(","))
    unknown = [m for m in keys if m not in by_key]
    if unknown:
        what = ("the study" if getattr(args, "study", "paper") == "paper"
                else f"--study {args.study}")
        raise ValueError(f"--models: {', '.join(unknown)} not in {what} for {kind} data "
                         f"({', '.join(by_key)})")
    return tuple(by_key[k] for k in keys)


def study_out(args: argparse.Namespace) -> Path:
    """``--out``, by default ``runs/reproduce/<stem>``."""
    return Path(args.out) if args.out else Path("runs") / "reproduce" / study_stem(
        args.data, study_tag(args))


def train_configs(args: argparse.Namespace, kind: str, out: Path | None = None) -> dict:
    """{key: the :class:`~vrnn.train.config.TrainConfig` that trains it}: the study's shared
    settings, the entry's --model, --posterior, --res-q and its own fields (--objective, ...),
    run folder ``<out>/<key>``, resumed where it stopped and stopped at ``--budget-minutes`` in
    total (what ``vrnn train ... --out <out>/<key> --resume auto --max-minutes <budget>
    --no-tensorboard`` gives)."""
    from vrnn.train.config import TrainConfig

    out = study_out(args) if out is None else out
    settings = {k: getattr(args, k) for k in TRAIN_FIELDS}
    settings["batch_size"] = args.batch_size or DEFAULT_BATCH.get(kind, 32)
    return {e.key: TrainConfig(**settings, model=e.model, posterior=e.posterior, res_q=e.res_q,
                               out_dir=str(out / e.key), resume="auto",
                               max_minutes=args.budget_minutes, tensorboard=False,
                               **dict(e.train))
            for e in select_entries(args, kind)}


def run_study(args: argparse.Namespace) -> dict:
    """Train (or resume) and evaluate every model of the study, then write the report.

    ``args``: the flags of :func:`build_parser`. Returns {model: its record in results.json}
    (keyed by the entry's key: :func:`study_entries`).
    """
    from vrnn.data import load_dataset
    from vrnn.train.loop import train

    _check_study_flags(args)
    study = getattr(args, "study", "paper")
    ds = load_dataset(args.data)
    info = ds.info
    entries = select_entries(args, info.kind)
    out = check_folder(study_out(args), "--out")
    configs = train_configs(args, info.kind, out)
    test = ds.test[:args.max_test] if args.max_test else ds.test
    if not test:
        raise ValueError(f"--data {args.data}: the test split is empty")
    results_path = out / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.exists() else {}
    if saved and saved.get("study", "paper") != study:
        raise ValueError(f"--out {out} holds the results of --study {saved.get('study', 'paper')}"
                         f", not --study {study}: choose another --out")
    records: dict[str, dict] = saved.get("models", {})

    doing = ["starting"]  # what the study is at, for the message of a signal
    try:
        with stop_on_signals():  # a model's training stops on its own, saved (vrnn train's)
            for entry in entries:
                name = entry.key
                run_dir = out / name
                if not args.eval_only:
                    doing[0] = f"training {name}"
                    print(f"\n[{name}] training at preset {args.preset}, budget "
                          f"{args.budget_minutes:g} min (resumes from {run_dir / 'last.pt'} "
                          f"when present)")
                    res = train(configs[name], dataset=ds)
                    print(f"[{name}] {res.stopped} at step {res.step}")
                    if res.stopped == "interrupted":  # not evaluated, not reported
                        raise StudyInterrupted(f"at step {res.step}, saved in "
                                               f"{res.last_checkpoint}", res.signal or SIGINT)
                best = run_dir / "best.pt"
                if not best.exists():
                    print(f"[{name}] no checkpoint in {run_dir}: skipped")
                    continue
                doing[0] = f"evaluating {name}"
                records[name] = _evaluate(entry, best, test, records.get(name), args, info)
                head = ({"data": args.data} if study == "paper"
                        else {"data": args.data, "study": study})
                write_text(results_path, json.dumps({**head, "models": records}, indent=1))

            if not records:
                raise ValueError(f"no trained model in {out}: run without --eval-only first")
            doing[0] = "writing the report"
            report = write_report(args, info, ds, out, records, command=command_line(args))
    except StudyInterrupted as e:
        raise StudyInterrupted(_interrupted(e, doing[0], args), e.signum) from None
    print(f"\nwrote {report}")
    return records


def _interrupted(e: StudyInterrupted, doing: str, args: argparse.Namespace) -> str:
    """What a study stopped by a signal says: where it stopped, that it wrote no report, and the
    command that resumes it (the trained models and the evaluations done are kept)."""
    what = f"stopped by {e.signal_name} while {doing}" + (f" ({e})" if str(e) else "")
    report = ("the report may be incomplete" if doing == "writing the report" else
              f"no report written ({Path(args.docs) / 'RESULTS.md'} unchanged)")
    return (f"{what}; {report}; run the same command again to resume where it "
            f"stopped:\n    {command_line(args)}")


def _evaluate(entry: Entry, best: Path, test: list, cached: dict | None,
              args: argparse.Namespace, info) -> dict:
    """The test-split evaluation of ``best``: importance sampling (the paper's) and, for a latent
    model, the SMC estimate (``--smc-repeats`` filters of ``--samples`` particles) and the KL per
    step. Each part reuses ``cached`` when it is of the same checkpoint, sample count, test set
    and seed (and SMC: repeats), so adding SMC to a study evaluated before costs SMC only."""
    from vrnn.evaluation.sequences import evaluate_sequences
    from vrnn.models.base import count_parameters
    from vrnn.store.checkpoint import load_checkpoint, model_from_checkpoint

    name = entry.key
    ckpt = load_checkpoint(best)
    last = load_checkpoint(best.parent / "last.pt")
    key = {"step": int(ckpt["step"]), "samples": args.samples, "n_test": len(test),
           "seed": args.seed}
    frame_size = info.frame_size if info.kind == "audio" else None
    model = None
    if cached is not None and cached.get("key") == key:
        record = cached
    else:
        model = model_from_checkpoint(ckpt)
        print(f"[{name}] evaluating step {key['step']} on {len(test)} test sequences "
              f"(S={args.samples})")
        started = time.time()
        res = evaluate_sequences(model, test, num_samples=args.samples, seed=args.seed,
                                 frame_size=frame_size, batch_size=16)
        record = {"key": key, "name": entry.name, "latent": res.estimator != "exact",
                  "n_params": count_parameters(model), "eval_s": time.time() - started,
                  "summary": res.summary(), "log_likelihood": res.log_likelihood.tolist(),
                  "elbo": res.elbo.tolist(), "is_stderr": res.is_stderr.tolist(),
                  "ess": res.ess_mean.tolist(), "best_step": int(ckpt["step"]),
                  "best_valid_bound": ckpt.get("best_bound")}
    record.update(_train_facts(last, best.parent), **_model_facts(entry, ckpt))
    if not record["latent"]:
        return record
    if "kl_per_step" not in record:
        from vrnn.commands.analysis import kl_profile

        model = model or model_from_checkpoint(ckpt)
        kl = [kl_profile(model, x, seed=args.seed + i)["kl"] for i, x in enumerate(test)]
        record["kl_per_step"] = float(np.concatenate(kl).mean())
    smc_key = {**key, "repeats": args.smc_repeats, "spread": True}
    if args.smc_repeats and (record.get("smc") or {}).get("key") != smc_key:
        model = model or model_from_checkpoint(ckpt)
        print(f"[{name}] SMC: {args.smc_repeats} filters x {args.samples} particles per test "
              f"sequence")
        started = time.time()
        res = evaluate_sequences(model, test, num_samples=args.samples, seed=args.seed,
                                 frame_size=frame_size, batch_size=16, estimator="smc",
                                 repeats=args.smc_repeats)
        record["smc"] = {"key": smc_key, "eval_s": time.time() - started,
                         "summary": res.summary(),
                         "log_likelihood": res.log_likelihood.tolist(),
                         "stderr": res.is_stderr.tolist(), "ess_mean": res.ess_mean.tolist(),
                         "ess_min": res.ess_min.tolist(),
                         "resamples": res.resamples.tolist(),
                         "log_spread": (res.log_spread.tolist()
                                        if res.log_spread is not None else None)}
    return record


def _model_facts(entry: Entry, ckpt: dict) -> dict:
    """The trained model's --model, posterior and Res_q (None where it has none), and the
    objective that trained it, from its checkpoint."""
    mc = ckpt.get("model_config") or {}
    tc = ckpt.get("train_config") or {}
    family = mc.get("family", entry.model.split("-")[0])
    return {"model": entry.model,
            "posterior": mc.get("posterior", entry.posterior) if family != "rnn" else None,
            "res_q": bool(mc.get("res_q", entry.res_q)) if family == "srnn" else None,
            "objective": tc.get("objective", "elbo"), "particles": tc.get("particles"),
            "free_bits": float(tc.get("free_bits") or 0.0)}


def _train_facts(last: dict, run_dir: Path) -> dict:
    return {"steps": int(last["step"]), "train_minutes": float(last.get("train_seconds", 0)) / 60,
            "train_cpu_minutes": float(last.get("train_cpu_seconds", 0)) / 60,
            "epochs": int(last["epoch"]), "run_dir": str(run_dir)}


# -- the report --------------------------------------------------------------------------------

def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread" + ("s" if n > 1 else "")


def _device_line(args) -> str:
    if torch.cuda.is_available() and args.device != "cpu":
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    from vrnn.host.machine import cpu_name

    return f"CPU: {cpu_name()}, {_threads()}, torch {torch.__version__}"


def _rel(path: Path, docs: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(docs.resolve()))
    except ValueError:
        return str(path)


def _entries_table(stem: str, order: list[str], results: dict[str, ModelResult]) -> str:
    """:func:`vrnn.study.tables.format_table`'s layout, one row per entry in the study's order."""
    lines = [f"| model | {stem} |", "|---|---|"]
    lines += [f"| {results[k].name} | {format_cell(results[k])} |" for k in order]
    return "\n".join(lines)


def _results(records: dict, order: list[str], *, smc: bool = False) -> dict[str, ModelResult]:
    """{key: ModelResult} of ``records``; with ``smc``, a latent model's log-likelihood is its SMC
    estimate (an RNN's stays exact), and models without one are left out."""
    out = {}
    for k in order:
        r = records[k]
        ll = r["log_likelihood"]
        if smc and r["latent"]:
            if "smc" not in r:
                continue
            ll = r["smc"]["log_likelihood"]
        out[k] = ModelResult(r["name"], r["latent"], np.asarray(ll), np.asarray(r["elbo"]),
                             r["n_params"])
    return out


def _mc_cell(value: float, summary: dict) -> str:
    """An estimate with the estimator's own (Monte Carlo) error per sequence: printed as a
    standard error only where the ESS supports it (:func:`~vrnn.commands.evaluate.ess_too_low`)."""
    from vrnn.commands.evaluate import ess_too_low

    if summary.get("estimator") == "smc":  # the spread of independent filters
        if "log_spread_mean" not in summary:
            return f"{value:.1f}"
        return (f"{value:.1f} (sd {summary['log_spread_mean']:.1f} over {summary['repeats']} "
                f"filters)")
    if ess_too_low(summary["ess_mean"], summary["num_samples"]):
        return f"{value:.1f} (ESS too low for an MC se)"
    return f"{value:.1f} (MC se {summary['is_stderr_mean']:.1f})"


def _estimator_table(records: dict, order: list[str], samples: int) -> list[str]:
    """Lines of the estimators' table: for each latent model the ELBO, the importance-sampled
    and the SMC estimate (means over test sequences, nats per sequence), their effective sample
    sizes (IS: of the S weights; SMC: per step; mean over sequences and the least), SMC's
    resamplings, the paired gap SMC - IS with its standard error, and the KL per step."""
    rows = [k for k in order if records[k]["latent"] and "ess_mean" in records[k]["summary"]]
    if not rows:
        return []
    lines = ["| model | ELBO | IS | IS ESS mean (min) | SMC | SMC ESS per step mean (min) | "
             "steps resampled | SMC − IS | KL per step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in rows:
        r = records[k]
        s = r["summary"]
        cells = [r["name"], f"{s['elbo']:.1f}", _mc_cell(s["log_likelihood"], s),
                 f"{s['ess_mean']:.1f} ({s['ess_min']:.1f})"]
        if "smc" in r:
            m = r["smc"]["summary"]
            gap, se = paired_gap(np.asarray(r["smc"]["log_likelihood"]),
                                 np.asarray(r["log_likelihood"]))
            cells += [_mc_cell(m["log_likelihood"], m),
                      f"{m['ess_mean']:.1f} ({m['ess_min']:.1f})",
                      f"{m.get('resamples_per_step', 0.0):.0%}", f"{gap:+.1f} ± {format_se(se)}"]
        else:
            cells += ["-"] * 4
        kl = r.get("kl_per_step")
        cells.append("-" if kl is None else f"{kl:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    return [f"The estimators, S = {samples} (IS: samples of whole trajectories; SMC: particles "
            "per filter, resampled when the ESS falls below S/2). An IS Monte Carlo error is "
            "given only where the ESS is at least max(5, S/10): below it, the weights are "
            "dominated by one trajectory and the delta method's error is far too small. SMC: "
            "the log of the mean of R filters' estimates (itself unbiased in p(x)), with the "
            "standard deviation of the R log-estimates, the estimator's own spread in nats; "
            "steps resampled: the share of time steps at which a filter resampled. SMC − IS: "
            "the paired gap over test sequences ± its standard error. KL per step: of one "
            "posterior draw per test sequence, nats.", "", *lines, ""]


OBJECTIVES_NOTE = (
    "Each VRNN trained with the objective in brackets (`vrnn train --objective`): the ELBO (the "
    "paper's), the importance-weighted bound of K samples (IWAE), the filtering variational "
    "objective of K particles (FIVO), or the ELBO with free bits (the KL of each step counts as "
    "at least LAMBDA nats in the loss). The validation bound that picks the best checkpoint is "
    "the ELBO for all of them; every model had the same training budget, so the K-particle "
    "objectives made fewer updates.")


def write_report(args, info, ds, out: Path, records: dict, *, command: str) -> Path:
    docs = check_folder(args.docs, "--docs")
    stem = study_stem(args.data, study_tag(args))
    study = getattr(args, "study", "paper")
    paper = study == "paper"
    entries = study_entries(study, info.kind)
    order = [e.key for e in entries if e.key in records]
    order += [k for k in records if k not in order]  # results of models the study has dropped
    by_key = _results(records, order)
    smc_results = _results(records, order, smc=True)
    claims = study_claims(study, by_key)
    smc_claims = (study_claims(study, smc_results)
                  if any("smc" in records[k] for k in order) else [])
    elbo_claims = study_claims(study, by_key, field="elbo") if study == "srnn" else []
    if paper:
        table = format_table({stem: {r.name: r for r in by_key.values()}})
        extra = make_figures(args, info, ds, records, docs, stem)
    else:
        from vrnn.commands.render import plot_learning_curves

        table = _entries_table(stem, order, by_key)
        curves = {records[k]["name"]: Path(records[k]["run_dir"]) / "metrics.csv"
                  for k in order}
        png = plot_learning_curves(curves, docs / f"{stem}_learning_curves.png")
        extra = {"figures": {"learning curves (validation bound per sequence)": png}
                 if png else {}}

    n_test = len(next(iter(records.values()))["log_likelihood"])
    lines = [f"## {stem}", "",
             f"Made by `{command}` on {time.strftime('%Y-%m-%d')} ({_device_line(args)}).", "",
             # the report is shared: the reader's environment, not this machine's paths
             f"Data: {info.source.replace(sys.prefix, '$VIRTUAL_ENV')}. {info.split_note} "
             f"Test: {n_test} sequences.", "",
             *([SRNN_PAPER, ""] if study == "srnn" else []),
             *([OBJECTIVES_NOTE, ""] if study == "objectives" else []),
             "Average log-likelihood per test sequence in nats (higher is better): `≥` the ELBO, "
             f"`~` the importance-sampled estimate with S = {args.samples}"
             + ("" if study == "srnn" else ", exact for the RNNs") + "; "
             "± one standard error over sequences.", "", table, "",
             "| model | parameters | updates | training minutes (CPU) | best step | per step | "
             + {"audio": "bits per sample | ", "text": "bits per character | "}.get(info.kind, "")
             + "evaluation s |",
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if info.kind in ("audio", "text") else "")
             + "---:|"]
    for m in order:
        r = records[m]
        s = r["summary"]
        row = (f"| {r['name']} | {r['n_params']:,} | {r['steps']} | {r['train_minutes']:.1f} "
               f"({r.get('train_cpu_minutes', 0):.1f}) | "
               f"{r['best_step']} | {s['log_likelihood_per_step']:.3f} | ")
        if info.kind == "audio":
            # results.json files written before the key was renamed hold -log2 p as
            # "log_likelihood_bits_per_sample" (the same value under a misleading name)
            bits = s.get("nll_bits_per_sample", s.get("log_likelihood_bits_per_sample"))
            row += f"{bits:.3f} | "
        elif info.kind == "text":  # -log2 p per character: a frame is one character
            row += f"{-s['log_likelihood_per_step'] / math.log(2.0):.3f} | "
        eval_s = r["eval_s"] + (r.get("smc") or {}).get("eval_s", 0.0)
        lines.append(row + f"{eval_s:.0f} |")
    lines += ["", *_estimator_table(records, order, args.samples)]
    whose = {"paper": "the paper", "srnn": "the SRNN paper", "objectives": "this study"}[study]
    lines += [f"Claims of {whose}, judged by the paired gap in the importance-sampled "
              "log-likelihood (exact for an RNN) on the same test sequences (a claim holds when "
              "the gap has the claimed sign; its size in paired standard errors is beside it):",
              ""]
    lines += [c.line() for c in claims]
    if smc_claims:
        lines += ["", "The same gaps in the SMC estimate:", ""]
        lines += [c.line() for c in smc_claims]
    if elbo_claims:
        lines += ["", "The same gaps in the ELBO, the bound the SRNN paper reports:", ""]
        lines += [c.line() for c in elbo_claims]
    kt = extra.get("kl_transitions")
    if kt:
        lines += [f"- KL at waveform transitions: over {kt['n_steps']} test steps, the Spearman "
                  f"correlation of the KL per step with the change of the frame's log energy is "
                  f"{kt['spearman_kl_vs_energy_change']:+.2f} (with the log energy itself: "
                  f"{kt['spearman_kl_vs_log_energy']:+.2f})."]
    anneal = f"over {args.kl_anneal_steps} updates" if args.kl_anneal_steps else "off"
    lines += ["", f"Settings: preset `{args.preset}` for every model, Adam lr {args.lr:g}, "
              f"batch {args.batch_size or DEFAULT_BATCH.get(info.kind, 32)}, gradient norm "
              f"clipped at 5, KL annealing "
              f"{anneal}, validation every {args.val_interval} updates, early stopping with "
              f"patience {args.patience}, {args.budget_minutes:g} minutes of training per model "
              f"({args.budget_clock} time), {_threads()}, "
              f"seed {args.seed}.", ""]
    for label, paths in extra["figures"].items():
        paths = paths if isinstance(paths, list) else [paths]
        if all(Path(p).suffix == ".png" for p in paths):
            lines += [f"{label}:", ""] + [f"![{label}]({_rel(p, docs)})" for p in paths] + [""]
        else:
            lines += [f"{label}: " + ", ".join(f"[{Path(p).name}]({_rel(p, docs)})"
                                              for p in paths), ""]
    section = "\n".join(lines).rstrip() + "\n"
    write_text(out / "report.md", section)
    from vrnn.study.html import write_html

    write_html(out / "report.md", base=docs)  # its figures are where RESULTS.md's are
    _update_results_md(docs / "RESULTS.md", stem, section)
    print("\n" + table + "\n")
    for c in claims:
        print(c.line())
    return docs / "RESULTS.md"


RESULTS_HEAD = """# Reproducing Table 1 and Figures 2 to 4 on data that installs with the project

Each section below is written by `vrnn reproduce --data NAME` (see `vrnn reproduce --help`) and
holds the command that made it, the device, the settings, the table in the layout of the paper's
Table 1, the paper's claims judged on it, and its figures. The paper's own numbers are in its
Table 1 (Chung et al., "A Recurrent Latent Variable Model for Sequential Data", NIPS 2015), on
Blizzard, TIMIT, Onomatopoeia, Accent and IAM-OnDB, data sets that are licensed and cannot be
downloaded; the data sets here are smaller stand-ins, so the numbers are not comparable with the
paper's, only the ordering of the models is.
"""


def _update_results_md(path: Path, stem: str, section: str) -> None:
    """Replace (or append) the section of ``stem`` between its markers, atomically."""
    begin, end = f"<!-- reproduce:{stem}:begin -->", f"<!-- reproduce:{stem}:end -->"
    text = path.read_text() if path.exists() else RESULTS_HEAD
    block = f"{begin}\n{section}{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text(path, text)

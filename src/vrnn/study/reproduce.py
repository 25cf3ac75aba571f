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

``--study families`` trains one model of each family at the same preset and budget
(:data:`vrnn.study.studies.FAMILIES`): RNN, VRNN, SRNN, DMM and STORN (``-gauss``; the data
kind's one output for binary data and text), each with its own paper's posterior. It acts as the
tag ``families`` and judges every latent family against the RNN and the SRNN against the others
(the orderings a paper makes), reports the other gaps without a verdict, ranks the models, puts
the published JSB chorales figures beside chorales' and reads the learning curves for the
budget.

Every study evaluates each latent model twice, with the same S: by importance sampling of whole
trajectories (the paper's estimate) and by a particle filter that resamples on a low effective
sample size (``--smc-repeats`` filters per sequence; 0 leaves it out), and reports both with
their effective sample sizes (mean and minimum), the KL per step on the test split, and the
claims judged by each estimate.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import time
from pathlib import Path
from signal import SIGINT

import numpy as np

from vrnn.host.files import check_folder, write_text
from vrnn.study.interrupt import StudyInterrupted, stop_on_signals
from vrnn.study.report import write_report
from vrnn.study.studies import (
    DEFAULT_BATCH,
    STUDIES,
    Entry,
    own_recipes_of,
    study_entries,
    study_stem,
    study_tag,
)

STUDY_DATA = ("speech", "speech-multi", "handwriting", "chorales", "text")
TRAIN_FIELDS = ("data", "preset", "max_steps", "seed", "recipe", "lr", "batch_size",
                "kl_anneal_steps", "val_interval", "patience", "budget_clock", "device",
                "progress")
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


def _amend_help(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    for action in parser._actions:
        if action.dest == dest:
            action.help = f"{action.help} {text}"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The flags of ``vrnn reproduce``: the study's own, then the training flags every model of
    the study shares (declared once, in :class:`~vrnn.train.config.TrainConfig`)."""
    from vrnn.train.config import TABLE_FIELDS, add_train_flags

    p = p or argparse.ArgumentParser(prog="vrnn reproduce", description=__doc__.split("\n\n")[0])
    add_train_flags(p, only=("data", *TABLE_FIELDS), required=("data",))
    _amend_help(p, "data", f"The studies of docs/RESULTS.md: {', '.join(STUDY_DATA)}.")
    p.add_argument("--study", choices=STUDIES, default="paper",
                   help="paper: the VRNN paper's Table 1 (default); srnn: the SRNN paper's "
                        "comparison (SRNN with smoothing + Res_q, smoothing, filtering; VRNN "
                        "with filtering, smoothing); objectives: VRNN-Gauss and VRNN-GMM "
                        "trained with elbo, iwae K=4, fivo K=4 and free bits, beside RNN-Gauss "
                        "and RNN-GMM; families: RNN, VRNN, SRNN, DMM and STORN, each with its "
                        "paper's posterior. A study other than paper acts as a tag: its runs "
                        "and its section of RESULTS.md are <data>-<study>[-<tag>]")
    p.add_argument("--budget-minutes", type=float, default=20.0,
                   help="training time per model in minutes, counted across resumes (default 20)")
    p.add_argument("--models", default=None,
                   help="comma-separated subset of the study's models (default all of them), "
                        "by key: for --study srnn srnn-gauss, srnn-gauss-no-res-q, "
                        "srnn-gauss-filtering, vrnn-gauss, vrnn-gauss-smoothing (-bernoulli for "
                        "binary data); for --study objectives rnn-gauss, rnn-gmm and vrnn-gauss, "
                        "vrnn-gmm with nothing, -iwae, -fivo or -free-bits after them; for "
                        "--study families rnn-gauss, vrnn-gauss, srnn-gauss, dmm-gauss, "
                        "storn-gauss (-bernoulli for binary data); with --own-recipes, "
                        "-own-recipe after a key names its twin")
    p.add_argument("--own-recipes", action="store_true",
                   help="beside each model, a twin trained by its own paper's recipe "
                        "(--recipe vrnn for the RNNs and VRNNs, srnn for the SRNNs, dmm for the "
                        "DMM, fivo for a VRNN trained with FIVO; STORN has none), key "
                        "<key>-own-recipe: the study's claims are judged among the twins too, "
                        "and each twin against its model of the shared recipe")
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


def table_columns(args: argparse.Namespace) -> dict:
    """The study's --sequence-column, --time-column and --feature-columns (for a table)."""
    from vrnn.train.config import TABLE_FIELDS

    return {k: getattr(args, k, None) for k in TABLE_FIELDS}


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
    study = study_entries(getattr(args, "study", "paper"), kind, **own_recipes_of(args))
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
    settings = {k: getattr(args, k) for k in TRAIN_FIELDS} | table_columns(args)

    def fields(e: Entry) -> dict:  # an entry's own fields (a recipe too) over the flags'
        f = {**settings, **dict(e.train)}
        if f["batch_size"] is None and f.get("recipe", "default") == "default":
            f["batch_size"] = DEFAULT_BATCH.get(kind, 32)  # else the recipe's
        return f

    return {e.key: TrainConfig(**fields(e), model=e.model, posterior=e.posterior, res_q=e.res_q,
                               out_dir=str(out / e.key), resume="auto",
                               max_minutes=args.budget_minutes, tensorboard=False)
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
    ds = load_dataset(args.data, **table_columns(args))
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

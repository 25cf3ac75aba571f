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
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vrnn.files import check_folder, write_text
from vrnn.report import Claim, ModelResult, assess_claims, format_cell, format_table, paired_gap
from vrnn.study_figures import make_figures

STUDY_DATA = ("speech", "speech-multi", "handwriting", "chorales")
REAL_MODELS = ("rnn-gauss", "rnn-gmm", "vrnn-i-gauss", "vrnn-gauss", "vrnn-gmm")
BINARY_MODELS = ("rnn-bernoulli", "vrnn-i-bernoulli", "vrnn-bernoulli")
DEFAULT_BATCH = {"audio": 32, "strokes": 20, "binary": 20}
"""Sequences per update (the paper: 128 for speech, 20 for handwriting; 32 keeps two CPU cores
busy at the small preset)."""
TRAIN_FIELDS = ("data", "preset", "max_steps", "seed", "lr", "batch_size", "kl_anneal_steps",
                "val_interval", "patience", "budget_clock", "device", "progress")
"""The :class:`~vrnn.train_config.TrainConfig` fields a study takes as flags, for every model."""
TRAIN_DEFAULTS = {"max_steps": 100_000, "batch_size": None, "val_interval": 100, "patience": 10,
                  "budget_clock": "cpu"}
"""A study's defaults where they differ from ``vrnn train``'s: the time budget decides when a
model stops (``--max-steps`` only caps it), early stopping is on, the budget counts CPU time
(fair when the machine is shared; run with OMP_NUM_THREADS=1), and the batch depends on the
data's kind (:data:`DEFAULT_BATCH`)."""


STUDIES = ("paper", "srnn")
"""``--study``: the VRNN paper's Table 1 (``paper``) or the SRNN paper's comparison (``srnn``)."""


@dataclass(frozen=True)
class Entry:
    """One model of a study: its ``key`` (run folder ``<out>/<key>``, ``--models``, results.json),
    the ``--model`` it trains, the posterior and Res_q it sets (None: the model's default) and its
    name in the report."""

    key: str
    model: str
    posterior: str | None
    res_q: bool | None
    name: str


SRNN_STUDY = (
    ("srnn-{out}", "srnn-{out}", "smoothing", True, "SRNN (smooth + Res_q)"),
    ("srnn-{out}-no-res-q", "srnn-{out}", "smoothing", False, "SRNN (smooth)"),
    ("srnn-{out}-filtering", "srnn-{out}", "filtering", False, "SRNN (filt)"),
    ("vrnn-{out}", "vrnn-{out}", "filtering", None, "VRNN-{Out} (filt)"),
    ("vrnn-{out}-smoothing", "vrnn-{out}", "smoothing", None, "VRNN-{Out} (smooth)"),
)
"""The entries of ``--study srnn``: (key, --model, --posterior, --res-q, name), ``{out}`` being
``bernoulli`` for binary data and ``gauss`` otherwise."""

SRNN_PAPER = (
    "The SRNN paper's own numbers (Fraccaro et al. 2016; `≥` the ELBO, `~` the "
    "importance-sampled estimate), in nats per sequence: Blizzard: SRNN (smooth + Res_q) ≥ 11991, "
    "SRNN (smooth) ≥ 10991, SRNN (filt + Res_q) ≥ 10572, SRNN (filt) ≥ 10846, VRNN-GMM ≥ 9107 "
    "~ 9392; TIMIT: SRNN (smooth + Res_q) ≥ 60550, SRNN (smooth) ≥ 59269, SRNN (filt + Res_q) "
    "≥ 52126, SRNN (filt) ≥ 50524, VRNN-GMM ≥ 28982 ~ 29604. Polyphonic music, in nats per time "
    "step (the unit of the \"per step\" column below): SRNN ≥ -4.74 on JSB Chorales, ≥ -2.94 on "
    "Nottingham, ≥ -6.28 on MuseData, ≥ -8.20 on Piano-midi.de. Our data sets are smaller "
    "stand-ins, so only the orderings compare, not the numbers.")


def study_entries(study: str, kind: str) -> tuple[Entry, ...]:
    """The models of ``--study`` for data of ``kind`` ('audio', 'strokes', 'binary'), in the
    order of the report."""
    from vrnn.config import parse_model_name

    if study == "paper":
        return tuple(Entry(m, m, None, None, parse_model_name(m, kind)["name"])
                     for m in models_for(kind))
    if study == "srnn":
        out = "bernoulli" if kind == "binary" else "gauss"
        return tuple(Entry(*(v.format(out=out, Out=out.capitalize()) if isinstance(v, str)
                             else v for v in row)) for row in SRNN_STUDY)
    raise ValueError(f"--study must be one of {', '.join(STUDIES)}, got {study!r}")


def study_tag(args: argparse.Namespace) -> str:
    """The study's tag: ``--tag``, after ``srnn`` for ``--study srnn``."""
    study = getattr(args, "study", "paper")
    return "-".join(t for t in (study if study != "paper" else "", args.tag) if t)


def study_stem(data: str, tag: str = "") -> str:
    """The study's name in file names and RESULTS.md: the data's stem, plus ``-<tag>``."""
    from vrnn.train_config import data_stem

    return data_stem(data) + (f"-{tag}" if tag else "")


def models_for(kind: str) -> tuple[str, ...]:
    return BINARY_MODELS if kind == "binary" else REAL_MODELS


def _amend_help(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    for action in parser._actions:
        if action.dest == dest:
            action.help = f"{action.help} {text}"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The flags of ``vrnn reproduce``: the study's own, then the training flags every model of
    the study shares (declared once, in :class:`~vrnn.train_config.TrainConfig`)."""
    from vrnn.train_config import add_train_flags

    p = p or argparse.ArgumentParser(prog="vrnn reproduce", description=__doc__.split("\n\n")[0])
    add_train_flags(p, only=("data",), required=("data",))
    _amend_help(p, "data", f"The studies of docs/RESULTS.md: {', '.join(STUDY_DATA)}.")
    p.add_argument("--study", choices=STUDIES, default="paper",
                   help="paper: the VRNN paper's Table 1 (default); srnn: the SRNN paper's "
                        "comparison (SRNN with smoothing + Res_q, smoothing, filtering; VRNN "
                        "with filtering, smoothing), acting as --tag srnn: its runs and its "
                        "section of RESULTS.md are <data>-srnn[-<tag>]")
    p.add_argument("--budget-minutes", type=float, default=20.0,
                   help="training time per model in minutes, counted across resumes (default 20)")
    p.add_argument("--models", default=None,
                   help="comma-separated subset of the study's models (default all of them); "
                        "for --study srnn its keys: srnn-gauss, srnn-gauss-no-res-q, "
                        "srnn-gauss-filtering, vrnn-gauss, vrnn-gauss-smoothing (-bernoulli for "
                        "binary data)")
    p.add_argument("--samples", type=int, default=40,
                   help="importance samples per test sequence (default 40, as the paper)")
    p.add_argument("--max-test", type=int, default=0,
                   help="evaluate at most N test sequences (default 0: all)")
    p.add_argument("--tag", default="",
                   help="name a variant of the study (e.g. kl-anneal): its runs and its section "
                        "of RESULTS.md are kept apart from the main study's (with --study srnn: "
                        "<data>-srnn-<tag>)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="default runs/reproduce/<data>[-srnn][-<tag>]")
    p.add_argument("--docs", default="docs", metavar="DIR",
                   help="where RESULTS.md and the figures go (default docs)")
    p.add_argument("--eval-only", action="store_true",
                   help="do not train: evaluate and report the checkpoints that exist")
    group = p.add_argument_group("training, the same for every model (as vrnn train)")
    add_train_flags(group, only=[f for f in TRAIN_FIELDS if f != "data"],
                    defaults=TRAIN_DEFAULTS)
    _amend_help(p, "batch_size", "Here the default is 32 for audio, 20 for strokes and binary.")
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
    """{key: the :class:`~vrnn.train_config.TrainConfig` that trains it}: the study's shared
    settings, the entry's --model, --posterior and --res-q, run folder ``<out>/<key>``, resumed
    where it stopped and stopped at ``--budget-minutes`` in total (what ``vrnn train ... --out
    <out>/<key> --resume auto --max-minutes <budget> --no-tensorboard`` gives)."""
    from vrnn.train_config import TrainConfig

    out = study_out(args) if out is None else out
    settings = {k: getattr(args, k) for k in TRAIN_FIELDS}
    settings["batch_size"] = args.batch_size or DEFAULT_BATCH.get(kind, 32)
    return {e.key: TrainConfig(**settings, model=e.model, posterior=e.posterior, res_q=e.res_q,
                               out_dir=str(out / e.key), resume="auto",
                               max_minutes=args.budget_minutes, tensorboard=False)
            for e in select_entries(args, kind)}


def run_study(args: argparse.Namespace) -> dict:
    """Train (or resume) and evaluate every model of the study, then write the report.

    ``args``: the flags of :func:`build_parser`. Returns {model: its record in results.json}
    (keyed by the entry's key: :func:`study_entries`).
    """
    from vrnn.data import load_dataset
    from vrnn.train import train

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

    for entry in entries:
        name = entry.key
        run_dir = out / name
        if not args.eval_only:
            cfg = configs[name]
            print(f"\n[{name}] training at preset {args.preset}, budget {args.budget_minutes:g} "
                  f"min (resumes from {run_dir / 'last.pt'} when present)")
            res = train(cfg, dataset=ds)
            print(f"[{name}] {res.stopped} at step {res.step}")
        best = run_dir / "best.pt"
        if not best.exists():
            print(f"[{name}] no checkpoint in {run_dir}: skipped")
            continue
        records[name] = _evaluate(entry, best, test, records.get(name), args, info)
        head = {"data": args.data} if study == "paper" else {"data": args.data, "study": study}
        write_text(results_path, json.dumps({**head, "models": records}, indent=1))

    if not records:
        raise ValueError(f"no trained model in {out}: run without --eval-only first")
    report = write_report(args, info, ds, out, records, command=command_line(args))
    print(f"\nwrote {report}")
    return records


def _evaluate(entry: Entry, best: Path, test: list, cached: dict | None,
              args: argparse.Namespace, info) -> dict:
    """The test-split evaluation of ``best``; reuses ``cached`` when it is of the same
    checkpoint, sample count and test set."""
    from vrnn.checkpoint import load_checkpoint, model_from_checkpoint
    from vrnn.evaluate import evaluate_sequences
    from vrnn.model import count_parameters

    name = entry.key
    ckpt = load_checkpoint(best)
    last = load_checkpoint(best.parent / "last.pt")
    key = {"step": int(ckpt["step"]), "samples": args.samples, "n_test": len(test),
           "seed": args.seed}
    if cached is not None and cached.get("key") == key:
        cached.update(_train_facts(last, best.parent), **_model_facts(entry, ckpt))
        return cached
    model = model_from_checkpoint(ckpt)
    print(f"[{name}] evaluating step {key['step']} on {len(test)} test sequences "
          f"(S={args.samples if model.is_latent else 'exact'})")
    started = time.time()
    res = evaluate_sequences(model, test, num_samples=args.samples, seed=args.seed,
                             frame_size=info.frame_size if info.kind == "audio" else None,
                             batch_size=16)
    return {"key": key, "name": entry.name, **_model_facts(entry, ckpt),
            "latent": model.is_latent, "n_params": count_parameters(model),
            "eval_s": time.time() - started, "summary": res.summary(),
            "log_likelihood": res.log_likelihood.tolist(), "elbo": res.elbo.tolist(),
            "best_step": int(ckpt["step"]), "best_valid_bound": ckpt.get("best_bound"),
            **_train_facts(last, best.parent)}


def _model_facts(entry: Entry, ckpt: dict) -> dict:
    """The trained model's --model, posterior and Res_q (None where it has none), from its
    checkpoint."""
    mc = ckpt.get("model_config") or {}
    family = mc.get("family", entry.model.split("-")[0])
    return {"model": entry.model,
            "posterior": mc.get("posterior", entry.posterior) if family != "rnn" else None,
            "res_q": bool(mc.get("res_q", entry.res_q)) if family == "srnn" else None}


def _train_facts(last: dict, run_dir: Path) -> dict:
    return {"steps": int(last["step"]), "train_minutes": float(last.get("train_seconds", 0)) / 60,
            "train_cpu_minutes": float(last.get("train_cpu_seconds", 0)) / 60,
            "epochs": int(last["epoch"]), "run_dir": str(run_dir)}


# -- the SRNN study's claims ------------------------------------------------------------------

def srnn_claims(results: dict[str, ModelResult], *, field: str = "log_likelihood") -> list[Claim]:
    """The SRNN paper's claims on one data set, each judged by the paired gap in ``field`` of two
    entries on the same test sequences (``log_likelihood``: the importance-sampled estimate, as
    the paper study; ``elbo``: the bound the SRNN paper reports), as :func:`vrnn.report.
    assess_claims` does: a claim holds when its gap is positive.

    ``results``: entry key (:func:`study_entries` of ``srnn``) -> its result; entries that are
    missing leave their claims out. The claims: every SRNN entry above every VRNN entry;
    smoothing above filtering, for the SRNN (``srnn-*-no-res-q`` against ``srnn-*-filtering``)
    and for the VRNN (``vrnn-*-smoothing`` against ``vrnn-*``); Res_q above plain (``srnn-*``
    against ``srnn-*-no-res-q``)."""
    def claim(a: str, b: str, what: str) -> Claim:
        gap, se = paired_gap(getattr(results[a], field), getattr(results[b], field))
        return Claim(f"{results[a].name} above {results[b].name} ({what})", gap > 0, gap, se)

    claims = []
    for out in ("gauss", "bernoulli"):
        srnns = [k for k in (f"srnn-{out}", f"srnn-{out}-no-res-q", f"srnn-{out}-filtering")
                 if k in results]
        vrnns = [k for k in (f"vrnn-{out}", f"vrnn-{out}-smoothing") if k in results]
        claims += [claim(a, b, "SRNN above VRNN") for a in srnns for b in vrnns]
        for a, b, what in ((f"srnn-{out}-no-res-q", f"srnn-{out}-filtering",
                            "smoothing above filtering, SRNN"),
                           (f"vrnn-{out}-smoothing", f"vrnn-{out}",
                            "smoothing above filtering, VRNN"),
                           (f"srnn-{out}", f"srnn-{out}-no-res-q", "Res_q above plain")):
            if a in results and b in results:
                claims.append(claim(a, b, what))
    return claims


# -- the report --------------------------------------------------------------------------------

def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread" + ("s" if n > 1 else "")


def _device_line(args) -> str:
    if torch.cuda.is_available() and args.device != "cpu":
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    from vrnn.machine import cpu_name

    return f"CPU: {cpu_name()}, {_threads()}, torch {torch.__version__}"


def _rel(path: Path, docs: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(docs.resolve()))
    except ValueError:
        return str(path)


def _srnn_table(stem: str, entries: tuple[Entry, ...], results: dict[str, ModelResult]) -> str:
    """:func:`vrnn.report.format_table`'s layout, one row per entry in the study's order."""
    lines = [f"| model | {stem} |", "|---|---|"]
    lines += [f"| {results[e.key].name} | {format_cell(results[e.key])} |" for e in entries
              if e.key in results]
    return "\n".join(lines)


def write_report(args, info, ds, out: Path, records: dict, *, command: str) -> Path:
    docs = check_folder(args.docs, "--docs")
    stem = study_stem(args.data, study_tag(args))
    srnn = getattr(args, "study", "paper") == "srnn"
    if srnn:
        from vrnn.render import plot_learning_curves

        entries = study_entries("srnn", info.kind)
        by_key = {k: ModelResult(r["name"], r["latent"], np.asarray(r["log_likelihood"]),
                                 np.asarray(r["elbo"]), r["n_params"]) for k, r in records.items()}
        table = _srnn_table(stem, entries, by_key)
        claims = srnn_claims(by_key)
        elbo_claims = srnn_claims(by_key, field="elbo")
        curves = {records[e.key]["name"]: Path(records[e.key]["run_dir"]) / "metrics.csv"
                  for e in entries if e.key in records}
        png = plot_learning_curves(curves, docs / f"{stem}_learning_curves.png")
        extra = {"figures": {"learning curves (validation bound per sequence)": png}
                 if png else {}}
    else:
        results = {r["name"]: ModelResult(r["name"], r["latent"],
                                          np.asarray(r["log_likelihood"]),
                                          np.asarray(r["elbo"]), r["n_params"])
                   for r in records.values()}
        table = format_table({stem: results})
        claims, elbo_claims = assess_claims(results), []
        extra = make_figures(args, info, ds, records, docs, stem)

    n_test = len(next(iter(records.values()))["log_likelihood"])
    lines = [f"## {stem}", "",
             f"Made by `{command}` on {time.strftime('%Y-%m-%d')} ({_device_line(args)}).", "",
             # the report is shared: the reader's environment, not this machine's paths
             f"Data: {info.source.replace(sys.prefix, '$VIRTUAL_ENV')}. {info.split_note} "
             f"Test: {n_test} sequences.", "",
             *([SRNN_PAPER, ""] if srnn else []),
             "Average log-likelihood per test sequence in nats (higher is better): `≥` the ELBO, "
             f"`~` the importance-sampled estimate with S = {args.samples}"
             + ("" if srnn else ", exact for the RNNs") + "; "
             "± one standard error over sequences.", "", table, "",
             "| model | parameters | updates | training minutes (CPU) | best step | per step | "
             + ("bits per sample | " if info.kind == "audio" else "") + "evaluation s |",
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if info.kind == "audio" else "")
             + "---:|"]
    order = ([e.key for e in entries if e.key in records] if srnn
             else [m for m in (*REAL_MODELS, *BINARY_MODELS) if m in records])
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
        lines.append(row + f"{r['eval_s']:.0f} |")
    lines += ["", f"Claims of the {'SRNN ' if srnn else ''}paper, judged by the paired gap in "
              f"{'the importance-sampled ' if srnn else ''}log-likelihood on the same "
              "test sequences (a claim holds when the gap has the paper's sign; its size in "
              "paired standard errors is beside it):", ""]
    lines += [c.line() for c in claims]
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
    _update_results_md(docs / "RESULTS.md", stem, section)
    print("\n" + table + "\n")
    for c in claims:
        print(c.line())
    return docs / "RESULTS.md"


RESULTS_HEAD = """# Reproducing Table 1 and Figures 2 to 4 on data that installs with the project

Each section below is written by `vrnn reproduce --data NAME` (see `vrnn reproduce --help`) and
holds the command that made it, the device, the settings, the table in the layout of the paper's
Table 1, the paper's claims judged on it, and its figures. The paper's own numbers (Blizzard,
TIMIT, Onomatopoeia, Accent, IAM-OnDB) are in `../shared/SPEC.md`; these data sets are smaller
stand-ins, so the numbers are not comparable with the paper's, only the ordering of the models is.
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

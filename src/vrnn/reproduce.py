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
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vrnn.report import ModelResult, assess_claims, format_table, mean_se

STUDY_DATA = ("speech", "speech-multi", "handwriting", "chorales")
REAL_MODELS = ("rnn-gauss", "rnn-gmm", "vrnn-i-gauss", "vrnn-gauss", "vrnn-gmm")
BINARY_MODELS = ("rnn-bernoulli", "vrnn-i-bernoulli", "vrnn-bernoulli")
DEFAULT_BATCH = {"audio": 32, "strokes": 20, "binary": 20}
"""Sequences per update (the paper: 128 for speech, 20 for handwriting; 32 keeps two CPU cores
busy at the small preset)."""
SAMPLE_SECONDS = 2.0
"""Length of generated audio for Figure 3."""


def display_name(model: str) -> str:
    """'vrnn-i-gauss' -> 'VRNN-I-Gauss', as the paper writes it."""
    parts = model.split("-")
    return "-".join(p.upper() if p in ("rnn", "vrnn", "i", "gmm") else p.capitalize()
                    for p in parts)


def data_stem(data: str, tag: str = "") -> str:
    """A file-name-safe name of the study: 'speech-multi', a path's stem, plus '-<tag>'."""
    name = Path(data).stem if Path(data).exists() else data
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name + (f"-{tag}" if tag else ""))


def models_for(kind: str) -> tuple[str, ...]:
    return BINARY_MODELS if kind == "binary" else REAL_MODELS


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="vrnn reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True,
                   help=f"data set: {', '.join(STUDY_DATA)} (or any name / path vrnn train takes)")
    p.add_argument("--budget-minutes", type=float, default=20.0,
                   help="training time per model in minutes, counted across resumes (default 20)")
    p.add_argument("--budget-clock", choices=("cpu", "wall"), default="cpu",
                   help="what the budget counts: CPU time of the training process (default: "
                        "fair when the machine is shared; run with OMP_NUM_THREADS=1) or "
                        "elapsed time")
    p.add_argument("--preset", default="small", help="model size for every model (default small)")
    p.add_argument("--models", default=None,
                   help="comma-separated subset of the study's models (default all of them)")
    p.add_argument("--max-steps", type=int, default=100_000,
                   help="cap on updates per model (default 100000: the budget decides)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per update (default 32 audio, 20 strokes and binary)")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    p.add_argument("--kl-anneal-steps", type=int, default=0,
                   help="KL annealing over N updates (default 0: off, as the paper)")
    p.add_argument("--val-interval", type=int, default=100, help="validate every N updates")
    p.add_argument("--patience", type=int, default=10,
                   help="stop a model after N validations without a better bound (default 10)")
    p.add_argument("--samples", type=int, default=40,
                   help="importance samples per test sequence (default 40, as the paper)")
    p.add_argument("--max-test", type=int, default=0,
                   help="evaluate at most N test sequences (default 0: all)")
    p.add_argument("--tag", default="",
                   help="name a variant of the study (e.g. kl-anneal): its runs and its section "
                        "of RESULTS.md are kept apart from the main study's")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="default runs/reproduce/<data>[-<tag>]")
    p.add_argument("--docs", default="docs", metavar="DIR",
                   help="where RESULTS.md and the figures go (default docs)")
    p.add_argument("--eval-only", action="store_true",
                   help="do not train: evaluate and report the checkpoints that exist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m vrnn.reproduce ARGS``; ``vrnn reproduce`` goes through :mod:`vrnn.cli`."""
    args = build_parser().parse_args(argv)
    try:
        run_study(args)
    except (ValueError, OSError) as e:
        print(f"vrnn reproduce: error: {e}", file=sys.stderr)
        return 2
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The ``vrnn reproduce`` command that makes this study: every flag not at its default."""
    defaults = vars(build_parser().parse_args(["--data", args.data]))
    parts = ["vrnn", "reproduce", "--data", args.data]
    for key, value in vars(args).items():
        # --eval-only rewrites the report of the runs that the rest of the command made
        if key in defaults and key not in ("data", "eval_only") and value != defaults[key]:
            flag = "--no-progress" if key == "progress" else "--" + key.replace("_", "-")
            parts += [flag] if isinstance(value, bool) else [flag, str(value)]
    return shlex.join(parts)


# -- the study ---------------------------------------------------------------------------------

def run_study(args: argparse.Namespace) -> dict:
    """Train (or resume) and evaluate every model of the study, then write the report."""
    from vrnn.data import load_dataset
    from vrnn.train import TrainConfig, train

    for flag, value, ok in (("--budget-minutes", args.budget_minutes, args.budget_minutes > 0),
                            ("--samples", args.samples, args.samples >= 1),
                            ("--max-test", args.max_test, args.max_test >= 0),
                            ("--max-steps", args.max_steps, args.max_steps >= 1)):
        if not ok:
            raise ValueError(f"{flag} must be positive, got {value}")
    ds = load_dataset(args.data)
    info = ds.info
    study = models_for(info.kind)
    models = study if not args.models else tuple(m.strip() for m in args.models.split(","))
    unknown = [m for m in models if m not in study]
    if unknown:
        raise ValueError(f"--models: {', '.join(unknown)} not in the study for {info.kind} data "
                         f"({', '.join(study)})")
    stem = data_stem(args.data, args.tag)
    out = Path(args.out) if args.out else Path("runs") / "reproduce" / stem
    out.mkdir(parents=True, exist_ok=True)
    batch = args.batch_size or DEFAULT_BATCH.get(info.kind, 32)
    test = ds.test[:args.max_test] if args.max_test else ds.test
    if not test:
        raise ValueError(f"--data {args.data}: the test split is empty")
    results_path = out / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.exists() else {}
    records: dict[str, dict] = saved.get("models", {})

    for name in models:
        run_dir = out / name
        if not args.eval_only:
            cfg = TrainConfig(
                data=args.data, model=name, preset=args.preset, max_steps=args.max_steps,
                out_dir=str(run_dir), resume="auto", seed=args.seed, lr=args.lr,
                batch_size=batch, kl_anneal_steps=args.kl_anneal_steps,
                val_interval=args.val_interval, patience=args.patience,
                max_minutes=args.budget_minutes, budget_clock=args.budget_clock,
                device=args.device, progress=args.progress,
                tensorboard=False)
            print(f"\n[{name}] training at preset {args.preset}, budget {args.budget_minutes:g} "
                  f"min (resumes from {run_dir / 'last.pt'} when present)")
            res = train(cfg, dataset=ds)
            print(f"[{name}] {res.stopped} at step {res.step}")
        best = run_dir / "best.pt"
        if not best.exists():
            print(f"[{name}] no checkpoint in {run_dir}: skipped")
            continue
        records[name] = _evaluate(name, best, test, records.get(name), args, info)
        results_path.write_text(json.dumps({"data": args.data, "models": records}, indent=1))

    if not records:
        raise ValueError(f"no trained model in {out}: run without --eval-only first")
    report = write_report(args, info, ds, out, records, command=command_line(args))
    print(f"\nwrote {report}")
    return records


def _evaluate(name: str, best: Path, test: list, cached: dict | None,
              args: argparse.Namespace, info) -> dict:
    """The test-split evaluation of ``best``; reuses ``cached`` when it is of the same
    checkpoint, sample count and test set."""
    from vrnn.checkpoint import load_checkpoint, model_from_checkpoint
    from vrnn.evaluate import evaluate_sequences
    from vrnn.model import count_parameters

    ckpt = load_checkpoint(best)
    last = load_checkpoint(best.parent / "last.pt")
    key = {"step": int(ckpt["step"]), "samples": args.samples, "n_test": len(test),
           "seed": args.seed}
    if cached is not None and cached.get("key") == key:
        cached.update(_train_facts(last, best.parent))
        return cached
    model = model_from_checkpoint(ckpt)
    print(f"[{name}] evaluating step {key['step']} on {len(test)} test sequences "
          f"(S={args.samples if model.is_latent else 'exact'})")
    t0 = time.time()
    res = evaluate_sequences(model, test, num_samples=args.samples, seed=args.seed,
                             frame_size=info.frame_size if info.kind == "audio" else None,
                             batch_size=16)
    return {"key": key, "name": display_name(name), "latent": model.is_latent,
            "n_params": count_parameters(model), "eval_s": time.time() - t0,
            "summary": res.summary(), "log_likelihood": res.log_likelihood.tolist(),
            "elbo": res.elbo.tolist(), "best_step": int(ckpt["step"]),
            "best_valid_bound": ckpt.get("best_bound"), **_train_facts(last, best.parent)}


def _train_facts(last: dict, run_dir: Path) -> dict:
    return {"steps": int(last["step"]), "train_minutes": float(last.get("train_seconds", 0)) / 60,
            "train_cpu_minutes": float(last.get("train_cpu_seconds", 0)) / 60,
            "epochs": int(last["epoch"]), "run_dir": str(run_dir)}


# -- figures -----------------------------------------------------------------------------------

def _model(run_dir: Path):
    from vrnn.checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(run_dir / "best.pt"))


def _samples(model, n: int, steps: int, info, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    x = model.sample(n, steps, generator=gen).numpy()
    return np.asarray(info.denormalise(x), dtype=np.float32)


def kl_transition_stats(model, test: list, seed: int = 0) -> dict:
    """Does the KL peak where the waveform changes? Over the test sequences, the Spearman rank
    correlation of the per-step KL with the change of the frame's log energy
    |log E_t - log E_{t-1}|, and (for contrast) with the log energy itself."""
    from scipy.stats import spearmanr

    from vrnn.analysis import kl_profile

    kls, changes, energies = [], [], []
    for i, x in enumerate(test):
        if len(x) < 3:
            continue
        prof = kl_profile(model, x, seed=seed + i)
        log_e = np.log(np.mean(np.asarray(x, dtype=np.float64) ** 2, axis=1) + 1e-8)
        kls.append(prof["kl"][1:])
        changes.append(np.abs(np.diff(log_e)))
        energies.append(log_e[1:])
    kl, ch, en = (np.concatenate(a) for a in (kls, changes, energies))
    rho_change = float(spearmanr(kl, ch).statistic)
    rho_energy = float(spearmanr(kl, en).statistic)
    return {"n_steps": int(len(kl)), "spearman_kl_vs_energy_change": rho_change,
            "spearman_kl_vs_log_energy": rho_energy}


def make_figures(args, info, ds, out: Path, records: dict, docs: Path, stem: str) -> dict:
    """The figures this data set has in the paper; returns {label: path} and extra facts."""
    from vrnn.render import (
        draw_strokes,
        new_figure,
        plot_learning_curves,
        save_figure,
        write_samples,
    )

    figs: dict = {}
    facts: dict = {}
    curves = {records[m]["name"]: Path(records[m]["run_dir"]) / "metrics.csv" for m in records}
    png = plot_learning_curves(curves, docs / f"{stem}_learning_curves.png")
    if png:
        figs["learning curves (validation bound per sequence)"] = png

    kl_model = next((m for m in ("vrnn-gauss", "vrnn-gmm", "vrnn-bernoulli") if m in records),
                    None)
    if kl_model and info.kind in ("audio", "strokes"):
        from vrnn.analysis import figure_kl

        model = _model(Path(records[kl_model]["run_dir"]))
        x = max(ds.test[:50], key=len)
        figs[f"Fig. 2: KL per step of {records[kl_model]['name']}"] = figure_kl(
            model, x, info, docs / f"{stem}_fig2_kl.png", seed=args.seed,
            title=f"{records[kl_model]['name']} on a {stem} test sequence")
        if info.kind == "audio":
            facts["kl_transitions"] = kl_transition_stats(model, ds.test[:200], args.seed)

    if info.kind == "audio" and info.sample_rate and info.frame_size:
        pair = [m for m in ("rnn-gmm", "vrnn-gauss") if m in records]
        if pair:
            steps = int(SAMPLE_SECONDS * info.sample_rate / info.frame_size)
            fig = new_figure(6 * len(pair), 6)
            axes = fig.subplots(3, len(pair), squeeze=False, sharey=True)
            for j, m in enumerate(pair):
                wav = _samples(_model(Path(records[m]["run_dir"])), 3, steps, info, args.seed)
                written = write_samples(wav, info, docs / f"{stem}_fig3_audio",
                                        prefix=f"{m}_sample")
                figs[f"Fig. 3 audio, {records[m]['name']}"] = [p for p in written
                                                                if p.suffix == ".wav"]
                for i in range(3):
                    y = wav[i].reshape(-1)
                    ax = axes[i, j]
                    ax.plot(np.arange(len(y)) / info.sample_rate, y, lw=0.4, color="k")
                    ax.set_xlim(0, len(y) / info.sample_rate)
                    if i == 0:
                        ax.set_title(records[m]["name"])
                    if i == 2:
                        ax.set_xlabel("seconds")
            fig.suptitle(f"Generated waveforms ({stem}), unconditional, temperature 1")
            figs["Fig. 3: generated waveforms"] = save_figure(
                fig, docs / f"{stem}_fig3_waveforms.png", dpi=110)

    if info.kind == "strokes":
        cols = [m for m in ("rnn-gauss", "rnn-gmm", "vrnn-gmm") if m in records]
        steps = int(np.median([len(s) for s in ds.test]))
        n = 4
        panels = [("real (test)", [np.asarray(info.denormalise(s[:steps]), dtype=np.float32)
                                   for s in ds.test[:n]])]
        panels += [(records[m]["name"], _samples(_model(Path(records[m]["run_dir"])), n, steps,
                                                 info, args.seed)) for m in cols]
        fig = new_figure(3 * len(panels), 2.4 * n)
        axes = fig.subplots(n, len(panels), squeeze=False)
        for j, (title, seqs) in enumerate(panels):
            for i in range(n):
                ax = axes[i, j]
                if i < len(seqs):
                    draw_strokes(ax, seqs[i])
                else:
                    ax.set_axis_off()
                if i == 0:
                    ax.set_title(title)
        fig.suptitle(f"Real handwriting beside samples ({stem})")
        figs["Fig. 4: real and generated handwriting"] = save_figure(
            fig, docs / f"{stem}_fig4_samples.png", dpi=110)

    if info.kind == "binary":
        m = next((m for m in ("vrnn-bernoulli", "rnn-bernoulli") if m in records), None)
        if m:
            steps = int(np.median([len(s) for s in ds.test]))
            written = write_samples(_samples(_model(Path(records[m]["run_dir"])), 4, steps,
                                             info, args.seed), info,
                                    docs / f"{stem}_samples", prefix=f"{m}_sample")
            figs[f"samples of {records[m]['name']}"] = [p for p in written if p.suffix == ".png"]
    return {"figures": figs, **facts}


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


def write_report(args, info, ds, out: Path, records: dict, *, command: str) -> Path:
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    stem = data_stem(args.data, args.tag)
    results = {r["name"]: ModelResult(r["name"], r["latent"], np.asarray(r["log_likelihood"]),
                                      np.asarray(r["elbo"]), r["n_params"])
               for r in records.values()}
    table = format_table({stem: results})
    claims = assess_claims(results)
    extra = make_figures(args, info, ds, out, records, docs, stem)

    n_test = len(next(iter(records.values()))["log_likelihood"])
    lines = [f"## {stem}", "",
             f"Made by `{command}` on {time.strftime('%Y-%m-%d')} ({_device_line(args)}).", "",
             # the report is shared: the reader's environment, not this machine's paths
             f"Data: {info.source.replace(sys.prefix, '$VIRTUAL_ENV')}. {info.split_note} "
             f"Test: {n_test} sequences.", "",
             "Average log-likelihood per test sequence in nats (higher is better): `≥` the ELBO, "
             f"`~` the importance-sampled estimate with S = {args.samples}, exact for the RNNs; "
             "± one standard error over sequences.", "", table, "",
             "| model | parameters | updates | training minutes (CPU) | best step | per step | "
             + ("bits per sample | " if info.kind == "audio" else "") + "evaluation s |",
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if info.kind == "audio" else "")
             + "---:|"]
    order = [m for m in (*REAL_MODELS, *BINARY_MODELS) if m in records]
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
    lines += ["", "Claims of the paper, judged by the paired gap in log-likelihood on the same "
              "test sequences (a claim holds when the gap has the paper's sign; its size in "
              "paired standard errors is beside it):", ""]
    lines += [c.line() for c in claims]
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
    (out / "report.md").write_text(section)
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
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def summary_line(records: dict) -> str:
    """One line per model: name, mean log-likelihood and its standard error."""
    return "; ".join(f"{r['name']} {mean_se(np.asarray(r['log_likelihood']))[0]:.1f}"
                     for r in records.values())


if __name__ == "__main__":
    raise SystemExit(main())

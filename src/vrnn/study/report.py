"""The Markdown a study writes: its section of ``docs/RESULTS.md`` (Table 1 on the data, the
estimators side by side, the claims judged, the figures and how they were made), and the
file's head and the replacement of one section, so rerunning one study keeps the others."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vrnn.host.files import check_folder, write_text
from vrnn.study.figures import make_figures
from vrnn.study.studies import (
    DEFAULT_BATCH,
    FAMILIES_PAPERS,
    FAMILIES_PUBLISHED,
    SRNN_PAPER,
    own_recipes_of,
    study_claims,
    study_entries,
    study_stem,
    study_tag,
)
from vrnn.study.tables import ModelResult, format_cell, format_se, format_table, paired_gap


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


FAMILIES_NOTE = (
    "One model of each family at the same preset (parameter-matched within a few percent, the "
    "table gives the counts) and the same CPU budget, each with its own paper's posterior (the "
    "model's default): the RNN (exact likelihood); the VRNN with its filtering q(z_t | x_{<=t}, "
    "z_{<t}) (Chung et al., NIPS 2015); the SRNN with its smoothing posterior and Res_q "
    "(Fraccaro et al., NIPS 2016); the DMM with its structured smoothing combiner (Krishnan, "
    "Shalit and Sontag, AAAI 2017); STORN with latents independent over time under the prior and "
    "a filtering recognition RNN (Bayer and Osendorfer 2014). The same CPU time is not the same "
    "number of updates: the families' steps cost differently (updates per CPU minute below).")


def _ranking(results: dict[str, ModelResult], label: str) -> str:
    """The models ranked by their mean ``log_likelihood``, each with its paired gap to the next
    one down (± its standard error), as one line."""
    ranked = sorted(results, key=lambda k: -float(np.mean(results[k].log_likelihood)))
    parts = [f"{results[ranked[0]].name} {np.mean(results[ranked[0]].log_likelihood):.1f}"]
    for above, below in zip(ranked, ranked[1:]):
        gap, se = paired_gap(results[above].log_likelihood, results[below].log_likelihood)
        parts.append(f"{results[below].name} {np.mean(results[below].log_likelihood):.1f} "
                     f"({-gap:+.1f} ± {format_se(se)})")
    return f"- {label}: " + " > ".join(parts)


def _published_table(records: dict, order: list[str]) -> list[str]:
    """Our chorales figures beside the published JSB ones, as negative log-likelihoods per time
    step (the published unit; an RNN's exact figure in both of our columns): lines of a Markdown
    table."""
    lines = ["| family | ours, −IS per step | ours, −SMC per step | published (JSB), per step |",
             "|---|---:|---:|---:|"]
    for k in order:
        r = records[k]
        smc = (r["summary"]["log_likelihood_per_step"] if not r["latent"]  # exact: both
               else (r.get("smc") or {}).get("summary", {}).get("log_likelihood_per_step"))
        family = r.get("model", k).split("-")[0]
        lines.append(f"| {r['name']} | {-r['summary']['log_likelihood_per_step']:.3f} | "
                     + ("-" if smc is None else f"{-smc:.3f}") + " | "
                     + FAMILIES_PUBLISHED.get(family, "-") + " |")
    return lines


def _curve_facts(records: dict, order: list[str]) -> list[str]:
    """What each model's learning curve says about the budget: its validation bound at half its
    updates, its best one and where, and whether it was still improving when the budget ended
    (its best validation among its last two) or stopped early."""
    from vrnn.train.metrics import metrics_rows

    lines = []
    for k in order:
        r = records[k]
        path = Path(r["run_dir"]) / "metrics.csv"
        if not path.is_file():
            continue
        rows = [(int(row["step"]), float(row["valid_bound"])) for row in
                metrics_rows(path, quiet=True) if row.get("valid_bound") not in (None, "")]
        rows = [(t, v) for t, v in rows if math.isfinite(v)]
        if len(rows) < 2:
            continue
        steps, values = np.asarray(rows).T  # (2, validations)
        half = int(np.searchsorted(steps, steps[-1] / 2))
        best = int(np.argmax(values))
        state = ("still improving at the end of the budget" if best >= len(steps) - 2
                 else f"no better bound in its last {len(steps) - 1 - best} validations")
        lines.append(f"- {r['name']}: {values[half]:.1f} at update {int(steps[half])} "
                     f"(about half its updates), best {values[best]:.1f} at update "
                     f"{int(steps[best])} of {int(steps[-1])}: {state}.")
    if not lines:
        return []
    return ["The learning curves (validation ELBO per sequence, the figure below), read for the "
            "budget:", "", *lines]


def _models_table(records: dict, order: list[str], kind: str) -> list[str]:
    """Each model's size, updates, training time, best step, log-likelihood per step (and bits
    per sample or character) and evaluation time, in the report's order."""
    lines = ["| model | parameters | updates | training minutes (CPU) | updates per CPU minute "
             "| best step | per step | "
             + {"audio": "bits per sample | ", "text": "bits per character | "}.get(kind, "")
             + "evaluation s |",
             "|---|---:|---:|---:|---:|---:|---:|"
             + ("---:|" if kind in ("audio", "text") else "") + "---:|"]
    for m in order:
        r = records[m]
        s = r["summary"]
        cpu = r.get("train_cpu_minutes", 0)
        rate = f"{r['steps'] / cpu:.0f}" if cpu > 0 else "-"
        row = (f"| {r['name']} | {r['n_params']:,} | {r['steps']} | {r['train_minutes']:.1f} "
               f"({cpu:.1f}) | {rate} | "
               f"{r['best_step']} | {s['log_likelihood_per_step']:.3f} | ")
        if kind == "audio":
            # results.json files written before the key was renamed hold -log2 p as
            # "log_likelihood_bits_per_sample" (the same value under a misleading name)
            bits = s.get("nll_bits_per_sample", s.get("log_likelihood_bits_per_sample"))
            row += f"{bits:.3f} | "
        elif kind == "text":  # -log2 p per character: a frame is one character
            row += f"{-s['log_likelihood_per_step'] / math.log(2.0):.3f} | "
        eval_s = r["eval_s"] + (r.get("smc") or {}).get("eval_s", 0.0)
        lines.append(row + f"{eval_s:.0f} |")
    return lines


def _claim_lines(study: str, claims: list, smc_claims: list, elbo_claims: list) -> list[str]:
    """The claims judged by the importance-sampled estimate, then the same gaps by SMC and (the
    SRNN study) by the ELBO."""
    lines: list[str] = []
    whose = {"paper": "the paper", "srnn": "the SRNN paper", "objectives": "this study",
             "families": "the papers (a claim without a paper behind it is reported, not "
                         "tested)"}[study]
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
    return lines


def _settings_line(args, records: dict, order: list[str], kind: str) -> str:
    """The training settings the study's models shared, a flag left to its recipe read as what
    it resolved to."""
    trained = _trained_with(records, order)  # a flag left to its recipe: what it resolved to
    lr = args.lr if args.lr is not None else trained.get("lr", 3e-4)
    batch = args.batch_size or trained.get("batch_size") or DEFAULT_BATCH.get(kind, 32)
    kl_steps = (args.kl_anneal_steps if args.kl_anneal_steps is not None
                else trained.get("kl_anneal_steps", 0))
    anneal = f"over {kl_steps} updates" if kl_steps else "off"
    return (f"Settings: preset `{args.preset}` for every model, Adam lr {lr:g}, "
            f"batch {batch}, gradient norm "
            f"clipped at {trained.get('grad_clip', 5.0):g}, KL annealing "
            f"{anneal}, validation every {args.val_interval} updates, early stopping with "
            f"patience {args.patience}, {args.budget_minutes:g} minutes of training per model "
            f"({args.budget_clock} time), {_threads()}, "
            f"seed {args.seed}.")


def _figure_lines(figures: dict, docs: Path) -> list[str]:
    """Each figure under its label: PNGs shown, other files (audio) linked, relative to
    ``docs``."""
    lines: list[str] = []
    for label, paths in figures.items():
        paths = paths if isinstance(paths, list) else [paths]
        if all(Path(p).suffix == ".png" for p in paths):
            lines += [f"{label}:", ""] + [f"![{label}]({_rel(p, docs)})" for p in paths] + [""]
        else:
            lines += [f"{label}: " + ", ".join(f"[{Path(p).name}]({_rel(p, docs)})"
                                              for p in paths), ""]
    return lines


def write_report(args, info, ds, out: Path, records: dict, *, command: str) -> Path:
    docs = check_folder(args.docs, "--docs")
    stem = study_stem(args.data, study_tag(args))
    study = getattr(args, "study", "paper")
    paper = study == "paper"
    entries = study_entries(study, info.kind, **own_recipes_of(args))
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
             *([FAMILIES_NOTE, "", FAMILIES_PAPERS, ""] if study == "families" else []),
             "Average log-likelihood per test sequence in nats (higher is better): `≥` the ELBO, "
             f"`~` the importance-sampled estimate with S = {args.samples}"
             + ("" if study == "srnn" else ", exact for the RNNs") + "; "
             "± one standard error over sequences.", "", table, "",
             *_models_table(records, order, info.kind)]
    lines += ["", *_estimator_table(records, order, args.samples)]
    if study == "families":
        lines += ["Which family is above which: the models ranked by their mean over the test "
                  "sequences (nats per sequence), each with its paired gap to the one above it "
                  "± its standard error:", "", _ranking(by_key, "by the importance-sampled "
                                                        "estimate (exact for the RNN)")]
        if len(smc_results) == len(by_key):
            lines.append(_ranking(smc_results, "by the SMC estimate (exact for the RNN)"))
        lines += [_ranking({k: ModelResult(r.name, r.latent, r.elbo, r.elbo)
                            for k, r in by_key.items()}, "by the ELBO (exact for the RNN)"), ""]
        if info.kind == "binary":
            lines += ["Beside the published figures (negative log-likelihood per time step, "
                      "lower is better; ours on `chorales`, theirs on JSB, other sizes and "
                      "budgets):", "", *_published_table(records, order), ""]
    lines += _claim_lines(study, claims, smc_claims, elbo_claims)
    kt = extra.get("kl_transitions")
    if kt:
        lines += [f"- KL at waveform transitions: over {kt['n_steps']} test steps, the Spearman "
                  f"correlation of the KL per step with the change of the frame's log energy is "
                  f"{kt['spearman_kl_vs_energy_change']:+.2f} (with the log energy itself: "
                  f"{kt['spearman_kl_vs_log_energy']:+.2f})."]
    if study == "families":
        lines += ["", *_curve_facts(records, order)]
    lines += ["", _settings_line(args, records, order, info.kind), ""]
    lines += _figure_lines(extra["figures"], docs)
    section = "\n".join(lines).rstrip() + "\n"
    write_text(out / "report.md", section)
    from vrnn.study.html import write_html

    write_html(out / "report.md", base=docs)  # its figures are where RESULTS.md's are
    _update_results_md(docs / "RESULTS.md", stem, section)
    print("\n" + table + "\n")
    for c in claims:
        print(c.line())
    return docs / "RESULTS.md"


def _trained_with(records: dict, order: list[str]) -> dict:
    """The training settings of the study's first model whose run folder holds its
    ``config.json`` (``train``: the resolved TrainConfig), {} when none does."""
    import json

    for k in order:
        path = Path(records[k].get("run_dir", "")) / "config.json"
        if path.is_file():
            return json.loads(path.read_text()).get("train", {})
    return {}


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

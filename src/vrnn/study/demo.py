"""``vrnn demo`` (``make demo``): the paper's central comparison in miniature, where the paper
makes it: raw speech, in about five minutes on two CPU cores.

It trains a VRNN-Gauss and the two RNN baselines of the paper's Table 1 (RNN-Gauss, RNN-GMM; preset
``small``, the same CPU-time budget each) on the built-in ``speech`` data set (raw 8 kHz
waveform of Debian's Asterisk prompts), evaluates them on the test utterances the paper's way (ELBO
and a 40-sample importance-sampled log-likelihood for the VRNN, the exact log-likelihood for the
RNNs, with the paired gap and its standard error), writes generated audio of every model beside a
real test utterance as WAV files, the waveform figure, the KL per step (the paper's Figure 2), the
learning curves, and ``report.md`` + ``report.html`` (:mod:`vrnn.study.html`) into ``runs/demo/``.

Where the speech data are not installed it says how to install them and runs the same comparison
on ``chorales`` (VRNN-Bernoulli against RNN-Bernoulli), saying so on the console and in the report.

Ctrl-C (or SIGTERM) stops every model's training within an update (:mod:`vrnn.study.interrupt`):
no report, exit status 130 (143); run again, the demo starts over.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from vrnn.host.files import check_folder, write_text
from vrnn.study.html import write_html
from vrnn.study.interrupt import StudyInterrupted, own_process_group, stop_on_signals
from vrnn.study.tables import format_se, paired_gap

DATA = "speech"
FALLBACK = "chorales"
MODELS = {"speech": ("vrnn-gauss", "rnn-gauss", "rnn-gmm"),
          "chorales": ("vrnn-bernoulli", "rnn-bernoulli")}
"""The VRNN first, then its baselines. VRNN-Gauss is the VRNN that wins on speech in our 20-minute
study (docs/RESULTS.md, ``speech``) and the one the paper's Figures 2 and 3 show."""
PRESET = "small"
MINUTES = 2.5
"""Training CPU-minutes per model, the same for every model (a fair comparison needs the same
budget; CPU time, not wall time, so a busy machine cannot give one model more than another). Three
models at 2.5 CPU-minutes each in parallel on two cores take about 3.75 minutes of wall time; with
the evaluation, the samples and the figures the demo takes about five minutes on two idle cores.
In the 20-minute study VRNN-Gauss is above RNN-GMM on validation from its first CPU-minute on (it
is a third of RNN-GMM's size and makes three times the updates per CPU-second)."""
MAX_STEPS = 100_000  # the CPU budget ends training, not this
BATCH = 32  # the study's batch (docs/RESULTS.md)
EVAL_SAMPLES = 40  # the paper's S
MAX_TEST = 200  # test sequences evaluated (all of them when fewer)
PROGRESS_SECONDS = 20.0
"""Seconds between each model's progress lines (updates, CPU time against the budget, the last
validation bound) when the models train at the same time: lines, since bars of several processes
on one terminal would overwrite each other. One after the other, each shows
:func:`vrnn.train.loop.train`'s own progress (a bar on a terminal)."""
NUM_SAMPLES = 3  # generated sequences per model
SAMPLE_SECONDS = 2.0  # length of generated audio
RESULTS_DOC = Path(__file__).resolve().parents[3] / "docs" / "RESULTS.md"
"""The study this demo summarises (present in a checkout of the repository)."""


def speech_missing() -> str | None:
    """None when the ``speech`` data are installed, else the command that installs them (what
    ``vrnn data list`` reports, from :mod:`vrnn.data.audio`)."""
    from vrnn.data import audio

    missing = audio.missing_voices(False)
    return audio.install_hint(missing) if missing else None


def _pad_to(seqs: list[np.ndarray], steps: int) -> np.ndarray:
    """Crop / zero-pad ``(T_i, D)`` arrays to one ``(N, steps, D)`` array."""
    out = np.zeros((len(seqs), steps, seqs[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(seqs):
        n = min(steps, len(s))
        out[i, :n] = s[:n]
    return out


def _sample_steps(info, test: list[np.ndarray]) -> int:
    """Frames per generated sequence: SAMPLE_SECONDS of audio, else the median test length."""
    if info.kind == "audio" and info.sample_rate and info.frame_size:
        return int(SAMPLE_SECONDS * info.sample_rate / info.frame_size)
    return int(np.median([len(x) for x in test]))


def train_and_evaluate(job: dict) -> dict:
    """One model of the demo, start to end, in its own process: train on ``job["data"]`` for
    the CPU budget, evaluate on the test split, write ``NUM_SAMPLES`` samples (WAV or MIDI files and
    a picture) into ``job["out"]``. Returns the row of the report (plain values and lists)."""
    from vrnn.commands.render import write_samples
    from vrnn.commands.sample import save_npy
    from vrnn.data import load_dataset
    from vrnn.evaluation.sequences import evaluate_sequences
    from vrnn.models.base import count_parameters
    from vrnn.store.checkpoint import load_checkpoint, model_from_checkpoint
    from vrnn.train.config import TrainConfig
    from vrnn.train.loop import train

    # One thread per model, one process per model (spawned, so no OpenMP state is inherited).
    # Measured on this project's two-core machine (busy with other work; 60 and 20 updates):
    # two threads spent 2.0x-3.0x the CPU per update of one (VRNN-Gauss 207-246 ms against
    # 82-104 ms; RNN-GMM 418-453 against 264-277) and were slower in wall time too (VRNN-Gauss
    # 192-228 ms against 111-139 ms). These matrices gain nothing from a second thread, so the
    # two cores are better spent on models that train at the same time.
    torch.set_num_threads(1)
    quick, name, seed = job["quick"], job["model"], job["seed"]
    ds = load_dataset(job["data"])
    info = ds.info
    test = ds.test[:8 if quick else MAX_TEST]
    steps = 8 if quick else MAX_STEPS
    cfg = TrainConfig(
        data=job["data"], model=name, preset="tiny" if quick else PRESET, max_steps=steps,
        out_dir=str(Path(job["out"])), overwrite=True, seed=seed, batch_size=BATCH,
        val_interval=4 if quick else 100, val_max_sequences=100, log_interval=4 if quick else 100,
        max_minutes=None if quick else job["minutes"], budget_clock="cpu", device="cpu",
        tensorboard=False, progress=True)
    budget = "8 steps" if quick else f"{job['minutes']:g} CPU-minutes"
    print(f"[{name}] training on {job['data']} at preset {cfg.preset} for {budget} -> "
          f"{cfg.out_dir}", flush=True)
    cpu0, wall0 = time.process_time(), time.time()
    result = train(cfg, dataset=ds, progress_every=job.get("progress_every"))
    train_cpu, train_wall = time.process_time() - cpu0, time.time() - wall0
    if result.stopped == "interrupted":  # Ctrl-C or SIGTERM: not evaluated, not reported
        raise StudyInterrupted(f"{name} stopped at step {result.step}",
                               result.signal or signal.SIGINT)

    ckpt = load_checkpoint(result.best_checkpoint)
    model = model_from_checkpoint(ckpt)
    cpu0, wall0 = time.process_time(), time.time()
    res = evaluate_sequences(model, test, num_samples=4 if quick else EVAL_SAMPLES, seed=seed,
                             frame_size=info.frame_size if info.kind == "audio" else None)
    eval_cpu, eval_wall = time.process_time() - cpu0, time.time() - wall0

    gen = torch.Generator().manual_seed(seed)
    x = model.sample(NUM_SAMPLES, _sample_steps(info, test), generator=gen).numpy()  # (N, T, D)
    samples = np.asarray(info.denormalise(x), dtype=np.float32)
    save_npy(Path(job["out"]) / "samples.npy", samples)
    written = write_samples(samples, info, job["out"], prefix="sample")
    print(f"[{name}] done: {result.step} updates ({result.stopped}), test log-likelihood "
          f"{res.summary()['log_likelihood']:.1f} nats per sequence", flush=True)
    return {"key": name, "model": model.config.name, "latent": res.estimator != "exact",
            "params": int(count_parameters(model)), "steps": int(result.step),
            "best_step": int(ckpt.get("step") or 0), "stopped": result.stopped,
            "train_cpu_s": train_cpu, "train_s": train_wall, "eval_cpu_s": eval_cpu,
            "eval_s": eval_wall, "files": [str(p) for p in written],
            "metrics_csv": str(result.metrics_csv) if result.metrics_csv else None,
            "best_checkpoint": str(result.best_checkpoint),
            "ll_seq": res.log_likelihood.tolist(), "elbo_seq": res.elbo.tolist(),
            **res.summary()}


def run_demo(out: Path = Path("runs/demo"), *, quick: bool = False, seed: int = 0,
             parallel: bool = True) -> Path:
    """Run the demo into ``out``; returns the path of ``report.md`` (``report.html`` beside it).

    ``quick``: tiny models and a few steps (a smoke test of the whole pipeline, in seconds).
    ``parallel``: one process per model (spawned, one thread each); False trains them one after
    the other in this process.
    """
    try:
        with stop_on_signals():  # a model's training stops on its own, saved (vrnn train's)
            return _run_demo(out, quick, seed, parallel)
    except StudyInterrupted as e:
        what = f"stopped by {e.signal_name}" + (f" ({e})" if str(e) else "")
        raise StudyInterrupted(f"{what}; no report written in {out}; run the same command "
                               f"again (the demo starts over)", e.signum) from None


def _run_demo(out: Path, quick: bool, seed: int, parallel: bool) -> Path:
    from vrnn.data import load_dataset

    wall0, cpu0 = time.time(), time.process_time()
    out = check_folder(out, "--out")
    torch.set_num_threads(1)
    hint = speech_missing()
    data = DATA if hint is None else FALLBACK
    if hint is not None:
        print(f"vrnn demo: the speech data are not installed; to install them run\n    {hint}\n"
              f"(or `make data` as root). Running the same comparison on {FALLBACK!r} instead.")
    print(f"vrnn demo: loading the {data!r} data set")
    ds = load_dataset(data)
    info = ds.info
    models = MODELS[data]
    jobs = [{"data": data, "model": m, "out": str(out / m), "quick": quick, "seed": seed,
             "minutes": MINUTES, "progress_every": PROGRESS_SECONDS if parallel else None}
            for m in models]
    budget = "quick" if quick else f"{MINUTES:g} CPU-minutes each"
    how = "one process each, at the same time" if parallel else "one after the other"
    print(f"vrnn demo: training {', '.join(models)} ({budget}, {how})")
    if parallel:  # a signal reaches this process alone; it sends it on to the models' ones
        with (stop_on_signals(forward=True),
              ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn"),
                                  initializer=own_process_group) as pool):
            rows = list(pool.map(train_and_evaluate, jobs))
    else:
        rows = [train_and_evaluate(j) for j in jobs]
    train_wall = time.time() - wall0

    test = ds.test[:8 if quick else MAX_TEST]
    figures = _figures(out, rows, ds, info, test, seed)
    gaps = _gaps(rows)
    timing = {"wall_s": time.time() - wall0, "train_phase_wall_s": train_wall,
              "cpu_s": time.process_time() - cpu0 + _children_cpu_s(),
              "cores": os.cpu_count(), "parallel": parallel}
    results = {"data": data, "fallback": hint is not None, "install_hint": hint, "quick": quick,
               "minutes_per_model": None if quick else MINUTES, "preset": "tiny" if quick
               else PRESET, "models": {r["key"]: r for r in rows}, "gaps": gaps,
               "figures": {k: str(v) for k, v in figures.items()}, "timing": timing}
    write_text(out / "results.json", json.dumps(results, indent=1))
    report = _write_report(out, results, info)
    html = write_html(report)
    print("\n" + _table(rows))
    for g in gaps:
        print(f"{g['vrnn']} - {g['rnn']}: {g['gap']:+.1f} nats per sequence "
              f"(paired se {format_se(g['se'])})")
    print(f"\ndemo finished in {timing['wall_s']:.0f} s ({timing['cpu_s']:.0f} CPU-s). "
          f"Open {html} (or {report}) and the run folders in {out}.")
    return report


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished child processes (0 where not measurable)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _gaps(rows: list[dict]) -> list[dict]:
    """The VRNN minus each RNN on the same test sequences, with the paired standard error."""
    vrnn = next(r for r in rows if r["latent"])
    gaps = []
    for r in rows:
        if not r["latent"]:
            gap, se = paired_gap(np.asarray(vrnn["ll_seq"]), np.asarray(r["ll_seq"]))
            gaps.append({"vrnn": vrnn["model"], "rnn": r["model"], "gap": gap, "se": se})
    return gaps


def _figures(out: Path, rows: list[dict], ds, info, test: list, seed: int) -> dict[str, Path]:
    """The learning curves, the KL per step of the VRNN, and (audio) a real test utterance as a
    WAV file beside the waveform figure; (binary) a real test sequence as MIDI."""
    from vrnn.commands.analysis import figure_kl
    from vrnn.commands.render import plot_learning_curves, write_samples
    from vrnn.store.checkpoint import load_checkpoint, model_from_checkpoint

    figs: dict[str, Path] = {}
    curves = {r["model"]: Path(r["metrics_csv"]) for r in rows if r["metrics_csv"]}
    png = plot_learning_curves(curves, out / "learning_curves.png")
    if png:
        figs["learning_curves"] = png
    real = max(test[:50], key=len)  # (T, D) normalised: the longest of the first 50
    real_units = np.asarray(info.denormalise(real), dtype=np.float32)[None]  # (1, T, D)
    written = write_samples(real_units, info, out / "real", prefix="test")
    figs.update({f"real_{p.suffix[1:]}": p for p in written})
    vrnn = next(r for r in rows if r["latent"])
    model = model_from_checkpoint(load_checkpoint(vrnn["best_checkpoint"]))
    figs["kl"] = figure_kl(model, real, info, out / "kl_per_step.png", seed=seed,
                           title=f"{vrnn['model']} reading a test sequence: KL per time step")
    if info.kind == "audio":
        figs["waveforms"] = _waveform_figure(out, rows, real_units[0], info)
    return figs


def _waveform_figure(out: Path, rows: list[dict], real: np.ndarray, info) -> Path:
    """The real test utterance on top, then the first two samples of each model, on one scale."""
    from vrnn.commands.render import new_figure, save_figure

    panels = [("real test utterance", real, "tab:gray")]
    for r in rows:
        samples = np.load(Path(r["files"][0]).parent / "samples.npy")  # (N, T, D)
        panels += [(f"{r['model']}, sample {i}", samples[i], "C0" if r["latent"] else "C3")
                   for i in range(min(2, len(samples)))]
    fig = new_figure(9.0, 0.8 * len(panels) + 0.7)
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True, sharey=True)[:, 0]
    sr = info.sample_rate
    for ax, (label, seq, colour) in zip(axes, panels):
        y = seq.reshape(-1)  # (T * D,): the frames concatenated
        ax.plot(np.arange(len(y)) / sr, y, lw=0.4, color=colour)
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    axes[0].set_xlim(0, max(SAMPLE_SECONDS, real.size / sr))
    axes[-1].set_xlabel("seconds")
    fig.suptitle("A real test utterance and generated waveforms (unconditional, temperature 1)")
    return save_figure(fig, out / "waveforms.png", dpi=100)


def _table(rows: list[dict]) -> str:
    head = ("| model | parameters | updates | training CPU-min | test ELBO | test log-likelihood "
            "| per step |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        elbo = f"≥ {r['elbo']:.1f} ± {format_se(r['elbo_stderr'])}" if r["latent"] else "-"
        ll = (f"{'~' if r['latent'] else '='} {r['log_likelihood']:.1f} ± "
              f"{format_se(r['log_likelihood_stderr'])}")
        lines.append(f"| {r['model']} | {r['params']:,} | {r['steps']} | "
                     f"{r['train_cpu_s'] / 60:.1f} | {elbo} | {ll} | "
                     f"{r['log_likelihood_per_step']:.2f} |")
    return "\n".join(lines)


def _gap_line(g: dict) -> str:
    se = g["se"]
    z = f", {g['gap'] / se:+.1f} se" if se else ""
    return (f"- {g['vrnn']} − {g['rnn']}: **{g['gap']:+.1f}** nats per sequence "
            f"(paired standard error {format_se(se)}{z})")


def _results_link(out: Path) -> str:
    """docs/RESULTS.md as a link relative to the report where the checkout has it."""
    if RESULTS_DOC.exists():
        rel = Path(os.path.relpath(RESULTS_DOC, out.resolve())).as_posix()
        return f"[docs/RESULTS.md]({rel}#handwriting)"
    return "`docs/RESULTS.md` in the repository (section `handwriting`)"


def _listen(out: Path, label: str, files: list[str], ext: str) -> str:
    links = [f"[{Path(f).name}]({Path(f).relative_to(out).as_posix()})" for f in files
             if Path(f).suffix.lower() == ext]
    return f"- {label}: " + " ".join(links) if links else ""


def _write_report(out: Path, results: dict, info) -> Path:
    rows = list(results["models"].values())
    vrnn = rows[0]
    rnns = " and ".join(r["model"] for r in rows[1:])
    data, quick, figs = results["data"], results["quick"], results["figures"]
    audio = info.kind == "audio"
    lines = [f"# vrnn demo: {vrnn['model']} against {rnns} on {data}", ""]
    if results["fallback"]:
        lines += [f"**The speech data are not installed, so this demo ran on `{data}` (Bach "
                  f"chorales, binary piano rolls) instead.** To see the paper's comparison on raw "
                  f"speech, install them with `{results['install_hint']}` (or `make data` as "
                  f"root) and run `make demo` again.", ""]
    lines += [
        f"Data: `{info.name}` ({info.kind}, {info.x_dim} values per step), source: "
        f"{info.source}. Test sequences evaluated: {vrnn['n_sequences']}"
        + (" (whole utterances)." if audio else "."), "",
        "Average log-likelihood per test sequence in nats, summed over time (the paper's Table 1 "
        "unit; higher is better), ± the standard error over sequences. The VRNN's ELBO is "
        f"written `≥`, its {vrnn['num_samples']}-sample importance-sampled estimate `~`; the "
        "RNNs' likelihood is exact (`=`).", "",
        _table(rows), "",
        "The VRNN minus each RNN on the same test sequences (the VRNN's importance-sampled "
        "estimate; paired standard error over sequences):", "",
        *(_gap_line(g) for g in results["gaps"]), "",
    ]
    if vrnn.get("ess_mean") is not None:
        lines += [f"The VRNN's {vrnn['num_samples']} importance weights have an effective sample "
                  f"size of {vrnn['ess_mean']:.1f} on average over these test sequences: on "
                  "long sequences importance sampling degenerates and the estimate rests on "
                  "about one trajectory per sequence. Both `≥` and `~` are lower bounds on "
                  "log p(x) (the `~` one in expectation), so the gaps understate the VRNN.", ""]
    above = all(g["gap"] > 0 for g in results["gaps"])
    lines += [("The paper's claim, a VRNN above the RNNs, **holds** in this run" if above else
               "The paper's claim, a VRNN above the RNNs, **does not hold** in this run")
              + f" ({results['preset']} preset, "
              + ("a handful of updates" if quick else
                 f"{results['minutes_per_model']:g} CPU-minutes of training per model")
              + ", far from convergence)."]
    if audio:
        lines[-1] += (" The paper's TIMIT numbers (full size, trained to convergence): RNN-Gauss "
                      "-1900, RNN-GMM 26643, VRNN-Gauss ≥ 28805, ~ 30235. Our 20-minute study "
                      "finds every VRNN far above both RNNs on speech.")
    lines += ["", "Where the claim does not hold: on handwriting (the LASA pen strokes) our "
              "20-minute study finds every VRNN below both RNNs (RNN-GMM 1435.9 nats per "
              "sequence against VRNN-GMM ~ 1276.2, a paired gap of -159.6 ± 26.3); see "
              f"{_results_link(out)}.", ""]
    if quick:
        lines += ["**Quick mode**: tiny models and a handful of steps; the numbers mean nothing.",
                  ""]
    lines += ["## Listen" if audio else "## Generated music", ""]
    ext = ".wav" if audio else ".mid"
    lines += [x for x in (_listen(out, "real test " + ("utterance" if audio else "chorale"),
                                  [figs.get("real_wav" if audio else "real_mid", "")], ext),
                          *(_listen(out, f"{r['model']} (generated)", r["files"], ext)
                            for r in rows)) if x]
    lines.append("")
    if "waveforms" in figs:
        lines += ["## Waveforms", "", f"![waveforms]({Path(figs['waveforms']).name})", ""]
    else:
        lines += ["## Samples", ""]
        for r in rows:
            lines += [f"![{r['model']} samples]({Path(p).relative_to(out).as_posix()})"
                      for p in r["files"] if Path(p).suffix.lower() == ".png"]
        real_png = figs.get("real_png")
        if real_png:
            lines += [f"![real test sequence]({Path(real_png).relative_to(out).as_posix()})"]
        lines.append("")
    lines += ["## KL per time step (the paper's Figure 2)", "",
              f"![KL per step]({Path(figs['kl']).name})", ""]
    if "learning_curves" in figs:
        curves = Path(figs["learning_curves"]).name
        lines += ["## Learning curves", "", f"![learning curves]({curves})", ""]
    t = results["timing"]
    lines += [
        "## Budgets and timings", "",
        f"Every model: preset `{results['preset']}`, batch {BATCH}, Adam 3e-4, "
        + ("8 updates" if quick else f"{MINUTES:g} CPU-minutes of training (the same for all)")
        + ", one thread, " + ("one process per model, all at once" if t["parallel"]
                              else "one model after the other")
        + f", on {t['cores']} cores. Whole demo: {t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} "
        f"CPU-seconds ({platform.processor() or platform.machine()}, torch {torch.__version__}).",
        "",
        "| model | updates | best update | stopped | training s (CPU) | evaluation s (CPU) |",
        "|---|---:|---:|---|---:|---:|",
        *(f"| {r['model']} | {r['steps']} | {r['best_step']} | {r['stopped']} | "
          f"{r['train_s']:.0f} ({r['train_cpu_s']:.0f}) | {r['eval_s']:.0f} "
          f"({r['eval_cpu_s']:.0f}) |" for r in rows), "",
        "## Reproduce or go further", "",
        "```",
        *(f"vrnn train --data {data} --model {r['key']} --preset {PRESET} --max-minutes "
          f"{MINUTES:g} --budget-clock cpu --batch-size {BATCH} --out {out / r['key']} "
          "--overwrite" for r in rows),
        *(f"vrnn evaluate {out / r['key'] / 'best.pt'} --samples {EVAL_SAMPLES}" for r in rows),
        f"vrnn sample {out / vrnn['key'] / 'best.pt'} --num 4"
        + (" --steps 80" if audio else ""),
        f"vrnn reproduce --data {data}   # the 20-minute study behind docs/RESULTS.md",
        "```", "",
    ]
    return write_text(out / "report.md", "\n".join(lines))

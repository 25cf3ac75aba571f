"""``vrnn demo`` (``make demo``): the paper's comparison in miniature, on data that installs with
the project, in a few minutes on two CPU cores.

It trains a VRNN-GMM and its parameter-matched RNN-GMM baseline (preset ``small``) on the
``handwriting`` pen strokes, evaluates both on the test split the paper's way (ELBO and a 40-sample
importance-sampled log-likelihood for the VRNN, the exact log-likelihood for the RNN), draws
samples beside real test lines, plots the learning curves, and writes ``report.md`` with the table,
the pictures and the timings into ``runs/demo/``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from vrnn.evaluate import evaluate_sequences
from vrnn.files import check_folder, write_text
from vrnn.model import count_parameters
from vrnn.report import format_se, paired_gap
from vrnn.sampling import save_npy
from vrnn.train import train
from vrnn.train_config import TrainConfig

DATA = "handwriting"
MODELS = ("vrnn-gmm", "rnn-gmm")
PRESET = "small"
STEPS = {"vrnn-gmm": 500, "rnn-gmm": 500}
"""The same number of updates for both models (a fair comparison needs the same budget)."""
MINUTES = {"vrnn-gmm": 3.0, "rnn-gmm": 3.0}
"""The same cap on training CPU time for both (a slow machine stops early, saving what it has;
the report gives the updates each model reached). CPU time, not wall time: on a busy machine a
wall-clock cap gave one model 5 updates and the other 205."""
BATCH = 20  # the paper's handwriting batch
EVAL_SAMPLES = 40  # the paper's S
MAX_TEST = 200  # test lines evaluated (all of them when fewer)
NUM_SAMPLES = 6


def _pad_to(seqs: list[np.ndarray], steps: int) -> np.ndarray:
    """Crop / zero-pad ``(T_i, D)`` arrays to one ``(N, steps, D)`` array (zero = no movement)."""
    out = np.zeros((len(seqs), steps, seqs[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(seqs):
        n = min(steps, len(s))
        out[i, :n] = s[:n]
    return out


def run_demo(out: Path = Path("runs/demo"), *, quick: bool = False, seed: int = 0) -> Path:
    """Run the demo into ``out``; returns the path of ``report.md``.

    ``quick``: tiny models and a few steps (a smoke test of the whole pipeline, in seconds).
    """
    from vrnn.checkpoint import load_checkpoint, model_from_checkpoint
    from vrnn.data import load_dataset
    from vrnn.render import plot_learning_curves, write_samples

    demo_started = time.time()
    out = check_folder(out, "--out")
    # One thread: the small models gain little from more, and an OpenMP team that shares its
    # cores with other work can run orders of magnitude slower (seen: 28 s per update).
    torch.set_num_threads(1)
    print(f"vrnn demo: loading the {DATA!r} data set")
    ds = load_dataset(DATA)
    info = ds.info
    test = ds.test[:MAX_TEST]
    rows, curves = [], {}
    for name in MODELS:
        steps = 8 if quick else STEPS[name]
        cfg = TrainConfig(
            data=DATA, model=name, preset="tiny" if quick else PRESET, max_steps=steps,
            out_dir=str(out / name), overwrite=True, seed=seed, batch_size=BATCH,
            val_interval=max(1, steps // 4), val_max_sequences=100,
            log_interval=max(1, steps // 50),
            max_minutes=None if quick else MINUTES[name], budget_clock="cpu", device="cpu",
            tensorboard=False)
        print(f"\n[{name}] training {steps} steps at preset {cfg.preset} -> {cfg.out_dir}")
        started = time.time()
        result = train(cfg, dataset=ds)
        t_train = time.time() - started

        model = model_from_checkpoint(load_checkpoint(result.best_checkpoint))
        print(f"[{name}] evaluating on {len(test)} test lines")
        started = time.time()
        s = 4 if quick else EVAL_SAMPLES
        res = evaluate_sequences(model, test[:8] if quick else test, num_samples=s, seed=seed)
        summary = res.summary()
        t_eval = time.time() - started

        steps_out = int(np.median([len(x) for x in test]))
        gen = torch.Generator().manual_seed(seed)
        x = model.sample(NUM_SAMPLES, steps_out, generator=gen).numpy()  # (N, T, D)
        samples = np.asarray(info.denormalise(x), dtype=np.float32)
        real = np.asarray(info.denormalise(_pad_to(test[:NUM_SAMPLES], steps_out)),
                          dtype=np.float32)
        save_npy(out / name / "samples.npy", samples)
        pictures = list(write_samples(samples, info, out / name, prefix="sample", real=real))
        rows.append({"model": model.config.name, "key": name, "latent": model.is_latent,
                     "params": count_parameters(model), "steps": result.step,
                     "stopped": result.stopped, "train_s": t_train, "eval_s": t_eval,
                     "pictures": pictures, "ll_seq": res.log_likelihood, **summary})
        if result.metrics_csv:
            curves[model.config.name] = Path(result.metrics_csv)
    curve_png = plot_learning_curves(curves, out / "learning_curves.png")
    total = time.time() - demo_started
    report = _write_report(out, rows, curve_png, total, quick, info)
    print("\n" + _table(rows))
    print(f"\ndemo finished in {total:.0f} s. Open {report} (pictures and table) "
          f"and the run folders {', '.join(str(out / m) for m in MODELS)}.")
    return report


def _table(rows: list[dict]) -> str:
    head = ("| model | parameters | steps | test ELBO | test log-likelihood | per step | "
            "train s | eval s |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        elbo = f">= {r['elbo']:.1f} +- {format_se(r['elbo_stderr'])}" if r["latent"] else "-"
        ll = (f"{'~' if r['latent'] else '='} {r['log_likelihood']:.1f} +- "
              f"{format_se(r['log_likelihood_stderr'])}")
        lines.append(f"| {r['model']} | {r['params']:,} | {r['steps']} | {elbo} | {ll} | "
                     f"{r['log_likelihood_per_step']:.3f} | {r['train_s']:.0f} | "
                     f"{r['eval_s']:.0f} |")
    return "\n".join(lines)


def _write_report(out: Path, rows: list[dict], curve_png: Path | None, total: float,
                  quick: bool, info) -> Path:
    vrnn_row = next((r for r in rows if r["latent"]), None)
    rnn_row = next((r for r in rows if not r["latent"]), None)
    lines = [
        "# vrnn demo: VRNN-GMM against its RNN-GMM baseline on handwriting", "",
        f"Data: `{info.name}` ({info.kind}, {info.x_dim} values per step), source: "
        f"{info.source}. Test lines evaluated: {rows[0]['n_sequences']}.", "",
        "Average log-likelihood per test sequence in nats, summed over time (the paper's Table 1 "
        "unit; higher is better), +- the standard error over sequences. The VRNN's ELBO is "
        f"written `>=`, its {(vrnn_row or rows[0])['num_samples']}-sample importance-sampled "
        "estimate `~`; the RNN's likelihood is exact (`=`).", "",
        _table(rows), "",
    ]
    if vrnn_row and rnn_row:
        gap, se = paired_gap(vrnn_row["ll_seq"], rnn_row["ll_seq"])
        lines += [f"VRNN minus RNN: {gap:+.1f} nats per sequence (paired standard error "
                  f"{format_se(se)} on the same test lines; the VRNN's is the importance-sampled "
                  "estimate). The paper's IAM-OnDB numbers (full size, trained to "
                  "convergence): RNN-GMM 1358, VRNN-GMM >= 1384, ~ 1384. "
                  "A few minutes of CPU training at preset `small` is far from convergence, so "
                  "the ranking here is indicative only; `vrnn train --preset paper` on a GPU "
                  "runs the real thing.", ""]
    if quick:
        lines += ["**Quick mode**: tiny models and a handful of steps; the numbers mean nothing.",
                  ""]
    if curve_png is not None:
        lines += ["## Learning curves", "", f"![learning curves]({curve_png.name})", ""]
    for r in rows:
        pics = [p for p in r["pictures"] if Path(p).suffix.lower() == ".png"]
        lines += [f"## {r['model']} samples (beside real test lines)", ""]
        lines += [f"![{r['model']}]({Path(p).relative_to(out).as_posix()})" for p in pics] or \
            [f"(raw samples in `{r['key']}/samples.npy`)"]
        lines.append("")
    lines += [
        "## Timings", "",
        f"Total {total:.0f} s on {torch.get_num_threads()} CPU threads "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}). "
        + "; ".join(f"{r['model']}: {r['steps']} steps in {r['train_s']:.0f} s "
                    f"({r['stopped']}), evaluation {r['eval_s']:.0f} s" for r in rows) + ".", "",
        "## Reproduce or go further", "",
        "```",
        *(f"vrnn train --data {DATA} --model {r['key']} --preset {PRESET} "
          f"--max-steps {STEPS[r['key']]} --batch-size {BATCH} --out {out / r['key']} "
          "--overwrite" for r in rows),
        *(f"vrnn evaluate {out / r['key'] / 'best.pt'} --samples {EVAL_SAMPLES}" for r in rows),
        f"vrnn sample {out / 'vrnn-gmm' / 'best.pt'} --num 8 --temperature 0.8",
        "```", "",
    ]
    return write_text(out / "report.md", "\n".join(lines))

"""The figures of a ``vrnn reproduce`` study: the paper's Figure 2 statistics (KL at
transitions), Figure 3 (generated waveforms and WAV files), Figure 4 (generated strokes), piano-roll
samples, and the learning curves, written into the study's docs folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SAMPLE_SECONDS = 2.0
"""Length of generated audio for Figure 3."""


def _model(run_dir: Path):
    from vrnn.store.checkpoint import load_checkpoint, model_from_checkpoint

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

    from vrnn.commands.analysis import kl_profile

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


def _fig3_waveforms(args, info, records: dict, docs: Path, stem: str) -> dict:
    """Figure 3: three generated waveforms of RNN-GMM beside VRNN-Gauss (and their WAV files)."""
    from vrnn.commands.render import new_figure, save_figure, write_samples

    pair = [m for m in ("rnn-gmm", "vrnn-gauss") if m in records]
    if not (pair and info.sample_rate and info.frame_size):
        return {}
    figs: dict = {}
    steps = int(SAMPLE_SECONDS * info.sample_rate / info.frame_size)
    fig = new_figure(6 * len(pair), 6)
    axes = fig.subplots(3, len(pair), squeeze=False, sharey=True)
    for j, m in enumerate(pair):
        wav = _samples(_model(Path(records[m]["run_dir"])), 3, steps, info, args.seed)
        written = write_samples(wav, info, docs / f"{stem}_fig3_audio", prefix=f"{m}_sample")
        figs[f"Fig. 3 audio, {records[m]['name']}"] = [p for p in written if p.suffix == ".wav"]
        for i in range(3):
            y = wav[i].reshape(-1)  # (T * D,): the frames concatenated
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
    return figs


def _fig4_strokes(args, info, ds, records: dict, docs: Path, stem: str) -> dict:
    """Figure 4: real test lines beside samples of RNN-Gauss, RNN-GMM and VRNN-GMM."""
    from vrnn.commands.render import draw_strokes, new_figure, save_figure

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
    return {"Fig. 4: real and generated handwriting": save_figure(
        fig, docs / f"{stem}_fig4_samples.png", dpi=110)}


def _binary_samples(args, info, ds, records: dict, docs: Path, stem: str) -> dict:
    from vrnn.commands.render import write_samples

    m = next((m for m in ("vrnn-bernoulli", "rnn-bernoulli") if m in records), None)
    if m is None:
        return {}
    steps = int(np.median([len(s) for s in ds.test]))
    written = write_samples(_samples(_model(Path(records[m]["run_dir"])), 4, steps, info,
                                     args.seed), info, docs / f"{stem}_samples",
                            prefix=f"{m}_sample")
    return {f"samples of {records[m]['name']}": [p for p in written if p.suffix == ".png"]}


def _text_samples(args, info, ds, records: dict, docs: Path, stem: str) -> dict:
    """One generated passage per model, as text files beside the report."""
    from vrnn.commands.render import write_samples

    written = []
    for m, r in records.items():
        written += [p for p in write_samples(
            _samples(_model(Path(r["run_dir"])), 1, 400, info, args.seed), info,
            docs / f"{stem}_samples", prefix=f"{m}_sample") if p.suffix == ".txt"]
    return {"generated text, 400 characters per model": written} if written else {}


def make_figures(args, info, ds, records: dict, docs: Path, stem: str) -> dict:
    """The figures this data set has in the paper, into ``docs``.

    Returns ``{"figures": {label: path or [paths]}}`` and, for audio, ``kl_transitions``
    (:func:`kl_transition_stats` of the VRNN drawn in Figure 2)."""
    from vrnn.commands.analysis import figure_kl
    from vrnn.commands.render import plot_learning_curves

    figs: dict = {}
    facts: dict = {}
    curves = {records[m]["name"]: Path(records[m]["run_dir"]) / "metrics.csv" for m in records}
    png = plot_learning_curves(curves, docs / f"{stem}_learning_curves.png")
    if png:
        figs["learning curves (validation bound per sequence)"] = png
    kl_model = next((m for m in ("vrnn-gauss", "vrnn-gmm", "vrnn-bernoulli") if m in records),
                    None)
    if kl_model and info.kind in ("audio", "strokes"):
        model = _model(Path(records[kl_model]["run_dir"]))
        x = max(ds.test[:50], key=len)
        figs[f"Fig. 2: KL per step of {records[kl_model]['name']}"] = figure_kl(
            model, x, info, docs / f"{stem}_fig2_kl.png", seed=args.seed,
            title=f"{records[kl_model]['name']} on a {stem} test sequence")
        if info.kind == "audio":
            facts["kl_transitions"] = kl_transition_stats(model, ds.test[:200], args.seed)
    if info.kind == "audio":
        figs.update(_fig3_waveforms(args, info, records, docs, stem))
    if info.kind == "strokes":
        figs.update(_fig4_strokes(args, info, ds, records, docs, stem))
    if info.kind == "binary":
        figs.update(_binary_samples(args, info, ds, records, docs, stem))
    if info.kind == "text":
        figs.update(_text_samples(args, info, ds, records, docs, stem))
    return {"figures": figs, **facts}

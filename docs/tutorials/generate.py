"""Tutorial: generate handwriting with a trained model: unconditionally, at a temperature, and
primed with the start of a real drawing (docs/tutorials/generate.md).

    python docs/tutorials/generate.py --out docs/tutorials/figures   # the site's size, ~10 seconds
    python docs/tutorials/generate.py --out /tmp/gen --tiny          # a few seconds (the tests)

Writes generate-samples.png (unconditional samples of a VRNN and an RNN at two temperatures) and
generate-primed.png (continuations of real drawings).
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


# --8<-- [start:ink]
def ink(frames, info) -> np.ndarray:
    """(T, 3) normalised (dx, dy, pen up) frames -> (T, 2) pen positions on the page: the
    offsets back on their own scale (``info.mean``, ``info.std`` of the training split), summed."""
    offsets = np.asarray(frames)[:, :2] * np.asarray(info.std[:2]) + np.asarray(info.mean[:2])
    return offsets.cumsum(0)
# --8<-- [end:ink]


def draw(ax, xy: np.ndarray, **style) -> None:
    ax.plot(xy[:, 0], xy[:, 1], **style)
    ax.set_aspect("equal")
    ax.axis("off")


def main(out: pathlib.Path, tiny: bool) -> None:
    # --8<-- [start:load]
    models = {"VRNN-GMM": vrnn.load("handwriting-vrnn-gmm"),
              "RNN-GMM": vrnn.load("handwriting-rnn-gmm")}  # the same size, no latents
    data = load_dataset("handwriting")  # the LASA shapes the two were trained on
    steps = 60 if tiny else 250  # a whole LASA drawing is 250 steps
    # --8<-- [end:load]
    num = 3 if tiny else 6

    # --8<-- [start:unconditional]
    fig, axes = plt.subplots(4, num, figsize=(1.6 * num, 6.4))
    row = 0
    for name, model in models.items():
        for temperature in (1.0, 0.5):
            x = model.sample(num, steps, temperature=temperature,
                             generator=torch.Generator().manual_seed(0))  # (num, steps, 3)
            for i in range(num):
                draw(axes[row, i], ink(x[i], data.info), color=f"C{row}", lw=1.2)
            axes[row, 0].text(-0.1, 0.5, f"{name}\ntemperature {temperature}",
                              transform=axes[row, 0].transAxes, ha="right", va="center")
            row += 1
    fig.subplots_adjust(left=0.16, right=0.99, top=0.99, bottom=0.01)
    fig.savefig(out / "generate-samples.png", dpi=90)
    plt.close(fig)
    # --8<-- [end:unconditional]

    # --8<-- [start:primed]
    model, prefix = models["VRNN-GMM"], (20 if tiny else 80)
    shown = data.test[:num]  # whole drawings the models never saw
    fig, axes = plt.subplots(1, num, figsize=(1.8 * num, 2.2))
    for i, (ax, real) in enumerate(zip(axes, shown)):
        real = torch.as_tensor(real)  # (250, 3)
        x = model.sample(4, len(real) - prefix, prime=real[:prefix], include_prime=True,
                         generator=torch.Generator().manual_seed(i))  # (4, 250, 3)
        draw(ax, ink(real, data.info), color="0.8", lw=4)  # the real drawing, in grey
        for k in range(4):
            draw(ax, ink(x[k], data.info), color=f"C{k}", lw=1)
        start = ink(real[:prefix], data.info)
        draw(ax, start, color="k", lw=2)  # the prefix the model read
        ax.plot(*start[-1], "ko", ms=4)  # where its continuations begin
    fig.tight_layout()
    fig.savefig(out / "generate-primed.png", dpi=90)
    plt.close(fig)
    # --8<-- [end:primed]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for the outputs")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' version (tests)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out, args.tiny)

"""The graphical structure of every family, drawn for docs/models.md: three time steps of the
generative model (solid arrows) and of the posterior q (dashed), after Figure 1 of Chung et al.
(2015). Circles are random variables (shaded: observed), squares deterministic states.

    python docs/figures/graphs.py --out docs/figures   # writes graph-<family>.png (seconds)

The edges are the conditionals of each family's docstring (src/vrnn/models/*.py, and the
equations in docs/models.md), each posterior at its default (the VRNN's filtering q, the SRNN's
and the DMM's smoothing q).
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

matplotlib.use("Agg")  # files only, no window

STEPS = ("t-1", "t", "t+1")
R = 0.23  # node radius (half the side of a square)


# One family: its rows from the top (the latent z, the deterministic state h, the frame x, the
# posterior's own state q, those it has), each (name, kind: "observed", "latent" or "state");
# the generative edges and the posterior's, each ((row, dt), (row, dt)) from a node at time
# t + dt to one at t.
FAMILIES = {
    "rnn": {
        "title": "RNN",
        "rows": {"h": ("h", "state"), "x": ("x", "observed")},
        "p": [(("h", -1), ("x", 0)), (("h", -1), ("h", 0)), (("x", 0), ("h", 0))],
        "q": [],
    },
    "vrnn": {
        "title": "VRNN",
        "rows": {"z": ("z", "latent"), "h": ("h", "state"), "x": ("x", "observed")},
        "p": [(("h", -1), ("z", 0)), (("h", -1), ("x", 0)), (("z", 0), ("x", 0)),
              (("h", -1), ("h", 0)), (("x", 0), ("h", 0)), (("z", 0), ("h", 0))],
        "q": [(("x", 0), ("z", 0)), (("h", -1), ("z", 0))],
    },
    "vrnn-i": {
        "title": "VRNN-I (prior N(0, I))",
        "rows": {"z": ("z", "latent"), "h": ("h", "state"), "x": ("x", "observed")},
        "p": [(("h", -1), ("x", 0)), (("z", 0), ("x", 0)),
              (("h", -1), ("h", 0)), (("x", 0), ("h", 0)), (("z", 0), ("h", 0))],
        "q": [(("x", 0), ("z", 0)), (("h", -1), ("z", 0))],
    },
    "srnn": {
        "title": "SRNN (smoothing q)",
        "rows": {"z": ("z", "latent"), "h": ("d", "state"), "x": ("x", "observed"),
                 "q": ("a", "state")},
        "p": [(("h", -1), ("h", 0)), (("x", -1), ("h", 0)), (("z", -1), ("z", 0)),
              (("h", 0), ("z", 0)), (("z", 0), ("x", 0)), (("h", 0), ("x", 0))],
        "q": [(("q", 1), ("q", 0)), (("x", 0), ("q", 0)), (("h", 0), ("q", 0)),
              (("q", 0), ("z", 0)), (("z", -1), ("z", 0))],
    },
    "dmm": {
        "title": "DMM (smoothing q)",
        "rows": {"z": ("z", "latent"), "x": ("x", "observed"), "q": ("r", "state")},
        "p": [(("z", -1), ("z", 0)), (("z", 0), ("x", 0))],
        "q": [(("q", 1), ("q", 0)), (("x", 0), ("q", 0)), (("q", 0), ("z", 0)),
              (("z", -1), ("z", 0))],
    },
    "storn": {
        "title": "STORN (prior N(0, I))",
        "rows": {"z": ("z", "latent"), "h": ("h", "state"), "x": ("x", "observed"),
                 "q": ("g", "state")},
        "p": [(("h", -1), ("h", 0)), (("x", -1), ("h", 0)), (("z", 0), ("h", 0)),
              (("h", 0), ("x", 0))],
        "q": [(("q", -1), ("q", 0)), (("x", 0), ("q", 0)), (("q", 0), ("z", 0))],
    },
}


def _edge(ax, start: tuple[float, float], end: tuple[float, float], dashed: bool,
          bend: float) -> None:
    colour = "tab:red" if dashed else "black"
    ax.add_patch(FancyArrowPatch(
        start, end, arrowstyle="-|>", mutation_scale=10, lw=1.1, color=colour,
        linestyle=(0, (3, 2)) if dashed else "-", shrinkA=R * 72 * 0.9, shrinkB=R * 72 * 0.9,
        connectionstyle=f"arc3,rad={bend}", zorder=1))


def draw(family: str, path: pathlib.Path) -> None:
    spec = FAMILIES[family]
    rows = spec["rows"]
    row_y = {row: float(len(rows) - 1 - i) for i, row in enumerate(rows)}

    def _pos(node: tuple[str, int]) -> tuple[float, float]:
        row, t = node
        return 1.6 * t, row_y[row]

    fig, ax = plt.subplots(figsize=(4.6, 0.9 + 0.95 * len(rows)))
    ax.set_aspect("equal")
    ax.axis("off")
    ys = list(row_y.values())
    ax.set_xlim(-2.45, 2.45)
    ax.set_ylim(min(ys) - 0.45, max(ys) + 0.75)
    # the edges of every time step whose ends are both drawn
    for key, dashed in (("p", False), ("q", True)):
        for t in (-1, 0, 1):
            for (ra, da), (rb, db) in spec[key]:
                a, b = (ra, t + da), (rb, t + db)
                if not (-1 <= a[1] <= 1 and -1 <= b[1] <= 1):
                    continue
                (xa, ya), (xb, yb) = _pos(a), _pos(b)
                bend = 0.0
                if xa == xb and abs(ya - yb) > 1.5:  # past a node of its column: around it,
                    side = -1 if dashed else 1  # q's edges on the left, p's on the right
                    bend = -side * 0.3 if yb < ya else side * 0.3  # arc3 bends by rad * dy
                elif dashed and ((ra, da), (rb, db)) in spec["p"]:  # q reads what p reads
                    bend = 0.25
                _edge(ax, (xa, ya), (xb, yb), dashed, bend)
    for row, (name, kind) in rows.items():
        for t, label in zip((-1, 0, 1), STEPS):
            x, y = _pos((row, t))
            face = "0.78" if kind == "observed" else "white"
            if kind == "state":
                patch = Rectangle((x - R, y - R), 2 * R, 2 * R, fc=face, ec="black", lw=1.2,
                                  zorder=2)
            else:
                patch = Circle((x, y), R, fc=face, ec="black", lw=1.2, zorder=2)
            ax.add_patch(patch)
            ax.text(x, y, f"${name}_{{{label}}}$", ha="center", va="center", fontsize=9,
                    zorder=3)
    ax.text(-2.4, max(ys) + 0.55, spec["title"], fontsize=11, ha="left", va="center")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(out: pathlib.Path) -> None:
    for family in FAMILIES:
        draw(family, out / f"graph-{family}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for the PNGs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out)

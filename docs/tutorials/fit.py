"""Tutorial: train a VRNN and an RNN on your own arrays and compare them (docs/tutorials/fit.md).

    python docs/tutorials/fit.py --out docs/tutorials/figures   # the site's size, ~2 CPU-minutes
    python docs/tutorials/fit.py --out /tmp/fit --tiny          # a few seconds (the tests run it)

Writes fit-curves.png (the learning curves) and fit-table.md (held-out log-likelihoods).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

import vrnn

matplotlib.use("Agg")  # files only, no window
PM = "\u00a0±\u00a0"  # "estimate ± standard error", kept on one line in a table


# --8<-- [start:data]
def jumping_levels(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` sequences of ragged length (40 to 120 steps), each a (T, 2) array: a level that
    holds and, with probability 0.1 at every step, jumps to a fresh N(0, 2^2) draw, read
    through N(0, 0.1^2) noise."""
    seqs = []
    for T in rng.integers(40, 121, size=n):
        jumps = rng.random(T) < 0.1
        jumps[0] = True
        levels = rng.normal(0.0, 2.0, size=(T, 2))
        held = levels[np.maximum.accumulate(np.where(jumps, np.arange(T), 0))]  # (T, 2)
        seqs.append((held + 0.1 * rng.standard_normal((T, 2))).astype(np.float32))
    return seqs
# --8<-- [end:data]


def main(out: pathlib.Path, tiny: bool) -> None:
    torch.manual_seed(0)
    # --8<-- [start:split]
    rng = np.random.default_rng(0)
    n_train, n_valid, n_test = (64, 16, 24) if tiny else (400, 50, 100)
    train = jumping_levels(n_train, rng)
    valid = jumping_levels(n_valid, rng)
    test = jumping_levels(n_test, rng)
    # --8<-- [end:split]

    # --8<-- [start:fit]
    steps = 40 if tiny else 1500
    models, histories = {}, {}
    for name in ("vrnn-gauss", "rnn-gauss"):
        model = vrnn.build_model(vrnn.model_config(name, x_dim=2, preset="tiny"))
        histories[name] = vrnn.fit(model, train, valid, steps=steps, batch_size=32, seed=0,
                                   progress=False)
        models[name] = model
        print(f"{name}: {vrnn.count_parameters(model):,} parameters, {steps} updates in "
              f"{histories[name].seconds:.0f} s, best validation bound "
              f"{histories[name].best_bound:.1f} at update {histories[name].best_step}")
    # --8<-- [end:fit]

    # --8<-- [start:curves]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (name, history), colour in zip(histories.items(), ("C0", "C1")):
        ax.plot(*history.column("train_bound"), color=colour, alpha=0.35, lw=1)
        ax.plot(*history.column("valid_bound"), "o-", color=colour, ms=3,
                label=f"{name} (validation)")
    ax.set_xlabel("update")
    ax.set_ylabel("bound, nats per sequence\n(normalised scale)")
    ax.set_title("Training (faint) and validation bounds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fit-curves.png", dpi=110)
    plt.close(fig)
    # --8<-- [end:curves]

    # --8<-- [start:compare]
    draws = torch.Generator().manual_seed(1)
    est = {name: m.log_prob(test, method="is", num_samples=100, generator=draws)
           for name, m in models.items()}
    ll = {name: e.log_likelihood.numpy() for name, e in est.items()}  # (n_test,) nats
    steps_total = sum(len(s) for s in test)
    diff = ll["vrnn-gauss"] - ll["rnn-gauss"]  # paired: the same sequences
    gap, gap_se = diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff))
    # --8<-- [end:compare]

    rows = ["| model | log p(x), nats per sequence | per step | estimator | "
            "Monte Carlo error |", "|---|---:|---:|---|---:|"]
    for name, e in est.items():
        mc = np.sqrt((e.stderr.numpy() ** 2).sum()) / len(test)  # of the mean over sequences
        rows.append(f"| `{name}` | {ll[name].mean():.1f} | {ll[name].sum() / steps_total:.3f} "
                    f"| {e.method} (S={e.num_samples}) | {mc:.2f} |")
    rows.append(f"| VRNN - RNN (paired) | {gap:+.1f}{PM}{gap_se:.1f} | "
                f"{diff.sum() / steps_total:+.3f} | | |")
    (out / "fit-table.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))

    # --8<-- [start:save]
    with tempfile.TemporaryDirectory() as tmp:
        path = vrnn.save(models["vrnn-gauss"], pathlib.Path(tmp) / "vrnn-jumps.pt")
        again = vrnn.load(path)
    assert again.config.x_scale == models["vrnn-gauss"].config.x_scale  # normalisation kept
    check = again.log_prob(test, method="is", num_samples=100,
                           generator=torch.Generator().manual_seed(1))
    # the same draws (seed 1) as the first estimate above: the same numbers
    np.testing.assert_allclose(check.log_likelihood.numpy(), ll["vrnn-gauss"], rtol=1e-5)
    # --8<-- [end:save]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for the outputs")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' version (tests)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out, args.tiny)

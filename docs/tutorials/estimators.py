"""Tutorial: log p(x) of one trained model by importance sampling and by a particle filter, and
how far to trust each (docs/tutorials/estimators.md).

    python docs/tutorials/estimators.py --out docs/tutorials/figures   # the site's, ~2 CPU-minutes
    python docs/tutorials/estimators.py --out /tmp/est --tiny          # a few seconds (the tests)

Writes estimators-samples.png (the estimates and their effective sample sizes against the
number of samples), estimators-samples.md and estimators-sequences.md (the same as tables, and
per sequence at the largest number).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

import vrnn
from vrnn.data import load_dataset

matplotlib.use("Agg")  # files only, no window
PM = "\u00a0±\u00a0"  # "estimate ± standard error", kept on one line in a table


def main(out: pathlib.Path, tiny: bool) -> None:
    # --8<-- [start:load]
    model = vrnn.load("handwriting-vrnn-gmm")  # ships with vrnn: VRNN-GMM, preset small
    data = load_dataset("handwriting")  # LASA pen strokes, normalised as the model was trained
    test = data.test[:3] if tiny else data.test  # (T_i, 3) arrays: (dx, dy, pen up)
    # --8<-- [end:load]
    sizes = (1, 4, 16) if tiny else (1, 2, 4, 8, 16, 32, 64, 128)

    # --8<-- [start:estimate]
    results = {"is": {}, "smc": {}}  # method -> S -> (vrnn.LogProb, CPU seconds)
    for method in results:
        for S in sizes:
            start = time.process_time()  # CPU seconds, whatever else runs
            est = model.log_prob(test, method=method, num_samples=S,
                                 generator=torch.Generator().manual_seed(S))
            results[method][S] = est, time.process_time() - start
    # --8<-- [end:estimate]

    # --8<-- [start:summary]
    def summary(est: vrnn.LogProb) -> tuple[float, float]:
        """The mean over the sequences and its Monte Carlo standard error."""
        n = len(est.log_likelihood)
        return est.log_likelihood.mean().item(), est.stderr.pow(2).sum().sqrt().item() / n
    # --8<-- [end:summary]

    # --8<-- [start:figure]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, colour in (("is", "C0"), ("smc", "C1")):
        mean, se = np.array([summary(results[method][S][0]) for S in sizes]).T
        left.errorbar(sizes, mean, yerr=2 * se, fmt="o-", ms=3, capsize=2, color=colour,
                      label={"is": "importance sampling", "smc": "particle filter (4 filters)"}
                      [method])
        ess_mean = [results[method][S][0].ess_mean.mean().item() / S for S in sizes]
        ess_min = [results[method][S][0].ess_min.mean().item() / S for S in sizes]
        right.plot(sizes, ess_mean, "o-", ms=3, color=colour, label=f"{method}: mean")
        if method == "smc":
            right.plot(sizes, ess_min, "s--", ms=3, color=colour, label=f"{method}: least")
    elbo = [results["is"][S][0].elbo.mean().item() for S in sizes]
    left.plot(sizes, elbo, ":", color="grey", label="ELBO (IS draws)")
    left.set(xscale="log", xlabel="samples (IS) or particles per filter (SMC), S",
             ylabel="log p(x), nats per sequence", title="The estimate, ± 2 standard errors")
    right.set(xscale="log", yscale="log", xlabel="S", ylabel="ESS / S",
              title="Effective sample size as a fraction of S")
    for ax in (left, right):
        ax.set_xticks(sizes, [str(S) for S in sizes])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "estimators-samples.png", dpi=110)
    plt.close(fig)
    # --8<-- [end:figure]

    rows = ["| S | IS | ESS | CPU s | SMC | ESS mean | ESS least | resampled | CPU s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for S in sizes:
        (is_est, is_s), (smc_est, smc_s) = results["is"][S], results["smc"][S]
        (is_m, is_se), (smc_m, smc_se) = summary(is_est), summary(smc_est)
        rows.append(f"| {S} | {is_m:.1f}{PM}{is_se:.1f} | {is_est.ess_mean.mean():.1f} | "
                    f"{is_s:.1f} | {smc_m:.1f}{PM}{smc_se:.1f} | {smc_est.ess_mean.mean():.1f} "
                    f"| {smc_est.ess_min.mean():.1f} | {smc_est.resamples.mean():.0f} | "
                    f"{smc_s:.1f} |")
    (out / "estimators-samples.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))

    # --8<-- [start:per-sequence]
    S = sizes[-1]
    is_est, smc_est = results["is"][S][0], results["smc"][S][0]
    rows = [f"| sequence | steps | ELBO | IS, S={S} | ESS | SMC, S={S} | ESS mean | ESS least |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, seq in enumerate(test):
        rows.append(f"| {i} | {len(seq)} | {is_est.elbo[i]:.1f} | {is_est.log_likelihood[i]:.1f}"
                    f"{PM}{is_est.stderr[i]:.1f} | {is_est.ess_mean[i]:.1f} | "
                    f"{smc_est.log_likelihood[i]:.1f}{PM}{smc_est.stderr[i]:.1f} | "
                    f"{smc_est.ess_mean[i]:.1f} | {smc_est.ess_min[i]:.1f} |")
    # --8<-- [end:per-sequence]
    (out / "estimators-sequences.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for the outputs")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' version (tests)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out, args.tiny)

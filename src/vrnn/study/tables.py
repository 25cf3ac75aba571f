"""Tables and claim checks for the paper's comparison (Table 1), from per-sequence results.

Every model of a study is evaluated on the same test sequences in the same order, so gaps between
two models are judged by the *paired* standard error: the spread over sequences of the per-sequence
difference, divided by sqrt(N). That is far tighter, and more honest, than comparing two means
each with its own error bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vrnn.evaluation.stats import format_se, mean_se, paired_gap

# Table 1's row order; binary data has Bernoulli models in the same roles.
TABLE_ROWS = ("RNN-Gauss", "RNN-GMM", "VRNN-I-Gauss", "VRNN-Gauss", "VRNN-GMM")
BINARY_ROWS = ("RNN-Bernoulli", "VRNN-I-Bernoulli", "VRNN-Bernoulli")


@dataclass
class ModelResult:
    """One model's test-split evaluation: per-sequence arrays in nats (same sequence order for
    every model of a study), and whether it has latents (ELBO and IS) or an exact likelihood."""

    name: str
    latent: bool
    log_likelihood: np.ndarray
    elbo: np.ndarray
    n_params: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> ModelResult:
        return cls(d["name"], bool(d["latent"]), np.asarray(d["log_likelihood"], dtype=float),
                   np.asarray(d["elbo"], dtype=float), int(d.get("n_params", 0)))

    def to_dict(self) -> dict:
        return {"name": self.name, "latent": self.latent, "n_params": self.n_params,
                "log_likelihood": self.log_likelihood.tolist(), "elbo": self.elbo.tolist()}


def format_cell(r: ModelResult | None) -> str:
    """``>= ELBO, ~ IS (± se)`` for a VRNN, ``LL ± se`` for an RNN, as in Table 1."""
    if r is None:
        return "-"
    ll, se = mean_se(r.log_likelihood)
    if not r.latent:
        return f"{ll:.1f} ± {format_se(se)}"
    elbo, _ = mean_se(r.elbo)
    return f"≥ {elbo:.1f}, ~ {ll:.1f} ± {format_se(se)}"


def format_table(results: dict[str, dict[str, ModelResult]]) -> str:
    """Markdown in the layout of the paper's Table 1: models down, data sets across.

    ``results`` maps data set -> model name -> result. Average log-likelihood per test sequence in
    nats, higher is better.
    """
    datasets = list(results)
    present = {name for per in results.values() for name in per}
    rows = [r for r in (*TABLE_ROWS, *BINARY_ROWS) if r in present]
    rows += sorted(present - set(rows))
    lines = ["| model | " + " | ".join(datasets) + " |",
             "|---|" + "---|" * len(datasets)]
    for row in rows:
        cells = [format_cell(results[d].get(row)) for d in datasets]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Claim:
    """One claim of the paper judged on a study: ``holds`` is the sign of the paired ``gap``
    (None: reported, not tested); ``se`` its paired standard error (None for one sequence)."""

    text: str
    holds: bool | None
    gap: float
    se: float | None

    @property
    def z(self) -> float | None:
        """The gap in standard errors (infinite when every sequence has the same gap; None
        without a standard error)."""
        if self.se is None:
            return None
        return self.gap / self.se if self.se > 0 else math.inf * np.sign(self.gap)

    def line(self) -> str:
        verdict = {True: "holds", False: "does NOT hold", None: "not tested"}[self.holds]
        z = "n/a" if self.z is None else f"{self.z:+.1f}"
        return (f"- {self.text}: {verdict} (gap {self.gap:+.1f} nats/sequence, paired se "
                f"{format_se(self.se)}, {z} se)")


def assess_claims(per_model: dict[str, ModelResult]) -> list[Claim]:
    """The paper's claims on one data set, each as a paired gap in the IS / exact log-likelihood:
    every VRNN above every RNN; VRNN-Gauss above VRNN-I-Gauss; VRNN-GMM against VRNN-Gauss
    (reported, the paper finds no consistent order). A claim "holds" when the gap is positive
    (the sign of the estimate); its size in standard errors is given beside it."""
    claims = []
    rnns = [r for r in per_model.values() if not r.latent]
    vrnns = [r for r in per_model.values() if r.latent]
    for v in vrnns:
        for r in rnns:
            gap, se = paired_gap(v.log_likelihood, r.log_likelihood)
            claims.append(Claim(f"{v.name} above {r.name}", gap > 0, gap, se))
    pairs = [("VRNN-Gauss", "VRNN-I-Gauss"), ("VRNN-Bernoulli", "VRNN-I-Bernoulli"),
             ("VRNN-Categorical", "VRNN-I-Categorical")]
    for a, b in pairs:
        if a in per_model and b in per_model:
            gap, se = paired_gap(per_model[a].log_likelihood, per_model[b].log_likelihood)
            claims.append(Claim(f"{a} above {b} (a prior that depends on the past)", gap > 0,
                                gap, se))
    if "VRNN-GMM" in per_model and "VRNN-Gauss" in per_model:
        gap, se = paired_gap(per_model["VRNN-GMM"].log_likelihood,
                             per_model["VRNN-Gauss"].log_likelihood)
        claims.append(Claim("VRNN-GMM against VRNN-Gauss", None, gap, se))
    return claims

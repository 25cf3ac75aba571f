"""Means over sequences and their standard errors; paired gaps between two models.

Every model of a comparison is evaluated on the same test sequences in the same order, so a gap
between two models is judged by the *paired* standard error: the spread over sequences of the
per-sequence difference, divided by sqrt(N).
"""

from __future__ import annotations

import math

import numpy as np


def mean_se(values: np.ndarray) -> tuple[float, float | None]:
    """Mean over sequences ``(N,)`` and its standard error, ``sd / sqrt(N)``. One sequence has no
    spread to measure: its standard error is None (JSON null, printed "n/a"), not a spurious 0."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else None


def format_se(se: float | None, digits: int = 1) -> str:
    """A standard error for people: ``n/a`` where there is none (a single sequence)."""
    return "n/a" if se is None else f"{se:.{digits}f}"


def paired_gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    """Mean of ``a - b`` over the same sequences and its paired standard error (None for one
    sequence)."""
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs results on the same sequences; got "
                         f"{a.shape} and {b.shape}")
    return mean_se(a - b)

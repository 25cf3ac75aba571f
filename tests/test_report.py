import math

import numpy as np
import pytest

from vrnn.study.tables import ModelResult, assess_claims, format_table, paired_gap


def result(name, ll, elbo=None, latent=None):
    ll = np.asarray(ll, dtype=float)
    latent = name.startswith("VRNN") if latent is None else latent
    return ModelResult(name, latent, ll, ll if elbo is None else np.asarray(elbo, dtype=float))


def test_paired_gap_uses_the_spread_of_differences():
    a = np.array([10.0, 20.0, 30.0, 40.0])
    b = a - np.array([1.0, 2.0, 1.0, 2.0])  # the same sequences, a constant-ish gap
    gap, se = paired_gap(a, b)
    assert gap == pytest.approx(1.5)
    assert se == pytest.approx(np.std([1, 2, 1, 2], ddof=1) / 2)  # not the huge unpaired spread
    with pytest.raises(ValueError, match="same sequences"):
        paired_gap(a, b[:3])


def test_table_layout_and_cells():
    res = {
        "speech": {"RNN-Gauss": result("RNN-Gauss", [1.0, 3.0]),
                   "VRNN-Gauss": result("VRNN-Gauss", [5.0, 7.0], elbo=[4.0, 6.0])},
        "handwriting": {"RNN-Gauss": result("RNN-Gauss", [2.0, 2.0])},
    }
    table = format_table(res).splitlines()
    assert table[0] == "| model | speech | handwriting |"
    assert table[2] == "| RNN-Gauss | 2.0 ± 1.0 | 2.0 ± 0.0 |"
    assert table[3] == "| VRNN-Gauss | ≥ 5.0, ~ 6.0 ± 1.0 | - |"


def test_claims_hold_and_fail_by_sign():
    per = {
        "RNN-Gauss": result("RNN-Gauss", [0.0, 1.0, 2.0]),
        "RNN-GMM": result("RNN-GMM", [5.0, 6.0, 7.5]),
        "VRNN-I-Gauss": result("VRNN-I-Gauss", [4.0, 5.0, 6.0]),
        "VRNN-Gauss": result("VRNN-Gauss", [6.0, 7.0, 8.0]),
    }
    claims = {c.text.split(" (")[0]: c for c in assess_claims(per)}
    assert claims["VRNN-Gauss above RNN-GMM"].holds
    assert claims["VRNN-Gauss above RNN-GMM"].gap == pytest.approx((1 + 1 + 0.5) / 3)
    assert not claims["VRNN-I-Gauss above RNN-GMM"].holds
    assert claims["VRNN-Gauss above VRNN-I-Gauss"].holds
    assert math.isinf(claims["VRNN-Gauss above VRNN-I-Gauss"].z)  # identical gaps: se 0
    assert "does NOT hold" in claims["VRNN-I-Gauss above RNN-GMM"].line()


def test_one_sequence_has_no_standard_error_anywhere():
    """One rule for n = 1 (the report's table, its claims and ``vrnn evaluate``'s summary): no
    standard error (None, printed n/a), never a spurious 0 that reads as certainty."""
    from vrnn.commands.evaluate import format_evaluation
    from vrnn.evaluation.sequences import EvaluationResult
    from vrnn.study.tables import format_cell, mean_se

    assert mean_se(np.array([3.0])) == (3.0, None)
    assert mean_se(np.array([3.0, 5.0])) == pytest.approx((4.0, 1.0))
    assert format_cell(result("RNN-Gauss", [2.0])) == "2.0 ± n/a"
    claim = assess_claims({"RNN-Gauss": result("RNN-Gauss", [1.0]),
                           "VRNN-Gauss": result("VRNN-Gauss", [3.0])})[0]
    assert claim.se is None and claim.z is None and "paired se n/a, n/a se" in claim.line()
    one = EvaluationResult(elbo=np.array([-4.0]), log_likelihood=np.array([-3.0]),
                           is_stderr=np.zeros(1), lengths=np.array([5]), num_samples=2)
    summary = one.summary()
    assert summary["elbo_stderr"] is None and summary["stderr"] is None
    text = format_evaluation({**summary, "name": "VRNN-Gauss", "latent": True, "data": "toy",
                              "split": "test", "step": 3})
    assert "-4.00 +- n/a" in text and "-3.00 +- n/a" in text

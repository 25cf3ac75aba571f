"""Checkpoints written by an earlier layout of the package still load and evaluate to the figures
that layout reported (tests/fixtures/landed/README.md says how they were made)."""

import json
from pathlib import Path

import pytest

from vrnn.commands.evaluate import evaluate_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "landed"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_landed_checkpoint_evaluates_to_its_figures(key):
    name, estimator = key.split("/")
    got = evaluate_checkpoint(FIXTURES / f"{name}.pt", split="test", estimator=estimator,
                              samples=8, max_sequences=6, seed=0)
    want = EXPECTED[key]
    assert (got["n_sequences"], got["n_steps"]) == (want["n_sequences"], want["n_steps"])
    # same weights, same data, same random stream: equal up to float32 summation order
    assert got["elbo"] == pytest.approx(want["elbo"], abs=2e-3)
    assert got["log_likelihood"] == pytest.approx(want["log_likelihood"], abs=2e-3)

"""``vrnn reproduce`` end to end on microscopic data: every model trained, evaluated on the same
test sequences, the Table 1 section and figures written, and the study resumable."""

import json
import shlex

import numpy as np
import pytest

from vrnn.cli import main
from vrnn.config import parse_model_name
from vrnn.reproduce import REAL_MODELS, build_parser, command_line


def display_name(model: str) -> str:
    return parse_model_name(model, "strokes")["name"]


def write_strokes(path, seed=0):
    """Pen strokes (dx, dy, pen-up) of 8-13 steps, 20/4/5 per split, ragged per split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 20), ("valid", 4), ("test", 5)):
        seqs = []
        for _ in range(n):
            t = int(rng.integers(8, 14))
            s = np.zeros((t, 3), dtype=np.float32)
            s[:, :2] = rng.normal(size=(t, 2))
            s[rng.integers(0, t, size=2), 2] = 1.0
            seqs.append(s)
        arrays[split] = np.concatenate(seqs)  # (T_1 + ... + T_n, 3)
        arrays[f"{split}_lengths"] = [len(s) for s in seqs]
    np.savez(path, **arrays)
    return path


def run(tmp_path, *extra):
    data = write_strokes(tmp_path / "pen.npz")
    args = ["reproduce", "--data", str(data), "--preset", "tiny", "--max-steps", "4",
            "--val-interval", "2", "--samples", "3", "--out", str(tmp_path / "study"),
            "--docs", str(tmp_path / "docs"), "--no-progress", "--device", "cpu", *extra]
    assert main(args) == 0
    return json.loads((tmp_path / "study" / "results.json").read_text())["models"]


def test_a_study_trains_evaluates_and_reports_every_model(tmp_path, capsys):
    records = run(tmp_path)
    assert list(records) == list(REAL_MODELS)
    for name, r in records.items():
        assert r["name"] == display_name(name)
        assert len(r["log_likelihood"]) == len(r["elbo"]) == 5  # the whole test split
        assert r["steps"] == 4 and r["latent"] == name.startswith("vrnn")
        assert r["summary"]["log_likelihood"] == pytest.approx(np.mean(r["log_likelihood"]))
        assert r["summary"]["num_samples"] == (3 if r["latent"] else 1)
        if not r["latent"]:  # an RNN's likelihood is exact: its ELBO is the same number
            np.testing.assert_allclose(r["log_likelihood"], r["elbo"], rtol=1e-6)
    docs = tmp_path / "docs"
    text = (docs / "RESULTS.md").read_text()
    assert "<!-- reproduce:pen:begin -->" in text and "vrnn reproduce --data" in text
    for name in REAL_MODELS:
        assert f"| {display_name(name)} |" in text
    assert "VRNN-Gauss above VRNN-I-Gauss" in text
    for png in ("pen_learning_curves.png", "pen_fig2_kl.png", "pen_fig4_samples.png"):
        assert (docs / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    assert "RNN-GMM" in capsys.readouterr().out


def test_a_study_resumes_and_reuses_its_evaluations(tmp_path):
    first = run(tmp_path)
    again = run(tmp_path, "--eval-only")
    assert again["vrnn-gauss"]["eval_s"] == first["vrnn-gauss"]["eval_s"]  # cached, not redone
    more = run(tmp_path, "--max-steps", "6")
    assert all(r["steps"] == 6 for r in more.values())
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert text.count("<!-- reproduce:pen:begin -->") == 1  # the section was replaced


def test_a_subset_of_models_and_bad_flags(tmp_path, capsys):
    records = run(tmp_path, "--models", "rnn-gauss,vrnn-gauss")
    assert list(records) == ["rnn-gauss", "vrnn-gauss"]
    data = str(tmp_path / "pen.npz")
    assert main(["reproduce", "--data", data, "--models", "vrnn-bernoulli"]) == 2
    assert "vrnn-bernoulli not in the study" in capsys.readouterr().err
    assert main(["reproduce", "--data", data, "--budget-minutes", "0"]) == 2
    assert "--budget-minutes" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["nonexistent-data"])
def test_unknown_data_is_named(tmp_path, capsys, bad):
    assert main(["reproduce", "--data", bad, "--out", str(tmp_path / "x")]) == 2
    assert bad in capsys.readouterr().err


def test_a_tagged_variant_keeps_its_own_runs_and_section(tmp_path):
    run(tmp_path, "--models", "vrnn-gauss")
    data = str(tmp_path / "pen.npz")
    assert main(["reproduce", "--data", data, "--tag", "anneal", "--kl-anneal-steps", "2",
                 "--models", "vrnn-gauss", "--preset", "tiny", "--max-steps", "4",
                 "--val-interval", "2", "--samples", "3", "--docs", str(tmp_path / "docs"),
                 "--out", str(tmp_path / "variant"), "--no-progress", "--device", "cpu"]) == 0
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "<!-- reproduce:pen:begin -->" in text and "<!-- reproduce:pen-anneal:begin -->" in text
    assert "--kl-anneal-steps 2" in text and "KL annealing over 2 updates" in text
    assert (tmp_path / "docs" / "pen-anneal_fig2_kl.png").exists()


def test_the_recorded_command_makes_the_same_study():
    """RESULTS.md records ``command_line``: parsed again it gives the study's settings (the
    switches and the flags a study shares with vrnn train included), without --eval-only."""
    parser = build_parser()
    args = parser.parse_args(["--data", "pen.npz", "--preset", "tiny", "--max-steps", "4",
                              "--no-progress", "--budget-clock", "wall", "--tag", "x",
                              "--batch-size", "7", "--lr", "0.001", "--eval-only"])
    words = shlex.split(command_line(args))
    assert words[:4] == ["vrnn", "reproduce", "--data", "pen.npz"] and "--eval-only" not in words
    assert vars(parser.parse_args(words[2:])) == {**vars(args), "eval_only": False}
    assert command_line(parser.parse_args(["--data", "pen.npz"])) == \
        "vrnn reproduce --data pen.npz"

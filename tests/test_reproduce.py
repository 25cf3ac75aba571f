"""``vrnn reproduce`` end to end on microscopic data: every model trained, evaluated on the same
test sequences, the Table 1 section and figures written, and the study resumable."""

import json
import shlex

import numpy as np
import pytest

from vrnn.cli import main
from vrnn.config import parse_model_name
from vrnn.reproduce import build_parser, command_line
from vrnn.studies import REAL_MODELS


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


# -- --study srnn ------------------------------------------------------------------------------

SRNN_TABLE = {  # key: (--model, posterior, res_q, name): the study's fixed entries
    "srnn-gauss": ("srnn-gauss", "smoothing", True, "SRNN (smooth + Res_q)"),
    "srnn-gauss-no-res-q": ("srnn-gauss", "smoothing", False, "SRNN (smooth)"),
    "srnn-gauss-filtering": ("srnn-gauss", "filtering", False, "SRNN (filt)"),
    "vrnn-gauss": ("vrnn-gauss", "filtering", None, "VRNN-Gauss (filt)"),
    "vrnn-gauss-smoothing": ("vrnn-gauss", "smoothing", None, "VRNN-Gauss (smooth)"),
}
TRAIN_FLAGS = {"srnn-gauss": [], "srnn-gauss-no-res-q": ["--posterior", "smoothing", "--no-res-q"],
               "srnn-gauss-filtering": ["--posterior", "filtering", "--no-res-q"],
               "vrnn-gauss": [], "vrnn-gauss-smoothing": ["--posterior", "smoothing"]}
"""The ``vrnn train`` flags the study's runs were started with, beside the shared ones."""


def test_the_srnn_study_trains_what_vrnn_train_would():
    """Each entry's TrainConfig is the one of the ``vrnn train`` command that started its run in
    <out>/<key> (posterior and Res_q written out), so the study resumes those runs."""
    import argparse
    import dataclasses

    from vrnn.presets import model_config
    from vrnn.reproduce import train_configs
    from vrnn.studies import study_entries
    from vrnn.train_config import TrainConfig, add_train_flags

    args = build_parser().parse_args(["--data", "speech", "--study", "srnn"])
    configs = train_configs(args, "audio")
    assert list(configs) == list(SRNN_TABLE)
    assert [(e.model, e.posterior, e.res_q, e.name) for e in study_entries("srnn", "audio")] \
        == list(SRNN_TABLE.values())
    train = argparse.ArgumentParser()
    add_train_flags(train)
    for key, (model, posterior, res_q, _) in SRNN_TABLE.items():
        cfg = configs[key]
        assert (cfg.model, cfg.posterior, cfg.res_q) == (model, posterior, res_q)
        assert cfg.out_dir == f"runs/reproduce/speech-srnn/{key}"
        words = shlex.split(
            f"--data speech --model {model} --preset small --max-steps 100000 --batch-size 32 "
            f"--val-interval 100 --patience 10 --budget-clock cpu --max-minutes 20 --resume auto "
            f"--no-tensorboard --out runs/reproduce/speech-srnn/{key}") + TRAIN_FLAGS[key]
        theirs = TrainConfig(**vars(train.parse_args(words)))
        assert dataclasses.replace(theirs, posterior=posterior, res_q=res_q) == cfg
        built = [model_config(c.model, x_dim=200, preset=c.preset, **c.model_overrides())
                 for c in (theirs, cfg)]
        assert built[0] == built[1] and built[1].posterior == posterior
        assert built[1].res_q == bool(res_q)
    binary = train_configs(build_parser().parse_args(
        ["--data", "chorales", "--study", "srnn", "--tag", "x"]), "binary")
    assert list(binary) == [k.replace("gauss", "bernoulli") for k in SRNN_TABLE]
    assert binary["srnn-bernoulli-filtering"].out_dir == \
        "runs/reproduce/chorales-srnn-x/srnn-bernoulli-filtering"
    assert binary["vrnn-bernoulli-smoothing"].posterior == "smoothing"


def test_srnn_claims_judge_the_paired_gaps():
    from vrnn.report import ModelResult
    from vrnn.studies import srnn_claims

    rng = np.random.default_rng(0)
    base = rng.normal(-100.0, 10.0, size=50)  # the sequences' own spread: far above the gaps

    def results(srnn_shift):
        shifts = {"srnn-gauss": srnn_shift + 1.0, "srnn-gauss-no-res-q": srnn_shift,
                  "srnn-gauss-filtering": srnn_shift - 1.0, "vrnn-gauss": 0.0,
                  "vrnn-gauss-smoothing": 0.5}
        return {k: ModelResult(SRNN_TABLE[k][3], True, base + s + rng.normal(0, 0.2, 50),
                               base + s - 3.0) for k, s in shifts.items()}

    above = srnn_claims(results(5.0))
    assert len(above) == 3 * 2 + 3 and all(c.holds and c.z > 5 for c in above)
    texts = [c.text for c in above]
    assert "SRNN (filt) above VRNN-Gauss (smooth) (SRNN above VRNN)" in texts
    assert texts[-3:] == ["SRNN (smooth) above SRNN (filt) (smoothing above filtering, SRNN)",
                          "VRNN-Gauss (smooth) above VRNN-Gauss (filt) (smoothing above "
                          "filtering, VRNN)",
                          "SRNN (smooth + Res_q) above SRNN (smooth) (Res_q above plain)"]
    assert above[0].gap == pytest.approx(6.0, abs=0.2) and "se)" in above[0].line()
    below = {c.text: c for c in srnn_claims(results(-5.0))}
    vs_vrnn = [c for t, c in below.items() if t.endswith("(SRNN above VRNN)")]
    assert len(vs_vrnn) == 6 and not any(c.holds for c in vs_vrnn)
    assert all(c.z < -5 for c in vs_vrnn) and "does NOT hold" in vs_vrnn[0].line()
    assert below["SRNN (smooth + Res_q) above SRNN (smooth) (Res_q above plain)"].holds
    elbo = srnn_claims(results(-5.0), field="elbo")  # no noise: every sequence the same gap
    assert all(c.se == pytest.approx(0, abs=1e-9) for c in elbo)
    some = results(5.0)
    del some["srnn-gauss-no-res-q"], some["vrnn-gauss-smoothing"]
    assert [c.text.split(" (")[-1] for c in srnn_claims(some)] == ["SRNN above VRNN)"] * 2


def test_a_tiny_srnn_study(tmp_path, capsys):
    data = write_strokes(tmp_path / "pen.npz")
    common = ["--data", str(data), "--study", "srnn", "--preset", "tiny", "--max-steps", "2",
              "--val-interval", "2", "--samples", "2", "--docs", str(tmp_path / "docs"),
              "--no-progress", "--device", "cpu", "--out", str(tmp_path / "study")]
    assert main(["reproduce", *common, "--models", "srnn-gauss,rnn-gauss"]) == 2
    assert "--models: rnn-gauss not in --study srnn for strokes data (srnn-gauss, " \
        "srnn-gauss-no-res-q" in capsys.readouterr().err
    assert main(["reproduce", *common, "--tag", "t",
                 "--models", "vrnn-gauss-smoothing,srnn-gauss"]) == 0
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["study"] == "srnn" and list(saved["models"]) == ["vrnn-gauss-smoothing",
                                                                  "srnn-gauss"]
    for key, r in saved["models"].items():
        assert (r["model"], r["posterior"], r["res_q"], r["name"]) == SRNN_TABLE[key]
        assert r["run_dir"] == str(tmp_path / "study" / key) and len(r["elbo"]) == 5
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    section = text[text.index("<!-- reproduce:pen-srnn-t:begin -->"):]
    assert "--study srnn" in section and "≥ 11991" in section and "-4.74" in section
    assert section.index("| SRNN (smooth + Res_q) | ≥") < section.index("| VRNN-Gauss (smooth) |")
    assert "SRNN (smooth + Res_q) above VRNN-Gauss (smooth) (SRNN above VRNN)" in section
    assert (tmp_path / "docs" / "pen-srnn-t_learning_curves.png").exists()
    assert not (tmp_path / "docs" / "pen-srnn-t_fig2_kl.png").exists()
    paper = [w for w in common if w not in ("--study", "srnn")]
    assert main(["reproduce", *paper, "--eval-only"]) == 2  # not the paper study's results
    assert "holds the results of --study srnn" in capsys.readouterr().err

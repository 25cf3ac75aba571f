"""``vrnn reproduce`` end to end on microscopic data: every model trained, evaluated on the same
test sequences, the Table 1 section and figures written, and the study resumable."""

import json
import os
import shlex
import signal

import numpy as np
import pytest
import torch
from toydata import finish_vrnn, metrics_rows, start_vrnn, vrnn, wait_until

from vrnn.cli import main
from vrnn.models.config import parse_model_name
from vrnn.study.reproduce import build_parser, command_line
from vrnn.study.studies import REAL_MODELS


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

    from vrnn.models.presets import model_config
    from vrnn.study.reproduce import train_configs
    from vrnn.study.studies import study_entries
    from vrnn.train.config import TrainConfig, add_train_flags

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
    from vrnn.study.studies import srnn_claims
    from vrnn.study.tables import ModelResult

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


# -- the objectives study ----------------------------------------------------------------------

OBJECTIVE_FLAGS = {"vrnn-gauss": [], "vrnn-gauss-iwae": ["--objective", "iwae", "--particles", "4"],
                   "vrnn-gauss-fivo": ["--objective", "fivo", "--particles", "4"],
                   "vrnn-gauss-free-bits": ["--free-bits", "1"]}


def test_the_objectives_study_trains_what_vrnn_train_would():
    """Each VRNN entry's TrainConfig is that of ``vrnn train`` with the entry's objective flags;
    the RNN baselines train with the ELBO (their exact likelihood)."""
    import argparse

    from vrnn.study.reproduce import train_configs
    from vrnn.train.config import TrainConfig, add_train_flags

    args = build_parser().parse_args(["--data", "handwriting", "--study", "objectives"])
    configs = train_configs(args, "strokes")
    assert list(configs) == ["rnn-gauss", "rnn-gmm", *OBJECTIVE_FLAGS,
                             *(k.replace("gauss", "gmm") for k in OBJECTIVE_FLAGS)]
    train = argparse.ArgumentParser()
    add_train_flags(train)
    for key, flags in OBJECTIVE_FLAGS.items():
        for model in ("vrnn-gauss", "vrnn-gmm"):
            key_m = key.replace("vrnn-gauss", model)
            words = shlex.split(
                f"--data handwriting --model {model} --preset small --max-steps 100000 "
                f"--batch-size 20 --val-interval 100 --patience 10 --budget-clock cpu "
                f"--max-minutes 20 --resume auto --no-tensorboard "
                f"--out runs/reproduce/handwriting-objectives/{key_m}") + flags
            theirs = TrainConfig(**vars(train.parse_args(words)))
            assert configs[key_m] == theirs, key_m
    assert configs["rnn-gmm"].objective == "elbo" and configs["rnn-gmm"].free_bits == 0
    binary = train_configs(build_parser().parse_args(
        ["--data", "chorales", "--study", "objectives"]), "binary")
    assert list(binary) == ["rnn-bernoulli", "vrnn-bernoulli", "vrnn-bernoulli-iwae",
                            "vrnn-bernoulli-fivo", "vrnn-bernoulli-free-bits"]


def test_objective_claims_judge_each_objective_against_its_elbo_twin_and_the_rnns():
    from vrnn.study.studies import objective_claims
    from vrnn.study.tables import ModelResult

    rng = np.random.default_rng(1)
    base = rng.normal(500.0, 50.0, size=40)
    shifts = {"rnn-gmm": 10.0, "vrnn-gauss": 0.0, "vrnn-gauss-iwae": 3.0,
              "vrnn-gauss-fivo": 20.0, "vrnn-gauss-free-bits": -2.0}

    def result(key, s):
        return ModelResult(key, key.startswith("vrnn"), base + s + rng.normal(0, 0.5, 40),
                           base + s - 1.0)

    claims = {c.text: c for c in objective_claims({k: result(k, s) for k, s in shifts.items()})}
    assert list(claims)[:3] == ["vrnn-gauss-iwae above vrnn-gauss",
                                "vrnn-gauss-fivo above vrnn-gauss",
                                "vrnn-gauss-free-bits above vrnn-gauss"]
    assert claims["vrnn-gauss-fivo above vrnn-gauss"].gap == pytest.approx(20.0, abs=0.5)
    assert not claims["vrnn-gauss-free-bits above vrnn-gauss"].holds
    vs_rnn = {t: c.holds for t, c in claims.items() if t.endswith("above rnn-gmm")}
    assert vs_rnn == {"vrnn-gauss above rnn-gmm": False, "vrnn-gauss-iwae above rnn-gmm": False,
                      "vrnn-gauss-fivo above rnn-gmm": True,
                      "vrnn-gauss-free-bits above rnn-gmm": False}
    assert len(claims) == 3 + 4


def test_a_tiny_objectives_study_reports_is_and_smc(tmp_path, capsys):
    """IS and SMC for every latent entry, with their ESS (mean and least) per sequence, the KL
    per step, the objective that trained it; a later run with other SMC repeats reuses the IS
    evaluation and redoes SMC only."""
    data = write_strokes(tmp_path / "pen.npz")
    common = ["--data", str(data), "--study", "objectives", "--preset", "tiny", "--max-steps",
              "2", "--val-interval", "2", "--samples", "4", "--docs", str(tmp_path / "docs"),
              "--no-progress", "--device", "cpu", "--out", str(tmp_path / "study"),
              "--models", "rnn-gauss,vrnn-gauss,vrnn-gauss-fivo"]
    assert main(["reproduce", *common, "--smc-repeats", "2"]) == 0
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["study"] == "objectives"
    models = saved["models"]
    assert "smc" not in models["rnn-gauss"] and "kl_per_step" not in models["rnn-gauss"]
    assert models["vrnn-gauss-fivo"]["objective"] == "fivo"
    assert models["vrnn-gauss-fivo"]["particles"] == 4
    for key in ("vrnn-gauss", "vrnn-gauss-fivo"):
        r = models[key]
        smc = r["smc"]
        assert smc["key"]["repeats"] == 2 and smc["summary"]["estimator"] == "smc"
        for field in ("log_likelihood", "stderr", "ess_mean", "ess_min", "resamples"):
            assert len(smc[field]) == 5
        assert all(1.0 - 1e-9 <= m <= 4 + 1e-9 for m in smc["ess_mean"])
        assert all(lo <= m + 1e-9 for lo, m in zip(smc["ess_min"], smc["ess_mean"]))
        assert all(1.0 - 1e-9 <= e <= 4 + 1e-9 for e in r["ess"])
        assert r["kl_per_step"] >= 0 and np.isfinite(r["kl_per_step"])
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    section = text[text.index("<!-- reproduce:pen-objectives:begin -->"):]
    assert "| model | ELBO | IS | IS ESS mean (min) | SMC |" in section
    assert "VRNN-Gauss (fivo K=4) above VRNN-Gauss (elbo)" in section
    assert "The same gaps in the SMC estimate:" in section
    assert "(MC se" in section or "(ESS too low for an MC se)" in section
    assert "over 2 filters)" in section
    assert all(v >= 0 for v in models["vrnn-gauss"]["smc"]["log_spread"])
    is_eval = models["vrnn-gauss"]["eval_s"]
    assert main(["reproduce", *common, "--smc-repeats", "3", "--eval-only"]) == 0
    again = json.loads((tmp_path / "study" / "results.json").read_text())["models"]
    assert again["vrnn-gauss"]["eval_s"] == is_eval  # IS reused ...
    assert again["vrnn-gauss"]["log_likelihood"] == models["vrnn-gauss"]["log_likelihood"]
    assert again["vrnn-gauss"]["smc"]["key"]["repeats"] == 3  # ... SMC redone


def test_an_is_error_is_printed_only_where_the_ess_supports_it():
    from vrnn.study.report import _mc_cell

    ok = {"estimator": "is", "ess_mean": 12.0, "num_samples": 40, "is_stderr_mean": 0.25}
    assert _mc_cell(100.0, ok) == "100.0 (MC se 0.2)"
    low = {**ok, "ess_mean": 1.3}  # max(5, 40 / 10) = 5 > 1.3
    assert _mc_cell(100.0, low) == "100.0 (ESS too low for an MC se)"
    smc = {"estimator": "smc", "ess_mean": 1.3, "num_samples": 40, "is_stderr_mean": 1.0,
           "repeats": 4, "log_spread_mean": 12.34}
    assert _mc_cell(100.0, smc) == "100.0 (sd 12.3 over 4 filters)"


# -- a signal stops the study ------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_training_stops_the_study_without_a_report(tmp_path, sig):
    """Ctrl-C (or SIGTERM) while a model trains: that model saves last.pt and the study stops
    there, status 130 (143), saying to run the same command again: the half-trained model is not
    evaluated, the next model is not trained, no report or results.json is written. Run again,
    the same command resumes that model and finishes the study."""
    data = write_strokes(tmp_path / "pen.npz")
    study, docs = tmp_path / "study", tmp_path / "docs"
    args = ["reproduce", "--data", data, "--preset", "tiny", "--models", "vrnn-gauss,rnn-gauss",
            "--budget-minutes", "0.1", "--val-interval", "20", "--samples", "2",
            "--smc-repeats", "0", "--out", study, "--docs", docs, "--no-progress",
            "--device", "cpu"]
    proc = start_vrnn(tmp_path, *args)
    wait_until(lambda: metrics_rows(study / "vrnn-gauss") >= 1, proc, "the first model to train")
    code, out, err = finish_vrnn(proc, sig)
    assert code == 128 + sig, f"status {code}:\n{out}\n{err}"
    assert "Traceback" not in err, err
    assert "run the same command again" in err and "vrnn reproduce --data" in err, err
    assert (study / "vrnn-gauss" / "last.pt").is_file()
    assert not (study / "rnn-gauss").exists()  # the next model was not trained
    assert not (study / "results.json").exists() and not (study / "report.md").exists()
    assert not docs.exists() or not list(docs.iterdir())
    if sig == signal.SIGINT:  # the same command again resumes and reports
        step = int(torch.load(study / "vrnn-gauss" / "last.pt", weights_only=True)["step"])
        vrnn(*args)  # (a fresh start in a folder with results would be refused)
        records = json.loads((study / "results.json").read_text())["models"]
        assert list(records) == ["vrnn-gauss", "rnn-gauss"]
        assert records["vrnn-gauss"]["steps"] > step
        assert "<!-- reproduce:pen:begin -->" in (docs / "RESULTS.md").read_text()


# -- each model by its own paper's recipe ------------------------------------------------------

def test_own_recipes_add_a_twin_trained_by_its_papers_recipe():
    """``--own-recipes``: after each model, its twin with ``--recipe`` of its family's paper
    (SRNN: Fraccaro et al.'s lr 1e-3, batch 64, KL annealed over 20 epochs on audio; VRNN: Chung
    et al.'s batch 128 for speech), everything else as the shared model; STORN has no twin."""
    from vrnn.study.reproduce import train_configs

    args = build_parser().parse_args(["--data", "speech", "--study", "srnn", "--own-recipes",
                                      "--models", "srnn-gauss,srnn-gauss-own-recipe,"
                                      "vrnn-gauss-own-recipe"])
    configs = train_configs(args, "audio")
    assert list(configs) == ["srnn-gauss", "srnn-gauss-own-recipe", "vrnn-gauss-own-recipe"]
    shared, srnn, vrnn_ = configs.values()
    assert (shared.recipe, shared.lr, shared.batch_size, shared.kl_anneal_epochs) \
        == ("default", 3e-4, 32, 0.0)
    assert (srnn.recipe, srnn.lr, srnn.batch_size, srnn.kl_anneal_epochs, srnn.kl_start) \
        == ("srnn", 1e-3, 64, 20.0, 0.0)
    assert (srnn.model, srnn.posterior, srnn.res_q) == (shared.model, shared.posterior, True)
    assert srnn.out_dir == "runs/reproduce/speech-srnn/srnn-gauss-own-recipe"
    assert (vrnn_.recipe, vrnn_.lr, vrnn_.batch_size) == ("vrnn", 3e-4, 128)
    typed = train_configs(build_parser().parse_args(
        ["--data", "speech", "--study", "srnn", "--own-recipes", "--batch-size", "8",
         "--models", "srnn-gauss-own-recipe"]), "audio")
    assert typed["srnn-gauss-own-recipe"].batch_size == 8  # a flag typed wins over the recipe
    assert typed["srnn-gauss-own-recipe"].lr == 1e-3
    families = train_configs(build_parser().parse_args(
        ["--data", "chorales", "--study", "families", "--own-recipes"]), "binary")
    # polyphonic music: the SRNN and DMM papers report settings for it, the VRNN paper none
    assert [k for k in families if k.endswith("-own-recipe")] == [
        "srnn-bernoulli-own-recipe", "dmm-bernoulli-own-recipe"]
    assert families["dmm-bernoulli-own-recipe"].beta1 == 0.96
    assert families["srnn-bernoulli-own-recipe"].batch_size == 16
    objectives = train_configs(build_parser().parse_args(
        ["--data", "speech", "--study", "objectives", "--own-recipes"]), "audio")
    assert objectives["vrnn-gauss-fivo-own-recipe"].recipe == "fivo"
    assert objectives["vrnn-gauss-iwae-own-recipe"].recipe == "vrnn"
    with pytest.raises(ValueError, match="srnn-gauss-own-recipe not in --study srnn"):
        train_configs(build_parser().parse_args(
            ["--data", "speech", "--study", "srnn", "--models", "srnn-gauss-own-recipe"]),
            "audio")


def test_own_recipe_claims_judge_the_twins_among_themselves_and_against_the_shared():
    from vrnn.study.studies import study_claims
    from vrnn.study.tables import ModelResult

    rng = np.random.default_rng(1)
    base = rng.normal(-100.0, 10.0, size=40)
    shifts = {"srnn-gauss": -2.0, "vrnn-gauss": 0.0,  # shared: the VRNN above the SRNN
              "srnn-gauss-own-recipe": 3.0, "vrnn-gauss-own-recipe": -1.0}  # own: the reverse
    names = {"srnn-gauss": "SRNN", "vrnn-gauss": "VRNN",
             "srnn-gauss-own-recipe": "SRNN [srnn recipe]",
             "vrnn-gauss-own-recipe": "VRNN [vrnn recipe]"}
    results = {k: ModelResult(names[k], True, base + s + rng.normal(0, 0.1, 40), base + s)
               for k, s in shifts.items()}
    claims = {c.text: c for c in study_claims("srnn", results)}
    assert not claims["SRNN above VRNN (SRNN above VRNN)"].holds
    assert claims["SRNN [srnn recipe] above VRNN [vrnn recipe] (SRNN above VRNN)"].holds
    recipe = claims["SRNN [srnn recipe] above SRNN (its paper's recipe above the shared one)"]
    assert recipe.holds and recipe.gap == pytest.approx(5.0, abs=0.1)
    assert not claims["VRNN [vrnn recipe] above VRNN (its paper's recipe above the shared one)"
                      ].holds
    assert len(claims) == 4
    del results["vrnn-gauss-own-recipe"]  # no twin: the own-recipe claims take the shared model
    claims = {c.text: c for c in study_claims("srnn", results)}
    assert claims["SRNN [srnn recipe] above VRNN (SRNN above VRNN)"].holds
    assert len(claims) == 3
    paper = {"rnn-gauss": ModelResult("RNN-Gauss", False, base, base),
             "vrnn-gauss": ModelResult("VRNN-Gauss", True, base + 1, base),
             "rnn-gauss-own-recipe": ModelResult("RNN-Gauss [vrnn recipe]", False, base + 2, base),
             "vrnn-gauss-own-recipe": ModelResult("VRNN-Gauss [vrnn recipe]", True, base + 1,
                                                  base)}
    texts = [c.text for c in study_claims("paper", paper)]
    assert texts == ["VRNN-Gauss above RNN-Gauss",
                     "VRNN-Gauss above RNN-Gauss [each by its paper's recipe]",
                     "RNN-Gauss [vrnn recipe] above RNN-Gauss (its paper's recipe above the "
                     "shared one)",
                     "VRNN-Gauss [vrnn recipe] above VRNN-Gauss (its paper's recipe above the "
                     "shared one)"]


def test_a_tiny_study_with_own_recipes(tmp_path):
    data = write_strokes(tmp_path / "pen.npz")
    assert main(["reproduce", "--data", str(data), "--study", "srnn", "--own-recipes",
                 "--models", "srnn-gauss-filtering,srnn-gauss-filtering-own-recipe",
                 "--preset", "tiny", "--max-steps", "2", "--val-interval", "2", "--samples", "2",
                 "--smc-repeats", "1", "--docs", str(tmp_path / "docs"), "--no-progress",
                 "--device", "cpu", "--out", str(tmp_path / "study")]) == 0
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert list(saved["models"]) == ["srnn-gauss-filtering", "srnn-gauss-filtering-own-recipe"]
    config = json.loads((tmp_path / "study" / "srnn-gauss-filtering-own-recipe" /
                         "config.json").read_text())
    assert config["train"]["recipe"] == "srnn" and config["train"]["lr"] == 1e-3
    section = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "--own-recipes" in section and "| SRNN (filt) [srnn recipe] |" in section
    assert "SRNN (filt) [srnn recipe] above SRNN (filt) (its paper's recipe above the shared " \
        "one)" in section

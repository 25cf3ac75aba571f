"""``--recipe``: each paper's training setting as a name (vrnn.train.recipes), and
``--resampling`` for FIVO's training and SMC's evaluation.

The papers' numbers are typed here again, from the papers and the authors' released code, as the
oracle: a recipe whose value drifts from its source turns these red."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toydata import tiny_train_config, write_npz

import vrnn
from vrnn.cli import main
from vrnn.train.config import TrainConfig
from vrnn.train.loop import train
from vrnn.train.objective import objective_of
from vrnn.train.recipes import RECIPE_NAMES

PAPERS = {
    # recipe, data: the values its source reports (fields not listed: the default recipe's)
    ("vrnn", "speech"): {"lr": 3e-4, "batch_size": 128, "grad_clip": 5.0, "kl_anneal_steps": 0},
    ("vrnn", "handwriting"): {"lr": 3e-4, "batch_size": 20, "grad_clip": 5.0},
    # no music in the VRNN paper: its own values, the default recipe's batch (not speech's 128)
    ("vrnn", "chorales"): {"lr": 3e-4, "batch_size": 32, "grad_clip": 5.0},
    ("srnn", "speech"): {"lr": 1e-3, "batch_size": 64, "kl_start": 0.0, "kl_anneal_epochs": 20,
                         "grad_clip": 3000.0},
    ("srnn", "chorales"): {"lr": 1e-3, "batch_size": 16, "kl_start": 0.2,
                           "kl_anneal_epochs": 20, "grad_clip": 1.0},
    ("fivo", "speech"): {"lr": 1e-4, "batch_size": 4, "grad_clip": 0.0, "kl_anneal_steps": 0},
    ("dmm", "chorales"): {"lr": 3e-4, "beta1": 0.96, "beta2": 0.999, "lr_decay": 0.99996,
                          "batch_size": 20, "kl_start": 0.2, "kl_anneal_epochs": 1000,
                          "grad_clip": 0.0, "grad_clip_value": 10 / 20, "weight_decay": 2.0 / 20},
    ("default", "speech"): {"lr": 3e-4, "batch_size": 32, "grad_clip": 5.0, "beta1": 0.9,
                            "beta2": 0.999, "weight_decay": 0.0, "lr_decay": 1.0,
                            "kl_anneal_steps": 0, "kl_anneal_epochs": 0, "grad_clip_value": 0.0},
}


@pytest.mark.parametrize("recipe,data", list(PAPERS))
def test_a_recipe_sets_its_papers_values(recipe, data):
    model = "srnn-bernoulli" if data == "chorales" else "vrnn-gauss"
    cfg = TrainConfig(data=data, model=model, recipe=recipe)
    assert {k: getattr(cfg, k) for k in PAPERS[recipe, data]} == pytest.approx(
        PAPERS[recipe, data])
    assert cfg.to_dict()["recipe"] == recipe


def test_every_recipe_is_tested_and_listed_in_help(capsys):
    assert {r for r, _ in PAPERS} == set(RECIPE_NAMES)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, who in (("vrnn", "Chung et al. 2015"), ("srnn", "Fraccaro et al. 2016"),
                      ("fivo", "Maddison et al. 2017"), ("dmm", "Krishnan et al. 2017")):
        assert f"{name} ({who}" in text
    assert "--resampling {multinomial,systematic}" in text


def _config(argv: list[str]) -> TrainConfig:
    """The TrainConfig ``vrnn train ARGV`` builds (its parser, then config_from_args)."""
    import argparse
    import dataclasses

    from vrnn.train.config import add_train_flags, config_from_args

    p = argparse.ArgumentParser()
    add_train_flags(p, required=("data", "model"))
    args = p.parse_args(argv)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return config_from_args(fields, argv)


def test_an_explicit_flag_wins_over_the_recipe():
    base = ["--data", "speech", "--model", "srnn-gauss", "--recipe", "srnn"]
    cfg = _config(base)
    assert (cfg.lr, cfg.batch_size, cfg.kl_anneal_epochs) == (1e-3, 64, 20)
    cfg = _config([*base, "--lr", "0.01", "--batch-size", "7", "--grad-clip", "5"])
    assert (cfg.lr, cfg.batch_size, cfg.grad_clip) == (0.01, 7, 5.0)
    assert cfg.kl_anneal_epochs == 20  # what was not typed stays the recipe's
    # a KL schedule typed as steps replaces the recipe's schedule in epochs (and its start stays)
    cfg = _config([*base, "--kl-anneal-steps", "50"])
    assert (cfg.kl_anneal_steps, cfg.kl_anneal_epochs, cfg.kl_start) == (50, 0, 0.0)
    # with another objective the recipe's KL schedule does not apply (the bound has no KL term)
    cfg = _config([*base, "--objective", "fivo"])
    assert (cfg.kl_anneal_epochs, cfg.kl_anneal_steps, cfg.lr) == (0, 0, 1e-3)
    # a value the user passes equal to the default recipe's is still the user's
    assert TrainConfig(data="speech", model="srnn-gauss", recipe="srnn", lr=3e-4).lr == 3e-4


def test_an_unknown_recipe_is_one_line_naming_them_all(capsys, tmp_path):
    with pytest.raises(ValueError, match=r"^--recipe must be one of default, vrnn, srnn, fivo, "
                                         r"dmm, got 'pyro'$"):
        TrainConfig(recipe="pyro")
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "speech", "--model", "vrnn-gauss", "--recipe", "pyro"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--recipe" in err and all(n in err for n in RECIPE_NAMES)
    with pytest.raises(ValueError, match="--recipe must be one of default, vrnn"):
        vrnn.fit(vrnn.build_model(vrnn.model_config("vrnn-gauss", x_dim=3, preset="tiny")),
                 [np.zeros((5, 3))] * 4, recipe="pyro", progress=False)


def test_a_run_records_its_recipe_and_follows_its_schedules(tmp_path):
    """The dmm recipe: Adam's betas and weight decay, the learning rate decayed before every
    update (Pyro's ClippedAdam), the KL weight from 0.2 over epochs turned into updates."""
    data = str(write_npz(tmp_path / "toy.npz"))  # 24 training sequences
    cfg = tiny_train_config(data, tmp_path / "run", recipe="dmm", batch_size=8,
                            kl_anneal_epochs=2.0, max_steps=4, log_interval=1,
                            val_interval=100)
    result = train(cfg)
    assert result.step == 4
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["recipe"] == "dmm"
    assert (config["train"]["beta1"], config["train"]["weight_decay"]) == (0.96, 0.1)
    assert config["resolved"]["updates_per_epoch"] == 3  # 24 sequences in batches of 8
    assert config["resolved"]["kl_anneal_steps"] == 6  # 2 epochs of 3 updates
    rows = [r for r in vrnn_metrics(tmp_path / "run") if r["train_bound"]]
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [3e-4 * 0.99996 ** k for k in (1, 2, 3, 4)], rel=1e-5)  # metrics.csv: 6 digits
    assert [float(r["kl_weight"]) for r in rows] == pytest.approx(
        [0.2 + 0.8 * k / 6 for k in (0, 1, 2, 3)], rel=1e-5)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    group = ckpt["optimizer"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.96, 0.999) and group["weight_decay"] == 0.1


def vrnn_metrics(out) -> list[dict]:
    import csv

    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_fit_takes_a_recipe_and_explicit_arguments_win():
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((int(n), 3)) for n in rng.integers(5, 9, 24)]
    model = vrnn.build_model(vrnn.model_config("vrnn-gauss", x_dim=3, preset="tiny"))
    h = vrnn.fit(model, seqs, steps=2, recipe="dmm", batch_size=8, progress=False,
                 log_interval=1)
    assert [r["lr"] for r in h.rows if r.get("lr") is not None] == pytest.approx(
        [3e-4 * 0.99996, 3e-4 * 0.99996 ** 2])
    h = vrnn.fit(model, seqs, steps=1, recipe="dmm", batch_size=8, lr=1e-2, progress=False,
                 log_interval=1)
    assert [r["lr"] for r in h.rows if r.get("lr") is not None] == pytest.approx(
        [1e-2 * 0.99996])
    # the recipe's batch on a smaller data set: every sequence in each batch, said once
    with pytest.warns(UserWarning, match=r"batch_size 128 \(the vrnn recipe's\) is more than "
                                         r"the 24 training sequences: training with batches of 24"):
        vrnn.fit(model, seqs, steps=1, recipe="vrnn", progress=False)


# -- --resampling ---------------------------------------------------------------------------------

def test_resampling_reaches_fivo_and_is_refused_where_nothing_resamples():
    cfg = TrainConfig(model="vrnn-gauss", objective="fivo", resampling="systematic")
    assert objective_of(cfg).resampling == "systematic"
    assert TrainConfig(model="vrnn-gauss", objective="fivo").resampling == "multinomial"
    assert TrainConfig(model="vrnn-gauss").resampling is None  # an ELBO run records none
    with pytest.raises(ValueError, match="^--resampling must be left out unless --objective fivo"):
        TrainConfig(model="vrnn-gauss", objective="iwae", resampling="systematic")
    cfg = _config(["--data", "speech", "--model", "vrnn-gauss", "--objective", "fivo",
                   "--resampling", "systematic"])
    assert cfg.to_dict()["resampling"] == "systematic"


@pytest.fixture
def checkpoint(tmp_path):
    data = str(write_npz(tmp_path / "toy.npz"))
    train(tiny_train_config(data, tmp_path / "run", max_steps=2, val_interval=2,
                            objective="fivo", resampling="systematic", particles=3))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (saved["objective"], saved["resampling"]) == ("fivo", "systematic")
    return str(tmp_path / "run" / "last.pt")


def test_evaluate_resampling_flag(checkpoint, capsys):
    from vrnn.commands.evaluate import evaluate_checkpoint
    from vrnn.evaluation.sequences import evaluate_sequences
    from vrnn.store.load import load

    common = ["evaluate", checkpoint, "--estimator", "smc", "--samples", "3", "--repeats", "2",
              "--device", "cpu", "--json"]
    assert main([*common, "--resampling", "systematic"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resampling"] == "systematic"
    # the flag reaches the filter: the same figures as the library asked for systematic
    model = load(checkpoint)
    seqs = [np.asarray(s, dtype=np.float32) for s in _test_split(checkpoint)]
    ref = evaluate_sequences(model, seqs, num_samples=3, repeats=2, estimator="smc",
                             resampling="systematic", seed=0, batch_size=32)
    assert out["per_sequence"]["log_likelihood"] == pytest.approx(ref.log_likelihood.tolist())
    multi = evaluate_checkpoint(checkpoint, estimator="smc", samples=3, repeats=2,
                                device="cpu")
    assert multi["resampling"] == "multinomial"
    assert main(["evaluate", checkpoint, "--resampling", "systematic", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resampling applies to --estimator smc" in err[0]


def _test_split(checkpoint: str) -> list:
    from vrnn.commands.loading import checkpoint_sequences, load_for_use

    ckpt, _, info = load_for_use(checkpoint, "cpu")
    return checkpoint_sequences(ckpt, info, None, "test", 0)[1]

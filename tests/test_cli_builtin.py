"""The whole command-line workflow on every built-in data set, as a new user meets it: train a
tiny VRNN for a few steps, evaluate it, sample from it and plot its KL, each in a subprocess,
asserting on the files written. Data sets that are not installed are skipped with the command
that installs them."""

import json

import numpy as np
import pytest
from toydata import vrnn

from vrnn.data import list_datasets

PRESENT = {d["name"]: d for d in list_datasets()}
# what each data set's samples are written as (besides samples.npy)
PICTURES = {"speech": (".wav", ".png"), "speech-multi": (".wav", ".png"),
            "handwriting": (".svg", ".png"), "chorales": (".mid", ".png"), "mnist": (".png",),
            "text": (".txt", ".png")}
# keep loading short: a few files of the folder data sets
LIMIT = {"speech": ["--max-files", "40"], "speech-multi": ["--max-files", "80"],
         "handwriting": ["--max-files", "2"], "chorales": ["--max-files", "6"], "mnist": [],
         "text": []}


@pytest.mark.parametrize("name", list(PICTURES))
def test_train_evaluate_sample_analyse(name, tmp_path):
    info = PRESENT.get(name)
    if info is None or not info["present"]:
        pytest.skip(f"{name} is not installed: {info and info.get('install_hint')}")
    model = {"binary": "vrnn-bernoulli", "text": "vrnn-categorical"}.get(info["kind"], "vrnn-gmm")
    out = tmp_path / "run"
    vrnn("train", "--data", name, "--model", model, "--preset", "tiny", "--max-steps", "3",
         "--batch-size", "4", "--val-interval", "3", "--val-max-sequences", "4", "--out", out,
         "--device", "cpu", "--no-progress", *LIMIT[name])
    ckpt = out / "best.pt"
    assert ckpt.exists() and (out / "metrics.csv").exists() and (out / "config.json").exists()

    res = json.loads(vrnn("evaluate", ckpt, "--samples", "2", "--max-sequences", "3",
                          "--json").stdout)
    # a few files give a small test split: at most the 3 asked for
    assert res["data"] == name and 1 <= res["n_sequences"] <= 3 and res["num_samples"] == 2
    assert np.isfinite(res["elbo"]) and np.isfinite(res["log_likelihood"])
    if info["kind"] == "audio":
        assert np.isfinite(res["nll_bits_per_sample"])

    samples = tmp_path / "samples"
    vrnn("sample", ckpt, "--num", "2", "--steps", "6", "--out", samples)
    arr = np.load(samples / "samples.npy")
    assert arr.shape == (2, 6, info["x_dim"]) and np.isfinite(arr).all()
    suffixes = {p.suffix for p in samples.iterdir()}
    assert set(PICTURES[name]) <= suffixes, suffixes

    png = tmp_path / "kl.png"
    vrnn("analyse", ckpt, "--out", png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_stroke_subsampling_is_a_flag_and_the_run_keeps_it(tmp_path):
    if not PRESENT["handwriting"]["present"]:
        pytest.skip(f"handwriting is not installed: {PRESENT['handwriting']['install_hint']}")
    out = tmp_path / "run"
    vrnn("train", "--data", "handwriting", "--model", "rnn-gmm", "--preset", "tiny",
         "--max-steps", "1", "--batch-size", "4", "--subsample", "8", "--max-files", "2",
         "--out", out, "--device", "cpu", "--no-progress")
    assert json.loads((out / "config.json").read_text())["train"]["subsample"] == 8
    info = json.loads(vrnn("data", "info", "handwriting", "--subsample", "8", "--max-files", "2",
                           "--json").stdout)
    default = json.loads(vrnn("data", "info", "handwriting", "--max-files", "2",
                              "--json").stdout)
    assert info["test"]["n_steps"] < default["test"]["n_steps"]
    res = json.loads(vrnn("evaluate", out / "last.pt", "--json").stdout)  # read as trained
    assert res["n_steps"] == info["test"]["n_steps"]

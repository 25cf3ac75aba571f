"""The pretrained models that ship with the package: each file is the one its index lists, loads
with ``weights_only=True`` without any training state, rebuilds its model, and every command that
takes ``--pretrained`` runs on it, writing under ``runs/pretrained/`` and never into the package.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from vrnn.cli import main
from vrnn.models.base import count_parameters
from vrnn.store.checkpoint import load_checkpoint, model_from_checkpoint
from vrnn.store.pretrained import (
    WEIGHTS,
    PretrainedError,
    add_pretrained,
    format_pretrained,
    pretrained_path,
    read_index,
)

INDEX = read_index()
REQUIRED = {"speech-vrnn-gauss", "chorales-vrnn-bernoulli", "handwriting-vrnn-gmm",
            "handwriting-rnn-gmm"}
"""The models a new user is promised (README): speech to listen to, music to play, handwriting
to look at, and one RNN baseline."""


def test_the_promised_models_ship():
    assert set(INDEX) >= REQUIRED
    for entry in INDEX.values():
        assert entry["command"].startswith("vrnn ") and entry["licence"]
        assert entry["test"]["n_sequences"] > 0 and np.isfinite(entry["test"]["log_likelihood"])


@pytest.mark.parametrize("name", sorted(INDEX))
def test_each_file_is_what_its_index_says(name):
    entry = INDEX[name]
    path = pretrained_path(name)  # checks the SHA-256
    assert path.parent == WEIGHTS and path.stat().st_size == entry["bytes"]
    raw = torch.load(path, weights_only=True)  # nothing in it runs code
    assert "optimizer" not in raw and "rng" not in raw  # no training state is shipped
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    assert count_parameters(model) == entry["parameters"]
    assert ckpt["step"] == entry["step"] and ckpt["train_config"]["model"] == entry["model"]
    assert all(t.dtype == torch.float32 for t in ckpt["model"].values())


def test_a_damaged_or_unknown_model_is_refused(tmp_path):
    name = "chorales-vrnn-bernoulli"
    shutil.copy(WEIGHTS / "index.json", tmp_path / "index.json")
    data = bytearray((WEIGHTS / INDEX[name]["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / INDEX[name]["file"]).write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="SHA-256 differs"):
        pretrained_path(name, tmp_path)
    (tmp_path / INDEX[name]["file"]).unlink()
    with pytest.raises(PretrainedError, match="missing from this installation"):
        pretrained_path(name, tmp_path)
    with pytest.raises(PretrainedError, match="no such pretrained model .known: "):
        pretrained_path("nope")


def test_add_pretrained_writes_a_slim_checkpoint_and_its_entry(tmp_path):
    name = "chorales-vrnn-bernoulli"
    full = load_checkpoint(pretrained_path(name))
    run = tmp_path / "best.pt"
    torch.save({**full, "optimizer": {"state": {}, "param_groups": []},
                "rng": {"torch": torch.zeros(3, dtype=torch.uint8)}}, run)
    entry = add_pretrained("mine", run, command="vrnn train ...", licence="mine",
                           test={"latent": True, "log_likelihood": -1.5,
                                 "log_likelihood_stderr": 0.25,
                                 "log_likelihood_per_step": -0.1}, folder=tmp_path)
    saved = torch.load(tmp_path / "mine.pt", weights_only=True)
    assert "optimizer" not in saved and "rng" not in saved
    assert torch.equal(saved["model"][next(iter(saved["model"]))],
                       full["model"][next(iter(full["model"]))])
    assert read_index(tmp_path) == {"mine": entry}
    assert pretrained_path("mine", tmp_path) == tmp_path / "mine.pt"
    table = format_pretrained(read_index(tmp_path))
    assert "mine" in table and "~ -1.5 ± 0.2" in table


def test_the_commands_take_pretrained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["pretrained"]) == 0
    out = capsys.readouterr().out
    for name, entry in INDEX.items():
        assert name in out and f"{entry['test']['log_likelihood']:.1f}" in out
    assert main(["pretrained", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == INDEX
    assert main(["info", "--pretrained", "chorales-vrnn-bernoulli", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == INDEX["chorales-vrnn-bernoulli"]["step"]
    assert main(["sample", "--pretrained", "speech-vrnn-gauss", "--num", "1", "--steps",
                 "8"]) == 0
    wavs = list((tmp_path / "runs" / "pretrained" / "speech-vrnn-gauss" / "samples").glob("*.wav"))
    assert len(wavs) == 1 and wavs[0].stat().st_size > 8 * 200 * 2  # 8 frames of 200 samples
    assert not list(WEIGHTS.glob("*/")), "nothing is written into the package"
    assert main(["evaluate", "--pretrained", "chorales-vrnn-bernoulli", "--max-sequences", "2",
                 "--samples", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n_sequences"] == 2
    assert main(["info", "x.pt", "--pretrained", "speech-vrnn-gauss"]) == 2
    assert "CKPT or --pretrained NAME, one of them" in capsys.readouterr().err
    assert main(["sample"]) == 2
    assert main(["analyse", "--pretrained", "nope"]) == 2
    assert "no such pretrained model" in capsys.readouterr().err


def test_a_pretrained_model_cannot_be_resumed(tmp_path, capsys):
    path = pretrained_path("chorales-vrnn-bernoulli")
    assert main(["train", "--data", "chorales", "--model", "vrnn-bernoulli", "--resume",
                 str(path), "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 2
    assert "lacks the training state" in capsys.readouterr().err

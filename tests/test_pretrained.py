"""The pretrained models that ship with the package: each file is the one its index lists, loads
with ``weights_only=True`` without any training state, rebuilds its model, and every command that
takes ``--pretrained`` runs on it, writing under ``runs/pretrained/`` and never into the package.
"""

import json
import re
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


# -- a hostile or damaged index: validated when read, checked against what the file holds -------

def _weights_copy(tmp_path, names):
    """A weights folder holding ``names``' files and the shipped index."""
    for name in names:
        shutil.copy(WEIGHTS / INDEX[name]["file"], tmp_path / INDEX[name]["file"])
    shutil.copy(WEIGHTS / "index.json", tmp_path / "index.json")
    return json.loads((tmp_path / "index.json").read_text())


def test_an_entry_pointed_at_another_models_file_is_refused(tmp_path):
    index = _weights_copy(tmp_path, ["chorales-vrnn-bernoulli"])
    other = index["models"]["chorales-vrnn-bernoulli"]
    entry = index["models"]["handwriting-vrnn-gmm"]
    entry.update(file=other["file"], sha256=other["sha256"], bytes=other["bytes"])  # the SHA fits
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(PretrainedError) as err:
        pretrained_path("handwriting-vrnn-gmm", tmp_path)
    message = str(err.value)
    assert "handwriting-vrnn-gmm" in message and other["file"] in message
    assert "vrnn-bernoulli" in message and "chorales" in message and "\n" not in message
    assert pretrained_path("chorales-vrnn-bernoulli", tmp_path).name == other["file"]


@pytest.mark.parametrize("change,named", [
    (lambda e: e.pop("sha256"), "'sha256'"),
    (lambda e: e.pop("file"), "'file'"),
    (lambda e: e.update(parameters="242520"), "'parameters'"),
    (lambda e: e.update(sha256=12), "'sha256'"),
    (lambda e: e.update(model=None), "'model'"),
    (lambda e: e.update(file="../../../../etc/passwd"), "'file'"),
    (lambda e: e.update(file="/etc/passwd"), "'file'"),
    (lambda e: e.update(file="sub/chorales-vrnn-bernoulli.pt"), "'file'"),
    (lambda e: e.update(file=".."), "'file'"),
    (lambda e: e["test"].update(log_likelihood="high"), "'log_likelihood'"),
    (lambda e: e.update(test=[1, 2]), "'test'"),
])
def test_a_malformed_index_entry_is_one_line_naming_the_file_and_entry(tmp_path, change, named):
    index = _weights_copy(tmp_path, [])
    change(index["models"]["chorales-vrnn-bernoulli"])
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(PretrainedError) as err:
        read_index(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "index.json") in message and "'chorales-vrnn-bernoulli'" in message
    assert named in message and "\n" not in message


@pytest.mark.parametrize("entry", ["a string", 3, None, ["file", "sha256"]])
def test_an_index_entry_that_is_not_an_object_is_named(tmp_path, entry):
    index = _weights_copy(tmp_path, [])
    index["models"]["odd"] = entry
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(PretrainedError, match=r"index\.json: entry 'odd' is not an object"):
        read_index(tmp_path)


def test_a_bad_index_or_an_empty_name_on_the_command_line_is_one_line(tmp_path, monkeypatch,
                                                                        capsys):
    import vrnn.store.pretrained as pretrained

    monkeypatch.chdir(tmp_path)
    for cmd in ("info", "sample", "evaluate", "analyse"):  # --pretrained "$UNSET"
        assert main([cmd, "--pretrained", ""]) == 2
        err = capsys.readouterr().err
        assert "--pretrained ''" in err and "Traceback" not in err and err.count("\n") == 1
    index = _weights_copy(tmp_path, [])
    del index["models"]["speech-vrnn-gauss"]["sha256"]
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path)
    for argv in (["pretrained"], ["info", "--pretrained", "speech-vrnn-gauss"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'index.json'}: entry 'speech-vrnn-gauss'" in err
        assert "'sha256'" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["../../elsewhere", "a/b", "..", ""])
def test_an_index_entry_whose_name_is_a_path_is_refused(tmp_path, name):
    index = _weights_copy(tmp_path, [])
    index["models"][name] = index["models"]["chorales-vrnn-bernoulli"]
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(PretrainedError, match=f"entry {re.escape(repr(name))} has no plain name"):
        read_index(tmp_path)

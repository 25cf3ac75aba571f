"""Checkpoints: atomic writes, weights_only loading, clear errors, random states that round-trip."""

import random

import numpy as np
import pytest
import torch

from vrnn.store import checkpoint as ckio


def _ckpt(**extra):
    from vrnn.models.presets import model_config

    cfg = model_config("vrnn-gauss", x_dim=3, preset="tiny")
    from vrnn.models.build import build_model

    model = build_model(cfg)
    return {"format": ckio.FORMAT, "version": ckio.VERSION, "model": model.state_dict(),
            "model_config": cfg.to_dict(), "data_info": {"name": "x", "x_dim": 3},
            "step": np.int64(7), "metrics": {"bound": np.float64(-1.5)},
            "versions": ckio.versions(), **extra}


def test_atomic_save_loads_with_weights_only_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    ckio.save_atomic(_ckpt(), path)
    ckio.save_atomic(_ckpt(epoch=2), path)  # replaces
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 7 and isinstance(ckpt["step"], int)
    assert isinstance(ckpt["metrics"]["bound"], float)
    model = ckio.model_from_checkpoint(ckio.load_checkpoint(path))
    assert model.config.z_dim == ckpt["model_config"]["z_dim"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckio.save_atomic(_ckpt(), path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ckio.save_atomic(_ckpt(step=8), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_corrupt_truncated_and_foreign_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ckio.load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(ckio.CheckpointError, match="garbage.pt"):
        ckio.load_checkpoint(garbage)
    good = tmp_path / "good.pt"
    ckio.save_atomic(_ckpt(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ckio.CheckpointError, match="truncated.pt"):
        ckio.load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ckio.CheckpointError, match="not a vrnn checkpoint"):
        ckio.load_checkpoint(foreign)


def test_a_folder_passed_as_a_checkpoint_names_the_checkpoints_in_it(tmp_path):
    """A run folder where a checkpoint is expected (``vrnn evaluate runs/x``): the error says it
    is a folder and names the ``.pt`` files to pass, or that it holds none."""
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder; it holds no .pt checkpoint"):
        ckio.load_checkpoint(run)
    for name in ("last.pt", "best.pt"):
        ckio.save_atomic(_ckpt(), run / name)
    with pytest.raises(FileNotFoundError) as e:
        ckio.load_checkpoint(run)
    assert str(e.value) == (f"checkpoint not found: {run} is a folder; pass one of its "
                            f"checkpoints: {run / 'best.pt'}, {run / 'last.pt'}")


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(4)
    ckio.save_atomic({"rng": ckio.rng_state(gen)}, tmp_path / "r.pt")
    first = (torch.rand(3), torch.randn(3, generator=gen), np.random.rand(3), random.random())
    state = torch.load(tmp_path / "r.pt", weights_only=True)["rng"]
    ckio.set_rng_state(state, gen)
    again = (torch.rand(3), torch.randn(3, generator=gen), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert np.array_equal(first[2], again[2]) and first[3] == again[3]


def test_export_safetensors_writes_weights_and_config(tmp_path):
    from safetensors.torch import load_file

    ckpt = _ckpt(train_config={"model": "vrnn-gauss"})
    weights, config = ckio.export_safetensors(ckpt, tmp_path / "model")
    assert weights.name == "model.safetensors" and config.name == "model.json"
    loaded = load_file(str(weights))
    assert set(loaded) == set(ckpt["model"])
    for k, v in ckpt["model"].items():
        assert torch.equal(loaded[k], v)
    with pytest.raises(ValueError, match="model.safetensors exists: --overwrite"):
        ckio.export_safetensors(ckpt, tmp_path / "model")
    assert ckio.export_safetensors(ckpt, tmp_path / "model", overwrite=True) == (weights, config)


def test_declared_sizes_are_checked_against_the_tensors_before_anything_is_built(tmp_path):
    # a config claiming h_dim=300000 would make a reader allocate a terabyte: refuse it first
    path = tmp_path / "huge.pt"
    ckpt = _ckpt()
    ckpt["model_config"] = {**ckpt["model_config"], "h_dim": 300_000}
    ckio.save_atomic(ckpt, path)
    with pytest.raises(ckio.CheckpointError, match=r"huge.pt: its model config does not match "
                                                   r"its weights \(.*300000"):
        ckio.load_checkpoint(path)
    with pytest.raises(ckio.CheckpointError, match="does not match its weights"):
        ckio.model_from_checkpoint(ckpt, what="vrnn info huge.pt")
    # a tensor missing, or one more than the config has
    weights = dict(_ckpt()["model"])
    name = next(iter(weights))
    for broken in ({k: v for k, v in weights.items() if k != name},
                   {**weights, "extra.weight": torch.zeros(2)}):
        ckio.save_atomic({**_ckpt(), "model": broken}, path)
        with pytest.raises(ckio.CheckpointError, match="missing|unexpected"):
            ckio.load_checkpoint(path)

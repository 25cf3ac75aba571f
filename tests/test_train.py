"""The training loop on microscopic configs: run folder, exact resume, non-finite losses, Ctrl-C,
early stopping, gradient clipping, flag validation."""

import csv
import dataclasses
import json
import os
import signal
import types

import numpy as np
import pytest
import torch
from toydata import tiny_train_config, write_npz

from vrnn.store.checkpoint import load_checkpoint
from vrnn.train import loop as train_mod
from vrnn.train.loop import TrainConfig, TrainingError, kl_weight_at, train


@pytest.fixture
def data(tmp_path):
    return str(write_npz(tmp_path / "toy.npz"))


cfg_for = tiny_train_config


def params(path):
    return load_checkpoint(path)["model"]


def test_a_run_writes_checkpoints_metrics_and_its_config(data, tmp_path):
    result = train(cfg_for(data, tmp_path / "run"))
    out = tmp_path / "run"
    assert result.step == 8 and result.stopped == "max_steps"
    assert {"last.pt", "best.pt", "metrics.csv", "config.json"} <= {p.name for p in
                                                                      out.iterdir()}
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == train_mod.METRIC_FIELDS
    train_rows = [r for r in rows if r["train_bound"]]
    valid_rows = [r for r in rows if r["valid_bound"]]
    assert [int(r["step"]) for r in train_rows] == [2, 4, 6, 8]
    assert [int(r["step"]) for r in valid_rows] == [4, 8]
    assert all(np.isfinite(float(r["train_bound"])) for r in train_rows)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["model"] == "vrnn-gauss" and config["model"]["x_dim"] == 4
    resolved = {"device": "cpu", "tbptt": False, "window": None, "train_sequences": 24,
                "updates_per_epoch": 3, "kl_anneal_steps": 0}  # 24 sequences, batches of 8
    assert {k: config["resolved"].get(k) for k in resolved} == resolved
    assert config["train"]["recipe"] == "default"
    # sequences seen: 24 training sequences in full batches of 8
    assert [int(r["sequences"]) for r in train_rows] == [16, 32, 48, 64]
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["step"] == 8 and last["train_config"]["lr"] == 3e-4
    best = max(float(r["valid_bound"]) for r in valid_rows)
    assert last["best_bound"] == pytest.approx(best, rel=1e-5)


@pytest.mark.parametrize("model", ["vrnn-gauss", "rnn-gmm"])
def test_stopped_and_resumed_run_matches_one_that_never_stopped(data, tmp_path, model):
    from vrnn.data import load_dataset

    # whole ragged sequences with a mask (no TBPTT): the bucketed, shuffled sampler's path
    ds = load_dataset(data)
    seqs = types.SimpleNamespace(info=ds.info, train=ds.train, valid=ds.valid, test=ds.test,
                                 train_streams=None)
    # 10 steps over 24 sequences in batches of 8: the stop at 5 falls inside an epoch
    kw = dict(model=model, max_steps=10, val_interval=3, kl_anneal_steps=6)
    straight = train(cfg_for(data, tmp_path / "a", **kw), dataset=seqs)
    train(cfg_for(data, tmp_path / "b", **{**kw, "max_steps": 5}), dataset=seqs)
    resumed = train(cfg_for(data, tmp_path / "b", resume="auto", **kw), dataset=seqs)
    assert straight.step == resumed.step == 10
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"])


def test_truncated_bptt_resume_carries_the_state_exactly(tmp_path):
    from vrnn.data import load_dataset

    ds = load_dataset(str(write_npz(tmp_path / "toy.npz")))
    rng = np.random.default_rng(1)
    streams = [rng.normal(size=(200, 4)).astype(np.float32) for _ in range(2)]
    info = dataclasses.replace(ds.info, kind="audio")
    audio = types.SimpleNamespace(info=info, train=ds.train, valid=ds.valid, test=ds.test,
                                  train_streams=streams)
    kw = dict(max_steps=9, seq_len=5, batch_size=4, tbptt_reset=4, val_interval=100)
    train(cfg_for("toy", tmp_path / "a", **kw), dataset=audio)
    train(cfg_for("toy", tmp_path / "b", **{**kw, "max_steps": 6}), dataset=audio)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["tbptt_state"] is not None
    train(cfg_for("toy", tmp_path / "b", resume="auto", **kw), dataset=audio)
    a, b = params(tmp_path / "a" / "last.pt"), params(tmp_path / "b" / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_a_fresh_run_never_overwrites_an_existing_checkpoint(data, tmp_path):
    train(cfg_for(data, tmp_path / "run", max_steps=2))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="--resume auto"):
        train(cfg_for(data, tmp_path / "run", max_steps=2))
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    with pytest.raises(ValueError, match="rnn-gauss"):
        train(cfg_for(data, tmp_path / "run", model="rnn-gauss", resume="auto"))


def _nan_after(monkeypatch, good_calls):
    """Make the training objective's loss NaN after ``good_calls`` calls."""
    original = train_mod.LossModule.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        loss, *rest = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > good_calls:
            loss = loss * float("nan")
        return loss, *rest

    monkeypatch.setattr(train_mod.LossModule, "forward", forward)


def test_non_finite_losses_are_skipped_then_stop_keeping_the_good_checkpoint(
        data, tmp_path, monkeypatch):
    _nan_after(monkeypatch, good_calls=4)
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="non-finite") as record, \
            pytest.raises(TrainingError, match="non-finite for 3 updates") as failure:
        train(cfg_for(data, out, max_steps=20, max_bad_steps=3))
    assert len(record) == 3
    assert f"the last good checkpoint, {out / 'last.pt'}, is kept" in str(failure.value)
    last = load_checkpoint(out / "last.pt")  # written at step 4, before the NaNs
    assert last["step"] == 4
    for v in last["model"].values():
        assert torch.isfinite(v).all()


def test_a_run_that_diverges_at_once_says_no_checkpoint_was_written(data, tmp_path):
    # a huge step makes the mixture's parameters NaN: that must reach the non-finite check
    # (skip, then stop), not a distribution's argument validation deep inside the model
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="non-finite"), \
            pytest.raises(TrainingError, match="no checkpoint was written yet"):
        train(cfg_for(data, out, model="vrnn-gmm", lr=1e6, grad_clip=0, max_steps=20,
                      max_bad_steps=2, val_interval=50))
    assert not (out / "last.pt").exists()


def test_one_non_finite_loss_is_skipped_without_changing_the_parameters(
        data, tmp_path, monkeypatch):
    original = train_mod.LossModule.forward
    calls = {"n": 0}
    seen = []

    def forward(self, *args, **kwargs):
        loss, *rest = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            loss = loss * float("inf")
        return loss, *rest

    monkeypatch.setattr(train_mod.LossModule, "forward", forward)

    def snapshot(step, row):
        seen.append(step)

    with pytest.warns(RuntimeWarning, match="skipping this update"):
        result = train(cfg_for(data, tmp_path / "run", max_steps=5), callback=snapshot)
    assert result.step == 5 and seen == [1, 2, 3, 4, 5] and calls["n"] == 6  # 6 batches


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(data, tmp_path):
    def interrupt(step, row):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # Python's own, or SIG_IGN under `sh -c '... &'`
    result = train(cfg_for(data, tmp_path / "run", max_steps=50), callback=interrupt)
    # the update in progress when Ctrl-C arrives completes, then the run saves and stops
    assert result.stopped == "interrupted" and result.step == 4
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler the run found, restored
    resumed = train(cfg_for(data, tmp_path / "run", max_steps=6, resume="auto"))
    assert resumed.step == 6


def test_early_stopping_on_the_validation_bound(data, tmp_path, monkeypatch):
    bounds = iter([-10.0, -9.0, -9.5, -9.2, -9.1, -8.0])
    monkeypatch.setattr(train_mod, "validate", lambda *a, **k: (next(bounds), 0.0))
    result = train(cfg_for(data, tmp_path / "run", max_steps=100, val_interval=1, patience=3))
    assert result.stopped == "early_stopping" and result.step == 5
    assert result.best_bound == -9.0
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == 2
    # resuming a run that stopped early (as `vrnn reproduce` does) must not train it further
    before = (tmp_path / "run" / "last.pt").read_bytes()
    resumed = train(cfg_for(data, tmp_path / "run", max_steps=100, val_interval=1, patience=3,
                            resume="auto"))
    assert resumed.stopped == "early_stopping" and resumed.step == 5
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_gradients_are_clipped_before_the_optimiser_step(data, tmp_path, monkeypatch):
    norms = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    train(cfg_for(data, tmp_path / "run", max_steps=4, grad_clip=0.01))
    assert len(norms) == 4 and max(norms) <= 0.01 * (1 + 1e-4)


def test_kl_annealing_schedule():
    cfg = TrainConfig(kl_anneal_steps=10, kl_start=0.2)
    assert kl_weight_at(cfg, 0) == pytest.approx(0.2)
    assert kl_weight_at(cfg, 5) == pytest.approx(0.6)
    assert kl_weight_at(cfg, 50) == 1.0
    assert kl_weight_at(TrainConfig(), 0) == 1.0  # off by default, as in the paper


@pytest.mark.parametrize("field,value,flag", [
    ("max_steps", -1, "--max-steps"), ("lr", 0.0, "--lr"), ("lr", -3e-4, "--lr"),
    ("model", "vrnn-lstm", "--model"), ("batch_size", 0, "--batch-size"),
    ("grad_clip", -1.0, "--grad-clip"), ("preset", "huge", "--preset"),
    ("tbptt_reset", 0, "--tbptt-reset"), ("device", "tpu", "--device"),
])
def test_bad_settings_name_their_flag(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        TrainConfig(**{field: value})


def test_resume_from_a_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        TrainConfig(resume=str(tmp_path / "missing.pt"))


def test_the_time_budget_counts_the_time_spent_before_a_resume(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=4))
    spent = load_checkpoint(out / "last.pt")["train_seconds"]
    assert spent > 0
    # a budget already spent: the resumed run stops at once, without an update
    result = train(cfg_for(data, out, max_steps=8, resume="auto", max_minutes=spent / 120))
    assert result.step == 4 and result.stopped == "time_limit"
    # a budget left: it trains on
    result = train(cfg_for(data, out, max_steps=8, resume="auto", max_minutes=60))
    assert result.step == 8 and result.stopped == "max_steps"
    assert load_checkpoint(out / "last.pt")["train_seconds"] > spent


def test_a_cpu_time_budget_counts_this_process_only(data, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=4, budget_clock="cpu"))
    ck = load_checkpoint(out / "last.pt")
    assert ck["train_cpu_seconds"] > 0
    result = train(cfg_for(data, out, max_steps=8, resume="auto", budget_clock="cpu",
                           max_minutes=ck["train_cpu_seconds"] / 120))
    assert result.step == 4 and result.stopped == "time_limit"
    with pytest.raises(ValueError, match="--budget-clock"):
        cfg_for(data, out, budget_clock="gpu")


def test_tensorboard_gets_the_metrics_and_a_resume_purges_what_came_after(
        data, tmp_path, monkeypatch):
    import sys
    import types as _types

    made = []

    class Writer:  # the interface of torch.utils.tensorboard.SummaryWriter that we use
        def __init__(self, log_dir, purge_step=None):
            self.log_dir, self.purge_step, self.scalars = log_dir, purge_step, []
            made.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, step))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        _types.SimpleNamespace(SummaryWriter=Writer))
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=4, tensorboard=True))
    train(cfg_for(data, out, max_steps=6, tensorboard=True, resume="auto"))
    first, resumed = made
    assert first.log_dir == str(out / "tensorboard") and first.purge_step is None
    assert ("train_bound", 2) in first.scalars and ("valid_bound", 4) in first.scalars
    assert resumed.purge_step == 4 and ("train_bound", 6) in resumed.scalars

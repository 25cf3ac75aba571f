"""Training flags declared once: the parser that add_train_flags builds from TrainConfig's fields
cannot drift from them; --resume keeps the run's own settings; one rule for file-name stems."""

import argparse
import dataclasses
import signal
from pathlib import Path

import pytest

from vrnn.models.config import MODEL_NAMES
from vrnn.train.config import (
    DATA_FIELDS,
    RESUME_OWN,
    add_train_flags,
    config_from_args,
    data_stem,
    train_flags,
)
from vrnn.train.loop import TrainConfig, TrainResult

FIELDS = dataclasses.fields(TrainConfig)


def parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_train_flags(p, **kw)
    return p


def test_one_flag_per_field_with_the_fields_default():
    actions = {a.dest: a for a in parser()._actions if a.dest != "help"}
    assert list(actions) == [f.name for f in FIELDS]
    defaults = vars(parser().parse_args([]))
    assert defaults == {f.name: f.default for f in FIELDS}
    # and the parsed defaults make the same config as TrainConfig()'s own
    assert TrainConfig(**defaults) == TrainConfig()
    for f in FIELDS:
        action = actions[f.name]
        assert action.help and len(action.help) > 15, f.name  # a real description
        if isinstance(f.default, bool):
            flag = f"--no-{f.name.replace('_', '-')}" if f.default else \
                f"--{f.name.replace('_', '-')}"
            assert action.option_strings == [flag] and action.nargs == 0
        elif f.name == "res_q":  # on, off, or the model's own default (None)
            assert action.option_strings == ["--res-q", "--no-res-q"]
        else:
            expected = "--out" if f.name == "out_dir" else f"--{f.name.replace('_', '-')}"
            assert action.option_strings == [expected], f.name


def test_a_three_way_switch_parses_on_off_and_the_models_default():
    assert parser().parse_args([]).res_q is None
    assert parser().parse_args(["--res-q"]).res_q is True
    assert parser().parse_args(["--no-res-q"]).res_q is False
    with pytest.raises(ValueError, match="--res-q"):
        TrainConfig(model="vrnn-gauss", res_q=True)
    with pytest.raises(ValueError, match="--posterior"):
        TrainConfig(model="rnn-gauss", posterior="smoothing")
    assert TrainConfig(model="srnn-gauss", posterior="filtering", res_q=False).model_overrides() \
        == {"posterior": "filtering", "res_q": False}


def test_flags_parse_to_typed_values_and_switches_flip_their_default():
    args = parser().parse_args(["--lr", "1e-3", "--max-steps", "7", "--seq-len", "20",
                                "--no-tbptt", "--overwrite", "--model", "VRNN-GMM",
                                "--out", "x", "--max-minutes", "1.5", "--rewind"])
    assert (args.lr, args.max_steps, args.seq_len, args.max_minutes) == (1e-3, 7, 20, 1.5)
    assert args.tbptt is False and args.overwrite is True and args.rewind is True
    assert args.model == "vrnn-gmm" and args.out_dir == "x"
    with pytest.raises(SystemExit):
        parser().parse_args(["--budget-clock", "gpu"])
    with pytest.raises(SystemExit):
        parser().parse_args(["--preset", "huge"])
    choices = {a.dest: a.choices for a in parser()._actions}
    assert tuple(choices["model"]) == MODEL_NAMES


def test_only_defaults_and_required_shape_a_subset(capsys):
    p = parser(only=("data", "max_steps", "patience"), defaults={"patience": 10},
               required=("data",))
    assert {a.dest for a in p._actions} == {"help", "data", "max_steps", "patience"}
    assert vars(p.parse_args(["--data", "d"])) == {"data": "d", "max_steps": 2000,
                                                   "patience": 10}
    with pytest.raises(SystemExit):
        p.parse_args([])
    capsys.readouterr()
    p.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 10)" in text and "(default 0)" not in text
    with pytest.raises(ValueError, match="not TrainConfig fields: nope"):
        parser(only=("nope",))


def test_every_field_docstring_names_its_own_flag():
    flags = {f.field: f for f in train_flags()}
    for f in FIELDS:
        name = "out" if f.name == "out_dir" else f.name.replace("_", "-")
        assert flags[f.name].flag in (f"--{name}", f"--no-{name}")
    assert set(DATA_FIELDS) <= set(flags) and set(RESUME_OWN) <= set(flags)


def test_resume_keeps_the_runs_settings_unless_a_flag_is_typed(tmp_path, capsys):
    from toydata import write_npz

    from vrnn.train.loop import train

    data, out = str(write_npz(tmp_path / "toy.npz")), tmp_path / "run"
    train(TrainConfig(data=data, model="vrnn-gauss", preset="tiny", lr=1e-3, batch_size=8,
                      max_steps=2, out_dir=str(out), progress=False, tensorboard=False,
                      device="cpu"))
    argv = ["--data", data, "--model", "vrnn-gauss", "--out", str(out), "--resume", "auto",
            "--batch-size", "4", "--max-steps", "2"]
    fields = vars(parser(required=("data", "model")).parse_args(argv))
    cfg = config_from_args(fields, argv)
    assert cfg.lr == 1e-3 and cfg.preset == "tiny"  # the run's own
    assert cfg.batch_size == 4  # typed: overrides, with a note
    assert cfg.progress is True and cfg.device == "auto"  # RESUME_OWN: the command line's
    err = capsys.readouterr().err
    assert "--batch-size 4 overrides the run's 8" in err and "--lr" not in err
    with pytest.raises(ValueError, match="holds a tiny model"):
        config_from_args({**fields, "preset": "small"}, [*argv, "--preset", "small"])


def test_resume_with_nothing_to_resume_is_a_fresh_run(tmp_path):
    fields = vars(parser().parse_args(["--out", str(tmp_path / "none"), "--resume", "auto"]))
    assert config_from_args(fields, ["--resume", "auto"]) == TrainConfig(**fields)


@pytest.mark.parametrize("data,stem", [
    ("handwriting", "handwriting"), ("speech-multi", "speech-multi"),
    ("data/my speech.npz", "my_speech"), ("/x/y/notes (v2).npz", "notes_v2_"),
])
def test_one_rule_for_the_stem_of_a_data_argument(data, stem):
    assert data_stem(data) == stem
    assert TrainConfig(data=data, model="rnn-gauss").out_dir == str(
        Path("runs") / f"{stem}-rnn-gauss")


def _result(stopped, sig=None, main=True):
    from vrnn.models.presets import model_config

    return TrainResult(out_dir=Path("runs/x"), step=12, epoch=1, best_bound=-3.14159,
                       last_checkpoint=Path("runs/x/last.pt") if main else None,
                       best_checkpoint=None, metrics_csv=None, stopped=stopped,
                       elapsed_s=9.6, model_config=model_config("rnn-gauss", x_dim=2,
                                                                preset="tiny"),
                       signal=sig)


def test_the_result_says_its_line_and_its_exit_status():
    assert _result("max_steps").summary() == (
        "max_steps at step 12 (10 s); best validation bound -3.14 nats/sequence; checkpoints "
        "in runs/x")
    assert _result("max_steps", main=False).summary() is None
    assert _result("max_steps").exit_status == 0
    assert _result("early_stopping").exit_status == 0
    assert _result("interrupted", signal.SIGINT).exit_status == 130
    assert _result("interrupted", signal.SIGTERM).exit_status == 143

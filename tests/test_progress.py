"""What a run shows while it trains: where its output is not a terminal, a line at the first
update and then every so often, with the updates, the time against the budget and the last
validation bound; the studies (``vrnn reproduce``, ``vrnn demo``) show it for each model."""

import re

import pytest
from toydata import tiny_train_config, write_npz

from vrnn.train import loop, progress

LINE = re.compile(r"^\[vrnn-gauss\] update (\d+), cpu (\d+\.\d) of 5 min, train bound "
                  r"(-?[0-9.e+]+)(?:, valid bound (-?[0-9.e+]+) \(update (\d+)\))?$")


def lines(text: str, model: str = "vrnn-gauss") -> list[str]:
    return [x for x in text.splitlines() if x.startswith(f"[{model}] update")]


def test_progress_lines_show_updates_budget_and_the_last_validation(tmp_path, capsys):
    cfg = tiny_train_config(write_npz(tmp_path / "d.npz"), tmp_path / "run", progress=True,
                            max_minutes=5.0, budget_clock="cpu")
    loop.train(cfg, progress_every=0.0)  # a line at every update
    got = lines(capsys.readouterr().err)
    assert len(got) == 8, got
    parsed = [LINE.match(x) for x in got]
    assert all(parsed), got
    assert [int(m.group(1)) for m in parsed] == list(range(1, 9))
    assert all(float(m.group(2)) <= 5.0 for m in parsed)
    # validation every 4 updates: the lines after it quote it, the ones before have none
    assert [m.group(5) for m in parsed] == [None] * 4 + ["4"] * 4
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    row4 = next(r.split(",") for r in metrics[1:]
                if r.split(",")[header.index("step")] == "4"
                and r.split(",")[header.index("valid_bound")])
    assert float(parsed[4].group(4)) == pytest.approx(
        float(row4[header.index("valid_bound")]), rel=1e-3)


def test_off_a_terminal_a_line_every_so_often_and_none_without_progress(tmp_path, capsys,
                                                                        monkeypatch):
    data = write_npz(tmp_path / "d.npz")
    monkeypatch.setattr(progress, "PROGRESS_LINE_SECONDS", 3600.0)
    loop.train(tiny_train_config(data, tmp_path / "a", progress=True, max_minutes=5.0,
                                 budget_clock="cpu"))  # stderr is not a terminal here
    got = lines(capsys.readouterr().err)
    assert len(got) == 1 and LINE.match(got[0]).group(1) == "1"  # the first update only
    loop.train(tiny_train_config(data, tmp_path / "b", progress=False))
    assert not lines(capsys.readouterr().err)


def test_a_step_budget_is_shown_as_one(tmp_path, capsys):
    cfg = tiny_train_config(write_npz(tmp_path / "d.npz"), tmp_path / "run", progress=True,
                            model="rnn-gauss", max_steps=3)
    loop.train(cfg, progress_every=0.0)
    got = lines(capsys.readouterr().err, "rnn-gauss")
    assert got[-1].startswith("[rnn-gauss] update 3 of 3, wall ")


def test_every_model_of_a_study_shows_its_progress_unless_told_not_to():
    from vrnn.study.reproduce import build_parser, train_configs

    args = build_parser().parse_args(["--data", "chorales", "--study", "families"])
    assert all(c.progress for c in train_configs(args, "binary").values())
    args = build_parser().parse_args(["--data", "chorales", "--study", "families",
                                      "--no-progress"])
    assert not any(c.progress for c in train_configs(args, "binary").values())

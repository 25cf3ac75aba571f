"""`vrnn demo` end to end on tiny models (quick mode): the speech comparison, its files, the
paired gaps it reports, and the chorales fallback when the speech data are absent."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import numpy as np
import pytest
from toydata import finish_vrnn, start_vrnn, wait_until

from vrnn.study import demo
from vrnn.study.tables import paired_gap


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    if demo.speech_missing() is not None:
        pytest.skip(f"speech data not installed ({demo.speech_missing()})")
    out = tmp_path_factory.mktemp("demo") / "demo"
    report = demo.run_demo(out, quick=True, parallel=True)  # the real path: spawned processes
    return out, report


def test_speech_demo_writes_report_audio_and_figures(speech_run):
    out, report = speech_run
    assert report == out / "report.md"
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == "speech" and not results["fallback"]
    assert list(results["models"]) == ["vrnn-gauss", "rnn-gauss", "rnn-gmm"]
    for m in results["models"]:
        for i in range(demo.NUM_SAMPLES):
            assert (out / m / f"sample_{i}.wav").stat().st_size > 1000
    assert (out / "real" / "test_0.wav").is_file()
    for png in ("waveforms.png", "kl_per_step.png", "learning_curves.png"):
        assert (out / png).stat().st_size > 1000
    md = report.read_text(encoding="utf-8")
    for ref in ("waveforms.png", "kl_per_step.png", "real/test_0.wav", "rnn-gmm/sample_2.wav"):
        assert f"]({ref})" in md
    assert "docs/RESULTS.md" in md and "handwriting" in md
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<audio controls") == 1 + 3 * demo.NUM_SAMPLES
    assert page.count('src="data:audio/wav;base64,') == 1 + 3 * demo.NUM_SAMPLES
    assert page.count('<img src="data:image/png;base64,') == 3


def test_reported_gaps_are_the_paired_gaps_of_the_per_sequence_numbers(speech_run):
    out, report = speech_run
    results = json.loads((out / "results.json").read_text())
    rows = results["models"]
    vrnn = np.asarray(rows["vrnn-gauss"]["ll_seq"])
    md = report.read_text(encoding="utf-8")
    for key in ("rnn-gauss", "rnn-gmm"):
        gap, se = paired_gap(vrnn, np.asarray(rows[key]["ll_seq"]))
        name = rows[key]["model"]
        m = re.search(rf"VRNN-Gauss − {name}: \*\*([-+0-9.]+)\*\* nats per sequence "
                      r"\(paired standard error ([0-9.]+)", md)
        assert m, name
        assert float(m.group(1)) == pytest.approx(gap, abs=0.051)
        assert float(m.group(2)) == pytest.approx(se, abs=0.051)
        # and the table's means are the means of those numbers
        assert f"{np.mean(rows[key]['ll_seq']):.1f}" in md


def test_falls_back_to_chorales_without_speech(tmp_path, monkeypatch, capsys):
    hint = "sudo apt-get install asterisk-core-sounds-en-wav"
    monkeypatch.setattr(demo, "speech_missing", lambda: hint)
    out = tmp_path / "demo"
    report = demo.run_demo(out, quick=True, parallel=False)
    captured = capsys.readouterr()
    assert "not installed" in captured.out
    for model in ("vrnn-bernoulli", "rnn-bernoulli"):  # each model's progress while it trains
        assert f"[{model}] update 1 of 8, cpu " in captured.err
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == "chorales" and results["fallback"]
    assert list(results["models"]) == ["vrnn-bernoulli", "rnn-bernoulli"]
    md = report.read_text(encoding="utf-8")
    assert "speech data are not installed" in md and hint in md
    assert "on chorales" in md.splitlines()[0]
    assert "](real/test_0.mid)" in md and "](vrnn-bernoulli/sample_0.mid)" in md
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<a href="vrnn-bernoulli/sample_0.mid" type="audio/midi" download>' in page
    assert "<audio" not in page
    assert page.count('<img src="data:image/png;base64,') >= 4  # 2 models, real, KL, curves


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("serial, sig", [(True, signal.SIGINT), (False, signal.SIGINT),
                                         (False, signal.SIGTERM)],
                         ids=["serial ctrl-c", "parallel ctrl-c", "parallel sigterm"])
def test_a_signal_during_training_stops_the_demo_without_a_report(tmp_path, serial, sig):
    """Ctrl-C (to the whole process group, as a terminal sends it) or SIGTERM (to the command
    alone) while the models train: the demo stops within seconds, every model's training with
    it, status 130 (143), no report, saying to run the command again; not the half-trained
    models evaluated and reported, nor the demo waiting minutes for the others' budgets."""
    data = demo.DATA if demo.speech_missing() is None else demo.FALLBACK
    models = demo.MODELS[data][:1] if serial else demo.MODELS[data]
    out = tmp_path / "demo"
    proc = start_vrnn(tmp_path, "demo", "--out", out, *(["--serial"] if serial else []),
                      group=True)
    wait_until(lambda: all((out / m / "metrics.csv").exists() for m in models), proc,
               "the models to train", timeout=180)
    time.sleep(1.0)  # well inside the training loops
    code, stdout, stderr = finish_vrnn(proc, sig, timeout=90, group=sig == signal.SIGINT)
    assert code == 128 + sig, f"status {code}:\n{stdout}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert "no report" in stderr and "run the same command again" in stderr, stderr
    assert not [p.name for p in out.iterdir() if p.is_file()]  # no report, no results.json
    for m in models:
        assert (out / m / "last.pt").is_file()  # each stopped as vrnn train does: saved

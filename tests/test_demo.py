"""`vrnn demo` end to end on tiny models (quick mode): the speech comparison, its files, the
paired gaps it reports, and the chorales fallback when the speech data are absent."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

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
    assert "not installed" in capsys.readouterr().out
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

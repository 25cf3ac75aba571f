import csv
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import soundfile as sf

from vrnn.commands.render import (
    plot_learning_curves,
    stroke_segments,
    to_pcm16,
    write_midi,
    write_samples,
)
from vrnn.data import DataInfo
from vrnn.data.music import LOWEST_KEY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, path


def names(paths):
    return [p.name for p in paths]


def test_strokes_files_and_segments(tmp_path):
    info = DataInfo(name="hw", kind="strokes", x_dim=3)
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3, 12, 3))
    samples[..., 2] = 0.0
    samples[:, [4, 11], 2] = 1.0  # two strokes per line
    real = samples[:2] * 0.5
    paths = write_samples(samples, info, tmp_path, prefix="s", real=real)
    assert names(paths) == ["ss.png", "s_0.svg", "s_1.svg", "s_2.svg"]
    assert all(p.parent == tmp_path for p in paths)
    assert_png(paths[0])
    for p in paths[1:]:
        root = ET.parse(p).getroot()
        assert root.tag.endswith("svg")
        # one polyline per stroke: two drawn paths carry the line style
        assert len([e for e in root.iter() if e.tag.endswith("path")]) >= 2
    segs = stroke_segments(samples[0])
    assert [len(s) for s in segs] == [5, 7]
    np.testing.assert_allclose(segs[1][-1], samples[0, :, :2].sum(0))  # absolute positions


@pytest.mark.parametrize("n", [1, 3])
def test_audio_wav_round_trip(tmp_path, n):
    frame, T, sr = 10, 4, 8000
    info = DataInfo(name="speech", kind="audio", x_dim=frame, sample_rate=sr, frame_size=frame)
    rng = np.random.default_rng(n)
    samples = rng.uniform(-1.3, 1.3, size=(n, T, frame)).astype(np.float32)  # some beyond +-1
    samples[0, 0, :3] = [1.0, -1.0, 0.0]
    paths = write_samples(samples, info, tmp_path, real=samples[:1])
    assert names(paths) == [f"sample_{i}.wav" for i in range(n)] + ["samples_waveform.png"]
    assert_png(paths[-1])
    for i, p in enumerate(paths[:-1]):
        wave, rate = sf.read(p)
        assert rate == sr and wave.shape == (T * frame,)
        assert sf.info(p).subtype == "PCM_16"
        expected = np.clip(samples[i].reshape(-1), -1, 1)  # frames concatenated
        np.testing.assert_allclose(wave, expected, atol=1 / 32768)
    assert to_pcm16(np.array([np.nan, 2.0, -2.0])).tolist() == [0, 32767, -32768]


def test_audio_without_rate_writes_only_the_picture(tmp_path):
    info = DataInfo(name="real-valued", kind="audio", x_dim=5)
    paths = write_samples(np.zeros((2, 3, 5)), info, tmp_path)
    assert names(paths) == ["samples_waveform.png"]


def test_midi_notes_parse_with_music21(tmp_path):
    music21 = pytest.importorskip("music21")
    roll = np.zeros((6, 88), dtype=np.float32)
    roll[0:2, 60 - LOWEST_KEY] = 1  # C4, two quarters
    roll[3, 60 - LOWEST_KEY] = 0.9  # C4 again after a rest: a second note
    roll[1:4, 64 - LOWEST_KEY] = 1  # E4, three quarters
    roll[5, 0] = 0.7  # A0 at the very end (closed by the end of the roll)
    roll[2, 70 - LOWEST_KEY] = 0.4  # below the threshold: no note
    info = DataInfo(name="chorales", kind="binary", x_dim=88)
    paths = write_samples(np.stack([roll, np.zeros_like(roll)]), info, tmp_path, real=roll[None])
    assert names(paths) == ["samples_pianoroll.png", "sample_0.mid", "sample_1.mid"]
    assert_png(paths[0])
    assert paths[1].read_bytes()[:4] == b"MThd"
    score = music21.converter.parse(paths[1])
    found = sorted((float(n.offset), p.midi, float(n.quarterLength))
                   for n in score.flatten().notes for p in n.pitches)
    assert found == [(0.0, 60, 2.0), (1.0, 64, 3.0), (3.0, 60, 1.0), (5.0, 21, 1.0)]
    empty = music21.converter.parse(paths[2])
    assert len(empty.flatten().notes) == 0


def test_midi_writer_rejects_notes_off_the_keyboard(tmp_path):
    with pytest.raises(ValueError, match="MIDI notes"):
        write_midi(np.ones((2, 88)), tmp_path / "x.mid", low=50)


@pytest.mark.parametrize("x_dim, name", [(28, "samples_digits.png"), (5, "samples_raster.png")])
def test_binary_pictures(tmp_path, x_dim, name):
    info = DataInfo(name="b", kind="binary", x_dim=x_dim)
    rng = np.random.default_rng(0)
    samples = (rng.random((5, 28, x_dim)) > 0.5).astype(np.float32)
    paths = write_samples(samples, info, tmp_path, real=samples[:3])
    assert names(paths) == [name]
    assert_png(paths[0])


def test_other_kind_gets_line_plots(tmp_path):
    info = DataInfo(name="x", kind="audio", x_dim=6)
    info.kind = "sensor"  # a kind this version does not know
    paths = write_samples(np.ones((2, 7, 6)), info, tmp_path, prefix="q")
    assert names(paths) == ["qs.png"]
    assert_png(paths[0])


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 1), (2, 3, 5), (0, 3, 4), (2, 0, 4)])
def test_bad_shapes_raise(tmp_path, shape):
    info = DataInfo(name="x", kind="binary", x_dim=4)
    with pytest.raises(ValueError, match=r"shape \(" + ", ".join(map(str, shape))):
        write_samples(np.zeros(shape), info, tmp_path)
    with pytest.raises(ValueError, match="real"):
        write_samples(np.zeros((1, 3, 4)), info, tmp_path, real=np.zeros((1, 3, 2)))
    assert list(tmp_path.iterdir()) == []


def write_csv(path, rows):
    """A metrics.csv with the columns training writes (a column the plots read that training no
    longer writes makes DictWriter fail here)."""
    from vrnn.train.metrics import METRIC_FIELDS

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, METRIC_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def test_learning_curves(tmp_path, monkeypatch):
    a = write_csv(tmp_path / "a.csv", [
        {"step": 1, "train_bound": -50.0}, {"step": 2, "valid_bound": -40.0},
        {"step": 3, "train_bound": -30.0}, {"step": 4, "valid_bound": -20.0}])
    b = write_csv(tmp_path / "b.csv", [{"step": 1, "train_bound": -60.0},
                                       {"step": 2, "train_bound": -45.0}])  # no validation
    plotted = []
    from matplotlib.axes import Axes

    real_plot = Axes.plot

    def spy(self, *args, **kw):
        plotted.append((list(args[0]), list(args[1]), args[2], kw.get("label")))
        return real_plot(self, *args, **kw)

    monkeypatch.setattr(Axes, "plot", spy)
    out = plot_learning_curves({"VRNN": a, "RNN": b}, tmp_path / "curves" / "lc.png")
    assert out == tmp_path / "curves" / "lc.png"
    assert_png(out)
    assert plotted == [([2.0, 4.0], [-40.0, -20.0], "-", "VRNN"),
                       ([1.0, 2.0], [-60.0, -45.0], "--", "RNN (train_bound)")]
    empty = write_csv(tmp_path / "empty.csv", [{"step": 1, "lr": 0.1}])
    assert plot_learning_curves({"x": empty}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        plot_learning_curves({"x": tmp_path / "missing.csv"}, tmp_path / "m.png")


def test_learning_curve_axis_says_what_it_shows(tmp_path, monkeypatch):
    b = write_csv(tmp_path / "b.csv", [{"step": 1, "train_bound": -60.0,
                                        "train_bound_per_step": -3.0}])
    labels = []
    from matplotlib.axes import Axes

    real = Axes.set_ylabel
    monkeypatch.setattr(Axes, "set_ylabel",
                        lambda self, s, *a, **k: labels.append(s) or real(self, s, *a, **k))
    plot_learning_curves({"RNN": b}, tmp_path / "a.png")
    plot_learning_curves({"RNN": b}, tmp_path / "b.png", y="valid_bound_per_step")
    assert labels == ["training bound (nats per sequence)\n(no valid_bound values)",
                      "training bound (nats per step)\n(no valid_bound_per_step values)"]

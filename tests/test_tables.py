"""Tables as data (``vrnn.data.tables``): CSV, TSV and Parquet files in long form and folders of
them, read into the sequences they were written from; every mistake in one is one line naming
the file, the line or row and the column; train and evaluate on them through the command line;
and a training split too small for ``--batch-size`` trains with the largest batch it fills."""

import json
import sys

import numpy as np
import pytest
import soundfile as sf

import vrnn
from vrnn.cli import main
from vrnn.data import DataError, load_dataset, read_table

TRAIN = ("--model", "vrnn-gauss", "--preset", "tiny", "--max-steps", "2", "--val-interval", "2",
         "--batch-size", "4", "--device", "cpu", "--no-progress", "--no-tensorboard")


def sequences(n=7, D=2, seed=0):
    """``n`` sequences of 3 to 8 steps: the oracle every reader must give back."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(T), D)).round(4).astype(np.float32)
            for T in rng.integers(3, 9, n)]


def long_rows(seqs, seed=1):
    """(sequence name, time, features) rows of ``seqs``, shuffled: a reader must group them by
    name and order them by time."""
    rows = [(f"s{i}", t, *x) for i, s in enumerate(seqs) for t, x in enumerate(s.tolist())]
    return [rows[j] for j in np.random.default_rng(seed).permutation(len(rows))]


def write_table(path, header, rows):
    """``rows`` under ``header`` as CSV, TSV or Parquet (by the suffix of ``path``)."""
    if path.suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")  # installed with the project's data extra
        import pyarrow.parquet as pq

        columns = list(zip(*rows)) if rows else [[] for _ in header]
        pq.write_table(pa.table({h: list(c) for h, c in zip(header, columns)}), path)
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        path.write_text("\n".join(sep.join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# -- reading ------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_a_long_table_gives_back_the_sequences_it_was_written_from(tmp_path, suffix):
    seqs = sequences()
    path = write_table(tmp_path / f"t{suffix}", ["id", "t", "a", "b"], long_rows(seqs))
    table = read_table(path)  # 'id' and 't' found by their names
    assert table.sequence_column == "id" and table.time_column == "t"
    assert table.features == ["a", "b"]
    first_seen = list(dict.fromkeys(row[0] for row in long_rows(seqs)))
    assert table.names == first_seen  # in the order they first appear
    by_name = dict(zip(table.names, table.sequences))
    for i, s in enumerate(seqs):
        assert by_name[f"s{i}"].dtype == np.float32
        np.testing.assert_array_equal(by_name[f"s{i}"], s)


def test_named_columns_choose_the_sequence_the_order_and_the_features(tmp_path):
    seqs = sequences(4, D=3)
    rows = [(t * 10, x[2], name, x[0], x[1]) for name, t, *x in long_rows(seqs)]
    path = write_table(tmp_path / "v.csv", ["hour", "c", "patient", "a", "b"], rows)
    table = read_table(path, sequence_column="patient", time_column="hour",
                       feature_columns="a, b,c")
    assert table.features == ["a", "b", "c"]
    by_name = dict(zip(table.names, table.sequences))
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(by_name[f"s{i}"], s)
    # without the time column the rows stay in the file's order
    unordered = read_table(path, sequence_column="patient", time_column="", feature_columns="a")
    got = dict(zip(unordered.names, unordered.sequences))["s0"][:, 0]
    want = [x[0] for name, t, *x in long_rows(seqs) if name == "s0"]
    np.testing.assert_array_equal(got, np.float32(want))


def test_without_a_sequence_column_the_file_is_one_sequence_in_time_order(tmp_path):
    path = write_table(tmp_path / "log.csv", ["Time", "x"], [(2, 0.5), (0, 1.5), (1, 2.5)])
    table = read_table(path)
    assert table.sequence_column is None and table.time_column == "Time"
    assert table.names == ["log"]
    np.testing.assert_array_equal(table.sequences[0][:, 0], [1.5, 2.5, 0.5])
    # '' names no sequence column even where one called 'id' exists
    ided = write_table(tmp_path / "ided.csv", ["id", "x"], [(1, 0.0), (1, 1.0), (2, 2.0)])
    assert len(read_table(ided).sequences) == 2
    assert len(read_table(ided, sequence_column="").sequences) == 1


def test_iso_dates_order_a_sequence(tmp_path):
    rows = [("a", "2024-01-03T00:00", 3.0), ("a", "2024-01-01", 1.0), ("a", "2024-01-02", 2.0)]
    path = write_table(tmp_path / "d.csv", ["id", "timestamp", "x"], rows)
    np.testing.assert_array_equal(read_table(path).sequences[0][:, 0], [1.0, 2.0, 3.0])


def test_a_folder_of_csvs_is_one_sequence_per_file(tmp_path):
    seqs = sequences(3)
    folder = tmp_path / "runs"
    for i, s in enumerate(seqs):
        sub = folder / ("deep" if i == 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        write_table(sub / f"r{i}.csv", ["a", "b"], [tuple(x) for x in s.tolist()])
    table = read_table(folder)
    assert table.names == ["deep/r2.csv", "r0.csv", "r1.csv"]
    for name, got in zip(table.names, table.sequences):
        np.testing.assert_array_equal(got, seqs[int(name[-5])])


def test_a_folder_of_parquet_parts_groups_rows_by_sequence_across_files(tmp_path):
    seqs = sequences(5)
    rows = long_rows(seqs)
    folder = tmp_path / "parts"
    folder.mkdir()
    write_table(folder / "part-0.parquet", ["id", "t", "a", "b"], rows[:12])
    write_table(folder / "part-1.parquet", ["id", "t", "a", "b"], rows[12:])
    table = read_table(folder)
    by_name = dict(zip(table.names, table.sequences))
    assert len(by_name) == 5
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(by_name[f"s{i}"], s)


def test_load_dataset_reads_a_table_as_real_frames_normalised_per_feature(tmp_path):
    seqs = [s * [1.0, 100.0] + [0.0, 50.0] for s in sequences(20)]
    path = write_table(tmp_path / "t.csv", ["id", "t", "a", "b"], long_rows(seqs))
    ds = load_dataset(str(path))
    assert ds.info.kind == "real" and ds.info.x_dim == 2 and ds.formats == {"CSV": 1}
    assert "sequence column 'id'" in ds.info.source and "features a, b" in ds.info.source
    train = np.concatenate(ds.train)
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 20
    binary = write_table(tmp_path / "bits.csv", ["id", "a", "b"],
                         [(i // 3, i % 2, (i // 2) % 2) for i in range(12)])
    assert load_dataset(str(binary)).info.kind == "binary"


def test_every_layout_gives_the_data_set_an_npz_of_the_same_sequences_gives(tmp_path):
    """The .npz reader (vrnn.data.formats, other code) is the oracle: same splits, same
    statistics, same normalised frames."""
    seqs = sequences(12)
    np.savez(tmp_path / "ref.npz", data=np.concatenate(seqs), lengths=[len(s) for s in seqs])
    ref = load_dataset(str(tmp_path / "ref.npz"))
    rows = [(f"s{i:02d}", t, *x) for i, s in enumerate(seqs) for t, x in enumerate(s.tolist())]
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, s in enumerate(seqs):
        write_table(folder / f"{i:02d}.csv", ["a", "b"], [tuple(x) for x in s.tolist()])
    paths = [write_table(tmp_path / f"t{suffix}", ["id", "t", "a", "b"], rows)
             for suffix in (".csv", ".tsv", ".parquet")] + [folder]
    for path in paths:
        ds = load_dataset(str(path))
        assert (ds.info.kind, ds.info.mean, ds.info.std) == (ref.info.kind, ref.info.mean,
                                                             ref.info.std), path
        for split in ("train", "valid", "test"):
            got, want = ds.split(split), ref.split(split)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)


def test_fit_trains_on_what_read_table_returns(tmp_path):
    seqs = sequences(8)
    table = read_table(write_table(tmp_path / "t.csv", ["id", "t", "a", "b"], long_rows(seqs)))
    model = vrnn.build_model(vrnn.model_config("vrnn-gauss", x_dim=len(table.features),
                                               preset="tiny"))
    history = vrnn.fit(model, table.sequences[:6], valid=table.sequences[6:], steps=2,
                       batch_size=3, val_interval=2, progress=False)
    assert history.steps == 2 and np.isfinite(history.column("valid_bound")[1]).all()
    assert model.log_prob(table.sequences[6:], num_samples=2).log_likelihood.shape == (2,)


# -- mistakes: one line naming the file, the line or row, the column ----------------------------

def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path):
    path = write_table(tmp_path / "t.csv", ["id", "a"], [(1, 0.0), (1, 1.0)])
    msg = one_line_error(read_table, path, sequence_column="patient")
    assert str(path) in msg and "'patient'" in msg and "--sequence-column" in msg
    assert "its columns are: id, a" in msg
    msg = one_line_error(read_table, path, feature_columns="a,b")
    assert "no column 'b'" in msg and "--feature-columns" in msg and "id, a" in msg
    msg = one_line_error(read_table, path, feature_columns="id")
    assert "'id' is the sequence column" in msg


@pytest.mark.parametrize("cell,says", [
    ("abc", "'abc' is not a number"), ("", "an empty cell"), ("nan", "NaN"),
    ("inf", "an infinite value"), ("1e39", "'1e39' is beyond float32's range")])
def test_a_bad_cell_is_named_by_file_line_and_column(tmp_path, cell, says):
    path = tmp_path / "t.csv"
    path.write_text(f"id,a,b\n1,0.5,1\n1,{cell},2\n1,1,3\n")
    msg = one_line_error(read_table, path)
    assert msg.startswith(f"{path}: line 3, column 'a': {says}"), msg


def test_a_text_column_says_how_to_name_the_sequence_column(tmp_path):
    path = write_table(tmp_path / "t.csv", ["patient", "a"], [("x", 1.0), ("y", 2.0)])
    msg = one_line_error(read_table, path)
    assert "line 2, column 'patient': 'x' is not a number" in msg
    assert "--sequence-column patient" in msg and "--feature-columns" in msg


def test_a_null_parquet_cell_is_named_by_row(tmp_path):
    path = write_table(tmp_path / "t.parquet", ["id", "a"], [("s", 1.0), ("s", None)])
    assert one_line_error(read_table, path).startswith(
        f"{path}: row 2, column 'a': an empty cell")


def test_a_row_with_the_wrong_number_of_fields_is_named_by_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,a,b\n1,0,1\n\n1,2\n")
    msg = one_line_error(read_table, path)
    assert msg.startswith(f"{path}: line 4 has 2 fields, the header has 3 (id, a, b)"), msg


@pytest.mark.parametrize("text,says", [
    ("", "empty file"), ("id,a,b\n", "no rows after the header line"),
    ("1,2\n3,4\n", "the first line holds numbers"), ("a,,b\n1,2,3\n", "column 2 of the header "
                                                    "has no name"),
    ("a,a\n1,2\n", "names column 'a' twice")])
def test_an_empty_or_headless_file_is_refused_saying_what_a_table_needs(tmp_path, text, says):
    path = tmp_path / "t.csv"
    path.write_text(text)
    msg = one_line_error(load_dataset, str(path))
    assert msg.startswith(str(path)) and says in msg, msg


def test_a_folder_whose_files_have_different_columns_is_refused(tmp_path):
    write_table(tmp_path / "a.csv", ["x", "y"], [(1, 2), (3, 4)])
    write_table(tmp_path / "b.csv", ["x", "z"], [(1, 2), (3, 4)])
    msg = one_line_error(load_dataset, str(tmp_path))
    assert "b.csv: its columns differ from those of" in msg and "a.csv" in msg
    assert "missing y" in msg and "extra z" in msg
    ds = load_dataset(str(tmp_path), skip_bad=True)  # --skip-bad leaves it out
    assert len(ds.info.skipped) == 1 and "b.csv" in ds.info.skipped[0]


def test_one_step_sequences_and_repeated_times_are_refused(tmp_path):
    rowid = write_table(tmp_path / "r.csv", ["id", "a"], [(i, float(i)) for i in range(5)])
    msg = one_line_error(read_table, rowid)
    assert "every sequence has one step" in msg and "--sequence-column" in msg
    twice = write_table(tmp_path / "w.csv", ["time", "a"], [(0, 1.0), (1, 2.0), (0, 3.0)])
    msg = one_line_error(read_table, twice)
    assert "two rows at time '0' (line 2 and line 4)" in msg and "--sequence-column" in msg
    dates = write_table(tmp_path / "d.csv", ["time", "a"], [(0, 1.0), ("noon", 2.0)])
    assert "'noon' is neither a number nor a date" in one_line_error(read_table, dates)


def test_parquet_without_pyarrow_says_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1")  # never opened: the import fails first
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    msg = one_line_error(load_dataset, str(path))
    assert msg.startswith(str(path)) and "pip install pyarrow" in msg


def test_column_flags_on_data_that_is_not_a_table_are_refused(tmp_path):
    from toydata import write_npz

    npz = write_npz(tmp_path / "toy.npz")
    msg = one_line_error(load_dataset, str(npz), sequence_column="id")
    assert "--sequence-column" in msg and "applies to tables" in msg


# -- the command line -----------------------------------------------------------------------------

def cli(capsys, *argv) -> tuple[str, str]:
    assert main(list(map(str, argv))) == 0, capsys.readouterr()
    out = capsys.readouterr()
    return out.out, out.err


@pytest.mark.parametrize("layout", ["csv", "folder", "parquet"])
def test_train_and_evaluate_on_a_table_from_the_command_line(tmp_path, capsys, layout):
    seqs = sequences(12)
    rows = [(t, x[1], name, x[0]) for name, t, *x in long_rows(seqs)]
    header = ["hour", "b", "patient", "a"]
    if layout == "folder":
        data = tmp_path / "folder"
        data.mkdir()
        for i, s in enumerate(seqs):
            write_table(data / f"p{i:02d}.csv", ["a", "b"], [tuple(x) for x in s.tolist()])
        columns = ()
    else:
        data = write_table(tmp_path / f"vitals.{layout}", header, rows)
        columns = ("--sequence-column", "patient", "--time-column", "hour",
                   "--feature-columns", "a,b")
    out, _ = cli(capsys, "data", "info", data, *columns)
    assert "real, D = 2" in out and "12 sequences split" in out
    run = tmp_path / "run"
    out, _ = cli(capsys, "train", "--data", data, *columns, "--out", run, *TRAIN)
    assert "checkpoints in" in out
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["feature_columns"] == ("a,b" if columns else None)
    out, _ = cli(capsys, "evaluate", run / "best.pt", "--samples", "2", "--json")
    result = json.loads(out)
    assert result["n_sequences"] == 1 and np.isfinite(result["log_likelihood"])
    if layout == "csv":  # another table of the same columns is read with the model's columns
        other = write_table(tmp_path / "other.csv", header, rows[:20])
        out, _ = cli(capsys, "evaluate", run / "best.pt", "--data", other, "--split", "train",
                     "--samples", "2", "--json")
        assert json.loads(out)["n_sequences"] >= 1


def test_a_bad_table_is_one_line_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("id,a\n1,0.5\n1,oops\n")
    for argv in (("data", "info", path), ("train", "--data", path, "--out", tmp_path / "r",
                                          *TRAIN)):
        with pytest.raises(SystemExit) as e:
            raise SystemExit(main(list(map(str, argv))))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert f"{path}: line 3, column 'a': 'oops' is not a number" in err


# -- a training split smaller than the batch ------------------------------------------------------

def test_sequences_fewer_than_the_batch_train_with_all_of_them_and_say_so(tmp_path, capsys):
    seqs = sequences(9)  # 7 train, 1 valid, 1 test
    data = write_table(tmp_path / "few.csv", ["id", "t", "a", "b"], long_rows(seqs))
    run = tmp_path / "run"
    _, err = cli(capsys, "train", "--data", data, "--out", run, *TRAIN, "--batch-size", "32")
    assert "note: --batch-size 32 is more than the training split fills (7 training " \
           "sequences): training with batches of 7" in err
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert resolved["batch_size"] == 7


def test_audio_too_short_for_the_batch_trains_with_the_rows_it_fills(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "wavs"
    folder.mkdir()
    for i in range(8):  # 6 training files of 20 frames of 200 samples
        sf.write(str(folder / f"u{i}.wav"), np.round(rng.normal(0, 0.1, 4000) * 32767) / 32768,
                 8000, subtype="PCM_16")
    run = tmp_path / "run"
    _, err = cli(capsys, "train", "--data", folder, "--out", run, *TRAIN, "--batch-size", "32",
                 "--seq-len", "10")
    # 120 frames of training audio: rows of one 10-frame window each, 12 of them
    assert "--batch-size 32 is more than the training split fills (120 frames" in err
    assert "training with batches of 12" in err
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert resolved["tbptt"] and resolved["batch_size"] == 12


# -- the documentation page ---------------------------------------------------------------------

@pytest.mark.slow
def test_the_data_page_examples_run_as_written(tmp_path, monkeypatch):
    """Every Python block of docs/data.md in order, and every ``vrnn`` command of its shell blocks
    (training cut to two updates), in a fresh folder with a few recordings and a MIDI file."""
    import re
    from pathlib import Path

    from toydata import vrnn as run_vrnn

    music21 = pytest.importorskip("music21")
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "midi").mkdir()
    tune = music21.stream.Stream([music21.note.Note(p, quarterLength=1) for p in "CEGA"])
    tune.write("midi", fp=str(tmp_path / "midi" / "tune.mid"))
    (tmp_path / "my_recordings").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        sf.write(str(tmp_path / "my_recordings" / f"r{i}.wav"),
                 np.round(rng.normal(0, 0.1, 8000) * 32767) / 32768, 8000, subtype="PCM_16")
    page = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    namespace: dict = {}
    for lang, code in re.findall(r"```(python|bash)\n(.*?)```", page, re.S):
        if lang == "python":
            exec(compile(code, "docs/data.md", "exec"), namespace)
            continue
        for line in code.replace("\\\n", " ").splitlines():
            words = line.split("#")[0].split()
            if words[:1] != ["vrnn"]:
                continue
            if words[1] == "train":
                words += ["--max-steps", "2", "--val-interval", "2", "--no-progress"]
            run_vrnn(*words[1:], cwd=tmp_path)

"""Every subcommand through the real entry point (``python -m vrnn``) on a microscopic config,
asserting on what it wrote; and user mistakes -> one line naming the flag or file, exit status 2."""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from toydata import vrnn, write_npz

from vrnn.cli import COMMANDS, main

TRAIN = ("--preset", "tiny", "--max-steps", "6", "--batch-size", "8", "--val-interval", "3",
         "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny VRNN trained through the CLI, shared by the tests that read its checkpoint."""
    root = tmp_path_factory.mktemp("cli")
    data = write_npz(root / "toy.npz")
    out = root / "run"
    proc = vrnn("train", "--data", data, "--model", "vrnn-gauss", "--out", out, *TRAIN)
    assert "checkpoints in" in proc.stdout
    return {"root": root, "data": data, "out": out, "ckpt": out / "best.pt"}


def test_train_writes_a_run_folder_and_resume_auto_continues(run):
    out = run["out"]
    assert {"last.pt", "best.pt", "metrics.csv", "config.json"} <= {p.name for p in
                                                                      out.iterdir()}
    resumed_out = run["root"] / "resumed"
    vrnn("train", "--data", run["data"], "--model", "rnn-gauss", "--out", resumed_out, *TRAIN,
         "--max-steps", "3")
    proc = vrnn("train", "--data", run["data"], "--model", "rnn-gauss", "--out", resumed_out,
                *TRAIN, "--max-steps", "5", "--resume", "auto")
    assert "step 5" in proc.stdout
    assert torch.load(resumed_out / "last.pt", weights_only=True)["step"] == 5


def test_evaluate_json_has_the_papers_numbers(run):
    proc = vrnn("evaluate", run["ckpt"], "--samples", "5", "--json")
    out = json.loads(proc.stdout)
    for key in ("model", "data", "split", "n_sequences", "num_samples", "elbo",
                "log_likelihood", "stderr"):
        assert key in out
    assert out["model"] == "vrnn-gauss" and out["split"] == "test" and out["n_sequences"] == 6
    assert out["num_samples"] == 5 and np.isfinite(out["elbo"])
    text = vrnn("evaluate", run["ckpt"], "--samples", "3", "--split", "valid").stdout
    assert ">=" in text and "~" in text


def test_sample_writes_arrays_and_pictures_with_and_without_a_prime(run):
    out = run["root"] / "samples"
    proc = vrnn("sample", run["ckpt"], "--num", "3", "--steps", "5", "--seed", "1", "--out", out)
    arr = np.load(out / "samples.npy")
    assert arr.shape == (3, 5, 4) and np.isfinite(arr).all()
    assert len([p for p in out.iterdir() if p.suffix != ".npy"]) >= 1
    assert str(out / "samples.npy") in proc.stdout
    prime = run["root"] / "prime.npy"
    np.save(prime, np.ones((4, 4), dtype=np.float32))
    vrnn("sample", run["ckpt"], "--num", "2", "--steps", "3", "--prime", prime,
         "--temperature", "0.5", "--out", out / "primed")
    assert np.load(out / "primed" / "samples.npy").shape == (2, 3, 4)
    whole = np.load(out / "primed" / "primed.npy")  # the prefix, then the same continuation
    assert whole.shape == (2, 7, 4)
    np.testing.assert_allclose(whole[:, :4], 1.0, atol=1e-5)
    np.testing.assert_array_equal(whole[:, 4:], np.load(out / "primed" / "samples.npy"))


def test_sample_refuses_a_folder_of_earlier_samples_unless_overwrite(tmp_path, run):
    out = tmp_path / "s"
    vrnn("sample", run["ckpt"], "--num", "3", "--steps", "4", "--out", out)
    first = (out / "samples.npy").read_bytes()
    names = sorted(p.name for p in out.iterdir())
    proc = vrnn("sample", run["ckpt"], "--num", "1", "--steps", "4", "--seed", "5", "--out", out,
                check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and str(out) in proc.stderr
    assert (out / "samples.npy").read_bytes() == first  # nothing touched
    # a bad input is reported before anything is replaced, even with --overwrite
    proc = vrnn("sample", run["ckpt"], "--temperature", "0", "--out", out, "--overwrite",
                check=False)
    assert proc.returncode == 2 and sorted(p.name for p in out.iterdir()) == names
    (out / "sample_7.wav").write_bytes(b"RIFF")  # as an earlier run with more sequences left
    (out / "notes.txt").write_text("mine")  # not a sample: never touched
    vrnn("sample", run["ckpt"], "--num", "1", "--steps", "4", "--seed", "5", "--out", out,
         "--overwrite")
    assert np.load(out / "samples.npy").shape == (1, 4, 4)
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "notes.txt"])


def test_sample_draws_at_most_16_pictures_but_keeps_every_array(tmp_path, run):
    out = tmp_path / "many"
    proc = vrnn("sample", run["ckpt"], "--num", "40", "--steps", "2", "--out", out)
    assert np.load(out / "samples.npy").shape == (40, 2, 4)
    assert "first 16" in proc.stdout


def test_analyse_info_export_and_data_list(run):
    png = run["root"] / "kl.png"
    vrnn("analyse", run["ckpt"], "--data", run["data"], "--out", png)
    assert png.stat().st_size > 0
    info = json.loads(vrnn("info", run["ckpt"], "--json").stdout)
    assert info["model"] == "vrnn-gauss" and info["step"] >= 3 and "torch" in info["versions"]
    assert "model_config" in vrnn("info", run["ckpt"]).stdout
    target = run["root"] / "export" / "weights.safetensors"
    vrnn("export", run["ckpt"], "--format", "safetensors", "--out", target)
    assert target.stat().st_size > 0
    assert json.loads(target.with_suffix(".json").read_text())["model_config"]["x_dim"] == 4
    assert "handwriting" in vrnn("data", "list").stdout
    # a second run into the same files is refused, untouched, unless --overwrite
    for argv, path in ((("analyse", run["ckpt"], "--data", run["data"], "--out", png), png),
                       (("export", run["ckpt"], "--out", target), target),
                       (("export", run["ckpt"], "--out", target.with_suffix(".json")), target)):
        before = path.read_bytes()
        proc = vrnn(*argv, check=False)
        assert proc.returncode == 2 and f"--out {path} exists: --overwrite" in proc.stderr
        assert path.read_bytes() == before
    vrnn("export", run["ckpt"], "--out", target, "--overwrite")
    res = run["root"] / "eval.json"
    vrnn("evaluate", run["ckpt"], "--samples", "2", "--split", "valid", "--out", res)
    proc = vrnn("evaluate", run["ckpt"], "--samples", "2", "--split", "valid", "--out", res,
                check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "ELBO" not in proc.stdout
    vrnn("evaluate", run["ckpt"], "--samples", "2", "--split", "valid", "--out", res,
         "--overwrite")


def test_demo_quick_writes_a_report(tmp_path):
    """The command line's demo, in quick mode and one process (tests/test_demo.py checks the
    demo itself, its parallel run and its fallback)."""
    proc = vrnn("demo", "--quick", "--serial", "--out", tmp_path / "demo")
    report = tmp_path / "demo" / "report.md"
    assert report.exists() and str(report) in proc.stdout
    text = report.read_text()
    assert "RNN-GMM" in text and "| model |" in text
    assert any((tmp_path / "demo" / m / "samples.npy").exists()
               for m in ("vrnn-gauss", "vrnn-bernoulli"))
    assert (tmp_path / "demo" / "report.html").exists()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    """Each entry of the table wires up: its flags build, its passthrough module loads."""
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert f"usage: vrnn {name}" in capsys.readouterr().out


# -- mistakes: exit status 2, one line naming the flag or file, no traceback ------------------

def _fails(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:  # argparse's own errors exit directly
        raise SystemExit(main(list(map(str, argv))))
    assert e.value.code == 2, capsys.readouterr()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("flags,named", [
    (("--max-steps", "-3"), "--max-steps"), (("--lr", "0"), "--lr"), (("--lr", "-1"), "--lr"),
    (("--model", "vrnn-lstm"), "--model"), (("--batch-size", "0"), "--batch-size"),
    (("--max-steps", "ten"), "--max-steps"),
])
def test_bad_train_flags(capsys, tmp_path, flags, named):
    data = write_npz(tmp_path / "toy.npz")
    argv = ["train", "--data", data, "--model", "vrnn-gauss", "--out", tmp_path / "r", *TRAIN]
    i = argv.index(flags[0]) if flags[0] in argv else None
    if i is not None:
        del argv[i:i + 2]
    assert named in _fails(capsys, *argv, *flags)
    assert not (tmp_path / "r" / "last.pt").exists()


def test_missing_and_corrupt_checkpoints(capsys, tmp_path, run):
    for cmd in ("evaluate", "sample", "info", "export", "analyse"):
        assert "nope.pt" in _fails(capsys, cmd, tmp_path / "nope.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(run["ckpt"].read_bytes()[:300])
    before = bad.read_bytes()
    for cmd in ("evaluate", "info"):
        assert "corrupt.pt" in _fails(capsys, cmd, bad)
    assert bad.read_bytes() == before
    assert "missing.pt" in _fails(capsys, "train", "--data", run["data"], "--model",
                                  "vrnn-gauss", "--resume", tmp_path / "missing.pt")


def test_data_that_does_not_fit_the_checkpoint(capsys, tmp_path, run):
    wide = write_npz(tmp_path / "wide.npz", x_dim=5)
    err = _fails(capsys, "evaluate", run["ckpt"], "--data", wide, "--samples", "2")
    assert "wide.npz has frames of D=5 but the model expects x_dim=4" in err
    assert "--samples" in _fails(capsys, "evaluate", run["ckpt"], "--samples", "0")
    assert "--temperature" in _fails(capsys, "sample", run["ckpt"], "--temperature", "0")
    prime = tmp_path / "prime.npy"
    np.save(prime, np.zeros((3, 7), dtype=np.float32))
    assert "prime.npy" in _fails(capsys, "sample", run["ckpt"], "--prime", prime)


def test_resume_keeps_the_runs_own_settings(tmp_path, capsys):
    data = str(write_npz(tmp_path / "toy.npz"))
    common = ["train", "--data", data, "--model", "vrnn-gauss", "--device", "cpu",
              "--no-progress", "--val-interval", "3"]
    own = ["--preset", "tiny", "--batch-size", "4", "--seed", "5", "--lr", "1e-3"]
    assert main([*common, *own, "--max-steps", "6", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, *own, "--max-steps", "3", "--out", str(tmp_path / "b")]) == 0
    # the README's form: no size, batch, seed or lr given again
    assert main([*common, "--max-steps", "6", "--out", str(tmp_path / "b"), "--resume",
                 "auto"]) == 0
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert b["step"] == 6
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=0)
    saved = json.loads((tmp_path / "b" / "config.json").read_text())["train"]
    assert (saved["preset"], saved["batch_size"], saved["seed"], saved["lr"]) == \
        ("tiny", 4, 5, 1e-3)
    capsys.readouterr()
    # a flag typed again overrides the run's setting, and says so
    assert main([*common, "--max-steps", "7", "--out", str(tmp_path / "b"), "--resume", "auto",
                 "--lr", "2e-3"]) == 0
    assert "--lr 0.002 overrides the run's 0.001" in capsys.readouterr().err
    # a size cannot change under a resumed run
    assert "--preset small" in _fails(capsys, *common, "--max-steps", "8", "--out",
                                      tmp_path / "b", "--resume", "auto", "--preset", "small")


def test_data_of_another_kind_is_refused_by_name(capsys, tmp_path, run):
    binary = tmp_path / "binary.npz"
    rng = np.random.default_rng(0)
    splits = {"train": 12, "valid": 4, "test": 4}  # sequences of 6 binary frames of D=4
    np.savez(binary, **{k: (rng.random((n, 6, 4)) > 0.5).astype(np.float32)
                        for k, n in splits.items()})
    for cmd in ("evaluate", "analyse"):
        err = _fails(capsys, cmd, run["ckpt"], "--data", binary)
        assert "binary.npz holds binary frames" in err and "real-valued" in err
    err = _fails(capsys, "train", "--data", binary, "--model", "vrnn-gauss", "--out",
                 run["out"], "--resume", "auto", *TRAIN)
    assert "binary.npz holds binary frames" in err


def test_bad_prime_values_and_temperature_are_named(capsys, tmp_path, run):
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((3, 4), np.nan, dtype=np.float32))
    assert "NaN" in _fails(capsys, "sample", run["ckpt"], "--prime", nan)
    assert "--temperature" in _fails(capsys, "sample", run["ckpt"], "--temperature", "inf")
    afile = tmp_path / "afile"
    afile.write_text("")
    assert f"--out {afile} is a file, not a folder" in _fails(capsys, "sample", run["ckpt"],
                                                              "--out", afile)


def test_an_out_that_cannot_be_written_is_named(capsys, tmp_path, run):
    afile = tmp_path / "afile"
    afile.write_text("")
    for cmd, target in (("sample", afile), ("evaluate", afile / "res.json"),
                        ("analyse", afile / "kl.png")):
        err = _fails(capsys, cmd, run["ckpt"], "--out", target)
        assert err.count("\n") == 1 and str(afile) in err and "is a file, not a folder" in err
    assert "is a folder, not a file" in _fails(capsys, "analyse", run["ckpt"], "--out", tmp_path)


def test_evaluate_keeps_its_numbers_when_out_cannot_be_written(tmp_path, run):
    folder = tmp_path / "taken.json"  # a folder where the JSON file should go
    folder.mkdir()
    proc = vrnn("evaluate", run["ckpt"], "--samples", "2", "--out", folder, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"vrnn evaluate: error: {folder} is a folder, not a file"
    numbers = json.loads(proc.stdout.splitlines()[-1])  # after the table, the JSON
    assert numbers["n_sequences"] == 6 and len(numbers["per_sequence"]["elbo"]) == 6


def test_checkpoints_that_cannot_serve_are_named(capsys, tmp_path, run):
    ckpt = torch.load(run["ckpt"], weights_only=True)
    key = next(iter(ckpt["model"]))
    ckpt["model"][key] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "misfit.pt")
    for cmd in ("evaluate", "sample"):  # the file, and the tensor that does not fit
        err = _fails(capsys, cmd, tmp_path / "misfit.pt")
        assert "misfit.pt: its" in err and f"{key} [3, 3]" in err and "weights" in err
    ckpt = torch.load(run["ckpt"], weights_only=True)
    del ckpt["optimizer"]
    torch.save(ckpt, tmp_path / "weights-only.pt")
    err = _fails(capsys, "train", "--data", run["data"], "--model", "vrnn-gauss", "--out",
                 tmp_path / "w", "--resume", tmp_path / "weights-only.pt", *TRAIN)
    assert "lacks the training state (optimizer)" in err


def test_a_fresh_train_refuses_to_overwrite_a_checkpoint(capsys, run):
    before = (run["out"] / "last.pt").read_bytes()
    err = _fails(capsys, "train", "--data", run["data"], "--model", "vrnn-gauss", "--out",
                 run["out"], *TRAIN)
    assert "--resume auto" in err
    assert (run["out"] / "last.pt").read_bytes() == before


def test_one_bad_file_stops_training_unless_skip_bad(tmp_path):
    import soundfile as sf

    folder = tmp_path / "wavs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        sf.write(folder / f"u{i:02d}.wav", 0.1 * rng.normal(size=4000), 8000, subtype="PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00")
    args = ["train", "--data", folder, "--model", "rnn-gauss", "--preset", "tiny",
            "--max-steps", "2", "--batch-size", "2", "--seq-len", "4", "--no-progress",
            "--device", "cpu"]
    proc = vrnn(*args, "--out", tmp_path / "a", check=False)
    assert proc.returncode == 2 and "broken.wav" in proc.stderr
    assert not (tmp_path / "a" / "last.pt").exists()
    proc = vrnn(*args, "--out", tmp_path / "b", "--skip-bad")
    assert (tmp_path / "b" / "last.pt").exists()
    assert "broken.wav" in proc.stderr + proc.stdout  # reported, not silently dropped
    # evaluating on the run's own data reads it as the run did (skipping the bad file)
    ckpt = tmp_path / "b" / "last.pt"
    own = json.loads(vrnn("evaluate", ckpt, "--json", "--split", "train").stdout)
    # other data with a bad file: named, and skipped only on request
    other = tmp_path / "other"
    other.mkdir()
    for i in range(12):
        sf.write(other / f"v{i:02d}.wav", 0.1 * rng.normal(size=4000), 8000, subtype="PCM_16")
    (other / "torn.wav").write_bytes(b"RIFF\x00\x00")
    proc = vrnn("evaluate", ckpt, "--data", other, "--json", check=False)
    assert proc.returncode == 2 and "torn.wav" in proc.stderr and "--skip-bad" in proc.stderr
    res = json.loads(vrnn("evaluate", ckpt, "--data", other, "--json", "--skip-bad").stdout)
    assert res["n_sequences"] >= 1 and np.isfinite(res["log_likelihood"])
    assert own["n_sequences"] >= 1


def test_audio_at_another_rate_is_resampled_to_the_models(tmp_path):
    import soundfile as sf
    from scipy.signal import resample_poly

    rng = np.random.default_rng(1)
    waves = [0.1 * rng.normal(size=4000) for _ in range(12)]
    for rate in (8000, 16000):
        (tmp_path / str(rate)).mkdir()
        for i, w in enumerate(waves):
            w = w if rate == 8000 else resample_poly(w, 2, 1)
            sf.write(tmp_path / str(rate) / f"u{i:02d}.wav", w, rate, subtype="PCM_16")
    out = tmp_path / "run"
    vrnn("train", "--data", tmp_path / "8000", "--model", "rnn-gauss", "--preset", "tiny",
         "--max-steps", "2", "--batch-size", "2", "--seq-len", "4", "--no-progress",
         "--device", "cpu", "--out", out)
    at8 = json.loads(vrnn("evaluate", out / "last.pt", "--json").stdout)
    proc = vrnn("evaluate", out / "last.pt", "--data", tmp_path / "16000", "--json")
    assert "16000 Hz; resampled to the model's 8000 Hz" in proc.stderr
    at16 = json.loads(proc.stdout)
    # the same utterances, at the model's rate again: the same frames, nearly the same density
    assert at16["n_steps"] == at8["n_steps"]
    assert at16["log_likelihood"] == pytest.approx(at8["log_likelihood"], rel=0.05)


def test_presets_prints_the_matched_parameter_counts(capsys):
    from vrnn.models.base import count_parameters
    from vrnn.models.build import build_model
    from vrnn.models.presets import model_config

    assert main(["presets", "--kind", "strokes"]) == 0
    out = capsys.readouterr().out
    for name in ("rnn-gauss", "vrnn-gmm"):
        n = count_parameters(build_model(model_config(name, x_dim=3, data_kind="strokes",
                                                      preset="small")))
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        assert f"{n:,}" in row.split("|")[4]  # the 'small' column
    assert main(["presets", "--x-dim", "0"]) == 2


def test_data_info_prints_splits_and_statistics(tmp_path, capsys):
    data = write_npz(tmp_path / "toy.npz")
    assert main(["data", "info", str(data)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"train +24 sequences", out) and "normalisation (from train)" in out
    assert main(["data", "info", str(data), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test"]["n_sequences"] == 6 and len(summary["stats"]["mean"]) == 4
    assert main(["data", "info", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err


def test_an_audio_prime_is_read_and_resampled_as_the_data_sets_read_audio(tmp_path):
    """A 16 kHz stereo file primes an 8 kHz model: channels averaged, resampled as
    ``data.audio.read_audio`` does for the data sets, cut into frames, normalised."""
    import soundfile as sf

    from vrnn.commands.prime import read_prime
    from vrnn.data import DataInfo
    from vrnn.data.audio import read_audio

    rng = np.random.default_rng(0)
    wav = tmp_path / "prime.wav"
    sf.write(wav, 0.1 * rng.normal(size=(4100, 2)), 16000, subtype="PCM_16")
    info = DataInfo(name="speech", kind="audio", x_dim=200, sample_rate=8000, frame_size=200,
                    mean=[0.01], std=[0.5])
    prime = read_prime(wav, info)
    assert prime.shape == (10, 200) and prime.dtype == np.float32  # 2050 samples at 8 kHz
    expected, rate = read_audio(wav, 8000)
    assert rate == 8000
    np.testing.assert_allclose(prime, (expected[:2000].reshape(10, 200) - 0.01) / 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="--prime: .*prime.wav is shorter than one frame"):
        read_prime(wav, DataInfo(name="x", kind="audio", x_dim=5000, sample_rate=8000,
                                 frame_size=5000))
    with pytest.raises(ValueError, match="audio files only prime audio models"):
        read_prime(wav, DataInfo(name="pen", kind="strokes", x_dim=3, normalised_dims=[0, 1]))


def test_data_pack_converts_object_arrays_only_when_trusted(tmp_path):
    rng = np.random.default_rng(0)
    lengths = {"train": [5, 7, 6], "valid": [4], "test": [8, 3]}
    old, new = tmp_path / "old.npz", tmp_path / "new.npz"
    splits = {}
    for split, ts in lengths.items():
        splits[split] = np.empty(len(ts), dtype=object)  # ragged: only pickle stores these
        splits[split][:] = [rng.normal(size=(t, 2)).astype(np.float32) for t in ts]
    np.savez(old, **splits)
    proc = vrnn("data", "pack", old, new, check=False)
    assert proc.returncode == 2 and "--trust-pickle" in proc.stderr and not new.exists()
    packed = json.loads(vrnn("data", "pack", old, new, "--trust-pickle", "--json").stdout)
    assert packed["splits"]["train"] == {"n_sequences": 3, "n_steps": 18}
    summary = json.loads(vrnn("data", "info", new, "--json").stdout)  # no pickle needed now
    assert [summary[s]["n_steps"] for s in lengths] == [18, 4, 11]


def test_an_audio_prime_far_from_the_models_rate_is_refused_naming_both_rates(tmp_path):
    """A 1 Hz header is not audio; a 1 kHz file for a 48 kHz model would be resampled 48x."""
    import soundfile as sf

    from vrnn.commands.prime import read_prime
    from vrnn.data import DataInfo

    wave = 0.1 * np.random.default_rng(0).normal(size=1000)
    low, one = tmp_path / "low.wav", tmp_path / "one.wav"
    sf.write(low, wave, 1000, subtype="PCM_16")
    sf.write(one, wave, 1, subtype="PCM_16")
    at48 = DataInfo(name="hifi", kind="audio", x_dim=200, sample_rate=48000, frame_size=200)
    with pytest.raises(ValueError, match=r"--prime: .*low\.wav is at 1,000 Hz.*48,000 Hz"):
        read_prime(low, at48)
    at8 = DataInfo(name="speech", kind="audio", x_dim=200, sample_rate=8000, frame_size=200)
    with pytest.raises(ValueError, match=r"--prime: .*one\.wav: .*sample rate of 1 Hz"):
        read_prime(one, at8)


def test_a_complex_or_float32_overflowing_prime_is_refused(tmp_path):
    from vrnn.commands.prime import read_prime
    from vrnn.data import DataInfo

    info = DataInfo(name="toy", kind="real", x_dim=2)
    x = np.random.default_rng(0).normal(size=(5, 2))
    np.save(tmp_path / "c.npy", x + 1j)
    np.save(tmp_path / "big.npy", np.where(x > 0, 1e300, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"--prime: .*c\.npy: complex values \(dtype "
                                             r"complex128\)"):
            read_prime(tmp_path / "c.npy", info)
        with pytest.raises(ValueError, match=r"--prime: .*big\.npy: \d+ values .*overflow float32"):
            read_prime(tmp_path / "big.npy", info)


@pytest.mark.parametrize("kind", ["npy", "audio"])
def test_a_prime_longer_than_the_long_sequence_limit_is_cut_with_a_warning(tmp_path, kind):
    import soundfile as sf

    from vrnn.commands.prime import read_prime
    from vrnn.data import DataInfo
    from vrnn.data.core import LONG_SEQUENCE_STEPS as N

    values = (np.arange((N + 5) * 2) % 7 / 8).astype(np.float32).reshape(N + 5, 2)
    if kind == "npy":
        path, info = tmp_path / "long.npy", DataInfo(name="toy", kind="real", x_dim=2)
        np.save(path, values)
    else:
        path = tmp_path / "long.wav"
        info = DataInfo(name="speech", kind="audio", x_dim=2, sample_rate=8000, frame_size=2)
        sf.write(path, values.reshape(-1), 8000, subtype="FLOAT")
    with pytest.warns(UserWarning, match=r"long\.(npy|wav) is 10,005 frames long.*last 10,000"):
        prime = read_prime(path, info)
    np.testing.assert_array_equal(prime, values[-N:])


def test_a_long_prime_is_cut_and_said_so_on_stderr(tmp_path, run):
    from vrnn.data.core import LONG_SEQUENCE_STEPS as N

    long = tmp_path / "long.npy"
    np.save(long, np.random.default_rng(0).normal(size=(N + 1, 4)).astype(np.float32))
    out = tmp_path / "s"
    proc = vrnn("sample", run["ckpt"], "--prime", long, "--num", "1", "--steps", "2",
                "--out", out)
    assert "vrnn: warning: --prime: " in proc.stderr and "last 10,000 frames" in proc.stderr
    assert np.load(out / "primed.npy").shape == (1, N + 2, 4)


@pytest.mark.parametrize("name", ["book.txt", "notes.json"])
def test_a_text_or_unknown_data_file_says_in_one_line_what_data_takes(capsys, tmp_path, name):
    path = tmp_path / name
    path.write_text("a,b\n1,2\n")
    for argv in (("data", "info", path),
                 ("train", "--data", path, "--model", "vrnn-gauss", "--out", tmp_path / "r",
                  *TRAIN)):
        err = _fails(capsys, *argv)
        assert err.count("\n") == 1 and name in err and "--data takes" in err, err


# -- hostile requests: huge seeds and memory, races on --out, exports given to info ----------

@pytest.mark.parametrize("cmd", ["train", "evaluate", "sample", "analyse", "demo", "reproduce"])
@pytest.mark.parametrize("seed", [str(2**70), str(2**63), "-1"])
def test_a_seed_out_of_range_is_named_in_every_command(capsys, tmp_path, run, cmd, seed):
    argv = {"train": ["train", "--data", run["data"], "--model", "vrnn-gauss", "--out",
                      tmp_path / "r", *TRAIN],
            "demo": ["demo", "--quick", "--serial", "--out", tmp_path / "r"],
            "reproduce": ["reproduce", "--data", run["data"], "--out", tmp_path / "r"]
            }.get(cmd, [cmd, run["ckpt"], "--out", tmp_path / "r"])
    err = _fails(capsys, *argv, "--seed", seed)
    assert "--seed must be a whole number from 0 to 2**63 - 1" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_request_too_big_for_memory_is_refused_naming_its_flag(capsys, tmp_path, run):
    err = _fails(capsys, "evaluate", run["ckpt"], "--samples", 10**12)
    assert "--samples 1000000000000: " in err and "memory" in err and err.count("\n") == 1
    err = _fails(capsys, "evaluate", run["ckpt"], "--samples", 10**11, "--estimator", "smc")
    assert "--samples 100000000000: " in err and "memory" in err
    err = _fails(capsys, "sample", run["ckpt"], "--num", 10**9, "--steps", 10**6, "--out",
                 tmp_path / "s")
    assert "--num 1000000000" in err and "memory" in err and not (tmp_path / "s").exists()
    out = tmp_path / "fivo"
    err = _fails(capsys, "train", "--data", run["data"], "--model", "vrnn-gauss", "--out", out,
                 *TRAIN, "--objective", "fivo", "--particles", 10**8)
    assert "--particles 100000000: " in err and "memory" in err and err.count("\n") == 1
    assert not out.exists()  # the corrected rerun needs no --overwrite


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 12800000000 bytes. Error code 12 "
                 "(Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                           "capacity of 79.1 GiB of which 3.2 GiB is free."),
    MemoryError(),
])
def test_running_out_of_memory_is_one_line_naming_the_flags(capsys, monkeypatch, run, error):
    import vrnn.commands.evaluate as evaluate

    def fails(*a, **k):
        raise error

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fails)
    err = _fails(capsys, "evaluate", run["ckpt"])
    assert err.startswith("vrnn evaluate: error: out of memory") and err.count("\n") == 1
    assert "--samples" in err and "--batch-size" in err
    if not isinstance(error, MemoryError):
        assert "12.8 GB" in err or "20.00 GiB on GPU 0" in err


def _appears(path, real, text="theirs"):
    """``real``, which first writes ``path`` as another process would meanwhile."""
    def wrapped(*a, **k):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return real(*a, **k)

    return wrapped


def test_a_result_that_appeared_meanwhile_is_kept_and_the_command_refuses(
        capsys, monkeypatch, tmp_path, run):
    import safetensors.torch

    import vrnn.commands.analysis as analysis
    import vrnn.commands.evaluate as evaluate
    from vrnn.models.base import SequenceModel

    res = tmp_path / "res.json"
    monkeypatch.setattr(evaluate, "evaluate_checkpoint",
                        _appears(res, evaluate.evaluate_checkpoint))
    err = _fails(capsys, "evaluate", run["ckpt"], "--samples", "2", "--out", res)
    assert f"--out {res} appeared while this command ran" in err and err.count("\n") == 1
    assert res.read_text() == "theirs"
    res.unlink()
    assert main(["evaluate", str(run["ckpt"]), "--samples", "2", "--out", str(res),
                 "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["n_sequences"] == 6  # the figures are not lost
    assert res.read_text() == "theirs"
    samples = tmp_path / "s"
    monkeypatch.setattr(SequenceModel, "sample",
                        _appears(samples / "samples.npy", SequenceModel.sample))
    err = _fails(capsys, "sample", run["ckpt"], "--num", "1", "--steps", "3", "--out", samples)
    assert f"--out {samples / 'samples.npy'} appeared" in err
    assert [p.name for p in samples.iterdir()] == ["samples.npy"]
    png = tmp_path / "kl.png"
    monkeypatch.setattr(analysis, "kl_profile", _appears(png, analysis.kl_profile))
    err = _fails(capsys, "analyse", run["ckpt"], "--out", png)
    assert f"--out {png} appeared" in err and png.read_text() == "theirs"
    target = tmp_path / "w.safetensors"
    monkeypatch.setattr(safetensors.torch, "save", _appears(target, safetensors.torch.save))
    err = _fails(capsys, "export", run["ckpt"], "--out", target)
    assert f"--out {target} appeared" in err and target.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kl.png", "res.json", "s",
                                                           "w.safetensors"]


def test_info_on_an_export_says_what_it_is_and_how_to_load_it(capsys, tmp_path, run):
    target = tmp_path / "w.safetensors"
    assert main(["export", str(run["ckpt"]), "--out", str(target)]) == 0
    capsys.readouterr()
    err = _fails(capsys, "info", target)
    assert "not a vrnn checkpoint" not in err and "export" in err and "safetensors" in err
    assert "load_file" in err and str(target.with_suffix(".json")) in err
    assert err.count("\n") == 1

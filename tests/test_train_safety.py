"""A run folder under training (issue 13): one owner at a time; existing results are neither
silently overwritten nor rewound; SIGTERM saves like Ctrl-C; what a kill leaves (temporaries, a
partial metrics line) is repaired; a failed save or an unusable --out stops with one line."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from toydata import tiny_train_config, write_npz

from vrnn.host.files import WriteError
from vrnn.store.checkpoint import load_checkpoint
from vrnn.train.loop import TrainingError, train
from vrnn.train.run_folder import RunFolderError


@pytest.fixture
def data(tmp_path):
    return str(write_npz(tmp_path / "toy.npz"))


cfg_for = tiny_train_config


def metric_steps(out):
    lines = (out / "metrics.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


# -- two processes, and SIGTERM: the real command line ------------------------------------------

def _start_long_run(data, out):
    """``vrnn train`` in the background, returned once it has logged a train row."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vrnn", "train", "--data", data, "--model", "vrnn-gauss",
         "--preset", "tiny", "--max-steps", "1000000", "--batch-size", "8", "--val-interval",
         "100000", "--log-interval", "1", "--device", "cpu", "--no-progress",
         "--no-tensorboard", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        metrics = out / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run logged nothing in 120 s")


def test_a_second_run_on_the_same_folder_refuses_while_the_first_trains(data, tmp_path):
    out = tmp_path / "run"
    first = _start_long_run(data, out)
    try:
        with pytest.raises(RunFolderError, match=f"in use by pid {first.pid}"):
            train(cfg_for(data, out, resume="auto"))
        with pytest.raises(RunFolderError, match="in use by pid"):
            train(cfg_for(data, out, overwrite=True))
        assert first.poll() is None  # undisturbed
        steps = metric_steps(out)
        assert steps == sorted(steps) and len(set(steps)) == len(steps)  # not interleaved
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert not (out / ".lock").exists()  # released on the way out


def test_sigterm_saves_and_exits_like_ctrl_c(data, tmp_path):
    out = tmp_path / "run"
    proc = _start_long_run(data, out)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # 143, as if SIGTERM had ended it
    step = load_checkpoint(out / "last.pt")["step"]
    assert f"interrupted at step {step}: saved {out / 'last.pt'}" in stdout
    assert step >= 2 and (out / "best.pt").exists()
    # and it continues from there
    resumed = train(cfg_for(data, out, resume="auto", max_steps=step + 2, val_interval=100000,
                            log_interval=1))
    assert resumed.step == step + 2 and resumed.stopped == "max_steps"


def test_ctrl_c_in_process_reports_sigint_and_restores_the_handlers(data, tmp_path):
    def interrupt(step, row):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    result = train(cfg_for(data, tmp_path / "run", max_steps=50), callback=interrupt)
    assert result.stopped == "interrupted" and result.step == 3
    assert result.signal == signal.SIGTERM and result.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) == before


# -- existing results: never silently overwritten, cleared entirely by --overwrite -------------

def test_a_folder_with_results_but_no_last_pt_is_not_overwritten(data, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(data, out))
    (out / "last.pt").unlink()
    before = (out / "best.pt").read_bytes(), (out / "metrics.csv").read_bytes()
    for resume in (None, "auto"):
        with pytest.raises(ValueError, match="already holds best.pt, config.json, metrics.csv"):
            train(cfg_for(data, out, resume=resume))
    assert ((out / "best.pt").read_bytes(), (out / "metrics.csv").read_bytes()) == before


def test_overwrite_then_an_early_ctrl_c_leaves_no_old_file(data, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=8, seed=1))
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1.old").write_bytes(b"old")

    def interrupt(step, row):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(cfg_for(data, out, max_steps=8, overwrite=True), callback=interrupt)
    assert result.stopped == "interrupted" and result.step == 2
    assert load_checkpoint(out / "best.pt")["step"] == 2  # the new run's, not the old step 8
    assert load_checkpoint(out / "best.pt")["train_config"]["seed"] == 0
    assert not (out / "tensorboard").exists()
    assert metric_steps(out) == [2]


def test_a_run_killed_before_its_first_checkpoint_is_started_afresh_by_resume_auto(
        data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.csv").write_text("step,epoch\n1,0\n")
    result = train(cfg_for(data, out, resume="auto", max_steps=2))
    assert result.step == 2 and "holds no checkpoint" in capsys.readouterr().err


def test_overwrite_and_resume_of_the_same_folder_contradict(data, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=2))
    with pytest.raises(ValueError, match="--overwrite deletes the run"):
        train(cfg_for(data, out, resume="auto", overwrite=True))
    assert (out / "last.pt").exists()


# -- resuming from an earlier checkpoint rewinds only with --rewind ----------------------------

def test_resuming_from_an_earlier_checkpoint_needs_rewind(data, tmp_path, capsys):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=4))
    early = tmp_path / "early.pt"
    early.write_bytes((out / "last.pt").read_bytes())
    train(cfg_for(data, out, max_steps=8, resume="auto"))
    before = (out / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"is at step 4, but .*last.pt is at step 8.*--rewind"):
        train(cfg_for(data, out, max_steps=8, resume=str(early)))
    assert (out / "last.pt").read_bytes() == before and max(metric_steps(out)) == 8
    result = train(cfg_for(data, out, max_steps=6, resume=str(early), rewind=True))
    assert "goes back from step 8 to step 4" in capsys.readouterr().err
    assert result.step == 6 and load_checkpoint(out / "last.pt")["step"] == 6
    assert metric_steps(out) == [2, 4, 4, 6, 6]  # train and valid rows up to 6, nothing later


# -- what a kill leaves behind ------------------------------------------------------------------

def test_stale_temporaries_are_removed_at_start(data, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=2))
    stale = [out / ".last.pt.x1y2.tmp", out / ".metrics.csv.abc.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    train(cfg_for(data, out, max_steps=4, resume="auto"))
    assert not any(p.exists() for p in stale)
    assert not list(out.glob(".*.tmp"))


def test_a_partial_metrics_line_is_dropped_on_resume_with_a_note(data, tmp_path, capsys):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=4))
    with (out / "metrics.csv").open("a") as f:
        f.write("5,1,40,0.3,-12.")  # a kill mid-write
    capsys.readouterr()
    train(cfg_for(data, out, max_steps=6, resume="auto"))
    assert "partial last line" in capsys.readouterr().err
    assert metric_steps(out) == [2, 4, 4, 6, 6]


def test_a_malformed_metrics_row_blocks_resume_naming_the_file_and_line(data, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=4))
    lines = (out / "metrics.csv").read_text().splitlines()
    lines[2] = "x" + lines[2]
    (out / "metrics.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match=r"metrics.csv, line 3: step 'x4' is not a whole"):
        train(cfg_for(data, out, max_steps=6, resume="auto"))
    assert load_checkpoint(out / "last.pt")["step"] == 4


# -- failed writes: one line, the old checkpoints kept -------------------------------------------

def test_a_full_disk_during_a_save_stops_with_one_line_and_keeps_the_checkpoint(
        data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(cfg_for(data, out, max_steps=4))
    before = (out / "last.pt").read_bytes()
    real = torch.save

    def full_disk(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("step", 0) > 4:
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                               "failed writing file data/3: file write failed")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingError) as failure:
        train(cfg_for(data, out, max_steps=8, resume="auto"))
    message = str(failure.value)
    assert "\n" not in message and "enforce fail" not in message
    assert f"cannot write {out / 'best.pt'}" in message or f"cannot write {out / 'last.pt'}" \
        in message
    assert f"{out / 'last.pt'} is kept" in message
    assert (out / "last.pt").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


def test_an_out_that_is_a_file_is_one_line_naming_it(data, tmp_path):
    file = tmp_path / "taken"
    file.write_text("not a folder")
    with pytest.raises(WriteError, match=f"--out {file} is a file, not a folder"):
        train(cfg_for(data, file))


def test_a_read_only_out_is_one_line_naming_it(data, tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.name == "posix" and os.geteuid() == 0:  # root writes anyway: the check still must say
        import vrnn.host.files

        real = os.access
        monkeypatch.setattr(vrnn.host.files.os, "access",
                            lambda p, mode: False if str(p) == str(folder) else real(p, mode))
    try:
        with pytest.raises(WriteError, match=f"--out {folder}: cannot write"):
            train(cfg_for(data, folder))
    finally:
        folder.chmod(0o755)


def test_the_command_line_reports_a_bad_out_in_one_line(data, tmp_path):
    file = tmp_path / "taken"
    file.write_text("not a folder")
    proc = subprocess.run(
        [sys.executable, "-m", "vrnn", "train", "--data", data, "--model", "vrnn-gauss",
         "--preset", "tiny", "--max-steps", "1", "--device", "cpu", "--out", str(file)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"vrnn train: error: --out {file} is a file, not a folder"


def test_a_failed_save_names_the_checkpoints_that_exist(data, tmp_path, monkeypatch):
    from vrnn.store import checkpoint

    out = tmp_path / "run"
    real = checkpoint.save_atomic

    def full_disk_on_last(obj, path):  # best.pt goes through, last.pt does not
        if path.name == "last.pt":
            raise WriteError(f"cannot write {path}: no space left on the device")
        return real(obj, path)

    monkeypatch.setattr(checkpoint, "save_atomic", full_disk_on_last)
    with pytest.raises(TrainingError) as failure:
        train(cfg_for(data, out, max_steps=8))
    message = str(failure.value)
    assert (out / "best.pt").exists() and not (out / "last.pt").exists()
    assert "no checkpoint was written" not in message
    assert f"{out / 'best.pt'} is kept" in message and "\n" not in message


# -- a run that fails before its first update leaves its folder as it found it ----------------

def test_a_refused_request_leaves_no_folder_behind(data, tmp_path, monkeypatch):
    import vrnn.kernels.precision as precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="--precision bf16"):
        train(cfg_for(data, out, precision="bf16"))
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match=r"--particles 100000000: .*memory"):
        train(cfg_for(data, out, objective="fivo", particles=10**8))
    assert not (tmp_path / "new").exists()
    for seed in (2**70, 2**63, -1):
        with pytest.raises(ValueError, match="--seed"):
            cfg_for(data, out, seed=seed)
    assert cfg_for(data, out, seed=2**63 - 1).seed == 2**63 - 1


def test_an_allocation_failure_before_the_first_update_leaves_the_folder_as_found(
        data, tmp_path, monkeypatch):
    import vrnn.train.loop as loop

    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 25600000000 bytes.")

    monkeypatch.setattr(loop, "train_step", no_memory)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        train(cfg_for(data, out, tensorboard=True))
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        train(cfg_for(data, out, tensorboard=True))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    monkeypatch.undo()
    assert train(cfg_for(data, out, max_steps=2)).step == 2  # the corrected rerun: no --overwrite


def test_the_progress_bar_stays_off_a_redirected_stderr(data, tmp_path, capsys):
    """No bar redrawn into a log file: a plain line at the first update (then every 30 s)."""
    train(cfg_for(data, tmp_path / "run", max_steps=30, progress=True))
    err = capsys.readouterr().err
    assert "\r" not in err and "step/s" not in err and len(err) < 500, err[:500]
    assert [x.split(",")[0] for x in err.splitlines() if "] update " in x] == \
        ["[vrnn-gauss] update 1 of 30"], err

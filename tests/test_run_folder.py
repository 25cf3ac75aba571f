"""The run folder (vrnn.train.run_folder): one process per --out, stale locks taken over,
--overwrite leaves no old file, kill leftovers cleaned, a damaged metrics.csv repaired or named."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vrnn.host.files import WriteError
from vrnn.train import run_folder
from vrnn.train.run_folder import RunFolder, RunFolderError, repair_metrics

FIELDS = ("step", "epoch", "train_bound", "valid_bound")
HAS_FLOCK = run_folder.fcntl is not None
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def dead_pid() -> int:
    """The pid of a process that has just exited (not reused this soon on a normal machine)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def write_lock(folder: Path, **record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "started": "2026-01-01T00:00:00",
                                **record}))
    return lock


# -- the lock ---------------------------------------------------------------------------------

def test_acquire_creates_the_folder_and_writes_who_holds_it(tmp_path):
    out = tmp_path / "runs" / "x"
    run = RunFolder(out)
    run.acquire()
    try:
        record = json.loads((out / ".lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["started"].startswith("20")
        assert run.locked and [p.name for p in out.iterdir()] == [".lock"]
    finally:
        run.release()
    assert not (out / ".lock").exists() and not run.locked


def test_a_second_run_folder_in_the_same_process_is_refused(tmp_path):
    with RunFolder(tmp_path), pytest.raises(RunFolderError) as err:
        RunFolder(tmp_path).acquire()
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{tmp_path} is in use by pid {os.getpid()} on host {socket.gethostname()}" in msg
    assert "wait for it or use another --out" in msg
    RunFolder(tmp_path).acquire()  # released: free again


def test_a_dead_pids_lock_is_taken_over_with_a_warning(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid)
    run = RunFolder(tmp_path)
    with pytest.warns(RuntimeWarning, match=f"taking over the lock of pid {pid} .*no longer "
                                            f"running"):
        run.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    with pytest.raises(RunFolderError, match="in use"):  # and it is held now
        RunFolder(tmp_path).acquire()
    run.release()
    assert not (tmp_path / ".lock").exists()


def test_an_empty_or_garbled_old_lock_file_is_taken_over(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_bytes(b"\x00{not json")
    old = time.time() - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="unknown process"):
        RunFolder(tmp_path).acquire()


@pytest.mark.skipif(not HAS_FLOCK, reason="no fcntl.flock on this platform")
def test_a_lock_whose_flock_is_free_is_stale_even_if_its_pid_runs(tmp_path):
    # the pid may have been reused by an unrelated process: the free flock is what counts
    write_lock(tmp_path, pid=os.getppid())
    with pytest.warns(RuntimeWarning, match=f"pid {os.getppid()} .*no longer holds it"):
        RunFolder(tmp_path).acquire()


@pytest.mark.skipif(not HAS_FLOCK, reason="no fcntl.flock on this platform")
def test_without_flock_a_live_pid_on_this_host_still_refuses(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "fcntl", None)
    write_lock(tmp_path, pid=os.getppid())
    with pytest.raises(RunFolderError, match=f"in use by pid {os.getppid()}"):
        RunFolder(tmp_path).acquire()
    pid = dead_pid()
    write_lock(tmp_path, pid=pid)
    with pytest.warns(RuntimeWarning, match=f"pid {pid}"):
        RunFolder(tmp_path).acquire()


def race(out: Path, n: int) -> tuple[list, list]:
    """``n`` threads acquire ``out`` at once, each through its own open file (as processes
    would): (the RunFolders that won, the messages of those refused)."""
    import threading

    barrier, won, lost = threading.Barrier(n), [], []

    def contend():
        run = RunFolder(out)
        barrier.wait(timeout=30)
        try:
            run.acquire()
            won.append(run)
        except RunFolderError as e:
            lost.append(str(e))

    threads = [threading.Thread(target=contend) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return won, lost


@pytest.mark.parametrize("how", ["link", "no hard links", "stale"])
def test_of_many_simultaneous_acquires_exactly_one_wins(tmp_path, monkeypatch, how):
    if how == "no hard links":  # the fallback: O_EXCL on .lock itself, then flock
        def no_link(*_):
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    stale = how == "stale"
    pid = dead_pid()
    for attempt in range(10):
        out = tmp_path / f"race{attempt}"
        if stale:  # all of them find a dead run's lock: one takes it over, with one warning
            write_lock(out, pid=pid)
            with pytest.warns(RuntimeWarning, match=f"pid {pid}") as caught:
                won, lost = race(out, 6)
            assert len(caught) == 1
        else:
            won, lost = race(out, 6)
        assert len(won) == 1 and len(lost) == 5, (won, lost)
        assert all("is in use by" in m for m in lost), lost
        won[0].release()
        assert not (out / ".lock").exists()


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    lock = write_lock(tmp_path, pid=4321, host="gpu-node-7")
    with pytest.raises(RunFolderError) as err:
        RunFolder(tmp_path).acquire()
    msg = str(err.value)
    assert "pid 4321 on host gpu-node-7" in msg and f"delete {lock}" in msg and "\n" not in msg
    assert lock.exists()


def test_release_removes_only_a_lock_it_owns(tmp_path):
    a = RunFolder(tmp_path)
    a.acquire()
    RunFolder(tmp_path).release()  # never acquired: leaves a's lock alone
    assert (tmp_path / ".lock").exists()
    (tmp_path / ".lock").unlink()  # someone removed it by hand, and another run took it
    b = RunFolder(tmp_path)
    b.acquire()
    a.release()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid() and b.locked
    b.release()
    assert not (tmp_path / ".lock").exists()


def test_the_context_manager_releases_on_an_error(tmp_path):
    with pytest.raises(KeyError), RunFolder(tmp_path):
        raise KeyError("boom")
    assert not (tmp_path / ".lock").exists()


def test_an_out_that_is_a_file_is_one_line_naming_it(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(WriteError) as err:
        RunFolder(f).acquire()
    assert str(err.value) == f"--out {f} is a file, not a folder"
    with pytest.raises(WriteError, match=f"{f}"):  # a folder below a file
        RunFolder(f / "run").acquire()


READ_ONLY = """
import sys
from vrnn.host.files import WriteError
from vrnn.train.run_folder import RunFolder
try:
    RunFolder(sys.argv[1]).acquire()
except WriteError as e:
    print(e)
    sys.exit(3)
"""


def drop_root_permission_override() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) from the
    capability bounding set (prctl PR_CAPBSET_DROP, 24), so that root, exec'ing, obeys file
    permissions as their owner does."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
@pytest.mark.parametrize("below", [False, True])
def test_a_read_only_out_is_one_line_naming_it(tmp_path, below):
    """A read-only --out, or a new one inside a read-only folder. Root ignores permissions, so as
    root the check runs in a subprocess that has dropped root's permission override (Linux
    capabilities); skipped where it cannot (not Linux, or no CAP_SETPCAP)."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    target = ro / "run" if below else ro
    try:
        if IS_ROOT:
            if not sys.platform.startswith("linux"):
                pytest.skip("root, and no capabilities to drop on this platform")
            try:
                proc = subprocess.run([sys.executable, "-c", READ_ONLY, str(target)],
                                      preexec_fn=drop_root_permission_override,
                                      capture_output=True, text=True, timeout=120)
            except (subprocess.SubprocessError, OSError) as e:
                pytest.skip(f"root, and cannot drop its permission override here: {e}")
            assert proc.returncode == 3, proc.stdout + proc.stderr
            msg = proc.stdout.strip()
        else:
            with pytest.raises(WriteError) as err:
                RunFolder(target).acquire()
            msg = str(err.value)
    finally:
        ro.chmod(0o755)
    assert "\n" not in msg and msg.startswith(f"--out {target}: ")
    assert "permission denied" in msg
    assert not target.exists() or not (target / ".lock").exists()


# -- results, --overwrite, leftovers ----------------------------------------------------------

def fill_run(folder: Path) -> None:
    """An earlier run's results, a user's samples beside them, and kill leftovers."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "best.pt", "metrics.csv", "config.json"):
        (folder / name).write_text(name)
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events.out.tfevents.1.host").write_text("e")
    (folder / "events.out.tfevents.2.host").write_text("e")
    (folder / "samples").mkdir()
    (folder / "samples" / "samples.npy").write_text("s")


def test_existing_results_are_what_a_run_writes_and_not_samples(tmp_path):
    assert RunFolder(tmp_path / "missing").existing_results() == []
    fill_run(tmp_path)
    with RunFolder(tmp_path) as run:
        names = [p.name for p in run.existing_results()]
    assert names == sorted(["best.pt", "config.json", "events.out.tfevents.2.host", "last.pt",
                            "metrics.csv", "tensorboard"])


@pytest.mark.parametrize("read_only", [False, True])
def test_clear_removes_every_result_and_keeps_the_rest(tmp_path, read_only):
    fill_run(tmp_path)
    if read_only:  # a write-protected checkpoint, a read-only event folder
        (tmp_path / "best.pt").chmod(0o444)
        (tmp_path / "tensorboard").chmod(0o555)
    with RunFolder(tmp_path) as run:
        run.clear()
        assert run.existing_results() == []
        left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".lock", "samples"]
    assert (tmp_path / "samples" / "samples.npy").exists()


def test_clear_interrupted_midway_leaves_only_old_results_and_a_rerun_finishes(tmp_path,
                                                                               monkeypatch):
    fill_run(tmp_path)
    real, moved = os.replace, []

    def crash_after_one(src, dst):
        if moved:
            raise OSError(5, "Input/output error")
        moved.append(src)
        real(src, dst)

    with RunFolder(tmp_path) as run:
        monkeypatch.setattr(os, "replace", crash_after_one)
        with pytest.raises(WriteError, match="--overwrite: cannot remove"):
            run.clear()
        monkeypatch.setattr(os, "replace", real)
        # last.pt went first: what is left cannot be mistaken for a run to resume
        assert [Path(p).name for p in moved] == ["last.pt"]
        assert not (tmp_path / "last.pt").exists() and (tmp_path / "best.pt").exists()
        assert [p.name for p in tmp_path.glob(".trash-*")] == [f".trash-{os.getpid()}"]
        run.clear()
        assert run.existing_results() == []
        assert not list(tmp_path.glob(".trash-*"))


def test_remove_stale_temporaries_removes_kill_leftovers_only(tmp_path):
    fill_run(tmp_path)
    stale = [".last.pt.k2j3h4.tmp", ".best.pt.abc.tmp", ".metrics.csv.x1.tmp",
             ".config.json.q.tmp"]
    keep = ["notes.tmp", ".hidden", "last.pt.tmp", ".last.pt.tmp.bak"]
    for name in stale + keep:
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.x.tmp").mkdir()
    (tmp_path / ".trash-12345").mkdir()
    (tmp_path / ".trash-12345" / "best.pt").write_text("old")
    with RunFolder(tmp_path) as run:
        removed = run.remove_stale_temporaries()
    assert sorted(p.name for p in removed) == sorted(stale + [".trash-12345"])
    for name in keep + ["last.pt", "best.pt", ".dir.x.tmp"]:
        assert (tmp_path / name).exists(), name
    assert RunFolder(tmp_path / "missing").remove_stale_temporaries() == []


# -- metrics.csv --------------------------------------------------------------------------------

HEADER = "step,epoch,train_bound,valid_bound\r\n"
GOOD = HEADER + "10,0,-5.5,\r\n20,0,-4.5,\r\n20,0,,-4.9\r\n"


def test_repair_metrics_reads_a_good_file_and_a_missing_one(tmp_path):
    path = tmp_path / "metrics.csv"
    assert repair_metrics(path, FIELDS) == ([], [])
    path.write_text(GOOD, newline="")
    rows, notes = repair_metrics(path, FIELDS)
    assert notes == []
    assert rows == [{"step": "10", "epoch": "0", "train_bound": "-5.5", "valid_bound": ""},
                    {"step": "20", "epoch": "0", "train_bound": "-4.5", "valid_bound": ""},
                    {"step": "20", "epoch": "0", "train_bound": "", "valid_bound": "-4.9"}]


@pytest.mark.parametrize("tail", ["30,0,-4", "30,0,-4.1,\r", "30,0\r\n", "3"])
def test_repair_metrics_drops_a_partial_last_line_with_a_note(tmp_path, tail):
    path = tmp_path / "metrics.csv"
    path.write_text(GOOD + tail, newline="")
    rows, notes = repair_metrics(path, FIELDS)
    assert [r["step"] for r in rows] == ["10", "20", "20"]
    assert notes == [f"{path}: dropped a partial last line (from an interrupted write)"]
    assert notes[0].endswith("metrics.csv: dropped a partial last line (from an interrupted "
                             "write)")


def test_repair_metrics_with_a_partial_header_has_no_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,epo", newline="")
    rows, notes = repair_metrics(path, FIELDS)
    assert rows == [] and len(notes) == 1


@pytest.mark.parametrize("bad, what", [("20,0,-4.5\r\n", "3 columns where the header has 4"),
                                       ("20,0,-4.5,,7\r\n", "5 columns"),
                                       ("2O,0,-4.5,\r\n", "step '2O' is not a whole number"),
                                       (",0,-4.5,\r\n", "step '' is not a whole number")])
def test_repair_metrics_names_the_file_and_line_of_a_damaged_middle_row(tmp_path, bad, what):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + "10,0,-5.5,\r\n" + bad + "30,0,-4.1,\r\n", newline="")
    with pytest.raises(RunFolderError) as err:
        repair_metrics(path, FIELDS)
    msg = str(err.value)
    assert msg.startswith(f"{path}, line 3: ") and what in msg and "\n" not in msg


def test_repair_metrics_reads_another_versions_columns_by_name(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train_bound\n0,10,-5\n", newline="")
    rows, notes = repair_metrics(path, FIELDS)
    assert rows == [{"step": "10", "epoch": "0", "train_bound": "-5", "valid_bound": ""}]
    assert len(notes) == 1 and "valid_bound" in notes[0]
    path.write_text("a,b\n1,2\n", newline="")
    with pytest.raises(RunFolderError, match=f"{path}, line 1: the header has no 'step'"):
        repair_metrics(path, FIELDS)


# -- two real processes -----------------------------------------------------------------------

HOLD = """
import sys
from vrnn.train.run_folder import RunFolder
run = RunFolder(sys.argv[1])
run.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold the folder until the parent closes our stdin
run.release()
"""

TRY = """
import sys
from vrnn.train.run_folder import RunFolder, RunFolderError
try:
    RunFolder(sys.argv[1]).acquire()
except RunFolderError as e:
    print(e)
    sys.exit(1)
print("acquired")
"""


def start_holder(out: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline()  # the holder prints or dies; killed by the test's timeout
    assert line.strip() == "locked", line
    return holder


def run_try(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRY, str(out)], capture_output=True, text=True,
                          timeout=120)


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        second = run_try(out)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"{out} is in use by pid {holder.pid}" in second.stdout
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
        holder.stdout.close()
    third = run_try(out)
    assert third.returncode == 0 and "acquired" in third.stdout and third.stderr == ""


@pytest.mark.skipif(not hasattr(os, "kill") or os.name != "posix", reason="SIGKILL")
def test_a_killed_holders_lock_is_taken_over_by_the_next_process(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    holder.kill()  # SIGKILL: no release, the lock file stays
    holder.wait(timeout=60)
    holder.stdin.close()
    holder.stdout.close()
    assert (out / ".lock").exists()
    second = run_try(out)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"taking over the lock of pid {holder.pid}" in second.stderr

"""vrnn.host.files: atomic writes keep the old file on failure, name the path, and leave no
temporary."""

import errno
import os

import pytest

from vrnn.host import files


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "out.txt"
    files.write_text(p, "one")
    files.write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["out.txt"]


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "out.bin"
    files.write_bytes(p, b"old")

    def fails(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(files.WriteError, match=r"cannot write .*out\.bin: no space left"):
        files.atomic_write(p, fails)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.bin"]


def test_torch_style_disk_full_error_is_one_line(tmp_path):
    def fails(f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0\n"
                           "frame #0 ...")

    with pytest.raises(files.WriteError) as err:
        files.atomic_write(tmp_path / "last.pt", fails)
    assert "\n" not in str(err.value) and "last.pt" in str(err.value)
    assert "disk full" in str(err.value)


def test_interrupt_mid_write_removes_the_temporary_and_propagates(tmp_path):
    def interrupted(f):
        f.write(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "a.pt", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_paths_that_are_files_or_folders_are_named(tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(files.WriteError, match="afile is a file, not a folder"):
        files.check_folder(f, "--out")
    with pytest.raises(files.WriteError, match="is a file, not a folder"):
        files.write_text(f / "x.json", "{}")
    with pytest.raises(files.WriteError, match="is a folder, not a file"):
        files.write_text(tmp_path, "{}")
    assert files.check_folder(tmp_path / "new" / "deeper").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_named(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(files.WriteError, match="ro: cannot write"):
            files.check_folder(ro, "--out")
    finally:
        ro.chmod(0o700)


def test_remove_stale_temporaries_only_touches_temporaries(tmp_path):
    keep = [tmp_path / "last.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    stale = [tmp_path / ".last.pt.abc123.tmp", tmp_path / ".best.pt.x.tmp"]
    for p in keep + stale:
        p.write_text("")
    removed = files.remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    (tmp_path / ".best.pt.y.tmp").write_text("")
    assert files.remove_stale_temporaries(tmp_path, "last.pt") == []


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_written_files_get_the_mode_open_would_give_not_0600(tmp_path):
    umask = os.umask(0o022)
    try:
        new = files.write_text(tmp_path / "metrics.csv", "step\n")
        assert new.stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "shared.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        files.write_text(kept, "{ }")
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


# -- no clobber: a file that appeared while a command ran is never replaced without --overwrite --

def test_a_no_clobber_write_refuses_a_file_that_appeared_and_keeps_it(tmp_path):
    p = tmp_path / "res.json"
    assert files.write_text(p, "mine", overwrite=False, flag="--out") == p
    assert p.read_text() == "mine"
    with pytest.raises(files.WriteError, match=r"--out .*res\.json appeared while this command "
                                               r"ran.*--overwrite") as err:
        files.write_text(p, "later", overwrite=False, flag="--out")
    assert "\n" not in str(err.value)
    assert p.read_text() == "mine" and [x.name for x in tmp_path.iterdir()] == ["res.json"]
    files.write_text(p, "replaced")  # the default replaces, as --overwrite does
    assert p.read_text() == "replaced"


def test_a_no_clobber_write_without_hard_links_still_refuses(tmp_path, monkeypatch):
    def no_links(src, dst, *a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_links)
    p = tmp_path / "kl.png"
    files.write_bytes(p, b"one", overwrite=False)
    assert p.read_bytes() == b"one"
    with pytest.raises(files.WriteError, match="appeared while this command ran"):
        files.write_bytes(p, b"two", overwrite=False)
    assert p.read_bytes() == b"one" and [x.name for x in tmp_path.iterdir()] == ["kl.png"]

"""vrnn.host.allocator: freed buffers stay mapped, so the next step of the same size faults no
pages."""

import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free the same 64 MiB buffer again and again and count the minor page faults
# of the last three times: glibc serves it by mmap and returns it by munmap, so each time faults
# its 16,384 pages in again; kept mapped, the buffer reuses pages the ones before it touched.
_FAULTS = """
import resource, sys, torch
from vrnn.host.allocator import keep_freed_memory, keeps_freed_memory
before = keeps_freed_memory()
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def touch():
    t = torch.empty(16 * 2**20)
    t.fill_(1.0)
    del t
for _ in range(3):  # glibc's first reuse may miss by the alignment slop; then it settles
    touch()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    touch()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(before, applied, keeps_freed_memory(), faults)
"""


def _run(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_memory_is_not_faulted_in_again():
    before, applied, after, faults = _run("keep")
    assert (before, applied, after) == ("False", "True", "True")
    assert int(faults) < 1000  # a few stray pages at most, against 3 x 16,384
    before, applied, after, faults = _run("plain")
    assert (before, after) == ("False", "False")
    assert int(faults) > 3 * 8000  # the control: without it, the buffer's pages fault in again


def test_console_script_applies_it(monkeypatch):
    from vrnn import cli
    from vrnn.host import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["vrnn", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == [1]
    calls.clear()
    with pytest.raises(SystemExit):
        cli.main(["--help"])  # in-process callers (tests, notebooks) keep their allocator
    assert calls == []

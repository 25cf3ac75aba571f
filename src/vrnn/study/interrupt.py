"""A study stopped by a signal: ``vrnn reproduce`` and ``vrnn demo`` under Ctrl-C and SIGTERM.

A model's training stops on a signal as ``vrnn train`` does (the update in progress finished,
``last.pt`` saved: :class:`vrnn.train.stop.StopConditions`) and returns "interrupted". A study
must then stop as well, before it evaluates the half-trained model, trains the next one or writes
a report: :class:`StudyInterrupted`, which the command line turns into one line on stderr and the
shell's status for the signal (130 for Ctrl-C, 143 for SIGTERM). Outside the training loops
:func:`stop_on_signals` raises it at once.

The demo trains its models in child processes, each in a process group of its own
(:func:`own_process_group`), so that a terminal's Ctrl-C reaches the parent alone; the parent
sends the signal on to each child once (:func:`stop_on_signals` with ``forward``), and each
stops its training as above. (A child that received the group's Ctrl-C and then the parent's copy
would take the second as "abort at once".)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StudyInterrupted(Exception):
    """A study stopped by signal ``signum`` before its report; ``str()`` is the message."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message, int(signum))  # both in args: it crosses process boundaries
        self.message, self.signum = message, int(signum)

    def __str__(self) -> str:
        return self.message

    @property
    def signal_name(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """The shell's 128 + N, as if the signal had ended the process."""
        return 128 + self.signum


class _Caught:
    signum: int | None = None


def _send_to_children(signum: int) -> None:
    for child in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)


@contextlib.contextmanager
def stop_on_signals(*, forward: bool = False) -> Iterator[_Caught]:
    """For the block, SIGINT and SIGTERM stop the study (where they are not ignored, as in a job
    a script started with ``&``; a training run inside puts its own handlers in place).

    Without ``forward`` a signal raises :class:`StudyInterrupted` at once. With ``forward`` (the
    block waits for child processes that train): the first signal is sent on to every child
    process and the block goes on until they end, then :class:`StudyInterrupted` is raised
    (or the child's own, with its message); a second signal is sent on too and raises at once.
    """
    caught = _Caught()

    def handler(signum, frame) -> None:
        first = caught.signum is None
        if first:
            caught.signum = signum
        if forward:
            _send_to_children(signum)
            if first:
                return
        raise StudyInterrupted("", signum)

    old = {}
    for sig in SIGNALS:
        try:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals stay as they are
            break
    try:
        yield caught
    except StudyInterrupted:
        raise
    except BaseException as e:
        if caught.signum is None:
            raise
        raise StudyInterrupted("", caught.signum) from e  # a child stopped by the signal
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    if caught.signum is not None:
        raise StudyInterrupted("", caught.signum)


def own_process_group() -> None:
    """In a child process: leave the parent's process group (POSIX), so that a terminal's Ctrl-C
    reaches the parent alone, which sends it on (:func:`stop_on_signals`)."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()

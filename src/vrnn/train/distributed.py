"""Data-parallel training across processes and machines (DistributedDataParallel), nanoGPT style.

Launch, one machine with 4 processes (GPUs, or CPU processes with gloo):

    torchrun --standalone --nproc_per_node=4 -m vrnn train --data speech --model vrnn-gmm

Two machines, 8 GPUs each (run on both; node 0's address as the master):

    # on the first machine (10.0.0.1):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \\
        --master_port=29500 -m vrnn train --data speech --model vrnn-gmm --batch-size 256
    # on the second:
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 \\
        --master_port=29500 -m vrnn train --data speech --model vrnn-gmm --batch-size 256

``--batch-size`` is the *global* batch: every update sees the same sequences, and the same noise
per sequence, as a single process with that batch (see :mod:`vrnn.train.loop`), so a run's result
does not depend on how many processes share it (up to floating-point summation order).

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; when they are present, :func:`setup`
joins the process group (nccl on CUDA, gloo on CPU) and pins each process to ``cuda:LOCAL_RANK``.
Only rank 0 writes checkpoints, metrics and the progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class DistEnv:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    """Global rank of this process (0 for a plain run)."""
    local_rank: int = 0
    """Rank within its machine: picks the GPU."""
    world_size: int = 1
    """Number of processes in the run."""
    device: torch.device = torch.device("cpu")
    """Device this process computes on."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0


def resolve_device(flag: str, local_rank: int = 0) -> torch.device:
    """``--device auto|cpu|cuda`` (or ``cuda:N``) -> a torch device; auto picks CUDA if present."""
    if flag == "auto":
        flag = "cuda" if torch.cuda.is_available() else "cpu"
    if flag.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available (try --device cpu)")
        return torch.device(flag if ":" in flag else f"cuda:{local_rank}")
    if flag != "cpu":
        raise ValueError(f"--device must be auto, cpu or cuda, got {flag!r}")
    return torch.device("cpu")


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, local_rank, world_size)`` from torchrun's environment, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, int(os.environ.get("LOCAL_RANK", rank)), world


def setup(device_flag: str = "auto") -> DistEnv:
    """Detect torchrun, join the process group if there are several processes, pick the device."""
    env = torchrun_env()
    if env is None or env[2] == 1:
        return DistEnv(device=resolve_device(device_flag))
    rank, local_rank, world = env
    device = resolve_device(device_flag, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    global _joined
    _joined = True
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world, device=device)


def cleanup(env: DistEnv, *, finished: bool = True) -> None:
    """Leave the process group (a no-op for a single process).

    After a run that ``finished``, all ranks meet at a barrier first: a rank that tears down its
    gloo group while rank 0 is still writing the last checkpoint can abort ("terminate called
    without an active exception"), and torchrun then reports the whole run as failed. After an
    error there is no barrier, since the other ranks may never reach it."""
    if env.distributed and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


_joined = False
"""Whether this process joined a process group (see :func:`exit_now`)."""


def exit_now(code: int) -> None:
    """End a process that took part in a data-parallel run with ``code``, skipping interpreter
    shutdown; return (doing nothing) in a process that never joined a group.

    A gloo rank that has finished, met the others at the barrier and left its group can still be
    killed by SIGABRT ("terminate called without an active exception") while the interpreter
    shuts down, after the last line of Python has run (about 1 run in 100 under load here;
    faulthandler shows no Python frame). torchrun then reports the whole run as failed although
    every file was written and closed. Nothing is left to do at that point, so the command-line
    entry point flushes the standard streams and leaves with ``os._exit``, which runs no C++
    static destructors. A script of one's own that calls :func:`vrnn.train.loop.train` under
    torchrun can end with ``exit_now(0)`` for the same reason."""
    if not _joined:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
    os._exit(code)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (a no-op for a single process); returns ``t``."""
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_fields(sums: T, env: DistEnv) -> T:
    """A dataclass of numbers with each field summed over all ranks (one all-reduce, in float64);
    ``sums`` itself for a single process. Named fields, not positions in a tensor."""
    if not env.distributed:
        return sums
    names = [f.name for f in dataclasses.fields(sums)]
    t = torch.tensor([float(getattr(sums, n)) for n in names], dtype=torch.float64,
                     device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dataclasses.replace(sums, **dict(zip(names, t.tolist())))


def shard(indices: list[int], env: DistEnv) -> list[int]:
    """This rank's rows of a global batch: every ``world_size``-th, starting at ``rank``."""
    return indices[env.rank::env.world_size]

"""The machine a benchmark ran on, its load, and whether a configuration fits in its memory."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from vrnn.bench.configs import BenchConfig
from vrnn.host.allocator import keeps_freed_memory
from vrnn.host.machine import cpu_name
from vrnn.models.build import build_model


def machine_info(device: torch.device) -> dict:
    """CPU, cores, torch threads and versions, the device (and GPU name) and the load average."""
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device), "load_average": load_average(),
            "keeps_freed_memory": keeps_freed_memory()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: other processes on the machine show here."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory of the GPU, or ``MemAvailable`` of ``/proc/meminfo``; None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimated_bytes(cfg: BenchConfig, variants: int) -> int:
    """A generous estimate of what the training benchmark of ``cfg`` holds at once: parameters,
    gradients and Adam moments per variant, and about a dozen ``(B, T, 4H)`` activations each."""
    with torch.device("meta"):
        n = sum(p.numel() for p in build_model(cfg.model_config()).parameters())
    acts = cfg.batch * cfg.steps * 4 * cfg.hidden * 4 * 12
    return variants * (4 * 4 * n + acts)

"""Memory a request needs, against what the machine has; and allocation failures told as such.

A request that cannot fit (``vrnn evaluate --samples 100000000``, ``vrnn train --objective fivo
--particles 100000000``) is refused before any work by :func:`check_fits`, one line naming the flag,
instead of ending minutes later in an allocator error. The estimates are rough (rows x steps x
the floats a row keeps per step x 4 bytes, :func:`floats_per_row`) and compared with the whole
memory of the device (:func:`device_memory`: the machine's RAM, or the GPU's), so that they
refuse only what cannot possibly fit; what slips through and still fails is recognised by
:func:`is_out_of_memory`, which the command line turns into one line.

This module imports nothing from the project (torch only where a CUDA device is asked about).
"""

from __future__ import annotations

import os
import re

FLOAT_BYTES = 4


class MemoryRequestError(ValueError):
    """A request that needs more memory than the device has: one line naming the flag."""


def device_memory(device=None) -> int | None:
    """Bytes of memory of ``device`` (a ``torch.device`` or its name; None: the CPU): a CUDA
    device's total memory, else the machine's physical memory (None where it cannot be read)."""
    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if kind == "cuda":
        import torch

        try:
            return int(torch.cuda.get_device_properties(device).total_memory)
        except Exception:  # no CUDA here, or no such device: nothing to compare with
            return None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None
    return pages * size if pages > 0 and size > 0 else None


def format_bytes(n: float) -> str:
    """``n`` bytes for people: 12.8 GB, 768 GB, 5.7 TB (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def floats_per_row(config) -> int:
    """The float32 values one row (one sequence, sample or particle) of a model keeps per time
    step, roughly: its frame, its recurrent state and gates, its latent draws and their
    densities' parameters, and every hidden layer's output. ``config``: a ``ModelConfig`` (read
    by attribute, defaults where one is missing)."""
    def width(name: str) -> int:
        return int(sum(getattr(config, name, ()) or ()))

    x, h, z = (int(getattr(config, k, 0) or 0) for k in ("x_dim", "h_dim", "z_dim"))
    a = int(getattr(config, "a_dim", 0) or 0)
    k = int(getattr(config, "components", 1) or 1)
    layers = sum(width(n) for n in ("phi_x", "phi_z", "encoder", "prior_net", "decoder"))
    return 2 * x + 6 * h + 2 * a + 8 * z + layers + k * (2 * x + 1)


def check_fits(need_bytes: float, device, flag: str, why: str, fix: str) -> None:
    """Refuse (:class:`MemoryRequestError`) a request of about ``need_bytes`` when the device has
    less memory in all: one line naming ``flag`` (as given, with its value), ``why`` (what holds
    the memory) and ``fix`` (what to ask for instead)."""
    have = device_memory(device)
    if have is None or need_bytes <= have:
        return
    where = "this machine's" if getattr(device, "type", str(device or "cpu")) == "cpu" \
        else f"{device}'s"
    raise MemoryRequestError(f"{flag}: {why} would take about {format_bytes(need_bytes)} of "
                             f"memory, more than {where} {format_bytes(have)}; {fix}")


_OOM_TEXT = ("not enough memory", "out of memory", "defaultcpuallocator", "can't allocate memory",
             "cannot allocate memory", "failed to allocate")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: ``MemoryError``, ``torch.OutOfMemoryError``
    (CUDA), or the ``RuntimeError`` of PyTorch's CPU allocator."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    if not isinstance(err, RuntimeError):
        return False
    text = str(err).lower()
    return any(t in text for t in _OOM_TEXT)


def out_of_memory_line(err: BaseException) -> str:
    """One line for an allocation failure: how much could not be allocated, and where."""
    text = str(err)
    cpu = re.search(r"allocate (\d+) bytes", text)
    cuda = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]?i?B)", text)
    gpu = re.search(r"\(?GPU (\d+)", text)
    if cpu:
        return f"out of memory: could not allocate {format_bytes(int(cpu.group(1)))}"
    if cuda:
        where = f" on GPU {gpu.group(1)}" if gpu else " on the GPU"
        return f"out of memory: could not allocate {cuda.group(1)}{where}"
    return "out of memory"

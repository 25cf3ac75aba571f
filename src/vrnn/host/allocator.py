"""Keep freed memory mapped: what a training process asks of the C allocator on CPU.

PyTorch's CPU tensors come from ``malloc``. glibc's malloc serves a large block (above a
threshold that grows to at most 32 MiB) by ``mmap`` and gives it back to the kernel by
``munmap`` when it is freed, and it trims the top of its heap once enough of it is free. A
training step allocates and frees the same few hundred MiB of per-step buffers every time (the
filtering loop's ``(N, T, .)`` activations and pre-activation gradients, the casts of bf16
training), so every step touches fresh pages again: at the handwriting size, about 65,000 page
faults and 0.1 s of system time per step, a fifth of a bf16 step, spent by the kernel mapping and
zeroing memory that the step before had just returned.

:func:`keep_freed_memory` tells glibc to serve every block from its heap and never to trim it
(``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, ...)``), so freed buffers stay mapped
and are reused, as a caching allocator (CUDA's, or jemalloc and tcmalloc, which PyTorch's
CPU tuning guides recommend) would keep them. The cost: the process keeps its peak memory
resident until it exits. ``vrnn`` applies it when run as a command (a training, evaluation or
benchmark process); a Python user calls it once, at the start, or not at all. Elsewhere than
glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER = 2**31 - 1  # the largest int mallopt takes: a heap top never counts as worth trimming


@functools.cache
def keep_freed_memory() -> bool:
    """Serve every ``malloc`` from the heap and never trim it (glibc only; applied once).

    Returns whether glibc accepted both settings (False elsewhere, and where it refused)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _NEVER))
    except (OSError, AttributeError):  # no C library to ask, or one without mallopt
        return False


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` has been applied in this process."""
    return keep_freed_memory.cache_info().currsize > 0 and keep_freed_memory()

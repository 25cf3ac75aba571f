"""``vrnn sample``: sequences drawn from a checkpoint, written as arrays, pictures and sounds.

Writes into its folder ``samples.npy`` ``(N, T, D)`` (the generated frames, in data units); with a
prefix (``--prime``) also ``primed.npy`` ``(N, P + T, D)``, prefix then continuation; and the
pictures / sound files of the first :data:`MAX_PICTURES` sequences, prefix included
(:func:`vrnn.commands.render.write_samples`). A folder that holds samples already is refused unless
``overwrite`` (``--overwrite``): then the earlier ones are replaced, and only once the new ones
are written (an error before that leaves them as they were).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrnn.host.files import atomic_write, check_folder

MAX_PICTURES = 16
"""At most this many sequences are drawn as pictures / written as sound files."""
DEFAULT_STEPS = 100
"""Frames per sequence when the checkpoint does not know its median training length."""
RESULTS = ("samples.npy", "primed.npy", "sample_*", "samples*")
"""The names (glob patterns) of what a sampling run writes into its folder."""


def earlier_samples(folder: Path) -> list[Path]:
    """The files of an earlier sampling run in ``folder``, sorted."""
    return sorted({p for pattern in RESULTS for p in folder.glob(pattern) if p.is_file()})


@dataclass
class SampleResult:
    """What :func:`sample_checkpoint` drew and wrote."""

    model: str
    """The paper's name of the model (``VRNN-GMM``)."""
    num: int
    steps: int
    temperature: float
    prime: str | None = None
    """The prefix file, if any."""
    prime_frames: int = 0
    """Frames P of the prefix."""
    files: list[Path] = field(default_factory=list)

    def line(self) -> str:
        """One line for people: what was drawn (and which sequences have pictures)."""
        text = (f"{self.num} samples of {self.steps} steps from {self.model} "
                f"(temperature {self.temperature})")
        if self.prime is not None:
            text += f", each after the {self.prime_frames}-frame prefix of {self.prime}"
        if self.num > MAX_PICTURES:
            text += f"; pictures and sounds of the first {MAX_PICTURES}"
        return text + ":"


def save_npy(path: Path, arr: np.ndarray, *, overwrite: bool = True) -> Path:
    """``np.save`` through :func:`vrnn.host.files.atomic_write` (never a half-written array;
    with ``overwrite=False`` never over a file that appeared meanwhile)."""
    return atomic_write(path, lambda f: np.save(f, arr), overwrite=overwrite, flag="--out")


def _check_memory(model, num: int, frames: int) -> None:
    """Refuse, naming ``--num``, a draw whose frames (``(N, P + T, D)``, kept as the model's
    output, in data units and as the arrays written) or per-step state cannot fit in memory."""
    from vrnn.host.memory import FLOAT_BYTES, check_fits, floats_per_row

    need = FLOAT_BYTES * num * (4 * frames * model.config.x_dim + 3 * floats_per_row(model.config))
    check_fits(need, model.initial_state.device, f"--num {num}",
               f"{num} sequences of {frames} frames", "draw fewer --num or --steps")


def sample_checkpoint(path: str | Path, *, num: int = 4, steps: int | None = None,
                      prime: str | Path | None = None, temperature: float = 1.0, seed: int = 0,
                      out: str | Path | None = None, device: str = "auto",
                      overwrite: bool = False) -> SampleResult:
    """Draw ``num`` sequences from the checkpoint at ``path`` and write them into ``out``.

    Args:
        num: sequences N (all go to ``samples.npy``, the first :data:`MAX_PICTURES` to pictures).
        steps: frames T per sequence; default the checkpoint's median training length.
        prime: a prefix file (:func:`vrnn.commands.prime.read_prime`), read with the
            posterior first.
        temperature: tau > 0: mixture and Bernoulli logits / tau, scales * sqrt(tau).
        seed: seed of the random stream.
        out: the folder (created); default ``samples/`` beside the checkpoint.
        overwrite: replace the samples of an earlier run in ``out`` (removed after the new
            ones are written); without it such a folder is refused.

    Raises:
        ValueError naming the flag or file, or ``out`` when it holds earlier samples and not
        ``overwrite``; ``files.WriteError`` naming ``out``, before any sampling, when it is a
        file or cannot be written.
    """
    import torch

    from vrnn.commands.loading import load_for_use
    from vrnn.commands.prime import read_prime
    from vrnn.commands.render import write_samples

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"--temperature must be a finite number > 0, got {temperature}")
    ckpt, model, info = load_for_use(path, device)
    steps = steps or int(ckpt.get("median_train_length") or 0) or DEFAULT_STEPS
    prefix = torch.from_numpy(read_prime(prime, info)) if prime else None  # (P, D)
    _check_memory(model, num, steps + (0 if prefix is None else len(prefix)))
    folder = check_folder(Path(out) if out else Path(path).parent / "samples", "--out")
    earlier = earlier_samples(folder)
    if earlier and not overwrite:
        names = ", ".join(p.name for p in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        raise ValueError(f"--out {folder} holds the samples of an earlier run ({names}): "
                         f"--overwrite to replace them, or another --out")
    gen = torch.Generator(device=model.initial_state.device).manual_seed(seed)
    x = model.sample(num, steps, prime=prefix, temperature=temperature, generator=gen,
                     include_prime=prefix is not None)  # (N, P + T, D)
    whole = np.asarray(info.denormalise(x.cpu().numpy()), dtype=np.float32)  # (N, P + T, D)
    result = SampleResult(model.config.name, num, steps, temperature,
                          None if prefix is None else str(prime),
                          0 if prefix is None else len(prefix))
    # written first and, without --overwrite, never over one that appeared meanwhile: a second
    # run into the same folder then stops here, before it writes anything
    result.files.append(save_npy(folder / "samples.npy", whole[:, whole.shape[1] - steps:],
                                 overwrite=overwrite))
    if prefix is not None:
        result.files.append(save_npy(folder / "primed.npy", whole))
    result.files += list(write_samples(whole[:MAX_PICTURES], info, folder, prefix="sample"))
    written = set(result.files)
    for p in earlier:  # --overwrite: what the new run did not write again (more --num before)
        if p not in written:
            p.unlink(missing_ok=True)
    return result

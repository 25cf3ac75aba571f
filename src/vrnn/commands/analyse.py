"""``vrnn analyse``: the paper's Figure 2 for one sequence of a checkpoint's data.

The maths and the drawing are :mod:`vrnn.commands.analysis`
(:func:`~vrnn.commands.analysis.figure_kl`); this module
picks the model, the sequence and the file.
"""

from __future__ import annotations

from pathlib import Path

from vrnn.host.files import WriteError, check_folder, refuse_existing


def analyse_checkpoint(path: str | Path, *, data: str | None = None, split: str = "test",
                       index: int = 0, out: str | Path | None = None, seed: int = 0,
                       device: str = "auto", skip_bad: bool = False,
                       overwrite: bool = False) -> Path:
    """Draw the KL per time step of sequence ``index`` of ``split`` beside the sequence.

    Args:
        path: a checkpoint of a latent model (a VRNN or VRNN-I).
        data, split, skip_bad: which sequences (:func:`vrnn.commands.loading.checkpoint_sequences`).
        index: which sequence of the split (0: the first).
        out: the PNG to write; default ``kl.png`` beside the checkpoint.
        seed: seed of the posterior samples.
        overwrite: replace an existing ``out`` (refused without, before any work).

    Returns:
        the PNG's path. Raises ValueError naming the flag or the file, ``files.WriteError`` naming
        ``--out`` (before any work) when it is a folder or cannot be written.
    """
    from vrnn.commands.analysis import figure_kl
    from vrnn.commands.loading import checkpoint_sequences, load_for_use

    if index < 0:
        raise ValueError(f"--index must be >= 0, got {index}")
    ckpt, model, info = load_for_use(path, device)
    png = Path(out) if out else Path(path).parent / "kl.png"
    if png.is_dir():
        raise WriteError(f"--out {png} is a folder, not a file")
    check_folder(png.parent, "--out")
    refuse_existing([png], "--out", overwrite)
    seqs = checkpoint_sequences(ckpt, info, data, split, index + 1,
                                skip_bad=skip_bad).sequences  # what it skipped: on stderr
    if index >= len(seqs):
        raise ValueError(f"--index {index}: the {split} split has {len(seqs)} sequences")
    return figure_kl(model, seqs[index], info, png, seed=seed, overwrite=overwrite)

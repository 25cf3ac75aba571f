"""The run folder as training uses it: owned by one process at a time (rank 0 holds
``<out>/.lock`` for the whole run), never silently overwritten (``--overwrite``) nor rewound to an
earlier step (``--rewind``), cleared of the temporary files a killed process left."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from vrnn.store import checkpoint as ckio
from vrnn.train.config import TrainConfig
from vrnn.train.distributed import DistEnv
from vrnn.train.metrics import last_logged_step


def resume_path(cfg: TrainConfig) -> Path | None:
    last = Path(cfg.out_dir) / ckio.LAST
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        return last if last.exists() else None
    return Path(cfg.resume)


def check_run_folder(cfg: TrainConfig, folder, resume: Path | None, ckpt: dict | None) -> None:
    """Rank 0, holding the folder's lock: start only where that loses nothing without a flag.

    A fresh run refuses a folder holding results unless ``--overwrite`` (which clears them all
    first, so that no old best.pt survives beside the new run's files); a resumed run refuses to
    go back to an earlier step than the folder's own unless ``--rewind``."""
    out = Path(cfg.out_dir)
    existing = folder.existing_results()
    names = ", ".join(sorted(p.name for p in existing))
    if cfg.overwrite:
        if resume is not None and resume.resolve().parent == out.resolve():
            raise ValueError(f"--overwrite deletes the run in --out {out}, and --resume "
                             f"{cfg.resume} continues it from {resume}: choose one")
        if existing:
            folder.clear()
            print(f"note: --overwrite: removed {names} from {out}", file=sys.stderr)
        return
    if resume is None:
        if not existing:
            return
        if cfg.resume == "auto" and not any(p.suffix == ".pt" for p in existing):
            # a run stopped before its first checkpoint: nothing to continue, nothing kept
            print(f"note: --resume auto: {out} holds no checkpoint ({names}); starting afresh",
                  file=sys.stderr)
            folder.clear()
            return
        raise ValueError(f"--out {out} already holds {names}: pass --resume auto to continue "
                         f"that run, --overwrite to delete them and start afresh, or another "
                         f"--out")
    last = out / ckio.LAST
    if last.exists() and resume.resolve() == last.resolve():
        return
    step, ahead = int(ckpt["step"]), []
    if last.exists():
        with contextlib.suppress(ckio.CheckpointError):  # unreadable: the metrics still tell
            ahead.append(int(ckio.load_checkpoint(last)["step"]))
    logged = last_logged_step(out / "metrics.csv", quiet=True)
    ahead += [] if logged is None else [logged]
    if max(ahead, default=step) <= step:
        return
    where = f"{last} is at step {max(ahead)}" if last.exists() else \
        f"{out / 'metrics.csv'} goes to step {max(ahead)}"
    if not cfg.rewind:
        raise ValueError(f"--resume {resume} is at step {step}, but {where}: resuming into --out "
                         f"{out} would rewind the run (replace {ckio.LAST}, drop the metrics "
                         f"after step {step}); pass --rewind to do so, or choose another --out")
    print(f"note: --rewind: {out} goes back from step {max(ahead)} to step {step} "
          f"({ckio.LAST} replaced, metrics after step {step} dropped)", file=sys.stderr)


@contextlib.contextmanager
def owned_run_folder(cfg: TrainConfig, env: DistEnv):
    """Rank 0 holds ``<out>/.lock`` for the whole run (a second run on the same --out refuses)
    and clears what killed processes left mid-write; the other ranks get None. A run that fails
    leaves no empty folder that it created (``--out`` and its missing parents)."""
    if not env.is_main:
        yield None
        return
    from vrnn.train.run_folder import RunFolder

    folder = RunFolder(cfg.out_dir)
    created = _missing_folders(folder.path)
    failed = True
    folder.acquire()
    try:
        folder.remove_stale_temporaries()
        yield folder
        failed = False
    finally:
        folder.release()
        if failed:
            for p in created:  # deepest first; a folder with anything in it stays
                try:
                    p.rmdir()
                except OSError:
                    break


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing

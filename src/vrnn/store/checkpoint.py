"""Checkpoints: one dict of tensors and plain values, written atomically, read with
``torch.load(..., weights_only=True)``.

A checkpoint alone rebuilds its model and its data normalisation. The format (version 1):

    {"format": "vrnn-checkpoint", "version": 1,
     "model": state_dict, "optimizer": state_dict, "model_config": ModelConfig.to_dict(),
     "train_config": TrainConfig.to_dict(), "data_info": DataInfo.to_dict(),
     "step": int, "epoch": int, "batch_in_epoch": int, "sequences_seen": int,
     "best_bound": float | None, "bad_validations": int,
     "rng": {"torch": ByteTensor, "noise": ByteTensor, "numpy": [...], "python": [...]},
     "tbptt_state": [Tensor, ...] | None, "metrics": {...}, "median_train_length": int,
     "world_size": int, "train_seconds": float, "train_cpu_seconds": float,
     "versions": {...}}

``sequences_seen``, ``train_seconds`` and ``train_cpu_seconds`` may be missing from older files
(read as 0). :class:`vrnn.train.state.TrainState` writes and reads the training part.

Writes go through :func:`vrnn.host.files.atomic_write` (a temporary file in the destination folder,
then ``os.replace``): a crash, Ctrl-C or full disk mid-write never leaves a truncated
``last.pt`` / ``best.pt``, and a failure is a one-line :class:`vrnn.host.files.WriteError`.
A file's declared model sizes are checked against its tensors before any model is built, so a
corrupt or hostile config cannot make a reader allocate what the file does not hold.
"""

from __future__ import annotations

import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrnn.host.files import atomic_write, refuse_existing, write_bytes, write_text
from vrnn.host.version import __version__
from vrnn.models.base import SequenceModel
from vrnn.models.build import build_model
from vrnn.models.config import ModelConfig

FORMAT = "vrnn-checkpoint"
VERSION = 1
LAST, BEST = "last.pt", "best.pt"


class CheckpointError(ValueError):
    """A file that is not a readable vrnn checkpoint (corrupt, truncated or foreign)."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(plain(obj))`` to ``path`` atomically (:func:`vrnn.host.files.atomic_write`).

    Raises :class:`vrnn.host.files.WriteError` naming ``path`` (disk full, read-only folder); the
    file that was there is kept."""
    obj = plain(obj)
    return atomic_write(path, lambda f: torch.save(obj, f))


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars / arrays, Paths and str subclasses turned into plain values
    (tensors kept), so that ``torch.load(weights_only=True)`` accepts it."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, str)):  # str subclasses too (torch.__version__)
        return str(obj)
    return obj


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a vrnn checkpoint (names the path).
    """
    path = Path(path)
    if path.is_dir():  # a run folder, most likely: say which files in it are checkpoints
        found = sorted(p.name for p in path.glob("*.pt") if p.is_file())
        hint = (f"pass one of its checkpoints: {', '.join(str(path / n) for n in found)}"
                if found else "it holds no .pt checkpoint")
        raise FileNotFoundError(f"checkpoint not found: {path} is a folder; {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        raise CheckpointError(export_message(path))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for garbage / truncated zips
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or not a vrnn checkpoint "
                              f"({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vrnn checkpoint")
    for key in ("model", "model_config", "data_info"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}")
    check_sizes(ckpt, str(path))
    return ckpt


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts as a safetensors file does (what ``vrnn export`` writes): a
    little-endian 8-byte header length, then the header's JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{" and 2 <= int.from_bytes(head[:8], "little") \
        <= 100_000_000


def export_message(path: Path) -> str:
    """One line for a ``vrnn export`` file given where a checkpoint belongs: what it is, and how
    to load one."""
    config = path.with_suffix(".json")
    return (f"{path} is a vrnn export (safetensors: the weights only; their configs are in "
            f"{config}), not a checkpoint: give the commands the .pt checkpoint it was exported "
            f"from, or in Python build the model with vrnn.build_model(vrnn.ModelConfig.from_dict("
            f"json.load(open('{config}'))['model_config'])) and load the weights with "
            f"model.load_state_dict(safetensors.torch.load_file('{path}'))")


def check_sizes(ckpt: dict, what: str = "checkpoint") -> None:
    """Check that the model ``ckpt["model_config"]`` declares has exactly the tensors of
    ``ckpt["model"]``, names and shapes, without allocating it (it is built on the meta device).

    Raises:
        CheckpointError: naming ``what`` and the first mismatching tensors.
    """
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in weights.values()):
        raise CheckpointError(f"{what}: its 'model' is not a dict of tensors")
    try:
        config = ModelConfig.from_dict(ckpt["model_config"])
        with torch.device("meta"):
            declared = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{what}: invalid model config ({first})") from None
    held = {k: tuple(v.shape) for k, v in weights.items()}
    if declared == held:
        return
    wrong = [f"{k} {list(held[k])} where the config says {list(declared[k])}"
             for k in declared if k in held and held[k] != declared[k]]
    wrong += [f"missing {k}" for k in declared if k not in held]
    wrong += [f"unexpected {k}" for k in held if k not in declared]
    raise CheckpointError(f"{what}: its model config does not match its weights ("
                          + "; ".join(wrong[:3]) + ("; ..." if len(wrong) > 3 else "") + ")")


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu",
                          what: str = "checkpoint") -> SequenceModel:
    """Rebuild the model a checkpoint describes and load its weights, in eval mode.

    Raises:
        CheckpointError: the weights do not fit the checkpoint's own model config.
    """
    check_sizes(ckpt, what)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    load_weights(model, ckpt, what)
    return model.to(device).eval()


def load_weights(model: torch.nn.Module, ckpt: dict, what: str = "checkpoint") -> None:
    """``model.load_state_dict(ckpt["model"])``, a mismatch reported as a
    :class:`CheckpointError` in one line (the missing, unexpected or misshapen names)."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or (first[0] if first else "")
        raise CheckpointError(f"{what}: its weights do not fit its model config ({detail})"
                              ) from None


RESUME_KEYS = ("optimizer", "step", "epoch", "batch_in_epoch", "best_bound", "bad_validations",
               "rng")
"""What ``--resume`` needs besides the model (``vrnn export`` output, say, lacks them)."""


def check_resumable(ckpt: dict, path: str | Path) -> None:
    """Raise a :class:`CheckpointError` unless ``ckpt`` holds the training state to resume."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"--resume: {path} lacks the training state ({', '.join(missing)}); "
                              f"it can be evaluated and sampled, not resumed")


def data_info_from_checkpoint(ckpt: dict):
    """The checkpoint's ``DataInfo`` (its normalisation statistics)."""
    from vrnn.data import DataInfo

    return DataInfo.from_dict(ckpt["data_info"])


# -- random states as tensors / plain lists (weights_only-safe) ---------------------------------

def rng_state(noise: torch.Generator | None) -> dict:
    """torch CPU and noise-generator states as tensors; numpy and python states as lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "noise": noise.get_state() if noise is not None else None,
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict, noise: torch.Generator | None) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if noise is not None and state.get("noise") is not None:
        noise.set_state(state["noise"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def versions() -> dict:
    """The versions a checkpoint records: vrnn's, torch's, numpy's and Python's."""
    return {"vrnn": __version__, "torch": str(torch.__version__), "numpy": np.__version__,
            "python": platform.python_version()}


def export_safetensors(ckpt: dict, out: str | Path, *, overwrite: bool = False
                       ) -> tuple[Path, Path]:
    """Write the model weights as ``out`` (.safetensors) and the configs as ``out`` .json beside.

    Returns the two paths. Either existing is refused (a ``ValueError`` naming it) unless
    ``overwrite``; so is one that appears while the weights are converted (a
    :class:`vrnn.host.files.ClobberError`, the file kept).
    """
    import json

    try:
        from safetensors.torch import save
    except ImportError:  # pragma: no cover - an optional extra
        raise ValueError("--format safetensors needs the safetensors package: "
                         "pip install 'vrnn[export]'") from None
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    refuse_existing([out, out.with_suffix(".json")], "--out", overwrite)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["model"].items()}
    meta = {"format": "vrnn-weights", "model": ckpt.get("train_config", {}).get("model", "")}
    write_bytes(out, save(tensors, metadata=meta), overwrite=overwrite, flag="--out")
    js = out.with_suffix(".json")
    write_text(js, json.dumps({
        "model_config": ckpt["model_config"], "data_info": ckpt["data_info"],
        "train_config": ckpt.get("train_config"), "step": ckpt.get("step"),
        "best_bound": ckpt.get("best_bound"), "versions": ckpt.get("versions"),
    }, indent=2, default=str) + "\n", overwrite=overwrite, flag="--out")
    return out, js

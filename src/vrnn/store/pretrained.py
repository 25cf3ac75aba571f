"""Pretrained models that ship with the package: small checkpoints trained by this project.

Each lives in ``vrnn/store/weights/<name>.pt``, a checkpoint without its training state (the model's
weights, its config, its data's normalisation, the training settings; no optimiser, no random
states), so it loads with ``torch.load(..., weights_only=True)`` like any other and can be
evaluated, sampled, analysed and described, not resumed. ``vrnn/store/weights/index.json`` lists
them: what each is, the command that trained it, its data's licence, its test figures, and the
SHA-256 of its file (checked before it is read). Every entry is checked when the index is read
(its fields and their types; ``file`` a plain name inside the folder), and the checkpoint a name
opens must be the model and data its entry names (an entry pointed at another model's file, with
that file's SHA-256, is refused)::

    vrnn pretrained                                     # the list, with test log-likelihoods
    vrnn sample --pretrained speech-vrnn-gauss          # WAV files in runs/pretrained/...

:func:`add_pretrained` makes an entry from a run's ``best.pt`` (``tools/make_pretrained.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vrnn.host.files import write_bytes, write_text

WEIGHTS = Path(__file__).resolve().parent / "weights"
"""Where the shipped checkpoints and their index live (package data)."""
INDEX = "index.json"
KEEP = ("format", "version", "model", "model_config", "train_config", "data_info", "step",
        "epoch", "best_bound", "metrics", "median_train_length", "train_seconds",
        "train_cpu_seconds", "sequences_seen", "world_size", "versions")
"""What a shipped checkpoint keeps of a run's: everything but the training state that only
``--resume`` needs (optimiser, random states, TBPTT state)."""


class PretrainedError(ValueError):
    """An unknown name, or a shipped file that is missing or not the one the index lists."""


ENTRY_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "file": ((str,), True), "sha256": ((str,), True), "model": ((str,), True),
    "name": ((str,), True), "data": ((str, type(None)), True), "parameters": ((int,), True),
    "bytes": ((int,), False), "step": ((int, type(None)), False),
    "preset": ((str, type(None)), False), "command": ((str,), False),
    "licence": ((str,), False), "test": ((dict,), False)}
"""An index entry's fields: (the types it may have, whether it is required)."""
TEST_NUMBERS = ("log_likelihood", "log_likelihood_stderr", "log_likelihood_per_step", "elbo",
                "elbo_stderr", "n_sequences")
"""The figures of an entry's ``test`` that must be numbers when present (``vrnn pretrained``
formats them)."""


def _entry_error(name: str, entry) -> str | None:
    """What is wrong with index entry ``entry`` (None when nothing is)."""
    if name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0"):
        return "has no plain name (it names the folder runs/pretrained/NAME the commands write to)"
    if not isinstance(entry, dict):
        return f"is not an object (a {type(entry).__name__})"
    for key, (types, required) in ENTRY_FIELDS.items():
        if key not in entry:
            if required:
                return f"lacks {key!r}"
            continue
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, types):
            what = " or ".join("null" if t is type(None) else {"str": "a string", "int": "a whole "
                               "number", "dict": "an object"}[t.__name__] for t in types)
            return f"{key!r} must be {what}, got {value!r}"
    file, sha = entry["file"], entry["sha256"]
    if (file in ("", ".", "..") or Path(file).name != file or "/" in file or "\\" in file
            or "\0" in file or Path(file).is_absolute()):
        return f"'file' must be a plain file name inside the weights folder, got {file!r}"
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        return f"'sha256' must be 64 hexadecimal digits, got {sha!r}"
    for key in TEST_NUMBERS:
        value = entry.get("test", {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"test {key!r} must be a number, got {value!r}"
    return None


def read_index(folder: Path | None = None) -> dict[str, dict]:
    """{name: entry} of ``folder``'s index (default :data:`WEIGHTS`; empty when there is none),
    every entry checked (:data:`ENTRY_FIELDS`): a :class:`PretrainedError` naming the index file
    and the first bad entry."""
    folder = WEIGHTS if folder is None else Path(folder)
    path = folder / INDEX
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PretrainedError(f"{path}: not a readable index of pretrained models ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("models"), dict):
        raise PretrainedError(f"{path}: not an index of pretrained models")
    for name, entry in index["models"].items():
        wrong = _entry_error(name, entry)
        if wrong:
            raise PretrainedError(f"{path}: entry {name!r} {wrong}")
    return index["models"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pretrained_path(name: str, folder: Path | None = None) -> Path:
    """The checkpoint file of pretrained model ``name``, after checking it is the file the index
    lists (its SHA-256) and holds the model and data its entry names: a damaged or replaced file,
    or an entry pointed at another model's file, is refused, naming it."""
    folder = WEIGHTS if folder is None else Path(folder)
    if not isinstance(name, str) or not name.strip():
        raise PretrainedError(f"--pretrained {name!r}: no model named (an unset shell variable?);"
                              f" `vrnn pretrained` lists them")
    index = read_index(folder)
    if name not in index:
        known = ", ".join(index) or "none installed"
        raise PretrainedError(f"--pretrained {name!r}: no such pretrained model (known: {known};"
                              f" `vrnn pretrained` lists them)")
    path = folder / index[name]["file"]
    if not path.is_file():
        raise PretrainedError(f"--pretrained {name}: its file {path} is missing from this "
                              f"installation")
    if _sha256(path) != index[name]["sha256"]:
        raise PretrainedError(f"--pretrained {name}: {path} is not the file the index lists "
                              f"(SHA-256 differs): damaged or replaced")
    _check_holds(name, index[name], path, folder / INDEX)
    return path


def _check_holds(name: str, entry: dict, path: Path, index: Path) -> None:
    """Refuse ``path`` unless its checkpoint is the model, data, preset and step of ``entry``."""
    from vrnn.store.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    tc, mc = ckpt.get("train_config") or {}, ckpt["model_config"]
    held = {"model": tc.get("model") or mc.get("name"), "name": mc.get("name"),
            "data": tc.get("data") or (ckpt["data_info"] or {}).get("name"),
            "preset": tc.get("preset"), "step": ckpt.get("step")}
    wrong = [k for k, v in held.items() if k in entry and entry[k] is not None and entry[k] != v]
    if wrong:
        said = ", ".join(f"{k} {entry[k]}" for k in wrong)
        holds = ", ".join(f"{k} {held[k]}" for k in wrong)
        raise PretrainedError(f"--pretrained {name}: {index} lists {said} for it, but its file "
                              f"{path.name} holds {holds}: the entry points at another model's "
                              f"file")


def output_folder(name: str) -> Path:
    """Where commands run on pretrained model ``name`` write by default: ``runs/pretrained/
    <name>`` under the working directory (never inside the installed package)."""
    return Path("runs") / "pretrained" / name


def slim_checkpoint(ckpt: dict) -> dict:
    """``ckpt`` without the training state (see :data:`KEEP`)."""
    return {k: ckpt[k] for k in KEEP if k in ckpt}


def add_pretrained(name: str, checkpoint: str | Path, *, command: str, licence: str,
                   test: dict, folder: Path | None = None) -> dict:
    """Write the slim copy of ``checkpoint`` as ``folder/<name>.pt`` and its entry in the index
    (replacing an entry of the same name). ``test``: its test-split figures (plain values, as
    :func:`vrnn.commands.evaluate.evaluate_checkpoint` returns them, without per-sequence lists).
    Returns the entry."""
    import io

    import torch

    from vrnn.models.base import count_parameters
    from vrnn.store.checkpoint import load_checkpoint, model_from_checkpoint

    folder = WEIGHTS if folder is None else Path(folder)
    ckpt = slim_checkpoint(load_checkpoint(checkpoint))
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    path = write_bytes(folder / f"{name}.pt", buf.getvalue())
    tc = ckpt.get("train_config") or {}
    mc = ckpt["model_config"]
    entry = {"file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size,
             "model": tc.get("model") or mc.get("name"), "name": mc.get("name"),
             "data": tc.get("data"), "preset": tc.get("preset"), "step": ckpt.get("step"),
             "parameters": count_parameters(model_from_checkpoint(ckpt)),
             "command": command, "licence": licence, "test": test}
    models = read_index(folder)
    models[name] = entry
    write_text(folder / INDEX, json.dumps({"models": models}, indent=1) + "\n")
    return entry


def format_pretrained(index: dict[str, dict]) -> str:
    """The table ``vrnn pretrained`` prints: each model with its test log-likelihood."""
    if not index:
        return "no pretrained models in this installation"
    rows = [("name", "model", "data", "parameters", "test log-likelihood (nats/seq)", "per step")]
    for name, e in index.items():
        t = e.get("test") or {}
        sign = "~" if t.get("latent") else "="
        ll = (f"{sign} {t['log_likelihood']:.1f} ± {t['log_likelihood_stderr']:.1f}"
              if "log_likelihood" in t else "-")
        per = f"{t['log_likelihood_per_step']:.3f}" if "log_likelihood_per_step" in t else "-"
        rows.append((name, e["model"], e["data"], f"{e['parameters']:,}", ll, per))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += ["", "`~`: importance-sampled estimate (S = 40), `=`: exact. Use one with "
              "--pretrained NAME in vrnn sample, evaluate, analyse and info."]
    return "\n".join(lines)

"""What a checkpoint and a data set hold, as plain values and as text for people (``vrnn info``,
``vrnn data info``, ``vrnn data pack``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vrnn.data import SequenceDataset


def format_normalisation(mean: Sequence[float], std: Sequence[float],
                         dims: Sequence[int] | None, x_dim: int) -> str:
    """One line for the statistics a data set is normalised by: ``mean``, ``std`` over the
    normalised ``dims`` (None or all: every dim; []: binary or one-hot frames, not
    normalised)."""
    if dims is not None and len(dims) == 0:
        return "normalisation: none (binary or one-hot frames)"
    fmt = ", ".join
    return (f"normalisation (from train): mean [{fmt(f'{v:.5g}' for v in mean)}], std "
            f"[{fmt(f'{v:.5g}' for v in std)}]"
            + (f" on dims {list(dims)}" if dims and len(dims) < x_dim else ""))


def format_dataset(ds: SequenceDataset, summary: dict, seq_len: int | None = None) -> str:
    """``vrnn data info``: kind, source, licence, the splits and the statistics.

    ``summary`` is ``ds.summary()``; ``seq_len`` the ``--seq-len`` it was read with (an empty
    split is then explained)."""
    info = ds.info
    lines = [f"{info.name}: {info.kind}, D = {info.x_dim}"
             + (f", {info.sample_rate} Hz, frames of {info.frame_size}" if info.sample_rate
                else ""),
             f"source:  {info.source}", f"licence: {info.licence}", f"splits:  {info.split_note}"]
    for split in ("train", "valid", "test"):
        s = summary[split]
        lines.append(f"  {split:5s} {s['n_sequences']:6d} sequences {s['n_steps']:8d} steps "
                     f"(length {s['min_len']}-{s['max_len']}), {s['n_values']:,} values"
                     + (f"  <- empty: no sequence is as long as --seq-len {seq_len}"
                        if not s["n_sequences"] and seq_len else ""))
    if "train_streams" in summary:
        t = summary["train_streams"]
        lines.append(f"  train as whole utterances (truncated BPTT): {t['n_sequences']} streams, "
                     f"{t['n_steps']} steps")
    st = summary["stats"]
    lines.append(format_normalisation(st["mean"], st["std"], info.normalised_dims, info.x_dim))
    if info.skipped:
        lines.append(f"skipped {len(info.skipped)} bad file(s): " + "; ".join(info.skipped))
    return "\n".join(lines)


def format_packed(packed: dict) -> str:
    """``vrnn data pack``'s result (:func:`vrnn.data.pack_sequences`) for people."""
    lines = [f"{packed['path']}: D = {packed['x_dim']}, {packed['dtype']}; split: "
             f"{packed['split_from']}"]
    lines += [f"  {split:5s} {s['n_sequences']:6d} sequences {s['n_steps']:8d} steps"
              for split, s in packed["splits"].items()]
    if packed.get("unused"):
        lines.append(f"  {packed['unused']} sequences under other keys left out")
    return "\n".join(lines)


def checkpoint_info(path: str | Path) -> dict:
    """What a checkpoint holds, as plain values: its model (name, parameters, configuration),
    training progress (step, epoch, best validation bound, last metrics), training settings,
    data statistics and the library versions that wrote it."""
    from vrnn.models.base import count_parameters
    from vrnn.models.build import build_model
    from vrnn.models.config import ModelConfig
    from vrnn.store.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    n_params = count_parameters(build_model(ModelConfig.from_dict(ckpt["model_config"])))
    return {"checkpoint": str(path), "model": (ckpt.get("train_config") or {}).get("model"),
            "name": ckpt["model_config"].get("name"), "n_parameters": n_params,
            "step": ckpt.get("step"), "epoch": ckpt.get("epoch"),
            "best_bound": ckpt.get("best_bound"), "metrics": ckpt.get("metrics"),
            "model_config": ckpt["model_config"], "train_config": ckpt.get("train_config"),
            "data_info": ckpt["data_info"], "versions": ckpt.get("versions")}


def format_checkpoint_info(info: dict) -> str:
    """:func:`checkpoint_info` for people: a headline, then each section's ``key: value``."""
    best = info["best_bound"]
    lines = [f"{info['checkpoint']}: {info['name']} ({info['n_parameters']:,} parameters), "
             f"step {info['step']}, epoch {info['epoch']}, best validation bound "
             f"{'n/a' if best is None else f'{best:.3f}'} nats/sequence"]
    for title in ("metrics", "model_config", "train_config", "versions"):
        lines.append(f"{title}:")
        lines += [f"  {k}: {v}" for k, v in (info[title] or {}).items()]
    d = info["data_info"]
    lines.append(f"data: {d.get('name')} ({d.get('kind')}, x_dim {d.get('x_dim')}), "
                 f"source {d.get('source')}")
    if d.get("sample_rate"):
        lines.append(f"  {d['sample_rate']} Hz, frames of {d.get('frame_size')} samples")
    lines.append("  " + format_normalisation(d.get("mean", []), d.get("std", []),
                                             d.get("normalised_dims"), d.get("x_dim", 0)))
    return "\n".join(lines)

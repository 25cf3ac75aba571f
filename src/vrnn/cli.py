"""The ``vrnn`` command line: a table of subcommands over library functions.

    vrnn train --data handwriting --model vrnn-gmm --preset small --max-steps 2000
    vrnn evaluate runs/handwriting-vrnn-gmm/best.pt --split test --samples 40 --json
    vrnn sample runs/handwriting-vrnn-gmm/best.pt --num 8 --steps 300 --temperature 0.8
    vrnn analyse runs/speech-vrnn-gauss/best.pt --data speech
    vrnn data list
    vrnn info runs/handwriting-vrnn-gmm/best.pt
    vrnn export runs/handwriting-vrnn-gmm/best.pt --format safetensors
    vrnn demo
    vrnn benchmark ...

Adding a subcommand is one entry in :data:`COMMANDS` (``Command(help, add_arguments, run)``, or
``Command(help, passthrough="module:function")`` for a command that parses its own arguments).
A mistake the user can fix (a bad flag value, a missing or corrupt file, data that does not fit the
checkpoint) prints one line naming the flag or file and exits with status 2; set ``VRNN_DEBUG=1``
to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXIT_USAGE = 2
EXIT_FAILED = 1


@dataclass
class Command:
    """One subcommand: ``add_arguments(parser)`` then ``run(args) -> exit status``; or a
    ``passthrough`` ("module:function") that receives the remaining argv unparsed."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], int | None] | None = None
    passthrough: str | None = None


# -- train ----------------------------------------------------------------------------------------

def _train_args(p: argparse.ArgumentParser) -> None:
    from vrnn.config import MODEL_NAMES
    from vrnn.presets import PRESETS

    p.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="a built-in data set (vrnn data list) or a path (.npz, folder of WAVs...)")
    p.add_argument("--model", required=True, type=str.lower, choices=MODEL_NAMES)
    p.add_argument("--preset", default="small", choices=PRESETS, help="model size (default small)")
    p.add_argument("--max-steps", type=int, default=2000,
                   help="total optimiser updates, counting those before a resume (default 2000)")
    p.add_argument("--out", default="", metavar="DIR", help="run folder (default runs/DATA-MODEL)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto': continue from DIR/last.pt if present; or a checkpoint. The run "
                        "keeps its own settings; only the flags you type override them")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if DIR already holds a checkpoint")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds initialisation, data order and noise (default 0)")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="sequences per update over all processes (default 32)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="frames per sequence / TBPTT window (default: the data set's)")
    p.add_argument("--frame-size", type=int, default=200, help="audio samples per frame")
    p.add_argument("--sample-rate", type=int, default=None, help="resample audio to this rate")
    p.add_argument("--subsample", type=int, default=None, metavar="K",
                   help="pen strokes: keep every K-th point (default 4 for handwriting, else 1)")
    p.add_argument("--max-files", type=int, default=None, help="read at most N files")
    p.add_argument("--skip-bad", action="store_true",
                   help="report and skip unreadable or invalid data files instead of stopping")
    p.add_argument("--grad-clip", type=float, default=5.0,
                   help="clip the gradient norm to this before each step; 0 disables (default 5)")
    p.add_argument("--kl-anneal-steps", type=int, default=0,
                   help="anneal the KL weight to 1 over N steps (default 0: off, as the paper)")
    p.add_argument("--kl-start", type=float, default=0.0, help="initial KL weight when annealing")
    p.add_argument("--val-interval", type=int, default=200,
                   help="validate and checkpoint every N steps (default 200)")
    p.add_argument("--val-max-sequences", type=int, default=0,
                   help="validate on at most N sequences (default 0: all)")
    p.add_argument("--patience", type=int, default=0,
                   help="early stopping: stop after N validations without improvement (0: never)")
    p.add_argument("--no-tbptt", dest="tbptt", action="store_false",
                   help="do not carry the state across contiguous audio minibatches")
    p.add_argument("--tbptt-reset", type=int, default=4,
                   help="reset the carried state every N updates (default 4, as the paper)")
    p.add_argument("--max-bad-steps", type=int, default=5,
                   help="stop after N non-finite losses in a row (default 5)")
    p.add_argument("--log-interval", type=int, default=10, help="metrics.csv row every N steps")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes of training in total (a resumed run "
                        "counts the time already spent)")
    p.add_argument("--budget-clock", choices=("wall", "cpu"), default="wall",
                   help="what --max-minutes counts: elapsed time, or this process's CPU time "
                        "(fair between runs sharing a busy machine; default wall)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (logs and batch jobs)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="no TensorBoard events even when tensorboard is installed")


RESUME_OWN = ("out_dir", "resume", "overwrite", "device", "progress", "tensorboard")
"""Train settings a resumed run takes from its command line, never from its checkpoint."""


def _typed_flags(argv: list[str]) -> set[str]:
    """The ``dest`` of every ``vrnn train`` flag written out in ``argv`` (defaults excluded)."""
    p = argparse.ArgumentParser(add_help=False)
    _train_args(p)
    for action in p._actions:
        action.default, action.required = argparse.SUPPRESS, False
    typed, _ = p.parse_known_args(argv)
    return set(vars(typed))


def _resumed_fields(fields: dict, typed: set[str]) -> dict:
    """``--resume``: the run's own settings from its checkpoint, overridden only by the flags the
    user typed (each override that changes a setting is named), so that ``vrnn train --data D
    --model M --out DIR --resume auto`` continues the run as it was started."""
    from vrnn.checkpoint import load_checkpoint
    from vrnn.train import TrainConfig

    probe = TrainConfig(**fields)  # resolves the default --out
    path = Path(probe.out_dir) / "last.pt" if fields["resume"] == "auto" else Path(
        fields["resume"])
    if not path.is_file():
        return fields  # 'auto' with nothing to resume: a fresh run
    saved = load_checkpoint(path).get("train_config") or {}
    if "preset" in typed and saved.get("preset") not in (None, fields["preset"]):
        raise ValueError(f"--preset {fields['preset']}: {path} holds a {saved['preset']} model "
                         f"(a resumed run keeps its size; drop --preset or start a new --out)")
    merged = dict(fields)
    for key, value in saved.items():
        if key not in merged or key in RESUME_OWN:
            continue
        if key in typed:
            if value != merged[key]:
                print(f"note: --{key.replace('_', '-')} {merged[key]} overrides the run's "
                      f"{value}" + ("; the run will not match one that never stopped"
                                    if key in ("batch_size", "seed", "data") else ""),
                      file=sys.stderr)
        else:
            merged[key] = value
    return merged


def _train(args: argparse.Namespace) -> int:
    from vrnn.train import TrainConfig, train

    skip = ("command", "func", "out", "argv")
    fields = {k: v for k, v in vars(args).items() if k not in skip}
    fields["out_dir"] = args.out
    if args.resume is not None:
        fields = _resumed_fields(fields, _typed_flags(getattr(args, "argv", [])[1:]))
    cfg = TrainConfig(**fields)
    result = train(cfg)
    if result.last_checkpoint is not None:
        best = "n/a" if result.best_bound is None else f"{result.best_bound:.2f}"
        print(f"{result.stopped} at step {result.step} ({result.elapsed_s:.0f} s); best validation "
              f"bound {best} nats/sequence; checkpoints in {result.out_dir}")
    return 130 if result.stopped == "interrupted" else 0  # the shell's status for Ctrl-C


# -- checkpoints and data -------------------------------------------------------------------------

def _out_folder(path: Path, flag: str = "--out") -> Path:
    """``path`` as an output folder (created), or a clear error naming the flag."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load(path: str, device: str = "cpu"):
    """(checkpoint dict, model on device, DataInfo) of a checkpoint file."""
    from vrnn.checkpoint import data_info_from_checkpoint, load_checkpoint, model_from_checkpoint
    from vrnn.distributed import resolve_device

    dev = resolve_device(device)
    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt, dev, str(path)), data_info_from_checkpoint(ckpt)


def _sequences(ckpt: dict, info, data: str | None, split: str, limit: int = 0,
               skip_bad: bool = False):
    """The ``split`` of ``data`` (default the checkpoint's), normalised with the *checkpoint's*
    statistics so that its densities are comparable with the ones it was trained for.

    The checkpoint's own data is read with the data flags it was trained with; other data with
    its defaults. Audio at another sample rate than the model's is resampled to the model's (a
    note says so): a density over 200-sample frames means something only at one rate.
    """
    from vrnn.data import check_same_kind, check_x_dim, load_dataset

    tc = ckpt.get("train_config") or {}
    name = data or tc.get("data") or info.name
    own = name == (tc.get("data") or info.name)
    flags = {"seq_len": tc.get("seq_len"), "frame_size": tc.get("frame_size") or 200,
             "sample_rate": tc.get("sample_rate") if own else None,
             "subsample": tc.get("subsample") if own else None,
             "max_files": tc.get("max_files") if own else None,
             "skip_bad": skip_bad or (own and bool(tc.get("skip_bad")))}
    ds = load_dataset(name, **flags)
    rate = ds.info.sample_rate
    if (info.kind == "audio" and ds.info.kind == "audio" and info.sample_rate and rate
            and rate != info.sample_rate):
        print(f"note: --data {name} is {rate} Hz; resampled to the model's {info.sample_rate} Hz",
              file=sys.stderr)
        ds = load_dataset(name, **{**flags, "sample_rate": info.sample_rate})
    check_x_dim(ds.info, ckpt["model_config"]["x_dim"])
    check_same_kind(ds.info, info, "--data")
    if split not in ("train", "valid", "test"):
        raise ValueError(f"--split must be train, valid or test, got {split!r}")
    seqs = list(ds.split(split))
    if limit:
        seqs = seqs[:limit]
    if not seqs:
        raise ValueError(f"--data {name}: the {split} split is empty")
    same = (list(ds.info.mean) == list(info.mean) and list(ds.info.std) == list(info.std)
            and list(ds.info.normalised_dims) == list(info.normalised_dims))
    if not same:
        seqs = [np.asarray(info.normalise(ds.info.denormalise(s)), dtype=np.float32)
                for s in seqs]
    return name, seqs


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", default=None, help="default: the checkpoint's data set")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--samples", type=int, default=40,
                   help="importance samples per sequence (default 40, as the paper)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-sequences", type=int, default=0, help="evaluate the first N only")
    p.add_argument("--skip-bad", action="store_true",
                   help="report and skip unreadable or invalid data files instead of stopping")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")


def evaluate_checkpoint(path: str, *, data: str | None = None, split: str = "test",
                        samples: int = 40, batch_size: int = 32, max_sequences: int = 0,
                        seed: int = 0, device: str = "auto", skip_bad: bool = False) -> dict:
    """The paper's numbers for one checkpoint on one split (see ``vrnn evaluate``)."""
    from vrnn.evaluate import evaluate_sequences
    from vrnn.model import count_parameters

    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if max_sequences < 0:
        raise ValueError(f"--max-sequences must be >= 0, got {max_sequences}")
    ckpt, model, info = _load(path, device)
    name, seqs = _sequences(ckpt, info, data, split, max_sequences, skip_bad=skip_bad)
    frame = info.frame_size if info.kind == "audio" else None
    res = evaluate_sequences(model, seqs, batch_size=batch_size, num_samples=samples,
                             frame_size=frame, seed=seed)
    out = {"model": (ckpt.get("train_config") or {}).get("model") or model.config.name,
           "name": model.config.name, "latent": model.is_latent, "data": name, "split": split,
           "checkpoint": str(path), "step": ckpt.get("step"),
           "n_parameters": count_parameters(model), **res.summary(),
           "per_sequence": {"elbo": res.elbo.tolist(),
                            "log_likelihood": res.log_likelihood.tolist()}}
    return out


def _se(stderr: float | None) -> str:
    """A standard error for people: 'n/a' for a single sequence."""
    return "n/a (one sequence)" if stderr is None else f"{stderr:.2f}"


def _evaluate(args: argparse.Namespace) -> int:
    out = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split,
                              samples=args.samples, batch_size=args.batch_size,
                              max_sequences=args.max_sequences, seed=args.seed,
                              device=args.device, skip_bad=args.skip_bad)
    text = json.dumps(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(text)
        return 0
    print(f"{out['name']} on {out['data']} ({out['split']}, {out['n_sequences']} sequences, "
          f"step {out['step']}); nats per sequence, +- standard error over sequences")
    if out["latent"]:
        print(f"  ELBO            >= {out['elbo']:.2f} +- {_se(out['elbo_stderr'])}")
        print(f"  log-likelihood  ~  {out['log_likelihood']:.2f} +- {_se(out['stderr'])}"
              f"  (importance sampling, S={out['num_samples']})")
    else:
        print(f"  log-likelihood  =  {out['log_likelihood']:.2f} +- {_se(out['stderr'])} (exact)")
    print(f"  per step: {out['log_likelihood_per_step']:.4f}")
    if "log_likelihood_per_sample" in out:
        print(f"  per audio sample: {out['log_likelihood_per_sample']:.4f} nats, "
              f"negative log-likelihood {out['nll_bits_per_sample']:.4f} bits")
    return 0


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--num", type=int, default=4,
                   help=f"sequences to draw (default 4; all go to samples.npy, the first "
                        f"{MAX_PICTURES} to pictures and sound files)")
    p.add_argument("--steps", type=int, default=None,
                   help="frames per sequence (default: the median training length)")
    p.add_argument("--prime", default=None, metavar="FILE",
                   help="a .npy (P, D) prefix in data units, or an audio file for audio models; "
                        "encoded with the posterior, then the model continues it. samples.npy "
                        "holds the continuations, primed.npy prefix + continuation, and the "
                        "pictures and sound files show prefix + continuation")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scales output noise: mixture and Bernoulli logits / X, scales * sqrt(X)"
                        " (default 1; < 1 gives tidier, less varied samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random stream (default 0)")
    p.add_argument("--out", default=None, metavar="DIR", help="default: CKPT's folder/samples")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")


MAX_PICTURES = 16
"""``vrnn sample``: at most this many sequences are drawn / written as sound files."""


def _check_prime_values(arr: np.ndarray, info, p: Path) -> None:
    """The prefix must be data the model could have been trained on (named, not a tensor dump
    from inside a distribution)."""
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"--prime: {p} holds NaN or infinite values")
    if info.kind == "binary" and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"--prime: {p} must hold binary frames (0 or 1) for this "
                         f"{info.name} model; found other values")
    if info.kind == "strokes" and not np.all((arr[:, 2] == 0) | (arr[:, 2] == 1)):
        raise ValueError(f"--prime: {p}: the pen-up column (the last of dx, dy, pen-up) must be "
                         f"0 or 1")


def read_prime(path: str, info) -> np.ndarray:
    """A prefix ``(P, D)`` in the checkpoint's normalised units from a .npy or an audio file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--prime: file not found: {p}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as e:
            raise ValueError(f"--prime: cannot read {p} as a .npy array ({e})") from None
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != info.x_dim or len(arr) == 0:
            raise ValueError(f"--prime: {p} must hold a (P, D={info.x_dim}) array, got shape "
                             f"{arr.shape}")
        _check_prime_values(arr, info, p)
    else:
        if info.kind != "audio":
            raise ValueError(f"--prime: {p} is not a .npy; audio files only prime audio models, "
                             f"this checkpoint models {info.kind!r} data")
        import soundfile

        try:
            wav, sr = soundfile.read(str(p), dtype="float32", always_2d=True)
        except Exception as e:
            raise ValueError(f"--prime: cannot read audio file {p} ({e})") from None
        wav = wav.mean(1)  # mono
        if info.sample_rate and sr != info.sample_rate:
            from math import gcd

            from scipy.signal import resample_poly

            g = gcd(int(sr), int(info.sample_rate))
            wav = resample_poly(wav, int(info.sample_rate) // g, int(sr) // g).astype(np.float32)
        d = info.x_dim
        frames = len(wav) // d
        if frames == 0:
            raise ValueError(f"--prime: {p} is shorter than one frame of {d} samples")
        arr = wav[:frames * d].reshape(frames, d)  # (P, D)
    return np.asarray(info.normalise(arr), dtype=np.float32)


def _sample(args: argparse.Namespace) -> int:
    import torch

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not (args.temperature > 0 and np.isfinite(args.temperature)):
        raise ValueError(f"--temperature must be a finite number > 0, got {args.temperature}")
    ckpt, model, info = _load(args.checkpoint, args.device)
    steps = args.steps or int(ckpt.get("median_train_length") or 0) or 100
    prime = None
    if args.prime:
        prime = torch.from_numpy(read_prime(args.prime, info))
    device = model.initial_state.device
    gen = torch.Generator(device=device).manual_seed(args.seed)
    x = model.sample(args.num, steps, prime=prime, temperature=args.temperature, generator=gen,
                     include_prime=prime is not None)
    whole = np.asarray(info.denormalise(x.cpu().numpy()), dtype=np.float32)  # (N, P + T, D)
    samples = whole[:, whole.shape[1] - steps:]  # (N, T, D): what the model generated
    out = _out_folder(Path(args.out) if args.out else Path(args.checkpoint).parent / "samples")
    np.save(out / "samples.npy", samples)
    written = [out / "samples.npy"]
    if prime is not None:
        np.save(out / "primed.npy", whole)
        written.append(out / "primed.npy")
    from vrnn.render import write_samples

    written += list(write_samples(whole[:MAX_PICTURES], info, out, prefix="sample"))
    print(f"{args.num} samples of {steps} steps from {model.config.name} "
          f"(temperature {args.temperature})"
          + (f", each after the {len(prime)}-frame prefix of {args.prime}" if prime is not None
             else "")
          + (f"; pictures and sounds of the first {MAX_PICTURES}" if args.num > MAX_PICTURES
             else "") + ":")
    for p in written:
        print(f"  {p}")
    return 0


def _analyse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", default=None, help="default: the checkpoint's data set")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--index", type=int, default=0, help="which sequence of the split")
    p.add_argument("--skip-bad", action="store_true",
                   help="report and skip unreadable or invalid data files instead of stopping")
    p.add_argument("--out", default=None, metavar="PNG", help="default: CKPT's folder/kl.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior samples")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")


def _analyse(args: argparse.Namespace) -> int:
    ckpt, model, info = _load(args.checkpoint, args.device)
    if not model.is_latent:
        raise ValueError(f"{args.checkpoint}: analyse plots the KL per step of a VRNN; this is "
                         f"an {model.config.name}, which has no latent variables")
    if args.index < 0:
        raise ValueError(f"--index must be >= 0, got {args.index}")
    _, seqs = _sequences(ckpt, info, args.data, args.split, args.index + 1,
                         skip_bad=args.skip_bad)
    if args.index >= len(seqs):
        raise ValueError(f"--index {args.index}: the {args.split} split has {len(seqs)} "
                         f"sequences")
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "kl.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    from vrnn.analysis import figure_kl

    figure_kl(model, seqs[args.index], info, out, seed=args.seed)
    print(f"KL per time step of {args.split} sequence {args.index}: {out}")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="the built-in data sets and whether they are installed")
    ls.add_argument("--json", action="store_true")
    info = sub.add_parser("info", help="splits, lengths and normalisation statistics of a data "
                                       "set (loads it)")
    info.add_argument("name", metavar="NAME_OR_PATH")
    info.add_argument("--seq-len", type=int, default=None, help="frames per training sequence")
    info.add_argument("--frame-size", type=int, default=200, help="audio samples per frame")
    info.add_argument("--sample-rate", type=int, default=None, help="resample audio to this rate")
    info.add_argument("--subsample", type=int, default=None, metavar="K",
                      help="pen strokes: keep every K-th point (default 4 for handwriting)")
    info.add_argument("--max-files", type=int, default=None, help="read at most N files")
    info.add_argument("--skip-bad", action="store_true", help="report and skip bad files")
    info.add_argument("--json", action="store_true")


def _normalisation(mean, std, dims: list[int] | None, x_dim: int) -> str:
    """One line for the statistics a data set is normalised by (``vrnn data info``, ``info``)."""
    if dims == []:
        return "normalisation: none (binary frames)"
    fmt = ", ".join
    return (f"normalisation (from train): mean [{fmt(f'{v:.5g}' for v in mean)}], std "
            f"[{fmt(f'{v:.5g}' for v in std)}]"
            + (f" on dims {dims}" if dims and len(dims) < x_dim else ""))


def _data(args: argparse.Namespace) -> int:
    from vrnn.data import format_dataset_table, list_datasets, load_dataset

    if args.action == "list":
        rows = list_datasets()
        print(json.dumps(rows, default=str) if args.json else format_dataset_table(rows))
        return 0
    ds = load_dataset(args.name, seq_len=args.seq_len, frame_size=args.frame_size,
                      sample_rate=args.sample_rate, subsample=args.subsample,
                      max_files=args.max_files, skip_bad=args.skip_bad)
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    info = ds.info
    print(f"{info.name}: {info.kind}, D = {info.x_dim}"
          + (f", {info.sample_rate} Hz, frames of {info.frame_size}" if info.sample_rate else ""))
    print(f"source:  {info.source}\nlicence: {info.licence}\nsplits:  {info.split_note}")
    for split in ("train", "valid", "test"):
        s = summary[split]
        print(f"  {split:5s} {s['n_sequences']:6d} sequences {s['n_steps']:8d} steps "
              f"(length {s['min_len']}-{s['max_len']}), {s['n_values']:,} values"
              + (f"  <- empty: no sequence is as long as --seq-len {args.seq_len}"
                 if not s["n_sequences"] and args.seq_len else ""))
    if "train_streams" in summary:
        t = summary["train_streams"]
        print(f"  train as whole utterances (truncated BPTT): {t['n_sequences']} streams, "
              f"{t['n_steps']} steps")
    st = summary["stats"]
    print(_normalisation(st["mean"], st["std"], info.normalised_dims, info.x_dim))
    if info.skipped:
        print(f"skipped {len(info.skipped)} bad file(s): " + "; ".join(info.skipped))
    return 0


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--json", action="store_true")


def checkpoint_info(path: str) -> dict:
    """What a checkpoint holds, as plain values (see ``vrnn info``)."""
    from vrnn.checkpoint import load_checkpoint
    from vrnn.config import ModelConfig
    from vrnn.model import build_model, count_parameters

    ckpt = load_checkpoint(path)
    n_params = count_parameters(build_model(ModelConfig.from_dict(ckpt["model_config"])))
    return {"checkpoint": str(path), "model": (ckpt.get("train_config") or {}).get("model"),
            "name": ckpt["model_config"].get("name"), "n_parameters": n_params,
            "step": ckpt.get("step"), "epoch": ckpt.get("epoch"),
            "best_bound": ckpt.get("best_bound"), "metrics": ckpt.get("metrics"),
            "model_config": ckpt["model_config"], "train_config": ckpt.get("train_config"),
            "data_info": ckpt["data_info"], "versions": ckpt.get("versions")}


def _info(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.checkpoint)
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    best = info["best_bound"]
    print(f"{info['checkpoint']}: {info['name']} ({info['n_parameters']:,} parameters), "
          f"step {info['step']}, epoch {info['epoch']}, best validation bound "
          f"{'n/a' if best is None else f'{best:.3f}'} nats/sequence")
    for title in ("metrics", "model_config", "train_config", "versions"):
        print(f"{title}:")
        for k, v in (info[title] or {}).items():
            print(f"  {k}: {v}")
    d = info["data_info"]
    print(f"data: {d.get('name')} ({d.get('kind')}, x_dim {d.get('x_dim')}), "
          f"source {d.get('source')}")
    if d.get("sample_rate"):
        print(f"  {d['sample_rate']} Hz, frames of {d.get('frame_size')} samples")
    print("  " + _normalisation(d.get("mean", []), d.get("std", []), d.get("normalised_dims"),
                                d.get("x_dim", 0)))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--format", default="safetensors", choices=("safetensors",))
    p.add_argument("--out", default=None, metavar="FILE",
                   help="default: CKPT with a .safetensors suffix (a .json of the config beside)")


def _export(args: argparse.Namespace) -> int:
    from vrnn.checkpoint import export_safetensors, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".safetensors")
    weights, config = export_safetensors(ckpt, out)
    print(f"weights: {weights}\nconfig:  {config}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in seconds (tiny models, few steps); numbers mean nothing")
    p.add_argument("--seed", type=int, default=0)


def _demo(args: argparse.Namespace) -> int:
    from vrnn.demo import run_demo

    run_demo(Path(args.out), quick=args.quick, seed=args.seed)
    return 0


def _presets_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("audio", "strokes", "binary"), default=None,
                   help="only this data kind (default all)")
    p.add_argument("--x-dim", type=int, default=None,
                   help="frame size (default 200 audio, 3 strokes, 88 binary)")


def _presets(args: argparse.Namespace) -> int:
    from vrnn.presets import DATA_KINDS, format_parameter_table

    if args.x_dim is not None and args.x_dim < 1:
        raise ValueError(f"--x-dim must be >= 1, got {args.x_dim}")
    print(format_parameter_table((args.kind,) if args.kind else DATA_KINDS, x_dim=args.x_dim))
    return 0


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    from vrnn.reproduce import build_parser

    build_parser(p)


def _reproduce(args: argparse.Namespace) -> int:
    from vrnn.reproduce import run_study

    run_study(args)
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command("train a model (VRNN or RNN baseline) on a data set", _train_args, _train),
    "evaluate": Command("ELBO and log-likelihood of a checkpoint on a split (Table 1 numbers)",
                        _evaluate_args, _evaluate),
    "sample": Command("generate sequences (pictures / audio and .npy)", _sample_args, _sample),
    "analyse": Command("KL per time step beside a test sequence (Figure 2)", _analyse_args,
                       _analyse),
    "data": Command("the data sets", _data_args, _data),
    "info": Command("what a checkpoint holds", _info_args, _info),
    "export": Command("export weights for sharing (safetensors + JSON config)", _export_args,
                      _export),
    "demo": Command("train, evaluate and sample a VRNN and its RNN baseline on handwriting",
                    _demo_args, _demo),
    "presets": Command("parameter counts of every model at every preset", _presets_args,
                       _presets),
    "reproduce": Command("the paper's comparison (Table 1, Figs. 2-4) on one data set",
                         _reproduce_args, _reproduce),
    "benchmark": Command("speed benchmark (vrnn benchmark --help)",
                         passthrough="vrnn.bench:main"),
}


def build_parser() -> argparse.ArgumentParser:
    from vrnn import __version__

    parser = argparse.ArgumentParser(
        prog="vrnn", description="Variational Recurrent Neural Networks (Chung et al., 2015).")
    parser.add_argument("--version", action="version", version=f"vrnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help,
                           add_help=cmd.passthrough is None)
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return parser


def _user_error(command: str, err: BaseException) -> int:
    print(f"vrnn {command}: error: {err}", file=sys.stderr)
    return EXIT_USAGE


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line for a person at a terminal (no source line)."""
    print(f"vrnn: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vrnn`` and ``python -m vrnn``; returns the exit status."""
    if argv is None:  # the console script: a person reads the warnings, not a test harness
        warnings.showwarning = _show_warning
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough:
        module, func = COMMANDS[argv[0]].passthrough.split(":")
        try:
            target = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            print(f"vrnn {argv[0]}: error: not available in this installation ({e})",
                  file=sys.stderr)
            return EXIT_USAGE
        return int(target(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    args.argv = argv
    code = _run(args)
    from vrnn.distributed import exit_now

    exit_now(code)  # a torchrun rank ends here, before interpreter shutdown (see exit_now)
    return code


def _run(args) -> int:
    """Run the parsed command; user errors become one line on stderr and an exit status."""
    debug = os.environ.get("VRNN_DEBUG")
    from vrnn.train import TrainingError

    try:
        return int(args.func(args) or 0)
    except TrainingError as e:
        if debug:
            raise
        print(f"vrnn {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `vrnn ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError) as e:  # user errors: DataError, CheckpointError, bad flags...
        if debug:
            raise
        return _user_error(args.command, e)
    except KeyboardInterrupt:
        print(f"vrnn {args.command}: interrupted", file=sys.stderr)
        return 130

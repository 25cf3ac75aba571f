"""Training: maximise the ELBO (Eq. 11) of a VRNN, or the exact log-likelihood of an RNN baseline.

One process:

    vrnn train --data handwriting --model vrnn-gmm --preset small --max-steps 2000
    vrnn train --data handwriting --model vrnn-gmm --preset small --resume auto   # continue

Many processes on one machine, and several machines (DistributedDataParallel via torchrun):

    torchrun --standalone --nproc_per_node=4 -m vrnn train --data speech --model vrnn-gmm
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \\
        --master_port=29500 -m vrnn train --data speech --model vrnn-gmm
    # ... and the same with --node_rank=1 on the second machine

From Python:

    >>> from vrnn.train import TrainConfig, train
    >>> result = train(TrainConfig(data="handwriting", model="vrnn-gmm", preset="tiny",
    ...                            max_steps=50, out_dir="runs/try"))

What a run writes in ``out_dir``: ``config.json`` (the resolved train and model configs and the
data statistics), ``metrics.csv`` (and TensorBoard events when installed), ``last.pt`` and
``best.pt`` (best validation bound; see :mod:`vrnn.checkpoint`).

Settings follow the paper (Section 5): Adam, lr 3e-4, gradient norm clipped at 5 before the
optimiser step, no KL annealing, early stopping on the validation bound (``best.pt``, and
``--patience`` to stop). Contiguous audio is trained with truncated backpropagation through time:
the recurrent state is carried across minibatches whose row i continues row i of the previous one,
and reset every ``--tbptt-reset`` updates (4 in the paper).

Reproducibility: the data order is a function of (seed, epoch) only, and every z_t's noise comes
from one saved ``torch.Generator``, so a run stopped and resumed reaches the same parameters as one
that never stopped. With several processes, ``--batch-size`` is the global batch: each update draws
the noise of the *whole* global batch from the shared generator and every rank keeps its rows, so
a sequence gets the same noise whichever rank holds it, and the loss is scaled so that DDP's
gradient average equals the single-process gradient of the same global batch.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vrnn import checkpoint as ckio
from vrnn.config import MODEL_NAMES, ModelConfig
from vrnn.distributed import DistEnv, all_reduce_sum, cleanup, setup, shard
from vrnn.evaluate import evaluate_sequences
from vrnn.model import SequenceModel, build_model, count_parameters
from vrnn.presets import PRESETS, model_config

METRIC_FIELDS = (
    "step", "epoch", "sequences", "elapsed_s", "train_bound", "train_bound_per_step",
    "train_kl_per_step", "kl_weight", "grad_norm", "lr", "valid_bound", "valid_bound_per_step",
)
"""Columns of ``metrics.csv``. Train rows leave the valid columns empty and vice versa. Bounds
are ELBOs (exact log-likelihoods for RNNs) in nats: per sequence, and per time step.
``sequences``: training sequences (or TBPTT windows) seen so far, summed over all processes."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in ``config.json`` and in every checkpoint."""

    data: str = "handwriting"
    """--data: a built-in data set name (``vrnn data list``) or a path (.npz, folder, ...)."""
    model: str = "vrnn-gmm"
    """--model: one of vrnn.config.MODEL_NAMES (rnn-gauss, rnn-gmm, vrnn-gauss, ...)."""
    preset: str = "small"
    """--preset: model size, one of vrnn.presets.PRESETS (paper, small, tiny, ...)."""
    max_steps: int = 2000
    """--max-steps: optimiser updates in total (a resumed run counts the steps already done)."""
    out_dir: str = ""
    """--out: run folder; default runs/<data>-<model>."""
    resume: str | None = None
    """--resume: 'auto' continues from <out>/last.pt if present; or a checkpoint path."""
    overwrite: bool = False
    """--overwrite: start afresh even if the run folder already holds a checkpoint."""
    seed: int = 0
    """--seed: seeds initialisation, data order (with the epoch) and the noise generator."""
    lr: float = 3e-4
    """--lr: Adam learning rate (paper: 3e-4)."""
    batch_size: int = 32
    """--batch-size: sequences per update, over all processes (paper: 128 speech, 20 strokes)."""
    seq_len: int | None = None
    """--seq-len: frames per training sequence / TBPTT window; default the data set's own."""
    frame_size: int = 200
    """--frame-size: audio samples per frame D (paper: 200)."""
    sample_rate: int | None = None
    """--sample-rate: resample audio to this rate in Hz; default the data set's own."""
    subsample: int | None = None
    """--subsample: pen strokes: keep every k-th point (default 4 for handwriting, 1 otherwise)."""
    max_files: int | None = None
    """--max-files: read at most this many files of a folder data set (quick runs)."""
    skip_bad: bool = False
    """--skip-bad: report and skip unreadable or invalid files instead of stopping."""
    grad_clip: float = 5.0
    """--grad-clip: clip the global gradient L2 norm to this before each step; 0 disables."""
    kl_anneal_steps: int = 0
    """--kl-anneal-steps: KL weight rises linearly to 1 over this many steps; 0 = off (paper)."""
    kl_start: float = 0.0
    """--kl-start: KL weight at step 0 when annealing."""
    val_interval: int = 200
    """--val-interval: validate (and save last.pt / best.pt) every this many steps."""
    val_max_sequences: int = 0
    """--val-max-sequences: validate on at most this many validation sequences; 0 = all."""
    patience: int = 0
    """--patience: stop after this many validations without a better bound; 0 = never."""
    tbptt: bool = True
    """--no-tbptt turns off carrying the state across contiguous audio minibatches."""
    tbptt_reset: int = 4
    """--tbptt-reset: reset the carried state every this many updates (paper: 4)."""
    max_bad_steps: int = 5
    """--max-bad-steps: stop after this many non-finite losses in a row (each is skipped)."""
    log_interval: int = 10
    """--log-interval: write a train row to metrics.csv every this many steps."""
    max_minutes: float | None = None
    """--max-minutes: stop (saving last.pt) after this much training time in total; a resumed
    run counts the time already spent, as --max-steps counts the steps."""
    budget_clock: str = "wall"
    """--budget-clock: what --max-minutes counts: 'wall' (elapsed time) or 'cpu' (this process's
    CPU time: a fair budget for runs that share a busy machine; use it with one thread)."""
    device: str = "auto"
    """--device: auto (CUDA when available), cpu or cuda."""
    progress: bool = True
    """--no-progress hides the progress bar."""
    tensorboard: bool = True
    """--no-tensorboard skips TensorBoard events even when tensorboard is installed."""

    def __post_init__(self) -> None:
        def need(ok: bool, flag: str, what: str, value) -> None:
            if not ok:
                raise ValueError(f"{flag} must be {what}, got {value!r}")

        need(self.model.lower() in MODEL_NAMES, "--model", f"one of {', '.join(MODEL_NAMES)}",
             self.model)
        self.model = self.model.lower()
        need(self.preset in PRESETS, "--preset", f"one of {', '.join(PRESETS)}", self.preset)
        need(self.max_steps >= 0, "--max-steps", ">= 0", self.max_steps)
        need(self.lr > 0 and math.isfinite(self.lr), "--lr", "> 0", self.lr)
        need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        need(self.seq_len is None or self.seq_len >= 1, "--seq-len", ">= 1", self.seq_len)
        need(self.frame_size >= 1, "--frame-size", ">= 1", self.frame_size)
        need(self.sample_rate is None or self.sample_rate >= 1, "--sample-rate", ">= 1",
             self.sample_rate)
        need(self.max_files is None or self.max_files >= 1, "--max-files", ">= 1",
             self.max_files)
        need(self.subsample is None or self.subsample >= 1, "--subsample", ">= 1",
             self.subsample)
        need(self.grad_clip >= 0, "--grad-clip", ">= 0 (0 disables clipping)", self.grad_clip)
        need(self.kl_anneal_steps >= 0, "--kl-anneal-steps", ">= 0", self.kl_anneal_steps)
        need(0 <= self.kl_start <= 1, "--kl-start", "in [0, 1]", self.kl_start)
        need(self.val_interval >= 1, "--val-interval", ">= 1", self.val_interval)
        need(self.val_max_sequences >= 0, "--val-max-sequences", ">= 0", self.val_max_sequences)
        need(self.patience >= 0, "--patience", ">= 0", self.patience)
        need(self.tbptt_reset >= 1, "--tbptt-reset", ">= 1", self.tbptt_reset)
        need(self.max_bad_steps >= 1, "--max-bad-steps", ">= 1", self.max_bad_steps)
        need(self.log_interval >= 1, "--log-interval", ">= 1", self.log_interval)
        need(self.max_minutes is None or self.max_minutes > 0, "--max-minutes", "> 0",
             self.max_minutes)
        need(self.budget_clock in ("wall", "cpu"), "--budget-clock", "wall or cpu",
             self.budget_clock)
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             "--device", "auto, cpu or cuda", self.device)
        if self.resume is not None and self.resume != "auto" and not Path(self.resume).is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {self.resume}")
        if not self.out_dir:
            self.out_dir = str(Path("runs") / f"{_data_stem(self.data)}-{self.model}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _data_stem(data: str) -> str:
    p = Path(data)
    return p.stem if (p.suffix or p.exists()) else data


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    out_dir: Path
    step: int
    epoch: int
    best_bound: float | None
    """Best validation bound (nats per sequence), None if never validated."""
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    metrics_csv: Path | None
    stopped: str
    """Why the run ended: max_steps, early_stopping, time_limit or interrupted."""
    elapsed_s: float
    model_config: ModelConfig


class Objective(nn.Module):
    """The training loss as a module, so that DistributedDataParallel's hooks run: DDP only
    synchronises gradients of computations that go through the *wrapper's* forward.

    ``forward`` returns ``loss = -sum_b ELBO_b * scale`` (scale = world_size / global batch makes
    DDP's gradient average the single-process mean over the global batch), the per-sequence ELBO
    and KL sums (detached, ``(B,)``), and the final recurrent state for truncated BPTT.
    """

    def __init__(self, model: SequenceModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, mask: Tensor | None, noise: Tensor | None, state,
                kl_weight: float, scale: float):
        terms = self.model(x, mask, state=state, noise=noise)
        elbo = terms.elbo(mask, kl_weight)  # (B,)
        kl = terms.kl if mask is None else terms.kl * mask
        loss = -elbo.sum() * scale
        return loss, terms.elbo(mask).detach(), kl.sum(1).detach(), terms.state


def kl_weight_at(cfg: TrainConfig, step: int) -> float:
    """Linear KL annealing from ``kl_start`` to 1 over ``kl_anneal_steps`` (1 when off)."""
    if cfg.kl_anneal_steps <= 0:
        return 1.0
    return cfg.kl_start + (1.0 - cfg.kl_start) * min(1.0, step / cfg.kl_anneal_steps)


def load_training_data(cfg: TrainConfig):
    """``vrnn.data.load_dataset`` with the run's data flags."""
    from vrnn.data import load_dataset

    return load_dataset(cfg.data, seq_len=cfg.seq_len, frame_size=cfg.frame_size,
                        sample_rate=cfg.sample_rate, subsample=cfg.subsample,
                        max_files=cfg.max_files, skip_bad=cfg.skip_bad)


class _Metrics:
    """metrics.csv (and TensorBoard when installed) on rank 0; a no-op elsewhere."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int | None, tensorboard: bool):
        self.path = out_dir / "metrics.csv"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.path.exists():
            # keep the rows up to the checkpoint: a resumed run rewrites what came after it
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, METRIC_FIELDS)
            w.writeheader()
            w.writerows(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # a resumed run drops the events logged after its checkpoint, as the CSV does
                self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step)
            except Exception:  # tensorboard not installed: the CSV is enough
                self.tb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, METRIC_FIELDS).writerow(
                {k: _fmt(row.get(k)) for k in METRIC_FIELDS})
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and v is not None:
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def validate(model: SequenceModel, sequences: list[np.ndarray], cfg: TrainConfig,
             env: DistEnv) -> tuple[float, float]:
    """Validation bound: mean ELBO per sequence and per step (nats), one posterior sample per
    sequence (the RNN's is the exact log-likelihood).

    The sequences are cut into fixed chunks, each evaluated with its own seed and chunks dealt
    out to the ranks, so the bound does not depend on the number of processes."""
    if cfg.val_max_sequences:
        sequences = sequences[:cfg.val_max_sequences]
    size = max(cfg.batch_size, 16)
    sums = torch.zeros(3, dtype=torch.float64, device=env.device)
    for ci in range(env.rank, math.ceil(len(sequences) / size), env.world_size):
        chunk = sequences[ci * size:(ci + 1) * size]
        res = evaluate_sequences(model, chunk, num_samples=1, seed=cfg.seed + ci,
                                 device=env.device, batch_size=size)
        sums += torch.tensor([res.elbo.sum(), len(chunk), res.lengths.sum()],
                             dtype=torch.float64, device=env.device)
    all_reduce_sum(sums, env)
    total, n, steps = sums.tolist()
    return total / max(n, 1), total / max(steps, 1)


def _resolve_resume(cfg: TrainConfig, out_dir: Path) -> Path | None:
    last = out_dir / ckio.LAST
    if cfg.resume is None:
        if last.exists() and not cfg.overwrite:
            raise ValueError(f"--out {out_dir} already holds {last.name}: pass --resume auto to "
                             f"continue that run, --overwrite to start afresh, or another --out")
        return None
    if cfg.resume == "auto":
        return last if last.exists() else None
    return Path(cfg.resume)


def train(cfg: TrainConfig, *, dataset=None, callback=None) -> TrainResult:
    """Train the model ``cfg`` names on ``cfg.data`` (or on ``dataset``, a ``SequenceDataset``).

    Args:
        cfg: the run's settings.
        dataset: an already loaded ``vrnn.data.SequenceDataset`` (tests, notebooks); default
            ``load_dataset(cfg.data, ...)``.
        callback: optional ``callback(step, row)`` called after every update (rank 0 and others).

    Returns:
        a :class:`TrainResult`. Raises ``ValueError`` / ``FileNotFoundError`` for bad settings or
        files (naming the flag or path) and :class:`TrainingError` if the loss stays non-finite.
    """
    env = setup(cfg.device)
    finished = False
    # A diverging run must reach the non-finite check (skip the update, stop after a few), not
    # die inside a distribution that refuses NaN parameters; the data's kind is checked upfront.
    validating = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        result = _train(cfg, env, dataset, callback)
        finished = True
        return result
    finally:
        torch.distributions.Distribution.set_default_validate_args(validating)
        cleanup(env, finished=finished)


def _train(cfg: TrainConfig, env: DistEnv, dataset, callback) -> TrainResult:
    from vrnn.data import (
        BucketBatchSampler,
        check_same_kind,
        check_x_dim,
        contiguous_batches,
        pad_batch,
    )

    t0, c0 = time.time(), time.process_time()
    out_dir = Path(cfg.out_dir)
    resume_path = _resolve_resume(cfg, out_dir)
    ckpt = ckio.load_checkpoint(resume_path) if resume_path is not None else None
    if ckpt is not None:
        ckio.check_resumable(ckpt, resume_path)
    if dataset is None:
        dataset = load_training_data(cfg)
    info = dataset.info
    device = env.device
    if info.skipped and env.is_main:
        print(f"--skip-bad: skipped {len(info.skipped)} bad file(s) of {cfg.data}:\n  "
              + "\n  ".join(info.skipped), file=sys.stderr)

    # -- model, optimiser, noise --------------------------------------------------------------
    if ckpt is not None:
        trained = ckpt.get("train_config", {}).get("model")
        if trained and trained != cfg.model:
            raise ValueError(f"--resume: {resume_path} holds a {trained} model, not --model "
                             f"{cfg.model}")
        model_cfg = ModelConfig.from_dict(ckpt["model_config"])
        check_x_dim(info, model_cfg.x_dim)
        check_same_kind(info, ckpt["data_info"], "--data")
        was = ckpt["data_info"].get("name")
        if was and was != info.name and env.is_main:
            warnings.warn(f"--resume: {resume_path} was trained on {was}; going on with --data "
                          f"{info.name} (and its normalisation statistics)", RuntimeWarning,
                          stacklevel=2)
    else:
        model_cfg = model_config(cfg.model, x_dim=info.x_dim, data_kind=info.kind,
                                 preset=cfg.preset)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    model = build_model(model_cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    step = epoch = batch_in_epoch = bad_validations = seen = 0
    best_bound: float | None = None
    carried = None
    if ckpt is not None:
        ckio.load_weights(model, ckpt, f"--resume {resume_path}")
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        seen = int(ckpt.get("sequences_seen", 0))
        best_bound, bad_validations = ckpt["best_bound"], ckpt["bad_validations"]
        ckio.set_rng_state(ckpt["rng"], noise_gen)
        t0 -= float(ckpt.get("train_seconds", 0.0))  # elapsed_s and --max-minutes accumulate
        c0 -= float(ckpt.get("train_cpu_seconds", 0.0))
        if ckpt.get("tbptt_state") is not None:
            carried = tuple(s.to(device) for s in ckpt["tbptt_state"])

    objective = Objective(model)
    tbptt = bool(cfg.tbptt and info.kind == "audio" and dataset.train_streams)
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # a carried TBPTT state bypasses the learned h_0, which then gets no gradient
        objective = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=tbptt)

    # -- data order: a function of (seed, epoch) only -----------------------------------------
    train_seqs = dataset.train
    lengths = np.array([len(s) for s in train_seqs])
    if tbptt:
        window = cfg.seq_len or int(np.median(lengths)) or 40
    if len(train_seqs) == 0 and not tbptt:
        raise ValueError(f"--data {cfg.data}: the training split is empty"
                         + (f" (no sequence is as long as --seq-len {cfg.seq_len})"
                            if cfg.seq_len else ""))
    if not dataset.valid and env.is_main:
        warnings.warn(f"--data {cfg.data}: the validation split is empty"
                      + (f" (no sequence is as long as --seq-len {cfg.seq_len})"
                         if cfg.seq_len else "")
                      + "; training goes on without validation: best.pt will be the last "
                        "checkpoint and --patience has no effect", RuntimeWarning, stacklevel=2)
    world = env.world_size
    if world > cfg.batch_size:
        raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the {world} processes")

    def epoch_batches(ep: int, skip: int):
        """Global batches of epoch ``ep`` after the first ``skip`` (already consumed by a resumed
        run): (x, mask, global batch size, global T, my rows of the global batch)."""
        if tbptt:
            wins = contiguous_batches(dataset.train_streams, cfg.batch_size, window,
                                      seed=cfg.seed, epoch=ep)
            for win in itertools.islice(wins, skip, None):
                win = np.asarray(win, dtype=np.float32)  # (B, T, D)
                rows = shard(list(range(len(win))), env)
                yield torch.from_numpy(win[rows]), None, len(win), win.shape[1], rows
            return
        sampler = BucketBatchSampler(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(ep)
        batches = (list(b) for b in sampler)
        for batch in itertools.islice((b for b in batches if len(b) >= world), skip, None):
            rows = shard(list(range(len(batch))), env)  # every rank needs >= 1 sequence
            x, mask = pad_batch([train_seqs[batch[r]] for r in rows])
            yield x, mask, len(batch), int(lengths[batch].max()), rows

    # -- run folder, metrics -------------------------------------------------------------------
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps({
            "train": cfg.to_dict(), "model": model_cfg.to_dict(), "data": info.to_dict(),
            "world_size": world, "n_parameters": count_parameters(model),
            # what the defaults ('auto', the data's own length) resolved to in this run
            "resolved": {"device": str(device), "tbptt": tbptt,
                         "window": window if tbptt else None,
                         "train_sequences": len(train_seqs)},
            "versions": ckio.versions()}, indent=2, default=str) + "\n")
    metrics = _Metrics(out_dir, env.is_main, step if ckpt is not None else None, cfg.tensorboard)
    median_len = int(np.median(lengths)) if len(lengths) else 0

    def checkpoint_dict(stats: dict) -> dict:
        return {
            "format": ckio.FORMAT, "version": ckio.VERSION,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "model_config": model_cfg.to_dict(), "train_config": cfg.to_dict(),
            "data_info": info.to_dict(), "step": step, "epoch": epoch,
            "batch_in_epoch": batch_in_epoch, "sequences_seen": seen, "best_bound": best_bound,
            "bad_validations": bad_validations, "rng": ckio.rng_state(noise_gen),
            "tbptt_state": None if carried is None else [s.detach().cpu() for s in carried],
            "metrics": stats, "median_train_length": median_len, "world_size": world,
            "train_seconds": time.time() - t0, "train_cpu_seconds": time.process_time() - c0,
            "versions": ckio.versions(),
        }

    last_path, best_path = out_dir / ckio.LAST, out_dir / ckio.BEST
    last_stats: dict = {}

    def save(which: str) -> None:
        if env.is_main:
            ckio.save_atomic(checkpoint_dict(last_stats),
                             last_path if which == "last" else best_path)

    def run_validation() -> bool:
        """Validate, save best/last; True when early stopping says stop."""
        nonlocal best_bound, bad_validations
        bound, per_step = validate(model, dataset.valid, cfg, env) if dataset.valid else \
            (None, None)
        last_stats.update(valid_bound=bound, valid_bound_per_step=per_step)
        metrics.write({"step": step, "epoch": epoch, "elapsed_s": time.time() - t0,
                       "valid_bound": bound, "valid_bound_per_step": per_step})
        if bound is None:
            return False
        if best_bound is None or bound > best_bound:
            best_bound, bad_validations = bound, 0
            save("best")
        else:
            bad_validations += 1
        return bool(cfg.patience and bad_validations >= cfg.patience)

    # -- Ctrl-C: finish the update, save, exit cleanly (a second Ctrl-C aborts) --------------
    interrupted = {"flag": False}
    old_handler = None

    def on_sigint(signum, frame):
        interrupted["flag"] = True
        signal.signal(signal.SIGINT, old_handler or signal.default_int_handler)

    try:
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: no handler, KeyboardInterrupt stays as it is
        old_handler = None

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, initial=min(step, cfg.max_steps), unit="step",
               disable=not (env.is_main and cfg.progress), dynamic_ncols=True,
               desc=f"{cfg.model}")
    stopped = "max_steps"
    bad_in_row = 0
    running = None
    window_sums = np.zeros(4)  # elbo, kl, sequences, steps since the last train row
    grad_norms: list[float] = []
    last_validated = step if ckpt is not None else -1
    start_step = step
    def out_of_time() -> bool:
        if cfg.max_minutes is None:
            return False
        spent = time.time() - t0 if cfg.budget_clock == "wall" else time.process_time() - c0
        return spent > 60 * cfg.max_minutes

    if out_of_time():
        stopped = "time_limit"  # a resumed run whose time budget is already spent
    elif cfg.patience and bad_validations >= cfg.patience:
        stopped = "early_stopping"  # a resumed run that had already stopped early
    try:
        while step < cfg.max_steps and stopped == "max_steps":
            yielded = False
            skip = batch_in_epoch
            for x, mask, b_global, t_global, rows in epoch_batches(epoch, skip):
                yielded = True
                if tbptt and batch_in_epoch % cfg.tbptt_reset == 0:
                    carried = None  # the paper resets the carried state every 4 updates
                x = x.to(device)
                mask = None if mask is None else mask.to(device)
                noise = None
                if model.is_latent:
                    # the whole global batch's noise from the shared stream; keep my rows
                    noise = torch.randn(b_global, t_global, model_cfg.z_dim, device=device,
                                        generator=noise_gen)[rows, :x.shape[1]]
                kl_w = kl_weight_at(cfg, step)
                optimizer.zero_grad(set_to_none=True)
                loss, elbo, kl, state = objective(x, mask, noise, carried, kl_w,
                                                  world / b_global)
                loss.backward()
                clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                n_steps = float(x.shape[1] * x.shape[0]) if mask is None else float(mask.sum())
                stop_now = interrupted["flag"] or out_of_time()
                ok = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
                red = torch.tensor([float(elbo.sum()), float(kl.sum()), len(rows), n_steps,
                                    0.0 if ok else 1.0, float(stop_now)],
                                   dtype=torch.float64, device=device)
                all_reduce_sum(red, env)
                elbo_sum, kl_sum, n_seq, n_steps_all, n_bad, n_stop = red.tolist()
                batch_in_epoch += 1
                if n_bad > 0:
                    bad_in_row += 1
                    warnings.warn(f"step {step + 1}: non-finite loss or gradient; skipping this "
                                  f"update ({bad_in_row}/{cfg.max_bad_steps} in a row)",
                                  RuntimeWarning, stacklevel=2)
                    optimizer.zero_grad(set_to_none=True)
                    carried = None
                    if bad_in_row >= cfg.max_bad_steps:
                        kept = (f"the last good checkpoint, {last_path}, is kept"
                                if last_path.exists() else "no checkpoint was written yet")
                        raise TrainingError(
                            f"the loss was non-finite for {bad_in_row} updates in a row at step "
                            f"{step}; stopping: {kept} (try a smaller --lr or --grad-clip)")
                else:
                    bad_in_row = 0
                    optimizer.step()
                    step += 1
                    seen += int(n_seq)
                    if tbptt:
                        carried = tuple(s.detach() for s in state)
                    bound = elbo_sum / n_seq
                    running = bound if running is None else 0.95 * running + 0.05 * bound
                    window_sums += (elbo_sum, kl_sum, n_seq, n_steps_all)
                    grad_norms.append(float(grad_norm))
                    bar.update(1)
                    bar.set_postfix(bound=f"{running:.4g}", epoch=epoch)
                    row = {"step": step, "epoch": epoch, "train_bound": bound}
                    if step % cfg.log_interval == 0 or step == cfg.max_steps:
                        e, kls, ns, nt = window_sums
                        row = {"step": step, "epoch": epoch, "sequences": seen,
                               "elapsed_s": time.time() - t0,
                               "train_bound": float(e / ns), "train_bound_per_step": float(e / nt),
                               "train_kl_per_step": float(kls / nt), "kl_weight": kl_w,
                               "grad_norm": float(np.mean(grad_norms)), "lr": cfg.lr}
                        metrics.write(row)
                        last_stats.update({k: v for k, v in row.items()
                                           if k.startswith("train")})
                        window_sums[:] = 0
                        grad_norms.clear()
                    if callback is not None:
                        callback(step, row)
                    if step % cfg.val_interval == 0:
                        last_validated = step
                        if run_validation():
                            stopped = "early_stopping"
                        save("last")
                if n_stop > 0 and stopped == "max_steps":
                    stopped = "interrupted" if interrupted["flag"] else "time_limit"
                if step >= cfg.max_steps or stopped != "max_steps":
                    break
            else:
                if not yielded and skip == 0:
                    raise ValueError(
                        f"--data {cfg.data}: the training split yields no batch of "
                        f"--batch-size {cfg.batch_size}" + (f" and --seq-len {window}"
                                                           if tbptt else ""))
                epoch += 1
                batch_in_epoch = 0
                carried = None
        if stopped != "interrupted" and last_validated != step and step > 0:
            run_validation()
        if ckpt is None or step != start_step:  # a resumed run that did nothing stays as it was
            save("last")
        if env.is_main and not best_path.exists() and last_path.exists():
            ckio.save_atomic(checkpoint_dict(last_stats), best_path)
    finally:
        bar.close()
        metrics.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)

    if env.is_main and stopped == "interrupted":
        print(f"interrupted at step {step}: saved {last_path}; continue with --resume auto")
    return TrainResult(out_dir=out_dir, step=step, epoch=epoch, best_bound=best_bound,
                       last_checkpoint=last_path if env.is_main else None,
                       best_checkpoint=best_path if env.is_main else None,
                       metrics_csv=metrics.path if env.is_main else None, stopped=stopped,
                       elapsed_s=time.time() - t0, model_config=model_cfg)

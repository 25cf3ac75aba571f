"""Training: maximise the ELBO (Eq. 11) of a VRNN, or the exact log-likelihood of an RNN baseline;
or, with ``--objective iwae|fivo``, a tighter K-particle bound (:mod:`vrnn.inference.objectives`).

One process:

    vrnn train --data handwriting --model vrnn-gmm --preset small --max-steps 2000
    vrnn train --data handwriting --model vrnn-gmm --preset small --resume auto   # continue
    vrnn train --data handwriting --model vrnn-gmm --objective iwae --particles 4

Many processes on one machine, and several machines (DistributedDataParallel via torchrun):

    torchrun --standalone --nproc_per_node=4 -m vrnn train --data speech --model vrnn-gmm
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \\
        --master_port=29500 -m vrnn train --data speech --model vrnn-gmm
    # ... and the same with --node_rank=1 on the second machine

From Python:

    >>> from vrnn.train.loop import TrainConfig, train
    >>> result = train(TrainConfig(data="handwriting", model="vrnn-gmm", preset="tiny",
    ...                            max_steps=50, out_dir="runs/try"))

What a run writes in ``out_dir``: ``config.json`` (the resolved train and model configs and the
data statistics), ``metrics.csv`` (and TensorBoard events when installed), ``last.pt`` and
``best.pt`` (best validation bound; see :mod:`vrnn.store.checkpoint`).

The run folder is owned by one process at a time: rank 0 holds ``<out>/.lock`` for the whole run,
and a second run on the same ``--out`` refuses. A fresh run refuses a folder that holds results
unless ``--overwrite`` (which removes them all first); resuming from an earlier checkpoint than
``<out>/last.pt`` needs ``--rewind``. Ctrl-C and SIGTERM finish the update in progress, save
``last.pt`` and stop (exit status 130 / 143 on the command line; a second signal aborts).
A failed checkpoint write (a full disk) stops the run with one line and keeps the old files; see
:mod:`vrnn.train.folder`, :mod:`vrnn.train.metrics`, :mod:`vrnn.host.files`.

The parts: :class:`vrnn.train.config.TrainConfig` (the settings, and the command line's flags),
:class:`vrnn.train.state.TrainState` (step, epoch, best bound, patience, carried state, random
states: what a checkpoint saves), :class:`vrnn.train.batches.EpochBatches` (the data order),
:func:`train_step` (one update, its figures in a :class:`StepFigures`, summed over ranks as a
:class:`vrnn.train.stop.RankSums`), :class:`vrnn.train.stop.StopConditions` (every reason to
stop) and :func:`train`, which puts them together.

Settings follow the paper (Section 5): Adam, lr 3e-4, gradient norm clipped at 5 before the
optimiser step, no KL annealing, early stopping on the validation bound (``best.pt``, and
``--patience`` to stop). Contiguous audio is trained with truncated backpropagation through time:
the recurrent state is carried across minibatches whose row i continues row i of the previous one,
and reset every ``--tbptt-reset`` updates (4 in the paper). The K-particle objectives (iwae, fivo)
carry no state: each window starts from the initial state (a K-sample bound does not split into
a sum over windows the way the ELBO does, so K carried states would not make it one bound).

Reproducibility: the data order is a function of (seed, epoch) only, and every z_t's noise comes
from one saved ``torch.Generator``, so a run stopped and resumed reaches the same parameters as one
that never stopped. With several processes, ``--batch-size`` is the global batch: each update draws
the noise of the *whole* global batch from the shared generator and every rank keeps its rows, so
a sequence gets the same noise whichever rank holds it, and the loss is scaled so that DDP's
gradient average equals the single-process gradient of the same global batch. The IWAE's K
samples are drawn the same way, ``(K, global batch, T, Z)`` at once. FIVO's particle and
resampling draws are per row, so they come from a generator seeded afresh each update from the
shared stream (and the rank): reproducible across a resume, but with several processes a
sequence's particles depend on its rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vrnn.host.files import WriteError, write_text
from vrnn.host.memory import FLOAT_BYTES, check_fits, floats_per_row
from vrnn.kernels.precision import check_supported
from vrnn.models.base import SequenceModel, count_parameters
from vrnn.models.build import build_model
from vrnn.models.config import ModelConfig
from vrnn.models.presets import model_config
from vrnn.store import checkpoint as ckio
from vrnn.train.batches import Batch, EpochBatches
from vrnn.train.config import DATA_FIELDS, TrainConfig, add_train_flags, config_from_args, data_stem
from vrnn.train.distributed import DistEnv, all_reduce_fields, cleanup, setup
from vrnn.train.folder import check_run_folder, owned_run_folder, resume_path
from vrnn.train.metrics import METRIC_FIELDS, MetricsLog, TrainWindow
from vrnn.train.objective import LossModule, UpdateSums, kl_weight_at, objective_of, validate
from vrnn.train.progress import Progress
from vrnn.train.state import TrainClock, TrainState, seed_everything
from vrnn.train.stop import RankSums, StopConditions, TrainingError

__all__ = ["METRIC_FIELDS", "DATA_FIELDS", "TrainConfig", "TrainResult", "TrainingError",
           "add_train_flags", "config_from_args", "data_stem", "kl_weight_at",
           "load_training_data", "train", "validate"]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    out_dir: Path
    step: int
    epoch: int
    best_bound: float | None
    """Best validation bound (nats per sequence), None if never validated."""
    last_checkpoint: Path | None
    """``<out>/last.pt`` on rank 0; None on the other ranks (they write nothing)."""
    best_checkpoint: Path | None
    metrics_csv: Path | None
    stopped: str
    """Why the run ended: max_steps, early_stopping, time_limit or interrupted."""
    elapsed_s: float
    model_config: ModelConfig
    signal: int | None = None
    """The signal that interrupted the run (SIGINT for Ctrl-C, SIGTERM), None otherwise."""

    def summary(self) -> str | None:
        """The line ``vrnn train`` prints at the end; None on ranks other than 0."""
        if self.last_checkpoint is None:
            return None
        best = "n/a" if self.best_bound is None else f"{self.best_bound:.2f}"
        return (f"{self.stopped} at step {self.step} ({self.elapsed_s:.0f} s); best validation "
                f"bound {best} nats/sequence; checkpoints in {self.out_dir}")

    @property
    def exit_status(self) -> int:
        """The process's exit status: 0, or the shell's 128 + N for a run stopped by signal N
        (130 for Ctrl-C, 143 for SIGTERM), as if the signal had ended it."""
        if self.stopped != "interrupted":
            return 0
        return 128 + int(self.signal or signal.SIGINT)


# -- the data -----------------------------------------------------------------------------------

def load_training_data(cfg: TrainConfig):
    """``vrnn.data.load_dataset`` with the run's data flags."""
    from vrnn.data import load_dataset

    return load_dataset(cfg.data, seq_len=cfg.seq_len, frame_size=cfg.frame_size,
                        sample_rate=cfg.sample_rate, subsample=cfg.subsample,
                        max_files=cfg.max_files, skip_bad=cfg.skip_bad,
                        sequence_column=cfg.sequence_column, time_column=cfg.time_column,
                        feature_columns=cfg.feature_columns)


# -- one update ---------------------------------------------------------------------------------

@dataclass
class StepFigures:
    """What :func:`train_step` reports of one update (summed over ranks)."""

    sums: UpdateSums
    grad_norm: float
    """Global gradient L2 norm before clipping."""
    kl_weight: float
    state: tuple[Tensor, ...] | None
    """The final recurrent state of this rank's rows (carried by TBPTT)."""

    @property
    def finite(self) -> bool:
        """Whether every rank's loss and gradient were finite (the update was applied)."""
        return self.sums.non_finite == 0

    @property
    def bound(self) -> float | None:
        """Mean ELBO per sequence of the global batch (nats); None on a fivo update that did not
        compute it (one that writes no row of ``metrics.csv``)."""
        return self.sums.elbo / self.sums.elbo_sequences if self.sums.elbo_sequences else None


def writes_row(cfg: TrainConfig, step: int) -> bool:
    """Whether update ``step`` (counted from 1) writes a row of metrics.csv: every
    ``log_interval``-th and the last. Training asks FIVO for its plain ELBO on those only."""
    return step % cfg.log_interval == 0 or step >= cfg.max_steps


def _noise(run: Run, batch: Batch, T: int) -> tuple[Tensor, torch.Generator | None]:
    """This update's draws from the shared noise stream, as the run's objective takes them
    (:meth:`vrnn.inference.objectives.Objective.noise`)."""
    return run.loss.objective.noise(run.model.latent_dim, batch.global_size, batch.global_len,
                                    batch.rows, T, run.state.noise, run.env.device,
                                    run.env.rank)


def train_step(run: Run, batch: Batch, votes: Callable[[], RankSums]) -> StepFigures:
    """One update on ``batch``: the objective's gradient, clipped, then the optimiser step,
    unless some rank's loss or gradient is not finite (then no rank steps). ``votes()``, this
    rank's stop votes once the gradient is computed, goes into the same all-reduce as the
    figures."""
    model, state, env, cfg = run.model, run.state, run.env, run.cfg
    x = batch.x.to(env.device)
    mask = None if batch.mask is None else batch.mask.to(env.device)
    noise, generator = _noise(run, batch, x.shape[1])
    kl_weight = run.loss.objective.kl_weight(state.step)
    logs = writes_row(cfg, state.step + 1)
    run.optimizer.zero_grad(set_to_none=True)
    loss, bound = run.objective(x, mask, noise, state.carried, kl_weight,
                                env.world_size / batch.global_size, generator, logs)
    loss.backward()
    if cfg.grad_clip_value > 0:  # element-wise first, as Pyro's ClippedAdam
        torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip_value)
    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    ok = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
    stop = votes()
    steps = float(x.shape[0] * x.shape[1]) if mask is None else float(mask.sum())
    figured = bound.elbo is not None
    mine = UpdateSums(elbo=float(bound.elbo.sum()) if figured else 0.0,
                      kl=float(bound.kl.sum()) if figured else 0.0,
                      sequences=len(batch.rows), steps=steps,
                      elbo_sequences=len(batch.rows) if figured else 0.0,
                      elbo_steps=steps if figured else 0.0,
                      non_finite=0.0 if ok else 1.0, sigint=stop.sigint, sigterm=stop.sigterm,
                      out_of_time=stop.out_of_time, objective=float(bound.objective.sum()),
                      ess=0.0 if bound.ess is None else float(bound.ess.sum()))
    figures = StepFigures(all_reduce_fields(mine, env), float(grad_norm), kl_weight, bound.state)
    if figures.finite:
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, state.step)
        run.optimizer.step()
    else:
        run.optimizer.zero_grad(set_to_none=True)
    return figures


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the run's ``--lr``, ``--beta1``, ``--beta2`` and ``--weight-decay``."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of the update after ``step`` updates: ``lr * lr_decay**(step + 1)``,
    Pyro's ClippedAdam (which multiplies the rate by the decay before every step); ``lr`` for
    the constant rate of ``--lr-decay 1``. A function of the step alone, so a resumed run
    continues the schedule."""
    return cfg.lr if cfg.lr_decay == 1 else cfg.lr * cfg.lr_decay ** (step + 1)


def resolve_kl_epochs(cfg: TrainConfig, batches: EpochBatches) -> None:
    """``--kl-anneal-epochs E`` as ``cfg.kl_anneal_steps``: E times the updates of one epoch of
    this data at this batch size (at least one update); nothing without it."""
    if cfg.kl_anneal_epochs:
        cfg.kl_anneal_steps = max(1, round(cfg.kl_anneal_epochs * batches.updates_per_epoch()))


# -- the run put together -----------------------------------------------------------------------

@dataclass
class Run:
    """What every part of the loop works on: the model, its optimiser, the state, the files."""

    cfg: TrainConfig
    env: DistEnv
    dataset: object
    """A ``vrnn.data.SequenceDataset`` (or anything with its train / valid / info)."""
    model: SequenceModel
    optimizer: torch.optim.Optimizer
    objective: nn.Module
    """:class:`vrnn.train.objective.LossModule`, wrapped in DistributedDataParallel with
    several processes."""
    loss: LossModule
    """The same module unwrapped: its ``objective`` draws the noise and gives the bound."""
    state: TrainState
    batches: EpochBatches
    metrics: MetricsLog
    resumed: bool
    validated_at: int = -1
    """The step of the last validation (-1: none in this process)."""
    last_stats: dict = dataclasses.field(default_factory=dict)
    """The latest train and valid figures, saved in each checkpoint's ``metrics``."""
    in_memory: bool = False
    """``vrnn.fit``: no run folder; the best weights are kept in memory, nothing is written."""
    best_weights: tuple[int, dict] | None = None
    """In memory: the step and a copy of the weights of the best validation bound."""

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def last_path(self) -> Path:
        return self.out_dir / ckio.LAST

    @property
    def best_path(self) -> Path:
        return self.out_dir / ckio.BEST

    def checkpoint(self) -> dict:
        """The checkpoint of the run as it stands (format: :mod:`vrnn.store.checkpoint`)."""
        return {
            "format": ckio.FORMAT, "version": ckio.VERSION,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "model_config": self.model.config.to_dict(), "train_config": self.cfg.to_dict(),
            "data_info": self.dataset.info.to_dict(), **self.state.to_checkpoint(),
            "metrics": dict(self.last_stats),
            "median_train_length": int(np.median(self.batches.lengths))
            if len(self.batches.lengths) else 0,
            "world_size": self.env.world_size, "versions": ckio.versions(),
        }

    def save(self, path: Path) -> None:
        """Write the checkpoint to ``path`` on rank 0. A failed write (full disk) stops the run
        with one line; the checkpoints already there are kept intact."""
        if not self.env.is_main:
            return
        if self.in_memory:
            if path == self.best_path and self.validated_at == self.state.step:
                weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.best_weights = (self.state.step, weights)
            return
        try:
            ckio.save_atomic(self.checkpoint(), path)
        except WriteError as e:
            kept = [f"{p} is kept" + (" as it was" if p == path else "")
                    for p in (self.last_path, self.best_path) if p.exists()]
            raise TrainingError(f"{e}; training stopped at step {self.state.step}: "
                                f"{', '.join(kept) or 'no checkpoint was written yet'}") from None

    def validate_and_save(self) -> None:
        """Validate; log the row; save best.pt when the bound improved (else count patience)."""
        state = self.state
        valid = self.dataset.valid
        bound, per_step = validate(self.model, valid, self.cfg, self.env) if valid else \
            (None, None)
        self.validated_at = state.step
        self.last_stats.update(valid_bound=bound, valid_bound_per_step=per_step)
        self.metrics.write({"step": state.step, "epoch": state.epoch,
                            "elapsed_s": state.clock.wall(), "valid_bound": bound,
                            "valid_bound_per_step": per_step})
        if bound is None:
            return
        if state.best_bound is None or bound > state.best_bound:
            state.best_bound, state.bad_validations = bound, 0
            self.save(self.best_path)
        else:
            state.bad_validations += 1

    def advance(self, figures: StepFigures, window: TrainWindow) -> dict:
        """Count an applied update; log a train row every ``--log-interval`` steps. Returns the
        row (the logged one, or this update's bound)."""
        state, cfg, sums = self.state, self.cfg, figures.sums
        state.step += 1
        state.sequences_seen += int(sums.sequences)
        if self.batches.tbptt:  # iwae / fivo carry nothing: their state is None
            state.carried = (None if figures.state is None
                             else tuple(s.detach() for s in figures.state))
        window.add(sums.elbo, sums.kl, sums.sequences, sums.steps, figures.grad_norm,
                   objective=sums.objective,
                   ess=sums.ess if self.loss.objective.reports_ess else None,
                   elbo_sequences=sums.elbo_sequences, elbo_steps=sums.elbo_steps)
        if not writes_row(cfg, state.step):
            return {"step": state.step, "epoch": state.epoch, "train_bound": figures.bound}
        row = {"step": state.step, "epoch": state.epoch, "sequences": state.sequences_seen,
               "elapsed_s": state.clock.wall(), **window.row(),
               "kl_weight": figures.kl_weight, "lr": learning_rate(cfg, state.step - 1)}
        self.metrics.write(row)
        self.last_stats.update({k: v for k, v in row.items() if k.startswith("train")})
        return row


# -- putting a run together -----------------------------------------------------------------------

def _model_config(cfg: TrainConfig, info, ckpt: dict | None, resume: Path | None,
                  env: DistEnv) -> ModelConfig:
    """A fresh run's model from --model and --preset; a resumed run's from its checkpoint."""
    from vrnn.data import check_same_kind, check_x_dim

    if ckpt is None:
        return model_config(cfg.model, x_dim=info.x_dim, data_kind=info.kind, preset=cfg.preset,
                            **cfg.model_overrides())
    trained = ckpt.get("train_config", {}).get("model")
    if trained and trained != cfg.model:
        raise ValueError(f"--resume: {resume} holds a {trained} model, not --model {cfg.model}")
    model_cfg = ModelConfig.from_dict(ckpt["model_config"])
    for key, value in cfg.model_overrides().items():
        if getattr(model_cfg, key) != value:
            flag = "--" + key.replace("_", "-") if value is not False else "--no-res-q"
            raise ValueError(f"{flag}: {resume} holds a model with {key}="
                             f"{getattr(model_cfg, key)} (a resumed run keeps its model; drop "
                             f"the flag or start a new --out)")
    check_x_dim(info, model_cfg.x_dim)
    check_same_kind(info, ckpt["data_info"], "--data")
    was = ckpt["data_info"].get("name")
    if was and was != info.name and env.is_main:
        warnings.warn(f"--resume: {resume} was trained on {was}; going on with --data "
                      f"{info.name} (and its normalisation statistics)", RuntimeWarning,
                      stacklevel=4)
    return model_cfg


def _check_memory(cfg: TrainConfig, model_cfg: ModelConfig, batches: EpochBatches,
                  env: DistEnv) -> None:
    """Refuse, naming the flag, a training step that cannot fit in the device's memory: K
    particles x this rank's rows x the steps of a batch x what a row keeps per step
    (:func:`vrnn.host.memory.floats_per_row`), kept for the backward pass and its gradients."""
    rows = -(-batches.batch_size // env.world_size)
    steps = batches.window if batches.tbptt else int(max(batches.lengths, default=1))
    K = cfg.particles or 1
    need = 3 * K * rows * steps * floats_per_row(model_cfg) * FLOAT_BYTES
    flag, fix = ((f"--particles {K}", "use fewer --particles or a smaller --batch-size") if K > 1
                 else (f"--batch-size {cfg.batch_size}", "use a smaller --batch-size or "
                       "--seq-len"))
    particles = f" x {K} particles" if K > 1 else ""
    check_fits(need, env.device, flag, f"a training step of {rows} sequences{particles} x "
               f"{steps} steps", fix)


def _prepare(cfg: TrainConfig, env: DistEnv, dataset, folder) -> Run:
    """Check the run folder, load the data, build (or restore) the model and its state."""
    clock = TrainClock()  # elapsed_s counts from here, data loading included
    resume = resume_path(cfg)
    ckpt = ckio.load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        ckio.check_resumable(ckpt, resume)
    if folder is not None:
        check_run_folder(cfg, folder, resume, ckpt)
    if dataset is None:
        dataset = load_training_data(cfg)
    info = dataset.info
    if info.skipped and env.is_main:
        print(f"--skip-bad: skipped {len(info.skipped)} bad file(s) of {cfg.data}:\n  "
              + "\n  ".join(info.skipped), file=sys.stderr)
    model_cfg = _model_config(cfg, info, ckpt, resume, env)
    seed_everything(cfg.seed)
    model = build_model(model_cfg).to(env.device)
    optimizer = make_optimizer(model, cfg)
    state = TrainState.start(cfg.seed, env.device, clock)
    if ckpt is not None:
        ckio.load_weights(model, ckpt, f"--resume {resume}")
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # --lr, --beta1, ... may change on resume
            group.update(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                         weight_decay=cfg.weight_decay)
        state.restore(ckpt, env.device)
    batches = EpochBatches(dataset, cfg, env)
    if batches.note and env.is_main:  # a split too small for --batch-size trains with less
        print(batches.note, file=sys.stderr)
    resolve_kl_epochs(cfg, batches)
    _check_memory(cfg, model_cfg, batches, env)
    loss = LossModule(model, objective_of(cfg), cfg.precision)
    objective: nn.Module = loss
    if batches.tbptt and not loss.objective.carries_state and env.is_main:
        print(f"note: --objective {cfg.objective}: every TBPTT window of {batches.window} frames "
              f"starts from the initial state (the recurrent state is not carried across "
              f"windows with {cfg.particles} particles)", file=sys.stderr)
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # a carried TBPTT state bypasses the learned h_0, which then gets no gradient
        objective = DDP(objective, device_ids=[env.device.index]
                        if env.device.type == "cuda" else None,
                        find_unused_parameters=batches.tbptt)
    if env.is_main:
        write_text(Path(cfg.out_dir) / "config.json", json.dumps({
            "train": cfg.to_dict(), "model": model_cfg.to_dict(), "data": info.to_dict(),
            "world_size": env.world_size, "n_parameters": count_parameters(model),
            # what the defaults ('auto', the data's own length) resolved to in this run
            "resolved": {"device": str(env.device), "tbptt": batches.tbptt,
                         "window": batches.window, "train_sequences": len(dataset.train),
                         "batch_size": batches.batch_size,
                         "updates_per_epoch": batches.updates_per_epoch(),
                         "kl_anneal_steps": cfg.kl_anneal_steps},
            "versions": ckio.versions()}, indent=2, default=str) + "\n")
    metrics = MetricsLog(Path(cfg.out_dir), env.is_main,
                         state.step if ckpt is not None else None, cfg.tensorboard)
    return Run(cfg, env, dataset, model, optimizer, objective, loss, state, batches, metrics,
               resumed=ckpt is not None, validated_at=state.step if ckpt is not None else -1)


# -- the loop ---------------------------------------------------------------------------------

def _loop(run: Run, stops: StopConditions, callback: Callable | None,
          progress_every: float | None = None) -> str:
    """Update until a stop condition says why; returns the reason."""
    cfg, state = run.cfg, run.state
    stopped = stops.before_start(state) or ("max_steps" if state.step >= cfg.max_steps else None)
    bar, window = Progress(run, progress_every), TrainWindow()
    try:
        while stopped is None:
            skip, fetched = state.batch_in_epoch, False
            for batch in run.batches(state.epoch, skip):
                fetched = True
                if run.batches.tbptt and state.batch_in_epoch % cfg.tbptt_reset == 0:
                    state.carried = None  # the paper resets the carried state every 4 updates
                figures = train_step(run, batch, stops.votes)
                state.batch_in_epoch += 1
                if figures.finite:
                    row = run.advance(figures, window)
                    bar.update(figures.bound)
                    if callback is not None:
                        callback(state.step, row)
                    if state.step % cfg.val_interval == 0:
                        run.validate_and_save()
                        run.save(run.last_path)
                else:
                    state.carried = None
                stopped = stops.after_update(figures, state)
                if stopped:
                    break
            else:
                if not fetched and skip == 0:
                    raise run.batches.empty_epoch_error()
                state.next_epoch()
    finally:
        bar.close()
    return stopped


def _finish(run: Run, stopped: str, start_step: int) -> None:
    """The last validation and checkpoints. An interrupted run saves at once, unvalidated; a
    resumed run that did nothing stays as it was."""
    state = run.state
    if stopped != "interrupted" and run.validated_at != state.step and state.step > 0:
        run.validate_and_save()
    if not run.resumed or state.step != start_step:
        run.save(run.last_path)
    if (run.env.is_main and not run.in_memory and not run.best_path.exists()
            and run.last_path.exists()):
        run.save(run.best_path)  # no validation split: best.pt is the last checkpoint


@contextlib.contextmanager
def _distribution_checks_off():
    """A diverging run must reach the non-finite check (skip the update, stop after a few), not
    die inside a distribution that refuses NaN parameters; the data's kind is checked upfront."""
    validating = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(validating)


def train(cfg: TrainConfig, *, dataset=None, callback=None,
          progress_every: float | None = None) -> TrainResult:
    """Train the model ``cfg`` names on ``cfg.data`` (or on ``dataset``, a ``SequenceDataset``).

    Args:
        cfg: the run's settings.
        dataset: an already loaded ``vrnn.data.SequenceDataset`` (tests, notebooks); default
            ``load_dataset(cfg.data, ...)``.
        callback: optional ``callback(step, row)`` called after every update (rank 0 and others).
        progress_every: with ``cfg.progress``, a progress line (updates, time against the
            budget, training and validation bounds) on stderr every this many seconds instead of
            a bar, as for processes that share one terminal; default: a bar on a terminal, a line
            every :data:`vrnn.train.progress.PROGRESS_LINE_SECONDS` elsewhere.

    Returns:
        a :class:`TrainResult`. Raises ``ValueError`` / ``FileNotFoundError`` for bad settings or
        files (naming the flag or path), :class:`vrnn.train.run_folder.RunFolderError` when another
        process owns the run folder, :class:`vrnn.host.files.WriteError` when it cannot be written,
        and :class:`TrainingError` if the loss stays non-finite or a checkpoint cannot be saved.
    """
    env = setup(cfg.device)
    finished = False
    try:
        check_supported(cfg.precision, env.device)  # before the folder is touched
        with _distribution_checks_off(), owned_run_folder(cfg, env) as folder:
            run = _prepare(cfg, env, dataset, folder)
            start_step = run.state.step
            try:
                try:
                    with StopConditions(cfg, run.state.clock, run.last_path) as stops:
                        stopped = _loop(run, stops, callback, progress_every)
                        _finish(run, stopped, start_step)
                finally:
                    run.metrics.close()
            except BaseException:
                if folder is not None and not run.resumed and run.state.step == 0:
                    with contextlib.suppress(OSError):  # the failure, not this, is the news
                        folder.clear()  # a fresh run that never updated: config.json, metrics
                raise
        finished = True
    finally:
        cleanup(env, finished=finished)
    if env.is_main and stopped == "interrupted":
        print(f"interrupted at step {run.state.step}: saved {run.last_path}; continue with "
              f"--resume auto")
    main = env.is_main
    return TrainResult(out_dir=run.out_dir, step=run.state.step, epoch=run.state.epoch,
                       best_bound=run.state.best_bound,
                       last_checkpoint=run.last_path if main else None,
                       best_checkpoint=run.best_path if main else None,
                       metrics_csv=run.metrics.path if main else None, stopped=stopped,
                       elapsed_s=run.state.clock.wall(), model_config=run.model.config,
                       signal=stops.signal)

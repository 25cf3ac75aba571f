"""``vrnn.fit``: train a model on sequences held in memory, with the training loop of ``vrnn
train`` (its batching by length, objective, gradient clipping, non-finite-update guard, KL
schedule, validation, early stopping and progress bar) and nothing of its run folder.

    >>> import numpy as np, vrnn
    >>> rng = np.random.default_rng(0)
    >>> train = [rng.standard_normal((int(n), 3)) for n in rng.integers(20, 40, 64)]
    >>> model = vrnn.build_model(vrnn.model_config("vrnn-gauss", x_dim=3, preset="tiny"))
    >>> history = vrnn.fit(model, train, steps=20, progress=False)
    >>> history.stopped
    'max_steps'

Normalisation: with ``normalise="auto"`` (the default) real-valued frames (Gaussian and mixture
outputs; the (dx, dy) offsets of pen strokes) are normalised per feature by the training split's
mean and standard deviation before training, as Chung et al. normalise theirs. The statistics
travel with the model (``model.config.x_loc``, ``x_scale``, saved in every checkpoint), so
:meth:`~vrnn.models.base.SequenceModel.log_prob` takes data on the user's own scale (and answers
in nats of that scale: the log-density of the normalised frames plus the log-Jacobian of the
normalisation) and :meth:`~vrnn.models.base.SequenceModel.sample` gives frames on it. The bounds
in the returned history are per sequence on the normalised scale, as training sees the data.
Binary and one-hot frames are never normalised.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from vrnn.inference.objectives import ELBO, Objective
from vrnn.models.base import SequenceModel
from vrnn.models.config import MODEL_NAMES
from vrnn.train.batches import EpochBatches
from vrnn.train.config import TrainConfig
from vrnn.train.distributed import DistEnv, resolve_device
from vrnn.train.loop import (
    Run,
    _distribution_checks_off,
    _finish,
    _loop,
    make_optimizer,
    resolve_kl_epochs,
)
from vrnn.train.objective import LossModule
from vrnn.train.recipes import recipe_values
from vrnn.train.state import TrainClock, TrainState
from vrnn.train.stop import StopConditions

CONTINUOUS_OUTPUTS = {"gauss": None, "gmm": None, "stroke-gauss": (0, 1),
                      "stroke-gmm": (0, 1)}
"""The outputs whose frames ``normalise="auto"`` normalises, and which features (None: all)."""
OUTPUT_KINDS = {"gauss": "audio", "gmm": "audio", "stroke-gauss": "strokes",
                "stroke-gmm": "strokes", "bernoulli": "binary", "categorical": "text"}
"""The data kind a recipe reads its values for, from the model's output head."""


@dataclass
class History:
    """What :func:`fit` returns: the logged rows and why training ended."""

    rows: list[dict] = field(default_factory=list)
    """Every row ``vrnn train`` would write to ``metrics.csv``: train rows (``train_bound``,
    ``train_kl_per_step``, ``grad_norm``, ...) every ``log_interval`` updates, and validation
    rows (``valid_bound``, ``valid_bound_per_step``), each with its ``step``."""
    stopped: str = ""
    """max_steps, early_stopping, time_limit or interrupted (Ctrl-C)."""
    steps: int = 0
    """Updates applied."""
    best_step: int | None = None
    """The update whose weights the model holds at the end (the best validation bound's, when
    there was a validation split and ``restore_best``)."""
    best_bound: float | None = None
    """The best validation bound, nats per sequence (normalised scale); None without
    validation."""
    seconds: float = 0.0

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The steps and values of one column over the rows that have it, e.g.
        ``history.column("valid_bound")``."""
        rows = [r for r in self.rows if r.get(name) is not None]
        return (np.array([r["step"] for r in rows]),
                np.array([float(r[name]) for r in rows]))


class _Rows:
    """The run's metrics log, kept in memory."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.path = None

    def write(self, row: dict) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        pass


@dataclass
class _ArrayInfo:
    """The little of a data set's description the loop reads."""

    kind: str = "real"
    name: str = "arrays"


@dataclass
class _Arrays:
    train: list[np.ndarray]
    valid: list[np.ndarray]
    info: _ArrayInfo = field(default_factory=_ArrayInfo)
    train_streams: None = None


def as_sequences(data, what: str, x_dim: int) -> list[np.ndarray]:
    """``data`` as a list of float32 ``(T_i, D)`` arrays: a list of arrays or tensors, a padded
    ``(B, T, D)`` array or tensor, or a tuple ``(x, lengths)`` / ``(x, mask)`` of one. Errors
    name ``what`` (``train`` or ``valid``), the item and the shape."""
    if isinstance(data, tuple) and len(data) == 2:
        x, second = (np.asarray(_numpy(v)) for v in data)
        if x.ndim != 3:
            raise ValueError(f"{what}: a padded batch must be (B, T, D), got {x.shape}")
        lengths = second.sum(1) if second.ndim == 2 else second
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"{what}: lengths (or a mask) must give one length per sequence "
                             f"of x {x.shape}, got {second.shape}")
        if (lengths < 1).any() or (lengths > x.shape[1]).any():
            raise ValueError(f"{what}: lengths must be in 1..T={x.shape[1]}, got "
                             f"{lengths.min()}..{lengths.max()}")
        data = [x[i, :int(n)] for i, n in enumerate(lengths)]
    elif isinstance(data, (np.ndarray, Tensor)):
        arr = np.asarray(_numpy(data))
        if arr.ndim != 3:
            raise ValueError(f"{what}: an array must be (B, T, D) sequences, got {arr.shape}; "
                             f"for one sequence pass [x]")
        data = list(arr)
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise ValueError(f"{what}: expected a list of (T, D) arrays, a (B, T, D) array or "
                         f"(x, lengths); got {type(data).__name__}")
    out = []
    for i, s in enumerate(data):
        a = np.asarray(_numpy(s), dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != x_dim or a.shape[0] < 1:
            raise ValueError(f"{what}[{i}]: expected a (T, D={x_dim}) sequence with T >= 1, "
                             f"got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{what}[{i}]: holds NaN or infinite values")
        out.append(a)
    return out


def _numpy(v):
    return v.detach().cpu().numpy() if isinstance(v, Tensor) else v


def _statistics(model: SequenceModel, train: list[np.ndarray], normalise: str | bool
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-feature location and scale to normalise by, or None."""
    cfg = model.config
    if cfg.x_scale:  # a model fitted before keeps its scale
        return np.asarray(cfg.x_loc), np.asarray(cfg.x_scale)
    if normalise not in ("auto", True, False):
        raise ValueError(f"normalise must be 'auto', True or False, got {normalise!r}")
    if normalise is False or cfg.output not in CONTINUOUS_OUTPUTS:
        if normalise is True:
            raise ValueError(f"normalise=True: a {cfg.output} output reads discrete frames, "
                             f"which are not normalised")
        return None
    frames = np.concatenate(train).astype(np.float64)  # (sum T, D)
    loc, scale = np.zeros(cfg.x_dim), np.ones(cfg.x_dim)
    dims = CONTINUOUS_OUTPUTS[cfg.output]
    dims = list(range(cfg.x_dim)) if dims is None else list(dims)
    loc[dims] = frames[:, dims].mean(0)
    sd = frames[:, dims].std(0)
    scale[dims] = np.where(sd > 1e-8, sd, 1.0)  # a constant feature is left as it is
    return loc, scale


def _model_name(model: SequenceModel) -> str:
    """The model's name as ``vrnn train --model`` spells it (for messages and the progress
    bar)."""
    cfg = model.config
    name = cfg.name.lower()
    if name in MODEL_NAMES:
        return name
    head = cfg.output.removeprefix("stroke-")
    guesses = (f"{cfg.family}{'-i' if cfg.prior == 'standard' else ''}-{head}",
               f"{cfg.family}-{head}")  # STORN's prior is standard, and it has no -i
    return next((g for g in guesses if g in MODEL_NAMES), f"{cfg.family}-gauss")


def _batch_for(batch_size, n_train: int, explicit: bool, whose: str) -> int:
    """The batch ``fit`` trains with: ``batch_size`` checked, and the default's (or a recipe's)
    cut to the ``n_train`` training sequences with a warning, as ``vrnn train`` does; one the
    caller named is refused when larger."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if batch_size <= n_train:
        return batch_size
    if explicit:  # asked for by name: the caller meant it
        raise ValueError(f"batch_size {batch_size} is more than the {n_train} training "
                         f"sequences; pass batch_size={n_train} or less")
    warnings.warn(f"vrnn.fit: batch_size {batch_size}{whose or ' (the default)'} is more "
                  f"than the {n_train} training sequences: training with batches "
                  f"of {n_train}", stacklevel=3)
    return n_train


def _train_in_memory(model: SequenceModel, cfg: TrainConfig, env: DistEnv, dataset,
                     objective: Objective | None, precision: str, callback):
    """The training loop of ``vrnn train`` on ``dataset`` in memory (no run folder): the run
    and why it stopped."""
    optimizer = make_optimizer(model, cfg)
    state = TrainState.start(cfg.seed, env.device, TrainClock())
    with _distribution_checks_off(), warnings.catch_warnings():
        # without valid, the loop's note about an empty validation split names --data
        warnings.filterwarnings("ignore", message=".*validation split is empty")
        batches = EpochBatches(dataset, cfg, env)
        resolve_kl_epochs(cfg, batches)
        if objective is None:  # the recipe's KL schedule
            objective = ELBO(kl_start=cfg.kl_start, kl_anneal_steps=cfg.kl_anneal_steps)
        loss = LossModule(model, objective, precision)
        run = Run(cfg, env, dataset, model, optimizer, loss, loss, state, batches, _Rows(),
                  resumed=False, in_memory=True)
        with StopConditions(cfg, state.clock, None) as stops:
            stopped = _loop(run, stops, callback)
            _finish(run, stopped, 0)
    return run, stopped


def fit(model: SequenceModel, train, valid=None, *, objective: Objective | None = None,
        steps: int = 1000, recipe: str = "default", batch_size: int | None = None,
        lr: float | None = None, grad_clip: float | None = None,
        val_interval: int | None = None, patience: int = 0, normalise: str | bool = "auto",
        restore_best: bool = True, seed: int = 0, max_minutes: float | None = None,
        precision: str = "fp32", device: str = "auto", progress: bool = True,
        log_interval: int = 10, callback=None) -> History:
    """Train ``model`` on sequences in memory; returns the :class:`History`.

    Args:
        model: any model of the package (``vrnn.build_model(vrnn.model_config(...))``); trained
            in place, on ``device``.
        train: a list of ``(T_i, D)`` arrays or tensors, a padded ``(B, T, D)`` array, or
            ``(x, lengths)`` / ``(x, mask)`` of one.
        valid: optional, in any form ``train`` takes: gives the validation bound, early
            stopping and the best weights.
        objective: :class:`vrnn.ELBO` (default, with its KL annealing and free bits),
            :class:`vrnn.IWAE` or :class:`vrnn.FIVO`.
        steps: updates (the batches are drawn by similar length, shuffled each epoch).
        recipe: a paper's training setting (``vrnn train --recipe``: ``"default"``, ``"vrnn"``,
            ``"srnn"``, ``"fivo"``, ``"dmm"``; :mod:`vrnn.train.recipes`): its batch size,
            learning rate, Adam's betas, weight decay and learning-rate decay, gradient
            clipping and, with the default ``objective``, KL schedule, each where the argument
            here is not given. The data's kind is read from the model's output head.
        batch_size: Adam's batch (sequences per update; default: the recipe's, 32 in the
            default recipe, or every training sequence where there are fewer, with a
            warning). A value given here that is larger than the training set is refused.
        lr: Adam's learning rate (default: the recipe's; Chung et al.: 3e-4).
        grad_clip: the gradient norm is clipped to this before each step (0: off; default: the
            recipe's; Chung et al.: 5).
        val_interval: updates between validations (default: 10 per run, at least every 10).
        patience: stop after this many validations without improvement (0: never).
        normalise: ``"auto"``, True or False (see the module's notes).
        restore_best: end with the weights of the best validation bound (with ``valid``).
        seed: the data order and every draw of the noise.
        max_minutes: a training-time budget.
        precision: ``fp32`` or ``bf16`` (bfloat16 products where the hardware has them).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: a progress bar on standard error (tqdm; where it is not a terminal, a line
            every 30 seconds: updates, time against the budget, the bounds).
        log_interval: updates between train rows of the history.
        callback: optional ``callback(step, row)`` after every update (``row``: the logged train
            row, or ``{"step", "epoch", "train_bound"}``; ``train_bound`` is None on a fivo update
            that writes no row: its ELBO costs a pass of its own).

    Raises:
        ValueError naming the argument (``train[3]: expected a (T, D=3) sequence ...``).
    """
    values = recipe_values(recipe, OUTPUT_KINDS.get(model.config.output))
    whose = f" (the {recipe} recipe's)" if batch_size is None and recipe != "default" else ""
    explicit_batch = batch_size is not None
    batch_size = values["batch_size"] if batch_size is None else batch_size
    if not (objective is None or isinstance(objective, Objective)):
        raise ValueError(f"objective must be vrnn.ELBO(...), vrnn.IWAE(K) or vrnn.FIVO(K); got "
                         f"{objective!r}")
    D = model.config.x_dim
    train_seqs = as_sequences(train, "train", D)
    valid_seqs = [] if valid is None else as_sequences(valid, "valid", D)
    if not train_seqs:
        raise ValueError("train: no sequences")
    batch_size = _batch_for(batch_size, len(train_seqs), explicit_batch, whose)
    stats = _statistics(model, train_seqs, normalise)
    if stats is not None:
        loc, scale = (a.astype(np.float32) for a in stats)
        train_seqs = [(s - loc) / scale for s in train_seqs]
        valid_seqs = [(s - loc) / scale for s in valid_seqs]
    explicit = {k: v for k, v in (("lr", lr), ("grad_clip", grad_clip)) if v is not None}
    if objective is not None:  # the objective's own KL schedule, not the recipe's
        values.update(kl_anneal_steps=0, kl_anneal_epochs=0.0, kl_start=0.0)
    cfg = TrainConfig(data="arrays", model=_model_name(model), max_steps=steps, recipe=recipe,
                      **{**values, **explicit, "batch_size": batch_size},
                      val_interval=val_interval or max(10, math.ceil(steps / 10)),
                      patience=patience, seed=seed, max_minutes=max_minutes,
                      precision=precision, device=device, progress=progress,
                      log_interval=log_interval, tbptt=False, tensorboard=False,
                      objective="elbo")
    env = DistEnv(device=resolve_device(cfg.device))  # one process, even under torchrun
    saved_scale = (model.config.x_loc, model.config.x_scale)
    model.config.x_loc, model.config.x_scale = (), ()  # training reads normalised frames
    try:
        model.to(env.device)
        run, stopped = _train_in_memory(model, cfg, env, _Arrays(train_seqs, valid_seqs),
                                        objective, precision, callback)
    finally:
        if stats is None:
            model.config.x_loc, model.config.x_scale = saved_scale
        else:
            model.config.x_loc = tuple(float(v) for v in stats[0])
            model.config.x_scale = tuple(float(v) for v in stats[1])
    state = run.state
    best_step = state.step
    if restore_best and run.best_weights is not None:
        best_step, weights = run.best_weights
        model.load_state_dict(weights)
    model.eval()
    return History(rows=run.metrics.rows, stopped=stopped, steps=state.step,
                   best_step=best_step, best_bound=state.best_bound,
                   seconds=state.clock.wall())

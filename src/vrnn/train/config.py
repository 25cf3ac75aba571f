"""The settings of a training run, declared once: :class:`TrainConfig`, whose fields' docstrings
are also the command line's flags and their ``--help`` (:func:`add_train_flags`).

Each field's docstring starts with its flag, then an optional metavar, then ``:`` and the help:

    lr: float = 3e-4
    \"\"\"--lr: Adam learning rate (paper: 3e-4).\"\"\"

A boolean that defaults to True is turned off by ``--no-<name>``; one that defaults to False is
turned on by ``--<name>``. ``(default V)`` is appended to a help text unless the docstring says
what the default is itself (the ``None`` defaults: "(default: the data set's own)").

:func:`config_from_args` turns parsed flags into a :class:`TrainConfig`, taking a resumed run's
own settings from its checkpoint unless the user typed a flag that overrides them.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vrnn.inference.likelihood import RESAMPLING
from vrnn.inference.objectives import DEFAULT_PARTICLES, OBJECTIVES
from vrnn.kernels.precision import PRECISIONS
from vrnn.models.config import MODEL_NAMES, POSTERIORS
from vrnn.models.presets import PRESETS
from vrnn.train.recipes import RECIPE_FIELDS, RECIPE_NAMES

BUDGET_CLOCKS = ("wall", "cpu")
SEED_LIMIT = 2**63
"""Seeds are whole numbers in [0, 2**63): what torch's generators take (a signed 64-bit
number); a larger one would fail deep inside them ("Overflow when unpacking long long")."""


def check_seed(seed, flag: str = "--seed") -> int:
    """``seed``, or a ``ValueError`` naming ``flag`` unless 0 <= seed < 2**63."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{flag} must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    return seed


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in ``config.json`` and in every checkpoint."""

    data: str = "handwriting"
    """--data NAME_OR_PATH: a built-in data set (vrnn data list) or a path (.npz, a .csv / .tsv /
    .parquet table with one row per time step, a folder of WAVs or of tables...)."""
    model: str = "vrnn-gmm"
    """--model: the model to train: one of Table 1 (rnn-gauss, rnn-gmm, vrnn-gauss, ...), the
    SRNN (srnn-gauss, srnn-gmm, srnn-bernoulli), the DMM (dmm-...) or STORN (storn-...)."""
    preset: str = "small"
    """--preset: model size (vrnn presets lists the parameter counts)."""
    posterior: str | None = None
    """--posterior: a latent model's q: filtering (q(z_t | x_{<=t}, z_{<t}); the VRNN's default,
    as the paper) or smoothing (its encoder also reads a backward RNN over x_{>=t}; the SRNN's
    and the DMM's default). STORN's is filtering only."""
    res_q: bool | None = None
    """--res-q: SRNN: the posterior mean is the prior mean plus the encoder's output (Res_q; on by
    default for the SRNN; --no-res-q turns it off)."""
    max_steps: int = 2000
    """--max-steps N: total optimiser updates, counting those before a resume."""
    out_dir: str = ""
    """--out DIR: run folder (default: runs/DATA-MODEL)."""
    resume: str | None = None
    """--resume auto|PATH: 'auto': continue from DIR/last.pt if present; or a checkpoint. The run
    keeps its own settings; only the flags you type override them."""
    overwrite: bool = False
    """--overwrite: start afresh, deleting every result DIR holds (checkpoints, metrics, events)."""
    rewind: bool = False
    """--rewind: allow --resume from an earlier checkpoint than DIR/last.pt (e.g. best.pt): the
    run goes back to it, replacing last.pt and dropping the metrics logged after it."""
    seed: int = 0
    """--seed N: seeds initialisation, data order (with the epoch) and the noise generator."""
    recipe: str = "default"
    """--recipe NAME: a paper's training hyper-parameters for its own models, filling every
    training setting below that is not given (a flag typed or an argument passed always wins):
    default (this project's), vrnn (Chung et al. 2015), srnn (Fraccaro et al. 2016), fivo
    (Maddison et al. 2017) or dmm (Krishnan et al. 2017, as Pyro's DMM example); the values,
    each with its source, are in vrnn/train/recipes.py (default: default)."""
    lr: float | None = None
    """--lr: Adam learning rate (default: the recipe's; 3e-4 in the default recipe)."""
    beta1: float | None = None
    """--beta1: Adam's first-moment decay (default: the recipe's; 0.9 in the default recipe)."""
    beta2: float | None = None
    """--beta2: Adam's second-moment decay (default: the recipe's; 0.999 in the default
    recipe)."""
    weight_decay: float | None = None
    """--weight-decay L2: Adam's L2 penalty, L2 * weight added to each gradient (default: the
    recipe's; 0 in the default recipe)."""
    lr_decay: float | None = None
    """--lr-decay F: the learning rate of update k is lr * F**k, as Pyro's ClippedAdam (default:
    the recipe's; 1, constant, in the default recipe)."""
    batch_size: int | None = None
    """--batch-size N: sequences per update, over all processes (default: the recipe's; 32 in
    the default recipe; the VRNN paper: 128 speech, 20 strokes)."""
    seq_len: int | None = None
    """--seq-len N: frames per training sequence / TBPTT window (default: the data set's own)."""
    frame_size: int = 200
    """--frame-size N: audio samples per frame D, as the paper."""
    sample_rate: int | None = None
    """--sample-rate HZ: resample audio to this rate in Hz (default: the data set's own)."""
    subsample: int | None = None
    """--subsample K: pen strokes: keep every K-th point (default: 4 for handwriting, else 1)."""
    max_files: int | None = None
    """--max-files N: read at most N files of a folder data set (quick runs; default: all)."""
    skip_bad: bool = False
    """--skip-bad: report and skip unreadable or invalid data files instead of stopping."""
    sequence_column: str | None = None
    """--sequence-column NAME: tables (CSV, TSV, Parquet, one row per time step): the column
    naming each row's sequence (default: a column named sequence, sequence_id or id if there is
    one, else each file is one sequence; '' for none)."""
    time_column: str | None = None
    """--time-column NAME: tables: the column to order each sequence's rows by, numbers or ISO
    dates (default: a column named time, timestamp, datetime, date, t or step if there is one,
    else the file's order; '' for none)."""
    feature_columns: str | None = None
    """--feature-columns A,B,C: tables: the columns that make a frame, in this order (default:
    every other column)."""
    grad_clip: float | None = None
    """--grad-clip NORM: clip the global gradient L2 norm to this before each step; 0 disables
    (default: the recipe's; 5 in the default recipe, as the VRNN paper)."""
    grad_clip_value: float | None = None
    """--grad-clip-value V: clamp every gradient element to [-V, V] before the norm clipping
    (Pyro's ClippedAdam); 0 disables (default: the recipe's; 0 in the default recipe)."""
    kl_anneal_steps: int | None = None
    """--kl-anneal-steps N: the KL weight rises linearly to 1 over N updates; 0: off, as the
    VRNN paper (default: the recipe's; 0 in the default recipe)."""
    kl_anneal_epochs: float | None = None
    """--kl-anneal-epochs E: the same over E epochs of the training data, turned into
    --kl-anneal-steps once the data is loaded (config.json's resolved.kl_anneal_steps); 0: off
    (default: the recipe's; 0 in the default recipe)."""
    kl_start: float | None = None
    """--kl-start W: the KL weight at step 0 when annealing (default: the recipe's; 0 in the
    default recipe)."""
    objective: str = "elbo"
    """--objective: the bound training maximises: elbo (Eq. 11, as the paper), iwae (Burda et
    al.'s importance-weighted bound of --particles samples) or fivo (Maddison et al.'s SMC bound
    of --particles particles, resampled when ESS < K/2). Latent models only. iwae and fivo start
    every TBPTT window from the initial state (no carried state) and take no --kl-anneal-steps
    or --free-bits; the validation bound stays the ELBO."""
    particles: int | None = None
    """--particles K: samples (iwae) or particles (fivo) per sequence; K = 1 is the ELBO with a
    sampled KL (default: 4 with iwae and fivo; left out with elbo)."""
    resampling: str | None = None
    """--resampling: how fivo draws the particles' ancestors when it resamples: multinomial or
    systematic (default: multinomial with fivo; left out with elbo and iwae)."""
    free_bits: float = 0.0
    """--free-bits LAMBDA: free bits for --objective elbo: the training loss takes max(KL_t,
    LAMBDA) of each sequence's KL of the whole z_t at each step t (nats per step, as
    train_kl_per_step), so steps below LAMBDA get no gradient through the KL; the reported
    bound stays the true ELBO; 0: off."""
    val_interval: int = 200
    """--val-interval N: validate (and save last.pt / best.pt) every N updates."""
    val_max_sequences: int = 0
    """--val-max-sequences N: validate on at most N validation sequences; 0: all."""
    patience: int = 0
    """--patience N: early stopping: stop after N validations without a better bound; 0: never."""
    tbptt: bool = True
    """--no-tbptt: do not carry the state across contiguous audio minibatches."""
    tbptt_reset: int = 4
    """--tbptt-reset N: reset the carried state every N updates, as the paper."""
    max_bad_steps: int = 5
    """--max-bad-steps N: stop after N non-finite losses in a row (each is skipped)."""
    log_interval: int = 10
    """--log-interval N: write a train row to metrics.csv every N updates."""
    max_minutes: float | None = None
    """--max-minutes MIN: stop (saving last.pt) after this many minutes of training in total; a
    resumed run counts the time already spent, as --max-steps counts the steps (default: no
    limit)."""
    budget_clock: str = "wall"
    """--budget-clock: what --max-minutes counts: 'wall' (elapsed time) or 'cpu' (this process's
    CPU time: fair between runs sharing a busy machine; use it with one thread)."""
    device: str = "auto"
    """--device DEVICE: auto (CUDA when available), cpu, cuda or cuda:N."""
    precision: str = "fp32"
    """--precision: the dtype of training's matrix products: fp32, or bf16 (bfloat16 products
    with float32 accumulation, forward and backward; the weights, Adam's state, the densities,
    the KL and every sum over time stay float32; needs a CPU with AVX-512 BF16 or AMX, or a GPU
    with bfloat16). Validation and evaluation run in float32; a resumed run may change it."""
    progress: bool = True
    """--no-progress: no progress bar (logs and batch jobs)."""
    tensorboard: bool = True
    """--no-tensorboard: no TensorBoard events even when tensorboard is installed."""

    def __post_init__(self) -> None:
        def need(ok: bool, flag: str, what: str, value) -> None:
            if not ok:
                raise ValueError(f"{flag} must be {what}, got {value!r}")

        need(self.model.lower() in MODEL_NAMES, "--model", f"one of {', '.join(MODEL_NAMES)}",
             self.model)
        self.model = self.model.lower()
        need(self.preset in PRESETS, "--preset", f"one of {', '.join(PRESETS)}", self.preset)
        need(self.posterior in (None, *POSTERIORS), "--posterior", " or ".join(POSTERIORS),
             self.posterior)
        family = self.model.split("-")[0]
        need(self.posterior is None or family != "rnn", "--posterior",
             "left out for an RNN (it has no latent variables)", self.posterior)
        need(self.posterior in (None, "filtering") or family != "storn", "--posterior",
             "filtering for STORN (its q(z_t | x_{<=t}) reads no later frame)", self.posterior)
        need(self.res_q is None or family == "srnn", "--res-q",
             "left out unless --model is an SRNN", self.res_q)
        need(self.max_steps >= 0, "--max-steps", ">= 0", self.max_steps)
        check_seed(self.seed)
        self._apply_recipe()
        need(self.lr > 0 and math.isfinite(self.lr), "--lr", "> 0", self.lr)
        for flag, value in (("--beta1", self.beta1), ("--beta2", self.beta2)):
            need(0 <= value < 1, flag, "in [0, 1)", value)
        need(self.weight_decay >= 0 and math.isfinite(self.weight_decay), "--weight-decay",
             ">= 0", self.weight_decay)
        need(0 < self.lr_decay <= 1, "--lr-decay", "in (0, 1]", self.lr_decay)
        need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        for flag, value in (("--seq-len", self.seq_len), ("--sample-rate", self.sample_rate),
                            ("--max-files", self.max_files), ("--subsample", self.subsample)):
            need(value is None or value >= 1, flag, ">= 1", value)
        need(self.frame_size >= 1, "--frame-size", ">= 1", self.frame_size)
        need(self.grad_clip >= 0, "--grad-clip", ">= 0 (0 disables clipping)", self.grad_clip)
        need(self.grad_clip_value >= 0, "--grad-clip-value", ">= 0 (0 disables clamping)",
             self.grad_clip_value)
        need(self.kl_anneal_steps >= 0, "--kl-anneal-steps", ">= 0", self.kl_anneal_steps)
        need(self.kl_anneal_epochs >= 0 and math.isfinite(self.kl_anneal_epochs),
             "--kl-anneal-epochs", ">= 0", self.kl_anneal_epochs)
        need(0 <= self.kl_start <= 1, "--kl-start", "in [0, 1]", self.kl_start)
        self._check_objective(family, need)
        need(self.val_interval >= 1, "--val-interval", ">= 1", self.val_interval)
        need(self.val_max_sequences >= 0, "--val-max-sequences", ">= 0", self.val_max_sequences)
        need(self.patience >= 0, "--patience", ">= 0", self.patience)
        need(self.tbptt_reset >= 1, "--tbptt-reset", ">= 1", self.tbptt_reset)
        need(self.max_bad_steps >= 1, "--max-bad-steps", ">= 1", self.max_bad_steps)
        need(self.log_interval >= 1, "--log-interval", ">= 1", self.log_interval)
        need(self.max_minutes is None or self.max_minutes > 0, "--max-minutes", "> 0",
             self.max_minutes)
        need(self.budget_clock in BUDGET_CLOCKS, "--budget-clock", "wall or cpu",
             self.budget_clock)
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             "--device", "auto, cpu or cuda", self.device)
        need(self.precision in PRECISIONS, "--precision", " or ".join(PRECISIONS),
             self.precision)
        if self.resume is not None and self.resume != "auto" and not Path(self.resume).is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {self.resume}")
        if not self.out_dir:
            self.out_dir = str(Path("runs") / f"{data_stem(self.data)}-{self.model}")

    def _apply_recipe(self) -> None:
        """Fill every field of :data:`vrnn.train.recipes.RECIPE_FIELDS` left None with the
        recipe's value for the data's kind. The KL schedule goes together: given either of its
        lengths, the recipe sets neither; with --objective iwae or fivo it sets none (their
        bounds have no separate KL term)."""
        from vrnn.data.registry import BUILTIN_KINDS
        from vrnn.train.recipes import recipe_values

        values = recipe_values(self.recipe, BUILTIN_KINDS.get(self.data))
        if self.kl_anneal_steps is not None or self.kl_anneal_epochs is not None:
            values.update(kl_anneal_steps=0, kl_anneal_epochs=0.0)
        if self.objective != "elbo":
            values.update(kl_anneal_steps=0, kl_anneal_epochs=0.0, kl_start=0.0)
        for name, value in values.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def _check_objective(self, family: str, need) -> None:
        """--objective and the flags that go with it; resolves the default --particles."""
        need(self.objective in OBJECTIVES, "--objective", " or ".join(OBJECTIVES),
             self.objective)
        elbo = self.objective == "elbo"
        need(elbo or family != "rnn", "--objective", "elbo for an RNN (it has no latent "
             "variables: its ELBO is already the exact log-likelihood)", self.objective)
        need(self.particles is None or not elbo, "--particles", "left out with --objective "
             "elbo (it draws one sample; use iwae or fivo)", self.particles)
        need(self.particles is None or self.particles >= 1, "--particles", ">= 1",
             self.particles)
        if not elbo and self.particles is None:
            self.particles = DEFAULT_PARTICLES
        need(self.free_bits >= 0 and math.isfinite(self.free_bits), "--free-bits",
             ">= 0 (0: off)", self.free_bits)
        need(self.free_bits == 0 or family != "rnn", "--free-bits", "0 for an RNN (it has no "
             "KL term)", self.free_bits)
        need(self.resampling is None or self.objective == "fivo", "--resampling",
             "left out unless --objective fivo (only the particle filter resamples)",
             self.resampling)
        need(self.resampling in (None, *RESAMPLING), "--resampling", " or ".join(RESAMPLING),
             self.resampling)
        if self.objective == "fivo" and self.resampling is None:
            self.resampling = "multinomial"
        for flag, value in (("--free-bits", self.free_bits),
                            ("--kl-anneal-steps", self.kl_anneal_steps),
                            ("--kl-anneal-epochs", self.kl_anneal_epochs)):
            need(elbo or value == 0, flag, f"0 with --objective {self.objective} (its bound has "
                 "no separate KL term; they apply to the elbo objective)", value)

    def model_overrides(self) -> dict:
        """The ModelConfig fields the flags set (``posterior``, ``res_q``); the rest come from
        --model and --preset."""
        return {k: v for k, v in (("posterior", self.posterior), ("res_q", self.res_q))
                if v is not None}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def data_stem(data: str) -> str:
    """A file-name-safe name of a ``--data`` argument: a built-in name as it is, a path's stem
    (``data/speech.npz`` -> ``speech``); characters other than letters, digits, ``_.-`` become
    ``_``. The default ``--out`` is ``runs/<stem>-<model>``."""
    p = Path(data)
    name = p.stem if (p.suffix or p.exists()) else data
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "data"


TABLE_FIELDS = ("sequence_column", "time_column", "feature_columns")
"""The fields that say which column of a table is which (``vrnn.data.tables``)."""
DATA_FIELDS = ("data", "seq_len", "frame_size", "sample_rate", "subsample", "max_files",
               "skip_bad", *TABLE_FIELDS)
"""The fields that choose and read the data (``vrnn data info`` takes these flags too)."""

RESUME_OWN = ("out_dir", "resume", "overwrite", "rewind", "device", "progress", "tensorboard")
"""Settings a resumed run takes from its command line, never from its checkpoint."""

CHOICES: dict[str, tuple[str, ...]] = {"model": MODEL_NAMES, "preset": PRESETS,
                                       "posterior": POSTERIORS, "budget_clock": BUDGET_CLOCKS,
                                       "objective": OBJECTIVES, "precision": PRECISIONS,
                                       "recipe": RECIPE_NAMES, "resampling": RESAMPLING}


# -- the command line, read from the fields' docstrings -------------------------------------------

@dataclass(frozen=True)
class Flag:
    """One field of :class:`TrainConfig` as a command-line flag."""

    field: str
    flag: str
    """``--lr``, ``--no-tbptt``, ``--out``."""
    metavar: str | None
    help: str
    """The docstring after the flag, on one line."""
    type: type | None
    """int, float or str (None for a boolean switch)."""
    default: object


_TYPES = {"int": int, "float": float, "str": str}


def train_flags() -> list[Flag]:
    """The flags of every :class:`TrainConfig` field, in declaration order, from the class
    source: each field's annotation, default and docstring."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(TrainConfig)))
    body = tree.body[0].body
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    flags = []
    for node, nxt in zip(body, body[1:]):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        if not (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            raise AssertionError(f"TrainConfig.{name} has no docstring")  # a developer's slip
        head, _, text = " ".join(nxt.value.value.split()).partition(": ")
        flag, *metavar = head.split()
        annotation = ast.unparse(node.annotation).replace(" | None", "")
        flags.append(Flag(name, flag, metavar[0] if metavar else None, text,
                          None if annotation == "bool" else _TYPES[annotation], defaults[name]))
    return flags


def add_train_flags(parser: argparse.ArgumentParser, *, only: Sequence[str] | None = None,
                    defaults: dict[str, object] | None = None,
                    required: Sequence[str] = ()) -> None:
    """Add the flags of :class:`TrainConfig`'s fields to ``parser``.

    Args:
        parser: where the flags go (``dest`` is the field name: ``--out`` -> ``out_dir``).
        only: the field names to add (in TrainConfig's order); default all of them.
        defaults: field name -> default that replaces the field's own (and its help's
            ``(default ...)``).
        required: field names whose flags must be given.
    """
    defaults = dict(defaults or {})
    flags = train_flags()
    names = [f.field for f in flags]
    unknown = [n for n in (*(only or ()), *defaults, *required) if n not in names]
    if unknown:
        raise ValueError(f"not TrainConfig fields: {', '.join(unknown)}")
    wanted = set(only) if only is not None else set(names)
    for f in flags:
        if f.field not in wanted:
            continue
        default = defaults.get(f.field, f.default)
        text = f.help
        if f.field in defaults:
            text = re.sub(r"\s*\(default[^)]*\)", "", text)
        if (f.type is not None and default not in (None, "") and "(default" not in text
                and f.field not in required):
            shown = f"{default:g}" if isinstance(default, float) else default
            text = text.rstrip(".") + f" (default {shown})."
        kw: dict = {"dest": f.field, "default": default, "help": text}
        if f.type is None and default is None:  # on, off or the model's own: --x / --no-x
            kw["action"] = argparse.BooleanOptionalAction
        elif f.type is None:
            kw["action"] = "store_false" if f.flag.startswith("--no-") else "store_true"
        else:
            kw["type"] = str.lower if f.field == "model" else f.type
            if f.field in CHOICES:
                kw["choices"] = CHOICES[f.field]
            if f.metavar:
                kw["metavar"] = f.metavar
        if f.field in required:
            kw["required"] = True
        parser.add_argument(f.flag, **kw)


def typed_fields(argv: Sequence[str]) -> set[str]:
    """The fields whose flags are written out in ``argv`` (the words after ``train``)."""
    p = argparse.ArgumentParser(add_help=False)
    add_train_flags(p)
    for action in p._actions:
        action.default, action.required = argparse.SUPPRESS, False
    typed, _ = p.parse_known_args(list(argv))
    return set(vars(typed))


def config_from_args(fields: dict, argv: Sequence[str]) -> TrainConfig:
    """The :class:`TrainConfig` of a command line.

    Args:
        fields: the parsed flags restricted to TrainConfig's field names (``vars(args)``).
        argv: the command-line words after ``train``: which flags the user typed.

    With ``--resume``, the run's own settings come from its checkpoint and only the flags typed
    in ``argv`` override them (each override that changes a setting is named on stderr), so
    that ``vrnn train --data D --model M --out DIR --resume auto`` continues the run as it was
    started.
    """
    if fields.get("resume") is not None:
        fields = _resumed_fields(fields, typed_fields(argv))
    return TrainConfig(**fields)


def _resumed_fields(fields: dict, typed: set[str]) -> dict:
    from vrnn.store.checkpoint import load_checkpoint

    probe = TrainConfig(**fields)  # resolves the default --out
    path = Path(probe.out_dir) / "last.pt" if fields["resume"] == "auto" else Path(
        fields["resume"])
    if not path.is_file():
        return fields  # 'auto' with nothing to resume: a fresh run
    saved = load_checkpoint(path).get("train_config") or {}
    preset = fields.get("preset", probe.preset)
    if "preset" in typed and saved.get("preset") not in (None, preset):
        raise ValueError(f"--preset {preset}: {path} holds a {saved['preset']} model "
                         f"(a resumed run keeps its size; drop --preset or start a new --out)")
    merged = dict(fields)
    # a recipe typed afresh sets what the user does not type now, not the run's old values
    new_recipe = "recipe" in typed and saved.get("recipe", "default") != fields.get("recipe")
    for key, value in saved.items():
        if key in RESUME_OWN or key not in {f.name for f in dataclasses.fields(TrainConfig)}:
            continue
        if new_recipe and key in RECIPE_FIELDS and key not in typed:
            continue
        if key == "kl_anneal_epochs" and "kl_anneal_steps" in typed and key not in typed:
            merged[key] = 0.0  # --kl-anneal-steps typed now replaces the run's epochs
            continue
        if key in typed:
            if value != merged.get(key):
                print(f"note: --{key.replace('_', '-')} {merged.get(key)} overrides the run's "
                      f"{value}" + ("; the run will not match one that never stopped"
                                    if key in ("batch_size", "seed", "data", "precision")
                                    else ""),
                      file=sys.stderr)
        else:
            merged[key] = value
    return merged

"""Each paper's training hyper-parameters for its own models, as named settings (``--recipe``).

A recipe fills the :class:`~vrnn.train.config.TrainConfig` fields the user left unset (``None``):
what a flag or an argument gives explicitly always wins, and a run's ``config.json`` records the
recipe's name beside the values that were used. ``default`` is this project's own setting (the
VRNN paper's optimiser and clipping, batch 32, no KL annealing); the others are what each paper
(or its authors' released code, where the paper is silent) reports, with the source beside each
value. Where a paper gives different values for different data, the recipe holds one set per
data kind (``audio``, ``strokes``, ``binary``, ``text``): a built-in data set's kind selects it,
and data given as a path gets the recipe's first (its paper's main experiment). A built-in data
set of a kind the paper has no experiment on gets the recipe's values that hold for every kind
and the ``default`` recipe's for the rest (the VRNN paper on polyphonic music: its learning rate
and clipping, this project's batch), not another kind's batch.

What no recipe reproduces, and why:

- the learning-rate schedules of the SRNN's released code (divided by 1.1 or 1.2 per epoch after
  15 or 20 epochs): per epoch, where ``--lr-decay`` is per update;
- element-wise gradient clipping of the SRNN's released code beside its norm clipping
  (``clip_gradients=1000`` on TIMIT, 10 on music), on a loss whose scale is not ours;
- FIVO's loss divided by each sequence's length (``normalize_by_seq_len``): Adam's step does
  not depend on the loss's scale (up to its epsilon), so only the relative weight of sequences of
  different lengths differs;
- the dropout of Pyro's DMM (0.1 on its RNN) and of the released SRNN code (0 in its runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

RECIPE_FIELDS = ("lr", "batch_size", "grad_clip", "grad_clip_value", "kl_anneal_steps",
                 "kl_anneal_epochs", "kl_start", "beta1", "beta2", "weight_decay", "lr_decay")
"""The :class:`~vrnn.train.config.TrainConfig` fields a recipe sets (where the user did not)."""

DEFAULT_VALUES: dict[str, float | int] = {
    "lr": 3e-4,  # Adam's learning rate, Chung et al. 2015 (all experiments)
    "batch_size": 32,  # this project's: between the VRNN paper's 128 (speech) and 20 (strokes)
    "grad_clip": 5.0,  # global gradient norm, Chung et al. 2015 (the authors' code)
    "grad_clip_value": 0.0,  # no element-wise clamp
    "kl_anneal_steps": 0,  # no KL annealing, as Chung et al. 2015
    "kl_anneal_epochs": 0.0,
    "kl_start": 0.0,
    "beta1": 0.9,  # torch.optim.Adam's (and Kingma and Ba's) defaults
    "beta2": 0.999,
    "weight_decay": 0.0,
    "lr_decay": 1.0,  # a constant learning rate
}
"""The ``default`` recipe: ``vrnn train``'s settings before recipes existed."""


@dataclass(frozen=True)
class Recipe:
    """One paper's training setting: ``values`` for every data kind, updated by ``by_kind`` for
    the kinds the paper gives values of (the first of ``by_kind`` is its main experiment)."""

    name: str
    paper: str
    """Who reported it, for ``--help`` and the documentation site."""
    values: dict[str, float | int] = field(default_factory=dict)
    by_kind: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def resolved(self, kind: str | None) -> dict[str, float | int]:
        """Every field of :data:`RECIPE_FIELDS` for data of ``kind`` (None: a path, read as
        the paper's main experiment; a kind the paper has no values for: its values that hold
        for every kind, the ``default`` recipe's for the rest)."""
        main = next(iter(self.by_kind.values()), {})
        return {**DEFAULT_VALUES, **self.values,
                **(main if kind is None else self.by_kind.get(kind, {}))}

    def covers(self, kind: str | None) -> bool:
        """Whether the paper reports a setting for data of ``kind`` (one for every kind, one
        for this kind, or a path, read as its main experiment)."""
        return kind is None or not self.by_kind or kind in self.by_kind


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("default", "this project (the VRNN paper's optimiser, batch 32)"),
    Recipe("vrnn", "Chung et al. 2015", {
        "lr": 3e-4,  # Adam, Section 5 and the authors' code
        "grad_clip": 5.0,  # gradient norm clipped at 5, the authors' code
    }, {
        "audio": {"batch_size": 128},  # Blizzard, TIMIT, Onomatopoeia, Accent
        "strokes": {"batch_size": 20},  # IAM-OnDB
    }),
    Recipe("srnn", "Fraccaro et al. 2016", {
        "lr": 1e-3,  # Adam, Section 5 (released code: log10_lr=-3 on TIMIT and music)
    }, {
        "audio": {  # TIMIT, Section 5 and MainSRNN_timit.py
            "batch_size": 64,
            "kl_start": 0.0,  # "temperature" on the KL rising linearly from 0 ...
            "kl_anneal_epochs": 20.0,  # ... to 1 over the first epochs (tempKL_epochs=20)
            "grad_clip": 3000.0,  # released code: total gradient norm, max_grad_norm=3000
        },
        "binary": {  # polyphonic music, Section 5 and MainSRNN_midi.py
            "batch_size": 16,
            "kl_start": 0.2,  # KL weight from 0.2 (tempKL_start=0.2) ...
            "kl_anneal_epochs": 20.0,  # ... to 1 over 20 epochs (tempKL_epochs=20)
            "grad_clip": 1.0,  # released code: max_grad_norm=1.0
        },
    }),
    Recipe("fivo", "Maddison et al. 2017", {
        # the authors' released code (tensorflow/models research/fivo, README and
        # bin/run_train.sh): Adam, learning rate 1e-4, batch 4, 4 particles (--particles'
        # default), no gradient clipping, no KL annealing
        "lr": 1e-4,
        "batch_size": 4,
        "grad_clip": 0.0,
    }),
    Recipe("dmm", "Krishnan et al. 2017, as Pyro's examples/dmm.py", {
        # Pyro's examples/dmm.py (JSB chorales), its ClippedAdam
        "lr": 3e-4,  # --learning-rate 0.0003
        "beta1": 0.96,  # --beta1 0.96
        "beta2": 0.999,  # --beta2 0.999
        "lr_decay": 0.99996,  # --lr-decay: the rate multiplied by it before every update
        "batch_size": 20,  # --mini-batch-size 20
        "kl_start": 0.2,  # --minimum-annealing-factor 0.2, rising linearly to 1 ...
        "kl_anneal_epochs": 1000.0,  # ... over --annealing-epochs 1000
        # Pyro's loss is summed over its 20 sequences, ours averaged over them: the same
        # gradient is 20 times smaller here, so its element-wise clamp at --clip-norm 10 and
        # its L2 term --weight-decay 2.0 (added to the gradient) are divided by 20
        "grad_clip": 0.0,  # ClippedAdam clamps each element; it has no norm clipping
        "grad_clip_value": 0.5,  # 10 / 20
        "weight_decay": 0.1,  # 2.0 / 20
    }),
)}
RECIPE_NAMES = tuple(RECIPES)
"""The values of ``--recipe``."""


def recipe_values(name: str, kind: str | None = None) -> dict[str, float | int]:
    """The values of recipe ``name`` for data of ``kind``; ValueError naming ``--recipe``
    and every recipe when ``name`` is not one."""
    if name not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPE_NAMES)}, got {name!r}")
    return RECIPES[name].resolved(kind)


def recipe_help() -> str:
    """One line per recipe: its name and its source (``vrnn train --help``)."""
    return "; ".join(f"{r.name} ({r.paper})" for r in RECIPES.values())

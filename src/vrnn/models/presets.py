"""Named model sizes: the paper's, and scaled-down ones that train on two CPU cores.

``paper`` keeps the paper's settings (Section 5 and the authors' code): for speech an LSTM of 2000
units (``paper-blizzard``: 4000), z of 200, four ReLU layers of 500-600 units in each of phi_x,
phi_z, phi_prior, phi_enc and phi_dec; for handwriting an LSTM of 1200 units, z of 50 and one
ReLU layer each (phi_x 250, phi_z 150, encoder 150, prior 150, decoder 250). These need a GPU.
``small`` trains on two CPU cores in minutes, ``tiny`` in seconds (tests and smoke runs).

As in the paper, an RNN baseline is given wider MLPs (phi_x and its output MLP) so that its
parameter count matches the VRNN of the same preset (within 1% for every preset and data kind):
:func:`model_config` does the matching.

The SRNN's ``paper`` sizes are its own paper's: for speech (TIMIT) d and a of 1024 units, z of
256, MLPs of two layers of 512; for binary frames (its MIDI models) 300, 100 and one layer of 500;
x enters unchanged (no phi_x). Elsewhere (``small``, ``tiny``, and pen strokes at ``paper``,
which the SRNN paper did not model) the SRNN keeps the VRNN's z and MLP widths and its units (d
and a alike) are set so that its parameter count matches the VRNN's with the same output at the
same preset, as closely as whole units allow.

The DMM and STORN are sized the same way. The DMM's ``paper`` sizes on binary frames are those of
Pyro's ``examples/dmm.py`` on polyphonic music (z of 100, a gated transition with hidden layers of
200, an emission of two ReLU layers of 100, an inference RNN of 600 units). STORN's paper reports
polyphonic music too, but its sizes could not be checked against its text: its ``paper`` on binary
frames is an assumption, the SRNN paper's MIDI sizes (RNNs of 300 units, generative and
recognition alike, z of 100) with linear maps, and should be read as such. Elsewhere both keep the
VRNN's z and the widths of the MLPs they have (the DMM: transition and emission; STORN: encoder
and decoder; x and z enter unchanged) and take the units (the DMM's inference RNN; STORN's two
RNNs alike) that match the VRNN's parameter count, as closely as whole units allow.
"""

from __future__ import annotations

import dataclasses

import torch

from vrnn.models.base import count_parameters
from vrnn.models.build import build_model
from vrnn.models.config import ModelConfig, parse_model_name

PRESETS = ("paper", "paper-blizzard", "small", "tiny")
DATA_KINDS = ("audio", "strokes", "binary", "text")


def _mlps(phi_x, phi_z, enc, prior, dec) -> dict:
    return {"phi_x": phi_x, "phi_z": phi_z, "encoder": enc, "prior_net": prior, "decoder": dec}


# VRNN sizes per (data kind, preset). The RNN baselines derive from these by width matching.
_SIZES: dict[tuple[str, str], dict] = {
    ("audio", "paper"): {"h_dim": 2000, "z_dim": 200,
                         **_mlps((600,) * 4, (500,) * 4, (500,) * 4, (500,) * 4, (600,) * 4)},
    ("audio", "paper-blizzard"): {"h_dim": 4000, "z_dim": 200,
                                  **_mlps((600,) * 4, (500,) * 4, (500,) * 4, (500,) * 4,
                                          (600,) * 4)},
    ("audio", "small"): {"h_dim": 256, "z_dim": 32,
                         **_mlps((256, 256), (128,), (128,), (128,), (256, 256))},
    ("audio", "tiny"): {"h_dim": 32, "z_dim": 8, **_mlps((32,), (16,), (16,), (16,), (32,))},
    ("strokes", "paper"): {"h_dim": 1200, "z_dim": 50,
                           **_mlps((250,), (150,), (150,), (150,), (250,))},
    ("strokes", "small"): {"h_dim": 256, "z_dim": 16,
                           **_mlps((64,), (64,), (64,), (64,), (128,))},
    ("strokes", "tiny"): {"h_dim": 32, "z_dim": 4, **_mlps((16,), (16,), (16,), (16,), (16,))},
    # Binary frames (piano rolls, digit rows): not in the VRNN paper; sizes of the same family.
    ("binary", "paper"): {"h_dim": 600, "z_dim": 100,
                          **_mlps((300,), (200,), (200,), (200,), (300,))},
    ("binary", "small"): {"h_dim": 128, "z_dim": 16,
                          **_mlps((128,), (64,), (64,), (64,), (128,))},
    ("binary", "tiny"): {"h_dim": 32, "z_dim": 4, **_mlps((32,), (16,), (16,), (16,), (32,))},
    # One-hot characters: not in the VRNN paper. ``paper`` is a char-RNN-sized LSTM (1024 units,
    # a GPU size); ``small`` trains on two CPU cores in minutes; ``tiny`` in seconds.
    ("text", "paper"): {"h_dim": 1024, "z_dim": 128,
                        **_mlps((512,), (256,), (256,), (256,), (512,))},
    ("text", "small"): {"h_dim": 256, "z_dim": 32,
                        **_mlps((128,), (64,), (64,), (64,), (128,))},
    ("text", "tiny"): {"h_dim": 32, "z_dim": 4, **_mlps((32,), (16,), (16,), (16,), (32,))},
}
_SIZES[("strokes", "paper-blizzard")] = _SIZES[("strokes", "paper")]
_SIZES[("binary", "paper-blizzard")] = _SIZES[("binary", "paper")]
_SIZES[("text", "paper-blizzard")] = _SIZES[("text", "paper")]


_SRNN_PAPER: dict[str, dict] = {
    "audio": {"h_dim": 1024, "a_dim": 1024, "z_dim": 256, "phi_x": (), "phi_z": (),
              "prior_net": (512, 512), "encoder": (512, 512), "decoder": (512, 512)},
    "binary": {"h_dim": 300, "a_dim": 300, "z_dim": 100, "phi_x": (), "phi_z": (),
               "prior_net": (500,), "encoder": (500,), "decoder": (500,)},
}


_LINEAR = {"phi_x": (), "phi_z": (), "prior_net": (), "encoder": (), "decoder": ()}
_PAPER_SIZES: dict[str, dict[str, dict]] = {
    "srnn": _SRNN_PAPER,
    "dmm": {"binary": {**_LINEAR, "h_dim": 600, "a_dim": 0, "z_dim": 100, "prior_net": (200,),
                       "decoder": (100, 100)}},
    "storn": {"binary": {**_LINEAR, "h_dim": 300, "a_dim": 300, "z_dim": 100}},
}
"""The families sized by their units, and their own papers' sizes per data kind."""
_READS = {"srnn": ("prior_net", "encoder", "decoder"), "dmm": ("prior_net", "decoder"),
          "storn": ("encoder", "decoder")}
"""The MLPs each of them has, whose widths it takes from the VRNN's preset."""


def _paper_sized(family: str, data_kind: str, preset: str) -> bool:
    return preset.startswith("paper") and data_kind in _PAPER_SIZES[family]


def family_sizes(family: str, data_kind: str, preset: str) -> dict:
    """The layer sizes of an SRNN, DMM or STORN at a preset before matching: its paper's at
    ``paper`` (and ``paper-blizzard``), else the VRNN's z and the widths of the MLPs it has,
    with no phi_x or phi_z."""
    v = vrnn_sizes(data_kind, preset)  # checks the names
    if _paper_sized(family, data_kind, preset):
        return dict(_PAPER_SIZES[family][data_kind])
    return {**_LINEAR, "h_dim": v["h_dim"], "a_dim": 0, "z_dim": v["z_dim"],
            **{k: v[k] for k in _READS[family]}}


def vrnn_sizes(data_kind: str, preset: str) -> dict:
    """The VRNN layer sizes of a preset for a data kind."""
    if data_kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {data_kind!r}; one of {', '.join(DATA_KINDS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return dict(_SIZES[(data_kind, preset)])


def _scaled(widths: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * factor)) for w in widths)


def _count(cfg: ModelConfig) -> int:
    """Parameter count without allocating: the model is built on the meta device."""
    with torch.device("meta"):
        return count_parameters(build_model(cfg))


def _bisect_factor(count, target: int, lo: float) -> tuple[float, float]:
    """Bracket the factor where the non-decreasing ``count(factor)`` crosses ``target``:
    ``count(lo) < target <= count(hi)`` (or the ends of the search range)."""
    hi = max(1.0, 2 * lo)
    while count(hi) < target and hi < 1024:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        if count(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo, hi


MATCH_TOLERANCE = 0.005
"""Relative parameter-count gap below which one common widening factor is good enough."""


def match_rnn_to(target: int, cfg: ModelConfig) -> ModelConfig:
    """Widen the RNN's phi_x and output MLP so its parameter count comes close to ``target``.

    First both MLPs are widened by one common factor, as close to ``target`` as integer widths
    allow (bisection on the factor). That is the whole matching when it lands within
    ``MATCH_TOLERANCE`` of ``target`` (every ``small`` and ``paper`` size at the built-in frame
    sizes), so the baselines of the published results keep their widths. Otherwise the step is
    too coarse: one unit of the output MLP costs as many parameters as the head has outputs
    (K (1 + 2D) for a GMM, 8,020 for 200-sample frames at K = 20: 2.8% of the ``tiny`` audio
    VRNN-GMM). Then the output MLP keeps the largest common factor that stays below ``target``
    and phi_x alone is widened to close the gap, in steps of about D + 1 + 4H parameters a
    unit; the closest count wins.
    """

    def widened(fx: float, fd: float) -> ModelConfig:
        return dataclasses.replace(cfg, phi_x=_scaled(cfg.phi_x, fx),
                                   decoder=_scaled(cfg.decoder, fd))

    def gap(c: ModelConfig) -> int:
        return abs(_count(c) - target)

    lo, hi = _bisect_factor(lambda f: _count(widened(f, f)), target, 0.05)
    best = min((widened(lo, lo), widened(hi, hi)), key=gap)
    if gap(best) <= MATCH_TOLERANCE * target or not cfg.phi_x:
        return best
    glo, ghi = _bisect_factor(lambda g: _count(widened(g, lo)), target, lo)
    return min((best, widened(glo, lo), widened(ghi, lo)), key=gap)


def match_units_to(target: int, cfg: ModelConfig) -> ModelConfig:
    """The model with the number of units ``h_dim`` (and ``a_dim``, when set apart) whose
    parameter count comes closest to ``target``, the other sizes kept."""
    def scaled(f: float) -> ModelConfig:
        return dataclasses.replace(cfg, h_dim=max(1, round(cfg.h_dim * f)),
                                   a_dim=max(1, round(cfg.a_dim * f)) if cfg.a_dim else 0)

    lo, hi = _bisect_factor(lambda f: _count(scaled(f)), target, 0.05)
    return min((scaled(lo), scaled(hi)), key=lambda c: abs(_count(c) - target))


FAMILY_DEFAULTS = {"srnn": {"posterior": "smoothing", "res_q": True},
                   "dmm": {"posterior": "smoothing"}}
"""The SRNN's defaults: its paper's best model, the smoothing posterior with Res_q; the DMM's:
the smoothing inference RNN of its paper's DKS, as Pyro's example."""


def model_config(model: str, *, x_dim: int, data_kind: str = "audio", preset: str = "small",
                 match_parameters: bool = True, **overrides) -> ModelConfig:
    """The config of a paper model (``vrnn-gmm``, ``rnn-gauss``, ...) at a preset size.

    Args:
        model: one of ``vrnn.models.config.MODEL_NAMES``.
        x_dim: frame size D of the data.
        data_kind: 'audio', 'strokes' (pen offsets + pen bit), 'binary' or 'text' (one-hot
            characters).
        preset: one of ``PRESETS``.
        match_parameters: widen an RNN baseline to the parameter count of the VRNN with the same
            output at the same preset, as the paper does; size the units of an SRNN, DMM or
            STORN to it where its paper gives no size (``small``, ``tiny``, pen strokes).
        overrides: any other ``ModelConfig`` field (``posterior``, ``res_q``, ...).
    """
    data_kind = "audio" if data_kind == "real" else data_kind  # the same sizes for real data
    named = parse_model_name(model, data_kind)
    family = named["family"]
    if family in _PAPER_SIZES:
        fields = {**family_sizes(family, data_kind, preset), **FAMILY_DEFAULTS.get(family, {}),
                  **named}
    else:
        fields = {**vrnn_sizes(data_kind, preset), **named}
    fields.update(x_dim=x_dim, **overrides)
    cfg = ModelConfig(**fields)
    if family in _PAPER_SIZES and match_parameters and not _paper_sized(family, data_kind,
                                                                         preset):
        ref = "vrnn-" + model.lower().rsplit("-", 1)[1]
        keep = ("components", "cell", "min_scale", "scale_bias", "learn_h0")
        ref_cfg = model_config(ref, x_dim=x_dim, data_kind=data_kind, preset=preset,
                               **{k: v for k, v in overrides.items() if k in keep})
        return match_units_to(_count(ref_cfg), cfg)
    if cfg.family == "rnn" and match_parameters:
        ref = "vrnn-" + model.lower().rsplit("-", 1)[1]  # the VRNN with the same output
        ref_cfg = model_config(ref, x_dim=x_dim, data_kind=data_kind, preset=preset,
                               **{k: v for k, v in overrides.items() if k != "name"})
        cfg = match_rnn_to(_count(ref_cfg), cfg)
    return cfg


DEFAULT_X_DIM = {"audio": 200, "strokes": 3, "binary": 88, "text": 67}
"""Frame sizes of the built-in data: 200-sample audio frames, pen offsets, 88-key piano rolls,
the built-in ``text`` set's vocabulary of characters."""


def parameter_counts(data_kind: str, preset: str, x_dim: int | None = None) -> dict[str, int]:
    """Parameter count of every model of a data kind at a preset (RNNs matched to the VRNNs)."""
    from vrnn.models.config import models_for_kind

    x_dim = x_dim or DEFAULT_X_DIM[data_kind]
    names = models_for_kind(data_kind)
    return {m: _count(model_config(m, x_dim=x_dim, data_kind=data_kind, preset=preset))
            for m in names}


def format_parameter_table(data_kinds=DATA_KINDS, presets=PRESETS,
                           x_dim: int | None = None) -> str:
    """Markdown: parameter counts per model (rows) and preset (columns), one table per kind."""
    out = []
    for kind in data_kinds:
        counts = {p: parameter_counts(kind, p, x_dim) for p in presets}
        models = list(next(iter(counts.values())))
        out += [f"{kind} (x_dim {x_dim or DEFAULT_X_DIM[kind]}):", "",
                "| model | " + " | ".join(presets) + " |",
                "|---|" + "---:|" * len(presets)]
        out += [f"| {m} | " + " | ".join(f"{counts[p][m]:,}" for p in presets) + " |"
                for m in models]
        out.append("")
    return "\n".join(out).rstrip() + "\n"

"""Typed model configuration: one dataclass that a checkpoint stores and rebuilds its model from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vrnn.models.distributions import OUTPUTS

FAMILIES = ("rnn", "vrnn", "srnn", "dmm", "storn")
POSTERIORS = ("filtering", "smoothing")
PRIORS = ("learned", "standard")
CELLS = ("lstm", "gru")

# The paper's Table 1 names, the Bernoulli models for binary data, the Categorical models for
# text (one-hot characters), and the SRNN (Fraccaro et al. 2016), the DMM (Krishnan et al. 2017)
# and STORN (Bayer and Osendorfer 2014) with the same outputs.
MODEL_NAMES = (
    "rnn-gauss", "rnn-gmm", "vrnn-gauss", "vrnn-gmm", "vrnn-i-gauss",
    "rnn-bernoulli", "vrnn-bernoulli", "vrnn-i-bernoulli", "vrnn-i-gmm",
    "srnn-gauss", "srnn-gmm", "srnn-bernoulli",
    "rnn-categorical", "vrnn-categorical", "vrnn-i-categorical", "srnn-categorical",
    "dmm-gauss", "dmm-gmm", "dmm-bernoulli", "dmm-categorical",
    "storn-gauss", "storn-gmm", "storn-bernoulli", "storn-categorical",
)

KIND_OUTPUTS = {"binary": "bernoulli", "text": "categorical"}
"""Data kinds that admit one output only: binary frames a Bernoulli, one-hot text a Categorical
(and those outputs no other kind)."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model. Widths are tuples of hidden-layer sizes (ReLU MLPs)."""

    family: str = "vrnn"
    """'vrnn' (latent variable per step), 'rnn' (the paper's RNN baselines) or 'srnn' (the SRNN
    of Fraccaro et al. 2016: a deterministic RNN with a stochastic layer stacked on it), 'dmm'
    (the Deep Markov Model of Krishnan et al. 2017) or 'storn' (Bayer and Osendorfer 2014)."""
    x_dim: int = 1
    """Frame size D: values per time step (200 audio samples, 3 for pen strokes, 88 for rolls,
    the vocabulary size for one-hot text)."""
    output: str = "gauss"
    """Output distribution: gauss, gmm, bernoulli, stroke-gauss, stroke-gmm or categorical (one
    symbol of x_dim per frame, one-hot frames)."""
    prior: str = "learned"
    """VRNN prior: 'learned' phi_prior(h_{t-1}) (Eq. 5) or 'standard' N(0, I) (VRNN-I)."""
    cell: str = "lstm"
    """Recurrence f of Eq. 7: 'lstm' (the paper) or 'gru'."""
    h_dim: int = 64
    """Recurrent units H (the SRNN: of its deterministic layer d_t)."""
    z_dim: int = 16
    """Latent size Z (unused by the RNN family)."""
    components: int = 20
    """Mixture components K for gmm / stroke-gmm outputs."""
    phi_x: tuple[int, ...] = (64,)
    """Hidden widths of the feature extractor phi_x(x_t)."""
    phi_z: tuple[int, ...] = (64,)
    """Hidden widths of the feature extractor phi_z(z_t)."""
    encoder: tuple[int, ...] = (64,)
    """Hidden widths of phi_enc(phi_x(x_t), h_{t-1}) (Eq. 9); at least one layer."""
    prior_net: tuple[int, ...] = (64,)
    """Hidden widths of phi_prior(h_{t-1}) (Eq. 5)."""
    decoder: tuple[int, ...] = (64,)
    """Hidden widths of phi_dec(phi_z(z_t), h_{t-1}) (Eq. 6), or of the RNN's output MLP."""
    min_scale: float = 1e-4
    """Floor added to every softplus scale (the original code's 1e-4)."""
    scale_bias: float = 0.6
    """Initial bias of every raw scale output (the original code's 0.6)."""
    learn_h0: bool = True
    """Learn the initial recurrent state h_0 (the DMM: z_0; else zeros)."""
    posterior: str = "filtering"
    """Latent models' q: 'filtering', q(z_t | x_{<=t}, z_{<t}) (the VRNN paper's Eq. 9; the SRNN:
    a_t an MLP of [d_t, x_t]), or 'smoothing', whose encoder also reads a_t of a backward RNN over
    the frames x_{>=t}, so q(z_t | x_{<=T}, z_{<t})."""
    res_q: bool = False
    """SRNN only: the posterior mean is the prior mean plus the encoder's output (Res_q)."""
    a_dim: int = 0
    """Units of a_t: the smoothing posterior's backward RNN, or the SRNN's filtering MLP layer
    (the DMM: of its inference RNN; STORN: of its recognition RNN); 0 takes h_dim."""
    name: str = field(default="")
    """The model's name in the paper's tables (e.g. 'VRNN-GMM'); informational."""
    x_loc: tuple[float, ...] = ()
    """Per-feature location the frames were normalised by before training (``vrnn.fit``), so
    that ``log_prob`` and ``sample`` read and give data on the user's own scale; empty: the
    model reads frames as given (the command line normalises through its data sets)."""
    x_scale: tuple[float, ...] = ()
    """Per-feature scale of that normalisation (positive; empty with ``x_loc``)."""

    def __post_init__(self) -> None:
        for key in ("phi_x", "phi_z", "encoder", "prior_net", "decoder"):
            value = getattr(self, key)
            if isinstance(value, int):
                value = (value,)
            value = tuple(int(v) for v in value)
            if any(v <= 0 for v in value):
                raise ValueError(f"ModelConfig.{key}: widths must be positive, got {value}")
            setattr(self, key, value)
        checks = [("family", FAMILIES), ("prior", PRIORS), ("cell", CELLS), ("output", OUTPUTS)]
        for key, allowed in checks:
            if getattr(self, key) not in allowed:
                raise ValueError(f"ModelConfig.{key} must be one of {', '.join(allowed)}; "
                                 f"got {getattr(self, key)!r}")
        if self.posterior not in POSTERIORS:
            raise ValueError(f"ModelConfig.posterior must be one of {', '.join(POSTERIORS)}; "
                             f"got {self.posterior!r}")
        if self.family == "rnn" and self.posterior != "filtering":
            raise ValueError("ModelConfig.posterior: an RNN has no latent variables to infer")
        if self.res_q and self.family != "srnn":
            raise ValueError(f"ModelConfig.res_q is the SRNN's; a {self.family} has none")
        if self.family in ("srnn", "dmm") and self.prior != "learned":
            raise ValueError(f"ModelConfig.prior: the {self.family.upper()}'s prior is always "
                             f"learned")
        if self.family == "storn" and (self.prior, self.posterior) != ("standard", "filtering"):
            raise ValueError("ModelConfig: STORN's prior is N(0, I) (prior='standard') and its "
                             "q(z_t | x_{<=t}) filtering (posterior='filtering')")
        if int(self.a_dim) < 0:
            raise ValueError(f"ModelConfig.a_dim must be >= 0, got {self.a_dim}")
        for key in ("x_dim", "h_dim", "z_dim", "components"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"ModelConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.family == "vrnn" and not self.encoder:
            raise ValueError("ModelConfig.encoder needs at least one hidden layer for a VRNN")
        if self.output.startswith("stroke") and self.x_dim != 3:
            raise ValueError(f"output {self.output!r} needs x_dim=3 (dx, dy, pen_up), "
                             f"got x_dim={self.x_dim}")
        self.x_loc = tuple(float(v) for v in self.x_loc)
        self.x_scale = tuple(float(v) for v in self.x_scale)
        if len(self.x_loc) != len(self.x_scale) or (self.x_scale and len(self.x_scale)
                                                     != self.x_dim):
            raise ValueError(f"ModelConfig.x_loc and x_scale must both be empty or both have "
                             f"x_dim={self.x_dim} values; got {len(self.x_loc)} and "
                             f"{len(self.x_scale)}")
        if any(not v > 0 for v in self.x_scale):
            raise ValueError("ModelConfig.x_scale must be positive")
        if self.min_scale <= 0:
            raise ValueError(f"ModelConfig.min_scale must be > 0, got {self.min_scale}")

    def to_dict(self) -> dict:
        """Plain values only (lists for tuples), safe for ``torch.load(weights_only=True)``."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        return cls(**d)


def models_for_kind(data_kind: str) -> tuple[str, ...]:
    """The names of ``MODEL_NAMES`` that :func:`parse_model_name` accepts for ``data_kind``."""
    out = []
    for name in MODEL_NAMES:
        try:
            parse_model_name(name, data_kind)
        except ValueError:
            continue
        out.append(name)
    return tuple(out)


def parse_model_name(name: str, data_kind: str = "audio") -> dict:
    """Map a paper model name to config fields for a data kind ('audio', 'strokes', 'binary',
    'text').

    ``vrnn-gauss`` on pen strokes is the bivariate Gaussian with a pen bit (stroke-gauss);
    binary frames take Bernoulli outputs (``rnn-bernoulli``, ``vrnn-bernoulli``, ...), one-hot
    text frames Categorical ones (``rnn-categorical``, ``vrnn-categorical``, ...).

    Returns:
        dict with ``family``, ``prior``, ``output`` and ``name`` (the paper's spelling).
    """
    key = name.lower()
    data_kind = "audio" if data_kind == "real" else data_kind  # real-valued either way
    if key not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    parts = key.split("-")
    family = parts[0]
    prior = "standard" if parts[1] == "i" or family == "storn" else "learned"
    dist = parts[-1]
    words = {"binary": ("binary", "Bernoulli"), "text": ("one-hot text", "Categorical")}
    needed = KIND_OUTPUTS.get(data_kind)
    if needed is not None and dist != needed:
        what, head = words[data_kind]
        raise ValueError(f"{what} data needs a {head} output: use --model "
                         f"{key.rsplit('-', 1)[0]}-{needed} instead of {key}")
    for kind, output in KIND_OUTPUTS.items():
        if dist == output and data_kind != kind:
            what, head = words[kind]
            raise ValueError(f"model {key} has a {head} output, which needs {what} frames; "
                             f"this data is {data_kind!r}")
    output = dist
    if data_kind == "strokes":
        output = "stroke-" + output
    pretty = "-".join(p.upper() if p in (*FAMILIES, "i", "gmm") else p.capitalize()
                      for p in parts)
    return {"family": family, "prior": prior, "output": output, "name": pretty}

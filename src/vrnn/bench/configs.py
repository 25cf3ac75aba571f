"""The benchmark's sizes and targets, and the synthetic data of each size."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from vrnn.models.config import ModelConfig


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark size: every MLP has one hidden layer of width ``hidden`` (= H)."""

    name: str
    x_dim: int
    """Frame size D."""
    hidden: int
    """Recurrent units H, also the width of phi_x, phi_z, encoder, prior and decoder."""
    z_dim: int
    """Latent size Z."""
    steps: int
    """Sequence length T."""
    batch: int
    """Sequences per step B."""
    output: str
    """Output distribution, matching the data kind."""
    kind: str
    """Data kind: 'binary', 'strokes' or 'audio'."""
    family: str = "vrnn"
    """'vrnn', or 'srnn': the SRNN (Fraccaro et al. 2016) at these sizes, d_t and a_t with H units,
    phi_x the identity (as the SRNN paper), prior, encoder and decoder one layer of H; 'dmm': the
    Deep Markov Model (Krishnan et al. 2017), its inference RNN of H units over x itself (as its
    paper), transition and emission MLPs one layer of H; 'storn': STORN (Bayer and Osendorfer
    2014), its generative and recognition RNNs of H units over x and z themselves (as its paper),
    encoder and decoder one layer of H."""
    posterior: str = "filtering"
    """The SRNN's and the DMM's posterior: 'smoothing' (a backward RNN) or 'filtering'."""
    res_q: bool = False
    """The SRNN's Res_q (posterior mean = prior mean + the encoder's output)."""

    def model_config(self) -> ModelConfig:
        w = (self.hidden,)
        if self.family == "srnn":
            return ModelConfig(family="srnn", x_dim=self.x_dim, output=self.output,
                               h_dim=self.hidden, a_dim=self.hidden, z_dim=self.z_dim, phi_x=(),
                               prior_net=w, encoder=w, decoder=w, posterior=self.posterior,
                               res_q=self.res_q, name=f"bench-{self.name}")
        if self.family == "dmm":
            return ModelConfig(family="dmm", x_dim=self.x_dim, output=self.output,
                               h_dim=self.hidden, a_dim=self.hidden, z_dim=self.z_dim, phi_x=(),
                               prior_net=w, decoder=w, posterior=self.posterior,
                               name=f"bench-{self.name}")
        if self.family == "storn":
            return ModelConfig(family="storn", x_dim=self.x_dim, output=self.output,
                               h_dim=self.hidden, a_dim=self.hidden, z_dim=self.z_dim, phi_x=(),
                               phi_z=(), encoder=w, decoder=w, prior="standard",
                               name=f"bench-{self.name}")
        return ModelConfig(family="vrnn", x_dim=self.x_dim, output=self.output,
                           h_dim=self.hidden, z_dim=self.z_dim, phi_x=w, phi_z=w, encoder=w,
                           prior_net=w, decoder=w, name=f"bench-{self.name}")

    def as_vrnn(self) -> BenchConfig:
        """The VRNN of the same sizes (the reference timing of an SRNN, DMM or STORN row)."""
        return replace(self, name=self.name.removeprefix(f"{self.family}-"), family="vrnn",
                       posterior="filtering", res_q=False)


CONFIGS: dict[str, BenchConfig] = {
    # (x_dim, hidden, z, T, batch): binarised MNIST rows, IAM-OnDB pen strokes, 200-sample audio.
    "mnist": BenchConfig("mnist", 28, 100, 16, 28, 128, "bernoulli", "binary"),
    "handwriting": BenchConfig("handwriting", 3, 400, 32, 300, 32, "stroke-gmm", "strokes"),
    "speech": BenchConfig("speech", 200, 1000, 200, 40, 32, "gauss", "audio"),
    "paper-speech": BenchConfig("paper-speech", 200, 2000, 200, 40, 128, "gauss", "audio"),
    # The SRNN at the speech and handwriting sizes, with the SRNN paper's best posterior
    # (smoothing, Res_q): its training step only, against vrnn.models.reference.Literal.
    "srnn-speech": BenchConfig("srnn-speech", 200, 1000, 200, 40, 32, "gauss", "audio",
                               family="srnn", posterior="smoothing", res_q=True),
    "srnn-handwriting": BenchConfig("srnn-handwriting", 3, 400, 32, 300, 32, "stroke-gmm",
                                    "strokes", family="srnn", posterior="smoothing", res_q=True),
    # The DMM (its paper's smoothing posterior) and STORN at the speech size, the same way.
    "dmm-speech": BenchConfig("dmm-speech", 200, 1000, 200, 40, 32, "gauss", "audio",
                              family="dmm", posterior="smoothing"),
    "storn-speech": BenchConfig("storn-speech", 200, 1000, 200, 40, 32, "gauss", "audio",
                                family="storn"),
}

TARGETS: dict[str, tuple[float | None, float | None]] = {
    # config: (speed-up over per-step, fraction of the matmul rate); None: no target
    "mnist": (3.0, None),
    "handwriting": (2.0, 0.6),
    "speech": (1.7, 0.8),
    "paper-speech": (None, None),
    "srnn-speech": (None, None),
    "srnn-handwriting": (None, None),
    "dmm-speech": (None, None),
    "storn-speech": (None, None),
}
BF16_TARGET: dict[str, float] = {
    # config: speed-up of `ours bf16` over `ours` (ratio of medians); absent: no target
    "handwriting": 1.8,
    "speech": 1.8,
    "paper-speech": 1.8,
}
IS_SAMPLES = 40
IS_TARGET = 20.0  # IS with S = 40 in at most this many single ELBO passes
GENERATION_TARGET = 2.0
"""The fast sampler's speed-up over the literal per-step sampler asked for (100 steps, batch 1
and 64)."""
GENERATION_AGREEMENT_ATOL = 1e-9
"""The largest difference allowed between the fast and the literal sampler's sequences from one
seed, in float64 (measured: 1e-15)."""
AGREEMENT_RTOL = 1e-5
BF16_U = 2.0 ** -8
"""bfloat16's unit roundoff: 8 significant bits, rounding to nearest."""
# The bf16 variants' loss against the float32 per-step loss. Their products round both operands
# to bfloat16 (relative error <= u each; on CPU the result too), accumulate in float32 and come
# back as float32; everything after a product is float32. The loss is a sum over the B * T steps
# of log-densities and KLs, each a function of such products, so each term carries a relative
# error of a small multiple of u. Independent rounding errors average out in the sum: their share
# of its relative error falls with the number of roundings, far below u. What does not average is
# the systematic part, rounding's second-order effect through the nonlinearities (exp of the
# log-scales, the squares of the Gaussians), amplified where the loss's terms cancel (the stroke
# likelihood's positive Gaussian log-densities against the rest). Measured on CPU, 2026-12-02,
# per-step bf16 and ours bf16 against fp32 per-step (quick sizes with seeds 0-3, full sizes with
# seed 0): handwriting and srnn-handwriting 3e-4 to 7e-4 (0.08 to 0.17 u), quick and full alike,
# the largest of every config; mnist, speech, paper-speech (full) and srnn-speech at most 5e-5
# (0.013 u).
# Tolerance: u itself, no further from float32 than one bfloat16 rounding of the loss: 6x the
# largest measured difference, while a loss off by 1% (2.6 u), a NaN or inf, or a loss of other
# weights or noise fails. Errors of order u themselves (a cast back to float32 forgotten, so that
# the densities see bf16 outputs: 0.44 u at full handwriting) pass: tests/test_precision.py pins
# those; this check keeps the benchmark from timing a different computation.
BF16_AGREEMENT_RTOL = BF16_U
BF16_MIN_GRAD_DIFF = BF16_U / 8
"""A bf16 variant's gradients must differ from the float32 per-step ones by at least this (the
largest over parameters of the normwise relative difference): every gradient is a chain of bf16
products, each rounding at relative u, so at least one parameter's differs by a good fraction of
u (measured 6e-3 to 0.14, 1.5 u to 37 u); below u / 8 its products did not run in bfloat16
(float32 gives 1e-6)."""
SCALING_CONFIG = "handwriting"  # the sizes of the scaling run


class BenchmarkError(RuntimeError):
    """The variants disagree: timing them would compare different computations."""


def quick_config(cfg: BenchConfig) -> BenchConfig:
    """The same data kind at microscopic sizes (for ``--quick``)."""
    return replace(cfg, hidden=16, z_dim=4, steps=5, batch=3)


def make_batch(cfg: BenchConfig, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Data of the config's kind ``x (B, T, D)`` and reparameterisation noise ``(B, T, Z)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.batch, cfg.steps, cfg.x_dim, generator=gen)
    if cfg.kind == "binary":
        x = (x > 0).float()
    elif cfg.kind == "strokes":
        x[..., :2] *= 0.3
        x[..., 2] = (x[..., 2] > 1.0).float()  # pen up about one step in six
    noise = torch.randn(cfg.batch, cfg.steps, cfg.z_dim, generator=gen)
    return x.to(device), noise.to(device)

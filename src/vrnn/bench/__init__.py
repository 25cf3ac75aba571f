"""Speed benchmark: the library's VRNN training step against a straightforward per-step VRNN,
and the SRNN's, DMM's and STORN's against their per-step readings.

    vrnn benchmark                                   # every configuration (takes a while)
    vrnn benchmark --configs speech --repeats 20 --json bench.json
    vrnn benchmark --configs srnn-speech,srnn-handwriting --no-scaling
    vrnn benchmark --quick                           # microscopic sizes, numbers meaningless
    vrnn benchmark --configs speech --precision fp32 # float32 variants only
    python -m vrnn.bench --device cuda

A VRNN cannot hand its recurrence to a fused sequence kernel (z_t feeds h_t), so public ports call
every network inside a Python loop over time. :class:`vrnn.models.reference.Literal` is that
straightforward version: the same maths, the same modules and weights, every network called at
every step, the KL from ``torch.distributions``. The benchmark times one training step (forward,
backward, Adam) of each variant in one process, interleaved (A B C, B C A, C A B, ...) after
warm-up, and reports medians; before timing it checks that every variant gives the same loss (and
the same gradients) from the same weights and noise.

Variants of the training step (the ablation: what each optimisation is worth):
    per-step          every network inside the loop (``Literal``)
    per-step+compile  the same, with its step function under ``torch.compile`` (``--compile``)
    autograd-loop     ``VRNN`` with ``custom_loop = False``: phi_x, prior, decoder, KL and
                      likelihood moved out of the loop and batched over all steps, input-side
                      products precomputed, one fused product with h_{t-1} per step; autograd
                      differentiates the loop step by step
    ours              ``VRNN`` as shipped: the same plus the hand-written backward of the loop
                      (every weight gradient one product over all B * T rows)

The SRNN (Fraccaro et al. 2016; :mod:`vrnn.models.srnn`) at the speech and handwriting sizes, with
the smoothing posterior and Res_q (configs ``srnn-speech``, ``srnn-handwriting``), has two
variants and its training step only (no evaluation, generation or bound):
    per-step          ``vrnn.models.reference.Literal``: d_t and a_t as fused library RNNs
                      over the whole sequence (they do not read z), every network of the
                      z-chain called per step
    ours              ``SRNN`` as shipped: d_t and the backward RNN of a_t as fused library RNNs
                      over the whole sequence, only the z-chain step by step, its first-layer
                      products with d_t and a_t hoisted out of the loop
and the VRNN's ``ours`` of the same sizes is timed in the same rotation, so that an SRNN step
and a VRNN step compare within one run. The DMM (its smoothing posterior) and STORN at the speech
size (configs ``dmm-speech``, ``storn-speech``) are timed the same way: ``per-step`` is
``Literal`` through the family's step protocol, ``ours`` the model as shipped (the DMM's loop
holds only its combiner's product with z_{t-1}; STORN has no loop over time).

Precision (``--precision fp32,bf16``, both by default where the device multiplies bfloat16
natively): each precision but fp32 adds ``per-step bf16`` and ``ours bf16`` (SRNN configs: its
two variants likewise) to the same rotation, deep copies of the same float32 weights with their
forward under :func:`vrnn.kernels.precision.autocast`, and a bfloat16 ``torch.mm`` for their matmul
rate; their loss must agree with the float32 per-step loss to
:data:`~vrnn.bench.configs.BF16_AGREEMENT_RTOL` (u = 2^-8), and their speed-up over the float32
variant they copy is reported (``speedup_vs_fp32``). With ``--isolated`` (the default) ``ours`` and
``ours bf16`` are also timed once more in a fresh process of their own, as a training process runs
one model (:mod:`~vrnn.bench.isolated`: the other variants' steps leave the shared process slower,
``ours bf16`` most), reported beside the rotation's figures.

Also measured: the float32 (and bfloat16) matrix-multiply rate of the machine (``torch.mm``, in
the same rotation, so it sees the same load), achieved GFLOP/s counted analytically (2 m n k per
product, times 3 for forward and backward), a bound from the rate of the thin (B-row) products the
recurrence cannot avoid, importance-sampled evaluation with S = 40 against single ELBO passes,
generation (``model.sample``'s fast sampler against the literal per-step one, side by side, once
they draw the same sequences), memory kept for the backward pass, and the cost per time step as T
and B grow.

Modules: :mod:`~vrnn.bench.configs` (sizes, targets, data), :mod:`~vrnn.bench.variants` (the
variants and their agreement check), :mod:`~vrnn.bench.measure` (timing, FLOP counts, profile,
memory), :mod:`~vrnn.bench.suites` (training, evaluation, generation, scaling),
:mod:`~vrnn.bench.isolated` (the precision pair in a process of its own),
:mod:`~vrnn.bench.machine`, :mod:`~vrnn.bench.report` (text and Markdown) and
:mod:`~vrnn.bench.cli` (flags, the run, JSON).
"""

from vrnn.bench.cli import build_parser, main, read_json, run, write_json
from vrnn.bench.configs import (
    BF16_AGREEMENT_RTOL,
    BF16_TARGET,
    CONFIGS,
    IS_SAMPLES,
    TARGETS,
    BenchConfig,
    BenchmarkError,
    make_batch,
    quick_config,
)
from vrnn.bench.measure import (
    interleaved,
    is_flop_ratio,
    matmul_macs,
    paired_ratio,
    saved_bytes,
    srnn_matmul_macs,
    srnn_training_flops,
    training_flops,
)
from vrnn.bench.report import format_report, markdown_report
from vrnn.bench.suites import is_chunk, is_with_repeat
from vrnn.bench.variants import Variant, build_variants, check_agreement

__all__ = [
    "BF16_AGREEMENT_RTOL", "BF16_TARGET", "CONFIGS", "IS_SAMPLES", "TARGETS", "BenchConfig",
    "BenchmarkError", "Variant",
    "build_parser", "build_variants", "check_agreement", "format_report", "interleaved",
    "is_chunk", "is_flop_ratio", "is_with_repeat", "main", "make_batch", "markdown_report",
    "matmul_macs", "paired_ratio", "quick_config", "read_json", "run", "saved_bytes",
    "srnn_matmul_macs", "srnn_training_flops", "training_flops", "write_json",
]

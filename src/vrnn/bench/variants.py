"""The training-step variants the benchmark times, built from one set of weights, and the check
that they compute the same loss and gradients before any of them is timed.

    per-step          :class:`vrnn.models.reference.Literal`: every network inside the loop
    per-step+compile  the same, its ``step`` under ``torch.compile``
    autograd-loop     ``VRNN`` with ``custom_loop = False`` (autograd through the batched loop)
    ours              ``VRNN`` as shipped (the hand-written backward of the loop)
    per-step bf16     ``per-step`` with its forward under
                      ``vrnn.kernels.precision.autocast(.., "bf16")`` (every product in
                      bfloat16, float32 accumulation, float32 weights)
    ours bf16         ``ours`` likewise (its hand-written loop reads the autocast state)

The bf16 pair exists for each precision of ``precisions`` other than fp32 (``--precision``),
each on its own deep copy of the same initial weights; it is checked against the float32
per-step loss with :data:`~vrnn.bench.configs.BF16_AGREEMENT_RTOL` instead of
:data:`~vrnn.bench.configs.AGREEMENT_RTOL`.

An SRNN configuration (``family = 'srnn'``) has two: ``per-step``
(:class:`vrnn.models.reference.Literal`: d_t and a_t as fused library RNNs, every network of
the z-chain per step) and ``ours`` (:class:`vrnn.models.srnn.SRNN` as shipped: the same fused
RNNs, only the z-chain step by step with its first-layer products hoisted). Its row also times
the VRNN's ``ours`` of the same sizes (:func:`vrnn_reference`), for the ratio of an SRNN step to a
VRNN step. With bf16 it too gets ``per-step bf16`` and ``ours bf16``.

A DMM or STORN configuration (``family = 'dmm'`` or ``'storn'``) has the same two, and the same
VRNN beside them: ``per-step`` (``Literal`` through the family's step protocol: the DMM's
inference RNN fused over the sequence, its combiner, transition and emission per step; STORN's
recognition RNN fused, its generative RNN, encoder and emission per step) and ``ours`` (the model
as shipped: the DMM's loop holds only the combiner's product with z_{t-1} and the draw, STORN
has no loop over time).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vrnn.bench.configs import (
    AGREEMENT_RTOL,
    BF16_AGREEMENT_RTOL,
    BF16_MIN_GRAD_DIFF,
    BenchConfig,
    BenchmarkError,
    make_batch,
)
from vrnn.kernels import precision as precision_mod
from vrnn.models.base import SequenceModel
from vrnn.models.build import build_model
from vrnn.models.reference import Literal
from vrnn.models.vrnn import VRNN

BASELINE = "per-step"


@dataclass
class Variant:
    """One way of computing the training loss, over its own copy of the weights."""

    name: str
    module: nn.Module
    """What the optimiser trains: a :class:`VRNN` or a :class:`Literal` around one (an
    :class:`~vrnn.models.srnn.SRNN`, :class:`~vrnn.models.dmm.DMM` or
    :class:`~vrnn.models.storn.STORN`, or a :class:`Literal` around one)."""
    net: SequenceModel
    """The model holding ``module``'s weights (the same parameter names in every variant)."""
    loss: Callable[[], Tensor]
    """The negative ELBO of the benchmark's batch with its fixed noise."""
    precision: str = "fp32"
    """The dtype policy of its products (:mod:`vrnn.kernels.precision`): the forward of ``loss``
    runs under ``autocast(module, precision, device)``."""

    @property
    def fp32_name(self) -> str:
        """The float32 variant this one is a lower-precision copy of (itself for fp32)."""
        return self.name.removesuffix(f" {self.precision}")


def make_optimizer(params) -> torch.optim.Optimizer:
    """Adam (the paper's optimiser), fused where this PyTorch supports it; the same for every
    variant, so that the comparison is of the models."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=3e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=3e-4)


def train_step(loss_fn: Callable[[], Tensor], opt: torch.optim.Optimizer) -> Callable[[], float]:
    """One training step (forward, backward, optimiser) as a function of nothing, for timing."""

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return 0.0

    return step


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def compile_step(ref: Literal, x: Tensor, noise: Tensor) -> dict:
    """Put ``ref.step`` under ``torch.compile`` (the instance attribute shadows the method, so
    ``ref.loss`` calls the compiled step) and compile it with one forward and backward pass.

    First with ``fullgraph=True``, so that anything breaking the graph is an error rather than a
    silent fallback to eager; if that fails, once more without it, and the graph breaks are
    counted. The dynamo reset keeps earlier configurations from filling its cache. Returns the
    ``compile`` record of the JSON; raises what the second attempt raised when neither works."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    eager = ref.step
    fullgraph_error = None
    for fullgraph in (True, False):
        dynamo.reset()
        counters.clear()
        ref.step = torch.compile(eager, fullgraph=fullgraph, dynamic=False)
        try:
            t0 = time.perf_counter()
            ref.loss(x, noise).backward()
        except Exception as e:
            del ref.step  # back to the eager method
            if not fullgraph:
                raise
            fullgraph_error = _first_line(e)
            continue
        info = {"seconds": time.perf_counter() - t0, "fullgraph": fullgraph,
                "graphs": int(counters["stats"]["unique_graphs"]),
                "graph_breaks": int(sum(counters["graph_break"].values()))}
        if fullgraph_error is not None:
            info["fullgraph_error"] = fullgraph_error
        return info
    raise AssertionError("unreachable")


def low_precision_variants(per_step: nn.Module, ours: nn.Module, run_per_step: Callable,
                           run_ours: Callable, precisions, device: torch.device
                           ) -> dict[str, Variant]:
    """``per-step P`` and ``ours P`` for each precision P of ``precisions`` but fp32: deep copies
    of the float32 ``per_step`` and ``ours`` modules (so the same initial weights, float32, each
    its own), their losses (``run_per_step(module)``, ``run_ours(module)``) computed under
    ``vrnn.kernels.precision.autocast(module, P, device)``: the forward's products in P, and so the
    backward's. ``module`` owns every layer, so that autocast hooks them all."""
    out: dict[str, Variant] = {}
    for p in precisions:
        if p == "fp32":
            continue
        if p not in precision_mod.PRECISIONS:
            raise ValueError(f"--precision: unknown {p!r}")
        for base, fp32, run in ((BASELINE, per_step, run_per_step), ("ours", ours, run_ours)):
            module = copy.deepcopy(fp32)
            net = module.net if isinstance(module, Literal) else module

            def loss(module=module, run=run, p=p) -> Tensor:
                with precision_mod.autocast(module, p, device):
                    return run(module)

            out[f"{base} {p}"] = Variant(f"{base} {p}", module, net, loss, p)
    return out


def build_variants(cfg: BenchConfig, device: torch.device, compile_baseline: bool,
                   seed: int = 0, precisions=("fp32",)
                   ) -> tuple[dict[str, Variant], Tensor, Tensor, dict]:
    """The training-step variants, all from one set of initial weights, and the batch ``x (B, T,
    D)`` with its noise ``(B, T, Z)``. ``info`` holds the ``compile`` record when
    ``compile_baseline``; a compiler that fails is reported there and its variant left out.
    An SRNN, DMM or STORN configuration gives ``per-step`` and ``ours`` (no compiled variant).
    Each precision of ``precisions`` but fp32 adds ``per-step P`` and ``ours P``
    (:func:`low_precision_variants`), after the float32 ones."""
    if cfg.family != "vrnn":
        return (*build_family_variants(cfg, device, seed, precisions), {})
    torch.manual_seed(seed)
    ours = VRNN(cfg.model_config()).to(device)
    x, noise = make_batch(cfg, device, seed)
    autograd_loop = copy.deepcopy(ours)
    autograd_loop.custom_loop = False
    per_step = Literal(ours, copy=True)
    variants = {BASELINE: Variant(BASELINE, per_step, per_step.net,
                                  lambda: per_step.loss(x, noise))}
    info: dict = {}
    if compile_baseline:
        compiled = Literal(ours, copy=True)
        try:
            info["compile"] = compile_step(compiled, x, noise)
            variants["per-step+compile"] = Variant("per-step+compile", compiled, compiled.net,
                                                   lambda: compiled.loss(x, noise))
        except Exception as e:  # no compiler, unsupported op...: report, do not time
            info["compile"] = {"error": _first_line(e)}
    variants["autograd-loop"] = Variant("autograd-loop", autograd_loop, autograd_loop,
                                        lambda: autograd_loop.loss(x, noise=noise)[0])
    variants["ours"] = Variant("ours", ours, ours, lambda: ours.loss(x, noise=noise)[0])
    variants |= low_precision_variants(per_step, ours, lambda m: m.loss(x, noise),
                                       lambda m: m.loss(x, noise=noise)[0], precisions, device)
    return variants, x, noise, info


def build_family_variants(cfg: BenchConfig, device: torch.device, seed: int = 0,
                          precisions=("fp32",)) -> tuple[dict[str, Variant], Tensor, Tensor]:
    """The variants of an SRNN, DMM or STORN configuration (``per-step`` = :class:`Literal`,
    ``ours`` = the model as shipped, and their copies at each precision of ``precisions`` but
    fp32) from one set of initial weights, and the batch with its noise."""
    torch.manual_seed(seed)
    ours = build_model(cfg.model_config()).to(device)
    x, noise = make_batch(cfg, device, seed)
    per_step = Literal(ours, copy=True)
    variants = {BASELINE: Variant(BASELINE, per_step, per_step.net,
                                  lambda: per_step.loss(x, noise)),
                "ours": Variant("ours", ours, ours, lambda: ours.loss(x, noise=noise)[0])}
    variants |= low_precision_variants(per_step, ours, lambda m: m.loss(x, noise),
                                       lambda m: m.loss(x, noise=noise)[0], precisions, device)
    return variants, x, noise


def vrnn_reference(cfg: BenchConfig, device: torch.device, seed: int = 0) -> Variant:
    """The VRNN's ``ours`` at ``cfg``'s sizes, on the batch of those sizes: timed beside an SRNN,
    DMM or STORN row (not a variant of it: another model, so no agreement check)."""
    vcfg = cfg.as_vrnn()
    torch.manual_seed(seed)
    model = VRNN(vcfg.model_config()).to(device)
    x, noise = make_batch(vcfg, device, seed)
    return Variant("vrnn ours", model, model, lambda: model.loss(x, noise=noise)[0])


def _grads(loss: Tensor, params: dict[str, Tensor]) -> list[Tensor]:
    """Gradients of ``loss`` for every parameter, zeros for one it does not use."""
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]


def check_agreement(variants: dict[str, Variant], rtol: float = AGREEMENT_RTOL,
                    bf16_rtol: float = BF16_AGREEMENT_RTOL) -> dict:
    """Loss and gradients of every variant against the per-step version, from the same weights
    and noise. Raises :class:`BenchmarkError` when a loss differs by more than ``rtol``; the
    gradients' largest relative difference (in norm, over parameters) is recorded.

    A bf16 variant (``per-step bf16``, ``ours bf16``) is held to ``bf16_rtol`` against the same
    float32 per-step loss (:data:`~vrnn.bench.configs.BF16_AGREEMENT_RTOL` says why), and its
    gradients must differ from the float32 ones by at least
    :data:`~vrnn.bench.configs.BF16_MIN_GRAD_DIFF` somewhere: closer than that, its products did
    not run in bfloat16, and timing it would time float32 under another name."""
    ref = variants[BASELINE]
    ref_loss = ref.loss()
    ref_params = dict(ref.net.named_parameters())
    ref_grads = dict(zip(ref_params, _grads(ref_loss, ref_params)))
    out = {"per_step_loss": ref_loss.item(), "rtol": rtol, "variants": {}}
    if any(v.precision != "fp32" for v in variants.values()):
        out["bf16_rtol"] = bf16_rtol
    for name, v in variants.items():
        if name == BASELINE:
            continue
        loss = v.loss()
        params = dict(v.net.named_parameters())
        grads = _grads(loss, params)
        rel = abs(loss.item() - ref_loss.item()) / max(abs(ref_loss.item()), 1e-30)
        grad_rel = max(((g - ref_grads[n]).norm() / ref_grads[n].norm().clamp_min(1e-30)).item()
                       for n, g in zip(params, grads) if ref_grads[n].abs().sum() > 0)
        record = {"loss": loss.item(), "loss_rel_diff": rel, "grad_max_rel_diff": grad_rel}
        tol = rtol
        if v.precision != "fp32":
            tol = bf16_rtol
            record |= {"precision": v.precision, "rtol": tol}
        out["variants"][name] = record
        if not rel <= tol:
            raise BenchmarkError(f"{name} loss {loss.item():.8g} differs from the per-step "
                                 f"loss {ref_loss.item():.8g} (relative {rel:.2e} > {tol:g})")
        if v.precision != "fp32" and not grad_rel >= BF16_MIN_GRAD_DIFF:
            raise BenchmarkError(f"{name}: its gradients equal the float32 per-step ones to "
                                 f"{grad_rel:.1e} (< {BF16_MIN_GRAD_DIFF:.1e}): its products "
                                 f"did not run in {v.precision}")
    out["passed"] = True
    return out

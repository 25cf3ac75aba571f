"""The training-step variants the benchmark times, built from one set of weights, and the check
that they compute the same loss and gradients before any of them is timed.

    per-step          :class:`vrnn.reference.LiteralVRNN`: every network inside the loop
    per-step+compile  the same, its ``step`` under ``torch.compile``
    autograd-loop     ``VRNN`` with ``custom_loop = False`` (autograd through the batched loop)
    ours              ``VRNN`` as shipped (the hand-written backward of the loop)

An SRNN configuration (``family = 'srnn'``) has two: ``per-step``
(:class:`vrnn.reference.LiteralSRNN`: d_t stepped one frame at a time through the library RNN,
every network of the z-chain per step) and ``ours`` (:class:`vrnn.srnn.SRNN` as shipped: d_t and
the smoothing backward RNN as fused library RNNs over the whole sequence, only the z-chain step
by step with its first-layer products hoisted). Its row also times the VRNN's ``ours`` of the
same sizes (:func:`vrnn_reference`), for the ratio of an SRNN step to a VRNN step.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vrnn.bench.configs import AGREEMENT_RTOL, BenchConfig, BenchmarkError, make_batch
from vrnn.model import VRNN, SequenceModel
from vrnn.reference import LiteralSRNN, LiteralVRNN
from vrnn.srnn import SRNN

BASELINE = "per-step"


@dataclass
class Variant:
    """One way of computing the training loss, over its own copy of the weights."""

    name: str
    module: nn.Module
    """What the optimiser trains: a :class:`VRNN` or a :class:`LiteralVRNN` around one (an
    :class:`SRNN` or a :class:`LiteralSRNN`)."""
    net: SequenceModel
    """The model holding ``module``'s weights (the same parameter names in every variant)."""
    loss: Callable[[], Tensor]
    """The negative ELBO of the benchmark's batch with its fixed noise."""


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


def compile_step(ref: LiteralVRNN, x: Tensor, noise: Tensor) -> dict:
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


def build_variants(cfg: BenchConfig, device: torch.device, compile_baseline: bool,
                   seed: int = 0) -> tuple[dict[str, Variant], Tensor, Tensor, dict]:
    """The training-step variants, all from one set of initial weights, and the batch ``x (B, T,
    D)`` with its noise ``(B, T, Z)``. ``info`` holds the ``compile`` record when
    ``compile_baseline``; a compiler that fails is reported there and its variant left out.
    An SRNN configuration gives ``per-step`` and ``ours`` (no compiled variant)."""
    if cfg.family == "srnn":
        return (*build_srnn_variants(cfg, device, seed), {})
    torch.manual_seed(seed)
    ours = VRNN(cfg.model_config()).to(device)
    x, noise = make_batch(cfg, device, seed)
    autograd_loop = copy.deepcopy(ours)
    autograd_loop.custom_loop = False
    per_step = LiteralVRNN(ours, copy=True)
    variants = {BASELINE: Variant(BASELINE, per_step, per_step.net,
                                  lambda: per_step.loss(x, noise))}
    info: dict = {}
    if compile_baseline:
        compiled = LiteralVRNN(ours, copy=True)
        try:
            info["compile"] = compile_step(compiled, x, noise)
            variants["per-step+compile"] = Variant("per-step+compile", compiled, compiled.net,
                                                   lambda: compiled.loss(x, noise))
        except Exception as e:  # no compiler, unsupported op...: report, do not time
            info["compile"] = {"error": _first_line(e)}
    variants["autograd-loop"] = Variant("autograd-loop", autograd_loop, autograd_loop,
                                        lambda: autograd_loop.loss(x, noise=noise)[0])
    variants["ours"] = Variant("ours", ours, ours, lambda: ours.loss(x, noise=noise)[0])
    return variants, x, noise, info


def build_srnn_variants(cfg: BenchConfig, device: torch.device,
                        seed: int = 0) -> tuple[dict[str, Variant], Tensor, Tensor]:
    """The SRNN's variants (``per-step`` = :class:`LiteralSRNN`, ``ours`` = :class:`SRNN`) from
    one set of initial weights, and the batch with its noise."""
    torch.manual_seed(seed)
    ours = SRNN(cfg.model_config()).to(device)
    x, noise = make_batch(cfg, device, seed)
    per_step = LiteralSRNN(ours, copy=True)
    return {BASELINE: Variant(BASELINE, per_step, per_step.net, lambda: per_step.loss(x, noise)),
            "ours": Variant("ours", ours, ours, lambda: ours.loss(x, noise=noise)[0])}, x, noise


def vrnn_reference(cfg: BenchConfig, device: torch.device, seed: int = 0) -> Variant:
    """The VRNN's ``ours`` at ``cfg``'s sizes, on the batch of those sizes: timed beside an SRNN
    row (not a variant of it: another model, so no agreement check)."""
    vcfg = cfg.as_vrnn()
    torch.manual_seed(seed)
    model = VRNN(vcfg.model_config()).to(device)
    x, noise = make_batch(vcfg, device, seed)
    return Variant("vrnn ours", model, model, lambda: model.loss(x, noise=noise)[0])


def _grads(loss: Tensor, params: dict[str, Tensor]) -> list[Tensor]:
    """Gradients of ``loss`` for every parameter, zeros for one it does not use."""
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]


def check_agreement(variants: dict[str, Variant], rtol: float = AGREEMENT_RTOL) -> dict:
    """Loss and gradients of every variant against the per-step version, from the same weights
    and noise. Raises :class:`BenchmarkError` when a loss differs by more than ``rtol``; the
    gradients' largest relative difference (in norm, over parameters) is recorded."""
    ref = variants[BASELINE]
    ref_loss = ref.loss()
    ref_params = dict(ref.net.named_parameters())
    ref_grads = dict(zip(ref_params, _grads(ref_loss, ref_params)))
    out = {"per_step_loss": ref_loss.item(), "rtol": rtol, "variants": {}}
    for name, v in variants.items():
        if name == BASELINE:
            continue
        loss = v.loss()
        params = dict(v.net.named_parameters())
        grads = _grads(loss, params)
        rel = abs(loss.item() - ref_loss.item()) / max(abs(ref_loss.item()), 1e-30)
        grad_rel = max(((g - ref_grads[n]).norm() / ref_grads[n].norm().clamp_min(1e-30)).item()
                       for n, g in zip(params, grads) if ref_grads[n].abs().sum() > 0)
        out["variants"][name] = {"loss": loss.item(), "loss_rel_diff": rel,
                                 "grad_max_rel_diff": grad_rel}
        if not rel <= rtol:
            raise BenchmarkError(f"{name} loss {loss.item():.8g} differs from the per-step "
                                 f"loss {ref_loss.item():.8g} (relative {rel:.2e} > {rtol:g})")
    out["passed"] = True
    return out

"""Speed benchmark: the library's VRNN training step against a straightforward per-step VRNN.

    vrnn benchmark                                   # every configuration (takes a while)
    vrnn benchmark --configs speech --repeats 20 --json bench.json
    vrnn benchmark --quick                           # microscopic sizes, numbers meaningless
    python -m vrnn.bench --device cuda

A VRNN cannot hand its recurrence to a fused sequence kernel (z_t feeds h_t), so public ports call
every network inside a Python loop over time. ``PerStepVRNN`` below is that straightforward
version: the same maths, the same modules and weights, every network called at every step. The
benchmark times one training step (forward, backward, Adam) of each variant in one process,
interleaved (A B C, B C A, C A B, ...) after warm-up, and reports medians; before timing it checks
that every variant gives the same loss (and the same gradients) from the same weights and noise.

Variants of the training step (the ablation: what each optimisation is worth):
    per-step          every network inside the loop (``PerStepVRNN``)
    per-step+compile  the same, with the step function under ``torch.compile`` (``--compile``)
    autograd-loop     ``VRNN`` with ``custom_loop = False``: phi_x, prior, decoder, KL and
                      likelihood moved out of the loop and batched over all steps, input-side
                      products precomputed, one fused product with h_{t-1} per step; autograd
                      differentiates the loop step by step
    ours              ``VRNN`` as shipped: the same plus the hand-written backward of the loop
                      (every weight gradient one product over all B * T rows)

Also measured: the float32 matrix-multiply rate of the machine (``torch.mm``, in the same
rotation, so it sees the same load), achieved GFLOP/s counted analytically (2 m n k per product,
times 3 for forward and backward), a bound from the rate of the thin (B-row) products the
recurrence cannot avoid, importance-sampled evaluation with S = 40 against single ELBO passes,
generation speed, memory kept for the backward pass, and the cost per time step as T and B grow.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from vrnn.config import ModelConfig
from vrnn.evaluate import (
    DEFAULT_ROW_BUDGET,
    DEFAULT_STEP_BUDGET,
    estimate_log_likelihood,
    log_mean_exp,
)
from vrnn.model import VRNN, masked_sum

# -- configurations ------------------------------------------------------------------------------


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

    def model_config(self) -> ModelConfig:
        w = (self.hidden,)
        return ModelConfig(family="vrnn", x_dim=self.x_dim, output=self.output,
                           h_dim=self.hidden, z_dim=self.z_dim, phi_x=w, phi_z=w, encoder=w,
                           prior_net=w, decoder=w, name=f"bench-{self.name}")


CONFIGS: dict[str, BenchConfig] = {
    # (x_dim, hidden, z, T, batch): binarised MNIST rows, IAM-OnDB pen strokes, 200-sample audio.
    "mnist": BenchConfig("mnist", 28, 100, 16, 28, 128, "bernoulli", "binary"),
    "handwriting": BenchConfig("handwriting", 3, 400, 32, 300, 32, "stroke-gmm", "strokes"),
    "speech": BenchConfig("speech", 200, 1000, 200, 40, 32, "gauss", "audio"),
    "paper-speech": BenchConfig("paper-speech", 200, 2000, 200, 40, 128, "gauss", "audio"),
}

TARGETS = {
    # config: (speed-up over per-step, fraction of the matmul rate); None: no target
    "mnist": (3.0, None),
    "handwriting": (2.0, 0.6),
    "speech": (1.7, 0.8),
    "paper-speech": (None, None),
}
IS_SAMPLES = 40
IS_TARGET = 20.0  # IS with S = 40 in at most this many single ELBO passes
AGREEMENT_RTOL = 1e-5


def quick_config(cfg: BenchConfig) -> BenchConfig:
    """The same data kind at microscopic sizes (for ``--quick``)."""
    return replace(cfg, hidden=16, z_dim=4, steps=5, batch=3)


class BenchmarkError(RuntimeError):
    """The variants disagree: timing them would compare different computations."""


# -- the straightforward version -----------------------------------------------------------------


def _gauss_kl(loc_q: Tensor, scale_q: Tensor, loc_p: Tensor, scale_p: Tensor) -> Tensor:
    """KL(N(loc_q, scale_q^2) || N(loc_p, scale_p^2)) summed over the last axis -> ``(...)``."""
    var_ratio = (scale_q / scale_p).square()
    t1 = ((loc_q - loc_p) / scale_p).square()
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log()).sum(-1)


class PerStepVRNN(nn.Module):
    """The VRNN as public ports write it: at every time step, phi_x, the encoder, the prior, the
    reparameterised sample, phi_z, the decoder, its likelihood, the KL and the cell, each called on
    ``(B, .)`` slices inside the Python loop (Eq. 5-9 read literally). Holds its own copy of a
    :class:`VRNN`'s modules, so it starts from the same weights."""

    def __init__(self, model: VRNN):
        super().__init__()
        self.net = copy.deepcopy(model)
        self.lstm = model.config.cell == "lstm"

    def step(self, x_t: Tensor, eps_t: Tensor, h: Tensor, c: Tensor | None):
        """One time step: ``x_t (B, D)``, ``eps_t (B, Z)``, ``h, c (B, H)`` -> the step's ELBO
        term ``(B,)`` and the next ``h, c``."""
        net = self.net
        fx = net.phi_x(x_t)  # (B, X)
        loc, scale = net.encoder(torch.cat([fx, h], -1))  # Eq. 9
        if net.prior is None:
            p_loc, p_scale = torch.zeros_like(loc), torch.ones_like(scale)
        else:
            p_loc, p_scale = net.prior(h)  # Eq. 5
        z = loc + scale * eps_t  # (B, Z)
        fz = net.phi_z(z)
        log_px = net.decoder(torch.cat([fz, h], -1)).log_prob(x_t)  # Eq. 6, (B,)
        term = log_px - _gauss_kl(loc, scale, p_loc, p_scale)
        inp = torch.cat([fx, fz], -1)
        if self.lstm:
            h, c = net.cell(inp, (h, c))  # Eq. 7
        else:
            h = net.cell(inp, h)
        return term, h, c

    def loss(self, x: Tensor, noise: Tensor, step: Callable | None = None) -> Tensor:
        """The negative ELBO summed over time, averaged over sequences (``VRNN.loss``)."""
        step = self.step if step is None else step
        B, T, _ = x.shape
        state = self.net.init_state(B)
        h, c = state[0], state[1] if self.lstm else None
        total = x.new_zeros(B)
        for t in range(T):
            term, h, c = step(x[:, t], noise[:, t], h, c)
            total = total + term
        return -total.mean()


# -- counting ----------------------------------------------------------------------------------


def matmul_macs(model: VRNN) -> dict[str, int]:
    """Multiply-adds per sequence step of the forward pass: every weight matrix is applied once per
    step, so the count is the number of weight entries. ``loop``: the products inside the
    recurrence (with h_{t-1}, the encoder after its first layer, phi_z and the cell's product with
    phi_z(z_t)); ``batched``: the rest, which depends on x alone or runs after the loop."""
    c = model.config
    X = model.phi_x.out_dim
    enc = model.encoder.mlp.layers
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    total += model.cell.weight_ih.numel() + model.cell.weight_hh.numel()
    loop = enc[0].out_features * c.h_dim + model.cell.weight_hh.numel()
    loop += sum(m.weight.numel() for m in enc[1:]) + model.encoder.gaussian.linear.weight.numel()
    loop += sum(m.weight.numel() for m in model.phi_z.layers)
    loop += model.cell.weight_ih.shape[0] * (model.cell.weight_ih.shape[1] - X)
    return {"total": total, "loop": loop, "batched": total - loop}


def training_flops(model: VRNN, batch: int, steps: int) -> dict[str, float]:
    """Analytic FLOPs of one training step: 2 m n k per product, x3 for forward + backward.
    ``loop``: the thin products the recurrence cannot batch (forward and input gradients, B rows
    each); weight gradients are counted with the batched products."""
    m = matmul_macs(model)
    rows = batch * steps
    return {"total": 6.0 * m["total"] * rows, "loop": 4.0 * m["loop"] * rows,
            "batched": 6.0 * m["total"] * rows - 4.0 * m["loop"] * rows}


# -- timing ------------------------------------------------------------------------------------


def _sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                sync: Callable[[], None]) -> dict[str, list[float]]:
    """Seconds per call of each function, run in rounds (A B C, B C A, C A B, ...) so that slow
    drifts of the machine (other processes, clocks) fall on every variant alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            sync()
            t0 = time.perf_counter()
            fns[n]()
            sync()
            times[n].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``num[r] / den[r]``: robust to load that changes between rounds."""
    return median([a / b for a, b in zip(num, den)])


def sgemm_fn(n: int, device: torch.device) -> tuple[Callable[[], object], float]:
    """A float32 ``n x n x n`` product and its FLOPs: the machine's matmul rate."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    out = torch.empty(n, n, device=device)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * n ** 3


# -- building the variants ---------------------------------------------------------------------


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


def make_optimizer(params) -> torch.optim.Optimizer:
    """Adam (the paper's optimiser), fused where this PyTorch supports it; the same for every
    variant, so that the comparison is of the models."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=3e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=3e-4)


def train_step(loss_fn: Callable[[], Tensor], opt: torch.optim.Optimizer) -> Callable[[], float]:
    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return 0.0

    return step


@dataclass
class Variant:
    name: str
    module: nn.Module
    loss: Callable[[], Tensor]


def build_variants(cfg: BenchConfig, device: torch.device, compile_step: bool,
                   seed: int = 0) -> tuple[dict[str, Variant], Tensor, Tensor, dict]:
    """The training-step variants, all from one set of initial weights, and the batch."""
    torch.manual_seed(seed)
    ours = VRNN(cfg.model_config()).to(device)
    x, noise = make_batch(cfg, device, seed)
    autograd_loop = copy.deepcopy(ours)
    autograd_loop.custom_loop = False
    per_step = PerStepVRNN(ours)
    variants = {
        "per-step": Variant("per-step", per_step, lambda: per_step.loss(x, noise)),
    }
    info: dict = {}
    if compile_step:
        compiled = PerStepVRNN(ours)
        try:
            # fullgraph=True: an error, not a silent fallback to eager, if anything breaks the
            # graph; the reset keeps earlier configurations from filling dynamo's cache.
            import torch._dynamo as dynamo
            from torch._dynamo.utils import counters

            dynamo.reset()
            counters.clear()
            step = torch.compile(compiled.step, fullgraph=True, dynamic=False)
            t0 = time.perf_counter()
            compiled.loss(x, noise, step).backward()
            info["compile"] = {"seconds": time.perf_counter() - t0, "fullgraph": True,
                               "graphs": int(counters["stats"]["unique_graphs"]),
                               "graph_breaks": int(sum(counters["graph_break"].values()))}
            variants["per-step+compile"] = Variant("per-step+compile", compiled,
                                                   lambda: compiled.loss(x, noise, step))
        except Exception as e:  # no compiler, unsupported op...: report, do not time
            info["compile"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    variants["autograd-loop"] = Variant("autograd-loop", autograd_loop,
                                        lambda: autograd_loop.loss(x, noise=noise)[0])
    variants["ours"] = Variant("ours", ours, lambda: ours.loss(x, noise=noise)[0])
    return variants, x, noise, info


def _grads(loss: Tensor, params: dict[str, Tensor]) -> list[Tensor]:
    """Gradients of ``loss`` for every parameter, zeros for one it does not use."""
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]


def check_agreement(variants: dict[str, Variant], rtol: float = AGREEMENT_RTOL) -> dict:
    """Loss and gradients of every variant against the per-step version, from the same weights
    and noise. Raises :class:`BenchmarkError` when a loss differs by more than ``rtol``."""
    ref = variants["per-step"]
    ref_loss = ref.loss()
    ref_params = dict(ref.module.net.named_parameters())
    ref_grads = dict(zip(ref_params, _grads(ref_loss, ref_params)))
    out = {"per_step_loss": ref_loss.item(), "rtol": rtol, "variants": {}}
    for name, v in variants.items():
        if name == "per-step":
            continue
        loss = v.loss()
        params = dict(v.module.net.named_parameters() if isinstance(v.module, PerStepVRNN)
                      else v.module.named_parameters())
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


def saved_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``fn()``."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        seen[(s.data_ptr(), t.device.index or 0)] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    del loss
    return sum(seen.values())


# -- the measurements --------------------------------------------------------------------------


def bench_training(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    variants, x, noise, info = build_variants(cfg, device, args.compile)
    agreement = check_agreement(variants)
    flops = training_flops(variants["ours"].module, cfg.batch, cfg.steps)
    sync = _sync_for(device)
    fns = {name: train_step(v.loss, make_optimizer(v.module.parameters()))
           for name, v in variants.items()}
    mm, mm_flops = sgemm_fn(args.sgemm_size, device)
    fns["sgemm"] = mm
    times = interleaved(fns, args.repeats, args.warmup, sync)
    rate = mm_flops / median(times.pop("sgemm")) / 1e9
    rows = cfg.batch * cfg.steps
    out: dict = {"sizes": asdict(cfg), "flops_per_step": flops, "agreement": agreement,
                 "sgemm_gflops": rate, "sgemm_size": args.sgemm_size, **info, "variants": {}}
    base = times["per-step"]
    for name, ts in times.items():
        ms = median(ts) * 1e3
        gflops = flops["total"] / (ms / 1e3) / 1e9
        out["variants"][name] = {
            "ms": ms, "ms_all": [t * 1e3 for t in ts], "seq_steps_per_s": rows / (ms / 1e3),
            "gflops": gflops, "fraction_of_sgemm": gflops / rate,
            "speedup_vs_per_step": median(base) / median(ts),
            "paired_speedup_vs_per_step": paired_ratio(base, ts),
        }
    out["memory"] = {name: {"saved_for_backward_bytes": saved_bytes(v.loss)}
                     for name, v in variants.items()}
    if device.type == "cuda":
        for name in variants:
            torch.cuda.reset_peak_memory_stats(device)
            fns[name]()
            out["memory"][name]["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    out["bound"] = thin_product_bound(variants["ours"].module, cfg, flops, rate, args, device)
    if args.profile and device.type == "cpu":
        out["profile"] = {name: profile_step(fns[name], cfg.batch, rows)
                          for name in ("per-step", "autograd-loop", "ours")}
    speed_target, frac_target = TARGETS.get(cfg.name, (None, None))
    ours = out["variants"]["ours"]
    out["targets"] = {}
    if speed_target is not None:
        out["targets"]["speedup_vs_per_step"] = {
            "value": ours["speedup_vs_per_step"], "target": speed_target,
            "met": ours["speedup_vs_per_step"] >= speed_target}
    if frac_target is not None:
        out["targets"]["fraction_of_sgemm"] = {
            "value": ours["fraction_of_sgemm"], "target": frac_target,
            "met": ours["fraction_of_sgemm"] >= frac_target}
    return out


def thin_product_bound(model: VRNN, cfg: BenchConfig, flops: dict, rate: float,
                       args: argparse.Namespace, device: torch.device) -> dict:
    """What bounds the step: the recurrence needs, per time step, products with only B rows (the
    fused product with h_{t-1} and the cell's product with phi_z(z_t), forward and backward). Their
    rate, measured here on the model's own weights, and the machine's full matmul rate for the
    rest, give the fastest a training step can be and the fraction of the matmul rate it allows."""
    X = model.phi_x.out_dim
    B = cfg.batch
    e1 = model.encoder.mlp.layers[0]
    with torch.no_grad():
        w_h = torch.cat([e1.weight[:, X:], model.cell.weight_hh])  # (E1 + nH, H)
        w_iz = model.cell.weight_ih[:, X:].contiguous()  # (nH, F)
        h = torch.randn(B, w_h.shape[1], device=device)
        g = torch.randn(B, w_h.shape[0], device=device)
        fz = torch.randn(B, w_iz.shape[1], device=device)
        gc = torch.randn(B, w_iz.shape[0], device=device)

        def thin() -> None:
            torch.mm(h, w_h.t())
            torch.mm(g, w_h)
            torch.mm(fz, w_iz.t())
            torch.mm(gc, w_iz)

        thin_flops = 2.0 * 2 * B * (w_h.numel() + w_iz.numel())
        ts = interleaved({"thin": thin}, max(5, args.repeats), 2, _sync_for(device))["thin"]
    thin_rate = thin_flops / median(ts) / 1e9
    bound_s = flops["loop"] / (thin_rate * 1e9) + flops["batched"] / (rate * 1e9)
    return {"thin_gflops": thin_rate, "thin_fraction_of_sgemm": thin_rate / rate,
            "loop_flop_share": flops["loop"] / flops["total"], "best_ms": bound_s * 1e3,
            "best_fraction_of_sgemm": flops["total"] / bound_s / 1e9 / rate}


MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"}


def profile_step(fn: Callable[[], object], batch: int, rows: int) -> dict:
    """Where one training step spends its time (``torch.profiler``, self time of each operator):
    products with B rows (the recurrence), products with B * T rows (everything batched),
    the optimiser, and the rest (elementwise work, copies, Python-side autograd)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    wall = time.perf_counter() - t0
    cats = {"B-row products": 0.0, "B*T-row products": 0.0, "optimiser": 0.0, "other": 0.0}
    top = []
    for e in prof.key_averages(group_by_input_shape=True):
        ms = e.self_cpu_time_total / 1e3
        shapes = [s for s in e.input_shapes if s]
        if e.key in MATMULS:
            dims = {d for s in shapes for d in s}
            cats["B*T-row products" if rows in dims else "B-row products"] += ms
        elif "adam" in e.key.lower() or e.key.startswith("Optimizer."):
            cats["optimiser"] += ms
        elif e.key.startswith("aten::"):
            cats["other"] += ms
        top.append({"op": e.key, "shapes": str(shapes)[:120], "calls": e.count, "ms": ms})
    top.sort(key=lambda r: -r["ms"])
    return {"wall_ms_under_profiler": wall * 1e3, "categories_ms": cats, "top": top[:15]}


@torch.no_grad()
def is_with_repeat(model: VRNN, x: Tensor, num_samples: int,
                   generator: torch.Generator | None, chunk_size: int) -> Tensor:
    """IS as batched public code does it: ``model(x.repeat(c, 1, 1))``, so that phi_x and the
    products with phi_x(x_t) run once per sample, not once per sequence as in
    ``estimate_log_likelihood``. Same noise stream. Returns log p(x) estimates ``(B,)``."""
    B = x.shape[0]
    log_ws, done = [], 0
    while done < num_samples:
        c = min(chunk_size, num_samples - done)
        terms = model(x.repeat(c, 1, 1), generator=generator, sample_terms=True)
        log_ws.append(masked_sum(terms.log_px + terms.log_pz - terms.log_qz, None).view(c, B))
        done += c
    return log_mean_exp(torch.cat(log_ws))  # (B,)


def is_chunk(cfg: BenchConfig) -> int:
    """Samples per pass: the library's default (``DEFAULT_ROW_BUDGET`` rows per step,
    ``DEFAULT_STEP_BUDGET`` sequence steps per pass), the step budget scaled down for layers wider
    than 1000 so that the paper-speech size stays within memory."""
    budget = DEFAULT_STEP_BUDGET * 1000 // max(1000, cfg.hidden)
    return max(1, min(IS_SAMPLES, DEFAULT_ROW_BUDGET // cfg.batch,
                      budget // (cfg.batch * cfg.steps)))


def is_flop_ratio(model: VRNN, samples: int = IS_SAMPLES) -> dict[str, float]:
    """Analytic multiply-adds of IS with S samples over those of one ELBO pass. phi_x and the
    products with phi_x(x_t) (encoder's first layer, the cell's input product) are shared by the
    samples; every other product runs once per sample. A compute-bound IS cannot beat this."""
    total = matmul_macs(model)["total"]
    X = model.phi_x.out_dim
    shared = sum(m.weight.numel() for m in model.phi_x.layers)
    shared += model.encoder.mlp.layers[0].out_features * X + model.cell.weight_ih.shape[0] * X
    return {"shared_share": shared / total,
            "ratio": (samples * (total - shared) + shared) / total}


def bench_evaluation(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """IS with S = 40 (``estimate_log_likelihood``: samples batched, phi_x shared) against one
    ELBO pass, 40 separate ELBO passes and IS over repeated sequences, all without gradients."""
    torch.manual_seed(0)
    model = VRNN(cfg.model_config()).to(device).eval()
    x, _ = make_batch(cfg, device)
    gen = torch.Generator(device=device).manual_seed(0)
    chunk = is_chunk(cfg)

    def one_pass() -> None:
        with torch.no_grad():
            model(x, generator=gen).elbo()

    def separate() -> None:
        for _ in range(IS_SAMPLES):
            one_pass()

    def is_eval() -> None:
        estimate_log_likelihood(model, x, num_samples=IS_SAMPLES, generator=gen,
                                chunk_size=chunk)

    def is_repeat() -> None:
        is_with_repeat(model, x, IS_SAMPLES, gen, chunk)

    fns = {"is_40": is_eval, "is_40_repeat": is_repeat, "elbo_pass": one_pass}
    if args.eval_separate:
        fns["elbo_40_separate"] = separate
    ts = interleaved(fns, args.eval_repeats, args.eval_warmup, _sync_for(device))
    t_is, t_one = median(ts["is_40"]), median(ts["elbo_pass"])
    t_rep = median(ts["is_40_repeat"])
    t_sep = median(ts["elbo_40_separate"]) if "elbo_40_separate" in ts else IS_SAMPLES * t_one
    bound = is_flop_ratio(model)
    return {"samples": IS_SAMPLES, "samples_per_pass": chunk, "repeats": args.eval_repeats,
            "is_ms": t_is * 1e3, "elbo_pass_ms": t_one * 1e3,
            "is_repeat_ms": t_rep * 1e3, "is_repeat_over_one_pass": t_rep / t_one,
            "separate_40_ms": t_sep * 1e3, "separate_measured": "elbo_40_separate" in ts,
            "is_over_one_pass": t_is / t_one, "separate_over_is": t_sep / t_is,
            "flop_ratio": bound["ratio"], "shared_flop_share": bound["shared_share"],
            "target": IS_TARGET, "met": t_is / t_one <= IS_TARGET}


def bench_generation(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """``model.sample`` from the prior: time steps (and frames) per second at batch 1 and 64."""
    torch.manual_seed(0)
    model = VRNN(cfg.model_config()).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    out = {}
    for num in (1, 64):
        ts = interleaved({"sample": lambda n=num: model.sample(n, args.gen_steps, generator=gen)},
                         args.eval_repeats, 1, _sync_for(device))["sample"]
        s = median(ts)
        out[f"batch_{num}"] = {"steps": args.gen_steps, "steps_per_s": args.gen_steps / s,
                               "frames_per_s": num * args.gen_steps / s, "ms": s * 1e3}
    return out


def bench_scaling(cfg: BenchConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """Cost per time step of the training step as T grows (B fixed) and as B grows (T fixed).
    Flat in T means no step costs more than the last: no hidden O(T) work per step."""
    sync = _sync_for(device)
    out: dict = {"model": asdict(cfg), "by_steps": [], "by_batch": []}
    for key, values, fixed in (("by_steps", args.scale_steps, cfg.batch),
                               ("by_batch", args.scale_batch, args.scale_fixed_steps)):
        for v in values:
            c = replace(cfg, steps=v, batch=fixed) if key == "by_steps" else \
                replace(cfg, batch=v, steps=fixed)
            torch.manual_seed(0)
            model = VRNN(c.model_config()).to(device)
            x, noise = make_batch(c, device)
            fn = train_step(lambda m=model, x=x, n=noise: m.loss(x, noise=n)[0],
                            make_optimizer(model.parameters()))
            s = median(interleaved({"step": fn}, args.scale_repeats, 1, sync)["step"])
            out[key].append({"steps": c.steps, "batch": c.batch, "ms": s * 1e3,
                             "ms_per_time_step": s * 1e3 / c.steps,
                             "us_per_sequence_step": s * 1e6 / (c.steps * c.batch)})
    per_step = [r["ms_per_time_step"] for r in out["by_steps"]]
    # Fixed costs (the optimiser, the batched work) make short sequences dearer per step; a
    # quadratic term would make the longest the dearest.
    out["longest_over_cheapest_per_step"] = per_step[-1] / min(per_step)
    out["flat_in_steps"] = per_step[-1] <= 1.25 * min(per_step)
    return out


# -- the machine -------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict:
    from vrnn.machine import cpu_name

    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device), "load_average": load_average()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: other processes on the machine show here."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def available_memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimated_bytes(cfg: BenchConfig, variants: int) -> int:
    """A generous estimate of what the training benchmark of ``cfg`` holds at once: parameters,
    gradients and Adam moments per variant, and about a dozen ``(B, T, 4H)`` activations each."""
    with torch.device("meta"):
        n = sum(p.numel() for p in VRNN(cfg.model_config()).parameters())
    acts = cfg.batch * cfg.steps * 4 * cfg.hidden * 4 * 12
    return variants * (4 * 4 * n + acts)


# -- report ------------------------------------------------------------------------------------


def format_report(result: dict) -> str:
    lines = []
    m = result["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch "
                 f"threads, torch {m['torch']}, device {m['device']}")
    lines.append("")
    lines.append(f"{'config':<13}{'variant':<18}{'ms/step':>10}{'seq-steps/s':>13}"
                 f"{'GFLOP/s':>9}{'of mm':>7}{'speed-up':>10}")
    for name, r in result["configs"].items():
        if "skipped" in r:
            lines.append(f"{name:<13}skipped: {r['skipped']}")
            continue
        t = r["training"]
        for i, (vname, v) in enumerate(t["variants"].items()):
            lines.append(f"{name if i == 0 else '':<13}{vname:<18}{v['ms']:>10.1f}"
                         f"{v['seq_steps_per_s']:>13,.0f}{v['gflops']:>9.1f}"
                         f"{v['fraction_of_sgemm']:>7.0%}{v['speedup_vs_per_step']:>9.2f}x")
        b = t["bound"]
        lines.append(f"{'':<13}matmul rate {t['sgemm_gflops']:.1f} GFLOP/s "
                     f"({t['sgemm_size']}^3 torch.mm); B-row products {b['thin_gflops']:.1f} "
                     f"GFLOP/s; bound {b['best_ms']:.1f} ms = "
                     f"{b['best_fraction_of_sgemm']:.0%} of mm")
        for vname, pr in t.get("profile", {}).items():
            lines.append(f"{'':<13}profile {vname}: " + ", ".join(
                f"{k} {v:.0f} ms" for k, v in pr["categories_ms"].items()))
        ag = t["agreement"]["variants"]
        lines.append(f"{'':<13}agreement with per-step: " + ", ".join(
            f"{k} loss {v['loss_rel_diff']:.1e} grad {v['grad_max_rel_diff']:.1e}"
            for k, v in ag.items()))
    lines.append("")
    lines.append("targets:")
    for name, r in result["configs"].items():
        if "skipped" in r:
            continue
        for key, tg in r["training"]["targets"].items():
            fmt = "{:.2f}x" if key.startswith("speedup") else "{:.0%}"
            lines.append(f"  {name:<13}{key:<22}{fmt.format(tg['value']):>8} (target "
                         f"{fmt.format(tg['target'])}) {'met' if tg['met'] else 'MISSED'}")
        if "evaluation" in r:
            e = r["evaluation"]
            lines.append(f"  {name:<13}{'IS S=40 / ELBO pass':<22}{e['is_over_one_pass']:>7.1f}x"
                         f" (target <= {e['target']:.0f}x) {'met' if e['met'] else 'MISSED'};"
                         f" FLOP ratio {e['flop_ratio']:.1f}x")
    evals = {n: r["evaluation"] for n, r in result["configs"].items() if "evaluation" in r}
    if evals:
        lines.append("")
        lines.append(f"{'evaluation':<13}{'ELBO pass ms':>13}{'IS S=40 ms':>12}"
                     f"{'40 passes ms':>14}{'IS/pass':>9}{'40 passes/IS':>14}"
                     f"{'IS repeat/pass':>16}{'FLOP ratio':>12}")
        for n, e in evals.items():
            lines.append(f"{n:<13}{e['elbo_pass_ms']:>13.1f}{e['is_ms']:>12.1f}"
                         f"{e['separate_40_ms']:>14.1f}{e['is_over_one_pass']:>8.1f}x"
                         f"{e['separate_over_is']:>13.1f}x"
                         f"{e['is_repeat_over_one_pass']:>15.1f}x{e['flop_ratio']:>11.1f}x")
    gens = {n: r["generation"] for n, r in result["configs"].items() if "generation" in r}
    if gens:
        lines.append("")
        lines.append(f"{'generation':<13}{'steps/s B=1':>13}{'steps/s B=64':>14}"
                     f"{'frames/s B=64':>15}")
        for n, g in gens.items():
            lines.append(f"{n:<13}{g['batch_1']['steps_per_s']:>13,.0f}"
                         f"{g['batch_64']['steps_per_s']:>14,.0f}"
                         f"{g['batch_64']['frames_per_s']:>15,.0f}")
    mems = {n: r["training"]["memory"] for n, r in result["configs"].items() if "training" in r}
    if mems:
        lines.append("")
        lines.append("memory kept for backward (MiB): " + "; ".join(
            f"{n}: " + ", ".join(f"{k} {v['saved_for_backward_bytes'] / 2**20:.1f}"
                                 for k, v in mm.items()) for n, mm in mems.items()))
        if "peak_rss_mib" in result:  # absent from a run cut short
            lines.append(f"process peak RSS: {result['peak_rss_mib']:.0f} MiB")
    if "scaling" in result:
        s = result["scaling"]
        lines.append("")
        lines.append(f"scaling ({s['model']['name']} sizes), ms per time step by T (B="
                     f"{s['by_steps'][0]['batch']}): " + ", ".join(
                         f"T={r['steps']}: {r['ms_per_time_step']:.2f}" for r in s["by_steps"]))
        lines.append(f"  longest / cheapest per step: {s['longest_over_cheapest_per_step']:.2f} "
                     f"({'flat' if s['flat_in_steps'] else 'NOT flat'})")
        lines.append(f"  us per sequence step by B (T={s['by_batch'][0]['steps']}): " + ", ".join(
            f"B={r['batch']}: {r['us_per_sequence_step']:.1f}" for r in s["by_batch"]))
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    """The tables of ``docs/PERFORMANCE.md`` from a result (``--json``): one per configuration,
    then evaluation, generation, memory and scaling."""
    m = result["machine"]
    out = [f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
           f"torch {m['torch']}, device {m['device']}; load average at the start "
           f"{m['load_average'][0] if m.get('load_average') else 'n/a'}.", ""]
    for name, r in result["configs"].items():
        if "skipped" in r:
            out += [f"**{name}**: skipped ({r['skipped']}).", ""]
            continue
        t = r["training"]
        z = t["sizes"]
        b = t["bound"]
        out += [f"**{name}** (x {z['x_dim']}, hidden {z['hidden']}, z {z['z_dim']}, T "
                f"{z['steps']}, batch {z['batch']}, {z['output']} output; "
                f"{t['flops_per_step']['total'] / 1e9:.1f} GFLOP per step; matmul rate "
                f"{t['sgemm_gflops']:.1f} GFLOP/s):", "",
                "| variant | ms / step | sequence-steps / s | GFLOP/s | of matmul rate "
                "| speed-up vs per-step | kept for backward MiB |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        mem = t.get("memory", {})
        for vname, v in t["variants"].items():
            kept = mem.get(vname, {}).get("saved_for_backward_bytes")
            out.append(f"| {vname} | {v['ms']:.1f} | {v['seq_steps_per_s']:,.0f} | "
                       f"{v['gflops']:.1f} | {v['fraction_of_sgemm']:.0%} | "
                       f"{v['speedup_vs_per_step']:.2f} | "
                       f"{'' if kept is None else f'{kept / 2**20:.0f}'} |")
        out += ["", f"Bound: the products with B rows inside the loop run at "
                f"{b['thin_gflops']:.1f} GFLOP/s ({b['thin_fraction_of_sgemm']:.0%} of the matmul "
                f"rate) and carry {b['loop_flop_share']:.0%} of the FLOPs; at those rates and with "
                f"nothing else a step takes {b['best_ms']:.1f} ms "
                f"({b['best_fraction_of_sgemm']:.0%} of the matmul rate, "
                f"{t['variants']['per-step']['ms'] / b['best_ms']:.2f}x the per-step time)."]
        prof = t.get("profile", {})
        if prof:
            cats = list(next(iter(prof.values()))["categories_ms"])
            out += ["", "| profile, ms | " + " | ".join(cats) + " |",
                    "|---|" + "---:|" * len(cats)]
            for vname, pr in prof.items():
                out.append(f"| {vname} | " + " | ".join(
                    f"{pr['categories_ms'][c]:.0f}" for c in cats) + " |")
        out.append("")
    evals = {n: r["evaluation"] for n, r in result["configs"].items() if "evaluation" in r}
    if evals:
        out += ["Importance-sampled evaluation, S = 40, no gradients:", "",
                "| config | one ELBO pass ms | IS ms | IS / pass | FLOP ratio | IS over repeated "
                "x / pass | 40 separate passes / IS | samples per pass |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n, e in evals.items():
            sep = f"{e['separate_over_is']:.2f}" if e["separate_measured"] else "n/a"
            out.append(f"| {n} | {e['elbo_pass_ms']:.1f} | {e['is_ms']:.0f} | "
                       f"{e['is_over_one_pass']:.1f}x | {e['flop_ratio']:.1f}x | "
                       f"{e['is_repeat_over_one_pass']:.1f}x | {sep} | "
                       f"{e['samples_per_pass']} |")
        out.append("")
    gens = {n: r["generation"] for n, r in result["configs"].items() if "generation" in r}
    if gens:
        out += ["Generation (ancestral sampling):", "",
                "| config | steps / s, batch 1 | steps / s, batch 64 | frames / s, batch 64 |",
                "|---|---:|---:|---:|"]
        for n, g in gens.items():
            out.append(f"| {n} | {g['batch_1']['steps_per_s']:,.0f} | "
                       f"{g['batch_64']['steps_per_s']:,.0f} | "
                       f"{g['batch_64']['frames_per_s']:,.0f} |")
        out.append("")
    if "peak_rss_mib" in result:
        out += [f"Peak resident memory of the benchmark process: {result['peak_rss_mib']:.0f} MiB.",
                ""]
    if "scaling" in result:
        s = result["scaling"]
        out += [f"Scaling, {s['model']['name']} sizes, `ours`, training step:", "",
                f"| T (batch {s['by_steps'][0]['batch']}) | ms / step | ms per time step |",
                "|---:|---:|---:|"]
        out += [f"| {r['steps']} | {r['ms']:.0f} | {r['ms_per_time_step']:.2f} |"
                for r in s["by_steps"]]
        out += ["", f"| batch (T {s['by_batch'][0]['steps']}) | ms / step | "
                "us per sequence-step |", "|---:|---:|---:|"]
        out += [f"| {r['batch']} | {r['ms']:.1f} | {r['us_per_sequence_step']:.1f} |"
                for r in s["by_batch"]]
        out += ["", f"Longest T over the cheapest per time step: "
                f"{s['longest_over_cheapest_per_step']:.2f} "
                f"({'flat in T' if s['flat_in_steps'] else 'NOT flat in T'})."]
    return "\n".join(out).rstrip() + "\n"


# -- command line ------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from e
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vrnn benchmark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma list of {', '.join(CONFIGS)} (default all; 'none': only the "
                        "scaling run)")
    p.add_argument("--quick", action="store_true",
                   help="microscopic sizes, few repeats: checks that it runs; numbers mean nothing")
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure here")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the tables as Markdown (docs/PERFORMANCE.md holds them)")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="time nothing: print the report (and --markdown) of an earlier --json")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed training steps per variant (default 10; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the per-step version under torch.compile (default: on, "
                        "off with --quick)")
    p.add_argument("--sgemm-size", type=int, default=None,
                   help="n of the n x n x n torch.mm that measures the matmul rate (default 2048)")
    p.add_argument("--profile", action="store_true",
                   help="also record where one step of each variant spends its time")
    p.add_argument("--no-evaluation", dest="evaluation", action="store_false",
                   help="skip the IS-evaluation timing")
    p.add_argument("--eval-separate", action=argparse.BooleanOptionalAction, default=None,
                   help="time 40 separate ELBO passes instead of 40 x one pass (default: on "
                        "except for paper-speech)")
    p.add_argument("--no-generation", dest="generation", action="store_false")
    p.add_argument("--no-scaling", dest="scaling", action="store_false")
    p.add_argument("--scale-steps", type=_int_list, default=None,
                   help="T values of the scaling run (default 50,100,200,500,1000,2000)")
    p.add_argument("--scale-batch", type=_int_list, default=None,
                   help="B values of the scaling run (default 1,4,16,64,256)")
    return p


def _resolve(args: argparse.Namespace) -> None:
    q = args.quick
    defaults = {"repeats": 3 if q else 10, "warmup": 1 if q else 2, "compile": not q,
                "sgemm_size": 256 if q else 2048, "scale_steps": [5, 10, 20] if q else
                [50, 100, 200, 500, 1000, 2000], "scale_batch": [1, 4] if q else
                [1, 4, 16, 64, 256]}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.eval_repeats = 1 if q else 3
    args.eval_warmup = 1
    args.gen_steps = 5 if q else 100
    args.scale_repeats = 1 if q else 3
    args.scale_fixed_steps = 10 if q else 100
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    names = [n.strip() for n in args.configs.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"--configs: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(CONFIGS)}")
    result: dict = {"command": "vrnn benchmark " + " ".join(args.argv), "quick": args.quick,
                    "machine": machine_info(device), "repeats": args.repeats,
                    "warmup": args.warmup, "configs": {}}
    for name in names:
        cfg = quick_config(CONFIGS[name]) if args.quick else CONFIGS[name]
        n_var = 4 if args.compile else 3
        need, have = estimated_bytes(cfg, n_var), available_memory_bytes(device)
        if have is not None and need > have:
            result["configs"][name] = {"skipped": f"needs about {need / 2**30:.1f} GiB, "
                                                  f"{have / 2**30:.1f} GiB available"}
            print(f"[{name}] skipped: {result['configs'][name]['skipped']}", flush=True)
            continue
        print(f"[{name}] training step: {n_var} variants x {args.repeats} rounds ...",
              flush=True)
        r = {"load_average_before": load_average(),
             "training": bench_training(cfg, args, device)}
        gc.collect()
        if args.evaluation:
            # paper-speech: one IS pass holds minutes of work; time it once, without warm-up
            heavy = name == "paper-speech" and not args.quick
            sep = args.eval_separate
            args_e = argparse.Namespace(**{
                **vars(args), "eval_separate": (not heavy) if sep is None else sep,
                "eval_repeats": 1 if heavy else args.eval_repeats,
                "eval_warmup": 0 if heavy else args.eval_warmup})
            print(f"[{name}] IS evaluation ...", flush=True)
            r["evaluation"] = bench_evaluation(cfg, args_e, device)
        if args.generation:
            print(f"[{name}] generation ...", flush=True)
            r["generation"] = bench_generation(cfg, args, device)
        r["load_average_after"] = load_average()
        result["configs"][name] = r
        gc.collect()
        if args.json:  # after every configuration, so that a long run keeps what it measured
            write_json(result, args.json)
    if args.scaling:
        base = CONFIGS["handwriting"]
        cfg = quick_config(base) if args.quick else base
        print("[scaling] ...", flush=True)
        result["scaling"] = bench_scaling(cfg, args, device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_mib"] = rss / 1024 if sys.platform != "darwin" else rss / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    """``vrnn benchmark``: returns 0, or 1 when the variants disagree (nothing is timed then),
    2 on a bad flag."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    threads = torch.get_num_threads()
    try:
        _resolve(args)
        if args.threads is None and args.quick:
            args.threads = 1  # a smoke run: one thread is steadier on a shared machine
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        if args.from_json:
            result = read_json(args.from_json)
        elif args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here")
        else:
            result = run(args)
    except ValueError as e:
        print(f"vrnn benchmark: error: {e}", file=sys.stderr)
        return 2
    except BenchmarkError as e:
        print(f"vrnn benchmark: the variants disagree, nothing timed: {e}", file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(threads)
    print()
    print(format_report(result))
    if args.json and not args.from_json:
        print(f"\nwrote {write_json(result, args.json)}")
    if args.markdown:
        out = Path(args.markdown)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown_report(result))
        print(f"wrote {out}")
    return 0


def read_json(path: str) -> dict:
    """An earlier ``--json`` result; ValueError naming the file when it is not one."""
    p = Path(path)
    try:
        result = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--from-json {path}: cannot read a benchmark result ({e})") from e
    if not isinstance(result, dict) or "machine" not in result or "configs" not in result:
        raise ValueError(f"--from-json {path}: not a `vrnn benchmark --json` result")
    return result


def write_json(result: dict, path: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    sys.exit(main())

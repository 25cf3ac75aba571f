"""How the benchmark measures: interleaved timing, paired ratios, the machine's matmul rate,
analytic FLOP counts, the thin-product bound, operator profiles and memory kept for backward.

Nothing here knows the variants; the FLOP counts read a :class:`~vrnn.models.vrnn.VRNN`'s (or an
:class:`~vrnn.models.srnn.SRNN`'s) weights.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vrnn.bench.configs import IS_SAMPLES, BenchConfig
from vrnn.models.layers import LatentGaussian
from vrnn.models.srnn import SRNN
from vrnn.models.vrnn import VRNN

# -- timing ------------------------------------------------------------------------------------


def sync_for(device: torch.device) -> Callable[[], None]:
    """A barrier for ``device``'s queued work (CUDA runs asynchronously), a no-op on the CPU."""
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


def sgemm_fn(n: int, device: torch.device,
             dtype: torch.dtype = torch.float32) -> tuple[Callable[[], object], float]:
    """An ``n x n x n`` product in ``dtype`` (float32: the machine's matmul rate; bfloat16: its
    rate for the bf16 variants, operands and output in bfloat16, float32 accumulation inside the
    kernel) and its FLOPs."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * n ** 3


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


def srnn_matmul_macs(model: SRNN) -> dict[str, int]:
    """Multiply-adds per sequence step of an SRNN's forward pass, every weight entry applied once
    per step: ``total``; ``rnn``: the library RNNs' (d_t and the smoothing backward RNN, input
    and recurrent products); ``z_chain``: the products inside the z-chain's loop (with z_{t-1},
    then the rest of the encoder, and of the prior with Res_q); ``rnn_recurrent``: the RNNs'
    products with their previous state. Both of the last run on B rows per step."""
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    rnn = sum(p.numel() for m in rnns for n, p in m.named_parameters() if n.startswith("weight"))
    recurrent = sum(p.numel() for m in rnns for n, p in m.named_parameters()
                    if n.startswith("weight_hh"))

    def in_loop(net: LatentGaussian) -> int:  # the first layer's columns for z_{t-1}, the rest
        first, *rest = list(net.mlp.layers) + [net.gaussian.linear]
        return first.out_features * model.config.z_dim + sum(m.weight.numel() for m in rest)

    z_chain = in_loop(model.encoder) + (in_loop(model.prior) if model.config.res_q else 0)
    return {"total": total + rnn, "rnn": rnn, "rnn_recurrent": recurrent, "z_chain": z_chain}


def srnn_training_flops(model: SRNN, batch: int, steps: int) -> dict[str, float]:
    """Analytic FLOPs of one SRNN training step: 2 m n k per product, x3 for forward + backward
    (``total``); ``z_chain`` and ``rnn_recurrent``: the B-row products of the z-chain's loop and
    of the RNNs' recurrences, forward and input gradients (x2 of the forward)."""
    m = srnn_matmul_macs(model)
    rows = batch * steps
    return {"total": 6.0 * m["total"] * rows, "z_chain": 4.0 * m["z_chain"] * rows,
            "rnn_recurrent": 4.0 * m["rnn_recurrent"] * rows}


def family_training_flops(model: nn.Module, batch: int, steps: int) -> dict[str, float]:
    """Analytic FLOPs of one training step of a DMM or STORN, each of whose weight entries is
    applied once per sequence step (every ``nn.Linear``, and the library RNNs' input and
    recurrent products): 2 m n k per product, x3 for forward + backward (``total``);
    ``rnn_recurrent``: the B-row products of the RNNs' recurrences, forward and input gradients
    (x2 of the forward)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    rnn = sum(p.numel() for m in rnns for n, p in m.named_parameters() if n.startswith("weight"))
    recurrent = sum(p.numel() for m in rnns for n, p in m.named_parameters()
                    if n.startswith("weight_hh"))
    rows = batch * steps
    return {"total": 6.0 * (linear + rnn) * rows, "rnn_recurrent": 4.0 * recurrent * rows}


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


def thin_product_bound(model: VRNN, cfg: BenchConfig, flops: dict, rate: float, repeats: int,
                       device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
    """What bounds the step: the recurrence needs, per time step, products with only B rows (the
    fused product with h_{t-1} and the cell's product with phi_z(z_t), forward and backward). Their
    rate, measured here on the model's own weights, and the machine's full matmul rate ``rate``
    (GFLOP/s) for the rest, give the fastest a training step can be and the fraction of the
    matmul rate it allows. ``flops``: :func:`training_flops`. ``dtype`` bfloat16: the B-row
    products on bfloat16 copies of the weights and activations, ``rate`` the bf16 matmul rate
    (the bound of the bf16 variants, every fraction of the bf16 rate)."""
    X = model.phi_x.out_dim
    B = cfg.batch
    e1 = model.encoder.mlp.layers[0]
    with torch.no_grad():
        w_h = torch.cat([e1.weight[:, X:], model.cell.weight_hh]).to(dtype)  # (E1 + nH, H)
        w_iz = model.cell.weight_ih[:, X:].to(dtype).contiguous()  # (nH, F)
        h = torch.randn(B, w_h.shape[1], device=device).to(dtype)
        grad_h = torch.randn(B, w_h.shape[0], device=device).to(dtype)
        fz = torch.randn(B, w_iz.shape[1], device=device).to(dtype)
        grad_cell = torch.randn(B, w_iz.shape[0], device=device).to(dtype)

        def thin() -> None:
            torch.mm(h, w_h.t())
            torch.mm(grad_h, w_h)
            torch.mm(fz, w_iz.t())
            torch.mm(grad_cell, w_iz)

        thin_flops = 2.0 * 2 * B * (w_h.numel() + w_iz.numel())
        ts = interleaved({"thin": thin}, max(5, repeats), 2, sync_for(device))["thin"]
    thin_rate = thin_flops / median(ts) / 1e9
    bound_s = flops["loop"] / (thin_rate * 1e9) + flops["batched"] / (rate * 1e9)
    return {"thin_gflops": thin_rate, "thin_fraction_of_sgemm": thin_rate / rate,
            "loop_flop_share": flops["loop"] / flops["total"], "best_ms": bound_s * 1e3,
            "best_fraction_of_sgemm": flops["total"] / bound_s / 1e9 / rate}


# -- where the time and the memory go ----------------------------------------------------------

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"}


def _library_rnn(op: str) -> bool:
    """A fused library LSTM/GRU kernel (``aten::mkldnn_rnn_layer``, its backward, ...)."""
    op = op.lower()
    return op.startswith("aten::") and any(k in op for k in ("rnn", "lstm", "gru"))


def profile_step(fn: Callable[[], object], batch: int, rows: int,
                 library_rnn: bool = False) -> dict:
    """Where one training step spends its time (``torch.profiler``, self time of each operator):
    products with B rows (the recurrence), products with B * T rows (everything batched),
    the optimiser, and the rest (elementwise work, copies, Python-side autograd). With
    ``library_rnn`` (the SRNN rows) the fused library RNN kernels, whose products the profiler
    does not show, get their own category instead of falling into the rest."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    wall = time.perf_counter() - t0
    cats = {"B-row products": 0.0, "B*T-row products": 0.0}
    if library_rnn:
        cats["library RNN"] = 0.0
    cats |= {"optimiser": 0.0, "other": 0.0}
    top = []
    for e in prof.key_averages(group_by_input_shape=True):
        ms = e.self_cpu_time_total / 1e3
        shapes = [s for s in e.input_shapes if s]
        if library_rnn and _library_rnn(e.key):
            cats["library RNN"] += ms
        elif e.key in MATMULS:
            dims = {d for s in shapes for d in s}
            cats["B*T-row products" if rows in dims else "B-row products"] += ms
        elif "adam" in e.key.lower() or e.key.startswith("Optimizer."):
            cats["optimiser"] += ms
        elif e.key.startswith("aten::"):
            cats["other"] += ms
        top.append({"op": e.key, "shapes": str(shapes)[:120], "calls": e.count, "ms": ms})
    top.sort(key=lambda r: -r["ms"])
    return {"wall_ms_under_profiler": wall * 1e3, "categories_ms": cats, "top": top[:15]}


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

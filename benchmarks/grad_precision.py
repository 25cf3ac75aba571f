"""How close each training-step variant's float32 gradients are to float64.

The benchmark checks every variant against the per-step version in float32; at large sizes both
sides carry rounding error, and this script says how much, against a float64 copy of the per-step
model (``vrnn.models.reference.Literal``) from the same weights and noise.

    python benchmarks/grad_precision.py --batch 128 --hidden 2000 --seed 0

prints, for the parameters with the largest errors, ``|g32 - g64| / |g64|`` (norms over the
parameter) of per-step, autograd-loop and ours, then the maximum of each. Sizes otherwise as the
benchmark's ``paper-speech`` configuration (x 200, z 200, T 40).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from vrnn import bench
from vrnn.models.reference import Literal


def grads(loss: torch.Tensor, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    params = dict(module.named_parameters())
    got = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: g for n, g in zip(params, got) if g is not None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=2000)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--show", type=int, default=6, help="parameters to list")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(bench.CONFIGS["paper-speech"], batch=args.batch,
                              hidden=args.hidden, steps=args.steps)
    variants, x, noise, _ = bench.build_variants(cfg, torch.device("cpu"), False, seed=args.seed)
    ref = Literal(variants["ours"].net, copy=True).double()
    g64 = grads(ref.loss(x.double(), noise.double()), ref.net)
    errors: dict[str, dict[str, float]] = {}
    for name in ("per-step", "autograd-loop", "ours"):
        v = variants[name]
        g = grads(v.loss(), v.net)
        errors[name] = {n: ((g[n].double() - g64[n]).norm() / g64[n].norm()).item()
                        for n in g if n in g64}
    worst = sorted(errors["ours"], key=lambda n: -max(e[n] for e in errors.values()))
    for n in worst[:args.show]:
        print(f"{n:32s} " + "  ".join(f"{k} {errors[k][n]:.1e}" for k in errors))
    print("max  " + "  ".join(f"{k} {max(e.values()):.1e}" for k, e in errors.items()))


if __name__ == "__main__":
    main()

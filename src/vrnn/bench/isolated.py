"""``ours`` against ``ours P`` (a lower precision) timed again in a process of their own.

Why: in the benchmark's process every variant shares one heap, one set of caches and one
runtime with the others, and the others (the per-step baselines above all, with their tens of
thousands of small autograd tensors per step) leave that process slower for whatever runs after
them. At the handwriting size on a two-core Xeon with AMX, ``ours`` and ``ours bf16`` alone
in a fresh process took 780 and 465 ms a step (1.68x), interleaved with ``per-step bf16`` 850
and 540 ms, in the benchmark's full rotation 882 and 654 ms (1.35x): the same code, every
phase of the step (forward loop, backward loop, weight gradients, the rest) about as much
slower, with no page faults (``vrnn.host.allocator``), no trimming and no difference in THP to
explain it. A training process runs one model, so the pair is timed once more here as a
training process would run it: a fresh interpreter with the benchmark's allocator setting and
thread count, the same seed (so the same weights, batch and noise: the child's first losses are
checked against the parent's), the two steps interleaved in rounds as in the main rotation.

The main rotation's figures stay the benchmark's own (every variant under one condition);
this is a second, separately labelled measurement of the one ratio that the precision
targets state, and a child that fails is reported, not fatal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import torch

from vrnn.bench.configs import BenchConfig
from vrnn.bench.measure import interleaved, median, paired_ratio, sync_for

TIMEOUT_S = 3600
"""The most a child may take (the paper-speech pair: about 12 rounds of 10 s)."""


def pair_in_fresh_process(cfg: BenchConfig, precision: str, repeats: int, warmup: int,
                          threads: int, device: torch.device) -> dict:
    """Time ``ours`` and ``ours {precision}`` of ``cfg`` in a child interpreter; returns the
    JSON record: each one's median ms and all rounds, ``speedup_vs_fp32`` (ratio of medians),
    ``paired_speedup_vs_fp32`` and the two first losses; or ``{"error": ...}``."""
    job = {"config": asdict(cfg), "precision": precision, "repeats": repeats,
           "warmup": warmup, "threads": threads, "device": str(device)}
    cmd = [sys.executable, "-m", "vrnn.bench.isolated", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"the child took more than {TIMEOUT_S} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": why[:300]}
    times = json.loads(lines[-1])
    fp32, low = times["ours"], times[f"ours {precision}"]
    return {"precision": precision, "threads": threads, "repeats": repeats,
            "ours_ms": median(fp32) * 1e3, f"ours_{precision}_ms": median(low) * 1e3,
            "ours_ms_all": [t * 1e3 for t in fp32],
            f"ours_{precision}_ms_all": [t * 1e3 for t in low],
            "speedup_vs_fp32": median(fp32) / median(low),
            "paired_speedup_vs_fp32": paired_ratio(fp32, low),
            "first_loss": times["first_loss"]}


def _child(job: dict) -> dict:
    """The child's work: build the variants as the parent does (same seed), keep the pair,
    time it. Returns each one's seconds per round and ``first_loss``."""
    from vrnn.bench.variants import build_variants, make_optimizer, train_step
    from vrnn.host.allocator import keep_freed_memory

    keep_freed_memory()  # as the parent (``vrnn benchmark``) runs
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    p = job["precision"]
    variants, _, _, _ = build_variants(BenchConfig(**job["config"]), device, False,
                                       precisions=["fp32", p])
    pair = {name: variants[name] for name in ("ours", f"ours {p}")}
    del variants
    first_loss = {name: float(v.loss().detach()) for name, v in pair.items()}
    fns = {name: train_step(v.loss, make_optimizer(v.module.parameters()))
           for name, v in pair.items()}
    times = interleaved(fns, job["repeats"], job["warmup"], sync_for(device))
    return {**times, "first_loss": first_loss}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))

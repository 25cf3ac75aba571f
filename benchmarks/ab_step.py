"""Time the shipped VRNN training step (forward, backward, Adam) of whichever vrnn is first on
the path: the median over N steps after 3 warm-up steps, at a benchmark configuration's sizes,
two threads. For comparing two commits side by side, alternating processes:

    git worktree add /tmp/base BASE_COMMIT
    for i in 1 2 3 4; do for c in handwriting speech; do
      PYTHONPATH=/tmp/base/src .venv/bin/python benchmarks/ab_step.py $c 12
      .venv/bin/python benchmarks/ab_step.py $c 12
    done; done

Each line is JSON: the configuration, the median milliseconds and the last loss (equal loss
figures say both commits computed the same thing). It reads only names both the package's old
flat layout and its subpackages have."""
import json
import sys
import time

import torch

from vrnn import build_model
from vrnn.bench.configs import CONFIGS, make_batch

torch.set_num_threads(2)
try:
    from vrnn.host.allocator import keep_freed_memory
except ImportError:
    from vrnn.allocator import keep_freed_memory
keep_freed_memory()
name, n = sys.argv[1], int(sys.argv[2])
cfg = CONFIGS[name]
torch.manual_seed(0)
model = build_model(cfg.model_config())
x, noise = make_batch(cfg, torch.device("cpu"))
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
ts = []
for i in range(n + 3):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss, _ = model.loss(x, noise=noise)
    loss.backward()
    opt.step()
    if i >= 3:
        ts.append(time.perf_counter() - t0)
ts.sort()
print(json.dumps({"config": name, "ms": 1e3 * ts[len(ts) // 2], "loss": float(loss.detach())}))

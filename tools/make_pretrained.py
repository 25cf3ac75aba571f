"""Add a trained run's best checkpoint to the pretrained models that ship with the package.

    python tools/make_pretrained.py NAME RUN/best.pt --command "vrnn reproduce ..." \
        --licence "..." [--samples 40]

It evaluates the checkpoint on its data's test split (importance sampling with S samples, as
``vrnn evaluate``), writes the slim checkpoint to ``src/vrnn/store/weights/NAME.pt`` and its entry
(with those test figures, the command and the licence) to ``src/vrnn/store/weights/index.json``.
A maintainer's tool: the package never trains or downloads anything at run time.
"""

from __future__ import annotations

import argparse
import sys

from vrnn.commands.evaluate import evaluate_checkpoint
from vrnn.store.pretrained import add_pretrained


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("checkpoint")
    p.add_argument("--command", required=True, help="the command that trained it")
    p.add_argument("--licence", required=True, help="the licence of the data it was trained on")
    p.add_argument("--samples", type=int, default=40)
    args = p.parse_args(argv)
    result = evaluate_checkpoint(args.checkpoint, samples=args.samples, device="cpu")
    test = {k: v for k, v in result.items() if k not in ("per_sequence", "checkpoint")}
    entry = add_pretrained(args.name, args.checkpoint, command=args.command,
                           licence=args.licence, test=test)
    print(f"{args.name}: {entry['file']} ({entry['bytes'] / 2**20:.1f} MiB), test "
          f"log-likelihood {test['log_likelihood']:.1f} nats/sequence")
    return 0


if __name__ == "__main__":
    sys.exit(main())

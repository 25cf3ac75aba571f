"""``python -m vrnn``, and ``torchrun ... -m vrnn train ...`` for data-parallel training."""

from vrnn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

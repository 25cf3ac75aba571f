"""Fast loops and the precision policy: the VRNN's hand-written filtering loop (forward and
backward), bf16 products and their autocast, the positive scale every Gaussian layer uses.

May import: torch and ``vrnn.host``; never a model, an estimator or data."""

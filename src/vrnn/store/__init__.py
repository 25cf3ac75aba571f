"""Checkpoints on disk and the pretrained models that ship in ``store/weights/``.

May import: ``vrnn.models``, ``vrnn.data``, ``vrnn.kernels``, ``vrnn.host``."""

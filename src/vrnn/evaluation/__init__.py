"""A model over a set of sequences: batching by length, log p(x) per sequence in the paper's
units, means and standard errors over sequences.

May import: ``vrnn.models``, ``vrnn.inference``, ``vrnn.kernels``, ``vrnn.data``, ``vrnn.host``."""

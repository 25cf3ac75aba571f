"""The model families (one file each: the RNN baselines, the VRNN, the SRNN, the DMM, STORN),
their shared layers and output distributions, their configuration, presets and literal
references.

May import: ``vrnn.inference``, ``vrnn.kernels``, ``vrnn.host``; never data, training, storage
or the command line."""

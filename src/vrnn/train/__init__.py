"""Training: the run's configuration, the loop, its data order, objective, stop rules, run folder,
metrics and DistributedDataParallel.

May import: everything below the command layer (``models``, ``inference``, ``evaluation``,
``data``, ``store``, ``kernels``, ``host``)."""

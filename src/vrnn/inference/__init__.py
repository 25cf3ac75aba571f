"""Estimators and bounds written once against the step protocol: the protocol itself, importance
weights, importance sampling, the particle filter, the ELBO, IWAE and FIVO, and the one result
type of log p(x).

May import: ``vrnn.kernels``, ``vrnn.host``; never a model family (it reads them through the
protocol), data, training or the command line."""

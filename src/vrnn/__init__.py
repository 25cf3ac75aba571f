"""vrnn: sequential latent-variable models (the VRNN of Chung et al., NIPS 2015, its RNN
baselines, the SRNN of Fraccaro et al., NIPS 2016, the Deep Markov Model of Krishnan et al., AAAI
2017, and STORN of Bayer and Osendorfer, 2014), trained by the ELBO, IWAE or FIVO and
evaluated by importance sampling or a particle filter.

Train on arrays in memory, ask for log p(x), sample, load a model that ships with the package:

    >>> import numpy as np, torch, vrnn
    >>> rng = np.random.default_rng(0)
    >>> seqs = [rng.standard_normal((int(n), 3)).cumsum(0) for n in rng.integers(20, 40, 60)]
    >>> model = vrnn.build_model(vrnn.model_config("vrnn-gauss", x_dim=3, preset="tiny"))
    >>> history = vrnn.fit(model, seqs[:50], valid=seqs[50:], steps=30, progress=False)
    >>> est = model.log_prob(seqs[50:], method="smc", num_samples=8)  # nats per sequence
    >>> est.log_likelihood.shape, est.method
    (torch.Size([10]), 'smc')
    >>> model.sample(2, 10, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 10, 3])
    >>> vrnn.load("handwriting-vrnn-gmm").config.name
    'VRNN-GMM'

The families are classes of one step protocol (:mod:`vrnn.inference.protocol`); the objectives
are objects (``vrnn.fit(model, seqs, objective=vrnn.FIVO(4))``); every estimate of log p(x) is a
:class:`LogProb`, and ``model.score`` gives log p(x_t | x_<t) of every step as a
:class:`StepScores`. The command line (``vrnn --help``) is these functions plus files.
"""

from vrnn.evaluation.sequences import EvaluationResult, evaluate_sequences
from vrnn.host.version import __version__
from vrnn.inference.importance import estimate_log_likelihood
from vrnn.inference.likelihood import LogProb, StepScores
from vrnn.inference.objectives import ELBO, FIVO, IWAE, Objective
from vrnn.inference.protocol import Step, StepTerms, masked_sum
from vrnn.models.base import SequenceModel, count_parameters
from vrnn.models.build import build_model
from vrnn.models.config import MODEL_NAMES, ModelConfig, parse_model_name
from vrnn.models.dmm import DMM
from vrnn.models.presets import PRESETS, model_config
from vrnn.models.rnn import RNN
from vrnn.models.srnn import SRNN
from vrnn.models.storn import STORN
from vrnn.models.vrnn import VRNN
from vrnn.store.load import load, save
from vrnn.train.fit import History, fit

__all__ = [
    "DMM", "ELBO", "FIVO", "IWAE", "MODEL_NAMES", "PRESETS", "RNN", "SRNN", "STORN", "VRNN",
    "EvaluationResult", "History", "LogProb", "ModelConfig", "Objective", "SequenceModel", "Step",
    "StepScores", "StepTerms",
    "__version__", "build_model", "count_parameters", "estimate_log_likelihood",
    "evaluate_sequences", "fit", "load", "masked_sum", "model_config", "parse_model_name",
    "save",
]

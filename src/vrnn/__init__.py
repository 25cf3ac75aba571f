"""vrnn: the Variational Recurrent Neural Network (Chung et al., NIPS 2015), its RNN baselines,
the paper's evaluation and experiments.

    >>> from vrnn import model_config, build_model
    >>> model = build_model(model_config("vrnn-gmm", x_dim=200, preset="small"))
    >>> loss, terms = model.loss(x, mask)          # x (B, T, D), mask (B, T)
    >>> est = estimate_log_likelihood(model, x, mask, num_samples=40)
    >>> samples = model.sample(4, 100, temperature=0.8)
"""

from vrnn.evaluation.sequences import (
    EvaluationResult,
    LikelihoodEstimate,
    estimate_log_likelihood,
    evaluate_sequences,
)
from vrnn.models.build import build_model
from vrnn.models.config import MODEL_NAMES, ModelConfig, parse_model_name
from vrnn.models.presets import PRESETS, model_config
from vrnn.models.vrnn import RNN, VRNN, SequenceModel, StepTerms, count_parameters, masked_sum

__version__ = "0.1.0"

__all__ = [
    "MODEL_NAMES", "PRESETS", "RNN", "VRNN", "EvaluationResult", "LikelihoodEstimate",
    "ModelConfig", "SequenceModel", "StepTerms", "build_model", "count_parameters",
    "estimate_log_likelihood", "evaluate_sequences", "masked_sum", "model_config",
    "parse_model_name", "__version__",
]

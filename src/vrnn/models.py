"""The model a :class:`~vrnn.config.ModelConfig` describes: the one place that knows them all."""

from __future__ import annotations

from vrnn.config import ModelConfig
from vrnn.model import RNN, VRNN, SequenceModel
from vrnn.srnn import SRNN

FAMILY_CLASSES: dict[str, type[SequenceModel]] = {"vrnn": VRNN, "rnn": RNN, "srnn": SRNN}


def build_model(config: ModelConfig) -> SequenceModel:
    """The model ``config`` describes: :class:`~vrnn.model.VRNN`, :class:`~vrnn.model.RNN` or
    :class:`~vrnn.srnn.SRNN`."""
    return FAMILY_CLASSES[config.family](config)

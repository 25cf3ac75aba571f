"""The model a :class:`~vrnn.models.config.ModelConfig` describes: the one place that knows them
all."""

from __future__ import annotations

from vrnn.models.config import ModelConfig
from vrnn.models.srnn import SRNN
from vrnn.models.vrnn import RNN, VRNN, SequenceModel

FAMILY_CLASSES: dict[str, type[SequenceModel]] = {"vrnn": VRNN, "rnn": RNN, "srnn": SRNN}


def build_model(config: ModelConfig) -> SequenceModel:
    """The model ``config`` describes: :class:`~vrnn.models.vrnn.VRNN`,
    :class:`~vrnn.models.vrnn.RNN` or
    :class:`~vrnn.models.srnn.SRNN`."""
    return FAMILY_CLASSES[config.family](config)

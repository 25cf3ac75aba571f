"""The model a :class:`~vrnn.models.config.ModelConfig` describes: the one place that maps a
family's name to its class."""

from __future__ import annotations

from vrnn.models.base import SequenceModel
from vrnn.models.config import ModelConfig
from vrnn.models.dmm import DMM
from vrnn.models.rnn import RNN
from vrnn.models.srnn import SRNN
from vrnn.models.storn import STORN
from vrnn.models.vrnn import VRNN

FAMILY_CLASSES: dict[str, type[SequenceModel]] = {"vrnn": VRNN, "rnn": RNN, "srnn": SRNN,
                                                  "dmm": DMM, "storn": STORN}


def build_model(config: ModelConfig) -> SequenceModel:
    """The model ``config`` describes: :class:`~vrnn.models.vrnn.VRNN`,
    :class:`~vrnn.models.rnn.RNN`, :class:`~vrnn.models.srnn.SRNN`,
    :class:`~vrnn.models.dmm.DMM` or :class:`~vrnn.models.storn.STORN`."""
    return FAMILY_CLASSES[config.family](config)

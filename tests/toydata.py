"""Small synthetic data files and a subprocess runner shared by the command-line tests."""

import os
import subprocess
import sys

import numpy as np


def vrnn(*args, cwd=None, check=True, timeout=180):
    """Run ``python -m vrnn ARGS`` in a subprocess; AssertionError with its output on failure."""
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"}
    proc = subprocess.run([sys.executable, "-m", "vrnn", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"vrnn {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def write_npz(path, x_dim=4, n_train=24, seed=0):
    """An .npz with train/valid/test splits of n_train/6/6 random sequences of 4-9 frames, in the
    pickle-free layout that ``--data`` reads (``vrnn.data.pack_sequences``)."""
    from vrnn.data import pack_sequences

    rng = np.random.default_rng(seed)

    def split(n):
        return [rng.normal(size=(int(rng.integers(4, 10)), x_dim)).astype(np.float32)
                for _ in range(n)]

    pack_sequences({"train": split(n_train), "valid": split(6), "test": split(6)}, path)
    return path


def tiny_train_config(data, out, **kw):
    """The tiny VRNN-Gauss on ``data``: 8 steps, validating every 4, written into ``out``."""
    from vrnn.train.loop import TrainConfig

    base = dict(data=data, model="vrnn-gauss", preset="tiny", max_steps=8, out_dir=str(out),
                batch_size=8, val_interval=4, log_interval=2, progress=False,
                tensorboard=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)

"""The paper's Figure 2: what the latent variables do along one sequence.

Chung et al. (2015), Section 6 and Figure 2: a trained VRNN reads an unseen waveform; the KL
divergence between the approximate posterior and the conditional prior grows where the waveform
changes character, and so does the step-to-step change of the encoder's parameters.

:func:`kl_profile` returns the per-step numbers, :func:`figure_kl` draws them under the sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vrnn.data.core import DataInfo
from vrnn.models.base import SequenceModel


def _first_difference(values: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` over Z of the change between consecutive steps of ``(T, Z)`` -> ``(T,)``,
    0 at the first step."""
    out = np.zeros(values.shape[0], dtype=np.float64)
    if values.shape[0] > 1:
        out[1:] = reduce(np.diff(values, axis=0))  # (T - 1,)
    return out


def kl_profile(model: SequenceModel, x, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-step KL and encoder statistics of a VRNN reading one sequence.

    Args:
        model: a model with latent variables (an RNN's forward refuses ``return_latents``).
        x: one sequence ``(T, D)``, a tensor or array, normalised like the training data.
        seed: seeds the standard-normal noise of the reparameterised z_t, so
            ``model(x[None], generator=torch.Generator().manual_seed(seed))`` sees the same z.

    Returns:
        numpy float64 arrays:
        ``kl`` (T,): KL(q(z_t | x_<=t, z_<t) || p(z_t | x_<t, z_<t)) in nats, closed form;
        ``log_px`` (T,): log p(x_t | z_<=t, x_<t) in nats (of normalised x);
        ``enc_loc``, ``enc_scale`` (T, Z): the encoder's mean and standard deviation;
        ``enc_loc_change`` (T,): sum over z dims of (mu_t - mu_{t-1})^2, the paper's delta_t
        (Figure 2 plots this change of the posterior mean);
        ``enc_scale_change`` (T,): mean over z dims of |log sigma_t - log sigma_{t-1}|, the
        change of the encoder's standard deviation on a log scale (so a halving counts the same
        whatever the size of sigma, and each dim equally). Both changes are 0 at the first step.
    """
    ref = model.initial_state
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.dim() != 2 or x.shape[-1] != model.config.x_dim:
        raise ValueError(f"x must be one sequence (T, D={model.config.x_dim}), got shape "
                         f"{tuple(x.shape)}")
    x = x.to(device=ref.device, dtype=ref.dtype)
    gen = torch.Generator(device=ref.device).manual_seed(seed)
    with torch.no_grad():
        terms = model(x.unsqueeze(0), generator=gen, return_latents=True)  # batch of one
    lat = terms.latents
    enc_loc = lat["enc_loc"][0].double().cpu().numpy()  # (T, Z)
    enc_scale = lat["enc_scale"][0].double().cpu().numpy()  # (T, Z)
    return {
        "kl": terms.kl[0].double().cpu().numpy(),  # (T,)
        "log_px": terms.log_px[0].double().cpu().numpy(),  # (T,)
        "enc_loc": enc_loc,
        "enc_scale": enc_scale,
        "enc_loc_change": _first_difference(enc_loc, lambda d: (d**2).sum(1)),  # (T,)
        "enc_scale_change": _first_difference(np.log(enc_scale),
                                              lambda d: np.abs(d).mean(1)),  # (T,)
    }


def figure_kl(model: SequenceModel, x, info: DataInfo, out_png: str | Path, *, seed: int = 0,
              title: str | None = None, overwrite: bool = True) -> Path:
    """Figure 2 for one sequence: the data on top, then per-step KL and encoder changes.

    Panels share the time axis: (1) the sequence in data units (audio: the frames concatenated,
    in seconds when ``info.sample_rate`` is known; strokes: dx and dy per step; binary: the
    frames as a raster); (2) KL per step; (3) the change of the encoder mean (the paper's
    delta_t); (4) the change of the encoder standard deviation. Per-step values are drawn as
    steps over the span of their frame, so they line up with the waveform.

    Args:
        model, x, seed: as for :func:`kl_profile` (``x (T, D)`` normalised).
        info: the data's statistics and kind, to denormalise and label the top panel.
        out_png: the PNG to write (its folder is created).
        title: figure title; default names the model and the data.
        overwrite: False: never replace a file at ``out_png``, even one that appeared while the
            figure was drawn (:class:`vrnn.host.files.ClobberError`).

    Returns:
        ``out_png`` as a Path.
    """
    from matplotlib.figure import Figure

    prof = kl_profile(model, x, seed=seed)
    seq = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    data = np.asarray(info.denormalise(seq), dtype=np.float64)  # (T, D)
    T, D = data.shape
    sr = info.sample_rate if info.kind == "audio" else None
    if info.kind == "audio":
        span = D / sr if sr else D  # one frame, in seconds or samples
        unit = "time (s)" if sr else "time (samples)"
    else:
        span, unit = 1, "time step"
    edges = np.arange(T + 1) * span  # (T + 1,): frame boundaries

    fig = Figure(figsize=(9.0, 7.5), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True, height_ratios=(1.4, 1, 1, 1))
    top = axes[0]
    if info.kind == "audio":
        wave = data.reshape(-1)  # (T * D,): the frames concatenated
        top.plot(np.arange(len(wave)) * (span / D), wave, linewidth=0.5, color="black")
        top.set_ylabel("waveform")
    elif info.kind == "strokes":
        top.stairs(data[:, 0], edges, label="dx")
        top.stairs(data[:, 1], edges, label="dy")
        for t in np.flatnonzero(data[:, 2] > 0.5):
            top.axvline(t + 1, color="tab:gray", linewidth=0.5, alpha=0.6)
        top.set_ylabel("pen offset")
        top.legend(fontsize=8, loc="upper right", title="grey: pen up", title_fontsize=7)
    else:
        top.imshow(data.T, origin="lower", aspect="auto", cmap="gray_r", interpolation="nearest",
                   extent=(0, T, -0.5, D - 0.5))  # (D, T)
        top.set_ylabel("frame dim")
    panels = [(prof["kl"], "KL (nats)"),
              (prof["enc_loc_change"], "encoder mean\nchange " r"$\delta_t$"),
              (prof["enc_scale_change"], "encoder std\nchange (log)")]
    for ax, (values, label) in zip(axes[1:], panels):
        ax.stairs(values, edges, fill=True, alpha=0.8)
        ax.set_ylabel(label)
    axes[-1].set_xlabel(unit)
    axes[-1].set_xlim(edges[0], edges[-1])
    name = model.config.name or type(model).__name__
    fig.suptitle(title or f"{name} reading one sequence of {info.name}: KL per time step")
    from vrnn.host.files import atomic_write

    return atomic_write(Path(out_png), lambda f: fig.savefig(f, format="png", dpi=100),
                        overwrite=overwrite, flag="--out")

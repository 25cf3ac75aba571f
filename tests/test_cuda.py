"""The CUDA path, where a GPU is present (skipped elsewhere, so CI never runs it):
``benchmarks/gpu_check.sh`` runs this file on a GPU machine.

The fast paths against their literal per-step readings on the GPU (loss and every gradient, in
float32 with TF32 off, so the tolerances are float32's), bf16 training against float32 on the
GPU, the particle filter on the GPU, and a few training steps from the command line on it.
"""

import numpy as np
import pytest
import torch

from vrnn import build_model, model_config
from vrnn.models.reference import Literal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 rounds float32 products to 10 bits of mantissa: off, so that float32 is float32."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _grads(loss, module):
    return torch.autograd.grad(loss, [p for p in module.parameters() if p.requires_grad],
                               allow_unused=True)


def _assert_same(a_loss, b_loss, a_grads, b_grads, rtol):
    torch.testing.assert_close(a_loss, b_loss, rtol=rtol, atol=1e-5)
    for ga, gb in zip(a_grads, b_grads):
        if ga is None or gb is None:
            assert ga is None and gb is None
            continue
        scale = gb.abs().max().clamp_min(1e-6)
        assert ((ga - gb).abs().max() / scale).item() < rtol


@pytest.mark.parametrize("name", ["vrnn-gauss", "vrnn-gmm", "vrnn-i-gauss"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("posterior", ["filtering", "smoothing"])
def test_the_vrnn_on_the_gpu_is_its_literal_reading(name, cell, posterior):
    _assert_literal_on_the_gpu(name, cell=cell, posterior=posterior)


def _assert_literal_on_the_gpu(name: str, **kw) -> None:
    """The tiny ``name`` on the GPU: its fast path's loss and gradients on a ragged batch are
    its literal reading's."""
    torch.manual_seed(0)
    model = build_model(model_config(name, x_dim=5, preset="tiny", **kw)).cuda()
    x = torch.randn(3, 7, 5, device="cuda")
    mask = torch.ones(3, 7, dtype=torch.bool, device="cuda")
    mask[1, 5:] = mask[2, 3:] = False
    noise = torch.randn(3, 7, model.config.z_dim, device="cuda")
    fast = -model(x, mask, noise=noise).elbo(mask).mean()
    ref = Literal(model).loss(x, noise, mask)
    _assert_same(fast, ref, _grads(fast, model), _grads(ref, model), rtol=1e-4)


@pytest.mark.parametrize("posterior,res_q", [("smoothing", True), ("filtering", False)])
def test_the_srnn_on_the_gpu_is_its_literal_reading(posterior, res_q):
    torch.manual_seed(0)
    model = build_model(model_config("srnn-gauss", x_dim=5, preset="tiny", posterior=posterior,
                                     res_q=res_q)).cuda()
    x = torch.randn(3, 7, 5, device="cuda")
    noise = torch.randn(3, 7, model.config.z_dim, device="cuda")
    fast = -model(x, noise=noise).elbo().mean()
    ref = Literal(model).loss(x, noise)
    _assert_same(fast, ref, _grads(fast, model), _grads(ref, model), rtol=1e-4)


@pytest.mark.parametrize("name,posterior", [("dmm-gauss", "smoothing"),
                                            ("dmm-gauss", "filtering"),
                                            ("storn-gauss", "filtering")])
def test_the_dmm_and_storn_on_the_gpu_are_their_literal_reading(name, posterior):
    _assert_literal_on_the_gpu(name, posterior=posterior)


@pytest.mark.parametrize("name", ["vrnn-gauss", "srnn-gauss", "rnn-gmm", "dmm-gauss",
                                  "storn-gauss"])
def test_bf16_on_the_gpu_follows_float32(name):
    """bf16 (unit roundoff u = 2^-8) against float32 on the same GPU: the loss within 2%, the
    whole gradient within 10% in norm (tests/test_precision.py derives 3u sqrt(L) = 0.091 for
    its chain of L = 60 products; these tiny models have fewer)."""
    from vrnn.inference.objectives import ELBO
    from vrnn.kernels.precision import bf16_supported
    from vrnn.train.objective import LossModule

    if not bf16_supported(torch.device("cuda")):
        pytest.skip("this GPU has no native bfloat16")
    torch.manual_seed(0)
    model = build_model(model_config(name, x_dim=5, preset="tiny")).cuda()
    x = torch.randn(4, 9, 5, device="cuda")
    noise = torch.randn(4, 9, model.latent_dim, device="cuda")
    out = {}
    for p in ("fp32", "bf16"):
        loss, _ = LossModule(model, ELBO(), precision=p)(x, None, noise, None, 1.0, 0.25)
        out[p] = (loss, _grads(loss, model))
    assert all(g.dtype == torch.float32 for g in out["bf16"][1] if g is not None)
    torch.testing.assert_close(out["bf16"][0], out["fp32"][0], rtol=0.02, atol=1e-3)
    low, full = (torch.cat([g.flatten() for g in out[p][1] if g is not None])
                 for p in ("bf16", "fp32"))
    assert ((low - full).norm() / full.norm()).item() < 0.1


def test_the_particle_filter_runs_on_the_gpu():
    from vrnn.inference.smc import smc_log_likelihood

    torch.manual_seed(0)
    model = build_model(model_config("vrnn-gauss", x_dim=5, preset="tiny")).cuda().eval()
    x = torch.randn(3, 30, 5, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    est = smc_log_likelihood(model, x, particles=16, generator=gen)
    assert torch.isfinite(est.log_likelihood).all() and est.log_likelihood.device.type == "cuda"
    assert ((est.ess_mean >= 1 - 1e-4) & (est.ess_mean <= 16 + 1e-4)).all()
    again = smc_log_likelihood(model, x, particles=16,
                               generator=torch.Generator(device="cuda").manual_seed(0))
    torch.testing.assert_close(est.log_likelihood, again.log_likelihood)  # seeded on the GPU


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_from_the_command_line_on_the_gpu(tmp_path, precision):
    from toydata import vrnn, write_npz

    from vrnn.store.checkpoint import load_checkpoint

    data = write_npz(tmp_path / "d.npz", x_dim=4)
    out = tmp_path / "run"
    vrnn("train", "--data", data, "--model", "vrnn-gauss", "--preset", "tiny", "--max-steps",
         "6", "--val-interval", "3", "--batch-size", "4", "--device", "cuda", "--precision",
         precision, "--out", out, "--no-progress")
    ckpt = load_checkpoint(out / "best.pt")
    assert all(t.dtype == torch.float32 and t.device.type == "cpu"
               for t in ckpt["model"].values())
    assert np.isfinite(ckpt["best_bound"])

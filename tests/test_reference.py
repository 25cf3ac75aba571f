"""The literal reference (:mod:`vrnn.models.reference`) as the benchmark uses it: its own weights or
the model's, one step at a time, under ``torch.compile``."""

import pytest
import torch

from vrnn import build_model, model_config
from vrnn.models.reference import Literal


def tiny_vrnn(cell: str = "lstm"):
    torch.manual_seed(0)
    return build_model(model_config("vrnn-gmm", x_dim=4, preset="tiny", cell=cell))


def test_copy_holds_its_own_weights_and_sharing_trains_the_model():
    model = tiny_vrnn()
    x = torch.randn(2, 3, 4)
    noise = torch.randn(2, 3, model.config.z_dim)
    own, shared = Literal(model, copy=True), Literal(model)
    assert shared.net is model and own.net is not model
    own.loss(x, noise).backward()
    assert all(p.grad is None for p in model.parameters())  # the copy's gradients stay there
    shared.loss(x, noise).backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        model.decoder.head.linear.bias.add_(1.0)  # the copy does not see the model change
    assert own.loss(x, noise).item() != pytest.approx(shared.loss(x, noise).item())


def test_terms_are_the_steps_stacked():
    model = tiny_vrnn("gru")
    ref = Literal(model)
    x = torch.randn(3, 4, 4)
    noise = torch.randn(3, 4, model.config.z_dim)
    log_px, kl, log_ratio = ref.terms(x, noise)
    assert log_px.shape == kl.shape == log_ratio.shape == (3, 4)
    state = model.init_state(3)
    ctx = model.context(x, None, state)  # phi_x and the encoder's features, (B, T, .) each
    for t in range(4):
        out, state = ref.step(x[:, t], noise[:, t], state, tuple(c[:, t] for c in ctx))
        torch.testing.assert_close(out.kl, kl[:, t])
        torch.testing.assert_close(out.log_px, log_px[:, t])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    expected = -((log_px - kl) * mask).sum(1).mean()
    torch.testing.assert_close(ref.loss(x, noise, mask), expected)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")  # the compiler's own deprecation and non-leaf warnings
@pytest.mark.parametrize("name", ["vrnn-gmm", "vrnn-i-gauss"])
def test_step_compiles_as_one_graph(name):
    """The benchmark's per-step+compile variant: ``step`` under ``fullgraph=True`` (the
    distributions and kl_divergence included) gives the eager numbers and gradients."""
    torch.manual_seed(1)
    model = build_model(model_config(name, x_dim=4, preset="tiny", cell="gru"))
    ref = Literal(model, copy=True)
    step = torch.compile(ref.step, fullgraph=True, dynamic=False)
    x_t, eps_t = torch.randn(3, 4), torch.randn(3, model.config.z_dim)
    state = model.init_state(3)
    ctx_t = tuple(c[:, 0] for c in model.context(x_t[:, None], None, state))
    compiled, _ = step(x_t, eps_t, state, ctx_t)
    eager, _ = ref.step(x_t, eps_t, state, ctx_t)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)

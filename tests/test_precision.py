"""``--precision bf16`` (:mod:`vrnn.kernels.precision`): gradients against float64 with a derived
tolerance, the two loops against each other, what runs in which dtype, checkpoints, the missing
hardware, resume.

Tolerances. bfloat16 keeps 8 significant bits: rounding to it has unit roundoff u = 2^-8. A
product in bf16 rounds both operands and (on CPU) its result, accumulating in float32 (k terms
add at most k * 2^-24, below 1e-4 * u for k < 1000): each product's output carries a relative
error of at most 3u. The errors of independent roundings add in quadrature, and a gradient is
made by a chain of L products (forward through T steps of P products each and the few after the
loop, then the same chain backwards): L = 2 (T P + P_after). So the gradient's normwise relative
error is about 3u sqrt(L), the tolerance of :func:`test_bf16_gradients_agree_with_float64`. It
must also be at least u / 8: below that the products did not run in bf16.

The two loops (hand-written backward, autograd) run the same products on the same bf16 operands.
Every gradient that is a float32 sum of activation gradients (the biases, h_0, phi_x and what
lies after the loop) then differs between them only by float32 rounding, ~2^-24 per operation
through the same L-deep chain (~1e-6), and by the rare operand that float32's other order of
work moves across a bf16 rounding boundary (a value within 2^-24 of a midpoint between two
bf16 numbers: probability 2^-16 per rounding, each moving one element by u, ~1e-7 here): they
must agree within 1e-5. The loop's weight matrices differ by design: the hand-written pass makes
each gradient one product over all N T rows, rounded to bf16 once (relative error <= u), and
autograd T products of N rows, each rounded (<= u of its own size, errors that partly
average); both within u of the exact sum of the same terms, so within 2u of each other. A 1.01
scaling of one gradient (0.01 > 2u = 0.0078), a product of the loop left in float32 (an error
of order u in every activation gradient, >> 1e-5) or a bf16 copy of a weight summing its T
gradients in bf16 (this test found that one) fail.
"""

import copy
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from toydata import tiny_train_config, write_npz

from vrnn import build_model, model_config
from vrnn.commands.evaluate import evaluate_checkpoint
from vrnn.inference import protocol as protocol_mod
from vrnn.inference.objectives import make_objective
from vrnn.kernels import filtering as filtering_mod
from vrnn.kernels import filtering_backward as backward_mod
from vrnn.kernels import precision
from vrnn.store.checkpoint import load_checkpoint
from vrnn.train.loop import TrainConfig, config_from_args, train
from vrnn.train.objective import LossModule

U = 2.0 ** -8
CPU = torch.device("cpu")
T, B = 6, 3


def _vrnn(cell: str, hand_written: bool = True, encoder=(32,), phi_z=(32,)):
    cfg = model_config("vrnn-gauss", x_dim=5, preset="tiny", cell=cell, h_dim=64, z_dim=8,
                       phi_x=(32,), encoder=encoder, phi_z=phi_z, prior_net=(32,),
                       decoder=(32,))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.custom_loop = hand_written
    return model


def _batch(x_dim=5, z_dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, x_dim, generator=gen), torch.randn(B, T, z_dim, generator=gen)


def _gradient(model, x, noise, prec: str, dtype=torch.float32, objective="elbo",
              particles=1) -> torch.Tensor:
    """All parameter gradients of the mean negative ELBO (or ``objective``), concatenated, in
    float64."""
    model = copy.deepcopy(model).to(dtype)
    obj = LossModule(model, make_objective(objective, particles=particles), precision=prec)
    loss, _ = obj(x.to(dtype), None, noise.to(dtype), None, 1.0, 1.0 / x.shape[0])
    loss.backward()
    return torch.cat([p.grad.double().flatten() for p in model.parameters()])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _chain_length(model) -> int:
    """L of the module docstring: products per step on the recurrence (the encoder's layers,
    its Gaussian layer, phi_z's layers, the cell) over T steps, and after the loop the deepest
    of prior and decoder (layers + head), forward and backward."""
    cfg = model.config
    per_step = len(cfg.encoder) + 1 + len(cfg.phi_z) + 1
    after = max(len(cfg.prior_net), len(cfg.decoder)) + 1
    return 2 * (T * per_step + after)


@pytest.mark.parametrize("hand_written", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bf16_gradients_agree_with_float64(cell, hand_written):
    """The bf16 gradient of a training step against the float64 one, normwise relative error
    within 3u sqrt(L) (module docstring; L = 60 here, so 0.091), and above u / 8 (bf16 ran)."""
    model = _vrnn(cell, hand_written)
    x, noise = _batch()
    exact = _gradient(model, x, noise, "fp32", torch.float64)
    error = _rel(_gradient(model, x, noise, "bf16"), exact)
    tolerance = 3 * U * math.sqrt(_chain_length(model))
    assert U / 8 < error < tolerance, (error, tolerance)
    # float32 is far inside it: the tolerance is bf16's, not a loose one
    assert _rel(_gradient(model, x, noise, "fp32"), exact) < 1e-5


def _loop_matrix(name: str) -> bool:
    """The weight matrices the filtering loop multiplies by at every step."""
    return ".weight" in name and name.split(".")[0] in ("encoder", "phi_z", "cell")


def _loops_disagree(model, hand, autograd) -> list[str]:
    """The parameters whose two gradients differ by more than their tolerance (module
    docstring): 2u for the loop's weight matrices, 1e-5 for everything else."""
    wrong, i = [], 0
    for name, p in model.named_parameters():
        a, b = hand[i:i + p.numel()], autograd[i:i + p.numel()]
        i += p.numel()
        if b.norm() > 0 and _rel(a, b) > (2 * U if _loop_matrix(name) else 1e-5):
            wrong.append(name)
    return wrong


class _Float32Factor(precision.Factor):
    """A planted bug: a :class:`precision.Factor` whose products run in float32 whatever the
    precision."""

    def __init__(self, b, dtype, rows):
        super().__init__(b.float(), None, rows)

    def mm(self, a, *, out=None, keep_low=False):
        return _mm_in_float32(a, self.b, out=out)

    def addmm(self, c, a, *, out=None):
        return torch.add(c, torch.mm(a.float(), self.b), out=out)


def _mm_in_float32(a, b, dtype=None, *, out=None, keep_low=False):
    """A planted bug: ``precision.mm`` with its product in float32 whatever it is asked."""
    product = torch.mm(a.float(), b.float())
    return product if out is None else out.copy_(product)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_two_loops_agree_in_bf16_and_a_planted_bug_would_not(cell, monkeypatch):
    """The hand-written backward and autograd over the same bf16 loop agree within the module
    docstring's tolerances, parameter by parameter; three planted bugs each break that: one
    weight's gradient scaled by 1.01, the hand-written loop's products left in float32, and its
    backward's product for d h_{t-1} alone left in float32."""
    model = _vrnn(cell, True)
    x, noise = _batch()
    autograd = _gradient(_vrnn(cell, False), x, noise, "bf16")
    hand = _gradient(model, x, noise, "bf16")
    assert _loops_disagree(model, hand, autograd) == []

    # planted bug 1: the gradient of one weight (the cell's hidden-to-hidden matrix) times 1.01
    start = 0
    for name, p in model.named_parameters():
        if name == "cell.weight_hh":
            break
        start += p.numel()
    scaled = hand.clone()
    scaled[start:start + model.cell.weight_hh.numel()] *= 1.01
    assert _loops_disagree(model, scaled, autograd) == ["cell.weight_hh"]

    # planted bug 2: the hand-written loop's products in float32 (bf16 forgotten there)
    with monkeypatch.context() as m:
        m.setattr(backward_mod, "mm", _mm_in_float32)
        m.setattr(backward_mod, "addmm", lambda c, a, b, dtype=None, *, out=None:
                  precision.addmm(c, a.float(), b.float(), None, out=out))
        for module in (filtering_mod, backward_mod):
            m.setattr(module, "Factor", _Float32Factor)
        forgot = _gradient(_vrnn(cell, True), x, noise, "bf16")
    assert "cell.bias_hh" in _loops_disagree(model, forgot, autograd)

    # planted bug 3: only the backward's product for d h_{t-1}, (N, E1 + G) @ w_h, in float32
    H = model.config.h_dim

    def factor(b, dtype, rows):
        if dtype is not None and b.shape[1] == H and b.shape[0] > 2 * H:
            return _Float32Factor(b, dtype, rows)
        return precision.Factor(b, dtype, rows)

    monkeypatch.setattr(backward_mod, "Factor", factor)  # the backward pass's products only
    one_forgot = _gradient(_vrnn(cell, True), x, noise, "bf16")
    assert "cell.bias_hh" in _loops_disagree(model, one_forgot, autograd)


@pytest.mark.parametrize("cell,encoder,phi_z", [("lstm", (32,), (32,)), ("gru", (32,), (32,)),
                                               ("lstm", (32, 16), ()), ("gru", (16, 32), (32, 16))])
def test_the_two_loops_agree_in_bf16_with_replicas_and_other_depths(cell, encoder, phi_z):
    """The same agreement for IWAE's K = 2 replicas of each sequence (the products with
    phi_x(x_t) shared by the replicas, their gradients summed over them in float32) and for
    encoders and phi_z of other depths (none: phi_z the identity)."""
    x, noise = _batch()
    noise = noise.repeat(2, 1, 1)
    grads = [_gradient(_vrnn(cell, hand, encoder, phi_z), x, noise, "bf16", objective="iwae",
                       particles=2) for hand in (True, False)]
    assert _loops_disagree(_vrnn(cell, True, encoder, phi_z), *grads) == []


def test_prepacked_products_are_the_plain_products_bit_for_bit(monkeypatch):
    """In bf16 on CPU the loop's matrices are prepacked for oneDNN (:class:`precision.Factor`):
    the gradients are those of plain ``torch.mm`` on the same bf16 operands, bit for bit, and
    the packed kernel is what runs where this PyTorch has it."""
    model = _vrnn("lstm")
    x, noise = _batch()
    packed = _gradient(model, x, noise, "bf16")
    if precision._can_pack():
        kernels = {f for f, _ in _audit(model, x, noise, backward=True).products}
        assert "mkldnn._linear_pointwise.default" in kernels
    monkeypatch.setattr(precision, "PACK", False)
    assert torch.equal(packed, _gradient(model, x, noise, "bf16"))


# -- what runs in which dtype -------------------------------------------------------------------

_PRODUCTS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm,
             torch.ops.aten.baddbmm, torch.ops.mkldnn._linear_pointwise}
"""(the last: oneDNN's prepacked product, :class:`vrnn.kernels.precision.Factor` in bf16 on CPU)"""
_FLOAT32_ONLY = {torch.ops.aten.sum, torch.ops.aten.mean, torch.ops.aten.logsumexp,
                 torch.ops.aten.log, torch.ops.aten.exp, torch.ops.aten.softplus,
                 torch.ops.aten._log_softmax, torch.ops.aten.log_softmax,
                 torch.ops.aten.clamp_min, torch.ops.aten.xlogy, torch.ops.aten.log1p}
"""Reductions (over time, frames, latents, particles) and the log-density maths."""


class _DtypeAudit(TorchDispatchMode):
    """Records the floating dtypes of the inputs of every product and of every op in
    ``_FLOAT32_ONLY`` (forward and backward: CPU autograd runs on the calling thread)."""

    def __init__(self):
        super().__init__()
        self.products: list[tuple[str, set]] = []
        self.float32_only: list[tuple[str, set]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()}
        if packet in _PRODUCTS:
            self.products.append((str(func), dtypes))
        elif packet in _FLOAT32_ONLY:
            self.float32_only.append((str(func), dtypes))
        return func(*args, **(kwargs or {}))


def _audit(model, x, noise, backward: bool, objective="elbo"):
    audit = _DtypeAudit()
    obj = LossModule(model, make_objective(objective, particles=2), precision="bf16")
    with audit:
        loss, _ = obj(x, None, noise, None, 1.0, 1.0,
                      torch.Generator().manual_seed(0) if objective == "fivo" else None)
        if backward:
            loss.backward()
    return audit


def _bf16_products_only(audit):
    wrong = [(f, d) for f, d in audit.products if d != {torch.bfloat16}]
    assert audit.products and not wrong, wrong[:5]


def _no_bf16_reductions(audit):
    wrong = [(f, d) for f, d in audit.float32_only if torch.bfloat16 in d]
    assert audit.float32_only and not wrong, wrong[:5]


# the library's fused LSTM (the SRNN's d_t, the RNN baselines) has no bf16 kernel in oneDNN on a
# CPU without AVX-512 ("could not create a primitive descriptor for the LSTM forward"); there
# `--precision bf16` is refused anyway (test_bf16_without_hardware_support_is_refused_...)
_NATIVE_BF16 = pytest.mark.skipif(not precision.cpu_has_bf16(),
                                  reason="oneDNN's bf16 LSTM needs a CPU with native bf16")


@pytest.mark.parametrize("name,hand_written", [
    ("vrnn-gauss", True), ("vrnn-gauss", False), ("vrnn-gmm", True),
    pytest.param("srnn-gauss", True, marks=_NATIVE_BF16),
    pytest.param("rnn-gmm", True, marks=_NATIVE_BF16)])
def test_every_product_is_bf16_and_every_density_and_sum_float32(name, hand_written):
    """In a bf16 training step every matrix product, forward and backward, has bfloat16
    operands (the hand-written loop's and its backward's included), and in the forward pass
    every sum, log-sum-exp, log, exp and softplus reads float32."""
    cfg = model_config(name, x_dim=5, preset="tiny")
    torch.manual_seed(0)
    model = build_model(cfg)
    model.custom_loop = hand_written
    x, noise = _batch(z_dim=cfg.z_dim)
    _no_bf16_reductions(_audit(model, x, noise, backward=False))
    _bf16_products_only(_audit(model, x, noise, backward=True))
    for p in model.parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32


@pytest.mark.parametrize("objective", ["iwae", "fivo"])
def test_the_particle_bounds_log_sum_exp_in_float32(objective):
    model = _vrnn("lstm")
    x, noise = _batch()
    noise = noise.repeat(2, 1, 1) if objective == "iwae" else noise
    _no_bf16_reductions(_audit(model, x, noise, backward=False, objective=objective))


def test_the_audit_catches_a_sum_over_time_in_bf16_and_a_float32_product(monkeypatch):
    """The dtype audit is not vacuous: a masked_sum over time done in bf16, and the loop's
    products left in float32, are each caught."""
    model = _vrnn("lstm")
    x, noise = _batch()
    real_sum = protocol_mod.masked_sum
    with monkeypatch.context() as m:
        m.setattr(protocol_mod, "masked_sum",
                  lambda values, mask: real_sum(values.bfloat16(), mask).float())
        with pytest.raises(AssertionError):
            _no_bf16_reductions(_audit(model, x, noise, backward=False))
    monkeypatch.setattr(backward_mod, "mm", _mm_in_float32)
    for module in (filtering_mod, backward_mod):
        monkeypatch.setattr(module, "Factor", _Float32Factor)
    with pytest.raises(AssertionError):
        _bf16_products_only(_audit(model, x, noise, backward=True))


def test_fp32_is_the_plain_float32_step_bit_for_bit():
    """``precision='fp32'`` changes nothing: the same loss and gradients as the model's own
    loss, bit for bit (no cast, no autocast)."""
    model = _vrnn("lstm")
    x, noise = _batch()
    a = _gradient(model, x, noise, "fp32")
    ref = copy.deepcopy(model)
    loss, _ = ref.loss(x, noise=noise)
    (loss * 1.0).backward()
    assert torch.equal(a, torch.cat([p.grad.double().flatten() for p in ref.parameters()]))


# -- training, checkpoints, support, resume -----------------------------------------------------

@pytest.fixture
def data(tmp_path):
    return str(write_npz(tmp_path / "toy.npz"))


@pytest.fixture
def has_bf16(monkeypatch):
    """The tests of training in bf16 run on any CPU (bf16 products are emulated where the
    hardware lacks them: slow, but the same numbers)."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)


def test_a_bf16_run_writes_float32_checkpoints_that_evaluate_in_float32(data, tmp_path,
                                                                        has_bf16):
    result = train(tiny_train_config(data, tmp_path / "run", precision="bf16"))
    assert result.stopped == "max_steps" and np.isfinite(result.best_bound)
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(tmp_path / "run" / name)
        assert ckpt["train_config"]["precision"] == "bf16"
        assert all(t.dtype == torch.float32 for t in ckpt["model"].values()
                   if t.is_floating_point())
        for state in ckpt["optimizer"]["state"].values():
            assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    res = evaluate_checkpoint(tmp_path / "run" / "best.pt", samples=2, device="cpu")
    assert np.isfinite(res["elbo"])


def test_evaluate_in_bf16_when_asked_close_to_fp32_and_refused_without_support(
        data, tmp_path, monkeypatch):
    """``vrnn evaluate --precision bf16``: the same checkpoint's bound and estimate within a few
    u of fp32's (relative; not equal: the products did run in bf16), the precision in the
    result; without native bf16 the flag is refused by name."""
    train(tiny_train_config(data, tmp_path / "run"))
    ckpt = tmp_path / "run" / "best.pt"
    fp32 = evaluate_checkpoint(ckpt, samples=3, device="cpu")
    assert fp32["precision"] == "fp32"
    if precision.bf16_supported(CPU):
        bf16 = evaluate_checkpoint(ckpt, samples=3, device="cpu", precision="bf16")
        assert bf16["precision"] == "bf16"
        for key in ("elbo", "log_likelihood"):
            rel = abs(bf16[key] - fp32[key]) / abs(fp32[key])
            assert 0 < rel < 4 * U, (key, rel)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match=r"--precision bf16"):
        evaluate_checkpoint(ckpt, samples=3, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match=r"--precision must be one of"):
        evaluate_checkpoint(ckpt, samples=3, device="cpu", precision="fp16")


def test_bf16_without_hardware_support_is_refused_naming_the_flag(data, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match=r"--precision bf16: this CPU has neither AVX-512 BF16"):
        train(tiny_train_config(data, tmp_path / "run", precision="bf16"))
    assert not (tmp_path / "run" / "last.pt").exists()
    train(tiny_train_config(data, tmp_path / "run", precision="fp32", max_steps=1))


def test_the_refusal_names_the_flag_of_the_command_at_hand(data, tmp_path, monkeypatch, capsys):
    """``vrnn evaluate --precision bf16`` without native bf16: one line, status 2, that tells
    how to run *evaluate* in fp32, not how to train; ``vrnn train``'s names train's."""
    from vrnn.cli import main

    train(tiny_train_config(data, tmp_path / "run", max_steps=1))
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    ckpt = str(tmp_path / "run" / "last.pt")
    capsys.readouterr()
    assert main(["evaluate", ckpt, "--samples", "2", "--device", "cpu",
                 "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "vrnn evaluate: error: --precision bf16: this CPU" in err
    assert "vrnn evaluate --precision fp32" in err and "train with" not in err, err
    assert main(["train", "--data", data, "--model", "vrnn-gauss", "--preset", "tiny",
                 "--out", str(tmp_path / "bf16"), "--device", "cpu", "--precision", "bf16",
                 "--no-progress"]) == 2
    assert "vrnn train --precision fp32" in capsys.readouterr().err


def test_the_support_check_reads_torchs_cpu_capabilities(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.cpu_has_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.cpu_has_bf16() and precision.bf16_supported(CPU)


def test_precision_is_a_flag_and_a_bad_value_names_it():
    with pytest.raises(ValueError, match="--precision must be fp32 or bf16"):
        TrainConfig(precision="fp16")
    assert TrainConfig().precision == "fp32"


def test_a_run_resumed_in_another_precision_continues_with_a_note(data, tmp_path, has_bf16,
                                                                 capsys):
    """Allowed: the weights and Adam's state are float32 either way, so a run can change its
    precision on resume; the command line says so (a run that changed will not match one that
    never stopped)."""
    out = tmp_path / "run"
    train(tiny_train_config(data, out, max_steps=4))
    fields = vars(tiny_train_config(data, out, max_steps=8, resume="auto", precision="bf16"))
    cfg = config_from_args(fields, ["--precision", "bf16", "--resume", "auto", "--max-steps", "8"])
    assert "note: --precision bf16 overrides the run's fp32" in capsys.readouterr().err
    result = train(cfg)
    assert result.step == 8
    assert load_checkpoint(out / "last.pt")["train_config"]["precision"] == "bf16"

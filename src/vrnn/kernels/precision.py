"""The dtype policy of training: ``--precision fp32`` (every product in float32, as always) or
``--precision bf16`` (the matrix products in bfloat16 with float32 accumulation).

What bf16 changes, and what it leaves alone. The weights, their gradients and Adam's state stay
float32 (a checkpoint is the same either way). Only the *products* run in bfloat16: their
operands are rounded to bfloat16 (8 significant bits), the sum of each dot product accumulates
in float32 inside the kernel, and the result comes back as float32 (rounded to bfloat16 on the
way out on CPU, where ``torch.mm`` has no float32 output for bfloat16 inputs). Everything after a
product stays float32: the gates, the ReLUs, the softplus scales, the log-densities, the KL, the
log-sum-exp of the K-particle bounds and every sum over time. That is :func:`autocast`:
``torch.autocast`` for the products of the library's modules and functions, with every
``nn.Linear`` and library RNN output cast straight back to float32, so that autocast's habit of
running the elementwise work after a product in bfloat16 never reaches a density.

The hand-written filtering loop (:mod:`vrnn.kernels.filtering`) cannot run under autocast (its
products write into preallocated float32 buffers); it reads the autocast state with
:func:`product_dtype` and runs its products, forward and backward, through :func:`mm`,
:func:`addmm`, :func:`linear` and :class:`Factor` (a matrix every step multiplies by, cast and, on
CPU, prepacked for oneDNN once per pass), which are ``torch.mm``, ``torch.addmm`` and ``F.linear``
exactly when the dtype is None (float32: bit for bit what it computed before this module). In bf16
it keeps in bfloat16 only what is read solely as a product's operand (h_{t-1}'s copy, the encoder's
ReLU outputs, the pre-activation gradients of the two big products), so that no value is rounded
that a float32 sum would read.

Evaluation (``vrnn evaluate``, validation, ``reproduce``) runs outside :func:`autocast`, so in
float32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16")
"""The values of ``--precision``."""

LOW = {"fp32": None, "bf16": torch.bfloat16}
"""The dtype of the products of each precision (None: float32, no casting at all)."""


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX).

    PyTorch has no public check for the CPU (``torch.cuda.is_bf16_supported`` is CUDA's); this
    reads the CPU capabilities torch itself detected (``torch.cpu._is_avx512_bf16_supported``,
    ``torch.cpu._is_amx_tile_supported``). Without them bfloat16 products are emulated, slower
    than float32. A module attribute, so that a test can pretend a CPU lacks them."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 products natively: a CUDA device by
    ``torch.cuda.is_bf16_supported()``, a CPU by :func:`cpu_has_bf16`."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def check_supported(precision: str, device: torch.device, command: str = "vrnn train") -> None:
    """Refuse ``--precision bf16`` on a device without native bfloat16 products (a
    ``ValueError`` naming the flag and the device, and telling how to run ``command``, the
    command at hand, in fp32); fp32 is always supported."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or bf16_supported(device):
        return
    what = ("this CPU has neither AVX-512 BF16 nor AMX instructions" if device.type == "cpu"
            else f"{device} does not support bfloat16 (torch.cuda.is_bf16_supported() is False)")
    raise ValueError(f"--precision bf16: {what}, so bfloat16 products would be emulated, slower "
                     f"than float32; run {command} --precision fp32 (or leave the flag out: "
                     f"fp32 is the default)")


# -- the products of the library's modules: autocast, outputs back to float32 ---------------------

_CAST_BACK = (nn.Linear, nn.RNNBase, nn.RNNCellBase)
"""Modules whose outputs :func:`autocast` casts back to float32: every product of the models'
own layers is one of these (or a direct call the model casts itself)."""


def from_low(t: Tensor) -> Tensor:
    """``t`` in float32 if autocast made it bfloat16, else ``t`` itself (float64 stays float64)."""
    return t.float() if t.dtype == torch.bfloat16 else t


def _from_low_all(value):
    if isinstance(value, Tensor):
        return from_low(value)
    if isinstance(value, tuple):
        return tuple(_from_low_all(v) for v in value)
    return value


def _cast_back_hook(module: nn.Module, inputs, output):
    return _from_low_all(output)


@contextlib.contextmanager
def autocast(model: nn.Module, precision: str, device: torch.device) -> Iterator[None]:
    """The forward pass of ``model`` at ``precision``: nothing at all for fp32; for bf16,
    ``torch.autocast(device.type, torch.bfloat16)`` with the output of every ``nn.Linear`` and
    library RNN of ``model`` cast back to float32 (forward hooks, removed on exit), and the
    hand-written filtering loop's products in bfloat16 (it reads :func:`product_dtype`).

    Wrap the forward only: the backward pass then runs every product in the dtype its forward
    used, and the parameters' gradients arrive in float32. Every use of a weight casts it
    afresh (autocast's cache is off), so that the gradients of a weight used at every step of a
    loop are summed over time in float32."""
    low = LOW[precision]
    if low is None:
        yield
        return
    handles = [m.register_forward_hook(_cast_back_hook) for m in model.modules()
               if isinstance(m, _CAST_BACK)]
    try:
        # no cache: a bf16 copy of a weight shared by the steps of a loop (the SRNN's z-chain,
        # a step-by-step filter) would sum its per-step gradients in bfloat16
        with torch.autocast(device.type, dtype=low, cache_enabled=False):
            yield
    finally:
        for handle in handles:
            handle.remove()


def product_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast gives products on ``device_type`` here, or None (float32) when
    autocast is off: how the hand-written loops learn the precision they run at."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


# -- products for the hand-written loops -----------------------------------------------------------

def low(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``t`` in the products' dtype (itself when ``dtype`` is None or already its dtype)."""
    return t if dtype is None else t.to(dtype)


def mm(a: Tensor, b: Tensor, dtype: torch.dtype | None = None, *,
       out: Tensor | None = None, keep_low: bool = False) -> Tensor:
    """``a @ b`` as ``torch.mm`` (``dtype`` None), or with both operands in ``dtype`` and the
    result in float32 (into ``out`` when given, which may also be a ``dtype`` buffer).

    ``keep_low``: return the product in ``dtype`` as the kernel wrote it, for a caller that
    only adds it to float32 tensors (a mixed-dtype sum is computed in float32; on CPU the
    product is rounded to ``dtype`` on its way out in any case), saving the cast."""
    if dtype is None:
        return torch.mm(a, b, out=out)
    if out is not None and out.dtype == dtype:  # a buffer in the products' dtype
        return torch.mm(low(a, dtype), low(b, dtype), out=out)
    product = torch.mm(low(a, dtype), low(b, dtype))
    if out is not None:
        return out.copy_(product)
    return product if keep_low else product.float()


def addmm(c: Tensor, a: Tensor, b: Tensor, dtype: torch.dtype | None = None, *,
          out: Tensor | None = None) -> Tensor:
    """``c + a @ b`` as ``torch.addmm`` (``dtype`` None), or with the product in ``dtype`` and
    the sum with ``c`` in float32."""
    if dtype is None:
        return torch.addmm(c, a, b, out=out)
    return torch.add(c, torch.mm(low(a, dtype), low(b, dtype)), out=out)


def linear(x: Tensor, w: Tensor, b: Tensor | None = None,
           dtype: torch.dtype | None = None) -> Tensor:
    """``F.linear(x, w, b)`` (``dtype`` None), or its product in ``dtype`` and the bias added in
    float32; differentiable either way."""
    if dtype is None:
        return F.linear(x, w, b)
    product = F.linear(low(x, dtype), low(w, dtype)).float()
    # cast, then add in place: a mixed-dtype torch.add(b, product) is twice as slow on CPU
    return product if b is None else product.add_(b)


# -- a right factor read by every step of a loop, prepared once -----------------------------------

@functools.cache
def _can_pack() -> bool:
    """Whether this PyTorch and this CPU have oneDNN's prepacked bf16 linear (the kernels
    inductor uses on CPU). Tried once on a small matrix: a PyTorch without the ops, or a CPU
    without AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, whose oneDNN refuses the bf16 reorder,
    gets the plain products."""
    ops = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise")):
        return False
    try:
        ops._reorder_linear_weight(torch.zeros(8, 8, dtype=torch.bfloat16), 4)
    except RuntimeError:  # "bf16 path needs the cpu support avx_ne_convert or avx512bw, ..."
        return False
    return True


PACK = True
"""Whether :class:`Factor` prepacks bfloat16 matrices on CPU (a module attribute, so that a
test or a benchmark can compare both ways)."""


class Factor:
    """The right factor ``b (k, n)`` of the products ``a @ b`` that every step of a loop reads,
    in the products' ``dtype``, prepared once per pass for ``rows`` rows of ``a``.

    float32 (``dtype`` None): ``b`` itself, and :meth:`mm` / :meth:`addmm` are exactly
    ``torch.mm`` / ``torch.addmm``. bfloat16 on CPU: ``b`` cast once and, where oneDNN is
    available, also reordered into oneDNN's blocked layout (``torch.ops.mkldnn``'s prepacked
    linear, as inductor uses it): a thin bf16 product (32 rows) otherwise spends a good part of
    its time reordering the same weight at every call; prepacked it runs 1.1 to 1.6 times
    faster at the handwriting and speech sizes. The arithmetic is the same (bf16 operands,
    float32 accumulation, the product rounded to bf16 on its way out, as ``torch.mm`` does)."""

    def __init__(self, b: Tensor, dtype: torch.dtype | None, rows: int):
        self.dtype = dtype
        self.b = low(b, dtype)
        self.packed = None
        if (dtype == torch.bfloat16 and b.device.type == "cpu" and PACK and _can_pack()):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.b.t().contiguous(),
                                                                      rows)
            except RuntimeError:  # a shape this oneDNN refuses: plain products
                self.packed = None

    def _low_product(self, a: Tensor) -> Tensor:
        a = low(a, self.dtype)
        if self.packed is None:
            return torch.mm(a, self.b)
        return torch.ops.mkldnn._linear_pointwise(a, self.packed, None, "none", [], "")

    def mm(self, a: Tensor, *, out: Tensor | None = None, keep_low: bool = False) -> Tensor:
        """``a @ b`` as :func:`mm` computes it (``out`` and ``keep_low`` likewise)."""
        if self.dtype is None:
            return torch.mm(a, self.b, out=out)
        if out is not None and out.dtype == self.dtype and self.packed is None:
            return torch.mm(low(a, self.dtype), self.b, out=out)
        product = self._low_product(a)
        if out is not None:
            return out.copy_(product)
        return product if keep_low else product.float()

    def addmm(self, c: Tensor, a: Tensor, *, out: Tensor | None = None) -> Tensor:
        """``c + a @ b`` as :func:`addmm` computes it: the sum with ``c`` in float32."""
        if self.dtype is None:
            return torch.addmm(c, a, self.b, out=out)
        return torch.add(c, self._low_product(a), out=out)


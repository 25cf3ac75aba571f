"""A ReLU MLP whose forward pass already ran step by step: its recorded activations, differentiated.

A particle filter inside the filtering loop (FIVO) needs each step's weights before it can choose
the ancestors of the next, so the prior's and the decoder's MLPs run once per step inside the loop,
without gradient. The bound's gradient then needs those same networks over all steps, batched,
under autograd: the same forward products a second time. :class:`MLPRecord` keeps the first
pass's activations (written step by step into ``(N, T, width)`` buffers) and :func:`replay`
hands them to autograd as the MLP's output over all steps, so the batched pass skips the forward
products and keeps only the backward ones: per layer l, from the gradient ``g`` of its output
``a_l = relu(a_{l-1} W_l^T + b_l)``, ``g_pre = g * [a_l > 0]``, ``dW_l = g_pre^T a_{l-1}``,
``db_l = sum g_pre``, and ``g_pre W_l`` for the layer below, each one product over all N * T rows.

The recorded values are those the batched forward would compute (the same products on the same
rows, summed in another order), so the gradient is autograd's of the MLP at those activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["MLPRecord", "replay"]

Pair = tuple[Tensor, Tensor]


class MLPRecord:
    """The activations of a ReLU MLP (``layers``: its ``(weight, bias)`` pairs) over ``rows`` rows
    and ``steps`` steps, written one step at a time by :meth:`record`.

    ``buffers[l]`` is ``(rows, steps, width_l)``: the output of layer l at every step, in the row
    order the step had."""

    def __init__(self, layers: tuple[Pair, ...], rows: int, steps: int, like: Tensor):
        self.layers = layers
        self.buffers = tuple(like.new_empty(rows, steps, w.shape[0]) for w, _ in layers)

    @torch.no_grad()
    def record(self, t: int, inp: Tensor) -> Tensor:
        """The MLP of step t's input ``(rows, in)`` -> ``(rows, width)``, its activations kept."""
        for (w, b), buf in zip(self.layers, self.buffers):
            inp = torch.relu_(F.linear(inp, w, b))
            buf[:, t] = inp
        return inp

    def replay(self, inp: Tensor) -> Tensor:
        """The MLP of ``inp (rows, steps, in)``, every step's input as :meth:`record` read it:
        the recorded output, differentiable in ``inp`` and the weights."""
        return replay(inp, self.layers, self.buffers)


def replay(inp: Tensor, layers: tuple[Pair, ...], activations: tuple[Tensor, ...]) -> Tensor:
    """``relu(... relu(inp W_1^T + b_1) ...)`` given its activations ``activations[l]`` (the
    output of layer l for ``inp``): the last of them, with the MLP's gradient."""
    flat = [t for pair in layers for t in pair]
    return _Replay.apply(inp, len(layers), *activations, *flat)


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp: Tensor, n: int, *tensors: Tensor) -> Tensor:
        acts, flat = tensors[:n], tensors[n:]
        ctx.n = n
        ctx.save_for_backward(inp, *acts, *flat[0::2])
        return acts[-1].view_as(acts[-1])  # no copy: the buffer is this pass's alone

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        n = ctx.n
        inp, *saved = ctx.saved_tensors
        acts, weights = saved[:n], saved[n:]
        needs = ctx.needs_input_grad
        grads: list[Tensor | None] = [None] * (2 * n)
        g = grad.reshape(-1, grad.shape[-1])
        for layer in reversed(range(n)):
            below = acts[layer - 1] if layer > 0 else inp
            below = below.reshape(-1, below.shape[-1])
            g = g * (acts[layer].reshape(g.shape) > 0)  # through the ReLU
            if needs[2 + n + 2 * layer]:
                grads[2 * layer] = g.T @ below
            if needs[2 + n + 2 * layer + 1]:
                grads[2 * layer + 1] = g.sum(0)
            if layer == 0 and not needs[0]:
                g = None
                break
            g = g @ weights[layer]
        grad_inp = None if g is None else g.view(inp.shape)
        return (grad_inp, None, *([None] * n), *grads)

"""Weight gradients of a convolution that runs at many time steps, computed once.

An unrolled ConvRNN applies each convolution at every time step with the same weight W,
so its weight gradient is a sum over the steps,

    dL/dW = sum_t wgrad(x_t, g_t),     g_t = dL/dy_t,  y_t = W * x_t,

and a weight gradient is one correlation of inputs with output gradients, additive in
the batch: sum_t wgrad(x_t, g_t) = wgrad(cat_t x_t, cat_t g_t). Autograd computes (and
accumulates into .grad) one weight gradient per step; where the layer's maps are small
and its weight large (the 512-channel 2x2 layers of `rgc_intermediate`: 2.4M weights
against 16K activations) each of those is one pass over the whole weight, and the steps
cost 10-20x what the one batched correlation costs.

Inside `shared_weights()` (a `ConvRNN.forward` opens one), `conv2d` runs every
convolution through `_StepConv`: its backward returns the input and bias gradients and
files (x_t, g_t) with the weight's `_Bank`; the weight itself enters every step through
one `_Share` node, whose backward autograd runs only after every step that used the
weight has run its own (the engine's dependency count), so it computes the weight
gradient once from all that were filed. A step whose backward never runs files
nothing: the sum is exactly the steps the loss reached.

Differentiating twice (MAML's create_graph) is untouched: a backward that runs with
grad mode on returns the ordinary differentiable weight gradient instead of filing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

GEMM_MAX_POSITIONS = 4
"""Output maps of at most this many positions get their weight gradient as a matrix
product (`_Bank._correlate`)."""

WEIGHT_BOUND_RATIO = 4
WEIGHT_BOUND_MIN = 1 << 16
"""A convolution's steps share one weight-gradient pass when its weight holds at least
this many times its output's numbers, and at least this many numbers (`weight_bound`)."""


class _Bank:
    """The (input, output gradient) pairs one weight's steps filed in a backward pass."""

    def __init__(
        self,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
        window: tuple[slice, slice] | None = None,
    ) -> None:
        self.stride = list(stride)
        self.padding = list(padding)
        self.dilation = list(dilation)
        self.groups = groups
        self.window = window
        """The kernel taps the steps use (`crop_kernel`; None: all)."""
        self.inputs: list[Tensor] = []
        self.grads: list[Tensor] = []

    def weight_grad(self, weight: Tensor) -> Tensor | None:
        """sum_t wgrad(x_t, g_t) over the filed steps, as one correlation (None: none filed)."""
        if not self.inputs:
            return None
        shapes = {(x.shape, g.shape) for x, g in zip(self.inputs, self.grads, strict=True)}
        if len(shapes) == 1:
            pairs = [(torch.cat(self.inputs), torch.cat(self.grads))]
        else:
            pairs = list(zip(self.inputs, self.grads, strict=True))
        total: Tensor | None = None
        for x, g in pairs:
            grad = self._correlate(x, g, weight)
            total = grad if total is None else total + grad
        self.inputs.clear()
        self.grads.clear()
        return total

    def _correlate(self, x: Tensor, g: Tensor, weight: Tensor) -> Tensor:
        """wgrad(x, g): ATen's convolution backward, or, for maps of at most
        `GEMM_MAX_POSITIONS` output positions without groups, one matrix product of g with
        the unfolded x (3-6x faster on CPU there, where the weight outweighs the maps)."""
        positions = g.shape[-2] * g.shape[-1]
        if self.groups == 1 and positions <= GEMM_MAX_POSITIONS:
            kernel = (weight.shape[-2], weight.shape[-1])
            columns = F.unfold(
                x, kernel, tuple(self.dilation), tuple(self.padding), tuple(self.stride)
            )
            return torch.einsum("nol,nkl->ok", g.flatten(2), columns).view_as(weight)
        return torch.ops.aten.convolution_backward(
            g,
            x,
            weight,
            None,
            self.stride,
            self.padding,
            self.dilation,
            False,
            [0, 0],
            self.groups,
            [False, True, False],
        )[1]


class _Share(torch.autograd.Function):
    """Identity on the weight; its backward adds the bank's batched weight gradient."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, bank: _Bank) -> Tensor:
        ctx.bank = bank
        ctx.set_materialize_grads(False)
        used = weight if bank.window is None else weight[(..., *bank.window)]
        ctx.save_for_backward(used)
        ctx.weight_shape = weight.shape
        return used.view_as(used)

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None]:
        (used,) = ctx.saved_tensors
        bank: _Bank = ctx.bank
        batched = bank.weight_grad(used)
        if batched is not None:
            grad = batched if grad is None else grad + batched
        if grad is None or bank.window is None:
            return grad, None
        full = grad.new_zeros(ctx.weight_shape)
        full[(..., *bank.window)] = grad
        return full, None


class _StepConv(torch.autograd.Function):
    """conv2d at one time step; the weight gradient is filed with the bank, not computed."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, bank: _Bank) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.bank = bank
        ctx.bias_shape = None if bias is None else list(bias.shape)
        return F.conv2d(x, weight, bias, bank.stride, bank.padding, bank.dilation, bank.groups)

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        bank: _Bank = ctx.bank
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        file_weight = need_w and not torch.is_grad_enabled()
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad,
            x,
            weight,
            None,
            bank.stride,
            bank.padding,
            bank.dilation,
            False,
            [0, 0],
            bank.groups,
            [need_x, need_w and not file_weight, False],
        )
        # the bias gradient outside the convolution backward: asked together with the
        # input gradient, mkldnn runs its weight-gradient kernel for it
        grad_b = grad.sum(dim=(0, 2, 3)) if need_b and ctx.bias_shape is not None else None
        if file_weight:
            bank.inputs.append(x)
            bank.grads.append(grad)
        return grad_x, grad_w, grad_b, None


class _Session:
    """The banks of one forward call, one per weight tensor."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, Any], tuple[Tensor, Tensor, _Bank]] = {}

    def conv2d(
        self,
        x: Tensor,
        weight: Tensor,
        window: tuple[slice, slice] | None,
        bias: Tensor | None,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
    ) -> Tensor:
        """The convolution of `x` with the taps `window` of `weight` (None: all), its
        weight gradient filed with the weight's bank of this call."""
        key = (id(weight), None if window is None else tuple((w.start, w.stop) for w in window))
        entry = self.entries.get(key)
        if entry is None or entry[0] is not weight:
            bank = _Bank(stride, padding, dilation, groups, window)
            entry = (weight, _Share.apply(weight, bank), bank)
            self.entries[key] = entry
        _, shared, bank = entry
        return _StepConv.apply(x, shared, bias, bank)


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "shared_weights", default=None
)


@contextlib.contextmanager
def shared_weights(enabled: bool = True) -> Iterator[None]:
    """Within the block, `conv2d` computes each weight's gradient once over all its uses
    (when gradients are being recorded and the code is not being compiled)."""
    active = enabled and torch.is_grad_enabled() and not torch.compiler.is_compiling()
    token = _SESSION.set(_Session() if active else None)
    try:
        yield
    finally:
        _SESSION.reset(token)


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """F.conv2d without the kernel taps that can only meet zero padding (`crop_kernel`);
    inside `shared_weights()`, with the weight gradient batched over steps."""
    window, padding = crop_kernel(x, weight, stride, padding, dilation)
    used = weight if window is None else weight[(..., *window)]
    session = _SESSION.get()
    if (
        session is None
        or not weight.requires_grad
        or not weight_bound(x, used, stride, padding, dilation)
    ):
        return F.conv2d(x, used, bias, stride, padding, dilation, groups)
    return session.conv2d(x, weight, window, bias, stride, padding, dilation, groups)


def crop_kernel(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[slice, slice] | None, Sequence[int]]:
    """The window of central taps of an odd stride-1 "same" kernel that can meet the map
    `x`, and its padding (None, `padding`: the whole kernel).

    Output position i reads input i + d, |d| <= p; on a map of size H only |d| <= H - 1
    lands inside it, the rest on zero padding. A 7x7 depthwise kernel on a 2x2 map (the
    median cells of `rgc_intermediate`'s top layers) is thus exactly its central 3x3 with
    padding 1: the same outputs, and the same gradients (the dropped taps' are zero)."""
    if list(stride) != [1, 1] or list(dilation) != [1, 1]:
        return None, padding
    kernel = (weight.shape[-2], weight.shape[-1])
    keep: list[int] = []
    for size, k, pad in zip(x.shape[-2:], kernel, padding, strict=True):
        if k % 2 == 0 or pad != k // 2:
            return None, padding
        keep.append(min(pad, size - 1))
    if keep == [kernel[0] // 2, kernel[1] // 2]:
        return None, padding
    top, left = kernel[0] // 2 - keep[0], kernel[1] // 2 - keep[1]
    window = (slice(top, top + 2 * keep[0] + 1), slice(left, left + 2 * keep[1] + 1))
    return window, keep


def weight_bound(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> bool:
    """Whether each step's weight gradient is a pass over a weight much larger than the
    maps (`WEIGHT_BOUND_RATIO` times the output, `WEIGHT_BOUND_MIN` numbers at least):
    only then does batching the steps pay. Elsewhere a step's cost is the maps', and the
    custom autograd nodes' overhead (tens of microseconds a call) outweighs the saving:
    measured on convrnn_glyph, whose 4x4 maps carry 37K-number weights, batching slowed
    the training step by a fifth."""
    positions = 1
    for size, k, pad, step, dil in zip(
        x.shape[-2:], weight.shape[-2:], padding, stride, dilation, strict=True
    ):
        positions *= (size + 2 * pad - dil * (k - 1) - 1) // step + 1
    outputs = x.shape[0] * weight.shape[0] * positions
    return weight.numel() >= max(WEIGHT_BOUND_RATIO * outputs, WEIGHT_BOUND_MIN)

"""The ConvRNN graph and its unrolling in time (Nayebi et al. NeurIPS 2018, Sec. 3).

A graph is a list of layers plus an explicit edge list. An edge (a, b) whose
source comes before its target (or is "input", the image) is feedforward; one
whose source comes at or after its target is a long-range feedback edge. Each
layer's first feedforward edge is its main input. A layer is:

    input aggregation -> convolution -> normalization, activation -> cell -> max pool

The main input goes through the layer's convolution (stride allowed). Every other
predecessor is resized bilinearly to the size of the convolution's output and
projected by its own `feedback_kernel` convolution (no bias), feedforward edges
first, feedback after; with feedback_kernel equal to the layer's kernel this is
exactly the paper's concatenation of all predecessors before one convolution.
The sum enters before the activation, or (median RGC) in the cell's output drive.

Unrolling (layer l at step t+1 gets F_l of its predecessors' outputs at step t):

- `biological`: every edge costs one time step: each layer reads the outputs its
  predecessors had at the previous step, so the image reaches layer l (1-based)
  at step l and the readout, one more edge, at step L+1; logits at an earlier step
  do not depend on the image.
- `full`: every layer runs every step on its feedforward predecessors' outputs of
  the same step; feedback edges carry the previous step's outputs.

Presentation: images (B, C, H, W) are shown for `image_off` steps, then a frame
filled with `gray` (None: the image all `times` steps); sequences (B, T, C, H, W)
are shown frame by frame for T steps. `readout` is "last" (logits (B, K) at the
last step), "all" (per-step logits (B, T, K)) or an int step (0-based).

The readout head is "logits" (global average pool, then Linear) or "features"
(flatten, Linear, ReLU: an encoder whose `num_outputs` is a feature size).

The state is created inside every forward call (all zeros), so every inner step
and every task starts clean; parameters are plain nn.Parameters, so the module
works under torch.func.functional_call and learn2learn's MAML clone / adapt.

Stateful use (e.g. an actor-critic agent on Atari):

    state = model.initial_state(batch_size)        # pytree: {"outputs": [...], "cells": [...]}
    out, state = model.step(frame, state)          # frame (B, C, H, W) -> (B, num_outputs)
    state = model.reset_state(state, done)         # zero the rows where done (B,) is True

`step` advances the network by `steps_per_frame` internal time steps with the
same frame (default 1; with the `full` unrolling one step carries the frame to the
readout, with `biological` the readout lags the frame by L+1 internal steps) and
returns the head's output at the last of them. BatchNorm keeps statistics per time
step (`TimeBatchNorm2d`); `step`, whose state runs on across frames, uses the last
step's. The state holds every layer's
output (for feedback and the biological delay) and every cell's state; it is a
dict of lists of tensors, so `detach_state` / `reset_state` map over it. A forward
call never reads it: forward always starts from zeros.

With `channels_last` (the default) activations and convolution weights are kept
in NHWC memory layout, which mkldnn and cuDNN run faster; the parameters are still
plain dense tensors (`reshape`, `copy_`, `state_dict` work as usual; `view(-1)` on
a 4-D weight does not).

What a forward call does not compute (each exact: the same logits and gradients, tested
against the reference port in `benchmarks/reference_port.py` and against readout "all"):

- a convolution of an input that has not changed since the last step (a constant image,
  the output of a layer without state): the layer's convolution and the cell's bypass
  term of it are reused;
- the steps of a layer that cannot reach the readout (`last_needed_steps`: under the
  biological unrolling, the bottom layers' last ten of seventeen steps);
- the batch, before the input reaches a layer: its inputs are then zeros for every
  example, so it runs on one row that is broadcast where the input arrives (not with
  BatchNorm);
- the projection of a feedback source not produced yet (its bias alone);
- a weight gradient per step, for the convolutions whose weight outweighs their maps
  (`models.shared_weights`: one batched gradient over the steps), and the kernel taps
  that only ever meet zero padding (a 7x7 depthwise kernel on a 2x2 map).

`set_recurrence(False)` switches every cell and feedback edge off (an ablation):
the network is then its feedforward twin, with identical outputs for the same
weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from models.cells import (
    MONOTONE,
    Cell,
    CellConfig,
    InitConv2d,
    InitLinear,
    Scheme,
    State,
    activation,
    build_cell,
    match_size,
    same_conv,
)
from models.shared_weights import shared_weights
from models.state import map_state

UNROLLS = ("biological", "full")
INITS = ("torch", "released")
HEADS = ("logits", "features")
NORMS = ("none", "batch", "layer")
INPUT = "input"

NetworkState = dict[str, list[Any]]


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a ConvRNN graph."""

    name: str
    channels: int
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None
    """Zero padding of the layer's convolution (None: kernel_size // 2)."""
    pool: int = 1
    """Max-pool window and stride after the cell (1: none; ceil mode, like TF "SAME")."""
    recurrent: bool = True
    """Whether the layer carries the network's cell (False: a feedforward layer)."""
    residual: bool = False
    """After the cell, the released residual block: a 3x3 convolution of the cell's
    output, plus the layer's input (1x1-projected, no bias, when its depth differs;
    resized when its size does), then the activation (ugrnn_intermediate's
    post-memory `conv`, `residual_add`, `elu`)."""


@dataclass(frozen=True)
class GraphSpec:
    """Layers in feedforward order and an explicit (source, target) edge list."""

    layers: tuple[LayerSpec, ...]
    edges: tuple[tuple[str, str], ...]

    def index(self, name: str) -> int:
        """Position of node `name` (-1 for the input)."""
        if name == INPUT:
            return -1
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise UserError(
            f"edge names unknown node {name!r}; nodes: {INPUT}, "
            + ", ".join(layer.name for layer in self.layers)
        )

    def is_feedback(self, edge: tuple[str, str]) -> bool:
        """Whether `edge` goes back (or sideways) in the feedforward order."""
        return self.index(edge[0]) >= self.index(edge[1])

    def without_feedback(self) -> GraphSpec:
        """The same graph with every feedback edge removed."""
        return replace(self, edges=tuple(e for e in self.edges if not self.is_feedback(e)))

    def scaled(self, width: float) -> GraphSpec:
        """Every layer's channel count multiplied by `width` (at least 1)."""
        return replace(
            self,
            layers=tuple(
                replace(layer, channels=max(1, round(layer.channels * width)))
                for layer in self.layers
            ),
        )


@dataclass(frozen=True)
class _Sources:
    """Where one layer's inputs come from: graph positions (-1: the frame)."""

    main: int
    feedforward: tuple[tuple[str, int], ...]
    feedback: tuple[tuple[str, int], ...]


def _plan(graph: GraphSpec) -> list[_Sources]:
    """Each layer's main input, extra feedforward inputs and feedback inputs."""
    names = [layer.name for layer in graph.layers]
    if len(set(names)) != len(names) or INPUT in names:
        raise UserError(f"layer names must be unique and not {INPUT!r}: {names}")
    if len(set(graph.edges)) != len(graph.edges):
        raise UserError("the edge list holds an edge twice")
    plans = []
    for i, layer in enumerate(graph.layers):
        sources = [graph.index(a) for a, b in graph.edges if b == layer.name]
        if i in sources:
            raise UserError(f"self edge on {layer.name!r}: local recurrence is the cell's job")
        ff = [j for j in sources if j < i]
        if not ff:
            raise UserError(f"layer {layer.name!r} has no feedforward input edge")
        plans.append(
            _Sources(
                main=ff[0],
                feedforward=tuple((names[j], j) for j in ff[1:]),
                feedback=tuple((names[j], j) for j in sources if j > i),
            )
        )
    return plans


class TimeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose running statistics are kept per time step (Cooijmans et al. 2017,
    "Recurrent Batch Normalization", Sec. 4: statistics estimated separately for each
    time step); the scale and shift are shared by all steps.

    An unrolled layer sees differently distributed inputs at each step (feedback arrives,
    the image goes off), so one running average over all steps would normalize every step
    in evaluation mode with statistics that belong to none of them. Buffers
    `running_mean` / `running_var` have shape (steps, C); `forward(x, time)` uses row
    `min(time, steps - 1)`, so steps past the last share its statistics.
    `num_batches_tracked` counts the batches of each row, (steps,): with `momentum=None`
    (a cumulative average, as precise BatchNorm re-estimation uses) each row averages
    over its own batches, not over every step's call.
    """

    def __init__(self, channels: int, steps: int) -> None:
        super().__init__(channels)
        self.steps = steps
        self.running_mean: Tensor
        self.running_var: Tensor
        self.num_batches_tracked: Tensor
        self.register_buffer("running_mean", torch.zeros(steps, channels))
        self.register_buffer("running_var", torch.ones(steps, channels))
        self.register_buffer("num_batches_tracked", torch.zeros(steps, dtype=torch.long))

    def forward(self, x: Tensor, time: int = 0) -> Tensor:
        row = min(time, self.steps - 1)
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked[row] += 1
            if momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked[row])
        return F.batch_norm(
            x,
            self.running_mean[row],
            self.running_var[row],
            self.weight,
            self.bias,
            self.training,
            0.0 if momentum is None else momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, steps={self.steps}"


def make_norm(name: str, channels: int, steps: int = 1) -> nn.Module:
    """BatchNorm (statistics per time step, `TimeBatchNorm2d`), LayerNorm over (C, H, W)
    (GroupNorm with one group), or nothing."""
    if name == "batch":
        return TimeBatchNorm2d(channels, steps)
    if name == "layer":
        return nn.GroupNorm(1, channels)
    if name == "none":
        return nn.Identity()
    raise UserError(f"unknown norm {name!r}; accepted: {', '.join(NORMS)}")


class Layer(nn.Module):
    """Input aggregation, convolution, normalization + activation, cell, pooling."""

    def __init__(
        self,
        spec: LayerSpec,
        in_channels: int,
        extra_inputs: Mapping[str, int],
        cell: Cell,
        norm: str,
        activation_name: str,
        extra_kernel: int,
        channels_last: bool = False,
        steps: int = 1,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        padding = spec.kernel_size // 2 if spec.padding is None else spec.padding
        self.conv = InitConv2d(
            in_channels,
            spec.channels,
            spec.kernel_size,
            stride=spec.stride,
            padding=padding,
            bias=norm == "none",
        )
        self.extra = nn.ModuleDict(
            {name: same_conv(ch, spec.channels, extra_kernel) for name, ch in extra_inputs.items()}
        )
        self.norm = make_norm(norm, spec.channels, steps)
        self.cell = cell
        self.pool: nn.Module = (
            nn.MaxPool2d(spec.pool, ceil_mode=True) if spec.pool > 1 else nn.Identity()
        )
        self.block = same_conv(spec.channels, spec.channels, 3) if spec.residual else None
        self.shortcut = (
            InitConv2d(in_channels, spec.channels, 1, bias=False)
            if spec.residual and in_channels != spec.channels
            else None
        )
        self._act = activation(activation_name)
        self._pool_first = activation_name in MONOTONE and spec.pool > 1 and not spec.residual

    def init_released(self, cell_too: bool = True) -> None:
        """The released initializers: variance scaling (scale 1) for the layer's
        convolution, its input projections and its residual block, biases 0; the cell's
        own initializer for the cell."""
        scheme: Scheme = ("variance_scaling", 1.0)
        for module in (self.conv, *self.extra.values(), self.block, self.shortcut):
            if isinstance(module, InitConv2d):
                module.set_init(scheme)
        if cell_too:
            self.cell.init_released()

    def convolve(self, ff: Tensor, with_bypass: bool = False) -> tuple[Tensor, Tensor | None]:
        """The layer's convolution of its main input `ff` (NHWC in memory if channels_last)
        and, `with_bypass`, the cell's term of `ff` (`Cell.bypass_term`; None when the
        cell reads no bypass)."""
        z = self.conv(ff)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        term = None
        if with_bypass and self.cell.uses_bypass:
            term = self.cell.bypass_term(ff, (z.shape[-2], z.shape[-1]))
        return z, term

    def project(self, name: str, source: Tensor | None, size: tuple[int, int]) -> Tensor | None:
        """The projection of extra input `name` resized to `size`; a source not produced yet
        (None) is zeros, whose projection is the bias alone, (1, C, 1, 1) (None: no bias)."""
        conv = self.extra[name]
        assert isinstance(conv, nn.Conv2d)
        if source is not None:
            return conv(match_size(source, size))
        return None if conv.bias is None else conv.bias.view(1, -1, 1, 1)

    @property
    def has_cell(self) -> bool:
        return bool(self.cell.state_channels)

    def forward(
        self,
        ff: Tensor,
        extra: Mapping[str, Tensor | None],
        state: State | None,
        recurrent: bool,
        convolved: tuple[Tensor, Tensor | None] | None = None,
        time: int = 0,
    ) -> tuple[Tensor, State | None]:
        """Output of the layer (after pooling) and the cell's next state at step `time`.

        `extra` maps each extra input to its source's output (None: not produced yet, i.e.
        zeros). `convolved` is `self.convolve(ff, recurrent)` when the caller already has
        it (an unchanged input).
        """
        z, bypass_term = self.convolve(ff, recurrent) if convolved is None else convolved
        feedback: Tensor | None = None
        for name, source in extra.items():
            projected = self.project(name, source, (z.shape[-2], z.shape[-1]))
            if projected is not None:
                feedback = projected if feedback is None else feedback + projected
        if feedback is not None and self.cell.feedback_entry == "input":
            z = z + feedback
            feedback = None
        z = self.norm(z, time) if isinstance(self.norm, TimeBatchNorm2d) else self.norm(z)
        if not (recurrent and self.has_cell) and self._pool_first:
            return self._act(self.pool(z)), state  # = pool(act(z)): act is monotone
        z = self._act(z)
        if recurrent:
            z, state = self.cell(z, state, feedback=feedback, bypass=ff, bypass_term=bypass_term)
        if self.block is not None:
            shortcut = match_size(ff, (z.shape[-2], z.shape[-1]))
            if self.shortcut is not None:
                shortcut = self.shortcut(shortcut)
            z = self._act(self.block(z) + shortcut)
        return self.pool(z), state


class Head(nn.Module):
    """Readout: "logits" = global average pool + Linear; "features" = flatten + Linear + ReLU."""

    def __init__(self, kind: str, channels: int, size: tuple[int, int], num_outputs: int) -> None:
        super().__init__()
        if kind not in HEADS:
            raise UserError(f"unknown head {kind!r}; accepted: {', '.join(HEADS)}")
        self.kind = kind
        fan_in = channels if kind == "logits" else channels * size[0] * size[1]
        self.linear = InitLinear(fan_in, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "logits":
            return self.linear(x.mean(dim=(2, 3)))
        return F.relu(self.linear(x.flatten(1)))


def _memory_format(x: Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


class _Scratch:
    """Per-call memo keyed by the identity of each layer's main input, so that an
    unchanged input (a constant image, the output of an unchanged layer) is not
    convolved again: the convolution of the main input of every layer with the
    cell's bypass term of it, and the whole output of a layer that has no state and
    no extra input. Also the zero tensors that stand for outputs not produced yet:
    with `one_row` they hold one batch row, so that what is computed from them before
    the input reaches a layer (identical for every example) is computed once and
    broadcast over the batch where it meets the input."""

    def __init__(self, layers: int, one_row: bool = False) -> None:
        self.one_row = one_row
        self.conv: list[tuple[Tensor, tuple[Tensor, Tensor | None]] | None] = [None] * layers
        self.static: list[tuple[Tensor, Tensor] | None] = [None] * layers
        self.zeros: dict[tuple[int, ...], Tensor] = {}

    def main_conv(
        self, index: int, layer: Layer, ff: Tensor, with_bypass: bool
    ) -> tuple[Tensor, Tensor | None]:
        """`layer.convolve(ff, with_bypass)`, reused while `ff` is the same tensor."""
        memo = self.conv[index]
        if memo is not None and memo[0] is ff:
            return memo[1]
        convolved = layer.convolve(ff, with_bypass)
        self.conv[index] = (ff, convolved)
        return convolved

    def zeros_like(self, reference: Tensor, channels: int, size: tuple[int, int]) -> Tensor:
        shape = (1 if self.one_row else reference.shape[0], channels, *size)
        if shape not in self.zeros:
            self.zeros[shape] = torch.zeros(
                shape, device=reference.device, dtype=reference.dtype
            ).contiguous(memory_format=_memory_format(reference))
        return self.zeros[shape]


def _rows(x: Tensor, batch: int) -> Tensor:
    """`x` broadcast to `batch` rows (a one-row tensor computed before the input arrived)."""
    return x if x.shape[0] == batch else x.expand(batch, *x.shape[1:])


def _parse_readout(readout: str | int) -> str | int:
    if isinstance(readout, str) and readout.isdigit():
        return int(readout)
    if isinstance(readout, bool) or not (isinstance(readout, int) or readout in ("last", "all")):
        raise UserError(f"unknown readout {readout!r}; accepted: last, all, or a step index >= 0")
    if isinstance(readout, int) and readout < 0:
        raise UserError(f"readout step must be >= 0, got {readout}")
    return readout


class ConvRNN(nn.Module):
    """A convolutional recurrent network unrolled in time (see the module docstring)."""

    def __init__(
        self,
        graph: GraphSpec,
        input_shape: tuple[int, int, int],
        num_outputs: int,
        *,
        cell: str = "rgc",
        cell_config: CellConfig | None = None,
        unroll: str = "biological",
        times: int = 17,
        image_off: int | None = 12,
        gray: float = 0.5,
        readout: str | int = "last",
        feedback: bool = True,
        norm: str = "none",
        activation_name: str = "elu",
        head: str = "logits",
        feedback_kernel: int = 1,
        steps_per_frame: int = 1,
        channels_last: bool = True,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise UserError(f"unknown init {init!r}; accepted: {', '.join(INITS)}")
        if unroll not in UNROLLS:
            raise UserError(f"unknown unroll mode {unroll!r}; accepted: {', '.join(UNROLLS)}")
        if times < 1 or steps_per_frame < 1 or feedback_kernel < 1:
            raise UserError(
                "times, steps_per_frame and feedback_kernel must be >= 1, got "
                f"{times}, {steps_per_frame}, {feedback_kernel}"
            )
        if image_off is not None and image_off < 1:
            raise UserError(f"image_off must be >= 1 (or None: constant image), got {image_off}")
        if len(input_shape) != 3:
            raise UserError(f"input_shape must be (C, H, W), got {input_shape}")
        self.graph = graph if feedback else graph.without_feedback()
        self.input_shape = tuple(int(v) for v in input_shape)
        self.unroll = unroll
        self.times = times
        self.image_off = image_off
        self.gray = gray
        self.readout = _parse_readout(readout)
        if isinstance(self.readout, int) and self.readout >= times:
            raise UserError(f"readout step {self.readout} is not below times={times}")
        self.steps_per_frame = steps_per_frame
        self.recurrent = True
        self.batched_weight_grads = True
        """Compute each convolution's weight gradient once over the time steps of a forward
        call (`models.shared_weights`; False: one per step, as autograd does)."""
        self.one_row_zeros = norm != "batch"
        """Compute what precedes the input's arrival at a layer on one batch row and
        broadcast it (`_Scratch`); off with BatchNorm, whose batch statistics (a 1x1 map
        of one row has none) and running variance depend on the rows it sees."""
        cell_config = cell_config or CellConfig()
        self._plans = _plan(self.graph)
        self.channels_last = channels_last
        self._build_layers(cell, cell_config, norm, activation_name, feedback_kernel)
        last = self.graph.layers[-1]
        self.head = Head(head, last.channels, self.out_sizes[-1], num_outputs)
        self.init = init
        if init == "released":
            self.init_released()
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _build_layers(
        self, cell: str, config: CellConfig, norm: str, act: str, feedback_kernel: int
    ) -> None:
        channels_in, height, width = self.input_shape
        channels = [layer.channels for layer in self.graph.layers]
        self.in_sizes: list[tuple[int, int]] = []
        self.conv_sizes: list[tuple[int, int]] = []
        self.out_sizes: list[tuple[int, int]] = []
        self.layers = nn.ModuleDict()
        for spec, plan in zip(self.graph.layers, self._plans, strict=True):
            src_channels = channels_in if plan.main < 0 else channels[plan.main]
            size = (height, width) if plan.main < 0 else self.out_sizes[plan.main]
            padding = spec.kernel_size // 2 if spec.padding is None else spec.padding
            conv = tuple((s + 2 * padding - spec.kernel_size) // spec.stride + 1 for s in size)
            out = tuple(math.ceil(s / spec.pool) for s in conv)
            if min(conv) < 1:
                raise UserError(
                    f"input {self.input_shape} is too small: layer {spec.name!r} would get {size}"
                )
            self.in_sizes.append(size)
            self.conv_sizes.append((conv[0], conv[1]))
            self.out_sizes.append((out[0], out[1]))
            extra = {n: channels[j] for n, j in plan.feedforward + plan.feedback}
            layer_cell = build_cell(
                cell if spec.recurrent else "none", spec.channels, src_channels, config
            )
            self.layers[spec.name] = Layer(
                spec,
                src_channels,
                extra,
                layer_cell,
                norm,
                act,
                feedback_kernel,
                self.channels_last,
                self.times,
            )

    def init_released(self) -> None:
        """Draw every parameter as the released models do (Nayebi et al. 2018 code): layer
        convolutions variance scaling (scale 1, fan in, truncated normal), each cell its
        own initializer (Glorot, or variance scaling with `init_scale` for the median
        RGC), the readout normal with std 0.01, biases 0. `models.reinitialize` redraws
        from the same initializers."""
        for layer in self.layer_list():
            layer.init_released()
        self.head.linear.set_init(("normal", 0.01))

    def layer_list(self) -> list[Layer]:
        """The layers in feedforward order."""
        return [layer for layer in self.layers.values() if isinstance(layer, Layer)]

    def set_recurrence(self, enabled: bool) -> ConvRNN:
        """Switch every cell and feedback edge on or off (off: the feedforward twin)."""
        self.recurrent = enabled
        return self

    def _check_frame(self, x: Tensor, what: str) -> None:
        if tuple(x.shape[-3:]) != self.input_shape:
            raise UserError(
                f"{what} of shape {tuple(x.shape)} does not match the input shape "
                f"{self.input_shape} (C, H, W) this model was built for"
            )

    def _schedule(self, x: Tensor) -> tuple[Callable[[int], Tensor], int]:
        """The frame shown at each step, and the number of steps."""
        if x.dim() == 5:
            self._check_frame(x, "input sequence")
            return (lambda t: x[:, t]), x.shape[1]
        if x.dim() != 4:
            raise UserError(
                f"input must be images (B, C, H, W) or sequences (B, T, C, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        self._check_frame(x, "input")
        image_off = self.image_off
        if image_off is None or image_off >= self.times:
            return (lambda t: x), self.times
        blank = torch.full_like(x, self.gray)
        return (lambda t: x if t < image_off else blank), self.times

    def last_needed_steps(self, steps: int) -> list[int]:
        """For a readout at step `steps - 1` only: the last step at which each layer's
        computation can reach the readout (-1: never). An edge costs one step under the
        `biological` unrolling; under `full` a feedforward edge costs none and a feedback
        edge one. The readout reads the top layer at the previous step (`biological`) or
        the same one (`full`); layer j is needed up to step t if some successor i is
        needed up to t + delay(j, i), and a layer computed at every step up to that one
        has its own earlier states. Skipping the steps after it changes no logit and no
        gradient (BatchNorm running statistics of those steps are not updated)."""
        count = len(self.graph.layers)
        full = self.unroll == "full"
        need = [-1] * count
        need[-1] = steps - 1 if full else steps - 2
        edges = [
            (self.graph.index(a), self.graph.index(b))
            for a, b in self.graph.edges
            if a != INPUT and (self.recurrent or not self.graph.is_feedback((a, b)))
        ]
        changed = True
        while changed:
            changed = False
            for j, i in edges:
                delay = 1 if (not full or j >= i) else 0
                if need[i] - delay > need[j]:
                    need[j] = need[i] - delay
                    changed = True
        return need

    def _tick(
        self,
        frame: Tensor,
        outputs: list[Tensor | None],
        cells: list[State | None],
        scratch: _Scratch,
        time: int,
        last_needed: list[int] | None = None,
    ) -> tuple[list[Tensor | None], list[State | None], Tensor]:
        """Advance every layer by one time step (step `time`, which picks the BatchNorm
        statistics); return outputs, cell states, readout input. A layer whose entry in
        `last_needed` is below `time` keeps its output and state (its computation could
        not reach the readout)."""
        full = self.unroll == "full"
        new_outputs: list[Tensor | None] = []
        new_cells: list[State | None] = []
        for i, (layer, plan) in enumerate(zip(self.layer_list(), self._plans, strict=True)):
            if last_needed is not None and last_needed[i] < time:
                new_outputs.append(outputs[i])
                new_cells.append(cells[i])
                continue
            now = new_outputs if full else outputs
            ff = frame if plan.main < 0 else now[plan.main]
            if ff is None:
                ff = scratch.zeros_like(
                    frame, self.graph.layers[plan.main].channels, self.in_sizes[i]
                )
            extra: dict[str, Tensor | None] = {n: now[j] for n, j in plan.feedforward}
            if self.recurrent:
                extra.update({n: outputs[j] for n, j in plan.feedback})
            static = not extra and not (self.recurrent and layer.has_cell)
            memo = scratch.static[i]
            if static and memo is not None and memo[0] is ff:
                out, state = memo[1], cells[i]
            else:
                convolved = scratch.main_conv(i, layer, ff, self.recurrent)
                out, state = layer(ff, extra, cells[i], self.recurrent, convolved, time)
                if static:
                    scratch.static[i] = (ff, out)
            new_outputs.append(out)
            new_cells.append(state)
        top = new_outputs[-1] if full else outputs[-1]
        if top is None:
            top = scratch.zeros_like(frame, self.graph.layers[-1].channels, self.out_sizes[-1])
        return new_outputs, new_cells, top

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) at the readout step, or (B, T, K) at every step for readout="all"."""
        frame_at, times = self._schedule(x)
        readout = self.readout
        if isinstance(readout, int) and readout >= times:
            raise UserError(f"readout step {readout} is not below the {times} steps unrolled")
        steps = readout + 1 if isinstance(readout, int) else times
        count = len(self.layers)
        outputs: list[Tensor | None] = [None] * count
        cells: list[State | None] = [None] * count
        scratch = _Scratch(count, self.one_row_zeros)
        last_needed = None if readout == "all" else self.last_needed_steps(steps)
        logits = []
        with shared_weights(self.batched_weight_grads):
            for t in range(steps):
                outputs, cells, top = self._tick(
                    frame_at(t), outputs, cells, scratch, t, last_needed
                )
                if readout == "all" or t == steps - 1:
                    logits.append(_rows(self.head(top), x.shape[0]))
        return torch.stack(logits, dim=1) if readout == "all" else logits[-1]

    def unrolled(self, x: Tensor) -> Iterator[list[Tensor]]:
        """Every layer's output (after pooling), in feedforward order, at each step of the
        unrolling of `x` (images or sequences, presented as by `forward`); from zeros."""
        frame_at, times = self._schedule(x)
        count = len(self.layers)
        outputs: list[Tensor | None] = [None] * count
        cells: list[State | None] = [None] * count
        scratch = _Scratch(count, self.one_row_zeros)
        for t in range(times):
            outputs, cells, _ = self._tick(frame_at(t), outputs, cells, scratch, t)
            yield [_rows(out, x.shape[0]) for out in outputs if out is not None]

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> NetworkState:
        """All-zero network state for `batch_size` streams (see the module docstring)."""
        reference = next(self.parameters())
        device = device or reference.device
        dtype = dtype or reference.dtype
        outputs = [
            torch.zeros(batch_size, spec.channels, *size, device=device, dtype=dtype)
            for spec, size in zip(self.graph.layers, self.out_sizes, strict=True)
        ]
        cells = [
            layer.cell.initial_state(batch_size, size, device=device, dtype=dtype)
            for layer, size in zip(self.layer_list(), self.conv_sizes, strict=True)
        ]
        return {"outputs": outputs, "cells": cells}

    def step(self, x: Tensor, state: NetworkState) -> tuple[Tensor, NetworkState]:
        """Advance by `steps_per_frame` internal steps on frame x (B, C, H, W); carry `state`."""
        if x.dim() != 4:
            raise UserError(f"step takes one frame (B, C, H, W), got shape {tuple(x.shape)}")
        self._check_frame(x, "frame")
        outputs: list[Tensor | None] = list(state["outputs"])
        cells: list[State | None] = list(state["cells"])
        scratch = _Scratch(len(self.layers))
        top = x
        for _ in range(self.steps_per_frame):
            outputs, cells, top = self._tick(x, outputs, cells, scratch, self.times - 1)
        return self.head(top), {"outputs": outputs, "cells": cells}

    def reset_state(self, state: NetworkState, done: Tensor) -> NetworkState:
        """Zero every state tensor of the streams where `done` (B,) is True."""
        finished = done.to(torch.bool)
        return map_state(
            lambda t: t.masked_fill(finished.view(-1, *([1] * (t.dim() - 1))), 0.0), state
        )

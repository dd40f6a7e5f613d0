"""Convolutional recurrent cells, each a module with an explicit state.

Every cell maps the layer's drive `x` (B, D, H, W) and its state (a dict of
tensors, or None for the all-zero initial state) to an output of the same shape
and the next state:

    out, state = cell(x, state, feedback=None, bypass=None)

`feedback` is the sum of the layer's feedback inputs already projected to D
channels; a cell whose `feedback_entry` is "input" never sees it (the layer adds
it to the drive before its activation, which equals concatenating the feedback
to the layer input, Nayebi et al. 2018 Sec. 3), a cell whose `feedback_entry` is
"cell" adds it where its equations say. `bypass` is the layer's input before its
convolution; only the reciprocal gated cells read it, through the term
`cell.bypass_term(bypass, size)` (the part of the cell's computation that depends on
the layer's input alone). A layer whose input has not changed since the last step
passes the term it already has as `bypass_term` instead, and the cell skips
recomputing it.

A state of None stands for zeros: the state-to-gate convolutions then reduce to
their biases, so the first time step skips them (the results are identical to
passing explicit zeros; a test checks it).

Cells (registry kind "cell"; names as in `CELLS`):

- `rgc`: reciprocal gated cell, NeurIPS-2018 form (Nayebi, Bear, Kubilius et al.,
  "Task-Driven Convolutional Recurrent Models of the Visual System", Eq. 1).
- `rgc_median`: the "median" reciprocal gated cell of Nayebi, Sagastuy-Brena,
  Bear et al. (Neural Computation 2022, "Recurrent connections in the primate
  ventral visual stream mediate a trade-off between task performance and network
  size"): depthwise-separable state-to-gate convolutions, an input-to-output
  convolution, a bypass of the layer's input, feedback into the output drive and
  its own memory depth.
- `timedecay`, `simplernn`, `gru`, `lstm`, `ugrnn`, `intersectionrnn`: the
  baselines of Nayebi et al. 2018 (Sec. 3 and Supplementary Sec. A).
- `none`: no recurrence (the feedforward layer).

Every hyperparameter lives in `CellConfig`, so a config or a TPE search can vary it;
each cell reads the fields its docstring names and ignores the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from leap_convrnn.registry import Registry
from models.shared_weights import conv2d as shared_conv2d

State = dict[str, Tensor]
Activation = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


def elu(x: Tensor) -> Tensor:
    """ELU (alpha 1) as r + (exp(x - r) - 1), r = relu(x) (so x - r = min(x, 0)): F.elu's
    values and gradients to rounding (absolute error below one unit of 1.0's precision),
    about 3.5x faster forward + backward on CPU, where ATen's ELU calls a scalar expm1 per
    element while relu and exp are vectorized; built of autograd ops, so it
    differentiates twice."""
    r = F.relu(x)
    return r + (torch.exp(x - r) - 1.0)


ACTIVATIONS: dict[str, Activation] = {
    "elu": elu,
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "identity": _identity,
}


MONOTONE = frozenset({"elu", "relu", "tanh", "sigmoid", "softplus", "identity"})
"""Nondecreasing activations: max pooling commutes with them."""


def activation(name: str) -> Activation:
    """The elementwise function called `name`; a UserError lists the accepted names."""
    if name not in ACTIVATIONS:
        raise UserError(f"unknown activation {name!r}; accepted: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


FEEDBACK_ENTRIES = ("default", "input", "cell")


@dataclass(frozen=True)
class CellConfig:
    """Hyperparameters of the recurrent cells (each cell reads the fields it uses)."""

    cell_depth: int | None = None
    """Memory depth: channels of the reciprocal gated cells' memory c (None: the layer's)."""
    kernel_size: int = 3
    """Kernel of the state-to-state and input convolutions of the baseline cells."""
    input_kernel: int = 3
    """Kernel of the RGC input-to-memory convolution W_xc (the median model: 2)."""
    out_kernel: int = 0
    """Kernel of the median RGC input-to-output convolution (0: the drive enters as is)."""
    tau_kernel: int = 3
    """Kernel of the RGC self-gating (tau) convolutions W_hh and W_cc."""
    gate_kernel: int = 3
    """Kernel of the RGC reciprocal gating convolutions W_ch and W_hc."""
    tau_offset: float = 1.0
    """RGC: tau gate = tau_offset + tau_multiplier * tau_activation(W * state + tau_bias)."""
    tau_multiplier: float = -1.0
    gate_offset: float = 1.0
    """RGC: input gate = gate_offset + gate_multiplier * gate_activation(W * other + gate_bias)."""
    gate_multiplier: float = -1.0
    tau_bias: float = 0.0
    gate_bias: float = 0.0
    tau_activation: str = "sigmoid"
    gate_activation: str = "sigmoid"
    cell_activation: str = "elu"
    """Activation of the RGC memory update."""
    out_activation: str = "elu"
    """Activation of the RGC output update, of the vanilla RNN and of the UGRNN /
    IntersectionRNN candidates."""
    forget_bias: float = 1.0
    """Constant added to the forget-gate pre-activation: LSTM forget gate, GRU reset gate,
    UGRNN update gate, IntersectionRNN gates (1.0 in the released cells)."""
    decay: float = 0.0
    """Time-decay cell: initial value of the layer's unconstrained decay scalar m
    (the released `memory_decay`, 0)."""
    bypass: bool = True
    """What the cell does with the layer's input r (before the layer's convolution).
    `rgc`: the residual-to-output-gate convolution W_rh * r in the output gate (the
    released `residual_to_out_gate`); `rgc_median`: r (1x1-projected if its depth
    differs) added to the output drive. False: r is not read."""
    feedback_entry: str = "default"
    """Reciprocal gated cells: where the layer's feedback enters: "input" (added to the
    drive before the layer's activation), "cell" (added to the cell's output drive) or
    "default" (`rgc`: input, `rgc_median`: cell, as released)."""
    separable: bool | None = None
    """Reciprocal gated cells: depthwise-separable (True) or full (False) state-to-gate
    convolutions (None: the cell's own, `rgc` full, `rgc_median` separable)."""
    init_scale: float = 1.0
    """Scale of the variance-scaling initializer of the cell's convolutions, where the
    released cell uses one (`rgc_median`: 0.639 in the released median model)."""

    def __post_init__(self) -> None:
        for name in ("kernel_size", "input_kernel", "tau_kernel", "gate_kernel"):
            if getattr(self, name) < 1:
                raise UserError(f"cell option {name} must be >= 1, got {getattr(self, name)}")
        if self.out_kernel < 0:
            raise UserError(f"cell option out_kernel must be >= 0, got {self.out_kernel}")
        if self.cell_depth is not None and self.cell_depth < 1:
            raise UserError(f"cell option cell_depth must be >= 1, got {self.cell_depth}")
        if self.feedback_entry not in FEEDBACK_ENTRIES:
            raise UserError(
                f"cell option feedback_entry must be one of {', '.join(FEEDBACK_ENTRIES)}, "
                f"got {self.feedback_entry!r}"
            )
        if self.init_scale <= 0.0:
            raise UserError(f"cell option init_scale must be > 0, got {self.init_scale}")
        for name in ("tau_activation", "gate_activation", "cell_activation", "out_activation"):
            activation(getattr(self, name))


Scheme = tuple[str, float]
"""An initializer: ("variance_scaling", scale) (truncated normal, fan in, as TF's
`variance_scaling_initializer`), ("glorot", 1.0) (Glorot uniform, TF's default "xavier"),
("normal", stddev) or ("torch", 0.0) (PyTorch's default)."""

TORCH_INIT: Scheme = ("torch", 0.0)
GLOROT: Scheme = ("glorot", 1.0)


def tf_fans(weight: Tensor, groups: int = 1) -> tuple[int, int]:
    """Fan in and fan out as TF computes them from its kernel shape [k, k, in, out]
    (a depthwise kernel [k, k, C, 1] has fan in k*k*C, fan out k*k)."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in = weight.shape[1] * groups * receptive
    fan_out = weight.shape[0] // groups * receptive
    return fan_in, fan_out


def init_weight(weight: Tensor, scheme: Scheme, groups: int = 1) -> None:
    """Draw `weight` from `scheme` (in place, without recording gradients)."""
    kind, scale = scheme
    fan_in, fan_out = tf_fans(weight, groups)
    with torch.no_grad():
        if kind == "variance_scaling":
            # TF: truncated normal at 2 std, std corrected for the truncation
            std = math.sqrt(scale / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)
        elif kind == "glorot":
            limit = math.sqrt(6.0 * scale / (fan_in + fan_out))
            nn.init.uniform_(weight, -limit, limit)
        elif kind == "normal":
            nn.init.normal_(weight, 0.0, scale)
        else:
            raise UserError(
                f"unknown initializer {kind!r}; accepted: variance_scaling, glorot, normal, torch"
            )


class InitConv2d(nn.Conv2d):
    """nn.Conv2d whose `reset_parameters` draws from `scheme` (None: PyTorch's default),
    biases `bias_value`; so `models.reinitialize` redraws from the same initializer."""

    scheme: Scheme | None = None
    bias_value: float | Tensor = 0.0

    def set_init(self, scheme: Scheme, bias_value: float | Tensor = 0.0) -> None:
        """Use `scheme` from now on and redraw the parameters with it; biases
        `bias_value` (a number, or one value per output channel)."""
        self.scheme = None if scheme[0] == "torch" else scheme
        self.bias_value = bias_value
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.scheme is None:
            super().reset_parameters()
            return
        init_weight(self.weight, self.scheme, self.groups)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(torch.as_tensor(self.bias_value).expand_as(self.bias))

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The convolution; inside `shared_weights()` its weight gradient is computed once
        for every time step that used it (`models.shared_weights`)."""
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        return shared_conv2d(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )


class InitLinear(nn.Linear):
    """nn.Linear whose `reset_parameters` draws from `scheme` (None: PyTorch's default)."""

    scheme: Scheme | None = None

    def set_init(self, scheme: Scheme, bias_value: float = 0.0) -> None:
        """Use `scheme` from now on and redraw the parameters with it."""
        self.scheme = None if scheme[0] == "torch" else scheme
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.scheme is None:
            super().reset_parameters()
            return
        init_weight(self.weight, self.scheme)
        with torch.no_grad():
            self.bias.zero_()


class SameConv2d(InitConv2d):
    """A stride-1 convolution whose output keeps the input's size, padded as TF "SAME":
    (k - 1) // 2 zeros before and the rest after (asymmetric for an even kernel)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, groups: int = 1
    ) -> None:
        odd = kernel % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel,
            padding=kernel // 2 if odd else 0,
            bias=bias,
            groups=groups,
        )
        before = (kernel - 1) // 2
        self._pad = None if odd else (before, kernel - 1 - before, before, kernel - 1 - before)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x if self._pad is None else F.pad(x, self._pad))


def same_conv(in_channels: int, out_channels: int, kernel: int, bias: bool = True) -> nn.Conv2d:
    """A stride-1 convolution whose output keeps the input's size (TF "SAME" padding)."""
    return SameConv2d(in_channels, out_channels, kernel, bias=bias)


class SeparableConv(nn.Module):
    """Depthwise k x k convolution, then a pointwise 1x1 convolution with a bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = SameConv2d(
            in_channels, in_channels, kernel, bias=False, groups=in_channels
        )
        self.pointwise = InitConv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class StateConv(nn.Module):
    """Convolutions from one state tensor to several destinations, computed together.

    `outs` lists (channels, kernel) per destination. Full convolutions that share a
    kernel size are one `nn.Conv2d` whose output channels stack the destinations'
    weights (one call instead of several); separable ones are one `SeparableConv`
    each. Called with None (the zero state), it returns each destination's bias as a
    (1, C, 1, 1) map, which is exactly the convolution of zeros.
    """

    def __init__(
        self, in_channels: int, outs: Sequence[tuple[int, int]], separable: bool = False
    ) -> None:
        super().__init__()
        self.separable = separable
        self.convs = nn.ModuleList()
        self._plan: list[tuple[int, int, int]] = []
        if separable:
            for channels, kernel in outs:
                self._plan.append((len(self.convs), 0, channels))
                self.convs.append(SeparableConv(in_channels, channels, kernel))
            self._finish_plan()
            return
        kernels = sorted({kernel for _, kernel in outs})
        offsets = dict.fromkeys(kernels, 0)
        for channels, kernel in outs:
            start = offsets[kernel]
            self._plan.append((kernels.index(kernel), start, start + channels))
            offsets[kernel] += channels
        for kernel in kernels:
            self.convs.append(same_conv(in_channels, offsets[kernel], kernel))
        self._finish_plan()

    def _finish_plan(self) -> None:
        """Per conv, the channel counts of its destinations; per destination, its piece."""
        self._sizes: list[list[int]] = [[] for _ in self.convs]
        self._piece: list[int] = []
        for index, a, b in self._plan:
            self._piece.append(len(self._sizes[index]))
            self._sizes[index].append(b - a)

    def _conv(self, index: int) -> nn.Conv2d | SeparableConv:
        conv = self.convs[index]
        assert isinstance(conv, nn.Conv2d | SeparableConv)
        return conv

    def _bias(self, index: int) -> Tensor:
        conv = self._conv(index)
        bias = conv.pointwise.bias if isinstance(conv, SeparableConv) else conv.bias
        assert bias is not None
        return bias

    def forward(self, state: Tensor | None) -> list[Tensor]:
        if state is None:
            return [self._bias(i)[a:b].view(1, -1, 1, 1) for i, a, b in self._plan]
        pieces = [
            torch.split(conv(state), self._sizes[i], dim=1) for i, conv in enumerate(self.convs)
        ]
        return [pieces[i][self._piece[d]] for d, (i, _, _) in enumerate(self._plan)]

    def part(self, destination: int) -> dict[str, Tensor]:
        """The parameters that map the state to `destination` (for reference computations)."""
        index, a, b = self._plan[destination]
        conv = self._conv(index)
        bias = self._bias(index)
        if isinstance(conv, SeparableConv):
            return {
                "depthwise": conv.depthwise.weight,
                "pointwise": conv.pointwise.weight,
                "bias": bias,
            }
        return {"weight": conv.weight[a:b], "bias": bias[a:b]}


class Cell(nn.Module):
    """Base class: a recurrent cell with an explicit state (see the module docstring)."""

    feedback_entry: str = "input"
    uses_bypass: bool = False

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__()
        self.channels = channels
        self.state_channels: dict[str, int] = {}

    def released_init(self) -> Scheme:
        """The initializer of the released cell's convolutions (TF's default: Glorot)."""
        return GLOROT

    def init_released(self) -> None:
        """Draw every convolution of the cell as the released cell does (biases 0)."""
        scheme = self.released_init()
        for module in self.modules():
            if isinstance(module, InitConv2d):
                module.set_init(scheme)

    def initial_state(
        self,
        batch_size: int,
        size: tuple[int, int],
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Explicit zeros for every state tensor (equivalent to passing None)."""
        return {
            name: torch.zeros(batch_size, channels, *size, device=device, dtype=dtype)
            for name, channels in self.state_channels.items()
        }

    def bypass_term(self, bypass: Tensor, size: tuple[int, int]) -> Tensor | None:
        """The cell's term that depends on the layer's input `bypass` alone, at the
        drive's spatial `size` (None: the cell does not read the layer's input)."""
        return None

    def given_or_own_bypass_term(
        self, bypass: Tensor | None, bypass_term: Tensor | None, size: tuple[int, int]
    ) -> Tensor | None:
        """The `bypass_term` the layer passed, else this cell's term of `bypass` (None: the
        cell reads no bypass)."""
        if bypass_term is not None or not self.uses_bypass:
            return bypass_term
        if bypass is None:
            raise ValueError(f"{type(self).__name__} needs the layer's input as `bypass`")
        return self.bypass_term(bypass, size)

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        raise NotImplementedError


CELLS: Registry[type[Cell]] = Registry("cell")


def build_cell(name: str, channels: int, in_channels: int, config: CellConfig) -> Cell:
    """The cell registered as `name` for a layer of `channels` fed by `in_channels`."""
    return CELLS.get(name)(channels, in_channels, config)


def _get(state: State | None, name: str) -> Tensor | None:
    return None if state is None else state[name]


def affine_gate(
    pre: Tensor, bias: float, offset: float, multiplier: float, fn: Activation
) -> Tensor:
    """offset + multiplier * fn(pre + bias), skipping the operations that are identities."""
    if bias != 0.0:
        pre = pre + bias
    value = fn(pre)
    if multiplier != 1.0:
        value = value * multiplier
    return value + offset if offset != 0.0 else value


def match_size(r: Tensor, size: tuple[int, int]) -> Tensor:
    """`r` resized bilinearly to the spatial `size` (H, W) with corners aligned, as the
    released harbor's `tf.image.resize_images(..., align_corners=True)`; a no-op when
    already there."""
    if tuple(r.shape[-2:]) == tuple(size):
        return r
    return F.interpolate(r, size=size, mode="bilinear", align_corners=True)


def reciprocal_update(
    prev: Tensor | None,
    drive: Tensor,
    tau_pre: Tensor,
    gate_pre: Tensor,
    config: CellConfig,
    out: Activation,
) -> Tensor:
    """One half of the reciprocal gated update (Nayebi et al. 2018, Eq. 1).

    out( (tau_offset + tau_multiplier * s_tau(tau_pre + tau_bias)) . prev
         + (gate_offset + gate_multiplier * s_gate(gate_pre + gate_bias)) . drive )

    With the defaults (offsets 1, multipliers -1, sigmoids) the gates are
    (1 - s(W * state)), as in the paper. `prev` None is the zero state.
    """
    c = config
    gate = affine_gate(
        gate_pre, c.gate_bias, c.gate_offset, c.gate_multiplier, activation(c.gate_activation)
    )
    mixed = gate * drive
    if prev is not None:
        tau = affine_gate(
            tau_pre, c.tau_bias, c.tau_offset, c.tau_multiplier, activation(c.tau_activation)
        )
        mixed = torch.addcmul(mixed, tau, prev)
    return out(mixed)


@CELLS.register("rgc")
class ReciprocalGatedCell(Cell):
    """Reciprocal gated cell, NeurIPS-2018 form (Nayebi et al. 2018, Eq. 1).

        h' = out_act( tau(W_hh * h) . h + gate(W_ch * c + W_rh * r) . x )
        c' = cell_act( tau(W_cc * c) . c + gate(W_hc * h) . (W_xc * x) )

    tau(z) = tau_offset + tau_multiplier * tau_activation(z + tau_bias) and
    gate(z) = gate_offset + gate_multiplier * gate_activation(z + gate_bias);
    the defaults give the paper's (1 - sigmoid(.)). The memory c has `cell_depth`
    channels; W_xc (kernel `input_kernel`) maps x into it, as the released code
    does. With `out_kernel` > 0, x enters the output as W_xh * x (kernel `out_kernel`);
    with `separable` the state convolutions are depthwise-separable; with
    `feedback_entry` "cell" the feedback f is added to the output drive (x + f).
    r is the layer's input before its convolution (the bypass, resized to x's
    size if the convolution strides) and W_rh (kernel `gate_kernel`, no bias) the
    released `residual_to_out_gate` convolution; with `bypass` False the term is
    absent. Feedback enters with the layer's input. Reads: cell_depth, tau_kernel,
    gate_kernel, input_kernel, bypass, the offsets, multipliers, biases and activations.
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        depth = config.cell_depth or channels
        self.config = config
        self.state_channels = {"h": channels, "c": depth}
        separable = bool(config.separable)
        entry = config.feedback_entry
        self.feedback_entry = "input" if entry == "default" else entry
        self.from_h = StateConv(
            channels,
            [(channels, config.tau_kernel), (depth, config.gate_kernel)],
            separable=separable,
        )
        self.from_c = StateConv(
            depth, [(depth, config.tau_kernel), (channels, config.gate_kernel)], separable=separable
        )
        self.to_cell = same_conv(channels, depth, config.input_kernel)
        self.to_out = (
            same_conv(channels, channels, config.out_kernel) if config.out_kernel else None
        )
        self.uses_bypass = config.bypass
        self.from_r = (
            same_conv(in_channels, channels, config.gate_kernel, bias=False)
            if config.bypass
            else None
        )
        self._out = activation(config.out_activation)
        self._cell = activation(config.cell_activation)

    def bypass_term(self, bypass: Tensor, size: tuple[int, int]) -> Tensor | None:
        """W_rh * r, r resized to `size` (None without `bypass`)."""
        if self.from_r is None:
            return None
        return self.from_r(match_size(bypass, size))

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        h, c = _get(state, "h"), _get(state, "c")
        hh, hc = self.from_h(h)
        cc, ch = self.from_c(c)
        bypass_term = self.given_or_own_bypass_term(bypass, bypass_term, (x.shape[-2], x.shape[-1]))
        if bypass_term is not None:
            ch = ch + bypass_term
        drive = self.to_out(x) if self.to_out is not None else x
        if feedback is not None:
            drive = drive + feedback
        h_next = reciprocal_update(h, drive, hh, ch, self.config, self._out)
        c_next = reciprocal_update(c, self.to_cell(x), cc, hc, self.config, self._cell)
        return h_next, {"h": h_next, "c": c_next}


@CELLS.register("rgc_median")
class MedianReciprocalGatedCell(Cell):
    """The "median" reciprocal gated cell (Nayebi, Sagastuy-Brena, Bear et al. 2022).

        c' = cell_act( tau(S_cc(c)) . c + gate(S_hc(h)) . (W_xc * x) )
        h' = out_act( tau(S_hh(h)) . h + gate(S_ch(c)) . (W_xh * x + P r + f) )

    S_ab are depthwise-separable convolutions (depthwise `tau_kernel` /
    `gate_kernel`, then pointwise), W_xc has kernel `input_kernel`, W_xh kernel
    `out_kernel` (0: identity), r is the layer's input (the bypass, projected by the
    1x1 convolution P when its depth differs, absent when `bypass` is False) and f
    the layer's feedback (1x1 convolutions of the feedback sources, made by the
    layer). The memory has its own depth `cell_depth`. tau and gate as in `rgc`. In the
    released median model tau and gate use sigmoid and tanh with offsets 0.92 and
    0.70 and multipliers of the opposite sign (its constant biases are not applied
    on the separable path, hence tau_bias = gate_bias = 0 there).
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        depth = config.cell_depth or channels
        self.config = config
        self.state_channels = {"h": channels, "c": depth}
        separable = config.separable is None or config.separable
        entry = config.feedback_entry
        self.feedback_entry = "cell" if entry == "default" else entry
        self.from_h = StateConv(
            channels,
            [(channels, config.tau_kernel), (depth, config.gate_kernel)],
            separable=separable,
        )
        self.from_c = StateConv(
            depth, [(depth, config.tau_kernel), (channels, config.gate_kernel)], separable=separable
        )
        self.to_cell = same_conv(channels, depth, config.input_kernel)
        self.to_out = (
            same_conv(channels, channels, config.out_kernel) if config.out_kernel else None
        )
        self.uses_bypass = config.bypass
        self.project = (
            InitConv2d(in_channels, channels, 1, bias=False)
            if config.bypass and in_channels != channels
            else None
        )
        self._scale = config.init_scale
        self._out = activation(config.out_activation)
        self._cell = activation(config.cell_activation)

    def released_init(self) -> Scheme:
        """Variance scaling with the cell's own scale (`init_scale`)."""
        return ("variance_scaling", self._scale)

    def bypass_term(self, bypass: Tensor, size: tuple[int, int]) -> Tensor | None:
        """P r, r resized to `size` (None without `bypass`)."""
        if not self.uses_bypass:
            return None
        bypass = match_size(bypass, size)
        return self.project(bypass) if self.project is not None else bypass

    def _drive(
        self,
        x: Tensor,
        feedback: Tensor | None,
        bypass: Tensor | None,
        bypass_term: Tensor | None,
    ) -> Tensor:
        """The output drive W_xh * x + P r + f."""
        drive = self.to_out(x) if self.to_out is not None else x
        bypass_term = self.given_or_own_bypass_term(bypass, bypass_term, (x.shape[-2], x.shape[-1]))
        if bypass_term is not None:
            drive = drive + bypass_term
        if feedback is not None:
            drive = drive + feedback
        return drive

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        h, c = _get(state, "h"), _get(state, "c")
        hh, hc = self.from_h(h)
        cc, ch = self.from_c(c)
        c_next = reciprocal_update(c, self.to_cell(x), cc, hc, self.config, self._cell)
        h_next = reciprocal_update(
            h, self._drive(x, feedback, bypass, bypass_term), hh, ch, self.config, self._out
        )
        return h_next, {"h": h_next, "c": c_next}


@CELLS.register("timedecay")
class TimeDecayCell(Cell):
    """Time decay (Nayebi et al. 2018, Sec. 3): h' = m h + x, with m one unconstrained
    learned scalar per layer (the released `memory(..., trainable=True)`), initially
    `decay` (0 as released). Reads: decay.
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        self.initial_decay = config.decay
        self.state_channels = {"h": channels}
        self.decay = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.decay.fill_(self.initial_decay)

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        h = _get(state, "h")
        h_next = x if h is None else torch.addcmul(x, self.decay, h)
        return h_next, {"h": h_next}


@CELLS.register("simplernn")
class VanillaRNNCell(Cell):
    """Vanilla convolutional RNN, as released (`ConvNormBasicCell` without layer norm):
    h' = out_act(W_x * x + b_x + W_h * h + b_h).

    Reads: kernel_size, out_activation.
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        self.state_channels = {"h": channels}
        self.from_x = StateConv(channels, [(channels, config.kernel_size)])
        self.from_h = StateConv(channels, [(channels, config.kernel_size)])
        self._out = activation(config.out_activation)

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        (xh,) = self.from_x(x)
        (hh,) = self.from_h(_get(state, "h"))
        h_next = self._out(xh + hh)
        return h_next, {"h": h_next}


@CELLS.register("gru")
class ConvGRUCell(Cell):
    """Convolutional GRU, as released (`ConvGRUCell`):

        r = sigmoid(W_xr * x + W_hr * h + b_r + forget_bias)
        u = sigmoid(W_xu * x + W_hu * h + b_u)
        n = tanh(W_xn * x + W_hn * (r . h) + b_n),  h' = u . h + (1 - u) . n

    With the released initialization the gate biases b_r, b_u start at 1. Reads:
    kernel_size, forget_bias.
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        k = config.kernel_size
        self.forget_bias = config.forget_bias
        self.state_channels = {"h": channels}
        self.from_x = StateConv(channels, [(channels, k)] * 3)
        self.from_h = StateConv(channels, [(channels, k)] * 2)
        self.from_rh = StateConv(channels, [(channels, k)])

    def init_released(self) -> None:
        """Glorot weights; the gate biases 1 (the released "bias_ones"), the others 0."""
        super().init_released()
        conv = self.from_x.convs[0]
        assert isinstance(conv, InitConv2d)
        gates = torch.ones(3 * self.channels)
        gates[2 * self.channels :] = 0.0
        conv.set_init(GLOROT, gates)

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        h = _get(state, "h")
        xr, xu, xn = self.from_x(x)
        hr, hu = self.from_h(h)
        r = torch.sigmoid(xr + hr + self.forget_bias)
        u = torch.sigmoid(xu + hu)
        (rn,) = self.from_rh(None if h is None else r * h)
        n = torch.tanh(xn + rn)
        h_next = (1 - u) * n if h is None else u * h + (1 - u) * n
        return h_next, {"h": h_next}


@CELLS.register("lstm")
class ConvLSTMCell(Cell):
    """Convolutional LSTM (Shi et al. 2015, without peepholes):

        [i, f, o, g] = W_x * x + W_h * h + b
        c' = sigmoid(f + forget_bias) . c + sigmoid(i) . tanh(g),  h' = sigmoid(o) . tanh(c')

    Reads: kernel_size, forget_bias.
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        k = config.kernel_size
        self.forget_bias = config.forget_bias
        self.state_channels = {"h": channels, "c": channels}
        self.from_x = StateConv(channels, [(channels, k)] * 4)
        self.from_h = StateConv(channels, [(channels, k)] * 4)

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        c = _get(state, "c")
        i, f, o, g = (
            a + b for a, b in zip(self.from_x(x), self.from_h(_get(state, "h")), strict=True)
        )
        c_next = torch.sigmoid(i) * torch.tanh(g)
        if c is not None:
            c_next = c_next + torch.sigmoid(f + self.forget_bias) * c
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return h_next, {"h": h_next, "c": c_next}


@CELLS.register("ugrnn")
class UGRNNCell(Cell):
    """Update-gate RNN (Collins, Sohl-Dickstein & Sussillo 2017), convolutional, as
    released (`ConvUGRNNCell`):

        g = sigmoid(W_xg * x + W_hg * h + b_g + forget_bias),  n = tanh(W_xn * x + W_hn * h + b_n)
        h' = g . h + (1 - g) . n

    Reads: kernel_size, forget_bias.
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        k = config.kernel_size
        self.forget_bias = config.forget_bias
        self.state_channels = {"h": channels}
        self.from_x = StateConv(channels, [(channels, k)] * 2)
        self.from_h = StateConv(channels, [(channels, k)] * 2)

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        h = _get(state, "h")
        (xg, xn), (hg, hn) = self.from_x(x), self.from_h(h)
        g = torch.sigmoid(xg + hg + self.forget_bias)
        n = torch.tanh(xn + hn)
        h_next = (1 - g) * n if h is None else g * h + (1 - g) * n
        return h_next, {"h": h_next}


@CELLS.register("intersectionrnn")
class IntersectionRNNCell(Cell):
    """Intersection RNN (Collins et al. 2017), convolutional, as released
    (`ConvIntersectionRNNCell`); output y, state h, f = forget_bias:

        y_n = relu(W_xy * x + W_hy * h + b),       h_n = tanh(W_xh * x + W_hh * h + b)
        g_y = sigmoid(W_xgy * x + W_hgy * h + b + f), g_h = sigmoid(W_xgh * x + W_hgh * h + b + f)
        y = g_y . x + (1 - g_y) . y_n,             h' = g_h . h + (1 - g_h) . h_n

    Reads: kernel_size, forget_bias.
    """

    def __init__(self, channels: int, in_channels: int, config: CellConfig) -> None:
        super().__init__(channels, in_channels, config)
        k = config.kernel_size
        self.forget_bias = config.forget_bias
        self.state_channels = {"h": channels}
        self.from_x = StateConv(channels, [(channels, k)] * 4)
        self.from_h = StateConv(channels, [(channels, k)] * 4)

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        h = _get(state, "h")
        y_pre, h_pre, gy_pre, gh_pre = (
            a + b for a, b in zip(self.from_x(x), self.from_h(h), strict=True)
        )
        g_y = torch.sigmoid(gy_pre + self.forget_bias)
        g_h = torch.sigmoid(gh_pre + self.forget_bias)
        y = g_y * x + (1 - g_y) * torch.relu(y_pre)
        h_new = (1 - g_h) * torch.tanh(h_pre)
        if h is not None:
            h_new = h_new + g_h * h
        return y, {"h": h_new}


@CELLS.register("none")
class IdentityCell(Cell):
    """No recurrence: the output is the drive and there is no state (feedforward layers)."""

    def forward(
        self,
        x: Tensor,
        state: State | None,
        feedback: Tensor | None = None,
        bypass: Tensor | None = None,
        bypass_term: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        return x, {}

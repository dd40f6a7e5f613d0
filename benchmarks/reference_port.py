"""The median ConvRNN computed the way the released model computes it: the yardstick of
`convrnn_throughput`'s `port_over_rgc_intermediate`.

`ReferencePort(model)` runs the graph of a `ConvRNN` built as `rgc_intermediate`, on that
model's own parameters (shared, not copied), with the released code's schedule and none
of this project's shortcuts:

- every layer runs at every one of the `times` steps (the released graph is unrolled in
  full; nothing is skipped because it cannot reach the readout);
- every convolution is computed at every step: of a constant image, of the unchanged
  output of a feedforward layer, and of the all-zero initial states and outputs;
- each state-to-gate map is its own depthwise-separable convolution (none are stacked),
  and each feedback source has its own 1x1 convolution;
- ELU, max pooling and bilinear resizing are PyTorch's own (`F.elu`, `F.max_pool2d`,
  `F.interpolate` with aligned corners, as the released harbor's resize).

The equations are written out here from Nayebi, Sagastuy-Brena, Bear et al. 2022 (the
median reciprocal gated cell) and the biological unrolling (every edge one step):

    x   = elu(W_l * in_l)                                         (layer convolution)
    c'  = elu( tau(S_cc(c)) . c + gate(S_hc(h)) . (W_xc * x) )
    h'  = elu( tau(S_hh(h)) . h + gate(S_ch(c)) . (W_xh * x + P r + sum_f F_f(resize(f))) )
    out = maxpool(h')

tau(z) = tau_offset + tau_multiplier * sigmoid(z), gate(z) = gate_offset + gate_multiplier
* tanh(z); S_ab depthwise-separable with TF "SAME" padding; r the layer's input in_l. The
readout is the global average of the top layer's output at the step before the last,
then the linear layer. `tests/benchmarks/test_reference_port.py` checks the port against
`ConvRNN.forward` to float64 rounding, logits and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from models.cells import MedianReciprocalGatedCell, StateConv
from models.convrnn import ConvRNN, Layer


def same_padding(x: Tensor, kernel: int) -> Tensor:
    """TF "SAME" zero padding for a stride-1 `kernel`: (k-1)//2 before, the rest after."""
    before = (kernel - 1) // 2
    after = kernel - 1 - before
    return F.pad(x, (before, after, before, after))


def same_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int = 1) -> Tensor:
    """Stride-1 convolution with TF "SAME" padding."""
    return F.conv2d(same_padding(x, weight.shape[-1]), weight, bias, groups=groups)


def separable(x: Tensor, conv: StateConv, destination: int) -> Tensor:
    """The depthwise-separable map of `conv` to `destination`, written out."""
    part = conv.part(destination)
    depthwise = same_conv(x, part["depthwise"], groups=x.shape[1])
    return F.conv2d(depthwise, part["pointwise"], part["bias"])


class ReferencePort(nn.Module):
    """`model`'s function (an `rgc_intermediate` ConvRNN with readout "last"), computed
    as the released model does (see the module docstring)."""

    def __init__(self, model: ConvRNN) -> None:
        super().__init__()
        if model.unroll != "biological" or model.readout != "last":
            raise UserError(
                "the reference port computes the biological unrolling read out at the last "
                f"step; got unroll={model.unroll!r}, readout={model.readout!r}"
            )
        if any(plan.feedforward for plan in model._plans):
            raise UserError("the reference port computes chains with feedback edges only")
        for layer in model.layer_list():
            if layer.has_cell and not isinstance(layer.cell, MedianReciprocalGatedCell):
                raise UserError(
                    f"the reference port computes median RGC cells, got {type(layer.cell)}"
                )
        self.model = model

    def _layer(
        self,
        index: int,
        layer: Layer,
        inputs: Tensor,
        feedback: dict[str, Tensor],
        state: dict[str, Tensor],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One step of one layer from explicit (possibly all-zero) inputs and state."""
        spec = self.model.graph.layers[index]
        conv = layer.conv
        x = F.elu(
            F.conv2d(inputs, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
        )
        if not layer.has_cell:
            return self._pool(x, spec.pool), state
        cell = layer.cell
        assert isinstance(cell, MedianReciprocalGatedCell)
        config = cell.config
        size = (x.shape[-2], x.shape[-1])
        h, c = state["h"], state["c"]
        s_hh, s_hc = separable(h, cell.from_h, 0), separable(h, cell.from_h, 1)
        s_cc, s_ch = separable(c, cell.from_c, 0), separable(c, cell.from_c, 1)
        tau_h = config.tau_offset + config.tau_multiplier * torch.sigmoid(s_hh)
        tau_c = config.tau_offset + config.tau_multiplier * torch.sigmoid(s_cc)
        gate_h = config.gate_offset + config.gate_multiplier * torch.tanh(s_ch)
        gate_c = config.gate_offset + config.gate_multiplier * torch.tanh(s_hc)
        to_cell = cell.to_cell
        drive_c = same_conv(x, to_cell.weight, to_cell.bias)
        drive_h = x if cell.to_out is None else same_conv(x, cell.to_out.weight, cell.to_out.bias)
        if cell.uses_bypass:
            r = self._resize(inputs, size)
            drive_h = drive_h + (r if cell.project is None else F.conv2d(r, cell.project.weight))
        for name, source in feedback.items():
            projection = layer.extra[name]
            assert isinstance(projection, nn.Conv2d)
            drive_h = drive_h + F.conv2d(
                self._resize(source, size), projection.weight, projection.bias
            )
        c_next = F.elu(tau_c * c + gate_c * drive_c)
        h_next = F.elu(tau_h * h + gate_h * drive_h)
        return self._pool(h_next, spec.pool), {"h": h_next, "c": c_next}

    @staticmethod
    def _pool(x: Tensor, window: int) -> Tensor:
        return F.max_pool2d(x, window, ceil_mode=True) if window > 1 else x

    @staticmethod
    def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) of `images` (B, C, H, W) at the last of the model's steps."""
        model = self.model
        layers = model.layer_list()
        batch, device, dtype = images.shape[0], images.device, images.dtype
        outputs = [
            torch.zeros(batch, spec.channels, *size, device=device, dtype=dtype)
            for spec, size in zip(model.graph.layers, model.out_sizes, strict=True)
        ]
        states: list[dict[str, Tensor]] = [
            {
                name: torch.zeros(batch, channels, *size, device=device, dtype=dtype)
                for name, channels in layer.cell.state_channels.items()
            }
            for layer, size in zip(layers, model.conv_sizes, strict=True)
        ]
        gray = torch.full_like(images, model.gray)
        image_off = model.image_off
        for time in range(model.times):
            frame = images if image_off is None or time < image_off else gray
            new_outputs = []
            for index, (layer, plan) in enumerate(zip(layers, model._plans, strict=True)):
                inputs = frame if plan.main < 0 else outputs[plan.main]
                feedback = {name: outputs[source] for name, source in plan.feedback}
                out, states[index] = self._layer(index, layer, inputs, feedback, states[index])
                new_outputs.append(out)
            top = outputs[-1]
            outputs = new_outputs
        return model.head(top)

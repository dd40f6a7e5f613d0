"""Feedforward Atari encoders: the DQN networks of Mnih et al. 2013 and 2015.

An encoder maps a stack of preprocessed frames `(B, C, 84, 84)` (floats, already
scaled to [0, 1]) to a feature vector `(B, num_outputs)` that ends in a ReLU; the
actor-critic in `envs/` puts a policy and a value head on top of it.

- `mnih2013`: Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning",
  Section 5: 16 filters 8x8 stride 4, 32 filters 4x4 stride 2, a fully connected
  layer of 256 rectifiers. Also the encoder of the A3C paper (Mnih et al. 2016, Sec. 8).
- `nature_cnn`: Mnih et al. 2015, "Human-level control through deep reinforcement
  learning" (Nature), Methods: 32 filters 8x8 stride 4, 64 filters 4x4 stride 2,
  64 filters 3x3 stride 1, a fully connected layer of 512 rectifiers.

Parameters keep PyTorch's default initializers, so `models.reinitialize` (the
`Scratch` control) redraws exactly the distribution a fresh model starts from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.registry import register


def _conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after an unpadded convolution."""
    return (size - kernel) // stride + 1


class AtariCNN(nn.Module):
    """Unpadded convolutions with ReLUs, flattened, then Linear -> ReLU.

    Args:
        input_shape: (C, H, W) of one observation (C = stacked frames x colour channels).
        num_outputs: size of the feature vector.
        convs: (filters, kernel, stride) of each convolution, in order.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_outputs: int,
        convs: tuple[tuple[int, int, int], ...],
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for filters, kernel, stride in convs:
            layers += [nn.Conv2d(channels, filters, kernel, stride), nn.ReLU()]
            channels = filters
            height = _conv_output_size(height, kernel, stride)
            width = _conv_output_size(width, kernel, stride)
        if height < 1 or width < 1:
            raise ValueError(f"input {input_shape} is too small for convolutions {convs}")
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * height * width, num_outputs)
        self.num_outputs = num_outputs

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc(self.convs(x).flatten(1)))


@register("mnih2013")
def build_mnih2013(input_shape: tuple[int, int, int], num_outputs: int = 256) -> nn.Module:
    """The Mnih et al. 2013 DQN encoder: conv 16x8x8/4, conv 32x4x4/2, fc `num_outputs` (256)."""
    return AtariCNN(input_shape, num_outputs, convs=((16, 8, 4), (32, 4, 2)))


@register("nature_cnn")
def build_nature_cnn(input_shape: tuple[int, int, int], num_outputs: int = 512) -> nn.Module:
    """The Nature DQN encoder (Mnih et al. 2015): conv 32x8x8/4, 64x4x4/2, 64x3x3/1, fc 512."""
    return AtariCNN(input_shape, num_outputs, convs=((32, 8, 4), (64, 4, 2), (64, 3, 1)))

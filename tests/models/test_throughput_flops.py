"""The throughput benchmark's FLOP count against hand formulas on tiny convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.convrnn_throughput import count_flops


@pytest.mark.parametrize(("channels", "groups"), [(6, 1), (6, 3), (6, 6)])
def test_convolution_forward_and_backward_flops_count_the_groups(channels, groups):
    """Forward, input gradient and weight gradient each cost 2 B Ho Wo Cout (Cin/g) k k."""
    b, size, k = 2, 5, 3
    conv = nn.Conv2d(channels, channels, k, padding=1, groups=groups, bias=False)
    x = torch.randn(b, channels, size, size, requires_grad=True)
    one = 2 * b * size * size * channels * (channels // groups) * k * k
    assert count_flops(lambda: conv(x)) == one
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * one
    frozen_input = torch.randn(b, channels, size, size)  # no input gradient
    assert count_flops(lambda: conv(frozen_input).sum().backward()) == 2 * one


def test_torch_alone_overcounts_the_depthwise_weight_gradient():
    from torch.utils.flop_counter import FlopCounterMode

    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
    x = torch.randn(2, 6, 5, 5)
    with FlopCounterMode(display=False) as counter:
        conv(x).sum().backward()
    one = 2 * 2 * 25 * 6 * 1 * 9
    assert counter.get_total_flops() == one + 6 * one  # the weight gradient C times
    assert count_flops(lambda: conv(x).sum().backward()) == 2 * one

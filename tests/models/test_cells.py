"""Each recurrent cell's step against a hand-written computation of its equations."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from leap_convrnn.errors import UserError
from models.cells import (
    ACTIVATIONS,
    CELLS,
    CellConfig,
    InitConv2d,
    StateConv,
    build_cell,
    init_weight,
)
from models.registry import reinitialize

B, D, DC, H, W = 2, 3, 2, 5, 4


def same(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """TF "SAME" convolution written out: pad (k-1)//2 before, the rest after."""
    k = weight.shape[-1]
    lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
    return F.conv2d(F.pad(x, (lo, hi, lo, hi)), weight, bias)


def full(x: Tensor, part: dict[str, Tensor]) -> Tensor:
    return same(x, part["weight"], part["bias"])


def separable(x: Tensor, part: dict[str, Tensor]) -> Tensor:
    k = part["depthwise"].shape[-1]
    lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
    depthwise = F.conv2d(F.pad(x, (lo, hi, lo, hi)), part["depthwise"], groups=x.shape[1])
    return F.conv2d(depthwise, part["pointwise"], part["bias"])


def make(name: str, config: CellConfig, in_channels: int = D, seed: int = 0):
    torch.manual_seed(seed)
    cell = build_cell(name, D, in_channels, config).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return cell


def rand(*shape: int) -> Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def test_rgc_neurips_default_is_the_released_equation_with_the_residual_to_out_gate():
    """Out gate sigma(W_ch * c + W_rh * r): r the layer input (4 channels here) through a
    3x3 convolution without bias (the released `residual_to_out_gate`)."""
    cell = make("rgc", CellConfig(cell_depth=DC), in_channels=4)
    x, h, c, r = rand(B, D, H, W), rand(B, D, H, W), rand(B, DC, H, W), rand(B, 4, H, W)
    out, state = cell(x, {"h": h, "c": c}, bypass=r)
    w_hh, w_hc = full(h, cell.from_h.part(0)), full(h, cell.from_h.part(1))
    w_cc, w_ch = full(c, cell.from_c.part(0)), full(c, cell.from_c.part(1))
    w_xc = same(x, cell.to_cell.weight, cell.to_cell.bias)
    assert cell.from_r.weight.shape == (D, 4, 3, 3) and cell.from_r.bias is None
    w_rh = same(r, cell.from_r.weight)
    h_ref = F.elu((1 - torch.sigmoid(w_hh)) * h + (1 - torch.sigmoid(w_ch + w_rh)) * x)
    c_ref = F.elu((1 - torch.sigmoid(w_cc)) * c + (1 - torch.sigmoid(w_hc)) * w_xc)
    torch.testing.assert_close(out, h_ref)
    torch.testing.assert_close(state["h"], h_ref)
    torch.testing.assert_close(state["c"], c_ref)


def test_rgc_offsets_multipliers_activations_and_distinct_kernels():
    config = CellConfig(
        cell_depth=DC,
        tau_kernel=1,
        gate_kernel=3,
        input_kernel=2,
        tau_offset=0.8,
        tau_multiplier=-0.6,
        gate_offset=0.3,
        gate_multiplier=0.5,
        tau_bias=0.4,
        gate_bias=-0.2,
        gate_activation="tanh",
        cell_activation="relu",
        out_activation="tanh",
    )
    cell = make("rgc", replace(config, bypass=False))
    assert cell.from_r is None
    assert len(cell.from_h.convs) == 2  # a 1x1 and a 3x3 convolution
    x, h, c = rand(B, D, H, W), rand(B, D, H, W), rand(B, DC, H, W)
    out, state = cell(x, {"h": h, "c": c})

    def tau(z):
        return 0.8 - 0.6 * torch.sigmoid(z + 0.4)

    def gate(z):
        return 0.3 + 0.5 * torch.tanh(z - 0.2)

    hh, hc = full(h, cell.from_h.part(0)), full(h, cell.from_h.part(1))
    cc, ch = full(c, cell.from_c.part(0)), full(c, cell.from_c.part(1))
    assert cell.from_h.part(0)["weight"].shape[-1] == 1
    assert cell.from_h.part(1)["weight"].shape[-1] == 3
    xc = same(x, cell.to_cell.weight, cell.to_cell.bias)
    torch.testing.assert_close(out, torch.tanh(tau(hh) * h + gate(ch) * x))
    torch.testing.assert_close(state["c"], torch.relu(tau(cc) * c + gate(hc) * xc))


def test_rgc_median_form():
    config = CellConfig(
        cell_depth=DC,
        tau_kernel=3,
        gate_kernel=5,
        input_kernel=2,
        out_kernel=3,
        tau_offset=0.92,
        tau_multiplier=-0.92,
        gate_offset=0.7,
        gate_multiplier=-0.7,
        gate_activation="tanh",
    )
    in_channels = 4
    cell = make("rgc_median", config, in_channels=in_channels)
    assert cell.feedback_entry == "cell"
    x, h, c = rand(B, D, H, W), rand(B, D, H, W), rand(B, DC, H, W)
    fb, r = rand(B, D, H, W), rand(B, in_channels, H, W)
    out, state = cell(x, {"h": h, "c": c}, feedback=fb, bypass=r)

    def tau(z):
        return 0.92 - 0.92 * torch.sigmoid(z)

    def gate(z):
        return 0.7 - 0.7 * torch.tanh(z)

    s_hh, s_hc = separable(h, cell.from_h.part(0)), separable(h, cell.from_h.part(1))
    s_cc, s_ch = separable(c, cell.from_c.part(0)), separable(c, cell.from_c.part(1))
    assert cell.from_h.part(1)["depthwise"].shape == (D, 1, 5, 5)
    drive_c = same(x, cell.to_cell.weight, cell.to_cell.bias)
    drive_h = same(x, cell.to_out.weight, cell.to_out.bias) + F.conv2d(r, cell.project.weight) + fb
    c_ref = F.elu(tau(s_cc) * c + gate(s_hc) * drive_c)
    h_ref = F.elu(tau(s_hh) * h + gate(s_ch) * drive_h)
    torch.testing.assert_close(out, h_ref)
    torch.testing.assert_close(state["c"], c_ref)


def test_rgc_median_identity_bypass_and_no_output_conv():
    cell = make("rgc_median", CellConfig(cell_depth=DC, out_kernel=0))
    assert cell.to_out is None and cell.project is None
    x, h, c, r = rand(B, D, H, W), rand(B, D, H, W), rand(B, DC, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h, "c": c}, bypass=r)
    s_hh, s_ch = separable(h, cell.from_h.part(0)), separable(c, cell.from_c.part(1))
    h_ref = F.elu((1 - torch.sigmoid(s_hh)) * h + (1 - torch.sigmoid(s_ch)) * (x + r))
    torch.testing.assert_close(out, h_ref)


def test_rgc_residual_to_out_gate_reads_a_strided_layer_input_resized_with_corners_aligned():
    cell = make("rgc", CellConfig(cell_depth=DC, gate_kernel=1), in_channels=D)
    x, r = rand(B, D, H, W), rand(B, D, 2 * H, 2 * W)
    out, _ = cell(x, None, bypass=r)
    r_small = F.interpolate(r, size=(H, W), mode="bilinear", align_corners=True)
    ch = cell.from_c(None)[1] + same(r_small, cell.from_r.weight)
    torch.testing.assert_close(out, F.elu((1 - torch.sigmoid(ch)) * x))


def test_time_decay_is_one_unconstrained_scalar_initialized_at_zero():
    cell = make("timedecay", CellConfig())
    assert cell.decay.shape == (1,)
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, state = cell(x, {"h": h})
    torch.testing.assert_close(out, cell.decay * h + x)
    torch.testing.assert_close(state["h"], out)
    fresh = build_cell("timedecay", D, D, CellConfig())
    assert fresh.decay.item() == 0.0


def test_time_decay_initial_value_survives_reinitialize():
    cell = build_cell("timedecay", D, D, CellConfig(decay=1.3))
    with torch.no_grad():
        cell.decay.zero_()
    reinitialize(cell, seed=3)
    torch.testing.assert_close(cell.decay, torch.full((1,), 1.3))


def test_vanilla_rnn_has_its_input_convolution():
    cell = make("simplernn", CellConfig())
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h})
    torch.testing.assert_close(
        out, F.elu(full(x, cell.from_x.part(0)) + full(h, cell.from_h.part(0)))
    )


def test_conv_gru_reset_gate_has_the_forget_bias():
    cell = make("gru", CellConfig(kernel_size=3, forget_bias=1.5))
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h})
    r = torch.sigmoid(full(x, cell.from_x.part(0)) + full(h, cell.from_h.part(0)) + 1.5)
    u = torch.sigmoid(full(x, cell.from_x.part(1)) + full(h, cell.from_h.part(1)))
    n = torch.tanh(full(x, cell.from_x.part(2)) + full(r * h, cell.from_rh.part(0)))
    torch.testing.assert_close(out, u * h + (1 - u) * n)


def test_conv_lstm():
    cell = make("lstm", CellConfig(kernel_size=3, forget_bias=1.5))
    x, h, c = rand(B, D, H, W), rand(B, D, H, W), rand(B, D, H, W)
    out, state = cell(x, {"h": h, "c": c})
    i, f, o, g = (full(x, cell.from_x.part(k)) + full(h, cell.from_h.part(k)) for k in range(4))
    c_ref = torch.sigmoid(f + 1.5) * c + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(state["c"], c_ref)
    torch.testing.assert_close(out, torch.sigmoid(o) * torch.tanh(c_ref))


def test_ugrnn_is_tanh_with_forget_bias_one():
    cell = make("ugrnn", CellConfig(out_activation="relu"))  # out_activation is not read
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h})
    g = torch.sigmoid(full(x, cell.from_x.part(0)) + full(h, cell.from_h.part(0)) + 1.0)
    n = torch.tanh(full(x, cell.from_x.part(1)) + full(h, cell.from_h.part(1)))
    torch.testing.assert_close(out, g * h + (1 - g) * n)


def test_intersection_rnn_has_relu_output_and_forget_bias_one():
    cell = make("intersectionrnn", CellConfig(out_activation="tanh"))  # not read
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    y, state = cell(x, {"h": h})
    pre = [full(x, cell.from_x.part(k)) + full(h, cell.from_h.part(k)) for k in range(4)]
    g_y, g_h = torch.sigmoid(pre[2] + 1.0), torch.sigmoid(pre[3] + 1.0)
    torch.testing.assert_close(y, g_y * x + (1 - g_y) * torch.relu(pre[0]))
    torch.testing.assert_close(state["h"], g_h * h + (1 - g_h) * torch.tanh(pre[1]))


def test_variance_scaling_is_tf_truncated_normal_with_fan_in():
    """TF's variance_scaling_initializer(scale, fan_in, truncated normal): std
    sqrt(scale / fan_in) / 0.8796 before truncation at 2 std; after it, sqrt(scale / fan_in)."""
    conv = InitConv2d(64, 128, 3)
    torch.manual_seed(0)
    conv.set_init(("variance_scaling", 0.64))
    w = conv.weight.detach()
    fan_in = 64 * 9
    torch.testing.assert_close(w.std().item(), (0.64 / fan_in) ** 0.5, rtol=0.02, atol=0)
    limit = 2 * (0.64 / fan_in) ** 0.5 / 0.87962566103423978
    assert w.abs().max().item() <= limit
    torch.testing.assert_close(conv.bias.detach(), torch.zeros(128))
    depthwise = torch.empty(32, 1, 7, 7)
    init_weight(depthwise, ("variance_scaling", 1.0), groups=32)  # TF fan in 7*7*32
    torch.testing.assert_close(depthwise.std().item(), (1 / (49 * 32)) ** 0.5, rtol=0.05, atol=0)


def test_glorot_uniform_limits_and_reinitialize_keeps_the_scheme():
    conv = InitConv2d(16, 8, 3)
    conv.set_init(("glorot", 1.0))
    limit = (6 / (16 * 9 + 8 * 9)) ** 0.5
    w = conv.weight.detach()
    assert w.abs().max().item() <= limit and w.abs().max().item() > 0.9 * limit
    reinitialize(conv, seed=1)
    assert conv.weight.abs().max().item() <= limit


@pytest.mark.parametrize(
    ("name", "config", "scale"),
    [
        ("rgc_median", CellConfig(init_scale=0.5), ("variance_scaling", 0.5)),
        ("rgc", CellConfig(), ("glorot", 1.0)),
    ],
)
def test_cells_use_their_released_initializer(name, config, scale):
    cell = build_cell(name, 8, 8, config)
    cell.init_released()
    convs = [m for m in cell.modules() if isinstance(m, InitConv2d)]
    assert convs and all(m.scheme == scale for m in convs)
    assert all(m.bias is None or m.bias.abs().sum() == 0 for m in convs)


def test_gru_released_gate_biases_are_one():
    cell = build_cell("gru", 4, 4, CellConfig())
    cell.init_released()
    bias = cell.from_x.convs[0].bias.detach()
    torch.testing.assert_close(bias, torch.tensor([1.0] * 8 + [0.0] * 4))
    reinitialize(cell, seed=2)
    torch.testing.assert_close(cell.from_x.convs[0].bias.detach(), bias)


def test_identity_cell_has_no_state():
    cell = build_cell("none", D, D, CellConfig())
    x = rand(B, D, H, W)
    out, state = cell(x, None)
    assert out is x and state == {}
    assert list(cell.parameters()) == []


RECURRENT = [name for name in CELLS if name != "none"]


@pytest.mark.parametrize("name", RECURRENT)
def test_none_state_equals_explicit_zeros(name):
    """The skipped first step (state None) computes exactly what zeros would."""
    cell = make(name, CellConfig(cell_depth=DC), in_channels=D)
    x, fb = rand(B, D, H, W), rand(B, D, H, W)
    zeros = cell.initial_state(B, (H, W), dtype=torch.float64)
    assert {k: v.shape[1] for k, v in zeros.items()} == cell.state_channels
    out_none, state_none = cell(x, None, feedback=fb, bypass=x)
    out_zero, state_zero = cell(x, zeros, feedback=fb, bypass=x)
    torch.testing.assert_close(out_none, out_zero)
    for key in state_zero:
        torch.testing.assert_close(state_none[key], state_zero[key])


@pytest.mark.parametrize("name", RECURRENT)
def test_state_keeps_the_layer_size_and_gradients_reach_every_parameter(name):
    cell = make(name, CellConfig(cell_depth=DC))
    x = rand(B, D, H, W)
    state = None
    for _ in range(3):
        out, state = cell(x, state, bypass=x)
    assert out.shape == x.shape
    out.square().sum().backward()
    for pname, p in cell.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_state_conv_stacks_destinations_that_share_a_kernel():
    conv = StateConv(3, [(4, 3), (2, 1), (5, 3)])
    assert [c.kernel_size for c in conv.convs] == [(1, 1), (3, 3)]
    assert conv.convs[1].out_channels == 9
    s = torch.randn(2, 3, 6, 6)
    outs = conv(s)
    assert [o.shape[1] for o in outs] == [4, 2, 5]
    for i, o in enumerate(outs):
        torch.testing.assert_close(o, full(s, conv.part(i)))
    biases = conv(None)
    for i, bias in enumerate(biases):
        torch.testing.assert_close(bias.flatten(), conv.part(i)["bias"])


def test_unknown_cell_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown cell 'rgcc'.*accepted: .*rgc"):
        build_cell("rgcc", D, D, CellConfig())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tau_kernel": 0}, "tau_kernel"),
        ({"cell_depth": 0}, "cell_depth"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"gate_activation": "swishy"}, "unknown activation 'swishy'"),
    ],
)
def test_bad_cell_options_are_user_errors(options, match):
    with pytest.raises(UserError, match=match):
        CellConfig(**options)


def test_rgc_searched_options_separable_input_to_output_kernel_and_feedback_into_the_cell():
    config = CellConfig(
        cell_depth=DC, separable=True, out_kernel=3, feedback_entry="cell", bypass=False
    )
    cell = make("rgc", config)
    assert cell.feedback_entry == "cell" and cell.from_h.separable
    x, h, c, fb = rand(B, D, H, W), rand(B, D, H, W), rand(B, DC, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h, "c": c}, feedback=fb)
    s_hh, s_ch = separable(h, cell.from_h.part(0)), separable(c, cell.from_c.part(1))
    drive = same(x, cell.to_out.weight, cell.to_out.bias) + fb
    torch.testing.assert_close(
        out, F.elu((1 - torch.sigmoid(s_hh)) * h + (1 - torch.sigmoid(s_ch)) * drive)
    )


def test_median_rgc_can_take_full_convolutions_and_feedback_at_the_input():
    cell = make("rgc_median", CellConfig(cell_depth=DC, separable=False, feedback_entry="input"))
    assert cell.feedback_entry == "input" and not cell.from_h.separable
    with pytest.raises(UserError, match="feedback_entry"):
        CellConfig(feedback_entry="output")


def test_fast_elu_equals_torch_elu_in_value_and_first_and_second_derivative():
    x = torch.cat([torch.linspace(-30, 30, 601, dtype=torch.float64), torch.zeros(1).double()])
    x.requires_grad_(True)
    ours, theirs = ACTIVATIONS["elu"](x), F.elu(x)
    torch.testing.assert_close(ours, theirs)
    (g_ours,) = torch.autograd.grad(ours.sum(), x, create_graph=True)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), x, create_graph=True)
    torch.testing.assert_close(g_ours, g_theirs)
    (h_ours,) = torch.autograd.grad(g_ours.sum(), x)
    (h_theirs,) = torch.autograd.grad(g_theirs.sum(), x)
    smooth = x.detach() != 0  # at the kink the one-sided second derivatives are 0 and 1
    torch.testing.assert_close(h_ours[smooth], h_theirs[smooth])

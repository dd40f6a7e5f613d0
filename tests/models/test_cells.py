"""Each recurrent cell's step against a hand-written computation of its equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from leap_convrnn.errors import UserError
from models.cells import CELLS, CellConfig, StateConv, build_cell
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


def test_rgc_neurips_default_is_the_paper_equation():
    cell = make("rgc", CellConfig(cell_depth=DC))
    x, h, c = rand(B, D, H, W), rand(B, D, H, W), rand(B, DC, H, W)
    out, state = cell(x, {"h": h, "c": c})
    w_hh, w_hc = full(h, cell.from_h.part(0)), full(h, cell.from_h.part(1))
    w_cc, w_ch = full(c, cell.from_c.part(0)), full(c, cell.from_c.part(1))
    w_xc = same(x, cell.to_cell.weight, cell.to_cell.bias)
    h_ref = F.elu((1 - torch.sigmoid(w_hh)) * h + (1 - torch.sigmoid(w_ch)) * x)
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
    cell = make("rgc", config)
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


def test_time_decay():
    cell = make("timedecay", CellConfig())
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, state = cell(x, {"h": h})
    m = torch.sigmoid(cell.decay_logit).view(1, D, 1, 1)
    torch.testing.assert_close(out, m * h + x)
    torch.testing.assert_close(state["h"], out)


def test_time_decay_initial_value_survives_reinitialize():
    cell = build_cell("timedecay", D, D, CellConfig(decay=0.8))
    with torch.no_grad():
        cell.decay_logit.zero_()
    reinitialize(cell, seed=3)
    torch.testing.assert_close(torch.sigmoid(cell.decay_logit), torch.full((D,), 0.8))


def test_vanilla_rnn():
    cell = make("simplernn", CellConfig(out_activation="tanh"))
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h})
    torch.testing.assert_close(out, torch.tanh(x + full(h, cell.from_h.part(0))))


def test_conv_gru():
    cell = make("gru", CellConfig(kernel_size=3))
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h})
    z = torch.sigmoid(full(x, cell.from_x.part(0)) + full(h, cell.from_h.part(0)))
    r = torch.sigmoid(full(x, cell.from_x.part(1)) + full(h, cell.from_h.part(1)))
    n = torch.tanh(full(x, cell.from_x.part(2)) + full(r * h, cell.from_rh.part(0)))
    torch.testing.assert_close(out, (1 - z) * h + z * n)


def test_conv_lstm():
    cell = make("lstm", CellConfig(kernel_size=3, forget_bias=1.5))
    x, h, c = rand(B, D, H, W), rand(B, D, H, W), rand(B, D, H, W)
    out, state = cell(x, {"h": h, "c": c})
    i, f, o, g = (full(x, cell.from_x.part(k)) + full(h, cell.from_h.part(k)) for k in range(4))
    c_ref = torch.sigmoid(f + 1.5) * c + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(state["c"], c_ref)
    torch.testing.assert_close(out, torch.sigmoid(o) * torch.tanh(c_ref))


def test_ugrnn():
    cell = make("ugrnn", CellConfig(out_activation="tanh"))
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    out, _ = cell(x, {"h": h})
    g = torch.sigmoid(full(x, cell.from_x.part(0)) + full(h, cell.from_h.part(0)))
    n = torch.tanh(full(x, cell.from_x.part(1)) + full(h, cell.from_h.part(1)))
    torch.testing.assert_close(out, g * h + (1 - g) * n)


def test_intersection_rnn():
    cell = make("intersectionrnn", CellConfig(out_activation="relu"))
    x, h = rand(B, D, H, W), rand(B, D, H, W)
    y, state = cell(x, {"h": h})
    pre = [full(x, cell.from_x.part(k)) + full(h, cell.from_h.part(k)) for k in range(4)]
    g_y, g_h = torch.sigmoid(pre[2]), torch.sigmoid(pre[3])
    torch.testing.assert_close(y, g_y * x + (1 - g_y) * torch.relu(pre[0]))
    torch.testing.assert_close(state["h"], g_h * h + (1 - g_h) * torch.tanh(pre[1]))


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
        ({"decay": 1.0}, "decay"),
        ({"gate_activation": "swishy"}, "unknown activation 'swishy'"),
    ],
)
def test_bad_cell_options_are_user_errors(options, match):
    with pytest.raises(UserError, match=match):
        CellConfig(**options)

"""Weight gradients batched over time steps equal autograd's per-step ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import models
import models.shared_weights as sw
from models.cells import SameConv2d
from models.shared_weights import crop_kernel, shared_weights


def grads(model: torch.nn.Module) -> dict[str, Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-14, msg=name)


@pytest.fixture
def batch_every_conv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch the steps of every convolution, not only the weight-bound ones."""
    monkeypatch.setattr(sw, "WEIGHT_BOUND_RATIO", 0)
    monkeypatch.setattr(sw, "WEIGHT_BOUND_MIN", 0)


@pytest.mark.parametrize(
    ("name", "shape"), [("rgc_intermediate", (3, 64, 64)), ("convrnn_glyph", (1, 28, 28))]
)
def test_batched_weight_gradients_equal_the_per_step_ones(
    name, shape, batch_every_conv, monkeypatch
):
    """Every parameter's gradient, float64, with and without batching (the 2x2 maps of
    rgc_intermediate's top layers take the matrix-product path)."""
    filed: list[int] = []
    weight_grad = sw._Bank.weight_grad

    def counted(bank: sw._Bank, weight: Tensor) -> Tensor | None:
        filed.append(len(bank.inputs))
        return weight_grad(bank, weight)

    monkeypatch.setattr(sw._Bank, "weight_grad", counted)
    torch.manual_seed(0)
    model = models.build(name, shape, 5, width=1 / 8).double()
    x = torch.rand(3, *shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    found = []
    for batched in (False, True):
        model.batched_weight_grads = batched
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        found.append(grads(model))
    assert_same_grads(*found)
    assert max(filed) > 1, "some weight's steps were batched"


def test_the_default_rule_batches_only_weight_bound_convolutions():
    x = torch.zeros(8, 512, 2, 2)
    assert sw.weight_bound(x, torch.zeros(512, 512, 3, 3), [1, 1], [1, 1], [1, 1])
    small = torch.zeros(20, 64, 4, 4)  # convrnn_glyph's top layer: 37K weights, 20K outputs
    assert not sw.weight_bound(small, torch.zeros(64, 64, 3, 3), [1, 1], [1, 1], [1, 1])


def test_second_order_gradients_are_unchanged(batch_every_conv):
    """MAML differentiates the inner gradient: with create_graph the steps return their
    own differentiable weight gradients, and the gradient of the gradient matches."""
    torch.manual_seed(0)
    model = models.build("convrnn_glyph", (1, 28, 28), 5, width=1 / 8).double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([0, 1])
    found = []
    for batched in (False, True):
        model.batched_weight_grads = batched
        model.zero_grad()
        params = [p for p in model.parameters() if p.requires_grad]
        inner = torch.autograd.grad(
            F.cross_entropy(model(x), y), params, create_graph=True, allow_unused=True
        )
        sum(g.pow(2).sum() for g in inner if g is not None).backward()
        found.append(grads(model))
    assert_same_grads(*found)


def test_a_step_the_loss_does_not_reach_adds_nothing(batch_every_conv):
    torch.manual_seed(0)
    conv = SameConv2d(3, 3, 3).double()
    xs = [torch.randn(2, 3, 5, 5, dtype=torch.float64) for _ in range(3)]
    with shared_weights():
        outputs = [conv(x) for x in xs]
    (outputs[0].sum() + outputs[2].pow(2).sum()).backward()
    batched = conv.weight.grad.clone()
    conv.zero_grad()
    (conv(xs[0]).sum() + conv(xs[2]).pow(2).sum()).backward()
    torch.testing.assert_close(batched, conv.weight.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_kernel_larger_than_the_map_is_cropped_exactly(size, batch_every_conv):
    """A 7x7 "same" kernel on a size x size map: outputs and gradients equal F.conv2d's with
    the whole kernel; the taps that only meet padding get zero gradient."""
    torch.manual_seed(0)
    conv = SameConv2d(4, 4, 7, groups=4).double()
    x = torch.randn(2, 4, size, size, dtype=torch.float64, requires_grad=True)
    window, padding = crop_kernel(x, conv.weight, [1, 1], [3, 3], [1, 1])
    assert window is not None and list(padding) == [size - 1] * 2
    for session in (False, True):
        conv.zero_grad()
        x.grad = None
        with shared_weights(session):
            out = conv(x)
        out.pow(2).sum().backward()
        got = (out.detach(), x.grad.clone(), conv.weight.grad.clone())
        conv.zero_grad()
        x.grad = None
        reference = F.conv2d(x, conv.weight, conv.bias, padding=3, groups=4)
        reference.pow(2).sum().backward()
        torch.testing.assert_close(got[0], reference.detach())
        torch.testing.assert_close(got[1], x.grad)
        torch.testing.assert_close(got[2], conv.weight.grad)
        outer = torch.ones(7, 7, dtype=torch.bool)
        outer[3 - (size - 1) : 3 + size, 3 - (size - 1) : 3 + size] = False
        assert (got[2][..., outer] == 0).all()


def test_no_session_when_gradients_are_off():
    torch.manual_seed(0)
    conv = SameConv2d(2, 2, 3)
    with torch.no_grad(), shared_weights():
        assert sw._SESSION.get() is None
        conv(torch.randn(1, 2, 4, 4))

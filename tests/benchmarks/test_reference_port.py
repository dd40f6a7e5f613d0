"""The reference port computes the model's function: the yardstick of the speed target."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import models
from benchmarks.reference_port import ReferencePort
from leap_convrnn.errors import UserError


def perturbed(seed: int = 0) -> torch.nn.Module:
    """A tiny rgc_intermediate in float64 with every parameter (biases too) nonzero."""
    torch.manual_seed(seed)
    model = models.build("rgc_intermediate", (3, 64, 64), 5, width=1 / 16).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_port_equals_the_model_in_logits_and_gradients():
    model = perturbed()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    y = torch.tensor([1, 3])
    found = []
    for forward in (model, ReferencePort(model)):
        model.zero_grad()
        logits = forward(x)
        F.cross_entropy(logits, y).backward()
        found.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (ours, our_grads), (port, port_grads) = found
    torch.testing.assert_close(ours, port, rtol=1e-12, atol=1e-13)
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, port_grads[name], rtol=1e-10, atol=1e-13, msg=name)
    assert all(g.abs().sum() > 0 for g in our_grads.values())


@pytest.mark.parametrize(
    "options", [{"unroll": "full"}, {"readout": "all"}, {"cell": "rgc", "cell_depth": None}]
)
def test_port_refuses_what_it_does_not_compute(options):
    model = models.build("rgc_intermediate", (3, 32, 32), 4, width=1 / 16, **options)
    with pytest.raises(UserError):
        ReferencePort(model)

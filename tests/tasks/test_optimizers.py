"""The inner-optimizer table: each name builds the torch optimizer it says, with the
config's hyperparameters; config validation accepts exactly the table's names."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from experiments.config import compose
from leap_convrnn.errors import UserError
from tasks.base import InnerLoopConfig
from tasks.optimizers import INNER_OPTIMIZERS, make_optimizer

CONFIG = InnerLoopConfig(
    lr=0.05, momentum=0.7, rmsprop_alpha=0.95, rmsprop_eps=1e-4, weight_decay=0.01
)
EXPECTED = {
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0, "weight_decay": 0.01}),
    "momentum": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.01}),
    "adam": (torch.optim.Adam, {"lr": 0.05, "weight_decay": 0.01}),
    "rmsprop": (
        torch.optim.RMSprop,
        {"lr": 0.05, "alpha": 0.95, "eps": 1e-4, "weight_decay": 0.01},
    ),
}


def test_the_table_is_the_four_optimizers():
    assert INNER_OPTIMIZERS.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_entry_builds_its_optimizer_with_the_config_values(name):
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = make_optimizer(params, replace(CONFIG, optimizer=name))
    kind, values = EXPECTED[name]
    assert type(optimizer) is kind
    group = optimizer.param_groups[0]
    assert group["params"] == params
    for key, value in values.items():
        assert group[key] == value, key


def test_an_unknown_name_lists_the_table():
    with pytest.raises(UserError, match="accepted: adam, momentum, rmsprop, sgd"):
        make_optimizer([], replace(CONFIG, optimizer="lbfgs"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_validation_accepts_every_entry(name):
    assert compose([f"meta.inner_optimizer={name}"]).meta.inner_optimizer == name


def test_an_sgd_step_with_weight_decay_is_the_hand_formula():
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = make_optimizer([theta], replace(CONFIG, optimizer="sgd"))
    loss = (theta**2).sum() / 2
    loss.backward()
    optimizer.step()
    start = torch.tensor([1.0, -2.0, 3.0])
    # theta - lr * (grad + lambda * theta), with grad = theta for this loss.
    assert torch.allclose(theta.detach(), start - 0.05 * (start + 0.01 * start))


@pytest.mark.parametrize("value", ["-0.1", "nan"])
def test_a_negative_weight_decay_is_refused_by_name(value):
    with pytest.raises(UserError, match=rf"meta\.inner_weight_decay must be >= 0, got {value}"):
        compose([f"meta.inner_weight_decay={value}"])

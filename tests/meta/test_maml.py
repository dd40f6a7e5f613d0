"""MAML and FOMAML (through learn2learn) against a hand-unrolled reference on a tiny problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from leap_convrnn.errors import UserError
from meta import FOMAML, MAML
from tasks.base import InnerLoopConfig, InnerLoopResult, Task
from tasks.classification import ClassificationTask
from tests.conftest import DEVICES

STEPS = 4
INNER = InnerLoopConfig(steps=STEPS, optimizer="sgd", lr=0.4, batch_size=6)


def tiny_model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double().to(device)


def make_task(seed: int, device: str = "cpu") -> ClassificationTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(0, 3, (30,), generator=g).to(device)
    return ClassificationTask(f"t{seed}", x[:24], y[:24], x[24:], y[24:], 3, seed)


def reference(model, task, steps, first_order):
    """Unroll `steps` SGD steps from the model's parameters by hand; return the losses,
    theta_K and the gradient of the query loss with respect to theta_0."""
    theta0 = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    theta = dict(theta0)
    next_batch = task.batches(INNER.batch_size)
    losses = []
    for _ in range(steps):
        x, y = next_batch()
        loss = F.cross_entropy(functional_call(model, theta, (x,)), y)
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=not first_order)
        theta = {n: t - INNER.lr * g for (n, t), g in zip(theta.items(), grads, strict=True)}
        losses.append(loss.detach())
    x, y = next_batch()
    query = F.cross_entropy(functional_call(model, theta, (x,)), y)
    meta_grad = torch.autograd.grad(query, list(theta0.values()))
    losses.append(query.detach())
    return torch.stack(losses), theta, dict(zip(theta0, meta_grad, strict=True))


@pytest.mark.parametrize("first_order", [False, True], ids=["maml", "fomaml"])
@pytest.mark.parametrize("device", DEVICES)
def test_meta_gradient_matches_hand_unrolled_reference(first_order, device):
    model = tiny_model(device)
    learner = FOMAML(model) if first_order else MAML(model)
    tasks = [make_task(s, device) for s in (1, 2, 3)]
    expected = []
    for task in tasks:
        losses, theta_k, grad = reference(model, task, STEPS, first_order)
        result = learner.adapt(model, task, INNER)
        assert isinstance(result, InnerLoopResult)
        torch.testing.assert_close(result.losses, losses.cpu())
        for name, p in model.named_parameters():  # the model holds theta_K after adapt
            torch.testing.assert_close(p.detach(), theta_k[name].detach())
        expected.append(grad)
        learner.initialize(model)
    metrics = learner.end_meta_batch()
    for name, p in zip(learner.names, learner.parameters(), strict=True):
        mean = sum(g[name] for g in expected) / len(expected)
        torch.testing.assert_close(p.grad, mean, atol=1e-10, rtol=1e-8)
        assert p.grad.grad_fn is None
    assert metrics["meta/objective"] > 0 and metrics["meta/grad_norm"] > 0


def test_second_order_terms_matter():
    """On this problem MAML and FOMAML differ: the second-order path is really taken."""
    grads = {}
    for cls in (MAML, FOMAML):
        model = tiny_model()
        learner = cls(model)
        learner.adapt(model, make_task(5), INNER)
        learner.end_meta_batch()
        grads[cls.name] = torch.cat([p.grad.flatten() for p in learner.parameters()])
    assert (grads["maml"] - grads["fomaml"]).norm() > 1e-4 * grads["maml"].norm()


def test_max_steps_caps_the_adaptation():
    model = tiny_model()
    learner = MAML(model, max_steps=2)
    task = make_task(7)
    losses, _, grad = reference(model, task, 2, first_order=False)
    result = learner.adapt(model, task, INNER)
    assert result.losses.numel() == 3
    torch.testing.assert_close(result.losses, losses)
    learner.end_meta_batch()
    for name, p in zip(learner.names, learner.parameters(), strict=True):
        torch.testing.assert_close(p.grad, grad[name])


def test_meta_update_moves_the_initialization_that_initialize_loads():
    model = tiny_model()
    learner = MAML(model)
    before = [p.detach().clone() for p in learner.parameters()]
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.01)
    optimizer.zero_grad(set_to_none=True)
    learner.adapt(model, make_task(8), INNER)
    learner.end_meta_batch()
    torch.nn.utils.clip_grad_norm_(learner.parameters(), 1e-3)
    optimizer.step()
    fresh = tiny_model()
    learner.initialize(fresh)
    for p, b, name in zip(learner.parameters(), before, learner.names, strict=True):
        assert not torch.equal(p.detach(), b)
        torch.testing.assert_close(dict(fresh.named_parameters())[name].detach(), p.detach())


class Game(Task):
    """A task with no supervised minibatches (like an Atari game)."""

    name = "pong"
    num_outputs = 2

    def inner_loop(self, model, config, hook=None):
        raise AssertionError("MAML must not run a non-supervised inner loop")

    def evaluate(self, model):
        return {}


def test_non_supervised_task_is_a_user_error_naming_its_type():
    model = tiny_model()
    with pytest.raises(UserError, match="Game"):
        MAML(model).adapt(model, Game(), INNER)


def test_non_sgd_inner_optimizer_is_a_user_error():
    model = tiny_model()
    with pytest.raises(UserError, match="adam"):
        FOMAML(model).adapt(model, make_task(1), InnerLoopConfig(optimizer="adam"))


def test_unused_parameter_gets_zero_meta_gradient():
    class WithUnusedHead(nn.Sequential):
        def forward(self, x):
            return self[0](x)

    model = WithUnusedHead(tiny_model(), nn.Linear(2, 2).double())
    learner = MAML(model)
    learner.adapt(model, make_task(4), INNER)
    learner.end_meta_batch()
    grads = dict(zip(learner.names, (p.grad for p in learner.parameters()), strict=True))
    assert torch.count_nonzero(grads["1.weight"]) == 0
    assert torch.count_nonzero(grads["0.0.weight"]) > 0


def test_buffers_start_from_the_initial_values_for_every_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    initial = model[1].running_mean.clone()
    learner = MAML(model)
    learner.adapt(model, make_task(1), INNER)
    after_first = model[1].running_mean.clone()
    assert not torch.equal(after_first, initial)
    learner.adapt(model, make_task(1), INNER)
    # Same task, same start: the same statistics, not the first task's carried over.
    torch.testing.assert_close(model[1].running_mean, after_first)
    learner.initialize(model)
    torch.testing.assert_close(model[1].running_mean, initial)


@pytest.mark.parametrize("learner", [MAML, FOMAML])
def test_inner_weight_decay_is_a_user_error(learner):
    model = tiny_model()
    with pytest.raises(UserError, match=r"meta\.inner_weight_decay=0\.01: set it to 0"):
        learner(model).adapt(model, make_task(1), InnerLoopConfig(weight_decay=0.01))

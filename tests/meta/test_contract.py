"""The runner's contract, for every learner: one way to build it, diverged tasks are
dropped and flagged, a meta-batch with no usable task raises AllTasksDropped, state_dict
resumes exactly, and a learner with an initialization draws the rest afresh per task."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

import meta
from leap_convrnn.errors import AllTasksDropped
from tasks.base import InnerLoopConfig
from tasks.classification import ClassificationTask

INNER = InnerLoopConfig(steps=4, optimizer="sgd", lr=0.3, batch_size=6)
LEARNERS = meta.META_LEARNERS.names()
#: Learners whose meta-gradient or body a diverged task would poison.
DROPPING = ["finetune", "fomaml", "leap", "maml", "reptile"]


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def make_task(seed: int, poisoned: bool = False) -> ClassificationTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    if poisoned:
        x[:, 0] = float("nan")
    y = torch.randint(0, 3, (30,), generator=g)
    return ClassificationTask(f"t{seed}", x[:24], y[:24], x[24:], y[24:], 3, seed)


def build(name: str, model: nn.Module, **options):
    """The learner registered as `name`, seeded with 3."""
    return meta.build(name, model, seed=3, **options)


def snapshot(learner, model) -> dict[str, torch.Tensor]:
    """The initialization the learner would hand out, and its meta-gradient."""
    target = copy.deepcopy(model)
    learner.initialize(target)
    state = {f"init/{k}": v.clone() for k, v in target.state_dict().items()}
    for i, p in enumerate(learner.parameters()):
        if p.grad is not None:
            state[f"grad/{i}"] = p.grad.clone()
    return state


@pytest.mark.parametrize("name", DROPPING)
def test_diverged_task_is_flagged_and_left_out(name):
    results = {}
    for tasks in ([1, 2], [1, 2, "nan"]):
        model = tiny_model()
        learner = build(name, model)
        flags = []
        for t in tasks:
            task = make_task(99, poisoned=True) if t == "nan" else make_task(t)
            flags.append(learner.adapt(model, task, INNER).metrics.get("dropped", 0.0))
        learner.end_meta_batch()
        assert flags == [1.0 if t == "nan" else 0.0 for t in tasks]
        results[len(tasks)] = snapshot(learner, model)
    clean, with_nan = results[2], results[3]
    assert clean.keys() == with_nan.keys()
    for key in clean:
        if name == "finetune" and key.startswith("init/3."):
            continue  # the dropped task used up one fresh head: the next draw differs
        torch.testing.assert_close(with_nan[key], clean[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", DROPPING)
def test_meta_batch_without_a_usable_task_raises_all_tasks_dropped(name):
    model = tiny_model()
    learner = build(name, model)
    before = [p.detach().clone() for p in learner.parameters()]
    learner.adapt(model, make_task(5, poisoned=True), INNER)
    with pytest.raises(AllTasksDropped):
        learner.end_meta_batch()
    for p, b in zip(learner.parameters(), before, strict=True):
        assert p.grad is None and torch.equal(p.detach(), b)
    learner.adapt(model, make_task(6), INNER)  # the next meta-batch starts clean
    learner.end_meta_batch()


@pytest.mark.parametrize("name", LEARNERS)
def test_state_dict_resumes_exactly(name):
    """A learner rebuilt from a fresh model and loaded from state_dict continues exactly
    as the original (same losses, same meta-gradient, same initialization)."""

    def meta_step(learner, model, optimizer, seed):
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        losses = [learner.adapt(model, make_task(seed + i), INNER).losses for i in range(2)]
        learner.end_meta_batch()
        if optimizer is not None:
            optimizer.step()
        return torch.cat(losses)

    def optimizer_for(learner):
        params = learner.parameters()
        return torch.optim.Adam(params, lr=0.01) if params else None

    model = tiny_model()
    learner = build(name, model)
    optimizer = optimizer_for(learner)
    meta_step(learner, model, optimizer, 10)
    state = copy.deepcopy(learner.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer else None
    expected = meta_step(learner, model, optimizer, 20)

    other_model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
    other_model = other_model.double()
    resumed = build(name, other_model)
    resumed.load_state_dict(state)
    resumed_optimizer = optimizer_for(resumed)
    if resumed_optimizer is not None:
        resumed_optimizer.load_state_dict(optimizer_state)
    got = meta_step(resumed, other_model, resumed_optimizer, 20)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    original, restored = snapshot(learner, model), snapshot(resumed, other_model)
    assert original.keys() == restored.keys()
    for key, value in original.items():
        torch.testing.assert_close(restored[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", LEARNERS)
def test_every_learner_takes_the_common_construction_arguments(name):
    accepted = inspect.signature(meta.META_LEARNERS.get(name).__init__).parameters
    assert {"model", *meta.registry.COMMON_ARGUMENTS} <= set(accepted)
    learner = meta.build(name, tiny_model(), parameters=None, seed=1)
    assert isinstance(learner, meta.MetaLearner)


#: Learners with an initialization, and the part of it they meta-learn.
WITH_INIT = ["finetune", "fomaml", "leap", "maml", "reptile"]
BODY = ["0.weight", "0.bias", "1.weight", "1.bias"]


@pytest.mark.parametrize("name", WITH_INIT)
def test_a_parameter_subset_is_learned_and_the_rest_drawn_afresh_per_task(name):
    """With `parameters`, the initialization holds exactly those (the shared `Initialization`)
    and every `initialize` draws the others from seed, seed + 1, ...: the same draws for the
    same seed, a new one per task, never the model's own values."""
    model = tiny_model()
    learner = build(name, model, parameters=BODY)
    assert isinstance(learner.initialization, meta.Initialization)
    assert learner.names == BODY
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    first, second = copy.deepcopy(model), copy.deepcopy(model)
    learner.initialize(first)
    learner.initialize(second)
    again = build(name, copy.deepcopy(model), parameters=BODY)
    replay = copy.deepcopy(model)
    again.initialize(replay)
    for n in BODY:
        assert torch.equal(dict(first.named_parameters())[n], theta[n])
    head = "3.weight"
    a, b = dict(first.named_parameters())[head], dict(second.named_parameters())[head]
    assert not torch.equal(a, b) and not torch.equal(a, theta[head])
    assert torch.equal(a, dict(replay.named_parameters())[head])
    assert learner.state_dict()["draws"] == 2

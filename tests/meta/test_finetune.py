"""Multi-headed finetuning and Scratch against references built by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from leap_convrnn.errors import UserError
from meta import Finetune, Scratch
from models import reinitialize
from tasks.base import InnerLoopConfig
from tasks.classification import ClassificationTask
from tasks.inner_loop import fit_supervised

INNER = InnerLoopConfig(steps=5, optimizer="momentum", lr=0.1, batch_size=6)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def make_task(seed: int) -> ClassificationTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    return ClassificationTask(f"t{seed}", x[:24], y[:24], x[24:], y[24:], 3, seed)


def fresh_head(seed: int) -> nn.Linear:
    head = nn.Linear(6, 3).double()
    torch.manual_seed(seed)
    head.reset_parameters()
    return head


def test_body_trains_across_tasks_with_a_fresh_head_each():
    """Reference: one network trained task after task by the same inner loop, its head
    replaced by a fresh draw (seeds 10, 11, ...) before each task."""
    model = tiny_model()
    reference = copy.deepcopy(model)
    learner = Finetune(model, seed=10)
    assert learner.head_names == ["3.weight", "3.bias"] and learner.parameters() == []
    for index, seed in enumerate((1, 2, 3)):
        task = make_task(seed)
        head = fresh_head(10 + index)
        with torch.no_grad():
            reference[3].weight.copy_(head.weight)
            reference[3].bias.copy_(head.bias)
        expected = fit_supervised(reference, task.batches(INNER.batch_size), INNER)
        result = learner.adapt(model, task, INNER)
        torch.testing.assert_close(result.losses, expected.losses)
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p, q, msg=name)
        assert learner.end_meta_batch() == {}
    # The initialization: the trained body and buffers, with a fresh head (seed 13).
    target = tiny_model()
    learner.initialize(target)
    torch.testing.assert_close(target[0].weight, reference[0].weight)
    torch.testing.assert_close(target[1].running_mean, reference[1].running_mean)
    torch.testing.assert_close(target[3].weight, fresh_head(13).weight)


def test_state_dict_round_trip_resumes_the_body():
    model = tiny_model()
    learner = Finetune(model)
    learner.adapt(model, make_task(1), INNER)
    learner.end_meta_batch()
    other = Finetune(tiny_model())
    other.load_state_dict(learner.state_dict())
    a, b = tiny_model(), tiny_model()
    learner.initialize(a)
    other.initialize(b)
    torch.testing.assert_close(a[0].weight, b[0].weight)
    torch.testing.assert_close(a[1].running_var, b[1].running_var)


def test_body_from_the_task_family_parameters():
    model = tiny_model()
    learner = Finetune(model, parameters=["0.weight", "0.bias"])
    assert learner.head_names == ["1.weight", "1.bias", "3.weight", "3.bias"]


def test_unknown_head_is_a_user_error():
    with pytest.raises(UserError, match="classifier"):
        Finetune(tiny_model(), head=["classifier"])


def test_scratch_starts_every_task_from_its_own_seeded_draw():
    model = tiny_model()
    learner = Scratch(model, seed=5)
    starts = []
    for seed in (1, 2):
        task = make_task(seed)
        expected = reinitialize(copy.deepcopy(model), 5 + len(starts))
        start = [p.detach().clone() for p in expected.parameters()]
        result = learner.adapt(model, task, INNER)
        reference = fit_supervised(expected, task.batches(INNER.batch_size), INNER)
        torch.testing.assert_close(result.losses, reference.losses)
        starts.append(start)
    assert not torch.equal(starts[0][0], starts[1][0])
    assert learner.parameters() == [] and learner.end_meta_batch() == {}

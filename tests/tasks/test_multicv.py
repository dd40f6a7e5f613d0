"""Multi-CV: torchvision loaders on fake files in each data set's format, the held-out
protocol, the fresh head per task, and the offline family."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from leap_convrnn.errors import UserError
from meta.leap import Leap
from tasks import build
from tasks.base import InnerLoopConfig
from tasks.datasets import TORCHVISION_SETS, to_shape
from tasks.multicv import UNUSED_LOGIT, final_linear, redraw_head, stratified_split
from tests.tasks.fake_data import shared_images, write_multicv

FAKE_SIZES = {  # (train, test) images of each fake data set
    "mnist": (40, 20),
    "fashion_mnist": (40, 20),
    "svhn": (30, 20),
    "cifar10": (60, 12),
    "cifar100": (8, 8),
    "gtsrb": (12, 6),
}


@pytest.fixture(scope="module")
def multicv_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("multicv")
    with pytest.MonkeyPatch.context() as patch:
        write_multicv(root, patch)
        yield root


@pytest.mark.parametrize("name", sorted(FAKE_SIZES))
def test_each_torchvision_set_loads_at_the_common_shape(multicv_root, name):
    spec = TORCHVISION_SETS[name]
    for train, count in zip((True, False), FAKE_SIZES[name], strict=True):
        data = spec.load(multicv_root, train, channels=1, size=28)
        assert data.images.shape == (count, 1, 28, 28) and data.images.dtype == torch.uint8
        assert data.labels.dtype == torch.int64
        assert int(data.labels.min()) >= 0 and int(data.labels.max()) < spec.classes
        assert float(data.images.float().mean()) > 50, "pixels keep their 0..255 range"
    colour = spec.load(multicv_root, True, channels=3, size=32)
    assert colour.images.shape == (FAKE_SIZES[name][0], 3, 32, 32)
    assert (multicv_root / "leap-cache" / f"{name}-train-3x32x32-v1.pt").exists()


def test_svhn_label_10_is_digit_0(multicv_root):
    labels = TORCHVISION_SETS["svhn"].load(multicv_root, True, 1, 28).labels
    assert sorted(set(labels.tolist())) == list(range(10))


def test_colour_to_gray_uses_luma_and_gray_to_colour_repeats():
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert to_shape(rgb.contiguous(), 1, 4).unique().tolist() == [round(0.299 * 255)]
    gray = torch.full((1, 1, 4, 4), 77, dtype=torch.uint8)
    assert torch.equal(to_shape(gray, 3, 4), torch.full((1, 3, 4, 4), 77, dtype=torch.uint8))


@pytest.mark.parametrize("name", sorted(FAKE_SIZES))
def test_missing_files_is_a_one_line_error(tmp_path, name):
    spec = TORCHVISION_SETS[name]
    with pytest.raises(UserError) as error:
        spec.load(tmp_path, True, 1, 28)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{spec.title}: files not found at {tmp_path / spec.folder};")
    assert "download=true" in message


def test_missing_held_out_set_names_it(tmp_path):
    with pytest.raises(UserError, match=r"^CIFAR-10: files not found"):
        build("multicv", "test", str(tmp_path))


def test_splits_hold_one_data_set_out(multicv_root):
    root = str(multicv_root)
    dists = {s: build("multicv", s, root, held_out="svhn") for s in ("train", "validation", "test")}
    assert [d.name for d in dists["train"].sets] == [
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "gtsrb",
    ]
    assert [d.name for d in dists["test"].sets] == ["svhn"]
    assert [d.name for d in dists["validation"].sets] == ["svhn"]
    for dist in dists.values():  # one architecture for every split
        assert dist.input_shape == (1, 28, 28) and dist.num_outputs == 100
    test_set, validation_set = dists["test"].sets[0], dists["validation"].sets[0]
    assert len(validation_set.train) + len(validation_set.test) == len(test_set.train)
    assert shared_images(validation_set.test.images, validation_set.train.images) == 0
    assert shared_images(validation_set.test.images, test_set.test.images) == 0
    small = build("multicv", "train", root, held_out="mnist", datasets=["mnist", "svhn", "cifar10"])
    assert small.num_outputs == 10 and [d.name for d in small.sets] == ["svhn", "cifar10"]


def test_meta_batches_cycle_through_the_training_sets(multicv_root):
    dist = build("multicv", "train", str(multicv_root))
    tasks = dist.sample(10, np.random.default_rng(0))
    counts = Counter(t.name.split("/")[-1] for t in tasks)
    assert counts == {name: 2 for name in ("mnist", "fashion_mnist", "svhn", "cifar100", "gtsrb")}
    task = tasks[0]
    assert task.x_train.dtype == torch.uint8 and task.x_test.dtype == torch.float32
    x, _ = task.batches(7)()
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32 and float(x.max()) <= 1


def test_held_out_images_come_from_the_test_split(multicv_root):
    dist = build("multicv", "test", str(multicv_root), test_examples=5)
    task = dist.sample(1, np.random.default_rng(0))[0]
    data = dist.sets[0]
    assert task.x_test.shape == (5, 1, 28, 28)
    as_uint8 = (task.x_test * 255).round().to(torch.uint8)
    assert shared_images(as_uint8, data.test.images) == 5


def test_bad_options_are_user_errors(multicv_root):
    root = str(multicv_root)
    with pytest.raises(UserError, match="unknown Multi-CV data set"):
        build("multicv", "train", root, datasets=["mnist", "imagenet"], held_out="mnist")
    with pytest.raises(UserError, match="held_out='svhn' is not one of"):
        build("multicv", "train", root, datasets=["mnist", "cifar10"], held_out="svhn")
    with pytest.raises(UserError, match="channels must be 1 or 3"):
        build("multicv", "test", root, channels=2)


def tiny_model(dist) -> torch.nn.Module:
    return models.build("conv4", dist.input_shape, dist.num_outputs, width=8)


def test_each_task_trains_a_fresh_masked_head(multicv_root):
    dist = build("multicv", "train", str(multicv_root), held_out="cifar10")
    model = tiny_model(dist)
    name, head = final_linear(model)
    assert name == "classifier"
    task = next(t for t in dist.sample(5, np.random.default_rng(0)) if t.classes == 10)
    with torch.no_grad():
        head.weight.fill_(7.0)
    task.inner_loop(model, InnerLoopConfig(steps=3, lr=0.1, batch_size=8))
    assert not (head.weight == 7.0).any(), "the head was re-drawn"
    assert torch.equal(head.weight[10:], torch.zeros_like(head.weight[10:]))
    assert torch.equal(head.bias[10:], torch.full((90,), UNUSED_LOGIT))
    logits = model.eval()(task.x_test)
    assert int(logits.argmax(1).max()) < 10, "masked outputs are never predicted"
    first, second = tiny_model(dist), tiny_model(dist)
    redraw_head(first, 10, seed=3)
    redraw_head(second, 10, seed=3)
    assert torch.equal(final_linear(first)[1].weight, final_linear(second)[1].weight)


def test_leap_learns_the_body_and_not_the_head(multicv_root):
    dist = build("multicv", "train", str(multicv_root))
    model = tiny_model(dist)
    names = dist.meta_parameters(model)
    assert "classifier.weight" not in names and "classifier.bias" not in names
    assert len(names) == len(list(model.parameters())) - 2
    leap = Leap(model, metric="energy", parameters=names)
    for task in dist.sample(2, np.random.default_rng(0)):
        leap.adapt(model, task, InnerLoopConfig(steps=3, lr=0.1, batch_size=8))
    metrics = leap.end_meta_batch()
    assert np.isfinite(metrics["meta/objective"])
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in leap.parameters())


# ---------------------------------------------------------------------------------------------
# Offline Multi-CV


@pytest.fixture(scope="module")
def offline_root(isolated_environment) -> str:
    return str(isolated_environment)


OFFLINE = dict(glyph_alphabets=2)


def test_offline_family_is_digits_faces_and_glyph_alphabets(offline_root):
    train = build("multicv_offline", "train", offline_root, **OFFLINE)
    test = build("multicv_offline", "test", offline_root, **OFFLINE)
    assert [s.name for s in train.sets] == ["faces", "glyphs0", "glyphs1"]
    assert [s.name for s in test.sets] == ["digits"]
    assert train.num_outputs == test.num_outputs == max(s.classes for s in train.sets)
    assert train.input_shape == test.input_shape == (1, 28, 28)
    faces, glyphs0 = train.sets[0], train.sets[1]
    digits = test.sets[0]
    assert (digits.classes, faces.classes) == (10, 2) and 20 <= glyphs0.classes <= 40
    assert (
        len(digits.train) + len(digits.test) == 1797 and len(faces.train) + len(faces.test) == 200
    )
    assert Counter(faces.test.labels.tolist()) == {0: 25, 1: 25}
    assert len(glyphs0.train) == 15 * glyphs0.classes and len(glyphs0.test) == 5 * glyphs0.classes
    for data in (*train.sets, digits):
        assert data.train.images.shape[1:] == (1, 28, 28)
        assert shared_images(data.test.images, data.train.images) <= 2  # digits repeat a few


def test_offline_tasks_train_and_score(offline_root):
    dist = build("multicv_offline", "train", offline_root, test_examples=50, **OFFLINE)
    model = tiny_model(dist)
    for task in dist.sample(3, np.random.default_rng(0)):
        result = task.inner_loop(model, InnerLoopConfig(steps=5, lr=0.1, batch_size=16))
        held = task.evaluate(model)
        assert result.losses.shape == (6,) and torch.isfinite(result.losses).all()
        assert 0 <= held["accuracy"] <= 1 and task.x_test.shape[0] == 50


def test_stratified_split_keeps_class_proportions():
    labels = torch.tensor([0] * 40 + [1] * 20)
    train, test = stratified_split(labels, 0.25, seed=0)
    assert Counter(labels[test].tolist()) == {0: 10, 1: 5}
    assert set(train.tolist()).isdisjoint(test.tolist()) and len(train) + len(test) == 60
    again, _ = stratified_split(labels, 0.25, seed=0)
    assert torch.equal(train, again)

"""N-way K-shot episodes through learn2learn: glyphs (offline), and MiniImageNet and CIFAR-FS
through learn2learn's own loaders on fake files in their on-disk formats."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from leap_convrnn.errors import UserError
from tasks import build
from tasks.episodes import EpisodeTasks, class_split
from tests.tasks.fake_data import shared_images, write_cifarfs, write_mini_imagenet

GLYPHS = dict(ways=5, shots=2, query_shots=3, alphabets=12, train_alphabets=6, test_alphabets=3)


@pytest.fixture(scope="module")
def glyph_episodes(isolated_environment):
    return build("glyphs_fewshot", "train", str(isolated_environment), **GLYPHS)


def test_episode_is_n_way_k_shot_with_disjoint_support_and_query(glyph_episodes):
    assert glyph_episodes.input_shape == (1, 28, 28) and glyph_episodes.num_outputs == 5
    for task in glyph_episodes.sample(3, np.random.default_rng(0)):
        assert task.x_train.shape == (10, 1, 28, 28) and task.x_test.shape == (15, 1, 28, 28)
        assert torch.equal(torch.bincount(task.y_train), torch.full((5,), 2))
        assert torch.equal(torch.bincount(task.y_test), torch.full((5,), 3))
        assert shared_images(task.x_test, task.x_train) == 0


def test_same_generator_state_gives_the_same_episodes_whatever_pythons_random(glyph_episodes):
    random.seed(1)
    a = glyph_episodes.sample(2, np.random.default_rng(7))
    random.seed(2)
    state = random.getstate()
    b = glyph_episodes.sample(2, np.random.default_rng(7))
    assert random.getstate() == state, "Python's global random is restored"
    for x, y in zip(a, b, strict=True):
        assert x.seed == y.seed and torch.equal(x.x_train, y.x_train)
        assert torch.equal(x.x_test, y.x_test) and torch.equal(x.y_test, y.y_test)
    c = glyph_episodes.sample(2, np.random.default_rng(8))
    assert not torch.equal(a[0].x_train, c[0].x_train)


def test_support_set_is_the_whole_batch_when_it_fits(glyph_episodes):
    task = glyph_episodes.sample(1, np.random.default_rng(0))[0]
    x, y = task.batches(20)()
    assert torch.equal(x, task.x_train) and torch.equal(y, task.y_train)
    x, _ = task.batches(4)()
    assert x.shape[0] == 4


def test_glyph_splits_use_disjoint_alphabets(isolated_environment):
    root = str(isolated_environment)
    train = build("glyphs_fewshot", "train", root, **GLYPHS).dataset.tensors[0]
    test = build("glyphs_fewshot", "test", root, **GLYPHS).dataset.tensors[0]
    assert shared_images(test, train) == 0


def test_class_rotation_turns_every_image_of_a_class_by_one_angle():
    # 12 classes of 4 identical images, each with one bright pixel in the top-left corner;
    # where that pixel lands tells the rotation.
    images = torch.zeros(48, 1, 5, 5)
    images[:, 0, 0, 0] = 1.0
    labels = [i // 4 for i in range(48)]
    dataset = TensorDataset(images, torch.tensor(labels))
    dist = EpisodeTasks(
        "marked",
        "train",
        dataset,
        labels,
        (1, 5, 5),
        ways=6,
        shots=2,
        query_shots=2,
        rotate_classes=True,
    )
    corners_per_episode = []
    for task in dist.sample(6, np.random.default_rng(0)):
        x = torch.cat([task.x_train, task.x_test])
        y = torch.cat([task.y_train, task.y_test])
        corners = [tuple(torch.nonzero(image[0]).flatten().tolist()) for image in x]
        by_class = {c: {corners[i] for i in range(len(y)) if y[i] == c} for c in range(6)}
        assert all(len(v) == 1 for v in by_class.values()), "one angle per class"
        corners_per_episode.append({next(iter(v)) for v in by_class.values()})
    assert any(len(c) > 1 for c in corners_per_episode), "classes of an episode differ"
    assert set().union(*corners_per_episode) == {(0, 0), (0, 4), (4, 0), (4, 4)}


def test_class_split_is_seeded_and_disjoint():
    split = class_split(20, train=12, validation=3, seed=0)
    assert [len(split[s]) for s in ("train", "validation", "test")] == [12, 3, 5]
    assert sorted(split["train"] + split["validation"] + split["test"]) == list(range(20))
    assert split == class_split(20, 12, 3, seed=0) != class_split(20, 12, 3, seed=1)
    with pytest.raises(UserError, match="does not fit 20 classes"):
        class_split(20, 18, 2, seed=0)


def test_too_few_classes_for_the_ways_is_a_user_error(isolated_environment):
    with pytest.raises(UserError, match="fewer than ways=500"):
        build("glyphs_fewshot", "test", str(isolated_environment), **{**GLYPHS, "ways": 500})


def test_mini_imagenet_through_learn2learn(tmp_path):
    write_mini_imagenet(tmp_path)
    pools = {}
    for split in ("train", "validation", "test"):
        dist = build("miniimagenet_fewshot", split, str(tmp_path), ways=3, shots=1, query_shots=2)
        assert dist.input_shape == (3, 84, 84) and dist.classes == 6
        task = dist.sample(1, np.random.default_rng(0))[0]
        assert task.x_train.shape == (3, 3, 84, 84) and task.x_test.shape == (6, 3, 84, 84)
        assert float(task.x_train.min()) >= 0 and float(task.x_train.max()) <= 1
        assert float(task.x_train.max()) > 0.9, "pixels scaled from 0..255 to [0, 1]"
        pools[split] = task.x_train
    assert shared_images(pools["test"], pools["train"]) == 0


def test_cifarfs_through_learn2learn(tmp_path):
    classes = write_cifarfs(tmp_path)
    for split, name in (("train", "train"), ("validation", "val"), ("test", "test")):
        dist = build("cifarfs_fewshot", split, str(tmp_path), ways=3, shots=2, query_shots=3)
        assert dist.input_shape == (3, 32, 32) and dist.classes == len(classes[name])
        task = dist.sample(1, np.random.default_rng(0))[0]
        assert task.x_train.shape == (6, 3, 32, 32) and task.x_test.shape == (9, 3, 32, 32)
        assert float(task.x_train.min()) >= 0 and float(task.x_train.max()) <= 1


@pytest.mark.parametrize(
    ("task", "title", "folder"),
    [
        ("miniimagenet_fewshot", "MiniImageNet", "mini-imagenet"),
        ("cifarfs_fewshot", "CIFAR-FS", "cifarfs"),
    ],
)
def test_missing_files_is_a_one_line_error(tmp_path, task, title, folder):
    with pytest.raises(UserError) as error:
        build(task, "train", str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{title}: files not found at ")
    assert str(tmp_path / folder) in message and "download=true" in message


def test_incomplete_cifarfs_leaves_nothing_half_processed(tmp_path):
    write_cifarfs(tmp_path)
    (tmp_path / "cifarfs/cifar100/splits/bertinetto/val.txt").unlink()
    with pytest.raises(UserError, match="CIFAR-FS"):
        build("cifarfs_fewshot", "train", str(tmp_path))
    assert not (tmp_path / "cifarfs" / "processed").exists()

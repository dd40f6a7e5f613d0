"""Omniglot through torchvision on fake files in Omniglot's own layout: loading, the Leap
split, tasks, augmentation, the cache and the missing-files error."""

from __future__ import annotations

import shutil
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from leap_convrnn.errors import UserError
from tasks import build
from tasks.base import InnerLoopConfig
from tasks.classification import RandomAffine
from tasks.omniglot import leap_split, load_alphabets
from tests.tasks.fake_data import (
    OMNIGLOT_DRAWERS,
    OMNIGLOT_LAYOUT,
    shared_images,
    write_omniglot,
)

# Fake alphabets: Alpha 6, Beta 5, Tiny 2 (background); Gamma 5, Delta 6 (evaluation).
SMALL = dict(
    ways=3, train_shots=3, test_shots=1, train_alphabets=2, test_alphabets=1, min_characters=5
)


@pytest.fixture(scope="module")
def omniglot_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("omniglot")
    with pytest.MonkeyPatch.context() as patch:
        write_omniglot(root, patch)
        yield root


def test_both_sets_load_through_torchvision_resized_and_inverted(omniglot_root):
    alphabets = load_alphabets(omniglot_root)
    expected = [
        f"{folder}/{name}" for folder, names in OMNIGLOT_LAYOUT.items() for name in sorted(names)
    ]
    assert alphabets.names == expected
    for name, images in zip(alphabets.names, alphabets.images, strict=True):
        folder, alphabet = name.split("/")
        assert images.shape == (OMNIGLOT_LAYOUT[folder][alphabet], OMNIGLOT_DRAWERS, 28, 28)
        assert images.dtype == torch.uint8
    first = alphabets.images[0][0, 0]  # Alpha, character01, first drawing
    png = omniglot_root / "omniglot-py/images_background/Alpha/character01/0001_01.png"
    resized = Image.open(png).convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    assert torch.equal(first, torch.from_numpy(255 - np.asarray(resized)))
    ink = alphabets.alphabet(0)
    assert ink[..., 0, 0].max() == 0, "background (white paper) becomes 0"
    assert ink.max() > 0.9 and ink.mean() < 0.4, "strokes become 1"


def test_leap_split_drops_small_alphabets_and_is_seeded(omniglot_root):
    alphabets = load_alphabets(omniglot_root)
    split = leap_split(alphabets, train_alphabets=2, test_alphabets=1, min_characters=5, seed=0)
    tiny = alphabets.names.index("images_background/Tiny")
    assert [len(split[s]) for s in ("train", "test", "validation")] == [2, 1, 1]
    chosen = split["train"] + split["test"] + split["validation"]
    assert sorted(chosen) == sorted(set(range(5)) - {tiny})
    assert split == leap_split(alphabets, 2, 1, 5, seed=0)
    others = [leap_split(alphabets, 2, 1, 5, seed=s) for s in range(1, 6)]
    assert any(o != split for o in others), "the seed changes the alphabet order"


def test_tasks_have_the_protocol_shapes_and_keep_held_out_images_apart(omniglot_root):
    dist = build("omniglot", "train", str(omniglot_root), **SMALL)
    assert dist.input_shape == (1, 28, 28) and dist.num_outputs == 3
    for task in dist.sample(4, np.random.default_rng(0)):
        assert task.x_train.shape == (9, 1, 28, 28) and task.x_test.shape == (3, 1, 28, 28)
        assert torch.equal(torch.bincount(task.y_train), torch.full((3,), 3))
        assert torch.equal(torch.bincount(task.y_test), torch.full((3,), 1))
        assert shared_images(task.x_test, task.x_train) == 0
        # every image is a drawing of the train split's alphabets
        pool = torch.cat([a.flatten(0, 1) for a in dist.alphabets])
        images = torch.cat([task.x_train, task.x_test])
        assert shared_images(images, pool) == len(images)


def test_splits_share_no_image(omniglot_root):
    root = str(omniglot_root)
    pools = {
        s: torch.cat([a.flatten(0, 1) for a in build("omniglot", s, root, **SMALL).alphabets])
        for s in ("train", "validation", "test")
    }
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
        assert shared_images(pools[a], pools[b]) == 0


def test_augment_option_transforms_training_batches_only(omniglot_root):
    dist = build("omniglot", "train", str(omniglot_root), augment=True, **SMALL)
    task = dist.sample(1, np.random.default_rng(0))[0]
    assert isinstance(task.augment, RandomAffine)
    x, _ = task.batches(6)()
    x_again, _ = task.batches(6)()
    assert torch.equal(x, x_again), "augmentation is drawn from the task's seed"
    raw = task.x_train[
        torch.randint(0, 9, (6,), generator=torch.Generator().manual_seed(task.seed))
    ]
    assert not torch.allclose(x, raw)
    assert x.shape == raw.shape and float(x.min()) >= 0 and float(x.max()) <= 1 + 1e-6
    plain = build("omniglot", "train", str(omniglot_root), **SMALL)
    same = plain.sample(1, np.random.default_rng(0))[0]
    assert torch.equal(same.x_test, task.x_test), "held-out images are never augmented"


def test_resized_set_is_cached_after_the_first_load(tmp_path, monkeypatch):
    write_omniglot(tmp_path, monkeypatch, seed=1)
    first = load_alphabets(tmp_path)
    for folder in OMNIGLOT_LAYOUT:
        shutil.rmtree(tmp_path / "omniglot-py" / folder)
        (tmp_path / "omniglot-py" / f"{folder}.zip").unlink()
    again = load_alphabets(tmp_path)
    assert again.names == first.names
    assert all(torch.equal(a, b) for a, b in zip(again.images, first.images, strict=True))


def test_missing_files_is_a_one_line_error_naming_set_path_and_remedy(tmp_path):
    with pytest.raises(UserError) as error:
        build("omniglot", "train", str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("Omniglot: files not found at ")
    assert str(tmp_path / "omniglot-py") in message
    assert "download=true" in message and "images_background.zip" in message


def test_incomplete_files_are_reported_as_such(tmp_path):
    (tmp_path / "omniglot-py" / "images_background").mkdir(parents=True)
    with pytest.raises(UserError, match=r"^Omniglot: incomplete or corrupt files at "):
        build("omniglot", "train", str(tmp_path))


def test_failed_download_is_a_one_line_error(tmp_path, monkeypatch):
    import torchvision.datasets.omniglot

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.omniglot, "download_and_extract_archive", offline)
    with pytest.raises(UserError) as error:
        build("omniglot", "train", str(tmp_path), download=True)
    message = str(error.value)
    assert "\n" not in message and "Omniglot: download to" in message
    assert "URLError" in message and "by hand" in message


def test_split_that_does_not_fit_the_kept_alphabets_is_a_user_error(omniglot_root):
    with pytest.raises(UserError, match="does not fit 4 alphabets"):
        build("omniglot", "train", str(omniglot_root), **{**SMALL, "train_alphabets": 4})


def test_omniglot_episodes_split_classes_and_sample_n_way_k_shot(omniglot_root):
    root = str(omniglot_root)
    options = dict(ways=3, shots=1, query_shots=3, train_classes=14, validation_classes=4)
    dists = {
        s: build("omniglot_fewshot", s, root, **options) for s in ("train", "validation", "test")
    }
    assert [dists[s].classes for s in ("train", "validation", "test")] == [14, 4, 6]
    task = dists["train"].sample(1, np.random.default_rng(3))[0]
    assert task.x_train.shape == (3, 1, 28, 28) and task.x_test.shape == (9, 1, 28, 28)
    assert torch.equal(task.y_train, torch.arange(3))
    assert torch.equal(torch.bincount(task.y_test), torch.full((3,), 3))
    # classes of different splits share no drawing (rotations off, to compare pixels)
    plain = {
        s: build("omniglot_fewshot", s, root, rotate_classes=False, **options)
        for s in ("train", "test")
    }
    train_pool = plain["train"].dataset.tensors[0]
    assert shared_images(plain["test"].dataset.tensors[0], train_pool) == 0


@pytest.mark.slow
def test_paper_protocol_on_an_omniglot_sized_fake(tmp_path, monkeypatch):
    """The default options (20-way, 15 + 5 drawings, 25 / 10 / rest alphabets, alphabets with
    fewer than 20 characters dropped) on 105 x 105 drawings in Omniglot's layout."""
    layout = {
        "images_background": {f"Back{i:02d}": 20 + i % 3 for i in range(20)} | {"Short": 19},
        "images_evaluation": {f"Eval{i:02d}": 20 + i % 4 for i in range(16)} | {"Shorter": 14},
    }
    write_omniglot(tmp_path, monkeypatch, seed=3, layout=layout, drawers=20)
    dists = {s: build("omniglot", s, str(tmp_path)) for s in ("train", "validation", "test")}
    assert [len(dists[s].alphabets) for s in ("train", "test", "validation")] == [25, 10, 1]
    task = dists["train"].sample(1, np.random.default_rng(0))[0]
    assert task.x_train.shape == (300, 1, 28, 28) and task.x_test.shape == (100, 1, 28, 28)
    assert shared_images(task.x_test, task.x_train) == 0
    model = models.build("conv4", (1, 28, 28), 20, width=16)
    result = task.inner_loop(model, InnerLoopConfig(steps=30, lr=0.1, batch_size=20))
    assert float(result.losses[-1]) < float(result.losses[0])


def test_per_alphabet_test_first_is_the_reference_task_definition(omniglot_root):
    """One fixed task per kept alphabet; the first drawing (in file order) of each of its
    characters held out, the next three for training."""
    options = dict(SMALL, task_definition="per_alphabet", split_order="test_first")
    dist = build("omniglot", "train", str(omniglot_root), **options)
    assert len(dist.fixed) == len(dist.alphabets) == 2
    tasks = dist.sample(4, np.random.default_rng(0))
    assert sorted(t.name for t in tasks) == sorted([t.name for t in dist.fixed] * 2)
    for task in tasks:
        alphabet = dist.alphabets[int(task.name.rsplit("alphabet", 1)[1])]
        fixed = next(t for t in dist.fixed if t.name == task.name)
        assert torch.equal(task.x_train, fixed.x_train) and torch.equal(task.x_test, fixed.x_test)
        for x, y in zip(task.x_test, task.y_test, strict=True):
            matches = (alphabet == x[0]).flatten(2).all(-1).nonzero().tolist()
            assert len(matches) == 1 and matches[0][1] == 0, "held out: the first drawing"
            character = matches[0][0]
            train = task.x_train[task.y_train == y][:, 0]
            assert torch.equal(train, alphabet[character, 1:4])


def test_bad_task_definition_is_rejected_before_any_file_is_read(tmp_path):
    with pytest.raises(UserError, match="accepted: random, per_alphabet"):
        build("omniglot", "train", str(tmp_path), task_definition="alphabet")

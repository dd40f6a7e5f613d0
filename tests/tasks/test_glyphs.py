"""The synthetic glyph alphabets and the Omniglot-protocol tasks built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leap_convrnn.errors import UserError
from tasks import build
from tasks.glyph_tasks import AlphabetSplit
from tasks.glyphs import GlyphSpec, generate, load
from tests.tasks.fake_data import shared_images

SPEC = GlyphSpec(alphabets=6, min_characters=20, max_characters=24, drawers=20, seed=3)


def test_generation_is_deterministic_in_the_seed():
    a, b = generate(SPEC), generate(SPEC)
    assert torch.equal(a.images, b.images)
    c = generate(GlyphSpec(**{**SPEC.__dict__, "seed": 4}))
    assert not torch.equal(a.images, c.images)


def test_set_has_the_promised_shape_and_content():
    glyphs = generate(SPEC)
    assert glyphs.images.shape == (6, 24, 20, 28, 28)
    assert ((glyphs.characters >= 20) & (glyphs.characters <= 24)).all()
    alphabet = glyphs.alphabet(0)
    assert alphabet.shape == (int(glyphs.characters[0]), 20, 28, 28)
    assert float(alphabet.min()) >= 0.0 and float(alphabet.max()) <= 1.0
    ink = alphabet.flatten(2).sum(-1)
    assert (ink > 5).all(), "every drawing has strokes"
    # Drawings of one character differ, yet (coarsely) resemble each other more than they
    # resemble other characters: mean distances between 7x7 average-pooled drawings.
    coarse = torch.nn.functional.avg_pool2d(alphabet, 4).flatten(2)  # (chars, drawers, 49)
    within = torch.stack([torch.cdist(c, c).sum() / (20 * 19) for c in coarse]).mean()
    between = torch.cdist(coarse[:, 0], coarse[:, 1]).fill_diagonal_(float("nan")).nanmean()
    assert 0 < within < 0.8 * between


def test_default_set_is_omniglot_sized():
    spec = GlyphSpec()
    assert spec.alphabets >= 50 and (spec.min_characters, spec.max_characters) == (20, 40)
    assert spec.drawers == 20 and spec.image_size == 28


def test_cache_round_trip_and_corrupt_cache_is_regenerated(tmp_path):
    first = load(SPEC, tmp_path)
    path = next((tmp_path / "glyphs").glob("*.pt"))
    assert torch.equal(load(SPEC, tmp_path).images, first.images)
    path.write_bytes(b"truncated")
    assert torch.equal(load(SPEC, tmp_path).images, first.images)


def test_bad_spec_is_a_user_error():
    with pytest.raises(UserError, match="alphabets must be >= 1, got 0"):
        generate(GlyphSpec(alphabets=0))


OPTIONS = dict(alphabets=12, train_alphabets=6, test_alphabets=3)


def test_tasks_have_the_leap_omniglot_shapes(isolated_environment):
    dist = build("glyphs", "train", str(isolated_environment), **OPTIONS)
    task = dist.sample(1, np.random.default_rng(0))[0]
    assert dist.input_shape == (1, 28, 28) and dist.num_outputs == 20
    assert task.x_train.shape == (300, 1, 28, 28) and task.x_test.shape == (100, 1, 28, 28)
    assert torch.equal(torch.bincount(task.y_train), torch.full((20,), 15))
    assert torch.equal(torch.bincount(task.y_test), torch.full((20,), 5))


def test_no_image_is_both_training_and_held_out(isolated_environment):
    dist = build("glyphs", "train", str(isolated_environment), **OPTIONS)
    for task in dist.sample(3, np.random.default_rng(1)):
        assert shared_images(task.x_test, task.x_train) == 0


def test_splits_use_disjoint_alphabets(isolated_environment):
    split = AlphabetSplit(train=6, test=3).indices(12)
    assert set(split["train"]).isdisjoint(split["test"])
    assert set(split["train"]).isdisjoint(split["validation"])
    assert sorted(split["train"] + split["test"] + split["validation"]) == list(range(12))
    root = str(isolated_environment)
    train = build("glyphs", "train", root, **OPTIONS).alphabets
    test = build("glyphs", "test", root, **OPTIONS).alphabets
    train_images = torch.cat([a.flatten(0, 1) for a in train])
    test_images = torch.cat([a.flatten(0, 1) for a in test])
    assert shared_images(test_images, train_images) == 0


def test_same_rng_gives_the_same_tasks(isolated_environment):
    dist = build("glyphs", "test", str(isolated_environment), **OPTIONS)
    a = dist.sample(2, np.random.default_rng(5))
    b = dist.sample(2, np.random.default_rng(5))
    for x, y in zip(a, b, strict=True):
        assert x.name == y.name and x.seed == y.seed
        assert torch.equal(x.x_train, y.x_train) and torch.equal(x.y_test, y.y_test)


def test_split_that_does_not_fit_is_a_user_error(isolated_environment):
    with pytest.raises(UserError, match="does not fit 12 alphabets"):
        build(
            "glyphs",
            "train",
            str(isolated_environment),
            alphabets=12,
            train_alphabets=11,
            test_alphabets=3,
        )

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


def drawing_index(images: torch.Tensor, alphabet: torch.Tensor) -> list[tuple[int, int]]:
    """(character, drawing) of `alphabet` (C, D, H, W) each of `images` (N, 1, H, W) is."""
    index: dict[bytes, tuple[int, int]] = {}
    for i, image in enumerate(alphabet.flatten(0, 1).numpy()):
        assert index.setdefault(image.tobytes(), divmod(i, alphabet.shape[1])) is not None
    assert len(index) == alphabet.shape[0] * alphabet.shape[1], "drawings are distinct"
    return [index[image.tobytes()] for image in images[:, 0].numpy()]


PAPER = dict(OPTIONS, task_definition="per_alphabet", split_order="test_first")


def test_per_alphabet_is_one_fixed_task_per_alphabet(isolated_environment):
    root = str(isolated_environment)
    dist = build("glyphs", "train", root, **PAPER)
    assert len(dist.fixed) == len(dist.alphabets) == 6
    tasks = dist.sample(12, np.random.default_rng(0))
    names = [t.name for t in tasks]
    assert sorted(names) == sorted([t.name for t in dist.fixed] * 2), "every alphabet twice"
    assert len(set(names[:6])) == 6, "each round visits every alphabet once"
    again = build("glyphs", "train", root, **PAPER).sample(12, np.random.default_rng(7))
    by_name = {t.name: t for t in again}
    for task in tasks:  # the same task for an alphabet every sample, whatever the rng
        same = by_name[task.name]
        for field in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(task, field), getattr(same, field))
    assert len({t.seed for t in tasks}) > 1, "minibatch seeds differ between samples"
    other = build("glyphs", "train", root, **{**PAPER, "split_seed": 1})
    assert not all(
        torch.equal(a.x_train, b.x_train)
        for a, b in zip(dist.fixed, other.fixed, strict=False)
        if a.x_train.shape == b.x_train.shape
    )


def test_test_first_holds_out_the_first_drawings_of_each_character(isolated_environment):
    root = str(isolated_environment)
    for definition in ("per_alphabet", "random"):
        options = dict(OPTIONS, task_definition=definition, split_order="test_first")
        dist = build("glyphs", "train", root, **options)
        for task in dist.sample(3, np.random.default_rng(3)):
            alphabet = dist.alphabets[int(task.name.rsplit("alphabet", 1)[1])]
            test = drawing_index(task.x_test, alphabet)
            train = drawing_index(task.x_train, alphabet)
            characters = {c for c, _ in test}
            assert len(characters) == 20 and {c for c, _ in train} == characters
            for c in characters:
                assert sorted(d for cc, d in test if cc == c) == list(range(5))
                assert sorted(d for cc, d in train if cc == c) == list(range(5, 20))
            labels = {c: int(y) for (c, _), y in zip(test, task.y_test, strict=True)}
            for (c, _), y in zip(train, task.y_train, strict=True):
                assert labels[c] == int(y), "a character keeps its label across the split"


def test_random_split_order_still_varies_the_held_out_drawings(isolated_environment):
    dist = build("glyphs", "train", str(isolated_environment), **OPTIONS)
    task = dist.sample(1, np.random.default_rng(4))[0]
    alphabet = dist.alphabets[int(task.name.rsplit("alphabet", 1)[1])]
    assert {d for _, d in drawing_index(task.x_test, alphabet)} != set(range(5))


@pytest.mark.parametrize(
    ("option", "accepted"),
    [("task_definition", "random, per_alphabet"), ("split_order", "random, test_first")],
)
def test_bad_task_definition_values_are_one_line_user_errors(
    isolated_environment, option, accepted
):
    with pytest.raises(UserError, match=f"task.options.{option} 'paper'; accepted: {accepted}"):
        build("glyphs", "train", str(isolated_environment), **{**OPTIONS, option: "paper"})

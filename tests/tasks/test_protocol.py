"""The evaluation protocol every task family shares: held-out scoring in eval mode,
per-task results reproducible from the seed, and the training-batch augmentation."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from tasks import build
from tasks.base import InnerLoopConfig
from tasks.classification import ClassificationTask, RandomAffine
from tests.tasks.fake_data import write_omniglot

INNER = InnerLoopConfig(steps=4, lr=0.1, batch_size=10)


@pytest.fixture(scope="module")
def omniglot_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("omniglot-protocol")
    with pytest.MonkeyPatch.context() as patch:
        write_omniglot(root, patch, seed=2)
        yield root


def families(data_root: str, omniglot_root: Path) -> dict[str, tuple[str, str, dict]]:
    """(task name, root, options) of every family that runs here, kept small."""
    return {
        "glyphs": ("glyphs", data_root, dict(alphabets=12, train_alphabets=6, test_alphabets=3)),
        "glyphs_fewshot": (
            "glyphs_fewshot",
            data_root,
            dict(ways=5, shots=2, query_shots=3, alphabets=12, train_alphabets=6, test_alphabets=3),
        ),
        "multicv_offline": (
            "multicv_offline",
            data_root,
            dict(glyph_alphabets=2, test_examples=40),
        ),
        "omniglot": (
            "omniglot",
            str(omniglot_root),
            dict(
                ways=3,
                train_shots=3,
                test_shots=1,
                train_alphabets=2,
                test_alphabets=1,
                min_characters=5,
                augment=True,
            ),
        ),
    }


@pytest.mark.parametrize("family", ["glyphs", "glyphs_fewshot", "multicv_offline", "omniglot"])
def test_same_seed_gives_the_same_tasks_and_the_same_inner_loops(
    family, isolated_environment, omniglot_root
):
    name, root, options = families(str(isolated_environment), omniglot_root)[family]
    dist = build(name, "test", root, **options)
    model = models.build("conv4", dist.input_shape, dist.num_outputs, width=8)
    start = copy.deepcopy(model.state_dict())
    runs = []
    for _ in range(2):
        tasks = dist.sample(2, np.random.default_rng(11))
        results = []
        for task in tasks:
            model.load_state_dict(start)
            curve = task.inner_loop(model, INNER).losses
            results.append((task, curve, task.evaluate(model)))
        runs.append(results)
    for (a, curve_a, held_a), (b, curve_b, held_b) in zip(*runs, strict=True):
        assert a.name == b.name and a.seed == b.seed
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
        assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
        assert torch.equal(curve_a, curve_b), "identical inner-loop losses"
        assert held_a == held_b
    other = dist.sample(2, np.random.default_rng(12))
    assert any(o.seed != r[0].seed for o, r in zip(other, runs[0], strict=True))


def trained_bn_model() -> tuple[torch.nn.Module, ClassificationTask]:
    """A BatchNorm network after a few training steps, and a task to score it on."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 28, 28, generator=generator)
    y = torch.arange(40) % 4
    task = ClassificationTask("bn", x[:30], y[:30], x[30:], y[30:], num_outputs=4, seed=0)
    model = models.build("conv4", (1, 28, 28), 4, width=8)
    task.inner_loop(model, InnerLoopConfig(steps=5, lr=0.1, batch_size=10))
    return model, task


def test_held_out_scores_use_running_statistics():
    """One example's held-out prediction does not depend on the others in its batch:
    the batch mean equals the mean of the examples scored one at a time."""
    model, task = trained_bn_model()
    assert model.training
    whole = task.evaluate(model)
    assert model.training, "evaluate restores training mode"
    single = []
    for i in range(task.x_test.shape[0]):
        one = ClassificationTask(
            "one",
            task.x_train,
            task.y_train,
            task.x_test[i : i + 1],
            task.y_test[i : i + 1],
            num_outputs=4,
            seed=0,
        )
        single.append(one.evaluate(model))
    assert whole["loss"] == pytest.approx(np.mean([s["loss"] for s in single]), rel=1e-5)
    assert whole["accuracy"] == pytest.approx(np.mean([s["accuracy"] for s in single]))
    # The check has teeth: in training mode an example's logits depend on its batch.
    leaky = copy.deepcopy(model).train()
    others = torch.rand(9, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        first = leaky(task.x_test)[0]
        second = leaky(torch.cat([task.x_test[:1], others]))[0]
    assert not torch.allclose(first, second, atol=1e-4)


def test_evaluation_leaves_running_statistics_untouched():
    model, task = trained_bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task.evaluate(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_held_out_statistics_are_re_estimated_at_the_final_weights():
    """Stale running statistics (here: garbage) do not reach the held-out figures: they
    are re-estimated on the training images, then restored."""
    model, task = trained_bn_model()
    clean = task.evaluate(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.running_mean.fill_(3.0)
        m.running_var.fill_(0.01)
    assert task.evaluate(model) == clean
    assert all(bool((m.running_mean == 3.0).all()) for m in norms), "statistics restored"


def test_precise_batchnorm_sets_each_layers_statistics_of_the_calibration_set():
    """Reference by hand: record each BatchNorm's input in one training-mode pass over the
    calibration images, store its per-channel mean and unbiased variance as the running
    statistics; eval mode must then give the same outputs."""
    from tasks.inner_loop import precise_batchnorm

    model, task = trained_bn_model()
    reference = copy.deepcopy(model)
    norms = [m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    inputs: dict[torch.nn.Module, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0])) for m in norms]
    with torch.no_grad():
        reference.train()(task.x_train)
    for handle in handles:
        handle.remove()
    for m in norms:
        m.running_mean.copy_(inputs[m].mean((0, 2, 3)))
        m.running_var.copy_(inputs[m].var((0, 2, 3), unbiased=True))
    with torch.no_grad():
        expected = reference.eval()(task.x_test)
        stale = model.eval()(task.x_test)
        with precise_batchnorm(model, task.x_train):
            calibrated = model.eval()(task.x_test)
    torch.testing.assert_close(calibrated, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(stale, expected, atol=1e-2), "the running statistics were stale"


def test_random_affine_is_identity_at_zero_and_reproducible():
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    identity = RandomAffine(degrees=0, translate=0, scale_min=1, scale_max=1)
    assert torch.allclose(identity(images, torch.Generator().manual_seed(1)), images, atol=1e-5)
    augment = RandomAffine()
    a = augment(images, torch.Generator().manual_seed(1))
    b = augment(images, torch.Generator().manual_seed(1))
    c = augment(images, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == images.shape


def test_random_affine_draws_the_reference_distribution():
    """Rotation uniform over the whole circle (torchvision's (0, 360) modulo 360), shift
    uniform in +-0.2 image sizes per axis, scale uniform in [0.8, 1.2], all independent:
    Kolmogorov-Smirnov tests against those laws and a correlation check, on 20000 draws."""
    from scipy import stats

    degrees, scale, shift = RandomAffine().draw(20000, torch.Generator().manual_seed(0))
    turn = (degrees.double() % 360).numpy()
    assert stats.kstest(turn, stats.uniform(0, 360).cdf).pvalue > 1e-3
    assert stats.kstest(scale.double().numpy(), stats.uniform(0.8, 0.4).cdf).pvalue > 1e-3
    for axis in range(2):
        values = shift[:, axis].double().numpy()
        assert stats.kstest(values, stats.uniform(-0.2, 0.4).cdf).pvalue > 1e-3
    assert float(scale.min()) >= 0.8 and float(scale.max()) <= 1.2
    assert float(shift.abs().max()) <= 0.2
    draws = torch.stack([degrees, scale, shift[:, 0], shift[:, 1]]).double()
    off_diagonal = torch.corrcoef(draws) - torch.eye(4, dtype=torch.float64)
    assert float(off_diagonal.abs().max()) < 0.05, "the four draws are independent"
    # The test has power: a half-circle of rotations is rejected.
    half, _, _ = RandomAffine(degrees=90).draw(20000, torch.Generator().manual_seed(0))
    assert stats.kstest((half.double() % 360).numpy(), stats.uniform(0, 360).cdf).pvalue < 1e-6


def test_random_affine_applies_the_drawn_rotation_and_scale():
    """The image moves as the draw says: a dot at offset (r, 0) from the centre lands at
    scale * R(angle) (r, 0) (plus the drawn shift)."""
    size = 41
    image = torch.zeros(1, 1, size, size)
    image[0, 0, 20, 30] = 1.0  # 10 pixels right of the centre (20, 20)
    augment = RandomAffine()
    coords = torch.arange(size, dtype=torch.float64)
    for seed in range(5):
        degrees, scale, shift = augment.draw(1, torch.Generator().manual_seed(seed))
        out = augment(image, torch.Generator().manual_seed(seed))[0, 0].double()
        y = float((out.sum(1) * coords).sum() / out.sum()) - 20
        x = float((out.sum(0) * coords).sum() / out.sum()) - 20
        angle = math.radians(float(degrees[0]))
        radius = float(scale[0]) * 10
        # grid_sample's y axis points down: a positive angle turns x towards +y.
        expected_x = radius * math.cos(angle) + float(shift[0, 0]) * size
        expected_y = radius * math.sin(angle) + float(shift[0, 1]) * size
        assert abs(x - expected_x) < 0.6 and abs(y - expected_y) < 0.6, (seed, x, y)


def test_random_affine_translation_stays_within_bounds():
    image = torch.zeros(1, 1, 40, 40)
    image[0, 0, 18:22, 18:22] = 1.0  # a dot in the middle
    shift_only = RandomAffine(degrees=0, translate=0.2, scale_min=1, scale_max=1)
    rows = torch.arange(40.0)
    moved = []
    for seed in range(20):
        out = shift_only(image, torch.Generator().manual_seed(seed))[0, 0]
        centre = (out.sum(1) * rows).sum() / out.sum(), (out.sum(0) * rows).sum() / out.sum()
        moved.append(max(abs(float(centre[0]) - 19.5), abs(float(centre[1]) - 19.5)))
    assert max(moved) <= 0.2 * 40 + 0.5 and max(moved) > 2


def test_bad_augmentation_values_are_user_errors():
    from leap_convrnn.errors import UserError

    with pytest.raises(UserError, match="scale_min <= scale_max"):
        RandomAffine(scale_min=1.2, scale_max=0.8)
    with pytest.raises(UserError, match="translate must be in"):
        RandomAffine(translate=1.5)

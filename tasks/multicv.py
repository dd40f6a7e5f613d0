"""Multi-CV (Leap paper, Flennerhag et al. 2019, Sec. 4.2 and Appendix E): one task per data set.

Every data set of the family is a classification problem of its own; meta-train
on all but one and evaluate transfer to the held-out one. Each task trains a
fresh linear head: the task re-draws the model's final `nn.Linear` at the start
of its inner loop, and the family's `meta_parameters` leaves that layer out, so
the meta-learner only learns the initialization of the shared body.

Choices made here (documented because the paper leaves them to the code):

- A common input shape, by default 1 x 28 x 28 grayscale (`channels=3` keeps
  colour; grayscale sets are then repeated over three channels). Colour images
  become gray with the ITU-R 601-2 luma weights; resizing is bilinear with
  antialiasing.
- One head size for the family: the largest class count among its data sets
  (100 with CIFAR-100), so every task and split shares one architecture. A
  task with fewer classes masks the extra outputs when it re-draws the head
  (weights 0, bias -1e4: their softmax probability and gradients are exactly
  0), which makes the head equivalent to one with exactly its own classes.
- Held-out accuracy is measured on `test_examples` images drawn per task from
  the data set's test split. The `test` split of the family is the held-out
  data set trained on its training images; the `validation` split is the same
  data set with a seeded `validation_fraction` of its training images held out
  in place of its test images, so model selection never touches test images.
- Meta-batches cycle through the training data sets in a fresh random order,
  so a meta-batch covers every data set as evenly as its size allows.

Families: `multicv` (MNIST, FashionMNIST, SVHN, CIFAR-10, CIFAR-100 and GTSRB
through torchvision) and `multicv_offline`, made of the small real image sets
that ship inside installed packages (scikit-learn's 8 x 8 digits, scikit-image's
LFW faces-versus-background subset) and glyph alphabets, each alphabet a data
set whose classes are its characters, so the protocol runs with nothing
downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from leap_convrnn.optional import require
from tasks.base import InnerLoopConfig, InnerLoopResult, Task, TaskDistribution, TrajectoryHook
from tasks.classification import ClassificationTask
from tasks.datasets import TORCHVISION_SETS, LabelledImages, to_shape
from tasks.glyph_tasks import SPLITS
from tasks.glyphs import GlyphSpec
from tasks.glyphs import load as load_glyphs
from tasks.inner_loop import Batch
from tasks.registry import register

UNUSED_LOGIT = -1e4  # bias of a masked output: exp(-1e4) is exactly 0 in float32


def final_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's output layer: its last registered `nn.Linear`, with its name."""
    found: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise UserError(
            f"model {type(model).__name__} has no nn.Linear output layer; Multi-CV re-draws "
            "one per task"
        )
    return found


def redraw_head(model: nn.Module, classes: int, seed: int) -> None:
    """Re-draw the output layer from `seed` (nn.Linear's own uniform law) and mask the
    outputs beyond `classes`."""
    _, head = final_linear(model)
    if classes > head.out_features:
        raise UserError(
            f"a task with {classes} classes needs an output layer of >= {classes} units; "
            f"the model has {head.out_features}"
        )
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(head.in_features)
    with torch.no_grad():
        weight = (torch.rand(head.weight.shape, generator=generator) * 2 - 1) * bound
        weight[classes:] = 0
        head.weight.copy_(weight)
        if head.bias is not None:
            bias = (torch.rand(head.bias.shape, generator=generator) * 2 - 1) * bound
            bias[classes:] = UNUSED_LOGIT
            head.bias.copy_(bias)


@dataclass
class ImageSet:
    """One data set of a family at the family's shape: uint8 train and test images."""

    name: str
    classes: int
    train: LabelledImages
    test: LabelledImages


@dataclass
class DatasetTask(ClassificationTask):
    """A whole data set as a task: uint8 training images, a fresh head per inner loop.

    `x_train` is uint8 (converted to [0, 1] per minibatch, so big sets stay small in
    memory); `x_test` is float. `classes` is the data set's own class count.
    """

    classes: int = 0

    def batches(self, batch_size: int) -> Callable[[], Batch]:
        generator = torch.Generator().manual_seed(self.seed)
        n = self.x_train.shape[0]

        def next_batch() -> Batch:
            index = torch.randint(0, n, (min(batch_size, n),), generator=generator)
            return self.x_train[index].float().div_(255.0), self.y_train[index]

        return next_batch

    def calibration_images(self) -> Tensor:
        return super().calibration_images().float().div_(255.0)

    def inner_loop(
        self,
        model: nn.Module,
        config: InnerLoopConfig,
        hook: TrajectoryHook | None = None,
    ) -> InnerLoopResult:
        redraw_head(model, self.classes, self.seed)
        return super().inner_loop(model, config, hook)


class DatasetTasks(TaskDistribution):
    """Tasks that are whole data sets (see the module docstring)."""

    def __init__(
        self,
        name: str,
        split: str,
        sets: Sequence[ImageSet],
        input_shape: tuple[int, int, int],
        num_outputs: int,
        test_examples: int = 1000,
    ) -> None:
        if not sets:
            raise UserError(f"{name}: the {split} split has no data set")
        if test_examples < 1:
            raise UserError(f"task.options.test_examples must be >= 1, got {test_examples}")
        self.name = name
        self.split = split
        self.sets = list(sets)
        self.input_shape = input_shape
        self.num_outputs = num_outputs
        self.test_examples = test_examples

    def meta_parameters(self, model: nn.Module) -> list[str]:
        """Every trainable parameter but the output layer's, which each task re-draws."""
        head, layer = final_linear(model)
        if layer.out_features != self.num_outputs:
            raise UserError(
                f"the output layer {head!r} of {type(model).__name__} has {layer.out_features} "
                f"units; {self.name} needs {self.num_outputs}, one per class of its largest set"
            )
        prefix = f"{head}." if head else ""
        return [
            n for n, p in model.named_parameters() if p.requires_grad and not n.startswith(prefix)
        ]

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        order: list[int] = []
        while len(order) < n:
            order.extend(rng.permutation(len(self.sets)).tolist())
        return [self._task(self.sets[i], rng) for i in order[:n]]

    def _task(self, data: ImageSet, rng: np.random.Generator) -> DatasetTask:
        count = min(self.test_examples, len(data.test))
        held_out = torch.from_numpy(np.sort(rng.choice(len(data.test), count, replace=False)))
        return DatasetTask(
            name=f"{self.name}/{self.split}/{data.name}",
            x_train=data.train.images,
            y_train=data.train.labels,
            x_test=data.test.images[held_out].float().div_(255.0),
            y_test=data.test.labels[held_out],
            num_outputs=self.num_outputs,
            seed=int(rng.integers(2**31)),
            classes=data.classes,
        )


def validation_view(data: ImageSet, fraction: float, seed: int) -> ImageSet:
    """The data set with a seeded `fraction` of its training images held out as its test set."""
    if not 0 < fraction < 1:
        raise UserError(f"task.options.validation_fraction must be in (0, 1), got {fraction}")
    n = len(data.train)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    cut = max(1, min(n - 1, round(n * fraction)))
    held, kept = order[:cut], order[cut:]
    return ImageSet(
        data.name,
        data.classes,
        LabelledImages(data.train.images[kept], data.train.labels[kept]),
        LabelledImages(data.train.images[held], data.train.labels[held]),
    )


def _choose(
    family: str, available: Sequence[str], datasets: Sequence[str] | None, held_out: str
) -> list[str]:
    names = list(available) if datasets is None else list(datasets)
    unknown = [d for d in names if d not in available]
    if unknown:
        raise UserError(
            f"unknown {family} data set(s) {', '.join(unknown)}; accepted: {', '.join(available)}"
        )
    if held_out not in names:
        raise UserError(
            f"task.options.held_out={held_out!r} is not one of the data sets: {', '.join(names)}"
        )
    if len(names) < 2:
        raise UserError(f"{family} needs >= 2 data sets (one held out), got {', '.join(names)}")
    return names


def _family(
    name: str,
    split: str,
    names: list[str],
    held_out: str,
    load: Callable[[str, bool], ImageSet],
    input_shape: tuple[int, int, int],
    num_outputs: int,
    test_examples: int,
    validation_fraction: float,
    split_seed: int,
) -> DatasetTasks:
    """Load what `split` needs: the training data sets, or the held-out one (with its test
    images for "test", with a validation slice of its training images for "validation")."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    if split == "train":
        sets = [load(d, True) for d in names if d != held_out]
    elif split == "test":
        sets = [load(held_out, True)]
    else:
        sets = [validation_view(load(held_out, False), validation_fraction, split_seed)]
    return DatasetTasks(name, split, sets, input_shape, num_outputs, test_examples)


MULTICV_DATASETS = ("mnist", "fashion_mnist", "svhn", "cifar10", "cifar100", "gtsrb")


@register("multicv")
def multicv_tasks(
    split: str,
    root: str,
    held_out: str = "cifar10",
    datasets: list[str] | None = None,
    channels: int = 1,
    image_size: int = 28,
    test_examples: int = 1000,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    download: bool = False,
) -> DatasetTasks:
    """Multi-CV over torchvision data sets (see the module docstring).

    Args:
        split: "train" (every data set but `held_out`), "validation" or "test" (`held_out`).
        root: the data root (torchvision's layout under it; see `tasks.datasets`).
        held_out: the data set transfer is evaluated on.
        datasets: the family's data sets (default: all of MULTICV_DATASETS).
        channels, image_size: the common input shape (1 x 28 x 28 by default).
        test_examples: held-out images scored per task.
        validation_fraction: training images held out for the validation split.
        split_seed: seed of the validation slice.
        download: let torchvision download absent files.
    """
    names = _choose("Multi-CV", MULTICV_DATASETS, datasets, held_out)
    if image_size < 8:
        raise UserError(f"task.options.image_size must be >= 8, got {image_size}")

    def load(dataset: str, with_test: bool) -> ImageSet:
        spec = TORCHVISION_SETS[dataset]
        train = spec.load(root, True, channels, image_size, download)
        test = spec.load(root, False, channels, image_size, download) if with_test else train
        return ImageSet(dataset, spec.classes, train, test)

    num_outputs = max(TORCHVISION_SETS[d].classes for d in names)
    return _family(
        "multicv",
        split,
        names,
        held_out,
        load,
        (channels, image_size, image_size),
        num_outputs,
        test_examples,
        validation_fraction,
        split_seed,
    )


# ---------------------------------------------------------------------------------------------
# Offline Multi-CV: data sets that ship inside installed packages, and glyph alphabets


def stratified_split(labels: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded train / test indices with `test_fraction` of every class in the test part."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in torch.unique(labels).tolist():
        members = rng.permutation(torch.nonzero(labels == label).flatten().numpy())
        cut = max(1, round(len(members) * test_fraction))
        test.append(members[:cut])
        train.append(members[cut:])
    return torch.from_numpy(np.sort(np.concatenate(train))), torch.from_numpy(
        np.sort(np.concatenate(test))
    )


def _split_set(name: str, classes: int, images: Tensor, labels: Tensor, seed: int) -> ImageSet:
    train, test = stratified_split(labels, 0.25, seed)
    return ImageSet(
        name,
        classes,
        LabelledImages(images[train], labels[train]),
        LabelledImages(images[test], labels[test]),
    )


def digits_set(seed: int) -> ImageSet:
    """scikit-learn's handwritten digits: 1797 images, 8 x 8, 10 classes; seeded 75/25 split."""
    datasets = require("sklearn.datasets", "the digits set of multicv_offline")
    digits = datasets.load_digits()
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))
    return _split_set(
        "digits", 10, images.unsqueeze(1), torch.from_numpy(digits.target).long(), seed
    )


def faces_set(seed: int) -> ImageSet:
    """scikit-image's LFW subset: 100 faces (label 1) and 100 non-faces (label 0), 25 x 25,
    seeded 75/25 split."""
    data = require("skimage.data", "the faces set of multicv_offline")
    raw = np.asarray(data.lfw_subset())
    if raw.dtype != np.uint8:  # float in [0, 1] in some scikit-image releases
        raw = np.round(np.clip(raw, 0, 1) * 255).astype(np.uint8)
    labels = torch.cat([torch.ones(100), torch.zeros(len(raw) - 100)]).long()
    return _split_set("faces", 2, torch.from_numpy(raw).unsqueeze(1), labels, seed)


def glyph_sets(root: str, alphabets: int, seed: int) -> list[ImageSet]:
    """Each glyph alphabet as a data set: its characters are the classes, 15 of the 20
    drawings of each character for training and 5 for test."""
    glyphs = load_glyphs(GlyphSpec(alphabets=alphabets, seed=seed), root)
    sets: list[ImageSet] = []
    for a in range(alphabets):
        characters = int(glyphs.characters[a])
        images = glyphs.images[a, :characters]  # (characters, drawers, H, W) uint8
        drawers = images.shape[1]
        cut = drawers * 3 // 4
        labels = torch.arange(characters)[:, None]

        def part(sl: slice, images: Tensor = images, labels: Tensor = labels) -> LabelledImages:
            chosen = images[:, sl]
            return LabelledImages(
                chosen.reshape(-1, 1, *chosen.shape[-2:]),
                labels.expand(-1, chosen.shape[1]).reshape(-1),
            )

        sets.append(ImageSet(f"glyphs{a}", characters, part(slice(0, cut)), part(slice(cut, None))))
    return sets


@register("multicv_offline")
def multicv_offline_tasks(
    split: str,
    root: str,
    held_out: str = "digits",
    datasets: list[str] | None = None,
    glyph_alphabets: int = 4,
    channels: int = 1,
    image_size: int = 28,
    test_examples: int = 1000,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    data_seed: int = 0,
) -> DatasetTasks:
    """Multi-CV with nothing downloaded: digits, faces and `glyph_alphabets` glyph data sets
    (`glyphs0`, `glyphs1`, ...). Options as for `multicv`; `data_seed` seeds the glyphs."""
    if glyph_alphabets < 0:
        raise UserError(f"task.options.glyph_alphabets must be >= 0, got {glyph_alphabets}")
    available = ["digits", "faces", *[f"glyphs{i}" for i in range(glyph_alphabets)]]
    names = _choose("offline Multi-CV", available, datasets, held_out)
    if image_size < 8:
        raise UserError(f"task.options.image_size must be >= 8, got {image_size}")
    raw: dict[str, ImageSet] = {"digits": digits_set(split_seed), "faces": faces_set(split_seed)}
    if glyph_alphabets:
        raw.update({s.name: s for s in glyph_sets(root, glyph_alphabets, data_seed)})

    def load(dataset: str, with_test: bool) -> ImageSet:
        data = raw[dataset]
        return ImageSet(
            data.name,
            data.classes,
            LabelledImages(to_shape(data.train.images, channels, image_size), data.train.labels),
            LabelledImages(to_shape(data.test.images, channels, image_size), data.test.labels),
        )

    num_outputs = max(raw[d].classes for d in names)
    return _family(
        "multicv_offline",
        split,
        names,
        held_out,
        load,
        (channels, image_size, image_size),
        num_outputs,
        test_examples,
        validation_fraction,
        split_seed,
    )

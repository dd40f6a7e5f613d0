"""N-way K-shot episodes (the MAML-style few-shot benchmark) sampled with learn2learn.

An episode picks `ways` classes of one split, `shots` support and `query_shots`
query images of each; the support set is what the inner loop trains on and the
query set is the held-out set. Sampling goes through learn2learn's task
transforms (`NWays`, `KShots`, `LoadData`, `RemapLabels`, `ConsecutiveLabels`)
over a `MetaDataset`, and `partition_task` splits support from query.

Sources:

- Omniglot: the 1623 characters of both torchvision sets (read once and cached
  by `tasks.omniglot`), classes split in a seeded order into 1100 for
  meta-training, 100 for validation and the rest for test (learn2learn's
  benchmark split), optionally with each class rotated by a random multiple of
  90 degrees (Santoro et al. 2016; Finn et al. 2017).
- MiniImageNet: learn2learn's `MiniImagenet` pickles (Ravi & Larochelle splits).
- CIFAR-FS: learn2learn's `CIFARFS` (Bertinetto et al. splits).
- Glyphs: the embedded glyph alphabets, split by alphabet as `glyphs` does; offline.

learn2learn draws from Python's global `random`; every episode is drawn inside
a context that seeds it from the task distribution's NumPy generator and then
restores it, so the same generator state gives the same episodes.
"""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from leap_convrnn.errors import UserError
from leap_convrnn.optional import import_learn2learn
from tasks.base import Task, TaskDistribution
from tasks.classification import ClassificationTask
from tasks.datasets import data_root, missing_files, open_dataset
from tasks.glyph_tasks import SPLITS, AlphabetSplit
from tasks.glyphs import GlyphSpec
from tasks.glyphs import load as load_glyphs
from tasks.inner_loop import Batch
from tasks.omniglot import load_alphabets
from tasks.registry import register


@contextlib.contextmanager
def python_random_seeded(seed: int) -> Iterator[None]:
    """Seed Python's global `random` (what learn2learn samples with), then restore it."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _rotate(sample: tuple[Tensor, int], quarter_turns: int) -> tuple[Tensor, int]:
    image, label = sample
    return torch.rot90(image, quarter_turns, dims=(-2, -1)), label


class ClassRotation:
    """A learn2learn task transform: rotate all images of a class by one random multiple
    of 90 degrees, drawn per class and per episode.

    learn2learn's own `RandomClassRotation` binds its rotation through a closure
    that is evaluated after its loop, so every image of an episode gets the last
    class's angle; here each data description gets its class's angle bound by
    value. `torch.rot90` is exact (no interpolation).
    """

    def __init__(self, dataset: Any, quarter_turns: Sequence[int] = (0, 1, 2, 3)) -> None:
        self.dataset = dataset
        self.quarter_turns = list(quarter_turns)

    def __call__(self, task_description: list[Any]) -> list[Any]:
        chosen: dict[int, int] = {}
        for description in task_description:
            label = self.dataset.indices_to_labels[description.index]
            if label not in chosen:
                chosen[label] = random.choice(self.quarter_turns)
            description.transforms.append(functools.partial(_rotate, quarter_turns=chosen[label]))
        return task_description


@dataclass
class EpisodeTask(ClassificationTask):
    """One episode: support = training set, query = held-out set.

    When the inner loop's batch size covers the support set, every step trains on
    the whole support set (the few-shot convention); otherwise minibatches are
    drawn as in `ClassificationTask`.
    """

    def batches(self, batch_size: int) -> Callable[[], Batch]:
        if batch_size < self.x_train.shape[0]:
            return super().batches(batch_size)
        return lambda: (self.x_train, self.y_train)


def labels_to_indices(labels: Sequence[int]) -> dict[int, list[int]]:
    """Class label -> indices of its samples (what learn2learn's MetaDataset needs)."""
    out: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        out.setdefault(int(label), []).append(index)
    return out


class EpisodeTasks(TaskDistribution):
    """N-way K-shot episodes over the classes of one split of a data set."""

    def __init__(
        self,
        name: str,
        split: str,
        dataset: Dataset[Any],
        labels: Sequence[int],
        input_shape: tuple[int, int, int],
        ways: int = 5,
        shots: int = 1,
        query_shots: int = 15,
        rotate_classes: bool = False,
    ) -> None:
        for value, label in ((ways, "ways"), (shots, "shots"), (query_shots, "query_shots")):
            if value < 1:
                raise UserError(f"task.options.{label} must be >= 1, got {value}")
        groups = labels_to_indices(labels)
        usable = {c: i for c, i in groups.items() if len(i) >= shots + query_shots}
        if len(usable) < ways:
            raise UserError(
                f"{name} {split} split has {len(usable)} classes with >= {shots + query_shots} "
                f"images, fewer than ways={ways}; lower task.options.ways, shots or query_shots"
            )
        l2l = import_learn2learn("N-way K-shot episodes")
        transforms = l2l.data.transforms
        meta = l2l.data.MetaDataset(dataset, labels_to_indices=usable)
        steps = [
            transforms.NWays(meta, ways),
            transforms.KShots(meta, shots + query_shots),
            transforms.LoadData(meta),
            transforms.RemapLabels(meta),
            transforms.ConsecutiveLabels(meta),
        ]
        if rotate_classes:
            steps.append(ClassRotation(meta))
        self.dataset = dataset
        self.taskset = l2l.data.Taskset(meta, task_transforms=steps, num_tasks=-1)
        self._partition = l2l.data.partition_task
        self.name = name
        self.split = split
        self.ways, self.shots, self.query_shots = ways, shots, query_shots
        self.classes = len(usable)
        self.input_shape = input_shape
        self.num_outputs = ways

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._episode(int(rng.integers(2**31))) for _ in range(n)]

    def _episode(self, seed: int) -> EpisodeTask:
        with python_random_seeded(seed):
            images, labels = self.taskset.sample()
        (x_train, y_train), (x_test, y_test) = self._partition(images, labels, shots=self.shots)
        return EpisodeTask(
            name=f"{self.name}/{self.split}/episode{seed}",
            x_train=x_train.float(),
            y_train=y_train.long(),
            x_test=x_test.float(),
            y_test=y_test.long(),
            num_outputs=self.ways,
            seed=seed,
        )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")


def class_split(classes: int, train: int, validation: int, seed: int) -> dict[str, list[int]]:
    """A seeded order of `classes`: the first `train`, the next `validation`, the rest test."""
    if train < 1 or validation < 1 or train + validation >= classes:
        raise UserError(
            f"class split train_classes={train}, validation_classes={validation} does not fit "
            f"{classes} classes (need both >= 1 and train + validation < {classes})"
        )
    order = np.random.default_rng(seed).permutation(classes).tolist()
    return {
        "train": sorted(order[:train]),
        "validation": sorted(order[train : train + validation]),
        "test": sorted(order[train + validation :]),
    }


def _characters_dataset(
    alphabets: list[Tensor], chosen: list[int]
) -> tuple[TensorDataset, list[int]]:
    """Flatten characters (of every alphabet) into a labelled dataset of the `chosen` ones.

    `alphabets` hold (characters, drawers, H, W) float images; `chosen` indexes the
    characters of all alphabets in order.
    """
    characters = [c for alphabet in alphabets for c in alphabet]
    images = torch.cat([characters[c] for c in chosen]).unsqueeze(1)
    labels = [label for label, c in enumerate(chosen) for _ in range(characters[c].shape[0])]
    return TensorDataset(images, torch.tensor(labels)), labels


@register("omniglot_fewshot")
def omniglot_episodes(
    split: str,
    root: str,
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 15,
    train_classes: int = 1100,
    validation_classes: int = 100,
    split_seed: int = 0,
    rotate_classes: bool = True,
    image_size: int = 28,
    download: bool = False,
) -> EpisodeTasks:
    """N-way K-shot Omniglot episodes (28 x 28, strokes 1) over a seeded class split."""
    _check_split(split)
    alphabets = load_alphabets(root, image_size, download)
    images = [alphabets.alphabet(i) for i in range(len(alphabets.images))]
    total = sum(a.shape[0] for a in images)
    chosen = class_split(total, train_classes, validation_classes, split_seed)[split]
    dataset, labels = _characters_dataset(images, chosen)
    return EpisodeTasks(
        "omniglot_fewshot",
        split,
        dataset,
        labels,
        (1, image_size, image_size),
        ways,
        shots,
        query_shots,
        rotate_classes,
    )


@register("glyphs_fewshot")
def glyph_episodes(
    split: str,
    root: str,
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 15,
    alphabets: int = 50,
    train_alphabets: int = 35,
    test_alphabets: int = 10,
    split_seed: int = 0,
    data_seed: int = 0,
    rotate_classes: bool = False,
) -> EpisodeTasks:
    """N-way K-shot episodes over the characters of the glyph alphabets (offline)."""
    _check_split(split)
    glyphs = load_glyphs(GlyphSpec(alphabets=alphabets, seed=data_seed), root)
    chosen = AlphabetSplit(train_alphabets, test_alphabets, split_seed).indices(alphabets)[split]
    images = [glyphs.alphabet(i) for i in chosen]
    total = sum(a.shape[0] for a in images)
    dataset, labels = _characters_dataset(images, list(range(total)))
    size = glyphs.images.shape[-1]
    return EpisodeTasks(
        "glyphs_fewshot",
        split,
        dataset,
        labels,
        (1, size, size),
        ways,
        shots,
        query_shots,
        rotate_classes,
    )


class _Scaled(Dataset[Any]):
    """A dataset view whose images are divided by 255 (MiniImageNet stores 0..255 floats)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index]
        return image / 255.0, label


MINI_IMAGENET_FOLDER = "mini-imagenet"
MINI_IMAGENET_FILES = "mini-imagenet-cache-{train,validation,test}.pkl"


@register("miniimagenet_fewshot")
def mini_imagenet_episodes(
    split: str,
    root: str,
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 15,
    download: bool = False,
) -> EpisodeTasks:
    """N-way K-shot MiniImageNet episodes (3 x 84 x 84 in [0, 1]), Ravi & Larochelle splits."""
    _check_split(split)
    path = data_root(root) / MINI_IMAGENET_FOLDER
    if not download and not (path / f"mini-imagenet-cache-{split}.pkl").exists():
        raise missing_files("MiniImageNet", path, MINI_IMAGENET_FILES)
    l2l = import_learn2learn("N-way K-shot episodes")

    def build() -> Any:
        path.mkdir(parents=True, exist_ok=True)
        return l2l.vision.datasets.MiniImagenet(str(path), mode=split, download=download)

    dataset = open_dataset("MiniImageNet", path, MINI_IMAGENET_FILES, download, build)
    labels = [int(y) for y in dataset.y]
    shape = tuple(int(d) for d in dataset.x.shape[1:])
    return EpisodeTasks(
        "miniimagenet_fewshot",
        split,
        _Scaled(dataset),
        labels,
        (shape[0], shape[1], shape[2]),
        ways,
        shots,
        query_shots,
    )


CIFARFS_FILES = "cifar100/data/<class>/*.png and cifar100/splits/bertinetto/{train,val,test}.txt"


@register("cifarfs_fewshot")
def cifarfs_episodes(
    split: str,
    root: str,
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 15,
    download: bool = False,
) -> EpisodeTasks:
    """N-way K-shot CIFAR-FS episodes (3 x 32 x 32 in [0, 1]), Bertinetto et al. splits."""
    _check_split(split)
    base = data_root(root)
    path = base / "cifarfs"
    if not download and not path.exists():
        raise missing_files("CIFAR-FS", path, CIFARFS_FILES)
    l2l = import_learn2learn("N-way K-shot episodes")
    from torchvision.transforms import ToTensor

    processed = path / "processed"
    fresh = not processed.exists()

    def build() -> Any:
        base.mkdir(parents=True, exist_ok=True)
        return l2l.vision.datasets.CIFARFS(
            str(base), mode=split, transform=ToTensor(), download=download
        )

    try:
        dataset = open_dataset("CIFAR-FS", path, CIFARFS_FILES, download, build)
    except UserError:
        if fresh:  # learn2learn leaves a half-made processed/ that it would trust next time
            shutil.rmtree(processed, ignore_errors=True)
        raise
    return EpisodeTasks(
        "cifarfs_fewshot",
        split,
        dataset,
        list(dataset.targets),
        (3, 32, 32),
        ways,
        shots,
        query_shots,
    )

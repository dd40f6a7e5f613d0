"""The Leap paper's Omniglot protocol (Section 4.1) on the synthetic glyph alphabets.

A task is a `ways`-way classification over randomly chosen characters of one
alphabet, with `train_shots` training and `test_shots` held-out images per
character (the paper: 20-way, 15 + 5). Alphabets are split, from a fixed seed,
into meta-train, validation and test sets; tasks of one split only ever see the
alphabets of that split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from leap_convrnn.errors import UserError
from tasks.base import Task, TaskDistribution
from tasks.classification import Augment, ClassificationTask, RandomAffine
from tasks.glyphs import GlyphSet, GlyphSpec, load
from tasks.registry import register

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class AlphabetSplit:
    """How many alphabets go to meta-train and test; validation gets the rest."""

    train: int
    test: int
    seed: int = 0

    def indices(self, alphabets: int) -> dict[str, list[int]]:
        if self.train < 1 or self.test < 1 or self.train + self.test > alphabets:
            raise UserError(
                f"alphabet split train={self.train}, test={self.test} does not fit "
                f"{alphabets} alphabets (need train >= 1, test >= 1, train + test <= {alphabets})"
            )
        order = np.random.default_rng(self.seed).permutation(alphabets).tolist()
        return {
            "train": sorted(order[: self.train]),
            "test": sorted(order[self.train : self.train + self.test]),
            "validation": sorted(order[self.train + self.test :]),
        }


class AlphabetTasks(TaskDistribution):
    """Tasks drawn from the alphabets of one split of a character data set.

    `augment`, when given, transforms every training minibatch of every task
    (see `ClassificationTask`); held-out images are left as drawn.
    """

    def __init__(
        self,
        name: str,
        alphabets: list[torch.Tensor],
        split: str,
        ways: int,
        train_shots: int,
        test_shots: int,
        augment: Augment | None = None,
    ) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
        counts = {"ways": ways, "train_shots": train_shots, "test_shots": test_shots}
        for label, value in counts.items():
            if value < 1:
                raise UserError(f"task.{label} must be >= 1, got {value}")
        shots = train_shots + test_shots
        usable = [a for a in alphabets if a.shape[0] >= ways and a.shape[1] >= shots]
        if not usable:
            raise UserError(
                f"no alphabet of the {split} split has {ways} characters with "
                f"{train_shots + test_shots} drawings each; lower task.ways or the shots"
            )
        self.name = name
        self.split = split
        self.alphabets = usable
        self.ways, self.train_shots, self.test_shots = ways, train_shots, test_shots
        self.input_shape = (1, *usable[0].shape[-2:])
        self.num_outputs = ways
        self.augment = augment

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._task(rng) for _ in range(n)]

    def _task(self, rng: np.random.Generator) -> ClassificationTask:
        a = int(rng.integers(len(self.alphabets)))
        alphabet = self.alphabets[a]
        characters = rng.choice(alphabet.shape[0], size=self.ways, replace=False)
        shots = self.train_shots + self.test_shots
        drawers = np.stack([rng.permutation(alphabet.shape[1])[:shots] for _ in characters])
        images = alphabet[torch.from_numpy(characters)[:, None], torch.from_numpy(drawers)]
        images = images.unsqueeze(2)  # (ways, shots, 1, H, W)
        labels = torch.arange(self.ways)[:, None].expand(-1, shots)
        train = self.train_shots
        return ClassificationTask(
            name=f"{self.name}/{self.split}/alphabet{a}",
            x_train=images[:, :train].reshape(-1, *self.input_shape),
            y_train=labels[:, :train].reshape(-1),
            x_test=images[:, train:].reshape(-1, *self.input_shape),
            y_test=labels[:, train:].reshape(-1),
            num_outputs=self.ways,
            seed=int(rng.integers(2**31)),
            augment=self.augment,
        )


@register("glyphs")
def glyph_tasks(
    split: str,
    root: str,
    ways: int = 20,
    train_shots: int = 15,
    test_shots: int = 5,
    alphabets: int = 50,
    train_alphabets: int = 35,
    test_alphabets: int = 10,
    split_seed: int = 0,
    data_seed: int = 0,
    augment: bool = False,
) -> AlphabetTasks:
    """Tasks over the synthetic glyph alphabets (embedded default, nothing downloaded).

    `augment=True` applies the Leap paper's Omniglot augmentation (`RandomAffine`)
    to training minibatches.
    """
    glyphs: GlyphSet = load(GlyphSpec(alphabets=alphabets, seed=data_seed), root)
    chosen = AlphabetSplit(train_alphabets, test_alphabets, split_seed).indices(alphabets)
    if split not in chosen:
        raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    return AlphabetTasks(
        "glyphs",
        [glyphs.alphabet(i) for i in chosen[split]],
        split,
        ways,
        train_shots,
        test_shots,
        augment=RandomAffine() if augment else None,
    )

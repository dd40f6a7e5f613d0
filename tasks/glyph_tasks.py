"""The Leap paper's Omniglot protocol (Section 4.1) on the synthetic glyph alphabets.

A task is a `ways`-way classification over characters of one alphabet, with
`train_shots` training and `test_shots` held-out images per character (the paper:
20-way, 15 + 5). Alphabets are split, from a fixed seed, into meta-train,
validation and test sets; tasks of one split only ever see the alphabets of that
split. Alphabets with fewer than `ways` characters (or fewer than
`train_shots + test_shots` drawings) are left out, as the paper's reference code
leaves out alphabets with fewer characters than its task size.

Two options choose how a task is made from an alphabet:

- `task_definition`: "random" (the default) draws `ways` random characters of a
  random alphabet for every sampled task. "per_alphabet" is the paper's reference
  code: one fixed task per alphabet, its characters shuffled once from the split
  seed and the first `ways` kept; sampling `n` tasks goes through the alphabets in
  shuffled rounds (each alphabet once per round), every sample of an alphabet
  holding the same images (only its minibatch seed differs), so the number of
  meta-training alphabets is the number of meta-training tasks.
- `split_order`: "random" (the default) draws which drawings of a character are
  held out; "test_first" holds out its first `test_shots` drawings, in the data
  set's order, and trains on the next `train_shots` (the reference code: the first
  5 of 20 held out, the other 15 for training).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from leap_convrnn.errors import UserError
from tasks.base import Task, TaskDistribution
from tasks.classification import Augment, ClassificationTask, RandomAffine
from tasks.glyphs import GlyphSet, GlyphSpec, load
from tasks.registry import register

SPLITS = ("train", "validation", "test")
TASK_DEFINITIONS = ("random", "per_alphabet")
SPLIT_ORDERS = ("random", "test_first")


def check_choice(value: str, accepted: tuple[str, ...], option: str) -> str:
    """`value` if it is one of `accepted`; otherwise a one-line `UserError` naming both."""
    if value not in accepted:
        raise UserError(f"unknown task.options.{option} {value!r}; accepted: {', '.join(accepted)}")
    return value


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
    `task_definition` and `split_order` are described in the module docstring;
    `ids` names each alphabet for the per-alphabet tasks (default: its position),
    which are drawn from `seed` and the alphabet's id only, so an alphabet keeps its
    task whichever other alphabets share its split.
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
        task_definition: str = "random",
        split_order: str = "random",
        seed: int = 0,
        ids: list[int] | None = None,
    ) -> None:
        check_choice(task_definition, TASK_DEFINITIONS, "task_definition")
        check_choice(split_order, SPLIT_ORDERS, "split_order")
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
        counts = {"ways": ways, "train_shots": train_shots, "test_shots": test_shots}
        for label, value in counts.items():
            if value < 1:
                raise UserError(f"task.{label} must be >= 1, got {value}")
        shots = train_shots + test_shots
        ids = list(range(len(alphabets))) if ids is None else ids
        if len(ids) != len(alphabets):
            raise ValueError(f"{len(ids)} ids for {len(alphabets)} alphabets")
        kept = [i for i, a in enumerate(alphabets) if a.shape[0] >= ways and a.shape[1] >= shots]
        usable = [alphabets[i] for i in kept]
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
        self.task_definition = task_definition
        self.split_order = split_order
        self.fixed: list[ClassificationTask] = []
        """The per-alphabet tasks (empty unless `task_definition` is "per_alphabet")."""
        if task_definition == "per_alphabet":
            self.fixed = [
                self._task(a, np.random.default_rng([seed, ids[i]])) for a, i in enumerate(kept)
            ]

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        if not self.fixed:
            return [self._task(int(rng.integers(len(self.alphabets))), rng) for _ in range(n)]
        order: list[int] = []
        while len(order) < n:
            order.extend(rng.permutation(len(self.fixed)).tolist())
        return [replace(self.fixed[a], seed=int(rng.integers(2**31))) for a in order[:n]]

    def _drawers(self, drawers: int, rng: np.random.Generator) -> np.ndarray:
        """Which drawings of a character a task uses: the training ones, then the held-out."""
        if self.split_order == "test_first":
            test, train = self.test_shots, self.train_shots
            return np.concatenate([np.arange(test, test + train), np.arange(test)])
        return rng.permutation(drawers)[: self.train_shots + self.test_shots]

    def _task(self, a: int, rng: np.random.Generator) -> ClassificationTask:
        """A task on alphabet `a`: `ways` characters and their drawings drawn from `rng`."""
        alphabet = self.alphabets[a]
        characters = rng.choice(alphabet.shape[0], size=self.ways, replace=False)
        shots = self.train_shots + self.test_shots
        drawers = np.stack([self._drawers(alphabet.shape[1], rng) for _ in characters])
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
    task_definition: str = "random",
    split_order: str = "random",
) -> AlphabetTasks:
    """Tasks over the synthetic glyph alphabets (embedded default, nothing downloaded).

    `augment=True` applies the Leap paper's Omniglot augmentation (`RandomAffine`)
    to training minibatches. `task_definition` ("random" or "per_alphabet") and
    `split_order` ("random" or "test_first") are described in the module docstring;
    the per-alphabet tasks are drawn from `split_seed`.
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
        task_definition=task_definition,
        split_order=split_order,
        seed=split_seed,
        ids=chosen[split],
    )

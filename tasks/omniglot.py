"""Omniglot (Lake et al. 2015) under the Leap paper's protocol (Flennerhag et al. 2019, Sec. 4.1).

Both of torchvision's Omniglot sets (background and evaluation, 50 alphabets in
all) are read from `<root>/omniglot-py`. Images, 105 x 105 black strokes on
white, are resized to 28 x 28 (Lanczos) and inverted so that strokes are 1 and
the background 0, like the glyph alphabets. The resized set is cached under
`<root>/omniglot-py/leap-cache/` after the first load.

The protocol: alphabets with fewer than 20 characters are dropped; the rest are
put in a seeded order, the first `train_alphabets` (the paper sweeps 1, 3, 5,
10, 15, 20, 25) are for meta-training, the next 10 for test and the rest for
validation. A task is a 20-way classification over 20 random characters of one
alphabet with 15 training and 5 held-out drawings per character (the defaults;
`task_definition="per_alphabet"` and `split_order="test_first"` give the reference
code's one fixed task per alphabet with the first 5 drawings held out, see
`tasks.glyph_tasks`). With
`augment=True` training minibatches get the paper's random affine augmentation
(any rotation, translation up to 0.2, scale 0.8 to 1.2).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from leap_convrnn.errors import UserError
from tasks.classification import RandomAffine
from tasks.datasets import data_root, missing_files, open_dataset
from tasks.glyph_tasks import (
    SPLIT_ORDERS,
    SPLITS,
    TASK_DEFINITIONS,
    AlphabetSplit,
    AlphabetTasks,
    check_choice,
)
from tasks.registry import register

FOLDER = "omniglot-py"
SETS = {"images_background": True, "images_evaluation": False}  # folder -> torchvision flag
FILES = "images_background.zip and images_evaluation.zip (with their extracted folders)"
CACHE_VERSION = 1


@dataclass
class OmniglotAlphabets:
    """Every Omniglot alphabet: its name and images (characters, drawers, H, W) uint8."""

    names: list[str]
    images: list[Tensor]

    def alphabet(self, index: int) -> Tensor:
        """One alphabet as float in [0, 1], strokes 1: (characters, drawers, H, W)."""
        return self.images[index].float().div_(255.0)


def _read_set(root: Path, background: bool, image_size: int, download: bool) -> dict[str, Tensor]:
    """Read one torchvision Omniglot set: alphabet name -> (characters, drawers, H, W) uint8.

    Characters are ordered by folder name and drawings by file name, so the result
    does not depend on the order in which the file system lists them.
    """
    from PIL import Image
    from torchvision.datasets import Omniglot

    dataset = open_dataset(
        "Omniglot",
        root / FOLDER,
        FILES,
        download,
        lambda: Omniglot(str(root), background=background, download=download),
    )
    # torchvision keeps (file name, character index) per image and "alphabet/character"
    # per character index; both are needed to group drawings by alphabet and character.
    drawings: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for index, (file_name, character) in enumerate(dataset._flat_character_images):
        alphabet, name = dataset._characters[character].split("/", 1)
        drawings.setdefault(alphabet, {}).setdefault(name, []).append((file_name, index))

    def load(index: int) -> np.ndarray:
        image, _ = dataset[index]
        small = image.convert("L").resize((image_size, image_size), Image.Resampling.LANCZOS)
        return 255 - np.asarray(small, dtype=np.uint8)

    out: dict[str, Tensor] = {}
    for alphabet in sorted(drawings):
        characters = [sorted(drawings[alphabet][c]) for c in sorted(drawings[alphabet])]
        drawers = min(len(c) for c in characters)  # 20 in Omniglot
        if drawers < 1:
            continue
        images = np.stack([np.stack([load(i) for _, i in c[:drawers]]) for c in characters])
        out[alphabet] = torch.from_numpy(images)
    return out


def load_alphabets(
    root: str | os.PathLike[str], image_size: int = 28, download: bool = False
) -> OmniglotAlphabets:
    """All 50 alphabets (background set first, then evaluation), from the cache if present.

    Raises the one-line missing-files `UserError` when the Omniglot files are absent
    and `download` is false.
    """
    if image_size < 8:
        raise UserError(f"task.options.image_size must be >= 8, got {image_size}")
    base = data_root(root)
    cache = base / FOLDER / "leap-cache" / f"alphabets-{image_size}px-v{CACHE_VERSION}.pt"
    if cache.exists():
        try:
            saved = torch.load(cache, weights_only=True)
            return OmniglotAlphabets(list(saved["names"]), list(saved["images"]))
        except Exception:  # a corrupt cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    names: list[str] = []
    images: list[Tensor] = []
    for folder, background in SETS.items():
        for alphabet, tensor in _read_set(base, background, image_size, download).items():
            names.append(f"{folder}/{alphabet}")
            images.append(tensor)
    if not names:
        raise missing_files("Omniglot", base / FOLDER, FILES)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".tmp", delete=False) as tmp:
        torch.save({"names": names, "images": images}, tmp)
    os.replace(tmp.name, cache)
    return OmniglotAlphabets(names, images)


def leap_split(
    alphabets: OmniglotAlphabets,
    train_alphabets: int,
    test_alphabets: int,
    min_characters: int,
    seed: int,
) -> dict[str, list[int]]:
    """The Leap split: alphabets with >= `min_characters` characters, seeded order,
    the first `train_alphabets` for meta-training, the next `test_alphabets` for
    test, the rest for validation. Returns indices into `alphabets`."""
    kept = [i for i, a in enumerate(alphabets.images) if a.shape[0] >= min_characters]
    if not kept:
        raise UserError(
            f"no Omniglot alphabet has {min_characters} characters; "
            "lower task.options.min_characters"
        )
    chosen = AlphabetSplit(train_alphabets, test_alphabets, seed).indices(len(kept))
    return {split: [kept[i] for i in indices] for split, indices in chosen.items()}


@register("omniglot")
def omniglot_tasks(
    split: str,
    root: str,
    ways: int = 20,
    train_shots: int = 15,
    test_shots: int = 5,
    train_alphabets: int = 25,
    test_alphabets: int = 10,
    min_characters: int = 20,
    split_seed: int = 0,
    augment: bool = False,
    image_size: int = 28,
    download: bool = False,
    task_definition: str = "random",
    split_order: str = "random",
) -> AlphabetTasks:
    """Omniglot tasks, Leap protocol (see the module docstring).

    Args:
        split: "train", "validation" or "test".
        root: the data root holding `omniglot-py/`.
        ways: characters per task (the paper: 20).
        train_shots, test_shots: training and held-out drawings per character (15, 5).
        train_alphabets: alphabets for meta-training (the paper: 1, 3, 5, 10, 15, 20, 25).
        test_alphabets: alphabets for test (10); validation gets the rest.
        min_characters: alphabets with fewer characters are dropped (20).
        split_seed: the seed of the alphabet order.
        augment: random affine augmentation of training minibatches.
        image_size: side of the resized images (28).
        download: let torchvision download the files when they are absent.
        task_definition: "random" (random characters per sampled task) or
            "per_alphabet" (one fixed task per alphabet, drawn from `split_seed`).
        split_order: "random" (random held-out drawings) or "test_first" (the first
            `test_shots` drawings of each character held out).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    check_choice(task_definition, TASK_DEFINITIONS, "task_definition")
    check_choice(split_order, SPLIT_ORDERS, "split_order")
    alphabets = load_alphabets(root, image_size, download)
    chosen = leap_split(alphabets, train_alphabets, test_alphabets, min_characters, split_seed)
    return AlphabetTasks(
        "omniglot",
        [alphabets.alphabet(i) for i in chosen[split]],
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

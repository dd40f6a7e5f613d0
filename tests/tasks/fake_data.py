"""Tiny fake copies of real data sets, written in each data set's own on-disk format.

They let the tests run the real torchvision / learn2learn loaders without the
internet. torchvision checks some files against the MD5 sums of the real
releases; `checksums` points those tables at the fake files (through pytest's
monkeypatch), which is the only thing the tests change in the loaders.

Every image is distinct (a few random strokes or random pixels), so leakage
between training and held-out images can be detected by comparing pixels.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

# Omniglot: set -> alphabet -> number of characters. "Tiny" has fewer than 5 characters.
OMNIGLOT_LAYOUT = {
    "images_background": {"Alpha": 6, "Beta": 5, "Tiny": 2},
    "images_evaluation": {"Gamma": 5, "Delta": 6},
}
OMNIGLOT_DRAWERS = 4


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def stroke_image(rng: np.random.Generator, size: int = 105) -> Image.Image:
    """Black random strokes on white, like an Omniglot drawing."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        points = [tuple(int(v) for v in rng.integers(10, size - 10, 2)) for _ in range(3)]
        draw.line(points, fill=0, width=int(rng.integers(4, 9)))
    return image


def write_omniglot(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int = 0,
    layout: dict[str, dict[str, int]] | None = None,
    drawers: int = OMNIGLOT_DRAWERS,
) -> None:
    """`root/omniglot-py/images_{background,evaluation}` (+ their zips): `layout` maps each
    set to {alphabet: characters} (default OMNIGLOT_LAYOUT), `drawers` drawings each."""
    import torchvision.datasets

    rng = np.random.default_rng(seed)
    base = root / "omniglot-py"
    sums = {}
    for folder, alphabets in (layout or OMNIGLOT_LAYOUT).items():
        for alphabet, characters in alphabets.items():
            for c in range(characters):
                directory = base / folder / alphabet / f"character{c + 1:02d}"
                directory.mkdir(parents=True)
                for d in range(drawers):
                    stroke_image(rng).save(directory / f"{c + 1:04d}_{d + 1:02d}.png")
        archive = base / f"{folder}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted((base / folder).rglob("*.png")):
                zf.write(path, path.relative_to(base).as_posix())
        sums[folder] = md5(archive)
    monkeypatch.setattr(torchvision.datasets.Omniglot, "zips_md5", sums)


def _idx_images(path: Path, images: np.ndarray) -> None:
    n, rows, cols = images.shape
    header = np.array([2051, n, rows, cols], dtype=">i4").tobytes()
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: np.ndarray) -> None:
    header = np.array([2049, len(labels)], dtype=">i4").tobytes()
    path.write_bytes(header + labels.astype(np.uint8).tobytes())


def write_mnist(
    root: Path, folder: str = "MNIST", train: int = 40, test: int = 20, seed: int = 0
) -> None:
    """torchvision's MNIST / FashionMNIST layout: `root/<folder>/raw/*-idx?-ubyte`."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", train), ("t10k", test)):
        _idx_images(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx_labels(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def write_cifar(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    classes: int = 10,
    per_batch: int = 12,
    seed: int = 0,
) -> None:
    """torchvision's CIFAR-10 (`cifar-10-batches-py/`) or CIFAR-100 (`cifar-100-python/`)
    pickles, with the MD5 tables pointed at them."""
    import torchvision.datasets

    rng = np.random.default_rng(seed)
    cls = torchvision.datasets.CIFAR10 if classes == 10 else torchvision.datasets.CIFAR100
    label_key = "labels" if classes == 10 else "fine_labels"
    folder = root / cls.base_folder
    folder.mkdir(parents=True)

    def batch(name: str) -> list[str]:
        entry = {
            "data": rng.integers(0, 256, (per_batch, 3 * 32 * 32)).astype(np.uint8),
            label_key: [int(i % classes) for i in range(per_batch)],
        }
        path = folder / name
        path.write_bytes(pickle.dumps(entry))
        return [name, md5(path)]

    train_list = [batch(name) for name, _ in cls.train_list]
    test_list = [batch(name) for name, _ in cls.test_list]
    meta_path = folder / cls.meta["filename"]
    meta_path.write_bytes(pickle.dumps({cls.meta["key"]: [f"class{i}" for i in range(classes)]}))
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(meta_path)})


def write_svhn(
    root: Path, monkeypatch: pytest.MonkeyPatch, train: int = 30, test: int = 20, seed: int = 0
) -> None:
    """torchvision's SVHN MATLAB files under `root/SVHN/` (labels 1..10, 10 meaning 0)."""
    import scipy.io
    import torchvision.datasets

    rng = np.random.default_rng(seed)
    folder = root / "SVHN"
    folder.mkdir(parents=True)
    table = dict(torchvision.datasets.SVHN.split_list)
    for split, n in (("train", train), ("test", test)):
        url, filename, _ = table[split]
        path = folder / filename
        scipy.io.savemat(
            path,
            {
                "X": rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8),
                "y": (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8),
            },
        )
        table[split] = [url, filename, md5(path)]
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", table)


def write_gtsrb(
    root: Path, classes: int = 3, per_class: int = 4, test: int = 6, seed: int = 0
) -> None:
    """torchvision's GTSRB layout: `root/gtsrb/GTSRB/Training/<class>/*.ppm`,
    `GTSRB/Final_Test/Images/*.ppm` and `GT-final_test.csv` (sizes vary, as in GTSRB)."""
    rng = np.random.default_rng(seed)
    base = root / "gtsrb"

    def ppm(path: Path) -> None:
        size = int(rng.integers(25, 50))
        Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8)).save(path)

    for c in range(classes):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            ppm(folder / f"00000_{i:05d}.ppm")
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(test):
        ppm(images / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;30;30;1;1;29;29;{i % classes}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def write_mini_imagenet(root: Path, classes: int = 6, per_class: int = 5, seed: int = 0) -> None:
    """learn2learn's MiniImageNet pickles: `root/mini-imagenet/mini-imagenet-cache-<mode>.pkl`
    holding `image_data` (N, 84, 84, 3) uint8 and `class_dict` (class -> indices)."""
    rng = np.random.default_rng(seed)
    folder = root / "mini-imagenet"
    folder.mkdir(parents=True)
    for mode in ("train", "validation", "test"):
        n = classes * per_class
        data = {
            "image_data": rng.integers(0, 256, (n, 84, 84, 3)).astype(np.uint8),
            "class_dict": {
                f"n{mode}{c:03d}": list(range(c * per_class, (c + 1) * per_class))
                for c in range(classes)
            },
        }
        (folder / f"mini-imagenet-cache-{mode}.pkl").write_bytes(pickle.dumps(data))


def write_cifarfs(root: Path, per_class: int = 5, seed: int = 0) -> dict[str, list[str]]:
    """learn2learn's CIFAR-FS source layout: `root/cifarfs/cifar100/data/<class>/*.png` and
    `cifar100/splits/bertinetto/{train,val,test}.txt`. Returns the classes of each split."""
    rng = np.random.default_rng(seed)
    base = root / "cifarfs" / "cifar100"
    splits = {
        "train": [f"train_class{i}" for i in range(6)],
        "val": [f"val_class{i}" for i in range(5)],
        "test": [f"test_class{i}" for i in range(5)],
    }
    (base / "splits" / "bertinetto").mkdir(parents=True)
    for split, names in splits.items():
        (base / "splits" / "bertinetto" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            folder = base / "data" / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return splits


def write_multicv(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All six torchvision data sets of Multi-CV, tiny."""
    write_mnist(root, "MNIST", seed=1)
    write_mnist(root, "FashionMNIST", seed=2)
    write_svhn(root, monkeypatch, seed=3)
    write_cifar(root, monkeypatch, classes=10, seed=4)
    write_cifar(root, monkeypatch, classes=100, per_batch=8, seed=5)
    write_gtsrb(root, seed=6)


def shared_images(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many images of `a` (N, ...) equal, pixel for pixel, some image of `b` (M, ...)."""
    seen = {row.tobytes() for row in b.flatten(1).contiguous().numpy()}
    return sum(row.tobytes() in seen for row in a.flatten(1).contiguous().numpy())

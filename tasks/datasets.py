"""Real image data sets on disk: the data root, torchvision loaders, and the missing-files error.

Every data set lives under one data root (`data.root`, overridden by the
environment variable `LEAP_DATA_ROOT`), in the layout torchvision or
learn2learn use themselves, so a root shared with other projects works as is:

    MNIST/raw/                       torchvision MNIST (idx files)
    FashionMNIST/raw/                torchvision FashionMNIST (idx files)
    SVHN/{train,test}_32x32.mat      torchvision SVHN
    cifar-10-batches-py/             torchvision CIFAR-10 (pickled batches)
    cifar-100-python/                torchvision CIFAR-100
    gtsrb/GTSRB/...                  torchvision GTSRB
    omniglot-py/images_{background,evaluation}[.zip]   torchvision Omniglot
    mini-imagenet/mini-imagenet-cache-{train,validation,test}.pkl   learn2learn
    cifarfs/                         learn2learn CIFAR-FS

Nothing is downloaded unless the builders' `download` option is true; every
real-data task config sets it from `data.download`. When files are missing the
loaders raise a one-line `UserError` naming the data set, the path looked at and
how to get the files.

Images are converted once to uint8 tensors of a common shape and cached under
`<root>/leap-cache/`, so later runs skip the decoding.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from leap_convrnn.errors import UserError

CACHE_VERSION = 1
DOWNLOAD_HINT = "data.download=true"  # every real-data task config forwards it


def data_root(root: str | os.PathLike[str]) -> Path:
    """The data root as an absolute path (`~` expanded)."""
    return Path(root).expanduser().absolute()


def missing_files(
    name: str, path: Path, files: str, error: BaseException | None = None
) -> UserError:
    """The one-line error for a data set whose files are not where the loader looked.

    `files` says what belongs at `path`; `error`, when the files could not be
    downloaded, is the reason (reduced to its first line).
    """
    if error is not None:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        return UserError(
            f"{name}: download to {path} failed ({reason}); place {files} there by hand"
        )
    found = "incomplete or corrupt files at" if path.exists() else "files not found at"
    return UserError(
        f"{name}: {found} {path}; rerun with {DOWNLOAD_HINT} where the internet is "
        f"reachable, or place {files} there"
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the progress prints of torchvision and learn2learn loaders."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def open_dataset(
    name: str, path: Path, files: str, download: bool, factory: Callable[[], Any]
) -> Any:
    """Call a torchvision / learn2learn constructor; turn "not found" into `missing_files`.

    torchvision raises RuntimeError for absent or corrupt files, and URLError /
    OSError when a download fails; both become the one-line UserError.
    """
    try:
        with quiet():
            return factory()
    except (RuntimeError, OSError) as error:
        raise missing_files(name, path, files, error if download else None) from None


# ---------------------------------------------------------------------------------------------
# Image tensors: common shape and cache


def to_shape(images: Tensor, channels: int, size: int, chunk: int = 4096) -> Tensor:
    """Convert uint8 images (N, C, H, W) to (N, channels, size, size) uint8.

    RGB becomes gray with the ITU-R 601-2 luma weights (as PIL's "L" mode); gray
    becomes RGB by repetition. Resizing is bilinear with antialiasing, in chunks
    of `chunk` images to bound memory.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}"
        )
    if channels not in (1, 3):
        raise UserError(f"task.options.channels must be 1 or 3, got {channels}")
    out = torch.empty(images.shape[0], channels, size, size, dtype=torch.uint8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].float()
        if x.shape[1] == 3 and channels == 1:
            x = (x * luma).sum(1, keepdim=True)
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        out[start : start + chunk] = x.round().clamp_(0, 255).to(torch.uint8)
    return out


@dataclass
class LabelledImages:
    """One split of a data set: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def cached(path: Path, build: Callable[[], LabelledImages]) -> LabelledImages:
    """Load `path` if it holds a valid cache, else `build()` and save it atomically."""
    if path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            return LabelledImages(saved["images"], saved["labels"])
        except Exception:  # a corrupt cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save({"images": data.images, "labels": data.labels}, tmp)
    os.replace(tmp.name, path)
    return data


# ---------------------------------------------------------------------------------------------
# The torchvision data sets of Multi-CV

Reader = Callable[["TorchvisionSet", Path, bool, bool], LabelledImages]


@dataclass(frozen=True)
class TorchvisionSet:
    """A torchvision classification data set: where it lives and how to read it.

    `folder` is the data set's directory under the root (what the missing-files
    error names); `files` describes what belongs there; `read(spec, root, train,
    download)` returns a split's images as uint8 (N, C, H, W) at the data set's
    native size (GTSRB, whose images vary in size, is read at 32 x 32).
    """

    name: str
    title: str
    classes: int
    folder: str
    files: str
    read: Reader

    def open(self, root: Path, download: bool, factory: Callable[[], Any]) -> Any:
        """Run a torchvision constructor, with this data set's missing-files error."""
        return open_dataset(self.title, root / self.folder, self.files, download, factory)

    def load(
        self,
        root: str | os.PathLike[str],
        train: bool,
        channels: int,
        size: int,
        download: bool = False,
    ) -> LabelledImages:
        """The split at (channels, size, size), from the cache or the original files."""
        base = data_root(root)
        split = "train" if train else "test"
        key = f"{self.name}-{split}-{channels}x{size}x{size}-v{CACHE_VERSION}.pt"

        def build() -> LabelledImages:
            raw = self.read(self, base, train, download)
            if len(raw) == 0:
                raise missing_files(self.title, base / self.folder, self.files)
            if int(raw.labels.min()) < 0 or int(raw.labels.max()) >= self.classes:
                raise UserError(
                    f"{self.title}: labels outside 0..{self.classes - 1} in "
                    f"{base / self.folder}; the files are not this data set's"
                )
            return LabelledImages(to_shape(raw.images, channels, size), raw.labels)

        return cached(base / "leap-cache" / key, build)


def _torchvision_datasets() -> Any:
    import torchvision.datasets

    return torchvision.datasets


def _read_idx(spec: TorchvisionSet, root: Path, train: bool, download: bool) -> LabelledImages:
    """MNIST and FashionMNIST: idx files, read whole into a uint8 tensor by torchvision."""
    cls = getattr(_torchvision_datasets(), spec.folder)  # "MNIST" or "FashionMNIST"
    ds = spec.open(root, download, lambda: cls(str(root), train=train, download=download))
    return LabelledImages(ds.data.unsqueeze(1).contiguous(), ds.targets.long())


def _read_cifar(spec: TorchvisionSet, root: Path, train: bool, download: bool) -> LabelledImages:
    """CIFAR-10 and CIFAR-100: pickled batches of (N, 32, 32, 3) uint8 arrays."""
    cls = getattr(_torchvision_datasets(), "CIFAR10" if spec.classes == 10 else "CIFAR100")
    ds = spec.open(root, download, lambda: cls(str(root), train=train, download=download))
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(images, torch.as_tensor(ds.targets, dtype=torch.long))


def _read_svhn(spec: TorchvisionSet, root: Path, train: bool, download: bool) -> LabelledImages:
    """SVHN: MATLAB files of (N, 3, 32, 32) arrays; torchvision maps label 10 to 0."""
    path = root / spec.folder
    split = "train" if train else "test"
    ds = spec.open(
        root,
        download,
        lambda: _torchvision_datasets().SVHN(str(path), split=split, download=download),
    )
    images = torch.from_numpy(np.ascontiguousarray(ds.data))
    return LabelledImages(images, torch.as_tensor(ds.labels, dtype=torch.long).flatten())


def _read_gtsrb(spec: TorchvisionSet, root: Path, train: bool, download: bool) -> LabelledImages:
    """GTSRB: PPM images of varying size, resized to 32 x 32 while decoding."""
    from PIL import Image

    def resize(image: Image.Image) -> Tensor:
        array = np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    split = "train" if train else "test"
    ds = spec.open(
        root,
        download,
        lambda: _torchvision_datasets().GTSRB(
            str(root), split=split, transform=resize, download=download
        ),
    )
    try:
        samples = [ds[i] for i in range(len(ds))]
    except OSError as error:  # a listed image that is absent or unreadable
        raise missing_files(spec.title, root / spec.folder, spec.files) from error
    if not samples:
        return LabelledImages(
            torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        )
    images, labels = zip(*samples, strict=True)
    return LabelledImages(torch.stack(images), torch.as_tensor(labels, dtype=torch.long))


_IDX = (
    "raw/train-images-idx3-ubyte, raw/train-labels-idx1-ubyte, "
    "raw/t10k-images-idx3-ubyte and raw/t10k-labels-idx1-ubyte"
)

TORCHVISION_SETS: dict[str, TorchvisionSet] = {
    s.name: s
    for s in (
        TorchvisionSet("mnist", "MNIST", 10, "MNIST", _IDX, _read_idx),
        TorchvisionSet("fashion_mnist", "FashionMNIST", 10, "FashionMNIST", _IDX, _read_idx),
        TorchvisionSet(
            "svhn", "SVHN", 10, "SVHN", "train_32x32.mat and test_32x32.mat", _read_svhn
        ),
        TorchvisionSet(
            "cifar10",
            "CIFAR-10",
            10,
            "cifar-10-batches-py",
            "data_batch_1..5, test_batch and batches.meta (cifar-10-python.tar.gz, extracted)",
            _read_cifar,
        ),
        TorchvisionSet(
            "cifar100",
            "CIFAR-100",
            100,
            "cifar-100-python",
            "train, test and meta (cifar-100-python.tar.gz, extracted)",
            _read_cifar,
        ),
        TorchvisionSet(
            "gtsrb",
            "GTSRB",
            43,
            "gtsrb",
            "GTSRB/Training/<class>/*.ppm, GTSRB/Final_Test/Images/*.ppm and GT-final_test.csv",
            _read_gtsrb,
        ),
    )
}

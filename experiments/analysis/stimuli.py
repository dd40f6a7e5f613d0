"""Stimulus sets for the analyses, converted to a model's input shape.

Sets (the `--stimuli` argument of `leap analyze`):

- `glyphs[:N]`: N glyph images (default 64), one drawing each of N characters taken in
  turn from the test alphabets of the synthetic glyph set (tasks/glyphs.py; generated
  offline and cached under data.root).
- `skimage[:N]`: the first N (default all) of scikit-image's bundled natural and texture
  images (astronaut, camera, coffee, ...), center-cropped to a square.
- `neural`: the `images` stored in the neural file.
- a `.npy` / `.npz` file (the array, or the npz's `images`): (N, H, W), (N, C, H, W) or
  (N, H, W, C) with C in {1, 3}; uint8 is scaled to [0, 1], floats are taken as they are.

`to_shape` makes them (N, C, H, W) float32 for the model: bilinear resize with
antialiasing, gray -> RGB by repetition, RGB -> gray by the ITU-R 601 luma weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from leap_convrnn.errors import UserError
from leap_convrnn.optional import require

#: scikit-image's images that ship inside the package (no download).
SKIMAGE_IMAGES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "cell",
    "colorwheel",
    "logo",
    "cat",
)
SETS = ("glyphs[:N]", "skimage[:N]", "neural", "a .npy/.npz path")


@dataclass
class Stimuli:
    """Images (N, C, H, W) float in [0, 1] (before `to_shape`) and their names."""

    name: str
    images: Tensor
    labels: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _count(spec: str, default: int | None) -> int | None:
    _, sep, count = spec.partition(":")
    if not sep:
        return default
    if not count.isdigit() or int(count) < 3:
        raise UserError(f"stimuli {spec!r}: the count must be an integer >= 3")
    return int(count)


def glyph_stimuli(count: int, data_root: str | Path) -> Stimuli:
    """One drawing each of `count` characters, taken in turn from the test alphabets
    (their next drawings once every character has one)."""
    from tasks.glyph_tasks import AlphabetSplit
    from tasks.glyphs import GlyphSpec, load

    spec = GlyphSpec()
    glyphs = load(spec, data_root)
    alphabets = AlphabetSplit(train=35, test=10).indices(spec.alphabets)["test"]
    order = [
        (a, c)
        for c in range(spec.max_characters)
        for a in alphabets
        if c < int(glyphs.characters[a])
    ]
    if count > len(order) * spec.drawers:
        raise UserError(
            f"the glyph test alphabets hold {len(order) * spec.drawers} images, {count} asked"
        )
    images: list[Tensor] = []
    labels: list[str] = []
    for index in range(count):
        drawer, (a, c) = divmod(index, len(order))[0], order[index % len(order)]
        images.append(glyphs.alphabet(a)[c, drawer])
        labels.append(f"alphabet{a}/char{c}/drawer{drawer}")
    return Stimuli(f"glyphs:{count}", torch.stack(images)[:, None], labels)


def skimage_stimuli(count: int | None) -> Stimuli:
    """scikit-image's bundled images, center-cropped square, (N, 3, H, W)."""
    data = require("skimage.data", "the skimage stimulus set")
    names = SKIMAGE_IMAGES[:count] if count else SKIMAGE_IMAGES
    if count and count > len(SKIMAGE_IMAGES):
        raise UserError(f"skimage holds {len(SKIMAGE_IMAGES)} images, {count} were asked for")
    images: list[Tensor] = []
    for name in names:
        raw = np.asarray(getattr(data, name)())
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=2)
        raw = raw[..., :3]
        side = min(raw.shape[:2])
        top, left = (raw.shape[0] - side) // 2, (raw.shape[1] - side) // 2
        crop = torch.from_numpy(_unit(raw[top : top + side, left : left + side]))
        image = crop.permute(2, 0, 1)[None]
        images.append(F.interpolate(image, size=(128, 128), mode="bilinear", antialias=True)[0])
    return Stimuli(f"skimage:{len(names)}", torch.stack(images), list(names))


def _unit(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == bool:
        return array.astype(np.float32)
    return array.astype(np.float32)


def array_stimuli(array: np.ndarray, name: str) -> Stimuli:
    """Stimuli from an array (N, H, W), (N, C, H, W) or (N, H, W, C), C in {1, 3}."""
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise UserError(f"stimuli {name!r} are not numeric ({array.dtype})")
    x = _unit(np.asarray(array))
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(
            f"stimuli {name!r} must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in "
            f"{{1, 3}}, got shape {array.shape}"
        )
    if x.shape[0] < 3:
        raise UserError(f"stimuli {name!r} hold {x.shape[0]} images; RSA needs at least 3")
    if not np.isfinite(x).all():
        raise UserError(f"stimuli {name!r} hold NaN or infinite pixels")
    return Stimuli(name, torch.from_numpy(np.ascontiguousarray(x)), [str(i) for i in range(len(x))])


def file_stimuli(path: Path) -> Stimuli:
    if not path.is_file():
        raise UserError(f"stimulus file {str(path)!r} does not exist")
    try:
        blob = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"stimulus file {str(path)!r} is unreadable ({error})") from None
    if isinstance(blob, np.ndarray):
        return array_stimuli(blob, str(path))
    with blob:
        if "images" not in blob.files:
            raise UserError(
                f"stimulus file {str(path)!r} has no 'images' array "
                f"(keys: {', '.join(blob.files) or 'none'})"
            )
        return array_stimuli(blob["images"], str(path))


def load_stimuli(
    spec: str, data_root: str | Path, neural_images: np.ndarray | None = None
) -> Stimuli:
    """The stimulus set `spec` (see the module docstring)."""
    kind = spec.partition(":")[0]
    if kind == "glyphs":
        count = _count(spec, 64)
        assert count is not None
        return glyph_stimuli(count, data_root)
    if kind == "skimage":
        return skimage_stimuli(_count(spec, None))
    if spec == "neural":
        if neural_images is None:
            raise UserError("stimuli=neural needs a neural file that holds 'images'")
        return array_stimuli(neural_images, "neural")
    path = Path(spec).expanduser()
    if path.suffix in (".npy", ".npz"):
        return file_stimuli(path)
    raise UserError(f"unknown stimulus set {spec!r}; accepted: {', '.join(SETS)}")


def to_shape(images: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """`images` (N, C, H, W) as (N, *shape) float32: channels converted, then resized."""
    channels, height, width = shape
    x = images.float()
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x * weights).sum(1, keepdim=True)
        else:
            raise UserError(
                f"stimuli with {x.shape[1]} channels cannot be shown to a model that takes "
                f"{channels}"
            )
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    return x.contiguous()

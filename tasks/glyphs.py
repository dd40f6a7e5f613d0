"""Synthetic glyph alphabets: an Omniglot-like data set made procedurally, offline.

Each alphabet has a stroke style of its own (how many strokes a character has,
how curved and how long they are, the pen width, whether points snap to a grid,
whether characters are mirror-symmetric, whether they carry dots or loops). A
character is a set of strokes drawn from its alphabet's style; each of its
"drawers" renders it with a jittered affine transform, per-point noise and pen
width, like the 20 people who drew each Omniglot character. Images are 28x28
grayscale, stroke = 1, background = 0, and the whole set is deterministic in
its seed, generated in seconds and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from leap_convrnn.errors import UserError

FORMAT_VERSION = 1
CURVE_POINTS = 10  # samples along each stroke
DENSITY = 6  # pen positions per curve segment when rendering


@dataclass(frozen=True)
class GlyphSpec:
    """What to generate; every field changes the data set (and its cache key)."""

    alphabets: int = 50
    min_characters: int = 20
    max_characters: int = 40
    drawers: int = 20
    image_size: int = 28
    seed: int = 0

    def validate(self) -> None:
        if self.alphabets < 1:
            raise UserError(f"glyph alphabets must be >= 1, got {self.alphabets}")
        if not 1 <= self.min_characters <= self.max_characters:
            raise UserError(
                "glyph characters need 1 <= min_characters <= max_characters, got "
                f"{self.min_characters} and {self.max_characters}"
            )
        if self.drawers < 2:
            raise UserError(f"glyph drawers must be >= 2, got {self.drawers}")
        if self.image_size < 8:
            raise UserError(f"glyph image_size must be >= 8, got {self.image_size}")

    def key(self) -> str:
        text = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class GlyphSet:
    """All images, (alphabets, max_characters, drawers, H, W) uint8, and per-alphabet sizes."""

    images: Tensor
    characters: Tensor  # (alphabets,) number of characters of each alphabet

    def alphabet(self, index: int) -> Tensor:
        """The images of one alphabet, (characters, drawers, H, W) float in [0, 1]."""
        return self.images[index, : int(self.characters[index])].float().div_(255.0)


@dataclass(frozen=True)
class _Style:
    strokes: tuple[int, int]
    control_points: tuple[int, int]
    curviness: float
    reach: float
    width: float
    grid: int
    symmetric: bool
    dot_probability: float
    loop_probability: float


def _style(rng: np.random.Generator) -> _Style:
    low = int(rng.integers(1, 3))
    return _Style(
        strokes=(low, low + int(rng.integers(1, 3))),
        control_points=(2, int(rng.integers(3, 5))),
        curviness=float(rng.uniform(0.0, 1.0)),
        reach=float(rng.uniform(0.35, 0.7)),
        width=float(rng.uniform(1.1, 2.2)),
        grid=int(rng.choice([0, 0, 3, 4])),
        symmetric=bool(rng.random() < 0.25),
        dot_probability=float(rng.uniform(0.0, 0.4)),
        loop_probability=float(rng.uniform(0.0, 0.35)),
    )


def _bezier(points: np.ndarray, n: int) -> np.ndarray:
    """Sample a Bezier curve with control `points` (k, 2) at `n` parameter values."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    k = len(points) - 1
    coeffs = [math.comb(k, j) * (1 - t) ** (k - j) * t**j for j in range(k + 1)]
    return sum(c * p for c, p in zip(coeffs, points, strict=True))


def _character(rng: np.random.Generator, style: _Style) -> list[np.ndarray]:
    """Strokes of one character, each (CURVE_POINTS, 2) in the unit square."""
    strokes: list[np.ndarray] = []
    for _ in range(int(rng.integers(style.strokes[0], style.strokes[1] + 1))):
        if rng.random() < style.loop_probability:
            centre = rng.uniform(0.3, 0.7, size=2)
            radius = rng.uniform(0.08, 0.2)
            phase = rng.uniform(0, 2 * np.pi)
            angles = phase + np.linspace(0, rng.uniform(1.2, 2.0) * np.pi, CURVE_POINTS)
            stroke = centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
        else:
            n = int(rng.integers(style.control_points[0], style.control_points[1] + 1))
            start = rng.uniform(0.15, 0.85, size=2)
            steps = rng.normal(0.0, style.reach * 0.5, size=(n - 1, 2))
            points = np.clip(start + np.cumsum(np.vstack([0 * start, steps]), 0), 0.1, 0.9)
            if style.grid:
                points = np.round(points * style.grid) / style.grid
                points = np.clip(points, 0.12, 0.88)
            if rng.random() < style.curviness and n >= 3:
                stroke = _bezier(points, CURVE_POINTS)
            else:
                segment = np.linspace(0, n - 1, CURVE_POINTS)
                low = np.minimum(np.floor(segment).astype(int), n - 2)
                frac = (segment - low)[:, None]
                stroke = points[low] * (1 - frac) + points[low + 1] * frac
        strokes.append(stroke)
        if style.symmetric:
            strokes.append(stroke * np.array([-1.0, 1.0]) + np.array([1.0, 0.0]))
    if rng.random() < style.dot_probability:
        dot = rng.uniform(0.2, 0.8, size=2)
        strokes.append(np.repeat(dot[None], CURVE_POINTS, 0))
    return strokes


def _render(points: Tensor, widths: Tensor, size: int) -> Tensor:
    """Anti-aliased pen stamps along densely sampled strokes.

    points: (B, P, 2) pen positions in pixel units, NaN for padding; consecutive
    positions lie well under a pixel apart. widths: (B,) pen widths in pixels.
    Each position stamps a disc of its image's pen width with a one-pixel soft
    edge; a pixel keeps the darkest stamp. Returns (B, size, size) in [0, 1].
    """
    batch = points.shape[0]
    radius = math.ceil(float(widths.max()) / 2 + 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    window = torch.stack([dx.flatten(), dy.flatten()], -1)  # (W, 2)
    valid = ~points.isnan().any(-1)  # (B, P)
    pixel = points.floor()[:, :, None, :] + window  # (B, P, W, 2)
    distance = (pixel + 0.5 - points[:, :, None, :]).norm(dim=-1)
    value = (widths[:, None, None] / 2 + 0.5 - distance).clamp(0, 1)
    inside = valid[:, :, None] & (pixel >= 0).all(-1) & (pixel < size).all(-1) & (value > 0)
    image_index = torch.arange(batch)[:, None, None].expand_as(inside)
    flat = (image_index * size * size + pixel[..., 1] * size + pixel[..., 0])[inside].long()
    out = torch.zeros(batch * size * size)
    out.scatter_reduce_(0, flat, value[inside], reduce="amax")
    return out.reshape(batch, size, size)


def _drawings(
    rng: np.random.Generator, strokes: list[np.ndarray], drawers: int, size: int, width: float
) -> tuple[Tensor, Tensor]:
    """Jittered renderings' pen positions (drawers, P, 2) and pen widths (drawers,)."""
    points = np.stack(strokes)  # (strokes, CURVE_POINTS, 2)
    centred = points - 0.5
    angle = rng.normal(0, 0.12, size=drawers)
    scale = rng.uniform(0.85, 1.1, size=(drawers, 2))
    shear = rng.normal(0, 0.08, size=drawers)
    shift = rng.normal(0, 0.04, size=(drawers, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shear_m = np.stack(
        [
            np.stack([np.ones(drawers), shear], -1),
            np.stack([np.zeros(drawers), np.ones(drawers)], -1),
        ],
        -2,
    )
    transform = rot @ shear_m * scale[:, None, :]
    warped = np.einsum("dij,skj->dski", transform, centred) + 0.5 + shift[:, None, None, :]
    # Per-stroke wobble, smooth along the stroke: a drawer's hand is not a plotter.
    wobble = rng.normal(0, 0.015, size=(*warped.shape[:2], 3, 2))
    t = np.linspace(0, 1, CURVE_POINTS)
    basis = np.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], 0)
    warped = warped + np.einsum("dsbc,bk->dskc", wobble, basis)
    pixels = torch.from_numpy(warped * size).float()  # (drawers, strokes, CURVE_POINTS, 2)
    # Densify: DENSITY pen positions per curve segment, so stamps overlap.
    frac = torch.linspace(0, 1, DENSITY + 1)[:-1][:, None]
    start, stop = pixels[:, :, :-1, None, :], pixels[:, :, 1:, None, :]
    dense = (start * (1 - frac) + stop * frac).flatten(2, 3)
    dense = torch.cat([dense, pixels[:, :, -1:]], 2).flatten(1, 2)
    widths = width * rng.uniform(0.8, 1.25, size=drawers) * size / 28
    return dense, torch.from_numpy(widths).float()


def generate(spec: GlyphSpec) -> GlyphSet:
    """Generate the glyph alphabets described by `spec` (deterministic in `spec.seed`)."""
    spec.validate()
    root = np.random.default_rng(spec.seed)
    counts = root.integers(spec.min_characters, spec.max_characters + 1, size=spec.alphabets)
    images = torch.zeros(
        spec.alphabets,
        spec.max_characters,
        spec.drawers,
        spec.image_size,
        spec.image_size,
        dtype=torch.uint8,
    )
    seeds = root.integers(0, 2**63, size=spec.alphabets)
    bar = tqdm(
        seeds, desc="glyphs: building the cache (first run only)", unit="alphabet", disable=None
    )
    for a, seed in enumerate(bar):
        rng = np.random.default_rng(int(seed))
        style = _style(rng)
        batch_points: list[Tensor] = []
        batch_widths: list[Tensor] = []
        for _ in range(int(counts[a])):
            points, widths = _drawings(
                rng, _character(rng, style), spec.drawers, spec.image_size, style.width
            )
            batch_points.append(points)
            batch_widths.append(widths)
        longest = max(p.shape[1] for p in batch_points)
        padded = torch.full((len(batch_points), spec.drawers, longest, 2), float("nan"))
        for c, points in enumerate(batch_points):
            padded[c, :, : points.shape[1]] = points
        rendered = _render(padded.flatten(0, 1), torch.cat(batch_widths), spec.image_size).reshape(
            len(batch_points), spec.drawers, spec.image_size, spec.image_size
        )
        images[a, : int(counts[a])] = (rendered * 255).round().to(torch.uint8)
    return GlyphSet(images=images, characters=torch.from_numpy(counts).long())


def load(spec: GlyphSpec, root: str | os.PathLike[str]) -> GlyphSet:
    """Load the glyph set for `spec` from the cache under `root`, generating it if absent.

    The cache file is written atomically (temporary file, then rename).
    """
    spec.validate()
    path = Path(root).expanduser() / "glyphs" / f"glyphs-{spec.key()}.pt"
    if path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            return GlyphSet(images=saved["images"], characters=saved["characters"])
        except Exception:  # a corrupt cache is regenerated, never trusted
            path.unlink(missing_ok=True)
    glyphs = generate(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save({"images": glyphs.images, "characters": glyphs.characters}, tmp)
    os.replace(tmp.name, path)
    return glyphs

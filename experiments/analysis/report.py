"""Figures and logs of an analysis: layer x time-step maps as PNG files, W&B images and
tables, and plain-text tables on stdout.

Every map is a grid with one row per layer (feedforward order, top to bottom) and one
column per model time step; NaN cells (no defined value, e.g. a layer the image has not
reached yet) are left blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.tracking import Tracker


def heatmap(
    grid: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    path: Path,
    label: str,
    vmin: float | None = None,
    vmax: float | None = None,
    xlabel: str = "time step",
) -> Path:
    """Write `grid` (rows x columns) as an annotated heatmap PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 1.2 + 0.35 * len(rows)
    width = 2.5 + 0.55 * max(len(columns), 3)
    fig, ax = plt.subplots(figsize=(width, height))
    masked = np.ma.masked_invalid(grid)
    image = ax.imshow(masked, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), labels=list(columns))
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    low, high = image.get_clim()
    if grid.size <= 200:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isfinite(grid[i, j]):
                    dark = grid[i, j] < low + 0.5 * (high - low)
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_grid(grid: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str) -> str:
    """`grid` as a Markdown table (rows: layers, columns: time steps)."""
    lines = [f"{title}", "", "| layer | " + " | ".join(columns) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    for name, row in zip(rows, grid, strict=True):
        cells = ["" if not np.isfinite(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log_map(
    tracker: Tracker | None,
    key: str,
    grid: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    directory: Path,
    label: str,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Write a map's PNG under `directory` and log it (image + table) to `tracker`."""
    path = heatmap(
        grid, rows, columns, title, directory / f"{key.replace('/', '_')}.png", label, vmin, vmax
    )
    if tracker is not None:
        tracker.image(key, path, caption=title)
        tracker.table(
            f"{key}_table",
            ["layer", *columns],
            [[name, *(float(v) for v in row)] for name, row in zip(rows, grid, strict=True)],
        )
    return path

"""Initialization checkpoints: written atomically, checked against the model on load."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from experiments.errors import UserError

FORMAT = "leap-convrnn/initialization"
VERSION = 1


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_initialization(
    path: Path, model: nn.Module, architecture: dict[str, Any], metadata: dict[str, Any]
) -> None:
    """Save a model's parameters and buffers as an initialization.

    `architecture` (model name, options, input shape, outputs) is stored so that a
    checkpoint loaded into a different network fails with a message naming both.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_save(
        {"format": FORMAT, "version": VERSION, "architecture": architecture,
         "state_dict": state, "metadata": metadata},
        path,
    )


def read_initialization(path: str | Path) -> dict[str, Any]:
    """Read an initialization checkpoint; a one-line UserError if it is missing or unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"initialization checkpoint {str(path)!r} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"initialization checkpoint {str(path)!r} is unreadable ({type(error).__name__}); "
            "it may be truncated"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not a leap-convrnn initialization checkpoint")
    return blob


def load_initialization(path: str | Path, model: nn.Module, architecture: dict[str, Any]) -> None:
    """Load the initialization at `path` into `model`, which must have `architecture`."""
    blob = read_initialization(path)
    saved = blob["architecture"]
    if saved != architecture:
        raise UserError(
            f"checkpoint {str(path)!r} holds an initialization for {saved}, "
            f"but the model is {architecture}"
        )
    model.load_state_dict(blob["state_dict"])

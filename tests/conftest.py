"""Shared test set-up: an isolated data root, offline W&B, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Small glyph sets keep end-to-end tests fast: 12 alphabets, 6 for meta-training, 3 for test.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]
"""Devices to parametrize a test over: the CPU, and CUDA (marked `gpu`) where present."""

SMALL_GLYPHS = [
    "task.options.alphabets=12",
    "task.options.train_alphabets=6",
    "task.options.test_alphabets=3",
]


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the data root at a session temp dir and keep W&B offline and quiet."""
    root = tmp_path_factory.mktemp("data")
    os.environ["LEAP_DATA_ROOT"] = str(root)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    return root

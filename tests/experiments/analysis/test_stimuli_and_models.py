"""Stimulus sets and model loading for `leap analyze` (stimuli.py, extract.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import models
from experiments.analysis.extract import load_model, read_features, share_weights
from experiments.analysis.stimuli import array_stimuli, load_stimuli, to_shape
from experiments.checkpoint import save_initialization
from leap_convrnn.errors import UserError
from models.convrnn import ConvRNN


def test_array_layouts_and_scaling() -> None:
    rgb = np.zeros((4, 9, 7, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    s = array_stimuli(rgb, "x")
    assert s.images.shape == (4, 3, 9, 7)
    assert float(s.images[:, 0].min()) == 1.0 and float(s.images[:, 1].max()) == 0.0
    assert array_stimuli(np.zeros((5, 8, 8)), "x").images.shape == (5, 1, 8, 8)
    assert array_stimuli(np.zeros((5, 3, 8, 8)), "x").images.shape == (5, 3, 8, 8)
    with pytest.raises(UserError, match=r"must be \(N, H, W\)"):
        array_stimuli(np.zeros((5, 2, 8, 8)), "x")
    with pytest.raises(UserError, match="at least 3"):
        array_stimuli(np.zeros((2, 8, 8)), "x")


def test_to_shape_converts_channels_and_size() -> None:
    red = torch.zeros(2, 3, 8, 8)
    red[:, 0] = 1.0
    gray = to_shape(red, (1, 4, 4))
    assert gray.shape == (2, 1, 4, 4)
    torch.testing.assert_close(gray, torch.full((2, 1, 4, 4), 0.299))
    assert to_shape(gray, (3, 4, 4)).shape == (2, 3, 4, 4)
    with pytest.raises(UserError, match="cannot be shown"):
        to_shape(torch.zeros(2, 3, 4, 4), (4, 4, 4))


def test_skimage_set_and_files(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    s = load_stimuli("skimage:3", tmp_path)
    assert s.images.shape == (3, 3, 128, 128) and s.labels == ["astronaut", "camera", "coffee"]
    assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0
    np.savez(tmp_path / "s.npz", images=np.random.default_rng(0).random((6, 5, 5)))
    assert len(load_stimuli(str(tmp_path / "s.npz"), tmp_path)) == 6
    np.savez(tmp_path / "t.npz", pictures=np.zeros((6, 5, 5)))
    with pytest.raises(UserError, match="has no 'images' array"):
        load_stimuli(str(tmp_path / "t.npz"), tmp_path)
    with pytest.raises(UserError, match="count must be an integer >= 3"):
        load_stimuli("skimage:two", tmp_path)


def test_checkpoint_names_its_model_and_weights_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.build("convrnn_glyph", (1, 16, 16), 5, width=0.25)
    arch = {
        "model": "convrnn_glyph",
        "options": {"width": 0.25},
        "input_shape": [1, 16, 16],
        "num_outputs": 5,
    }
    save_initialization(tmp_path / "init.pt", model, arch, {})
    loaded = load_model(None, str(tmp_path / "init.pt"), (3, 64, 64))
    assert loaded.input_shape == (1, 16, 16) and loaded.num_outputs == 5
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    with pytest.raises(UserError, match="holds a 'convrnn_glyph', not a 'conv4'"):
        load_model("conv4", str(tmp_path / "init.pt"), (1, 16, 16))


def test_shared_weights_make_the_feedforward_twin_of_the_same_network() -> None:
    torch.manual_seed(0)
    a = models.build("convrnn_glyph", (1, 16, 16), 5, width=0.25)
    b = models.build("convrnn_glyph_ff", (1, 16, 16), 5, width=0.25)
    assert share_weights(a, b) == len(b.state_dict())
    x = torch.rand(6, 1, 16, 16)
    fa = read_features(a, x, ["conv1", "conv4"], [0], None)
    fb = read_features(b, x, ["conv1", "conv4"], [0], None)
    torch.testing.assert_close(fa[("conv1", 0)], fb[("conv1", 0)])
    assert isinstance(a, ConvRNN)
    a.set_recurrence(False)  # without cells and feedback the ConvRNN is its twin
    torch.testing.assert_close(
        read_features(a, x, ["conv4"], [0], None)[("conv4", 0)], fb[("conv4", 0)]
    )
    wide = models.build("convrnn_glyph_ff", (1, 16, 16), 5)
    with pytest.raises(UserError, match="differ in shape"):
        share_weights(a, wide)

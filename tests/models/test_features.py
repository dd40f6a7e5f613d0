"""Per-layer, per-step feature extraction (models/features.py): the features are the very
tensors the network computes, checked against its own forward pass."""

from __future__ import annotations

import pytest
import torch

import models
from leap_convrnn.errors import UserError
from models.convrnn import ConvRNN
from models.features import extract_features, feature_layers, feature_steps


def _glyph_model() -> ConvRNN:
    torch.manual_seed(0)
    model = models.build("convrnn_glyph", (1, 16, 16), 5, width=0.25).eval()
    assert isinstance(model, ConvRNN)
    return model


def test_convrnn_last_layer_last_step_gives_the_logits_full_unroll() -> None:
    model = _glyph_model()
    x = torch.rand(6, 1, 16, 16)
    feats = extract_features(model, x)
    assert set(feats) == {(n, t) for n in feature_layers(model) for t in range(model.times)}
    channels = model.graph.layers[-1].channels
    top = feats[("conv4", model.times - 1)].reshape(6, channels, *model.out_sizes[-1])
    with torch.no_grad():
        torch.testing.assert_close(model.head(top), model(x), rtol=1e-5, atol=1e-5)


def test_convrnn_biological_readout_reads_the_top_layer_one_step_earlier() -> None:
    torch.manual_seed(0)
    model = models.build("rgc_shallow", (3, 32, 32), 4, width=0.125, times=8).eval()
    assert isinstance(model, ConvRNN)
    x = torch.rand(3, 3, 32, 32)
    name = model.graph.layers[-1].name
    feats = extract_features(model, x, layers=[name], steps=[model.times - 2])
    channels = model.graph.layers[-1].channels
    top = feats[(name, model.times - 2)].reshape(3, channels, *model.out_sizes[-1])
    with torch.no_grad():
        torch.testing.assert_close(model.head(top), model(x), rtol=1e-5, atol=1e-5)


def test_recurrence_changes_features_over_time_and_feedforward_twin_does_not() -> None:
    model = _glyph_model()
    x = torch.rand(4, 1, 16, 16)
    feats = extract_features(model, x, layers=["conv4"])
    assert not torch.allclose(feats[("conv4", 0)], feats[("conv4", 2)])
    model.set_recurrence(False)
    flat = extract_features(model, x, layers=["conv4"])
    torch.testing.assert_close(flat[("conv4", 0)], flat[("conv4", 2)])
    twin = models.build("convrnn_glyph_ff", (1, 16, 16), 5, width=0.25)
    assert feature_steps(twin) == 1


def test_chunks_and_pooling() -> None:
    model = _glyph_model()
    x = torch.rand(7, 1, 16, 16)
    whole = extract_features(model, x, steps=[1])
    chunked = extract_features(model, x, steps=[1], batch_size=3)
    for key in whole:
        torch.testing.assert_close(whole[key], chunked[key])
    pooled = extract_features(model, x, layers=["conv1"], steps=[0], pool=1)
    channels = model.graph.layers[0].channels
    assert pooled[("conv1", 0)].shape == (7, channels)
    torch.testing.assert_close(
        pooled[("conv1", 0)],
        whole[("conv1", 1)].reshape(7, channels, -1).mean(-1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_conv4_blocks_feed_the_classifier() -> None:
    torch.manual_seed(0)
    model = models.build("conv4", (1, 16, 16), 3, width=8).eval()
    assert isinstance(model.classifier, torch.nn.Linear)
    x = torch.rand(5, 1, 16, 16)
    feats = extract_features(model, x)
    assert list(feats) == [(f"block{i}", 0) for i in range(1, 5)]
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(feats[("block4", 0)]), model(x))


def test_bad_selection_is_a_user_error() -> None:
    model = _glyph_model()
    x = torch.rand(3, 1, 16, 16)
    with pytest.raises(UserError, match="unknown layer 'conv9'; accepted: conv1"):
        extract_features(model, x, layers=["conv9"])
    with pytest.raises(UserError, match=r"time step 3 is out of range; accepted: 0..2"):
        extract_features(model, x, steps=[3])
    with pytest.raises(UserError, match="cannot be read out"):
        feature_layers(torch.nn.Linear(2, 2))

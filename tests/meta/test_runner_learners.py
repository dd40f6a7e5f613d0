"""Every registered meta-learner through the real runner: compose the config as the CLI
does, meta-train for a tiny budget, evaluate the saved initialization."""

from __future__ import annotations

import math

import pytest
import torch

import meta
from experiments.checkpoint import read_initialization
from experiments.config import compose
from experiments.evaluate import evaluate
from experiments.runner import train
from tests.conftest import SMALL_GLYPHS

TINY = [
    "experiment=glyphs_demo",
    "debug=tiny",
    *SMALL_GLYPHS,
    "tracker=none",
    "model.options.width=8",
]


@pytest.mark.parametrize("name", meta.META_LEARNERS.names())
def test_learner_trains_and_evaluates_through_the_runner(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose([f"meta={name}", *TINY, "meta.clip_grad_norm=1.0"])
    assert cfg.meta.name == name
    summary = train(cfg)
    assert math.isfinite(summary["task/auc"])
    if name in ("leap", "reptile", "maml", "fomaml"):
        assert summary["meta/grad_norm"] > 0
    blob = read_initialization(summary["checkpoint"])
    assert all(torch.isfinite(v.float()).all() for v in blob["state_dict"].values())
    [result] = [r for r in evaluate(cfg) if r.method == name]
    assert len(result.auc) == 1 and math.isfinite(result.auc[0])

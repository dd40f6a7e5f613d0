"""Every experiment config runs end to end for a tiny budget.

The vision experiments on real data sets are run on fake files by
tests/tasks/test_experiment_configs.py, the Atari experiments by
tests/experiments/test_atari_task.py; this module runs the others and checks that no
experiment config is left without a tiny-budget run.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments.config import CONF_DIR, compose
from experiments.evaluate import evaluate
from experiments.runner import train
from tests.conftest import SMALL_GLYPHS
from tests.experiments.test_atari_task import EXPERIMENTS as ATARI
from tests.tasks.test_experiment_configs import EXPERIMENTS as RUN_ON_FAKE_DATA

TINY = ["debug=tiny", "tracker=none"]
EXPERIMENTS: dict[str, list[str]] = {
    "glyphs_demo": [*SMALL_GLYPHS, "model.options.width=8"],
    "glyphs_leap": [*SMALL_GLYPHS, "model.options.width=8"],
    "glyphs_demo_convrnn": [*SMALL_GLYPHS, "++model.options.width=0.25"],
    "suite_glyphs": [*SMALL_GLYPHS, "model.options.width=8"],
    # the median ConvRNN at 64x64, 1/16 of its width, 3 steps of the `full` unrolling
    "rgc_intermediate_leap": [
        "task.options.glyph_alphabets=2",
        "task.options.test_examples=20",
        "++model.options.width=0.0625",
        "++model.options.unroll=full",
        "++model.options.times=3",
        "++model.options.image_off=null",
    ],
}


def test_every_experiment_config_has_a_tiny_run():
    configs = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert configs == set(EXPERIMENTS) | set(RUN_ON_FAKE_DATA) | set(ATARI)


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_runs_end_to_end_for_a_tiny_budget(experiment, tmp_path: Path):
    cfg = compose(
        [f"experiment={experiment}", *TINY, *EXPERIMENTS[experiment], f"out_dir={tmp_path}"]
    )
    summary = train(cfg)
    assert Path(summary["checkpoint"]).is_file()
    assert math.isfinite(summary["task/auc"])
    results = evaluate(cfg)
    assert {r.method for r in results} == {cfg.meta.name, *cfg.eval.baselines}
    for r in results:
        assert all(math.isfinite(a) for a in r.auc)
        assert all(0 <= a <= 1 for a in r.held_out["accuracy"])

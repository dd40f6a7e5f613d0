"""Each method keeps its own settings whatever the experiment: an experiment's `meta:`
block sets the budget for every method and method-owned keys for its own method only;
`methods.NAME` blocks set a swapped-in method's values; the command line wins."""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from experiments.config import CONF_DIR, compose
from experiments.runs import settings
from leap_convrnn.errors import UserError

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF_DIR / "meta").glob("*.yaml"))
BUDGET = ("meta_steps", "meta_batch_size", "inner_steps", "batch_size")


def load(path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))  # type: ignore[return-value]


def test_a_swapped_method_keeps_its_tuned_optimizer_and_learning_rate():
    cfg = compose(["experiment=glyphs_demo", "meta=fomaml"])
    own = load(CONF_DIR / "meta" / "fomaml.yaml")
    assert (cfg.meta.meta_optimizer, cfg.meta.meta_lr) == (own["meta_optimizer"], own["meta_lr"])
    assert cfg.meta.meta_lr != load(CONF_DIR / "experiment" / "glyphs_demo.yaml")["meta"]["meta_lr"]
    assert cfg.meta.options == {"max_steps": None}
    assert (cfg.meta.meta_steps, cfg.meta.inner_steps) == (100, 50)  # the experiment's budget


def test_the_experiments_own_method_keeps_the_experiments_values():
    cfg = compose(["experiment=multicv_leap"])
    assert (cfg.meta.meta_optimizer, cfg.meta.meta_lr) == ("adam", 0.01)
    assert cfg.meta.options == {"metric": "energy"}
    swapped = compose(["experiment=multicv_leap", "meta=reptile"])
    assert (swapped.meta.meta_optimizer, swapped.meta.meta_lr, swapped.meta.options) == (
        "sgd",
        0.1,
        {},
    )


def test_methods_blocks_set_a_methods_values_and_the_command_line_wins():
    cfg = compose(["experiment=glyphs_leap", "meta=maml"])
    assert (cfg.meta.meta_optimizer, cfg.meta.meta_lr, cfg.meta.inner_steps) == ("sgd", 0.5, 5)
    cfg = compose(
        ["experiment=glyphs_leap", "meta=maml", "meta.meta_lr=0.25", "meta.inner_steps=7"]
    )
    assert (cfg.meta.meta_lr, cfg.meta.inner_steps) == (0.25, 7)
    cfg = compose(["experiment=glyphs_demo", "meta.options.metric=energy"])
    assert cfg.meta.options["metric"] == "energy" and cfg.meta.options["stabilizer"] is True


def test_a_methods_block_with_an_unknown_key_is_a_user_error():
    with pytest.raises(UserError, match=r"methods.leap.meta_rl is not a meta setting \(did you"):
        compose(["+methods.leap.meta_rl=0.5"])


@pytest.mark.parametrize(("experiment", "method"), list(itertools.product(EXPERIMENTS, METHODS)))
def test_every_experiment_and_method_compose_to_the_methods_settings(experiment, method):
    try:
        cfg = compose([f"experiment={experiment}", f"meta={method}"])
    except UserError as error:  # a pair the method cannot run (e.g. its inner optimizer)
        pytest.skip(str(error))
    spec = load(CONF_DIR / "experiment" / f"{experiment}.yaml")
    parents = [d for d in spec["defaults"] if isinstance(d, str) and d != "_self_"]
    for parent in parents:  # an experiment that extends another one
        base = load(CONF_DIR / "experiment" / f"{parent}.yaml")
        spec = {
            "defaults": base["defaults"],
            "meta": {**base.get("meta", {}), **spec.get("meta", {})},
            "methods": {**base.get("methods", {}), **spec.get("methods", {})},
        }
    own = next(
        v for d in spec["defaults"] if isinstance(d, dict) for k, v in d.items() if "meta" in k
    )
    block = spec.get("methods", {}).get(method, {})
    expected = {k: v for k, v in load(CONF_DIR / "meta" / f"{method}.yaml").items() if k != "name"}
    if method == own:
        expected.update({k: v for k, v in spec.get("meta", {}).items() if k in expected})
    expected.update(block)
    for key, value in expected.items():
        assert getattr(cfg.meta, key) == value, (experiment, method, key)
    for key in BUDGET:  # the experiment's budget, unless the method's block says otherwise
        if key in spec.get("meta", {}) and key not in block:
            assert getattr(cfg.meta, key) == spec["meta"][key], (experiment, method, key)
    # what `leap compare` reports as the run's settings is what the run used
    recorded = settings(
        type("R", (), {"config": OmegaConf.to_container(OmegaConf.structured(cfg))})()
    )
    assert recorded["meta.meta_lr"] == str(cfg.meta.meta_lr)
    assert recorded["meta.meta_optimizer"] == f'"{cfg.meta.meta_optimizer}"'

"""`leap sweep-config`: a W&B sweep YAML from a search space, and the command line a
`wandb agent` makes of it (W&B's own `${args_no_hyphens}` formatting) composing to the
sampled values."""

from __future__ import annotations

import random

import pytest
import yaml

from experiments.cli import build_parser, main
from experiments.config import compose
from experiments.search import load_space
from experiments.wandb_sweep import agent_command, sweep_config
from leap_convrnn.errors import UserError
from tests.experiments.test_search import TINY


def sample(parameter: dict, rng: random.Random):
    """A value as the sweep server would send it for `parameter`."""
    if "values" in parameter:
        return rng.choice(parameter["values"])
    low, high = parameter["min"], parameter["max"]
    if parameter["distribution"] in ("int_uniform", "q_log_uniform_values"):
        return rng.randint(low, high)
    return rng.uniform(low, high)


def test_cli_prints_a_sweep_yaml_whose_command_runs_leap_train(capsys):
    assert main(["sweep-config", "--project", "me/p", "debug=tiny"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    space = load_space("convrnn_cell")
    assert config["method"] == "bayes" and config["project"] == "me/p"
    assert config["metric"] == {"name": "task/auc", "goal": "minimize"}
    assert set(config["parameters"]) == {p.key for p in space.params}
    assert config["parameters"]["model.options.tau_kernel"] == {"values": [1, 3, 5, 7]}
    assert config["command"][:2] == ["leap", "train"]
    assert config["command"][-1] == "${args_no_hyphens}"
    assert "debug=tiny" in config["command"] and "model.name=convrnn_glyph" in config["command"]


def lookup(cfg: object, key: str) -> object:
    """The value at a dotted `key` of a composed config (attributes, then mappings)."""
    value = cfg
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize("seed", range(5))
def test_the_agents_command_line_composes_to_the_sampled_values(seed):
    config = sweep_config(load_space("convrnn_cell"), TINY)
    rng = random.Random(seed)
    values = {key: sample(p, rng) for key, p in config["parameters"].items()}
    command = agent_command(config, values)
    assert command[-len(values) :] == [f"{k}={v}" for k, v in values.items()]
    args = build_parser().parse_args(command[1:])
    cfg = compose(args.overrides)
    for key, value in values.items():
        expected = value.strip("'") if isinstance(value, str) else value
        assert lookup(cfg, key) == expected, key


@pytest.mark.slow
def test_an_agents_command_line_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = sweep_config(load_space("convrnn_cell"), [*TINY, "tracker=none"])
    values = {key: sample(p, random.Random(0)) for key, p in config["parameters"].items()}
    assert main(agent_command(config, values)[1:]) == 0


def test_bad_sweep_options_are_one_line(capsys):
    assert main(["sweep-config", "--method", "hyperband"]) == 2
    assert "--method 'hyperband' is not accepted; accepted: bayes, random, grid" in (
        capsys.readouterr().err
    )
    assert main(["sweep-config", "meta.inner_stps=3"]) == 2
    assert "unknown config key 'meta.inner_stps'" in capsys.readouterr().err
    with pytest.raises(UserError, match="grid needs finite values"):
        space = load_space("convrnn_cell")
        from experiments.search import Param

        sweep_config(
            type(space)(name="x", params=(Param("meta.meta_lr", low=0.1, high=1.0),)),
            method="grid",
        )

"""`leap sweep-config`: a W&B Sweeps configuration generated from a `leap` search space.

The same search space files as `leap search` (`experiments/conf/sweep/*.yaml`) become a
sweep YAML for `wandb sweep`: each searched key becomes a sweep parameter, the space's
and the command line's overrides stay fixed, and the agent's command is

    leap train <fixed overrides> ${args_no_hyphens}

which a `wandb agent` turns into `leap train ... model.options.cell=rgc ...`: Hydra
overrides, composed and checked like any `leap train`. The metric is one the training
run writes to its W&B summary (default `task/auc`, the meta-batch's training-loss AUC
at the last meta-step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiments.search import Param, SearchSpace, override_value
from leap_convrnn.errors import UserError

SWEEP_METHODS = ("bayes", "random", "grid")
GOALS = ("minimize", "maximize")


def parameter(param: Param, method: str) -> dict[str, Any]:
    """One search-space parameter as a W&B sweep parameter."""
    if param.choices:
        # A W&B agent passes `key=value` as it is: strings Hydra would misread (commas,
        # `>`) go in quoted, as `leap search` writes them.
        return {"values": [override_value(c) if isinstance(c, str) else c for c in param.choices]}
    assert param.low is not None and param.high is not None
    if param.is_int:
        step = int(param.step or 1)
        if step > 1 or method == "grid":
            return {"values": list(range(int(param.low), int(param.high) + 1, step))}
        if param.log:
            return {
                "distribution": "q_log_uniform_values",
                "min": int(param.low),
                "max": int(param.high),
                "q": 1,
            }
        return {"distribution": "int_uniform", "min": int(param.low), "max": int(param.high)}
    if method == "grid":
        raise UserError(
            f"method grid needs finite values: {param.key} is a continuous range "
            "(use bayes or random, or give it choices)"
        )
    if param.step:
        return {
            "distribution": "q_uniform",
            "min": float(param.low),
            "max": float(param.high),
            "q": float(param.step),
        }
    kind = "log_uniform_values" if param.log else "uniform"
    return {"distribution": kind, "min": float(param.low), "max": float(param.high)}


def sweep_config(
    space: SearchSpace,
    overrides: Sequence[str] = (),
    method: str = "bayes",
    metric: str = "task/auc",
    goal: str | None = None,
    project: str | None = None,
) -> dict[str, Any]:
    """The W&B sweep configuration of `space` (checked: every fixed override composes
    with each parameter's first value)."""
    from experiments.config import compose

    if method not in SWEEP_METHODS:
        raise UserError(
            f"--method {method!r} is not accepted; accepted: {', '.join(SWEEP_METHODS)}"
        )
    goal = goal or space.direction
    if goal not in GOALS:
        raise UserError(f"--goal {goal!r} is not accepted; accepted: {', '.join(GOALS)}")
    fixed = [*space.overrides, *overrides]
    compose([*fixed, *(f"{p.key}={_hydra_value(p.default())}" for p in space.params)])
    config: dict[str, Any] = {
        "name": f"leap-{space.name}",
        "program": "leap",
        "method": method,
        "metric": {"name": metric, "goal": goal},
        "parameters": {p.key: parameter(p, method) for p in space.params},
        "command": ["leap", "train", *fixed, "${args_no_hyphens}"],
    }
    if project:
        config["project"] = project
    return config


def _hydra_value(value: Any) -> str:
    """A value as an agent writes it (`str(value)`), which Hydra parses back."""
    return str(value)


def agent_command(config: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command a `wandb agent` runs for sampled `values` (W&B's own formatting of
    `${args_no_hyphens}`: `key=str(value)` for each parameter)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    command: list[str] = []
    for chunk in config["command"]:
        if chunk.startswith("${") and chunk.endswith("}"):
            command += macros.get(chunk[2:-1]) or []
        else:
            command.append(chunk)
    return command


def to_yaml(config: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(config, sort_keys=False))

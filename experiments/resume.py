"""What a meta-training checkpoint holds, and how a run is put back into that state.

A checkpoint taken after `step` completed meta-steps holds the meta-learner's state
(for Leap: the initialization and its buffers), the meta-optimizer's state, the
model's state, every random number generator the run draws from (torch, NumPy's
global one, Python's `random`, and the task sampler's `numpy.random.Generator`), the
tracker's run id, the last logged metrics and the resolved config. Restoring all of
it and running the remaining meta-steps gives, on CPU, an initialization bitwise
identical to the one of a run that was never stopped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.checkpoint import TrainStateStore
from experiments.config import Config, resume_target
from leap_convrnn.errors import UserError
from meta.base import MetaLearner

#: Settings that decide what a run computes; a run cannot resume with them changed.
FIXED_SETTINGS = (
    "model",
    "task",
    "meta.name",
    "meta.options",
    "meta.meta_optimizer",
    "seed",
)
#: Settings that may change on resume without a word (they do not change the result).
QUIET_SETTINGS = (
    "resume",
    "progress",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "distributed",
    "tracker",
    "data",
    "eval",
    "meta.meta_steps",
)


@dataclass
class Resumed:
    """A run restored from a checkpoint: where it stopped and what it had logged."""

    path: Path
    step: int
    run_id: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0


def config_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain containers (what a checkpoint stores)."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not name.endswith("options"):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _covered(key: str, settings: tuple[str, ...]) -> bool:
    return any(key == s or key.startswith(f"{s}.") for s in settings)


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for every setting that differs, except the quiet ones.

    UserError if one of `FIXED_SETTINGS` differs: the checkpoint belongs to another run.
    """
    before, after = _flatten(saved), _flatten(current)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    fixed = [k for k in changed if _covered(k, FIXED_SETTINGS)]
    if fixed:
        shown = "; ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in fixed[:3])
        raise UserError(
            f"cannot resume: the checkpoint was written by a run with other settings ({shown}); "
            "use the original settings, or start afresh with resume=false"
        )
    return [
        f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
        for k in changed
        if not _covered(k, QUIET_SETTINGS)
    ]


def capture_rng(sampler: np.random.Generator) -> dict[str, Any]:
    """Every random state a meta-training run draws from, in a `weights_only`-loadable form."""
    legacy = np.random.get_state(legacy=False)
    assert isinstance(legacy, dict)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": legacy["bit_generator"],
            "key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
            "pos": int(legacy["state"]["pos"]),
            "has_gauss": int(legacy["has_gauss"]),
            "gauss": float(legacy["gauss"]),
        },
        "python": random.getstate(),
        "sampler": sampler.bit_generator.state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any], sampler: np.random.Generator) -> None:
    """Put back the random states saved by `capture_rng`."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": saved["bit_generator"],
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    sampler.bit_generator.state = state["sampler"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture(
    cfg: Config,
    learner: MetaLearner,
    optimizer: torch.optim.Optimizer | None,
    model: nn.Module,
    sampler: np.random.Generator,
    run_id: str | None,
    summary: Mapping[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    """The state of a run between two meta-steps (the store adds the step)."""
    return {
        "learner": learner.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "model": model.state_dict(),
        "rng": capture_rng(sampler),
        "run_id": run_id,
        "summary": dict(summary),
        "elapsed": float(elapsed),
        "config": config_dict(cfg),
    }


def find(
    cfg: Config, store: TrainStateStore, warn: Callable[[str], None]
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint `cfg.resume` asks for (None: start afresh), checked against `cfg`.

    `resume=false` deletes the checkpoints an earlier run left in the directory (so
    that they are never mistaken for this run's); `resume=true` with no checkpoint
    starts afresh; a W&B run id must match the run id the checkpoint recorded.
    """
    target = resume_target(cfg.resume)
    if target is False:
        removed = store.clear()
        if removed:
            warn(
                f"resume=false: removed {removed} checkpoint(s) of an earlier run in "
                f"{str(store.directory)!r} (pass resume=true to continue a run)"
            )
        return None
    found = store.latest(warn)
    if found is None:
        if isinstance(target, str):
            raise UserError(
                f"resume={target!r}: no checkpoint in {str(store.directory)!r} to resume "
                "that W&B run from (the run directory follows experiment, meta, model and "
                "seed, or name)"
            )
        warn(f"resume=true: no checkpoint in {str(store.directory)!r}; starting afresh")
        return None
    path, state = found
    if isinstance(target, str) and state.get("run_id") != target:
        raise UserError(
            f"resume={target!r}: the latest checkpoint {str(path)!r} belongs to W&B run "
            f"{state.get('run_id')!r}"
        )
    if state["step"] > cfg.meta.meta_steps:
        raise UserError(
            f"checkpoint {str(path)!r} is at meta-step {state['step']}, past "
            f"meta.meta_steps={cfg.meta.meta_steps}"
        )
    changes = config_changes(state["config"], config_dict(cfg))
    if changes:
        warn(f"resuming {str(path)!r} with changed settings: {'; '.join(changes)}")
    return path, state


def restore(
    path: Path,
    state: Mapping[str, Any],
    learner: MetaLearner,
    optimizer: torch.optim.Optimizer | None,
    model: nn.Module,
    sampler: np.random.Generator,
) -> Resumed:
    """Load a checkpoint's state into a freshly built run."""
    try:
        learner.load_state_dict(state["learner"])
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as error:
        message = str(error).strip().splitlines()
        raise UserError(
            f"checkpoint {str(path)!r} does not fit this run's model or meta-learner "
            f"({message[0] if message else type(error).__name__})"
        ) from None
    restore_rng(state["rng"], sampler)
    return Resumed(
        path=path,
        step=int(state["step"]),
        run_id=state.get("run_id"),
        summary=dict(state.get("summary", {})),
        elapsed=float(state.get("elapsed", 0.0)),
    )

"""Structured (dataclass) configs: the schema every Hydra config file is checked against.

Groups, one per concern, live under `experiments/conf/`: `model/`, `task/`, `meta/`,
`tracker/`, `experiment/`. Types are enforced by OmegaConf when the config is
composed; ranges and names by `validate`, so a bad value fails at load time with
a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserError
from tasks.base import INNER_OPTIMIZERS, InnerLoopConfig

META_OPTIMIZERS = ("sgd", "adam")
TRACKERS = ("wandb", "none")
WANDB_MODES = ("auto", "online", "offline")


@dataclass
class ModelConfig:
    """The network: a name from the model registry and its builder's options."""

    name: str = "conv4"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskConfig:
    """The task family: a name from the task registry and its builder's options."""

    name: str = "glyphs"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetaConfig:
    """The meta-learner, its inner loop and its meta-update."""

    name: str = "leap"
    #: Meta-learner options (for Leap: metric, loss_in_manifold, stabilizer, final_segment).
    options: dict[str, Any] = field(default_factory=dict)
    meta_steps: int = 1000
    meta_batch_size: int = 20
    meta_optimizer: str = "sgd"
    meta_lr: float = 0.1
    #: Clip the meta-gradient to this global norm (null: no clipping).
    clip_grad_norm: float | None = None
    inner_steps: int = 100
    inner_optimizer: str = "sgd"
    inner_lr: float = 0.1
    inner_momentum: float = 0.9
    batch_size: int = 20

    def inner(self) -> InnerLoopConfig:
        return InnerLoopConfig(
            steps=self.inner_steps,
            optimizer=self.inner_optimizer,
            lr=self.inner_lr,
            momentum=self.inner_momentum,
            batch_size=self.batch_size,
        )


@dataclass
class EvalConfig:
    """Transfer evaluation on held-out tasks (Leap paper protocol)."""

    #: Initialization checkpoint to evaluate (null: the matching training run's).
    init: str | None = None
    split: str = "test"
    tasks: int = 10
    seeds: list[int] = field(default_factory=lambda: [0])
    #: Inner-loop steps K on each held-out task (null: meta.inner_steps).
    steps: int | None = None
    #: Methods evaluated beside the initialization under test.
    baselines: list[str] = field(default_factory=lambda: ["scratch"])


@dataclass
class TrackerConfig:
    """Where runs are logged: W&B (online with an API key, offline otherwise) or nowhere."""

    name: str = "wandb"
    project: str = "leap-convrnn"
    entity: str | None = None
    mode: str = "auto"
    dir: str = "."


@dataclass
class DataConfig:
    """Where data sets live, and whether torchvision / learn2learn may download them."""

    root: str = "${oc.env:LEAP_DATA_ROOT,'~/.cache/leap-convrnn'}"
    download: bool = False


@dataclass
class Config:
    """A whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    #: The experiment's name: the W&B group and the prefix of run names.
    experiment: str = "default"
    #: The run's name (null: derived from experiment, method, model and seed).
    name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    log_every: int = 1
    progress: bool = True


def _positive(value: int | float, key: str) -> None:
    if value <= 0:
        raise UserError(f"{key} must be > 0, got {value}")


def _one_of(value: str, accepted: tuple[str, ...], key: str) -> None:
    if value not in accepted:
        raise UserError(f"{key}={value!r} is not accepted; accepted: {', '.join(accepted)}")


def validate(cfg: Config) -> None:
    """Check ranges and names that types alone cannot express; raise UserError."""
    import meta
    import models
    import tasks

    models.MODELS.get(cfg.model.name)
    tasks.TASKS.get(cfg.task.name)
    meta.META_LEARNERS.get(cfg.meta.name)
    m = cfg.meta
    for key in ("meta_steps", "meta_batch_size", "inner_steps", "batch_size"):
        _positive(getattr(m, key), f"meta.{key}")
    for key in ("meta_lr", "inner_lr"):
        _positive(getattr(m, key), f"meta.{key}")
    if m.clip_grad_norm is not None:
        _positive(m.clip_grad_norm, "meta.clip_grad_norm")
    _one_of(m.meta_optimizer, META_OPTIMIZERS, "meta.meta_optimizer")
    _one_of(m.inner_optimizer, INNER_OPTIMIZERS, "meta.inner_optimizer")
    _positive(cfg.eval.tasks, "eval.tasks")
    if cfg.eval.steps is not None:
        _positive(cfg.eval.steps, "eval.steps")
    if not cfg.eval.seeds:
        raise UserError("eval.seeds must list at least one seed")
    for name in cfg.eval.baselines:
        meta.META_LEARNERS.get(name)
    _one_of(cfg.eval.split, ("train", "validation", "test"), "eval.split")
    _one_of(cfg.tracker.name, TRACKERS, "tracker.name")
    _one_of(cfg.tracker.mode, WANDB_MODES, "tracker.mode")
    _positive(cfg.log_every, "log_every")


def to_config(node: DictConfig) -> Config:
    """Turn a composed DictConfig into a typed `Config` (interpolations resolved)."""
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, Config)
    return obj


def run_name(cfg: Config, job: str) -> str:
    """The default run name: experiment, method, model and seed (stable, so runs resume)."""
    if cfg.name:
        return cfg.name if job == "train" else f"{cfg.name}-{job}"
    base = f"{cfg.experiment}-{cfg.meta.name}-{cfg.model.name}-seed{cfg.seed}"
    return base if job == "train" else f"{base}-{job}"

"""Structured (dataclass) configs and their composition from the Hydra config files.

Groups, one per concern, live under `experiments/conf/` (`CONF_DIR`): `model/`, `task/`,
`meta/`, `tracker/`, `experiment/`, `debug/`. `compose(overrides)` composes them the way
Hydra does for `leap train ...`; types are enforced by OmegaConf against `Config`, ranges
and names by `validate`, so a bad value fails at load time with a one-line message.
`expand_sweep` turns the comma lists of a multirun into one override list per job.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from leap_convrnn.errors import UserError
from leap_convrnn.registry import check_options, did_you_mean
from tasks.base import SCHEDULES, InnerLoopConfig
from tasks.optimizers import INNER_OPTIMIZERS

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
    #: L2 weight decay of the inner optimizer (added to each gradient as lambda * theta).
    inner_weight_decay: float = 0.0
    batch_size: int = 20
    #: Inner learning-rate schedule over the planned steps: constant or cosine.
    inner_schedule: str = "constant"
    #: Cap the inner loop at this many passes over a task's training set (null: none).
    inner_max_epochs: int | None = None
    #: Early stopping: windows without a lower mean training loss before stopping (null: off).
    inner_early_stopping_patience: int | None = None
    #: Early stopping: steps per window.
    inner_early_stopping_window: int = 10

    def inner(self) -> InnerLoopConfig:
        return InnerLoopConfig(
            steps=self.inner_steps,
            optimizer=self.inner_optimizer,
            lr=self.inner_lr,
            momentum=self.inner_momentum,
            weight_decay=self.inner_weight_decay,
            batch_size=self.batch_size,
            schedule=self.inner_schedule,
            max_epochs=self.inner_max_epochs,
            early_stopping_patience=self.inner_early_stopping_patience,
            early_stopping_window=self.inner_early_stopping_window,
        )


@dataclass
class EvalConfig:
    """Transfer evaluation on held-out tasks (Leap paper protocol).

    Every initialization under test and every baseline trains on the same held-out tasks,
    with the same minibatches. The initializations are the training runs' `init.pt` of
    each of `methods` for each of `train_seeds` (replicates), plus any in `inits`.
    """

    #: Initialization to evaluate for meta.name (null: the matching training run's); a
    #: path or a W&B artifact reference. For one method and one training seed only.
    init: str | None = None
    #: Methods whose training runs' initializations are evaluated (null: [meta.name]).
    methods: list[str] | None = None
    #: Training seeds whose runs are evaluated, one replicate each (null: [seed]).
    train_seeds: list[int] | None = None
    #: Further initializations: label -> list of paths or W&B artifact references, one
    #: replicate each (`+eval.inits.mine=[a/init.pt,b/init.pt]`).
    inits: dict[str, list[str]] = field(default_factory=dict)
    #: The method that paired differences are taken against (null: leap if evaluated,
    #: else the first initialization).
    reference: str | None = None
    split: str = "test"
    tasks: int = 10
    seeds: list[int] = field(default_factory=lambda: [0])
    #: Inner-loop steps K on each held-out task (null: meta.inner_steps).
    steps: int | None = None
    #: Methods evaluated beside the initializations under test (random-init controls).
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
    #: Continue a stopped meta-training run: "false" (start afresh), "true" (from the
    #: latest good checkpoint in the run directory) or the W&B run id to continue.
    resume: str = "false"
    #: Write a resumable checkpoint every this many meta-steps (and at the last one).
    checkpoint_every: int = 50
    #: How many of the latest resumable checkpoints to keep.
    keep_checkpoints: int = 3
    #: Meta-train on this many processes (meta-batch split across ranks, gloo on CPU,
    #: NCCL on GPU); under torchrun the world size comes from torchrun instead.
    distributed: int = 1
    #: Where the networks train: cpu, cuda, cuda:N, or auto (cuda when torch finds a CUDA
    #: device, else cpu). Atari environments step on the CPU whatever it says.
    device: str = "cpu"
    #: Per-method settings of an experiment: method name -> `meta.*` values used when
    #: that method is chosen (`methods: {fomaml: {meta_lr: 0.01}}`); see `method_settings`.
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)


SEED_LIMIT = 2**32
#: Characters W&B refuses in project names.
_PROJECT_FORBIDDEN = set("/\\#?%:")
_DEVICE = re.compile(r"cpu|auto|cuda(:[0-9]+)?")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
#: Words that look like a yes or a no: `resume` takes true or false for those.
_NOT_RUN_IDS = {"yes", "no", "y", "n", "on", "off", "0", "1", "none", "null", "latest", "last"}


def _positive(value: int | float, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key} must be > 0 and finite, got {value}")
    if value <= 0:
        raise UserError(f"{key} must be > 0, got {value}")


def _in_range(value: int | float, low: float, high: float, key: str) -> None:
    """`low <= value <= high` (so NaN fails too)."""
    if not low <= value <= high:
        raise UserError(f"{key} must be in [{low}, {high}], got {value}")


def _one_of(value: str, accepted: tuple[str, ...], key: str) -> None:
    if value not in accepted:
        raise UserError(f"{key}={value!r} is not accepted; accepted: {', '.join(accepted)}")


def _seed(value: int, key: str) -> None:
    if not 0 <= value < SEED_LIMIT:
        raise UserError(f"{key} must be in [0, 2**32), got {value}")


def _text(value: str | None, key: str, *, path_component: bool = False) -> None:
    """A non-empty string with no control characters (and no path separator if asked)."""
    if value is None:
        return
    if not value.strip():
        raise UserError(f"{key} must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UserError(f"{key}={value!r} contains a control character")
    if path_component and (set(value) & {"/", "\\"} or value in (".", "..")):
        raise UserError(f"{key}={value!r} must be a plain name (it names the run's directory)")


def resume_target(value: str) -> bool | str:
    """`resume` as False (start afresh), True (latest checkpoint) or a W&B run id."""
    lowered = value.strip().lower()
    if lowered in ("false", "true"):  # Hydra passes true / false on as "True" / "False"
        return lowered == "true"
    if lowered in _NOT_RUN_IDS or not _RUN_ID.fullmatch(value):
        raise UserError(
            f"resume={value!r} is not accepted; accepted: true, false or a W&B run id "
            "(letters, digits, '_' and '-')"
        )
    return value


def validate(cfg: Config) -> None:
    """Check ranges and names that types alone cannot express; raise UserError."""
    import meta
    import models
    import tasks
    from experiments.families import load_task_family

    check_options(models.MODELS.get(cfg.model.name), cfg.model.options, f"model {cfg.model.name!r}")
    load_task_family(cfg.task.name)
    check_options(tasks.TASKS.get(cfg.task.name), cfg.task.options, f"task {cfg.task.name!r}")
    meta.check_learner_options(cfg.meta.name, cfg.meta.options)
    m = cfg.meta
    for key in ("meta_steps", "meta_batch_size", "inner_steps", "batch_size"):
        _positive(getattr(m, key), f"meta.{key}")
    for key in ("meta_lr", "inner_lr"):
        _positive(getattr(m, key), f"meta.{key}")
    _in_range(m.inner_momentum, 0.0, 1.0, "meta.inner_momentum")
    if not m.inner_weight_decay >= 0:
        raise UserError(f"meta.inner_weight_decay must be >= 0, got {m.inner_weight_decay}")
    if m.clip_grad_norm is not None:
        _positive(m.clip_grad_norm, "meta.clip_grad_norm")
    _one_of(m.meta_optimizer, META_OPTIMIZERS, "meta.meta_optimizer")
    _one_of(m.inner_optimizer, tuple(INNER_OPTIMIZERS.names()), "meta.inner_optimizer")
    _one_of(m.inner_schedule, SCHEDULES, "meta.inner_schedule")
    for key in ("inner_max_epochs", "inner_early_stopping_patience"):
        if getattr(m, key) is not None:
            _positive(getattr(m, key), f"meta.{key}")
    _positive(m.inner_early_stopping_window, "meta.inner_early_stopping_window")
    _positive(cfg.eval.tasks, "eval.tasks")
    if cfg.eval.steps is not None:
        _positive(cfg.eval.steps, "eval.steps")
    if not cfg.eval.seeds:
        raise UserError("eval.seeds must list at least one seed")
    for seed in cfg.eval.seeds:
        _seed(seed, "eval.seeds")
    for name in cfg.eval.baselines:
        meta.META_LEARNERS.get(name)
        if name != "scratch":
            raise UserError(
                f"eval.baselines may only hold 'scratch', got {name!r}: evaluate another "
                "method's own initialization with `leap evaluate meta=NAME` and compare the "
                "runs with `leap compare`"
            )
    _text(cfg.eval.init, "eval.init")
    for name in cfg.eval.methods or []:
        meta.META_LEARNERS.get(name)
    for seed in cfg.eval.train_seeds or []:
        _seed(seed, "eval.train_seeds")
    if cfg.eval.init and (len(cfg.eval.methods or [0]) > 1 or len(cfg.eval.train_seeds or [0]) > 1):
        raise UserError(
            "eval.init names one initialization: use it with one method and one training "
            "seed, or give several as +eval.inits.LABEL=[path,...]"
        )
    for label, sources in cfg.eval.inits.items():
        _text(label, "eval.inits label", path_component=True)
        if not sources:
            raise UserError(f"eval.inits.{label} must list at least one initialization")
        for source in sources:
            _text(source, f"eval.inits.{label}")
    _one_of(cfg.eval.split, ("train", "validation", "test"), "eval.split")
    _one_of(cfg.tracker.name, TRACKERS, "tracker.name")
    _one_of(cfg.tracker.mode, WANDB_MODES, "tracker.mode")
    _text(cfg.tracker.project, "tracker.project")
    if set(cfg.tracker.project) & _PROJECT_FORBIDDEN:
        raise UserError(
            f"tracker.project={cfg.tracker.project!r} may not contain any of "
            f"{' '.join(sorted(_PROJECT_FORBIDDEN))}"
        )
    _text(cfg.tracker.entity, "tracker.entity")
    _text(cfg.tracker.dir, "tracker.dir")
    _text(cfg.data.root, "data.root")
    _text(cfg.out_dir, "out_dir")
    _text(cfg.experiment, "experiment", path_component=True)
    _text(cfg.name, "name", path_component=True)
    _seed(cfg.seed, "seed")
    _positive(cfg.log_every, "log_every")
    resume_target(cfg.resume)
    _positive(cfg.checkpoint_every, "checkpoint_every")
    _positive(cfg.keep_checkpoints, "keep_checkpoints")
    _positive(cfg.distributed, "distributed")
    _check_methods_blocks(cfg.methods)
    if not _DEVICE.fullmatch(str(cfg.device)):
        raise UserError(f"unknown device={cfg.device!r}; accepted: cpu, cuda, cuda:N, auto")
    if cfg.distributed > m.meta_batch_size:
        raise UserError(
            f"distributed={cfg.distributed} ranks need meta.meta_batch_size >= "
            f"{cfg.distributed} (one task per rank at least), got {m.meta_batch_size}"
        )


def _check_methods_blocks(methods: dict[str, dict[str, Any]]) -> None:
    """Every `methods.NAME` block names a method and sets `meta.*` keys only."""
    import dataclasses

    import meta

    fields = [f.name for f in dataclasses.fields(MetaConfig) if f.name != "name"]
    for name, block in methods.items():
        meta.META_LEARNERS.get(name)
        for key in block:
            if key not in fields:
                hint = did_you_mean(key, fields, n=1)
                raise UserError(
                    f"methods.{name}.{key} is not a meta setting{hint}; accepted: "
                    f"{', '.join(fields)}"
                )


def to_config(node: DictConfig) -> Config:
    """Turn a composed DictConfig into a typed `Config` (interpolations resolved)."""
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, Config)
    return obj


def resolve_device(name: str) -> torch.device:
    """The torch device that `device=name` means (auto: cuda when torch finds one, else
    cpu). Asking for CUDA that torch cannot reach is a one-line UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device={name} but torch finds no CUDA device (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}); use device=cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device={name} but torch finds {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def run_name(cfg: Config, job: str) -> str:
    """The default run name: experiment, method, model and seed (stable, so runs resume)."""
    if cfg.name:
        return cfg.name if job == "train" else f"{cfg.name}-{job}"
    base = f"{cfg.experiment}-{cfg.meta.name}-{cfg.model.name}-seed{cfg.seed}"
    return base if job == "train" else f"{base}-{job}"


CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("model", "task", "meta", "tracker", "experiment", "debug")


def _files(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def registered_models_without_file() -> list[str]:
    """Registered models with no file in `conf/model/`: `model=NAME` selects each of them
    with its builder's defaults (a node of the same group in Hydra's ConfigStore)."""
    import models

    files = set(_files("model"))
    return [name for name in models.MODELS.names() if name not in files]


def group_options(group: str) -> list[str]:
    """The choices of one config group: its files in experiments/conf, and for `model`
    every registered model."""
    if group == "model":
        return sorted({*_files(group), *registered_models_without_file()})
    return _files(group)


def store_nodes() -> None:
    """Register the schema and the file-less model choices with Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for name in registered_models_without_file():
        store.store(group="model", name=name, node={"name": name, "options": {}})


def _check_group_choices(overrides: Sequence[str]) -> None:
    """Reject an unknown group option (`model=foo`) with the list of accepted ones."""

    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS:
            continue
        options = group_options(key)
        for choice in value.split(","):
            if choice not in options and not (key in ("experiment", "debug") and choice == "null"):
                hint = did_you_mean(choice, options)
                raise UserError(f"unknown {key} {choice!r}{hint}; accepted: {', '.join(options)}")


def _schema_keys(node: Any = None, prefix: str = "") -> dict[str, Any]:
    """Every key of the schema (`meta.inner_steps`, ...) -> its type hint."""
    import dataclasses
    import typing

    node = node or Config
    keys: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(node).items():
        if name not in {f.name for f in dataclasses.fields(node)}:
            continue
        keys[f"{prefix}{name}"] = hint
        if dataclasses.is_dataclass(hint):
            keys.update(_schema_keys(hint, f"{prefix}{name}."))
    return keys


def _describe_type(hint: Any) -> str:
    """`int | None` -> "int or null", `list[int]` -> "list of int (e.g. [0,1])"."""
    import types
    import typing

    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe_type(a) for a in args)
    if origin is list:
        return f"list of {_describe_type(args[0])} (e.g. [0,1])"
    if origin is dict:
        return "mapping"
    return {bool: "bool (true or false)"}.get(hint, getattr(hint, "__name__", str(hint)))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a parsed override value can be stored under `hint` (as OmegaConf would)."""
    import types
    import typing

    if isinstance(value, str) and value.startswith("${"):
        return True  # an interpolation, resolved later
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, int, float, bool))
    return True


def check_override_keys(overrides: Sequence[str]) -> None:
    """Reject an override of a key the schema does not have ("did you mean"), and a value
    of the wrong type (naming the key, the value and the type), before Hydra sees them.

    Keys under a mapping (`model.options.*`, `task.options.*`, `meta.options.*`,
    `eval.inits.*`, `methods.*`) are free here and checked by `validate`."""

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    schema = _schema_keys()
    for text in overrides:
        key = text.partition("=")[0].lstrip("+~")
        if key in GROUPS or key.startswith(("hydra.", "hydra/")) or key == "hydra":
            continue
        parts = key.split(".")
        hint = None
        for depth in range(len(parts), 0, -1):
            prefix = ".".join(parts[:depth])
            if prefix in schema:
                hint = schema[prefix] if depth == len(parts) else None
                if depth < len(parts) and "dict" not in str(schema[prefix]):
                    prefix = ""
                break
        else:
            prefix = ""
        if not prefix:
            raise UserError(
                f"unknown config key {key!r}{did_you_mean(key, schema)}; see every key and "
                "its default with `leap train --cfg job`"
            )
        if hint is None or "=" not in text or text.startswith("~"):
            continue
        try:
            (parsed,) = OverridesParser.create().parse_overrides([text])
        except HydraException:
            continue  # Hydra reports a malformed override itself
        values: list[Any] = (
            list(parsed.sweep_iterator()) if parsed.is_sweep_override() else [parsed.value()]
        )
        for value in values:
            if not _fits(value, hint):
                raise UserError(
                    f"{key}={text.partition('=')[2]} has the wrong type: {key} takes "
                    f"{_describe_type(hint)}"
                )


def _under_mapping(key: str) -> bool:
    """Whether `key` lies inside a free mapping of the schema (`model.options.width`)."""
    schema = _schema_keys()
    parts = key.split(".")
    return any(
        "dict" in str(schema.get(".".join(parts[:depth]), "")) for depth in range(1, len(parts))
    )


def normalize_overrides(overrides: Sequence[str]) -> list[str]:
    """`model.options.hidden=5` -> `++model.options.hidden=5`: a key inside a mapping
    (options, eval.inits, methods) is added or replaced alike, so no `+` is needed."""
    normalized = []
    for text in overrides:
        key, sep, _ = text.partition("=")
        if sep and not key.startswith(("+", "~")) and _under_mapping(key):
            text = f"++{text}"
        normalized.append(text)
    return normalized


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The cartesian product of the sweep overrides (`seed=0,1 meta=leap,reptile` -> 4 jobs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    axes: list[list[str]] = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([str(o.input_line)])
    return [list(job) for job in itertools.product(*axes)]


def _override_keys(overrides: Sequence[str]) -> list[str]:
    """The keys the command line sets (`++meta.meta_lr=1` -> `meta.meta_lr`)."""
    return [o.partition("=")[0].lstrip("+~") for o in overrides if "=" in o]


def _experiment_file(overrides: Sequence[str]) -> Path | None:
    chosen = [
        o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+") == "experiment"
    ]
    if not chosen or chosen[-1] in ("null", ""):
        return None
    path = CONF_DIR / "experiment" / f"{chosen[-1]}.yaml"
    return path if path.is_file() else None


def _experiment_spec(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An experiment file's method (the one its defaults choose, the root config's leap
    if none), `meta:` block and `methods:` blocks, including those of the experiments it
    extends (`defaults: [other_experiment, _self_]`)."""
    loaded = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(loaded, dict)
    method = "leap"
    block: dict[str, Any] = {}
    methods: dict[str, dict[str, Any]] = {}
    for entry in loaded.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            parent = path.parent / f"{entry}.yaml"
            if parent.is_file():
                method, block, methods = _experiment_spec(parent)
        elif isinstance(entry, dict):
            for key, value in entry.items():
                if key.split()[-1].strip("/") == "meta":
                    method = str(value)
    block = {**block, **(loaded.get("meta") or {})}
    for name, values in (loaded.get("methods") or {}).items():
        methods[name] = {**methods.get(name, {}), **(values or {})}
    return method, block, methods


def method_settings(
    method: str, overrides: Sequence[str], blocks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `meta.*` values that travel with `method`, whatever the experiment.

    The rule: the keys a method's file `conf/meta/NAME.yaml` sets (its meta-optimizer,
    learning rates, inner optimizer, options) are the method's own. An experiment's
    `meta:` block is written for the method its defaults choose, and sets the budget
    (meta_steps, inner_steps, batch sizes, inner_lr ...) for every method; it sets a
    method-owned key only for its own method. Another method keeps its file's values,
    unless the experiment's `methods.NAME:` block sets them (it may set any `meta.*`
    key, and wins over the `meta:` block). The command line wins over all of these.
    `blocks`: the composed `methods` (the experiment's and the command line's blocks);
    None: the experiment file's.
    """
    file = CONF_DIR / "meta" / f"{method}.yaml"
    owned: dict[str, Any] = {}
    if file.is_file():
        loaded = OmegaConf.to_container(OmegaConf.load(file))
        assert isinstance(loaded, dict)
        owned = {str(k): v for k, v in loaded.items() if k != "name"}
    owned.setdefault("options", {})
    path = _experiment_file(overrides)
    if path is not None:
        own, block, methods = _experiment_spec(path)
        if own == method:
            owned.update({k: v for k, v in block.items() if k in owned})
        if blocks is None:
            owned.update(methods.get(method) or {})
    if blocks is not None:
        owned.update(blocks.get(method) or {})
    return owned


def _apply_method_settings(node: DictConfig, overrides: Sequence[str]) -> None:
    """Give `node.meta` its method's own settings (`method_settings`), keeping what the
    command line sets."""
    cli = _override_keys(overrides)
    blocks = OmegaConf.to_container(node.methods, resolve=True)
    assert isinstance(blocks, dict)
    settings = method_settings(
        str(node.meta.name), overrides, {str(k): v for k, v in blocks.items()}
    )
    options = dict(settings.pop("options") or {})
    for key in cli:
        if key.startswith("meta.options."):
            name = key.split(".")[2]
            if name in node.meta.options:
                options[name] = node.meta.options[name]
    if "meta.options" not in cli:
        node.meta.options = options
    for key, value in settings.items():
        if f"meta.{key}" not in cli and key in node.meta:
            node.meta[key] = value


def compose(overrides: Sequence[str]) -> Any:
    """Compose, type-check and validate the config for `overrides`; UserError on a bad value."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _check_group_choices(overrides)
    check_override_keys(overrides)
    store_nodes()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="leap"):
            node = hydra_compose(config_name="config", overrides=normalize_overrides(overrides))
        _apply_method_settings(node, overrides)
        cfg = to_config(node)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # Hydra's first line says what failed; a second one, when present, how to fix it;
        # a list of available options follows "Available options" (a launcher's name).
        text = " ".join(lines).split(" Config search path:")[0]
        message = text if "Available options" in text else " ".join(lines[:2])
        unknown = re.match(r"Could not override '([^']+)'", message)
        if unknown:  # never the `+key=value` hint: an unknown key is a typo
            message = f"unknown key {unknown[1]!r} (see `leap train --cfg job`)"
        if "Ambiguous value" in message:
            message += " (or sweep over the values with -m)"
        raise UserError(f"bad config: {message or type(error).__name__}") from None
    validate(cfg)
    return cfg

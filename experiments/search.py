"""`leap search`: hyperparameter search with the Tree-structured Parzen Estimator.

The ConvRNN cells of Nayebi et al. 2018 were found with TPE (Bergstra, Bardenet,
Bengio and Kégl, NeurIPS 2011, "Algorithms for Hyper-Parameter Optimization"). A
search space is a YAML file in `experiments/conf/sweep/` (or any path) that maps Hydra
override keys to distributions, so it applies to any model's builder options, any
meta-learner option or any other config value; `convrnn_cell` is the cell search.

Each trial is a short-budget run: meta-train with the sampled values, then evaluate
the learned initialization on the *validation* split (never the test split) and
return `eval/<method>/<objective>` of the method under test. Both runs are W&B runs
in the group `search-<study>`, named `<study>-trial<N>`, with the sampled values in
their config. The study lives in an Optuna storage (a local SQLite file by default):
running the same command again continues it up to the requested number of trials.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leap_convrnn.errors import UserError
from leap_convrnn.optional import require

if TYPE_CHECKING:
    import optuna

SPACE_DIR = Path(__file__).resolve().parent / "conf" / "sweep"
OBJECTIVES = ("auc", "accuracy", "loss")
DIRECTIONS = ("minimize", "maximize")
_STUDY_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,99}")


@dataclass(frozen=True)
class Param:
    """One searched value: a Hydra override key and its distribution."""

    key: str
    choices: tuple[Any, ...] = ()
    bundles: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    """Named choices that each set several keys together: (label, ((key, value), ...))."""
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def suggest(self, trial: Any) -> Any:
        """The value `trial` samples for this parameter."""
        if self.bundles:
            return trial.suggest_categorical(self.key, [label for label, _ in self.bundles])
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.is_int:
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.key, float(self.low), float(self.high), step=self.step, log=self.log
        )

    def default(self) -> Any:
        """A value inside the distribution (to check the space before any trial)."""
        if self.bundles:
            return self.bundles[0][0]
        return self.choices[0] if self.choices else self.low

    def points(self) -> list[Any]:
        """Every choice, or the ends and middle of a range (to check a whole space)."""
        if self.bundles:
            return [label for label, _ in self.bundles]
        if self.choices:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.is_int:
            step = int(self.step or 1)
            middle = int(self.low) + (int(self.high) - int(self.low)) // (2 * step) * step
            return sorted({int(self.low), middle, int(self.high)})
        return [self.low, (self.low + self.high) / 2, self.high]

    def overrides(self, value: Any) -> dict[str, Any]:
        """The config keys and values that `value` of this parameter sets."""
        for label, pairs in self.bundles:
            if label == value:
                return dict(pairs)
        if self.bundles:
            raise UserError(f"{self.key} has no choice {value!r}")
        return {self.key: value}


@dataclass(frozen=True)
class SearchSpace:
    """A search space file: base overrides, the objective and the searched parameters."""

    name: str
    params: tuple[Param, ...]
    overrides: tuple[str, ...] = ()
    objective: str = "auc"
    direction: str = "minimize"
    startup_trials: int = 10
    multivariate: bool = False
    """TPE models the parameters jointly (Optuna's multivariate TPE), not one by one."""

    def expand(self, values: dict[str, Any]) -> dict[str, Any]:
        """The config keys and values of a point of the space (bundles expanded)."""
        expanded: dict[str, Any] = {}
        for param in self.params:
            if param.key in values:
                expanded.update(param.overrides(values[param.key]))
        return expanded


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param(key: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        raise UserError(f"{where}: {key} must map to {{choices: [...]}} or {{low: .., high: ..}}")
    unknown = sorted(set(spec) - {"choices", "low", "high", "step", "log"})
    if unknown:
        raise UserError(
            f"{where}: {key} has unknown field {unknown[0]!r}; "
            "accepted: choices, low, high, step, log"
        )
    if isinstance(spec.get("choices"), dict):
        bundles = []
        for label, pairs in spec["choices"].items():
            if not isinstance(pairs, dict) or not pairs:
                raise UserError(f"{where}: {key} choice {label!r} must map keys to values")
            bundles.append((str(label), tuple((str(k), v) for k, v in pairs.items())))
        if not bundles:
            raise UserError(f"{where}: {key} needs at least one choice")
        return Param(key, bundles=tuple(bundles))
    if "choices" in spec:
        choices = tuple(spec["choices"] or ())
        if not choices:
            raise UserError(f"{where}: {key} needs at least one choice")
        return Param(key, choices=choices)
    low, high = spec.get("low"), spec.get("high")
    if not (_is_number(low) and _is_number(high)):
        raise UserError(f"{where}: {key} needs numbers low and high, or choices")
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    if not low <= high:
        raise UserError(f"{where}: {key} has low={low} > high={high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise UserError(f"{where}: {key} is searched on a log scale, so low must be > 0")
    return Param(key, low=low, high=high, step=spec.get("step"), log=log)


def load_space(name: str) -> SearchSpace:
    """Read the search space `experiments/conf/sweep/<name>.yaml`, or the YAML file `name`."""
    from omegaconf import OmegaConf

    path = Path(name).expanduser()
    if not path.suffix:
        path = SPACE_DIR / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in SPACE_DIR.glob("*.yaml"))
        raise UserError(
            f"unknown search space {name!r}; accepted: {', '.join(available)} "
            "or the path of a YAML file"
        )
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as error:
        raise UserError(f"cannot read search space {str(path)!r}: {error}") from None
    where = f"search space {str(path)!r}"
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise UserError(f"{where} needs a non-empty `params:` mapping")
    fields = {"params", "overrides", "objective", "direction", "startup_trials", "multivariate"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r}")
    space = SearchSpace(
        name=path.stem,
        params=tuple(_param(str(k), v, where) for k, v in raw["params"].items()),
        overrides=tuple(str(o) for o in raw.get("overrides") or ()),
        objective=str(raw.get("objective", "auc")),
        direction=str(raw.get("direction", "minimize")),
        startup_trials=int(raw.get("startup_trials", 10)),
        multivariate=bool(raw.get("multivariate", False)),
    )
    if space.objective not in OBJECTIVES:
        raise UserError(
            f"{where}: objective {space.objective!r}; accepted: {', '.join(OBJECTIVES)}"
        )
    if space.direction not in DIRECTIONS:
        raise UserError(
            f"{where}: direction {space.direction!r}; accepted: {', '.join(DIRECTIONS)}"
        )
    return space


def with_objective(space: SearchSpace, objective: str) -> SearchSpace:
    """`space` optimizing `objective`: held-out accuracy (maximized), or Leap's transfer
    objective auc / the loss (minimized)."""
    if objective not in OBJECTIVES:
        raise UserError(f"objective {objective!r}; accepted: {', '.join(OBJECTIVES)}")
    direction = "maximize" if objective == "accuracy" else "minimize"
    return replace(space, objective=objective, direction=direction)


def override_value(value: Any) -> str:
    """`value` as Hydra override syntax (true / false, numbers, quoted odd strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if re.fullmatch(r"[\w.-]+", text) else "'" + text.replace("'", "\\'") + "'"


def storage_url(storage: str) -> str:
    """An Optuna storage URL; a plain file path means a SQLite file there."""
    if "://" in storage:
        return storage
    return f"sqlite:///{Path(storage).expanduser().resolve()}"


@dataclass
class SearchResult:
    """What a search did: the study and how many trials this invocation ran."""

    study: Any
    ran: int
    metric: str
    space: SearchSpace | None = None


def _trial_config(
    space: SearchSpace, overrides: Sequence[str], values: dict[str, Any], study: str, number: int
) -> Any:
    """The composed config of one trial: validation split, its own name, the search group."""
    from experiments.config import compose

    # `++`: set the key whether or not the base config has it (model options often do not).
    sampled = [f"++{key}={override_value(value)}" for key, value in space.expand(values).items()]
    cfg = compose([*space.overrides, *overrides, *sampled])
    return replace(
        cfg,
        experiment=f"search-{study}",
        name=f"{study}-trial{number}",
        eval=replace(cfg.eval, split="validation", init=None),
    )


def search(
    space: SearchSpace,
    overrides: Sequence[str] = (),
    trials: int = 20,
    study: str | None = None,
    storage: str = "search.db",
    seed: int = 0,
    objective: str | None = None,
) -> SearchResult:
    """Run TPE trials of `space` until the study holds `trials` finished trials.

    `overrides` are Hydra overrides applied after the space's own (the base config of
    every trial). `objective` (auc, accuracy or loss) replaces the space's; accuracy is
    maximized, auc and loss minimized. A trial whose config is rejected (a UserError) is
    recorded as failed and the search goes on.
    """
    require("optuna", "leap search")
    import optuna

    from experiments.evaluate import evaluate
    from experiments.runner import train

    if objective is not None:
        space = with_objective(space, objective)
    study_name = study or space.name
    if not _STUDY_NAME.fullmatch(study_name):
        raise UserError(f"study name {study_name!r} must be letters, digits, '_', '.' or '-'")
    if trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    # Check the whole space composes (names, types, ranges) before any trial runs.
    base = _trial_config(
        space, overrides, {p.key: p.default() for p in space.params}, study_name, 0
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        opened = optuna.create_study(
            study_name=study_name,
            storage=storage_url(storage),
            direction=optuna.study.StudyDirection[space.direction.upper()],
            load_if_exists=True,
        )
    except Exception as error:
        raise UserError(f"cannot open study {study_name!r} in {storage!r}: {error}") from None
    if opened.direction.name.lower() != space.direction:
        raise UserError(
            f"study {study_name!r} in {storage!r} is to "
            f"{opened.direction.name.lower()}, but the space asks to {space.direction}"
        )
    finished = [t for t in opened.trials if t.state.is_finished()]
    # A fresh seed per invocation, so a resumed study does not redraw its first trials.
    opened.sampler = optuna.samplers.TPESampler(
        seed=seed + len(opened.trials),
        n_startup_trials=space.startup_trials,
        multivariate=space.multivariate,
    )
    remaining = max(0, trials - len(finished))
    metric = f"eval/{base.meta.name}/{space.objective}"

    def run_trial(trial: optuna.Trial) -> float:
        values = {p.key: p.suggest(trial) for p in space.params}
        cfg = _trial_config(space, overrides, values, study_name, trial.number)
        trial.set_user_attr("run", cfg.name)
        trial.set_user_attr("group", cfg.experiment)
        train(cfg)
        result = evaluate(cfg)[0]
        return float(result.summary()[f"eval/{result.method}/{space.objective}"])

    def report(done: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "failed" if trial.value is None else f"{trial.value:.4g}"
        print(f"[search {study_name}] trial {trial.number}: {metric} = {value}", file=sys.stderr)

    opened.optimize(run_trial, n_trials=remaining, catch=(UserError,), callbacks=[report])
    return SearchResult(study=opened, ran=remaining, metric=metric, space=space)


def best_overrides(study: Any, space: SearchSpace | None = None) -> list[str]:
    """The best trial's values as overrides for `leap train` (empty if none completed);
    with `space`, a named choice that sets several keys is written out as those keys."""
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        return []
    params = dict(study.best_trial.params)
    values = space.expand(params) if space is not None else params
    return [f"++{k}={override_value(v)}" for k, v in values.items()]


def print_search(result: SearchResult) -> None:
    """The study's trials as a table, and the best one as command-line overrides."""
    from experiments.report import print_table

    study = result.study
    rows = []
    for t in study.trials:
        value = "" if t.value is None or math.isnan(t.value) else f"{t.value:.4f}"
        values = " ".join(
            f"{k.rsplit('.', 1)[-1]}={override_value(v)}" for k, v in t.params.items()
        )
        rows.append([str(t.number), t.state.name.lower(), value, values])
    title = f"study {study.study_name}: {len(study.trials)} trials ({result.ran} run now)"
    print_table(title, ["trial", "state", result.metric, "values"], rows)
    best = best_overrides(study, result.space)
    if best:
        trial = study.best_trial
        print(f"best: trial {trial.number}, {result.metric} = {trial.value:.4f}; as overrides:")
        print(" ".join(best))

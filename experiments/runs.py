"""Runs as W&B stored them, read back: locally from `./wandb`, or through the public API.

Two sources, one record (`RunRecord`):

- **local** (offline, or any run directory on disk): every `<dir>/wandb/*run-*` is read
  with W&B's own reader, `wandb leet inspect --json`, which prints the run's records:
  the run (name, group, job type, config), config and summary updates, and history.
- **the public API** (online): `wandb.Api().runs(project, filters={"group": ...})`,
  with learning curves from `run.scan_history`.

`experiments.compare` tabulates the records and `experiments.plots` draws their curves.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from leap_convrnn.errors import UserError

Curve = list[tuple[int, float]]


@dataclass
class RunRecord:
    """One run as W&B stored it.

    `history` holds the learning curves read so far, metric -> [(step, value)];
    `read_curve` fetches one that is not there yet (the public API reads lazily).
    """

    source: str
    name: str
    group: str
    job_type: str
    config: dict[str, Any]
    summary: dict[str, Any]
    exit_code: int | None = None
    history: dict[str, Curve] = field(default_factory=dict)
    read_curve: Callable[[str], Curve] | None = None
    #: The W&B run id (a resumed run keeps it) and when this run (or segment) started.
    run_id: str = ""
    start_time: str = ""
    #: The config values that set this run apart from the other runs of its key
    #: (`key=value ...`, empty when none does); filled in by `load_runs`.
    settings: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """(experiment, job, method, model, task): the runs of one key are seeds."""
        c = self.config
        return (
            self.group,
            self.job_type,
            str((c.get("meta") or {}).get("name", "?")),
            str((c.get("model") or {}).get("name", "?")),
            str((c.get("task") or {}).get("name", "?")),
        )

    @property
    def row_key(self) -> tuple[str, str, str, str, str, str]:
        """`key` and `settings`: the runs of one row differ in their seed only."""
        return (*self.key, self.settings)

    def metric_names(self) -> set[str]:
        """Every metric the run has a summary value or a learning curve for."""
        return set(self.summary) | set(self.history)

    def curve(self, metric: str) -> Curve:
        """The metric's (step, value) pairs, in step order ([] if never logged)."""
        if metric not in self.history and self.read_curve is not None:
            self.history[metric] = self.read_curve(metric)
        return self.history.get(metric, [])


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _job_type(job_type: str | None, summary: dict[str, Any]) -> str:
    if job_type:
        return job_type
    return "evaluate" if any(k.startswith("eval/") for k in summary) else "meta-train"


def _apply(target: dict[str, Any], record: dict[str, Any]) -> None:
    """Apply a W&B config or summary record ({"update": {...}, "remove": [...]})."""
    target.update(record.get("update") or {})
    for item in record.get("remove") or []:
        key = item.get("key") or ".".join(item.get("nested_key") or [])
        target.pop(key, None)


def parse_records(lines: Iterable[str], source: str) -> RunRecord:
    """Build a run from the JSON lines of `wandb leet inspect --json`."""
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: dict[str, Curve] = defaultdict(list)
    exit_code: int | None = None
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        kind = record.get("type")
        if kind == "run":
            run = record["run"]
            _apply(config, run.get("config") or {})
        elif kind == "config":
            _apply(config, record["config"])
        elif kind == "summary":
            _apply(summary, record["summary"])
        elif kind == "history":
            item = record["history"]["item"]
            step = int(item.get("_step", record["history"].get("step", {}).get("num", 0)))
            for key, value in item.items():
                if not key.startswith("_") and is_number(value):
                    history[key].append((step, float(value)))
        elif kind == "exit":
            exit_code = int(record["exit"].get("exit_code", 0))
    config.pop("_wandb", None)
    return RunRecord(
        source=source,
        name=str(run.get("display_name") or Path(source).name),
        group=str(run.get("run_group") or config.get("experiment", "")),
        job_type=_job_type(run.get("job_type"), summary),
        config=config,
        summary=summary,
        exit_code=exit_code,
        history=dict(history),
        run_id=str(run.get("run_id") or ""),
        start_time=str(run.get("start_time") or ""),
    )


def _wandb_cli() -> str:
    return str(Path(sys.executable).with_name("wandb"))


def _inspect_commands(run_dir: Path) -> list[list[str]]:
    """Commands that print a run's records as JSON lines, fastest first.

    `wandb leet inspect --json` starts Python and W&B (about a second a run) only to
    run `wandb-core leet inspect`; that same reader is called first with the arguments
    the CLI gives it, and the CLI itself is the fallback.
    """
    commands = []
    files = sorted(run_dir.glob("run-*.wandb"))
    try:
        from wandb.util import get_core_path

        if len(files) == 1:
            core = get_core_path()
            commands.append(
                [
                    core,
                    "leet",
                    "inspect",
                    "--no-observability",
                    "--json",
                    "--run-file",
                    str(files[0].resolve()),
                    str(run_dir.resolve().parent),
                ]
            )
    except Exception:  # no wandb-core binary: the CLI reports why
        pass
    commands.append([_wandb_cli(), "leet", "inspect", "--json", str(run_dir)])
    return commands


def read_run(run_dir: Path) -> RunRecord:
    """Read one local W&B run directory with W&B's reader (`wandb leet inspect --json`)."""
    error = ""
    for command in _inspect_commands(run_dir):
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            try:
                return parse_records(out.stdout.splitlines(), str(run_dir))
            except (ValueError, KeyError) as bad:
                error = f"unreadable records ({bad})"
        else:
            error = out.stderr.strip()[:200]
    raise UserError(f"cannot read W&B run {str(run_dir)!r}: {error}")


def find_runs(directory: Path) -> list[Path]:
    """W&B run directories under `directory/wandb` (or `directory` itself)."""
    base = directory / "wandb" if (directory / "wandb").is_dir() else directory
    return sorted(p for p in base.glob("*run-*") if p.is_dir() and any(p.glob("*.wandb")))


def read_local_runs(directory: Path, group: str | None = None) -> list[RunRecord]:
    """Every W&B run under `directory` (of `group` only, if given)."""
    paths = find_runs(directory)
    if not paths:
        raise UserError(
            f"no W&B runs under {str(directory)!r} (looked in {str(directory / 'wandb')!r})"
        )
    with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
        runs = list(pool.map(read_run, paths))
    return [r for r in runs if group is None or r.group == group]


def _api_curve(run: Any, metric: str) -> Curve:
    """A metric's learning curve through the public API."""
    rows = run.scan_history(keys=["_step", metric])
    return sorted((int(r["_step"]), float(r[metric])) for r in rows if is_number(r.get(metric)))


def read_api_runs(project: str, group: str | None = None, api: Any = None) -> list[RunRecord]:
    """Every run of the W&B project `entity/project` (of `group` only, if given),
    through the public API."""
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=30)
        found = list(api.runs(project, filters={"group": group} if group else None))
        runs = []
        for run in found:
            summary = dict(run.summary_metrics or {})
            config = {k: v for k, v in dict(run.config or {}).items() if k != "_wandb"}
            runs.append(
                RunRecord(
                    source=f"{project}/{run.id}",
                    name=str(run.name),
                    group=str(run.group or config.get("experiment", "")),
                    job_type=_job_type(run.job_type, summary),
                    config=config,
                    summary=summary,
                    exit_code=1 if run.state in ("failed", "crashed") else None,
                    read_curve=partial(_api_curve, run),
                    run_id=str(getattr(run, "id", "") or ""),
                    start_time=str(getattr(run, "created_at", "") or ""),
                )
            )
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"cannot read the runs of W&B project {project!r} ({type(error).__name__}: {error})"
        ) from None
    return runs


#: Config keys that do not change what a run measures: where it writes, how it logs,
#: how it is executed and resumed, and the code's commit. Every other key is a setting:
#: runs that differ in one are never pooled. `seed` is what the runs of a row vary.
#: `eval.init` is shown in its own column (each evaluate run names its own file);
#: `methods` holds an experiment's per-method blocks, already applied to `meta.*`.
NOT_SETTINGS = (
    "seed",
    "name",
    "out_dir",
    "tracker",
    "data",
    "progress",
    "log_every",
    "resume",
    "checkpoint_every",
    "keep_checkpoints",
    "distributed",
    "git_commit",
    "git_dirty",
    "input_artifact",
    "input_artifact_type",
    "eval.init",
    "methods",
)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"meta": {"inner_steps": 5}}` -> `{"meta.inner_steps": 5}` (lists kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def settings(run: RunRecord) -> dict[str, str]:
    """The run's settings: its flattened config less `NOT_SETTINGS`, values as JSON."""
    return {
        key: json.dumps(value, sort_keys=True, default=str)
        for key, value in flatten(run.config).items()
        if not any(key == k or key.startswith(f"{k}.") for k in NOT_SETTINGS)
    }


def join_resumed(runs: list[RunRecord]) -> list[RunRecord]:
    """One record per W&B run id: a run stopped and resumed (offline, each segment is a
    run directory of its own) becomes one run with its whole curve, the summary and exit
    code of its last segment. Points a later segment re-ran replace the earlier ones."""
    by_id: dict[str, list[RunRecord]] = defaultdict(list)
    joined: list[RunRecord] = []
    for run in runs:
        if run.run_id:
            by_id[run.run_id].append(run)
        else:
            joined.append(run)
    for segments in by_id.values():
        segments.sort(key=lambda r: r.start_time)
        run = segments[0]
        for later in segments[1:]:
            history = {}
            for metric in set(run.history) | set(later.history):
                tail = later.history.get(metric, [])
                cut = tail[0][0] if tail else math.inf
                history[metric] = [p for p in run.history.get(metric, []) if p[0] < cut] + tail
            run = RunRecord(
                source=later.source,
                name=later.name,
                group=later.group,
                job_type=later.job_type,
                config=later.config,
                summary={**run.summary, **later.summary},
                exit_code=later.exit_code,
                history=history,
                read_curve=later.read_curve,
                run_id=later.run_id,
                start_time=later.start_time,
            )
        joined.append(run)
    return joined


def drop_reruns(runs: list[RunRecord]) -> list[RunRecord]:
    """Of runs with the same key, settings and seed, keep the latest (said on stderr)."""
    latest: dict[tuple[Any, ...], RunRecord] = {}
    dropped: list[RunRecord] = []
    for run in sorted(runs, key=lambda r: r.start_time):
        identity = (run.key, tuple(sorted(settings(run).items())), run.config.get("seed"))
        if identity in latest:
            dropped.append(latest[identity])
        latest[identity] = run
    if dropped:
        print(
            f"leap compare: {len(dropped)} rerun(s) of the same config and seed counted once "
            f"(the latest); left out: {', '.join(r.name for r in dropped)}",
            file=sys.stderr,
        )
    gone = {id(r) for r in dropped}
    return [r for r in runs if id(r) not in gone]


def name_settings(runs: list[RunRecord]) -> None:
    """Set each run's `settings`: the keys whose values differ among the runs of its
    key, with the run's values (so runs with other settings land in other rows)."""
    by_key: dict[tuple[str, ...], list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    for members in by_key.values():
        values = [settings(r) for r in members]
        keys = set().union(*values)
        differing = sorted(k for k in keys if len({v.get(k) for v in values}) > 1)
        for run, value in zip(members, values, strict=True):
            run.settings = " ".join(f"{k}={value.get(k, 'unset')}" for k in differing)


def load_runs(
    directory: Path | None = None,
    project: str | None = None,
    group: str | None = None,
    api: Any = None,
) -> list[RunRecord]:
    """The runs to compare: from the W&B project `project` through the public API if
    given, else from the local `directory`.

    Segments of a resumed run are joined into one run; failed runs are left out; of
    reruns of the same config and seed the latest counts (both said on stderr); and each
    run's `settings` names what sets it apart from the runs of its key."""
    if project is not None:
        runs = read_api_runs(project, group, api)
        where = f"W&B project {project!r}"
    else:
        runs = read_local_runs(directory or Path("."), group)
        where = repr(str(directory or Path(".")))
    runs = join_resumed(runs)
    failed = [r for r in runs if r.exit_code not in (None, 0)]
    if failed:
        print(
            f"leap compare: left out {len(failed)} failed run(s): "
            f"{', '.join(r.name for r in failed)}",
            file=sys.stderr,
        )
    runs = [r for r in runs if r.exit_code in (None, 0)]
    if not runs:
        raise UserError(f"no finished runs{f' in group {group!r}' if group else ''} in {where}")
    runs = drop_reruns(runs)
    name_settings(runs)
    return runs

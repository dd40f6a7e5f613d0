"""Run tracking: Weights & Biases when asked for, a local copy always.

Every run writes `config.json`, `metrics.jsonl` and `summary.json` in its run
directory, so no metric is lost whatever happens to W&B. The W&B side is online when
an API key is configured and offline otherwise (files under `<tracker.dir>/wandb`,
uploaded later with `wandb sync`); `tracker=none` turns it off. Any exception from
W&B (no network, a bad key, a full disk) disables it for the rest of the run with one
warning: training never stops for it.

At `finish` the tracker adds the run's system summary: `perf/tasks_per_s` and
`perf/seconds_per_meta_step` over all logged meta-steps, and `perf/peak_memory_mb`
(peak resident memory of the process; `perf/peak_gpu_memory_mb` on CUDA).
"""

from __future__ import annotations

import contextlib
import json
import math
import netrc
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.config import TrackerConfig
from leap_convrnn.errors import LeapWarning, UserError

_OFFLINE_NOTICE_SHOWN = False


class TrackingWarning(LeapWarning, RuntimeWarning):
    """W&B failed; the run goes on with local tracking only (shown once per run)."""


#: Sidecar file, next to a logged file, naming the W&B artifact it was logged as.
ARTIFACTS_FILE = "artifacts.json"

#: `[entity/][project/]name:version`, as W&B writes artifact references.
_ARTIFACT_REFERENCE = re.compile(r"(?:[\w.-]+/){0,2}[\w.-]+:[\w.-]+")


def wandb_api_key_configured() -> bool:
    """True if W&B could authenticate: WANDB_API_KEY, or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    """'online' or 'offline' for tracker.mode 'auto' | 'online' | 'offline'."""
    env = os.environ.get("WANDB_MODE")
    if env in ("offline", "online", "disabled"):
        return env
    if requested != "auto":
        return requested
    return "online" if wandb_api_key_configured() else "offline"


def git_state(directory: Path | None = None) -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes to tracked files.

    `{"git_commit": "unknown", "git_dirty": None}` outside a git checkout or without git.
    """
    cwd = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"git_commit": "unknown", "git_dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": "unknown", "git_dirty": None}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"git_commit": commit.stdout.strip(), "git_dirty": dirty}


def peak_memory() -> dict[str, float]:
    """Peak memory of this process in MiB: resident (`perf/peak_memory_mb`) and, once
    CUDA is in use, allocated by torch on the current device (`perf/peak_gpu_memory_mb`)."""
    out: dict[str, float] = {}
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes.
        out["perf/peak_memory_mb"] = peak / (2**20 if sys.platform == "darwin" else 2**10)
    except (ImportError, OSError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["perf/peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def is_artifact_reference(value: str) -> bool:
    """True if `value` reads as a W&B artifact reference (`[entity/project/]name:version`)
    and names no existing file."""
    return bool(_ARTIFACT_REFERENCE.fullmatch(value)) and not Path(value).expanduser().exists()


def logged_artifact(path: Path) -> str | None:
    """The name of the W&B artifact the file at `path` was logged as (None if it was not)."""
    sidecar = path.parent / ARTIFACTS_FILE
    try:
        entries = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    entry = entries.get(path.name) if isinstance(entries, dict) else None
    return str(entry["name"]) if isinstance(entry, dict) and "name" in entry else None


def download_artifact(reference: str, config: TrackerConfig, root: Path) -> Path:
    """Download the W&B artifact `reference` into `root`; return the one file it holds.

    A reference without `project/` is looked up in `tracker.project`, one without
    `entity/` in `tracker.entity` (or W&B's default entity). Needs W&B online: offline
    it is a one-line UserError.
    """
    if resolve_wandb_mode(config.mode) != "online":
        raise UserError(
            f"{reference!r} is a W&B artifact reference, but W&B is offline (no API key, or "
            "WANDB_MODE=offline); log in with `wandb login`, or pass a local checkpoint path"
        )
    qualified = reference if "/" in reference else f"{config.project}/{reference}"
    if qualified.count("/") == 1 and config.entity:
        qualified = f"{config.entity}/{qualified}"
    try:
        import wandb

        artifact = wandb.Api().artifact(qualified)
        directory = Path(artifact.download(root=str(root)))
    except Exception as error:
        raise UserError(
            f"cannot fetch W&B artifact {qualified!r} ({type(error).__name__}: {error})"
        ) from None
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    if len(files) != 1:
        raise UserError(
            f"W&B artifact {qualified!r} holds {len(files)} files; expected one checkpoint"
        )
    return files[0]


def _jsonable_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return _jsonable(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable_value(v) for v in value]
    return float(value) if hasattr(value, "__float__") else str(value)


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every entry made JSON-safe (non-finite floats as strings)."""
    return {str(key): _jsonable_value(value) for key, value in values.items()}


def _records_before(path: Path, step: int) -> list[str]:
    """The lines of a metrics.jsonl file whose `_step` is below `step` (unreadable ones dropped)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            if int(json.loads(line)["_step"]) < step:
                kept.append(line + "\n")
    return kept


class Tracker:
    """Logs a run's metrics, summary, tables and artifacts; never raises from W&B.

    Args:
        config: the tracker config (`tracker=wandb` or `tracker=none`).
        run_dir: the run's local directory (config.json, metrics.jsonl, summary.json).
        name, group, job_type, tags: how the run appears in W&B.
        run_config: the resolved config, stored with the run.
        run_id: continue this W&B run (a resumed meta-training) instead of starting one.
        resume_step: the meta-step a resumed run continues from: metrics.jsonl keeps its
            records of earlier steps (those of steps re-run after the checkpoint are
            dropped) and is appended to, and summary.json is kept. None: a fresh run.
    """

    def __init__(
        self,
        config: TrackerConfig,
        run_dir: Path,
        name: str,
        group: str,
        job_type: str,
        tags: Sequence[str],
        run_config: Mapping[str, Any],
        run_id: str | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self._config = dict(run_config)
        self._write_config()
        metrics_path = run_dir / "metrics.jsonl"
        kept = _records_before(metrics_path, resume_step) if resume_step is not None else []
        self._metrics = open(metrics_path, "w", encoding="utf-8")  # noqa: SIM115
        self._metrics.writelines(kept)
        self._metrics.flush()
        self._summary: dict[str, Any] = {}
        if resume_step is not None and (run_dir / "summary.json").is_file():
            with contextlib.suppress(ValueError):
                self._summary = json.loads((run_dir / "summary.json").read_text())
        self._perf = {"steps": 0, "seconds": 0.0, "tasks": 0.0}
        self._run: Any = None
        self._wandb_files: Path | None = None
        self.mode = "none"
        self.run_id: str | None = None
        if config.name == "wandb":
            identity = {"name": name, "group": group, "job_type": job_type, "tags": list(tags)}
            self._start_wandb(config, identity, run_config, run_id)

    def _write_config(self) -> None:
        (self.run_dir / "config.json").write_text(json.dumps(_jsonable(self._config), indent=2))

    def _start_wandb(
        self,
        config: TrackerConfig,
        identity: Mapping[str, Any],
        run_config: Mapping[str, Any],
        run_id: str | None,
    ) -> None:
        global _OFFLINE_NOTICE_SHOWN
        mode = resolve_wandb_mode(config.mode)
        if mode == "disabled":
            return
        # Absolute: W&B's service process may have been started from another directory.
        directory = Path(config.dir).expanduser().resolve()
        try:
            import wandb

            directory.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(
                project=config.project,
                entity=config.entity,
                dir=str(directory),
                mode=mode,  # type: ignore[arg-type]  # checked: online or offline
                **identity,
                id=run_id,
                resume="allow" if run_id else None,
                config=dict(run_config),
                settings=wandb.Settings(silent=True, console="off"),
                reinit="create_new",
            )
            self.mode = mode
            self.run_id = self._run.id
        except Exception as error:
            self._fail("init", error)
            return
        written = self._wandb_files = self.wandb_dir()
        if written is not None and not written.is_relative_to(directory):
            warnings.warn(
                f"W&B writes this run to {str(written)!r}, not under tracker.dir="
                f"{str(config.dir)!r} (W&B could not use it)",
                TrackingWarning,
                stacklevel=2,
            )
        if mode == "offline" and not _OFFLINE_NOTICE_SHOWN:
            _OFFLINE_NOTICE_SHOWN = True
            where = written.parent if written is not None else directory / "wandb"
            print(
                f"W&B: no API key found, logging offline to {where} "
                "(upload with `wandb sync`, browse with `wandb leet`)",
                file=sys.stderr,
            )

    def wandb_dir(self) -> Path | None:
        """The directory W&B writes this run's files to (None: W&B is off)."""
        if self._run is None:
            return None
        try:
            return Path(self._run.settings.sync_dir).resolve()
        except Exception:  # a W&B without the setting: nothing to check
            return None

    def _fail(self, what: str, error: Exception) -> None:
        warnings.warn(
            f"W&B {what} failed ({type(error).__name__}: {error}); "
            f"tracking goes on locally in {self.run_dir}",
            TrackingWarning,
            stacklevel=3,
        )
        run, self._run = self._run, None
        self.mode = "none"
        if run is not None:
            with contextlib.suppress(Exception):  # already failing: nothing more to report
                run.finish(exit_code=1)

    @property
    def wandb_run(self) -> Any:
        return self._run

    def _check_wandb_files(self) -> None:
        """W&B's folder removed or replaced while the run goes on (a cleaned scratch
        disk, a lost mount): W&B would drop the data without a word, so stop it with
        the one warning; the local files keep every metric."""
        files = self._wandb_files
        if self._run is not None and files is not None and not files.is_dir():
            self._fail("files", FileNotFoundError(f"{str(files)!r} is no longer a directory"))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record `metrics` at `step` (meta-step or task index)."""
        self._count_perf(metrics)
        record = {"_step": step, **_jsonable(metrics)}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        self._check_wandb_files()
        if self._run is not None:
            try:
                # Committed now: a row left open is flushed at finish, after the summary,
                # and W&B would then overwrite the summary with its last values.
                self._run.log(dict(metrics), step=step, commit=True)
            except Exception as error:
                self._fail("log", error)

    def _count_perf(self, metrics: Mapping[str, Any]) -> None:
        seconds = metrics.get("perf/seconds_per_meta_step")
        rate = metrics.get("perf/tasks_per_s")
        if seconds is None or rate is None:
            return
        self._perf["steps"] += 1
        self._perf["seconds"] += float(seconds)
        self._perf["tasks"] += float(rate) * float(seconds)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set final values of the run (W&B summary and summary.json)."""
        self._summary.update(_jsonable(values))
        (self.run_dir / "summary.json").write_text(json.dumps(self._summary, indent=2))
        if self._run is not None:
            try:
                self._run.summary.update(dict(values))
            except Exception as error:
                self._fail("summary", error)

    def config_update(self, values: Mapping[str, Any]) -> None:
        """Add `values` to the run's config (W&B config and config.json)."""
        self._config.update(values)
        self._write_config()
        if self._run is not None:
            try:
                self._run.config.update(dict(values), allow_val_change=True)
            except Exception as error:
                self._fail("config", error)

    def table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Log a table (a W&B Table; a JSON file locally)."""
        path = self.run_dir / f"{key.replace('/', '_')}.json"
        path.write_text(json.dumps({"columns": list(columns), "rows": [list(r) for r in rows]}))
        if self._run is not None:
            try:
                import wandb

                self._run.log(
                    {key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}
                )
            except Exception as error:
                self._fail("table", error)

    def line_series(
        self,
        key: str,
        xs: Sequence[float],
        ys: Sequence[Sequence[float]],
        keys: Sequence[str],
        title: str,
        xname: str,
    ) -> None:
        """Log several curves over the same x values as one chart (a W&B line-series
        custom chart; a JSON file locally)."""
        path = self.run_dir / f"{key.replace('/', '_')}.json"
        path.write_text(
            json.dumps(
                {
                    "x": list(xs),
                    "xname": xname,
                    "title": title,
                    "series": {k: list(y) for k, y in zip(keys, ys, strict=True)},
                }
            )
        )
        if self._run is not None:
            try:
                import wandb

                chart = wandb.plot.line_series(
                    xs=list(xs),
                    ys=[list(y) for y in ys],
                    keys=list(keys),
                    title=title,
                    xname=xname,
                )
                self._run.log({key: chart})
            except Exception as error:
                self._fail("line series", error)

    def image(self, key: str, path: Path, caption: str | None = None) -> None:
        """Log the image file at `path` (a W&B Image; the file itself stays in the run
        directory)."""
        if self._run is not None:
            try:
                import wandb

                self._run.log({key: wandb.Image(str(path), caption=caption)})
            except Exception as error:
                self._fail("image", error)

    def artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any]) -> None:
        """Log the file at `path` as a versioned W&B artifact, and name it in the sidecar
        `artifacts.json` beside the file so that runs which load the file can use it."""
        if self._run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(name=name, type=kind, metadata=dict(metadata))
            artifact.add_file(str(path))
            self._run.log_artifact(artifact)
        except Exception as error:
            self._fail("artifact", error)
            return
        sidecar = path.parent / ARTIFACTS_FILE
        try:
            entries = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        except ValueError:
            entries = {}
        entries[path.name] = {"name": name, "type": kind, "run_id": self.run_id, "mode": self.mode}
        sidecar.write_text(json.dumps(entries, indent=2))

    def use_artifact(self, reference: str, kind: str) -> None:
        """Declare the artifact `reference` (e.g. `init-NAME:latest`) an input of this run.

        Online, W&B records the lineage (the run that logged it -> this run). Offline,
        W&B refuses `use_artifact`, so the reference is kept in the run's config as
        `input_artifact` (and its type as `input_artifact_type`); after `wandb sync`,
        `leap link-artifacts` declares it through the public API (`link_artifacts`).
        """
        if self.mode != "online":
            self.config_update({"input_artifact_type": kind})
        self.config_update({"input_artifact": reference})
        if self._run is None or self.mode != "online":
            return
        try:
            self._run.use_artifact(reference, type=kind)
        except Exception as error:
            self._fail("use_artifact", error)

    def finish(self, exit_code: int = 0) -> None:
        """Add the system summary and close the run; safe to call more than once."""
        if self._metrics.closed:
            return
        self._metrics.close()
        system = peak_memory()
        if self._perf["steps"]:
            system["perf/seconds_per_meta_step"] = self._perf["seconds"] / self._perf["steps"]
            if self._perf["seconds"] > 0:
                system["perf/tasks_per_s"] = self._perf["tasks"] / self._perf["seconds"]
        self.summary(system)
        self._check_wandb_files()
        if self._run is not None:
            run, self._run = self._run, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as error:
                self._fail("finish", error)


def link_artifacts(project: str, group: str | None = None, api: Any = None) -> list[str]:
    """Declare, through the public API, the input artifact of every synced run of
    `project` (of `group` only, if given) that recorded one offline (`input_artifact`
    in its config) and does not use it yet. Returns "run <- artifact" lines."""
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=30)
        linked = []
        for run in api.runs(project, filters={"group": group} if group else None):
            reference = (run.config or {}).get("input_artifact")
            if not reference:
                continue
            name = str(reference).split(":")[0].split("/")[-1]
            if any(a.name.split(":")[0] == name for a in run.used_artifacts()):
                continue
            kind = (run.config or {}).get("input_artifact_type")
            full = reference if str(reference).count("/") else f"{project}/{reference}"
            run.use_artifact(api.artifact(full, type=kind))
            linked.append(f"{run.name} <- {full}")
    except Exception as error:
        raise UserError(
            f"cannot link the artifacts of W&B project {project!r} "
            f"({type(error).__name__}: {error})"
        ) from None
    return linked


def resolve_initialization(
    init: str | None, default: Path, config: TrackerConfig, download_root: Path
) -> tuple[Path, str | None]:
    """The checkpoint file an evaluation loads, and the W&B artifact it came from.

    `init` is a local path, a W&B artifact reference (downloaded into `download_root`;
    needs W&B online) or None (the matching training run's checkpoint, `default`). A
    local file that a training run logged as an artifact is matched to that artifact
    through its `artifacts.json` sidecar, as `<name>:latest`.
    """
    if init and is_artifact_reference(init):
        target = download_root / re.sub(r"[^\w.-]+", "_", init)
        return download_artifact(init, config, target), init
    path = Path(init).expanduser() if init else default
    name = logged_artifact(path)
    return path, (f"{name}:latest" if name else None)

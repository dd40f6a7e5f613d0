"""Run tracking: Weights & Biases when asked for, a local copy always.

Every run writes `metrics.jsonl` and `summary.json` in its run directory, so no
metric is lost whatever happens to W&B. The W&B side is online when an API key is
configured and offline otherwise (files under `<tracker.dir>/wandb`, uploaded later
with `wandb sync`). Any exception from W&B (no network, a bad key, a full disk)
disables it for the rest of the run with one warning: training never stops for it.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.config import TrackerConfig

_OFFLINE_NOTICE_SHOWN = False


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


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = str(value)
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        else:
            out[key] = float(value) if hasattr(value, "__float__") else str(value)
    return out


class Tracker:
    """Logs a run's metrics, summary, tables and artifacts; never raises from W&B.

    Args:
        config: the tracker config (`tracker=wandb` or `tracker=none`).
        run_dir: the run's local directory (metrics.jsonl, summary.json).
        name, group, job_type, tags: how the run appears in W&B.
        run_config: the resolved config, stored with the run.
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
    ) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(run_dir / "metrics.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._summary: dict[str, Any] = {}
        self._run: Any = None
        self.mode = "none"
        self.run_id: str | None = None
        if config.name == "wandb":
            self._start_wandb(config, name, group, job_type, tags, run_config)

    def _start_wandb(
        self,
        config: TrackerConfig,
        name: str,
        group: str,
        job_type: str,
        tags: Sequence[str],
        run_config: Mapping[str, Any],
    ) -> None:
        global _OFFLINE_NOTICE_SHOWN
        mode = resolve_wandb_mode(config.mode)
        if mode == "disabled":
            return
        # Absolute: W&B's service process may have been started from another directory.
        directory = Path(config.dir).expanduser().resolve()
        directory.mkdir(parents=True, exist_ok=True)
        if mode == "offline" and not _OFFLINE_NOTICE_SHOWN:
            _OFFLINE_NOTICE_SHOWN = True
            print(
                f"W&B: no API key found, logging offline to {Path(config.dir) / 'wandb'} "
                "(upload with `wandb sync`, browse with `wandb leet`)",
                file=sys.stderr,
            )
        try:
            import wandb

            self._run = wandb.init(
                project=config.project,
                entity=config.entity,
                dir=str(directory),
                mode=mode,
                name=name,
                group=group,
                job_type=job_type,
                tags=list(tags),
                config=dict(run_config),
                settings=wandb.Settings(silent=True, console="off"),
                reinit="create_new",
            )
            self.mode = mode
            self.run_id = self._run.id
        except Exception as error:
            self._fail("init", error)

    def _fail(self, what: str, error: Exception) -> None:
        warnings.warn(
            f"W&B {what} failed ({type(error).__name__}: {error}); "
            f"tracking goes on locally in {self.run_dir}",
            RuntimeWarning,
            stacklevel=3,
        )
        run, self._run = self._run, None
        self.mode = "none"
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # already failing: nothing more to report
                pass

    @property
    def wandb_run(self) -> Any:
        return self._run

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record `metrics` at `step` (meta-step or task index)."""
        record = {"_step": step, **_jsonable(metrics)}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._run is not None:
            try:
                self._run.log(dict(metrics), step=step)
            except Exception as error:
                self._fail("log", error)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set final values of the run (W&B summary and summary.json)."""
        self._summary.update(_jsonable(values))
        (self.run_dir / "summary.json").write_text(json.dumps(self._summary, indent=2))
        if self._run is not None:
            try:
                self._run.summary.update(dict(values))
            except Exception as error:
                self._fail("summary", error)

    def table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Log a table (a W&B Table; a JSON file locally)."""
        path = self.run_dir / f"{key.replace('/', '_')}.json"
        path.write_text(json.dumps({"columns": list(columns), "rows": [list(r) for r in rows]}))
        if self._run is not None:
            try:
                import wandb

                self._run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})
            except Exception as error:
                self._fail("table", error)

    def artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any]) -> None:
        """Log the file at `path` as a versioned W&B artifact."""
        if self._run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(name=name, type=kind, metadata=dict(metadata))
            artifact.add_file(str(path))
            self._run.log_artifact(artifact)
        except Exception as error:
            self._fail("artifact", error)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; safe to call more than once."""
        if not self._metrics.closed:
            self._metrics.close()
        if self._run is not None:
            run, self._run = self._run, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as error:
                self._fail("finish", error)

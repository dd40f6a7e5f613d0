"""The folders a run writes to, checked before any work starts.

`out_dir` (run directories, checkpoints, `init.pt`), `tracker.dir` (W&B's files, when
W&B is on) and `data.root` (downloads and the glyph cache) must be directories this
process can create and write. Each failure is one line naming the key, the path and
the reason (a UserError: exit code 2), instead of a traceback after minutes of work.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from experiments.config import Config
from leap_convrnn.errors import UserError


def _reason(error: OSError) -> str:
    if error.errno == errno.EROFS:
        return "read-only file system"
    return error.strerror or type(error).__name__


def check_writable(path: str | Path, key: str) -> Path:
    """Create `path` if needed and write a file in it; UserError naming `key`, the path
    and why not. Returns the path (user directory expanded)."""
    target = Path(path).expanduser()
    shown = f"{key}={str(path)!r}"
    for parent in (target, *target.parents):
        if parent.exists() and not parent.is_dir():
            where = "" if parent == target else f" ({str(parent)!r} is a file)"
            raise UserError(f"{shown} is not a directory{where}")
        if parent.exists():
            break
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{shown} cannot be created: {_reason(error)}") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserError(f"{shown} cannot be written: permission denied")
    try:
        with tempfile.TemporaryFile(dir=target, prefix=".leap-write-test-"):
            pass
    except OSError as error:
        raise UserError(f"{shown} cannot be written: {_reason(error)}") from None
    return target


def check_folders(cfg: Config) -> None:
    """Check every folder `cfg`'s run writes to (`check_writable`)."""
    from experiments.tracking import resolve_wandb_mode

    check_writable(cfg.out_dir, "out_dir")
    if cfg.tracker.name == "wandb" and resolve_wandb_mode(cfg.tracker.mode) != "disabled":
        check_writable(cfg.tracker.dir, "tracker.dir")
        wandb_dir = Path(cfg.tracker.dir).expanduser() / "wandb"
        if wandb_dir.exists():
            check_writable(wandb_dir, "tracker.dir (its wandb folder)")
    check_writable(cfg.data.root, "data.root")


def remove_stale_initialization(run_dir: Path) -> bool:
    """Remove the `init.pt` an earlier run of the same name left in `run_dir` (and its
    entry in `artifacts.json`), so that a run that does not finish never leaves another
    run's initialization beside its own files. Returns whether one was removed."""
    import json

    from experiments.tracking import ARTIFACTS_FILE

    path = run_dir / "init.pt"
    if not path.is_file():
        return False
    path.unlink()
    sidecar = run_dir / ARTIFACTS_FILE
    if sidecar.is_file():
        try:
            entries = json.loads(sidecar.read_text())
        except ValueError:
            entries = {}
        entries.pop(path.name, None)
        if entries:
            sidecar.write_text(json.dumps(entries, indent=2))
        else:
            sidecar.unlink()
    return True

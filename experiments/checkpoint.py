"""Checkpoints, all written atomically (a temporary file, then a rename).

Two kinds:

- initialization checkpoints (`init.pt`): a model's parameters and buffers plus the
  architecture they belong to, checked against the model on load;
- training-state checkpoints (`checkpoints/step-NNNNNNNNN.pt` in a run directory):
  everything a stopped meta-training run needs to continue (see `experiments.resume`).
  They carry a header with the payload's length and SHA-256, so a truncated or
  corrupted file is recognised as such before anything is unpickled; the last
  `keep` of them are kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from leap_convrnn.errors import UserError

FORMAT = "leap-convrnn/initialization"
VERSION = 1

TRAIN_STATE_FORMAT = "leap-convrnn/train-state"
TRAIN_STATE_VERSION = 1
_MAGIC = b"LEAP-TRAIN-STATE"
_STEP_FILE = re.compile(r"step-(\d+)\.pt")


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, flush it to disk, rename it over `path`.

    A reader never sees a partly written `path`: a crash leaves the old file (and at
    worst a hidden `.NAME.*.tmp` file, which `TrainStateStore` removes).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename over `path`."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def save_initialization(
    path: Path, model: nn.Module, architecture: dict[str, Any], metadata: dict[str, Any]
) -> None:
    """Save a model's parameters and buffers as an initialization.

    `architecture` (model name, options, input shape, outputs) is stored so that a
    checkpoint loaded into a different network fails with a message naming both.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "architecture": architecture,
            "state_dict": state,
            "metadata": metadata,
        },
        path,
    )


def read_initialization(path: str | Path) -> dict[str, Any]:
    """Read an initialization checkpoint; a one-line UserError if it is missing or unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"initialization checkpoint {str(path)!r} does not exist")
    with open(path, "rb") as handle:
        is_train_state = handle.read(len(_MAGIC) + 1) == _MAGIC + b" "
    if is_train_state:
        raise UserError(
            f"{str(path)!r} is a training-state checkpoint (to resume meta-training), not an "
            f"initialization: evaluate the run's {str(path.parent.parent / 'init.pt')!r}, "
            "written when the run finishes (finish a stopped run with resume=true)"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"initialization checkpoint {str(path)!r} is unreadable ({type(error).__name__}); "
            "it may be truncated"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not a leap-convrnn initialization checkpoint")
    return blob


def load_initialization(
    path: str | Path,
    model: nn.Module,
    architecture: dict[str, Any],
    parameters: Sequence[str] | None = None,
) -> None:
    """Load the initialization at `path` into `model`, which must have `architecture`.

    With `parameters` (the meta-learned parameters' names), only those parameters and the
    model's buffers are loaded; the model's other parameters (per-task heads, which the
    checkpoint may hold for other tasks) keep their values.
    """
    blob = read_initialization(path)
    saved = blob["architecture"]
    if saved != architecture:
        raise UserError(
            f"checkpoint {str(path)!r} holds an initialization for {saved}, "
            f"but the model is {architecture}"
        )
    state = blob["state_dict"]
    if parameters is None:
        model.load_state_dict(state)
        return
    missing = [name for name in parameters if name not in state]
    if missing:
        raise UserError(
            f"checkpoint {str(path)!r} lacks the meta-learned parameters {missing[:3]} "
            f"({len(missing)} in all)"
        )
    buffers = {name for name, _ in model.named_buffers()}
    wanted = set(parameters) | buffers
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False)


def write_train_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically write a training-state checkpoint: a header line, then the torch payload.

    The header holds the payload's length and SHA-256, so `read_train_state` tells a
    truncated file from a corrupted one without unpickling either.
    """
    buffer = io.BytesIO()
    torch.save({"format": TRAIN_STATE_FORMAT, "version": TRAIN_STATE_VERSION, **state}, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    header = b"%s %d %s\n" % (_MAGIC, len(payload), digest.encode())

    def write(handle: IO[bytes]) -> None:
        handle.write(header)
        handle.write(payload)

    atomic_write(path, write)


def read_train_state(path: Path) -> dict[str, Any]:
    """Read a training-state checkpoint; a one-line UserError saying what is wrong with it."""
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"checkpoint {name!r} cannot be read ({error.strerror})") from None
    header, newline, payload = data.partition(b"\n")
    fields = header.split(b" ")
    if not newline or len(fields) != 3 or fields[0] != _MAGIC or not fields[1].isdigit():
        raise UserError(f"checkpoint {name!r} is not a leap-convrnn training state (bad header)")
    expected = int(fields[1])
    if len(payload) < expected:
        raise UserError(f"checkpoint {name!r} is truncated ({len(payload)} of {expected} bytes)")
    if len(payload) > expected or hashlib.sha256(payload).hexdigest().encode() != fields[2]:
        raise UserError(f"checkpoint {name!r} is corrupt (checksum mismatch)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"checkpoint {name!r} cannot be loaded ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise UserError(f"checkpoint {name!r} is not a leap-convrnn training state")
    if state.get("version") != TRAIN_STATE_VERSION:
        raise UserError(
            f"checkpoint {name!r} has format version {state.get('version')}; "
            f"this version of leap-convrnn reads version {TRAIN_STATE_VERSION}"
        )
    return state


class TrainStateStore:
    """The training-state checkpoints of one run: `step-NNNNNNNNN.pt` files in a directory.

    `save` writes one atomically and keeps the latest `keep`; `latest` returns the
    newest readable one, skipping (and renaming to `*.corrupt`) any that are not.
    """

    def __init__(self, directory: Path, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = directory
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.directory / f"step-{step:09d}.pt"

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first (by step)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _STEP_FILE.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write the state after `step` completed meta-steps; drop all but the latest `keep`."""
        path = self.path(step)
        write_train_state(path, {**state, "step": step})
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def remove_temporary_files(self) -> None:
        """Delete the leftovers of writes that a crash interrupted."""
        if self.directory.is_dir():
            for path in self.directory.glob(".step-*.tmp"):
                path.unlink(missing_ok=True)

    def clear(self) -> int:
        """Delete every checkpoint (a run started afresh); returns how many there were."""
        paths = self.paths()
        for path in paths:
            path.unlink(missing_ok=True)
        self.remove_temporary_files()
        return len(paths)

    def latest(self, warn: Callable[[str], None]) -> tuple[Path, dict[str, Any]] | None:
        """The newest readable checkpoint and its state (None if there is no checkpoint).

        A checkpoint that cannot be read is reported through `warn` (one line naming
        it), renamed to `*.corrupt` so that it is never picked again, and the one
        before it is tried. UserError if there are checkpoints but none is readable.
        """
        self.remove_temporary_files()
        paths = self.paths()
        failures: list[str] = []
        for path in reversed(paths):
            try:
                return path, read_train_state(path)
            except UserError as error:
                failures.append(path.name)
                path.replace(path.with_name(path.name + ".corrupt"))
                warn(f"{error}; falling back to the previous checkpoint")
        if failures:
            raise UserError(
                f"no readable checkpoint in {str(self.directory)!r} "
                f"({', '.join(failures)} are unreadable; renamed to *.corrupt)"
            )
        return None

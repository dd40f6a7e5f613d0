"""The errors and warnings the CLI turns into one-line messages and exit codes.

- `UserError`: a bad value in the user's input; exit code 2.
- `RunStopped`: a run stopped early, after a checkpoint; exit code 1, 130 or 143.
- `AllTasksDropped`: raised by a meta-learner; the runner turns it into `RunStopped`.
- `LeapWarning`: something the user should know; the CLI prints it as one line.
"""

import sys
import warnings
from typing import TextIO


class UserError(Exception):
    """A bad value supplied by the user (a config value, a path, a name).

    The CLI reports it as a single line on stderr and exits with code 2, with no
    traceback. Its message names the bad value and what would be accepted.
    """


class AllTasksDropped(RuntimeError):
    """Every task of a meta-batch failed (a non-finite loss or gradient in its inner loop).

    A meta-learner's `end_meta_batch()` raises it instead of writing a meta-gradient;
    the runner then checkpoints the run and stops it (exit code 1).
    """


class RunStopped(Exception):
    """A run stopped early, after checkpointing, for a reason the user must see.

    The CLI prints the message as one line on stderr and exits with `exit_code`:
    1 when every task of a meta-batch was dropped, 128 + the signal number when the
    run was interrupted (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class LeapWarning(UserWarning):
    """A warning for the user (a skipped checkpoint, a dropped task), shown as one line."""


def warn(message: str) -> None:
    """Issue `message` as a `LeapWarning`."""
    warnings.warn(message, LeapWarning, stacklevel=2)


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning` that prints a `LeapWarning` as one `leap: warning:` line
    on stderr and every other warning as Python does."""
    if issubclass(category, LeapWarning):
        print(f"leap: warning: {message}", file=file or sys.stderr)
    else:
        text = warnings.formatwarning(message, category, filename, lineno, line)
        (file or sys.stderr).write(text)

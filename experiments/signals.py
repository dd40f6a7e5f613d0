"""Graceful stops: SIGINT and SIGTERM finish the current meta-step instead of killing it.

Inside `GracefulStop`, the first SIGINT or SIGTERM only sets a flag (and says so on
stderr); the training loop checks it after every meta-step, checkpoints, closes the
tracker and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A
second signal stops the run at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from leap_convrnn.errors import RunStopped

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_exit_code(signum: int) -> int:
    """The shell convention for a process ended by signal `signum`."""
    return 128 + signum


class GracefulStop:
    """Context manager that turns SIGINT / SIGTERM into a stop request.

    Handlers can only be installed from the main thread; elsewhere this does nothing
    and `signum` stays None. `announce=False` keeps the first signal quiet (ranks
    other than 0); `then` says what the run does before it stops.
    """

    def __init__(
        self,
        announce: bool = True,
        then: str = "finishing the current meta-step, then checkpointing",
    ) -> None:
        self.signum: int | None = None
        self.announce = announce
        self.then = then
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self._restore()
            raise RunStopped(
                f"second {name}: stopped at once, without a checkpoint", signal_exit_code(signum)
            )
        self.signum = signum
        if not self.announce:
            return
        print(
            f"leap: {name} received: {self.then} (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()

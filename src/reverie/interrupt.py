"""A graceful stop on Ctrl-C or ``kill`` (SIGINT, SIGTERM): the loop ends at its next step and the run is saved.

The first signal asks the loop to stop; a second one interrupts at once (``KeyboardInterrupt``). Outside the
main thread, signals cannot be caught and nothing is installed.

Example:
    >>> with StopOnSignal() as stop:
    ...     while not stop.requested:
    ...         break  # one step of a loop
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopOnSignal"]

log = logging.getLogger("reverie")


class StopOnSignal:
    """Within the ``with`` block, SIGINT and SIGTERM set :attr:`requested` instead of ending the process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str = ""
        """The name of the signal that asked to stop ("" until one did)."""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second signal: stop now
        self.requested = signal.Signals(signum).name
        log.warning("%s: stopping at the next step and saving the run (send it again to stop at once)", self.requested)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

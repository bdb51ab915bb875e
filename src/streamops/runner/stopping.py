"""A stop asked of a running job, told apart from a query that stopped on its own.

A streaming job runs until it is asked to stop: by SIGTERM (what a cancelled run, a process
manager or `kill` sends) or by code holding its `StopRequest`. A query that ends while nobody
asked is an outage, not a success: the runner then exits non-zero so that Databricks restarts
the run. A `StreamingQuery.stop()` called from elsewhere in the process is not a request: only
what goes through here is.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequest:
    """Set once by whoever asks the job to stop (a signal or code); read by the await loop."""

    def __init__(self) -> None:
        self._asked = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        """Ask the job to stop after the batches in flight; the first reason given is kept."""
        if not self._asked.is_set():
            self.reason = reason
        self._asked.set()

    @property
    def requested(self) -> bool:
        return self._asked.is_set()

    @contextmanager
    def on_signals(self, *signals: signal.Signals) -> Iterator[StopRequest]:
        """While inside, each of `signals` (default SIGTERM) requests a stop instead of killing
        the process; the previous handlers come back on exit. Outside the main thread Python
        cannot install handlers: then nothing is installed and only code can request a stop."""
        wanted = signals or (signal.SIGTERM,)
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request(f"signal {signal.Signals(signum).name}")

        previous = {s: signal.signal(s, handler) for s in wanted}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

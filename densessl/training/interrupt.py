"""Stop requests: signals turned into a clean stop between two training steps.

SIGTERM (a scheduler's pre-emption, torchrun passing on its own SIGTERM) and SIGINT (Ctrl-C) do not
interrupt a step half-way: the handler records the request, the trainer finishes the step in
flight, every process agrees on the last step, and the checkpoint is written under its number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any


def quiet_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group, and so does a scheduler's SIGTERM (Slurm sends it
    # to every process of the job): workers must outlive both so the main process can finish the
    # step in flight and save; a worker killed under it fails the step instead. The loader ends
    # its workers without a signal when it stops, and each worker ends by itself once the main
    # process is gone (torch's watchdog).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopRequest:
    """SIGTERM and SIGINT turned into a request to stop at the next step boundary."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = signum
            message = f"densessl: {name} received: finishing the current step, then saving and stopping\n"
        else:
            message = f"densessl: {name} received again: already stopping, the checkpoint is being saved\n"
        # a handler may interrupt logging itself: write to the file descriptor directly
        with contextlib.suppress(OSError):
            os.write(2, message.encode())

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def ignore_stop_signals() -> dict[int, Any]:
    """Ignore SIGTERM and SIGINT from now on (a process on its way out after a clean stop: one more
    signal would only turn its exit status into a kill); returns the handlers it replaced, for
    putting back. Does nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, signal.SIG_IGN) for signum in StopRequest.SIGNALS}

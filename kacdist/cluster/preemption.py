"""A scheduler's "stop soon" signal turned into a stop at the next step boundary.

SLURM sends USR2 ``cluster.signal_delay_s`` seconds before a job's time limit, and at preemption. submitit's
own USR2 handler would checkpoint and requeue at once, from whatever line the training loop was on. Here the
handler only records the request; the loop sees it through ``Workers.stop_requested`` at its next step,
writes a checkpoint there and raises ``StopRequested``; then ``hand_over()`` gives the signal to the handler
it replaced (submitit's: ``checkpoint()``, requeue, exit). Ray Train workers learn of it from a stop file that
the handler writes, because the signal itself is kept from Ray's processes (``children_ignore_signal``): a
C++ Ray daemon dies of USR2's default action.

SLURM checks time limits on a tick (30 s by default), so the signal may come well before
``signal_delay_s`` ahead of the limit, even seconds into a job: stopping then costs one requeue, never work.

When no training loop is running (``armed`` false: an evaluation, a sampling stage) the request is handed
over at once, since nothing would look at it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STOP_SIGNAL = signal.SIGUSR2


class StopOnSignal:
    """Install with ``with StopOnSignal() as stop:``; ``stop.requested()`` is the loop's ``stop_requested``."""

    def __init__(self, signum: int = STOP_SIGNAL):
        self.signum = signum
        self.event = threading.Event()
        self.armed = False  # a training loop checks requested() each step
        self.stop_files: list[Path] = []  # written on a request, for the Ray Train workers
        # called just before the replaced handler takes over (which may exit the process): the SLURM job records
        # every stop there, also one outside training or after its last step
        self.on_hand_over: Callable[[], None] | None = None
        self._previous = None
        self._frame = None

    def __enter__(self) -> "StopOnSignal":
        self._previous = signal.signal(self.signum, self._on_signal)
        # a SLURM job's Python starts with the signal blocked (kacdist.exec_masked); one that came before this
        # handler existed is pending, and is delivered here now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {self.signum})
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)

    def requested(self) -> bool:
        return self.event.is_set()

    def add_stop_file(self, path: Path) -> None:
        self.stop_files.append(path)
        if self.event.is_set():
            self._write(path)

    def _write(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("stop requested\n")
        except OSError as err:  # the workers then finish their step budget or meet the scheduler's kill
            log.error("could not write the stop file %s: %s", path, err)

    def _on_signal(self, signum, frame) -> None:
        log.warning("signal %s: stopping at the next step boundary with a checkpoint", signal.Signals(signum).name)
        self.event.set()
        self._frame = frame
        for path in self.stop_files:
            self._write(path)
        if not self.armed:
            self.hand_over()

    def hand_over(self) -> None:
        """Run the handler this one replaced (submitit's checkpoint-and-requeue, which exits the process)."""
        if self.on_hand_over is not None:
            self.on_hand_over()
        previous = self._previous
        if callable(previous):
            previous(self.signum, self._frame)


@contextlib.contextmanager
def children_ignore_signal(signum: int = STOP_SIGNAL):
    """Processes started inside the block (Ray's daemons by ``ray.init``, and the workers they start) inherit
    ``signum`` blocked: a signal mask survives fork and exec, so a USR2 sent to the whole job step stays
    pending there instead of killing them. Blocking, unlike ignoring, loses nothing here: a USR2 that arrives
    inside the block is delivered to this process's handler when the block ends."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})

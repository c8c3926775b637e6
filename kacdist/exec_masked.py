"""``python -m kacdist.exec_masked <python arguments>``: start Python with USR2 blocked from its first line.

A SLURM job's Python is started through this (``kacdist.cluster.slurm``, submitit's ``python`` command).
SLURM may send the stop signal (USR2) seconds into a job: its time-limit check runs on a tick, and a
preemption can come at any time. Until a handler is installed (submitit's, then
``kacdist.cluster.preemption.StopOnSignal``), USR2's default action kills the process, and the job ends
FAILED instead of being requeued. Blocked, the signal waits; ``StopOnSignal`` unblocks it once its handler is
in place, and it is delivered then. A signal mask survives ``exec``, so the mask is set here and Python is
started again with the given arguments.

This module imports nothing of kacdist on purpose: the window before the mask is set is Python's start-up.
"""

from __future__ import annotations

import os
import signal
import sys

# kacdist.cluster.preemption.STOP_SIGNAL (not imported: that package's import pulls in torch)
MASKED_SIGNAL = signal.SIGUSR2


def main(argv: list[str]) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {MASKED_SIGNAL})
    os.execv(sys.executable, [sys.executable, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])

"""A sweep's progress in the driver: trials ended (finished, stopped by ASHA, failed) of the sweep's total, with
rate and ETA (kacdist.progress), one line per ended trial off a terminal.

A Ray Tune callback: Tune calls it in the driver process, where the trials' ends are known first. Tune pickles
its run config with the experiment (``tuner.pkl``) and a restored sweep uses that copy, so the callback pickles
without its bar and counts the trials a restored sweep had already ended as done before it started.
"""

from __future__ import annotations

from ray.tune import Callback

from kacdist.progress import Progress

ENDED = ("TERMINATED", "ERROR")  # Trial.status of a trial that will not run again


class SweepProgress(Callback):
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc = total, desc
        self._ended: set[str] = set()
        self._bar: Progress | None = None

    def __getstate__(self) -> dict:
        return {"total": self.total, "desc": self.desc, "_ended": set(), "_bar": None}

    def _start(self, trials) -> Progress:
        if self._bar is None:
            self._ended = {t.trial_id for t in trials if t.status in ENDED}
            self._bar = Progress(self.total, self.desc, unit="trial", initial=len(self._ended), interval_s=0)
        return self._bar

    def _trial_ended(self, trials, trial) -> None:
        bar = self._start(trials)
        if trial.trial_id not in self._ended:
            self._ended.add(trial.trial_id)
            bar.update(1)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        self._start(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._trial_ended(trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._trial_ended(trials, trial)

    def on_experiment_end(self, trials: list, **info) -> None:
        if self._bar is not None:
            self._bar.close()

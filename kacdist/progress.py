"""Progress of long operations (training, sampling, FID, conversion, verification, sweeps) with rate and ETA.

On a terminal a tqdm bar on stderr; elsewhere (a SLURM log, CI, a pipe) a plain log line at most every
``interval_s`` seconds and one at the end, so logs stay readable and grep-able. Only the process that owns the
output shows anything: pass ``enabled=workers.is_main`` from data-parallel code.

``KACDIST_PROGRESS=bar|log|off`` forces a mode (``bar`` on a pipe makes tqdm write carriage returns).

While a bar is shown, log records that would go to the terminal (the root logger's console handlers, as
``setup_logging`` installs) are written through tqdm, above the bar, so that log lines do not tear it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import timedelta

log = logging.getLogger("kacdist.progress")

MODES = ("bar", "log", "off")


def progress_mode() -> str:
    forced = os.environ.get("KACDIST_PROGRESS", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"KACDIST_PROGRESS={forced!r} is invalid; choose one of {', '.join(MODES)}")
        return forced
    return "bar" if sys.stderr.isatty() else "log"


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    return str(timedelta(seconds=round(max(0.0, seconds))))


class Progress:
    """``with Progress(total, "sampling", unit="img") as bar: ... bar.update(n)``.

    ``initial``: work already done (a resumed run), which counts toward the fraction but not the rate.
    Large counts are shown with k/M suffixes (``12.3k/80.0k img``), the rate as ``unit/s``.
    ``postfix(**values)`` adds short key=value fields (the loss) to the bar or the next log line.
    ``interval_s=None``: no log lines of its own in log mode, for a caller whose own periodic line carries
    ``eta_s()`` (the training loop), so that a log does not get two lines for the same progress."""

    def __init__(self, total: float, desc: str, unit: str = "it", *, initial: float = 0, enabled: bool = True,
                 interval_s: float | None = 60.0, mode: str | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.mode = (mode or progress_mode()) if enabled else "off"
        self.interval_s = interval_s
        self._start_n, self._start = initial, time.monotonic()
        self._last_log = self._start
        self._logged_n = initial  # the count the last log line showed: close() does not repeat that line
        self._postfix: dict[str, str] = {}
        self._bar = None
        self._closed = False
        self._redirect = None
        if self.mode == "bar":
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                             dynamic_ncols=True, leave=True)
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    def rate(self) -> float:
        """Counted units per second since this object was made (resumed work excluded)."""
        elapsed = time.monotonic() - self._start
        return (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        r = self.rate()
        return (self.total - self.n) / r if r > 0 else None

    def postfix(self, **values) -> None:
        self._postfix = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log" and self.interval_s is not None and time.monotonic() - self._last_log >= self.interval_s:
            self._log_line()

    def line(self) -> str:
        """``teacher 12.3k/80.0k img (15%)  143 img/s  ETA 0:05:12  loss=0.12``: the plain form."""
        pct = 100.0 * self.n / self.total if self.total else 100.0
        fields = [f"{self.desc} {_num(self.n)}/{_num(self.total)} {self.unit} ({pct:.0f}%)",
                  f"{_rate(self.rate())} {self.unit}/s", f"ETA {format_eta(self.eta_s())}"]
        fields += [f"{k}={v}" for k, v in self._postfix.items()]
        return "  ".join(fields)

    def _log_line(self) -> None:
        self._last_log = time.monotonic()
        self._logged_n = self.n
        log.info("%s", self.line())

    def write(self, message: str) -> None:
        """A log message that does not tear the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            log.info("%s", message)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            self._redirect.__exit__(None, None, None)
        elif self.mode == "log" and self.interval_s is not None and self.n != self._logged_n:
            self._log_line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _num(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _rate(r: float) -> str:
    return _num(r) if r >= 1000 else f"{r:.3g}"

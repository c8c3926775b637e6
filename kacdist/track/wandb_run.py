"""One wandb run per stage directory, fed from the metrics table so that nothing depends on a wandb account.

``wandb.mode`` (or wandb's own ``WANDB_MODE`` environment variable, which wins when set):

* ``offline`` (default): wandb writes its files under ``<stage dir>/wandb/`` (one ``offline-run-*`` folder per
  attempt, all with the same run id); ``wandb sync <stage dir>/wandb/offline-run-*`` uploads them later.
* ``online``: needs a login (``wandb login``, ``WANDB_API_KEY``), checked when the config is validated.
* ``disabled``: wandb is not even imported.

Identity: the run id is generated once and kept in ``<stage dir>/wandb.json`` with the last metrics step sent,
so a resumed, requeued or restarted stage continues the same run; runs are grouped by ``run_name`` with the
stage kind as job type (teacher, distill, eval) and named ``<run_name>/<stage>``. The run's config is the
resolved RunConfig, which has no field for a key: wandb reads the key from its own settings or environment
and nothing here reads, logs or stores it.

Exactly once: the training loop commits metrics rows to ``metrics.parquet`` at each checkpoint and forgets the
rows after the last one when it resumes (they are replayed). Rows go to wandb only once committed, in step
order, each with ``step=`` its training step, and only those after ``last_step``; ``last_step`` is recorded
after wandb has them. A resumed stage therefore neither drops nor repeats a step: on opening, committed
rows not yet sent are sent first. The price is a lag: wandb sees rows at each checkpoint, while the log lines
and the progress bar stay live. If the process dies between sending and recording, the rows of one
checkpoint are offered again with steps wandb already has, which wandb ignores (a run's step only increases).
Charts use ``kimg`` as their x-axis (``define_metric``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kacdist.atomic import atomic_write_bytes
from kacdist.config.schema import RunConfig
from kacdist.config.validate import WANDB_MODES, ConfigError

log = logging.getLogger(__name__)

STATE_FILE = "wandb.json"
# the stages that open a wandb run (training stages through track_stage, eval through log_eval_table)
TRACKED_STAGES = ("teacher", "distill", "ladder", "eval")
# wandb's older names for two of its modes, still accepted in WANDB_MODE
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


def wandb_mode(configured: str) -> str:
    """The mode in force: ``WANDB_MODE`` when set (wandb's own switch, e.g. for a whole test suite or cluster),
    else ``wandb.mode``."""
    forced = os.environ.get("WANDB_MODE", "").strip().lower()
    if not forced:
        return configured
    return _MODE_ALIASES.get(forced, forced)


def has_login() -> bool:
    """Whether wandb would find credentials here, from the same sources it reads (``WANDB_API_KEY``,
    ``WANDB_IDENTITY_TOKEN_FILE``, its settings files, the .netrc entry of its host), without starting its
    service, contacting the server or prompting. Only a yes or no leaves this function, never the key."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    from wandb.errors import AuthenticationError
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import wbauth

    settings = wandb_setup.singleton().settings
    if settings.api_key:
        return True
    try:
        return wbauth.read_netrc_auth(host=settings.base_url) is not None
    except AuthenticationError:  # a malformed key in .netrc: wandb would refuse it too
        return False


def check_wandb(cfg: RunConfig) -> None:
    """Refuse, before any work or submission, a tracking set-up that cannot run: a ``WANDB_MODE`` that is not
    a mode, or online mode without a login. Stages that never open a wandb run are not checked."""
    if cfg.stage not in TRACKED_STAGES:
        return
    mode = wandb_mode(cfg.wandb.mode)
    if mode not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={os.environ.get('WANDB_MODE')!r} is invalid: allowed values are "
                          f"{', '.join(WANDB_MODES)} (it overrides wandb.mode)")
    if mode == "online" and not has_login():
        raise ConfigError("wandb.mode=online needs a wandb login and none was found (WANDB_API_KEY, `wandb login`'s "
                          ".netrc entry): log in on this machine, or use wandb.mode=offline and `wandb sync` later")


def new_run_id() -> str:
    """A run id of wandb's own form (8 base-36 characters): unique per stage, chosen once and stored."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def read_state(stage_dir: Path) -> dict | None:
    """The stage's ``wandb.json`` (run id, last step sent, ...), or None when it has none or it is unreadable."""
    try:
        state = json.loads((Path(stage_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("id"), str) else None


def _loggable(row: dict) -> dict:
    """A metrics row as wandb takes it: absent values (None, e.g. an empty velocity bin) left out."""
    return {k: v for k, v in row.items() if v is not None}


class StageRun:
    """An open wandb run of one stage directory. ``send_committed`` is the training loop's ``on_metrics``."""

    def __init__(self, run: Any, stage_dir: Path, state: dict) -> None:
        self.run = run
        self.stage_dir = Path(stage_dir)
        self.state = state

    @property
    def id(self) -> str:
        return self.state["id"]

    @property
    def last_step(self) -> int:
        return int(self.state.get("last_step", 0))

    def _record(self, last_step: int) -> None:
        self.state["last_step"] = int(last_step)
        atomic_write_bytes(self.stage_dir / STATE_FILE, (json.dumps(self.state, indent=1) + "\n").encode())

    def send_committed(self, rows: Iterable[dict]) -> int:
        """Log the committed rows after the last step sent, in step order, then record the last one; returns
        how many were sent. ``rows`` may be the whole table: earlier steps are skipped."""
        new = sorted((r for r in rows if r.get("step") is not None and int(r["step"]) > self.last_step),
                     key=lambda r: int(r["step"]))
        for row in new:
            self.run.log(_loggable(row), step=int(row["step"]))
        if new:
            self._record(int(new[-1]["step"]))
        return len(new)

    def log_next(self, values: dict) -> None:
        """Log ``values`` (a table, results) at the step after the last one sent, so that a later attempt of
        the stage appends instead of landing on a step wandb already has."""
        step = self.last_step + 1
        self.run.log(values, step=step)
        self._record(step)

    def finish(self, exit_code: int = 0, *, preempted: bool = False) -> None:
        """Close the run and, when no other wandb run is open in this process, stop wandb's service process
        (it otherwise stays until the interpreter exits)."""
        import wandb

        if preempted:
            self.run.mark_preempting()
        self.run.finish(exit_code=exit_code)
        if wandb.run is None:
            wandb.teardown()


def open_stage_run(cfg: RunConfig, stage_dir: Path, stage: str, job_type: str,
                   x_axis: str | None = "kimg") -> StageRun | None:
    """The wandb run of ``stage_dir`` (created, or resumed under its stored id), with the committed rows of
    ``metrics.parquet`` not yet sent already sent; None when tracking is disabled. ``x_axis``: the column every
    chart is drawn against (None: wandb's step), which each logged row must then carry."""
    mode = wandb_mode(cfg.wandb.mode)
    if mode == "disabled":
        return None
    import wandb

    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(stage_dir)
    if state is None:
        if (stage_dir / STATE_FILE).exists():
            log.warning("%s is unreadable: %s starts a new wandb run", stage_dir / STATE_FILE, stage)
        state = {"id": new_run_id(), "last_step": 0}
    state.update(project=cfg.wandb.project, entity=cfg.wandb.entity or None, group=cfg.run_name, job_type=job_type,
                 name=f"{cfg.run_name}/{stage}")
    # stored before wandb starts, so that a crash during start-up still resumes the same run
    atomic_write_bytes(stage_dir / STATE_FILE, (json.dumps(state, indent=1) + "\n").encode())
    settings = wandb.Settings(
        silent=True,  # no banner, no summary table: the project's own log lines say what happens
        console="off",  # never capture or rewrite this process's stdout/stderr
        disable_git=True,  # provenance.json records the commit; a remote URL may carry a token
        save_code=False,
        disable_job_creation=True,
        allow_val_change=True,  # a resumed stage may change free keys (cluster.*, eval.*)
    )
    run = wandb.init(
        project=cfg.wandb.project, entity=cfg.wandb.entity or None, id=state["id"], resume="allow", dir=str(stage_dir),
        group=cfg.run_name, job_type=job_type, name=state["name"], config=dataclasses.asdict(cfg), mode=mode,
        settings=settings, reinit="create_new",
    )
    if x_axis is not None:
        run.define_metric(x_axis)
        run.define_metric("*", step_metric=x_axis)
    opened = StageRun(run, stage_dir, state)
    sent = opened.send_committed(_committed_rows(stage_dir))
    log.info("wandb %s run %s (%s) in %s%s", mode, state["id"], state["name"], stage_dir / "wandb",
             f"; {sent} committed metrics rows caught up" if sent else "")
    return opened


def _committed_rows(stage_dir: Path) -> list[dict]:
    path = stage_dir / "metrics.parquet"
    if not path.exists():
        return []
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@contextlib.contextmanager
def track_stage(cfg: RunConfig, stage_dir: Path, stage: str, *, job_type: str | None = None,
                enabled: bool = True, x_axis: str | None = "kimg") -> Iterator[StageRun | None]:
    """``with track_stage(cfg, dir, "teacher", enabled=workers.is_main) as run:`` the stage's wandb run (None
    when disabled or on a rank other than 0), finished when the block ends: failed on an exception, marked
    preempting when the loop stopped on request (the requeued job resumes the same run)."""
    run = open_stage_run(cfg, stage_dir, stage, job_type or stage, x_axis) if enabled else None
    if run is None:
        yield None
        return
    from kacdist.train.loop import StopRequested

    try:
        yield run
    except StopRequested:
        run.finish(1, preempted=True)
        raise
    except BaseException:
        run.finish(1)
        raise
    run.finish(0)


def log_eval_table(cfg: RunConfig, eval_dir: Path, rows: list[dict]) -> None:
    """The evaluation table of a run as a wandb run of job type eval (``<eval dir>/wandb``): the rows as a
    ``wandb.Table`` and, in the summary, each model's best value of each metric."""
    if wandb_mode(cfg.wandb.mode) == "disabled" or not rows:
        return
    import wandb

    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = wandb.Table(columns=columns, data=[[_cell(row.get(c)) for c in columns] for row in rows])
    with track_stage(cfg, eval_dir, "eval", x_axis=None) as run:
        run.log_next({"fd_vs_nfe": table})
        for metric, best in (("fd", min), ("fid", min), ("accuracy", max)):
            for model in dict.fromkeys(r.get("model") for r in rows if r.get(metric) is not None):
                values = [r[metric] for r in rows if r.get("model") == model and r.get(metric) is not None]
                run.run.summary[f"best_{metric}/{model}"] = best(values)


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)

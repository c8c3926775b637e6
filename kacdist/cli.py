"""The ``kacdist`` command (also ``python jobs/launch.py``): ``kacdist stage=<stage> [group=name ...] [key=value ...]``.

Parses and validates the whole configuration before any work starts (kacdist.config.loader);
``print_config=true`` prints the resolved configuration and exits; ``kacdist --help`` (``-h``, ``help``) lists
the stages, the config groups and the keys people change most (kacdist.config.help). A stage that reads a
run (report, sample, eval, status, cancel) is refused before it starts when the run directory does not exist,
naming the runs that do. Then kacdist.cluster runs the stage here, on Ray Train workers or as SLURM jobs.

Exit codes: 0 done; 2 bad input (config, missing run or stage input, shards that do not exist, a lock held, a
refused submission), one line on stderr and no traceback; 1 a run that failed (a non-finite loss, more corrupt
data than tolerated, a failed distributed run); 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from kacdist.config import ConfigError, load_config
from kacdist.config.loader import to_yaml
from kacdist.config.schema import RunConfig
from kacdist.progress import progress_mode

HELP_TOKENS = ("--help", "-h", "help")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: this process's arguments) and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(token in HELP_TOKENS for token in argv):
        from kacdist.config.help import help_text

        print(help_text(), end="")
        return 0
    try:
        progress_mode()  # KACDIST_PROGRESS is input too: refused now, not when the first bar opens mid-run
    except ValueError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(argv)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if cfg.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from kacdist.stages.common import RunNotFoundError, require_run

    try:
        require_run(cfg)
    except RunNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _execute(cfg)


def _execute(cfg: RunConfig) -> int:
    from kacdist.cluster import execute
    from kacdist.cluster.lock import RunLockedError
    from kacdist.cluster.ray_train import DistributedRunError, LaunchError
    from kacdist.cluster.slurm import SubmitError
    from kacdist.data.errors import CorruptDataError, ShardListError
    from kacdist.stages.common import RunNotFoundError, StageNotTrainedError, run_root, setup_logging
    from kacdist.stages.distill import StageInputError
    from kacdist.train.loop import NonFiniteLossError

    setup_logging()
    try:
        execute(cfg)
    except LaunchError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (SubmitError, RunLockedError, RunNotFoundError, StageNotTrainedError, StageInputError, ShardListError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DistributedRunError, NonFiniteLossError, CorruptDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command to resume {run_root(cfg)} from its newest checkpoint", file=sys.stderr)
        return 130
    return 0

"""The one entry point: `python jobs/launch.py stage=<stage> [cluster=local] [dataset=...] [model=...] [key=value ...]`.

Parses and validates the whole configuration before any work starts; `print_config=true` prints the
resolved configuration and exits. Stages: teacher, distill, ladder, sample, eval, kac_demo, and status /
cancel (a run's stages and jobs). `from=<stage or checkpoint>` is short for `distill.init=...`.
`cluster.workers=N` trains on N Ray Train workers; `cluster=slurm` submits each stage as a SLURM job and
returns (kacdist.cluster).
"""

from __future__ import annotations

import sys

from kacdist.config import ConfigError, load_config
from kacdist.config.loader import to_yaml


def main(argv: list[str]) -> int:
    try:
        cfg = load_config(argv)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if cfg.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from kacdist.cluster import execute
    from kacdist.cluster.lock import RunLockedError
    from kacdist.cluster.ray_train import DistributedRunError, LaunchError
    from kacdist.cluster.slurm import SubmitError
    from kacdist.cluster.status import RunNotFoundError
    from kacdist.stages.common import setup_logging
    from kacdist.train.loop import NonFiniteLossError

    setup_logging()
    try:
        execute(cfg)
    except LaunchError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (SubmitError, RunLockedError, RunNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DistributedRunError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from kacdist.stages.common import run_root

        print(f"interrupted: rerun the same command to resume {run_root(cfg)} from its newest checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

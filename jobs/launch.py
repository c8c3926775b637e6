"""The one entry point: `python jobs/launch.py stage=<stage> [cluster=local] [dataset=...] [model=...] [key=value ...]`.

Parses and validates the whole configuration before any work starts; `print_config=true` prints the
resolved configuration and exits. Stages: teacher, distill, ladder, sample, eval, kac_demo, and status /
cancel (a run's stages and jobs). `from=<stage or checkpoint>` is short for `distill.init=...`.
`cluster.workers=N` trains on N Ray Train workers; `cluster=slurm` submits each stage as a SLURM job and
returns (kacdist.cluster). `--help` lists the stages, config groups and common keys.

The same command as the `kacdist` console script: both call kacdist.cli.main.
"""

from __future__ import annotations

import sys

from kacdist.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

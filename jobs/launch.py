"""The one entry point: `python jobs/launch.py stage=<stage> [cluster=local] [dataset=...] [model=...] [key=value ...]`.

Parses and validates the whole configuration before any work starts; `print_config=true` prints the
resolved configuration and exits. Stages: teacher, distill, ladder, sample, eval, kac_demo.
`from=<stage or checkpoint>` is short for `distill.init=...`.
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
    from kacdist.stages.common import setup_logging

    setup_logging()
    if cfg.stage == "teacher":
        from kacdist.stages.teacher import run_teacher

        run_teacher(cfg)
    elif cfg.stage == "distill":
        from kacdist.stages.distill import run_distill

        run_distill(cfg)
    elif cfg.stage == "ladder":
        from kacdist.stages.distill import run_ladder

        run_ladder(cfg)
    elif cfg.stage == "sample":
        from kacdist.stages.sample import run_sample

        run_sample(cfg)
    elif cfg.stage == "eval":
        from kacdist.stages.evaluate import run_eval

        run_eval(cfg)
    elif cfg.stage == "kac_demo":
        import runpy
        from pathlib import Path

        sys.argv = [str(Path(__file__).with_name("kac_demo.py"))]
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        print(f"config error: stage={cfg.stage!r} has no runner yet", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

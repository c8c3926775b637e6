"""Write scikit-learn's digits as shards: ``python -m data_tools.from_digits --out DIR`` (16x16 grey PNG).

The same data :func:`kacdist.data.write_digits_shards` builds on first use; this command writes both
splits at once and exposes the output options. See :mod:`kacdist.data.digits` for the fixed split and the
grey-level mapping.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data_tools.cli_common import add_output_arguments, command_line, configure_logging, run_cli, run_conversion
from kacdist.data.digits import DIGITS_SPLITS, DIGITS_UPSAMPLING, DigitsSource, digits_description, digits_items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.from_digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=16, help="power of two >= 8 (default 16)")
    parser.add_argument("--splits", default=",".join(DIGITS_SPLITS), help="comma-separated splits (default train,test)")
    parser.add_argument("--upsample", choices=sorted(DIGITS_UPSAMPLING), default="nearest", help="8x8 enlarging filter")
    add_output_arguments(parser, default_format="png", default_shard_size=250, workers=1)
    parser.set_defaults(order_seed=-1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging(args.log_level)
    splits = [split.strip() for split in args.splits.split(",") if split.strip()]
    unknown = sorted(set(splits) - set(DIGITS_SPLITS))
    if unknown:
        print(f"error: unknown split(s) {unknown}; digits has {list(DIGITS_SPLITS)}", file=sys.stderr)
        return 1
    source = DigitsSource(args.resolution, args.upsample)
    description = digits_description(args.resolution, command_line("data_tools.from_digits", arguments))
    return run_conversion(args, source, {split: digits_items(split) for split in splits}, description)


if __name__ == "__main__":
    sys.exit(run_cli(main))

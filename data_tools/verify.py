"""Check a converted dataset: ``python -m data_tools.verify DIR`` (exit 0 = clean, 1 = problems found).

Re-hashes every shard against ``manifest.parquet``, decodes every sample, and compares keys, counts,
class histograms and image sizes with the manifest and card. Prints one line per problem
(``hash-mismatch: train-000003.tar: ...``, ``corrupt-sample: train-000003.tar key 0042: ...``,
``missing-shard``, ``missing-key``, ``unlisted-shard`` ...), warnings for leftovers of interrupted runs, and
a summary. A damaged shard is repaired by rerunning the converter that made it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from data_tools.cli_common import configure_logging, default_workers, run_cli
from kacdist.data.integrity import verify_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dir", type=Path, help="directory with manifest.parquet and its shards")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes checking shards in parallel")
    parser.add_argument("--no-decode", action="store_true", help="hash and parse only; skip decoding images (faster)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    configure_logging("INFO")  # the progress lines (kacdist.progress) are log records off a terminal
    report = verify_dataset(args.dataset_dir, workers=args.workers, decode=not args.no_decode, progress=True)
    for problem in report.problems:
        print(problem)
    for warning in report.warnings:
        print(f"warning: {warning}")
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{report.dataset_dir}: {report.shards_checked} shards, {report.samples_checked} samples checked: {verdict}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))

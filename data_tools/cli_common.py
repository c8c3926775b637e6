"""Options and reporting shared by the converter command lines.

Every converter accepts the same output options (``--out``, ``--shard-size``, ``--format``, ``--quality``,
``--workers``, ``--strict``, ``--limit``, ``--order-seed``) so the commands in docs/data.md read alike, and
prints the same summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from kacdist.data.convert import (
    ConversionReport,
    DatasetDescription,
    ImageSource,
    ShardLayout,
    SourceItem,
    convert_dataset,
)
from kacdist.data.errors import SourceImageError
from kacdist.data.imaging import IMAGE_FORMATS

SKIPPED_ITEMS_PRINTED = 20
EXIT_OK = 0
EXIT_FAILED = 1


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def add_output_arguments(
    parser: argparse.ArgumentParser, *, default_format: str, default_shard_size: int, workers: int | None = None
) -> None:
    """Add the options every converter shares (``workers`` overrides the CPU-count default)."""
    worker_default = default_workers() if workers is None else workers
    add = parser.add_argument
    add("--out", type=Path, required=True, help="dataset directory to write shards, manifest and card into")
    add("--shard-size", type=int, default=default_shard_size, help=f"samples per shard (default {default_shard_size})")
    add("--format", choices=IMAGE_FORMATS, default=default_format, help=f"image encoding (default {default_format})")
    add("--quality", type=int, default=95, help="JPEG/WebP quality 1..100 (default 95; ignored for png)")
    add("--workers", type=int, default=worker_default, help=f"worker processes (default {worker_default})")
    add("--strict", action="store_true", help="stop at the first bad source image instead of skipping it")
    add("--limit", type=int, default=None, help="convert only the first N images of each split (smoke tests)")
    parser.add_argument(
        "--order-seed", type=int, default=0,
        help="seed of the fixed shuffle applied before sharding so shards mix classes (-1 keeps the source order)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def layout_from(args: argparse.Namespace) -> ShardLayout:
    return ShardLayout(image_format=args.format, quality=args.quality, samples_per_shard=args.shard_size)


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command as a user would type it, for the dataset card."""
    return shlex.join(["python", "-m", module, *argv])


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def arrange_items(items: Sequence[SourceItem], limit: int | None, order_seed: int) -> list[SourceItem]:
    """Apply ``--limit`` (on the source order) and then the seeded shuffle; both deterministic for resume.

    Without the shuffle a class-per-folder source would give class-pure shards, and a shuffle buffer
    spanning a few shards could not mix classes within a batch.
    """
    chosen = list(items[:limit]) if limit is not None else list(items)
    if order_seed >= 0:
        random.Random(order_seed).shuffle(chosen)
    return chosen


def print_report(report: ConversionReport, stream: TextIO | None = None) -> None:
    """Per-split counts and the first skipped source images (the rest are in the manifest)."""
    stream = stream or sys.stdout
    for split, split_report in report.splits.items():
        print(
            f"{split}: {split_report.num_samples} samples in {split_report.num_shards} shards "
            f"({split_report.num_written} written, {split_report.num_reused} reused), "
            f"{len(split_report.skipped)} source images skipped",
            file=stream,
        )
        for item in split_report.skipped[:SKIPPED_ITEMS_PRINTED]:
            print(f"  skipped {item}", file=stream)
        if len(split_report.skipped) > SKIPPED_ITEMS_PRINTED:
            more = len(split_report.skipped) - SKIPPED_ITEMS_PRINTED
            print(f"  ... and {more} more (see the manifest's skipped column)", file=stream)
    print(f"dataset written to {report.dataset_dir}", file=stream)


def run_cli(main: Callable[[], int]) -> int:
    """Entry-point wrapper: an expected failure (missing source, malformed file) becomes one error line
    and exit code 1 instead of a traceback; ``main(argv)`` itself still raises for callers and tests."""
    try:
        return main()
    except Exception as error:  # the command line reports any failure the same way
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


def run_conversion(
    args: argparse.Namespace,
    source: ImageSource,
    items_by_split: Mapping[str, Sequence[SourceItem]],
    description: DatasetDescription,
) -> int:
    """Run the engine with the shared options, showing its progress (a bar on a terminal, a log line a minute
    elsewhere: kacdist.progress); print the summary; map a strict failure to exit code 1."""
    arranged = {split: arrange_items(items, args.limit, args.order_seed) for split, items in items_by_split.items()}
    try:
        report = convert_dataset(
            args.out, source, arranged, layout_from(args), description, workers=args.workers, strict=args.strict,
            progress=True,
        )
    except SourceImageError as error:
        print(f"error: {error} (finished shards are kept; rerun without --strict to skip bad images)", file=sys.stderr)
        return EXIT_FAILED
    print_report(report)
    return EXIT_OK

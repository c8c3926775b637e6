"""Convert CelebA: ``python -m data_tools.from_celeba CELEBA_ROOT --out DIR`` (64x64 by default).

``CELEBA_ROOT`` holds ``img_align_celeba/`` (178x218 aligned JPEGs) and ``list_eval_partition.txt`` (lines
``000001.jpg 0``; 0 = train, 1 = valid, 2 = test). Each image is cropped to the central 140x140 square
(offsets rounded as torchvision's ``CenterCrop``) and resized to the resolution with a bilinear filter
(torchvision's ``Resize`` default), the usual CelebA-64 recipe of score-based and flow models. Samples are
unlabelled; keys are the file stems (``000001``). An image listed in the partition but missing or broken
on disk is reported by path and skipped (or stops the run with ``--strict``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from PIL import Image

from data_tools.cli_common import add_output_arguments, command_line, configure_logging, run_cli, run_conversion
from kacdist.data.convert import DatasetDescription, SourceItem
from kacdist.data.imaging import center_crop, to_mode
from kacdist.data.shards import sanitize_key

CELEBA_IMAGE_DIR: Final = "img_align_celeba"
CELEBA_PARTITION_FILE: Final = "list_eval_partition.txt"
CELEBA_PARTITIONS: Final = {"0": "train", "1": "valid", "2": "test"}


class CelebaSource:
    """Loads ``img_align_celeba/<file>``, centre-crops ``crop`` pixels and resizes to the resolution."""

    def __init__(self, image_dir: Path, resolution: int, crop: int) -> None:
        self.image_dir = Path(image_dir)
        self.resolution = resolution
        self.crop = crop

    @property
    def recipe(self) -> dict[str, Any]:
        return {"source": "celeba-aligned", "crop": self.crop, "resolution": self.resolution, "resample": "bilinear"}

    def load(self, locator: Any) -> Image.Image:
        with Image.open(self.image_dir / str(locator)) as opened:
            opened.load()
            image = to_mode(opened, "RGB")
        cropped = center_crop(image, self.crop)
        return cropped.resize((self.resolution, self.resolution), resample=Image.Resampling.BILINEAR)

    def describe(self, locator: Any) -> str:
        return str(self.image_dir / str(locator))


def read_partition(path: Path) -> dict[str, list[str]]:
    """File names per split, in file order."""
    if not path.is_file():
        raise FileNotFoundError(f"CelebA partition file {path} is missing")
    splits: dict[str, list[str]] = {name: [] for name in CELEBA_PARTITIONS.values()}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in CELEBA_PARTITIONS:
            raise ValueError(f"{path}:{number}: expected '<file> <0|1|2>', got {line!r}")
        splits[CELEBA_PARTITIONS[fields[1]]].append(fields[0])
    return splits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.from_celeba", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help=f"folder holding {CELEBA_IMAGE_DIR}/ and {CELEBA_PARTITION_FILE}")
    parser.add_argument("--splits", default="train,valid,test", help="comma-separated (default train,valid,test)")
    parser.add_argument("--resolution", type=int, default=64, help="output side (default 64)")
    parser.add_argument("--crop", type=int, default=140, help="centre crop side before resizing (default 140)")
    add_output_arguments(parser, default_format="png", default_shard_size=1000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging(args.log_level)
    partition = read_partition(args.source / CELEBA_PARTITION_FILE)
    splits = [split.strip() for split in args.splits.split(",") if split.strip()]
    unknown = sorted(set(splits) - set(partition))
    if unknown:
        print(f"error: unknown split(s) {unknown}; CelebA has {sorted(partition)}", file=sys.stderr)
        return 1
    items_by_split = {
        split: [SourceItem(key=sanitize_key(Path(name).stem), label=None, locator=name) for name in partition[split]]
        for split in splits
    }
    description = DatasetDescription(
        name="celeba",
        source=f"CelebA aligned images {(args.source / CELEBA_IMAGE_DIR).resolve()}",
        resolution=args.resolution,
        channels=3,
        class_names=(),
        preprocessing=f"centre crop {args.crop}x{args.crop}, bilinear resize to {args.resolution}",
        command=command_line("data_tools.from_celeba", arguments),
    )
    source = CelebaSource((args.source / CELEBA_IMAGE_DIR).resolve(), args.resolution, args.crop)
    return run_conversion(args, source, items_by_split, description)


if __name__ == "__main__":
    sys.exit(run_cli(main))

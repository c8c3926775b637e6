"""Convert an image folder into shards: ``python -m data_tools.from_folder SRC --out DIR [--resolution R]``.

Layout: if ``SRC`` has sub-folders, each one is a class (named after the folder, numbered in sorted
order) holding images at any depth; if it holds only image files, or with ``--unlabelled``, every image
below ``SRC`` is an unlabelled sample. Each image is oriented by its EXIF tag, its short side scaled to
the resolution and the centre square kept. Keys are the sanitised relative paths.

Without ``--resolution`` the images' own size is kept when they are all the same square size (28x28 stays
28x28); without ``--channels`` grey images stay grey (1 channel) and anything in colour becomes RGB.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageOps

from data_tools.cli_common import add_output_arguments, command_line, configure_logging, run_cli, run_conversion
from kacdist.data.convert import DatasetDescription, SourceItem
from kacdist.data.imaging import resize_short_side_then_center_crop, to_mode
from kacdist.data.shards import sanitize_key

IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
RESAMPLING_FILTERS: Final = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class FolderSource:
    """Loads ``root/<relative path>`` as a square image of the target resolution."""

    def __init__(self, root: Path, resolution: int, channels: int, resample: str) -> None:
        self.root = Path(root)
        self.resolution = resolution
        self.channels = channels
        self.resample = resample

    @property
    def recipe(self) -> dict[str, Any]:
        return {
            "source": "image-folder",
            "geometry": "exif-transpose, short side to resolution, centre square",
            "resolution": self.resolution,
            "channels": self.channels,
            "resample": self.resample,
        }

    def load(self, locator: Any) -> Image.Image:
        with Image.open(self.root / str(locator)) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
        image = to_mode(upright, "RGB" if self.channels == 3 else "L")
        return resize_short_side_then_center_crop(image, self.resolution, RESAMPLING_FILTERS[self.resample])

    def describe(self, locator: Any) -> str:
        return str(self.root / str(locator))


def _is_hidden(path: Path, root: Path) -> bool:
    """Dot-files and dot-folders (``.git``, macOS ``._photo.jpg`` resource forks) are never samples."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not _is_hidden(path, directory)
    )


def _unique_key(relative: Path, used: set[str]) -> str:
    """Sanitised path without suffix; a numeric suffix separates names that sanitise alike (a.png, a.jpg)."""
    base = sanitize_key(str(relative.with_suffix("")))
    key, counter = base, 2
    while key in used:
        key, counter = f"{base}_{counter}", counter + 1
    used.add(key)
    return key


def list_folder(root: Path, unlabelled: bool) -> tuple[list[SourceItem], tuple[str, ...]]:
    """(items, class names); class names are empty for unlabelled folders."""
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    loose_files = [
        path
        for path in root.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not _is_hidden(path, root)
    ]
    used: set[str] = set()
    if unlabelled or not class_dirs:
        files = _image_files(root)
        relative_paths = [path.relative_to(root) for path in files]
        return [SourceItem(_unique_key(path, used), None, str(path)) for path in relative_paths], ()
    if loose_files:
        raise ValueError(
            f"{root} has both class sub-folders and {len(loose_files)} loose images (e.g. {loose_files[0].name}); "
            "move them into a class folder or pass --unlabelled"
        )
    items: list[SourceItem] = []
    class_names: list[str] = []
    for class_dir in class_dirs:
        files = _image_files(class_dir)
        if not files:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        relative_paths = [path.relative_to(root) for path in files]
        items += [SourceItem(_unique_key(path, used), label, str(path)) for path in relative_paths]
    return items, tuple(class_names)


GREY_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def native_shape(root: Path, items: Sequence[SourceItem]) -> tuple[int | None, int]:
    """(the side length if every image is the same square size, else None; 1 if every image is grey, else 3),
    read from the image headers alone."""
    sizes, grey = set(), True
    for item in items:
        try:
            with Image.open(root / str(item.locator)) as image:
                sizes.add(image.size)
                grey = grey and image.mode in GREY_MODES
        except (OSError, ValueError):  # unreadable: the conversion reports it by path
            continue
    if not sizes:
        return None, 3
    side = next(iter(sizes))[0] if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 else None
    return side, 1 if grey else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.from_folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="image folder (class sub-folders, or images for unlabelled data)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="output side length in pixels (default: the images' own, when they share one square size)")
    parser.add_argument("--split", default="train", help="split name, used as the shard prefix (default train)")
    parser.add_argument("--unlabelled", action="store_true", help="ignore sub-folders as classes")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="3 = RGB, 1 = grey (default: 1 when every image is grey, else 3)")
    parser.add_argument("--resample", choices=sorted(RESAMPLING_FILTERS), default="bicubic", help="resize filter")
    parser.add_argument("--name", default=None, help="dataset name for the card (default: source folder name)")
    add_output_arguments(parser, default_format="png", default_shard_size=1000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging(args.log_level)
    items, class_names = list_folder(args.source, args.unlabelled)
    if not items:
        print(f"error: no images found under {args.source}", file=sys.stderr)
        return 1
    if args.resolution is None or args.channels is None:
        side, channels = native_shape(args.source, items)
        if args.resolution is None and side is None:
            print(f"error: the images under {args.source} differ in size or are not square: give --resolution", file=sys.stderr)
            return 2
        args.resolution = args.resolution or side
        args.channels = args.channels or channels
    description = DatasetDescription(
        name=args.name or args.source.resolve().name,
        source=f"image folder {args.source.resolve()}",
        resolution=args.resolution,
        channels=args.channels,
        class_names=class_names,
        preprocessing=f"EXIF transpose; short side to {args.resolution} ({args.resample}); centre crop",
        command=command_line("data_tools.from_folder", arguments),
    )
    source = FolderSource(args.source.resolve(), args.resolution, args.channels, args.resample)
    return run_conversion(args, source, {args.split: items}, description)


if __name__ == "__main__":
    sys.exit(run_cli(main))

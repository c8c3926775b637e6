"""Convert an LSUN lmdb export: ``python -m data_tools.from_lsun_lmdb bedroom_train_lmdb --out DIR``.

LSUN ships each category as an lmdb database whose keys are hex image ids and whose values are WebP (or,
in older exports, JPEG) bytes of varying size. Each image's short side is scaled to the resolution with a
BOX filter and the centre square kept, the recipe of ADM's ``datasets/lsun_bedroom.py``, so FIDs against
ADM's reference batches compare like with like. Samples are unlabelled (one database is one category);
keys are the lmdb keys. Each worker process opens the database read-only and without locking.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb
from PIL import Image

from data_tools.cli_common import add_output_arguments, command_line, configure_logging, run_cli, run_conversion
from kacdist.data.convert import DatasetDescription, SourceItem
from kacdist.data.imaging import resize_short_side_then_center_crop, to_mode
from kacdist.data.shards import KEY_RE, sanitize_key


def open_lmdb_readonly(path: Path) -> lmdb.Environment:
    """Read-only, lock-free, no readahead: safe on read-only mounts and cheap for random access."""
    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, max_readers=256, subdir=Path(path).is_dir())


class LsunLmdbSource:
    """Loads the image stored under an lmdb key, cropped and resized ADM-style."""

    def __init__(self, lmdb_path: Path, resolution: int) -> None:
        self.lmdb_path = Path(lmdb_path)
        self.resolution = resolution
        self._environment: lmdb.Environment | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_environment"] = None
        return state

    @property
    def recipe(self) -> dict[str, Any]:
        geometry = "adm: short side to resolution (BOX), centre square"
        return {"source": "lsun-lmdb", "geometry": geometry, "resolution": self.resolution}

    def load(self, locator: Any) -> Image.Image:
        if self._environment is None:
            self._environment = open_lmdb_readonly(self.lmdb_path)
        with self._environment.begin(write=False) as transaction:
            value = transaction.get(bytes(locator))
        if value is None:
            raise KeyError("key not in the database")
        with Image.open(io.BytesIO(value)) as opened:
            opened.load()
            image = to_mode(opened, "RGB")
        return resize_short_side_then_center_crop(image, self.resolution, Image.Resampling.BOX)

    def describe(self, locator: Any) -> str:
        return f"{self.lmdb_path}#{bytes(locator).decode('ascii', 'replace')}"


def list_lmdb_keys(lmdb_path: Path, limit: int | None) -> list[SourceItem]:
    """Items for the first ``limit`` keys (all by default) in the database's sorted key order."""
    if not Path(lmdb_path).exists():
        raise FileNotFoundError(f"lmdb database {lmdb_path} does not exist")
    items = []
    used: set[str] = set()
    environment = open_lmdb_readonly(lmdb_path)
    try:
        with environment.begin(write=False) as transaction:
            for raw_key in transaction.cursor().iternext(keys=True, values=False):
                text = raw_key.decode("ascii", "replace")
                key = text if KEY_RE.fullmatch(text) else sanitize_key(text)
                if key in used:
                    raise ValueError(f"lmdb keys {text!r} and another sanitise to the same sample key {key!r}")
                used.add(key)
                items.append(SourceItem(key=key, label=None, locator=bytes(raw_key)))
                if limit is not None and len(items) >= limit:
                    break
    finally:
        environment.close()
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.from_lsun_lmdb", description=__doc__.split("\n\n")[0])
    parser.add_argument("lmdb", type=Path, help="LSUN lmdb directory (holding data.mdb), e.g. bedroom_train_lmdb")
    parser.add_argument("--resolution", type=int, default=256, help="output side length (default 256)")
    parser.add_argument("--split", default="train", help="split name, used as the shard prefix (default train)")
    parser.add_argument("--name", default=None, help="dataset name for the card (default: lmdb folder name)")
    add_output_arguments(parser, default_format="jpg", default_shard_size=1000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging(args.log_level)
    items = list_lmdb_keys(args.lmdb, args.limit)
    if not items:
        print(f"error: lmdb database {args.lmdb} is empty", file=sys.stderr)
        return 1
    description = DatasetDescription(
        name=args.name or args.lmdb.resolve().name.removesuffix("_lmdb"),
        source=f"LSUN lmdb export {args.lmdb.resolve()}",
        resolution=args.resolution,
        channels=3,
        class_names=(),
        preprocessing=f"ADM LSUN recipe: short side to {args.resolution} with BOX filter, centre crop",
        command=command_line("data_tools.from_lsun_lmdb", arguments),
    )
    return run_conversion(args, LsunLmdbSource(args.lmdb.resolve(), args.resolution), {args.split: items}, description)


if __name__ == "__main__":
    sys.exit(run_cli(main))

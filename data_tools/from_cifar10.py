"""Convert CIFAR-10's python batches: ``python -m data_tools.from_cifar10 cifar-10-batches-py --out DIR``.

The directory is the extracted ``cifar-10-python.tar.gz``: ``data_batch_1`` .. ``data_batch_5`` (train),
``test_batch`` (test) and ``batches.meta`` (class names). Each batch is a Python 2 pickle of a dict with
``data`` (N x 3072 uint8, channel-major 32x32) and ``labels``. The pickles are read with an unpickler that
only admits what these files contain (numpy arrays and byte strings), since a pickle can run arbitrary
code. Keys are ``<batch>_<row>``, e.g. ``data_batch_1_00042``; labels are CIFAR's class indices.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from data_tools.cli_common import add_output_arguments, command_line, configure_logging, run_cli, run_conversion
from kacdist.data.convert import DatasetDescription, SourceItem

CIFAR_SPLIT_FILES: Final = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
}
CIFAR_META_FILE: Final = "batches.meta"
CIFAR_SIDE: Final = 32


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled numpy array needs; anything else is refused."""

    _ALLOWED: Final = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        if module.startswith("numpy") and module.endswith("multiarray"):
            return getattr(np._core.multiarray, name)
        return super().find_class(module, name)


def load_cifar_pickle(path: Path) -> dict[str, Any]:
    """Load one batch or meta file; byte-string dict keys (Python 2 pickles) become str."""
    with open(path, "rb") as handle:
        content = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    if not isinstance(content, dict):
        raise ValueError(f"{path} does not hold a dict")
    return {key.decode("ascii") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


class CifarSource:
    """Loads row ``r`` of batch file ``b`` as a 32x32 RGB image (resized if another resolution is asked)."""

    def __init__(self, directory: Path, resolution: int) -> None:
        self.directory = Path(directory)
        self.resolution = resolution
        self._batches: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_batches"] = {}
        return state

    @property
    def recipe(self) -> dict[str, Any]:
        resample = "bicubic" if self.resolution != CIFAR_SIDE else None
        return {"source": "cifar10-python", "resolution": self.resolution, "resample": resample}

    def _rows(self, batch_name: str) -> np.ndarray:
        if batch_name not in self._batches:
            data = np.asarray(load_cifar_pickle(self.directory / batch_name)["data"], dtype=np.uint8)
            self._batches[batch_name] = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
        return self._batches[batch_name]

    def load(self, locator: Any) -> Image.Image:
        batch_name, row = locator
        image = Image.fromarray(np.ascontiguousarray(self._rows(batch_name)[row].transpose(1, 2, 0)), mode="RGB")
        if self.resolution != CIFAR_SIDE:
            image = image.resize((self.resolution, self.resolution), resample=Image.Resampling.BICUBIC)
        return image

    def describe(self, locator: Any) -> str:
        batch_name, row = locator
        return f"{self.directory / batch_name}[{row}]"


def list_cifar_split(directory: Path, split: str) -> list[SourceItem]:
    items = []
    for batch_name in CIFAR_SPLIT_FILES[split]:
        path = directory / batch_name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch {path} is missing (give the extracted cifar-10-batches-py folder)")
        batch = load_cifar_pickle(path)
        labels = [int(label) for label in batch["labels"]]
        rows = np.asarray(batch["data"]).shape[0]
        if rows != len(labels):
            raise ValueError(f"{path}: {rows} images but {len(labels)} labels")
        items += [
            SourceItem(key=f"{batch_name}_{row:05d}", label=labels[row], locator=(batch_name, row))
            for row in range(rows)
        ]
    return items


def cifar_class_names(directory: Path) -> tuple[str, ...]:
    meta = load_cifar_pickle(directory / CIFAR_META_FILE)
    return tuple(name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in meta["label_names"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.from_cifar10", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the extracted cifar-10-batches-py folder")
    parser.add_argument("--splits", default="train,test", help="comma-separated splits to convert (default train,test)")
    parser.add_argument("--resolution", type=int, default=CIFAR_SIDE, help="output side (default 32; else bicubic)")
    add_output_arguments(parser, default_format="png", default_shard_size=1000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging(args.log_level)
    splits = [split.strip() for split in args.splits.split(",") if split.strip()]
    unknown = sorted(set(splits) - set(CIFAR_SPLIT_FILES))
    if unknown:
        print(f"error: unknown split(s) {unknown}; CIFAR-10 has {sorted(CIFAR_SPLIT_FILES)}", file=sys.stderr)
        return 1
    items_by_split = {split: list_cifar_split(args.source, split) for split in splits}
    description = DatasetDescription(
        name="cifar10",
        source=f"CIFAR-10 python batches {args.source.resolve()}",
        resolution=args.resolution,
        channels=3,
        class_names=cifar_class_names(args.source),
        preprocessing="none (native 32x32)" if args.resolution == CIFAR_SIDE else f"bicubic to {args.resolution}",
        command=command_line("data_tools.from_cifar10", arguments),
    )
    return run_conversion(args, CifarSource(args.source.resolve(), args.resolution), items_by_split, description)


if __name__ == "__main__":
    sys.exit(run_cli(main))

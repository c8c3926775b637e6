"""scikit-learn's digits as the project's embedded default dataset.

1,797 greyscale 8x8 digits (values 0..16, 10 classes) ship inside scikit-learn, so tests, smoke runs and
the CPU CI can train and evaluate without any download. They are stored as single-channel ("L") PNGs:
the data has one channel, a grey PNG is a third of the size, and the loader can still hand out 3 channels
(``channels=3``) when a model expects RGB.

Grey levels map 0..16 onto 0..255 (``round(v * 255 / 16)``) and the 8x8 grid is enlarged to a power of two
(default 16) by nearest-neighbour replication, which keeps the 17 original levels exact; ``bilinear`` is
available for smoother digits. The split is fixed: every sixth image (index % 6 == 5, 299 images) is
"test", the other 1,498 are "train"; the classes cycle through the file, so both splits are balanced.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from kacdist.data.convert import DatasetDescription, ShardLayout, SourceItem, convert_dataset
from kacdist.data.shards import shard_file_name

DIGITS_SPLITS: Final = ("train", "test")
DIGITS_TEST_EVERY: Final = 6
DIGITS_NATIVE_SIZE: Final = 8
DIGITS_MAX_VALUE: Final = 16
DIGITS_UPSAMPLING: Final = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float 0..16, targets (1797,) int), loaded once per process."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target, dtype=np.int64)


def digits_split_indices(split: str) -> list[int]:
    """Indices of the fixed train/test split (see the module docstring)."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"digits split must be one of {DIGITS_SPLITS}, not {split!r}")
    total = len(load_digits_arrays()[1])
    is_test = [index % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1 for index in range(total)]
    return [index for index in range(total) if is_test[index] == (split == "test")]


def _check_resolution(resolution: int) -> None:
    if resolution < DIGITS_NATIVE_SIZE or resolution & (resolution - 1):
        raise ValueError(f"digits resolution must be a power of two >= {DIGITS_NATIVE_SIZE}, not {resolution}")


class DigitsSource:
    """Loads digit ``index`` as a ``resolution`` x ``resolution`` grey image."""

    def __init__(self, resolution: int, upsample: str = "nearest") -> None:
        _check_resolution(resolution)
        if upsample not in DIGITS_UPSAMPLING:
            raise ValueError(f"upsample must be one of {sorted(DIGITS_UPSAMPLING)}, not {upsample!r}")
        self.resolution = resolution
        self.upsample = upsample

    @property
    def recipe(self) -> dict[str, Any]:
        return {
            "source": "sklearn-digits",
            "resolution": self.resolution,
            "upsample": self.upsample,
            "levels": "round(v*255/16)",
        }

    def load(self, locator: Any) -> Image.Image:
        images, _ = load_digits_arrays()
        grey = np.rint(images[int(locator)] * (255.0 / DIGITS_MAX_VALUE)).astype(np.uint8)
        small = Image.fromarray(grey, mode="L")
        return small.resize((self.resolution, self.resolution), resample=DIGITS_UPSAMPLING[self.upsample])

    def describe(self, locator: Any) -> str:
        return f"sklearn.datasets.load_digits() image {int(locator)}"


def digits_items(split: str) -> list[SourceItem]:
    """Source items of one split; keys ``digits_NNNN`` use the index in scikit-learn's array."""
    _, targets = load_digits_arrays()
    return [
        SourceItem(key=f"digits_{index:04d}", label=int(targets[index]), locator=index)
        for index in digits_split_indices(split)
    ]


def digits_description(resolution: int, command: str) -> DatasetDescription:
    return DatasetDescription(
        name="digits",
        source="sklearn.datasets.load_digits (UCI optical recognition of handwritten digits, 8x8 grey, 0..16)",
        resolution=resolution,
        channels=1,
        class_names=tuple(str(digit) for digit in range(10)),
        preprocessing=(
            f"grey levels round(v*255/16); 8x8 enlarged to {resolution}x{resolution}; "
            f"split: index % {DIGITS_TEST_EVERY} == {DIGITS_TEST_EVERY - 1} is test"
        ),
        command=command,
    )


def write_digits_shards(
    out_dir: str | Path,
    resolution: int = 16,
    split: str = "train",
    *,
    samples_per_shard: int = 250,
    image_format: str = "png",
    upsample: str = "nearest",
    workers: int = 1,
) -> list[Path]:
    """Build (or confirm) the digits shards of ``split`` under ``out_dir`` and return their paths.

    Meant to be called by training code on first use of a cache directory: a second call, or a call by
    another rank at the same time, finds the finished shards by hash and only re-reads them (a few
    milliseconds). Both splits can share one directory.
    """
    dataset_dir = Path(out_dir)
    arguments = [f"out_dir={str(dataset_dir)!r}", f"resolution={resolution}", f"split={split!r}"]
    command = f"kacdist.data.digits.write_digits_shards({', '.join(arguments)})"
    report = convert_dataset(
        dataset_dir,
        DigitsSource(resolution, upsample),
        {split: digits_items(split)},
        ShardLayout(image_format=image_format, samples_per_shard=samples_per_shard),
        digits_description(resolution, command),
        workers=workers,
    )
    return [dataset_dir / shard_file_name(split, index) for index in range(report.splits[split].num_shards)]


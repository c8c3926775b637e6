"""Dataset settings from the card a converter wrote (``dataset.json`` beside the shards, kacdist.data.manifest).

A converted dataset knows its resolution, channels, classes and class names and how many images each split
holds, so ``dataset.path=<directory>`` is all a run needs: keys left unset (None) are taken from the card,
keys given explicitly must agree with it (a contradiction is refused, naming both values; only
``num_classes=0``, unconditional training on labelled data, may differ), labelled data trains class-conditional, the training shards are the card's, and a split small enough is held in memory.
Without a card every shape key must be given.
"""

from __future__ import annotations

import glob
from pathlib import Path

from kacdist.config.schema import DatasetConfig

CARD_KEYS = ("resolution", "channels", "num_classes")


class DatasetCardError(ValueError):
    """The dataset settings contradict the card, or cannot be completed."""


def card_directory(ds: DatasetConfig) -> Path | None:
    """Where the card of this dataset lives: ``dataset.path``, or the one directory the shard URLs are in."""
    if ds.path:
        return Path(ds.path).expanduser()
    if not ds.urls or ds.urls.startswith("pipe:") or "://" in ds.urls:
        return None
    parents = {Path(u).expanduser().parent for u in glob.glob(str(Path(ds.urls).expanduser()))}
    parents = parents or {Path(ds.urls.split("{")[0]).expanduser().parent}
    return parents.pop() if len(parents) == 1 else None


def read_dataset_card(directory: Path) -> dict | None:
    from kacdist.data.manifest import CARD_FILE_NAME, read_card

    return read_card(directory) if (directory / CARD_FILE_NAME).exists() else None


def complete_dataset(ds: DatasetConfig) -> DatasetConfig:
    """Fill the unset keys of a ``shards`` dataset from its card and check the set ones against it (in place)."""
    if ds.source != "shards":
        return _require_shape(ds, None)
    directory = card_directory(ds)
    card = read_dataset_card(directory) if directory is not None else None
    if ds.path and card is None and not ds.urls:
        ds.urls = str(Path(ds.path).expanduser() / "train-*.tar")  # the converters' shard names
    if card is not None:
        where = directory / "dataset.json"
        values = {"resolution": card.get("resolution"), "channels": card.get("channels"),
                  "num_classes": int(card.get("num_classes") or 0) if card.get("labelled", True) else 0}
        for key in CARD_KEYS:
            given, known = getattr(ds, key), values[key]
            if known is None:
                continue
            if given is None:
                setattr(ds, key, int(known))
            elif key == "num_classes" and given == 0:
                pass  # labelled data trained unconditionally, on purpose
            elif int(given) != int(known):
                raise DatasetCardError(
                    f"dataset.{key}={given} contradicts the dataset card {where} ({key}: {known}); leave the key out "
                    f"to use the card's value, or convert the images again for another {key}")
        if not ds.class_names and card.get("class_names") and ds.num_classes:
            ds.class_names = list(card["class_names"])
        if not ds.name:
            ds.name = str(card.get("name") or directory.name)
        train = (card.get("splits") or {}).get("train") or {}
        if not ds.urls and train.get("shards"):
            ds.urls = str(directory / train["shards"])
        if ds.in_memory is None and train.get("num_samples") and ds.resolution and ds.channels:
            decoded_mib = train["num_samples"] * ds.channels * ds.resolution**2 * 4 / 2**20  # float32
            ds.in_memory = decoded_mib <= ds.in_memory_limit_mib
    return _require_shape(ds, directory if ds.path else None)


def _require_shape(ds: DatasetConfig, directory: Path | None) -> DatasetConfig:
    missing = [key for key in CARD_KEYS if getattr(ds, key) is None]
    if missing:
        where = f"dataset.path={ds.path} has no dataset card ({directory / 'dataset.json'})" if directory is not None else \
            "there is no dataset card to read them from"
        raise DatasetCardError(
            f"{', '.join('dataset.' + k for k in missing)} not set and {where}: give dataset.path=<a directory written by "
            "python -m data_tools.from_folder (or another converter)>, or set them")
    if ds.in_memory is None:
        ds.in_memory = ds.source == "digits"
    if not ds.name:
        ds.name = "digits" if ds.source == "digits" else "data"
    return ds

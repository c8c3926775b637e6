"""The conversion engine shared by every dataset converter: plan shards, build them in parallel, resume.

A converter only describes its source: a list of :class:`SourceItem` per split (key, label, and a
picklable locator) and an :class:`ImageSource` that turns a locator into the final image. This module
does the rest the same way for all of them:

* the plan is deterministic (shard ``i`` of a split holds items ``i*n .. i*n+n-1``), so a rerun plans the
  same shards and can skip every one whose file still hashes to its recorded SHA-256 and whose plan
  fingerprint (keys, labels, recipe, encoding) is unchanged;
* shards are written atomically and recorded one by one in ``.progress/`` so a killed run loses at most
  the shards in flight; the Parquet manifest and the card are rewritten once at the end;
* a source image that fails to load or convert is logged by its path and skipped (recorded in the
  manifest's ``skipped`` column), or stops the run with :class:`SourceImageError` under ``strict``;
* the whole run holds the dataset directory's lock, so concurrent builders of one directory serialise.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import json
import logging
import multiprocessing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from kacdist.data.atomic import sha256_of_file
from kacdist.data.errors import SourceImageError
from kacdist.data.imaging import IMAGE_FORMATS, encode_image
from kacdist.data.manifest import (
    ShardRecord,
    clear_progress_records,
    dataset_lock,
    manifest_path,
    read_card,
    read_manifest,
    read_progress_records,
    write_card,
    write_manifest,
    write_progress_record,
)
from kacdist.data.shards import KEY_RE, SHARD_NAME_RE, ShardSample, shard_brace_pattern, shard_file_name, write_shard
from kacdist.progress import Progress

logger = logging.getLogger(__name__)

CARD_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SourceItem:
    """One image to convert: its sample key, class (None when unlabelled) and where the source finds it."""

    key: str
    label: int | None
    locator: Any


class ImageSource(Protocol):
    """What a converter provides: load an item as the final image and describe it for error reports.

    Implementations must be picklable (they are sent once to each worker process) and should open
    expensive handles (an lmdb environment, a pickle batch) lazily inside the worker.
    """

    @property
    def recipe(self) -> dict[str, Any]:
        """JSON-able parameters that determine the output pixels (crop, resolution, filter)."""
        ...

    def load(self, locator: Any) -> Image.Image:
        """The item as a ``resolution`` x ``resolution`` image in mode "RGB" or "L"."""
        ...

    def describe(self, locator: Any) -> str:
        """Where the item comes from (a file path, ``lmdb-dir#key``), for reports."""
        ...


@dataclass(frozen=True)
class ShardLayout:
    """How samples are encoded and grouped: image format, JPEG/WebP quality, samples per shard."""

    image_format: str = "png"
    quality: int = 95
    samples_per_shard: int = 1000

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, not {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, not {self.quality}")
        if self.samples_per_shard < 1:
            raise ValueError(f"samples per shard must be positive, not {self.samples_per_shard}")


@dataclass(frozen=True)
class DatasetDescription:
    """What the dataset card says about the data besides counts."""

    name: str
    source: str
    resolution: int
    channels: int
    class_names: tuple[str, ...]
    preprocessing: str
    command: str


@dataclass
class SplitReport:
    split: str
    num_shards: int = 0
    num_written: int = 0
    num_reused: int = 0
    num_samples: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    dataset_dir: Path
    splits: dict[str, SplitReport]

    @property
    def num_skipped(self) -> int:
        return sum(len(report.skipped) for report in self.splits.values())


@dataclass(frozen=True)
class _ShardTask:
    dataset_dir: Path
    split: str
    index: int
    shard_name: str
    items: tuple[SourceItem, ...]
    plan_digest: str
    layout: ShardLayout
    resolution: int
    channels: int
    num_classes: int
    strict: bool
    previous: ShardRecord | None


@dataclass(frozen=True)
class _ShardOutcome:
    record: ShardRecord
    reused: bool


_worker_source: ImageSource | None = None
"""The source of the current worker process, installed once by the pool initializer."""


def _install_source(source: ImageSource | None) -> None:
    global _worker_source
    _worker_source = source


def _plan_digest(recipe: Mapping[str, Any], layout: ShardLayout, items: Sequence[SourceItem]) -> str:
    encoding = {"format": layout.image_format, "quality": None if layout.image_format == "png" else layout.quality}
    payload = {"recipe": recipe, "encoding": encoding, "items": [[item.key, item.label] for item in items]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _is_reusable(task: _ShardTask, path: Path) -> bool:
    previous = task.previous
    return (
        previous is not None
        and previous.plan_digest == task.plan_digest
        and path.is_file()
        and path.stat().st_size == previous.num_bytes
        and sha256_of_file(path) == previous.sha256
    )


def _encode_item(source: ImageSource, item: SourceItem, task: _ShardTask) -> ShardSample:
    image = source.load(item.locator)
    expected_mode = "RGB" if task.channels == 3 else "L"
    if image.size != (task.resolution, task.resolution) or image.mode != expected_mode:
        raise ValueError(
            f"source produced a {image.size[0]}x{image.size[1]} {image.mode} image, "
            f"expected {task.resolution}x{task.resolution} {expected_mode}"
        )
    data = encode_image(image, task.layout.image_format, task.layout.quality)
    return ShardSample(key=item.key, image_format=task.layout.image_format, image=data, label=item.label)


def _build_shard(task: _ShardTask) -> _ShardOutcome:
    """Write one shard (or confirm the existing file) and record it in ``.progress/``."""
    source = _worker_source
    if source is None:
        raise RuntimeError("no image source installed in this process")
    path = task.dataset_dir / task.shard_name
    if task.previous is not None and _is_reusable(task, path):
        return _ShardOutcome(record=task.previous, reused=True)
    samples: list[ShardSample] = []
    skipped: list[str] = []
    for item in task.items:
        try:
            samples.append(_encode_item(source, item, task))
        except Exception as error:  # any failure of one source image: PIL, lmdb and numpy raise many types
            where = source.describe(item.locator)
            if task.strict:
                raise SourceImageError(f"bad source image {where}: {error}") from error
            logger.warning("skipping bad source image %s: %s", where, error)
            skipped.append(f"{where}: {error}")
    written = write_shard(path, samples)
    counts = [0] * task.num_classes
    for sample in samples:
        if sample.label is not None:
            counts[sample.label] += 1
    record = ShardRecord(
        shard=task.shard_name,
        split=task.split,
        index=task.index,
        num_samples=len(samples),
        num_bytes=written.num_bytes,
        sha256=written.sha256,
        class_counts=tuple(counts),
        keys=tuple(sample.key for sample in samples),
        skipped=tuple(skipped),
        image_format=task.layout.image_format,
        plan_digest=task.plan_digest,
    )
    write_progress_record(task.dataset_dir, record)
    return _ShardOutcome(record=record, reused=False)


def _check_items(items_by_split: Mapping[str, Sequence[SourceItem]], num_classes: int) -> None:
    seen: set[str] = set()
    for split, items in items_by_split.items():
        shard_file_name(split, 0)
        for item in items:
            if not KEY_RE.fullmatch(item.key):
                raise ValueError(f"sample key {item.key!r} of split {split} must match {KEY_RE.pattern}")
            if item.key in seen:
                raise ValueError(f"duplicate sample key {item.key!r} (keys must be unique across splits)")
            seen.add(item.key)
            if item.label is not None and not 0 <= item.label < num_classes:
                raise ValueError(f"label {item.label} of {item.key!r} is outside 0..{num_classes - 1}")


def _check_card_compatible(card: Mapping[str, Any], description: DatasetDescription, splits: Sequence[str]) -> None:
    """Refuse to mix resolutions, channel counts or class lists across one directory's splits."""
    other_splits = set(card.get("splits", {})) - set(splits)
    if not other_splits:
        return
    for field_name in ("resolution", "channels", "class_names"):
        existing = card.get(field_name)
        wanted = getattr(description, field_name)
        if existing is not None and existing != (list(wanted) if isinstance(wanted, tuple) else wanted):
            raise ValueError(
                f"{field_name} {wanted} conflicts with {existing} of splits "
                f"{sorted(other_splits)} already in this directory; convert into another directory"
            )


def _run_tasks(source: ImageSource, tasks: list[_ShardTask], workers: int, bar: Progress) -> list[_ShardOutcome]:
    outcomes: list[_ShardOutcome] = []

    def log_outcome(outcome: _ShardOutcome) -> None:
        record = outcome.record
        state = "reused (hash verified)" if outcome.reused else "written"
        # each shard's line only on request: the progress line counts images with rate and ETA
        logger.debug(
            "%s %s: %d samples, %d skipped [%d/%d]",
            record.shard, state, record.num_samples, len(record.skipped), len(outcomes), len(tasks),
        )
        bar.update(record.num_samples + len(record.skipped))  # the shard's source images

    if workers <= 1 or len(tasks) <= 1:
        _install_source(source)
        try:
            for task in tasks:
                outcomes.append(_build_shard(task))
                log_outcome(outcomes[-1])
        finally:
            _install_source(None)
        return outcomes
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_install_source, initargs=(source,)
    ) as pool:
        futures = [pool.submit(_build_shard, task) for task in tasks]
        try:
            for future in concurrent.futures.as_completed(futures):
                outcomes.append(future.result())
                log_outcome(outcomes[-1])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return outcomes


def _remove_stale_shards(dataset_dir: Path, split: str, num_shards: int) -> None:
    """Delete shards of ``split`` beyond the new plan (left by an earlier run with smaller shards)."""
    for path in dataset_dir.glob(f"{split}-*.tar"):
        match = SHARD_NAME_RE.match(path.name)
        if match and match["split"] == split and int(match["index"]) >= num_shards:
            logger.info("removing stale shard %s (not part of the new plan)", path)
            path.unlink()


def _split_card_entry(report: SplitReport, command: str) -> dict[str, Any]:
    return {
        "num_samples": report.num_samples,
        "num_shards": report.num_shards,
        "num_skipped": len(report.skipped),
        "shards": shard_brace_pattern(report.split, report.num_shards) if report.num_shards else "",
        "command": command,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def convert_dataset(
    out_dir: Path,
    source: ImageSource,
    items_by_split: Mapping[str, Sequence[SourceItem]],
    layout: ShardLayout,
    description: DatasetDescription,
    *,
    workers: int = 1,
    strict: bool = False,
    progress: bool = False,
) -> ConversionReport:
    """Convert the given splits of ``source`` into shards + manifest + card under ``out_dir``.

    Splits already in ``out_dir`` but not named here are kept. Returns per-split counts, including how
    many shards were reused from an earlier run and which source images were skipped. ``progress``: show
    the source images done (written, skipped or found in a reused shard) with rate and ETA (kacdist.progress).
    """
    dataset_dir = Path(out_dir)
    num_classes = len(description.class_names)
    _check_items(items_by_split, num_classes)
    with dataset_lock(dataset_dir):
        card = read_card(dataset_dir)
        _check_card_compatible(card, description, list(items_by_split))
        existing = read_manifest(dataset_dir) if manifest_path(dataset_dir).is_file() else []
        previous = {record.shard: record for record in existing}
        previous.update({record.shard: record for record in read_progress_records(dataset_dir)})
        tasks: list[_ShardTask] = []
        reports = {split: SplitReport(split=split) for split in items_by_split}
        per_shard = layout.samples_per_shard
        for split, items in items_by_split.items():
            chunks = [tuple(items[start : start + per_shard]) for start in range(0, len(items), per_shard)]
            reports[split].num_shards = len(chunks)
            for index, chunk in enumerate(chunks):
                name = shard_file_name(split, index)
                tasks.append(
                    _ShardTask(
                        dataset_dir=dataset_dir,
                        split=split,
                        index=index,
                        shard_name=name,
                        items=chunk,
                        plan_digest=_plan_digest(source.recipe, layout, chunk),
                        layout=layout,
                        resolution=description.resolution,
                        channels=description.channels,
                        num_classes=num_classes,
                        strict=strict,
                        previous=previous.get(name),
                    )
                )
        total = sum(len(task.items) for task in tasks)
        with Progress(total, f"convert {dataset_dir.name}", unit="img", enabled=progress) as bar:
            outcomes = _run_tasks(source, tasks, workers, bar)
        for outcome in outcomes:
            report = reports[outcome.record.split]
            report.num_samples += outcome.record.num_samples
            report.skipped.extend(outcome.record.skipped)
            if outcome.reused:
                report.num_reused += 1
            else:
                report.num_written += 1
        for split, report in reports.items():
            _remove_stale_shards(dataset_dir, split, report.num_shards)
        kept = [record for record in existing if record.split not in items_by_split]
        write_manifest(dataset_dir, kept + [outcome.record for outcome in outcomes])
        card.update(
            {
                "format_version": CARD_FORMAT_VERSION,
                "name": description.name,
                "source": description.source,
                "resolution": description.resolution,
                "channels": description.channels,
                "labelled": num_classes > 0,
                "num_classes": num_classes,
                "class_names": list(description.class_names),
                "image_format": layout.image_format,
                "quality": None if layout.image_format == "png" else layout.quality,
                "samples_per_shard": layout.samples_per_shard,
                "preprocessing": description.preprocessing,
                "recipe": source.recipe,
                "manifest": manifest_path(dataset_dir).name,
            }
        )
        splits = card.setdefault("splits", {})
        for split, report in reports.items():
            splits[split] = _split_card_entry(report, description.command)
        write_card(dataset_dir, card)
        clear_progress_records(dataset_dir, [task.shard_name for task in tasks])
    return ConversionReport(dataset_dir=dataset_dir, splits=reports)

"""Checking a dataset directory against its manifest: every byte hashed, every sample decoded.

This is the offline counterpart of the loader's error handling. The loader can only notice damage that
breaks parsing or decoding; a flipped bit inside a JPEG or WebP payload still decodes (to wrong pixels),
so the SHA-256 in the manifest is the only thing that catches it. Problems are reported per shard and,
where it can be known, per key, so a damaged shard can be rebuilt (rerun the converter: it rewrites
exactly the shards whose hash no longer matches).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from kacdist.data.atomic import TEMP_MARKER, sha256_of_file
from kacdist.data.decode import UNLABELLED, SampleDecodeError, decode_sample
from kacdist.data.errors import TarFormatError
from kacdist.data.manifest import (
    MANIFEST_FILE_NAME,
    PROGRESS_DIR_NAME,
    ShardRecord,
    manifest_path,
    read_card,
    read_manifest,
)
from kacdist.data.shards import SHARD_NAME_RE
from kacdist.data.tarstream import iter_tar_samples
from kacdist.progress import Progress

KEYS_LISTED_PER_SHARD: Final = 10
"""Missing/unexpected keys named individually per shard before the rest is summarised."""


@dataclass(frozen=True)
class Problem:
    """One finding; ``kind`` is a stable short name (``hash-mismatch``, ``missing-key`` ...)."""

    kind: str
    shard: str
    key: str | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.shard} key {self.key}" if self.key else self.shard
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class VerifyReport:
    dataset_dir: Path
    shards_checked: int = 0
    samples_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ShardCheck:
    dataset_dir: Path
    record: ShardRecord
    resolution: int | None
    decode: bool


def _key_problems(kind: str, shard: str, keys: list[str], detail: str) -> list[Problem]:
    problems = [Problem(kind, shard, key, detail) for key in keys[:KEYS_LISTED_PER_SHARD]]
    if len(keys) > KEYS_LISTED_PER_SHARD:
        problems.append(Problem(kind, shard, None, f"and {len(keys) - KEYS_LISTED_PER_SHARD} more keys"))
    return problems


def verify_shard(check: ShardCheck) -> tuple[list[Problem], int]:
    """(problems, samples read) for one shard: existence, size, hash, tar structure, decoding, keys, counts."""
    record = check.record
    path = check.dataset_dir / record.shard
    if not path.is_file():
        return [Problem("missing-shard", record.shard, None, f"listed in {MANIFEST_FILE_NAME} but not on disk")], 0
    problems: list[Problem] = []
    size = path.stat().st_size
    if size != record.num_bytes:
        detail = f"{size} bytes on disk, manifest says {record.num_bytes}"
        problems.append(Problem("size-mismatch", record.shard, None, detail))
    digest = sha256_of_file(path)
    if digest != record.sha256:
        detail = f"sha256 {digest[:16]}..., manifest says {record.sha256[:16]}..."
        problems.append(Problem("hash-mismatch", record.shard, None, detail))
    keys_read: list[str] = []
    labels = Counter()
    with open(path, "rb") as stream:
        try:
            for key, members in iter_tar_samples(stream):
                keys_read.append(key)
                try:
                    if check.decode:
                        pixels, label = decode_sample(members, channels=3)
                        height, width = pixels.shape[:2]
                        if check.resolution is not None and (height, width) != (check.resolution, check.resolution):
                            raise SampleDecodeError(f"image is {width}x{height}, dataset card says {check.resolution}")
                    else:
                        label = UNLABELLED
                except SampleDecodeError as error:
                    problems.append(Problem("corrupt-sample", record.shard, key, str(error)))
                    continue
                labels[label] += 1
        except TarFormatError as error:
            problems.append(Problem("corrupt-shard", record.shard, error.key, str(error)))
    read = set(keys_read)
    listed = set(record.keys)
    missing = [key for key in record.keys if key not in read]
    unexpected = [key for key in keys_read if key not in listed]
    problems += _key_problems("missing-key", record.shard, missing, "listed in the manifest, not readable in the shard")
    problems += _key_problems("unexpected-key", record.shard, unexpected, "in the shard, not in the manifest")
    duplicates = sorted(key for key, count in Counter(keys_read).items() if count > 1)
    problems += _key_problems("duplicate-key", record.shard, duplicates, "appears more than once")
    if check.decode and not problems and record.class_counts:
        recounted = tuple(labels.get(label, 0) for label in range(len(record.class_counts)))
        if recounted != record.class_counts or sum(recounted) != len(keys_read):
            detail = f"counted {recounted}, manifest says {record.class_counts}"
            problems.append(Problem("class-counts-mismatch", record.shard, None, detail))
    if len(keys_read) != record.num_samples and not missing and not unexpected:
        detail = f"read {len(keys_read)} samples, manifest says {record.num_samples}"
        problems.append(Problem("count-mismatch", record.shard, None, detail))
    return problems, len(keys_read)


def _counted(results, checks: list[ShardCheck], bar: Progress):
    """The shards' results as they come (in order), the bar advanced by each shard's listed samples."""
    for check, result in zip(checks, results):
        bar.update(check.record.num_samples)
        yield result


def verify_dataset(dataset_dir: str | Path, *, workers: int = 1, decode: bool = True, progress: bool = False) -> VerifyReport:
    """Check every shard listed in the manifest and look for unlisted shards and leftovers. ``progress``: show the
    samples the manifest lists as their shards are checked, with rate and ETA (kacdist.progress)."""
    directory = Path(dataset_dir)
    report = VerifyReport(dataset_dir=directory)
    if not manifest_path(directory).is_file():
        report.problems.append(Problem("missing-manifest", str(directory), None, f"no {MANIFEST_FILE_NAME}"))
        return report
    records = read_manifest(directory)
    card = read_card(directory)
    if not card:
        report.warnings.append("no dataset card (dataset.json); image sizes are not checked")
    resolution = card.get("resolution")
    checks = [ShardCheck(directory, record, resolution, decode) for record in records]
    total = sum(record.num_samples for record in records)
    with Progress(total, f"verify {directory.name}", unit="img", enabled=progress) as bar:
        if workers > 1 and len(checks) > 1:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(checks)), mp_context=context) as pool:
                results = list(_counted(pool.map(verify_shard, checks), checks, bar))
        else:
            results = list(_counted(map(verify_shard, checks), checks, bar))
    for problems, samples in results:
        report.problems.extend(problems)
        report.samples_checked += samples
        report.shards_checked += 1
    listed = {record.shard for record in records}
    for path in sorted(directory.glob("*.tar")):
        if SHARD_NAME_RE.match(path.name) and path.name not in listed:
            detail = "shard file not in the manifest (a glob would read it)"
            report.problems.append(Problem("unlisted-shard", path.name, None, detail))
    for path in sorted(directory.glob(f".*{TEMP_MARKER}*")):
        report.warnings.append(f"leftover temporary file of an interrupted writer: {path.name}")
    if (directory / PROGRESS_DIR_NAME).is_dir():
        report.warnings.append(f"{PROGRESS_DIR_NAME}/ exists: a conversion was interrupted; rerun it to finish")
    return report

"""Data layer: WebDataset shards, their Parquet manifests, converters' engine and the batch streams.

Modules, one concern each:

* ``stream``     -- :func:`make_train_stream` / :func:`make_eval_stream` (torch; imported lazily here)
* ``ordering``   -- shard order per (rank, worker), evaluation split, shuffle buffer, seeds
* ``reader``     -- opening shard URLs (paths, ``pipe:``) and reading samples, damage recorded
* ``ledger``     -- counting distinct damaged samples/shards against ``max_errors``
* ``urls``       -- expanding paths, globs, brace lists and ``pipe:`` URLs, failing on empty matches
* ``tarstream``  -- strict streaming tar reader (checksums, truncation) grouping members into samples
* ``decode``     -- sample members -> pixels + label, shared by the streams and ``verify``
* ``shards``     -- deterministic shard writer and ``<split>-NNNNNN.tar`` naming
* ``manifest``   -- Parquet manifest rows, dataset card, directory lock, resume records
* ``convert``    -- the resumable, multi-process conversion engine the ``data_tools`` converters share
* ``imaging``    -- crops, resizes and PNG/JPEG/WebP encoding used by the converters
* ``digits``     -- scikit-learn digits, the embedded default dataset (:func:`write_digits_shards`)
* ``integrity``  -- re-hash and decode a dataset directory against its manifest
* ``atomic``     -- temp-file-and-rename writes and file hashes

The streams import torch; converters do not, so ``kacdist.data`` itself stays cheap to import in
converter worker processes and the torch-dependent names are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from kacdist.data.digits import write_digits_shards
from kacdist.data.errors import CorruptDataError, ShardListError, SourceImageError, TarFormatError
from kacdist.data.integrity import verify_dataset
from kacdist.data.manifest import ShardRecord, read_card, read_manifest
from kacdist.data.urls import expand_shard_urls

_LAZY_STREAM_NAMES = ("make_train_stream", "make_eval_stream", "ImageBatchStream")

__all__ = [
    "CorruptDataError",
    "ImageBatchStream",
    "ShardListError",
    "ShardRecord",
    "SourceImageError",
    "TarFormatError",
    "expand_shard_urls",
    "make_eval_stream",
    "make_train_stream",
    "read_card",
    "read_manifest",
    "verify_dataset",
    "write_digits_shards",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_STREAM_NAMES:
        return getattr(importlib.import_module("kacdist.data.stream"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

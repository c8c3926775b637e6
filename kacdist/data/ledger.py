"""Counting and reporting damaged data inside one data-loading process."""

from __future__ import annotations

import logging
from typing import Final

from kacdist.data.errors import CorruptDataError

logger = logging.getLogger(__name__)

RECENT_ERRORS_SHOWN: Final = 5
"""How many of the latest problems the threshold error message repeats."""


class ErrorLedger:
    """Counts distinct corrupt samples and unreadable shards in one data-loading process.

    Distinct, because a training stream re-reads every shard once per pass: a single bad image must not
    count again each pass and end a long run after ``max_errors`` passes.
    """

    def __init__(self, max_errors: int, scope: str) -> None:
        self.max_errors = max_errors
        self.scope = scope
        self.seen: dict[tuple[str, str], str] = {}

    @property
    def count(self) -> int:
        return len(self.seen)

    def record(self, shard: str, key: str, reason: str) -> None:
        """Log and count a problem at (shard, key); raise once more than ``max_errors`` were seen."""
        if (shard, key) in self.seen:
            return
        self.seen[(shard, key)] = reason
        logger.warning(
            "skipping corrupt data: shard=%s key=%s: %s [%d of at most %d tolerated in %s]",
            shard, key, reason, self.count, self.max_errors, self.scope,
        )
        if self.count > self.max_errors:
            recent = list(self.seen.items())[-RECENT_ERRORS_SHOWN:]
            details = "; ".join(f"shard={where[0]} key={where[1]}: {why}" for where, why in recent)
            raise CorruptDataError(
                f"{self.count} corrupt samples or unreadable shards in {self.scope} exceed max_errors="
                f"{self.max_errors}; run `python -m data_tools.verify <dataset dir>` to locate all damage. "
                f"Last {len(recent)}: {details}"
            )

"""Metrics rows appended during a run and written to Parquet (pyarrow) atomically at each checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            self.rows = pq.read_table(path).to_pylist()

    def append(self, row: dict) -> None:
        # a resumed run may replay steps after the last checkpoint: keep one row per step, the newest
        self.rows = [r for r in self.rows if r.get("step") != row.get("step")]
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        pq.write_table(pa.Table.from_pylist(self.rows), tmp)
        os.replace(tmp, self.path)

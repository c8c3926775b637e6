"""Metrics rows appended during a run and written to Parquet (pyarrow) atomically at each checkpoint."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kacdist.atomic import atomic_output


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            self.rows = pq.read_table(path).to_pylist()

    def append(self, row: dict) -> None:
        """Merge ``row`` into the row of the same step (a resumed run replays the steps after its last
        checkpoint, and training and evaluation both report at some steps)."""
        for existing in self.rows:
            if existing.get("step") == row.get("step"):
                existing.update(row)
                return
        self.rows.append(dict(row))

    def drop_after(self, step: int) -> None:
        """Forget rows after ``step``: a run resumed there replays those steps, so each step stays once."""
        self.rows = [r for r in self.rows if r.get("step") is None or r["step"] <= step]

    def flush(self) -> None:
        if not self.rows:
            return
        with atomic_output(self.path) as temp:
            pq.write_table(pa.Table.from_pylist(self.rows), temp)

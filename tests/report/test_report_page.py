"""stage=report on a real run (teacher, ladder 4 → 2 → 1, stage=eval; tests/report/conftest.py), opened in a
real headless chromium: every image of the page loads, the screenshot is not blank, and the page shows the
run's numbers (the evaluation's FD per configuration, the teacher's kimg, each stage's status and the
trajectory fits). Chromium missing: skipped, or a failure under KACDIST_REQUIRE_CHROMIUM=1 (.ci/run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kacdist.config import load_config
from kacdist.stages.dispatch import run


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("KACDIST_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is not on PATH and KACDIST_REQUIRE_CHROMIUM=1 (.ci/run installs Debian's chromium)")
    pytest.skip("chromium is not on PATH: apt-get install -y --no-install-recommends chromium")


def browse(page: Path, profile: Path, *flags: str) -> str:
    """Chromium's stdout for ``page`` (headless, its own profile directory so nothing lands in $HOME)."""
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           *flags, page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_opens_in_chromium_with_every_image_loaded_and_the_runs_numbers(report_run, tmp_path, capsys):
    from PIL import Image

    # the ladder command (report.after_stage) wrote the report once its evaluation had finished
    cache = report_run.root / "report" / "trajectories.parquet"
    written = (report_run.root / "report" / "report.html").stat().st_mtime_ns
    assert written >= (report_run.root / "eval" / "fd_vs_nfe.parquet").stat().st_mtime_ns and cache.exists()
    before = cache.stat().st_mtime_ns
    page = run(load_config(["stage=report"] + report_run.args))
    assert page == (report_run.root / "report" / "report.html").resolve()
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {page}"
    assert cache.stat().st_mtime_ns == before  # the discrepancies came from the cache, keyed by the same checkpoints

    html = page.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 12 and all((page.parent / s).is_file() for s in sources)
    assert "sample-distill-2-1-euler-1-w1.png" in sources  # the stage=sample grid
    dom = browse(page, tmp_path / "profile", "--dump-dom")
    loaded = re.search(r'<body[^>]*data-images-loaded="(\d+)"[^>]*data-images-total="(\d+)"', dom)
    assert loaded is not None, dom[:500]
    assert int(loaded.group(1)) == int(loaded.group(2)) == len(sources)

    shot = tmp_path / "report.png"
    browse(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000")
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        grey = np.asarray(image.convert("L"))
    assert grey.std() > 10 and len(np.unique(grey)) > 50  # text, tables and plots, not an empty page

    rows = pq.read_table(report_run.root / "eval" / "fd_vs_nfe.parquet").to_pylist()
    assert {r["model"] for r in rows} == {"real", "teacher", "distill-4-2", "distill-2-1"}
    for r in rows:  # one seed: each row is its configuration's mean
        assert f'<td class="num">{r["fd"]:.2f}</td>' in dom, (r["model"], r["integrator"], r["steps"], r["fd"])
    assert '<td class="num">0.032 / 0.032</td>' in dom  # the teacher's kimg done of total
    assert dom.count('<span class="status-finished">finished</span>') >= 6  # 3 stages, in the table and headings
    for stage in ("teacher", "distill-4-2", "distill-2-1", "eval", "sample"):  # every stage records where it came from
        assert f"Provenance of {stage}: 1 attempt" in dom, stage
    fits = pq.read_table(report_run.root / "report" / "trajectories.parquet").to_pylist()
    for stage in ("distill-4-2", "distill-2-1"):
        r = next(f for f in fits if f["stage"] == stage)
        assert f"{stage}</td><td>" in dom and f'<td class="num">{r["pearson_r"]:.3f}</td>' in dom

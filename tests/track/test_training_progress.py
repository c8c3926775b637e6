"""Training progress: in log mode the loop's periodic line carries kimg of the total and the time left (and
no second periodic line is added); on a terminal a tqdm bar on stderr, with log lines written above it instead
of tearing it; nothing from a rank other than 0. The real micro UNet on real digits, 4 steps."""

from __future__ import annotations

import logging
import re
import sys

import pytest

from kacdist.config import load_config
from kacdist.train.batches import InMemoryBatches
from kacdist.train.teacher import train_teacher
from kacdist.train.workers import Workers
from tests.train.test_teacher import MICRO, _micro_model

STEPS = ["train.total_kimg=0.064", "train.checkpoint_every_kimg=0.064", "train.log_every_kimg=0.016"]


def _train(tmp_path, data, workers=None):
    cfg = load_config(MICRO + STEPS + [f"runs_dir={tmp_path}"])
    x, y = data
    return train_teacher(cfg, tmp_path / "teacher", model=_micro_model(cfg),
                         batches=InMemoryBatches(x, y, cfg.train.batch_size, cfg.train.seed), workers=workers)


def test_log_mode_lines_carry_kimg_of_total_and_eta(tmp_path, digits, monkeypatch, caplog):
    monkeypatch.setenv("KACDIST_PROGRESS", "log")
    with caplog.at_level(logging.INFO):
        assert _train(tmp_path, digits).step == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "kacdist.train.loop" and " step " in r.getMessage()]
    assert [re.search(r"step (\d+/\d+)", line).group(1) for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(re.search(r"kimg 0\.\d{3}/0\.064 .* img/s .* ETA \d+:\d\d:\d\d$", line) for line in lines), lines
    assert lines[-1].endswith("ETA 0:00:00")
    assert not [r for r in caplog.records if r.name == "kacdist.progress"]  # one periodic line, not two


def test_bar_mode_draws_a_bar_and_log_lines_go_above_it(tmp_path, digits, monkeypatch, capfd):
    monkeypatch.setenv("KACDIST_PROGRESS", "bar")
    console = logging.StreamHandler(sys.stderr)  # what setup_logging installs: a console handler on the root
    console.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(console)
    monkeypatch.setattr(root, "level", logging.INFO)
    try:
        _train(tmp_path, digits)
    finally:
        root.removeHandler(console)
    err = capfd.readouterr().err
    assert re.search(r"teacher: 100%\|.*\| 64\.0/64\.0 \[.*img/s", err), err
    logged = [line for line in err.split("\n") if "kacdist.train.loop: teacher step" in line]
    assert len(logged) == 4
    # each log line starts a line of its own: the bar was cleared first (a torn one would precede it)
    assert all(line.rsplit("\r", 1)[-1].startswith("kacdist.train.loop: teacher step") for line in logged), logged


def test_a_rank_other_than_0_shows_nothing(tmp_path, digits, monkeypatch, capfd, caplog):
    monkeypatch.setenv("KACDIST_PROGRESS", "bar")
    with caplog.at_level(logging.INFO):
        result = _train(tmp_path, digits, Workers(rank=1))
    assert result.step == 4
    assert capfd.readouterr().err == ""
    assert not [r for r in caplog.records if r.name in ("kacdist.train.loop", "kacdist.progress")]
    assert not (tmp_path / "teacher" / "metrics.parquet").exists()  # rank 0 alone writes


@pytest.mark.parametrize("mode", ["log", "bar"])
def test_progress_disabled_shows_nothing(mode, capfd, caplog):
    from kacdist.progress import Progress

    with caplog.at_level(logging.INFO), Progress(10, "x", enabled=False, interval_s=0, mode=mode) as progress:
        progress.update(10)
    assert progress.mode == "off" and capfd.readouterr().err == "" and not caplog.records

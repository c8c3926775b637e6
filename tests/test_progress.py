"""kacdist.progress: plain log lines with rate and ETA off a terminal, a tqdm bar on request, nothing when
disabled; sampling advances it batch by batch; a real converter run through pipes writes plain lines."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
import torch

from kacdist.progress import Progress, progress_mode

LOG_LINE = re.compile(r"^copy (\d+)/10 img \((\d+)%\)  [0-9.]+k? img/s  ETA \d+:\d\d:\d\d  loss=0\.5$")


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kacdist.progress"]


def test_log_mode_writes_rate_and_eta_at_each_interval_and_the_end(caplog, capsys):
    caplog.set_level(logging.INFO, logger="kacdist.progress")
    with Progress(10, "copy", unit="img", mode="log", interval_s=0) as bar:
        bar.postfix(loss=0.5)
        for _ in range(5):
            bar.update(2)
    lines = _lines(caplog)
    assert len(lines) == 5, lines  # one per update at interval 0; close does not repeat the last
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert LOG_LINE.match(lines[-1]).groups() == ("10", "100")
    assert "\r" not in capsys.readouterr().err


def test_log_mode_waits_for_its_interval_but_always_ends_with_a_line(caplog):
    caplog.set_level(logging.INFO, logger="kacdist.progress")
    with Progress(10, "copy", unit="img", mode="log", interval_s=3600) as bar:
        bar.postfix(loss=0.5)
        bar.update(4)
        bar.update(6)
    assert [LOG_LINE.match(line).groups() for line in _lines(caplog)] == [("10", "100")]


def test_disabled_shows_no_progress_whatever_the_mode(caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("KACDIST_PROGRESS", "bar")
    with Progress(10, "copy", enabled=False) as bar:
        bar.update(10)
        bar.write("a message is still a log record")
    assert bar.mode == "off" and _lines(caplog) == ["a message is still a log record"]
    assert capsys.readouterr() == ("", "")


def test_forced_bar_is_tqdm_on_stderr(capsys, monkeypatch):
    monkeypatch.setenv("KACDIST_PROGRESS", "bar")
    with Progress(10, "copy", unit="img") as bar:
        bar.update(10)
    err = capsys.readouterr().err
    assert "\r" in err and "copy: 100%|" in err and "img/s]" in err


def test_an_invalid_mode_is_refused_naming_the_choices(monkeypatch):
    monkeypatch.setenv("KACDIST_PROGRESS", "loud")
    with pytest.raises(ValueError, match="KACDIST_PROGRESS='loud' is invalid; choose one of bar, log, off"):
        progress_mode()
    monkeypatch.setenv("KACDIST_PROGRESS", "LOG")  # case and spaces do not matter
    assert progress_mode() == "log"


def test_sampling_advances_the_bar_by_each_batch(caplog):
    """The real tiny UNet and Kac prior: 5 images in batches of 2 are three updates (2, 2, 1)."""
    from kacdist.config import load_config
    from kacdist.kac import KacProcess
    from kacdist.sampling import generate
    from kacdist.train.teacher import build_model

    caplog.set_level(logging.INFO, logger="kacdist.progress")
    cfg = load_config([])
    torch.manual_seed(0)
    model = build_model(cfg)
    with Progress(5, "sample", unit="img", mode="log", interval_s=0) as bar:
        generate(model, KacProcess(25.0, 2.0), (1, 16, 16), list(range(5)), torch.arange(5) % 10, "euler", 1, 1.0,
                 batch_size=2, progress=bar)
    assert bar.n == 5
    assert [line.split(" img")[0] for line in _lines(caplog)] == ["sample 2/5", "sample 4/5", "sample 5/5"]


def test_inception_statistics_count_its_batches_and_match_one_pass(tmp_path, caplog, monkeypatch):
    """Fed in the network's batches for the count, the statistics equal one pass's to rounding; a reference
    computed on a cache miss shows its progress."""
    from kacdist.eval.inception import InceptionFID
    from kacdist.eval.stats import cached_reference_stats, compute_stats

    caplog.set_level(logging.INFO, logger="kacdist.progress")
    fid = InceptionFID(device="cpu", batch_size=2)
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with Progress(5, "features", unit="img", mode="log", interval_s=0) as bar:
        counted = compute_stats(fid, images, progress=bar)
    assert [line.split(" img")[0] for line in _lines(caplog)] == ["features 2/5", "features 4/5", "features 5/5"]
    whole = compute_stats(fid, images)
    assert counted.n == whole.n == 5
    torch.testing.assert_close(torch.from_numpy(counted.mu), torch.from_numpy(whole.mu), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.from_numpy(counted.sigma), torch.from_numpy(whole.sigma), rtol=1e-9, atol=1e-9)
    caplog.clear()
    monkeypatch.setenv("KACDIST_PROGRESS", "log")
    cached_reference_stats(fid, "five", images[:4], tmp_path, max_samples=4, progress=True)
    assert [line.split("  ")[0] for line in _lines(caplog)] == ["reference five 4/4 img (100%)"]


def test_a_conversion_through_pipes_prints_plain_progress_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KACDIST_PROGRESS"}
    out = subprocess.run([sys.executable, "-m", "data_tools.from_digits", "--out", str(tmp_path / "d"), "--resolution", "8",
                          "--splits", "test"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout + out.stderr  # no bar off a terminal
    assert re.search(r"kacdist\.progress: convert d 299/299 img \(100%\)  [0-9.]+k? img/s  ETA 0:00:00$", out.stderr,
                     re.MULTILINE), out.stderr

"""stage=tune on a real Ray Tune (2 CPUs, no deadlock): a sweep with a deliberately bad setting where ASHA
stops a trial, its results and best setting, which then trains a teacher; an interrupted sweep restored by
rerunning the command, finishing only the unfinished trials; and one trial that drives Ray Train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LAUNCH = str(REPO / "jobs" / "launch.py")
# trials of 4 steps of 64 digits, scored twice (after 2 and 4 steps) on 100 samples: seconds each
SMALL = ["stage=tune", "train.batch_size=64", "tune.trial_kimg=0.256", "tune.report_every_kimg=0.128",
         "tune.grace_kimg=0.128", "train.eval_samples=100", "train.threads=1"]


def launch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, LAUNCH, *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    return out


def test_a_sweep_stops_weak_trials_and_its_best_setting_trains_a_teacher(tmp_path):
    # the bad setting: c = 0.05 puts the whole prior within ±0.05 of 0, far from the data's ±1
    out = launch(*SMALL, f"runs_dir={tmp_path}", "tune.settings=[25/2/t,0.5/0.05/t,3000/20/t2]", "tune.spread_seeds=[1]")
    root = tmp_path / "digits" / "tune"
    assert out.stdout.startswith("proposal from the data: a=9.21 c=2 g=t")
    assert "kacdist.progress: sweep 4/4 trial (100%)" in out.stderr  # the driver's count of ended trials, off a terminal
    rows = pq.read_table(root / "trials.parquet").to_pylist()
    sweep = [r for r in rows if r["origin"] != "spread"]
    assert len(sweep) == 4 and {r["origin"] for r in sweep} == {"given", "proposal"}
    assert any(r["stopped_early"] for r in sweep), rows  # ASHA cut at least one trial at its first rung
    bad = next(r for r in sweep if r["c"] == 0.05)
    assert bad["stopped_early"] and bad["kimg"] == 0.128
    finished = [r for r in sweep if not r["stopped_early"]]
    assert all(r["kimg"] == 0.256 and len(r["metric_history"]) == 2 for r in finished)
    winner = min(finished, key=lambda r: r["final_metric"])
    spread = [r for r in rows if r["origin"] == "spread"]
    assert [(r["a"], r["c"], r["g"], r["seed"]) for r in spread] == [(winner["a"], winner["c"], winner["g"], 1)]
    assert (root / "heatmap.png").stat().st_size > 10_000
    summary = (root / "summary.md").read_text()
    assert "Seed-to-seed spread of the winner (2 training seeds)" in summary and "proposal" in summary
    best = root / "best.yaml"
    assert f"a: {winner['a']:g}" in best.read_text()
    assert f"settings={best}" in out.stdout
    # the form the sweep prints is what stage=teacher takes
    launch("stage=teacher", f"settings={best}", f"runs_dir={tmp_path}", "run_name=best", "train.total_kimg=0.128",
           "train.batch_size=64", "eval.after_teacher=false", "sample.num_images=4", "sample.steps=2")
    trained = (tmp_path / "best" / "teacher" / "config.yaml").read_text()
    assert f"a: {float(winner['a'])}" in trained and f"g: {winner['g']}" in trained


def test_an_interrupted_sweep_is_restored_and_finishes_only_the_unfinished_trials(tmp_path):
    args = [*SMALL, f"runs_dir={tmp_path}", "tune.settings=[25/2/t,100/5/t,900/10/t2]", "tune.proposal=false",
            "tune.spread_seeds=[]", "tune.grace_kimg=0.256"]  # no early stop: every trial runs its budget
    trials = tmp_path / "digits" / "tune" / "trials"
    first = trials / "a25-c2-gt-seed0" / "teacher"
    proc = subprocess.Popen([sys.executable, LAUNCH, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the first trial has reported its last evaluation
        if (first / "metrics.parquet").exists() and any(
                r.get("fd") is not None and r["step"] == 4 for r in pq.read_table(first / "metrics.parquet").to_pylist()):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError(proc.stdout.read())
    sweep = tmp_path / "digits" / "tune" / "ray" / "sweep"
    while time.monotonic() < deadline and not any(sweep.glob("_trial_*_00001_*")):
        time.sleep(0.1)
    # Ctrl-C as Tune starts the second trial, before its first report (the Result Tune keeps for it then has no
    # config): Tune saves the experiment state and stops
    proc.send_signal(signal.SIGINT)
    interrupted, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, interrupted[-4000:]  # "interrupted: rerun the same command to resume ..."
    stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    assert not (tmp_path / "digits" / "tune" / "trials.parquet").exists()  # the sweep did not finish
    out = launch(*args)
    assert "restoring" in out.stdout + out.stderr
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == stamp  # the finished trial was kept
    rows = pq.read_table(tmp_path / "digits" / "tune" / "trials.parquet").to_pylist()
    assert sorted(r["trial"] for r in rows) == ["a100-c5-gt-seed0", "a25-c2-gt-seed0", "a900-c10-gt2-seed0"]
    assert all(r["kimg"] == 0.256 and len(r["metric_history"]) == 2 for r in rows), rows


def test_a_trial_can_drive_ray_train_workers(tmp_path):
    out = launch(*SMALL, f"runs_dir={tmp_path}", "tune.settings=[25/2/t]", "tune.proposal=false", "tune.spread_seeds=[]",
                 "cluster.workers=2")
    rows = pq.read_table(tmp_path / "digits" / "tune" / "trials.parquet").to_pylist()
    assert len(rows) == 1 and rows[0]["kimg"] == 0.256 and len(rows[0]["metric_history"]) == 2, (rows, out.stdout)
    trial = tmp_path / "digits" / "tune" / "trials" / "a25-c2-gt-seed0"
    assert (trial / "ray" / "teacher").is_dir()  # trained through the Ray Train path
    assert json.loads((trial / "teacher" / "DONE").read_text())["step"] == 4

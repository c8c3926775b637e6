"""The report of runs that lack parts: figures from rows without data, a stage stopped part-way or still
running beside ladder stages that never started, a sweep without training stages, a report without
trajectories (report.trajectory_samples=0), and a run directory that does not exist."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kacdist.config import load_config
from kacdist.report import plots, run_report
from kacdist.report.collect import collect
from kacdist.stages.common import RunNotFoundError


def test_figures_are_left_out_when_their_rows_hold_nothing_to_draw(tmp_path):
    assert plots.training_curves([], "t", tmp_path / "a.png") is None
    assert plots.training_curves([{"step": 4, "kimg": 0.1, "fd": 3.0}], "t", tmp_path / "a.png") is None  # no loss
    unvisited = {"step": 2, "kimg": 0.1, "loss": 1.0, "velocity_bound": 32.0,
                 **{f"velocity_l2_bin{i}": None for i in range(10)}}
    assert plots.velocity_bins([unvisited], "t", tmp_path / "v.png") is None
    assert plots.fd_vs_nfe([], tmp_path / "f.png") is None
    assert plots.fd_vs_nfe([{"model": "teacher", "integrator": "ab2", "steps": 4, "guidance": 1.2, "nfe": 4,
                             "fd": float("nan")}], tmp_path / "f.png") is None
    assert not list(tmp_path.iterdir())
    # a 1-step student visits only the last time bin: one point is drawn, and a loss row without lr still plots
    one_step = {**unvisited, "velocity_l2_bin9": 5.0}
    assert plots.velocity_bins([one_step], "t", tmp_path / "v.png") == tmp_path / "v.png"
    assert plots.training_curves([one_step], "t", tmp_path / "a.png") == tmp_path / "a.png"
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _partial_copy(report_run, tmp_path):
    """The fixture run's config and teacher, the teacher cut back to its first logged step without DONE or
    provenance: a teacher stopped at 0.016 of 0.032 kimg, and a ladder whose stages never started."""
    root = tmp_path / "runs" / "digits"
    root.mkdir(parents=True)
    shutil.copy(report_run.root / "config.yaml", root / "config.yaml")
    shutil.copytree(report_run.root / "teacher", root / "teacher", ignore=shutil.ignore_patterns("DONE", "provenance.json"))
    first = pq.read_table(root / "teacher" / "metrics.parquet").to_pylist()[:1]
    pq.write_table(pa.Table.from_pylist(first), root / "teacher" / "metrics.parquet")
    return root


def test_a_stopped_or_running_stage_shows_its_progress_and_unstarted_stages_are_listed(report_run, tmp_path):
    from kacdist.cluster import lock

    root = _partial_copy(report_run, tmp_path)
    cfg = load_config(["stage=report", f"report.run={root}"])
    stages = {s.name: s for s in collect(root, cfg).stages}
    assert list(stages) == ["teacher", "distill-4-2", "distill-2-1"]
    teacher = stages["teacher"]
    assert (teacher.status, teacher.kimg, teacher.total_kimg, teacher.done) == ("stopped", 0.016, 0.032, None)
    assert stages["distill-4-2"].status == stages["distill-2-1"].status == "not started"

    holder = lock.this_process()
    lock.acquire(root, holder)
    try:
        assert collect(root, cfg).stages[0].status == "running"
        html = run_report(cfg).read_text()
    finally:
        lock.release(root, holder)
    assert '<td class="num">0.016 / 0.032</td>' in html and "status-running" in html and "status-not-started" in html
    assert "No evaluation yet" in html and "Provenance of teacher: not recorded" in html
    assert "Trajectory discrepancy" not in html and "0 of 3 training stages finished" in html


def test_a_sweep_without_training_stages_shows_its_heat_map_and_trials(tmp_path):
    from kacdist.tune.results import TrialRecord, write_all

    root = tmp_path / "runs" / "sweep"
    records = [TrialRecord("a10-c1-gt-seed0", 10.0, 1.0, "t", 0, "grid", [0.5, 1.0], [3.5, 2.25], 12.0, 1.0),
               TrialRecord("a25-c2-gt-seed0", 25.0, 2.0, "t", 0, "proposal", [0.5, 1.0], [3.0, 1.75], 13.0, 1.0),
               TrialRecord("a50-c4-gt-seed0", 50.0, 4.0, "t", 0, "grid", [0.5], [4.5], 6.0, 1.0)]
    write_all(root / "tune", records, "classifier FD", "proposal a=25 c=2 g=t", 31.0, "stage=tune")
    html = run_report(load_config(["stage=report", f"report.run={root}"])).read_text()
    assert '<img src="tune-heatmap.png"' in html and (root / "report" / "tune-heatmap.png").is_file()
    assert html.index("a25-c2-gt-seed0") < html.index("a10-c1-gt-seed0") < html.index("a50-c4-gt-seed0")  # best first
    assert '<td class="num">1.75</td>' in html and "No training stage in this run" in html


def test_trajectory_samples_zero_leaves_the_discrepancies_out(report_run, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(report_run.root, root, ignore=shutil.ignore_patterns("report"))
    html = run_report(load_config(["stage=report", f"report.run={root}", "report.trajectory_samples=0"])).read_text()
    assert "Trajectory discrepancy" not in html and "<h2>Sample quality against NFE</h2>" in html
    assert not (root / "report" / "trajectories.parquet").exists() and not list((root / "report").glob("trajectory*"))


def test_a_run_directory_that_does_not_exist_is_refused_naming_the_runs_there(tmp_path):
    (tmp_path / "runs" / "digits").mkdir(parents=True)
    with pytest.raises(RunNotFoundError, match=r"no run at .*runs/digts; runs in .*runs: digits$") as err:
        run_report(load_config(["stage=report", f"report.run={tmp_path / 'runs' / 'digts'}"]))
    assert isinstance(err.value, FileNotFoundError)

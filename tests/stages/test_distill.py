"""Stage chaining: the ladder's stages pick up the previous stage's finished checkpoint, a finished stage is
reused, `from=` takes a stage or a checkpoint path, and a missing or mismatched input is refused by name.
Real digits shards, the real tiny UNet, a few optimizer steps per stage."""

import json

import pytest
import torch

from kacdist.config import load_config
from kacdist.stages.distill import StageInputError, run_distill, run_ladder
from kacdist.stages.teacher import run_teacher
from kacdist.train.checkpoint import list_checkpoints


def _args(tmp_path):
    return [
        f"runs_dir={tmp_path / 'runs'}", f"dataset.cache_dir={tmp_path / 'cache'}", "train.threads=1",
        "train.batch_size=16", "train.total_kimg=0.032", "train.checkpoint_every_kimg=0.032", "train.log_every_kimg=0.016",
        "eval.after_teacher=false", "sample.steps=4", "sample.num_images=4", "sample.batch_size=4",
        "distill.ladder=[4,2,1]", "distill.batch_size=8", "distill.total_kimg=0.016",
        "distill.checkpoint_every_kimg=0.016", "distill.log_every_kimg=0.008",
    ]


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ladder")
    teacher = run_teacher(load_config(["stage=teacher"] + _args(tmp_path)))
    cfg = load_config(["stage=ladder"] + _args(tmp_path))
    return tmp_path, teacher, cfg, run_ladder(cfg)


def test_each_stage_starts_from_the_previous_stages_checkpoint(ladder_run):
    tmp_path, teacher, cfg, results = ladder_run
    root = tmp_path / "runs" / "digits"
    first = json.loads((root / "distill-4-2" / "source.json").read_text())
    second = json.loads((root / "distill-2-1" / "source.json").read_text())
    assert first["kind"] == "teacher" and first["stage"] == "teacher" and first["checkpoint"] == str(teacher.checkpoint)
    assert first["teacher_integrator"] == "ab2" and first["substeps"] == 2 and first["guidance"] == cfg.distill.guidance
    assert second["kind"] == "student" and second["stage"] == "distill-4-2"
    assert second["checkpoint"] == str(results[0].checkpoint)
    assert second["teacher_integrator"] == "euler" and second["substeps"] == 2 and second["guidance"] is None
    state = torch.load(results[1].checkpoint, weights_only=True)
    assert state["distill"]["student_steps"] == 1 and state["distill"]["teacher_steps"] == 2
    assert [r.status for r in results] == ["finished", "finished"]
    assert (root / "distill-2-1" / "samples").is_dir() and (root / "distill-2-1" / "metrics.parquet").exists()


def test_a_finished_ladder_is_reused_not_retrained(ladder_run):
    tmp_path, _, cfg, results = ladder_run
    before = {p: list_checkpoints(tmp_path / "runs" / "digits" / p / "checkpoints") for p in ("distill-4-2", "distill-2-1")}
    again = run_ladder(cfg)
    assert [r.status for r in again] == ["already_done", "already_done"]
    assert [r.checkpoint for r in again] == [r.checkpoint for r in results]
    assert before == {p: list_checkpoints(tmp_path / "runs" / "digits" / p / "checkpoints") for p in before}


def test_a_branched_rung_starts_from_the_earlier_student_it_names(ladder_run):
    tmp_path, teacher, _, _ = ladder_run
    cfg = load_config(["stage=ladder"] + _args(tmp_path)
                      + ["distill.ladder=[8,4,2,1]", "distill.ladder_from.1=4", "distill.tag=branch"])
    results = run_ladder(cfg)
    root = tmp_path / "runs" / "digits"
    assert [r.checkpoint.parts[-3] for r in results] == ["distill-8-4-branch", "distill-4-2-branch", "distill-4-1-branch"]
    source = {name: json.loads((root / name / "source.json").read_text()) for name in ("distill-4-2-branch", "distill-4-1-branch")}
    for s in source.values():  # both from the 4-step student, with 4 and 2 Euler substeps
        assert s["stage"] == "distill-8-4-branch" and s["checkpoint"] == str(results[0].checkpoint)
    assert (source["distill-4-2-branch"]["substeps"], source["distill-4-1-branch"]["substeps"]) == (2, 4)
    state = torch.load(results[2].checkpoint, weights_only=True)
    assert (state["distill"]["teacher_steps"], state["distill"]["student_steps"]) == (4, 1)


def test_from_takes_a_stage_name_or_a_checkpoint_path(ladder_run):
    tmp_path, _, _, results = ladder_run
    cfg = load_config(["stage=distill", f"from={results[0].checkpoint}", "distill.teacher_steps=2",
                       "distill.student_steps=1", "distill.tag=frompath"] + _args(tmp_path))
    run_distill(cfg)
    source = json.loads((tmp_path / "runs" / "digits" / "distill-2-1-frompath" / "source.json").read_text())
    assert source["checkpoint"] == str(results[0].checkpoint) and source["kind"] == "student"
    wrong = load_config(["stage=distill", "from=distill-4-2", "distill.teacher_steps=4", "distill.student_steps=1"]
                        + _args(tmp_path))
    with pytest.raises(StageInputError, match="is a 2-step student, not a 4-step model"):
        run_distill(wrong)


def test_a_stage_without_its_input_is_refused_by_name(tmp_path):
    cfg = load_config(["stage=distill", "distill.teacher_steps=2", "distill.student_steps=1"] + _args(tmp_path))
    with pytest.raises(StageInputError, match="no finished stage produces a 2-step model"):
        run_distill(cfg)
    first = load_config(["stage=distill", "distill.teacher_steps=4", "distill.student_steps=2"] + _args(tmp_path))
    with pytest.raises(StageInputError, match="has not finished"):
        run_distill(first)  # the ladder's first rung needs the teacher, which was never trained here
    assert not (tmp_path / "runs" / "digits" / "distill-4-2" / "checkpoints").exists()


def test_velocity_norm_is_logged_per_time_bin_against_the_bound(ladder_run):
    import math

    import pyarrow.parquet as pq

    tmp_path, _, cfg, _ = ladder_run
    rows = [r for r in pq.read_table(tmp_path / "runs" / "digits" / "distill-2-1" / "metrics.parquet").to_pylist() if "loss" in r]
    assert rows
    d = cfg.dataset.channels * cfg.dataset.resolution ** 2
    for r in rows:
        assert r["velocity_bound"] == pytest.approx(cfg.kac.c * math.sqrt(d))
        # a 1-step student is only ever evaluated at t = 1: the last bin alone is filled
        assert r["velocity_l2_bin9"] > 0
        assert all(r[f"velocity_l2_bin{i}"] is None for i in range(9))


def test_stage_sample_samples_a_student_as_trained_unless_told_otherwise(ladder_run):
    """stage=sample on a student (by stage name, or by checkpoint path) reads its distill record: Euler, its own
    step count, w = 1, whatever sample.* says; sample.as_trained=false keeps the settings given."""
    from kacdist.stages.sample import run_sample

    tmp_path, _, _, results = ladder_run
    root = tmp_path / "runs" / "digits" / "sample"
    given = ["stage=sample", "sample.integrator=ab2", "sample.steps=4", "sample.guidance=1.2"]
    by_name = run_sample(load_config(given + _args(tmp_path) + ["sample.source=distill-4-2"]))
    assert (by_name["integrator"], by_name["steps"], by_name["guidance"], by_name["nfe_per_image"]) == ("euler", 2, 1.0, 2)
    assert by_name["student"]["student_steps"] == 2 and (root / "distill-4-2-euler-2-w1.npz").exists()
    by_path = run_sample(load_config(given + _args(tmp_path) + [f"sample.checkpoint={results[1].checkpoint}"]))
    assert (by_path["integrator"], by_path["steps"], by_path["guidance"]) == ("euler", 1, 1.0)
    kept = run_sample(load_config(given + _args(tmp_path) + ["sample.source=distill-4-2", "sample.as_trained=false"]))
    assert (kept["integrator"], kept["steps"], kept["guidance"]) == ("ab2", 4, 1.2)
    teacher = run_sample(load_config(given + _args(tmp_path)))
    assert (teacher["integrator"], teacher["steps"], teacher["guidance"], teacher["student"]) == ("ab2", 4, 1.2, None)


def test_kimg_factor_gives_a_stage_its_own_length(ladder_run):
    """distill.kimg_factor.<k>: the stage into a k-step student trains total_kimg × factor, recorded as that
    stage's total_kimg; a later command that would give a finished stage another length is refused by stage
    name; a factor that is not a positive number, or a key that is not a step count, is refused by the check."""
    from kacdist.config import ConfigError
    from kacdist.config.loader import load_saved_config

    tmp_path, _, _, _ = ladder_run
    longer = ["stage=ladder", "distill.tag=longer", "distill.total_kimg=0.008", "distill.kimg_factor.1=3"]
    results = run_ladder(load_config(_args(tmp_path) + longer))
    assert [(r.step, r.kimg) for r in results] == [(1, pytest.approx(0.008)), (3, pytest.approx(0.024))]
    root = tmp_path / "runs" / "digits"
    assert load_saved_config(root / "distill-4-2-longer" / "config.yaml").distill.total_kimg == pytest.approx(0.008)
    saved = load_saved_config(root / "distill-2-1-longer" / "config.yaml").distill
    assert (saved.total_kimg, saved.kimg_factor) == (pytest.approx(0.024), {})
    with pytest.raises(ConfigError, match=r"0\.016 kimg for stage distill-2-1-longer .*distill.total_kimg=0.024"):
        load_config(_args(tmp_path) + longer[:-1] + ["distill.kimg_factor.1=2"])
    with pytest.raises(ConfigError, match=r"distill.kimg_factor.2=-1.0 is invalid: must be a positive number"):
        load_config(_args(tmp_path) + ["stage=ladder", "distill.kimg_factor.2=-1"])
    with pytest.raises(ConfigError, match=r"distill.kimg_factor has the key '0'"):
        load_config(_args(tmp_path) + ["stage=ladder", "distill.kimg_factor.0=2"])

"""Config loading: groups, dotted overrides, typo'd keys named with the closest valid key, range checks
before any work starts, print_config, and no secrets in saved configs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kacdist.config import ConfigError, load_config, save_config
from kacdist.config.loader import load_saved_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_groups_merge_in_order():
    cfg = load_config([])
    assert (cfg.stage, cfg.dataset.name, cfg.model.preset) == ("teacher", "digits", "tiny")
    cfg = load_config(["dataset=celeba64", "kac.a=2500", "model=lightweight"])
    assert (cfg.kac.a, cfg.kac.c, cfg.kac.g) == (2500.0, 20.0, "t2")  # dataset file sets c and g, CLI sets a
    assert cfg.model.preset == "lightweight" and cfg.dataset.num_classes == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train.lrr=3"], "Key 'lrr' not in 'TrainConfig'. Did you mean: 'lr'?"),
        (["trian.lr=3"], "Did you mean: 'train'?"),
        (["train.total_kimg=abc"], "full key: train.total_kimg"),
        (["kac.a=0"], "kac.a=0.0 is invalid: must be a positive number"),
        (["kac.g=t3"], "kac.g='t3' is invalid: allowed values are t, t2"),
        (["train.batch_size=-4"], "train.batch_size=-4 is invalid"),
        (["sample.integrator=rk45"], "allowed values are euler, midpoint, heun, ab2"),
        (["sample.steps=0"], "sample.steps=0 is invalid"),
        (["dataset=cifar"], "dataset='cifar' does not exist; valid: celeba64, cifar10, digits"),
        (["stage=distil"], "stage='distil' does not exist; valid:"),
        (["train.warmup_frac=0.5", "train.flat_frac=0.6"], "must be <= 1"),
        (["--lr", "3"], "cannot parse '--lr'"),
        (["dataset=folder"], "dataset.resolution, dataset.channels, dataset.num_classes not set and there is no dataset card"),
        (["dataset=folder", "dataset.resolution=28", "dataset.channels=1", "dataset.num_classes=0"], "dataset.urls is empty"),
        (["dataset.resolution=2"], "dataset.resolution=2 is invalid: an image side of at least 4 pixels"),
        (["sample.labels=[3,12]"], "sample.labels contains 12: classes are 0..9"),
        (["stage=distill", "distill.student_steps=3"], "distill.teacher_steps=100 is not a multiple of distill.student_steps=3"),
        (["stage=distill", "distill.teacher_steps=4", "distill.student_steps=4"], "must be smaller than distill.teacher_steps=4"),
        (["stage=ladder", "distill.ladder=[100,30,4]"], "distill.teacher_steps=100 is not a multiple of distill.student_steps=30"),
        (["stage=ladder", "distill.ladder=[100]"], "needs at least two step counts"),
        (["stage=ladder", "distill.ladder_from.one=4"], "distill.ladder_from has the key 'one': keys are student step counts"),
        (["stage=ladder", "distill.ladder_from.4=2"], "distill.ladder_from.4=2 is invalid: must be a step count that "
                                                      "distill.ladder=[100, 20, 4, 2, 1] reaches before 4 (100, 20)"),
        (["distill.x_source=noise"], "allowed values are forward, student_rollout, teacher_rollout"),
        (["distill.teacher_integrator=heun"], "allowed values are auto, euler, midpoint, ab2"),
        (["distill.lrr=1"], "Did you mean: 'lr'?"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(argv, message):
    with pytest.raises(ConfigError) as err:
        load_config(argv)
    assert message in str(err.value)


def test_from_sets_where_a_distillation_stage_starts():
    cfg = load_config(["stage=distill", "from=distill-100-20", "distill.teacher_steps=20", "distill.student_steps=4"])
    assert cfg.stage == "distill" and cfg.distill.init == "distill-100-20"
    assert (cfg.distill.teacher_steps, cfg.distill.student_steps) == (20, 4)


def test_ladder_from_branches_a_rung_off_an_earlier_one():
    from kacdist.stages.distill import ladder_rungs

    chain = load_config(["stage=ladder"]).distill
    assert ladder_rungs(chain) == [(100, 20, ""), (20, 4, "distill-100-20"), (4, 2, "distill-20-4"), (2, 1, "distill-4-2")]
    branched = load_config(["stage=ladder", "distill.ladder_from.1=4", "distill.tag=b"]).distill
    assert ladder_rungs(branched) == [(100, 20, ""), (20, 4, "distill-100-20-b"), (4, 2, "distill-20-4-b"),
                                      (4, 1, "distill-20-4-b")]
    assert branched.stage_kimg(1) == chain.stage_kimg(1)  # lengths stay keyed by the student's step count
    # a rung off the first count starts where the ladder does: from= (or the teacher)
    single = load_config(["stage=ladder", "from=teacher", "distill.ladder=[100,4,1]", "distill.ladder_from.1=100"]).distill
    assert ladder_rungs(single) == [(100, 4, "teacher"), (100, 1, "teacher")]
    # a branch for a count this ladder does not train is ignored, like a kimg_factor for it
    short = load_config(["stage=ladder", "distill.ladder=[100,20]", "distill.ladder_from.1=4"]).distill
    assert ladder_rungs(short) == [(100, 20, "")]


def test_saved_config_round_trips_and_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sk-very-secret-123")
    cfg = load_config(["train.total_kimg=3", "wandb.mode=offline"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "sk-very-secret-123" not in text
    assert load_saved_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(ConfigError, match="Key 'api_key' not in 'WandbConfig'"):
        load_config(["wandb.api_key=sk-very-secret-123"])  # a key has no place in a config


def test_launcher_prints_config_and_rejects_typos_before_any_work(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "jobs/launch.py", "print_config=true", "train.total_kimg=7", f"runs_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, env=env, check=True,
    )
    assert "total_kimg: 7.0" in out.stdout
    bad = subprocess.run(
        [sys.executable, "jobs/launch.py", "train.lrr=1", f"runs_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "Did you mean: 'lr'?" in bad.stderr
    assert not any(tmp_path.iterdir())  # nothing was created


@pytest.mark.parametrize("dataset,preset", [("digits", "tiny"), ("cifar10", "cifar10"), ("celeba64", "celeba64"),
                                            ("lsun_bedroom256", "lsun_bedroom256")])
def test_each_dataset_brings_its_own_preset_unless_the_command_line_names_one(dataset, preset):
    cfg = load_config([f"dataset={dataset}"])
    assert cfg.model.preset == preset and cfg.run_name == dataset  # Table B-1; the run is named after the data
    assert load_config([f"dataset={dataset}", "model=lightweight"]).model.preset == "lightweight"
    assert load_config(["model=lightweight", f"dataset={dataset}"]).model.preset == "lightweight"  # order does not matter
    assert load_config([f"dataset={dataset}", "model.preset=tiny"]).model.preset == "tiny"


def test_a_run_saved_before_a_key_was_renamed_still_continues(tmp_path):
    """cluster.cpus_per_task became cluster.cpus_per_node; a run directory written before still loads."""
    from kacdist.config.loader import load_saved_config, to_yaml

    cfg = load_config([f"runs_dir={tmp_path}", "run_name=old"])
    old = to_yaml(cfg).replace("cpus_per_node: 2", "cpus_per_task: 6")
    assert "cpus_per_task: 6" in old
    (tmp_path / "old" / "teacher").mkdir(parents=True)
    (tmp_path / "old" / "config.yaml").write_text(old)
    (tmp_path / "old" / "teacher" / "config.yaml").write_text(old)
    (tmp_path / "old" / "teacher" / "DONE").write_text('{"step": 1, "kimg": 0.1, "checkpoint": "x"}')
    assert load_saved_config(tmp_path / "old" / "config.yaml").cluster.cpus_per_node == 6
    assert load_config([f"runs_dir={tmp_path}", "run_name=old"]).cluster.cpus_per_node == 6

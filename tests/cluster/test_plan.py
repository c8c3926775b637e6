"""The distributed settings are refused before any work when invalid (config check), and a run that this
machine cannot hold is refused before Ray starts (launch check), each naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest

from kacdist.cluster.ray_train import LaunchError, plan_workers
from kacdist.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["cluster.workers=3"], "train.batch_size=128 is not divisible by cluster.workers=3"),
        (["stage=ladder", "cluster.workers=3", "train.batch_size=129"], "distill.batch_size=128 is not divisible by cluster.workers=3"),
        (["cluster.workers=-1"], "cluster.workers=-1 is invalid"),
        (["train.engine=jax"], "train.engine='jax' is invalid: allowed values are auto, torch, deepspeed"),
        (["train.engine=deepspeed", "train.zero_stage=3"], "train.zero_stage=3 is not supported: ZeRO-3 partitions the parameters"),
        (["train.engine=deepspeed", "train.zero_stage=4"], "train.zero_stage=4 is invalid: allowed values are 0, 1, 2"),
        (["train.engine=torch", "train.zero_stage=1", "cluster.workers=2"], "train.zero_stage=1 needs train.engine=deepspeed"),
        (["train.zero_stage=2"], "with cluster.workers=0 needs train.engine=deepspeed"),
        (["train.rng_block=0"], "train.rng_block=0 is invalid"),
        (["cluster.max_failures=-2"], "cluster.max_failures=-2 is invalid"),
        (["cluster.collective_timeout_s=0"], "cluster.collective_timeout_s=0 is invalid"),
        (["cluster.worker=2"], "Did you mean: 'workers'?"),
    ],
)
def test_invalid_distributed_settings_are_refused_by_key(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(argv)


def test_valid_distributed_settings_load():
    cfg = load_config(["cluster.workers=4", "train.batch_size=128", "train.engine=deepspeed", "train.zero_stage=2"])
    assert (cfg.cluster.workers, cfg.train.engine, cfg.train.zero_stage) == (4, "deepspeed", 2)
    # the distillation batch is only checked where it is used
    assert load_config(["cluster.workers=3", "train.batch_size=129", "distill.batch_size=128"]).cluster.workers == 3


def test_the_machine_is_checked_before_ray_starts():
    cfg = load_config(["cluster.workers=4", "train.device=cpu"])
    with pytest.raises(LaunchError, match="cluster.workers=4 is more than the 2 CPU cores"):
        plan_workers(cfg, cores=2, gpus=0)
    with pytest.raises(LaunchError, match="cluster.workers=4 needs 4 GPUs .* this machine has 2"):
        plan_workers(load_config(["cluster.workers=4", "train.device=cuda"]), cores=64, gpus=2)
    # threads per worker: cores / workers, and a preset's train.threads is capped there
    plan = plan_workers(load_config(["cluster.workers=2", "train.threads=2"]), cores=2, gpus=0)
    assert (plan.workers, plan.use_gpu, plan.threads) == (2, False, 1)
    plan = plan_workers(load_config(["cluster.workers=4", "train.device=auto", "train.threads=0"]), cores=32, gpus=4)
    assert (plan.use_gpu, plan.threads) == (True, 8)


def test_a_run_the_machine_cannot_hold_exits_2_without_starting_ray(tmp_path):
    out = subprocess.run(
        [sys.executable, "jobs/launch.py", "cluster.workers=64", "train.batch_size=128", "train.device=cpu", f"runs_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "cluster.workers=64 is more than the" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "digits").exists()


def test_the_in_process_default_imports_neither_ray_nor_deepspeed(tmp_path):
    code = (
        "import sys; sys.argv = ['launch']; sys.path.insert(0, 'jobs'); import launch\n"
        f"rc = launch.main(['train.total_kimg=0.032', 'train.batch_size=16', 'train.threads=1', 'eval.after_teacher=false',"
        f" 'sample.steps=2', 'sample.num_images=4', 'runs_dir={tmp_path}', 'dataset.cache_dir={tmp_path / 'cache'}'])\n"
        "assert rc == 0, rc\n"
        "print('imported:', sorted(m for m in ('ray', 'deepspeed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imported: []" in out.stdout
    assert (tmp_path / "digits" / "teacher" / "DONE").exists()

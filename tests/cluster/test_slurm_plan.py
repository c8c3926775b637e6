"""What is decided before a job exists, without a cluster: the SLURM config groups and their checks, the
jobs a stage becomes, the batch script's resources, the Ray commands of a 2-node allocation, and the run
lock's live/stale rules for local holders."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kacdist.cluster import lock
from kacdist.cluster.ray_cluster import node_plan, ray_ports
from kacdist.cluster.slurm import sbatch_script, stage_plan
from kacdist.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_slurm_defaults_fit_any_cluster_and_h100_is_a_second_file():
    cl = load_config(["cluster=slurm"]).cluster
    assert (cl.kind, cl.partition, cl.nodes, cl.gpus_per_node, cl.mem_gb, cl.account, cl.qos) == ("slurm", "", 1, 0, 0, "", "")
    assert cl.signal_delay_s < cl.timeout_min * 60
    h100 = load_config(["cluster=slurm_h100", "cluster.nodes=4"]).cluster
    assert (h100.gpus_per_node, h100.nodes) == (4, 4)


@pytest.mark.parametrize("argv,message", [
    (["cluster.timeout_min=-5"], "cluster.timeout_min=-5 is invalid"),
    (["cluster.signal_delay_s=3600", "cluster.timeout_min=60"], "the stop signal must come before the time limit"),
    (["cluster.nodes=0"], "cluster.nodes=0 is invalid"),
    (["cluster.max_requeues=-1"], "cluster.max_requeues=-1 is invalid"),
    (["cluster=slurm_h100", "cluster.nodes=2", "cluster.workers=4"], "one worker per GPU, so cluster.workers=8"),
    (["cluster.workers=5", "cluster.cpus_per_node=4"], "more than the 4 CPUs the job asks for"),
    (["cluster.sbatch_extra.signal=USR1"], "signal, requeue, dependency and the log paths are set by kacdist"),
    (["cluster.ray_port=80"], "cluster.ray_port=80 is invalid"),
    (["cluster.partion=gpu"], "Did you mean: 'partition'?"),
])
def test_invalid_cluster_settings_are_refused_before_submission(argv, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["cluster=slurm"] + argv)


def test_print_config_does_not_ask_the_cluster(tmp_path):
    # "anything" is no partition of any test cluster: cluster facts are checked at submission only
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "launch.py"), "stage=teacher", "cluster=slurm",
                          "cluster.partition=anything", "print_config=true"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0 and "partition: anything" in out.stdout


def test_workers_are_derived_from_the_allocation():
    from kacdist.config.validate import derived_workers

    assert derived_workers(load_config(["cluster=slurm_h100", "cluster.nodes=2"])) == 8
    assert derived_workers(load_config(["cluster=slurm"])) == 0  # one CPU node: in-process
    assert derived_workers(load_config(["cluster=slurm", "cluster.nodes=3", "train.batch_size=129"])) == 3
    assert derived_workers(load_config(["cluster=slurm", "cluster.workers=2"])) == 2


def test_ladder_is_one_job_per_stage_and_skips_what_finished(tmp_path):
    cfg = load_config(["stage=ladder", "cluster=slurm", f"runs_dir={tmp_path}", "run_name=r", "eval.after_ladder=true"])
    plan = stage_plan(cfg)
    assert [p.name for p in plan] == ["teacher", "distill-100-20", "distill-20-4", "distill-4-2", "distill-2-1", "eval"]
    rung = plan[2].cfg
    # a rung names its input by stage, found when the job starts, never a checkpoint path
    assert (rung.stage, rung.distill.teacher_steps, rung.distill.student_steps, rung.distill.init) == ("distill", 20, 4, "distill-100-20")
    assert plan[0].cfg.stage == "teacher" and plan[-1].cfg.stage == "eval"
    for name in ("teacher", "distill-100-20"):
        (tmp_path / "r" / name).mkdir(parents=True)
        (tmp_path / "r" / name / "DONE").write_text(json.dumps({"step": 1, "kimg": 1, "checkpoint": "x"}))
    assert [p.name for p in stage_plan(cfg)] == ["distill-20-4", "distill-4-2", "distill-2-1", "eval"]
    # a rung that distils an earlier rung's student (distill.ladder_from) starts from that stage
    branched = load_config(["stage=ladder", "cluster=slurm", f"runs_dir={tmp_path}", "run_name=r", "distill.ladder_from.1=4"])
    last = stage_plan(branched)[-1]
    assert (last.name, last.cfg.distill.teacher_steps, last.cfg.distill.init) == ("distill-4-1", 4, "distill-20-4")


def test_the_batch_script_of_two_h100_nodes(tmp_path):
    cfg = load_config(["stage=teacher", "cluster=slurm_h100", "cluster.nodes=2", "cluster.partition=gpu",
                       "cluster.account=proj", "cluster.qos=high", "cluster.sbatch_extra.constraint=h100",
                       "cluster.setup=[module load cuda]", f"runs_dir={tmp_path}", "run_name=big"])
    script = sbatch_script(cfg, "teacher", after="41")
    for line in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=32", "--mem=480GB",
                 "--time=1440", "--signal=USR2@300", "--partition=gpu", "--account=proj", "--qos=high",
                 "--constraint=h100", "--dependency=afterok:41", "--kill-on-invalid-dep=yes", "--job-name=kacdist-big-teacher"):
        assert f"#SBATCH {line}" in script, (line, script)
    assert "module load cuda" in script and "srun" in script
    # the job's Python starts with USR2 blocked until a handler takes it (tests/cluster/test_preemption.py)
    assert f"{sys.executable} -m kacdist.exec_masked -u -m submitit.core._submit" in script
    assert str(tmp_path / "big" / "slurm") in script  # logs in the run directory


def test_ray_commands_for_a_two_node_allocation():
    ips = {"gpu-a01": "10.0.0.1", "gpu-a02": "10.0.0.2"}
    head = node_plan(0, ["gpu-a01", "gpu-a02"], "123456", cpus=32, gpus=4, resolve=ips.__getitem__)
    worker = node_plan(1, ["gpu-a01", "gpu-a02"], "123456", cpus=32, gpus=4, resolve=ips.__getitem__)
    ports = ray_ports("123456")
    assert head.start[1:3] == ["start", "--head"] and f"--port={ports.head}" in head.start
    assert "--node-ip-address=10.0.0.1" in head.start and "--num-gpus=4" in head.start and "--num-cpus=32" in head.start
    assert f"--address=10.0.0.1:{ports.head}" in worker.start and "--node-ip-address=10.0.0.2" in worker.start
    assert head.address == worker.address == f"10.0.0.1:{ports.head}"
    assert worker.stop[1:] == ["stop", "--force"]
    # two jobs on one node get disjoint ports; a fixed cluster.ray_port is used as given
    other = ray_ports("123457")
    assert {ports.head, ports.node_manager, ports.object_manager} & {other.head, other.node_manager, other.object_manager} == set()
    assert ray_ports("9", ray_port=30000).head == 30000


def test_a_live_local_holder_blocks_and_a_dead_one_does_not(tmp_path):
    run = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        other = lock.Holder("local", socket.gethostname(), sleeper.pid, start, since=0)
        lock.acquire(run, other)
        with pytest.raises(lock.RunLockedError, match=f"process {sleeper.pid}"):
            lock.acquire(run, lock.this_process())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert lock.acquire(run, lock.this_process()).pid == sleeper.pid  # stale: replaced, and returned
    assert lock.read_holder(run).pid == os.getpid()
    lock.release(run, lock.this_process())
    assert lock.read_holder(run) is None

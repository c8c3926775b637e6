"""Stages as SLURM jobs, against a real SLURM (``.ci/slurm-local.sh`` starts a one-node cluster with
accounting; .ci/run starts it and sets KACDIST_REQUIRE_SLURM=1, so there a missing cluster fails these
tests instead of skipping them). Tiny model on digits; every job is submitted as the README writes it,
``python jobs/launch.py ... cluster=slurm``, and the tests read the run directory and sacct.

The time-limit signal arrives on SLURM's 30 s tick, so no test counts requeues; they check that the stage
finished with the right step count and that every metrics row was written once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kacdist.cluster.status import LIVE_STATES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LAUNCH = str(REPO / "jobs" / "launch.py")
# a small teacher and students: each job is seconds of training after a few seconds of start-up
TINY = ["train.batch_size=32", "train.log_every_kimg=1.6", "train.checkpoint_every_kimg=1.6", "eval.after_teacher=false",
        "sample.num_images=4", "sample.steps=2", "distill.batch_size=32", "distill.total_kimg=0.64",
        "distill.log_every_kimg=0.32", "distill.checkpoint_every_kimg=0.32", "cluster=slurm", "cluster.timeout_min=10",
        "cluster.signal_delay_s=60"]


@pytest.fixture(scope="session")
def slurm():
    why = ""
    if shutil.which("sinfo") is None:
        why = "no SLURM client (sinfo) here"
    else:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            why = f"no SLURM cluster answers: {out.stderr.strip()}"
    if why:
        why += "; as root, `bash .ci/slurm-local.sh start` starts one"
        if os.environ.get("KACDIST_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)


def launch(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, LAUNCH, *args], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"launch {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def job_ids(stdout: str) -> dict[str, str]:
    """{stage: job id} from the submission's output ("submitted <stage>: job <id>")."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("submitted "):
            stage, rest = line[len("submitted "):].split(": job ")
            found[stage] = rest.split()[0]
    return found


def states(ids) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)], capture_output=True,
                         text=True, timeout=60)
    return {j: s.split()[0] for j, s in (line.split("|") for line in out.stdout.splitlines() if "|" in line)}


def wait_ended(ids, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        now = states(ids)
        if len(now) == len(set(ids)) and not set(now.values()) & LIVE_STATES:
            return now
        if time.monotonic() > deadline:
            subprocess.run(["scancel", *ids], check=False)
            raise AssertionError(f"jobs {ids} still not ended after {timeout_s} s: {now}")
        time.sleep(2)


def wait_state(job_id: str, wanted: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while states([job_id]).get(job_id) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached {wanted}: {states([job_id])}")
        time.sleep(0.5)


def events(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "slurm" / "events.jsonl").read_text().splitlines()]


def metric_steps(stage_dir: Path) -> list[int]:
    return [r["step"] for r in pq.read_table(stage_dir / "metrics.parquet").to_pylist() if r.get("loss") is not None]


def logs_of(root: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((root / "slurm").glob("*/*_log.*")))


def test_ladder_jobs_chain_on_checkpoints_in_order_and_lock_the_run(slurm, tmp_path):
    root = tmp_path / "lad"
    common = [f"runs_dir={tmp_path}", "run_name=lad", "train.total_kimg=1.6", "distill.ladder=[100,20,4]", *TINY]
    out = launch("stage=ladder", *common)
    ids = job_ids(out.stdout)
    assert list(ids) == ["teacher", "distill-100-20", "distill-20-4"], out.stdout
    assert "follow: python jobs/launch.py stage=status" in out.stdout
    assert (root / "config.yaml").exists()  # the run's config is saved before any job runs
    # a second submission while these jobs live is refused, naming them; nothing is submitted
    again = launch("stage=teacher", *common, check=False)
    assert again.returncode == 2 and ids["teacher"] in again.stderr and "submitted" not in again.stdout
    ended = wait_ended(list(ids.values()), 600)
    assert set(ended.values()) == {"COMPLETED"}, (ended, logs_of(root))
    started = {e["stage"]: e["time"] for e in events(root) if e["event"] == "started"}
    finished = {e["stage"]: e["time"] for e in events(root) if e["event"] == "finished"}
    assert finished["teacher"] <= started["distill-100-20"] and finished["distill-100-20"] <= started["distill-20-4"]
    # each rung trained from the checkpoint the previous job left, found when it started
    first = json.loads((root / "distill-100-20" / "source.json").read_text())
    second = json.loads((root / "distill-20-4" / "source.json").read_text())
    assert first["stage"] == "teacher" and first["checkpoint"] == json.loads((root / "teacher" / "DONE").read_text())["checkpoint"]
    assert second["stage"] == "distill-100-20" and second["kind"] == "student"
    assert second["checkpoint"] == json.loads((root / "distill-100-20" / "DONE").read_text())["checkpoint"]
    table = launch("stage=status", f"runs_dir={tmp_path}", "run_name=lad").stdout
    for stage, job in ids.items():
        line = next(l for l in table.splitlines() if l.startswith(stage + " "))
        assert job in line and "COMPLETED" in line and "done" in line, table
    # everything finished: submitting again submits nothing, and the ended jobs' lock does not block
    assert "nothing to submit" in launch("stage=ladder", *common).stdout


def test_time_limit_checkpoints_requeues_and_finishes_once(slurm, tmp_path):
    """The README's command; a 1-minute limit with the stop signal 45 s before it, for ~70 s of training."""
    root = tmp_path / "tl"
    out = launch("stage=teacher", f"runs_dir={tmp_path}", "run_name=tl", "train.total_kimg=19.2", *TINY,
                 "cluster.timeout_min=1", "cluster.signal_delay_s=45", "train.checkpoint_every_kimg=3.2")
    (job,) = job_ids(out.stdout).values()
    ended = wait_ended([job], 480)
    assert ended[job] == "COMPLETED", logs_of(root)
    done = json.loads((root / "teacher" / "DONE").read_text())
    assert done["step"] == 600 and done["status"] == "finished"
    assert metric_steps(root / "teacher") == list(range(50, 601, 50))  # every row once, none lost
    seen = events(root)
    stops = [e for e in seen if e["event"] == "stopped"]
    assert stops, "the job never got the time-limit signal before finishing"
    log_text = logs_of(root)
    # each incarnation stopped in training resumed exactly where it checkpointed (a signal outside training,
    # e.g. after the last step, requeues at once with nothing to resume)
    assert any("step" in stop for stop in stops)
    for stop in stops:
        if "step" in stop:
            assert f"ckpt-{stop['step']:09d}.pt at step {stop['step']} " in log_text
    assert sum(e["event"] == "started" for e in seen) == len(stops) + 1


def test_preempted_job_resumes_and_cancelled_upstream_explains_itself(slurm, tmp_path):
    root = tmp_path / "pre"
    out = launch("stage=teacher", f"runs_dir={tmp_path}", "run_name=pre", "train.total_kimg=9.6", *TINY)
    (job,) = job_ids(out.stdout).values()
    wait_state(job, "RUNNING")
    deadline = time.monotonic() + 120
    while not (root / "teacher" / "metrics.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # training has begun
    # a job of the higher-priority partition takes the node's CPUs: ours is preempted by requeue
    high = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", "2", "--mem=100", "--wrap", "sleep 2"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert wait_ended([job, high], 300) == {job: "COMPLETED", high: "COMPLETED"}, logs_of(root)
    assert [e["event"] for e in events(root) if e["job_id"] == job][-1] == "finished"
    assert any(e["event"] == "stopped" for e in events(root)), logs_of(root)
    assert json.loads((root / "teacher" / "DONE").read_text())["step"] == 300
    assert metric_steps(root / "teacher") == list(range(50, 301, 50))

    # a ladder whose teacher is cancelled: SLURM kills the dependents, status says why
    common = [f"runs_dir={tmp_path}", "run_name=cut", "train.total_kimg=50", "distill.ladder=[100,20,4]", *TINY]
    ids = job_ids(launch("stage=ladder", *common).stdout)
    subprocess.run(["scancel", ids["teacher"]], check=True)
    assert set(wait_ended(list(ids.values()), 120).values()) == {"CANCELLED"}
    table = launch("stage=status", f"runs_dir={tmp_path}", "run_name=cut").stdout
    rung = next(l for l in table.splitlines() if l.startswith("distill-100-20 "))
    assert f"not run: upstream teacher (job {ids['teacher']}) CANCELLED" in rung, table
    # the cancelled jobs' lock is stale: a resubmission goes through; stage=cancel cancels all of it
    ids = job_ids(launch("stage=ladder", *common).stdout)
    cancelled = launch("stage=cancel", f"runs_dir={tmp_path}", "run_name=cut").stdout
    assert all(j in cancelled for j in ids.values()), cancelled
    assert set(wait_ended(list(ids.values()), 120).values()) == {"CANCELLED"}
    missing = launch("stage=status", f"runs_dir={tmp_path}", "run_name=nope", check=False)
    assert missing.returncode == 2 and "cut" in missing.stderr and "pre" in missing.stderr


def test_two_ray_workers_in_one_job_stop_together_on_preemption(slurm, tmp_path):
    """cluster.workers=2 inside one job: USR2 reaches the driver only (Ray's processes have it blocked); both
    workers checkpoint at the same step through the stop file, the job is requeued and finishes."""
    root = tmp_path / "ray"
    out = launch("stage=teacher", f"runs_dir={tmp_path}", "run_name=ray", "train.total_kimg=9.6", *TINY,
                 "cluster.workers=2", "cluster.cpus_per_node=2")
    (job,) = job_ids(out.stdout).values()
    wait_state(job, "RUNNING")
    deadline = time.monotonic() + 180
    while not (root / "teacher" / "metrics.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    high = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", "2", "--mem=100", "--wrap", "sleep 2"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert wait_ended([job, high], 420) == {job: "COMPLETED", high: "COMPLETED"}, logs_of(root)
    stops = [e for e in events(root) if e["event"] == "stopped"]
    assert stops, logs_of(root)
    assert json.loads((root / "teacher" / "DONE").read_text())["step"] == 300
    assert metric_steps(root / "teacher") == list(range(50, 301, 50))
    assert "2 Ray Train workers" in logs_of(root)


def test_unknown_partition_is_refused_at_submission(slurm, tmp_path):
    out = launch("stage=teacher", f"runs_dir={tmp_path}", *TINY, "cluster.partition=nosuch", check=False)
    assert out.returncode == 2 and "nosuch" in out.stderr and "debug" in out.stderr
    assert not (tmp_path / "digits").exists()  # refused before anything was written
